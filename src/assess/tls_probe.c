/*
 * keel assess: TLS probe of one port. Every question is one real handshake
 * with a client context narrowed to what is asked (one version, one suite,
 * one group), so the answer is what the server does, not what it says.
 *
 * The probing context runs at security level 0: OpenSSL 3 refuses to even
 * offer TLS 1.0/1.1, SHA-1 signatures or small keys above it, and a probe
 * must be able to offer exactly what a careless server would accept.
 * Certificates are not verified: they are observed and reported.
 */
#define _GNU_SOURCE
#include "keel/assess_probe.h"

#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TLS_TIMEOUT_DEFAULT_MS 3000u
#define TLS_BUDGET_DEFAULT_MS 25000u
#define TLS_TIMEOUT_MAX_MS 30000u
#define TLS_BUDGET_MAX_MS 600000u
#define PLAIN_REPLY_MAX 512u    /* bytes of a plaintext answer kept */
#define FINDING_LIST_MAX 400u   /* characters of suite names in one finding */
#define ALL_CIPHERS "ALL:COMPLEMENTOFALL:@SECLEVEL=0"

static const char *const tls13_suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                           "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256",
                                           "TLS_AES_128_CCM_8_SHA256"};
static const char *const all_groups[] = {"X25519", "X448", "P-256", "P-384", "P-521", "ffdhe2048",
                                         "ffdhe3072", "ffdhe4096", "ffdhe6144", "ffdhe8192"};

static const struct {
    int version;
    const char *name;
} versions[] = {{SSL3_VERSION, "SSLv3"},     {TLS1_VERSION, "TLSv1"},     {TLS1_1_VERSION, "TLSv1.1"},
                {TLS1_2_VERSION, "TLSv1.2"}, {TLS1_3_VERSION, "TLSv1.3"}};
#define NVERSIONS (sizeof versions / sizeof versions[0])

typedef struct {
    const keel_tls_probe_opts_t *o;
    struct sockaddr_storage sa;
    socklen_t salen;
    char addr[INET6_ADDRSTRLEN + 1];
    int sni; /* the target is a name: send it as SNI */
    unsigned timeout_ms;
    double t0, budget_end;
    unsigned handshakes, untested;
    json_t *untested_list;
    /* from the first full handshake */
    X509 *cert;
    STACK_OF(X509) *chain;
} probe_t;

typedef struct {
    int min, max;
    const char *ciphers; /* TLS 1.2 and below */
    const char *suites;  /* TLS 1.3 */
    const char *groups;
} hs_params_t;

typedef struct {
    int ok;
    int tcp_failed;
    char version[16];
    char cipher[64];
    char group[32];
    char tmp_key[32];
    int tmp_bits;
    char reason[128];
    double ms;
} hs_result_t;

static double ms_since(double t0)
{
    return (keel_now() - t0) * 1000.0;
}

/* Timings are whole microseconds: exact in JSON, unlike binary fractions. */
static json_t *json_us(double ms)
{
    return json_integer((json_int_t)(ms * 1000.0 + 0.5));
}

static void close_ssl(SSL *ssl, int fd, int done)
{
    if (ssl != NULL) {
        if (done)
            (void)SSL_shutdown(ssl); /* one close_notify, not waiting for the peer's */
        SSL_free(ssl);
    }
    if (fd >= 0)
        close(fd);
    ERR_clear_error();
}

static SSL_CTX *probe_ctx(const hs_params_t *hp)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_security_level(ctx, 0);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    /* servers without secure renegotiation must still be measurable */
    SSL_CTX_set_options(ctx, SSL_OP_LEGACY_SERVER_CONNECT | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_set_min_proto_version(ctx, hp->min) != 1 || SSL_CTX_set_max_proto_version(ctx, hp->max) != 1 ||
        SSL_CTX_set_cipher_list(ctx, hp->ciphers ? hp->ciphers : ALL_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, hp->suites ? hp->suites
                                                 : "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                                   "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_CCM_SHA256:"
                                                   "TLS_AES_128_CCM_8_SHA256") != 1 ||
        (hp->groups != NULL && SSL_CTX_set1_groups_list(ctx, hp->groups) != 1)) {
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return NULL;
    }
    return ctx;
}

/* One handshake. Returns 0 when the budget is spent (nothing was tried). */
static int handshake(probe_t *p, const hs_params_t *hp, hs_result_t *r, int keep_cert)
{
    memset(r, 0, sizeof *r);
    double now = keel_now();
    if (now >= p->budget_end)
        return 0;
    double deadline = now + p->timeout_ms / 1000.0;
    if (deadline > p->budget_end)
        deadline = p->budget_end;
    p->handshakes++;
    ERR_clear_error();
    SSL_CTX *ctx = probe_ctx(hp);
    if (ctx == NULL) {
        snprintf(r->reason, sizeof r->reason, "not offered by the local OpenSSL");
        return 1;
    }
    int fd = keel_assess_tcp_connect(&p->sa, p->salen, deadline, r->reason, sizeof r->reason);
    if (fd < 0) {
        r->tcp_failed = 1;
        SSL_CTX_free(ctx);
        return 1;
    }
    SSL *ssl = keel_assess_tls_new(ctx, fd, p->sni ? p->o->host : NULL);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (ssl == NULL) {
        keel_assess_ssl_reason(r->reason, sizeof r->reason, "SSL setup failed");
        close_ssl(ssl, fd, 0);
        return 1;
    }
    int e = 0, hs = keel_assess_tls_handshake(ssl, fd, deadline, &e);
    if (hs == 1)
        r->ok = 1;
    else if (hs == 0)
        snprintf(r->reason, sizeof r->reason, "timeout");
    else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        snprintf(r->reason, sizeof r->reason, "%s", errno ? strerror(errno) : "connection closed");
    else
        keel_assess_ssl_reason(r->reason, sizeof r->reason, "handshake failed");
    r->ms = (keel_now() - now) * 1000.0;
    if (r->ok) {
        snprintf(r->version, sizeof r->version, "%s", SSL_get_version(ssl));
        const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
        snprintf(r->cipher, sizeof r->cipher, "%s", c ? SSL_CIPHER_get_name(c) : "");
        int g = SSL_get_negotiated_group(ssl);
        const char *gn = g > 0 ? SSL_group_to_name(ssl, g) : NULL;
        snprintf(r->group, sizeof r->group, "%s", gn ? gn : "");
        EVP_PKEY *tk = NULL;
        if (SSL_get_peer_tmp_key(ssl, &tk) == 1 && tk != NULL) {
            const char *tn = EVP_PKEY_get0_type_name(tk);
            snprintf(r->tmp_key, sizeof r->tmp_key, "%s", tn ? tn : "");
            r->tmp_bits = EVP_PKEY_get_bits(tk);
            EVP_PKEY_free(tk);
        }
        if (keep_cert && p->cert == NULL) {
            p->cert = SSL_get1_peer_certificate(ssl);
            STACK_OF(X509) *ch = SSL_get_peer_cert_chain(ssl);
            if (ch != NULL) {
                p->chain = sk_X509_dup(ch);
                for (int i = 0; p->chain != NULL && i < sk_X509_num(p->chain); i++)
                    X509_up_ref(sk_X509_value(p->chain, i));
            }
        }
    }
    close_ssl(ssl, fd, r->ok);
    return 1;
}

static keel_status_t untested(probe_t *p, const char *what)
{
    p->untested++;
    if (json_array_append_new(p->untested_list, json_string(what)) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    return KEEL_OK;
}

static json_t *hs_json(const hs_result_t *r)
{
    if (r->ok)
        return json_pack("{s:b, s:s, s:s, s:s?, s:s?, s:i, s:o}", "accepted", 1, "version", r->version, "cipher",
                         r->cipher, "group", r->group[0] ? r->group : NULL, "temp_key",
                         r->tmp_key[0] ? r->tmp_key : NULL, "temp_key_bits", (int)r->tmp_bits, "handshake_us",
                         json_us(r->ms));
    return json_pack("{s:b, s:s, s:o}", "accepted", 0, "reason", r->reason, "handshake_us", json_us(r->ms));
}

/* ---- protocol versions ------------------------------------------------------- */

static keel_status_t probe_versions(probe_t *p, json_t *doc, int accepted[NVERSIONS])
{
    json_t *arr = json_array();
    if (arr == NULL || json_object_set_new(doc, "versions", arr) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    for (size_t i = 0; i < NVERSIONS; i++) {
        accepted[i] = 0;
        json_t *e = NULL;
#ifdef OPENSSL_NO_SSL3
        if (versions[i].version == SSL3_VERSION) {
            e = json_pack("{s:s, s:n, s:s}", "version", versions[i].name, "accepted", "reason",
                          "not available in the local OpenSSL");
            if (e == NULL || json_array_append_new(arr, e) != 0)
                return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
            continue;
        }
#endif
        hs_params_t hp = {.min = versions[i].version, .max = versions[i].version};
        hs_result_t r;
        if (!handshake(p, &hp, &r, 0)) {
            keel_status_t st = untested(p, versions[i].name);
            if (st != KEEL_OK)
                return st;
            e = json_pack("{s:s, s:n, s:s}", "version", versions[i].name, "accepted", "reason", "time budget spent");
        } else {
            accepted[i] = r.ok;
            e = hs_json(&r);
            if (e != NULL && json_object_set_new(e, "version", json_string(versions[i].name)) != 0)
                e = NULL;
        }
        if (e == NULL || json_array_append_new(arr, e) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
        if (r.ok && (versions[i].version < TLS1_2_VERSION)) {
            char what[96];
            snprintf(what, sizeof what, "%s is accepted (nothing below TLS 1.2 should be)", versions[i].name);
            keel_status_t st = keel_assess_finding(doc, "5.5-1", "fail", what);
            if (st != KEEL_OK)
                return st;
        }
    }
    return KEEL_OK;
}

/* ---- cipher suites ----------------------------------------------------------- */

/* Accepted suites of one weakness, named in a finding up to a cap. */
typedef struct {
    unsigned n;
    size_t len;
    char names[FINDING_LIST_MAX];
} weak_list_t;

typedef struct {
    weak_list_t non_aead, non_fs, null_enc, anon;
} weak_t;

static void weak_add(weak_list_t *l, const char *name)
{
    l->n++;
    size_t need = strlen(name) + (l->len ? 2 : 0);
    if (l->len + need + sizeof ", ..." > sizeof l->names) {
        if (l->len + sizeof ", ..." <= sizeof l->names && strcmp(l->names + l->len - 3, "...") != 0)
            l->len += (size_t)snprintf(l->names + l->len, sizeof l->names - l->len, ", ...");
        return;
    }
    l->len += (size_t)snprintf(l->names + l->len, sizeof l->names - l->len, "%s%s", l->len ? ", " : "", name);
}

/* The lowest version a suite can be used with ("SSLv3", "TLSv1.2", ...). */
static int cipher_min_version(const SSL_CIPHER *c)
{
    const char *v = SSL_CIPHER_get_version(c);
    for (size_t i = 0; v != NULL && i < NVERSIONS; i++)
        if (strcmp(v, versions[i].name) == 0)
            return versions[i].version;
    return v != NULL && strcmp(v, "TLSv1.0") == 0 ? TLS1_VERSION : SSL3_VERSION;
}

static int kx_needs_secret(int kx)
{
    return kx == NID_kx_psk || kx == NID_kx_srp || kx == NID_kx_rsa_psk || kx == NID_kx_ecdhe_psk ||
           kx == NID_kx_dhe_psk;
}

static keel_status_t cipher_accepted(json_t *arr, weak_t *w, const SSL_CIPHER *c, const hs_result_t *r)
{
    int kx = SSL_CIPHER_get_kx_nid(c);
    int fs = kx == NID_kx_ecdhe || kx == NID_kx_dhe || kx == NID_kx_any;
    int aead = SSL_CIPHER_is_aead(c);
    int null_enc = SSL_CIPHER_get_cipher_nid(c) == NID_undef;
    int anon = SSL_CIPHER_get_auth_nid(c) == NID_auth_null;
    const char *name = SSL_CIPHER_get_name(c);
    json_t *e = json_pack("{s:s, s:s, s:s, s:b, s:b, s:i, s:s?, s:o}", "name", name, "standard_name",
                          SSL_CIPHER_standard_name(c) ? SSL_CIPHER_standard_name(c) : name, "version", r->version,
                          "aead", aead, "forward_secret", fs, "bits", (int)SSL_CIPHER_get_bits(c, NULL),
                          "group", r->group[0] ? r->group : NULL, "handshake_us", json_us(r->ms));
    if (e == NULL || json_array_append_new(arr, e) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    if (!aead)
        weak_add(&w->non_aead, name);
    if (!fs)
        weak_add(&w->non_fs, name);
    if (null_enc)
        weak_add(&w->null_enc, name);
    if (anon)
        weak_add(&w->anon, name);
    return KEEL_OK;
}

static keel_status_t weak_findings(json_t *doc, const weak_t *w)
{
    static const struct {
        size_t off;
        const char *provision, *what;
    } kinds[] = {
        {offsetof(weak_t, non_aead), "5.5-1", "without AEAD"},
        {offsetof(weak_t, non_fs), "5.5-1", "without forward secrecy"},
        {offsetof(weak_t, null_enc), "5.5-6", "without encryption"},
        {offsetof(weak_t, anon), "5.5-7", "without server authentication"},
    };
    char what[FINDING_LIST_MAX + 128];
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0] && st == KEEL_OK; i++) {
        const weak_list_t *l = (const weak_list_t *)((const char *)w + kinds[i].off);
        if (l->n == 0)
            continue;
        snprintf(what, sizeof what, "%u accepted cipher suite(s) %s: %s", l->n, kinds[i].what, l->names);
        st = keel_assess_finding(doc, kinds[i].provision, "fail", what);
    }
    return st;
}

static keel_status_t probe_ciphers(probe_t *p, json_t *doc, const int accepted[NVERSIONS])
{
    json_t *arr = json_array();
    if (arr == NULL || json_object_set_new(doc, "ciphers", arr) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    weak_t w;
    memset(&w, 0, sizeof w);
    keel_status_t st = KEEL_OK;
    /* the range of accepted versions up to 1.2, for the pre-1.3 suites */
    int lo = 0, hi = 0;
    for (size_t i = 0; i < NVERSIONS; i++)
        if (accepted[i] && versions[i].version <= TLS1_2_VERSION) {
            if (!lo)
                lo = versions[i].version;
            hi = versions[i].version;
        }
    unsigned tried = 0;
    SSL_CTX *all = NULL;
    if (st == KEEL_OK && lo) {
        hs_params_t ap = {.min = lo, .max = hi};
        all = probe_ctx(&ap);
        if (all == NULL)
            st = keel_errorf(KEEL_ERR_CRYPTO, "cannot build the cipher list of the local OpenSSL");
    }
    STACK_OF(SSL_CIPHER) *sk = all ? SSL_CTX_get_ciphers(all) : NULL;
    for (int i = 0; sk != NULL && i < sk_SSL_CIPHER_num(sk) && st == KEEL_OK; i++) {
        const SSL_CIPHER *c = sk_SSL_CIPHER_value(sk, i);
        if (cipher_min_version(c) >= TLS1_3_VERSION || cipher_min_version(c) > hi ||
            kx_needs_secret(SSL_CIPHER_get_kx_nid(c)))
            continue;
        char list[96];
        snprintf(list, sizeof list, "%s:@SECLEVEL=0", SSL_CIPHER_get_name(c));
        hs_params_t hp = {.min = lo, .max = hi, .ciphers = list};
        hs_result_t r;
        tried++;
        if (!handshake(p, &hp, &r, 0))
            st = untested(p, SSL_CIPHER_get_name(c));
        else if (r.ok)
            st = cipher_accepted(arr, &w, c, &r);
    }
    if (accepted[NVERSIONS - 1]) {
        for (size_t i = 0; i < sizeof tls13_suites / sizeof tls13_suites[0] && st == KEEL_OK; i++) {
            hs_params_t hp = {.min = TLS1_3_VERSION, .max = TLS1_3_VERSION, .suites = tls13_suites[i]};
            hs_result_t r;
            tried++;
            if (!handshake(p, &hp, &r, 0)) {
                st = untested(p, tls13_suites[i]);
                continue;
            }
            if (!r.ok)
                continue;
            /* the SSL_CIPHER of the suite, for its properties */
            SSL_CTX *c13 = probe_ctx(&hp);
            STACK_OF(SSL_CIPHER) *s13 = c13 ? SSL_CTX_get_ciphers(c13) : NULL;
            const SSL_CIPHER *c = NULL;
            for (int k = 0; s13 != NULL && k < sk_SSL_CIPHER_num(s13) && c == NULL; k++)
                if (strcmp(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(s13, k)), tls13_suites[i]) == 0)
                    c = sk_SSL_CIPHER_value(s13, k);
            if (c != NULL)
                st = cipher_accepted(arr, &w, c, &r);
            SSL_CTX_free(c13);
        }
    }
    SSL_CTX_free(all);
    if (st == KEEL_OK && json_object_set_new(doc, "ciphers_tried", json_integer(tried)) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    if (st == KEEL_OK)
        st = weak_findings(doc, &w);
    return st;
}

/* ---- key exchange groups ------------------------------------------------------- */

static keel_status_t probe_groups(probe_t *p, json_t *doc, const int accepted[NVERSIONS])
{
    json_t *arr = json_array();
    if (arr == NULL || json_object_set_new(doc, "groups", arr) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    int tls13 = accepted[NVERSIONS - 1];
    int lo = 0, hi = 0;
    for (size_t i = 0; i < NVERSIONS - 1; i++)
        if (accepted[i]) {
            if (!lo)
                lo = versions[i].version;
            hi = versions[i].version;
        }
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < sizeof all_groups / sizeof all_groups[0] && st == KEEL_OK; i++) {
        int ffdhe = strncmp(all_groups[i], "ffdhe", 5) == 0;
        json_t *e = NULL;
        hs_result_t r;
        if (!tls13 && (ffdhe || !lo)) {
            /* before 1.3, OpenSSL servers pick DHE parameters themselves: not negotiable */
            e = json_pack("{s:s, s:n, s:s}", "name", all_groups[i], "accepted", "reason",
                          lo ? "only negotiable in TLS 1.3, which is not accepted" : "no TLS version accepted");
        } else {
            hs_params_t hp = tls13 ? (hs_params_t){.min = TLS1_3_VERSION, .max = TLS1_3_VERSION,
                                                   .groups = all_groups[i]}
                                   : (hs_params_t){.min = lo, .max = hi, .ciphers = "ECDHE:@SECLEVEL=0",
                                                   .groups = all_groups[i]};
            if (!handshake(p, &hp, &r, 0)) {
                st = untested(p, all_groups[i]);
                e = json_pack("{s:s, s:n, s:s}", "name", all_groups[i], "accepted", "reason", "time budget spent");
            } else if (r.ok) {
                e = json_pack("{s:s, s:b, s:s}", "name", all_groups[i], "accepted", 1, "version", r.version);
            } else {
                e = json_pack("{s:s, s:b, s:s}", "name", all_groups[i], "accepted", 0, "reason", r.reason);
            }
        }
        if (st == KEEL_OK && (e == NULL || json_array_append_new(arr, e) != 0))
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    }
    return st;
}

/* ---- certificate -------------------------------------------------------------- */

static json_t *name_json(const X509_NAME *n)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL)
        return NULL;
    json_t *j = NULL;
    if (X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        char *p = NULL;
        long len = BIO_get_mem_data(b, &p);
        j = keel_assess_escape((const uint8_t *)p, len > 0 ? (size_t)(len > 1024 ? 1024 : len) : 0);
    }
    BIO_free(b);
    return j;
}

static json_t *time_json(const ASN1_TIME *t)
{
    struct tm tm;
    char s[32];
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 || strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return json_null();
    return json_string(s);
}

static keel_status_t probe_cert(probe_t *p, json_t *doc)
{
    if (p->cert == NULL)
        return json_object_set_new(doc, "certificate", json_null()) == 0
                   ? KEEL_OK
                   : keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    X509 *x = p->cert;
    EVP_PKEY *pk = X509_get0_pubkey(x);
    const char *ktype = pk ? EVP_PKEY_get0_type_name(pk) : NULL;
    int kbits = pk ? EVP_PKEY_get_bits(pk) : 0;
    char curve[64] = "";
    size_t cl = 0;
    if (pk != NULL && EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC &&
        EVP_PKEY_get_group_name(pk, curve, sizeof curve, &cl) != 1)
        curve[0] = '\0';
    int mdnid = NID_undef, pknid = NID_undef, secbits = 0;
    uint32_t flags = 0;
    (void)X509_get_signature_info(x, &mdnid, &pknid, &secbits, &flags);
    int signid = X509_get_signature_nid(x);
    int expired = X509_cmp_current_time(X509_get0_notAfter(x)) < 0;
    int not_yet = X509_cmp_current_time(X509_get0_notBefore(x)) > 0;
    int self = X509_self_signed(x, 1) == 1;
    ERR_clear_error();
    json_t *c = json_pack("{s:o, s:o, s:s?, s:i, s:s?, s:s, s:s, s:i, s:o, s:o, s:b, s:b, s:b, s:i}", "subject",
                          name_json(X509_get_subject_name(x)), "issuer", name_json(X509_get_issuer_name(x)),
                          "key_type", ktype, "key_bits", (int)kbits, "curve", curve[0] ? curve : NULL,
                          "signature_algorithm", OBJ_nid2sn(signid), "signature_digest",
                          mdnid != NID_undef ? OBJ_nid2sn(mdnid) : "none", "signature_security_bits",
                          (int)secbits, "not_before", time_json(X509_get0_notBefore(x)), "not_after",
                          time_json(X509_get0_notAfter(x)), "expired", expired, "not_yet_valid", not_yet,
                          "self_signed", self, "chain_length", (int)(p->chain ? sk_X509_num(p->chain) : 1));
    if (c == NULL || json_object_set_new(doc, "certificate", c) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    char what[160];
    keel_status_t st = KEEL_OK;
    int base = pk ? EVP_PKEY_get_base_id(pk) : NID_undef;
    int weak = ((base == EVP_PKEY_RSA || base == EVP_PKEY_RSA_PSS || base == EVP_PKEY_DSA) && kbits < 2048) ||
               (base == EVP_PKEY_EC && kbits < 256);
    if (weak) {
        snprintf(what, sizeof what, "certificate key is %s with %d bits (RSA below 2048 or EC below 256)",
                 ktype ? ktype : "?", kbits);
        st = keel_assess_finding(doc, "5.5-1", "fail", what);
    }
    if (st == KEEL_OK && expired)
        st = keel_assess_finding(doc, "5.5-1", "fail", "the server certificate has expired");
    if (st == KEEL_OK && not_yet)
        st = keel_assess_finding(doc, "5.5-1", "fail", "the server certificate is not valid yet");
    if (st == KEEL_OK && (mdnid == NID_md5 || mdnid == NID_sha1) && !self) {
        snprintf(what, sizeof what, "certificate signed with %s", OBJ_nid2sn(mdnid));
        st = keel_assess_finding(doc, "5.5-1", "fail", what);
    }
    if (st == KEEL_OK && self)
        st = keel_assess_finding(doc, "5.5-7", "info",
                                 "self-signed server certificate: clients can only trust it by pinning");
    return st;
}

/* ---- plaintext alternative ------------------------------------------------------- */

static keel_status_t plain_one(probe_t *p, const char *proto, const uint8_t *req, size_t reqlen, json_t *arr,
                               int *answered)
{
    double t0 = keel_now(), deadline = t0 + p->timeout_ms / 1000.0;
    char why[128] = "";
    uint8_t buf[PLAIN_REPLY_MAX];
    size_t n = 0;
    const char *kind = "closed";
    int fd = keel_assess_tcp_connect(&p->sa, p->salen, deadline, why, sizeof why);
    if (fd < 0) {
        kind = "no_connection";
    } else {
        ssize_t w = send(fd, req, reqlen, MSG_NOSIGNAL);
        if (w < 0 || (size_t)w != reqlen)
            kind = "send_failed";
        while (w >= 0 && n < sizeof buf) {
            if (!keel_assess_wait_fd(fd, POLLIN, deadline)) {
                if (n == 0)
                    kind = "timeout";
                break;
            }
            ssize_t k = recv(fd, buf + n, sizeof buf - n, 0);
            if (k < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (k < 0) {
                if (n == 0)
                    kind = errno == ECONNRESET ? "reset" : "closed";
                break;
            }
            if (k == 0)
                break;
            n += (size_t)k;
            /* the first bytes decide; do not sit through a slow stream */
            if (n >= 16)
                break;
        }
        close(fd);
    }
    *answered = 0;
    if (n > 0) {
        if (strcmp(proto, "http") == 0 && n >= 5 && memcmp(buf, "HTTP/", 5) == 0)
            kind = "http", *answered = 1;
        else if (strcmp(proto, "mqtt") == 0 && n >= 4 && buf[0] == 0x20 && buf[1] == 0x02)
            kind = "mqtt_connack", *answered = 1;
        else if (n >= 3 && buf[0] == 0x15 && buf[1] == 0x03)
            kind = "tls_alert";
        else
            kind = "other";
    }
    json_t *e = json_pack("{s:s, s:o, s:b, s:s, s:o, s:i, s:o}", "protocol", proto, "request",
                          keel_assess_escape(req, reqlen), "answered", *answered, "reply_kind", kind, "reply",
                          keel_assess_escape(buf, n), "reply_bytes", (int)n, "duration_us", json_us(ms_since(t0)));
    if (e == NULL || json_array_append_new(arr, e) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    if (*answered && buf[0] == 0x20 && json_object_set_new(e, "connack_code", json_integer(buf[3])) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    return KEEL_OK;
}

static keel_status_t probe_plaintext(probe_t *p, json_t *doc)
{
    json_t *arr = json_array();
    if (arr == NULL || json_object_set_new(doc, "plaintext", arr) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    char http[KEEL_PROBE_HOST_MAX + 96];
    int hl = snprintf(http, sizeof http, "GET / HTTP/1.0\r\nHost: %s\r\nUser-Agent: keel-assess\r\n\r\n",
                      p->sni ? p->o->host : p->addr);
    /* MQTT 3.1.1 CONNECT, clean session, keep-alive 10 s, client id "keel-probe" */
    static const uint8_t mqtt[] = {0x10, 0x16, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x0a,
                                   0x00, 0x0a, 'k', 'e', 'e', 'l', '-', 'p', 'r', 'o', 'b', 'e'};
    int a_http = 0, a_mqtt = 0;
    keel_status_t st = plain_one(p, "http", (const uint8_t *)http, (size_t)hl, arr, &a_http);
    if (st == KEEL_OK)
        st = plain_one(p, "mqtt", mqtt, sizeof mqtt, arr, &a_mqtt);
    if (st == KEEL_OK && (a_http || a_mqtt)) {
        char what[160];
        snprintf(what, sizeof what, "port %u answers %s in clear: data sent there is not protected", p->o->port,
                 a_http ? "HTTP" : "MQTT");
        st = keel_assess_finding(doc, "5.5-6", "fail", what);
        if (st == KEEL_OK)
            st = keel_assess_finding(doc, "5.8-1", "warn", what);
    }
    return st;
}

/* ---- entry point -------------------------------------------------------------- */

static keel_status_t probe_run(probe_t *p, json_t *doc)
{
    /* the server's own choice first, and the certificate it shows */
    hs_params_t def = {.min = TLS1_VERSION, .max = TLS1_3_VERSION};
    hs_result_t r;
    if (!handshake(p, &def, &r, 1))
        return keel_errorf(KEEL_ERR_ARG, "no time budget");
    if (r.tcp_failed)
        return keel_errorf(KEEL_ERR_IO, "%s port %u: %s", p->addr, p->o->port, r.reason);
    json_t *pref = hs_json(&r);
    if (pref == NULL || json_object_set_new(doc, "preferred", pref) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    int accepted[NVERSIONS] = {0}; /* read below even when probe_versions failed early */
    keel_status_t st = probe_versions(p, doc, accepted);
    int any = 0;
    for (size_t i = 0; i < NVERSIONS; i++)
        any |= accepted[i];
    if (st == KEEL_OK && json_object_set_new(doc, "tls", json_boolean(any || r.ok)) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    if (st == KEEL_OK)
        st = probe_ciphers(p, doc, accepted);
    if (st == KEEL_OK)
        st = probe_groups(p, doc, accepted);
    if (st == KEEL_OK)
        st = probe_cert(p, doc);
    if (st == KEEL_OK)
        st = probe_plaintext(p, doc);
    if (st == KEEL_OK &&
        (json_object_set_new(doc, "handshakes", json_integer(p->handshakes)) != 0 ||
         json_object_set_new(doc, "untested", json_incref(p->untested_list)) != 0 ||
         json_object_set_new(doc, "duration_us", json_us(ms_since(p->t0))) != 0))
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    return st;
}

keel_status_t keel_assess_probe_tls(const keel_tls_probe_opts_t *o, json_t **out)
{
    if (o == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no TLS probe options");
    *out = NULL;
    if (o->port < 1 || o->port > 65535)
        return keel_errorf(KEEL_ERR_ARG, "port must be 1..65535");
    if (o->timeout_ms > TLS_TIMEOUT_MAX_MS || o->budget_ms > TLS_BUDGET_MAX_MS)
        return keel_errorf(KEEL_ERR_ARG, "timeout capped at %u ms, budget at %u ms", TLS_TIMEOUT_MAX_MS,
                           TLS_BUDGET_MAX_MS);
    probe_t p;
    memset(&p, 0, sizeof p);
    p.o = o;
    keel_status_t st = keel_assess_resolve(o->host, o->port, &p.sa, &p.salen, p.addr, sizeof p.addr);
    if (st != KEEL_OK)
        return st;
    p.sni = keel_assess_sni_ok(o->host);
    p.timeout_ms = o->timeout_ms ? o->timeout_ms : TLS_TIMEOUT_DEFAULT_MS;
    p.t0 = keel_now();
    p.budget_end = p.t0 + (o->budget_ms ? o->budget_ms : TLS_BUDGET_DEFAULT_MS) / 1000.0;
    p.untested_list = json_array();
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:i, s:[]}", "format", "keel-assess-tls-1", "probe", "tls",
                            "target", o->host, "address", p.addr,
                            "port", (int)o->port, "findings");
    if (doc == NULL || p.untested_list == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the TLS document");
    if (st == KEEL_OK) {
        sigset_t old; /* a server that resets the connection mid-handshake must not end the program */
        keel_assess_sigpipe_block(&old);
        st = probe_run(&p, doc);
        keel_assess_sigpipe_restore(&old);
    }
    if (st == KEEL_OK && p.untested > 0) {
        char what[128];
        snprintf(what, sizeof what, "the time budget ran out: %u handshake(s) not tried", p.untested);
        st = keel_assess_finding(doc, "5.5-1", "info", what);
    }
    X509_free(p.cert);
    sk_X509_pop_free(p.chain, X509_free);
    json_decref(p.untested_list);
    ERR_clear_error();
    if (st != KEEL_OK) {
        json_decref(doc);
        return st;
    }
    *out = doc;
    return KEEL_OK;
}

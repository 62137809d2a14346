/*
 * Signed update bundles: round trips; every single-byte change of the signed
 * part refused; payload changes caught before the bad chunk is handed out;
 * truncated, extended and oversized bundles; strict manifests; wrong,
 * expired, revoked and non-code-signing signers; SemVer precedence.
 */
#include "testutil.h"

#include "keel/crypto.h"
#include "keel/factory.h"
#include "keel/identity.h"
#include "keel/update.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#define C 4096u /* chunk size of the small bundles */
#define BUNDLE_MAX (8u * 1024u * 1024u)

typedef struct {
    char *dir;
    char fa[KEEL_PATH_MAX], fb[KEEL_PATH_MAX];     /* two factories */
    char sa[KEEL_PATH_MAX], sb[KEEL_PATH_MAX];     /* a signer from each */
    char root_a[2 * KEEL_PATH_MAX], root_b[2 * KEEL_PATH_MAX];
    keel_factory_t *a;                              /* factory A, device + release keys */
    keel_trust_t *trust;                            /* factory A's release root */
    EVP_PKEY *signer_key;                           /* signer A */
    X509 *signer_cert;
} fixture_t;

static fixture_t fx;

/* ---- helpers ------------------------------------------------------------ */

/* An in-memory input that may hand out short reads and EINTR. */
typedef struct {
    const uint8_t *d;
    size_t len, pos;
    unsigned step;  /* 0: as much as asked; else at most 1..step bytes per call */
    unsigned calls;
    int eintr;      /* every 5th call fails with EINTR */
    size_t asked;   /* total bytes asked for */
} mem_in_t;

static ssize_t mem_read(void *ctx, void *buf, size_t n)
{
    mem_in_t *m = ctx;
    m->calls++;
    m->asked += n;
    if (m->eintr && m->calls % 5 == 0) {
        errno = EINTR;
        return -1;
    }
    size_t left = m->len - m->pos;
    if (n > left)
        n = left;
    if (m->step > 0 && n > 1 + m->calls % m->step)
        n = 1 + m->calls % m->step;
    memcpy(buf, m->d + m->pos, n);
    m->pos += n;
    return (ssize_t)n;
}

static void random_fill(uint8_t *p, size_t n)
{
    if (n > 0)
        keel_random_bytes(p, n);
}

static void write_file(const char *path, const void *data, size_t len)
{
    assert_int_equal(keel_file_write_atomic(path, data, len, 0600), KEEL_OK);
}

static void read_file(const char *path, keel_buf_t *b)
{
    assert_int_equal(keel_file_read(path, BUNDLE_MAX, b), KEEL_OK);
}

static keel_bundle_create_opts_t default_opts(const char *signer_dir, const char *payload, const char *out)
{
    static char key[KEEL_PATH_MAX], chain[KEEL_PATH_MAX];
    static const char *const models[] = {"thermo-1", "thermo-2"};
    static const char *const fixes[] = {"CVE-2025-0001", "GHSA-abcd-1234"};
    path_in(key, signer_dir, "signer.key");
    path_in(chain, signer_dir, "chain.pem");
    keel_bundle_create_opts_t o = {.signer_key = key, .signer_chain = chain, .payload = payload, .out = out,
                                   .models = models, .n_models = 2, .version = "1.4.0-rc.1+build.7",
                                   .security_version = 7, .support_until = "2031-06-30",
                                   .notes = "Fixes the thing.\n\tAnd the other.", .risk = "remote takeover",
                                   .security_fixes = fixes, .n_fixes = 2, .disruptive = true,
                                   .downtime_seconds = 42, .chunk_size = C};
    return o;
}

/* Makes a bundle of `size` random bytes; returns the payload, bundle in *b. */
static uint8_t *make_bundle(size_t size, uint32_t chunk, keel_buf_t *b)
{
    char pay[KEEL_PATH_MAX], out[KEEL_PATH_MAX];
    path_in(pay, fx.dir, "payload.bin");
    path_in(out, fx.dir, "bundle.kbn");
    uint8_t *p = malloc(size + 1);
    assert_non_null(p);
    random_fill(p, size);
    write_file(pay, p, size);
    keel_bundle_create_opts_t o = default_opts(fx.sa, pay, out);
    o.chunk_size = chunk;
    assert_int_equal(keel_bundle_create(&o), KEEL_OK);
    read_file(out, b);
    return p;
}

static keel_status_t open_mem(const uint8_t *d, size_t len, const keel_trust_t *t, keel_bundle_reader_t **r)
{
    static mem_in_t in;
    in = (mem_in_t){.d = d, .len = len};
    return keel_bundle_open(mem_read, &in, t, r);
}

/* Reads every chunk; returns the status of the first failure (or OK). */
static keel_status_t drain(keel_bundle_reader_t *r, uint8_t *out, size_t *total, uint32_t *chunks_ok)
{
    const keel_manifest_t *m = keel_bundle_manifest(r);
    uint8_t *buf = malloc(m->chunk_size);
    assert_non_null(buf);
    size_t n = 0;
    keel_status_t st;
    *total = 0;
    *chunks_ok = 0;
    while ((st = keel_bundle_next_chunk(r, buf, m->chunk_size, &n)) == KEEL_OK && n > 0) {
        if (out != NULL)
            memcpy(out + *total, buf, n);
        *total += n;
        (*chunks_ok)++;
    }
    if (st != KEEL_OK) {
        assert_int_equal(n, 0);
        /* Nothing of a refused chunk is left in the buffer. */
        for (size_t i = 0; i < m->chunk_size; i++)
            assert_int_equal(buf[i], 0);
    }
    free(buf);
    return st;
}

static size_t signed_len_of(const uint8_t *b)
{
    uint32_t m = (uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15];
    uint32_t s = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
    uint32_t c = (uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23];
    return 64 + (size_t)m + s + c;
}

static EVP_PKEY *load_key(const char *dir)
{
    char p[KEEL_PATH_MAX];
    path_in(p, dir, "signer.key");
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    return k;
}

static X509 *load_cert(const char *path)
{
    X509 *c = NULL;
    assert_int_equal(keel_pem_load_cert(path, &c), KEEL_OK);
    return c;
}

static void der_append(keel_buf_t *b, X509 *c)
{
    unsigned char *der = NULL;
    int n = i2d_X509(c, &der);
    assert_true(n > 0);
    assert_int_equal(keel_buf_append(b, der, (size_t)n), KEEL_OK);
    OPENSSL_free(der);
}

/* A certificate made here, with OpenSSL directly, for the signer tests. */
static X509 *make_cert(X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *subject_key, long not_before_days,
                       long not_after_days, const char *ext_key_usage, const char *basic)
{
    X509 *c = X509_new();
    X509_NAME *n = X509_NAME_new();
    assert_non_null(c);
    assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"test signer", -1,
                                                -1, 0), 1);
    BIGNUM *bn = BN_new();
    assert_int_equal(BN_rand(bn, 120, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY), 1);
    assert_non_null(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(c)));
    BN_free(bn);
    assert_int_equal(X509_set_version(c, X509_VERSION_3), 1);
    assert_int_equal(X509_set_subject_name(c, n), 1);
    assert_int_equal(X509_set_issuer_name(c, X509_get_subject_name(issuer)), 1);
    assert_int_equal(X509_set_pubkey(c, subject_key), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(c), not_before_days * 86400L));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(c), not_after_days * 86400L));
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, c, NULL, NULL, 0);
    const int nids[] = {NID_basic_constraints, NID_key_usage, NID_ext_key_usage, NID_subject_key_identifier,
                        NID_authority_key_identifier};
    const char *vals[] = {basic, "critical,digitalSignature", ext_key_usage, "hash", "keyid:always"};
    for (int i = 0; i < 5; i++) {
        X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nids[i], vals[i]);
        assert_non_null(e);
        assert_int_equal(X509_add_ext(c, e, -1), 1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(c, issuer_key, EVP_sha256()) > 0);
    X509_NAME_free(n);
    return c;
}

/* ---- the test-only signer: signs any manifest bytes ---------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void build_bundle(const char *manifest, EVP_PKEY *key, const keel_buf_t *chain, const uint8_t *payload,
                         size_t plen, uint64_t hdr_plen, keel_buf_t *out)
{
    size_t mlen = strlen(manifest);
    uint8_t h[64], sig[128];
    size_t siglen = 71, n = 0;
    for (int tries = 0; tries < 64; tries++) {
        memset(h, 0, sizeof h);
        memcpy(h, "KEELBNDL", 8);
        h[9] = 1;
        h[11] = 1;
        put32(h + 12, (uint32_t)mlen);
        put32(h + 16, (uint32_t)siglen);
        put32(h + 20, (uint32_t)chain->len);
        put32(h + 24, (uint32_t)(hdr_plen >> 32));
        put32(h + 28, (uint32_t)hdr_plen);
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        n = sizeof sig;
        assert_int_equal(EVP_DigestSignInit(c, NULL, EVP_sha256(), NULL, key), 1);
        assert_int_equal(EVP_DigestSignUpdate(c, h, 64), 1);
        assert_int_equal(EVP_DigestSignUpdate(c, manifest, mlen), 1);
        assert_int_equal(EVP_DigestSignUpdate(c, chain->data, chain->len), 1);
        assert_int_equal(EVP_DigestSignFinal(c, sig, &n), 1);
        EVP_MD_CTX_free(c);
        if (n == siglen)
            break;
        siglen = n;
    }
    assert_int_equal(n, siglen);
    keel_buf_init(out, BUNDLE_MAX);
    assert_int_equal(keel_buf_append(out, h, 64), KEEL_OK);
    assert_int_equal(keel_buf_append(out, manifest, mlen), KEEL_OK);
    assert_int_equal(keel_buf_append(out, sig, siglen), KEEL_OK);
    assert_int_equal(keel_buf_append(out, chain->data, chain->len), KEEL_OK);
    assert_int_equal(keel_buf_append(out, payload, plen), KEEL_OK);
}

static void hex(const uint8_t *d, char out[65])
{
    assert_int_equal(keel_hex_encode(d, 32, out, 65), KEEL_OK);
}

/* A valid manifest object for payload p (chunk size C). */
static json_t *manifest_for(const uint8_t *p, size_t len)
{
    char h[65];
    uint8_t d[32];
    json_t *chunks = json_array();
    for (size_t off = 0; off < len; off += C) {
        keel_sha256(p + off, len - off < C ? len - off : C, d);
        hex(d, h);
        json_array_append_new(chunks, json_string(h));
    }
    keel_sha256(p, len, d);
    hex(d, h);
    json_t *m = json_pack("{s:s, s:[s], s:s, s:i, s:s, s:s, s:b, s:i, s:{s:I, s:s, s:i, s:o}, s:{s:s, s:s}}",
                          "format", "keel-bundle-1", "models", "thermo-1", "version", "2.0.0", "security_version",
                          3, "support_until", "2030-01-31", "created", "2025-05-01T12:00:00Z", "disruptive", 0,
                          "downtime_seconds", 0, "payload", "size", (json_int_t)len, "sha256", h, "chunk_size",
                          (int)C, "chunks", chunks, "algorithms", "signature", "ecdsa-p256-sha256", "digest",
                          "sha256");
    assert_non_null(m);
    return m;
}

static void signer_chain(const char *signer_dir, keel_buf_t *chain)
{
    char p[KEEL_PATH_MAX];
    path_in(p, signer_dir, "chain.pem");
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    keel_buf_init(chain, 64 * 1024);
    X509 *c;
    while ((c = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        der_append(chain, c);
        X509_free(c);
    }
    fclose(f);
}

/* Opens a bundle signed over `manifest` by signer A with payload p. */
static keel_status_t open_manifest_text(const char *manifest, const uint8_t *p, size_t len, uint64_t hdr_plen)
{
    keel_buf_t chain, b;
    signer_chain(fx.sa, &chain);
    build_bundle(manifest, fx.signer_key, &chain, p, len, hdr_plen, &b);
    keel_bundle_reader_t *r = NULL;
    keel_status_t st = open_mem(b.data, b.len, fx.trust, &r);
    keel_bundle_close(r);
    keel_buf_free(&b);
    keel_buf_free(&chain);
    return st;
}

static keel_status_t open_manifest(json_t *m, const uint8_t *p, size_t len)
{
    char *txt = json_dumps(m, JSON_COMPACT);
    assert_non_null(txt);
    keel_status_t st = open_manifest_text(txt, p, len, len);
    free(txt);
    return st;
}

/* ---- setup -------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    if (keel_crypto_init() != KEEL_OK)
        return -1;
    fx.dir = tmpdir_new();
    path_in(fx.fa, fx.dir, "factory-a");
    path_in(fx.fb, fx.dir, "factory-b");
    path_in(fx.sa, fx.dir, "signer-a");
    path_in(fx.sb, fx.dir, "signer-b");
    snprintf(fx.root_a, sizeof fx.root_a, "%s/release-ca/root.crt", fx.fa);
    snprintf(fx.root_b, sizeof fx.root_b, "%s/release-ca/root.crt", fx.fb);
    assert_int_equal(keel_factory_init(fx.fa, "Acme", NULL, 0), KEEL_OK);
    assert_int_equal(keel_factory_init(fx.fb, "Other", NULL, 0), KEEL_OK);
    keel_factory_t *b = NULL;
    assert_int_equal(keel_factory_load(fx.fb, KEEL_PKI_MASK(KEEL_PKI_RELEASE), NULL, &b), KEEL_OK);
    assert_int_equal(keel_factory_issue_signer(b, "Other release", fx.sb), KEEL_OK);
    keel_factory_free(b);
    assert_int_equal(keel_factory_load(fx.fa, KEEL_PKI_MASK(KEEL_PKI_RELEASE) | KEEL_PKI_MASK(KEEL_PKI_DEVICE),
                                       NULL, &fx.a), KEEL_OK);
    assert_int_equal(keel_factory_issue_signer(fx.a, "Acme release", fx.sa), KEEL_OK);
    assert_int_equal(keel_trust_load(fx.root_a, NULL, &fx.trust), KEEL_OK);
    fx.signer_key = load_key(fx.sa);
    char p[KEEL_PATH_MAX];
    path_in(p, fx.sa, "signer.crt");
    fx.signer_cert = load_cert(p);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    keel_trust_free(fx.trust);
    keel_factory_free(fx.a);
    EVP_PKEY_free(fx.signer_key);
    X509_free(fx.signer_cert);
    tmpdir_free(fx.dir);
    return 0;
}

/* ---- tests -------------------------------------------------------------- */

static void test_signer_certificate(void **state)
{
    (void)state;
    char p[KEEL_PATH_MAX];
    struct stat sb;
    path_in(p, fx.sa, "signer.key");
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* Never replaced. */
    assert_int_equal(keel_factory_issue_signer(fx.a, "Acme release", fx.sa), KEEL_ERR_EXISTS);
    assert_int_equal(keel_factory_issue_signer(fx.a, "", fx.dir), KEEL_ERR_ARG);
    assert_int_equal(keel_factory_issue_signer(fx.a, "bad\nname", fx.dir), KEEL_ERR_ARG);
    X509 *c = fx.signer_cert;
    assert_true(X509_get_extended_key_usage(c) & XKU_CODE_SIGN);
    assert_true(X509_get_key_usage(c) & KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_check_ca(c), 0);
    assert_int_equal(X509_check_issued(keel_factory_issuing(fx.a, KEEL_PKI_RELEASE), c), X509_V_OK);
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(c), X509_get0_notAfter(c)), 1);
    assert_true(days >= KEEL_SIGNER_DAYS && days <= KEEL_SIGNER_DAYS + 1);
    /* A factory without the release key loaded cannot issue one. */
    keel_factory_t *f = NULL;
    assert_int_equal(keel_factory_load(fx.fa, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &f), KEEL_OK);
    path_in(p, fx.dir, "never");
    assert_int_equal(keel_factory_issue_signer(f, "x", p), KEEL_ERR_ARG);
    keel_factory_free(f);
}

static void round_trip(size_t size, uint32_t chunk, int use_stdin)
{
    keel_buf_t b;
    uint8_t *p;
    if (!use_stdin) {
        p = make_bundle(size, chunk, &b);
    } else {
        /* The payload arrives on standard input: spooled, then copied. */
        char pay[KEEL_PATH_MAX], out[KEEL_PATH_MAX];
        path_in(pay, fx.dir, "stdin.bin");
        path_in(out, fx.dir, "stdin.kbn");
        p = malloc(size + 1);
        random_fill(p, size);
        write_file(pay, p, size);
        int saved = dup(STDIN_FILENO), fd = open(pay, O_RDONLY);
        assert_true(saved >= 0 && fd >= 0);
        assert_int_equal(dup2(fd, STDIN_FILENO), STDIN_FILENO);
        close(fd);
        keel_bundle_create_opts_t o = default_opts(fx.sa, "-", out);
        o.chunk_size = chunk;
        assert_int_equal(keel_bundle_create(&o), KEEL_OK);
        assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
        close(saved);
        read_file(out, &b);
    }
    /* Short reads and EINTR on the way. */
    mem_in_t in = {.d = b.data, .len = b.len, .step = 13, .eintr = 1};
    keel_bundle_reader_t *r = NULL;
    assert_int_equal(keel_bundle_open(mem_read, &in, fx.trust, &r), KEEL_OK);
    const keel_manifest_t *m = keel_bundle_manifest(r);
    uint32_t want_chunk = chunk ? chunk : KEEL_BUNDLE_CHUNK_DEFAULT;
    assert_int_equal(m->payload_size, size);
    assert_int_equal(m->chunk_size, want_chunk);
    assert_int_equal(m->n_chunks, (size + want_chunk - 1) / want_chunk);
    assert_int_equal(m->n_models, 2);
    assert_string_equal(m->models[1], "thermo-2");
    assert_string_equal(m->version, "1.4.0-rc.1+build.7");
    assert_int_equal(m->security_version, 7);
    assert_string_equal(m->support_until, "2031-06-30");
    assert_string_equal(m->notes, "Fixes the thing.\n\tAnd the other.");
    assert_string_equal(m->risk, "remote takeover");
    assert_int_equal(m->n_fixes, 2);
    assert_string_equal(m->security_fixes[1], "GHSA-abcd-1234");
    assert_true(m->disruptive);
    assert_int_equal(m->downtime_seconds, 42);
    assert_int_equal(strlen(m->created), 20);
    assert_non_null(strstr(keel_bundle_signer_subject(r), "CN=Acme release"));
    uint8_t digest[32];
    keel_sha256(p, size, digest);
    assert_memory_equal(m->payload_sha256, digest, 32);

    /* The signed part is the bundle's prefix and verifies on its own. */
    const uint8_t *sp = NULL;
    size_t splen = 0;
    assert_int_equal(keel_bundle_signed_part(r, &sp, &splen), KEEL_OK);
    assert_int_equal(splen, signed_len_of(b.data));
    assert_memory_equal(sp, b.data, splen);
    keel_manifest_t again;
    assert_int_equal(keel_bundle_verify_signed_part(sp, splen, fx.trust, &again), KEEL_OK);
    assert_int_equal(again.n_chunks, m->n_chunks);
    assert_string_equal(again.version, m->version);
    keel_manifest_free(&again);
    assert_int_equal(b.len, splen + size);

    uint8_t *got = malloc(size + 1);
    size_t total = 0;
    uint32_t chunks = 0;
    assert_int_equal(drain(r, got, &total, &chunks), KEEL_OK);
    assert_int_equal(total, size);
    assert_int_equal(chunks, m->n_chunks);
    if (size > 0)
        assert_memory_equal(got, p, size);
    /* Finished stays finished. */
    size_t n = 1;
    assert_int_equal(keel_bundle_next_chunk(r, got, size + 1, &n), KEEL_OK);
    assert_int_equal(n, 0);
    keel_bundle_close(r);
    free(got);
    free(p);
    keel_buf_free(&b);
}

static void test_round_trip(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, C - 1, C, C + 1, 3 * C + 5};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        round_trip(sizes[i], C, 0);
    round_trip(3 * C + 5, C, 1);
    round_trip(0, C, 1);
    /* The default chunk size. */
    round_trip(KEEL_BUNDLE_CHUNK_DEFAULT + 3, 0, 0);
    round_trip(KEEL_BUNDLE_CHUNK_DEFAULT + 3, 0, 1);
}

static void test_every_byte_of_signed_part(void **state)
{
    (void)state;
    keel_buf_t b;
    uint8_t *p = make_bundle(3 * C + 5, C, &b);
    size_t sl = signed_len_of(b.data);
    unsigned refused = 0;
    for (size_t off = 0; off < sl; off++) {
        const uint8_t masks[2] = {0x01, 0xff};
        for (int k = 0; k < (off % 5 == 0 ? 2 : 1); k++) {
            b.data[off] ^= masks[k];
            keel_bundle_reader_t *r = NULL;
            keel_status_t st = open_mem(b.data, b.len, fx.trust, &r);
            b.data[off] ^= masks[k];
            if (st == KEEL_OK)
                fail_msg("a change of byte %zu (xor 0x%02x) was accepted", off, masks[k]);
            assert_null(r);
            assert_true(keel_error_message()[0] != '\0');
            refused++;
        }
    }
    assert_true(refused > sl);
    /* Unchanged, it still opens. */
    keel_bundle_reader_t *r = NULL;
    assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_OK);
    keel_bundle_close(r);
    free(p);
    keel_buf_free(&b);
}

static void test_payload_changes(void **state)
{
    (void)state;
    const size_t size = 3 * C + 5;
    keel_buf_t b;
    uint8_t *p = make_bundle(size, C, &b);
    size_t sl = signed_len_of(b.data);
    uint8_t *got = malloc(size);
    for (int i = 0; i < 200; i++) {
        /* Spread over the payload, with both ends of every chunk included. */
        size_t off = i < 8 ? (size_t[]){0, C - 1, C, 2 * C - 1, 2 * C, 3 * C - 1, 3 * C, size - 1}[i]
                           : keel_random_uniform((uint32_t)size);
        uint8_t mask = i % 3 == 0 ? 0xff : 0x01;
        b.data[sl + off] ^= mask;
        keel_bundle_reader_t *r = NULL;
        assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_OK);
        size_t total = 0;
        uint32_t chunks = 0;
        keel_status_t st = drain(r, got, &total, &chunks);
        b.data[sl + off] ^= mask;
        assert_int_equal(st, KEEL_ERR_VERIFY);
        /* Every chunk before the changed one came out, intact; not that one. */
        assert_int_equal(chunks, off / C);
        assert_int_equal(total, (off / C) * C);
        if (total > 0)
            assert_memory_equal(got, p, total);
        /* A refused reader stays refused. */
        size_t n = 1;
        uint8_t buf[C];
        assert_int_equal(keel_bundle_next_chunk(r, buf, sizeof buf, &n), KEEL_ERR_VERIFY);
        assert_int_equal(n, 0);
        keel_bundle_close(r);
    }
    free(got);
    free(p);
    keel_buf_free(&b);
}

static void test_truncated_and_extended(void **state)
{
    (void)state;
    const size_t size = 3 * C + 5;
    keel_buf_t b;
    uint8_t *p = make_bundle(size, C, &b);
    size_t sl = signed_len_of(b.data);
    /* Anywhere in the header, manifest, signature or chain: open refuses. */
    for (size_t cut = 0; cut < sl; cut++) {
        keel_bundle_reader_t *r = NULL;
        keel_status_t st = open_mem(b.data, cut, fx.trust, &r);
        assert_int_equal(st, KEEL_ERR_FORMAT);
        assert_non_null(strstr(keel_error_message(), "truncated"));
    }
    /* In the payload: the reader refuses before the end. */
    for (size_t cut = sl; cut < b.len; cut = cut + 37 < b.len || cut == b.len - 1 ? cut + 37 : b.len - 1) {
        keel_bundle_reader_t *r = NULL;
        assert_int_equal(open_mem(b.data, cut, fx.trust, &r), KEEL_OK);
        size_t total = 0;
        uint32_t chunks = 0;
        assert_int_equal(drain(r, NULL, &total, &chunks), KEEL_ERR_VERIFY);
        assert_non_null(strstr(keel_error_message(), "truncated"));
        assert_true(total <= cut - sl);
        keel_bundle_close(r);
    }
    /* One byte too many. */
    assert_int_equal(keel_buf_append(&b, "x", 1), KEEL_OK);
    keel_bundle_reader_t *r = NULL;
    assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_OK);
    size_t total = 0;
    uint32_t chunks = 0;
    assert_int_equal(drain(r, NULL, &total, &chunks), KEEL_ERR_VERIFY);
    assert_non_null(strstr(keel_error_message(), "trailing"));
    /* The last chunk is withheld until the input has shown its end. */
    assert_int_equal(chunks, 3);
    keel_bundle_close(r);
    free(p);
    keel_buf_free(&b);

    /* An empty payload followed by a stray byte. */
    p = make_bundle(0, C, &b);
    assert_int_equal(keel_buf_append(&b, "x", 1), KEEL_OK);
    assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_OK);
    assert_int_equal(drain(r, NULL, &total, &chunks), KEEL_ERR_VERIFY);
    keel_bundle_close(r);
    free(p);
    keel_buf_free(&b);
}

static void test_header_caps(void **state)
{
    (void)state;
    keel_buf_t b;
    uint8_t *p = make_bundle(10, C, &b);
    static const struct {
        size_t off;
        uint32_t value;
        keel_status_t want;
    } cases[] = {
        {12, 0xffffffffu, KEEL_ERR_TOO_LARGE},             /* manifest */
        {12, KEEL_BUNDLE_MANIFEST_MAX + 1, KEEL_ERR_TOO_LARGE},
        {12, 0, KEEL_ERR_FORMAT},
        {16, KEEL_BUNDLE_SIG_MAX + 1, KEEL_ERR_TOO_LARGE}, /* signature */
        {16, 0, KEEL_ERR_FORMAT},
        {20, 0x7fffffffu, KEEL_ERR_TOO_LARGE},             /* chain */
        {20, 0, KEEL_ERR_FORMAT},
        {24, 0x00000011u, KEEL_ERR_TOO_LARGE},             /* payload, high word: 64 GiB + */
        {24, 0xffffffffu, KEEL_ERR_TOO_LARGE},
    };
    uint8_t h[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(h, b.data, 64);
        put32(h + cases[i].off, cases[i].value);
        /* Only the header is there: refused from it alone, nothing more asked. */
        mem_in_t in = {.d = h, .len = 64};
        keel_bundle_reader_t *r = NULL;
        assert_int_equal(keel_bundle_open(mem_read, &in, fx.trust, &r), cases[i].want);
        assert_int_equal(in.asked, 64);
        assert_null(r);
    }
    memcpy(h, b.data, 64);
    h[0] = 'X';
    mem_in_t in = {.d = h, .len = 64};
    keel_bundle_reader_t *r = NULL;
    assert_int_equal(keel_bundle_open(mem_read, &in, fx.trust, &r), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "magic"));
    memcpy(h, b.data, 64);
    h[9] = 2; /* format version 2 */
    in = (mem_in_t){.d = h, .len = 64};
    assert_int_equal(keel_bundle_open(mem_read, &in, fx.trust, &r), KEEL_ERR_UNSUPPORTED);
    memcpy(h, b.data, 64);
    h[11] = 2; /* algorithm 2 */
    in = (mem_in_t){.d = h, .len = 64};
    assert_int_equal(keel_bundle_open(mem_read, &in, fx.trust, &r), KEEL_ERR_UNSUPPORTED);
    assert_non_null(strstr(keel_error_message(), "algorithm"));
    memcpy(h, b.data, 64);
    h[63] = 1;
    in = (mem_in_t){.d = h, .len = 64};
    assert_int_equal(keel_bundle_open(mem_read, &in, fx.trust, &r), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "reserved"));
    /* The same caps guard a stored signed part. */
    keel_manifest_t m;
    memcpy(h, b.data, 64);
    put32(h + 12, 0xffffffffu);
    assert_int_equal(keel_bundle_verify_signed_part(h, 64, fx.trust, &m), KEEL_ERR_TOO_LARGE);
    size_t sl = signed_len_of(b.data);
    assert_int_equal(keel_bundle_verify_signed_part(b.data, sl - 1, fx.trust, &m), KEEL_ERR_FORMAT);
    assert_int_equal(keel_bundle_verify_signed_part(b.data, sl + 1, fx.trust, &m), KEEL_ERR_FORMAT);
    assert_int_equal(keel_bundle_verify_signed_part(b.data, sl, fx.trust, &m), KEEL_OK);
    keel_manifest_free(&m);
    b.data[sl - 1] ^= 1;
    assert_int_equal(keel_bundle_verify_signed_part(b.data, sl, fx.trust, &m), KEEL_ERR_VERIFY);
    free(p);
    keel_buf_free(&b);
}

static void expect_manifest_refused(json_t *m, const uint8_t *p, size_t len, const char *why)
{
    keel_status_t st = open_manifest(m, p, len);
    if (st != KEEL_ERR_FORMAT)
        fail_msg("manifest change '%s' gave %s, not format", why, keel_status_str(st));
    assert_non_null(strstr(keel_error_message(), "manifest"));
    json_decref(m);
}

static void test_strict_manifest(void **state)
{
    (void)state;
    uint8_t p[2 * C + 1];
    random_fill(p, sizeof p);
    json_t *m = manifest_for(p, sizeof p);
    /* The test signer makes bundles the reader accepts. */
    assert_int_equal(open_manifest(m, p, sizeof p), KEEL_OK);
    json_decref(m);

    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "colour", json_string("blue"));
    expect_manifest_refused(m, p, sizeof p, "unknown top-level field");
    m = manifest_for(p, sizeof p);
    json_object_set_new(json_object_get(m, "payload"), "compression", json_string("zstd"));
    expect_manifest_refused(m, p, sizeof p, "unknown payload field");
    m = manifest_for(p, sizeof p);
    json_object_set_new(json_object_get(m, "algorithms"), "kem", json_string("none"));
    expect_manifest_refused(m, p, sizeof p, "unknown algorithms field");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "security_version", json_string("3"));
    expect_manifest_refused(m, p, sizeof p, "string for a number");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "security_version", json_integer(0x100000000LL));
    expect_manifest_refused(m, p, sizeof p, "security_version out of range");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "downtime_seconds", json_real(1.5));
    expect_manifest_refused(m, p, sizeof p, "real for an integer");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "disruptive", json_integer(1));
    expect_manifest_refused(m, p, sizeof p, "integer for a boolean");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "support_until", json_string("2025-02-29"));
    expect_manifest_refused(m, p, sizeof p, "no such date");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "created", json_string("2025-05-01 12:00:00"));
    expect_manifest_refused(m, p, sizeof p, "not RFC 3339");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "version", json_string("1.02.0"));
    expect_manifest_refused(m, p, sizeof p, "not SemVer");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "models", json_array());
    expect_manifest_refused(m, p, sizeof p, "no models");
    m = manifest_for(p, sizeof p);
    json_array_append_new(json_object_get(m, "models"), json_string("../etc"));
    expect_manifest_refused(m, p, sizeof p, "bad model");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "notes", json_string("evil \x1b[2J"));
    expect_manifest_refused(m, p, sizeof p, "control characters in notes");
    m = manifest_for(p, sizeof p);
    char big[KEEL_BUNDLE_NOTES_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    json_object_set_new(m, "risk", json_string(big));
    expect_manifest_refused(m, p, sizeof p, "risk too long");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "security_fixes", json_pack("[s,s]", "CVE-1", "CVE-1"));
    expect_manifest_refused(m, p, sizeof p, "repeated fix");
    m = manifest_for(p, sizeof p);
    json_object_set_new(m, "format", json_string("keel-bundle-2"));
    expect_manifest_refused(m, p, sizeof p, "other format");
    m = manifest_for(p, sizeof p);
    json_object_set_new(json_object_get(m, "algorithms"), "signature", json_string("ed25519"));
    expect_manifest_refused(m, p, sizeof p, "algorithm differs from the header");
    m = manifest_for(p, sizeof p);
    json_object_set_new(json_object_get(m, "payload"), "chunk_size", json_integer(6000));
    expect_manifest_refused(m, p, sizeof p, "chunk size not a power of two");
    m = manifest_for(p, sizeof p);
    json_array_remove(json_object_get(json_object_get(m, "payload"), "chunks"), 0);
    expect_manifest_refused(m, p, sizeof p, "a chunk digest missing");
    m = manifest_for(p, sizeof p);
    json_object_set_new(json_object_get(m, "payload"), "sha256", json_string("ABCDEF"));
    expect_manifest_refused(m, p, sizeof p, "bad digest");
    m = manifest_for(p, sizeof p);
    json_object_del(m, "created");
    expect_manifest_refused(m, p, sizeof p, "missing field");

    /* Text-level: duplicate keys, trailing garbage, payload size disagreeing with the header. */
    m = manifest_for(p, sizeof p);
    char *txt = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    size_t tl = strlen(txt);
    char *dup = malloc(tl + 64);
    snprintf(dup, tl + 64, "{\"format\":\"keel-bundle-1\",%s", txt + 1);
    assert_int_equal(open_manifest_text(dup, p, sizeof p, sizeof p), KEEL_ERR_FORMAT);
    snprintf(dup, tl + 64, "%s{}", txt);
    assert_int_equal(open_manifest_text(dup, p, sizeof p, sizeof p), KEEL_ERR_FORMAT);
    assert_int_equal(open_manifest_text("[1,2,3]", p, sizeof p, sizeof p), KEEL_ERR_FORMAT);
    assert_int_equal(open_manifest_text(txt, p, sizeof p, sizeof p - 1), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "payload length"));
    free(dup);
    free(txt);
}

static void test_wrong_signers(void **state)
{
    (void)state;
    uint8_t p[C + 7];
    random_fill(p, sizeof p);
    json_t *m = manifest_for(p, sizeof p);
    char *txt = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    keel_buf_t chain, b;
    keel_bundle_reader_t *r = NULL;

    /* A signer from another factory. */
    EVP_PKEY *kb = load_key(fx.sb);
    signer_chain(fx.sb, &chain);
    build_bundle(txt, kb, &chain, p, sizeof p, sizeof p, &b);
    assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_ERR_VERIFY);
    assert_non_null(strstr(keel_error_message(), "release root"));
    /* ... which its own root accepts. */
    keel_trust_t *tb = NULL;
    assert_int_equal(keel_trust_load(fx.root_b, NULL, &tb), KEEL_OK);
    assert_int_equal(open_mem(b.data, b.len, tb, &r), KEEL_OK);
    keel_bundle_close(r);
    keel_trust_free(tb);
    keel_buf_free(&b);
    keel_buf_free(&chain);
    EVP_PKEY_free(kb);

    /* Signer A's chain, but signed with another key. */
    EVP_PKEY *k = NULL;
    assert_int_equal(keel_ec_generate(&k), KEEL_OK);
    signer_chain(fx.sa, &chain);
    build_bundle(txt, k, &chain, p, sizeof p, sizeof p, &b);
    assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_ERR_VERIFY);
    assert_non_null(strstr(keel_error_message(), "signature"));
    keel_buf_free(&b);
    keel_buf_free(&chain);

    /* A device identity certificate (device CA: wrong hierarchy, no codeSigning). */
    char id[KEEL_DEVICE_ID_LEN + 1];
    assert_int_equal(keel_identity_device_id(k, id), KEEL_OK);
    X509 *dev = NULL;
    assert_int_equal(keel_factory_issue_device(fx.a, k, id, "thermo-1", "SER1", &dev), KEEL_OK);
    keel_buf_init(&chain, 64 * 1024);
    der_append(&chain, dev);
    der_append(&chain, keel_factory_issuing(fx.a, KEEL_PKI_DEVICE));
    build_bundle(txt, k, &chain, p, sizeof p, sizeof p, &b);
    assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_ERR_VERIFY);
    keel_buf_free(&b);
    keel_buf_free(&chain);
    X509_free(dev);

    /* From the release issuing CA, but for TLS, not code signing. */
    X509 *iss = keel_factory_issuing(fx.a, KEEL_PKI_RELEASE);
    EVP_PKEY *ik = keel_factory_issuing_key(fx.a, KEEL_PKI_RELEASE);
    X509 *tls = make_cert(iss, ik, k, -1, 30, "serverAuth", "critical,CA:FALSE");
    keel_buf_init(&chain, 64 * 1024);
    der_append(&chain, tls);
    der_append(&chain, iss);
    build_bundle(txt, k, &chain, p, sizeof p, sizeof p, &b);
    assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_ERR_VERIFY);
    assert_non_null(strstr(keel_error_message(), "code signing"));
    keel_buf_free(&b);
    keel_buf_free(&chain);
    X509_free(tls);

    /* A CA certificate posing as the signer. */
    X509 *ca = make_cert(iss, ik, k, -1, 30, "codeSigning", "critical,CA:TRUE");
    keel_buf_init(&chain, 64 * 1024);
    der_append(&chain, ca);
    der_append(&chain, iss);
    build_bundle(txt, k, &chain, p, sizeof p, sizeof p, &b);
    assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_ERR_VERIFY);
    keel_buf_free(&b);
    keel_buf_free(&chain);
    X509_free(ca);

    /* Expired: valid three years ago for a year. */
    X509 *old = make_cert(iss, ik, k, -3 * 365, -2 * 365, "codeSigning", "critical,CA:FALSE");
    keel_buf_init(&chain, 64 * 1024);
    der_append(&chain, old);
    der_append(&chain, iss);
    build_bundle(txt, k, &chain, p, sizeof p, sizeof p, &b);
    assert_int_equal(open_mem(b.data, b.len, fx.trust, &r), KEEL_ERR_VERIFY);
    assert_non_null(strstr(keel_error_message(), "expired"));
    /* The boot check ignores dates: an image installed while its signer was
     * valid must still boot after the signer expired, or with an unset clock. */
    {
        keel_manifest_t bm;
        size_t sl = b.len - sizeof p; /* the signed part: everything before the payload */
        assert_int_equal(keel_bundle_verify_signed_part(b.data, sl, fx.trust, &bm), KEEL_ERR_VERIFY);
        assert_int_equal(keel_bundle_verify_signed_part_ex(b.data, sl, fx.trust, KEEL_VERIFY_NO_TIME, &bm),
                         KEEL_OK);
        keel_manifest_free(&bm);
    }
    keel_buf_free(&b);
    keel_buf_free(&chain);
    /* ... and the writer refuses to sign with it. */
    char sdir[KEEL_PATH_MAX], path[KEEL_PATH_MAX], pay[KEEL_PATH_MAX], out[KEEL_PATH_MAX];
    path_in(sdir, fx.dir, "expired-signer");
    assert_int_equal(keel_dir_make(sdir, 0700), KEEL_OK);
    path_in(path, sdir, "signer.key");
    FILE *f = fopen(path, "w");
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0); /* a readable signer key is refused outright */
    path_in(path, sdir, "chain.pem");
    f = fopen(path, "w");
    assert_int_equal(PEM_write_X509(f, old), 1);
    assert_int_equal(PEM_write_X509(f, iss), 1);
    fclose(f);
    path_in(pay, fx.dir, "small.bin");
    path_in(out, fx.dir, "expired.kbn");
    write_file(pay, p, sizeof p);
    keel_bundle_create_opts_t o = default_opts(sdir, pay, out);
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "expired"));
    assert_false(keel_path_exists(out));
    /* A key that does not belong to the certificate. */
    path_in(path, sdir, "chain.pem");
    f = fopen(path, "w");
    assert_int_equal(PEM_write_X509(f, fx.signer_cert), 1);
    fclose(f);
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "does not match"));
    X509_free(old);
    EVP_PKEY_free(k);
    free(txt);
}

static void write_crl(const char *path, X509 *revoked_cert)
{
    X509 *iss = keel_factory_issuing(fx.a, KEEL_PKI_RELEASE);
    EVP_PKEY *ik = keel_factory_issuing_key(fx.a, KEEL_PKI_RELEASE);
    X509_CRL *crl = X509_CRL_new();
    assert_non_null(crl);
    assert_int_equal(X509_CRL_set_version(crl, X509_CRL_VERSION_2), 1);
    assert_int_equal(X509_CRL_set_issuer_name(crl, X509_get_subject_name(iss)), 1);
    ASN1_TIME *t = X509_gmtime_adj(NULL, -3600);
    assert_int_equal(X509_CRL_set1_lastUpdate(crl, t), 1);
    ASN1_TIME_free(t);
    t = X509_gmtime_adj(NULL, 30L * 86400);
    assert_int_equal(X509_CRL_set1_nextUpdate(crl, t), 1);
    ASN1_TIME_free(t);
    if (revoked_cert != NULL) {
        X509_REVOKED *rv = X509_REVOKED_new();
        assert_int_equal(X509_REVOKED_set_serialNumber(rv, X509_get_serialNumber(revoked_cert)), 1);
        t = X509_gmtime_adj(NULL, -60);
        assert_int_equal(X509_REVOKED_set_revocationDate(rv, t), 1);
        ASN1_TIME_free(t);
        assert_int_equal(X509_CRL_add0_revoked(crl, rv), 1);
    }
    assert_int_equal(X509_CRL_sort(crl), 1);
    assert_true(X509_CRL_sign(crl, ik, EVP_sha256()) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509_CRL(f, crl), 1);
    fclose(f);
    X509_CRL_free(crl);
}

static void test_revoked_signer(void **state)
{
    (void)state;
    keel_buf_t b;
    uint8_t *p = make_bundle(C + 1, C, &b);
    char crl[KEEL_PATH_MAX];
    path_in(crl, fx.dir, "release.crl");
    keel_trust_t *t = NULL;
    keel_bundle_reader_t *r = NULL;

    /* A CRL that revokes someone else: the bundle still opens. */
    X509 *iss = keel_factory_issuing(fx.a, KEEL_PKI_RELEASE);
    write_crl(crl, iss);
    assert_int_equal(keel_trust_load(fx.root_a, crl, &t), KEEL_OK);
    assert_int_equal(open_mem(b.data, b.len, t, &r), KEEL_OK);
    keel_bundle_close(r);
    keel_trust_free(t);

    /* The signer revoked. */
    write_crl(crl, fx.signer_cert);
    assert_int_equal(keel_trust_load(fx.root_a, crl, &t), KEEL_OK);
    assert_int_equal(open_mem(b.data, b.len, t, &r), KEEL_ERR_VERIFY);
    assert_non_null(strstr(keel_error_message(), "revoked"));
    /* The boot-time check of a stored signed part sees it too. */
    keel_manifest_t m;
    assert_int_equal(keel_bundle_verify_signed_part(b.data, signed_len_of(b.data), t, &m), KEEL_ERR_VERIFY);
    keel_trust_free(t);

    /* Trust files that are not what they claim. */
    assert_int_equal(keel_trust_load(crl, NULL, &t), KEEL_ERR_FORMAT);
    char p2[2 * KEEL_PATH_MAX];
    snprintf(p2, sizeof p2, "%s/release-ca/issuing.crt", fx.fa);
    assert_int_equal(keel_trust_load(p2, NULL, &t), KEEL_ERR_FORMAT); /* not self-signed */
    snprintf(p2, sizeof p2, "%s/release-ca/chain.pem", fx.fa);
    assert_int_equal(keel_trust_load(p2, NULL, &t), KEEL_ERR_FORMAT); /* two certificates */
    assert_int_equal(keel_trust_load(fx.root_a, fx.root_a, &t), KEEL_ERR_FORMAT);
    path_in(p2, fx.dir, "missing.pem");
    assert_int_equal(keel_trust_load(p2, NULL, &t), KEEL_ERR_NOT_FOUND);
    free(p);
    keel_buf_free(&b);
}

static void test_inspect(void **state)
{
    (void)state;
    keel_buf_t b;
    uint8_t *p = make_bundle(C + 1, C, &b);
    mem_in_t in = {.d = b.data, .len = b.len};
    keel_bundle_header_t h;
    keel_manifest_t m;
    char subject[KEEL_BUNDLE_SUBJECT_MAX];
    assert_int_equal(keel_bundle_inspect(mem_read, &in, &h, &m, subject, sizeof subject), KEEL_OK);
    assert_int_equal(h.format_version, 1);
    assert_int_equal(h.algorithm, KEEL_BUNDLE_ALG_ECDSA_P256_SHA256);
    assert_int_equal(h.payload_len, C + 1);
    assert_int_equal(m.n_chunks, 2);
    assert_non_null(strstr(subject, "Acme release"));
    /* The payload is not read. */
    assert_int_equal(in.pos, signed_len_of(b.data));
    keel_manifest_free(&m);
    free(p);
    keel_buf_free(&b);
}

static void test_create_errors(void **state)
{
    (void)state;
    char pay[KEEL_PATH_MAX], out[KEEL_PATH_MAX];
    path_in(pay, fx.dir, "e.bin");
    path_in(out, fx.dir, "e.kbn");
    write_file(pay, "abc", 3);
    keel_bundle_create_opts_t o = default_opts(fx.sa, pay, out);
    const char *bad_models[] = {"a b"};
    o.models = bad_models;
    o.n_models = 1;
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_ARG);
    o = default_opts(fx.sa, pay, out);
    o.version = "1.0";
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_ARG);
    o = default_opts(fx.sa, pay, out);
    o.support_until = "2030-13-01";
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_ARG);
    o = default_opts(fx.sa, pay, out);
    o.chunk_size = 5000;
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_ARG);
    o = default_opts(fx.sa, pay, out);
    o.notes = "ring \a the bell";
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_ARG);
    o = default_opts(fx.sa, pay, out);
    const char *bad_fixes[] = {"CVE 1"};
    o.security_fixes = bad_fixes;
    o.n_fixes = 1;
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_ARG);
    o = default_opts(fx.sa, out, out); /* the payload does not exist */
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_CONFIG);
    o = default_opts(fx.dir, pay, out); /* no signer there */
    assert_int_equal(keel_bundle_create(&o), KEEL_ERR_CONFIG);
    assert_false(keel_path_exists(out));
}

static void test_semver(void **state)
{
    (void)state;
    const char *ok[] = {"0.0.0", "1.2.3", "10.20.30", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-0.3.7",
                        "1.0.0-x.7.z.92", "1.0.0+20130313144700", "1.0.0-beta+exp.sha.5114f85",
                        "1.0.0-rc.1+build.01", "99999999999999999999.0.0"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!keel_semver_ok(ok[i]))
            fail_msg("%s should be valid SemVer", ok[i]);
    const char *bad[] = {"", "1", "1.2", "1.2.3.4", "01.2.3", "1.02.3", "1.2.03", "1.2.3-", "1.2.3-01",
                         "1.2.3-a..b", "1.2.3+", "1.2.3+a..b", "v1.2.3", "1.2.3 ", "-1.2.3", "1.2.3-a_b",
                         "1.2.3-\xc3\xa9", NULL};
    for (size_t i = 0; bad[i] != NULL; i++)
        if (keel_semver_ok(bad[i]))
            fail_msg("'%s' should be refused", bad[i]);
    assert_false(keel_semver_ok(NULL));
    /* The precedence example of SemVer 2.0, in order. */
    const char *order[] = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
                           "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "2.0.0",
                           "10.0.0", "99999999999999999999.0.0"};
    size_t n = sizeof order / sizeof order[0];
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) {
            int c = keel_semver_cmp(order[i], order[j]);
            int want = (i > j) - (i < j);
            if ((c > 0) - (c < 0) != want)
                fail_msg("cmp(%s, %s) = %d", order[i], order[j], c);
        }
    assert_int_equal(keel_semver_cmp("1.0.0+a", "1.0.0+b"), 0);
    assert_int_equal(keel_semver_cmp("1.0.0-rc.1+a", "1.0.0-rc.1"), 0);
    assert_true(keel_semver_cmp("junk", "0.0.0") < 0);
    assert_true(keel_semver_cmp("0.0.0", "junk") > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signer_certificate),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_byte_of_signed_part),
        cmocka_unit_test(test_payload_changes),
        cmocka_unit_test(test_truncated_and_extended),
        cmocka_unit_test(test_header_caps),
        cmocka_unit_test(test_strict_manifest),
        cmocka_unit_test(test_wrong_signers),
        cmocka_unit_test(test_revoked_signer),
        cmocka_unit_test(test_inspect),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_semver),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

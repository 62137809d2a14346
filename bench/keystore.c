/*
 * bench-keystore: what a keystore driver costs its callers, for one driver per
 * run (bench/keystore.sh runs it for file, pkcs11 and tpm2 side by side and
 * reports each against the file driver measured in the same run).
 *
 * On a key generated for the run it measures:
 *   sign   keel_keystore_sign latency, median and p95 over --signs calls
 *   evp    signatures per second through keel_keystore_private_key's
 *          EVP_PKEY with EVP_DigestSign, in the default library context
 *   tls    in-memory TLS 1.3 and TLS 1.2 handshakes per second over a BIO
 *          pair, for --seconds each: the server's key is the keystore's, its
 *          self-signed certificate is signed with it, and the client verifies
 *          that certificate on every handshake
 * and prints one JSON object, flat, one figure a line.
 *
 * The key's PIN (pkcs11) or authorization value (tpm2) is read from the
 * environment variable named by --pin-env, never from argv.
 */
#include "keel/crypto.h"
#include "keel/keystore.h"

#include <getopt.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_LABEL_DEFAULT "bench-keystore"
#define BENCH_MSG "keel bench-keystore: the message every signature covers"
#define BENCH_SIGNS_DEFAULT 200ul
#define BENCH_SIGNS_MAX 1000000ul
#define BENCH_SECONDS_DEFAULT 3.0
#define BENCH_SECONDS_MAX 600.0
/* Flights of a handshake over a BIO pair; a handful suffice, the cap stops a
 * peer that never finishes. */
#define BENCH_HANDSHAKE_STEPS 100
/* Validity of the benchmark's self-signed certificate. */
#define BENCH_CERT_SECONDS 3600L

enum { EXIT_USAGE = 2 };

static const char usage[] =
    "usage: bench-keystore --driver file|pkcs11|tpm2 [driver options] [--signs N] [--seconds S]\n"
    "                      [--label LABEL]\n"
    "\n"
    "  file:   --dir DIR --kek-file FILE   (both created when missing)\n"
    "  pkcs11: --module SO --token LABEL --pin-env VAR\n"
    "  tpm2:   --dir DIR --pin-env VAR [--tcti TCTI]\n"
    "\n"
    "Generates a P-256 key named LABEL (default " BENCH_LABEL_DEFAULT ", which must not\n"
    "exist yet) in the keystore and prints, as JSON, keel_keystore_sign's\n"
    "median and p95 latency over N signatures (default 200), EVP_DigestSign\n"
    "signatures/s with the keystore's private key over N signatures, and in-memory\n"
    "TLS 1.3 and TLS 1.2 handshakes/s with it as the server key, S seconds each\n"
    "(default 3). VAR names the environment variable holding the PIN (pkcs11) or\n"
    "the keys' authorization value (tpm2).\n";

typedef struct {
    const char *label;
    unsigned signs;
    double sign_ms_median;
    double sign_ms_p95;
    double sign_ms_mean;
    double evp_seconds;
    unsigned tls_count[2];
    double tls_seconds[2];
} bench_figures_t;

/* The protocol versions measured, in the order of tls_count. */
static const int tls_versions[2] = {TLS1_3_VERSION, TLS1_2_VERSION};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* keel_keystore_sign's latency, each signature checked against `pub`. */
static keel_status_t bench_sign(keel_keystore_t *ks, EVP_PKEY *pub, bench_figures_t *fig)
{
    double *ms = calloc(fig->signs, sizeof *ms);
    if (ms == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "%u latencies", fig->signs);
    keel_status_t st = KEEL_OK;
    double sum = 0;
    for (unsigned i = 0; st == KEEL_OK && i < fig->signs; i++) {
        uint8_t sig[KEEL_ECDSA_SIG_MAX];
        size_t n = 0;
        double t = keel_now();
        st = keel_keystore_sign(ks, fig->label, BENCH_MSG, strlen(BENCH_MSG), sig, sizeof sig, &n);
        ms[i] = (keel_now() - t) * 1000.0;
        sum += ms[i];
        if (st == KEEL_OK)
            st = keel_ecdsa_verify(pub, BENCH_MSG, strlen(BENCH_MSG), sig, n);
    }
    if (st == KEEL_OK) {
        qsort(ms, fig->signs, sizeof *ms, cmp_double);
        unsigned mid = fig->signs / 2;
        fig->sign_ms_median = fig->signs % 2 ? ms[mid] : (ms[mid - 1] + ms[mid]) / 2;
        /* nearest rank: the smallest latency at or above 95 % of the calls */
        unsigned rank = (fig->signs * 95 + 99) / 100;
        fig->sign_ms_p95 = ms[rank - 1];
        fig->sign_ms_mean = sum / fig->signs;
    }
    free(ms);
    return st;
}

/* One EVP_DigestSign (ECDSA-SHA256) with `priv`, in the default context. */
static keel_status_t digest_sign(EVP_PKEY *priv, uint8_t *sig, size_t cap, size_t *n)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL)
        return keel_crypto_error(KEEL_ERR_NOMEM, "EVP_MD_CTX_new");
    *n = cap;
    keel_status_t st = KEEL_OK;
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, priv) != 1)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "EVP_DigestSignInit");
    else if (EVP_DigestSign(md, sig, n, (const unsigned char *)BENCH_MSG, strlen(BENCH_MSG)) != 1)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "EVP_DigestSign");
    EVP_MD_CTX_free(md);
    return st;
}

/* Signatures through the keystore's EVP_PKEY; the first and the last are
 * verified outside the timing (verifying is not what is measured). */
static keel_status_t bench_evp(EVP_PKEY *priv, EVP_PKEY *pub, bench_figures_t *fig)
{
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t n = 0;
    keel_status_t st = digest_sign(priv, sig, sizeof sig, &n);
    if (st == KEEL_OK)
        st = keel_ecdsa_verify(pub, BENCH_MSG, strlen(BENCH_MSG), sig, n);
    double t = keel_now();
    for (unsigned i = 0; st == KEEL_OK && i < fig->signs; i++)
        st = digest_sign(priv, sig, sizeof sig, &n);
    fig->evp_seconds = keel_now() - t;
    if (st == KEEL_OK)
        st = keel_ecdsa_verify(pub, BENCH_MSG, strlen(BENCH_MSG), sig, n);
    return st;
}

/* A self-signed certificate for `pub`, signed with the keystore's `priv`. */
static keel_status_t self_signed(EVP_PKEY *pub, EVP_PKEY *priv, X509 **out)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    keel_status_t st = KEEL_OK;
    if (x == NULL || name == NULL ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1, 0) != 1 ||
        X509_set_version(x, 2) != 1 || ASN1_INTEGER_set(X509_get_serialNumber(x), 1) != 1 ||
        X509_set_subject_name(x, name) != 1 || X509_set_issuer_name(x, name) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -60) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), BENCH_CERT_SECONDS) == NULL || X509_set_pubkey(x, pub) != 1)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "benchmark certificate");
    else if (X509_sign(x, priv, EVP_sha256()) <= 0)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "X509_sign with the keystore's key");
    else if (X509_verify(x, pub) != 1)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "the benchmark certificate does not verify");
    X509_NAME_free(name);
    if (st != KEEL_OK) {
        X509_free(x);
        x = NULL;
    }
    *out = x;
    return st;
}

/* One step of one side; *done once its handshake is complete. */
static keel_status_t handshake_step(SSL *ssl, const char *side, int *done)
{
    if (*done)
        return KEEL_OK;
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        *done = 1;
    else if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ)
        return keel_crypto_error(KEEL_ERR_CRYPTO, side);
    return KEEL_OK;
}

/* One full handshake at the client context's version, checked: the
 * negotiated version and the client's verification of the server. */
static keel_status_t handshake(SSL_CTX *sctx, SSL_CTX *cctx, int version)
{
    SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
    BIO *cb = NULL, *sb = NULL;
    keel_status_t st = KEEL_OK;
    if (c == NULL || s == NULL || BIO_new_bio_pair(&cb, 0, &sb, 0) != 1) {
        st = keel_crypto_error(KEEL_ERR_NOMEM, "TLS connection");
    } else {
        SSL_set_bio(c, cb, cb);
        SSL_set_bio(s, sb, sb);
        SSL_set_connect_state(c);
        SSL_set_accept_state(s);
    }
    int cdone = 0, sdone = 0;
    for (int i = 0; st == KEEL_OK && i < BENCH_HANDSHAKE_STEPS && !(cdone && sdone); i++) {
        st = handshake_step(c, "TLS client handshake", &cdone);
        if (st == KEEL_OK)
            st = handshake_step(s, "TLS server handshake", &sdone);
    }
    if (st == KEEL_OK && !(cdone && sdone))
        st = keel_errorf(KEEL_ERR_CRYPTO, "TLS handshake unfinished after %d steps", BENCH_HANDSHAKE_STEPS);
    if (st == KEEL_OK && SSL_version(c) != version)
        st = keel_errorf(KEEL_ERR_CRYPTO, "TLS handshake negotiated 0x%x, not 0x%x", (unsigned)SSL_version(c),
                         (unsigned)version);
    if (st == KEEL_OK && SSL_get_verify_result(c) != X509_V_OK)
        st = keel_errorf(KEEL_ERR_CRYPTO, "the client did not verify the server: %s",
                         X509_verify_cert_error_string(SSL_get_verify_result(c)));
    SSL_free(c);
    SSL_free(s);
    return st;
}

static keel_status_t client_ctx(X509 *cert, int version, SSL_CTX **out)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    keel_status_t st = KEEL_OK;
    if (cctx == NULL || SSL_CTX_set_min_proto_version(cctx, version) != 1 ||
        SSL_CTX_set_max_proto_version(cctx, version) != 1 ||
        X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), cert) != 1)
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "TLS client context");
    else
        SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    if (st != KEEL_OK) {
        SSL_CTX_free(cctx);
        cctx = NULL;
    }
    *out = cctx;
    return st;
}

/* Full handshakes (no resumption: every one signs with the server's key)
 * for `seconds`, at least one. */
static keel_status_t bench_tls_version(SSL_CTX *sctx, X509 *cert, int version, double seconds, unsigned *count,
                                       double *elapsed)
{
    SSL_CTX *cctx = NULL;
    keel_status_t st = client_ctx(cert, version, &cctx);
    *count = 0;
    double t0 = keel_now(), t = t0;
    while (st == KEEL_OK && (*count == 0 || t - t0 < seconds)) {
        st = handshake(sctx, cctx, version);
        if (st == KEEL_OK)
            (*count)++;
        t = keel_now();
    }
    *elapsed = t - t0;
    SSL_CTX_free(cctx);
    return st;
}

static keel_status_t bench_tls(EVP_PKEY *priv, EVP_PKEY *pub, double seconds, bench_figures_t *fig)
{
    X509 *cert = NULL;
    SSL_CTX *sctx = NULL;
    keel_status_t st = self_signed(pub, priv, &cert);
    if (st == KEEL_OK) {
        sctx = SSL_CTX_new(TLS_server_method());
        if (sctx == NULL || SSL_CTX_use_certificate(sctx, cert) != 1 || SSL_CTX_use_PrivateKey(sctx, priv) != 1 ||
            SSL_CTX_check_private_key(sctx) != 1)
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "TLS server context with the keystore's key");
    }
    for (size_t i = 0; st == KEEL_OK && i < sizeof tls_versions / sizeof tls_versions[0]; i++)
        st = bench_tls_version(sctx, cert, tls_versions[i], seconds, &fig->tls_count[i], &fig->tls_seconds[i]);
    SSL_CTX_free(sctx);
    X509_free(cert);
    return st;
}

static keel_status_t bench(const keel_keystore_config_t *cfg, double seconds, bench_figures_t *fig)
{
    keel_keystore_t *ks = NULL;
    EVP_PKEY *pub = NULL, *priv = NULL;
    keel_status_t st = keel_keystore_open(cfg, &ks);
    if (st == KEEL_OK)
        st = keel_keystore_generate(ks, fig->label, &pub);
    if (st == KEEL_OK)
        st = keel_keystore_private_key(ks, fig->label, &priv);
    if (st == KEEL_OK)
        st = bench_sign(ks, pub, fig);
    if (st == KEEL_OK)
        st = bench_evp(priv, pub, fig);
    if (st == KEEL_OK)
        st = bench_tls(priv, pub, seconds, fig);
    /* The private key is a handle into the keystore: freed before it closes. */
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
    keel_keystore_close(ks);
    return st;
}

static int print_json(const char *driver, double seconds, const bench_figures_t *fig)
{
    json_t *j = json_pack("{s:s, s:i, s:f, s:f, s:f, s:f, s:f, s:i, s:f, s:i, s:f}", "driver", driver, "signs",
                          (int)fig->signs, "sign_ms_median", fig->sign_ms_median, "sign_ms_p95", fig->sign_ms_p95,
                          "sign_ms_mean", fig->sign_ms_mean, "evp_signs_per_second", fig->signs / fig->evp_seconds,
                          "tls_seconds", seconds, "tls13_handshakes", (int)fig->tls_count[0],
                          "tls13_handshakes_per_second", fig->tls_count[0] / fig->tls_seconds[0],
                          "tls12_handshakes", (int)fig->tls_count[1], "tls12_handshakes_per_second",
                          fig->tls_count[1] / fig->tls_seconds[1]);
    char *txt = j != NULL ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(j);
    if (txt == NULL) {
        fputs("bench-keystore: out of memory\n", stderr);
        return EXIT_FAILURE;
    }
    int rc = printf("%s\n", txt) < 0 || fflush(stdout) != 0 ? EXIT_FAILURE : EXIT_SUCCESS;
    free(txt);
    if (rc != EXIT_SUCCESS)
        fputs("bench-keystore: cannot write the figures\n", stderr);
    return rc;
}

static int parse_count(const char *s, unsigned long max, unsigned *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return 0;
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || v < 1 || v > max)
        return 0;
    *out = (unsigned)v;
    return 1;
}

static int parse_seconds(const char *s, double *out)
{
    if (s == NULL || ((*s < '0' || *s > '9') && *s != '.'))
        return 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (*end != '\0' || !(v > 0) || v > BENCH_SECONDS_MAX)
        return 0;
    *out = v;
    return 1;
}

/* What each driver needs, checked before anything is created. */
static int config_ok(const keel_keystore_config_t *c)
{
    if (c->driver == NULL)
        return 0;
    if (strcmp(c->driver, "file") == 0)
        return c->dir != NULL && c->kek_file != NULL;
    if (strcmp(c->driver, "pkcs11") == 0)
        return c->module != NULL && c->token != NULL && c->pin_env != NULL;
    if (strcmp(c->driver, "tpm2") == 0)
        return c->dir != NULL && c->pin_env != NULL;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"driver", required_argument, NULL, 'd'},
                                         {"dir", required_argument, NULL, 'D'},
                                         {"kek-file", required_argument, NULL, 'k'},
                                         {"module", required_argument, NULL, 'm'},
                                         {"token", required_argument, NULL, 't'},
                                         {"pin-env", required_argument, NULL, 'p'},
                                         {"tcti", required_argument, NULL, 'T'},
                                         {"signs", required_argument, NULL, 'n'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"label", required_argument, NULL, 'l'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    keel_keystore_config_t cfg = {.create = 1};
    bench_figures_t fig = {.label = BENCH_LABEL_DEFAULT, .signs = BENCH_SIGNS_DEFAULT};
    double seconds = BENCH_SECONDS_DEFAULT;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': cfg.driver = optarg; break;
        case 'D': cfg.dir = optarg; break;
        case 'k': cfg.kek_file = optarg; break;
        case 'm': cfg.module = optarg; break;
        case 't': cfg.token = optarg; break;
        case 'p': cfg.pin_env = optarg; break;
        case 'T': cfg.tcti = optarg; break;
        case 'n':
            if (!parse_count(optarg, BENCH_SIGNS_MAX, &fig.signs)) {
                fprintf(stderr, "bench-keystore: --signs must be 1..%lu\n", BENCH_SIGNS_MAX);
                return EXIT_USAGE;
            }
            break;
        case 's':
            if (!parse_seconds(optarg, &seconds)) {
                fprintf(stderr, "bench-keystore: --seconds must be a number in (0, %.0f]\n", BENCH_SECONDS_MAX);
                return EXIT_USAGE;
            }
            break;
        case 'l':
            if (!keel_keystore_label_ok(optarg)) {
                fprintf(stderr, "bench-keystore: --label must be [A-Za-z0-9._-], at most %d characters\n",
                        KEEL_KEYSTORE_LABEL_MAX);
                return EXIT_USAGE;
            }
            fig.label = optarg;
            break;
        case 'h': fputs(usage, stdout); return EXIT_SUCCESS;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc || !config_ok(&cfg)) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    keel_status_t st = keel_crypto_init();
    if (st == KEEL_OK)
        st = bench(&cfg, seconds, &fig);
    if (st != KEEL_OK) {
        fprintf(stderr, "bench-keystore: %s: %s\n", cfg.driver, keel_error_message());
        ERR_print_errors_fp(stderr);
        return EXIT_FAILURE;
    }
    return print_json(cfg.driver, seconds, &fig);
}

/*
 * The tpm2 keystore driver against a software TPM (swtpm + tpm2-abrmd,
 * started by tests/integration/with_tpm.sh, which runs this program):
 * keys made in the TPM sign and verify, the private key cannot be taken out,
 * the signing bridge serves X509_sign and real TLS 1.3 and 1.2 handshakes in
 * the default library context, sealing round-trips, and a copy of the key
 * blobs and the vault is useless with another TPM ($KEEL_TEST_TPM2_OTHER_TCTI).
 */
#include "keel/crypto.h"
#include "keel/keystore.h"
#include "keel/vault.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PIN_ENV "KEEL_TEST_TPM2_PIN"

static char g_dir[KEEL_PATH_MAX];
static char g_ks[KEEL_PATH_MAX + 16];
static char g_pin[33];

#define assert_ok(expr)                                                                            \
    do {                                                                                           \
        keel_status_t st_ = (expr);                                                                \
        if (st_ != KEEL_OK)                                                                        \
            fail_msg("%s: %s: %s", #expr, keel_status_str(st_), keel_error_message());             \
    } while (0)

static int contains(const uint8_t *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return 1;
    return 0;
}

static keel_keystore_config_t config(const char *dir, const char *tcti)
{
    keel_keystore_config_t c = {.driver = "tpm2", .dir = dir, .pin_env = PIN_ENV, .create = 1, .tcti = tcti};
    return c;
}

static int group_setup(void **unused)
{
    (void)unused;
    if (keel_crypto_init() != KEEL_OK)
        return -1;
    if (getenv("TPM2OPENSSL_TCTI") == NULL || getenv("KEEL_TEST_TPM2_OTHER_TCTI") == NULL) {
        fprintf(stderr, "run me through tests/integration/with_tpm.sh (no TPM configured)\n");
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    if (keel_snprintf(g_dir, sizeof g_dir, "%s/keel-tpm2-XXXXXX", tmp && tmp[0] ? tmp : "/tmp") != KEEL_OK ||
        mkdtemp(g_dir) == NULL) {
        g_dir[0] = '\0';
        return -1;
    }
    snprintf(g_ks, sizeof g_ks, "%s/ks", g_dir);
    uint8_t raw[16];
    keel_random_bytes(raw, sizeof raw);
    if (keel_hex_encode(raw, sizeof raw, g_pin, sizeof g_pin) != KEEL_OK || setenv(PIN_ENV, g_pin, 1) != 0)
        return -1;
    return 0;
}

static int group_teardown(void **unused)
{
    (void)unused;
    if (g_dir[0] != '\0') {
        char cmd[KEEL_PATH_MAX + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

static int ks_setup(void **state)
{
    keel_keystore_config_t c = config(g_ks, NULL);
    keel_keystore_t *ks = NULL;
    if (keel_keystore_open(&c, &ks) != KEEL_OK) {
        fprintf(stderr, "open: %s\n", keel_error_message());
        return -1;
    }
    *state = ks;
    return 0;
}

static int ks_teardown(void **state)
{
    keel_keystore_close(*state);
    return 0;
}

static void test_generate_and_sign(void **state)
{
    keel_keystore_t *ks = *state;
    assert_string_equal(keel_keystore_driver(ks), "tpm2");
    EVP_PKEY *pub = NULL, *pub2 = NULL;
    assert_ok(keel_keystore_generate(ks, "sign-test", &pub));
    assert_ok(keel_keystore_public_key(ks, "sign-test", &pub2));
    assert_int_equal(EVP_PKEY_eq(pub, pub2), 1);
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t n = 0;
    assert_ok(keel_keystore_sign(ks, "sign-test", "hello", 5, sig, sizeof sig, &n));
    assert_ok(keel_ecdsa_verify(pub, "hello", 5, sig, n));
    assert_int_not_equal(keel_ecdsa_verify(pub, "hellO", 5, sig, n), KEEL_OK);
    EVP_PKEY_free(pub2);
    pub2 = NULL;
    assert_int_equal(keel_keystore_generate(ks, "sign-test", &pub2), KEEL_ERR_EXISTS);
    assert_null(pub2);
    EVP_PKEY_free(pub);
    /* The blob on disk is a TSS2 key, never a plain private key. */
    char path[KEEL_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/sign-test.tpm2", g_ks);
    keel_buf_t b;
    assert_ok(keel_file_read(path, 8192, &b));
    assert_true(contains(b.data, b.len, "TSS2 PRIVATE KEY"));
    assert_false(contains(b.data, b.len, g_pin));
    /* The default provider cannot read a private key out of it. */
    BIO *bio = BIO_new_mem_buf(b.data, (int)b.len);
    EVP_PKEY *stolen = PEM_read_bio_PrivateKey(bio, NULL, keel_pem_no_password, NULL);
    assert_null(stolen);
    BIO_free(bio);
    ERR_clear_error();
    keel_buf_free(&b);
}

static void test_not_exportable(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL, *priv = NULL;
    assert_ok(keel_keystore_generate(ks, "export-test", &pub));
    assert_ok(keel_keystore_private_key(ks, "export-test", &priv));
    assert_int_equal(EVP_PKEY_eq(pub, priv), 1);
    /* No private scalar to take: not as DER, not as a parameter. */
    unsigned char *der = NULL;
    assert_true(i2d_PrivateKey(priv, &der) <= 0);
    BIGNUM *d = NULL;
    /* OpenSSL 3.0 answers a key without a private half with 0 */
    if (EVP_PKEY_get_bn_param(priv, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1)
        assert_true(BN_is_zero(d));
    BN_free(d);
    ERR_clear_error();
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
}

/* X509_sign and keel_ecdsa_sign through the bridge, in the default context. */
static void test_bridge_signs(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL, *priv = NULL;
    assert_ok(keel_keystore_generate(ks, "bridge-test", &pub));
    assert_ok(keel_keystore_private_key(ks, "bridge-test", &priv));
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t n = 0;
    assert_ok(keel_ecdsa_sign(priv, "msg", 3, sig, sizeof sig, &n));
    assert_ok(keel_ecdsa_verify(pub, "msg", 3, sig, n));
    /* A copy holds its own reference to the TPM key: both sign, and freeing
     * one leaves the other working. */
    EVP_PKEY *copy = EVP_PKEY_dup(priv);
    assert_non_null(copy);
    assert_ok(keel_ecdsa_sign(copy, "copy", 4, sig, sizeof sig, &n));
    assert_ok(keel_ecdsa_verify(pub, "copy", 4, sig, n));
    EVP_PKEY_free(copy);
    assert_ok(keel_ecdsa_sign(priv, "again", 5, sig, sizeof sig, &n));
    assert_ok(keel_ecdsa_verify(pub, "again", 5, sig, n));

    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    assert_non_null(x);
    assert_non_null(name);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"tpm", -1, -1, 0), 1);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
    assert_int_equal(X509_set_subject_name(x, name), 1);
    assert_int_equal(X509_set_issuer_name(x, name), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, pub), 1);
    assert_true(X509_sign(x, priv, EVP_sha256()) > 0);
    assert_int_equal(X509_verify(x, pub), 1);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
}

/* A self-signed certificate for `pub`, signed with `priv`. */
static X509 *self_signed(EVP_PKEY *pub, EVP_PKEY *priv)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    if (x == NULL || name == NULL ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1, 0) != 1 ||
        X509_set_version(x, 2) != 1 || ASN1_INTEGER_set(X509_get_serialNumber(x), 7) != 1 ||
        X509_set_subject_name(x, name) != 1 || X509_set_issuer_name(x, name) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -60) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), 3600) == NULL || X509_set_pubkey(x, pub) != 1 ||
        X509_sign(x, priv, EVP_sha256()) <= 0) {
        X509_NAME_free(name);
        X509_free(x);
        return NULL;
    }
    X509_NAME_free(name);
    return x;
}

/* One in-memory TLS handshake at `version` with the server key in the TPM. */
static void handshake(SSL_CTX *sctx, X509 *cert, int version)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(cctx);
    assert_int_equal(SSL_CTX_set_min_proto_version(cctx, version), 1);
    assert_int_equal(SSL_CTX_set_max_proto_version(cctx, version), 1);
    assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), cert), 1);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
    assert_non_null(c);
    assert_non_null(s);
    BIO *cb = NULL, *sb = NULL;
    assert_int_equal(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
    SSL_set_bio(c, cb, cb);
    SSL_set_bio(s, sb, sb);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    int cdone = 0, sdone = 0;
    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(c);
            if (r == 1)
                cdone = 1;
            else
                assert_int_equal(SSL_get_error(c, r), SSL_ERROR_WANT_READ);
        }
        if (!sdone) {
            int r = SSL_do_handshake(s);
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ) {
                ERR_print_errors_fp(stderr);
                fail_msg("server handshake failed at version 0x%x", version);
            }
        }
    }
    assert_true(cdone && sdone);
    assert_int_equal(SSL_version(c), version);
    assert_int_equal(SSL_get_verify_result(c), X509_V_OK);
    SSL_free(c);
    SSL_free(s);
    SSL_CTX_free(cctx);
}

static void test_tls_handshakes(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL, *priv = NULL;
    assert_ok(keel_keystore_generate(ks, "tls-test", &pub));
    assert_ok(keel_keystore_private_key(ks, "tls-test", &priv));
    X509 *cert = self_signed(pub, priv);
    assert_non_null(cert);
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(sctx);
    assert_int_equal(SSL_CTX_use_certificate(sctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(sctx, priv), 1);
    assert_int_equal(SSL_CTX_check_private_key(sctx), 1);
    handshake(sctx, cert, TLS1_3_VERSION);
    handshake(sctx, cert, TLS1_2_VERSION);
    SSL_CTX_free(sctx);
    X509_free(cert);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
}

typedef struct {
    EVP_PKEY *priv;
    EVP_PKEY *pub;
    int failures;
} worker_arg_t;

static void *sign_worker(void *p)
{
    worker_arg_t *a = p;
    for (int i = 0; i < 20; i++) {
        uint8_t sig[KEEL_ECDSA_SIG_MAX];
        size_t n = 0;
        char msg[32];
        int len = snprintf(msg, sizeof msg, "message %d", i);
        if (keel_ecdsa_sign(a->priv, msg, (size_t)len, sig, sizeof sig, &n) != KEEL_OK ||
            keel_ecdsa_verify(a->pub, msg, (size_t)len, sig, n) != KEEL_OK)
            a->failures++;
    }
    return NULL;
}

/* The provider's TPM context is single-threaded: the driver's lock makes
 * concurrent signers safe. */
static void test_threads(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL, *priv = NULL;
    assert_ok(keel_keystore_generate(ks, "thread-test", &pub));
    assert_ok(keel_keystore_private_key(ks, "thread-test", &priv));
    pthread_t t[4];
    worker_arg_t a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (worker_arg_t){.priv = priv, .pub = pub};
        assert_int_equal(pthread_create(&t[i], NULL, sign_worker, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(a[i].failures, 0);
    }
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
}

static void test_seal_unseal(void **state)
{
    keel_keystore_t *ks = *state;
    const uint8_t secret[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    uint8_t blob[32 + KEEL_KEYSTORE_SEAL_OVERHEAD], out[64];
    size_t n = 0, m = 0;
    assert_ok(keel_keystore_seal(ks, "seal-test", "purpose", secret, sizeof secret, blob, sizeof blob, &n));
    assert_true(n <= sizeof secret + KEEL_KEYSTORE_SEAL_OVERHEAD);
    assert_ok(keel_keystore_unseal(ks, "seal-test", "purpose", blob, n, out, sizeof out, &m));
    assert_int_equal(m, sizeof secret);
    assert_memory_equal(out, secret, sizeof secret);
    assert_int_equal(keel_keystore_unseal(ks, "seal-test", "other", blob, n, out, sizeof out, &m), KEEL_ERR_VERIFY);
    blob[5] ^= 1; /* the ephemeral point */
    assert_int_not_equal(keel_keystore_unseal(ks, "seal-test", "purpose", blob, n, out, sizeof out, &m), KEEL_OK);
    blob[5] ^= 1;
    blob[n - 1] ^= 1;
    assert_int_equal(keel_keystore_unseal(ks, "seal-test", "purpose", blob, n, out, sizeof out, &m), KEEL_ERR_VERIFY);
    blob[n - 1] ^= 1;
    assert_int_equal(keel_keystore_unseal(ks, "seal-test", "purpose", blob, 10, out, sizeof out, &m), KEEL_ERR_FORMAT);
    /* Another label has another wrapping key. */
    assert_int_not_equal(keel_keystore_unseal(ks, "seal-other", "purpose", blob, n, out, sizeof out, &m), KEEL_OK);
    keel_error_clear();
}

static void test_destroy(void **state)
{
    keel_keystore_t *ks = *state;
    EVP_PKEY *pub = NULL;
    assert_ok(keel_keystore_generate(ks, "gone", &pub));
    EVP_PKEY_free(pub);
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t n = 0;
    assert_ok(keel_keystore_sign(ks, "gone", "x", 1, sig, sizeof sig, &n));
    assert_ok(keel_keystore_destroy(ks, "gone"));
    assert_int_equal(keel_keystore_sign(ks, "gone", "x", 1, sig, sizeof sig, &n), KEEL_ERR_NOT_FOUND);
    assert_ok(keel_keystore_destroy(ks, "gone"));
}

static void copy_tree(const char *from, const char *to)
{
    char cmd[3 * KEEL_PATH_MAX];
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* The device's state copied to a machine with another TPM: nothing opens. */
static void test_other_tpm(void **unused)
{
    (void)unused;
    char vdir[KEEL_PATH_MAX + 64], copy[KEEL_PATH_MAX + 16];
    snprintf(vdir, sizeof vdir, "%s/ks/vault", g_dir);
    snprintf(copy, sizeof copy, "%s/copy", g_dir);
    /* the driver sets $TPM2OPENSSL_TCTI from its configuration: keep ours */
    char own[256];
    assert_ok(keel_strlcpy(own, getenv("TPM2OPENSSL_TCTI"), sizeof own));
    keel_keystore_config_t c = config(g_ks, NULL);
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    assert_ok(keel_keystore_open(&c, &ks));
    EVP_PKEY *pub = NULL;
    assert_ok(keel_keystore_generate(ks, "device", &pub));
    EVP_PKEY_free(pub);
    assert_ok(keel_vault_open(vdir, ks, &v));
    assert_ok(keel_vault_secret_put(v, "wifi-psk", "correct horse", 13));
    keel_vault_close(v);
    keel_keystore_close(ks);

    copy_tree(g_ks, copy);
    c = config(copy, getenv("KEEL_TEST_TPM2_OTHER_TCTI"));
    assert_ok(keel_keystore_open(&c, &ks));
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t n = 0;
    assert_int_equal(keel_keystore_sign(ks, "device", "x", 1, sig, sizeof sig, &n), KEEL_ERR_KEYSTORE);
    snprintf(vdir, sizeof vdir, "%s/vault", copy);
    assert_int_not_equal(keel_vault_open(vdir, ks, &v), KEEL_OK);
    keel_error_clear();
    keel_keystore_close(ks);

    /* Back on its own TPM the copy works: it is the TPM, not the path. */
    c = config(copy, own);
    assert_ok(keel_keystore_open(&c, &ks));
    assert_ok(keel_vault_open(vdir, ks, &v));
    uint8_t out[64];
    assert_ok(keel_vault_secret_get(v, "wifi-psk", out, sizeof out, &n));
    assert_int_equal(n, 13);
    keel_vault_close(v);
    keel_keystore_close(ks);
}

static void test_bad_config(void **unused)
{
    (void)unused;
    keel_keystore_t *ks = NULL;
    keel_keystore_config_t c = config(g_ks, NULL);
    c.pin_env = NULL;
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_ERR_ARG);
    c = config(NULL, NULL);
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_ERR_ARG);
    c = config(g_ks, "mssim:host=127.0.0.1\nport=1");
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_ERR_CONFIG);
    /* longer than the key's name hash (32 bytes) */
    assert_int_equal(setenv("KEEL_TEST_TPM2_LONG_PIN", "0123456789abcdef0123456789abcdef0", 1), 0);
    c = config(g_ks, NULL);
    c.pin_env = "KEEL_TEST_TPM2_LONG_PIN";
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "exceeds 32 bytes"));
    c = config(g_ks, NULL);
    c.pin_env = "KEEL_TEST_TPM2_NO_SUCH_PIN";
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "KEEL_TEST_TPM2_NO_SUCH_PIN"));
    assert_null(ks);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_generate_and_sign, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_not_exportable, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_bridge_signs, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_tls_handshakes, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_threads, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_seal_unseal, ks_setup, ks_teardown),
        cmocka_unit_test_setup_teardown(test_destroy, ks_setup, ks_teardown),
        cmocka_unit_test(test_other_tpm),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

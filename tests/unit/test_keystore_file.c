/* keystore, file driver: sealed keys, KEK handling, seal/unseal, destroy. */
#include "testutil.h"

#include "keel/crypto.h"
#include "keel/keystore.h"

#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

static keel_keystore_config_t file_cfg(const char *d, char *kdir, char *kek)
{
    path_in(kdir, d, "keystore");
    snprintf(kek, KEEL_PATH_MAX, "%s/kek", kdir);
    keel_keystore_config_t c = {.driver = "file", .dir = kdir, .kek_file = kek, .create = 1};
    return c;
}

static void test_generate_sign(void **state)
{
    (void)state;
    char *d = tmpdir_new(), kdir[KEEL_PATH_MAX], kek[KEEL_PATH_MAX];
    keel_keystore_config_t c = file_cfg(d, kdir, kek);
    keel_keystore_t *ks = NULL;
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_OK);
    assert_string_equal(keel_keystore_driver(ks), "file");
    EVP_PKEY *pub = NULL, *pub2 = NULL, *priv = NULL;
    assert_int_equal(keel_keystore_generate(ks, "device", &pub), KEEL_OK);
    assert_int_equal(keel_keystore_generate(ks, "device", &pub2), KEEL_ERR_EXISTS);
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t n = 0;
    assert_int_equal(keel_keystore_sign(ks, "device", "hello", 5, sig, sizeof sig, &n), KEEL_OK);
    assert_int_equal(keel_ecdsa_verify(pub, "hello", 5, sig, n), KEEL_OK);
    assert_int_equal(keel_ecdsa_verify(pub, "hellp", 5, sig, n), KEEL_ERR_VERIFY);
    assert_int_equal(keel_keystore_private_key(ks, "device", &priv), KEEL_OK);
    assert_int_equal(EVP_PKEY_eq(priv, pub), 1);
    assert_int_equal(keel_keystore_public_key(ks, "device", &pub2), KEEL_OK);
    assert_int_equal(EVP_PKEY_eq(pub2, pub), 1);
    /* Labels are validated before any driver sees them. */
    assert_int_equal(keel_keystore_generate(ks, "../etc/passwd", &pub2), KEEL_ERR_ARG);
    assert_int_equal(keel_keystore_generate(ks, "", &pub2), KEEL_ERR_ARG);
    assert_int_equal(keel_keystore_sign(ks, "missing", "x", 1, sig, sizeof sig, &n), KEEL_ERR_NOT_FOUND);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(pub2);
    EVP_PKEY_free(priv);
    keel_keystore_close(ks);

    /* The key file is sealed (no PEM/DER private key in clear) and 0600. */
    char keyfile[KEEL_PATH_MAX];
    path_in(keyfile, kdir, "device.key");
    struct stat sb;
    assert_int_equal(stat(keyfile, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(stat(kek, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    tmpdir_free(d);
}

static void test_wrong_kek_and_tamper(void **state)
{
    (void)state;
    char *d = tmpdir_new(), kdir[KEEL_PATH_MAX], kek[KEEL_PATH_MAX];
    keel_keystore_config_t c = file_cfg(d, kdir, kek);
    keel_keystore_t *ks = NULL;
    EVP_PKEY *pub = NULL;
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_OK);
    assert_int_equal(keel_keystore_generate(ks, "device", &pub), KEEL_OK);
    keel_keystore_close(ks);
    EVP_PKEY_free(pub);

    /* Another device's KEK cannot unseal this key. */
    uint8_t other[KEEL_KEYSTORE_KEK_LEN];
    keel_random_bytes(other, sizeof other);
    assert_int_equal(keel_file_write_atomic(kek, other, sizeof other, 0600), KEEL_OK);
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_OK);
    assert_int_equal(keel_keystore_public_key(ks, "device", &pub), KEEL_ERR_VERIFY);
    keel_keystore_close(ks);

    /* A KEK readable by others is refused outright. */
    assert_int_equal(chmod(kek, 0644), 0);
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_ERR_KEYSTORE);
    /* And a missing one is not silently created unless asked. */
    assert_int_equal(unlink(kek), 0);
    c.create = 0;
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_ERR_NOT_FOUND);
    tmpdir_free(d);
}

static keel_status_t read_kek(void *arg, uint8_t kek[KEEL_KEYSTORE_KEK_LEN])
{
    memcpy(kek, arg, KEEL_KEYSTORE_KEK_LEN);
    return KEEL_OK;
}

static void test_platform_hook(void **state)
{
    (void)state;
    char *d = tmpdir_new();
    uint8_t fused[KEEL_KEYSTORE_KEK_LEN];
    keel_random_bytes(fused, sizeof fused);
    keel_keystore_config_t c = {.driver = "file", .dir = d,
                                .kek_hook = read_kek, .kek_arg = fused};
    keel_keystore_t *ks = NULL;
    EVP_PKEY *pub = NULL;
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_OK);
    assert_int_equal(keel_keystore_generate(ks, "k", &pub), KEEL_OK);
    keel_keystore_close(ks);
    EVP_PKEY_free(pub);
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_OK);
    assert_int_equal(keel_keystore_public_key(ks, "k", &pub), KEEL_OK);
    EVP_PKEY_free(pub);
    keel_keystore_close(ks);
    tmpdir_free(d);
}

static void test_seal_destroy(void **state)
{
    (void)state;
    char *d = tmpdir_new(), kdir[KEEL_PATH_MAX], kek[KEEL_PATH_MAX];
    keel_keystore_config_t c = file_cfg(d, kdir, kek);
    keel_keystore_t *ks = NULL;
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_OK);
    uint8_t secret[32], blob[32 + KEEL_KEYSTORE_SEAL_OVERHEAD], out[64];
    size_t n = 0, m = 0;
    keel_random_bytes(secret, sizeof secret);
    assert_int_equal(keel_keystore_unseal(ks, "wrap", "ad", secret, 32, out, sizeof out, &m),
                     KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_keystore_seal(ks, "wrap", "ad", secret, 32, blob, sizeof blob, &n), KEEL_OK);
    assert_int_equal(keel_keystore_unseal(ks, "wrap", "ad", blob, n, out, sizeof out, &m), KEEL_OK);
    assert_memory_equal(out, secret, 32);
    assert_int_equal(keel_keystore_unseal(ks, "wrap", "other", blob, n, out, sizeof out, &m), KEEL_ERR_VERIFY);
    blob[n - 1] ^= 1;
    assert_int_equal(keel_keystore_unseal(ks, "wrap", "ad", blob, n, out, sizeof out, &m), KEEL_ERR_VERIFY);
    blob[n - 1] ^= 1;
    assert_int_equal(keel_keystore_seal(ks, "wrap", "ad", secret, 0, blob, sizeof blob, &n), KEEL_ERR_TOO_LARGE);
    /* Crypto-erase: after destroy the blob is unrecoverable, even with the KEK. */
    assert_int_equal(keel_keystore_destroy(ks, "wrap"), KEEL_OK);
    assert_int_not_equal(keel_keystore_unseal(ks, "wrap", "ad", blob, n, out, sizeof out, &m), KEEL_OK);
    assert_int_equal(keel_keystore_destroy(ks, "wrap"), KEEL_OK);
    keel_keystore_close(ks);
    tmpdir_free(d);
}

static void test_bad_config(void **state)
{
    (void)state;
    keel_keystore_t *ks = NULL;
    keel_keystore_config_t c = {.driver = "floppy"};
    assert_int_equal(keel_keystore_open(&c, &ks), KEEL_ERR_UNSUPPORTED);
    keel_keystore_config_t c2 = {.driver = "file"};
    assert_int_equal(keel_keystore_open(&c2, &ks), KEEL_ERR_ARG);
    assert_null(ks);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_sign),
        cmocka_unit_test(test_wrong_kek_and_tamper),
        cmocka_unit_test(test_platform_hook),
        cmocka_unit_test(test_seal_destroy),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

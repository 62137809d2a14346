/* crypto: AEAD binding, Argon2id, ECDSA, encoders. */
#include "testutil.h"

#include "keel/crypto.h"

#include <openssl/evp.h>

static int setup(void **state)
{
    (void)state;
    return keel_crypto_init() == KEEL_OK ? 0 : -1;
}

static void test_aead_roundtrip_and_binding(void **state)
{
    (void)state;
    uint8_t key[KEEL_AEAD_KEY_LEN], other[KEEL_AEAD_KEY_LEN];
    keel_random_bytes(key, sizeof key);
    keel_random_bytes(other, sizeof other);
    const char msg[] = "the data key";
    uint8_t blob[64], out[64];
    size_t n = 0, m = 0;
    assert_int_equal(keel_aead_seal(key, "ad", 2, msg, sizeof msg, blob, sizeof blob, &n), KEEL_OK);
    assert_int_equal(n, sizeof msg + KEEL_AEAD_OVERHEAD);
    assert_int_equal(keel_aead_open(key, "ad", 2, blob, n, out, sizeof out, &m), KEEL_OK);
    assert_int_equal(m, sizeof msg);
    assert_memory_equal(out, msg, m);
    /* Different associated data, key, or any flipped bit: refused. */
    assert_int_equal(keel_aead_open(key, "ae", 2, blob, n, out, sizeof out, &m), KEEL_ERR_VERIFY);
    assert_int_equal(keel_aead_open(other, "ad", 2, blob, n, out, sizeof out, &m), KEEL_ERR_VERIFY);
    for (size_t i = 0; i < n; i++) {
        blob[i] ^= 0x01;
        assert_int_equal(keel_aead_open(key, "ad", 2, blob, n, out, sizeof out, &m), KEEL_ERR_VERIFY);
        blob[i] ^= 0x01;
    }
    assert_int_equal(keel_aead_open(key, "ad", 2, blob, KEEL_AEAD_OVERHEAD - 1, out, sizeof out, &m),
                     KEEL_ERR_FORMAT);
    /* Output caps are enforced. */
    assert_int_equal(keel_aead_seal(key, "ad", 2, msg, sizeof msg, blob, 10, &n), KEEL_ERR_TOO_LARGE);
    /* Two seals of the same plaintext differ (random nonce). */
    uint8_t b2[64];
    size_t n2 = 0;
    assert_int_equal(keel_aead_seal(key, "ad", 2, msg, sizeof msg, blob, sizeof blob, &n), KEEL_OK);
    assert_int_equal(keel_aead_seal(key, "ad", 2, msg, sizeof msg, b2, sizeof b2, &n2), KEEL_OK);
    assert_memory_not_equal(blob, b2, n);
}

static void test_argon2id(void **state)
{
    (void)state;
    keel_argon2_params_t p = {1, 1024}; /* cheap for a unit test */
    char h[KEEL_PASSWORD_HASH_MAX];
    assert_int_equal(keel_password_hash("correct horse", 13, &p, h), KEEL_OK);
    assert_non_null(strstr(h, "$argon2id$"));
    assert_non_null(strstr(h, "m=1024,t=1"));
    assert_int_equal(keel_password_verify(h, "correct horse", 13), KEEL_OK);
    assert_int_equal(keel_password_verify(h, "correct hors", 12), KEEL_ERR_VERIFY);
    assert_int_equal(keel_password_verify("$2y$10$notargon", "x", 1), KEEL_ERR_FORMAT);
    keel_argon2_params_t weak = {0, 1024};
    assert_int_equal(keel_password_hash("x", 1, &weak, h), KEEL_ERR_ARG);
    /* The defaults are OWASP's: t=2, 19 MiB. */
    assert_int_equal(keel_password_hash("x", 1, NULL, h), KEEL_OK);
    assert_non_null(strstr(h, "m=19456,t=2,p=1"));
}

static void test_ecdsa(void **state)
{
    (void)state;
    EVP_PKEY *k = NULL, *k2 = NULL;
    assert_int_equal(keel_ec_generate(&k), KEEL_OK);
    assert_int_equal(keel_ec_generate(&k2), KEEL_OK);
    uint8_t sig[KEEL_ECDSA_SIG_MAX];
    size_t n = 0;
    assert_int_equal(keel_ecdsa_sign(k, "msg", 3, sig, sizeof sig, &n), KEEL_OK);
    assert_int_equal(keel_ecdsa_verify(k, "msg", 3, sig, n), KEEL_OK);
    assert_int_equal(keel_ecdsa_verify(k, "msh", 3, sig, n), KEEL_ERR_VERIFY);
    assert_int_equal(keel_ecdsa_verify(k2, "msg", 3, sig, n), KEEL_ERR_VERIFY);
    keel_buf_t a, b;
    assert_int_equal(keel_pkey_spki(k, &a), KEEL_OK);
    assert_int_equal(keel_pkey_spki(k2, &b), KEEL_OK);
    assert_int_equal(a.len, 91); /* P-256 SubjectPublicKeyInfo */
    assert_memory_not_equal(a.data, b.data, a.len);
    keel_buf_free(&a);
    keel_buf_free(&b);
    EVP_PKEY_free(k);
    EVP_PKEY_free(k2);
}

static void test_encoders_and_random(void **state)
{
    (void)state;
    char out[80];
    /* RFC 4648 test vectors, lower case, no padding. */
    assert_int_equal(keel_base32_encode((const uint8_t *)"foobar", 6, out, sizeof out), KEEL_OK);
    assert_string_equal(out, "mzxw6ytboi");
    assert_int_equal(keel_base32_encode((const uint8_t *)"f", 1, out, sizeof out), KEEL_OK);
    assert_string_equal(out, "my");
    assert_int_equal(keel_base32_encode((const uint8_t *)"foobar", 6, out, 5), KEEL_ERR_TOO_LARGE);
    assert_int_equal(keel_hex_encode((const uint8_t *)"\x01\xab", 2, out, sizeof out), KEEL_OK);
    assert_string_equal(out, "01ab");
    uint8_t h[KEEL_SHA256_LEN];
    keel_sha256("abc", 3, h);
    assert_int_equal(keel_hex_encode(h, sizeof h, out, sizeof out), KEEL_OK);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_true(keel_ct_equal("abc", "abc", 3));
    assert_false(keel_ct_equal("abc", "abd", 3));
    for (int i = 0; i < 1000; i++)
        assert_true(keel_random_uniform(31) < 31);
}

/* The CSP form: base64 of SHA-256 (FIPS 180-2's "abc" and empty vectors). */
static void test_sha256_base64(void **state)
{
    (void)state;
    char b64[KEEL_SHA256_B64_LEN];
    assert_int_equal(keel_sha256_base64("abc", 3, b64), KEEL_OK);
    assert_string_equal(b64, "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=");
    assert_int_equal(keel_sha256_base64("", 0, b64), KEEL_OK);
    assert_string_equal(b64, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aead_roundtrip_and_binding),
        cmocka_unit_test(test_argon2id),
        cmocka_unit_test(test_ecdsa),
        cmocka_unit_test(test_encoders_and_random),
        cmocka_unit_test(test_sha256_base64),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}

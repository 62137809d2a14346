/* identity: ids from keys, serials, label passwords, normalisation. */
#include "testutil.h"

#include "keel/crypto.h"
#include "keel/identity.h"

#include <math.h>
#include <openssl/evp.h>

static void test_device_id(void **state)
{
    (void)state;
    assert_int_equal(keel_crypto_init(), KEEL_OK);
    EVP_PKEY *a = NULL, *b = NULL;
    assert_int_equal(keel_ec_generate(&a), KEEL_OK);
    assert_int_equal(keel_ec_generate(&b), KEEL_OK);
    char ia[KEEL_DEVICE_ID_LEN + 1], ia2[KEEL_DEVICE_ID_LEN + 1], ib[KEEL_DEVICE_ID_LEN + 1];
    assert_int_equal(keel_identity_device_id(a, ia), KEEL_OK);
    assert_int_equal(keel_identity_device_id(a, ia2), KEEL_OK);
    assert_int_equal(keel_identity_device_id(b, ib), KEEL_OK);
    assert_string_equal(ia, ia2); /* derived, so stable */
    assert_string_not_equal(ia, ib);
    assert_true(keel_identity_id_ok(ia));
    assert_false(keel_identity_id_ok("short"));
    assert_false(keel_identity_id_ok("AAAAAAAAAAAAAAAAAAAAAAAAAA")); /* upper case */
    assert_false(keel_identity_id_ok("aaaaaaaaaaaaaaaaaaaaaaaaa1")); /* not base32 */
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void test_model(void **state)
{
    (void)state;
    assert_true(keel_identity_model_ok("thermo-1"));
    assert_true(keel_identity_model_ok("Plug_2.0"));
    assert_false(keel_identity_model_ok(""));
    assert_false(keel_identity_model_ok("a b"));
    assert_false(keel_identity_model_ok("x\ny"));
    char big[KEEL_MODEL_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_false(keel_identity_model_ok(big));
}

static void test_label_password(void **state)
{
    (void)state;
    char pw[KEEL_LABEL_PW_LEN + 1], norm[64];
    keel_identity_label_password(pw);
    assert_int_equal(strlen(pw), KEEL_LABEL_PW_LEN);
    assert_int_equal(pw[6], '-');
    assert_int_equal(pw[13], '-');
    assert_int_equal(keel_identity_password_normalize(pw, norm, sizeof norm), KEEL_OK);
    assert_int_equal(strlen(norm), KEEL_LABEL_PW_CHARS);
    for (const char *p = norm; *p; p++)
        assert_non_null(strchr(KEEL_LABEL_PW_ALPHABET, *p));
    /* At least 80 bits (5.1-2). */
    double bits = KEEL_LABEL_PW_CHARS * log2((double)strlen(KEEL_LABEL_PW_ALPHABET));
    assert_true(bits >= 80.0);
    /* No look-alike characters in the alphabet. */
    assert_null(strpbrk(KEEL_LABEL_PW_ALPHABET, "01ilo"));
    /* Typing it in upper case or without dashes is the same password. */
    assert_int_equal(keel_identity_password_normalize("AbC-dEf 23", norm, sizeof norm), KEEL_OK);
    assert_string_equal(norm, "abcdef23");
    assert_int_equal(keel_identity_password_normalize("abcdef", norm, 4), KEEL_ERR_TOO_LARGE);
    /* Every character of the alphabet turns up, at every position. */
    int seen[KEEL_LABEL_PW_CHARS][256] = {{0}};
    for (int i = 0; i < 3000; i++) {
        keel_identity_label_password(pw);
        assert_int_equal(keel_identity_password_normalize(pw, norm, sizeof norm), KEEL_OK);
        for (int j = 0; j < KEEL_LABEL_PW_CHARS; j++)
            seen[j][(unsigned char)norm[j]]++;
    }
    for (int j = 0; j < KEEL_LABEL_PW_CHARS; j++)
        for (const char *p = KEEL_LABEL_PW_ALPHABET; *p; p++)
            assert_true(seen[j][(unsigned char)*p] > 0);
}

static void test_serial(void **state)
{
    (void)state;
    char a[KEEL_SERIAL_LEN + 1], b[KEEL_SERIAL_LEN + 1];
    keel_identity_new_serial(a);
    keel_identity_new_serial(b);
    assert_int_equal(strlen(a), KEEL_SERIAL_LEN);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_device_id),
        cmocka_unit_test(test_model),
        cmocka_unit_test(test_label_password),
        cmocka_unit_test(test_serial),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

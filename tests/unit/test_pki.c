/* factory PKI: three hierarchies, chains that verify, refusal to overwrite. */
#include "testutil.h"

#include "keel/factory.h"
#include "keel/identity.h"

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int verify_chain(X509 *leaf, X509 *issuing, X509 *root)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    sk_X509_push(untrusted, issuing);
    X509_STORE_add_cert(store, root);
    X509_STORE_CTX_init(ctx, store, leaf, untrusted);
    int ok = X509_verify_cert(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_free(untrusted);
    return ok;
}

static void test_init_and_issue(void **state)
{
    (void)state;
    char *d = tmpdir_new(), fdir[KEEL_PATH_MAX], p[2 * KEEL_PATH_MAX];
    path_in(fdir, d, "factory");
    assert_int_equal(keel_factory_init(fdir, "Acme", "a passphrase", 12), KEEL_OK);
    /* Never overwritten. */
    assert_int_equal(keel_factory_init(fdir, "Acme", NULL, 0), KEEL_ERR_EXISTS);
    snprintf(p, sizeof p, "%s/device-ca/root.key", fdir);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    keel_buf_t b;
    assert_int_equal(keel_file_read(p, 65536, &b), KEEL_OK);
    assert_non_null(strstr((char *)b.data, "ENCRYPTED PRIVATE KEY"));
    keel_buf_free(&b);
    snprintf(p, sizeof p, "%s/device-ca/issuing.key", fdir);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    /* Release and service issuing keys are encrypted too; the device one is not. */
    snprintf(p, sizeof p, "%s/release-ca/issuing.key", fdir);
    assert_int_equal(keel_file_read(p, 65536, &b), KEEL_OK);
    assert_non_null(strstr((char *)b.data, "ENCRYPTED PRIVATE KEY"));
    keel_buf_free(&b);
    snprintf(p, sizeof p, "%s/device-ca/issuing.key", fdir);
    assert_int_equal(keel_file_read(p, 65536, &b), KEEL_OK);
    assert_null(strstr((char *)b.data, "ENCRYPTED"));
    keel_buf_free(&b);

    keel_factory_t *f = NULL;
    unsigned both = KEEL_PKI_MASK(KEEL_PKI_DEVICE) | KEEL_PKI_MASK(KEEL_PKI_SERVICE);
    assert_int_equal(keel_factory_load(fdir, both, NULL, &f), KEEL_ERR_CONFIG);
    assert_int_equal(keel_factory_load(fdir, both, "wrong passphrase", &f), KEEL_ERR_VERIFY);
    /* The factory line needs no passphrase and gets only the device key. */
    assert_int_equal(keel_factory_load(fdir, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &f), KEEL_OK);
    assert_null(keel_factory_issuing_key(f, KEEL_PKI_RELEASE));
    assert_null(keel_factory_issuing_key(f, KEEL_PKI_SERVICE));
    assert_int_equal(keel_factory_issue_server(f, "broker.local", fdir), KEEL_ERR_ARG);
    keel_factory_free(f);
    assert_int_equal(keel_factory_load(fdir, both, "a passphrase", &f), KEEL_OK);
    assert_string_equal(keel_factory_org(f), "Acme");
    /* Three separate roots. */
    for (int i = 0; i < KEEL_PKI_COUNT; i++)
        for (int j = i + 1; j < KEEL_PKI_COUNT; j++)
            assert_int_not_equal(X509_cmp(keel_factory_root(f, i), keel_factory_root(f, j)), 0);

    EVP_PKEY *k = NULL;
    assert_int_equal(keel_ec_generate(&k), KEEL_OK);
    char id[KEEL_DEVICE_ID_LEN + 1];
    assert_int_equal(keel_identity_device_id(k, id), KEEL_OK);
    X509 *cert = NULL;
    assert_int_equal(keel_factory_issue_device(f, k, id, "thermo-1", "ABC123", &cert), KEEL_OK);
    assert_int_equal(verify_chain(cert, keel_factory_issuing(f, KEEL_PKI_DEVICE),
                                  keel_factory_root(f, KEEL_PKI_DEVICE)), 1);
    /* Not valid under another hierarchy: devices and updates do not share trust. */
    assert_int_equal(verify_chain(cert, keel_factory_issuing(f, KEEL_PKI_RELEASE),
                                  keel_factory_root(f, KEEL_PKI_RELEASE)), 0);
    char cn[64], ou[64];
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_organizationalUnitName, ou, sizeof ou);
    assert_string_equal(cn, id);
    assert_string_equal(ou, "thermo-1");
    assert_int_equal(X509_check_ca(cert), 0);
    assert_true((X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT) != 0);
    X509_free(cert);
    assert_int_equal(keel_factory_issue_device(f, k, "not-an-id", "thermo-1", "A", &cert), KEEL_ERR_ARG);
    EVP_PKEY_free(k);

    char sdir[KEEL_PATH_MAX];
    path_in(sdir, d, "broker");
    assert_int_equal(keel_factory_issue_server(f, "127.0.0.1", sdir), KEEL_OK);
    assert_int_equal(keel_factory_issue_server(f, "bad name", sdir), KEEL_ERR_ARG);
    snprintf(p, sizeof p, "%s/server.crt", sdir);
    X509 *srv = NULL;
    assert_int_equal(keel_pem_load_cert(p, &srv), KEEL_OK);
    assert_int_equal(X509_check_ip_asc(srv, "127.0.0.1", 0), 1);
    assert_int_equal(verify_chain(srv, keel_factory_issuing(f, KEEL_PKI_SERVICE),
                                  keel_factory_root(f, KEEL_PKI_SERVICE)), 1);
    X509_free(srv);
    keel_factory_free(f);
    tmpdir_free(d);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    char *d = tmpdir_new();
    keel_factory_t *f = NULL;
    assert_int_equal(keel_factory_load(d, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &f), KEEL_ERR_CONFIG);
    assert_int_equal(keel_factory_init(d, "", NULL, 0), KEEL_ERR_ARG);
    /* An organisation whose CA names would not fit a certificate is refused up front. */
    assert_int_equal(keel_factory_init(d, "An Organisation Name That Is Far Too Long For It", NULL, 0),
                     KEEL_ERR_ARG);
    assert_int_equal(keel_factory_init(d, "Bad\nOrg", NULL, 0), KEEL_ERR_ARG);
    assert_int_equal(keel_factory_init(d, "Org", "short", 5), KEEL_ERR_ARG);
    tmpdir_free(d);
}

/* A factory whose factory.json was lost is never wiped by a new init. */
static void test_init_keeps_orphaned_keys(void **state)
{
    (void)state;
    char *d = tmpdir_new(), marker[KEEL_PATH_MAX * 2], key[KEEL_PATH_MAX * 2];
    assert_int_equal(keel_factory_init(d, "Acme", NULL, 0), KEEL_OK);
    snprintf(marker, sizeof marker, "%s/factory.json", d);
    snprintf(key, sizeof key, "%s/device-ca/root.key", d);
    keel_buf_t before, after;
    assert_int_equal(keel_file_read(key, 65536, &before), KEEL_OK);
    assert_int_equal(unlink(marker), 0);
    assert_int_equal(keel_factory_init(d, "Acme", NULL, 0), KEEL_ERR_EXISTS);
    assert_int_equal(keel_file_read(key, 65536, &after), KEEL_OK);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len);
    keel_buf_free(&before);
    keel_buf_free(&after);
    tmpdir_free(d);
}

/* keel factory issue-client: clientAuth only, never a device id. */
static void test_issue_client(void **state)
{
    (void)state;
    char *d = tmpdir_new(), fdir[KEEL_PATH_MAX], cdir[KEEL_PATH_MAX], p[2 * KEEL_PATH_MAX];
    path_in(fdir, d, "factory");
    path_in(cdir, d, "fleet");
    assert_int_equal(keel_factory_init(fdir, "Acme", NULL, 0), KEEL_OK);
    keel_factory_t *f = NULL;
    assert_int_equal(keel_factory_load(fdir, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &f), KEEL_OK);
    assert_int_equal(keel_factory_issue_client(f, "keel-fleet", cdir), KEEL_ERR_ARG); /* no service key */
    keel_factory_free(f);
    assert_int_equal(keel_factory_load(fdir, KEEL_PKI_MASK(KEEL_PKI_SERVICE), NULL, &f), KEEL_OK);

    static const char *const bad[] = {"", "fleet/1", "fleet+", "#", "keel fleet", "fl\303\251et",
                                      "0123456789012345678901234567890123456789012345678901234567890123x",
                                      "abcdefghijklmnopqrstuvwxyz" /* a well-formed device id */};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(keel_factory_issue_client(f, bad[i], cdir), KEEL_ERR_ARG);
    assert_int_equal(keel_factory_issue_client(f, NULL, cdir), KEEL_ERR_ARG);
    /* 64 characters, and a 26-character name that is not base32 lowercase, are fine. */
    assert_int_equal(keel_factory_issue_client(f, "0123456789012345678901234567890123456789012345678901234567890123",
                                               cdir), KEEL_OK);
    assert_int_equal(keel_factory_issue_client(f, "ABCDEFGHIJKLMNOPQRSTUVWXYZ", cdir), KEEL_OK);
    assert_int_equal(keel_factory_issue_client(f, "keel-fleet", cdir), KEEL_OK);

    struct stat sb;
    snprintf(p, sizeof p, "%s/client.key", cdir);
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    snprintf(p, sizeof p, "%s/client.crt", cdir);
    X509 *cert = NULL;
    assert_int_equal(keel_pem_load_cert(p, &cert), KEEL_OK);
    char cn[80];
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0);
    assert_string_equal(cn, "keel-fleet");
    assert_int_equal(X509_check_ca(cert), 0);
    assert_int_equal(X509_get_extended_key_usage(cert), XKU_SSL_CLIENT);
    assert_int_equal(X509_check_purpose(cert, X509_PURPOSE_SSL_CLIENT, 0), 1);
    assert_int_equal(X509_check_purpose(cert, X509_PURPOSE_SSL_SERVER, 0), 0);
    assert_int_equal(verify_chain(cert, keel_factory_issuing(f, KEEL_PKI_SERVICE),
                                  keel_factory_root(f, KEEL_PKI_SERVICE)), 1);
    assert_int_equal(verify_chain(cert, keel_factory_issuing(f, KEEL_PKI_DEVICE),
                                  keel_factory_root(f, KEEL_PKI_DEVICE)), 0);
    /* 397 days, like server certificates. */
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(cert), X509_get0_notAfter(cert)), 1);
    assert_int_equal(days * 86400 + secs, 397 * 86400 + 3600);
    X509_free(cert);
    snprintf(p, sizeof p, "%s/ca.pem", cdir);
    X509 *ca = NULL;
    assert_int_equal(keel_pem_load_cert(p, &ca), KEEL_OK);
    assert_int_equal(X509_cmp(ca, keel_factory_root(f, KEEL_PKI_SERVICE)), 0);
    X509_free(ca);
    keel_factory_free(f);
    tmpdir_free(d);
}

static X509_CRL *crl_parse(const keel_buf_t *pem)
{
    BIO *bio = BIO_new_mem_buf(pem->data, (int)pem->len);
    X509_CRL *crl = bio != NULL ? PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    assert_non_null(crl);
    return crl;
}

static char *serial_hex(X509 *cert)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    char *hex = BN_bn2hex(bn);
    BN_free(bn);
    assert_non_null(hex);
    return hex;
}

static long crl_number(X509_CRL *crl)
{
    ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
    assert_non_null(num);
    long v = ASN1_INTEGER_get(num);
    ASN1_INTEGER_free(num);
    return v;
}

/* What a TLS server with a crlfile does (mosquitto: X509_V_FLAG_CRL_CHECK). */
static int verify_with_crl(X509 *leaf, X509 *issuing, X509 *root, X509_CRL *crl, int *err)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    assert_true(store != NULL && ctx != NULL && untrusted != NULL);
    assert_true(sk_X509_push(untrusted, issuing) > 0);
    assert_int_equal(X509_STORE_add_cert(store, root), 1);
    assert_int_equal(X509_STORE_add_crl(store, crl), 1);
    assert_int_equal(X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK), 1);
    assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, untrusted), 1);
    int ok = X509_verify_cert(ctx);
    *err = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_free(untrusted);
    return ok;
}

static void test_device_crl(void **state)
{
    (void)state;
    char *d = tmpdir_new(), fdir[KEEL_PATH_MAX], p[2 * KEEL_PATH_MAX];
    path_in(fdir, d, "factory");
    assert_int_equal(keel_factory_init(fdir, "Acme", "a passphrase", 12), KEEL_OK);
    keel_factory_t *f = NULL;
    /* The device issuing key is not encrypted: no passphrase needed. */
    assert_int_equal(keel_factory_load(fdir, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &f), KEEL_OK);
    X509 *iss = keel_factory_issuing(f, KEEL_PKI_DEVICE), *root = keel_factory_root(f, KEEL_PKI_DEVICE);

    X509 *dev[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        EVP_PKEY *k = NULL;
        char id[KEEL_DEVICE_ID_LEN + 1];
        assert_int_equal(keel_ec_generate(&k), KEEL_OK);
        assert_int_equal(keel_identity_device_id(k, id), KEEL_OK);
        assert_int_equal(keel_factory_issue_device(f, k, id, "thermo-1", "ABC123", &dev[i]), KEEL_OK);
        EVP_PKEY_free(k);
    }
    char *revoked = serial_hex(dev[0]);
    int64_t now = (int64_t)time(NULL);
    /* Out of order and in both cases; "0a" and "00ff00" are other certificates. */
    const char *const list[] = {"ff00", revoked, "0a"};
    keel_buf_t pem;
    assert_int_equal(keel_factory_device_crl(f, list, 3, now, 7, &pem), KEEL_OK);
    X509_CRL *crl = crl_parse(&pem);
    keel_buf_free(&pem);

    /* Signed by the device issuing CA, and by nothing else. */
    assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(iss)), 1);
    assert_true(X509_CRL_verify(crl, X509_get0_pubkey(root)) <= 0);
    assert_int_equal(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(iss)), 0);
    assert_int_equal(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
    assert_int_equal(ASN1_TIME_cmp_time_t(X509_CRL_get0_lastUpdate(crl), (time_t)now), 0);
    assert_int_equal(ASN1_TIME_cmp_time_t(X509_CRL_get0_nextUpdate(crl), (time_t)(now + 7 * 86400)), 0);
    assert_int_equal(crl_number(crl), 1);
    AUTHORITY_KEYID *aki = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, NULL, NULL);
    assert_non_null(aki);
    assert_int_equal(ASN1_OCTET_STRING_cmp(aki->keyid, X509_get0_subject_key_id(iss)), 0);
    AUTHORITY_KEYID_free(aki);
    /* Exactly the three serials, sorted. */
    STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(crl);
    assert_int_equal(sk_X509_REVOKED_num(rev), 3);
    BIGNUM *prev = NULL;
    int found = 0;
    for (int i = 0; i < 3; i++) {
        const ASN1_INTEGER *s = X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(rev, i));
        BIGNUM *bn = ASN1_INTEGER_to_BN(s, NULL);
        assert_non_null(bn);
        if (prev != NULL)
            assert_true(BN_cmp(prev, bn) < 0);
        found += ASN1_INTEGER_cmp(s, X509_get0_serialNumber(dev[0])) == 0;
        BN_free(prev);
        prev = bn;
    }
    BN_free(prev);
    assert_int_equal(found, 1);
    X509_REVOKED *entry = NULL;
    assert_int_equal(X509_CRL_get0_by_cert(crl, &entry, dev[0]), 1);
    assert_int_equal(X509_CRL_get0_by_cert(crl, &entry, dev[1]), 0);

    /* A relying party with the CRL refuses the listed device, accepts the other. */
    int err = 0;
    assert_int_equal(verify_with_crl(dev[0], iss, root, crl, &err), 0);
    assert_int_equal(err, X509_V_ERR_CERT_REVOKED);
    assert_int_equal(verify_with_crl(dev[1], iss, root, crl, &err), 1);
    X509_CRL_free(crl);

    /* The number goes up; an empty list is a valid CRL that revokes nothing. */
    assert_int_equal(keel_factory_device_crl(f, NULL, 0, now, 1, &pem), KEEL_OK);
    crl = crl_parse(&pem);
    keel_buf_free(&pem);
    assert_int_equal(crl_number(crl), 2);
    assert_true(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) <= 0); /* OpenSSL: -1 for no list */
    assert_int_equal(verify_with_crl(dev[0], iss, root, crl, &err), 1);
    X509_CRL_free(crl);
    snprintf(p, sizeof p, "%s/device-ca/crlnumber", fdir);
    keel_buf_t b;
    assert_int_equal(keel_file_read(p, 64, &b), KEEL_OK);
    assert_string_equal((char *)b.data, "2\n");
    keel_buf_free(&b);

    /* Past its next update, the CRL locks out every device of the CA. */
    assert_int_equal(keel_factory_device_crl(f, NULL, 0, now - 3 * 86400, 1, &pem), KEEL_OK);
    crl = crl_parse(&pem);
    keel_buf_free(&pem);
    assert_int_equal(verify_with_crl(dev[1], iss, root, crl, &err), 0);
    assert_int_equal(err, X509_V_ERR_CRL_HAS_EXPIRED);
    X509_CRL_free(crl);

    /* Bad serials, repeated ones (whatever their spelling), bad validity. */
    static const char *const bad[] = {"", "0x0a", "-1", "12 34", "g1", "0123456789abcdef0123456789abcdef012345678"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(keel_factory_device_crl(f, &bad[i], 1, now, 1, &pem), KEEL_ERR_ARG);
        keel_buf_free(&pem);
    }
    const char *const twenty[] = {"ff23456789abcdef0123456789abcdef01234567"}; /* 20 bytes */
    assert_int_equal(keel_factory_device_crl(f, twenty, 1, now, 1, &pem), KEEL_OK);
    keel_buf_free(&pem);
    const char *const dup[] = {"0a", "ff", "000A"};
    assert_int_equal(keel_factory_device_crl(f, dup, 3, now, 1, &pem), KEEL_ERR_ARG);
    keel_buf_free(&pem);
    const char *const hole[] = {"0a", NULL};
    assert_int_equal(keel_factory_device_crl(f, hole, 2, now, 1, &pem), KEEL_ERR_ARG);
    keel_buf_free(&pem);
    assert_int_equal(keel_factory_device_crl(f, NULL, 0, now, 0, &pem), KEEL_ERR_ARG);
    keel_buf_free(&pem);
    assert_int_equal(keel_factory_device_crl(f, NULL, 0, now, KEEL_CRL_MAX_DAYS + 1, &pem), KEEL_ERR_ARG);
    keel_buf_free(&pem);
    assert_int_equal(keel_factory_device_crl(f, NULL, 0, -1, 1, &pem), KEEL_ERR_ARG);
    keel_buf_free(&pem);
    /* The service CA's key was not loaded. */
    assert_int_equal(keel_factory_crl(f, KEEL_PKI_SERVICE, NULL, 0, now, 1, &pem), KEEL_ERR_ARG);
    keel_buf_free(&pem);
    /* A damaged counter is never guessed past. */
    assert_int_equal(keel_file_write_atomic(p, "x\n", 2, 0644), KEEL_OK);
    assert_int_equal(keel_factory_device_crl(f, NULL, 0, now, 1, &pem), KEEL_ERR_FORMAT);
    keel_buf_free(&pem);
    assert_int_equal(keel_file_write_atomic(p, "41\n", 3, 0644), KEEL_OK);
    assert_int_equal(keel_factory_device_crl(f, NULL, 0, now, 1, &pem), KEEL_OK);
    crl = crl_parse(&pem);
    keel_buf_free(&pem);
    assert_int_equal(crl_number(crl), 42);
    X509_CRL_free(crl);

    OPENSSL_free(revoked);
    X509_free(dev[0]);
    X509_free(dev[1]);
    keel_factory_free(f);
    tmpdir_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_issue),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_init_keeps_orphaned_keys),
        cmocka_unit_test(test_issue_client),
        cmocka_unit_test(test_device_crl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

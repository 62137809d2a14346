/* factory PKI: three hierarchies, chains that verify, refusal to overwrite. */
#include "testutil.h"

#include "keel/factory.h"
#include "keel/identity.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_issue),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_init_keeps_orphaned_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

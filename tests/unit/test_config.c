/* config: the strict INI parser, and a provisioned device's keeld.conf as is. */
#include "testutil.h"

#include "keel/config.h"
#include "keel/device.h"
#include "keel/factory.h"
#include "keel/identity.h"

#include <openssl/evp.h>
#include <openssl/x509.h>

static const keel_cfg_key_t schema[] = {
    {"net", "listen", KEEL_CFG_STRING, "127.0.0.1:8443", 0, 0},
    {"net", "max_conns", KEEL_CFG_UINT, "64", 1, 1000},
    {"net", "tls13_only", KEEL_CFG_BOOL, "false", 0, 0},
    {"files", "state", KEEL_CFG_PATH, NULL, 0, 0},
};

static keel_status_t load_text(const char *dir, const char *text, keel_config_t **c)
{
    char p[KEEL_PATH_MAX];
    path_in(p, dir, "test.conf");
    assert_int_equal(keel_file_write_atomic(p, text, strlen(text), 0600), KEEL_OK);
    return keel_config_load(p, schema, 4, c);
}

static void test_parse_and_types(void **state)
{
    (void)state;
    char *d = tmpdir_new();
    keel_config_t *c = NULL;
    assert_int_equal(load_text(d, "# comment\n[net]\nmax_conns = 10\n  tls13_only=yes \n\n[files]\nstate = s\n", &c),
                     KEEL_OK);
    assert_string_equal(keel_config_str(c, "net", "listen"), "127.0.0.1:8443"); /* default */
    assert_int_equal(keel_config_uint(c, "net", "max_conns"), 10);
    assert_true(keel_config_bool(c, "net", "tls13_only"));
    char p[KEEL_PATH_MAX], want[KEEL_PATH_MAX];
    assert_int_equal(keel_config_path(c, "files", "state", p), KEEL_OK);
    path_in(want, d, "s");
    assert_string_equal(p, want); /* relative to the file */
    assert_int_equal(keel_config_override(c, "net.max_conns=20"), KEEL_OK);
    assert_int_equal(keel_config_uint(c, "net", "max_conns"), 20);
    assert_int_equal(keel_config_override(c, "net.max_conns=0"), KEEL_ERR_CONFIG);
    assert_int_equal(keel_config_override(c, "net.nope=1"), KEEL_ERR_CONFIG);
    assert_int_equal(keel_config_override(c, "garbage"), KEEL_ERR_CONFIG);
    keel_config_free(c);
    tmpdir_free(d);
}

/* fuzz_config: an override kept the blanks around its value, which a file
 * trims, so a value set with -o could not be written back into the file. */
static void test_override_trims_like_the_file(void **state)
{
    (void)state;
    char *d = tmpdir_new();
    keel_config_t *c = NULL;
    assert_int_equal(load_text(d, "[net]\nlisten =  a:1 \t\n", &c), KEEL_OK);
    assert_string_equal(keel_config_str(c, "net", "listen"), "a:1");
    assert_int_equal(keel_config_override(c, "net.listen= b:2 \t"), KEEL_OK);
    assert_string_equal(keel_config_str(c, "net", "listen"), "b:2");
    assert_int_equal(keel_config_override(c, "net.max_conns= 20 "), KEEL_OK);
    assert_int_equal(keel_config_uint(c, "net", "max_conns"), 20);
    assert_int_equal(keel_config_override(c, "net.listen=  "), KEEL_ERR_CONFIG); /* empty, as in a file */
    keel_error_clear();
    keel_config_free(c);
    tmpdir_free(d);
}

static void test_errors_name_the_line(void **state)
{
    (void)state;
    char *d = tmpdir_new();
    keel_config_t *c = NULL;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[net]\nlisten = x\nfrobnicate = 1\n", "test.conf:3: unknown key 'frobnicate' in [net]"},
        {"[nope]\n", "test.conf:1: unknown section [nope]"},
        {"listen = x\n", "test.conf:1: 'listen' is outside any [section]"},
        {"[net]\nmax_conns = 5\nmax_conns = 6\n", "test.conf:3: net.max_conns is already set on line 2"},
        {"[net]\nmax_conns = 5000\n", "test.conf:2: net.max_conns must be a whole number from 1 to 1000"},
        {"[net]\nmax_conns = -1\n", "test.conf:2: net.max_conns must be a whole number"},
        {"[net]\ntls13_only = maybe\n", "test.conf:2: net.tls13_only must be true or false"},
        {"[net]\nlisten\n", "test.conf:2: expected 'key = value'"},
        {"[net\n", "test.conf:1: malformed section header"},
        {"[net]\nlisten = \n", "test.conf:2: net.listen is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(load_text(d, cases[i].text, &c), KEEL_ERR_CONFIG);
        if (strstr(keel_error_message(), cases[i].want) == NULL)
            fail_msg("case %zu: got '%s', want '%s'", i, keel_error_message(), cases[i].want);
    }
    char *big = malloc(KEEL_CONFIG_LINE_MAX + 20);
    memset(big, 'a', KEEL_CONFIG_LINE_MAX + 10);
    memcpy(big, "[net]\nlisten = ", 15);
    big[KEEL_CONFIG_LINE_MAX + 10] = '\0';
    assert_int_equal(load_text(d, big, &c), KEEL_ERR_CONFIG);
    free(big);
    char p[KEEL_PATH_MAX];
    path_in(p, d, "missing.conf");
    assert_int_equal(keel_config_load(p, schema, 4, &c), KEEL_ERR_CONFIG);
    tmpdir_free(d);
}

/* The starter configuration a factory writes works as is: it parses, and the
 * keystore and vault it names open, with the key matching the certificate. */
static void test_starter_config(void **state)
{
    (void)state;
    char *d = tmpdir_new(), f[KEEL_PATH_MAX], b[KEEL_PATH_MAX];
    path_in(f, d, "factory");
    path_in(b, d, "batch");
    assert_int_equal(keel_factory_init(f, "Acme", NULL, 0), KEEL_OK);
    keel_factory_t *fac = NULL;
    assert_int_equal(keel_factory_load(f, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &fac), KEEL_OK);
    keel_provision_opts_t o = {.out = b, .model = "plug-1", .count = 1, .keystore = {.driver = "file"},
                               .argon2 = {1, 64}};
    keel_provision_stats_t s;
    assert_int_equal(keel_factory_provision(fac, &o, &s), KEEL_OK);
    keel_factory_free(fac);

    keel_buf_t m;
    char mp[KEEL_PATH_MAX];
    path_in(mp, b, KEEL_BATCH_MANIFEST);
    assert_int_equal(keel_file_read(mp, 1 << 20, &m), KEEL_OK);
    const char *idp = strstr((char *)m.data, "\"id\": \"") + 7;
    char id[KEEL_DEVICE_ID_LEN + 1];
    memcpy(id, idp, KEEL_DEVICE_ID_LEN);
    id[KEEL_DEVICE_ID_LEN] = '\0';
    keel_buf_free(&m);

    char conf[KEEL_PATH_MAX * 2];
    snprintf(conf, sizeof conf, "%s/%s/%s", b, id, KEEL_STATE_CONFIG);
    keel_config_t *c = NULL;
    char *over[] = {"update.boot_tries=5"};
    assert_int_equal(keel_device_config_load(conf, over, 1, &c), KEEL_OK);
    assert_string_equal(keel_config_str(c, "device", "id"), id);
    assert_string_equal(keel_config_str(c, "device", "model"), "plug-1");
    assert_int_equal(keel_config_uint(c, "update", "boot_tries"), 5);
    keel_keystore_t *ks = NULL;
    assert_int_equal(keel_device_keystore_open(c, &ks), KEEL_OK);
    EVP_PKEY *pub = NULL;
    assert_int_equal(keel_keystore_public_key(ks, keel_config_str(c, "keystore", "key_label"), &pub), KEEL_OK);
    char certp[KEEL_PATH_MAX];
    assert_int_equal(keel_config_path(c, "identity", "certificate", certp), KEEL_OK);
    X509 *cert = NULL;
    assert_int_equal(keel_pem_load_cert(certp, &cert), KEEL_OK);
    assert_int_equal(EVP_PKEY_eq(pub, X509_get0_pubkey(cert)), 1);
    keel_vault_t *v = NULL;
    assert_int_equal(keel_device_vault_open(c, ks, &v), KEEL_OK);
    assert_int_equal(keel_vault_secret_put(v, "x", "y", 1), KEEL_OK);
    keel_vault_close(v);
    X509_free(cert);
    EVP_PKEY_free(pub);
    keel_keystore_close(ks);
    keel_config_free(c);
    tmpdir_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_types),
        cmocka_unit_test(test_override_trims_like_the_file),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_starter_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* factory audit: a clean batch passes; each kind of flaw is found by its check. */
#include "testutil.h"

#include "keel/factory.h"
#include "keel/identity.h"

#define BATCH 220 /* enough for the per-position statistics */

static char *root;
static char batch[KEEL_PATH_MAX], common[KEEL_PATH_MAX], labels[KEEL_PATH_MAX];
static keel_buf_t pristine;

static int setup(void **state)
{
    (void)state;
    root = tmpdir_new();
    char fdir[KEEL_PATH_MAX];
    path_in(fdir, root, "factory");
    path_in(batch, root, "batch");
    path_in(common, root, "common.txt");
    path_in(labels, batch, KEEL_BATCH_LABELS);
    if (keel_factory_init(fdir, "Acme", NULL, 0) != KEEL_OK)
        return -1;
    keel_factory_t *f = NULL;
    if (keel_factory_load(fdir, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &f) != KEEL_OK)
        return -1;
    keel_provision_opts_t o = {.out = batch, .model = "thermo-1", .count = BATCH,
                               .keystore = {.driver = "file"}, .argon2 = {1, 64}};
    keel_provision_stats_t s;
    keel_status_t st = keel_factory_provision(f, &o, &s);
    keel_factory_free(f);
    static const char words[] = "#!comment: test list\n123456\npassword\nadmin\npassword123\n";
    if (st != KEEL_OK || keel_file_write_atomic(common, words, strlen(words), 0644) != KEEL_OK)
        return -1;
    return keel_file_read(labels, 1 << 20, &pristine) == KEEL_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    keel_buf_free(&pristine);
    tmpdir_free(root);
    return 0;
}

static int restore(void **state)
{
    (void)state;
    return keel_file_write_atomic(labels, pristine.data, pristine.len, 0600) == KEEL_OK ? 0 : -1;
}

static json_t *run_audit(unsigned verify, unsigned *n)
{
    keel_audit_opts_t o = {.out = batch, .common_list = common, .verify_hashes = verify};
    json_t *r = NULL;
    assert_int_equal(keel_factory_audit(&o, &r, n), KEEL_OK);
    return r;
}

/* Replaces field `col` of data line `row` (0-based, after the header). */
static void set_field(int row, int col, const char *value)
{
    keel_buf_t in, out;
    assert_int_equal(keel_file_read(labels, 1 << 20, &in), KEEL_OK);
    keel_buf_init(&out, 1 << 20);
    int line = -1, field = 0;
    int skipping = 0;
    for (size_t i = 0; i < in.len; i++) {
        char ch = (char)in.data[i];
        if (line == row && field == col && ch != ',' && ch != '\n') {
            if (!skipping) {
                assert_int_equal(keel_buf_append(&out, value, strlen(value)), KEEL_OK);
                skipping = 1;
            }
            continue;
        }
        assert_int_equal(keel_buf_append(&out, &ch, 1), KEEL_OK);
        if (ch == ',')
            field++;
        if (ch == '\n') {
            line++;
            field = 0;
        }
    }
    assert_int_equal(keel_file_write_atomic(labels, out.data, out.len, 0600), KEEL_OK);
    keel_buf_free(&in);
    keel_buf_free(&out);
}

static void get_field(int row, int col, char *out, size_t cap)
{
    const char *p = (const char *)pristine.data;
    for (int l = -1; l < row; l++)
        p = strchr(p, '\n') + 1;
    for (int c = 0; c < col; c++)
        p = strchr(p, ',') + 1;
    size_t n = strcspn(p, ",\n");
    assert_true(n < cap);
    memcpy(out, p, n);
    out[n] = '\0';
}

static void test_clean_batch_passes(void **state)
{
    (void)state;
    unsigned n = 99;
    json_t *r = run_audit(BATCH, &n);
    if (n != 0)
        fprintf(stderr, "%s\n", json_dumps(json_object_get(r, "findings"), 0));
    assert_int_equal(n, 0);
    assert_true(json_is_true(json_object_get(r, "pass")));
    assert_int_equal(json_integer_value(json_object_get(r, "devices")), BATCH);
    assert_true(json_real_value(json_object_get(json_object_get(r, "entropy_bits"), "min")) >= 80.0);
    /* The report never carries a password. */
    char pw[64];
    get_field(3, 3, pw, sizeof pw);
    char *txt = json_dumps(r, 0);
    assert_null(strstr(txt, pw));
    free(txt);
    json_decref(r);
}

static void test_duplicate_password(void **state)
{
    (void)state;
    char pw[64];
    get_field(0, 3, pw, sizeof pw);
    set_field(1, 3, pw);
    unsigned n = 0;
    json_t *r = run_audit(0, &n);
    assert_int_equal(report_check_findings(r, "unique-passwords"), 1);
    assert_false(json_is_true(json_object_get(r, "pass")));
    json_decref(r);
}

static void test_password_from_serial(void **state)
{
    (void)state;
    char serial[64], id[64], derived[80];
    get_field(5, 1, serial, sizeof serial);
    snprintf(derived, sizeof derived, "%s-x7", serial);
    set_field(5, 3, derived);
    /* And one that reverses part of the device id. */
    get_field(6, 0, id, sizeof id);
    char rev[16];
    for (int i = 0; i < 12; i++)
        rev[i] = id[11 - i];
    rev[12] = '\0';
    snprintf(derived, sizeof derived, "zz%szz22", rev);
    set_field(6, 3, derived);
    unsigned n = 0;
    json_t *r = run_audit(0, &n);
    assert_int_equal(report_check_findings(r, "no-relation"), 2);
    json_decref(r);
}

static void test_common_and_weak(void **state)
{
    (void)state;
    set_field(7, 3, "Password123");
    unsigned n = 0;
    json_t *r = run_audit(0, &n);
    assert_int_equal(report_check_findings(r, "not-common"), 1);
    assert_int_equal(report_check_findings(r, "entropy"), 1);
    json_decref(r);
}

static void test_sequential_passwords(void **state)
{
    (void)state;
    for (int i = 0; i < BATCH; i++) {
        char pw[32];
        snprintf(pw, sizeof pw, "factory-pw-%06d", i);
        set_field(i, 3, pw);
    }
    unsigned n = 0;
    json_t *r = run_audit(0, &n);
    assert_true(report_check_findings(r, "no-pattern") > 0);
    json_decref(r);
}

static void test_hash_and_device_mismatch(void **state)
{
    (void)state;
    char pw[64];
    get_field(9, 3, pw, sizeof pw);
    pw[0] = pw[0] == 'a' ? 'b' : 'a'; /* label no longer matches the stored hash */
    set_field(9, 3, pw);
    set_field(10, 0, "aaaaaaaaaaaaaaaaaaaaaaaaaa"); /* a label for a device that does not exist */
    unsigned n = 0;
    json_t *r = run_audit(BATCH, &n);
    assert_int_equal(report_check_findings(r, "label-hash"), 1);
    /* The orphan label, and the device that lost its label. */
    assert_int_equal(report_check_findings(r, "labels-match-devices"), 2);
    json_decref(r);
}

static void test_shared_key(void **state)
{
    (void)state;
    char a[64], b[64], pa[KEEL_PATH_MAX * 2], pb[KEEL_PATH_MAX * 2];
    get_field(11, 0, a, sizeof a);
    get_field(12, 0, b, sizeof b);
    snprintf(pa, sizeof pa, "%s/%s/%s", batch, a, KEEL_STATE_CERT);
    snprintf(pb, sizeof pb, "%s/%s/%s", batch, b, KEEL_STATE_CERT);
    keel_buf_t ca, cb;
    assert_int_equal(keel_file_read(pb, 65536, &cb), KEEL_OK);
    assert_int_equal(keel_file_read(pa, 65536, &ca), KEEL_OK);
    assert_int_equal(keel_file_write_atomic(pb, ca.data, ca.len, 0644), KEEL_OK);
    unsigned n = 0;
    json_t *r = run_audit(0, &n);
    assert_int_equal(report_check_findings(r, "unique-keys"), 1);
    assert_true(report_check_findings(r, "id-binding") >= 1);
    json_decref(r);
    assert_int_equal(keel_file_write_atomic(pb, cb.data, cb.len, 0644), KEEL_OK);
    keel_buf_free(&ca);
    keel_buf_free(&cb);
}

static void test_malformed_labels(void **state)
{
    (void)state;
    static const char junk[] = "device_id,serial,model,password,cert_sha256\nnot,enough\n";
    assert_int_equal(keel_file_append_sync(labels, junk + 44, strlen(junk + 44), 0600), KEEL_OK);
    unsigned n = 0;
    json_t *r = run_audit(0, &n);
    assert_int_equal(report_check_findings(r, "labels-format"), 1);
    json_decref(r);
    keel_audit_opts_t o = {.out = batch, .common_list = "/nonexistent/list"};
    json_t *r2 = NULL;
    assert_int_not_equal(keel_factory_audit(&o, &r2, &n), KEEL_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_clean_batch_passes, restore),
        cmocka_unit_test_setup(test_duplicate_password, restore),
        cmocka_unit_test_setup(test_password_from_serial, restore),
        cmocka_unit_test_setup(test_common_and_weak, restore),
        cmocka_unit_test_setup(test_sequential_passwords, restore),
        cmocka_unit_test_setup(test_hash_and_device_mismatch, restore),
        cmocka_unit_test_setup(test_shared_key, restore),
        cmocka_unit_test_setup(test_malformed_labels, restore),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * Unit tests for the privacy module: the declaration's strict checks, the
 * telemetry allow-list and consent gate, consent versions and the log,
 * retention, the export, the cloud-erase receipts across a factory reset,
 * and that a crypto-erase leaves no planted personal data readable in any
 * file of the vault directory.
 */
#include "testutil.h"

#include "keel/keystore.h"
#include "keel/privacy.h"
#include "keel/vault.h"

#include <dirent.h>
#include <jansson.h>
#include <sqlite3.h>
#include <time.h>

#define DAY 86400

/* The thermostat of examples/thermostat, abridged. */
static const char decl_text[] =
    "{\"format\":\"keel-declaration-1\",\"product\":\"Thermo One\","
    "\"controller\":{\"name\":\"Acme\",\"contact\":\"privacy@acme.example\"},"
    "\"consent_version\":\"2\","
    "\"sensing\":[{\"id\":\"temperature\",\"description\":\"room temperature\",\"personal\":true}],"
    "\"categories\":["
    "{\"id\":\"climate\",\"description\":\"room temperature history\",\"personal\":true,\"sensitive\":false,"
    "\"purpose\":\"heating schedule in the app\",\"recipients\":[\"Acme cloud\"],\"legal_basis\":\"consent\","
    "\"retention_days\":30},"
    "{\"id\":\"device-health\",\"description\":\"uptime\",\"personal\":false,\"sensitive\":false,"
    "\"purpose\":\"support\",\"recipients\":[],\"legal_basis\":\"contract\",\"retention_days\":90}],"
    "\"telemetry\":["
    "{\"field\":\"temperature\",\"type\":\"number\",\"category\":\"climate\",\"why\":\"history\"},"
    "{\"field\":\"heating\",\"type\":\"boolean\",\"category\":\"climate\",\"why\":\"history\"},"
    "{\"field\":\"uptime\",\"type\":\"integer\",\"category\":\"device-health\",\"why\":\"support\"}]}";

typedef struct {
    char *root;
    char vault_dir[KEEL_PATH_MAX];
    char decl[KEEL_PATH_MAX];
    keel_keystore_t *ks;
    keel_vault_t *v;
    keel_privacy_t *p;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    if (vault_fixture_new(&fx->root, fx->vault_dir, &fx->ks) != 0) {
        free(fx);
        return -1;
    }
    path_in(fx->decl, fx->root, "declaration.json");
    assert_int_equal(keel_vault_open(fx->vault_dir, fx->ks, &fx->v), KEEL_OK);
    text_file_write(fx->decl, decl_text);
    keel_status_t st = keel_privacy_open(fx->v, fx->decl, &fx->p);
    if (st != KEEL_OK)
        fail_msg("keel_privacy_open: %s", keel_error_message());
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    keel_privacy_close(fx->p);
    keel_vault_close(fx->v);
    vault_fixture_free(fx->root, fx->ks);
    free(fx);
    return 0;
}

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL)
        fail_msg("bad test JSON: %s", e.text);
    return j;
}

/* Loads the declaration with one change applied by a JSON Pointer-ish edit. */
static keel_status_t load_edited(fx_t *fx, void (*edit)(json_t *))
{
    json_t *d = parse(decl_text);
    edit(d);
    char *t = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    char path[KEEL_PATH_MAX];
    path_in(path, fx->root, "edited.json");
    text_file_write(path, t);
    free(t);
    return keel_privacy_declaration_load(path, NULL);
}

static json_t *cat(json_t *d, size_t i)
{
    return json_array_get(json_object_get(d, "categories"), i);
}

static void e_unknown(json_t *d) { json_object_set_new(cat(d, 1), "retention_day", json_integer(3)); }
static void e_type(json_t *d) { json_object_set_new(cat(d, 0), "personal", json_string("yes")); }
static void e_undeclared(json_t *d)
{
    json_object_set_new(json_array_get(json_object_get(d, "telemetry"), 1), "category", json_string("presence"));
}
static void e_missing(json_t *d) { json_object_del(cat(d, 0), "legal_basis"); }
static void e_basis(json_t *d) { json_object_set_new(cat(d, 0), "legal_basis", json_string("because")); }
static void e_dup(json_t *d)
{
    json_object_set_new(json_array_get(json_object_get(d, "telemetry"), 1), "field", json_string("temperature"));
}
static void e_sensitive(json_t *d) { json_object_set_new(cat(d, 1), "sensitive", json_true()); }
static void e_retention(json_t *d) { json_object_set_new(cat(d, 0), "retention_days", json_integer(0)); }
static void e_format(json_t *d) { json_object_set_new(d, "format", json_string("keel-declaration-9")); }
static void e_ftype(json_t *d)
{
    json_object_set_new(json_array_get(json_object_get(d, "telemetry"), 0), "type", json_string("float"));
}
static void e_toomany(json_t *d)
{
    json_t *r = json_object_get(cat(d, 0), "recipients");
    for (int i = 0; i < KEEL_PRIVACY_RECIPIENTS_MAX; i++)
        json_array_append_new(r, json_string("another"));
}
static void e_control(json_t *d) { json_object_set_new(d, "product", json_string("Thermo\nOne")); }

static void expect_decl_error(fx_t *fx, void (*edit)(json_t *), const char *path_part)
{
    keel_status_t st = load_edited(fx, edit);
    if (st != KEEL_ERR_FORMAT || strstr(keel_error_message(), path_part) == NULL)
        fail_msg("expected a format error naming '%s', got %s: %s", path_part, keel_status_str(st),
                 keel_error_message());
}

static void test_declaration_errors(void **state)
{
    fx_t *fx = *state;
    expect_decl_error(fx, e_unknown, "$.categories[1].retention_day: unknown key");
    expect_decl_error(fx, e_type, "$.categories[0].personal: must be true or false");
    expect_decl_error(fx, e_undeclared, "$.telemetry[1].category: names the undeclared category 'presence'");
    expect_decl_error(fx, e_missing, "$.categories[0].legal_basis: is missing");
    expect_decl_error(fx, e_basis, "$.categories[0].legal_basis");
    expect_decl_error(fx, e_dup, "repeats the field 'temperature'");
    expect_decl_error(fx, e_sensitive, "$.categories[1].sensitive");
    expect_decl_error(fx, e_retention, "$.categories[0].retention_days");
    expect_decl_error(fx, e_format, "$.format");
    expect_decl_error(fx, e_ftype, "$.telemetry[0].type");
    expect_decl_error(fx, e_toomany, "$.categories[0].recipients: has more than 16");
    expect_decl_error(fx, e_control, "$.product");

    /* Duplicate keys and oversized files are refused before the checks. */
    char path[KEEL_PATH_MAX];
    path_in(path, fx->root, "dup.json");
    text_file_write(path, "{\"format\":\"keel-declaration-1\",\"format\":\"keel-declaration-1\"}");
    assert_int_equal(keel_privacy_declaration_load(path, NULL), KEEL_ERR_FORMAT);
    char *big = malloc(KEEL_PRIVACY_DECL_MAX + 2);
    assert_non_null(big);
    memset(big, ' ', KEEL_PRIVACY_DECL_MAX + 1);
    big[KEEL_PRIVACY_DECL_MAX + 1] = '\0';
    text_file_write(path, big);
    free(big);
    assert_int_equal(keel_privacy_declaration_load(path, NULL), KEEL_ERR_TOO_LARGE);
    /* The embedded form (a product file) names its own root. */
    json_t *d = parse(decl_text);
    json_object_set_new(d, "extra", json_true());
    assert_int_equal(keel_privacy_declaration_check(d, "$.declaration"), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "$.declaration.extra"));
    json_decref(d);
    /* And the good one loads. */
    json_t *ok = NULL;
    assert_int_equal(keel_privacy_declaration_load(fx->decl, &ok), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(ok, "product")), "Thermo One");
    json_decref(ok);
}

static void test_telemetry(void **state)
{
    fx_t *fx = *state;
    json_t *w = NULL;
    /* Undeclared field: refused whole, the object untouched. */
    json_t *t = parse("{\"temperature\":21.5,\"gps\":\"52.1,4.3\"}");
    assert_int_equal(keel_privacy_telemetry_check(fx->p, t, &w), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "telemetry field 'gps' is not declared"));
    assert_null(w);
    assert_int_equal(json_object_size(t), 2);
    json_decref(t);
    /* Wrong types. */
    t = parse("{\"temperature\":\"warm\"}");
    assert_int_equal(keel_privacy_telemetry_check(fx->p, t, NULL), KEEL_ERR_FORMAT);
    json_decref(t);
    t = parse("{\"uptime\":1.5}");
    assert_int_equal(keel_privacy_telemetry_check(fx->p, t, NULL), KEEL_ERR_FORMAT);
    json_decref(t);
    t = parse("[1]");
    assert_int_equal(keel_privacy_telemetry_check(fx->p, t, NULL), KEEL_ERR_FORMAT);
    json_decref(t);
    /* An integer is a number. */
    t = parse("{\"temperature\":21,\"heating\":true,\"uptime\":7}");
    /* No consent yet: the climate fields are withheld, the rest goes. */
    assert_int_equal(keel_privacy_telemetry_check(fx->p, t, &w), KEEL_OK);
    assert_int_equal(json_array_size(w), 2);
    assert_int_equal(json_object_size(t), 1);
    assert_non_null(json_object_get(t, "uptime"));
    json_decref(w);
    json_decref(t);
    /* Consent given at the current version: everything goes. */
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", true, "2", "ui"), KEEL_OK);
    t = parse("{\"temperature\":21.5,\"heating\":false,\"uptime\":8}");
    assert_int_equal(keel_privacy_telemetry_check(fx->p, t, &w), KEEL_OK);
    assert_int_equal(json_array_size(w), 0);
    assert_int_equal(json_object_size(t), 3);
    json_decref(w);
    json_decref(t);
    /* Withdrawn: withheld again. */
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", false, "2", "app"), KEEL_OK);
    t = parse("{\"temperature\":21.5}");
    assert_int_equal(keel_privacy_telemetry_check(fx->p, t, &w), KEEL_OK);
    assert_int_equal(json_array_size(w), 1);
    assert_string_equal(json_string_value(json_array_get(w, 0)), "temperature");
    assert_int_equal(json_object_size(t), 0);
    json_decref(w);
    json_decref(t);
}

/* A declaration whose consent version moved on: consent given under the
 * old one no longer counts. */
static void test_consent_versions(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", true, "1", "ui"), KEEL_ERR_ARG);
    assert_int_equal(keel_privacy_consent_set(fx->p, "device-health", true, "2", "ui"), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_privacy_consent_set(fx->p, "nothing", true, "2", "ui"), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", true, "2", "UI!"), KEEL_ERR_ARG);
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", true, "2", "ui"), KEEL_OK);
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", false, "2", "api"), KEEL_OK);
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", true, "2", "app"), KEEL_OK);

    json_t *c = NULL;
    assert_int_equal(keel_privacy_consent_json(fx->p, &c), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(c, "consent_version")), "2");
    json_t *pur = json_object_get(c, "purposes");
    assert_int_equal(json_array_size(pur), 1);
    json_t *e = json_array_get(pur, 0);
    assert_string_equal(json_string_value(json_object_get(e, "purpose")), "climate");
    assert_true(json_is_true(json_object_get(e, "given")));
    assert_true(json_is_true(json_object_get(e, "current")));
    assert_string_equal(json_string_value(json_object_get(e, "version")), "2");
    assert_true(json_integer_value(json_object_get(e, "time")) > 0);
    json_t *log = json_object_get(c, "log");
    assert_int_equal(json_array_size(log), 3);
    /* Newest first, with where it came from. */
    assert_string_equal(json_string_value(json_object_get(json_array_get(log, 0), "via")), "app");
    assert_true(json_is_true(json_object_get(json_array_get(log, 0), "given")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(log, 1), "via")), "api");
    assert_true(json_is_false(json_object_get(json_array_get(log, 1), "given")));
    json_decref(c);

    /* A new declaration with consent_version 3: reopen; the old consent
     * is shown as given but not current, and telemetry is withheld. */
    json_t *d = parse(decl_text);
    json_object_set_new(d, "consent_version", json_string("3"));
    char *t = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    text_file_write(fx->decl, t);
    free(t);
    keel_privacy_close(fx->p);
    fx->p = NULL;
    assert_int_equal(keel_privacy_open(fx->v, fx->decl, &fx->p), KEEL_OK);
    assert_int_equal(keel_privacy_consent_json(fx->p, &c), KEEL_OK);
    e = json_array_get(json_object_get(c, "purposes"), 0);
    assert_true(json_is_true(json_object_get(e, "given")));
    assert_true(json_is_false(json_object_get(e, "current")));
    json_decref(c);
    json_t *tel = parse("{\"temperature\":20}"), *w = NULL;
    assert_int_equal(keel_privacy_telemetry_check(fx->p, tel, &w), KEEL_OK);
    assert_int_equal(json_array_size(w), 1);
    json_decref(w);
    json_decref(tel);
    /* The old version is refused, the new one accepted. */
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", true, "2", "ui"), KEEL_ERR_ARG);
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", true, "3", "ui"), KEEL_OK);
    tel = parse("{\"temperature\":20}");
    assert_int_equal(keel_privacy_telemetry_check(fx->p, tel, &w), KEEL_OK);
    assert_int_equal(json_array_size(w), 0);
    json_decref(w);
    json_decref(tel);
}

static json_t *export_records(fx_t *fx)
{
    json_t *x = NULL;
    assert_int_equal(keel_privacy_export(fx->p, &x), KEEL_OK);
    json_t *r = json_incref(json_object_get(x, "records"));
    json_decref(x);
    return r;
}

/* Ages every record by `days` (the records' time is the device's clock;
 * retention is judged against the `now` it is given). */
static void test_retention(void **state)
{
    fx_t *fx = *state;
    json_t *d = parse("{\"t\":21.5}");
    assert_int_equal(keel_privacy_record(fx->p, "climate", d), KEEL_OK);
    assert_int_equal(keel_privacy_record(fx->p, "device-health", d), KEEL_OK);
    assert_int_equal(keel_privacy_record(fx->p, "presence", d), KEEL_ERR_NOT_FOUND);
    json_decref(d);
    int64_t now = (int64_t)time(NULL);
    uint64_t removed = 99;
    assert_int_equal(keel_privacy_retention_run(fx->p, now, &removed), KEEL_OK);
    assert_int_equal(removed, 0);
    /* 29 days on: both stay; 31 days: climate (30) goes; 91: device-health (90) too. */
    assert_int_equal(keel_privacy_retention_run(fx->p, now + 29 * DAY, &removed), KEEL_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(keel_privacy_retention_run(fx->p, now + 31 * DAY, &removed), KEEL_OK);
    assert_int_equal(removed, 1);
    json_t *r = export_records(fx);
    assert_int_equal(json_array_size(r), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "category")), "device-health");
    json_decref(r);
    assert_int_equal(keel_privacy_retention_run(fx->p, now + 91 * DAY, &removed), KEEL_OK);
    assert_int_equal(removed, 1);
    r = export_records(fx);
    assert_int_equal(json_array_size(r), 0);
    json_decref(r);

    /* A record of a category the declaration dropped goes at the next run. */
    sqlite3 *db = keel_vault_db(fx->v);
    d = parse("{\"t\":1}");
    assert_int_equal(keel_privacy_record(fx->p, "climate", d), KEEL_OK);
    json_decref(d);
    assert_int_equal(sqlite3_exec(db, "UPDATE privacy_records SET category = 'old'", NULL, NULL, NULL), SQLITE_OK);
    /* Retagged rows no longer match what was sealed: the export leaves them out. */
    json_t *x = NULL;
    assert_int_equal(keel_privacy_export(fx->p, &x), KEEL_OK);
    assert_int_equal(json_array_size(json_object_get(x, "records")), 0);
    assert_int_equal(json_integer_value(json_object_get(x, "unreadable_records")), 1);
    json_decref(x);
    assert_int_equal(keel_privacy_retention_run(fx->p, now, &removed), KEEL_OK);
    assert_int_equal(removed, 1);

    /* Oversized data is refused. */
    char *big = malloc(KEEL_PRIVACY_RECORD_MAX + 1);
    assert_non_null(big);
    memset(big, 'a', KEEL_PRIVACY_RECORD_MAX);
    big[KEEL_PRIVACY_RECORD_MAX] = '\0';
    d = json_string(big);
    free(big);
    assert_int_equal(keel_privacy_record(fx->p, "climate", d), KEEL_ERR_TOO_LARGE);
    json_decref(d);
}

/* Reads every regular file of `dir` (the database, its -wal and -shm, the
 * key file) and says whether `needle` occurs in any. */
static bool dir_contains(const char *dir, const char *needle)
{
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    struct dirent *e;
    bool found = false;
    size_t nlen = strlen(needle);
    while (!found && (e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[KEEL_PATH_MAX];
        path_in(path, dir, e->d_name);
        keel_buf_t b;
        if (keel_file_read(path, 64u * 1024 * 1024, &b) != KEEL_OK)
            continue;
        for (size_t i = 0; !found && b.len >= nlen && i <= b.len - nlen; i++)
            found = memcmp(b.data + i, needle, nlen) == 0;
        keel_buf_free(&b);
    }
    closedir(dp);
    return found;
}

static bool export_contains(fx_t *fx, const char *needle)
{
    json_t *x = NULL;
    assert_int_equal(keel_privacy_export(fx->p, &x), KEEL_OK);
    char *t = json_dumps(x, JSON_COMPACT);
    json_decref(x);
    bool found = strstr(t, needle) != NULL;
    free(t);
    return found;
}

static void test_export_erase(void **state)
{
    fx_t *fx = *state;
    static const char marker_rec[] = "MARKER-record-6b1f";
    static const char marker_health[] = "MARKER-health-93c2";
    static const char marker_secret[] = "MARKER-secret-55aa";
    json_t *d = json_pack("{s:s,s:f}", "note", marker_rec, "t", 21.5);
    assert_int_equal(keel_privacy_record(fx->p, "climate", d), KEEL_OK);
    json_decref(d);
    d = json_string(marker_health);
    assert_int_equal(keel_privacy_record(fx->p, "device-health", d), KEEL_OK);
    json_decref(d);
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", true, "2", "ui"), KEEL_OK);
    assert_int_equal(keel_vault_secret_put(fx->v, "app.state", marker_secret, strlen(marker_secret)), KEEL_OK);
    char req[33];
    assert_int_equal(keel_privacy_erase_request(fx->p, req), KEEL_OK);
    assert_int_equal(strlen(req), 32);

    /* The export holds every store of the module. */
    json_t *x = NULL;
    assert_int_equal(keel_privacy_export(fx->p, &x), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(json_object_get(x, "declaration"), "product")), "Thermo One");
    assert_int_equal(json_array_size(json_object_get(json_object_get(x, "consent"), "log")), 1);
    assert_int_equal(json_array_size(json_object_get(x, "records")), 2);
    json_t *er = json_object_get(x, "erase_requests");
    assert_int_equal(json_array_size(er), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(er, 0), "id")), req);
    assert_true(json_is_null(json_object_get(json_array_get(er, 0), "confirmed")));
    json_decref(x);
    assert_true(export_contains(fx, marker_rec));
    assert_true(export_contains(fx, marker_health));
    /* Sealed: no marker is in any file even before the erase. */
    assert_false(dir_contains(fx->vault_dir, marker_rec));
    assert_false(dir_contains(fx->vault_dir, marker_health));
    assert_false(dir_contains(fx->vault_dir, marker_secret));
    /* The scan itself works: a plaintext marker is found. */
    assert_int_equal(sqlite3_exec(keel_vault_db(fx->v), "CREATE TABLE probe(x TEXT);"
                                  "INSERT INTO probe VALUES ('MARKER-probe-plain')", NULL, NULL, NULL), SQLITE_OK);
    assert_true(dir_contains(fx->vault_dir, "MARKER-probe-plain"));

    /* The factory reset: the vault is crypto-erased, the request survives. */
    assert_int_equal(keel_vault_erase(fx->v), KEEL_OK);
    assert_int_equal(keel_privacy_reload(fx->p), KEEL_OK);
    x = NULL;
    assert_int_equal(keel_privacy_export(fx->p, &x), KEEL_OK);
    assert_int_equal(json_array_size(json_object_get(x, "records")), 0);
    assert_int_equal(json_array_size(json_object_get(json_object_get(x, "consent"), "log")), 0);
    json_t *pur = json_array_get(json_object_get(json_object_get(x, "consent"), "purposes"), 0);
    assert_true(json_is_false(json_object_get(pur, "given")));
    assert_true(json_is_false(json_object_get(pur, "current")));
    json_decref(x);
    json_t *tel = parse("{\"temperature\":20}"), *w = NULL;
    assert_int_equal(keel_privacy_telemetry_check(fx->p, tel, &w), KEEL_OK);
    assert_int_equal(json_array_size(w), 1); /* consent went with the reset */
    json_decref(w);
    json_decref(tel);
    assert_false(dir_contains(fx->vault_dir, marker_rec));
    assert_false(dir_contains(fx->vault_dir, marker_health));
    assert_false(dir_contains(fx->vault_dir, marker_secret));

    /* The fleet's receipt. */
    json_t *bad = parse("{\"id\":\"0123\",\"erased\":true}");
    assert_int_equal(keel_privacy_erase_receipt(fx->p, bad), KEEL_ERR_FORMAT);
    json_decref(bad);
    bad = json_pack("{s:s,s:s}", "id", req, "erased", "yes");
    assert_int_equal(keel_privacy_erase_receipt(fx->p, bad), KEEL_ERR_FORMAT);
    json_decref(bad);
    bad = parse("{\"id\":\"00000000000000000000000000000000\",\"erased\":true}");
    assert_int_equal(keel_privacy_erase_receipt(fx->p, bad), KEEL_ERR_NOT_FOUND);
    json_decref(bad);
    char *pad = malloc(KEEL_PRIVACY_RECEIPT_MAX + 1);
    assert_non_null(pad);
    memset(pad, 'x', KEEL_PRIVACY_RECEIPT_MAX);
    pad[KEEL_PRIVACY_RECEIPT_MAX] = '\0';
    bad = json_pack("{s:s,s:b,s:s}", "id", req, "erased", 1, "pad", pad);
    free(pad);
    assert_int_equal(keel_privacy_erase_receipt(fx->p, bad), KEEL_ERR_TOO_LARGE);
    json_decref(bad);
    json_t *rc = json_pack("{s:s,s:b,s:s}", "id", req, "erased", 1, "by", "fleet-1");
    assert_int_equal(keel_privacy_erase_receipt(fx->p, rc), KEEL_OK);
    json_decref(rc);
    /* A replay saying otherwise changes nothing. */
    rc = json_pack("{s:s,s:b}", "id", req, "erased", 0);
    assert_int_equal(keel_privacy_erase_receipt(fx->p, rc), KEEL_OK);
    json_decref(rc);
    json_t *s = NULL;
    assert_int_equal(keel_privacy_erase_status(fx->p, &s), KEEL_OK);
    assert_int_equal(json_array_size(s), 1);
    json_t *e = json_array_get(s, 0);
    assert_true(json_integer_value(json_object_get(e, "confirmed")) > 0);
    assert_true(json_is_true(json_object_get(json_object_get(e, "receipt"), "erased")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "receipt"), "by")), "fleet-1");
    json_decref(s);

    /* Requests are capped; the newest are kept. */
    for (int i = 0; i < KEEL_PRIVACY_ERASE_KEEP + 3; i++)
        assert_int_equal(keel_privacy_erase_request(fx->p, req), KEEL_OK);
    assert_int_equal(keel_privacy_erase_status(fx->p, &s), KEEL_OK);
    assert_int_equal(json_array_size(s), KEEL_PRIVACY_ERASE_KEEP);
    json_decref(s);
}

/* A device that declares nothing sends no telemetry and has no consent. */
static void test_no_declaration(void **state)
{
    fx_t *fx = *state;
    keel_privacy_t *p = NULL;
    assert_int_equal(keel_privacy_open(fx->v, NULL, &p), KEEL_OK);
    assert_null(keel_privacy_declaration(p));
    json_t *t = parse("{\"temperature\":20}");
    assert_int_equal(keel_privacy_telemetry_check(p, t, NULL), KEEL_ERR_FORMAT);
    json_decref(t);
    t = json_object();
    assert_int_equal(keel_privacy_telemetry_check(p, t, NULL), KEEL_OK);
    json_decref(t);
    assert_int_equal(keel_privacy_consent_set(p, "climate", true, "2", "ui"), KEEL_ERR_NOT_FOUND);
    json_t *x = NULL;
    assert_int_equal(keel_privacy_export(p, &x), KEEL_OK);
    assert_true(json_is_null(json_object_get(x, "declaration")));
    json_decref(x);
    keel_privacy_close(p);
    /* A missing declaration file is an error, not an empty declaration. */
    char path[KEEL_PATH_MAX];
    path_in(path, fx->root, "absent.json");
    assert_int_equal(keel_privacy_open(fx->v, path, &p), KEEL_ERR_NOT_FOUND);
    assert_null(p);
}

/* A RELEASE that fails (here a deferred constraint a test trigger leaves,
 * as a full disk would at commit) must not leave the savepoint open: every
 * later write of keeld would nest in it and be lost (review). */
static void test_failed_commit_closes(void **state)
{
    fx_t *fx = *state;
    sqlite3 *db = keel_vault_db(fx->v);
    assert_int_equal(sqlite3_exec(db, "PRAGMA foreign_keys = ON;"
                                      "CREATE TEMP TABLE parent(id INTEGER PRIMARY KEY);"
                                      "CREATE TEMP TABLE child(p INTEGER REFERENCES parent(id)"
                                      " DEFERRABLE INITIALLY DEFERRED);"
                                      "CREATE TEMP TRIGGER fail_rec AFTER INSERT ON main.privacy_records"
                                      " BEGIN INSERT INTO child VALUES (42); END;"
                                      "CREATE TEMP TRIGGER fail_log AFTER INSERT ON main.consent_log"
                                      " BEGIN INSERT INTO child VALUES (42); END;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    json_t *d = json_pack("{s:f}", "temperature", 20.5);
    assert_int_not_equal(keel_privacy_record(fx->p, "climate", d), KEEL_OK);
    assert_int_equal(sqlite3_get_autocommit(db), 1);
    assert_int_not_equal(keel_privacy_consent_set(fx->p, "climate", true, "2", "ui"), KEEL_OK);
    assert_int_equal(sqlite3_get_autocommit(db), 1);
    /* Nothing of the failed writes stayed, and the consent cache did not move. */
    json_t *w = NULL, *t = parse("{\"temperature\":20}");
    assert_int_equal(keel_privacy_telemetry_check(fx->p, t, &w), KEEL_OK);
    assert_int_equal(json_array_size(w), 1);
    json_decref(w);
    json_decref(t);
    assert_int_equal(sqlite3_exec(db, "DROP TRIGGER fail_rec; DROP TRIGGER fail_log;", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(keel_privacy_record(fx->p, "climate", d), KEEL_OK);
    json_decref(d);
    assert_int_equal(sqlite3_get_autocommit(db), 1);
    /* Durable: another connection sees exactly the one good record. */
    char path[KEEL_PATH_MAX];
    assert_non_null(sqlite3_db_filename(db, "main"));
    assert_int_equal(keel_strlcpy(path, sqlite3_db_filename(db, "main"), sizeof path), KEEL_OK);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open_v2(path, &other, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(other, "SELECT COUNT(*) FROM privacy_records", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    sqlite3_close(other);
}

/* One damaged row (a record or a consent log entry that no longer opens,
 * or a record retagged to another category) is left out and counted; the
 * owner still gets the rest of the export and the consent page (review). */
static void test_damaged_rows(void **state)
{
    fx_t *fx = *state;
    sqlite3 *db = keel_vault_db(fx->v);
    for (int i = 0; i < 3; i++) {
        json_t *d = json_pack("{s:i}", "n", i);
        assert_int_equal(keel_privacy_record(fx->p, "climate", d), KEEL_OK);
        json_decref(d);
    }
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", true, "2", "ui"), KEEL_OK);
    assert_int_equal(keel_privacy_consent_set(fx->p, "climate", false, "2", "api"), KEEL_OK);
    /* Damage a record's seal and the older log entry's; retag another record. */
    assert_int_equal(sqlite3_exec(db, "UPDATE privacy_records SET data = zeroblob(length(data)) WHERE id = 1;"
                                      "UPDATE privacy_records SET category = 'device-health' WHERE id = 2;"
                                      "UPDATE consent_log SET record = zeroblob(length(record)) WHERE id = 1;",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    json_t *x = NULL;
    assert_int_equal(keel_privacy_export(fx->p, &x), KEEL_OK);
    json_t *rec = json_object_get(x, "records");
    assert_int_equal(json_array_size(rec), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(rec, 0), "id")), 3);
    assert_int_equal(json_integer_value(json_object_get(x, "unreadable_records")), 2);
    json_t *log = json_object_get(json_object_get(x, "consent"), "log");
    assert_int_equal(json_array_size(log), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(log, 0), "via")), "api");
    json_decref(x);
    json_t *c = NULL;
    assert_int_equal(keel_privacy_consent_json(fx->p, &c), KEEL_OK);
    json_decref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_declaration_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_telemetry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consent_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export_erase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_declaration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_rows, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

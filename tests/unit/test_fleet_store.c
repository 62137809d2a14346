/*
 * Unit tests for the fleet's database layer (fleet_db.h) and store
 * (fleet_store.h). Every test runs against SQLite (a temp file) and, when
 * KEEL_TEST_PG_URL names a PostgreSQL database (tests/integration/pg_lib.sh
 * starts one), against PostgreSQL too: the same bodies, a fixture per
 * driver. Each group prints "fleet_store: <driver>: N tests passed" so the
 * integration test can tell the PostgreSQL cases ran.
 *
 *   test_fleet_store --bench URL   times 100k ingests in batches of 500, then 100k as keel-fleetd
 *                                  stores them (not a test)
 */
#include "testutil.h"

#include "fleet/db_internal.h"
#include "keel/crypto.h"
#include "keel/fleet_db.h"
#include "keel/fleet_store.h"
#include "keel/identity.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#define DAY 86400
#define T0 1763800000

static const char *g_driver; /* "sqlite" or "postgresql" */
static const char *g_pg_url;

typedef struct {
    char *dir;
    char url[KEEL_FLEET_DB_URL_MAX + 1];
    keel_fleet_db_t *db;
} fx_t;

/* ---- fixtures ------------------------------------------------------------------------------- */

static keel_status_t pg_reset(const char *url)
{
    keel_fleet_db_t *db = NULL;
    keel_status_t st = keel_fleet_db_open(url, &db);
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db, "DROP SCHEMA public CASCADE", NULL, 0, NULL, NULL, NULL);
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db, "CREATE SCHEMA public", NULL, 0, NULL, NULL, NULL);
    keel_fleet_db_close(db);
    return st;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    if (strcmp(g_driver, "sqlite") == 0) {
        fx->dir = tmpdir_new();
        snprintf(fx->url, sizeof fx->url, "sqlite:%s/fleet.db", fx->dir);
    } else {
        snprintf(fx->url, sizeof fx->url, "%s", g_pg_url);
        if (pg_reset(fx->url) != KEEL_OK) {
            fprintf(stderr, "pg reset: %s\n", keel_error_message());
            free(fx);
            return -1;
        }
    }
    if (keel_fleet_db_open(fx->url, &fx->db) != KEEL_OK) {
        fprintf(stderr, "open: %s\n", keel_error_message());
        if (fx->dir != NULL)
            tmpdir_free(fx->dir);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    keel_fleet_db_close(fx->db);
    if (fx->dir != NULL)
        tmpdir_free(fx->dir);
    free(fx);
    return 0;
}

static int64_t q_int(keel_fleet_db_t *db, const char *sql, const char *arg)
{
    int64_t v = -1;
    keel_fleet_val_t p[] = {KEEL_FV_S(arg)};
    keel_status_t st = keel_fleet_db_int(db, sql, p, arg != NULL ? 1 : 0, &v);
    if (st != KEEL_OK)
        fprintf(stderr, "%s: %s\n", sql, keel_error_message());
    assert_int_equal(st, KEEL_OK);
    return v;
}

/* ---- devices with real certificates ---------------------------------------------------------- */

typedef struct {
    EVP_PKEY *key;
    char id[KEEL_DEVICE_ID_LEN + 1];
    char serial[16];
    char *pem;
    char fp[KEEL_FINGERPRINT_LEN];
} tdev_t;

/* A self-signed certificate for d's key, CN = d->id, the given serial. */
static void cert_make(tdev_t *d, long serial)
{
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), DAY));
    X509_NAME *n = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)d->id, -1, -1, 0), 1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    assert_int_equal(X509_set_pubkey(x, d->key), 1);
    assert_true(X509_sign(x, d->key, EVP_sha256()) > 0);
    assert_int_equal(keel_identity_fingerprint(x, d->fp), KEEL_OK);
    BIO *b = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_X509(b, x), 1);
    char *p = NULL;
    long len = BIO_get_mem_data(b, &p);
    free(d->pem);
    d->pem = strndup(p, (size_t)len);
    BIO_free(b);
    X509_free(x);
}

static void tdev_new(tdev_t *d, const char *serial)
{
    memset(d, 0, sizeof *d);
    d->key = EVP_EC_gen("P-256");
    assert_non_null(d->key);
    assert_int_equal(keel_identity_device_id(d->key, d->id), KEEL_OK);
    snprintf(d->serial, sizeof d->serial, "%s", serial);
    cert_make(d, 0x1000 + (long)(serial[strlen(serial) - 1]));
}

static void tdev_free(tdev_t *d)
{
    EVP_PKEY_free(d->key);
    free(d->pem);
}

static json_t *dev_json(const tdev_t *d, const char *model)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "id", d->id, "serial", d->serial, "model",
                          model, "org", "Acme", "keystore", "file", "key_label", "device", "cert_sha256", d->fp,
                          "provisioned", (json_int_t)T0, "certificate", d->pem);
    assert_non_null(j);
    return j;
}

/* A manifest of the n devices (all model M1 unless models is given). */
static json_t *manifest(const tdev_t *const *devs, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        assert_int_equal(json_array_append_new(arr, dev_json(devs[i], "M1")), 0);
    json_t *m = json_pack("{s:s, s:s, s:I, s:o}", "format", "keel-manifest-1", "org", "Acme", "generated",
                          (json_int_t)T0, "devices", arr);
    assert_non_null(m);
    return m;
}

static void import_ok(keel_fleet_db_t *db, const tdev_t *const *devs, size_t n, uint64_t added)
{
    json_t *m = manifest(devs, n);
    keel_fleet_import_stats_t s;
    keel_status_t st = keel_fleet_import_manifest(db, m, T0, &s);
    if (st != KEEL_OK)
        fprintf(stderr, "import: %s\n", keel_error_message());
    assert_int_equal(st, KEEL_OK);
    assert_int_equal(s.added, added);
    json_decref(m);
}

/* One registered device, d. */
static void one_device(keel_fleet_db_t *db, tdev_t *d)
{
    tdev_new(d, "SER0001");
    const tdev_t *v[] = {d};
    import_ok(db, v, 1, 1);
}

/* Two registered devices, a and b. */
static void two_devices(keel_fleet_db_t *db, tdev_t *a, tdev_t *b)
{
    tdev_new(a, "SER0001");
    tdev_new(b, "SER0002");
    const tdev_t *both[] = {a, b};
    import_ok(db, both, 2, 2);
}

static keel_fleet_ingest_result_t ingest(keel_fleet_db_t *db, const char *dev, uint64_t seq, int64_t received,
                                         uint64_t dropped)
{
    char body[64];
    snprintf(body, sizeof body, "{\"n\":%llu}", (unsigned long long)seq);
    keel_fleet_msg_t m = {.device = dev, .seq = seq, .ts = received - 1, .received = received, .kind = "telemetry",
                          .body = body, .body_len = strlen(body), .dropped = dropped};
    keel_fleet_ingest_result_t r;
    keel_status_t st = keel_fleet_ingest(db, &m, &r);
    if (st != KEEL_OK)
        fprintf(stderr, "ingest: %s\n", keel_error_message());
    assert_int_equal(st, KEEL_OK);
    return r;
}

/* ---- the database layer --------------------------------------------------------------------------- */

static void test_migrations(void **state)
{
    fx_t *fx = *state;
    int latest = keel_fleet_schema_latest();
    assert_true(latest >= 1);
    assert_int_equal(keel_fleet_db_schema_version(fx->db), latest);
    assert_string_equal(keel_fleet_db_driver_name(fx->db), g_driver);
    assert_int_equal(q_int(fx->db, "SELECT COUNT(*) FROM schema_version", NULL), latest);
    /* Re-open: nothing to do, nothing lost. */
    tdev_t d;
    one_device(fx->db, &d);
    keel_fleet_db_close(fx->db);
    assert_int_equal(keel_fleet_db_open(fx->url, &fx->db), KEEL_OK);
    assert_int_equal(keel_fleet_db_schema_version(fx->db), latest);
    assert_int_equal(q_int(fx->db, "SELECT COUNT(*) FROM schema_version", NULL), latest);
    assert_int_equal(q_int(fx->db, "SELECT COUNT(*) FROM devices", NULL), 1);
    /* A database from a newer build is refused, and left as it was. A
     * second handle, opened before, puts it back for the teardown. */
    keel_fleet_db_t *other = NULL;
    assert_int_equal(keel_fleet_db_open(fx->url, &other), KEEL_OK);
    keel_fleet_val_t p[] = {KEEL_FV_I(latest + 1), KEEL_FV_I(T0)};
    assert_int_equal(keel_fleet_db_exec(fx->db, "INSERT INTO schema_version (version, applied) VALUES ($1, $2)", p, 2,
                                        NULL, NULL, NULL),
                     KEEL_OK);
    keel_fleet_db_close(fx->db);
    fx->db = NULL;
    assert_int_equal(keel_fleet_db_open(fx->url, &fx->db), KEEL_ERR_FORMAT);
    assert_null(fx->db);
    assert_non_null(strstr(keel_error_message(), "newer"));
    assert_int_equal(q_int(other, "SELECT COUNT(*) FROM devices", NULL), 1);
    assert_int_equal(keel_fleet_db_exec(other, "DELETE FROM schema_version WHERE version = $1", p, 1, NULL, NULL, NULL),
                     KEEL_OK);
    keel_fleet_db_close(other);
    assert_int_equal(keel_fleet_db_open(fx->url, &fx->db), KEEL_OK);
    keel_fleet_db_t *none = NULL;
    assert_int_equal(keel_fleet_db_open("sqlite:/nonexistent-dir/fleet.db", &none), KEEL_ERR_IO);
    assert_int_equal(keel_fleet_db_open("postgresql://u:topsecretpw@127.0.0.1:1/x?connect_timeout=2", &none),
                     KEEL_ERR_DB);
    assert_null(strstr(keel_error_message(), "topsecretpw"));
    tdev_free(&d);
}

/* A store at version 1 (messages with its first kind check) comes up to
 * date on open, its messages kept, the check still refusing a bad kind. */
static void test_migration_v2(void **state)
{
    fx_t *fx = *state;
    tdev_t d;
    one_device(fx->db, &d);
    static const char *const v1[] = {
        "DROP TABLE messages",
        "CREATE TABLE messages (device TEXT NOT NULL, seq BIGINT NOT NULL, ts BIGINT NOT NULL,"
        " received BIGINT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('telemetry', 'event', 'alert')),"
        " body TEXT NOT NULL, bytes BIGINT NOT NULL, PRIMARY KEY (device, seq))",
        "CREATE INDEX messages_received ON messages (received)",
        "DELETE FROM schema_version WHERE version >= 2",
    };
    for (size_t i = 0; i < sizeof v1 / sizeof v1[0]; i++)
        assert_int_equal(keel_fleet_db_exec(fx->db, v1[i], NULL, 0, NULL, NULL, NULL), KEEL_OK);
    ingest(fx->db, d.id, 1, T0, 0);
    ingest(fx->db, d.id, 3, T0 + 1, 0);
    keel_fleet_db_close(fx->db);
    fx->db = NULL;
    assert_int_equal(keel_fleet_db_open(fx->url, &fx->db), KEEL_OK);
    assert_int_equal(keel_fleet_db_schema_version(fx->db), keel_fleet_schema_latest());
    assert_int_equal(q_int(fx->db, "SELECT COUNT(*) FROM messages WHERE device = $1", d.id), 2);
    keel_fleet_seq_stats_t s;
    assert_int_equal(keel_fleet_seq_stats(fx->db, d.id, &s), KEEL_OK);
    assert_int_equal(s.open_gaps, 1);
    keel_fleet_val_t p[] = {KEEL_FV_S(d.id)};
    assert_int_equal(keel_fleet_db_exec(fx->db,
                                        "INSERT INTO messages (device, seq, ts, received, kind, body, bytes) "
                                        "VALUES ($1, 9, 0, 0, 'other', '{}', 2)",
                                        p, 1, NULL, NULL, NULL),
                     KEEL_ERR_DB);
    keel_error_clear();
    assert_int_equal(ingest(fx->db, d.id, 2, T0 + 2, 0).filled_gap, true);
    tdev_free(&d);
}

static void test_sqlite_file_mode(void **state)
{
    fx_t *fx = *state;
    if (fx->dir == NULL)
        skip();
    char path[KEEL_PATH_MAX];
    path_in(path, fx->dir, "fleet.db");
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* WAL: the -wal file exists beside it, with the same mode. */
    char wal[KEEL_PATH_MAX + 8];
    snprintf(wal, sizeof wal, "%s-wal", path);
    assert_int_equal(stat(wal, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
}

static void test_placeholders(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    int64_t v = 0;
    keel_fleet_val_t p[] = {KEEL_FV_I(7), KEEL_FV_I(30)};
    /* Out of order and repeated. */
    assert_int_equal(keel_fleet_db_int(db, "SELECT $2 - $1 + $1 * 0", p, 2, &v), KEEL_OK);
    assert_int_equal(v, 23);
    /* A $ inside a literal or a comment is no placeholder. */
    keel_fleet_val_t one[] = {KEEL_FV_I(1)};
    assert_int_equal(keel_fleet_db_int(db, "SELECT LENGTH('$9 ''$8''') + $1 -- $7\n", one, 1, &v), KEEL_OK);
    assert_int_equal(v, 7 + 1); /* $9 '$8' */
    /* Counts must match; $0, a bare $ and ? are refused before the server sees them. */
    assert_int_equal(keel_fleet_db_int(db, "SELECT $1 + $2", one, 1, &v), KEEL_ERR_ARG);
    assert_int_equal(keel_fleet_db_int(db, "SELECT $1", p, 2, &v), KEEL_ERR_ARG);
    assert_int_equal(keel_fleet_db_int(db, "SELECT $0", NULL, 0, &v), KEEL_ERR_ARG);
    assert_int_equal(keel_fleet_db_int(db, "SELECT $17", NULL, 0, &v), KEEL_ERR_ARG);
    assert_int_equal(keel_fleet_db_int(db, "SELECT ?", one, 1, &v), KEEL_ERR_ARG);
    /* Text: UTF-8 without NUL only (PostgreSQL would abort the transaction). */
    keel_fleet_val_t bad[] = {KEEL_FV_SN("a\xff", 2)};
    assert_int_equal(keel_fleet_db_int(db, "SELECT LENGTH($1)", bad, 1, &v), KEEL_ERR_FORMAT);
    keel_fleet_val_t nul[] = {KEEL_FV_SN("a\0b", 3)};
    assert_int_equal(keel_fleet_db_int(db, "SELECT LENGTH($1)", nul, 1, &v), KEEL_ERR_FORMAT);
    keel_fleet_val_t utf[] = {KEEL_FV_S("h\xc3\xa9!")};
    assert_int_equal(keel_fleet_db_int(db, "SELECT LENGTH($1)", utf, 1, &v), KEEL_OK);
    assert_int_equal(v, 3);
    /* Not NUL-terminated at len: only len bytes are sent. */
    keel_fleet_val_t part[] = {KEEL_FV_SN("abcdef", 3)};
    assert_int_equal(keel_fleet_db_int(db, "SELECT LENGTH($1)", part, 1, &v), KEEL_OK);
    assert_int_equal(v, 3);
    /* NULL in and out. */
    keel_fleet_val_t n[] = {KEEL_FV_NUL};
    assert_int_equal(keel_fleet_db_int(db, "SELECT LENGTH($1)", n, 1, &v), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_fleet_db_int(db, "SELECT 1 WHERE 1 = 0", NULL, 0, &v), KEEL_ERR_NOT_FOUND);
    /* The same statement many times (the prepared cache) and nested in a row callback. */
    for (int i = 0; i < 50; i++) {
        keel_fleet_val_t k[] = {KEEL_FV_I(i)};
        assert_int_equal(keel_fleet_db_int(db, "SELECT $1 + 1", k, 1, &v), KEEL_OK);
        assert_int_equal(v, i + 1);
    }
}

static keel_status_t nested_row(void *arg, const keel_fleet_val_t *cols, unsigned n)
{
    keel_fleet_db_t *db = arg;
    int64_t v = 0;
    assert_int_equal(n, 1);
    keel_fleet_val_t k[] = {KEEL_FV_I(cols[0].i)};
    /* The statement that is running, again: it gets its own. */
    assert_int_equal(keel_fleet_db_int(db, "SELECT k FROM scratch WHERE k >= $1 ORDER BY k", k, 1, &v), KEEL_OK);
    assert_int_equal(v, cols[0].i);
    return KEEL_OK;
}

static void test_exists_and_tx(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    assert_int_equal(keel_fleet_db_exec(db, "CREATE TABLE scratch (k BIGINT PRIMARY KEY, v TEXT UNIQUE)", NULL, 0,
                                        NULL, NULL, NULL),
                     KEEL_OK);
    keel_fleet_val_t a[] = {KEEL_FV_I(1), KEEL_FV_S("one")};
    keel_fleet_val_t b[] = {KEEL_FV_I(2), KEEL_FV_S("one")};
    uint64_t changed = 0;
    assert_int_equal(keel_fleet_db_exec(db, "INSERT INTO scratch (k, v) VALUES ($1, $2)", a, 2, NULL, NULL, &changed),
                     KEEL_OK);
    assert_int_equal(changed, 1);
    assert_int_equal(keel_fleet_db_exec(db, "INSERT INTO scratch (k, v) VALUES ($1, $2)", a, 2, NULL, NULL, NULL),
                     KEEL_ERR_EXISTS);
    assert_int_equal(keel_fleet_db_exec(db, "INSERT INTO scratch (k, v) VALUES ($1, $2)", b, 2, NULL, NULL, NULL),
                     KEEL_ERR_EXISTS);
    assert_int_equal(keel_fleet_db_exec(db, "INSERT INTO scratch (k, v) VALUES ($1, $2) ON CONFLICT DO NOTHING", b, 2,
                                        NULL, NULL, &changed),
                     KEEL_OK);
    assert_int_equal(changed, 0);
    assert_int_equal(keel_fleet_db_exec(db, "SELECT k FROM scratch", NULL, 0, NULL, NULL, &changed), KEEL_OK);
    assert_int_equal(changed, 0);

    /* Rollback undoes; a failed statement inside leaves a transaction that rolls back cleanly. */
    assert_false(keel_fleet_db_in_tx(db));
    assert_int_equal(keel_fleet_db_begin(db), KEEL_OK);
    assert_true(keel_fleet_db_in_tx(db));
    assert_int_equal(keel_fleet_db_begin(db), KEEL_ERR_ARG);
    keel_fleet_val_t c[] = {KEEL_FV_I(3), KEEL_FV_S("three")};
    assert_int_equal(keel_fleet_db_exec(db, "INSERT INTO scratch (k, v) VALUES ($1, $2)", c, 2, NULL, NULL, NULL),
                     KEEL_OK);
    assert_int_equal(keel_fleet_db_exec(db, "INSERT INTO scratch (k, v) VALUES ($1, $2)", a, 2, NULL, NULL, NULL),
                     KEEL_ERR_EXISTS);
    keel_fleet_db_rollback(db);
    assert_false(keel_fleet_db_in_tx(db));
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM scratch", NULL), 1);
    assert_int_equal(keel_fleet_db_commit(db), KEEL_ERR_ARG);
    keel_fleet_db_rollback(db); /* none open: nothing */

    assert_int_equal(keel_fleet_db_begin(db), KEEL_OK);
    assert_int_equal(keel_fleet_db_exec(db, "INSERT INTO scratch (k, v) VALUES ($1, $2)", c, 2, NULL, NULL, NULL),
                     KEEL_OK);
    assert_int_equal(keel_fleet_db_commit(db), KEEL_OK);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM scratch", NULL), 2);
    keel_fleet_val_t z[] = {KEEL_FV_I(0)};
    assert_int_equal(keel_fleet_db_exec(db, "SELECT k FROM scratch WHERE k >= $1 ORDER BY k", z, 1, nested_row, db,
                                        NULL),
                     KEEL_OK);

    /* A second connection waits for the first's write transaction, then sees its commit. */
    keel_fleet_db_t *other = NULL;
    assert_int_equal(keel_fleet_db_open(((fx_t *)*state)->url, &other), KEEL_OK);
    assert_int_equal(q_int(other, "SELECT COUNT(*) FROM scratch", NULL), 2);
    keel_fleet_db_close(other);
}

/* ---- registry ----------------------------------------------------------------------------------------- */

static void test_import(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a, b;
    two_devices(db, &a, &b);
    const tdev_t *both[] = {&a, &b};

    keel_fleet_device_t d;
    assert_int_equal(keel_fleet_device_get(db, a.id, &d), KEEL_OK);
    assert_string_equal(d.id, a.id);
    assert_string_equal(d.serial, "SER0001");
    assert_string_equal(d.model, "M1");
    assert_int_equal(d.state, KEEL_FLEET_DEV_REGISTERED);
    assert_int_equal(d.registered, T0);
    assert_int_equal(d.first_seen, 0);
    assert_int_equal(d.security_version, -1);
    assert_string_equal(d.version, "");
    assert_int_equal(strlen(d.pseudonym), 32);
    assert_int_equal(strlen(d.cert_sha256), 64);
    /* The fingerprint, lower case without colons. */
    for (size_t i = 0; i < 32; i++) {
        assert_int_equal(d.cert_sha256[2 * i], tolower((unsigned char)a.fp[3 * i]));
        assert_int_equal(d.cert_sha256[2 * i + 1], tolower((unsigned char)a.fp[3 * i + 1]));
    }
    char want_serial[16];
    snprintf(want_serial, sizeof want_serial, "%04lX", 0x1000L + '1');
    assert_string_equal(d.cert_serial, want_serial);
    keel_fleet_device_t d2;
    assert_int_equal(keel_fleet_device_get(db, b.id, &d2), KEEL_OK);
    assert_string_not_equal(d.pseudonym, d2.pseudonym);
    keel_fleet_device_t none;
    assert_int_equal(keel_fleet_device_get(db, "aaaaaaaaaaaaaaaaaaaaaaaaaa", &none), KEEL_ERR_NOT_FOUND);

    /* The same manifest again: nothing changes. */
    json_t *m = manifest(both, 2);
    keel_fleet_import_stats_t s;
    assert_int_equal(keel_fleet_import_manifest(db, m, T0 + 5, &s), KEEL_OK);
    assert_int_equal(s.added, 0);
    assert_int_equal(s.unchanged, 2);
    json_decref(m);
    assert_int_equal(keel_fleet_device_get(db, a.id, &d2), KEEL_OK);
    assert_string_equal(d.pseudonym, d2.pseudonym);
    assert_int_equal(d2.registered, T0);

    /* A new device and a reissued certificate for a known id: all refused, nothing written. */
    tdev_t c;
    tdev_new(&c, "SER0003");
    cert_make(&a, 0x7777);
    const tdev_t *three[] = {&c, &a};
    m = manifest(three, 2);
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_ERR_EXISTS);
    assert_non_null(strstr(keel_error_message(), a.id));
    json_decref(m);
    assert_int_equal(keel_fleet_device_get(db, c.id, &d), KEEL_ERR_NOT_FOUND);
    /* A known serial under a new id: refused too. */
    snprintf(c.serial, sizeof c.serial, "SER0002");
    const tdev_t *dup[] = {&c};
    m = manifest(dup, 1);
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_ERR_EXISTS);
    json_decref(m);
    /* The same device twice in one manifest with different serials. */
    snprintf(c.serial, sizeof c.serial, "SER0003");
    tdev_t c2 = c;
    snprintf(c2.serial, sizeof c2.serial, "SER0004");
    const tdev_t *twice[] = {&c, &c2};
    m = manifest(twice, 2);
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_ERR_EXISTS);
    json_decref(m);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM devices", NULL), 2);

    /* Tampered cert_sha256, unknown fields, a wrong format: refused, nothing written. */
    const tdev_t *just_c[] = {&c};
    m = manifest(just_c, 1);
    json_t *dev = json_array_get(json_object_get(m, "devices"), 0);
    char fp[KEEL_FINGERPRINT_LEN];
    snprintf(fp, sizeof fp, "%s", c.fp);
    fp[0] = fp[0] == 'A' ? 'B' : 'A';
    assert_int_equal(json_object_set_new(dev, "cert_sha256", json_string(fp)), 0);
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_ERR_VERIFY);
    assert_int_equal(json_object_set_new(dev, "cert_sha256", json_string(c.fp)), 0);
    assert_int_equal(json_object_set_new(dev, "mac", json_string("00:11:22:33:44:55")), 0);
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "mac"));
    assert_int_equal(json_object_del(dev, "mac"), 0);
    assert_int_equal(json_object_set_new(m, "extra", json_true()), 0);
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_ERR_FORMAT);
    assert_int_equal(json_object_del(m, "extra"), 0);
    assert_int_equal(json_object_set_new(m, "format", json_string("keel-manifest-2")), 0);
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_ERR_FORMAT);
    assert_int_equal(json_object_set_new(m, "format", json_string("keel-manifest-1")), 0);
    /* The certificate of another device under this id. */
    assert_int_equal(json_object_set_new(dev, "certificate", json_string(b.pem)), 0);
    assert_int_equal(json_object_set_new(dev, "cert_sha256", json_string(b.fp)), 0);
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_ERR_VERIFY);
    assert_int_equal(json_object_set_new(dev, "certificate", json_string("-----BEGIN CERTIFICATE-----\nxx\n")), 0); /* secret-scan: allow */
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_ERR_FORMAT);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM devices", NULL), 2);
    /* Put right, it goes in, with the plain-hex fingerprint form too. */
    assert_int_equal(json_object_set_new(dev, "certificate", json_string(c.pem)), 0);
    char hex[65];
    for (size_t i = 0; i < 32; i++) {
        hex[2 * i] = c.fp[3 * i];
        hex[2 * i + 1] = c.fp[3 * i + 1];
    }
    hex[64] = '\0';
    assert_int_equal(json_object_set_new(dev, "cert_sha256", json_string(hex)), 0);
    assert_int_equal(keel_fleet_import_manifest(db, m, T0, &s), KEEL_OK);
    assert_int_equal(s.added, 1);
    json_decref(m);

    json_t *list = NULL;
    assert_int_equal(keel_fleet_device_list(db, NULL, &list), KEEL_OK);
    assert_int_equal(json_array_size(list), 3);
    assert_null(json_object_get(json_array_get(list, 0), "pseudonym"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "state")), "registered");
    assert_true(strcmp(json_string_value(json_object_get(json_array_get(list, 0), "id")),
                       json_string_value(json_object_get(json_array_get(list, 1), "id"))) < 0);
    json_decref(list);
    assert_int_equal(keel_fleet_device_list(db, "M2", &list), KEEL_OK);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    assert_int_equal(keel_fleet_device_page(db, "M1", NULL, 2, &list), KEEL_OK);
    assert_int_equal(json_array_size(list), 2);
    const char *after = json_string_value(json_object_get(json_array_get(list, 1), "id"));
    json_t *rest = NULL;
    assert_int_equal(keel_fleet_device_page(db, "M1", after, 2, &rest), KEEL_OK);
    assert_int_equal(json_array_size(rest), 1);
    json_decref(rest);
    json_decref(list);
    assert_int_equal(keel_fleet_device_page(db, NULL, NULL, 0, &list), KEEL_ERR_ARG);

    tdev_free(&a);
    tdev_free(&b);
    tdev_free(&c);
}

static void test_registry_ops(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a, b;
    two_devices(db, &a, &b);

    assert_int_equal(keel_fleet_device_report_version(db, a.id, "1.2.0", 3, T0), KEEL_OK);
    assert_int_equal(keel_fleet_device_report_version(db, a.id, "bad version", 3, T0), KEEL_ERR_ARG);
    keel_fleet_device_t d;
    assert_int_equal(keel_fleet_device_get(db, a.id, &d), KEEL_OK);
    assert_string_equal(d.version, "1.2.0");
    assert_int_equal(d.security_version, 3);

    char buf[KEEL_FLEET_DETECTOR_MAX + 1];
    assert_int_equal(keel_fleet_detector_get(db, a.id, buf, sizeof buf), KEEL_OK);
    assert_string_equal(buf, "");
    assert_int_equal(keel_fleet_detector_put(db, a.id, "{\"rate\":1.5}"), KEEL_OK);
    assert_int_equal(keel_fleet_detector_get(db, a.id, buf, sizeof buf), KEEL_OK);
    assert_string_equal(buf, "{\"rate\":1.5}");
    char small[4];
    assert_int_equal(keel_fleet_detector_get(db, a.id, small, sizeof small), KEEL_ERR_TOO_LARGE);
    assert_int_equal(keel_fleet_detector_put(db, "aaaaaaaaaaaaaaaaaaaaaaaaaa", "x"), KEEL_ERR_NOT_FOUND);
    char *big = malloc(KEEL_FLEET_DETECTOR_MAX + 2);
    memset(big, 'x', KEEL_FLEET_DETECTOR_MAX + 1);
    big[KEEL_FLEET_DETECTOR_MAX + 1] = '\0';
    assert_int_equal(keel_fleet_detector_put(db, a.id, big), KEEL_ERR_TOO_LARGE);
    free(big);

    json_t *sum = NULL;
    assert_int_equal(keel_fleet_device_summary(db, &sum), KEEL_OK);
    assert_int_equal(json_integer_value(json_object_get(sum, "devices")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(sum, "states"), "registered")), 2);
    assert_int_equal(json_array_size(json_object_get(sum, "versions")), 2);
    json_decref(sum);

    char **serials = NULL;
    size_t n = 9;
    assert_int_equal(keel_fleet_revoked_serials(db, &serials, &n), KEEL_OK);
    assert_int_equal(n, 0);
    keel_fleet_strv_free(serials, n);
    assert_int_equal(keel_fleet_device_revoke(db, b.id, T0 + 10), KEEL_OK);
    assert_int_equal(keel_fleet_device_revoke(db, b.id, T0 + 20), KEEL_OK);
    assert_int_equal(keel_fleet_device_revoke(db, "aaaaaaaaaaaaaaaaaaaaaaaaaa", T0), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_fleet_device_get(db, b.id, &d), KEEL_OK);
    assert_int_equal(d.state, KEEL_FLEET_DEV_REVOKED);
    assert_int_equal(d.revoked_at, T0 + 10);
    assert_int_equal(keel_fleet_revoked_serials(db, &serials, &n), KEEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(serials[0], d.cert_serial);
    keel_fleet_strv_free(serials, n);
    assert_int_equal(keel_fleet_device_report_version(db, b.id, "1.0.0", 1, T0), KEEL_ERR_NOT_FOUND);
    /* A revoked device's messages are not taken. */
    keel_fleet_ingest_result_t r = ingest(db, b.id, 1, T0, 0);
    assert_true(r.unknown);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM messages", NULL), 0);
    assert_int_equal(keel_fleet_device_summary(db, &sum), KEEL_OK);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(sum, "states"), "revoked")), 1);
    json_decref(sum);
    tdev_free(&a);
    tdev_free(&b);
}

/* ---- ingest and gaps ------------------------------------------------------------------------------------ */

static void test_ingest(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a;
    one_device(db, &a);
    keel_fleet_ingest_result_t r = ingest(db, a.id, 1, T0, 0);
    assert_false(r.duplicate || r.unknown || r.filled_gap);
    assert_int_equal(r.gap_first, 0);
    r = ingest(db, a.id, 1, T0 + 1, 0);
    assert_true(r.duplicate);
    r = ingest(db, "aaaaaaaaaaaaaaaaaaaaaaaaaa", 1, T0, 0);
    assert_true(r.unknown);
    keel_fleet_device_t d;
    assert_int_equal(keel_fleet_device_get(db, a.id, &d), KEEL_OK);
    assert_int_equal(d.state, KEEL_FLEET_DEV_ACTIVE);
    assert_int_equal(d.first_seen, T0);
    assert_int_equal(d.last_seen, T0);
    assert_int_equal(d.last_seq, 1);

    /* Bad messages are refused before the database sees them (the caller's transaction goes on). */
    assert_int_equal(keel_fleet_db_begin(db), KEEL_OK);
    keel_fleet_msg_t m = {.device = a.id, .seq = 2, .ts = T0, .received = T0, .kind = "telemetry",
                          .body = "{\"x\":\"\xff\"}", .body_len = 9};
    keel_fleet_ingest_result_t res;
    assert_int_equal(keel_fleet_ingest(db, &m, &res), KEEL_ERR_FORMAT);
    m.kind = "other";
    assert_int_equal(keel_fleet_ingest(db, &m, &res), KEEL_ERR_ARG);
    m.kind = "event";
    m.seq = 0;
    assert_int_equal(keel_fleet_ingest(db, &m, &res), KEEL_ERR_ARG);
    m.seq = (uint64_t)INT64_MAX + 1;
    assert_int_equal(keel_fleet_ingest(db, &m, &res), KEEL_ERR_ARG);
    m.seq = 2;
    m.body_len = KEEL_FLEET_BODY_MAX + 1;
    assert_int_equal(keel_fleet_ingest(db, &m, &res), KEEL_ERR_ARG);
    m.body = "{\"x\":1}";
    m.body_len = 7;
    assert_int_equal(keel_fleet_ingest(db, &m, &res), KEEL_OK);
    assert_int_equal(keel_fleet_db_commit(db), KEEL_OK);
    keel_fleet_seq_stats_t s;
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &s), KEEL_OK);
    assert_int_equal(s.messages, 2);
    tdev_free(&a);
}

/* A batch in one call: runs per device, duplicates inside the batch, an
 * unknown and a revoked device, late messages, drops, then an erase. */
static void test_ingest_many(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a, b;
    two_devices(db, &a, &b);
    const char *ghost = "aaaaaaaaaaaaaaaaaaaaaaaaaa";
    const char *body = "{\"n\":1}";
    struct {
        const char *dev;
        uint64_t seq, dropped;
    } in[] = {{a.id, 1, 0}, {a.id, 2, 0}, {a.id, 5, 7}, {a.id, 3, 2}, {a.id, 3, 0},
              {ghost, 1, 0}, {b.id, 1, 0},  {b.id, 1, 0}, {a.id, 9, 0}};
    enum { N = sizeof in / sizeof in[0] };
    keel_fleet_msg_t m[N];
    keel_fleet_ingest_result_t r[N];
    for (size_t i = 0; i < N; i++)
        m[i] = (keel_fleet_msg_t){.device = in[i].dev, .seq = in[i].seq, .ts = T0, .received = T0 + (int64_t)i,
                                  .kind = "telemetry", .body = body, .body_len = strlen(body),
                                  .dropped = in[i].dropped};
    assert_int_equal(keel_fleet_ingest_many(db, m, N, r), KEEL_OK);
    assert_false(r[0].duplicate || r[0].unknown || r[1].duplicate);
    assert_int_equal(r[2].gap_first, 3);
    assert_int_equal(r[2].gap_last, 4);
    assert_true(r[3].filled_gap && !r[3].duplicate);
    assert_true(r[4].duplicate);
    assert_true(r[5].unknown);
    assert_false(r[6].duplicate || r[6].unknown);
    assert_true(r[7].duplicate);
    /* a again after b: a run of its own, from the last seq the first run left */
    assert_int_equal(r[8].gap_first, 6);
    assert_int_equal(r[8].gap_last, 8);
    keel_fleet_device_t d;
    assert_int_equal(keel_fleet_device_get(db, a.id, &d), KEEL_OK);
    assert_int_equal(d.state, KEEL_FLEET_DEV_ACTIVE);
    assert_int_equal(d.last_seq, 9);
    assert_int_equal(d.first_seen, T0);
    assert_int_equal(d.last_seen, T0 + 8);
    assert_int_equal(q_int(db, "SELECT dropped_reported FROM device_seq WHERE device = $1", a.id), 7);
    keel_fleet_seq_stats_t s;
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &s), KEEL_OK);
    assert_int_equal(s.messages, 5);
    assert_int_equal(s.open_gaps, 2);
    assert_int_equal(s.open_missing, 4);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM messages WHERE device = $1", ghost), 0);

    /* Revoked: nothing more of b. Erased: a's old seqs do not come back, new ones do. */
    assert_int_equal(keel_fleet_device_revoke(db, b.id, T0 + 50), KEEL_OK);
    keel_fleet_erasure_t e;
    assert_int_equal(keel_fleet_erase(db, a.id, "00112233445566778899aabbccddeeff", "device", T0 + 60, &e), KEEL_OK);
    keel_fleet_msg_t late[] = {
        {.device = a.id, .seq = 4, .ts = T0, .received = T0 + 70, .kind = "event", .body = body, .body_len = 7},
        {.device = a.id, .seq = 10, .ts = T0, .received = T0 + 71, .kind = "event", .body = body, .body_len = 7},
        {.device = b.id, .seq = 2, .ts = T0, .received = T0 + 72, .kind = "event", .body = body, .body_len = 7},
    };
    keel_fleet_ingest_result_t lr[3];
    assert_int_equal(keel_fleet_ingest_many(db, late, 3, lr), KEEL_OK);
    assert_true(lr[0].duplicate);
    assert_false(lr[1].duplicate || lr[1].unknown);
    assert_true(lr[2].unknown);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM messages WHERE device = $1", a.id), 1);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM messages WHERE device = $1", b.id), 1);

    /* One bad message refuses the whole call before anything is stored. */
    late[1].seq = 11;
    late[2].kind = "other";
    assert_int_equal(keel_fleet_ingest_many(db, late, 3, lr), KEEL_ERR_ARG);
    keel_error_clear();
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM messages WHERE device = $1", a.id), 1);
    assert_int_equal(keel_fleet_ingest_many(db, NULL, 0, NULL), KEEL_OK);
    tdev_free(&a);
    tdev_free(&b);
}

/* What ingest remembers of a device's sequence between transactions
 * (SQLite, store.c) never outlives a change made elsewhere: by another
 * connection, by this one outside ingest, or undone by a rollback. Each
 * step below goes wrong if it did (a false gap, a lost message, a revoked
 * device's message taken, erased data back). */
static void test_seq_memory(void **state)
{
    fx_t *fx = *state;
    keel_fleet_db_t *db = fx->db, *other = NULL;
    tdev_t a, b;
    two_devices(db, &a, &b);
    for (uint64_t s = 1; s <= 3; s++)
        ingest(db, a.id, s, T0 + (int64_t)s, 0);
    /* another connection takes 4 and 5: this one must not see a gap before 6 */
    assert_int_equal(keel_fleet_db_open(fx->url, &other), KEEL_OK);
    ingest(other, a.id, 4, T0 + 4, 0);
    ingest(other, a.id, 5, T0 + 5, 0);
    keel_fleet_ingest_result_t r = ingest(db, a.id, 6, T0 + 6, 0);
    assert_false(r.duplicate || r.unknown || r.filled_gap);
    assert_int_equal(r.gap_first, 0);
    /* a rolled-back transaction's messages were never stored: 7 is new again, 8 follows it */
    assert_int_equal(keel_fleet_db_begin(db), KEEL_OK);
    ingest(db, a.id, 7, T0 + 7, 0);
    ingest(db, a.id, 9, T0 + 9, 0);
    keel_fleet_db_rollback(db);
    r = ingest(db, a.id, 7, T0 + 7, 0);
    assert_false(r.duplicate || r.filled_gap);
    assert_int_equal(r.gap_first, 0);
    r = ingest(db, a.id, 8, T0 + 8, 0);
    assert_false(r.duplicate || r.filled_gap);
    assert_int_equal(r.gap_first, 0);
    keel_fleet_seq_stats_t st;
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &st), KEEL_OK);
    assert_int_equal(st.messages, 8);
    assert_int_equal(st.open_gaps, 0);
    keel_fleet_device_t d;
    assert_int_equal(keel_fleet_device_get(db, a.id, &d), KEEL_OK);
    assert_int_equal(d.last_seq, 8);
    /* revoked through this connection: its next message is refused */
    assert_int_equal(keel_fleet_device_revoke(db, a.id, T0 + 10), KEEL_OK);
    r = ingest(db, a.id, 9, T0 + 9, 0);
    assert_true(r.unknown);
    /* ... and through the other one, for b */
    ingest(db, b.id, 1, T0 + 1, 0);
    assert_int_equal(keel_fleet_device_revoke(other, b.id, T0 + 10), KEEL_OK);
    r = ingest(db, b.id, 2, T0 + 2, 0);
    assert_true(r.unknown);
    keel_fleet_db_close(other);
    tdev_free(&a);
    tdev_free(&b);
}

/* Erased through this connection: the erased seqs stay refused (the erase resets ingest's memory). */
static void test_seq_memory_erase(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a;
    one_device(db, &a);
    for (uint64_t s = 1; s <= 3; s++)
        ingest(db, a.id, s, T0 + (int64_t)s, 0);
    keel_fleet_erasure_t e;
    assert_int_equal(keel_fleet_erase(db, a.id, "00112233445566778899aabbccddeeff", "device", T0 + 10, &e), KEEL_OK);
    assert_int_equal(e.messages, 3);
    keel_fleet_ingest_result_t r = ingest(db, a.id, 2, T0 + 2, 0);
    assert_true(r.duplicate);
    r = ingest(db, a.id, 4, T0 + 4, 0);
    assert_false(r.duplicate || r.unknown);
    assert_int_equal(r.gap_first, 0);
    keel_fleet_seq_stats_t st;
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &st), KEEL_OK);
    assert_int_equal(st.messages, 1);
    tdev_free(&a);
}

static void test_gaps(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a;
    one_device(db, &a);
    ingest(db, a.id, 1, T0, 0);
    ingest(db, a.id, 2, T0, 0);
    keel_fleet_ingest_result_t r = ingest(db, a.id, 8, T0 + 1, 0);
    assert_int_equal(r.gap_first, 3);
    assert_int_equal(r.gap_last, 7);
    keel_fleet_seq_stats_t s;
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &s), KEEL_OK);
    assert_int_equal(s.open_gaps, 1);
    assert_int_equal(s.open_missing, 5);
    /* 5 splits 3..7 into 3..4 and 6..7. */
    r = ingest(db, a.id, 5, T0 + 2, 0);
    assert_true(r.filled_gap);
    assert_int_equal(r.gap_first, 0);
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &s), KEEL_OK);
    assert_int_equal(s.open_gaps, 2);
    assert_int_equal(s.open_missing, 4);
    /* The front and the end of a gap, then a gap of one. */
    ingest(db, a.id, 3, T0 + 3, 0);
    ingest(db, a.id, 7, T0 + 3, 0);
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &s), KEEL_OK);
    assert_int_equal(s.open_gaps, 2);
    assert_int_equal(s.open_missing, 2);
    ingest(db, a.id, 4, T0 + 4, 0);
    r = ingest(db, a.id, 6, T0 + 4, 0);
    assert_true(r.filled_gap);
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &s), KEEL_OK);
    assert_int_equal(s.open_gaps, 0);
    assert_int_equal(s.open_missing, 0);
    assert_int_equal(s.messages, 8);
    r = ingest(db, a.id, 6, T0 + 5, 0);
    assert_true(r.duplicate);
    keel_fleet_device_t d;
    assert_int_equal(keel_fleet_device_get(db, a.id, &d), KEEL_OK);
    assert_int_equal(d.last_seq, 8);
    assert_int_equal(d.last_seen, T0 + 4); /* the duplicate moved nothing */
    tdev_free(&a);
}

typedef struct {
    unsigned calls;
    uint64_t first[8], last[8];
    bool explained[8];
} gaps_seen_t;

static void on_gap(void *arg, const char *device, uint64_t first, uint64_t last, bool explained)
{
    gaps_seen_t *g = arg;
    assert_non_null(device);
    if (g->calls < 8) {
        g->first[g->calls] = first;
        g->last[g->calls] = last;
        g->explained[g->calls] = explained;
    }
    g->calls++;
}

static void test_gaps_settle(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a;
    one_device(db, &a);
    ingest(db, a.id, 1, T0, 0);
    /* 2..3 missing, and the device says it dropped 2. */
    ingest(db, a.id, 4, T0 + 10, 2);
    /* 5..7 missing, no more drops reported: lost. */
    ingest(db, a.id, 8, T0 + 20, 2);
    /* 9 missing but too recent to settle. */
    ingest(db, a.id, 10, T0 + 500, 2);
    gaps_seen_t g = {0};
    assert_int_equal(keel_fleet_gaps_settle(db, T0 + 100, on_gap, &g), KEEL_OK);
    assert_int_equal(g.calls, 2);
    assert_int_equal(g.first[0], 2);
    assert_int_equal(g.last[0], 3);
    assert_true(g.explained[0]);
    assert_int_equal(g.first[1], 5);
    assert_int_equal(g.last[1], 7);
    assert_false(g.explained[1]);
    /* Settled once. */
    gaps_seen_t again = {0};
    assert_int_equal(keel_fleet_gaps_settle(db, T0 + 100, on_gap, &again), KEEL_OK);
    assert_int_equal(again.calls, 0);
    keel_fleet_seq_stats_t s;
    assert_int_equal(keel_fleet_seq_stats(db, NULL, &s), KEEL_OK);
    assert_int_equal(s.lost, 3);
    assert_int_equal(s.explained, 2);
    assert_int_equal(s.open_gaps, 1);
    assert_int_equal(s.open_missing, 1);
    /* A late message inside a lost gap shrinks what counts as lost. */
    ingest(db, a.id, 6, T0 + 600, 2);
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &s), KEEL_OK);
    assert_int_equal(s.lost, 2);
    /* The device now reports one more drop: 9 is explained, inside the caller's transaction. */
    ingest(db, a.id, 11, T0 + 601, 3);
    assert_int_equal(keel_fleet_db_begin(db), KEEL_OK);
    gaps_seen_t late = {0};
    assert_int_equal(keel_fleet_gaps_settle(db, T0 + 1000, on_gap, &late), KEEL_OK);
    assert_int_equal(keel_fleet_db_commit(db), KEEL_OK);
    assert_int_equal(late.calls, 1);
    assert_int_equal(late.first[0], 9);
    assert_true(late.explained[0]);
    tdev_free(&a);
}

/* ---- alerts --------------------------------------------------------------------------------------------- */

static void test_alerts(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a;
    one_device(db, &a);
    bool added = false;
    keel_fleet_alert_t al = {.kind = "rate", .device = a.id, .severity = "warning", .detail = "{\"rate\":50}",
                             .dedupe = "rate:1", .time = T0};
    assert_int_equal(keel_fleet_alert_add(db, &al, &added), KEEL_OK);
    assert_true(added);
    al.time = T0 + 1;
    assert_int_equal(keel_fleet_alert_add(db, &al, &added), KEEL_OK);
    assert_false(added);
    al.dedupe = "rate:2";
    assert_int_equal(keel_fleet_alert_add(db, &al, &added), KEEL_OK);
    assert_true(added);
    keel_fleet_alert_t fleet = {.kind = "fleet", .device = NULL, .severity = "critical", .detail = "{}",
                                .dedupe = "fleet:1", .time = T0 + 2};
    assert_int_equal(keel_fleet_alert_add(db, &fleet, &added), KEEL_OK);
    /* Unknown ids may be named (an unregistered publisher). */
    keel_fleet_alert_t stranger = {.kind = "auth", .device = "bbbbbbbbbbbbbbbbbbbbbbbbbb", .severity = "info",
                                   .detail = "{\"n\":1}", .dedupe = "auth:x", .time = T0 + 3};
    assert_int_equal(keel_fleet_alert_add(db, &stranger, &added), KEEL_OK);
    keel_fleet_alert_t bad = al;
    bad.detail = "[1]";
    bad.dedupe = "bad";
    assert_int_equal(keel_fleet_alert_add(db, &bad, &added), KEEL_ERR_FORMAT);
    bad.detail = "{}";
    bad.severity = "panic";
    assert_int_equal(keel_fleet_alert_add(db, &bad, &added), KEEL_ERR_ARG);

    json_t *l = NULL;
    assert_int_equal(keel_fleet_alert_list(db, 0, NULL, NULL, 100, &l), KEEL_OK);
    assert_int_equal(json_array_size(l), 4);
    json_t *newest = json_array_get(l, 0);
    assert_string_equal(json_string_value(json_object_get(newest, "kind")), "auth");
    json_t *fw = json_array_get(l, 1);
    assert_true(json_is_null(json_object_get(fw, "device")));
    assert_true(json_is_object(json_object_get(fw, "detail")));
    assert_int_equal(strlen(json_string_value(json_object_get(fw, "id"))), 16);
    json_decref(l);
    assert_int_equal(keel_fleet_alert_list(db, 0, "rate", NULL, 100, &l), KEEL_OK);
    assert_int_equal(json_array_size(l), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_array_get(l, 0), "detail"), "rate")), 50);
    json_decref(l);
    assert_int_equal(keel_fleet_alert_list(db, 0, NULL, a.id, 100, &l), KEEL_OK);
    assert_int_equal(json_array_size(l), 2);
    json_decref(l);
    assert_int_equal(keel_fleet_alert_list(db, 0, "fleet", a.id, 100, &l), KEEL_OK);
    assert_int_equal(json_array_size(l), 0);
    json_decref(l);
    assert_int_equal(keel_fleet_alert_list(db, T0 + 2, NULL, NULL, 100, &l), KEEL_OK);
    assert_int_equal(json_array_size(l), 2);
    json_decref(l);
    assert_int_equal(keel_fleet_alert_list(db, 0, NULL, NULL, 1, &l), KEEL_OK);
    assert_int_equal(json_array_size(l), 1);
    json_decref(l);
    assert_int_equal(keel_fleet_alert_list(db, 0, NULL, NULL, 0, &l), KEEL_ERR_ARG);
    assert_int_equal(keel_fleet_alert_list(db, 0, NULL, NULL, 10001, &l), KEEL_ERR_ARG);
    tdev_free(&a);
}

/* ---- releases and campaigns ---------------------------------------------------------------------------------- */

static keel_fleet_campaign_t campaign(const char *model, const char *version, int64_t created)
{
    keel_fleet_campaign_t c = {0};
    keel_fleet_campaign_new_id(c.id);
    snprintf(c.model, sizeof c.model, "%s", model);
    snprintf(c.version, sizeof c.version, "%s", version);
    c.security_version = 2;
    snprintf(c.bundle_path, sizeof c.bundle_path, "/var/lib/keel-fleetd/bundles/%s.raucb", c.id);
    memset(c.bundle_sha256, 'a', 64);
    c.bundle_size = 1234;
    c.percent = 50;
    c.fail_permille = 200;
    c.state = KEEL_FLEET_CAMPAIGN_RUNNING;
    c.created = c.updated = created;
    return c;
}

static void test_campaigns(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a, b;
    two_devices(db, &a, &b);

    bool known = true;
    assert_int_equal(keel_fleet_release_known(db, "M1", "2.0.0", 2, &known), KEEL_OK);
    assert_false(known);
    keel_fleet_campaign_t c1 = campaign("M1", "2.0.0", T0);
    assert_int_equal(keel_fleet_campaign_create(db, &c1), KEEL_OK);
    assert_int_equal(keel_fleet_release_known(db, "M1", "2.0.0", 2, &known), KEEL_OK);
    assert_true(known);
    assert_int_equal(keel_fleet_release_known(db, "M1", "2.0.0", 1, &known), KEEL_OK);
    assert_false(known);
    /* One running or paused campaign per model. */
    keel_fleet_campaign_t c2 = campaign("M1", "2.1.0", T0 + 1);
    assert_int_equal(keel_fleet_campaign_create(db, &c2), KEEL_ERR_EXISTS);
    keel_fleet_campaign_t other = campaign("M2", "1.0.0", T0 + 2);
    assert_int_equal(keel_fleet_campaign_create(db, &other), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_create(db, &other), KEEL_ERR_EXISTS);
    keel_fleet_campaign_t badc = campaign("M3", "1.0.0", T0);
    badc.percent = 0;
    assert_int_equal(keel_fleet_campaign_create(db, &badc), KEEL_ERR_ARG);

    keel_fleet_campaign_t got;
    assert_int_equal(keel_fleet_campaign_running(db, "M1", &got), KEEL_OK);
    assert_string_equal(got.id, c1.id);
    assert_string_equal(got.bundle_path, c1.bundle_path);
    assert_int_equal(got.percent, 50);
    assert_int_equal(got.security_version, 2);
    assert_int_equal(got.state, KEEL_FLEET_CAMPAIGN_RUNNING);
    assert_int_equal(keel_fleet_campaign_set_state(db, c1.id, KEEL_FLEET_CAMPAIGN_PAUSED, T0 + 5), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_running(db, "M1", &got), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_fleet_campaign_create(db, &c2), KEEL_ERR_EXISTS);
    assert_int_equal(keel_fleet_campaign_set_state(db, c1.id, KEEL_FLEET_CAMPAIGN_HALTED, T0 + 6), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_create(db, &c2), KEEL_OK);
    /* The halted one cannot resume while c2 is active. */
    assert_int_equal(keel_fleet_campaign_set_state(db, c1.id, KEEL_FLEET_CAMPAIGN_RUNNING, T0 + 7), KEEL_ERR_EXISTS);
    assert_int_equal(keel_fleet_campaign_set_state(db, c1.id, KEEL_FLEET_CAMPAIGN_DONE, T0 + 8), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_set_state(db, c1.id, KEEL_FLEET_CAMPAIGN_RUNNING, T0 + 9), KEEL_ERR_ARG);
    assert_int_equal(keel_fleet_campaign_get(db, c1.id, &got), KEEL_OK);
    assert_int_equal(got.state, KEEL_FLEET_CAMPAIGN_DONE);
    assert_int_equal(got.updated, T0 + 8);
    char missing[KEEL_FLEET_CAMPAIGN_MAX + 1];
    keel_fleet_campaign_new_id(missing);
    assert_int_equal(keel_fleet_campaign_get(db, missing, &got), KEEL_ERR_NOT_FOUND);

    /* Per-device progress and counts. */
    char st[16];
    assert_int_equal(keel_fleet_campaign_device_get(db, c2.id, a.id, st), KEEL_OK);
    assert_string_equal(st, "");
    assert_int_equal(keel_fleet_campaign_device_set(db, c2.id, a.id, "notified", NULL, T0 + 10), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_device_set(db, c2.id, b.id, "notified", NULL, T0 + 10), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_device_set(db, c2.id, a.id, "downloading", NULL, T0 + 11), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_device_set(db, c2.id, a.id, "installed", NULL, T0 + 12), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_device_set(db, c2.id, a.id, "confirmed", NULL, T0 + 13), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_device_set(db, c2.id, a.id, "downloading", NULL, T0 + 14), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_device_set(db, c2.id, b.id, "failed", "sha256 mismatch", T0 + 15), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_device_set(db, c2.id, b.id, "bogus", NULL, T0 + 15), KEEL_ERR_ARG);
    assert_int_equal(keel_fleet_campaign_device_set(db, c2.id, "aaaaaaaaaaaaaaaaaaaaaaaaaa", "notified", NULL, T0),
                     KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_fleet_campaign_device_set(db, missing, a.id, "notified", NULL, T0), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_fleet_campaign_device_get(db, c2.id, a.id, st), KEEL_OK);
    assert_string_equal(st, "confirmed");
    keel_fleet_campaign_counts_t k;
    assert_int_equal(keel_fleet_campaign_counts(db, c2.id, &k), KEEL_OK);
    assert_int_equal(k.selected, 2);
    assert_int_equal(k.confirmed, 1);
    assert_int_equal(k.failed, 1);
    assert_int_equal(k.notified + k.downloading + k.installed + k.postponed, 0);
    assert_int_equal(k.first_confirmed, T0 + 13);
    assert_int_equal(k.last_confirmed, T0 + 13);

    json_t *l = NULL;
    assert_int_equal(keel_fleet_campaign_list(db, &l), KEEL_OK);
    assert_int_equal(json_array_size(l), 3);
    /* Newest first: other (T0 + 2), c2 (T0 + 1), c1 (T0). */
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 0), "id")), other.id);
    json_t *j2 = json_array_get(l, 1);
    assert_string_equal(json_string_value(json_object_get(j2, "id")), c2.id);
    assert_true(json_is_false(json_object_get(j2, "security")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j2, "counts"), "selected")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j2, "counts"), "first_confirmed")), T0 + 13);
    assert_string_equal(json_string_value(json_object_get(json_array_get(l, 2), "state")), "done");
    json_decref(l);

    assert_int_equal(keel_fleet_release_add(db, "M1", "3.0.0", 4, T0), KEEL_OK);
    assert_int_equal(keel_fleet_release_add(db, "M1", "3.0.0", 4, T0 + 1), KEEL_OK);
    assert_int_equal(keel_fleet_release_known(db, "M1", "3.0.0", 4, &known), KEEL_OK);
    assert_true(known);
    assert_int_equal(keel_fleet_release_add(db, "M1", "", 4, T0), KEEL_ERR_ARG);
    tdev_free(&a);
    tdev_free(&b);
}

/* ---- personal data ------------------------------------------------------------------------------------------- */

static void test_erase(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a, b;
    two_devices(db, &a, &b);
    for (uint64_t s = 1; s <= 5; s++)
        ingest(db, a.id, s, T0 + (int64_t)s, 0);
    ingest(db, a.id, 8, T0 + 8, 0); /* a gap 6..7 */
    ingest(db, b.id, 1, T0, 0);
    keel_fleet_device_t before, after;
    assert_int_equal(keel_fleet_device_get(db, a.id, &before), KEEL_OK);

    const char *req = "00112233445566778899AABBCCDDEEFF";
    keel_fleet_erasure_t e;
    assert_int_equal(keel_fleet_erase(db, a.id, req, "device", T0 + 100, &e), KEEL_OK);
    assert_string_equal(e.id, "00112233445566778899aabbccddeeff");
    assert_int_equal(e.messages, 6);
    assert_int_equal(e.gaps, 1);
    assert_int_equal(e.time, T0 + 100);
    assert_int_equal(keel_fleet_device_get(db, a.id, &after), KEEL_OK);
    assert_string_not_equal(before.pseudonym, after.pseudonym);
    keel_fleet_seq_stats_t s;
    assert_int_equal(keel_fleet_seq_stats(db, a.id, &s), KEEL_OK);
    assert_int_equal(s.messages, 0);
    assert_int_equal(s.open_gaps, 0);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM messages WHERE device = $1", b.id), 1);
    /* A late redelivery of an erased seq does not bring it back. */
    keel_fleet_ingest_result_t r = ingest(db, a.id, 6, T0 + 101, 0);
    assert_true(r.duplicate);
    r = ingest(db, a.id, 9, T0 + 102, 0);
    assert_false(r.duplicate);
    assert_int_equal(r.gap_first, 0);

    /* The resent request: erases what came since, rotates again, answers with the first record. */
    keel_fleet_erasure_t again;
    assert_int_equal(keel_fleet_erase(db, a.id, req, "device", T0 + 200, &again), KEEL_OK);
    assert_string_equal(again.id, e.id);
    assert_int_equal(again.time, T0 + 100);
    assert_int_equal(again.messages, 7);
    keel_fleet_device_t third;
    assert_int_equal(keel_fleet_device_get(db, a.id, &third), KEEL_OK);
    assert_string_not_equal(third.pseudonym, after.pseudonym);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM erasures", NULL), 1);
    /* Another device cannot use that request id. */
    assert_int_equal(keel_fleet_erase(db, b.id, req, "device", T0, &e), KEEL_ERR_EXISTS);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM messages WHERE device = $1", b.id), 1);
    /* The operator's: a fresh id. */
    assert_int_equal(keel_fleet_erase(db, b.id, NULL, "operator", T0 + 300, &e), KEEL_OK);
    assert_int_equal(strlen(e.id), 32);
    assert_string_not_equal(e.id, again.id);
    assert_int_equal(e.messages, 1);
    assert_int_equal(keel_fleet_erase(db, "aaaaaaaaaaaaaaaaaaaaaaaaaa", NULL, "operator", T0, &e), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_fleet_erase(db, b.id, "xyz", "device", T0, &e), KEEL_ERR_ARG);
    assert_int_equal(keel_fleet_erase(db, b.id, NULL, "someone", T0, &e), KEEL_ERR_ARG);
    tdev_free(&a);
    tdev_free(&b);
}

static void test_export(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a;
    one_device(db, &a);
    ingest(db, a.id, 1, T0, 0);
    ingest(db, a.id, 3, T0 + 1, 0);
    keel_fleet_alert_t al = {.kind = "size", .device = a.id, .severity = "info", .detail = "{\"bytes\":9}",
                             .dedupe = "size:1", .time = T0};
    assert_int_equal(keel_fleet_alert_add(db, &al, NULL), KEEL_OK);
    keel_fleet_campaign_t c = campaign("M1", "2.0.0", T0);
    assert_int_equal(keel_fleet_campaign_create(db, &c), KEEL_OK);
    assert_int_equal(keel_fleet_campaign_device_set(db, c.id, a.id, "installed", NULL, T0 + 2), KEEL_OK);
    assert_int_equal(keel_fleet_detector_put(db, a.id, "state-text"), KEEL_OK);

    json_t *x = NULL;
    assert_int_equal(keel_fleet_export(db, a.id, &x), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(x, "format")), "keel-fleet-export-1");
    json_t *dev = json_object_get(x, "device");
    assert_string_equal(json_string_value(json_object_get(dev, "id")), a.id);
    assert_string_equal(json_string_value(json_object_get(dev, "certificate")), a.pem);
    assert_string_equal(json_string_value(json_object_get(dev, "detector")), "state-text");
    assert_int_equal(strlen(json_string_value(json_object_get(dev, "pseudonym"))), 32);
    json_t *msgs = json_object_get(x, "messages");
    assert_int_equal(json_array_size(msgs), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(msgs, 1), "seq")), 3);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_array_get(msgs, 1), "data"), "n")), 3);
    assert_int_equal(json_array_size(json_object_get(x, "gaps")), 1);
    assert_int_equal(json_array_size(json_object_get(x, "alerts")), 1);
    json_t *camp = json_array_get(json_object_get(x, "campaigns"), 0);
    assert_string_equal(json_string_value(json_object_get(camp, "state")), "installed");
    assert_int_equal(json_array_size(json_object_get(x, "erasures")), 0);
    json_decref(x);
    keel_fleet_erasure_t e;
    assert_int_equal(keel_fleet_erase(db, a.id, NULL, "operator", T0 + 5, &e), KEEL_OK);
    assert_int_equal(keel_fleet_export(db, a.id, &x), KEEL_OK);
    assert_int_equal(json_array_size(json_object_get(x, "messages")), 0);
    assert_int_equal(json_array_size(json_object_get(x, "erasures")), 1);
    json_decref(x);
    assert_int_equal(keel_fleet_export(db, "aaaaaaaaaaaaaaaaaaaaaaaaaa", &x), KEEL_ERR_NOT_FOUND);
    tdev_free(&a);
}

static void test_retention(void **state)
{
    keel_fleet_db_t *db = ((fx_t *)*state)->db;
    tdev_t a;
    one_device(db, &a);
    int64_t day0 = (T0 / DAY) * DAY;
    /* Two messages on day 0, one on day 1, one recent. */
    ingest(db, a.id, 1, day0 + 10, 0);
    ingest(db, a.id, 2, day0 + 20, 0);
    ingest(db, a.id, 3, day0 + DAY + 5, 0);
    ingest(db, a.id, 4, day0 + 40 * DAY, 0);
    keel_fleet_alert_t al = {.kind = "rate", .device = a.id, .severity = "info", .detail = "{}", .dedupe = "old",
                             .time = day0};
    assert_int_equal(keel_fleet_alert_add(db, &al, NULL), KEEL_OK);
    keel_fleet_device_t d;
    assert_int_equal(keel_fleet_device_get(db, a.id, &d), KEEL_OK);

    keel_fleet_retention_t r = {.raw_s = 30 * DAY, .aggregate_s = 0, .alert_s = 10 * DAY};
    keel_fleet_retention_stats_t s;
    assert_int_equal(keel_fleet_retention_run(db, &r, day0 + 41 * DAY, &s), KEEL_OK);
    assert_int_equal(s.aggregated, 3);
    assert_int_equal(s.deleted_messages, 3);
    assert_int_equal(s.deleted_alerts, 1);
    assert_int_equal(s.deleted_aggregates, 0);
    assert_int_equal(q_int(db, "SELECT COUNT(*) FROM messages", NULL), 1);
    json_t *ag = NULL;
    assert_int_equal(keel_fleet_aggregates(db, 0, &ag), KEEL_OK);
    assert_int_equal(json_array_size(ag), 2);
    json_t *first = json_array_get(ag, 0);
    assert_string_equal(json_string_value(json_object_get(first, "pseudonym")), d.pseudonym);
    assert_int_equal(json_integer_value(json_object_get(first, "day")), day0);
    assert_string_equal(json_string_value(json_object_get(first, "kind")), "telemetry");
    assert_int_equal(json_integer_value(json_object_get(first, "messages")), 2);
    assert_int_equal(json_integer_value(json_object_get(first, "bytes")), (json_int_t)(strlen("{\"n\":1}") * 2));
    json_decref(ag);
    assert_int_equal(keel_fleet_aggregates(db, day0 + DAY, &ag), KEEL_OK);
    assert_int_equal(json_array_size(ag), 1);
    json_decref(ag);

    /* A late message for day 0 arrives now, received today: it is not aggregated into day 0 until it is old.
     * One received long ago (a backfill) is added to the existing day's row. */
    keel_fleet_msg_t m = {.device = a.id, .seq = 5, .ts = day0, .received = day0 + 30, .kind = "telemetry",
                          .body = "{}", .body_len = 2};
    keel_fleet_ingest_result_t res;
    assert_int_equal(keel_fleet_ingest(db, &m, &res), KEEL_OK);
    assert_int_equal(keel_fleet_retention_run(db, &r, day0 + 41 * DAY, &s), KEEL_OK);
    assert_int_equal(s.aggregated, 1);
    assert_int_equal(keel_fleet_aggregates(db, 0, &ag), KEEL_OK);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ag, 0), "messages")), 3);
    json_decref(ag);

    /* After an erase the aggregates stay, under a pseudonym the device no longer has. */
    keel_fleet_erasure_t e;
    assert_int_equal(keel_fleet_erase(db, a.id, NULL, "operator", day0 + 41 * DAY, &e), KEEL_OK);
    assert_int_equal(keel_fleet_device_get(db, a.id, &d), KEEL_OK);
    assert_int_equal(keel_fleet_aggregates(db, 0, &ag), KEEL_OK);
    assert_int_equal(json_array_size(ag), 2);
    assert_string_not_equal(json_string_value(json_object_get(json_array_get(ag, 0), "pseudonym")), d.pseudonym);
    json_decref(ag);

    /* Aggregates past their own retention go. */
    keel_fleet_retention_t r2 = {.raw_s = 0, .aggregate_s = 400 * DAY, .alert_s = 0};
    assert_int_equal(keel_fleet_retention_run(db, &r2, day0 + 400 * DAY + DAY + 10, &s), KEEL_OK);
    assert_int_equal(s.deleted_aggregates, 1);
    assert_int_equal(s.aggregated, 0);
    tdev_free(&a);
}

/* ---- the benchmark (not a test) --------------------------------------------------------------------------------- */

static double cpu_seconds(void)
{
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u) != 0)
        return 0;
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static int bench(const char *url)
{
    keel_fleet_db_t *db = NULL;
    if (strncmp(url, "postgres", 8) == 0 && pg_reset(url) != KEEL_OK) {
        fprintf(stderr, "reset: %s\n", keel_error_message());
        return 1;
    }
    if (keel_fleet_db_open(url, &db) != KEEL_OK) {
        fprintf(stderr, "open: %s\n", keel_error_message());
        return 1;
    }
    enum { DEVICES = 5000, TOTAL = 100000, BATCH = 500 };
    json_t *arr = json_array();
    tdev_t *devs = calloc(DEVICES, sizeof *devs);
    for (int i = 0; i < DEVICES; i++) {
        char serial[16];
        snprintf(serial, sizeof serial, "B%06d", i);
        tdev_new(&devs[i], serial);
        json_array_append_new(arr, dev_json(&devs[i], "M1"));
    }
    json_t *m = json_pack("{s:s, s:o}", "format", "keel-manifest-1", "devices", arr);
    keel_fleet_import_stats_t is;
    if (keel_fleet_import_manifest(db, m, T0, &is) != KEEL_OK) {
        fprintf(stderr, "import: %s\n", keel_error_message());
        return 1;
    }
    json_decref(m);
    const char *body = "{\"temperature\":21.5,\"heating\":true,\"uptime\":123456}";
    double t = keel_now();
    for (int i = 0; i < 10000; i++) {
        int64_t v;
        keel_fleet_val_t k[] = {KEEL_FV_I(i)};
        if (keel_fleet_db_int(db, "SELECT $1 + 1", k, 1, &v) != KEEL_OK)
            return 1;
    }
    printf("%s: one statement: %.1f us\n", keel_fleet_db_driver_name(db), (keel_now() - t) * 1e6 / 10000);
    t = keel_now();
    uint64_t seq[DEVICES] = {0};
    for (int done = 0; done < TOTAL; done += BATCH) {
        if (keel_fleet_db_begin(db) != KEEL_OK)
            return 1;
        for (int i = 0; i < BATCH; i++) {
            int k = (done + i) % DEVICES;
            keel_fleet_msg_t msg = {.device = devs[k].id, .seq = ++seq[k], .ts = T0, .received = T0 + done,
                                    .kind = "telemetry", .body = body, .body_len = strlen(body)};
            keel_fleet_ingest_result_t r;
            if (keel_fleet_ingest(db, &msg, &r) != KEEL_OK) {
                fprintf(stderr, "ingest: %s\n", keel_error_message());
                return 1;
            }
        }
        if (keel_fleet_db_commit(db) != KEEL_OK)
            return 1;
    }
    double dt = keel_now() - t;
    printf("%s: %d messages in batches of %d: %.2f s, %.0f messages/s\n", keel_fleet_db_driver_name(db), TOTAL, BATCH,
           dt, TOTAL / dt);
    /* As keel-fleetd stores them: batches of FLEET_BATCH, sorted by device, RUN messages per device and batch. */
    enum { FLEET_BATCH = 2000, RUN = 2 };
    keel_fleet_msg_t *mb = calloc(FLEET_BATCH, sizeof *mb);
    keel_fleet_ingest_result_t *rb = calloc(FLEET_BATCH, sizeof *rb);
    if (mb == NULL || rb == NULL)
        return 1;
    double cpu = cpu_seconds();
    t = keel_now();
    for (int done = 0, next = 0; done < TOTAL; done += FLEET_BATCH) {
        for (int i = 0; i < FLEET_BATCH; i += RUN, next = (next + 1) % (FLEET_BATCH / RUN))
            for (int k = 0; k < RUN; k++)
                mb[i + k] = (keel_fleet_msg_t){.device = devs[next].id, .seq = ++seq[next], .ts = T0,
                                               .received = T0 + done, .kind = "telemetry", .body = body,
                                               .body_len = strlen(body)};
        if (keel_fleet_db_begin(db) != KEEL_OK || keel_fleet_ingest_many(db, mb, FLEET_BATCH, rb) != KEEL_OK ||
            keel_fleet_db_commit(db) != KEEL_OK) {
            fprintf(stderr, "ingest_many: %s\n", keel_error_message());
            return 1;
        }
    }
    dt = keel_now() - t;
    cpu = cpu_seconds() - cpu;
    printf("%s: %d messages as keel-fleetd stores them (%d devices, %d per device and batch of %d): %.0f messages/s, "
           "%.1f us CPU each\n",
           keel_fleet_db_driver_name(db), TOTAL, FLEET_BATCH / RUN, RUN, FLEET_BATCH, TOTAL / dt, cpu * 1e6 / TOTAL);
    free(mb);
    free(rb);
    for (int i = 0; i < DEVICES; i++)
        tdev_free(&devs[i]);
    free(devs);
    keel_fleet_db_close(db);
    return 0;
}

int main(int argc, char **argv)
{
    assert_int_equal(keel_crypto_init(), KEEL_OK);
    if (argc == 3 && strcmp(argv[1], "--bench") == 0)
        return bench(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_v2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sqlite_file_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_placeholders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exists_and_tx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_import, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingest_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_memory_erase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gaps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gaps_settle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alerts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_campaigns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_erase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
    };
    size_t n = sizeof tests / sizeof tests[0];
    g_driver = "sqlite";
    int failed = cmocka_run_group_tests_name("sqlite", tests, NULL, NULL);
    if (failed == 0)
        printf("fleet_store: sqlite: %zu tests passed\n", n);
    g_pg_url = getenv("KEEL_TEST_PG_URL");
    if (g_pg_url == NULL || *g_pg_url == '\0') {
        printf("fleet_store: postgresql: skipped (KEEL_TEST_PG_URL is not set)\n");
        return failed;
    }
    g_driver = "postgresql";
    int pg_failed = cmocka_run_group_tests_name("postgresql", tests, NULL, NULL);
    if (pg_failed == 0)
        printf("fleet_store: postgresql: %zu tests passed\n", n);
    return failed + pg_failed;
}

/*
 * Unit tests for the vault: field AEAD bound to its place, the secrets store,
 * crypto-erase, refusal of foreign keys and newer schemas, and power cuts
 * during erase and creation (fault injection and real process death).
 */
#include "testutil.h"

#include "keel/crypto.h"
#include "keel/keystore.h"
#include "keel/vault.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define WRAP_AD "keel-vault-v1|data-key"
#define KEY_MAGIC_LEN 8
#define EXPECTED_SCHEMA 2
/* Erase and creation take about a dozen counted storage operations. */
#define FAULT_LIMIT 100

typedef struct {
    char *root;
    char vault_dir[KEEL_PATH_MAX];
    keel_keystore_t *ks;
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
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    keel_fault_arm(0);
    vault_fixture_free(fx->root, fx->ks);
    free(fx);
    return 0;
}

static keel_vault_t *vault_open_ok(const char *dir, keel_keystore_t *ks)
{
    keel_vault_t *v = NULL;
    keel_status_t st = keel_vault_open(dir, ks, &v);
    if (st != KEEL_OK)
        fail_msg("keel_vault_open: %s: %s", keel_status_str(st), keel_error_message());
    assert_non_null(v);
    return v;
}

static void put_ok(keel_vault_t *v, const char *name, const char *value)
{
    assert_int_equal(keel_vault_secret_put(v, name, value, strlen(value)), KEEL_OK);
}

static void get_equals(keel_vault_t *v, const char *name, const char *value)
{
    uint8_t out[256];
    size_t n = 0;
    keel_status_t st = keel_vault_secret_get(v, name, out, sizeof out, &n);
    if (st != KEEL_OK)
        fail_msg("get %s: %s: %s", name, keel_status_str(st), keel_error_message());
    assert_int_equal(n, strlen(value));
    assert_memory_equal(out, value, n);
}

static keel_status_t get_status(keel_vault_t *v, const char *name)
{
    uint8_t out[256];
    size_t n = 0;
    return keel_vault_secret_get(v, name, out, sizeof out, &n);
}

static void sql_ok(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
}

static int sql_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    int n = sqlite3_column_int(stmt, 0);
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    return n;
}

static void read_file(const char *dir, const char *name, keel_buf_t *out)
{
    char path[KEEL_PATH_MAX];
    path_in(path, dir, name);
    assert_int_equal(keel_file_read(path, 1u << 20, out), KEEL_OK);
}

/* The wrapped key file no longer unseals: its wrapping key was destroyed. */
static void assert_key_file_dead(keel_keystore_t *ks, const keel_buf_t *old)
{
    uint8_t out[KEEL_AEAD_KEY_LEN];
    size_t n = 0;
    assert_true(old->len > KEY_MAGIC_LEN);
    assert_int_not_equal(keel_keystore_unseal(ks, KEEL_VAULT_WRAP_LABEL, WRAP_AD,
                                              old->data + KEY_MAGIC_LEN, old->len - KEY_MAGIC_LEN,
                                              out, sizeof out, &n),
                         KEEL_OK);
}

static void assert_key_file_live(keel_keystore_t *ks, const keel_buf_t *cur)
{
    uint8_t out[KEEL_AEAD_KEY_LEN];
    size_t n = 0;
    assert_int_equal(keel_keystore_unseal(ks, KEEL_VAULT_WRAP_LABEL, WRAP_AD,
                                          cur->data + KEY_MAGIC_LEN, cur->len - KEY_MAGIC_LEN, out,
                                          sizeof out, &n),
                     KEEL_OK);
    assert_int_equal(n, KEEL_AEAD_KEY_LEN);
    keel_wipe(out, sizeof out);
}

static void test_secret_round_trip(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    size_t big = KEEL_VAULT_VALUE_MAX;
    uint8_t *in = malloc(big + 1), *out = malloc(big + 1);
    assert_non_null(in);
    assert_non_null(out);
    keel_random_bytes(in, big + 1);
    const size_t sizes[] = {0, 1, 5, 1000, big};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = 99;
        assert_int_equal(keel_vault_secret_put(v, "admin-password", in, sizes[i]), KEEL_OK);
        assert_int_equal(keel_vault_secret_get(v, "admin-password", out, big, &n), KEEL_OK);
        assert_int_equal(n, sizes[i]);
        assert_memory_equal(in, out, n);
    }
    size_t n = 0;
    assert_int_equal(keel_vault_secret_put(v, "too-big", in, big + 1), KEEL_ERR_TOO_LARGE);
    assert_int_equal(get_status(v, "too-big"), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_vault_secret_get(v, "admin-password", out, big - 1, &n), KEEL_ERR_TOO_LARGE);

    put_ok(v, "wifi-psk", "correct horse");
    put_ok(v, "42", "a numeric row name");
    get_equals(v, "wifi-psk", "correct horse");
    put_ok(v, "wifi-psk", "battery staple");
    get_equals(v, "wifi-psk", "battery staple");
    get_equals(v, "42", "a numeric row name");
    assert_int_equal(keel_vault_secret_delete(v, "wifi-psk"), KEEL_OK);
    assert_int_equal(get_status(v, "wifi-psk"), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_vault_secret_delete(v, "wifi-psk"), KEEL_OK);
    assert_int_equal(get_status(v, "never-stored"), KEEL_ERR_NOT_FOUND);

    /* Nothing readable is stored. */
    sqlite3 *db = keel_vault_db(v);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM secrets WHERE instr(value, 'a numeric') > 0"), 0);
    keel_wipe(in, big + 1);
    free(in);
    free(out);
    keel_vault_close(v);
}

static void test_bad_arguments(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = NULL;
    assert_int_equal(keel_vault_open(NULL, fx->ks, &v), KEEL_ERR_ARG);
    assert_int_equal(keel_vault_open(fx->vault_dir, NULL, &v), KEEL_ERR_ARG);
    assert_null(v);
    v = vault_open_ok(fx->vault_dir, fx->ks);
    char long_name[KEEL_VAULT_NAME_MAX + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    const char *bad_rows[] = {"", "a|b", "with space", "tab\t", "\x7f", "caf\xc3\xa9", long_name};
    for (size_t i = 0; i < sizeof bad_rows / sizeof bad_rows[0]; i++) {
        assert_int_equal(keel_vault_secret_put(v, bad_rows[i], "x", 1), KEEL_ERR_ARG);
        assert_int_equal(get_status(v, bad_rows[i]), KEEL_ERR_ARG);
        assert_int_equal(keel_vault_secret_delete(v, bad_rows[i]), KEEL_ERR_ARG);
    }
    long_name[KEEL_VAULT_NAME_MAX] = '\0';
    put_ok(v, long_name, "longest name");
    get_equals(v, long_name, "longest name");

    uint8_t blob[64];
    size_t n = 0;
    const char *bad_names[] = {"", "Secrets", "a-b", "a|b", "se crets", long_name};
    long_name[KEEL_VAULT_NAME_MAX] = 'a';
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        assert_int_equal(keel_vault_seal(v, bad_names[i], "c", "r", "x", 1, blob, sizeof blob, &n),
                         KEEL_ERR_ARG);
        assert_int_equal(keel_vault_seal(v, "t", bad_names[i], "r", "x", 1, blob, sizeof blob, &n),
                         KEEL_ERR_ARG);
    }
    assert_int_equal(keel_vault_seal(v, "t", "c", "r", "x", 1, blob, KEEL_AEAD_OVERHEAD, &n),
                     KEEL_ERR_TOO_LARGE);
    assert_int_equal(keel_vault_seal(v, "t", "c", "r", NULL, 1, blob, sizeof blob, &n), KEEL_ERR_ARG);
    assert_int_equal(keel_vault_secret_put(NULL, "a", "x", 1), KEEL_ERR_ARG);
    assert_int_equal(keel_vault_erase(NULL), KEEL_ERR_ARG);
    assert_null(keel_vault_db(NULL));
    assert_int_equal(keel_vault_schema_version(NULL), -1);
    keel_vault_close(NULL);
    keel_vault_close(v);
}

static void test_reopen_keeps_values(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    put_ok(v, "a", "alpha");
    put_ok(v, "b", "bravo");
    keel_vault_close(v);
    keel_keystore_close(fx->ks);
    fx->ks = NULL;

    assert_int_equal(keystore_open_in(fx->root, "keystore", &fx->ks), KEEL_OK);
    v = vault_open_ok(fx->vault_dir, fx->ks);
    get_equals(v, "a", "alpha");
    get_equals(v, "b", "bravo");
    assert_int_equal(keel_vault_schema_version(v), EXPECTED_SCHEMA);
    keel_vault_close(v);
}

static void test_moved_ciphertext_refused(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    put_ok(v, "a", "the secret of a");
    put_ok(v, "b", "the secret of b");
    sql_ok(keel_vault_db(v), "UPDATE secrets SET value = (SELECT value FROM secrets WHERE name = 'a') "
                             "WHERE name = 'b'");
    assert_int_equal(get_status(v, "b"), KEEL_ERR_VERIFY);
    get_equals(v, "a", "the secret of a");
    keel_vault_close(v);
}

static void test_field_bound_to_place(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    uint8_t blob[64], out[64];
    size_t n = 0, m = 0;
    assert_int_equal(keel_vault_seal(v, "users", "email", "17", "a@b.example", 11, blob, sizeof blob, &n),
                     KEEL_OK);
    assert_int_equal(n, 11 + KEEL_AEAD_OVERHEAD);
    assert_int_equal(keel_vault_open_field(v, "users", "email", "17", blob, n, out, sizeof out, &m),
                     KEEL_OK);
    assert_int_equal(m, 11);
    assert_memory_equal(out, "a@b.example", 11);
    static const char *const places[][3] = {
        {"users2", "email", "17"}, {"users", "phone", "17"}, {"users", "email", "18"},
        {"users", "email", "1"},   {"email", "users", "17"},
    };
    for (size_t i = 0; i < sizeof places / sizeof places[0]; i++)
        assert_int_equal(keel_vault_open_field(v, places[i][0], places[i][1], places[i][2], blob, n, out,
                                               sizeof out, &m),
                         KEEL_ERR_VERIFY);
    keel_vault_close(v);
}

static void test_bit_flips_refused(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    uint8_t blob[64], out[64];
    size_t n = 0, m = 0;
    assert_int_equal(keel_vault_seal(v, "secrets", "value", "r", "hello", 5, blob, sizeof blob, &n),
                     KEEL_OK);
    for (size_t bit = 0; bit < n * 8; bit++) {
        blob[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(keel_vault_open_field(v, "secrets", "value", "r", blob, n, out, sizeof out, &m),
                         KEEL_ERR_VERIFY);
        blob[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    for (size_t len = 0; len < n; len++)
        assert_int_equal(keel_vault_open_field(v, "secrets", "value", "r", blob, len, out, sizeof out, &m),
                         KEEL_ERR_VERIFY);
    assert_int_equal(keel_vault_open_field(v, "secrets", "value", "r", blob, n, out, sizeof out, &m),
                     KEEL_OK);

    /* The same through the database. */
    put_ok(v, "pin", "123456");
    sqlite3 *db = keel_vault_db(v);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT value FROM secrets WHERE name = 'pin'", -1, &stmt,
                                        NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    uint8_t stored[64];
    int len = sqlite3_column_bytes(stmt, 0);
    assert_true(len > 20 && (size_t)len <= sizeof stored);
    memcpy(stored, sqlite3_column_blob(stmt, 0), (size_t)len);
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    stored[20] ^= 0x01;
    assert_int_equal(sqlite3_prepare_v2(db, "UPDATE secrets SET value = ?1 WHERE name = 'pin'", -1,
                                        &stmt, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(stmt, 1, stored, len, SQLITE_TRANSIENT), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_DONE);
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    assert_int_equal(get_status(v, "pin"), KEEL_ERR_VERIFY);
    keel_vault_close(v);
}

static void test_erase(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    put_ok(v, "a", "alpha");
    put_ok(v, "b", "bravo");
    uint8_t blob[64], out[64];
    size_t n = 0, m = 0;
    assert_int_equal(keel_vault_seal(v, "secrets", "value", "a", "alpha", 5, blob, sizeof blob, &n),
                     KEEL_OK);
    keel_buf_t old_key;
    read_file(fx->vault_dir, "vault.key", &old_key);
    assert_key_file_live(fx->ks, &old_key);

    assert_int_equal(keel_vault_erase(v), KEEL_OK);
    assert_int_equal(get_status(v, "a"), KEEL_ERR_NOT_FOUND);
    assert_int_equal(get_status(v, "b"), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_vault_open_field(v, "secrets", "value", "a", blob, n, out, sizeof out, &m),
                     KEEL_ERR_VERIFY);
    assert_key_file_dead(fx->ks, &old_key);
    assert_int_equal(sql_int(keel_vault_db(v), "SELECT count(*) FROM secrets"), 0);

    /* Usable again, under a new key that survives a reopen. */
    put_ok(v, "c", "charlie");
    keel_vault_close(v);
    v = vault_open_ok(fx->vault_dir, fx->ks);
    get_equals(v, "c", "charlie");
    assert_int_equal(get_status(v, "a"), KEEL_ERR_NOT_FOUND);
    keel_buf_t new_key;
    read_file(fx->vault_dir, "vault.key", &new_key);
    assert_true(new_key.len != old_key.len ||
                memcmp(new_key.data, old_key.data, new_key.len) != 0);
    assert_key_file_live(fx->ks, &new_key);
    keel_buf_free(&new_key);
    keel_buf_free(&old_key);

    /* Erasing an empty vault is fine too. */
    assert_int_equal(keel_vault_erase(v), KEEL_OK);
    assert_int_equal(keel_vault_erase(v), KEEL_OK);
    assert_int_equal(get_status(v, "c"), KEEL_ERR_NOT_FOUND);
    keel_vault_close(v);
}

static void test_other_keystore_refused(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    put_ok(v, "a", "alpha");
    keel_vault_close(v);
    keel_buf_t before, after;
    read_file(fx->vault_dir, "vault.key", &before);

    /* Another keystore altogether, and the same keys under another KEK. */
    keel_keystore_t *other = NULL;
    assert_int_equal(keystore_open_in(fx->root, "keystore2", &other), KEEL_OK);
    v = NULL;
    assert_int_equal(keel_vault_open(fx->vault_dir, other, &v), KEEL_ERR_VERIFY);
    assert_null(v);
    assert_non_null(strstr(keel_error_message(), "cannot be unwrapped"));
    keel_keystore_close(other);

    char kek[KEEL_PATH_MAX];
    path_in(kek, fx->root, "other.kek");
    char ksdir[KEEL_PATH_MAX];
    path_in(ksdir, fx->root, "keystore");
    keel_keystore_config_t cfg = {.driver = "file", .dir = ksdir, .kek_file = kek, .create = 1};
    assert_int_equal(keel_keystore_open(&cfg, &other), KEEL_OK);
    assert_int_equal(keel_vault_open(fx->vault_dir, other, &v), KEEL_ERR_VERIFY);
    assert_null(v);
    keel_keystore_close(other);

    read_file(fx->vault_dir, "vault.key", &after);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len);
    keel_buf_free(&before);
    keel_buf_free(&after);
    v = vault_open_ok(fx->vault_dir, fx->ks);
    get_equals(v, "a", "alpha");
    keel_vault_close(v);
}

static void test_missing_key_with_data_refused(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    put_ok(v, "a", "alpha");
    keel_vault_close(v);
    char key[KEEL_PATH_MAX], moved[KEEL_PATH_MAX];
    path_in(key, fx->vault_dir, "vault.key");
    path_in(moved, fx->root, "vault.key.saved");
    assert_int_equal(rename(key, moved), 0);

    v = NULL;
    assert_int_equal(keel_vault_open(fx->vault_dir, fx->ks, &v), KEEL_ERR_VERIFY);
    assert_null(v);
    assert_non_null(strstr(keel_error_message(), "missing"));
    assert_false(keel_path_exists(key));

    /* Nothing was deleted: putting the key back brings the data back. */
    assert_int_equal(rename(moved, key), 0);
    v = vault_open_ok(fx->vault_dir, fx->ks);
    get_equals(v, "a", "alpha");
    keel_vault_close(v);

    /* A key file that is not one is refused, not replaced. */
    assert_int_equal(keel_file_write_atomic(key, "garbage", 7, 0600), KEEL_OK);
    assert_int_equal(keel_vault_open(fx->vault_dir, fx->ks, &v), KEEL_ERR_FORMAT);
    assert_null(v);
}

static void test_newer_schema_refused(void **state)
{
    fx_t *fx = *state;
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    put_ok(v, "a", "alpha");
    keel_vault_close(v);
    char path[KEEL_PATH_MAX];
    path_in(path, fx->vault_dir, "vault.db");
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sql_ok(db, "PRAGMA user_version=999");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    keel_buf_t before, after;
    read_file(fx->vault_dir, "vault.db", &before);
    v = NULL;
    assert_int_equal(keel_vault_open(fx->vault_dir, fx->ks, &v), KEEL_ERR_FORMAT);
    assert_null(v);
    assert_non_null(strstr(keel_error_message(), "vault schema 999 is newer than this build"));
    read_file(fx->vault_dir, "vault.db", &after);
    assert_int_equal(before.len, after.len);
    assert_memory_equal(before.data, after.data, before.len);
    keel_buf_free(&before);
    keel_buf_free(&after);
}

static mode_t mode_of(const char *dir, const char *name)
{
    char path[KEEL_PATH_MAX];
    struct stat sb;
    path_in(path, dir, name);
    assert_int_equal(lstat(path, &sb), 0);
    return sb.st_mode & 07777;
}

static void test_database_settings(void **state)
{
    fx_t *fx = *state;
    /* Modes must not depend on the umask. */
    mode_t old_umask = umask(0);
    keel_vault_t *v = vault_open_ok(fx->vault_dir, fx->ks);
    put_ok(v, "a", "alpha");
    umask(old_umask);

    sqlite3 *db = keel_vault_db(v);
    assert_non_null(db);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0), "wal");
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    assert_int_equal(sql_int(db, "PRAGMA synchronous"), 2);
    assert_int_equal(sql_int(db, "PRAGMA secure_delete"), 1);
    assert_int_equal(sql_int(db, "PRAGMA foreign_keys"), 1);
    assert_int_equal(sql_int(db, "PRAGMA user_version"), EXPECTED_SCHEMA);
    assert_int_equal(keel_vault_schema_version(v), EXPECTED_SCHEMA);
    assert_int_equal(sql_int(db, "SELECT strict FROM pragma_table_list WHERE name = 'secrets'"), 1);

    assert_int_equal(mode_of(fx->root, "vault"), 0700);
    assert_int_equal(mode_of(fx->vault_dir, "vault.db"), 0600);
    assert_int_equal(mode_of(fx->vault_dir, "vault.db-wal"), 0600);
    assert_int_equal(mode_of(fx->vault_dir, "vault.db-shm"), 0600);
    assert_int_equal(mode_of(fx->vault_dir, "vault.key"), 0600);
    keel_vault_close(v);

    /* A database left group-readable is tightened on open. */
    char path[KEEL_PATH_MAX];
    path_in(path, fx->vault_dir, "vault.db");
    assert_int_equal(chmod(path, 0644), 0);
    v = vault_open_ok(fx->vault_dir, fx->ks);
    assert_int_equal(mode_of(fx->vault_dir, "vault.db"), 0600);
    get_equals(v, "a", "alpha");
    keel_vault_close(v);
}

/*
 * State for the power-cut tests: a vault with secrets, a non-protected table
 * of another module, a field sealed before the erase and the old key file.
 */
typedef struct {
    char base[KEEL_PATH_MAX];
    char vault_dir[KEEL_PATH_MAX];
    keel_buf_t old_key;
    uint8_t sealed[64];
    size_t sealed_len;
} populated_t;

static void populate(const char *root, unsigned long n, populated_t *p)
{
    char name[32];
    assert_int_equal(keel_snprintf(name, sizeof name, "case-%lu", n), KEEL_OK);
    path_in(p->base, root, name);
    path_in(p->vault_dir, p->base, "vault");
    assert_int_equal(keel_dir_make(p->base, 0700), KEEL_OK);
    keel_keystore_t *ks = NULL;
    assert_int_equal(keystore_open_in(p->base, "keystore", &ks), KEEL_OK);
    keel_vault_t *v = vault_open_ok(p->vault_dir, ks);
    put_ok(v, "a", "alpha");
    put_ok(v, "b", "bravo");
    sql_ok(keel_vault_db(v), "CREATE TABLE settings(k TEXT PRIMARY KEY, v TEXT) STRICT;"
                             "INSERT INTO settings VALUES ('mode', 'eco')");
    assert_int_equal(keel_vault_seal(v, "secrets", "value", "a", "alpha", 5, p->sealed,
                                     sizeof p->sealed, &p->sealed_len),
                     KEEL_OK);
    keel_vault_close(v);
    keel_keystore_close(ks);
    read_file(p->vault_dir, "vault.key", &p->old_key);
}

/* After an erase that failed or finished: reopen works, nothing protected
 * survives, nothing unprotected was lost, and the vault works. */
static void check_after_erase(const populated_t *p, keel_keystore_t *ks)
{
    keel_vault_t *v = vault_open_ok(p->vault_dir, ks);
    sqlite3 *db = keel_vault_db(v);
    uint8_t out[64];
    size_t m = 0;
    assert_int_equal(get_status(v, "a"), KEEL_ERR_NOT_FOUND);
    assert_int_equal(get_status(v, "b"), KEEL_ERR_NOT_FOUND);
    assert_int_equal(get_status(v, "c"), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_vault_open_field(v, "secrets", "value", "a", p->sealed, p->sealed_len, out,
                                           sizeof out, &m),
                     KEEL_ERR_VERIFY);
    assert_key_file_dead(ks, &p->old_key);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM settings WHERE k = 'mode' AND v = 'eco'"), 1);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM meta WHERE key = 'erase_pending'"), 0);
    put_ok(v, "d", "delta");
    keel_vault_close(v);
    v = vault_open_ok(p->vault_dir, ks);
    get_equals(v, "d", "delta");
    keel_vault_close(v);
}

static void test_fault_put_erase(void **state)
{
#ifndef KEEL_FAULT_INJECTION
    skip(); /* the storage fault hooks are compiled only into test builds */
#endif
    fx_t *fx = *state;
    unsigned long n;
    int done = 0;
    for (n = 1; !done && n < FAULT_LIMIT; n++) {
        populated_t p;
        populate(fx->root, n, &p);
        keel_keystore_t *ks = NULL;
        assert_int_equal(keystore_open_in(p.base, "keystore", &ks), KEEL_OK);
        keel_vault_t *v = vault_open_ok(p.vault_dir, ks);
        keel_fault_arm(n);
        keel_status_t st = keel_vault_secret_put(v, "c", "charlie", 7);
        if (st == KEEL_OK)
            st = keel_vault_erase(v);
        keel_fault_arm(0);
        if (st == KEEL_OK) {
            done = 1;
        } else {
            /* Until a reopen or another erase, the vault refuses to seal. */
            assert_int_not_equal(keel_vault_secret_put(v, "x", "x", 1), KEEL_OK);
        }
        keel_vault_close(v);
        check_after_erase(&p, ks);
        keel_keystore_close(ks);
        keel_buf_free(&p.old_key);
    }
    print_message("%s: completed after %lu injected faults\n", __func__, n - 2);
    assert_true(done);
    assert_true(n > 2); /* at least one injected fault */
}

static void test_fault_create(void **state)
{
#ifndef KEEL_FAULT_INJECTION
    skip(); /* the storage fault hooks are compiled only into test builds */
#endif
    fx_t *fx = *state;
    unsigned long n;
    int done = 0;
    for (n = 1; !done && n < FAULT_LIMIT; n++) {
        char base[KEEL_PATH_MAX], name[32], vdir[KEEL_PATH_MAX];
        assert_int_equal(keel_snprintf(name, sizeof name, "create-%lu", n), KEEL_OK);
        path_in(base, fx->root, name);
        path_in(vdir, base, "vault");
        assert_int_equal(keel_dir_make(base, 0700), KEEL_OK);
        keel_keystore_t *ks = NULL;
        assert_int_equal(keystore_open_in(base, "keystore", &ks), KEEL_OK);
        keel_vault_t *v = NULL;
        keel_fault_arm(n);
        keel_status_t st = keel_vault_open(vdir, ks, &v);
        keel_fault_arm(0);
        if (st == KEEL_OK)
            done = 1;
        else
            v = vault_open_ok(vdir, ks);
        put_ok(v, "a", "alpha");
        keel_vault_close(v);
        v = vault_open_ok(vdir, ks);
        get_equals(v, "a", "alpha");
        keel_vault_close(v);
        keel_keystore_close(ks);
    }
    print_message("%s: completed after %lu injected faults\n", __func__, n - 2);
    assert_true(done);
    assert_true(n > 2);
}

/* A real crash: the child dies at the N-th storage operation of the erase,
 * without closing anything; the parent reopens what is left. */
static void test_crash_erase(void **state)
{
#ifndef KEEL_FAULT_INJECTION
    skip(); /* the storage fault hooks are compiled only into test builds */
#endif
    fx_t *fx = *state;
    unsigned long n;
    int done = 0;
    for (n = 1; !done && n < FAULT_LIMIT; n++) {
        populated_t p;
        populate(fx->root, 1000 + n, &p);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            keel_keystore_t *ks = NULL;
            keel_vault_t *v = NULL;
            if (keystore_open_in(p.base, "keystore", &ks) != KEEL_OK || keel_vault_open(p.vault_dir, ks, &v) != KEEL_OK)
                _exit(2);
            keel_fault_arm(n);
            if (keel_vault_erase(v) != KEEL_OK)
                _exit(1);
            keel_fault_arm(0);
            keel_vault_close(v);
            keel_keystore_close(ks);
            _exit(0);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_true(WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 1);
        done = WEXITSTATUS(status) == 0;
        keel_keystore_t *ks = NULL;
        assert_int_equal(keystore_open_in(p.base, "keystore", &ks), KEEL_OK);
        check_after_erase(&p, ks);
        keel_keystore_close(ks);
        keel_buf_free(&p.old_key);
    }
    print_message("%s: completed after %lu injected faults\n", __func__, n - 2);
    assert_true(done);
    assert_true(n > 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_secret_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_keeps_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_moved_ciphertext_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_field_bound_to_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bit_flips_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_erase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_keystore_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_key_with_data_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_database_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_put_erase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_erase, setup, teardown),
    };
    return cmocka_run_group_tests_name("vault", tests, NULL, NULL);
}

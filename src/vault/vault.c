/*
 * The vault: one SQLite database for the device's secure state, with
 * field-level AEAD under a data key that the keystore wraps. See
 * docs/internals/vault.md for the file layout and the erase protocol.
 */
#include "keel/vault.h"

#include "keel/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DB_NAME "vault.db"
#define KEY_NAME "vault.key"
#define KEY_MAGIC_LEN 8
static const char key_magic[KEY_MAGIC_LEN] = "KEELVK01";
#define KEY_WRAP_AD "keel-vault-v1|data-key"
#define KEY_FILE_MAX (KEY_MAGIC_LEN + KEEL_AEAD_KEY_LEN + KEEL_KEYSTORE_SEAL_OVERHEAD)
/* "keel-vault-v1|" + three names and their separators. */
#define AD_MAX (16 + 3 * (KEEL_VAULT_NAME_MAX + 1))
#define SQL_MAX 256
#define BUSY_TIMEOUT_MS 5000
/* STRICT tables arrived in SQLite 3.37.0. */
#define SQLITE_MIN_VERSION 3037000
/* Set in the same transaction that deletes the protected rows; cleared once
 * the old keys are destroyed and a new one is in place. */
#define ERASE_PENDING_KEY "erase_pending"

/*
 * Schema migrations: migrations[i] takes user_version i to i + 1. Append new
 * steps at the end; never edit a step that has shipped.
 */
static const char *const migrations[] = {
    /* 1: the vault's own tables. */
    "CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) STRICT;"
    "CREATE TABLE secrets(name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,"
    " updated INTEGER NOT NULL) STRICT;",
    /* 2: the cloud link's outbox (keel/outbox.h) and the privacy module's
     * records, consent and cloud-erase requests (keel/privacy.h). The
     * counters and erase requests hold no personal data and outlive a
     * factory reset: sequence numbers never repeat, and the fleet's erase
     * receipt can still be shown after the reset. */
    "CREATE TABLE outbox(seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, created INTEGER NOT NULL,"
    " size INTEGER NOT NULL, msgid TEXT UNIQUE, body BLOB NOT NULL) STRICT;"
    "CREATE INDEX outbox_kind ON outbox(kind, seq);"
    "CREATE TABLE outbox_counters(name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) STRICT;"
    "CREATE TABLE privacy_records(id INTEGER PRIMARY KEY, category TEXT NOT NULL,"
    " created INTEGER NOT NULL, data BLOB NOT NULL) STRICT;"
    "CREATE INDEX privacy_records_age ON privacy_records(category, created);"
    "CREATE TABLE consent(purpose TEXT PRIMARY KEY NOT NULL, given INTEGER NOT NULL,"
    " version TEXT NOT NULL, time INTEGER NOT NULL) STRICT;"
    "CREATE TABLE consent_log(id INTEGER PRIMARY KEY, time INTEGER NOT NULL, record BLOB NOT NULL) STRICT;"
    "CREATE TABLE erase_requests(id TEXT PRIMARY KEY NOT NULL, requested INTEGER NOT NULL,"
    " confirmed INTEGER, receipt TEXT) STRICT;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/*
 * Tables that hold protected (sealed or personal) data. keel_vault_erase
 * deletes every row of each, in this order (children before parents), and
 * open refuses to make a new data key while any of them has rows.
 */
static const char *const protected_tables[] = {
    "secrets", "outbox", "privacy_records", "consent", "consent_log",
};
#define PROTECTED_COUNT (sizeof protected_tables / sizeof protected_tables[0])

struct keel_vault {
    sqlite3 *db;
    keel_keystore_t *ks;
    char db_path[KEEL_PATH_MAX];
    char key_path[KEEL_PATH_MAX];
    int schema;
    int have_key;
    uint8_t key[KEEL_AEAD_KEY_LEN];
    sqlite3_stmt *put;
    sqlite3_stmt *get;
    sqlite3_stmt *del;
};

static keel_status_t db_error(sqlite3 *db, const char *what)
{
    int rc = sqlite3_extended_errcode(db);
    keel_status_t st = (rc & 0xff) == SQLITE_NOTADB ? KEEL_ERR_FORMAT : KEEL_ERR_DB;
    return keel_errorf(st, "vault: %s: %s", what, sqlite3_errmsg(db));
}

static keel_status_t db_exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(db, sql);
    return KEEL_OK;
}

/* Ends a failed transaction, if one is still open, keeping the first error. */
static void db_rollback(sqlite3 *db)
{
    if (sqlite3_get_autocommit(db))
        return;
    if (sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
        keel_log(KEEL_LOG_WARN, "vault: rollback failed: %s", sqlite3_errmsg(db));
}

static keel_status_t db_finalize(sqlite3 *db, sqlite3_stmt *stmt, keel_status_t st, const char *what)
{
    if (sqlite3_finalize(stmt) != SQLITE_OK && st == KEEL_OK)
        st = db_error(db, what);
    return st;
}

/* Runs a statement that yields one row and returns its first column. */
static keel_status_t db_query_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        return db_error(db, sql);
    keel_status_t st = KEEL_OK;
    if (sqlite3_step(stmt) == SQLITE_ROW)
        *out = sqlite3_column_int(stmt, 0);
    else
        st = db_error(db, sql);
    return db_finalize(db, stmt, st, sql);
}

static keel_status_t db_query_text(sqlite3 *db, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        return db_error(db, sql);
    keel_status_t st;
    const unsigned char *text;
    if (sqlite3_step(stmt) != SQLITE_ROW)
        st = db_error(db, sql);
    else if ((text = sqlite3_column_text(stmt, 0)) == NULL)
        st = keel_errorf(KEEL_ERR_DB, "vault: %s returned nothing", sql);
    else
        st = keel_strlcpy(out, (const char *)text, cap);
    return db_finalize(db, stmt, st, sql);
}

/* Resets a cached statement for its next use. */
static keel_status_t stmt_reset(sqlite3 *db, sqlite3_stmt *stmt, keel_status_t st)
{
    if (sqlite3_reset(stmt) != SQLITE_OK && st == KEEL_OK)
        st = db_error(db, "reset statement");
    if (sqlite3_clear_bindings(stmt) != SQLITE_OK && st == KEEL_OK)
        st = db_error(db, "clear bindings");
    return st;
}

/* Table and column names: [a-z0-9_], 1..KEEL_VAULT_NAME_MAX. */
static int name_ok(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = strnlen(s, KEEL_VAULT_NAME_MAX + 1);
    if (n == 0 || n > KEEL_VAULT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* Row names: visible ASCII except '|' (the AD separator), 1..KEEL_VAULT_NAME_MAX. */
static int row_ok(const char *s)
{
    if (s == NULL)
        return 0;
    size_t n = strnlen(s, KEEL_VAULT_NAME_MAX + 1);
    if (n == 0 || n > KEEL_VAULT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~' || s[i] == '|')
            return 0;
    return 1;
}

static keel_status_t check_place(const char *table, const char *column, const char *row)
{
    if (!name_ok(table) || !name_ok(column))
        return keel_errorf(KEEL_ERR_ARG, "vault: table and column names must be [a-z0-9_], 1..%d "
                                         "characters", KEEL_VAULT_NAME_MAX);
    if (!row_ok(row))
        return keel_errorf(KEEL_ERR_ARG, "vault: row names must be visible ASCII without '|', "
                                         "1..%d characters", KEEL_VAULT_NAME_MAX);
    return KEEL_OK;
}

static keel_status_t check_key(const keel_vault_t *v)
{
    if (!v->have_key)
        return keel_errorf(KEEL_ERR_IO, "vault: an erase did not complete; call keel_vault_erase "
                                        "again or reopen the vault");
    return KEEL_OK;
}

static keel_status_t fix_mode(const char *path, int must_exist)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && !must_exist)
            return KEEL_OK;
        return keel_errorf(KEEL_ERR_IO, "open %s: %s", path, strerror(errno));
    }
    keel_status_t st = KEEL_OK;
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        st = keel_errorf(KEEL_ERR_IO, "stat %s: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        st = keel_errorf(KEEL_ERR_IO, "%s is not a regular file", path);
    else if ((sb.st_mode & 07777) != 0600 && fchmod(fd, 0600) != 0)
        st = keel_errorf(KEEL_ERR_IO, "chmod %s: %s", path, strerror(errno));
    close(fd);
    return st;
}

/* Creates the database file 0600 before SQLite does, so its journal files
 * (which SQLite creates with the database's mode) are 0600 whatever the umask. */
static keel_status_t precreate_db(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return keel_errorf(KEEL_ERR_IO, "create %s: %s", path, strerror(errno));
    if (close(fd) != 0)
        return keel_errorf(KEEL_ERR_IO, "close %s: %s", path, strerror(errno));
    return fix_mode(path, 1);
}

static keel_status_t fix_db_modes(const keel_vault_t *v)
{
    static const char *const suffixes[] = {"-wal", "-shm"};
    keel_status_t st = fix_mode(v->db_path, 1);
    for (size_t i = 0; st == KEEL_OK && i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char path[KEEL_PATH_MAX];
        st = keel_snprintf(path, sizeof path, "%s%s", v->db_path, suffixes[i]);
        if (st == KEEL_OK)
            st = fix_mode(path, 0);
    }
    return st;
}

/* Connection settings only; nothing here writes to the file. */
static keel_status_t connection_setup(sqlite3 *db)
{
    if (sqlite3_extended_result_codes(db, 1) != SQLITE_OK ||
        sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS) != SQLITE_OK ||
        sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL) != SQLITE_OK ||
        sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL) != SQLITE_OK)
        return db_error(db, "configure connection");
    return KEEL_OK;
}

static keel_status_t configure(sqlite3 *db)
{
    char mode[16];
    int n = 0;
    keel_status_t st;
    if ((st = db_query_text(db, "PRAGMA journal_mode=WAL", mode, sizeof mode)) != KEEL_OK)
        return st;
    if (strcmp(mode, "wal") != 0)
        return keel_errorf(KEEL_ERR_DB, "vault: the database refused WAL mode (journal_mode=%s)", mode);
    if ((st = db_exec(db, "PRAGMA synchronous=FULL")) != KEEL_OK ||
        (st = db_query_int(db, "PRAGMA synchronous", &n)) != KEEL_OK)
        return st;
    if (n != 2)
        return keel_errorf(KEEL_ERR_DB, "vault: synchronous=FULL did not take effect");
    if ((st = db_query_int(db, "PRAGMA secure_delete=ON", &n)) != KEEL_OK)
        return st;
    if (n != 1)
        return keel_errorf(KEEL_ERR_DB, "vault: secure_delete did not take effect");
    if ((st = db_exec(db, "PRAGMA foreign_keys=ON")) != KEEL_OK ||
        (st = db_query_int(db, "PRAGMA foreign_keys", &n)) != KEEL_OK)
        return st;
    if (n != 1)
        return keel_errorf(KEEL_ERR_DB, "vault: foreign_keys did not take effect");
    return KEEL_OK;
}

static keel_status_t refuse_newer(int found)
{
    return keel_errorf(KEEL_ERR_FORMAT, "vault schema %d is newer than this build (%d)", found,
                       SCHEMA_VERSION);
}

/* Applies each missing step in a transaction of its own, together with the
 * user_version bump, so a crash leaves the schema at one known version. */
static keel_status_t migrate(sqlite3 *db, int *version)
{
    for (;;) {
        int have = 0;
        keel_status_t st = db_exec(db, "BEGIN IMMEDIATE");
        if (st != KEEL_OK)
            return st;
        /* Read under the write lock: another process may have migrated. */
        st = db_query_int(db, "PRAGMA user_version", &have);
        if (st == KEEL_OK && (have < 0 || have > SCHEMA_VERSION))
            st = refuse_newer(have);
        if (st == KEEL_OK && have == SCHEMA_VERSION) {
            st = db_exec(db, "COMMIT");
            if (st == KEEL_OK) {
                *version = have;
                return KEEL_OK;
            }
        } else if (st == KEEL_OK) {
            char bump[SQL_MAX];
            st = db_exec(db, migrations[have]);
            if (st == KEEL_OK)
                st = keel_snprintf(bump, sizeof bump, "PRAGMA user_version=%d", have + 1);
            if (st == KEEL_OK)
                st = db_exec(db, bump);
            if (st == KEEL_OK)
                st = db_exec(db, "COMMIT");
        }
        if (st != KEEL_OK) {
            db_rollback(db);
            return st;
        }
    }
}

static keel_status_t prepare_one(sqlite3 *db, const char *sql, sqlite3_stmt **stmt)
{
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, stmt, NULL) != SQLITE_OK)
        return db_error(db, sql);
    return KEEL_OK;
}

static keel_status_t prepare(keel_vault_t *v)
{
    keel_status_t st = prepare_one(
        v->db, "INSERT OR REPLACE INTO secrets(name, value, updated) VALUES (?1, ?2, ?3)", &v->put);
    if (st == KEEL_OK)
        st = prepare_one(v->db, "SELECT value FROM secrets WHERE name = ?1", &v->get);
    if (st == KEEL_OK)
        st = prepare_one(v->db, "DELETE FROM secrets WHERE name = ?1", &v->del);
    return st;
}

static keel_status_t has_protected_rows(sqlite3 *db, int *any)
{
    *any = 0;
    for (size_t i = 0; i < PROTECTED_COUNT && !*any; i++) {
        char sql[SQL_MAX];
        keel_status_t st =
            keel_snprintf(sql, sizeof sql, "SELECT EXISTS (SELECT 1 FROM %s)", protected_tables[i]);
        if (st == KEEL_OK)
            st = db_query_int(db, sql, any);
        if (st != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

static keel_status_t erase_pending(sqlite3 *db, int *pending)
{
    return db_query_int(db, "SELECT EXISTS (SELECT 1 FROM meta WHERE key = '" ERASE_PENDING_KEY "')",
                        pending);
}

/* Unwraps dir/vault.key into v->key. */
static keel_status_t load_key(keel_vault_t *v, const keel_buf_t *file)
{
    if (file->len <= KEY_MAGIC_LEN || memcmp(file->data, key_magic, KEY_MAGIC_LEN) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "%s is not a Keel vault key", v->key_path);
    size_t n = 0;
    keel_status_t st = keel_keystore_unseal(v->ks, KEEL_VAULT_WRAP_LABEL, KEY_WRAP_AD,
                                            file->data + KEY_MAGIC_LEN, file->len - KEY_MAGIC_LEN,
                                            v->key, sizeof v->key, &n);
    if (st == KEEL_OK && n != sizeof v->key)
        st = KEEL_ERR_VERIFY;
    if (st != KEEL_OK) {
        keel_wipe(v->key, sizeof v->key);
        /* Driver failures (a missing token, I/O) keep their status; anything
         * that says "this blob is not ours" is a verification failure. */
        if (st == KEEL_ERR_VERIFY || st == KEEL_ERR_NOT_FOUND || st == KEEL_ERR_FORMAT ||
            st == KEEL_ERR_TOO_LARGE)
            return keel_errorf(KEEL_ERR_VERIFY, "vault key %s cannot be unwrapped by this keystore",
                               v->key_path);
    }
    return st;
}

/* Makes a fresh data key, wraps it (the keystore creates the wrapping key
 * on first use) and commits vault.key. */
static keel_status_t new_key(keel_vault_t *v)
{
    uint8_t file[KEY_FILE_MAX];
    size_t n = 0;
    memcpy(file, key_magic, KEY_MAGIC_LEN); /* NOLINT(bugprone-not-null-terminated-result): a binary file */
    keel_random_bytes(v->key, sizeof v->key);
    keel_status_t st = keel_keystore_seal(v->ks, KEEL_VAULT_WRAP_LABEL, KEY_WRAP_AD, v->key,
                                          sizeof v->key, file + KEY_MAGIC_LEN,
                                          sizeof file - KEY_MAGIC_LEN, &n);
    if (st == KEEL_OK)
        st = keel_file_write_atomic(v->key_path, file, KEY_MAGIC_LEN + n, 0600);
    if (st != KEEL_OK)
        keel_wipe(v->key, sizeof v->key);
    keel_wipe(file, sizeof file);
    return st;
}

/*
 * The second half of an erase, run by keel_vault_erase and again by open
 * when a crash interrupted it: the protected rows are already gone, so the
 * old wrapped key and its wrapping key are destroyed and a new key made.
 * Idempotent: each step succeeds when its target is already gone.
 */
static keel_status_t erase_finish(keel_vault_t *v)
{
    keel_wipe(v->key, sizeof v->key);
    keel_status_t st = keel_file_shred(v->key_path);
    if (st == KEEL_OK)
        st = keel_keystore_destroy(v->ks, KEEL_VAULT_WRAP_LABEL);
    if (st == KEEL_OK)
        st = new_key(v);
    if (st == KEEL_OK)
        st = db_exec(v->db, "DELETE FROM meta WHERE key = '" ERASE_PENDING_KEY "'");
    return st;
}

/* Old page images may sit in the WAL until a checkpoint; they hold only
 * ciphertext, so failing to truncate is worth a warning, not an error. */
static void checkpoint(keel_vault_t *v)
{
    int rc = sqlite3_wal_checkpoint_v2(v->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK)
        keel_log(KEEL_LOG_WARN, "vault: WAL checkpoint did not complete: %s", sqlite3_errmsg(v->db));
}

/*
 * Loads the data key, or makes one, or finishes an interrupted erase. The
 * decision and the key file are made under the database's write lock so two
 * openers cannot both make a key.
 */
static keel_status_t key_setup(keel_vault_t *v)
{
    int pending = 0, rows = 0;
    keel_buf_t file;
    keel_buf_init(&file, 0);
    v->have_key = 0;
    keel_status_t st = db_exec(v->db, "BEGIN IMMEDIATE");
    if (st == KEEL_OK)
        st = erase_pending(v->db, &pending);
    if (st == KEEL_OK && pending) {
        st = erase_finish(v);
    } else if (st == KEEL_OK) {
        st = keel_file_read(v->key_path, KEY_FILE_MAX, &file);
        if (st == KEEL_OK) {
            st = load_key(v, &file);
        } else if (st == KEEL_ERR_NOT_FOUND) {
            st = has_protected_rows(v->db, &rows);
            if (st == KEEL_OK && rows)
                st = keel_errorf(KEEL_ERR_VERIFY, "vault key %s is missing but the vault holds "
                                                  "sealed data; refusing to make a new key",
                                 v->key_path);
            else if (st == KEEL_OK)
                st = new_key(v);
        } else if (st == KEEL_ERR_TOO_LARGE) {
            st = keel_errorf(KEEL_ERR_FORMAT, "%s is not a Keel vault key", v->key_path);
        }
    }
    keel_buf_free(&file);
    if (st == KEEL_OK)
        st = db_exec(v->db, "COMMIT");
    if (st != KEEL_OK) {
        db_rollback(v->db);
        keel_wipe(v->key, sizeof v->key);
        return st;
    }
    /* Only now: until the pending mark is durably gone, a reopen would
     * replace this key and lose whatever it sealed. */
    v->have_key = 1;
    if (pending)
        checkpoint(v);
    return KEEL_OK;
}

void keel_vault_close(keel_vault_t *v)
{
    if (v == NULL)
        return;
    sqlite3_stmt *stmts[] = {v->put, v->get, v->del};
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++)
        if (sqlite3_finalize(stmts[i]) != SQLITE_OK)
            keel_log(KEEL_LOG_WARN, "vault: finalize: %s", sqlite3_errmsg(v->db));
    if (sqlite3_close(v->db) != SQLITE_OK)
        keel_log(KEEL_LOG_WARN, "vault: close: %s", sqlite3_errmsg(v->db));
    keel_wipe(v, sizeof *v);
    free(v);
}

keel_status_t keel_vault_open(const char *dir, keel_keystore_t *ks, keel_vault_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (dir == NULL || ks == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "vault open: missing argument");
    if (sqlite3_libversion_number() < SQLITE_MIN_VERSION)
        return keel_errorf(KEEL_ERR_UNSUPPORTED, "vault: SQLite %s is too old (3.37.0 or later needed)",
                           sqlite3_libversion());
    keel_status_t st = keel_crypto_init();
    if (st != KEEL_OK)
        return st;
    keel_vault_t *v = calloc(1, sizeof *v);
    if (v == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    v->ks = ks;
    v->schema = -1;
    if ((st = keel_path_join(v->db_path, sizeof v->db_path, dir, DB_NAME)) != KEEL_OK ||
        (st = keel_path_join(v->key_path, sizeof v->key_path, dir, KEY_NAME)) != KEEL_OK ||
        (st = keel_dir_make(dir, 0700)) != KEEL_OK || (st = precreate_db(v->db_path)) != KEEL_OK)
        goto fail;

    if (sqlite3_open_v2(v->db_path, &v->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL) !=
        SQLITE_OK) {
        st = v->db != NULL ? db_error(v->db, "open")
                           : keel_errorf(KEEL_ERR_NOMEM, "vault: out of memory opening %s", v->db_path);
        goto fail;
    }
    /* Look before touching: a newer schema is refused before WAL mode or a
     * migration could write to a file this build does not understand. */
    int found = 0;
    if ((st = connection_setup(v->db)) != KEEL_OK ||
        (st = db_query_int(v->db, "PRAGMA user_version", &found)) != KEEL_OK)
        goto fail;
    if (found < 0 || found > SCHEMA_VERSION) {
        st = refuse_newer(found);
        goto fail;
    }
    if ((st = configure(v->db)) != KEEL_OK || (st = migrate(v->db, &v->schema)) != KEEL_OK ||
        (st = prepare(v)) != KEEL_OK || (st = key_setup(v)) != KEEL_OK ||
        (st = fix_db_modes(v)) != KEEL_OK)
        goto fail;
    *out = v;
    return KEEL_OK;

fail:
    keel_vault_close(v);
    return st;
}

int keel_vault_schema_version(keel_vault_t *v)
{
    return v != NULL ? v->schema : -1;
}

sqlite3 *keel_vault_db(keel_vault_t *v)
{
    return v != NULL ? v->db : NULL;
}

static keel_status_t make_ad(char ad[AD_MAX], const char *table, const char *column, const char *row)
{
    return keel_snprintf(ad, AD_MAX, "keel-vault-v1|%s|%s|%s", table, column, row);
}

keel_status_t keel_vault_seal(keel_vault_t *v, const char *table, const char *column, const char *row,
                              const void *pt, size_t len, uint8_t *out, size_t cap, size_t *outlen)
{
    if (v == NULL || (pt == NULL && len > 0) || out == NULL || outlen == NULL)
        return keel_errorf(KEEL_ERR_ARG, "vault seal: missing argument");
    keel_status_t st = check_place(table, column, row);
    if (st != KEEL_OK)
        return st;
    if (len > KEEL_VAULT_VALUE_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "vault: value of %zu bytes exceeds %u", len,
                           KEEL_VAULT_VALUE_MAX);
    if (cap < len + KEEL_AEAD_OVERHEAD)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "vault seal: output buffer too small");
    if ((st = check_key(v)) != KEEL_OK)
        return st;
    char ad[AD_MAX];
    if ((st = make_ad(ad, table, column, row)) != KEEL_OK)
        return st;
    return keel_aead_seal(v->key, ad, strlen(ad), pt, len, out, cap, outlen);
}

keel_status_t keel_vault_open_field(keel_vault_t *v, const char *table, const char *column,
                                    const char *row, const uint8_t *blob, size_t bloblen, uint8_t *out,
                                    size_t cap, size_t *outlen)
{
    if (v == NULL || blob == NULL || (out == NULL && cap > 0) || outlen == NULL)
        return keel_errorf(KEEL_ERR_ARG, "vault open field: missing argument");
    keel_status_t st = check_place(table, column, row);
    if (st != KEEL_OK)
        return st;
    if (bloblen < KEEL_AEAD_OVERHEAD || bloblen - KEEL_AEAD_OVERHEAD > KEEL_VAULT_VALUE_MAX)
        return keel_errorf(KEEL_ERR_VERIFY, "vault field %s.%s of row '%s' has an impossible length",
                           table, column, row);
    if (cap < bloblen - KEEL_AEAD_OVERHEAD)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "vault open field: output buffer too small (%zu bytes "
                                               "needed)", bloblen - KEEL_AEAD_OVERHEAD);
    if ((st = check_key(v)) != KEEL_OK)
        return st;
    char ad[AD_MAX];
    if ((st = make_ad(ad, table, column, row)) != KEEL_OK)
        return st;
    uint8_t dummy;
    st = keel_aead_open(v->key, ad, strlen(ad), blob, bloblen, out != NULL ? out : &dummy, cap,
                        outlen);
    if (st == KEEL_ERR_VERIFY || st == KEEL_ERR_FORMAT)
        return keel_errorf(KEEL_ERR_VERIFY, "vault field %s.%s of row '%s' does not verify (edited, "
                                            "moved, or sealed under an erased key)", table, column, row);
    return st;
}

keel_status_t keel_vault_secret_put(keel_vault_t *v, const char *name, const void *data, size_t len)
{
    if (v == NULL || (data == NULL && len > 0))
        return keel_errorf(KEEL_ERR_ARG, "vault secret put: missing argument");
    if (!row_ok(name))
        return keel_errorf(KEEL_ERR_ARG, "vault: secret names must be visible ASCII without '|', "
                                         "1..%d characters", KEEL_VAULT_NAME_MAX);
    if (len > KEEL_VAULT_VALUE_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "vault: secret of %zu bytes exceeds %u", len,
                           KEEL_VAULT_VALUE_MAX);
    time_t now = time(NULL);
    if (now == (time_t)-1)
        return keel_errorf(KEEL_ERR_IO, "vault: the clock is unavailable");
    size_t cap = len + KEEL_AEAD_OVERHEAD, n = 0;
    uint8_t *blob = malloc(cap);
    if (blob == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = keel_vault_seal(v, "secrets", "value", name, data, len, blob, cap, &n);
    if (st == KEEL_OK) {
        if (sqlite3_bind_text(v->put, 1, name, -1, SQLITE_TRANSIENT) != SQLITE_OK ||
            sqlite3_bind_blob(v->put, 2, blob, (int)n, SQLITE_TRANSIENT) != SQLITE_OK ||
            sqlite3_bind_int64(v->put, 3, (sqlite3_int64)now) != SQLITE_OK)
            st = db_error(v->db, "bind secret");
        else if (sqlite3_step(v->put) != SQLITE_DONE)
            st = db_error(v->db, "store secret");
        st = stmt_reset(v->db, v->put, st);
    }
    keel_wipe(blob, cap);
    free(blob);
    return st;
}

keel_status_t keel_vault_secret_time(keel_vault_t *v, const char *name, int64_t *updated)
{
    if (v == NULL || updated == NULL || !row_ok(name))
        return keel_errorf(KEEL_ERR_ARG, "vault secret time: bad argument");
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(v->db, "SELECT updated FROM secrets WHERE name = ?1", -1, &s, NULL) != SQLITE_OK)
        return db_error(v->db, "prepare secret time");
    keel_status_t st = KEEL_OK;
    int rc = sqlite3_bind_text(s, 1, name, -1, SQLITE_TRANSIENT) == SQLITE_OK ? sqlite3_step(s) : SQLITE_ERROR;
    if (rc == SQLITE_ROW)
        *updated = sqlite3_column_int64(s, 0);
    else if (rc == SQLITE_DONE)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "vault secret '%s' does not exist", name);
    else
        st = db_error(v->db, "read secret time");
    sqlite3_finalize(s);
    return st;
}

keel_status_t keel_vault_secret_get(keel_vault_t *v, const char *name, uint8_t *out, size_t cap,
                                    size_t *outlen)
{
    if (v == NULL || (out == NULL && cap > 0) || outlen == NULL)
        return keel_errorf(KEEL_ERR_ARG, "vault secret get: missing argument");
    if (!row_ok(name))
        return keel_errorf(KEEL_ERR_ARG, "vault: secret names must be visible ASCII without '|', "
                                         "1..%d characters", KEEL_VAULT_NAME_MAX);
    keel_status_t st = check_key(v);
    if (st != KEEL_OK)
        return st;
    if (sqlite3_bind_text(v->get, 1, name, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        return stmt_reset(v->db, v->get, db_error(v->db, "bind secret name"));
    int rc = sqlite3_step(v->get);
    if (rc == SQLITE_ROW) {
        const uint8_t *blob = sqlite3_column_blob(v->get, 0);
        int n = sqlite3_column_bytes(v->get, 0);
        if (blob == NULL || n <= 0)
            st = sqlite3_errcode(v->db) == SQLITE_NOMEM
                     ? keel_errorf(KEEL_ERR_NOMEM, "out of memory")
                     : keel_errorf(KEEL_ERR_VERIFY, "vault secret '%s' is empty", name);
        else
            st = keel_vault_open_field(v, "secrets", "value", name, blob, (size_t)n, out, cap, outlen);
    } else if (rc == SQLITE_DONE) {
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "vault secret '%s' does not exist", name);
    } else {
        st = db_error(v->db, "read secret");
    }
    return stmt_reset(v->db, v->get, st);
}

keel_status_t keel_vault_secret_delete(keel_vault_t *v, const char *name)
{
    if (v == NULL)
        return keel_errorf(KEEL_ERR_ARG, "vault secret delete: missing argument");
    if (!row_ok(name))
        return keel_errorf(KEEL_ERR_ARG, "vault: secret names must be visible ASCII without '|', "
                                         "1..%d characters", KEEL_VAULT_NAME_MAX);
    keel_status_t st = KEEL_OK;
    if (sqlite3_bind_text(v->del, 1, name, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        st = db_error(v->db, "bind secret name");
    else if (sqlite3_step(v->del) != SQLITE_DONE)
        st = db_error(v->db, "delete secret");
    int deleted = st == KEEL_OK && sqlite3_changes(v->db) > 0;
    st = stmt_reset(v->db, v->del, st);
    /* secure_delete zeroes the page in the database; the checkpoint also
     * drops the older page images from the WAL. */
    if (st == KEEL_OK && deleted)
        checkpoint(v);
    return st;
}

keel_status_t keel_vault_erase(keel_vault_t *v)
{
    if (v == NULL)
        return keel_errorf(KEEL_ERR_ARG, "vault erase: missing argument");
    /* Rows first, with the pending mark, in one transaction: a crash after
     * it leaves no data the old key could be needed for, and the mark makes
     * the next open finish the job (see docs/internals/vault.md). */
    keel_status_t st = db_exec(v->db, "BEGIN IMMEDIATE");
    if (st == KEEL_OK)
        st = db_exec(v->db, "INSERT OR REPLACE INTO meta(key, value) VALUES ('" ERASE_PENDING_KEY
                            "', x'01')");
    for (size_t i = 0; st == KEEL_OK && i < PROTECTED_COUNT; i++) {
        char sql[SQL_MAX];
        st = keel_snprintf(sql, sizeof sql, "DELETE FROM %s", protected_tables[i]);
        if (st == KEEL_OK)
            st = db_exec(v->db, sql);
    }
    if (st == KEEL_OK)
        st = db_exec(v->db, "COMMIT");
    if (st != KEEL_OK) {
        db_rollback(v->db);
        return st;
    }
    return key_setup(v);
}

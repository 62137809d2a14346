/*
 * The fleet database on SQLite: one file, 0600, WAL (readers never wait for
 * the writer), foreign keys on, a 5 s busy timeout, synchronous NORMAL (a
 * power cut may lose the last commits, never corrupt: the fleet's data
 * arrives again from the devices' outboxes). Statements are prepared once
 * per connection and kept, keyed by their SQL text: ingest runs the same
 * few thousands of times a second.
 */
#include "db_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    sqlite3_stmt *stmt;
    unsigned nparams;
    bool busy; /* in use (a row callback that runs the same statement gets its own) */
} cached_t;

typedef struct {
    sqlite3 *db;
    keel_fleet_sql_key_t keys[KEEL_FLEET_DB_CACHE_MAX]; /* keys[i] is cache[i]'s */
    cached_t cache[KEEL_FLEET_DB_CACHE_MAX];
    unsigned ncache;
} lite_t;

static keel_status_t lite_error(sqlite3 *db, int rc, const char *what)
{
    int ext = sqlite3_extended_errcode(db);
    const char *msg = sqlite3_errmsg(db);
    switch (rc & 0xFF) {
    case SQLITE_CONSTRAINT:
        if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY)
            return keel_errorf(KEEL_ERR_EXISTS, "%s: %s", what, msg);
        return keel_errorf(KEEL_ERR_DB, "%s: %s", what, msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return keel_errorf(KEEL_ERR_BUSY, "%s: %s", what, msg);
    case SQLITE_NOMEM:
        return keel_errorf(KEEL_ERR_NOMEM, "%s: out of memory", what);
    default:
        return keel_errorf(KEEL_ERR_DB, "%s: %s", what, msg);
    }
}

static keel_status_t prepare(lite_t *l, const char *sql, sqlite3_stmt **out, unsigned *nparams)
{
    char *q = NULL;
    keel_status_t st = keel_fleet_sql_scan(sql, nparams, &q);
    if (st != KEEL_OK)
        return st;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(l->db, q, -1, SQLITE_PREPARE_PERSISTENT, out, &tail);
    if (rc != SQLITE_OK) {
        st = lite_error(l->db, rc, "prepare");
    } else if (*out == NULL || (tail != NULL && tail[strspn(tail, " \t\r\n;")] != '\0')) {
        sqlite3_finalize(*out);
        *out = NULL;
        st = keel_errorf(KEEL_ERR_ARG, "fleet database: exactly one statement per exec");
    }
    free(q);
    return st;
}

/* The cached statement for sql, or a fresh one (*temp) when the cache is full or it is in use. */
static keel_status_t stmt_get(lite_t *l, const char *sql, cached_t **ent, sqlite3_stmt **temp, unsigned *nparams)
{
    *ent = NULL;
    *temp = NULL;
    uint32_t h = 0;
    unsigned i = keel_fleet_sql_find(l->keys, l->ncache, sql, &h);
    if (i < l->ncache && !l->cache[i].busy) {
        cached_t *c = &l->cache[i];
        c->busy = true;
        *ent = c;
        *nparams = c->nparams;
        return KEEL_OK;
    }
    sqlite3_stmt *s = NULL;
    keel_status_t st = prepare(l, sql, &s, nparams);
    if (st != KEEL_OK)
        return st;
    if (i == l->ncache && l->ncache < KEEL_FLEET_DB_CACHE_MAX) {
        cached_t *c = &l->cache[l->ncache];
        if (keel_fleet_sql_key_set(&l->keys[l->ncache], sql, h)) {
            c->stmt = s;
            c->nparams = *nparams;
            c->busy = true;
            l->ncache++;
            *ent = c;
            return KEEL_OK;
        }
    }
    *temp = s;
    return KEEL_OK;
}

static keel_status_t lite_exec(keel_fleet_db_t *db, const char *sql, const keel_fleet_val_t *params,
                               unsigned nparams, keel_fleet_row_fn rows, void *arg, uint64_t *changed)
{
    lite_t *l = db->impl;
    cached_t *ent = NULL;
    sqlite3_stmt *temp = NULL;
    unsigned want = 0;
    keel_status_t st = stmt_get(l, sql, &ent, &temp, &want);
    if (st != KEEL_OK)
        return st;
    sqlite3_stmt *s = ent != NULL ? ent->stmt : temp;
    if (want != nparams)
        st = keel_errorf(KEEL_ERR_ARG, "fleet database: the statement takes %u parameters, %u given", want, nparams);
    for (unsigned i = 0; st == KEEL_OK && i < nparams; i++) {
        const keel_fleet_val_t *v = &params[i];
        int rc;
        if (v->type == KEEL_FV_INT)
            rc = sqlite3_bind_int64(s, (int)i + 1, v->i);
        else if (v->type == KEEL_FV_TEXT)
            rc = sqlite3_bind_text(s, (int)i + 1, v->s, (int)v->len, SQLITE_STATIC);
        else
            rc = sqlite3_bind_null(s, (int)i + 1);
        if (rc != SQLITE_OK)
            st = lite_error(l->db, rc, "bind");
    }
    int rc = SQLITE_DONE;
    while (st == KEEL_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (rows == NULL)
            continue;
        keel_fleet_val_t cols[32];
        int n = sqlite3_column_count(s);
        if (n > (int)(sizeof cols / sizeof cols[0])) {
            st = keel_errorf(KEEL_ERR_ARG, "fleet database: more than %zu columns", sizeof cols / sizeof cols[0]);
            break;
        }
        for (int c = 0; c < n; c++) {
            switch (sqlite3_column_type(s, c)) {
            case SQLITE_INTEGER:
                cols[c] = KEEL_FV_I(sqlite3_column_int64(s, c));
                break;
            case SQLITE_NULL:
                cols[c] = KEEL_FV_NUL;
                break;
            default: {
                const char *t = (const char *)sqlite3_column_text(s, c);
                if (t == NULL) {
                    st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
                    break;
                }
                cols[c] = KEEL_FV_SN(t, (size_t)sqlite3_column_bytes(s, c));
            }
            }
        }
        if (st == KEEL_OK)
            st = rows(arg, cols, (unsigned)n);
    }
    if (st == KEEL_OK && rc != SQLITE_DONE)
        st = lite_error(l->db, rc, "statement");
    if (st == KEEL_OK && changed != NULL && !sqlite3_stmt_readonly(s))
        *changed = (uint64_t)sqlite3_changes64(l->db);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (ent != NULL)
        ent->busy = false;
    sqlite3_finalize(temp);
    return st;
}

static keel_status_t lite_script(keel_fleet_db_t *db, const char *sql)
{
    lite_t *l = db->impl;
    int rc = sqlite3_exec(l->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? KEEL_OK : lite_error(l->db, rc, "statement");
}

static bool lite_in_tx(const keel_fleet_db_t *db)
{
    const lite_t *l = db->impl;
    return sqlite3_get_autocommit(l->db) == 0;
}

static void lite_close(keel_fleet_db_t *db)
{
    lite_t *l = db->impl;
    if (l == NULL)
        return;
    for (unsigned i = 0; i < l->ncache; i++) {
        sqlite3_finalize(l->cache[i].stmt);
        free(l->keys[i].sql);
    }
    sqlite3_close_v2(l->db);
    free(l);
    db->impl = NULL;
}

static const keel_fleet_driver_t lite_driver = {
    .name = "sqlite",
    .exec = lite_exec,
    .script = lite_script,
    .in_tx = lite_in_tx,
    .close = lite_close,
    /* The write lock at once: two writers never deadlock upgrading a read lock. */
    .begin_sql = "BEGIN IMMEDIATE",
    .migrate_lock_sql = NULL,
};

/* The file exists 0600 before SQLite opens it (its -wal and -shm take the
 * same mode); an existing one is ours and a regular file, or refused.
 *
 * An existing file is only stat()ed, never opened here: closing any
 * descriptor of a file drops every POSIX lock this process holds on it, so
 * an open()/close() while another connection of this process (fleetd opens
 * one per thread) has the database open would silently release that
 * connection's locks, and a third connection could then delete the WAL it
 * is writing into. A file that did not exist has no such locks. */
static keel_status_t precreate(const char *path)
{
    struct stat sb;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) {
        close(fd);
        return KEEL_OK;
    }
    if (errno != EEXIST)
        return keel_errorf(KEEL_ERR_IO, "fleet database %s: %s", path, strerror(errno));
    if (lstat(path, &sb) != 0)
        return keel_errorf(KEEL_ERR_IO, "fleet database %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode) || sb.st_uid != geteuid())
        return keel_errorf(KEEL_ERR_CONFIG, "fleet database %s: not a regular file of ours", path);
    if ((sb.st_mode & 077) != 0 && chmod(path, 0600) != 0)
        return keel_errorf(KEEL_ERR_IO, "fleet database %s: chmod: %s", path, strerror(errno));
    return KEEL_OK;
}

/* Before SQLite's first use in the process: no memory statistics. They
 * cost a global mutex on every allocation, a tenth of ingest's time, and
 * nothing reads them. Once SQLite is initialized the call is refused
 * (SQLITE_MISUSE) and changes nothing, which is fine. */
static void lite_global(void)
{
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* What ingest remembers of device_seq (db_internal.h) goes stale when this
 * connection changes devices or device_seq other than through ingest, or
 * rolls back. (The truncate optimization skips this hook: the store never
 * deletes from either table.) */
static void lite_update_hook(void *arg, int op, const char *dbname, const char *table, sqlite3_int64 rowid)
{
    keel_fleet_db_t *db = arg;
    (void)op, (void)dbname, (void)rowid;
    if (!db->seq_own && (strcmp(table, "device_seq") == 0 || strcmp(table, "devices") == 0))
        db->seq_stale = true;
}

static void lite_rollback_hook(void *arg)
{
    keel_fleet_db_t *db = arg;
    db->seq_stale = true;
}

keel_status_t keel_fleet_sqlite_open(const char *path, keel_fleet_db_t *db)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (pthread_once(&once, lite_global) != 0)
        return keel_errorf(KEEL_ERR_DB, "fleet database: pthread_once failed");
    if (strlen(path) >= KEEL_PATH_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "fleet database path too long");
    keel_status_t st = precreate(path);
    if (st != KEEL_OK)
        return st;
    lite_t *l = calloc(1, sizeof *l);
    if (l == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    int rc = sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        st = keel_errorf(KEEL_ERR_DB, "fleet database %s: %s", path,
                         l->db != NULL ? sqlite3_errmsg(l->db) : sqlite3_errstr(rc));
        sqlite3_close_v2(l->db);
        free(l);
        return st;
    }
    db->drv = &lite_driver;
    db->kind = KEEL_FLEET_DB_SQLITE;
    db->impl = l;
    sqlite3_extended_result_codes(l->db, 1);
    db->seq_stale = true;
    sqlite3_update_hook(l->db, lite_update_hook, db);
    sqlite3_rollback_hook(l->db, lite_rollback_hook, db);
    if (sqlite3_busy_timeout(l->db, 5000) != SQLITE_OK)
        st = lite_error(l->db, SQLITE_ERROR, "busy timeout");
    /* journal_mode answers with the mode it ended in: WAL or nothing. */
    char mode[16] = "";
    sqlite3_stmt *s = NULL;
    if (st == KEEL_OK && (rc = sqlite3_prepare_v2(l->db, "PRAGMA journal_mode=WAL", -1, &s, NULL)) != SQLITE_OK)
        st = lite_error(l->db, rc, "journal mode");
    if (st == KEEL_OK && sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0) != NULL)
        snprintf(mode, sizeof mode, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    if (st == KEEL_OK && strcmp(mode, "wal") != 0)
        st = keel_errorf(KEEL_ERR_DB, "fleet database %s: WAL mode refused (%s)", path, mode);
    if (st == KEEL_OK)
        st = lite_script(db, "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL; PRAGMA trusted_schema=OFF; PRAGMA wal_autocheckpoint=32768; PRAGMA cache_size=-32768");
    if (st != KEEL_OK) {
        lite_close(db);
        db->drv = NULL;
    }
    return st;
}

/*
 * src/auth/throttle.c - the brute-force throttle's state, kept in the vault's
 * database so that a restart does not reset it (5.1-5). Two tables:
 *   auth_sources(source, failures, last_failure)  only sources with failures
 *   auth_budget(at)                               global slots taken in the window
 * Times are the caller's `now` (seconds, wall clock). A stored time later
 * than `now` (the clock went back) is pulled back to `now`, so a clock step
 * never makes a wait longer than the design allows nor erases it.
 * See docs/internals/auth.md for the resulting guess rates.
 */
#include "auth_internal.h"

#include <sqlite3.h>
#include <string.h>

/* A failure count past this is as good as infinite (and cannot overflow). */
#define FAILURES_CAP 1000000
#define SAVEPOINT_SQL "SAVEPOINT keel_auth"
#define RELEASE_SQL "RELEASE keel_auth"
#define ROLLBACK_SQL "ROLLBACK TO keel_auth"

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS auth_sources(source TEXT PRIMARY KEY NOT NULL,"
    " failures INTEGER NOT NULL, last_failure INTEGER NOT NULL) STRICT;"
    "CREATE INDEX IF NOT EXISTS auth_sources_age ON auth_sources(last_failure);"
    "CREATE TABLE IF NOT EXISTS auth_budget(at INTEGER NOT NULL) STRICT;"
    "CREATE INDEX IF NOT EXISTS auth_budget_at ON auth_budget(at);";

static keel_status_t db_error(sqlite3 *db, const char *what)
{
    return keel_errorf(KEEL_ERR_DB, "auth: %s: %s", what, sqlite3_errmsg(db));
}

static keel_status_t exec(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(db, sql);
    return KEEL_OK;
}

/* Ends the savepoint: released on success, rolled back (keeping the first
 * error) otherwise. */
static keel_status_t end_savepoint(sqlite3 *db, keel_status_t st)
{
    if (st == KEEL_OK)
        return exec(db, RELEASE_SQL);
    if (sqlite3_exec(db, ROLLBACK_SQL, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, RELEASE_SQL, NULL, NULL, NULL) != SQLITE_OK)
        keel_log(KEEL_LOG_WARN, "auth: rollback failed: %s", sqlite3_errmsg(db));
    return st;
}

/*
 * Runs one statement: ?1 is the text, ?2 and ?3 the integers (those the
 * statement does not use are skipped). When `out` is given, reads up to two
 * integer columns of its first row; *found says whether there was one.
 */
typedef struct {
    const char *text;  /* bound to ?1 when not NULL */
    int64_t ints[2];   /* bound to ?2 and ?3 */
    int nints;
} binds_t;

static keel_status_t run(sqlite3 *db, const char *sql, const binds_t *b, int64_t out[2], bool *found)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        return db_error(db, "prepare");
    keel_status_t st = KEEL_OK;
    int params = sqlite3_bind_parameter_count(stmt);
    if (b->text != NULL && params >= 1 && sqlite3_bind_text(stmt, 1, b->text, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        st = db_error(db, "bind");
    for (int i = 0; st == KEEL_OK && i < b->nints && i + 2 <= params; i++)
        if (sqlite3_bind_int64(stmt, i + 2, (sqlite3_int64)b->ints[i]) != SQLITE_OK)
            st = db_error(db, "bind");
    if (st == KEEL_OK) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW && out != NULL) {
            out[0] = sqlite3_column_int64(stmt, 0);
            out[1] = sqlite3_column_count(stmt) > 1 ? sqlite3_column_int64(stmt, 1) : 0;
            if (found != NULL)
                *found = sqlite3_column_type(stmt, 0) != SQLITE_NULL;
        } else if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
            if (found != NULL)
                *found = false;
        } else {
            st = db_error(db, "step");
        }
    }
    if (sqlite3_finalize(stmt) != SQLITE_OK && st == KEEL_OK)
        st = db_error(db, "finalize");
    return st;
}

keel_status_t auth_throttle_init(keel_auth_t *a)
{
    return exec(keel_vault_db(a->v), schema_sql);
}

uint64_t auth_backoff(const keel_auth_config_t *cfg, int64_t failures)
{
    if (failures < (int64_t)cfg->free_failures)
        return 0;
    uint64_t k = (uint64_t)(failures - (int64_t)cfg->free_failures);
    if (k >= 32)
        return cfg->backoff_max_s;
    uint64_t d = (uint64_t)cfg->backoff_base_s << k;
    return d > cfg->backoff_max_s ? cfg->backoff_max_s : d;
}

/* The source's wait, and whether its attempt needs a global slot. */
static keel_status_t source_state(sqlite3 *db, const keel_auth_config_t *cfg, const char *source, int64_t now,
                                  uint64_t *wait, bool *budgeted)
{
    binds_t b = {.text = source};
    int64_t row[2] = {0, 0};
    bool found = false;
    keel_status_t st = run(db, "SELECT failures, last_failure FROM auth_sources WHERE source = ?1", &b, row,
                           &found);
    if (st != KEEL_OK)
        return st;
    *wait = 0;
    if (found) {
        *budgeted = row[0] > 0;
        uint64_t ready = (uint64_t)row[1] + auth_backoff(cfg, row[0]);
        if (ready > (uint64_t)now)
            *wait = ready - (uint64_t)now;
        return KEEL_OK;
    }
    /* A source with no failures is free, unless the table is full: then
     * eviction would hand out fresh free failures to an attacker with many
     * addresses, so new sources pay into the global budget too. */
    binds_t none = {0};
    int64_t count[2] = {0, 0};
    st = run(db, "SELECT COUNT(*) FROM auth_sources", &none, count, NULL);
    if (st == KEEL_OK)
        *budgeted = count[0] >= KEEL_AUTH_SOURCES_MAX;
    return st;
}

/* Seconds until the global window has a free slot (0: one is free now). */
static keel_status_t global_wait(sqlite3 *db, uint32_t per_minute, int64_t now, uint64_t *wait)
{
    binds_t none = {0};
    int64_t count[2] = {0, 0};
    keel_status_t st = run(db, "SELECT COUNT(*) FROM auth_budget", &none, count, NULL);
    *wait = 0;
    if (st != KEEL_OK || count[0] < (int64_t)per_minute)
        return st;
    /* The slot frees when the (count - per_minute + 1)-th oldest leaves. */
    binds_t off = {.ints = {count[0] - (int64_t)per_minute}, .nints = 1};
    int64_t at[2] = {0, 0};
    bool found = false;
    st = run(db, "SELECT at FROM auth_budget ORDER BY at LIMIT 1 OFFSET ?2", &off, at, &found);
    if (st == KEEL_OK && found) {
        int64_t free_at = at[0] + AUTH_WINDOW_S;
        *wait = free_at > now ? (uint64_t)(free_at - now) : 1;
    }
    return st;
}

keel_status_t auth_throttle_admit(keel_auth_t *a, const char *source, int64_t now, uint32_t *retry_after)
{
    sqlite3 *db = keel_vault_db(a->v);
    *retry_after = 0;
    keel_status_t st = exec(db, SAVEPOINT_SQL);
    if (st != KEEL_OK)
        return st;
    binds_t t = {.ints = {now, now - AUTH_WINDOW_S}, .nints = 2};
    st = run(db, "UPDATE auth_sources SET last_failure = ?2 WHERE last_failure > ?2", &t, NULL, NULL);
    if (st == KEEL_OK)
        st = run(db, "UPDATE auth_budget SET at = ?2 WHERE at > ?2", &t, NULL, NULL);
    if (st == KEEL_OK)
        st = run(db, "DELETE FROM auth_budget WHERE at <= ?3", &t, NULL, NULL);

    uint64_t wait_source = 0, wait_global = 0;
    bool budgeted = false;
    if (st == KEEL_OK)
        st = source_state(db, &a->cfg, source, now, &wait_source, &budgeted);
    if (st == KEEL_OK && budgeted)
        st = global_wait(db, a->cfg.global_per_minute, now, &wait_global);
    uint64_t wait = wait_source > wait_global ? wait_source : wait_global;
    if (st == KEEL_OK && wait == 0 && budgeted) {
        binds_t at = {.ints = {now}, .nints = 1};
        st = run(db, "INSERT INTO auth_budget(at) VALUES (?2)", &at, NULL, NULL);
    }
    st = end_savepoint(db, st);
    if (st == KEEL_OK)
        *retry_after = wait > UINT32_MAX ? UINT32_MAX : (uint32_t)wait;
    return st;
}

keel_status_t auth_throttle_fail(keel_auth_t *a, const char *source, int64_t now)
{
    sqlite3 *db = keel_vault_db(a->v);
    keel_status_t st = exec(db, SAVEPOINT_SQL);
    if (st != KEEL_OK)
        return st;
    binds_t b = {.text = source, .ints = {now, FAILURES_CAP}, .nints = 2};
    st = run(db,
             "INSERT INTO auth_sources(source, failures, last_failure) VALUES (?1, 1, ?2)"
             " ON CONFLICT(source) DO UPDATE SET failures = min(failures + 1, ?3),"
             " last_failure = max(last_failure, excluded.last_failure)",
             &b, NULL, NULL);
    /* Keep at most KEEL_AUTH_SOURCES_MAX rows: the longest quiet go first. */
    binds_t cap = {.text = source, .ints = {KEEL_AUTH_SOURCES_MAX}, .nints = 1};
    if (st == KEEL_OK)
        st = run(db,
                 "DELETE FROM auth_sources WHERE source IN (SELECT source FROM auth_sources"
                 " WHERE source <> ?1 ORDER BY last_failure, source"
                 " LIMIT max(0, (SELECT COUNT(*) FROM auth_sources) - ?2))",
                 &cap, NULL, NULL);
    return end_savepoint(db, st);
}

keel_status_t auth_throttle_clear(keel_auth_t *a, const char *source)
{
    binds_t b = {.text = source};
    return run(keel_vault_db(a->v), "DELETE FROM auth_sources WHERE source = ?1", &b, NULL, NULL);
}

keel_status_t auth_throttle_reset(keel_auth_t *a)
{
    sqlite3 *db = keel_vault_db(a->v);
    keel_status_t st = exec(db, SAVEPOINT_SQL);
    if (st != KEEL_OK)
        return st;
    return end_savepoint(db, exec(db, "DELETE FROM auth_sources; DELETE FROM auth_budget;"));
}

/*
 * The fleet database's front: URL dispatch, argument checks shared by both
 * drivers ($N against nparams, text that both servers accept), transactions
 * and the migration runner.
 */
#include "db_internal.h"
#include "keel/crypto.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* Strict UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF) and no NUL: PostgreSQL refuses the rest, and a refused
 * statement would abort the caller's whole transaction there. */
static bool text_ok(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        unsigned need, min;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1, min = 0x80, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2, min = 0x800, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        for (unsigned k = 1; k <= need; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

keel_status_t keel_fleet_sql_scan(const char *sql, unsigned *maxn, char **sqlite)
{
    char *copy = NULL;
    if (sqlite != NULL) {
        *sqlite = NULL;
        if ((copy = strdup(sql)) == NULL)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    unsigned max = 0;
    for (size_t i = 0; sql[i] != '\0'; i++) {
        char c = sql[i];
        if (c == '\'' || c == '"') {
            /* A doubled quote inside is the quote itself: the scan just
             * leaves and re-enters the literal. */
            size_t j = i + 1;
            while (sql[j] != '\0' && sql[j] != c)
                j++;
            if (sql[j] == '\0')
                break;
            i = j;
        } else if (c == '-' && sql[i + 1] == '-') {
            while (sql[i + 1] != '\0' && sql[i + 1] != '\n')
                i++;
        } else if (c == '/' && sql[i + 1] == '*') {
            const char *end = strstr(sql + i + 2, "*/");
            if (end == NULL)
                break;
            i = (size_t)(end - sql) + 1;
        } else if (c == '?') {
            free(copy);
            return keel_errorf(KEEL_ERR_ARG, "SQL placeholder at offset %zu: write $N, not ?", i);
        } else if (c == '$') {
            unsigned n = 0;
            size_t j = i + 1;
            while (sql[j] >= '0' && sql[j] <= '9' && n <= KEEL_FLEET_DB_PARAMS_MAX)
                n = n * 10 + (unsigned)(sql[j++] - '0');
            if (j == i + 1 || n == 0 || n > KEEL_FLEET_DB_PARAMS_MAX) {
                free(copy);
                return keel_errorf(KEEL_ERR_ARG, "SQL placeholder at offset %zu: want $1..$%d", i,
                                   KEEL_FLEET_DB_PARAMS_MAX);
            }
            if (copy != NULL)
                copy[i] = '?';
            if (n > max)
                max = n;
            i = j - 1;
        }
    }
    *maxn = max;
    if (sqlite != NULL)
        *sqlite = copy;
    return KEEL_OK;
}

keel_status_t keel_fleet_val_int(const keel_fleet_val_t *v, int64_t *out)
{
    if (v->type == KEEL_FV_INT) {
        *out = v->i;
        return KEEL_OK;
    }
    if (v->type == KEEL_FV_NULL)
        return keel_errorf(KEEL_ERR_NOT_FOUND, "the value is NULL");
    char tmp[32];
    if (v->len == 0 || v->len >= sizeof tmp)
        return keel_errorf(KEEL_ERR_FORMAT, "not an integer");
    memcpy(tmp, v->s, v->len);
    tmp[v->len] = '\0';
    char *end = NULL;
    errno = 0;
    long long x = strtoll(tmp, &end, 10);
    if (errno != 0 || end == tmp || *end != '\0')
        return keel_errorf(KEEL_ERR_FORMAT, "not an integer");
    *out = (int64_t)x;
    return KEEL_OK;
}

keel_status_t keel_fleet_val_ints(const keel_fleet_val_t *v, unsigned n, int64_t *const out[])
{
    keel_status_t st = KEEL_OK;
    for (unsigned i = 0; i < n && st == KEEL_OK; i++)
        st = keel_fleet_val_int(&v[i], out[i]);
    return st;
}

static keel_status_t migrate(keel_fleet_db_t *db)
{
    int latest = keel_fleet_schema_latest();
    keel_status_t st = keel_fleet_db_begin(db);
    if (st != KEEL_OK)
        return st;
    if (db->drv->migrate_lock_sql != NULL)
        st = db->drv->script(db, db->drv->migrate_lock_sql);
    if (st == KEEL_OK)
        st = db->drv->script(db, "CREATE TABLE IF NOT EXISTS schema_version ("
                                 "version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)");
    int64_t cur = 0;
    if (st == KEEL_OK)
        st = keel_fleet_db_int(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version", NULL, 0, &cur);
    if (st == KEEL_OK && cur > latest)
        st = keel_errorf(KEEL_ERR_FORMAT,
                         "the fleet database has schema version %lld, newer than this build knows (%d): "
                         "upgrade keel-fleetd",
                         (long long)cur, latest);
    for (unsigned i = 0; st == KEEL_OK && i < keel_fleet_migrations_n; i++) {
        const keel_fleet_migration_t *m = &keel_fleet_migrations[i];
        if (m->version <= cur)
            continue;
        st = db->drv->script(db, m->sql);
        keel_fleet_val_t p[] = {KEEL_FV_I(m->version), KEEL_FV_I(time(NULL))};
        if (st == KEEL_OK)
            st = keel_fleet_db_exec(db, "INSERT INTO schema_version (version, applied) VALUES ($1, $2)", p, 2,
                                    NULL, NULL, NULL);
        if (st != KEEL_OK) {
            char why[KEEL_ERROR_MAX];
            snprintf(why, sizeof why, "%s", keel_error_message());
            st = keel_errorf(st, "migration to schema version %d: %s", m->version, why);
        }
    }
    if (st == KEEL_OK)
        st = keel_fleet_db_commit(db);
    else
        keel_fleet_db_rollback(db);
    if (st == KEEL_OK)
        db->schema_version = cur > latest ? (int)cur : latest;
    return st;
}

keel_status_t keel_fleet_db_open(const char *url, keel_fleet_db_t **out)
{
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "fleet database: no output");
    *out = NULL;
    if (url == NULL || *url == '\0')
        return keel_errorf(KEEL_ERR_ARG, "fleet database: no URL");
    if (strnlen(url, KEEL_FLEET_DB_URL_MAX + 1) > KEEL_FLEET_DB_URL_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "fleet database URL longer than %d", KEEL_FLEET_DB_URL_MAX);
    /* The store draws pseudonyms and ids from the CSPRNG. */
    keel_status_t st = keel_crypto_init();
    if (st != KEEL_OK)
        return st;
    keel_fleet_db_t *db = calloc(1, sizeof *db);
    if (db == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (has_prefix(url, "postgresql://") || has_prefix(url, "postgres://")) {
        st = keel_fleet_pg_open(url, db);
    } else if (has_prefix(url, "pg:")) {
        st = keel_fleet_pg_open(url + 3, db);
    } else {
        const char *path = has_prefix(url, "sqlite:") ? url + 7 : url;
        st = *path != '\0' ? keel_fleet_sqlite_open(path, db)
                           : keel_errorf(KEEL_ERR_ARG, "fleet database: empty SQLite path");
    }
    if (st != KEEL_OK) {
        free(db);
        return st;
    }
    if ((st = migrate(db)) != KEEL_OK) {
        keel_fleet_db_close(db);
        return st;
    }
    *out = db;
    return KEEL_OK;
}

void keel_fleet_db_close(keel_fleet_db_t *db)
{
    if (db == NULL)
        return;
    if (db->drv != NULL)
        db->drv->close(db);
    keel_fleet_seqmem_free(db->seqmem);
    free(db);
}

keel_fleet_db_driver_t keel_fleet_db_driver(const keel_fleet_db_t *db)
{
    return db->kind;
}

const char *keel_fleet_db_driver_name(const keel_fleet_db_t *db)
{
    return db->drv->name;
}

int keel_fleet_db_schema_version(const keel_fleet_db_t *db)
{
    return db->schema_version;
}

keel_status_t keel_fleet_db_exec(keel_fleet_db_t *db, const char *sql, const keel_fleet_val_t *params,
                                 unsigned nparams, keel_fleet_row_fn rows, void *arg, uint64_t *changed)
{
    if (changed != NULL)
        *changed = 0;
    if (db == NULL || sql == NULL || nparams > KEEL_FLEET_DB_PARAMS_MAX || (nparams > 0 && params == NULL))
        return keel_errorf(KEEL_ERR_ARG, "fleet database: bad statement arguments");
    for (unsigned i = 0; i < nparams; i++) {
        const keel_fleet_val_t *v = &params[i];
        if (v->type != KEEL_FV_TEXT)
            continue;
        if (v->s == NULL)
            return keel_errorf(KEEL_ERR_ARG, "fleet database: parameter $%u is text without a pointer", i + 1);
        if (v->len > KEEL_FLEET_DB_TEXT_MAX)
            return keel_errorf(KEEL_ERR_TOO_LARGE, "fleet database: parameter $%u is longer than %u bytes", i + 1,
                               KEEL_FLEET_DB_TEXT_MAX);
        if (!text_ok(v->s, v->len))
            return keel_errorf(KEEL_ERR_FORMAT, "fleet database: parameter $%u is not UTF-8 text without NUL",
                               i + 1);
    }
    return db->drv->exec(db, sql, params, nparams, rows, arg, changed);
}

keel_status_t keel_fleet_db_begin(keel_fleet_db_t *db)
{
    if (db->drv->in_tx(db))
        return keel_errorf(KEEL_ERR_ARG, "fleet database: a transaction is already open");
    return db->drv->script(db, db->drv->begin_sql);
}

keel_status_t keel_fleet_db_commit(keel_fleet_db_t *db)
{
    if (!db->drv->in_tx(db))
        return keel_errorf(KEEL_ERR_ARG, "fleet database: no transaction to commit");
    keel_status_t st = db->drv->script(db, "COMMIT");
    if (st != KEEL_OK && db->drv->in_tx(db)) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        (void)db->drv->script(db, "ROLLBACK");
        st = keel_errorf(st, "%s (rolled back)", why);
    }
    return st;
}

void keel_fleet_db_rollback(keel_fleet_db_t *db)
{
    if (db == NULL || !db->drv->in_tx(db))
        return;
    char why[KEEL_ERROR_MAX];
    snprintf(why, sizeof why, "%s", keel_error_message());
    (void)db->drv->script(db, "ROLLBACK");
    /* The caller reports the failure that made it roll back, not this. */
    (void)keel_errorf(KEEL_ERR_DB, "%s", why);
}

bool keel_fleet_db_in_tx(const keel_fleet_db_t *db)
{
    return db->drv->in_tx(db);
}

typedef struct {
    bool seen;
    keel_status_t st;
    int64_t v;
} one_int_t;

static keel_status_t one_int_row(void *arg, const keel_fleet_val_t *cols, unsigned ncols)
{
    one_int_t *o = arg;
    if (o->seen)
        return KEEL_OK;
    o->seen = true;
    o->st = ncols < 1 ? keel_errorf(KEEL_ERR_FORMAT, "the query returned no column") : keel_fleet_val_int(&cols[0], &o->v);
    return KEEL_OK;
}

keel_status_t keel_fleet_db_int(keel_fleet_db_t *db, const char *sql, const keel_fleet_val_t *params,
                                unsigned nparams, int64_t *out)
{
    one_int_t o = {0};
    keel_status_t st = keel_fleet_db_exec(db, sql, params, nparams, one_int_row, &o, NULL);
    if (st != KEEL_OK)
        return st;
    if (!o.seen)
        return keel_errorf(KEEL_ERR_NOT_FOUND, "no row");
    if (o.st == KEEL_OK)
        *out = o.v;
    return o.st;
}

uint32_t keel_fleet_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (const char *c = s; *c != '\0'; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    return h;
}

unsigned keel_fleet_sql_find(const keel_fleet_sql_key_t *keys, unsigned n, const char *sql, uint32_t *hash)
{
    for (unsigned i = 0; i < n; i++)
        if (keys[i].ptr == sql && strcmp(keys[i].sql, sql) == 0)
            return i;
    uint32_t h = keel_fleet_hash(sql);
    *hash = h;
    for (unsigned i = 0; i < n; i++)
        if (keys[i].hash == h && strcmp(keys[i].sql, sql) == 0)
            return i;
    return n;
}

bool keel_fleet_sql_key_set(keel_fleet_sql_key_t *k, const char *sql, uint32_t hash)
{
    if ((k->sql = strdup(sql)) == NULL)
        return false;
    k->ptr = sql;
    k->hash = hash;
    return true;
}

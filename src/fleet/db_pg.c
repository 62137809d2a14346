/*
 * The fleet database on PostgreSQL (libpq). Parameters go as text with
 * their types (bigint, text) so the server never has to guess; statements
 * are prepared once per connection and kept, keyed by their SQL text.
 * Transactions are READ COMMITTED (PostgreSQL's default): SERIALIZABLE
 * halved ingest's throughput. The store stays correct with several fleetd
 * instances by its statements instead: ingest takes the device's seq row
 * lock before it reads the gaps, the unique indexes hold the invariants
 * (one running campaign per model, one registration per id, serial and
 * certificate), inserts use ON CONFLICT. A deadlock (40P01), a
 * serialization failure (40001) or the lock timeout (55P03) is
 * KEEL_ERR_BUSY: retry the transaction.
 *
 * Session defaults, which a URL's own `options` override: lock_timeout 5 s
 * (as SQLite's busy timeout; KEEL_ERR_BUSY) and statement_timeout 60 s (a
 * statement that runs longer is a fault, not load). Error messages never
 * carry the connection string, and the password is scrubbed from libpq's.
 */
#include "db_internal.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OID_BOOL 16
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_TEXT 25
#define OID_NUMERIC 1700

typedef struct {
    unsigned nparams;
    bool prepared; /* on the server under name "keel_<index>" */
} cached_t;

typedef struct {
    PGconn *conn;
    keel_fleet_sql_key_t keys[KEEL_FLEET_DB_CACHE_MAX]; /* keys[i] is cache[i]'s */
    cached_t cache[KEEL_FLEET_DB_CACHE_MAX];
    unsigned ncache;
} pg_t;

/* libpq's message: one line, trailing newline gone. */
static void pg_msg(const char *in, char *out, size_t cap)
{
    snprintf(out, cap, "%s", in != NULL && *in != '\0' ? in : "unknown error");
    for (char *p = out; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = *(p + 1) == '\0' ? '\0' : ' ';
}

static void cache_forget(pg_t *p)
{
    for (unsigned i = 0; i < p->ncache; i++)
        p->cache[i].prepared = false;
}

/* After a lost connection: one reset. The transaction (if any) is gone, so
 * the caller retries it: KEEL_ERR_BUSY when the connection is back. */
static keel_status_t conn_lost(pg_t *p, const char *what)
{
    PQreset(p->conn);
    cache_forget(p);
    if (PQstatus(p->conn) == CONNECTION_OK)
        return keel_errorf(KEEL_ERR_BUSY, "%s: the connection to PostgreSQL was lost and re-established; retry",
                           what);
    char m[256];
    pg_msg(PQerrorMessage(p->conn), m, sizeof m);
    return keel_errorf(KEEL_ERR_DB, "%s: the connection to PostgreSQL was lost: %s", what, m);
}

static keel_status_t res_error(pg_t *p, PGresult *r, const char *what)
{
    if (PQstatus(p->conn) != CONNECTION_OK)
        return conn_lost(p, what);
    const char *code = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    char m[384];
    pg_msg(r != NULL ? PQresultErrorMessage(r) : PQerrorMessage(p->conn), m, sizeof m);
    keel_status_t st = KEEL_ERR_DB;
    if (code != NULL) {
        if (strcmp(code, "23505") == 0)
            st = KEEL_ERR_EXISTS;
        else if (strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0 || strcmp(code, "55P03") == 0)
            st = KEEL_ERR_BUSY;
        else if (strcmp(code, "53200") == 0)
            st = KEEL_ERR_NOMEM;
    }
    return keel_errorf(st, "%s: %s", what, m);
}

static keel_status_t deliver(PGresult *r, keel_fleet_row_fn rows, void *arg)
{
    int nr = PQntuples(r), nc = PQnfields(r);
    keel_fleet_val_t cols[32];
    if (nc > (int)(sizeof cols / sizeof cols[0]))
        return keel_errorf(KEEL_ERR_ARG, "fleet database: more than %zu columns", sizeof cols / sizeof cols[0]);
    int isint[32];
    for (int c = 0; c < nc; c++) {
        Oid t = PQftype(r, c);
        isint[c] = t == OID_INT8 || t == OID_INT2 || t == OID_INT4 || t == OID_NUMERIC ? 1 : t == OID_BOOL ? 2 : 0;
    }
    for (int i = 0; i < nr; i++) {
        for (int c = 0; c < nc; c++) {
            if (PQgetisnull(r, i, c)) {
                cols[c] = KEEL_FV_NUL;
                continue;
            }
            const char *v = PQgetvalue(r, i, c);
            size_t len = (size_t)PQgetlength(r, i, c);
            cols[c] = KEEL_FV_SN(v, len);
            if (isint[c] == 2) {
                cols[c] = KEEL_FV_I(v[0] == 't');
            } else if (isint[c] == 1) {
                int64_t x;
                /* A numeric with a fraction stays text. */
                if (keel_fleet_val_int(&cols[c], &x) == KEEL_OK)
                    cols[c] = KEEL_FV_I(x);
            }
        }
        keel_status_t st = rows(arg, cols, (unsigned)nc);
        if (st != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

static keel_status_t pg_exec(keel_fleet_db_t *db, const char *sql, const keel_fleet_val_t *params,
                             unsigned nparams, keel_fleet_row_fn rows, void *arg, uint64_t *changed)
{
    pg_t *p = db->impl;
    uint32_t h = 0;
    unsigned found = keel_fleet_sql_find(p->keys, p->ncache, sql, &h);
    cached_t *ent = found < p->ncache ? &p->cache[found] : NULL;
    unsigned want = 0;
    keel_status_t st = KEEL_OK;
    if (ent != NULL) {
        want = ent->nparams;
    } else if ((st = keel_fleet_sql_scan(sql, &want, NULL)) != KEEL_OK) {
        return st;
    }
    if (want != nparams)
        return keel_errorf(KEEL_ERR_ARG, "fleet database: the statement takes %u parameters, %u given", want,
                           nparams);

    Oid types[KEEL_FLEET_DB_PARAMS_MAX];
    const char *values[KEEL_FLEET_DB_PARAMS_MAX];
    int lengths[KEEL_FLEET_DB_PARAMS_MAX], formats[KEEL_FLEET_DB_PARAMS_MAX];
    char ints[KEEL_FLEET_DB_PARAMS_MAX][24];
    for (unsigned i = 0; st == KEEL_OK && i < nparams; i++) {
        const keel_fleet_val_t *v = &params[i];
        lengths[i] = 0;
        formats[i] = 0;
        if (v->type == KEEL_FV_INT) {
            snprintf(ints[i], sizeof ints[i], "%" PRId64, v->i);
            values[i] = ints[i];
            types[i] = OID_INT8;
        } else if (v->type == KEEL_FV_TEXT) {
            types[i] = OID_TEXT;
            /* As text (format 0) libpq reads up to a NUL, which a value
             * given by length need not have; text's binary format is its
             * bytes (the server still checks the encoding). */
            values[i] = v->len > 0 ? v->s : "";
            lengths[i] = (int)v->len;
            formats[i] = 1;
        } else {
            values[i] = NULL;
            types[i] = 0;
        }
    }

    if (ent == NULL && p->ncache < KEEL_FLEET_DB_CACHE_MAX) {
        cached_t *c = &p->cache[p->ncache];
        if (keel_fleet_sql_key_set(&p->keys[p->ncache], sql, h)) {
            c->nparams = want;
            c->prepared = false;
            ent = c;
            p->ncache++;
        }
    }
    char name[32];
    if (ent != NULL) {
        snprintf(name, sizeof name, "keel_%u", (unsigned)(ent - p->cache));
        if (!ent->prepared) {
            PGresult *r = PQprepare(p->conn, name, sql, (int)nparams, types);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                st = res_error(p, r, "prepare");
            else
                ent->prepared = true;
            PQclear(r);
        }
    }
    PGresult *r = NULL;
    if (st == KEEL_OK) {
        r = ent != NULL ? PQexecPrepared(p->conn, name, (int)nparams, values, lengths, formats, 0)
                        : PQexecParams(p->conn, sql, (int)nparams, types, values, lengths, formats, 0);
        ExecStatusType rs = PQresultStatus(r);
        if (rs == PGRES_TUPLES_OK || rs == PGRES_COMMAND_OK) {
            if (rows != NULL)
                st = deliver(r, rows, arg);
            /* Rows an INSERT/UPDATE/DELETE touched (also with RETURNING), not a SELECT's. */
            const char *n = PQcmdTuples(r);
            if (st == KEEL_OK && changed != NULL && n != NULL && *n != '\0' &&
                strncmp(PQcmdStatus(r), "SELECT", 6) != 0)
                *changed = strtoull(n, NULL, 10);
        } else {
            st = res_error(p, r, "statement");
        }
    }
    PQclear(r);
    return st;
}

static keel_status_t pg_script(keel_fleet_db_t *db, const char *sql)
{
    pg_t *p = db->impl;
    PGresult *r = PQexec(p->conn, sql);
    ExecStatusType rs = PQresultStatus(r);
    keel_status_t st = rs == PGRES_COMMAND_OK || rs == PGRES_TUPLES_OK ? KEEL_OK : res_error(p, r, "statement");
    PQclear(r);
    return st;
}

static bool pg_in_tx(const keel_fleet_db_t *db)
{
    const pg_t *p = db->impl;
    PGTransactionStatusType t = PQtransactionStatus(p->conn);
    return t == PQTRANS_INTRANS || t == PQTRANS_INERROR || t == PQTRANS_ACTIVE;
}

static void pg_close(keel_fleet_db_t *db)
{
    pg_t *p = db->impl;
    if (p == NULL)
        return;
    for (unsigned i = 0; i < p->ncache; i++)
        free(p->keys[i].sql);
    PQfinish(p->conn);
    free(p);
    db->impl = NULL;
}

static void pg_notice(void *arg, const char *msg)
{
    (void)arg;
    char m[384];
    pg_msg(msg, m, sizeof m);
    keel_log(KEEL_LOG_DEBUG, "fleet database: %s", m);
}

static const keel_fleet_driver_t pg_driver = {
    .name = "postgresql",
    .exec = pg_exec,
    .script = pg_script,
    .in_tx = pg_in_tx,
    .close = pg_close,
    .begin_sql = "BEGIN",
    /* "keel" in ASCII: one lock for every keel-fleetd on this database. */
    .migrate_lock_sql = "SELECT pg_advisory_xact_lock(1801807212)",
};

/* Replaces every occurrence of secret in s (NUL-terminated) with "***". */
static void scrub(char *s, const char *secret)
{
    size_t n = secret != NULL ? strlen(secret) : 0;
    if (n == 0)
        return;
    char *from = s, *hit;
    while ((hit = strstr(from, secret)) != NULL) {
        size_t rest = strlen(hit + n);
        size_t stars = n < 3 ? n : 3;
        memset(hit, '*', stars);
        memmove(hit + stars, hit + n, rest + 1);
        from = hit + stars;
    }
}

keel_status_t keel_fleet_pg_open(const char *conninfo, keel_fleet_db_t *db)
{
    /* Parsed first, so a malformed string is refused without libpq's
     * message (which may quote a piece of it), and the password is known
     * for scrubbing. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    PQfreemem(perr);
    if (opts == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "fleet database: malformed PostgreSQL connection string");
    char *password = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val != NULL)
            password = o->val;

    /* Ours before dbname (the URL may override them), client_encoding after (it may not). */
    const char *const keys[] = {"options", "application_name", "connect_timeout", "dbname", "client_encoding", NULL};
    const char *const vals[] = {"-c lock_timeout=5000 -c statement_timeout=60000", "keel-fleetd", "10", conninfo,
                                "UTF8", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    keel_status_t st = KEEL_OK;
    if (conn == NULL) {
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    } else if (PQstatus(conn) != CONNECTION_OK) {
        char m[384];
        pg_msg(PQerrorMessage(conn), m, sizeof m);
        scrub(m, password);
        st = keel_errorf(KEEL_ERR_DB, "fleet database: cannot connect to PostgreSQL: %s", m);
    }
    if (password != NULL)
        keel_wipe(password, strlen(password));
    PQconninfoFree(opts);
    pg_t *p = NULL;
    if (st == KEEL_OK && (p = calloc(1, sizeof *p)) == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st != KEEL_OK) {
        PQfinish(conn);
        return st;
    }
    p->conn = conn;
    PQsetNoticeProcessor(conn, pg_notice, NULL);
    db->drv = &pg_driver;
    db->kind = KEEL_FLEET_DB_POSTGRES;
    db->impl = p;
    if (PQserverVersion(conn) < 110000) {
        pg_close(db);
        db->drv = NULL;
        return keel_errorf(KEEL_ERR_UNSUPPORTED, "fleet database: PostgreSQL 11 or newer is needed");
    }
    return KEEL_OK;
}

/*
 * The persistent outbox (keel/outbox.h): messages queued in the vault's
 * database, bodies sealed per row, a per-device sequence that survives a
 * factory reset, and a drop policy by kind. See docs/internals/outbox.md.
 */
#include "keel/outbox.h"

#include "keel/crypto.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COUNTER_NEXT_SEQ "next_seq"
#define COUNTER_CORRUPT "corrupt"
/* Decimal uint64 and its NUL. */
#define SEQ_STR_MAX 21
/* Room the envelope keeps around the body: the fields before "data" with the
 * longest device id, and the "dropped" object with three 20-digit counts. */
#define ENVELOPE_HEAD_MAX (64 + KEEL_OUTBOX_DEVICE_ID_MAX + 2 * 20 + 9)
#define ENVELOPE_TAIL_MAX (64 + 3 * 20)
_Static_assert(ENVELOPE_HEAD_MAX + KEEL_OUTBOX_BODY_MAX + ENVELOPE_TAIL_MAX < KEEL_OUTBOX_ENVELOPE_MAX,
               "the envelope must hold the largest body with the longest device id");

static const char *const kind_names[KEEL_OUTBOX_KINDS] = {"telemetry", "event", "alert"};
/* Persistent drop counters, one per kind (outbox_counters.name). */
static const char *const dropped_names[KEEL_OUTBOX_KINDS] = {"dropped_telemetry", "dropped_event",
                                                             "dropped_alert"};

enum {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_RELEASE,
    S_ROLLBACK_TO,
    S_FIND_MSGID,
    S_DROP_OLDEST,
    S_DELETE,
    S_INSERT,
    S_COUNTER_ADD,
    S_COUNTER_RAISE,
    S_NEXT,
    S_FIGURES,
    S_COUNTERS,
    S_MAX_SEQ,
    S_COUNT
};

static const char *const sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    /* Inside a batch each put is a savepoint, so a failed put undoes only itself. */
    [S_SAVEPOINT] = "SAVEPOINT keel_outbox_put",
    [S_RELEASE] = "RELEASE keel_outbox_put",
    [S_ROLLBACK_TO] = "ROLLBACK TO keel_outbox_put",
    [S_FIND_MSGID] = "SELECT seq FROM outbox WHERE msgid = ?1",
    /* Least important kind first, oldest first within a kind (index outbox_kind). */
    /* NOLINTNEXTLINE(bugprone-suspicious-missing-comma): one statement over two lines */
    [S_DROP_OLDEST] = "DELETE FROM outbox WHERE seq = (SELECT seq FROM outbox WHERE kind <= ?1"
                      " ORDER BY kind, seq LIMIT 1) RETURNING kind, size",
    [S_DELETE] = "DELETE FROM outbox WHERE seq = ?1 RETURNING kind, size",
    [S_INSERT] = "INSERT INTO outbox(seq, kind, created, size, msgid, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_COUNTER_ADD] = "INSERT INTO outbox_counters(name, value) VALUES (?1, ?2)"
                      " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
    [S_COUNTER_RAISE] = "INSERT INTO outbox_counters(name, value) VALUES (?1, ?2)"
                        " ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
    [S_NEXT] = "SELECT seq, kind, created, size, body FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT 1",
    [S_FIGURES] = "SELECT kind, count(*), coalesce(sum(size), 0) FROM outbox GROUP BY kind",
    [S_COUNTERS] = "SELECT name, value FROM outbox_counters",
    [S_MAX_SEQ] = "SELECT coalesce(max(seq), 0) FROM outbox",
};

/* What the database holds, kept in memory so a put needs no counting query. */
typedef struct {
    uint64_t count[KEEL_OUTBOX_KINDS];
    uint64_t bytes[KEEL_OUTBOX_KINDS];
    uint64_t dropped[KEEL_OUTBOX_KINDS];
    uint64_t corrupt;
    uint64_t next_seq;
} figures_t;

struct keel_outbox {
    keel_vault_t *v;
    sqlite3 *db;
    char device_id[KEEL_OUTBOX_DEVICE_ID_MAX + 1];
    keel_outbox_limits_t limits;
    bool in_batch;
    figures_t fig;
    uint64_t acked;
    sqlite3_stmt *stmt[S_COUNT];
    uint8_t blob[KEEL_OUTBOX_BODY_MAX + KEEL_AEAD_OVERHEAD];
};

static keel_status_t db_error(keel_outbox_t *o, const char *what)
{
    return keel_errorf(KEEL_ERR_DB, "outbox: %s: %s", what, sqlite3_errmsg(o->db));
}

/* Makes a statement ready for its next use; its outcome was already taken. */
static void stmt_done(keel_outbox_t *o, int i)
{
    (void)sqlite3_reset(o->stmt[i]);
    (void)sqlite3_clear_bindings(o->stmt[i]);
}

/* Runs a statement that returns no row, without touching the error message
 * (for the clean-up after a failure, which must keep the first error). */
static int exec_quiet(keel_outbox_t *o, int i)
{
    int rc = sqlite3_step(o->stmt[i]);
    stmt_done(o, i);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static keel_status_t run_stmt(keel_outbox_t *o, int i, const char *what)
{
    int rc = sqlite3_step(o->stmt[i]);
    keel_status_t st = rc == SQLITE_DONE ? KEEL_OK : db_error(o, what);
    stmt_done(o, i);
    return st;
}

static uint64_t sub_sat(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

static uint64_t total(const uint64_t a[KEEL_OUTBOX_KINDS])
{
    return a[0] + a[1] + a[2];
}

static bool kind_ok(int64_t k)
{
    return k >= 0 && k < KEEL_OUTBOX_KINDS;
}

/* Recomputes the figures from the database. */
static keel_status_t load(keel_outbox_t *o)
{
    figures_t f;
    memset(&f, 0, sizeof f);
    keel_status_t st = KEEL_OK;
    int rc;
    while ((rc = sqlite3_step(o->stmt[S_FIGURES])) == SQLITE_ROW) {
        int64_t k = sqlite3_column_int64(o->stmt[S_FIGURES], 0);
        int64_t n = sqlite3_column_int64(o->stmt[S_FIGURES], 1);
        int64_t b = sqlite3_column_int64(o->stmt[S_FIGURES], 2);
        /* A row of an unknown kind is not counted; next() drops it as corrupt. */
        if (kind_ok(k)) {
            f.count[k] = n > 0 ? (uint64_t)n : 0;
            f.bytes[k] = b > 0 ? (uint64_t)b : 0;
        }
    }
    if (rc != SQLITE_DONE)
        st = db_error(o, "count pending messages");
    stmt_done(o, S_FIGURES);

    while (st == KEEL_OK && (rc = sqlite3_step(o->stmt[S_COUNTERS])) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(o->stmt[S_COUNTERS], 0);
        int64_t val = sqlite3_column_int64(o->stmt[S_COUNTERS], 1);
        uint64_t u = val > 0 ? (uint64_t)val : 0;
        if (name == NULL)
            continue;
        if (strcmp(name, COUNTER_NEXT_SEQ) == 0)
            f.next_seq = u;
        else if (strcmp(name, COUNTER_CORRUPT) == 0)
            f.corrupt = u;
        for (int k = 0; k < KEEL_OUTBOX_KINDS; k++)
            if (strcmp(name, dropped_names[k]) == 0)
                f.dropped[k] = u;
    }
    if (st == KEEL_OK && rc != SQLITE_DONE)
        st = db_error(o, "read counters");
    stmt_done(o, S_COUNTERS);

    if (st == KEEL_OK) {
        rc = sqlite3_step(o->stmt[S_MAX_SEQ]);
        if (rc != SQLITE_ROW) {
            st = db_error(o, "read the highest seq");
        } else {
            /* The counter is the authority; a row above it (which a correct
             * put cannot leave) still must never see its seq handed out again. */
            int64_t max = sqlite3_column_int64(o->stmt[S_MAX_SEQ], 0);
            if (max > 0 && (uint64_t)max >= f.next_seq)
                f.next_seq = (uint64_t)max + 1;
        }
        stmt_done(o, S_MAX_SEQ);
    }
    if (st != KEEL_OK)
        return st;
    if (f.next_seq == 0)
        f.next_seq = 1;
    o->fig = f;
    return KEEL_OK;
}

static keel_status_t counter_bump(keel_outbox_t *o, int which, const char *name, uint64_t value)
{
    sqlite3_stmt *s = o->stmt[which];
    if (sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(s, 2, (sqlite3_int64)value) != SQLITE_OK) {
        keel_status_t st = db_error(o, "bind counter");
        stmt_done(o, which);
        return st;
    }
    return run_stmt(o, which, "update counter");
}

/* Steps a DELETE ... RETURNING kind, size; *found tells whether a row went. */
static keel_status_t delete_step(keel_outbox_t *o, int which, bool *found, int64_t *kind, uint64_t *size)
{
    sqlite3_stmt *s = o->stmt[which];
    *found = false;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *found = true;
        *kind = sqlite3_column_int64(s, 0);
        int64_t n = sqlite3_column_int64(s, 1);
        *size = n > 0 ? (uint64_t)n : 0;
        rc = sqlite3_step(s);
    }
    keel_status_t st = rc == SQLITE_DONE ? KEEL_OK : db_error(o, "delete message");
    stmt_done(o, which);
    return st;
}

/* Starts the write of one put, ack of a corrupt row, etc.: a transaction of
 * its own, or a savepoint inside the caller's batch. */
static keel_status_t txn_begin(keel_outbox_t *o)
{
    return run_stmt(o, o->in_batch ? S_SAVEPOINT : S_BEGIN, "begin");
}

/* Commits (st == KEEL_OK) or undoes the write; returns the first error. A
 * failed commit may or may not have reached the disk, so the figures are
 * read again from what the database says. */
static keel_status_t txn_end(keel_outbox_t *o, keel_status_t st)
{
    if (st == KEEL_OK) {
        st = run_stmt(o, o->in_batch ? S_RELEASE : S_COMMIT, "commit");
        if (st == KEEL_OK)
            return KEEL_OK;
    }
    if (o->in_batch) {
        if (exec_quiet(o, S_ROLLBACK_TO) != SQLITE_OK || exec_quiet(o, S_RELEASE) != SQLITE_OK)
            keel_log(KEEL_LOG_WARN, "outbox: undoing a failed put: %s", sqlite3_errmsg(o->db));
    } else if (!sqlite3_get_autocommit(o->db) && exec_quiet(o, S_ROLLBACK) != SQLITE_OK) {
        keel_log(KEEL_LOG_WARN, "outbox: rollback: %s", sqlite3_errmsg(o->db));
    }
    char keep[KEEL_ERROR_MAX];
    memcpy(keep, keel_error_message(), sizeof keep);
    keep[sizeof keep - 1] = '\0';
    if (load(o) != KEEL_OK)
        keel_log(KEEL_LOG_WARN, "outbox: %s", keel_error_message());
    (void)keel_errorf(st, "%s", keep);
    return st;
}

/* Visible ASCII; `quotes` also refuses '"' and '\\' (text put into JSON as is). */
static bool token_ok(const char *s, size_t max, bool quotes)
{
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~' || (quotes && (s[i] == '"' || s[i] == '\\')))
            return false;
    return true;
}

static void finalize_all(keel_outbox_t *o)
{
    for (int i = 0; i < S_COUNT; i++)
        if (o->stmt[i] != NULL && sqlite3_finalize(o->stmt[i]) != SQLITE_OK)
            keel_log(KEEL_LOG_WARN, "outbox: finalize: %s", sqlite3_errmsg(o->db));
}

keel_status_t keel_outbox_open(keel_vault_t *v, const char *device_id, keel_outbox_limits_t limits,
                               keel_outbox_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (v == NULL || device_id == NULL || out == NULL || keel_vault_db(v) == NULL)
        return keel_errorf(KEEL_ERR_ARG, "outbox open: missing argument");
    if (!token_ok(device_id, KEEL_OUTBOX_DEVICE_ID_MAX, true))
        return keel_errorf(KEEL_ERR_ARG, "outbox: the device id must be 1..%d visible ASCII "
                                         "characters without '\"' or '\\'", KEEL_OUTBOX_DEVICE_ID_MAX);
    if (limits.max_messages == 0 || limits.max_bytes == 0)
        return keel_errorf(KEEL_ERR_ARG, "outbox: max_messages and max_bytes must be nonzero");
    keel_outbox_t *o = calloc(1, sizeof *o);
    if (o == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    o->v = v;
    o->db = keel_vault_db(v);
    o->limits = limits;
    keel_status_t st = keel_strlcpy(o->device_id, device_id, sizeof o->device_id);
    for (int i = 0; st == KEEL_OK && i < S_COUNT; i++)
        if (sqlite3_prepare_v3(o->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &o->stmt[i], NULL) !=
            SQLITE_OK)
            st = db_error(o, sql[i]);
    if (st == KEEL_OK)
        st = load(o);
    if (st != KEEL_OK) {
        finalize_all(o);
        free(o);
        return st;
    }
    *out = o;
    return KEEL_OK;
}

void keel_outbox_close(keel_outbox_t *o)
{
    if (o == NULL)
        return;
    if (o->in_batch)
        keel_outbox_rollback(o);
    finalize_all(o);
    keel_wipe(o, sizeof *o);
    free(o);
}

void keel_outbox_set_limits(keel_outbox_t *o, keel_outbox_limits_t limits)
{
    if (o == NULL)
        return;
    if (limits.max_messages != 0)
        o->limits.max_messages = limits.max_messages;
    if (limits.max_bytes != 0)
        o->limits.max_bytes = limits.max_bytes;
}

const char *keel_outbox_kind_name(keel_outbox_kind_t k)
{
    return kind_ok((int64_t)k) ? kind_names[k] : "unknown";
}

static keel_status_t find_msgid(keel_outbox_t *o, const char *msgid, uint64_t *seq)
{
    sqlite3_stmt *s = o->stmt[S_FIND_MSGID];
    *seq = 0;
    if (sqlite3_bind_text(s, 1, msgid, -1, SQLITE_STATIC) != SQLITE_OK) {
        keel_status_t st = db_error(o, "bind msgid");
        stmt_done(o, S_FIND_MSGID);
        return st;
    }
    keel_status_t st = KEEL_OK;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *seq = (uint64_t)sqlite3_column_int64(s, 0);
    else if (rc != SQLITE_DONE)
        st = db_error(o, "look up msgid");
    stmt_done(o, S_FIND_MSGID);
    return st;
}

/* Whether a new message of `kind` and `len` bytes fits once everything it may
 * push out (kinds up to its own) is gone. */
static bool can_fit(const keel_outbox_t *o, keel_outbox_kind_t kind, size_t len)
{
    uint64_t count = total(o->fig.count), bytes = total(o->fig.bytes);
    uint64_t free_count = 0, free_bytes = 0;
    for (int k = 0; k <= (int)kind; k++) {
        free_count += o->fig.count[k];
        free_bytes += o->fig.bytes[k];
    }
    return count - free_count + 1 <= o->limits.max_messages &&
           bytes - free_bytes + len <= o->limits.max_bytes;
}

/* The writes of one put, inside txn_begin/txn_end. `f` is updated to what
 * the database will hold once they commit. */
static keel_status_t put_rows(keel_outbox_t *o, figures_t *f, keel_outbox_kind_t kind, uint64_t seq,
                              int64_t now, size_t len, const char *msgid, size_t bloblen)
{
    uint64_t dropped[KEEL_OUTBOX_KINDS] = {0, 0, 0};
    keel_status_t st = KEEL_OK;
    while (st == KEEL_OK && (total(f->count) + 1 > o->limits.max_messages ||
                             total(f->bytes) + len > o->limits.max_bytes)) {
        bool found = false;
        int64_t k = 0;
        uint64_t size = 0;
        if (sqlite3_bind_int64(o->stmt[S_DROP_OLDEST], 1, (sqlite3_int64)kind) != SQLITE_OK) {
            st = db_error(o, "bind kind");
            stmt_done(o, S_DROP_OLDEST);
            break;
        }
        st = delete_step(o, S_DROP_OLDEST, &found, &k, &size);
        if (st == KEEL_OK && (!found || !kind_ok(k)))
            st = keel_errorf(KEEL_ERR_DB, "outbox: the queue does not match its figures (was the "
                                          "vault erased without keel_outbox_reload?)");
        if (st == KEEL_OK) {
            f->count[k] = sub_sat(f->count[k], 1);
            f->bytes[k] = sub_sat(f->bytes[k], size);
            dropped[k]++;
        }
    }
    for (int k = 0; st == KEEL_OK && k < KEEL_OUTBOX_KINDS; k++)
        if (dropped[k] > 0) {
            st = counter_bump(o, S_COUNTER_ADD, dropped_names[k], dropped[k]);
            f->dropped[k] += dropped[k];
        }
    if (st == KEEL_OK)
        st = counter_bump(o, S_COUNTER_RAISE, COUNTER_NEXT_SEQ, seq + 1);
    if (st == KEEL_OK) {
        sqlite3_stmt *s = o->stmt[S_INSERT];
        if (sqlite3_bind_int64(s, 1, (sqlite3_int64)seq) != SQLITE_OK ||
            sqlite3_bind_int64(s, 2, (sqlite3_int64)kind) != SQLITE_OK ||
            sqlite3_bind_int64(s, 3, now) != SQLITE_OK ||
            sqlite3_bind_int64(s, 4, (sqlite3_int64)len) != SQLITE_OK ||
            (msgid != NULL ? sqlite3_bind_text(s, 5, msgid, -1, SQLITE_STATIC)
                           : sqlite3_bind_null(s, 5)) != SQLITE_OK ||
            sqlite3_bind_blob(s, 6, o->blob, (int)bloblen, SQLITE_STATIC) != SQLITE_OK) {
            st = db_error(o, "bind message");
            stmt_done(o, S_INSERT);
        } else {
            st = run_stmt(o, S_INSERT, "store message");
        }
    }
    if (st == KEEL_OK) {
        f->count[kind]++;
        f->bytes[kind] += len;
        f->next_seq = seq + 1;
    }
    return st;
}

keel_status_t keel_outbox_put(keel_outbox_t *o, keel_outbox_kind_t kind, const char *body, size_t len,
                              const char *msgid, uint64_t *seq, bool *dup)
{
    if (seq != NULL)
        *seq = 0;
    if (dup != NULL)
        *dup = false;
    if (o == NULL || body == NULL || seq == NULL || dup == NULL)
        return keel_errorf(KEEL_ERR_ARG, "outbox put: missing argument");
    if (!kind_ok((int64_t)kind))
        return keel_errorf(KEEL_ERR_ARG, "outbox put: unknown kind %d", (int)kind);
    if (msgid != NULL && !token_ok(msgid, KEEL_OUTBOX_MSGID_MAX, false))
        return keel_errorf(KEEL_ERR_ARG, "outbox put: a msgid must be 1..%d visible ASCII characters",
                           KEEL_OUTBOX_MSGID_MAX);
    if (len > KEEL_OUTBOX_BODY_MAX || len > o->limits.max_bytes)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "outbox put: a body of %zu bytes exceeds the limit "
                                               "(%u bytes, max_bytes %" PRIu64 ")",
                           len, KEEL_OUTBOX_BODY_MAX, o->limits.max_bytes);
    /* Not a parse (the caller validated the JSON), only what keeps the
     * envelope well-formed when the body is pasted into it. */
    if (len < 2 || body[0] != '{' || body[len - 1] != '}' || memchr(body, '\0', len) != NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "outbox put: the body must be a JSON object's text");

    keel_status_t st;
    if (msgid != NULL) {
        uint64_t have = 0;
        if ((st = find_msgid(o, msgid, &have)) != KEEL_OK)
            return st;
        if (have != 0) {
            *seq = have;
            *dup = true;
            return KEEL_OK;
        }
    }
    if (!can_fit(o, kind, len))
        return keel_errorf(KEEL_ERR_TOO_LARGE, "outbox full: no room for a %zu-byte %s without "
                                               "dropping more important messages",
                           len, kind_names[kind]);
    uint64_t s = o->fig.next_seq;
    if (s >= (uint64_t)INT64_MAX)
        return keel_errorf(KEEL_ERR_DB, "outbox: the sequence is exhausted");
    time_t now = time(NULL);
    if (now == (time_t)-1)
        return keel_errorf(KEEL_ERR_IO, "outbox: the clock is unavailable");

    char row[SEQ_STR_MAX];
    size_t bloblen = 0;
    if ((st = keel_snprintf(row, sizeof row, "%" PRIu64, s)) != KEEL_OK ||
        (st = keel_vault_seal(o->v, "outbox", "body", row, body, len, o->blob, sizeof o->blob,
                              &bloblen)) != KEEL_OK)
        return st;
    figures_t f = o->fig;
    if ((st = txn_begin(o)) != KEEL_OK)
        return st;
    st = txn_end(o, put_rows(o, &f, kind, s, (int64_t)now, len, msgid, bloblen));
    if (st != KEEL_OK)
        return st;
    o->fig = f;
    *seq = s;
    return KEEL_OK;
}

keel_status_t keel_outbox_begin(keel_outbox_t *o)
{
    if (o == NULL)
        return keel_errorf(KEEL_ERR_ARG, "outbox begin: missing argument");
    if (o->in_batch)
        return keel_errorf(KEEL_ERR_ARG, "outbox begin: a batch is already open");
    keel_status_t st = run_stmt(o, S_BEGIN, "begin batch");
    if (st == KEEL_OK)
        o->in_batch = true;
    return st;
}

keel_status_t keel_outbox_commit(keel_outbox_t *o)
{
    if (o == NULL)
        return keel_errorf(KEEL_ERR_ARG, "outbox commit: missing argument");
    if (!o->in_batch)
        return keel_errorf(KEEL_ERR_ARG, "outbox commit: no batch is open");
    o->in_batch = false;
    /* txn_end outside a batch: COMMIT, or ROLLBACK and reload on failure. */
    return txn_end(o, KEEL_OK);
}

void keel_outbox_rollback(keel_outbox_t *o)
{
    if (o == NULL || !o->in_batch)
        return;
    o->in_batch = false;
    if (!sqlite3_get_autocommit(o->db) && exec_quiet(o, S_ROLLBACK) != SQLITE_OK)
        keel_log(KEEL_LOG_ERROR, "outbox: rollback: %s", sqlite3_errmsg(o->db));
    if (load(o) != KEEL_OK)
        keel_log(KEEL_LOG_ERROR, "%s", keel_error_message());
}

/* Deletes one row by seq, in the current transaction; updates `f`. */
static keel_status_t delete_seq(keel_outbox_t *o, figures_t *f, uint64_t seq, bool *found, int64_t *kind)
{
    uint64_t size = 0;
    if (sqlite3_bind_int64(o->stmt[S_DELETE], 1, (sqlite3_int64)seq) != SQLITE_OK) {
        keel_status_t st = db_error(o, "bind seq");
        stmt_done(o, S_DELETE);
        return st;
    }
    keel_status_t st = delete_step(o, S_DELETE, found, kind, &size);
    if (st == KEEL_OK && *found && kind_ok(*kind)) {
        f->count[*kind] = sub_sat(f->count[*kind], 1);
        f->bytes[*kind] = sub_sat(f->bytes[*kind], size);
    }
    return st;
}

keel_status_t keel_outbox_ack(keel_outbox_t *o, uint64_t seq)
{
    if (o == NULL || seq == 0 || seq >= (uint64_t)INT64_MAX)
        return keel_errorf(KEEL_ERR_ARG, "outbox ack: bad argument");
    figures_t f = o->fig;
    bool found = false;
    int64_t kind = 0;
    /* One statement: its own transaction outside a batch, part of the batch inside. */
    keel_status_t st = delete_seq(o, &f, seq, &found, &kind);
    if (st != KEEL_OK)
        return st;
    o->fig = f;
    if (found)
        o->acked++;
    return KEEL_OK;
}

/* A row that cannot be sent (its body does not open, or its columns are
 * impossible) is dropped and counted, so it never blocks the queue. */
static keel_status_t drop_corrupt(keel_outbox_t *o, uint64_t seq, int64_t kind)
{
    keel_log(KEEL_LOG_WARN, "outbox: message %" PRIu64 " does not open (edited, moved or damaged); "
                            "dropped", seq);
    figures_t f = o->fig;
    bool found = false;
    int64_t k = kind;
    keel_status_t st = txn_begin(o);
    if (st != KEEL_OK)
        return st;
    st = delete_seq(o, &f, seq, &found, &k);
    if (st == KEEL_OK && found) {
        st = counter_bump(o, S_COUNTER_ADD, COUNTER_CORRUPT, 1);
        f.corrupt++;
        if (st == KEEL_OK && kind_ok(k)) {
            st = counter_bump(o, S_COUNTER_ADD, dropped_names[k], 1);
            f.dropped[k]++;
        }
    }
    if ((st = txn_end(o, st)) != KEEL_OK)
        return st;
    o->fig = f;
    return KEEL_OK;
}

/* Fills m from the current row of S_NEXT. KEEL_ERR_VERIFY: the row is corrupt. */
static keel_status_t envelope(keel_outbox_t *o, keel_outbox_msg_t *m, uint64_t seq, int64_t kind)
{
    sqlite3_stmt *s = o->stmt[S_NEXT];
    int64_t created = sqlite3_column_int64(s, 2);
    int64_t size = sqlite3_column_int64(s, 3);
    const uint8_t *blob = sqlite3_column_blob(s, 4);
    int bloblen = sqlite3_column_bytes(s, 4);
    if (blob == NULL && sqlite3_errcode(o->db) == SQLITE_NOMEM)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (!kind_ok(kind) || blob == NULL || bloblen <= 0 || size < 2 || size > KEEL_OUTBOX_BODY_MAX)
        return keel_errorf(KEEL_ERR_VERIFY, "outbox: message %" PRIu64 " has impossible columns", seq);

    char row[SEQ_STR_MAX];
    keel_status_t st = keel_snprintf(row, sizeof row, "%" PRIu64, seq);
    if (st == KEEL_OK)
        st = keel_snprintf(m->envelope, ENVELOPE_HEAD_MAX,
                           "{\"device\":\"%s\",\"seq\":%" PRIu64 ",\"ts\":%" PRId64
                           ",\"kind\":\"%s\",\"data\":",
                           o->device_id, seq, created, kind_names[kind]);
    if (st != KEEL_OK)
        return st;
    size_t off = strlen(m->envelope), n = 0;
    st = keel_vault_open_field(o->v, "outbox", "body", row, blob, (size_t)bloblen,
                               (uint8_t *)m->envelope + off, KEEL_OUTBOX_BODY_MAX, &n);
    if (st == KEEL_ERR_TOO_LARGE)
        st = keel_errorf(KEEL_ERR_VERIFY, "outbox: message %" PRIu64 " is larger than any body", seq);
    if (st == KEEL_OK && n != (uint64_t)size)
        st = keel_errorf(KEEL_ERR_VERIFY, "outbox: message %" PRIu64 " does not match its size", seq);
    if (st != KEEL_OK)
        return st;
    off += n;
    const uint64_t *d = o->fig.dropped;
    if (total(d) > 0)
        st = keel_snprintf(m->envelope + off, sizeof m->envelope - off,
                           ",\"dropped\":{\"telemetry\":%" PRIu64 ",\"event\":%" PRIu64
                           ",\"alert\":%" PRIu64 "}}",
                           d[0], d[1], d[2]);
    else
        st = keel_snprintf(m->envelope + off, sizeof m->envelope - off, "}");
    if (st != KEEL_OK)
        return st;
    m->len = off + strlen(m->envelope + off);
    m->seq = seq;
    m->kind = (keel_outbox_kind_t)kind;
    return KEEL_OK;
}

keel_status_t keel_outbox_next(keel_outbox_t *o, uint64_t after, keel_outbox_msg_t *m)
{
    if (o == NULL || m == NULL || after >= (uint64_t)INT64_MAX)
        return keel_errorf(KEEL_ERR_ARG, "outbox next: bad argument");
    /* Each round either returns or deletes a row, so this ends. */
    for (;;) {
        sqlite3_stmt *s = o->stmt[S_NEXT];
        if (sqlite3_bind_int64(s, 1, (sqlite3_int64)after) != SQLITE_OK) {
            keel_status_t st = db_error(o, "bind seq");
            stmt_done(o, S_NEXT);
            return st;
        }
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE) {
            stmt_done(o, S_NEXT);
            return keel_errorf(KEEL_ERR_NOT_FOUND, "outbox: no message after %" PRIu64, after);
        }
        if (rc != SQLITE_ROW) {
            keel_status_t st = db_error(o, "read message");
            stmt_done(o, S_NEXT);
            return st;
        }
        uint64_t seq = (uint64_t)sqlite3_column_int64(s, 0);
        int64_t kind = sqlite3_column_int64(s, 1);
        keel_status_t st = envelope(o, m, seq, kind);
        stmt_done(o, S_NEXT);
        if (st == KEEL_OK)
            return KEEL_OK;
        keel_wipe(m, sizeof *m);
        if (st != KEEL_ERR_VERIFY)
            return st;
        if ((st = drop_corrupt(o, seq, kind)) != KEEL_OK)
            return st;
    }
}

keel_status_t keel_outbox_stats(keel_outbox_t *o, keel_outbox_stats_t *st)
{
    if (o == NULL || st == NULL)
        return keel_errorf(KEEL_ERR_ARG, "outbox stats: missing argument");
    memset(st, 0, sizeof *st);
    st->pending = total(o->fig.count);
    st->pending_bytes = total(o->fig.bytes);
    st->next_seq = o->fig.next_seq;
    memcpy(st->dropped, o->fig.dropped, sizeof st->dropped);
    st->corrupt = o->fig.corrupt;
    st->acked = o->acked;
    return KEEL_OK;
}

keel_status_t keel_outbox_reload(keel_outbox_t *o)
{
    if (o == NULL)
        return keel_errorf(KEEL_ERR_ARG, "outbox reload: missing argument");
    return load(o);
}

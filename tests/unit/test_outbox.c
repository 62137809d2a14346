/*
 * Unit tests for the persistent outbox: sequence order and persistence,
 * survival of a factory reset, the drop policy by count and by bytes, the
 * envelope, msgid idempotency, batches, sealed bodies, and kill -9 in the
 * middle of puts. Prints the put throughput (single vs batches of 100).
 */
#include "testutil.h"

#include "keel/keystore.h"
#include "keel/outbox.h"
#include "keel/vault.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEVICE "dev-0123456789abcdef"
#define CRASH_ROUNDS 24
#define BENCH_SINGLE 200
#define BENCH_BATCHES 20
#define BENCH_BATCH 100

static const keel_outbox_limits_t roomy = {.max_messages = 100000, .max_bytes = 64u * 1024u * 1024u};

typedef struct {
    char *root;
    char ks_dir[KEEL_PATH_MAX];
    char vault_dir[KEEL_PATH_MAX];
    keel_keystore_t *ks;
    keel_vault_t *v;
    keel_outbox_t *o;
} fx_t;

static keel_outbox_t *ob_open(keel_vault_t *v, keel_outbox_limits_t lim)
{
    keel_outbox_t *o = NULL;
    keel_status_t st = keel_outbox_open(v, DEVICE, lim, &o);
    if (st != KEEL_OK)
        fail_msg("keel_outbox_open: %s: %s", keel_status_str(st), keel_error_message());
    return o;
}

static void fx_open(fx_t *fx, keel_outbox_limits_t lim)
{
    keel_status_t st = keel_vault_open(fx->vault_dir, fx->ks, &fx->v);
    if (st != KEEL_OK)
        fail_msg("keel_vault_open: %s: %s", keel_status_str(st), keel_error_message());
    fx->o = ob_open(fx->v, lim);
}

static void fx_close(fx_t *fx)
{
    keel_outbox_close(fx->o);
    keel_vault_close(fx->v);
    fx->o = NULL;
    fx->v = NULL;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    if (vault_fixture_new(&fx->root, fx->vault_dir, &fx->ks) != 0) {
        free(fx);
        return -1;
    }
    fx_open(fx, roomy);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    fx_close(fx);
    vault_fixture_free(fx->root, fx->ks);
    free(fx);
    return 0;
}

static uint64_t put_ok(keel_outbox_t *o, keel_outbox_kind_t kind, const char *body)
{
    uint64_t seq = 0;
    bool dup = true;
    keel_status_t st = keel_outbox_put(o, kind, body, strlen(body), NULL, &seq, &dup);
    if (st != KEEL_OK)
        fail_msg("put: %s: %s", keel_status_str(st), keel_error_message());
    assert_false(dup);
    assert_true(seq > 0);
    return seq;
}

/* A JSON object's text of exactly n bytes (n >= 8). */
static char *body_of(size_t n, char fill)
{
    assert_true(n >= 8);
    char *b = malloc(n + 1);
    assert_non_null(b);
    memcpy(b, "{\"p\":\"", 6);
    memset(b + 6, fill, n - 8);
    memcpy(b + n - 2, "\"}", 3);
    return b;
}

static uint64_t put_sized(keel_outbox_t *o, keel_outbox_kind_t kind, size_t n)
{
    char *b = body_of(n, 'x');
    uint64_t seq = put_ok(o, kind, b);
    free(b);
    return seq;
}

static keel_outbox_stats_t stats_of(keel_outbox_t *o)
{
    keel_outbox_stats_t st;
    assert_int_equal(keel_outbox_stats(o, &st), KEEL_OK);
    return st;
}

static int64_t sql_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    assert_int_equal(sqlite3_finalize(s), SQLITE_OK);
    return n;
}

static void sql_ok(sqlite3 *db, const char *sql)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
}

static int64_t counter(sqlite3 *db, const char *name)
{
    char q[128];
    assert_int_equal(keel_snprintf(q, sizeof q,
                                   "SELECT coalesce((SELECT value FROM outbox_counters WHERE name = '%s'), 0)",
                                   name),
                     KEEL_OK);
    return sql_int(db, q);
}

/* The figures kept in memory agree with the tables. */
static void check_figures(keel_outbox_t *o, sqlite3 *db)
{
    keel_outbox_stats_t st = stats_of(o);
    assert_int_equal(st.pending, sql_int(db, "SELECT count(*) FROM outbox"));
    assert_int_equal(st.pending_bytes, sql_int(db, "SELECT coalesce(sum(size), 0) FROM outbox"));
    assert_int_equal(st.next_seq, counter(db, "next_seq") > 0 ? counter(db, "next_seq") : 1);
    assert_true(st.next_seq > (uint64_t)sql_int(db, "SELECT coalesce(max(seq), 0) FROM outbox"));
    assert_int_equal(st.dropped[0], counter(db, "dropped_telemetry"));
    assert_int_equal(st.dropped[1], counter(db, "dropped_event"));
    assert_int_equal(st.dropped[2], counter(db, "dropped_alert"));
    assert_int_equal(st.corrupt, counter(db, "corrupt"));
}

static keel_status_t next_of(keel_outbox_t *o, uint64_t after, keel_outbox_msg_t *m)
{
    memset(m, 0xa5, sizeof *m);
    return keel_outbox_next(o, after, m);
}

/* Parses an envelope strictly: exactly the documented keys. */
static json_t *envelope_parse(const keel_outbox_msg_t *m)
{
    assert_true(m->len < sizeof m->envelope);
    assert_int_equal(m->envelope[m->len], '\0');
    json_error_t err;
    json_t *j = json_loadb(m->envelope, m->len, JSON_REJECT_DUPLICATES, &err);
    if (j == NULL)
        fail_msg("envelope is not JSON: %s: %s", err.text, m->envelope);
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val) {
        if (strcmp(key, "device") && strcmp(key, "seq") && strcmp(key, "ts") && strcmp(key, "kind") &&
            strcmp(key, "data") && strcmp(key, "dropped"))
            fail_msg("unexpected key %s", key);
    }
    assert_string_equal(json_string_value(json_object_get(j, "device")), DEVICE);
    assert_int_equal(json_integer_value(json_object_get(j, "seq")), m->seq);
    assert_string_equal(json_string_value(json_object_get(j, "kind")), keel_outbox_kind_name(m->kind));
    assert_true(json_is_object(json_object_get(j, "data")));
    return j;
}

static void test_seq_order_and_persistence(void **state)
{
    fx_t *fx = *state;
    const char *bodies[] = {"{\"t\":1}", "{\"t\":2}", "{ \"spaced\" : [1, 2.50, \"\\u00e9\"] }",
                            "{\"t\":4}", "{\"t\":5}"};
    time_t before = time(NULL);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(put_ok(fx->o, (keel_outbox_kind_t)(i % 3), bodies[i]), i + 1);
    check_figures(fx->o, keel_vault_db(fx->v));

    keel_outbox_msg_t m;
    assert_int_equal(next_of(fx->o, 0, &m), KEEL_OK);
    assert_int_equal(m.seq, 1);
    assert_int_equal(m.kind, KEEL_OUTBOX_TELEMETRY);
    json_t *j = envelope_parse(&m);
    assert_null(json_object_get(j, "dropped"));
    json_int_t ts = json_integer_value(json_object_get(j, "ts"));
    assert_true(ts >= before && ts <= time(NULL));
    json_decref(j);
    /* The body is embedded byte for byte, not re-encoded. */
    assert_int_equal(next_of(fx->o, 2, &m), KEEL_OK);
    assert_int_equal(m.seq, 3);
    assert_int_equal(m.kind, KEEL_OUTBOX_ALERT);
    assert_non_null(strstr(m.envelope, ",\"data\":{ \"spaced\" : [1, 2.50, \"\\u00e9\"] }}"));
    json_decref(envelope_parse(&m));

    /* Across close/open: same order, the sequence goes on. */
    fx_close(fx);
    fx_open(fx, roomy);
    keel_outbox_stats_t st = stats_of(fx->o);
    assert_int_equal(st.pending, 5);
    assert_int_equal(st.next_seq, 6);
    uint64_t after = 0;
    for (uint64_t want = 1; want <= 5; want++) {
        assert_int_equal(next_of(fx->o, after, &m), KEEL_OK);
        assert_int_equal(m.seq, want);
        after = m.seq;
    }
    assert_int_equal(next_of(fx->o, after, &m), KEEL_ERR_NOT_FOUND);

    assert_int_equal(keel_outbox_ack(fx->o, 1), KEEL_OK);
    assert_int_equal(keel_outbox_ack(fx->o, 3), KEEL_OK);
    assert_int_equal(keel_outbox_ack(fx->o, 3), KEEL_OK); /* already gone */
    assert_int_equal(keel_outbox_ack(fx->o, 0), KEEL_ERR_ARG);
    assert_int_equal(stats_of(fx->o).acked, 2);
    check_figures(fx->o, keel_vault_db(fx->v));
    fx_close(fx);
    fx_open(fx, roomy);
    assert_int_equal(next_of(fx->o, 0, &m), KEEL_OK);
    assert_int_equal(m.seq, 2);
    assert_int_equal(next_of(fx->o, 2, &m), KEEL_OK);
    assert_int_equal(m.seq, 4);
    /* Acked seqs are not handed out again, even the newest. */
    assert_int_equal(keel_outbox_ack(fx->o, 5), KEEL_OK);
    fx_close(fx);
    fx_open(fx, roomy);
    assert_int_equal(put_ok(fx->o, KEEL_OUTBOX_EVENT, "{}"), 6);
    check_figures(fx->o, keel_vault_db(fx->v));
}

static void test_survives_erase(void **state)
{
    fx_t *fx = *state;
    keel_outbox_set_limits(fx->o, (keel_outbox_limits_t){.max_messages = 2, .max_bytes = 0});
    for (int i = 0; i < 3; i++)
        (void)put_ok(fx->o, KEEL_OUTBOX_TELEMETRY, "{\"secret\":\"personal\"}");
    assert_int_equal(stats_of(fx->o).dropped[0], 1);
    assert_int_equal(keel_vault_erase(fx->v), KEEL_OK);
    assert_int_equal(keel_outbox_reload(fx->o), KEEL_OK);
    keel_outbox_stats_t st = stats_of(fx->o);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.pending_bytes, 0);
    assert_int_equal(st.next_seq, 4);
    assert_int_equal(st.dropped[0], 1);
    keel_outbox_msg_t m;
    assert_int_equal(next_of(fx->o, 0, &m), KEEL_ERR_NOT_FOUND);
    assert_int_equal(put_ok(fx->o, KEEL_OUTBOX_EVENT, "{\"after\":\"reset\"}"), 4);
    assert_int_equal(next_of(fx->o, 0, &m), KEEL_OK);
    json_t *j = envelope_parse(&m);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "dropped"), "telemetry")), 1);
    json_decref(j);
    check_figures(fx->o, keel_vault_db(fx->v));
    fx_close(fx);
    fx_open(fx, roomy);
    assert_int_equal(stats_of(fx->o).next_seq, 5);
    assert_int_equal(put_ok(fx->o, KEEL_OUTBOX_EVENT, "{}"), 5);
}

/* Empties the outbox and its counters, as a brand-new device. */
static void reset_tables(fx_t *fx)
{
    sql_ok(keel_vault_db(fx->v), "DELETE FROM outbox; DELETE FROM outbox_counters");
    assert_int_equal(keel_outbox_reload(fx->o), KEEL_OK);
}

static keel_outbox_kind_t kind_of(char c)
{
    switch (c) {
    case 'T': return KEEL_OUTBOX_TELEMETRY;
    case 'E': return KEEL_OUTBOX_EVENT;
    case 'A': return KEEL_OUTBOX_ALERT;
    }
    fail_msg("bad kind letter %c", c);
    return KEEL_OUTBOX_TELEMETRY;
}

typedef struct {
    const char *start;   /* kinds queued, oldest first */
    unsigned sizes[4];   /* their body sizes (byte cases) */
    char add;            /* the new message's kind */
    unsigned add_size;
    const char *left;    /* what remains, oldest first: indexes into start, 'N' = the new one; NULL: refused */
    unsigned dropped[3]; /* telemetry, event, alert */
} drop_case_t;

static void run_drop_cases(fx_t *fx, const drop_case_t *cases, size_t n, keel_outbox_limits_t lim)
{
    sqlite3 *db = keel_vault_db(fx->v);
    for (size_t c = 0; c < n; c++) {
        const drop_case_t *dc = &cases[c];
        keel_outbox_set_limits(fx->o, roomy);
        reset_tables(fx);
        uint64_t seqs[4];
        size_t k = strlen(dc->start);
        for (size_t i = 0; i < k; i++)
            seqs[i] = put_sized(fx->o, kind_of(dc->start[i]), dc->sizes[i] ? dc->sizes[i] : 10);
        keel_outbox_set_limits(fx->o, lim);
        keel_outbox_stats_t before = stats_of(fx->o);
        char *b = body_of(dc->add_size ? dc->add_size : 10, 'n');
        uint64_t seq = 0;
        bool dup = false;
        keel_status_t st = keel_outbox_put(fx->o, kind_of(dc->add), b, strlen(b), NULL, &seq, &dup);
        free(b);
        print_message("case %zu: %s + %c -> %s\n", c, dc->start, dc->add, dc->left ? dc->left : "refused");
        if (dc->left == NULL) {
            assert_int_equal(st, KEEL_ERR_TOO_LARGE);
            assert_int_equal(seq, 0);
            keel_outbox_stats_t after = stats_of(fx->o);
            assert_memory_equal(&before, &after, sizeof before); /* nothing pushed out, no seq used */
            assert_int_equal(sql_int(db, "SELECT count(*) FROM outbox"), k);
            check_figures(fx->o, db);
            continue;
        }
        if (st != KEEL_OK)
            fail_msg("case %zu: %s: %s", c, keel_status_str(st), keel_error_message());
        assert_int_equal(seq, k + 1);
        keel_outbox_msg_t m;
        uint64_t after = 0;
        for (const char *p = dc->left; *p; p++) {
            assert_int_equal(next_of(fx->o, after, &m), KEEL_OK);
            assert_int_equal(m.seq, *p == 'N' ? seq : seqs[*p - '0']);
            after = m.seq;
        }
        assert_int_equal(next_of(fx->o, after, &m), KEEL_ERR_NOT_FOUND);
        keel_outbox_stats_t s = stats_of(fx->o);
        for (int i = 0; i < 3; i++)
            assert_int_equal(s.dropped[i], dc->dropped[i]);
        /* Every seq is accounted for: pending or dropped. */
        assert_int_equal(s.next_seq - 1, s.pending + s.dropped[0] + s.dropped[1] + s.dropped[2]);
        check_figures(fx->o, db);
    }
}

static void test_drop_by_count(void **state)
{
    static const drop_case_t cases[] = {
        {"TTT", {0}, 'T', 0, "12N", {1, 0, 0}},
        {"ETA", {0}, 'T', 0, "02N", {1, 0, 0}}, /* new telemetry pushes out older telemetry */
        {"EAE", {0}, 'T', 0, NULL, {0}},        /* ... never an event or alert */
        {"AAE", {0}, 'T', 0, NULL, {0}},
        {"AAA", {0}, 'T', 0, NULL, {0}},
        {"EAE", {0}, 'E', 0, "12N", {0, 1, 0}},
        {"ETE", {0}, 'E', 0, "02N", {1, 0, 0}}, /* telemetry before any event */
        {"TAE", {0}, 'E', 0, "12N", {1, 0, 0}},
        {"AAE", {0}, 'E', 0, "01N", {0, 1, 0}},
        {"AAA", {0}, 'E', 0, NULL, {0}},        /* an event never pushes out an alert */
        {"TEA", {0}, 'A', 0, "12N", {1, 0, 0}},
        {"AEA", {0}, 'A', 0, "02N", {0, 1, 0}}, /* events before alerts */
        {"AAA", {0}, 'A', 0, "12N", {0, 0, 1}},
        {"EET", {0}, 'A', 0, "01N", {1, 0, 0}},
    };
    run_drop_cases(*state, cases, sizeof cases / sizeof cases[0],
                   (keel_outbox_limits_t){.max_messages = 3, .max_bytes = 1u << 20});
}

static void test_drop_by_bytes(void **state)
{
    static const drop_case_t cases[] = {
        {"TT", {40, 40}, 'T', 30, "1N", {1, 0, 0}},
        {"TTE", {30, 30, 30}, 'A', 60, "2N", {2, 0, 0}},      /* several go for one */
        {"EA", {50, 40}, 'T', 20, NULL, {0}},
        {"EA", {50, 40}, 'E', 20, "1N", {0, 1, 0}},
        {"AET", {50, 30, 10}, 'A', 60, "N", {1, 1, 1}},      /* telemetry, event, then alert */
        {"TA", {10, 80}, 'E', 20, "1N", {1, 0, 0}},
        {"TA", {10, 80}, 'E', 40, NULL, {0}},                /* not even the telemetry goes */
        {"TEA", {10, 10, 10}, 'T', 100, NULL, {0}},
        {"TTT", {10, 10, 10}, 'T', 100, "N", {3, 0, 0}},     /* exactly max_bytes fits */
    };
    run_drop_cases(*state, cases, sizeof cases / sizeof cases[0],
                   (keel_outbox_limits_t){.max_messages = 1000, .max_bytes = 100});
}

/* Both bounds at once: the count is fine but the bytes are not, and the other way round. */
static void test_drop_both_bounds(void **state)
{
    static const drop_case_t cases[] = {
        {"TTTT", {10, 10, 10, 10}, 'E', 10, "123N", {1, 0, 0}}, /* count */
        {"TEA", {10, 60, 10}, 'E', 50, "2N", {1, 1, 0}},        /* bytes */
    };
    run_drop_cases(*state, cases, sizeof cases / sizeof cases[0],
                   (keel_outbox_limits_t){.max_messages = 4, .max_bytes = 100});
}

static void test_dropped_in_envelope(void **state)
{
    fx_t *fx = *state;
    keel_outbox_set_limits(fx->o, (keel_outbox_limits_t){.max_messages = 2, .max_bytes = 1u << 20});
    (void)put_ok(fx->o, KEEL_OUTBOX_TELEMETRY, "{}");
    (void)put_ok(fx->o, KEEL_OUTBOX_EVENT, "{}");
    (void)put_ok(fx->o, KEEL_OUTBOX_ALERT, "{}"); /* drops telemetry 1 */
    (void)put_ok(fx->o, KEEL_OUTBOX_ALERT, "{}"); /* drops event 2 */
    (void)put_ok(fx->o, KEEL_OUTBOX_ALERT, "{}"); /* drops alert 3 */
    (void)put_ok(fx->o, KEEL_OUTBOX_ALERT, "{}"); /* drops alert 4 */
    keel_outbox_msg_t m;
    assert_int_equal(next_of(fx->o, 0, &m), KEEL_OK);
    assert_int_equal(m.seq, 5);
    assert_non_null(strstr(m.envelope, ",\"dropped\":{\"telemetry\":1,\"event\":1,\"alert\":2}}"));
    json_t *j = envelope_parse(&m);
    json_t *d = json_object_get(j, "dropped");
    assert_int_equal(json_object_size(d), 3);
    assert_int_equal(json_integer_value(json_object_get(d, "alert")), 2);
    json_decref(j);
    fx_close(fx);
    fx_open(fx, roomy);
    keel_outbox_stats_t st = stats_of(fx->o);
    assert_int_equal(st.dropped[0], 1);
    assert_int_equal(st.dropped[1], 1);
    assert_int_equal(st.dropped[2], 2);
    check_figures(fx->o, keel_vault_db(fx->v));
}

static void test_msgid(void **state)
{
    fx_t *fx = *state;
    uint64_t seq = 0, seq2 = 0;
    bool dup = true;
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{\"a\":1}", 7, "app-42", &seq, &dup),
                     KEEL_OK);
    assert_false(dup);
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{\"a\":2}", 7, "app-42", &seq2, &dup),
                     KEEL_OK);
    assert_true(dup);
    assert_int_equal(seq2, seq);
    assert_int_equal(stats_of(fx->o).pending, 1);
    /* Also across a reopen, and inside a batch. */
    fx_close(fx);
    fx_open(fx, roomy);
    assert_int_equal(keel_outbox_begin(fx->o), KEEL_OK);
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{\"a\":3}", 7, "app-42", &seq2, &dup),
                     KEEL_OK);
    assert_true(dup);
    assert_int_equal(seq2, seq);
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{\"b\":1}", 7, "app-43", &seq2, &dup),
                     KEEL_OK);
    assert_false(dup);
    uint64_t seq3 = 0;
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{\"b\":2}", 7, "app-43", &seq3, &dup),
                     KEEL_OK);
    assert_true(dup);
    assert_int_equal(seq3, seq2);
    assert_int_equal(keel_outbox_commit(fx->o), KEEL_OK);
    /* Once acked, the id may be used again: a new message. */
    assert_int_equal(keel_outbox_ack(fx->o, seq), KEEL_OK);
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{\"a\":4}", 7, "app-42", &seq3, &dup),
                     KEEL_OK);
    assert_false(dup);
    assert_true(seq3 > seq2);
    const char *bad[] = {"", "has space", "tab\tx", "quote\x7f", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{}", 2, bad[i], &seq, &dup), KEEL_ERR_ARG);
    char longid[KEEL_OUTBOX_MSGID_MAX + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{}", 2, longid, &seq, &dup), KEEL_ERR_ARG);
    longid[KEEL_OUTBOX_MSGID_MAX] = '\0';
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{}", 2, longid, &seq, &dup), KEEL_OK);
    check_figures(fx->o, keel_vault_db(fx->v));
}

static void test_batch(void **state)
{
    fx_t *fx = *state;
    sqlite3 *db = keel_vault_db(fx->v);
    assert_int_equal(keel_outbox_commit(fx->o), KEEL_ERR_ARG);
    assert_int_equal(keel_outbox_begin(fx->o), KEEL_OK);
    assert_int_equal(keel_outbox_begin(fx->o), KEEL_ERR_ARG);
    for (int i = 0; i < 3; i++)
        assert_int_equal(put_ok(fx->o, KEEL_OUTBOX_TELEMETRY, "{\"b\":1}"), (uint64_t)i + 1);
    assert_int_equal(keel_outbox_commit(fx->o), KEEL_OK);
    fx_close(fx);
    fx_open(fx, roomy);
    db = keel_vault_db(fx->v);
    assert_int_equal(stats_of(fx->o).pending, 3);

    /* Rollback undoes the puts, their drops and their seqs. */
    keel_outbox_set_limits(fx->o, (keel_outbox_limits_t){.max_messages = 3, .max_bytes = 0});
    keel_outbox_stats_t before = stats_of(fx->o);
    assert_int_equal(keel_outbox_begin(fx->o), KEEL_OK);
    assert_int_equal(put_ok(fx->o, KEEL_OUTBOX_ALERT, "{\"b\":2}"), 4);
    assert_int_equal(put_ok(fx->o, KEEL_OUTBOX_ALERT, "{\"b\":3}"), 5);
    assert_int_equal(stats_of(fx->o).dropped[0], 2);
    keel_outbox_rollback(fx->o);
    keel_outbox_stats_t after = stats_of(fx->o);
    assert_memory_equal(&before, &after, sizeof before);
    check_figures(fx->o, db);
    keel_outbox_rollback(fx->o); /* no batch: nothing happens */

    /* A failed put inside a batch undoes only itself; the batch goes on. */
    assert_int_equal(keel_outbox_begin(fx->o), KEEL_OK);
    assert_int_equal(put_ok(fx->o, KEEL_OUTBOX_EVENT, "{\"b\":4}"), 4); /* drops telemetry 1 */
    sql_ok(db, "CREATE TEMP TRIGGER refuse_alerts BEFORE INSERT ON outbox WHEN NEW.kind = 2"
               " BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    keel_outbox_stats_t mid = stats_of(fx->o);
    uint64_t seq = 0;
    bool dup = false;
    /* This put first drops telemetry 2, then its insert fails. */
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_ALERT, "{}", 2, NULL, &seq, &dup), KEEL_ERR_DB);
    assert_non_null(strstr(keel_error_message(), "injected failure"));
    after = stats_of(fx->o);
    assert_memory_equal(&mid, &after, sizeof mid);
    check_figures(fx->o, db);
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_TELEMETRY, "x", 1, NULL, &seq, &dup),
                     KEEL_ERR_FORMAT);
    assert_int_equal(put_ok(fx->o, KEEL_OUTBOX_EVENT, "{\"b\":5}"), 5);
    assert_int_equal(keel_outbox_commit(fx->o), KEEL_OK);
    /* The same failure outside a batch. */
    mid = stats_of(fx->o);
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_ALERT, "{}", 2, NULL, &seq, &dup), KEEL_ERR_DB);
    after = stats_of(fx->o);
    assert_memory_equal(&mid, &after, sizeof mid);
    sql_ok(db, "DROP TRIGGER refuse_alerts");
    check_figures(fx->o, db);
    fx_close(fx);
    fx_open(fx, roomy);
    keel_outbox_msg_t m;
    const uint64_t want[] = {3, 4, 5};
    uint64_t at = 0;
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(next_of(fx->o, at, &m), KEEL_OK);
        assert_int_equal(m.seq, want[i]);
        at = m.seq;
    }
    assert_int_equal(next_of(fx->o, at, &m), KEEL_ERR_NOT_FOUND);
    assert_int_equal(stats_of(fx->o).next_seq, 6);

    /* Closing with a batch open discards it. */
    assert_int_equal(keel_outbox_begin(fx->o), KEEL_OK);
    (void)put_ok(fx->o, KEEL_OUTBOX_EVENT, "{}");
    fx_close(fx);
    fx_open(fx, roomy);
    assert_int_equal(stats_of(fx->o).pending, 3);
    assert_int_equal(stats_of(fx->o).next_seq, 6);
}

static void test_bad_input(void **state)
{
    fx_t *fx = *state;
    uint64_t seq = 0;
    bool dup = false;
    char *big = body_of(KEEL_OUTBOX_BODY_MAX + 1, 'b');
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_TELEMETRY, big, strlen(big), NULL, &seq, &dup),
                     KEEL_ERR_TOO_LARGE);
    free(big);
    big = body_of(KEEL_OUTBOX_BODY_MAX, 'b');
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_ALERT, big, strlen(big), NULL, &seq, &dup), KEEL_OK);
    keel_outbox_msg_t m;
    assert_int_equal(next_of(fx->o, 0, &m), KEEL_OK);
    json_decref(envelope_parse(&m));
    keel_outbox_set_limits(fx->o, (keel_outbox_limits_t){.max_messages = 10, .max_bytes = 1000});
    free(big);
    big = body_of(1001, 'b');
    /* Larger than max_bytes: refused as such, nothing dropped for it. */
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_ALERT, big, strlen(big), NULL, &seq, &dup),
                     KEEL_ERR_TOO_LARGE);
    free(big);
    assert_int_equal(stats_of(fx->o).pending, 1);
    const char *bad[] = {"", "{", "[1]", "{}x", "\"s\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, bad[i], strlen(bad[i]), NULL, &seq, &dup),
                         KEEL_ERR_FORMAT);
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{\0}", 3, NULL, &seq, &dup), KEEL_ERR_FORMAT);
    assert_int_equal(keel_outbox_put(fx->o, (keel_outbox_kind_t)3, "{}", 2, NULL, &seq, &dup), KEEL_ERR_ARG);
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, NULL, 2, NULL, &seq, &dup), KEEL_ERR_ARG);
    assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_EVENT, "{}", 2, NULL, NULL, &dup), KEEL_ERR_ARG);
    assert_string_equal(keel_outbox_kind_name((keel_outbox_kind_t)7), "unknown");
    assert_string_equal(keel_outbox_kind_name(KEEL_OUTBOX_ALERT), "alert");

    keel_outbox_t *o = NULL;
    const char *bad_ids[] = {"", "has\"quote", "back\\slash", "sp ace", "nl\n"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++)
        assert_int_equal(keel_outbox_open(fx->v, bad_ids[i], roomy, &o), KEEL_ERR_ARG);
    char longid[KEEL_OUTBOX_DEVICE_ID_MAX + 2];
    memset(longid, 'd', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    assert_int_equal(keel_outbox_open(fx->v, longid, roomy, &o), KEEL_ERR_ARG);
    assert_null(o);
    assert_int_equal(keel_outbox_open(fx->v, DEVICE, (keel_outbox_limits_t){0, 100}, &o), KEEL_ERR_ARG);
    assert_int_equal(keel_outbox_open(fx->v, DEVICE, (keel_outbox_limits_t){100, 0}, &o), KEEL_ERR_ARG);
    /* The longest id with the largest body still fits the envelope. */
    longid[KEEL_OUTBOX_DEVICE_ID_MAX] = '\0';
    assert_int_equal(keel_outbox_open(fx->v, longid, roomy, &o), KEEL_OK);
    assert_int_equal(next_of(o, 0, &m), KEEL_OK);
    assert_true(m.len > KEEL_OUTBOX_BODY_MAX + KEEL_OUTBOX_DEVICE_ID_MAX);
    keel_outbox_close(o);
}

/* Flips one bit of a stored body, as an attacker with the file or a bad block would. */
static void flip_bit(sqlite3 *db, uint64_t seq, int at)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT body FROM outbox WHERE seq = ?1", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(s, 1, (sqlite3_int64)seq), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int n = sqlite3_column_bytes(s, 0);
    assert_true(n > at);
    uint8_t *b = malloc((size_t)n);
    assert_non_null(b);
    memcpy(b, sqlite3_column_blob(s, 0), (size_t)n);
    assert_int_equal(sqlite3_finalize(s), SQLITE_OK);
    b[at] ^= 1;
    assert_int_equal(sqlite3_prepare_v2(db, "UPDATE outbox SET body = ?1 WHERE seq = ?2", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_bind_blob(s, 1, b, n, SQLITE_TRANSIENT), SQLITE_OK);
    assert_int_equal(sqlite3_bind_int64(s, 2, (sqlite3_int64)seq), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_DONE);
    assert_int_equal(sqlite3_finalize(s), SQLITE_OK);
    free(b);
}

/* An edited or moved body never opens; the row is dropped and counted, the queue goes on. */
static void test_sealed_body(void **state)
{
    fx_t *fx = *state;
    sqlite3 *db = keel_vault_db(fx->v);
    const char *secret = "{\"name\":\"Alice Example\"}";
    for (int i = 0; i < 5; i++)
        (void)put_ok(fx->o, i == 2 ? KEEL_OUTBOX_ALERT : KEEL_OUTBOX_EVENT, secret);
    /* Encrypted at rest. */
    assert_int_equal(sql_int(db, "SELECT count(*) FROM outbox WHERE instr(body, CAST('Alice' AS BLOB)) > 0"),
                     0);
    /* 2: one bit flipped; 3: row 1's body moved into it; 4: size column edited. */
    flip_bit(db, 2, 20);
    sql_ok(db, "UPDATE outbox SET body = (SELECT body FROM outbox WHERE seq = 1) WHERE seq = 3");
    sql_ok(db, "UPDATE outbox SET size = size + 1 WHERE seq = 4");
    assert_int_equal(keel_outbox_reload(fx->o), KEEL_OK);
    keel_outbox_msg_t m;
    assert_int_equal(next_of(fx->o, 0, &m), KEEL_OK);
    assert_int_equal(m.seq, 1);
    assert_non_null(strstr(m.envelope, "Alice Example"));
    assert_int_equal(next_of(fx->o, 1, &m), KEEL_OK);
    assert_int_equal(m.seq, 5);
    json_t *j = envelope_parse(&m);
    json_t *d = json_object_get(j, "dropped");
    assert_int_equal(json_integer_value(json_object_get(d, "event")), 2);
    assert_int_equal(json_integer_value(json_object_get(d, "alert")), 1);
    json_decref(j);
    keel_outbox_stats_t st = stats_of(fx->o);
    assert_int_equal(st.corrupt, 3);
    assert_int_equal(st.pending, 2);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM outbox WHERE seq IN (2, 3, 4)"), 0);
    check_figures(fx->o, db);
    /* A row of an impossible kind is dropped as well. */
    sql_ok(db, "UPDATE outbox SET kind = 9 WHERE seq = 5");
    assert_int_equal(keel_outbox_reload(fx->o), KEEL_OK);
    assert_int_equal(next_of(fx->o, 1, &m), KEEL_ERR_NOT_FOUND);
    assert_int_equal(stats_of(fx->o).corrupt, 4);
    check_figures(fx->o, db);
}

/* --- kill -9 while putting ------------------------------------------------ */

typedef struct {
    uint64_t seq;
    uint32_t kind;
    uint32_t unused;
} report_t;

/* The child: puts for ever (single puts and batches), reporting each seq on
 * the pipe only once put or commit returned KEEL_OK. */
__attribute__((noreturn)) static void crash_child(const fx_t *fx, int fd, keel_outbox_limits_t lim,
                                                   unsigned seed)
{
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    keel_outbox_t *o = NULL;
    if (keystore_open_in(fx->root, "keystore", &ks) != KEEL_OK || keel_vault_open(fx->vault_dir, ks, &v) != KEEL_OK ||
        keel_outbox_open(v, DEVICE, lim, &o) != KEEL_OK)
        _exit(2);
    /* Ready: the kill lands among the puts, not during open. */
    report_t ready = {.seq = 0};
    if (write(fd, &ready, sizeof ready) != (ssize_t)sizeof ready)
        _exit(6);
    srand(seed);
    char body[512];
    for (unsigned i = 0; i < 1000000; i++) {
        unsigned batch = rand() % 3 == 0 ? 2 + (unsigned)rand() % 12 : 0;
        report_t r[16];
        unsigned nr = 0;
        if (batch && keel_outbox_begin(o) != KEEL_OK)
            _exit(3);
        for (unsigned j = 0; j < (batch ? batch : 1); j++) {
            int roll = rand() % 10;
            keel_outbox_kind_t kind = roll < 7 ? KEEL_OUTBOX_TELEMETRY : roll < 9 ? KEEL_OUTBOX_EVENT
                                                                                : KEEL_OUTBOX_ALERT;
            int pad = rand() % 400;
            int n = snprintf(body, sizeof body, "{\"i\":%u,\"j\":%u,\"pad\":\"%*s\"}", i, j, pad, "");
            uint64_t seq = 0;
            bool dup = false;
            keel_status_t st = keel_outbox_put(o, kind, body, (size_t)n, NULL, &seq, &dup);
            if (st == KEEL_OK)
                r[nr++] = (report_t){.seq = seq, .kind = (uint32_t)kind};
            else if (st != KEEL_ERR_TOO_LARGE) /* a full queue of alerts refuses telemetry */
                _exit(4);
        }
        if (batch && keel_outbox_commit(o) != KEEL_OK)
            _exit(5);
        /* One write of at most PIPE_BUF bytes: the parent sees all of it or nothing. */
        if (nr > 0 && write(fd, r, nr * sizeof r[0]) != (ssize_t)(nr * sizeof r[0]))
            _exit(6);
    }
    _exit(0);
}

static void test_crash_kill9(void **state)
{
    fx_t *fx = *state;
    fx_close(fx);
    srand((unsigned)time(NULL));
    uint64_t acked_total = 0, next_before = 1, reported_total = 0, dropped_runs = 0;
    uint64_t dropped_before[3] = {0, 0, 0};
    for (int round = 0; round < CRASH_ROUNDS; round++) {
        /* Odd rounds keep the queue small so drops happen under the knife too. */
        bool tight = round % 2 == 1;
        keel_outbox_limits_t lim = tight ? (keel_outbox_limits_t){.max_messages = 40, .max_bytes = 8000} : roomy;
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            crash_child(fx, p[1], lim, (unsigned)rand() + (unsigned)round);
        }
        close(p[1]);
        report_t ready;
        assert_int_equal(read(p[0], &ready, sizeof ready), sizeof ready);
        assert_int_equal(ready.seq, 0);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(1 + rand() % 150) * 1000000L};
        nanosleep(&ts, NULL);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        /* What the child was told is durable. */
        size_t len = 0;
        uint8_t *buf = fd_read_all(p[0], &len);
        close(p[0]);
        assert_int_equal(len % sizeof(report_t), 0);
        size_t nrep = len / sizeof(report_t);
        reported_total += nrep;

        fx_open(fx, lim);
        sqlite3 *db = keel_vault_db(fx->v);
        check_figures(fx->o, db);
        keel_outbox_stats_t st = stats_of(fx->o);
        uint64_t missing[3] = {0, 0, 0}, last = next_before - 1;
        for (size_t i = 0; i < nrep; i++) {
            report_t r;
            memcpy(&r, buf + i * sizeof r, sizeof r);
            /* Strictly increasing and never a seq handed out before this child. */
            assert_true(r.seq > last);
            assert_true(r.kind < 3);
            last = r.seq;
            char q[96];
            assert_int_equal(keel_snprintf(q, sizeof q, "SELECT count(*) FROM outbox WHERE seq = %" PRIu64
                                                        " AND kind = %u", r.seq, r.kind), KEEL_OK);
            if (sql_int(db, q) == 0)
                missing[r.kind]++;
        }
        free(buf);
        assert_true(st.next_seq > last);
        assert_true(st.next_seq >= next_before);
        for (int k = 0; k < 3; k++) {
            assert_true(st.dropped[k] >= dropped_before[k]);
            /* A reported message is there unless the drop policy took it. */
            assert_true(missing[k] <= st.dropped[k] - dropped_before[k]);
            if (!tight)
                assert_int_equal(st.dropped[k], dropped_before[k]);
            dropped_runs += st.dropped[k] - dropped_before[k];
            dropped_before[k] = st.dropped[k];
        }
        /* Every seq ever handed out is pending, dropped or acked: no gap, no reuse. */
        assert_int_equal(st.next_seq - 1, st.pending + st.dropped[0] + st.dropped[1] + st.dropped[2] + acked_total);
        /* Every pending body opens. */
        keel_outbox_msg_t *m = malloc(sizeof *m);
        assert_non_null(m);
        uint64_t at = 0, seen = 0;
        keel_status_t s;
        while ((s = keel_outbox_next(fx->o, at, m)) == KEEL_OK) {
            at = m->seq;
            seen++;
        }
        assert_int_equal(s, KEEL_ERR_NOT_FOUND);
        assert_int_equal(seen, st.pending);
        assert_int_equal(stats_of(fx->o).corrupt, 0);
        /* The receiver acknowledges a few. */
        for (int i = rand() % 6; i > 0 && keel_outbox_next(fx->o, 0, m) == KEEL_OK; i--) {
            assert_int_equal(keel_outbox_ack(fx->o, m->seq), KEEL_OK);
            acked_total++;
        }
        free(m);
        next_before = st.next_seq;
        fx_close(fx);
    }
    print_message("%s: %d kills, %" PRIu64 " puts reported durable, %" PRIu64 " dropped by policy, "
                  "%" PRIu64 " acked, next seq %" PRIu64 "\n",
                  __func__, CRASH_ROUNDS, reported_total, dropped_runs, acked_total, next_before);
    assert_true(reported_total > 0);
    fx_open(fx, roomy);
}

static void test_throughput(void **state)
{
    fx_t *fx = *state;
    const char *body = "{\"temperature\":21.5,\"humidity\":40,\"door\":\"closed\",\"battery\":97,"
                       "\"rssi\":-61,\"uptime\":123456}";
    size_t len = strlen(body);
    uint64_t seq = 0;
    bool dup = false;
    double t0 = keel_now();
    for (int i = 0; i < BENCH_SINGLE; i++)
        assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_TELEMETRY, body, len, NULL, &seq, &dup), KEEL_OK);
    double single = BENCH_SINGLE / (keel_now() - t0);
    t0 = keel_now();
    for (int b = 0; b < BENCH_BATCHES; b++) {
        assert_int_equal(keel_outbox_begin(fx->o), KEEL_OK);
        for (int i = 0; i < BENCH_BATCH; i++)
            assert_int_equal(keel_outbox_put(fx->o, KEEL_OUTBOX_TELEMETRY, body, len, NULL, &seq, &dup),
                             KEEL_OK);
        assert_int_equal(keel_outbox_commit(fx->o), KEEL_OK);
    }
    double batched = BENCH_BATCHES * BENCH_BATCH / (keel_now() - t0);
    keel_outbox_msg_t *m = malloc(sizeof *m);
    assert_non_null(m);
    t0 = keel_now();
    int acks = 0;
    while (acks < BENCH_SINGLE && keel_outbox_next(fx->o, 0, m) == KEEL_OK) {
        assert_int_equal(keel_outbox_ack(fx->o, m->seq), KEEL_OK);
        acks++;
    }
    double acked = acks / (keel_now() - t0);
    free(m);
    print_message("outbox throughput (%zu-byte bodies, synchronous=FULL): single puts %.0f/s, "
                  "batches of %d %.0f/s, next+ack %.0f/s\n",
                  len, single, BENCH_BATCH, batched, acked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_seq_order_and_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_survives_erase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_by_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_by_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_both_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropped_in_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msgid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sealed_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_kill9, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throughput, setup, teardown),
    };
    return cmocka_run_group_tests_name("outbox", tests, NULL, NULL);
}

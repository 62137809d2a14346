/*
 * Power-cut tests for the vault's database (docs/internals/powercut.md).
 *
 * A forked child runs a scenario with crashvfs armed at crash point N: the
 * N-th write, truncate or sync of the database or its WAL happens, then the
 * power goes (unsynced writes undone, all or some, torn or trashed, by the
 * mode) and the child exits at once. The child reports on a pipe what the
 * library told it was durable; the parent reopens the vault and checks
 * that nothing reported was lost and that the state is consistent. Every N
 * from 1 to the scenario's count of operations is tried.
 *
 * Scenarios: the outbox (puts, batches, drops, acks), crypto-erase (also a
 * second sweep over the key-file operations, with KEEL_FAULT_INJECTION),
 * privacy consent and records.
 *
 * Every crash point runs in the three modes (lose-all, random, garbage);
 * KEEL_POWERCUT_FULL=1 runs the random modes with 8 seeds each.
 */
#include "testutil.h"

#include "crashvfs.h"
#include "keel/keystore.h"
#include "keel/outbox.h"
#include "keel/privacy.h"
#include "keel/vault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEVICE "dev-powercut"
/* The vault's key-wrapping associated data (its file format). */
#define WRAP_AD "keel-vault-v1|data-key"
#define FULL_SEEDS 8
#define REPORTS_MAX 4096
#define SEED_MESSAGES 4
#define OUTBOX_STEPS 26
#define PRIVACY_STEPS 10

/* Small enough that the scripts drop messages for space. */
static const keel_outbox_limits_t tight = {.max_messages = 9, .max_bytes = 2400};

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
    "{\"field\":\"uptime\",\"type\":\"integer\",\"category\":\"device-health\",\"why\":\"support\"}]}";

/* What the child tells the parent, each only after the call returned KEEL_OK
 * (R_ACK_TRY before the call: the ack may or may not have happened). */
enum { R_PUT = 1, R_ACK_TRY, R_ACK, R_ERASED, R_SECRET, R_CONSENT, R_RECORD, R_DONE };

typedef struct {
    uint32_t type;
    uint32_t kind;
    uint64_t seq;
} report_t;

typedef struct {
    report_t r[REPORTS_MAX];
    size_t n;
    int status;
} outcome_t;

typedef struct {
    char *root;
    char tmpl[KEEL_PATH_MAX]; /* the state before the scenario */
    char work[KEEL_PATH_MAX]; /* a copy of it that one child crashes */
} fx_t;

typedef struct {
    const char *name;
    void (*child)(const char *dir, int fd);
    void (*check)(const char *dir, const outcome_t *out, void *arg);
    void *arg;
    bool file_faults; /* sweep the key-file operations too */
} scenario_t;

/* ---- plumbing ---- */

static void copy_tree(const char *from, const char *to)
{
    struct stat sb;
    assert_int_equal(lstat(from, &sb), 0);
    if (S_ISDIR(sb.st_mode)) {
        assert_int_equal(mkdir(to, 0700), 0);
        DIR *d = opendir(from);
        assert_non_null(d);
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char a[KEEL_PATH_MAX], b[KEEL_PATH_MAX];
            path_in(a, from, e->d_name);
            path_in(b, to, e->d_name);
            copy_tree(a, b);
        }
        closedir(d);
        return;
    }
    assert_true(S_ISREG(sb.st_mode));
    keel_buf_t buf;
    keel_buf_init(&buf, 0);
    assert_int_equal(keel_file_read(from, 64u << 20, &buf), KEEL_OK);
    int fd = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, sb.st_mode & 0777);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf.data, buf.len), (ssize_t)buf.len);
    assert_int_equal(close(fd), 0);
    keel_buf_free(&buf);
}

static keel_status_t vault_open(const char *dir, keel_keystore_t *ks, keel_vault_t **v)
{
    char vdir[KEEL_PATH_MAX];
    if (keel_path_join(vdir, sizeof vdir, dir, "vault") != KEEL_OK)
        return KEEL_ERR_TOO_LARGE;
    return keel_vault_open(vdir, ks, v);
}

/* Parent side: both open, or the test fails with the library's reason. */
static void open_both(const char *dir, keel_keystore_t **ks, keel_vault_t **v)
{
    keel_status_t st = keystore_open_in(dir, "keystore", ks);
    if (st != KEEL_OK)
        fail_msg("keystore: %s", keel_error_message());
    st = vault_open(dir, *ks, v);
    if (st != KEEL_OK)
        fail_msg("the vault does not open after the power cut: %s: %s", keel_status_str(st),
                 keel_error_message());
}

static int64_t sql_int(sqlite3 *db, const char *q)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

static void integrity_ok(sqlite3 *db)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    const char *r = (const char *)sqlite3_column_text(s, 0);
    if (r == NULL || strcmp(r, "ok") != 0)
        fail_msg("integrity_check: %s", r != NULL ? r : "(null)");
    sqlite3_finalize(s);
}

static void report(int fd, uint32_t type, uint32_t kind, uint64_t seq)
{
    report_t r = {.type = type, .kind = kind, .seq = seq};
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(9);
}

/* Small deterministic generator for the scripts: the same script at every
 * crash point, so crash point N always lands on the same operation. */
static uint32_t script_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

/*
 * Runs one child. crash_at 0: no crash (counts the operations). fault_at:
 * the key-file operation that fails, after which the child cuts the power.
 */
static void run_child(const fx_t *fx, const scenario_t *sc, uint64_t crash_at, crashvfs_mode_t mode,
                      uint64_t seed, unsigned long fault_at, outcome_t *out)
{
    if (keel_path_exists(fx->work))
        assert_int_equal(keel_dir_remove_tree(fx->work), KEEL_OK);
    copy_tree(fx->tmpl, fx->work);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        crashvfs_arm(crash_at, mode, seed);
        keel_fault_arm(fault_at);
        sc->child(fx->work, p[1]);
        report(p[1], R_DONE, (uint32_t)keel_fault_count(), crashvfs_ops());
        _exit(0);
    }
    close(p[1]);
    out->n = 0;
    size_t got = 0;
    uint8_t *buf = fd_read_all(p[0], &got);
    close(p[0]);
    assert_true(got <= sizeof out->r);
    memcpy(out->r, buf, got);
    free(buf);
    assert_int_equal(got % sizeof(report_t), 0);
    out->n = got / sizeof(report_t);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status))
        fail_msg("%s: child died of signal %d at crash point %" PRIu64, sc->name, WTERMSIG(status), crash_at);
    out->status = WEXITSTATUS(status);
    if (out->status != 0 && out->status != CRASHVFS_EXIT_CODE)
        fail_msg("%s: child failed (exit %d) at crash point %" PRIu64 " mode %s", sc->name, out->status,
                 crash_at, crashvfs_mode_name(mode));
}

/* The run in progress, printed by teardown when a check fails in it. */
static char current[160];

static bool full_sweep(void)
{
    const char *e = getenv("KEEL_POWERCUT_FULL");
    return e != NULL && strcmp(e, "1") == 0;
}

/* Every crash point of a scenario; returns the number of crashes run. */
static unsigned sweep(const fx_t *fx, const scenario_t *sc)
{
    outcome_t *out = malloc(sizeof *out);
    assert_non_null(out);
    double t0 = keel_now();
    run_child(fx, sc, 0, CRASHVFS_LOSE_ALL, 0, 0, out);
    assert_int_equal(out->status, 0);
    assert_true(out->n > 0 && out->r[out->n - 1].type == R_DONE);
    uint64_t points = out->r[out->n - 1].seq;
    unsigned long file_ops = out->r[out->n - 1].kind;
    sc->check(fx->work, out, sc->arg);
    assert_true(points > 0);

    bool full = full_sweep();
    unsigned runs = 0, crashed = 0;
    for (uint64_t n = 1; n <= points; n++) {
        crashvfs_mode_t modes[1 + 2 * FULL_SEEDS];
        uint64_t seeds[1 + 2 * FULL_SEEDS];
        size_t nm = 0;
        modes[nm] = CRASHVFS_LOSE_ALL;
        seeds[nm++] = 0;
        for (uint64_t s = 0; s < (full ? FULL_SEEDS : 1); s++) {
            modes[nm] = CRASHVFS_RANDOM;
            seeds[nm++] = n * 1000003u + s;
            modes[nm] = CRASHVFS_GARBAGE;
            seeds[nm++] = n * 1000033u + s;
        }
        for (size_t i = 0; i < nm; i++) {
            snprintf(current, sizeof current, "%s: crash point %" PRIu64 " of %" PRIu64 ", mode %s, seed %" PRIu64,
                     sc->name, n, points, crashvfs_mode_name(modes[i]), seeds[i]);
            run_child(fx, sc, n, modes[i], seeds[i], 0, out);
            sc->check(fx->work, out, sc->arg);
            runs++;
            crashed += out->status == CRASHVFS_EXIT_CODE;
        }
    }
    /* The key files and the keystore are written outside SQLite, by the
     * file helpers that fsync every step: failing the N-th of their writes,
     * fsyncs and renames and cutting the power right after is a power cut
     * at every point of theirs. */
    unsigned file_runs = 0;
    if (sc->file_faults && file_ops > 0) {
        for (unsigned long n = 1; n <= file_ops; n++) {
            crashvfs_mode_t m = n % 2 ? CRASHVFS_LOSE_ALL : CRASHVFS_RANDOM;
            snprintf(current, sizeof current, "%s: key-file operation %lu of %lu fails, then the power goes (%s)",
                     sc->name, n, file_ops, crashvfs_mode_name(m));
            run_child(fx, sc, 0, m, n, n, out);
            sc->check(fx->work, out, sc->arg);
            file_runs++;
        }
    } else if (sc->file_faults) {
        print_message("%s: built without KEEL_FAULT_INJECTION: key-file operations not swept\n", sc->name);
    }
    current[0] = '\0';
    assert_int_equal(crashed, runs); /* every point inside the scenario really cut the power */
    print_message("%s: %" PRIu64 " crash points, %u power cuts%s, %u key-file cuts, %.1f s\n", sc->name,
                  points, runs, full ? " (full sweep)" : "", file_runs, keel_now() - t0);
    free(out);
    return runs + file_runs;
}

/* ---- the outbox ---- */

typedef struct {
    uint64_t next_seq;
    uint64_t dropped[KEEL_OUTBOX_KINDS];
} outbox_base_t;

static uint64_t total_of(const uint64_t d[KEEL_OUTBOX_KINDS])
{
    return d[0] + d[1] + d[2];
}

static void outbox_put_one(keel_outbox_t *o, uint64_t *rs, int fd, unsigned i, unsigned j)
{
    char body[512];
    uint32_t roll = script_rand(rs) % 10;
    keel_outbox_kind_t kind = roll < 6 ? KEEL_OUTBOX_TELEMETRY : roll < 9 ? KEEL_OUTBOX_EVENT : KEEL_OUTBOX_ALERT;
    int pad = (int)(script_rand(rs) % 300);
    int n = snprintf(body, sizeof body, "{\"i\":%u,\"j\":%u,\"pad\":\"%*s\"}", i, j, pad, "");
    uint64_t seq = 0;
    bool dup = false;
    keel_status_t st = keel_outbox_put(o, kind, body, (size_t)n, NULL, &seq, &dup);
    if (st == KEEL_OK && !dup)
        report(fd, R_PUT, (uint32_t)kind, seq);
    else if (st != KEEL_ERR_TOO_LARGE)
        _exit(4);
}

static void outbox_child(const char *dir, int fd)
{
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    keel_outbox_t *o = NULL;
    if (keystore_open_in(dir, "keystore", &ks) != KEEL_OK || vault_open(dir, ks, &v) != KEEL_OK ||
        keel_outbox_open(v, DEVICE, tight, &o) != KEEL_OK)
        _exit(2);
    /* Batch reports wait for the commit. */
    uint64_t rs = 42;
    keel_outbox_msg_t *m = malloc(sizeof *m);
    if (m == NULL)
        _exit(2);
    for (unsigned i = 0; i < OUTBOX_STEPS; i++) {
        uint32_t roll = script_rand(&rs) % 10;
        if (roll < 5) {
            outbox_put_one(o, &rs, fd, i, 0);
        } else if (roll < 8) {
            unsigned count = 2 + script_rand(&rs) % 4;
            int bp[2];
            /* Collect the batch's seqs in a pipe of our own: reported only after commit. */
            if (pipe(bp) != 0 || keel_outbox_begin(o) != KEEL_OK)
                _exit(3);
            for (unsigned j = 0; j < count; j++)
                outbox_put_one(o, &rs, bp[1], i, j);
            close(bp[1]);
            if (keel_outbox_commit(o) != KEEL_OK)
                _exit(5);
            report_t r;
            while (read(bp[0], &r, sizeof r) == (ssize_t)sizeof r)
                report(fd, r.type, r.kind, r.seq);
            close(bp[0]);
        } else {
            for (unsigned k = 1 + script_rand(&rs) % 2; k > 0; k--) {
                keel_status_t st = keel_outbox_next(o, 0, m);
                if (st == KEEL_ERR_NOT_FOUND)
                    break;
                if (st != KEEL_OK)
                    _exit(6);
                report(fd, R_ACK_TRY, 0, m->seq);
                if (keel_outbox_ack(o, m->seq) != KEEL_OK)
                    _exit(7);
                report(fd, R_ACK, 0, m->seq);
            }
        }
    }
    free(m);
    keel_outbox_close(o);
    keel_vault_close(v);
    keel_keystore_close(ks);
}

static bool seq_present(sqlite3 *db, uint64_t seq)
{
    char q[96];
    assert_int_equal(keel_snprintf(q, sizeof q, "SELECT count(*) FROM outbox WHERE seq = %" PRIu64, seq), KEEL_OK);
    return sql_int(db, q) == 1;
}

static void outbox_check(const char *dir, const outcome_t *out, void *arg)
{
    const outbox_base_t *base = arg;
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    keel_outbox_t *o = NULL;
    open_both(dir, &ks, &v);
    sqlite3 *db = keel_vault_db(v);
    integrity_ok(db);
    assert_int_equal(keel_outbox_open(v, DEVICE, tight, &o), KEEL_OK);
    keel_outbox_stats_t st;
    assert_int_equal(keel_outbox_stats(o, &st), KEEL_OK);

    uint64_t last = base->next_seq - 1, dropped = 0;
    for (int k = 0; k < KEEL_OUTBOX_KINDS; k++) {
        assert_true(st.dropped[k] >= base->dropped[k]); /* the counters are persistent */
        dropped += st.dropped[k];
    }
    uint64_t missing_reported = 0;
    for (size_t i = 0; i < out->n; i++) {
        const report_t *r = &out->r[i];
        if (r->type == R_PUT) {
            assert_true(r->seq > last); /* handed out in order, never twice */
            last = r->seq;
            bool tried = false;
            for (size_t j = i + 1; j < out->n; j++)
                tried |= out->r[j].type == R_ACK_TRY && out->r[j].seq == r->seq;
            if (!tried && !seq_present(db, r->seq))
                missing_reported++;
        } else if (r->type == R_ACK) {
            if (seq_present(db, r->seq))
                fail_msg("acked message %" PRIu64 " came back after the power cut", r->seq);
        }
    }
    /* next_seq never goes back behind a seq the device was told of. */
    assert_true(st.next_seq > last);
    assert_true(st.next_seq >= base->next_seq);
    assert_int_equal((uint64_t)sql_int(db, "SELECT coalesce(max(seq), 0) FROM outbox") < st.next_seq, 1);
    /* Every seq ever handed out is pending, dropped or acked: a reported put
     * that is gone was dropped for space, and the counters say so. */
    uint64_t acked_gone = 0;
    for (size_t i = 0; i < out->n; i++)
        if (out->r[i].type == R_ACK_TRY && !seq_present(db, out->r[i].seq))
            acked_gone++;
    assert_true(missing_reported <= dropped);
    if (st.next_seq - 1 != st.pending + dropped + acked_gone)
        fail_msg("outbox counters: next_seq %" PRIu64 " - 1 != pending %" PRIu64 " + dropped %" PRIu64
                 " + acked %" PRIu64,
                 st.next_seq, st.pending, dropped, acked_gone);
    assert_int_equal((uint64_t)sql_int(db, "SELECT count(*) FROM outbox"), st.pending);
    /* The script that ran to its end dropped and acked: those paths were under the knife. */
    if (out->status == 0)
        assert_true(dropped > total_of(base->dropped) && acked_gone > 0);
    /* Every pending body opens. */
    keel_outbox_msg_t *m = malloc(sizeof *m);
    assert_non_null(m);
    uint64_t at = 0, seen = 0;
    keel_status_t s;
    while ((s = keel_outbox_next(o, at, m)) == KEEL_OK) {
        at = m->seq;
        seen++;
    }
    assert_int_equal(s, KEEL_ERR_NOT_FOUND);
    assert_int_equal(seen, st.pending);
    keel_outbox_stats_t st2;
    assert_int_equal(keel_outbox_stats(o, &st2), KEEL_OK);
    assert_int_equal(st2.corrupt, 0);
    free(m);
    /* More puts: the seqs go on, none is handed out again. */
    for (uint64_t i = 0; i < 2; i++) {
        uint64_t seq = 0;
        bool dup = false;
        assert_int_equal(keel_outbox_put(o, KEEL_OUTBOX_ALERT, "{\"after\":1}", 11, NULL, &seq, &dup), KEEL_OK);
        assert_int_equal(seq, st.next_seq + i);
        assert_true(seq > last);
    }
    keel_outbox_close(o);
    keel_vault_close(v);
    keel_keystore_close(ks);
}

static void test_outbox(void **state)
{
    fx_t *fx = *state;
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    keel_outbox_t *o = NULL;
    outbox_base_t base;
    open_both(fx->tmpl, &ks, &v);
    assert_int_equal(keel_outbox_open(v, DEVICE, tight, &o), KEEL_OK);
    for (int i = 0; i < SEED_MESSAGES; i++) {
        uint64_t seq = 0;
        bool dup = false;
        assert_int_equal(keel_outbox_put(o, KEEL_OUTBOX_EVENT, "{\"seed\":true}", 13, NULL, &seq, &dup), KEEL_OK);
    }
    keel_outbox_stats_t st;
    assert_int_equal(keel_outbox_stats(o, &st), KEEL_OK);
    base.next_seq = st.next_seq;
    memcpy(base.dropped, st.dropped, sizeof base.dropped);
    keel_outbox_close(o);
    keel_vault_close(v);
    keel_keystore_close(ks);
    scenario_t sc = {.name = "outbox", .child = outbox_child, .check = outbox_check, .arg = &base};
    assert_true(sweep(fx, &sc) > 0);
}

/* ---- crypto-erase ---- */

#define OLD_BLOBS_MAX 16

typedef struct {
    char table[16];
    char column[16];
    char row[32];
    uint8_t blob[256];
    size_t len;
} sealed_t;

typedef struct {
    sealed_t old[OLD_BLOBS_MAX];
    size_t n_old;
    keel_buf_t old_key_file;
    unsigned kept;   /* crashes after which the erase had not happened */
    unsigned erased; /* ... and had (completed by the reopen when needed) */
} erase_base_t;

static void erase_child(const char *dir, int fd)
{
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    if (keystore_open_in(dir, "keystore", &ks) != KEEL_OK || vault_open(dir, ks, &v) != KEEL_OK)
        crashvfs_crash(); /* only a failed key-file operation makes this fail */
    if (keel_vault_erase(v) != KEEL_OK)
        crashvfs_crash();
    report(fd, R_ERASED, 0, 0);
    if (keel_vault_secret_put(v, "after", "new", 3) != KEEL_OK)
        crashvfs_crash();
    report(fd, R_SECRET, 0, 0);
    keel_vault_close(v);
    keel_keystore_close(ks);
}

static bool secret_is(keel_vault_t *v, const char *name, const char *want)
{
    uint8_t buf[64];
    size_t n = 0;
    keel_status_t st = keel_vault_secret_get(v, name, buf, sizeof buf, &n);
    if (st == KEEL_ERR_NOT_FOUND)
        return false;
    if (st != KEEL_OK)
        fail_msg("secret %s: %s", name, keel_error_message());
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);
    return true;
}

static void erase_check(const char *dir, const outcome_t *out, void *arg)
{
    erase_base_t *base = arg;
    bool erased_reported = false, secret_reported = false;
    for (size_t i = 0; i < out->n; i++) {
        erased_reported |= out->r[i].type == R_ERASED;
        secret_reported |= out->r[i].type == R_SECRET;
    }
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    open_both(dir, &ks, &v); /* finishes an interrupted erase */
    sqlite3 *db = keel_vault_db(v);
    integrity_ok(db);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM meta WHERE key = 'erase_pending'"), 0);
    bool old_a = secret_is(v, "a", "alpha"), old_b = secret_is(v, "b", "bravo");
    int64_t outbox_rows = sql_int(db, "SELECT count(*) FROM outbox");
    /* All or nothing: the erase happened or it did not. */
    assert_int_equal(old_a, old_b);
    base->kept += old_a;
    base->erased += !old_a;
    if (old_a) {
        assert_false(erased_reported);
        assert_int_equal(outbox_rows, 3);
        for (size_t i = 0; i < base->n_old; i++) {
            const sealed_t *s = &base->old[i];
            uint8_t pt[256];
            size_t n = 0;
            assert_int_equal(keel_vault_open_field(v, s->table, s->column, s->row, s->blob, s->len, pt,
                                                   sizeof pt, &n), KEEL_OK);
        }
    } else {
        assert_int_equal(outbox_rows, 0);
        /* Nothing sealed before the erase opens again: not under the new
         * data key, and the old wrapped key no longer unwraps. */
        for (size_t i = 0; i < base->n_old; i++) {
            const sealed_t *s = &base->old[i];
            uint8_t pt[256];
            size_t n = 0;
            assert_int_equal(keel_vault_open_field(v, s->table, s->column, s->row, s->blob, s->len, pt,
                                                   sizeof pt, &n), KEEL_ERR_VERIFY);
        }
        uint8_t key[64];
        size_t n = 0;
        assert_int_not_equal(keel_keystore_unseal(ks, KEEL_VAULT_WRAP_LABEL, WRAP_AD, base->old_key_file.data + 8,
                                                  base->old_key_file.len - 8, key, sizeof key, &n), KEEL_OK);
    }
    if (secret_reported)
        assert_true(secret_is(v, "after", "new"));
    /* Usable: a new secret seals and opens. */
    assert_int_equal(keel_vault_secret_put(v, "check", "ok", 2), KEEL_OK);
    assert_true(secret_is(v, "check", "ok"));
    keel_vault_close(v);
    keel_keystore_close(ks);
}

static void test_erase(void **state)
{
    fx_t *fx = *state;
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    keel_outbox_t *o = NULL;
    erase_base_t *base = calloc(1, sizeof *base);
    assert_non_null(base);
    open_both(fx->tmpl, &ks, &v);
    assert_int_equal(keel_vault_secret_put(v, "a", "alpha", 5), KEEL_OK);
    assert_int_equal(keel_vault_secret_put(v, "b", "bravo", 5), KEEL_OK);
    assert_int_equal(keel_outbox_open(v, DEVICE, tight, &o), KEEL_OK);
    for (int i = 0; i < 3; i++) {
        uint64_t seq = 0;
        bool dup = false;
        assert_int_equal(keel_outbox_put(o, KEEL_OUTBOX_EVENT, "{\"old\":true}", 12, NULL, &seq, &dup), KEEL_OK);
    }
    keel_outbox_close(o);
    /* Keep every sealed blob and the wrapped key as an attacker who copied
     * the flash before the reset would. */
    static const char *const q[] = {"SELECT 'secrets', 'value', name, value FROM secrets",
                                    "SELECT 'outbox', 'body', CAST(seq AS TEXT), body FROM outbox"};
    for (size_t i = 0; i < 2; i++) {
        sqlite3_stmt *s = NULL;
        assert_int_equal(sqlite3_prepare_v2(keel_vault_db(v), q[i], -1, &s, NULL), SQLITE_OK);
        while (sqlite3_step(s) == SQLITE_ROW) {
            assert_true(base->n_old < OLD_BLOBS_MAX);
            sealed_t *e = &base->old[base->n_old++];
            assert_int_equal(keel_strlcpy(e->table, (const char *)sqlite3_column_text(s, 0), sizeof e->table), KEEL_OK);
            assert_int_equal(keel_strlcpy(e->column, (const char *)sqlite3_column_text(s, 1), sizeof e->column), KEEL_OK);
            assert_int_equal(keel_strlcpy(e->row, (const char *)sqlite3_column_text(s, 2), sizeof e->row), KEEL_OK);
            e->len = (size_t)sqlite3_column_bytes(s, 3);
            assert_true(e->len <= sizeof e->blob);
            memcpy(e->blob, sqlite3_column_blob(s, 3), e->len);
        }
        sqlite3_finalize(s);
    }
    assert_int_equal(base->n_old, 5);
    keel_vault_close(v);
    keel_keystore_close(ks);
    char keyfile[KEEL_PATH_MAX], vdir[KEEL_PATH_MAX];
    path_in(vdir, fx->tmpl, "vault");
    path_in(keyfile, vdir, "vault.key");
    keel_buf_init(&base->old_key_file, 0);
    assert_int_equal(keel_file_read(keyfile, 4096, &base->old_key_file), KEEL_OK);
    assert_true(base->old_key_file.len > 8);
    scenario_t sc = {.name = "erase", .child = erase_child, .check = erase_check, .arg = base, .file_faults = true};
    assert_true(sweep(fx, &sc) > 0);
    print_message("erase: after the power cut the old data was intact %u times, erased %u times\n", base->kept,
                  base->erased);
    assert_true(base->kept > 0 && base->erased > 0);
    keel_buf_free(&base->old_key_file);
    free(base);
}

/* ---- privacy: consent and its log, records ---- */

static void decl_path(const char *dir, char *out)
{
    path_in(out, dir, "declaration.json");
}

static void privacy_child(const char *dir, int fd)
{
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    keel_privacy_t *p = NULL;
    char decl[KEEL_PATH_MAX];
    if (keel_path_join(decl, sizeof decl, dir, "declaration.json") != KEEL_OK ||
        keystore_open_in(dir, "keystore", &ks) != KEEL_OK || vault_open(dir, ks, &v) != KEEL_OK ||
        keel_privacy_open(v, decl, &p) != KEEL_OK)
        _exit(2);
    for (unsigned i = 0; i < PRIVACY_STEPS; i++) {
        if (i % 2 == 0) {
            bool given = (i / 2) % 2 == 0;
            if (keel_privacy_consent_set(p, "climate", given, "2", "ui") != KEEL_OK)
                _exit(3);
            report(fd, R_CONSENT, given, i);
        } else {
            json_t *d = json_pack("{s:I}", "step", (json_int_t)i);
            if (d == NULL || keel_privacy_record(p, i % 4 == 1 ? "climate" : "device-health", d) != KEEL_OK)
                _exit(4);
            json_decref(d);
            report(fd, R_RECORD, 0, i);
        }
    }
    keel_privacy_close(p);
    keel_vault_close(v);
    keel_keystore_close(ks);
}

static void privacy_check(const char *dir, const outcome_t *out, void *arg)
{
    (void)arg;
    uint64_t consents = 0, records = 0;
    for (size_t i = 0; i < out->n; i++) {
        consents += out->r[i].type == R_CONSENT;
        records += out->r[i].type == R_RECORD;
    }
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    keel_privacy_t *p = NULL;
    char decl[KEEL_PATH_MAX];
    decl_path(dir, decl);
    open_both(dir, &ks, &v);
    sqlite3 *db = keel_vault_db(v);
    integrity_ok(db);
    assert_int_equal(keel_privacy_open(v, decl, &p), KEEL_OK);
    /* Each change is durable once reported; one more may have landed. */
    uint64_t log_rows = (uint64_t)sql_int(db, "SELECT count(*) FROM consent_log");
    uint64_t rec_rows = (uint64_t)sql_int(db, "SELECT count(*) FROM privacy_records");
    assert_true(log_rows >= consents && log_rows <= consents + 1);
    assert_true(rec_rows >= records && rec_rows <= records + 1);
    /* The consent state and its log agree: the newest entry is the state. */
    json_t *c = NULL;
    assert_int_equal(keel_privacy_consent_json(p, &c), KEEL_OK);
    json_t *log = json_object_get(c, "log"), *purposes = json_object_get(c, "purposes");
    assert_int_equal(json_array_size(log), log_rows); /* every entry opens */
    json_t *climate = NULL, *e;
    size_t i;
    json_array_foreach(purposes, i, e) {
        if (strcmp(json_string_value(json_object_get(e, "purpose")), "climate") == 0)
            climate = e;
    }
    assert_non_null(climate);
    int64_t rows = sql_int(db, "SELECT count(*) FROM consent WHERE purpose = 'climate'");
    assert_int_equal(rows, log_rows > 0 ? 1 : 0);
    if (log_rows > 0) {
        json_t *newest = json_array_get(log, 0);
        assert_int_equal(json_is_true(json_object_get(newest, "given")), json_is_true(json_object_get(climate, "given")));
        assert_int_equal(sql_int(db, "SELECT given FROM consent WHERE purpose = 'climate'"),
                         json_is_true(json_object_get(newest, "given")) ? 1 : 0);
        /* The script alternates given, withdrawn, given...: the log is its prefix. */
        json_array_foreach(log, i, e) {
            bool want = (log_rows - 1 - i) % 2 == 0;
            assert_int_equal(json_is_true(json_object_get(e, "given")), want);
        }
    }
    json_decref(c);
    /* Every record opens. */
    json_t *x = NULL;
    assert_int_equal(keel_privacy_export(p, &x), KEEL_OK);
    assert_int_equal(json_integer_value(json_object_get(x, "unreadable_records")), 0);
    assert_int_equal(json_array_size(json_object_get(x, "records")), rec_rows);
    json_decref(x);
    keel_privacy_close(p);
    keel_vault_close(v);
    keel_keystore_close(ks);
}

static void test_privacy(void **state)
{
    fx_t *fx = *state;
    keel_keystore_t *ks = NULL;
    keel_vault_t *v = NULL;
    char decl[KEEL_PATH_MAX];
    decl_path(fx->tmpl, decl);
    text_file_write(decl, decl_text);
    open_both(fx->tmpl, &ks, &v);
    keel_vault_close(v);
    keel_keystore_close(ks);
    scenario_t sc = {.name = "privacy", .child = privacy_child, .check = privacy_check};
    assert_true(sweep(fx, &sc) > 0);
}

/* ---- the shim itself: it must lose what was not synced ---- */

static void shim_child(const char *dir, int fd)
{
    (void)fd;
    char path[KEEL_PATH_MAX];
    if (keel_path_join(path, sizeof path, dir, "plain.db") != KEEL_OK)
        _exit(2);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;"
                         "CREATE TABLE t(x); INSERT INTO t VALUES (1);", NULL, NULL, NULL) != SQLITE_OK)
        _exit(3);
    report(fd, R_PUT, 0, 1);
    sqlite3_close(db);
}

static void shim_check(const char *dir, const outcome_t *out, void *arg)
{
    (void)arg;
    (void)out;
    char path[KEEL_PATH_MAX];
    path_in(path, dir, "plain.db");
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    integrity_ok(db);
    sqlite3_close(db);
}

/* With synchronous=OFF nothing is ever synced: a crash after the last write
 * in lose-all mode must leave no table behind, or the shim loses nothing. */
static void test_shim_loses_unsynced(void **state)
{
    fx_t *fx = *state;
    scenario_t sc = {.name = "shim", .child = shim_child, .check = shim_check};
    outcome_t *out = malloc(sizeof *out);
    assert_non_null(out);
    run_child(fx, &sc, 0, CRASHVFS_LOSE_ALL, 0, 0, out);
    uint64_t points = out->r[out->n - 1].seq;
    assert_true(points > 0);
    run_child(fx, &sc, points, CRASHVFS_LOSE_ALL, 0, 0, out);
    assert_int_equal(out->status, CRASHVFS_EXIT_CODE);
    char path[KEEL_PATH_MAX], wal[KEEL_PATH_MAX];
    path_in(path, fx->work, "plain.db");
    path_in(wal, fx->work, "plain.db-wal");
    /* Created and never synced (nor its directory): gone with the power. */
    assert_false(keel_path_exists(wal));
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    integrity_ok(db);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 't'"), 0);
    sqlite3_close(db);
    free(out);
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    fx->root = tmpdir_new();
    path_in(fx->tmpl, fx->root, "template");
    path_in(fx->work, fx->root, "work");
    if (mkdir(fx->tmpl, 0700) != 0)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (current[0] != '\0')
        print_error("the failing run: %s\n", current);
    current[0] = '\0';
    tmpdir_free(fx->root);
    free(fx);
    return 0;
}

int main(void)
{
    if (crashvfs_install() != SQLITE_OK) {
        fprintf(stderr, "crashvfs: cannot register the VFS\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shim_loses_unsynced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outbox, setup, teardown),
        cmocka_unit_test_setup_teardown(test_erase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_privacy, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

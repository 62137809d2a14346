/*
 * Unit tests for the auth module: the password policy and its compiled-in
 * list, the label password's one-way trip to a set password, sessions and
 * their expiry, and the throttle (backoff, global budget, no lock-out of a
 * clean source, persistence across restarts of auth and of the vault). The
 * clock is the test's; Argon2id runs with tiny costs.
 */
#include "testutil.h"

#include "auth/auth_internal.h"
#include "keel/auth.h"
#include "keel/crypto.h"
#include "keel/identity.h"
#include "keel/keystore.h"
#include "keel/vault.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <sys/socket.h>

#define T0 1700000000
#define SERIAL "7QK2M9XW4R1T"
#define DEVICE_ID "abcdefghijklmnopqrstuvwxyz"
#define MODEL "ThermoStat-9"
#define NEW_PW "violet-Harbour-71-kite"
#define OWNER "192.168.1.50"
#define WRONG_PW "wrong-password"
#define NUL_PW "with\0nul"

typedef struct {
    char *root;
    char vault_dir[KEEL_PATH_MAX];
    char label_path[KEEL_PATH_MAX];
    char label[KEEL_LABEL_PW_LEN + 1]; /* as printed: groups with dashes */
    keel_keystore_t *ks;
    keel_vault_t *v;
    keel_auth_config_t cfg;
    keel_auth_t *a;
} fx_t;

static const keel_argon2_params_t tiny = {1, 64};

static keel_auth_t *auth_open_ok(fx_t *fx)
{
    keel_auth_t *a = NULL;
    keel_status_t st = keel_auth_open(fx->v, &fx->cfg, &a);
    if (st != KEEL_OK)
        fail_msg("keel_auth_open: %s: %s", keel_status_str(st), keel_error_message());
    assert_non_null(a);
    return a;
}

static keel_vault_t *vault_open_ok(fx_t *fx)
{
    keel_vault_t *v = NULL;
    keel_status_t st = keel_vault_open(fx->vault_dir, fx->ks, &v);
    if (st != KEEL_OK)
        fail_msg("keel_vault_open: %s: %s", keel_status_str(st), keel_error_message());
    return v;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(keel_crypto_init(), KEEL_OK);
    fx->root = tmpdir_new();
    path_in(fx->vault_dir, fx->root, "vault");
    path_in(fx->label_path, fx->root, "label.hash");
    char ksdir[KEEL_PATH_MAX], kek[KEEL_PATH_MAX];
    path_in(ksdir, fx->root, "keystore");
    path_in(kek, ksdir, "kek");
    keel_keystore_config_t kc = {.driver = "file", .dir = ksdir, .kek_file = kek, .create = 1};
    assert_int_equal(keel_keystore_open(&kc, &fx->ks), KEEL_OK);
    fx->v = vault_open_ok(fx);

    /* What the factory writes: the hash of the normalised label password. */
    keel_identity_label_password(fx->label);
    char norm[KEEL_LABEL_PW_LEN + 1], hash[KEEL_PASSWORD_HASH_MAX], line[KEEL_PASSWORD_HASH_MAX + 2];
    assert_int_equal(keel_identity_password_normalize(fx->label, norm, sizeof norm), KEEL_OK);
    assert_int_equal(keel_password_hash(norm, strlen(norm), &tiny, hash), KEEL_OK);
    assert_int_equal(keel_snprintf(line, sizeof line, "%s\n", hash), KEEL_OK);
    assert_int_equal(keel_file_write_atomic(fx->label_path, line, strlen(line), 0600), KEEL_OK);

    fx->cfg = keel_auth_config_defaults();
    fx->cfg.argon2 = tiny;
    fx->cfg.label_hash_path = fx->label_path;
    fx->cfg.serial = SERIAL;
    fx->cfg.device_id = DEVICE_ID;
    fx->cfg.model = MODEL;
    fx->a = auth_open_ok(fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    keel_auth_close(fx->a);
    keel_vault_close(fx->v);
    keel_keystore_close(fx->ks);
    tmpdir_free(fx->root);
    free(fx);
    return 0;
}

/* Runs all three steps; returns the outcome (begin's when it refused). */
static keel_auth_outcome_t attempt(fx_t *fx, keel_auth_kind_t kind, const keel_auth_request_t *req,
                                   const char *source, int64_t now, keel_auth_result_t *res)
{
    keel_auth_attempt_t *at = NULL;
    keel_status_t st = keel_auth_attempt_begin(fx->a, kind, req, source, now, &at, res);
    if (st != KEEL_OK)
        fail_msg("begin: %s: %s", keel_status_str(st), keel_error_message());
    if (res->outcome != KEEL_AUTH_OK) {
        assert_null(at);
        return res->outcome;
    }
    assert_non_null(at);
    keel_auth_attempt_run(at);
    st = keel_auth_attempt_finish(fx->a, at, now, res);
    if (st != KEEL_OK)
        fail_msg("finish: %s: %s", keel_status_str(st), keel_error_message());
    return res->outcome;
}

static keel_auth_outcome_t login(fx_t *fx, const char *user, const char *pw, const char *source, int64_t now,
                                 keel_auth_result_t *res)
{
    keel_auth_request_t req = {.user = user, .password = pw, .password_len = strlen(pw)};
    return attempt(fx, KEEL_AUTH_LOGIN, &req, source, now, res);
}

static keel_auth_outcome_t change(fx_t *fx, const char *token, const char *cur, const char *next,
                                  const char *source, int64_t now, keel_auth_result_t *res)
{
    keel_auth_request_t req = {.password = cur, .password_len = strlen(cur), .new_password = next,
                               .new_password_len = strlen(next), .token = token};
    return attempt(fx, KEEL_AUTH_CHANGE, &req, source, now, res);
}

/* Logs in with the label password and sets NEW_PW. */
static void set_new_password(fx_t *fx, int64_t now)
{
    keel_auth_result_t res;
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, OWNER, now, &res), KEEL_AUTH_OK);
    char token[KEEL_AUTH_TOKEN_LEN + 1];
    memcpy(token, res.token, sizeof token);
    assert_int_equal(change(fx, token, fx->label, NEW_PW, OWNER, now, &res), KEEL_AUTH_OK);
}

static void policy_refuses(fx_t *fx, const char *pw, const char *want)
{
    char why[KEEL_AUTH_WHY_MAX];
    const char *code = NULL;
    assert_int_equal(keel_auth_policy_check(fx->a, pw, strlen(pw), why, &code), KEEL_ERR_ARG);
    assert_non_null(code);
    if (strcmp(code, want) != 0)
        fail_msg("'%s': refused as %s, expected %s", pw, code, want);
    assert_true(strlen(why) > 10);
}

static void policy_accepts(fx_t *fx, const char *pw)
{
    char why[KEEL_AUTH_WHY_MAX];
    const char *code = "unset";
    if (keel_auth_policy_check(fx->a, pw, strlen(pw), why, &code) != KEEL_OK)
        fail_msg("'%s' refused: %s", pw, code ? code : "?");
    assert_null(code);
}

static void test_policy(void **state)
{
    fx_t *fx = *state;
    policy_refuses(fx, "short", "too_short");
    policy_refuses(fx, "123456789", "too_short");
    char big[KEEL_AUTH_PASSWORD_MAX + 2];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    policy_refuses(fx, big, "too_long");
    big[KEEL_AUTH_PASSWORD_MAX] = '\0';
    policy_accepts(fx, big);
    policy_refuses(fx, "basketball", "common");
    policy_refuses(fx, "BasketBall", "common");
    policy_refuses(fx, "Password1234!", "common");
    policy_refuses(fx, "!!2024Monkey", "common");
    policy_refuses(fx, "qwertyuiop99", "common");
    policy_refuses(fx, "my-" SERIAL "-pw", "contains_serial");
    policy_refuses(fx, "x7qk2m9xw4r1t", "contains_serial");
    policy_refuses(fx, "ABCDEFGHIJKLMNOPQRSTUVWXYZ!", "contains_id");
    policy_refuses(fx, "thermostat-9-home", "contains_model");
    /* A listed word inside letters, or a short base, is not "common". */
    policy_accepts(fx, "passwordless-kite");
    policy_accepts(fx, "!!!love!!!2024");
    policy_accepts(fx, NEW_PW);
}

static void test_common_list_sorted(void **state)
{
    (void)state;
    assert_true(keel_auth_common_count > 1000);
    for (size_t i = 0; i < keel_auth_common_count; i++) {
        const char *e = keel_auth_common[i];
        assert_true(strlen(e) >= 6);
        assert_true(e[0] != '#');
        for (const char *p = e; *p; p++)
            assert_false(*p >= 'A' && *p <= 'Z');
        if (i > 0 && strcmp(keel_auth_common[i - 1], e) >= 0)
            fail_msg("list not strictly sorted at %zu", i);
        assert_true(auth_common_contains(e, strlen(e)));
    }
    assert_true(auth_common_contains("asdfjkl;", 8));
    assert_false(auth_common_contains("comment:", 8));
    assert_false(auth_common_contains("violet-harbour", 14));
}

static void test_label_login_must_change(void **state)
{
    fx_t *fx = *state;
    assert_true(keel_auth_must_change(fx->a));
    /* Typed in upper case and without dashes: still the label password. */
    char typed[KEEL_LABEL_PW_LEN + 1];
    size_t o = 0;
    for (const char *p = fx->label; *p; p++)
        if (*p != '-')
            typed[o++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    typed[o] = '\0';
    keel_auth_result_t res;
    assert_int_equal(login(fx, KEEL_AUTH_USER, typed, OWNER, T0, &res), KEEL_AUTH_OK);
    assert_true(res.must_change);
    assert_int_equal(strlen(res.token), KEEL_AUTH_TOKEN_LEN);
    assert_int_equal(strlen(res.csrf), KEEL_AUTH_TOKEN_LEN);
    assert_int_equal(strspn(res.token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     KEEL_AUTH_TOKEN_LEN);
    assert_string_not_equal(res.token, res.csrf);
    assert_int_equal(res.expires, T0 + 28800);
    bool mc = false;
    char csrf[KEEL_AUTH_TOKEN_LEN + 1];
    assert_int_equal(keel_auth_session_check(fx->a, res.token, T0 + 1, &mc, csrf), KEEL_OK);
    assert_true(mc);
    assert_string_equal(csrf, res.csrf);
    assert_int_equal(keel_auth_session_check(fx->a, res.csrf, T0 + 1, &mc, NULL), KEEL_ERR_VERIFY);
}

static void test_change_password(void **state)
{
    fx_t *fx = *state;
    keel_auth_result_t res, other;
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, OWNER, T0, &res), KEEL_AUTH_OK);
    char token[KEEL_AUTH_TOKEN_LEN + 1];
    memcpy(token, res.token, sizeof token);
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, "10.9.9.9", T0, &other), KEEL_AUTH_OK);
    assert_int_equal(keel_auth_session_count(fx->a, T0), 2);

    /* Policy refusals are decided before hashing and cost nothing. */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(change(fx, token, fx->label, "password123", OWNER, T0, &res), KEEL_AUTH_POLICY);
        assert_string_equal(res.code, "common");
        assert_true(strlen(res.why) > 0);
    }
    /* A wrong current password is refused and the password stays. */
    assert_int_equal(change(fx, token, "not-the-label-pw", NEW_PW, OWNER, T0, &res), KEEL_AUTH_DENIED);
    assert_true(keel_auth_must_change(fx->a));
    assert_int_equal(change(fx, "no-such-token", fx->label, NEW_PW, OWNER, T0, &res), KEEL_AUTH_NO_SESSION);

    assert_int_equal(change(fx, token, fx->label, NEW_PW, OWNER, T0 + 1, &res), KEEL_AUTH_OK);
    assert_false(keel_auth_must_change(fx->a));
    bool mc;
    assert_int_equal(keel_auth_session_check(fx->a, token, T0 + 2, &mc, NULL), KEEL_ERR_VERIFY);
    assert_int_equal(keel_auth_session_check(fx->a, other.token, T0 + 2, &mc, NULL), KEEL_ERR_VERIFY);
    assert_int_equal(keel_auth_session_count(fx->a, T0 + 2), 0);

    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, OWNER, T0 + 3, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, "VIOLET-HARBOUR-71-KITE", OWNER, T0 + 3, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, NEW_PW, OWNER, T0 + 3, &res), KEEL_AUTH_OK);
    assert_false(res.must_change);
    assert_int_equal(keel_auth_session_check(fx->a, res.token, T0 + 4, &mc, NULL), KEEL_OK);
    assert_false(mc);

    /* The set password is in the vault: it survives a restart. */
    keel_auth_close(fx->a);
    keel_vault_close(fx->v);
    fx->v = vault_open_ok(fx);
    fx->a = auth_open_ok(fx);
    assert_false(keel_auth_must_change(fx->a));
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, "10.1.1.1", T0 + 5, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, NEW_PW, "10.1.1.2", T0 + 5, &res), KEEL_AUTH_OK);
}

/* A login begun with the label password cannot finish after a change. */
static void test_stale_attempt_after_change(void **state)
{
    fx_t *fx = *state;
    keel_auth_request_t req = {.user = KEEL_AUTH_USER, .password = fx->label, .password_len = strlen(fx->label)};
    keel_auth_result_t res;
    keel_auth_attempt_t *at = NULL;
    assert_int_equal(keel_auth_attempt_begin(fx->a, KEEL_AUTH_LOGIN, &req, "10.2.2.2", T0, &at, &res), KEEL_OK);
    assert_int_equal(res.outcome, KEEL_AUTH_OK);
    set_new_password(fx, T0);
    keel_auth_attempt_run(at);
    assert_int_equal(keel_auth_attempt_finish(fx->a, at, T0, &res), KEEL_OK);
    assert_int_equal(res.outcome, KEEL_AUTH_DENIED);
    assert_int_equal(res.token[0], '\0');
    assert_int_equal(keel_auth_session_count(fx->a, T0), 0);
}

static void test_wrong_user_like_wrong_password(void **state)
{
    fx_t *fx = *state;
    keel_auth_result_t r1, r2;
    assert_int_equal(login(fx, "root", fx->label, "10.0.0.7", T0, &r1), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", "10.0.0.7", T0, &r2), KEEL_AUTH_DENIED);
    assert_int_equal(r1.outcome, r2.outcome);
    assert_int_equal(r1.retry_after, r2.retry_after);
    assert_int_equal(r1.token[0], '\0');
    /* Both count: the third free failure, then the backoff. */
    assert_int_equal(login(fx, "Admin", fx->label, "10.0.0.7", T0, &r1), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, "10.0.0.7", T0, &r1), KEEL_AUTH_THROTTLED);
    assert_int_equal(r1.retry_after, 1);
    assert_int_equal(keel_auth_session_count(fx->a, T0), 0);
}

static void test_backoff_progression(void **state)
{
    fx_t *fx = *state;
    const char *src = "203.0.113.9";
    keel_auth_result_t res;
    int64_t now = T0;
    for (int i = 0; i < 3; i++)
        assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", src, now, &res), KEEL_AUTH_DENIED);
    /* After f failures (f >= 3) the wait is min(2^(f-3), 300) seconds. */
    static const uint32_t want[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", src, now, &res), KEEL_AUTH_THROTTLED);
        assert_int_equal(res.retry_after, want[i]);
        /* Half way, the wait has shrunk accordingly. */
        if (want[i] > 1) {
            assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", src, now + want[i] / 2, &res),
                             KEEL_AUTH_THROTTLED);
            assert_int_equal(res.retry_after, want[i] - want[i] / 2);
        }
        now += want[i];
        assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", src, now, &res), KEEL_AUTH_DENIED);
    }
    /* The right password at the right time clears the source. */
    now += 300;
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, src, now, &res), KEEL_AUTH_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", src, now, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", src, now, &res), KEEL_AUTH_THROTTLED);
    assert_int_equal(res.retry_after, 1);
}

static void test_owner_not_locked_out(void **state)
{
    fx_t *fx = *state;
    keel_auth_close(fx->a);
    fx->cfg.global_per_minute = 4;
    fx->a = auth_open_ok(fx);
    keel_auth_result_t res;
    /* Two attackers: each first failure is free of the budget, the next
     * two take a slot each: 4 slots, the budget is spent. */
    const char *attackers[] = {"198.51.100.1", "198.51.100.2"};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 3; i++)
            assert_int_equal(login(fx, KEEL_AUTH_USER, "guess-guess", attackers[k], T0, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, "guess-guess", attackers[0], T0, &res), KEEL_AUTH_THROTTLED);
    /* A third attacker gets its first failure, then waits for the window. */
    assert_int_equal(login(fx, KEEL_AUTH_USER, "guess-guess", "198.51.100.3", T0, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, "guess-guess", "198.51.100.3", T0 + 10, &res),
                     KEEL_AUTH_THROTTLED);
    assert_int_equal(res.retry_after, 50);

    /* The owner, from a clean source, is not delayed: a typo, then in. */
    assert_int_equal(login(fx, KEEL_AUTH_USER, "typo-typo-typo", OWNER, T0 + 10, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, "192.168.1.51", T0 + 10, &res), KEEL_AUTH_OK);
    assert_true(res.must_change);

    /* The window frees its slots after a minute. */
    assert_int_equal(login(fx, KEEL_AUTH_USER, "guess-guess", "198.51.100.3", T0 + 60, &res), KEEL_AUTH_DENIED);
}

static void test_throttle_survives_restart(void **state)
{
    fx_t *fx = *state;
    const char *src = "203.0.113.77";
    keel_auth_result_t res;
    /* Four failures (the last one after the first 1 s wait): 2 s to wait. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", src, T0 + (i == 3), &res),
                         KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", src, T0 + 1, &res), KEEL_AUTH_THROTTLED);
    assert_int_equal(res.retry_after, 2);

    /* Restart of the account only. */
    keel_auth_close(fx->a);
    fx->a = auth_open_ok(fx);
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, src, T0 + 1, &res), KEEL_AUTH_THROTTLED);
    assert_int_equal(res.retry_after, 2);

    /* Restart of the vault too (a reboot). */
    keel_auth_close(fx->a);
    keel_vault_close(fx->v);
    fx->v = vault_open_ok(fx);
    fx->a = auth_open_ok(fx);
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, src, T0 + 2, &res), KEEL_AUTH_THROTTLED);
    assert_int_equal(res.retry_after, 1);

    /* The global window is remembered as well: attempts 2..4 took three
     * slots (at T0, T0, T0 + 1), which a budget of 3 finds full. */
    keel_auth_close(fx->a);
    fx->cfg.global_per_minute = 3;
    fx->a = auth_open_ok(fx);
    assert_int_equal(login(fx, KEEL_AUTH_USER, "guess-guess", "198.51.100.9", T0 + 2, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, "guess-guess", "198.51.100.9", T0 + 2, &res), KEEL_AUTH_THROTTLED);
    assert_int_equal(res.retry_after, 58);
    /* Once both waits are over the right password clears the source. */
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, src, T0 + 60, &res), KEEL_AUTH_OK);
}

static void test_session_expiry(void **state)
{
    fx_t *fx = *state;
    keel_auth_result_t res;
    bool mc;
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, OWNER, T0, &res), KEEL_AUTH_OK);
    /* Idle: each use pushes the idle expiry on; 900 s of silence ends it. */
    assert_int_equal(keel_auth_session_check(fx->a, res.token, T0 + 899, &mc, NULL), KEEL_OK);
    assert_int_equal(keel_auth_session_check(fx->a, res.token, T0 + 1798, &mc, NULL), KEEL_OK);
    assert_int_equal(keel_auth_session_check(fx->a, res.token, T0 + 1798 + 900, &mc, NULL), KEEL_ERR_VERIFY);
    assert_int_equal(keel_auth_session_count(fx->a, T0 + 2698), 0);

    /* Absolute: 8 hours, however busy. */
    int64_t t1 = T0 + 10000;
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, OWNER, t1, &res), KEEL_AUTH_OK);
    assert_int_equal(res.expires, t1 + 28800);
    int64_t t;
    for (t = t1 + 800; t < t1 + 28800; t += 800)
        assert_int_equal(keel_auth_session_check(fx->a, res.token, t, &mc, NULL), KEEL_OK);
    assert_int_equal(keel_auth_session_check(fx->a, res.token, t1 + 28799, &mc, NULL), KEEL_OK);
    assert_int_equal(keel_auth_session_check(fx->a, res.token, t1 + 28800, &mc, NULL), KEEL_ERR_VERIFY);

    /* Logout ends one session; the table keeps the newest 16. */
    char first[KEEL_AUTH_TOKEN_LEN + 1], last[KEEL_AUTH_TOKEN_LEN + 1];
    int64_t t2 = t1 + 40000;
    for (int i = 0; i <= KEEL_AUTH_SESSIONS_MAX; i++) {
        assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, OWNER, t2 + i, &res), KEEL_AUTH_OK);
        if (i == 0)
            memcpy(first, res.token, sizeof first);
        memcpy(last, res.token, sizeof last);
    }
    assert_int_equal(keel_auth_session_count(fx->a, t2 + 20), KEEL_AUTH_SESSIONS_MAX);
    assert_int_equal(keel_auth_session_check(fx->a, first, t2 + 20, &mc, NULL), KEEL_ERR_VERIFY);
    assert_int_equal(keel_auth_session_check(fx->a, last, t2 + 20, &mc, NULL), KEEL_OK);
    keel_auth_session_end(fx->a, last);
    keel_auth_session_end(fx->a, "not-a-token");
    assert_int_equal(keel_auth_session_check(fx->a, last, t2 + 20, &mc, NULL), KEEL_ERR_VERIFY);
    assert_int_equal(keel_auth_session_count(fx->a, t2 + 20), KEEL_AUTH_SESSIONS_MAX - 1);
    keel_auth_sessions_end_all(fx->a);
    assert_int_equal(keel_auth_session_count(fx->a, t2 + 20), 0);
}

static void test_reauth(void **state)
{
    fx_t *fx = *state;
    set_new_password(fx, T0);
    keel_auth_result_t res;
    assert_int_equal(login(fx, KEEL_AUTH_USER, NEW_PW, OWNER, T0, &res), KEEL_AUTH_OK);
    char token[KEEL_AUTH_TOKEN_LEN + 1];
    memcpy(token, res.token, sizeof token);
    keel_auth_request_t req = {.password = NEW_PW, .password_len = strlen(NEW_PW), .token = token};
    assert_int_equal(attempt(fx, KEEL_AUTH_REAUTH, &req, OWNER, T0 + 5, &res), KEEL_AUTH_OK);
    req.password = WRONG_PW;
    req.password_len = strlen(req.password);
    for (int i = 0; i < 3; i++)
        assert_int_equal(attempt(fx, KEEL_AUTH_REAUTH, &req, OWNER, T0 + 5, &res), KEEL_AUTH_DENIED);
    assert_int_equal(attempt(fx, KEEL_AUTH_REAUTH, &req, OWNER, T0 + 5, &res), KEEL_AUTH_THROTTLED);
    req.token = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_int_equal(attempt(fx, KEEL_AUTH_REAUTH, &req, OWNER, T0 + 5, &res), KEEL_AUTH_NO_SESSION);
}

static void test_reset_brings_back_label(void **state)
{
    fx_t *fx = *state;
    set_new_password(fx, T0);
    keel_auth_result_t res;
    assert_int_equal(login(fx, KEEL_AUTH_USER, NEW_PW, OWNER, T0, &res), KEEL_AUTH_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(login(fx, KEEL_AUTH_USER, "wrong-password", "10.3.3.3", T0, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, NEW_PW, "10.3.3.3", T0, &res), KEEL_AUTH_THROTTLED);

    assert_int_equal(keel_auth_reset(fx->a), KEEL_OK);
    assert_true(keel_auth_must_change(fx->a));
    assert_int_equal(keel_auth_session_count(fx->a, T0), 0);
    assert_int_equal(login(fx, KEEL_AUTH_USER, NEW_PW, OWNER, T0, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, "10.3.3.3", T0, &res), KEEL_AUTH_OK);
    assert_true(res.must_change);
    /* And after a restart too. */
    keel_auth_close(fx->a);
    fx->a = auth_open_ok(fx);
    assert_true(keel_auth_must_change(fx->a));
}

static void test_bad_requests_refused_before_hashing(void **state)
{
    fx_t *fx = *state;
    char big[KEEL_AUTH_PASSWORD_MAX + 1];
    memset(big, 'x', sizeof big);
    keel_auth_request_t req = {.user = KEEL_AUTH_USER, .password = big, .password_len = sizeof big};
    keel_auth_result_t res;
    keel_auth_attempt_t *at = (keel_auth_attempt_t *)&res; /* must be reset to NULL */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(keel_auth_attempt_begin(fx->a, KEEL_AUTH_LOGIN, &req, OWNER, T0, &at, &res), KEEL_OK);
        assert_int_equal(res.outcome, KEEL_AUTH_BAD_REQUEST);
        assert_null(at);
    }
    req.password_len = 0;
    assert_int_equal(attempt(fx, KEEL_AUTH_LOGIN, &req, OWNER, T0, &res), KEEL_AUTH_BAD_REQUEST);
    req.password = NUL_PW;
    req.password_len = 8;
    assert_int_equal(attempt(fx, KEEL_AUTH_LOGIN, &req, OWNER, T0, &res), KEEL_AUTH_BAD_REQUEST);
    req.password = fx->label;
    req.password_len = strlen(fx->label);
    req.user = NULL;
    assert_int_equal(attempt(fx, KEEL_AUTH_LOGIN, &req, OWNER, T0, &res), KEEL_AUTH_BAD_REQUEST);
    /* None of it cost the source anything. */
    assert_int_equal(login(fx, KEEL_AUTH_USER, fx->label, OWNER, T0, &res), KEEL_AUTH_OK);
    /* Programming errors are statuses, not outcomes. */
    assert_int_equal(keel_auth_attempt_begin(fx->a, KEEL_AUTH_LOGIN, &req, "", T0, &at, &res), KEEL_ERR_ARG);
    assert_int_equal(keel_auth_attempt_begin(fx->a, (keel_auth_kind_t)7, &req, OWNER, T0, &at, &res),
                     KEEL_ERR_ARG);
}

static void test_one_attempt_in_flight_per_source(void **state)
{
    fx_t *fx = *state;
    keel_auth_request_t req = {.user = KEEL_AUTH_USER, .password = WRONG_PW, .password_len = strlen(WRONG_PW)};
    keel_auth_result_t res;
    keel_auth_attempt_t *a1 = NULL, *a2 = NULL;
    assert_int_equal(keel_auth_attempt_begin(fx->a, KEEL_AUTH_LOGIN, &req, "10.4.4.4", T0, &a1, &res), KEEL_OK);
    assert_int_equal(res.outcome, KEEL_AUTH_OK);
    assert_int_equal(keel_auth_attempt_begin(fx->a, KEEL_AUTH_LOGIN, &req, "10.4.4.4", T0, &a2, &res), KEEL_OK);
    assert_int_equal(res.outcome, KEEL_AUTH_THROTTLED);
    assert_int_equal(res.retry_after, 1);
    assert_null(a2);
    /* Another source is not held up. */
    assert_int_equal(keel_auth_attempt_begin(fx->a, KEEL_AUTH_LOGIN, &req, "10.4.4.5", T0, &a2, &res), KEEL_OK);
    assert_int_equal(res.outcome, KEEL_AUTH_OK);
    keel_auth_attempt_free(a2);
    keel_auth_attempt_run(a1);
    assert_int_equal(keel_auth_attempt_finish(fx->a, a1, T0, &res), KEEL_OK);
    assert_int_equal(res.outcome, KEEL_AUTH_DENIED);
    assert_int_equal(keel_auth_attempt_begin(fx->a, KEEL_AUTH_LOGIN, &req, "10.4.4.4", T0, &a1, &res), KEEL_OK);
    assert_int_equal(res.outcome, KEEL_AUTH_OK);
    /* Closing the account with an attempt outstanding leaves it freeable. */
    keel_auth_close(fx->a);
    fx->a = auth_open_ok(fx);
    keel_auth_attempt_run(a1);
    assert_int_equal(keel_auth_attempt_finish(fx->a, a1, T0, &res), KEEL_ERR_ARG);
}

static void test_sources_capped(void **state)
{
    fx_t *fx = *state;
    keel_auth_close(fx->a);
    fx->cfg.global_per_minute = 1;
    fx->a = auth_open_ok(fx);
    sqlite3 *db = keel_vault_db(fx->v);
    assert_int_equal(sqlite3_exec(db,
                                  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4096)"
                                  " INSERT INTO auth_sources(source, failures, last_failure)"
                                  " SELECT 'old-' || i, 1, 1000 + i FROM n",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    keel_auth_result_t res;
    /* The table is full: a new source pays into the global budget. */
    assert_int_equal(login(fx, KEEL_AUTH_USER, "guess-guess", "10.5.5.1", T0, &res), KEEL_AUTH_DENIED);
    assert_int_equal(login(fx, KEEL_AUTH_USER, "guess-guess", "10.5.5.2", T0, &res), KEEL_AUTH_THROTTLED);
    assert_int_equal(res.retry_after, 60);

    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT COUNT(*), SUM(source = 'old-1'), SUM(source = '10.5.5.1')"
                                        " FROM auth_sources",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), KEEL_AUTH_SOURCES_MAX);
    assert_int_equal(sqlite3_column_int(q, 1), 0);
    assert_int_equal(sqlite3_column_int(q, 2), 1);
    sqlite3_finalize(q);
}

static void test_source_from_addr(void **state)
{
    (void)state;
    char out[KEEL_AUTH_SOURCE_MAX];
    struct sockaddr_in in4 = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, "192.0.2.33", &in4.sin_addr), 1);
    assert_int_equal(keel_auth_source_from_addr((struct sockaddr *)&in4, NULL, out), KEEL_OK);
    assert_string_equal(out, "192.0.2.33");

    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    assert_int_equal(inet_pton(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &in6.sin6_addr), 1);
    assert_int_equal(keel_auth_source_from_addr((struct sockaddr *)&in6, NULL, out), KEEL_OK);
    assert_string_equal(out, "2001:db8:1:2::/64");
    assert_int_equal(inet_pton(AF_INET6, "2001:db8:1:2::1", &in6.sin6_addr), 1);
    assert_int_equal(keel_auth_source_from_addr((struct sockaddr *)&in6, NULL, out), KEEL_OK);
    assert_string_equal(out, "2001:db8:1:2::/64");
    assert_int_equal(inet_pton(AF_INET6, "::ffff:198.51.100.4", &in6.sin6_addr), 1);
    assert_int_equal(keel_auth_source_from_addr((struct sockaddr *)&in6, NULL, out), KEEL_OK);
    assert_string_equal(out, "198.51.100.4");
    /* on the device's own link every address is a source of its own */
    assert_int_equal(inet_pton(AF_INET6, "fe80::1:2:3:4", &in6.sin6_addr), 1);
    assert_int_equal(keel_auth_source_from_addr((struct sockaddr *)&in6, NULL, out), KEEL_OK);
    assert_string_equal(out, "fe80::1:2:3:4");
    assert_int_equal(inet_pton(AF_INET6, "fd12:3456:789a:1::99", &in6.sin6_addr), 1);
    assert_int_equal(keel_auth_source_from_addr((struct sockaddr *)&in6, NULL, out), KEEL_OK);
    assert_string_equal(out, "fd12:3456:789a:1::99");

    /* a global address in the device's own /64 is on its LAN too */
    struct sockaddr_in6 local = {.sin6_family = AF_INET6};
    assert_int_equal(inet_pton(AF_INET6, "2001:db8:1:2::1", &local.sin6_addr), 1);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &in6.sin6_addr), 1);
    assert_int_equal(keel_auth_source_from_addr((struct sockaddr *)&in6, (struct sockaddr *)&local, out), KEEL_OK);
    assert_string_equal(out, "2001:db8:1:2:aaaa:bbbb:cccc:dddd");
    assert_int_equal(inet_pton(AF_INET6, "2001:db8:9:9::5", &in6.sin6_addr), 1);
    assert_int_equal(keel_auth_source_from_addr((struct sockaddr *)&in6, (struct sockaddr *)&local, out), KEEL_OK);
    assert_string_equal(out, "2001:db8:9:9::/64");

    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(keel_auth_source_from_addr(&un, NULL, out), KEEL_ERR_ARG);
}

static void test_open_refuses_bad_label_file(void **state)
{
    fx_t *fx = *state;
    keel_auth_t *a = NULL;
    assert_int_equal(keel_file_write_atomic(fx->label_path, "$2y$10$abc\n", 11, 0600), KEEL_OK);
    assert_int_equal(keel_auth_open(fx->v, &fx->cfg, &a), KEEL_ERR_FORMAT);
    assert_null(a);
    fx->cfg.label_hash_path = "/nonexistent/label.hash";
    assert_int_equal(keel_auth_open(fx->v, &fx->cfg, &a), KEEL_ERR_NOT_FOUND);
    fx->cfg.label_hash_path = NULL;
    assert_int_equal(keel_auth_open(fx->v, &fx->cfg, &a), KEEL_ERR_CONFIG);
    assert_null(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_policy, setup, teardown),
        cmocka_unit_test(test_common_list_sorted),
        cmocka_unit_test_setup_teardown(test_label_login_must_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_attempt_after_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_user_like_wrong_password, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff_progression, setup, teardown),
        cmocka_unit_test_setup_teardown(test_owner_not_locked_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_throttle_survives_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reauth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_brings_back_label, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests_refused_before_hashing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_attempt_in_flight_per_source, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sources_capped, setup, teardown),
        cmocka_unit_test(test_source_from_addr),
        cmocka_unit_test_setup_teardown(test_open_refuses_bad_label_file, setup, teardown),
    };
    return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}

/*
 * keel/auth.h - the device's one administrator account, its sessions, and
 * the brute-force throttle in front of it (5.1-1, 5.1-3, 5.1-4, 5.1-5).
 *
 * The account starts with the label password (the Argon2id hash written by
 * the factory, [identity] label_password_hash). A login with it yields a
 * session that may do exactly one thing: set a new password. The new
 * password's Argon2id hash is kept in the vault; from then on only it logs
 * in, and the label password is refused. A factory reset
 * (keel_auth_reset) brings the label password back.
 *
 * Password hashing is slow on purpose (Argon2id, 19 MiB, t=2 by default), so
 * the event loop never hashes: each check is an attempt in three steps,
 *   begin   (loop thread)   throttle check BEFORE any hashing, copies inputs
 *   run     (worker thread) the Argon2id work; touches no shared state
 *   finish  (loop thread)   records the outcome, makes the session
 * and the caller runs at most KEEL_AUTH_PARALLEL_MAX `run`s at a time, so
 * memory stays bounded by that many Argon2id arenas.
 *
 * Throttle (5.1-5), built so that it cannot lock the owner out:
 * - per source (an IPv4 address, the /64 of a global IPv6 address, a whole
 *   link-local or unique-local IPv6 address): the first
 *   `free_failures` failures cost nothing; after that each attempt must wait
 *   backoff_base * 2^(failures - free_failures) seconds, capped at
 *   backoff_max, counted from the last failure. A success clears the source.
 *   Sources without failures are never delayed.
 * - globally: a budget of `global_per_minute` hash evaluations per rolling
 *   minute that only sources with at least one recorded failure consume
 *   (their free failures included); a clean source never waits for it.
 * - a source has at most one attempt between begin and finish/free; a
 *   second one is THROTTLED (retry_after 1).
 * - the state (per source and the global window) is kept in the vault, so a
 *   restart does not reset it; at most KEEL_AUTH_SOURCES_MAX sources are
 *   remembered (the one whose last failure is oldest is dropped). While that
 *   table is full, a source it does not hold pays into the global budget, so
 *   eviction cannot hand out fresh free failures.
 * See docs/internals/auth.md for the resulting maximum guess rates.
 * - a wrong user name is hashed against the real hash and fails exactly like
 *   a wrong password: same status, same work.
 *
 * Sessions: 256-bit random tokens; only their SHA-256 is kept (in memory).
 * Each has an idle and an absolute expiry and a separate CSRF token for the
 * cookie-borne UI. All sessions end on a password change or reset.
 */
#ifndef KEEL_AUTH_H
#define KEEL_AUTH_H

#include "keel/base.h"
#include "keel/crypto.h"
#include "keel/vault.h"

#include <stdbool.h>
#include <stdint.h>

struct sockaddr;

#define KEEL_AUTH_USER "admin"
#define KEEL_AUTH_PASSWORD_MIN 10
#define KEEL_AUTH_PASSWORD_MAX 128   /* bytes; longer input is refused before hashing */
#define KEEL_AUTH_PARALLEL_MAX 2
#define KEEL_AUTH_SOURCES_MAX 4096
#define KEEL_AUTH_SESSIONS_MAX 16    /* the oldest session is ended to make room */
#define KEEL_AUTH_TOKEN_LEN 43       /* base64url of 32 bytes, no padding */
#define KEEL_AUTH_SOURCE_MAX 64      /* text form of a source */
#define KEEL_AUTH_WHY_MAX 160

typedef struct {
    const char *label_hash_path; /* the factory's Argon2id hash of the label password */
    const char *serial, *device_id, *model; /* a new password may not contain these */
    keel_argon2_params_t argon2; /* for new passwords */
    uint32_t session_idle_s;     /* default 900 */
    uint32_t session_max_s;      /* default 28800 */
    uint32_t free_failures;      /* default 3 */
    uint32_t backoff_base_s;     /* default 1 */
    uint32_t backoff_max_s;      /* default 300 */
    uint32_t global_per_minute;  /* default 20 */
} keel_auth_config_t;

/* The defaults above, with argon2 = keel_argon2_defaults(); pointers NULL. */
keel_auth_config_t keel_auth_config_defaults(void);

typedef struct keel_auth keel_auth_t;

/* Opens the account over `v` (which must outlive it); creates its tables. */
keel_status_t keel_auth_open(keel_vault_t *v, const keel_auth_config_t *cfg, keel_auth_t **out) KEEL_MUST_CHECK;
void keel_auth_close(keel_auth_t *a);

/* true while the label password is still the account's password. */
bool keel_auth_must_change(const keel_auth_t *a);
/* When the owner's own password was set (unix seconds); KEEL_ERR_NOT_FOUND
 * while the label password is still in force. */
keel_status_t keel_auth_password_time(keel_auth_t *a, int64_t *when) KEEL_MUST_CHECK;

/*
 * Password policy for a new password: KEEL_AUTH_PASSWORD_MIN..MAX bytes,
 * not in the common-password list (compared case-insensitively, also with
 * digits/symbols stripped from both ends when at least 6 bytes remain), not
 * containing the serial, device id or model (case-insensitively; names
 * shorter than 4 characters are not checked). The label
 * password is compared in its normalised form (keel_identity_password_normalize:
 * users may type it with or without dashes, in any case); a set password is
 * compared exactly as typed. On refusal returns KEEL_ERR_ARG and writes a
 * sentence for the user into why (KEEL_AUTH_WHY_MAX), e.g. "The password
 * must be at least 10 characters long."; `code` (may be NULL) gets a short
 * machine-readable reason: "too_short", "too_long", "common", "contains_serial",
 * "contains_id", "contains_model".
 */
keel_status_t keel_auth_policy_check(const keel_auth_t *a, const char *pw, size_t len, char *why,
                                     const char **code) KEEL_MUST_CHECK;

typedef enum {
    KEEL_AUTH_LOGIN = 0, /* user + password -> session */
    KEEL_AUTH_CHANGE,    /* session + current + new password -> new password set, all sessions ended */
    KEEL_AUTH_REAUTH,    /* session + password -> confirmed (e.g. before a factory reset) */
} keel_auth_kind_t;

typedef struct keel_auth_attempt keel_auth_attempt_t;

typedef struct {
    /* LOGIN */
    const char *user;
    /* LOGIN and REAUTH: the password; CHANGE: the current password */
    const char *password;
    size_t password_len;
    /* CHANGE: the new password (the policy is checked in begin, before hashing) */
    const char *new_password;
    size_t new_password_len;
    /* CHANGE and REAUTH: the token of the session asking */
    const char *token;
} keel_auth_request_t;

/* What begin/finish decide. */
typedef enum {
    KEEL_AUTH_OK = 0,      /* finish: verified (and session made / password set) */
    KEEL_AUTH_DENIED,      /* finish: wrong user or password (one answer for both) */
    KEEL_AUTH_THROTTLED,   /* begin: wait retry_after seconds (HTTP 429) */
    KEEL_AUTH_POLICY,      /* begin (CHANGE): new password refused; why/code say why */
    KEEL_AUTH_NO_SESSION,  /* begin or finish (CHANGE, REAUTH): token unknown, expired or ended */
    KEEL_AUTH_BAD_REQUEST, /* begin: malformed input (empty, over KEEL_AUTH_PASSWORD_MAX) */
} keel_auth_outcome_t;

typedef struct {
    keel_auth_outcome_t outcome;
    uint32_t retry_after;           /* THROTTLED */
    char why[KEEL_AUTH_WHY_MAX];    /* POLICY */
    const char *code;               /* POLICY */
    /* finish of a LOGIN that succeeded: */
    char token[KEEL_AUTH_TOKEN_LEN + 1];
    char csrf[KEEL_AUTH_TOKEN_LEN + 1];
    bool must_change;
    int64_t expires;                /* absolute expiry of the session */
} keel_auth_result_t;

/*
 * Step 1 (loop thread). Applies the throttle for `source` at time `now`,
 * then copies what `run` needs (the inputs into locked, wiped-on-free
 * memory, the current hash). *out is set only when the result's outcome is
 * KEEL_AUTH_OK; then the caller must pass it to run and then finish (or
 * keel_auth_attempt_free, which records nothing). The status is for
 * failures of the module itself (vault, memory).
 */
keel_status_t keel_auth_attempt_begin(keel_auth_t *a, keel_auth_kind_t kind, const keel_auth_request_t *req,
                                      const char *source, int64_t now, keel_auth_attempt_t **out,
                                      keel_auth_result_t *res) KEEL_MUST_CHECK;
/* Step 2 (any thread): the Argon2id work. Thread-safe across attempts. */
void keel_auth_attempt_run(keel_auth_attempt_t *at);
/* Step 3 (loop thread): records the outcome, frees the attempt (on every
 * path). An attempt begun before the password changed (or was reset) ends
 * DENIED without being recorded. After keel_auth_close, KEEL_ERR_ARG. */
keel_status_t keel_auth_attempt_finish(keel_auth_t *a, keel_auth_attempt_t *at, int64_t now,
                                       keel_auth_result_t *res) KEEL_MUST_CHECK;
/* Loop thread, like finish (it releases the source's in-flight mark). */
void keel_auth_attempt_free(keel_auth_attempt_t *at);

/* Session check for a request: KEEL_OK and *must_change when valid (the idle
 * expiry is pushed on); KEEL_ERR_VERIFY when unknown or expired. csrf (may be
 * NULL) receives the session's CSRF token. */
keel_status_t keel_auth_session_check(keel_auth_t *a, const char *token, int64_t now, bool *must_change,
                                      char csrf[KEEL_AUTH_TOKEN_LEN + 1]) KEEL_MUST_CHECK;
/* Ends one session (logout); unknown tokens are ignored. */
void keel_auth_session_end(keel_auth_t *a, const char *token);
/* Ends every session. */
void keel_auth_sessions_end_all(keel_auth_t *a);
size_t keel_auth_session_count(keel_auth_t *a, int64_t now);

/* Failed password checks (wrong user or password, any kind) since
 * keel_auth_open; never reset. keeld reports the increase per window to the
 * fleet (auth-failures). */
uint64_t keel_auth_failures(const keel_auth_t *a);

/* Factory reset of the account: drops the set password (the label password
 * logs in again), the throttle state and every session. */
keel_status_t keel_auth_reset(keel_auth_t *a) KEEL_MUST_CHECK;

/* Normalises a peer address into a throttle source: IPv4 as is, IPv6 to its
 * /64 ("2001:db8:1:2::/64") unless it is on the device's own LAN (the whole
 * address): link-local, unique-local, or in the /64 of `local`, the
 * device's own address on that connection (may be NULL). IPv4-mapped IPv6
 * as IPv4. */
keel_status_t keel_auth_source_from_addr(const struct sockaddr *sa, const struct sockaddr *local,
                                        char out[KEEL_AUTH_SOURCE_MAX]) KEEL_MUST_CHECK;

#endif

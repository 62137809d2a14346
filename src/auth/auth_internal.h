/*
 * src/auth/auth_internal.h - what the auth module's files share: the account
 * object, its sessions and its live attempts. Not a public header.
 */
#ifndef KEEL_AUTH_INTERNAL_H
#define KEEL_AUTH_INTERNAL_H

#include "keel/auth.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* serial, device id and model copied from the configuration. */
#define AUTH_FIELD_MAX 128
/* Attempts begun but not yet finished or freed, across all sources. */
#define AUTH_PENDING_MAX 64
/* The rolling window of the global budget. */
#define AUTH_WINDOW_S 60
/* Name of the set password's hash in the vault's sealed store. */
#define AUTH_SECRET_HASH "auth-password-hash"

/* The common-password list, generated at build time (auth_common.c). */
extern const char *const keel_auth_common[];
extern const size_t keel_auth_common_count;

typedef struct {
    bool used;
    bool must_change;
    uint8_t token_hash[KEEL_SHA256_LEN];
    char csrf[KEEL_AUTH_TOKEN_LEN + 1];
    int64_t created;
    int64_t last_seen;
} auth_session_t;

struct keel_auth {
    keel_vault_t *v;
    keel_auth_config_t cfg; /* string pointers point into the copies below */
    char serial[AUTH_FIELD_MAX];
    char device_id[AUTH_FIELD_MAX];
    char model[AUTH_FIELD_MAX];
    char label_hash[KEEL_PASSWORD_HASH_MAX];
    char set_hash[KEEL_PASSWORD_HASH_MAX];
    bool has_set;
    /* Bumped whenever the account's password changes: an attempt begun
     * against an older password cannot succeed in finish. */
    uint64_t generation;
    auth_session_t sessions[KEEL_AUTH_SESSIONS_MAX];
    struct keel_auth_attempt *live; /* begun, not yet finished or freed */
    size_t live_count;
    uint64_t failures; /* wrong passwords since open (keel_auth_failures) */
};

/* Sessions (session.c). */
/* Index of the live session whose token hashes to `hash`, or -1. Every slot
 * is compared, in constant time; an expired match is ended. */
int auth_session_find(keel_auth_t *a, const uint8_t hash[KEEL_SHA256_LEN], int64_t now);
/* SHA-256 of a well-formed token; false when it is not one. */
bool auth_token_hash(const char *token, uint8_t out[KEEL_SHA256_LEN]);
keel_status_t auth_session_new(keel_auth_t *a, int64_t now, bool must_change,
                               keel_auth_result_t *res) KEEL_MUST_CHECK;

/* Throttle state in the vault (throttle.c). */
keel_status_t auth_throttle_init(keel_auth_t *a) KEEL_MUST_CHECK;
/* Admits an attempt of `source` at `now`: *retry_after is 0 when admitted
 * (its global slot, if it needs one, is then taken), else the wait. */
keel_status_t auth_throttle_admit(keel_auth_t *a, const char *source, int64_t now,
                                  uint32_t *retry_after) KEEL_MUST_CHECK;
keel_status_t auth_throttle_fail(keel_auth_t *a, const char *source, int64_t now) KEEL_MUST_CHECK;
keel_status_t auth_throttle_clear(keel_auth_t *a, const char *source) KEEL_MUST_CHECK;
keel_status_t auth_throttle_reset(keel_auth_t *a) KEEL_MUST_CHECK;
/* Seconds a source with `failures` recorded failures waits after its last. */
uint64_t auth_backoff(const keel_auth_config_t *cfg, int64_t failures);

/* The policy's list lookup (policy.c): is p[0..n) (lower case) listed? */
bool auth_common_contains(const char *p, size_t n);

#endif

/*
 * src/auth/session.c - sessions in memory: only SHA-256(token) is kept, every
 * slot is compared on each lookup (constant time per entry), each session has
 * an idle and an absolute expiry and its own CSRF token.
 */
#include "auth_internal.h"

#include <string.h>

#define TOKEN_RAW_LEN 32

/* RFC 4648 section 5, no padding: 32 bytes -> 43 characters. */
static void base64url(const uint8_t in[TOKEN_RAW_LEN], char out[KEEL_AUTH_TOKEN_LEN + 1])
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < TOKEN_RAW_LEN; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            out[o++] = alphabet[(acc >> (bits - 6)) & 63u];
            bits -= 6;
        }
    }
    if (bits > 0)
        out[o++] = alphabet[(acc << (6 - bits)) & 63u];
    out[o] = '\0';
    keel_wipe(&acc, sizeof acc); /* it held token bits; a plain store would be optimised away */
}

static void random_token(char out[KEEL_AUTH_TOKEN_LEN + 1])
{
    uint8_t raw[TOKEN_RAW_LEN];
    keel_random_bytes(raw, sizeof raw);
    base64url(raw, out);
    keel_wipe(raw, sizeof raw);
}

bool auth_token_hash(const char *token, uint8_t out[KEEL_SHA256_LEN])
{
    if (token == NULL || strnlen(token, KEEL_AUTH_TOKEN_LEN + 1) != KEEL_AUTH_TOKEN_LEN)
        return false;
    keel_sha256(token, KEEL_AUTH_TOKEN_LEN, out);
    return true;
}

static void session_clear(auth_session_t *s)
{
    keel_wipe(s, sizeof *s);
}

static bool expired(const keel_auth_t *a, const auth_session_t *s, int64_t now)
{
    return now >= s->last_seen + (int64_t)a->cfg.session_idle_s ||
           now >= s->created + (int64_t)a->cfg.session_max_s || now < s->created;
}

int auth_session_find(keel_auth_t *a, const uint8_t hash[KEEL_SHA256_LEN], int64_t now)
{
    int found = -1;
    for (int i = 0; i < KEEL_AUTH_SESSIONS_MAX; i++) {
        int eq = keel_ct_equal(a->sessions[i].token_hash, hash, KEEL_SHA256_LEN);
        if (eq && a->sessions[i].used)
            found = i;
    }
    if (found >= 0 && expired(a, &a->sessions[found], now)) {
        session_clear(&a->sessions[found]);
        found = -1;
    }
    return found;
}

keel_status_t auth_session_new(keel_auth_t *a, int64_t now, bool must_change, keel_auth_result_t *res)
{
    int slot = -1;
    for (int i = 0; i < KEEL_AUTH_SESSIONS_MAX && slot < 0; i++)
        if (!a->sessions[i].used || expired(a, &a->sessions[i], now))
            slot = i;
    if (slot < 0) {
        slot = 0;
        for (int i = 1; i < KEEL_AUTH_SESSIONS_MAX; i++)
            if (a->sessions[i].created < a->sessions[slot].created)
                slot = i;
    }
    auth_session_t *s = &a->sessions[slot];
    session_clear(s);
    random_token(res->token);
    keel_sha256(res->token, KEEL_AUTH_TOKEN_LEN, s->token_hash);
    random_token(s->csrf);
    if (keel_strlcpy(res->csrf, s->csrf, sizeof res->csrf) != KEEL_OK) {
        session_clear(s);
        keel_wipe(res->token, sizeof res->token);
        return keel_errorf(KEEL_ERR_TOO_LARGE, "auth: CSRF token does not fit");
    }
    s->used = true;
    s->must_change = must_change;
    s->created = now;
    s->last_seen = now;
    res->must_change = must_change;
    res->expires = now + (int64_t)a->cfg.session_max_s;
    return KEEL_OK;
}

keel_status_t keel_auth_session_check(keel_auth_t *a, const char *token, int64_t now, bool *must_change,
                                      char csrf[KEEL_AUTH_TOKEN_LEN + 1])
{
    if (a == NULL || must_change == NULL)
        return keel_errorf(KEEL_ERR_ARG, "auth session check: missing argument");
    uint8_t hash[KEEL_SHA256_LEN];
    int i = auth_token_hash(token, hash) ? auth_session_find(a, hash, now) : -1;
    keel_wipe(hash, sizeof hash);
    if (i < 0)
        return keel_errorf(KEEL_ERR_VERIFY, "auth: no such session (unknown or expired)");
    auth_session_t *s = &a->sessions[i];
    s->last_seen = now;
    *must_change = s->must_change;
    if (csrf != NULL)
        memcpy(csrf, s->csrf, KEEL_AUTH_TOKEN_LEN + 1);
    return KEEL_OK;
}

void keel_auth_session_end(keel_auth_t *a, const char *token)
{
    uint8_t hash[KEEL_SHA256_LEN];
    if (a == NULL || !auth_token_hash(token, hash))
        return;
    for (int k = 0; k < KEEL_AUTH_SESSIONS_MAX; k++)
        if (a->sessions[k].used && keel_ct_equal(a->sessions[k].token_hash, hash, KEEL_SHA256_LEN))
            session_clear(&a->sessions[k]);
    keel_wipe(hash, sizeof hash);
}

void keel_auth_sessions_end_all(keel_auth_t *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < KEEL_AUTH_SESSIONS_MAX; i++)
        session_clear(&a->sessions[i]);
}

size_t keel_auth_session_count(keel_auth_t *a, int64_t now)
{
    size_t n = 0;
    if (a == NULL)
        return 0;
    for (int i = 0; i < KEEL_AUTH_SESSIONS_MAX; i++) {
        if (!a->sessions[i].used)
            continue;
        if (expired(a, &a->sessions[i], now))
            session_clear(&a->sessions[i]);
        else
            n++;
    }
    return n;
}

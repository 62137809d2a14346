/*
 * src/auth/auth.c - the administrator account: its password (the factory's
 * label password until the owner sets one), and the begin/run/finish attempt
 * that keeps Argon2id off the event loop. See docs/internals/auth.md.
 */
#include "auth_internal.h"

#include "keel/identity.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* The label hash file holds one line; anything much longer is not one. */
#define LABEL_FILE_MAX 1024
#define USER_MAX 64
#define HASH_PREFIX "$argon2id$"

struct keel_auth_attempt {
    keel_auth_t *owner; /* NULL once the account is closed */
    struct keel_auth_attempt *prev, *next;
    bool locked;        /* mlock succeeded */
    keel_auth_kind_t kind;
    uint64_t generation;
    char source[KEEL_AUTH_SOURCE_MAX];
    bool user_ok;
    uint8_t session_hash[KEEL_SHA256_LEN];
    keel_argon2_params_t argon2;
    char hash[KEEL_PASSWORD_HASH_MAX];
    char pw[KEEL_AUTH_PASSWORD_MAX + 1];
    size_t pw_len;
    char new_pw[KEEL_AUTH_PASSWORD_MAX + 1];
    size_t new_len;
    /* written by run */
    bool ran;
    keel_status_t verify_st;
    keel_status_t hash_st;
    char new_hash[KEEL_PASSWORD_HASH_MAX];
};

keel_auth_config_t keel_auth_config_defaults(void)
{
    keel_auth_config_t c = {
        .argon2 = keel_argon2_defaults(),
        .session_idle_s = 900,
        .session_max_s = 28800,
        .free_failures = 3,
        .backoff_base_s = 1,
        .backoff_max_s = 300,
        .global_per_minute = 20,
    };
    return c;
}

/* An encoded Argon2id string: the prefix, visible ASCII, fits the buffer. */
static bool hash_ok(const char *h, size_t n)
{
    if (n >= KEEL_PASSWORD_HASH_MAX || n < sizeof HASH_PREFIX || memcmp(h, HASH_PREFIX, sizeof HASH_PREFIX - 1) != 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (h[i] <= ' ' || h[i] > '~')
            return false;
    return true;
}

static keel_status_t load_label_hash(keel_auth_t *a, const char *path)
{
    keel_buf_t b;
    keel_status_t st = keel_file_read(path, LABEL_FILE_MAX, &b);
    if (st != KEEL_OK)
        return st;
    size_t n = b.len;
    while (n > 0 && (b.data[n - 1] == '\n' || b.data[n - 1] == '\r' || b.data[n - 1] == ' '))
        n--;
    if (!hash_ok((const char *)b.data, n))
        st = keel_errorf(KEEL_ERR_FORMAT, "auth: %s does not hold an Argon2id hash", path);
    else {
        memcpy(a->label_hash, b.data, n);
        a->label_hash[n] = '\0';
    }
    keel_buf_free(&b);
    return st;
}

static keel_status_t load_set_hash(keel_auth_t *a)
{
    size_t n = 0;
    keel_status_t st = keel_vault_secret_get(a->v, AUTH_SECRET_HASH, (uint8_t *)a->set_hash,
                                             sizeof a->set_hash - 1, &n);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        a->has_set = false;
        return KEEL_OK;
    }
    if (st != KEEL_OK)
        return st;
    if (!hash_ok(a->set_hash, n)) {
        keel_wipe(a->set_hash, sizeof a->set_hash);
        return keel_errorf(KEEL_ERR_FORMAT, "auth: the stored password hash is malformed");
    }
    a->set_hash[n] = '\0';
    a->has_set = true;
    return KEEL_OK;
}

static keel_status_t copy_field(char dst[AUTH_FIELD_MAX], const char *src, const char **ptr, const char *what)
{
    *ptr = NULL;
    if (src == NULL)
        return KEEL_OK;
    if (keel_strlcpy(dst, src, AUTH_FIELD_MAX) != KEEL_OK)
        return keel_errorf(KEEL_ERR_ARG, "auth: the %s is longer than %d bytes", what, AUTH_FIELD_MAX - 1);
    *ptr = dst;
    return KEEL_OK;
}

static keel_status_t config_check(const keel_auth_config_t *c)
{
    if (c->label_hash_path == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "auth: no label password hash file configured");
    if (c->argon2.t_cost < 1 || c->argon2.m_cost_kib < 8)
        return keel_errorf(KEEL_ERR_CONFIG, "auth: Argon2id cost too low (t=%u, m=%u KiB)", c->argon2.t_cost,
                           c->argon2.m_cost_kib);
    if (c->session_idle_s == 0 || c->session_max_s == 0)
        return keel_errorf(KEEL_ERR_CONFIG, "auth: session lifetimes must be at least one second");
    if (c->backoff_base_s == 0 || c->backoff_max_s < c->backoff_base_s)
        return keel_errorf(KEEL_ERR_CONFIG, "auth: backoff must be 1 <= base (%u) <= max (%u) seconds",
                           c->backoff_base_s, c->backoff_max_s);
    if (c->global_per_minute == 0)
        return keel_errorf(KEEL_ERR_CONFIG, "auth: the global budget must allow at least one attempt a minute");
    return KEEL_OK;
}

keel_status_t keel_auth_open(keel_vault_t *v, const keel_auth_config_t *cfg, keel_auth_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (v == NULL || cfg == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "auth open: missing argument");
    keel_status_t st = keel_crypto_init();
    if (st == KEEL_OK)
        st = config_check(cfg);
    if (st != KEEL_OK)
        return st;
    keel_auth_t *a = calloc(1, sizeof *a);
    if (a == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    a->v = v;
    a->cfg = *cfg;
    a->cfg.label_hash_path = NULL;
    st = copy_field(a->serial, cfg->serial, &a->cfg.serial, "serial number");
    if (st == KEEL_OK)
        st = copy_field(a->device_id, cfg->device_id, &a->cfg.device_id, "device id");
    if (st == KEEL_OK)
        st = copy_field(a->model, cfg->model, &a->cfg.model, "model");
    if (st == KEEL_OK)
        st = load_label_hash(a, cfg->label_hash_path);
    if (st == KEEL_OK)
        st = load_set_hash(a);
    if (st == KEEL_OK)
        st = auth_throttle_init(a);
    if (st != KEEL_OK) {
        keel_auth_close(a);
        return st;
    }
    *out = a;
    return KEEL_OK;
}

void keel_auth_close(keel_auth_t *a)
{
    if (a == NULL)
        return;
    for (struct keel_auth_attempt *at = a->live; at != NULL; at = at->next)
        at->owner = NULL;
    keel_wipe(a, sizeof *a);
    free(a);
}

keel_status_t keel_auth_password_time(keel_auth_t *a, int64_t *when)
{
    if (a == NULL || when == NULL)
        return keel_errorf(KEEL_ERR_ARG, "auth password time: missing argument");
    return keel_vault_secret_time(a->v, AUTH_SECRET_HASH, when);
}

bool keel_auth_must_change(const keel_auth_t *a)
{
    return a != NULL && !a->has_set;
}

static void unlink_attempt(keel_auth_attempt_t *at)
{
    keel_auth_t *a = at->owner;
    if (a == NULL)
        return;
    if (at->prev != NULL)
        at->prev->next = at->next;
    else
        a->live = at->next;
    if (at->next != NULL)
        at->next->prev = at->prev;
    a->live_count--;
    at->owner = NULL;
    at->prev = at->next = NULL;
}

static size_t page_size(void)
{
    long n = sysconf(_SC_PAGESIZE);
    return n > 0 ? (size_t)n : 4096;
}

static size_t attempt_size(void)
{
    size_t page = page_size();
    return (sizeof(keel_auth_attempt_t) + page - 1) / page * page;
}

void keel_auth_attempt_free(keel_auth_attempt_t *at)
{
    if (at == NULL)
        return;
    unlink_attempt(at);
    bool locked = at->locked;
    size_t size = attempt_size();
    keel_wipe(at, size);
    if (locked)
        (void)munlock(at, size);
    free(at);
}

/* A password as the request gives it: present, 1..MAX bytes, no NUL. */
static bool password_shape_ok(const char *pw, size_t len)
{
    return pw != NULL && len > 0 && len <= KEEL_AUTH_PASSWORD_MAX && memchr(pw, '\0', len) == NULL;
}

static bool source_busy(const keel_auth_t *a, const char *source)
{
    for (const struct keel_auth_attempt *at = a->live; at != NULL; at = at->next)
        if (strcmp(at->source, source) == 0)
            return true;
    return false;
}

/* Input checks that need no hashing and cost the source nothing. Sets the
 * outcome when the request is refused; fills session_hash. */
static void screen(keel_auth_t *a, keel_auth_kind_t kind, const keel_auth_request_t *req, int64_t now,
                   uint8_t session_hash[KEEL_SHA256_LEN], keel_auth_result_t *res)
{
    res->outcome = KEEL_AUTH_BAD_REQUEST;
    if (!password_shape_ok(req->password, req->password_len))
        return;
    if (kind == KEEL_AUTH_LOGIN) {
        if (req->user == NULL || strnlen(req->user, USER_MAX + 1) > USER_MAX)
            return;
        res->outcome = KEEL_AUTH_OK;
        return;
    }
    if (kind == KEEL_AUTH_CHANGE &&
        (req->new_password == NULL || (req->new_password_len <= KEEL_AUTH_PASSWORD_MAX &&
                                       memchr(req->new_password, '\0', req->new_password_len) != NULL)))
        return;
    res->outcome = KEEL_AUTH_NO_SESSION;
    if (!auth_token_hash(req->token, session_hash) || auth_session_find(a, session_hash, now) < 0)
        return;
    res->outcome = KEEL_AUTH_OK;
    if (kind == KEEL_AUTH_CHANGE &&
        keel_auth_policy_check(a, req->new_password, req->new_password_len, res->why, &res->code) != KEEL_OK) {
        keel_error_clear();
        res->outcome = KEEL_AUTH_POLICY;
    }
}

/* Copies what run needs into locked memory of the attempt's own. */
static keel_status_t attempt_new(keel_auth_t *a, keel_auth_kind_t kind, const keel_auth_request_t *req,
                                 const char *source, const uint8_t session_hash[KEEL_SHA256_LEN],
                                 keel_auth_attempt_t **out)
{
    /* Pages of its own, so that locking and unlocking one attempt never
     * unlocks another's; best effort: unlocked, it is still wiped on free. */
    size_t size = attempt_size();
    keel_auth_attempt_t *at = aligned_alloc(page_size(), size);
    if (at == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    memset(at, 0, size);
    at->locked = mlock(at, size) == 0;
    (void)madvise(at, size, MADV_DONTDUMP);
    at->kind = kind;
    at->generation = a->generation;
    at->user_ok = kind != KEEL_AUTH_LOGIN || strcmp(req->user, KEEL_AUTH_USER) == 0;
    memcpy(at->session_hash, session_hash, KEEL_SHA256_LEN);
    at->argon2 = a->cfg.argon2;
    keel_status_t st = keel_strlcpy(at->source, source, sizeof at->source);
    if (st == KEEL_OK)
        st = keel_strlcpy(at->hash, a->has_set ? a->set_hash : a->label_hash, sizeof at->hash);
    if (st == KEEL_OK) {
        memcpy(at->pw, req->password, req->password_len);
        at->pw[req->password_len] = '\0';
        /* The label password is checked as the factory hashed it. */
        if (!a->has_set)
            st = keel_identity_password_normalize(at->pw, at->pw, sizeof at->pw);
        at->pw_len = strlen(at->pw);
    }
    if (st == KEEL_OK && kind == KEEL_AUTH_CHANGE) {
        memcpy(at->new_pw, req->new_password, req->new_password_len);
        at->new_len = req->new_password_len;
    }
    if (st != KEEL_OK) {
        keel_auth_attempt_free(at);
        return st;
    }
    at->owner = a;
    at->next = a->live;
    if (a->live != NULL)
        a->live->prev = at;
    a->live = at;
    a->live_count++;
    *out = at;
    return KEEL_OK;
}

keel_status_t keel_auth_attempt_begin(keel_auth_t *a, keel_auth_kind_t kind, const keel_auth_request_t *req,
                                      const char *source, int64_t now, keel_auth_attempt_t **out,
                                      keel_auth_result_t *res)
{
    if (out != NULL)
        *out = NULL;
    if (res != NULL)
        memset(res, 0, sizeof *res);
    if (a == NULL || req == NULL || source == NULL || out == NULL || res == NULL)
        return keel_errorf(KEEL_ERR_ARG, "auth attempt: missing argument");
    if (kind != KEEL_AUTH_LOGIN && kind != KEEL_AUTH_CHANGE && kind != KEEL_AUTH_REAUTH)
        return keel_errorf(KEEL_ERR_ARG, "auth attempt: unknown kind %d", (int)kind);
    size_t slen = strnlen(source, KEEL_AUTH_SOURCE_MAX);
    if (slen == 0 || slen == KEEL_AUTH_SOURCE_MAX)
        return keel_errorf(KEEL_ERR_ARG, "auth attempt: the source must be 1..%d bytes", KEEL_AUTH_SOURCE_MAX - 1);

    uint8_t session_hash[KEEL_SHA256_LEN] = {0};
    screen(a, kind, req, now, session_hash, res);
    if (res->outcome != KEEL_AUTH_OK)
        return KEEL_OK;

    /* One attempt in flight per source: otherwise a clean source could start
     * many before the first failure is recorded. */
    if (a->live_count >= AUTH_PENDING_MAX || source_busy(a, source)) {
        res->outcome = KEEL_AUTH_THROTTLED;
        res->retry_after = 1;
        return KEEL_OK;
    }
    uint32_t wait = 0;
    keel_status_t st = auth_throttle_admit(a, source, now, &wait);
    if (st != KEEL_OK)
        return st;
    if (wait > 0) {
        res->outcome = KEEL_AUTH_THROTTLED;
        res->retry_after = wait;
        return KEEL_OK;
    }
    return attempt_new(a, kind, req, source, session_hash, out);
}

void keel_auth_attempt_run(keel_auth_attempt_t *at)
{
    if (at == NULL)
        return;
    at->verify_st = keel_password_verify(at->hash, at->pw, at->pw_len);
    at->hash_st = KEEL_ERR_VERIFY;
    if (at->kind == KEEL_AUTH_CHANGE && at->verify_st == KEEL_OK)
        at->hash_st = keel_password_hash(at->new_pw, at->new_len, &at->argon2, at->new_hash);
    keel_wipe(at->pw, sizeof at->pw);
    keel_wipe(at->new_pw, sizeof at->new_pw);
    at->ran = true;
}

/* The verified request's effect. */
static keel_status_t apply(keel_auth_t *a, keel_auth_attempt_t *at, int64_t now, keel_auth_result_t *res)
{
    if (at->kind == KEEL_AUTH_LOGIN)
        return auth_session_new(a, now, !a->has_set, res);
    if (auth_session_find(a, at->session_hash, now) < 0) {
        res->outcome = KEEL_AUTH_NO_SESSION;
        return KEEL_OK;
    }
    if (at->kind == KEEL_AUTH_REAUTH)
        return KEEL_OK;
    if (at->hash_st != KEEL_OK)
        return keel_errorf(at->hash_st, "auth: hashing the new password failed");
    keel_status_t st = keel_vault_secret_put(a->v, AUTH_SECRET_HASH, at->new_hash, strlen(at->new_hash));
    if (st != KEEL_OK)
        return st;
    memcpy(a->set_hash, at->new_hash, sizeof a->set_hash);
    a->has_set = true;
    a->generation++;
    keel_auth_sessions_end_all(a);
    keel_log(KEEL_LOG_INFO, "auth: the administrator password was changed; all sessions ended");
    return KEEL_OK;
}

keel_status_t keel_auth_attempt_finish(keel_auth_t *a, keel_auth_attempt_t *at, int64_t now,
                                       keel_auth_result_t *res)
{
    keel_status_t st = KEEL_OK;
    if (res != NULL)
        memset(res, 0, sizeof *res);
    if (a == NULL || at == NULL || res == NULL || at->owner != a)
        st = keel_errorf(KEEL_ERR_ARG, "auth attempt finish: missing argument or attempt of another account");
    else if (!at->ran)
        st = keel_errorf(KEEL_ERR_ARG, "auth attempt finish: the attempt was not run");
    else if (at->verify_st != KEEL_OK && at->verify_st != KEEL_ERR_VERIFY)
        st = keel_errorf(at->verify_st, "auth: the stored password hash cannot be used");
    if (st != KEEL_OK) {
        if (res != NULL)
            res->outcome = KEEL_AUTH_DENIED;
        keel_auth_attempt_free(at);
        return st;
    }
    bool verified = at->user_ok && at->verify_st == KEEL_OK;
    res->outcome = KEEL_AUTH_DENIED;
    if (at->generation != a->generation) {
        /* Checked against a password that has since been replaced. */
    } else if (!verified) {
        a->failures++;
        st = auth_throttle_fail(a, at->source, now);
    } else {
        res->outcome = KEEL_AUTH_OK;
        st = auth_throttle_clear(a, at->source);
        if (st == KEEL_OK)
            st = apply(a, at, now, res);
    }
    if (st != KEEL_OK) {
        keel_wipe(res, sizeof *res);
        res->outcome = KEEL_AUTH_DENIED;
    }
    keel_auth_attempt_free(at);
    return st;
}

uint64_t keel_auth_failures(const keel_auth_t *a)
{
    return a != NULL ? a->failures : 0;
}

keel_status_t keel_auth_reset(keel_auth_t *a)
{
    if (a == NULL)
        return keel_errorf(KEEL_ERR_ARG, "auth reset: missing argument");
    keel_status_t st = keel_vault_secret_delete(a->v, AUTH_SECRET_HASH);
    if (st == KEEL_ERR_NOT_FOUND) { /* a crypto-erase took it already */
        keel_error_clear();
        st = KEEL_OK;
    }
    /* The set password leaves memory whatever the vault said: a reset the
     * owner asked for must not leave the old password logging in (a vault
     * left half-erased finishes its erase when it is opened next). */
    keel_wipe(a->set_hash, sizeof a->set_hash);
    a->has_set = false;
    keel_status_t tst = auth_throttle_reset(a);
    if (st == KEEL_OK)
        st = tst;
    /* Sessions end and attempts in flight go stale whatever happened. */
    a->generation++;
    keel_auth_sessions_end_all(a);
    return st;
}

keel_status_t keel_auth_source_from_addr(const struct sockaddr *sa, const struct sockaddr *local,
                                        char out[KEEL_AUTH_SOURCE_MAX])
{
    if (sa == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "auth source: missing argument");
    out[0] = '\0';
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in4;
        memcpy(&in4, sa, sizeof in4);
        if (inet_ntop(AF_INET, &in4.sin_addr, out, KEEL_AUTH_SOURCE_MAX) == NULL)
            return keel_errorf(KEEL_ERR_FORMAT, "auth source: unprintable IPv4 address");
        return KEEL_OK;
    }
    if (sa->sa_family != AF_INET6)
        return keel_errorf(KEEL_ERR_ARG, "auth source: address family %d is not IP", (int)sa->sa_family);
    struct sockaddr_in6 in6;
    memcpy(&in6, sa, sizeof in6);
    if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
        struct in_addr in4;
        memcpy(&in4, &in6.sin6_addr.s6_addr[12], sizeof in4);
        if (inet_ntop(AF_INET, &in4, out, KEEL_AUTH_SOURCE_MAX) == NULL)
            return keel_errorf(KEEL_ERR_FORMAT, "auth source: unprintable IPv4 address");
        return KEEL_OK;
    }
    /* A remote host usually holds a whole /64, so that is one source. But
     * the device's own LAN is one /64 for every host on it: there (link-local
     * fe80::/10, unique-local fc00::/7, or the /64 of the device's own
     * address) each address is its own source, or one neighbour's failures
     * would throttle the owner's phone too. */
    const uint8_t *a = in6.sin6_addr.s6_addr;
    bool on_link = (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) || (a[0] & 0xfe) == 0xfc;
    if (!on_link && local != NULL && local->sa_family == AF_INET6) {
        struct sockaddr_in6 l6;
        memcpy(&l6, local, sizeof l6);
        on_link = memcmp(a, l6.sin6_addr.s6_addr, 8) == 0;
    }
    char text[INET6_ADDRSTRLEN];
    if (!on_link)
        memset(&in6.sin6_addr.s6_addr[8], 0, 8);
    if (inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text) == NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "auth source: unprintable IPv6 address");
    return on_link ? keel_strlcpy(out, text, KEEL_AUTH_SOURCE_MAX)
                   : keel_snprintf(out, KEEL_AUTH_SOURCE_MAX, "%s/64", text);
}

/*
 * What each route of docs/api.md does. Runs on the loop thread; password
 * checks and installs go to worker threads and answer when they are done.
 */
#define _GNU_SOURCE
#include "internal.h"

#include "ui_assets.h"

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define API_PREFIX "/api/v1/"
#define COOKIE_NAME "keel_session"
#define COOKIE_MAX 4096
#define STAGED_NAME "staged.kb"
#define SETTINGS_SECRET "settings.update"
#define SETTINGS_MAX 256
#define USER_MAX 64
/* The export lists at most this many pending outbox messages (each up to
 * KEEL_OUTBOX_ENVELOPE_MAX): the answer stays bounded. */
#define EXPORT_OUTBOX_MAX 256

/* ---- small helpers -------------------------------------------------------- */

static bool method_is(struct evhttp_request *req, enum evhttp_cmd_type m)
{
    return evhttp_request_get_command(req) == m;
}

static void reply_internal(struct evhttp_request *req, const char *what)
{
    keel_log(KEEL_LOG_ERROR, "api: %s: %s", what, keel_error_message());
    api_error(req, 500, "internal", NULL);
}

static void reply_throttled(struct evhttp_request *req, uint32_t retry_after)
{
    char v[16];
    snprintf(v, sizeof v, "%" PRIu32, retry_after > 0 ? retry_after : 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", v);
    json_t *j = json_pack("{s:s,s:I}", "error", "too_many_attempts", "retry_after",
                          (json_int_t)(retry_after > 0 ? retry_after : 1));
    api_reply(req, 429, j);
}

/* The request body as one contiguous string, wiped by body_wipe. */
typedef struct {
    char *data;
    size_t len;
    struct evbuffer *buf;
} body_t;

static void body_get(struct evhttp_request *req, body_t *b)
{
    b->buf = evhttp_request_get_input_buffer(req);
    b->len = evbuffer_get_length(b->buf);
    b->data = b->len > 0 ? (char *)evbuffer_pullup(b->buf, -1) : NULL;
    if (b->data == NULL)
        b->len = 0;
}

/* Passwords arrive in bodies: the bytes are wiped where evhttp keeps them. */
static void body_wipe(body_t *b)
{
    if (b->data != NULL)
        keel_wipe(b->data, b->len);
    b->data = NULL;
}

static bool content_type_is(struct evhttp_request *req, const char *want)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (ct == NULL)
        return false;
    size_t n = strlen(want);
    return strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Parses a JSON body; on failure answers the request and returns false. */
static bool json_body(struct evhttp_request *req, body_t *b, const api_json_field_t *f, size_t n, json_t **out)
{
    if (!content_type_is(req, "application/json")) {
        api_error(req, 415, "unsupported_media_type", "send application/json");
        return false;
    }
    if (b->len > KEEL_API_JSON_MAX) {
        api_error(req, 413, "too_large", NULL);
        return false;
    }
    keel_status_t st = api_json_parse(b->len > 0 ? b->data : "", b->len, f, n, out);
    if (st != KEEL_OK) {
        api_error(req, st == KEEL_ERR_TOO_LARGE ? 413 : 400, st == KEEL_ERR_TOO_LARGE ? "too_large" : "bad_request",
                  keel_error_message());
        return false;
    }
    return true;
}

/* jansson frees strings without wiping them; the password fields are wiped first. */
static void json_wipe_free(json_t *j)
{
    const char *key;
    json_t *v;
    if (j == NULL)
        return;
    json_object_foreach(j, key, v) {
        if (json_is_string(v))
            keel_wipe((char *)json_string_value(v), json_string_length(v));
    }
    json_decref(j);
}

/* ---- sessions ---------------------------------------------------------------- */

typedef enum { SESS_NONE, SESS_OK, SESS_CSRF } sess_state_t;

typedef struct {
    sess_state_t state;
    bool must_change;
    bool via_cookie;
    char token[KEEL_AUTH_TOKEN_LEN + 1];
} session_t;

static bool token_chars_ok(const char *s, size_t n)
{
    if (n != KEEL_AUTH_TOKEN_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

bool api_cookie_token(const char *cookie, char out[KEEL_AUTH_TOKEN_LEN + 1])
{
    if (cookie == NULL || strlen(cookie) > COOKIE_MAX)
        return false;
    const char *p = cookie;
    while (*p != '\0') {
        while (*p == ' ' || *p == ';')
            p++;
        const char *eq = strchr(p, '=');
        if (eq == NULL)
            return false;
        const char *end = strchr(eq, ';');
        size_t vlen = end != NULL ? (size_t)(end - eq - 1) : strlen(eq + 1);
        if ((size_t)(eq - p) == strlen(COOKIE_NAME) && strncmp(p, COOKIE_NAME, strlen(COOKIE_NAME)) == 0) {
            if (!token_chars_ok(eq + 1, vlen))
                return false;
            memcpy(out, eq + 1, vlen);
            out[vlen] = '\0';
            return true;
        }
        if (end == NULL)
            break;
        p = end + 1;
    }
    return false;
}

static void session_of(keel_api_t *api, struct evhttp_request *req, session_t *s)
{
    memset(s, 0, sizeof *s);
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const char *auth = evhttp_find_header(h, "Authorization");
    if (auth != NULL) {
        if (strncmp(auth, "Bearer ", 7) != 0 || !token_chars_ok(auth + 7, strlen(auth + 7)))
            return;
        memcpy(s->token, auth + 7, KEEL_AUTH_TOKEN_LEN + 1);
    } else if (api_cookie_token(evhttp_find_header(h, "Cookie"), s->token)) {
        s->via_cookie = true;
    } else {
        return;
    }
    char csrf[KEEL_AUTH_TOKEN_LEN + 1];
    if (keel_auth_session_check(api->c.auth, s->token, api_wallclock(), &s->must_change, csrf) != KEEL_OK) {
        keel_error_clear();
        keel_wipe(s->token, sizeof s->token);
        return;
    }
    s->state = SESS_OK;
    /* A cookie comes with every request the browser makes, whoever asks:
     * changing requests must also prove they come from our page (5.5-1). */
    if (s->via_cookie && !method_is(req, EVHTTP_REQ_GET) && !method_is(req, EVHTTP_REQ_HEAD)) {
        const char *sent = evhttp_find_header(h, "X-CSRF-Token");
        if (sent == NULL || strlen(sent) != KEEL_AUTH_TOKEN_LEN || !keel_ct_equal(sent, csrf, KEEL_AUTH_TOKEN_LEN))
            s->state = SESS_CSRF;
    }
    keel_wipe(csrf, sizeof csrf);
}

/* The gate of every route but status and login. Answers and returns false
 * when the request may not go on. `during_change`: allowed while the label
 * password is still in force. */
static bool require_session(keel_api_t *api, struct evhttp_request *req, session_t *s, bool during_change)
{
    session_of(api, req, s);
    if (s->state == SESS_NONE) {
        api_error(req, 401, "unauthorized", NULL);
        return false;
    }
    if (s->state == SESS_CSRF) {
        api_error(req, 403, "csrf_failed", NULL);
        return false;
    }
    if (s->must_change && !during_change) {
        api_error(req, 403, "password_change_required", "set a new password first (POST /api/v1/password)");
        return false;
    }
    return true;
}

/* The gate of a read-only route: a session, and GET. */
static bool require_session_get(keel_api_t *api, struct evhttp_request *req)
{
    session_t s;
    if (!require_session(api, req, &s, false))
        return false;
    if (!method_is(req, EVHTTP_REQ_GET)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return false;
    }
    return true;
}

static void set_cookie(struct evhttp_request *req, const char *token, uint32_t max_age)
{
    char v[160];
    if (token != NULL)
        snprintf(v, sizeof v, COOKIE_NAME "=%s; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=%" PRIu32,
                 token, max_age);
    else
        snprintf(v, sizeof v, COOKIE_NAME "=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Set-Cookie", v);
    keel_wipe(v, sizeof v);
}

/* ---- password attempts on the workers ---------------------------------------- */

typedef struct {
    keel_job_t job;
    keel_api_t *api;
    struct evhttp_request *req;
    keel_auth_attempt_t *at;
    keel_auth_kind_t kind;
} hash_job_t;

static void hash_run(keel_job_t *job)
{
    keel_auth_attempt_run(((hash_job_t *)job)->at);
}

static void factory_reset(keel_api_t *api, struct evhttp_request *req);

static void hash_done(keel_job_t *job)
{
    hash_job_t *h = (hash_job_t *)job;
    keel_api_t *api = h->api;
    struct evhttp_request *req = h->req;
    if (job->cancelled) {
        if (h->kind == KEEL_AUTH_REAUTH)
            api->reset_pending = false;
        keel_auth_attempt_free(h->at);
        free(h);
        api_error(req, 503, "unavailable", NULL);
        return;
    }
    keel_auth_result_t res;
    keel_status_t st = keel_auth_attempt_finish(api->c.auth, h->at, api_wallclock(), &res);
    keel_auth_kind_t kind = h->kind;
    free(h);
    if (kind == KEEL_AUTH_REAUTH)
        api->reset_pending = false;
    if (st != KEEL_OK) {
        reply_internal(req, "password check");
    } else if (res.outcome == KEEL_AUTH_DENIED) {
        keel_log(KEEL_LOG_INFO, "api: a password check failed");
        api_error(req, 401, "unauthorized", NULL);
    } else if (res.outcome == KEEL_AUTH_THROTTLED) {
        reply_throttled(req, res.retry_after);
    } else if (res.outcome == KEEL_AUTH_NO_SESSION) {
        api_error(req, 401, "unauthorized", NULL); /* the session ended while the password was hashed */
    } else if (res.outcome != KEEL_AUTH_OK) {
        api_error(req, 400, "bad_request", NULL);
    } else if (kind == KEEL_AUTH_LOGIN) {
        uint32_t max_age = (uint32_t)keel_config_uint(api->c.cfg, "auth", "session_max");
        set_cookie(req, res.token, max_age);
        json_t *j = json_pack("{s:s,s:s,s:b,s:I}", "token", res.token, "csrf", res.csrf, "must_change_password",
                              res.must_change, "expires", (json_int_t)res.expires);
        keel_log(KEEL_LOG_INFO, "api: administrator logged in%s", res.must_change ? " (label password)" : "");
        api_reply(req, 200, j);
    } else if (kind == KEEL_AUTH_CHANGE) {
        set_cookie(req, NULL, 0);
        api_reply(req, 204, NULL);
    } else if (api->update_state == UPDATE_INSTALLING) {
        api_error(req, 409, "conflict", "an install is running; reset when it is done");
    } else {
        factory_reset(api, req);
    }
    keel_wipe(&res, sizeof res);
}

/* Starts a password attempt; answers at once and returns false when it
 * cannot start. */
static bool attempt(keel_api_t *api, struct evhttp_request *req, keel_auth_kind_t kind, const keel_auth_request_t *ar)
{
    char source[KEEL_AUTH_SOURCE_MAX];
    if (api_source(req, source) != KEEL_OK) {
        api_error(req, 400, "bad_request", NULL);
        return false;
    }
    if (api->stopping) {
        api_error(req, 503, "unavailable", "the device is restarting");
        return false;
    }
    /* Every hashing slot taken: come back in a second. Checked before the
     * throttle, so a refusal here spends none of its budget. */
    if (keel_workers_full(api->hashers)) {
        reply_throttled(req, 1);
        return false;
    }
    keel_auth_attempt_t *at = NULL;
    keel_auth_result_t res;
    keel_status_t st = keel_auth_attempt_begin(api->c.auth, kind, ar, source, api_wallclock(), &at, &res);
    if (st != KEEL_OK) {
        reply_internal(req, "password check");
        return false;
    }
    switch (res.outcome) {
    case KEEL_AUTH_OK: break;
    case KEEL_AUTH_THROTTLED:
        keel_log(KEEL_LOG_INFO, "api: password attempt from %s throttled for %" PRIu32 " s", source, res.retry_after);
        reply_throttled(req, res.retry_after);
        return false;
    case KEEL_AUTH_POLICY: {
        json_t *j = json_pack("{s:s,s:s,s:s}", "error", "password_policy", "reason", res.code ? res.code : "policy",
                              "message", res.why);
        api_reply(req, 422, j);
        return false;
    }
    case KEEL_AUTH_NO_SESSION: api_error(req, 401, "unauthorized", NULL); return false;
    default: api_error(req, 400, "bad_request", NULL); return false;
    }
    hash_job_t *h = calloc(1, sizeof *h);
    if (h == NULL) {
        keel_auth_attempt_free(at);
        api_error(req, 500, "internal", NULL);
        return false;
    }
    h->job.run = hash_run;
    h->job.done = hash_done;
    h->api = api;
    h->req = req;
    h->at = at;
    h->kind = kind;
    if (keel_workers_submit(api->hashers, &h->job) != KEEL_OK) {
        keel_error_clear(); /* checked above; only a stopping pool gets here */
        keel_auth_attempt_free(at);
        free(h);
        api_error(req, 503, "unavailable", NULL);
        return false;
    }
    api_conn_t *c = api_conn_of(req);
    if (c != NULL)
        c->busy = true;
    return true;
}

/* ---- routes: status, session, password ------------------------------------------ */

static void route_status(keel_api_t *api, struct evhttp_request *req)
{
    if (!method_is(req, EVHTTP_REQ_GET)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    json_t *j = json_pack("{s:s,s:b}", "model", keel_config_str(api->c.cfg, "device", "model"), "setup_required",
                          keel_auth_must_change(api->c.auth));
    api_reply(req, 200, j);
}

static void route_session(keel_api_t *api, struct evhttp_request *req)
{
    if (method_is(req, EVHTTP_REQ_DELETE)) {
        session_t s;
        if (!require_session(api, req, &s, true))
            return;
        keel_auth_session_end(api->c.auth, s.token);
        keel_wipe(&s, sizeof s);
        set_cookie(req, NULL, 0);
        api_reply(req, 204, NULL);
        return;
    }
    if (!method_is(req, EVHTTP_REQ_POST)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    static const api_json_field_t f[] = {
        {"username", API_JSON_STRING, true, USER_MAX},
        {"password", API_JSON_STRING, true, KEEL_AUTH_PASSWORD_MAX},
    };
    body_t b;
    json_t *j = NULL;
    body_get(req, &b);
    bool ok = json_body(req, &b, f, sizeof f / sizeof f[0], &j);
    body_wipe(&b);
    if (!ok)
        return;
    json_t *pw = json_object_get(j, "password");
    keel_auth_request_t ar = {
        .user = json_string_value(json_object_get(j, "username")),
        .password = json_string_value(pw),
        .password_len = json_string_length(pw),
    };
    attempt(api, req, KEEL_AUTH_LOGIN, &ar);
    json_wipe_free(j);
}

/* A POST that carries a password in its body and needs a session: the body
 * is wiped if the request goes no further. */
static bool password_post(keel_api_t *api, struct evhttp_request *req, session_t *s, body_t *b, bool during_change)
{
    body_get(req, b);
    if (!method_is(req, EVHTTP_REQ_POST)) {
        body_wipe(b);
        api_error(req, 405, "method_not_allowed", NULL);
        return false;
    }
    if (!require_session(api, req, s, during_change)) {
        body_wipe(b);
        return false;
    }
    return true;
}

static void route_password(keel_api_t *api, struct evhttp_request *req)
{
    session_t s;
    body_t b;
    if (!password_post(api, req, &s, &b, true))
        return;
    static const api_json_field_t f[] = {
        {"current", API_JSON_STRING, true, KEEL_AUTH_PASSWORD_MAX},
        {"new", API_JSON_STRING, true, 4 * KEEL_AUTH_PASSWORD_MAX},
    };
    json_t *j = NULL;
    bool ok = json_body(req, &b, f, sizeof f / sizeof f[0], &j);
    body_wipe(&b);
    if (ok) {
        json_t *cur = json_object_get(j, "current"), *nw = json_object_get(j, "new");
        keel_auth_request_t ar = {
            .password = json_string_value(cur),
            .password_len = json_string_length(cur),
            .new_password = json_string_value(nw),
            .new_password_len = json_string_length(nw),
            .token = s.token,
        };
        attempt(api, req, KEEL_AUTH_CHANGE, &ar);
        json_wipe_free(j);
    }
    keel_wipe(&s, sizeof s);
}

/* ---- the device and its update state ------------------------------------------------ */

/* The slot running now: the one booted, else the last confirmed one. */
static int running_slot(const keel_bootstate_t *bs)
{
    if (bs->booted == 0 || bs->booted == 1)
        return bs->booted;
    return bs->active == 0 || bs->active == 1 ? bs->active : KEEL_SLOT_NONE;
}

/* The boot state now, or as last seen while an install owns the slots. */
static keel_status_t boot_state(keel_api_t *api, keel_bootstate_t *bs)
{
    if (api->c.slots == NULL)
        return keel_errorf(KEEL_ERR_IO, "the update slots could not be opened again after a factory reset");
    if (api->update_state == UPDATE_INSTALLING) {
        *bs = api->bs_snapshot;
        return KEEL_OK;
    }
    keel_status_t st = keel_slots_state(api->c.slots, bs);
    if (st == KEEL_ERR_FORMAT || st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        st = KEEL_OK; /* a fresh state, as keel boot would see it */
    }
    if (st == KEEL_OK)
        api->bs_snapshot = *bs;
    return st;
}

static void today(char out[11])
{
    time_t t = time(NULL);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, 11, "%Y-%m-%d", &tm) != 10)
        snprintf(out, 11, "9999-12-31");
}

static json_t *tamper_json(const keel_bootstate_t *bs)
{
    if (!bs->tamper)
        return json_null();
    return json_pack("{s:s,s:I}", "detail", bs->tamper_detail, "time", (json_int_t)bs->tamper_time);
}

static void route_device(keel_api_t *api, struct evhttp_request *req)
{
    if (!require_session_get(api, req))
        return;
    keel_bootstate_t bs;
    if (boot_state(api, &bs) != KEEL_OK) {
        reply_internal(req, "boot state");
        return;
    }
    int slot = running_slot(&bs);
    json_t *fw = json_null(), *sv = json_null(), *until = json_null(), *expired = json_null();
    keel_manifest_t m;
    memset(&m, 0, sizeof m);
    if (slot != KEEL_SLOT_NONE) {
        fw = json_string(bs.version[slot]);
        sv = json_integer(bs.security_version[slot]);
        if (api->update_state != UPDATE_INSTALLING && keel_slots_manifest(api->c.slots, slot, &m) == KEEL_OK) {
            char now[11];
            today(now);
            until = json_string(m.support_until);
            expired = json_boolean(strcmp(now, m.support_until) > 0);
            keel_manifest_free(&m);
        } else {
            keel_error_clear();
        }
    }
    const keel_config_t *c = api->c.cfg;
    json_t *j = json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:s,s:o}", "id", keel_config_str(c, "device", "id"),
                          "serial", keel_config_str(c, "device", "serial") ? keel_config_str(c, "device", "serial") : "",
                          "model", keel_config_str(c, "device", "model"), "firmware_version", fw, "security_version",
                          sv, "support_until", until, "support_expired", expired, "certificate_sha256",
                          api->fingerprint, "tamper_alert", tamper_json(&bs));
    api_reply(req, 200, j);
}

/* ---- settings (the update policy, 5.3-2, 5.3-6A) ------------------------------------ */

typedef struct {
    bool automatic, notifications;
    char postpone_until[11]; /* "" when none */
} settings_t;

static keel_status_t settings_load(keel_api_t *api, settings_t *s)
{
    const keel_config_t *c = api->update_defaults;
    s->automatic = keel_config_bool(c, "update", "automatic") != 0;
    s->notifications = keel_config_bool(c, "update", "notifications") != 0;
    const char *pu = keel_config_str(c, "update", "postpone_until");
    snprintf(s->postpone_until, sizeof s->postpone_until, "%s", pu != NULL ? pu : "");
    uint8_t buf[SETTINGS_MAX];
    size_t n = 0;
    keel_status_t st = keel_vault_secret_get(api->c.vault, SETTINGS_SECRET, buf, sizeof buf, &n);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        return KEEL_OK; /* the owner has not chosen: the configuration's defaults */
    }
    if (st != KEEL_OK)
        return st;
    json_error_t e;
    json_t *j = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &e);
    json_t *a = json_object_get(j, "automatic"), *no = json_object_get(j, "notifications"),
           *p = json_object_get(j, "postpone_until");
    if (!json_is_boolean(a) || !json_is_boolean(no) || !(json_is_null(p) || json_is_string(p))) {
        json_decref(j);
        return keel_errorf(KEEL_ERR_FORMAT, "the stored settings are malformed");
    }
    s->automatic = json_is_true(a);
    s->notifications = json_is_true(no);
    snprintf(s->postpone_until, sizeof s->postpone_until, "%s", json_is_string(p) ? json_string_value(p) : "");
    json_decref(j);
    return KEEL_OK;
}

static json_t *settings_json(const settings_t *s)
{
    return json_pack("{s:b,s:b,s:o}", "automatic_updates", s->automatic, "notifications", s->notifications,
                     "postpone_until", s->postpone_until[0] ? json_string(s->postpone_until) : json_null());
}

static void route_settings(keel_api_t *api, struct evhttp_request *req)
{
    session_t s;
    if (!require_session(api, req, &s, false))
        return;
    settings_t cur;
    if (!method_is(req, EVHTTP_REQ_GET) && !method_is(req, EVHTTP_REQ_PUT)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    if (settings_load(api, &cur) != KEEL_OK) {
        reply_internal(req, "settings");
        return;
    }
    if (method_is(req, EVHTTP_REQ_PUT)) {
        static const api_json_field_t f[] = {
            {"automatic_updates", API_JSON_BOOL, false, 0},
            {"notifications", API_JSON_BOOL, false, 0},
            {"postpone_until", API_JSON_STRING_OR_NULL, false, 10},
        };
        body_t b;
        json_t *j = NULL;
        body_get(req, &b);
        if (!json_body(req, &b, f, sizeof f / sizeof f[0], &j))
            return;
        json_t *a = json_object_get(j, "automatic_updates"), *n = json_object_get(j, "notifications"),
               *p = json_object_get(j, "postpone_until");
        if (p != NULL && json_is_string(p) && !keel_date_ok(json_string_value(p))) {
            json_decref(j);
            api_error(req, 400, "bad_request", "postpone_until must be a date YYYY-MM-DD");
            return;
        }
        if (a != NULL)
            cur.automatic = json_is_true(a);
        if (n != NULL)
            cur.notifications = json_is_true(n);
        if (p != NULL)
            snprintf(cur.postpone_until, sizeof cur.postpone_until, "%s", json_is_string(p) ? json_string_value(p) : "");
        json_decref(j);
        /* The stored form uses the names settings_load reads. */
        json_t *stored = json_pack("{s:b,s:b,s:o}", "automatic", cur.automatic, "notifications", cur.notifications,
                                   "postpone_until", cur.postpone_until[0] ? json_string(cur.postpone_until) : json_null());
        char *st_text = stored != NULL ? json_dumps(stored, JSON_COMPACT) : NULL;
        json_decref(stored);
        keel_status_t st = st_text != NULL ? keel_vault_secret_put(api->c.vault, SETTINGS_SECRET, st_text, strlen(st_text))
                                           : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        free(st_text);
        if (st != KEEL_OK) {
            reply_internal(req, "settings");
            return;
        }
        keel_log(KEEL_LOG_INFO, "api: update settings changed: automatic %s, notifications %s, postpone until %s",
                 cur.automatic ? "on" : "off", cur.notifications ? "on" : "off",
                 cur.postpone_until[0] ? cur.postpone_until : "-");
    }
    api_reply(req, 200, settings_json(&cur));
}

/* ---- update: status, upload, stage, apply ------------------------------------------- */

static const char *update_state_name(api_update_state_t s)
{
    switch (s) {
    case UPDATE_UPLOADING: return "uploading";
    case UPDATE_STAGED: return "staged";
    case UPDATE_INSTALLING: return "installing";
    case UPDATE_INSTALLED: return "installed";
    default: return "idle";
    }
}

static json_t *slot_json(const keel_bootstate_t *bs, int slot)
{
    if (slot != 0 && slot != 1)
        return json_null();
    char name[2] = {keel_slot_name(slot), '\0'};
    return json_pack("{s:s,s:s,s:I}", "slot", name, "version", bs->version[slot], "security_version",
                     (json_int_t)bs->security_version[slot]);
}

static json_t *staged_json(keel_api_t *api, uint32_t counter, const keel_bootstate_t *bs)
{
    if (!api->staged_valid)
        return json_null();
    const keel_manifest_t *m = &api->staged;
    char fixes[KEEL_BUNDLE_FIXES_MAX * 66 + 1] = "";
    size_t off = 0;
    for (unsigned i = 0; i < m->n_fixes && off < sizeof fixes; i++) {
        int n = snprintf(fixes + off, sizeof fixes - off, "%s%s", i ? ", " : "", m->security_fixes[i]);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    int run = running_slot(bs);
    uint32_t running_sv = run != KEEL_SLOT_NONE ? bs->security_version[run] : 0;
    bool required = m->security_version > counter && m->security_version > running_sv;
    return json_pack("{s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:b,s:I,s:b,s:I}", "kind",
                     m->kind == KEEL_BUNDLE_TRUST ? "trust" : "image", "version", m->version, "security_version",
                     (json_int_t)m->security_version, "support_until", m->support_until, "security_fixes", fixes,
                     "notes", m->notes, "risk", m->risk, "disruptive", m->disruptive, "downtime_seconds",
                     (json_int_t)m->downtime_seconds, "security_update_required", required, "size",
                     (json_int_t)m->payload_size);
}

static void route_update_status(keel_api_t *api, struct evhttp_request *req)
{
    keel_bootstate_t bs;
    uint32_t counter = 0;
    if (boot_state(api, &bs) != KEEL_OK) {
        reply_internal(req, "boot state");
        return;
    }
    if (api->update_state != UPDATE_INSTALLING && keel_slots_counter(api->c.slots, &counter) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "api: the anti-rollback counter cannot be read: %s", keel_error_message());
        keel_error_clear();
    }
    int pending = bs.pending == 0 || bs.pending == 1 ? bs.pending : KEEL_SLOT_NONE;
    json_t *pj = pending != KEEL_SLOT_NONE ? slot_json(&bs, pending) : json_null();
    if (pending != KEEL_SLOT_NONE && json_is_object(pj))
        json_object_set_new(pj, "tries_left", json_integer(bs.tries_left));
    json_t *j = json_pack("{s:s,s:o,s:o,s:I,s:o,s:o,s:o,s:I}", "state", update_state_name(api->update_state),
                          "running", slot_json(&bs, running_slot(&bs)), "pending", pj, "counter", (json_int_t)counter,
                          "tamper_alert", tamper_json(&bs), "staged", staged_json(api, counter, &bs), "last_error",
                          api->last_error[0] ? json_string(api->last_error) : json_null(), "received",
                          (json_int_t)api->upload_bytes);
    api_reply(req, 200, j);
}

static keel_status_t staged_path(keel_api_t *api)
{
    if (api->staged_path[0] != '\0')
        return KEEL_OK;
    char dir[KEEL_PATH_MAX];
    keel_status_t st = keel_config_path(api->c.cfg, "update", "dir", dir);
    return st == KEEL_OK ? keel_path_join(api->staged_path, sizeof api->staged_path, dir, STAGED_NAME) : st;
}

static void staged_drop(keel_api_t *api)
{
    if (api->upload_fd >= 0)
        close(api->upload_fd);
    api->upload_fd = -1;
    api->upload_bytes = 0;
    if (api->staged_valid)
        keel_manifest_free(&api->staged);
    api->staged_valid = false;
    if (api->staged_path[0] != '\0' && unlink(api->staged_path) != 0 && errno != ENOENT)
        keel_log(KEEL_LOG_WARN, "api: remove %s: %s", api->staged_path, strerror(errno));
    api->update_state = UPDATE_IDLE;
}

static bool query_offset(struct evhttp_request *req, uint64_t *off)
{
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *q = u != NULL ? evhttp_uri_get_query(u) : NULL;
    struct evkeyvalq kv = {NULL, &kv.tqh_first};
    if (q == NULL || evhttp_parse_query_str(q, &kv) != 0) {
        evhttp_clear_headers(&kv);
        return false;
    }
    const char *v = evhttp_find_header(&kv, "offset");
    bool ok = v != NULL && v[0] >= '0' && v[0] <= '9' && strlen(v) <= 20;
    char *end = NULL;
    errno = 0;
    unsigned long long n = ok ? strtoull(v, &end, 10) : 0;
    ok = ok && errno == 0 && end != NULL && *end == '\0';
    evhttp_clear_headers(&kv);
    *off = n;
    return ok;
}

static void route_update_bundle(keel_api_t *api, struct evhttp_request *req)
{
    if (!method_is(req, EVHTTP_REQ_PUT)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    if (!content_type_is(req, "application/octet-stream")) {
        api_error(req, 415, "unsupported_media_type", "send application/octet-stream");
        return;
    }
    uint64_t off = 0;
    if (!query_offset(req, &off)) {
        api_error(req, 400, "bad_request", "offset=N is required");
        return;
    }
    if (api->update_state == UPDATE_INSTALLING) {
        api_error(req, 409, "conflict", "an install is running");
        return;
    }
    if (off == 0) {
        staged_drop(api);
        if (staged_path(api) != KEEL_OK) {
            reply_internal(req, "staging path");
            return;
        }
        api->upload_fd = open(api->staged_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (api->upload_fd < 0) {
            keel_errorf(KEEL_ERR_IO, "open %s: %s", api->staged_path, strerror(errno));
            reply_internal(req, "upload");
            return;
        }
        api->update_state = UPDATE_UPLOADING;
        api->last_error[0] = '\0';
    } else if (api->upload_fd < 0 || off != api->upload_bytes) {
        json_t *j = json_pack("{s:s,s:I}", "error", "conflict", "received", (json_int_t)api->upload_bytes);
        api_reply(req, 409, j);
        return;
    }
    body_t b;
    body_get(req, &b);
    if (b.len > KEEL_API_JSON_MAX) {
        api_error(req, 413, "too_large", "upload pieces are at most 64 KiB");
        return;
    }
    if (api->upload_bytes + b.len > api->limits.upload_max) {
        staged_drop(api);
        api_error(req, 413, "too_large", "the bundle is over [api] upload_max");
        return;
    }
    size_t done = 0;
    while (done < b.len) {
        ssize_t n = write(api->upload_fd, b.data + done, b.len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            keel_errorf(KEEL_ERR_IO, "write %s: %s", api->staged_path, n < 0 ? strerror(errno) : "no progress");
            staged_drop(api);
            reply_internal(req, "upload");
            return;
        }
        done += (size_t)n;
    }
    api->upload_bytes += b.len;
    api_reply(req, 200, json_pack("{s:I}", "received", (json_int_t)api->upload_bytes));
}

static ssize_t read_fd(void *ctx, void *buf, size_t n)
{
    int fd = *(int *)ctx;
    ssize_t r;
    do
        r = read(fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r;
}

/* A POST whose body must be {} (an action without parameters); answers and
 * returns false otherwise. */
static bool empty_post(struct evhttp_request *req)
{
    if (!method_is(req, EVHTTP_REQ_POST)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return false;
    }
    body_t b;
    json_t *j = NULL;
    body_get(req, &b);
    if (!json_body(req, &b, NULL, 0, &j))
        return false;
    json_decref(j);
    return true;
}

static void route_update_stage(keel_api_t *api, struct evhttp_request *req)
{
    if (!empty_post(req))
        return;
    if (api->update_state != UPDATE_UPLOADING || api->upload_fd < 0) {
        api_error(req, 409, "conflict", "no upload in progress");
        return;
    }
    close(api->upload_fd);
    api->upload_fd = -1;
    int fd = open(api->staged_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    keel_status_t st = fd >= 0 ? keel_slots_check(api->c.slots, read_fd, &fd, &api->staged)
                               : keel_errorf(KEEL_ERR_IO, "open %s: %s", api->staged_path, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (st != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        staged_drop(api);
        snprintf(api->last_error, sizeof api->last_error, "%s", why);
        keel_log(KEEL_LOG_WARN, "api: uploaded bundle refused: %s", why);
        api_error(req, st == KEEL_ERR_IO || st == KEEL_ERR_NOMEM ? 500 : 422,
                  st == KEEL_ERR_IO || st == KEEL_ERR_NOMEM ? "internal" : "bundle_rejected", why);
        return;
    }
    api->staged_valid = true;
    api->update_state = UPDATE_STAGED;
    keel_log(KEEL_LOG_INFO, "api: bundle %s (security version %" PRIu32 ") staged", api->staged.version,
             api->staged.security_version);
    keel_bootstate_t bs;
    uint32_t counter = 0;
    if (boot_state(api, &bs) != KEEL_OK || keel_slots_counter(api->c.slots, &counter) != KEEL_OK)
        keel_error_clear();
    api_reply(req, 201, json_pack("{s:o}", "staged", staged_json(api, counter, &bs)));
}

typedef struct {
    keel_job_t job;
    keel_api_t *api;
    char path[KEEL_PATH_MAX];
    keel_status_t st;
    keel_install_result_t res;
    char why[KEEL_ERROR_MAX];
} install_job_t;

static void install_run(keel_job_t *job)
{
    install_job_t *ij = (install_job_t *)job;
    int fd = open(ij->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        ij->st = keel_errorf(KEEL_ERR_IO, "open %s: %s", ij->path, strerror(errno));
    } else {
        ij->st = keel_slots_install(ij->api->c.slots, read_fd, &fd, &ij->res);
        close(fd);
    }
    /* The message is thread-local: it is copied here, on the worker. */
    if (ij->st != KEEL_OK)
        snprintf(ij->why, sizeof ij->why, "%s", keel_error_message());
}

static void install_done(keel_job_t *job)
{
    install_job_t *ij = (install_job_t *)job;
    keel_api_t *api = ij->api;
    if (job->cancelled) {
        api->update_state = UPDATE_STAGED;
    } else if (ij->st == KEEL_OK) {
        keel_log(KEEL_LOG_INFO, "api: installed %s into slot %c; it runs after the next reboot", ij->res.version,
                 keel_slot_name(ij->res.slot));
        staged_drop(api);
        api->update_state = UPDATE_INSTALLED;
    } else {
        keel_log(KEEL_LOG_WARN, "api: install refused: %s", ij->why);
        snprintf(api->last_error, sizeof api->last_error, "%s", ij->why);
        staged_drop(api);
    }
    free(ij);
}

static void route_update_apply(keel_api_t *api, struct evhttp_request *req)
{
    if (!empty_post(req))
        return;
    if (api->stopping) {
        api_error(req, 503, "unavailable", "the device is restarting");
        return;
    }
    if (api->update_state != UPDATE_STAGED || !api->staged_valid) {
        api_error(req, 409, "conflict", api->update_state == UPDATE_INSTALLING ? "an install is running"
                                                                                : "no bundle is staged");
        return;
    }
    install_job_t *ij = calloc(1, sizeof *ij);
    if (ij == NULL) {
        api_error(req, 500, "internal", NULL);
        return;
    }
    ij->job.run = install_run;
    ij->job.done = install_done;
    ij->api = api;
    snprintf(ij->path, sizeof ij->path, "%s", api->staged_path);
    keel_bootstate_t bs;
    if (boot_state(api, &bs) != KEEL_OK)
        keel_error_clear();
    api->update_state = UPDATE_INSTALLING;
    if (keel_workers_submit(api->installer, &ij->job) != KEEL_OK) {
        keel_error_clear();
        api->update_state = UPDATE_STAGED;
        free(ij);
        api_error(req, 409, "conflict", "an install is running");
        return;
    }
    keel_log(KEEL_LOG_INFO, "api: installing %s", api->staged.version);
    api_reply(req, 202, json_pack("{s:s}", "state", "installing"));
}

static void route_update(keel_api_t *api, struct evhttp_request *req, const char *rest)
{
    session_t s;
    if (!require_session(api, req, &s, false))
        return;
    if (api->c.slots == NULL) {
        api_error(req, 503, "unavailable", "restart the device");
        return;
    }
    if (strcmp(rest, "") == 0) {
        if (!method_is(req, EVHTTP_REQ_GET))
            api_error(req, 405, "method_not_allowed", NULL);
        else
            route_update_status(api, req);
    } else if (api->reset_pending) {
        api_error(req, 409, "conflict", "a factory reset is in progress");
    } else if (strcmp(rest, "/bundle") == 0) {
        route_update_bundle(api, req);
    } else if (strcmp(rest, "/stage") == 0) {
        route_update_stage(api, req);
    } else if (strcmp(rest, "/apply") == 0) {
        route_update_apply(api, req);
    } else {
        api_error(req, 404, "not_found", NULL);
    }
}

/* ---- installs from another source (keel_api_install: keeld's fleet updater) ---------- */

#define SOURCE_MAX 96

typedef struct {
    keel_job_t job;
    keel_api_t *api;
    keel_api_install_t in;
    char source[SOURCE_MAX];
    api_update_state_t prev; /* the upload flow's state, given back at the end */
    keel_status_t st;
    keel_install_result_t res;
    char why[KEEL_ERROR_MAX];
} remote_job_t;

static void remote_run(keel_job_t *job)
{
    remote_job_t *rj = (remote_job_t *)job;
    rj->st = keel_slots_install(rj->api->c.slots, rj->in.read, rj->in.ctx, &rj->res);
    if (rj->st != KEEL_OK)
        snprintf(rj->why, sizeof rj->why, "%s", keel_error_message()); /* thread-local: copied here */
}

static void remote_done(keel_job_t *job)
{
    remote_job_t *rj = (remote_job_t *)job;
    keel_api_t *api = rj->api;
    if (job->cancelled) {
        rj->st = KEEL_ERR_BUSY;
        snprintf(rj->why, sizeof rj->why, "keeld stopped before the install ran");
    }
    if (rj->st == KEEL_OK) {
        keel_log(KEEL_LOG_INFO, "api: %s installed %s into slot %c; it runs after the next reboot", rj->source,
                 rj->res.version, keel_slot_name(rj->res.slot));
        api->update_state = rj->prev == UPDATE_IDLE || rj->prev == UPDATE_INSTALLED ? UPDATE_INSTALLED : rj->prev;
    } else {
        snprintf(api->last_error, sizeof api->last_error, "%s: %.*s", rj->source,
                 (int)(sizeof api->last_error - SOURCE_MAX - 2), rj->why);
        /* A refused install cleared the pending slot an earlier one left. */
        api->update_state = rj->prev == UPDATE_INSTALLED ? UPDATE_IDLE : rj->prev;
    }
    rj->in.done(rj->in.arg, rj->st, &rj->res, rj->st == KEEL_OK ? "" : rj->why);
    free(rj);
}

keel_status_t keel_api_install(keel_api_t *api, const keel_api_install_t *in)
{
    if (api == NULL || in == NULL || in->read == NULL || in->done == NULL || in->source == NULL)
        return keel_errorf(KEEL_ERR_ARG, "api install: missing argument");
    if (api->stopping || api->reset_pending || api->c.slots == NULL || api->update_state == UPDATE_INSTALLING ||
        keel_workers_full(api->installer))
        return keel_errorf(KEEL_ERR_BUSY, "%s", api->update_state == UPDATE_INSTALLING ? "an install is running"
                                                : api->reset_pending ? "a factory reset is in progress"
                                                                     : "the device is stopping or restarting");
    remote_job_t *rj = calloc(1, sizeof *rj);
    if (rj == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    rj->job.run = remote_run;
    rj->job.done = remote_done;
    rj->api = api;
    rj->in = *in;
    snprintf(rj->source, sizeof rj->source, "%s", in->source);
    rj->in.source = rj->source;
    rj->prev = api->update_state;
    keel_bootstate_t bs;
    if (boot_state(api, &bs) != KEEL_OK) /* the snapshot shown while the install owns the slots */
        keel_error_clear();
    api->update_state = UPDATE_INSTALLING;
    keel_status_t st = keel_workers_submit(api->installer, &rj->job);
    if (st != KEEL_OK) {
        api->update_state = rj->prev;
        free(rj);
        return keel_errorf(KEEL_ERR_BUSY, "an install is running");
    }
    keel_log(KEEL_LOG_INFO, "api: installing from %s", rj->source);
    return KEEL_OK;
}

bool keel_api_installing(const keel_api_t *api)
{
    return api != NULL && api->update_state == UPDATE_INSTALLING;
}

keel_status_t keel_api_boot_state(keel_api_t *api, keel_bootstate_t *bs)
{
    if (api == NULL || bs == NULL)
        return keel_errorf(KEEL_ERR_ARG, "api boot state: missing argument");
    return boot_state(api, bs);
}

keel_status_t keel_api_update_policy(keel_api_t *api, bool *automatic, char postpone_until[11])
{
    if (api == NULL || automatic == NULL || postpone_until == NULL)
        return keel_errorf(KEEL_ERR_ARG, "api update policy: missing argument");
    settings_t s;
    keel_status_t st = settings_load(api, &s);
    if (st != KEEL_OK)
        return st;
    *automatic = s.automatic;
    memcpy(postpone_until, s.postpone_until, sizeof s.postpone_until);
    return KEEL_OK;
}

/* ---- factory reset (5.11-1) ------------------------------------------------------ */

static void route_factory_reset(keel_api_t *api, struct evhttp_request *req)
{
    session_t s;
    body_t b;
    if (!password_post(api, req, &s, &b, false))
        return;
    if (api->update_state == UPDATE_INSTALLING) {
        body_wipe(&b);
        api_error(req, 409, "conflict", "an install is running");
        return;
    }
    static const api_json_field_t f[] = {{"password", API_JSON_STRING, true, KEEL_AUTH_PASSWORD_MAX}};
    json_t *j = NULL;
    bool ok = json_body(req, &b, f, 1, &j);
    body_wipe(&b);
    if (ok) {
        json_t *pw = json_object_get(j, "password");
        keel_auth_request_t ar = {
            .password = json_string_value(pw),
            .password_len = json_string_length(pw),
            .token = s.token,
        };
        if (attempt(api, req, KEEL_AUTH_REAUTH, &ar))
            api->reset_pending = true; /* no upload or install until it is decided */
        json_wipe_free(j);
    }
    keel_wipe(&s, sizeof s);
}

/*
 * The reset itself, after the password was checked again. The anti-rollback
 * counters survive it (an erased counter would let an old, vulnerable image
 * or trust store back in): they go to the update module's journal before the
 * erase, and reopening the slots over the new vault key puts them back. A
 * power cut anywhere is finished by the next program that opens the slots.
 */
static void factory_reset(keel_api_t *api, struct evhttp_request *req)
{
    keel_status_t st = keel_slots_reset_journal(api->c.slots);
    if (st != KEEL_OK) {
        reply_internal(req, "factory reset (nothing was erased)");
        return;
    }
    staged_drop(api);
    char why[KEEL_ERROR_MAX] = "";
    st = keel_vault_erase(api->c.vault);
    if (st != KEEL_OK)
        snprintf(why, sizeof why, "erase: %s", keel_error_message());
    /* Whatever the erase did, the account is reset: the old password must
     * not log in after a reset its owner asked for. */
    keel_status_t ast = keel_auth_reset(api->c.auth);
    if (ast != KEEL_OK && why[0] == '\0')
        snprintf(why, sizeof why, "account: %s", keel_error_message());
    keel_slots_close(api->c.slots); /* its lock goes with it; the new handle takes it again */
    api->c.slots = NULL;
    keel_status_t sst = keel_slots_open(api->c.cfg, &api->c.slots);
    if (sst != KEEL_OK && why[0] == '\0')
        snprintf(why, sizeof why, "update slots: %s", keel_error_message());
    if (st != KEEL_OK || ast != KEEL_OK || sst != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "api: factory reset incomplete (%s); a restart finishes it", why);
        api_error(req, 500, "internal", "the reset is incomplete: restart the device to finish it");
        return;
    }
    keel_log(KEEL_LOG_WARN, "api: factory reset: user data erased, the label password is in force again");
    /* keeld drops what it cached of the erased data and asks the cloud to
     * erase its copy (5.11-2); the answer says what was asked. */
    json_t *receipt = NULL;
    if (api->c.after_reset != NULL) {
        if (api->c.after_reset(api->c.arg, &receipt) != KEEL_OK) {
            keel_log(KEEL_LOG_ERROR, "api: after the factory reset: %s", keel_error_message());
            receipt = NULL;
        }
    } else if (api->c.privacy != NULL && keel_privacy_reload(api->c.privacy) != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "api: after the factory reset: %s", keel_error_message());
    }
    set_cookie(req, NULL, 0);
    api_reply(req, 202, json_pack("{s:s,s:o}", "state", "reset", "receipt", receipt != NULL ? receipt : json_null()));
}

/* ---- privacy (6-1..6-6, 5.11-2/4, the Data Act) ------------------------------------- */

/* The declaration as the owner reads it: each category with its telemetry
 * fields and, when it rests on consent, the consent in force. */
static json_t *privacy_view(keel_api_t *api, json_t *consent)
{
    const json_t *d = keel_privacy_declaration(api->c.privacy);
    if (d == NULL)
        return json_pack("{s:b,s:o}", "declared", 0, "consent", consent);
    json_t *v = json_deep_copy(d);
    if (v == NULL) {
        json_decref(consent);
        return NULL;
    }
    json_object_del(v, "format");
    json_object_set_new(v, "declared", json_true());
    size_t i, k;
    json_t *c, *f, *pur;
    json_array_foreach(json_object_get(v, "categories"), i, c) {
        const char *id = json_string_value(json_object_get(c, "id"));
        json_t *fields = json_array();
        json_array_foreach(json_object_get(v, "telemetry"), k, f) {
            if (strcmp(json_string_value(json_object_get(f, "category")), id) == 0)
                json_array_append(fields, json_object_get(f, "field"));
        }
        json_object_set_new(c, "telemetry_fields", fields);
        json_t *state = json_null();
        json_array_foreach(json_object_get(consent, "purposes"), k, pur) {
            if (strcmp(json_string_value(json_object_get(pur, "purpose")), id) == 0)
                state = json_incref(pur);
        }
        json_object_set_new(c, "consent", state);
    }
    json_object_set_new(v, "consent", consent);
    return v;
}

static keel_status_t consent_state(keel_api_t *api, json_t **out)
{
    if (api->c.privacy != NULL)
        return keel_privacy_consent_json(api->c.privacy, out);
    *out = json_pack("{s:n,s:[],s:[]}", "consent_version", "purposes", "log");
    return *out != NULL ? KEEL_OK : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
}

static void route_privacy_consent(keel_api_t *api, struct evhttp_request *req, const session_t *s)
{
    if (method_is(req, EVHTTP_REQ_PUT)) {
        static const api_json_field_t f[] = {
            {"purpose", API_JSON_STRING, true, KEEL_PRIVACY_ID_MAX},
            {"given", API_JSON_BOOL, true, 0},
            {"version", API_JSON_STRING, true, KEEL_PRIVACY_VERSION_MAX},
        };
        body_t b;
        json_t *j = NULL;
        body_get(req, &b);
        if (!json_body(req, &b, f, sizeof f / sizeof f[0], &j))
            return;
        if (api->c.privacy == NULL) {
            json_decref(j);
            api_error(req, 404, "not_found", "this device declares no purpose that needs consent");
            return;
        }
        keel_status_t st = keel_privacy_consent_set(api->c.privacy, json_string_value(json_object_get(j, "purpose")),
                                                    json_is_true(json_object_get(j, "given")),
                                                    json_string_value(json_object_get(j, "version")),
                                                    s->via_cookie ? "ui" : "api");
        json_decref(j);
        if (st == KEEL_ERR_NOT_FOUND) {
            api_error(req, 404, "not_found", keel_error_message());
            return;
        }
        if (st == KEEL_ERR_ARG) {
            /* The owner answered an older text: show them the current one. */
            api_error(req, 409, "conflict", keel_error_message());
            return;
        }
        if (st != KEEL_OK) {
            reply_internal(req, "consent");
            return;
        }
    } else if (!method_is(req, EVHTTP_REQ_GET)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    json_t *c = NULL;
    if (consent_state(api, &c) != KEEL_OK) {
        reply_internal(req, "consent");
        return;
    }
    api_reply(req, 200, c);
}

static json_t *outbox_stats_json(keel_outbox_t *o)
{
    keel_outbox_stats_t st;
    if (o == NULL)
        return json_null();
    if (keel_outbox_stats(o, &st) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "api: outbox figures: %s", keel_error_message());
        keel_error_clear();
        return json_null();
    }
    return json_pack("{s:I,s:I,s:I,s:{s:I,s:I,s:I},s:I}", "pending", (json_int_t)st.pending, "pending_bytes",
                     (json_int_t)st.pending_bytes, "next_seq", (json_int_t)st.next_seq, "dropped", "telemetry",
                     (json_int_t)st.dropped[KEEL_OUTBOX_TELEMETRY], "event", (json_int_t)st.dropped[KEEL_OUTBOX_EVENT],
                     "alert", (json_int_t)st.dropped[KEEL_OUTBOX_ALERT], "acked", (json_int_t)st.acked);
}

static json_t *link_json(keel_link_t *l)
{
    if (l == NULL)
        return json_null();
    keel_link_status_t st;
    keel_link_status(l, &st);
    return json_pack("{s:s,s:I,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:i,s:o}", "state", keel_link_state_name(st.state),
                     "attempt", (json_int_t)st.attempt, "next_attempt_in", st.next_attempt_in, "connects",
                     (json_int_t)st.connects, "disconnects", (json_int_t)st.disconnects, "auth_failures",
                     (json_int_t)st.auth_failures, "published", (json_int_t)st.published, "refused",
                     (json_int_t)st.refused, "deferred", (json_int_t)st.deferred, "last_reason", st.last_reason,
                     "last_error",
                     st.last_error[0] ? json_string(st.last_error) : json_null());
}

static void route_link(keel_api_t *api, struct evhttp_request *req)
{
    if (!require_session_get(api, req))
        return;
    api_reply(req, 200, json_pack("{s:b,s:o,s:o}", "configured", api->c.link != NULL, "link", link_json(api->c.link),
                                  "outbox", outbox_stats_json(api->c.outbox)));
}

/* The pending messages, oldest first; at most EXPORT_OUTBOX_MAX. */
static json_t *outbox_pending_json(keel_outbox_t *o, bool *truncated)
{
    *truncated = false;
    json_t *arr = json_array();
    keel_outbox_msg_t *m = malloc(sizeof *m);
    if (arr == NULL || m == NULL) {
        free(m);
        json_decref(arr);
        return NULL;
    }
    uint64_t after = 0;
    keel_status_t st = KEEL_OK;
    while (arr != NULL && (st = keel_outbox_next(o, after, m)) == KEEL_OK) {
        if (json_array_size(arr) == EXPORT_OUTBOX_MAX) {
            *truncated = true;
            break;
        }
        after = m->seq;
        json_t *e = json_loadb(m->envelope, m->len, JSON_REJECT_DUPLICATES, NULL);
        if (e == NULL || json_array_append_new(arr, e) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    keel_wipe(m, sizeof *m);
    free(m);
    if (st != KEEL_OK && st != KEEL_ERR_NOT_FOUND) {
        json_decref(arr);
        return NULL;
    }
    keel_error_clear();
    return arr;
}

/* When the owner's password was set (null while the label password is in force). */
static json_t *password_changed(keel_api_t *api)
{
    int64_t t = 0;
    if (keel_auth_password_time(api->c.auth, &t) != KEEL_OK) {
        keel_error_clear();
        return json_null();
    }
    return json_integer(t);
}

static void route_privacy_export(keel_api_t *api, struct evhttp_request *req)
{
    if (!method_is(req, EVHTTP_REQ_GET)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    const keel_config_t *c = api->c.cfg;
    settings_t cur;
    json_t *priv = NULL, *app = NULL, *pending = NULL;
    bool truncated = false;
    if (settings_load(api, &cur) != KEEL_OK) {
        reply_internal(req, "export: settings");
        return;
    }
    if (api->c.privacy != NULL && keel_privacy_export(api->c.privacy, &priv) != KEEL_OK) {
        reply_internal(req, "export: privacy");
        return;
    }
    if (api->c.app_state != NULL && api->c.app_state(api->c.arg, &app) != KEEL_OK) {
        json_decref(priv);
        reply_internal(req, "export: product state");
        return;
    }
    if (api->c.outbox != NULL && (pending = outbox_pending_json(api->c.outbox, &truncated)) == NULL) {
        json_decref(priv);
        json_decref(app);
        reply_internal(req, "export: outbox");
        return;
    }
    const char *serial = keel_config_str(c, "device", "serial");
    json_t *outbox = api->c.outbox == NULL ? json_null()
                                           : json_pack("{s:o,s:o,s:b}", "figures", outbox_stats_json(api->c.outbox),
                                                       "pending", pending, "truncated", truncated);
    json_t *j = json_pack("{s:s,s:I,s:{s:s,s:s,s:s},s:o,s:o,s:{s:s,s:b,s:o},s:o,s:o,s:o}", "format", "keel-export-1",
                          "generated", (json_int_t)api_wallclock(), "device", "id", keel_config_str(c, "device", "id"),
                          "model", keel_config_str(c, "device", "model"), "serial", serial != NULL ? serial : "",
                          "privacy", priv != NULL ? priv : json_null(), "settings", settings_json(&cur), "account",
                          "user", KEEL_AUTH_USER, "label_password_in_force", keel_auth_must_change(api->c.auth),
                          "password_changed", password_changed(api), "product_state", app != NULL ? app : json_null(),
                          "outbox", outbox, "link", link_json(api->c.link));
    if (j == NULL) {
        api_error(req, 500, "internal", NULL);
        return;
    }
    char disp[128];
    snprintf(disp, sizeof disp, "attachment; filename=\"keel-export-%s.json\"", keel_config_str(c, "device", "id"));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Disposition", disp);
    keel_log(KEEL_LOG_INFO, "api: the owner's data was exported");
    api_reply(req, 200, j);
}

static void route_privacy(keel_api_t *api, struct evhttp_request *req, const char *rest)
{
    session_t s;
    if (!require_session(api, req, &s, false))
        return;
    if (strcmp(rest, "/consent") == 0) {
        route_privacy_consent(api, req, &s);
        return;
    }
    bool known = strcmp(rest, "") == 0 || strcmp(rest, "/export") == 0 || strcmp(rest, "/erase") == 0;
    if (!known) {
        api_error(req, 404, "not_found", NULL);
        return;
    }
    if (!method_is(req, EVHTTP_REQ_GET)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    if (strcmp(rest, "/export") == 0) {
        route_privacy_export(api, req);
    } else if (strcmp(rest, "/erase") == 0) {
        json_t *e = NULL;
        if (api->c.privacy != NULL && keel_privacy_erase_status(api->c.privacy, &e) != KEEL_OK) {
            reply_internal(req, "erase status");
            return;
        }
        api_reply(req, 200, json_pack("{s:o}", "requests", e != NULL ? e : json_array()));
    } else {
        json_t *c = NULL;
        if (consent_state(api, &c) != KEEL_OK) {
            reply_internal(req, "privacy");
            return;
        }
        json_t *v = privacy_view(api, c);
        if (v == NULL)
            api_error(req, 500, "internal", NULL);
        else
            api_reply(req, 200, v);
    }
}

/* ---- static files --------------------------------------------------------------- */

static void route_ui(struct evhttp_request *req, const char *path)
{
    if (!method_is(req, EVHTTP_REQ_GET) && !method_is(req, EVHTTP_REQ_HEAD)) {
        api_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    for (size_t i = 0; i < keel_ui_assets_len; i++) {
        const keel_ui_asset_t *a = &keel_ui_assets[i];
        if (strcmp(a->path, path) == 0) {
            api_reply_static(req, a->type, a->data, a->len);
            return;
        }
    }
    api_error(req, 404, "not_found", NULL);
}

/* ---- dispatch ---------------------------------------------------------------------- */

void api_route(struct evhttp_request *req, keel_api_t *api)
{
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u != NULL ? evhttp_uri_get_path(u) : NULL;
    if (path == NULL || path[0] != '/') {
        api_error(req, 400, "bad_request", NULL);
        return;
    }
    if (strncmp(path, API_PREFIX, strlen(API_PREFIX)) != 0) {
        route_ui(req, path);
        return;
    }
    const char *r = path + strlen(API_PREFIX);
    if (strcmp(r, "status") == 0)
        route_status(api, req);
    else if (strcmp(r, "session") == 0)
        route_session(api, req);
    else if (strcmp(r, "password") == 0)
        route_password(api, req);
    else if (strcmp(r, "device") == 0)
        route_device(api, req);
    else if (strcmp(r, "settings") == 0)
        route_settings(api, req);
    else if (strncmp(r, "update", 6) == 0 && (r[6] == '\0' || r[6] == '/'))
        route_update(api, req, r + 6);
    else if (strcmp(r, "factory-reset") == 0)
        route_factory_reset(api, req);
    else if (strncmp(r, "privacy", 7) == 0 && (r[7] == '\0' || r[7] == '/'))
        route_privacy(api, req, r + 7);
    else if (strcmp(r, "link") == 0)
        route_link(api, req);
    else
        api_error(req, 404, "not_found", NULL);
}

void api_routes_start(keel_api_t *api)
{
    /* An upload the last run did not finish is of no use: it goes. */
    if (staged_path(api) == KEEL_OK)
        staged_drop(api);
    else
        keel_error_clear();
}

void api_routes_shutdown(keel_api_t *api)
{
    if (api->upload_fd >= 0)
        close(api->upload_fd);
    api->upload_fd = -1;
}

/*
 * keel-fleetd's operator side (docs/internals/fleet-admin.md): the JSON API
 * under /api/v1/ and the read-only dashboard, on the admin listener
 * (https.c: TLS from the first byte). Every API request carries a bearer
 * token whose SHA-256 is in the tokens file; the dashboard's static files
 * hold no data and need none.
 *
 * Runs on the main loop only (one thread), so the token cache and the
 * failed-token counters below need no lock.
 */
#define _GNU_SOURCE
#include "admin_logic.h"
#include "fleetd.h"
#include "ui_assets.h"

#include "keel/crypto.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The dashboard (ui/fleet/), built in by cmake/EmbedUI.cmake with the prefix fleet_ui. */
extern const keel_ui_asset_t fleet_ui_assets[];
extern const size_t fleet_ui_assets_len;

/* The dashboard's policy: its own script and style, fetches to us, no frames, no inline anything. */
#define ADMIN_CSP                                                                                              \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "     \
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

typedef struct {
    /* the tokens file as last read: reread when any of these change */
    bool seen;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    bool broken_logged, missing_logged;
    size_t n;
    fleetd_token_t tokens[FLEETD_TOKENS_MAX];
    fleetd_ratelimit_t rl;
} admin_state_t;

static admin_state_t g_admin;

typedef struct {
    fleetd_t *f;
    struct evhttp_request *req;
    const char *name;        /* the token's name, for the log */
    fleetd_role_t role;
    char source[FLEETD_ADDR_MAX];
    const char *query;       /* NULL when none */
    const char *method, *path;
    const char *id;          /* the device or campaign the path names */
    int64_t now;
} admin_req_t;

/* ---- replies -------------------------------------------------------------------------------------- */

static void security_headers(struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Security-Policy", ADMIN_CSP);
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "Strict-Transport-Security", "max-age=31536000");
    evhttp_add_header(h, "Cross-Origin-Resource-Policy", "same-origin");
}

static void reply_static(struct evhttp_request *req, const keel_ui_asset_t *a)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", a->type);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *out = evbuffer_new();
    if (out == NULL || evbuffer_add_reference(out, a->data, a->len, NULL, NULL) != 0) {
        if (out != NULL)
            evbuffer_free(out);
        fleetd_reply_error(req, 500, "internal", NULL);
        return;
    }
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

/* A store's or the service's failure: the status decides the HTTP code; the
 * message goes to the operator (they hold a token), a 500's only to the log. */
static void reply_status(admin_req_t *r, keel_status_t st, const char *what)
{
    const char *msg = keel_error_message();
    int code = 500;
    const char *err = "internal";
    switch (st) {
    case KEEL_ERR_NOT_FOUND: code = 404, err = "not_found"; break;
    case KEEL_ERR_EXISTS: code = 409, err = "conflict"; break;
    case KEEL_ERR_ARG:
    case KEEL_ERR_FORMAT: code = 400, err = "bad_request"; break;
    case KEEL_ERR_TOO_LARGE: code = 422, err = "too_large"; break;
    case KEEL_ERR_BUSY:
        code = 503, err = "busy";
        evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "1");
        break;
    default: break;
    }
    if (code == 500) {
        keel_log(KEEL_LOG_ERROR, "admin: %s %s: %s: %s", r->method, r->path, what, msg);
        fleetd_reply_error(r->req, 500, err, what);
    } else {
        fleetd_reply_error(r->req, code, err, msg);
    }
    keel_error_clear();
}

static void reply_ok(admin_req_t *r, int code, json_t *j)
{
    if (j == NULL) {
        fleetd_reply_error(r->req, 500, "internal", "out of memory");
        return;
    }
    fleetd_reply_json(r->req, code, j);
}

/* Wraps a list under `key` (steals it). */
static void reply_list(admin_req_t *r, const char *key, json_t *list)
{
    reply_ok(r, 200, json_pack("{s:o}", key, list));
}

/* ---- tokens ----------------------------------------------------------------------------------------- */

/* Rereads the tokens file when it changed (keel_file_open_private: a
 * regular file, not a link, mode 0600). A missing, unreadable or malformed
 * file leaves no token valid: every API request is refused until it is fixed. */
static void tokens_refresh(const fleetd_t *f)
{
    admin_state_t *a = &g_admin;
    int fd = -1;
    keel_status_t st = keel_file_open_private(f->tokens_path, &fd);
    if (st != KEEL_OK) {
        if (!a->missing_logged)
            keel_log(KEEL_LOG_ERROR, "admin: %s: every API request is refused until the tokens file is usable",
                     keel_error_message());
        keel_error_clear();
        a->missing_logged = true;
        a->seen = false;
        a->n = 0;
        return;
    }
    a->missing_logged = false;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        a->seen = false;
        a->n = 0;
        return;
    }
    if (a->seen && sb.st_dev == a->dev && sb.st_ino == a->ino && sb.st_size == a->size &&
        sb.st_mtim.tv_sec == a->mtime.tv_sec && sb.st_mtim.tv_nsec == a->mtime.tv_nsec) {
        close(fd);
        return;
    }
    keel_buf_t b;
    st = keel_fd_read(fd, f->tokens_path, FLEETD_TOKENS_FILE_MAX, &b);
    close(fd);
    size_t n = 0;
    if (st == KEEL_OK) {
        st = fleetd_tokens_parse((const char *)b.data, b.len, a->tokens, FLEETD_TOKENS_MAX, &n);
        keel_buf_free(&b);
    }
    a->seen = true;
    a->dev = sb.st_dev;
    a->ino = sb.st_ino;
    a->size = sb.st_size;
    a->mtime = sb.st_mtim;
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "admin: %s: %s; every API request is refused until it is fixed", f->tokens_path,
                 keel_error_message());
        keel_error_clear();
        a->n = 0;
        return;
    }
    a->n = n;
    keel_log(KEEL_LOG_INFO, "admin: %zu token(s) from %s", n, f->tokens_path);
}

static void peer(struct evhttp_request *req, char out[FLEETD_ADDR_MAX])
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    char *addr = NULL;
    ev_uint16_t port = 0;
    if (evcon != NULL)
        evhttp_connection_get_peer(evcon, &addr, &port);
    snprintf(out, FLEETD_ADDR_MAX, "%s", addr != NULL ? addr : "?");
}

static void reply_throttled(struct evhttp_request *req, unsigned wait)
{
    char s[16];
    snprintf(s, sizeof s, "%u", wait);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", s);
    fleetd_reply_json(req, 429, json_pack("{s:s, s:s, s:i}", "error", "too_many_requests", "detail",
                                          "too many failed tokens from this address", "retry_after", (int)wait));
}

static void reply_unauthorized(struct evhttp_request *req, const char *detail)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer realm=\"keel-fleetd\"");
    fleetd_reply_error(req, 401, "unauthorized", detail);
}

/* true when the request carries a token of the file; else it has been answered. */
static bool authenticate(admin_req_t *r)
{
    unsigned wait = fleetd_ratelimit_wait(&g_admin.rl, r->source, r->now);
    if (wait > 0) {
        reply_throttled(r->req, wait);
        return false;
    }
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(r->req), "Authorization");
    if (h == NULL) {
        reply_unauthorized(r->req, "an operator token is required (Authorization: Bearer ...)");
        return false;
    }
    tokens_refresh(r->f);
    const char *tok = NULL;
    size_t len = 0, which = 0;
    bool ok = fleetd_bearer_parse(h, &tok, &len) == KEEL_OK;
    keel_error_clear();
    ok = ok && fleetd_token_match(g_admin.tokens, g_admin.n, tok, len, &which);
    if (!ok) {
        /* the token itself is never logged */
        unsigned fails = fleetd_ratelimit_fail(&g_admin.rl, r->source, r->now);
        keel_log(KEEL_LOG_WARN, "admin: refused a token from %s (%s %s; %u failure(s) this minute)", r->source,
                 r->method, r->path, fails);
        if (fails >= FLEETD_RL_FAILS) {
            if (fails == FLEETD_RL_FAILS)
                keel_log(KEEL_LOG_WARN, "admin: %s is refused for %d s", r->source, FLEETD_RL_WINDOW_S);
            reply_throttled(r->req, fleetd_ratelimit_wait(&g_admin.rl, r->source, r->now));
        } else {
            reply_unauthorized(r->req, "the token is not valid");
        }
        return false;
    }
    r->name = g_admin.tokens[which].name;
    r->role = g_admin.tokens[which].role;
    return true;
}

/* ---- request bodies ------------------------------------------------------------------------------------ */

/* The body as one contiguous block (evhttp already capped it at the listener's body_max). */
static const char *body_of(admin_req_t *r, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
    *len = in != NULL ? evbuffer_get_length(in) : 0;
    if (*len == 0)
        return "";
    return (const char *)evbuffer_pullup(in, -1);
}

static const char *content_type(admin_req_t *r)
{
    return evhttp_find_header(evhttp_request_get_input_headers(r->req), "Content-Type");
}

/* The action endpoints take no parameters: an empty body or {} and no query. */
static bool action_ok(admin_req_t *r)
{
    size_t len = 0;
    const char *b = body_of(r, &len);
    keel_status_t st = b != NULL ? fleetd_action_body(b, len) : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st == KEEL_OK && r->query != NULL && r->query[0] != '\0')
        st = keel_errorf(KEEL_ERR_FORMAT, "this endpoint takes no query parameters");
    if (st != KEEL_OK) {
        fleetd_reply_error(r->req, st == KEEL_ERR_TOO_LARGE ? 413 : 400, st == KEEL_ERR_TOO_LARGE ? "too_large"
                                                                                                  : "bad_request",
                           keel_error_message());
        keel_error_clear();
        return false;
    }
    return true;
}

/* GETs without parameters refuse a query too (strict input). */
static bool no_query(admin_req_t *r)
{
    if (r->query == NULL || r->query[0] == '\0')
        return true;
    fleetd_reply_error(r->req, 400, "bad_request", "this endpoint takes no query parameters");
    return false;
}

static void bad_query(admin_req_t *r)
{
    fleetd_reply_error(r->req, 400, "bad_request", keel_error_message());
    keel_error_clear();
}

/* ---- endpoints ------------------------------------------------------------------------------------------ */

static json_int_t u64j(uint64_t v)
{
    return (json_int_t)(v > INT64_MAX ? INT64_MAX : v);
}

static void get_status(admin_req_t *r)
{
    fleetd_t *f = r->f;
    if (!no_query(r))
        return;
    json_t *summary = NULL;
    keel_status_t st = keel_fleet_device_summary(f->db, &summary);
    keel_fleet_seq_stats_t seq = {0};
    if (st == KEEL_OK)
        st = keel_fleet_seq_stats(f->db, NULL, &seq);
    if (st != KEEL_OK) {
        json_decref(summary);
        reply_status(r, st, "the device summary");
        return;
    }
    const fleetd_consumer_stats_t *cs = f->consumer != NULL ? fleetd_consumer_stats(f->consumer) : NULL;
    const fleetd_ingest_stats_t *is = f->ingest != NULL ? fleetd_ingest_stats(f->ingest) : NULL;
    json_t *consumer = cs == NULL ? json_null()
                                  : json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I}", "online",
                                              atomic_load(&cs->online) ? 1 : 0, "received",
                                              u64j(atomic_load(&cs->received)), "oversized",
                                              u64j(atomic_load(&cs->oversized)), "connects",
                                              u64j(atomic_load(&cs->connects)), "disconnects",
                                              u64j(atomic_load(&cs->disconnects)), "published",
                                              u64j(atomic_load(&cs->published)), "publish_failed",
                                              u64j(atomic_load(&cs->publish_failed)));
    json_t *ingest = is == NULL ? json_null()
                                : json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "stored",
                                            u64j(atomic_load(&is->stored)), "duplicates",
                                            u64j(atomic_load(&is->duplicates)), "unknown",
                                            u64j(atomic_load(&is->unknown)), "malformed",
                                            u64j(atomic_load(&is->malformed)), "batches",
                                            u64j(atomic_load(&is->batches)), "alerts", u64j(atomic_load(&is->alerts)),
                                            "gaps_lost", u64j(atomic_load(&is->gaps_lost)), "retries",
                                            u64j(atomic_load(&is->retries)), "last_commit",
                                            (json_int_t)atomic_load(&is->last_commit), "last_commit_ms",
                                            (json_int_t)atomic_load(&is->last_commit_ms));
    json_t *sequence = json_pack("{s:I, s:I, s:I, s:I, s:I}", "messages", u64j(seq.messages), "open_gaps",
                                 u64j(seq.open_gaps), "open_missing", u64j(seq.open_missing), "lost", u64j(seq.lost),
                                 "explained", u64j(seq.explained));
    reply_ok(r, 200,
             json_pack("{s:I, s:I, s:I, s:{s:s, s:i}, s:o, s:o, s:o, s:I, s:o, s:b}", "time", (json_int_t)r->now,
                       "started", (json_int_t)f->started, "uptime", (json_int_t)(r->now - f->started), "database",
                       "driver", keel_fleet_db_driver_name(f->db), "schema", keel_fleet_db_schema_version(f->db),
                       "consumer", consumer, "ingest", ingest, "sequence", sequence, "queue",
                       (json_int_t)(f->queue != NULL ? fleetd_queue_depth(f->queue) : 0), "devices", summary, "mqtt",
                       f->consumer != NULL ? 1 : 0));
}

static void get_devices(admin_req_t *r)
{
    fleetd_device_params_t p;
    if (fleetd_device_params(r->query, &p) != KEEL_OK) {
        bad_query(r);
        return;
    }
    json_t *list = NULL;
    keel_status_t st = keel_fleet_device_page(r->f->db, p.model[0] != '\0' ? p.model : NULL, p.after, p.limit, &list);
    if (st != KEEL_OK) {
        reply_status(r, st, "the device list");
        return;
    }
    /* a full page may have more after it: the client asks again with after=<next> */
    size_t n = json_array_size(list);
    json_t *last = n == p.limit && n > 0 ? json_object_get(json_array_get(list, n - 1), "id") : NULL;
    reply_ok(r, 200, json_pack("{s:o, s:O?}", "devices", list, "next", last));
}

static void get_device(admin_req_t *r)
{
    if (!no_query(r))
        return;
    keel_fleet_device_t d;
    keel_fleet_seq_stats_t seq;
    keel_status_t st = keel_fleet_device_get(r->f->db, r->id, &d);
    if (st == KEEL_OK)
        st = keel_fleet_seq_stats(r->f->db, d.id, &seq);
    if (st != KEEL_OK) {
        reply_status(r, st, "the device");
        return;
    }
    json_t *j = fleetd_device_json(&d);
    if (j != NULL && json_object_set_new(j, "sequence",
                                         json_pack("{s:I, s:I, s:I, s:I, s:I}", "messages", u64j(seq.messages),
                                                   "open_gaps", u64j(seq.open_gaps), "open_missing",
                                                   u64j(seq.open_missing), "lost", u64j(seq.lost), "explained",
                                                   u64j(seq.explained))) != 0) {
        json_decref(j);
        j = NULL;
    }
    reply_ok(r, 200, j);
}

static void get_export(admin_req_t *r)
{
    if (!no_query(r))
        return;
    json_t *j = NULL;
    keel_status_t st = keel_fleet_export(r->f->db, r->id, &j);
    if (st != KEEL_OK) {
        reply_status(r, st, "the export");
        return;
    }
    keel_log(KEEL_LOG_INFO, "admin: %s exported the data of device %s", r->name, r->id);
    reply_ok(r, 200, j);
}

static void post_import(admin_req_t *r)
{
    if (!no_query(r))
        return;
    if (!fleetd_content_type_is(content_type(r), "application/json")) {
        fleetd_reply_error(r->req, 415, "unsupported_media_type", "the manifest is sent as application/json");
        return;
    }
    size_t len = 0;
    const char *b = body_of(r, &len);
    if (len > FLEETD_IMPORT_MAX) {
        fleetd_reply_error(r->req, 413, "too_large", "the manifest is larger than 64 MiB");
        return;
    }
    json_t *m = NULL;
    keel_status_t st = b != NULL ? fleetd_json_object(b, len, FLEETD_IMPORT_MAX, &m)
                                 : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_fleet_import_stats_t s = {0};
    if (st == KEEL_OK)
        st = keel_fleet_import_manifest(r->f->db, m, r->now, &s);
    json_decref(m);
    if (st != KEEL_OK) {
        reply_status(r, st, "the import");
        return;
    }
    keel_log(KEEL_LOG_INFO, "admin: %s imported a manifest: %llu device(s) added, %llu unchanged", r->name,
             (unsigned long long)s.added, (unsigned long long)s.unchanged);
    reply_ok(r, 200, json_pack("{s:I, s:I}", "added", u64j(s.added), "unchanged", u64j(s.unchanged)));
}

static void post_revoke(admin_req_t *r)
{
    if (!action_ok(r))
        return;
    keel_status_t st = fleetd_revoke(r->f, r->id);
    if (st != KEEL_OK) {
        reply_status(r, st, "the revocation");
        return;
    }
    keel_log(KEEL_LOG_INFO, "admin: %s revoked device %s", r->name, r->id);
    keel_fleet_device_t d;
    st = keel_fleet_device_get(r->f->db, r->id, &d);
    if (st != KEEL_OK) {
        reply_status(r, st, "the device");
        return;
    }
    reply_ok(r, 200, fleetd_device_json(&d));
}

static void post_erase(admin_req_t *r)
{
    if (!action_ok(r))
        return;
    keel_fleet_erasure_t e;
    keel_status_t st = keel_fleet_erase(r->f->db, r->id, NULL, "operator", r->now, &e);
    if (st != KEEL_OK) {
        reply_status(r, st, "the erasure");
        return;
    }
    keel_log(KEEL_LOG_INFO, "admin: %s erased the data of device %s (erasure %s: %llu messages)", r->name, r->id,
             e.id, (unsigned long long)e.messages);
    reply_ok(r, 200, json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:s}", "id", e.id, "device", r->id, "erased", 1,
                               "time", (json_int_t)e.time, "messages", u64j(e.messages), "gaps", u64j(e.gaps),
                               "source", "operator"));
}

static void get_campaigns(admin_req_t *r)
{
    if (!no_query(r))
        return;
    json_t *list = NULL;
    keel_status_t st = keel_fleet_campaign_list(r->f->db, &list);
    if (st != KEEL_OK) {
        reply_status(r, st, "the campaign list");
        return;
    }
    fleetd_campaign_list_names(list);
    reply_list(r, "campaigns", list);
}

static json_t *campaign_view(admin_req_t *r, const keel_fleet_campaign_t *c, keel_status_t *st)
{
    keel_fleet_campaign_counts_t k;
    *st = keel_fleet_campaign_counts(r->f->db, c->id, &k);
    if (*st != KEEL_OK)
        return NULL;
    json_t *j = fleetd_campaign_json(c, &k);
    if (j == NULL)
        *st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    return j;
}

static void get_campaign(admin_req_t *r)
{
    if (!no_query(r))
        return;
    keel_fleet_campaign_t c;
    keel_status_t st = keel_fleet_campaign_get(r->f->db, r->id, &c);
    json_t *j = st == KEEL_OK ? campaign_view(r, &c, &st) : NULL;
    if (st != KEEL_OK) {
        reply_status(r, st, "the campaign");
        return;
    }
    reply_ok(r, 200, j);
}

/* The bundle goes to bundle_dir/<sha256>.bundle (0600, atomic), then the
 * campaign is made from it; a bundle that does not verify is 422 and its
 * file goes again (unless another campaign had brought the same bytes). */
static void post_campaign(admin_req_t *r)
{
    fleetd_t *f = r->f;
    fleetd_campaign_params_t p;
    if (fleetd_campaign_params(r->query, (unsigned)keel_config_uint(f->cfg, "campaign", "fail_permille"), &p) !=
        KEEL_OK) {
        bad_query(r);
        return;
    }
    if (!fleetd_content_type_is(content_type(r), "application/octet-stream")) {
        fleetd_reply_error(r->req, 415, "unsupported_media_type", "the bundle is sent as application/octet-stream");
        return;
    }
    size_t len = 0;
    const char *b = body_of(r, &len);
    if (b == NULL || len == 0) {
        fleetd_reply_error(r->req, b == NULL ? 500 : 400, b == NULL ? "internal" : "bad_request",
                           b == NULL ? "out of memory" : "the body must be the signed bundle");
        return;
    }
    uint8_t d[KEEL_SHA256_LEN];
    char hex[2 * KEEL_SHA256_LEN + 1], name[2 * KEEL_SHA256_LEN + 8], path[KEEL_PATH_MAX];
    keel_sha256(b, len, d);
    keel_status_t st = keel_hex_encode(d, sizeof d, hex, sizeof hex);
    if (st == KEEL_OK)
        st = keel_snprintf(name, sizeof name, "%s.bundle", hex);
    if (st == KEEL_OK)
        st = keel_path_join(path, sizeof path, f->bundle_dir, name);
    bool existed = st == KEEL_OK && keel_path_exists(path);
    if (st == KEEL_OK)
        st = keel_file_write_atomic(path, b, len, 0600);
    if (st != KEEL_OK) {
        reply_status(r, st == KEEL_ERR_TOO_LARGE ? KEEL_ERR_IO : st, "storing the bundle");
        return;
    }
    keel_fleet_campaign_t c;
    st = fleetd_campaign_create(f, path, p.model, p.percent, p.security, p.fail_permille, &c);
    if (st != KEEL_OK) {
        if (!existed && unlink(path) != 0)
            keel_log(KEEL_LOG_WARN, "admin: cannot remove %s: %s", path, strerror(errno));
        switch (st) {
        case KEEL_ERR_VERIFY:
        case KEEL_ERR_FORMAT:
        case KEEL_ERR_TOO_LARGE:
        case KEEL_ERR_UNSUPPORTED:
        case KEEL_ERR_CRYPTO:
            keel_log(KEEL_LOG_WARN, "admin: %s: a bundle was refused: %s", r->name, keel_error_message());
            fleetd_reply_error(r->req, 422, "bundle_rejected", keel_error_message());
            keel_error_clear();
            return;
        case KEEL_ERR_CONFIG:
            fleetd_reply_error(r->req, 503, "not_configured", keel_error_message());
            keel_error_clear();
            return;
        default:
            reply_status(r, st, "the campaign");
            return;
        }
    }
    keel_log(KEEL_LOG_INFO, "admin: %s created campaign %s (%s %s)", r->name, c.id, c.model, c.version);
    json_t *j = campaign_view(r, &c, &st);
    if (st != KEEL_OK) {
        reply_status(r, st, "the campaign");
        return;
    }
    char loc[sizeof FLEETD_API_PREFIX + 16 + KEEL_FLEET_CAMPAIGN_MAX];
    snprintf(loc, sizeof loc, "%scampaigns/%s", FLEETD_API_PREFIX, c.id);
    evhttp_add_header(evhttp_request_get_output_headers(r->req), "Location", loc);
    reply_ok(r, 201, j);
}

static void post_campaign_state(admin_req_t *r, keel_fleet_campaign_state_t to)
{
    if (!action_ok(r))
        return;
    keel_fleet_campaign_t c;
    keel_status_t st = keel_fleet_campaign_get(r->f->db, r->id, &c);
    if (st == KEEL_OK && c.state == KEEL_FLEET_CAMPAIGN_DONE) {
        fleetd_reply_error(r->req, 409, "conflict", "the campaign is done");
        return;
    }
    if (st == KEEL_OK && c.state != to)
        st = keel_fleet_campaign_set_state(r->f->db, r->id, to, r->now);
    if (st != KEEL_OK) {
        reply_status(r, st, "the campaign's state");
        return;
    }
    keel_log(KEEL_LOG_INFO, "admin: %s %s campaign %s", r->name,
             to == KEEL_FLEET_CAMPAIGN_PAUSED ? "paused" : "resumed", r->id);
    if (to == KEEL_FLEET_CAMPAIGN_RUNNING)
        fleetd_campaign_tick(r->f);
    st = keel_fleet_campaign_get(r->f->db, r->id, &c);
    json_t *j = st == KEEL_OK ? campaign_view(r, &c, &st) : NULL;
    if (st != KEEL_OK) {
        reply_status(r, st, "the campaign");
        return;
    }
    reply_ok(r, 200, j);
}

static void get_alerts(admin_req_t *r)
{
    fleetd_alert_params_t p;
    if (fleetd_alert_params(r->query, &p) != KEEL_OK) {
        bad_query(r);
        return;
    }
    json_t *list = NULL;
    keel_status_t st = keel_fleet_alert_list(r->f->db, p.since, p.kind[0] != '\0' ? p.kind : NULL,
                                             p.device[0] != '\0' ? p.device : NULL, p.limit, &list);
    if (st != KEEL_OK) {
        reply_status(r, st, "the alert list");
        return;
    }
    reply_list(r, "alerts", list);
}

/* ---- dispatch ------------------------------------------------------------------------------------------ */

static void serve_static(struct evhttp_request *req, const char *path)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        fleetd_reply_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    if (strcmp(path, "/") == 0 || strcmp(path, "/dashboard") == 0)
        path = "/index.html";
    for (size_t i = 0; i < fleet_ui_assets_len; i++)
        if (strcmp(fleet_ui_assets[i].path, path) == 0) {
            reply_static(req, &fleet_ui_assets[i]);
            return;
        }
    fleetd_reply_error(req, 404, "not_found", NULL);
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_DELETE: return "DELETE";
    default: return "other";
    }
}

void fleetd_admin_handle(void *arg, struct evhttp_request *req, SSL *ssl)
{
    (void)ssl; /* operators authenticate with a token, not a client certificate */
    admin_req_t r = {.f = arg, .req = req, .now = (int64_t)time(NULL)};
    security_headers(req);
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u != NULL ? evhttp_uri_get_path(u) : NULL;
    if (path == NULL || path[0] != '/') {
        fleetd_reply_error(req, 400, "bad_request", "no path");
        return;
    }
    if (strncmp(path, "/api/", 5) != 0) {
        serve_static(req, path);
        return;
    }
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    r.method = method_name(cmd);
    r.path = path;
    r.query = evhttp_uri_get_query(u);
    peer(req, r.source);
    if (!authenticate(&r))
        return;
    fleetd_route_t route;
    fleetd_method_t m = cmd == EVHTTP_REQ_GET ? FLEETD_M_GET : cmd == EVHTTP_REQ_POST ? FLEETD_M_POST : FLEETD_M_OTHER;
    int code = strncmp(path, FLEETD_API_PREFIX, strlen(FLEETD_API_PREFIX)) == 0
                   ? fleetd_admin_route(m, path + strlen(FLEETD_API_PREFIX), &route)
                   : 404;
    if (code == 405) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", route.allow);
        fleetd_reply_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    if (code != 0) {
        fleetd_reply_error(req, 404, "not_found", NULL);
        return;
    }
    /* The export is a device's personal data: an operator's, not the dashboard's. */
    if ((route.write || route.kind == FLEETD_R_DEVICE_EXPORT) && r.role != FLEETD_ROLE_ADMIN) {
        keel_log(KEEL_LOG_WARN, "admin: %s (read-only) was refused %s %s", r.name, r.method, r.path);
        fleetd_reply_error(req, 403, "forbidden",
                           route.write ? "this token may only read" : "a device's data is exported with an admin token");
        return;
    }
    r.id = route.id;
    switch (route.kind) {
    case FLEETD_R_STATUS: get_status(&r); break;
    case FLEETD_R_DEVICES: get_devices(&r); break;
    case FLEETD_R_DEVICE: get_device(&r); break;
    case FLEETD_R_DEVICE_EXPORT: get_export(&r); break;
    case FLEETD_R_DEVICES_IMPORT: post_import(&r); break;
    case FLEETD_R_DEVICE_REVOKE: post_revoke(&r); break;
    case FLEETD_R_DEVICE_ERASE: post_erase(&r); break;
    case FLEETD_R_CAMPAIGNS: get_campaigns(&r); break;
    case FLEETD_R_CAMPAIGN_CREATE: post_campaign(&r); break;
    case FLEETD_R_CAMPAIGN: get_campaign(&r); break;
    case FLEETD_R_CAMPAIGN_PAUSE: post_campaign_state(&r, KEEL_FLEET_CAMPAIGN_PAUSED); break;
    case FLEETD_R_CAMPAIGN_RESUME: post_campaign_state(&r, KEEL_FLEET_CAMPAIGN_RUNNING); break;
    case FLEETD_R_ALERTS: get_alerts(&r); break;
    }
}

/* The api module's inside: shared by server.c (TLS, connections, replies)
 * and routes.c (what each route does). */
#ifndef KEEL_API_INTERNAL_H
#define KEEL_API_INTERNAL_H

#include "keel/api.h"
#include "keel/identity.h"
#include "worker.h"

#include <event2/http.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <sys/socket.h>

/* What evhttp may hold of one request body before it cuts the client off:
 * twice the JSON cap, so bodies a little over the cap get a 413 answer. */
#define KEEL_API_BODY_HELD_MAX (2u * KEEL_API_JSON_MAX)

/* One accepted TLS connection; freed when its SSL object is. */
typedef struct api_conn {
    struct api_conn *prev, *next; /* oldest first */
    keel_api_t *api;
    struct bufferevent *bev;
    double accepted; /* monotonic */
    double deadline; /* monotonic: the current request must be done by then */
    bool busy;       /* a worker is computing its answer */
    bool closing;    /* shut down, waiting for evhttp to free it */
    unsigned answered; /* requests answered on this connection */
    bool have_peer;
    struct sockaddr_storage peer;
    socklen_t peer_len;
} api_conn_t;

typedef enum { UPDATE_IDLE, UPDATE_UPLOADING, UPDATE_STAGED, UPDATE_INSTALLING, UPDATE_INSTALLED } api_update_state_t;

struct keel_api {
    keel_api_config_t c;                  /* c.cfg: the start configuration (identity, paths, [auth]) */
    const keel_config_t *update_defaults; /* [update] defaults: the start one, or the last reload */
    bool reset_pending;                   /* a factory reset waits for its password check */
    bool stopping;                        /* SIGTERM: answer, but start no new work */
    keel_api_limits_t limits;
    struct evhttp *http;
    struct evhttp_bound_socket *listener;
    SSL_CTX *ssl;
    char fingerprint[KEEL_FINGERPRINT_LEN];
    struct event *sweep;
    api_conn_t *conns_head, *conns_tail;
    unsigned n_conns; /* not closing */
    keel_workers_t *hashers, *installer;
    /* the update flow (docs/api.md, /api/v1/update) */
    api_update_state_t update_state;
    char staged_path[KEEL_PATH_MAX];
    bool staged_valid;
    keel_manifest_t staged;
    int upload_fd;                /* the staging file while an upload is in progress, else -1 */
    uint64_t upload_bytes;
    char last_error[KEEL_ERROR_MAX];
    keel_bootstate_t bs_snapshot; /* the boot state as of the last look (shown while installing) */
};

/* ---- server.c ------------------------------------------------------------ */
/* A JSON reply with the security headers; takes `body` (may be NULL: no body). */
void api_reply(struct evhttp_request *req, int code, json_t *body);
/* 200 with a static file (the UI); `data` must outlive the answer. */
void api_reply_static(struct evhttp_request *req, const char *type, const unsigned char *data, size_t len);
/* {"error": code[, "message": msg]} */
void api_error(struct evhttp_request *req, int code, const char *error, const char *msg);
/* The security headers every answer carries. */
void api_security_headers(struct evkeyvalq *h);
/* The connection record of a request (NULL when the connection is gone). */
api_conn_t *api_conn_of(struct evhttp_request *req);
/* The throttle source of a request's peer (KEEL_ERR_NOT_FOUND when gone). */
keel_status_t api_source(struct evhttp_request *req, char out[KEEL_AUTH_SOURCE_MAX]) KEEL_MUST_CHECK;
/* "host:port" or "[v6]:port" with a numeric address (KEEL_ERR_CONFIG otherwise). */
keel_status_t api_split_listen(const char *listen, char *host, size_t cap, uint16_t *port) KEEL_MUST_CHECK;
/* The connection to close when a new one arrives at the cap (NULL: none idle). */
api_conn_t *api_evict_pick(keel_api_t *api);
/* Unix seconds. */
int64_t api_wallclock(void);

/* ---- routes.c ------------------------------------------------------------ */
void api_route(struct evhttp_request *req, keel_api_t *api);
/* The keel_session token of a Cookie header, if there is one of the exact
 * token form (43 base64url characters); the header is capped at 4 KiB. */
bool api_cookie_token(const char *cookie, char out[KEEL_AUTH_TOKEN_LEN + 1]);
/* At start: removes a staged bundle a previous run left behind. */
void api_routes_start(keel_api_t *api);
/* Cancels work that holds requests (before the workers stop). */
void api_routes_shutdown(keel_api_t *api);

/* ---- json.c -------------------------------------------------------------- */
typedef enum { API_JSON_STRING, API_JSON_BOOL, API_JSON_STRING_OR_NULL } api_json_type_t;
typedef struct {
    const char *name;
    api_json_type_t type;
    bool required;
    size_t max_len; /* strings: bytes */
} api_json_field_t;
/*
 * Parses a request body as one JSON object: duplicate keys, unknown fields,
 * wrong types, strings over max_len or holding NUL, and missing required
 * fields are refused (KEEL_ERR_FORMAT with a message naming the field).
 */
keel_status_t api_json_parse(const char *body, size_t len, const api_json_field_t *fields, size_t n,
                             json_t **out) KEEL_MUST_CHECK;

#endif

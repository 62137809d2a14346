/*
 * The HTTPS server under keeld's API: evhttp over OpenSSL bufferevents, and
 * the guards evhttp 2.1 does not have (docs/internals/api.md):
 * - every connection is TLS: the bufferevent callback never hands evhttp a
 *   plaintext bufferevent it could fall back to, and a request that arrives
 *   on anything but a TLS bufferevent is dropped unanswered;
 * - a connection cap that evicts the oldest connection not being answered
 *   instead of refusing the newest (so slow clients cannot crowd others out);
 * - a deadline per request from the moment it may start (accept, or the
 *   previous answer), swept once a second while connections exist, so a
 *   client that trickles bytes is cut off however slowly it sends.
 * Connections are tracked through SSL ex_data, whose free callback is the
 * one place a record goes away, whoever frees the connection.
 */
#define _GNU_SOURCE
#include "internal.h"

#include "keel/crypto.h"
#include "keel/tls.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <openssl/x509.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Hash attempts waiting for a worker beyond the running ones. */
#define HASH_QUEUE_MAX 4

static int conn_index = -1;
static pthread_once_t conn_index_once = PTHREAD_ONCE_INIT;

int64_t api_wallclock(void)
{
    return (int64_t)time(NULL);
}

/* ---- connection records ------------------------------------------------- */

static void conn_unlink(keel_api_t *api, api_conn_t *c)
{
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        api->conns_head = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    else
        api->conns_tail = c->prev;
    c->prev = c->next = NULL;
    if (!c->closing)
        api->n_conns--;
}

static void conn_append(keel_api_t *api, api_conn_t *c)
{
    c->prev = api->conns_tail;
    c->next = NULL;
    if (api->conns_tail != NULL)
        api->conns_tail->next = c;
    else
        api->conns_head = c;
    api->conns_tail = c;
}

/* SSL_free of a connection's SSL: the record goes with it. */
static void conn_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    api_conn_t *c = ptr;
    if (c == NULL)
        return;
    keel_api_t *api = c->api;
    /* libevent frees a bufferevent later than bufferevent_free (as a
     * finalizer, possibly inside event_base_free): by then keel_api_free may
     * have detached the record from an API that is gone. */
    if (api == NULL) {
        free(c);
        return;
    }
    conn_unlink(api, c);
    if (api->conns_head == NULL && api->sweep != NULL)
        event_del(api->sweep); /* no connection, no timer: an idle keeld sleeps */
    free(c);
}

static void conn_index_init(void)
{
    conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_ex_free);
}

/* Cuts a connection off: the socket is shut down, evhttp sees the end of
 * the stream and frees the connection (and so the record) itself. */
static void conn_close(keel_api_t *api, api_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    api->n_conns--;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (fd >= 0 && shutdown(fd, SHUT_RDWR) != 0 && errno != ENOTCONN)
        keel_log(KEEL_LOG_DEBUG, "api: shutdown: %s", strerror(errno));
}

/* The bufferevent under a request (NULL when its connection is gone). */
static struct bufferevent *req_bev(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = req != NULL ? evhttp_request_get_connection(req) : NULL;
    return evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
}

api_conn_t *api_conn_of(struct evhttp_request *req)
{
    struct bufferevent *bev = req_bev(req);
    SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
    return ssl != NULL ? SSL_get_ex_data(ssl, conn_index) : NULL;
}

static void sweep_arm(keel_api_t *api)
{
    struct timeval one = {1, 0};
    if (!event_pending(api->sweep, EV_TIMEOUT, NULL))
        event_add(api->sweep, &one);
}

/* Once a second while connections exist: ends requests past their deadline. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    keel_api_t *api = arg;
    double now = keel_now();
    for (api_conn_t *c = api->conns_head, *next; c != NULL; c = next) {
        next = c->next;
        if (!c->busy && !c->closing && now >= c->deadline) {
            keel_log(KEEL_LOG_DEBUG, "api: a request missed its deadline; connection closed");
            conn_close(api, c);
        }
    }
    if (api->conns_head != NULL)
        sweep_arm(api);
}

/* The peer address of a connection, read once its socket is known. */
static bool conn_peer(api_conn_t *c)
{
    if (c->have_peer)
        return true;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    socklen_t len = sizeof c->peer;
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&c->peer, &len) != 0)
        return false;
    c->peer_len = len;
    c->have_peer = true;
    return true;
}

static uint64_t peer_key(const api_conn_t *c)
{
    /* FNV-1a over the address bytes (not the port): one key per host. */
    const uint8_t *p = NULL;
    size_t n = 0;
    if (c->peer.ss_family == AF_INET) {
        p = (const uint8_t *)&((const struct sockaddr_in *)&c->peer)->sin_addr;
        n = 4;
    } else if (c->peer.ss_family == AF_INET6) {
        p = (const uint8_t *)&((const struct sockaddr_in6 *)&c->peer)->sin6_addr;
        n = 16;
    }
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/*
 * Which connection goes when a new one arrives at the cap. Never one whose
 * answer is being computed. The host holding the most idle connections
 * gives one up: a flood from one host, or a few, only ever evicts itself,
 * and a client on another host keeps its connection however fast the flood
 * comes. Within that host: first a connection past its grace period that
 * never completed a request (a slow handshake or header), then its oldest
 * past the grace period, then its oldest. The grace period lets a new
 * connection finish its first request before it can be picked.
 */
#define EVICT_GRACE_S 2.0

api_conn_t *api_evict_pick(keel_api_t *api)
{
    enum { SLOTS = 8192 }; /* > 2 x the largest max_connections: the probe always ends */
    static uint64_t keys[SLOTS];
    static uint32_t counts[SLOTS];
    memset(counts, 0, sizeof counts);
    uint64_t best_key = 0;
    uint32_t best_count = 0;
    api_conn_t *oldest = NULL;
    for (api_conn_t *c = api->conns_head; c != NULL; c = c->next) {
        if (c->busy || c->closing)
            continue;
        if (oldest == NULL)
            oldest = c;
        if (!conn_peer(c))
            continue;
        uint64_t k = peer_key(c);
        size_t i = (size_t)(k % SLOTS);
        while (counts[i] != 0 && keys[i] != k)
            i = (i + 1) % SLOTS;
        keys[i] = k;
        if (++counts[i] > best_count) {
            best_count = counts[i];
            best_key = k;
        }
    }
    if (best_count == 0)
        return oldest;
    /* The list is oldest first. */
    double now = keel_now();
    api_conn_t *slow = NULL, *old = NULL, *any = NULL;
    for (api_conn_t *c = api->conns_head; c != NULL && slow == NULL; c = c->next) {
        if (c->busy || c->closing || !c->have_peer || peer_key(c) != best_key)
            continue;
        bool past_grace = now - c->accepted >= EVICT_GRACE_S;
        if (past_grace && c->answered == 0)
            slow = c;
        if (past_grace && old == NULL)
            old = c;
        if (any == NULL)
            any = c;
    }
    return slow != NULL ? slow : old != NULL ? old : any;
}

/* The output of a connection that could not get TLS: emptied as it fills. */
static void plaintext_sink(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)arg;
    if (info->n_added > 0)
        evbuffer_drain(buf, evbuffer_get_length(buf));
}

/*
 * evhttp asks for a bufferevent for each accepted connection. Returning NULL
 * would make evhttp use a plaintext one, so on failure this returns a socket
 * bufferevent with no SSL: api_conn_of finds no record for it and every
 * request on it is dropped unanswered (the guard in on_request).
 */
static struct bufferevent *on_new_conn(struct event_base *base, void *arg)
{
    keel_api_t *api = arg;
    /* At the cap, one connection makes room; the newest is never refused. */
    if (api->n_conns >= api->limits.max_connections) {
        api_conn_t *victim = api_evict_pick(api);
        if (victim != NULL) {
            keel_log(KEEL_LOG_DEBUG, "api: at %u connections; one of the busiest source's oldest is closed",
                     api->limits.max_connections);
            conn_close(api, victim);
        }
    }
    api_conn_t *c = calloc(1, sizeof *c);
    SSL *ssl = c != NULL ? SSL_new(api->ssl) : NULL;
    struct bufferevent *bev = NULL;
    if (ssl != NULL) {
        /* On failure libevent 2.1 frees the SSL itself (once it got that
         * far): it is not touched again here, and the record is attached
         * only once the bufferevent exists, so a failure never runs the
         * record's free callback. */
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (bev != NULL && SSL_set_ex_data(ssl, conn_index, c) == 1) {
            c->api = api;
            c->bev = bev;
            c->accepted = keel_now();
            c->deadline = c->accepted + api->limits.request_timeout;
            conn_append(api, c);
            api->n_conns++;
            sweep_arm(api);
            return bev;
        }
        if (bev != NULL)
            bufferevent_free(bev); /* frees the SSL, which holds no record */
    } else if (c != NULL) {
        keel_error_clear();
    }
    /* Failed: no TLS for this connection, so no HTTP either. */
    free(c);
    keel_log(KEEL_LOG_ERROR, "api: cannot set up TLS for a connection (out of memory?); it is dropped");
    /* evhttp must get a bufferevent (NULL means plaintext); this one throws
     * away whatever evhttp writes, so not even its error pages leave in the
     * clear, and the evhttp timeout ends it. */
    bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev != NULL && evbuffer_add_cb(bufferevent_get_output(bev), plaintext_sink, NULL) == NULL) {
        bufferevent_free(bev);
        bev = NULL;
    }
    return bev;
}

/* ---- replies -------------------------------------------------------------- */

void api_security_headers(struct evkeyvalq *h)
{
    evhttp_add_header(h, "Strict-Transport-Security", "max-age=31536000");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "Content-Security-Policy",
                      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                      "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "Cache-Control", "no-store");
}

static void conn_answered(struct evhttp_request *req)
{
    api_conn_t *c = api_conn_of(req);
    if (c == NULL)
        return;
    c->busy = false;
    c->answered++;
    /* The next request on this connection has a full deadline from now,
     * and the connection moves to the young end of the eviction order. */
    c->deadline = keel_now() + c->api->limits.request_timeout;
    if (!c->closing) {
        conn_unlink(c->api, c);
        c->api->n_conns++;
        conn_append(c->api, c);
    }
}

void api_reply(struct evhttp_request *req, int code, json_t *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    api_security_headers(h);
    struct evbuffer *out = NULL;
    char *text = NULL;
    if (body != NULL) {
        text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        out = text != NULL ? evbuffer_new() : NULL;
        if (out == NULL || evbuffer_add(out, text, strlen(text)) != 0) {
            code = 500;
            if (out != NULL)
                evbuffer_free(out);
            out = evbuffer_new();
            if (out != NULL && evbuffer_add(out, "{\"error\":\"internal\"}", 20) != 0) {
                evbuffer_free(out);
                out = NULL;
            }
        }
        evhttp_add_header(h, "Content-Type", "application/json");
    }
    const char *reason = code == 200 ? "OK" : code == 201 ? "Created" : code == 202 ? "Accepted"
                       : code == 204 ? "No Content" : code == 429 ? "Too Many Requests" : NULL;
    conn_answered(req);
    evhttp_send_reply(req, code, reason, out);
    if (out != NULL)
        evbuffer_free(out);
    if (text != NULL) {
        keel_wipe(text, strlen(text)); /* a login answer holds a session token */
        free(text);
    }
}

void api_reply_static(struct evhttp_request *req, const char *type, const unsigned char *data, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    api_security_headers(h);
    evhttp_add_header(h, "Content-Type", type);
    struct evbuffer *out = evbuffer_new();
    if (out == NULL || evbuffer_add_reference(out, data, len, NULL, NULL) != 0) {
        if (out != NULL)
            evbuffer_free(out);
        api_error(req, 500, "internal", NULL);
        return;
    }
    conn_answered(req);
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

void api_error(struct evhttp_request *req, int code, const char *error, const char *msg)
{
    json_t *j = json_pack("{s:s}", "error", error);
    if (j != NULL && msg != NULL)
        json_object_set_new(j, "message", json_string(msg));
    api_reply(req, code, j);
}

keel_status_t api_source(struct evhttp_request *req, char out[KEEL_AUTH_SOURCE_MAX])
{
    struct bufferevent *bev = req_bev(req);
    evutil_socket_t fd = bev != NULL ? bufferevent_getfd(bev) : -1;
    struct sockaddr_storage ss, local;
    socklen_t len = sizeof ss, llen = sizeof local;
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return keel_errorf(KEEL_ERR_NOT_FOUND, "the connection is gone");
    /* Our own address tells the auth module which peers share our LAN. */
    bool have_local = getsockname(fd, (struct sockaddr *)&local, &llen) == 0;
    return keel_auth_source_from_addr((struct sockaddr *)&ss, have_local ? (struct sockaddr *)&local : NULL, out);
}

/* ---- requests -------------------------------------------------------------- */

static void on_request(struct evhttp_request *req, void *arg)
{
    keel_api_t *api = arg;
    api_conn_t *c = api_conn_of(req);
    if (c == NULL) {
        /* Not a TLS connection of ours: evhttp's plaintext fallback. Nothing
         * is answered; the socket is shut before the reply can be written. */
        struct bufferevent *bev = req_bev(req);
        if (bev != NULL && bufferevent_getfd(bev) >= 0)
            shutdown(bufferevent_getfd(bev), SHUT_RDWR);
        evhttp_send_reply(req, 400, NULL, NULL);
        return;
    }
    if (c->closing) {
        evhttp_send_reply(req, 503, NULL, NULL);
        return;
    }
    api_route(req, api);
}

/* ---- TLS context ------------------------------------------------------------ */

static keel_status_t tls_error(const char *what)
{
    return keel_crypto_error(KEEL_ERR_CRYPTO, what);
}

static keel_status_t tls_context(keel_api_t *api)
{
    const keel_config_t *cfg = api->c.cfg;
    char cert_path[KEEL_PATH_MAX], chain_path[KEEL_PATH_MAX];
    keel_status_t st = keel_config_path(cfg, "identity", "certificate", cert_path);
    if (st == KEEL_OK)
        st = keel_config_path(cfg, "identity", "chain", chain_path);
    if (st != KEEL_OK)
        return keel_errorf(KEEL_ERR_CONFIG, "[identity] certificate and chain must be set");
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return tls_error("SSL_CTX_new");
    api->ssl = ctx;
    if ((st = keel_tls_policy(ctx)) != KEEL_OK)
        return st;
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_CLEANSE_PLAINTEXT);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    st = keel_tls_use_identity(ctx, api->c.ks, keel_config_str(cfg, "keystore", "key_label"), cert_path, chain_path);
    if (st != KEEL_OK)
        return st;
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    return keel_identity_fingerprint(cert, api->fingerprint);
}

/* ---- listening --------------------------------------------------------------- */

keel_status_t api_split_listen(const char *listen, char *host, size_t cap, uint16_t *port)
{
    const char *colon;
    size_t hlen;
    if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (end == NULL || end[1] != ':')
            return keel_errorf(KEEL_ERR_CONFIG, "api.listen: \"%s\" is not [address]:port", listen);
        hlen = (size_t)(end - listen - 1);
        memmove(host, listen + 1, hlen < cap ? hlen : 0);
        colon = end + 1;
    } else {
        colon = strrchr(listen, ':');
        if (colon == NULL)
            return keel_errorf(KEEL_ERR_CONFIG, "api.listen: \"%s\" is not address:port", listen);
        hlen = (size_t)(colon - listen);
        if (memchr(listen, ':', hlen) != NULL)
            return keel_errorf(KEEL_ERR_CONFIG, "api.listen: an IPv6 address goes in brackets: [%.*s]:port",
                               (int)hlen, listen);
        memmove(host, listen, hlen < cap ? hlen : 0);
    }
    if (hlen == 0 || hlen >= cap)
        return keel_errorf(KEEL_ERR_CONFIG, "api.listen: \"%s\" has no usable address", listen);
    host[hlen] = '\0';
    char *end = NULL;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || p > 65535)
        return keel_errorf(KEEL_ERR_CONFIG, "api.listen: \"%s\" has no valid port", listen);
    struct in6_addr a6;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) != 1 && inet_pton(AF_INET6, host, &a6) != 1)
        return keel_errorf(KEEL_ERR_CONFIG, "api.listen: \"%s\" is not a numeric address", host);
    *port = (uint16_t)p;
    return KEEL_OK;
}

keel_status_t keel_api_listen_check(const char *listen)
{
    char host[64];
    uint16_t port;
    return api_split_listen(listen, host, sizeof host, &port);
}

keel_api_limits_t keel_api_limits(const keel_config_t *c)
{
    keel_api_limits_t l = {
        .max_connections = (uint32_t)keel_config_uint(c, "api", "max_connections"),
        .request_timeout = (uint32_t)keel_config_uint(c, "api", "request_timeout"),
        .upload_max = keel_config_uint(c, "api", "upload_max"),
    };
    return l;
}

void keel_api_set_limits(keel_api_t *api, keel_api_limits_t limits)
{
    api->limits = limits;
    evhttp_set_timeout(api->http, (int)limits.request_timeout);
}

void keel_api_set_update_defaults(keel_api_t *api, const keel_config_t *cfg)
{
    api->update_defaults = cfg;
}

keel_slots_t *keel_api_slots(keel_api_t *api)
{
    return api->c.slots;
}

const char *keel_api_fingerprint(const keel_api_t *api)
{
    return api->fingerprint;
}

keel_status_t keel_api_start(const keel_api_config_t *c, const char *listen, keel_api_limits_t limits,
                             keel_api_t **out)
{
    if (c == NULL || c->base == NULL || c->cfg == NULL || c->ks == NULL || c->vault == NULL ||
        c->auth == NULL || c->slots == NULL || listen == NULL || out == NULL) {
        if (c != NULL)
            keel_slots_close(c->slots);
        return keel_errorf(KEEL_ERR_ARG, "api: missing argument");
    }
    pthread_once(&conn_index_once, conn_index_init);
    if (conn_index < 0)
        return tls_error("SSL_get_ex_new_index");
    char host[64];
    uint16_t port = 0;
    keel_status_t st = api_split_listen(listen, host, sizeof host, &port);
    keel_api_t *api = st == KEEL_OK ? calloc(1, sizeof *api) : NULL;
    if (api == NULL) {
        keel_slots_close(c->slots);
        return st != KEEL_OK ? st : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    api->c = *c;
    api->update_defaults = c->cfg;
    api->limits = limits;
    api->upload_fd = -1;
    unsigned threads = c->hash_threads >= 1 && c->hash_threads <= KEEL_AUTH_PARALLEL_MAX ? c->hash_threads : 1;
    st = tls_context(api);
    if (st == KEEL_OK)
        api_routes_start(api);
    if (st == KEEL_OK)
        st = keel_workers_start(c->base, threads, HASH_QUEUE_MAX, &api->hashers);
    if (st == KEEL_OK)
        st = keel_workers_start(c->base, 1, 1, &api->installer);
    if (st == KEEL_OK) {
        api->sweep = evtimer_new(c->base, on_sweep, api);
        api->http = api->sweep != NULL ? evhttp_new(c->base) : NULL;
        if (api->http == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "api: evhttp_new failed");
    }
    if (st == KEEL_OK) {
        evhttp_set_bevcb(api->http, on_new_conn, api);
        evhttp_set_gencb(api->http, on_request, api);
        evhttp_set_max_headers_size(api->http, KEEL_API_HEADERS_MAX);
        /* evhttp reads a body up to twice the cap, so a body a little over
         * it gets our 413 (after it is read: closing on unread data would
         * make the client see a reset, not the answer); a body past that is
         * cut off as its length arrives. Per connection that bounds what a
         * client can make keeld hold at 128 KiB. */
        evhttp_set_max_body_size(api->http, KEEL_API_BODY_HELD_MAX);
        evhttp_set_allowed_methods(api->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                                  EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
        evhttp_set_default_content_type(api->http, "application/json");
        keel_api_set_limits(api, limits);
        api->listener = evhttp_bind_socket_with_handle(api->http, host, port);
        if (api->listener == NULL)
            st = keel_errorf(KEEL_ERR_IO, "api: cannot listen on %s: %s", listen, strerror(errno));
        /* An answer leaves as TLS records of the header and of the body; with
         * Nagle on, the second waits for the client's delayed ACK (40 ms on
         * Linux). Accepted sockets inherit TCP_NODELAY from the listener. */
        int one = 1;
        if (st == KEEL_OK && setsockopt(evhttp_bound_socket_get_fd(api->listener), IPPROTO_TCP, TCP_NODELAY, &one,
                                        sizeof one) != 0)
            keel_log(KEEL_LOG_WARN, "api: cannot set TCP_NODELAY (%s): answers may wait for delayed ACKs",
                     strerror(errno));
    }
    if (st != KEEL_OK) {
        keel_api_free(api);
        return st;
    }
    *out = api;
    return KEEL_OK;
}

void keel_api_stop_listening(keel_api_t *api)
{
    if (api != NULL)
        api->stopping = true; /* no new password checks or installs either */
    if (api != NULL && api->listener != NULL) {
        evhttp_del_accept_socket(api->http, api->listener);
        api->listener = NULL;
    }
}

bool keel_api_busy(keel_api_t *api)
{
    return api != NULL && (keel_workers_pending(api->hashers) > 0 || keel_workers_pending(api->installer) > 0);
}

void keel_api_free(keel_api_t *api)
{
    if (api == NULL)
        return;
    api_routes_shutdown(api);
    /* Workers first: their done callbacks answer the requests they hold
     * while evhttp still exists. */
    keel_workers_free(api->hashers);
    keel_workers_free(api->installer);
    /* The records outlive this call (their SSL objects are freed when the
     * event base runs its finalizers): they are detached from the API first. */
    for (api_conn_t *c = api->conns_head, *next; c != NULL; c = next) {
        next = c->next;
        c->prev = c->next = NULL;
        c->api = NULL;
    }
    api->conns_head = api->conns_tail = NULL;
    api->n_conns = 0;
    if (api->http != NULL)
        evhttp_free(api->http);
    if (api->sweep != NULL)
        event_free(api->sweep);
    SSL_CTX_free(api->ssl);
    keel_manifest_free(&api->staged);
    keel_slots_close(api->c.slots);
    free(api);
}

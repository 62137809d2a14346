/*
 * keel-fleetd's two HTTPS listeners (fleetd.h): evhttp over OpenSSL
 * bufferevents. Every connection is TLS from its first byte (no plaintext
 * path); connections are capped; a request runs only once the handshake is
 * done, with its SSL handed to the handler (the update server reads the
 * device's certificate from it).
 */
#define _GNU_SOURCE
#include "fleetd.h"

#include "keel/crypto.h"
#include "keel/link.h"
#include "keel/tls.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define HOST_MAX 128
#define HEADERS_MAX (16u * 1024u)

struct fleetd_https {
    fleetd_https_config_t c;
    struct evhttp *http;
    struct evhttp_bound_socket *listener;
    SSL_CTX *ctx;
    unsigned n_conns; /* accepted and not yet closed, handshakes included */
    bool paused;      /* the listener stopped accepting at max_connections */
    bool closing;     /* evhttp_free is running: the listener is gone */
    unsigned port;
};

/* One per accepted connection (SSL ex_data), from accept until the SSL object is freed. */
typedef struct {
    fleetd_https_t *h;
    void (*on_close)(void *arg);
    void *arg;
} conn_t;

static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    conn_t *c = arg;
    if (c->on_close != NULL)
        c->on_close(c->arg);
    c->on_close = NULL;
}

/* Every connection ends here (its SSL freed with its bufferevent), whether
 * or not it got as far as a request: the count frees a place, and a
 * listener paused at the cap accepts again. Runs for every SSL object of
 * the process (ptr NULL for those not ours). */
static void conn_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    conn_t *c = ptr;
    if (c == NULL)
        return;
    fleetd_https_t *h = c->h;
    if (h->n_conns > 0)
        h->n_conns--;
    if (h->paused && !h->closing && h->n_conns < h->c.max_connections &&
        evconnlistener_enable(evhttp_bound_socket_get_listener(h->listener)) == 0)
        h->paused = false;
    free(c);
}

static int counted_index = -1;
static pthread_once_t counted_once = PTHREAD_ONCE_INIT;
static void counted_init(void)
{
    counted_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_ex_free);
}

void fleetd_https_on_close(struct evhttp_request *req, void (*fn)(void *arg), void *arg)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
    SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
    conn_t *c = ssl != NULL ? SSL_get_ex_data(ssl, counted_index) : NULL;
    if (c != NULL) {
        c->on_close = fn;
        c->arg = arg;
    }
}

/* Drops whatever evhttp writes on a connection that got no TLS. */
static void plaintext_sink(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)arg;
    if (info->n_added > 0)
        evbuffer_drain(buf, evbuffer_get_length(buf));
}

/* evhttp takes a NULL bufferevent as "plaintext": on failure it gets a
 * socket bufferevent whose output goes nowhere (on_request finds no SSL and
 * answers nothing; the timeout ends it). */
static struct bufferevent *on_new_conn(struct event_base *base, void *arg)
{
    fleetd_https_t *h = arg;
    SSL *ssl = SSL_new(h->ctx);
    conn_t *c = ssl != NULL ? calloc(1, sizeof *c) : NULL;
    if (c != NULL && SSL_set_ex_data(ssl, counted_index, c) != 1) {
        free(c);
        c = NULL;
    }
    struct bufferevent *bev = NULL;
    if (c != NULL) {
        /* From here the SSL object owns c (conn_ex_free). */
        c->h = h;
        h->n_conns++;
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    }
    if (ssl != NULL && c == NULL)
        SSL_free(ssl); /* (a failed bufferevent_openssl_socket_new frees it itself: BEV_OPT_CLOSE_ON_FREE) */
    /* At the cap, stop accepting: the kernel's backlog holds the next ones
     * until a connection ends (request_timeout bounds how long an idle or
     * stalled one may hold its place). Descriptors stay bounded. */
    if (h->n_conns >= h->c.max_connections && !h->paused &&
        evconnlistener_disable(evhttp_bound_socket_get_listener(h->listener)) == 0) {
        h->paused = true;
        keel_log(KEEL_LOG_WARN, "%s: %u connections open: not accepting more until one ends", h->c.name,
                 h->n_conns);
    }
    if (bev != NULL)
        return bev;
    ERR_clear_error();
    keel_log(KEEL_LOG_ERROR, "%s: cannot set up TLS for a connection; it is dropped", h->c.name);
    bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev != NULL && evbuffer_add_cb(bufferevent_get_output(bev), plaintext_sink, NULL) == NULL) {
        bufferevent_free(bev);
        bev = NULL;
    }
    return bev;
}

static SSL *req_ssl(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon != NULL ? evhttp_connection_get_bufferevent(evcon) : NULL;
    return bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    fleetd_https_t *h = arg;
    SSL *ssl = req_ssl(req);
    if (ssl == NULL)
        return; /* no TLS: nothing is answered in the clear */
    conn_t *c = SSL_get_ex_data(ssl, counted_index);
    if (c == NULL)
        return;
    /* evhttp calls it before it frees the connection (and with it the SSL and c) */
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), conn_closed, c);
    h->c.handler(h->c.arg, req, ssl);
}

static keel_status_t split_listen(const char *listen, char *host, size_t cap, uint16_t *port)
{
    int p = 0;
    keel_status_t st = keel_link_split_broker(listen, host, cap, &p);
    if (st != KEEL_OK)
        return keel_errorf(KEEL_ERR_CONFIG, "listen address \"%.64s\" is not host:port", listen);
    *port = (uint16_t)p;
    return KEEL_OK;
}

keel_status_t fleetd_https_start(const fleetd_https_config_t *c, fleetd_https_t **out)
{
    char host[HOST_MAX];
    uint16_t port = 0;
    keel_status_t st = split_listen(c->listen, host, sizeof host, &port);
    if (st != KEEL_OK)
        return st;
    pthread_once(&counted_once, counted_init);
    if (counted_index < 0)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "SSL_get_ex_new_index");
    fleetd_https_t *h = calloc(1, sizeof *h);
    if (h == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    h->c = *c;
    h->ctx = c->ctx;
    SSL_CTX_up_ref(h->ctx);
    h->http = evhttp_new(c->base);
    if (h->http == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "%s: evhttp_new failed", c->name);
    if (st == KEEL_OK) {
        evhttp_set_bevcb(h->http, on_new_conn, h);
        evhttp_set_gencb(h->http, on_request, h);
        evhttp_set_max_headers_size(h->http, HEADERS_MAX);
        evhttp_set_max_body_size(h->http, c->body_max);
        evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST | EVHTTP_REQ_DELETE);
        evhttp_set_timeout(h->http, (int)c->request_timeout_s);
        evhttp_set_default_content_type(h->http, "application/json");
        h->listener = evhttp_bind_socket_with_handle(h->http, host, port);
        if (h->listener == NULL)
            st = keel_errorf(KEEL_ERR_IO, "%s: cannot listen on %s: %s", c->name, c->listen, strerror(errno));
    }
    if (st == KEEL_OK) {
        evutil_socket_t fd = evhttp_bound_socket_get_fd(h->listener);
        int one = 1;
        struct sockaddr_storage ss = {0};
        socklen_t sl = sizeof ss;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
            keel_log(KEEL_LOG_WARN, "%s: cannot set TCP_NODELAY: %s", c->name, strerror(errno));
        /* NOLINTBEGIN(clang-analyzer-core.CallAndMessage): getsockname filled ss, which the analyzer loses */
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            h->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                               : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        /* NOLINTEND(clang-analyzer-core.CallAndMessage) */
    }
    if (st != KEEL_OK) {
        fleetd_https_free(h);
        return st;
    }
    *out = h;
    return KEEL_OK;
}

unsigned fleetd_https_port(const fleetd_https_t *h)
{
    return h->port;
}

void fleetd_https_free(fleetd_https_t *h)
{
    if (h == NULL)
        return;
    h->closing = true;
    if (h->http != NULL)
        evhttp_free(h->http);
    SSL_CTX_free(h->ctx);
    free(h);
}

void fleetd_reply_json(struct evhttp_request *req, int code, json_t *j)
{
    struct evbuffer *b = evbuffer_new();
    char *text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    evhttp_add_header(oh, "Cache-Control", "no-store");
    evhttp_add_header(oh, "X-Content-Type-Options", "nosniff");
    if (text != NULL) {
        evhttp_add_header(oh, "Content-Type", "application/json");
        if (b != NULL)
            evbuffer_add(b, text, strlen(text));
        free(text);
    }
    const char *reason = code == 200 ? "OK" : code == 201 ? "Created" : code == 204 ? "No Content" : NULL;
    evhttp_send_reply(req, code, reason, code == 204 ? NULL : b);
    if (b != NULL)
        evbuffer_free(b);
}

void fleetd_reply_error(struct evhttp_request *req, int code, const char *error, const char *detail)
{
    fleetd_reply_json(req, code, json_pack("{s:s, s:s?}", "error", error, "detail", detail));
}

/* ---- server contexts ------------------------------------------------------------------------- */

static keel_status_t client_trust(SSL_CTX *ctx, const char *client_ca, const char *crl_path)
{
    STACK_OF(X509) *sk = NULL;
    keel_status_t st = keel_tls_read_certs(client_ca, &sk);
    if (st != KEEL_OK)
        return st;
    X509_STORE *store = X509_STORE_new();
    if (store == NULL)
        st = keel_crypto_error(KEEL_ERR_NOMEM, "X509_STORE_new");
    for (int i = 0; st == KEEL_OK && i < sk_X509_num(sk); i++)
        if (X509_STORE_add_cert(store, sk_X509_value(sk, i)) != 1)
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "X509_STORE_add_cert");
    if (st == KEEL_OK && crl_path != NULL) {
        keel_buf_t b;
        keel_buf_init(&b, 16u * 1024u * 1024u);
        st = keel_file_read(crl_path, 16u * 1024u * 1024u, &b);
        BIO *bio = st == KEEL_OK ? BIO_new_mem_buf(b.data, (int)b.len) : NULL;
        X509_CRL *crl;
        unsigned n = 0;
        while (bio != NULL && (crl = PEM_read_bio_X509_CRL(bio, NULL, keel_pem_no_password, NULL)) != NULL) {
            if (X509_STORE_add_crl(store, crl) != 1)
                st = keel_crypto_error(KEEL_ERR_CRYPTO, "X509_STORE_add_crl");
            X509_CRL_free(crl);
            n++;
        }
        ERR_clear_error();
        BIO_free(bio);
        keel_buf_free(&b);
        if (st == KEEL_OK && n == 0)
            st = keel_errorf(KEEL_ERR_CONFIG, "%s holds no CRL", crl_path);
        /* The leaf is checked against its issuer's CRL: a revoked device ends in the handshake. */
        if (st == KEEL_OK)
            X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    if (st == KEEL_OK)
        SSL_CTX_set_cert_store(ctx, store);
    else
        X509_STORE_free(store);
    sk_X509_pop_free(sk, X509_free);
    return st;
}

keel_status_t fleetd_server_ctx(const char *cert, const char *chain, const char *key, const char *client_ca,
                                const char *crl_path, SSL_CTX **out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "SSL_CTX_new");
    keel_status_t st = keel_tls_policy(ctx);
    EVP_PKEY *k = NULL;
    if (st == KEEL_OK)
        st = fleetd_load_key(key, &k);
    if (st == KEEL_OK)
        st = keel_tls_use_identity_key(ctx, k, cert, chain);
    EVP_PKEY_free(k);
    if (st == KEEL_OK && client_ca != NULL) {
        st = client_trust(ctx, client_ca, crl_path);
        /* No certificate, no connection: a stranger costs one handshake. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        SSL_CTX_set_verify_depth(ctx, 3);
        if (st == KEEL_OK && X509_VERIFY_PARAM_set_purpose(SSL_CTX_get0_param(ctx), X509_PURPOSE_SSL_CLIENT) != 1)
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "client purpose");
    }
    if (st != KEEL_OK) {
        SSL_CTX_free(ctx);
        return st;
    }
    *out = ctx;
    return KEEL_OK;
}

keel_status_t fleetd_server_ctx_crl(SSL_CTX *ctx, const char *client_ca, const char *crl_path)
{
    /* A new store replaces the old one; connections that hold the old one keep it until they end. */
    return client_trust(ctx, client_ca, crl_path);
}

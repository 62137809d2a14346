/*
 * The update server (fleetd.h, docs/fleet-protocol.md): bundles only for
 * registered, non-revoked devices that a running campaign selected.
 *
 * The TLS handshake already required a certificate of the device CA (and
 * checked the CRL when there is one). Here the certificate is matched to the
 * registry: its CN names the device, and its SHA-256 must be the one the
 * factory manifest registered, so another certificate for the same id (from
 * a compromised line, say) gets nothing.
 */
#define _GNU_SOURCE
#include "fleetd.h"

#include "keel/crypto.h"
#include "keel/identity.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/x509.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SEND_PIECE (64u * 1024u)
/* Downloads one device may have running at once: a resume may overlap the
 * stalled transfer it replaces, more is a device hogging the connections. */
#define DOWNLOADS_PER_DEVICE 2
#define BUNDLES_PREFIX "/v1/bundles/"

/* The device behind the connection, checked against the registry. */
static int peer_device(fleetd_t *f, SSL *ssl, keel_fleet_device_t *d, const char **why)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (cert == NULL) {
        *why = "no client certificate";
        return 401;
    }
    char cn[KEEL_FLEET_ID_MAX + 1];
    X509_NAME *sub = X509_get_subject_name(cert);
    int n = X509_NAME_get_text_by_NID(sub, NID_commonName, cn, sizeof cn);
    /* One CN that is a device id, or nothing: it is looked up and logged (no NUL, no control characters). */
    if (n <= 0 || (size_t)n >= sizeof cn || strlen(cn) != (size_t)n || !keel_identity_id_ok(cn) ||
        X509_NAME_get_index_by_NID(sub, NID_commonName, X509_NAME_get_index_by_NID(sub, NID_commonName, -1)) >= 0) {
        *why = "the certificate names no device";
        return 403;
    }
    unsigned char *der = NULL;
    int dlen = i2d_X509(cert, &der);
    if (dlen <= 0) {
        *why = "internal";
        return 500;
    }
    uint8_t sha[KEEL_SHA256_LEN];
    char hex[2 * KEEL_SHA256_LEN + 1];
    keel_sha256(der, (size_t)dlen, sha);
    OPENSSL_free(der);
    if (keel_hex_encode(sha, sizeof sha, hex, sizeof hex) != KEEL_OK) {
        keel_error_clear();
        *why = "internal";
        return 500;
    }
    keel_status_t st = keel_fleet_device_get(f->db, cn, d);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        keel_log(KEEL_LOG_WARN, "fleet: update server: a certificate for unregistered device %s was refused", cn);
        *why = "not a registered device";
        return 403;
    }
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "fleet: update server: %s", keel_error_message());
        keel_error_clear();
        *why = "internal";
        return 500;
    }
    if (!keel_ct_equal(hex, d->cert_sha256, sizeof hex - 1)) {
        keel_log(KEEL_LOG_WARN, "fleet: update server: %s presented a certificate that is not the registered one", cn);
        *why = "not the registered certificate";
        return 403;
    }
    if (d->state == KEEL_FLEET_DEV_REVOKED) {
        keel_log(KEEL_LOG_WARN, "fleet: update server: revoked device %s refused", cn);
        *why = "revoked";
        return 403;
    }
    return 0;
}

/* The running campaign that selected this device and whose version it does not run yet. */
static int device_campaign(fleetd_t *f, const keel_fleet_device_t *d, const char *want_id, keel_fleet_campaign_t *c)
{
    keel_status_t st = want_id != NULL ? keel_fleet_campaign_get(f->db, want_id, c)
                                       : keel_fleet_campaign_running(f->db, d->model, c);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        return 404;
    }
    if (st != KEEL_OK) {
        keel_error_clear();
        return 500;
    }
    if (c->state != KEEL_FLEET_CAMPAIGN_RUNNING || strcmp(c->model, d->model) != 0)
        return 404;
    char cur[16] = "";
    if (keel_fleet_campaign_device_get(f->db, c->id, d->id, cur) != KEEL_OK) {
        keel_error_clear();
        return 500;
    }
    if (cur[0] == '\0' || strcmp(cur, "confirmed") == 0 || strcmp(cur, "failed") == 0)
        return 404;
    return 0;
}

static void route_update(fleetd_t *f, struct evhttp_request *req, const keel_fleet_device_t *d)
{
    keel_fleet_campaign_t c;
    int code = device_campaign(f, d, NULL, &c);
    if (code == 404 || (code == 0 && strcmp(d->version, c.version) == 0)) {
        fleetd_reply_json(req, 204, NULL);
        return;
    }
    if (code != 0) {
        fleetd_reply_error(req, 500, "internal", NULL);
        return;
    }
    fleetd_reply_json(req, 200,
                      json_pack("{s:s, s:s, s:I, s:I, s:s, s:b}", "campaign", c.id, "version", c.version,
                                "security_version", (json_int_t)c.security_version, "size",
                                (json_int_t)c.bundle_size, "sha256", c.bundle_sha256, "security", c.security));
}

/* ---- streaming a bundle ------------------------------------------------------------------------ */

typedef struct sending {
    struct sending *prev, *next; /* every download in progress (the main loop's only) */
    struct evhttp_request *req;
    int fd;
    int64_t left;
    char device[KEEL_FLEET_ID_MAX + 1];
} sending_t;

static sending_t *g_sending;

static unsigned sending_count(const char *device)
{
    unsigned n = 0;
    for (const sending_t *s = g_sending; s != NULL; s = s->next)
        n += strcmp(s->device, device) == 0;
    return n;
}

static void sending_unlink_free(sending_t *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        g_sending = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    close(s->fd);
    free(s);
}

static void sending_free(sending_t *s)
{
    fleetd_https_on_close(s->req, NULL, NULL);
    sending_unlink_free(s);
}

/* The connection ended mid-transfer. When the device went away, evhttp has
 * detached the unfinished request and leaves it to us to end (which frees
 * it); when the server is shutting down, it is still attached and evhttp
 * frees it right after this. */
static void sending_gone(void *arg)
{
    sending_t *s = arg;
    struct evhttp_request *req = s->req;
    bool detached = evhttp_request_get_connection(req) == NULL;
    keel_log(KEEL_LOG_INFO, "fleet: update server: %s left with %" PRId64 " bytes unsent", s->device, s->left);
    sending_unlink_free(s);
    if (detached)
        evhttp_send_reply_end(req);
}

static void send_more(struct evhttp_connection *evcon, void *arg);

/* Exactly n bytes of the file into b (evbuffer_read stops at 4 KiB). */
static bool read_piece(int fd, struct evbuffer *b, size_t n)
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(b, (ev_ssize_t)n, &v, 1) < 1 || v.iov_len < n)
        return false;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)v.iov_base + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    v.iov_len = n;
    return evbuffer_commit_space(b, &v, 1) == 0;
}

static void send_piece(sending_t *s)
{
    struct evhttp_request *req = s->req;
    struct evbuffer *b = evbuffer_new();
    size_t want = s->left < (int64_t)SEND_PIECE ? (size_t)s->left : SEND_PIECE;
    bool ok = b != NULL && want > 0 && read_piece(s->fd, b, want);
    if (!ok) {
        /* A short read of our own file: end the connection; the device sees
         * fewer bytes than Content-Length and its installer refuses them. */
        keel_log(KEEL_LOG_ERROR, "fleet: update server: reading a bundle for %s failed", s->device);
        if (b != NULL)
            evbuffer_free(b);
        struct evhttp_connection *evcon = evhttp_request_get_connection(req);
        sending_free(s);
        evhttp_send_reply_end(req);
        if (evcon != NULL)
            evhttp_connection_free_on_completion(evcon);
        return;
    }
    s->left -= (int64_t)want;
    if (s->left == 0) {
        evhttp_send_reply_chunk(req, b);
        evbuffer_free(b);
        sending_free(s);
        evhttp_send_reply_end(req);
        return;
    }
    evhttp_send_reply_chunk_with_cb(req, b, send_more, s);
    evbuffer_free(b);
}

/* The previous piece left: send the next (one piece in memory per download). */
static void send_more(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    send_piece(arg);
}

static bool parse_range(const char *h, int64_t size, int64_t *from)
{
    *from = 0;
    if (h == NULL)
        return true;
    if (strncmp(h, "bytes=", 6) != 0)
        return false;
    const char *p = h + 6;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (p[0] < '0' || p[0] > '9' || errno != 0 || end == NULL || strcmp(end, "-") != 0 || v < 0 || v >= size)
        return false;
    *from = v;
    return true;
}

static void route_bundle(fleetd_t *f, struct evhttp_request *req, const keel_fleet_device_t *d, const char *id)
{
    keel_fleet_campaign_t c;
    if (strlen(id) != KEEL_FLEET_CAMPAIGN_MAX || strspn(id, "0123456789abcdef") != KEEL_FLEET_CAMPAIGN_MAX) {
        fleetd_reply_error(req, 404, "not_found", NULL);
        return;
    }
    int code = device_campaign(f, d, id, &c);
    if (code != 0) {
        if (code == 404)
            keel_log(KEEL_LOG_WARN, "fleet: update server: %s asked for bundle %s, which is not offered to it",
                     d->id, id);
        fleetd_reply_error(req, code, code == 404 ? "not_found" : "internal", NULL);
        return;
    }
    int64_t from = 0;
    const char *range = evhttp_find_header(evhttp_request_get_input_headers(req), "Range");
    if (!parse_range(range, c.bundle_size, &from)) {
        char cr[48];
        snprintf(cr, sizeof cr, "bytes */%" PRId64, c.bundle_size);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Range", cr);
        fleetd_reply_error(req, 416, "range_not_satisfiable", "only bytes=N- is served");
        return;
    }
    if (sending_count(d->id) >= DOWNLOADS_PER_DEVICE) {
        keel_log(KEEL_LOG_WARN, "fleet: update server: %s already has %d downloads running; one more refused", d->id,
                 DOWNLOADS_PER_DEVICE);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "60");
        fleetd_reply_error(req, 429, "too_many_requests", "this device's downloads are already running");
        return;
    }
    int fd = open(c.bundle_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size != c.bundle_size || lseek(fd, from, SEEK_SET) != from) {
        keel_log(KEEL_LOG_ERROR, "fleet: update server: bundle of campaign %s is not readable as registered", c.id);
        if (fd >= 0)
            close(fd);
        fleetd_reply_error(req, 500, "internal", NULL);
        return;
    }
    sending_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        close(fd);
        fleetd_reply_error(req, 500, "internal", NULL);
        return;
    }
    s->req = req;
    s->fd = fd;
    s->next = g_sending;
    if (g_sending != NULL)
        g_sending->prev = s;
    g_sending = s;
    s->left = c.bundle_size - from;
    snprintf(s->device, sizeof s->device, "%s", d->id);
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    char len[32], cr[96];
    snprintf(len, sizeof len, "%" PRId64, s->left);
    evhttp_add_header(oh, "Content-Type", "application/octet-stream");
    evhttp_add_header(oh, "Content-Length", len);
    evhttp_add_header(oh, "Cache-Control", "no-store");
    if (range != NULL) {
        snprintf(cr, sizeof cr, "bytes %" PRId64 "-%" PRId64 "/%" PRId64, from, c.bundle_size - 1, c.bundle_size);
        evhttp_add_header(oh, "Content-Range", cr);
    }
    keel_log(KEEL_LOG_INFO, "fleet: update server: sending %s %s to %s (%" PRId64 " bytes from %" PRId64 ")", c.model,
             c.version, d->id, s->left, from);
    fleetd_https_on_close(req, sending_gone, s);
    evhttp_send_reply_start(req, range != NULL ? 206 : 200, range != NULL ? "Partial Content" : "OK");
    send_piece(s);
}

void fleetd_dist_handle(void *arg, struct evhttp_request *req, SSL *ssl)
{
    fleetd_t *f = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        fleetd_reply_error(req, 405, "method_not_allowed", NULL);
        return;
    }
    keel_fleet_device_t d;
    const char *why = NULL;
    int code = peer_device(f, ssl, &d, &why);
    if (code != 0) {
        fleetd_reply_error(req, code, code == 500 ? "internal" : "forbidden", why);
        return;
    }
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (path != NULL && strcmp(path, "/v1/update") == 0)
        route_update(f, req, &d);
    else if (path != NULL && strncmp(path, BUNDLES_PREFIX, strlen(BUNDLES_PREFIX)) == 0)
        route_bundle(f, req, &d, path + strlen(BUNDLES_PREFIX));
    else
        fleetd_reply_error(req, 404, "not_found", NULL);
}

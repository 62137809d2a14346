/*
 * keel assess: MQTT probe of one port (test unit "mqtt").
 *
 * Raw packets over a socket (OpenSSL for TLS) rather than libmosquitto: the
 * probe must record exactly what it sent and what came back, send packets no
 * client library would (a malformed CONNECT), and hold a hard deadline on
 * every step; libmosquitto hides the CONNACK code behind callbacks and runs
 * its own timers. The codec is small and strictly bounded: a remaining length
 * has at most four bytes, a packet at most KEEL_MQTT_PACKET_MAX bytes, and
 * every length inside a packet is checked against the bytes received.
 */
#define _GNU_SOURCE
#include "keel/assess_probe.h"
#include "keel/assess_services.h"

#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define UNIT "mqtt"
#define MQTT_TIMEOUT_DEFAULT_MS 3000u
#define MQTT_LISTEN_DEFAULT_MS 1500u
#define MQTT_TIMEOUT_MAX_MS 30000u
#define MQTT_LISTEN_MAX_MS 60000u
#define MQTT_PAIRS_MAX 4u        /* default pairs tried when anonymous is refused */
#define MQTT_TOPICS_MAX 32u      /* distinct topics listed in the document */
#define MQTT_SYS_TOPICS_MAX 8u   /* of them at most this many $SYS ones: others' topics matter more */
#define MQTT_MESSAGES_MAX 2000u  /* messages read while listening */
#define MQTT_PAYLOAD_KEPT 64u    /* payload bytes kept per topic */
#define MQTT_TOPIC_KEPT 200u     /* topic bytes kept */
#define MQTT_SEEN_KEPT 64u       /* bytes of a non-MQTT answer kept */
#define MQTT_KEEPALIVE_S 60u     /* longer than the longest listen */
#define MQTT_CLIENT_ID "keel-assess-probe"
#define VARINT_MAX 268435455u

/* ---- wire format ------------------------------------------------------------- */

size_t keel_mqtt_varint_encode(size_t v, uint8_t out[4])
{
    if (v > VARINT_MAX)
        return 0;
    size_t n = 0;
    do {
        uint8_t b = (uint8_t)(v % 128);
        v /= 128;
        out[n++] = (uint8_t)(b | (v > 0 ? 0x80 : 0));
    } while (v > 0);
    return n;
}

keel_status_t keel_mqtt_varint_decode(const uint8_t *p, size_t n, size_t *v, size_t *used)
{
    size_t val = 0, mult = 1;
    *used = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i >= n)
            return KEEL_OK; /* more bytes needed */
        val += (size_t)(p[i] & 0x7f) * mult;
        if ((p[i] & 0x80) == 0) {
            *v = val;
            *used = i + 1;
            return KEEL_OK;
        }
        mult *= 128;
    }
    return keel_errorf(KEEL_ERR_FORMAT, "MQTT variable byte integer longer than 4 bytes");
}

keel_status_t keel_mqtt_header_decode(const uint8_t *p, size_t n, uint8_t *first, size_t *remaining, size_t *hlen)
{
    *hlen = 0;
    if (n < 2)
        return KEEL_OK;
    size_t v = 0, used = 0;
    keel_status_t st = keel_mqtt_varint_decode(p + 1, n - 1, &v, &used);
    if (st != KEEL_OK || used == 0)
        return st;
    if (v > KEEL_MQTT_PACKET_MAX - 1 - used)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "MQTT packet of %zu bytes (at most %u)", v + 1 + used,
                           KEEL_MQTT_PACKET_MAX);
    *first = p[0];
    *remaining = v;
    *hlen = 1 + used;
    return KEEL_OK;
}

/* A bounded writer: the first overflow sticks and is reported once. */
typedef struct {
    uint8_t *p;
    size_t cap, len;
    int over;
} wr_t;

static void wr_bytes(wr_t *w, const void *d, size_t n)
{
    if (w->over || n > w->cap - w->len) {
        w->over = 1;
        return;
    }
    memcpy(w->p + w->len, d, n);
    w->len += n;
}

static void wr_u8(wr_t *w, uint8_t b)
{
    wr_bytes(w, &b, 1);
}

static void wr_u16(wr_t *w, unsigned v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    wr_bytes(w, b, 2);
}

static void wr_str(wr_t *w, const char *s)
{
    size_t n = strlen(s);
    wr_u16(w, (unsigned)n);
    wr_bytes(w, s, n);
}

/* Prepends the fixed header to the variable part built at body = buf + 5
 * (the header takes at most 5 bytes, so it never overwrites the body). */
static keel_status_t frame(uint8_t first, const uint8_t *body, size_t blen, uint8_t *buf, size_t cap, size_t *len)
{
    uint8_t rl[4];
    size_t rn = keel_mqtt_varint_encode(blen, rl);
    if (rn == 0 || 1 + rn + blen > cap)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "MQTT packet does not fit %zu bytes", cap);
    buf[0] = first;
    memcpy(buf + 1, rl, rn);
    memmove(buf + 1 + rn, body, blen);
    *len = 1 + rn + blen;
    return KEEL_OK;
}

keel_status_t keel_mqtt_connect_encode(const keel_mqtt_connect_t *c, uint8_t *buf, size_t cap, size_t *len)
{
    if (c == NULL || buf == NULL || len == NULL || c->client_id == NULL ||
        (c->version != KEEL_MQTT_V311 && c->version != KEEL_MQTT_V5) || c->keepalive > 65535 ||
        strlen(c->client_id) > 65535 || (c->user != NULL && strlen(c->user) > 65535) ||
        (c->password != NULL && strlen(c->password) > 65535))
        return keel_errorf(KEEL_ERR_ARG, "bad MQTT CONNECT parameters");
    if (cap < 5)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "MQTT CONNECT does not fit %zu bytes", cap);
    /* the variable part is built after room for the largest fixed header */
    wr_t w = {buf + 5, cap - 5, 0, 0};
    wr_str(&w, "MQTT");
    wr_u8(&w, (uint8_t)c->version);
    wr_u8(&w, (uint8_t)(0x02 | (c->user ? 0x80 : 0) | (c->password ? 0x40 : 0)));
    wr_u16(&w, c->keepalive);
    if (c->version == KEEL_MQTT_V5)
        wr_u8(&w, 0); /* no properties */
    wr_str(&w, c->client_id);
    if (c->user)
        wr_str(&w, c->user);
    if (c->password)
        wr_str(&w, c->password);
    if (w.over) {
        keel_wipe(buf, cap); /* it may hold part of a password */
        return keel_errorf(KEEL_ERR_TOO_LARGE, "MQTT CONNECT does not fit %zu bytes", cap);
    }
    return frame(0x10, buf + 5, w.len, buf, cap, len);
}

keel_status_t keel_mqtt_subscribe_encode(int version, uint16_t packet_id, const char *const *filters, size_t n,
                                         uint8_t *buf, size_t cap, size_t *len)
{
    if ((version != KEEL_MQTT_V311 && version != KEEL_MQTT_V5) || filters == NULL || n == 0 || packet_id == 0 ||
        buf == NULL || len == NULL)
        return keel_errorf(KEEL_ERR_ARG, "bad MQTT SUBSCRIBE parameters");
    if (cap < 5)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "MQTT SUBSCRIBE does not fit %zu bytes", cap);
    wr_t w = {buf + 5, cap - 5, 0, 0};
    wr_u16(&w, packet_id);
    if (version == KEEL_MQTT_V5)
        wr_u8(&w, 0);
    for (size_t i = 0; i < n; i++) {
        if (filters[i] == NULL || filters[i][0] == '\0' || strlen(filters[i]) > 65535)
            return keel_errorf(KEEL_ERR_ARG, "bad MQTT topic filter");
        wr_str(&w, filters[i]);
        wr_u8(&w, 0); /* QoS 0 */
    }
    if (w.over)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "MQTT SUBSCRIBE does not fit %zu bytes", cap);
    return frame(0x82, buf + 5, w.len, buf, cap, len);
}

/* Skips a v5 property block at body[*off..n) after checking it fits. */
static keel_status_t skip_props(const uint8_t *body, size_t n, size_t *off)
{
    size_t plen = 0, used = 0;
    if (*off >= n)
        return keel_errorf(KEEL_ERR_FORMAT, "MQTT 5 packet without its property length");
    keel_status_t st = keel_mqtt_varint_decode(body + *off, n - *off, &plen, &used);
    if (st != KEEL_OK)
        return st;
    if (used == 0 || plen > n - *off - used)
        return keel_errorf(KEEL_ERR_FORMAT, "MQTT 5 properties run past the packet");
    *off += used + plen;
    return KEEL_OK;
}

keel_status_t keel_mqtt_connack_decode(int version, const uint8_t *body, size_t n, int *session_present,
                                       unsigned *code)
{
    if (body == NULL || n < 2 || (body[0] & 0xfe) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "malformed CONNACK");
    if (version == KEEL_MQTT_V5) {
        size_t off = 2;
        keel_status_t st = skip_props(body, n, &off);
        if (st != KEEL_OK)
            return st;
        if (off != n)
            return keel_errorf(KEEL_ERR_FORMAT, "CONNACK with trailing bytes");
    } else if (n != 2) {
        return keel_errorf(KEEL_ERR_FORMAT, "CONNACK of %zu bytes (3.1.1 has 2)", n);
    }
    *session_present = body[0] & 1;
    *code = body[1];
    return KEEL_OK;
}

keel_status_t keel_mqtt_suback_decode(int version, const uint8_t *body, size_t n, uint16_t *packet_id,
                                      uint8_t *codes, size_t cap, size_t *ncodes)
{
    if (body == NULL || n < 3)
        return keel_errorf(KEEL_ERR_FORMAT, "malformed SUBACK");
    size_t off = 2;
    if (version == KEEL_MQTT_V5) {
        keel_status_t st = skip_props(body, n, &off);
        if (st != KEEL_OK)
            return st;
    }
    if (off >= n || n - off > cap)
        return keel_errorf(KEEL_ERR_FORMAT, "SUBACK with %zu return codes", n > off ? n - off : 0);
    *packet_id = (uint16_t)(body[0] << 8 | body[1]);
    memcpy(codes, body + off, n - off);
    *ncodes = n - off;
    return KEEL_OK;
}

keel_status_t keel_mqtt_publish_decode(int version, uint8_t first, const uint8_t *body, size_t n,
                                       keel_mqtt_publish_t *out)
{
    memset(out, 0, sizeof *out);
    out->qos = (first >> 1) & 3;
    out->retain = first & 1;
    if ((first >> 4) != 3 || out->qos == 3 || body == NULL || n < 2)
        return keel_errorf(KEEL_ERR_FORMAT, "malformed PUBLISH");
    size_t tl = (size_t)body[0] << 8 | body[1];
    if (tl == 0 || tl > n - 2)
        return keel_errorf(KEEL_ERR_FORMAT, "PUBLISH topic of %zu bytes in %zu", tl, n);
    size_t off = 2 + tl;
    if (out->qos > 0) {
        if (n - off < 2)
            return keel_errorf(KEEL_ERR_FORMAT, "PUBLISH without its packet id");
        out->packet_id = (uint16_t)(body[off] << 8 | body[off + 1]);
        off += 2;
    }
    if (version == KEEL_MQTT_V5) {
        keel_status_t st = skip_props(body, n, &off);
        if (st != KEEL_OK)
            return st;
    }
    out->topic = body + 2;
    out->topic_len = tl;
    out->payload = body + off;
    out->payload_len = n - off;
    return KEEL_OK;
}

/* ---- transport --------------------------------------------------------------- */

typedef struct {
    int server_hello;   /* a TLS ServerHello arrived: the port speaks TLS */
    int cert_requested; /* the server asked for a client certificate */
    int alert;          /* last alert description received, -1 none */
} tls_seen_t;

typedef struct {
    int fd;
    SSL *ssl;
    tls_seen_t seen;
    uint8_t *in; /* KEEL_MQTT_PACKET_MAX bytes */
    size_t inlen, consumed;
} conn_t;

typedef struct {
    const keel_mqtt_probe_opts_t *o;
    struct sockaddr_storage sa;
    socklen_t salen;
    char addr[INET6_ADDRSTRLEN + 1];
    int sni;
    unsigned timeout_ms, listen_ms;
    SSL_CTX *ctx;
    json_t *doc;
    char where[48]; /* "port 1883 in clear" */
    int version;    /* protocol the broker accepted */
    uint8_t in[KEEL_MQTT_PACKET_MAX];
} probe_t;

enum { RECV_TIMEOUT = -2, RECV_ERROR = -1, RECV_CLOSED = 0 };

static long long us_since(double t0)
{
    return (long long)((keel_now() - t0) * 1e6 + 0.5);
}

static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl, void *arg)
{
    (void)version;
    (void)ssl;
    tls_seen_t *s = arg;
    const uint8_t *b = buf;
    if (write_p || s == NULL || len == 0)
        return;
    if (content_type == SSL3_RT_HANDSHAKE && b[0] == SSL3_MT_SERVER_HELLO)
        s->server_hello = 1;
    if (content_type == SSL3_RT_HANDSHAKE && b[0] == SSL3_MT_CERTIFICATE_REQUEST)
        s->cert_requested = 1;
    if (content_type == SSL3_RT_ALERT && len >= 2)
        s->alert = b[1];
}

static void conn_close(conn_t *c)
{
    if (c->ssl != NULL) {
        (void)SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    c->ssl = NULL;
    c->fd = -1;
    ERR_clear_error();
}

/* TCP connect, and the TLS handshake when asked. 0, or -1 with `why`;
 * *tcp_failed tells whether TCP itself failed. */
static int conn_open(probe_t *p, conn_t *c, double deadline, char *why, size_t cap, int *tcp_failed)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->seen.alert = -1;
    c->in = p->in;
    *tcp_failed = 1;
    c->fd = keel_assess_tcp_connect(&p->sa, p->salen, deadline, why, cap);
    if (c->fd < 0)
        return -1;
    *tcp_failed = 0;
    if (p->ctx == NULL)
        return 0;
    ERR_clear_error();
    c->ssl = keel_assess_tls_new(p->ctx, c->fd, p->sni ? p->o->host : NULL);
    if (c->ssl == NULL) {
        keel_assess_ssl_reason(why, cap, "TLS setup failed");
        conn_close(c);
        return -1;
    }
    SSL_set_msg_callback_arg(c->ssl, &c->seen);
    int e = 0, hs = keel_assess_tls_handshake(c->ssl, c->fd, deadline, &e);
    if (hs == 1)
        return 0;
    if (hs == 0) {
        snprintf(why, cap, "TLS handshake: no answer in time");
    } else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        snprintf(why, cap, "TLS handshake: %s", errno ? strerror(errno) : "connection closed");
    } else {
        char r[128];
        keel_assess_ssl_reason(r, sizeof r, "failed");
        snprintf(why, cap, "TLS handshake: %s", r);
    }
    /* keep what the handshake showed for the caller; drop the connection */
    tls_seen_t seen = c->seen;
    conn_close(c);
    c->seen = seen;
    return -1;
}

static int conn_send(conn_t *c, const uint8_t *b, size_t n, double deadline)
{
    size_t off = 0;
    while (off < n) {
        if (c->ssl != NULL) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, b + off, (int)(n - off));
            if (r > 0) {
                off += (size_t)r;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) ||
                !keel_assess_wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline))
                return -1;
            continue;
        }
        ssize_t r = send(c->fd, b + off, n - off, MSG_NOSIGNAL);
        if (r > 0) {
            off += (size_t)r;
            continue;
        }
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
            if (!keel_assess_wait_fd(c->fd, POLLOUT, deadline))
                return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* Bytes received (> 0), RECV_CLOSED, RECV_TIMEOUT or RECV_ERROR with `why`. */
static int conn_recv(conn_t *c, uint8_t *b, size_t cap, double deadline, char *why, size_t wcap)
{
    for (;;) {
        if (c->ssl != NULL) {
            ERR_clear_error();
            errno = 0;
            int r = SSL_read(c->ssl, b, (int)(cap > 16384 ? 16384 : cap));
            if (r > 0)
                return r;
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                if (!keel_assess_wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline))
                    return RECV_TIMEOUT;
                continue;
            }
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0))
                return RECV_CLOSED;
            char r2[128];
            keel_assess_ssl_reason(r2, sizeof r2, errno ? strerror(errno) : "TLS error");
            snprintf(why, wcap, "TLS: %s", r2);
            return RECV_ERROR;
        }
        if (!keel_assess_wait_fd(c->fd, POLLIN, deadline))
            return RECV_TIMEOUT;
        ssize_t r = recv(c->fd, b, cap, 0);
        if (r > 0)
            return (int)r;
        if (r == 0)
            return RECV_CLOSED;
        if (errno == EINTR || errno == EAGAIN)
            continue;
        snprintf(why, wcap, "%s", strerror(errno));
        return RECV_ERROR;
    }
}

typedef enum { PKT_OK, PKT_TIMEOUT, PKT_CLOSED, PKT_ERROR, PKT_MALFORMED } pkt_state_t;

typedef struct {
    uint8_t first;
    const uint8_t *body;
    size_t len;
} pkt_t;

/* The next whole packet (the previous one is dropped first). Bytes that are
 * not MQTT end as PKT_MALFORMED with the first of them in c->in[0..inlen). */
static pkt_state_t next_packet(conn_t *c, double deadline, pkt_t *pk, char *why, size_t wcap)
{
    if (c->consumed > 0) {
        memmove(c->in, c->in + c->consumed, c->inlen - c->consumed);
        c->inlen -= c->consumed;
        c->consumed = 0;
    }
    for (;;) {
        size_t rem = 0, hl = 0;
        if (keel_mqtt_header_decode(c->in, c->inlen, &pk->first, &rem, &hl) != KEEL_OK) {
            snprintf(why, wcap, "%s", keel_error_message());
            return PKT_MALFORMED;
        }
        if (hl > 0 && c->inlen >= hl + rem) {
            pk->body = c->in + hl;
            pk->len = rem;
            c->consumed = hl + rem;
            return PKT_OK;
        }
        int r = conn_recv(c, c->in + c->inlen, KEEL_MQTT_PACKET_MAX - c->inlen, deadline, why, wcap);
        if (r == RECV_TIMEOUT)
            return PKT_TIMEOUT;
        if (r == RECV_CLOSED)
            return PKT_CLOSED;
        if (r < 0)
            return PKT_ERROR;
        c->inlen += (size_t)r;
    }
}

/* ---- the document -------------------------------------------------------------- */

static keel_status_t nomem(void)
{
    return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the MQTT document");
}

static keel_status_t evidence(probe_t *p, const char *sent, const char *observed, double t0)
{
    return keel_assess_evidence(p->doc, UNIT, sent, strlen(sent), observed, strlen(observed), us_since(t0));
}

static keel_status_t set(probe_t *p, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(p->doc, key, v) == 0 ? KEEL_OK : nomem();
}

static const char *connack_text(int version, unsigned code)
{
    if (version == KEEL_MQTT_V5) {
        switch (code) {
        case 0x00: return "success";
        case 0x84: return "unsupported protocol version";
        case 0x85: return "client identifier not valid";
        case 0x86: return "bad user name or password";
        case 0x87: return "not authorized";
        case 0x88: return "server unavailable";
        case 0x8a: return "banned";
        case 0x8c: return "bad authentication method";
        default: return code >= 0x80 ? "refused" : "?";
        }
    }
    static const char *const v3[] = {"accepted", "unacceptable protocol version", "identifier rejected",
                                     "server unavailable", "bad user name or password", "not authorized"};
    return code < sizeof v3 / sizeof v3[0] ? v3[code] : "?";
}

/* ---- one CONNECT ---------------------------------------------------------------- */

typedef enum {
    ATT_CONNACK,     /* the broker answered CONNACK (code in `code`) */
    ATT_NO_TCP,      /* the port did not accept TCP */
    ATT_TLS_REFUSED, /* the port speaks TLS and refused us (no client certificate, ...) */
    ATT_NO_TLS,      /* TLS was asked for and the port does not speak it */
    ATT_SILENT,      /* no answer, or closed without one */
    ATT_OTHER,       /* an answer that is not a CONNACK */
} att_kind_t;

typedef struct {
    att_kind_t kind;
    unsigned code;
    tls_seen_t seen;
    char why[160];
} att_t;

static const char *version_name(int v)
{
    return v == KEEL_MQTT_V5 ? "5" : "3.1.1";
}

/* Opens a connection and sends CONNECT; on ATT_CONNACK with code 0 the
 * connection stays open in *c (the caller closes it), else it is closed. */
static keel_status_t attempt(probe_t *p, int version, const keel_cred_pair_t *pair, conn_t *c, att_t *a)
{
    memset(a, 0, sizeof *a);
    double t0 = keel_now();
    char sent[256], observed[384];
    int tcp_failed = 0;
    snprintf(sent, sizeof sent, "%sCONNECT v%s clean, %s%s%s%s%s", p->ctx ? "TLS handshake without client "
                                                                            "certificate, then "
                                                                          : "",
             version_name(version), pair ? "username \"" : "no username", pair ? pair->user : "",
             pair ? "\" password \"" : "", pair ? pair->password : "", pair ? "\"" : "");
    if (conn_open(p, c, t0 + p->timeout_ms / 1000.0, a->why, sizeof a->why, &tcp_failed) != 0) {
        a->seen = c->seen;
        if (tcp_failed)
            a->kind = ATT_NO_TCP;
        else
            a->kind = a->seen.server_hello ? ATT_TLS_REFUSED : ATT_NO_TLS;
        int k = snprintf(observed, sizeof observed, "%s%s", a->why,
                         a->seen.cert_requested ? " (the server asked for a client certificate)" : "");
        if (a->seen.alert >= 0 && k > 0 && (size_t)k < sizeof observed)
            snprintf(observed + k, sizeof observed - (size_t)k, "; TLS alert %d received", a->seen.alert);
        return evidence(p, sent, observed, t0);
    }
    uint8_t pkt[1024];
    size_t n = 0;
    keel_mqtt_connect_t cc = {.version = version, .client_id = MQTT_CLIENT_ID, .user = pair ? pair->user : NULL,
                              .password = pair ? pair->password : NULL, .keepalive = MQTT_KEEPALIVE_S};
    keel_status_t st = keel_mqtt_connect_encode(&cc, pkt, sizeof pkt, &n);
    if (st != KEEL_OK) {
        conn_close(c);
        return st;
    }
    double deadline = keel_now() + p->timeout_ms / 1000.0;
    pkt_t pk = {0};
    pkt_state_t ps = PKT_ERROR;
    if (conn_send(c, pkt, n, deadline) != 0)
        snprintf(a->why, sizeof a->why, "send failed");
    else
        ps = next_packet(c, deadline, &pk, a->why, sizeof a->why);
    keel_wipe(pkt, sizeof pkt);
    a->seen = c->seen;
    int session = 0;
    if (ps == PKT_OK && pk.first == 0x20 &&
        keel_mqtt_connack_decode(version, pk.body, pk.len, &session, &a->code) == KEEL_OK) {
        a->kind = ATT_CONNACK;
        snprintf(observed, sizeof observed, "CONNACK rc=%u (%s)%s", a->code, connack_text(version, a->code),
                 session ? ", session present" : "");
    } else if (ps == PKT_OK || ps == PKT_MALFORMED || c->inlen > 0) {
        /* an answer, or part of one, that is not a CONNACK */
        a->kind = ATT_OTHER;
        size_t k = c->inlen < MQTT_SEEN_KEPT ? c->inlen : MQTT_SEEN_KEPT;
        int hl = snprintf(observed, sizeof observed, "not a CONNACK (%zu bytes): ", c->inlen);
        memcpy(observed + hl, c->in, k);
        observed[hl + (int)k] = '\0';
        st = keel_assess_evidence(p->doc, UNIT, sent, strlen(sent), observed, (size_t)hl + k, us_since(t0));
        conn_close(c);
        return st;
    } else if (p->ctx != NULL && a->seen.cert_requested) {
        /* TLS 1.3: the refusal of a missing client certificate comes after the handshake */
        a->kind = ATT_TLS_REFUSED;
        int k = snprintf(observed, sizeof observed, "the server asked for a client certificate and refused the connection: %s",
                         ps == PKT_ERROR ? a->why : ps == PKT_CLOSED ? "closed" : ps == PKT_TIMEOUT ? "no answer" : "send failed");
        if (a->seen.alert >= 0 && k > 0 && (size_t)k < sizeof observed)
            snprintf(observed + k, sizeof observed - (size_t)k, "; TLS alert %d received", a->seen.alert);
    } else {
        a->kind = ATT_SILENT;
        snprintf(observed, sizeof observed, "%s",
                 ps == PKT_TIMEOUT ? "no answer in time"
                 : ps == PKT_CLOSED ? "connection closed without an answer"
                                    : a->why);
    }
    st = evidence(p, sent, observed, t0);
    if (a->kind != ATT_CONNACK || a->code != 0)
        conn_close(c);
    return st;
}

/* ---- reading others' topics ----------------------------------------------------- */

typedef struct {
    uint8_t topic[MQTT_TOPIC_KEPT];
    size_t topic_len;
    unsigned messages;
    size_t bytes;
    uint8_t payload[MQTT_PAYLOAD_KEPT];
    size_t payload_len;
    int retained;
} topic_t;

typedef struct {
    topic_t t[MQTT_TOPICS_MAX];
    size_t n;
    size_t nsys;      /* $SYS topics in the list */
    unsigned dropped; /* messages on topics beyond the list */
    unsigned messages, others, sys;
} topics_t;

static void topic_add(topics_t *ts, const keel_mqtt_publish_t *m)
{
    int sys = m->topic[0] == '$';
    ts->messages++;
    if (sys)
        ts->sys++;
    else
        ts->others++;
    size_t tl = m->topic_len < MQTT_TOPIC_KEPT ? m->topic_len : MQTT_TOPIC_KEPT;
    for (size_t i = 0; i < ts->n; i++) {
        if (ts->t[i].topic_len == tl && memcmp(ts->t[i].topic, m->topic, tl) == 0) {
            ts->t[i].messages++;
            ts->t[i].bytes += m->payload_len;
            return;
        }
    }
    if (ts->n == MQTT_TOPICS_MAX || (sys && ts->nsys == MQTT_SYS_TOPICS_MAX)) {
        ts->dropped++;
        return;
    }
    ts->nsys += (size_t)sys;
    topic_t *t = &ts->t[ts->n++];
    memcpy(t->topic, m->topic, tl);
    t->topic_len = tl;
    t->messages = 1;
    t->bytes = m->payload_len;
    t->payload_len = m->payload_len < MQTT_PAYLOAD_KEPT ? m->payload_len : MQTT_PAYLOAD_KEPT;
    memcpy(t->payload, m->payload, t->payload_len);
    t->retained = m->retain;
}

static keel_status_t topics_json(probe_t *p, const topics_t *ts)
{
    json_t *arr = json_array();
    keel_status_t st = set(p, "topics", arr);
    for (size_t i = 0; i < ts->n && st == KEEL_OK; i++) {
        const topic_t *t = &ts->t[i];
        json_t *e = json_pack("{s:o, s:i, s:i, s:o, s:b}", "topic", keel_assess_escape(t->topic, t->topic_len),
                              "messages", (int)t->messages, "bytes", (int)t->bytes, "payload",
                              keel_assess_escape(t->payload, t->payload_len), "retained", t->retained);
        if (e == NULL || json_array_append_new(arr, e) != 0)
            st = nomem();
    }
    if (st == KEEL_OK)
        st = set(p, "messages", json_integer(ts->messages));
    if (st == KEEL_OK)
        st = set(p, "messages_unlisted", json_integer(ts->dropped));
    return st;
}

/* SUBSCRIBE "#" and "$SYS/#" on an accepted connection and read what comes. */
static keel_status_t listen_topics(probe_t *p, conn_t *c, const char *who)
{
    static const char *const filters[] = {"#", "$SYS/#"};
    double t0 = keel_now();
    uint8_t pkt[64];
    size_t n = 0;
    keel_status_t st = keel_mqtt_subscribe_encode(p->version, 1, filters, 2, pkt, sizeof pkt, &n);
    if (st != KEEL_OK)
        return st;
    topics_t *ts = calloc(1, sizeof *ts);
    if (ts == NULL)
        return nomem();
    char observed[KEEL_PROBE_EVIDENCE_TEXT], why[160] = "";
    snprintf(observed, sizeof observed, "no SUBACK");
    json_t *subs = json_array();
    st = set(p, "subscriptions", subs);
    double end = keel_now() + p->listen_ms / 1000.0;
    if (st == KEEL_OK && conn_send(c, pkt, n, keel_now() + p->timeout_ms / 1000.0) != 0)
        snprintf(observed, sizeof observed, "SUBSCRIBE could not be sent");
    else {
        pkt_t pk;
        while (st == KEEL_OK && ts->messages < MQTT_MESSAGES_MAX) {
            pkt_state_t ps = next_packet(c, end, &pk, why, sizeof why);
            if (ps != PKT_OK)
                break;
            uint8_t type = pk.first >> 4;
            uint16_t id = 0;
            uint8_t codes[8];
            size_t nc = 0;
            keel_mqtt_publish_t m;
            if (type == 9 && keel_mqtt_suback_decode(p->version, pk.body, pk.len, &id, codes, sizeof codes, &nc) ==
                                 KEEL_OK) {
                int off = snprintf(observed, sizeof observed, "SUBACK");
                for (size_t i = 0; i < nc; i++) {
                    off += snprintf(observed + off, sizeof observed - (size_t)off, " 0x%02x", codes[i]);
                    if (i < 2) {
                        json_t *e = json_pack("{s:s, s:b, s:i}", "filter", filters[i], "granted", codes[i] < 0x80,
                                              "code", (int)codes[i]);
                        if (e == NULL || json_array_append_new(subs, e) != 0)
                            st = nomem();
                    }
                }
            } else if (type == 3 && keel_mqtt_publish_decode(p->version, pk.first, pk.body, pk.len, &m) == KEEL_OK) {
                topic_add(ts, &m);
            }
        }
    }
    if (st == KEEL_OK)
        st = evidence(p, "SUBSCRIBE \"#\" QoS 0, \"$SYS/#\" QoS 0", observed, t0);
    if (st == KEEL_OK)
        st = topics_json(p, ts);
    if (st == KEEL_OK) {
        /* what was read, topic by topic, as one evidence entry */
        char seen[KEEL_PROBE_EVIDENCE_TEXT];
        int off = snprintf(seen, sizeof seen, "%u message(s) in %u ms (%u on topics not listed), %zu topic(s)%s",
                           ts->messages, p->listen_ms, ts->dropped, ts->n, ts->n ? ":" : "");
        /* others' topics first, then $SYS */
        for (size_t k = 0; k < 2 * ts->n && (size_t)off < sizeof seen - 1; k++) {
            size_t i = k % ts->n;
            if ((ts->t[i].topic[0] == '$') != (k >= ts->n))
                continue;
            off += snprintf(seen + off, sizeof seen - (size_t)off, " %.*s (%u msg, %zu bytes)",
                            (int)ts->t[i].topic_len, (const char *)ts->t[i].topic, ts->t[i].messages,
                            ts->t[i].bytes);
        }
        size_t sl = (size_t)off < sizeof seen ? (size_t)off : sizeof seen - 1;
        st = keel_assess_evidence(p->doc, UNIT, "read for listen_ms", 18, seen, sl, us_since(t0));
    }
    if (st == KEEL_OK && ts->others > 0) {
        const topic_t *ex = NULL;
        for (size_t i = 0; i < ts->n && ex == NULL; i++)
            if (ts->t[i].topic[0] != '$')
                ex = &ts->t[i];
        /* topics come from the target: escaped before they go into a finding */
        json_t *topic = keel_assess_escape(ex ? ex->topic : (const uint8_t *)"", ex ? (ex->topic_len > 100 ? 100 : ex->topic_len) : 0);
        char what[640];
        snprintf(what, sizeof what,
                 "%s: a client with %s read %u message(s) of other clients (subscription \"#\"), e.g. on "
                 "topic \"%s\"",
                 p->where, who, ts->others, topic ? json_string_value(topic) : "?");
        json_decref(topic);
        st = keel_assess_unit_finding(p->doc, UNIT, "5.5-7", "fail", what);
    }
    if (st == KEEL_OK && ts->sys > 0) {
        char what[256];
        snprintf(what, sizeof what, "%s: a client with %s reads the broker's $SYS topics (%u message(s))", p->where,
                 who, ts->sys);
        st = keel_assess_unit_finding(p->doc, UNIT, "5.5-7", "info", what);
    }
    free(ts);
    static const uint8_t disconnect[] = {0xe0, 0x00};
    (void)conn_send(c, disconnect, sizeof disconnect, keel_now() + 0.2);
    return st;
}

/* ---- malformed input -------------------------------------------------------------- */

/* Sends `bytes` on a fresh connection and records how the broker reacts. */
static keel_status_t malformed_one(probe_t *p, const char *what, const uint8_t *bytes, size_t n, json_t *rob,
                                   const char *key)
{
    double t0 = keel_now();
    conn_t c;
    char why[160] = "", observed[256];
    int tcp_failed = 0;
    const char *kind = "no_connection";
    if (conn_open(p, &c, t0 + p->timeout_ms / 1000.0, why, sizeof why, &tcp_failed) == 0) {
        double deadline = keel_now() + p->timeout_ms / 1000.0;
        pkt_t pk;
        if (conn_send(&c, bytes, n, deadline) != 0) {
            kind = "send_failed";
        } else {
            pkt_state_t ps = next_packet(&c, deadline, &pk, why, sizeof why);
            kind = ps == PKT_OK ? (pk.first == 0x20 ? "connack" : "answered")
                   : ps == PKT_TIMEOUT ? "no_answer"
                   : ps == PKT_CLOSED  ? "closed"
                   : ps == PKT_ERROR   ? "reset"
                                       : "malformed_answer";
            if (ps == PKT_OK && pk.first == 0x20 && pk.len >= 2) {
                snprintf(observed, sizeof observed, "CONNACK rc=%u", pk.body[1]);
                why[0] = '\0';
            }
        }
        conn_close(&c);
    }
    if (strcmp(kind, "connack") != 0)
        snprintf(observed, sizeof observed, "%s%s%s", kind, why[0] ? ": " : "", why);
    if (json_object_set_new(rob, key, json_string(kind)) != 0)
        return nomem();
    return evidence(p, what, observed, t0);
}

static keel_status_t probe_malformed(probe_t *p, const keel_cred_pair_t *pair)
{
    json_t *rob = json_object();
    keel_status_t st = set(p, "robustness", rob);
    /* a remaining length of five bytes (at most four are allowed) */
    static const uint8_t bad_len[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0x7f};
    /* a well-formed 3.1.1 CONNECT whose protocol name is "MQTX" */
    static const uint8_t bad_name[] = {0x10, 0x16, 0x00, 0x04, 'M', 'Q', 'T', 'X', 0x04, 0x02, 0x00, 0x0a,
                                       0x00, 0x0a, 'k', 'e', 'e', 'l', '-', 'p', 'r', 'o', 'b', 'e'};
    if (st == KEEL_OK)
        st = malformed_one(p, "CONNECT with a 5-byte remaining length (10 ff ff ff ff 7f)", bad_len, sizeof bad_len,
                           rob, "bad_remaining_length");
    if (st == KEEL_OK)
        st = malformed_one(p, "CONNECT with protocol name \"MQTX\"", bad_name, sizeof bad_name, rob,
                           "bad_protocol_name");
    if (st != KEEL_OK)
        return st;
    /* the same well-formed CONNECT as before must still be answered */
    conn_t c;
    att_t a;
    st = attempt(p, p->version, pair, &c, &a);
    if (st != KEEL_OK)
        return st;
    if (a.kind == ATT_CONNACK && a.code == 0)
        conn_close(&c);
    int alive = a.kind == ATT_CONNACK;
    if (json_object_set_new(rob, "answers_after", json_boolean(alive)) != 0)
        return nomem();
    if (!alive) {
        char what[384];
        snprintf(what, sizeof what, "%s: after two malformed CONNECT packets the broker no longer answers a "
                                    "well-formed CONNECT (%s)",
                 p->where, a.why[0] ? a.why : "no CONNACK");
        st = keel_assess_unit_finding(p->doc, UNIT, "5.13-1B", "fail", what);
    }
    return st;
}

/* ---- entry point -------------------------------------------------------------------- */

static keel_status_t probe_run(probe_t *p)
{
    const int clear = p->ctx == NULL;
    conn_t c;
    att_t a;
    p->version = KEEL_MQTT_V311;
    keel_status_t st = attempt(p, KEEL_MQTT_V311, NULL, &c, &a);
    /* a broker of 5 only refuses 3.1.1 with code 1, or by closing */
    if (st == KEEL_OK && (a.kind == ATT_SILENT || (a.kind == ATT_CONNACK && a.code == 1))) {
        att_t a5;
        st = attempt(p, KEEL_MQTT_V5, NULL, &c, &a5);
        if (st == KEEL_OK && a5.kind == ATT_CONNACK && a5.code != 0x84) {
            a = a5;
            p->version = KEEL_MQTT_V5;
        }
    }
    if (st != KEEL_OK)
        return st;
    char reason[256];
    switch (a.kind) {
    case ATT_NO_TCP:
        snprintf(reason, sizeof reason, "port %u could not be reached: %s", p->o->port, a.why);
        return keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_INCONCLUSIVE, reason);
    case ATT_NO_TLS:
        snprintf(reason, sizeof reason, "port %u does not speak TLS (%s)", p->o->port, a.why);
        return keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_NOT_APPLICABLE, reason);
    case ATT_SILENT:
    case ATT_OTHER:
        snprintf(reason, sizeof reason, "port %u does not answer an MQTT CONNECT (%s)", p->o->port,
                 a.kind == ATT_OTHER ? "the answer is not a CONNACK" : a.why[0] ? a.why : "no answer");
        return keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_NOT_APPLICABLE, reason);
    case ATT_TLS_REFUSED:
        if (!a.seen.cert_requested) {
            snprintf(reason, sizeof reason, "port %u: the TLS handshake failed (%s)", p->o->port, a.why);
            return keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_INCONCLUSIVE, reason);
        }
        st = set(p, "anonymous", json_string("refused_tls"));
        if (st == KEEL_OK)
            st = keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_RAN, NULL);
        if (st == KEEL_OK) {
            snprintf(reason, sizeof reason, "%s: a client certificate is required; a connection without one "
                                            "is refused before MQTT",
                     p->where);
            st = keel_assess_unit_finding(p->doc, UNIT, "5.5-4", "info", reason);
        }
        return st;
    case ATT_CONNACK:
        break;
    }
    st = keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_RAN, NULL);
    if (st == KEEL_OK)
        st = set(p, "protocol", json_string(version_name(p->version)));
    if (st == KEEL_OK)
        st = set(p, "connack_code", json_integer(a.code));
    if (st == KEEL_OK)
        st = set(p, "anonymous", json_string(a.code == 0 ? "accepted" : "refused"));
    if (st == KEEL_OK && clear) {
        snprintf(reason, sizeof reason, "%s: the broker answers MQTT without TLS (CONNACK rc=%u): credentials and "
                                        "messages cross the network unencrypted",
                 p->where, a.code);
        st = keel_assess_unit_finding(p->doc, UNIT, "5.5-1", "fail", reason);
    }
    if (st != KEEL_OK)
        return st;
    const keel_cred_pair_t *used = NULL;
    char who[160] = "no credentials";
    unsigned tried = 0;
    if (a.code == 0) {
        snprintf(reason, sizeof reason, "%s: anonymous MQTT connect accepted (CONNECT v%s without username, "
                                        "password or client certificate: CONNACK rc=0)",
                 p->where, version_name(p->version));
        st = keel_assess_unit_finding(p->doc, UNIT, "5.5-4", "fail", reason);
    } else {
        size_t npairs = 0;
        const keel_cred_pair_t *pairs = keel_assess_default_creds(&npairs);
        for (size_t i = 0; i < npairs && i < MQTT_PAIRS_MAX && st == KEEL_OK && used == NULL; i++) {
            att_t ap;
            tried++;
            st = attempt(p, p->version, &pairs[i], &c, &ap);
            if (st == KEEL_OK && ap.kind == ATT_CONNACK && ap.code == 0)
                used = &pairs[i];
        }
        if (st == KEEL_OK && used != NULL) {
            snprintf(who, sizeof who, "the default credentials \"%s\"/\"%s\"", used->user, used->password);
            snprintf(reason, sizeof reason, "%s: the broker accepts %s", p->where, who);
            st = keel_assess_unit_finding(p->doc, UNIT, "5.1-1", "fail", reason);
            if (st == KEEL_OK)
                st = set(p, "credentials", json_pack("{s:s, s:s}", "user", used->user, "password", used->password));
        }
    }
    if (st == KEEL_OK)
        st = set(p, "pairs_tried", json_integer(tried));
    if (st != KEEL_OK) {
        if (a.code == 0 || used != NULL)
            conn_close(&c);
        return st;
    }
    if (a.code == 0 || used != NULL) {
        st = listen_topics(p, &c, who);
        conn_close(&c);
    }
    if (st == KEEL_OK)
        st = probe_malformed(p, used);
    return st;
}

keel_status_t keel_assess_probe_mqtt(const keel_mqtt_probe_opts_t *o, json_t **out)
{
    if (o == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no MQTT probe options");
    *out = NULL;
    if (o->port < 1 || o->port > 65535)
        return keel_errorf(KEEL_ERR_ARG, "port must be 1..65535");
    if (o->timeout_ms > MQTT_TIMEOUT_MAX_MS || o->listen_ms > MQTT_LISTEN_MAX_MS)
        return keel_errorf(KEEL_ERR_ARG, "timeout capped at %u ms, listen time at %u ms", MQTT_TIMEOUT_MAX_MS,
                           MQTT_LISTEN_MAX_MS);
    probe_t *p = calloc(1, sizeof *p);
    if (p == NULL)
        return nomem();
    p->o = o;
    keel_status_t st = keel_assess_resolve(o->host, o->port, &p->sa, &p->salen, p->addr, sizeof p->addr);
    if (st != KEEL_OK) {
        free(p);
        return st;
    }
    p->sni = keel_assess_sni_ok(o->host);
    p->timeout_ms = o->timeout_ms ? o->timeout_ms : MQTT_TIMEOUT_DEFAULT_MS;
    p->listen_ms = o->listen_ms ? o->listen_ms : MQTT_LISTEN_DEFAULT_MS;
    snprintf(p->where, sizeof p->where, "port %u %s", o->port, o->tls ? "over TLS" : "in clear");
    double t0 = keel_now();
    if (o->tls) {
        /* security level 0 and no verification: a careless broker must still be reachable,
         * and its certificate is the tls unit's business */
        p->ctx = SSL_CTX_new(TLS_client_method());
        if (p->ctx == NULL || SSL_CTX_set_min_proto_version(p->ctx, TLS1_VERSION) != 1 ||
            SSL_CTX_set_cipher_list(p->ctx, "ALL:@SECLEVEL=0") != 1)
            st = keel_errorf(KEEL_ERR_CRYPTO, "cannot make a TLS client context");
        else {
            SSL_CTX_set_security_level(p->ctx, 0);
            SSL_CTX_set_verify(p->ctx, SSL_VERIFY_NONE, NULL);
            SSL_CTX_set_options(p->ctx, SSL_OP_LEGACY_SERVER_CONNECT | SSL_OP_NO_TICKET);
            SSL_CTX_set_msg_callback(p->ctx, msg_cb);
        }
    }
    if (st == KEEL_OK) {
        p->doc = json_pack("{s:s, s:s, s:s, s:s, s:i, s:b, s:n, s:n, s:[], s:[], s:{}}", "format", "keel-assess-mqtt-1",
                           "probe", "mqtt", "target", o->host, "address", p->addr, "port", (int)o->port, "tls",
                           o->tls != 0, "protocol", "anonymous", "findings", "evidence", "units");
        if (p->doc == NULL)
            st = nomem();
    }
    if (st == KEEL_OK) {
        sigset_t old; /* a TLS broker that resets the connection must not end the program */
        keel_assess_sigpipe_block(&old);
        st = probe_run(p);
        keel_assess_sigpipe_restore(&old);
    }
    if (st == KEEL_OK)
        st = set(p, "duration_us", json_integer(us_since(t0)));
    SSL_CTX_free(p->ctx);
    ERR_clear_error();
    if (st == KEEL_OK)
        *out = p->doc;
    else
        json_decref(p->doc);
    keel_wipe(p->in, sizeof p->in);
    free(p);
    return st;
}

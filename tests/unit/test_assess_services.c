/* assess probes of MQTT, telnet, SSH and FTP: the MQTT codec's edge cases,
 * and hostile servers this test runs on 127.0.0.1 (a broker that announces
 * an oversized packet, answers garbage, never answers, floods messages or
 * dies after malformed input; a telnet that floods option requests; FTP and
 * SSH servers that talk forever). The probes must stay bounded in time and
 * memory, and report what they saw. */
#include "assess_testutil.h"

#include "keel/assess_probe.h"
#include "keel/assess_services.h"

#include <arpa/inet.h>
#include <signal.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

/* ---- MQTT codec ---------------------------------------------------------------- */

static void test_varint(void **state)
{
    (void)state;
    static const struct {
        size_t v;
        size_t n;
        uint8_t b[4];
    } cases[] = {{0, 1, {0x00}},
                 {127, 1, {0x7f}},
                 {128, 2, {0x80, 0x01}},
                 {16383, 2, {0xff, 0x7f}},
                 {16384, 3, {0x80, 0x80, 0x01}},
                 {2097151, 3, {0xff, 0xff, 0x7f}},
                 {2097152, 4, {0x80, 0x80, 0x80, 0x01}},
                 {268435455, 4, {0xff, 0xff, 0xff, 0x7f}}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t out[4];
        assert_int_equal(keel_mqtt_varint_encode(cases[i].v, out), cases[i].n);
        assert_memory_equal(out, cases[i].b, cases[i].n);
        size_t v = 0, used = 0;
        assert_int_equal(keel_mqtt_varint_decode(out, cases[i].n, &v, &used), KEEL_OK);
        assert_int_equal(used, cases[i].n);
        assert_int_equal(v, cases[i].v);
        /* one byte short: more needed, not an error */
        assert_int_equal(keel_mqtt_varint_decode(out, cases[i].n - 1, &v, &used), KEEL_OK);
        assert_int_equal(used, 0);
    }
    uint8_t out[4];
    assert_int_equal(keel_mqtt_varint_encode(268435456, out), 0);
    static const uint8_t five[] = {0xff, 0xff, 0xff, 0xff, 0x01};
    size_t v = 0, used = 0;
    assert_int_equal(keel_mqtt_varint_decode(five, sizeof five, &v, &used), KEEL_ERR_FORMAT);
    /* four continuation bytes are already too many, whatever follows */
    assert_int_equal(keel_mqtt_varint_decode(five, 4, &v, &used), KEEL_ERR_FORMAT);
}

static void test_header(void **state)
{
    (void)state;
    uint8_t first = 0;
    size_t rem = 0, hl = 0;
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x00};
    assert_int_equal(keel_mqtt_header_decode(connack, sizeof connack, &first, &rem, &hl), KEEL_OK);
    assert_int_equal(first, 0x20);
    assert_int_equal(rem, 2);
    assert_int_equal(hl, 2);
    assert_int_equal(keel_mqtt_header_decode(connack, 1, &first, &rem, &hl), KEEL_OK);
    assert_int_equal(hl, 0);
    /* the largest accepted packet: 65536 bytes in all */
    static const uint8_t max[] = {0x30, 0xfc, 0xff, 0x03};
    assert_int_equal(keel_mqtt_header_decode(max, sizeof max, &first, &rem, &hl), KEEL_OK);
    assert_int_equal(rem + hl, KEEL_MQTT_PACKET_MAX);
    static const uint8_t over[] = {0x30, 0xfd, 0xff, 0x03};
    assert_int_equal(keel_mqtt_header_decode(over, sizeof over, &first, &rem, &hl), KEEL_ERR_TOO_LARGE);
    static const uint8_t huge[] = {0x30, 0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(keel_mqtt_header_decode(huge, sizeof huge, &first, &rem, &hl), KEEL_ERR_TOO_LARGE);
    static const uint8_t bad[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(keel_mqtt_header_decode(bad, sizeof bad, &first, &rem, &hl), KEEL_ERR_FORMAT);
}

static void test_connect_subscribe(void **state)
{
    (void)state;
    uint8_t buf[128];
    size_t n = 0;
    keel_mqtt_connect_t c = {.version = KEEL_MQTT_V311, .client_id = "keel-probe", .keepalive = 10};
    assert_int_equal(keel_mqtt_connect_encode(&c, buf, sizeof buf, &n), KEEL_OK);
    /* the same bytes the TLS probe sends */
    static const uint8_t want[] = {0x10, 0x16, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x0a,
                                   0x00, 0x0a, 'k', 'e', 'e', 'l', '-', 'p', 'r', 'o', 'b', 'e'};
    assert_int_equal(n, sizeof want);
    assert_memory_equal(buf, want, n);
    c.version = KEEL_MQTT_V5;
    c.user = "admin";
    c.password = "";
    assert_int_equal(keel_mqtt_connect_encode(&c, buf, sizeof buf, &n), KEEL_OK);
    assert_int_equal(buf[8], 5);
    assert_int_equal(buf[9], 0xc2); /* username, password, clean start */
    assert_int_equal(buf[12], 0x00); /* no properties */
    assert_int_equal(n, 2u + 10 + 1 + 12 + 7 + 2);
    assert_int_equal(buf[1], n - 2);
    /* too small a buffer is an error, never a cut packet */
    assert_int_equal(keel_mqtt_connect_encode(&c, buf, 20, &n), KEEL_ERR_TOO_LARGE);
    assert_int_equal(keel_mqtt_connect_encode(&c, buf, 3, &n), KEEL_ERR_TOO_LARGE);
    c.version = 3;
    assert_int_equal(keel_mqtt_connect_encode(&c, buf, sizeof buf, &n), KEEL_ERR_ARG);
    /* a 200-byte client id needs a two-byte remaining length */
    char id[201];
    memset(id, 'x', 200);
    id[200] = '\0';
    keel_mqtt_connect_t big = {.version = KEEL_MQTT_V311, .client_id = id};
    uint8_t large[512];
    assert_int_equal(keel_mqtt_connect_encode(&big, large, sizeof large, &n), KEEL_OK);
    uint8_t first = 0;
    size_t rem = 0, hl = 0;
    assert_int_equal(keel_mqtt_header_decode(large, n, &first, &rem, &hl), KEEL_OK);
    assert_int_equal(hl, 3);
    assert_int_equal(hl + rem, n);
    assert_int_equal(memcmp(large + hl, "\x00\x04MQTT", 6), 0);

    static const char *const f[] = {"#", "$SYS/#"};
    assert_int_equal(keel_mqtt_subscribe_encode(KEEL_MQTT_V311, 1, f, 2, buf, sizeof buf, &n), KEEL_OK);
    static const uint8_t sub[] = {0x82, 0x0f, 0x00, 0x01, 0x00, 0x01, '#', 0x00, 0x00, 0x06,
                                  '$',  'S',  'Y',  'S',  '/',  '#',  0x00};
    assert_int_equal(n, sizeof sub);
    assert_memory_equal(buf, sub, n);
    static const char *const empty[] = {""};
    assert_int_equal(keel_mqtt_subscribe_encode(KEEL_MQTT_V311, 1, empty, 1, buf, sizeof buf, &n), KEEL_ERR_ARG);
    assert_int_equal(keel_mqtt_subscribe_encode(KEEL_MQTT_V311, 0, f, 2, buf, sizeof buf, &n), KEEL_ERR_ARG);
}

static void test_decoders(void **state)
{
    (void)state;
    int sp = 0;
    unsigned code = 0;
    assert_int_equal(keel_mqtt_connack_decode(KEEL_MQTT_V311, (const uint8_t *)"\x01\x05", 2, &sp, &code), KEEL_OK);
    assert_int_equal(sp, 1);
    assert_int_equal(code, 5);
    assert_int_equal(keel_mqtt_connack_decode(KEEL_MQTT_V311, (const uint8_t *)"\x00\x00\x00", 3, &sp, &code),
                     KEEL_ERR_FORMAT);
    assert_int_equal(keel_mqtt_connack_decode(KEEL_MQTT_V311, (const uint8_t *)"\x02\x00", 2, &sp, &code),
                     KEEL_ERR_FORMAT);
    assert_int_equal(keel_mqtt_connack_decode(KEEL_MQTT_V311, (const uint8_t *)"\x00", 1, &sp, &code),
                     KEEL_ERR_FORMAT);
    assert_int_equal(keel_mqtt_connack_decode(KEEL_MQTT_V5, (const uint8_t *)"\x00\x87\x00", 3, &sp, &code), KEEL_OK);
    assert_int_equal(code, 0x87);
    /* properties that claim more than there is, or a length that never ends */
    assert_int_equal(keel_mqtt_connack_decode(KEEL_MQTT_V5, (const uint8_t *)"\x00\x00\x05\x01", 4, &sp, &code),
                     KEEL_ERR_FORMAT);
    assert_int_equal(keel_mqtt_connack_decode(KEEL_MQTT_V5, (const uint8_t *)"\x00\x00\xff\xff\xff\xff\x01", 7, &sp,
                                              &code),
                     KEEL_ERR_FORMAT);
    assert_int_equal(keel_mqtt_connack_decode(KEEL_MQTT_V5, (const uint8_t *)"\x00\x00", 2, &sp, &code),
                     KEEL_ERR_FORMAT);

    uint16_t id = 0;
    uint8_t codes[2];
    size_t nc = 0;
    assert_int_equal(keel_mqtt_suback_decode(KEEL_MQTT_V311, (const uint8_t *)"\x00\x01\x00\x80", 4, &id, codes, 2, &nc),
                     KEEL_OK);
    assert_int_equal(id, 1);
    assert_int_equal(nc, 2);
    assert_int_equal(codes[1], 0x80);
    assert_int_equal(keel_mqtt_suback_decode(KEEL_MQTT_V311, (const uint8_t *)"\x00\x01\x00\x00\x00", 5, &id, codes, 2,
                                             &nc),
                     KEEL_ERR_FORMAT);
    assert_int_equal(keel_mqtt_suback_decode(KEEL_MQTT_V311, (const uint8_t *)"\x00\x01", 2, &id, codes, 2, &nc),
                     KEEL_ERR_FORMAT);
    assert_int_equal(keel_mqtt_suback_decode(KEEL_MQTT_V5, (const uint8_t *)"\x00\x01\x00\x00", 4, &id, codes, 2, &nc),
                     KEEL_OK);
    assert_int_equal(nc, 1);
    assert_int_equal(keel_mqtt_suback_decode(KEEL_MQTT_V5, (const uint8_t *)"\x00\x01\x03\x00", 4, &id, codes, 2, &nc),
                     KEEL_ERR_FORMAT);

    keel_mqtt_publish_t m;
    static const uint8_t pub[] = {0x00, 0x03, 'a', '/', 'b', 'h', 'i'};
    assert_int_equal(keel_mqtt_publish_decode(KEEL_MQTT_V311, 0x31, pub, sizeof pub, &m), KEEL_OK);
    assert_int_equal(m.topic_len, 3);
    assert_memory_equal(m.topic, "a/b", 3);
    assert_int_equal(m.payload_len, 2);
    assert_true(m.retain);
    /* QoS 1: the packet id comes out of what would be the payload */
    assert_int_equal(keel_mqtt_publish_decode(KEEL_MQTT_V311, 0x32, pub, sizeof pub, &m), KEEL_OK);
    assert_int_equal(m.packet_id, 0x6869);
    assert_int_equal(m.payload_len, 0);
    assert_int_equal(keel_mqtt_publish_decode(KEEL_MQTT_V311, 0x32, pub, 6, &m), KEEL_ERR_FORMAT);
    assert_int_equal(keel_mqtt_publish_decode(KEEL_MQTT_V311, 0x36, pub, sizeof pub, &m), KEEL_ERR_FORMAT); /* QoS 3 */
    assert_int_equal(keel_mqtt_publish_decode(KEEL_MQTT_V311, 0x20, pub, sizeof pub, &m), KEEL_ERR_FORMAT); /* not PUBLISH */
    static const uint8_t long_topic[] = {0xff, 0xff, 'a'};
    assert_int_equal(keel_mqtt_publish_decode(KEEL_MQTT_V311, 0x30, long_topic, sizeof long_topic, &m), KEEL_ERR_FORMAT);
    static const uint8_t no_topic[] = {0x00, 0x00, 'a'};
    assert_int_equal(keel_mqtt_publish_decode(KEEL_MQTT_V311, 0x30, no_topic, sizeof no_topic, &m), KEEL_ERR_FORMAT);
    static const uint8_t v5[] = {0x00, 0x01, 't', 0x02, 0x01, 0x01, 'x'};
    assert_int_equal(keel_mqtt_publish_decode(KEEL_MQTT_V5, 0x30, v5, sizeof v5, &m), KEEL_OK);
    assert_int_equal(m.payload_len, 1);
    assert_int_equal(keel_mqtt_publish_decode(KEEL_MQTT_V5, 0x30, v5, 4, &m), KEEL_ERR_FORMAT);
}

/* Random bytes into every decoder: nothing read past the buffer (ASan watches). */
static void test_decoders_random(void **state)
{
    (void)state;
    srand(6);
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(rand() % 24);
        uint8_t *b = malloc(n ? n : 1);
        assert_non_null(b);
        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)(rand() % 4 == 0 ? 0xff : rand());
        int version = rand() % 2 ? KEEL_MQTT_V5 : KEEL_MQTT_V311;
        int sp;
        unsigned code;
        uint16_t id;
        uint8_t codes[4], first;
        size_t nc, rem, hl, v, used;
        keel_mqtt_publish_t m;
        /* any status will do: only the reads are watched */
        keel_status_t st = keel_mqtt_connack_decode(version, b, n, &sp, &code);
        st |= keel_mqtt_suback_decode(version, b, n, &id, codes, sizeof codes, &nc);
        st |= keel_mqtt_publish_decode(version, (uint8_t)(0x30 | (rand() % 16)), b, n, &m);
        if (keel_mqtt_header_decode(b, n, &first, &rem, &hl) == KEEL_OK && hl > 0)
            assert_true(hl + rem <= KEEL_MQTT_PACKET_MAX);
        if (keel_mqtt_varint_decode(b, n, &v, &used) == KEEL_OK && used > 0)
            assert_true(used <= 4 && used <= n);
        (void)st;
        if (keel_mqtt_publish_decode(version, 0x30, b, n, &m) == KEEL_OK) {
            assert_true(m.topic >= b && m.topic + m.topic_len <= b + n);
            assert_true(m.payload >= b && m.payload + m.payload_len == b + n);
        }
        free(b);
    }
}

/* ---- hostile servers ------------------------------------------------------------------ */

typedef struct server server_t;
typedef void (*handler_t)(server_t *s, int fd, unsigned conn);

struct server {
    int fd;
    unsigned port;
    atomic_int stop;
    atomic_uint conns;
    pthread_t th;
    handler_t handler;
};

static int stopped(server_t *s)
{
    return atomic_load(&s->stop);
}

/* Reads what is there (waiting up to ms); bytes read, 0 closed, -1 nothing. */
static ssize_t peer_read(server_t *s, int fd, uint8_t *b, size_t cap, int ms)
{
    for (int waited = 0; waited < ms && !stopped(s); waited += 20) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 20) <= 0)
            continue;
        ssize_t r = recv(fd, b, cap, 0);
        return r < 0 ? 0 : r;
    }
    return -1;
}

/* Sends all of b unless the peer went away; 0 or -1. */
static int peer_write(server_t *s, int fd, const void *b, size_t n)
{
    const uint8_t *q = b;
    while (n > 0 && !stopped(s)) {
        ssize_t r = send(fd, q, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) {
            q += r;
            n -= (size_t)r;
            continue;
        }
        if (r < 0 && errno != EAGAIN)
            return -1;
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        (void)poll(&pf, 1, 20);
    }
    return n == 0 ? 0 : -1;
}

/* Holds the connection without a word until the peer closes it. */
static void hold(server_t *s, int fd)
{
    uint8_t b[4096];
    while (!stopped(s) && peer_read(s, fd, b, sizeof b, 100) != 0) {
    }
}

static void *server_main(void *arg)
{
    server_t *s = arg;
    while (!stopped(s)) {
        int c = loopback_accept(s->fd, 0);
        if (c < 0)
            continue;
        s->handler(s, c, atomic_fetch_add(&s->conns, 1));
        close(c);
    }
    return NULL;
}

static server_t *server_start(handler_t h)
{
    server_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->handler = h;
    s->fd = loopback_listen(SOCK_STREAM, 16, &s->port);
    assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
    return s;
}

static void server_stop(server_t *s)
{
    atomic_store(&s->stop, 1);
    assert_int_equal(pthread_join(s->th, NULL), 0);
    close(s->fd);
    free(s);
}

static const char *unit_state(json_t *doc, const char *unit)
{
    const char *st = json_string_value(json_object_get(json_object_get(json_object_get(doc, "units"), unit), "state"));
    return st ? st : "";
}

/* Whether a finding of `severity` names `provision`. */
static int has_finding(json_t *doc, const char *provision, const char *severity)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(doc, "findings"), i, f)
        if (strcmp(json_string_value(json_object_get(f, "provision")), provision) == 0 &&
            strcmp(json_string_value(json_object_get(f, "severity")), severity) == 0)
            return 1;
    return 0;
}

static json_t *probe_mqtt(unsigned port, unsigned timeout_ms, unsigned listen_ms, double *secs)
{
    keel_mqtt_probe_opts_t o = {.host = "127.0.0.1", .port = port, .timeout_ms = timeout_ms, .listen_ms = listen_ms};
    json_t *doc = NULL;
    double t0 = keel_now();
    assert_int_equal(keel_assess_probe_mqtt(&o, &doc), KEEL_OK);
    *secs = keel_now() - t0;
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "format")), "keel-assess-mqtt-1");
    return doc;
}

/* Reads the client's CONNECT (whatever it is) before answering. */
static int read_connect(server_t *s, int fd)
{
    uint8_t b[1024];
    return peer_read(s, fd, b, sizeof b, 2000) > 0 ? 0 : -1;
}

static void h_oversized(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    /* a CONNACK announcing 268435455 bytes, then some of them */
    static const uint8_t b[] = {0x20, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x00, 0x00};
    if (read_connect(s, fd) == 0 && peer_write(s, fd, b, sizeof b) == 0)
        hold(s, fd);
}

static void h_garbage(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    static const char b[] = "HTTP/1.1 400 Bad Request\r\n\r\n\x01\x02\xff";
    if (read_connect(s, fd) == 0)
        (void)peer_write(s, fd, b, sizeof b - 1);
}

static void h_silent(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    hold(s, fd);
}

static void test_mqtt_hostile(void **state)
{
    (void)state;
    double secs = 0;
    server_t *s = server_start(h_oversized);
    json_t *doc = probe_mqtt(s->port, 300, 300, &secs);
    assert_string_equal(unit_state(doc, "mqtt"), "not_applicable");
    assert_true(secs < 3.0);
    assert_int_equal(json_array_size(json_object_get(doc, "findings")), 0);
    json_decref(doc);
    server_stop(s);

    s = server_start(h_garbage);
    doc = probe_mqtt(s->port, 300, 300, &secs);
    assert_string_equal(unit_state(doc, "mqtt"), "not_applicable");
    /* what came back is in the evidence, escaped */
    char *dump = json_dumps(json_object_get(doc, "evidence"), 0);
    assert_non_null(strstr(dump, "HTTP/1.1 400"));
    free(dump);
    json_decref(doc);
    server_stop(s);

    /* never answers: 3.1.1, then 5, each one timeout */
    s = server_start(h_silent);
    doc = probe_mqtt(s->port, 300, 300, &secs);
    assert_string_equal(unit_state(doc, "mqtt"), "not_applicable");
    assert_true(secs >= 0.55 && secs < 2.5);
    json_decref(doc);
    server_stop(s);

    /* nothing listens */
    s = server_start(h_silent);
    unsigned port = s->port;
    server_stop(s);
    doc = probe_mqtt(port, 300, 300, &secs);
    assert_string_equal(unit_state(doc, "mqtt"), "inconclusive");
    json_decref(doc);
}

/* ---- a TLS port that resets the connection ------------------------------------------ */

static SSL_CTX *tls_ctx; /* a self-signed P-256 certificate, made in the test */

static SSL_CTX *tls_server_ctx(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    assert_non_null(k);
    assert_non_null(x);
    X509_NAME *n = X509_get_subject_name(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, k), 1);
    assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"broker", -1, -1, 0), 1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    assert_non_null(c);
    assert_int_equal(SSL_CTX_use_certificate(c, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(c, k), 1);
    X509_free(x);
    EVP_PKEY_free(k);
    return c;
}

/* Completes the handshake, then resets the connection: the probe's next
 * write goes to a dead socket. */
static void h_tls_reset(server_t *s, int fd, unsigned conn)
{
    (void)s;
    (void)conn;
    struct timeval tv = {.tv_sec = 2};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(tls_ctx);
    if (ssl != NULL && SSL_set_fd(ssl, fd) == 1)
        (void)SSL_accept(ssl);
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    SSL_free(ssl);
}

/* SIGPIPE from OpenSSL's write to the reset socket must not end the program. */
static void test_mqtt_tls_reset(void **state)
{
    (void)state;
    tls_ctx = tls_server_ctx();
    server_t *s = server_start(h_tls_reset);
    keel_mqtt_probe_opts_t o = {.host = "127.0.0.1", .port = s->port, .tls = 1, .timeout_ms = 500, .listen_ms = 300};
    for (int round = 0; round < 3; round++) {
        json_t *doc = NULL;
        assert_int_equal(keel_assess_probe_mqtt(&o, &doc), KEEL_OK);
        assert_string_not_equal(unit_state(doc, "mqtt"), "ran");
        json_decref(doc);
    }
    server_stop(s);
    SSL_CTX_free(tls_ctx);
    tls_ctx = NULL;
}

/* A broker for anyone: CONNACK 0, SUBACK, then PUBLISH after PUBLISH on ever
 * new topics (some with lengths that lie) until the client leaves. After the
 * first connection, `h_once` no longer answers. */
static void broker(server_t *s, int fd, unsigned conn, int once)
{
    uint8_t b[4096];
    if (once && conn > 0) {
        hold(s, fd);
        return;
    }
    ssize_t n = peer_read(s, fd, b, sizeof b, 2000);
    if (n <= 0 || b[0] != 0x10)
        return;
    static const uint8_t connack[] = {0x20, 0x02, 0x00, 0x00};
    if (peer_write(s, fd, connack, sizeof connack) != 0)
        return;
    n = peer_read(s, fd, b, sizeof b, 2000);
    if (n <= 0 || b[0] != 0x82)
        return;
    static const uint8_t suback[] = {0x90, 0x04, 0x00, 0x01, 0x00, 0x00};
    if (peer_write(s, fd, suback, sizeof suback) != 0)
        return;
    for (unsigned i = 0; !stopped(s); i++) {
        uint8_t p[128];
        int tl = snprintf((char *)p + 4, 64, "%s/%u", i % 7 == 0 ? "$SYS/x" : "dev/sensor", i);
        p[0] = 0x30;
        p[2] = 0;
        p[3] = (uint8_t)tl;
        memcpy(p + 4 + tl, "payload", 7);
        p[1] = (uint8_t)(2 + tl + 7);
        if (i % 11 == 5)
            p[3] = 0xff; /* a topic length past the packet: to be ignored */
        if (peer_write(s, fd, p, (size_t)(4 + tl + 7)) != 0)
            return;
    }
}

static void h_broker(server_t *s, int fd, unsigned conn)
{
    broker(s, fd, conn, 0);
}

static void h_once(server_t *s, int fd, unsigned conn)
{
    broker(s, fd, conn, 1);
}

static void test_mqtt_flooding_broker(void **state)
{
    (void)state;
    double secs = 0;
    server_t *s = server_start(h_broker);
    json_t *doc = probe_mqtt(s->port, 500, 400, &secs);
    assert_string_equal(unit_state(doc, "mqtt"), "ran");
    assert_true(has_finding(doc, "5.5-1", "fail"));
    assert_true(has_finding(doc, "5.5-4", "fail"));
    assert_true(has_finding(doc, "5.5-7", "fail"));
    assert_false(has_finding(doc, "5.13-1B", "fail"));
    assert_string_equal(json_string_value(json_object_get(doc, "anonymous")), "accepted");
    /* the flood is cut: by count or by listen time, and the lists are capped */
    assert_true(json_integer_value(json_object_get(doc, "messages")) <= 2000);
    assert_true(json_array_size(json_object_get(doc, "topics")) <= 32);
    assert_true(json_integer_value(json_object_get(doc, "messages_unlisted")) > 0);
    assert_true(secs < 4.0);
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(doc, "topics"), i, t)
        assert_true(strlen(json_string_value(json_object_get(t, "payload"))) <= 64 * 4);
    json_decref(doc);
    server_stop(s);

    /* a broker that stops answering after the malformed CONNECTs */
    s = server_start(h_once);
    doc = probe_mqtt(s->port, 300, 200, &secs);
    assert_string_equal(unit_state(doc, "mqtt"), "ran");
    assert_true(has_finding(doc, "5.13-1B", "fail"));
    assert_true(json_is_false(json_object_get(json_object_get(doc, "robustness"), "answers_after")));
    json_decref(doc);
    server_stop(s);
}

/* ---- telnet, FTP, SSH ------------------------------------------------------------------------ */

static json_t *probe_svc(unsigned port, keel_svc_kind_t kind, unsigned timeout_ms, unsigned budget_ms, double *secs)
{
    keel_svc_probe_opts_t o = {.host = "127.0.0.1", .port = port, .kind = kind, .timeout_ms = timeout_ms,
                               .budget_ms = budget_ms, .max_pairs = 3};
    json_t *doc = NULL;
    double t0 = keel_now();
    assert_int_equal(keel_assess_probe_service(&o, &doc), KEEL_OK);
    *secs = keel_now() - t0;
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "format")), "keel-assess-service-1");
    return doc;
}

/* Option requests for every option, again and again, and an endless
 * subnegotiation; never a prompt. */
static void h_iac_flood(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    uint8_t b[3 * 256 * 2 + 4];
    size_t n = 0;
    for (unsigned o = 0; o < 256; o++) {
        b[n++] = 255, b[n++] = 253, b[n++] = (uint8_t)o;
        b[n++] = 255, b[n++] = 251, b[n++] = (uint8_t)o;
    }
    b[n++] = 255, b[n++] = 250, b[n++] = 24, b[n++] = 1; /* IAC SB TTYPE SEND ... never IAC SE */
    if (peer_write(s, fd, b, n) != 0)
        return;
    uint8_t junk[4096], in[512];
    memset(junk, 'A', sizeof junk);
    while (!stopped(s) && peer_write(s, fd, junk, sizeof junk) == 0)
        (void)peer_read(s, fd, in, sizeof in, 1);
}

/* A telnet login that lets admin/admin in (and says so with a shell prompt). */
static void h_telnet_login(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    static const uint8_t hello[] = {255, 251, 1, 255, 251, 3, 255, 253, 24, 'l', 'o', 'g', 'i', 'n', ':', ' '};
    if (peer_write(s, fd, hello, sizeof hello) != 0)
        return;
    for (int tries = 0; tries < 5 && !stopped(s); tries++) {
        char user[128] = "", pass[128] = "";
        uint8_t b[256];
        size_t ul = 0, pl = 0;
        /* the user name line (options answers skipped) */
        while (!stopped(s) && (ul == 0 || user[ul - 1] != '\n')) {
            ssize_t r = peer_read(s, fd, b, sizeof b, 2000);
            if (r <= 0)
                return;
            for (ssize_t i = 0; i < r && ul < sizeof user - 1; i++)
                if (b[i] == 255)
                    i += 2;
                else
                    user[ul++] = (char)b[i];
        }
        user[ul] = '\0';
        if (peer_write(s, fd, "Password: ", 10) != 0)
            return;
        while (!stopped(s) && (pl == 0 || pass[pl - 1] != '\n')) {
            ssize_t r = peer_read(s, fd, b, sizeof b, 2000);
            if (r <= 0)
                return;
            for (ssize_t i = 0; i < r && pl < sizeof pass - 1; i++)
                pass[pl++] = (char)b[i];
        }
        pass[pl] = '\0';
        if (strcmp(user, "admin\r\n") == 0 && strcmp(pass, "admin\r\n") == 0) {
            (void)peer_write(s, fd, "\r\nBusyBox v1.36 built-in shell (ash)\r\n# ", 40);
            hold(s, fd);
            return;
        }
        if (peer_write(s, fd, "\r\nLogin incorrect\r\nlogin: ", 26) != 0)
            return;
    }
}

static void h_shell(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    static const uint8_t b[] = {255, 251, 1, '\r', '\n', '/', ' ', '#', ' '};
    if (peer_write(s, fd, b, sizeof b) == 0)
        hold(s, fd);
}

static void test_telnet(void **state)
{
    (void)state;
    double secs = 0;
    server_t *s = server_start(h_iac_flood);
    json_t *doc = probe_svc(s->port, KEEL_SVC_AUTO, 300, 3000, &secs);
    assert_string_equal(json_string_value(json_object_get(doc, "kind")), "telnet");
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "ran");
    assert_true(has_finding(doc, "5.5-1", "fail"));
    assert_false(has_finding(doc, "5.1-1", "fail"));
    json_t *tn = json_object_get(doc, "telnet");
    assert_true(json_integer_value(json_object_get(tn, "refused")) <= 64);
    assert_true(json_integer_value(json_object_get(tn, "option_requests")) >= 64);
    assert_true(secs < 3.5);
    json_decref(doc);
    server_stop(s);

    s = server_start(h_telnet_login);
    doc = probe_svc(s->port, KEEL_SVC_TELNET, 500, 8000, &secs);
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "ran");
    assert_true(has_finding(doc, "5.1-1", "fail"));
    json_t *acc = json_array_get(json_object_get(doc, "accepted"), 0);
    assert_string_equal(json_string_value(json_object_get(acc, "user")), "admin");
    assert_string_equal(json_string_value(json_object_get(acc, "password")), "admin");
    json_decref(doc);
    server_stop(s);

    s = server_start(h_shell);
    doc = probe_svc(s->port, KEEL_SVC_AUTO, 300, 3000, &secs);
    assert_true(has_finding(doc, "5.1-1", "fail"));
    assert_true(json_is_true(json_object_get(json_object_get(doc, "telnet"), "shell_without_login")));
    json_decref(doc);
    server_stop(s);
}

static void h_ftp_lines(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    while (!stopped(s) && peer_write(s, fd, "220-welcome to the endless greeting\r\n", 37) == 0) {
    }
}

static void h_ftp_longline(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    char b[1024];
    memset(b, 'x', sizeof b);
    memcpy(b, "220 ", 4);
    while (!stopped(s) && peer_write(s, fd, b, sizeof b) == 0)
        memset(b, 'y', 4);
}

/* An FTP that takes anonymous and admin/admin, and USER before any TLS. */
static void h_ftp_open(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    if (peer_write(s, fd, "220-Hello\r\n220 TinyFTP 1.2 ready\r\n", 34) != 0)
        return;
    char user[256] = "";
    for (int i = 0; i < 6 && !stopped(s); i++) {
        char b[256];
        ssize_t r = peer_read(s, fd, (uint8_t *)b, sizeof b - 1, 2000);
        if (r <= 0)
            return;
        b[r] = '\0';
        const char *reply = "500 what?\r\n";
        if (strncmp(b, "USER ", 5) == 0) {
            snprintf(user, sizeof user, "%s", b + 5);
            reply = "331 password please\r\n";
        } else if (strncmp(b, "PASS ", 5) == 0) {
            int ok = strcmp(user, "anonymous\r\n") == 0 || (strcmp(user, "admin\r\n") == 0 && strcmp(b, "PASS admin\r\n") == 0);
            reply = ok ? "230 in\r\n" : "530 no\r\n";
        } else if (strncmp(b, "QUIT", 4) == 0) {
            (void)peer_write(s, fd, "221 bye\r\n", 9);
            return;
        }
        if (peer_write(s, fd, reply, strlen(reply)) != 0)
            return;
    }
}

static void test_ftp(void **state)
{
    (void)state;
    double secs = 0;
    server_t *s = server_start(h_ftp_lines);
    json_t *doc = probe_svc(s->port, KEEL_SVC_FTP, 500, 3000, &secs);
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "not_applicable");
    assert_true(secs < 2.0);
    json_decref(doc);
    server_stop(s);

    s = server_start(h_ftp_longline);
    doc = probe_svc(s->port, KEEL_SVC_FTP, 500, 3000, &secs);
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "not_applicable");
    assert_true(secs < 2.0);
    json_decref(doc);
    server_stop(s);

    s = server_start(h_ftp_open);
    doc = probe_svc(s->port, KEEL_SVC_AUTO, 500, 5000, &secs);
    assert_string_equal(json_string_value(json_object_get(doc, "kind")), "ftp");
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "ran");
    assert_true(has_finding(doc, "5.5-1", "fail"));
    assert_true(has_finding(doc, "5.5-4", "fail"));
    assert_true(has_finding(doc, "5.1-1", "fail"));
    assert_true(has_finding(doc, "5.6-2", "warn")); /* "TinyFTP 1.2" */
    json_decref(doc);
    server_stop(s);
}

static void h_ssh_lines(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    while (!stopped(s) && peer_write(s, fd, "not yet\r\n", 9) == 0) {
    }
}

static void h_ssh_huge(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    static const uint8_t b[] = "SSH-2.0-Fake_1.0\r\n\xff\xff\xff\xf0\x04\x14";
    if (peer_write(s, fd, b, sizeof b - 1) == 0)
        hold(s, fd);
}

static void h_ssh_silent_after_banner(server_t *s, int fd, unsigned conn)
{
    (void)conn;
    if (peer_write(s, fd, "SSH-2.0-Quiet\r\n", 15) == 0)
        hold(s, fd);
}

static size_t ssh_string(uint8_t *b, const char *s)
{
    size_t n = strlen(s);
    b[0] = (uint8_t)(n >> 24);
    b[1] = (uint8_t)(n >> 16);
    b[2] = (uint8_t)(n >> 8);
    b[3] = (uint8_t)n;
    memcpy(b + 4, s, n);
    return 4 + n;
}

/* Two faces: the first connection sees a plain SSH server (identification
 * and KEXINIT); the next ones, libssh's, an identification of raw bytes
 * (an escape sequence, bytes that are not UTF-8) that libssh quotes. */
static void h_ssh_two_faces(server_t *s, int fd, unsigned conn)
{
    if (conn > 0) {
        if (peer_write(s, fd, "SSH-1.5-\x1b[2J\xff\xfe\r\n", 16) == 0)
            hold(s, fd);
        return;
    }
    static const char *const lists[] = {"curve25519-sha256", "ssh-ed25519", "aes128-ctr", "aes128-ctr",
                                        "hmac-sha2-256", "hmac-sha2-256", "none", "none", "", ""};
    uint8_t b[1024];
    size_t n = 6;
    b[5] = 20; /* SSH_MSG_KEXINIT */
    memset(b + n, 0x11, 16);
    n += 16;
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        n += ssh_string(b + n, lists[i]);
    memset(b + n, 0, 5); /* first_kex_packet_follows, reserved */
    n += 5;
    size_t pad = 8 - n % 8 < 4 ? 16 - n % 8 : 8 - n % 8;
    memset(b + n, 0, pad);
    n += pad;
    size_t plen = n - 4;
    b[0] = (uint8_t)(plen >> 24);
    b[1] = (uint8_t)(plen >> 16);
    b[2] = (uint8_t)(plen >> 8);
    b[3] = (uint8_t)plen;
    b[4] = (uint8_t)pad;
    if (peer_write(s, fd, "SSH-2.0-Two\r\n", 13) == 0 && peer_write(s, fd, b, n) == 0)
        hold(s, fd);
}

static void test_ssh_hostile(void **state)
{
    (void)state;
    double secs = 0;
    server_t *s = server_start(h_ssh_lines);
    json_t *doc = probe_svc(s->port, KEEL_SVC_SSH, 500, 3000, &secs);
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "not_applicable");
    assert_true(secs < 2.0);
    json_decref(doc);
    server_stop(s);

    s = server_start(h_ssh_huge);
    doc = probe_svc(s->port, KEEL_SVC_AUTO, 500, 3000, &secs);
    assert_string_equal(json_string_value(json_object_get(doc, "kind")), "ssh");
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "not_applicable");
    char *dump = json_dumps(json_object_get(doc, "evidence"), 0);
    assert_non_null(strstr(dump, "out of range"));
    free(dump);
    json_decref(doc);
    server_stop(s);

    s = server_start(h_ssh_silent_after_banner);
    doc = probe_svc(s->port, KEEL_SVC_SSH, 300, 1000, &secs);
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "not_applicable");
    assert_true(secs < 1.5);
    json_decref(doc);
    server_stop(s);

    /* what libssh quotes of the server goes into the reason escaped, never raw */
    s = server_start(h_ssh_two_faces);
    doc = probe_svc(s->port, KEEL_SVC_SSH, 500, 3000, &secs);
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "inconclusive");
    const char *why = json_string_value(
        json_object_get(json_object_get(json_object_get(doc, "units"), "telnet_ssh_ftp"), "reason"));
    assert_non_null(why);
    assert_non_null(strstr(why, "\\x1b[2J\\xff"));
    json_decref(doc);
    server_stop(s);

    /* a port that never speaks: not one of ours */
    s = server_start(h_silent);
    doc = probe_svc(s->port, KEEL_SVC_AUTO, 300, 1000, &secs);
    assert_string_equal(unit_state(doc, "telnet_ssh_ftp"), "not_applicable");
    json_decref(doc);
    server_stop(s);
}

static void test_args(void **state)
{
    (void)state;
    json_t *doc = NULL;
    keel_mqtt_probe_opts_t m = {.host = "127.0.0.1", .port = 0};
    assert_int_equal(keel_assess_probe_mqtt(&m, &doc), KEEL_ERR_ARG);
    m.port = 1883;
    m.timeout_ms = 30001;
    assert_int_equal(keel_assess_probe_mqtt(&m, &doc), KEEL_ERR_ARG);
    keel_svc_probe_opts_t o = {.host = "127.0.0.1", .port = 23, .max_pairs = 65};
    assert_int_equal(keel_assess_probe_service(&o, &doc), KEEL_ERR_ARG);
    o.max_pairs = 1;
    o.host = "";
    assert_int_equal(keel_assess_probe_service(&o, &doc), KEEL_ERR_ARG);
    assert_null(doc);
}

int main(void)
{
    /* the in-test servers write to clients that may have gone: EPIPE, not death */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_connect_subscribe),
        cmocka_unit_test(test_decoders),
        cmocka_unit_test(test_decoders_random),
        cmocka_unit_test(test_mqtt_hostile),
        cmocka_unit_test(test_mqtt_tls_reset),
        cmocka_unit_test(test_mqtt_flooding_broker),
        cmocka_unit_test(test_telnet),
        cmocka_unit_test(test_ftp),
        cmocka_unit_test(test_ssh_hostile),
        cmocka_unit_test(test_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* assess probes: the port scan, the UDP probes and the TLS probe against
 * targets this test runs itself on 127.0.0.1 (threads: TCP banner servers,
 * UDP responders, a TLS server with a deliberately expired certificate). */
#include "assess_testutil.h"

#include "keel/assess_probe.h"
#include "assess/net.h"

#include <arpa/inet.h>
#include <signal.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- small targets ---------------------------------------------------------- */

typedef struct {
    int fd;
    atomic_int stop;
    pthread_t th;
    const uint8_t *reply;
    size_t reply_len;
    SSL_CTX *tls; /* a TLS server when set */
} server_t;

/* TCP: on each connection, says `reply` first (a banner) or runs a TLS
 * handshake. UDP: answers every datagram with `reply`. */
static void *server_main(void *arg)
{
    server_t *s = arg;
    int type = 0;
    socklen_t tl = sizeof type;
    (void)getsockopt(s->fd, SOL_SOCKET, SO_TYPE, &type, &tl);
    while (!atomic_load(&s->stop)) {
        if (type == SOCK_DGRAM) {
            struct pollfd pf = {.fd = s->fd, .events = POLLIN};
            if (poll(&pf, 1, 20) <= 0)
                continue;
            uint8_t buf[2048];
            struct sockaddr_storage from;
            socklen_t fl = sizeof from;
            ssize_t n = recvfrom(s->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
            if (n > 0 && s->reply != NULL)
                (void)sendto(s->fd, s->reply, s->reply_len, 0, (struct sockaddr *)&from, fl);
            continue;
        }
        int c = loopback_accept(s->fd, 2);
        if (c < 0)
            continue;
        if (s->tls != NULL) {
            SSL *ssl = SSL_new(s->tls);
            if (ssl != NULL && SSL_set_fd(ssl, c) == 1 && SSL_accept(ssl) == 1)
                (void)SSL_shutdown(ssl);
            SSL_free(ssl);
            ERR_clear_error();
        } else if (s->reply != NULL) {
            (void)send(c, s->reply, s->reply_len, MSG_NOSIGNAL);
            /* a moment for the client to read before the close */
            usleep(20000);
        }
        close(c);
    }
    return NULL;
}

static void server_start(server_t *s, int fd, const void *reply, size_t len, SSL_CTX *tls)
{
    memset(s, 0, sizeof *s);
    atomic_init(&s->stop, 0);
    s->fd = fd;
    s->reply = reply;
    s->reply_len = len;
    s->tls = tls;
    assert_int_equal(pthread_create(&s->th, NULL, server_main, s), 0);
}

static void server_stop(server_t *s)
{
    atomic_store(&s->stop, 1);
    assert_int_equal(pthread_join(s->th, NULL), 0);
    close(s->fd);
}

static json_t *open_entry(json_t *doc, unsigned port)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(json_object_get(doc, "tcp"), "open"), i, e)
        if (json_integer_value(json_object_get(e, "port")) == (json_int_t)port)
            return e;
    return NULL;
}

static int has_finding(json_t *doc, const char *provision, const char *severity, const char *text)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(doc, "findings"), i, f)
        if (strcmp(json_string_value(json_object_get(f, "provision")), provision) == 0 &&
            strcmp(json_string_value(json_object_get(f, "severity")), severity) == 0 &&
            (text == NULL || strstr(json_string_value(json_object_get(f, "what")), text) != NULL))
            return 1;
    return 0;
}

/* ---- port sets and escaping --------------------------------------------------- */

static void test_portset(void **state)
{
    (void)state;
    keel_portset_t s;
    assert_int_equal(keel_portset_parse("1-65535", &s), KEEL_OK);
    assert_int_equal(keel_portset_count(&s), 65535);
    assert_int_equal(keel_portset_parse("22,80,8000-8002", &s), KEEL_OK);
    assert_int_equal(keel_portset_count(&s), 5);
    assert_true(keel_portset_has(&s, 8001));
    assert_false(keel_portset_has(&s, 8003));
    assert_false(keel_portset_has(&s, 0));
    const char *bad[] = {"", "0", "65536", "80-", "-80", "90-80", "80,,81", "8o", "1-2-3", "123456", " 80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(keel_portset_parse(bad[i], &s), KEEL_ERR_ARG);
}

static void test_escape(void **state)
{
    (void)state;
    const uint8_t in[] = {'a', '\\', '\r', '\n', '\t', 0x00, 0x1b, 0x7f, 0xff, '"'};
    json_t *j = keel_assess_escape(in, sizeof in);
    assert_non_null(j);
    assert_string_equal(json_string_value(j), "a\\\\\\r\\n\\t\\x00\\x1b\\x7f\\xff\"");
    json_decref(j);
}

/* A bounded snprintf may cut a UTF-8 character: the cut half is left out of
 * the text and of the unit's finding and reason, whole characters stay. */
static void test_utf8_cut(void **state)
{
    (void)state;
    char s[16];
    snprintf(s, sizeof s, "ab\xc3\xa4");
    keel_assess_utf8_cut_tail(s);
    assert_string_equal(s, "ab\xc3\xa4");
    snprintf(s, sizeof s, "ab\xe2\x82");
    keel_assess_utf8_cut_tail(s);
    assert_string_equal(s, "ab");
    snprintf(s, sizeof s, "\xf0\x9f\x98");
    keel_assess_utf8_cut_tail(s);
    assert_string_equal(s, "");
    json_t *doc = json_object();
    assert_non_null(doc);
    assert_int_equal(keel_assess_unit_finding(doc, "u", "5.1-1", "fail", "x \xc3"), KEEL_OK);
    assert_int_equal(keel_assess_unit_mark(doc, "u", KEEL_UNIT_INCONCLUSIVE, "y \xe2\x82\xac\xe2\x82"), KEEL_OK);
    json_t *f = json_array_get(json_object_get(doc, "findings"), 0);
    json_t *u = json_object_get(json_object_get(doc, "units"), "u");
    assert_string_equal(json_string_value(json_object_get(f, "what")), "x ");
    assert_string_equal(json_string_value(json_object_get(u, "reason")), "y \xe2\x82\xac");
    json_decref(doc);
}

/* ---- TCP scan ---------------------------------------------------------------- */

static void test_scan_tcp(void **state)
{
    (void)state;
    static const char ssh[] = "SSH-2.0-keeltest\r\n\x01";
    uint8_t big[KEEL_PROBE_BANNER_MAX + 44];
    memset(big, 'A', sizeof big);
    unsigned p_banner = 0, p_big = 0, p_silent = 0, p_full = 0;
    server_t s1, s2;
    server_start(&s1, loopback_listen(SOCK_STREAM, 16, &p_banner), ssh, sizeof ssh - 1, NULL);
    server_start(&s2, loopback_listen(SOCK_STREAM, 16, &p_big), big, sizeof big, NULL);
    int silent = loopback_listen(SOCK_STREAM, 16, &p_silent);
    /* A listener whose accept queue is full drops new SYNs: the connect times
     * out, as behind a filtering firewall. */
    int full = loopback_listen(SOCK_STREAM, 0, &p_full);
    struct sockaddr_in fa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p_full),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        assert_true(fillers[i] >= 0);
        (void)connect(fillers[i], (struct sockaddr *)&fa, sizeof fa);
    }
    usleep(100000);
    unsigned p_closed = loopback_free_port(SOCK_STREAM);

    keel_portset_t set;
    memset(&set, 0, sizeof set);
    keel_portset_add(&set, p_banner);
    keel_portset_add(&set, p_big);
    keel_portset_add(&set, p_silent);
    keel_portset_add(&set, p_full);
    keel_portset_add(&set, p_closed);
    keel_scan_opts_t o = {.host = "127.0.0.1", .tcp = &set, .timeout_ms = 300, .banner_ms = 300};
    json_t *doc = NULL;
    assert_int_equal(keel_assess_scan(&o, &doc), KEEL_OK);
    json_t *tcp = json_object_get(doc, "tcp");
    assert_int_equal(json_integer_value(json_object_get(tcp, "ports_scanned")), 5);
    assert_int_equal(json_array_size(json_object_get(tcp, "open")), 3);
    assert_int_equal(json_integer_value(json_object_get(tcp, "closed")), 1);
    assert_int_equal(json_integer_value(json_object_get(tcp, "filtered")), 1);
    /* the filtered port was tried a second time before it counted */
    assert_int_equal(json_integer_value(json_object_get(tcp, "retried")), 1);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(tcp, "filtered_ports"), 0)), p_full);
    json_t *e = open_entry(doc, p_banner);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "banner")), "SSH-2.0-keeltest\\r\\n\\x01");
    assert_true(json_integer_value(json_object_get(e, "connect_us")) >= 0);
    e = open_entry(doc, p_big);
    assert_non_null(e);
    assert_int_equal(json_integer_value(json_object_get(e, "banner_bytes")), KEEL_PROBE_BANNER_MAX);
    assert_true(json_is_true(json_object_get(e, "banner_truncated")));
    e = open_entry(doc, p_silent);
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "banner")), "");
    assert_null(open_entry(doc, p_closed));
    assert_int_equal(json_array_size(json_object_get(doc, "findings")), 0);
    json_decref(doc);

    /* a window of one still covers every port */
    o.window = 1;
    o.timeout_ms = 100;
    assert_int_equal(keel_assess_scan(&o, &doc), KEEL_OK);
    assert_int_equal(json_array_size(json_object_get(json_object_get(doc, "tcp"), "open")), 3);
    json_decref(doc);

    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(full);
    close(silent);
    server_stop(&s1);
    server_stop(&s2);
}

static void test_scan_args(void **state)
{
    (void)state;
    keel_portset_t set;
    memset(&set, 0, sizeof set);
    keel_portset_add(&set, 1);
    json_t *doc = NULL;
    keel_scan_opts_t o = {.host = "", .tcp = &set};
    assert_int_equal(keel_assess_scan(&o, &doc), KEEL_ERR_ARG);
    o.host = "127.0.0.1";
    o.tcp = NULL;
    assert_int_equal(keel_assess_scan(&o, &doc), KEEL_ERR_ARG);
    o.tcp = &set;
    o.window = KEEL_SCAN_WINDOW_MAX + 1;
    assert_int_equal(keel_assess_scan(&o, &doc), KEEL_ERR_ARG);
    assert_null(doc);
}

/* ---- UDP probes ---------------------------------------------------------------- */

/* GetResponse, v2c, community public, sysDescr.0 = "KeelOS 1.0". */
static const uint8_t snmp_reply[] = {
    0x30, 0x33, 0x02, 0x01, 0x01, 0x04, 0x06, 'p', 'u', 'b', 'l', 'i', 'c',
    0xa2, 0x26, 0x02, 0x04, 0x4b, 0x45, 0x45, 0x4c, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00,
    0x30, 0x18, 0x30, 0x16, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00,
    0x04, 0x0a, 'K', 'e', 'e', 'l', 'O', 'S', ' ', '1', '.', '0'};
static const char ssdp_reply[] = "HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nSERVER: Linux UPnP/1.0 keel/1\r\n\r\n";

static json_t *udp_entry(json_t *doc, const char *service)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "udp"), i, e)
        if (strcmp(json_string_value(json_object_get(e, "service")), service) == 0)
            return e;
    return NULL;
}

static void test_udp(void **state)
{
    (void)state;
    unsigned p_ssdp = 0, p_snmp = 0, p_mute = 0;
    server_t s1, s2;
    server_start(&s1, loopback_listen(SOCK_DGRAM, -1, &p_ssdp), ssdp_reply, sizeof ssdp_reply - 1, NULL);
    server_start(&s2, loopback_listen(SOCK_DGRAM, -1, &p_snmp), snmp_reply, sizeof snmp_reply, NULL);
    int mute = loopback_listen(SOCK_DGRAM, -1, &p_mute);
    unsigned p_closed = loopback_free_port(SOCK_DGRAM);
    keel_udp_probe_t pr[] = {{KEEL_UDP_SSDP, p_ssdp}, {KEEL_UDP_SNMP, p_snmp}, {KEEL_UDP_COAP, p_closed},
                             {KEEL_UDP_MDNS, p_mute}};
    keel_scan_opts_t o = {.host = "127.0.0.1", .udp = pr, .udp_len = 4, .timeout_ms = 200};
    json_t *doc = NULL;
    assert_int_equal(keel_assess_scan(&o, &doc), KEEL_OK);
    assert_null(json_object_get(doc, "tcp"));
    json_t *e = udp_entry(doc, "ssdp");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "state")), "answered");
    assert_non_null(strstr(json_string_value(json_object_get(e, "request")), "M-SEARCH * HTTP/1.1"));
    assert_true(json_is_true(json_object_get(json_object_get(e, "ssdp"), "http_200")));
    assert_non_null(strstr(json_string_value(json_object_get(e, "response")), "keel/1"));
    e = udp_entry(doc, "snmp");
    assert_string_equal(json_string_value(json_object_get(e, "state")), "answered");
    json_t *snmp = json_object_get(e, "snmp");
    assert_string_equal(json_string_value(json_object_get(snmp, "pdu")), "get-response");
    assert_string_equal(json_string_value(json_object_get(snmp, "version")), "v2c");
    assert_string_equal(json_string_value(json_object_get(snmp, "sys_descr")), "KeelOS 1.0");
    e = udp_entry(doc, "coap");
    assert_string_equal(json_string_value(json_object_get(e, "state")), "closed");
    e = udp_entry(doc, "mdns");
    assert_string_equal(json_string_value(json_object_get(e, "state")), "no_answer");
    assert_int_equal(json_integer_value(json_object_get(e, "attempts")), 2);
    /* the SNMP agent speaking "public" is the default-credential finding */
    assert_true(has_finding(doc, "5.1-1", "fail", "public"));
    assert_true(has_finding(doc, "5.6-1", "info", "ssdp"));
    assert_false(has_finding(doc, "5.6-1", "info", "mdns"));
    json_decref(doc);

    /* a reply that is not SNMP is recorded but is no finding */
    server_stop(&s2);
    server_start(&s2, loopback_listen(SOCK_DGRAM, -1, &p_snmp), "garbage", 7, NULL);
    keel_udp_probe_t one = {KEEL_UDP_SNMP, p_snmp};
    keel_scan_opts_t o2 = {.host = "127.0.0.1", .udp = &one, .udp_len = 1, .timeout_ms = 200};
    assert_int_equal(keel_assess_scan(&o2, &doc), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(udp_entry(doc, "snmp"), "state")), "answered");
    assert_false(has_finding(doc, "5.1-1", "fail", NULL));
    json_decref(doc);

    close(mute);
    server_stop(&s1);
    server_stop(&s2);
}

/* ---- TLS probe ------------------------------------------------------------------ */

/* A self-signed P-256 certificate that expired yesterday. */
static void make_expired_cert(EVP_PKEY **key, X509 **cert)
{
    *key = EVP_EC_gen("P-256");
    assert_non_null(*key);
    X509 *x = X509_new();
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), -2 * 86400));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), -86400));
    X509_NAME *n = X509_get_subject_name(x);
    assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"expired.test", -1, -1, 0), 1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    assert_int_equal(X509_set_pubkey(x, *key), 1);
    assert_true(X509_sign(x, *key, EVP_sha256()) > 0);
    *cert = x;
}

static void test_tls(void **state)
{
    (void)state;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    make_expired_cert(&key, &cert);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate(ctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
    assert_int_equal(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION), 1);
    assert_int_equal(SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION), 1);
    assert_int_equal(SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SHA"), 1);
    assert_int_equal(SSL_CTX_set1_groups_list(ctx, "P-256"), 1);
    server_t s;
    unsigned port = 0;
    server_start(&s, loopback_listen(SOCK_STREAM, 16, &port), NULL, 0, ctx);

    keel_tls_probe_opts_t o = {.host = "127.0.0.1", .port = port, .timeout_ms = 2000};
    json_t *doc = NULL;
    assert_int_equal(keel_assess_probe_tls(&o, &doc), KEEL_OK);
    assert_true(json_is_true(json_object_get(doc, "tls")));
    /* versions: only 1.2 */
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "versions"), i, e) {
        const char *v = json_string_value(json_object_get(e, "version"));
        if (strcmp(v, "TLSv1.2") == 0)
            assert_true(json_is_true(json_object_get(e, "accepted")));
        else
            assert_false(json_is_true(json_object_get(e, "accepted")));
    }
    /* exactly the two suites the server has, each with its properties */
    json_t *ciphers = json_object_get(doc, "ciphers");
    assert_int_equal(json_array_size(ciphers), 2);
    int seen_gcm = 0, seen_cbc = 0;
    json_array_foreach(ciphers, i, e) {
        const char *n = json_string_value(json_object_get(e, "name"));
        assert_true(json_is_true(json_object_get(e, "forward_secret")));
        if (strcmp(n, "ECDHE-ECDSA-AES128-GCM-SHA256") == 0)
            seen_gcm = json_is_true(json_object_get(e, "aead"));
        if (strcmp(n, "ECDHE-ECDSA-AES128-SHA") == 0)
            seen_cbc = !json_is_true(json_object_get(e, "aead"));
    }
    assert_true(seen_gcm && seen_cbc);
    assert_true(json_integer_value(json_object_get(doc, "ciphers_tried")) > 20);
    /* groups: P-256 alone */
    json_array_foreach(json_object_get(doc, "groups"), i, e) {
        const char *n = json_string_value(json_object_get(e, "name"));
        assert_int_equal(json_is_true(json_object_get(e, "accepted")), strcmp(n, "P-256") == 0);
    }
    json_t *c = json_object_get(doc, "certificate");
    assert_string_equal(json_string_value(json_object_get(c, "subject")), "CN=expired.test");
    assert_string_equal(json_string_value(json_object_get(c, "key_type")), "EC");
    assert_int_equal(json_integer_value(json_object_get(c, "key_bits")), 256);
    assert_true(json_is_true(json_object_get(c, "expired")));
    assert_true(json_is_true(json_object_get(c, "self_signed")));
    assert_int_equal(json_integer_value(json_object_get(c, "chain_length")), 1);
    assert_string_equal(json_string_value(json_object_get(c, "signature_algorithm")), "ecdsa-with-SHA256");
    /* findings: the CBC suite and the expiry; nothing about versions, keys or clear text */
    assert_true(has_finding(doc, "5.5-1", "fail", "without AEAD: ECDHE-ECDSA-AES128-SHA"));
    assert_true(has_finding(doc, "5.5-1", "fail", "expired"));
    assert_false(has_finding(doc, "5.5-1", "fail", "forward secrecy"));
    assert_false(has_finding(doc, "5.5-1", "fail", "is accepted"));
    assert_false(has_finding(doc, "5.5-1", "fail", "bits"));
    assert_false(has_finding(doc, "5.5-6", "fail", NULL));
    json_t *plain = json_object_get(doc, "plaintext");
    assert_int_equal(json_array_size(plain), 2);
    json_array_foreach(plain, i, e)
        assert_false(json_is_true(json_object_get(e, "answered")));
    json_decref(doc);

    /* a budget too small for everything: the rest is listed, not guessed */
    o.budget_ms = 30;
    assert_int_equal(keel_assess_probe_tls(&o, &doc), KEEL_OK);
    assert_true(json_array_size(json_object_get(doc, "untested")) > 0);
    assert_true(has_finding(doc, "5.5-1", "info", "budget"));
    json_decref(doc);
    server_stop(&s);

    /* a plaintext HTTP server on the port: no TLS, and the clear answer is found */
    static const char http[] = "HTTP/1.0 200 OK\r\nServer: tiny\r\n\r\nhello";
    server_t h;
    server_start(&h, loopback_listen(SOCK_STREAM, 16, &port), http, sizeof http - 1, NULL);
    keel_tls_probe_opts_t o2 = {.host = "127.0.0.1", .port = port, .timeout_ms = 1000};
    assert_int_equal(keel_assess_probe_tls(&o2, &doc), KEEL_OK);
    assert_false(json_is_true(json_object_get(doc, "tls")));
    assert_true(json_is_null(json_object_get(doc, "certificate")));
    assert_true(has_finding(doc, "5.5-6", "fail", "HTTP in clear"));
    json_decref(doc);
    server_stop(&h);

    /* nothing listening: an error, not an empty observation */
    o2.port = loopback_free_port(SOCK_STREAM);
    assert_int_equal(keel_assess_probe_tls(&o2, &doc), KEEL_ERR_IO);
    assert_null(doc);
    o2.port = 0;
    assert_int_equal(keel_assess_probe_tls(&o2, &doc), KEEL_ERR_ARG);

    SSL_CTX_free(ctx);
    X509_free(cert);
    EVP_PKEY_free(key);
}

/* Where a published document may not redirect the lab's fetch to. */
static void test_host_internal(void **state)
{
    (void)state;
    static const char *const inside[] = {"127.0.0.1", "127.8.9.10", "localhost", "10.1.2.3", "172.16.0.1",
                                         "172.31.255.255", "192.168.1.1", "169.254.0.7", "100.64.0.1", "0.0.0.0",
                                         "[::1]", "::1", "fe80::1", "fd00::5", "::ffff:10.0.0.1", "[::ffff:127.0.0.1]"};
    static const char *const outside[] = {"192.0.2.7", "198.51.100.1", "8.8.8.8", "172.32.0.1", "172.15.255.255",
                                          "100.128.0.1", "169.255.0.1", "2001:db8::1", "[2001:db8::2]", ""};
    for (size_t i = 0; i < sizeof inside / sizeof inside[0]; i++)
        if (!keel_assess_host_internal(inside[i]))
            fail_msg("%s should count as internal", inside[i]);
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++)
        if (keel_assess_host_internal(outside[i]))
            fail_msg("%s should not count as internal", outside[i]);
}

int main(void)
{
    /* the in-test servers write to clients that may have gone: EPIPE, not death */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_portset), cmocka_unit_test(test_escape), cmocka_unit_test(test_utf8_cut), cmocka_unit_test(test_host_internal),
        cmocka_unit_test(test_scan_tcp),
        cmocka_unit_test(test_scan_args), cmocka_unit_test(test_udp),  cmocka_unit_test(test_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

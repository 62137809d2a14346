/* link: the backoff, the broker address, the CSPRNG's unit interval, the
 * TLS context built at start, and the reconnect loop against sockets that
 * refuse or never answer (no broker needed). The MQTT side is tested
 * against mosquitto in tests/integration/link_broker.sh. */
#include "testutil.h"

#include "keel/crypto.h"
#include "keel/device.h"
#include "keel/factory.h"
#include "keel/link.h"
#include "link/link_internal.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <event2/event.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- keel_backoff_delay ---------------------------------------------------------- */

static void test_backoff_bounds(void **state)
{
    (void)state;
    keel_backoff_t b = {.base_s = 1, .cap_s = 300, .first_s = 30, .stable_s = 60};
    /* the window doubles per attempt: u just below 1 reaches (almost) base * 2^n */
    for (unsigned a = 0; a < 8; a++) {
        double w = ldexp(1.0, (int)a);
        assert_true(keel_backoff_delay(&b, a, 0) == 0);
        double hi = keel_backoff_delay(&b, a, nextafter(1.0, 0));
        assert_true(hi < w && hi > w * 0.999999);
        assert_true(fabs(keel_backoff_delay(&b, a, 0.5) - w / 2) < 1e-9);
    }
    /* capped (2^9 = 512 > 300): the upper half of the window, [150, 300] */
    assert_true(fabs(keel_backoff_delay(&b, 9, 0) - 150) < 1e-9);
    assert_true(fabs(keel_backoff_delay(&b, 9, 0.5) - 225) < 1e-9);
    assert_true(keel_backoff_delay(&b, 9, nextafter(1.0, 0)) <= 300); /* 300 - 1e-14 rounds to 300 */
    /* far attempts neither overflow nor go past the cap */
    unsigned far[] = {61, 62, 63, 64, 1000, 4096, 1u << 31, 0xffffffffu};
    for (size_t i = 0; i < sizeof far / sizeof far[0]; i++) {
        double d = keel_backoff_delay(&b, far[i], 0.999);
        assert_true(isfinite(d) && fabs(d - 299.85) < 1e-6);
    }
    assert_true(fabs(keel_backoff_delay(&b, 1000, 0.25) - 187.5) < 1e-9);
}

static void test_backoff_growth(void **state)
{
    (void)state;
    keel_backoff_t b = {.base_s = 0.5, .cap_s = 64, .first_s = 0, .stable_s = 60};
    /* the mean over many draws doubles per attempt until the cap */
    double prev = 0;
    for (unsigned a = 0; a < 10; a++) {
        double sum = 0;
        for (int i = 0; i < 2000; i++)
            sum += keel_backoff_delay(&b, a, keel_link_random_unit());
        double w = ldexp(0.5, (int)a), want = w < 64 ? w / 2 : 0.75 * 64;
        double mean = sum / 2000;
        assert_true(mean > want * 0.9 && mean < want * 1.1);
        assert_true(mean >= prev * 0.9);
        prev = mean;
    }
}

static void test_backoff_edges(void **state)
{
    (void)state;
    keel_backoff_t b = {.base_s = 2, .cap_s = 10, .first_s = 5, .stable_s = 60};
    /* u outside [0, 1) (or NaN) is treated as 0: never a delay past the window */
    assert_true(keel_backoff_delay(&b, 2, 1.0) == 0);
    assert_true(keel_backoff_delay(&b, 2, 2.5) == 0);
    assert_true(keel_backoff_delay(&b, 2, -0.1) == 0);
    assert_true(keel_backoff_delay(&b, 2, NAN) == 0);
    assert_true(keel_backoff_delay(&b, 2, INFINITY) == 0);
    assert_true(keel_backoff_delay(&b, 3, NAN) == 5); /* capped: the bottom of [cap/2, cap) */
    /* a bad configuration gives no delay rather than a negative or NaN one */
    keel_backoff_t zero = {0};
    assert_true(keel_backoff_delay(&zero, 3, 0.5) == 0);
    assert_true(keel_backoff_delay(NULL, 3, 0.5) == 0);
    keel_backoff_t nan = {.base_s = NAN, .cap_s = 10};
    assert_true(keel_backoff_delay(&nan, 3, 0.5) == 0);
    /* base above cap: the cap wins from the first attempt */
    keel_backoff_t inv = {.base_s = 20, .cap_s = 10};
    assert_true(fabs(keel_backoff_delay(&inv, 0, 0.5) - 7.5) < 1e-9);
}

static void test_random_unit(void **state)
{
    (void)state;
    assert_int_equal(keel_crypto_init(), KEEL_OK);
    double lo = 1, hi = 0, sum = 0;
    unsigned below_tenth = 0;
    for (int i = 0; i < 20000; i++) {
        double u = keel_link_random_unit();
        assert_true(u >= 0 && u < 1);
        lo = fmin(lo, u);
        hi = fmax(hi, u);
        sum += u;
        below_tenth += u < 0.1;
    }
    assert_true(lo < 0.001 && hi > 0.999);
    assert_true(fabs(sum / 20000 - 0.5) < 0.02);
    assert_true(below_tenth > 1600 && below_tenth < 2400);
}

/* ---- the broker address ---------------------------------------------------------- */

static void test_split_broker(void **state)
{
    (void)state;
    char host[KEEL_LINK_HOST_MAX + 1];
    int port = 0;
    assert_int_equal(keel_link_split_broker("127.0.0.1:8883", host, sizeof host, &port), KEEL_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8883);
    assert_int_equal(keel_link_split_broker("mqtt.example.com:1", host, sizeof host, &port), KEEL_OK);
    assert_string_equal(host, "mqtt.example.com");
    assert_int_equal(port, 1);
    assert_int_equal(keel_link_split_broker("[::1]:65535", host, sizeof host, &port), KEEL_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 65535);
    const char *bad[] = {"127.0.0.1", ":8883", "host:", "host:0", "host:65536", "host:88x3", "host:-1",
                         "ho st:1", "host/x:1", "-host:1", ".host:1", "::1:8883", "[::1]8883", "[::1:8883",
                         "[nothost]:1", "[]:1", "host:99999999999999999999", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(keel_link_split_broker(bad[i], host, sizeof host, &port), KEEL_ERR_CONFIG);
    char longname[400];
    memset(longname, 'a', 300);
    memcpy(longname + 300, ":1", 3);
    assert_int_equal(keel_link_split_broker(longname, host, sizeof host, &port), KEEL_ERR_CONFIG);
    assert_int_equal(keel_link_split_broker(NULL, host, sizeof host, &port), KEEL_ERR_ARG);
}

/* ---- what the broker sends: command names, PUBACK reason codes -------------------- */

static void test_command_names(void **state)
{
    (void)state;
    const char *good[] = {"reboot", "set/temp", "a.b", "x-y_z", "A/B/C", "v1.2", "..a", "a..",
                          "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(keel_link_command_name_ok(good[i]));
    /* wildcards, empty or relative levels, separators at the ends, control
     * and non-ASCII bytes, and one byte over the cap */
    const char *bad[] = {"", "+", "#", "a/+", "a/#", "a+b", "x//y", "/x", "x/", ".", "..", "a/../b", "a/./b",
                         "a b", "a\nb", "a\tb", "a\x7f", "caf\xc3\xa9", "a:b", "a\\b", "a%2fb",
                         "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(keel_link_command_name_ok(bad[i]));
    assert_false(keel_link_command_name_ok(NULL));
}

static void test_refusal_codes(void **state)
{
    (void)state;
    /* final: the same message can never be accepted */
    int final[] = {135, 144, 149, 153};
    for (size_t i = 0; i < sizeof final / sizeof final[0]; i++)
        assert_true(keel_link_refusal_is_final(final[i]));
    /* transient: quota, busy, unspecified, implementation specific, packet
     * id in use, and any code we do not know */
    int transient[] = {128, 131, 137, 145, 151, 159, 200, 255};
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        assert_false(keel_link_refusal_is_final(transient[i]));
}

/* ---- a provisioned device to start links with --------------------------------------- */

typedef struct {
    char *dir;
    char devdir[KEEL_PATH_MAX];
    char factory[KEEL_PATH_MAX];
    keel_config_t *cfg;
    keel_keystore_t *ks;
    char cert[KEEL_PATH_MAX], chain[KEEL_PATH_MAX], ca[KEEL_PATH_MAX];
    struct event_base *base;
    int outbox_dummy; /* never dereferenced: these links never get online */
    unsigned online_calls;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(keel_crypto_init(), KEEL_OK);
    f->dir = tmpdir_new();
    path_in(f->factory, f->dir, "factory");
    char batch[KEEL_PATH_MAX];
    path_in(batch, f->dir, "batch");
    assert_int_equal(keel_factory_init(f->factory, "Acme", NULL, 0), KEEL_OK);
    keel_factory_t *fac = NULL;
    assert_int_equal(keel_factory_load(f->factory, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &fac), KEEL_OK);
    keel_provision_opts_t o = {.out = batch, .model = "M1", .count = 1,
                               .keystore = {.driver = "file"}, .argon2 = {1, 64}};
    keel_provision_stats_t ps;
    assert_int_equal(keel_factory_provision(fac, &o, &ps), KEEL_OK);
    keel_factory_free(fac);
    DIR *d = opendir(batch);
    assert_non_null(d);
    struct dirent *e;
    char conf[KEEL_PATH_MAX] = {0};
    while ((e = readdir(d)) != NULL) {
        path_in(f->devdir, batch, e->d_name);
        path_in(conf, f->devdir, "keeld.conf");
        if (e->d_name[0] != '.' && keel_path_exists(conf))
            break;
        conf[0] = '\0';
    }
    closedir(d);
    assert_true(conf[0] != '\0');
    assert_int_equal(keel_device_config_load(conf, NULL, 0, &f->cfg), KEEL_OK);
    assert_int_equal(keel_device_keystore_open(f->cfg, &f->ks), KEEL_OK);
    assert_int_equal(keel_config_path(f->cfg, "identity", "certificate", f->cert), KEEL_OK);
    assert_int_equal(keel_config_path(f->cfg, "identity", "chain", f->chain), KEEL_OK);
    assert_int_equal(keel_config_path(f->cfg, "trust", "service_root", f->ca), KEEL_OK);
    f->base = event_base_new();
    assert_non_null(f->base);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    event_base_free(f->base);
    keel_keystore_close(f->ks);
    keel_config_free(f->cfg);
    tmpdir_free(f->dir);
    free(f);
    return 0;
}

static void on_state(void *arg, keel_link_state_t s)
{
    fixture_t *f = arg;
    if (s == KEEL_LINK_ONLINE)
        f->online_calls++;
}

static keel_link_config_t link_config(fixture_t *f, const char *broker)
{
    keel_link_config_t c = {
        .base = f->base,
        .device_id = keel_config_str(f->cfg, "device", "id"),
        .broker = broker,
        .ks = f->ks,
        .key_label = keel_config_str(f->cfg, "keystore", "key_label"),
        .cert_path = f->cert,
        .chain_path = f->chain,
        .ca_path = f->ca,
        .outbox = (keel_outbox_t *)&f->outbox_dummy,
        .backoff = {.base_s = 0.05, .cap_s = 0.4, .first_s = 0, .stable_s = 60},
        .keepalive_s = 5,
        .inflight_max = 4,
        .on_state = on_state,
        .arg = f,
    };
    return c;
}

static void test_start_checks(void **state)
{
    fixture_t *f = *state;
    keel_link_t *l = NULL;
    keel_link_config_t c = link_config(f, "127.0.0.1:1");
    assert_int_equal(keel_link_start(&c, &l), KEEL_OK);
    keel_link_status_t st;
    keel_link_status(l, &st);
    assert_int_equal(st.state, KEEL_LINK_OFFLINE);
    assert_string_equal(keel_link_state_name(st.state), "offline");
    /* the product state must be a JSON object within its cap */
    assert_int_equal(keel_link_set_state(l, "{\"on\":true}", 11), KEEL_OK);
    assert_int_equal(keel_link_set_state(l, "[1]", 3), KEEL_ERR_FORMAT);
    assert_int_equal(keel_link_set_state(l, "{\"a\":1,\"a\":2}", 13), KEEL_ERR_FORMAT);
    assert_int_equal(keel_link_set_state(l, "{", 1), KEEL_ERR_FORMAT);
    assert_int_equal(keel_link_set_state(l, "{}", KEEL_OUTBOX_BODY_MAX + 1), KEEL_ERR_TOO_LARGE);
    keel_link_stop(l);
    keel_link_status(l, &st);
    assert_int_equal(st.state, KEEL_LINK_STOPPED);
    keel_link_free(l);

    /* bad configurations are refused at start, with no link */
    keel_link_config_t bad = c;
    bad.broker = "127.0.0.1";
    assert_int_equal(keel_link_start(&bad, &l), KEEL_ERR_CONFIG);
    bad = c;
    bad.device_id = "not/an-id";
    assert_int_equal(keel_link_start(&bad, &l), KEEL_ERR_ARG);
    bad = c;
    bad.backoff.cap_s = 0.01; /* below base */
    assert_int_equal(keel_link_start(&bad, &l), KEEL_ERR_ARG);
    bad = c;
    bad.inflight_max = 0;
    assert_int_equal(keel_link_start(&bad, &l), KEEL_ERR_ARG);
    bad = c;
    bad.keepalive_s = 1;
    assert_int_equal(keel_link_start(&bad, &l), KEEL_ERR_ARG);
    bad = c;
    bad.outbox = NULL;
    assert_int_equal(keel_link_start(&bad, &l), KEEL_ERR_ARG);
    /* the server name: an empty one would switch OpenSSL's host check off */
    const char *bad_names[] = {"", "bad name", "-lead", ".lead", "a/b", "*.example.com", "x\n"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        bad = c;
        bad.server_name = bad_names[i];
        assert_int_equal(keel_link_start(&bad, &l), KEEL_ERR_CONFIG);
    }
    const char *good_names[] = {"broker.example.com", "127.0.0.1", "::1", "mqtt"};
    for (size_t i = 0; i < sizeof good_names / sizeof good_names[0]; i++) {
        bad = c;
        bad.server_name = good_names[i];
        assert_int_equal(keel_link_start(&bad, &l), KEEL_OK);
        keel_link_free(l);
    }
}

static void test_start_tls_material(void **state)
{
    fixture_t *f = *state;
    keel_link_t *l = NULL;
    keel_link_config_t c = link_config(f, "127.0.0.1:1");
    char path[KEEL_PATH_MAX];
    /* the trust anchor is one CA certificate: a chain file (two) is refused */
    char chain2[KEEL_PATH_MAX];
    path_in(chain2, f->factory, "service-ca/chain.pem");
    c.ca_path = chain2;
    assert_int_equal(keel_link_start(&c, &l), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "exactly one"));
    /* a leaf (the device's own certificate) is no trust anchor */
    c.ca_path = f->cert;
    assert_int_equal(keel_link_start(&c, &l), KEEL_ERR_CONFIG);
    /* a missing file, an empty one */
    path_in(path, f->dir, "nothing.pem");
    c.ca_path = path;
    assert_int_equal(keel_link_start(&c, &l), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_file_write_atomic(path, "", 0, 0600), KEEL_OK);
    assert_int_equal(keel_link_start(&c, &l), KEEL_ERR_CONFIG);
    c.ca_path = f->ca;
    /* the certificate must belong to the keystore's key */
    char other[KEEL_PATH_MAX];
    path_in(other, f->factory, "device-ca/issuing.crt");
    c.cert_path = other;
    assert_int_equal(keel_link_start(&c, &l), KEEL_ERR_KEYSTORE);
    c.cert_path = f->cert;
    /* a key label the keystore does not hold */
    c.key_label = "nokey";
    assert_int_not_equal(keel_link_start(&c, &l), KEEL_OK);
    c.key_label = keel_config_str(f->cfg, "keystore", "key_label");
    assert_int_equal(keel_link_start(&c, &l), KEEL_OK);
    keel_link_free(l);
}

/* A loopback TCP listener the test controls. */
static int listener(int *port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s, 16), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return s;
}

static void run_for(struct event_base *base, double seconds)
{
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - floor(seconds)) * 1e6)};
    assert_int_equal(event_base_loopexit(base, &tv), 0);
    assert_int_equal(event_base_dispatch(base), 0);
}

/* Starts a link, runs the loop for `seconds`, and reads its status and counters. */
static keel_link_t *start_and_run(fixture_t *f, const keel_link_config_t *c, double seconds, keel_link_status_t *st,
                                  keel_link_counters_t *k)
{
    keel_link_t *l = NULL;
    assert_int_equal(keel_link_start(c, &l), KEEL_OK);
    run_for(f->base, seconds);
    keel_link_status(l, st);
    keel_link_test_counters(l, k);
    return l;
}

/* Nothing listens: every attempt is refused, the delays grow up to the cap,
 * and the loop sleeps in between (no busy polling). */
static void test_refused_backoff(void **state)
{
    fixture_t *f = *state;
    int port;
    int s = listener(&port);
    close(s); /* the port is now (very likely) closed */
    char broker[64];
    snprintf(broker, sizeof broker, "127.0.0.1:%d", port);
    keel_link_config_t c = link_config(f, broker);
    keel_link_status_t st;
    keel_link_counters_t k;
    keel_link_t *l = start_and_run(f, &c, 2.0, &st, &k);
    /* base 0.05 s, cap 0.4 s: mean delays 0.025, 0.05, 0.1, 0.2, 0.2, ... so
     * about 10 attempts in 2 s; a retry without backoff would make thousands */
    assert_true(k.attempts >= 3 && k.attempts <= 40);
    /* st.attempt counts failed attempts of the series; k.attempts counts
     * started ones, so they differ by the one in flight while CONNECTING */
    assert_true(st.state == KEEL_LINK_OFFLINE || st.state == KEEL_LINK_CONNECTING);
    assert_int_equal(st.attempt + (st.state == KEEL_LINK_CONNECTING ? 1u : 0u), k.attempts);
    assert_true(st.next_attempt_in <= 0.4);
    assert_int_equal(st.connects, 0);
    assert_int_equal(st.auth_failures, 0);
    assert_true(st.last_error[0] != '\0');
    assert_true(k.wakeups <= 4 * k.attempts);
    assert_int_equal(f->online_calls, 0);
    keel_link_free(l);
}

/* A listener that accepts and never answers the TLS handshake: the attempt
 * ends at the connect timeout, without spinning meanwhile. */
static void test_silent_broker(void **state)
{
    fixture_t *f = *state;
    int port;
    int s = listener(&port);
    char broker[64];
    snprintf(broker, sizeof broker, "127.0.0.1:%d", port);
    keel_link_config_t c = link_config(f, broker);
    keel_link_status_t st;
    keel_link_counters_t k;
    keel_link_t *l = start_and_run(f, &c, 2.5, &st, &k);
    assert_int_equal(st.state, KEEL_LINK_CONNECTING);
    assert_int_equal(k.attempts, 1);
    assert_true(k.wakeups <= 5);
    /* keepalive 5 s: the timeout is 5 s */
    run_for(f->base, 4.0);
    keel_link_status(l, &st);
    keel_link_test_counters(l, &k);
    assert_true(k.attempts >= 2);
    assert_non_null(strstr(st.last_error, "no CONNACK"));
    assert_int_equal(st.auth_failures, 0);
    keel_link_free(l);
    close(s);
}

/* A peer that accepts and closes at once: a failed attempt, then backoff. */
static void on_accept_close(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    unsigned *n = arg;
    int c = accept(fd, NULL, NULL);
    if (c >= 0) {
        close(c);
        ++*n;
    }
}

/* A listener on 127.0.0.1 (*s, its address in broker) that closes each
 * connection at once and counts it in *accepted; returns its event. */
static struct event *closing_listener(fixture_t *f, int *s, unsigned *accepted, char broker[64])
{
    int port;
    *s = listener(&port);
    struct event *ev = event_new(f->base, *s, EV_READ | EV_PERSIST, on_accept_close, accepted);
    assert_non_null(ev);
    assert_int_equal(event_add(ev, NULL), 0);
    snprintf(broker, 64, "127.0.0.1:%d", port);
    return ev;
}

static void test_closing_broker(void **state)
{
    fixture_t *f = *state;
    int s;
    unsigned accepted = 0;
    char broker[64];
    struct event *ev = closing_listener(f, &s, &accepted, broker);
    keel_link_config_t c = link_config(f, broker);
    keel_link_status_t st;
    keel_link_counters_t k;
    keel_link_t *l = start_and_run(f, &c, 2.0, &st, &k);
    assert_true(accepted >= 3 && accepted <= 40);
    assert_true(k.attempts >= accepted && k.attempts <= accepted + 1);
    assert_true(k.wakeups <= 6 * k.attempts);
    assert_int_equal(st.connects, 0);
    keel_link_free(l);
    event_free(ev);
    close(s);
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;
}

/* 100 forced reconnects leave no descriptor behind: each attempt's socket,
 * libmosquitto's socket pair and our events go with it. */
static void test_reconnect_fds(void **state)
{
    fixture_t *f = *state;
    int s;
    unsigned accepted = 0;
    char broker[64];
    struct event *ev = closing_listener(f, &s, &accepted, broker);
    keel_link_config_t c = link_config(f, broker);
    c.backoff.base_s = 0.001;
    c.backoff.cap_s = 0.002;
    int before = open_fds();
    keel_link_t *l = NULL;
    assert_int_equal(keel_link_start(&c, &l), KEEL_OK);
    keel_link_counters_t k = {0};
    for (int i = 0; i < 200 && k.attempts < 101; i++) {
        run_for(f->base, 0.05);
        keel_link_test_counters(l, &k);
        /* at most one attempt's socket, socket pair and accepted peer at a time */
        assert_true(open_fds() <= before + 4);
    }
    assert_true(k.attempts >= 101);
    assert_true(accepted >= 95);
    keel_link_free(l);
    assert_int_equal(open_fds(), before);
    event_free(ev);
    close(s);
}

/* The first connect waits a random time in [0, first_s]. */
static void test_first_jitter(void **state)
{
    fixture_t *f = *state;
    keel_link_config_t c = link_config(f, "127.0.0.1:1");
    c.backoff.first_s = 1000;
    double sum = 0;
    for (int i = 0; i < 40; i++) {
        keel_link_t *l = NULL;
        assert_int_equal(keel_link_start(&c, &l), KEEL_OK);
        keel_link_status_t st;
        keel_link_status(l, &st);
        assert_true(st.next_attempt_in >= 0 && st.next_attempt_in <= 1000);
        sum += st.next_attempt_in;
        keel_link_free(l);
    }
    assert_true(sum / 40 > 250 && sum / 40 < 750);
    c.backoff.first_s = 0;
    keel_link_t *l = NULL;
    assert_int_equal(keel_link_start(&c, &l), KEEL_OK);
    keel_link_status_t st;
    keel_link_status(l, &st);
    assert_true(st.next_attempt_in < 0.01);
    keel_link_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_backoff_growth),
        cmocka_unit_test(test_backoff_edges),
        cmocka_unit_test(test_random_unit),
        cmocka_unit_test(test_split_broker),
        cmocka_unit_test(test_command_names),
        cmocka_unit_test(test_refusal_codes),
        cmocka_unit_test_setup_teardown(test_start_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_tls_material, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_broker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closing_broker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_fds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_jitter, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

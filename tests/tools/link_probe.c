/*
 * link_probe: drives the real cloud link (keel/link.h) against a broker for
 * the integration tests (tests/integration/link_broker.sh).
 *
 * It opens a provisioned device (keeld.conf: keystore, vault, outbox), puts
 * --count telemetry messages into its outbox, runs the link on an
 * event_base until every message is acknowledged (or --timeout), and prints
 * one JSON line with the link's status.
 *
 * usage: link_probe (--config keeld.conf | --dir BATCH --clients N) [-o section.key=value ...]
 *                   [--count N] [--timeout S] [--hold S] [--broker HOST:PORT] [--server-name NAME]
 *                   [--topic TOPIC] [--twins] [--first S] [--base S] [--cap S] [--stable S]
 *                   [--inflight N] [--keepalive S] [--state JSON] [--print-commands] [--verbose]
 *   --dir BATCH --clients N  N links, one per device of a `keel factory provision` batch
 *   --topic TOPIC            publish to TOPIC instead of the device's own topics (ACL test)
 *   --twins                  two links with the same identity (they kick each other)
 *   --hold S                 keep running S seconds after the messages are acknowledged
 *   --until-online           stop once every link is online (with --hold: then hold)
 *   --min-connects K         ... and has connected K times (a reconnect check)
 *   --state JSON             the product state, published retained after CONNACK
 *   --print-commands         one JSON line per command received, before the report:
 *                            {"command": name, "len": bytes, "json": parses as JSON,
 *                             "sha256": hex, "maxrss_kb": the process's peak RSS then}
 * The report (the last line) also carries "fds_before" (open descriptors before
 * the links started) and "fds_after" (after they were stopped and freed), and
 * "maxrss_kb".
 * Exit: 0 when every message was acknowledged (or --count 0), 1 otherwise,
 * 2 usage or configuration error.
 */
#include "keel/crypto.h"
#include "keel/device.h"
#include "keel/link.h"
#include "keel/outbox.h"
#include "link/link_internal.h"

#include <dirent.h>
#include <event2/event.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_CLIENTS 1000
#define MAX_OVERRIDES 32

typedef struct {
    char conf[KEEL_PATH_MAX];
    keel_config_t *cfg;
    keel_keystore_t *ks;
    keel_vault_t *vault;
    keel_outbox_t *outbox;
    keel_link_t *link;
    unsigned state_changes;
} probe_dev_t;

static struct {
    char *overrides[MAX_OVERRIDES];
    size_t n_overrides;
    unsigned count;
    double timeout, hold;
    const char *broker, *server_name, *topic, *state;
    bool twins, until_online, print_commands;
    unsigned min_connects;
    double first, base, cap, stable;
    bool have_first, have_base, have_cap, have_stable;
    unsigned inflight, keepalive;
    probe_dev_t *devs;
    unsigned n;
    struct event_base *evb;
    double started, done_at;
} P;

static void usage(void)
{
    fprintf(stderr, "usage: link_probe (--config keeld.conf | --dir BATCH --clients N) [-o s.k=v] [--count N]\n"
                    "       [--timeout S] [--hold S] [--broker H:P] [--server-name N] [--topic T] [--twins]\n"
                    "       [--until-online] [--first S] [--base S] [--cap S] [--stable S] [--inflight N]\n"
                    "       [--keepalive S] [--min-connects K] [--state JSON] [--print-commands] [--verbose]\n");
    exit(2);
}

static void die(const char *what)
{
    fprintf(stderr, "link_probe: %s: %s\n", what, keel_error_message());
    exit(2);
}

static void on_state(void *arg, keel_link_state_t s)
{
    probe_dev_t *d = arg;
    (void)s;
    d->state_changes++;
}

static long maxrss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : -1;
}

/* Open descriptors of this process (a leak across reconnects shows here). */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

static void on_command(void *arg, const char *name, const void *payload, size_t len)
{
    (void)arg;
    fprintf(stderr, "link_probe: command %s (%zu bytes)\n", name, len);
    if (!P.print_commands)
        return;
    uint8_t h[KEEL_SHA256_LEN];
    char hex[2 * KEEL_SHA256_LEN + 1];
    keel_sha256(payload, len, h);
    if (keel_hex_encode(h, sizeof h, hex, sizeof hex) != KEEL_OK)
        die("hex");
    json_t *parsed = json_loadb(payload, len, 0, NULL);
    json_t *j = json_pack("{s:s, s:I, s:b, s:s, s:I}", "command", name, "len", (json_int_t)len, "json",
                          parsed != NULL, "sha256", hex, "maxrss_kb", (json_int_t)maxrss_kb());
    json_decref(parsed);
    char *txt = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
    if (txt == NULL)
        die("memory");
    printf("%s\n", txt);
    fflush(stdout);
    free(txt);
    json_decref(j);
}

static void dev_open(probe_dev_t *d, probe_dev_t *twin_of)
{
    if (twin_of != NULL) {
        /* Same identity, same outbox: a second client with the same id. */
        d->cfg = NULL;
        d->ks = twin_of->ks;
        d->outbox = twin_of->outbox;
        return;
    }
    if (keel_device_config_load(d->conf, P.overrides, P.n_overrides, &d->cfg) != KEEL_OK)
        die(d->conf);
    if (keel_device_keystore_open(d->cfg, &d->ks) != KEEL_OK)
        die("keystore");
    if (keel_device_vault_open(d->cfg, d->ks, &d->vault) != KEEL_OK)
        die("vault");
    keel_outbox_limits_t lim = {.max_messages = keel_config_uint(d->cfg, "outbox", "max_messages"),
                                .max_bytes = keel_config_uint(d->cfg, "outbox", "max_bytes")};
    if (keel_outbox_open(d->vault, keel_config_str(d->cfg, "device", "id"), lim, &d->outbox) != KEEL_OK)
        die("outbox");
    if (P.count > 0) {
        if (keel_outbox_begin(d->outbox) != KEEL_OK)
            die("outbox begin");
        for (unsigned i = 0; i < P.count; i++) {
            char body[64];
            int n = snprintf(body, sizeof body, "{\"probe\":%u}", i + 1);
            uint64_t seq = 0;
            bool dup = false;
            if (keel_outbox_put(d->outbox, KEEL_OUTBOX_TELEMETRY, body, (size_t)n, NULL, &seq, &dup) != KEEL_OK)
                die("outbox put");
        }
        if (keel_outbox_commit(d->outbox) != KEEL_OK)
            die("outbox commit");
    }
}

static void dev_link(probe_dev_t *d, const probe_dev_t *cfg_of)
{
    const keel_config_t *cfg = cfg_of->cfg;
    char cert[KEEL_PATH_MAX], chain[KEEL_PATH_MAX], ca[KEEL_PATH_MAX];
    if (keel_config_path(cfg, "identity", "certificate", cert) != KEEL_OK ||
        keel_config_path(cfg, "identity", "chain", chain) != KEEL_OK ||
        keel_config_path(cfg, "trust", "service_root", ca) != KEEL_OK)
        die("identity paths");
    const char *broker = P.broker != NULL ? P.broker : keel_config_str(cfg, "link", "broker");
    if (broker == NULL) {
        fprintf(stderr, "link_probe: no broker (--broker or -o link.broker=)\n");
        exit(2);
    }
    keel_link_config_t c = {
        .base = P.evb,
        .device_id = keel_config_str(cfg, "device", "id"),
        .broker = broker,
        .server_name = P.server_name != NULL ? P.server_name : keel_config_str(cfg, "link", "server_name"),
        .ks = d->ks,
        .key_label = keel_config_str(cfg, "keystore", "key_label"),
        .cert_path = cert,
        .chain_path = chain,
        .ca_path = ca,
        .outbox = d->outbox,
        .backoff = {
            .base_s = P.have_base ? P.base : (double)keel_config_uint(cfg, "link", "backoff_base"),
            .cap_s = P.have_cap ? P.cap : (double)keel_config_uint(cfg, "link", "backoff_cap"),
            .first_s = P.have_first ? P.first : (double)keel_config_uint(cfg, "link", "first_connect"),
            .stable_s = P.have_stable ? P.stable : (double)keel_config_uint(cfg, "link", "stable"),
        },
        .keepalive_s = P.keepalive != 0 ? P.keepalive : (unsigned)keel_config_uint(cfg, "link", "keepalive"),
        .inflight_max = P.inflight != 0 ? P.inflight : (unsigned)keel_config_uint(cfg, "link", "inflight"),
        .on_command = on_command,
        .on_state = on_state,
        .arg = d,
    };
    if (keel_link_start(&c, &d->link) != KEEL_OK)
        die("link start");
    if (P.topic != NULL && keel_link_test_set_topic(d->link, P.topic) != KEEL_OK)
        die("topic");
    if (P.state != NULL && keel_link_set_state(d->link, P.state, strlen(P.state)) != KEEL_OK)
        die("state");
}

static bool all_done(void)
{
    for (unsigned i = 0; i < P.n; i++) {
        keel_link_status_t st;
        keel_link_status(P.devs[i].link, &st);
        if (P.until_online) {
            if (st.state != KEEL_LINK_ONLINE || st.connects < P.min_connects)
                return false;
            continue;
        }
        if (P.devs[i].cfg == NULL)
            continue; /* a twin shares its outbox */
        keel_outbox_stats_t os;
        if (keel_outbox_stats(P.devs[i].outbox, &os) != KEEL_OK || os.pending > 0)
            return false;
    }
    return true;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    double now = keel_now();
    if (P.done_at == 0 && all_done())
        P.done_at = now;
    if ((P.done_at != 0 && now - P.done_at >= P.hold) || now - P.started >= P.timeout)
        event_base_loopbreak(P.evb);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    event_base_loopbreak(P.evb);
}

static json_t *report(void)
{
    keel_link_status_t sum = {0};
    uint64_t attempts = 0, wakeups = 0, pending = 0;
    unsigned online = 0, max_attempt = 0;
    const char *last_error = "";
    for (unsigned i = 0; i < P.n; i++) {
        keel_link_status_t st;
        keel_link_counters_t k = {0};
        keel_link_status(P.devs[i].link, &st);
        keel_link_test_counters(P.devs[i].link, &k);
        online += st.state == KEEL_LINK_ONLINE;
        sum.connects += st.connects;
        sum.disconnects += st.disconnects;
        sum.auth_failures += st.auth_failures;
        sum.published += st.published;
        sum.refused += st.refused;
        sum.deferred += st.deferred;
        if (st.last_reason != 0)
            sum.last_reason = st.last_reason;
        if (st.attempt > max_attempt)
            max_attempt = st.attempt;
        attempts += k.attempts;
        wakeups += k.wakeups;
        if (st.last_error[0] != '\0' && last_error[0] == '\0') {
            static char keep[KEEL_ERROR_MAX];
            snprintf(keep, sizeof keep, "%s", st.last_error);
            last_error = keep;
        }
        keel_outbox_stats_t os;
        if (P.devs[i].cfg != NULL && keel_outbox_stats(P.devs[i].outbox, &os) == KEEL_OK)
            pending += os.pending;
    }
    json_t *j = json_pack("{s:I, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:I, s:I, s:I, s:s, s:f, s:I, s:I}",
                          "clients", (json_int_t)P.n, "connected", online == P.n, "online", (json_int_t)online,
                          "connects", (json_int_t)sum.connects, "disconnects", (json_int_t)sum.disconnects,
                          "auth_failures", (json_int_t)sum.auth_failures, "published", (json_int_t)sum.published,
                          "refused", (json_int_t)sum.refused, "attempts", (json_int_t)attempts, "last_reason",
                          sum.last_reason, "max_attempt", (json_int_t)max_attempt, "pending", (json_int_t)pending,
                          "wakeups", (json_int_t)wakeups, "last_error", last_error, "elapsed",
                          keel_now() - P.started, "deferred", (json_int_t)sum.deferred, "maxrss_kb",
                          (json_int_t)maxrss_kb());
    if (j == NULL) {
        fprintf(stderr, "link_probe: out of memory\n");
        exit(2);
    }
    return j;
}

static double num(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= 0))
        usage();
    return v;
}

/* The device directories of a batch (every subdirectory with a keeld.conf). */
static unsigned batch_devices(const char *dir, unsigned want)
{
    DIR *dp = opendir(dir);
    if (dp == NULL) {
        perror(dir);
        exit(2);
    }
    unsigned n = 0;
    struct dirent *e;
    while (n < want && (e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char sub[KEEL_PATH_MAX];
        if (keel_path_join(sub, sizeof sub, dir, e->d_name) != KEEL_OK ||
            keel_path_join(P.devs[n].conf, sizeof P.devs[n].conf, sub, "keeld.conf") != KEEL_OK)
            die("path");
        if (keel_path_exists(P.devs[n].conf))
            n++;
    }
    closedir(dp);
    return n;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"dir", required_argument, NULL, 'd'},
        {"clients", required_argument, NULL, 'n'},  {"count", required_argument, NULL, 'N'},
        {"timeout", required_argument, NULL, 't'},  {"hold", required_argument, NULL, 'H'},
        {"broker", required_argument, NULL, 'b'},   {"server-name", required_argument, NULL, 's'},
        {"topic", required_argument, NULL, 'T'},    {"twins", no_argument, NULL, 'w'},
        {"until-online", no_argument, NULL, 'u'},   {"first", required_argument, NULL, 'f'},
        {"base", required_argument, NULL, 'B'},     {"cap", required_argument, NULL, 'C'},
        {"stable", required_argument, NULL, 'S'},   {"inflight", required_argument, NULL, 'i'},
        {"keepalive", required_argument, NULL, 'k'}, {"verbose", no_argument, NULL, 'v'},
        {"state", required_argument, NULL, 'j'}, {"min-connects", required_argument, NULL, 'm'},
        {"print-commands", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *dir = NULL;
    unsigned clients = 1;
    P.count = 10;
    P.timeout = 20;
    int ch;
    while ((ch = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'd': dir = optarg; break;
        case 'n': clients = (unsigned)num(optarg); break;
        case 'N': P.count = (unsigned)num(optarg); break;
        case 't': P.timeout = num(optarg); break;
        case 'H': P.hold = num(optarg); break;
        case 'b': P.broker = optarg; break;
        case 's': P.server_name = optarg; break;
        case 'T': P.topic = optarg; break;
        case 'w': P.twins = true; break;
        case 'u': P.until_online = true; break;
        case 'f': P.first = num(optarg), P.have_first = true; break;
        case 'B': P.base = num(optarg), P.have_base = true; break;
        case 'C': P.cap = num(optarg), P.have_cap = true; break;
        case 'S': P.stable = num(optarg), P.have_stable = true; break;
        case 'i': P.inflight = (unsigned)num(optarg); break;
        case 'k': P.keepalive = (unsigned)num(optarg); break;
        case 'v': keel_log_set_level(KEEL_LOG_DEBUG); break;
        case 'j': P.state = optarg; break;
        case 'p': P.print_commands = true; break;
        case 'm': P.min_connects = (unsigned)num(optarg); break;
        case 'o':
            if (P.n_overrides == MAX_OVERRIDES)
                usage();
            P.overrides[P.n_overrides++] = optarg;
            break;
        default: usage();
        }
    }
    if (optind != argc || (config == NULL) == (dir == NULL) || clients == 0 || clients > MAX_CLIENTS ||
        (P.twins && (dir != NULL || clients != 1)))
        usage();
    keel_log_set_prefix("link_probe");
    signal(SIGPIPE, SIG_IGN);
    /* Every client holds a database, a socket and libmosquitto's socket pair. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (keel_crypto_init() != KEEL_OK)
        die("crypto");
    P.n = P.twins ? 2 : clients;
    P.devs = calloc(P.n, sizeof *P.devs);
    if (P.devs == NULL)
        die("memory");
    if (dir != NULL) {
        if (batch_devices(dir, clients) != clients) {
            fprintf(stderr, "link_probe: %s has fewer than %u devices\n", dir, clients);
            return 2;
        }
    } else if (keel_strlcpy(P.devs[0].conf, config, sizeof P.devs[0].conf) != KEEL_OK) {
        usage();
    }
    P.evb = event_base_new();
    if (P.evb == NULL)
        die("event_base");
    for (unsigned i = 0; i < P.n; i++)
        dev_open(&P.devs[i], P.twins && i == 1 ? &P.devs[0] : NULL);
    P.started = keel_now();
    int fds_before = open_fds();
    for (unsigned i = 0; i < P.n; i++)
        dev_link(&P.devs[i], P.twins ? &P.devs[0] : &P.devs[i]);
    struct event *tick = event_new(P.evb, -1, EV_PERSIST, on_tick, NULL);
    struct event *sig = evsignal_new(P.evb, SIGTERM, on_signal, NULL);
    struct timeval tv = {0, 100000};
    if (tick == NULL || sig == NULL || event_add(tick, &tv) != 0 || event_add(sig, NULL) != 0)
        die("events");
    event_base_dispatch(P.evb);
    json_t *rep = report();
    bool ok = P.count == 0 || all_done();
    for (unsigned i = 0; i < P.n; i++)
        keel_link_stop(P.devs[i].link);
    for (unsigned i = 0; i < P.n; i++)
        keel_link_free(P.devs[i].link);
    char *txt = NULL;
    if (json_object_set_new(rep, "fds_before", json_integer(fds_before)) != 0 ||
        json_object_set_new(rep, "fds_after", json_integer(open_fds())) != 0 ||
        (txt = json_dumps(rep, JSON_COMPACT)) == NULL)
        die("memory");
    printf("%s\n", txt);
    fflush(stdout);
    free(txt);
    json_decref(rep);
    for (unsigned i = 0; i < P.n; i++) {
        if (P.devs[i].cfg == NULL)
            continue;
        keel_outbox_close(P.devs[i].outbox);
        keel_vault_close(P.devs[i].vault);
        keel_keystore_close(P.devs[i].ks);
        keel_config_free(P.devs[i].cfg);
    }
    event_free(tick);
    event_free(sig);
    event_base_free(P.evb);
    free(P.devs);
    return ok ? 0 : 1;
}

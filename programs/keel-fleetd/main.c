/*
 * keel-fleetd - the fleet service: device registry, ingest of device
 * telemetry and events over MQTT (shared subscriptions, so instances split
 * the stream), anomaly alerts, staged update campaigns with an update server
 * that only serves registered devices, revocation, erasure and retention.
 *
 *   keel-fleetd --config FILE [-o section.key=value ...] [--check]
 *   keel-fleetd token add NAME [--read-only] --config FILE
 *
 * SIGTERM/SIGINT stop it: the listeners close, the MQTT session is left with
 * a normal DISCONNECT (the broker keeps queueing for it), what was received
 * is stored, then it exits 0.
 * SIGHUP reloads the configuration (reload(): live keys at once, the rest at
 * the next start). Under systemd it reports READY=1, RELOADING=1, STOPPING=1
 * and pings the watchdog while the ingest thread turns.
 */
#define _GNU_SOURCE
#include "fleetd.h"

#include "keel/sandbox.h"

#include <event2/event.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OVERRIDES_MAX 64
#define MIB (1024u * 1024u)

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: keel-fleetd --config FILE [-o section.key=value ...] [--check]\n"
    "       keel-fleetd token add NAME [--read-only] --config FILE\n"
    "\n"
    "The Keel fleet service: device registry, telemetry ingest over MQTT (shared\n"
    "subscriptions: several instances split the load), anomaly alerts, staged update\n"
    "campaigns and the update server (client certificates of registered devices\n"
    "only), revocation, erasure and retention. SQLite by default, PostgreSQL at scale.\n"
    "\n"
    "  -c, --config FILE     keel-fleetd.conf (see packaging/keel-fleetd.conf)\n"
    "  -o section.key=value  override one key of the file (repeatable)\n"
    "      --check           load the configuration and the database, report, and exit\n"
    "  -h, --help            this text\n"
    "  -V, --version         the version\n"
    "\n"
    "Least privilege (docs/internals/sandbox.md): started as root, keel-fleetd becomes\n"
    "[security] user before it opens its state; once started it sets no_new_privs,\n"
    "drops every capability and installs a seccomp allow-list: [security] seccomp =\n"
    "kill (default: an unlisted system call kills it), log (the kernel logs it) or off.\n"
    "\n"
    "token add NAME          make an operator token (printed once; its hash goes to\n"
    "                        [admin] tokens); --read-only for the dashboard\n"
    "\n"
    "Signals: SIGTERM/SIGINT stop (what was received is stored); SIGHUP reloads the\n"
    "configuration ([log], [campaign], [retention], pki.crl_days at once; the rest at\n"
    "the next start; a broken file is refused). Under systemd (Type=notify): READY=1,\n"
    "RELOADING=1, STOPPING=1, and WATCHDOG=1 while the ingest turns (WatchdogSec=).\n"
    "\n"
    "Exit status: 0 stopped cleanly, 1 failed, 2 usage or configuration error.\n"
    "Wire protocol: docs/fleet-protocol.md; operator API: docs/internals/fleet-admin.md.\n";

/* ---- configuration ------------------------------------------------------------------------- */

static keel_status_t path_or_empty(const keel_config_t *c, const char *s, const char *k, char out[KEEL_PATH_MAX])
{
    keel_status_t st = keel_config_path(c, s, k, out);
    if (st == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        out[0] = '\0';
        return KEEL_OK;
    }
    return st;
}

static keel_status_t need_paths(const keel_config_t *c, const char *section, const char *const *keys, size_t n)
{
    char p[KEEL_PATH_MAX];
    for (size_t i = 0; i < n; i++) {
        keel_status_t st = keel_config_path(c, section, keys[i], p);
        if (st == KEEL_ERR_NOT_FOUND)
            return keel_errorf(KEEL_ERR_CONFIG, "[%s] %s is required", section, keys[i]);
        if (st != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

static keel_status_t config_check(fleetd_t *f)
{
    static const char *const ident[] = {"certificate", "chain", "key"};
    static const char *const broker[] = {"certificate", "chain", "key", "ca"};
    static const char *const dist[] = {"certificate", "chain", "key", "device_ca"};
    const keel_config_t *c = f->cfg;
    keel_log_level_t lvl;
    keel_status_t st = keel_log_level_parse(keel_config_str(c, "log", "level"), &lvl);
    if (st != KEEL_OK)
        return st;
    const char *target = keel_config_str(c, "log", "target");
    if (strcmp(target, "stderr") != 0 && strcmp(target, "syslog") != 0)
        return keel_errorf(KEEL_ERR_CONFIG, "[log] target must be stderr or syslog");
    if (keel_config_str(c, "broker", "address") != NULL && (st = need_paths(c, "broker", broker, 4)) != KEEL_OK)
        return st;
    if (keel_config_str(c, "update_server", "listen") != NULL && (st = need_paths(c, "update_server", dist, 4)) != KEEL_OK)
        return st;
    if ((st = need_paths(c, "admin", ident, 3)) != KEEL_OK)
        return st;
    const char *url = keel_config_str(c, "database", "url");
    if (url != NULL)
        st = keel_snprintf(f->db_url, sizeof f->db_url, "%s", url);
    else
        st = keel_snprintf(f->db_url, sizeof f->db_url, "sqlite:%s/fleet.db", keel_config_dir(c));
    if (st == KEEL_OK && strncmp(f->db_url, "sqlite:", 7) == 0 && f->db_url[7] != '/') {
        /* a relative SQLite path is the config file's directory's, like every path here */
        char rel[KEEL_FLEET_DB_URL_MAX + 1];
        snprintf(rel, sizeof rel, "%s", f->db_url + 7);
        st = keel_snprintf(f->db_url, sizeof f->db_url, "sqlite:%s/%s", keel_config_dir(c), rel);
    }
    if (st == KEEL_OK)
        st = keel_config_path(c, "update_server", "bundles", f->bundle_dir);
    if (st == KEEL_OK)
        st = path_or_empty(c, "update_server", "device_ca", f->device_ca);
    if (st == KEEL_OK)
        st = path_or_empty(c, "pki", "crl", f->crl_path);
    if (st == KEEL_OK)
        st = path_or_empty(c, "pki", "factory", f->factory_dir);
    if (st == KEEL_OK)
        st = path_or_empty(c, "trust", "release_root", f->release_root);
    if (st == KEEL_OK)
        st = keel_config_path(c, "admin", "tokens", f->tokens_path);
    if (st == KEEL_OK)
        st = path_or_empty(c, "pki", "service_crl", f->service_crl);
    if (st == KEEL_OK && f->factory_dir[0] != '\0' && (f->crl_path[0] == '\0' || f->service_crl[0] == '\0'))
        st = keel_errorf(KEEL_ERR_CONFIG, "[pki] factory needs [pki] crl (where the CRL is written) and "
                                          "[pki] service_crl (the service CA's current CRL, which goes with it)");
    const char *group = keel_config_str(c, "broker", "share_group");
    if (st == KEEL_OK && group != NULL && strcmp(group, "none") != 0 &&
        (group[0] == '\0' || strpbrk(group, "/+#$ ") != NULL || strlen(group) > 64))
        st = keel_errorf(KEEL_ERR_CONFIG, "[broker] share_group must be a plain name (or none)");
    keel_sandbox_mode_t mode;
    if (st == KEEL_OK)
        st = keel_sandbox_mode_parse(keel_config_str(c, "security", "seccomp"), &mode);
    return st;
}

/* ---- timers and signals -------------------------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    fleetd_campaign_tick(arg);
}

static void on_retention(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    fleetd_t *f = arg;
    fleetd_crl_refresh(f);
    keel_fleet_retention_t r = {
        .raw_s = (int64_t)keel_config_uint(f->cfg, "retention", "raw_days") * 86400,
        .aggregate_s = (int64_t)keel_config_uint(f->cfg, "retention", "aggregate_days") * 86400,
        .alert_s = (int64_t)keel_config_uint(f->cfg, "retention", "alert_days") * 86400,
    };
    keel_fleet_retention_stats_t s;
    keel_status_t st = KEEL_ERR_BUSY;
    for (int i = 0; i < 5 && st == KEEL_ERR_BUSY; i++)
        st = keel_fleet_retention_run(f->db, &r, (int64_t)time(NULL), &s);
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "fleet: retention: %s", keel_error_message());
        keel_error_clear();
    } else if (s.deleted_messages + s.deleted_aggregates + s.deleted_alerts > 0) {
        keel_log(KEEL_LOG_INFO,
                 "fleet: retention: %llu messages aggregated, %llu deleted; %llu aggregates and %llu alerts deleted",
                 (unsigned long long)s.aggregated, (unsigned long long)s.deleted_messages,
                 (unsigned long long)s.deleted_aggregates, (unsigned long long)s.deleted_alerts);
    }
}

/* Keys a reload applies at once: each is read where it is used, on the main
 * loop (the two timers are re-armed). Every other key is read at start, or
 * copied into a thread, and changes at the next start. */
static const struct {
    const char *section, *key;
} live_keys[] = {
    {"log", "level"},           {"log", "target"},           {"campaign", "tick"},
    {"campaign", "fail_permille"}, {"campaign", "min_finished"}, {"retention", "raw_days"},
    {"retention", "aggregate_days"}, {"retention", "alert_days"}, {"retention", "interval"},
    {"pki", "crl_days"},
};

static bool is_live(const char *section, const char *key)
{
    for (size_t i = 0; i < sizeof live_keys / sizeof *live_keys; i++)
        if (strcmp(live_keys[i].section, section) == 0 && strcmp(live_keys[i].key, key) == 0)
            return true;
    return false;
}

static bool same(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void logging_apply(const keel_config_t *c)
{
    keel_log_level_t lvl = KEEL_LOG_INFO;
    if (keel_log_level_parse(keel_config_str(c, "log", "level"), &lvl) == KEEL_OK)
        keel_log_set_level(lvl);
    keel_log_to_syslog(strcmp(keel_config_str(c, "log", "target"), "syslog") == 0 ? "keel-fleetd" : NULL);
}

/* The file with the command line's overrides (not yet checked: config_check). */
static keel_status_t config_read(const fleetd_t *f, keel_config_t **out)
{
    keel_config_t *c = NULL;
    keel_status_t st = keel_config_load(f->config_path, f->schema, f->n_schema, &c);
    for (size_t i = 0; st == KEEL_OK && i < f->n_overrides; i++)
        st = keel_config_override(c, f->overrides[i]);
    if (st != KEEL_OK) {
        keel_config_free(c);
        return st;
    }
    *out = c;
    return KEEL_OK;
}

/* SIGHUP: the file is read and checked whole; a broken one is refused and
 * the running configuration stays. Of a good one, the live keys are copied
 * into the running configuration and every other change is named as waiting
 * for the next start (the MQTT and ingest threads hold copies of theirs). */
static void reload(fleetd_t *f)
{
    keel_notify("RELOADING=1");
    keel_config_t *c = NULL;
    keel_status_t st = config_read(f, &c);
    if (st == KEEL_OK) {
        fleetd_t probe = *f; /* config_check fills the derived paths: of a copy, the running ones stay */
        probe.cfg = c;
        if ((st = config_check(&probe)) != KEEL_OK) {
            keel_config_free(c);
            c = NULL;
        }
    }
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "fleet: reload refused, the running configuration stays: %s", keel_error_message());
        keel_error_clear();
        keel_notify("READY=1");
        return;
    }
    unsigned applied = 0, waiting = 0;
    uint64_t tick = keel_config_uint(f->cfg, "campaign", "tick");
    uint64_t interval = keel_config_uint(f->cfg, "retention", "interval");
    for (size_t i = 0; i < f->n_schema; i++) {
        const char *sec = f->schema[i].section, *key = f->schema[i].key;
        const char *was = keel_config_str(f->cfg, sec, key), *now = keel_config_str(c, sec, key);
        if (same(was, now))
            continue;
        if (!is_live(sec, key)) {
            keel_log(KEEL_LOG_WARN, "fleet: reload: [%s] %s changes at the next start", sec, key);
            waiting++;
            continue;
        }
        char assign[KEEL_CONFIG_VALUE_MAX + 64];
        if (keel_snprintf(assign, sizeof assign, "%s.%s=%s", sec, key, now) != KEEL_OK ||
            keel_config_override(f->cfg, assign) != KEEL_OK) {
            keel_log(KEEL_LOG_ERROR, "fleet: reload: [%s] %s: %s", sec, key, keel_error_message());
            keel_error_clear();
            continue;
        }
        keel_log(KEEL_LOG_INFO, "fleet: reload: [%s] %s = %s", sec, key, now);
        applied++;
    }
    keel_config_free(c);
    logging_apply(f->cfg);
    struct timeval tv = {.tv_sec = (time_t)keel_config_uint(f->cfg, "campaign", "tick")};
    if (f->tick != NULL && tick != keel_config_uint(f->cfg, "campaign", "tick") && event_add(f->tick, &tv) != 0)
        keel_log(KEEL_LOG_ERROR, "fleet: reload: cannot re-arm the campaign timer");
    tv.tv_sec = (time_t)keel_config_uint(f->cfg, "retention", "interval");
    if (f->retention != NULL && interval != keel_config_uint(f->cfg, "retention", "interval") &&
        event_add(f->retention, &tv) != 0)
        keel_log(KEEL_LOG_ERROR, "fleet: reload: cannot re-arm the retention timer");
    keel_log(KEEL_LOG_INFO, "fleet: configuration reloaded: %u change%s applied, %u at the next start", applied,
             applied == 1 ? "" : "s", waiting);
    keel_notify("READY=1");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    fleetd_t *f = arg;
    if (sig == SIGHUP) {
        reload(f);
        return;
    }
    keel_log(KEEL_LOG_INFO, "fleet: stopping (signal %d)", (int)sig);
    keel_notify("STOPPING=1");
    event_base_loopbreak(f->base);
}

/* The watchdog's check of the ingest thread: it turns at least every 200 ms
 * when idle, and between attempts when the database refuses a batch; one
 * silent for a whole watchdog interval is stuck (a call that never returns). */
static bool ingest_alive(void *arg)
{
    const fleetd_t *f = arg;
    if (f->ingest == NULL)
        return true;
    int64_t limit_ms = (int64_t)(keel_notify_watchdog_usec() / 1000);
    int64_t turned = atomic_load(&fleetd_ingest_stats(f->ingest)->turned_ms);
    return limit_ms <= 0 || (int64_t)(keel_now() * 1000) - turned < limit_ms;
}

/* ---- start and stop ---------------------------------------------------------------------------------- */

static keel_status_t start_https(fleetd_t *f, const char *section, bool devices, fleetd_https_fn fn,
                                 fleetd_https_t **out, SSL_CTX **ctx_out)
{
    char cert[KEEL_PATH_MAX], chain[KEEL_PATH_MAX], key[KEEL_PATH_MAX];
    keel_status_t st;
    if ((st = keel_config_path(f->cfg, section, "certificate", cert)) != KEEL_OK ||
        (st = keel_config_path(f->cfg, section, "chain", chain)) != KEEL_OK ||
        (st = keel_config_path(f->cfg, section, "key", key)) != KEEL_OK)
        return st;
    SSL_CTX *ctx = NULL;
    st = fleetd_server_ctx(cert, chain, key, devices ? f->device_ca : NULL,
                           devices && f->crl_path[0] != '\0' && access(f->crl_path, R_OK) == 0 ? f->crl_path : NULL,
                           &ctx);
    if (st != KEEL_OK)
        return keel_errorf(st, "[%s]: %s", section, keel_error_message());
    fleetd_https_config_t hc = {
        .base = f->base,
        .name = devices ? "update server" : "admin",
        .listen = keel_config_str(f->cfg, section, "listen"),
        .ctx = ctx,
        .max_connections = (unsigned)keel_config_uint(f->cfg, section, "max_connections"),
        .request_timeout_s = (unsigned)keel_config_uint(f->cfg, section, "request_timeout"),
        .body_max = devices ? 4096 : (size_t)keel_config_uint(f->cfg, "admin", "body_max"),
        .handler = fn,
        .arg = f,
    };
    st = fleetd_https_start(&hc, out);
    if (st == KEEL_OK) {
        keel_log(KEEL_LOG_INFO, "fleet: %s listening on %s (port %u)", hc.name, hc.listen, fleetd_https_port(*out));
        if (ctx_out != NULL) {
            *ctx_out = ctx;
            return KEEL_OK;
        }
    }
    SSL_CTX_free(ctx);
    return st;
}

/* Every connection the listeners may hold is a descriptor: the soft limit
 * (often 1024) must cover both caps and the rest (database, broker, bundles). */
static void fd_limit(const keel_config_t *c)
{
    rlim_t need = (rlim_t)keel_config_uint(c, "admin", "max_connections") + 256;
    if (keel_config_str(c, "update_server", "listen") != NULL)
        need += (rlim_t)keel_config_uint(c, "update_server", "max_connections");
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < need)
        keel_log(KEEL_LOG_WARN,
                 "fleet: %llu descriptors allowed, %llu needed for max_connections: lower [update_server] and "
                 "[admin] max_connections or raise the limit (LimitNOFILE=)",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)need);
}

static keel_status_t start(fleetd_t *f)
{
    keel_status_t st = keel_dir_make(f->bundle_dir, 0700);
    if (st == KEEL_OK)
        st = keel_fleet_db_open(f->db_url, &f->db);
    if (st != KEEL_OK)
        return st;
    keel_log(KEEL_LOG_INFO, "fleet: database %s, schema %d", keel_fleet_db_driver_name(f->db),
             keel_fleet_db_schema_version(f->db));
    const keel_config_t *c = f->cfg;
    const char *broker = keel_config_str(c, "broker", "address");
    if (broker != NULL) {
        char cert[KEEL_PATH_MAX], chain[KEEL_PATH_MAX], key[KEEL_PATH_MAX], ca[KEEL_PATH_MAX];
        if ((st = keel_config_path(c, "broker", "certificate", cert)) != KEEL_OK ||
            (st = keel_config_path(c, "broker", "chain", chain)) != KEEL_OK ||
            (st = keel_config_path(c, "broker", "key", key)) != KEEL_OK ||
            (st = keel_config_path(c, "broker", "ca", ca)) != KEEL_OK)
            return st;
        st = fleetd_queue_new((size_t)keel_config_uint(c, "ingest", "queue"), &f->queue);
        fleetd_consumer_config_t cc = {
            .broker = broker,
            .server_name = keel_config_str(c, "broker", "server_name"),
            .client_id = keel_config_str(c, "broker", "client_id"),
            .share_group = keel_config_str(c, "broker", "share_group"),
            .cert_path = cert, .chain_path = chain, .key_path = key, .ca_path = ca,
            .keepalive_s = (unsigned)keel_config_uint(c, "broker", "keepalive"),
            .session_expiry_s = (unsigned)keel_config_uint(c, "broker", "session_expiry"),
            .receive_max = (unsigned)keel_config_uint(c, "broker", "receive_max"),
            .queue = f->queue,
        };
        if (st == KEEL_OK)
            st = fleetd_consumer_start(&cc, &f->consumer);
        fleetd_ingest_config_t ic = {
            .db_url = f->db_url,
            .queue = f->queue,
            .consumer = f->consumer,
            .batch = (unsigned)keel_config_uint(c, "ingest", "batch"),
            .gap_grace_s = (unsigned)keel_config_uint(c, "ingest", "gap_grace"),
        };
        if (st == KEEL_OK && (st = keel_fleet_anomaly_config_read(c, &ic.anomaly)) == KEEL_OK)
            st = keel_fleet_anomaly_config_check(&ic.anomaly);
        if (st == KEEL_OK)
            st = fleetd_ingest_start(&ic, &f->ingest);
        if (st != KEEL_OK)
            return st;
    } else {
        keel_log(KEEL_LOG_WARN, "fleet: no [broker] address: no ingest, and campaigns reach devices only when they ask");
    }
    fd_limit(c);
    if (keel_config_str(c, "update_server", "listen") != NULL &&
        (st = start_https(f, "update_server", true, fleetd_dist_handle, &f->dist, &f->dist_ctx)) != KEEL_OK)
        return st;
    if ((st = start_https(f, "admin", false, fleetd_admin_handle, &f->admin, NULL)) != KEEL_OK)
        return st;
    struct timeval tick = {.tv_sec = (time_t)keel_config_uint(c, "campaign", "tick")};
    struct timeval ret = {.tv_sec = (time_t)keel_config_uint(c, "retention", "interval")};
    f->tick = event_new(f->base, -1, EV_PERSIST, on_tick, f);
    f->retention = event_new(f->base, -1, EV_PERSIST, on_retention, f);
    if (f->tick == NULL || f->retention == NULL || event_add(f->tick, &tick) != 0 ||
        event_add(f->retention, &ret) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "fleet: cannot arm the timers");
    on_retention(-1, 0, f);
    return KEEL_OK;
}

static void stop(fleetd_t *f)
{
    fleetd_https_free(f->admin);
    fleetd_https_free(f->dist);
    f->admin = f->dist = NULL;
    /* MQTT first (no new messages), then the ingest stores what was queued.
     * Without an ingest (it failed to start) nothing drains the queue: closed
     * first, so an MQTT thread blocked on a full queue can end. */
    if (f->ingest == NULL && f->queue != NULL)
        fleetd_queue_close(f->queue);
    fleetd_consumer_stop(f->consumer);
    fleetd_ingest_free(f->ingest);
    fleetd_consumer_free(f->consumer);
    fleetd_queue_free(f->queue);
    f->ingest = NULL;
    f->consumer = NULL;
    f->queue = NULL;
    if (f->tick != NULL)
        event_free(f->tick);
    if (f->retention != NULL)
        event_free(f->retention);
    f->tick = f->retention = NULL;
    SSL_CTX_free(f->dist_ctx);
    f->dist_ctx = NULL;
    keel_fleet_db_close(f->db);
    f->db = NULL;
}

/* keel-fleetd token ... --config F: the tokens file is [admin] tokens of F. */
static int token_main(int argc, char **argv, const keel_cfg_key_t *sch, size_t n)
{
    const char *config = NULL;
    char *rest[OVERRIDES_MAX + 1];
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) && i + 1 < argc)
            config = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config = argv[i] + 9;
        else if (nrest < OVERRIDES_MAX)
            rest[nrest++] = argv[i];
    }
    if (config == NULL) {
        fputs("keel-fleetd: token: --config FILE is required\n", stderr);
        return EXIT_USAGE;
    }
    keel_config_t *cfg = NULL;
    char tokens[KEEL_PATH_MAX];
    keel_status_t st = keel_config_load(config, sch, n, &cfg);
    if (st == KEEL_OK)
        st = keel_config_path(cfg, "admin", "tokens", tokens);
    keel_config_free(cfg);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel-fleetd: token: %s\n", keel_error_message());
        return EXIT_USAGE;
    }
    rest[nrest] = NULL;
    return fleetd_token_cmd(nrest, rest, tokens);
}

/* Reachable for the whole run (and so not a leak on the early exits). */
static keel_cfg_key_t *g_schema;

int main(int argc, char **argv)
{
    keel_log_set_prefix("keel-fleetd");
    size_t n_schema = 0;
    keel_cfg_key_t *sch = g_schema = fleetd_config_schema(&n_schema);
    if (sch == NULL) {
        fputs("keel-fleetd: out of memory\n", stderr);
        return EXIT_FAIL;
    }
    if (argc >= 2 && strcmp(argv[1], "token") == 0) {
        return token_main(argc - 1, argv + 1, sch, n_schema);
    }
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    fleetd_t f = {0};
    char *overrides[OVERRIDES_MAX];
    size_t n_over = 0;
    bool check = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:o:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': f.config_path = optarg; break;
        case 'o':
            if (n_over == OVERRIDES_MAX) {
                fprintf(stderr, "keel-fleetd: at most %d overrides\n", OVERRIDES_MAX);
                return EXIT_USAGE;
            }
            overrides[n_over++] = optarg;
            break;
        case 'k': check = true; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK;
        case 'V': printf("keel-fleetd %s\n", KEEL_FLEETD_VERSION); return EXIT_OK;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
    }
    if (f.config_path == NULL || optind != argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    f.overrides = overrides;
    f.n_overrides = n_over;
    f.schema = sch;
    f.n_schema = n_schema;
    keel_status_t st = config_read(&f, &f.cfg);
    if (st == KEEL_OK)
        st = config_check(&f);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel-fleetd: %s\n", keel_error_message());
        keel_config_free(f.cfg);
        return EXIT_USAGE;
    }
    logging_apply(f.cfg);
    if (check) {
        st = keel_fleet_db_open(f.db_url, &f.db);
        if (st == KEEL_OK)
            printf("keel-fleetd: configuration ok; database %s (schema %d)\n", keel_fleet_db_driver_name(f.db),
                   keel_fleet_db_schema_version(f.db));
        else
            fprintf(stderr, "keel-fleetd: %s\n", keel_error_message());
        keel_fleet_db_close(f.db);
        keel_config_free(f.cfg);
        return st == KEEL_OK ? EXIT_OK : EXIT_FAIL;
    }
    /* Before any file of the state is opened, so none is root's (5.6-7). */
    if ((st = keel_sandbox_drop_user(keel_config_str(f.cfg, "security", "user"))) != KEEL_OK) {
        fprintf(stderr, "keel-fleetd: %s\n", keel_error_message());
        keel_config_free(f.cfg);
        return st == KEEL_ERR_CONFIG ? EXIT_USAGE : EXIT_FAIL;
    }
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        keel_log(KEEL_LOG_WARN, "cannot ignore SIGPIPE: %s", strerror(errno));
    f.started = (int64_t)time(NULL);
    f.base = event_base_new();
    struct event *sigs[3] = {NULL, NULL, NULL};
    int signums[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; f.base != NULL && i < 3; i++) {
        sigs[i] = evsignal_new(f.base, signums[i], on_signal, &f);
        if (sigs[i] == NULL || event_add(sigs[i], NULL) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "cannot watch signals");
    }
    if (f.base == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "event_base_new failed");
    if (st == KEEL_OK)
        st = start(&f);
    if (st == KEEL_OK) {
        /* Start-up is over: listeners bound, database open, MQTT and ingest threads running. */
        keel_sandbox_mode_t mode = KEEL_SANDBOX_KILL;
        char applied[KEEL_SANDBOX_SUMMARY_MAX];
        if ((st = keel_sandbox_mode_parse(keel_config_str(f.cfg, "security", "seccomp"), &mode)) == KEEL_OK &&
            (st = keel_sandbox_apply("keel-fleetd", mode, applied, sizeof applied)) == KEEL_OK)
            keel_log(KEEL_LOG_INFO, "fleet: sandbox: %s", applied);
    }
    int rc = EXIT_OK;
    if (st != KEEL_OK) {
        fprintf(stderr, "keel-fleetd: %s\n", keel_error_message());
        rc = st == KEEL_ERR_CONFIG ? EXIT_USAGE : EXIT_FAIL;
    } else {
        keel_log(KEEL_LOG_INFO, "fleet: ready");
        keel_notify("READY=1");
        if (keel_watchdog_start(f.base, ingest_alive, &f, &f.watchdog) != KEEL_OK) {
            keel_log(KEEL_LOG_WARN, "fleet: %s", keel_error_message()); /* systemd restarts a silent fleetd */
            keel_error_clear();
        }
        event_base_dispatch(f.base);
    }
    keel_watchdog_free(f.watchdog);
    f.watchdog = NULL;
    stop(&f);
    for (int i = 0; i < 3; i++)
        if (sigs[i] != NULL)
            event_free(sigs[i]);
    if (f.base != NULL)
        event_base_free(f.base);
    keel_config_free(f.cfg);
    return rc;
}

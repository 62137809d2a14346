/*
 * keeld - the device agent. One process, one libevent loop: the local HTTPS
 * API and setup UI (keel/api.h) over the device's identity, vault,
 * administrator account (keel/auth.h) and update slots (keel/slots.h).
 *
 *   keeld --config FILE [-o section.key=value ...]
 *
 * SIGTERM/SIGINT stop it gracefully (no new connections, running password
 * checks and installs finish); SIGHUP reloads the configuration (a broken
 * file is refused and the running one kept). Under systemd (Type=notify) it
 * reports READY=1, RELOADING=1 and STOPPING=1 on $NOTIFY_SOCKET, and pings
 * the watchdog (WatchdogSec=) from its event loop.
 */
#define _GNU_SOURCE
#include "cloud.h"
#include "updater.h"

#include "keel/api.h"
#include "keel/auth.h"
#include "keel/crypto.h"
#include "keel/device.h"
#include "keel/identity.h"
#include "keel/sandbox.h"
#include "keel/slots.h"

#include <event2/event.h>

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OVERRIDES_MAX 64
#define CONFIGS_MAX 64 /* loaded configurations kept alive (the first is the slots' for good) */
#define STOP_WAIT_S 60 /* longest wait for running work at stop */

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: keeld --config FILE [-o section.key=value ...]\n"
    "\n"
    "The Keel device agent: serves the local HTTPS API and setup UI of a device\n"
    "provisioned by `keel factory provision`, over its identity, vault,\n"
    "administrator account and update slots; keeps the cloud link (MQTT over\n"
    "mutual TLS, with a persistent outbox) and the product app's local socket.\n"
    "\n"
    "  -c, --config FILE     the device's keeld.conf (the one the factory wrote works as is)\n"
    "  -o section.key=value  override one key of the file (repeatable), e.g.\n"
    "                        -o api.listen=127.0.0.1:18443\n"
    "                        -o link.broker=mqtt.example.net:8883 (the cloud link)\n"
    "                        -o ipc.socket=/run/keeld/app.sock (the product app's socket)\n"
    "      --check           load the configuration, report, and exit\n"
    "  -h, --help            this text\n"
    "  -V, --version         the version\n"
    "\n"
    "Least privilege (docs/internals/sandbox.md): started as root, keeld becomes\n"
    "[security] user (-o security.user=NAME) before it opens its state; once started\n"
    "it sets no_new_privs, drops every capability and installs a seccomp allow-list:\n"
    "[security] seccomp = kill (default: an unlisted system call kills keeld), log\n"
    "(the kernel logs it; for developing the list) or off.\n"
    "\n"
    "Signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the configuration.\n"
    "Exit status: 0 stopped cleanly, 1 failed, 2 usage or configuration error.\n"
    "API reference: docs/api.md.\n";

typedef struct {
    const char *config_path;
    char *overrides[OVERRIDES_MAX];
    size_t n_overrides;
    keel_config_t *configs[CONFIGS_MAX];
    size_t n_configs;
    struct event_base *base;
    keel_api_t *api;
    keeld_cloud_t *cloud;
    keeld_updater_t *updater;
    struct event *stop_timer;
    double stop_started;
    bool stopping;
} keeld_t;

/* ---- memory that held request bytes ---------------------------------------- */

/*
 * Passwords and session tokens pass through libevent's buffers and jansson's
 * strings, which free without wiping. keeld gives both libraries allocators
 * that wipe every block they free, so no request byte outlives its use.
 */
static void wipe_free(void *p)
{
    if (p != NULL) {
        keel_wipe(p, malloc_usable_size(p));
        free(p);
    }
}

static void *wipe_realloc(void *p, size_t n)
{
    if (p == NULL)
        return malloc(n);
    size_t old = malloc_usable_size(p);
    void *q = malloc(n > 0 ? n : 1);
    if (q == NULL)
        return NULL;
    memcpy(q, p, old < n ? old : n);
    wipe_free(p);
    return q;
}

/* ---- configuration ----------------------------------------------------------- */

static keel_status_t logging_apply(const keel_config_t *c)
{
    keel_log_level_t level;
    keel_status_t st = keel_log_level_parse(keel_config_str(c, "log", "level"), &level);
    if (st != KEEL_OK)
        return st;
    const char *target = keel_config_str(c, "log", "target");
    if (strcmp(target, "stderr") != 0 && strcmp(target, "syslog") != 0)
        return keel_errorf(KEEL_ERR_CONFIG, "log.target must be stderr or syslog");
    keel_log_set_level(level);
    keel_log_to_syslog(strcmp(target, "syslog") == 0 ? "keeld" : NULL);
    return KEEL_OK;
}

static keel_status_t config_load(keeld_t *d, keel_config_t **out)
{
    keel_config_t *c = NULL;
    keel_status_t st = keel_device_config_load(d->config_path, d->overrides, d->n_overrides, &c);
    if (st != KEEL_OK)
        return st;
    /* Values the schema cannot check by type alone. */
    keel_log_level_t level;
    const char *target = keel_config_str(c, "log", "target");
    if ((st = keel_log_level_parse(keel_config_str(c, "log", "level"), &level)) == KEEL_OK &&
        strcmp(target, "stderr") != 0 && strcmp(target, "syslog") != 0)
        st = keel_errorf(KEEL_ERR_CONFIG, "log.target must be stderr or syslog");
    if (st == KEEL_OK)
        st = keel_api_listen_check(keel_config_str(c, "api", "listen"));
    if (st == KEEL_OK && keel_config_uint(c, "auth", "backoff_max") < keel_config_uint(c, "auth", "backoff_base"))
        st = keel_errorf(KEEL_ERR_CONFIG, "auth.backoff_max must not be below auth.backoff_base");
    if (st == KEEL_OK)
        st = keeld_cloud_config_check(c);
    if (st == KEEL_OK)
        st = keeld_updater_config_check(c);
    keel_sandbox_mode_t sandbox;
    if (st == KEEL_OK)
        st = keel_sandbox_mode_parse(keel_config_str(c, "security", "seccomp"), &sandbox);
    if (st != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        keel_config_free(c);
        return keel_errorf(KEEL_ERR_CONFIG, "%s: %s", d->config_path, why);
    }
    *out = c;
    return KEEL_OK;
}

static keel_auth_config_t auth_config(const keel_config_t *c, const char *label_hash)
{
    keel_auth_config_t a = keel_auth_config_defaults();
    a.label_hash_path = label_hash;
    a.serial = keel_config_str(c, "device", "serial");
    a.device_id = keel_config_str(c, "device", "id");
    a.model = keel_config_str(c, "device", "model");
    a.argon2.t_cost = (uint32_t)keel_config_uint(c, "auth", "argon2_t");
    a.argon2.m_cost_kib = (uint32_t)keel_config_uint(c, "auth", "argon2_m_kib");
    a.session_idle_s = (uint32_t)keel_config_uint(c, "auth", "session_idle");
    a.session_max_s = (uint32_t)keel_config_uint(c, "auth", "session_max");
    a.free_failures = (uint32_t)keel_config_uint(c, "auth", "free_failures");
    a.backoff_base_s = (uint32_t)keel_config_uint(c, "auth", "backoff_base");
    a.backoff_max_s = (uint32_t)keel_config_uint(c, "auth", "backoff_max");
    a.global_per_minute = (uint32_t)keel_config_uint(c, "auth", "global_per_minute");
    return a;
}

/* ---- signals ------------------------------------------------------------------ */

static void on_stop_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    keeld_t *d = arg;
    if ((!keel_api_busy(d->api) && !keeld_updater_busy(d->updater)) || keel_now() - d->stop_started > STOP_WAIT_S) {
        event_base_loopexit(d->base, NULL);
        return;
    }
    struct timeval tick = {0, 100000};
    event_add(d->stop_timer, &tick);
}

static void on_stop(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    keeld_t *d = arg;
    if (d->stopping)
        return;
    d->stopping = true;
    keel_log(KEEL_LOG_INFO, "%s: stopping", strsignal((int)sig));
    keel_notify("STOPPING=1");
    keel_api_stop_listening(d->api);
    keeld_updater_stop(d->updater);
    keeld_cloud_stop(d->cloud);
    d->stop_started = keel_now();
    on_stop_tick(-1, 0, d);
}

static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what;
    keeld_t *d = arg;
    keel_notify("RELOADING=1");
    keel_config_t *c = NULL;
    keel_status_t st = d->n_configs < CONFIGS_MAX ? config_load(d, &c)
                                                  : keel_errorf(KEEL_ERR_CONFIG, "too many reloads; restart keeld");
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "reload refused, the running configuration stays: %s", keel_error_message());
        keel_notify("READY=1");
        return;
    }
    const keel_config_t *old = d->configs[d->n_configs - 1];
    if (strcmp(keel_config_str(old, "api", "listen"), keel_config_str(c, "api", "listen")) != 0)
        keel_log(KEEL_LOG_WARN, "reload: api.listen changes at the next start");
    if (logging_apply(c) != KEEL_OK)
        keel_log(KEEL_LOG_ERROR, "reload: logging: %s", keel_error_message());
    keel_api_set_limits(d->api, keel_api_limits(c));
    keel_api_set_update_defaults(d->api, c);
    keeld_cloud_reload(d->cloud, c);
    keeld_updater_reload(d->updater, c);
    if (strcmp(keel_config_str(old, "link", "broker") != NULL ? keel_config_str(old, "link", "broker") : "",
               keel_config_str(c, "link", "broker") != NULL ? keel_config_str(c, "link", "broker") : "") != 0)
        keel_log(KEEL_LOG_WARN, "reload: link.broker changes at the next start");
    d->configs[d->n_configs++] = c;
    keel_log(KEEL_LOG_INFO, "configuration reloaded (limits, logging, update defaults; [auth] and api.listen "
                            "apply at the next start)");
    keel_notify("READY=1");
}

/* ---- start -------------------------------------------------------------------- */

/* After a healthy start (the API answers) the running slot is confirmed:
 * a slot that never gets here rolls back at the next boots (5.3-...). */
static void confirm_slot(keel_slots_t *slots, keeld_cloud_t *cloud)
{
    keel_bootstate_t bs;
    if (slots == NULL)
        return;
    if (keel_slots_state(slots, &bs) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "update: boot state: %s", keel_error_message());
        keel_error_clear();
        return;
    }
    if (bs.tamper) {
        keel_log(KEEL_LOG_WARN, "TAMPER ALERT: %s", bs.tamper_detail);
        keeld_cloud_alert(cloud, "tamper", bs.tamper_detail);
    }
    if (bs.booted != 0 && bs.booted != 1)
        return; /* nothing booted through keel boot yet */
    int slot = KEEL_SLOT_NONE;
    uint32_t counter = 0;
    bool was_pending = bs.pending == bs.booted;
    if (keel_slots_confirm_booted(slots, &slot, &counter) != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "update: confirm: %s", keel_error_message());
        keel_error_clear();
        return;
    }
    if (was_pending)
        keel_log(KEEL_LOG_INFO, "update: slot %c (%s) started healthy and is confirmed; anti-rollback counter %u",
                 keel_slot_name(slot), bs.version[slot], counter);
}

static int run(keeld_t *d)
{
    keel_config_t *cfg = NULL;
    keel_status_t st = config_load(d, &cfg);
    if (st != KEEL_OK) {
        fprintf(stderr, "keeld: %s\n", keel_error_message());
        return EXIT_USAGE;
    }
    d->configs[d->n_configs++] = cfg;
    if (logging_apply(cfg) != KEEL_OK) {
        fprintf(stderr, "keeld: %s\n", keel_error_message());
        return EXIT_USAGE;
    }
    /* Before any file of the state is opened, so none is root's (5.6-7). */
    if ((st = keel_sandbox_drop_user(keel_config_str(cfg, "security", "user"))) != KEEL_OK) {
        fprintf(stderr, "keeld: %s\n", keel_error_message());
        return st == KEEL_ERR_CONFIG ? EXIT_USAGE : EXIT_FAIL;
    }
    char label_hash[KEEL_PATH_MAX];
    if (keel_config_path(cfg, "identity", "label_password_hash", label_hash) != KEEL_OK) {
        fprintf(stderr, "keeld: %s: [identity] label_password_hash is not set\n", d->config_path);
        return EXIT_USAGE;
    }
    keel_keystore_t *ks = NULL;
    keel_vault_t *vault = NULL;
    keel_auth_t *auth = NULL;
    keel_slots_t *slots = NULL;
    keel_auth_config_t ac = auth_config(cfg, label_hash);
    int rc = EXIT_FAIL;
    const char *what = "crypto";
    if ((st = keel_crypto_init()) == KEEL_OK && (what = "keystore", st = keel_device_keystore_open(cfg, &ks)) == KEEL_OK &&
        (what = "vault", st = keel_device_vault_open(cfg, ks, &vault)) == KEEL_OK &&
        (what = "auth", st = keel_auth_open(vault, &ac, &auth)) == KEEL_OK)
        what = "update", st = keel_slots_open(cfg, &slots);
    if (st == KEEL_OK) {
        d->base = event_base_new();
        if (d->base == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "event_base_new failed"), what = "libevent";
    }
    struct event *sig_term = NULL, *sig_int = NULL, *sig_hup = NULL;
    if (st == KEEL_OK)
        what = "cloud", st = keeld_cloud_start(d->base, cfg, ks, vault, &d->cloud);
    if (st == KEEL_OK) {
        keel_api_config_t a = {
            .base = d->base, .cfg = cfg, .ks = ks, .vault = vault, .auth = auth, .slots = slots,
            .hash_threads = (unsigned)keel_config_uint(cfg, "auth", "parallel_hashes"),
            .privacy = keeld_cloud_privacy(d->cloud), .outbox = keeld_cloud_outbox(d->cloud),
            .link = keeld_cloud_link(d->cloud), .after_reset = keeld_cloud_after_reset,
            .app_state = keeld_cloud_app_state, .arg = d->cloud,
        };
        what = "api";
        st = keel_api_start(&a, keel_config_str(cfg, "api", "listen"), keel_api_limits(cfg), &d->api);
        slots = NULL; /* the API's now, whatever happened */
    }
    if (st == KEEL_OK)
        what = "cloud", st = keeld_cloud_watch_auth(d->cloud, auth);
    if (st == KEEL_OK) {
        what = "update";
        st = keeld_updater_start(d->base, cfg, ks, d->api, keeld_cloud_event, d->cloud, &d->updater);
        keeld_cloud_set_updater(d->cloud, d->updater);
    }
    if (st == KEEL_OK) {
        sig_term = evsignal_new(d->base, SIGTERM, on_stop, d);
        sig_int = evsignal_new(d->base, SIGINT, on_stop, d);
        sig_hup = evsignal_new(d->base, SIGHUP, on_reload, d);
        d->stop_timer = evtimer_new(d->base, on_stop_tick, d);
        if (sig_term == NULL || sig_int == NULL || sig_hup == NULL || d->stop_timer == NULL ||
            evsignal_add(sig_term, NULL) != 0 || evsignal_add(sig_int, NULL) != 0 || evsignal_add(sig_hup, NULL) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "cannot watch signals"), what = "libevent";
    }
    if (st == KEEL_OK) {
        /* Start-up is over: listeners bound, keystore open, threads running. */
        keel_sandbox_mode_t mode = KEEL_SANDBOX_KILL;
        char applied[KEEL_SANDBOX_SUMMARY_MAX];
        what = "sandbox";
        if ((st = keel_sandbox_mode_parse(keel_config_str(cfg, "security", "seccomp"), &mode)) == KEEL_OK &&
            (st = keel_sandbox_apply("keeld", mode, applied, sizeof applied)) == KEEL_OK)
            keel_log(KEEL_LOG_INFO, "sandbox: %s", applied);
    }
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "%s: %s", what, keel_error_message());
        rc = st == KEEL_ERR_CONFIG ? EXIT_USAGE : EXIT_FAIL;
    } else {
        keel_log(KEEL_LOG_INFO, "device %s (%s) listening on https://%s/ (certificate SHA-256 %s)",
                 keel_config_str(cfg, "device", "id"), keel_config_str(cfg, "device", "model"),
                 keel_config_str(cfg, "api", "listen"), keel_api_fingerprint(d->api));
        confirm_slot(keel_api_slots(d->api), d->cloud);
        keel_bootstate_t bs;
        if (keel_api_boot_state(d->api, &bs) == KEEL_OK)
            keeld_cloud_boot(d->cloud, &bs);
        else
            keel_log(KEEL_LOG_WARN, "boot event: %s", keel_error_message()), keel_error_clear();
        keel_notify("READY=1");
        keel_watchdog_t *wd = NULL;
        if (keel_watchdog_start(d->base, NULL, NULL, &wd) != KEEL_OK) {
            keel_log(KEEL_LOG_WARN, "%s", keel_error_message()); /* systemd restarts a silent keeld */
            keel_error_clear();
        }
        if (event_base_dispatch(d->base) != 0) {
            keel_log(KEEL_LOG_ERROR, "the event loop failed");
        } else {
            rc = EXIT_OK;
            keel_log(KEEL_LOG_INFO, "stopped");
        }
        keel_watchdog_free(wd);
    }
    /* The transfer is aborted first; the API's installer then ends (its
     * completion runs into the updater), then the transfer thread is joined. */
    keeld_updater_stop(d->updater);
    keel_api_free(d->api);
    keeld_updater_free(d->updater);
    keeld_cloud_free(d->cloud);
    if (sig_term != NULL)
        event_free(sig_term);
    if (sig_int != NULL)
        event_free(sig_int);
    if (sig_hup != NULL)
        event_free(sig_hup);
    if (d->stop_timer != NULL)
        event_free(d->stop_timer);
    if (d->base != NULL)
        event_base_free(d->base);
    keel_slots_close(slots);
    keel_auth_close(auth);
    keel_vault_close(vault);
    keel_keystore_close(ks);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    keeld_t d;
    memset(&d, 0, sizeof d);
    bool check = false;
    keel_log_set_prefix("keeld");
    int o;
    while ((o = getopt_long(argc, argv, "c:o:hV", opts, NULL)) != -1) {
        switch (o) {
        case 'c': d.config_path = optarg; break;
        case 'o':
            if (d.n_overrides == OVERRIDES_MAX) {
                fprintf(stderr, "keeld: at most %d -o overrides\n", OVERRIDES_MAX);
                return EXIT_USAGE;
            }
            d.overrides[d.n_overrides++] = optarg;
            break;
        case 'C': check = true; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK;
        case 'V': printf("keeld %s\n", KEEL_VERSION); return EXIT_OK;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
    }
    if (d.config_path == NULL || optind != argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    if (check) {
        keel_config_t *c = NULL;
        if (config_load(&d, &c) != KEEL_OK) {
            fprintf(stderr, "keeld: %s\n", keel_error_message());
            return EXIT_USAGE;
        }
        printf("%s: configuration OK\n", d.config_path);
        keel_config_free(c);
        return EXIT_OK;
    }
    /* Before either library allocates anything. */
    event_set_mem_functions(malloc, wipe_realloc, wipe_free);
    json_set_alloc_funcs(malloc, wipe_free);
    /* A client that goes away mid-answer must not kill the agent. */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        keel_log(KEEL_LOG_WARN, "cannot ignore SIGPIPE: %s", strerror(errno));
    int rc = run(&d);
    for (size_t i = 0; i < d.n_configs; i++)
        keel_config_free(d.configs[i]);
    return rc;
}

/*
 * keel/api.h - keeld's local HTTPS API and setup UI (5.1-4, 5.5-1, 5.5-4,
 * 5.6-1, 5.12-1..3, 5.13-1A/B). The routes and their answers: docs/api.md.
 * How it is built and guarded: docs/internals/api.md.
 *
 * libevent's evhttp over OpenSSL bufferevents, one loop. The module adds
 * what evhttp 2.1 lacks: a connection cap that evicts the oldest idle
 * connection instead of refusing the newest, a per-request deadline that
 * slow clients cannot stretch (slowloris), a guard against evhttp's
 * plaintext fallback, strict JSON input, and worker threads so that neither
 * Argon2id nor an install ever runs on the loop.
 */
#ifndef KEEL_API_H
#define KEEL_API_H

#include "keel/auth.h"
#include "keel/config.h"
#include "keel/keystore.h"
#include "keel/link.h"
#include "keel/outbox.h"
#include "keel/privacy.h"
#include "keel/slots.h"
#include "keel/vault.h"

struct event_base;

#define KEEL_API_HEADERS_MAX (8u * 1024u) /* all request headers together */
#define KEEL_API_JSON_MAX (64u * 1024u)   /* a JSON request body */

typedef struct {
    uint32_t max_connections; /* [api] max_connections */
    uint32_t request_timeout; /* [api] request_timeout, seconds */
    uint64_t upload_max;      /* [api] upload_max, bytes */
} keel_api_limits_t;

/* KEEL_OK when `listen` is "address:port" or "[v6 address]:port" with a
 * numeric address (KEEL_ERR_CONFIG with the reason otherwise). */
keel_status_t keel_api_listen_check(const char *listen) KEEL_MUST_CHECK;

/* The [api] limits of a loaded configuration. */
keel_api_limits_t keel_api_limits(const keel_config_t *c);

typedef struct {
    struct event_base *base;
    const keel_config_t *cfg; /* [device], [identity], [keystore] key_label, [update] */
    keel_keystore_t *ks;      /* holds the identity key, the TLS server key */
    keel_vault_t *vault;      /* user settings */
    keel_auth_t *auth;
    keel_slots_t *slots;      /* taken over by the API, which closes it (and opens it again after a factory reset) */
    unsigned hash_threads;    /* [auth] parallel_hashes: 1 or 2 */
    keel_privacy_t *privacy;  /* the data declaration, consent, records, export, erase receipts */
    keel_outbox_t *outbox;    /* the cloud link's queue (its figures; its pending messages in the export) */
    keel_link_t *link;        /* NULL when no broker is configured */
    /* After a factory reset has erased the vault (and the auth state), keeld
     * reloads what caches vault data, files the cloud erase request and
     * returns the reset's receipt (a new JSON object) for the answer. */
    keel_status_t (*after_reset)(void *arg, json_t **receipt);
    /* The product state the app keeps through the socket (a new reference). */
    keel_status_t (*app_state)(void *arg, json_t **state);
    void *arg;
} keel_api_config_t;

typedef struct keel_api keel_api_t;

/*
 * Loads the identity certificate, chain and key into a TLS context, starts
 * the worker threads and listens on `listen` ("host:port", "[v6]:port").
 * Everything in `c` but `slots` must outlive the API; `slots` is the API's
 * from this call on, whatever it returns.
 */
keel_status_t keel_api_start(const keel_api_config_t *c, const char *listen, keel_api_limits_t limits,
                             keel_api_t **out) KEEL_MUST_CHECK;
/* New limits (SIGHUP); they apply to new connections and requests. */
void keel_api_set_limits(keel_api_t *api, keel_api_limits_t limits);
/* The configuration the [update] defaults of /api/v1/settings come from
 * (SIGHUP); identity, paths and [auth] stay those of the start. `cfg` must
 * outlive the API. */
void keel_api_set_update_defaults(keel_api_t *api, const keel_config_t *cfg);
/* Graceful stop, first half: no new connections. */
void keel_api_stop_listening(keel_api_t *api);
/* Work that must finish before the process exits (password hashes, an
 * install in progress). */
bool keel_api_busy(keel_api_t *api);
/* Closes every connection, joins the workers, frees. */
void keel_api_free(keel_api_t *api);

/* The update slots the API holds now (for keeld's confirm at start). */
keel_slots_t *keel_api_slots(keel_api_t *api);

/*
 * An install from another source than the upload (keeld's fleet updater),
 * under the same one-install-at-a-time rule. `read` feeds keel_slots_install
 * on the API's installer thread; `done` runs on the loop thread with the
 * outcome (`why` is the refusal, "" on success; `res` is valid on success)
 * and is always called once the install was accepted, also when keeld stops
 * before it ran (KEEL_ERR_BUSY). While it runs, GET /api/v1/update shows
 * "installing" and uploads, apply and factory reset are refused (409) as
 * during a local install; afterwards the upload flow's state comes back
 * ("installed" after a success when nothing was staged) and a refusal is the
 * status' last_error. KEEL_ERR_BUSY (nothing taken, `done` not called) while
 * an install runs, a factory reset waits or the API is stopping.
 */
typedef struct {
    keel_read_fn read;
    void *ctx;
    const char *source; /* for the log and last_error, e.g. "fleet campaign <id>" (copied) */
    void (*done)(void *arg, keel_status_t st, const keel_install_result_t *res, const char *why);
    void *arg;
} keel_api_install_t;
keel_status_t keel_api_install(keel_api_t *api, const keel_api_install_t *in) KEEL_MUST_CHECK;
/* True while an install (local or keel_api_install) runs. */
bool keel_api_installing(const keel_api_t *api);
/* The boot state as /api/v1/update shows it (the last one seen while an
 * install owns the slots; a fresh state when none was stored). */
keel_status_t keel_api_boot_state(keel_api_t *api, keel_bootstate_t *bs) KEEL_MUST_CHECK;
/* The owner's update policy as /api/v1/settings shows it: automatic updates
 * on or off, and the date they wait for ("" when none). */
keel_status_t keel_api_update_policy(keel_api_t *api, bool *automatic, char postpone_until[11]) KEEL_MUST_CHECK;

/* The SHA-256 fingerprint of the certificate the API presents. */
const char *keel_api_fingerprint(const keel_api_t *api);

/*
 * The systemd watchdog for a daemon's loop (src/api/watchdog.c): when systemd
 * set WATCHDOG_USEC, a timer on `base` sends WATCHDOG=1 three times per
 * interval while `alive(arg)` (may be NULL) says the daemon's other threads
 * still turn. *out stays NULL without a watchdog. Free before the base.
 */
typedef struct keel_watchdog keel_watchdog_t;
keel_status_t keel_watchdog_start(struct event_base *base, bool (*alive)(void *arg), void *arg,
                                  keel_watchdog_t **out) KEEL_MUST_CHECK;
void keel_watchdog_free(keel_watchdog_t *w);

#endif

/*
 * keeld's fleet updater (docs/internals/updater.md): asks the fleet's update
 * server for an offer after start and then periodically with jitter
 * (EN 303 645 5.3-5), takes keel/update and keel/check from the link,
 * downloads a bundle over HTTPS with mutual TLS (libcurl) and streams it into
 * the installer through the API's one-install-at-a-time guard
 * (keel_api_install), and reports each step as an `update` event.
 *
 * Threads: the loop thread owns everything here; the HTTPS transfers run on
 * one worker thread of the updater's own, the install on the API's
 * installer thread; a pipe carries the bytes between the two.
 *
 * The pure part (offer parsing, the decision, the schedule, progress
 * throttling, the server address) is in updater_logic.c, unit-tested by
 * tests/unit/test_updater.c.
 */
#ifndef KEELD_UPDATER_H
#define KEELD_UPDATER_H

#include "keel/api.h"
#include "keel/config.h"
#include "keel/keystore.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

/* ---- the pure part (updater_logic.c) --------------------------------------- */

#define KEELD_OFFER_MAX 4096u          /* an offer (check answer or keel/update payload), bytes */
#define KEELD_CAMPAIGN_LEN 32          /* hex characters */
#define KEELD_UPDATE_HOST_MAX 253
#define KEELD_PROGRESS_EVERY_S 10.0    /* a downloading event at most this often ... */
#define KEELD_PROGRESS_QUARTERS 4      /* ... or at each quarter of the bundle */

typedef struct {
    char campaign[KEELD_CAMPAIGN_LEN + 1]; /* lower-case hex */
    char version[KEEL_SLOT_VERSION_MAX + 1];
    uint32_t security_version;
    uint64_t size; /* bytes of the bundle */
    char sha256[65]; /* of the bundle, lower-case hex */
    bool security;
} keeld_offer_t;

/*
 * An offer, strictly: one JSON object of at most KEELD_OFFER_MAX bytes with
 * exactly the fields campaign (32 hex), version (SemVer, at most 64),
 * security_version (0..2^32-1), size (1..size_cap), sha256 (64 hex) and
 * security (bool); duplicate or unknown fields are refused. Hex is taken in
 * either case and kept in lower case. KEEL_ERR_TOO_LARGE over the caps,
 * KEEL_ERR_FORMAT otherwise, with the reason.
 */
keel_status_t keeld_offer_parse(const void *json, size_t len, uint64_t size_cap, keeld_offer_t *out) KEEL_MUST_CHECK;

typedef enum {
    KEELD_OFFER_INSTALL = 0,
    KEELD_OFFER_IGNORE,   /* the version runs already, or is installed and waits for the reboot */
    KEELD_OFFER_POSTPONE, /* the owner turned automatic updates off, or postponed them */
} keeld_offer_verdict_t;

/* `running` and `pending` may be NULL or ""; `postpone_until` and `today`
 * are YYYY-MM-DD ("" for none): updates wait while today < postpone_until. */
keeld_offer_verdict_t keeld_offer_decide(const keeld_offer_t *o, const char *running, const char *pending,
                                         bool automatic, const char *postpone_until, const char *today);

/* Seconds to the next check: uniform in [interval - jitter, interval +
 * jitter] (the lower end at least 1 s), u in [0, 1) from the CSPRNG. */
double keeld_check_delay(double interval, double jitter, double u);
/* Seconds to the first check after start: uniform in [0, first]. */
double keeld_first_check_delay(double first, double u);
/* After `failures` failed checks or downloads in a row (>= 1): full jitter
 * over min(base * 2^(failures-1), cap) (keel_backoff_delay), so a fleet that
 * lost its update server does not return in one wave. */
double keeld_retry_delay(unsigned failures, double cap, double u);

/* Progress throttling for `downloading` events. */
typedef struct {
    uint64_t total;
    uint64_t last_bytes;
    unsigned last_quarter;
    double last_time;
} keeld_progress_t;
void keeld_progress_start(keeld_progress_t *p, uint64_t total, double now);
/* True (and remembered) when `bytes` crossed into a new quarter of the total,
 * or when KEELD_PROGRESS_EVERY_S passed since the last report and bytes
 * moved on. */
bool keeld_progress_due(keeld_progress_t *p, uint64_t bytes, double now);

/* "https://host[:port]" or "https://[v6][:port]" (port 443 when absent; no
 * path, user, query or fragment). host is a DNS name or an address. */
keel_status_t keeld_update_server_parse(const char *url, char host[KEELD_UPDATE_HOST_MAX + 1], unsigned *port,
                                        bool *v6) KEEL_MUST_CHECK;

/* ---- the updater (updater.c) ------------------------------------------------- */

typedef struct keeld_updater keeld_updater_t;

/* Where the updater's events go (keeld's outbox; the link is kicked). */
typedef void (*keeld_updater_emit_fn)(void *arg, const json_t *event);

/* Values the schema alone cannot check ([update] server, server_name). */
keel_status_t keeld_updater_config_check(const keel_config_t *cfg) KEEL_MUST_CHECK;

/*
 * Starts the updater when [update] server is set (*out = NULL otherwise):
 * loads the client key from the keystore once, and schedules the first
 * check. `cfg`, `ks`, `api` and `base` must outlive it.
 */
keel_status_t keeld_updater_start(struct event_base *base, const keel_config_t *cfg, keel_keystore_t *ks,
                                  keel_api_t *api, keeld_updater_emit_fn emit, void *emit_arg,
                                  keeld_updater_t **out) KEEL_MUST_CHECK;
/* keel/update from the fleet (payload as it came: parsed like an offer). */
void keeld_updater_offer(keeld_updater_t *u, const void *payload, size_t len);
/* keel/check: ask the server now (or right after the running campaign). */
void keeld_updater_check(keeld_updater_t *u);
/* SIGHUP: a new check interval and jitter for the next schedule. */
void keeld_updater_reload(keeld_updater_t *u, const keel_config_t *cfg);
/* Graceful stop: the running transfer is aborted (the install then fails
 * with nothing committed); no new work. */
void keeld_updater_stop(keeld_updater_t *u);
/* A transfer is still running (keeld waits for it at stop). */
bool keeld_updater_busy(const keeld_updater_t *u);
/* Joins the transfer thread and frees. Call after keel_api_free (which
 * runs the install's completion into the updater). */
void keeld_updater_free(keeld_updater_t *u);

#endif

/*
 * keel/fleet_store.h - what the fleet keeps, over keel/fleet_db.h (either
 * driver): the device registry, ingested messages with their sequence
 * bookkeeping, alerts, releases and update campaigns, erasures and the
 * pseudonymous aggregates that outlive raw telemetry.
 *
 * Every function runs its statements on the given handle, inside the
 * caller's transaction when one is open (the caller batches: fleetd's ingest
 * commits once per batch). A function of several statements called outside
 * a transaction opens its own, and retries it a few times on KEEL_ERR_BUSY.
 * After any error inside the caller's transaction, the caller rolls it back
 * (PostgreSQL refuses every further statement of a failed transaction).
 * Times are Unix seconds, passed in (the store never reads the clock, so
 * tests control time).
 *
 * Lists are bounded: a function returning rows either takes a limit or
 * fails with KEEL_ERR_TOO_LARGE past its cap (KEEL_FLEET_LIST_MAX rows;
 * the export has its own caps).
 *
 * Personal data (5.11-2, 5.11-4, 6-6..6-8): the raw message bodies are the
 * only personal data the fleet holds. They are deleted by an erase (from the
 * device or the operator) and by retention; before retention deletes them,
 * they are counted into daily aggregates keyed by the device's pseudonym (a
 * random id, not derivable from the device id); an erase gives the device a
 * new pseudonym, so what was aggregated before can no longer be tied to it.
 */
#ifndef KEEL_FLEET_STORE_H
#define KEEL_FLEET_STORE_H

#include "keel/base.h"
#include "keel/fleet_db.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define KEEL_FLEET_ID_MAX 128      /* device id (keel ids are 26 chars; others up to this) */
#define KEEL_FLEET_MODEL_MAX 64
#define KEEL_FLEET_VERSION_MAX 64  /* SemVer text */
#define KEEL_FLEET_CAMPAIGN_MAX 32 /* campaign id: 32 hex */
#define KEEL_FLEET_BODY_MAX (16u * 1024u)
#define KEEL_FLEET_MANIFEST_MAX (64u * 1024u * 1024u) /* bytes of manifest.json */
#define KEEL_FLEET_DETECTOR_MAX 4096 /* bytes of one device's detector state */
#define KEEL_FLEET_LIST_MAX 100000   /* rows of a list without a limit parameter */
#define KEEL_FLEET_EXPORT_MESSAGES_MAX 200000u
#define KEEL_FLEET_EXPORT_BYTES_MAX (64u * 1024u * 1024u) /* message bodies in one export */

/* ---- registry ------------------------------------------------------------------------- */

typedef enum { KEEL_FLEET_DEV_REGISTERED, KEEL_FLEET_DEV_ACTIVE, KEEL_FLEET_DEV_REVOKED } keel_fleet_dev_state_t;

typedef struct {
    char id[KEEL_FLEET_ID_MAX + 1];
    char serial[65];
    char model[KEEL_FLEET_MODEL_MAX + 1];
    char cert_sha256[65];  /* lowercase hex of the DER certificate */
    char cert_serial[65];  /* uppercase hex, as in a CRL */
    char pseudonym[33];    /* 32 hex, random; rotated by an erase */
    keel_fleet_dev_state_t state; /* registered until first seen, then active; revoked is final */
    int64_t registered, first_seen, last_seen, revoked_at; /* 0 = never */
    char version[KEEL_FLEET_VERSION_MAX + 1]; /* last reported ("" = none yet) */
    int64_t security_version;                 /* -1 = none yet */
    uint64_t last_seq;                        /* highest seq stored */
    uint64_t dropped_reported;                /* the device's own drop count (sum of kinds), last seen */
} keel_fleet_device_t;

typedef struct {
    uint64_t added, unchanged;
} keel_fleet_import_stats_t;

/* Imports `keel factory provision`'s manifest.json (format
 * "keel-manifest-1"): each device's id, serial, model and certificate (PEM;
 * its SHA-256 must equal the device's cert_sha256, given as the manifest
 * writes it (colon-separated upper-case hex) or as plain hex; its CN must be
 * the id, and the id must be the one derived from its public key). In one
 * transaction: a device already registered with the same certificate,
 * serial and model is unchanged; an id, serial or certificate that exists
 * with other values, a malformed entry or an unknown field (in the manifest
 * or in a device) fails the whole import (KEEL_ERR_FORMAT / KEEL_ERR_EXISTS
 * with the device named), nothing is written. A new device gets a fresh
 * pseudonym. A certificate that does not match its entry (SHA-256, CN,
 * key) is KEEL_ERR_VERIFY. */
keel_status_t keel_fleet_import_manifest(keel_fleet_db_t *db, const json_t *manifest, int64_t now,
                                         keel_fleet_import_stats_t *stats) KEEL_MUST_CHECK;
keel_status_t keel_fleet_device_get(keel_fleet_db_t *db, const char *id, keel_fleet_device_t *out) KEEL_MUST_CHECK;
/* All devices as a JSON array of objects (the fields above, no pseudonym;
 * state as "registered"/"active"/"revoked"), sorted by id; `model` (may be
 * NULL) filters. KEEL_ERR_TOO_LARGE past KEEL_FLEET_LIST_MAX devices (page
 * with keel_fleet_device_page). */
keel_status_t keel_fleet_device_list(keel_fleet_db_t *db, const char *model, json_t **out) KEEL_MUST_CHECK;
/* The same, one page: at most `limit` (1..KEEL_FLEET_LIST_MAX) devices with
 * an id after `after` (NULL or "" = from the start). */
keel_status_t keel_fleet_device_page(keel_fleet_db_t *db, const char *model, const char *after, unsigned limit,
                                     json_t **out) KEEL_MUST_CHECK;
/* Counts per state and per (model, version) for the dashboard:
 * {"devices":N,"states":{...},"versions":[{"model","version","devices"}...]}
 * (versions: devices not revoked; "" = not reported yet). */
keel_status_t keel_fleet_device_summary(keel_fleet_db_t *db, json_t **out) KEEL_MUST_CHECK;
/* Marks the device revoked (final; revoking again keeps the first time);
 * KEEL_ERR_NOT_FOUND for an unknown id. */
keel_status_t keel_fleet_device_revoke(keel_fleet_db_t *db, const char *id, int64_t now) KEEL_MUST_CHECK;
/* The certificate serials of all revoked devices (for the CRL), sorted.
 * KEEL_ERR_TOO_LARGE past KEEL_FLEET_LIST_MAX. */
keel_status_t keel_fleet_revoked_serials(keel_fleet_db_t *db, char ***serials, size_t *n) KEEL_MUST_CHECK;
void keel_fleet_strv_free(char **v, size_t n);
/* A boot report: version (1..KEEL_FLEET_VERSION_MAX printable characters)
 * and security version (>= 0) now running. KEEL_ERR_NOT_FOUND for an
 * unknown or revoked device. */
keel_status_t keel_fleet_device_report_version(keel_fleet_db_t *db, const char *id, const char *version,
                                               int64_t security_version, int64_t now) KEEL_MUST_CHECK;
/* The per-device anomaly detector state (opaque UTF-8 text, at most
 * KEEL_FLEET_DETECTOR_MAX bytes); "" when none. get: KEEL_ERR_TOO_LARGE when
 * it does not fit in cap (with its NUL); both: KEEL_ERR_NOT_FOUND for an
 * unknown device. */
keel_status_t keel_fleet_detector_get(keel_fleet_db_t *db, const char *id, char *buf, size_t cap) KEEL_MUST_CHECK;
keel_status_t keel_fleet_detector_put(keel_fleet_db_t *db, const char *id, const char *text) KEEL_MUST_CHECK;

/* ---- ingest ----------------------------------------------------------------------------- */

typedef struct {
    const char *device;
    uint64_t seq;
    int64_t ts;        /* the device's time */
    int64_t received;  /* ours */
    const char *kind;  /* "telemetry", "event", "alert" */
    const char *body;  /* the "data" object's JSON text */
    size_t body_len;   /* <= KEEL_FLEET_BODY_MAX */
    uint64_t dropped;  /* the envelope's "dropped" total (0 when absent) */
} keel_fleet_msg_t;

typedef struct {
    bool duplicate;    /* (device, seq) was stored already: nothing changed */
    bool unknown;      /* no such device, or revoked: nothing stored */
    uint64_t gap_first, gap_last; /* a gap this message opened (0, 0 = none) */
    bool filled_gap;   /* it was a late message inside an open gap */
} keel_fleet_ingest_result_t;

/* Stores one message (inside the caller's transaction): drops a duplicate
 * by (device, seq); otherwise stores it, moves last_seen (and the state to
 * active), and keeps the gaps: a seq above the highest seen opens the gap
 * between; a seq inside a gap closes it (splitting it if need be; a gap
 * already settled shrinks too, so `lost` counts only what never came).
 * A seq at or below the last one an erase covered counts as a duplicate
 * (erased data does not come back with a late redelivery). An unknown or
 * revoked device is KEEL_OK with res->unknown. KEEL_ERR_ARG for seq 0 or
 * past INT64_MAX, another kind, or a body past KEEL_FLEET_BODY_MAX;
 * KEEL_ERR_FORMAT for text that is not UTF-8 without NUL. */
keel_status_t keel_fleet_ingest(keel_fleet_db_t *db, const keel_fleet_msg_t *m,
                                keel_fleet_ingest_result_t *res) KEEL_MUST_CHECK;
/* The same for m[0..n), res[i] for m[i], in one transaction (the caller's
 * or its own). Consecutive messages of one device are a run: the device's
 * row is read and written once for the run, and each message costs one
 * INSERT, so callers group a batch by device (arrival order kept within a
 * device). Any message failing the checks above fails the call before
 * anything is stored. */
keel_status_t keel_fleet_ingest_many(keel_fleet_db_t *db, const keel_fleet_msg_t *m, size_t n,
                                     keel_fleet_ingest_result_t *res) KEEL_MUST_CHECK;

/* Gaps opened before `older_than` and not yet settled: each is settled once,
 * as explained (the device reported at least that many more drops than were
 * used to explain earlier gaps) or as lost; `cb` (may be NULL) gets each
 * settled gap, after the commit when the function opened the transaction
 * itself. */
typedef void (*keel_fleet_gap_fn)(void *arg, const char *device, uint64_t first, uint64_t last, bool explained);
keel_status_t keel_fleet_gaps_settle(keel_fleet_db_t *db, int64_t older_than, keel_fleet_gap_fn cb,
                                     void *arg) KEEL_MUST_CHECK;
/* Messages stored, open gaps and lost messages (settled as lost), fleet-wide or for one device (NULL). */
typedef struct {
    uint64_t messages, open_gaps, open_missing, lost, explained;
} keel_fleet_seq_stats_t;
keel_status_t keel_fleet_seq_stats(keel_fleet_db_t *db, const char *device, keel_fleet_seq_stats_t *out) KEEL_MUST_CHECK;

/* ---- alerts --------------------------------------------------------------------------------- */

typedef struct {
    const char *kind;     /* detector kind: "rate", "size", "reconnect", "auth", "version", "tamper", "fleet", "loss", ... */
    const char *device;   /* NULL for a fleet-wide alert */
    const char *severity; /* "info", "warning", "critical" */
    const char *detail;   /* JSON object text */
    const char *dedupe;   /* unique key: the same key twice is one alert */
    int64_t time;
} keel_fleet_alert_t;

/* detail must be a JSON object's text (KEEL_ERR_FORMAT); `added` (may be
 * NULL) is false when the dedupe key was there already (KEEL_OK). */
keel_status_t keel_fleet_alert_add(keel_fleet_db_t *db, const keel_fleet_alert_t *a, bool *added) KEEL_MUST_CHECK;
/* Newest first, at most `limit` (1..10000), time >= since; kind/device filters may be NULL.
 * [{"id","time","kind","device","severity","detail":{...}}...]; id is 16 hex
 * characters (random), device is null for a fleet-wide alert. */
keel_status_t keel_fleet_alert_list(keel_fleet_db_t *db, int64_t since, const char *kind, const char *device,
                                    unsigned limit, json_t **out) KEEL_MUST_CHECK;

/* ---- releases and campaigns ------------------------------------------------------------------ */

typedef enum {
    KEEL_FLEET_CAMPAIGN_RUNNING,
    KEEL_FLEET_CAMPAIGN_PAUSED,
    KEEL_FLEET_CAMPAIGN_HALTED, /* the failure rate passed the threshold */
    KEEL_FLEET_CAMPAIGN_DONE,
} keel_fleet_campaign_state_t;

typedef struct {
    char id[KEEL_FLEET_CAMPAIGN_MAX + 1];
    char model[KEEL_FLEET_MODEL_MAX + 1];
    char version[KEEL_FLEET_VERSION_MAX + 1];
    int64_t security_version;
    char bundle_path[KEEL_PATH_MAX];
    char bundle_sha256[65];
    int64_t bundle_size;
    unsigned percent;          /* 1..100: share of the model's devices selected */
    bool security;             /* pushed at once, reported as time-to-N% */
    unsigned fail_permille;    /* halt when failed/(finished) passes this */
    keel_fleet_campaign_state_t state;
    int64_t created, updated;
} keel_fleet_campaign_t;

/* Creates the campaign (the caller fills every field; id from
 * keel_fleet_campaign_new_id, state RUNNING or PAUSED) and records its
 * (model, version, security_version) as released. KEEL_ERR_EXISTS when a
 * running or paused campaign for the same model exists (a unique index: also
 * across fleetd instances) or the id is taken. */
keel_status_t keel_fleet_campaign_create(keel_fleet_db_t *db, const keel_fleet_campaign_t *c) KEEL_MUST_CHECK;
/* A fresh campaign id: 32 lower-case hex characters from the CSPRNG. */
void keel_fleet_campaign_new_id(char out[KEEL_FLEET_CAMPAIGN_MAX + 1]);
keel_status_t keel_fleet_campaign_get(keel_fleet_db_t *db, const char *id, keel_fleet_campaign_t *out) KEEL_MUST_CHECK;
/* running <-> paused; running/paused -> halted; any -> done; halted ->
 * running/paused (resume after a halt). DONE is final: KEEL_ERR_ARG.
 * KEEL_ERR_EXISTS when resuming while another campaign of the model is
 * active; KEEL_ERR_NOT_FOUND for an unknown id. */
keel_status_t keel_fleet_campaign_set_state(keel_fleet_db_t *db, const char *id, keel_fleet_campaign_state_t s,
                                            int64_t now) KEEL_MUST_CHECK;
/* Campaigns newest first with their per-state device counts (at most
 * KEEL_FLEET_LIST_MAX): [{"id","model","version","security_version",
 * "bundle_path","bundle_sha256","bundle_size","percent","security",
 * "fail_permille","state","created","updated","counts":{...}}...] */
keel_status_t keel_fleet_campaign_list(keel_fleet_db_t *db, json_t **out) KEEL_MUST_CHECK;
/* The running campaign for `model` (at most one), KEEL_ERR_NOT_FOUND when none. */
keel_status_t keel_fleet_campaign_running(keel_fleet_db_t *db, const char *model,
                                          keel_fleet_campaign_t *out) KEEL_MUST_CHECK;
/* Per-device progress: "notified", "downloading", "installed", "confirmed", "failed", "postponed".
 * "confirmed" is final (a later report is ignored, KEEL_OK); its time is kept
 * for the counts. detail: free text (may be NULL), at most 1024 bytes. */
keel_status_t keel_fleet_campaign_device_set(keel_fleet_db_t *db, const char *campaign, const char *device,
                                             const char *state, const char *detail, int64_t now) KEEL_MUST_CHECK;
/* The state of one device in a campaign ("" when it has none). */
keel_status_t keel_fleet_campaign_device_get(keel_fleet_db_t *db, const char *campaign, const char *device,
                                             char state[16]) KEEL_MUST_CHECK;
typedef struct {
    uint64_t selected, notified, downloading, installed, confirmed, failed, postponed;
    int64_t first_confirmed, last_confirmed; /* times, 0 = none */
} keel_fleet_campaign_counts_t;
keel_status_t keel_fleet_campaign_counts(keel_fleet_db_t *db, const char *campaign,
                                         keel_fleet_campaign_counts_t *out) KEEL_MUST_CHECK;
/* Whether (model, version, security_version) was ever released through a campaign
 * or `keel fleet release add`. */
keel_status_t keel_fleet_release_add(keel_fleet_db_t *db, const char *model, const char *version,
                                     int64_t security_version, int64_t now) KEEL_MUST_CHECK;
keel_status_t keel_fleet_release_known(keel_fleet_db_t *db, const char *model, const char *version,
                                       int64_t security_version, bool *known) KEEL_MUST_CHECK;

/* ---- personal data ------------------------------------------------------------------------------ */

typedef struct {
    char id[33];          /* the erase request id (the device's, or a new one for the operator's) */
    uint64_t messages;    /* raw messages deleted */
    uint64_t gaps;        /* sequence bookkeeping deleted */
    int64_t time;
} keel_fleet_erasure_t;

/* Deletes the device's messages and gaps, rotates its pseudonym and records
 * the erasure (one transaction, opened here; or the caller's). `request_id`
 * NULL = a new id (operator); else 32 hex characters (stored lower-case).
 * `source`: "device" or "operator". The same request id twice erases again
 * (what came since), rotates again and answers with the first record (its
 * id and time; messages and gaps are the totals of both): idempotent for a
 * resent request. KEEL_ERR_EXISTS when the request id belongs to another
 * device, KEEL_ERR_NOT_FOUND for an unknown device (a revoked one can be
 * erased). Messages up to the device's last seq are not taken again. */
keel_status_t keel_fleet_erase(keel_fleet_db_t *db, const char *device, const char *request_id,
                               const char *source, int64_t now, keel_fleet_erasure_t *out) KEEL_MUST_CHECK;
/* Everything held about one device: its registry record, messages, alerts,
 * campaign history and erasures, as one JSON object:
 * {"format":"keel-fleet-export-1","device":{... incl. pseudonym, org,
 * certificate, detector},"messages":[{"seq","ts","received","kind","data"}],
 * "gaps":[...],"alerts":[...],"campaigns":[...],"erasures":[...],
 * "aggregates":[... under its current pseudonym]}. KEEL_ERR_TOO_LARGE past
 * KEEL_FLEET_EXPORT_MESSAGES_MAX messages or KEEL_FLEET_EXPORT_BYTES_MAX
 * bytes of bodies (or KEEL_FLEET_LIST_MAX alerts). */
keel_status_t keel_fleet_export(keel_fleet_db_t *db, const char *device, json_t **out) KEEL_MUST_CHECK;

/* Ages in seconds, against our receive time; 0 or less = kept forever. */
typedef struct {
    int64_t raw_s;       /* raw messages older than this are aggregated, then deleted (and settled gaps) */
    int64_t aggregate_s; /* daily aggregates older than this are deleted */
    int64_t alert_s;     /* alerts older than this are deleted */
} keel_fleet_retention_t;
typedef struct {
    uint64_t aggregated, deleted_messages, deleted_aggregates, deleted_alerts;
} keel_fleet_retention_stats_t;
/* One transaction, opened here (or the caller's). */
keel_status_t keel_fleet_retention_run(keel_fleet_db_t *db, const keel_fleet_retention_t *r, int64_t now,
                                       keel_fleet_retention_stats_t *out) KEEL_MUST_CHECK;
/* Daily aggregates: [{"pseudonym","day","kind","messages","bytes"}...] (analytics, 6-8).
 * day: the UTC midnight (Unix seconds) of the messages' receive time;
 * day >= since_day; sorted by day, pseudonym, kind; KEEL_ERR_TOO_LARGE past
 * KEEL_FLEET_LIST_MAX rows. */
keel_status_t keel_fleet_aggregates(keel_fleet_db_t *db, int64_t since_day, json_t **out) KEEL_MUST_CHECK;

#endif

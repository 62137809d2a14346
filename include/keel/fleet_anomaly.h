/*
 * keel/fleet_anomaly.h - keel-fleetd's telemetry anomaly detectors
 * (EN 303 645 5.10-1: examine telemetry for security anomalies).
 *
 * A pure module: no I/O, no clock, no allocation. The caller passes every
 * observation (one message of a device, with its receive time) and the
 * state it keeps; the detectors return alerts. Per device the state is a
 * fixed-size struct that fleetd stores as text between messages
 * (keel_fleet_detector_get/put, at most 4 KiB); the fleet-wide state lives
 * in fleetd's memory and is advanced once a minute by
 * keel_fleet_anomaly_fleet_tick. Each observation costs O(1).
 *
 * Detectors (docs/internals/fleet-anomaly.md has the why and the limits):
 *   rate       payload messages in the last hour far above the device's own
 *              baseline (telemetry, events except auth-failures, alerts)
 *   size       a payload far larger than the device's telemetry baseline and
 *              than the largest payload it sent normally of late
 *   reconnect  connections (state messages) in the last hour above a floor
 *              and above the device's own baseline
 *   auth       failed local logins reported in the last auth window
 *   version    a boot into a release the fleet never released, or a
 *              security version below the one the device booted before
 *   tamper     a tamper alert from the device
 *   fleet      a sudden fleet-wide shift of the message rate or of the
 *              number of devices that start reporting auth failures, against
 *              a time-of-day baseline
 *
 * Alerts and incidents: an anomaly that goes on is one incident; its alert
 * is returned once, when it opens, with a dedupe key that names the kind,
 * the device and the incident's start (deterministic: a replay of the same
 * messages gives the same key, and fleet_store's dedupe collapses it). An
 * incident ends after `incident_gap_s` without a new hit; the next hit opens
 * a new incident, a new key. Version alerts are keyed by what they report
 * (the release, or the security-version pair), so the same rollback seen at
 * every boot stays one alert.
 */
#ifndef KEEL_FLEET_ANOMALY_H
#define KEEL_FLEET_ANOMALY_H

#include "keel/base.h"
#include "keel/config.h"

#include <stdbool.h>
#include <stdint.h>

#define KEEL_FLEET_ANOMALY_ID_MAX 128     /* device id, as KEEL_FLEET_ID_MAX */
#define KEEL_FLEET_ANOMALY_VERSION_MAX 64 /* as KEEL_FLEET_VERSION_MAX */
#define KEEL_FLEET_ANOMALY_DETAIL_MAX 512 /* alert detail, JSON object text with its NUL */
#define KEEL_FLEET_ANOMALY_DEDUPE_MAX 256 /* dedupe key with its NUL */
/* Largest state text keel_fleet_anomaly_state_format writes (with its NUL);
 * the store allows 4 KiB. */
#define KEEL_FLEET_ANOMALY_STATE_TEXT_MAX 1024
/* Alerts one observation can produce; alerts_out needs room for this many. */
#define KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX 4
/* Alerts one fleet tick can produce (one per fleet metric). */
#define KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX 2

/* ---- configuration ([anomaly] of fleetd's configuration) --------------------------------- */

typedef struct {
    uint32_t warmup_messages;       /* payload messages before a device's baselines count (30) */
    uint32_t warmup_s;              /* and seconds since its first message: a day's cycle (86400) */
    uint32_t baseline_half_life_s;  /* per-device rate and reconnect baselines (86400) */
    uint32_t offline_s;             /* silence longer than this is "offline", not "zero rate" (7200) */
    uint32_t late_s;                /* a backlog message is older than this (envelope ts) (120) */
    uint32_t backlog_drain_s;       /* after a silence, backlog is credited this long (900) */
    uint32_t incident_gap_s;        /* quiet time that ends an incident (3600) */
    uint32_t rate_factor;           /* messages/hour above factor x baseline ... (5) */
    uint32_t rate_min_per_hour;     /* ... and at least this many (30) */
    uint32_t size_z;                /* ln(size) this many deviations above the mean ... (6) */
    uint32_t size_min_bytes;        /* ... and this many bytes above the typical size (1024) */
    uint32_t size_window;           /* messages the size baseline averages over (200) */
    uint32_t size_max_factor;       /* ... and this many times the largest normal payload lately (2) */
    uint32_t reconnect_per_hour;    /* connections in the last hour above this ... (12) */
    uint32_t reconnect_factor;      /* ... and above factor x baseline (4) */
    uint32_t auth_failures;         /* failed logins in the auth window (20) */
    uint32_t auth_window_s;         /* (3600) */
    uint32_t fleet_factor_pct;      /* fleet window count above pct/100 x expected ... (125) */
    uint32_t fleet_z;               /* ... and z x sqrt(expected) + fleet_min above it (6) */
    uint32_t fleet_min;             /* (10) */
    uint32_t fleet_window_min;      /* minutes summed per test, 1..15 (5) */
    uint32_t fleet_sustain_min;     /* consecutive minutes the test must hold (3) */
    uint32_t fleet_level_half_life_min;    /* level correction of the profile (120) */
    uint32_t fleet_profile_half_life_days; /* the time-of-day profile across days (2) */
} keel_fleet_anomaly_config_t;

/* The defaults above. */
void keel_fleet_anomaly_config_default(keel_fleet_anomaly_config_t *cfg);
/* KEEL_ERR_CONFIG naming the first setting out of its range. */
keel_status_t keel_fleet_anomaly_config_check(const keel_fleet_anomaly_config_t *cfg) KEEL_MUST_CHECK;
/* The [anomaly] keys for keel_config_load (fleetd appends them to its schema):
 * the same names as the fields, the defaults above, the ranges config_check
 * enforces. *n gets the number of entries. */
const keel_cfg_key_t *keel_fleet_anomaly_config_schema(size_t *n);
/* Reads the [anomaly] keys of a configuration loaded with that schema. */
keel_status_t keel_fleet_anomaly_config_read(const keel_config_t *c, keel_fleet_anomaly_config_t *cfg) KEEL_MUST_CHECK;

/* ---- observations and alerts ----------------------------------------------------------- */

typedef enum {
    KEEL_FLEET_OBS_TELEMETRY,
    KEEL_FLEET_OBS_EVENT,
    KEEL_FLEET_OBS_ALERT,
    KEEL_FLEET_OBS_STATE, /* keel/v1/<id>/state: one connection */
} keel_fleet_obs_kind_t;

typedef enum {
    KEEL_FLEET_EV_NONE, /* telemetry, state, or a type the detectors do not read */
    KEEL_FLEET_EV_BOOT,
    KEEL_FLEET_EV_UPDATE,
    KEEL_FLEET_EV_AUTH_FAILURES,
    KEEL_FLEET_EV_ERASE_REQUEST,
    KEEL_FLEET_EV_TAMPER, /* an alert of type "tamper" */
} keel_fleet_obs_event_t;

typedef struct {
    const char *device;       /* registered id, 1..KEEL_FLEET_ANOMALY_ID_MAX bytes */
    int64_t time;             /* the fleet's receive time (Unix s): all timing is on this */
    int64_t device_time;      /* the envelope's ts; 0 = none (taken as `time`) */
    keel_fleet_obs_kind_t kind;
    keel_fleet_obs_event_t event;
    uint64_t size;            /* bytes of the "data" JSON text (0 for state) */
    uint64_t auth_failures;   /* auth-failures: count */
    const char *version;      /* boot: the version (NULL = the version check is skipped) */
    int64_t security_version; /* boot: -1 = none */
    bool release_known;       /* boot: keel_fleet_release_known(model, version, security_version) */
} keel_fleet_anomaly_obs_t;

typedef enum {
    KEEL_FLEET_ANOMALY_RATE,
    KEEL_FLEET_ANOMALY_SIZE,
    KEEL_FLEET_ANOMALY_RECONNECT,
    KEEL_FLEET_ANOMALY_AUTH,
    KEEL_FLEET_ANOMALY_VERSION,
    KEEL_FLEET_ANOMALY_TAMPER,
    KEEL_FLEET_ANOMALY_FLEET,
} keel_fleet_anomaly_kind_t;
#define KEEL_FLEET_ANOMALY_KINDS 7

typedef struct {
    keel_fleet_anomaly_kind_t kind;
    const char *severity;                         /* "warning" or "critical" (static) */
    double score;                                 /* statistic / its threshold (>= 1) */
    int64_t time;
    char device[KEEL_FLEET_ANOMALY_ID_MAX + 1];   /* "" for a fleet alert */
    char detail[KEEL_FLEET_ANOMALY_DETAIL_MAX];   /* JSON object text */
    char dedupe[KEEL_FLEET_ANOMALY_DEDUPE_MAX];
} keel_fleet_anomaly_alert_t;

/* "rate", "size", "reconnect", "auth", "version", "tamper", "fleet" (the
 * kinds of keel_fleet_alert_t); "?" for anything else. */
const char *keel_fleet_anomaly_kind_str(keel_fleet_anomaly_kind_t kind);

/* ---- per-device state ----------------------------------------------------------------- */

typedef struct {
    int64_t since, last; /* start of the open incident and its latest hit; since 0 = none */
} keel_fleet_anomaly_incident_t;

/* Kinds with incidents on a device: rate, size, reconnect, auth, tamper. */
#define KEEL_FLEET_ANOMALY_DEVICE_INCIDENTS 5

typedef struct {
    int64_t first, last;     /* receive times of the first and latest observation; 0 = none */
    uint64_t messages;       /* payload messages seen (warm-up) */
    double norm;             /* decayed seconds of being online (baseline half-life) */
    double rate_fast;        /* payload messages, decayed over an hour */
    double rate_slow;        /* the same over the baseline half-life */
    int64_t credit_s;        /* backlog: messages this old are credited as late ... */
    int64_t credit_until;    /* ... until this time */
    double size_n;           /* telemetry sizes seen (saturates) */
    double size_mean, size_var; /* of ln(bytes), EWMA */
    double size_max;         /* ln(bytes) of the largest normal telemetry, decaying to the mean */
    double conn_fast, conn_slow; /* connections, as rate_* */
    double auth;             /* failed logins, decayed over the auth window */
    int64_t security_version; /* of the last boot; -1 = none */
    char version[KEEL_FLEET_ANOMALY_VERSION_MAX + 1]; /* of the last boot; "" = none */
    keel_fleet_anomaly_incident_t incident[KEEL_FLEET_ANOMALY_DEVICE_INCIDENTS];
} keel_fleet_anomaly_device_t;

/* A device never seen (what an empty detector text stands for). */
void keel_fleet_anomaly_device_init(keel_fleet_anomaly_device_t *d);
/*
 * Writes the state as text (one line of printable ASCII, "kfa1 ..."), at most
 * KEEL_FLEET_ANOMALY_STATE_TEXT_MAX bytes with its NUL. KEEL_ERR_TOO_LARGE
 * when cap is smaller than what it needs, KEEL_ERR_ARG for a state that is
 * not one (NaN, negative counts).
 */
keel_status_t keel_fleet_anomaly_device_format(const keel_fleet_anomaly_device_t *d, char *buf,
                                               size_t cap) KEEL_MUST_CHECK;
/*
 * Reads the text back, strictly: "" (no state yet) gives a fresh state and
 * KEEL_OK. Anything else must be exactly what format writes (this version,
 * every field, in range); otherwise *d is a fresh state, the baseline of the
 * device starts over, and the status says why: KEEL_ERR_TOO_LARGE (longer
 * than KEEL_FLEET_ANOMALY_STATE_TEXT_MAX), KEEL_ERR_FORMAT (anything else),
 * with an error message "anomaly state of <device> reset: <why>". `device`
 * is for that message only (may be NULL). `len` is the text's length (it
 * need not be NUL-terminated).
 */
keel_status_t keel_fleet_anomaly_device_parse(const char *text, size_t len, const char *device,
                                              keel_fleet_anomaly_device_t *d) KEEL_MUST_CHECK;

/* ---- fleet-wide state --------------------------------------------------------------------- */

#define KEEL_FLEET_ANOMALY_FLEET_METRICS 2 /* payload messages, devices starting to report auth failures */
#define KEEL_FLEET_ANOMALY_SLOTS 48        /* time-of-day profile: half hours (UTC) */
#define KEEL_FLEET_ANOMALY_WINDOW_MAX 15   /* fleet_window_min's maximum */

typedef struct {
    int64_t started;     /* first tick; 0 = none */
    int64_t last_tick;   /* minute boundary (Unix s) of the latest tick */
    int64_t hold_until;  /* after a gap in the ticks: neither alerts nor learning until then */
    uint64_t open[KEEL_FLEET_ANOMALY_FLEET_METRICS]; /* counts since last_tick */
    /* the last fleet_window_min closed minutes: counts and what was expected */
    double win_count[KEEL_FLEET_ANOMALY_FLEET_METRICS][KEEL_FLEET_ANOMALY_WINDOW_MAX];
    double win_expect[KEEL_FLEET_ANOMALY_FLEET_METRICS][KEEL_FLEET_ANOMALY_WINDOW_MAX];
    unsigned win_pos, win_fill;
    /* mean count per minute in each half hour, learnt across days */
    double profile[KEEL_FLEET_ANOMALY_FLEET_METRICS][KEEL_FLEET_ANOMALY_SLOTS];
    bool profile_set[KEEL_FLEET_ANOMALY_FLEET_METRICS][KEEL_FLEET_ANOMALY_SLOTS];
    /* the half hour being summed: its index, minutes and counts */
    int slot;
    double slot_minutes[KEEL_FLEET_ANOMALY_FLEET_METRICS], slot_sum[KEEL_FLEET_ANOMALY_FLEET_METRICS];
    /* level = num / den: recent counts over what the profile expected for
     * them (EWMA), the fleet's drift from the profile (growth, a weekday) */
    double level_num[KEEL_FLEET_ANOMALY_FLEET_METRICS], level_den[KEEL_FLEET_ANOMALY_FLEET_METRICS];
    unsigned streak[KEEL_FLEET_ANOMALY_FLEET_METRICS];
    keel_fleet_anomaly_incident_t incident[KEEL_FLEET_ANOMALY_FLEET_METRICS];
} keel_fleet_anomaly_fleet_t;

void keel_fleet_anomaly_fleet_init(keel_fleet_anomaly_fleet_t *f);

/* ---- the detectors ---------------------------------------------------------------------- */

/*
 * Feeds one observation of o->device: updates *dev (and, when fleet is not
 * NULL, the fleet's open-minute counts) and writes the alerts it raises to
 * alerts_out (room for `cap`, which must be at least
 * KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX), their number to *n_out. Observations
 * should come in receive-time order; an earlier time than the state's latest
 * counts as the same instant. KEEL_ERR_ARG for NULL pointers, a cap too small,
 * an empty or overlong device id, or an unknown kind; then nothing changed.
 */
keel_status_t keel_fleet_anomaly_observe(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_device_t *dev,
                                         keel_fleet_anomaly_fleet_t *fleet, const keel_fleet_anomaly_obs_t *o,
                                         keel_fleet_anomaly_alert_t *alerts_out, size_t cap,
                                         size_t *n_out) KEEL_MUST_CHECK;

/*
 * Closes the minutes up to `now` (once a minute, on fleetd's timer): the
 * counts since the last tick are the closed minute(s), tested against the
 * profile and then learnt. Ticks more than 5 minutes apart (fleetd was down:
 * what queued meanwhile arrives as a burst) start a hold of one window during
 * which nothing is tested or learnt. The first day is the warm-up: no alert
 * until every half hour of the profile has been seen. Alerts as observe
 * (cap >= KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX).
 */
keel_status_t keel_fleet_anomaly_fleet_tick(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_fleet_t *f,
                                            int64_t now, keel_fleet_anomaly_alert_t *alerts_out, size_t cap,
                                            size_t *n_out) KEEL_MUST_CHECK;

#endif

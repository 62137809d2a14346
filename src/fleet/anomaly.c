/*
 * keel-fleetd's telemetry anomaly detectors (keel/fleet_anomaly.h, 5.10-1).
 * Pure: time comes from the caller, state is the caller's, nothing is
 * allocated. See docs/internals/fleet-anomaly.md.
 */
#include "keel/fleet_anomaly.h"

#include "keel/fleet_store.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(KEEL_FLEET_ANOMALY_ID_MAX == KEEL_FLEET_ID_MAX, "device ids as the store's");
_Static_assert(KEEL_FLEET_ANOMALY_VERSION_MAX == KEEL_FLEET_VERSION_MAX, "versions as the store's");
_Static_assert(KEEL_FLEET_ANOMALY_STATE_TEXT_MAX <= 4096, "the store keeps at most 4 KiB of detector state");

/* The fast counters (rate, reconnect) decay with this time constant: their
 * value is about "in the last hour", the unit of every threshold. */
#define HOUR_S 3600.0
/* ln(size) deviations never count as smaller than this: a device that always
 * sends the same number of bytes would otherwise alert on one byte more. */
#define SIZE_SD_FLOOR 0.1
/* The largest normal payload is forgotten with a half-life of a week: a
 * daily or weekly status report of the product stays normal. */
#define SIZE_MAX_TAU_S (7.0 * 86400.0 / 0.69314718055994530942)
/* Telemetry sizes before the size baseline is tested against. */
#define SIZE_WARMUP 10.0
/* A tamper flag is re-sent at every boot; one a day is the same incident. */
#define TAMPER_GAP_S 86400
/* Ticks further apart than this: fleetd was away. */
#define FLEET_GAP_MIN 5
/* A profile half hour is learnt only from at least this many usable minutes. */
#define FLEET_SLOT_MIN_MINUTES 10.0
#define SLOT_S (86400 / KEEL_FLEET_ANOMALY_SLOTS)
_Static_assert(86400 % KEEL_FLEET_ANOMALY_SLOTS == 0, "a slot is a whole number of seconds");
/* Hysteresis of the decaying statistics (rate, reconnect, auth): an
 * incident clears only once its statistic fell below this share of its
 * threshold (incident_keep). */
#define CLEAR_SHARE 0.5
/* Reported counts are clamped here, so that no double loses its sense. */
#define COUNT_CLAMP 1e9
/* Bounds of the state text: times up to year 36812, counts to 1e15. */
#define TIME_MAX ((int64_t)1 << 40)
#define DOUBLE_MAX 1e15
#define LN2 0.69314718055994530942

static const char *const kind_names[KEEL_FLEET_ANOMALY_KINDS] = {"rate",    "size",   "reconnect", "auth",
                                                                 "version", "tamper", "fleet"};
static const char *const metric_names[KEEL_FLEET_ANOMALY_FLEET_METRICS] = {"messages", "auth_devices"};

/* Device incidents, in keel_fleet_anomaly_device_t.incident. */
enum { INC_RATE, INC_SIZE, INC_RECONNECT, INC_AUTH, INC_TAMPER };
_Static_assert(INC_TAMPER + 1 == KEEL_FLEET_ANOMALY_DEVICE_INCIDENTS, "one incident slot per kind");

const char *keel_fleet_anomaly_kind_str(keel_fleet_anomaly_kind_t kind)
{
    return (unsigned)kind < KEEL_FLEET_ANOMALY_KINDS ? kind_names[kind] : "?";
}

/* ---- configuration ---------------------------------------------------------------------------- */

/* name, default, min, max: one list for the defaults, the range check and the schema. */
#define ANOMALY_KEYS(X)                                                                                           \
    X(warmup_messages, 30, 1, 100000)                                                                             \
    X(warmup_s, 86400, 0, 2592000)                                                                                \
    X(baseline_half_life_s, 86400, 3600, 2592000)                                                                 \
    X(offline_s, 7200, 60, 604800)                                                                                \
    X(late_s, 120, 1, 86400)                                                                                      \
    X(backlog_drain_s, 900, 0, 86400)                                                                             \
    X(incident_gap_s, 3600, 60, 604800)                                                                           \
    X(rate_factor, 5, 2, 1000)                                                                                    \
    X(rate_min_per_hour, 30, 1, 1000000)                                                                          \
    X(size_z, 6, 2, 100)                                                                                          \
    X(size_min_bytes, 1024, 0, 1048576)                                                                           \
    X(size_window, 200, 10, 100000)                                                                               \
    X(size_max_factor, 2, 1, 100)                                                                                 \
    X(reconnect_per_hour, 12, 1, 100000)                                                                          \
    X(reconnect_factor, 4, 1, 1000)                                                                               \
    X(auth_failures, 20, 1, 1000000)                                                                              \
    X(auth_window_s, 3600, 60, 604800)                                                                            \
    X(fleet_factor_pct, 125, 101, 10000)                                                                          \
    X(fleet_z, 6, 1, 100)                                                                                         \
    X(fleet_min, 10, 0, 1000000)                                                                                  \
    X(fleet_window_min, 5, 1, KEEL_FLEET_ANOMALY_WINDOW_MAX)                                                      \
    X(fleet_sustain_min, 3, 1, 60)                                                                                \
    X(fleet_level_half_life_min, 120, 1, 10080)                                                                   \
    X(fleet_profile_half_life_days, 2, 1, 60)

#define STR_(x) #x
#define STR(x) STR_(x)
#define SCHEMA_ENTRY(name, def, lo, hi) {"anomaly", #name, KEEL_CFG_UINT, STR(def), lo, hi},
static const keel_cfg_key_t schema[] = {ANOMALY_KEYS(SCHEMA_ENTRY)};

void keel_fleet_anomaly_config_default(keel_fleet_anomaly_config_t *cfg)
{
    if (cfg == NULL)
        return;
#define DEFAULT_ENTRY(name, def, lo, hi) cfg->name = (def);
    ANOMALY_KEYS(DEFAULT_ENTRY)
#undef DEFAULT_ENTRY
}

keel_status_t keel_fleet_anomaly_config_check(const keel_fleet_anomaly_config_t *cfg)
{
    if (cfg == NULL)
        return keel_errorf(KEEL_ERR_ARG, "anomaly config: NULL");
#define CHECK_ENTRY(name, def, lo, hi)                                                                            \
    if ((uint64_t)cfg->name < (uint64_t)(lo) || (uint64_t)cfg->name > (uint64_t)(hi))                             \
        return keel_errorf(KEEL_ERR_CONFIG, "[anomaly] %s = %" PRIu32 ": not in [%llu, %llu]", #name, cfg->name, \
                           (unsigned long long)(lo), (unsigned long long)(hi));
    ANOMALY_KEYS(CHECK_ENTRY)
#undef CHECK_ENTRY
    return KEEL_OK;
}

const keel_cfg_key_t *keel_fleet_anomaly_config_schema(size_t *n)
{
    if (n != NULL)
        *n = sizeof schema / sizeof schema[0];
    return schema;
}

keel_status_t keel_fleet_anomaly_config_read(const keel_config_t *c, keel_fleet_anomaly_config_t *cfg)
{
    if (c == NULL || cfg == NULL)
        return keel_errorf(KEEL_ERR_ARG, "anomaly config: NULL");
#define READ_ENTRY(name, def, lo, hi)                                                                             \
    {                                                                                                             \
        uint64_t v = keel_config_uint(c, "anomaly", #name);                                                       \
        cfg->name = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;                                                    \
    }
    ANOMALY_KEYS(READ_ENTRY)
#undef READ_ENTRY
    return keel_fleet_anomaly_config_check(cfg);
}

/* ---- alerts ----------------------------------------------------------------------------------- */

typedef struct {
    keel_fleet_anomaly_alert_t *out;
    size_t cap, n;
} sink_t;

/* The next alert slot, its common fields filled. NULL only when the caller's
 * array is full, which the cap checks at the entry points rule out. */
static keel_fleet_anomaly_alert_t *sink_next(sink_t *s, keel_fleet_anomaly_kind_t kind, const char *device,
                                             int64_t t, double score, bool critical)
{
    if (s->n >= s->cap)
        return NULL;
    keel_fleet_anomaly_alert_t *a = &s->out[s->n];
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->time = t;
    a->score = score;
    a->severity = critical ? "critical" : "warning";
    if (device != NULL && keel_strlcpy(a->device, device, sizeof a->device) != KEEL_OK)
        return NULL;
    return a;
}

/* Counts the alert once its texts are written; a text that does not fit (the
 * caps are sized for the longest id and version, so never) drops it. */
static keel_status_t sink_commit(sink_t *s, keel_status_t detail_st, keel_status_t key_st)
{
    if (detail_st != KEEL_OK || key_st != KEEL_OK)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly alert: detail or key does not fit");
    s->n++;
    return KEEL_OK;
}

/*
 * A hit of a detector with incidents: extends the open incident when the
 * previous hit is at most `gap` ago, or opens a new one. Returns true when it
 * opened one (the alert is due).
 */
static bool incident_hit(keel_fleet_anomaly_incident_t *inc, int64_t t, int64_t gap)
{
    if (inc->since != 0 && t - inc->last <= gap) {
        if (t > inc->last)
            inc->last = t;
        return false;
    }
    inc->since = t;
    inc->last = t;
    return true;
}

/*
 * Hysteresis for the decaying statistics (rate, reconnect, auth), called on
 * every observation before the hit test with the statistic as it decayed to
 * t (`above`: it is at least CLEAR_SHARE of the threshold) and the time of
 * the device's previous observation. An incident stays alive while its
 * statistic has not cleared: between two observations it only decays, so
 * being above now means it was above all along. A flood that hovers about
 * its threshold, or a report that finds the tail of a brute force still
 * counted hours later, stays one incident.
 */
static void incident_keep(keel_fleet_anomaly_incident_t *inc, int64_t t, int64_t prev, int64_t gap, bool above)
{
    if (inc->since == 0 || !above)
        return;
    if (t - inc->last <= gap || inc->last >= prev)
        inc->last = t > inc->last ? t : inc->last;
}

/* Whether an incident is open at t. Its messages teach the baselines at a
 * fraction of their weight: a flood must not become the device's normal
 * within the hour, a lasting change of the product is still learnt. */
static bool in_incident(const keel_fleet_anomaly_config_t *cfg, const keel_fleet_anomaly_incident_t *inc, int64_t t)
{
    return inc->since != 0 && t - inc->last <= (int64_t)cfg->incident_gap_s;
}

/* ---- per-device state ------------------------------------------------------------------------- */

void keel_fleet_anomaly_device_init(keel_fleet_anomaly_device_t *d)
{
    if (d == NULL)
        return;
    memset(d, 0, sizeof *d);
    d->security_version = -1;
}

/* Versions are kept and put into keys only in this alphabet (SemVer's). */
static bool version_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' ||
           c == '+' || c == '_';
}

/* The device's version as kept: itself when it is short and plain, else "?" */
static void version_sanitize(const char *v, char out[KEEL_FLEET_ANOMALY_VERSION_MAX + 1])
{
    size_t n = strnlen(v, KEEL_FLEET_ANOMALY_VERSION_MAX + 1);
    bool ok = n > 0 && n <= KEEL_FLEET_ANOMALY_VERSION_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = version_char(v[i]);
    if (!ok) {
        out[0] = '?';
        out[1] = '\0';
        return;
    }
    memcpy(out, v, n);
    out[n] = '\0';
}

static bool device_id_ok(const char *id)
{
    size_t n = strnlen(id, KEEL_FLEET_ANOMALY_ID_MAX + 1);
    if (n == 0 || n > KEEL_FLEET_ANOMALY_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (id[i] < 0x21 || id[i] > 0x7e || id[i] == '"' || id[i] == '\\')
            return false;
    return true;
}

static bool finite_in(double x, double lo, double hi)
{
    return isfinite(x) && x >= lo && x <= hi;
}

static bool device_sane(const keel_fleet_anomaly_device_t *d)
{
    if (d->first < 0 || d->first > TIME_MAX || d->last < d->first || d->last > TIME_MAX ||
        (d->first == 0 && d->last != 0))
        return false;
    if (d->credit_s < 0 || d->credit_s > TIME_MAX || d->credit_until < 0 || d->credit_until > TIME_MAX)
        return false;
    if (!finite_in(d->norm, 0, DOUBLE_MAX) || !finite_in(d->rate_fast, 0, DOUBLE_MAX) ||
        !finite_in(d->rate_slow, 0, DOUBLE_MAX) || !finite_in(d->size_n, 0, DOUBLE_MAX) ||
        !finite_in(d->size_mean, 0, 64) || !finite_in(d->size_var, 0, 4096) || !finite_in(d->size_max, 0, 64) ||
        !finite_in(d->conn_fast, 0, DOUBLE_MAX) || !finite_in(d->conn_slow, 0, DOUBLE_MAX) ||
        !finite_in(d->auth, 0, DOUBLE_MAX))
        return false;
    if (d->security_version < -1 || d->messages > (uint64_t)DOUBLE_MAX)
        return false;
    for (size_t i = 0; i < KEEL_FLEET_ANOMALY_DEVICE_INCIDENTS; i++) {
        const keel_fleet_anomaly_incident_t *inc = &d->incident[i];
        if (inc->since < 0 || inc->since > TIME_MAX || inc->last < inc->since || inc->last > TIME_MAX ||
            (inc->since == 0 && inc->last != 0))
            return false;
    }
    size_t vn = strnlen(d->version, sizeof d->version);
    if (vn == sizeof d->version)
        return false;
    for (size_t i = 0; i < vn; i++)
        if (!version_char(d->version[i]) && !(vn == 1 && d->version[0] == '?'))
            return false;
    return true;
}

#define STATE_MAGIC "kfa1"
/* Empty version in the text (not in the version alphabet). */
#define STATE_NO_VERSION "*"
/* magic, 2 times, messages, 3 doubles, 2 times, 4 doubles, 3 doubles, sv,
 * 2 per incident, version */
#define STATE_FIELDS (1 + 2 + 1 + 3 + 2 + 4 + 3 + 1 + 2 * KEEL_FLEET_ANOMALY_DEVICE_INCIDENTS + 1)

keel_status_t keel_fleet_anomaly_device_format(const keel_fleet_anomaly_device_t *d, char *buf, size_t cap)
{
    if (d == NULL || buf == NULL || cap == 0)
        return keel_errorf(KEEL_ERR_ARG, "anomaly state: NULL");
    buf[0] = '\0';
    if (!device_sane(d))
        return keel_errorf(KEEL_ERR_ARG, "anomaly state: not a valid state");
    /* %.17g: doubles read back bit for bit. */
    int n = snprintf(buf, cap,
                     STATE_MAGIC " %" PRId64 " %" PRId64 " %" PRIu64 " %.17g %.17g %.17g %" PRId64 " %" PRId64
                                 " %.17g %.17g %.17g %.17g %.17g %.17g %.17g %" PRId64,
                     d->first, d->last, d->messages, d->norm, d->rate_fast, d->rate_slow, d->credit_s,
                     d->credit_until, d->size_n, d->size_mean, d->size_var, d->size_max, d->conn_fast,
                     d->conn_slow, d->auth,
                     d->security_version);
    size_t used = n < 0 ? cap : (size_t)n;
    for (size_t i = 0; i < KEEL_FLEET_ANOMALY_DEVICE_INCIDENTS && used < cap; i++) {
        n = snprintf(buf + used, cap - used, " %" PRId64 " %" PRId64, d->incident[i].since, d->incident[i].last);
        used = n < 0 ? cap : used + (size_t)n;
    }
    if (used < cap) {
        n = snprintf(buf + used, cap - used, " %s", d->version[0] != '\0' ? d->version : STATE_NO_VERSION);
        used = n < 0 ? cap : used + (size_t)n;
    }
    if (used >= cap || used >= KEEL_FLEET_ANOMALY_STATE_TEXT_MAX) {
        buf[0] = '\0';
        return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly state: needs %zu bytes, have %zu", used + 1, cap);
    }
    return KEEL_OK;
}

/* Strict numbers: what format writes, nothing strtoll/strtod would also take
 * (spaces, hex, inf, nan). */
static bool parse_i64(const char *s, int64_t *out)
{
    const char *p = s + (*s == '-');
    if (*p == '\0' || strspn(p, "0123456789") != strlen(p) || strlen(p) > 19)
        return false;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == NULL || *end != '\0')
        return false;
    *out = (int64_t)v;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    if (*s == '\0' || strspn(s, "0123456789") != strlen(s) || strlen(s) > 20)
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == NULL || *end != '\0')
        return false;
    *out = (uint64_t)v;
    return true;
}

static bool parse_double(const char *s, double *out)
{
    if (*s == '\0' || strspn(s, "0123456789.eE+-") != strlen(s) || strlen(s) > 32)
        return false;
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    /* ERANGE on underflow is taken: format writes a subnormal (a counter
     * decayed over a long silence) and strtod reads it back exactly. */
    if ((errno != 0 && !(errno == ERANGE && fabs(v) < DBL_MIN)) || end == NULL || *end != '\0' || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static keel_status_t state_reset(keel_fleet_anomaly_device_t *d, keel_status_t st, const char *device,
                                 const char *why)
{
    keel_fleet_anomaly_device_init(d);
    return keel_errorf(st, "anomaly state of %s reset: %s",
                       device != NULL && device_id_ok(device) ? device : "a device", why);
}

keel_status_t keel_fleet_anomaly_device_parse(const char *text, size_t len, const char *device,
                                              keel_fleet_anomaly_device_t *d)
{
    if (d == NULL || (text == NULL && len > 0))
        return keel_errorf(KEEL_ERR_ARG, "anomaly state: NULL");
    keel_fleet_anomaly_device_init(d);
    if (len == 0)
        return KEEL_OK;
    if (len >= KEEL_FLEET_ANOMALY_STATE_TEXT_MAX)
        return state_reset(d, KEEL_ERR_TOO_LARGE, device, "longer than its cap");
    char buf[KEEL_FLEET_ANOMALY_STATE_TEXT_MAX];
    memcpy(buf, text, len);
    buf[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return state_reset(d, KEEL_ERR_FORMAT, device, "not printable text");

    char *tok[STATE_FIELDS];
    size_t nt = 0;
    char *p = buf;
    for (;;) {
        char *sp = strchr(p, ' ');
        if (nt == STATE_FIELDS)
            return state_reset(d, KEEL_ERR_FORMAT, device, "too many fields");
        tok[nt++] = p;
        if (sp == NULL)
            break;
        *sp = '\0';
        p = sp + 1;
    }
    if (nt != STATE_FIELDS)
        return state_reset(d, KEEL_ERR_FORMAT, device, "too few fields");
    if (strcmp(tok[0], STATE_MAGIC) != 0)
        return state_reset(d, KEEL_ERR_FORMAT, device, "not a state of this version");

    keel_fleet_anomaly_device_t s;
    keel_fleet_anomaly_device_init(&s);
    size_t k = 1;
    bool ok = parse_i64(tok[k++], &s.first) && parse_i64(tok[k++], &s.last) && parse_u64(tok[k++], &s.messages) &&
              parse_double(tok[k++], &s.norm) && parse_double(tok[k++], &s.rate_fast) &&
              parse_double(tok[k++], &s.rate_slow) && parse_i64(tok[k++], &s.credit_s) &&
              parse_i64(tok[k++], &s.credit_until) && parse_double(tok[k++], &s.size_n) &&
              parse_double(tok[k++], &s.size_mean) && parse_double(tok[k++], &s.size_var) &&
              parse_double(tok[k++], &s.size_max) &&
              parse_double(tok[k++], &s.conn_fast) && parse_double(tok[k++], &s.conn_slow) &&
              parse_double(tok[k++], &s.auth) && parse_i64(tok[k++], &s.security_version);
    for (size_t i = 0; ok && i < KEEL_FLEET_ANOMALY_DEVICE_INCIDENTS; i++)
        ok = parse_i64(tok[k++], &s.incident[i].since) && parse_i64(tok[k++], &s.incident[i].last);
    if (!ok)
        return state_reset(d, KEEL_ERR_FORMAT, device, "a field is not a number");
    const char *v = tok[k];
    if (strcmp(v, STATE_NO_VERSION) != 0) {
        if (keel_strlcpy(s.version, v, sizeof s.version) != KEEL_OK)
            return state_reset(d, KEEL_ERR_FORMAT, device, "version too long");
        if (s.version[0] == '\0')
            return state_reset(d, KEEL_ERR_FORMAT, device, "empty version");
    }
    if (!device_sane(&s))
        return state_reset(d, KEEL_ERR_FORMAT, device, "a field is out of range");
    *d = s;
    return KEEL_OK;
}

/* ---- the per-device detectors ------------------------------------------------------------------ */

static bool warm(const keel_fleet_anomaly_config_t *cfg, const keel_fleet_anomaly_device_t *d, int64_t t)
{
    return d->messages >= cfg->warmup_messages && t - d->first >= (int64_t)cfg->warmup_s && d->norm > 0;
}

/* Per hour, from a slow counter: the baseline. */
static double baseline_per_hour(const keel_fleet_anomaly_device_t *d, double slow)
{
    return d->norm > 0 ? HOUR_S * slow / d->norm : 0;
}

/* Decays every counter to time t; grants backlog credit after a silence. */
static void device_advance(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_device_t *d, int64_t t)
{
    if (d->first == 0) {
        d->first = t;
        d->last = t;
        return;
    }
    int64_t dt = t > d->last ? t - d->last : 0;
    if (dt == 0)
        return;
    /* A device that was off produced nothing: its silence beyond offline_s
     * says nothing about its rate, so the baselines only age by offline_s. */
    double online = dt < (int64_t)cfg->offline_s ? (double)dt : (double)cfg->offline_s;
    double tau_slow = cfg->baseline_half_life_s / LN2;
    double fast = exp(-(double)dt / HOUR_S), slow = exp(-online / tau_slow);
    d->rate_fast *= fast;
    d->conn_fast *= fast;
    d->rate_slow *= slow;
    d->conn_slow *= slow;
    d->norm = d->norm * slow + online;
    d->auth *= exp(-(double)dt / cfg->auth_window_s);
    d->size_max = d->size_mean + (d->size_max - d->size_mean) * exp(-(double)dt / SIZE_MAX_TAU_S);
    if (dt >= (int64_t)cfg->late_s) {
        /* What it queued while silent may now arrive late (its outbox).
         * Capped at TIME_MAX, the bound a state must keep to be stored. */
        d->credit_s = dt <= TIME_MAX - (int64_t)cfg->late_s ? dt + (int64_t)cfg->late_s : TIME_MAX;
        d->credit_until = t <= TIME_MAX - (int64_t)cfg->backlog_drain_s ? t + (int64_t)cfg->backlog_drain_s : TIME_MAX;
    }
    d->last = t;
}

/* How old the message is, as far as it is believable: only a device that was
 * silent can deliver old messages, and only as old as its silence. */
static int64_t credited_age(const keel_fleet_anomaly_device_t *d, const keel_fleet_anomaly_obs_t *o)
{
    if (o->device_time <= 0 || o->device_time >= o->time)
        return 0;
    int64_t age = o->time - o->device_time;
    int64_t credit = o->time <= d->credit_until ? d->credit_s : 0;
    return age < credit ? age : credit;
}

static double rate_threshold(const keel_fleet_anomaly_config_t *cfg, const keel_fleet_anomaly_device_t *d)
{
    return fmax(cfg->rate_factor * baseline_per_hour(d, d->rate_slow), (double)cfg->rate_min_per_hour);
}

/* Connections need no day of warm-up: the baseline counts from its first
 * hour online (a sleepy device that connects for every report is known by
 * then); before that only the floor applies. */
static double reconnect_threshold(const keel_fleet_anomaly_config_t *cfg, const keel_fleet_anomaly_device_t *d)
{
    double base = d->norm >= HOUR_S ? baseline_per_hour(d, d->conn_slow) : 0;
    return fmax(cfg->reconnect_factor * base, (double)cfg->reconnect_per_hour);
}

/* The statistics as they decayed to t, before this observation adds to them. */
static void incidents_keep(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_device_t *d, int64_t t,
                           int64_t prev)
{
    int64_t gap = cfg->incident_gap_s;
    incident_keep(&d->incident[INC_RATE], t, prev, gap, d->rate_fast >= CLEAR_SHARE * rate_threshold(cfg, d));
    incident_keep(&d->incident[INC_RECONNECT], t, prev, gap,
                  d->conn_fast >= CLEAR_SHARE * reconnect_threshold(cfg, d));
    incident_keep(&d->incident[INC_AUTH], t, prev, gap, d->auth >= CLEAR_SHARE * cfg->auth_failures);
}

static keel_status_t check_rate(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_device_t *d,
                                const keel_fleet_anomaly_obs_t *o, sink_t *s)
{
    if (!warm(cfg, d, o->time))
        return KEEL_OK;
    double base = baseline_per_hour(d, d->rate_slow);
    double thr = rate_threshold(cfg, d);
    if (!(d->rate_fast > thr) ||
        !incident_hit(&d->incident[INC_RATE], o->time, cfg->incident_gap_s))
        return KEEL_OK;
    double score = d->rate_fast / thr;
    keel_fleet_anomaly_alert_t *a = sink_next(s, KEEL_FLEET_ANOMALY_RATE, o->device, o->time, score, false);
    if (a == NULL)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly alerts: no room");
    return sink_commit(s,
                       keel_snprintf(a->detail, sizeof a->detail,
                                     "{\"messages_per_hour\":%.1f,\"baseline_per_hour\":%.2f,\"threshold\":%.1f}",
                                     d->rate_fast, base, thr),
                       keel_snprintf(a->dedupe, sizeof a->dedupe, "rate:%s:%" PRId64, o->device, o->time));
}

static keel_status_t check_size(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_device_t *d,
                                const keel_fleet_anomaly_obs_t *o, sink_t *s)
{
    double bytes = o->size > 0 ? (double)o->size : 1.0;
    double x = log(bytes);
    double sd = fmax(sqrt(d->size_var), SIZE_SD_FLOOR);
    double typical = exp(d->size_mean), z = (x - d->size_mean) / sd;
    bool flagged = warm(cfg, d, o->time) && d->size_n >= SIZE_WARMUP && z > cfg->size_z &&
                   bytes - typical >= cfg->size_min_bytes && x >= d->size_max + log((double)cfg->size_max_factor);
    keel_status_t st = KEEL_OK;
    if (flagged && incident_hit(&d->incident[INC_SIZE], o->time, cfg->incident_gap_s)) {
        double score = z / cfg->size_z;
        keel_fleet_anomaly_alert_t *a =
            sink_next(s, KEEL_FLEET_ANOMALY_SIZE, o->device, o->time, score, bytes >= 8 * typical);
        if (a == NULL)
            return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly alerts: no room");
        st = sink_commit(s,
                         keel_snprintf(a->detail, sizeof a->detail,
                                       "{\"bytes\":%" PRIu64 ",\"typical_bytes\":%.0f,\"z\":%.1f}", o->size,
                                       typical, z),
                         keel_snprintf(a->dedupe, sizeof a->dedupe, "size:%s:%" PRId64, o->device, o->time));
    }
    if (o->kind != KEEL_FLEET_OBS_TELEMETRY)
        return st;
    /* The baseline is the telemetry's. An anomalous payload moves its mean
     * by at most one deviation's worth and leaves its spread alone: a
     * stream of exfiltration does not teach it (a clipped outlier would
     * still widen the spread by a factor each time), while a lasting change
     * of the product's payload is learnt in a few windows. */
    double n = d->size_n + 1 < cfg->size_window ? d->size_n + 1 : (double)cfg->size_window;
    double alpha = 1.0 / n, dx = x - d->size_mean;
    if (flagged) {
        d->size_mean += alpha * fmin(dx, sd);
    } else {
        d->size_mean += alpha * dx;
        d->size_var = (1 - alpha) * (d->size_var + alpha * dx * dx);
        d->size_max = d->size_n > 0 ? fmax(d->size_max, x) : x;
    }
    if (d->size_max < d->size_mean)
        d->size_max = d->size_mean;
    d->size_n = n;
    return st;
}

static keel_status_t check_reconnect(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_device_t *d,
                                     const keel_fleet_anomaly_obs_t *o, sink_t *s)
{
    double base = d->norm >= HOUR_S ? baseline_per_hour(d, d->conn_slow) : 0;
    double thr = reconnect_threshold(cfg, d);
    if (!(d->conn_fast > thr) ||
        !incident_hit(&d->incident[INC_RECONNECT], o->time, cfg->incident_gap_s))
        return KEEL_OK;
    double score = d->conn_fast / thr;
    keel_fleet_anomaly_alert_t *a = sink_next(s, KEEL_FLEET_ANOMALY_RECONNECT, o->device, o->time, score, false);
    if (a == NULL)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly alerts: no room");
    return sink_commit(
        s,
        keel_snprintf(a->detail, sizeof a->detail,
                      "{\"connections_per_hour\":%.1f,\"baseline_per_hour\":%.2f,\"threshold\":%.1f}", d->conn_fast,
                      base, thr),
        keel_snprintf(a->dedupe, sizeof a->dedupe, "reconnect:%s:%" PRId64, o->device, o->time));
}

static keel_status_t check_auth(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_device_t *d,
                                const keel_fleet_anomaly_obs_t *o, sink_t *s)
{
    double count = o->auth_failures < COUNT_CLAMP ? (double)o->auth_failures : COUNT_CLAMP;
    d->auth = fmin(d->auth + count, COUNT_CLAMP);
    if (count <= 0 || d->auth < cfg->auth_failures ||
        !incident_hit(&d->incident[INC_AUTH], o->time, cfg->incident_gap_s))
        return KEEL_OK;
    double score = d->auth / cfg->auth_failures;
    keel_fleet_anomaly_alert_t *a = sink_next(s, KEEL_FLEET_ANOMALY_AUTH, o->device, o->time, score, score >= 10);
    if (a == NULL)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly alerts: no room");
    return sink_commit(s,
                       keel_snprintf(a->detail, sizeof a->detail,
                                     "{\"failures_in_window\":%.0f,\"window_s\":%" PRIu32 ",\"threshold\":%" PRIu32
                                     "}",
                                     d->auth, cfg->auth_window_s, cfg->auth_failures),
                       keel_snprintf(a->dedupe, sizeof a->dedupe, "auth:%s:%" PRId64, o->device, o->time));
}

static keel_status_t check_version(keel_fleet_anomaly_device_t *d, const keel_fleet_anomaly_obs_t *o, sink_t *s)
{
    if (o->version == NULL)
        return KEEL_OK;
    char v[KEEL_FLEET_ANOMALY_VERSION_MAX + 1];
    version_sanitize(o->version, v);
    int64_t sv = o->security_version >= 0 ? o->security_version : -1;
    keel_status_t st = KEEL_OK;
    if (!o->release_known) {
        keel_fleet_anomaly_alert_t *a = sink_next(s, KEEL_FLEET_ANOMALY_VERSION, o->device, o->time, 1, true);
        if (a == NULL)
            return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly alerts: no room");
        st = sink_commit(s,
                         keel_snprintf(a->detail, sizeof a->detail,
                                       "{\"reason\":\"unreleased\",\"version\":\"%s\",\"security_version\":%" PRId64
                                       "}",
                                       v, sv),
                         keel_snprintf(a->dedupe, sizeof a->dedupe, "version:%s:unreleased:%s:%" PRId64, o->device,
                                       v, sv));
    }
    if (st == KEEL_OK && sv >= 0 && d->security_version > sv) {
        keel_fleet_anomaly_alert_t *a =
            sink_next(s, KEEL_FLEET_ANOMALY_VERSION, o->device, o->time, (double)(d->security_version - sv), true);
        if (a == NULL)
            return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly alerts: no room");
        st = sink_commit(s,
                         keel_snprintf(a->detail, sizeof a->detail,
                                       "{\"reason\":\"rollback\",\"version\":\"%s\",\"security_version\":%" PRId64
                                       ",\"previous_version\":\"%s\",\"previous_security_version\":%" PRId64 "}",
                                       v, sv, d->version, d->security_version),
                         keel_snprintf(a->dedupe, sizeof a->dedupe, "version:%s:rollback:%" PRId64 ":%" PRId64,
                                       o->device, d->security_version, sv));
    }
    /* The highest security version stays: a device that went back keeps
     * being reported at each boot (under the same key) until it returns. */
    if (sv > d->security_version)
        d->security_version = sv;
    memcpy(d->version, v, sizeof v);
    return st;
}

static keel_status_t check_tamper(keel_fleet_anomaly_device_t *d, const keel_fleet_anomaly_obs_t *o, sink_t *s)
{
    if (!incident_hit(&d->incident[INC_TAMPER], o->time, TAMPER_GAP_S))
        return KEEL_OK;
    keel_fleet_anomaly_alert_t *a = sink_next(s, KEEL_FLEET_ANOMALY_TAMPER, o->device, o->time, 1, true);
    if (a == NULL)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly alerts: no room");
    return sink_commit(s, keel_snprintf(a->detail, sizeof a->detail, "{\"reason\":\"tamper alert from the device\"}"),
                       keel_snprintf(a->dedupe, sizeof a->dedupe, "tamper:%s:%" PRId64, o->device, o->time));
}

keel_status_t keel_fleet_anomaly_observe(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_device_t *dev,
                                         keel_fleet_anomaly_fleet_t *fleet, const keel_fleet_anomaly_obs_t *o,
                                         keel_fleet_anomaly_alert_t *alerts_out, size_t cap, size_t *n_out)
{
    if (n_out != NULL)
        *n_out = 0;
    if (cfg == NULL || dev == NULL || o == NULL || alerts_out == NULL || n_out == NULL || o->device == NULL)
        return keel_errorf(KEEL_ERR_ARG, "anomaly observe: NULL");
    if (cap < KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX)
        return keel_errorf(KEEL_ERR_ARG, "anomaly observe: room for %zu alerts, need %d", cap,
                           KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX);
    if (!device_id_ok(o->device))
        return keel_errorf(KEEL_ERR_ARG, "anomaly observe: bad device id");
    if (o->time <= 0 || o->time > TIME_MAX || o->device_time < 0 || o->device_time > TIME_MAX)
        return keel_errorf(KEEL_ERR_ARG, "anomaly observe: time out of range");
    if ((unsigned)o->kind > KEEL_FLEET_OBS_STATE || (unsigned)o->event > KEEL_FLEET_EV_TAMPER)
        return keel_errorf(KEEL_ERR_ARG, "anomaly observe: unknown kind");

    sink_t s = {.out = alerts_out, .cap = cap, .n = 0};
    int64_t prev = dev->last != 0 ? dev->last : o->time;
    device_advance(cfg, dev, o->time);
    incidents_keep(cfg, dev, o->time, prev);
    keel_status_t st = KEEL_OK;
    if (o->kind == KEEL_FLEET_OBS_STATE) {
        dev->conn_fast += 1;
        dev->conn_slow += in_incident(cfg, &dev->incident[INC_RECONNECT], o->time) ? 1.0 / cfg->reconnect_factor : 1.0;
        st = check_reconnect(cfg, dev, o, &s);
        *n_out = s.n;
        return st;
    }

    int64_t age = credited_age(dev, o);
    bool late = age > (int64_t)cfg->late_s;
    bool auth_report = o->kind == KEEL_FLEET_OBS_EVENT && o->event == KEEL_FLEET_EV_AUTH_FAILURES;
    dev->messages++;
    /* auth-failures reports are the auth detector's; keeld sends at most one
     * per window, so they say nothing of the device's own rate. */
    if (!auth_report) {
        /* A late message counts as of when it was written: weighted by how
         * much of it the counter would have kept since. */
        dev->rate_fast += exp(-(double)age / HOUR_S);
        if (age <= (int64_t)cfg->offline_s)
            dev->rate_slow += in_incident(cfg, &dev->incident[INC_RATE], o->time) ? 1.0 / cfg->rate_factor : 1.0;
        if (fleet != NULL && !late)
            fleet->open[0]++;
        st = check_rate(cfg, dev, o, &s);
    } else if (fleet != NULL && !late && dev->auth < 1.0) {
        /* The fleet counts devices that start reporting failures, not
         * reports: one device under brute force reports every window, a
         * credential-stuffing wave makes many devices report once. */
        fleet->open[1]++;
    }
    if (st == KEEL_OK)
        st = check_size(cfg, dev, o, &s);
    if (st == KEEL_OK && auth_report)
        st = check_auth(cfg, dev, o, &s);
    if (st == KEEL_OK && o->kind == KEEL_FLEET_OBS_EVENT && o->event == KEEL_FLEET_EV_BOOT)
        st = check_version(dev, o, &s);
    if (st == KEEL_OK && o->kind == KEEL_FLEET_OBS_ALERT && o->event == KEEL_FLEET_EV_TAMPER)
        st = check_tamper(dev, o, &s);
    *n_out = s.n;
    return st;
}

/* ---- the fleet ---------------------------------------------------------------------------------- */

void keel_fleet_anomaly_fleet_init(keel_fleet_anomaly_fleet_t *f)
{
    if (f == NULL)
        return;
    memset(f, 0, sizeof *f);
    f->slot = -1;
}

static int slot_of(int64_t t)
{
    return (int)((t % 86400 + 86400) % 86400 / SLOT_S);
}

/* The profile at time t (a minute's start), linear between half-hour centres. */
static double profile_at(const keel_fleet_anomaly_fleet_t *f, int m, int64_t t)
{
    /* NOLINTNEXTLINE(bugprone-integer-division): SLOT_S divides a day exactly (asserted above) */
    double pos = (double)((t % 86400 + 86400) % 86400 + 30) / SLOT_S - 0.5;
    double fl = floor(pos);
    double frac = pos - fl;
    int i0 = ((int)fl + KEEL_FLEET_ANOMALY_SLOTS) % KEEL_FLEET_ANOMALY_SLOTS;
    int i1 = (i0 + 1) % KEEL_FLEET_ANOMALY_SLOTS;
    return (1 - frac) * f->profile[m][i0] + frac * f->profile[m][i1];
}

static bool profile_complete(const keel_fleet_anomaly_fleet_t *f, int m)
{
    for (int i = 0; i < KEEL_FLEET_ANOMALY_SLOTS; i++)
        if (!f->profile_set[m][i])
            return false;
    return true;
}

static double level_of(const keel_fleet_anomaly_fleet_t *f, int m)
{
    return f->level_den[m] > 1e-9 ? f->level_num[m] / f->level_den[m] : 1.0;
}

/* Folds the half hour that ended into the profile (an EWMA across days). */
static void slot_fold(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_fleet_t *f)
{
    if (f->slot < 0)
        return;
    double alpha = 1 - exp2(-1.0 / cfg->fleet_profile_half_life_days);
    for (int m = 0; m < KEEL_FLEET_ANOMALY_FLEET_METRICS; m++) {
        if (f->slot_minutes[m] >= FLEET_SLOT_MIN_MINUTES) {
            double mean = f->slot_sum[m] / f->slot_minutes[m];
            double *p = &f->profile[m][f->slot];
            if (!f->profile_set[m][f->slot])
                *p = mean;
            else
                *p += alpha * (mean - *p);
            f->profile_set[m][f->slot] = true;
        }
        f->slot_sum[m] = 0;
        f->slot_minutes[m] = 0;
    }
}

static keel_status_t fleet_alert(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_fleet_t *f, int m,
                                 int64_t now, double sum, double expect, sink_t *s)
{
    if (!incident_hit(&f->incident[m], now, cfg->incident_gap_s))
        return KEEL_OK;
    double ratio = expect > 0 ? sum / expect : sum;
    double score = ratio / (cfg->fleet_factor_pct / 100.0);
    keel_fleet_anomaly_alert_t *a = sink_next(s, KEEL_FLEET_ANOMALY_FLEET, NULL, now, score, ratio >= 2);
    if (a == NULL)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "anomaly alerts: no room");
    return sink_commit(s,
                       keel_snprintf(a->detail, sizeof a->detail,
                                     "{\"metric\":\"%s\",\"window_min\":%" PRIu32
                                     ",\"observed\":%.0f,\"expected\":%.1f,\"ratio\":%.2f}",
                                     metric_names[m], cfg->fleet_window_min, sum, expect, ratio),
                       keel_snprintf(a->dedupe, sizeof a->dedupe, "fleet:%s:%" PRId64, metric_names[m], now));
}

/* One closed minute starting at t with counts c[]: window, test, learning. */
static keel_status_t fleet_minute(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_fleet_t *f, int64_t t,
                                  const double c[KEEL_FLEET_ANOMALY_FLEET_METRICS], int64_t now, sink_t *s)
{
    int slot = slot_of(t);
    if (slot != f->slot) {
        slot_fold(cfg, f);
        f->slot = slot;
    }
    unsigned w = cfg->fleet_window_min;
    if (f->win_pos >= w || f->win_fill > w) {
        /* The window's length changed under it: start it over. */
        f->win_pos = 0;
        f->win_fill = 0;
    }
    bool hold = t < f->hold_until;
    bool ready[KEEL_FLEET_ANOMALY_FLEET_METRICS];
    for (int m = 0; m < KEEL_FLEET_ANOMALY_FLEET_METRICS; m++) {
        ready[m] = profile_complete(f, m);
        /* Before the profile is complete a minute is its own expectation. */
        double e = ready[m] ? profile_at(f, m, t) * level_of(f, m) : c[m];
        f->win_count[m][f->win_pos] = c[m];
        f->win_expect[m][f->win_pos] = e;
    }
    f->win_pos = (f->win_pos + 1) % w;
    if (f->win_fill < w)
        f->win_fill++;

    double level_alpha = 1 - exp2(-1.0 / cfg->fleet_level_half_life_min);
    double factor = cfg->fleet_factor_pct / 100.0;
    keel_status_t st = KEEL_OK;
    for (int m = 0; m < KEEL_FLEET_ANOMALY_FLEET_METRICS && st == KEEL_OK; m++) {
        double sum = 0, expect = 0;
        for (unsigned i = 0; i < f->win_fill; i++) {
            sum += f->win_count[m][i];
            expect += f->win_expect[m][i];
        }
        double noise = cfg->fleet_z * sqrt(expect);
        bool high = ready[m] && f->win_fill == w && sum >= factor * expect && sum - expect >= noise + cfg->fleet_min;
        bool low = ready[m] && f->win_fill == w && sum * factor <= expect && expect - sum >= noise;
        if (hold) {
            f->streak[m] = 0;
            continue;
        }
        f->streak[m] = high ? f->streak[m] + 1 : 0;
        if (f->streak[m] >= cfg->fleet_sustain_min)
            st = fleet_alert(cfg, f, m, now, sum, expect, s);
        /* What is anomalous either way is not learnt: a wave must not
         * become tomorrow's normal, an outage must not lower it. */
        if (high || low)
            continue;
        f->slot_sum[m] += c[m];
        f->slot_minutes[m] += 1;
        if (ready[m]) {
            double p = profile_at(f, m, t);
            f->level_num[m] += level_alpha * (c[m] - f->level_num[m]);
            f->level_den[m] += level_alpha * (p - f->level_den[m]);
        }
    }
    return st;
}

keel_status_t keel_fleet_anomaly_fleet_tick(const keel_fleet_anomaly_config_t *cfg, keel_fleet_anomaly_fleet_t *f,
                                            int64_t now, keel_fleet_anomaly_alert_t *alerts_out, size_t cap,
                                            size_t *n_out)
{
    if (n_out != NULL)
        *n_out = 0;
    if (cfg == NULL || f == NULL || alerts_out == NULL || n_out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "anomaly tick: NULL");
    if (cap < KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX)
        return keel_errorf(KEEL_ERR_ARG, "anomaly tick: room for %zu alerts, need %d", cap,
                           KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX);
    if (now <= 0 || now > TIME_MAX)
        return keel_errorf(KEEL_ERR_ARG, "anomaly tick: time out of range");
    if (cfg->fleet_window_min < 1 || cfg->fleet_window_min > KEEL_FLEET_ANOMALY_WINDOW_MAX)
        return keel_errorf(KEEL_ERR_ARG, "anomaly tick: fleet_window_min out of range");
    int64_t minute = now - now % 60;
    if (f->started == 0) {
        /* What came before the first tick has no known span: dropped. */
        f->started = minute;
        f->last_tick = minute;
        memset(f->open, 0, sizeof f->open);
        return KEEL_OK;
    }
    if (minute <= f->last_tick)
        return KEEL_OK;
    int64_t missed = (minute - f->last_tick) / 60;
    if (missed > FLEET_GAP_MIN) {
        f->win_fill = 0;
        f->win_pos = 0;
        memset(f->streak, 0, sizeof f->streak);
        memset(f->open, 0, sizeof f->open);
        f->hold_until = minute + 60 * (int64_t)cfg->fleet_window_min;
        f->last_tick = minute;
        return KEEL_OK;
    }
    sink_t s = {.out = alerts_out, .cap = cap, .n = 0};
    double c[KEEL_FLEET_ANOMALY_FLEET_METRICS];
    for (int m = 0; m < KEEL_FLEET_ANOMALY_FLEET_METRICS; m++)
        c[m] = (double)f->open[m] / (double)missed;
    keel_status_t st = KEEL_OK;
    for (int64_t k = 0; k < missed && st == KEEL_OK; k++)
        st = fleet_minute(cfg, f, f->last_tick + 60 * k, c, now, &s);
    memset(f->open, 0, sizeof f->open);
    f->last_tick = minute;
    *n_out = s.n;
    return st;
}

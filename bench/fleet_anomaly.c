/*
 * fleet_anomaly: precision and recall of keel-fleetd's anomaly detectors
 * (keel/fleet_anomaly.h, 5.10-1) on a generated fleet trace with injected,
 * labelled anomalies; and their throughput.
 *
 * The trace (seeded, so every run of a seed is the same trace): --devices
 * devices for --days days, minute by minute. Each device has its own rate
 * (log-normal around 20 messages/hour, 3..240), a daily swing (20-70 %
 * around a fleet-wide evening peak, its phase spread by 1.5 h), a rate
 * that moves from day to day (+-15 %, and +-5 % for the whole fleet),
 * Poisson arrivals, its own payload size (log-normal around 300 bytes,
 * 60..2000) with its own spread (ln sd 0.05..0.25) and, for a fifth of the
 * devices, a daily status report 1.5-2.5x as large; small events. Normal
 * life: reboots (boot event + connection), network blips (1-3 connections),
 * mistyped passwords (an auth-failures report of 1-3), outages of the
 * device's network (median 30 min, its outbox delivers the backlog with
 * the old timestamps on return), power cuts (no backlog), clocks off by up
 * to 10 minutes on 5 % of devices, 10 % of "sleepy" devices that connect
 * for every report, a released update (security version up) for a tenth of
 * the fleet on day 2, and one broker outage of 15 minutes for everyone.
 *
 * Injected after the first day (the warm-up of the per-device baselines and
 * of the fleet's time-of-day profile), each labelled with device, kind and
 * window:
 *   rate       a flood: 8-50x the device's rate (>= 60/h more), 45 min-4 h
 *   size       exfiltration: 30-100 % of its telemetry 4-16 KiB (>= 5x its
 *              typical size), 20 min-3 h
 *   reconnect  a connection every 15-200 s, 1-4 h
 *   auth       brute force: a report a minute of 2-30 failures, 20 min-3 h
 *   version    a boot into an unreleased version, or back to a released
 *              one of a lower security version
 *   tamper     a tamper alert, re-sent at the next boot half the time
 *   fleet      a botnet wave: 20 % of devices at 2-4x their rate for
 *              45 min-3 h; credential stuffing: 5-25 % of devices report
 *              1-4 failures a few times within 30 min-2 h
 *
 * Scoring: alerts are deduplicated by their key (as fleet_store does). An
 * alert of the right kind on the right device (a fleet alert: of the right
 * metric) between an incident's start and one hour after its end is a true
 * positive for that incident; an alert on a device or at a time with no
 * incident at all is a false positive; an alert of another kind on a device
 * inside one of its incidents (a wave member flooding enough to be seen on
 * its own) is counted as collateral, neither. precision = matched alerts /
 * (matched + false positives); recall = incidents with an alert / incidents.
 * Throughput: observations per second through keel_fleet_anomaly_observe
 * (and the ticks), the trace's generation not counted; and the cost of the
 * state's text round trip, which fleetd pays per message.
 *
 * usage: fleet_anomaly [--devices N] [--days D] [--seed S] [--incidents K]
 *                      [--quick] [--json] [--json-file PATH]
 * Exit: 0 every kind at precision and recall >= 0.90; 1 a kind misses (the
 * JSON says "pass": false) or the run failed; 2 usage.
 */
#include "keel/fleet_anomaly.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GOAL 0.90
#define DEVICES_DEFAULT 5000u
#define DEVICES_QUICK 600u
#define DEVICES_MAX 1000000ul
#define DAYS_DEFAULT 3u
#define DAYS_QUICK 2u
#define DAYS_MAX 30ul
#define INCIDENTS_MAX 10000ul
#define START 1763769600 /* a midnight (UTC) */
#define DAY 86400
#define SLACK_S 3600 /* an alert this long after an incident's end still belongs to it */
#define BACKLOG_MAX 2000u /* outbox: messages a device queues at most */
#define FLEET_WAVE_SHARE 0.20
#define PI 3.14159265358979323846

enum { EXIT_MISS = 1, EXIT_USAGE = 2 };

/* ---- random numbers (xoshiro256**, seeded by splitmix64, as link_storm) ---- */

static uint64_t rng_s[4];

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    uint64_t r = rotl(rng_s[1] * 5, 7) * 9, t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl(rng_s[3], 45);
    return r;
}

static void rng_seed(uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        rng_s[i] = z ^ (z >> 31);
    }
}

static double u01(void)
{
    return (double)(rng_next() >> 11) * 0x1.0p-53;
}

static double uni(double a, double b)
{
    return a + (b - a) * u01();
}

static double normal(void)
{
    double u = u01(), v = u01();
    return sqrt(-2 * log(u > 0 ? u : 1e-300)) * cos(2 * PI * v);
}

static double expo(double mean)
{
    double u = u01();
    return -mean * log(u > 0 ? u : 1e-300);
}

static unsigned poisson(double mean)
{
    if (mean > 50) {
        double x = mean + sqrt(mean) * normal();
        return x > 0 ? (unsigned)llround(x) : 0;
    }
    double l = exp(-mean), p = u01();
    unsigned k = 0;
    while (p > l) {
        k++;
        p *= u01();
    }
    return k;
}

static double clampd(double x, double lo, double hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

/* ---- the fleet ------------------------------------------------------------------------------ */

typedef enum { INJ_NONE, INJ_RATE, INJ_SIZE, INJ_RECONNECT, INJ_AUTH, INJ_VERSION, INJ_TAMPER } inj_t;

typedef struct {
    keel_fleet_anomaly_kind_t kind;
    int device;   /* -1: fleet-wide */
    int metric;   /* fleet: 0 messages, 1 auth reports */
    int64_t start, end;
    double param; /* rate multiple, exfil share, reconnect interval, failures, wave share */
    bool detected;
    int64_t first_alert;
} incident_t;

typedef struct {
    double rate_h, amp, phase_s, day_factor, size_mu, size_sd, status_factor;
    int64_t skew;
    bool sleepy, status;
    int version; /* index into versions[] */
    int64_t next_reboot, next_blip, next_mistype, next_outage, next_poweroff, next_status;
    int64_t offline_until, offline_from;
    bool backlog;
    unsigned queued;
    int inc;           /* active injected incident (index) or -1 */
    int64_t next_conn; /* reconnect storm */
    int64_t tamper_resend;
    bool wave_member[2];
    int64_t update_at;
    keel_fleet_anomaly_device_t st;
} device_t;

typedef struct {
    const char *v;
    int64_t sv;
    bool known;
} version_t;
static const version_t versions[] = {
    {"1.4.2", 3, true},     {"1.5.0", 4, true},       {"1.6.0", 5, true}, /* released */
    {"1.3.0", 2, true},                                                   /* released, older: a rollback */
    {"9.0.1", 4, false},    {"1.5.0-dev", 4, false},  {"7.7.7", 5, false}, /* never released */
};
enum { V_CAMPAIGN = 2, V_OLD = 3, V_EVIL = 4, V_EVIL_N = 3 };

/* One observation of the minute being generated. */
typedef struct {
    int64_t time, device_time;
    uint32_t dev, order;
    uint8_t kind, event, version;
    uint32_t size, count;
} rec_t;

typedef struct {
    rec_t *v;
    size_t n, cap;
} recs_t;

typedef struct {
    unsigned devices, days, incidents;
    uint64_t seed;
    device_t *dev;
    char (*ids)[16];
    incident_t inc[INCIDENTS_MAX];
    size_t ninc;
    int wave[2]; /* the fleet incident running per metric, -1 none */
    int64_t broker_down, broker_up;
    recs_t recs;
    keel_fleet_anomaly_config_t cfg;
    keel_fleet_anomaly_fleet_t fleet;
    /* alerts, deduplicated by key */
    uint64_t *keys;
    size_t nkeys, keycap;
    size_t matched[KEEL_FLEET_ANOMALY_KINDS], fp[KEEL_FLEET_ANOMALY_KINDS], collateral[KEEL_FLEET_ANOMALY_KINDS];
    uint64_t observations;
    double seconds; /* in the detector */
    bool verbose;   /* false positives and missed incidents on stderr */
} sim_t;

static int die(const char *what)
{
    fprintf(stderr, "fleet_anomaly: %s\n", what);
    return EXIT_MISS;
}

static bool push(sim_t *s, const rec_t *r)
{
    if (s->recs.n == s->recs.cap) {
        size_t cap = s->recs.cap ? 2 * s->recs.cap : 65536;
        rec_t *v = realloc(s->recs.v, cap * sizeof *v);
        if (v == NULL)
            return false;
        s->recs.v = v;
        s->recs.cap = cap;
    }
    s->recs.v[s->recs.n] = *r;
    s->recs.v[s->recs.n].order = (uint32_t)s->recs.n;
    s->recs.n++;
    return true;
}

static int rec_cmp(const void *a, const void *b)
{
    const rec_t *x = a, *y = b;
    if (x->time != y->time)
        return x->time < y->time ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static double diurnal(const device_t *d, int64_t t)
{
    return 1 + d->amp * sin(2 * PI * ((double)(t % DAY) - d->phase_s) / DAY);
}

static uint32_t payload(const device_t *d)
{
    return (uint32_t)clampd(exp(d->size_mu + d->size_sd * normal()), 20, 16384);
}

static int64_t rnd_time(int64_t t)
{
    return t + (int64_t)(u01() * 60);
}

/* ---- incidents ------------------------------------------------------------------------------ */

static bool overlaps_outage(const sim_t *s, int64_t a, int64_t b)
{
    return a < s->broker_up + 3 * 3600 && b > s->broker_down - 3 * 3600;
}

static void plan(sim_t *s)
{
    int64_t end = START + (int64_t)s->days * DAY;
    int64_t from = START + DAY + 3600; /* after the warm-up day */
    /* the broker outage: in the second half of the trace */
    s->broker_down = START + DAY + (int64_t)(uni(0.5, 0.7) * (double)(end - START - DAY));
    s->broker_down -= s->broker_down % 60;
    s->broker_up = s->broker_down + 15 * 60;

    /* per-device incidents: distinct devices */
    static const keel_fleet_anomaly_kind_t kinds[] = {KEEL_FLEET_ANOMALY_RATE,  KEEL_FLEET_ANOMALY_SIZE,
                                                      KEEL_FLEET_ANOMALY_RECONNECT, KEEL_FLEET_ANOMALY_AUTH,
                                                      KEEL_FLEET_ANOMALY_VERSION, KEEL_FLEET_ANOMALY_TAMPER};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        for (unsigned i = 0; i < s->incidents && s->ninc < INCIDENTS_MAX; i++) {
            int d;
            do
                d = (int)(u01() * s->devices);
            while (s->dev[d].inc >= 0);
            incident_t *in = &s->inc[s->ninc];
            memset(in, 0, sizeof *in);
            in->kind = kinds[k];
            in->device = d;
            double dur;
            switch (kinds[k]) {
            case KEEL_FLEET_ANOMALY_RATE:
                dur = uni(45 * 60, 4 * 3600);
                in->param = uni(8, 50);
                break;
            case KEEL_FLEET_ANOMALY_SIZE:
                dur = uni(20 * 60, 3 * 3600);
                in->param = uni(0.3, 1.0);
                break;
            case KEEL_FLEET_ANOMALY_RECONNECT:
                dur = uni(3600, 4 * 3600);
                in->param = uni(15, 200);
                break;
            case KEEL_FLEET_ANOMALY_AUTH:
                dur = uni(20 * 60, 3 * 3600);
                in->param = uni(2, 30);
                break;
            case KEEL_FLEET_ANOMALY_TAMPER:
                dur = 3 * 3600;
                break;
            default:
                dur = 60;
                break;
            }
            /* Clear of the broker outage: what a device sends meanwhile would
             * need the outbox's queue for events and alerts, which the
             * generator keeps for telemetry only. */
            do {
                in->start = (int64_t)uni((double)from, (double)(end - (int64_t)dur - 600));
                in->end = in->start + (int64_t)dur;
            } while (in->start < s->broker_up && in->end > s->broker_down);
            s->dev[d].inc = (int)s->ninc;
            s->ninc++;
        }
    }
    /* fleet waves, alternating metrics, at least 5 h apart, clear of the outage */
    unsigned waves = 2 * (s->days - 1);
    int64_t last_end = from - 6 * 3600;
    for (unsigned w = 0; w < waves && s->ninc < INCIDENTS_MAX; w++) {
        int metric = (int)(w % 2);
        double dur = metric == 0 ? uni(45 * 60, 3 * 3600) : uni(30 * 60, 2 * 3600);
        int64_t lo = last_end + 5 * 3600, hi = end - (int64_t)dur - 1800;
        int64_t start = -1;
        for (int tries = 0; tries < 100 && lo < hi; tries++) {
            int64_t c = (int64_t)uni((double)lo, (double)lo + fmin(3.0 * 3600, (double)(hi - lo)));
            if (!overlaps_outage(s, c, c + (int64_t)dur)) {
                start = c;
                break;
            }
        }
        if (start < 0)
            break;
        incident_t *in = &s->inc[s->ninc];
        memset(in, 0, sizeof *in);
        in->kind = KEEL_FLEET_ANOMALY_FLEET;
        in->device = -1;
        in->metric = metric;
        in->start = start;
        in->end = start + (int64_t)dur;
        in->param = metric == 0 ? FLEET_WAVE_SHARE : uni(0.05, 0.25);
        s->ninc++;
        last_end = in->end;
    }
}

/* ---- generation, minute by minute -------------------------------------------------------------- */

static bool emit(sim_t *s, unsigned d, int64_t t, int64_t device_time, uint8_t kind, uint8_t event, uint32_t size,
                 uint32_t count, uint8_t version)
{
    rec_t r = {.time = t, .device_time = device_time, .dev = d, .kind = kind, .event = event, .version = version,
               .size = size, .count = count};
    return push(s, &r);
}

static int64_t dev_ts(const device_t *d, int64_t t)
{
    return t - (int64_t)(u01() * 2) + d->skew;
}

static bool boot(sim_t *s, unsigned i, int64_t t)
{
    device_t *d = &s->dev[i];
    return emit(s, i, t, dev_ts(d, t), KEEL_FLEET_OBS_STATE, KEEL_FLEET_EV_NONE, 0, 0, 0) &&
           emit(s, i, t + 1, dev_ts(d, t + 1), KEEL_FLEET_OBS_EVENT, KEEL_FLEET_EV_BOOT, 140, 0,
                (uint8_t)d->version);
}

static void device_new(sim_t *s, unsigned i)
{
    device_t *d = &s->dev[i];
    memset(d, 0, sizeof *d);
    d->sleepy = u01() < 0.10;
    d->rate_h = d->sleepy ? uni(2, 6) : clampd(exp(log(20) + 0.6 * normal()), 3, 240);
    d->amp = uni(0.2, 0.7);
    d->phase_s = 13 * 3600.0 + 1.5 * 3600 * normal(); /* the sine peaks 6 h after its phase: 19:00 */
    d->day_factor = 1;
    d->size_mu = log(clampd(exp(log(300) + 0.6 * normal()), 60, 2000));
    d->size_sd = uni(0.05, 0.25);
    d->status = u01() < 0.20;
    d->status_factor = uni(1.5, 2.5);
    d->skew = u01() < 0.05 ? (int64_t)uni(-600, 600) : 0;
    d->version = u01() < 0.7 ? 0 : 1;
    /* Every device boots once on the first day (the fleet's state then
     * knows its security version), then every 5 days on average. */
    d->next_reboot = START + (int64_t)uni(0, DAY - 3600);
    d->next_blip = START + (int64_t)expo(3 * DAY);
    d->next_mistype = START + (int64_t)expo(4 * DAY);
    d->next_outage = START + (int64_t)expo(4 * DAY);
    d->next_poweroff = START + (int64_t)expo(15 * DAY);
    d->next_status = START + (int64_t)uni(0, DAY);
    d->update_at = u01() < 0.10 ? START + DAY + (int64_t)uni(0, DAY) : 0;
    d->inc = -1;
    keel_fleet_anomaly_device_init(&d->st);
}

/* The messages of device i in the minute starting at t. */
static bool device_minute(sim_t *s, unsigned i, int64_t t, double fleet_factor)
{
    device_t *d = &s->dev[i];
    bool broker = t >= s->broker_down && t < s->broker_up;
    if (broker && d->offline_until <= t && d->offline_from < s->broker_down && d->queued == 0) {
        /* the broker went away: the outbox keeps what it writes meanwhile */
        d->offline_from = s->broker_down;
        d->backlog = true;
    }
    const incident_t *in = d->inc >= 0 ? &s->inc[d->inc] : NULL;
    bool active = in != NULL && t + 60 > in->start && t < in->end;

    /* Life events. A device with an incident ahead stays online until it is
     * over: an anomaly of a device that is off reaches nobody. */
    bool keep_online = in != NULL && t < in->end;
    if (t >= d->next_outage && !keep_online) {
        d->next_outage = t + (int64_t)expo(4 * DAY);
        if (d->offline_until <= t) {
            d->offline_until = t + (int64_t)clampd(exp(log(1800) + 1.0 * normal()), 300, DAY);
            d->offline_from = t;
            d->backlog = true;
        }
    }
    if (t >= d->next_poweroff && !keep_online) {
        d->next_poweroff = t + (int64_t)expo(15 * DAY);
        if (d->offline_until <= t) {
            d->offline_until = t + (int64_t)uni(3600, 3 * DAY);
            d->offline_from = t;
            d->backlog = false;
        }
    }
    bool offline = d->offline_until > t || broker;
    if (d->offline_until > t - 60 && d->offline_until <= t && !broker) {
        /* back: connects (after a power cut, boots) and delivers its backlog */
        if (!d->backlog) {
            if (!boot(s, i, t))
                return false;
        } else if (!emit(s, i, t, dev_ts(d, t), KEEL_FLEET_OBS_STATE, KEEL_FLEET_EV_NONE, 0, 0, 0)) {
            return false;
        }
    }
    if (t == s->broker_up && d->offline_until <= t &&
        !emit(s, i, t + (int64_t)(u01() * 50), dev_ts(d, t), KEEL_FLEET_OBS_STATE, KEEL_FLEET_EV_NONE, 0, 0, 0))
        return false;
    if (!offline && d->queued > 0) {
        int64_t from = d->offline_from, span = t - d->offline_from;
        for (unsigned k = 0; k < d->queued; k++) {
            int64_t written = from + span * (int64_t)k / (int64_t)d->queued;
            if (!emit(s, i, t + 1 + (int64_t)(u01() * 30), written + d->skew, KEEL_FLEET_OBS_TELEMETRY,
                      KEEL_FLEET_EV_NONE, payload(d), 0, 0))
                return false;
        }
        d->queued = 0;
    }

    /* telemetry */
    double lambda = d->rate_h / 60 * diurnal(d, t) * d->day_factor * fleet_factor;
    const incident_t *wave = s->wave[0] >= 0 ? &s->inc[s->wave[0]] : NULL;
    if (wave != NULL && d->wave_member[0])
        lambda += d->rate_h / 60 * wave->param;
    if (active && in->kind == KEEL_FLEET_ANOMALY_RATE)
        lambda += fmax(d->rate_h * in->param, 60) / 60;
    unsigned n = poisson(lambda);
    bool status_now = d->status && t >= d->next_status;
    if (status_now)
        d->next_status += DAY;
    if (offline) {
        if (d->backlog) {
            d->queued += n + (status_now ? 1u : 0u);
            if (d->queued > BACKLOG_MAX)
                d->queued = BACKLOG_MAX;
        }
        return true;
    }
    for (unsigned k = 0; k < n + (status_now ? 1u : 0u); k++) {
        int64_t at = rnd_time(t);
        uint32_t size = payload(d);
        if (k == n) /* the status report: a message of its own, of a steady size */
            size = (uint32_t)(exp(d->size_mu + 0.05 * normal()) * d->status_factor);
        if (active && in->kind == KEEL_FLEET_ANOMALY_SIZE && at >= in->start && u01() < in->param)
            size = (uint32_t)uni(fmax(4096, 5 * exp(d->size_mu)), 16384);
        if (d->sleepy && !emit(s, i, at - 1, dev_ts(d, at - 1), KEEL_FLEET_OBS_STATE, KEEL_FLEET_EV_NONE, 0, 0, 0))
            return false;
        if (!emit(s, i, at, dev_ts(d, at), KEEL_FLEET_OBS_TELEMETRY, KEEL_FLEET_EV_NONE, size, 0, 0))
            return false;
    }
    if (t >= d->next_reboot) {
        d->next_reboot = t + (int64_t)expo(5 * DAY) + 3600;
        if (!boot(s, i, rnd_time(t)))
            return false;
    }
    if (d->update_at != 0 && t >= d->update_at) {
        /* at the end of the minute: after any other boot of it */
        d->update_at = 0;
        d->version = V_CAMPAIGN;
        if (!boot(s, i, t + 59))
            return false;
    }
    if (t >= d->next_blip) {
        d->next_blip = t + (int64_t)expo(3 * DAY);
        unsigned k = 1 + (unsigned)(u01() * 3);
        for (unsigned j = 0; j < k; j++)
            if (!emit(s, i, t + 20 * j, dev_ts(d, t), KEEL_FLEET_OBS_STATE, KEEL_FLEET_EV_NONE, 0, 0, 0))
                return false;
    }
    if (t >= d->next_mistype) {
        d->next_mistype = t + (int64_t)expo(4 * DAY);
        if (!emit(s, i, rnd_time(t), dev_ts(d, t), KEEL_FLEET_OBS_EVENT, KEEL_FLEET_EV_AUTH_FAILURES, 40,
                  1 + (uint32_t)(u01() * 3), 0))
            return false;
    }
    const incident_t *aw = s->wave[1] >= 0 ? &s->inc[s->wave[1]] : NULL;
    if (aw != NULL && d->wave_member[1] && u01() < 2.0 / ((double)(aw->end - aw->start) / 60)) {
        if (!emit(s, i, rnd_time(t), dev_ts(d, t), KEEL_FLEET_OBS_EVENT, KEEL_FLEET_EV_AUTH_FAILURES, 40,
                  1 + (uint32_t)(u01() * 4), 0))
            return false;
    }

    /* the injected incident */
    if (!active)
        return true;
    int64_t at;
    switch (in->kind) {
    case KEEL_FLEET_ANOMALY_RECONNECT:
        if (d->next_conn < in->start)
            d->next_conn = in->start;
        while (d->next_conn < t + 60 && d->next_conn < in->end) {
            if (!emit(s, i, d->next_conn, dev_ts(d, d->next_conn), KEEL_FLEET_OBS_STATE, KEEL_FLEET_EV_NONE, 0, 0,
                      0))
                return false;
            d->next_conn += (int64_t)fmax(1, in->param * uni(0.7, 1.3));
        }
        break;
    case KEEL_FLEET_ANOMALY_AUTH:
        at = rnd_time(t);
        if (at < in->start)
            at = in->start;
        if (!emit(s, i, at, dev_ts(d, at), KEEL_FLEET_OBS_EVENT, KEEL_FLEET_EV_AUTH_FAILURES, 40,
                  (uint32_t)(in->param * uni(0.5, 1.5)) + 1, 0))
            return false;
        break;
    case KEEL_FLEET_ANOMALY_VERSION:
        if (t <= in->start && in->start < t + 60) {
            /* a rollback only means something below the security version it runs */
            bool rollback = u01() < 0.5;
            d->version = rollback ? V_OLD : V_EVIL + (int)(u01() * V_EVIL_N);
            if (!boot(s, i, in->start))
                return false;
        }
        break;
    case KEEL_FLEET_ANOMALY_TAMPER:
        if (t <= in->start && in->start < t + 60) {
            if (!emit(s, i, in->start, dev_ts(d, in->start), KEEL_FLEET_OBS_ALERT, KEEL_FLEET_EV_TAMPER, 90, 0, 0))
                return false;
            d->tamper_resend = u01() < 0.5 ? in->start + (int64_t)uni(600, 3 * 3600 - 60) : 0;
        }
        if (d->tamper_resend != 0 && t <= d->tamper_resend && d->tamper_resend < t + 60) {
            if (!boot(s, i, d->tamper_resend - 2) ||
                !emit(s, i, d->tamper_resend, dev_ts(d, d->tamper_resend), KEEL_FLEET_OBS_ALERT,
                      KEEL_FLEET_EV_TAMPER, 90, 0, 0))
                return false;
        }
        break;
    default:
        break;
    }
    return true;
}

/* ---- detection and scoring ------------------------------------------------------------------------ */

static uint64_t fnv1a(const char *p)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return h | 1; /* 0 marks an empty slot */
}

/* Whether the key is new (then it is remembered). */
static int key_new(sim_t *s, const char *key)
{
    if (2 * (s->nkeys + 1) > s->keycap) {
        size_t cap = s->keycap ? 2 * s->keycap : 4096;
        uint64_t *k = calloc(cap, sizeof *k);
        if (k == NULL)
            return -1;
        for (size_t i = 0; i < s->keycap; i++)
            if (s->keys[i] != 0) {
                size_t j = s->keys[i] & (cap - 1);
                while (k[j] != 0)
                    j = (j + 1) & (cap - 1);
                k[j] = s->keys[i];
            }
        free(s->keys);
        s->keys = k;
        s->keycap = cap;
    }
    uint64_t h = fnv1a(key);
    size_t j = h & (s->keycap - 1);
    while (s->keys[j] != 0) {
        if (s->keys[j] == h)
            return 0;
        j = (j + 1) & (s->keycap - 1);
    }
    s->keys[j] = h;
    s->nkeys++;
    return 1;
}

static bool within(const incident_t *in, int64_t t)
{
    return t >= in->start && t <= in->end + SLACK_S;
}

static int score_alert(sim_t *s, const keel_fleet_anomaly_alert_t *a, int dev)
{
    int fresh = key_new(s, a->dedupe);
    if (fresh <= 0)
        return fresh;
    if (a->kind == KEEL_FLEET_ANOMALY_FLEET) {
        int metric = strstr(a->detail, "\"messages\"") != NULL ? 0 : 1;
        for (size_t i = 0; i < s->ninc; i++) {
            incident_t *in = &s->inc[i];
            if (in->kind == KEEL_FLEET_ANOMALY_FLEET && in->metric == metric && within(in, a->time)) {
                if (!in->detected)
                    in->first_alert = a->time;
                in->detected = true;
                s->matched[a->kind]++;
                return 1;
            }
        }
        s->fp[a->kind]++;
        if (s->verbose)
            fprintf(stderr, "FP fleet t=+%.1fh %s\n", (double)(a->time - START) / 3600, a->detail);
        return 1;
    }
    device_t *d = &s->dev[dev];
    if (d->inc >= 0) {
        incident_t *in = &s->inc[d->inc];
        if (within(in, a->time) && in->kind == a->kind) {
            if (!in->detected)
                in->first_alert = a->time;
            in->detected = true;
            s->matched[a->kind]++;
            return 1;
        }
        if (within(in, a->time)) {
            s->collateral[a->kind]++;
            return 1;
        }
    }
    for (int m = 0; m < 2; m++)
        for (size_t i = 0; d->wave_member[m] && i < s->ninc; i++)
            if (s->inc[i].kind == KEEL_FLEET_ANOMALY_FLEET && s->inc[i].metric == m && within(&s->inc[i], a->time)) {
                s->collateral[a->kind]++;
                return 1;
            }
    s->fp[a->kind]++;
    if (s->verbose)
        fprintf(stderr, "FP %s %s t=+%.2fh %s (device incident: %s +%.2fh..+%.2fh)\n",
                keel_fleet_anomaly_kind_str(a->kind), a->device, (double)(a->time - START) / 3600, a->detail,
                d->inc >= 0 ? keel_fleet_anomaly_kind_str(s->inc[d->inc].kind) : "none",
                d->inc >= 0 ? (double)(s->inc[d->inc].start - START) / 3600 : 0,
                d->inc >= 0 ? (double)(s->inc[d->inc].end - START) / 3600 : 0);
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int feed_minute(sim_t *s, int64_t t)
{
    qsort(s->recs.v, s->recs.n, sizeof *s->recs.v, rec_cmp);
    keel_fleet_anomaly_alert_t alerts[KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX];
    /* alerts are scored after the clock stops */
    static keel_fleet_anomaly_alert_t *pending;
    static int *pending_dev;
    static size_t pending_cap;
    size_t npending = 0;
    double t0 = now_s();
    for (size_t k = 0; k < s->recs.n; k++) {
        const rec_t *r = &s->recs.v[k];
        const version_t *v = &versions[r->version];
        keel_fleet_anomaly_obs_t o = {
            .device = s->ids[r->dev],
            .time = r->time,
            .device_time = r->device_time,
            .kind = (keel_fleet_obs_kind_t)r->kind,
            .event = (keel_fleet_obs_event_t)r->event,
            .size = r->size,
            .auth_failures = r->count,
            .version = r->event == KEEL_FLEET_EV_BOOT ? v->v : NULL,
            .security_version = v->sv,
            .release_known = v->known,
        };
        size_t n = 0;
        if (keel_fleet_anomaly_observe(&s->cfg, &s->dev[r->dev].st, &s->fleet, &o, alerts,
                                       KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX, &n) != KEEL_OK)
            return die(keel_error_message());
        for (size_t j = 0; j < n; j++) {
            if (npending == pending_cap) {
                size_t cap = pending_cap ? 2 * pending_cap : 1024;
                keel_fleet_anomaly_alert_t *p = realloc(pending, cap * sizeof *p);
                int *pd = realloc(pending_dev, cap * sizeof *pd);
                if (p != NULL)
                    pending = p;
                if (pd != NULL)
                    pending_dev = pd;
                if (p == NULL || pd == NULL)
                    return die("out of memory");
                pending_cap = cap;
            }
            pending[npending] = alerts[j];
            pending_dev[npending++] = (int)r->dev;
        }
    }
    keel_fleet_anomaly_alert_t ta[KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX];
    size_t nt = 0;
    if (keel_fleet_anomaly_fleet_tick(&s->cfg, &s->fleet, t + 60, ta, KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX, &nt) !=
        KEEL_OK)
        return die(keel_error_message());
    s->seconds += now_s() - t0;
    s->observations += s->recs.n;
    for (size_t j = 0; j < npending; j++)
        if (score_alert(s, &pending[j], pending_dev[j]) < 0)
            return die("out of memory");
    for (size_t j = 0; j < nt; j++)
        if (score_alert(s, &ta[j], -1) < 0)
            return die("out of memory");
    if (t + 60 >= START + (int64_t)s->days * DAY) {
        free(pending);
        free(pending_dev);
        pending = NULL;
        pending_dev = NULL;
        pending_cap = 0;
    }
    s->recs.n = 0;
    return 0;
}

static int run(sim_t *s)
{
    int64_t end = START + (int64_t)s->days * DAY;
    double fleet_factor = 1;
    s->wave[0] = s->wave[1] = -1;
    for (int64_t t = START; t < end; t += 60) {
        if ((t - START) % DAY == 0) {
            fleet_factor = exp(0.05 * normal());
            for (unsigned i = 0; i < s->devices; i++)
                s->dev[i].day_factor = exp(0.15 * normal());
        }
        for (size_t i = 0; i < s->ninc; i++) {
            incident_t *in = &s->inc[i];
            if (in->kind != KEEL_FLEET_ANOMALY_FLEET)
                continue;
            if (t <= in->start && in->start < t + 60) {
                s->wave[in->metric] = (int)i;
                for (unsigned k = 0; k < s->devices; k++)
                    s->dev[k].wave_member[in->metric] = u01() < in->param;
                if (in->metric == 0)
                    in->param = uni(2, 4); /* from now on: the members' extra rate */
            }
            if (t >= in->end && s->wave[in->metric] == (int)i)
                s->wave[in->metric] = -1;
        }
        for (unsigned i = 0; i < s->devices; i++)
            if (!device_minute(s, i, t, fleet_factor))
                return die("out of memory");
        if (feed_minute(s, t) != 0)
            return EXIT_MISS;
    }
    return 0;
}

/* Text round trips of every device's state, as fleetd does per message. */
static double roundtrip_us(sim_t *s)
{
    char text[KEEL_FLEET_ANOMALY_STATE_TEXT_MAX];
    unsigned reps = 0;
    double t0 = now_s(), t1 = t0;
    size_t bytes = 0;
    while (t1 - t0 < 0.3) {
        for (unsigned i = 0; i < s->devices; i++) {
            keel_fleet_anomaly_device_t d;
            if (keel_fleet_anomaly_device_format(&s->dev[i].st, text, sizeof text) != KEEL_OK ||
                keel_fleet_anomaly_device_parse(text, strlen(text), s->ids[i], &d) != KEEL_OK)
                return -1;
            bytes += strlen(text);
        }
        reps++;
        t1 = now_s();
    }
    (void)bytes;
    return (t1 - t0) * 1e6 / ((double)reps * s->devices);
}

static int usage(void)
{
    fprintf(stderr, "usage: fleet_anomaly [--devices N] [--days D] [--seed S] [--incidents K] [--quick]\n"
                    "                     [--json] [--json-file PATH] [--verbose]\n");
    return EXIT_USAGE;
}

static bool parse_ulong(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    char *end = NULL;
    unsigned long v = strtoul(s, &end, 10);
    if (*end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    static sim_t sim;
    sim_t *s = &sim;
    unsigned long devices = 0, days = 0, incidents = 0, seed = 1;
    bool quick = false, json = false;
    const char *json_file = NULL;
    static const struct option opts[] = {
        {"devices", required_argument, NULL, 'n'}, {"days", required_argument, NULL, 'd'},
        {"seed", required_argument, NULL, 's'},    {"incidents", required_argument, NULL, 'i'},
        {"quick", no_argument, NULL, 'q'},         {"json", no_argument, NULL, 'j'},
        {"json-file", required_argument, NULL, 'f'}, {"verbose", no_argument, NULL, 'v'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (!parse_ulong(optarg, 100, DEVICES_MAX, &devices))
                return usage();
            break;
        case 'd':
            if (!parse_ulong(optarg, 2, DAYS_MAX, &days))
                return usage();
            break;
        case 's':
            if (!parse_ulong(optarg, 0, UINT32_MAX, &seed))
                return usage();
            break;
        case 'i':
            if (!parse_ulong(optarg, 1, INCIDENTS_MAX / 8, &incidents))
                return usage();
            break;
        case 'q':
            quick = true;
            break;
        case 'j':
            json = true;
            break;
        case 'f':
            json_file = optarg;
            break;
        case 'v':
            s->verbose = true;
            break;
        default:
            return usage();
        }
    }
    if (optind != argc)
        return usage();
    s->devices = (unsigned)(devices ? devices : quick ? DEVICES_QUICK : DEVICES_DEFAULT);
    s->days = (unsigned)(days ? days : quick ? DAYS_QUICK : DAYS_DEFAULT);
    /* incidents per device kind: about one device in 125 */
    s->incidents = (unsigned)(incidents ? incidents : s->devices / 125 < 8 ? 8 : s->devices / 125);
    if ((unsigned long)s->incidents * 6 > s->devices / 2)
        return usage();
    s->seed = seed;
    rng_seed(seed);
    keel_fleet_anomaly_config_default(&s->cfg);
    keel_fleet_anomaly_fleet_init(&s->fleet);
    s->dev = calloc(s->devices, sizeof *s->dev);
    s->ids = calloc(s->devices, sizeof *s->ids);
    if (s->dev == NULL || s->ids == NULL)
        return die("out of memory");
    for (unsigned i = 0; i < s->devices; i++) {
        device_new(s, i);
        snprintf(s->ids[i], sizeof s->ids[i], "dev-%07u", i);
    }
    plan(s);
    int rc = run(s);
    if (rc != 0)
        return rc;
    double rt = roundtrip_us(s);
    if (rt < 0)
        return die("state text round trip failed");

    /* the table */
    size_t inc_n[KEEL_FLEET_ANOMALY_KINDS] = {0}, tp[KEEL_FLEET_ANOMALY_KINDS] = {0};
    double lat[KEEL_FLEET_ANOMALY_KINDS] = {0};
    for (size_t i = 0; i < s->ninc; i++) {
        inc_n[s->inc[i].kind]++;
        if (!s->inc[i].detected && s->verbose)
            fprintf(stderr, "FN %s device %d t=+%.1fh..+%.1fh param %.2f\n", keel_fleet_anomaly_kind_str(s->inc[i].kind),
                    s->inc[i].device, (double)(s->inc[i].start - START) / 3600,
                    (double)(s->inc[i].end - START) / 3600, s->inc[i].param);
        if (s->inc[i].detected) {
            tp[s->inc[i].kind]++;
            lat[s->inc[i].kind] += (double)(s->inc[i].first_alert - s->inc[i].start) / 60.0;
        }
    }
    double ops = s->seconds > 0 ? (double)s->observations / s->seconds : 0;
    bool pass = true;
    printf("fleet_anomaly: %u devices, %u days, seed %" PRIu64 ": %" PRIu64 " observations, %zu alerts (by key)\n",
           s->devices, s->days, s->seed, s->observations, s->nkeys);
    printf("%-10s %9s %7s %5s %5s %5s %10s %9s %7s %12s\n", "kind", "incidents", "alerts", "TP", "FP", "FN",
           "collateral", "precision", "recall", "latency_min");
    char js[KEEL_FLEET_ANOMALY_KINDS][320];
    for (int k = 0; k < KEEL_FLEET_ANOMALY_KINDS; k++) {
        size_t alerts = s->matched[k] + s->fp[k] + s->collateral[k];
        double prec = s->matched[k] + s->fp[k] > 0 ? (double)s->matched[k] / (double)(s->matched[k] + s->fp[k]) : 1;
        double rec = inc_n[k] > 0 ? (double)tp[k] / (double)inc_n[k] : 1;
        double l = tp[k] > 0 ? lat[k] / (double)tp[k] : 0;
        if (prec < GOAL || rec < GOAL || inc_n[k] == 0)
            pass = false;
        printf("%-10s %9zu %7zu %5zu %5zu %5zu %10zu %9.3f %7.3f %12.1f\n", keel_fleet_anomaly_kind_str(k),
               inc_n[k], alerts, tp[k], s->fp[k], inc_n[k] - tp[k], s->collateral[k], prec, rec, l);
        snprintf(js[k], sizeof js[k],
                 "{\"kind\": \"%s\", \"incidents\": %zu, \"alerts\": %zu, \"tp\": %zu, \"fp\": %zu, \"fn\": %zu, "
                 "\"collateral\": %zu, \"precision\": %.4f, \"recall\": %.4f, \"latency_min\": %.1f}",
                 keel_fleet_anomaly_kind_str(k), inc_n[k], alerts, tp[k], s->fp[k], inc_n[k] - tp[k],
                 s->collateral[k], prec, rec, l);
    }
    printf("throughput: %.0f observations/s through the detectors (%.2f us each); state text round trip %.2f us\n",
           ops, ops > 0 ? 1e6 / ops : 0, rt);
    for (int k = 0; k < KEEL_FLEET_ANOMALY_KINDS; k++)
        printf("{\"fleet_anomaly\": %s}\n", js[k]);
    printf("verdict: fleet anomaly precision and recall >= %.2f for every kind (goal): %s\n", GOAL,
           pass ? "PASS" : "MISS");

    FILE *out[2] = {json ? stdout : NULL, NULL};
    if (json_file != NULL && (out[1] = fopen(json_file, "w")) == NULL)
        return die("cannot write the JSON file");
    for (int o = 0; o < 2; o++) {
        if (out[o] == NULL)
            continue;
        fprintf(out[o],
                "{\n  \"devices\": %u,\n  \"days\": %u,\n  \"seed\": %" PRIu64 ",\n  \"observations\": %" PRIu64
                ",\n  \"observations_per_second\": %.0f,\n  \"state_roundtrip_us\": %.3f,\n  \"goal\": %.2f,\n"
                "  \"kinds\": [\n",
                s->devices, s->days, s->seed, s->observations, ops, rt, GOAL);
        for (int k = 0; k < KEEL_FLEET_ANOMALY_KINDS; k++)
            fprintf(out[o], "    %s%s\n", js[k], k + 1 < KEEL_FLEET_ANOMALY_KINDS ? "," : "");
        fprintf(out[o], "  ],\n  \"pass\": %s\n}\n", pass ? "true" : "false");
    }
    if (out[1] != NULL && fclose(out[1]) != 0)
        return die("cannot write the JSON file");
    free(s->recs.v);
    free(s->keys);
    free(s->dev);
    free(s->ids);
    return pass ? 0 : EXIT_MISS;
}

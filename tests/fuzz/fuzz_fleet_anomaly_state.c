/*
 * Fuzz target: a device's anomaly detector state as keel-fleetd reads it
 * back from its database (src/fleet/anomaly.c), and the detectors run on
 * it. Whoever can write the database's detector column can hand it any
 * text; the detectors must neither crash on it nor carry a broken state on.
 *
 * Input: the state text is everything up to the first '\n' (or the whole
 * input). The bytes after it drive the rest: one byte picks a configuration
 * (the defaults, every setting at its minimum, or at its maximum), then each
 * 12 bytes make one observation (kind, event, time step of seconds to
 * years, the envelope's time, size, auth-failure count, boot version) fed
 * through keel_fleet_anomaly_observe with the parsed state, as fleetd's
 * ingest does; some also tick the fleet-wide state.
 *
 * What must hold:
 *  - a state that parses formats again (KEEL_OK, at most
 *    KEEL_FLEET_ANOMALY_STATE_TEXT_MAX bytes with its NUL) and that text
 *    parses to the same state, field by field and bit for bit; one that does
 *    not parse leaves a fresh state;
 *  - formatting into a buffer too small is KEEL_ERR_TOO_LARGE with "";
 *  - observe with valid arguments succeeds, writes at most its cap of alerts
 *    (each with a known kind and severity, a NUL-terminated detail and key),
 *    and leaves no NaN, infinity or negative value in the state; refused
 *    arguments (a bad device id) change nothing;
 *  - after the observations the state still formats and round-trips: what
 *    fleetd stores after a batch, it can read back.
 */
#include "fuzz.h"

#include "keel/fleet_anomaly.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEVICE "01jdx4k7m2q9p5r8s3t6v0w1y4"
#define OBS_BYTES 12
#define OBS_MAX 64
#define TIME_CAP ((int64_t)1 << 40) /* observe's upper bound on times */

static keel_fleet_anomaly_config_t configs[3];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    keel_fleet_anomaly_config_default(&configs[0]);
    /* Every setting at the bottom of its range, then at the top (the ranges
     * of the [anomaly] schema). */
    keel_fleet_anomaly_config_t lo = {
        .warmup_messages = 1, .warmup_s = 0, .baseline_half_life_s = 3600, .offline_s = 60, .late_s = 1,
        .backlog_drain_s = 0, .incident_gap_s = 60, .rate_factor = 2, .rate_min_per_hour = 1, .size_z = 2,
        .size_min_bytes = 0, .size_window = 10, .size_max_factor = 1, .reconnect_per_hour = 1,
        .reconnect_factor = 1, .auth_failures = 1, .auth_window_s = 60, .fleet_factor_pct = 101, .fleet_z = 1,
        .fleet_min = 0, .fleet_window_min = 1, .fleet_sustain_min = 1, .fleet_level_half_life_min = 1,
        .fleet_profile_half_life_days = 1,
    };
    keel_fleet_anomaly_config_t hi = {
        .warmup_messages = 100000, .warmup_s = 2592000, .baseline_half_life_s = 2592000, .offline_s = 604800,
        .late_s = 86400, .backlog_drain_s = 86400, .incident_gap_s = 604800, .rate_factor = 1000,
        .rate_min_per_hour = 1000000, .size_z = 100, .size_min_bytes = 1048576, .size_window = 100000,
        .size_max_factor = 100, .reconnect_per_hour = 100000, .reconnect_factor = 1000, .auth_failures = 1000000,
        .auth_window_s = 604800, .fleet_factor_pct = 10000, .fleet_z = 100, .fleet_min = 1000000,
        .fleet_window_min = KEEL_FLEET_ANOMALY_WINDOW_MAX, .fleet_sustain_min = 60,
        .fleet_level_half_life_min = 10080, .fleet_profile_half_life_days = 60,
    };
    configs[1] = lo;
    configs[2] = hi;
    for (size_t i = 0; i < 3; i++)
        if (keel_fleet_anomaly_config_check(&configs[i]) != KEEL_OK) {
            fprintf(stderr, "fuzz_fleet_anomaly_state: config %zu: %s\n", i, keel_error_message());
            abort();
        }
    return 0;
}

#define SAME(a, b, f) (memcmp(&(a)->f, &(b)->f, sizeof(a)->f) == 0)

static int same_state(const keel_fleet_anomaly_device_t *a, const keel_fleet_anomaly_device_t *b)
{
    int ok = SAME(a, b, first) && SAME(a, b, last) && SAME(a, b, messages) && SAME(a, b, norm) &&
             SAME(a, b, rate_fast) && SAME(a, b, rate_slow) && SAME(a, b, credit_s) && SAME(a, b, credit_until) &&
             SAME(a, b, size_n) && SAME(a, b, size_mean) && SAME(a, b, size_var) && SAME(a, b, size_max) &&
             SAME(a, b, conn_fast) && SAME(a, b, conn_slow) && SAME(a, b, auth) && SAME(a, b, security_version) &&
             SAME(a, b, incident) && strcmp(a->version, b->version) == 0;
    return ok;
}

static int fine(double x)
{
    return isfinite(x) && x >= 0;
}

static void check_fields(const keel_fleet_anomaly_device_t *d)
{
    fuzz_must(fine(d->norm) && fine(d->rate_fast) && fine(d->rate_slow) && fine(d->size_n) && fine(d->size_mean) &&
             fine(d->size_var) && fine(d->size_max) && fine(d->conn_fast) && fine(d->conn_slow) && fine(d->auth),
         "a NaN, infinite or negative double in the state");
    fuzz_must(d->first >= 0 && d->last >= d->first && d->credit_s >= 0 && d->credit_until >= 0 &&
             d->security_version >= -1,
         "a time or count out of range in the state");
    fuzz_must(memchr(d->version, '\0', sizeof d->version) != NULL, "the version is not terminated");
    for (size_t i = 0; i < KEEL_FLEET_ANOMALY_DEVICE_INCIDENTS; i++)
        fuzz_must(d->incident[i].since >= 0 && (d->incident[i].since != 0 || d->incident[i].last == 0) &&
                 d->incident[i].last >= d->incident[i].since,
             "an incident out of order");
}

static void check_fleet(const keel_fleet_anomaly_fleet_t *f)
{
    for (int m = 0; m < KEEL_FLEET_ANOMALY_FLEET_METRICS; m++) {
        fuzz_must(fine(f->level_num[m]) && fine(f->level_den[m]) && fine(f->slot_sum[m]) && fine(f->slot_minutes[m]),
             "a broken fleet level");
        for (int i = 0; i < KEEL_FLEET_ANOMALY_SLOTS; i++)
            fuzz_must(fine(f->profile[m][i]), "a broken fleet profile");
        for (int i = 0; i < KEEL_FLEET_ANOMALY_WINDOW_MAX; i++)
            fuzz_must(fine(f->win_count[m][i]) && fine(f->win_expect[m][i]), "a broken fleet window");
    }
}

/* A state fleetd would store: it formats, within the cap, and reads back the same. */
static void round_trip(const keel_fleet_anomaly_device_t *d, const char *what)
{
    char text[KEEL_FLEET_ANOMALY_STATE_TEXT_MAX];
    if (keel_fleet_anomaly_device_format(d, text, sizeof text) != KEEL_OK) {
        fprintf(stderr,
                "fuzz_fleet_anomaly_state: %s: format: %s\n first %" PRId64 " last %" PRId64 " messages %" PRIu64
                " norm %.17g rate %.17g/%.17g credit %" PRId64 "/%" PRId64 " size %.17g/%.17g/%.17g/%.17g"
                " conn %.17g/%.17g auth %.17g sv %" PRId64 " version \"%s\"\n",
                what, keel_error_message(), d->first, d->last, d->messages, d->norm, d->rate_fast, d->rate_slow,
                d->credit_s, d->credit_until, d->size_n, d->size_mean, d->size_var, d->size_max, d->conn_fast,
                d->conn_slow, d->auth, d->security_version, d->version);
        for (size_t i = 0; i < KEEL_FLEET_ANOMALY_DEVICE_INCIDENTS; i++)
            fprintf(stderr, " incident %zu: %" PRId64 " .. %" PRId64 "\n", i, d->incident[i].since,
                    d->incident[i].last);
        abort();
    }
    size_t len = strlen(text);
    fuzz_must(len + 1 <= KEEL_FLEET_ANOMALY_STATE_TEXT_MAX && len > 0, "the state text is over its cap");
    keel_fleet_anomaly_device_t again;
    if (keel_fleet_anomaly_device_parse(text, len, DEVICE, &again) != KEEL_OK) {
        fprintf(stderr, "fuzz_fleet_anomaly_state: %s: \"%s\" does not parse: %s\n", what, text,
                keel_error_message());
        abort();
    }
    fuzz_must(same_state(d, &again), "format then parse gives another state");
    /* too small a buffer: refused, and nothing half-written */
    char small[KEEL_FLEET_ANOMALY_STATE_TEXT_MAX];
    memset(small, 'x', sizeof small);
    fuzz_must(keel_fleet_anomaly_device_format(d, small, len) == KEEL_ERR_TOO_LARGE && small[0] == '\0',
         "a state formatted into a buffer too small");
    keel_error_clear();
}

static uint32_t u16_at(const uint8_t *c)
{
    return (uint32_t)c[0] | (uint32_t)c[1] << 8;
}

static const char *const versions[] = {"1.0.0",     "1.2.3+build.7", "2.0.0-rc.1", "not a version!", "",
                                       "?",         "0.0.1",
                                       "1234567890123456789012345678901234567890123456789012345678901234567890"};

static void observe_all(keel_fleet_anomaly_device_t *d, const uint8_t *p, size_t n)
{
    if (n == 0)
        return;
    const keel_fleet_anomaly_config_t *cfg = &configs[p[0] % 3];
    p++, n--;
    keel_fleet_anomaly_fleet_t fleet;
    keel_fleet_anomaly_fleet_init(&fleet);
    int64_t t = d->last > 0 ? d->last : 1700000000;
    for (size_t k = 0; k + OBS_BYTES <= n && k / OBS_BYTES < OBS_MAX; k += OBS_BYTES) {
        const uint8_t *c = p + k;
        int64_t dt = (int64_t)u16_at(c + 1) << (c[3] % 26);
        if (c[3] & 0x80)
            t = t - dt > 0 ? t - dt : 1; /* out of order: the same instant for observe */
        else
            t = t + dt <= TIME_CAP ? t + dt : TIME_CAP;
        keel_fleet_anomaly_obs_t o = {
            .device = DEVICE,
            .time = t,
            .kind = (keel_fleet_obs_kind_t)(c[0] & 3),
            .event = (keel_fleet_obs_event_t)((c[0] >> 2) % 6),
            .size = (uint64_t)u16_at(c + 7) << (c[9] % 40),
            .auth_failures = (uint64_t)c[10] << (c[11] % 40),
            .version = versions[c[11] % (sizeof versions / sizeof versions[0])],
            .security_version = (int64_t)(c[10] % 8) - 1,
            .release_known = (c[0] & 0x80) == 0,
        };
        if (c[4] != 0) {
            int64_t back = (int64_t)u16_at(c + 5) << (c[4] % 24);
            o.device_time = (c[4] & 0x80) ? (t + 60 <= TIME_CAP ? t + 60 : TIME_CAP) : (t - back > 0 ? t - back : 0);
        }
        keel_fleet_anomaly_alert_t alerts[KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX];
        size_t na = 99;
        if ((c[0] & 0x60) == 0x60) {
            /* a device id observe must refuse, changing nothing */
            keel_fleet_anomaly_device_t before = *d;
            o.device = (c[1] & 1) ? "" : "bad\"id";
            fuzz_must(keel_fleet_anomaly_observe(cfg, d, &fleet, &o, alerts, KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX, &na) ==
                         KEEL_ERR_ARG &&
                     na == 0 && same_state(&before, d),
                 "a refused observation changed the state");
            keel_error_clear();
            continue;
        }
        keel_status_t st =
            keel_fleet_anomaly_observe(cfg, d, &fleet, &o, alerts, KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX, &na);
        if (st != KEEL_OK) {
            fprintf(stderr, "fuzz_fleet_anomaly_state: observe: %s\n", keel_error_message());
            abort();
        }
        fuzz_must(na <= KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX, "more alerts than the cap");
        for (size_t i = 0; i < na; i++) {
            const keel_fleet_anomaly_alert_t *a = &alerts[i];
            fuzz_must(strcmp(keel_fleet_anomaly_kind_str(a->kind), "?") != 0 && a->severity != NULL &&
                     (strcmp(a->severity, "warning") == 0 || strcmp(a->severity, "critical") == 0),
                 "an alert of no known kind or severity");
            fuzz_must(memchr(a->detail, '\0', sizeof a->detail) != NULL && a->detail[0] == '{' &&
                     memchr(a->dedupe, '\0', sizeof a->dedupe) != NULL && a->dedupe[0] != '\0',
                 "an alert without its detail or key");
            fuzz_must(isfinite(a->score), "an alert's score is not finite");
        }
        check_fields(d);
        if (c[0] & 0x10) {
            keel_fleet_anomaly_alert_t fa[KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX];
            size_t nf = 99;
            fuzz_must(keel_fleet_anomaly_fleet_tick(cfg, &fleet, t, fa, KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX, &nf) ==
                         KEEL_OK &&
                     nf <= KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX,
                 "a fleet tick failed");
            check_fleet(&fleet);
        }
    }
    round_trip(d, "after the observations");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t tl = nl != NULL ? (size_t)(nl - data) : size;
    /* exact size: a read past the text is ASan's to see */
    char *text = malloc(tl > 0 ? tl : 1);
    if (text == NULL)
        return 0;
    if (tl > 0)
        memcpy(text, data, tl);
    keel_fleet_anomaly_device_t d;
    memset(&d, 0xa5, sizeof d);
    keel_status_t st = keel_fleet_anomaly_device_parse(text, tl, DEVICE, &d);
    free(text);
    if (st == KEEL_OK) {
        check_fields(&d);
        round_trip(&d, "a parsed state");
    } else {
        fuzz_must(st == KEEL_ERR_FORMAT || st == KEEL_ERR_TOO_LARGE, "a refused state with an odd status");
        keel_fleet_anomaly_device_t fresh;
        keel_fleet_anomaly_device_init(&fresh);
        fuzz_must(same_state(&d, &fresh), "a refused state is not a fresh one");
        keel_error_clear();
    }
    if (nl != NULL)
        observe_all(&d, nl + 1, size - tl - 1);
    return 0;
}

/*
 * Unit tests for keel-fleetd's anomaly detectors (keel/fleet_anomaly.h):
 * each detector fires on its anomaly and stays quiet on normal traffic, the
 * warm-up holds, incidents collapse into one alert and distinct ones stay
 * distinct, late backlog is credited only after a silence, the state text
 * round-trips and anything else is refused with a fresh state, the fleet
 * tick finds a sudden shift against its time-of-day profile.
 */
#include "testutil.h"

#include "keel/config.h"
#include "keel/fleet_anomaly.h"

#include <inttypes.h>
#include <math.h>

#define T0 1763800000 /* a Unix time, as in the protocol's examples */
#define DEV "01jdx4k7m2q9p5r8s3t6v0w1y4"
#define ALERTS_MAX 8
#define PI 3.14159265358979323846

typedef struct {
    keel_fleet_anomaly_config_t cfg;
    keel_fleet_anomaly_device_t dev;
    keel_fleet_anomaly_alert_t alerts[ALERTS_MAX];
    size_t total[KEEL_FLEET_ANOMALY_KINDS]; /* alerts seen per kind */
    keel_fleet_anomaly_alert_t last;        /* the latest alert */
    uint64_t rng;
} fx_t;

static double unit(fx_t *fx)
{
    fx->rng = fx->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(fx->rng >> 11) * 0x1.0p-53;
}

static void fx_init(fx_t *fx)
{
    memset(fx, 0, sizeof *fx);
    keel_fleet_anomaly_config_default(&fx->cfg);
    keel_fleet_anomaly_device_init(&fx->dev);
    fx->rng = 42;
}

static size_t feed(fx_t *fx, const keel_fleet_anomaly_obs_t *o)
{
    size_t n = 99;
    keel_status_t st = keel_fleet_anomaly_observe(&fx->cfg, &fx->dev, NULL, o, fx->alerts, ALERTS_MAX, &n);
    if (st != KEEL_OK)
        fail_msg("observe: %s: %s", keel_status_str(st), keel_error_message());
    assert_true(n <= KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX);
    for (size_t i = 0; i < n; i++) {
        assert_true(fx->alerts[i].kind < KEEL_FLEET_ANOMALY_KINDS);
        assert_true(fx->alerts[i].score >= 1.0);
        assert_string_equal(fx->alerts[i].device, o->device);
        assert_non_null(strstr(fx->alerts[i].dedupe, o->device));
        /* the detail is a JSON object */
        json_error_t err;
        json_t *j = json_loads(fx->alerts[i].detail, 0, &err);
        if (j == NULL || !json_is_object(j))
            fail_msg("detail is not a JSON object: %s", fx->alerts[i].detail);
        json_decref(j);
        fx->total[fx->alerts[i].kind]++;
        fx->last = fx->alerts[i];
    }
    return n;
}

static size_t telemetry(fx_t *fx, int64_t t, uint64_t size)
{
    keel_fleet_anomaly_obs_t o = {.device = DEV, .time = t, .device_time = t, .kind = KEEL_FLEET_OBS_TELEMETRY,
                                  .size = size};
    return feed(fx, &o);
}

static size_t connection(fx_t *fx, int64_t t)
{
    keel_fleet_anomaly_obs_t o = {.device = DEV, .time = t, .kind = KEEL_FLEET_OBS_STATE};
    return feed(fx, &o);
}

static size_t boot(fx_t *fx, int64_t t, const char *version, int64_t sv, bool known)
{
    keel_fleet_anomaly_obs_t o = {.device = DEV,
                                  .time = t,
                                  .device_time = t,
                                  .kind = KEEL_FLEET_OBS_EVENT,
                                  .event = KEEL_FLEET_EV_BOOT,
                                  .size = 120,
                                  .version = version,
                                  .security_version = sv,
                                  .release_known = known};
    return feed(fx, &o);
}

static size_t auth_report(fx_t *fx, int64_t t, uint64_t count)
{
    keel_fleet_anomaly_obs_t o = {.device = DEV, .time = t, .device_time = t, .kind = KEEL_FLEET_OBS_EVENT,
                                  .event = KEEL_FLEET_EV_AUTH_FAILURES, .size = 40, .auth_failures = count};
    return feed(fx, &o);
}

static size_t all_alerts(const fx_t *fx)
{
    size_t n = 0;
    for (int k = 0; k < KEEL_FLEET_ANOMALY_KINDS; k++)
        n += fx->total[k];
    return n;
}

/* A day of a normal device from `start`: telemetry every 90-150 s of 300-500
 * bytes, a reboot (boot + connection) at its start, two network blips, and a
 * mistyped password. Returns the time it ends. */
static int64_t normal_day(fx_t *fx, int64_t start)
{
    int64_t t = start;
    connection(fx, t);
    boot(fx, t + 1, "1.4.2", 3, true);
    while (t < start + 86400) {
        t += 90 + (int64_t)(60 * unit(fx));
        telemetry(fx, t, 300 + (uint64_t)(200 * unit(fx)));
        if (t % 30000 < 150)
            connection(fx, t + 5);
    }
    auth_report(fx, start + 40000, 2);
    return t;
}

static void test_config(void **state)
{
    (void)state;
    keel_fleet_anomaly_config_t cfg;
    keel_fleet_anomaly_config_default(&cfg);
    assert_int_equal(keel_fleet_anomaly_config_check(&cfg), KEEL_OK);
    assert_int_equal(cfg.rate_factor, 5);
    cfg.fleet_window_min = 16;
    assert_int_equal(keel_fleet_anomaly_config_check(&cfg), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "fleet_window_min"));
    keel_fleet_anomaly_config_default(&cfg);
    cfg.rate_factor = 1;
    assert_int_equal(keel_fleet_anomaly_config_check(&cfg), KEEL_ERR_CONFIG);

    /* The schema through the real configuration reader. */
    size_t n = 0;
    const keel_cfg_key_t *schema = keel_fleet_anomaly_config_schema(&n);
    assert_true(n >= 20);
    char *dir = tmpdir_new();
    char path[KEEL_PATH_MAX];
    path_in(path, dir, "fleetd.conf");
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("[anomaly]\nrate_factor = 7\nauth_failures = 50\n", fp);
    assert_int_equal(fclose(fp), 0);
    keel_config_t *c = NULL;
    assert_int_equal(keel_config_load(path, schema, n, &c), KEEL_OK);
    assert_int_equal(keel_fleet_anomaly_config_read(c, &cfg), KEEL_OK);
    assert_int_equal(cfg.rate_factor, 7);
    assert_int_equal(cfg.auth_failures, 50);
    assert_int_equal(cfg.size_min_bytes, 1024); /* the default */
    keel_config_free(c);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("[anomaly]\nfleet_window_min = 99\n", fp);
    assert_int_equal(fclose(fp), 0);
    assert_int_equal(keel_config_load(path, schema, n, &c), KEEL_ERR_CONFIG);
    tmpdir_free(dir);
}

static void test_args(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    size_t n = 0;
    keel_fleet_anomaly_obs_t o = {.device = DEV, .time = T0, .kind = KEEL_FLEET_OBS_TELEMETRY, .size = 10};
    assert_int_equal(keel_fleet_anomaly_observe(&fx.cfg, &fx.dev, NULL, &o, fx.alerts, 1, &n), KEEL_ERR_ARG);
    assert_int_equal(keel_fleet_anomaly_observe(NULL, &fx.dev, NULL, &o, fx.alerts, ALERTS_MAX, &n), KEEL_ERR_ARG);
    o.device = "";
    assert_int_equal(keel_fleet_anomaly_observe(&fx.cfg, &fx.dev, NULL, &o, fx.alerts, ALERTS_MAX, &n),
                     KEEL_ERR_ARG);
    o.device = "has space";
    assert_int_equal(keel_fleet_anomaly_observe(&fx.cfg, &fx.dev, NULL, &o, fx.alerts, ALERTS_MAX, &n),
                     KEEL_ERR_ARG);
    char longid[KEEL_FLEET_ANOMALY_ID_MAX + 2];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    o.device = longid;
    assert_int_equal(keel_fleet_anomaly_observe(&fx.cfg, &fx.dev, NULL, &o, fx.alerts, ALERTS_MAX, &n),
                     KEEL_ERR_ARG);
    o.device = DEV;
    o.kind = (keel_fleet_obs_kind_t)9;
    assert_int_equal(keel_fleet_anomaly_observe(&fx.cfg, &fx.dev, NULL, &o, fx.alerts, ALERTS_MAX, &n),
                     KEEL_ERR_ARG);
    o.kind = KEEL_FLEET_OBS_TELEMETRY;
    o.time = 0;
    assert_int_equal(keel_fleet_anomaly_observe(&fx.cfg, &fx.dev, NULL, &o, fx.alerts, ALERTS_MAX, &n),
                     KEEL_ERR_ARG);
    assert_int_equal(fx.dev.first, 0); /* nothing changed */
    assert_string_equal(keel_fleet_anomaly_kind_str(KEEL_FLEET_ANOMALY_RECONNECT), "reconnect");
    assert_string_equal(keel_fleet_anomaly_kind_str((keel_fleet_anomaly_kind_t)77), "?");
}

static void test_quiet_normal(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = T0;
    for (int day = 0; day < 5; day++)
        t = normal_day(&fx, t + 600);
    assert_int_equal(all_alerts(&fx), 0);
    /* A diurnal device: 4x more telemetry by day than by night. */
    fx_init(&fx);
    t = T0;
    for (int hour = 0; hour < 24 * 4; hour++) {
        int per_hour = (hour % 24) >= 8 && (hour % 24) < 20 ? 40 : 10;
        for (int i = 0; i < per_hour; i++)
            telemetry(&fx, t + hour * 3600 + i * (3600 / per_hour), 400);
    }
    assert_int_equal(all_alerts(&fx), 0);
}

static void test_rate(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = normal_day(&fx, T0);
    assert_int_equal(all_alerts(&fx), 0);
    /* A flood: one message every 5 s for two hours, ~25x its rate. */
    int64_t start = t + 100, first_alert = 0;
    for (int64_t u = start; u < start + 7200; u += 5)
        if (telemetry(&fx, u, 400) > 0 && first_alert == 0)
            first_alert = u;
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_RATE], 1); /* one incident, one alert */
    assert_int_equal(all_alerts(&fx), 1);
    assert_true(first_alert > start && first_alert < start + 1200); /* found within 20 minutes */
    char key[KEEL_FLEET_ANOMALY_DEDUPE_MAX];
    assert_int_equal(keel_snprintf(key, sizeof key, "rate:%s:%" PRId64, DEV, first_alert), KEEL_OK);
    assert_string_equal(fx.last.dedupe, key);
    assert_string_equal(fx.last.severity, "warning");

    /* Back to normal for a day, then a second flood: a new incident, a new key. */
    t = normal_day(&fx, start + 7200 + 60);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_RATE], 1);
    for (int64_t u = t + 100; u < t + 3700; u += 5)
        telemetry(&fx, u, 400);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_RATE], 2);
    assert_string_not_equal(fx.last.dedupe, key);
}

static void test_warmup(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    /* Flooding from its first message: during the warm-up nothing is known
     * of the device's own rate, so the relative detectors stay quiet. */
    for (int64_t u = T0; u < T0 + fx.cfg.warmup_s - 10; u += 5)
        telemetry(&fx, u, 400 + (uint64_t)(u % 7) * 3000);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_RATE], 0);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_SIZE], 0);
    /* ... but the absolute ones are not relative: auth fires at once. */
    auth_report(&fx, T0 + fx.cfg.warmup_s - 5, 500);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_AUTH], 1);
    assert_string_equal(fx.last.severity, "critical");
}

static void test_size(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = normal_day(&fx, T0);
    assert_int_equal(telemetry(&fx, t + 100, 800), 0);   /* twice the usual: benign */
    assert_int_equal(telemetry(&fx, t + 200, 1300), 0);  /* z high, but not 1 KiB more */
    assert_int_equal(telemetry(&fx, t + 300, 12000), 1); /* exfiltration-like */
    assert_int_equal(fx.last.kind, KEEL_FLEET_ANOMALY_SIZE);
    assert_string_equal(fx.last.severity, "critical");
    /* More of it is the same incident; the baseline does not learn it. */
    for (int i = 0; i < 50; i++)
        assert_int_equal(telemetry(&fx, t + 400 + i * 30, 14000), 0);
    double typical = exp(fx.dev.size_mean);
    assert_true(typical < 1500);
    /* A big event payload is judged against the telemetry's baseline too. */
    keel_fleet_anomaly_obs_t o = {.device = DEV, .time = t + 90000, .kind = KEEL_FLEET_OBS_EVENT, .size = 16000};
    assert_int_equal(feed(&fx, &o), 1);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_SIZE], 2);

    /* A product with a daily status report 2.5x its telemetry, very regular
     * otherwise: the report stays normal (it was seen in the warm-up day),
     * twice the largest normal payload does not. */
    fx_init(&fx);
    int64_t u = T0;
    for (int day = 0; day < 4; day++) {
        for (int i = 0; i < 700; i++, u += 120)
            telemetry(&fx, u, 1500 + (uint64_t)(40 * unit(&fx)));
        telemetry(&fx, u, 3600 + (uint64_t)(100 * unit(&fx)));
    }
    assert_int_equal(all_alerts(&fx), 0);
    assert_int_equal(telemetry(&fx, u + 60, 8000), 1);
}

static void test_reconnect(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = normal_day(&fx, T0);
    /* Three blips in a row are no storm. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(connection(&fx, t + 10 + i * 20), 0);
    /* Two clients fighting over the identity: a connection a minute. */
    for (int i = 0; i < 60; i++)
        connection(&fx, t + 3600 + i * 60);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_RECONNECT], 1);
    assert_int_equal(all_alerts(&fx), 1);

    /* A sleepy device connects for every report (6 an hour): its own baseline. */
    fx_init(&fx);
    t = T0;
    for (int i = 0; i < 6 * 48; i++) {
        connection(&fx, t);
        telemetry(&fx, t + 1, 200);
        t += 600;
    }
    assert_int_equal(all_alerts(&fx), 0);
    /* Now twice as often: still under 12/h and 4x its baseline. */
    for (int i = 0; i < 24; i++)
        connection(&fx, t + i * 300);
    assert_int_equal(all_alerts(&fx), 0);
}

static void test_auth(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = normal_day(&fx, T0);
    assert_int_equal(auth_report(&fx, t + 10, 3), 0);
    assert_int_equal(auth_report(&fx, t + 70, 3), 0);
    /* A slow brute force: 4 a minute adds up within the hour. */
    size_t fired = 0;
    for (int i = 0; i < 30; i++)
        fired += auth_report(&fx, t + 7200 + i * 60, 4);
    assert_int_equal(fired, 1);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_AUTH], 1);
    assert_string_equal(fx.last.severity, "warning");
    /* auth-failures reports do not count as the device's message rate. */
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_RATE], 0);
    /* A day later, a second attack is a second incident. */
    assert_int_equal(auth_report(&fx, t + 7200 + 86400, 25), 1);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_AUTH], 2);
}

static void test_version(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = normal_day(&fx, T0);
    /* A released upgrade: nothing. */
    assert_int_equal(boot(&fx, t + 10, "1.5.0", 4, true), 0);
    /* A release the fleet never made: critical, keyed by the release. */
    assert_int_equal(boot(&fx, t + 20, "6.6.6-evil", 4, false), 1);
    assert_int_equal(fx.last.kind, KEEL_FLEET_ANOMALY_VERSION);
    assert_string_equal(fx.last.severity, "critical");
    char key[KEEL_FLEET_ANOMALY_DEDUPE_MAX];
    assert_int_equal(keel_snprintf(key, sizeof key, "version:%s:unreleased:6.6.6-evil:4", DEV), KEEL_OK);
    assert_string_equal(fx.last.dedupe, key);
    /* Booting it again reports it again under the same key (the store keeps one). */
    assert_int_equal(boot(&fx, t + 30, "6.6.6-evil", 4, false), 1);
    assert_string_equal(fx.last.dedupe, key);
    /* Back to an older, released security version: a rollback. */
    assert_int_equal(boot(&fx, t + 40, "1.4.2", 3, true), 1);
    assert_non_null(strstr(fx.last.detail, "\"rollback\""));
    assert_int_equal(keel_snprintf(key, sizeof key, "version:%s:rollback:4:3", DEV), KEEL_OK);
    assert_string_equal(fx.last.dedupe, key);
    /* An unreleased older version: both reasons, two alerts. */
    assert_int_equal(boot(&fx, t + 50, "0.9.0", 1, false), 2);
    /* A hostile version string never reaches a key or a detail as is. */
    assert_int_equal(boot(&fx, t + 60, "1.0\",\"x\":\"y", 5, false), 1);
    assert_non_null(strstr(fx.last.detail, "\"version\":\"?\""));
    json_t *j = json_loads(fx.last.detail, 0, NULL);
    assert_non_null(j);
    assert_null(json_object_get(j, "x"));
    json_decref(j);
    /* No version in the event: the check is skipped. */
    assert_int_equal(boot(&fx, t + 70, NULL, -1, false), 0);
}

static void test_tamper(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    keel_fleet_anomaly_obs_t o = {.device = DEV, .time = T0, .kind = KEEL_FLEET_OBS_ALERT,
                                  .event = KEEL_FLEET_EV_TAMPER, .size = 90};
    assert_int_equal(feed(&fx, &o), 1); /* no warm-up for tamper */
    assert_int_equal(fx.last.kind, KEEL_FLEET_ANOMALY_TAMPER);
    assert_string_equal(fx.last.severity, "critical");
    o.time = T0 + 3600; /* re-sent at the next boot: same incident */
    assert_int_equal(feed(&fx, &o), 0);
    o.time = T0 + 3 * 86400; /* days later: a new one */
    assert_int_equal(feed(&fx, &o), 1);
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_TAMPER], 2);
    /* Another alert type is not tamper. */
    o.event = KEEL_FLEET_EV_NONE;
    o.time += 10 * 86400;
    assert_int_equal(feed(&fx, &o), 0);
}

static void test_backlog(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = normal_day(&fx, T0);
    /* Offline for six hours, then its outbox delivers what it queued (~180
     * messages) within a minute: no flood, they are as old as the silence. */
    int64_t back = t + 6 * 3600;
    connection(&fx, back);
    for (int i = 0; i < 180; i++) {
        keel_fleet_anomaly_obs_t o = {.device = DEV, .time = back + i / 3, .device_time = t + 60 + i * 120,
                                      .kind = KEEL_FLEET_OBS_TELEMETRY, .size = 400};
        feed(&fx, &o);
    }
    assert_int_equal(all_alerts(&fx), 0);
    /* A connected device claiming old timestamps gets no credit: a flood. */
    t = normal_day(&fx, back + 120);
    for (int i = 0; i < 600; i++) {
        keel_fleet_anomaly_obs_t o = {.device = DEV, .time = t + 10 + i * 3, .device_time = t - 86400,
                                      .kind = KEEL_FLEET_OBS_TELEMETRY, .size = 400};
        feed(&fx, &o);
    }
    assert_int_equal(fx.total[KEEL_FLEET_ANOMALY_RATE], 1);
}

static void test_offline_baseline(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = normal_day(&fx, T0);
    /* Powered off for four days (no backlog): its baseline does not decay to
     * nothing, so its normal rate on return is no flood. */
    t = normal_day(&fx, t + 4 * 86400);
    assert_int_equal(all_alerts(&fx), 0);
}

static void format_ok(const keel_fleet_anomaly_device_t *d, char *buf, size_t cap)
{
    keel_status_t st = keel_fleet_anomaly_device_format(d, buf, cap);
    if (st != KEEL_OK)
        fail_msg("format: %s: %s", keel_status_str(st), keel_error_message());
}

static void assert_fresh(const keel_fleet_anomaly_device_t *d)
{
    assert_int_equal(d->first, 0);
    assert_int_equal(d->messages, 0);
    assert_int_equal(d->security_version, -1);
    assert_string_equal(d->version, "");
}

static void test_state_text(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = normal_day(&fx, T0);
    for (int64_t u = t + 10; u < t + 1800; u += 5) /* an open incident */
        telemetry(&fx, u, 400);
    assert_int_equal(boot(&fx, t + 2000, "1.5.0+build.7", 4, true), 0);
    char text[KEEL_FLEET_ANOMALY_STATE_TEXT_MAX], again[KEEL_FLEET_ANOMALY_STATE_TEXT_MAX];
    format_ok(&fx.dev, text, sizeof text);
    assert_true(strncmp(text, "kfa1 ", 5) == 0);
    keel_fleet_anomaly_device_t d;
    assert_int_equal(keel_fleet_anomaly_device_parse(text, strlen(text), DEV, &d), KEEL_OK);
    format_ok(&d, again, sizeof again);
    assert_string_equal(text, again);
    assert_true(d.rate_fast == fx.dev.rate_fast); /* bit for bit */
    assert_true(d.size_var == fx.dev.size_var);
    assert_int_equal(d.incident[0].since, fx.dev.incident[0].since);
    assert_string_equal(d.version, "1.5.0+build.7");

    /* The parsed state carries on like the original. */
    fx_t twin = fx;
    twin.dev = d;
    for (int64_t u = t + 1800; u < t + 1800 + 86400; u += 100) {
        assert_int_equal(telemetry(&fx, u, 450), telemetry(&twin, u, 450));
    }
    format_ok(&fx.dev, text, sizeof text);
    format_ok(&twin.dev, again, sizeof again);
    assert_string_equal(text, again);

    /* Empty: a device never seen. */
    assert_int_equal(keel_fleet_anomaly_device_parse("", 0, DEV, &d), KEEL_OK);
    assert_fresh(&d);
    /* A buffer too small is an error, not a truncation. */
    assert_int_equal(keel_fleet_anomaly_device_format(&fx.dev, again, 40), KEEL_ERR_TOO_LARGE);
    assert_string_equal(again, "");
    /* Not a state: refused. */
    keel_fleet_anomaly_device_t bad = fx.dev;
    bad.rate_fast = NAN;
    assert_int_equal(keel_fleet_anomaly_device_format(&bad, again, sizeof again), KEEL_ERR_ARG);
}

/* Replaces the `field`-th space-separated field of text with `with`. */
static void replace_field(const char *text, int field, const char *with, char *out, size_t cap)
{
    const char *p = text;
    for (int i = 0; i < field; i++) {
        p = strchr(p, ' ');
        assert_non_null(p);
        p++;
    }
    const char *end = strchr(p, ' ');
    if (end == NULL)
        end = p + strlen(p);
    int n = snprintf(out, cap, "%.*s%s%s", (int)(p - text), text, with, end);
    assert_true(n > 0 && (size_t)n < cap);
}

static void test_state_corrupt(void **state)
{
    (void)state;
    fx_t fx;
    fx_init(&fx);
    int64_t t = normal_day(&fx, T0);
    (void)t;
    char text[KEEL_FLEET_ANOMALY_STATE_TEXT_MAX], mut[KEEL_FLEET_ANOMALY_STATE_TEXT_MAX + 64];
    format_ok(&fx.dev, text, sizeof text);
    keel_fleet_anomaly_device_t d;

    static const struct {
        int field;
        const char *with;
    } cases[] = {
        {0, "kfa2"},     {0, "KFA1"},   {1, "-5"},        {1, "1e3"},      {2, "0"},     {3, "-1"},
        {3, "12x"},      {4, "nan"},    {4, "inf"},       {5, "0x10"},     {5, "-0.5"},  {6, "1e400"},
        {10, "99"},      {11, "-1"},    {12, "65"},       {16, "-2"},      {17, "5"},    {18, "abc"},
        {27, ""},        {27, "a\"b"},  {27, "a/b"},   {4, " 1"},        {4, ""},         {1, "+5"},    {7, "99999999999999999999"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        replace_field(text, cases[i].field, cases[i].with, mut, sizeof mut);
        keel_status_t st = keel_fleet_anomaly_device_parse(mut, strlen(mut), DEV, &d);
        if (st != KEEL_ERR_FORMAT)
            fail_msg("case %zu (%s) parsed: %s", i, mut, keel_status_str(st));
        assert_non_null(strstr(keel_error_message(), "reset"));
        assert_non_null(strstr(keel_error_message(), DEV));
        assert_fresh(&d);
    }
    /* Fields missing or extra, trailing space, NUL inside, control bytes. */
    const char *garbage[] = {"kfa1", "kfa1 1 2 3", "garbage", " ", "kfa1\n", "\x01\x02"};
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        assert_int_equal(keel_fleet_anomaly_device_parse(garbage[i], strlen(garbage[i]), DEV, &d), KEEL_ERR_FORMAT);
        assert_fresh(&d);
    }
    int n = snprintf(mut, sizeof mut, "%s 7", text);
    assert_int_equal(keel_fleet_anomaly_device_parse(mut, (size_t)n, DEV, &d), KEEL_ERR_FORMAT);
    n = snprintf(mut, sizeof mut, "%s ", text);
    assert_int_equal(keel_fleet_anomaly_device_parse(mut, (size_t)n, DEV, &d), KEEL_ERR_FORMAT);
    memcpy(mut, text, strlen(text) + 1);
    mut[10] = '\0';
    assert_int_equal(keel_fleet_anomaly_device_parse(mut, strlen(text), DEV, &d), KEEL_ERR_FORMAT);
    assert_fresh(&d);
    /* Oversized: refused before it is read. */
    static char big[8192];
    memset(big, '1', sizeof big);
    assert_int_equal(keel_fleet_anomaly_device_parse(big, sizeof big, DEV, &d), KEEL_ERR_TOO_LARGE);
    assert_fresh(&d);
    /* A hostile device name does not reach the message. */
    assert_int_equal(keel_fleet_anomaly_device_parse("x", 1, "bad\nid", &d), KEEL_ERR_FORMAT);
    assert_null(strstr(keel_error_message(), "bad\n"));

    /* Random damage: never a crash, and either a sane state or a fresh one. */
    uint64_t seed = 7;
    for (int round = 0; round < 20000; round++) {
        size_t len = strlen(text);
        memcpy(mut, text, len + 1);
        for (int k = 0; k < 1 + round % 4; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(seed >> 33) % len;
            static const char pool[] = "0123456789 .-+eEnaifx*\"\\\x7f";
            mut[at] = pool[(seed >> 20) % (sizeof pool - 1)];
        }
        keel_status_t st = keel_fleet_anomaly_device_parse(mut, len, DEV, &d);
        char out[KEEL_FLEET_ANOMALY_STATE_TEXT_MAX];
        if (st == KEEL_OK)
            format_ok(&d, out, sizeof out); /* whatever parses is a valid state */
        else
            assert_fresh(&d);
    }
}

/* ---- the fleet ---------------------------------------------------------------------------------- */

#define FLEET_DEVICES 64

typedef struct {
    keel_fleet_anomaly_config_t cfg;
    keel_fleet_anomaly_fleet_t fleet;
    keel_fleet_anomaly_device_t dev[FLEET_DEVICES];
    char ids[FLEET_DEVICES][16];
    size_t alerts[KEEL_FLEET_ANOMALY_FLEET_METRICS];
    keel_fleet_anomaly_alert_t last;
    int64_t first_alert;
    uint64_t rng;
} fleet_fx_t;

static void fleet_init(fleet_fx_t *fx)
{
    memset(fx, 0, sizeof *fx);
    keel_fleet_anomaly_config_default(&fx->cfg);
    keel_fleet_anomaly_fleet_init(&fx->fleet);
    for (int i = 0; i < FLEET_DEVICES; i++) {
        keel_fleet_anomaly_device_init(&fx->dev[i]);
        snprintf(fx->ids[i], sizeof fx->ids[i], "dev%02d", i);
    }
    fx->rng = 99;
}

static double fleet_unit(fleet_fx_t *fx)
{
    fx->rng = fx->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(fx->rng >> 11) * 0x1.0p-53;
}

/* A Poisson count of mean `mean` (small means: Knuth's method). */
static unsigned poisson(fleet_fx_t *fx, double mean)
{
    double l = exp(-mean), p = 1;
    unsigned k = 0;
    do {
        k++;
        p *= fleet_unit(fx);
    } while (p > l);
    return k - 1;
}

static void fleet_obs(fleet_fx_t *fx, int64_t t, keel_fleet_obs_kind_t kind, keel_fleet_obs_event_t ev)
{
    int i = (int)(fleet_unit(fx) * FLEET_DEVICES);
    keel_fleet_anomaly_obs_t o = {.device = fx->ids[i], .time = t, .device_time = t, .kind = kind, .event = ev,
                                  .size = 300, .auth_failures = 1};
    keel_fleet_anomaly_alert_t a[KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX];
    size_t n = 0;
    assert_int_equal(keel_fleet_anomaly_observe(&fx->cfg, &fx->dev[i], &fx->fleet, &o, a, 4, &n), KEEL_OK);
}

/* Minutes from `from` for `minutes`, messages at a diurnal rate times
 * `msg_factor`, auth reports at `auth_per_min`; ticks every minute. */
static void fleet_run(fleet_fx_t *fx, int64_t from, int minutes, double msg_factor, double auth_per_min)
{
    for (int m = 0; m < minutes; m++) {
        int64_t t = from + 60 * (int64_t)m;
        double day = 2 * PI * (double)(t % 86400) / 86400.0;
        double per_min = 200 * (1 + 0.6 * sin(day)) * msg_factor;
        unsigned n = poisson(fx, per_min);
        for (unsigned k = 0; k < n; k++)
            fleet_obs(fx, t + (int64_t)k % 60, KEEL_FLEET_OBS_TELEMETRY, KEEL_FLEET_EV_NONE);
        unsigned na = poisson(fx, auth_per_min);
        for (unsigned k = 0; k < na; k++)
            fleet_obs(fx, t + 30, KEEL_FLEET_OBS_EVENT, KEEL_FLEET_EV_AUTH_FAILURES);
        keel_fleet_anomaly_alert_t a[KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX];
        size_t na_out = 0;
        assert_int_equal(keel_fleet_anomaly_fleet_tick(&fx->cfg, &fx->fleet, t + 60, a, 2, &na_out), KEEL_OK);
        for (size_t i = 0; i < na_out; i++) {
            assert_int_equal(a[i].kind, KEEL_FLEET_ANOMALY_FLEET);
            assert_string_equal(a[i].device, "");
            int metric = strstr(a[i].detail, "\"messages\"") != NULL ? 0 : 1;
            fx->alerts[metric]++;
            if (fx->first_alert == 0)
                fx->first_alert = a[i].time;
            fx->last = a[i];
        }
    }
}

static void test_fleet(void **state)
{
    (void)state;
    static fleet_fx_t fx;
    fleet_init(&fx);
    int64_t start = T0 - T0 % 86400;
    keel_fleet_anomaly_alert_t a[2];
    size_t n = 0;
    assert_int_equal(keel_fleet_anomaly_fleet_tick(&fx.cfg, &fx.fleet, start, a, 1, &n), KEEL_ERR_ARG);
    /* Two quiet days with a strong daily swing: the profile, no alert. */
    fleet_run(&fx, start, 2 * 1440, 1.0, 0.5);
    assert_int_equal(fx.alerts[0] + fx.alerts[1], 0);
    /* A botnet wave: +40 % messages for an hour. */
    int64_t wave = start + 2 * 86400;
    fleet_run(&fx, wave, 60, 1.4, 0.5);
    assert_int_equal(fx.alerts[0], 1);
    assert_int_equal(fx.alerts[1], 0);
    assert_true(fx.first_alert > wave && fx.first_alert <= wave + 15 * 60);
    char key[64];
    assert_int_equal(keel_snprintf(key, sizeof key, "fleet:messages:%" PRId64, fx.first_alert), KEEL_OK);
    assert_string_equal(fx.last.dedupe, key);
    /* Over: quiet again, and the wave was not learnt as normal. */
    fleet_run(&fx, wave + 3600, 6 * 60, 1.0, 0.5);
    assert_int_equal(fx.alerts[0] + fx.alerts[1], 1);
    /* Credential stuffing across the fleet: auth reports x20 for 30 min. */
    fleet_run(&fx, wave + 7 * 3600, 30, 1.0, 10);
    assert_int_equal(fx.alerts[1], 1);
    fleet_run(&fx, wave + 7 * 3600 + 1800, 120, 1.0, 0.5);
    /* A second wave later is a second incident. */
    fx.first_alert = 0;
    fleet_run(&fx, wave + 12 * 3600, 40, 1.6, 0.5);
    assert_int_equal(fx.alerts[0], 2);
    assert_string_not_equal(fx.last.dedupe, key);
    assert_string_equal(fx.last.severity, "warning");

    /* fleetd was away for an hour: the burst on its return is held, not an alert. */
    int64_t back = wave + 20 * 3600;
    fleet_run(&fx, back - 3600, 1, 1.0, 0.5);
    for (int k = 0; k < 5000; k++)
        fleet_obs(&fx, back, KEEL_FLEET_OBS_TELEMETRY, KEEL_FLEET_EV_NONE);
    size_t before = fx.alerts[0] + fx.alerts[1];
    fleet_run(&fx, back, 60, 1.0, 0.5);
    assert_int_equal(fx.alerts[0] + fx.alerts[1], before);
}

static void test_fleet_warmup(void **state)
{
    (void)state;
    static fleet_fx_t fx;
    fleet_init(&fx);
    int64_t start = T0 - T0 % 86400;
    /* A wave within the first day: no profile yet, no judgement. */
    fleet_run(&fx, start, 600, 1.0, 0.5);
    fleet_run(&fx, start + 600 * 60, 60, 3.0, 0.5);
    fleet_run(&fx, start + 660 * 60, 600, 1.0, 0.5);
    assert_int_equal(fx.alerts[0] + fx.alerts[1], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),         cmocka_unit_test(test_args),
        cmocka_unit_test(test_quiet_normal),   cmocka_unit_test(test_rate),
        cmocka_unit_test(test_warmup),         cmocka_unit_test(test_size),
        cmocka_unit_test(test_reconnect),      cmocka_unit_test(test_auth),
        cmocka_unit_test(test_version),        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_backlog),        cmocka_unit_test(test_offline_baseline),
        cmocka_unit_test(test_state_text),     cmocka_unit_test(test_state_corrupt),
        cmocka_unit_test(test_fleet),          cmocka_unit_test(test_fleet_warmup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

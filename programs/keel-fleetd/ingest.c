/*
 * keel-fleetd's ingest thread (fleetd.h): takes what the MQTT thread queued,
 * in batches, and stores each batch in one transaction: dedupe by (device,
 * seq), gap bookkeeping, the device's own events (boot, update progress,
 * erase requests), the anomaly detectors and their alerts. What must leave
 * (erase receipts, alerts) is published after the commit, so nothing is
 * announced that the store does not hold.
 */
#define _GNU_SOURCE
#include "fleetd.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RETRIES_MAX 8
#define SETTLE_EVERY_S 5
#define PENDING_MAX 4096 /* post-commit actions per batch */
#define DETECTOR_TEXT_MAX 4096

typedef struct {
    enum { POST_ERASE, POST_ALERT } what;
    char device[KEEL_FLEET_ID_MAX + 1];
    char id[64];   /* erase request id */
    char *text;    /* alert JSON */
} post_t;

typedef struct {
    char id[KEEL_FLEET_ID_MAX + 1];
    bool loaded, dirty;
    keel_fleet_anomaly_device_t st;
} devcache_t;

struct fleetd_ingest {
    fleetd_ingest_config_t c;
    char db_url[KEEL_FLEET_DB_URL_MAX + 1];
    keel_fleet_db_t *db;
    pthread_t thread;
    bool started;
    atomic_bool stopping;
    fleetd_ingest_stats_t stats;
    keel_fleet_anomaly_fleet_t fleet;
    int64_t last_settle, last_tick;
    post_t post[PENDING_MAX];
    size_t n_post;
    devcache_t *cache;
    size_t n_cache, cap_cache;
};

/* ---- post-commit actions --------------------------------------------------------------- */

static void post_clear(fleetd_ingest_t *in)
{
    for (size_t i = 0; i < in->n_post; i++)
        free(in->post[i].text);
    in->n_post = 0;
}

static post_t *post_add(fleetd_ingest_t *in)
{
    if (in->n_post >= PENDING_MAX)
        return NULL;
    post_t *p = &in->post[in->n_post++];
    memset(p, 0, sizeof *p);
    return p;
}

static void erase_and_receipt(fleetd_ingest_t *in, const char *device, const char *request)
{
    keel_fleet_erasure_t er;
    keel_status_t st = KEEL_ERR_BUSY;
    for (int i = 0; i < RETRIES_MAX && st == KEEL_ERR_BUSY; i++)
        st = keel_fleet_erase(in->db, device, request, "device", (int64_t)time(NULL), &er);
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "fleet: erase request %s of %s: %s", request, device, keel_error_message());
        keel_error_clear();
        return;
    }
    json_t *r = json_pack("{s:s, s:b, s:I, s:I}", "id", er.id, "erased", 1, "time", (json_int_t)er.time, "records",
                          (json_int_t)er.messages);
    if (r == NULL || fleetd_consumer_command(in->c.consumer, device, "keel/erase-receipt", r) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "fleet: erase receipt %s to %s not sent: %s (the device asks again)", er.id,
                 device, keel_error_message());
        keel_error_clear();
    }
    json_decref(r);
    keel_log(KEEL_LOG_INFO, "fleet: erased %llu messages of %s (request %s)", (unsigned long long)er.messages,
             device, er.id);
}

static void post_run(fleetd_ingest_t *in)
{
    for (size_t i = 0; i < in->n_post; i++) {
        post_t *p = &in->post[i];
        if (p->what == POST_ERASE) {
            erase_and_receipt(in, p->device, p->id);
        } else if (p->text != NULL &&
                   fleetd_consumer_publish(in->c.consumer, FLEETD_ALERT_TOPIC, p->text, strlen(p->text)) != KEEL_OK) {
            keel_error_clear(); /* stored; publishing is a courtesy */
        }
    }
    post_clear(in);
}

/* ---- alerts ------------------------------------------------------------------------------- */

static keel_status_t alert_store(fleetd_ingest_t *in, const char *kind, const char *severity, const char *detail,
                                 const char *dedupe, const char *device, int64_t now)
{
    keel_fleet_alert_t fa = {
        .kind = kind, .device = device, .severity = severity, .detail = detail, .dedupe = dedupe, .time = now,
    };
    bool added = false;
    keel_status_t st = keel_fleet_alert_add(in->db, &fa, &added);
    if (st != KEEL_OK || !added)
        return st;
    atomic_fetch_add(&in->stats.alerts, 1);
    keel_log(KEEL_LOG_WARN, "fleet: alert %s%s%s: %s", kind, device != NULL ? " on " : "", device != NULL ? device : "",
             detail);
    post_t *p = post_add(in);
    if (p != NULL) {
        p->what = POST_ALERT;
        json_t *dj = json_loads(detail, 0, NULL);
        json_t *j = json_pack("{s:s, s:s?, s:s, s:I, s:o}", "kind", kind, "device", device, "severity", severity,
                              "time", (json_int_t)now, "detail", dj != NULL ? dj : json_string(detail));
        p->text = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(j);
    }
    return KEEL_OK;
}

static keel_status_t alerts_store(fleetd_ingest_t *in, const keel_fleet_anomaly_alert_t *a, size_t n, int64_t now)
{
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < n && st == KEEL_OK; i++)
        st = alert_store(in, keel_fleet_anomaly_kind_str(a[i].kind), a[i].severity, a[i].detail, a[i].dedupe,
                         a[i].device[0] != '\0' ? a[i].device : NULL, now);
    return st;
}

/* ---- per-device detector state, cached for one batch -------------------------------------------- */

static devcache_t *cache_get(fleetd_ingest_t *in, const char *device)
{
    for (size_t i = 0; i < in->n_cache; i++)
        if (strcmp(in->cache[i].id, device) == 0)
            return &in->cache[i];
    if (in->n_cache == in->cap_cache) {
        size_t cap = in->cap_cache ? in->cap_cache * 2 : 64;
        devcache_t *g = realloc(in->cache, cap * sizeof *g);
        if (g == NULL)
            return NULL;
        in->cache = g;
        in->cap_cache = cap;
    }
    devcache_t *d = &in->cache[in->n_cache++];
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", device);
    char text[DETECTOR_TEXT_MAX];
    if (keel_fleet_detector_get(in->db, device, text, sizeof text) != KEEL_OK) {
        keel_error_clear();
        text[0] = '\0';
    }
    if (keel_fleet_anomaly_device_parse(text, strlen(text), device, &d->st) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "fleet: %s", keel_error_message()); /* the baseline starts again */
        keel_error_clear();
    }
    d->loaded = true;
    return d;
}

static keel_status_t cache_flush(fleetd_ingest_t *in)
{
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < in->n_cache && st == KEEL_OK; i++) {
        devcache_t *d = &in->cache[i];
        if (!d->dirty)
            continue;
        char text[DETECTOR_TEXT_MAX];
        st = keel_fleet_anomaly_device_format(&d->st, text, sizeof text);
        if (st == KEEL_OK)
            st = keel_fleet_detector_put(in->db, d->id, text);
    }
    return st;
}

/* ---- one message ----------------------------------------------------------------------------------- */

static const char *str_of(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* A boot report: the registry learns the version; a campaign learns whether
 * its update took (confirmed) or was rolled back (failed). */
static keel_status_t on_boot(fleetd_ingest_t *in, const char *device, const json_t *data, int64_t now, bool *known)
{
    const char *version = str_of(data, "version");
    json_t *sv = json_object_get(data, "security_version");
    *known = true;
    if (version == NULL || strlen(version) > KEEL_FLEET_VERSION_MAX || !json_is_integer(sv) ||
        json_integer_value(sv) < 0)
        return KEEL_OK; /* malformed boot reports change nothing */
    keel_fleet_device_t d;
    keel_status_t st = keel_fleet_device_get(in->db, device, &d);
    if (st != KEEL_OK)
        return st;
    st = keel_fleet_release_known(in->db, d.model, version, json_integer_value(sv), known);
    if (st == KEEL_OK)
        st = keel_fleet_device_report_version(in->db, device, version, json_integer_value(sv), now);
    keel_fleet_campaign_t c;
    if (st == KEEL_OK && (st = keel_fleet_campaign_running(in->db, d.model, &c)) == KEEL_ERR_NOT_FOUND) {
        keel_error_clear();
        return KEEL_OK;
    }
    char cur[16] = "";
    if (st == KEEL_OK)
        st = keel_fleet_campaign_device_get(in->db, c.id, device, cur);
    if (st != KEEL_OK || cur[0] == '\0' || strcmp(cur, "confirmed") == 0)
        return st;
    if (strcmp(version, c.version) == 0)
        return keel_fleet_campaign_device_set(in->db, c.id, device, "confirmed", NULL, now);
    if (strcmp(cur, "installed") == 0)
        return keel_fleet_campaign_device_set(in->db, c.id, device, "failed",
                                              "{\"error\":\"the device came back on its old version (rolled back)\"}",
                                              now);
    return KEEL_OK;
}

static keel_status_t on_update(fleetd_ingest_t *in, const char *device, const json_t *data, int64_t now)
{
    const char *campaign = str_of(data, "campaign"), *state = str_of(data, "state");
    static const char *const ok_states[] = {"downloading", "installed", "failed", "postponed"};
    bool ok = campaign != NULL && strlen(campaign) == KEEL_FLEET_CAMPAIGN_MAX && state != NULL;
    bool state_ok = false;
    for (size_t i = 0; ok && i < sizeof ok_states / sizeof *ok_states; i++)
        state_ok = state_ok || strcmp(state, ok_states[i]) == 0;
    if (!ok || !state_ok)
        return KEEL_OK;
    char cur[16] = "";
    keel_status_t st = keel_fleet_campaign_device_get(in->db, campaign, device, cur);
    if (st != KEEL_OK || cur[0] == '\0' || strcmp(cur, "confirmed") == 0) {
        keel_error_clear();
        return KEEL_OK; /* not a campaign that selected this device: ignored */
    }
    char *detail = json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS);
    st = keel_fleet_campaign_device_set(in->db, campaign, device, state, detail, now);
    free(detail);
    return st;
}

static keel_status_t observe(fleetd_ingest_t *in, keel_fleet_anomaly_obs_t *o, int64_t now)
{
    devcache_t *d = cache_get(in, o->device);
    if (d == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_fleet_anomaly_alert_t alerts[KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX];
    size_t n = 0;
    keel_status_t st = keel_fleet_anomaly_observe(&in->c.anomaly, &d->st, &in->fleet, o, alerts,
                                                  KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX, &n);
    if (st != KEEL_OK)
        return st;
    d->dirty = true;
    return alerts_store(in, alerts, n, now);
}

static keel_status_t one(fleetd_ingest_t *in, const fleetd_item_t *it)
{
    char device[KEEL_FLEET_ID_MAX + 1];
    fleetd_leaf_t leaf;
    if (fleetd_topic_parse(it->topic, device, &leaf) != KEEL_OK) {
        atomic_fetch_add(&in->stats.malformed, 1);
        keel_log(KEEL_LOG_DEBUG, "fleet: message on an unexpected topic dropped: %s", keel_error_message());
        keel_error_clear();
        return KEEL_OK;
    }
    int64_t now = it->received;
    if (leaf == FLEETD_LEAF_STATE) {
        if (it->retained)
            return KEEL_OK; /* a replay, not a connection */
        keel_fleet_device_t d;
        keel_status_t st = keel_fleet_device_get(in->db, device, &d);
        if (st == KEEL_ERR_NOT_FOUND || (st == KEEL_OK && d.state == KEEL_FLEET_DEV_REVOKED)) {
            keel_error_clear();
            atomic_fetch_add(&in->stats.unknown, 1);
            return KEEL_OK;
        }
        if (st != KEEL_OK)
            return st;
        keel_fleet_anomaly_obs_t o = {.device = device, .time = now, .kind = KEEL_FLEET_OBS_STATE,
                                      .security_version = -1};
        return observe(in, &o, now);
    }
    keel_fleet_msg_t m;
    json_t *hold = NULL;
    char *body = NULL;
    keel_status_t st = fleetd_envelope_parse(device, leaf, it->payload, it->len, now, &m, &hold, &body);
    if (st != KEEL_OK) {
        atomic_fetch_add(&in->stats.malformed, 1);
        keel_log(KEEL_LOG_DEBUG, "fleet: a message from %s dropped: %s", device, keel_error_message());
        keel_error_clear();
        return KEEL_OK;
    }
    keel_fleet_ingest_result_t r;
    st = keel_fleet_ingest(in->db, &m, &r);
    if (st == KEEL_OK && r.unknown)
        atomic_fetch_add(&in->stats.unknown, 1);
    else if (st == KEEL_OK && r.duplicate)
        atomic_fetch_add(&in->stats.duplicates, 1);
    if (st != KEEL_OK || r.unknown || r.duplicate)
        goto out;
    atomic_fetch_add(&in->stats.stored, 1);
    json_t *data = json_object_get(hold, "data");
    const char *type = str_of(data, "type");
    keel_fleet_anomaly_obs_t o = {
        .device = device,
        .time = now,
        .device_time = m.ts,
        .kind = strcmp(m.kind, "telemetry") == 0 ? KEEL_FLEET_OBS_TELEMETRY
                : strcmp(m.kind, "alert") == 0   ? KEEL_FLEET_OBS_ALERT
                                                 : KEEL_FLEET_OBS_EVENT,
        .size = m.body_len,
        .security_version = -1,
    };
    if (o.kind == KEEL_FLEET_OBS_ALERT && type != NULL && strcmp(type, "tamper") == 0)
        o.event = KEEL_FLEET_EV_TAMPER;
    if (o.kind == KEEL_FLEET_OBS_EVENT && type != NULL) {
        if (strcmp(type, "boot") == 0) {
            bool known = true;
            st = on_boot(in, device, data, now, &known);
            json_t *sv = json_object_get(data, "security_version");
            o.event = KEEL_FLEET_EV_BOOT;
            o.version = str_of(data, "version");
            o.security_version = json_is_integer(sv) ? json_integer_value(sv) : -1;
            o.release_known = known;
        } else if (strcmp(type, "update") == 0) {
            o.event = KEEL_FLEET_EV_UPDATE;
            st = on_update(in, device, data, now);
        } else if (strcmp(type, "auth-failures") == 0) {
            json_t *cnt = json_object_get(data, "count");
            o.event = KEEL_FLEET_EV_AUTH_FAILURES;
            o.auth_failures = json_is_integer(cnt) && json_integer_value(cnt) > 0 ? (uint64_t)json_integer_value(cnt) : 0;
        } else if (strcmp(type, "erase-request") == 0) {
            const char *id = str_of(data, "id");
            o.event = KEEL_FLEET_EV_ERASE_REQUEST;
            post_t *p = id != NULL && strlen(id) == 32 ? post_add(in) : NULL;
            if (p != NULL) {
                p->what = POST_ERASE;
                snprintf(p->device, sizeof p->device, "%s", device);
                snprintf(p->id, sizeof p->id, "%s", id);
            }
        }
    }
    if (o.version != NULL && strlen(o.version) > KEEL_FLEET_ANOMALY_VERSION_MAX)
        o.version = NULL;
    if (st == KEEL_OK)
        st = observe(in, &o, now);
out:
    free(body);
    json_decref(hold);
    return st;
}

/* ---- the thread ----------------------------------------------------------------------------------------- */

static void on_gap(void *arg, const char *device, uint64_t first, uint64_t last, bool explained)
{
    fleetd_ingest_t *in = arg;
    if (explained) {
        keel_log(KEEL_LOG_INFO, "fleet: %s: seq %llu..%llu were dropped by the device's outbox (it said so)",
                 device, (unsigned long long)first, (unsigned long long)last);
        return;
    }
    atomic_fetch_add(&in->stats.gaps_lost, last - first + 1);
    char detail[256], dedupe[256];
    snprintf(detail, sizeof detail, "{\"first_seq\":%llu,\"last_seq\":%llu,\"messages\":%llu}",
             (unsigned long long)first, (unsigned long long)last, (unsigned long long)(last - first + 1));
    snprintf(dedupe, sizeof dedupe, "loss:%s:%llu", device, (unsigned long long)first);
    if (alert_store(in, "loss", "warning", detail, dedupe, device, (int64_t)time(NULL)) != KEEL_OK)
        keel_error_clear();
}

static keel_status_t batch_run(fleetd_ingest_t *in, const fleetd_item_t *items)
{
    keel_status_t st = keel_fleet_db_begin(in->db);
    for (const fleetd_item_t *it = items; st == KEEL_OK && it != NULL; it = it->next)
        st = one(in, it);
    if (st == KEEL_OK)
        st = cache_flush(in);
    if (st == KEEL_OK)
        st = keel_fleet_db_commit(in->db);
    if (st != KEEL_OK && keel_fleet_db_in_tx(in->db))
        keel_fleet_db_rollback(in->db);
    return st;
}

static void periodic(fleetd_ingest_t *in)
{
    int64_t now = (int64_t)time(NULL);
    if (now - in->last_tick >= 60) {
        in->last_tick = now;
        keel_fleet_anomaly_alert_t alerts[KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX];
        size_t n = 0;
        if (keel_fleet_anomaly_fleet_tick(&in->c.anomaly, &in->fleet, now, alerts, KEEL_FLEET_ANOMALY_TICK_ALERTS_MAX,
                                          &n) != KEEL_OK) {
            keel_error_clear();
            n = 0;
        }
        if (n > 0 && (keel_fleet_db_begin(in->db) != KEEL_OK || alerts_store(in, alerts, n, now) != KEEL_OK ||
                      keel_fleet_db_commit(in->db) != KEEL_OK)) {
            keel_log(KEEL_LOG_ERROR, "fleet: fleet-wide alerts not stored: %s", keel_error_message());
            keel_error_clear();
            if (keel_fleet_db_in_tx(in->db))
                keel_fleet_db_rollback(in->db);
        }
    }
    if (now - in->last_settle >= SETTLE_EVERY_S) {
        in->last_settle = now;
        if (keel_fleet_db_begin(in->db) != KEEL_OK ||
            keel_fleet_gaps_settle(in->db, now - (int64_t)in->c.gap_grace_s, on_gap, in) != KEEL_OK ||
            keel_fleet_db_commit(in->db) != KEEL_OK) {
            keel_log(KEEL_LOG_ERROR, "fleet: gap check: %s", keel_error_message());
            keel_error_clear();
            if (keel_fleet_db_in_tx(in->db))
                keel_fleet_db_rollback(in->db);
            post_clear(in);
        }
    }
    post_run(in);
}

static void *ingest_main(void *arg)
{
    fleetd_ingest_t *in = arg;
    for (;;) {
        size_t n = 0;
        fleetd_item_t *items = fleetd_queue_pop(in->c.queue, in->c.batch, 200, &n);
        if (items == NULL) {
            if (atomic_load(&in->stopping) && fleetd_queue_depth(in->c.queue) == 0)
                break; /* closed and drained */
            periodic(in);
            continue;
        }
        keel_status_t st = KEEL_ERR_BUSY;
        for (int attempt = 0; attempt < RETRIES_MAX && st == KEEL_ERR_BUSY; attempt++) {
            in->n_cache = 0;
            post_clear(in);
            st = batch_run(in, items);
            if (st == KEEL_ERR_BUSY) {
                atomic_fetch_add(&in->stats.retries, 1);
                keel_error_clear();
                usleep((useconds_t)(1000u << attempt));
            }
        }
        if (st != KEEL_OK) {
            /* The batch is not stored. Its messages were acknowledged to the
             * broker, so they are lost here; the gaps they leave will show
             * as loss alerts. The log says why. */
            keel_log(KEEL_LOG_ERROR, "fleet: a batch of %zu messages was not stored: %s", n, keel_error_message());
            keel_error_clear();
            post_clear(in);
        } else {
            atomic_fetch_add(&in->stats.batches, 1);
            atomic_store(&in->stats.last_commit, (int64_t)time(NULL));
        }
        fleetd_item_free_list(items);
        periodic(in);
    }
    return NULL;
}

keel_status_t fleetd_ingest_start(const fleetd_ingest_config_t *c, fleetd_ingest_t **out)
{
    if (c == NULL || c->db_url == NULL || c->queue == NULL || c->consumer == NULL || c->batch == 0)
        return keel_errorf(KEEL_ERR_ARG, "ingest: incomplete settings");
    fleetd_ingest_t *in = calloc(1, sizeof *in);
    if (in == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    in->c = *c;
    keel_status_t st = keel_snprintf(in->db_url, sizeof in->db_url, "%s", c->db_url);
    in->c.db_url = in->db_url;
    if (st == KEEL_OK)
        st = keel_fleet_db_open(in->db_url, &in->db);
    if (st == KEEL_OK) {
        keel_fleet_anomaly_fleet_init(&in->fleet);
        in->last_tick = in->last_settle = (int64_t)time(NULL);
        if (pthread_create(&in->thread, NULL, ingest_main, in) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "ingest: cannot start its thread");
        else
            in->started = true;
    }
    if (st != KEEL_OK) {
        fleetd_ingest_free(in);
        return st;
    }
    *out = in;
    return KEEL_OK;
}

const fleetd_ingest_stats_t *fleetd_ingest_stats(const fleetd_ingest_t *in)
{
    return &in->stats;
}

void fleetd_ingest_stop(fleetd_ingest_t *in)
{
    if (in == NULL || !in->started)
        return;
    atomic_store(&in->stopping, true);
    fleetd_queue_close(in->c.queue);
    pthread_join(in->thread, NULL);
    in->started = false;
}

void fleetd_ingest_free(fleetd_ingest_t *in)
{
    if (in == NULL)
        return;
    fleetd_ingest_stop(in);
    post_clear(in);
    free(in->cache);
    keel_fleet_db_close(in->db);
    free(in);
}

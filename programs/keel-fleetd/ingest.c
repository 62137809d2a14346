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

#define RETRIES_OTHER 3     /* a batch failing for another reason than BUSY */
#define LINGER_MS 100 /* a batch waits this long to fill: at most this much latency for a tenth of the CPU */
#define SETTLE_EVERY_S 5
#define FLUSH_EVERY_S 30    /* detector states written back */
#define CACHE_MAX 200000u   /* devices whose detector state is held in memory */
#define CACHE_INITIAL 8u    /* slots at first (a power of two); doubled at 3/4 full */
#define PENDING_MAX 4096 /* post-commit actions per batch */
#define DETECTOR_TEXT_MAX 4096
#define UPDATE_DETAIL_MAX 1024 /* the store's cap on a campaign device's detail */
#define UPDATE_ERROR_KEEP 256  /* of a longer report, the error's first bytes are kept */
#define HEX_DIGITS "0123456789abcdefABCDEF"

typedef struct {
    enum { POST_ERASE, POST_ALERT } what;
    char device[KEEL_FLEET_ID_MAX + 1];
    char id[64];   /* erase request id */
    char *text;    /* alert JSON */
} post_t;

/* A device's detector state, held across batches (a hash table keyed by
 * id, open addressing) and written back every FLUSH_EVERY_S. `undo` is the
 * state before the batch being stored first touched it: a batch that rolls
 * back restores it, so a retry counts nothing twice. */
typedef struct {
    char id[KEEL_FLEET_ID_MAX + 1]; /* "" = free slot */
    bool dirty, touched;
    keel_fleet_anomaly_device_t st, undo;
} devcache_t;

/* A batch's item once parsed (before the transaction, once however often
 * the batch is retried). */
typedef struct {
    enum { ITEM_DROPPED, ITEM_STATE, ITEM_MESSAGE } what;
    char device[KEEL_FLEET_ID_MAX + 1];
    size_t msg;   /* ITEM_MESSAGE: its index in the batch's messages */
    json_t *hold; /* the envelope (the message points into it) */
    char *body;
} parsed_t;

typedef struct {
    size_t n, n_msg;
    parsed_t *p;               /* n */
    keel_fleet_msg_t *msg;     /* n_msg */
    keel_fleet_ingest_result_t *res;
    uint64_t stored, duplicates, unknown, malformed;
} batch_t;

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
    devcache_t *cache;           /* cap_cache slots (a power of two) */
    size_t n_cache, cap_cache;
    devcache_t **touched;        /* entries the current batch changed */
    size_t n_touched, cap_touched;
    keel_fleet_anomaly_fleet_t fleet_undo;
    int64_t last_flush;
    batch_t batch;               /* the batch being stored (its arrays kept from one to the next) */
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
    for (int i = 0; i < 8 && st == KEEL_ERR_BUSY; i++)
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

/* ---- per-device detector state, held in memory ----------------------------------------------------- */

static uint64_t id_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static keel_status_t cache_flush(fleetd_ingest_t *in);

/* Writes back what changed and forgets every state (the table was full). */
static void cache_reset(fleetd_ingest_t *in)
{
    if (cache_flush(in) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "fleet: detector states not written back: %s", keel_error_message());
        keel_error_clear();
    }
    for (size_t i = 0; i < in->cap_cache; i++)
        in->cache[i].id[0] = '\0';
    in->n_cache = 0;
}

/* Twice the slots. It may run in the middle of a batch (a device not seen
 * before): the batch's list of touched entries then points into the old
 * table and is pointed at the new one. The table starts small, so that
 * tests with a handful of devices grow it mid-batch too. */
static keel_status_t cache_grow(fleetd_ingest_t *in)
{
    size_t cap = in->cap_cache ? in->cap_cache * 2 : CACHE_INITIAL;
    devcache_t *g = calloc(cap, sizeof *g);
    if (g == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    size_t touched = 0;
    for (size_t i = 0; i < in->cap_cache; i++) {
        devcache_t *d = &in->cache[i];
        if (d->id[0] == '\0')
            continue;
        size_t j = (size_t)id_hash(d->id) & (cap - 1);
        while (g[j].id[0] != '\0')
            j = (j + 1) & (cap - 1);
        g[j] = *d;
        if (g[j].touched && touched < in->n_touched)
            in->touched[touched++] = &g[j];
    }
    free(in->cache);
    in->cache = g;
    in->cap_cache = cap;
    return KEEL_OK;
}

static devcache_t *cache_get(fleetd_ingest_t *in, const char *device)
{
    if (in->cap_cache > 0) {
        for (size_t j = (size_t)id_hash(device) & (in->cap_cache - 1);; j = (j + 1) & (in->cap_cache - 1)) {
            devcache_t *d = &in->cache[j];
            if (d->id[0] == '\0')
                break;
            if (strcmp(d->id, device) == 0)
                return d;
        }
    }
    /* Not held: only between batches may the table be reset (a batch's
     * undo records point into it). */
    if (in->n_cache >= CACHE_MAX && in->n_touched == 0)
        cache_reset(in);
    if ((in->n_cache + 1) * 4 > in->cap_cache * 3 && cache_grow(in) != KEEL_OK)
        return NULL;
    size_t j = (size_t)id_hash(device) & (in->cap_cache - 1);
    while (in->cache[j].id[0] != '\0')
        j = (j + 1) & (in->cap_cache - 1);
    devcache_t *d = &in->cache[j];
    memset(d, 0, sizeof *d);
    snprintf(d->id, sizeof d->id, "%s", device);
    in->n_cache++;
    char text[DETECTOR_TEXT_MAX];
    if (keel_fleet_detector_get(in->db, device, text, sizeof text) != KEEL_OK) {
        keel_error_clear();
        text[0] = '\0';
    }
    if (keel_fleet_anomaly_device_parse(text, strlen(text), device, &d->st) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "fleet: %s", keel_error_message()); /* the baseline starts again */
        keel_error_clear();
    }
    return d;
}

/* The batch is about to change d: remember how it was. */
static keel_status_t cache_touch(fleetd_ingest_t *in, devcache_t *d)
{
    if (d->touched)
        return KEEL_OK;
    if (in->n_touched == in->cap_touched) {
        size_t cap = in->cap_touched ? in->cap_touched * 2 : 512;
        devcache_t **g = realloc(in->touched, cap * sizeof *g);
        if (g == NULL)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        in->touched = g;
        in->cap_touched = cap;
    }
    d->undo = d->st;
    d->touched = true;
    in->touched[in->n_touched++] = d;
    return KEEL_OK;
}

/* After a commit: the batch's changes stay (and are to be written back). */
static void batch_keep(fleetd_ingest_t *in)
{
    for (size_t i = 0; i < in->n_touched; i++) {
        in->touched[i]->touched = false;
        in->touched[i]->dirty = true;
    }
    in->n_touched = 0;
}

/* After a rollback: as if the batch never ran. */
static void batch_undo(fleetd_ingest_t *in)
{
    for (size_t i = 0; i < in->n_touched; i++) {
        in->touched[i]->st = in->touched[i]->undo;
        in->touched[i]->touched = false;
    }
    in->n_touched = 0;
    in->fleet = in->fleet_undo;
}

/* Every changed state into the store, one transaction. */
static keel_status_t cache_flush(fleetd_ingest_t *in)
{
    size_t n = 0;
    for (size_t i = 0; i < in->cap_cache; i++)
        n += in->cache[i].id[0] != '\0' && in->cache[i].dirty;
    if (n == 0)
        return KEEL_OK;
    keel_status_t st = keel_fleet_db_begin(in->db);
    for (size_t i = 0; i < in->cap_cache && st == KEEL_OK; i++) {
        devcache_t *d = &in->cache[i];
        if (d->id[0] == '\0' || !d->dirty)
            continue;
        char text[DETECTOR_TEXT_MAX];
        st = keel_fleet_anomaly_device_format(&d->st, text, sizeof text);
        if (st == KEEL_OK)
            st = keel_fleet_detector_put(in->db, d->id, text);
    }
    if (st == KEEL_OK)
        st = keel_fleet_db_commit(in->db);
    if (st != KEEL_OK) {
        if (keel_fleet_db_in_tx(in->db))
            keel_fleet_db_rollback(in->db);
        return st;
    }
    for (size_t i = 0; i < in->cap_cache; i++)
        in->cache[i].dirty = false;
    return KEEL_OK;
}

/* ---- one message ----------------------------------------------------------------------------------- */

static const char *str_of(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* The store's rule for a reported version: 1..KEEL_FLEET_VERSION_MAX printable ASCII, no space. */
static bool version_ok(const char *v)
{
    size_t n = v != NULL ? strnlen(v, KEEL_FLEET_VERSION_MAX + 1) : 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
            return false;
    return n > 0 && n <= KEEL_FLEET_VERSION_MAX;
}

/* A boot report: the registry learns the version; a campaign learns whether
 * its update took (confirmed) or was rolled back (failed). */
static keel_status_t on_boot(fleetd_ingest_t *in, const char *device, const json_t *data, int64_t now, bool *known)
{
    const char *version = str_of(data, "version");
    json_t *sv = json_object_get(data, "security_version");
    *known = true;
    /* The store's own rules: a report it would refuse must not fail the batch it came in. */
    if (!version_ok(version) || !json_is_integer(sv) ||
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
    if (detail != NULL && strlen(detail) > UPDATE_DETAIL_MAX) {
        /* The store keeps a bounded detail: the state and the start of the error. */
        free(detail);
        const char *err = str_of(data, "error");
        json_t *j = json_pack("{s:s, s:s, s:s%, s:b}", "campaign", campaign, "state", state, "error",
                              err != NULL ? err : "", err != NULL ? strnlen(err, UPDATE_ERROR_KEEP) : (size_t)0,
                              "truncated", 1);
        detail = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
        json_decref(j);
    }
    st = keel_fleet_campaign_device_set(in->db, campaign, device, state, detail, now);
    free(detail);
    return st;
}

static keel_status_t observe(fleetd_ingest_t *in, keel_fleet_anomaly_obs_t *o, int64_t now)
{
    devcache_t *d = cache_get(in, o->device);
    if (d == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t tst = cache_touch(in, d);
    if (tst != KEEL_OK)
        return tst;
    keel_fleet_anomaly_alert_t alerts[KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX];
    size_t n = 0;
    keel_status_t st = keel_fleet_anomaly_observe(&in->c.anomaly, &d->st, &in->fleet, o, alerts,
                                                  KEEL_FLEET_ANOMALY_OBS_ALERTS_MAX, &n);
    if (st != KEEL_OK)
        return st;
    return alerts_store(in, alerts, n, now);
}


static void parse_one(batch_t *b, const fleetd_item_t *it, parsed_t *p)
{
    fleetd_leaf_t leaf;
    p->what = ITEM_DROPPED;
    p->hold = NULL;
    p->body = NULL;
    if (fleetd_topic_parse(it->topic, p->device, &leaf) != KEEL_OK) {
        b->malformed++;
        keel_log(KEEL_LOG_DEBUG, "fleet: message on an unexpected topic dropped: %s", keel_error_message());
        keel_error_clear();
        return;
    }
    if (leaf == FLEETD_LEAF_STATE) {
        if (!it->retained) /* a retained one is a replay, not a connection */
            p->what = ITEM_STATE;
        return;
    }
    keel_fleet_msg_t *m = &b->msg[b->n_msg];
    if (fleetd_envelope_parse(p->device, leaf, it->payload, it->len, it->received, m, &p->hold, &p->body) !=
        KEEL_OK) {
        b->malformed++;
        keel_log(KEEL_LOG_DEBUG, "fleet: a message from %s dropped: %s", p->device, keel_error_message());
        keel_error_clear();
        return;
    }
    p->what = ITEM_MESSAGE;
    p->msg = b->n_msg++;
}

/* What the last batch left: its envelopes go, the arrays stay for the next. */
static void batch_clear(batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        free(b->p[i].body);
        json_decref(b->p[i].hold);
        b->p[i].body = NULL;
        b->p[i].hold = NULL;
    }
    b->n = b->n_msg = 0;
    b->stored = b->duplicates = b->unknown = b->malformed = 0;
}

static void batch_free(batch_t *b)
{
    if (b->p != NULL)
        batch_clear(b);
    free(b->p);
    free(b->msg);
    free(b->res);
    memset(b, 0, sizeof *b);
}

/* The arrays are allocated once, for the largest batch. */
static keel_status_t batch_init(batch_t *b, size_t cap)
{
    memset(b, 0, sizeof *b);
    b->p = calloc(cap, sizeof *b->p);
    b->msg = calloc(cap, sizeof *b->msg);
    b->res = calloc(cap, sizeof *b->res);
    if (b->p == NULL || b->msg == NULL || b->res == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory"); /* the caller's batch_free frees what was had */
    return KEEL_OK;
}

static void batch_parse(batch_t *b, fleetd_item_t *const *items, size_t n)
{
    batch_clear(b);
    b->n = n;
    for (size_t i = 0; i < n; i++)
        parse_one(b, items[i], &b->p[i]);
}

/* A connection report: counted by the detectors (reconnect rate). */
static keel_status_t on_state(fleetd_ingest_t *in, batch_t *b, const char *device, int64_t now)
{
    keel_fleet_device_t d;
    keel_status_t st = keel_fleet_device_get(in->db, device, &d);
    if (st == KEEL_ERR_NOT_FOUND || (st == KEEL_OK && d.state == KEEL_FLEET_DEV_REVOKED)) {
        keel_error_clear();
        b->unknown++;
        return KEEL_OK;
    }
    if (st != KEEL_OK)
        return st;
    keel_fleet_anomaly_obs_t o = {.device = device, .time = now, .kind = KEEL_FLEET_OBS_STATE, .security_version = -1};
    return observe(in, &o, now);
}

/* A stored message: the device's events, then the detectors. */
static keel_status_t on_message(fleetd_ingest_t *in, batch_t *b, const parsed_t *p)
{
    const keel_fleet_msg_t *m = &b->msg[p->msg];
    const char *device = p->device;
    int64_t now = m->received;
    keel_status_t st = KEEL_OK;
    json_t *data = json_object_get(p->hold, "data");
    const char *type = str_of(data, "type");
    keel_fleet_anomaly_obs_t o = {
        .device = device,
        .time = now,
        .device_time = m->ts,
        .kind = strcmp(m->kind, "telemetry") == 0 ? KEEL_FLEET_OBS_TELEMETRY
                : strcmp(m->kind, "alert") == 0   ? KEEL_FLEET_OBS_ALERT
                                                  : KEEL_FLEET_OBS_EVENT,
        .size = m->body_len,
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
            /* 32 hex digits or nothing: the id is logged and sent back in the receipt. */
            post_t *q = id != NULL && strlen(id) == 32 && strspn(id, HEX_DIGITS) == 32 ? post_add(in) : NULL;
            if (q != NULL) {
                q->what = POST_ERASE;
                snprintf(q->device, sizeof q->device, "%s", device);
                snprintf(q->id, sizeof q->id, "%s", id);
            }
        }
    }
    if (o.version != NULL && strlen(o.version) > KEEL_FLEET_ANOMALY_VERSION_MAX)
        o.version = NULL;
    if (st == KEEL_ERR_ARG) {
        /* An event the store's checks refused (before any SQL ran): it costs
         * the device its event, never the batch of other devices' messages. */
        b->malformed++;
        keel_log(KEEL_LOG_DEBUG, "fleet: an event from %s ignored: %s", device, keel_error_message());
        keel_error_clear();
        st = KEEL_OK;
    }
    return st == KEEL_OK ? observe(in, &o, now) : st;
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
             (unsigned long long)first, (unsigned long long)last, (unsigned long long)last - first + 1);
    snprintf(dedupe, sizeof dedupe, "loss:%s:%llu", device, (unsigned long long)first);
    if (alert_store(in, "loss", "warning", detail, dedupe, device, (int64_t)time(NULL)) != KEEL_OK)
        keel_error_clear();
}

/* Device order within a batch (arrival order per device kept): two
 * instances then take the devices' row locks in the same order and cannot
 * deadlock on PostgreSQL. */
static int item_cmp(const void *a, const void *b)
{
    const fleetd_item_t *x = *(const fleetd_item_t *const *)a, *y = *(const fleetd_item_t *const *)b;
    int c = strcmp(x->topic, y->topic);
    return c != 0 ? c : (x->order > y->order) - (x->order < y->order);
}

/* One attempt at storing the batch: its messages first (grouped by device,
 * as the items are sorted), then, in arrival order per device, what each
 * item means. Counts are the attempt's own: kept only when it commits. */
static keel_status_t batch_run(fleetd_ingest_t *in, batch_t *b, fleetd_item_t *const *items)
{
    in->fleet_undo = in->fleet;
    b->stored = b->duplicates = b->unknown = 0;
    uint64_t malformed = b->malformed;
    keel_status_t st = keel_fleet_db_begin(in->db);
    if (st == KEEL_OK)
        st = keel_fleet_ingest_many(in->db, b->msg, b->n_msg, b->res);
    for (size_t i = 0; st == KEEL_OK && i < b->n; i++) {
        const parsed_t *p = &b->p[i];
        if (p->what == ITEM_STATE) {
            st = on_state(in, b, p->device, items[i]->received);
        } else if (p->what == ITEM_MESSAGE) {
            const keel_fleet_ingest_result_t *r = &b->res[p->msg];
            if (r->unknown)
                b->unknown++;
            else if (r->duplicate)
                b->duplicates++;
            else if ((st = on_message(in, b, p)) == KEEL_OK)
                b->stored++;
        }
    }
    if (st == KEEL_OK)
        st = keel_fleet_db_commit(in->db);
    if (st != KEEL_OK && keel_fleet_db_in_tx(in->db))
        keel_fleet_db_rollback(in->db);
    if (st == KEEL_OK) {
        batch_keep(in);
    } else {
        batch_undo(in);
        b->malformed = malformed;
    }
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
    if (now - in->last_flush >= FLUSH_EVERY_S) {
        in->last_flush = now;
        if (cache_flush(in) != KEEL_OK) {
            keel_log(KEEL_LOG_WARN, "fleet: detector states not written back (next try in %d s): %s", FLUSH_EVERY_S,
                     keel_error_message());
            keel_error_clear();
        }
    }
    post_run(in);
}

static void *ingest_main(void *arg)
{
    fleetd_ingest_t *in = arg;
    for (;;) {
        atomic_store(&in->stats.turned_ms, (int64_t)(keel_now() * 1000));
        size_t n = 0;
        fleetd_item_t *items = fleetd_queue_pop(in->c.queue, in->c.batch, 200, LINGER_MS, &n);
        if (items == NULL) {
            if (atomic_load(&in->stopping) && fleetd_queue_depth(in->c.queue) == 0) {
                if (cache_flush(in) != KEEL_OK) {
                    keel_log(KEEL_LOG_WARN, "fleet: detector states not written back at stop: %s",
                             keel_error_message());
                    keel_error_clear();
                }
                break; /* closed and drained */
            }
            periodic(in);
            continue;
        }
        fleetd_item_t **arr = malloc(n * sizeof *arr);
        if (arr == NULL) {
            keel_log(KEEL_LOG_ERROR, "fleet: out of memory; a batch of %zu messages is lost (loss alerts follow)", n);
            fleetd_item_free_list(items);
            continue;
        }
        size_t k = 0;
        for (fleetd_item_t *it = items; it != NULL && k < n; it = it->next, k++) {
            it->order = k;
            arr[k] = it;
        }
        qsort(arr, k, sizeof *arr, item_cmp);
        batch_t *b = &in->batch;
        batch_parse(b, arr, k);
        /* BUSY (locked, a serialization failure, a database that went away
         * and is coming back) is retried for as long as it lasts: the queue
         * fills, the MQTT thread stops reading, the broker keeps the rest.
         * Anything else is retried a few times, then the batch is given up
         * and its messages show as lost. */
        keel_status_t st;
        char why[KEEL_ERROR_MAX] = "";
        unsigned attempt = 0, other = 0;
        for (;;) {
            atomic_store(&in->stats.turned_ms, (int64_t)(keel_now() * 1000)); /* retrying is turning */
            post_clear(in);
            st = batch_run(in, b, arr);
            if (st == KEEL_OK)
                break;
            snprintf(why, sizeof why, "%s", keel_error_message());
            keel_error_clear();
            if (st != KEEL_ERR_BUSY && ++other >= RETRIES_OTHER)
                break;
            if (st == KEEL_ERR_BUSY && atomic_load(&in->stopping) && attempt >= 20)
                break;
            atomic_fetch_add(&in->stats.retries, 1);
            if (attempt == 10)
                keel_log(KEEL_LOG_WARN, "fleet: the database keeps refusing a batch (%s); still trying", why);
            unsigned ms = attempt < 12 ? 1u << attempt : 4096u;
            usleep((useconds_t)ms * 1000u);
            attempt++;
        }
        free(arr);
        if (st != KEEL_OK) {
            /* The batch is not stored. Its messages were acknowledged to the
             * broker, so they are lost here; the gaps they leave will show
             * as loss alerts. The log says why. */
            keel_log(KEEL_LOG_ERROR, "fleet: a batch of %zu messages was not stored: %s", n, why);
            post_clear(in);
        } else {
            atomic_fetch_add(&in->stats.stored, b->stored);
            atomic_fetch_add(&in->stats.duplicates, b->duplicates);
            atomic_fetch_add(&in->stats.unknown, b->unknown);
            atomic_fetch_add(&in->stats.batches, 1);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            atomic_store(&in->stats.last_commit, (int64_t)ts.tv_sec);
            atomic_store(&in->stats.last_commit_ms, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
        }
        atomic_fetch_add(&in->stats.malformed, b->malformed);
        batch_clear(b);
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
    if (st == KEEL_OK)
        st = batch_init(&in->batch, c->batch);
    if (st == KEEL_OK) {
        keel_fleet_anomaly_fleet_init(&in->fleet);
        in->last_tick = in->last_settle = in->last_flush = (int64_t)time(NULL);
        atomic_store(&in->stats.turned_ms, (int64_t)(keel_now() * 1000));
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
    batch_free(&in->batch);
    free(in->cache);
    free(in->touched);
    keel_fleet_db_close(in->db);
    free(in);
}

/*
 * Personal data in the fleet (5.11-2, 5.11-4, 6-6..6-8): erase, export,
 * retention and the pseudonymous daily aggregates that outlive raw
 * messages. The raw message bodies are the personal data; an erase deletes
 * them and gives the device a new pseudonym, so the aggregates made before
 * can no longer be tied to it.
 */
#include "db_internal.h"
#include "keel/fleet_store.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define DAY 86400

typedef struct {
    const char *device, *source;
    char request[33];
    bool given;
    int64_t now;
    keel_fleet_erasure_t *out;
} erase_t;

typedef struct {
    bool seen;
    char device[KEEL_FLEET_ID_MAX + 1];
    int64_t at, messages, gaps;
} erasure_row_t;

static keel_status_t erasure_row(void *arg, const keel_fleet_val_t *c, unsigned n)
{
    erasure_row_t *e = arg;
    if (n != 4 || e->seen)
        return KEEL_OK;
    e->seen = true;
    int64_t *const to[] = {&e->at, &e->messages, &e->gaps};
    keel_status_t st = keel_fleet_col_text(&c[0], e->device, sizeof e->device);
    if (st == KEEL_OK)
        st = keel_fleet_val_ints(c + 1, 3, to);
    return st;
}

static keel_status_t erase_tx(keel_fleet_db_t *db, void *arg)
{
    erase_t *a = arg;
    keel_fleet_val_t dev[] = {KEEL_FV_S(a->device)};
    int64_t n = 0;
    keel_status_t st = keel_fleet_db_int(db, "SELECT COUNT(*) FROM devices WHERE id = $1", dev, 1, &n);
    if (st == KEEL_OK && n == 0)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "device %s is not registered", a->device);
    erasure_row_t first = {0};
    if (!a->given)
        keel_fleet_random_hex(a->request, 16);
    keel_fleet_val_t req[] = {KEEL_FV_S(a->request)};
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db, "SELECT device, at, messages, gaps FROM erasures WHERE id = $1", req, 1,
                                erasure_row, &first, NULL);
    if (st == KEEL_OK && first.seen && strcmp(first.device, a->device) != 0)
        st = keel_errorf(KEEL_ERR_EXISTS, "erase request %s belongs to another device", a->request);
    uint64_t msgs = 0, gaps = 0;
    /* The device's seq row first: its lock orders this against a concurrent
     * ingest (which re-checks erased_seq under that lock). Erased seqs are
     * not taken again; drops so far explained what was erased. */
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db,
                                "UPDATE device_seq SET erased_seq = last_seq, dropped_used = dropped_reported "
                                "WHERE device = $1",
                                dev, 1, NULL, NULL, NULL);
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db, "DELETE FROM messages WHERE device = $1", dev, 1, NULL, NULL, &msgs);
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db, "DELETE FROM gaps WHERE device = $1", dev, 1, NULL, NULL, &gaps);
    char pseudonym[33];
    keel_fleet_random_hex(pseudonym, 16);
    keel_fleet_val_t upd[] = {KEEL_FV_S(a->device), KEEL_FV_S(pseudonym)};
    if (st == KEEL_OK)
        st = keel_fleet_db_exec(db, "UPDATE devices SET pseudonym = $2 WHERE id = $1", upd, 2, NULL, NULL, NULL);
    if (st != KEEL_OK)
        return st;
    keel_fleet_erasure_t *o = a->out;
    snprintf(o->id, sizeof o->id, "%s", a->request);
    if (first.seen) {
        keel_fleet_val_t p[] = {KEEL_FV_S(a->request), KEEL_FV_I(msgs), KEEL_FV_I(gaps)};
        st = keel_fleet_db_exec(db, "UPDATE erasures SET messages = messages + $2, gaps = gaps + $3 WHERE id = $1",
                                p, 3, NULL, NULL, NULL);
        o->messages = (uint64_t)first.messages + msgs;
        o->gaps = (uint64_t)first.gaps + gaps;
        o->time = first.at;
    } else {
        keel_fleet_val_t p[] = {KEEL_FV_S(a->request), KEEL_FV_S(a->device), KEEL_FV_S(a->source),
                                KEEL_FV_I(a->now),     KEEL_FV_I(msgs),      KEEL_FV_I(gaps)};
        st = keel_fleet_db_exec(db,
                                "INSERT INTO erasures (id, device, source, at, messages, gaps) "
                                "VALUES ($1, $2, $3, $4, $5, $6)",
                                p, 6, NULL, NULL, NULL);
        o->messages = msgs;
        o->gaps = gaps;
        o->time = a->now;
    }
    return st;
}

keel_status_t keel_fleet_erase(keel_fleet_db_t *db, const char *device, const char *request_id, const char *source,
                               int64_t now, keel_fleet_erasure_t *out)
{
    if (db == NULL || out == NULL || !keel_fleet_word_ok(device, KEEL_FLEET_ID_MAX, false) || source == NULL ||
        (strcmp(source, "device") != 0 && strcmp(source, "operator") != 0))
        return keel_errorf(KEEL_ERR_ARG, "erase: bad device or source");
    memset(out, 0, sizeof *out);
    erase_t a = {.device = device, .source = source, .now = now, .out = out, .given = request_id != NULL};
    if (request_id != NULL) {
        if (strnlen(request_id, 33) != 32)
            return keel_errorf(KEEL_ERR_ARG, "erase: the request id must be 32 hex characters");
        for (size_t i = 0; i < 32; i++) {
            if (!isxdigit((unsigned char)request_id[i]))
                return keel_errorf(KEEL_ERR_ARG, "erase: the request id must be 32 hex characters");
            a.request[i] = (char)tolower((unsigned char)request_id[i]);
        }
        a.request[32] = '\0';
    }
    keel_status_t st = keel_fleet_tx(db, erase_tx, &a);
    if (st != KEEL_OK)
        memset(out, 0, sizeof *out);
    return st;
}

/* ---- export ------------------------------------------------------------------------------------ */

typedef struct {
    const char *device;
    json_t *out;
} export_t;

static keel_status_t add_list(keel_fleet_db_t *db, json_t *o, const char *key, const char *sql, const char *device,
                              const char *spec, const char *const *names, size_t max)
{
    keel_fleet_val_t p[] = {KEEL_FV_S(device)};
    json_t *arr = NULL;
    keel_status_t st = keel_fleet_query_json(db, sql, p, 1, spec, names, max, &arr);
    if (st == KEEL_OK && json_object_set_new(o, key, arr) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    return st;
}

static keel_status_t export_tx(keel_fleet_db_t *db, void *arg)
{
    export_t *e = arg;
    json_decref(e->out);
    e->out = NULL;
    keel_fleet_val_t p[] = {KEEL_FV_S(e->device)};
    int64_t n = 0, bytes = 0;
    keel_status_t st = keel_fleet_db_int(db, "SELECT COUNT(*) FROM messages WHERE device = $1", p, 1, &n);
    if (st == KEEL_OK && n > 0)
        st = keel_fleet_db_int(db, "SELECT CAST(SUM(bytes) AS BIGINT) FROM messages WHERE device = $1", p, 1, &bytes);
    if (st == KEEL_OK && (n > (int64_t)KEEL_FLEET_EXPORT_MESSAGES_MAX || bytes > (int64_t)KEEL_FLEET_EXPORT_BYTES_MAX))
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "export of %s: %lld messages, %lld bytes (caps %u, %u)", e->device,
                         (long long)n, (long long)bytes, KEEL_FLEET_EXPORT_MESSAGES_MAX, KEEL_FLEET_EXPORT_BYTES_MAX);
    static const char *const dnames[] = {"id",         "serial",           "model",      "org",
                                         "cert_sha256", "cert_serial",     "certificate", "provisioned",
                                         "pseudonym",  "state",            "registered", "first_seen",
                                         "last_seen",  "revoked_at",       "version",    "security_version",
                                         "last_seq",   "dropped_reported", "detector"};
    json_t *devs = NULL;
    if (st == KEEL_OK)
        st = keel_fleet_query_json(db,
                                   "SELECT d.id, d.serial, d.model, d.org, d.cert_sha256, d.cert_serial, "
                                   "d.certificate, d.provisioned, d.pseudonym, d.state, d.registered, s.first_seen, "
                                   "s.last_seen, d.revoked_at, d.version, d.security_version, s.last_seq, "
                                   "s.dropped_reported, COALESCE(t.state, '') FROM devices d "
                                   "JOIN device_seq s ON s.device = d.id LEFT JOIN detectors t ON t.device = d.id "
                                   "WHERE d.id = $1",
                                   p, 1, "sssssssissiiiisiiis", dnames, 1, &devs);
    if (st == KEEL_OK && json_array_size(devs) != 1)
        st = keel_errorf(KEEL_ERR_NOT_FOUND, "device %s is not registered", e->device);
    if (st == KEEL_OK &&
        (e->out = json_pack("{s:s, s:O}", "format", "keel-fleet-export-1", "device", json_array_get(devs, 0))) == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    json_decref(devs);

    static const char *const mnames[] = {"seq", "ts", "received", "kind", "data"};
    static const char *const gnames[] = {"first", "last", "opened", "state", "settled"};
    static const char *const anames[] = {"id", "time", "kind", "severity", "detail"};
    static const char *const cnames[] = {"campaign", "state", "detail", "updated", "confirmed"};
    static const char *const enames[] = {"id", "source", "time", "messages", "gaps"};
    static const char *const gg[] = {"day", "kind", "messages", "bytes"};
    if (st == KEEL_OK)
        st = add_list(db, e->out, "messages",
                      "SELECT seq, ts, received, kind, body FROM messages WHERE device = $1 ORDER BY seq", e->device,
                      "iiisj", mnames, KEEL_FLEET_EXPORT_MESSAGES_MAX);
    if (st == KEEL_OK)
        st = add_list(db, e->out, "gaps",
                      "SELECT seq_first, seq_last, opened, state, settled FROM gaps WHERE device = $1 "
                      "ORDER BY seq_first LIMIT 100001",
                      e->device, "iiisi", gnames, KEEL_FLEET_LIST_MAX);
    if (st == KEEL_OK)
        st = add_list(db, e->out, "alerts",
                      "SELECT id, at, kind, severity, detail FROM alerts WHERE device = $1 "
                      "ORDER BY at, id LIMIT 100001",
                      e->device, "sissj", anames, KEEL_FLEET_LIST_MAX);
    if (st == KEEL_OK)
        st = add_list(db, e->out, "campaigns",
                      "SELECT campaign, state, detail, updated, confirmed FROM campaign_devices WHERE device = $1 "
                      "ORDER BY updated, campaign LIMIT 100001",
                      e->device, "sssii", cnames, KEEL_FLEET_LIST_MAX);
    if (st == KEEL_OK)
        st = add_list(db, e->out, "erasures",
                      "SELECT id, source, at, messages, gaps FROM erasures WHERE device = $1 ORDER BY at, id "
                      "LIMIT 100001",
                      e->device, "ssiii", enames, KEEL_FLEET_LIST_MAX);
    if (st == KEEL_OK)
        st = add_list(db, e->out, "aggregates",
                      "SELECT day, kind, messages, bytes FROM aggregates "
                      "WHERE pseudonym = (SELECT pseudonym FROM devices WHERE id = $1) ORDER BY day, kind LIMIT 100001",
                      e->device, "isii", gg, KEEL_FLEET_LIST_MAX);
    return st;
}

keel_status_t keel_fleet_export(keel_fleet_db_t *db, const char *device, json_t **out)
{
    if (db == NULL || out == NULL || !keel_fleet_word_ok(device, KEEL_FLEET_ID_MAX, false))
        return keel_errorf(KEEL_ERR_ARG, "export: bad device");
    export_t e = {device, NULL};
    keel_status_t st = keel_fleet_tx(db, export_tx, &e);
    if (st != KEEL_OK) {
        json_decref(e.out);
        return st;
    }
    *out = e.out;
    return KEEL_OK;
}

/* ---- retention and aggregates --------------------------------------------------------------------- */

typedef struct {
    const keel_fleet_retention_t *r;
    int64_t now;
    keel_fleet_retention_stats_t s;
} retention_t;

static keel_status_t retention_tx(keel_fleet_db_t *db, void *arg)
{
    retention_t *a = arg;
    a->s = (keel_fleet_retention_stats_t){0};
    keel_status_t st = KEEL_OK;
    if (a->r->raw_s > 0) {
        keel_fleet_val_t p[] = {KEEL_FV_I(a->now - a->r->raw_s)};
        int64_t n = 0;
        uint64_t deleted = 0;
        st = keel_fleet_db_int(db, "SELECT COUNT(*) FROM messages WHERE received < $1", p, 1, &n);
        if (st == KEEL_OK && n > 0)
            st = keel_fleet_db_exec(db,
                                    "INSERT INTO aggregates (pseudonym, day, kind, messages, bytes) "
                                    "SELECT d.pseudonym, (m.received / 86400) * 86400, m.kind, COUNT(*), "
                                    "CAST(SUM(m.bytes) AS BIGINT) "
                                    "FROM messages m JOIN devices d ON d.id = m.device WHERE m.received < $1 "
                                    "GROUP BY d.pseudonym, (m.received / 86400) * 86400, m.kind "
                                    "ON CONFLICT (pseudonym, day, kind) DO UPDATE SET "
                                    "messages = aggregates.messages + excluded.messages, "
                                    "bytes = aggregates.bytes + excluded.bytes",
                                    p, 1, NULL, NULL, NULL);
        if (st == KEEL_OK && n > 0)
            st = keel_fleet_db_exec(db, "DELETE FROM messages WHERE received < $1", p, 1, NULL, NULL, &deleted);
        if (st == KEEL_OK)
            st = keel_fleet_db_exec(db, "DELETE FROM gaps WHERE state <> 'open' AND opened < $1", p, 1, NULL, NULL,
                                    NULL);
        a->s.aggregated = (uint64_t)n;
        a->s.deleted_messages = deleted;
    }
    if (st == KEEL_OK && a->r->aggregate_s > 0) {
        keel_fleet_val_t p[] = {KEEL_FV_I(a->now - a->r->aggregate_s - DAY)};
        st = keel_fleet_db_exec(db, "DELETE FROM aggregates WHERE day <= $1", p, 1, NULL, NULL,
                                &a->s.deleted_aggregates);
    }
    if (st == KEEL_OK && a->r->alert_s > 0) {
        keel_fleet_val_t p[] = {KEEL_FV_I(a->now - a->r->alert_s)};
        st = keel_fleet_db_exec(db, "DELETE FROM alerts WHERE at < $1", p, 1, NULL, NULL, &a->s.deleted_alerts);
    }
    return st;
}

keel_status_t keel_fleet_retention_run(keel_fleet_db_t *db, const keel_fleet_retention_t *r, int64_t now,
                                       keel_fleet_retention_stats_t *out)
{
    if (db == NULL || r == NULL)
        return keel_errorf(KEEL_ERR_ARG, "retention: no settings");
    retention_t a = {.r = r, .now = now};
    keel_status_t st = keel_fleet_tx(db, retention_tx, &a);
    if (st == KEEL_OK && out != NULL)
        *out = a.s;
    return st;
}

keel_status_t keel_fleet_aggregates(keel_fleet_db_t *db, int64_t since_day, json_t **out)
{
    if (db == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "aggregates: no output");
    static const char *const names[] = {"pseudonym", "day", "kind", "messages", "bytes"};
    keel_fleet_val_t p[] = {KEEL_FV_I(since_day)};
    return keel_fleet_query_json(db,
                                 "SELECT pseudonym, day, kind, messages, bytes FROM aggregates WHERE day >= $1 "
                                 "ORDER BY day, pseudonym, kind LIMIT 100001",
                                 p, 1, "sisii", names, KEEL_FLEET_LIST_MAX, out);
}

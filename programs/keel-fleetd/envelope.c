/* Topics and envelopes of device messages (fleetd.h, docs/fleet-protocol.md). Pure. */
#include "fleetd.h"

#include "keel/identity.h"

#include <string.h>

keel_status_t fleetd_topic_parse(const char *topic, char device[KEEL_FLEET_ID_MAX + 1], fleetd_leaf_t *leaf)
{
    size_t root = strlen(FLEETD_TOPIC_ROOT);
    if (topic == NULL || strncmp(topic, FLEETD_TOPIC_ROOT, root) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "not a device topic");
    const char *id = topic + root, *slash = strchr(id, '/');
    size_t n = slash != NULL ? (size_t)(slash - id) : 0;
    if (n == 0 || n > KEEL_FLEET_ID_MAX)
        return keel_errorf(KEEL_ERR_FORMAT, "no device id in the topic");
    memcpy(device, id, n);
    device[n] = '\0';
    if (!keel_identity_id_ok(device))
        return keel_errorf(KEEL_ERR_FORMAT, "the topic's device id is malformed");
    const char *rest = slash + 1;
    if (strcmp(rest, "telemetry") == 0)
        *leaf = FLEETD_LEAF_TELEMETRY;
    else if (strcmp(rest, "events") == 0)
        *leaf = FLEETD_LEAF_EVENTS;
    else if (strcmp(rest, "state") == 0)
        *leaf = FLEETD_LEAF_STATE;
    else
        return keel_errorf(KEEL_ERR_FORMAT, "unknown topic leaf");
    return KEEL_OK;
}

/* A device's text for a message that may be logged: printable ASCII, the rest as '?', at most cap-1 bytes. */
static const char *shown(const char *in, char *out, size_t cap)
{
    size_t i = 0;
    for (; in[i] != '\0' && i + 1 < cap; i++)
        out[i] = (unsigned char)in[i] >= 0x20 && (unsigned char)in[i] < 0x7f ? in[i] : '?';
    out[i] = '\0';
    return out;
}

static bool uint_of(const json_t *v, uint64_t max, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* ---- where "data" is in the envelope's text ----
 * The body stored is the device's own text of its "data" value, not a
 * re-serialization: nothing is lost or reformatted, and it costs a scan
 * instead of a dump. The scan runs only on text jansson has accepted as
 * one object without duplicate keys, so it can be this small; any key
 * written with an escape sends the caller back to json_dumps. */

static size_t skip_ws(const char *p, size_t i, size_t n)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* i at a '"': the index after its closing quote (n if none). */
static size_t skip_string(const char *p, size_t i, size_t n, bool *escaped)
{
    for (i++; i < n; i++) {
        if (p[i] == '\\') {
            *escaped = true;
            i++;
        } else if (p[i] == '"') {
            return i + 1;
        }
    }
    return n;
}

/* i at a value's first byte: the index after the value (n if it does not end). */
static size_t skip_value(const char *p, size_t i, size_t n)
{
    size_t depth = 0;
    bool escaped = false;
    while (i < n) {
        char c = p[i];
        if (c == '"') {
            i = skip_string(p, i, n, &escaped);
            if (depth == 0)
                return i;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return i; /* the end of a scalar */
            if (--depth == 0)
                return i + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r')) {
            return i;
        }
        i++;
    }
    return depth == 0 ? n : n + 1;
}

static bool data_span(const char *p, size_t n, const char **out, size_t *out_len)
{
    size_t i = skip_ws(p, 0, n);
    if (i >= n || p[i] != '{')
        return false;
    for (i = skip_ws(p, i + 1, n); i < n && p[i] == '"';) {
        bool escaped = false;
        size_t k = i + 1;
        i = skip_string(p, i, n, &escaped);
        if (escaped || i >= n)
            return false;
        bool is_data = i - 1 - k == 4 && memcmp(p + k, "data", 4) == 0;
        i = skip_ws(p, i, n);
        if (i >= n || p[i] != ':')
            return false;
        size_t v = skip_ws(p, i + 1, n);
        i = skip_value(p, v, n);
        if (i > n)
            return false;
        if (is_data) {
            *out = p + v;
            *out_len = i - v;
            return true;
        }
        i = skip_ws(p, i, n);
        if (i >= n || p[i] != ',')
            return false;
        i = skip_ws(p, i + 1, n);
    }
    return false;
}

keel_status_t fleetd_envelope_parse(const char *device, fleetd_leaf_t leaf, const char *payload, size_t len,
                                    int64_t received, keel_fleet_msg_t *m, json_t **hold, char **body_text)
{
    *hold = NULL;
    *body_text = NULL;
    memset(m, 0, sizeof *m);
    if (leaf == FLEETD_LEAF_STATE)
        return keel_errorf(KEEL_ERR_ARG, "a state message has no envelope");
    json_error_t e;
    json_t *j = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &e);
    if (!json_is_object(j)) {
        json_decref(j);
        return keel_errorf(KEEL_ERR_FORMAT, "the envelope is not a JSON object");
    }
    keel_status_t st = KEEL_OK;
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        if (strcmp(k, "device") != 0 && strcmp(k, "seq") != 0 && strcmp(k, "ts") != 0 && strcmp(k, "kind") != 0 &&
            strcmp(k, "data") != 0 && strcmp(k, "dropped") != 0) {
            char name[33];
            st = keel_errorf(KEEL_ERR_FORMAT, "unknown envelope field \"%s\"", shown(k, name, sizeof name));
            break;
        }
    }
    const char *dev = json_string_value(json_object_get(j, "device"));
    const char *kind = json_string_value(json_object_get(j, "kind"));
    json_t *data = json_object_get(j, "data"), *dropped = json_object_get(j, "dropped");
    uint64_t seq = 0, ts = 0;
    if (st == KEEL_OK && (dev == NULL || strcmp(dev, device) != 0))
        st = keel_errorf(KEEL_ERR_FORMAT, "the envelope's device is not the topic's");
    if (st == KEEL_OK && (!uint_of(json_object_get(j, "seq"), (uint64_t)INT64_MAX, &seq) || seq == 0))
        st = keel_errorf(KEEL_ERR_FORMAT, "seq must be a positive integer");
    if (st == KEEL_OK && !uint_of(json_object_get(j, "ts"), (uint64_t)INT64_MAX, &ts))
        st = keel_errorf(KEEL_ERR_FORMAT, "ts must be a Unix time");
    if (st == KEEL_OK) {
        bool ok = kind != NULL && (leaf == FLEETD_LEAF_TELEMETRY
                                       ? strcmp(kind, "telemetry") == 0
                                       : strcmp(kind, "event") == 0 || strcmp(kind, "alert") == 0);
        if (!ok)
            st = keel_errorf(KEEL_ERR_FORMAT, "kind does not fit the topic");
    }
    if (st == KEEL_OK && !json_is_object(data))
        st = keel_errorf(KEEL_ERR_FORMAT, "data must be an object");
    uint64_t total = 0;
    if (st == KEEL_OK && dropped != NULL) {
        if (!json_is_object(dropped))
            st = keel_errorf(KEEL_ERR_FORMAT, "dropped must be an object");
        json_object_foreach(dropped, k, v) {
            uint64_t n = 0;
            if (st != KEEL_OK)
                break;
            if ((strcmp(k, "telemetry") != 0 && strcmp(k, "event") != 0 && strcmp(k, "alert") != 0) ||
                !uint_of(v, UINT32_MAX, &n))
                st = keel_errorf(KEEL_ERR_FORMAT, "dropped holds a bad count");
            total += n;
        }
    }
    const char *text = NULL;
    size_t text_len = 0;
    char *body = NULL;
    if (st == KEEL_OK && !data_span(payload, len, &text, &text_len)) {
        body = json_dumps(data, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
        if (body == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        text = body;
        text_len = body != NULL ? strlen(body) : 0;
    }
    if (st == KEEL_OK && text_len > KEEL_FLEET_BODY_MAX)
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "data is over %u bytes", KEEL_FLEET_BODY_MAX);
    if (st != KEEL_OK) {
        free(body);
        json_decref(j);
        return st;
    }
    m->device = dev;
    m->seq = seq;
    m->ts = (int64_t)ts;
    m->received = received;
    m->kind = kind;
    m->body = text;
    m->body_len = text_len;
    m->dropped = total;
    *hold = j;
    *body_text = body;
    return KEEL_OK;
}

/* Topics and envelopes of device messages (fleetd.h, docs/fleet-protocol.md). Pure. */
#include "fleetd.h"

#include "keel/identity.h"

#include <stdlib.h>
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

/* ---- a quick check of JSON text ----
 * jansson builds a tree for every value and copies strings a byte at a
 * time: for a 250-byte envelope that was the largest share of ingest's CPU,
 * and telemetry's tree is never used. This walk reads the text without
 * allocating and answers true only for what jansson would surely accept
 * as one object (JSON_REJECT_DUPLICATES): strings without escapes, in
 * valid UTF-8 without control characters; numbers without exponent, at
 * most 18 integer digits; at most QUICK_DEPTH levels and QUICK_KEYS keys
 * open at once, no key twice in an object. Anything else is false, and
 * the caller lets jansson decide. fuzz_fleet_envelope checks that true
 * implies jansson's yes. */
#define QUICK_DEPTH 16
#define QUICK_KEYS 128

typedef struct {
    const unsigned char *p;
    size_t n, i;
    size_t key_at[QUICK_KEYS], key_len[QUICK_KEYS];
    size_t nkeys;
} quick_t;

static void q_ws(quick_t *q)
{
    while (q->i < q->n && (q->p[q->i] == ' ' || q->p[q->i] == '\t' || q->p[q->i] == '\n' || q->p[q->i] == '\r'))
        q->i++;
}

static bool q_cont(quick_t *q, size_t at, unsigned char lo, unsigned char hi)
{
    return at < q->n && q->p[at] >= lo && q->p[at] <= hi;
}

/* One UTF-8 sequence of two to four bytes at q->i (the well-formed ones of Unicode's table 3-7). */
static bool q_utf8(quick_t *q)
{
    unsigned char c = q->p[q->i];
    size_t i = q->i;
    bool ok;
    if (c >= 0xC2 && c <= 0xDF) {
        ok = q_cont(q, i + 1, 0x80, 0xBF);
        q->i += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        ok = q_cont(q, i + 1, lo, hi) && q_cont(q, i + 2, 0x80, 0xBF);
        q->i += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
        unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        ok = q_cont(q, i + 1, lo, hi) && q_cont(q, i + 2, 0x80, 0xBF) && q_cont(q, i + 3, 0x80, 0xBF);
        q->i += 4;
    } else {
        ok = false;
    }
    return ok;
}

/* A string at q->i (its opening quote); its bytes between the quotes in *at, *len. */
static bool q_string(quick_t *q, size_t *at, size_t *len)
{
    if (q->i >= q->n || q->p[q->i] != '"')
        return false;
    *at = ++q->i;
    while (q->i < q->n) {
        unsigned char c = q->p[q->i];
        if (c == '"') {
            *len = q->i - *at;
            q->i++;
            return true;
        }
        if (c < 0x20 || c == '\\')
            return false; /* a control character (invalid) or an escape (jansson decides) */
        if (c < 0x80)
            q->i++;
        else if (!q_utf8(q))
            return false;
    }
    return false;
}

static bool q_digits(quick_t *q, size_t *count)
{
    size_t from = q->i;
    while (q->i < q->n && q->p[q->i] >= '0' && q->p[q->i] <= '9')
        q->i++;
    *count = q->i - from;
    return *count > 0;
}

static bool q_number(quick_t *q)
{
    size_t ints = 0, frac = 0;
    if (q->i < q->n && q->p[q->i] == '-')
        q->i++;
    size_t first = q->i;
    if (!q_digits(q, &ints) || ints > 18 || (ints > 1 && q->p[first] == '0'))
        return false;
    if (q->i < q->n && q->p[q->i] == '.') {
        q->i++;
        if (!q_digits(q, &frac))
            return false;
    }
    return !(q->i < q->n && (q->p[q->i] == 'e' || q->p[q->i] == 'E'));
}

static bool q_word(quick_t *q, const char *w)
{
    size_t k = strlen(w);
    if (q->n - q->i < k || memcmp(q->p + q->i, w, k) != 0)
        return false;
    q->i += k;
    return true;
}

static bool q_value(quick_t *q, unsigned depth);

/* An object's key at q->i, not one of its object's keys since `base`, and its colon. */
static bool q_key(quick_t *q, size_t base)
{
    size_t at = 0, len = 0;
    if (!q_string(q, &at, &len) || q->nkeys >= QUICK_KEYS)
        return false;
    for (size_t k = base; k < q->nkeys; k++)
        if (q->key_len[k] == len && memcmp(q->p + q->key_at[k], q->p + at, len) == 0)
            return false; /* a key twice */
    q->key_at[q->nkeys] = at;
    q->key_len[q->nkeys++] = len;
    q_ws(q);
    if (q->i >= q->n || q->p[q->i] != ':')
        return false;
    q->i++;
    q_ws(q);
    return true;
}

/* One member's value at q->i; an object's member has its key at q->p[at..at+len). */
typedef bool (*q_member_fn)(quick_t *q, unsigned depth, size_t at, size_t len, void *arg);

/* An object or an array at q->i (its opening bracket): the members to the
 * closing one, each value read by `fn` (any JSON value when fn is NULL). */
static bool q_members(quick_t *q, unsigned depth, bool object, q_member_fn fn, void *arg)
{
    unsigned char close = object ? '}' : ']';
    size_t base = q->nkeys;
    if (q->i >= q->n || q->p[q->i] != (object ? '{' : '['))
        return false;
    q->i++;
    q_ws(q);
    if (q->i < q->n && q->p[q->i] == close) {
        q->i++;
        return true;
    }
    for (;;) {
        if (object && !q_key(q, base))
            return false;
        size_t at = object ? q->key_at[q->nkeys - 1] : 0, len = object ? q->key_len[q->nkeys - 1] : 0;
        if (!(fn != NULL ? fn(q, depth, at, len, arg) : q_value(q, depth)))
            return false;
        q_ws(q);
        if (q->i < q->n && q->p[q->i] == ',') {
            q->i++;
            q_ws(q);
            continue;
        }
        if (q->i < q->n && q->p[q->i] == close) {
            q->i++;
            q->nkeys = base;
            return true;
        }
        return false;
    }
}

static bool q_value(quick_t *q, unsigned depth)
{
    if (q->i >= q->n)
        return false;
    size_t at, len;
    switch (q->p[q->i]) {
    case '{':
    case '[':
        return depth < QUICK_DEPTH && q_members(q, depth + 1, q->p[q->i] == '{', NULL, NULL);
    case '"':
        return q_string(q, &at, &len);
    case 't':
        return q_word(q, "true");
    case 'f':
        return q_word(q, "false");
    case 'n':
        return q_word(q, "null");
    default:
        return q_number(q);
    }
}

static void q_init(quick_t *q, const char *text, size_t len)
{
    q->p = (const unsigned char *)text;
    q->n = len;
    q->i = 0;
    q->nkeys = 0; /* key_at and key_len fill as keys come */
    q_ws(q);
}

bool fleetd_json_object_quick(const char *text, size_t len)
{
    quick_t q;
    q_init(&q, text, len);
    bool ok = q_members(&q, 1, true, NULL, NULL);
    q_ws(&q);
    return ok && q.i == q.n;
}

/* ---- the quick path for a whole telemetry envelope ----
 * The same walk reads the envelope's own members, so that the commonest
 * message never reaches jansson: device (the topic's, without escapes),
 * seq and ts (plain digits: no sign, fraction, exponent or leading zero,
 * at most 18 of them), kind "telemetry", data (an object the quick check
 * takes), dropped (telemetry, event, alert: plain digits up to
 * UINT32_MAX). Anything else, including every envelope that is to be
 * refused, goes to fleetd_envelope_parse_json, which decides. The fuzz
 * target holds the two paths to the same answer. */

static bool q_is(const quick_t *q, size_t at, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(q->p + at, word, len) == 0;
}

static bool q_uint(quick_t *q, uint64_t *out)
{
    size_t from = q->i, count = 0;
    if (!q_digits(q, &count) || count > 18 || (count > 1 && q->p[from] == '0'))
        return false;
    if (q->i < q->n && (q->p[q->i] == '.' || q->p[q->i] == 'e' || q->p[q->i] == 'E'))
        return false;
    uint64_t v = 0;
    for (size_t k = from; k < q->i; k++)
        v = v * 10 + (uint64_t)(q->p[k] - '0');
    *out = v;
    return true;
}

enum { Q_DEVICE = 1, Q_SEQ = 2, Q_TS = 4, Q_KIND = 8, Q_DATA = 16 };
#define Q_REQUIRED (Q_DEVICE | Q_SEQ | Q_TS | Q_KIND | Q_DATA)

typedef struct {
    const char *device;
    unsigned seen;
    uint64_t seq, ts, dropped;
    size_t data_at, data_len;
} quick_envelope_t;

static bool q_dropped_member(quick_t *q, unsigned depth, size_t at, size_t len, void *arg)
{
    (void)depth;
    uint64_t *total = arg, n = 0;
    if (!q_is(q, at, len, "telemetry") && !q_is(q, at, len, "event") && !q_is(q, at, len, "alert"))
        return false;
    if (!q_uint(q, &n) || n > UINT32_MAX)
        return false;
    *total += n;
    return true;
}

static bool q_envelope_member(quick_t *q, unsigned depth, size_t at, size_t len, void *arg)
{
    quick_envelope_t *e = arg;
    size_t s_at = 0, s_len = 0;
    if (q_is(q, at, len, "device")) {
        e->seen |= Q_DEVICE;
        return q_string(q, &s_at, &s_len) && q_is(q, s_at, s_len, e->device);
    }
    if (q_is(q, at, len, "seq")) {
        e->seen |= Q_SEQ;
        return q_uint(q, &e->seq) && e->seq > 0;
    }
    if (q_is(q, at, len, "ts")) {
        e->seen |= Q_TS;
        return q_uint(q, &e->ts);
    }
    if (q_is(q, at, len, "kind")) {
        e->seen |= Q_KIND;
        return q_string(q, &s_at, &s_len) && q_is(q, s_at, s_len, "telemetry");
    }
    if (q_is(q, at, len, "data")) {
        e->seen |= Q_DATA;
        e->data_at = q->i;
        bool ok = q_members(q, depth + 1, true, NULL, NULL);
        e->data_len = q->i - e->data_at;
        return ok;
    }
    if (q_is(q, at, len, "dropped"))
        return q_members(q, depth + 1, true, q_dropped_member, &e->dropped);
    return false; /* an unknown field: the full path names it */
}

static bool envelope_quick(const char *device, const char *payload, size_t len, int64_t received,
                           keel_fleet_msg_t *m)
{
    quick_t q;
    quick_envelope_t e = {.device = device};
    q_init(&q, payload, len);
    bool ok = q_members(&q, 1, true, q_envelope_member, &e);
    q_ws(&q);
    if (!ok || q.i != q.n || (e.seen & Q_REQUIRED) != Q_REQUIRED || e.data_len > KEEL_FLEET_BODY_MAX)
        return false;
    m->device = device;
    m->seq = e.seq;
    m->ts = (int64_t)e.ts;
    m->received = received;
    m->kind = "telemetry";
    m->body = payload + e.data_at;
    m->body_len = e.data_len;
    m->dropped = e.dropped;
    return true;
}

keel_status_t fleetd_envelope_parse(const char *device, fleetd_leaf_t leaf, const char *payload, size_t len,
                                    int64_t received, keel_fleet_msg_t *m, json_t **hold, char **body_text)
{
    *hold = NULL;
    *body_text = NULL;
    if (leaf == FLEETD_LEAF_TELEMETRY) {
        memset(m, 0, sizeof *m);
        if (envelope_quick(device, payload, len, received, m))
            return KEEL_OK;
    }
    return fleetd_envelope_parse_json(device, leaf, payload, len, received, m, hold, body_text);
}

keel_status_t fleetd_envelope_parse_json(const char *device, fleetd_leaf_t leaf, const char *payload, size_t len,
                                         int64_t received, keel_fleet_msg_t *m, json_t **hold, char **body_text)
{
    *hold = NULL;
    *body_text = NULL;
    memset(m, 0, sizeof *m);
    if (leaf == FLEETD_LEAF_STATE)
        return keel_errorf(KEEL_ERR_ARG, "a state message has no envelope");
    const char *text = NULL;
    size_t text_len = 0;
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

/*
 * Fuzz target: what a device (or anyone holding a device's certificate)
 * publishes to keel-fleetd: the topic and the envelope of a message
 * (programs/keel-fleetd/envelope.c, compiled in). The input's first line is
 * the topic (capped at FLEETD_TOPIC_MAX as the consumer caps it), the rest
 * the payload, handed over in a buffer of its exact size (no NUL after it).
 * What must hold: a topic that parses names a well-formed device id and one
 * of the three leaves, and is exactly root/id/leaf; a state message has no
 * envelope; an envelope that is taken belongs to the topic's device, has
 * 1 <= seq <= INT64_MAX, a kind that fits the topic, is one jansson accepts
 * whole, and has a body of at most KEEL_FLEET_BODY_MAX bytes that is either
 * the payload's own text of "data" (then it parses alone to exactly that
 * data) or jansson's compact dump of it (reals to 15 significant digits,
 * what the dump keeps; its own normal form). And fleetd_json_object_quick,
 * run on the payload as it is, never says yes to text jansson refuses as
 * an object without duplicate keys. And fleetd_envelope_parse, which takes
 * common telemetry without jansson, gives exactly the answer of
 * fleetd_envelope_parse_json (jansson) for every payload: the same status,
 * and for an envelope taken the same device, seq, ts, kind, dropped and body.
 */
#include "fuzz.h"

#include "fleetd.h"
#include "keel/identity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

/* json_equal, but a real may differ in its last digits: the body keeps 15
 * significant digits (JSON_REAL_PRECISION(15)), not the 17 a double needs. */
static int near(const json_t *a, const json_t *b)
{
    if (json_is_real(a) && json_is_real(b)) {
        double x = json_real_value(a), y = json_real_value(b);
        return x == y || fabs(x - y) <= 1e-14 * fmax(fabs(x), fabs(y)) + 1e-323; /* + a subnormal step */
    }
    if (json_typeof(a) != json_typeof(b))
        return 0;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!near(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    if (json_is_object(a)) {
        const char *k;
        json_t *v;
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_foreach((json_t *)a, k, v) {
            json_t *w = json_object_get(b, k);
            if (w == NULL || !near(v, w))
                return 0;
        }
        return 1;
    }
    return json_equal(a, b);
}

/* The quick path against jansson's: one answer for every payload. */
static void same_as_json(const char *device, fleetd_leaf_t leaf, const char *payload, size_t size, keel_status_t st,
                         const keel_fleet_msg_t *m)
{
    keel_fleet_msg_t j;
    json_t *hold = NULL;
    char *body = NULL;
    keel_status_t js = fleetd_envelope_parse_json(device, leaf, payload, size, 1700000000, &j, &hold, &body);
    keel_error_clear();
    fuzz_must(js == st, "the quick path and jansson's disagree on an envelope");
    if (st == KEEL_OK) {
        fuzz_must(strcmp(j.device, m->device) == 0 && j.seq == m->seq && j.ts == m->ts &&
                      j.received == m->received && strcmp(j.kind, m->kind) == 0 && j.dropped == m->dropped,
                  "the quick path read an envelope's fields differently");
        fuzz_must(j.body_len == m->body_len && memcmp(j.body, m->body, j.body_len) == 0,
                  "the quick path took a different body");
    }
    free(body);
    json_decref(hold);
}

static const char *const leaf_names[] = {"telemetry", "events", "state"};

static void check_envelope(const char *device, fleetd_leaf_t leaf, const uint8_t *data, size_t size)
{
    /* exact size: a read past the payload is ASan's to see */
    char *payload = malloc(size > 0 ? size : 1);
    if (payload == NULL)
        return;
    if (size > 0)
        memcpy(payload, data, size);
    keel_fleet_msg_t m;
    json_t *hold = NULL;
    char *body = NULL;
    keel_status_t st = fleetd_envelope_parse(device, leaf, payload, size, 1700000000, &m, &hold, &body);
    same_as_json(device, leaf, payload, size, st, &m);
    if (leaf == FLEETD_LEAF_STATE)
        fuzz_must(st == KEEL_ERR_ARG, "a state message was taken as an envelope");
    /* The quick check against jansson, on the whole payload (an object of its own). */
    json_error_t e;
    json_t *full = json_loadb(payload, size, JSON_REJECT_DUPLICATES, &e);
    if (fleetd_json_object_quick(payload, size))
        fuzz_must(json_is_object(full), "the quick check took text jansson refuses as an object");
    if (st != KEEL_OK) {
        fuzz_must(hold == NULL && body == NULL, "a refused envelope left something to free");
        json_decref(full);
        free(payload);
        keel_error_clear();
        return;
    }
    fuzz_must(json_is_object(full), "an envelope was taken that jansson refuses whole");
    /* The body is the payload's own text of "data", or (a key with escapes) a dump in `body`. */
    fuzz_must(m.body != NULL, "a taken envelope without its body");
    fuzz_must(hold != NULL || (leaf == FLEETD_LEAF_TELEMETRY && body == NULL), "only telemetry skips jansson");
    fuzz_must(body != NULL ? m.body == body
                           : m.body >= payload && m.body_len <= size && (size_t)(m.body - payload) <= size - m.body_len,
              "the body is neither in the payload nor the dump");
    fuzz_must(m.device != NULL && strcmp(m.device, device) == 0, "the envelope's device is not the topic's");
    fuzz_must(m.seq >= 1 && m.seq <= (uint64_t)INT64_MAX, "seq out of range");
    fuzz_must(m.ts >= 0 && m.received == 1700000000, "ts or received out of range");
    fuzz_must(m.kind != NULL && (leaf == FLEETD_LEAF_TELEMETRY
                                ? strcmp(m.kind, "telemetry") == 0
                                : strcmp(m.kind, "event") == 0 || strcmp(m.kind, "alert") == 0),
         "kind does not fit the topic");
    fuzz_must(m.dropped <= 3ull * UINT32_MAX, "dropped past three 32-bit counts");
    fuzz_must((body == NULL || m.body_len == strlen(body)) && m.body_len <= KEEL_FLEET_BODY_MAX,
              "body over KEEL_FLEET_BODY_MAX");
    json_t *again = json_loadb(m.body, m.body_len, JSON_REJECT_DUPLICATES, &e);
    fuzz_must(json_is_object(again), "the body is not a JSON object's text");
    if (body == NULL) {
        /* the device's own text: exactly its data, no more (it parsed alone) and nothing around it */
        fuzz_must(json_equal(again, json_object_get(full, "data")), "the body is not the envelope's data");
        fuzz_must(m.body[0] == '{' && m.body[m.body_len - 1] == '}', "the body has more than the object");
    } else {
        fuzz_must(near(again, json_object_get(full, "data")), "the body is not the envelope's data");
        /* 15 significant digits (DBL_DIG) read and written again are the same text */
        char *twice = json_dumps(again, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
        fuzz_must(twice != NULL && strcmp(twice, body) == 0, "the body is not its own normal form");
        free(twice);
    }
    json_decref(again);
    json_decref(full);
    free(body);
    json_decref(hold);
    free(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t tl = nl != NULL ? (size_t)(nl - data) : size;
    if (tl >= FLEETD_TOPIC_MAX)
        return 0; /* the consumer drops it before parsing */
    char topic[FLEETD_TOPIC_MAX];
    memcpy(topic, data, tl);
    topic[tl] = '\0';
    char device[KEEL_FLEET_ID_MAX + 1];
    fleetd_leaf_t leaf;
    if (fleetd_topic_parse(topic, device, &leaf) != KEEL_OK) {
        keel_error_clear();
        return 0;
    }
    fuzz_must(keel_identity_id_ok(device) && (unsigned)leaf <= FLEETD_LEAF_STATE, "a topic parsed to a bad id or leaf");
    char rebuilt[FLEETD_TOPIC_MAX + KEEL_FLEET_ID_MAX + 16];
    snprintf(rebuilt, sizeof rebuilt, FLEETD_TOPIC_ROOT "%s/%s", device, leaf_names[leaf]);
    fuzz_must(strcmp(rebuilt, topic) == 0, "a topic parsed to something other than itself");
    size_t off = nl != NULL ? tl + 1 : size;
    check_envelope(device, leaf, data + off, size - off);
    return 0;
}

/*
 * Unit tests for keel-fleetd's device topics and envelopes
 * (programs/keel-fleetd/envelope.c): the topic's device and leaf; what an
 * envelope must hold; the body as the device's own text; the quick path
 * (telemetry without jansson) against the full one, which must give the
 * same answer for every payload, including every one to be refused.
 * fuzz_fleet_envelope checks the same agreement on generated input.
 */
#include "testutil.h"

#include "fleetd.h"

#define DEV "k3xq7m2p4r5s6t7u2v3w4x5y6z"
#define OTHER "k3xq7m2p4r5s6t7u2v3w4x5y7a"

typedef struct {
    keel_status_t st;
    keel_fleet_msg_t m;
    json_t *hold;
    char *body;
} parsed_t;

static void parse_with(bool quick, fleetd_leaf_t leaf, const char *payload, parsed_t *p)
{
    p->st = quick ? fleetd_envelope_parse(DEV, leaf, payload, strlen(payload), 1700000100, &p->m, &p->hold, &p->body)
                  : fleetd_envelope_parse_json(DEV, leaf, payload, strlen(payload), 1700000100, &p->m, &p->hold,
                                               &p->body);
    keel_error_clear();
}

static void parsed_free(parsed_t *p)
{
    json_decref(p->hold);
    free(p->body);
}

/* Both paths, the same answer; the message of the one callers use in *out (free with parsed_free). */
static keel_status_t parse(fleetd_leaf_t leaf, const char *payload, parsed_t *out)
{
    parsed_t j;
    parse_with(true, leaf, payload, out);
    parse_with(false, leaf, payload, &j);
    assert_int_equal(out->st, j.st);
    if (out->st == KEEL_OK) {
        assert_string_equal(out->m.device, j.m.device);
        assert_string_equal(out->m.kind, j.m.kind);
        assert_true(out->m.seq == j.m.seq && out->m.ts == j.m.ts && out->m.dropped == j.m.dropped);
        assert_int_equal(out->m.received, 1700000100);
        assert_int_equal(out->m.body_len, j.m.body_len);
        assert_memory_equal(out->m.body, j.m.body, j.m.body_len);
    }
    parsed_free(&j);
    return out->st;
}

static bool body_is(const parsed_t *p, const char *text)
{
    return p->m.body_len == strlen(text) && memcmp(p->m.body, text, p->m.body_len) == 0;
}

/* ---- topics ---- */

static void test_topic(void **state)
{
    (void)state;
    char dev[KEEL_FLEET_ID_MAX + 1];
    fleetd_leaf_t leaf;
    assert_int_equal(fleetd_topic_parse("keel/v1/" DEV "/telemetry", dev, &leaf), KEEL_OK);
    assert_string_equal(dev, DEV);
    assert_int_equal(leaf, FLEETD_LEAF_TELEMETRY);
    assert_int_equal(fleetd_topic_parse("keel/v1/" DEV "/events", dev, &leaf), KEEL_OK);
    assert_int_equal(leaf, FLEETD_LEAF_EVENTS);
    assert_int_equal(fleetd_topic_parse("keel/v1/" DEV "/state", dev, &leaf), KEEL_OK);
    assert_int_equal(leaf, FLEETD_LEAF_STATE);
    const char *bad[] = {"keel/v1/" DEV "/telemetry/x", "keel/v1/" DEV "/cmd", "keel/v1//telemetry", "keel/v2/" DEV "/state",
                         "keel/v1/" DEV, "keel/v1/Not-An-Id/telemetry", "", "keel/v1/" DEV "/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fleetd_topic_parse(bad[i], dev, &leaf), KEEL_ERR_FORMAT);
        keel_error_clear();
    }
}

/* ---- envelopes taken ---- */

static void test_telemetry_quick(void **state)
{
    (void)state;
    parsed_t p;
    assert_int_equal(parse(FLEETD_LEAF_TELEMETRY,
                           "{\"device\":\"" DEV "\",\"seq\":7,\"ts\":1700000000,\"kind\":\"telemetry\","
                           "\"data\":{\"temp\":21.5,\"hum\":40,\"ok\":true,\"s\":\"h\xc3\xa9\",\"a\":[1,null]}}",
                           &p),
                     KEEL_OK);
    assert_null(p.hold); /* no jansson */
    assert_null(p.body);
    assert_int_equal(p.m.seq, 7);
    assert_int_equal(p.m.ts, 1700000000);
    assert_int_equal(p.m.dropped, 0);
    assert_true(body_is(&p, "{\"temp\":21.5,\"hum\":40,\"ok\":true,\"s\":\"h\xc3\xa9\",\"a\":[1,null]}"));
    parsed_free(&p);

    /* any order, white space, dropped counts summed, the largest seq the quick path reads */
    assert_int_equal(parse(FLEETD_LEAF_TELEMETRY,
                           " {\n\"dropped\" : {\"event\":2,\"telemetry\":4294967295,\"alert\":0},\t\"data\":{ } ,"
                           "\"kind\":\"telemetry\",\"ts\":0,\"seq\":999999999999999999,\"device\":\"" DEV "\"}\r\n",
                           &p),
                     KEEL_OK);
    assert_null(p.hold);
    assert_int_equal(p.m.seq, 999999999999999999ull);
    assert_int_equal(p.m.ts, 0);
    assert_int_equal(p.m.dropped, 4294967297ull);
    assert_true(body_is(&p, "{ }"));
    parsed_free(&p);
}

static void test_telemetry_full(void **state)
{
    (void)state;
    parsed_t p;
    /* an escape in a data string: jansson decides, the body is still the device's text */
    assert_int_equal(parse(FLEETD_LEAF_TELEMETRY,
                           "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{\"s\":\"a\\\"b\"}}",
                           &p),
                     KEEL_OK);
    assert_non_null(p.hold);
    assert_true(body_is(&p, "{\"s\":\"a\\\"b\"}"));
    parsed_free(&p);
    /* an escaped key: the body is jansson's dump */
    assert_int_equal(parse(FLEETD_LEAF_TELEMETRY,
                           "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"d\\u0061ta\":{\"b\":1,\"a\":2}}",
                           &p),
                     KEEL_OK);
    assert_non_null(p.body);
    assert_string_equal(p.body, "{\"a\":2,\"b\":1}"); /* compact, keys sorted */
    assert_true(p.m.body == p.body);
    parsed_free(&p);
    /* past the quick path's digits: 19 of them, an exponent in data */
    assert_int_equal(parse(FLEETD_LEAF_TELEMETRY,
                           "{\"device\":\"" DEV "\",\"seq\":9223372036854775807,\"ts\":5,\"kind\":\"telemetry\","
                           "\"data\":{\"e\":1e3}}",
                           &p),
                     KEEL_OK);
    assert_true(p.m.seq == (uint64_t)INT64_MAX);
    assert_non_null(p.hold);
    parsed_free(&p);
    /* events always go to jansson: their data is read */
    assert_int_equal(parse(FLEETD_LEAF_EVENTS,
                           "{\"device\":\"" DEV "\",\"seq\":3,\"ts\":5,\"kind\":\"alert\",\"data\":{\"type\":\"tamper\"}}",
                           &p),
                     KEEL_OK);
    assert_non_null(p.hold);
    assert_string_equal(p.m.kind, "alert");
    parsed_free(&p);
}

/* ---- envelopes refused, the same by both paths ---- */

static void test_refused(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "[]",
        "{}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{},\"x\":1}", /* unknown field */
        "{\"device\":\"" OTHER "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",       /* another device */
        "{\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",                               /* no device */
        "{\"device\":\"" DEV "\",\"seq\":0,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":-1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":-0,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":1.0,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":1e2,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":01,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":\"1\",\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":9223372036854775808,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"kind\":\"telemetry\",\"data\":{}}", /* no ts */
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"event\",\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"data\":{}}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\"}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":[]}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{},\"seq\":2}", /* a key twice */
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{\"a\":1,\"a\":2}}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{},\"dropped\":{\"x\":1}}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{},\"dropped\":{\"event\":4294967296}}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{},\"dropped\":{\"event\":-1}}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{},\"dropped\":[]}",
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}} x", /* trailing text */
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{}",    /* cut short */
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{\"s\":\"\xc3\"}}", /* bad UTF-8 */
        "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{\"s\":\"\x01\"}}", /* a control */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parsed_t p;
        keel_status_t st = parse(FLEETD_LEAF_TELEMETRY, bad[i], &p);
        if (st == KEEL_OK)
            fail_msg("taken: %s", bad[i]);
        assert_null(p.hold);
        assert_null(p.body);
    }
    /* a state message has no envelope */
    parsed_t p;
    assert_int_equal(parse(FLEETD_LEAF_STATE, "{}", &p), KEEL_ERR_ARG);
}

/* data up to KEEL_FLEET_BODY_MAX bytes, and not one more */
static void test_body_cap(void **state)
{
    (void)state;
    size_t cap = KEEL_FLEET_BODY_MAX, head_len = strlen("{\"s\":\"\"}");
    char *env = malloc(cap + 256);
    assert_non_null(env);
    for (int extra = 0; extra <= 1; extra++) {
        size_t fill = cap - head_len + (size_t)extra;
        int n = snprintf(env, 256, "{\"device\":\"" DEV "\",\"seq\":1,\"ts\":5,\"kind\":\"telemetry\",\"data\":{\"s\":\"");
        memset(env + n, 'a', fill);
        memcpy(env + n + fill, "\"}}", 4);
        parsed_t p;
        keel_status_t st = parse(FLEETD_LEAF_TELEMETRY, env, &p);
        if (extra == 0) {
            assert_int_equal(st, KEEL_OK);
            assert_int_equal(p.m.body_len, cap);
            parsed_free(&p);
        } else {
            assert_int_equal(st, KEEL_ERR_TOO_LARGE);
        }
    }
    free(env);
}

/* fleetd_json_object_quick: yes only where jansson says yes */
static void test_object_quick(void **state)
{
    (void)state;
    const char *yes[] = {"{}", " {\"a\":[1,2,{\"b\":[]}],\"c\":-0.5,\"d\":\"\xe2\x82\xac\"} "};
    const char *no[] = {"[]", "{\"a\":1,\"a\":2}", "{\"a\":\"\\n\"}", "{\"a\":1e5}", "{\"a\":01}", "{\"a\":1,}", "{} {}",
                        "{\"a\":\"\xed\xa0\x80\"}" /* a surrogate */};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        assert_true(fleetd_json_object_quick(yes[i], strlen(yes[i])));
        json_t *j = json_loads(yes[i], JSON_REJECT_DUPLICATES, NULL);
        assert_true(json_is_object(j));
        json_decref(j);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_false(fleetd_json_object_quick(no[i], strlen(no[i])));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic),         cmocka_unit_test(test_telemetry_quick), cmocka_unit_test(test_telemetry_full),
        cmocka_unit_test(test_refused),       cmocka_unit_test(test_body_cap),        cmocka_unit_test(test_object_quick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

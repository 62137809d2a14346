/*
 * Fuzz target: the pure parsers of keel-fleetd's operator API
 * (programs/keel-fleetd/admin_logic.c, compiled in): what an HTTP client
 * sends before and after its token is checked. The first byte picks the
 * parser, the rest is its input (a C string, cut at the first NUL, where the
 * API hands one over; bytes in an exact-size buffer where it hands a body):
 *   0 the tokens file        1 an Authorization header   2 a path (byte 1: method)
 *   3 POST campaigns' query  4 GET alerts' query         5 GET devices' query
 *   6 a JSON body / an action body / a Content-Type      7 any query, re-encoded
 * What must hold: whatever is taken is inside its documented ranges and
 * alphabets (a name, id, model or kind a later SQL parameter or log line
 * gets), and a parsed query, percent-encoded again, parses to the same.
 */
#include "fuzz.h"

#include "admin_logic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENS_CAP 8

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static void check_tokens(const char *p, size_t n)
{
    static fleetd_token_t v[TOKENS_CAP];
    size_t count = 99;
    if (fleetd_tokens_parse(p, n, v, TOKENS_CAP, &count) != KEEL_OK)
        return;
    fuzz_must(count <= TOKENS_CAP, "more tokens than the cap");
    for (size_t i = 0; i < count; i++) {
        fuzz_must(fleetd_token_name_ok(v[i].name), "a token with a bad name");
        fuzz_must(v[i].role == FLEETD_ROLE_ADMIN || v[i].role == FLEETD_ROLE_READ, "a token with no role");
        for (size_t j = 0; j < i; j++)
            fuzz_must(strcmp(v[i].name, v[j].name) != 0, "a token name twice");
    }
    size_t which = 0;
    /* the input itself as a presented token: a match names an entry */
    if (fleetd_token_match(v, count, p, n, &which))
        fuzz_must(which < count, "a match outside the entries");
}

static void check_bearer(const char *h)
{
    const char *tok = NULL;
    size_t len = 0;
    if (fleetd_bearer_parse(h, &tok, &len) != KEEL_OK)
        return;
    fuzz_must(tok >= h && tok + len <= h + strlen(h), "the token lies outside the header");
    fuzz_must(len >= 1 && len <= FLEETD_TOKEN_TEXT_MAX, "a token of odd length");
    for (size_t i = 0; i < len; i++)
        fuzz_must(strchr("-._~+/=", tok[i]) != NULL || (tok[i] >= '0' && tok[i] <= '9') ||
                 (tok[i] >= 'a' && tok[i] <= 'z') || (tok[i] >= 'A' && tok[i] <= 'Z'),
             "a token character outside token68");
}

static void check_route(uint8_t sel, const char *path)
{
    fleetd_route_t r;
    fleetd_method_t m = (fleetd_method_t)(sel % 3);
    int code = fleetd_admin_route(m, path, &r);
    fuzz_must(code == 0 || code == 404 || code == 405, "a route code other than 0, 404, 405");
    if (code == 405)
        fuzz_must(r.allow != NULL, "a 405 without Allow");
    if (code != 0)
        return;
    fuzz_must((unsigned)r.kind <= FLEETD_R_ALERTS, "a route of no kind");
    fuzz_must(memchr(r.id, '\0', sizeof r.id) != NULL, "a route id not terminated");
    fuzz_must(r.id[0] == '\0' || fleetd_device_id_ok(r.id), "a route id a device id could not be");
    fuzz_must(!r.write || m == FLEETD_M_POST, "a write route on a GET");
}

static void check_campaign(uint8_t sel, const char *q)
{
    fleetd_campaign_params_t c;
    unsigned def = 1 + sel % 1000u;
    if (fleetd_campaign_params(q, def, &c) != KEEL_OK)
        return;
    fuzz_must(fleetd_model_ok(c.model), "a campaign for a malformed model");
    fuzz_must(c.percent >= 1 && c.percent <= 100 && c.fail_permille >= 1 && c.fail_permille <= 1000,
         "campaign parameters out of range");
}

static void check_alerts(const char *q)
{
    fleetd_alert_params_t a;
    if (fleetd_alert_params(q, &a) != KEEL_OK)
        return;
    fuzz_must(a.since >= 0 && a.limit >= 1 && a.limit <= FLEETD_ALERTS_LIMIT_MAX, "alert parameters out of range");
    fuzz_must(memchr(a.kind, '\0', sizeof a.kind) != NULL && memchr(a.device, '\0', sizeof a.device) != NULL,
         "alert parameters not terminated");
    fuzz_must(a.device[0] == '\0' || fleetd_device_id_ok(a.device), "alerts of a malformed device");
    for (const char *k = a.kind; *k != '\0'; k++)
        fuzz_must(strchr("_-", *k) != NULL || (*k >= '0' && *k <= '9') || (*k >= 'a' && *k <= 'z') ||
                 (*k >= 'A' && *k <= 'Z'),
             "an alert kind outside its alphabet");
}

static void check_devices(const char *q)
{
    fleetd_device_params_t d;
    if (fleetd_device_params(q, &d) != KEEL_OK)
        return;
    fuzz_must(d.limit >= 1 && d.limit <= KEEL_FLEET_LIST_MAX, "a device page limit out of range");
    fuzz_must(d.model[0] == '\0' || fleetd_model_ok(d.model), "devices of a malformed model");
    fuzz_must(d.after[0] == '\0' || fleetd_device_id_ok(d.after), "a page after a malformed id");
}

static void check_body(const uint8_t *data, size_t size)
{
    /* exact size: a read past the body is ASan's to see */
    char *b = malloc(size > 0 ? size : 1);
    if (b == NULL)
        return;
    if (size > 0)
        memcpy(b, data, size);
    json_t *j = NULL;
    keel_status_t st = fleetd_json_object(b, size, 4096, &j);
    fuzz_must((st == KEEL_OK) == (j != NULL), "a JSON body status without its object");
    if (st == KEEL_OK)
        fuzz_must(json_is_object(j) && size <= 4096, "a body taken that is no object or over the cap");
    st = fleetd_action_body(b, size);
    if (st == KEEL_OK && j != NULL)
        fuzz_must(json_object_size(j) == 0, "an action body with a field was taken");
    json_decref(j);
    free(b);
}

/* Every byte but [A-Za-z0-9] as %XX. */
static void encode(const char *s, char *out, size_t *o)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            out[(*o)++] = (char)c;
        } else {
            out[(*o)++] = '%';
            out[(*o)++] = hex[c >> 4];
            out[(*o)++] = hex[c & 15];
        }
    }
}

static void check_query(const char *q)
{
    static const char *const keys[] = {"model", "a b", "%", "limit", "x", NULL};
    static fleetd_query_t p, again;
    if (fleetd_query_parse(q, keys, &p) != KEEL_OK)
        return;
    fuzz_must(p.n <= FLEETD_QUERY_PARAMS_MAX, "more parameters than the cap");
    /* 8 x (3 x (32 + 256) + 2) */
    static char text[FLEETD_QUERY_PARAMS_MAX * (3 * (FLEETD_QUERY_KEY_MAX + FLEETD_QUERY_VALUE_MAX) + 2) + 1];
    size_t o = 0;
    for (size_t i = 0; i < p.n; i++) {
        for (const char *c = p.p[i].value; *c != '\0'; c++)
            fuzz_must(*c >= 0x20 && *c <= 0x7e, "a query value that is not printable ASCII");
        fuzz_must(fleetd_query_get(&p, p.p[i].key) == p.p[i].value, "a key that does not find its value");
        if (i > 0)
            text[o++] = '&';
        encode(p.p[i].key, text, &o);
        text[o++] = '=';
        encode(p.p[i].value, text, &o);
    }
    text[o] = '\0';
    if (o > FLEETD_QUERY_TEXT_MAX)
        return; /* the escaped form may be over the cap the original was under */
    fuzz_must(fleetd_query_parse(text, keys, &again) == KEEL_OK && again.n == p.n, "a re-encoded query does not parse");
    for (size_t i = 0; i < p.n; i++)
        fuzz_must(strcmp(p.p[i].key, again.p[i].key) == 0 && strcmp(p.p[i].value, again.p[i].value) == 0,
             "a re-encoded query parses to something else");
    uint64_t u = 0;
    bool b = false;
    if (fleetd_query_u64(&p, "limit", 5, 500, 7, &u) == KEEL_OK)
        fuzz_must(u == 7 || (u >= 5 && u <= 500), "a number out of its range");
    if (fleetd_query_bool(&p, "x", true, &b) == KEEL_OK && fleetd_query_get(&p, "x") != NULL)
        fuzz_must(strchr("01tf", fleetd_query_get(&p, "x")[0]) != NULL, "a boolean from another word");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t sel = data[0], arg = data[1];
    const uint8_t *rest = data + 2;
    size_t n = size - 2;
    /* the C-string parsers get the input up to its first NUL */
    char *s = malloc(n + 1);
    if (s == NULL)
        return 0;
    memcpy(s, rest, n);
    s[n] = '\0';
    switch (sel % 8) {
    case 0:
        check_tokens((const char *)rest, n);
        break;
    case 1:
        check_bearer(s);
        break;
    case 2:
        check_route(arg, s);
        break;
    case 3:
        check_campaign(arg, s);
        break;
    case 4:
        check_alerts(s);
        break;
    case 5:
        check_devices(s);
        break;
    case 6:
        check_body(rest, n);
        (void)fleetd_content_type_is(s, "application/json");
        break;
    default:
        check_query(s);
    }
    free(s);
    keel_error_clear();
    return 0;
}

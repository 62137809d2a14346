/*
 * Unit tests for the pure parts of keel-fleetd's operator API
 * (programs/keel-fleetd/admin_logic.c): the tokens file, token making and
 * matching, bearer headers, the failed-token rate limit, routing, query
 * strings, campaign/alert/device parameters and request bodies.
 */
#include "testutil.h"

#include "admin_logic.h"
#include "keel/crypto.h"

#define HEX_A "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" /* sha256("test") */

static void hash_hex(const char *tok, char out[65])
{
    uint8_t d[KEEL_SHA256_LEN];
    keel_sha256(tok, strlen(tok), d);
    assert_int_equal(keel_hex_encode(d, sizeof d, out, 65), KEEL_OK);
}

/* ---- tokens file ---- */

static void test_tokens_parse(void **state)
{
    (void)state;
    char hb[65];
    hash_hex("kft_other", hb);
    char text[1024];
    snprintf(text, sizeof text,
             "# operators\n"
             "\n"
             "alice admin " HEX_A "\n"
             "  dash\tread   %s  \r\n"
             "   # indented comment\n",
             hb);
    fleetd_token_t v[4];
    size_t n = 99;
    assert_int_equal(fleetd_tokens_parse(text, strlen(text), v, 4, &n), KEEL_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "alice");
    assert_int_equal(v[0].role, FLEETD_ROLE_ADMIN);
    assert_string_equal(v[1].name, "dash");
    assert_int_equal(v[1].role, FLEETD_ROLE_READ);
    /* uppercase hex is the same hash */
    char up[128];
    snprintf(up, sizeof up, "bob read %s", "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08");
    assert_int_equal(fleetd_tokens_parse(up, strlen(up), v, 4, &n), KEEL_OK);
    assert_int_equal(n, 1);
    size_t w = 9;
    assert_true(fleetd_token_match(v, n, "test", 4, &w));
    assert_int_equal(w, 0);
    /* empty file: no token */
    assert_int_equal(fleetd_tokens_parse("", 0, v, 4, &n), KEEL_OK);
    assert_int_equal(n, 0);
}

static void test_tokens_parse_refuses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "alice admin " HEX_A " extra\n",              /* a fourth field */
        "alice root " HEX_A "\n",                     /* unknown role */
        "alice admin 9f86d0\n",                       /* short hash */
        "alice admin " HEX_A "0\n",                   /* long hash */
        "alice admin 9g86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n", /* not hex */
        "al/ice admin " HEX_A "\n",                   /* bad name */
        ".alice admin " HEX_A "\n",                   /* leading dot */
        "alice admin\n",                              /* missing hash */
        "alice admin " HEX_A "\nalice read " HEX_A "\n", /* duplicate name */
        "Admin\n",
    };
    fleetd_token_t v[4];
    size_t n = 7;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(fleetd_tokens_parse(bad[i], strlen(bad[i]), v, 4, &n), KEEL_ERR_FORMAT);
        assert_int_equal(n, 0);
    }
    /* the line number is named */
    const char *two = "# c\nalice admin " HEX_A "\nbob admin xyz\n";
    assert_int_equal(fleetd_tokens_parse(two, strlen(two), v, 4, &n), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "line 3"));
    /* a NUL byte */
    const char nul[] = "alice admin " HEX_A "\0\n";
    assert_int_equal(fleetd_tokens_parse(nul, sizeof nul - 1, v, 4, &n), KEEL_ERR_FORMAT);
    /* over the cap of entries */
    const char *three = "a admin " HEX_A "\nb admin " HEX_A "\nc admin " HEX_A "\n";
    assert_int_equal(fleetd_tokens_parse(three, strlen(three), v, 2, &n), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_tokens_parse(three, strlen(three), v, 3, &n), KEEL_OK);
    assert_int_equal(n, 3);
    /* a name of 65 characters */
    char longname[256];
    memset(longname, 'n', 65);
    snprintf(longname + 65, sizeof longname - 65, " admin %s\n", HEX_A);
    assert_int_equal(fleetd_tokens_parse(longname, strlen(longname), v, 4, &n), KEEL_ERR_FORMAT);
}

/* ---- making and matching ---- */

static void test_token_make_and_match(void **state)
{
    (void)state;
    uint8_t rnd[FLEETD_TOKEN_RANDOM];
    for (size_t i = 0; i < sizeof rnd; i++)
        rnd[i] = (uint8_t)(i * 37 + 5);
    char tok[FLEETD_TOKEN_LEN + 1], line[FLEETD_TOKEN_LINE_MAX];
    assert_int_equal(fleetd_token_make(rnd, "ops-1", FLEETD_ROLE_READ, tok, line), KEEL_OK);
    assert_int_equal(strlen(tok), FLEETD_TOKEN_LEN);
    assert_memory_equal(tok, "kft_", 4);
    for (const char *p = tok + 4; *p; p++)
        assert_true((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                    *p == '_');
    /* the line holds the hash, never the token */
    assert_null(strstr(line, tok + 4));
    char hex[65];
    hash_hex(tok, hex);
    char want[256];
    snprintf(want, sizeof want, "ops-1 read %s\n", hex);
    assert_string_equal(line, want);
    /* the line parses back and the token matches it, other tokens do not */
    fleetd_token_t v[3];
    size_t n = 0;
    char file[512];
    snprintf(file, sizeof file, "alice admin " HEX_A "\n%s", line);
    assert_int_equal(fleetd_tokens_parse(file, strlen(file), v, 3, &n), KEEL_OK);
    size_t w = 99;
    assert_true(fleetd_token_match(v, n, tok, strlen(tok), &w));
    assert_int_equal(w, 1);
    assert_int_equal(v[w].role, FLEETD_ROLE_READ);
    assert_false(fleetd_token_match(v, n, tok, strlen(tok) - 1, &w));
    char other[FLEETD_TOKEN_LEN + 1];
    memcpy(other, tok, sizeof other);
    other[10] = other[10] == 'A' ? 'B' : 'A';
    assert_false(fleetd_token_match(v, n, other, strlen(other), &w));
    assert_false(fleetd_token_match(v, 0, tok, strlen(tok), &w));
    /* two entries with one hash: the first is taken (every entry is still compared) */
    v[2] = v[1];
    snprintf(v[2].name, sizeof v[2].name, "copy");
    assert_true(fleetd_token_match(v, 3, tok, strlen(tok), &w));
    assert_int_equal(w, 1);
    /* bad names */
    assert_int_equal(fleetd_token_make(rnd, "bad name", FLEETD_ROLE_ADMIN, tok, line), KEEL_ERR_ARG);
    assert_int_equal(fleetd_token_make(rnd, "", FLEETD_ROLE_ADMIN, tok, line), KEEL_ERR_ARG);
}

static void test_b64url(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(fleetd_b64url((const uint8_t *)"", 0, out, sizeof out), KEEL_OK);
    assert_string_equal(out, "");
    assert_int_equal(fleetd_b64url((const uint8_t *)"f", 1, out, sizeof out), KEEL_OK);
    assert_string_equal(out, "Zg");
    assert_int_equal(fleetd_b64url((const uint8_t *)"fo", 2, out, sizeof out), KEEL_OK);
    assert_string_equal(out, "Zm8");
    assert_int_equal(fleetd_b64url((const uint8_t *)"foobar", 6, out, sizeof out), KEEL_OK);
    assert_string_equal(out, "Zm9vYmFy");
    const uint8_t hi[3] = {0xfb, 0xff, 0xfe};
    assert_int_equal(fleetd_b64url(hi, 3, out, sizeof out), KEEL_OK);
    assert_string_equal(out, "-__-");
    assert_int_equal(fleetd_b64url(hi, 3, out, 4), KEEL_ERR_TOO_LARGE);
}

static void test_bearer(void **state)
{
    (void)state;
    const char *t;
    size_t n;
    assert_int_equal(fleetd_bearer_parse("Bearer kft_abc-_", &t, &n), KEEL_OK);
    assert_int_equal(n, 9);
    assert_memory_equal(t, "kft_abc-_", 9);
    assert_int_equal(fleetd_bearer_parse("bearer   abc==  ", &t, &n), KEEL_OK);
    assert_int_equal(n, 5);
    assert_int_equal(fleetd_bearer_parse("Basic YWxhZGRpbjpvcGVuc2VzYW1l", &t, &n), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_bearer_parse("Bearer", &t, &n), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_bearer_parse("Bearer ", &t, &n), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_bearer_parse("Bearer a b", &t, &n), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_bearer_parse("Bearer a\"b", &t, &n), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_bearer_parse(NULL, &t, &n), KEEL_ERR_FORMAT);
    char big[FLEETD_TOKEN_TEXT_MAX + 16];
    memcpy(big, "Bearer ", 7);
    memset(big + 7, 'a', FLEETD_TOKEN_TEXT_MAX);
    big[7 + FLEETD_TOKEN_TEXT_MAX] = '\0';
    assert_int_equal(fleetd_bearer_parse(big, &t, &n), KEEL_OK);
    big[7 + FLEETD_TOKEN_TEXT_MAX] = 'a';
    big[8 + FLEETD_TOKEN_TEXT_MAX] = '\0';
    assert_int_equal(fleetd_bearer_parse(big, &t, &n), KEEL_ERR_FORMAT);
}

/* ---- rate limit ---- */

static void test_ratelimit(void **state)
{
    (void)state;
    static fleetd_ratelimit_t rl;
    memset(&rl, 0, sizeof rl);
    int64_t t0 = 1000000;
    assert_int_equal(fleetd_ratelimit_wait(&rl, "10.0.0.1", t0), 0);
    for (unsigned i = 1; i < FLEETD_RL_FAILS; i++) {
        assert_int_equal(fleetd_ratelimit_fail(&rl, "10.0.0.1", t0 + i - 1), i);
        assert_int_equal(fleetd_ratelimit_wait(&rl, "10.0.0.1", t0 + i - 1), 0);
    }
    assert_int_equal(fleetd_ratelimit_fail(&rl, "10.0.0.1", t0 + 20), FLEETD_RL_FAILS);
    assert_int_equal(fleetd_ratelimit_wait(&rl, "10.0.0.1", t0 + 20), FLEETD_RL_WINDOW_S - 20);
    /* another address is not affected */
    assert_int_equal(fleetd_ratelimit_wait(&rl, "10.0.0.2", t0 + 20), 0);
    /* the window ends: allowed again, and the count starts over */
    assert_int_equal(fleetd_ratelimit_wait(&rl, "10.0.0.1", t0 + FLEETD_RL_WINDOW_S), 0);
    assert_int_equal(fleetd_ratelimit_fail(&rl, "10.0.0.1", t0 + FLEETD_RL_WINDOW_S), 1);
    /* a full table reuses the oldest window, never grows */
    for (unsigned i = 0; i < FLEETD_RL_SLOTS + 10; i++) {
        char a[32];
        snprintf(a, sizeof a, "192.0.2.%u", i);
        assert_int_equal(fleetd_ratelimit_fail(&rl, a, t0 + 100 + i), 1);
    }
    for (unsigned i = 0; i < FLEETD_RL_FAILS; i++)
        (void)fleetd_ratelimit_fail(&rl, "2001:db8::1", t0 + 500);
    assert_true(fleetd_ratelimit_wait(&rl, "2001:db8::1", t0 + 500) > 0);
}

/* ---- routing ---- */

static void test_routes(void **state)
{
    (void)state;
    fleetd_route_t r;
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, "status", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_STATUS);
    assert_false(r.write);
    assert_int_equal(fleetd_admin_route(FLEETD_M_POST, "status", &r), 405);
    assert_string_equal(r.allow, "GET");
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, "devices", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_DEVICES);
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, "devices/abc123", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_DEVICE);
    assert_string_equal(r.id, "abc123");
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, "devices/abc123/export", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_DEVICE_EXPORT);
    assert_int_equal(fleetd_admin_route(FLEETD_M_POST, "devices/import", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_DEVICES_IMPORT);
    assert_true(r.write);
    assert_int_equal(fleetd_admin_route(FLEETD_M_POST, "devices/abc123/revoke", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_DEVICE_REVOKE);
    assert_true(r.write);
    assert_string_equal(r.id, "abc123");
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, "devices/abc123/revoke", &r), 405);
    assert_string_equal(r.allow, "POST");
    assert_int_equal(fleetd_admin_route(FLEETD_M_POST, "devices/abc123/erase", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_DEVICE_ERASE);
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, "campaigns", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_CAMPAIGNS);
    assert_false(r.write);
    assert_int_equal(fleetd_admin_route(FLEETD_M_POST, "campaigns", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_CAMPAIGN_CREATE);
    assert_true(r.write);
    assert_int_equal(fleetd_admin_route(FLEETD_M_OTHER, "campaigns", &r), 405);
    assert_string_equal(r.allow, "GET, POST");
    const char *cid = "0123456789abcdef0123456789abcdef";
    char p[128];
    snprintf(p, sizeof p, "campaigns/%s", cid);
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, p, &r), 0);
    assert_int_equal(r.kind, FLEETD_R_CAMPAIGN);
    assert_string_equal(r.id, cid);
    snprintf(p, sizeof p, "campaigns/%s/pause", cid);
    assert_int_equal(fleetd_admin_route(FLEETD_M_POST, p, &r), 0);
    assert_int_equal(r.kind, FLEETD_R_CAMPAIGN_PAUSE);
    snprintf(p, sizeof p, "campaigns/%s/resume", cid);
    assert_int_equal(fleetd_admin_route(FLEETD_M_POST, p, &r), 0);
    assert_int_equal(r.kind, FLEETD_R_CAMPAIGN_RESUME);
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, "alerts", &r), 0);
    assert_int_equal(r.kind, FLEETD_R_ALERTS);
    /* not ours */
    static const char *const nf[] = {
        "", "/", "status/", "statuss", "devices/", "devices//export", "devices/../status", "devices/.hidden",
        "devices/a b", "devices/abc/export/more", "devices/abc/delete", "campaigns/ABCDEF", "campaigns/0123",
        "campaigns/0123456789abcdef0123456789abcdeg", "campaigns/0123456789ABCDEF0123456789ABCDEF",
        "campaigns/0123456789abcdef0123456789abcdef/stop", "alerts/1", "devices/a%2Fb",
    };
    for (size_t i = 0; i < sizeof nf / sizeof *nf; i++) {
        assert_int_equal(fleetd_admin_route(FLEETD_M_GET, nf[i], &r), 404);
        assert_int_equal(fleetd_admin_route(FLEETD_M_POST, nf[i], &r), 404);
    }
    char longid[KEEL_FLEET_ID_MAX + 16];
    memcpy(longid, "devices/", 8);
    memset(longid + 8, 'a', KEEL_FLEET_ID_MAX + 1);
    longid[8 + KEEL_FLEET_ID_MAX + 1] = '\0';
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, longid, &r), 404);
    longid[8 + KEEL_FLEET_ID_MAX] = '\0';
    assert_int_equal(fleetd_admin_route(FLEETD_M_GET, longid, &r), 0);
}

/* ---- query strings ---- */

static void test_query(void **state)
{
    (void)state;
    static const char *const keys[] = {"a", "b", "model", NULL};
    fleetd_query_t q;
    assert_int_equal(fleetd_query_parse(NULL, keys, &q), KEEL_OK);
    assert_int_equal(q.n, 0);
    assert_int_equal(fleetd_query_parse("", keys, &q), KEEL_OK);
    assert_int_equal(fleetd_query_parse("a=1&b=x%20y&model=plug%2D1", keys, &q), KEEL_OK);
    assert_int_equal(q.n, 3);
    assert_string_equal(fleetd_query_get(&q, "a"), "1");
    assert_string_equal(fleetd_query_get(&q, "b"), "x y");
    assert_string_equal(fleetd_query_get(&q, "model"), "plug-1");
    assert_null(fleetd_query_get(&q, "c"));
    assert_int_equal(fleetd_query_parse("a=", keys, &q), KEEL_OK);
    assert_string_equal(fleetd_query_get(&q, "a"), "");
    assert_int_equal(fleetd_query_parse("a=1+2", keys, &q), KEEL_OK);
    assert_string_equal(fleetd_query_get(&q, "a"), "1+2");
    static const char *const bad[] = {"c=1", "a=1&a=2", "a", "a=1&", "&a=1", "=1", "a=%", "a=%4", "a=%zz",
                                      "a=%00", "a=%0a", "a=\x01", "a=%C3%A9"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(fleetd_query_parse(bad[i], keys, &q), KEEL_ERR_FORMAT);
    char big[FLEETD_QUERY_TEXT_MAX + 8];
    memcpy(big, "a=", 2);
    memset(big + 2, 'x', FLEETD_QUERY_VALUE_MAX + 1);
    big[2 + FLEETD_QUERY_VALUE_MAX + 1] = '\0';
    assert_int_equal(fleetd_query_parse(big, keys, &q), KEEL_ERR_FORMAT);
    big[2 + FLEETD_QUERY_VALUE_MAX] = '\0';
    assert_int_equal(fleetd_query_parse(big, keys, &q), KEEL_OK);
    uint64_t v;
    assert_int_equal(fleetd_query_parse("a=42&b=x", keys, &q), KEEL_OK);
    assert_int_equal(fleetd_query_u64(&q, "a", 1, 100, 7, &v), KEEL_OK);
    assert_int_equal(v, 42);
    assert_int_equal(fleetd_query_u64(&q, "model", 1, 100, 7, &v), KEEL_OK);
    assert_int_equal(v, 7);
    assert_int_equal(fleetd_query_u64(&q, "a", 1, 41, 7, &v), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_query_u64(&q, "b", 1, 100, 7, &v), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_query_parse("a=-1", keys, &q), KEEL_OK);
    assert_int_equal(fleetd_query_u64(&q, "a", 0, 100, 7, &v), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_query_parse("a=99999999999999999999", keys, &q), KEEL_OK);
    assert_int_equal(fleetd_query_u64(&q, "a", 0, UINT64_MAX, 7, &v), KEEL_ERR_FORMAT);
    bool bv;
    assert_int_equal(fleetd_query_parse("a=1&b=false", keys, &q), KEEL_OK);
    assert_int_equal(fleetd_query_bool(&q, "a", false, &bv), KEEL_OK);
    assert_true(bv);
    assert_int_equal(fleetd_query_bool(&q, "b", true, &bv), KEEL_OK);
    assert_false(bv);
    assert_int_equal(fleetd_query_bool(&q, "model", true, &bv), KEEL_OK);
    assert_true(bv);
    assert_int_equal(fleetd_query_parse("a=yes", keys, &q), KEEL_OK);
    assert_int_equal(fleetd_query_bool(&q, "a", false, &bv), KEEL_ERR_FORMAT);
}

static void test_params(void **state)
{
    (void)state;
    fleetd_campaign_params_t c;
    assert_int_equal(fleetd_campaign_params("model=plug-1", 200, &c), KEEL_OK);
    assert_string_equal(c.model, "plug-1");
    assert_int_equal(c.percent, 100);
    assert_false(c.security);
    assert_int_equal(c.fail_permille, 200);
    assert_int_equal(fleetd_campaign_params("model=plug-1&percent=10&security=1&fail_permille=50", 200, &c), KEEL_OK);
    assert_int_equal(c.percent, 10);
    assert_true(c.security);
    assert_int_equal(c.fail_permille, 50);
    static const char *const bad[] = {NULL, "", "percent=10", "model=", "model=a/b", "model=plug-1&percent=0",
                                      "model=plug-1&percent=101", "model=plug-1&fail_permille=0",
                                      "model=plug-1&fail_permille=1001", "model=plug-1&security=2",
                                      "model=plug-1&bundle=x", "model=.x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(fleetd_campaign_params(bad[i], 200, &c), KEEL_ERR_FORMAT);

    fleetd_alert_params_t a;
    assert_int_equal(fleetd_alert_params(NULL, &a), KEEL_OK);
    assert_int_equal(a.since, 0);
    assert_int_equal(a.limit, FLEETD_ALERTS_LIMIT_DEFAULT);
    assert_string_equal(a.kind, "");
    assert_string_equal(a.device, "");
    assert_int_equal(fleetd_alert_params("since=1700000000&kind=tamper&device=dev1&limit=5", &a), KEEL_OK);
    assert_int_equal(a.since, 1700000000);
    assert_string_equal(a.kind, "tamper");
    assert_string_equal(a.device, "dev1");
    assert_int_equal(a.limit, 5);
    assert_int_equal(fleetd_alert_params("limit=0", &a), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_alert_params("limit=10001", &a), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_alert_params("kind=a%27b", &a), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_alert_params("device=..", &a), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_alert_params("since=-5", &a), KEEL_ERR_FORMAT);

    fleetd_device_params_t d;
    assert_int_equal(fleetd_device_params(NULL, &d), KEEL_OK);
    assert_int_equal(d.limit, FLEETD_DEVICES_LIMIT_DEFAULT);
    assert_int_equal(fleetd_device_params("model=plug-1&after=abc&limit=2", &d), KEEL_OK);
    assert_string_equal(d.model, "plug-1");
    assert_string_equal(d.after, "abc");
    assert_int_equal(d.limit, 2);
    assert_int_equal(fleetd_device_params("model=plug 1", &d), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_device_params("limit=100001", &d), KEEL_ERR_FORMAT);
}

/* ---- bodies ---- */

static void test_bodies(void **state)
{
    (void)state;
    assert_int_equal(fleetd_action_body("", 0), KEEL_OK);
    assert_int_equal(fleetd_action_body("  \n", 3), KEEL_OK);
    assert_int_equal(fleetd_action_body("{}", 2), KEEL_OK);
    assert_int_equal(fleetd_action_body(" { } ", 5), KEEL_OK);
    assert_int_equal(fleetd_action_body("{\"force\":true}", 14), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "unknown field"));
    assert_int_equal(fleetd_action_body("[]", 2), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_action_body("{}{}", 4), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_action_body("{", 1), KEEL_ERR_FORMAT);
    char big[FLEETD_ACTION_BODY_MAX + 8];
    memset(big, ' ', sizeof big);
    big[0] = '{';
    big[sizeof big - 1] = '}';
    assert_int_equal(fleetd_action_body(big, sizeof big), KEEL_ERR_TOO_LARGE);

    json_t *j = NULL;
    assert_int_equal(fleetd_json_object("{\"a\":1}", 7, 100, &j), KEEL_OK);
    json_decref(j);
    assert_int_equal(fleetd_json_object("{\"a\":1,\"a\":2}", 13, 100, &j), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_json_object("{\"a\":\"\\u0000\"}", 14, 100, &j), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_json_object("\"x\"", 3, 100, &j), KEEL_ERR_FORMAT);
    assert_int_equal(fleetd_json_object("{\"a\":1}", 7, 6, &j), KEEL_ERR_TOO_LARGE);

    assert_true(fleetd_content_type_is("application/json", "application/json"));
    assert_true(fleetd_content_type_is("Application/JSON; charset=utf-8", "application/json"));
    assert_false(fleetd_content_type_is("application/jsonx", "application/json"));
    assert_false(fleetd_content_type_is("text/plain", "application/json"));
    assert_false(fleetd_content_type_is(NULL, "application/json"));
}

static void test_json_views(void **state)
{
    (void)state;
    keel_fleet_campaign_t c = {.security_version = 3, .bundle_size = 1000, .percent = 50, .fail_permille = 100,
                               .state = KEEL_FLEET_CAMPAIGN_HALTED, .created = 1000, .updated = 1200};
    snprintf(c.id, sizeof c.id, "0123456789abcdef0123456789abcdef");
    snprintf(c.model, sizeof c.model, "plug-1");
    snprintf(c.version, sizeof c.version, "1.1.0");
    snprintf(c.bundle_path, sizeof c.bundle_path, "/var/lib/secret/path");
    keel_fleet_campaign_counts_t k = {.selected = 4, .confirmed = 2, .first_confirmed = 1060, .last_confirmed = 1100};
    json_t *j = fleetd_campaign_json(&c, &k);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "halted");
    assert_null(json_object_get(j, "bundle_path"));
    json_t *tt = json_object_get(j, "time_to");
    assert_int_equal(json_integer_value(json_object_get(tt, "first_confirmed")), 60);
    assert_true(json_is_null(json_object_get(tt, "all_confirmed")));
    json_decref(j);
    k.confirmed = 4;
    j = fleetd_campaign_json(&c, &k);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "time_to"), "all_confirmed")), 100);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "counts"), "selected")), 4);
    json_decref(j);

    json_t *list = json_pack("[{s:i, s:s}, {s:s}]", "state", 1, "bundle_path", "/x", "state", "running");
    fleetd_campaign_list_names(list);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "state")), "paused");
    assert_null(json_object_get(json_array_get(list, 0), "bundle_path"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "state")), "running");
    json_decref(list);

    keel_fleet_device_t d = {.state = KEEL_FLEET_DEV_ACTIVE, .registered = 5, .last_seen = 9, .security_version = -1};
    snprintf(d.id, sizeof d.id, "dev1");
    snprintf(d.pseudonym, sizeof d.pseudonym, "0123456789abcdef0123456789abcdef");
    j = fleetd_device_json(&d);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "active");
    assert_null(json_object_get(j, "pseudonym"));
    assert_true(json_is_null(json_object_get(j, "first_seen")));
    assert_true(json_is_null(json_object_get(j, "version")));
    assert_true(json_is_null(json_object_get(j, "security_version")));
    assert_int_equal(json_integer_value(json_object_get(j, "last_seen")), 9);
    char *text = json_dumps(j, 0);
    assert_null(strstr(text, "0123456789abcdef0123456789abcdef"));
    free(text);
    json_decref(j);
}

int main(void)
{
    if (keel_crypto_init() != KEEL_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokens_parse),   cmocka_unit_test(test_tokens_parse_refuses),
        cmocka_unit_test(test_token_make_and_match), cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_bearer),         cmocka_unit_test(test_ratelimit),
        cmocka_unit_test(test_routes),         cmocka_unit_test(test_query),
        cmocka_unit_test(test_params),         cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_json_views),
    };
    return cmocka_run_group_tests_name("fleet_admin", tests, NULL, NULL);
}

/* keeld's fleet updater, its pure part (programs/keeld/updater_logic.c):
 * strict offers, the decision against the running/pending version and the
 * owner's policy, the check schedule's jitter bounds, the retry backoff,
 * progress throttling and the update server's address. The transfers and
 * the install run against nginx in tests/integration/keeld_fleet_update.sh. */
#include "testutil.h"

#include "updater.h"

#define CAMPAIGN "0123456789abcdef0123456789abcdef"
#define SHA "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define CAP 1000000u

static keel_status_t parse(const char *json, keeld_offer_t *o)
{
    keel_status_t st = keeld_offer_parse(json, strlen(json), CAP, o);
    keel_error_clear();
    return st;
}

static void test_offer_good(void **state)
{
    (void)state;
    keeld_offer_t o;
    assert_int_equal(parse("{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.2.3-rc.1\",\"security_version\":7,"
                           "\"size\":1000000,\"sha256\":\"" SHA "\",\"security\":true}",
                           &o),
                     KEEL_OK);
    assert_string_equal(o.campaign, CAMPAIGN);
    assert_string_equal(o.version, "1.2.3-rc.1");
    assert_int_equal(o.security_version, 7);
    assert_int_equal(o.size, CAP);
    assert_string_equal(o.sha256, SHA);
    assert_true(o.security);
    /* Upper-case hex is taken and kept in lower case (the URL and the digest compare). */
    assert_int_equal(parse("{\"campaign\":\"0123456789ABCDEF0123456789ABCDEF\",\"version\":\"2.0.0\","
                           "\"security_version\":4294967295,\"size\":1,\"sha256\":\"" SHA "\",\"security\":false}",
                           &o),
                     KEEL_OK);
    assert_string_equal(o.campaign, CAMPAIGN);
    assert_int_equal(o.security_version, UINT32_MAX);
    assert_false(o.security);
}

static void test_offer_strict(void **state)
{
    (void)state;
    keeld_offer_t o;
    static const char *const bad[] = {
        "",
        "[]",
        "not json",
        /* a field missing */
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1,\"size\":10,\"sha256\":\"" SHA "\"}",
        /* an unknown field */
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1,\"size\":10,\"sha256\":\"" SHA
        "\",\"security\":false,\"url\":\"https://evil.example/\"}",
        /* a duplicate field */
        "{\"campaign\":\"" CAMPAIGN "\",\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1,"
        "\"size\":10,\"sha256\":\"" SHA "\",\"security\":false}",
        /* campaign: short, long, not hex, a path */
        "{\"campaign\":\"0123\",\"version\":\"1.0.0\",\"security_version\":1,\"size\":10,\"sha256\":\"" SHA
        "\",\"security\":false}",
        "{\"campaign\":\"" CAMPAIGN "0\",\"version\":\"1.0.0\",\"security_version\":1,\"size\":10,\"sha256\":\"" SHA
        "\",\"security\":false}",
        "{\"campaign\":\"0123456789abcdef0123456789abcdeg\",\"version\":\"1.0.0\",\"security_version\":1,\"size\":10,"
        "\"sha256\":\"" SHA "\",\"security\":false}",
        "{\"campaign\":\"../../../../../../etc/passwd00000\",\"version\":\"1.0.0\",\"security_version\":1,"
        "\"size\":10,\"sha256\":\"" SHA "\",\"security\":false}",
        /* version: not SemVer, too long, a NUL inside */
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0\",\"security_version\":1,\"size\":10,\"sha256\":\"" SHA
        "\",\"security\":false}",
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
        "\"security_version\":1,\"size\":10,\"sha256\":\"" SHA "\",\"security\":false}",
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\\u0000x\",\"security_version\":1,\"size\":10,"
        "\"sha256\":\"" SHA "\",\"security\":false}",
        /* security_version: negative, too big, a string, a real */
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":-1,\"size\":10,\"sha256\":\"" SHA
        "\",\"security\":false}",
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":4294967296,\"size\":10,"
        "\"sha256\":\"" SHA "\",\"security\":false}",
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":\"1\",\"size\":10,\"sha256\":\"" SHA
        "\",\"security\":false}",
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1.5,\"size\":10,\"sha256\":\"" SHA
        "\",\"security\":false}",
        /* size: zero, negative */
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1,\"size\":0,\"sha256\":\"" SHA
        "\",\"security\":false}",
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1,\"size\":-5,\"sha256\":\"" SHA
        "\",\"security\":false}",
        /* sha256: short, not hex */
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1,\"size\":10,\"sha256\":\"00\","
        "\"security\":false}",
        "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1,\"size\":10,\"sha256\":\"" SHA
        "\",\"security\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&o, 0x55, sizeof o);
        keel_status_t st = parse(bad[i], &o);
        if (st == KEEL_OK)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(o.campaign[0], '\0'); /* nothing half-filled */
    }
    /* Over the size cap: KEEL_ERR_TOO_LARGE. */
    assert_int_equal(parse("{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1,"
                           "\"size\":1000001,\"sha256\":\"" SHA "\",\"security\":false}",
                           &o),
                     KEEL_ERR_TOO_LARGE);
    /* Over 4 KiB, even when every field is right (padding with spaces). */
    char big[KEELD_OFFER_MAX + 64];
    int n = snprintf(big, sizeof big, "{\"campaign\":\"" CAMPAIGN "\",\"version\":\"1.0.0\",\"security_version\":1,"
                                      "\"size\":10,\"sha256\":\"" SHA "\",\"security\":false");
    assert_true(n > 0);
    memset(big + n, ' ', sizeof big - (size_t)n - 2);
    big[sizeof big - 2] = '}';
    big[sizeof big - 1] = '\0';
    assert_int_equal(keeld_offer_parse(big, strlen(big), CAP, &o), KEEL_ERR_TOO_LARGE);
    keel_error_clear();
    big[KEELD_OFFER_MAX - 1] = '}';
    assert_int_equal(keeld_offer_parse(big, KEELD_OFFER_MAX, CAP, &o), KEEL_OK);
}

static void test_decide(void **state)
{
    (void)state;
    keeld_offer_t o = {.campaign = CAMPAIGN, .version = "1.1.0"};
    /* the version runs, or is installed and waits for the reboot */
    assert_int_equal(keeld_offer_decide(&o, "1.1.0", NULL, true, "", "2030-01-01"), KEELD_OFFER_IGNORE);
    assert_int_equal(keeld_offer_decide(&o, "1.0.0", "1.1.0", true, "", "2030-01-01"), KEELD_OFFER_IGNORE);
    assert_int_equal(keeld_offer_decide(&o, "1.1.0", NULL, false, "", "2030-01-01"), KEELD_OFFER_IGNORE);
    /* a new version */
    assert_int_equal(keeld_offer_decide(&o, "1.0.0", NULL, true, "", "2030-01-01"), KEELD_OFFER_INSTALL);
    assert_int_equal(keeld_offer_decide(&o, NULL, NULL, true, NULL, "2030-01-01"), KEELD_OFFER_INSTALL);
    assert_int_equal(keeld_offer_decide(&o, "1.0.0", "1.0.9", true, "", "2030-01-01"), KEELD_OFFER_INSTALL);
    /* build metadata makes another version here: exact strings */
    assert_int_equal(keeld_offer_decide(&o, "1.1.0+b2", NULL, true, "", "2030-01-01"), KEELD_OFFER_INSTALL);
    /* the owner's policy */
    assert_int_equal(keeld_offer_decide(&o, "1.0.0", NULL, false, "", "2030-01-01"), KEELD_OFFER_POSTPONE);
    assert_int_equal(keeld_offer_decide(&o, "1.0.0", NULL, true, "2030-01-02", "2030-01-01"), KEELD_OFFER_POSTPONE);
    assert_int_equal(keeld_offer_decide(&o, "1.0.0", NULL, true, "2030-01-01", "2030-01-01"), KEELD_OFFER_INSTALL);
    assert_int_equal(keeld_offer_decide(&o, "1.0.0", NULL, true, "2029-12-31", "2030-01-01"), KEELD_OFFER_INSTALL);
}

static void test_schedule(void **state)
{
    (void)state;
    /* interval +- jitter, both ends reachable, never below 1 s */
    assert_true(keeld_check_delay(86400, 3600, 0) == 86400 - 3600);
    double hi = keeld_check_delay(86400, 3600, 1 - 0x1.0p-53);
    assert_true(hi <= 86400 + 3600 && hi > 86400 + 3599.99);
    assert_true(keeld_check_delay(86400, 0, 0.7) == 86400);
    assert_true(keeld_check_delay(100, 500, 0) == 1);
    assert_true(keeld_check_delay(100, 500, 0.5) > 1);
    /* a u out of range (or NaN) is taken as 0, never a negative or huge delay */
    assert_true(keeld_check_delay(600, 60, 1.0) == 540);
    assert_true(keeld_check_delay(600, 60, -0.5) == 540);
    assert_true(keeld_check_delay(600, 60, 0.0 / 0.0) == 540);
    /* the first check: [0, first] */
    assert_true(keeld_first_check_delay(300, 0) == 0);
    assert_true(keeld_first_check_delay(300, 0.5) == 150);
    assert_true(keeld_first_check_delay(0, 0.9) == 0);
    /* spread: 10000 draws of the CSPRNG-like sequence cover the window evenly */
    unsigned buckets[10] = {0};
    for (unsigned i = 0; i < 10000; i++) {
        double u = (i * 0.6180339887498949) - (double)(unsigned)(i * 0.6180339887498949);
        double d = keeld_check_delay(1000, 100, u);
        assert_true(d >= 900 && d < 1100);
        buckets[(unsigned)((d - 900) / 20)]++;
    }
    for (unsigned b = 0; b < 10; b++)
        assert_true(buckets[b] > 900 && buckets[b] < 1100);
    /* retries: full jitter over a window that doubles up to the interval */
    assert_true(keeld_retry_delay(1, 86400, 0) == 0);
    assert_true(keeld_retry_delay(1, 86400, 0.999) < 30);
    assert_true(keeld_retry_delay(2, 86400, 0.999) < 60 && keeld_retry_delay(2, 86400, 0.999) > 59);
    assert_true(keeld_retry_delay(40, 86400, 0) >= 43200);
    assert_true(keeld_retry_delay(40, 86400, 0.999) <= 86400);
    assert_true(keeld_retry_delay(64, 10, 0.999) <= 30); /* an interval below the base: the base */
}

static void test_progress(void **state)
{
    (void)state;
    keeld_progress_t p;
    keeld_progress_start(&p, 1000, 100.0);
    assert_false(keeld_progress_due(&p, 0, 100.0));
    assert_false(keeld_progress_due(&p, 100, 101.0));
    assert_false(keeld_progress_due(&p, 249, 105.0));
    assert_true(keeld_progress_due(&p, 250, 105.5)); /* a quarter */
    assert_false(keeld_progress_due(&p, 260, 106.0));
    assert_false(keeld_progress_due(&p, 499, 115.0)); /* 9.5 s after the last report */
    assert_true(keeld_progress_due(&p, 499, 115.5)); /* 10 s */
    assert_false(keeld_progress_due(&p, 499, 126.0)); /* 10 s but nothing moved */
    assert_true(keeld_progress_due(&p, 500, 126.0)); /* the second quarter */
    assert_true(keeld_progress_due(&p, 1000, 126.1)); /* straight to the end: one report, not two */
    assert_false(keeld_progress_due(&p, 1000, 126.2));
    /* a burst over several quarters in one tick is one report */
    keeld_progress_start(&p, 1000, 0);
    unsigned reports = 0;
    for (uint64_t b = 0; b <= 1000; b += 10)
        reports += keeld_progress_due(&p, b, 0.001 * (double)b);
    assert_int_equal(reports, 4);
    /* a zero total never divides */
    keeld_progress_start(&p, 0, 0);
    assert_false(keeld_progress_due(&p, 0, 1));
}

static void test_server(void **state)
{
    (void)state;
    char host[KEELD_UPDATE_HOST_MAX + 1];
    unsigned port;
    bool v6;
    assert_int_equal(keeld_update_server_parse("https://updates.example.com", host, &port, &v6), KEEL_OK);
    assert_string_equal(host, "updates.example.com");
    assert_int_equal(port, 443);
    assert_false(v6);
    assert_int_equal(keeld_update_server_parse("https://127.0.0.1:8443", host, &port, &v6), KEEL_OK);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8443);
    assert_int_equal(keeld_update_server_parse("https://[::1]:9", host, &port, &v6), KEEL_OK);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9);
    assert_true(v6);
    static const char *const bad[] = {
        "http://updates.example.com", "https://", "https://:443", "https://host:", "https://host:0",
        "https://host:65536", "https://host:99999999999", "https://host/", "https://host:443/v1",
        "https://user@host", "https://host?x=1", "https://host#f", "https://[::1", "https://[nope]:1",
        "https://-host", "https://ho st", "HTTPS://host", "https://host:44a3",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (keeld_update_server_parse(bad[i], host, &port, &v6) == KEEL_OK)
            fail_msg("accepted: %s", bad[i]);
        keel_error_clear();
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offer_good), cmocka_unit_test(test_offer_strict), cmocka_unit_test(test_decide),
        cmocka_unit_test(test_schedule),   cmocka_unit_test(test_progress),     cmocka_unit_test(test_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

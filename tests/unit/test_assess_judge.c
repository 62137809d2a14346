/*
 * keel_assess_judge: observations + ICS + IXIT -> verdicts, without a
 * network. Each case builds the observations a probe would return and checks
 * the provision's verdict and the test case that carries it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "keel/assess.h"
#include "keel/assess_probe.h"
#include "keel/assess_report.h"
#include "keel/assess_run.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static json_t *example(const char *name)
{
    const char *src = getenv("KEEL_SOURCE_DIR");
    assert_non_null(src);
    char path[KEEL_PATH_MAX];
    snprintf(path, sizeof path, "%s/examples/keel-device/%s", src, name);
    json_error_t e;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL)
        fail_msg("%s: %s", path, e.text);
    return j;
}

static json_t *report_with(json_t *observations)
{
    json_t *r = json_pack("{s:o}", "observations", observations != NULL ? observations : json_array());
    assert_non_null(r);
    return r;
}

static const json_t *provision(const json_t *report, const char *id)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(report, "provisions"), i, p)
        if (strcmp(json_string_value(json_object_get(p, "id")), id) == 0)
            return p;
    fail_msg("no provision %s in the report", id);
    return NULL;
}

static const char *verdict(const json_t *report, const char *id)
{
    return json_string_value(json_object_get(provision(report, id), "verdict"));
}

/* The verdict of test case `tid` of provision `id`, or NULL. */
static const char *test_verdict(const json_t *report, const char *id, const char *tid)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(provision(report, id), "tests"), i, t)
        if (strcmp(json_string_value(json_object_get(t, "id")), tid) == 0)
            return json_string_value(json_object_get(t, "verdict"));
    return NULL;
}

/* A unit-contract document of probe `probe` on tcp `port` with one unit. */
static json_t *contract_doc(const char *probe, int port, const char *unit, keel_unit_state_t state,
                            const char *reason)
{
    json_t *d = json_pack("{s:s, s:s, s:i}", "format", "keel-assess-x-1", "probe", probe, "port", port);
    assert_non_null(d);
    assert_int_equal(keel_assess_unit_mark(d, unit, state, reason), KEEL_OK);
    return d;
}

static void discovery_without_observations(void **state)
{
    (void)state;
    json_t *r = report_with(NULL);
    unsigned mfail = 99;
    assert_int_equal(keel_assess_judge(r, NULL, NULL, &mfail), KEEL_OK);
    assert_int_equal(mfail, 0);
    assert_int_equal(json_array_size(json_object_get(r, "provisions")), KEEL_ASSESS_PROVISIONS);
    const json_t *s = json_object_get(r, "summary");
    assert_int_equal(json_integer_value(json_object_get(s, "INCONCLUSIVE")), KEEL_ASSESS_PROVISIONS);
    assert_true(json_is_true(json_object_get(s, "conforming")));
    assert_string_equal(test_verdict(r, "5.1-1", "5.1-1/conceptual"), KEEL_VERDICT_INCONCLUSIVE);
    /* a unit that did not run is a test case of its own, inconclusive by default */
    assert_string_equal(test_verdict(r, "5.1-1", "5.1-1/http.default_creds"), KEEL_VERDICT_INCONCLUSIVE);
    /* with the run's header fields, what the judge made is a valid report */
    assert_int_equal(json_object_update_missing_new(
                         r, json_pack("{s:s, s:s, s:s, s:I, s:s, s:{s:s, s:s}, s:n, s:[]}", "format",
                                      "keel-assess-report-1", "generator", "keel test", "started",
                                      "2026-11-22T08:00:00Z", "duration_us", (json_int_t)1, "mode", "discovery",
                                      "target", "host", "127.0.0.1", "address", "127.0.0.1", "product", "probes")),
                     0);
    if (keel_assess_report_check(r) != KEEL_OK)
        fail_msg("report check: %s", keel_error_message());
    json_decref(r);
}

static void functional_fail_and_pass(void **state)
{
    (void)state;
    json_t *obs = json_array();
    json_t *d = contract_doc("http", 8443, "http.default_creds", KEEL_UNIT_RAN, NULL);
    assert_int_equal(keel_assess_unit_finding(d, "http.default_creds", "5.1-1", "fail", "admin/admin accepted"),
                     KEEL_OK);
    assert_int_equal(keel_assess_evidence(d, "http.default_creds", "GET /admin as admin:admin", 25, "200", 3, 1200),
                     KEEL_OK);
    assert_int_equal(keel_assess_unit_mark(d, "http.disclosure", KEEL_UNIT_RAN, NULL), KEEL_OK);
    json_array_append_new(obs, d);
    json_t *r = report_with(obs);
    unsigned mfail = 0;
    assert_int_equal(keel_assess_judge(r, NULL, NULL, &mfail), KEEL_OK);
    assert_string_equal(verdict(r, "5.1-1"), KEEL_VERDICT_FAIL);
    assert_string_equal(test_verdict(r, "5.1-1", "5.1-1/http.default_creds/tcp:8443"), KEEL_VERDICT_FAIL);
    assert_int_equal(mfail, 1);
    /* the disclosure unit ran without a failure: its test case passes, the
     * provision stays inconclusive without an IXIT */
    assert_string_equal(test_verdict(r, "5.6-2", "5.6-2/http.disclosure/tcp:8443"), KEEL_VERDICT_PASS);
    assert_string_equal(verdict(r, "5.6-2"), KEEL_VERDICT_INCONCLUSIVE);
    assert_false(json_is_true(json_object_get(json_object_get(r, "summary"), "conforming")));
    /* the evidence travels with the test case */
    const json_t *p = provision(r, "5.1-1");
    size_t i;
    json_t *t;
    int seen = 0;
    json_array_foreach(json_object_get(p, "tests"), i, t)
        if (json_array_size(json_object_get(t, "evidence")) == 1 &&
            strcmp(json_string_value(json_object_get(json_array_get(json_object_get(t, "evidence"), 0), "sent")),
                   "GET /admin as admin:admin") == 0)
            seen = 1;
    assert_true(seen);
    json_decref(r);
}

static void ics_statements(void **state)
{
    (void)state;
    json_t *ics = example("ics.json"), *ixit = example("ixit.json");
    json_t *r = report_with(NULL);
    assert_int_equal(keel_assess_judge(r, ics, ixit, NULL), KEEL_OK);
    /* not applicable with its feature and justification */
    assert_string_equal(verdict(r, "5.3-14"), KEEL_VERDICT_NA);
    assert_non_null(strstr(json_string_value(json_object_get(provision(r, "5.3-14"), "reason")), "constrained"));
    /* a recommendation not implemented, justified: N/A */
    assert_string_equal(verdict(r, "5.10-1"), KEEL_VERDICT_NA);
    /* a provision with only a conceptual test and support: PASS */
    assert_string_equal(verdict(r, "5.3-16"), KEEL_VERDICT_PASS);
    json_decref(r);

    /* a mandatory provision the ICS says is not met: FAIL */
    json_object_set_new(json_object_get(json_object_get(ics, "provisions"), "5.11-1"), "support", json_string("no"));
    r = report_with(NULL);
    unsigned mfail = 0;
    assert_int_equal(keel_assess_judge(r, ics, ixit, &mfail), KEEL_OK);
    assert_string_equal(verdict(r, "5.11-1"), KEEL_VERDICT_FAIL);
    assert_int_equal(mfail, 1);
    json_decref(r);
    json_decref(ics);
    json_decref(ixit);
}

static void ixit_contradicts_ics(void **state)
{
    (void)state;
    json_t *ics = example("ics.json"), *ixit = example("ixit.json");
    json_t *auth = json_array_get(json_object_get(ixit, "authentication"), 0);
    json_object_set_new(auth, "password_setting", json_string("universal_default"));
    json_t *r = report_with(NULL);
    assert_int_equal(keel_assess_judge(r, ics, ixit, NULL), KEEL_OK);
    assert_string_equal(test_verdict(r, "5.1-1", "5.1-1/conceptual"), KEEL_VERDICT_FAIL);
    assert_string_equal(verdict(r, "5.1-1"), KEEL_VERDICT_FAIL);
    json_decref(r);
    json_decref(ics);
    json_decref(ixit);
}

static void undeclared_port_fails(void **state)
{
    (void)state;
    json_t *ics = example("ics.json"), *ixit = example("ixit.json");
    json_t *ports = json_pack("{s:s, s:[], s:{s:i, s:[{s:i, s:s}, {s:i, s:s}]}}", "format", "keel-assess-ports-1",
                              "findings", "tcp", "ports_scanned", 65535, "open", "port", 8443, "banner", "", "port",
                              23, "banner", "\\xff\\xfd\\x18");
    json_t *r = report_with(json_pack("[o]", ports));
    assert_int_equal(keel_assess_judge(r, ics, ixit, NULL), KEEL_OK);
    assert_string_equal(verdict(r, "5.6-1"), KEEL_VERDICT_FAIL);
    assert_string_equal(test_verdict(r, "5.6-1", "5.6-1/portscan/tcp"), KEEL_VERDICT_FAIL);
    json_decref(r);
    /* only the declared port open: the portscan passes */
    ports = json_pack("{s:s, s:[], s:{s:i, s:[{s:i, s:s}]}}", "format", "keel-assess-ports-1", "findings", "tcp",
                      "ports_scanned", 65535, "open", "port", 8443, "banner", "");
    r = report_with(json_pack("[o]", ports));
    assert_int_equal(keel_assess_judge(r, ics, ixit, NULL), KEEL_OK);
    assert_string_equal(test_verdict(r, "5.6-1", "5.6-1/portscan/tcp"), KEEL_VERDICT_PASS);
    json_decref(r);
    json_decref(ics);
    json_decref(ixit);
}

static void finding_outside_the_catalogue_mapping(void **state)
{
    (void)state;
    /* anonymous FTP is a 5.5-4 failure, though 5.5-4 does not list telnet_ssh_ftp */
    json_t *d = contract_doc("service", 21, "telnet_ssh_ftp", KEEL_UNIT_RAN, NULL);
    assert_int_equal(keel_assess_unit_finding(d, "telnet_ssh_ftp", "5.5-4", "fail", "anonymous FTP login accepted"),
                     KEEL_OK);
    assert_int_equal(keel_assess_unit_finding(d, "telnet_ssh_ftp", "5.5-3", "warn", "only a warning"), KEEL_OK);
    json_t *r = report_with(json_pack("[o]", d));
    assert_int_equal(keel_assess_judge(r, NULL, NULL, NULL), KEEL_OK);
    assert_string_equal(test_verdict(r, "5.5-4", "5.5-4/telnet_ssh_ftp/tcp:21"), KEEL_VERDICT_FAIL);
    /* a warning outside the mapping makes no test case */
    assert_null(test_verdict(r, "5.5-3", "5.5-3/telnet_ssh_ftp/tcp:21"));
    json_decref(r);
}

static void inconclusive_and_not_applicable_units(void **state)
{
    (void)state;
    json_t *ics = example("ics.json"), *ixit = example("ixit.json");
    json_t *obs = json_array();
    json_array_append_new(obs, contract_doc("update", 8443, "update", KEEL_UNIT_INCONCLUSIVE,
                                            "the good bundle was refused: the refusals prove nothing"));
    json_array_append_new(obs, contract_doc("mqtt", 1883, "mqtt", KEEL_UNIT_NOT_APPLICABLE, "not an MQTT broker"));
    json_t *r = report_with(obs);
    /* units with no result at all: the engine says why */
    json_object_set_new(r, "absent_units", json_pack("{s:{s:s, s:s}}", "firmware", "verdict", KEEL_VERDICT_NA,
                                                     "reason", "nothing to scan"));
    assert_int_equal(keel_assess_judge(r, ics, ixit, NULL), KEEL_OK);
    assert_string_equal(verdict(r, "5.3-2"), KEEL_VERDICT_INCONCLUSIVE);
    assert_string_equal(test_verdict(r, "5.3-2", "5.3-2/update/update@tcp:8443"), KEEL_VERDICT_INCONCLUSIVE);
    assert_string_equal(test_verdict(r, "5.5-4", "5.5-4/mqtt/tcp:1883"), KEEL_VERDICT_NA);
    assert_string_equal(test_verdict(r, "5.4-3", "5.4-3/firmware"), KEEL_VERDICT_NA);
    assert_string_equal(verdict(r, "5.4-3"), KEEL_VERDICT_PASS); /* conceptual PASS, functional N/A */
    json_decref(r);
    json_decref(ics);
    json_decref(ixit);
}

static void na_contradicted_by_the_device(void **state)
{
    (void)state;
    json_t *ics = example("ics.json"), *ixit = example("ixit.json");
    /* the ICS says 5.8-2 does not apply (no sensitive data) ... */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_object_get(ics, "provisions"), "5.8-2"), "support")),
        "not_applicable");
    /* ... and a clear-text MQTT broker with readable topics is found on the device */
    json_t *d = contract_doc("mqtt", 1883, "mqtt", KEEL_UNIT_RAN, NULL);
    assert_int_equal(keel_assess_unit_finding(d, "mqtt", "5.8-2", "fail", "readable topics in clear"), KEEL_OK);
    json_t *r = report_with(json_pack("[o]", d));
    assert_int_equal(keel_assess_judge(r, ics, ixit, NULL), KEEL_OK);
    assert_string_equal(verdict(r, "5.8-2"), KEEL_VERDICT_FAIL);
    json_decref(r);
    json_decref(ics);
    json_decref(ixit);
}

/* Long texts of several-byte characters (a German ICS, a device's answer)
 * are cut at a character boundary: a cut through one would make a string
 * jansson refuses, and the whole judgement fail. Both parities are tried. */
static void long_multibyte_texts(void **state)
{
    (void)state;
    for (int shift = 0; shift < 2; shift++) {
        char just[1800], what[1800];
        size_t n = 0;
        if (shift)
            just[n++] = 'x';
        while (n + 2 < 1600) {
            memcpy(just + n, "\xc3\xa4", 2); /* a-umlaut */
            n += 2;
        }
        just[n] = '\0';
        memcpy(what, just, n + 1);
        json_t *ics = example("ics.json"), *ixit = example("ixit.json");
        json_t *entry = json_object_get(json_object_get(ics, "provisions"), "5.10-1");
        assert_int_equal(json_object_set_new(entry, "justification", json_string(just)), 0);
        json_t *d = contract_doc("update", 8443, "update", KEEL_UNIT_INCONCLUSIVE, just);
        assert_int_equal(keel_assess_unit_finding(d, "update", "5.3-2", "fail", what), KEEL_OK);
        json_t *r = report_with(json_pack("[o]", d));
        assert_int_equal(keel_assess_judge(r, ics, ixit, NULL), KEEL_OK);
        assert_string_equal(verdict(r, "5.10-1"), KEEL_VERDICT_NA);
        assert_string_equal(verdict(r, "5.3-2"), KEEL_VERDICT_FAIL);
        assert_non_null(strstr(json_string_value(json_object_get(provision(r, "5.10-1"), "reason")), "\xc3\xa4"));
        json_decref(r);
        json_decref(ics);
        json_decref(ixit);
    }
}


/* keel_assess_run reads the lab password the IXIT names: one of 100 bytes
 * (keeld takes up to 1023) must do. The run meets one closed port of
 * 127.0.0.1 only: the IXIT's publications (URLs elsewhere) are taken out. */
static void run_with_a_long_lab_password(void **state)
{
    (void)state;
    const char *src = getenv("KEEL_SOURCE_DIR");
    assert_non_null(src);
    char dir[KEEL_PATH_MAX], pw[101];
    snprintf(dir, sizeof dir, "%s/examples/keel-device", src);
    memset(pw, 'p', sizeof pw - 1);
    pw[sizeof pw - 1] = '\0';
    assert_int_equal(setenv("KEEL_ASSESS_PASSWORD", pw, 1), 0);
    json_t *ics = example("ics.json"), *ixit = example("ixit.json");
    assert_int_equal(json_object_del(ixit, "disclosure"), 0);
    assert_int_equal(json_object_del(json_object_get(json_object_get(ixit, "product"), "support_period"),
                                     "published_at"),
                     0);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    char ports[16];
    snprintf(ports, sizeof ports, "%u", (unsigned)ntohs(a.sin_port));
    keel_assess_run_opts_t o = {.host = "127.0.0.1", .ics = ics, .ixit = ixit, .ixit_dir = dir, .ports = ports,
                                .budget_s = 60};
    json_t *report = NULL;
    keel_status_t st = keel_assess_run(&o, &report, NULL);
    if (st != KEEL_OK)
        fail_msg("run: %s", keel_error_message());
    char *text = json_dumps(report, 0);
    assert_non_null(text);
    assert_null(strstr(text, pw));
    free(text);
    json_decref(report);
    assert_int_equal(unsetenv("KEEL_ASSESS_PASSWORD"), 0);
    json_decref(ics);
    json_decref(ixit);
}

static void bad_arguments(void **state)
{
    (void)state;
    json_t *ics = example("ics.json");
    json_t *r = report_with(NULL);
    assert_int_equal(keel_assess_judge(r, ics, NULL, NULL), KEEL_ERR_ARG);
    json_t *empty = json_object();
    assert_int_equal(keel_assess_judge(empty, NULL, NULL, NULL), KEEL_ERR_ARG);
    json_decref(empty);
    json_decref(r);
    json_decref(ics);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(discovery_without_observations),
        cmocka_unit_test(functional_fail_and_pass),
        cmocka_unit_test(ics_statements),
        cmocka_unit_test(ixit_contradicts_ics),
        cmocka_unit_test(undeclared_port_fails),
        cmocka_unit_test(finding_outside_the_catalogue_mapping),
        cmocka_unit_test(inconclusive_and_not_applicable_units),
        cmocka_unit_test(na_contradicted_by_the_device),
        cmocka_unit_test(long_multibyte_texts),
        cmocka_unit_test(run_with_a_long_lab_password),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

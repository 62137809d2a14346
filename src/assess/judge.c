/*
 * From observations to verdicts (keel_assess_judge): every probe document is
 * first brought to one shape, a list of unit results {unit, interface, state,
 * reason, findings, evidence}; then each provision of the catalogue gets a
 * conceptual test case (from the ICS and IXIT) and one functional test case
 * per unit result that bears on it, and the rules of docs/assess-report.md
 * combine them. Pure: no network, no files.
 */
#include "keel/assess.h"
#include "keel/assess_probe.h"
#include "keel/assess_report.h"
#include "keel/assess_run.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define REASON_MAX 512

static const char *sget(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "";
}

/* snprintf for the texts of the report: a cut never splits a UTF-8
 * character (the inputs are UTF-8, from jansson; half a character would make
 * a string jansson refuses, and the whole judgement fail). */
static void fit(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fit(char *out, size_t cap, const char *fmt, ...)
{
    if (cap == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0) {
        out[0] = '\0';
        return;
    }
    if ((size_t)n < cap)
        return;
    /* cut: drop a last character whose bytes did not all fit */
    keel_assess_utf8_cut_tail(out);
}

/* ---- unit results ------------------------------------------------------------ */

static json_t *result_new(json_t *results, const char *unit, const char *iface, const char *state,
                          const char *reason)
{
    json_t *r = json_pack("{s:s, s:s, s:s, s:s, s:[], s:[]}", "unit", unit, "interface", iface, "state", state,
                          "reason", reason != NULL ? reason : "", "findings", "evidence");
    if (r == NULL || json_array_append_new(results, r) != 0)
        return NULL;
    return r;
}

static int add_finding(json_t *r, const char *provision, const char *severity, const char *what)
{
    return json_array_append_new(json_object_get(r, "findings"),
                                 json_pack("{s:s, s:s, s:s}", "provision", provision, "severity", severity, "what",
                                           what));
}

/* Copies the doc's findings (all, or those of `unit`) into r. */
static int copy_findings(json_t *r, const json_t *doc, const char *unit)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(doc, "findings"), i, f) {
        const char *fu = json_string_value(json_object_get(f, "unit"));
        if (unit != NULL && (fu == NULL || strcmp(fu, unit) != 0))
            continue;
        const char *what = json_string_value(json_object_get(f, "what"));
        if (what == NULL) /* the label audit keeps its text in "detail" */
            what = sget(f, "detail");
        if (add_finding(r, sget(f, "provision"), sget(f, "severity"), what) != 0)
            return -1;
    }
    return 0;
}

static int copy_evidence(json_t *r, const json_t *doc, const char *unit)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(doc, "evidence"), i, e) {
        if (strcmp(sget(e, "unit"), unit) != 0)
            continue;
        json_t *c = json_deep_copy(e);
        if (c == NULL)
            return -1;
        json_object_del(c, "unit");
        if (json_array_append_new(json_object_get(r, "evidence"), c) != 0)
            return -1;
    }
    return 0;
}

static int evidence_line(json_t *r, const char *sent, const char *observed)
{
    return json_array_append_new(json_object_get(r, "evidence"),
                                 json_pack("{s:s, s:s}", "sent", sent, "observed", observed));
}

/* The IXIT's expected open ports, as "tcp/8443" keys. */
static int expected(const json_t *ixit, const char *transport, long port)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ixit, "expected_open_ports"), i, e)
        if (strcmp(sget(e, "transport"), transport) == 0 && json_integer_value(json_object_get(e, "port")) == port)
            return 1;
    return 0;
}

static int ports_results(json_t *results, const json_t *doc, const json_t *ixit)
{
    const json_t *tcp = json_object_get(doc, "tcp");
    char what[REASON_MAX], list[REASON_MAX];
    if (tcp != NULL) {
        size_t i;
        json_t *o;
        list[0] = '\0';
        json_array_foreach(json_object_get(tcp, "open"), i, o) {
            size_t n = strlen(list);
            if (n < sizeof list - 16)
                fit(list + n, sizeof list - n, "%stcp/%lld", n ? ", " : "",
                         (long long)json_integer_value(json_object_get(o, "port")));
        }
        char reason[REASON_MAX];
        fit(reason, sizeof reason, "no IXIT to compare the open ports with (open: %s)", list[0] ? list : "none");
        json_t *r = result_new(results, "portscan", "tcp", ixit != NULL ? "ran" : "inconclusive",
                               ixit != NULL ? NULL : reason);
        if (r == NULL)
            return -1;
        fit(what, sizeof what, "%lld TCP ports scanned", (long long)json_integer_value(json_object_get(tcp, "ports_scanned")));
        if (evidence_line(r, what, list[0] ? list : "no open port") != 0)
            return -1;
        json_array_foreach(json_object_get(tcp, "open"), i, o) {
            long port = (long)json_integer_value(json_object_get(o, "port"));
            if (ixit == NULL || expected(ixit, "tcp", port))
                continue;
            const char *banner = sget(o, "banner");
            fit(what, sizeof what, "tcp/%ld is open but the IXIT does not declare it%s%.200s%s", port,
                     banner[0] ? " (it says \"" : "", banner, banner[0] ? "\")" : "");
            if (add_finding(r, "5.6-1", "fail", what) != 0 || add_finding(r, "5.6-5", "fail", what) != 0)
                return -1;
        }
    }
    const json_t *udp = json_object_get(doc, "udp");
    if (udp != NULL) {
        json_t *r = result_new(results, "udp", "udp", "ran", NULL);
        if (r == NULL || copy_findings(r, doc, NULL) != 0)
            return -1;
        size_t i;
        json_t *u;
        int unjudged = 0;
        json_array_foreach(udp, i, u) {
            long port = (long)json_integer_value(json_object_get(u, "port"));
            int answered = json_is_true(json_object_get(u, "answered"));
            fit(what, sizeof what, "%s request to udp/%ld", sget(u, "service"), port);
            if (evidence_line(r, what, answered ? "answered" : sget(u, "state")) != 0)
                return -1;
            if (!answered)
                continue;
            if (ixit == NULL) {
                unjudged++;
                continue;
            }
            if (expected(ixit, "udp", port))
                continue;
            fit(what, sizeof what, "%s answers on udp/%ld but the IXIT does not declare it", sget(u, "service"),
                     port);
            if (add_finding(r, "5.6-1", "fail", what) != 0 || add_finding(r, "5.6-5", "fail", what) != 0)
                return -1;
        }
        if (unjudged > 0 && json_object_set_new(r, "state", json_string("inconclusive")) == 0)
            (void)json_object_set_new(r, "reason", json_string("no IXIT to compare the UDP services that answered with"));
    }
    return 0;
}

static int tls_results(json_t *results, const json_t *doc)
{
    char iface[32];
    fit(iface, sizeof iface, "tcp:%lld", (long long)json_integer_value(json_object_get(doc, "port")));
    int spoke = json_is_true(json_object_get(doc, "tls"));
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(doc, "plaintext"), i, p) spoke |= json_is_true(json_object_get(p, "answered")) &&
                                                                         (strcmp(sget(p, "reply_kind"), "http") == 0 ||
                                                                          strcmp(sget(p, "reply_kind"), "mqtt_connack") == 0);
    json_t *r = result_new(results, "tls", iface, spoke ? "ran" : "not_applicable",
                           spoke ? NULL : "the port speaks neither TLS nor HTTP or MQTT in clear");
    if (r == NULL || copy_findings(r, doc, NULL) != 0)
        return -1;
    char what[REASON_MAX] = "";
    json_array_foreach(json_object_get(doc, "versions"), i, p) if (json_is_true(json_object_get(p, "accepted")))
    {
        size_t n = strlen(what);
        fit(what + n, sizeof what - n, "%s%s", n ? ", " : "", sget(p, "version"));
    }
    char sent[64];
    fit(sent, sizeof sent, "%lld TLS handshakes", (long long)json_integer_value(json_object_get(doc, "handshakes")));
    char seen[REASON_MAX + 64];
    fit(seen, sizeof seen, "versions accepted: %s; %zu suites accepted", what[0] ? what : "none",
             json_array_size(json_object_get(doc, "ciphers")));
    return evidence_line(r, sent, seen);
}

/* A document of the first slice's probes whose unit is known by its format. */
static int whole_doc_result(json_t *results, const json_t *doc, const char *unit, const char *iface)
{
    int complete = json_object_get(doc, "complete") == NULL || json_is_true(json_object_get(doc, "complete"));
    json_t *r = result_new(results, unit, iface, complete ? "ran" : "inconclusive",
                           complete ? NULL : "the scan did not finish (see its notes)");
    return r == NULL ? -1 : copy_findings(r, doc, NULL);
}

/* A document under the unit contract: one result per unit it names. */
static int contract_results(json_t *results, const json_t *doc)
{
    char iface[64];
    json_int_t port = json_integer_value(json_object_get(doc, "port"));
    const char *probe = sget(doc, "probe");
    if (json_is_string(json_object_get(doc, "interface")))
        fit(iface, sizeof iface, "%s", sget(doc, "interface"));
    else if (port > 0)
        fit(iface, sizeof iface, "%stcp:%lld", strcmp(probe, "update") == 0 ? "update@" : "", (long long)port);
    else
        fit(iface, sizeof iface, "%s", probe[0] ? probe : "target");
    const char *unit;
    json_t *u;
    json_object_foreach(json_object_get(doc, "units"), unit, u) {
        json_t *r = result_new(results, unit, iface, sget(u, "state"), sget(u, "reason"));
        if (r == NULL || copy_findings(r, doc, unit) != 0 || copy_evidence(r, doc, unit) != 0)
            return -1;
    }
    return 0;
}

static json_t *unit_results(const json_t *observations, const json_t *ixit)
{
    json_t *results = json_array();
    size_t i;
    json_t *doc;
    int bad = results == NULL;
    json_array_foreach(observations, i, doc) {
        if (bad)
            break;
        const char *format = sget(doc, "format");
        if (json_object_get(doc, "units") != NULL)
            bad = contract_results(results, doc) != 0;
        else if (strcmp(format, "keel-assess-ports-1") == 0)
            bad = ports_results(results, doc, ixit) != 0;
        else if (strcmp(format, "keel-assess-tls-1") == 0)
            bad = tls_results(results, doc) != 0;
        else if (strcmp(format, "keel-assess-firmware-1") == 0)
            bad = whole_doc_result(results, doc, "firmware", "firmware") != 0;
        else if (strcmp(format, "keel-assess-passwords-1") == 0)
            bad = whole_doc_result(results, doc, "passwords", "labels") != 0;
    }
    if (bad) {
        json_decref(results);
        return NULL;
    }
    return results;
}

/* ---- conceptual test cases ------------------------------------------------------ */

/* IXIT facts that contradict a provision the ICS claims; NULL when none. */
static const char *ixit_contradiction(const char *id, const json_t *ixit, char *buf, size_t cap)
{
    size_t i;
    json_t *e;
    if (strcmp(id, "5.1-1") == 0) {
        json_array_foreach(json_object_get(ixit, "authentication"), i, e)
            if (strcmp(sget(e, "password_setting"), "universal_default") == 0) {
                fit(buf, cap, "the IXIT gives mechanism \"%s\" a universal default password", sget(e, "name"));
                return buf;
            }
    }
    if (strcmp(id, "5.5-1") == 0 || strcmp(id, "5.5-7") == 0) {
        json_array_foreach(json_object_get(ixit, "interfaces"), i, e) {
            const char *t = sget(e, "transport");
            if ((strcmp(t, "tcp") == 0 || strcmp(t, "udp") == 0) && json_is_false(json_object_get(e, "tls"))) {
                fit(buf, cap, "the IXIT declares network interface \"%s\" (%s/%lld) without TLS", sget(e, "name"),
                         t, (long long)json_integer_value(json_object_get(e, "port")));
                return buf;
            }
        }
    }
    if (strcmp(id, "5.6-4A") == 0) {
        json_array_foreach(json_object_get(ixit, "debug_interfaces"), i, e)
            if (strcmp(sget(e, "kind"), "software") == 0 && strcmp(sget(e, "state"), "enabled") == 0) {
                fit(buf, cap, "the IXIT declares software debug interface \"%s\" enabled", sget(e, "name"));
                return buf;
            }
    }
    return NULL;
}

static json_t *test_case(const char *id, const char *kind, const char *unit, const char *iface, const char *verdict,
                         const char *reason)
{
    return json_pack("{s:s, s:s, s:s?, s:s?, s:s, s:s, s:[], s:[]}", "id", id, "kind", kind, "unit", unit,
                     "interface", iface, "verdict", verdict, "reason", reason, "findings", "evidence");
}

/* ---- provisions ---------------------------------------------------------------- */

static int unit_listed(const keel_assess_provision_t *pr, const char *unit)
{
    for (size_t i = 0; pr->units[i] != NULL; i++)
        if (strcmp(pr->units[i], unit) == 0)
            return 1;
    return 0;
}

static int has_finding_for(const json_t *r, const char *id)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r, "findings"), i, f) if (strcmp(sget(f, "provision"), id) == 0) return 1;
    return 0;
}

/* The functional test case of result r for provision id. */
static json_t *functional_case(const char *id, const json_t *r)
{
    const char *unit = sget(r, "unit"), *iface = sget(r, "interface"), *state = sget(r, "state");
    json_t *findings = json_array();
    int fails = 0;
    size_t i;
    json_t *f;
    char first[REASON_MAX] = "";
    json_array_foreach(json_object_get(r, "findings"), i, f) {
        if (strcmp(sget(f, "provision"), id) != 0)
            continue;
        if (strcmp(sget(f, "severity"), "fail") == 0 && fails++ == 0)
            fit(first, sizeof first, "%s", sget(f, "what"));
        if (findings != NULL)
            json_array_append_new(findings, json_pack("{s:s, s:s}", "severity", sget(f, "severity"), "what",
                                                      sget(f, "what")));
    }
    const char *verdict;
    char reason[REASON_MAX + 64];
    if (fails > 0) {
        verdict = KEEL_VERDICT_FAIL;
        fit(reason, sizeof reason, fails > 1 ? "%s (and %d more)" : "%s", first, fails - 1);
    } else if (strcmp(state, "inconclusive") == 0) {
        verdict = KEEL_VERDICT_INCONCLUSIVE;
        fit(reason, sizeof reason, "%s", sget(r, "reason"));
    } else if (strcmp(state, "not_applicable") == 0) {
        verdict = KEEL_VERDICT_NA;
        fit(reason, sizeof reason, "%s", sget(r, "reason"));
    } else {
        verdict = KEEL_VERDICT_PASS;
        fit(reason, sizeof reason, "%s ran on %s: no failure", unit, iface);
    }
    char tid[160];
    fit(tid, sizeof tid, "%s/%s/%s", id, unit, iface);
    json_t *t = test_case(tid, "functional", unit, iface, verdict, reason);
    if (t == NULL || findings == NULL) {
        json_decref(t);
        json_decref(findings);
        return NULL;
    }
    json_object_set_new(t, "findings", findings);
    json_t *ev = json_deep_copy(json_object_get(r, "evidence"));
    if (ev == NULL || json_object_set_new(t, "evidence", ev) != 0) {
        json_decref(t);
        return NULL;
    }
    return t;
}

static int rank(const char *v)
{
    if (strcmp(v, KEEL_VERDICT_FAIL) == 0)
        return 3;
    if (strcmp(v, KEEL_VERDICT_INCONCLUSIVE) == 0)
        return 2;
    if (strcmp(v, KEEL_VERDICT_PASS) == 0)
        return 1;
    return 0;
}

/* One provision: its test cases and verdict. */
static json_t *judge_provision(const keel_assess_provision_t *pr, const json_t *results, const json_t *absent,
                               const json_t *ics, const json_t *ixit)
{
    const json_t *entry = ics != NULL ? json_object_get(json_object_get(ics, "provisions"), pr->id) : NULL;
    const char *support = entry != NULL ? sget(entry, "support") : NULL;
    const char *just = entry != NULL ? json_string_value(json_object_get(entry, "justification")) : NULL;
    json_t *tests = json_array();
    if (tests == NULL)
        return NULL;
    char cid[64], reason[REASON_MAX + 128], buf[REASON_MAX];
    fit(cid, sizeof cid, "%s/conceptual", pr->id);
    const char *cverdict;
    int skip_functional = 0;
    if (ics == NULL || support == NULL) {
        cverdict = KEEL_VERDICT_INCONCLUSIVE;
        fit(reason, sizeof reason, "%s",
            ics == NULL ? "no ICS and IXIT (discovery mode): the design cannot be judged"
                        : "the ICS states no support for this provision: the design cannot be judged");
    } else if (strcmp(support, "not_applicable") == 0) {
        cverdict = KEEL_VERDICT_NA;
        const char *feat = json_string_value(json_object_get(entry, "missing_feature"));
        fit(reason, sizeof reason, "the ICS says it does not apply%s%s%s: %s", feat ? " (no " : "",
                 feat ? feat : "", feat ? ")" : "", just ? just : "no justification given");
        skip_functional = 1;
    } else if (strcmp(support, "no") == 0) {
        cverdict = pr->status == 'M' ? KEEL_VERDICT_FAIL : KEEL_VERDICT_NA;
        fit(reason, sizeof reason, "%s: %s",
                 pr->status == 'M' ? "the ICS says the product does not meet this mandatory provision"
                                   : "the ICS says this recommendation is not implemented, justified",
                 just ? just : "no justification given");
        skip_functional = pr->status != 'M';
    } else {
        const char *why = ixit_contradiction(pr->id, ixit, buf, sizeof buf);
        cverdict = why != NULL ? KEEL_VERDICT_FAIL : KEEL_VERDICT_PASS;
        if (why != NULL)
            fit(reason, sizeof reason, "the ICS claims support, but %s", why);
        else
            fit(reason, sizeof reason, "the ICS states support (%s) and the IXIT describes it: %s",
                     just ? just : "no justification given", pr->check);
    }
    json_t *c = test_case(cid, "conceptual", NULL, NULL, cverdict, reason);
    if (c == NULL || json_array_append_new(tests, c) != 0) {
        json_decref(tests);
        return NULL;
    }
    /* Functional cases: every result of a listed unit, and any result that found
     * something about this provision. A FAIL is kept even where the ICS says the
     * provision does not apply: the device contradicts it. */
    int seen[KEEL_ASSESS_UNITS_MAX] = {0};
    size_t i;
    json_t *r;
    json_array_foreach(results, i, r) {
        const char *unit = sget(r, "unit");
        int listed = unit_listed(pr, unit);
        if (!listed && !has_finding_for(r, pr->id))
            continue;
        for (size_t k = 0; pr->units[k] != NULL; k++)
            if (strcmp(pr->units[k], unit) == 0)
                seen[k] = 1;
        json_t *t = functional_case(pr->id, r);
        if (t == NULL) {
            json_decref(tests);
            return NULL;
        }
        if (!listed && strcmp(sget(t, "verdict"), KEEL_VERDICT_FAIL) != 0) {
            json_decref(t); /* a warn or info elsewhere: not a test case of this provision */
            continue;
        }
        if (skip_functional && strcmp(sget(t, "verdict"), KEEL_VERDICT_FAIL) != 0) {
            json_decref(t);
            continue;
        }
        if (json_array_append_new(tests, t) != 0) {
            json_decref(tests);
            return NULL;
        }
    }
    for (size_t k = 0; !skip_functional && pr->units[k] != NULL; k++) {
        if (seen[k])
            continue;
        const json_t *a = json_object_get(absent, pr->units[k]);
        const char *v = a != NULL ? sget(a, "verdict") : KEEL_VERDICT_INCONCLUSIVE;
        const char *why = a != NULL ? sget(a, "reason") : "this test unit did not run";
        char tid[96];
        fit(tid, sizeof tid, "%s/%s", pr->id, pr->units[k]);
        json_t *t = test_case(tid, "functional", pr->units[k], NULL, v, why);
        if (t == NULL || json_array_append_new(tests, t) != 0) {
            json_decref(tests);
            return NULL;
        }
    }
    /* Combine: FAIL > INCONCLUSIVE > PASS > NOT_APPLICABLE; the reason is the
     * first test case's of the winning verdict. */
    const char *verdict = sget(json_array_get(tests, 0), "verdict");
    const char *vreason = sget(json_array_get(tests, 0), "reason");
    json_t *t;
    json_array_foreach(tests, i, t) {
        if (rank(sget(t, "verdict")) > rank(verdict)) {
            verdict = sget(t, "verdict");
            vreason = sget(t, "reason");
        }
    }
    char pverdict_reason[REASON_MAX + 160];
    fit(pverdict_reason, sizeof pverdict_reason, "%s", vreason);
    if (strcmp(verdict, KEEL_VERDICT_PASS) == 0 && json_array_size(tests) > 1) {
        /* A PASS with functional evidence says which tests carry it. */
        size_t n = 0, len;
        fit(pverdict_reason, sizeof pverdict_reason, "%s and ",
                 strcmp(sget(json_array_get(tests, 0), "verdict"), KEEL_VERDICT_PASS) == 0 ? "the ICS and IXIT"
                                                                                           : "nothing in the ICS");
        json_array_foreach(tests, i, t) {
            if (i == 0 || strcmp(sget(t, "verdict"), KEEL_VERDICT_PASS) != 0)
                continue;
            len = strlen(pverdict_reason);
            const char *iface = json_string_value(json_object_get(t, "interface"));
            fit(pverdict_reason + len, sizeof pverdict_reason - len, "%s%s%s%s", n++ ? ", " : "",
                     sget(t, "unit"), iface ? " on " : "", iface ? iface : "");
        }
        len = strlen(pverdict_reason);
        fit(pverdict_reason + len, sizeof pverdict_reason - len, " pass");
    }
    json_t *p = json_pack("{s:s, s:s, s:s%, s:s?, s:s?, s:s?, s:s, s:s, s:o}", "id", pr->id, "title", pr->title,
                          "status", &pr->status, (size_t)1, "feature", pr->feature, "support", support,
                          "justification", just, "verdict", verdict, "reason", pverdict_reason, "tests", tests);
    return p;
}

keel_status_t keel_assess_judge(json_t *report, const json_t *ics, const json_t *ixit, unsigned *mandatory_fail)
{
    if (report == NULL || !json_is_array(json_object_get(report, "observations")) || (ics == NULL) != (ixit == NULL))
        return keel_errorf(KEEL_ERR_ARG, "judge: a report with observations, and both ICS and IXIT or neither");
    json_t *results = unit_results(json_object_get(report, "observations"), ixit);
    json_t *provisions = json_array();
    if (results == NULL || provisions == NULL) {
        json_decref(results);
        json_decref(provisions);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the verdicts");
    }
    const json_t *absent = json_object_get(report, "absent_units");
    unsigned counts[4] = {0}, mandatory = 0, mfail = 0, minc = 0;
    static const char *const names[4] = {KEEL_VERDICT_NA, KEEL_VERDICT_PASS, KEEL_VERDICT_INCONCLUSIVE,
                                         KEEL_VERDICT_FAIL};
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        const keel_assess_provision_t *pr = keel_assess_catalogue_at(i);
        json_t *p = judge_provision(pr, results, absent, ics, ixit);
        if (p == NULL || json_array_append_new(provisions, p) != 0) {
            json_decref(results);
            json_decref(provisions);
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the verdicts");
        }
        int rk = rank(sget(p, "verdict"));
        counts[rk]++;
        if (pr->status == 'M') {
            mandatory++;
            mfail += rk == 3;
            minc += rk == 2;
        }
    }
    json_decref(results);
    json_t *summary = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b}", "provisions",
                                (int)keel_assess_catalogue_count(), names[1], counts[1], names[3], counts[3], names[0],
                                counts[0], names[2], counts[2], "mandatory", mandatory, "mandatory_fail", mfail,
                                "mandatory_inconclusive", minc, "conforming", mfail == 0);
    if (summary == NULL || json_object_set_new(report, "summary", summary) != 0 ||
        json_object_set_new(report, "provisions", provisions) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the verdicts");
    if (mandatory_fail != NULL)
        *mandatory_fail = mfail;
    return KEEL_OK;
}

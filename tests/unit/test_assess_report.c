/*
 * Unit tests for the report of keel assess run (keel/assess_report.h): a
 * synthetic report of all 78 provisions of the catalogue with every verdict,
 * whose banners, findings, justifications and evidence carry hostile text
 * (script and attribute injection, "]]>", "</script>", control bytes, a NUL,
 * Markdown metacharacters). Each rendering is checked for
 * its counts and for escaping: no markup from the report becomes markup in
 * report.html, junit.xml stays well-formed XML 1.0 (a small checker below),
 * each row of report.md's table keeps its cells. The check refuses each kind
 * of malformed report, naming the JSON path; the writer makes the directory
 * and four 0644 files, and a large report renders in well under a second.
 */
#include "testutil.h"

#include "keel/assess.h"
#include "keel/assess_report.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#define BANNER_SCRIPT "<script>alert(1)</script>"
#define BANNER_ATTR "\"><img src=x onerror=alert(2)>"
/* Everything Markdown, XML and HTML treat specially, on several lines. */
#define MIXED                                                                                                    \
    "pipe | tick ` star * under _ [link](x) <b>bold</b> & amp ~strike~ back\\slash\nline two\rcr ]]> </script> 'q'"

/* ---- a synthetic report -------------------------------------------------------------- */

static json_t *evidence(const char *sent, const char *observed, long long us)
{
    json_t *e = json_object();
    assert_non_null(e);
    assert_int_equal(json_object_set_new(e, "sent", json_string(sent)), 0);
    assert_int_equal(json_object_set_new(e, "observed", json_string(observed)), 0);
    assert_int_equal(json_object_set_new(e, "duration_us", json_integer(us)), 0);
    return e;
}

static json_t *finding(const char *severity, const char *what)
{
    json_t *f = json_pack("{s:s, s:s}", "severity", severity, "what", what);
    assert_non_null(f);
    return f;
}

static json_t *test_case(const char *pid, const char *name, const char *unit, const char *iface, const char *verdict,
                         const char *reason)
{
    char id[128];
    snprintf(id, sizeof id, "%s/%s", pid, name);
    json_t *t = json_pack("{s:s, s:s, s:o, s:o, s:s, s:s, s:[], s:[]}", "id", id, "kind",
                          unit == NULL ? "conceptual" : "functional", "unit",
                          unit == NULL ? json_null() : json_string(unit), "interface",
                          iface == NULL ? json_null() : json_string(iface), "verdict", verdict, "reason", reason,
                          "findings", "evidence");
    assert_non_null(t);
    return t;
}

static void add(json_t *t, const char *list, json_t *entry)
{
    assert_int_equal(json_array_append_new(json_object_get(t, list), entry), 0);
}

/* The verdict the synthetic report gives provision p. */
static const char *verdict_for(const keel_assess_provision_t *p, size_t i)
{
    if (strcmp(p->id, "5.1-1") == 0 || strcmp(p->id, "5.6-1") == 0 || strcmp(p->id, "5.2-2") == 0)
        return KEEL_VERDICT_FAIL;
    if (strcmp(p->id, "5.5-1") == 0 || strcmp(p->id, "5.3-5") == 0 || strcmp(p->id, "6-4") == 0)
        return KEEL_VERDICT_INCONCLUSIVE;
    if (p->feature != NULL && (strcmp(p->feature, "constrained") == 0 || strcmp(p->feature, "debug_interface") == 0 ||
                               strcmp(p->feature, "cloud") == 0))
        return KEEL_VERDICT_NA;
    if (p->status == 'R' && i % 5 == 0)
        return KEEL_VERDICT_NA;
    return KEEL_VERDICT_PASS;
}

/* Sets the summary from the provisions, as the engine does. */
static void resummarise(json_t *r)
{
    long long n[4] = {0}, mandatory = 0, mfail = 0, minc = 0;
    json_t *provs = json_object_get(r, "provisions");
    for (size_t i = 0; i < json_array_size(provs); i++) {
        const json_t *p = json_array_get(provs, i);
        const char *v = json_string_value(json_object_get(p, "verdict"));
        int k = strcmp(v, KEEL_VERDICT_PASS) == 0 ? 0 : strcmp(v, KEEL_VERDICT_FAIL) == 0 ? 1
                : strcmp(v, KEEL_VERDICT_NA) == 0 ? 2 : 3;
        n[k]++;
        if (json_string_value(json_object_get(p, "status"))[0] == 'M') {
            mandatory++;
            mfail += k == 1;
            minc += k == 3;
        }
    }
    json_t *s = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "provisions",
                          (json_int_t)json_array_size(provs), "PASS", (json_int_t)n[0], "FAIL", (json_int_t)n[1],
                          "NOT_APPLICABLE", (json_int_t)n[2], "INCONCLUSIVE", (json_int_t)n[3], "mandatory",
                          (json_int_t)mandatory, "mandatory_fail", (json_int_t)mfail, "mandatory_inconclusive",
                          (json_int_t)minc, "conforming", mfail == 0);
    assert_non_null(s);
    assert_int_equal(json_object_set_new(r, "summary", s), 0);
}

/* All 78 provisions; `extra` more evidence entries of 400 bytes on every
 * functional test (for the timing test). */
static json_t *synthetic(size_t extra)
{
    json_t *provs = json_array();
    assert_non_null(provs);
    static const char ctl_text[] = "nul\0ctl\x01\x1b[31m end\x7f\xef\xbf\xbe!";
    char big[401];
    memset(big, 'A', 400);
    big[400] = '\0';
    memcpy(big, "<x>&\"'", 6);
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        const keel_assess_provision_t *cat = keel_assess_catalogue_at(i);
        const char *v = verdict_for(cat, i);
        int na_by_ics = strcmp(v, KEEL_VERDICT_NA) == 0 && cat->feature != NULL;
        const char *support = na_by_ics ? "not_applicable" : strcmp(v, KEEL_VERDICT_NA) == 0 ? "no" : "yes";
        json_t *tests = json_array();
        assert_non_null(tests);
        json_t *concept = test_case(cat->id, "conceptual", NULL, NULL, strcmp(v, KEEL_VERDICT_FAIL) == 0 &&
                                    strcmp(cat->id, "5.1-1") == 0 ? KEEL_VERDICT_PASS : v,
                                    "the ICS and IXIT show a design that meets it");
        assert_int_equal(json_array_append_new(tests, concept), 0);
        for (size_t u = 0; !na_by_ics && cat->units[u] != NULL; u++) {
            char name[96];
            snprintf(name, sizeof name, "%s/tcp:8443", cat->units[u]);
            json_t *t = test_case(cat->id, name, cat->units[u], "tcp:8443", v, "probed over the network");
            add(t, "evidence", evidence("GET / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n",
                                        "HTTP/1.1 200 OK\\r\\nServer: " BANNER_SCRIPT "\\r\\n", 1234));
            add(t, "evidence", evidence("HEAD /" BANNER_ATTR, MIXED, 56));
            for (size_t k = 0; k < extra; k++)
                add(t, "evidence", evidence(big, big, 10));
            if (strcmp(v, KEEL_VERDICT_FAIL) == 0) {
                add(t, "findings", finding("fail", "banner " BANNER_SCRIPT " and " BANNER_ATTR));
                add(t, "findings", finding("warn", MIXED));
                /* A NUL, an escape sequence, DEL and U+FFFE, which a sloppy engine let through. */
                json_t *ctl = json_pack("{s:s, s:o}", "severity", "info", "what",
                                        json_stringn(ctl_text, sizeof ctl_text - 1));
                assert_non_null(ctl);
                add(t, "findings", ctl);
            }
            assert_int_equal(json_array_append_new(tests, t), 0);
        }
        json_t *p = json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:s, s:s, s:o}", "id", cat->id, "title", cat->title,
                              "status", cat->status == 'M' ? "M" : "R", "feature",
                              cat->feature ? json_string(cat->feature) : json_null(), "support", support,
                              "justification",
                              strcmp(support, "yes") == 0 ? json_null() : json_string("no such part " BANNER_ATTR),
                              "verdict", v, "reason",
                              strcmp(v, KEEL_VERDICT_FAIL) == 0 ? "found: " MIXED : "as declared",
                              "tests", tests);
        assert_non_null(p);
        assert_int_equal(json_array_append_new(provs, p), 0);
    }
    json_t *r = json_pack("{s:s, s:s, s:s, s:I, s:s, s:{s:s, s:s}, s:{s:s, s:s, s:s}, s:{}, s:o, s:[], s:[]}",
                          "format", "keel-assess-report-1", "generator", "keel 0.9.0", "started",
                          "2026-11-22T08:00:00Z", "duration_us", (json_int_t)41234567, "mode", "ics+ixit", "target",
                          "host", "thermo.lab", "address", "127.0.0.1", "product", "manufacturer", "Acme & <Sons>",
                          "model", "thermo-1", "firmware_version", "1.4.2", "summary", "provisions", provs,
                          "probes", "observations");
    assert_non_null(r);
    resummarise(r);
    return r;
}

static long long summary(const json_t *r, const char *key)
{
    return (long long)json_integer_value(json_object_get(json_object_get(r, "summary"), key));
}

static size_t occurrences(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Case-insensitive strstr (HTML tag names are). */
static const char *contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return hay;
    }
    return NULL;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

typedef keel_status_t (*render_fn)(const json_t *, keel_buf_t *);

static char *render(render_fn fn, const json_t *r)
{
    keel_buf_t b;
    keel_buf_init(&b, KEEL_ASSESS_REPORT_OUT_MAX);
    if (fn(r, &b) != KEEL_OK)
        fail_msg("render: %s", keel_error_message());
    char *s = strndup((const char *)b.data, b.len);
    assert_non_null(s);
    assert_int_equal(strlen(s), b.len); /* no NUL made it into a rendering */
    keel_buf_free(&b);
    return s;
}

/* No byte of the rendering is a control character other than tab and LF. */
static void assert_clean_bytes(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7F)
            fail_msg("raw byte 0x%02X at offset %td", *p, (const char *)p - s);
}

/* ---- check ------------------------------------------------------------------------------ */

/* Replaces (or with value NULL deletes) the member at "a/3/b": object keys
 * and array indexes. */
static void set_at(json_t *doc, const char *path, const char *value)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = doc;
    char *seg = buf, *slash;
    while ((slash = strchr(seg, '/')) != NULL) {
        *slash = '\0';
        cur = json_is_array(cur) ? json_array_get(cur, strtoul(seg, NULL, 10)) : json_object_get(cur, seg);
        assert_non_null(cur);
        seg = slash + 1;
    }
    json_t *v = NULL;
    if (value != NULL) {
        json_error_t e;
        v = json_loads(value, JSON_DECODE_ANY, &e);
        if (v == NULL)
            fail_msg("bad test value %s: %s", value, e.text);
    }
    if (json_is_array(cur)) {
        size_t i = strtoul(seg, NULL, 10);
        assert_int_equal(v ? json_array_set_new(cur, i, v) : json_array_remove(cur, i), 0);
    } else {
        assert_int_equal(v ? json_object_set_new(cur, seg, v) : json_object_del(cur, seg), 0);
    }
}

static void check_accepts(void **state)
{
    (void)state;
    json_t *r = synthetic(0);
    if (keel_assess_report_check(r) != KEEL_OK)
        fail_msg("%s", keel_error_message());
    assert_int_equal(summary(r, "provisions"), 78);
    assert_int_equal(summary(r, "FAIL"), 3);
    assert_int_equal(summary(r, "mandatory_fail"), 2);
    assert_true(summary(r, "PASS") > 0 && summary(r, "NOT_APPLICABLE") > 0 && summary(r, "INCONCLUSIVE") == 3);
    /* Discovery mode: no product, no ICS. */
    set_at(r, "product", "null");
    set_at(r, "mode", "\"discovery\"");
    set_at(r, "provisions/0/support", "null");
    set_at(r, "provisions/0/justification", "null");
    set_at(r, "provisions/1/tests/0/evidence", "[{\"sent\": \"x\"}]");
    assert_int_equal(keel_assess_report_check(r), KEEL_OK);
    assert_int_equal(keel_assess_report_check(NULL), KEEL_ERR_ARG);
    json_decref(r);
}

static void check_refuses(void **state)
{
    (void)state;
    static const struct {
        const char *path, *value, *want;
    } cases[] = {
        {"format", NULL, "$.format: missing"},
        {"format", "\"keel-assess-report-2\"", "$.format: must be \"keel-assess-report-1\""},
        {"mode", "\"quick\"", "$.mode: must be one of ics+ixit, discovery"},
        {"duration_us", "-1", "$.duration_us: must be an integer >= 0"},
        {"target", "[]", "$.target: must be an object"},
        {"target/host", "7", "$.target.host: must be a string"},
        {"product", "\"Acme\"", "$.product: must be an object or null"},
        {"provisions", "[]", "$.provisions: is empty"},
        {"provisions", "{}", "$.provisions: must be an array"},
        {"provisions/3", "42", "$.provisions[3]: must be an object"},
        {"provisions/3/verdict", "\"MAYBE\"", "$.provisions[3].verdict: must be one of PASS, FAIL"},
        {"provisions/3/verdict", NULL, "$.provisions[3].verdict: missing"},
        {"provisions/3/id", "\"5.99-1\"", "$.provisions[3].id: not a provision of the catalogue"},
        {"provisions/3/id", "\"4-1\"", "$.provisions[3].id: not a provision of the catalogue"},
        {"provisions/4/id", "\"5.1-1\"", "$.provisions[4].id: appears twice"},
        {"provisions/1/status", "\"R\"", "$.provisions[1].status: the catalogue says M"},
        {"provisions/1/support", "\"maybe\"", "$.provisions[1].support: must be one of yes, no, not_applicable"},
        {"provisions/1/title", "null", "$.provisions[1].title: must be a string, not null"},
        {"provisions/1/tests", "{}", "$.provisions[1].tests: must be an array"},
        {"provisions/1/tests/1/id", "\"5.1-2/http\"", "$.provisions[1].tests[1].id: must be the provision's id"},
        {"provisions/1/tests/1/id", "\"5.1-1/\"", "$.provisions[1].tests[1].id: must be the provision's id"},
        {"provisions/1/tests/1/kind", "\"manual\"", "$.provisions[1].tests[1].kind: must be one of conceptual"},
        {"provisions/1/tests/1/findings/0/severity", "\"fatal\"",
         "$.provisions[1].tests[1].findings[0].severity: must be one of fail, warn, info"},
        {"provisions/1/tests/1/findings/1", "\"text\"", "$.provisions[1].tests[1].findings[1]: must be an object"},
        {"provisions/1/tests/1/evidence/1/duration_us", "1.5",
         "$.provisions[1].tests[1].evidence[1].duration_us: must be an integer >= 0"},
        {"provisions/1/tests/1/evidence/0/sent", "[]", "$.provisions[1].tests[1].evidence[0].sent: must be a string"},
        {"summary/FAIL", "2", "$.summary.FAIL: 2, but the provisions count 3"},
        {"summary/provisions", "77", "$.summary.provisions: 77, but the provisions count 78"},
        {"summary/mandatory_fail", NULL, "$.summary.mandatory_fail: missing"},
        {"summary/conforming", "true", "$.summary.conforming: disagrees with mandatory_fail"},
        {"summary/conforming", "1", "$.summary.conforming: must be true or false"},
        {"probes", "{}", "$.probes: must be an array"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *r = synthetic(0);
        set_at(r, cases[i].path, cases[i].value);
        keel_status_t st = keel_assess_report_check(r);
        if (st != KEEL_ERR_FORMAT || strstr(keel_error_message(), cases[i].want) == NULL)
            fail_msg("case %zu (%s): status %d, \"%s\" lacks \"%s\"", i, cases[i].path, st, keel_error_message(),
                     cases[i].want);
        /* The renderers refuse it the same way and append nothing. */
        keel_buf_t b;
        keel_buf_init(&b, 1024);
        assert_int_equal(keel_assess_report_html(r, &b), KEEL_ERR_FORMAT);
        assert_int_equal(b.len, 0);
        keel_buf_free(&b);
        json_decref(r);
    }

    /* A chapter's provisions apart: 5.2-1 moved behind 5.3-1. */
    json_t *r = synthetic(0);
    json_t *provs = json_object_get(r, "provisions");
    size_t a = 0;
    while (strcmp(json_string_value(json_object_get(json_array_get(provs, a), "id")), "5.2-1") != 0)
        a++;
    json_t *moved = json_incref(json_array_get(provs, a));
    assert_int_equal(json_array_remove(provs, a), 0);
    assert_int_equal(json_array_insert_new(provs, a + 3, moved), 0);
    assert_int_equal(keel_assess_report_check(r), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "its chapter's provisions are not together"));
    json_decref(r);

    /* A string past the cap. */
    r = synthetic(0);
    char *huge = malloc(KEEL_ASSESS_REPORT_TEXT_MAX + 2);
    assert_non_null(huge);
    memset(huge, 'x', KEEL_ASSESS_REPORT_TEXT_MAX + 1);
    huge[KEEL_ASSESS_REPORT_TEXT_MAX + 1] = '\0';
    json_t *prov0 = json_array_get(json_object_get(r, "provisions"), 0);
    assert_int_equal(json_object_set_new(prov0, "reason", json_string(huge)), 0);
    assert_int_equal(keel_assess_report_check(r), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "$.provisions[0].reason: longer than"));
    free(huge);
    json_decref(r);

    /* A string that is not UTF-8 (jansson makes one only when told not to check). */
    r = synthetic(0);
    prov0 = json_array_get(json_object_get(r, "provisions"), 2);
    assert_int_equal(json_object_set_new(prov0, "justification", json_stringn_nocheck("bad \xff byte", 10)), 0);
    assert_int_equal(keel_assess_report_check(r), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "$.provisions[2].justification: not valid UTF-8"));
    json_decref(r);

    json_t *arr = json_array();
    assert_non_null(arr);
    assert_int_equal(keel_assess_report_check(arr), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "$: must be an object"));
    json_decref(arr);
}

/* ---- report.html ------------------------------------------------------------------------- */

/* The text between `<td data-testid="KEY">` and `<`. */
static long long testid_number(const char *html, const char *key)
{
    char needle[96];
    snprintf(needle, sizeof needle, "data-testid=\"%s\">", key);
    const char *p = strstr(html, needle);
    if (p == NULL)
        fail_msg("no %s in report.html", needle);
    return strtoll(p + strlen(needle), NULL, 10);
}

static void html_rendering(void **state)
{
    (void)state;
    json_t *r = synthetic(0);
    char *html = render(keel_assess_report_html, r);

    assert_true(starts_with(html, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"));
    /* No script, no markup from the report: every '<' of the hostile strings is an entity. */
    assert_null(contains_ci(html, "<script"));
    assert_null(contains_ci(html, "<img"));
    assert_null(contains_ci(html, "<b>"));
    assert_null(strstr(html, "onerror=alert(2)>"));
    assert_non_null(strstr(html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_non_null(strstr(html, "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"));
    assert_non_null(strstr(html, "Acme &amp; &lt;Sons&gt; thermo-1 1.4.2"));
    assert_non_null(strstr(html, "]]&gt; &lt;/script&gt; &#39;q&#39;"));
    /* Control bytes, the NUL and DEL are shown as text. */
    assert_non_null(strstr(html, "nul\\x00ctl\\x01\\x1B[31m end\\x7F"));
    assert_clean_bytes(html);

    /* The CSP allows exactly the one stylesheet, by its hash. */
    const char *style = strstr(html, "<style>");
    const char *style_end = strstr(html, "</style>");
    assert_non_null(style);
    assert_non_null(style_end);
    style += strlen("<style>");
    unsigned char md[32];
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(style, (size_t)(style_end - style), md, &mdlen, EVP_sha256(), NULL), 1);
    char b64[64], csp[160];
    assert_int_equal(EVP_EncodeBlock((unsigned char *)b64, md, 32), 44);
    snprintf(csp, sizeof csp, "content=\"default-src 'none'; style-src 'sha256-%s';", b64);
    if (strstr(html, csp) == NULL)
        fail_msg("no CSP with the stylesheet's hash %s", b64);
    assert_int_equal(occurrences(html, "<style"), 1);
    assert_null(strstr(html, "style=\""));
    assert_null(strstr(html, "http://"));
    assert_null(strstr(html, "https://"));

    /* One cell per provision, each linking to its section; the counts of the summary. */
    assert_int_equal(occurrences(html, "data-testid=\"cell\""), 78);
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        char href[64], anchor[64];
        snprintf(href, sizeof href, "href=\"#p-%s\"", keel_assess_catalogue_at(i)->id);
        snprintf(anchor, sizeof anchor, "id=\"p-%s\"", keel_assess_catalogue_at(i)->id);
        assert_int_equal(occurrences(html, href), 1);
        assert_int_equal(occurrences(html, anchor), 1);
    }
    assert_int_equal(testid_number(html, "count-PASS"), summary(r, "PASS"));
    assert_int_equal(testid_number(html, "count-FAIL"), 3);
    assert_int_equal(testid_number(html, "count-NOT_APPLICABLE"), summary(r, "NOT_APPLICABLE"));
    assert_int_equal(testid_number(html, "count-INCONCLUSIVE"), 3);
    assert_int_equal(testid_number(html, "mandatory-FAIL"), 2);
    assert_int_equal(testid_number(html, "count-provisions"), 78);
    assert_int_equal(testid_number(html, "count-mandatory"), 36);
    assert_non_null(strstr(html, "\" data-testid=\"overall\">NOT conforming: 2 mandatory provisions fail"));
    assert_int_equal(occurrences(html, "<section class=\"chapter\""), 15);
    assert_non_null(strstr(html, "<h2>5.13 Validate input data</h2>"));
    /* Every verdict is written out in the grid, not only coloured. */
    assert_non_null(strstr(html, "<span class=\"pid\">5.1-1</span>M FAIL</a>"));
    assert_int_equal(occurrences(html, "<details>"), occurrences(html, "</details>"));
    free(html);

    /* Conforming: no mandatory FAIL (one mandatory provision inconclusive). */
    json_t *provs = json_object_get(r, "provisions");
    for (size_t i = 0; i < json_array_size(provs); i++) {
        json_t *p = json_array_get(provs, i);
        const char *id = json_string_value(json_object_get(p, "id"));
        if (strcmp(id, "5.1-1") == 0 || strcmp(id, "5.6-1") == 0)
            assert_int_equal(json_object_set_new(p, "verdict", json_string("PASS")), 0);
    }
    resummarise(r);
    if (keel_assess_report_check(r) != KEEL_OK)
        fail_msg("%s", keel_error_message());
    html = render(keel_assess_report_html, r);
    assert_non_null(strstr(html, "class=\"overall ok\" data-testid=\"overall\">conforming: no mandatory provision "
                                 "fails (1 mandatory provision inconclusive)"));
    free(html);

    /* The cap of the caller's buffer holds. */
    keel_buf_t b;
    keel_buf_init(&b, 4096);
    assert_int_equal(keel_assess_report_html(r, &b), KEEL_ERR_TOO_LARGE);
    keel_buf_free(&b);
    json_decref(r);
}

/* ---- report.md ------------------------------------------------------------------------------- */

/* Cells of a Markdown table row: the '|' not escaped by a backslash, minus one. */
static int md_cells(const char *line, size_t n)
{
    int pipes = 0;
    for (size_t i = 0; i < n; i++) {
        if (line[i] == '\\') {
            i++;
            continue;
        }
        pipes += line[i] == '|';
    }
    return pipes - 1;
}

/* Every `c` in the line is escaped by a backslash (itself not escaped). */
static int md_all_escaped(const char *line, size_t n, char c)
{
    for (size_t i = 0; i < n; i++) {
        if (line[i] == '\\') {
            i++;
            continue;
        }
        if (line[i] == c)
            return 0;
    }
    return 1;
}

static void md_rendering(void **state)
{
    (void)state;
    json_t *r = synthetic(0);
    char *md = render(keel_assess_report_md, r);
    assert_clean_bytes(md);
    assert_true(starts_with(md, "# EN 303 645 assessment of Acme \\& \\<Sons\\> thermo-1 1.4.2\n"));
    assert_non_null(strstr(md, "**NOT conforming: 2 mandatory provisions fail.**"));
    assert_non_null(strstr(md, "| all | "));
    const char *failures = strstr(md, "\n## Failures\n");
    const char *table = strstr(md, "\n## All provisions\n");
    const char *details = strstr(md, "\n## Tests of the provisions that fail or are inconclusive\n");
    assert_true(failures != NULL && table != NULL && details != NULL && failures < table && table < details);
    /* Mandatory failures first. */
    const char *m1 = strstr(failures, "- **5.1-1** (mandatory)");
    const char *m2 = strstr(failures, "- **5.6-1** (mandatory)");
    const char *r1 = strstr(failures, "- **5.2-2** (recommended)");
    assert_true(m1 != NULL && m2 != NULL && r1 != NULL && m1 < m2 && m2 < r1 && r1 < table);

    /* The table: 78 rows of exactly 5 cells, whatever the reason holds. */
    size_t rows = 0;
    for (const char *line = table; line != NULL && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (line >= details)
            break;
        size_t n = strcspn(line, "\n");
        if (strncmp(line, "| 5.", 4) == 0 || strncmp(line, "| 6-", 4) == 0) {
            rows++;
            if (md_cells(line, n) != 5)
                fail_msg("row with %d cells: %.*s", md_cells(line, n), (int)n, line);
        }
    }
    assert_int_equal(rows, 78);

    /* Nowhere is a metacharacter left active. */
    for (const char *line = md; *line;) {
        size_t n = strcspn(line, "\n");
        for (const char *c = "`<>[]_|&~"; *c; c++) {
            if (*c == '|' && line[0] == '|')
                continue; /* table rows: checked above */
            if (!md_all_escaped(line, n, *c))
                fail_msg("unescaped '%c' in: %.*s", *c, (int)n, line);
        }
        line += n + (line[n] == '\n');
    }
    assert_non_null(strstr(md, "pipe \\| tick \\` star \\* under \\_ \\[link\\](x) \\<b\\>bold\\</b\\> \\& amp "
                               "\\~strike\\~ back\\\\slash\\\\nline two\\\\x0Dcr \\]\\]\\> \\</script\\> 'q'"));
    assert_non_null(strstr(md, "nul\\\\x00ctl\\\\x01\\\\x1B\\[31m end\\\\x7F"));
    /* The failing provision's tests, with findings and some evidence. */
    assert_non_null(strstr(md, "\n### 5.1-1 No universal default password\n\nFAIL (mandatory): found: "));
    assert_non_null(strstr(md, "- 5.1-1/http.default\\_creds/tcp:8443 (functional): **FAIL**: probed"));
    assert_non_null(strstr(md, "  - fail: banner \\<script\\>alert(1)\\</script\\>"));
    assert_non_null(strstr(md, "### 5.5-1 "));       /* inconclusive */
    assert_null(strstr(md, "### 5.1-2 "));          /* a pass has no details */
    free(md);
    json_decref(r);
}

/* ---- junit.xml --------------------------------------------------------------------------------- */

/* XML 1.0 well-formedness, in the small: a declaration, then one element
 * tree with balanced tags, double-quoted attributes without '<', only the
 * five predefined and numeric entities, no "]]>" in text, no character XML
 * 1.0 forbids (C0 controls but tab, LF, CR). Counts the elements by name. */
static const char *xml_check(const char *s, const char *count_name, int *counted)
{
    static char why[160];
    char stack[16][48];
    int depth = 0, roots = 0;
    const char *p = s;
    *counted = 0;
    if (strncmp(p, "<?xml ", 6) != 0 || (p = strstr(p, "?>")) == NULL)
        return "no XML declaration";
    p += 2;
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
            return "a control character";
        if (c == '&') {
            size_t n = strcspn(p, ";");
            if (p[n] != ';' || n > 8)
                return "a bare '&'";
            if (!(strncmp(p, "&amp;", 5) == 0 || strncmp(p, "&lt;", 4) == 0 || strncmp(p, "&gt;", 4) == 0 ||
                  strncmp(p, "&quot;", 6) == 0 || strncmp(p, "&apos;", 6) == 0 || p[1] == '#'))
                return "an unknown entity";
            continue;
        }
        if (strncmp(p, "]]>", 3) == 0)
            return "']]>' in text";
        if (c != '<')
            continue;
        if (p[1] == '!' || p[1] == '?')
            return "a comment, CDATA or processing instruction";
        int closing = p[1] == '/';
        p += 1 + closing;
        size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:");
        if (n == 0 || n >= sizeof stack[0])
            return "a bad element name";
        char name[48];
        memcpy(name, p, n);
        name[n] = '\0';
        p += n;
        if (closing) {
            if (*p != '>' || depth == 0 || strcmp(stack[depth - 1], name) != 0) {
                snprintf(why, sizeof why, "unbalanced </%s>", name);
                return why;
            }
            depth--;
            continue;
        }
        if (depth == 0 && roots++ > 0)
            return "two root elements";
        if (count_name != NULL && strcmp(name, count_name) == 0)
            (*counted)++;
        for (;;) {
            p += strspn(p, " \n\t");
            if (*p == '>' || (p[0] == '/' && p[1] == '>'))
                break;
            size_t an = strspn(p, "abcdefghijklmnopqrstuvwxyz_-:");
            if (an == 0 || p[an] != '=' || p[an + 1] != '"')
                return "a bad attribute";
            p += an + 2;
            for (; *p != '"'; p++) {
                if (*p == '\0' || *p == '<' || *p == '\n' || *p == '\t' || *p == '\r')
                    return "'<' or a raw white-space control in an attribute";
                if (*p == '&' && !(strncmp(p, "&amp;", 5) == 0 || strncmp(p, "&lt;", 4) == 0 ||
                                   strncmp(p, "&gt;", 4) == 0 || strncmp(p, "&quot;", 6) == 0 ||
                                   strncmp(p, "&apos;", 6) == 0 || p[1] == '#'))
                    return "a bare '&' in an attribute";
            }
            p++;
        }
        if (*p == '/') {
            p++;
        } else {
            if (depth == 16)
                return "nested too deeply";
            memcpy(stack[depth++], name, n + 1);
        }
    }
    return depth == 0 && roots == 1 ? NULL : "unclosed elements";
}

static void junit_rendering(void **state)
{
    (void)state;
    json_t *r = synthetic(0);
    char *x = render(keel_assess_report_junit, r);
    int n;
    const char *why = xml_check(x, "testcase", &n);
    if (why != NULL)
        fail_msg("junit.xml is not well-formed: %s", why);
    assert_int_equal(n, 78);
    assert_int_equal(xml_check(x, "testsuite", &n), NULL);
    assert_int_equal(n, 15);
    assert_int_equal(xml_check(x, "failure", &n), NULL);
    assert_int_equal(n, 3);
    assert_int_equal(xml_check(x, "error", &n), NULL);
    assert_int_equal(n, 3);
    assert_int_equal(xml_check(x, "skipped", &n), NULL);
    assert_int_equal(n, summary(r, "NOT_APPLICABLE"));
    char head[200];
    snprintf(head, sizeof head,
             "<testsuites name=\"keel assess\" tests=\"78\" failures=\"3\" errors=\"3\" skipped=\"%lld\" "
             "time=\"41.234\">",
             summary(r, "NOT_APPLICABLE"));
    assert_non_null(strstr(x, head));
    assert_non_null(strstr(x, "<testsuite name=\"EN 303 645 5.1\" tests=\"6\" failures=\"1\""));
    assert_non_null(strstr(x, "<testcase classname=\"EN303645.5.1\" name=\"5.1-1 No universal default password\""));
    assert_non_null(strstr(x, "<testcase classname=\"EN303645.6\" name=\"6-1 "));
    /* The failure lists the findings; the message (an attribute) keeps its line breaks as references. */
    assert_non_null(strstr(x, "<failure message=\"found: pipe | tick ` star * under _ [link](x) "
                              "&lt;b&gt;bold&lt;/b&gt; &amp; amp ~strike~ back\\slash&#10;line two&#13;cr ]]&gt; "
                              "&lt;/script&gt; &apos;q&apos;\" "
                              "type=\"FAIL\">mandatory provision\n"));
    assert_non_null(strstr(x, "  [fail] banner &lt;script&gt;alert(1)&lt;/script&gt; and &quot;&gt;&lt;img src=x"));
    /* The NUL, the controls and U+FFFE (not XML 1.0 characters) are dropped. */
    assert_non_null(strstr(x, "  [info] nulctl[31m end!\n"));
    assert_clean_bytes(strstr(x, "<testsuites"));
    free(x);
    json_decref(r);
}

/* ---- the four files ----------------------------------------------------------------------------- */

static void write_files(void **state)
{
    (void)state;
    json_t *r = synthetic(0);
    char *tmp = tmpdir_new();
    char dir[KEEL_PATH_MAX], path[KEEL_PATH_MAX];
    path_in(dir, tmp, "out");
    mode_t old = umask(077);
    assert_int_equal(keel_assess_report_write(r, dir), KEEL_OK);
    umask(old);
    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0755);
    const char *names[] = {"report.json", "report.md", "report.html", "junit.xml"};
    for (size_t i = 0; i < 4; i++) {
        path_in(path, dir, names[i]);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 07777, 0644);
        assert_true(sb.st_size > 1000);
    }
    path_in(path, dir, "report.json");
    json_error_t e;
    json_t *back = json_load_file(path, JSON_ALLOW_NUL, &e);
    if (back == NULL)
        fail_msg("report.json: %s", e.text);
    assert_true(json_equal(back, r));
    /* Keys in insertion order, indented. */
    keel_buf_t b;
    keel_buf_init(&b, KEEL_ASSESS_REPORT_OUT_MAX);
    assert_int_equal(keel_file_read(path, KEEL_ASSESS_REPORT_OUT_MAX, &b), KEEL_OK);
    assert_true(starts_with((const char *)b.data, "{\n  \"format\": \"keel-assess-report-1\",\n  \"generator\""));
    keel_buf_free(&b);
    json_decref(back);
    /* Again into the existing directory: replaced, nothing left over. */
    assert_int_equal(keel_assess_report_write(r, dir), KEEL_OK);

    /* A missing parent, a file in the way, a malformed report. */
    path_in(path, tmp, "no/such");
    assert_int_equal(keel_assess_report_write(r, path), KEEL_ERR_IO);
    assert_non_null(strstr(keel_error_message(), "its parent must exist"));
    path_in(path, dir, "junit.xml");
    assert_int_equal(keel_assess_report_write(r, path), KEEL_ERR_IO);
    assert_non_null(strstr(keel_error_message(), "is not a directory"));
    path_in(path, tmp, "bad");
    set_at(r, "summary/FAIL", "0");
    assert_int_equal(keel_assess_report_write(r, path), KEEL_ERR_FORMAT);
    assert_int_equal(keel_path_exists(path), 0);
    assert_int_equal(keel_assess_report_write(r, NULL), KEEL_ERR_ARG);
    tmpdir_free(tmp);
    json_decref(r);
}

/* 78 provisions with about 850 evidence entries render in well under a second. */
static void large_report_fast(void **state)
{
    (void)state;
    json_t *r = synthetic(20);
    size_t entries = 0;
    json_t *provs = json_object_get(r, "provisions");
    for (size_t i = 0; i < json_array_size(provs); i++) {
        json_t *tests = json_object_get(json_array_get(provs, i), "tests");
        for (size_t j = 0; j < json_array_size(tests); j++)
            entries += json_array_size(json_object_get(json_array_get(tests, j), "evidence"));
    }
    if (entries < 500)
        fail_msg("only %zu evidence entries", entries);
    double t0 = keel_now();
    char *html = render(keel_assess_report_html, r);
    char *md = render(keel_assess_report_md, r);
    char *x = render(keel_assess_report_junit, r);
    double took = keel_now() - t0;
    printf("# %zu evidence entries: html %zu, md %zu, junit %zu bytes in %.3f s\n", entries, strlen(html),
           strlen(md), strlen(x), took);
    /* Sanitizers slow this several times; a real report still fits in a second there. */
    assert_true(took < (getenv("KEEL_SANITIZED") ? 1.0 : 0.25));
    free(html);
    free(md);
    free(x);
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(check_accepts),  cmocka_unit_test(check_refuses),   cmocka_unit_test(html_rendering),
        cmocka_unit_test(md_rendering),   cmocka_unit_test(junit_rendering), cmocka_unit_test(write_files),
        cmocka_unit_test(large_report_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

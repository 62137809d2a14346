/* keel disclose (5.2-1): every security.txt field, the policy page and its
 * escaping, Expires in its three forms and its bounds, every refusal, and the
 * round trip: what is written passes keel assess's own publication checks
 * (src/assess/publication.c) with no finding at all. */
#include "testutil.h"

#include "keel/assess_update.h"
#include "keel/disclose.h"

#include <sys/stat.h>
#include <time.h>

/* 2026-06-01T00:00:00Z */
#define NOW ((time_t)1780272000)

static keel_disclose_opts_t full(void)
{
    keel_disclose_opts_t o = {
        .contacts = {"mailto:security@example.com", "https://example.com/report", "tel:+49-30-1234567"},
        .n_contacts = 3,
        .policy_url = "https://example.com/disclosure-policy.html",
        .expires = "+180",
        .encryption = "https://example.com/pgp-key.txt",
        .acknowledgments = "https://example.com/hall-of-fame",
        .preferred_languages = "en,de ,  fr-CA",
        .canonical = "https://example.com/.well-known/security.txt",
        .hiring = "https://example.com/jobs",
        .vendor = "Acme",
        .product = "Thermo-1",
        .ack_days = 3,
        .update_days = 7,
        .fix_days = 60,
        .now = NOW,
    };
    return o;
}

static keel_disclose_opts_t minimal(void)
{
    keel_disclose_opts_t o = {.contacts = {"mailto:psirt@example.org"},
                              .n_contacts = 1,
                              .policy_url = "https://example.org/security",
                              .expires = "2027-01-01",
                              .now = NOW};
    return o;
}

/* Renders with fn into a fresh string (the caller frees it), or fails. */
static char *render(keel_status_t (*fn)(const keel_disclose_opts_t *, keel_buf_t *), const keel_disclose_opts_t *o)
{
    keel_buf_t b;
    keel_buf_init(&b, KEEL_DISCLOSE_DOC_MAX);
    keel_status_t st = fn(o, &b);
    if (st != KEEL_OK)
        fail_msg("render: %s", keel_error_message());
    char *s = strdup(b.len > 0 ? (const char *)b.data : "");
    keel_buf_free(&b);
    assert_non_null(s);
    return s;
}

static void test_security_txt_fields(void **state)
{
    (void)state;
    keel_disclose_opts_t o = full();
    char *t = render(keel_disclose_security_txt, &o);
    /* 2026-06-01 + 180 days */
    assert_string_equal(t, "# How to report a security vulnerability in Thermo-1 by Acme.\n"
                           "# The policy (scope, timeline, safe harbour) is at the Policy URL below.\n"
                           "# Written by keel disclose; renew it before it expires.\n"
                           "\n"
                           "Contact: mailto:security@example.com\n"
                           "Contact: https://example.com/report\n"
                           "Contact: tel:+49-30-1234567\n"
                           "Expires: 2026-11-28T00:00:00Z\n"
                           "Encryption: https://example.com/pgp-key.txt\n"
                           "Acknowledgments: https://example.com/hall-of-fame\n"
                           "Preferred-Languages: en, de, fr-CA\n"
                           "Canonical: https://example.com/.well-known/security.txt\n"
                           "Policy: https://example.com/disclosure-policy.html\n"
                           "Hiring: https://example.com/jobs\n");
    free(t);

    o = minimal();
    t = render(keel_disclose_security_txt, &o);
    assert_string_equal(t, "# How to report a security vulnerability in our products.\n"
                           "# The policy (scope, timeline, safe harbour) is at the Policy URL below.\n"
                           "# Written by keel disclose; renew it before it expires.\n"
                           "\n"
                           "Contact: mailto:psirt@example.org\n"
                           "Expires: 2027-01-01T00:00:00Z\n"
                           "Policy: https://example.org/security\n");
    assert_null(strchr(t, '\r'));
    free(t);

    o.encryption = "openpgp4fpr:5F2DE5521C63A801AB59CCB603D49DE44B29100F";
    t = render(keel_disclose_security_txt, &o);
    assert_non_null(strstr(t, "\nEncryption: openpgp4fpr:5F2DE5521C63A801AB59CCB603D49DE44B29100F\n"));
    free(t);
}

static void test_policy_page(void **state)
{
    (void)state;
    keel_disclose_opts_t o = full();
    char *h = render(keel_disclose_policy_html, &o);
    assert_non_null(strstr(h, "<title>Vulnerability disclosure policy: Thermo-1 by Acme</title>"));
    assert_non_null(strstr(h, "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
                              "style-src 'sha256-"));
    assert_non_null(strstr(h, "<a data-testid=\"contact\" href=\"mailto:security@example.com\">security@example.com</a>"));
    assert_non_null(strstr(h, "<a data-testid=\"contact\" href=\"tel:+49-30-1234567\">+49-30-1234567</a>"));
    assert_non_null(strstr(h, "within <strong>3 working days</strong>"));
    assert_non_null(strstr(h, "at least every <strong>7 days</strong>"));
    assert_non_null(strstr(h, "within <strong>60 days</strong>"));
    assert_non_null(strstr(h, "data-testid=\"safe-harbour\""));
    assert_non_null(strstr(h, "This policy covers Thermo-1 by Acme: the device"));
    assert_non_null(strstr(h, "We read reports in these languages: en, de, fr-CA."));
    assert_non_null(strstr(h, "valid until 2026-11-28."));
    /* nothing that runs or loads */
    assert_null(strstr(h, "<script"));
    assert_null(strstr(h, "<img"));
    assert_null(strstr(h, "<link"));
    assert_null(strstr(h, "src="));
    assert_null(strstr(h, "style=\""));
    free(h);

    /* the defaults, singular units */
    o = minimal();
    o.ack_days = 1;
    o.update_days = 1;
    h = render(keel_disclose_policy_html, &o);
    assert_non_null(strstr(h, "<title>Vulnerability disclosure policy</title>"));
    assert_non_null(strstr(h, "within <strong>1 working day</strong>."));
    assert_non_null(strstr(h, "at least every <strong>1 day</strong> "));
    assert_non_null(strstr(h, "within <strong>90 days</strong>"));
    assert_non_null(strstr(h, "If you have found a security vulnerability in our products,"));
    assert_null(strstr(h, "data-testid=\"acknowledgments\""));
    assert_null(strstr(h, "data-testid=\"encryption\""));
    free(h);

    o = minimal();
    char *m = render(keel_disclose_policy_md, &o);
    assert_true(strncmp(m, "# Vulnerability disclosure policy\n\n", 35) == 0);
    assert_non_null(strstr(m, "- <mailto:psirt@example.org>\n"));
    assert_non_null(strstr(m, "1. We acknowledge your report within **5 working days**."));
    assert_non_null(strstr(m, "2. We tell you where things stand at least every **14 days**"));
    assert_non_null(strstr(m, "## Safe harbour\n"));
    assert_null(strstr(m, "<p>"));
    free(m);
}

static void test_escaping(void **state)
{
    (void)state;
    keel_disclose_opts_t o = full();
    o.vendor = "<script>alert(1)</script>";
    o.product = "T&1 \"x\" 'y' *z* [a](b)";
    char *h = render(keel_disclose_policy_html, &o);
    assert_null(strstr(h, "<script"));
    assert_null(strstr(h, "\"x\""));
    assert_non_null(strstr(h, "<h1 data-testid=\"title\">Vulnerability disclosure policy: T&amp;1 &quot;x&quot; "
                              "&#39;y&#39; *z* [a](b) by &lt;script&gt;alert(1)&lt;/script&gt;</h1>"));
    free(h);
    char *m = render(keel_disclose_policy_md, &o);
    assert_non_null(strstr(m, "# Vulnerability disclosure policy: T\\&1 \"x\" 'y' \\*z\\* \\[a\\](b) by "
                              "\\<script\\>alert(1)\\</script\\>\n"));
    free(m);
    /* a URI's '&' is escaped in the attribute and the text */
    o = full();
    o.contacts[1] = "https://example.com/report?a=1&b=2";
    h = render(keel_disclose_policy_html, &o);
    assert_non_null(strstr(h, "href=\"https://example.com/report?a=1&amp;b=2\">https://example.com/report?a=1&amp;b=2</a>"));
    free(h);
    /* UTF-8 names are kept */
    o.vendor = "Müller GmbH";
    h = render(keel_disclose_policy_html, &o);
    assert_non_null(strstr(h, "by Müller GmbH"));
    free(h);
}

/* keel_disclose_check's Expires for `when`, or -1 when refused. */
static long long expires_of(const char *when)
{
    keel_disclose_opts_t o = minimal();
    o.expires = when;
    long long t = 0;
    return keel_disclose_check(&o, &t) == KEEL_OK ? t : -1;
}

static void test_dates(void **state)
{
    (void)state;
    assert_int_equal(expires_of("+1"), (long long)NOW + 86400);
    assert_int_equal(expires_of("+366"), (long long)NOW + 366 * 86400LL);
    assert_int_equal(expires_of("+367"), -1);
    assert_int_equal(expires_of("+0"), -1);
    assert_int_equal(expires_of("+"), -1);
    assert_int_equal(expires_of("+1000"), -1);
    assert_int_equal(expires_of("+-5"), -1);
    assert_int_equal(expires_of("2026-06-02"), (long long)NOW + 86400);
    assert_int_equal(expires_of("2027-06-01"), (long long)NOW + 365 * 86400LL);
    assert_int_equal(expires_of("2027-06-02T00:00:00Z"), (long long)NOW + 366 * 86400LL);
    assert_int_equal(expires_of("2027-06-02T00:00:01Z"), -1);
    assert_int_equal(expires_of("2026-07-01T12:00:00+02:00"), (long long)NOW + 30 * 86400LL + 10 * 3600);
    assert_int_equal(expires_of("2026-07-01t12:00:00.123-01:30z"), -1);
    assert_int_equal(expires_of("2026-07-01t12:00:00.123-01:30"), (long long)NOW + 30 * 86400LL + 13 * 3600 + 1800);
    assert_int_equal(expires_of("2026-07-01T12:00:00.5Z"), (long long)NOW + 30 * 86400LL + 12 * 3600);
    assert_int_equal(expires_of("2026-06-01"), -1);  /* now: not in the future */
    assert_int_equal(expires_of("2025-12-31"), -1);  /* past */
    assert_int_equal(expires_of("2027-02-29"), -1);  /* not a date */
    assert_int_equal(expires_of("2026-13-01"), -1);
    assert_int_equal(expires_of("2026-07-01T24:00:00Z"), -1);
    assert_int_equal(expires_of("2026-07-01T12:00:00"), -1); /* no zone */
    assert_int_equal(expires_of("2026-07-01T12:00:00.Z"), -1);
    assert_int_equal(expires_of("2026-7-1"), -1);
    assert_int_equal(expires_of("tomorrow"), -1);
    assert_int_equal(expires_of(""), -1);
    keel_disclose_opts_t o = minimal();
    o.expires = "2020-01-01";
    long long t = 0;
    assert_int_equal(keel_disclose_check(&o, &t), KEEL_ERR_ARG);
    assert_non_null(strstr(keel_error_message(), "not in the future"));
    o.expires = "+400";
    assert_int_equal(keel_disclose_check(&o, &t), KEEL_ERR_ARG);
    assert_non_null(strstr(keel_error_message(), "more than 366 days ahead"));
}

/* keel_disclose_check refuses o, with `words` in its message. */
static void refused(const keel_disclose_opts_t *o, const char *words)
{
    keel_buf_t b;
    keel_buf_init(&b, KEEL_DISCLOSE_DOC_MAX);
    assert_int_equal(keel_disclose_check(o, NULL), KEEL_ERR_ARG);
    if (strstr(keel_error_message(), words) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", keel_error_message(), words);
    assert_int_equal(keel_disclose_security_txt(o, &b), KEEL_ERR_ARG);
    assert_int_equal(keel_disclose_policy_html(o, &b), KEEL_ERR_ARG);
    assert_int_equal(keel_disclose_policy_md(o, &b), KEEL_ERR_ARG);
    assert_int_equal(b.len, 0);
    keel_buf_free(&b);
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *contact, *words;
    } contacts[] = {
        {"http://example.com/report", "must be https://"},
        {"ftp://example.com/", "must be a mailto:, https:// or tel: URI"},
        {"example.com", "must be a mailto:, https:// or tel: URI"},
        {"mailto:security", "not mailto:NAME@DOMAIN"},
        {"mailto:@example.com", "not mailto:NAME@DOMAIN"},
        {"mailto:a@", "not mailto:NAME@DOMAIN"},
        {"mailto:a@b@c", "not mailto:NAME@DOMAIN"},
        {"tel:030123", "not a global tel: number"},
        {"tel:+49 30", "holds a space"},
        {"tel:+4x", "not a global tel: number"},
        {"https://", "with a host"},
        {"https:///path", "with a host"},
        {"https://user:pw@example.com/", "no user info"},
        {"https://example.com/a b", "holds a space"},
        {"https://example.com/\"onmouseover=\"x", "holds a space"},
        {"https://example.com/'x", "holds a space"},
        {"https://example.com/<x>", "holds a space"},
        {"https://example.com/\xc3\xbc", "holds a space"},
        {"https://example.com/\nExpires: 2099-01-01T00:00:00Z", "holds a space"},
        {"", "must be 1.."},
    };
    for (size_t i = 0; i < sizeof contacts / sizeof contacts[0]; i++) {
        keel_disclose_opts_t o = minimal();
        o.contacts[0] = contacts[i].contact;
        refused(&o, contacts[i].words);
    }
    keel_disclose_opts_t o = minimal();
    o.n_contacts = 0;
    refused(&o, "--contact is required");
    o = minimal();
    o.contacts[1] = "MAILTO:psirt@example.org";
    o.n_contacts = 2;
    refused(&o, "given twice");
    o = minimal();
    o.n_contacts = KEEL_DISCLOSE_CONTACTS_MAX + 1;
    refused(&o, "at most 8");
    char longuri[KEEL_DISCLOSE_URI_MAX + 8];
    memset(longuri, 'a', sizeof longuri - 1);
    longuri[sizeof longuri - 1] = '\0';
    memcpy(longuri, "https://x/", 10);
    o = minimal();
    o.contacts[0] = longuri;
    refused(&o, "must be 1..511 characters");

    o = minimal();
    o.policy_url = NULL;
    refused(&o, "--policy-url is required");
    o.policy_url = "http://example.org/security";
    refused(&o, "--policy-url 'http://example.org/security' must be https://");
    o = minimal();
    o.expires = NULL;
    refused(&o, "--expires is required");
    o = minimal();
    o.canonical = "https://example.org/";
    refused(&o, "must be the URL of the security.txt itself");
    o.canonical = "http://example.org/.well-known/security.txt";
    refused(&o, "--canonical");
    o = minimal();
    o.encryption = "openpgp4fpr:1234";
    refused(&o, "40 or 64 hex digits");
    o.encryption = "openpgp4fpr:5F2DE5521C63A801AB59CCB603D49DE44B29100G";
    refused(&o, "not hex");
    o.encryption = "ldap://example.org/key";
    refused(&o, "--encryption");
    o = minimal();
    o.acknowledgments = "http://example.org/thanks";
    refused(&o, "--acknowledgments");
    o = minimal();
    o.hiring = "mailto:jobs@example.org";
    refused(&o, "--hiring");

    static const char *const langs[] = {"", "en,,de", "englishlanguage", "e n", "en;de", "-en", "en-", "1en",
                                        "en_US"};
    for (size_t i = 0; i < sizeof langs / sizeof langs[0]; i++) {
        o = minimal();
        o.preferred_languages = langs[i];
        refused(&o, "--preferred-languages");
    }

    static const char *const names[] = {"", "Acme\nContact: mailto:evil@example.com", "Acme\r", "Acme\t",
                                        "\xff\xfe", "Acme \xe2\x80\xae\x65vil", "Acme\xc2\x85", " Acme", "Acme ",
                                        "\xed\xa0\x80", "\xc0\xaf"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        o = minimal();
        o.vendor = names[i];
        refused(&o, "--vendor");
        o = minimal();
        o.product = names[i];
        refused(&o, "--product");
    }
    char longname[KEEL_DISCLOSE_NAME_MAX + 1];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    o = minimal();
    o.vendor = longname;
    refused(&o, "1..127 bytes");

    o = minimal();
    o.ack_days = 31;
    refused(&o, "--ack-days must be 1..30");
    o = minimal();
    o.update_days = 91;
    refused(&o, "--update-days must be 1..90");
    o = minimal();
    o.fix_days = 6;
    refused(&o, "--fix-days must be 7..365");
    o.fix_days = 366;
    refused(&o, "--fix-days");
    assert_int_equal(keel_disclose_check(NULL, NULL), KEEL_ERR_ARG);
}

/* The number of findings of `severity` in a publication observation. */
static size_t findings_of(json_t *doc, const char *severity)
{
    size_t n = 0, i;
    json_t *f;
    json_array_foreach(json_object_get(doc, "findings"), i, f) {
        if (strcmp(json_string_value(json_object_get(f, "severity")), severity) == 0) {
            fprintf(stderr, "  %s: %s\n", severity, json_string_value(json_object_get(f, "what")));
            n++;
        }
    }
    return n;
}

static void round_trip(const keel_disclose_opts_t *o)
{
    char *dir = tmpdir_new();
    char out[KEEL_PATH_MAX], path[KEEL_PATH_MAX];
    path_in(out, dir, "site");
    assert_int_equal(keel_disclose_write(o, out), KEEL_OK);
    static const char *const names[] = {"security.txt", "disclosure-policy.html", "disclosure-policy.md"};
    for (size_t i = 0; i < 3; i++) {
        struct stat sb;
        path_in(path, out, names[i]);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0644);
        assert_true(sb.st_size > 100);
    }
    struct stat sb;
    assert_int_equal(stat(out, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0755);

    /* keel assess judges the files as the lab would, on the same day */
    keel_publication_opts_t p = {.security_txt = "security.txt", .policy = "disclosure-policy.html",
                                 .base_dir = out, .now = o->now};
    json_t *doc = NULL;
    assert_int_equal(keel_assess_publication(&p, &doc), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(doc, "units"),
                                                                          "publication"),
                                                          "state")),
                        "ran");
    assert_int_equal(findings_of(doc, "fail"), 0);
    assert_int_equal(findings_of(doc, "warn"), 0);
    assert_int_equal(findings_of(doc, "info"), 0);
    json_t *st = json_object_get(doc, "security_txt");
    assert_int_equal(json_array_size(json_object_get(st, "contacts")), o->n_contacts);
    assert_int_equal(json_integer_value(json_object_get(st, "problems")), 0);
    json_t *pol = json_object_get(doc, "policy");
    assert_true(json_is_true(json_object_get(pol, "names_contact")));
    assert_true(json_is_true(json_object_get(pol, "names_timeline")));
    json_decref(doc);

    /* the Markdown twin is a policy the checks accept too */
    p = (keel_publication_opts_t){.policy = "disclosure-policy.md", .base_dir = out, .now = o->now};
    assert_int_equal(keel_assess_publication(&p, &doc), KEEL_OK);
    assert_int_equal(findings_of(doc, "fail") + findings_of(doc, "warn"), 0);
    json_decref(doc);

    /* written again: replaced, no temporary file left */
    assert_int_equal(keel_disclose_write(o, out), KEEL_OK);
    char cmd[KEEL_PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 3", out);
    assert_int_equal(system(cmd), 0);
    tmpdir_free(dir);
}

static void test_round_trip(void **state)
{
    (void)state;
    keel_disclose_opts_t o = full();
    round_trip(&o);
    o = minimal();
    round_trip(&o);
    o = full();
    o.vendor = "<script>alert(1)</script>";
    o.expires = "+366";
    round_trip(&o);
    /* the days of the week that fall anywhere: every Expires the check allows */
    o = minimal();
    o.now = NOW + 12345;
    o.expires = "+1";
    round_trip(&o);
}

/* A refused option writes nothing, not even the directory; a parent that is
 * not there is an I/O error. */
static void test_nothing_written(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char out[KEEL_PATH_MAX];
    path_in(out, dir, "site");
    keel_disclose_opts_t o = minimal();
    o.expires = "2020-01-01";
    assert_int_equal(keel_disclose_write(&o, out), KEEL_ERR_ARG);
    assert_false(keel_path_exists(out));
    o = minimal();
    assert_int_equal(keel_disclose_write(&o, NULL), KEEL_ERR_ARG);
    path_in(out, dir, "no/such/site");
    assert_int_equal(keel_disclose_write(&o, out), KEEL_ERR_IO);
    assert_non_null(strstr(keel_error_message(), "its parent must exist"));
    /* the largest documents the caps allow still fit */
    static char uris[KEEL_DISCLOSE_CONTACTS_MAX][KEEL_DISCLOSE_URI_MAX];
    o = full();
    for (size_t i = 0; i < KEEL_DISCLOSE_CONTACTS_MAX; i++) {
        memset(uris[i], 'a', KEEL_DISCLOSE_URI_MAX - 1);
        uris[i][KEEL_DISCLOSE_URI_MAX - 1] = '\0';
        snprintf(uris[i], 32, "https://h%zu.example/", i);
        uris[i][strlen(uris[i])] = 'a';
        o.contacts[i] = uris[i];
    }
    o.n_contacts = KEEL_DISCLOSE_CONTACTS_MAX;
    char name[KEEL_DISCLOSE_NAME_MAX];
    memset(name, '<', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    o.vendor = o.product = name;
    path_in(out, dir, "big");
    assert_int_equal(keel_disclose_write(&o, out), KEEL_OK);
    tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_security_txt_fields), cmocka_unit_test(test_policy_page),
        cmocka_unit_test(test_escaping),            cmocka_unit_test(test_dates),
        cmocka_unit_test(test_refusals),            cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_nothing_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

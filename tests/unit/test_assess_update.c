/* assess update probe and publication checks: the security.txt parser (RFC
 * 9116), support-date matching and the policy checks on files; URL fetches
 * and uploads against a small HTTP server this test runs on 127.0.0.1 (a
 * thread): one that accepts every bundle, one that refuses every bundle. */
#include "assess_testutil.h"

#include "keel/assess_update.h"

#include <arpa/inet.h>
#include <signal.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>

/* 2026-06-01T00:00:00Z: every date below is judged as of this moment. */
#define NOW ((time_t)1780272000)

/* ---- the test server ------------------------------------------------------------ */

typedef enum { SRV_ACCEPT_ALL, SRV_REFUSE_ALL, SRV_HOSTILE_ANSWER } srv_mode_t;

typedef struct {
    int fd;
    unsigned port;
    atomic_int stop;
    pthread_t th;
    srv_mode_t mode;
    int need_token;          /* update routes answer 401 without "Bearer t0k3n" */
    uint64_t received;       /* the keel-api upload so far */
    atomic_int stages, empty_uploads, pieces, posts, bad_offsets;
} srv_t;

static const char good_txt[] = "Contact: mailto:security@example.com\n"
                               "Expires: 2026-12-31T23:59:59Z\n";

static void reply(int c, int status, const char *extra, const char *ctype, const char *body)
{
    char head[1024];
    size_t bl = strlen(body);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nContent-Type: %s\r\nConnection: close\r\n%s\r\n",
                     status, bl, ctype, extra);
    assert_true(n > 0 && (size_t)n < sizeof head);
    (void)!write(c, head, (size_t)n);
    (void)!write(c, body, bl);
}

static void serve(srv_t *s, int c)
{
    static char buf[1 << 18];
    size_t len = 0;
    char *end = NULL;
    while (len < sizeof buf - 1 && end == NULL) {
        ssize_t n = read(c, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            return;
        len += (size_t)n;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (end == NULL)
        return;
    size_t head = (size_t)(end - buf) + 4;
    size_t clen = 0;
    const char *cl = strstr(buf, "\r\nContent-Length:");
    if (cl != NULL && cl < end)
        clen = strtoul(cl + 17, NULL, 10);
    uint64_t body = len - head;
    while (body < clen) {
        ssize_t n = read(c, buf + head, clen - body < sizeof buf - head ? clen - body : sizeof buf - head);
        if (n <= 0)
            return;
        body += (uint64_t)n;
    }
    char method[16], path[512];
    if (sscanf(buf, "%15s %511s", method, path) != 2)
        return;
    const char *tok = strstr(buf, "\r\nAuthorization: Bearer t0k3n\r\n");
    int authed = !s->need_token || (tok != NULL && tok < end);

    if (strcmp(path, "/.well-known/security.txt") == 0)
        reply(c, 200, "", "text/plain; charset=utf-8", good_txt);
    else if (strcmp(path, "/missing") == 0)
        reply(c, 404, "", "text/plain", "no");
    else if (strcmp(path, "/broken") == 0)
        reply(c, 500, "", "text/plain", "oops");
    else if (strcmp(path, "/badbytes") == 0) {
        char loc[96];
        snprintf(loc, sizeof loc, "Location: http://127.0.0.1:%u/sec\xff.txt\r\n", s->port);
        reply(c, 302, loc, "text/plain", "");
    } else if (strcmp(path, "/loop") == 0)
        reply(c, 302, "Location: /loop\r\n", "text/plain", "");
    else if (strncmp(path, "/hop", 4) == 0 && path[4] >= '1' && path[4] <= '9' && path[5] == '\0') {
        char loc[64];
        if (path[4] == '1')
            snprintf(loc, sizeof loc, "Location: /.well-known/security.txt\r\n");
        else
            snprintf(loc, sizeof loc, "Location: http://127.0.0.1:%u/hop%c\r\n", s->port, path[4] - 1);
        reply(c, 301, loc, "text/plain", "");
    } else if (strcmp(path, "/support.html") == 0)
        reply(c, 200, "", "text/html", "<html><body><p>Security updates until&nbsp;<b>31 December 2031</b>.</p>");
    else if (strcmp(path, "/api/v1/session") == 0 && strcmp(method, "POST") == 0)
        reply(c, 200, "", "application/json", "{\"token\": \"t0k3n\", \"csrf\": \"c5rf\"}");
    else if (!authed)
        reply(c, 401, "", "application/json", "{\"error\": \"unauthorized\"}");
    else if (strcmp(path, "/api/v1/update") == 0)
        reply(c, 200, "", "application/json", "{\"state\": \"idle\", \"running\": {\"version\": \"1.0.0\"}}");
    else if (strncmp(path, "/api/v1/update/bundle?offset=", 29) == 0 && strcmp(method, "PUT") == 0) {
        uint64_t off = strtoull(path + 29, NULL, 10);
        atomic_fetch_add(&s->pieces, 1);
        if (off == 0) {
            s->received = 0;
            if (clen == 0)
                atomic_fetch_add(&s->empty_uploads, 1);
        }
        if (off != s->received) {
            atomic_fetch_add(&s->bad_offsets, 1);
            reply(c, 409, "", "application/json", "{\"error\": \"conflict\"}");
            return;
        }
        s->received += clen;
        reply(c, 200, "", "application/json", "{}");
    } else if (strcmp(path, "/api/v1/update/stage") == 0) {
        atomic_fetch_add(&s->stages, 1);
        if (s->mode == SRV_HOSTILE_ANSWER) {
            /* a long error of two-byte characters (cut through one at 128 bytes), a message
             * that clears the lab's terminal */
            char ans[2048];
            size_t n = (size_t)snprintf(ans, sizeof ans, "{\"error\": \"");
            for (int i = 0; i < 300; i++)
                n += (size_t)snprintf(ans + n, sizeof ans - n, "\xc3\xa9");
            snprintf(ans + n, sizeof ans - n, "\", \"message\": \"\\u001b[2J\\u001b]0;owned\\u0007 x\\u00e9y\"}");
            reply(c, 500, "", "application/json", ans);
        } else if (s->mode == SRV_ACCEPT_ALL && s->received > 0)
            reply(c, 201, "", "application/json", "{\"staged\": {}}");
        else
            reply(c, 422, "", "application/json", "{\"error\": \"bundle_rejected\", \"message\": \"no\"}");
    } else if (strcmp(path, "/upload") == 0 && strcmp(method, "POST") == 0) {
        atomic_fetch_add(&s->posts, 1);
        if (s->mode == SRV_ACCEPT_ALL)
            reply(c, 200, "", "text/plain", "installed later");
        else
            reply(c, 400, "", "text/plain", "bad signature");
    } else
        reply(c, 404, "", "text/plain", "not found");
}

static void *srv_main(void *arg)
{
    srv_t *s = arg;
    while (!atomic_load(&s->stop)) {
        int c = loopback_accept(s->fd, 2);
        if (c < 0)
            continue;
        serve(s, c);
        close(c);
    }
    return NULL;
}

static srv_t *srv_start(srv_mode_t mode, int need_token)
{
    srv_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->mode = mode;
    s->need_token = need_token;
    s->fd = loopback_listen(SOCK_STREAM, 16, &s->port);
    assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
    return s;
}

static void srv_stop(srv_t *s)
{
    atomic_store(&s->stop, 1);
    assert_int_equal(pthread_join(s->th, NULL), 0);
    close(s->fd);
    free(s);
}

/* ---- document helpers ------------------------------------------------------------- */

static int count_findings(json_t *doc, const char *provision, const char *severity, const char *text)
{
    int n = 0;
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(doc, "findings"), i, f) {
        const char *p = json_string_value(json_object_get(f, "provision"));
        const char *s = json_string_value(json_object_get(f, "severity"));
        const char *w = json_string_value(json_object_get(f, "what"));
        if ((provision == NULL || strcmp(p, provision) == 0) && strcmp(s, severity) == 0 &&
            (text == NULL || strstr(w, text) != NULL))
            n++;
    }
    return n;
}

static const char *unit_state(json_t *doc, const char *unit)
{
    const char *s = json_string_value(json_object_get(json_object_get(json_object_get(doc, "units"), unit), "state"));
    return s != NULL ? s : "";
}

static void dump_on_fail(json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(1));
    print_message("%s\n", s ? s : "?");
    free(s);
}

/* Runs the publication checks on a security.txt held in `text`. */
static json_t *stxt(const char *dir, const char *text, size_t len)
{
    char path[KEEL_PATH_MAX];
    path_in(path, dir, "security.txt");
    assert_int_equal(keel_file_write_atomic(path, text, len, 0644), KEEL_OK);
    keel_publication_opts_t o = {.security_txt = "security.txt", .base_dir = dir, .now = NOW};
    json_t *doc = NULL;
    assert_int_equal(keel_assess_publication(&o, &doc), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(doc, "format")), "keel-assess-publication-1");
    return doc;
}

static json_t *stxt_s(const char *dir, const char *text)
{
    return stxt(dir, text, strlen(text));
}

/* Expects exactly `fails` fail findings whose text holds `text` (and no other fail). */
static void expect_fails(json_t *doc, int fails, const char *text)
{
    if (count_findings(doc, NULL, "fail", NULL) != fails ||
        (text != NULL && count_findings(doc, "5.2-1", "fail", text) < 1))
        dump_on_fail(doc);
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), fails);
    if (text != NULL)
        assert_true(count_findings(doc, "5.2-1", "fail", text) >= 1);
    json_decref(doc);
}

/* ---- security.txt -------------------------------------------------------------------- */

static void test_security_txt(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    json_t *doc = stxt_s(dir, "# our contacts\n"
                              "Contact: mailto:security@example.com\n"
                              "Contact: https://example.com/security\n"
                              "Contact: tel:+1-201-555-0123\n"
                              "Expires: 2026-12-31T23:59:59.5Z\n"
                              "Encryption: openpgp4fpr:5f2de5521c63a801ab59ccb603d49de44b29100f\n"
                              "Policy: https://example.com/disclosure\n"
                              "Preferred-Languages: en, de-AT\n"
                              "\n");
    assert_string_equal(unit_state(doc, "publication"), "ran");
    assert_int_equal(json_array_size(json_object_get(json_object_get(doc, "security_txt"), "contacts")), 3);
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "security_txt"), "expires")),
                        "2026-12-31T23:59:59Z");
    expect_fails(doc, 0, NULL);

    expect_fails(stxt_s(dir, "Expires: 2026-12-31T23:59:59Z\nPolicy: https://example.com/p\n"), 1, "no valid Contact");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\n"), 1, "no Expires");
    doc = stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\nexpires: 2026-11-30T00:00:00Z\n");
    assert_int_equal(count_findings(doc, "5.2-1", "fail", "second Expires"), 1);
    expect_fails(doc, 2, "appears 2 times");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-01-01T00:00:00Z\n"), 1, "expired on");
    /* the offset counts: 01:30+02:00 is 23:30 UTC the day before NOW; 00:30-01:00 is 01:30 UTC on it */
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-06-01T01:30:00+02:00\n"), 1,
                 "expired on 2026-05-31T23:30:00Z");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-06-01T00:30:00-01:00\n"), 0, NULL);
    static const char *const bad_dates[] = {"2026-02-30T00:00:00Z", "2026-12-31 23:59:59Z", "2026-12-31T24:00:00Z",
                                            "2026-12-31T23:59:59",  "2026-12-31T23:59:59+1:00", "31.12.2026",
                                            "2026-12-31T23:59:59.Z", "2026-13-01T00:00:00Z"};
    for (size_t i = 0; i < sizeof bad_dates / sizeof bad_dates[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, "Contact: mailto:a@example.com\nExpires: %s\n", bad_dates[i]);
        doc = stxt_s(dir, text);
        if (count_findings(doc, "5.2-1", "fail", "not an RFC 3339") != 1)
            print_message("date %s\n", bad_dates[i]);
        assert_int_equal(count_findings(doc, "5.2-1", "fail", "not an RFC 3339"), 1);
        json_decref(doc);
    }
    doc = stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2028-01-01T00:00:00Z\n");
    assert_int_equal(count_findings(doc, "5.2-1", "warn", "more than a year"), 1);
    expect_fails(doc, 0, NULL);

    /* the grammar of a field */
    expect_fails(stxt_s(dir, "Contact : mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\n"), 2,
                 "is not a field");
    expect_fails(stxt_s(dir, "Contact: security@example.com\nExpires: 2026-12-31T23:59:59Z\n"), 2, "not a URI");
    expect_fails(stxt_s(dir, "Contact: http://example.com/sec\nExpires: 2026-12-31T23:59:59Z\n"), 2,
                 "does not begin with https://");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\n"
                             "Policy: http://x.example/p\n"),
                 1, "does not begin with https://");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\nContact:\n"), 1,
                 "has no value");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\njust words\n"), 1,
                 "is not a field");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\n"
                             "Preferred-Languages: en\nPreferred-Languages: de\n"),
                 1, "second Preferred-Languages");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\n"
                             "Preferred-Languages: en,,de\n"),
                 1, "language tags");

    /* an unknown field is kept as info */
    doc = stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\nX-Bounty: yes please\n");
    assert_int_equal(count_findings(doc, "5.2-1", "info", "unknown field \"X-Bounty\""), 1);
    assert_int_equal(json_array_size(json_object_get(json_object_get(doc, "security_txt"), "fields")), 3);
    expect_fails(doc, 0, NULL);

    /* CRLF, a byte order mark; a lone CR is not a line end */
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\r\nExpires: 2026-12-31T23:59:59Z\r\n"), 0, NULL);
    doc = stxt_s(dir, "\xEF\xBB\xBF" "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\n");
    assert_int_equal(count_findings(doc, "5.2-1", "info", "byte order mark"), 1);
    expect_fails(doc, 0, NULL);
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\rExpires: 2026-12-31T23:59:59Z\n"), 3, "CR that does not");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\nX: \xC3\x28\n"), 1,
                 "not UTF-8");
    /* found by fuzz_securitytxt: a Canonical that is not UTF-8 made the whole check fail with "out of
     * memory" (no JSON string of it); an empty file was parsed from a NULL pointer (UBSan) */
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\n"
                             "Canonical: https://example.com/\xFF/security.txt\n"),
                 1, "not UTF-8");
    expect_fails(stxt(dir, "", 0), 2, "no valid Contact");

    /* an oversized line, an oversized file */
    char *big = malloc(70 * 1024);
    assert_non_null(big);
    int n = snprintf(big, 200, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\n# ");
    memset(big + n, 'x', 3000);
    memcpy(big + n + 3000, "\n", 2);
    expect_fails(stxt_s(dir, big), 1, "longer than 2048 bytes");
    memset(big + n, 'x', 70 * 1024 - (size_t)n - 2);
    memcpy(big + 70 * 1024 - 2, "\n", 2);
    expect_fails(stxt_s(dir, big), 1, "over 64 KiB");
    free(big);

    /* an OpenPGP cleartext signature frame */
    static const char sig[] = "-----BEGIN PGP SIGNATURE-----\n\niHUEARYKAB0WIQQ=\n=abcd\n-----END PGP SIGNATURE-----\n";
    char text[1024];
    snprintf(text, sizeof text,
             "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nContact: mailto:a@example.com\n"
             "- # a dash-escaped comment\nExpires: 2026-12-31T23:59:59Z\n%s",
             sig);
    doc = stxt_s(dir, text);
    assert_true(json_is_true(json_object_get(json_object_get(doc, "security_txt"), "signed")));
    assert_int_equal(count_findings(doc, "5.2-1", "info", "OpenPGP signed"), 1);
    expect_fails(doc, 0, NULL);
    expect_fails(stxt_s(dir, "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nContact: mailto:a@example.com\n"
                             "Expires: 2026-12-31T23:59:59Z\n"),
                 1, "not closed");
    expect_fails(stxt_s(dir, "Contact: mailto:a@example.com\nExpires: 2026-12-31T23:59:59Z\n"
                             "-----BEGIN PGP SIGNATURE-----\nxx\n-----END PGP SIGNATURE-----\n"),
                 3, "armor line outside");
    snprintf(text, sizeof text,
             "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nContact: mailto:a@example.com\n"
             "Expires: 2026-12-31T23:59:59Z\n%sContact: mailto:b@example.com\n",
             sig);
    expect_fails(stxt_s(dir, text), 1, "after the OpenPGP signature");
    tmpdir_free(dir);
}

/* ---- policy and support period ---------------------------------------------------------- */

static json_t *pub_files(const char *dir, const char *policy, const char *support, const char *end)
{
    char path[KEEL_PATH_MAX];
    keel_publication_opts_t o = {.base_dir = dir, .now = NOW, .support_end = end};
    if (policy != NULL) {
        path_in(path, dir, "policy.html");
        text_file_write(path, policy);
        o.policy = "policy.html";
    }
    if (support != NULL) {
        path_in(path, dir, "support.html");
        text_file_write(path, support);
        o.support_at = "support.html";
    }
    json_t *doc = NULL;
    assert_int_equal(keel_assess_publication(&o, &doc), KEEL_OK);
    return doc;
}

static void test_policy_and_support(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    json_t *doc = pub_files(dir, "<h1>Disclosure</h1><p>Write to security@example.com. We acknowledge reports "
                                 "within 5 business days and send status updates every 30 days.</p>",
                            NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(doc, "findings")), 0);
    assert_string_equal(unit_state(doc, "publication"), "ran");
    json_decref(doc);
    doc = pub_files(dir, "<html><body>  </body></html>", NULL, NULL);
    assert_int_equal(count_findings(doc, "5.2-1", "fail", "holds no text"), 1);
    json_decref(doc);
    doc = pub_files(dir, "We take security seriously.", NULL, NULL);
    assert_int_equal(count_findings(doc, "5.2-1", "warn", "names no contact"), 1);
    assert_int_equal(count_findings(doc, "5.2-1", "warn", "no timeline"), 1);
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    json_decref(doc);

    static const char *const found[] = {"Supported until 2031-12-31.", "until 31 December 2031",
                                        "until December 31, 2031",     "until 31st Dec. 2031",
                                        "<td>December&nbsp;2031</td>", "End of support: 31. december 2031"};
    for (size_t i = 0; i < sizeof found / sizeof found[0]; i++) {
        doc = pub_files(dir, NULL, found[i], "2031-12-31");
        if (count_findings(doc, NULL, "fail", NULL) != 0) {
            print_message("page: %s\n", found[i]);
            dump_on_fail(doc);
        }
        assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
        assert_true(json_is_string(json_object_get(json_object_get(doc, "support_page"), "found")));
        json_decref(doc);
    }
    static const char *const missing[] = {"until 15 December 2031", "until 2031-12-30", "serial 12031-12-310",
                                          "until November 2031", "December 31, 2030", "no date at all"};
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
        doc = pub_files(dir, NULL, missing[i], "2031-12-31");
        if (count_findings(doc, "5.3-13", "fail", "is not stated") != 1)
            print_message("page: %s\n", missing[i]);
        assert_int_equal(count_findings(doc, "5.3-13", "fail", "is not stated"), 1);
        json_decref(doc);
    }
    doc = pub_files(dir, NULL, "Support ended on 1 January 2020.", "2020-01-01");
    assert_int_equal(count_findings(doc, "5.3-13", "warn", "support has ended"), 1);
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    json_decref(doc);

    /* an end date with nowhere published; nothing given; a file that is not there */
    keel_publication_opts_t o = {.support_end = "2031-12-31", .now = NOW};
    assert_int_equal(keel_assess_publication(&o, &doc), KEEL_OK);
    assert_int_equal(count_findings(doc, "5.3-13", "fail", "no place"), 1);
    json_decref(doc);
    o = (keel_publication_opts_t){.now = NOW};
    assert_int_equal(keel_assess_publication(&o, &doc), KEEL_OK);
    assert_string_equal(unit_state(doc, "publication"), "inconclusive");
    json_decref(doc);
    o = (keel_publication_opts_t){.policy = "no-such-file.txt", .base_dir = dir, .now = NOW};
    assert_int_equal(keel_assess_publication(&o, &doc), KEEL_OK);
    assert_string_equal(unit_state(doc, "publication"), "inconclusive");
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    json_decref(doc);
    o = (keel_publication_opts_t){.policy = "ftp://example.com/policy", .now = NOW};
    assert_int_equal(keel_assess_publication(&o, &doc), KEEL_OK);
    assert_string_equal(unit_state(doc, "publication"), "inconclusive");
    json_decref(doc);
    o = (keel_publication_opts_t){.support_end = "2031-02-30"};
    assert_int_equal(keel_assess_publication(&o, &doc), KEEL_ERR_ARG);
    tmpdir_free(dir);
}

/* ---- URL fetches ------------------------------------------------------------------------ */

static json_t *pub_url(const char *stxt_url, const char *support_url)
{
    keel_publication_opts_t o = {.security_txt = stxt_url, .support_at = support_url,
                                 .support_end = support_url ? "2031-12-31" : NULL, .now = NOW, .timeout_ms = 2000};
    json_t *doc = NULL;
    assert_int_equal(keel_assess_publication(&o, &doc), KEEL_OK);
    return doc;
}

static void test_fetch(void **state)
{
    (void)state;
    srv_t *s = srv_start(SRV_ACCEPT_ALL, 0);
    char u1[128], u2[128];
    snprintf(u1, sizeof u1, "http://127.0.0.1:%u/.well-known/security.txt", s->port);
    snprintf(u2, sizeof u2, "http://127.0.0.1:%u/support.html", s->port);
    json_t *doc = pub_url(u1, u2);
    if (count_findings(doc, NULL, "fail", NULL) != 0)
        dump_on_fail(doc);
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    assert_int_equal(count_findings(doc, "5.2-1", "warn", "plain HTTP"), 1);
    assert_string_equal(unit_state(doc, "publication"), "ran");
    json_decref(doc);

    snprintf(u1, sizeof u1, "http://127.0.0.1:%u/missing", s->port);
    snprintf(u2, sizeof u2, "http://127.0.0.1:%u/broken", s->port);
    doc = pub_url(u1, u2);
    assert_int_equal(count_findings(doc, "5.2-1", "fail", "HTTP 404"), 1);
    assert_int_equal(count_findings(doc, "5.3-13", "fail", "HTTP 500"), 1);
    assert_string_equal(unit_state(doc, "publication"), "ran");
    json_decref(doc);

    /* three redirects are followed, a fourth is not; a loop ends there too */
    snprintf(u1, sizeof u1, "http://127.0.0.1:%u/hop3", s->port);
    doc = pub_url(u1, NULL);
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "security_txt"), "redirects")), 3);
    json_decref(doc);
    snprintf(u1, sizeof u1, "http://127.0.0.1:%u/hop4", s->port);
    doc = pub_url(u1, NULL);
    assert_int_equal(count_findings(doc, "5.2-1", "fail", "more than 3 redirects"), 1);
    json_decref(doc);
    snprintf(u1, sizeof u1, "http://127.0.0.1:%u/loop", s->port);
    doc = pub_url(u1, NULL);
    assert_int_equal(count_findings(doc, "5.2-1", "fail", "more than 3 redirects"), 1);
    json_decref(doc);

    /* nothing listens: inconclusive, not a fail */
    snprintf(u1, sizeof u1, "http://127.0.0.1:%u/.well-known/security.txt", loopback_free_port(SOCK_STREAM));
    doc = pub_url(u1, NULL);
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    assert_string_equal(unit_state(doc, "publication"), "inconclusive");
    json_decref(doc);
    srv_stop(s);
}

/* ---- uploads ------------------------------------------------------------------------------ */

static void random_file(const char *path, size_t n)
{
    uint8_t *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(rand() & 0xff);
    assert_int_equal(keel_file_write_atomic(path, b, n, 0644), KEEL_OK);
    free(b);
}

/* A file with a consistent keel-bundle-1 header (the rest is noise): the
 * probe aims its tampering at manifest, signature and payload. */
static void keel_like_file(const char *path)
{
    const uint32_t m = 300, s = 72, c = 400;
    const uint64_t p = 100000;
    size_t n = 64 + m + s + c + p;
    uint8_t *b = calloc(1, n);
    assert_non_null(b);
    memcpy(b, "KEELBNDL", 8);
    b[9] = 1;
    b[11] = 1;
    for (int i = 0; i < 4; i++) {
        b[12 + i] = (uint8_t)(m >> (24 - 8 * i));
        b[16 + i] = (uint8_t)(s >> (24 - 8 * i));
        b[20 + i] = (uint8_t)(c >> (24 - 8 * i));
    }
    for (int i = 0; i < 8; i++)
        b[24 + i] = (uint8_t)(p >> (56 - 8 * i));
    for (size_t i = 64; i < n; i++)
        b[i] = (uint8_t)(i * 7);
    assert_int_equal(keel_file_write_atomic(path, b, n, 0644), KEEL_OK);
    free(b);
}

static const char *result_of(json_t *doc, size_t i)
{
    return json_string_value(json_object_get(json_array_get(json_object_get(doc, "bundles"), i), "result"));
}

static void test_upload(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char good[KEEL_PATH_MAX], down[KEEL_PATH_MAX], wrong[KEEL_PATH_MAX], kb[KEEL_PATH_MAX];
    path_in(good, dir, "good.bin");
    path_in(down, dir, "down.bin");
    path_in(wrong, dir, "wrong.bin");
    path_in(kb, dir, "good.kb");
    random_file(good, 150 * 1024 + 17); /* three pieces */
    random_file(down, 1000);
    random_file(wrong, 70000);
    keel_like_file(kb);
    static const char secret[] = "lab-Secret-Never-Stored-9";

    /* a device that accepts everything, behind a JSON login */
    srv_t *s = srv_start(SRV_ACCEPT_ALL, 1);
    keel_update_probe_opts_t o = {.http = {.host = "127.0.0.1", .port = s->port, .timeout_ms = 3000},
                                  .login = {.kind = KEEL_HTTP_LOGIN_JSON, .path = "/api/v1/session"},
                                  .user = "admin", .password = secret, .kind = KEEL_UPLOAD_KEEL_API_V1,
                                  .good = good, .downgraded = down, .wrong_signer = wrong};
    json_t *doc = NULL;
    assert_int_equal(keel_assess_probe_update(&o, &doc), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(doc, "format")), "keel-assess-update-1");
    char *text = json_dumps(doc, 0);
    assert_non_null(text);
    assert_null(strstr(text, secret));
    assert_null(strstr(text, "t0k3n"));
    free(text);
    /* good, two tampered variants made from it, downgraded, wrong signer */
    assert_int_equal(json_array_size(json_object_get(doc, "bundles")), 5);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(result_of(doc, i), "accepted");
    assert_int_equal(count_findings(doc, "5.3-9", "fail", "tampered"), 2);
    assert_int_equal(count_findings(doc, "5.3-2", "fail", "tampered"), 2);
    assert_int_equal(count_findings(doc, "5.3-2", "fail", "downgraded"), 1);
    assert_int_equal(count_findings(doc, "5.3-10", "fail", NULL), 1);
    assert_int_equal(count_findings(doc, "5.3-7", "fail", NULL), 1);
    assert_string_equal(unit_state(doc, "update"), "ran");
    assert_true(json_is_true(json_object_get(doc, "version_same")));
    assert_true(json_is_true(json_object_get(json_array_get(json_object_get(doc, "bundles"), 0), "dropped")));
    /* every accepted upload dropped again; the pieces in order */
    assert_int_equal(atomic_load(&s->empty_uploads), 5);
    assert_int_equal(atomic_load(&s->bad_offsets), 0);
    json_decref(doc);

    /* a keel bundle: manifest and signature tampering are fails, payload tampering is left to the installer */
    o.good = kb;
    o.downgraded = o.wrong_signer = NULL;
    assert_int_equal(keel_assess_probe_update(&o, &doc), KEEL_OK);
    assert_int_equal(json_array_size(json_object_get(doc, "bundles")), 4);
    assert_int_equal(count_findings(doc, "5.3-9", "fail", "manifest byte"), 1);
    assert_int_equal(count_findings(doc, "5.3-9", "fail", "signature byte"), 1);
    assert_int_equal(count_findings(doc, "5.3-9", "fail", "payload"), 0);
    assert_int_equal(count_findings(doc, "5.3-9", "info", "payload byte"), 1);
    assert_string_equal(unit_state(doc, "update"), "inconclusive"); /* no downgraded, no wrong signer */
    json_decref(doc);

    /* the same device with a single-request upload */
    o = (keel_update_probe_opts_t){.http = {.host = "127.0.0.1", .port = s->port, .timeout_ms = 3000},
                                   .login = {.kind = KEEL_HTTP_LOGIN_JSON, .path = "/api/v1/session"},
                                   .user = "admin", .password = secret, .kind = KEEL_UPLOAD_HTTP, .method = "POST",
                                   .path = "/upload", .good = good, .tampered = down, .downgraded = down,
                                   .wrong_signer = wrong};
    assert_int_equal(keel_assess_probe_update(&o, &doc), KEEL_OK);
    assert_int_equal(json_array_size(json_object_get(doc, "bundles")), 4);
    assert_int_equal(count_findings(doc, "5.3-9", "fail", NULL), 1);
    assert_int_equal(count_findings(doc, "5.3-10", "fail", NULL), 1);
    assert_int_equal(atomic_load(&s->posts), 4);
    json_decref(doc);

    /* without the login the uploads get 401: errors, inconclusive, never a fail */
    o.login.kind = KEEL_HTTP_LOGIN_NONE;
    assert_int_equal(keel_assess_probe_update(&o, &doc), KEEL_OK);
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    assert_string_equal(unit_state(doc, "update"), "inconclusive");
    json_decref(doc);
    srv_stop(s);

    /* a device that refuses everything: no fail, but the refusals prove nothing */
    s = srv_start(SRV_REFUSE_ALL, 0);
    o = (keel_update_probe_opts_t){.http = {.host = "127.0.0.1", .port = s->port, .timeout_ms = 3000},
                                   .kind = KEEL_UPLOAD_KEEL_API_V1, .good = good, .downgraded = down,
                                   .wrong_signer = wrong};
    assert_int_equal(keel_assess_probe_update(&o, &doc), KEEL_OK);
    assert_string_equal(result_of(doc, 0), "refused");
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    assert_string_equal(unit_state(doc, "update"), "inconclusive");
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(json_object_get(doc, "units"), "update"),
                                                             "reason")),
                           "good bundle"));
    json_decref(doc);

    /* no bundles at all; a bundle that is not there; a device that is not there */
    o.good = o.downgraded = o.wrong_signer = NULL;
    assert_int_equal(keel_assess_probe_update(&o, &doc), KEEL_OK);
    assert_string_equal(unit_state(doc, "update"), "inconclusive");
    json_decref(doc);
    o.good = "/no/such/bundle.kb";
    assert_int_equal(keel_assess_probe_update(&o, &doc), KEEL_ERR_NOT_FOUND);
    srv_stop(s);
    o.good = good;
    o.http.port = loopback_free_port(SOCK_STREAM);
    assert_int_equal(keel_assess_probe_update(&o, &doc), KEEL_OK);
    assert_string_equal(unit_state(doc, "update"), "inconclusive");
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    json_decref(doc);
    o.kind = KEEL_UPLOAD_HTTP;
    assert_int_equal(keel_assess_probe_update(&o, &doc), KEEL_ERR_ARG);
    tmpdir_free(dir);
}


/* What a hostile device answers never costs the document nor carries control
 * characters: a long UTF-8 "error", a "message" of terminal escapes; a
 * redirect to a URL of raw bytes that are not UTF-8. */
static void test_hostile_answers(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char good[KEEL_PATH_MAX], down[KEEL_PATH_MAX];
    path_in(good, dir, "good.bin");
    path_in(down, dir, "down.bin");
    random_file(good, 1000);
    random_file(down, 1000);
    srv_t *s = srv_start(SRV_HOSTILE_ANSWER, 0);
    keel_update_probe_opts_t o = {.http = {.host = "127.0.0.1", .port = s->port, .timeout_ms = 3000},
                                  .kind = KEEL_UPLOAD_KEEL_API_V1, .good = good, .downgraded = down};
    json_t *doc = NULL;
    keel_status_t st = keel_assess_probe_update(&o, &doc);
    if (st != KEEL_OK)
        fail_msg("update probe: %s", keel_error_message());
    char *text = json_dumps(doc, 0);
    assert_non_null(text);
    assert_null(strstr(text, "\\u001b"));
    assert_null(strstr(text, "\\u0007"));
    free(text);
    assert_string_equal(unit_state(doc, "update"), "inconclusive");
    assert_int_equal(count_findings(doc, NULL, "fail", NULL), 0);
    json_decref(doc);

    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%u/badbytes", s->port);
    doc = pub_url(u, NULL);
    assert_int_equal(count_findings(doc, "5.2-1", "fail", "%FF"), 1);
    json_decref(doc);
    srv_stop(s);
    tmpdir_free(dir);
}

int main(void)
{
    /* the in-test servers write to clients that may have gone: EPIPE, not death */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_security_txt),
        cmocka_unit_test(test_policy_and_support),
        cmocka_unit_test(test_fetch),
        cmocka_unit_test(test_upload),
        cmocka_unit_test(test_hostile_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

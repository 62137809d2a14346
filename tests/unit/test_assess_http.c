/* assess http probe: the test units http.* against a tiny HTTP server this
 * test runs on 127.0.0.1 (a thread, one connection at a time, Connection:
 * close), playing a careless device, a sound one, and hostile ones. Each flaw
 * must FAIL, the sound server must not, and no hostile answer may hold the
 * probe past its budget. */
#define _GNU_SOURCE
#include "assess_testutil.h"

#include "keel/assess_http.h"
#include "keel/assess_probe.h"

#include <arpa/inet.h>
#include <signal.h>
#include <curl/curl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#define LAB_PW "Lab-Pass-4711-Quokka"
#define HEAD_MAX 16384
#define BODY_MAX 65536

typedef enum {
    SRV_BAD,          /* every flaw at once */
    SRV_GOOD,         /* a sound device with an SPA fallback and a throttle */
    SRV_PW_NOOP,      /* sound, but the password change answers 204 and changes nothing */
    SRV_PW_ONE_WAY,   /* sound, but only the first password change works */
    SRV_FRAGILE,      /* sound until a request it cannot parse: then it is gone */
    SRV_HOSTILE,      /* "/" answers; every other path: silence, endless headers, endless body */
    SRV_SILENT,       /* accepts and never answers */
    SRV_ECHO,         /* sound, but its answers repeat the passwords it holds, and a gateway adds Via */
    SRV_FORM8,        /* a login form whose action is not UTF-8; nothing else */
    SRV_COOKIE,       /* 200 and a fresh session cookie for every request, whatever it carries */
} srv_mode_t;

typedef struct {
    int fd;
    srv_mode_t mode;
    atomic_int stop;
    pthread_t th;
    unsigned port;
    /* the sound device's state */
    char password[128];
    char token[32];
    unsigned token_n;
    unsigned failures;
    double last_failure;
    unsigned changes;
    char last_new[128]; /* the last new password a change carried: must never be in the document */
    unsigned hostile_n;
} srv_t;

typedef struct {
    char method[32];
    char path[1024];
    char auth[512];
    long content_length;
    uint8_t body[BODY_MAX + 1];
    size_t body_len;
} req_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void send_all(int c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(c, b, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        b += w;
        n -= (size_t)w;
    }
}

static void reply(srv_t *s, int c, int status, const char *headers, const char *ctype, const char *body)
{
    char head[1024];
    size_t blen = body ? strlen(body) : 0;
    const char *server = s->mode == SRV_BAD    ? "Server: Boa/0.94.14rc21\r\nX-Powered-By: PHP/5.2.17\r\n"
                         : s->mode == SRV_ECHO ? "Via: 1.1 gateway, HTTP/1.0 edge\r\n"
                                               : "";
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\n%s%s%s%s%sContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, server, ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "",
                     headers ? headers : "", blen);
    send_all(c, head, (size_t)n);
    if (blen > 0)
        send_all(c, body, blen);
}

/* Reads one request; 0 ok, -1 gone, 400/413/431 for what the server refuses. */
static int read_request(int c, req_t *rq)
{
    char head[HEAD_MAX + 1];
    size_t n = 0;
    char *end = NULL;
    memset(rq, 0, sizeof *rq);
    while (end == NULL) {
        if (n == HEAD_MAX)
            return 431;
        ssize_t k = recv(c, head + n, HEAD_MAX - n, 0);
        if (k <= 0)
            return n == 0 ? -1 : 400;
        n += (size_t)k;
        head[n] = '\0';
        end = memmem(head, n, "\r\n\r\n", 4);
    }
    size_t hlen = (size_t)(end - head) + 4;
    if (memchr(head, '\0', hlen) != NULL)
        return 400;
    *end = '\0';
    char version[16];
    if (sscanf(head, "%31s %1023s %15s", rq->method, rq->path, version) != 3 || strncmp(version, "HTTP/1.", 7) != 0 ||
        rq->path[0] != '/')
        return 400;
    for (char *line = strstr(head, "\r\n"); line != NULL; line = strstr(line + 2, "\r\n")) {
        char *l = line + 2;
        if (*l == '\0')
            break;
        char *colon = strchr(l, ':');
        char *eol = strstr(l, "\r\n");
        if (colon == NULL || (eol != NULL && colon > eol))
            return 400;
        if (strncasecmp(l, "Authorization:", 14) == 0)
            sscanf(l + 14, " %511[^\r\n]", rq->auth);
        if (strncasecmp(l, "Content-Length:", 15) == 0) {
            char *e = NULL;
            errno = 0;
            long v = strtol(l + 15, &e, 10);
            if (errno != 0 || v < 0 || e == l + 15 || rq->content_length != 0)
                return 400;
            rq->content_length = v;
        }
        if (strncasecmp(l, "Transfer-Encoding:", 18) == 0)
            return 400;
    }
    if (rq->content_length > BODY_MAX)
        return 413;
    size_t have = n - hlen;
    if (have > (size_t)rq->content_length)
        have = (size_t)rq->content_length;
    memcpy(rq->body, end + 4, have);
    while (have < (size_t)rq->content_length) {
        ssize_t k = recv(c, rq->body + have, (size_t)rq->content_length - have, 0);
        if (k <= 0)
            return 400;
        have += (size_t)k;
    }
    rq->body_len = have;
    return 0;
}

static const char *index_html = "<html><head><title>Thermo</title></head><body>app</body></html>";
static const char *unauthorized = "{\"error\":\"unauthorized\"}";

static int bearer_ok(srv_t *s, const req_t *rq)
{
    return s->token[0] != '\0' && strncmp(rq->auth, "Bearer ", 7) == 0 && strcmp(rq->auth + 7, s->token) == 0;
}

/* The sound device: JSON login with a throttle (3 free failures, then 1 s
 * after each), a password change, an SPA fallback for every other path. */
static void serve_good(srv_t *s, int c, const req_t *rq)
{
    const char *json = "application/json";
    if (strcmp(rq->path, "/api/login") == 0 && strcmp(rq->method, "POST") == 0) {
        if (s->failures >= 3 && now_s() - s->last_failure < 1.0) {
            reply(s, c, 429, "Retry-After: 1\r\n", json, "{\"error\":\"too_many_attempts\"}");
            return;
        }
        json_t *j = json_loadb((const char *)rq->body, rq->body_len, 0, NULL);
        const char *u = json_string_value(json_object_get(j, "username"));
        const char *p = json_string_value(json_object_get(j, "password"));
        if (u != NULL && p != NULL && strcmp(u, "admin") == 0 && strcmp(p, s->password) == 0) {
            s->failures = 0;
            snprintf(s->token, sizeof s->token, "tok%u", ++s->token_n);
            char body[96];
            snprintf(body, sizeof body, "{\"token\":\"%s\"}", s->token);
            reply(s, c, 200, NULL, json, body);
        } else {
            s->failures++;
            s->last_failure = now_s();
            reply(s, c, 401, NULL, json, unauthorized);
        }
        json_decref(j);
        return;
    }
    if (strcmp(rq->path, "/api/password") == 0 && strcmp(rq->method, "POST") == 0) {
        if (!bearer_ok(s, rq)) {
            reply(s, c, 401, NULL, json, unauthorized);
            return;
        }
        json_t *j = json_loadb((const char *)rq->body, rq->body_len, 0, NULL);
        const char *cur = json_string_value(json_object_get(j, "current"));
        const char *nw = json_string_value(json_object_get(j, "new"));
        if (cur == NULL || nw == NULL || strlen(nw) >= sizeof s->password) {
            reply(s, c, 400, NULL, json, "{\"error\":\"bad_request\"}");
        } else if (strcmp(cur, s->password) != 0) {
            reply(s, c, 401, NULL, json, unauthorized);
        } else if (s->mode == SRV_PW_ONE_WAY && s->changes > 0) {
            reply(s, c, 500, NULL, json, "{\"error\":\"internal\"}");
        } else {
            s->changes++;
            snprintf(s->last_new, sizeof s->last_new, "%s", nw);
            if (s->mode != SRV_PW_NOOP)
                snprintf(s->password, sizeof s->password, "%s", nw);
            s->token[0] = '\0';
            if (s->mode == SRV_ECHO) {
                char body[256];
                snprintf(body, sizeof body, "{\"changed\":true,\"password\":\"%s\"}", nw);
                reply(s, c, 200, NULL, json, body);
            } else {
                reply(s, c, 204, NULL, NULL, NULL);
            }
        }
        json_decref(j);
        return;
    }
    if (strncmp(rq->path, "/api/", 5) == 0) {
        if (strncmp(rq->path, "/api/settings", 13) == 0 && bearer_ok(s, rq) && s->mode == SRV_ECHO) {
            char body[256];
            snprintf(body, sizeof body, "{\"admin_password\":\"%s\"}", s->password);
            reply(s, c, 200, NULL, json, body);
        } else if (strncmp(rq->path, "/api/settings", 13) == 0 && bearer_ok(s, rq))
            reply(s, c, 200, NULL, json, "{\"automatic_updates\":true}");
        else if (strncmp(rq->path, "/api/settings", 13) == 0 || strncmp(rq->path, "/api/device", 11) == 0)
            reply(s, c, 401, NULL, json, unauthorized);
        else
            reply(s, c, 404, NULL, json, "{\"error\":\"not_found\"}");
        return;
    }
    if (strcmp(rq->method, "GET") != 0 && strcmp(rq->method, "HEAD") != 0) {
        reply(s, c, 405, NULL, json, "{\"error\":\"method_not_allowed\"}");
        return;
    }
    reply(s, c, 200, NULL, "text/html", index_html); /* the SPA answers every path */
}

static void serve_bad(srv_t *s, int c, const req_t *rq)
{
    const char *p = rq->path;
    if (strstr(p, "etc/passwd") != NULL || strstr(p, "etc%2fpasswd") != NULL) {
        reply(s, c, 200, NULL, "text/plain", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/bin/false\n");
    } else if (strcmp(p, "/") == 0 || strncmp(p, "/?", 2) == 0) {
        reply(s, c, 200, NULL, "text/html", index_html);
    } else if (strncmp(p, "/admin", 6) == 0) {
        /* "admin:admin" */
        if (strcmp(rq->auth, "Basic YWRtaW46YWRtaW4=") == 0)
            reply(s, c, 200, NULL, "text/html", "<html><body>admin area</body></html>");
        else
            reply(s, c, 401, "WWW-Authenticate: Basic realm=\"cam\"\r\n", "text/html", "<html>401</html>");
    } else if (strcmp(p, "/config.json") == 0) {
        reply(s, c, 200, NULL, "application/json",
              "{\"wifi_ssid\":\"home\",\"wifi_password\":\"hunter2\",\"admin_user\":\"admin\","
              "\"ntp_server\":\"pool\"}");
    } else if (strcmp(p, "/.git/HEAD") == 0) {
        reply(s, c, 200, NULL, "text/plain", "ref: refs/heads/main\n");
    } else if (strcmp(p, "/api/settings") == 0) {
        reply(s, c, 200, NULL, "application/json", "{\"remote_access\":true}");
    } else {
        reply(s, c, 404, NULL, "text/html",
              "<html><body><pre>Traceback (most recent call last):\n  File \"/usr/lib/cam/app.py\", line 3, in "
              "handle\nKeyError: path</pre></body></html>");
    }
}

/* Hostile answers, in turn: silence, endless headers, an endless body. */
static void serve_hostile(srv_t *s, int c)
{
    unsigned k = s->hostile_n++ % 3;
    double t0 = now_s();
    if (k == 0) {
        struct pollfd pf = {.fd = c, .events = POLLIN};
        char sink[4096];
        while (!atomic_load(&s->stop) && now_s() - t0 < 20) {
            if (poll(&pf, 1, 20) > 0 && recv(c, sink, sizeof sink, MSG_DONTWAIT) == 0)
                return; /* the client gave up */
        }
        return;
    }
    static const char hdr[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n";
    send_all(c, hdr, sizeof hdr - 1);
    if (k == 2)
        send_all(c, "Content-Length: 1073741824\r\n\r\n", 30);
    char chunk[4096];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = k == 1 ? "X-Endless: aaaaaa\r\n"[i % 19] : 'a';
    while (!atomic_load(&s->stop) && now_s() - t0 < 20)
        if (send(c, chunk, sizeof chunk, MSG_NOSIGNAL) <= 0)
            return;
}

static void *srv_main(void *arg)
{
    srv_t *s = arg;
    while (!atomic_load(&s->stop)) {
        int c = loopback_accept(s->fd, 2);
        if (c < 0)
            continue;
        if (s->mode == SRV_SILENT) {
            serve_hostile(s, c); /* k == 0 first: silence */
            s->hostile_n = 0;
            close(c);
            continue;
        }
        req_t *rq = malloc(sizeof *rq);
        int r = rq ? read_request(c, rq) : -1;
        if (r > 0) {
            if (s->mode == SRV_FRAGILE) {
                /* it falls over: the port is closed for good */
                close(c);
                close(s->fd);
                s->fd = -1;
                free(rq);
                return NULL;
            }
            reply(s, c, r, NULL, "text/plain", "refused");
        } else if (r == 0) {
            if (s->mode == SRV_BAD)
                serve_bad(s, c, rq);
            else if (s->mode == SRV_FORM8 && strcmp(rq->path, "/login") == 0)
                reply(s, c, 200, NULL, "text/html",
                      "<html><body><form method=\"post\" action=\"/l\xffgin\"><input type=\"text\" name=\"user\">"
                      "<input type=\"password\" name=\"pw\"></form></body></html>");
            else if (s->mode == SRV_FORM8)
                reply(s, c, 404, NULL, "text/plain", "not found");
            else if (s->mode == SRV_COOKIE)
                reply(s, c, 200, "Set-Cookie: sid=1; Path=/\r\n", "text/html", index_html);
            else if (s->mode == SRV_HOSTILE && strcmp(rq->path, "/") != 0)
                serve_hostile(s, c);
            else
                serve_good(s, c, rq);
        }
        free(rq);
        shutdown(c, SHUT_WR);
        close(c);
    }
    return NULL;
}

static void srv_start(srv_t *s, srv_mode_t mode)
{
    memset(s, 0, sizeof *s);
    s->mode = mode;
    atomic_init(&s->stop, 0);
    snprintf(s->password, sizeof s->password, "%s", LAB_PW);
    s->fd = loopback_listen(SOCK_STREAM, 16, &s->port);
    assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_stop(srv_t *s)
{
    atomic_store(&s->stop, 1);
    assert_int_equal(pthread_join(s->th, NULL), 0);
    if (s->fd >= 0)
        close(s->fd);
}

/* ---- helpers over the document ------------------------------------------------------ */

static const char *unit_state(json_t *doc, const char *unit)
{
    const char *s = json_string_value(json_object_get(json_object_get(json_object_get(doc, "units"), unit), "state"));
    return s ? s : "(none)";
}

static const char *unit_reason(json_t *doc, const char *unit)
{
    const char *s = json_string_value(json_object_get(json_object_get(json_object_get(doc, "units"), unit), "reason"));
    return s ? s : "";
}

/* The number of findings of `severity` for `provision` (NULL: any). */
static unsigned count(json_t *doc, const char *provision, const char *severity)
{
    unsigned n = 0;
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(doc, "findings"), i, f) {
        if (provision != NULL && strcmp(json_string_value(json_object_get(f, "provision")), provision) != 0)
            continue;
        if (strcmp(json_string_value(json_object_get(f, "severity")), severity) == 0)
            n++;
    }
    return n;
}

static int doc_has(json_t *doc, const char *needle)
{
    char *s = json_dumps(doc, 0);
    assert_non_null(s);
    int has = strstr(s, needle) != NULL;
    free(s);
    return has;
}

static void dump_findings(json_t *doc)
{
    char *s = json_dumps(json_object_get(doc, "findings"), JSON_INDENT(1));
    char *u = json_dumps(json_object_get(doc, "units"), JSON_INDENT(1));
    fprintf(stderr, "units: %s\nfindings: %s\n", u ? u : "", s ? s : "");
    free(s);
    free(u);
}

static const keel_http_route_t good_routes[] = {
    {"GET", "/api/status", 0, 0},
    {"GET", "/api/device", 1, 0},
    {"GET", "/api/settings", 1, 1},
    {"PUT", "/api/settings", 1, 1},
};

static keel_http_probe_opts_t good_opts(const srv_t *s)
{
    keel_http_probe_opts_t o = {
        .http = {.host = "127.0.0.1", .port = s->port, .timeout_ms = 2000},
        .routes = good_routes,
        .routes_len = sizeof good_routes / sizeof good_routes[0],
        .login = {KEEL_HTTP_LOGIN_JSON, "/api/login", NULL, NULL},
        .password_change = {KEEL_HTTP_LOGIN_JSON, "/api/password", NULL, NULL},
        .user = "admin",
        .password = LAB_PW,
        .bruteforce_max = 10,
        .budget_ms = 30000,
    };
    return o;
}

/* ---- the tests ------------------------------------------------------------------------ */

static void test_bad_server_fails(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_BAD);
    static const keel_http_route_t routes[] = {{"GET", "/api/settings", 1, 1}};
    keel_http_probe_opts_t o = {
        .http = {.host = "127.0.0.1", .port = s.port, .timeout_ms = 2000},
        .routes = routes,
        .routes_len = 1,
        .bruteforce_max = 10,
    };
    json_t *doc = NULL;
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_OK);
    srv_stop(&s);
    dump_findings(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "format")), "keel-assess-http-1");
    /* the banner and the error page */
    assert_true(count(doc, "5.6-2", "fail") >= 2);
    assert_true(doc_has(doc, "Boa/0.94.14rc21"));
    assert_true(doc_has(doc, "Traceback (most recent call last)"));
    /* the declared security-relevant route, and /config.json */
    assert_int_equal(count(doc, "5.5-5", "fail"), 1);
    assert_int_equal(count(doc, "5.5-4", "fail"), 1);
    assert_true(doc_has(doc, "GET /config.json answered HTTP 200 without authentication"));
    assert_int_equal(count(doc, "5.6-4A", "fail"), 1);
    assert_true(doc_has(doc, "/.git/HEAD"));
    /* traversal reads /etc/passwd; the port shows a UI, so 5.13-1A too */
    assert_true(count(doc, "5.13-1B", "fail") >= 1);
    assert_true(count(doc, "5.13-1A", "fail") >= 1);
    /* the Basic login found on /admin takes admin/admin, and takes guesses without end */
    assert_int_equal(count(doc, "5.1-1", "fail"), 1);
    assert_true(doc_has(doc, "accepts the default pair admin/admin"));
    assert_int_equal(count(doc, "5.1-5", "fail"), 1);
    assert_string_equal(unit_state(doc, "http.password_change"), "not_applicable");
    assert_string_equal(unit_state(doc, "http.default_creds"), "ran");
    assert_string_equal(unit_state(doc, "http.bruteforce"), "ran");
    /* evidence for what was sent, with times */
    json_t *ev = json_object_get(doc, "evidence");
    assert_true(json_array_size(ev) > 50);
    assert_non_null(json_object_get(json_array_get(ev, 0), "sent"));
    assert_non_null(json_object_get(json_array_get(ev, 0), "duration_us"));
    json_decref(doc);
}

static void test_good_server_passes(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_GOOD);
    keel_http_probe_opts_t o = good_opts(&s);
    json_t *doc = NULL;
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_OK);
    srv_stop(&s);
    dump_findings(doc);
    assert_int_equal(count(doc, NULL, "fail"), 0);
    assert_int_equal(count(doc, NULL, "warn"), 0);
    static const char *const units[] = {"http.disclosure", "http.auth_sweep", "http.debug", "http.input",
                                        "http.password_change", "http.default_creds", "http.bruteforce"};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        assert_string_equal(unit_state(doc, units[i]), "ran");
    /* changed and changed back: the lab password works again */
    assert_int_equal(s.changes, 2);
    assert_string_equal(s.password, LAB_PW);
    /* throttled: default pairs stop early, guesses are seen to be throttled */
    assert_non_null(strstr(unit_reason(doc, "http.default_creds"), "then throttled"));
    assert_non_null(strstr(unit_reason(doc, "http.bruteforce"), "throttled after"));
    /* no secret in the document: neither the lab password nor the fresh one */
    assert_false(doc_has(doc, LAB_PW));
    assert_true(strlen(s.last_new) > 0);
    assert_false(doc_has(doc, s.last_new));
    assert_true(doc_has(doc, "<lab password>"));
    /* the probe waited out the throttle it tripped: the lab logs in again */
    assert_true(json_is_true(json_object_get(json_object_get(doc, "lab_access"), "login_accepted")));
    json_decref(doc);
}

static void test_password_change_noop_fails(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_PW_NOOP);
    keel_http_probe_opts_t o = good_opts(&s);
    json_t *doc = NULL;
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_OK);
    srv_stop(&s);
    dump_findings(doc);
    assert_int_equal(count(doc, "5.1-4", "fail"), 1);
    assert_int_equal(count(doc, NULL, "fail"), 1);
    json_decref(doc);
}

static void test_password_change_back_fails_loudly(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_PW_ONE_WAY);
    keel_http_probe_opts_t o = good_opts(&s);
    json_t *doc = NULL;
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_OK);
    srv_stop(&s);
    dump_findings(doc);
    assert_string_equal(unit_state(doc, "http.password_change"), "inconclusive");
    assert_non_null(strstr(unit_reason(doc, "http.password_change"), "CHANGE-BACK FAILED"));
    assert_int_equal(count(doc, NULL, "fail"), 0);
    assert_false(doc_has(doc, s.last_new));
    json_decref(doc);
}

static void test_password_change_without_credentials(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_GOOD);
    keel_http_probe_opts_t o = good_opts(&s);
    o.user = NULL;
    o.password = NULL;
    o.budget_ms = 8000;
    json_t *doc = NULL;
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_OK);
    srv_stop(&s);
    assert_string_equal(unit_state(doc, "http.password_change"), "inconclusive");
    assert_int_equal(s.changes, 0);
    json_decref(doc);
}

static void test_fragile_server_is_unresponsive(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_FRAGILE);
    keel_http_probe_opts_t o = good_opts(&s);
    o.http.timeout_ms = 500;
    o.budget_ms = 15000;
    json_t *doc = NULL;
    double t0 = now_s();
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_OK);
    double took = now_s() - t0;
    srv_stop(&s);
    dump_findings(doc);
    assert_true(count(doc, "5.13-1B", "fail") >= 1);
    assert_true(doc_has(doc, "no longer answered"));
    assert_true(took < 25.0);
    json_decref(doc);
}

static void test_hostile_servers_stay_bounded(void **state)
{
    (void)state;
    srv_mode_t modes[] = {SRV_HOSTILE, SRV_SILENT};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        srv_t s;
        srv_start(&s, modes[m]);
        keel_http_probe_opts_t o = good_opts(&s);
        o.http.timeout_ms = 300;
        o.budget_ms = 4000;
        json_t *doc = NULL;
        double t0 = now_s();
        assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_OK);
        double took = now_s() - t0;
        srv_stop(&s);
        fprintf(stderr, "hostile mode %zu: %.2f s, %zu evidence entries\n", m, took,
                json_array_size(json_object_get(doc, "evidence")));
        /* the budget, one request timeout and the recovery watch at most */
        assert_true(took < 4.0 + 0.3 * 4 + 5.5);
        if (modes[m] == SRV_SILENT)
            assert_string_equal(unit_state(doc, "http.disclosure"), "inconclusive");
        json_decref(doc);
    }
}


/* A device that repeats the passwords it holds (the answer to the change,
 * a settings page read with the lab's session) must not get them into the
 * document; "Via: 1.1 gateway" names a protocol, not a software version. */
static void test_echoed_passwords_stay_out(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_ECHO);
    keel_http_probe_opts_t o = good_opts(&s);
    json_t *doc = NULL;
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_OK);
    srv_stop(&s);
    dump_findings(doc);
    assert_int_equal(s.changes, 2);
    assert_true(strlen(s.last_new) > 0);
    assert_false(doc_has(doc, s.last_new));
    assert_false(doc_has(doc, LAB_PW));
    assert_true(doc_has(doc, "holds a password of the lab's"));
    assert_int_equal(count(doc, "5.6-2", "fail"), 0);
    assert_int_equal(count(doc, NULL, "fail"), 0);
    json_decref(doc);
}

/* A login form whose action is not UTF-8 must not cost the document. */
static void test_form_action_not_utf8(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_FORM8);
    keel_http_probe_opts_t o = {.http = {.host = "127.0.0.1", .port = s.port, .timeout_ms = 1000},
                                .bruteforce_max = 3,
                                .budget_ms = 6000};
    json_t *doc = NULL;
    keel_status_t st = keel_assess_probe_http(&o, &doc);
    srv_stop(&s);
    if (st != KEEL_OK)
        fail_msg("probe: %s", keel_error_message());
    char *text = json_dumps(doc, 0);
    assert_non_null(text);
    free(text);
    json_decref(doc);
}

/* A declared form login on a server that sets a cookie on every answer: the
 * 2xx-plus-cookie rule would take any pair, so nothing may FAIL on it. */
static void test_declared_form_that_takes_anything(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_COOKIE);
    keel_http_probe_opts_t o = {.http = {.host = "127.0.0.1", .port = s.port, .timeout_ms = 1000},
                                .login = {KEEL_HTTP_LOGIN_FORM, "/login", "user", "pw"},
                                .bruteforce_max = 5,
                                .budget_ms = 8000};
    json_t *doc = NULL;
    keel_status_t st = keel_assess_probe_http(&o, &doc);
    srv_stop(&s);
    if (st != KEEL_OK)
        fail_msg("probe: %s", keel_error_message());
    assert_string_equal(unit_state(doc, "http.default_creds"), "inconclusive");
    assert_string_equal(unit_state(doc, "http.bruteforce"), "inconclusive");
    assert_int_equal(count(doc, "5.1-1", "fail"), 0);
    assert_int_equal(count(doc, "5.1-5", "fail"), 0);
    json_decref(doc);
}


/* libcurl's memory, watched from main(): a header line that still says
 * "Authorization: " when libcurl frees it was not wiped. */
static atomic_int unwiped_auth;

static void t_free(void *p)
{
    if (p != NULL && malloc_usable_size(p) >= 15 && memcmp(p, "Authorization: ", 15) == 0)
        atomic_fetch_add(&unwiped_auth, 1);
    free(p);
}

static void *t_malloc(size_t n)
{
    return malloc(n);
}

static void *t_realloc(void *p, size_t n)
{
    return realloc(p, n);
}

static char *t_strdup(const char *s)
{
    return strdup(s);
}

static void *t_calloc(size_t n, size_t k)
{
    return calloc(n, k);
}

/* The Basic credential of a session goes out in a header line libcurl
 * copies: the copy is wiped before libcurl frees it. */
static void test_client_wipes_header_copies(void **state)
{
    (void)state;
    srv_t s;
    srv_start(&s, SRV_BAD);
    keel_http_t *h = NULL;
    keel_http_opts_t ho = {.host = "127.0.0.1", .port = s.port, .timeout_ms = 2000};
    assert_int_equal(keel_http_open(&ho, &h), KEEL_OK);
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    keel_http_login_t l = {KEEL_HTTP_LOGIN_BASIC, "/admin/", NULL, NULL};
    int ok = 0;
    int before = atomic_load(&unwiped_auth);
    assert_int_equal(keel_http_login(h, &l, "admin", "admin", &ok, &r), KEEL_OK);
    assert_true(ok);
    keel_http_req_t q = {.path = "/admin/"};
    assert_int_equal(keel_http_do(h, &q, &r), KEEL_OK);
    assert_int_equal(r.status, 200);
    /* a lab password of 1023 bytes (the most keeld takes) is sent (and refused here), not an error */
    char longpw[1024];
    memset(longpw, 'w', sizeof longpw - 1);
    longpw[sizeof longpw - 1] = '\0';
    assert_int_equal(keel_http_login(h, &l, "admin", longpw, &ok, &r), KEEL_OK);
    assert_false(ok);
    assert_int_equal(r.status, 401);
    keel_http_resp_free(&r);
    keel_http_close(h);
    srv_stop(&s);
    assert_int_equal(atomic_load(&unwiped_auth), before);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    json_t *doc = NULL;
    keel_http_probe_opts_t o = {.http = {.host = "127.0.0.1", .port = 0}};
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_ERR_ARG);
    o.http.port = 80;
    o.user = "admin"; /* a user without a password */
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_ERR_ARG);
    o.user = NULL;
    o.login = (keel_http_login_t){KEEL_HTTP_LOGIN_JSON, "login", NULL, NULL};
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_ERR_ARG);
    o.login = (keel_http_login_t){KEEL_HTTP_LOGIN_NONE, NULL, NULL, NULL};
    o.http.host = "no-such-host.invalid";
    assert_int_equal(keel_assess_probe_http(&o, &doc), KEEL_ERR_NOT_FOUND);
    assert_null(doc);
}

/* HEAD must go out as HEAD (libcurl's GET switch used to turn it back into GET). */
static void test_client_head(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 4), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    keel_http_t *h = NULL;
    keel_http_opts_t ho = {.host = "127.0.0.1", .port = ntohs(a.sin_port), .timeout_ms = 500};
    assert_int_equal(keel_http_open(&ho, &h), KEEL_OK);
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    /* the request is read from the listening socket's queue after the client timed out */
    keel_http_req_t q = {.method = "HEAD", .path = "/x", .anonymous = 1};
    assert_int_equal(keel_http_do(h, &q, &r), KEEL_OK);
    assert_int_equal(r.status, 0);
    int c = accept(fd, NULL, NULL);
    assert_true(c >= 0);
    char buf[256] = "";
    ssize_t n = recv(c, buf, sizeof buf - 1, MSG_DONTWAIT);
    assert_true(n > 5);
    assert_memory_equal(buf, "HEAD /x ", 8);
    close(c);
    close(fd);
    keel_http_resp_free(&r);
    keel_http_close(h);
}

int main(void)
{
    /* the in-test servers write to clients that may have gone: EPIPE, not death */
    signal(SIGPIPE, SIG_IGN);
    /* before the first use of libcurl: keel_http_open's own init is then a no-op */
    if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, t_malloc, t_free, t_realloc, t_strdup, t_calloc) != CURLE_OK)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_client_head),
        cmocka_unit_test(test_client_wipes_header_copies),
        cmocka_unit_test(test_bad_server_fails),
        cmocka_unit_test(test_good_server_passes),
        cmocka_unit_test(test_password_change_noop_fails),
        cmocka_unit_test(test_password_change_back_fails_loudly),
        cmocka_unit_test(test_password_change_without_credentials),
        cmocka_unit_test(test_fragile_server_is_unresponsive),
        cmocka_unit_test(test_hostile_servers_stay_bounded),
        cmocka_unit_test(test_echoed_passwords_stay_out),
        cmocka_unit_test(test_form_action_not_utf8),
        cmocka_unit_test(test_declared_form_that_takes_anything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * keel_assess_run: meets a target the way a lab does. Scan every TCP port
 * and the usual UDP services; decide what each open port speaks (its
 * banner, a TLS handshake, an HTTP or MQTT answer, and what the IXIT
 * declares for it); run the probes that apply; run the update and
 * publication checks the IXIT makes possible; then judge (judge.c).
 * Every probe's document goes into the report as it returned it.
 */
#include "keel/assess.h"
#include "keel/assess_http.h"
#include "keel/assess_probe.h"
#include "keel/assess_report.h"
#include "keel/assess_run.h"
#include "keel/assess_services.h"
#include "keel/assess_update.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEEP_PORTS_MAX 32    /* open ports probed in depth; the rest are only listed */
#define LAB_SECRET_MAX 1024  /* bytes of a lab password */

typedef struct {
    const keel_assess_run_opts_t *o;
    json_t *report, *observations, *probes, *absent;
    double t0, deadline;
    char address[64];
    int saw_http, saw_mqtt, saw_service;
} run_t;

static const char *sget(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "";
}

static void progress(run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void progress(run_t *r, const char *fmt, ...)
{
    if (r->o->progress == NULL)
        return;
    char line[512];
    int n = snprintf(line, sizeof line, "[%5.1fs] ", keel_now() - r->t0);
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    r->o->progress(r->o->progress_arg, line);
}

/* Records a probe run in "probes" and its document in "observations" (taken). */
static keel_status_t record(run_t *r, const char *probe, const char *iface, double started, keel_status_t st,
                            json_t *doc)
{
    long long us = (long long)((keel_now() - started) * 1e6);
    json_t *p = json_pack("{s:s, s:s?, s:I, s:s}", "probe", probe, "interface", iface, "duration_us", (json_int_t)us,
                          "status", st == KEEL_OK ? "ok" : "error");
    if (p == NULL) {
        json_decref(doc);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the report");
    }
    if (st != KEEL_OK)
        (void)json_object_set_new(p, "error", json_string(keel_error_message()));
    /* The judge names test cases after the interface the engine probed. */
    if (doc != NULL && iface != NULL && json_object_get(doc, "interface") == NULL &&
        json_object_set_new(doc, "interface", json_string(iface)) != 0) {
        json_decref(p);
        json_decref(doc);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the report");
    }
    /* each _new call owns its value from here, on failure too */
    if (json_array_append_new(r->probes, p) != 0) {
        json_decref(doc);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the report");
    }
    if (doc != NULL && json_array_append_new(r->observations, doc) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the report");
    return KEEL_OK;
}

/* Why a unit has no result at all (judge.c uses it for the missing test cases). */
static void absent(run_t *r, const char *unit, const char *verdict, const char *reason)
{
    if (json_object_get(r->absent, unit) == NULL)
        (void)json_object_set_new(r->absent, unit, json_pack("{s:s, s:s}", "verdict", verdict, "reason", reason));
}

static unsigned left_ms(const run_t *r, unsigned want)
{
    double left = (r->deadline - keel_now()) * 1000.0;
    if (left < 1000.0)
        return 1000;
    return left < want ? (unsigned)left : want;
}

/* ---- the IXIT ----------------------------------------------------------------- */

static const json_t *ixit_interface_on(const json_t *ixit, long port)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ixit, "interfaces"), i, e)
        if (strcmp(sget(e, "transport"), "tcp") == 0 && strcmp(sget(e, "role"), "server") == 0 &&
            json_integer_value(json_object_get(e, "port")) == port)
            return e;
    return NULL;
}

static const json_t *ixit_interface_named(const json_t *ixit, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(ixit, "interfaces"), i, e) if (strcmp(sget(e, "name"), name) == 0) return e;
    return NULL;
}

/* The lab credentials of the first mechanism of `iface` that has them. */
static const json_t *lab_credentials(const json_t *ixit, const json_t *iface)
{
    size_t i, j;
    json_t *n, *a;
    json_array_foreach(json_object_get(iface, "authentication"), i, n)
        json_array_foreach(json_object_get(ixit, "authentication"), j, a)
            if (strcmp(sget(a, "name"), json_string_value(n) ? json_string_value(n) : "") == 0 &&
                json_object_get(a, "lab_credentials") != NULL)
                return json_object_get(a, "lab_credentials");
    return NULL;
}

/* Reads the lab password the IXIT points at into pw (LAB_SECRET_MAX + 1
 * bytes, wiped by the caller): an environment variable, or a private file
 * relative to the IXIT's directory. */
static keel_status_t lab_password(const run_t *r, const json_t *cred, char *pw)
{
    const char *env = json_string_value(json_object_get(cred, "password_env"));
    const char *file = json_string_value(json_object_get(cred, "password_file"));
    char path[KEEL_PATH_MAX];
    if (file != NULL && file[0] != '/' && r->o->ixit_dir != NULL) {
        snprintf(path, sizeof path, "%s/%s", r->o->ixit_dir, file);
        file = path;
    }
    size_t len;
    keel_status_t st = keel_secret_read(file, env, pw, LAB_SECRET_MAX + 1, &len);
    if (st != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        return keel_errorf(KEEL_ERR_CONFIG, "the IXIT's lab password: %s", why);
    }
    return KEEL_OK;
}

static keel_http_login_t login_of(const json_t *iface)
{
    keel_http_login_t l = {KEEL_HTTP_LOGIN_NONE, NULL, NULL, NULL};
    const json_t *o = json_object_get(json_object_get(iface, "http"), "login");
    if (o == NULL || keel_http_login_kind_parse(sget(o, "kind"), &l.kind) != KEEL_OK) {
        l.kind = KEEL_HTTP_LOGIN_NONE;
        return l;
    }
    l.path = json_string_value(json_object_get(o, "path"));
    l.user_field = json_string_value(json_object_get(o, "user_field"));
    l.password_field = json_string_value(json_object_get(o, "password_field"));
    return l;
}

/* Relative IXIT paths (bundles, files) from the IXIT's directory. */
static const char *ixit_path(const run_t *r, const char *p, char *buf, size_t cap)
{
    if (p == NULL || p[0] == '/' || strstr(p, "://") != NULL || r->o->ixit_dir == NULL)
        return p;
    snprintf(buf, cap, "%s/%s", r->o->ixit_dir, p);
    return buf;
}

/* ---- probes ------------------------------------------------------------------- */

static keel_status_t run_scan(run_t *r, json_t **out)
{
    keel_portset_t tcp;
    keel_status_t st = keel_portset_parse(r->o->ports != NULL ? r->o->ports : "1-65535", &tcp);
    if (st != KEEL_OK)
        return st;
    keel_udp_probe_t udp[KEEL_PROBE_UDP_MAX];
    size_t nudp = 0;
    for (int s = 0; s < KEEL_UDP_SERVICE_COUNT; s++)
        udp[nudp++] = (keel_udp_probe_t){(keel_udp_service_t)s, keel_udp_service_default_port((keel_udp_service_t)s)};
    /* declared UDP services on other ports, when their protocol is one we speak */
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r->o->ixit, "interfaces"), i, e) {
        keel_udp_service_t svc;
        long port = (long)json_integer_value(json_object_get(e, "port"));
        if (strcmp(sget(e, "transport"), "udp") != 0 || nudp >= KEEL_PROBE_UDP_MAX ||
            keel_udp_service_parse(sget(e, "protocol"), &svc) != KEEL_OK ||
            (unsigned)port == keel_udp_service_default_port(svc))
            continue;
        udp[nudp++] = (keel_udp_probe_t){svc, (unsigned)port};
    }
    progress(r, "ports: scanning %u TCP ports and %zu UDP services of %s", keel_portset_count(&tcp), nudp,
             r->o->host);
    keel_scan_opts_t so = {.host = r->o->host, .tcp = &tcp, .udp = udp, .udp_len = nudp};
    double t = keel_now();
    st = keel_assess_scan(&so, out);
    if (st != KEEL_OK)
        return st;
    json_t *open = json_object_get(json_object_get(*out, "tcp"), "open");
    char list[256] = "";
    json_t *o;
    json_array_foreach(open, i, o) {
        size_t n = strlen(list);
        if (n < sizeof list - 8)
            snprintf(list + n, sizeof list - n, "%s%lld", n ? " " : "", (long long)json_integer_value(json_object_get(o, "port")));
    }
    progress(r, "ports: %zu open (%s) in %.1f s", json_array_size(open), list[0] ? list : "none", keel_now() - t);
    return KEEL_OK;
}

static keel_status_t run_http(run_t *r, const json_t *iface, long port, int tls, const char *ifname)
{
    const json_t *http = json_object_get(iface, "http");
    keel_http_route_t routes[KEEL_ASSESS_LIST_MAX];
    size_t nroutes = 0, i;
    json_t *e;
    json_array_foreach(json_object_get(http, "routes"), i, e) {
        if (nroutes >= KEEL_ASSESS_LIST_MAX)
            break;
        routes[nroutes++] = (keel_http_route_t){sget(e, "method"), sget(e, "path"),
                                                json_is_true(json_object_get(e, "authentication")),
                                                json_is_true(json_object_get(e, "security_relevant"))};
    }
    keel_http_probe_opts_t ho = {
        .http = {.host = r->o->host, .port = (unsigned)port, .tls = tls},
        .routes = nroutes ? routes : NULL,
        .routes_len = nroutes,
        .login = login_of(iface),
        .budget_ms = left_ms(r, 45000),
    };
    const json_t *pc = json_object_get(http, "password_change");
    if (pc != NULL && keel_http_login_kind_parse(sget(pc, "kind"), &ho.password_change.kind) == KEEL_OK) {
        ho.password_change.path = json_string_value(json_object_get(pc, "path"));
        ho.password_change.current_field = json_string_value(json_object_get(pc, "current_field"));
        ho.password_change.new_field = json_string_value(json_object_get(pc, "new_field"));
    }
    char pw[LAB_SECRET_MAX + 1] = "";
    const json_t *cred = iface != NULL ? lab_credentials(r->o->ixit, iface) : NULL;
    keel_status_t st = KEEL_OK;
    if (cred != NULL) {
        if ((st = lab_password(r, cred, pw)) != KEEL_OK) {
            keel_wipe(pw, sizeof pw);
            return st;
        }
        ho.user = json_string_value(json_object_get(cred, "user"));
        ho.password = pw;
    }
    progress(r, "http: %s (%s)%s", ifname, tls ? "https" : "http in clear", cred != NULL ? ", with the lab's login" : "");
    json_t *doc = NULL;
    double t = keel_now();
    st = keel_assess_probe_http(&ho, &doc);
    keel_wipe(pw, sizeof pw);
    r->saw_http = 1;
    return record(r, "http", ifname, t, st, doc);
}

static keel_status_t run_mqtt(run_t *r, long port, int tls, const char *ifname)
{
    progress(r, "mqtt: %s (%s)", ifname, tls ? "TLS" : "clear");
    keel_mqtt_probe_opts_t mo = {.host = r->o->host, .port = (unsigned)port, .tls = tls};
    json_t *doc = NULL;
    double t = keel_now();
    keel_status_t st = keel_assess_probe_mqtt(&mo, &doc);
    r->saw_mqtt = 1;
    return record(r, "mqtt", ifname, t, st, doc);
}

static keel_status_t run_service(run_t *r, long port, keel_svc_kind_t kind, const char *ifname)
{
    static const char *const names[] = {"auto", "telnet", "ssh", "ftp"};
    progress(r, "service: %s (%s)", ifname, names[kind]);
    keel_svc_probe_opts_t so = {.host = r->o->host, .port = (unsigned)port, .kind = kind,
                                .budget_ms = left_ms(r, 20000)};
    json_t *doc = NULL;
    double t = keel_now();
    keel_status_t st = keel_assess_probe_service(&so, &doc);
    r->saw_service = 1;
    return record(r, "service", ifname, t, st, doc);
}

/* Does a TLS port answer HTTP? One GET / decides between the HTTP and MQTT probes. */
static int speaks_http(const run_t *r, long port, int tls)
{
    keel_http_opts_t ho = {.host = r->o->host, .port = (unsigned)port, .tls = tls, .timeout_ms = 3000};
    keel_http_t *h = NULL;
    if (keel_http_open(&ho, &h) != KEEL_OK)
        return 0;
    keel_http_resp_t resp;
    keel_http_resp_init(&resp);
    keel_http_req_t q = {.method = "GET", .path = "/", .anonymous = 1};
    int yes = keel_http_do(h, &q, &resp) == KEEL_OK && resp.status > 0;
    keel_http_resp_free(&resp);
    keel_http_close(h);
    return yes;
}

static const char *plaintext_kind(const json_t *tlsdoc, const char *protocol)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(tlsdoc, "plaintext"), i, p)
        if (strcmp(sget(p, "protocol"), protocol) == 0 && json_is_true(json_object_get(p, "answered")))
            return sget(p, "reply_kind");
    return "";
}

static int protocol_is(const json_t *iface, const char *const *names)
{
    const char *p = sget(iface, "protocol");
    for (size_t i = 0; names[i] != NULL; i++)
        if (strcmp(p, names[i]) == 0)
            return 1;
    return 0;
}

/* One open TCP port: what it speaks, and the probes that apply. */
static keel_status_t probe_port(run_t *r, const json_t *open)
{
    static const char *const http_names[] = {"http", "https", NULL};
    static const char *const mqtt_names[] = {"mqtt", "mqtts", NULL};
    long port = (long)json_integer_value(json_object_get(open, "port"));
    const char *banner = sget(open, "banner");
    const json_t *iface = ixit_interface_on(r->o->ixit, port);
    char ifname[32];
    snprintf(ifname, sizeof ifname, "tcp:%ld", port);
    if (strncmp(banner, "SSH-", 4) == 0)
        return run_service(r, port, KEEL_SVC_SSH, ifname);
    if (strncmp(banner, "\\xff", 4) == 0) /* telnet IAC, as keel_assess_escape writes it */
        return run_service(r, port, KEEL_SVC_TELNET, ifname);
    if (strncmp(banner, "220", 3) == 0 && strstr(banner, "SMTP") == NULL)
        return run_service(r, port, KEEL_SVC_FTP, ifname);
    if (banner[0] != '\0' && iface == NULL) {
        progress(r, "%s: speaks first (\"%.40s\"); no probe of ours applies", ifname, banner);
        return KEEL_OK;
    }
    progress(r, "tls: %s", ifname);
    keel_tls_probe_opts_t to = {.host = r->o->host, .port = (unsigned)port, .budget_ms = left_ms(r, 25000)};
    json_t *tlsdoc = NULL;
    double t = keel_now();
    keel_status_t st = keel_assess_probe_tls(&to, &tlsdoc);
    int tls = st == KEEL_OK && json_is_true(json_object_get(tlsdoc, "tls"));
    const char *clear_http = st == KEEL_OK ? plaintext_kind(tlsdoc, "http") : "";
    const char *clear_mqtt = st == KEEL_OK ? plaintext_kind(tlsdoc, "mqtt") : "";
    int is_http = strcmp(clear_http, "http") == 0, is_mqtt = strcmp(clear_mqtt, "mqtt_connack") == 0;
    if ((st = record(r, "tls", ifname, t, st, tlsdoc)) != KEEL_OK)
        return st;
    if (iface != NULL && protocol_is(iface, http_names))
        return run_http(r, iface, port, json_is_true(json_object_get(iface, "tls")) || tls, ifname);
    if (iface != NULL && protocol_is(iface, mqtt_names))
        return run_mqtt(r, port, json_is_true(json_object_get(iface, "tls")) || tls, ifname);
    if (tls && speaks_http(r, port, 1))
        return run_http(r, iface, port, 1, ifname);
    if (tls)
        return run_mqtt(r, port, 1, ifname);
    if (is_http)
        return run_http(r, iface, port, 0, ifname);
    if (is_mqtt)
        return run_mqtt(r, port, 0, ifname);
    progress(r, "%s: neither TLS, HTTP nor MQTT answered; only listed", ifname);
    return KEEL_OK;
}

static keel_status_t run_update(run_t *r)
{
    const json_t *u = json_object_get(r->o->ixit, "update");
    if (r->o->ixit == NULL) {
        absent(r, "update", KEEL_VERDICT_INCONCLUSIVE, "no IXIT: the update interface and test bundles are unknown");
        return KEEL_OK;
    }
    if (u == NULL || json_is_null(u)) {
        absent(r, "update", KEEL_VERDICT_NA, "the IXIT declares no update mechanism");
        return KEEL_OK;
    }
    const json_t *tb = json_object_get(u, "test_bundles");
    const json_t *iface = ixit_interface_named(r->o->ixit, sget(u, "interface"));
    long port = (long)json_integer_value(json_object_get(iface, "port"));
    if (tb == NULL || iface == NULL || port <= 0 || strcmp(sget(iface, "transport"), "tcp") != 0) {
        absent(r, "update", KEEL_VERDICT_INCONCLUSIVE,
               tb == NULL ? "the IXIT names no test bundles" : "the update interface is not a TCP port of the device");
        return KEEL_OK;
    }
    char b[4][KEEL_PATH_MAX];
    const json_t *up = json_object_get(u, "upload");
    keel_update_probe_opts_t uo = {
        .http = {.host = r->o->host, .port = (unsigned)port, .tls = json_is_true(json_object_get(iface, "tls"))},
        .login = login_of(iface),
        .kind = strcmp(sget(up, "kind"), "http") == 0 ? KEEL_UPLOAD_HTTP : KEEL_UPLOAD_KEEL_API_V1,
        .method = json_string_value(json_object_get(up, "method")),
        .path = json_string_value(json_object_get(up, "path")),
        .good = ixit_path(r, json_string_value(json_object_get(tb, "good")), b[0], sizeof b[0]),
        .tampered = ixit_path(r, json_string_value(json_object_get(tb, "tampered")), b[1], sizeof b[1]),
        .downgraded = ixit_path(r, json_string_value(json_object_get(tb, "downgraded")), b[2], sizeof b[2]),
        .wrong_signer = ixit_path(r, json_string_value(json_object_get(tb, "wrong_signer")), b[3], sizeof b[3]),
        .budget_ms = left_ms(r, 60000),
    };
    char pw[LAB_SECRET_MAX + 1] = "";
    const json_t *cred = lab_credentials(r->o->ixit, iface);
    keel_status_t st;
    if (cred != NULL) {
        if ((st = lab_password(r, cred, pw)) != KEEL_OK) {
            keel_wipe(pw, sizeof pw);
            return st;
        }
        uo.user = json_string_value(json_object_get(cred, "user"));
        uo.password = pw;
    }
    char ifname[48];
    snprintf(ifname, sizeof ifname, "update@tcp:%ld", port);
    progress(r, "update: test bundles against %s", ifname);
    json_t *doc = NULL;
    double t = keel_now();
    st = keel_assess_probe_update(&uo, &doc);
    keel_wipe(pw, sizeof pw);
    return record(r, "update", ifname, t, st, doc);
}

static keel_status_t run_publication(run_t *r)
{
    const json_t *ixit = r->o->ixit;
    if (ixit == NULL) {
        absent(r, "publication", KEEL_VERDICT_INCONCLUSIVE, "no IXIT: where the policy and support period are published is unknown");
        return KEEL_OK;
    }
    const json_t *d = json_object_get(ixit, "disclosure");
    const json_t *sp = json_object_get(json_object_get(ixit, "product"), "support_period");
    keel_publication_opts_t po = {
        .security_txt = json_string_value(json_object_get(d, "security_txt")),
        .policy = json_string_value(json_object_get(d, "policy")),
        .support_end = json_string_value(json_object_get(sp, "end")),
        .support_at = json_string_value(json_object_get(sp, "published_at")),
        .base_dir = r->o->ixit_dir,
        .ca_file = r->o->ca_file,
    };
    progress(r, "publication: security.txt, disclosure policy, support period");
    json_t *doc = NULL;
    double t = keel_now();
    keel_status_t st = keel_assess_publication(&po, &doc);
    return record(r, "publication", "ixit", t, st, doc);
}

/* ---- the run ------------------------------------------------------------------ */

static void iso_now(char *out, size_t cap)
{
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "1970-01-01T00:00:00Z");
}

static keel_status_t run_all(run_t *r)
{
    json_t *scan = NULL;
    double t = keel_now();
    keel_status_t st = run_scan(r, &scan);
    if (st == KEEL_ERR_NOT_FOUND || st == KEEL_ERR_ARG || st == KEEL_ERR_NOMEM)
        return st;
    json_t *open = json_incref(json_object_get(json_object_get(scan, "tcp"), "open"));
    if ((st = record(r, "ports", NULL, t, st, scan)) != KEEL_OK) {
        json_decref(open);
        return st;
    }
    /* The update and publication checks log in with the lab's credentials:
     * they go before the HTTP probe's default-credential and brute-force
     * units, which trip the device's throttle for this source. */
    if ((st = run_update(r)) != KEEL_OK || (st = run_publication(r)) != KEEL_OK) {
        json_decref(open);
        return st;
    }
    size_t i;
    json_t *o;
    json_array_foreach(open, i, o) {
        if (i >= DEEP_PORTS_MAX) {
            progress(r, "%zu more open ports are listed but not probed in depth", json_array_size(open) - i);
            break;
        }
        if (keel_now() > r->deadline) {
            progress(r, "the run's budget is spent: the remaining ports are not probed");
            break;
        }
        if ((st = probe_port(r, o)) != KEEL_OK)
            break;
    }
    json_decref(open);
    if (st != KEEL_OK)
        return st;
    if (!r->saw_http) {
        static const char *const units[] = {"http.auth_sweep", "http.default_creds", "http.bruteforce",
                                            "http.password_change", "http.disclosure", "http.debug", "http.input"};
        for (size_t k = 0; k < sizeof units / sizeof units[0]; k++)
            absent(r, units[k], KEEL_VERDICT_NA, "no open port answered HTTP");
    }
    if (!r->saw_mqtt)
        absent(r, "mqtt", KEEL_VERDICT_NA, "no open port answered MQTT");
    if (!r->saw_service)
        absent(r, "telnet_ssh_ftp", KEEL_VERDICT_NA, "no telnet, SSH or FTP service is open");
    absent(r, "tls", KEEL_VERDICT_NA, "no open TCP port to probe");
    for (size_t k = 0; k < r->o->extra_len; k++) {
        progress(r, "%s: taken from before the run", sget(r->o->extra[k], "format"));
        if (json_array_append(r->observations, r->o->extra[k]) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the report");
    }
    absent(r, "firmware", KEEL_VERDICT_INCONCLUSIVE, "no firmware image was given (--firmware)");
    absent(r, "passwords", KEEL_VERDICT_INCONCLUSIVE, "no label file was given (--labels)");
    return KEEL_OK;
}

keel_status_t keel_assess_run(const keel_assess_run_opts_t *o, json_t **report, unsigned *mandatory_fail)
{
    if (o == NULL || report == NULL || o->host == NULL || (o->ics == NULL) != (o->ixit == NULL))
        return keel_errorf(KEEL_ERR_ARG, "assess run: a target, and both ICS and IXIT or neither");
    *report = NULL;
    run_t r = {.o = o, .t0 = keel_now()};
    r.deadline = r.t0 + (o->budget_s ? o->budget_s : 300);
    struct sockaddr_storage sa;
    socklen_t salen;
    keel_status_t st = keel_assess_resolve(o->host, 0, &sa, &salen, r.address, sizeof r.address);
    if (st != KEEL_OK)
        return st;
    char started[32];
    iso_now(started, sizeof started);
    const json_t *product = o->ixit != NULL ? json_object_get(o->ixit, "product") : NULL;
    r.report = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s}, s:o, s:[], s:[], s:{}}", "format",
                         "keel-assess-report-1", "generator", "keel " KEEL_ASSESS_VERSION, "started", started, "mode",
                         o->ics != NULL ? "ics+ixit" : "discovery", "target", "host", o->host, "address", r.address,
                         "product",
                         product != NULL ? json_pack("{s:s, s:s, s:s}", "manufacturer", sget(product, "manufacturer"),
                                                     "model", sget(product, "model"), "firmware_version",
                                                     sget(product, "firmware_version"))
                                         : json_null(),
                         "probes", "observations", "absent_units");
    if (r.report == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the report");
    r.probes = json_object_get(r.report, "probes");
    r.observations = json_object_get(r.report, "observations");
    r.absent = json_object_get(r.report, "absent_units");
    progress(&r, "assessing %s (%s) in %s mode", o->host, r.address, o->ics != NULL ? "ICS+IXIT" : "discovery");
    st = run_all(&r);
    if (st == KEEL_OK)
        st = keel_assess_judge(r.report, o->ics, o->ixit, mandatory_fail);
    if (st != KEEL_OK) {
        json_decref(r.report);
        return st;
    }
    json_object_del(r.report, "absent_units");
    (void)json_object_set_new(r.report, "duration_us", json_integer((json_int_t)((keel_now() - r.t0) * 1e6)));
    const json_t *s = json_object_get(r.report, "summary");
    progress(&r, "done: %lld PASS, %lld FAIL, %lld NOT_APPLICABLE, %lld INCONCLUSIVE; %lld mandatory FAIL",
             json_integer_value(json_object_get(s, KEEL_VERDICT_PASS)),
             json_integer_value(json_object_get(s, KEEL_VERDICT_FAIL)),
             json_integer_value(json_object_get(s, KEEL_VERDICT_NA)),
             json_integer_value(json_object_get(s, KEEL_VERDICT_INCONCLUSIVE)),
             json_integer_value(json_object_get(s, "mandatory_fail")));
    *report = r.report;
    return KEEL_OK;
}

/* keel assess probe http: the HTTP(S) probe of one port (test units http.*). */
#include "cli.h"

#include "keel/assess.h"
#include "keel/assess_http.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_CMD_FIELD_MAX 64u

static const char http_usage[] =
    "usage: keel assess probe http --target HOST --port P [options]\n"
    "\n"
    "Runs the test units http.* against one HTTP(S) port, in an order that keeps\n"
    "the lab's access as long as possible:\n"
    "  http.disclosure       versions in Server/X-Powered-By headers; versions, stack\n"
    "                        traces, file paths, SQL errors in error pages (5.6-2)\n"
    "  http.auth_sweep       declared routes that need a login, sent without one;\n"
    "                        common admin and config paths (5.5-4, 5.5-5)\n"
    "  http.debug            debug and diagnostic endpoints (5.6-4A)\n"
    "  http.input            malformed, oversized (1 MiB header, 10 MiB body) and\n"
    "                        injection requests in bursts; the port must keep\n"
    "                        answering (5.13-1B, and 5.13-1A when it serves a UI)\n"
    "  http.password_change  with the lab credentials: change, check old refused and\n"
    "                        new accepted, change back (5.1-4)\n"
    "  http.default_creds    the built-in default pairs against the login, declared or\n"
    "                        found (Basic challenge, login form, JSON login) (5.1-1)\n"
    "  http.bruteforce       random wrong passwords until throttled or --bruteforce-max\n"
    "                        (5.1-5)\n"
    "http.default_creds and http.bruteforce trip the device's throttle: the lab may\n"
    "have to wait before it logs in again.\n"
    "\n"
    "options:\n"
    "  --target HOST               IPv4 or IPv6 address or host name\n"
    "  --port P                    TCP port\n"
    "  --tls                       HTTPS (the certificate is not verified unless --ca-file)\n"
    "  --ca-file F                 verify the device's certificate and name against F\n"
    "  --login-kind K              basic, json or form: the declared login\n"
    "  --login-path P              its path (from /)\n"
    "  --user-field F              JSON/form field of the user (default username)\n"
    "  --password-field F          JSON/form field of the password (default password)\n"
    "  --password-change-path P    the declared password change (POST, JSON like the login,\n"
    "                              form for a form login; fields current and new)\n"
    "  --route METHOD:PATH[:auth][:security]\n"
    "                              a declared route; auth: it needs a login; security: it\n"
    "                              reads or changes a security-relevant setting. Repeatable\n"
    "  --user U                    the lab's user\n"
    "  --password-env VAR          the lab's password, from this environment variable\n"
    "  --password-file F           ... or from the first line of this file (mode 0600)\n"
    "  --bruteforce-max N          wrong guesses at most (default 25)\n"
    "  --budget-ms N               for the whole probe (default 45000)\n"
    "  --timeout-ms N              per request (default 5000)\n"
    "  --json                      print the observation document\n"
    "\n"
    "The password is never taken from the command line. Exit 0 when no finding is\n"
    "a fail, 1 when one is or the probe could not run, 2 for usage errors.\n";

/* A path from /, printable ASCII without spaces, 512 bytes at most. */
static int path_ok(const char *p)
{
    if (p == NULL || p[0] != '/' || strlen(p) > 512)
        return 0;
    for (; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return 0;
    return 1;
}

/* METHOD:PATH[:auth][:security]; the flags are taken from the end. */
static int parse_route(char *spec, keel_http_route_t *rt)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
    char *colon = strchr(spec, ':');
    if (colon == NULL)
        return 0;
    *colon = '\0';
    char *path = colon + 1;
    memset(rt, 0, sizeof *rt);
    for (int again = 1; again;) {
        again = 0;
        char *last = strrchr(path, ':');
        if (last != NULL && strcmp(last, ":auth") == 0) {
            rt->needs_auth = 1;
            *last = '\0';
            again = 1;
        } else if (last != NULL && strcmp(last, ":security") == 0) {
            rt->security_relevant = 1;
            *last = '\0';
            again = 1;
        }
    }
    int known = 0;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        known |= strcmp(spec, methods[i]) == 0;
    if (!known || !path_ok(path))
        return 0;
    rt->method = spec;
    rt->path = path;
    return 1;
}

static void print_doc(json_t *doc)
{
    printf("target %s port %lld (%s, %s) in %.2f s\n", assess_jstr(doc, "target"),
           json_integer_value(json_object_get(doc, "port")), assess_jstr(doc, "address"), assess_jstr(doc, "base"),
           json_integer_value(json_object_get(doc, "duration_us")) / 1e6);
    printf("  %-22s %-15s %s\n", "UNIT", "STATE", "REASON");
    json_t *units = json_object_get(doc, "units");
    static const char *const order[] = {"http.disclosure", "http.auth_sweep", "http.debug", "http.input",
                                        "http.password_change", "http.default_creds", "http.bruteforce"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        json_t *u = json_object_get(units, order[i]);
        printf("  %-22s %-15s %s\n", order[i], u ? assess_jstr(u, "state") : "-", u ? assess_jstr(u, "reason") : "");
    }
}

/* A port that gives no HTTP answer leaves every unit inconclusive: the probe could not run. */
static int any_ran(json_t *doc)
{
    const char *k;
    json_t *u;
    json_object_foreach(json_object_get(doc, "units"), k, u)
        if (strcmp(assess_jstr(u, "state"), "inconclusive") != 0)
            return 1;
    return 0;
}

int assess_probe_http_main(int argc, char **argv)
{
    static const char *cmd = "assess probe http";
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},
        {"port", required_argument, NULL, 'p'},
        {"tls", no_argument, NULL, 'S'},
        {"ca-file", required_argument, NULL, 'C'},
        {"login-kind", required_argument, NULL, 'k'},
        {"login-path", required_argument, NULL, 'l'},
        {"user-field", required_argument, NULL, 'U'},
        {"password-field", required_argument, NULL, 'P'},
        {"password-change-path", required_argument, NULL, 'c'},
        {"route", required_argument, NULL, 'r'},
        {"user", required_argument, NULL, 'u'},
        {"password-env", required_argument, NULL, 'e'},
        {"password-file", required_argument, NULL, 'f'},
        {"bruteforce-max", required_argument, NULL, 'b'},
        {"budget-ms", required_argument, NULL, 'B'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, http_usage))
        return CLI_OK;
    keel_http_route_t routes[KEEL_ASSESS_LIST_MAX];
    keel_http_probe_opts_t o;
    memset(&o, 0, sizeof o);
    o.routes = routes;
    const char *penv = NULL, *pfile = NULL;
    int json = 0, c, have_kind = 0;
    unsigned long v = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 't': o.http.host = optarg; break;
        case 'p':
            if (!cli_parse_uint(optarg, 1, 65535, &v))
                return cli_usage(cmd, "--port must be 1..65535");
            o.http.port = (unsigned)v;
            break;
        case 'S': o.http.tls = 1; break;
        case 'C': o.http.ca_file = optarg; break;
        case 'k':
            if (keel_http_login_kind_parse(optarg, &o.login.kind) != KEEL_OK || o.login.kind == KEEL_HTTP_LOGIN_NONE)
                return cli_usage(cmd, "--login-kind must be basic, json or form");
            have_kind = 1;
            break;
        case 'l':
            if (!path_ok(optarg))
                return cli_usage(cmd, "--login-path must be a path from / without spaces");
            o.login.path = optarg;
            break;
        case 'U':
        case 'P':
            if (strlen(optarg) == 0 || strlen(optarg) > HTTP_CMD_FIELD_MAX)
                return cli_usage(cmd, "field names are 1..%u characters", HTTP_CMD_FIELD_MAX);
            if (c == 'U')
                o.login.user_field = optarg;
            else
                o.login.password_field = optarg;
            break;
        case 'c':
            if (!path_ok(optarg))
                return cli_usage(cmd, "--password-change-path must be a path from / without spaces");
            o.password_change.path = optarg;
            break;
        case 'r':
            if (o.routes_len == KEEL_ASSESS_LIST_MAX)
                return cli_usage(cmd, "at most %d routes", KEEL_ASSESS_LIST_MAX);
            if (!parse_route(optarg, &routes[o.routes_len]))
                return cli_usage(cmd, "--route wants METHOD:PATH[:auth][:security] (GET, HEAD, POST, PUT, PATCH, "
                                      "DELETE; a path from /)");
            o.routes_len++;
            break;
        case 'u':
            if (strlen(optarg) == 0 || strlen(optarg) > 256)
                return cli_usage(cmd, "--user must be 1..256 characters");
            o.user = optarg;
            break;
        case 'e': penv = optarg; break;
        case 'f': pfile = optarg; break;
        case 'b':
            if (!cli_parse_uint(optarg, 1, 10000, &v))
                return cli_usage(cmd, "--bruteforce-max must be 1..10000");
            o.bruteforce_max = (unsigned)v;
            break;
        case 'B':
            if (!cli_parse_uint(optarg, 1, 3600000, &v))
                return cli_usage(cmd, "--budget-ms must be 1..3600000");
            o.budget_ms = (unsigned)v;
            break;
        case 'T':
            if (!cli_parse_uint(optarg, 1, 60000, &v))
                return cli_usage(cmd, "--timeout-ms must be 1..60000");
            o.http.timeout_ms = (unsigned)v;
            break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (o.http.host == NULL || o.http.port == 0)
        return cli_usage(cmd, "--target and --port are required");
    if (have_kind != (o.login.path != NULL))
        return cli_usage(cmd, "--login-kind and --login-path go together");
    if ((o.login.user_field != NULL || o.login.password_field != NULL) && o.login.kind != KEEL_HTTP_LOGIN_JSON &&
        o.login.kind != KEEL_HTTP_LOGIN_FORM)
        return cli_usage(cmd, "--user-field and --password-field need a json or form login");
    if (o.password_change.path != NULL) {
        if (o.login.kind != KEEL_HTTP_LOGIN_JSON && o.login.kind != KEEL_HTTP_LOGIN_FORM)
            return cli_usage(cmd, "--password-change-path needs a json or form login");
        o.password_change.kind = o.login.kind;
    }
    if ((penv != NULL || pfile != NULL) && o.user == NULL)
        return cli_usage(cmd, "a lab password needs --user");
    if (o.user != NULL && penv == NULL && pfile == NULL)
        return cli_usage(cmd, "--user needs --password-env or --password-file");
    char pw[ASSESS_LAB_PASSWORD_MAX + 1];
    if (penv != NULL || pfile != NULL) {
        keel_status_t st = assess_lab_password(pfile, penv, pw, sizeof pw);
        if (st != KEEL_OK)
            return cli_fail(cmd, st);
        o.password = pw;
    }
    json_t *doc = NULL;
    keel_status_t st = keel_assess_probe_http(&o, &doc);
    keel_wipe(pw, sizeof pw);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    int ran = any_ran(doc);
    int rc = assess_probe_finish(doc, json, print_doc);
    if (rc == CLI_OK && !ran) {
        fprintf(stderr, "keel: %s: no unit could run (no HTTP answer on the port)\n", cmd);
        rc = CLI_FAILED;
    }
    return rc;
}

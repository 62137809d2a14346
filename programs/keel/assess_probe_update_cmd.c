/* keel assess probe update and keel assess probe publication. */
#include "cli.h"

#include "keel/assess_update.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char update_usage[] =
    "usage: keel assess probe update --target HOST --port P [options]\n"
    "\n"
    "Uploads the lab's test bundles to the device's update interface and records\n"
    "which it takes (test unit \"update\"). A tampered (5.3-9, 5.3-2), downgraded\n"
    "(5.3-2) or wrongly signed (5.3-10, 5.3-7) bundle that is accepted is a fail.\n"
    "The good bundle must be accepted, or the refusals prove nothing (the unit is\n"
    "inconclusive); it is never applied: with keel-api-v1 it is dropped again by\n"
    "an empty upload. Without --tampered, tampered variants are made from --good.\n"
    "\n"
    "options:\n"
    "  --target HOST            IPv4 or IPv6 address or host name\n"
    "  --port P                 the update interface's TCP port\n"
    "  --tls                    https (the certificate is not checked without --ca-file)\n"
    "  --ca-file F              verify the device's certificate against this CA\n"
    "  --kind K                 keel-api-v1 (default: PUT /api/v1/update/bundle in 64 KiB\n"
    "                           pieces, then POST /api/v1/update/stage) or http (one request,\n"
    "                           the bundle as the body, at most 64 MiB)\n"
    "  --method M --path P      http: the upload request (POST or PUT, a path from /)\n"
    "  --version-path P         GET path whose answer changes when an update installs\n"
    "                           (default /api/v1/update for keel-api-v1)\n"
    "  --login-kind K           none, basic, json or form (default: json at /api/v1/session\n"
    "                           for keel-api-v1 when --user is given)\n"
    "  --login-path P           where the lab logs in\n"
    "  --user U                 the lab's user\n"
    "  --password-env VAR       the lab's password from this environment variable\n"
    "  --password-file F        ... or from the first line of this file (mode 0600)\n"
    "  --good F --tampered F --downgraded F --wrong-signer F   the test bundles\n"
    "  --timeout-ms N           per request (default 5000)\n"
    "  --budget-ms N            for the whole probe (default 60000)\n"
    "  --json                   print the observation document\n";

static const char publication_usage[] =
    "usage: keel assess probe publication [options]\n"
    "\n"
    "Fetches (http/https, at most 3 redirects, 64 KiB) or reads each document and\n"
    "judges it (test unit \"publication\"): the security.txt against RFC 9116 and\n"
    "the disclosure policy (5.2-1), the published end of the support period\n"
    "(5.3-13). An HTTP error or a missing date is a fail; a document that cannot\n"
    "be fetched at all (DNS, refused, timeout, TLS) leaves the unit inconclusive.\n"
    "\n"
    "options:\n"
    "  --security-txt URL|FILE  the security.txt\n"
    "  --policy URL|FILE        the vulnerability disclosure policy\n"
    "  --support-end YYYY-MM-DD the end of the support period the IXIT gives\n"
    "  --support-at URL|FILE    where the support period is published\n"
    "  --base-dir DIR           relative files are read from here (default: the current directory)\n"
    "  --ca-file F              CA for https (default: the system's store)\n"
    "  --now YYYY-MM-DD         judge dates as of this day (default: today)\n"
    "  --timeout-ms N           per fetch (default 5000)\n"
    "  --json                   print the observation document\n";

static void print_update(json_t *doc)
{
    printf("target %s (%s), upload %s\n", assess_jstr(doc, "url"), assess_jstr(doc, "address"),
           assess_jstr(doc, "kind"));
    json_t *login = json_object_get(doc, "login");
    if (login != NULL)
        printf("login: %s at %s as %s: %s (HTTP %lld)\n", assess_jstr(login, "kind"), assess_jstr(login, "path"),
               assess_jstr(login, "user"), json_is_true(json_object_get(login, "accepted")) ? "accepted" : "refused",
               json_integer_value(json_object_get(login, "status")));
    json_t *arr = json_object_get(doc, "bundles");
    if (json_array_size(arr) > 0)
        printf("  %-13s %-24s %-12s %-7s %s\n", "ROLE", "FILE", "RESULT", "STATUS", "ANSWER");
    size_t i;
    json_t *b;
    json_array_foreach(arr, i, b) {
        json_t *a = json_object_get(b, "answer");
        char answer[160];
        snprintf(answer, sizeof answer, "%s%s%s", assess_jstr(a, "error"),
                 *assess_jstr(a, "error") && *assess_jstr(a, "message") ? ": " : "",
                 *assess_jstr(a, "message") ? assess_jstr(a, "message") : assess_jstr(a, "transport"));
        for (char *c = answer; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
                *c = '?';
        printf("  %-13s %-24.24s %-12s %-7lld %.70s\n", assess_jstr(b, "role"), assess_jstr(b, "file"),
               assess_jstr(b, "result"), json_integer_value(json_object_get(a, "status")), answer);
        if (strcmp(assess_jstr(b, "variant"), "as given") != 0)
            printf("  %-13s %s\n", "", assess_jstr(b, "variant"));
    }
    json_t *same = json_object_get(doc, "version_same");
    if (same != NULL)
        printf("version answer: %s\n", json_is_true(same) ? "unchanged" : "CHANGED");
    assess_print_units(doc);
}

int assess_probe_update_main(int argc, char **argv)
{
    static const char *cmd = "assess probe update";
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},       {"port", required_argument, NULL, 'p'},
        {"tls", no_argument, NULL, 'S'},                {"ca-file", required_argument, NULL, 'C'},
        {"kind", required_argument, NULL, 'k'},         {"method", required_argument, NULL, 'm'},
        {"path", required_argument, NULL, 'P'},         {"version-path", required_argument, NULL, 'V'},
        {"login-kind", required_argument, NULL, 'l'},   {"login-path", required_argument, NULL, 'L'},
        {"user", required_argument, NULL, 'u'},         {"password-env", required_argument, NULL, 'e'},
        {"password-file", required_argument, NULL, 'f'}, {"good", required_argument, NULL, 'g'},
        {"tampered", required_argument, NULL, 'x'},     {"downgraded", required_argument, NULL, 'd'},
        {"wrong-signer", required_argument, NULL, 'w'}, {"timeout-ms", required_argument, NULL, 'T'},
        {"budget-ms", required_argument, NULL, 'B'},    {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, update_usage))
        return CLI_OK;
    keel_update_probe_opts_t o = {.kind = KEEL_UPLOAD_KEEL_API_V1};
    const char *penv = NULL, *pfile = NULL;
    int json = 0, c, login_given = 0;
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
            if (strcmp(optarg, "keel-api-v1") == 0)
                o.kind = KEEL_UPLOAD_KEEL_API_V1;
            else if (strcmp(optarg, "http") == 0)
                o.kind = KEEL_UPLOAD_HTTP;
            else
                return cli_usage(cmd, "--kind is keel-api-v1 or http");
            break;
        case 'm': o.method = optarg; break;
        case 'P': o.path = optarg; break;
        case 'V': o.version_path = optarg; break;
        case 'l':
            if (keel_http_login_kind_parse(optarg, &o.login.kind) != KEEL_OK)
                return cli_usage(cmd, "%s", keel_error_message());
            login_given = 1;
            break;
        case 'L': o.login.path = optarg; break;
        case 'u': o.user = optarg; break;
        case 'e': penv = optarg; break;
        case 'f': pfile = optarg; break;
        case 'g': o.good = optarg; break;
        case 'x': o.tampered = optarg; break;
        case 'd': o.downgraded = optarg; break;
        case 'w': o.wrong_signer = optarg; break;
        case 'T':
            if (!cli_parse_uint(optarg, 1, 600000, &v))
                return cli_usage(cmd, "--timeout-ms must be 1..600000");
            o.http.timeout_ms = (unsigned)v;
            break;
        case 'B':
            if (!cli_parse_uint(optarg, 1, 3600000, &v))
                return cli_usage(cmd, "--budget-ms must be 1..3600000");
            o.budget_ms = (unsigned)v;
            break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (o.http.host == NULL || o.http.port == 0)
        return cli_usage(cmd, "--target and --port are required");
    if (o.kind == KEEL_UPLOAD_HTTP && (o.method == NULL || o.path == NULL))
        return cli_usage(cmd, "--kind http needs --method and --path");
    if (o.kind == KEEL_UPLOAD_KEEL_API_V1 && (o.method != NULL || o.path != NULL))
        return cli_usage(cmd, "--method and --path are for --kind http");
    if (!login_given && o.user != NULL && o.kind == KEEL_UPLOAD_KEEL_API_V1) {
        o.login.kind = KEEL_HTTP_LOGIN_JSON;
        if (o.login.path == NULL)
            o.login.path = "/api/v1/session";
    }
    if (o.login.kind != KEEL_HTTP_LOGIN_NONE &&
        (o.login.path == NULL || o.user == NULL || (penv == NULL && pfile == NULL)))
        return cli_usage(cmd, "a login needs --login-path, --user and --password-env or --password-file");
    if (o.login.kind == KEEL_HTTP_LOGIN_NONE && (o.user != NULL || penv != NULL || pfile != NULL))
        return cli_usage(cmd, "--user and a password need a --login-kind other than none");
    char pw[ASSESS_LAB_PASSWORD_MAX + 1];
    keel_status_t st = KEEL_OK;
    if (o.login.kind != KEEL_HTTP_LOGIN_NONE) {
        st = assess_lab_password(pfile, penv, pw, sizeof pw);
        if (st != KEEL_OK)
            return cli_fail(cmd, st);
        o.password = pw;
    }
    json_t *doc = NULL;
    st = keel_assess_probe_update(&o, &doc);
    keel_wipe(pw, sizeof pw);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    return assess_probe_finish(doc, json, print_update);
}

static void print_publication(json_t *doc)
{
    static const char *const keys[] = {"security_txt", "policy", "support_page"};
    for (size_t i = 0; i < 3; i++) {
        json_t *d = json_object_get(doc, keys[i]);
        if (d == NULL)
            continue;
        printf("%-13s ", keys[i]);
        fputs(assess_jstr(d, "source"), stdout);
        fputs(": ", stdout);
        if (*assess_jstr(d, "transport"))
            assess_put_clean(assess_jstr(d, "transport"));
        else if (*assess_jstr(d, "failure"))
            assess_put_clean(assess_jstr(d, "failure"));
        else
            printf("%lld bytes%s\n", json_integer_value(json_object_get(d, "bytes")),
                   json_is_true(json_object_get(d, "truncated")) ? " (cut at 64 KiB)" : "");
    }
    json_t *s = json_object_get(doc, "support");
    if (s != NULL && *assess_jstr(s, "end"))
        printf("support ends  %s%s\n", assess_jstr(s, "end"),
               json_is_true(json_object_get(s, "ended")) ? " (ended)" : "");
    assess_print_units(doc);
}

int assess_probe_publication_main(int argc, char **argv)
{
    static const char *cmd = "assess probe publication";
    static const struct option opts[] = {
        {"security-txt", required_argument, NULL, 's'}, {"policy", required_argument, NULL, 'p'},
        {"support-end", required_argument, NULL, 'e'},  {"support-at", required_argument, NULL, 'a'},
        {"base-dir", required_argument, NULL, 'b'},     {"ca-file", required_argument, NULL, 'C'},
        {"now", required_argument, NULL, 'n'},          {"timeout-ms", required_argument, NULL, 'T'},
        {"json", no_argument, NULL, 'j'},               {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, publication_usage))
        return CLI_OK;
    keel_publication_opts_t o = {0};
    int json = 0, c;
    unsigned long v = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 's': o.security_txt = optarg; break;
        case 'p': o.policy = optarg; break;
        case 'e':
            if (cli_parse_day(optarg) == (time_t)-1)
                return cli_usage(cmd, "--support-end must be a date YYYY-MM-DD");
            o.support_end = optarg;
            break;
        case 'a': o.support_at = optarg; break;
        case 'b': o.base_dir = optarg; break;
        case 'C': o.ca_file = optarg; break;
        case 'n':
            o.now = cli_parse_day(optarg);
            if (o.now == (time_t)-1 || o.now == 0)
                return cli_usage(cmd, "--now must be a date YYYY-MM-DD after 1970-01-01");
            break;
        case 'T':
            if (!cli_parse_uint(optarg, 1, 600000, &v))
                return cli_usage(cmd, "--timeout-ms must be 1..600000");
            o.timeout_ms = (unsigned)v;
            break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (o.security_txt == NULL && o.policy == NULL && o.support_end == NULL && o.support_at == NULL)
        return cli_usage(cmd, "give at least one of --security-txt, --policy, --support-end, --support-at");
    json_t *doc = NULL;
    keel_status_t st = keel_assess_publication(&o, &doc);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    return assess_probe_finish(doc, json, print_publication);
}

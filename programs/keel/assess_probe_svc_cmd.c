/* keel assess probe mqtt and keel assess probe service (telnet, SSH, FTP). */
#include "cli.h"

#include "keel/assess_probe.h"
#include "keel/assess_services.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char mqtt_usage[] =
    "usage: keel assess probe mqtt --target HOST --port P [options]\n"
    "\n"
    "Connects to one MQTT port (3.1.1, and 5 when 3.1.1 is refused) without\n"
    "username, password or client certificate; when that is refused, tries the\n"
    "first few default credential pairs. On an accepted connection, subscribes to\n"
    "\"#\" and \"$SYS/#\" and reads what other clients publish for --listen-ms.\n"
    "Then sends two malformed CONNECTs and checks the broker still answers.\n"
    "Findings: a clear-text broker (5.5-1), anonymous access (5.5-4), default\n"
    "credentials (5.1-1), others' messages readable (5.5-7), a broker that stops\n"
    "answering after malformed input (5.13-1B).\n"
    "\n"
    "options:\n"
    "  --target HOST      IPv4 or IPv6 address or host name\n"
    "  --port P           TCP port (usually 1883 in clear, 8883 over TLS)\n"
    "  --tls              MQTT over TLS (the certificate is not verified: see 'probe tls')\n"
    "  --timeout-ms N     per network step (default 3000)\n"
    "  --listen-ms N      how long to read others' messages (default 1500)\n"
    "  --json             print the observation document\n";

static const char service_usage[] =
    "usage: keel assess probe service --target HOST --port P [options]\n"
    "\n"
    "Probes one telnet, SSH or FTP port. Telnet: remote login in clear; the login\n"
    "prompt is driven with default credential pairs (every telnet option refused).\n"
    "SSH: identification and version, algorithms offered, authentication methods,\n"
    "\"none\" and default pairs by password (or keyboard-interactive), root with an\n"
    "empty password. FTP: clear-text login, anonymous login, default pairs, the\n"
    "version in the greeting. Every read and wait is bounded by --timeout-ms, the\n"
    "whole probe by --budget-ms (pairs left untried are counted).\n"
    "\n"
    "options:\n"
    "  --target HOST      IPv4 or IPv6 address or host name\n"
    "  --port P           TCP port\n"
    "  --kind K           auto (from what the port says first), telnet, ssh or ftp (default auto)\n"
    "  --max-pairs N      default credential pairs to try at most (default 8, at most 64)\n"
    "  --timeout-ms N     per network step (default 3000)\n"
    "  --budget-ms N      for the whole probe (default 20000)\n"
    "  --json             print the observation document\n";

/* The unit's state and the evidence: the part both probes share. */
static void print_unit_evidence(json_t *doc)
{
    assess_print_units(doc);
    size_t i;
    json_t *e;
    if (json_array_size(json_object_get(doc, "evidence")) > 0)
        printf("evidence:\n");
    json_array_foreach(json_object_get(doc, "evidence"), i, e)
        printf("  > %.100s\n    < %.200s%s\n", assess_jstr(e, "sent"), assess_jstr(e, "observed"),
               strlen(assess_jstr(e, "observed")) > 200 ? "..." : "");
}

/* assess_probe_finish, and exit 1 when the unit is inconclusive: a port that
 * could not be probed is a failed run, not a clean one. */
static int finish_unit(json_t *doc, int json, void (*print)(json_t *doc), const char *unit)
{
    int inconclusive = strcmp(assess_jstr(json_object_get(json_object_get(doc, "units"), unit), "state"),
                              "inconclusive") == 0;
    int rc = assess_probe_finish(doc, json, print);
    return rc == CLI_OK && inconclusive ? CLI_FAILED : rc;
}

static void print_mqtt(json_t *doc)
{
    printf("target %s port %lld (%s)%s: %.2f s\n", assess_jstr(doc, "target"),
           json_integer_value(json_object_get(doc, "port")), assess_jstr(doc, "address"),
           json_is_true(json_object_get(doc, "tls")) ? " over TLS" : " in clear",
           json_integer_value(json_object_get(doc, "duration_us")) / 1e6);
    if (*assess_jstr(doc, "protocol"))
        printf("protocol:   MQTT %s, anonymous %s\n", assess_jstr(doc, "protocol"), assess_jstr(doc, "anonymous"));
    json_t *t = json_object_get(doc, "topics");
    if (json_array_size(t) > 0) {
        printf("topics:     %lld message(s)\n", json_integer_value(json_object_get(doc, "messages")));
        size_t i;
        json_t *e;
        json_array_foreach(t, i, e)
            printf("  %-40.40s %5lld msg %8lld bytes\n", assess_jstr(e, "topic"),
                   json_integer_value(json_object_get(e, "messages")), json_integer_value(json_object_get(e, "bytes")));
    }
    print_unit_evidence(doc);
}

int assess_probe_mqtt_main(int argc, char **argv)
{
    static const char *cmd = "assess probe mqtt";
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},     {"port", required_argument, NULL, 'p'},
        {"tls", no_argument, NULL, 's'},              {"timeout-ms", required_argument, NULL, 'T'},
        {"listen-ms", required_argument, NULL, 'L'},  {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, mqtt_usage))
        return CLI_OK;
    keel_mqtt_probe_opts_t o = {0};
    int json = 0, c;
    unsigned long v = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 't': o.host = optarg; break;
        case 'p':
            if (!cli_parse_uint(optarg, 1, 65535, &v))
                return cli_usage(cmd, "--port must be 1..65535");
            o.port = (unsigned)v;
            break;
        case 's': o.tls = 1; break;
        case 'T':
            if (!cli_parse_uint(optarg, 1, 30000, &v))
                return cli_usage(cmd, "--timeout-ms must be 1..30000");
            o.timeout_ms = (unsigned)v;
            break;
        case 'L':
            if (!cli_parse_uint(optarg, 1, 60000, &v))
                return cli_usage(cmd, "--listen-ms must be 1..60000");
            o.listen_ms = (unsigned)v;
            break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (o.host == NULL || o.port == 0)
        return cli_usage(cmd, "--target and --port are required");
    json_t *doc = NULL;
    keel_status_t st = keel_assess_probe_mqtt(&o, &doc);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    return finish_unit(doc, json, print_mqtt, "mqtt");
}

static void print_service(json_t *doc)
{
    printf("target %s port %lld (%s): %s, %.2f s, %lld pair(s) tried, %lld untried\n", assess_jstr(doc, "target"),
           json_integer_value(json_object_get(doc, "port")), assess_jstr(doc, "address"), assess_jstr(doc, "kind"),
           json_integer_value(json_object_get(doc, "duration_us")) / 1e6,
           json_integer_value(json_object_get(doc, "pairs_tried")),
           json_integer_value(json_object_get(doc, "pairs_untried")));
    if (*assess_jstr(doc, "banner"))
        printf("banner:     %.100s\n", assess_jstr(doc, "banner"));
    json_t *ssh = json_object_get(doc, "ssh");
    if (json_object_get(ssh, "methods") != NULL) {
        printf("methods:   ");
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(ssh, "methods"), i, m)
            printf(" %s", json_string_value(m));
        printf("\n");
    }
    print_unit_evidence(doc);
}

int assess_probe_service_main(int argc, char **argv)
{
    static const char *cmd = "assess probe service";
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},     {"port", required_argument, NULL, 'p'},
        {"kind", required_argument, NULL, 'k'},       {"max-pairs", required_argument, NULL, 'm'},
        {"timeout-ms", required_argument, NULL, 'T'}, {"budget-ms", required_argument, NULL, 'B'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, service_usage))
        return CLI_OK;
    keel_svc_probe_opts_t o = {0};
    int json = 0, c;
    unsigned long v = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 't': o.host = optarg; break;
        case 'p':
            if (!cli_parse_uint(optarg, 1, 65535, &v))
                return cli_usage(cmd, "--port must be 1..65535");
            o.port = (unsigned)v;
            break;
        case 'k':
            if (strcmp(optarg, "auto") == 0)
                o.kind = KEEL_SVC_AUTO;
            else if (strcmp(optarg, "telnet") == 0)
                o.kind = KEEL_SVC_TELNET;
            else if (strcmp(optarg, "ssh") == 0)
                o.kind = KEEL_SVC_SSH;
            else if (strcmp(optarg, "ftp") == 0)
                o.kind = KEEL_SVC_FTP;
            else
                return cli_usage(cmd, "--kind must be auto, telnet, ssh or ftp");
            break;
        case 'm':
            if (!cli_parse_uint(optarg, 1, 64, &v))
                return cli_usage(cmd, "--max-pairs must be 1..64");
            o.max_pairs = (unsigned)v;
            break;
        case 'T':
            if (!cli_parse_uint(optarg, 1, 30000, &v))
                return cli_usage(cmd, "--timeout-ms must be 1..30000");
            o.timeout_ms = (unsigned)v;
            break;
        case 'B':
            if (!cli_parse_uint(optarg, 1, 600000, &v))
                return cli_usage(cmd, "--budget-ms must be 1..600000");
            o.budget_ms = (unsigned)v;
            break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (o.host == NULL || o.port == 0)
        return cli_usage(cmd, "--target and --port are required");
    json_t *doc = NULL;
    keel_status_t st = keel_assess_probe_service(&o, &doc);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    return finish_unit(doc, json, print_service, "telnet_ssh_ftp");
}

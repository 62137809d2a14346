/* keel assess probe: ports (TCP scan + UDP IoT probes) and tls. */
#include "cli.h"

#include "keel/assess_probe.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static const char probe_usage[] =
    "usage: keel assess probe <subcommand> [options]\n"
    "\n"
    "Functional probes of one target. Each prints what it sent and observed\n"
    "(--json: the observation document of docs/internals/assess-probes.md) and\n"
    "exits 1 when a finding has severity \"fail\".\n"
    "\n"
    "subcommands:\n"
    "  ports   TCP connect scan with banners; UDP probes of SSDP, mDNS, CoAP, SNMP\n"
    "  tls     TLS versions, cipher suites, groups, certificate, plaintext answer\n"
    "  http    HTTP(S): unauthenticated sweep, disclosure, debug endpoints, default\n"
    "          credentials, brute-force rate, password change, malformed input\n"
    "  mqtt    MQTT broker: anonymous access, clear text, reading others' topics\n"
    "  service telnet, SSH or FTP: clear-text login, banners, default credentials\n"
    "  update  tampered, downgraded and wrongly signed bundles must be refused\n"
    "  publication  security.txt, disclosure policy and support period\n"
    "\n"
    "Run 'keel assess probe <subcommand> --help' for its options.\n";

static const char ports_usage[] =
    "usage: keel assess probe ports --target HOST [options]\n"
    "\n"
    "Connects to every TCP port in the list (non-blocking, many at once; a port\n"
    "that times out is tried once more and then counts as filtered, a refusal as\n"
    "closed) and reads what each open port says first. With --udp, sends the\n"
    "real request of SSDP (1900), mDNS (5353), CoAP (5683) and SNMP (161, community\n"
    "\"public\") and records the answers. An SNMP answer is a 5.1-1 finding.\n"
    "\n"
    "options:\n"
    "  --target HOST            IPv4 or IPv6 address or host name\n"
    "  --ports LIST             ports and ranges, e.g. 22,80,8000-8100 (default 1-65535)\n"
    "  --udp                    run the four UDP probes on their usual ports\n"
    "  --udp-probe SERVICE:PORT one UDP probe (ssdp, mdns, coap, snmp) on PORT; repeatable\n"
    "  --no-tcp                 UDP probes only\n"
    "  --timeout-ms N           per connect and per UDP attempt (default 1000)\n"
    "  --banner-ms N            how long an open port may take to speak (default 800)\n"
    "  --window N               sockets in flight (default: what RLIMIT_NOFILE allows, at most 8192)\n"
    "  --json                   print the observation document\n";

static const char tls_usage[] =
    "usage: keel assess probe tls --target HOST --port P [options]\n"
    "\n"
    "One handshake per question: each protocol version (SSL 3.0 to TLS 1.3), each\n"
    "cipher suite the local OpenSSL knows, each key exchange group; records the\n"
    "certificate; then sends HTTP and MQTT in clear to see whether the port\n"
    "answers without TLS. Findings: TLS below 1.2, suites without AEAD or forward\n"
    "secrecy, RSA keys below 2048 or EC below 256 bits, expired certificates,\n"
    "plaintext answers.\n"
    "\n"
    "options:\n"
    "  --target HOST      IPv4 or IPv6 address or host name (sent as SNI when a name)\n"
    "  --port P           TCP port\n"
    "  --timeout-ms N     per handshake (default 3000)\n"
    "  --budget-ms N      for the whole probe (default 25000); what does not fit is listed\n"
    "  --json             print the observation document\n";

const char *assess_jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

void assess_put_clean(const char *s)
{
    for (; *s != '\0'; s++)
        putchar((unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f ? *s : '?');
    putchar('\n');
}

void assess_print_units(json_t *doc)
{
    const char *k;
    json_t *u;
    json_object_foreach(json_object_get(doc, "units"), k, u) {
        printf("unit %s: %s%s", k, assess_jstr(u, "state"), *assess_jstr(u, "reason") ? ": " : "");
        assess_put_clean(assess_jstr(u, "reason"));
    }
}

int assess_probe_finish(json_t *doc, int json, void (*print)(json_t *doc))
{
    json_t *arr = json_object_get(doc, "findings");
    int rc = CLI_OK, failed = 0;
    size_t i;
    json_t *f;
    json_array_foreach(arr, i, f)
        if (strcmp(assess_jstr(f, "severity"), "fail") == 0)
            failed = 1;
    if (json) {
        rc = cli_print_json(doc);
    } else {
        if (print != NULL)
            print(doc);
        printf(json_array_size(arr) ? "findings:\n" : "findings: none\n");
        /* "what" may quote the device: cli_print_text shows it printable only */
        json_array_foreach(arr, i, f) {
            char label[32];
            snprintf(label, sizeof label, "%-7s %-5s", assess_jstr(f, "provision"), assess_jstr(f, "severity"));
            cli_print_text(label, assess_jstr(f, "what"));
        }
    }
    if (rc == CLI_OK && failed)
        rc = CLI_FAILED;
    json_decref(doc);
    return rc;
}

keel_status_t assess_lab_password(const char *pfile, const char *penv, char *pw, size_t cap)
{
    size_t len = 0;
    keel_status_t st = keel_secret_read(pfile, penv, pw, cap, &len);
    if (st != KEEL_OK)
        keel_wipe(pw, cap);
    return st;
}

/* A window of thousands of sockets needs the soft descriptor limit raised
 * towards the hard one; the hard limit is the administrator's and stays. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = KEEL_SCAN_WINDOW_MAX + 128;
    if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max)
        want = rl.rlim_max;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rl.rlim_cur = want;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void print_ports(json_t *doc)
{
    json_t *tcp = json_object_get(doc, "tcp");
    printf("target %s (%s)\n", assess_jstr(doc, "target"), assess_jstr(doc, "address"));
    if (tcp != NULL) {
        printf("TCP: %lld ports in %.2f s (window %lld, timeout %lld ms): %zu open, %lld closed, %lld filtered\n",
               json_integer_value(json_object_get(tcp, "ports_scanned")),
               json_integer_value(json_object_get(tcp, "duration_us")) / 1e6,
               json_integer_value(json_object_get(tcp, "window")),
               json_integer_value(json_object_get(tcp, "timeout_ms")),
               json_array_size(json_object_get(tcp, "open")), json_integer_value(json_object_get(tcp, "closed")),
               json_integer_value(json_object_get(tcp, "filtered")));
        size_t i;
        json_t *o;
        if (json_array_size(json_object_get(tcp, "open")) > 0)
            printf("  %-11s %-11s %s\n", "PORT", "CONNECT", "BANNER");
        json_array_foreach(json_object_get(tcp, "open"), i, o) {
            char port[16];
            snprintf(port, sizeof port, "%lld/tcp", json_integer_value(json_object_get(o, "port")));
            printf("  %-11s %8.2f ms %.60s%s\n", port, json_integer_value(json_object_get(o, "connect_us")) / 1000.0,
                   assess_jstr(o, "banner"), strlen(assess_jstr(o, "banner")) > 60 ? "..." : "");
        }
    }
    json_t *udp = json_object_get(doc, "udp");
    if (udp != NULL) {
        printf("UDP:\n  %-8s %-6s %-10s %s\n", "SERVICE", "PORT", "STATE", "RESPONSE");
        size_t i;
        json_t *u;
        json_array_foreach(udp, i, u)
            printf("  %-8s %-6lld %-10s %.60s\n", assess_jstr(u, "service"),
                   json_integer_value(json_object_get(u, "port")), assess_jstr(u, "state"), assess_jstr(u, "response"));
    }
}

static int cmd_ports(int argc, char **argv)
{
    static const char *cmd = "assess probe ports";
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},   {"ports", required_argument, NULL, 'p'},
        {"udp", no_argument, NULL, 'u'},            {"udp-probe", required_argument, NULL, 'U'},
        {"no-tcp", no_argument, NULL, 'N'},         {"timeout-ms", required_argument, NULL, 'T'},
        {"banner-ms", required_argument, NULL, 'b'}, {"window", required_argument, NULL, 'w'},
        {"json", no_argument, NULL, 'j'},           {NULL, 0, NULL, 0}};
    static keel_portset_t set;
    keel_udp_probe_t udp[KEEL_PROBE_UDP_MAX];
    keel_scan_opts_t o = {.tcp = &set, .udp = udp};
    const char *ports = "1-65535";
    int json = 0, c, no_tcp = 0;
    unsigned long v = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 't': o.host = optarg; break;
        case 'p': ports = optarg; break;
        case 'u':
            for (unsigned s = 0; s < KEEL_UDP_SERVICE_COUNT; s++) {
                if (o.udp_len == KEEL_PROBE_UDP_MAX)
                    return cli_usage(cmd, "at most %u UDP probes", KEEL_PROBE_UDP_MAX);
                udp[o.udp_len++] = (keel_udp_probe_t){(keel_udp_service_t)s,
                                                      keel_udp_service_default_port((keel_udp_service_t)s)};
            }
            break;
        case 'U': {
            char name[16];
            const char *colon = strchr(optarg, ':');
            keel_udp_service_t s;
            if (colon == NULL || (size_t)(colon - optarg) >= sizeof name)
                return cli_usage(cmd, "--udp-probe wants SERVICE:PORT");
            memcpy(name, optarg, (size_t)(colon - optarg));
            name[colon - optarg] = '\0';
            if (keel_udp_service_parse(name, &s) != KEEL_OK)
                return cli_usage(cmd, "%s", keel_error_message());
            if (!cli_parse_uint(colon + 1, 1, 65535, &v))
                return cli_usage(cmd, "--udp-probe port must be 1..65535");
            if (o.udp_len == KEEL_PROBE_UDP_MAX)
                return cli_usage(cmd, "at most %u UDP probes", KEEL_PROBE_UDP_MAX);
            udp[o.udp_len++] = (keel_udp_probe_t){s, (unsigned)v};
            break;
        }
        case 'N': no_tcp = 1; break;
        case 'T':
            if (!cli_parse_uint(optarg, 1, 60000, &v))
                return cli_usage(cmd, "--timeout-ms must be 1..60000");
            o.timeout_ms = (unsigned)v;
            break;
        case 'b':
            if (!cli_parse_uint(optarg, 1, 60000, &v))
                return cli_usage(cmd, "--banner-ms must be 1..60000");
            o.banner_ms = (unsigned)v;
            break;
        case 'w':
            if (!cli_parse_uint(optarg, 1, KEEL_SCAN_WINDOW_MAX, &v))
                return cli_usage(cmd, "--window must be 1..%u", KEEL_SCAN_WINDOW_MAX);
            o.window = (unsigned)v;
            break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (o.host == NULL)
        return cli_usage(cmd, "--target is required");
    if (no_tcp && o.udp_len == 0)
        return cli_usage(cmd, "--no-tcp needs --udp or --udp-probe");
    if (no_tcp)
        o.tcp = NULL;
    else if (keel_portset_parse(ports, &set) != KEEL_OK)
        return cli_usage(cmd, "--ports: %s", keel_error_message());
    raise_nofile();
    json_t *doc = NULL;
    keel_status_t st = keel_assess_scan(&o, &doc);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    return assess_probe_finish(doc, json, print_ports);
}

static void print_tls(json_t *doc)
{
    printf("target %s port %lld (%s): %lld handshakes in %.2f s\n", assess_jstr(doc, "target"),
           json_integer_value(json_object_get(doc, "port")), assess_jstr(doc, "address"),
           json_integer_value(json_object_get(doc, "handshakes")),
           json_integer_value(json_object_get(doc, "duration_us")) / 1e6);
    json_t *pref = json_object_get(doc, "preferred");
    if (json_is_true(json_object_get(pref, "accepted")))
        printf("preferred:    %s %s%s%s\n", assess_jstr(pref, "version"), assess_jstr(pref, "cipher"),
               *assess_jstr(pref, "group") ? " group " : "", assess_jstr(pref, "group"));
    else
        printf("preferred:    no handshake (%s)\n", assess_jstr(pref, "reason"));
    size_t i;
    json_t *e;
    printf("versions:    ");
    json_array_foreach(json_object_get(doc, "versions"), i, e)
        printf(" %s %s", assess_jstr(e, "version"),
               json_is_true(json_object_get(e, "accepted")) ? "yes" : json_is_null(json_object_get(e, "accepted")) ? "n/a" : "no");
    printf("\nciphers:      %zu accepted of %lld tried\n", json_array_size(json_object_get(doc, "ciphers")),
           json_integer_value(json_object_get(doc, "ciphers_tried")));
    json_array_foreach(json_object_get(doc, "ciphers"), i, e)
        printf("  %-8s %-42s%s%s\n", assess_jstr(e, "version"), assess_jstr(e, "name"),
               json_is_true(json_object_get(e, "aead")) ? " AEAD" : " no-AEAD",
               json_is_true(json_object_get(e, "forward_secret")) ? " FS" : " no-FS");
    printf("groups:      ");
    json_array_foreach(json_object_get(doc, "groups"), i, e)
        if (json_is_true(json_object_get(e, "accepted")))
            printf(" %s", assess_jstr(e, "name"));
    json_t *c = json_object_get(doc, "certificate");
    if (json_is_object(c)) {
        printf("\ncertificate:  %s\n", assess_jstr(c, "subject"));
        printf("  issuer      %s%s\n", assess_jstr(c, "issuer"),
               json_is_true(json_object_get(c, "self_signed")) ? " (self-signed)" : "");
        printf("  key         %s %lld bits%s%s, signature %s\n", assess_jstr(c, "key_type"),
               json_integer_value(json_object_get(c, "key_bits")), *assess_jstr(c, "curve") ? " " : "",
               assess_jstr(c, "curve"), assess_jstr(c, "signature_algorithm"));
        printf("  valid       %s to %s%s%s, chain of %lld\n", assess_jstr(c, "not_before"), assess_jstr(c, "not_after"),
               json_is_true(json_object_get(c, "expired")) ? " EXPIRED" : "",
               json_is_true(json_object_get(c, "not_yet_valid")) ? " NOT YET VALID" : "",
               json_integer_value(json_object_get(c, "chain_length")));
    } else {
        printf("\ncertificate:  none seen\n");
    }
    printf("plaintext:   ");
    json_array_foreach(json_object_get(doc, "plaintext"), i, e)
        printf(" %s: %s", assess_jstr(e, "protocol"), assess_jstr(e, "reply_kind"));
    printf("\n");
}

static int cmd_tls(int argc, char **argv)
{
    static const char *cmd = "assess probe tls";
    static const struct option opts[] = {
        {"target", required_argument, NULL, 't'},     {"port", required_argument, NULL, 'p'},
        {"timeout-ms", required_argument, NULL, 'T'}, {"budget-ms", required_argument, NULL, 'B'},
        {"json", no_argument, NULL, 'j'},             {NULL, 0, NULL, 0}};
    keel_tls_probe_opts_t o = {0};
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
    keel_status_t st = keel_assess_probe_tls(&o, &doc);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    return assess_probe_finish(doc, json, print_tls);
}

int assess_probe_main(int argc, char **argv)
{
    static const cli_sub_t subs[] = {
        {"ports", ports_usage, cmd_ports},
        {"tls", tls_usage, cmd_tls},
        {"http", NULL, assess_probe_http_main},
        {"mqtt", NULL, assess_probe_mqtt_main},
        {"service", NULL, assess_probe_service_main},
        {"update", NULL, assess_probe_update_main},
        {"publication", NULL, assess_probe_publication_main},
    };
    return cli_dispatch("assess probe", probe_usage, subs, sizeof subs / sizeof subs[0], argc, argv);
}

/*
 * keel assess run: the whole assessment of one target, from ICS and IXIT (or
 * none: discovery mode) to report.json, report.md, report.html and
 * junit.xml. The engine is keel_assess_run (src/assess/engine.c).
 */
#include "cli.h"

#include "keel/assess.h"
#include "keel/assess_firmware.h"
#include "keel/assess_report.h"
#include "keel/assess_run.h"

#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* The assessment could not run at all (docs/assess-report.md). */
#define RUN_BROKEN 3

static const char run_usage[] =
    "usage: keel assess run --target HOST --out DIR [options]\n"
    "\n"
    "Assesses one device against the 78 provisions of EN 303 645 V3.1.3 in the\n"
    "manner of ETSI TS 103 701: scans every TCP port and the usual UDP services,\n"
    "finds what each open port speaks, runs the probes that apply (TLS, HTTP,\n"
    "MQTT, telnet/SSH/FTP, update bundles, publications), and gives each\n"
    "provision a verdict: PASS, FAIL, NOT_APPLICABLE or INCONCLUSIVE, with the\n"
    "evidence. With --ics and --ixit the manufacturer's statements are judged\n"
    "too; without them the run is in discovery mode and every conceptual test\n"
    "case is INCONCLUSIVE.\n"
    "\n"
    "Writes DIR/report.json, DIR/report.md, DIR/report.html and DIR/junit.xml\n"
    "(docs/assess-report.md). Progress goes to stderr.\n"
    "\n"
    "options:\n"
    "  --target HOST      the device: IPv4 or IPv6 address or host name\n"
    "  --out DIR          where the report goes (created; its parent must exist)\n"
    "  --ics FILE         the ICS (keel-ics-1), with --ixit\n"
    "  --ixit FILE        the IXIT (keel-ixit-1); relative paths in it are read from\n"
    "                     its directory, and its lab password from the variable or\n"
    "                     file its lab_credentials name\n"
    "  --firmware PATH    also scan this firmware image or tree (keel assess firmware)\n"
    "  --labels FILE      also analyse these label passwords (keel assess passwords)\n"
    "  --ports LIST       TCP ports to scan (default 1-65535)\n"
    "  --ca-file FILE     CA for https URLs of the publications\n"
    "  --budget-s N       stop starting probes after N seconds (default 300)\n"
    "  --quiet            no progress lines\n"
    "\n"
    "exit status: 0 no mandatory provision FAILs, 1 at least one does,\n"
    "2 usage or unusable ICS/IXIT, 3 the assessment could not run.\n";

static void print_progress(void *arg, const char *line)
{
    (void)arg;
    fprintf(stderr, "%s\n", line);
}

/* The scan wants many sockets at once: raise the soft limit towards the hard one. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int load_inputs(const char *cmd, const char *ics_path, const char *ixit_path, json_t **ics, json_t **ixit)
{
    keel_status_t st = keel_assess_ics_load(ics_path, KEEL_ASSESS_STRICT, ics, NULL);
    if (st == KEEL_OK)
        st = keel_assess_ixit_load(ixit_path, KEEL_ASSESS_STRICT, ixit, NULL);
    if (st == KEEL_OK)
        st = keel_assess_cross_check(*ics, *ixit);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel: %s: %s\n", cmd, keel_error_message());
        return CLI_USAGE;
    }
    return CLI_OK;
}

static void print_summary(const json_t *rep, const char *out)
{
    const json_t *s = json_object_get(rep, "summary");
    printf("%lld provisions: %lld PASS, %lld FAIL, %lld NOT_APPLICABLE, %lld INCONCLUSIVE\n",
           json_integer_value(json_object_get(s, "provisions")), json_integer_value(json_object_get(s, "PASS")),
           json_integer_value(json_object_get(s, "FAIL")), json_integer_value(json_object_get(s, "NOT_APPLICABLE")),
           json_integer_value(json_object_get(s, "INCONCLUSIVE")));
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(rep, "provisions"), i, p) {
        const char *v = json_string_value(json_object_get(p, "verdict"));
        if (v == NULL || strcmp(v, "FAIL") != 0)
            continue;
        printf("  FAIL %-8s (%s) %s\n", json_string_value(json_object_get(p, "id")),
               json_string_value(json_object_get(p, "status")), json_string_value(json_object_get(p, "reason")));
    }
    printf("%s: %lld mandatory provisions FAIL\n",
           json_is_true(json_object_get(s, "conforming")) ? "conforming" : "NOT conforming",
           json_integer_value(json_object_get(s, "mandatory_fail")));
    printf("report: %s/report.html (also report.json, report.md, junit.xml)\n", out);
}

int assess_run_main(int argc, char **argv)
{
    static const char *cmd = "assess run";
    static const struct option opts[] = {{"target", required_argument, NULL, 't'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"ics", required_argument, NULL, 'c'},
                                         {"ixit", required_argument, NULL, 'x'},
                                         {"firmware", required_argument, NULL, 'f'},
                                         {"labels", required_argument, NULL, 'l'},
                                         {"ports", required_argument, NULL, 'p'},
                                         {"ca-file", required_argument, NULL, 'a'},
                                         {"budget-s", required_argument, NULL, 'b'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, run_usage))
        return CLI_OK;
    keel_assess_run_opts_t o = {.progress = print_progress};
    const char *out = NULL, *ics_path = NULL, *ixit_path = NULL, *firmware = NULL, *labels = NULL;
    unsigned long v;
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 't': o.host = optarg; break;
        case 'o': out = optarg; break;
        case 'c': ics_path = optarg; break;
        case 'x': ixit_path = optarg; break;
        case 'f': firmware = optarg; break;
        case 'l': labels = optarg; break;
        case 'p': o.ports = optarg; break;
        case 'a': o.ca_file = optarg; break;
        case 'b':
            if (!cli_parse_uint(optarg, 10, 86400, &v))
                return cli_usage(cmd, "--budget-s must be 10..86400");
            o.budget_s = (unsigned)v;
            break;
        case 'q': o.progress = NULL; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (o.host == NULL || out == NULL)
        return cli_usage(cmd, "--target and --out are required");
    if ((ics_path == NULL) != (ixit_path == NULL))
        return cli_usage(cmd, "--ics and --ixit go together (neither: discovery mode)");
    json_t *ics = NULL, *ixit = NULL, *extra[2] = {NULL, NULL};
    char dir[KEEL_PATH_MAX];
    int rc = CLI_OK;
    if (ics_path != NULL) {
        if ((rc = load_inputs(cmd, ics_path, ixit_path, &ics, &ixit)) != CLI_OK)
            return rc;
        snprintf(dir, sizeof dir, "%s", ixit_path);
        o.ixit_dir = dirname(dir);
        o.ics = ics;
        o.ixit = ixit;
    }
    size_t nextra = 0;
    keel_status_t st = KEEL_OK;
    if (firmware != NULL) {
        keel_assess_firmware_limits_t lim = keel_assess_firmware_defaults();
        unsigned problems = 0;
        if (o.progress != NULL)
            fprintf(stderr, "firmware: scanning %s\n", firmware);
        st = keel_assess_firmware_scan(firmware, &lim, &extra[nextra], &problems);
        if (st != KEEL_OK) {
            rc = cli_fail(cmd, st == KEEL_ERR_NOT_FOUND || st == KEEL_ERR_FORMAT ? KEEL_ERR_CONFIG : st);
            goto done;
        }
        nextra++;
    }
    if (labels != NULL) {
        const char *common = getenv("KEEL_COMMON_PASSWORDS");
        unsigned findings = 0;
        rc = assess_passwords_doc(cmd, labels, common != NULL ? common : KEEL_COMMON_PASSWORDS, &extra[nextra],
                                  &findings);
        if (extra[nextra] == NULL)
            goto done;
        nextra++;
    }
    o.extra = extra;
    o.extra_len = nextra;
    raise_nofile();
    /* A target that resets a TLS connection must not end the run: OpenSSL
     * writes with write(2), which raises SIGPIPE (the probes block it too). */
    (void)signal(SIGPIPE, SIG_IGN);
    json_t *report = NULL;
    unsigned mfail = 0;
    st = keel_assess_run(&o, &report, &mfail);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel: %s: %s\n", cmd, keel_error_message());
        rc = st == KEEL_ERR_CONFIG || st == KEEL_ERR_ARG ? CLI_USAGE : RUN_BROKEN;
        goto done;
    }
    st = keel_assess_report_write(report, out);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel: %s: %s\n", cmd, keel_error_message());
        json_decref(report);
        rc = RUN_BROKEN;
        goto done;
    }
    print_summary(report, out);
    json_decref(report);
    rc = mfail == 0 ? CLI_OK : CLI_FAILED;
done:
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        json_decref(extra[i]);
    json_decref(ics);
    json_decref(ixit);
    return rc;
}

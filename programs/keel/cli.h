/* Shared helpers of the keel command line: errors, secrets, progress, JSON. */
#ifndef KEEL_CLI_H
#define KEEL_CLI_H

#include "keel/base.h"
#include "keel/factory.h"

#include <jansson.h>
#include <time.h>

/* Exit codes (DESIGN.md): 0 success, 1 failed or found problems, 2 usage. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

/* "keel: <cmd>: <message>" on stderr; returns 2 for argument errors, else 1. */
int cli_fail(const char *cmd, keel_status_t st);
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "YYYY-MM-DD" as midnight UTC; (time_t)-1 when it is not a real date (1970 on). */
time_t cli_parse_day(const char *s);
#ifdef __clang_analyzer__
/* For the static analyzer, which does not follow variadic calls: what cli_usage returns. */
#define cli_usage(...) ((void)cli_usage(__VA_ARGS__), CLI_USAGE)
#endif
/* Progress bar on stderr, only when stderr is a terminal. */
void cli_progress(void *arg, unsigned done, unsigned total);
/* Prints one JSON document on stdout. */
int cli_print_json(json_t *j);
/* Parses a decimal unsigned in [min, max]. */
int cli_parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out);

/* getopt_long with a leading ':' in optstring: reports a missing value or an
 * unknown option and returns the usage exit code. */
int cli_bad_option(const char *cmd, int c, char **argv);
/* Prints `text` and returns 1 if argv holds --help or -h. */
int cli_want_help(int argc, char **argv, const char *text);
/* Loads a factory with the issuing keys in `need`, reading the passphrase
 * from pfile or penv when given. */
keel_status_t cli_load_factory(const char *dir, unsigned need, const char *pfile, const char *penv,
                               keel_factory_t **out);

/* Prints "  LABEL  text" with continuation lines indented under the text and
 * anything but printable characters, newline and tab shown as '?': text from
 * bundles and files comes from outside. */
void cli_print_text(const char *label, const char *s);

/* The common part of the commands that issue a certificate from the factory
 * (--dir --name --out [--passphrase-file|--passphrase-env] [--json]): loads
 * the factory with the issuing key in `need` and calls `fn`. Returns -1 when
 * it succeeded (the caller prints its result), else the exit code. */
typedef keel_status_t (*cli_issue_fn)(keel_factory_t *f, const char *name, const char *outdir);
typedef struct {
    const char *name, *out;
    int json;
} cli_issued_t;
int cli_issue(const char *cmd, int argc, char **argv, unsigned need, cli_issue_fn fn, cli_issued_t *out);

/* Runs the subcommand argv[1] of `group` (with --help on every level). */
typedef struct {
    const char *name;
    const char *help; /* printed for --help; NULL if the subcommand prints its own */
    int (*fn)(int argc, char **argv);
} cli_sub_t;
int cli_dispatch(const char *group, const char *usage, const cli_sub_t *subs, size_t n, int argc, char **argv);

int cmd_factory(int argc, char **argv);
int cmd_bundle(int argc, char **argv);
int cmd_update(int argc, char **argv);
int cmd_boot(int argc, char **argv);
int cmd_app(int argc, char **argv);
int cmd_assess(int argc, char **argv);
int cmd_fleet(int argc, char **argv); /* fleet_cmd.c */
int cmd_disclose(int argc, char **argv); /* disclose_cmd.c */
int cmd_sbom(int argc, char **argv);     /* supply_cmd.c */
int cmd_vulns(int argc, char **argv);    /* supply_cmd.c */

/* keel assess subcommands, each in its own file (assess_*_cmd.c). */
int assess_init_main(int argc, char **argv);
int assess_probe_main(int argc, char **argv);
int assess_firmware_main(int argc, char **argv);
int assess_passwords_main(int argc, char **argv);
int assess_run_main(int argc, char **argv);
int assess_catalogue_main(int argc, char **argv);
/* The 5.1-2 label analysis as a document (assess_firmware_cmd.c). */
int assess_passwords_doc(const char *cmd, const char *file, const char *common, json_t **out, unsigned *nfindings);
/* keel assess probe subcommands in their own files. */
int assess_probe_http_main(int argc, char **argv);        /* assess_probe_http_cmd.c */
int assess_probe_mqtt_main(int argc, char **argv);        /* assess_probe_svc_cmd.c */
int assess_probe_service_main(int argc, char **argv);     /* assess_probe_svc_cmd.c */
int assess_probe_update_main(int argc, char **argv);      /* assess_probe_update_cmd.c */
int assess_probe_publication_main(int argc, char **argv); /* assess_probe_update_cmd.c */

/* Shared by the keel assess probe subcommands (assess_probe_cmd.c). */
#define ASSESS_LAB_PASSWORD_MAX 1024u /* the lab's password, as keeld caps it */
/* The string member k of object o; "" when there is none. */
const char *assess_jstr(json_t *o, const char *k);
/* Text from a device or a web page on one line: printable ASCII only ('?' for
 * anything else), then a newline. */
void assess_put_clean(const char *s);
/* "unit NAME: STATE[: REASON]" for every unit of an observation document. */
void assess_print_units(json_t *doc);
/* Ends a probe command and frees doc: with json, prints doc as JSON; else
 * calls print (when not NULL) and lists the findings. Returns 1 when a finding
 * has severity "fail" or doc could not be printed, else 0. */
int assess_probe_finish(json_t *doc, int json, void (*print)(json_t *doc));
/* Reads the lab's password (first line of pfile, or the variable penv) into
 * pw of cap bytes; wipes pw when it fails. */
keel_status_t assess_lab_password(const char *pfile, const char *penv, char *pw, size_t cap);

#endif

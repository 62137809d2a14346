/* keel app publish|event|state|listen: the product app's socket from a shell (docs/ipc.md). */
#include "cli.h"

#include "keel/ipc.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char app_usage[] =
    "usage: keel app <subcommand> --socket PATH [options]\n"
    "\n"
    "Talks to keeld's product-app socket as a product app would (docs/ipc.md).\n"
    "\n"
    "subcommands:\n"
    "  publish   queue one telemetry object for the cloud; prints its seq\n"
    "  event     queue one event (an alert with --alert); prints its seq\n"
    "  state     print the product state, or merge keys into it with --set\n"
    "  listen    print each command keeld passes on, one JSON line each\n"
    "\n"
    "Run 'keel app <subcommand> --help' for its options.\n";

#define COMMON_OPTIONS                                                                     \
    "options:\n"                                                                           \
    "  --socket PATH     keeld's socket ([ipc] socket in keeld.conf)\n"                   \
    "  --timeout MS      how long to wait for keeld's answer (default 5000)\n"            \
    "  --json            print one JSON document on stdout\n"

static const char publish_usage[] =
    "usage: keel app publish --socket PATH [--id ID] [--timeout MS] [--json] JSON\n"
    "\n"
    "Queues one telemetry object, e.g. '{\"temperature\":21.5}', in keeld's outbox\n"
    "and prints the sequence number it got. keeld answers only once the message\n"
    "is stored, so it survives a power cut from then on. Only the fields the\n"
    "product declares are accepted. With --id, publishing the same ID again\n"
    "while the first is queued returns the first seq and queues nothing. A seq\n"
    "of 0 means keeld took it but queued nothing (consent withheld every field).\n"
    "Exit 1 when keeld refuses it or cannot be reached, 2 when JSON is not an object.\n"
    "\n" COMMON_OPTIONS "  --id ID           a message id (1-64 printable characters, no spaces)\n";

static const char event_usage[] =
    "usage: keel app event --socket PATH [--alert] [--id ID] [--timeout MS] [--json] JSON\n"
    "\n"
    "Queues one event, a JSON object with a \"type\", e.g.\n"
    "'{\"type\":\"door-open\"}', and prints its seq. An --alert is kept longest when\n"
    "the outbox is full. Exit 1 when keeld refuses it or cannot be reached, 2 when\n"
    "JSON is not an object.\n"
    "\n" COMMON_OPTIONS "  --id ID           a message id (1-64 printable characters, no spaces)\n"
    "  --alert           send it as an alert\n";

static const char state_usage[] =
    "usage: keel app state --socket PATH [--set JSON] [--timeout MS] [--json]\n"
    "\n"
    "Prints the product state keeld keeps for the app (a JSON object). With\n"
    "--set, merges the keys of JSON into it first (a null value deletes a key)\n"
    "and prints the result.\n"
    "\n" COMMON_OPTIONS "  --set JSON        the keys to merge\n";

static const char listen_usage[] =
    "usage: keel app listen --socket PATH [--count N] [--timeout MS] [--json]\n"
    "\n"
    "Subscribes to the commands keeld passes on from the cloud and prints each\n"
    "as one JSON line, {\"command\":NAME,\"payload\":...}, flushed at once.\n"
    "Runs until keeld goes away (exit 1), or until N commands were printed\n"
    "(--count). With --timeout, exits 1 when no command came for MS ms.\n"
    "\n" COMMON_OPTIONS "  --count N         stop after N commands\n";

typedef struct {
    const char *socket;
    const char *id;
    const char *set;
    const char *json_arg;
    unsigned long timeout_ms;
    unsigned long count;
    int alert;
    int json;
} app_args_t;

enum { OPT_ID = 256, OPT_ALERT, OPT_SET, OPT_COUNT, OPT_TIMEOUT, OPT_SOCKET, OPT_JSON };

static int parse_args(const char *cmd, int argc, char **argv, const char *allowed, int positional, app_args_t *a)
{
    static const struct option opts[] = {{"socket", required_argument, NULL, OPT_SOCKET},
                                         {"id", required_argument, NULL, OPT_ID},
                                         {"alert", no_argument, NULL, OPT_ALERT},
                                         {"set", required_argument, NULL, OPT_SET},
                                         {"count", required_argument, NULL, OPT_COUNT},
                                         {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        /* each subcommand takes only its own options */
        const char *name = NULL;
        for (size_t i = 0; opts[i].name != NULL; i++)
            if (opts[i].val == c)
                name = opts[i].name;
        char word[16];
        if (name != NULL && (keel_snprintf(word, sizeof word, " %s ", name) != KEEL_OK || strstr(allowed, word) == NULL))
            return cli_usage(cmd, "unknown option --%s", name);
        switch (c) {
        case OPT_SOCKET: a->socket = optarg; break;
        case OPT_ID: a->id = optarg; break;
        case OPT_ALERT: a->alert = 1; break;
        case OPT_SET: a->set = optarg; break;
        case OPT_JSON: a->json = 1; break;
        case OPT_COUNT:
            if (!cli_parse_uint(optarg, 1, 1000000000ul, &a->count))
                return cli_usage(cmd, "--count needs a number from 1");
            break;
        case OPT_TIMEOUT:
            if (!cli_parse_uint(optarg, 1, 3600000ul, &a->timeout_ms))
                return cli_usage(cmd, "--timeout needs milliseconds from 1 to 3600000");
            break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (positional) {
        if (optind != argc - 1)
            return cli_usage(cmd, optind >= argc ? "a JSON object is required" : "exactly one JSON object is expected");
        a->json_arg = argv[optind];
    } else if (optind != argc) {
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    }
    if (a->socket == NULL)
        return cli_usage(cmd, "--socket PATH is required");
    return -1;
}

/* The JSON argument: one object, strictly (a usage error otherwise). */
static int parse_object(const char *cmd, const char *what, const char *text, json_t **out)
{
    json_error_t err;
    *out = json_loads(text, JSON_REJECT_DUPLICATES, &err);
    if (*out == NULL) {
        fprintf(stderr, "keel: %s: %s: not JSON: %s (see 'keel %s --help')\n", cmd, what, err.text, cmd);
        return CLI_USAGE;
    }
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        fprintf(stderr, "keel: %s: %s: not a JSON object (see 'keel %s --help')\n", cmd, what, cmd);
        return CLI_USAGE;
    }
    return -1;
}

/* Anything that goes wrong once the arguments were good is a failed operation. */
static int app_fail(const char *cmd, const char *what, keel_status_t st)
{
    const char *msg = keel_error_message();
    fprintf(stderr, "keel: %s: %s: %s\n", cmd, what, msg[0] ? msg : keel_status_str(st));
    return CLI_FAILED;
}

static int app_connect(const char *cmd, const app_args_t *a, keel_ipc_client_t **c)
{
    keel_status_t st = keel_ipc_connect(a->socket, c);
    if (st != KEEL_OK)
        return app_fail(cmd, "connect", st);
    keel_ipc_set_timeout(*c, (int)a->timeout_ms);
    return -1;
}

static int do_publish(const char *cmd, const char *usage, int argc, char **argv, bool event)
{
    if (cli_want_help(argc, argv, usage))
        return CLI_OK;
    app_args_t a;
    int rc = parse_args(cmd, argc, argv, event ? " socket id alert timeout json " : " socket id timeout json ", 1, &a);
    if (rc >= 0)
        return rc;
    json_t *data = NULL;
    if ((rc = parse_object(cmd, "JSON", a.json_arg, &data)) >= 0)
        return rc;
    keel_ipc_client_t *c = NULL;
    if ((rc = app_connect(cmd, &a, &c)) < 0) {
        uint64_t seq = 0;
        keel_status_t st = event ? keel_ipc_event(c, data, a.alert, a.id, &seq) : keel_ipc_publish(c, data, a.id, &seq);
        if (st != KEEL_OK) {
            rc = app_fail(cmd, event ? "event" : "publish", st);
        } else if (a.json) {
            json_t *j = json_pack("{s:I}", "seq", (json_int_t)seq);
            rc = cli_print_json(j);
            json_decref(j);
        } else {
            printf("%llu\n", (unsigned long long)seq);
            if (seq == 0)
                fprintf(stderr, "keel: %s: taken, but nothing queued: the user's consent withheld every field\n", cmd);
            rc = CLI_OK;
        }
    }
    keel_ipc_close(c);
    json_decref(data);
    return rc;
}

static int cmd_publish(int argc, char **argv)
{
    return do_publish("app publish", publish_usage, argc, argv, false);
}

static int cmd_event(int argc, char **argv)
{
    return do_publish("app event", event_usage, argc, argv, true);
}

static int cmd_state(int argc, char **argv)
{
    static const char *cmd = "app state";
    if (cli_want_help(argc, argv, state_usage))
        return CLI_OK;
    app_args_t a;
    int rc = parse_args(cmd, argc, argv, " socket set timeout json ", 0, &a);
    if (rc >= 0)
        return rc;
    json_t *patch = NULL;
    if (a.set != NULL && (rc = parse_object(cmd, "--set", a.set, &patch)) >= 0)
        return rc;
    keel_ipc_client_t *c = NULL;
    if ((rc = app_connect(cmd, &a, &c)) < 0) {
        json_t *state = NULL;
        keel_status_t st = patch != NULL ? keel_ipc_state_set(c, patch, &state) : keel_ipc_state_get(c, &state);
        if (st != KEEL_OK) {
            rc = app_fail(cmd, patch != NULL ? "set" : "get", st);
        } else if (a.json) {
            rc = cli_print_json(state);
        } else {
            /* the state is JSON either way; compact keys sorted for people */
            char *s = json_dumps(state, JSON_INDENT(2) | JSON_SORT_KEYS);
            rc = s != NULL && puts(s) >= 0 ? CLI_OK : CLI_FAILED;
            free(s);
        }
        json_decref(state);
    }
    keel_ipc_close(c);
    json_decref(patch);
    return rc;
}

static int cmd_listen(int argc, char **argv)
{
    static const char *cmd = "app listen";
    if (cli_want_help(argc, argv, listen_usage))
        return CLI_OK;
    app_args_t a;
    int rc = parse_args(cmd, argc, argv, " socket count timeout json ", 0, &a);
    if (rc >= 0)
        return rc;
    keel_ipc_client_t *c = NULL;
    if ((rc = app_connect(cmd, &a, &c)) >= 0)
        return rc;
    keel_status_t st = keel_ipc_listen(c);
    if (st != KEEL_OK) {
        rc = app_fail(cmd, "listen", st);
        keel_ipc_close(c);
        return rc;
    }
    /* Tell a waiting script that the subscription is in place. */
    if (!a.json)
        fprintf(stderr, "keel: app listen: listening\n");
    rc = CLI_OK;
    for (unsigned long n = 0; a.count == 0 || n < a.count; n++) {
        char *name = NULL;
        json_t *payload = NULL;
        st = keel_ipc_next_command(c, a.timeout_ms ? (int)a.timeout_ms : -1, &name, &payload);
        if (st == KEEL_ERR_NOT_FOUND) {
            fprintf(stderr, "keel: %s: no command within %lu ms\n", cmd, a.timeout_ms);
            rc = CLI_FAILED;
            break;
        }
        if (st != KEEL_OK) {
            rc = app_fail(cmd, "listen", st);
            break;
        }
        json_t *j = json_pack("{s:s, s:o}", "command", name, "payload", payload);
        char *line = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
        int ok = line != NULL && printf("%s\n", line) >= 0 && fflush(stdout) == 0;
        free(line);
        json_decref(j);
        free(name);
        if (!ok) {
            fprintf(stderr, "keel: %s: cannot write to stdout\n", cmd);
            rc = CLI_FAILED;
            break;
        }
    }
    keel_ipc_close(c);
    return rc;
}

int cmd_app(int argc, char **argv)
{
    static const cli_sub_t subs[] = {{"publish", NULL, cmd_publish},
                                     {"event", NULL, cmd_event},
                                     {"state", NULL, cmd_state},
                                     {"listen", NULL, cmd_listen}};
    return cli_dispatch("app", app_usage, subs, sizeof subs / sizeof subs[0], argc, argv);
}

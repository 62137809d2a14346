/* keel update install|confirm|status and keel boot: the device side of A/B updates. */
#include "cli.h"

#include "keel/device.h"
#include "keel/identity.h"
#include "keel/slots.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_OVERRIDES 64

static const char update_usage[] =
    "usage: keel update <subcommand> [options]\n"
    "\n"
    "subcommands:\n"
    "  install   verify a signed bundle while writing it into the inactive slot\n"
    "  confirm   mark the running slot good (and advance the anti-rollback counter)\n"
    "  status    slots, versions, boot tries, counter, tamper alert, update policy\n"
    "\n"
    "Run 'keel update <subcommand> --help' for its options.\n";

#define DEVICE_OPTIONS                                                                    \
    "device options (every subcommand):\n"                                                \
    "  --state DIR            the device's state directory (reads DIR/keeld.conf)\n"      \
    "  --config FILE          the device configuration, if not DIR/keeld.conf\n"          \
    "  -o, --option S.K=V     override a configuration key (repeatable)\n"                \
    "  --json                 print one JSON document on stdout\n"

static const char install_usage[] =
    "usage: keel update install BUNDLE --state DIR [--config FILE] [-o S.K=V]... [--json]\n"
    "\n"
    "Installs BUNDLE (a path, or - for stdin) into the slot that is not active.\n"
    "The signature, the signer chain (to the release roots in\n"
    "trust/release-root.pem, and the CRL in it if any), the device model, the security version (never below\n"
    "the anti-rollback counter) and the downgrade policy are checked before a\n"
    "byte is written; each chunk is written only after it verified. The slot is\n"
    "then fsynced, its signed manifest kept, and it boots next, with\n"
    "[update] boot_tries tries to be confirmed. On any failure the current slot\n"
    "keeps booting. Exit 1 when the bundle is refused.\n"
    "\n" DEVICE_OPTIONS;

static const char confirm_usage[] =
    "usage: keel update confirm --state DIR [--config FILE] [-o S.K=V]... [--json]\n"
    "\n"
    "Marks the slot that booted last as good (keeld calls this after a healthy\n"
    "start). A pending slot becomes the active one and the anti-rollback\n"
    "counter advances to its security version. A slot never confirmed rolls\n"
    "back after its boot tries.\n"
    "\n" DEVICE_OPTIONS;

static const char status_usage[] =
    "usage: keel update status --state DIR [--config FILE] [-o S.K=V]... [--json]\n"
    "\n"
    "Shows each slot (active, pending, good, booted; version and security\n"
    "version; the release notes, risk, security fixes, disruption and support\n"
    "period from its signed manifest), the tries left, the anti-rollback\n"
    "counter, any tamper alert, and the update policy.\n"
    "\n" DEVICE_OPTIONS;

static const char boot_usage[] =
    "usage: keel boot --state DIR [--config FILE] [-o S.K=V]... [--json]\n"
    "\n"
    "The emulated bootloader, run at each (simulated) boot: picks the pending\n"
    "slot while it has tries (spending one), else the active one; verifies the\n"
    "slot against its signed manifest (signature, chain, model, anti-rollback\n"
    "counter, SHA-256 of the image) before booting it. A slot that fails is\n"
    "refused, a tamper alert is recorded, and the other good slot is tried.\n"
    "Exit 1 when no slot verifies.\n"
    "\n" DEVICE_OPTIONS;

typedef struct {
    const char *state;
    const char *config;
    char *overrides[MAX_OVERRIDES];
    size_t n_overrides;
    int json;
    const char *arg; /* the one positional argument, where allowed */
} dev_args_t;

/* Parses the device options; returns -1 on success, else the exit code. */
static int parse_args(const char *cmd, int argc, char **argv, int positional, dev_args_t *a)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},
        {"option", required_argument, NULL, 'o'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":o:", opts, NULL)) != -1) {
        switch (c) {
        case 's': a->state = optarg; break;
        case 'c': a->config = optarg; break;
        case 'o':
            if (a->n_overrides == MAX_OVERRIDES)
                return cli_usage(cmd, "at most %d -o overrides", MAX_OVERRIDES);
            a->overrides[a->n_overrides++] = optarg;
            break;
        case 'j': a->json = 1; break;
        case ':': return cli_usage(cmd, "option %s needs a value", argv[optind - 1]);
        default: return cli_usage(cmd, "unknown option %s", argv[optind - 1]);
        }
    }
    if (positional) {
        if (optind != argc - 1)
            return cli_usage(cmd, optind >= argc ? "a bundle (path or -) is required"
                                                 : "exactly one bundle is expected");
        a->arg = argv[optind];
    } else if (optind != argc) {
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    }
    if (a->state == NULL && a->config == NULL)
        return cli_usage(cmd, "--state DIR (or --config FILE) is required");
    return -1;
}

/* Loads the configuration and opens the device's slots. */
static int open_device(const char *cmd, const dev_args_t *a, keel_config_t **cfg, keel_slots_t **slots)
{
    char path[KEEL_PATH_MAX];
    keel_status_t st = KEEL_OK;
    if (a->config != NULL)
        st = keel_strlcpy(path, a->config, sizeof path);
    else
        st = keel_path_join(path, sizeof path, a->state, KEEL_STATE_CONFIG);
    if (st != KEEL_OK)
        return cli_usage(cmd, "path too long");
    st = keel_device_config_load(path, a->overrides, a->n_overrides, cfg);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    st = keel_slots_open(*cfg, slots);
    if (st != KEEL_OK) {
        int rc = cli_fail(cmd, st);
        keel_config_free(*cfg);
        return rc;
    }
    return -1;
}

static void close_device(keel_config_t *cfg, keel_slots_t *slots)
{
    keel_slots_close(slots);
    keel_config_free(cfg);
}

static const char *slot_str(int slot)
{
    return slot == 0 ? "A" : slot == 1 ? "B" : NULL;
}

/* The common start of confirm, status and boot: --help, the options, and
 * opening the device. Returns -1 to go on, else the exit code. */
static int start(const char *cmd, const char *usage, int argc, char **argv, dev_args_t *a, keel_config_t **cfg,
                 keel_slots_t **slots)
{
    if (cli_want_help(argc, argv, usage))
        return CLI_OK;
    int rc = parse_args(cmd, argc, argv, 0, a);
    if (rc >= 0)
        return rc;
    return open_device(cmd, a, cfg, slots);
}

/* ---- install -------------------------------------------------------------- */

typedef struct {
    int fd;
} fd_reader_t;

static ssize_t fd_read(void *ctx, void *buf, size_t n)
{
    fd_reader_t *r = ctx;
    for (;;) {
        ssize_t got = read(r->fd, buf, n);
        if (got < 0 && errno == EINTR)
            continue;
        return got;
    }
}

static int cmd_install(int argc, char **argv)
{
    static const char *cmd = "update install";
    if (cli_want_help(argc, argv, install_usage))
        return CLI_OK;
    dev_args_t a;
    int rc = parse_args(cmd, argc, argv, 1, &a);
    if (rc >= 0)
        return rc;
    fd_reader_t in = {.fd = STDIN_FILENO};
    if (strcmp(a.arg, "-") != 0) {
        in.fd = open(a.arg, O_RDONLY | O_CLOEXEC);
        if (in.fd < 0) {
            /* A bundle that is not there is a usage error, as in keel bundle. */
            fprintf(stderr, "keel: %s: open %s: %s\n", cmd, a.arg, strerror(errno));
            return CLI_USAGE;
        }
    }
    keel_config_t *cfg = NULL;
    keel_slots_t *slots = NULL;
    rc = open_device(cmd, &a, &cfg, &slots);
    if (rc >= 0) {
        if (in.fd != STDIN_FILENO)
            close(in.fd);
        return rc;
    }
    keel_install_result_t res;
    double t0 = keel_now();
    keel_status_t st = keel_slots_install(slots, fd_read, &in, &res);
    double secs = keel_now() - t0;
    if (in.fd != STDIN_FILENO)
        close(in.fd);
    if (st != KEEL_OK) {
        /* A refused bundle is exit 1; a device set up wrongly (a slot that is
         * neither a file nor a block device, say) is a configuration error, 2. */
        rc = cli_fail(cmd, st == KEEL_ERR_ARG ? KEEL_ERR_VERIFY : st);
        close_device(cfg, slots);
        return rc;
    }
    if (a.json) {
        json_t *j = json_pack("{s:s, s:s?, s:s, s:I, s:I, s:I, s:f}", "kind",
                              res.slot == KEEL_SLOT_NONE ? "trust" : "image", "slot", slot_str(res.slot),
                              "version", res.version, "security_version", (json_int_t)res.security_version,
                              "bytes", (json_int_t)res.bytes, "boot_tries", (json_int_t)res.tries, "seconds", secs);
        rc = cli_print_json(j);
        json_decref(j);
    } else if (res.slot == KEEL_SLOT_NONE) {
        printf("installed trust store %s (trust version %u): updates are now checked against the new "
               "release root\n", res.version, res.security_version);
        rc = CLI_OK;
    } else {
        printf("installed %s (security version %u, %llu bytes) into slot %s in %.2f s\n", res.version,
               res.security_version, (unsigned long long)res.bytes, slot_str(res.slot), secs);
        printf("it boots next (%u tries); run 'keel update confirm' once it runs well\n", res.tries);
        rc = CLI_OK;
    }
    close_device(cfg, slots);
    return rc;
}

/* ---- confirm -------------------------------------------------------------- */

static int cmd_confirm(int argc, char **argv)
{
    static const char *cmd = "update confirm";
    dev_args_t a;
    keel_config_t *cfg = NULL;
    keel_slots_t *slots = NULL;
    int rc = start(cmd, confirm_usage, argc, argv, &a, &cfg, &slots);
    if (rc >= 0)
        return rc;
    int slot = KEEL_SLOT_NONE;
    uint32_t counter = 0;
    keel_status_t st = keel_slots_confirm_booted(slots, &slot, &counter);
    if (st != KEEL_OK) {
        rc = cli_fail(cmd, st);
    } else if (a.json) {
        json_t *j = json_pack("{s:s, s:I}", "confirmed", slot_str(slot), "security_version_counter",
                              (json_int_t)counter);
        rc = cli_print_json(j);
        json_decref(j);
    } else {
        printf("slot %s confirmed; anti-rollback counter %u\n", slot_str(slot), counter);
        rc = CLI_OK;
    }
    close_device(cfg, slots);
    return rc;
}

/* ---- status ---------------------------------------------------------------- */

static void rfc3339(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (t <= 0 || gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        out[0] = '\0';
}

/* The manifest of a slot's kept signed part, for the UI and API (5.3-11..13). */
static json_t *manifest_json(const keel_manifest_t *m)
{
    json_t *fixes = json_array(), *models = json_array();
    for (unsigned i = 0; fixes != NULL && i < m->n_fixes && i < KEEL_BUNDLE_FIXES_MAX; i++)
        json_array_append_new(fixes, json_string(m->security_fixes[i]));
    for (unsigned i = 0; models != NULL && i < m->n_models && i < KEEL_BUNDLE_MODELS_MAX; i++)
        json_array_append_new(models, json_string(m->models[i]));
    return json_pack("{s:s, s:I, s:o*, s:s, s:s, s:s, s:s, s:o*, s:b, s:I, s:I}", "version", m->version,
                     "security_version", (json_int_t)m->security_version, "models", models, "created",
                     m->created, "support_until", m->support_until, "notes", m->notes, "risk", m->risk,
                     "security_fixes", fixes, "disruptive", m->disruptive, "downtime_seconds",
                     (json_int_t)m->downtime_seconds, "payload_size", (json_int_t)m->payload_size);
}

static int cmd_status(int argc, char **argv)
{
    static const char *cmd = "update status";
    dev_args_t a;
    keel_config_t *cfg = NULL;
    keel_slots_t *slots = NULL;
    int rc = start(cmd, status_usage, argc, argv, &a, &cfg, &slots);
    if (rc >= 0)
        return rc;
    keel_bootstate_t bs;
    uint32_t counter = 0;
    const char *state_note = NULL;
    keel_status_t st = keel_slots_state(slots, &bs);
    if (st == KEEL_ERR_FORMAT) {
        state_note = "boot state corrupt: the next boot rebuilds it";
        st = KEEL_OK;
    }
    if (st == KEEL_OK)
        st = keel_slots_counter(slots, &counter);
    if (st != KEEL_OK) {
        rc = cli_fail(cmd, st);
        close_device(cfg, slots);
        return rc;
    }
    json_t *jslots = json_array();
    char when[32];
    rfc3339(bs.tamper_time, when);
    if (!a.json)
        printf("device %s (model %s)\n", keel_config_str(cfg, "device", "id"),
               keel_config_str(cfg, "device", "model"));
    for (int i = 0; i < KEEL_SLOTS_N; i++) {
        keel_manifest_t m;
        memset(&m, 0, sizeof m);
        /* A slot being (re)written has no version in the state: its old
         * manifest no longer describes it. */
        int have = bs.version[i][0] != '\0' && keel_slots_manifest(slots, i, &m) == KEEL_OK;
        keel_error_clear();
        json_t *js = json_pack("{s:s, s:s, s:b, s:b, s:b, s:b, s:s?, s:I}", "slot", slot_str(i), "path",
                               keel_slots_path(slots, i), "active", bs.active == i, "pending", bs.pending == i,
                               "good", bs.good[i], "booted", bs.booted == i, "version",
                               bs.version[i][0] ? bs.version[i] : NULL, "security_version",
                               (json_int_t)bs.security_version[i]);
        if (js != NULL)
            json_object_set_new(js, "manifest", have ? manifest_json(&m) : json_null());
        json_array_append_new(jslots, js);
        if (!a.json) {
            printf("slot %s: %s%s%s%s%s\n", slot_str(i), bs.version[i][0] ? bs.version[i] : "(empty)",
                   bs.active == i ? ", active" : "", bs.pending == i ? ", pending" : "",
                   bs.good[i] ? ", good" : "", bs.booted == i ? ", booted" : "");
            if (bs.version[i][0])
                printf("  security version %u\n", bs.security_version[i]);
            if (have) {
                printf("  support until %s%s", m.support_until, m.disruptive ? ", disruptive" : "");
                if (m.disruptive)
                    printf(" (downtime %u s)", m.downtime_seconds);
                printf("\n");
                if (m.n_fixes > 0) {
                    printf("  security fixes:");
                    for (unsigned k = 0; k < m.n_fixes && k < KEEL_BUNDLE_FIXES_MAX; k++)
                        printf(" %s", m.security_fixes[k]);
                    printf("\n");
                }
                if (m.risk[0])
                    cli_print_text("risk:", m.risk);
                if (m.notes[0])
                    cli_print_text("notes:", m.notes);
            }
        }
        if (have)
            keel_manifest_free(&m);
    }
    int automatic = keel_config_bool(cfg, "update", "automatic");
    int notify = keel_config_bool(cfg, "update", "notifications");
    int downgrade = keel_config_bool(cfg, "update", "allow_downgrade");
    uint64_t tries = keel_config_uint(cfg, "update", "boot_tries");
    const char *postpone = keel_config_str(cfg, "update", "postpone_until");
    if (a.json) {
        json_t *j = json_pack("{s:s, s:s, s:o, s:s?, s:s?, s:I, s:I, s:I, s:{s:b, s:s?, s:s?}, "
                              "s:{s:b, s:s?, s:b, s:b, s:I}, s:s?}",
                              "device", keel_config_str(cfg, "device", "id"), "model",
                              keel_config_str(cfg, "device", "model"), "slots", jslots, "active",
                              slot_str(bs.active), "pending", slot_str(bs.pending), "tries_left",
                              (json_int_t)bs.tries_left, "security_version_counter", (json_int_t)counter,
                              "state_seq", (json_int_t)bs.seq, "tamper", "alert", bs.tamper, "detail",
                              bs.tamper ? bs.tamper_detail : NULL, "time", bs.tamper && when[0] ? when : NULL,
                              "policy", "automatic", automatic, "postpone_until", postpone, "notifications", notify, "allow_downgrade",
                              downgrade, "boot_tries", (json_int_t)tries, "state_note", state_note);
        rc = cli_print_json(j);
        json_decref(j);
    } else {
        json_decref(jslots);
        if (bs.pending != KEEL_SLOT_NONE)
            printf("pending slot %s: %u boot tries left\n", slot_str(bs.pending), bs.tries_left);
        printf("anti-rollback counter: %u\n", counter);
        if (bs.tamper)
            printf("TAMPER ALERT (%s): %s\n", when[0] ? when : "time unknown", bs.tamper_detail);
        if (state_note != NULL)
            printf("%s\n", state_note);
        printf("policy: automatic %s%s%s, notifications %s, downgrades %s, %u boot tries\n",
               automatic ? "on" : "off", postpone ? ", postponed until " : "", postpone ? postpone : "",
               notify ? "on" : "off", downgrade ? "allowed" : "refused", (unsigned)tries);
        rc = CLI_OK;
    }
    close_device(cfg, slots);
    return rc;
}

int cmd_update(int argc, char **argv)
{
    /* Each subcommand prints its own --help (it also takes -o overrides). */
    static const cli_sub_t subs[] = {{"install", NULL, cmd_install},
                                     {"confirm", NULL, cmd_confirm},
                                     {"status", NULL, cmd_status}};
    return cli_dispatch("update", update_usage, subs, sizeof subs / sizeof subs[0], argc, argv);
}

/* ---- boot ------------------------------------------------------------------- */

int cmd_boot(int argc, char **argv)
{
    static const char *cmd = "boot";
    dev_args_t a;
    keel_config_t *cfg = NULL;
    keel_slots_t *slots = NULL;
    int rc = start(cmd, boot_usage, argc, argv, &a, &cfg, &slots);
    if (rc >= 0)
        return rc;
    keel_boot_result_t res;
    double t0 = keel_now();
    keel_status_t st = keel_slots_boot(slots, &res);
    double secs = keel_now() - t0;
    char msg[KEEL_ERROR_MAX];
    if (keel_strlcpy(msg, keel_error_message(), sizeof msg) != KEEL_OK)
        msg[0] = '\0';
    keel_bootstate_t bs;
    int have_state = keel_slots_state(slots, &bs) == KEEL_OK;
    if (a.json) {
        json_t *j = json_pack("{s:s?, s:s?, s:I, s:b, s:I, s:b, s:I, s:b, s:s?, s:f}", "booted",
                              slot_str(res.slot), "version", res.slot >= 0 ? res.version : NULL,
                              "security_version", (json_int_t)res.security_version, "pending", res.pending,
                              "tries_left", (json_int_t)res.tries_left, "rolled_back", res.rolled_back,
                              "refused", (json_int_t)res.refused, "tamper", have_state && bs.tamper,
                              "tamper_detail", have_state && bs.tamper ? bs.tamper_detail : NULL, "seconds",
                              secs);
        (void)cli_print_json(j);
        json_decref(j);
    }
    if (res.rolled_back)
        fprintf(stderr, "keel: boot: the pending slot was never confirmed: rolled back\n");
    if (res.refused > 0 && have_state)
        fprintf(stderr, "keel: boot: TAMPER ALERT: %s\n", bs.tamper_detail);
    if (st != KEEL_OK) {
        fprintf(stderr, "keel: %s: %s\n", cmd, msg[0] ? msg : keel_status_str(st));
        close_device(cfg, slots);
        return CLI_FAILED;
    }
    if (!a.json) {
        printf("booted slot %s: %s (security version %u)", slot_str(res.slot), res.version,
               res.security_version);
        if (res.pending)
            printf(", not confirmed yet: %u tries left", res.tries_left);
        printf("\n");
    }
    close_device(cfg, slots);
    return CLI_OK;
}

/* keel factory: init, provision, audit, issue-server, issue-client, crl. */
#include "cli.h"

#include "keel/factory.h"
#include "keel/identity.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char factory_usage[] =
    "usage: keel factory <subcommand> [options]\n"
    "\n"
    "subcommands:\n"
    "  init          create the three manufacturer PKIs (device, release, service)\n"
    "  provision     give devices a unique key, certificate and label password\n"
    "  audit         check a provisioned batch for EN 303 645 provision 5.1-2\n"
    "  issue-server  issue a TLS server certificate from the service CA\n"
    "  issue-client  issue a TLS client certificate from the service CA (keel-fleetd)\n"
    "  crl           write the revocation list of the device (or service) CA\n"
    "\n"
    "Run 'keel factory <subcommand> --help' for its options.\n";

static const char init_usage[] =
    "usage: keel factory init --dir DIR --org NAME [--passphrase-file FILE | --passphrase-env VAR] [--json]\n"
    "\n"
    "Creates DIR/{device,release,service}-ca, each a root and an issuing CA\n"
    "(ECDSA P-256 / SHA-256). Private keys are written 0600. With a passphrase,\n"
    "the root keys are encrypted (PKCS#8, AES-256); the passphrase is read from\n"
    "a file or an environment variable, never from the command line.\n"
    "Refuses a DIR that already holds a factory.\n";

static const char provision_usage[] =
    "usage: keel factory provision --dir DIR --model MODEL --count N --out OUT [options]\n"
    "\n"
    "For each device: a P-256 key generated in the chosen keystore, a device id\n"
    "derived from the public key, a random serial number, a certificate from the\n"
    "device CA, and a random label password (89 bits) stored on the device only\n"
    "as an Argon2id hash. Writes OUT/<device-id>/ (the device's state directory\n"
    "with a starter keeld.conf), OUT/labels.csv (0600: the only copy of the\n"
    "passwords, for the label printer) and OUT/manifest.json (no secrets).\n"
    "An interrupted run never leaves half a device; the next run cleans up.\n"
    "\n"
    "options:\n"
    "  --keystore file|pkcs11|tpm2\n"
    "                             where device keys are generated (default file); tpm2:\n"
    "                             in the TPM 2.0 the TCTI reaches (run on the device)\n"
    "  --pkcs11-module PATH       PKCS#11 module (e.g. the SoftHSM2 or secure element library)\n"
    "  --pkcs11-token LABEL       token label\n"
    "  --pkcs11-pin-file FILE     user PIN, first line of FILE\n"
    "  --pkcs11-pin-env VAR       user PIN from environment variable VAR\n"
    "  --tpm2-tcti TCTI           how to reach the TPM (default: $TPM2OPENSSL_TCTI, else\n"
    "                             the TSS search: /dev/tpmrm0 first); e.g. device:/dev/tpmrm0\n"
    "  --tpm2-pin-file FILE       the keys' authorization value, first line of FILE\n"
    "  --tpm2-pin-env VAR         ... or from environment variable VAR\n"
    "                             (default: a random one per device, in keystore/tpm2.pin)\n"
    "  --tpm2-lockout N,S,L       set the TPM's dictionary-attack lockout first: locked after\n"
    "                             N wrong PINs, one forgiven every S seconds, L seconds after\n"
    "                             a wrong lockout authorization (e.g. 32,600,86400). Without\n"
    "                             it the TPM's settings are kept; a TPM whose protection is\n"
    "                             off (S = 0) is refused either way\n"
    "  --tpm2-lockout-auth-file F the TPM's lockout authorization (default: empty)\n"
    "  --argon2-t N               Argon2id passes (default 2)\n"
    "  --argon2-m KIB             Argon2id memory in KiB (default 19456)\n"
    "  --product FILE             the product file (docs/privacy.md): its data declaration\n"
    "                             goes to each device as declaration.json, its settings\n"
    "                             (\"section.key\": value) into keeld.conf; checked first\n"
    "  --json                     print a JSON summary on stdout\n";

static const char audit_usage[] =
    "usage: keel factory audit OUT [--common-list FILE] [--verify-hashes N] [--json]\n"
    "\n"
    "Checks a provisioned batch for provision 5.1-2: passwords and ids unique,\n"
    "entropy per password, no password containing or reversing the serial, id or\n"
    "model, none in the common-password list, no sequence or per-position bias,\n"
    "no two devices with the same key, ids bound to keys, and (sampled) label\n"
    "passwords matching the hashes on the devices. Passwords are never printed.\n"
    "Exit status 1 on any finding.\n"
    "\n"
    "options:\n"
    "  --common-list FILE   one password per line (default: $KEEL_COMMON_PASSWORDS,\n"
    "                       else " KEEL_COMMON_PASSWORDS ")\n"
    "  --verify-hashes N    check N randomly chosen label hashes (default 16; Argon2id is slow)\n"
    "  --json               print the report as JSON on stdout\n";

static const char server_usage[] =
    "usage: keel factory issue-server --dir DIR --name HOST --out OUTDIR\n"
    "                                 [--passphrase-file FILE | --passphrase-env VAR] [--json]\n"
    "\n"
    "Issues a TLS server certificate for HOST (a DNS name or an IP address) from\n"
    "the service CA, for the MQTT broker or the fleet service. Writes\n"
    "OUTDIR/server.key (0600), server.crt, chain.pem (server + issuing CA) and\n"
    "ca.pem (the service root that devices pin). If the factory was made with a\n"
    "passphrase, the service issuing key is encrypted and needs it.\n";

static const char client_usage[] =
    "usage: keel factory issue-client --dir DIR --name NAME --out OUTDIR\n"
    "                                 [--passphrase-file FILE | --passphrase-env VAR] [--json]\n"
    "\n"
    "Issues a TLS client certificate (clientAuth only, 397 days) from the service\n"
    "CA, for a service that connects to the MQTT broker as itself: keel-fleetd.\n"
    "The broker takes the certificate's CN = NAME as the user name its ACL sees\n"
    "(packaging/mosquitto/keel-broker.acl grants \"keel-fleet\"). NAME is 1..64\n"
    "characters of [A-Za-z0-9._-] and never a device id. Writes\n"
    "OUTDIR/client.key (0600), client.crt, chain.pem (client + issuing CA) and\n"
    "ca.pem (the service root, to verify the broker). If the factory was made\n"
    "with a passphrase, the service issuing key needs it.\n";

static const char crl_usage[] =
    "usage: keel factory crl --dir DIR --serials FILE|- --out CRL [--days N]\n"
    "                        [--ca device|service] [--passphrase-file FILE | --passphrase-env VAR] [--json]\n"
    "\n"
    "Writes (atomically) a CRL signed by the device issuing CA (or, with --ca\n"
    "service, the service issuing CA, which needs the passphrase) revoking the\n"
    "certificate serials in FILE (or stdin): one per line as hex digits, at most\n"
    "20 bytes; blank lines and lines starting with # are skipped; a repeated or\n"
    "malformed serial is an error. The CRL's number is one above the last one\n"
    "this CA issued (DIR/<ca>/crlnumber).\n"
    "\n"
    "Once its next update (--days, default 30, at most 3650) has passed, a broker\n"
    "that checks CRLs refuses every certificate of that CA: issue the next one\n"
    "well before. docs/internals/fleet-broker.md says how the broker loads it.\n";

static int cmd_init(int argc, char **argv)
{
    static const char *cmd = "factory init";
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},        {"org", required_argument, NULL, 'o'},
        {"passphrase-file", required_argument, NULL, 'f'}, {"passphrase-env", required_argument, NULL, 'e'},
        {"json", no_argument, NULL, 'j'},             {NULL, 0, NULL, 0}};
    const char *dir = NULL, *org = NULL, *pfile = NULL, *penv = NULL;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'o': org = optarg; break;
        case 'f': pfile = optarg; break;
        case 'e': penv = optarg; break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (dir == NULL || org == NULL)
        return cli_usage(cmd, "--dir and --org are required");
    char pass[KEEL_PASSPHRASE_MAX + 1];
    size_t passlen = 0;
    keel_status_t st = KEEL_OK;
    if (pfile != NULL || penv != NULL)
        st = keel_secret_read(pfile, penv, pass, sizeof pass, &passlen);
    if (st == KEEL_OK)
        st = keel_factory_init(dir, org, passlen ? pass : NULL, passlen);
    keel_wipe(pass, sizeof pass);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    if (json) {
        json_t *j = json_pack("{s:s, s:s, s:b, s:[s,s,s]}", "dir", dir, "org", org, "keys_encrypted",
                              passlen > 0, "pkis", "device-ca", "release-ca", "service-ca");
        int rc = cli_print_json(j);
        json_decref(j);
        return rc;
    }
    printf("factory created in %s for \"%s\"\n", dir, org);
    for (int i = 0; i < KEEL_PKI_COUNT; i++)
        printf("  %s/%-11s root + issuing CA (ECDSA P-256)%s\n", dir, keel_pki_dirname((keel_pki_t)i),
               !passlen ? "" : i == KEEL_PKI_DEVICE ? ", root key encrypted" : ", root and issuing keys encrypted");
    return CLI_OK;
}

#define LOCKOUT_MAX 100000000u

/* "TRIES,RECOVERY_S,LOCKOUT_RECOVERY_S" */
static int parse_lockout(const char *arg, keel_provision_opts_t *o)
{
    char buf[64];
    if (keel_strlcpy(buf, arg, sizeof buf) != KEEL_OK)
        return 0;
    char *save = NULL, *t = strtok_r(buf, ",", &save), *r = strtok_r(NULL, ",", &save),
         *l = strtok_r(NULL, ",", &save);
    unsigned long tries = 0, rec = 0, lrec = 0;
    if (t == NULL || r == NULL || l == NULL || strtok_r(NULL, ",", &save) != NULL ||
        !cli_parse_uint(t, 1, LOCKOUT_MAX, &tries) || !cli_parse_uint(r, 1, LOCKOUT_MAX, &rec) ||
        !cli_parse_uint(l, 0, LOCKOUT_MAX, &lrec))
        return 0;
    o->tpm2_lockout_tries = (uint32_t)tries;
    o->tpm2_lockout_recovery_s = (uint32_t)rec;
    o->tpm2_lockout_lockout_recovery_s = (uint32_t)lrec;
    return 1;
}

static int cmd_provision(int argc, char **argv)
{
    static const char *cmd = "factory provision";
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"model", required_argument, NULL, 'm'},
        {"count", required_argument, NULL, 'n'},
        {"out", required_argument, NULL, 'o'},
        {"keystore", required_argument, NULL, 'k'},
        {"pkcs11-module", required_argument, NULL, 'M'},
        {"pkcs11-token", required_argument, NULL, 'T'},
        {"pkcs11-pin-file", required_argument, NULL, 'P'},
        {"pkcs11-pin-env", required_argument, NULL, 'E'},
        {"tpm2-tcti", required_argument, NULL, 'C'},
        {"tpm2-pin-file", required_argument, NULL, 'F'},
        {"tpm2-pin-env", required_argument, NULL, 'V'},
        {"tpm2-lockout", required_argument, NULL, 'L'},
        {"tpm2-lockout-auth-file", required_argument, NULL, 'A'},
        {"argon2-t", required_argument, NULL, 't'},
        {"argon2-m", required_argument, NULL, 'r'},
        {"product", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0}};
    const char *dir = NULL;
    keel_provision_opts_t o = {.argon2 = keel_argon2_defaults()};
    o.keystore.driver = "file";
    unsigned long v = 0;
    int json = 0, c, have_count = 0, tpm2_opt = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'm': o.model = optarg; break;
        case 'n':
            if (!cli_parse_uint(optarg, 1, KEEL_PROVISION_MAX_COUNT, &v))
                return cli_usage(cmd, "--count must be 1..%u", KEEL_PROVISION_MAX_COUNT);
            o.count = (unsigned)v;
            have_count = 1;
            break;
        case 'o': o.out = optarg; break;
        case 'k':
            if (strcmp(optarg, "file") != 0 && strcmp(optarg, "pkcs11") != 0 && strcmp(optarg, "tpm2") != 0)
                return cli_usage(cmd, "--keystore must be file, pkcs11 or tpm2");
            o.keystore.driver = optarg;
            break;
        case 'M': o.keystore.module = optarg; break;
        case 'T': o.keystore.token = optarg; break;
        case 'P': o.keystore.pin_file = optarg; break;
        case 'E': o.keystore.pin_env = optarg; break;
        case 'C': o.keystore.tcti = optarg; break;
        case 'F': o.keystore.pin_file = optarg; tpm2_opt = 1; break;
        case 'V': o.keystore.pin_env = optarg; tpm2_opt = 1; break;
        case 'L':
            if (!parse_lockout(optarg, &o))
                return cli_usage(cmd, "--tpm2-lockout takes TRIES,RECOVERY_S,LOCKOUT_RECOVERY_S "
                                      "(TRIES and RECOVERY_S 1..%u)", LOCKOUT_MAX);
            tpm2_opt = 1;
            break;
        case 'A': o.tpm2_lockout_auth_file = optarg; tpm2_opt = 1; break;
        case 't':
            if (!cli_parse_uint(optarg, 1, 64, &v))
                return cli_usage(cmd, "--argon2-t must be 1..64");
            o.argon2.t_cost = (uint32_t)v;
            break;
        case 'r':
            if (!cli_parse_uint(optarg, 8, 4u * 1024 * 1024, &v))
                return cli_usage(cmd, "--argon2-m must be 8..4194304 KiB");
            o.argon2.m_cost_kib = (uint32_t)v;
            break;
        case 'p': o.product = optarg; break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (dir == NULL || o.model == NULL || !have_count || o.out == NULL)
        return cli_usage(cmd, "--dir, --model, --count and --out are required");
    if (!keel_identity_model_ok(o.model))
        return cli_usage(cmd, "--model must be 1..%d characters of [A-Za-z0-9._-]", KEEL_MODEL_MAX);
    int tpm2 = strcmp(o.keystore.driver, "tpm2") == 0;
    if (o.keystore.pin_file != NULL && o.keystore.pin_env != NULL)
        return cli_usage(cmd, tpm2 ? "give --tpm2-pin-file or --tpm2-pin-env, not both"
                                   : "give --pkcs11-pin-file or --pkcs11-pin-env, not both");
    if (o.tpm2_lockout_auth_file != NULL && o.tpm2_lockout_tries == 0)
        return cli_usage(cmd, "--tpm2-lockout-auth-file goes with --tpm2-lockout");
    if ((tpm2_opt || o.keystore.tcti != NULL) && !tpm2)
        return cli_usage(cmd, "--tpm2-* options need --keystore tpm2");
    if (tpm2 && (o.keystore.module != NULL || o.keystore.token != NULL ||
                 ((o.keystore.pin_file != NULL || o.keystore.pin_env != NULL) && !tpm2_opt)))
        return cli_usage(cmd, "--pkcs11-* options need --keystore pkcs11");
    if (strcmp(o.keystore.driver, "pkcs11") == 0 &&
        (o.keystore.module == NULL || o.keystore.token == NULL ||
         (o.keystore.pin_file == NULL && o.keystore.pin_env == NULL)))
        return cli_usage(cmd, "--keystore pkcs11 needs --pkcs11-module, --pkcs11-token and a PIN source");

    keel_factory_t *f = NULL;
    keel_status_t st = keel_factory_load(dir, KEEL_PKI_MASK(KEEL_PKI_DEVICE), NULL, &f);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    o.progress = cli_progress;
    keel_provision_stats_t s = {0};
    st = keel_factory_provision(f, &o, &s);
    keel_factory_free(f);
    if (st != KEEL_OK) {
        int rc = cli_fail(cmd, st);
        if (s.made > 0)
            fprintf(stderr, "keel: %s: %u complete device(s) were kept in %s\n", cmd, s.made, o.out);
        return rc;
    }
    if (json) {
        json_t *j = json_pack("{s:i, s:s, s:s, s:s, s:f, s:f, s:{s:f, s:f, s:f}}", "devices", (int)s.made,
                              "model", o.model, "out", o.out, "keystore", o.keystore.driver, "seconds",
                              s.total, "devices_per_second", s.total > 0 ? s.made / s.total : 0.0,
                              "phase_seconds", "keygen", s.keygen, "certificate", s.cert, "argon2id", s.hash);
        if (j != NULL && s.have_tpm2_lockout &&
            json_object_set_new(j, "tpm2_lockout",
                                json_pack("{s:I, s:I, s:I, s:I, s:b}", "max_tries", (json_int_t)s.tpm2_lockout.max_tries,
                                          "recovery_seconds", (json_int_t)s.tpm2_lockout.recovery_s,
                                          "lockout_recovery_seconds", (json_int_t)s.tpm2_lockout.lockout_recovery_s,
                                          "failures", (json_int_t)s.tpm2_lockout.failures, "in_lockout",
                                          s.tpm2_lockout.in_lockout)) != 0) {
            json_decref(j);
            j = NULL;
        }
        int rc = cli_print_json(j);
        json_decref(j);
        return rc;
    }
    printf("provisioned %u %s device(s) into %s in %.2f s (%.1f devices/s)\n", s.made, o.model, o.out,
           s.total, s.total > 0 ? s.made / s.total : 0.0);
    printf("  labels (passwords, keep secret): %s/%s\n", o.out, KEEL_BATCH_LABELS);
    printf("  registry manifest (no secrets):  %s/%s\n", o.out, KEEL_BATCH_MANIFEST);
    if (s.have_tpm2_lockout)
        printf("  TPM dictionary-attack lockout:   after %u wrong PINs; one forgiven every %u s\n",
               (unsigned)s.tpm2_lockout.max_tries, (unsigned)s.tpm2_lockout.recovery_s);
    return CLI_OK;
}

static int cmd_audit(int argc, char **argv)
{
    static const char *cmd = "factory audit";
    static const struct option opts[] = {{"common-list", required_argument, NULL, 'c'},
                                         {"verify-hashes", required_argument, NULL, 'v'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    keel_audit_opts_t o = {.verify_hashes = 16};
    unsigned long v = 0;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o.common_list = optarg; break;
        case 'v':
            if (!cli_parse_uint(optarg, 0, KEEL_PROVISION_MAX_COUNT, &v))
                return cli_usage(cmd, "--verify-hashes must be a count");
            o.verify_hashes = (unsigned)v;
            break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage(cmd, "exactly one batch directory is required");
    o.out = argv[optind];
    if (o.common_list == NULL)
        o.common_list = getenv("KEEL_COMMON_PASSWORDS");
    if (o.common_list == NULL)
        o.common_list = KEEL_COMMON_PASSWORDS;

    json_t *r = NULL;
    unsigned findings = 0;
    keel_status_t st = keel_factory_audit(&o, &r, &findings);
    if (st != KEEL_OK)
        return cli_fail(cmd, st == KEEL_ERR_NOT_FOUND ? KEEL_ERR_CONFIG : st);
    int rc = findings == 0 ? CLI_OK : CLI_FAILED;
    if (json) {
        if (cli_print_json(r) != CLI_OK)
            rc = CLI_FAILED;
        json_decref(r);
        return rc;
    }
    printf("audit of %s: %lld label(s), %lld device(s), provision 5.1-2\n", o.out,
           json_integer_value(json_object_get(r, "labels")),
           json_integer_value(json_object_get(r, "devices")));
    size_t i;
    json_t *chk;
    json_array_foreach(json_object_get(r, "checks"), i, chk) {
        json_int_t n = json_integer_value(json_object_get(chk, "findings"));
        printf("  %s  %-22s %s", n == 0 ? "PASS" : "FAIL", json_string_value(json_object_get(chk, "id")),
               json_string_value(json_object_get(chk, "title")));
        if (n > 0)
            printf(" (%lld finding%s)", n, n == 1 ? "" : "s");
        putchar('\n');
    }
    json_t *e = json_object_get(r, "entropy_bits");
    printf("  entropy per password: min %.1f bits, mean %.1f bits; %lld label hash(es) verified\n",
           json_real_value(json_object_get(e, "min")), json_real_value(json_object_get(e, "mean")),
           json_integer_value(json_object_get(r, "hashes_verified")));
    json_t *fnd;
    size_t shown = 0;
    json_array_foreach(json_object_get(r, "findings"), i, fnd) {
        if (shown++ == 50) {
            printf("  ... and %zu more (use --json for all)\n", json_array_size(json_object_get(r, "findings")) - 50);
            break;
        }
        const char *dev = json_string_value(json_object_get(fnd, "device"));
        printf("  finding: %s: %s%s%s\n", json_string_value(json_object_get(fnd, "check")), dev ? dev : "",
               dev ? ": " : "", json_string_value(json_object_get(fnd, "detail")));
    }
    printf("%s: %u finding(s)\n", findings == 0 ? "PASS" : "FAIL", findings);
    json_decref(r);
    return rc;
}

/* issue-server and issue-client: the same options, output and summary; what
 * is "server" or "client", which also names the key and certificate files. */
static int issue_service(const char *cmd, int argc, char **argv, cli_issue_fn fn, const char *what)
{
    cli_issued_t r;
    int rc = cli_issue(cmd, argc, argv, KEEL_PKI_MASK(KEEL_PKI_SERVICE), fn, &r);
    if (rc >= 0)
        return rc;
    if (r.json) {
        json_t *j = json_pack("{s:s, s:s}", "name", r.name, "out", r.out);
        rc = cli_print_json(j);
        json_decref(j);
        return rc;
    }
    printf("%s certificate for %s in %s (%s.key, %s.crt, chain.pem, ca.pem)\n", what, r.name, r.out, what, what);
    return CLI_OK;
}

static int cmd_issue_server(int argc, char **argv)
{
    return issue_service("factory issue-server", argc, argv, keel_factory_issue_server, "server");
}

static int cmd_issue_client(int argc, char **argv)
{
    return issue_service("factory issue-client", argc, argv, keel_factory_issue_client, "client");
}

/* A serial list: one hex serial per line (41 bytes with its newline). */
#define CRL_LIST_MAX ((size_t)KEEL_CRL_MAX_ENTRIES * 48u)

/* Splits the list in place into its serials (blank and # lines skipped).
 * *serials is allocated; the strings point into b. */
static keel_status_t crl_parse_list(keel_buf_t *b, const char *name, const char ***serials, size_t *n)
{
    size_t lines = 1;
    for (size_t i = 0; i < b->len; i++)
        lines += b->data[i] == '\n';
    *n = 0;
    *serials = calloc(lines, sizeof **serials);
    if (*serials == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    char *p = (char *)b->data, *end = p + b->len;
    for (size_t line = 1; p < end; line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl != NULL ? nl : end;
        while (e > p && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            e--;
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        if (memchr(p, '\0', (size_t)(e - p)) != NULL)
            return keel_errorf(KEEL_ERR_FORMAT, "%s:%zu: a NUL byte", name, line);
        *e = '\0';
        if (*p != '\0' && *p != '#') {
            if (*n == KEEL_CRL_MAX_ENTRIES)
                return keel_errorf(KEEL_ERR_TOO_LARGE, "%s: more than %u serials", name, KEEL_CRL_MAX_ENTRIES);
            (*serials)[(*n)++] = p;
        }
        p = nl != NULL ? nl + 1 : end;
    }
    return KEEL_OK;
}

static int cmd_crl(int argc, char **argv)
{
    static const char *cmd = "factory crl";
    static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
                                         {"serials", required_argument, NULL, 's'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"days", required_argument, NULL, 'n'},
                                         {"ca", required_argument, NULL, 'c'},
                                         {"passphrase-file", required_argument, NULL, 'f'},
                                         {"passphrase-env", required_argument, NULL, 'e'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    const char *dir = NULL, *list = NULL, *out = NULL, *pfile = NULL, *penv = NULL;
    keel_pki_t ca = KEEL_PKI_DEVICE;
    unsigned long days = 30;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 's': list = optarg; break;
        case 'o': out = optarg; break;
        case 'n':
            if (!cli_parse_uint(optarg, 1, KEEL_CRL_MAX_DAYS, &days))
                return cli_usage(cmd, "--days must be 1..%u", KEEL_CRL_MAX_DAYS);
            break;
        case 'c':
            if (strcmp(optarg, "device") == 0)
                ca = KEEL_PKI_DEVICE;
            else if (strcmp(optarg, "service") == 0)
                ca = KEEL_PKI_SERVICE;
            else
                return cli_usage(cmd, "--ca must be device or service");
            break;
        case 'f': pfile = optarg; break;
        case 'e': penv = optarg; break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (dir == NULL || list == NULL || out == NULL)
        return cli_usage(cmd, "--dir, --serials and --out are required");

    keel_buf_t b, pem;
    keel_buf_init(&pem, 0);
    const char **serials = NULL;
    size_t n = 0;
    keel_factory_t *f = NULL;
    keel_status_t st = strcmp(list, "-") == 0 ? keel_fd_read(0, "stdin", CRL_LIST_MAX, &b)
                                              : keel_file_read(list, CRL_LIST_MAX, &b);
    if (st == KEEL_OK)
        st = crl_parse_list(&b, strcmp(list, "-") == 0 ? "stdin" : list, &serials, &n);
    if (st == KEEL_OK)
        st = cli_load_factory(dir, KEEL_PKI_MASK(ca), pfile, penv, &f);
    if (st == KEEL_OK)
        st = keel_factory_crl(f, ca, serials, n, (int64_t)time(NULL), (unsigned)days, &pem);
    if (st == KEEL_OK)
        st = keel_file_write_atomic(out, pem.data, pem.len, 0644);
    keel_factory_free(f);
    free(serials);
    keel_buf_free(&b);
    keel_buf_free(&pem);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    if (json) {
        json_t *j = json_pack("{s:s, s:I, s:I, s:s}", "ca", keel_pki_dirname(ca), "revoked", (json_int_t)n,
                              "days", (json_int_t)days, "out", out);
        int rc = cli_print_json(j);
        json_decref(j);
        return rc;
    }
    printf("%s CRL revoking %zu serial(s), next update in %lu day(s): %s\n", keel_pki_dirname(ca), n, days, out);
    return CLI_OK;
}

int cmd_factory(int argc, char **argv)
{
    static const cli_sub_t subs[] = {{"init", init_usage, cmd_init},
                {"provision", provision_usage, cmd_provision},
                {"audit", audit_usage, cmd_audit},
                {"issue-server", server_usage, cmd_issue_server},
                {"issue-client", client_usage, cmd_issue_client},
                {"crl", crl_usage, cmd_crl}};
    return cli_dispatch("factory", factory_usage, subs, sizeof subs / sizeof subs[0], argc, argv);
}

/* keel bundle: signer, create, inspect, verify. */
#include "cli.h"

#include "keel/factory.h"
#include "keel/update.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char bundle_usage[] =
    "usage: keel bundle <subcommand> [options]\n"
    "\n"
    "subcommands:\n"
    "  signer   issue an update-signer certificate from the release CA\n"
    "  create   sign a payload into an update bundle\n"
    "  inspect  show a bundle's header and manifest (no verification)\n"
    "  verify   verify a bundle completely against the release root\n"
    "\n"
    "The format is described in docs/bundle-format.md.\n"
    "Run 'keel bundle <subcommand> --help' for its options.\n";

static const char signer_usage[] =
    "usage: keel bundle signer --dir FACTORY --name NAME --out DIR\n"
    "                          [--passphrase-file FILE | --passphrase-env VAR] [--json]\n"
    "\n"
    "Issues an update-signer certificate (CN = NAME, codeSigning, valid 2 years)\n"
    "from the factory's release issuing CA. Writes DIR/signer.key (0600, never\n"
    "replaced), DIR/signer.crt and DIR/chain.pem (signer + release issuing CA).\n"
    "If the factory was made with a passphrase, the release issuing key is\n"
    "encrypted and needs it (from a file or an environment variable).\n";

static const char create_usage[] =
    "usage: keel bundle create --signer DIR --model MODEL [--model MODEL ...]\n"
    "                          --version SEMVER --security-version N\n"
    "                          --support-until YYYY-MM-DD --payload IMAGE|- --out BUNDLE\n"
    "                          [options]\n"
    "\n"
    "Signs IMAGE (or standard input with -) into BUNDLE with the signer in DIR\n"
    "(signer.key and chain.pem from 'keel bundle signer'). The manifest records\n"
    "the models it is for, the version, the security version (anti-rollback),\n"
    "the end of the support period, the payload digest and one digest per chunk.\n"
    "\n"
    "options:\n"
    "  --notes FILE             release notes shown to users (at most 4096 bytes)\n"
    "  --risk TEXT              what the security fixes protect against (at most 4096 bytes)\n"
    "  --security-fixes IDS     comma-separated ids (CVE-2025-1234,...), at most 64\n"
    "  --disruptive             the update interrupts the device's function;\n"
    "  --downtime SECONDS       ... for about this long (required with --disruptive)\n"
    "  --chunk-size BYTES       power of two, 4096..16777216 (default 256 KiB, larger\n"
    "                           when the payload needs more than 8192 chunks)\n"
    "  --kind image|trust       image (default): software for a slot; trust: a new\n"
    "                           release trust store, IMAGE being PEM with the new\n"
    "                           release root and optionally its current CRL\n"
    "  --passphrase-file FILE   the signer key's passphrase (the factory's), when\n"
    "  --passphrase-env VAR       the factory was made with one\n"
    "  --json                   print a JSON summary on stdout\n";

static const char inspect_usage[] =
    "usage: keel bundle inspect BUNDLE [--json]\n"
    "\n"
    "Prints the header, the manifest and the signer's subject. Nothing is\n"
    "verified: use 'keel bundle verify' for that. BUNDLE may be - (stdin).\n";

static const char verify_usage[] =
    "usage: keel bundle verify BUNDLE --trust RELEASE_ROOT_PEM [--crl CRL_PEM]\n"
    "                          [--model MODEL] [--json]\n"
    "\n"
    "Verifies BUNDLE as a device does: header, signer chain to the release root\n"
    "(codeSigning, valid now, not revoked by the CRL if one is given), the\n"
    "signature, the manifest, and every payload chunk and the payload digest.\n"
    "With --model, the bundle must list MODEL. Exit status 0 if the bundle is\n"
    "valid, 1 if not (the reason is on stderr). BUNDLE may be - (stdin).\n";

/* ---- reading a bundle from a file or stdin ------------------------------ */

static ssize_t fd_read(void *ctx, void *buf, size_t n)
{
    return read(*(int *)ctx, buf, n);
}

static keel_status_t open_bundle(const char *path, int *fd)
{
    if (strcmp(path, "-") == 0) {
        *fd = STDIN_FILENO;
        return KEEL_OK;
    }
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return keel_errorf(errno == ENOENT ? KEEL_ERR_CONFIG : KEEL_ERR_IO, "%s: %s", path, strerror(errno));
    (void)posix_fadvise(*fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return KEEL_OK;
}

static void close_bundle(int fd)
{
    if (fd > STDIN_FILENO)
        close(fd);
}

/* ---- output ------------------------------------------------------------- */

static void hex32(const uint8_t *d, char out[2 * KEEL_SHA256_LEN + 1])
{
    if (keel_hex_encode(d, KEEL_SHA256_LEN, out, 2 * KEEL_SHA256_LEN + 1) != KEEL_OK)
        out[0] = '\0';
}

static json_t *manifest_json(const keel_manifest_t *m)
{
    char hex[2 * KEEL_SHA256_LEN + 1];
    hex32(m->payload_sha256, hex);
    json_t *models = json_array(), *fixes = json_array();
    for (unsigned i = 0; models != NULL && i < m->n_models; i++)
        json_array_append_new(models, json_string(m->models[i]));
    for (unsigned i = 0; fixes != NULL && i < m->n_fixes; i++)
        json_array_append_new(fixes, json_string(m->security_fixes[i]));
    return json_pack("{s:s, s:o*, s:s, s:I, s:s, s:s, s:s?, s:s?, s:o*, s:b, s:I, s:{s:I, s:s, s:I, s:I}}",
                     "kind", m->kind == KEEL_BUNDLE_TRUST ? "trust" : "image", "models", models, "version", m->version, "security_version", (json_int_t)m->security_version,
                     "support_until", m->support_until, "created", m->created, "notes",
                     m->notes[0] ? m->notes : NULL, "risk", m->risk[0] ? m->risk : NULL, "security_fixes",
                     fixes, "disruptive", (int)m->disruptive, "downtime_seconds",
                     (json_int_t)m->downtime_seconds, "payload", "size", (json_int_t)m->payload_size, "sha256",
                     hex, "chunk_size", (json_int_t)m->chunk_size, "chunks", (json_int_t)m->n_chunks);
}

static void print_manifest(const keel_manifest_t *m)
{
    char hex[2 * KEEL_SHA256_LEN + 1];
    printf("  %-17s%s\n", "kind:", m->kind == KEEL_BUNDLE_TRUST ? "trust store" : "software image");
    printf("  %-17s", "models:");
    for (unsigned i = 0; i < m->n_models; i++)
        printf("%s%s", i ? ", " : "", m->models[i]);
    putchar('\n');
    printf("  %-17s%s (security version %u)\n", "version:", m->version, m->security_version);
    printf("  %-17s%s\n", "supported until:", m->support_until);
    printf("  %-17s%s\n", "created:", m->created);
    if (m->disruptive)
        printf("  %-17sdisruptive, about %u s of downtime\n", "impact:", m->downtime_seconds);
    else
        printf("  %-17snot disruptive\n", "impact:");
    if (m->n_fixes > 0) {
        printf("  %-17s", "security fixes:");
        for (unsigned i = 0; i < m->n_fixes; i++)
            printf("%s%s", i ? ", " : "", m->security_fixes[i]);
        putchar('\n');
    }
    if (m->risk[0])
        cli_print_text("risk:", m->risk);
    if (m->notes[0])
        cli_print_text("notes:", m->notes);
    hex32(m->payload_sha256, hex);
    printf("  %-17s%llu bytes, %u chunk(s) of %u bytes\n", "payload:", (unsigned long long)m->payload_size,
           m->n_chunks, m->chunk_size);
    printf("  %-17s%s\n", "payload sha256:", hex);
}

/* ---- signer ------------------------------------------------------------- */

static int cmd_signer(int argc, char **argv)
{
    cli_issued_t r;
    int rc = cli_issue("bundle signer", argc, argv, KEEL_PKI_MASK(KEEL_PKI_RELEASE), keel_factory_issue_signer,
                       &r);
    if (rc >= 0)
        return rc;
    if (r.json) {
        json_t *j = json_pack("{s:s, s:s, s:i, s:[s,s,s]}", "name", r.name, "out", r.out, "valid_days",
                              KEEL_SIGNER_DAYS, "files", "signer.key", "signer.crt", "chain.pem");
        rc = cli_print_json(j);
        json_decref(j);
        return rc;
    }
    printf("update signer \"%s\" in %s (signer.key, signer.crt, chain.pem), valid %d days\n", r.name, r.out,
           KEEL_SIGNER_DAYS);
    return CLI_OK;
}

/* ---- create ------------------------------------------------------------- */

/* Splits "A,B,C" in place into ids[]; empty ids are refused. */
static int split_ids(char *s, const char **ids, unsigned max, unsigned *n)
{
    *n = 0;
    for (char *p = s;;) {
        char *comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        if (*p == '\0' || *n == max)
            return 0;
        ids[(*n)++] = p;
        if (comma == NULL)
            return 1;
        p = comma + 1;
    }
}

static int cmd_create(int argc, char **argv)
{
    static const char *cmd = "bundle create";
    static const struct option opts[] = {{"signer", required_argument, NULL, 's'},
                                         {"model", required_argument, NULL, 'm'},
                                         {"version", required_argument, NULL, 'v'},
                                         {"security-version", required_argument, NULL, 'S'},
                                         {"support-until", required_argument, NULL, 'u'},
                                         {"payload", required_argument, NULL, 'p'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"notes", required_argument, NULL, 'n'},
                                         {"risk", required_argument, NULL, 'r'},
                                         {"security-fixes", required_argument, NULL, 'F'},
                                         {"disruptive", no_argument, NULL, 'D'},
                                         {"downtime", required_argument, NULL, 'T'},
                                         {"chunk-size", required_argument, NULL, 'c'},
                                         {"kind", required_argument, NULL, 'k'},
                                         {"passphrase-file", required_argument, NULL, 'P'},
                                         {"passphrase-env", required_argument, NULL, 'E'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    const char *signer = NULL, *notes_file = NULL, *pfile = NULL, *penv = NULL, *models[KEEL_BUNDLE_MODELS_MAX];
    const char *fixes[KEEL_BUNDLE_FIXES_MAX];
    char *fix_arg = NULL;
    keel_bundle_create_opts_t o = {.models = models, .security_fixes = fixes};
    unsigned long v = 0;
    int json = 0, c, have_sv = 0, have_downtime = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 's': signer = optarg; break;
        case 'm':
            if (o.n_models == KEEL_BUNDLE_MODELS_MAX)
                return cli_usage(cmd, "at most %u --model options", KEEL_BUNDLE_MODELS_MAX);
            models[o.n_models++] = optarg;
            break;
        case 'v': o.version = optarg; break;
        case 'S':
            if (!cli_parse_uint(optarg, 0, UINT32_MAX, &v))
                return cli_usage(cmd, "--security-version must be 0..%u", UINT32_MAX);
            o.security_version = (uint32_t)v;
            have_sv = 1;
            break;
        case 'u': o.support_until = optarg; break;
        case 'p': o.payload = optarg; break;
        case 'o': o.out = optarg; break;
        case 'n': notes_file = optarg; break;
        case 'r': o.risk = optarg; break;
        case 'F': fix_arg = optarg; break;
        case 'D': o.disruptive = true; break;
        case 'T':
            if (!cli_parse_uint(optarg, 0, UINT32_MAX, &v))
                return cli_usage(cmd, "--downtime must be 0..%u seconds", UINT32_MAX);
            o.downtime_seconds = (uint32_t)v;
            have_downtime = 1;
            break;
        case 'c':
            if (!cli_parse_uint(optarg, 4096, KEEL_BUNDLE_CHUNK_MAX, &v) || (v & (v - 1)) != 0)
                return cli_usage(cmd, "--chunk-size must be a power of two in 4096..%u", KEEL_BUNDLE_CHUNK_MAX);
            o.chunk_size = (uint32_t)v;
            break;
        case 'P': pfile = optarg; break;
        case 'E': penv = optarg; break;
        case 'k':
            if (strcmp(optarg, "image") == 0)
                o.kind = KEEL_BUNDLE_IMAGE;
            else if (strcmp(optarg, "trust") == 0)
                o.kind = KEEL_BUNDLE_TRUST;
            else
                return cli_usage(cmd, "--kind must be image or trust");
            break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (signer == NULL || o.n_models == 0 || o.version == NULL || !have_sv || o.support_until == NULL ||
        o.payload == NULL || o.out == NULL)
        return cli_usage(cmd, "--signer, --model, --version, --security-version, --support-until, --payload "
                              "and --out are required");
    if (o.disruptive != have_downtime)
        return cli_usage(cmd, "--disruptive and --downtime go together");
    if (fix_arg != NULL && !split_ids(fix_arg, fixes, KEEL_BUNDLE_FIXES_MAX, &o.n_fixes))
        return cli_usage(cmd, "--security-fixes must be 1..%u comma-separated ids", KEEL_BUNDLE_FIXES_MAX);
    char key[KEEL_PATH_MAX], chain[KEEL_PATH_MAX];
    if (keel_path_join(key, sizeof key, signer, "signer.key") != KEEL_OK ||
        keel_path_join(chain, sizeof chain, signer, "chain.pem") != KEEL_OK)
        return cli_usage(cmd, "--signer path is too long");
    o.signer_key = key;
    o.signer_chain = chain;
    keel_buf_t notes;
    keel_buf_init(&notes, 0);
    keel_status_t st = KEEL_OK;
    if (notes_file != NULL) {
        st = keel_file_read(notes_file, KEEL_BUNDLE_NOTES_MAX, &notes);
        if (st == KEEL_ERR_TOO_LARGE)
            st = keel_errorf(KEEL_ERR_ARG, "--notes: %s is longer than %u bytes", notes_file, KEEL_BUNDLE_NOTES_MAX);
        else if (st == KEEL_ERR_NOT_FOUND)
            st = keel_errorf(KEEL_ERR_CONFIG, "--notes: %s does not exist", notes_file);
        else if (st == KEEL_OK && strlen((const char *)notes.data) != notes.len)
            st = keel_errorf(KEEL_ERR_ARG, "--notes: %s contains a NUL byte", notes_file);
        o.notes = (const char *)notes.data;
    }
    /* The signer key is encrypted when the factory had a passphrase. */
    char pass[KEEL_PASSPHRASE_MAX + 1];
    size_t passlen = 0;
    if (st == KEEL_OK && (pfile != NULL || penv != NULL) &&
        (st = keel_secret_read(pfile, penv, pass, sizeof pass, &passlen)) == KEEL_OK)
        o.signer_pass = pass;
    double t0 = keel_now();
    if (st == KEEL_OK)
        st = keel_bundle_create(&o);
    keel_wipe(pass, sizeof pass);
    keel_buf_free(&notes);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    double secs = keel_now() - t0;
    /* Read back what was written, for the summary. */
    int fd = -1;
    keel_bundle_header_t h;
    keel_manifest_t *m = calloc(1, sizeof *m);
    char subject[KEEL_BUNDLE_SUBJECT_MAX] = "";
    if (m == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st == KEEL_OK && (st = open_bundle(o.out, &fd)) == KEEL_OK) {
        st = keel_bundle_inspect(fd_read, &fd, &h, m, subject, sizeof subject);
        close_bundle(fd);
    }
    int rc = CLI_OK;
    if (st != KEEL_OK) {
        rc = cli_fail(cmd, st);
    } else if (json) {
        json_t *j = json_pack("{s:s, s:s, s:o*, s:f}", "bundle", o.out, "signer", subject, "manifest",
                              manifest_json(m), "seconds", secs);
        rc = cli_print_json(j);
        json_decref(j);
    } else {
        printf("bundle %s signed by %s\n", o.out, subject);
        print_manifest(m);
    }
    keel_manifest_free(m);
    free(m);
    return rc;
}

/* ---- inspect ------------------------------------------------------------ */

static int cmd_inspect(int argc, char **argv)
{
    static const char *cmd = "bundle inspect";
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
    int json = 0, c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage(cmd, "exactly one bundle is required");
    const char *path = argv[optind];
    keel_bundle_header_t h;
    keel_manifest_t *m = calloc(1, sizeof *m);
    char subject[KEEL_BUNDLE_SUBJECT_MAX] = "";
    int fd = -1;
    keel_status_t st = m != NULL ? open_bundle(path, &fd) : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st == KEEL_OK) {
        st = keel_bundle_inspect(fd_read, &fd, &h, m, subject, sizeof subject);
        close_bundle(fd);
    }
    int rc = CLI_OK;
    if (st != KEEL_OK) {
        rc = cli_fail(cmd, st);
    } else if (json) {
        json_t *j = json_pack("{s:s, s:b, s:{s:i, s:i, s:s, s:I, s:I, s:I, s:I}, s:s, s:o*}", "bundle", path,
                              "verified", 0, "header", "format_version", h.format_version, "algorithm",
                              h.algorithm, "algorithm_name", "ecdsa-p256-sha256", "manifest_length",
                              (json_int_t)h.manifest_len, "signature_length", (json_int_t)h.signature_len,
                              "chain_length", (json_int_t)h.chain_len, "payload_length",
                              (json_int_t)h.payload_len, "signer", subject, "manifest", manifest_json(m));
        rc = cli_print_json(j);
        json_decref(j);
    } else {
        printf("bundle %s (NOT VERIFIED: use 'keel bundle verify' with the release root)\n", path);
        printf("  %-17sformat %u, signature algorithm %u (ecdsa-p256-sha256)\n", "header:", h.format_version,
               h.algorithm);
        printf("  %-17smanifest %u, signature %u, chain %u, payload %llu bytes\n", "lengths:", h.manifest_len,
               h.signature_len, h.chain_len, (unsigned long long)h.payload_len);
        printf("  %-17s%s\n", "signer (claimed):", subject);
        print_manifest(m);
    }
    keel_manifest_free(m);
    free(m);
    return rc;
}

/* ---- verify ------------------------------------------------------------- */

static int verify_refused(const char *cmd, const char *path, keel_status_t st, int json)
{
    if (json) {
        json_t *j = json_pack("{s:s, s:b, s:s}", "bundle", path, "valid", 0, "error", keel_error_message());
        (void)cli_print_json(j);
        json_decref(j);
    }
    int rc = cli_fail(cmd, st);
    return rc == CLI_USAGE ? rc : CLI_FAILED;
}

static int cmd_verify(int argc, char **argv)
{
    static const char *cmd = "bundle verify";
    static const struct option opts[] = {{"trust", required_argument, NULL, 't'},
                                         {"crl", required_argument, NULL, 'c'},
                                         {"model", required_argument, NULL, 'm'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    const char *root = NULL, *crl = NULL, *model = NULL;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 't': root = optarg; break;
        case 'c': crl = optarg; break;
        case 'm': model = optarg; break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage(cmd, "exactly one bundle is required");
    if (root == NULL)
        return cli_usage(cmd, "--trust is required (the release root certificate, PEM)");
    const char *path = argv[optind];
    keel_trust_t *trust = NULL;
    keel_status_t st = keel_trust_load(root, crl, &trust);
    if (st != KEEL_OK) {
        /* A trust store we cannot use is a configuration error. */
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        return cli_fail(cmd, keel_errorf(KEEL_ERR_CONFIG, "trust: %s", why));
    }
    int fd = -1;
    if ((st = open_bundle(path, &fd)) != KEEL_OK) {
        keel_trust_free(trust);
        return cli_fail(cmd, st);
    }
    double t0 = keel_now();
    keel_bundle_reader_t *r = NULL;
    uint8_t *buf = NULL;
    st = keel_bundle_open(fd_read, &fd, trust, &r);
    const keel_manifest_t *m = st == KEEL_OK ? keel_bundle_manifest(r) : NULL;
    if (st == KEEL_OK && model != NULL) {
        int found = 0;
        for (unsigned i = 0; i < m->n_models && !found; i++)
            found = strcmp(m->models[i], model) == 0;
        if (!found)
            st = keel_errorf(KEEL_ERR_VERIFY, "the bundle is not for model %s", model);
    }
    if (st == KEEL_OK && (buf = malloc(m->chunk_size)) == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    size_t n = 0;
    do {
        if (st == KEEL_OK)
            st = keel_bundle_next_chunk(r, buf, m->chunk_size, &n);
    } while (st == KEEL_OK && n > 0);
    double secs = keel_now() - t0;
    close_bundle(fd);
    free(buf);
    keel_trust_free(trust);
    int rc = CLI_OK;
    if (st != KEEL_OK) {
        rc = verify_refused(cmd, path, st, json);
    } else if (json) {
        json_t *j = json_pack("{s:s, s:b, s:s, s:o*, s:f}", "bundle", path, "valid", 1, "signer",
                              keel_bundle_signer_subject(r), "manifest", manifest_json(m), "seconds", secs);
        rc = cli_print_json(j);
        json_decref(j);
    } else {
        printf("bundle %s: VALID (signature, signer chain, manifest and every payload chunk)\n", path);
        printf("  %-17s%s\n", "signer:", keel_bundle_signer_subject(r));
        print_manifest(m);
        printf("  %-17s%.2f s\n", "verified in:", secs);
    }
    keel_bundle_close(r);
    return rc;
}

int cmd_bundle(int argc, char **argv)
{
    static const cli_sub_t subs[] = {{"signer", signer_usage, cmd_signer},
                {"create", create_usage, cmd_create},
                {"inspect", inspect_usage, cmd_inspect},
                {"verify", verify_usage, cmd_verify}};
    return cli_dispatch("bundle", bundle_usage, subs, sizeof subs / sizeof subs[0], argc, argv);
}

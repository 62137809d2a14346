/*
 * keel assess firmware: static scan of an image (5.1-1, 5.4-3, 5.6-4A, 5.6-7).
 * keel assess passwords: 5.1-2 analysis of any vendor's label file, with the
 * checks of `keel factory audit` (keel_factory_audit_labels).
 */
#include "cli.h"

#include "keel/assess_firmware.h"
#include "keel/factory.h"

#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char firmware_usage[] =
    "usage: keel assess firmware IMAGE|DIR [options]\n"
    "\n"
    "Static scan of a firmware tree or archive (tar with gzip, bzip2, xz, lzma or\n"
    "zstd; cpio; zip), read in memory, never extracted, no link followed:\n"
    "  private keys (PEM, DER, OpenSSH; encrypted or not) and certificates shipped\n"
    "  with their key (5.4-3); password hashes, empty passwords and well-known\n"
    "  default credentials in shadow, passwd, htpasswd and configuration (5.1-1);\n"
    "  telnetd, gdbserver, adb and console shells started at boot, dropbear -B and\n"
    "  PermitEmptyPasswords (5.6-4A, 5.1-1); world-writable and setuid files (5.6-7).\n"
    "Findings name keys by the SHA-256 of their public key and never show a\n"
    "secret. Exit status 1 on a fail or warn finding or an incomplete scan.\n"
    "\n"
    "options:\n"
    "  --max-file-bytes N    bytes read of one file (default 16 MiB)\n"
    "  --max-total-bytes N   bytes read or unpacked in all (default 2 GiB)\n"
    "  --max-entries N       entries visited (default 500000)\n"
    "  --crypt-seconds N     time for trying default passwords on hashes (default 30)\n"
    "  --json                print the report as one JSON document\n";

static const char passwords_usage[] =
    "usage: keel assess passwords LABELS.csv [--common-list FILE] [--json]\n"
    "\n"
    "Checks the label passwords of a batch of devices from any vendor for 5.1-2:\n"
    "uniqueness of passwords and ids, estimated entropy, sequences and per-position\n"
    "bias, relation to the serial number, MAC address, id or model, and the\n"
    "common-password list. Passwords are never printed.\n"
    "\n"
    "The file is CSV (',' ';' or tab, quotes as in RFC 4180) with a header row;\n"
    "columns are recognised by name (case, spaces, '_', '-' and '.' ignored):\n"
    "  password: password passwd pass pwd pin default_password label_password\n"
    "            admin_password initial_password device_password web_password\n"
    "  id:       device_id id uid uuid device dev_id device_uuid\n"
    "  serial:   serial serial_number serial_no sn\n"
    "  mac:      mac mac_address macaddr wifi_mac eth_mac wlan_mac lan_mac\n"
    "  model:    model model_name model_number product\n"
    "A password column and an id or serial column are required; others are ignored.\n"
    "Exit status 1 on any finding.\n"
    "\n"
    "options:\n"
    "  --common-list FILE   one password per line (default: $KEEL_COMMON_PASSWORDS,\n"
    "                       else " KEEL_COMMON_PASSWORDS ")\n"
    "  --json               print the report as JSON on stdout\n";

/* ---- firmware --------------------------------------------------------------- */

static void print_firmware(const json_t *r)
{
    const json_t *s = json_object_get(r, "stats"), *ar = json_object_get(r, "archive");
    printf("firmware scan of %s", json_string_value(json_object_get(r, "target")));
    if (ar != NULL) {
        printf(" (%s", json_string_value(json_object_get(ar, "format")) ? json_string_value(json_object_get(ar, "format"))
                                                                        : "archive");
        size_t i;
        json_t *f;
        json_array_foreach(json_object_get(ar, "filters"), i, f) printf(", %s", json_string_value(f));
        printf(")");
    }
    printf(": %lld entries, %lld files read (%.1f MB), %.2f s\n",
           json_integer_value(json_object_get(s, "entries")), json_integer_value(json_object_get(s, "files_read")),
           (double)json_integer_value(json_object_get(s, "bytes_read")) / 1e6,
           json_real_value(json_object_get(s, "seconds")));
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(r, "findings"), i, f) {
        const char *sev = json_string_value(json_object_get(f, "severity"));
        printf("  %s  %-6s  %-20s %s\n",
               strcmp(sev, "fail") == 0   ? "FAIL"
               : strcmp(sev, "warn") == 0 ? "WARN"
                                          : "INFO",
               json_string_value(json_object_get(f, "provision")), json_string_value(json_object_get(f, "kind")),
               json_string_value(json_object_get(f, "path")));
        cli_print_text("", json_string_value(json_object_get(f, "what")));
    }
    json_array_foreach(json_object_get(r, "notes"), i, f) cli_print_text("note:", json_string_value(f));
    const json_t *c = json_object_get(r, "counts");
    json_int_t nf = json_integer_value(json_object_get(c, "fail")), nw = json_integer_value(json_object_get(c, "warn"));
    int complete = json_is_true(json_object_get(r, "complete"));
    printf("%s: %lld fail, %lld warn, %lld info%s\n", nf + nw > 0 || !complete ? "FAIL" : "PASS", nf, nw,
           json_integer_value(json_object_get(c, "info")), complete ? "" : " (scan incomplete: see the notes)");
}

int assess_firmware_main(int argc, char **argv)
{
    static const char *cmd = "assess firmware";
    static const struct option opts[] = {{"max-file-bytes", required_argument, NULL, 'f'},
                                         {"max-total-bytes", required_argument, NULL, 't'},
                                         {"max-entries", required_argument, NULL, 'e'},
                                         {"crypt-seconds", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, firmware_usage))
        return CLI_OK;
    keel_assess_firmware_limits_t lim = keel_assess_firmware_defaults();
    unsigned long v = 0;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (!cli_parse_uint(optarg, 1024, 1024ul * 1024 * 1024, &v))
                return cli_usage(cmd, "--max-file-bytes must be 1024..1073741824");
            lim.file_max = v;
            break;
        case 't':
            if (!cli_parse_uint(optarg, 1024, (unsigned long)-1, &v))
                return cli_usage(cmd, "--max-total-bytes must be at least 1024");
            lim.total_max = v;
            break;
        case 'e':
            if (!cli_parse_uint(optarg, 1, 100000000ul, &v))
                return cli_usage(cmd, "--max-entries must be 1..100000000");
            lim.entries_max = v;
            break;
        case 'c':
            if (!cli_parse_uint(optarg, 0, 3600, &v))
                return cli_usage(cmd, "--crypt-seconds must be 0..3600");
            lim.crypt_seconds = (double)v;
            break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage(cmd, "exactly one image or directory is required");
    json_t *r = NULL;
    unsigned problems = 0;
    keel_status_t st = keel_assess_firmware_scan(argv[optind], &lim, &r, &problems);
    if (st != KEEL_OK)
        return cli_fail(cmd, st == KEEL_ERR_NOT_FOUND || st == KEEL_ERR_FORMAT ? KEEL_ERR_CONFIG : st);
    int rc = problems == 0 && json_is_true(json_object_get(r, "complete")) ? CLI_OK : CLI_FAILED;
    if (json) {
        if (cli_print_json(r) != CLI_OK)
            rc = CLI_FAILED;
    } else {
        print_firmware(r);
    }
    json_decref(r);
    return rc;
}

/* ---- passwords ------------------------------------------------------------- */

#define LABELS_FILE_MAX (256u * 1024u * 1024u)
#define CSV_FIELDS_MAX 64

enum { R_ID, R_SERIAL, R_MAC, R_MODEL, R_PASSWORD, R_COUNT };
static const char *const role_names[R_COUNT] = {"id", "serial", "mac", "model", "password"};
static const char *const role_headers[R_COUNT][13] = {
    {"deviceid", "id", "uid", "uuid", "device", "devid", "deviceuuid", NULL},
    {"serial", "serialnumber", "serialno", "sn", NULL},
    {"mac", "macaddress", "macaddr", "wifimac", "ethmac", "wlanmac", "lanmac", NULL},
    {"model", "modelname", "modelnumber", "product", NULL},
    {"password", "passwd", "pass", "pwd", "pin", "defaultpassword", "labelpassword", "adminpassword",
     "initialpassword", "devicepassword", "webpassword", NULL},
};

typedef struct {
    char *p, *end;
    char delim;
    size_t line;
} csv_t;

/* Reads one record in place (quotes removed, "" unescaped); returns the number
 * of fields, 0 at the end, -1 on a malformed or too wide record. */
static int csv_record(csv_t *c, char **f)
{
    while (c->p < c->end && (*c->p == '\n' || *c->p == '\r')) {
        c->line += *c->p == '\n';
        c->p++;
    }
    if (c->p >= c->end)
        return 0;
    int n = 0;
    for (;;) {
        if (n == CSV_FIELDS_MAX)
            return -1;
        char *out = c->p, *start = c->p;
        f[n++] = start;
        if (c->p < c->end && *c->p == '"') {
            c->p++;
            for (;;) {
                if (c->p >= c->end)
                    return -1; /* unterminated quote */
                if (*c->p == '"') {
                    if (c->p + 1 < c->end && c->p[1] == '"') {
                        *out++ = '"';
                        c->p += 2;
                        continue;
                    }
                    c->p++;
                    break;
                }
                c->line += *c->p == '\n';
                *out++ = *c->p++;
            }
            if (c->p < c->end && *c->p != c->delim && *c->p != '\n' && *c->p != '\r')
                return -1; /* text after the closing quote */
        } else {
            while (c->p < c->end && *c->p != c->delim && *c->p != '\n' && *c->p != '\r')
                *out++ = *c->p++;
        }
        /* Step over the separator or line end before writing the field's
         * NUL, which may land on it (out <= c->p). */
        char sep = c->p < c->end ? *c->p : '\n';
        if (sep == c->delim) {
            c->p++;
            *out = '\0';
            continue;
        }
        if (c->p < c->end && *c->p == '\r')
            c->p++;
        if (c->p < c->end && *c->p == '\n') {
            c->p++;
            c->line++;
        }
        *out = '\0';
        return n;
    }
}

static void header_key(const char *h, char *out, size_t cap)
{
    size_t o = 0;
    for (; *h && o + 1 < cap; h++)
        if (isalnum((unsigned char)*h))
            out[o++] = (char)tolower((unsigned char)*h);
    out[o] = '\0';
}

static void make_printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            *s = '?';
}

static const char *severity_of(const char *check)
{
    return strcmp(check, "entropy") == 0 || strcmp(check, "labels-format") == 0 ? "warn" : "fail";
}

/* Parses the label file into labels pointing into buf. */
static int parse_labels(const char *cmd, const char *file, keel_buf_t *buf, keel_label_t **out, size_t *count,
                        json_t *columns)
{
    char *text = (char *)buf->data;
    size_t len = buf->len;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
        len -= 3;
    }
    if (memchr(text, '\0', len) != NULL) {
        fprintf(stderr, "keel: %s: %s: a NUL byte: not a CSV file\n", cmd, file);
        return CLI_USAGE;
    }
    /* The header's most frequent separator, outside quotes. */
    size_t counts[3] = {0};
    const char seps[3] = {',', ';', '\t'};
    int quoted = 0;
    for (size_t i = 0; i < len && (quoted || text[i] != '\n'); i++) {
        quoted ^= text[i] == '"';
        for (int s = 0; s < 3; s++)
            counts[s] += !quoted && text[i] == seps[s];
    }
    int best = 0;
    for (int s = 1; s < 3; s++)
        if (counts[s] > counts[best])
            best = s;
    csv_t c = {.p = text, .end = text + len, .delim = seps[best], .line = 1};
    char *f[CSV_FIELDS_MAX];
    int nh = csv_record(&c, f);
    if (nh <= 0) {
        fprintf(stderr, "keel: %s: %s: no header row\n", cmd, file);
        return CLI_USAGE;
    }
    int col[R_COUNT] = {-1, -1, -1, -1, -1};
    for (int i = 0; i < nh; i++) {
        char key[64];
        header_key(f[i], key, sizeof key);
        for (int r = 0; r < R_COUNT; r++)
            for (int k = 0; role_headers[r][k] != NULL; k++) {
                if (strcmp(key, role_headers[r][k]) != 0)
                    continue;
                if (col[r] >= 0) {
                    fprintf(stderr, "keel: %s: %s: columns %d and %d both look like the %s\n", cmd, file, col[r] + 1,
                            i + 1, role_names[r]);
                    return CLI_USAGE;
                }
                col[r] = i;
            }
    }
    if (col[R_PASSWORD] < 0 || (col[R_ID] < 0 && col[R_SERIAL] < 0)) {
        fprintf(stderr, "keel: %s: %s: the header needs a password column and an id or serial column "
                        "(see 'keel assess passwords --help')\n", cmd, file);
        return CLI_USAGE;
    }
    for (int r = 0; r < R_COUNT; r++)
        if (col[r] >= 0) {
            make_printable(f[col[r]]);
            json_object_set_new(columns, role_names[r], json_string(f[col[r]]));
        }
    size_t cap = 1;
    for (size_t i = 0; i < len; i++)
        cap += text[i] == '\n';
    keel_label_t *l = calloc(cap, sizeof *l);
    if (l == NULL)
        return cli_fail(cmd, keel_errorf(KEEL_ERR_NOMEM, "out of memory"));
    size_t n = 0;
    for (;;) {
        size_t line = c.line;
        int nf = csv_record(&c, f);
        if (nf == 0)
            break;
        if (nf == 1 && f[0][0] == '\0')
            continue;
        if (nf != nh || n >= KEEL_PROVISION_MAX_COUNT) {
            fprintf(stderr, "keel: %s: %s:%zu: %s\n", cmd, file, line,
                    nf < 0 ? "malformed record (quotes, or more than 64 fields)"
                    : nf != nh ? "not as many fields as the header"
                               : "more labels than this tool analyses");
            free(l);
            return CLI_USAGE;
        }
        const char **slot[R_COUNT] = {&l[n].id, &l[n].serial, &l[n].mac, &l[n].model, &l[n].password};
        for (int r = 0; r < R_COUNT; r++) {
            if (col[r] < 0)
                continue;
            if (r != R_PASSWORD)
                make_printable(f[col[r]]); /* reported names must be printable text */
            *slot[r] = f[col[r]];
        }
        n++;
    }
    *out = l;
    *count = n;
    return -1;
}

static void print_passwords(const char *file, const json_t *r)
{
    printf("password analysis of %s: %lld label(s), provision 5.1-2\n", file,
           json_integer_value(json_object_get(r, "labels")));
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(r, "checks"), i, x) {
        json_int_t n = json_integer_value(json_object_get(x, "findings"));
        printf("  %s  %-20s %s", n == 0 ? "PASS" : "FAIL", json_string_value(json_object_get(x, "id")),
               json_string_value(json_object_get(x, "title")));
        if (n > 0)
            printf(" (%lld)", n);
        putchar('\n');
    }
    const json_t *e = json_object_get(r, "entropy_bits");
    printf("  entropy per password: min %.1f bits, mean %.1f bits\n", json_real_value(json_object_get(e, "min")),
           json_real_value(json_object_get(e, "mean")));
    size_t shown = 0, total = json_array_size(json_object_get(r, "findings"));
    json_array_foreach(json_object_get(r, "findings"), i, x) {
        if (shown++ == 50) {
            printf("  ... and %zu more (use --json for all)\n", total - 50);
            break;
        }
        const char *dev = json_string_value(json_object_get(x, "device"));
        char line[700];
        snprintf(line, sizeof line, "%s: %s%s%s", json_string_value(json_object_get(x, "severity")),
                 dev ? dev : "", dev ? ": " : "", json_string_value(json_object_get(x, "detail")));
        cli_print_text(json_string_value(json_object_get(x, "check")), line);
    }
    printf("%s: %zu finding(s)\n", total == 0 ? "PASS" : "FAIL", total);
}

/*
 * The 5.1-2 analysis of a label file as the document "keel-assess-passwords-1"
 * (also for keel assess run). *out is NULL when the file could not be used,
 * and the return value is then the exit status; otherwise CLI_OK.
 */
int assess_passwords_doc(const char *cmd, const char *file, const char *common, json_t **out, unsigned *nfindings)
{
    *out = NULL;
    *nfindings = 0;
    if (common == NULL)
        common = getenv("KEEL_COMMON_PASSWORDS");
    if (common == NULL)
        common = KEEL_COMMON_PASSWORDS;
    keel_buf_t buf;
    keel_status_t st = keel_file_read(file, LABELS_FILE_MAX, &buf);
    if (st != KEEL_OK)
        return cli_fail(cmd, st == KEEL_ERR_NOT_FOUND || st == KEEL_ERR_TOO_LARGE ? KEEL_ERR_CONFIG : st);
    json_t *columns = json_object();
    keel_label_t *labels = NULL;
    size_t n = 0;
    int rc = parse_labels(cmd, file, &buf, &labels, &n, columns);
    if (rc >= 0) {
        keel_buf_free(&buf);
        json_decref(columns);
        return rc;
    }
    json_t *r = NULL;
    unsigned findings = 0;
    st = keel_factory_audit_labels(labels, n, common, &r, &findings);
    free(labels);
    keel_buf_free(&buf); /* wipes the passwords */
    if (st != KEEL_OK) {
        json_decref(columns);
        return cli_fail(cmd, st == KEEL_ERR_NOT_FOUND ? KEEL_ERR_CONFIG : st);
    }
    char input[KEEL_PATH_MAX];
    snprintf(input, sizeof input, "%s", file);
    make_printable(input);
    json_object_set_new(r, "format", json_string("keel-assess-passwords-1"));
    json_object_set_new(r, "input", json_string(input));
    json_object_set_new(r, "columns", columns);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(r, "findings"), i, x) {
        const char *check = json_string_value(json_object_get(x, "check"));
        json_object_set_new(x, "provision", json_string("5.1-2"));
        json_object_set_new(x, "severity", json_string(severity_of(check)));
        json_object_set(x, "what", json_object_get(x, "detail"));
    }
    *out = r;
    *nfindings = findings;
    return CLI_OK;
}

int assess_passwords_main(int argc, char **argv)
{
    static const char *cmd = "assess passwords";
    static const struct option opts[] = {{"common-list", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, passwords_usage))
        return CLI_OK;
    const char *common = NULL;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': common = optarg; break;
        case 'j': json = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind + 1 != argc)
        return cli_usage(cmd, "exactly one label file is required");
    const char *file = argv[optind];
    json_t *r = NULL;
    unsigned findings = 0;
    int rc = assess_passwords_doc(cmd, file, common, &r, &findings);
    if (r == NULL)
        return rc;
    const char *input = json_string_value(json_object_get(r, "input"));
    rc = findings == 0 ? CLI_OK : CLI_FAILED;
    if (json) {
        if (cli_print_json(r) != CLI_OK)
            rc = CLI_FAILED;
    } else {
        print_passwords(input, r);
    }
    json_decref(r);
    return rc;
}

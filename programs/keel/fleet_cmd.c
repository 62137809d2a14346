/*
 * keel fleet: the operator's command line for keel-fleetd's admin API
 * (docs/internals/fleet-admin.md, docs/man/keel-fleet.1). HTTPS only, with
 * exactly the service root of --ca as trust (never the system store), TLS
 * 1.2 or later, no redirects, no proxy. The token comes from a 0600 file,
 * never from the command line.
 */
#define _GNU_SOURCE
#include "cli.h"

#include "keel/crypto.h"

#include <curl/curl.h>
#include <getopt.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FLEET_TOKEN_MAX 257                      /* as keel-fleetd caps a presented token (256) */
#define FLEET_URL_MAX 2048
#define FLEET_SERVER_MAX 512
#define FLEET_RESPONSE_MAX (256u * 1024u * 1024u) /* an export can be large */
#define FLEET_MANIFEST_MAX (64u * 1024u * 1024u)  /* the service's import cap */
#define FLEET_BUNDLE_MAX (256u * 1024u * 1024u)   /* the service's default [admin] body_max */
#define FLEET_CA_MAX (64u * 1024u)
#define FLEET_PAGE 1000

typedef struct {
    const char *server, *token_file, *ca;
    bool json;
    X509 *root; /* the one certificate of --ca */
    char auth[32 + FLEET_TOKEN_MAX];
} fleet_t;

static fleet_t g;

static const char fleet_usage[] =
    "usage: keel fleet [--server https://HOST:PORT] [--token-file FILE] [--ca FILE] [--json] <command>\n"
    "\n"
    "The operator's side of keel-fleetd (its admin API, over HTTPS with a token).\n"
    "\n"
    "commands:\n"
    "  status                 the service: uptime, database, ingest, devices by state\n"
    "  devices [--model M]    the registry\n"
    "  device ID              one device\n"
    "  export ID              everything held about one device (JSON)\n"
    "  import MANIFEST        register the devices of a factory batch (manifest.json)\n"
    "  revoke ID              revoke a device (registry and CRL; final)\n"
    "  erase ID               erase a device's personal data (messages); prints the receipt\n"
    "  campaign create|list|show|pause|resume   staged update campaigns\n"
    "  alerts [--since T] [--kind K] [--device D] [--limit N]   recent alerts\n"
    "\n"
    "options (before the command; defaults from the environment):\n"
    "  --server URL       https://HOST:PORT of the admin listener ($KEEL_FLEET_SERVER)\n"
    "  --token-file FILE  the operator token, a file of mode 0600 ($KEEL_FLEET_TOKEN_FILE)\n"
    "  --ca FILE          the service root the server's certificate must chain to ($KEEL_FLEET_CA)\n"
    "  --json             print the server's JSON instead of text\n"
    "\n"
    "Exit status: 0 done, 1 the server refused or failed (or could not be reached), 2 usage.\n";

/* ---- output ------------------------------------------------------------------------------------ */

/* Text from the server (some of it from devices) on one line: printable ASCII, '?' for anything else. */
static void put_clean(const char *s, int width)
{
    int n = 0;
    for (const unsigned char *p = (const unsigned char *)(s != NULL ? s : "-"); *p != '\0'; p++, n++)
        fputc(*p >= 0x20 && *p < 0x7f ? *p : '?', stdout);
    for (; n < width; n++)
        fputc(' ', stdout);
}

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "-";
}

static long long jint(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

/* "YYYY-MM-DD HH:MM:SS" (UTC) of a Unix time; "-" for none. */
static const char *when(const json_t *v, char buf[32])
{
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return "-";
    time_t t = (time_t)json_integer_value(v);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(buf, 32, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        return "-";
    return buf;
}

static void kv(const char *k, const char *v)
{
    printf("  %-18s ", k);
    put_clean(v, 0);
    fputc('\n', stdout);
}

static void kvi(const char *k, long long v)
{
    printf("  %-18s %lld\n", k, v);
}

/* ---- the connection ------------------------------------------------------------------------------- */

/* --ca must hold exactly one CA certificate: a bundle would bring the system store back in. */
static keel_status_t load_root(const char *path)
{
    keel_buf_t b;
    keel_status_t st = keel_file_read(path, FLEET_CA_MAX, &b);
    if (st != KEEL_OK)
        return st;
    BIO *bio = BIO_new_mem_buf(b.data, (int)b.len);
    X509 *x, *first = NULL;
    unsigned n = 0;
    while (bio != NULL && (x = PEM_read_bio_X509(bio, NULL, keel_pem_no_password, NULL)) != NULL) {
        if (n++ == 0)
            first = x;
        else
            X509_free(x);
    }
    ERR_clear_error();
    BIO_free(bio);
    keel_buf_free(&b);
    if (n != 1 || X509_check_ca(first) < 1) {
        X509_free(first);
        return keel_errorf(KEEL_ERR_CONFIG, "%s must hold exactly one CA certificate (the service root)", path);
    }
    g.root = first;
    return KEEL_OK;
}

/* The TLS context: the one root as the whole trust store, TLS 1.2 or later. */
static CURLcode ssl_ctx_cb(CURL *c, void *ctxp, void *arg)
{
    (void)c, (void)arg;
    SSL_CTX *ctx = ctxp;
    X509_STORE *store = X509_STORE_new();
    if (store == NULL || X509_STORE_add_cert(store, g.root) != 1 ||
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        X509_STORE_free(store);
        return CURLE_SSL_CERTPROBLEM;
    }
    SSL_CTX_set_cert_store(ctx, store);
    return CURLE_OK;
}

static size_t body_cb(char *p, size_t size, size_t n, void *arg)
{
    keel_buf_t *b = arg;
    return keel_buf_append(b, p, size * n) == KEEL_OK ? size * n : 0;
}

/* Resolves the settings and reads the token (once). */
static keel_status_t setup(void)
{
    if (g.server == NULL)
        g.server = getenv("KEEL_FLEET_SERVER");
    if (g.token_file == NULL)
        g.token_file = getenv("KEEL_FLEET_TOKEN_FILE");
    if (g.ca == NULL)
        g.ca = getenv("KEEL_FLEET_CA");
    if (g.server == NULL || g.token_file == NULL || g.ca == NULL)
        return keel_errorf(KEEL_ERR_ARG, "--server, --token-file and --ca are needed (or KEEL_FLEET_SERVER, "
                                         "KEEL_FLEET_TOKEN_FILE, KEEL_FLEET_CA)");
    size_t sl = strnlen(g.server, FLEET_SERVER_MAX + 1);
    if (strncmp(g.server, "https://", 8) != 0 || sl > FLEET_SERVER_MAX || sl <= 8 ||
        strpbrk(g.server + 8, "/?#@ ") != NULL)
        return keel_errorf(KEEL_ERR_ARG, "--server must be https://HOST:PORT (no path)");
    if (g.root == NULL) {
        keel_status_t st = load_root(g.ca);
        if (st != KEEL_OK)
            return st;
    }
    if (g.auth[0] == '\0') {
        char tok[FLEET_TOKEN_MAX];
        size_t len = 0;
        keel_status_t st = keel_secret_read(g.token_file, NULL, tok, sizeof tok, &len);
        if (st == KEEL_OK && strspn(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/=") != len)
            st = keel_errorf(KEEL_ERR_CONFIG, "%s does not hold a token", g.token_file);
        if (st == KEEL_OK)
            st = keel_snprintf(g.auth, sizeof g.auth, "Authorization: Bearer %s", tok);
        keel_wipe(tok, sizeof tok);
        if (st != KEEL_OK) {
            keel_wipe(g.auth, sizeof g.auth);
            return st;
        }
    }
    return KEEL_OK;
}

static void wipe_headers(struct curl_slist *h)
{
    for (struct curl_slist *p = h; p != NULL; p = p->next)
        keel_wipe(p->data, strlen(p->data));
    curl_slist_free_all(h);
}

/*
 * One request to the API: `path` after /api/v1/ (already escaped). With a
 * 2xx answer, *out gets its JSON (NULL for none) and 0 is returned; else the
 * server's error is printed and 1 returned.
 */
static int call(const char *cmd, const char *method, const char *path, const char *ctype, const void *body,
                size_t len, json_t **out)
{
    *out = NULL;
    keel_status_t st = setup();
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    char url[FLEET_URL_MAX];
    size_t sl = strlen(g.server);
    if (keel_snprintf(url, sizeof url, "%.*s/api/v1/%s", (int)(g.server[sl - 1] == '/' ? sl - 1 : sl), g.server,
                      path) != KEEL_OK)
        return cli_fail(cmd, KEEL_ERR_ARG);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL, *h2;
    if ((h2 = curl_slist_append(h, g.auth)) != NULL)
        h = h2;
    if (h2 != NULL && (h2 = curl_slist_append(h, "Accept: application/json")) != NULL)
        h = h2;
    char ct[96];
    if (h2 != NULL && ctype != NULL && keel_snprintf(ct, sizeof ct, "Content-Type: %s", ctype) == KEEL_OK &&
        (h2 = curl_slist_append(h, ct)) != NULL)
        h = h2;
    /* Send the body without "Expect: 100-continue" (one round trip fewer). */
    if (h2 != NULL && (h2 = curl_slist_append(h, "Expect:")) != NULL)
        h = h2;
    keel_buf_t resp;
    keel_buf_init(&resp, FLEET_RESPONSE_MAX);
    char errbuf[CURL_ERROR_SIZE] = "";
    bool bad = c == NULL || h2 == NULL ||
               curl_easy_setopt(c, CURLOPT_URL, url) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_PROXY, "") != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_NOPROXY, "*") != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_CAINFO, g.ca) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_CAPATH, NULL) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 15L) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 120L) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_HTTPHEADER, h) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK ||
               curl_easy_setopt(c, CURLOPT_USERAGENT, "keel-fleet/" KEEL_VERSION) != CURLE_OK;
    if (!bad && strcmp(method, "POST") == 0)
        bad = curl_easy_setopt(c, CURLOPT_POST, 1L) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_POSTFIELDS, len > 0 ? body : "") != CURLE_OK;
    int rc = CLI_FAILED;
    long code = 0;
    if (bad) {
        fprintf(stderr, "keel: %s: cannot set up the HTTPS request\n", cmd);
    } else {
        CURLcode cr = curl_easy_perform(c);
        if (cr != CURLE_OK) {
            fprintf(stderr, "keel: %s: %s: %s\n", cmd, g.server, errbuf[0] != '\0' ? errbuf : curl_easy_strerror(cr));
        } else if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK) {
            fprintf(stderr, "keel: %s: no HTTP status\n", cmd);
        } else {
            json_error_t e;
            json_t *j = resp.len > 0 ? json_loadb((const char *)resp.data, resp.len, JSON_REJECT_DUPLICATES, &e) : NULL;
            if (code >= 200 && code < 300) {
                if (resp.len > 0 && j == NULL)
                    fprintf(stderr, "keel: %s: the server's answer is not JSON: %s\n", cmd, e.text);
                else {
                    *out = j;
                    j = NULL;
                    rc = CLI_OK;
                }
            } else {
                const char *err = json_string_value(json_object_get(j, "error"));
                const char *detail = json_string_value(json_object_get(j, "detail"));
                fprintf(stderr, "keel: %s: HTTP %ld", cmd, code);
                if (err != NULL) {
                    fputs(" ", stderr);
                    for (const char *p = err; *p; p++)
                        fputc(*p >= 0x20 && *p < 0x7f ? *p : '?', stderr);
                }
                if (detail != NULL) {
                    fputs(": ", stderr);
                    for (const char *p = detail; *p; p++)
                        fputc(*p >= 0x20 && *p < 0x7f ? *p : '?', stderr);
                }
                fputc('\n', stderr);
            }
            json_decref(j);
        }
    }
    keel_buf_free(&resp);
    wipe_headers(h);
    curl_easy_cleanup(c);
    return rc;
}

static int get(const char *cmd, const char *path, json_t **out)
{
    return call(cmd, "GET", path, NULL, NULL, 0, out);
}

/* A path segment or query value, %-escaped. */
static int esc(const char *cmd, const char *s, char *out, size_t cap)
{
    char *e = curl_easy_escape(NULL, s, 0);
    keel_status_t st = e != NULL ? keel_snprintf(out, cap, "%s", e) : KEEL_ERR_NOMEM;
    curl_free(e);
    if (st != KEEL_OK)
        return cli_usage(cmd, "argument too long: %.64s", s);
    return CLI_OK;
}

/* Appends name=value (value %-escaped) to path's query, after "?" or "&". */
static int query_add(const char *cmd, char *path, size_t cap, const char *name, const char *value)
{
    char v[512];
    if (esc(cmd, value, v, sizeof v) != CLI_OK)
        return CLI_USAGE;
    size_t n = strlen(path);
    if (keel_snprintf(path + n, cap - n, "%s%s=%s", strchr(path, '?') != NULL ? "&" : "?", name, v) != KEEL_OK)
        return cli_usage(cmd, "the request is too long");
    return CLI_OK;
}

static int query_add_num(const char *cmd, char *path, size_t cap, const char *name, long long value)
{
    char v[24];
    snprintf(v, sizeof v, "%lld", value);
    return query_add(cmd, path, cap, name, v);
}

/* Prints the answer as JSON with --json, else with `human`; frees it. */
static int finish(json_t *j, void (*human)(json_t *))
{
    int rc = CLI_OK;
    if (g.json)
        rc = cli_print_json(j != NULL ? j : json_null());
    else if (human != NULL && j != NULL)
        human(j);
    json_decref(j);
    return rc;
}

/* Commands of the form "NAME [--json]" plus fixed positional arguments. */
static int simple_opts(const char *cmd, int argc, char **argv, int npos, const char **pos)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (c == 'j')
            g.json = true;
        else
            return cli_bad_option(cmd, c, argv);
    }
    if (argc - optind != npos)
        return cli_usage(cmd, "expected %d argument(s)", npos);
    for (int i = 0; i < npos; i++)
        pos[i] = argv[optind + i];
    return -1;
}

/* ---- status ------------------------------------------------------------------------------------------- */

static void status_human(json_t *j)
{
    char t[32];
    json_t *db = json_object_get(j, "database");
    json_t *dev = json_object_get(j, "devices");
    json_t *states = json_object_get(dev, "states");
    json_t *con = json_object_get(j, "consumer");
    json_t *ing = json_object_get(j, "ingest");
    json_t *seq = json_object_get(j, "sequence");
    printf("keel-fleetd\n");
    kv("started", when(json_object_get(j, "started"), t));
    kvi("uptime (s)", jint(j, "uptime"));
    kv("database", jstr(db, "driver"));
    kvi("schema", jint(db, "schema"));
    kv("broker", json_is_object(con) ? (json_is_true(json_object_get(con, "online")) ? "online" : "offline")
                                     : "not configured");
    kvi("queue", jint(j, "queue"));
    printf("devices\n");
    kvi("total", jint(dev, "devices"));
    kvi("registered", jint(states, "registered"));
    kvi("active", jint(states, "active"));
    kvi("revoked", jint(states, "revoked"));
    if (json_is_object(ing)) {
        printf("ingest\n");
        kvi("stored", jint(ing, "stored"));
        kvi("duplicates", jint(ing, "duplicates"));
        kvi("unknown", jint(ing, "unknown"));
        kvi("malformed", jint(ing, "malformed"));
        kvi("alerts", jint(ing, "alerts"));
        kv("last commit", when(json_object_get(ing, "last_commit"), t));
    }
    printf("messages\n");
    kvi("held", jint(seq, "messages"));
    kvi("open gaps", jint(seq, "open_gaps"));
    kvi("lost", jint(seq, "lost"));
}

static int cmd_status(int argc, char **argv)
{
    int rc = simple_opts("fleet status", argc, argv, 0, NULL);
    json_t *j;
    if (rc >= 0)
        return rc;
    if ((rc = get("fleet status", "status", &j)) != CLI_OK)
        return rc;
    return finish(j, status_human);
}

/* ---- devices ---------------------------------------------------------------------------------------- */

static void device_row(json_t *d)
{
    char t[32];
    put_clean(jstr(d, "id"), 27);
    fputc(' ', stdout);
    put_clean(jstr(d, "model"), 16);
    fputc(' ', stdout);
    put_clean(jstr(d, "state"), 11);
    fputc(' ', stdout);
    put_clean(json_is_string(json_object_get(d, "version")) && jstr(d, "version")[0] ? jstr(d, "version") : "-", 12);
    fputc(' ', stdout);
    put_clean(when(json_object_get(d, "last_seen"), t), 0);
    fputc('\n', stdout);
}

static int cmd_devices(int argc, char **argv)
{
    static const char *cmd = "fleet devices";
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'}, {"json", no_argument, NULL, 'j'},
                                         {NULL, 0, NULL, 0}};
    const char *model = NULL;
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        if (c == 'm')
            model = optarg;
        else if (c == 'j')
            g.json = true;
        else
            return cli_bad_option(cmd, c, argv);
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument %s", argv[optind]);
    char m[256] = "", after[512] = "", path[1024];
    if (model != NULL && esc(cmd, model, m, sizeof m) != CLI_OK)
        return CLI_USAGE;
    /* Page through the registry: the server answers at most a page and names the next. */
    json_t *all = json_array();
    int rc = all != NULL ? CLI_OK : CLI_FAILED;
    for (unsigned pages = 0; rc == CLI_OK; pages++) {
        json_t *j = NULL;
        if (keel_snprintf(path, sizeof path, "devices?limit=%d%s%s%s%s", FLEET_PAGE, m[0] ? "&model=" : "", m,
                          after[0] ? "&after=" : "", after) != KEEL_OK) {
            rc = CLI_FAILED;
            break;
        }
        if ((rc = get(cmd, path, &j)) != CLI_OK)
            break;
        if (json_array_extend(all, json_object_get(j, "devices")) != 0)
            rc = CLI_FAILED;
        const char *next = json_string_value(json_object_get(j, "next"));
        bool more = rc == CLI_OK && next != NULL && pages < 100000;
        if (more && esc(cmd, next, after, sizeof after) != CLI_OK)
            rc = CLI_FAILED;
        json_decref(j);
        if (!more)
            break;
    }
    if (rc != CLI_OK) {
        json_decref(all);
        return rc;
    }
    if (g.json) {
        json_t *o = json_pack("{s:o}", "devices", all);
        rc = cli_print_json(o);
        json_decref(o);
        return rc;
    }
    printf("%-27s %-16s %-11s %-12s %s\n", "ID", "MODEL", "STATE", "VERSION", "LAST SEEN (UTC)");
    size_t i;
    json_t *d;
    json_array_foreach(all, i, d) device_row(d);
    printf("%zu device(s)\n", json_array_size(all));
    json_decref(all);
    return CLI_OK;
}

static void device_human(json_t *d)
{
    char t[32];
    json_t *seq = json_object_get(d, "sequence");
    kv("id", jstr(d, "id"));
    kv("serial", jstr(d, "serial"));
    kv("model", jstr(d, "model"));
    kv("state", jstr(d, "state"));
    kv("version", jstr(d, "version"));
    if (json_is_integer(json_object_get(d, "security_version")))
        kvi("security version", jint(d, "security_version"));
    kv("certificate", jstr(d, "cert_sha256"));
    kv("cert serial", jstr(d, "cert_serial"));
    kv("registered", when(json_object_get(d, "registered"), t));
    kv("first seen", when(json_object_get(d, "first_seen"), t));
    kv("last seen", when(json_object_get(d, "last_seen"), t));
    kv("revoked", when(json_object_get(d, "revoked_at"), t));
    if (json_is_object(seq)) {
        kvi("messages", jint(seq, "messages"));
        kvi("open gaps", jint(seq, "open_gaps"));
        kvi("lost", jint(seq, "lost"));
    }
}

static int device_path(const char *cmd, const char *id, const char *suffix, char *path, size_t cap)
{
    char e[512];
    if (esc(cmd, id, e, sizeof e) != CLI_OK)
        return CLI_USAGE;
    if (keel_snprintf(path, cap, "devices/%s%s", e, suffix) != KEEL_OK)
        return cli_usage(cmd, "device id too long");
    return CLI_OK;
}

static int cmd_device(int argc, char **argv)
{
    static const char *cmd = "fleet device";
    const char *id = NULL;
    char path[1024];
    json_t *j;
    int rc = simple_opts(cmd, argc, argv, 1, &id);
    if (rc >= 0)
        return rc;
    if ((rc = device_path(cmd, id, "", path, sizeof path)) != CLI_OK || (rc = get(cmd, path, &j)) != CLI_OK)
        return rc;
    return finish(j, device_human);
}

static int cmd_export(int argc, char **argv)
{
    static const char *cmd = "fleet export";
    const char *id = NULL;
    char path[1024];
    json_t *j;
    int rc = simple_opts(cmd, argc, argv, 1, &id);
    if (rc >= 0)
        return rc;
    if ((rc = device_path(cmd, id, "/export", path, sizeof path)) != CLI_OK || (rc = get(cmd, path, &j)) != CLI_OK)
        return rc;
    /* an export is a document: always JSON */
    rc = cli_print_json(j);
    json_decref(j);
    return rc;
}

static void import_human(json_t *j)
{
    printf("%lld device(s) added, %lld unchanged\n", jint(j, "added"), jint(j, "unchanged"));
}

static int cmd_import(int argc, char **argv)
{
    static const char *cmd = "fleet import";
    const char *file = NULL;
    json_t *j;
    int rc = simple_opts(cmd, argc, argv, 1, &file);
    if (rc >= 0)
        return rc;
    keel_buf_t b;
    keel_status_t st = keel_file_read(file, FLEET_MANIFEST_MAX, &b);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    rc = call(cmd, "POST", "devices/import", "application/json", b.data, b.len, &j);
    keel_buf_free(&b);
    return rc != CLI_OK ? rc : finish(j, import_human);
}

static void revoke_human(json_t *d)
{
    printf("device ");
    put_clean(jstr(d, "id"), 0);
    printf(" revoked\n");
}

static void erase_human(json_t *e)
{
    char t[32];
    printf("erased %lld message(s) of device ", jint(e, "messages"));
    put_clean(jstr(e, "device"), 0);
    printf(" at %s UTC (erasure %s)\n", when(json_object_get(e, "time"), t), jstr(e, "id"));
}

static int device_action(const char *cmd, int argc, char **argv, const char *action, void (*human)(json_t *))
{
    const char *id = NULL;
    char path[1024], suffix[32];
    json_t *j;
    int rc = simple_opts(cmd, argc, argv, 1, &id);
    if (rc >= 0)
        return rc;
    snprintf(suffix, sizeof suffix, "/%s", action);
    if ((rc = device_path(cmd, id, suffix, path, sizeof path)) != CLI_OK ||
        (rc = call(cmd, "POST", path, NULL, NULL, 0, &j)) != CLI_OK)
        return rc;
    return finish(j, human);
}

static int cmd_revoke(int argc, char **argv)
{
    return device_action("fleet revoke", argc, argv, "revoke", revoke_human);
}

static int cmd_erase(int argc, char **argv)
{
    return device_action("fleet erase", argc, argv, "erase", erase_human);
}

/* ---- campaigns -------------------------------------------------------------------------------------------- */

static const char *const count_names[] = {"selected", "notified", "downloading", "installed",
                                          "confirmed", "failed",   "postponed"};

static void campaign_row(json_t *c)
{
    char t[32];
    json_t *k = json_object_get(c, "counts");
    put_clean(jstr(c, "id"), 33);
    put_clean(jstr(c, "model"), 16);
    fputc(' ', stdout);
    put_clean(jstr(c, "version"), 12);
    fputc(' ', stdout);
    put_clean(jstr(c, "state"), 8);
    printf(" %3lld%% %6lld/%-6lld %5lld  %s\n", jint(c, "percent"), jint(k, "confirmed"), jint(k, "selected"),
           jint(k, "failed"), when(json_object_get(c, "created"), t));
}

static void campaign_list_human(json_t *j)
{
    json_t *list = json_object_get(j, "campaigns");
    printf("%-33s%-16s %-12s %-8s %4s %13s %5s  %s\n", "ID", "MODEL", "VERSION", "STATE", "PCT", "CONFIRMED", "FAIL",
           "CREATED (UTC)");
    size_t i;
    json_t *c;
    json_array_foreach(list, i, c) campaign_row(c);
    printf("%zu campaign(s)\n", json_array_size(list));
}

static void campaign_human(json_t *c)
{
    char t[32];
    json_t *k = json_object_get(c, "counts");
    json_t *tt = json_object_get(c, "time_to");
    kv("campaign", jstr(c, "id"));
    kv("model", jstr(c, "model"));
    kv("version", jstr(c, "version"));
    kvi("security version", jint(c, "security_version"));
    kv("state", jstr(c, "state"));
    kv("security update", json_is_true(json_object_get(c, "security")) ? "yes" : "no");
    kvi("percent", jint(c, "percent"));
    kvi("fail permille", jint(c, "fail_permille"));
    kv("bundle sha256", jstr(c, "bundle_sha256"));
    kvi("bundle bytes", jint(c, "bundle_size"));
    kv("created", when(json_object_get(c, "created"), t));
    for (size_t i = 0; json_is_object(k) && i < sizeof count_names / sizeof *count_names; i++)
        kvi(count_names[i], jint(k, count_names[i]));
    if (json_is_integer(json_object_get(tt, "first_confirmed")))
        kvi("first confirmed (s)", jint(tt, "first_confirmed"));
    if (json_is_integer(json_object_get(tt, "all_confirmed")))
        kvi("all confirmed (s)", jint(tt, "all_confirmed"));
}

static const char campaign_usage[] =
    "usage: keel fleet campaign <create|list|show|pause|resume> ...\n"
    "\n"
    "  create --bundle FILE --model M [--percent P] [--security] [--fail-permille N]\n"
    "                   start a staged rollout of a signed bundle to P% of model M's devices\n"
    "                   (--security: to every device at once); halted when more than N per\n"
    "                   mille of the devices that finished failed (default: the service's)\n"
    "  list             every campaign with its progress\n"
    "  show ID          one campaign: counts per state, time to the first and to the last confirmation\n"
    "  pause ID         stop offering the update (devices already updating finish)\n"
    "  resume ID        offer it again (also after a halt)\n";

static const char create_usage[] =
    "usage: keel fleet campaign create --bundle FILE --model M [--percent P] [--security]\n"
    "                                  [--fail-permille N] [--json]\n"
    "\n"
    "Uploads a bundle made by `keel bundle create`; keel-fleetd verifies it against its\n"
    "release root and starts a campaign for model M (one of the bundle's models).\n"
    "  --percent P         1..100 of the model's devices (default 100)\n"
    "  --security          a security update: every device at once (EN 303 645 5.3-8)\n"
    "  --fail-permille N   1..1000: halt when more than N per mille of finished devices failed\n";

static int cmd_campaign_create(int argc, char **argv)
{
    static const char *cmd = "fleet campaign create";
    static const struct option opts[] = {
        {"bundle", required_argument, NULL, 'b'},        {"model", required_argument, NULL, 'm'},
        {"percent", required_argument, NULL, 'p'},       {"security", no_argument, NULL, 's'},
        {"fail-permille", required_argument, NULL, 'f'}, {"json", no_argument, NULL, 'j'},
        {NULL, 0, NULL, 0}};
    const char *bundle = NULL, *model = NULL;
    unsigned long percent = 0, fail = 0;
    bool security = false;
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'b': bundle = optarg; break;
        case 'm': model = optarg; break;
        case 'p':
            if (!cli_parse_uint(optarg, 1, 100, &percent))
                return cli_usage(cmd, "--percent must be 1..100");
            break;
        case 's': security = true; break;
        case 'f':
            if (!cli_parse_uint(optarg, 1, 1000, &fail))
                return cli_usage(cmd, "--fail-permille must be 1..1000");
            break;
        case 'j': g.json = true; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (bundle == NULL || model == NULL || optind != argc)
        return cli_usage(cmd, "--bundle and --model are required");
    char path[1024] = "campaigns";
    int rc = query_add(cmd, path, sizeof path, "model", model);
    if (rc == CLI_OK)
        rc = query_add_num(cmd, path, sizeof path, "security", security ? 1 : 0);
    if (rc == CLI_OK && percent > 0)
        rc = query_add_num(cmd, path, sizeof path, "percent", (long long)percent);
    if (rc == CLI_OK && fail > 0)
        rc = query_add_num(cmd, path, sizeof path, "fail_permille", (long long)fail);
    if (rc != CLI_OK)
        return rc;
    keel_buf_t b;
    keel_status_t st = keel_file_read(bundle, FLEET_BUNDLE_MAX, &b);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    json_t *j;
    rc = call(cmd, "POST", path, "application/octet-stream", b.data, b.len, &j);
    keel_buf_free(&b);
    return rc != CLI_OK ? rc : finish(j, campaign_human);
}

static int cmd_campaign_list(int argc, char **argv)
{
    int rc = simple_opts("fleet campaign list", argc, argv, 0, NULL);
    json_t *j;
    if (rc >= 0)
        return rc;
    if ((rc = get("fleet campaign list", "campaigns", &j)) != CLI_OK)
        return rc;
    return finish(j, campaign_list_human);
}

static int campaign_one(const char *cmd, int argc, char **argv, const char *action)
{
    const char *id = NULL;
    char e[128], path[256];
    json_t *j;
    int rc = simple_opts(cmd, argc, argv, 1, &id);
    if (rc >= 0)
        return rc;
    if (esc(cmd, id, e, sizeof e) != CLI_OK)
        return CLI_USAGE;
    if (keel_snprintf(path, sizeof path, "campaigns/%s%s%s", e, action ? "/" : "", action ? action : "") != KEEL_OK)
        return cli_usage(cmd, "campaign id too long");
    rc = action != NULL ? call(cmd, "POST", path, NULL, NULL, 0, &j) : get(cmd, path, &j);
    return rc != CLI_OK ? rc : finish(j, campaign_human);
}

static int cmd_campaign_show(int argc, char **argv)
{
    return campaign_one("fleet campaign show", argc, argv, NULL);
}

static int cmd_campaign_pause(int argc, char **argv)
{
    return campaign_one("fleet campaign pause", argc, argv, "pause");
}

static int cmd_campaign_resume(int argc, char **argv)
{
    return campaign_one("fleet campaign resume", argc, argv, "resume");
}

static int cmd_campaign(int argc, char **argv)
{
    static const cli_sub_t subs[] = {
        {"create", create_usage, cmd_campaign_create},
        {"list", "usage: keel fleet campaign list [--json]\n", cmd_campaign_list},
        {"show", "usage: keel fleet campaign show ID [--json]\n", cmd_campaign_show},
        {"pause", "usage: keel fleet campaign pause ID [--json]\n", cmd_campaign_pause},
        {"resume", "usage: keel fleet campaign resume ID [--json]\n", cmd_campaign_resume},
    };
    return cli_dispatch("fleet campaign", campaign_usage, subs, sizeof subs / sizeof subs[0], argc, argv);
}

/* ---- alerts --------------------------------------------------------------------------------------------- */

static void alerts_human(json_t *j)
{
    json_t *list = json_object_get(j, "alerts");
    printf("%-20s %-9s %-10s %-27s %s\n", "TIME (UTC)", "SEVERITY", "KIND", "DEVICE", "DETAIL");
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) {
        char t[32];
        put_clean(when(json_object_get(a, "time"), t), 20);
        fputc(' ', stdout);
        put_clean(jstr(a, "severity"), 9);
        fputc(' ', stdout);
        put_clean(jstr(a, "kind"), 10);
        fputc(' ', stdout);
        put_clean(json_is_string(json_object_get(a, "device")) ? jstr(a, "device") : "(fleet)", 27);
        fputc(' ', stdout);
        char *d = json_dumps(json_object_get(a, "detail"), JSON_COMPACT | JSON_ENCODE_ANY);
        put_clean(d != NULL ? d : "-", 0);
        free(d);
        fputc('\n', stdout);
    }
    printf("%zu alert(s)\n", json_array_size(list));
}

/* --since: Unix seconds, or an age such as 30m, 12h, 7d. */
static int parse_since(const char *s, long long *out)
{
    unsigned long v;
    size_t n = strlen(s);
    if (cli_parse_uint(s, 0, 0x7fffffffffffffffUL, &v)) {
        *out = (long long)v;
        return 1;
    }
    if (n < 2 || n > 12)
        return 0;
    char num[16];
    memcpy(num, s, n - 1);
    num[n - 1] = '\0';
    unsigned long mul = s[n - 1] == 's' ? 1 : s[n - 1] == 'm' ? 60 : s[n - 1] == 'h' ? 3600 : s[n - 1] == 'd' ? 86400 : 0;
    if (mul == 0 || !cli_parse_uint(num, 0, 3650UL * 86400UL, &v) || v * mul > 3650UL * 86400UL)
        return 0;
    long long now = (long long)time(NULL), ago = (long long)v * (long long)mul;
    *out = now > ago ? now - ago : 0;
    return 1;
}

static int cmd_alerts(int argc, char **argv)
{
    static const char *cmd = "fleet alerts";
    static const struct option opts[] = {
        {"since", required_argument, NULL, 's'}, {"kind", required_argument, NULL, 'k'},
        {"device", required_argument, NULL, 'd'}, {"limit", required_argument, NULL, 'l'},
        {"json", no_argument, NULL, 'j'},         {NULL, 0, NULL, 0}};
    long long since = -1;
    unsigned long limit = 0;
    const char *kind = NULL, *device = NULL;
    int c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!parse_since(optarg, &since))
                return cli_usage(cmd, "--since is Unix seconds or an age (30m, 12h, 7d)");
            break;
        case 'k': kind = optarg; break;
        case 'd': device = optarg; break;
        case 'l':
            if (!cli_parse_uint(optarg, 1, 10000, &limit))
                return cli_usage(cmd, "--limit must be 1..10000");
            break;
        case 'j': g.json = true; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument %s", argv[optind]);
    char path[1024] = "alerts";
    int rc = CLI_OK;
    if (since >= 0)
        rc = query_add_num(cmd, path, sizeof path, "since", since);
    if (rc == CLI_OK && limit > 0)
        rc = query_add_num(cmd, path, sizeof path, "limit", (long long)limit);
    if (rc == CLI_OK && kind != NULL)
        rc = query_add(cmd, path, sizeof path, "kind", kind);
    if (rc == CLI_OK && device != NULL)
        rc = query_add(cmd, path, sizeof path, "device", device);
    if (rc != CLI_OK)
        return rc;
    json_t *j;
    rc = get(cmd, path, &j);
    return rc != CLI_OK ? rc : finish(j, alerts_human);
}

/* ---- keel fleet ------------------------------------------------------------------------------------------- */

int cmd_fleet(int argc, char **argv)
{
    static const cli_sub_t subs[] = {
        {"status", "usage: keel fleet status [--json]\n\nThe service: uptime, database, broker, ingest, devices.\n",
         cmd_status},
        {"devices", "usage: keel fleet devices [--model M] [--json]\n\nThe registry, every page of it.\n",
         cmd_devices},
        {"device", "usage: keel fleet device ID [--json]\n", cmd_device},
        {"export", "usage: keel fleet export ID\n\nEverything the fleet holds about one device, as JSON "
                   "(EN 303 645 6-x: a data subject's request).\n",
         cmd_export},
        {"import", "usage: keel fleet import MANIFEST [--json]\n\nRegisters the devices of `keel factory "
                   "provision`'s manifest.json (all or nothing).\n",
         cmd_import},
        {"revoke", "usage: keel fleet revoke ID [--json]\n\nRevokes a device: the registry refuses it and its "
                   "certificate goes on the CRL. Final.\n",
         cmd_revoke},
        {"erase", "usage: keel fleet erase ID [--json]\n\nErases the device's messages and unlinks its "
                  "aggregates; prints the receipt.\n",
         cmd_erase},
        {"campaign", NULL, cmd_campaign},
        {"alerts", "usage: keel fleet alerts [--since T] [--kind K] [--device D] [--limit N] [--json]\n\n"
                   "Recent alerts, newest first. T: Unix seconds or an age (30m, 12h, 7d).\n",
         cmd_alerts},
    };
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char **dst = strcmp(argv[i], "--server") == 0       ? &g.server
                           : strcmp(argv[i], "--token-file") == 0 ? &g.token_file
                           : strcmp(argv[i], "--ca") == 0         ? &g.ca
                                                                  : NULL;
        if (strcmp(argv[i], "--json") == 0) {
            g.json = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(fleet_usage, stdout);
            return CLI_OK;
        } else if (dst == NULL) {
            return cli_usage("fleet", "unknown option %s", argv[i]);
        } else if (i + 1 == argc) {
            return cli_usage("fleet", "option %s needs a value", argv[i]);
        } else {
            *dst = argv[++i];
        }
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "keel: fleet: libcurl does not start\n");
        return CLI_FAILED;
    }
    /* cli_dispatch takes the subcommand at argv[1] */
    int rc = cli_dispatch("fleet", fleet_usage, subs, sizeof subs / sizeof subs[0], argc - i + 1, argv + i - 1);
    keel_wipe(g.auth, sizeof g.auth);
    X509_free(g.root);
    g.root = NULL;
    curl_global_cleanup();
    return rc;
}

/*
 * keel factory audit: evidence for 5.1-2 over a provisioned batch.
 * Reads labels.csv and the device directories; never prints a password.
 */
#include "keel/factory.h"

#include "keel/identity.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#define LABELS_MAX (256u * 1024u * 1024u)
#define COMMON_MAX (64u * 1024u * 1024u)
#define FIELD_MAX 128
#define MIN_ENTROPY_BITS 80.0
/* The chance matches grow with the batch, so the run lengths that count as a
 * finding are the shortest whose expected number of false findings over the
 * whole batch stays below FALSE_ALARM; never shorter than these floors. */
#define FALSE_ALARM 1e-6
#define RELATION_WINDOW_MIN 6 /* shared run with the serial/id/model that counts as "derived" */
#define PREFIX_RUN_MIN 8      /* shared prefix between two passwords that counts as a pattern */
#define RELATION_TRIES 2600.0 /* windows of the anchors (both directions) x positions in a password */
#define CHI_MIN_BATCH 200     /* the per-position test needs enough samples */
#define CHI_Z_LIMIT 5.5       /* about 2e-8 false alarms per position */

typedef struct {
    char id[FIELD_MAX], serial[FIELD_MAX], mac[FIELD_MAX], model[FIELD_MAX], pw[FIELD_MAX], fp[FIELD_MAX];
    int has_device;
} label_t;


enum { C_FORMAT, C_MATCH, C_UNIQUE_PW, C_UNIQUE_ID, C_ENTROPY, C_COMMON, C_RELATION, C_PATTERN,
       C_KEYS, C_BINDING, C_HASH, C_COUNT };
static const char *const check_ids[C_COUNT] = {
    "labels-format", "labels-match-devices", "unique-passwords", "unique-ids", "entropy",
    "not-common", "no-relation", "no-pattern", "unique-keys", "id-binding", "label-hash"};
static const char *const check_titles[C_COUNT] = {
    "labels.csv is well formed",
    "every device has a label and every label a device",
    "no two devices share a password",
    "no two devices share an id or a serial number",
    "every password has at least 80 bits of estimated entropy",
    "no password is in the common-password list",
    "no password contains or reverses the serial, id, MAC address or model",
    "passwords show no sequence or per-position bias across the batch",
    "no two devices share a key",
    "every device id is derived from its certificate's key",
    "label passwords match the hashes stored on the devices (sampled)"};

typedef struct {
    json_t *findings;
    json_t *checks;
    unsigned n;
    unsigned counts[C_COUNT];
} audit_t;

static void finding(audit_t *a, int check, const char *device, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void finding(audit_t *a, int check, const char *device, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    json_t *f = json_pack("{s:s, s:s?, s:s}", "check", check_ids[check], "device", device, "detail", detail);
    if (f != NULL)
        json_array_append_new(a->findings, f);
    a->counts[check]++;
    a->n++;
}

/* ---- labels.csv --------------------------------------------------------- */

/* Splits a line into exactly `want` comma-separated fields, else -1. */
static int split_csv(char *line, char **fields, int want)
{
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == want)
            return -1; /* one field too many */
        fields[n++] = p;
        char *c = strchr(p, ',');
        if (c == NULL)
            break;
        *c = '\0';
        p = c + 1;
    }
    return n == want ? n : -1;
}

static keel_status_t load_labels(const char *out, audit_t *a, label_t **labels, size_t *count)
{
    char path[KEEL_PATH_MAX];
    keel_buf_t b;
    keel_status_t st = keel_path_join(path, sizeof path, out, KEEL_BATCH_LABELS);
    if (st == KEEL_OK)
        st = keel_file_read(path, LABELS_MAX, &b);
    if (st != KEEL_OK)
        return st;
    size_t cap = 1;
    for (size_t i = 0; i < b.len; i++)
        cap += b.data[i] == '\n';
    label_t *l = calloc(cap, sizeof *l);
    if (l == NULL) {
        keel_buf_free(&b);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    size_t n = 0, lineno = 0;
    char *save = NULL;
    char *text = (char *)b.data;
    size_t hdr = strlen(KEEL_LABELS_HEADER) - 1;
    if (b.len < hdr || strncmp(text, KEEL_LABELS_HEADER, hdr) != 0)
        finding(a, C_FORMAT, NULL, "line 1: expected the header %.*s", (int)hdr, KEEL_LABELS_HEADER);
    for (char *ln = strtok_r(text, "\n", &save); ln != NULL; ln = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (lineno == 1 && strncmp(ln, "device_id,", 10) == 0)
            continue;
        char *f[5];
        size_t len = strlen(ln);
        if (len > 5 * FIELD_MAX || split_csv(ln, f, 5) != 5) {
            finding(a, C_FORMAT, NULL, "line %zu: expected 5 comma-separated fields", lineno);
            continue;
        }
        int ok = 1;
        for (int i = 0; i < 5; i++)
            ok &= strlen(f[i]) < FIELD_MAX;
        if (!ok || keel_identity_password_normalize(f[3], l[n].pw, FIELD_MAX) != KEEL_OK) {
            finding(a, C_FORMAT, NULL, "line %zu: a field is too long", lineno);
            continue;
        }
        if (!keel_identity_id_ok(f[0]))
            finding(a, C_FORMAT, NULL, "line %zu: malformed device id", lineno);
        /* Lengths were checked above: these copies cannot truncate. */
        snprintf(l[n].id, FIELD_MAX, "%s", f[0]);
        snprintf(l[n].serial, FIELD_MAX, "%s", f[1]);
        snprintf(l[n].model, FIELD_MAX, "%s", f[2]);
        snprintf(l[n].fp, FIELD_MAX, "%s", f[4]);
        n++;
    }
    keel_buf_free(&b);
    *labels = l;
    *count = n;
    return KEEL_OK;
}

/* ---- common-password list ----------------------------------------------- */

typedef struct {
    char **words;
    size_t n;
    keel_buf_t text;
} wordlist_t;

static int cmp_cstr(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

static keel_status_t load_common(const char *path, wordlist_t *w)
{
    memset(w, 0, sizeof *w);
    keel_status_t st = keel_file_read(path, COMMON_MAX, &w->text);
    if (st != KEEL_OK) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "%s", keel_error_message());
        return keel_errorf(st, "common-password list: %s", why);
    }
    size_t cap = 1;
    for (size_t i = 0; i < w->text.len; i++)
        cap += w->text.data[i] == '\n';
    w->words = calloc(cap, sizeof *w->words);
    if (w->words == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    char *save = NULL;
    for (char *ln = strtok_r((char *)w->text.data, "\r\n", &save); ln != NULL;
         ln = strtok_r(NULL, "\r\n", &save)) {
        if (strncmp(ln, "#!comment", 9) == 0 || ln[0] == '\0')
            continue;
        /* Normalised like a typed label password. */
        char *o = ln;
        for (char *p = ln; *p; p++)
            if (*p != '-' && *p != ' ')
                *o++ = (char)tolower((unsigned char)*p);
        *o = '\0';
        w->words[w->n++] = ln;
    }
    qsort(w->words, w->n, sizeof *w->words, cmp_cstr);
    return KEEL_OK;
}

static void free_common(wordlist_t *w)
{
    free(w->words);
    keel_buf_free(&w->text);
}

/* ---- relation to the device's own identifiers --------------------------- */

static void alnum_lower(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (; *in && o + 1 < cap; in++)
        if (isalnum((unsigned char)*in))
            out[o++] = (char)tolower((unsigned char)*in);
    out[o] = '\0';
}

/* Shortest run k >= floor with tries * alphabet^-k < FALSE_ALARM. */
static size_t run_threshold(double tries, unsigned alphabet, size_t floor)
{
    double a = alphabet < 10 ? 10 : alphabet;
    size_t k = floor;
    while (k < FIELD_MAX && tries * pow(a, -(double)k) >= FALSE_ALARM)
        k++;
    return k;
}

/* 1 if pw shares a run of `win` characters with the anchor or its reversal;
 * an anchor shorter than that counts only whole, and only when even a whole
 * match could not be chance (len >= short_min). */
static int related(const char *pw, const char *anchor_raw, size_t win, size_t short_min)
{
    char anchor[FIELD_MAX], rev[FIELD_MAX];
    alnum_lower(anchor_raw, anchor, sizeof anchor);
    size_t n = strlen(anchor);
    if (n < win && n < short_min)
        return 0;
    for (size_t i = 0; i < n; i++)
        rev[i] = anchor[n - 1 - i];
    rev[n] = '\0';
    if (n < win)
        win = n;
    const char *forms[2] = {anchor, rev};
    for (int f = 0; f < 2; f++)
        for (size_t i = 0; i + win <= n; i++) {
            char sub[FIELD_MAX];
            memcpy(sub, forms[f] + i, win);
            sub[win] = '\0';
            if (strstr(pw, sub) != NULL)
                return 1;
        }
    return 0;
}

/* ---- entropy ------------------------------------------------------------ */

static double entropy_bits(const char *pw, unsigned batch_alphabet, size_t batch)
{
    int lower = 0, upper = 0, digit = 0, other = 0;
    size_t n = strlen(pw);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)pw[i];
        lower |= islower(c) != 0;
        upper |= isupper(c) != 0;
        digit |= isdigit(c) != 0;
        other |= !isalnum(c);
    }
    unsigned pool = (unsigned)(26 * lower + 26 * upper + 10 * digit + 33 * other);
    /* With a large batch the generator's alphabet is visible: use it if smaller. */
    if (batch >= CHI_MIN_BATCH && batch_alphabet > 0 && batch_alphabet < pool)
        pool = batch_alphabet;
    return pool > 1 ? (double)n * log2((double)pool) : 0.0;
}

static int cmp_label_pw(const void *x, const void *y)
{
    return strcmp((*(label_t *const *)x)->pw, (*(label_t *const *)y)->pw);
}

static int cmp_label_id(const void *x, const void *y)
{
    return strcmp((*(label_t *const *)x)->id, (*(label_t *const *)y)->id);
}

static int cmp_label_serial(const void *x, const void *y)
{
    return strcmp((*(label_t *const *)x)->serial, (*(label_t *const *)y)->serial);
}

/* Sorting moves pointers, never the records: qsort's scratch copies would
 * otherwise leave passwords in freed memory. */
static void check_passwords(audit_t *a, label_t *l, label_t **by, size_t n, const wordlist_t *common,
                            json_t *report)
{
    _Bool seen[256] = {0};
    unsigned alphabet = 0;
    for (size_t i = 0; i < n; i++)
        for (const char *p = l[i].pw; *p; p++)
            if (!seen[(unsigned char)*p]) {
                seen[(unsigned char)*p] = 1;
                alphabet++;
            }
    size_t win = run_threshold((double)n * RELATION_TRIES, alphabet, RELATION_WINDOW_MIN);
    size_t short_min = run_threshold((double)n * KEEL_LABEL_PW_CHARS, alphabet, 4);
    size_t prefix = run_threshold((double)n * (double)n / 2, alphabet, PREFIX_RUN_MIN);
    json_object_set_new(report, "thresholds",
                        json_pack("{s:i, s:i, s:f}", "relation_window", (int)win, "prefix_run", (int)prefix,
                                  "chi_square_z", CHI_Z_LIMIT));

    double min_bits = INFINITY, sum_bits = 0;
    for (size_t i = 0; i < n; i++) {
        double bits = entropy_bits(l[i].pw, alphabet, n);
        sum_bits += bits;
        if (bits < min_bits)
            min_bits = bits;
        if (bits < MIN_ENTROPY_BITS)
            finding(a, C_ENTROPY, l[i].id, "estimated %.1f bits, below %.0f", bits, MIN_ENTROPY_BITS);
        /* Compared as typed: a Keel label is already in this form, another
         * vendor's password keeps its case for the entropy estimate above. */
        char typed[FIELD_MAX];
        if (keel_identity_password_normalize(l[i].pw, typed, sizeof typed) != KEEL_OK)
            typed[0] = '\0'; /* cannot happen: pw is shorter than FIELD_MAX */
        const char *pw = typed;
        if (bsearch(&pw, common->words, common->n, sizeof *common->words, cmp_cstr) != NULL)
            finding(a, C_COMMON, l[i].id, "password is in the common-password list");
        if (related(pw, l[i].serial, win, short_min))
            finding(a, C_RELATION, l[i].id, "password contains part of the serial number");
        if (related(pw, l[i].id, win, short_min))
            finding(a, C_RELATION, l[i].id, "password contains part of the device id");
        if (related(pw, l[i].mac, win, short_min))
            finding(a, C_RELATION, l[i].id, "password contains part of the MAC address");
        if (related(pw, l[i].model, win, short_min))
            finding(a, C_RELATION, l[i].id, "password contains the model designation");
        keel_wipe(typed, sizeof typed);
    }
    json_object_set_new(report, "entropy_bits",
                        json_pack("{s:f, s:f}", "min", n ? min_bits : 0.0, "mean", n ? sum_bits / (double)n : 0.0));

    /* Per-position chi-square against a uniform draw from the batch alphabet. */
    if (n >= CHI_MIN_BATCH && alphabet > 1) {
        size_t maxlen = 0;
        for (size_t i = 0; i < n; i++)
            if (strlen(l[i].pw) > maxlen)
                maxlen = strlen(l[i].pw);
        for (size_t pos = 0; pos < maxlen && pos < FIELD_MAX; pos++) {
            size_t counts[256] = {0}, total = 0;
            for (size_t i = 0; i < n; i++)
                if (strlen(l[i].pw) > pos) {
                    counts[(unsigned char)l[i].pw[pos]]++;
                    total++;
                }
            if (total < CHI_MIN_BATCH)
                continue;
            double expect = (double)total / alphabet, chi = 0;
            for (int c = 0; c < 256; c++)
                if (seen[c])
                    chi += ((double)counts[c] - expect) * ((double)counts[c] - expect) / expect;
            /* Wilson-Hilferty: chi-square with k degrees of freedom to a z-score. */
            double k = alphabet - 1.0;
            double z = (cbrt(chi / k) - (1 - 2 / (9 * k))) / sqrt(2 / (9 * k));
            if (z > CHI_Z_LIMIT)
                finding(a, C_PATTERN, NULL, "character %zu of the passwords is not uniformly distributed "
                        "(chi-square %.0f, z %.1f)", pos + 1, chi, z);
        }
    }

    qsort(by, n, sizeof *by, cmp_label_pw);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(by[i]->pw, by[i - 1]->pw) == 0) {
            finding(a, C_UNIQUE_PW, by[i]->id, "same password as device %s", by[i - 1]->id);
            continue;
        }
        size_t k = 0;
        while (by[i]->pw[k] && by[i]->pw[k] == by[i - 1]->pw[k])
            k++;
        if (k >= prefix)
            finding(a, C_PATTERN, by[i]->id, "password shares its first %zu characters with device %s", k,
                    by[i - 1]->id);
    }
}

/* Leaves `by` sorted by id, for check_devices. */
static void check_ids_unique(audit_t *a, label_t **by, size_t n)
{
    /* Another vendor's labels may lack a column: empty fields are not duplicates,
     * and an id that is only the serial again was checked as the serial. */
    qsort(by, n, sizeof *by, cmp_label_serial);
    for (size_t i = 1; i < n; i++)
        if (by[i]->serial[0] != '\0' && strcmp(by[i]->serial, by[i - 1]->serial) == 0)
            finding(a, C_UNIQUE_ID, by[i]->id, "serial number also used by device %s", by[i - 1]->id);
    qsort(by, n, sizeof *by, cmp_label_id);
    for (size_t i = 1; i < n; i++)
        if (by[i]->id[0] != '\0' && strcmp(by[i]->id, by[i - 1]->id) == 0 &&
            !(strcmp(by[i]->id, by[i]->serial) == 0 && strcmp(by[i - 1]->id, by[i - 1]->serial) == 0))
            finding(a, C_UNIQUE_ID, by[i]->id, "device id appears on more than one label");
}

/* ---- devices ------------------------------------------------------------ */

typedef struct {
    char id[KEEL_DEVICE_ID_LEN + 1];
    uint8_t key_hash[KEEL_SHA256_LEN];
} device_t;

static int cmp_device_key(const void *x, const void *y)
{
    return memcmp(((const device_t *)x)->key_hash, ((const device_t *)y)->key_hash, KEEL_SHA256_LEN);
}

static void check_device(audit_t *a, const char *out, const char *id, device_t *d)
{
    char path[KEEL_PATH_MAX], derived[KEEL_DEVICE_ID_LEN + 1] = "";
    X509 *cert = NULL;
    memset(d, 0, sizeof *d);
    memcpy(d->id, id, KEEL_DEVICE_ID_LEN); /* a checked device id */
    if (keel_snprintf(path, sizeof path, "%s/%s/%s", out, id, KEEL_STATE_CERT) != KEEL_OK ||
        keel_pem_load_cert(path, &cert) != KEEL_OK) {
        finding(a, C_BINDING, id, "no readable certificate: %s", keel_error_message());
        return;
    }
    EVP_PKEY *pub = X509_get0_pubkey(cert);
    keel_buf_t spki;
    if (pub == NULL || keel_pkey_spki(pub, &spki) != KEEL_OK) {
        finding(a, C_BINDING, id, "certificate has no usable public key");
        X509_free(cert);
        return;
    }
    keel_sha256(spki.data, spki.len, d->key_hash);
    keel_buf_free(&spki);
    if (keel_identity_device_id(pub, derived) != KEEL_OK || strcmp(derived, id) != 0)
        finding(a, C_BINDING, id, "device id does not match the certificate's key (derived %s)", derived);
    char cn[FIELD_MAX] = "";
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) < 0 ||
        strcmp(cn, id) != 0)
        finding(a, C_BINDING, id, "certificate subject CN '%s' is not the device id", cn);
    X509_free(cert);
}

static keel_status_t check_devices(audit_t *a, const char *out, label_t *l, label_t **by, size_t n,
                                   size_t *ndev)
{
    DIR *dir = opendir(out);
    if (dir == NULL)
        return keel_errorf(KEEL_ERR_IO, "opendir %s: %s", out, strerror(errno));
    size_t cap = 256, count = 0;
    device_t *devs = malloc(cap * sizeof *devs);
    if (devs == NULL) {
        closedir(dir);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    struct dirent *e;
    keel_status_t st = KEEL_OK;
    while ((e = readdir(dir)) != NULL) {
        if (!keel_identity_id_ok(e->d_name))
            continue;
        if (count == cap) {
            device_t *g = realloc(devs, 2 * cap * sizeof *devs);
            if (g == NULL) {
                st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
                break;
            }
            devs = g;
            cap *= 2;
        }
        check_device(a, out, e->d_name, &devs[count]);
        label_t key;
        label_t *kp = &key;
        memcpy(key.id, e->d_name, KEEL_DEVICE_ID_LEN + 1); /* a checked device id */
        label_t **hit = bsearch(&kp, by, n, sizeof *by, cmp_label_id);
        if (hit == NULL)
            finding(a, C_MATCH, e->d_name, "device directory has no label");
        else
            (*hit)->has_device = 1;
        count++;
    }
    closedir(dir);
    for (size_t i = 0; i < n; i++)
        if (!l[i].has_device)
            finding(a, C_MATCH, l[i].id, "label has no device directory");
    qsort(devs, count, sizeof *devs, cmp_device_key);
    for (size_t i = 1; i < count; i++)
        if (memcmp(devs[i].key_hash, devs[i - 1].key_hash, KEEL_SHA256_LEN) == 0)
            finding(a, C_KEYS, devs[i].id, "same public key as device %s", devs[i - 1].id);
    free(devs);
    *ndev = count;
    return st;
}

/* Verifies the label hashes of `sample` devices drawn without replacement;
 * returns how many were checked. */
static unsigned check_hashes(audit_t *a, const char *out, label_t *l, size_t n, unsigned sample)
{
    if (sample > n)
        sample = (unsigned)n;
    size_t *pick = malloc((n ? n : 1) * sizeof *pick);
    if (pick == NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        pick[i] = i;
    unsigned checked = 0;
    for (unsigned s = 0; s < sample; s++) {
        /* A partial Fisher-Yates shuffle. */
        size_t r = s + (size_t)keel_random_uniform((uint32_t)(n - s));
        size_t i = pick[r];
        pick[r] = pick[s];
        pick[s] = i;
        if (!l[i].has_device)
            continue;
        char path[KEEL_PATH_MAX];
        keel_buf_t h;
        checked++;
        if (keel_snprintf(path, sizeof path, "%s/%s/%s", out, l[i].id, KEEL_STATE_LABEL_HASH) != KEEL_OK ||
            keel_file_read(path, KEEL_PASSWORD_HASH_MAX, &h) != KEEL_OK) {
            finding(a, C_HASH, l[i].id, "no readable label hash");
            continue;
        }
        if (keel_password_verify((const char *)h.data, l[i].pw, strlen(l[i].pw)) != KEEL_OK)
            finding(a, C_HASH, l[i].id, "label password does not match the device's hash");
        keel_buf_free(&h);
    }
    free(pick);
    return checked;
}

/* Adds the checks in `mask` (bit per check) and the findings to r. */
static void finish_report(audit_t *a, json_t *r, unsigned mask)
{
    for (int c = 0; c < C_COUNT; c++)
        if (mask & (1u << c))
            json_array_append_new(a->checks, json_pack("{s:s, s:s, s:s, s:i}", "id", check_ids[c], "title",
                                                       check_titles[c], "provision", "5.1-2", "findings",
                                                       (int)a->counts[c]));
    json_object_set_new(r, "checks", a->checks);
    json_object_set_new(r, "findings", a->findings);
    json_object_set_new(r, "pass", json_boolean(a->n == 0));
}

/* The common tail of both audits: the passwords of the first n labels are
 * wiped and the working memory freed whatever happened; the report is kept
 * only when st is KEEL_OK. Returns st. */
static keel_status_t audit_release(keel_status_t st, audit_t *a, json_t *r, label_t *labels, size_t n,
                                   label_t **by, wordlist_t *common)
{
    for (size_t i = 0; labels != NULL && i < n; i++)
        keel_wipe(labels[i].pw, sizeof labels[i].pw);
    free(by);
    free(labels);
    free_common(common);
    if (st != KEEL_OK) {
        json_decref(a->findings);
        json_decref(a->checks);
        json_decref(r);
    }
    return st;
}

keel_status_t keel_factory_audit(const keel_audit_opts_t *o, json_t **report, unsigned *findings)
{
    if (o == NULL || o->out == NULL || o->common_list == NULL)
        return keel_errorf(KEEL_ERR_ARG, "audit: batch directory and common-password list are required");
    keel_status_t st = keel_crypto_init();
    if (st != KEEL_OK)
        return st;
    wordlist_t common;
    if ((st = load_common(o->common_list, &common)) != KEEL_OK) {
        free_common(&common);
        return st;
    }
    audit_t a = {.findings = json_array(), .checks = json_array()};
    json_t *r = json_object();
    label_t *labels = NULL, **by = NULL;
    size_t n = 0, ndev = 0;
    unsigned hashed = 0;
    st = load_labels(o->out, &a, &labels, &n);
    if (st == KEEL_OK && (by = malloc((n ? n : 1) * sizeof *by)) == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st == KEEL_OK) {
        for (size_t i = 0; i < n; i++)
            by[i] = &labels[i];
        check_passwords(&a, labels, by, n, &common, r);
        check_ids_unique(&a, by, n);
        st = check_devices(&a, o->out, labels, by, n, &ndev);
    }
    if (st == KEEL_OK)
        hashed = check_hashes(&a, o->out, labels, n, o->verify_hashes);
    if ((st = audit_release(st, &a, r, labels, n, by, &common)) != KEEL_OK)
        return st;
    json_object_set_new(r, "labels", json_integer((json_int_t)n));
    json_object_set_new(r, "devices", json_integer((json_int_t)ndev));
    json_object_set_new(r, "hashes_verified", json_integer(hashed));
    finish_report(&a, r, (1u << C_COUNT) - 1);
    *report = r;
    *findings = a.n;
    return KEEL_OK;
}

/* Copies one field of a caller's label; NULL is an empty field. */
static int take_field(char *dst, const char *src)
{
    if (src == NULL)
        src = "";
    size_t n = strlen(src);
    if (n >= FIELD_MAX)
        return 0;
    memcpy(dst, src, n + 1);
    return 1;
}

keel_status_t keel_factory_audit_labels(const keel_label_t *in, size_t n, const char *common_list,
                                        json_t **report, unsigned *findings)
{
    if ((in == NULL && n > 0) || common_list == NULL || report == NULL || findings == NULL)
        return keel_errorf(KEEL_ERR_ARG, "audit: labels and a common-password list are required");
    wordlist_t common;
    keel_status_t st = load_common(common_list, &common);
    if (st != KEEL_OK) {
        free_common(&common);
        return st;
    }
    audit_t a = {.findings = json_array(), .checks = json_array()};
    json_t *r = json_object();
    label_t *l = calloc(n ? n : 1, sizeof *l);
    label_t **by = malloc((n ? n : 1) * sizeof *by);
    size_t kept = 0;
    if (l == NULL || by == NULL || a.findings == NULL || a.checks == NULL || r == NULL) {
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            label_t *t = &l[kept];
            if (!take_field(t->id, in[i].id) || !take_field(t->serial, in[i].serial) ||
                !take_field(t->mac, in[i].mac) || !take_field(t->model, in[i].model) ||
                !take_field(t->pw, in[i].password)) {
                keel_wipe(t, sizeof *t);
                finding(&a, C_FORMAT, NULL, "label %zu: a field is %d characters or longer", i + 1, FIELD_MAX);
                continue;
            }
            if (t->id[0] == '\0') /* a label without an id is named by its serial */
                memcpy(t->id, t->serial, sizeof t->id);
            by[kept] = t;
            kept++;
        }
        check_passwords(&a, l, by, kept, &common, r);
        check_ids_unique(&a, by, kept);
    }
    if ((st = audit_release(st, &a, r, l, kept, by, &common)) != KEEL_OK)
        return st;
    json_object_set_new(r, "labels", json_integer((json_int_t)kept));
    finish_report(&a, r,
                  1u << C_FORMAT | 1u << C_UNIQUE_PW | 1u << C_UNIQUE_ID | 1u << C_ENTROPY | 1u << C_COMMON |
                      1u << C_RELATION | 1u << C_PATTERN);
    *report = r;
    *findings = a.n;
    return KEEL_OK;
}

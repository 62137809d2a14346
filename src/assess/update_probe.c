/*
 * The update probe of `keel assess` (test unit "update"): uploads the lab's
 * test bundles to a device's update interface and records which it takes.
 * A bundle is never applied; a good one keel-api-v1 staged is dropped again.
 * See keel/assess_update.h and docs/internals/assess-update.md.
 *
 * Bundles are streamed from their files 64 KiB at a time for keel-api-v1
 * (the upload's own piece size); the single-request upload (KEEL_UPLOAD_HTTP)
 * needs the body whole and is capped at KEEL_UPDATE_HTTP_BODY_MAX.
 */
#include "keel/assess_update.h"

#include "keel/assess_probe.h"
#include "keel/update.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNIT "update"
#define PIECE_MAX (64u * 1024u)  /* keeld's upload piece and request body cap (docs/api.md) */
#define FLIPS_MAX 2u
#define ANSWER_MAX 512u          /* bytes of a device's answer kept per request */
#define KEEL_API_BUNDLE "/api/v1/update/bundle"
#define KEEL_API_STAGE "/api/v1/update/stage"
#define KEEL_API_STATUS "/api/v1/update"
#define DEFAULT_BUDGET_MS 60000u

/* One test bundle as the lab gave it. */
typedef struct {
    const char *role; /* "good", "tampered", "downgraded", "wrong_signer" */
    const char *path;
    int fd;
    uint64_t size;
    char sha256[2 * 32 + 1];
    /* keel-bundle-1 (docs/bundle-format.md), when the file is one */
    int keel;
    uint64_t manifest_len, sig_len, chain_len, payload_off;
} bundle_file_t;

/* One upload: a bundle as given, or a variant of it with bytes flipped. */
typedef struct {
    const bundle_file_t *f;
    const char *role;
    char variant[160];
    uint64_t flip[FLIPS_MAX];
    unsigned n_flips;
    int payload_only; /* the damage lies in a keel bundle's payload only (checked at install) */
} attempt_t;

typedef enum { R_ACCEPTED, R_REFUSED, R_ERROR, R_NO_ANSWER, R_NOT_FINISHED } result_t;

static const char *const result_names[] = {"accepted", "refused", "error", "no_answer", "not_finished"};

typedef struct {
    const keel_update_probe_opts_t *o;
    keel_http_t *h;
    json_t *doc;
    json_t *bundles;
    double deadline;
    int good_accepted;
    char why[512]; /* the first reason the unit is inconclusive */
} probe_t;

static void inconclusive(probe_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void inconclusive(probe_t *p, const char *fmt, ...)
{
    if (p->why[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
}

static keel_status_t finding(probe_t *p, const char *prov, const char *sev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static keel_status_t finding(probe_t *p, const char *prov, const char *sev, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return keel_assess_unit_finding(p->doc, UNIT, prov, sev, what);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s != NULL ? s + 1 : path;
}

static void utc_now(char *out, size_t cap)
{
    time_t t = time(NULL);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        out[0] = '\0';
}

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static uint64_t be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads exactly n bytes at off; -1 on a short read or an error. */
static int read_at(int fd, uint64_t off, uint8_t *buf, size_t n)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        done += (size_t)r;
    }
    return 0;
}

/* ---- the bundle files ---------------------------------------------------------- */

/* Opens one bundle, hashes it, and sees whether it is a keel-bundle-1. */
static keel_status_t bundle_open(bundle_file_t *b, const char *role, const char *path, uint8_t *buf)
{
    b->role = role;
    b->path = path;
    b->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (b->fd < 0)
        return keel_errorf(errno == ENOENT ? KEEL_ERR_NOT_FOUND : KEEL_ERR_IO, "%s bundle %s: %s", role, path,
                           strerror(errno));
    struct stat sb;
    if (fstat(b->fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return keel_errorf(KEEL_ERR_IO, "%s bundle %s is not a regular file", role, path);
    if ((uint64_t)sb.st_size > KEEL_UPDATE_BUNDLE_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "%s bundle %s is over %u MiB", role, path,
                           KEEL_UPDATE_BUNDLE_MAX / (1024u * 1024u));
    b->size = (uint64_t)sb.st_size;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    for (uint64_t off = 0; ok && off < b->size; off += PIECE_MAX) {
        size_t n = b->size - off < PIECE_MAX ? (size_t)(b->size - off) : PIECE_MAX;
        ok = read_at(b->fd, off, buf, n) == 0 && EVP_DigestUpdate(md, buf, n) == 1;
    }
    uint8_t dig[32];
    unsigned dl = 0;
    ok = ok && EVP_DigestFinal_ex(md, dig, &dl) == 1 && dl == sizeof dig;
    EVP_MD_CTX_free(md);
    if (!ok)
        return keel_errorf(KEEL_ERR_IO, "%s bundle %s cannot be read", role, path);
    hex(dig, sizeof dig, b->sha256);
    if (b->size >= KEEL_BUNDLE_HEADER_LEN && read_at(b->fd, 0, buf, KEEL_BUNDLE_HEADER_LEN) == 0 &&
        memcmp(buf, KEEL_BUNDLE_MAGIC, 8) == 0 && be(buf + 8, 2) == KEEL_BUNDLE_VERSION) {
        uint64_t m = be(buf + 12, 4), s = be(buf + 16, 4), c = be(buf + 20, 4), pl = be(buf + 24, 8);
        /* only lengths that add up to the file are a layout the probe can aim at */
        if (m >= 1 && m <= KEEL_BUNDLE_MANIFEST_MAX && s >= 1 && s <= KEEL_BUNDLE_SIG_MAX && c >= 1 &&
            c <= KEEL_BUNDLE_CHAIN_MAX && pl <= b->size && KEEL_BUNDLE_HEADER_LEN + m + s + c + pl == b->size) {
            b->keel = 1;
            b->manifest_len = m;
            b->sig_len = s;
            b->chain_len = c;
            b->payload_off = KEEL_BUNDLE_HEADER_LEN + m + s + c;
        }
    }
    return KEEL_OK;
}

/*
 * Where a lab's tampered bundle differs from the good one: 1 when both are
 * keel bundles of one size and every difference lies in the payload (a
 * keel-bundle-1 device checks the payload only while installing).
 */
static int differs_in_payload_only(const bundle_file_t *good, const bundle_file_t *bad, uint8_t *b1, uint8_t *b2)
{
    if (good == NULL || !good->keel || !bad->keel || good->size != bad->size ||
        good->payload_off != bad->payload_off)
        return 0;
    for (uint64_t off = 0; off < good->payload_off; off += PIECE_MAX) {
        size_t n = good->payload_off - off < PIECE_MAX ? (size_t)(good->payload_off - off) : PIECE_MAX;
        if (read_at(good->fd, off, b1, n) != 0 || read_at(bad->fd, off, b2, n) != 0 || memcmp(b1, b2, n) != 0)
            return 0;
    }
    return 1;
}

/* The tampered variants made from the good bundle: for a keel bundle a byte
 * of the manifest, of the signature and of the payload; for any other file a
 * byte in the middle and one in the last 64 bytes (a signature, in most
 * formats), each tried alone. Returns how many were made. */
static unsigned derive_tampered(const bundle_file_t *g, attempt_t *out)
{
    unsigned n = 0;
    if (g->size == 0)
        return 0;
    if (g->keel) {
        out[n] = (attempt_t){.f = g, .role = "tampered", .flip = {KEEL_BUNDLE_HEADER_LEN + g->manifest_len / 2},
                             .n_flips = 1};
        snprintf(out[n].variant, sizeof out[n].variant,
                 "made from the good bundle: manifest byte at %" PRIu64 " flipped",
                 out[n].flip[0]);
        n++;
        out[n] = (attempt_t){.f = g, .role = "tampered",
                             .flip = {KEEL_BUNDLE_HEADER_LEN + g->manifest_len + g->sig_len / 2}, .n_flips = 1};
        snprintf(out[n].variant, sizeof out[n].variant,
                 "made from the good bundle: signature byte at %" PRIu64 " flipped", out[n].flip[0]);
        n++;
        if (g->size > g->payload_off) {
            out[n] = (attempt_t){.f = g, .role = "tampered", .flip = {g->payload_off + (g->size - g->payload_off) / 2},
                                 .n_flips = 1, .payload_only = 1};
            snprintf(out[n].variant, sizeof out[n].variant,
                     "made from the good bundle: payload byte at %" PRIu64 " flipped", out[n].flip[0]);
            n++;
        }
        return n;
    }
    out[n] = (attempt_t){.f = g, .role = "tampered", .flip = {g->size / 2}, .n_flips = 1};
    snprintf(out[n].variant, sizeof out[n].variant, "made from the good bundle: byte at %" PRIu64 " flipped",
             out[n].flip[0]);
    n++;
    uint64_t tail = g->size > 32 ? g->size - 32 : g->size - 1;
    if (tail != g->size / 2) {
        out[n] = (attempt_t){.f = g, .role = "tampered", .flip = {tail}, .n_flips = 1};
        snprintf(out[n].variant, sizeof out[n].variant,
                 "made from the good bundle: byte at %" PRIu64 " (in the last 64) flipped", tail);
        n++;
    }
    return n;
}

static void apply_flips(const attempt_t *a, uint64_t off, uint8_t *buf, size_t n)
{
    for (unsigned i = 0; i < a->n_flips; i++)
        if (a->flip[i] >= off && a->flip[i] < off + n)
            buf[a->flip[i] - off] ^= 0xFF;
}

/* ---- talking to the device -------------------------------------------------------- */

typedef struct {
    result_t result;
    long status;         /* the deciding answer's status */
    char step[64];       /* which request decided: "stage", "piece at 65536", "upload" */
    char error[128];     /* the answer's "error" field, when JSON */
    char message[ANSWER_MAX];
    char transport[256]; /* libcurl's reason when there was no answer */
    unsigned pieces;
    uint64_t bytes;
    char sha256_sent[2 * 32 + 1];
    long long duration_us;
} upload_t;

/* n bytes of the device's text as printable ASCII (anything else a space):
 * it goes into sentences, the document and the terminal, and a cut never
 * leaves half a UTF-8 character or a control sequence behind. */
static void printable_copy(char *out, size_t cap, const void *in, size_t n)
{
    const unsigned char *p = in;
    size_t k = n < cap - 1 ? n : cap - 1;
    for (size_t i = 0; i < k; i++)
        out[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : ' ';
    out[k] = '\0';
}

/* What the device said: "error" and "message" of a JSON answer, or the body. */
static void take_answer(upload_t *u, const keel_http_resp_t *r)
{
    u->status = r->status;
    u->error[0] = u->message[0] = '\0';
    if (r->status == 0) {
        snprintf(u->transport, sizeof u->transport, "%s", r->err);
        return;
    }
    json_t *j = json_loadb((const char *)r->body.data, r->body.len, JSON_REJECT_DUPLICATES, NULL);
    json_t *e = json_object_get(j, "error"), *m = json_object_get(j, "message");
    if (json_is_string(e))
        printable_copy(u->error, sizeof u->error, json_string_value(e), json_string_length(e));
    if (json_is_string(m))
        printable_copy(u->message, sizeof u->message, json_string_value(m), json_string_length(m));
    if (!json_is_string(e) && !json_is_string(m))
        printable_copy(u->message, sizeof u->message, r->body.len > 0 ? r->body.data : (const uint8_t *)"",
                       r->body.len);
    json_decref(j);
}

/* The verdict on a final answer. 401/403 are refusals only once the good
 * bundle got through the same door; a route that is not there is an error. */
static result_t classify(const probe_t *p, long status)
{
    if (status == 0)
        return R_NO_ANSWER;
    if (status >= 200 && status < 300)
        return R_ACCEPTED;
    if (status == 401 || status == 403)
        return p->good_accepted ? R_REFUSED : R_ERROR;
    if (status == 404 || status == 405 || status == 407 || status == 408 || status == 409 || status == 415 ||
        status == 429)
        return R_ERROR;
    if (status >= 400 && status < 500)
        return R_REFUSED;
    return R_ERROR;
}

static int out_of_time(const probe_t *p)
{
    return keel_now() > p->deadline;
}

/* keel-api-v1: PUT the pieces, then POST stage. */
static keel_status_t upload_keel_api(probe_t *p, const attempt_t *a, uint8_t *buf, upload_t *u)
{
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    keel_status_t st = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1
                           ? KEEL_OK
                           : keel_errorf(KEEL_ERR_NOMEM, "update: no SHA-256 context");
    double t0 = keel_now();
    uint64_t off = 0;
    int done = 0;
    while (st == KEEL_OK && !done) {
        size_t n = a->f->size - off < PIECE_MAX ? (size_t)(a->f->size - off) : PIECE_MAX;
        if (read_at(a->f->fd, off, buf, n) != 0) {
            st = keel_errorf(KEEL_ERR_IO, "%s bundle %s: read failed", a->role, a->f->path);
            break;
        }
        apply_flips(a, off, buf, n);
        if (EVP_DigestUpdate(md, buf, n) != 1) {
            st = keel_errorf(KEEL_ERR_NOMEM, "update: SHA-256 failed");
            break;
        }
        char path[96];
        snprintf(path, sizeof path, KEEL_API_BUNDLE "?offset=%" PRIu64, off);
        keel_http_req_t q = {.method = "PUT", .path = path, .content_type = "application/octet-stream",
                             .body = buf, .body_len = n};
        st = keel_http_do(p->h, &q, &r);
        if (st != KEEL_OK)
            break;
        u->pieces++;
        if (r.status != 200) {
            take_answer(u, &r);
            snprintf(u->step, sizeof u->step, "piece at offset %" PRIu64, off);
            /* keeld refuses an upload over its size cap at once; anything else is the upload failing */
            if (r.status == 0)
                u->result = R_NO_ANSWER;
            else if (r.status == 413 || r.status == 422)
                u->result = R_REFUSED;
            else
                u->result = R_ERROR;
            done = 2;
            break;
        }
        off += n;
        u->bytes = off;
        if (off >= a->f->size)
            done = 1;
        else if (out_of_time(p)) {
            snprintf(u->step, sizeof u->step, "piece at offset %" PRIu64, off);
            u->result = R_NOT_FINISHED;
            done = 2;
        }
    }
    uint8_t dig[32];
    unsigned dl = 0;
    if (st == KEEL_OK && EVP_DigestFinal_ex(md, dig, &dl) == 1 && dl == sizeof dig)
        hex(dig, sizeof dig, u->sha256_sent);
    EVP_MD_CTX_free(md);
    if (st == KEEL_OK && done == 1) {
        keel_http_req_t q = {.method = "POST", .path = KEEL_API_STAGE, .content_type = "application/json",
                             .body = "{}", .body_len = 2};
        st = keel_http_do(p->h, &q, &r);
        if (st == KEEL_OK) {
            take_answer(u, &r);
            snprintf(u->step, sizeof u->step, "stage");
            u->result = classify(p, r.status);
        }
    }
    u->duration_us = (long long)((keel_now() - t0) * 1e6);
    keel_http_resp_free(&r);
    return st;
}

/* KEEL_UPLOAD_HTTP: the bundle as one request body. */
static keel_status_t upload_http(probe_t *p, const attempt_t *a, uint8_t *buf, upload_t *u)
{
    snprintf(u->step, sizeof u->step, "upload");
    if (a->f->size > KEEL_UPDATE_HTTP_BODY_MAX) {
        u->result = R_ERROR;
        snprintf(u->message, sizeof u->message, "the bundle is over the %u MiB a single-request upload may carry",
                 KEEL_UPDATE_HTTP_BODY_MAX / (1024u * 1024u));
        return KEEL_OK;
    }
    keel_buf_t body;
    keel_buf_init(&body, KEEL_UPDATE_HTTP_BODY_MAX);
    keel_status_t st = KEEL_OK;
    for (uint64_t off = 0; st == KEEL_OK && off < a->f->size; off += PIECE_MAX) {
        size_t n = a->f->size - off < PIECE_MAX ? (size_t)(a->f->size - off) : PIECE_MAX;
        if (read_at(a->f->fd, off, buf, n) != 0)
            st = keel_errorf(KEEL_ERR_IO, "%s bundle %s: read failed", a->role, a->f->path);
        else
            st = keel_buf_append(&body, buf, n);
    }
    if (st == KEEL_OK) {
        apply_flips(a, 0, body.data, body.len);
        uint8_t dig[32];
        unsigned dl = 0;
        if (EVP_Digest(body.data, body.len, dig, &dl, EVP_sha256(), NULL) == 1 && dl == sizeof dig)
            hex(dig, sizeof dig, u->sha256_sent);
        keel_http_resp_t r;
        keel_http_resp_init(&r);
        keel_http_req_t q = {.method = p->o->method, .path = p->o->path, .content_type = "application/octet-stream",
                             .body = body.len > 0 ? (const void *)body.data : "", .body_len = body.len};
        double t0 = keel_now();
        st = keel_http_do(p->h, &q, &r);
        u->duration_us = (long long)((keel_now() - t0) * 1e6);
        if (st == KEEL_OK) {
            u->pieces = 1;
            u->bytes = body.len;
            take_answer(u, &r);
            u->result = classify(p, r.status);
        }
        keel_http_resp_free(&r);
    }
    keel_buf_free(&body);
    return st;
}

/* keel-api-v1: an empty upload drops whatever is staged; staging it is
 * refused, which brings the device back to "idle". *dropped = 1 when both
 * answered so; the statuses into put/stage (0: not asked or no answer). */
static keel_status_t drop_staged(probe_t *p, int *dropped, long *put, long *stage)
{
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    *dropped = 0;
    *stage = 0;
    keel_http_req_t q = {.method = "PUT", .path = KEEL_API_BUNDLE "?offset=0",
                         .content_type = "application/octet-stream", .body = "", .body_len = 0};
    keel_status_t st = keel_http_do(p->h, &q, &r);
    *put = r.status;
    if (st == KEEL_OK && *put == 200) {
        q = (keel_http_req_t){.method = "POST", .path = KEEL_API_STAGE, .content_type = "application/json",
                              .body = "{}", .body_len = 2};
        st = keel_http_do(p->h, &q, &r);
        *stage = r.status;
        *dropped = st == KEEL_OK && r.status >= 400 && r.status < 500;
    }
    keel_http_resp_free(&r);
    return st;
}

static keel_status_t drop_evidence(probe_t *p, long put, long stage)
{
    static const char sent[] = "PUT " KEEL_API_BUNDLE "?offset=0 (empty), then POST " KEEL_API_STAGE " {}: drop it";
    char obs[128];
    int n = snprintf(obs, sizeof obs, "HTTP %ld, then stage HTTP %ld", put, stage);
    return keel_assess_evidence(p->doc, UNIT, sent, sizeof sent - 1, obs, n > 0 ? (size_t)n : 0, -1);
}

static const char *version_path(const probe_t *p)
{
    if (p->o->version_path != NULL)
        return p->o->version_path;
    return p->o->kind == KEEL_UPLOAD_KEEL_API_V1 ? KEEL_API_STATUS : NULL;
}

/* The parts of a version answer that say what runs: for keeld "running" and
 * "pending"; for other JSON the usual version keys; otherwise the whole body. */
static json_t *version_of(const keel_http_resp_t *r)
{
    static const char *const keys[] = {"running", "pending", "version", "firmware_version", "security_version",
                                       "sw_version", "fw_version"};
    json_t *j = json_loadb((const char *)r->body.data, r->body.len, JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(j)) {
        json_t *o = json_object();
        for (size_t i = 0; o != NULL && i < sizeof keys / sizeof keys[0]; i++) {
            json_t *v = json_object_get(j, keys[i]);
            if (v != NULL && json_object_set(o, keys[i], v) != 0) {
                json_decref(o);
                o = NULL;
            }
        }
        if (o != NULL && json_object_size(o) > 0) {
            json_decref(j);
            return o;
        }
        json_decref(o);
    }
    json_decref(j);
    return keel_assess_escape(r->body.data, r->body.len < ANSWER_MAX ? r->body.len : ANSWER_MAX);
}

/* Reads the version answer (or "/" when there is none) into *version (NULL
 * when nothing answered); *alive = the device answered HTTP. */
static keel_status_t read_version(probe_t *p, const char *when, int *alive, json_t **version)
{
    const char *path = version_path(p);
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    keel_http_req_t q = {.method = "GET", .path = path != NULL ? path : "/"};
    keel_status_t st = keel_http_do(p->h, &q, &r);
    *alive = 0;
    *version = NULL;
    if (st == KEEL_OK) {
        *alive = r.status != 0;
        char sent[300], obs[400];
        int sn = snprintf(sent, sizeof sent, "GET %s (%s)", q.path, when);
        int on = r.status != 0 ? snprintf(obs, sizeof obs, "HTTP %ld, %zu bytes", r.status, r.body.len)
                               : snprintf(obs, sizeof obs, "no answer: %s", r.err);
        st = keel_assess_evidence(p->doc, UNIT, sent, sn > 0 ? (size_t)sn : 0, obs, on > 0 ? (size_t)on : 0,
                                  r.duration_us);
        if (st == KEEL_OK && path != NULL && r.status >= 200 && r.status < 300) {
            *version = version_of(&r);
            if (*version == NULL)
                st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for a version answer");
        }
    }
    keel_http_resp_free(&r);
    return st;
}

/* ---- one attempt ------------------------------------------------------------------ */

static keel_status_t record(probe_t *p, const attempt_t *a, const upload_t *u, int dropped, int alive_after,
                            const char *when)
{
    json_t *b = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s}", "role", a->role, "file", base_name(a->f->path), "size",
                          (json_int_t)a->f->size, "sha256", a->f->sha256, "variant", a->variant, "result",
                          result_names[u->result], "time", when);
    if (b == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a bundle record");
    json_t *up = json_pack("{s:s, s:i, s:I, s:s}", "via",
                           p->o->kind == KEEL_UPLOAD_KEEL_API_V1 ? "PUT " KEEL_API_BUNDLE ", POST " KEEL_API_STAGE
                                                                 : p->o->path,
                           "pieces", (int)u->pieces, "bytes", (json_int_t)u->bytes, "sha256", u->sha256_sent);
    json_t *ans = json_pack("{s:s, s:i}", "step", u->step, "status", (int)u->status);
    int bad = up == NULL || ans == NULL;
    if (!bad && u->error[0] != '\0')
        bad = json_object_set_new(ans, "error", json_string(u->error)) != 0;
    if (!bad && u->message[0] != '\0')
        bad = json_object_set_new(ans, "message", keel_assess_escape((const uint8_t *)u->message,
                                                                     strlen(u->message))) != 0;
    if (!bad && u->transport[0] != '\0')
        bad = json_object_set_new(ans, "transport", json_string(u->transport)) != 0;
    if (!bad) {
        bad = json_object_set_new(b, "uploaded", up) != 0;
        up = NULL;
    }
    if (!bad) {
        bad = json_object_set_new(b, "answer", ans) != 0;
        ans = NULL;
    }
    if (!bad)
        bad = json_object_set_new(b, "duration_us", json_integer(u->duration_us)) != 0 ||
              (p->o->kind == KEEL_UPLOAD_KEEL_API_V1 && u->result == R_ACCEPTED &&
               json_object_set_new(b, "dropped", json_boolean(dropped)) != 0) ||
              json_object_set_new(b, "alive_after", json_boolean(alive_after)) != 0 ||
              (a->payload_only && json_object_set_new(b, "payload_only", json_true()) != 0);
    json_decref(up);
    json_decref(ans);
    if (bad || json_array_append_new(p->bundles, b) != 0) {
        if (bad)
            json_decref(b);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a bundle record");
    }
    char sent[400], obs[800];
    int sn = snprintf(sent, sizeof sent, "%s bundle %s (%" PRIu64 " bytes, sha256 %.16s..., %s) in %u request%s",
                      a->role, base_name(a->f->path), a->f->size, a->f->sha256, a->variant, u->pieces,
                      u->pieces == 1 ? "" : "s");
    int on = u->status != 0 ? snprintf(obs, sizeof obs, "%s: HTTP %ld%s%s%s%s -> %s", u->step, u->status,
                                       u->error[0] ? " " : "", u->error, u->message[0] ? ": " : "", u->message,
                                       result_names[u->result])
                            : snprintf(obs, sizeof obs, "%s: %s -> %s", u->step[0] ? u->step : "upload",
                                       u->transport[0] ? u->transport : u->message, result_names[u->result]);
    return keel_assess_evidence(p->doc, UNIT, sent, sn > 0 ? (size_t)sn : 0, obs, on > 0 ? (size_t)on : 0,
                                u->duration_us);
}

/* What an accepted bad bundle means. */
static keel_status_t judge(probe_t *p, const attempt_t *a, const upload_t *u)
{
    const char *file = base_name(a->f->path);
    if (u->result != R_ACCEPTED) {
        if (u->result != R_REFUSED && u->transport[0] != '\0')
            inconclusive(p, "the %s bundle %s could not be tried (%s: %s)", a->role, file, result_names[u->result],
                         u->transport);
        else if (u->result != R_REFUSED)
            inconclusive(p, "the %s bundle %s could not be tried (%s at %s: HTTP %ld%s%s)", a->role, file,
                         result_names[u->result], u->step, u->status, u->message[0] ? " " : "", u->message);
        return KEEL_OK;
    }
    if (a->payload_only)
        return finding(p, "5.3-9", "info",
                       "the %s bundle %s (%s) was accepted at upload (HTTP %ld): its damage lies in the payload, "
                       "which a keel-bundle-1 device checks chunk by chunk while installing; the probe never "
                       "installs",
                       a->role, file, a->variant, u->status);
    keel_status_t st = KEEL_OK;
    if (strcmp(a->role, "tampered") == 0) {
        st = finding(p, "5.3-9", "fail", "the device accepted a tampered bundle (%s, %s): HTTP %ld", file, a->variant,
                     u->status);
        if (st == KEEL_OK)
            st = finding(p, "5.3-2", "fail",
                         "the update mechanism let a tampered bundle through (%s): HTTP %ld", file, u->status);
    } else if (strcmp(a->role, "downgraded") == 0) {
        st = finding(p, "5.3-2", "fail", "the device accepted a downgraded bundle (%s): HTTP %ld", file, u->status);
    } else if (strcmp(a->role, "wrong_signer") == 0) {
        st = finding(p, "5.3-10", "fail",
                     "the device accepted a bundle signed outside its trust relationship (%s): HTTP %ld", file,
                     u->status);
        if (st == KEEL_OK)
            st = finding(p, "5.3-7", "fail",
                         "a signature by an untrusted signer did not stop the update (%s): HTTP %ld", file,
                         u->status);
    }
    return st;
}

static keel_status_t try_one(probe_t *p, const attempt_t *a, uint8_t *buf, int *alive)
{
    upload_t u = {0};
    char when[32];
    utc_now(when, sizeof when);
    keel_status_t st;
    if (out_of_time(p)) {
        u.result = R_NOT_FINISHED;
        snprintf(u.step, sizeof u.step, "not started");
        snprintf(u.message, sizeof u.message, "the probe's budget ran out first");
        st = KEEL_OK;
    } else {
        st = p->o->kind == KEEL_UPLOAD_KEEL_API_V1 ? upload_keel_api(p, a, buf, &u) : upload_http(p, a, buf, &u);
    }
    int dropped = 0, drop = 0;
    long put = 0, stage = 0;
    /* a half-done keel-api upload is dropped too: nothing of the probe's stays staged */
    if (st == KEEL_OK && p->o->kind == KEEL_UPLOAD_KEEL_API_V1 &&
        (u.result == R_ACCEPTED || u.result == R_NOT_FINISHED)) {
        drop = 1;
        st = drop_staged(p, &dropped, &put, &stage);
    }
    if (st == KEEL_OK)
        st = record(p, a, &u, dropped, 1, when);
    if (st == KEEL_OK && drop)
        st = drop_evidence(p, put, stage);
    json_t *v = NULL;
    *alive = 1;
    if (st == KEEL_OK && strcmp(a->role, "good") != 0)
        st = read_version(p, "after the upload", alive, &v);
    json_decref(v);
    if (st == KEEL_OK && !*alive &&
        json_object_set_new(json_array_get(p->bundles, json_array_size(p->bundles) - 1), "alive_after",
                            json_false()) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for a bundle record");
    if (st == KEEL_OK && strcmp(a->role, "good") == 0) {
        p->good_accepted = u.result == R_ACCEPTED;
        if (!p->good_accepted)
            inconclusive(p,
                         "the good bundle %s was not accepted (%s: %s, HTTP %ld%s%s): refusals of the others prove "
                         "nothing",
                         base_name(a->f->path), result_names[u.result], u.step, u.status, u.message[0] ? ": " : "",
                         u.message);
        else if (p->o->kind == KEEL_UPLOAD_KEEL_API_V1 && !dropped)
            st = finding(p, "5.3-2", "warn",
                         "the good bundle could not be dropped again after staging: the device keeps it staged");
    }
    if (st == KEEL_OK)
        st = judge(p, a, &u);
    if (st == KEEL_OK && !*alive)
        st = finding(p, "5.3-9", "warn", "the device stopped answering after the %s bundle %s", a->role,
                     base_name(a->f->path));
    return st;
}

/* ---- the probe ------------------------------------------------------------------- */

static keel_status_t do_login(probe_t *p, int *ok)
{
    const keel_update_probe_opts_t *o = p->o;
    *ok = 1;
    if (o->login.kind == KEEL_HTTP_LOGIN_NONE)
        return KEEL_OK;
    if (o->user == NULL || o->password == NULL || o->login.path == NULL)
        return keel_errorf(KEEL_ERR_ARG, "update: a login needs a path, a user and a password");
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    int accepted = 0;
    keel_status_t st = keel_http_login(p->h, &o->login, o->user, o->password, &accepted, &r);
    if (st == KEEL_OK) {
        /* the user name and the status only: the answer carries the session token */
        json_t *l = json_pack("{s:s, s:s, s:s, s:b, s:i}", "kind", keel_http_login_kind_name(o->login.kind), "path",
                              o->login.path, "user", o->user, "accepted", accepted, "status", (int)r.status);
        if (l == NULL || json_object_set_new(p->doc, "login", l) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the login record");
    }
    if (st == KEEL_OK) {
        char sent[300], obs[300];
        int sn = snprintf(sent, sizeof sent, "%s login at %s as %s (the lab's password)",
                          keel_http_login_kind_name(o->login.kind), o->login.path, o->user);
        int on = r.status != 0 ? snprintf(obs, sizeof obs, "HTTP %ld: %s", r.status, accepted ? "accepted" : "refused")
                               : snprintf(obs, sizeof obs, "no answer: %s", r.err);
        st = keel_assess_evidence(p->doc, UNIT, sent, sn > 0 ? (size_t)sn : 0, obs, on > 0 ? (size_t)on : 0,
                                  r.duration_us);
    }
    if (st == KEEL_OK && !accepted) {
        *ok = 0;
        inconclusive(p, "the lab's login at %s was not accepted (%s%ld)", o->login.path,
                     r.status ? "HTTP " : r.err, r.status);
    }
    keel_http_resp_free(&r);
    return st;
}

static keel_status_t run(probe_t *p, bundle_file_t *files, size_t n_files, uint8_t *buf, uint8_t *buf2)
{
    bundle_file_t *good = NULL, *tampered = NULL, *down = NULL, *wrong = NULL;
    for (size_t i = 0; i < n_files; i++) {
        if (strcmp(files[i].role, "good") == 0)
            good = &files[i];
        else if (strcmp(files[i].role, "tampered") == 0)
            tampered = &files[i];
        else if (strcmp(files[i].role, "downgraded") == 0)
            down = &files[i];
        else
            wrong = &files[i];
    }
    int ok = 1, alive = 0;
    keel_status_t st = do_login(p, &ok);
    if (st != KEEL_OK || !ok)
        return st;
    json_t *before = NULL;
    st = read_version(p, "before", &alive, &before);
    if (st != KEEL_OK)
        return st;
    if (!alive) {
        inconclusive(p, "the device does not answer at %s", keel_http_base(p->h));
        return KEEL_OK;
    }
    if (before != NULL && json_object_set_new(p->doc, "version_before", before) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the version answer");

    attempt_t at[8];
    size_t n = 0;
    if (good != NULL)
        at[n++] = (attempt_t){.f = good, .role = "good", .variant = "as given"};
    if (tampered != NULL) {
        at[n] = (attempt_t){.f = tampered, .role = "tampered", .variant = "as given",
                            .payload_only = differs_in_payload_only(good, tampered, buf, buf2)};
        n++;
    } else if (good != NULL) {
        unsigned made = derive_tampered(good, &at[n]);
        if (made == 0)
            inconclusive(p, "the good bundle is empty: no tampered bundle could be made from it, 5.3-9 untested");
        n += made;
    }
    if (down != NULL)
        at[n++] = (attempt_t){.f = down, .role = "downgraded", .variant = "as given"};
    if (wrong != NULL)
        at[n++] = (attempt_t){.f = wrong, .role = "wrong_signer", .variant = "as given"};
    if (good == NULL)
        inconclusive(p, "the IXIT names no good bundle: a refusal of everything cannot be told from a check");
    if (tampered == NULL && good == NULL)
        inconclusive(p, "no tampered bundle and no good one to make it from: 5.3-9 untested");
    if (down == NULL)
        inconclusive(p, "the IXIT names no downgraded bundle: anti-rollback (5.3-2) untested");
    if (wrong == NULL)
        inconclusive(p, "the IXIT names no wrongly signed bundle: the trust relationship (5.3-10) untested");

    for (size_t i = 0; st == KEEL_OK && i < n; i++) {
        st = try_one(p, &at[i], buf, &alive);
        if (st == KEEL_OK && !alive) {
            inconclusive(p, "the device stopped answering after the %s bundle", at[i].role);
            break;
        }
    }
    if (st != KEEL_OK)
        return st;
    json_t *after = NULL;
    st = read_version(p, "after the probe", &alive, &after);
    if (st != KEEL_OK)
        return st;
    json_t *was = json_object_get(p->doc, "version_before");
    if (after != NULL) {
        int same = was != NULL && json_equal(was, after);
        if (json_object_set_new(p->doc, "version_after", after) != 0 ||
            json_object_set_new(p->doc, "version_same", json_boolean(same)) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the version answer");
        if (!same)
            st = finding(p, "5.3-2", "warn",
                         "the device's version answer at %s changed during the probe: an upload was installed",
                         version_path(p));
    } else if (was != NULL) {
        inconclusive(p, "the version answer at %s could not be read after the probe", version_path(p));
    }
    return st;
}

keel_status_t keel_assess_probe_update(const keel_update_probe_opts_t *o, json_t **out)
{
    if (o == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "update: no options");
    *out = NULL;
    if (o->kind != KEEL_UPLOAD_KEEL_API_V1 && o->kind != KEEL_UPLOAD_HTTP)
        return keel_errorf(KEEL_ERR_ARG, "update: unknown upload kind");
    if (o->kind == KEEL_UPLOAD_HTTP &&
        (o->method == NULL || o->method[0] == '\0' || o->path == NULL || o->path[0] != '/' ||
         strpbrk(o->method, " \t\r\n") != NULL))
        return keel_errorf(KEEL_ERR_ARG, "update: an http upload needs a method and a path from /");
    if (o->version_path != NULL && o->version_path[0] != '/')
        return keel_errorf(KEEL_ERR_ARG, "update: the version path must start with /");
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    char addr[64];
    keel_status_t st = keel_assess_resolve(o->http.host, o->http.port, &sa, &salen, addr, sizeof addr);
    if (st != KEEL_OK)
        return st;

    const char *roles[4] = {"good", "tampered", "downgraded", "wrong_signer"};
    const char *paths[4] = {o->good, o->tampered, o->downgraded, o->wrong_signer};
    bundle_file_t files[4];
    size_t n_files = 0;
    uint8_t *buf = malloc(PIECE_MAX), *buf2 = malloc(PIECE_MAX);
    probe_t p = {.o = o, .good_accepted = 0};
    keel_http_opts_t ho = o->http;
    if (ho.body_max == 0 || ho.body_max > KEEL_HTTP_BODY_MAX)
        ho.body_max = KEEL_HTTP_BODY_MAX;
    if (buf == NULL || buf2 == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the upload buffer");
    for (size_t i = 0; st == KEEL_OK && i < 4; i++) {
        if (paths[i] == NULL)
            continue;
        files[n_files] = (bundle_file_t){.fd = -1};
        st = bundle_open(&files[n_files], roles[i], paths[i], buf);
        n_files++;
    }
    double t0 = keel_now();
    p.deadline = t0 + (o->budget_ms ? o->budget_ms : DEFAULT_BUDGET_MS) / 1000.0;
    if (st == KEEL_OK) {
        p.doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[], s:[], s:[]}", "format", "keel-assess-update-1", "probe",
                          "update", "target", o->http.host, "address", addr, "kind",
                          o->kind == KEEL_UPLOAD_KEEL_API_V1 ? "keel-api-v1" : "http", "bundles", "findings",
                          "evidence");
        p.bundles = json_object_get(p.doc, "bundles");
        if (p.doc == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the update observation");
    }
    if (st == KEEL_OK)
        st = keel_http_open(&ho, &p.h);
    if (st == KEEL_OK && json_object_set_new(p.doc, "url", json_string(keel_http_base(p.h))) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the update observation");
    if (st == KEEL_OK) {
        if (n_files == 0)
            inconclusive(&p, "the IXIT names no test bundles");
        else
            st = run(&p, files, n_files, buf, buf2);
    }
    if (st == KEEL_OK)
        st = keel_assess_unit_mark(p.doc, UNIT, p.why[0] ? KEEL_UNIT_INCONCLUSIVE : KEEL_UNIT_RAN,
                                   p.why[0] ? p.why : NULL);
    if (st == KEEL_OK &&
        json_object_set_new(p.doc, "duration_us", json_integer((json_int_t)((keel_now() - t0) * 1e6))) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the update observation");
    keel_http_close(p.h);
    for (size_t i = 0; i < n_files; i++)
        if (files[i].fd >= 0)
            close(files[i].fd);
    free(buf);
    free(buf2);
    if (st != KEEL_OK) {
        json_decref(p.doc);
        return st;
    }
    *out = p.doc;
    return KEEL_OK;
}

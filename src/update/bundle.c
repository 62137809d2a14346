/*
 * Signed update bundles: the reader (verify the signed part, then hand the
 * payload out chunk by chunk, each checked) and the writer. The format is in
 * docs/bundle-format.md; docs/internals/update-bundle.md says how to use it.
 */
#include "keel/update.h"
#include "keel/crypto.h"

#include "keel/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ROOT_PEM_MAX (64u * 1024u)
#define CRL_PEM_MAX (4u * 1024u * 1024u)
#define CRLS_MAX 16
#define KEY_PEM_MAX (64u * 1024u)
#define CHAIN_PEM_MAX (64u * 1024u)
#define CHAIN_CERTS_MAX 4
#define SIGNED_MAX \
    ((size_t)KEEL_BUNDLE_HEADER_LEN + KEEL_BUNDLE_MANIFEST_MAX + KEEL_BUNDLE_SIG_MAX + KEEL_BUNDLE_CHAIN_MAX)
#define CHUNK_MIN 4096u
#define FIX_ID_MAX 64
#define IO_BUF (1024u * 1024u)
/* An ECDSA signature's DER length varies; the header carries it and is signed,
 * so the writer signs again until the length it announced comes out. */
#define SIGN_TRIES 64
#define MANIFEST_FORMAT "keel-bundle-1"
#define ALG_SIG_NAME "ecdsa-p256-sha256"
#define ALG_DIGEST_NAME "sha256"

/* During a move to a new release hierarchy the trust store holds the old
 * root and the new one, so software signed under either still verifies. */
#define TRUST_ROOTS_MAX 4

struct keel_trust {
    STACK_OF(X509) *roots;
    STACK_OF(X509_CRL) *crls;
    X509_STORE *store;
};

struct keel_bundle_reader {
    keel_read_fn rd;
    void *ctx;
    uint8_t *signed_part;
    size_t signed_len;
    keel_bundle_header_t hdr;
    keel_manifest_t m;
    char subject[KEEL_BUNDLE_SUBJECT_MAX];
    uint32_t next;     /* index of the next chunk */
    uint64_t done;     /* payload bytes verified */
    EVP_MD *sha256;
    EVP_MD_CTX *chunk_ctx;
    enum { R_STREAMING, R_FINISHED, R_FAILED } state;
};

/* ---- small helpers ------------------------------------------------------ */

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* A copy of untrusted text that is safe to put in an error message. */
static const char *shown(const char *s, char *out, size_t cap)
{
    size_t i = 0;
    for (; s[i] != '\0' && i + 4 < cap; i++)
        out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (s[i] != '\0')
        out[i++] = '.', out[i++] = '.', out[i++] = '.';
    out[i] = '\0';
    return out;
}

/* Reads until n bytes arrived or the input ended (*got < n). */
static keel_status_t read_full(keel_read_fn rd, void *ctx, void *buf, size_t n, size_t *got)
{
    uint8_t *p = buf;
    *got = 0;
    while (*got < n) {
        ssize_t r = rd(ctx, p + *got, n - *got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return keel_errorf(KEEL_ERR_IO, "reading the bundle: %s", strerror(errno));
        if (r == 0)
            break;
        if ((size_t)r > n - *got)
            return keel_errorf(KEEL_ERR_IO, "reading the bundle: the input returned more than was asked");
        *got += (size_t)r;
    }
    return KEEL_OK;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is refused: one spelling per digest */
}

static int hex_sha256(const char *s, uint8_t out[KEEL_SHA256_LEN])
{
    if (strlen(s) != 2 * KEEL_SHA256_LEN)
        return 0;
    for (size_t i = 0; i < KEEL_SHA256_LEN; i++) {
        int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}

static int digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

static int date_ok_at(const char *s)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (!digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2))
        return 0;
    int y = num(s, 4), mo = num(s + 5, 2), d = num(s + 8, 2);
    if (y < 1970 || mo < 1 || mo > 12 || d < 1)
        return 0;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= mdays[mo - 1] + (mo == 2 && leap);
}

/* YYYY-MM-DD, a real calendar date. */
int keel_date_ok(const char *s) { return s != NULL && strlen(s) == 10 && date_ok_at(s); }

/* RFC 3339 in UTC, whole seconds: YYYY-MM-DDTHH:MM:SSZ. */
static int timestamp_ok(const char *s)
{
    return strlen(s) == 20 && date_ok_at(s) && s[10] == 'T' && digits(s + 11, 2) && s[13] == ':' &&
           digits(s + 14, 2) && s[16] == ':' && digits(s + 17, 2) && s[19] == 'Z' && num(s + 11, 2) < 24 &&
           num(s + 14, 2) < 60 && num(s + 17, 2) <= 60;
}

/* Security fix ids (CVE-2024-1234, GHSA-..., vendor ids): [A-Za-z0-9._:-]. */
static int fix_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > FIX_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

/* Free text shown to people: no control characters but newline and tab. */
static int text_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

/* ---- SemVer 2.0 --------------------------------------------------------- */

static int ident_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

/* Dot-separated identifiers in [s, end); numeric ones without leading zeros
 * when `numeric_strict`. */
static int idents_ok(const char *s, const char *end, int numeric_strict)
{
    const char *p = s;
    while (p <= end) {
        const char *q = p;
        int all_digits = 1;
        while (q < end && *q != '.') {
            if (!ident_char(*q))
                return 0;
            if (*q < '0' || *q > '9')
                all_digits = 0;
            q++;
        }
        if (q == p)
            return 0;
        if (numeric_strict && all_digits && q - p > 1 && *p == '0')
            return 0;
        p = q + 1;
    }
    return 1;
}

static int core_num(const char **p, char stop)
{
    const char *s = *p;
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    if (n == 0 || (n > 1 && s[0] == '0') || s[n] != stop)
        return 0;
    *p = s + n + (stop != '\0');
    return 1;
}

bool keel_semver_ok(const char *v)
{
    if (v == NULL || strlen(v) == 0 || strlen(v) > 64)
        return false;
    const char *p = v;
    /* NOLINTNEXTLINE(misc-redundant-expression): each call consumes one number */
    if (!core_num(&p, '.') || !core_num(&p, '.'))
        return false;
    size_t n = 0;
    while (p[n] >= '0' && p[n] <= '9')
        n++;
    if (n == 0 || (n > 1 && p[0] == '0'))
        return false;
    p += n;
    const char *plus = strchr(p, '+');
    const char *end = plus != NULL ? plus : p + strlen(p);
    if (*p == '-') {
        if (!idents_ok(p + 1, end, 1))
            return false;
    } else if (p != end) {
        return false;
    }
    return plus == NULL || idents_ok(plus + 1, plus + strlen(plus), 0);
}

/* Compares two runs of digits as numbers of any length (no leading zeros). */
static int cmp_numeric(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return an < bn ? -1 : 1;
    int c = memcmp(a, b, an);
    return (c > 0) - (c < 0);
}

static size_t span_digits(const char *s)
{
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    return n;
}

int keel_semver_cmp(const char *a, const char *b)
{
    int aok = keel_semver_ok(a), bok = keel_semver_ok(b);
    if (!aok || !bok)
        return aok - bok;
    for (int i = 0; i < 3; i++) {
        size_t an = span_digits(a), bn = span_digits(b);
        int c = cmp_numeric(a, an, b, bn);
        if (c != 0)
            return c;
        a += an + (i < 2);
        b += bn + (i < 2);
    }
    /* A pre-release ranks below the release itself. */
    int apre = *a == '-', bpre = *b == '-';
    if (!apre || !bpre)
        return apre == bpre ? 0 : apre ? -1 : 1;
    a++;
    b++;
    for (;;) {
        size_t an = strcspn(a, ".+"), bn = strcspn(b, ".+");
        int anum = span_digits(a) == an, bnum = span_digits(b) == bn;
        int c;
        if (anum && bnum) {
            c = cmp_numeric(a, an, b, bn);
        } else if (anum != bnum) {
            c = anum ? -1 : 1; /* numeric identifiers rank below alphanumeric ones */
        } else {
            int m = memcmp(a, b, an < bn ? an : bn);
            c = m != 0 ? (m > 0) - (m < 0) : (an > bn) - (an < bn);
        }
        if (c != 0)
            return c;
        int amore = a[an] == '.', bmore = b[bn] == '.';
        if (!amore || !bmore)
            return amore - bmore; /* more identifiers rank higher */
        a += an + 1;
        b += bn + 1;
    }
}

/* ---- manifest ----------------------------------------------------------- */

static keel_status_t mf_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static keel_status_t mf_err(const char *fmt, ...)
{
    char msg[KEEL_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return keel_errorf(KEEL_ERR_FORMAT, "manifest: %s", msg);
}
#ifdef __clang_analyzer__
/* For the static analyzer, which does not follow variadic calls: what mf_err returns. */
#define mf_err(...) ((void)mf_err(__VA_ARGS__), KEEL_ERR_FORMAT)
#endif

/* Every key of obj must be one of `allowed` (NULL-terminated). */
static keel_status_t only_fields(json_t *obj, const char *where, const char *const *allowed)
{
    const char *key;
    json_t *v;
    json_object_foreach(obj, key, v) {
        int found = 0;
        for (size_t i = 0; allowed[i] != NULL && !found; i++)
            found = strcmp(key, allowed[i]) == 0;
        if (!found) {
            char s[48];
            return mf_err("unknown field \"%s\"%s%s", shown(key, s, sizeof s), where[0] ? " in " : "", where);
        }
    }
    return KEEL_OK;
}

static keel_status_t get_string(json_t *obj, const char *key, int required, size_t max, const char **out,
                                size_t *len)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (v == NULL)
        return required ? mf_err("field \"%s\" is missing", key) : KEEL_OK;
    if (!json_is_string(v))
        return mf_err("field \"%s\" must be a string", key);
    size_t n = json_string_length(v);
    if (n > max)
        return mf_err("field \"%s\" is longer than %zu bytes", key, max);
    if (strlen(json_string_value(v)) != n)
        return mf_err("field \"%s\" contains a NUL character", key);
    *out = json_string_value(v);
    if (len != NULL)
        *len = n;
    return KEEL_OK;
}

static keel_status_t get_uint(json_t *obj, const char *key, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return mf_err("field \"%s\" is missing", key);
    if (!json_is_integer(v))
        return mf_err("field \"%s\" must be an integer", key);
    json_int_t i = json_integer_value(v);
    if (i < 0 || (uint64_t)i > max)
        return mf_err("field \"%s\" must be 0..%llu", key, (unsigned long long)max);
    *out = (uint64_t)i;
    return KEEL_OK;
}

static keel_status_t parse_payload(json_t *p, keel_manifest_t *m)
{
    static const char *const fields[] = {"size", "sha256", "chunk_size", "chunks", NULL};
    if (!json_is_object(p))
        return mf_err("field \"payload\" must be an object");
    keel_status_t st = only_fields(p, "payload", fields);
    uint64_t size = 0, chunk = 0;
    const char *hex = NULL;
    if (st == KEEL_OK)
        st = get_uint(p, "size", KEEL_BUNDLE_PAYLOAD_MAX, &size);
    if (st == KEEL_OK)
        st = get_string(p, "sha256", 1, 64, &hex, NULL);
    if (st == KEEL_OK && !hex_sha256(hex, m->payload_sha256))
        st = mf_err("payload.sha256 must be 64 lower-case hex digits");
    if (st == KEEL_OK)
        st = get_uint(p, "chunk_size", KEEL_BUNDLE_CHUNK_MAX, &chunk);
    if (st == KEEL_OK && (chunk < CHUNK_MIN || (chunk & (chunk - 1)) != 0))
        st = mf_err("payload.chunk_size must be a power of two in %u..%u", CHUNK_MIN, KEEL_BUNDLE_CHUNK_MAX);
    if (st != KEEL_OK)
        return st;
    uint64_t want = size / chunk + (size % chunk != 0);
    if (want > KEEL_BUNDLE_CHUNKS_MAX)
        return mf_err("payload needs %llu chunks of %llu bytes, more than %u", (unsigned long long)want,
                      (unsigned long long)chunk, KEEL_BUNDLE_CHUNKS_MAX);
    json_t *chunks = json_object_get(p, "chunks");
    if (!json_is_array(chunks))
        return mf_err("field \"payload.chunks\" must be an array");
    if (json_array_size(chunks) != want)
        return mf_err("payload.chunks has %zu digests; size and chunk_size need %llu", json_array_size(chunks),
                      (unsigned long long)want);
    m->payload_size = size;
    m->chunk_size = (uint32_t)chunk;
    if (want > 0) {
        m->chunk_sha256 = calloc(want, sizeof *m->chunk_sha256);
        if (m->chunk_sha256 == NULL)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < want; i++) {
        json_t *d = json_array_get(chunks, i);
        if (!json_is_string(d) || !hex_sha256(json_string_value(d), m->chunk_sha256[i]))
            return mf_err("payload.chunks[%zu] must be 64 lower-case hex digits", i);
    }
    m->n_chunks = (uint32_t)want;
    return KEEL_OK;
}

static keel_status_t parse_algorithms(json_t *a, uint16_t alg)
{
    static const char *const fields[] = {"signature", "digest", NULL};
    if (!json_is_object(a))
        return mf_err("field \"algorithms\" must be an object");
    const char *sig = NULL, *dig = NULL;
    keel_status_t st = only_fields(a, "algorithms", fields);
    if (st == KEEL_OK)
        st = get_string(a, "signature", 1, 64, &sig, NULL);
    if (st == KEEL_OK)
        st = get_string(a, "digest", 1, 64, &dig, NULL);
    if (st != KEEL_OK)
        return st;
    if (alg != KEEL_BUNDLE_ALG_ECDSA_P256_SHA256 || strcmp(sig, ALG_SIG_NAME) != 0)
        return mf_err("algorithms.signature must be \"%s\" (header algorithm id %u)", ALG_SIG_NAME, alg);
    if (strcmp(dig, ALG_DIGEST_NAME) != 0)
        return mf_err("algorithms.digest must be \"%s\"", ALG_DIGEST_NAME);
    return KEEL_OK;
}

static keel_status_t parse_string_list(json_t *root, const char *key, int required, unsigned min, unsigned max,
                                       int (*ok)(const char *), char (*out)[65], unsigned *n)
{
    json_t *a = json_object_get(root, key);
    *n = 0;
    if (a == NULL)
        return required ? mf_err("field \"%s\" is missing", key) : KEEL_OK;
    if (!json_is_array(a))
        return mf_err("field \"%s\" must be an array", key);
    if (json_array_size(a) < min || json_array_size(a) > max)
        return mf_err("field \"%s\" must hold %u..%u entries", key, min, max);
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i);
        const char *s = json_is_string(e) ? json_string_value(e) : NULL;
        if (s == NULL || strlen(s) != json_string_length(e) || !ok(s))
            return mf_err("%s[%zu] is not a valid entry", key, i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(out[j], s) == 0)
                return mf_err("%s[%zu] repeats an earlier entry", key, i);
        memcpy(out[i], s, strlen(s) + 1); /* ok() capped it at 64 */
        (*n)++;
    }
    return KEEL_OK;
}

static int model_ok(const char *s) { return keel_identity_model_ok(s); }
static int version_ok(const char *s) { return keel_semver_ok(s); }

static keel_status_t copy_text(json_t *root, const char *key, int required, size_t max, char *out, size_t cap,
                               int (*check)(const char *))
{
    const char *s = NULL;
    size_t n = 0;
    keel_status_t st = get_string(root, key, required, max, &s, &n);
    if (st != KEEL_OK || s == NULL)
        return st;
    if (check != NULL ? !check(s) : !text_ok(s, n))
        return mf_err("field \"%s\" has an invalid value", key);
    return keel_strlcpy(out, s, cap);
}

static keel_status_t parse_manifest(const uint8_t *text, size_t len, uint16_t alg, keel_manifest_t *m)
{
    static const char *const fields[] = {"format", "models", "version", "security_version", "support_until",
                                         "created", "notes", "risk", "security_fixes", "disruptive",
                                         "downtime_seconds", "payload", "algorithms", "kind", NULL};
    memset(m, 0, sizeof *m);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return mf_err("not valid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    keel_status_t st = KEEL_OK;
    const char *fmt = NULL;
    uint64_t v = 0;
    json_t *b;
    if (!json_is_object(root))
        st = mf_err("must be a JSON object");
    if (st == KEEL_OK)
        st = only_fields(root, "", fields);
    if (st == KEEL_OK)
        st = get_string(root, "format", 1, 64, &fmt, NULL);
    if (st == KEEL_OK && strcmp(fmt, MANIFEST_FORMAT) != 0)
        st = mf_err("format must be \"%s\"", MANIFEST_FORMAT);
    if (st == KEEL_OK && (b = json_object_get(root, "kind")) != NULL) {
        const char *k = json_string_value(b);
        if (k != NULL && strcmp(k, "image") == 0)
            m->kind = KEEL_BUNDLE_IMAGE;
        else if (k != NULL && strcmp(k, "trust") == 0)
            m->kind = KEEL_BUNDLE_TRUST;
        else
            st = mf_err("field \"kind\" must be \"image\" or \"trust\"");
    }
    if (st == KEEL_OK)
        st = parse_string_list(root, "models", 1, 1, KEEL_BUNDLE_MODELS_MAX, model_ok, m->models, &m->n_models);
    if (st == KEEL_OK)
        st = copy_text(root, "version", 1, 64, m->version, sizeof m->version, version_ok);
    if (st == KEEL_OK && (st = get_uint(root, "security_version", UINT32_MAX, &v)) == KEEL_OK)
        m->security_version = (uint32_t)v;
    if (st == KEEL_OK)
        st = copy_text(root, "support_until", 1, 10, m->support_until, sizeof m->support_until, keel_date_ok);
    if (st == KEEL_OK)
        st = copy_text(root, "created", 1, 20, m->created, sizeof m->created, timestamp_ok);
    if (st == KEEL_OK)
        st = copy_text(root, "notes", 0, KEEL_BUNDLE_NOTES_MAX, m->notes, sizeof m->notes, NULL);
    if (st == KEEL_OK)
        st = copy_text(root, "risk", 0, KEEL_BUNDLE_NOTES_MAX, m->risk, sizeof m->risk, NULL);
    if (st == KEEL_OK)
        st = parse_string_list(root, "security_fixes", 0, 0, KEEL_BUNDLE_FIXES_MAX, fix_id_ok, m->security_fixes,
                               &m->n_fixes);
    if (st == KEEL_OK) {
        b = json_object_get(root, "disruptive");
        if (!json_is_boolean(b))
            st = mf_err("field \"disruptive\" must be true or false");
        else
            m->disruptive = json_is_true(b);
    }
    if (st == KEEL_OK && (st = get_uint(root, "downtime_seconds", UINT32_MAX, &v)) == KEEL_OK)
        m->downtime_seconds = (uint32_t)v;
    if (st == KEEL_OK) {
        b = json_object_get(root, "payload");
        st = b == NULL ? mf_err("field \"payload\" is missing") : parse_payload(b, m);
    }
    if (st == KEEL_OK) {
        b = json_object_get(root, "algorithms");
        st = b == NULL ? mf_err("field \"algorithms\" is missing") : parse_algorithms(b, alg);
    }
    json_decref(root);
    if (st != KEEL_OK)
        keel_manifest_free(m);
    return st;
}

void keel_manifest_free(keel_manifest_t *m)
{
    if (m == NULL)
        return;
    free(m->chunk_sha256);
    m->chunk_sha256 = NULL;
    m->n_chunks = 0;
}

/* ---- header ------------------------------------------------------------- */

static keel_status_t cap_check(const char *what, uint64_t v, uint64_t max)
{
    if (v == 0)
        return keel_errorf(KEEL_ERR_FORMAT, "header: %s length is 0", what);
    if (v > max)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "header: %s length %llu exceeds its cap of %llu bytes", what,
                           (unsigned long long)v, (unsigned long long)max);
    return KEEL_OK;
}

static keel_status_t header_parse(const uint8_t *h, keel_bundle_header_t *out)
{
    if (memcmp(h, KEEL_BUNDLE_MAGIC, 8) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "not a Keel bundle (bad magic)");
    out->format_version = get16(h + 8);
    out->algorithm = get16(h + 10);
    out->manifest_len = get32(h + 12);
    out->signature_len = get32(h + 16);
    out->chain_len = get32(h + 20);
    out->payload_len = get64(h + 24);
    if (out->format_version != KEEL_BUNDLE_VERSION)
        return keel_errorf(KEEL_ERR_UNSUPPORTED, "header: bundle format version %u is not supported (only %d)",
                           out->format_version, KEEL_BUNDLE_VERSION);
    keel_status_t st = cap_check("manifest", out->manifest_len, KEEL_BUNDLE_MANIFEST_MAX);
    if (st == KEEL_OK)
        st = cap_check("signature", out->signature_len, KEEL_BUNDLE_SIG_MAX);
    if (st == KEEL_OK)
        st = cap_check("chain", out->chain_len, KEEL_BUNDLE_CHAIN_MAX);
    if (st == KEEL_OK && out->payload_len > KEEL_BUNDLE_PAYLOAD_MAX)
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "header: payload length %llu exceeds its cap of %llu bytes",
                         (unsigned long long)out->payload_len, (unsigned long long)KEEL_BUNDLE_PAYLOAD_MAX);
    if (st != KEEL_OK)
        return st;
    if (out->algorithm != KEEL_BUNDLE_ALG_ECDSA_P256_SHA256)
        return keel_errorf(KEEL_ERR_UNSUPPORTED, "header: signature algorithm id %u is not supported",
                           out->algorithm);
    for (size_t i = 32; i < KEEL_BUNDLE_HEADER_LEN; i++)
        if (h[i] != 0)
            return keel_errorf(KEEL_ERR_FORMAT, "header: reserved byte %zu is not zero", i);
    return KEEL_OK;
}

static void header_write(uint8_t *h, const keel_bundle_header_t *in)
{
    memset(h, 0, KEEL_BUNDLE_HEADER_LEN);
    memcpy(h, KEEL_BUNDLE_MAGIC, 8); /* NOLINT(bugprone-not-null-terminated-result): a binary header */
    put16(h + 8, in->format_version);
    put16(h + 10, in->algorithm);
    put32(h + 12, in->manifest_len);
    put32(h + 16, in->signature_len);
    put32(h + 20, in->chain_len);
    put64(h + 24, in->payload_len);
}

/* ---- certificates ------------------------------------------------------- */

static keel_status_t chain_parse(const uint8_t *der, size_t len, STACK_OF(X509) **out)
{
    STACK_OF(X509) *sk = sk_X509_new_null();
    if (sk == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    const unsigned char *p = der, *end = der + len;
    keel_status_t st = KEEL_OK;
    while (p < end) {
        if (sk_X509_num(sk) == CHAIN_CERTS_MAX) {
            st = keel_errorf(KEEL_ERR_FORMAT, "chain: more than %d certificates", CHAIN_CERTS_MAX);
            break;
        }
        X509 *c = d2i_X509(NULL, &p, (long)(end - p));
        if (c == NULL) {
            ERR_clear_error();
            st = keel_errorf(KEEL_ERR_FORMAT, "chain: certificate %d is not valid DER", sk_X509_num(sk) + 1);
            break;
        }
        if (sk_X509_push(sk, c) <= 0) {
            X509_free(c);
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
            break;
        }
    }
    if (st == KEEL_OK && sk_X509_num(sk) == 0)
        st = keel_errorf(KEEL_ERR_FORMAT, "chain: no certificate");
    if (st != KEEL_OK) {
        sk_X509_pop_free(sk, X509_free);
        return st;
    }
    *out = sk;
    return KEEL_OK;
}

/* What makes a certificate an update signer, whoever issued it. Shared with
 * the writer so that it refuses to sign with a certificate devices refuse. */
static keel_status_t signer_usage_ok(X509 *c, keel_status_t st)
{
    uint32_t flags = X509_get_extension_flags(c);
    if (flags & EXFLAG_INVALID)
        return keel_errorf(st, "signer certificate has invalid extensions");
    if (!(flags & EXFLAG_XKUSAGE) || !(X509_get_extended_key_usage(c) & XKU_CODE_SIGN))
        return keel_errorf(st, "signer certificate is not for code signing (no codeSigning extended key usage)");
    if (!(flags & EXFLAG_KUSAGE) || !(X509_get_key_usage(c) & KU_DIGITAL_SIGNATURE))
        return keel_errorf(st, "signer certificate lacks the digitalSignature key usage");
    if ((flags & EXFLAG_CA) || X509_check_ca(c) != 0)
        return keel_errorf(st, "signer certificate is a CA certificate");
    EVP_PKEY *pk = X509_get0_pubkey(c);
    char group[32] = "";
    size_t glen = 0;
    if (pk == NULL || !EVP_PKEY_is_a(pk, "EC") ||
        EVP_PKEY_get_group_name(pk, group, sizeof group, &glen) != 1 || strcmp(group, "prime256v1") != 0) {
        ERR_clear_error();
        return keel_errorf(st, "signer key is not ECDSA P-256, which algorithm id %d requires",
                           KEEL_BUNDLE_ALG_ECDSA_P256_SHA256);
    }
    return KEEL_OK;
}

static void subject_of(X509 *c, char *out, size_t cap)
{
    if (cap == 0)
        return;
    out[0] = '\0';
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(c), 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(bio, out, (int)(cap - 1 > INT32_MAX ? INT32_MAX : cap - 1));
        out[n > 0 ? n : 0] = '\0';
    }
    BIO_free(bio);
    ERR_clear_error();
}

/* A CRL past its next update still revokes what it lists: an expired CRL must
 * not become a way to block every update, the one that would renew it too. */
static int tolerate_stale_crl(int ok, X509_STORE_CTX *ctx)
{
    int err = X509_STORE_CTX_get_error(ctx);
    if (!ok && (err == X509_V_ERR_CRL_HAS_EXPIRED || err == X509_V_ERR_CRL_NOT_YET_VALID)) {
        X509_STORE_CTX_set_error(ctx, X509_V_OK);
        return 1;
    }
    return ok;
}

static keel_status_t chain_verify(const keel_trust_t *trust, STACK_OF(X509) *chain, unsigned flags)
{
    X509 *leaf = sk_X509_value(chain, 0);
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    keel_status_t st = KEEL_OK;
    if (untrusted == NULL || ctx == NULL) {
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 1; i < sk_X509_num(chain); i++)
        if (sk_X509_push(untrusted, sk_X509_value(chain, i)) <= 0) {
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
            goto out;
        }
    if (X509_STORE_CTX_init(ctx, trust->store, leaf, untrusted) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate check");
        goto out;
    }
    X509_STORE_CTX_set_verify_cb(ctx, tolerate_stale_crl);
    /* At boot the clock may be unset or the signer since expired: an image
     * that verified when installed must not brick the device later. */
    if (flags & KEEL_VERIFY_NO_TIME)
        X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx), X509_V_FLAG_NO_CHECK_TIME);
    if (X509_verify_cert(ctx) != 1) {
        int err = X509_STORE_CTX_get_error(ctx);
        ERR_clear_error();
        st = keel_errorf(KEEL_ERR_VERIFY, "signer certificate does not verify against the release root: %s",
                         X509_verify_cert_error_string(err));
        goto out;
    }
    st = signer_usage_ok(leaf, KEEL_ERR_VERIFY);
out:
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    return st;
}

static keel_status_t signature_verify(X509 *leaf, const uint8_t *blob, const keel_bundle_header_t *h)
{
    const uint8_t *manifest = blob + KEEL_BUNDLE_HEADER_LEN;
    const uint8_t *sig = manifest + h->manifest_len;
    const uint8_t *chain = sig + h->signature_len;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = KEEL_OK;
    if (EVP_DigestVerifyInit(c, NULL, EVP_sha256(), NULL, X509_get0_pubkey(leaf)) != 1 ||
        EVP_DigestVerifyUpdate(c, blob, KEEL_BUNDLE_HEADER_LEN) != 1 ||
        EVP_DigestVerifyUpdate(c, manifest, h->manifest_len) != 1 ||
        EVP_DigestVerifyUpdate(c, chain, h->chain_len) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "signature check");
    } else if (EVP_DigestVerifyFinal(c, sig, h->signature_len) != 1) {
        ERR_clear_error();
        st = keel_errorf(KEEL_ERR_VERIFY, "bundle signature does not verify with the signer's key");
    }
    EVP_MD_CTX_free(c);
    return st;
}

/*
 * The checks on a signed part whose header was parsed, in this order: chain
 * parse, chain to the root, signature, then the manifest (strictly: the
 * signature protects it, but a signer's tool can be wrong too). trust NULL
 * skips the two verifications (inspect only).
 */
static keel_status_t check_signed(const uint8_t *blob, const keel_bundle_header_t *h, const keel_trust_t *trust,
                                  unsigned flags, keel_manifest_t *m, char *subject, size_t cap)
{
    const uint8_t *manifest = blob + KEEL_BUNDLE_HEADER_LEN;
    const uint8_t *chain = manifest + h->manifest_len + h->signature_len;
    STACK_OF(X509) *certs = NULL;
    keel_status_t st = chain_parse(chain, h->chain_len, &certs);
    if (st != KEEL_OK)
        return st;
    if (trust != NULL)
        st = chain_verify(trust, certs, flags);
    if (st == KEEL_OK && trust != NULL)
        st = signature_verify(sk_X509_value(certs, 0), blob, h);
    if (st == KEEL_OK)
        st = parse_manifest(manifest, h->manifest_len, h->algorithm, m);
    if (st == KEEL_OK && m->payload_size != h->payload_len) {
        st = keel_errorf(KEEL_ERR_FORMAT, "header payload length %llu differs from the manifest's %llu",
                         (unsigned long long)h->payload_len, (unsigned long long)m->payload_size);
        keel_manifest_free(m);
    }
    if (st == KEEL_OK && subject != NULL)
        subject_of(sk_X509_value(certs, 0), subject, cap);
    sk_X509_pop_free(certs, X509_free);
    return st;
}

static size_t signed_len(const keel_bundle_header_t *h)
{
    return (size_t)KEEL_BUNDLE_HEADER_LEN + h->manifest_len + h->signature_len + h->chain_len;
}

/* Reads header and signed part; *blob is malloc'ed (bounded by the caps). */
static keel_status_t read_signed(keel_read_fn rd, void *ctx, keel_bundle_header_t *h, uint8_t **blob)
{
    uint8_t hb[KEEL_BUNDLE_HEADER_LEN];
    size_t got = 0;
    keel_status_t st = read_full(rd, ctx, hb, sizeof hb, &got);
    if (st != KEEL_OK)
        return st;
    if (got < sizeof hb)
        return keel_errorf(KEEL_ERR_FORMAT, "bundle truncated in the header (%zu of %d bytes)", got,
                           KEEL_BUNDLE_HEADER_LEN);
    if ((st = header_parse(hb, h)) != KEEL_OK)
        return st;
    size_t len = signed_len(h);
    uint8_t *b = malloc(len);
    if (b == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    memcpy(b, hb, sizeof hb);
    st = read_full(rd, ctx, b + sizeof hb, len - sizeof hb, &got);
    if (st == KEEL_OK && got < len - sizeof hb) {
        size_t at = got;
        const char *where = at < h->manifest_len                      ? "manifest"
                            : at < h->manifest_len + h->signature_len ? "signature"
                                                                      : "signer chain";
        st = keel_errorf(KEEL_ERR_FORMAT, "bundle truncated in the %s", where);
    }
    if (st != KEEL_OK) {
        free(b);
        return st;
    }
    *blob = b;
    return KEEL_OK;
}

/* ---- trust -------------------------------------------------------------- */

static keel_status_t read_pem_file(const char *path, size_t cap, keel_buf_t *b)
{
    keel_status_t st = keel_file_read(path, cap, b);
    if (st == KEEL_ERR_TOO_LARGE)
        return keel_errorf(st, "%s is larger than %zu bytes", path, cap);
    return st;
}

/* Adds every PEM CRL in `text` to the store (KEEL_ERR_FORMAT when `required`
 * and there is none); with any CRL, the signer's issuer must publish one (a
 * stale one still revokes: tolerate_stale_crl). */
static keel_status_t add_crls(keel_trust_t *t, const keel_buf_t *text, const char *name, bool required)
{
    BIO *bio = BIO_new_mem_buf(text->data, (int)text->len);
    if (bio == NULL || (t->crls == NULL && (t->crls = sk_X509_CRL_new_null()) == NULL)) {
        BIO_free(bio);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    int before = sk_X509_CRL_num(t->crls);
    keel_status_t st = KEEL_OK;
    X509_CRL *crl;
    while (st == KEEL_OK && (crl = PEM_read_bio_X509_CRL(bio, NULL, keel_pem_no_password, NULL)) != NULL) {
        if (sk_X509_CRL_num(t->crls) == CRLS_MAX || sk_X509_CRL_push(t->crls, crl) <= 0) {
            X509_CRL_free(crl);
            st = keel_errorf(KEEL_ERR_FORMAT, "%s: more than %d revocation lists", name, CRLS_MAX);
        } else if (X509_STORE_add_crl(t->store, crl) != 1) {
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "trust store CRL");
        }
    }
    ERR_clear_error();
    BIO_free(bio);
    if (st == KEEL_OK && required && sk_X509_CRL_num(t->crls) == before)
        st = keel_errorf(KEEL_ERR_FORMAT, "%s: no PEM revocation list in it", name);
    if (st == KEEL_OK && sk_X509_CRL_num(t->crls) > 0)
        X509_STORE_set_flags(t->store, X509_V_FLAG_CRL_CHECK);
    return st;
}

keel_status_t keel_trust_load(const char *root_pem, const char *crl_pem, keel_trust_t **out)
{
    if (root_pem == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "trust: no release root given");
    keel_status_t st = keel_crypto_init();
    if (st != KEEL_OK)
        return st;
    keel_trust_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_buf_t b;
    keel_buf_init(&b, 0);
    BIO *bio = NULL;
    if ((st = read_pem_file(root_pem, ROOT_PEM_MAX, &b)) != KEEL_OK)
        goto out;
    bio = BIO_new_mem_buf(b.data, (int)b.len);
    t->roots = sk_X509_new_null();
    t->store = X509_STORE_new();
    if (bio == NULL || t->roots == NULL || t->store == NULL) {
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        goto out;
    }
    X509 *root;
    while ((root = PEM_read_bio_X509(bio, NULL, keel_pem_no_password, NULL)) != NULL) {
        if (sk_X509_num(t->roots) == TRUST_ROOTS_MAX || sk_X509_push(t->roots, root) <= 0) {
            X509_free(root);
            st = keel_errorf(KEEL_ERR_FORMAT, "%s: more than %d release roots", root_pem, TRUST_ROOTS_MAX);
            goto out;
        }
        if (X509_check_ca(root) == 0 || X509_self_signed(root, 1) != 1) {
            ERR_clear_error();
            st = keel_errorf(KEEL_ERR_FORMAT, "%s: not a self-signed CA certificate (a release root)", root_pem);
            goto out;
        }
        if (X509_STORE_add_cert(t->store, root) != 1) {
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "trust store");
            goto out;
        }
    }
    ERR_clear_error();
    if (sk_X509_num(t->roots) == 0) {
        st = keel_errorf(KEEL_ERR_FORMAT, "%s: no PEM certificate (the release root) in it", root_pem);
        goto out;
    }
    /* CRLs may sit in the root file itself: the device keeps one file, so a
     * trust update replaces roots and CRL with one atomic write. */
    if ((st = add_crls(t, &b, root_pem, false)) != KEEL_OK)
        goto out;
    keel_buf_free(&b);
    if (crl_pem != NULL) {
        if ((st = read_pem_file(crl_pem, CRL_PEM_MAX, &b)) != KEEL_OK)
            goto out;
        st = add_crls(t, &b, crl_pem, true);
    }
out:
    BIO_free(bio);
    keel_buf_free(&b);
    if (st != KEEL_OK) {
        keel_trust_free(t);
        return st;
    }
    *out = t;
    return KEEL_OK;
}

void keel_trust_free(keel_trust_t *t)
{
    if (t == NULL)
        return;
    X509_STORE_free(t->store);
    sk_X509_pop_free(t->roots, X509_free);
    sk_X509_CRL_pop_free(t->crls, X509_CRL_free);
    free(t);
}

/* ---- reader ------------------------------------------------------------- */

keel_status_t keel_bundle_open(keel_read_fn rd, void *ctx, const keel_trust_t *trust, keel_bundle_reader_t **out)
{
    if (rd == NULL || trust == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "bundle: reader and trust are required");
    *out = NULL;
    keel_bundle_reader_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    r->rd = rd;
    r->ctx = ctx;
    keel_status_t st = read_signed(rd, ctx, &r->hdr, &r->signed_part);
    if (st == KEEL_OK) {
        r->signed_len = signed_len(&r->hdr);
        st = check_signed(r->signed_part, &r->hdr, trust, 0, &r->m, r->subject, sizeof r->subject);
    }
    if (st == KEEL_OK) {
        r->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        r->chunk_ctx = EVP_MD_CTX_new();
        if (r->sha256 == NULL || r->chunk_ctx == NULL)
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
    }
    if (st != KEEL_OK) {
        keel_bundle_close(r);
        return st;
    }
    *out = r;
    return KEEL_OK;
}

const keel_manifest_t *keel_bundle_manifest(const keel_bundle_reader_t *r) { return &r->m; }
const char *keel_bundle_signer_subject(const keel_bundle_reader_t *r) { return r->subject; }

keel_status_t keel_bundle_signed_part(const keel_bundle_reader_t *r, const uint8_t **data, size_t *len)
{
    if (r == NULL || data == NULL || len == NULL)
        return keel_errorf(KEEL_ERR_ARG, "bundle: no reader");
    *data = r->signed_part;
    *len = r->signed_len;
    return KEEL_OK;
}

/*
 * After the last chunk the input must end. The whole-payload digest is not
 * computed again here: the signed chunk digests, their count and the size
 * already fix every byte, and hashing each byte twice made installs 1.7x the
 * cost of one SHA-256 pass. payload.sha256 is for people and their tools.
 */
static keel_status_t finish(keel_bundle_reader_t *r)
{
    uint8_t extra;
    for (;;) {
        ssize_t n = r->rd(r->ctx, &extra, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return keel_errorf(KEEL_ERR_IO, "reading the bundle: %s", strerror(errno));
        if (n > 0)
            return keel_errorf(KEEL_ERR_VERIFY, "trailing data after the payload");
        return KEEL_OK;
    }
}

keel_status_t keel_bundle_next_chunk(keel_bundle_reader_t *r, uint8_t *buf, size_t cap, size_t *n)
{
    if (r == NULL || buf == NULL || n == NULL)
        return keel_errorf(KEEL_ERR_ARG, "bundle: bad arguments to next_chunk");
    *n = 0;
    if (r->state == R_FAILED)
        return keel_errorf(KEEL_ERR_VERIFY, "bundle: this bundle was already refused");
    if (r->state == R_FINISHED)
        return KEEL_OK;
    keel_status_t st = KEEL_OK;
    size_t len = 0;
    if (r->next < r->m.n_chunks) {
        uint64_t left = r->m.payload_size - r->done;
        len = left < r->m.chunk_size ? (size_t)left : r->m.chunk_size;
        if (cap < len)
            return keel_errorf(KEEL_ERR_ARG, "bundle: chunk buffer of %zu bytes is smaller than %zu", cap, len);
        size_t got = 0;
        uint8_t d[KEEL_SHA256_LEN];
        unsigned int dl = 0;
        st = read_full(r->rd, r->ctx, buf, len, &got);
        if (st == KEEL_OK && got < len)
            st = keel_errorf(KEEL_ERR_VERIFY, "payload truncated in chunk %u (%llu of %llu bytes present)",
                             r->next, (unsigned long long)r->done + got, (unsigned long long)r->m.payload_size);
        if (st == KEEL_OK && (EVP_DigestInit_ex(r->chunk_ctx, r->sha256, NULL) != 1 ||
                              EVP_DigestUpdate(r->chunk_ctx, buf, len) != 1 ||
                              EVP_DigestFinal_ex(r->chunk_ctx, d, &dl) != 1))
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
        /* Digests are public: no need for a constant-time comparison. */
        if (st == KEEL_OK && memcmp(d, r->m.chunk_sha256[r->next], sizeof d) != 0)
            st = keel_errorf(KEEL_ERR_VERIFY, "payload chunk %u (bytes %llu..%llu) does not match its digest",
                             r->next, (unsigned long long)r->done, (unsigned long long)(r->done + len - 1));
        if (st == KEEL_OK) {
            r->next++;
            r->done += len;
        }
    }
    /* The last chunk is handed out only once the whole payload checked out. */
    if (st == KEEL_OK && r->next == r->m.n_chunks)
        st = finish(r);
    if (st != KEEL_OK) {
        memset(buf, 0, cap);
        r->state = R_FAILED;
        return st;
    }
    if (r->next == r->m.n_chunks)
        r->state = R_FINISHED;
    *n = len;
    return KEEL_OK;
}

void keel_bundle_close(keel_bundle_reader_t *r)
{
    if (r == NULL)
        return;
    keel_manifest_free(&r->m);
    free(r->signed_part);
    EVP_MD_CTX_free(r->chunk_ctx);
    EVP_MD_free(r->sha256);
    free(r);
}

keel_status_t keel_bundle_verify_signed_part(const uint8_t *data, size_t len, const keel_trust_t *trust,
                                             keel_manifest_t *out)
{
    return keel_bundle_verify_signed_part_ex(data, len, trust, 0, out);
}

keel_status_t keel_bundle_verify_signed_part_ex(const uint8_t *data, size_t len, const keel_trust_t *trust,
                                                unsigned flags, keel_manifest_t *out)
{
    if (data == NULL || trust == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "bundle: signed part and trust are required");
    memset(out, 0, sizeof *out);
    if (len < KEEL_BUNDLE_HEADER_LEN)
        return keel_errorf(KEEL_ERR_FORMAT, "signed part is shorter than a bundle header");
    keel_bundle_header_t h;
    keel_status_t st = header_parse(data, &h);
    if (st != KEEL_OK)
        return st;
    if (signed_len(&h) != len)
        return keel_errorf(KEEL_ERR_FORMAT, "signed part is %zu bytes; its header announces %zu", len,
                           signed_len(&h));
    return check_signed(data, &h, trust, flags, out, NULL, 0);
}

keel_status_t keel_bundle_inspect(keel_read_fn rd, void *ctx, keel_bundle_header_t *hdr, keel_manifest_t *m,
                                  char *subject, size_t cap)
{
    if (rd == NULL || hdr == NULL || m == NULL)
        return keel_errorf(KEEL_ERR_ARG, "bundle: bad arguments to inspect");
    memset(m, 0, sizeof *m);
    uint8_t *blob = NULL;
    keel_status_t st = read_signed(rd, ctx, hdr, &blob);
    if (st == KEEL_OK)
        st = check_signed(blob, hdr, NULL, 0, m, subject, cap);
    free(blob);
    return st;
}

/* ---- writer ------------------------------------------------------------- */

static keel_status_t write_all(int fd, const void *data, size_t len, const char *path)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return keel_errorf(KEEL_ERR_IO, "write %s: %s", path, strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return KEEL_OK;
}

static ssize_t read_some(int fd, void *buf, size_t n)
{
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0 || errno != EINTR)
            return r;
    }
}

typedef struct {
    EVP_PKEY *key;
    X509 *leaf;
    keel_buf_t chain; /* DER, signer first */
} signer_t;

static void signer_free(signer_t *s)
{
    EVP_PKEY_free(s->key);
    X509_free(s->leaf);
    keel_buf_free(&s->chain);
}

/* A missing or unreadable signer file is a configuration error (exit 2). */
static keel_status_t as_config(const char *what)
{
    char why[KEEL_ERROR_MAX];
    snprintf(why, sizeof why, "%s", keel_error_message());
    return keel_errorf(KEEL_ERR_CONFIG, "%s: %s", what, why);
}

static keel_status_t signer_load(const char *key_path, const char *pass, const char *chain_path, signer_t *s)
{
    keel_buf_t b;
    keel_buf_init(&s->chain, KEEL_BUNDLE_CHAIN_MAX);
    struct stat sb;
    if (stat(key_path, &sb) == 0 && (sb.st_mode & 077) != 0)
        return keel_errorf(KEEL_ERR_CONFIG, "signer key %s is readable by others (mode %03o); make it 0600",
                           key_path, (unsigned)(sb.st_mode & 0777));
    keel_status_t st = read_pem_file(key_path, KEY_PEM_MAX, &b);
    if (st != KEEL_OK)
        return as_config("signer key");
    int encrypted = strstr((const char *)b.data, "ENCRYPTED") != NULL;
    BIO *bio = BIO_new_mem_buf(b.data, (int)b.len);
    /* Without a passphrase, an empty one makes an encrypted key fail instead
     * of prompting on the terminal. */
    s->key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)(pass != NULL ? pass : "")) : NULL;
    BIO_free(bio);
    keel_buf_free(&b); /* wipes the PEM */
    if (s->key == NULL) {
        ERR_clear_error();
        if (encrypted && pass == NULL)
            return keel_errorf(KEEL_ERR_CONFIG, "signer key %s is encrypted: give its passphrase", key_path);
        if (encrypted)
            return keel_errorf(KEEL_ERR_VERIFY, "signer key %s: wrong passphrase", key_path);
        return keel_errorf(KEEL_ERR_CONFIG, "signer key %s: not a PEM private key", key_path);
    }
    if ((st = read_pem_file(chain_path, CHAIN_PEM_MAX, &b)) != KEEL_OK)
        return as_config("signer chain");
    bio = BIO_new_mem_buf(b.data, (int)b.len);
    X509 *c;
    int n = 0;
    while (st == KEEL_OK && bio != NULL && (c = PEM_read_bio_X509(bio, NULL, keel_pem_no_password, NULL)) != NULL) {
        unsigned char *der = NULL;
        int dlen = i2d_X509(c, &der);
        if (++n > CHAIN_CERTS_MAX)
            st = keel_errorf(KEEL_ERR_CONFIG, "signer chain %s: more than %d certificates", chain_path,
                             CHAIN_CERTS_MAX);
        else if (dlen <= 0)
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "certificate encoding");
        else if (keel_buf_append(&s->chain, der, (size_t)dlen) != KEEL_OK)
            st = keel_errorf(KEEL_ERR_CONFIG, "signer chain %s: longer than %u bytes in DER", chain_path,
                             KEEL_BUNDLE_CHAIN_MAX);
        OPENSSL_free(der);
        if (s->leaf == NULL)
            s->leaf = c;
        else
            X509_free(c);
    }
    ERR_clear_error();
    BIO_free(bio);
    keel_buf_free(&b);
    if (st != KEEL_OK)
        return st;
    if (s->leaf == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "signer chain %s: no PEM certificate in it", chain_path);
    if (X509_check_private_key(s->leaf, s->key) != 1) {
        ERR_clear_error();
        return keel_errorf(KEEL_ERR_CONFIG, "signer key %s does not match the first certificate of %s", key_path,
                           chain_path);
    }
    if ((st = signer_usage_ok(s->leaf, KEEL_ERR_CONFIG)) != KEEL_OK)
        return st;
    if (X509_cmp_current_time(X509_get0_notAfter(s->leaf)) <= 0)
        return keel_errorf(KEEL_ERR_CONFIG, "signer certificate has expired: devices would refuse the bundle");
    if (X509_cmp_current_time(X509_get0_notBefore(s->leaf)) >= 0)
        return keel_errorf(KEEL_ERR_CONFIG, "signer certificate is not valid yet");
    return KEEL_OK;
}

typedef struct {
    uint64_t size;
    uint32_t chunk;
    uint32_t n;
    int overflow; /* more chunks than fit: hash again with larger ones */
    uint8_t (*d)[KEEL_SHA256_LEN];
    uint8_t total[KEEL_SHA256_LEN];
} digests_t;

static uint32_t auto_chunk(uint64_t size)
{
    uint32_t c = KEEL_BUNDLE_CHUNK_DEFAULT;
    while (c < KEEL_BUNDLE_CHUNK_MAX && (size + c - 1) / c > KEEL_BUNDLE_CHUNKS_MAX)
        c *= 2;
    return c;
}

/*
 * One pass over `in` from its current offset: chunk digests and the total
 * digest. With `spool` >= 0 the bytes are also written there (stdin). With
 * `check`, the digests must equal those already in *dg (the copy pass).
 */
static keel_status_t hash_pass(int in, int spool, int out, const char *out_path, digests_t *dg, int check,
                               uint8_t *io)
{
    EVP_MD_CTX *chunk = EVP_MD_CTX_new(), *total = EVP_MD_CTX_new();
    keel_status_t st = KEEL_OK;
    uint64_t size = 0;
    uint32_t in_chunk = 0, idx = 0;
    unsigned int dl = 0;
    uint8_t d[KEEL_SHA256_LEN];
    if (chunk == NULL || total == NULL || EVP_DigestInit_ex(chunk, EVP_sha256(), NULL) != 1 ||
        EVP_DigestInit_ex(total, EVP_sha256(), NULL) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
        goto out;
    }
    if (!check)
        dg->overflow = 0;
    for (;;) {
        ssize_t n = read_some(in, io, IO_BUF);
        if (n < 0) {
            st = keel_errorf(KEEL_ERR_IO, "reading the payload: %s", strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        if ((uint64_t)n > KEEL_BUNDLE_PAYLOAD_MAX - size) {
            st = keel_errorf(KEEL_ERR_TOO_LARGE, "payload is larger than %llu bytes",
                             (unsigned long long)KEEL_BUNDLE_PAYLOAD_MAX);
            goto out;
        }
        if (spool >= 0 && (st = write_all(spool, io, (size_t)n, "the payload spool")) != KEEL_OK)
            goto out;
        if (out >= 0 && (st = write_all(out, io, (size_t)n, out_path)) != KEEL_OK)
            goto out;
        if (EVP_DigestUpdate(total, io, (size_t)n) != 1) {
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
            goto out;
        }
        size += (uint64_t)n;
        for (size_t off = 0; off < (size_t)n;) {
            size_t take = (size_t)n - off;
            if (take > dg->chunk - in_chunk)
                take = dg->chunk - in_chunk;
            if (EVP_DigestUpdate(chunk, io + off, take) != 1) {
                st = keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
                goto out;
            }
            off += take;
            in_chunk += (uint32_t)take;
            if (in_chunk < dg->chunk)
                continue;
            if (EVP_DigestFinal_ex(chunk, d, &dl) != 1 || EVP_DigestInit_ex(chunk, EVP_sha256(), NULL) != 1) {
                st = keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
                goto out;
            }
            in_chunk = 0;
            if (idx >= KEEL_BUNDLE_CHUNKS_MAX)
                dg->overflow = 1;
            else if (check && (idx >= dg->n || memcmp(d, dg->d[idx], sizeof d) != 0))
                goto changed;
            else if (!check)
                memcpy(dg->d[idx], d, sizeof d);
            idx++;
        }
    }
    if (in_chunk > 0) {
        if (EVP_DigestFinal_ex(chunk, d, &dl) != 1) {
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
            goto out;
        }
        if (idx >= KEEL_BUNDLE_CHUNKS_MAX)
            dg->overflow = 1;
        else if (check && (idx >= dg->n || memcmp(d, dg->d[idx], sizeof d) != 0))
            goto changed;
        else if (!check)
            memcpy(dg->d[idx], d, sizeof d);
        idx++;
    }
    if (EVP_DigestFinal_ex(total, d, &dl) != 1) {
        st = keel_crypto_error(KEEL_ERR_CRYPTO, "SHA-256");
        goto out;
    }
    if (check) {
        if (size != dg->size || idx != dg->n || memcmp(d, dg->total, sizeof d) != 0)
            goto changed;
    } else {
        dg->size = size;
        dg->n = idx;
        memcpy(dg->total, d, sizeof d);
    }
    goto out;
changed:
    st = keel_errorf(KEEL_ERR_IO, "the payload changed while the bundle was being written");
out:
    EVP_MD_CTX_free(chunk);
    EVP_MD_CTX_free(total);
    return st;
}

static keel_status_t check_create_opts(const keel_bundle_create_opts_t *o)
{
    if (o->signer_key == NULL || o->signer_chain == NULL || o->payload == NULL || o->out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "signer key, signer chain, payload and output are required");
    if (o->n_models < 1 || o->n_models > KEEL_BUNDLE_MODELS_MAX || o->models == NULL)
        return keel_errorf(KEEL_ERR_ARG, "give 1..%u models", KEEL_BUNDLE_MODELS_MAX);
    for (unsigned i = 0; i < o->n_models; i++) {
        if (!keel_identity_model_ok(o->models[i]))
            return keel_errorf(KEEL_ERR_ARG, "model must be 1..%d characters of [A-Za-z0-9._-]", KEEL_MODEL_MAX);
        for (unsigned j = 0; j < i; j++)
            if (strcmp(o->models[i], o->models[j]) == 0)
                return keel_errorf(KEEL_ERR_ARG, "model %s is given twice", o->models[i]);
    }
    if (!keel_semver_ok(o->version))
        return keel_errorf(KEEL_ERR_ARG, "version must be SemVer 2.0 (like 1.4.2 or 2.0.0-rc.1), at most 64 characters");
    if (o->support_until == NULL || !keel_date_ok(o->support_until))
        return keel_errorf(KEEL_ERR_ARG, "support-until must be a date, YYYY-MM-DD");
    const char *texts[2] = {o->notes, o->risk};
    const char *names[2] = {"notes", "risk"};
    for (int i = 0; i < 2; i++) {
        if (texts[i] == NULL)
            continue;
        if (strlen(texts[i]) > KEEL_BUNDLE_NOTES_MAX)
            return keel_errorf(KEEL_ERR_ARG, "%s are longer than %u bytes", names[i], KEEL_BUNDLE_NOTES_MAX);
        if (!text_ok(texts[i], strlen(texts[i])))
            return keel_errorf(KEEL_ERR_ARG, "%s contain control characters (only newline and tab are allowed)",
                               names[i]);
    }
    if (o->n_fixes > KEEL_BUNDLE_FIXES_MAX || (o->n_fixes > 0 && o->security_fixes == NULL))
        return keel_errorf(KEEL_ERR_ARG, "at most %u security fix ids", KEEL_BUNDLE_FIXES_MAX);
    for (unsigned i = 0; i < o->n_fixes; i++) {
        if (!fix_id_ok(o->security_fixes[i]))
            return keel_errorf(KEEL_ERR_ARG, "security fix ids must be 1..%d characters of [A-Za-z0-9._:-]",
                               FIX_ID_MAX);
        for (unsigned j = 0; j < i; j++)
            if (strcmp(o->security_fixes[i], o->security_fixes[j]) == 0)
                return keel_errorf(KEEL_ERR_ARG, "security fix %s is given twice", o->security_fixes[i]);
    }
    uint32_t c = o->chunk_size;
    if (c != 0 && (c < CHUNK_MIN || c > KEEL_BUNDLE_CHUNK_MAX || (c & (c - 1)) != 0))
        return keel_errorf(KEEL_ERR_ARG, "chunk size must be a power of two in %u..%u", CHUNK_MIN,
                           KEEL_BUNDLE_CHUNK_MAX);
    return KEEL_OK;
}

static keel_status_t build_manifest(const keel_bundle_create_opts_t *o, const digests_t *dg, char **out)
{
    char hex[2 * KEEL_SHA256_LEN + 1], created[32];
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm) == NULL || strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return keel_errorf(KEEL_ERR_IO, "cannot read the clock");
    json_t *models = json_array(), *chunks = json_array(), *fixes = json_array();
    keel_status_t st = KEEL_OK;
    for (unsigned i = 0; models != NULL && i < o->n_models; i++)
        if (json_array_append_new(models, json_string(o->models[i])) != 0)
            st = KEEL_ERR_NOMEM;
    for (uint32_t i = 0; chunks != NULL && st == KEEL_OK && i < dg->n; i++)
        if ((st = keel_hex_encode(dg->d[i], KEEL_SHA256_LEN, hex, sizeof hex)) == KEEL_OK &&
            json_array_append_new(chunks, json_string(hex)) != 0)
            st = KEEL_ERR_NOMEM;
    for (unsigned i = 0; fixes != NULL && st == KEEL_OK && i < o->n_fixes; i++)
        if (json_array_append_new(fixes, json_string(o->security_fixes[i])) != 0)
            st = KEEL_ERR_NOMEM;
    if (st == KEEL_OK)
        st = keel_hex_encode(dg->total, KEEL_SHA256_LEN, hex, sizeof hex);
    json_t *root = NULL;
    if (st == KEEL_OK && models != NULL && chunks != NULL && fixes != NULL) {
        /* json_pack's "o" takes the references even when it fails. */
        root = json_pack("{s:s, s:o, s:s, s:I, s:s, s:s, s:b, s:I, s:{s:I, s:s, s:I, s:o}, s:{s:s, s:s}}",
                         "format", MANIFEST_FORMAT, "models", models, "version", o->version, "security_version",
                         (json_int_t)o->security_version, "support_until", o->support_until, "created", created,
                         "disruptive", (int)o->disruptive, "downtime_seconds", (json_int_t)o->downtime_seconds,
                         "payload", "size", (json_int_t)dg->size, "sha256", hex, "chunk_size",
                         (json_int_t)dg->chunk, "chunks", chunks, "algorithms", "signature", ALG_SIG_NAME,
                         "digest", ALG_DIGEST_NAME);
        models = chunks = NULL;
    }
    if (root != NULL && json_object_set_new(root, "kind", json_string(o->kind == KEEL_BUNDLE_TRUST ? "trust"
                                                                                               : "image")) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (root != NULL && o->notes != NULL && json_object_set_new(root, "notes", json_string(o->notes)) != 0)
        st = keel_errorf(KEEL_ERR_ARG, "notes are not valid UTF-8");
    if (root != NULL && st == KEEL_OK && o->risk != NULL &&
        json_object_set_new(root, "risk", json_string(o->risk)) != 0)
        st = keel_errorf(KEEL_ERR_ARG, "risk is not valid UTF-8");
    if (root != NULL && st == KEEL_OK && o->n_fixes > 0) {
        if (json_object_set_new(root, "security_fixes", fixes) != 0)
            st = KEEL_ERR_NOMEM;
        fixes = NULL;
    }
    char *txt = root != NULL && st == KEEL_OK ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    json_decref(models);
    json_decref(chunks);
    json_decref(fixes);
    if (st == KEEL_ERR_NOMEM || (st == KEEL_OK && txt == NULL))
        return keel_errorf(KEEL_ERR_NOMEM, "building the manifest failed (out of memory or invalid UTF-8)");
    if (st != KEEL_OK)
        return st;
    *out = txt;
    return KEEL_OK;
}

static keel_status_t sign_parts(EVP_PKEY *key, uint8_t *header, keel_bundle_header_t *h, const char *manifest,
                                const keel_buf_t *chain, uint8_t *sig, size_t *siglen)
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (c == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = keel_errorf(KEEL_ERR_CRYPTO, "could not make a signature of a stable length");
    size_t want = KEEL_ECDSA_SIG_MAX - 1; /* the most likely DER length */
    for (int i = 0; i < SIGN_TRIES; i++) {
        h->signature_len = (uint32_t)want;
        header_write(header, h);
        size_t n = KEEL_BUNDLE_SIG_MAX;
        if (EVP_DigestSignInit(c, NULL, EVP_sha256(), NULL, key) != 1 ||
            EVP_DigestSignUpdate(c, header, KEEL_BUNDLE_HEADER_LEN) != 1 ||
            EVP_DigestSignUpdate(c, manifest, h->manifest_len) != 1 ||
            EVP_DigestSignUpdate(c, chain->data, chain->len) != 1 || EVP_DigestSignFinal(c, sig, &n) != 1) {
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "signing the bundle");
            break;
        }
        if (n == want) {
            *siglen = n;
            st = KEEL_OK;
            break;
        }
        want = n;
    }
    EVP_MD_CTX_free(c);
    return st;
}

/* The payload as a regular file we can read twice: the input itself, or
 * stdin spooled to an unlinked file beside the output. */
static keel_status_t open_payload(const keel_bundle_create_opts_t *o, int *fd, int *spooled)
{
    *spooled = 0;
    if (strcmp(o->payload, "-") != 0) {
        *fd = open(o->payload, O_RDONLY | O_CLOEXEC);
        if (*fd < 0)
            return keel_errorf(errno == ENOENT ? KEEL_ERR_CONFIG : KEEL_ERR_IO, "payload %s: %s", o->payload,
                               strerror(errno));
        struct stat sb;
        if (fstat(*fd, &sb) == 0 && S_ISREG(sb.st_mode))
            return KEEL_OK;
        close(*fd);
        *fd = -1;
        return keel_errorf(KEEL_ERR_CONFIG, "payload %s is not a regular file (use - to read a stream)",
                           o->payload);
    }
    char path[KEEL_PATH_MAX];
    keel_status_t st = keel_snprintf(path, sizeof path, "%s.payload.tmp", o->out);
    if (st != KEEL_OK)
        return keel_errorf(KEEL_ERR_ARG, "output path too long");
    if (unlink(path) != 0 && errno != ENOENT)
        return keel_errorf(KEEL_ERR_IO, "remove stale %s: %s", path, strerror(errno));
    *fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*fd < 0)
        return keel_errorf(KEEL_ERR_IO, "create %s: %s", path, strerror(errno));
    /* Unlinked at once: nothing is left behind whatever happens next. */
    if (unlink(path) != 0) {
        int err = errno;
        close(*fd);
        *fd = -1;
        return keel_errorf(KEEL_ERR_IO, "unlink %s: %s", path, strerror(err));
    }
    *spooled = 1;
    return KEEL_OK;
}

static keel_status_t rewind_fd(int fd)
{
    if (lseek(fd, 0, SEEK_SET) != 0)
        return keel_errorf(KEEL_ERR_IO, "seek in the payload: %s", strerror(errno));
    return KEEL_OK;
}

keel_status_t keel_bundle_create(const keel_bundle_create_opts_t *o)
{
    if (o == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no options");
    keel_status_t st = check_create_opts(o);
    if (st != KEEL_OK || (st = keel_crypto_init()) != KEEL_OK)
        return st;
    signer_t s = {0};
    digests_t dg = {0};
    uint8_t *io = NULL;
    char *manifest = NULL, tmp[KEEL_PATH_MAX] = "";
    int in = -1, out = -1, spooled = 0;
    if ((st = signer_load(o->signer_key, o->signer_pass, o->signer_chain, &s)) != KEEL_OK)
        goto done;
    io = malloc(IO_BUF);
    dg.d = calloc(KEEL_BUNDLE_CHUNKS_MAX, sizeof *dg.d);
    if (io == NULL || dg.d == NULL) {
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = open_payload(o, &in, &spooled)) != KEEL_OK)
        goto done;
    if (spooled) {
        dg.chunk = o->chunk_size ? o->chunk_size : KEEL_BUNDLE_CHUNK_DEFAULT;
        st = hash_pass(STDIN_FILENO, in, -1, NULL, &dg, 0, io);
        if (st == KEEL_OK && dg.overflow && o->chunk_size == 0) {
            dg.chunk = auto_chunk(dg.size);
            if ((st = rewind_fd(in)) == KEEL_OK)
                st = hash_pass(in, -1, -1, NULL, &dg, 0, io);
        }
    } else {
        struct stat sb;
        if (fstat(in, &sb) != 0) {
            st = keel_errorf(KEEL_ERR_IO, "stat %s: %s", o->payload, strerror(errno));
            goto done;
        }
        dg.chunk = o->chunk_size ? o->chunk_size : auto_chunk((uint64_t)sb.st_size);
        st = hash_pass(in, -1, -1, NULL, &dg, 0, io);
    }
    if (st != KEEL_OK)
        goto done;
    if (dg.overflow) {
        st = keel_errorf(KEEL_ERR_ARG, "chunk size %u gives more than %u chunks for %llu bytes; use a larger one",
                         dg.chunk, KEEL_BUNDLE_CHUNKS_MAX, (unsigned long long)dg.size);
        goto done;
    }
    if (o->kind == KEEL_BUNDLE_TRUST && dg.size > KEEL_TRUST_PAYLOAD_MAX) {
        st = keel_errorf(KEEL_ERR_ARG, "a trust store payload is at most %u bytes", KEEL_TRUST_PAYLOAD_MAX);
        goto done;
    }
    if ((st = build_manifest(o, &dg, &manifest)) != KEEL_OK)
        goto done;
    size_t mlen = strlen(manifest);
    if (mlen > KEEL_BUNDLE_MANIFEST_MAX) {
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "manifest is larger than %u bytes", KEEL_BUNDLE_MANIFEST_MAX);
        goto done;
    }
    keel_bundle_header_t h = {.format_version = KEEL_BUNDLE_VERSION,
                              .algorithm = KEEL_BUNDLE_ALG_ECDSA_P256_SHA256,
                              .manifest_len = (uint32_t)mlen,
                              .chain_len = (uint32_t)s.chain.len,
                              .payload_len = dg.size};
    uint8_t header[KEEL_BUNDLE_HEADER_LEN], sig[KEEL_BUNDLE_SIG_MAX];
    size_t siglen = 0;
    if ((st = sign_parts(s.key, header, &h, manifest, &s.chain, sig, &siglen)) != KEEL_OK)
        goto done;
    /* What we wrote must be what a device accepts. */
    keel_manifest_t check;
    if ((st = parse_manifest((const uint8_t *)manifest, mlen, h.algorithm, &check)) != KEEL_OK)
        goto done;
    keel_manifest_free(&check);

    if ((st = keel_snprintf(tmp, sizeof tmp, "%s.tmp", o->out)) != KEEL_OK) {
        st = keel_errorf(KEEL_ERR_ARG, "output path too long");
        goto done;
    }
    if (unlink(tmp) != 0 && errno != ENOENT) {
        st = keel_errorf(KEEL_ERR_IO, "remove stale %s: %s", tmp, strerror(errno));
        tmp[0] = '\0';
        goto done;
    }
    out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (out < 0) {
        st = keel_errorf(KEEL_ERR_IO, "create %s: %s", tmp, strerror(errno));
        tmp[0] = '\0';
        goto done;
    }
    if (fchmod(out, 0644) != 0)
        st = keel_errorf(KEEL_ERR_IO, "chmod %s: %s", tmp, strerror(errno));
    if (st == KEEL_OK)
        st = write_all(out, header, sizeof header, tmp);
    if (st == KEEL_OK)
        st = write_all(out, manifest, mlen, tmp);
    if (st == KEEL_OK)
        st = write_all(out, sig, siglen, tmp);
    if (st == KEEL_OK)
        st = write_all(out, s.chain.data, s.chain.len, tmp);
    /* Second pass: copy, and prove the bytes are still the ones signed. */
    if (st == KEEL_OK && (st = rewind_fd(in)) == KEEL_OK)
        st = hash_pass(in, -1, out, tmp, &dg, 1, io);
    if (st == KEEL_OK && fsync(out) != 0)
        st = keel_errorf(KEEL_ERR_IO, "fsync %s: %s", tmp, strerror(errno));
    if (close(out) != 0 && st == KEEL_OK)
        st = keel_errorf(KEEL_ERR_IO, "close %s: %s", tmp, strerror(errno));
    out = -1;
    if (st == KEEL_OK && (st = keel_rename_commit(tmp, o->out)) == KEEL_OK)
        tmp[0] = '\0';
done:
    if (out >= 0)
        close(out);
    if (tmp[0] != '\0')
        (void)unlink(tmp);
    if (in >= 0)
        close(in);
    free(manifest);
    free(io);
    free(dg.d);
    signer_free(&s);
    return st;
}

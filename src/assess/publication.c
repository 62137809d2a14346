/*
 * The publication checks of `keel assess` (test unit "publication"): the
 * security.txt (RFC 9116) and the vulnerability disclosure policy for 5.2-1,
 * the published end of the support period for 5.3-13. Documents are fetched
 * over HTTP(S) with the session of keel/assess_http.h (one per hop; at most
 * three redirects, http and https only) or read from files; each is capped
 * at PUB_DOC_MAX. See keel/assess_update.h and docs/internals/assess-update.md.
 */
#include "keel/assess_update.h"

#include "keel/assess_probe.h"
#include "net.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define UNIT "publication"
#define PUB_DOC_MAX (64u * 1024u)    /* bytes of a document judged */
#define PUB_REDIRECTS_MAX 3u
#define PUB_URL_MAX 2048u
#define STXT_LINE_MAX 2048u          /* bytes of one security.txt line */
#define STXT_PROBLEMS_MAX 32u        /* findings from one security.txt; the rest are counted */
#define STXT_FIELDS_MAX 64u          /* fields kept in the observation */
#define YEAR_SECONDS (366LL * 86400)

typedef struct {
    const keel_publication_opts_t *o;
    json_t *doc;
    time_t now;
    char why[PUB_URL_MAX + 400]; /* the first reason the unit is inconclusive */
} pub_t;

/* A URL libcurl gives back, as printable ASCII: libcurl keeps the raw bytes of
 * an absolute Location (a host, a path, a fragment), which need not be
 * UTF-8; each byte outside 0x21..0x7e becomes %XX. Cut to fit `cap`. */
static void shown_url(char *out, size_t cap, const char *url)
{
    static const char hexd[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)url; *c != '\0'; c++) {
        int plain = *c > 0x20 && *c < 0x7f;
        if (o + (plain ? 1 : 3) >= cap)
            break;
        if (plain) {
            out[o++] = (char)*c;
        } else {
            out[o++] = '%';
            out[o++] = hexd[*c >> 4];
            out[o++] = hexd[*c & 15];
        }
    }
    if (cap > 0)
        out[o] = '\0';
}

static void inconclusive(pub_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void inconclusive(pub_t *p, const char *fmt, ...)
{
    if (p->why[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
}

static keel_status_t finding(pub_t *p, const char *prov, const char *sev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static keel_status_t finding(pub_t *p, const char *prov, const char *sev, const char *fmt, ...)
{
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return keel_assess_unit_finding(p->doc, UNIT, prov, sev, what);
}

/* ---- dates -------------------------------------------------------------------- */

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static long long days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static unsigned days_in_month(unsigned y, unsigned m)
{
    static const unsigned char dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

/* n decimal digits at s; -1 when any is not a digit. */
static long digits(const char *s, unsigned n)
{
    long v = 0;
    for (unsigned i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* "YYYY-MM-DD" (a real date) at s, exactly 10 characters; 0 on success. */
static int parse_ymd(const char *s, unsigned *y, unsigned *m, unsigned *d)
{
    long yy = digits(s, 4), mm = digits(s + 5, 2), dd = digits(s + 8, 2);
    if (yy < 0 || s[4] != '-' || mm < 1 || mm > 12 || s[7] != '-' || dd < 1 ||
        (unsigned)dd > days_in_month((unsigned)yy, (unsigned)mm))
        return -1;
    *y = (unsigned)yy;
    *m = (unsigned)mm;
    *d = (unsigned)dd;
    return 0;
}

/*
 * RFC 3339 date-time (section 5.6) of exactly n bytes to seconds since the
 * epoch, UTC: full-date "T" full-time, fractions of a second ignored, "Z" or
 * an offset +hh:mm/-hh:mm. "T" and "Z" may be lower case (section 5.6 NOTE).
 * 0 on success, -1 for anything else.
 */
static int parse_rfc3339(const char *s, size_t n, long long *out)
{
    unsigned y, mo, d;
    if (n < 20 || memchr(s, '\0', n) != NULL || parse_ymd(s, &y, &mo, &d) != 0 || (s[10] != 'T' && s[10] != 't'))
        return -1;
    long hh = digits(s + 11, 2), mi = digits(s + 14, 2), ss = digits(s + 17, 2);
    if (hh < 0 || hh > 23 || s[13] != ':' || mi < 0 || mi > 59 || s[16] != ':' || ss < 0 || ss > 60)
        return -1;
    size_t i = 19;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return -1;
    }
    long off = 0;
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-') && n - i == 6) {
        long oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || s[i + 3] != ':' || om < 0 || om > 59)
            return -1;
        off = (oh * 60 + om) * 60 * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return -1;
    }
    if (i != n)
        return -1;
    *out = days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - off;
    return 0;
}

static void fmt_utc(long long t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL || strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "?");
}

/* ---- fetching ------------------------------------------------------------------ */

typedef struct {
    const char *what;       /* "security.txt", "policy", "support period" */
    const char *source;     /* as the IXIT gives it */
    int is_url;
    keel_buf_t body;
    int truncated;          /* more than PUB_DOC_MAX bytes */
    long status;            /* URL: the final answer's status */
    unsigned redirects;
    char final_url[PUB_URL_MAX];
    char content_type[128];
    char failure[PUB_URL_MAX + 320];   /* not there (an HTTP error, a redirect loop): a fail */
    char transport[PUB_URL_MAX + 320]; /* could not be asked for (DNS, refused, timeout, TLS, a file): inconclusive */
    json_t *info;           /* the observation's object for this document */
} fetched_t;

static int is_http_url(const char *s)
{
    return strncasecmp(s, "http://", 7) == 0 || strncasecmp(s, "https://", 8) == 0;
}

/* "scheme://" of any other kind: not fetched. */
static int is_other_url(const char *s)
{
    const char *c = strstr(s, "://");
    if (c == NULL || c == s)
        return 0;
    for (const char *q = s; q < c; q++)
        if (!isalnum((unsigned char)*q) && *q != '+' && *q != '-' && *q != '.')
            return 0;
    return 1;
}

/* The CA file libcurl would use by default, for https when the lab gives none. */
static void default_ca(char *out, size_t cap)
{
    out[0] = '\0';
    CURL *c = curl_easy_init();
    char *path = NULL;
    if (c != NULL && curl_easy_getinfo(c, CURLINFO_CAINFO, &path) == CURLE_OK && path != NULL &&
        strlen(path) < cap)
        snprintf(out, cap, "%s", path);
    if (c != NULL)
        curl_easy_cleanup(c);
}

/* One GET of an absolute URL already in `u`. */
static keel_status_t get_once(pub_t *p, fetched_t *f, CURLU *u, keel_http_resp_t *r)
{
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *user = NULL, *url = NULL;
    keel_status_t st = KEEL_OK;
    int https = 0;
    char target[PUB_URL_MAX + 8];
    int ok = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_URL, &url, 0) == CURLUE_OK;
    if (ok && curl_url_get(u, CURLUPART_QUERY, &query, 0) != CURLUE_OK)
        query = NULL;
    if (ok && curl_url_get(u, CURLUPART_USER, &user, 0) != CURLUE_OK)
        user = NULL;
    if (!ok) {
        snprintf(f->failure, sizeof f->failure, "%s is not a URL the probe can fetch", f->final_url);
    } else {
        shown_url(f->final_url, sizeof f->final_url, url);
        https = strcasecmp(scheme, "https") == 0;
    }
    char hostbuf[KEEL_PROBE_HOST_MAX + 1];
    unsigned long portnum = 0;
    if (ok && strcasecmp(scheme, "http") != 0 && !https) {
        snprintf(f->failure, sizeof f->failure, "%s: only http and https are followed", f->final_url);
        ok = 0;
    } else if (ok && user != NULL) {
        snprintf(f->failure, sizeof f->failure, "%s carries credentials; such URLs are not fetched", f->final_url);
        ok = 0;
    }
    if (ok) {
        size_t hl = strlen(host);
        const char *h = host;
        if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
            h = host + 1;
            hl -= 2;
        }
        char *end = NULL;
        portnum = strtoul(port, &end, 10);
        int n = snprintf(target, sizeof target, "%s%s%s", path, query != NULL ? "?" : "", query != NULL ? query : "");
        if (hl == 0 || hl >= sizeof hostbuf || end == NULL || *end != '\0' || portnum == 0 || portnum > 65535 ||
            n < 0 || (size_t)n >= sizeof target || target[0] != '/') {
            snprintf(f->failure, sizeof f->failure, "%s is not a URL the probe can fetch", f->final_url);
            ok = 0;
        } else {
            memcpy(hostbuf, h, hl);
            hostbuf[hl] = '\0';
        }
    }
    if (ok) {
        char ca[1024];
        if (p->o->ca_file == NULL)
            default_ca(ca, sizeof ca);
        keel_http_opts_t ho = {.host = hostbuf, .port = (unsigned)portnum, .tls = https,
                               .timeout_ms = p->o->timeout_ms ? p->o->timeout_ms : 5000, .body_max = PUB_DOC_MAX,
                               .ca_file = p->o->ca_file != NULL ? p->o->ca_file : (ca[0] ? ca : NULL)};
        keel_http_t *h = NULL;
        st = keel_http_open(&ho, &h);
        if (st == KEEL_ERR_ARG) {
            keel_error_clear();
            st = KEEL_OK;
            snprintf(f->failure, sizeof f->failure, "%s names no host the probe can reach", f->final_url);
        } else if (st == KEEL_OK) {
            keel_http_req_t q = {.method = "GET", .path = target, .anonymous = 1};
            st = keel_http_do(h, &q, r);
            keel_http_close(h);
        }
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_free(user);
    curl_free(url);
    return st;
}

/* internal_host() of the host a CURLU points at (0 when it has none). */
static int redirect_internal(CURLU *u)
{
    char *host = NULL;
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host == NULL)
        return 0;
    int in = keel_assess_host_internal(host);
    curl_free(host);
    return in;
}

static keel_status_t fetch_url(pub_t *p, fetched_t *f)
{
    CURLU *u = curl_url();
    if (u == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a URL");
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    keel_status_t st = KEEL_OK;
    snprintf(f->final_url, sizeof f->final_url, "%s", f->source);
    if (curl_url_set(u, CURLUPART_URL, f->source, 0) != CURLUE_OK)
        snprintf(f->failure, sizeof f->failure, "%s is not a valid URL", f->source);
    /* A lab may publish on its own network; only a public source is kept off it. */
    int source_internal = f->failure[0] == '\0' && redirect_internal(u);
    while (st == KEEL_OK && f->failure[0] == '\0') {
        st = get_once(p, f, u, &r);
        if (st != KEEL_OK || f->failure[0] != '\0')
            break;
        char sent[PUB_URL_MAX + 16], obs[400];
        int sn = snprintf(sent, sizeof sent, "GET %s", f->final_url);
        int on = r.status != 0 ? snprintf(obs, sizeof obs, "HTTP %ld, %zu bytes%s", r.status, r.body.len,
                                          r.body_truncated ? " (cut at 64 KiB)" : "")
                               : snprintf(obs, sizeof obs, "no answer: %s", r.err);
        st = keel_assess_evidence(p->doc, UNIT, sent, sn > 0 ? (size_t)sn : 0, obs, on > 0 ? (size_t)on : 0,
                                  r.duration_us);
        if (st != KEEL_OK)
            break;
        f->status = r.status;
        if (r.status == 0) {
            snprintf(f->transport, sizeof f->transport, "%s could not be fetched: %s", f->final_url, r.err);
            break;
        }
        if (r.status >= 300 && r.status < 400 && r.status != 304) {
            char loc[PUB_URL_MAX];
            if (!keel_http_header(&r, "Location", loc, sizeof loc) || loc[0] == '\0') {
                snprintf(f->failure, sizeof f->failure, "%s answers HTTP %ld without a Location", f->final_url,
                         r.status);
            } else if (strlen(loc) >= sizeof loc - 1) {
                snprintf(f->failure, sizeof f->failure, "%s redirects to an overlong Location", f->final_url);
            } else if (f->redirects == PUB_REDIRECTS_MAX) {
                snprintf(f->failure, sizeof f->failure, "%s: more than %u redirects", f->source, PUB_REDIRECTS_MAX);
            } else if (curl_url_set(u, CURLUPART_URL, loc, 0) != CURLUE_OK) {
                snprintf(f->failure, sizeof f->failure, "%s redirects to something that is not a URL",
                         f->final_url);
            } else if (!source_internal && redirect_internal(u)) {
                snprintf(f->failure, sizeof f->failure,
                         "%s redirects to this machine or a private network: not followed", f->final_url);
            } else {
                f->redirects++;
                continue;
            }
            break;
        }
        if (r.status < 200 || r.status >= 300) {
            snprintf(f->failure, sizeof f->failure, "%s answers HTTP %ld", f->final_url, r.status);
            break;
        }
        (void)keel_http_header(&r, "Content-Type", f->content_type, sizeof f->content_type);
        f->truncated = r.body_truncated;
        st = keel_buf_append(&f->body, r.body.data, r.body.len);
        break;
    }
    keel_http_resp_free(&r);
    curl_url_cleanup(u);
    return st;
}

static keel_status_t read_doc_file(pub_t *p, fetched_t *f)
{
    char path[4096];
    const char *src = f->source;
    if (src[0] != '/' && p->o->base_dir != NULL) {
        if (keel_path_join(path, sizeof path, p->o->base_dir, src) != KEEL_OK) {
            keel_error_clear();
            snprintf(f->transport, sizeof f->transport, "%s: path too long", src);
            return KEEL_OK;
        }
        src = path;
    }
    /* the path in sentences: its first 1 KiB, cut between characters */
    char shown[1025];
    size_t sl = strlen(src) < sizeof shown - 1 ? strlen(src) : sizeof shown - 1;
    memcpy(shown, src, sl);
    shown[sl] = '\0';
    keel_assess_utf8_cut_tail(shown);
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(f->transport, sizeof f->transport, "%s cannot be read: %s", shown, strerror(errno));
        return KEEL_OK;
    }
    uint8_t buf[8192];
    keel_status_t st = KEEL_OK;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(f->transport, sizeof f->transport, "%s cannot be read: %s", shown, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        size_t room = PUB_DOC_MAX - f->body.len;
        size_t take = (size_t)n < room ? (size_t)n : room;
        if (take < (size_t)n) {
            f->truncated = 1;
            if (take > 0)
                st = keel_buf_append(&f->body, buf, take);
            break;
        }
        st = keel_buf_append(&f->body, buf, take);
        if (st != KEEL_OK)
            break;
    }
    close(fd);
    if (st == KEEL_OK) {
        char sent[4200], obs[128];
        int sn = snprintf(sent, sizeof sent, "read %s", src);
        int on = snprintf(obs, sizeof obs, "%zu bytes%s", f->body.len, f->truncated ? " (cut at 64 KiB)" : "");
        st = keel_assess_evidence(p->doc, UNIT, sent, sn > 0 ? (size_t)sn : 0, obs, on > 0 ? (size_t)on : 0, -1);
    }
    return st;
}

/* Fetches or reads one document and opens its object in the observation. */
static keel_status_t get_doc(pub_t *p, const char *key, fetched_t *f)
{
    keel_status_t st = KEEL_OK;
    f->is_url = is_http_url(f->source);
    if (f->is_url)
        st = fetch_url(p, f);
    else if (is_other_url(f->source))
        snprintf(f->transport, sizeof f->transport, "%s: only http and https URLs are fetched", f->source);
    else
        st = read_doc_file(p, f);
    if (st != KEEL_OK)
        return st;
    f->info = json_pack("{s:s, s:s, s:I, s:b}", "source", f->source, "kind", f->is_url ? "url" : "file", "bytes",
                        (json_int_t)f->body.len, "truncated", f->truncated);
    if (f->info == NULL || json_object_set_new(p->doc, key, f->info) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the publication observation");
    int bad = 0;
    if (f->is_url)
        bad = json_object_set_new(f->info, "status", json_integer(f->status)) != 0 ||
              json_object_set_new(f->info, "final_url", json_string(f->final_url)) != 0 ||
              json_object_set_new(f->info, "redirects", json_integer(f->redirects)) != 0 ||
              (f->content_type[0] &&
               json_object_set_new(f->info, "content_type", keel_assess_escape((const uint8_t *)f->content_type,
                                                                               strlen(f->content_type))) != 0);
    if (!bad && f->failure[0])
        bad = json_object_set_new(f->info, "failure", json_string(f->failure)) != 0;
    if (!bad && f->transport[0])
        bad = json_object_set_new(f->info, "transport", json_string(f->transport)) != 0;
    if (bad)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the publication observation");
    if (f->transport[0])
        inconclusive(p, "%s: %s", f->what, f->transport);
    return KEEL_OK;
}

/* ---- security.txt (RFC 9116) --------------------------------------------------- */

typedef struct {
    pub_t *p;
    json_t *info;
    json_t *fields;
    json_t *contacts;
    unsigned problems, problems_dropped, unknown;
    unsigned n_expires, n_languages;
    long long expires;
    int expires_ok;
    json_t *canonical;
} stxt_t;

static keel_status_t problem(stxt_t *s, unsigned line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static keel_status_t problem(stxt_t *s, unsigned line, const char *fmt, ...)
{
    if (s->problems >= STXT_PROBLEMS_MAX) {
        s->problems_dropped++;
        return KEEL_OK;
    }
    s->problems++;
    char what[600];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (line > 0)
        return finding(s->p, "5.2-1", "fail", "security.txt line %u: %s", line, what);
    return finding(s->p, "5.2-1", "fail", "security.txt: %s", what);
}

/* Printable text for a sentence: at most 120 bytes, anything odd as '?'. */
static void clip(const char *v, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap && i < 120; i++) {
        unsigned char c = (unsigned char)v[i];
        out[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (n > 120 && k + 4 < cap) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

static int valid_utf8(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            if (c == 0)
                return 0;
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* A URI as RFC 3986 starts it: scheme ":" and something, without spaces,
 * controls or the characters a URI never holds. The scheme into `scheme`. */
static int uri_ok(const char *v, size_t n, char *scheme, size_t cap)
{
    size_t i = 0;
    if (n == 0 || !isalpha((unsigned char)v[0]))
        return 0;
    while (i < n && (isalnum((unsigned char)v[i]) || v[i] == '+' || v[i] == '-' || v[i] == '.'))
        i++;
    if (i >= n || v[i] != ':' || i + 1 == n || i >= cap)
        return 0;
    for (size_t k = 0; k < i; k++)
        scheme[k] = (char)tolower((unsigned char)v[k]);
    scheme[i] = '\0';
    for (size_t k = i + 1; k < n; k++) {
        unsigned char c = (unsigned char)v[k];
        if (c <= 0x20 || c == 0x7f || strchr("<>\"{}|\\^`", c) != NULL)
            return 0;
    }
    return 1;
}

/* The part of a web URI after "scheme://" names a host. */
static int web_uri_has_host(const char *v, size_t n, size_t scheme_len)
{
    size_t i = scheme_len + 1;
    return n > i + 2 && v[i] == '/' && v[i + 1] == '/' && v[i + 2] != '/';
}

/* "en, de-AT": comma-separated language tags (RFC 5646, loosely: a letter
 * first, subtags of 1..8 letters or digits joined by '-'). */
static int language_tags_ok(const char *v, size_t n)
{
    size_t i = 0;
    for (;;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i >= n || !isalpha((unsigned char)v[i]))
            return 0;
        size_t sub = 0;
        while (i < n && (isalnum((unsigned char)v[i]) || v[i] == '-')) {
            if (v[i] == '-') {
                if (sub == 0)
                    return 0;
                sub = 0;
            } else if (++sub > 8) {
                return 0;
            }
            i++;
        }
        if (sub == 0)
            return 0;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i == n)
            return 1;
        if (v[i] != ',')
            return 0;
        i++;
    }
}

static keel_status_t keep_field(stxt_t *s, unsigned line, const char *name, size_t nl, const char *v, size_t vl)
{
    if (json_array_size(s->fields) >= STXT_FIELDS_MAX)
        return KEEL_OK;
    json_t *f = json_pack("{s:i, s:o, s:o}", "line", (int)line, "name", keel_assess_escape((const uint8_t *)name, nl),
                          "value", keel_assess_escape((const uint8_t *)v, vl < 512 ? vl : 512));
    if (f == NULL || json_array_append_new(s->fields, f) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a security.txt field");
    return KEEL_OK;
}

static keel_status_t field(stxt_t *s, unsigned line, const char *name, size_t nl, const char *v, size_t vl)
{
    char shown[160], scheme[32];
    clip(v, vl, shown, sizeof shown);
    keel_status_t st = keep_field(s, line, name, nl, v, vl);
    if (st != KEEL_OK)
        return st;
#define IS(lit) (nl == sizeof(lit) - 1 && strncasecmp(name, lit, nl) == 0)
    if (IS("Contact")) {
        if (!uri_ok(v, vl, scheme, sizeof scheme))
            return problem(s, line, "Contact \"%s\" is not a URI (mailto:, https: or tel:)", shown);
        if (strcmp(scheme, "http") == 0)
            return problem(s, line, "Contact \"%s\" is a web URI that does not begin with https://", shown);
        if (strcmp(scheme, "mailto") != 0 && strcmp(scheme, "https") != 0 && strcmp(scheme, "tel") != 0)
            return problem(s, line, "Contact \"%s\" is not a mailto:, https: or tel: URI", shown);
        if (strcmp(scheme, "mailto") == 0 && memchr(v, '@', vl) == NULL)
            return problem(s, line, "Contact \"%s\" is a mailto: URI without an address", shown);
        if (strcmp(scheme, "https") == 0 && !web_uri_has_host(v, vl, strlen(scheme)))
            return problem(s, line, "Contact \"%s\" is an https: URI without a host", shown);
        json_t *c = keel_assess_escape((const uint8_t *)v, vl < 512 ? vl : 512);
        if (c == NULL || json_array_append_new(s->contacts, c) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a contact");
        return KEEL_OK;
    }
    if (IS("Expires")) {
        long long t = 0;
        if (++s->n_expires > 1)
            return problem(s, line, "a second Expires field (exactly one is required)");
        if (parse_rfc3339(v, vl, &t) != 0)
            return problem(s, line, "Expires \"%s\" is not an RFC 3339 date-time", shown);
        s->expires = t;
        s->expires_ok = 1;
        return KEEL_OK;
    }
    if (IS("Encryption") || IS("Policy") || IS("Canonical") || IS("Acknowledgments") || IS("Hiring") ||
        IS("CSAF")) {
        char fname[32];
        clip(name, nl, fname, sizeof fname);
        if (!uri_ok(v, vl, scheme, sizeof scheme))
            return problem(s, line, "%s \"%s\" is not a URI", fname, shown);
        if (strcmp(scheme, "http") == 0)
            return problem(s, line, "%s \"%s\" is a web URI that does not begin with https://", fname, shown);
        if (strcmp(scheme, "https") == 0 && !web_uri_has_host(v, vl, strlen(scheme)))
            return problem(s, line, "%s \"%s\" is an https: URI without a host", fname, shown);
        /* A value that is not UTF-8 (already a problem of the file) cannot be
         * a JSON string, nor the URL the file was fetched from. */
        if (IS("Canonical") && valid_utf8((const uint8_t *)v, vl)) {
            json_t *c = json_stringn(v, vl);
            if (c == NULL || json_array_append_new(s->canonical, c) != 0)
                return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a canonical URI");
        }
        return KEEL_OK;
    }
    if (IS("Preferred-Languages")) {
        if (++s->n_languages > 1)
            return problem(s, line, "a second Preferred-Languages field (at most one is allowed)");
        if (!language_tags_ok(v, vl))
            return problem(s, line, "Preferred-Languages \"%s\" is not a comma-separated list of language tags",
                           shown);
        return KEEL_OK;
    }
#undef IS
    char fname[160];
    clip(name, nl, fname, sizeof fname);
    if (s->unknown++ < 8)
        return finding(s->p, "5.2-1", "info", "security.txt line %u: unknown field \"%s\" kept", line, fname);
    return KEEL_OK;
}

/* A field-name (RFC 5322 section 3.6.8): printable ASCII but the colon. */
static int field_name_ok(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126 || s[i] == ':')
            return 0;
    return 1;
}

static keel_status_t content_line(stxt_t *s, unsigned line, const char *l, size_t n)
{
    while (n > 0 && (l[n - 1] == ' ' || l[n - 1] == '\t'))
        n--;
    if (n == 0 || l[0] == '#')
        return KEEL_OK;
    const char *colon = memchr(l, ':', n);
    char shown[160];
    if (colon == NULL || !field_name_ok(l, (size_t)(colon - l))) {
        clip(l, n, shown, sizeof shown);
        return problem(s, line, "\"%s\" is not a field, a comment or an empty line", shown);
    }
    const char *v = colon + 1;
    size_t vl = n - (size_t)(v - l);
    while (vl > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    for (size_t i = 0; i < vl; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            clip(l, (size_t)(colon - l), shown, sizeof shown);
            return problem(s, line, "the value of %s holds a control character", shown);
        }
    }
    if (vl == 0) {
        clip(l, (size_t)(colon - l), shown, sizeof shown);
        return problem(s, line, "%s has no value", shown);
    }
    return field(s, line, l, (size_t)(colon - l), v, vl);
}

#define PGP_SIGNED "-----BEGIN PGP SIGNED MESSAGE-----"
#define PGP_SIG_BEGIN "-----BEGIN PGP SIGNATURE-----"
#define PGP_SIG_END "-----END PGP SIGNATURE-----"

static int line_is(const char *l, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    while (n > 0 && (l[n - 1] == ' ' || l[n - 1] == '\t'))
        n--;
    return n == k && memcmp(l, lit, k) == 0;
}

/* Parses the body line by line; an OpenPGP cleartext frame is walked
 * (RFC 4880 section 7): armor headers, dash-escaped text, the signature. */
static keel_status_t stxt_parse(stxt_t *s, const uint8_t *data, size_t len, int *signed_out)
{
    enum { PLAIN, ARMOR, SIGNED_TEXT, SIGNATURE, AFTER } state = PLAIN;
    keel_status_t st = KEEL_OK;
    size_t i = 0;
    unsigned line = 0;
    *signed_out = 0;
    if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) {
        i = 3;
        st = finding(s->p, "5.2-1", "info", "security.txt starts with a UTF-8 byte order mark (tolerated)");
    }
    /* the lines are still read: one bad byte should not hide the rest */
    if (st == KEEL_OK && !valid_utf8(data + i, len - i))
        st = problem(s, 0, "not UTF-8 text (or it holds a NUL byte)");
    while (st == KEEL_OK && i < len) {
        line++;
        const uint8_t *nl = memchr(data + i, '\n', len - i);
        size_t end = nl != NULL ? (size_t)(nl - data) : len;
        size_t n = end - i;
        const char *l = (const char *)data + i;
        i = nl != NULL ? end + 1 : len;
        if (n > 0 && l[n - 1] == '\r')
            n--;
        if (n > STXT_LINE_MAX) {
            st = problem(s, line, "longer than %u bytes", STXT_LINE_MAX);
            continue;
        }
        if (memchr(l, '\r', n) != NULL) {
            st = problem(s, line, "a CR that does not end the line");
            continue;
        }
        switch (state) {
        case PLAIN:
            if (line == 1 && line_is(l, n, PGP_SIGNED)) {
                state = ARMOR;
                *signed_out = 1;
            } else if (n >= 5 && memcmp(l, "-----", 5) == 0) {
                st = problem(s, line, "an OpenPGP armor line outside a signed frame at the start of the file");
            } else {
                st = content_line(s, line, l, n);
            }
            break;
        case ARMOR:
            if (n == 0) {
                state = SIGNED_TEXT;
            } else {
                const char *colon = memchr(l, ':', n);
                if (colon == NULL || colon == l || (size_t)(colon - l) + 1 >= n || colon[1] != ' ')
                    st = problem(s, line, "an OpenPGP armor header (\"Hash: ...\") was expected");
            }
            break;
        case SIGNED_TEXT:
            if (line_is(l, n, PGP_SIG_BEGIN))
                state = SIGNATURE;
            else if (n >= 2 && l[0] == '-' && l[1] == ' ')
                st = content_line(s, line, l + 2, n - 2);
            else if (n >= 1 && l[0] == '-')
                st = problem(s, line, "a line starting with '-' that is not dash-escaped in the signed text");
            else
                st = content_line(s, line, l, n);
            break;
        case SIGNATURE:
            if (line_is(l, n, PGP_SIG_END))
                state = AFTER;
            break;
        case AFTER:
            for (size_t k = 0; k < n; k++)
                if (l[k] != ' ' && l[k] != '\t') {
                    st = problem(s, line, "text after the OpenPGP signature");
                    break;
                }
            break;
        }
    }
    if (st == KEEL_OK && (state == ARMOR || state == SIGNED_TEXT || state == SIGNATURE))
        st = problem(s, 0, "the OpenPGP signed frame is not closed (no complete signature block)");
    return st;
}

static keel_status_t judge_security_txt(pub_t *p, fetched_t *f)
{
    stxt_t s = {.p = p, .info = f->info};
    s.fields = json_array();
    s.contacts = json_array();
    s.canonical = json_array();
    int bad = s.fields == NULL || s.contacts == NULL || s.canonical == NULL;
    if (!bad) {
        bad = json_object_set_new(f->info, "fields", s.fields) != 0;
        s.fields = bad ? NULL : s.fields;
    }
    if (!bad) {
        bad = json_object_set_new(f->info, "contacts", s.contacts) != 0;
        s.contacts = bad ? NULL : s.contacts;
    }
    if (bad) {
        json_decref(s.canonical);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for security.txt");
    }
    keel_status_t st = KEEL_OK;
    int is_signed = 0;
    if (f->truncated)
        st = problem(&s, 0, "over %u KiB", PUB_DOC_MAX / 1024u);
    else
        st = stxt_parse(&s, f->body.len > 0 ? f->body.data : (const uint8_t *)"", f->body.len, &is_signed);
    if (st == KEEL_OK && !f->truncated) {
        if (json_array_size(s.contacts) == 0 && s.problems < STXT_PROBLEMS_MAX)
            st = problem(&s, 0, "no valid Contact field (at least one is required)");
        if (st == KEEL_OK && s.n_expires == 0)
            st = problem(&s, 0, "no Expires field (exactly one is required)");
        else if (st == KEEL_OK && s.n_expires > 1)
            st = problem(&s, 0, "Expires appears %u times (exactly one is required)", s.n_expires);
        char when[40];
        if (st == KEEL_OK && s.expires_ok) {
            fmt_utc(s.expires, when, sizeof when);
            if (json_object_set_new(f->info, "expires", json_string(when)) != 0)
                st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for security.txt");
            else if (s.expires <= (long long)p->now)
                st = problem(&s, 0, "expired on %s", when);
            else if (s.expires - (long long)p->now > YEAR_SECONDS)
                st = finding(p, "5.2-1", "warn",
                             "security.txt expires on %s, more than a year ahead (RFC 9116 advises less)", when);
        }
    }
    if (st == KEEL_OK && is_signed)
        st = finding(p, "5.2-1", "info", "security.txt is OpenPGP signed; the signature is not verified");
    if (st == KEEL_OK && f->is_url && strncasecmp(f->final_url, "https://", 8) != 0)
        st = finding(p, "5.2-1", "warn", "security.txt is served over plain HTTP (%s); RFC 9116 requires HTTPS",
                     f->final_url);
    if (st == KEEL_OK && f->is_url && f->content_type[0] && strncasecmp(f->content_type, "text/plain", 10) != 0) {
        char ct[160];
        clip(f->content_type, strlen(f->content_type), ct, sizeof ct);
        st = finding(p, "5.2-1", "warn", "security.txt is served as \"%s\", not text/plain", ct);
    }
    if (st == KEEL_OK && f->is_url && json_array_size(s.canonical) > 0) {
        int listed = 0;
        size_t k;
        json_t *c;
        json_array_foreach(s.canonical, k, c) {
            if (strcmp(json_string_value(c), f->final_url) == 0)
                listed = 1;
        }
        if (!listed)
            st = finding(p, "5.2-1", "warn", "security.txt was fetched from %s, which its Canonical fields do not list",
                         f->final_url);
    }
    if (st == KEEL_OK &&
        (json_object_set_new(f->info, "signed", json_boolean(is_signed)) != 0 ||
         json_object_set_new(f->info, "problems", json_integer(s.problems + s.problems_dropped)) != 0))
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for security.txt");
    json_decref(s.canonical);
    return st;
}

/* ---- policy and support pages ------------------------------------------------------ */

/* Lower-case text of a document: tags and &nbsp; become spaces, runs of
 * white space one space. Into `out` (at most PUB_DOC_MAX bytes). */
static keel_status_t plain_text(const keel_buf_t *in, keel_buf_t *out)
{
    int in_tag = 0, space = 1;
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < in->len && st == KEEL_OK; i++) {
        unsigned char c = in->data[i];
        if (in_tag) {
            if (c == '>')
                in_tag = 0;
            continue;
        }
        if (c == '<' && i + 1 < in->len && (isalpha(in->data[i + 1]) || in->data[i + 1] == '/' ||
                                            in->data[i + 1] == '!' || in->data[i + 1] == '?')) {
            in_tag = 1;
            c = ' ';
        } else if (c == '&' && in->len - i >= 6 && strncasecmp((const char *)in->data + i, "&nbsp;", 6) == 0) {
            i += 5;
            c = ' ';
        }
        if (isspace(c)) {
            if (space)
                continue;
            space = 1;
            c = ' ';
        } else {
            space = 0;
        }
        char lc = (char)tolower(c);
        st = keel_buf_append(out, &lc, 1);
    }
    return st;
}

static int has_word_digit_before(const char *t, const char *at)
{
    return at > t && isdigit((unsigned char)at[-1]);
}

static keel_status_t judge_policy(pub_t *p, fetched_t *f)
{
    keel_buf_t t;
    keel_buf_init(&t, PUB_DOC_MAX);
    keel_status_t st = plain_text(&f->body, &t);
    if (st != KEEL_OK) {
        keel_buf_free(&t);
        return st;
    }
    const char *s = t.len > 0 ? (const char *)t.data : "";
    int has_text = 0;
    for (size_t i = 0; i < t.len; i++)
        if (isalnum((unsigned char)s[i]))
            has_text = 1;
    int contact = strstr(s, "mailto:") != NULL || strstr(s, "contact") != NULL || strstr(s, "security.txt") != NULL;
    for (const char *a = strchr(s, '@'); !contact && a != NULL; a = strchr(a + 1, '@'))
        contact = a > s && (isalnum((unsigned char)a[-1]) || a[-1] == '.') && isalnum((unsigned char)a[1]) &&
                  strchr(a, '.') != NULL;
    static const char *const units[] = {"day", "hour", "week", "month"};
    int timeline = strstr(s, "timeline") != NULL || strstr(s, "timescale") != NULL || strstr(s, "time frame") != NULL;
    for (size_t u = 0; !timeline && u < sizeof units / sizeof units[0]; u++)
        for (const char *a = strstr(s, units[u]); !timeline && a != NULL; a = strstr(a + 1, units[u])) {
            const char *b = a;
            if (b > s && b[-1] == ' ')
                b--;
            /* "90 days", "5 business days", "72-hour" */
            static const char *const mid[] = {"business ", "working ", "calendar "};
            for (size_t m = 0; m < 3; m++) {
                size_t ml = strlen(mid[m]);
                if ((size_t)(b - s) >= ml && strncmp(b - ml, mid[m], ml) == 0) {
                    b -= ml;
                    if (b > s && b[-1] == ' ')
                        b--;
                }
            }
            if (b > s && b[-1] == '-')
                b--;
            timeline = has_word_digit_before(s, b);
        }
    keel_buf_free(&t);
    if (json_object_set_new(f->info, "names_contact", json_boolean(contact)) != 0 ||
        json_object_set_new(f->info, "names_timeline", json_boolean(timeline)) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the policy");
    if (!has_text)
        return finding(p, "5.2-1", "fail", "the disclosure policy at %s holds no text", f->source);
    st = KEEL_OK;
    if (!contact)
        st = finding(p, "5.2-1", "warn", "the disclosure policy at %s names no contact", f->source);
    if (st == KEEL_OK && !timeline)
        st = finding(p, "5.2-1", "warn",
                     "the disclosure policy at %s gives no timeline (acknowledgement, status updates)", f->source);
    return st;
}

static const char *const month_names[] = {"january", "february", "march",     "april",   "may",      "june",
                                          "july",    "august",   "september", "october", "november", "december"};

/* A word of the text: its month (1..12) or 0. */
static unsigned word_month(const char *w, size_t n)
{
    if (n > 0 && w[n - 1] == '.')
        n--;
    for (unsigned m = 0; m < 12; m++) {
        size_t ml = strlen(month_names[m]);
        if ((n == ml && strncmp(w, month_names[m], n) == 0) || (n == 3 && strncmp(w, month_names[m], 3) == 0) ||
            (m == 8 && n == 4 && strncmp(w, "sept", 4) == 0))
            return m + 1;
    }
    return 0;
}

/* A word as a day of the month ("31", "31st", "31."), or 0. */
static unsigned word_day(const char *w, size_t n)
{
    size_t i = 0;
    unsigned d = 0;
    while (i < n && i < 2 && isdigit((unsigned char)w[i]))
        d = d * 10 + (unsigned)(w[i++] - '0');
    if (i == 0 || d == 0 || d > 31)
        return 0;
    if (i == n || (i + 1 == n && (w[i] == '.' || w[i] == ',')))
        return d;
    if (n - i >= 2 && (strncmp(w + i, "st", 2) == 0 || strncmp(w + i, "nd", 2) == 0 ||
                       strncmp(w + i, "rd", 2) == 0 || strncmp(w + i, "th", 2) == 0) &&
        (n - i == 2 || (n - i == 3 && (w[i + 2] == ',' || w[i + 2] == '.'))))
        return d;
    return 0;
}

static int word_year(const char *w, size_t n, unsigned y)
{
    if (n > 0 && (w[n - 1] == '.' || w[n - 1] == ','))
        n--;
    return n == 4 && (unsigned)digits(w, 4) == y;
}

/*
 * Looks for the date y-m-d in lower-cased text: "2031-12-31", "31 december
 * 2031", "december 31, 2031", or month and year alone ("december 2031") when
 * no other day stands beside them. The matching text into `found`.
 */
static int find_date(const char *s, size_t len, unsigned y, unsigned m, unsigned d, char *found, size_t cap)
{
    char iso[16];
    snprintf(iso, sizeof iso, "%04u-%02u-%02u", y, m, d);
    for (const char *a = strstr(s, iso); a != NULL; a = strstr(a + 1, iso))
        if ((a == s || !isdigit((unsigned char)a[-1])) && !isdigit((unsigned char)a[10])) {
            snprintf(found, cap, "%s", iso);
            return 1;
        }
    /* words: runs of letters, digits and the punctuation that clings to them */
    enum { WORDS = 4 };
    const char *w[WORDS] = {0};
    size_t wl[WORDS] = {0};
    size_t i = 0;
    int hit = 0;
    while (i < len && !hit) {
        while (i < len && (s[i] == ' ' || s[i] == '(' || s[i] == ')' || s[i] == ':' || s[i] == ';'))
            i++;
        if (i >= len)
            break;
        size_t start = i;
        while (i < len && s[i] != ' ' && s[i] != '(' && s[i] != ')' && s[i] != ':' && s[i] != ';')
            i++;
        memmove(w, w + 1, sizeof w[0] * (WORDS - 1));
        memmove(wl, wl + 1, sizeof wl[0] * (WORDS - 1));
        w[WORDS - 1] = s + start;
        wl[WORDS - 1] = i - start;
        /* the last word a year: look at the words before it */
        if (!word_year(w[3], wl[3], y))
            continue;
        unsigned m2 = w[2] != NULL ? word_month(w[2], wl[2]) : 0;
        unsigned m1 = w[1] != NULL ? word_month(w[1], wl[1]) : 0;
        if (m2 == m) {
            unsigned before = w[1] != NULL ? word_day(w[1], wl[1]) : 0;
            if (before == d || before == 0) {
                const char *from = before == d ? w[1] : w[2];
                size_t n = (size_t)(w[3] + wl[3] - from);
                snprintf(found, cap, "%.*s", (int)(n < cap - 1 ? n : cap - 1), from);
                hit = 1;
            }
        } else if (m1 == m && word_day(w[2], wl[2]) == d) {
            size_t n = (size_t)(w[3] + wl[3] - w[1]);
            snprintf(found, cap, "%.*s", (int)(n < cap - 1 ? n : cap - 1), w[1]);
            hit = 1;
        }
    }
    return hit;
}

static keel_status_t judge_support(pub_t *p, fetched_t *f, unsigned y, unsigned m, unsigned d)
{
    keel_buf_t t;
    keel_buf_init(&t, PUB_DOC_MAX);
    keel_status_t st = plain_text(&f->body, &t);
    char found[128] = "";
    int hit = st == KEEL_OK && find_date(t.len ? (const char *)t.data : "", t.len, y, m, d, found, sizeof found);
    keel_buf_free(&t);
    if (st != KEEL_OK)
        return st;
    if (json_object_set_new(f->info, "found", hit ? json_string(found) : json_null()) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the support period");
    if (!hit)
        return finding(p, "5.3-13", "fail", "the support period's end %04u-%02u-%02u is not stated at %s%s", y, m,
                       d, f->source, f->truncated ? " (its first 64 KiB read)" : "");
    return KEEL_OK;
}

/* ---- the checks ------------------------------------------------------------------- */

static void fetched_init(fetched_t *f, const char *what, const char *source)
{
    memset(f, 0, sizeof *f);
    f->what = what;
    f->source = source;
    keel_buf_init(&f->body, PUB_DOC_MAX);
}

static keel_status_t check_security_txt(pub_t *p)
{
    fetched_t f;
    fetched_init(&f, "security.txt", p->o->security_txt);
    keel_status_t st = get_doc(p, "security_txt", &f);
    if (st == KEEL_OK && f.failure[0])
        st = finding(p, "5.2-1", "fail", "security.txt is not published: %s", f.failure);
    else if (st == KEEL_OK && !f.transport[0])
        st = judge_security_txt(p, &f);
    keel_buf_free(&f.body);
    return st;
}

static keel_status_t check_policy(pub_t *p)
{
    fetched_t f;
    fetched_init(&f, "disclosure policy", p->o->policy);
    keel_status_t st = get_doc(p, "policy", &f);
    if (st == KEEL_OK && f.failure[0])
        st = finding(p, "5.2-1", "fail", "the disclosure policy is not published: %s", f.failure);
    else if (st == KEEL_OK && !f.transport[0])
        st = judge_policy(p, &f);
    keel_buf_free(&f.body);
    return st;
}

static keel_status_t check_support(pub_t *p)
{
    const keel_publication_opts_t *o = p->o;
    unsigned y = 0, m = 0, d = 0;
    keel_status_t st = KEEL_OK;
    json_t *info = json_object();
    if (info == NULL || json_object_set_new(p->doc, "support", info) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the support period");
    if (o->support_end != NULL && parse_ymd(o->support_end, &y, &m, &d) == 0) {
        if (json_object_set_new(info, "end", json_string(o->support_end)) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the support period");
        /* end of that day, UTC */
        long long end = days_from_civil(y, m, d) * 86400 + 86399;
        int ended = end < (long long)p->now;
        if (json_object_set_new(info, "ended", json_boolean(ended)) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the support period");
        if (ended)
            st = finding(p, "5.3-13", "warn", "support has ended: the IXIT gives %s as the end of the support period",
                         o->support_end);
    }
    if (st != KEEL_OK)
        return st;
    if (o->support_at == NULL)
        return finding(p, "5.3-13", "fail",
                       "the IXIT gives an end of support (%s) but no place where it is published", o->support_end);
    fetched_t f;
    fetched_init(&f, "support period", o->support_at);
    st = get_doc(p, "support_page", &f);
    if (st == KEEL_OK && f.failure[0]) {
        st = finding(p, "5.3-13", "fail", "the support period is not published: %s", f.failure);
    } else if (st == KEEL_OK && !f.transport[0]) {
        if (o->support_end == NULL)
            inconclusive(p, "the IXIT gives where the support period is published but not its end date");
        else
            st = judge_support(p, &f, y, m, d);
    }
    keel_buf_free(&f.body);
    return st;
}

keel_status_t keel_assess_publication(const keel_publication_opts_t *o, json_t **out)
{
    if (o == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "publication: no options");
    *out = NULL;
    unsigned y, m, d;
    if (o->support_end != NULL && (strlen(o->support_end) != 10 || parse_ymd(o->support_end, &y, &m, &d) != 0))
        return keel_errorf(KEEL_ERR_ARG, "publication: the end of support '%s' is not a YYYY-MM-DD date",
                           o->support_end);
    const char *srcs[3] = {o->security_txt, o->policy, o->support_at};
    for (size_t i = 0; i < 3; i++)
        if (srcs[i] != NULL && (srcs[i][0] == '\0' || strlen(srcs[i]) >= PUB_URL_MAX))
            return keel_errorf(KEEL_ERR_ARG, "publication: a URL or file of 1..%u characters is needed",
                               PUB_URL_MAX - 1);
    pub_t p = {.o = o, .now = o->now ? o->now : time(NULL)};
    char now[40];
    fmt_utc((long long)p.now, now, sizeof now);
    double t0 = keel_now();
    p.doc = json_pack("{s:s, s:s, s:s, s:[], s:[]}", "format", "keel-assess-publication-1", "probe", "publication",
                      "now", now, "findings", "evidence");
    if (p.doc == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the publication observation");
    keel_status_t st = KEEL_OK;
    if (o->security_txt != NULL)
        st = check_security_txt(&p);
    if (st == KEEL_OK && o->policy != NULL)
        st = check_policy(&p);
    if (st == KEEL_OK && (o->support_end != NULL || o->support_at != NULL))
        st = check_support(&p);
    if (st == KEEL_OK && o->security_txt == NULL && o->policy == NULL && o->support_end == NULL &&
        o->support_at == NULL)
        inconclusive(&p, "the IXIT gives no security.txt, disclosure policy or support period");
    if (st == KEEL_OK)
        st = keel_assess_unit_mark(p.doc, UNIT, p.why[0] ? KEEL_UNIT_INCONCLUSIVE : KEEL_UNIT_RAN,
                                   p.why[0] ? p.why : NULL);
    if (st == KEEL_OK &&
        json_object_set_new(p.doc, "duration_us", json_integer((json_int_t)((keel_now() - t0) * 1e6))) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the publication observation");
    if (st != KEEL_OK) {
        json_decref(p.doc);
        return st;
    }
    *out = p.doc;
    return KEEL_OK;
}

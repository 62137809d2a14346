/*
 * The one place keel assess speaks HTTP: a thin libcurl wrapper with a
 * session (cookies, a bearer token or Basic credentials) and an anonymous
 * twin for requests that must go without them. See keel/assess_http.h.
 *
 * Our buffers are wiped, and so are libcurl's copies of the header lines we
 * give it (credentials among them); libcurl's own request buffer is not.
 * That is the limit of what a lab tool can do with libcurl, and
 * docs/internals/assess-http.md says so.
 */
#include "keel/assess_http.h"

#include "keel/assess_probe.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct keel_http {
    CURL *c;    /* the session: cookies, credentials */
    CURL *anon; /* no cookies, no credentials */
    keel_http_opts_t o;
    char base[KEEL_PROBE_HOST_MAX + 32];
    keel_buf_t auth;  /* "Authorization: ..." line, or empty */
    keel_buf_t csrf;  /* "X-CSRF-Token: ..." line, or empty */
};

static int curl_ready;

static CURL *easy_new(const keel_http_t *h, int cookies)
{
    CURL *c = curl_easy_init();
    if (c == NULL)
        return NULL;
    long tmo = h->o.timeout_ms ? (long)h->o.timeout_ms : 5000L;
    int bad = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, tmo) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, tmo) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
              /* the target only: no proxy from the environment, no other scheme */
              curl_easy_setopt(c, CURLOPT_PROXY, "") != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_NOPROXY, "*") != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL) != CURLE_OK;
    if (!bad && h->o.ca_file != NULL)
        bad = curl_easy_setopt(c, CURLOPT_CAINFO, h->o.ca_file) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
    else if (!bad)
        bad = curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK;
    if (!bad && cookies)
        bad = curl_easy_setopt(c, CURLOPT_COOKIEFILE, "") != CURLE_OK; /* in memory only */
    if (bad) {
        curl_easy_cleanup(c);
        return NULL;
    }
    return c;
}

keel_status_t keel_http_open(const keel_http_opts_t *o, keel_http_t **out)
{
    if (o == NULL || out == NULL || o->host == NULL || o->host[0] == '\0' ||
        strlen(o->host) > KEEL_PROBE_HOST_MAX || o->port == 0 || o->port > 65535)
        return keel_errorf(KEEL_ERR_ARG, "http: a host and a port 1..65535 are needed");
    for (const char *p = o->host; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '/' || *p == '@' || *p == '#' || *p == '?')
            return keel_errorf(KEEL_ERR_ARG, "http: '%s' is not a host name or address", o->host);
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return keel_errorf(KEEL_ERR_NOMEM, "http: libcurl does not start");
        curl_ready = 1;
    }
    keel_http_t *h = calloc(1, sizeof *h);
    if (h == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for an HTTP session");
    h->o = *o;
    /* take_token admits tokens and CSRF values of up to 1023 bytes; Basic
     * credentials take up to 4 KiB (keel_http_login) */
    keel_buf_init(&h->auth, 4096);
    keel_buf_init(&h->csrf, 2048);
    int v6 = strchr(o->host, ':') != NULL;
    snprintf(h->base, sizeof h->base, "%s://%s%s%s:%u", o->tls ? "https" : "http", v6 ? "[" : "", o->host,
             v6 ? "]" : "", o->port);
    h->c = easy_new(h, 1);
    h->anon = easy_new(h, 0);
    if (h->c == NULL || h->anon == NULL) {
        keel_http_close(h);
        return keel_errorf(KEEL_ERR_NOMEM, "http: cannot set up libcurl");
    }
    *out = h;
    return KEEL_OK;
}

void keel_http_close(keel_http_t *h)
{
    if (h == NULL)
        return;
    if (h->c != NULL)
        curl_easy_cleanup(h->c);
    if (h->anon != NULL)
        curl_easy_cleanup(h->anon);
    keel_buf_free(&h->auth);
    keel_buf_free(&h->csrf);
    free(h);
}

const char *keel_http_base(const keel_http_t *h)
{
    return h->base;
}

void keel_http_resp_init(keel_http_resp_t *r)
{
    memset(r, 0, sizeof *r);
    /* hard caps (keel_buf_t), not initial sizes: keel_http_do raises the body's to the session's body_max */
    keel_buf_init(&r->headers, KEEL_HTTP_HEADERS_MAX);
    keel_buf_init(&r->body, KEEL_HTTP_BODY_MAX);
}

void keel_http_resp_free(keel_http_resp_t *r)
{
    if (r == NULL)
        return;
    keel_buf_free(&r->headers);
    keel_buf_free(&r->body);
}

typedef struct {
    keel_buf_t *buf;
    size_t cap;
    int *truncated;
    int failed;
} sink_t;

static size_t body_cb(char *p, size_t size, size_t n, void *arg)
{
    sink_t *s = arg;
    size_t len = size * n;
    size_t room = s->buf->len < s->cap ? s->cap - s->buf->len : 0;
    size_t take = len < room ? len : room;
    if (take < len)
        *s->truncated = 1;
    if (take > 0 && keel_buf_append(s->buf, p, take) != KEEL_OK)
        s->failed = 1;
    /* Past the cap the rest is read and dropped: the answer stays whole. */
    return s->failed ? 0 : len;
}

static size_t header_cb(char *p, size_t size, size_t n, void *arg)
{
    sink_t *s = arg;
    size_t len = size * n;
    /* A new status line (after 1xx or 401 with auth): keep the final block only. */
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
        keel_buf_reset(s->buf);
    size_t room = s->buf->len < s->cap ? s->cap - s->buf->len : 0;
    size_t take = len < room ? len : room;
    if (take > 0 && keel_buf_append(s->buf, p, take) != KEEL_OK)
        s->failed = 1;
    return s->failed ? 0 : len;
}

/* libcurl's copies of our header lines, one of which may hold a credential
 * (Basic, a bearer token, a CSRF token): wiped before they are freed. */
static void headers_free(struct curl_slist *list)
{
    for (struct curl_slist *n = list; n != NULL; n = n->next)
        if (n->data != NULL)
            keel_wipe(n->data, strlen(n->data));
    curl_slist_free_all(list);
}

/* Appends one header line; -1 when out of memory (the list stays valid). */
static int add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *t = curl_slist_append(*list, line);
    if (t == NULL)
        return -1;
    *list = t;
    return 0;
}

static void resp_reset(keel_http_resp_t *r)
{
    r->status = 0;
    keel_buf_reset(&r->headers);
    keel_buf_reset(&r->body);
    r->body_truncated = 0;
    r->duration_us = 0;
    r->err[0] = '\0';
}

keel_status_t keel_http_do(keel_http_t *h, const keel_http_req_t *q, keel_http_resp_t *r)
{
    if (h == NULL || q == NULL || r == NULL || q->path == NULL || q->path[0] != '/')
        return keel_errorf(KEEL_ERR_ARG, "http: a request needs a path from /");
    resp_reset(r);
    CURL *c = q->anonymous ? h->anon : h->c;
    keel_buf_t url;
    keel_buf_init(&url, strlen(h->base) + strlen(q->path) + 1);
    struct curl_slist *hdrs = NULL;
    keel_status_t st = keel_buf_printf(&url, "%s%s", h->base, q->path);
    int truncated = 0, dummy = 0;
    sink_t body = {&r->body, h->o.body_max ? h->o.body_max : KEEL_HTTP_BODY_MAX, &truncated, 0};
    sink_t head = {&r->headers, KEEL_HTTP_HEADERS_MAX, &dummy, 0};
    r->body.cap = body.cap;
    r->headers.cap = head.cap;
    const char *method = q->method != NULL ? q->method : "GET";
    /* "Expect: 100-continue" would add a round trip and a 1xx to every upload. */
    int bad = add_header(&hdrs, "Expect:");
    if (!bad && q->content_type != NULL) {
        char ct[256];
        snprintf(ct, sizeof ct, "Content-Type: %s", q->content_type);
        bad = add_header(&hdrs, ct);
    }
    if (!bad && !q->anonymous && h->auth.len > 0)
        bad = add_header(&hdrs, (const char *)h->auth.data);
    if (!bad && !q->anonymous && h->csrf.len > 0)
        bad = add_header(&hdrs, (const char *)h->csrf.data);
    for (size_t i = 0; !bad && q->headers != NULL && q->headers[i] != NULL; i++)
        bad = add_header(&hdrs, q->headers[i]);
    if (st != KEEL_OK || bad) {
        headers_free(hdrs);
        keel_buf_free(&url);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for an HTTP request");
    }
    int head_req = strcmp(method, "HEAD") == 0;
    bad = curl_easy_setopt(c, CURLOPT_URL, (const char *)url.data) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_cb) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_WRITEDATA, &body) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb) != CURLE_OK ||
          curl_easy_setopt(c, CURLOPT_HEADERDATA, &head) != CURLE_OK;
    if (!bad && q->body != NULL)
        bad = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len) != CURLE_OK ||
              curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body) != CURLE_OK;
    else if (!bad)
        bad = curl_easy_setopt(c, CURLOPT_HTTPGET, 1L) != CURLE_OK;
    /* after the POST/GET switch, which resets the method and clears NOBODY */
    if (!bad)
        bad = curl_easy_setopt(c, CURLOPT_NOBODY, head_req ? 1L : 0L) != CURLE_OK;
    if (!bad && !head_req)
        bad = curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method) != CURLE_OK;
    if (bad) {
        headers_free(hdrs);
        keel_buf_free(&url);
        return keel_errorf(KEEL_ERR_ARG, "http: libcurl refused the request options");
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    (void)curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    curl_off_t us = 0;
    (void)curl_easy_getinfo(c, CURLINFO_TOTAL_TIME_T, &us);
    r->duration_us = (long long)us;
    r->body_truncated = truncated;
    if (rc == CURLE_OK) {
        (void)curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    } else {
        r->status = 0;
        /* libcurl may quote the peer (a certificate's name) and cuts at its
         * buffer's end: printable ASCII only, for sentences and terminals */
        const char *why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
        size_t k = 0;
        for (; why[k] != '\0' && k + 1 < sizeof r->err; k++)
            r->err[k] = (unsigned char)why[k] >= 0x20 && (unsigned char)why[k] < 0x7f ? why[k] : '?';
        r->err[k] = '\0';
    }
    /* The next request must not inherit this one's body or error buffer. */
    (void)curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
    (void)curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
    (void)curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    (void)curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, NULL);
    headers_free(hdrs);
    keel_buf_free(&url);
    if (body.failed || head.failed)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for an HTTP answer");
    return KEEL_OK;
}

int keel_http_header(const keel_http_resp_t *r, const char *name, char *out, size_t cap)
{
    if (r->headers.data == NULL)
        return 0; /* no answer: nothing was ever kept */
    size_t nlen = strlen(name);
    const char *p = (const char *)r->headers.data;
    const char *end = p + r->headers.len;
    while (p != NULL && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol != NULL ? eol : end;
        if ((size_t)(line_end - p) > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (v < line_end && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = line_end;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            if (cap > 0) {
                size_t n = (size_t)(ve - v) < cap - 1 ? (size_t)(ve - v) : cap - 1;
                memcpy(out, v, n);
                out[n] = '\0';
            }
            return 1;
        }
        p = eol != NULL ? eol + 1 : NULL;
    }
    return 0;
}

/* ---- login ---------------------------------------------------------------------- */

static const char *const login_names[] = {"none", "basic", "json", "form"};

const char *keel_http_login_kind_name(keel_http_login_kind_t k)
{
    return (unsigned)k <= KEEL_HTTP_LOGIN_FORM ? login_names[k] : "?";
}

keel_status_t keel_http_login_kind_parse(const char *name, keel_http_login_kind_t *out)
{
    for (unsigned i = 0; name != NULL && i <= KEEL_HTTP_LOGIN_FORM; i++)
        if (strcmp(name, login_names[i]) == 0) {
            *out = (keel_http_login_kind_t)i;
            return KEEL_OK;
        }
    return keel_errorf(KEEL_ERR_ARG, "unknown login kind '%s' (none, basic, json, form)", name ? name : "");
}

/* A JSON string literal of s, into b. */
static keel_status_t json_str(keel_buf_t *b, const char *s)
{
    keel_status_t st = keel_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p && st == KEEL_OK; p++) {
        if (*p == '"' || *p == '\\')
            st = keel_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            st = keel_buf_printf(b, "\\u%04x", *p);
        else
            st = keel_buf_append(b, p, 1);
    }
    return st == KEEL_OK ? keel_buf_append(b, "\"", 1) : st;
}

static keel_status_t form_str(keel_buf_t *b, const char *s)
{
    keel_status_t st = KEEL_OK;
    for (const unsigned char *p = (const unsigned char *)s; *p && st == KEEL_OK; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
            *p == '_' || *p == '.' || *p == '~')
            st = keel_buf_append(b, p, 1);
        else
            st = keel_buf_printf(b, "%%%02X", *p);
    }
    return st;
}

static keel_status_t base64(keel_buf_t *out, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < n && st == KEEL_OK; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        char q[4] = {tab[v >> 18 & 63], tab[v >> 12 & 63], i + 1 < n ? tab[v >> 6 & 63] : '=',
                     i + 2 < n ? tab[v & 63] : '='};
        st = keel_buf_append(out, q, 4);
    }
    return st;
}

void keel_http_forget(keel_http_t *h)
{
    if (h == NULL)
        return;
    keel_buf_reset(&h->auth);
    keel_buf_reset(&h->csrf);
    (void)curl_easy_setopt(h->c, CURLOPT_COOKIELIST, "ALL");
}

/* Takes "token" and "csrf" from a JSON login answer. */
static keel_status_t take_token(keel_http_t *h, const keel_http_resp_t *r)
{
    json_t *j = json_loadb((const char *)r->body.data, r->body.len, JSON_REJECT_DUPLICATES, NULL);
    keel_status_t st = KEEL_OK;
    const char *tok = json_string_value(json_object_get(j, "token"));
    const char *csrf = json_string_value(json_object_get(j, "csrf"));
    if (tok != NULL && strlen(tok) < 1024 && strpbrk(tok, "\r\n") == NULL) {
        keel_buf_reset(&h->auth);
        st = keel_buf_printf(&h->auth, "Authorization: Bearer %s", tok);
    }
    if (st == KEEL_OK && csrf != NULL && strlen(csrf) < 1024 && strpbrk(csrf, "\r\n") == NULL) {
        keel_buf_reset(&h->csrf);
        st = keel_buf_printf(&h->csrf, "X-CSRF-Token: %s", csrf);
    }
    json_decref(j);
    return st;
}

keel_status_t keel_http_login(keel_http_t *h, const keel_http_login_t *l, const char *user, const char *password,
                              int *accepted, keel_http_resp_t *r)
{
    if (h == NULL || l == NULL || l->path == NULL || user == NULL || password == NULL || accepted == NULL ||
        l->kind == KEEL_HTTP_LOGIN_NONE || (unsigned)l->kind > KEEL_HTTP_LOGIN_FORM)
        return keel_errorf(KEEL_ERR_ARG, "http: a login needs a kind, a path, a user and a password");
    *accepted = 0;
    keel_http_resp_t own;
    keel_http_resp_t *rr = r;
    if (rr == NULL) {
        keel_http_resp_init(&own);
        rr = &own;
    }
    keel_buf_t body, cred;
    keel_buf_init(&body, 16384);
    keel_buf_init(&cred, 4096);
    const char *uf = l->user_field ? l->user_field : "username";
    const char *pf = l->password_field ? l->password_field : "password";
    keel_status_t st = KEEL_OK;
    keel_http_req_t q = {.method = "POST", .path = l->path, .anonymous = 1};
    const char *hdr[2] = {NULL, NULL};
    if (l->kind == KEEL_HTTP_LOGIN_BASIC) {
        keel_buf_t pair;
        /* a user and a password of up to 1 KiB each (keeld's cap) */
        keel_buf_init(&pair, 2048 + 1);
        st = keel_buf_printf(&pair, "%s:%s", user, password);
        if (st == KEEL_OK)
            st = keel_buf_append(&cred, "Authorization: Basic ", 21);
        if (st == KEEL_OK)
            st = base64(&cred, pair.data, pair.len);
        keel_buf_free(&pair);
        q.method = "GET";
        hdr[0] = (const char *)cred.data;
        q.headers = hdr;
    } else if (l->kind == KEEL_HTTP_LOGIN_JSON) {
        st = keel_buf_append(&body, "{", 1);
        if (st == KEEL_OK)
            st = json_str(&body, uf);
        if (st == KEEL_OK)
            st = keel_buf_append(&body, ":", 1);
        if (st == KEEL_OK)
            st = json_str(&body, user);
        if (st == KEEL_OK)
            st = keel_buf_append(&body, ",", 1);
        if (st == KEEL_OK)
            st = json_str(&body, pf);
        if (st == KEEL_OK)
            st = keel_buf_append(&body, ":", 1);
        if (st == KEEL_OK)
            st = json_str(&body, password);
        if (st == KEEL_OK)
            st = keel_buf_append(&body, "}", 1);
        q.content_type = "application/json";
    } else {
        st = form_str(&body, uf);
        if (st == KEEL_OK)
            st = keel_buf_append(&body, "=", 1);
        if (st == KEEL_OK)
            st = form_str(&body, user);
        if (st == KEEL_OK)
            st = keel_buf_append(&body, "&", 1);
        if (st == KEEL_OK)
            st = form_str(&body, pf);
        if (st == KEEL_OK)
            st = keel_buf_append(&body, "=", 1);
        if (st == KEEL_OK)
            st = form_str(&body, password);
        q.content_type = "application/x-www-form-urlencoded";
    }
    if (st == KEEL_OK && l->kind != KEEL_HTTP_LOGIN_BASIC) {
        q.body = body.data;
        q.body_len = body.len;
        /* The form and JSON logins go through the session handle: its cookies are the point. */
        q.anonymous = 0;
    }
    if (st == KEEL_OK) {
        /* A login must not carry an older credential with it. */
        keel_buf_t keep_auth = h->auth, keep_csrf = h->csrf;
        keel_buf_init(&h->auth, 16);
        keel_buf_init(&h->csrf, 16);
        st = keel_http_do(h, &q, rr);
        keel_buf_free(&h->auth);
        keel_buf_free(&h->csrf);
        h->auth = keep_auth;
        h->csrf = keep_csrf;
    }
    if (st == KEEL_OK && rr->status >= 200 && rr->status < 400) {
        char cookie[8];
        int fresh_cookie = keel_http_header(rr, "Set-Cookie", cookie, sizeof cookie);
        if (l->kind == KEEL_HTTP_LOGIN_BASIC && rr->status < 300) {
            *accepted = 1;
            keel_buf_reset(&h->auth);
            st = keel_buf_append(&h->auth, cred.data, cred.len);
        } else if (l->kind == KEEL_HTTP_LOGIN_JSON && rr->status < 300) {
            *accepted = 1;
            st = take_token(h, rr);
        } else if (l->kind == KEEL_HTTP_LOGIN_FORM && (rr->status < 300 || fresh_cookie)) {
            *accepted = fresh_cookie;
        }
    }
    keel_buf_free(&body);
    keel_buf_free(&cred);
    if (rr == &own)
        keel_http_resp_free(&own);
    return st;
}

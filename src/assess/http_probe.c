/*
 * keel assess: the HTTP(S) probe of one port (test units http.*). Every
 * request goes through the session of http_client.c except the malformed
 * ones of http.input, which libcurl would refuse to send: those go over a
 * raw socket (with OpenSSL for https). See docs/internals/assess-http.md.
 *
 * The probe judges conservatively: a finding of severity "fail" needs a fact
 * that no conforming device shows (a 2xx that is not the server's answer to
 * every path, a debug page's own words, a default pair accepted, a version in
 * a banner). Everything it cannot tell apart stays info or warn.
 *
 * Secrets: the lab password and the fresh one of http.password_change live in
 * wiped buffers; evidence names them "<lab password>" and "<new password>".
 * Login answers (tokens) are never quoted in evidence.
 */
#define _GNU_SOURCE
#include "keel/assess_http.h"

#include "keel/assess_probe.h"
#include "keel/assess_services.h"

#include "net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTP_BUDGET_DEFAULT_MS 45000u
#define HTTP_BUDGET_MAX_MS 3600000u
#define HTTP_TIMEOUT_DEFAULT_MS 5000u
#define HTTP_TIMEOUT_MAX_MS 60000u
#define BRUTE_DEFAULT 25u
#define BRUTE_MAX 10000u
#define ROUTES_MAX 64u          /* declared routes taken */
#define PATH_MAX_LEN 512u       /* a path the probe builds or takes */
#define WHAT_MAX 320u           /* a finding's text */
#define QUOTE_MAX 80u           /* bytes of target text quoted in a finding */
#define BODY_QUOTE 160u         /* body bytes quoted in evidence */
#define RAW_REPLY_MAX 4096u     /* bytes of a raw answer kept */
#define RAW_WAIT_MAX_MS 3000u   /* a raw request's answer, at most */
#define BIG_HEADER (1024u * 1024u)
#define BIG_BODY (10u * 1024u * 1024u)
#define INJECT_MAX 64u          /* injection requests in http.input */
#define QUERY_ROUTES_MAX 4u     /* declared GET routes given injection in the query */
#define BODY_ROUTES_MAX 3u      /* declared POST/PUT/PATCH routes given bad bodies */
#define RECOVER_MS 5000u        /* how long an unresponsive port is watched */
#define NEW_PASSWORD_LEN 20u
#define GUESS_LEN 16u
#define RETRY_AFTER_WAIT_MAX 10u /* seconds the probe waits on a 429 it must get past */
#define ACCESS_WAIT_MAX_S 15.0 /* seconds waited at the end for the lab's login to work again */

/* ---- the probe's state -------------------------------------------------------------------- */

typedef struct {
    long status;
    keel_buf_t body; /* the first KEEL_HTTP_BODY_MAX bytes */
    char title[96];
} page_t;

typedef struct {
    const keel_http_probe_opts_t *o;
    keel_http_t *h;
    json_t *doc;
    struct sockaddr_storage sa;
    socklen_t salen;
    char addr[64];
    int sni;
    unsigned timeout_ms;
    double t0, end, unit_end;
    unsigned weights_left;
    SSL_CTX *raw_ctx;
    /* the server's answers to "/" and to paths that cannot exist */
    page_t root, missing, missing_dir;
    int ui; /* "/" serves an HTML page: 5.13-1A too */
    /* a Basic challenge seen on the way (for http.default_creds) */
    char basic_path[PATH_MAX_LEN];
    int basic_pref; /* the challenged path ends in '/' */
    /* the login http.default_creds found (kind NONE: none) */
    keel_http_login_t found;
    int login_unjudgeable; /* a declared form login that takes a random pair: its answers mean nothing */
    char found_path[PATH_MAX_LEN], found_user_field[64], found_password_field[64];
    char found_user[64];
    int lab_session; /* the session carries the lab's login */
    json_t *units_info;
    /* the lab password and, during http.password_change, the fresh one: an
     * answer that holds either is never quoted in evidence */
    const char *secret[2];
} probe_t;

static const char *const unit_order[] = {"http.disclosure", "http.auth_sweep", "http.debug", "http.input",
                                         "http.password_change", "http.default_creds", "http.bruteforce"};
static const unsigned unit_weight[] = {1, 3, 2, 4, 2, 3, 3};
#define NUNITS (sizeof unit_order / sizeof unit_order[0])

static keel_status_t nomem(void)
{
    return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the HTTP document");
}

/* Starts unit i: its share of what is left of the budget. */
static void unit_begin(probe_t *p, size_t i)
{
    double now = keel_now(), left = p->end - now;
    if (left < 0)
        left = 0;
    p->unit_end = now + left * unit_weight[i] / (p->weights_left ? p->weights_left : 1);
    p->weights_left -= unit_weight[i];
}

static int time_left(const probe_t *p)
{
    return keel_now() < p->unit_end;
}

static keel_status_t rand_bytes(void *buf, size_t n)
{
    uint8_t *b = buf;
    while (n > 0) {
        ssize_t r = getrandom(b, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return keel_errorf(KEEL_ERR_CRYPTO, "getrandom: %s", strerror(errno));
        b += r;
        n -= (size_t)r;
    }
    return KEEL_OK;
}

/* n random characters of `alphabet` and a NUL into out (n + 1 bytes). */
static keel_status_t rand_text(char *out, size_t n, const char *alphabet)
{
    size_t k = strlen(alphabet);
    uint8_t r[64];
    if (n > sizeof r || k == 0 || k > 256)
        return keel_errorf(KEEL_ERR_ARG, "random text too long");
    keel_status_t st = rand_bytes(r, n);
    for (size_t i = 0; st == KEEL_OK && i < n; i++) {
        /* rejection sampling keeps the choice uniform */
        unsigned lim = 256u - 256u % (unsigned)k;
        while (r[i] >= lim && st == KEEL_OK)
            st = rand_bytes(&r[i], 1);
        out[i] = alphabet[r[i] % k];
    }
    out[st == KEEL_OK ? n : 0] = '\0';
    keel_wipe(r, sizeof r);
    return st;
}

static const char lower_hex[] = "0123456789abcdef";
/* passwords the probe makes up: no look-alike characters */
static const char pw_alphabet[] = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/* ---- text helpers -------------------------------------------------------------------------- */

static const char *ci_find(const void *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    const char *h = hay;
    if (k == 0 || n < k)
        return NULL;
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(h + i, needle, k) == 0)
            return h + i;
    return NULL;
}

static const char *buf_find(const keel_buf_t *b, const char *needle)
{
    return b->data != NULL ? ci_find(b->data, b->len, needle) : NULL;
}

/* Printable ASCII of target text for a finding's sentence, capped. */
static void quote(char *out, size_t cap, const char *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap && o < QUOTE_MAX; i++)
        out[o++] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
    if (cap > 0)
        out[o] = '\0';
}

/* "digit.digit" somewhere in s: a version number. */
static int has_version(const char *s, size_t n)
{
    for (size_t i = 0; i + 2 < n; i++)
        if (isdigit((unsigned char)s[i]) && s[i + 1] == '.' && isdigit((unsigned char)s[i + 2]))
            return 1;
    return 0;
}

static keel_status_t urlenc(keel_buf_t *b, const char *s, size_t n)
{
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < n && st == KEEL_OK; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
            st = keel_buf_append(b, &c, 1);
        else
            st = keel_buf_printf(b, "%%%02X", c);
    }
    return st;
}

static keel_status_t json_quote(keel_buf_t *b, const char *s)
{
    keel_status_t st = keel_buf_append(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c != '\0' && st == KEEL_OK; c++) {
        if (*c == '"' || *c == '\\')
            st = keel_buf_printf(b, "\\%c", *c);
        else if (*c < 0x20)
            st = keel_buf_printf(b, "\\u%04x", *c);
        else
            st = keel_buf_append(b, c, 1);
    }
    return st == KEEL_OK ? keel_buf_append(b, "\"", 1) : st;
}

/* The <title> of an HTML page, or "". */
static void html_title(const keel_buf_t *b, char *out, size_t cap)
{
    out[0] = '\0';
    const char *t = buf_find(b, "<title>");
    if (t == NULL)
        return;
    t += 7;
    const char *end = (const char *)b->data + b->len;
    const char *e = ci_find(t, (size_t)(end - t), "</title>");
    if (e == NULL)
        return;
    quote(out, cap, t, (size_t)(e - t));
}

/* ---- requests and evidence ------------------------------------------------------------------ */

static const char *const shown_headers[] = {"Server", "X-Powered-By", "Content-Type", "WWW-Authenticate",
                                            "Location", "Retry-After"};

/* What came back, for evidence: status, telling headers, the first body bytes. */
static keel_status_t observed(const keel_http_resp_t *r, int redact, keel_buf_t *o)
{
    keel_status_t st;
    if (r->status == 0)
        return keel_buf_printf(o, "no HTTP answer: %s", r->err[0] ? r->err : "connection failed");
    st = keel_buf_printf(o, "HTTP %ld", r->status);
    for (size_t i = 0; st == KEEL_OK && i < sizeof shown_headers / sizeof shown_headers[0]; i++) {
        char v[160];
        if (keel_http_header(r, shown_headers[i], v, sizeof v))
            st = keel_buf_printf(o, "; %s: %s", shown_headers[i], v);
    }
    char v[4];
    if (st == KEEL_OK && keel_http_header(r, "Set-Cookie", v, sizeof v))
        st = keel_buf_printf(o, "; Set-Cookie: (value not kept)");
    if (st == KEEL_OK)
        st = keel_buf_printf(o, "; body %zu bytes%s", r->body.len, r->body_truncated ? "+" : "");
    if (st == KEEL_OK && redact && r->body.len > 0)
        st = keel_buf_printf(o, " (a login answer: not kept)");
    else if (st == KEEL_OK && r->body.len > 0) {
        st = keel_buf_append(o, ": ", 2);
        if (st == KEEL_OK)
            st = keel_buf_append(o, r->body.data, r->body.len < BODY_QUOTE ? r->body.len : BODY_QUOTE);
    }
    return st;
}

/* Does the answer (headers or body) hold a secret of the lab's? A device may
 * echo the password a change set, or a setting page may show it. */
static int holds_secret(const probe_t *p, const keel_http_resp_t *r)
{
    for (size_t i = 0; i < sizeof p->secret / sizeof p->secret[0]; i++) {
        const char *sec = p->secret[i];
        size_t n = sec != NULL ? strlen(sec) : 0;
        if (n == 0)
            continue;
        if ((r->headers.data != NULL && memmem(r->headers.data, r->headers.len, sec, n) != NULL) ||
            (r->body.data != NULL && memmem(r->body.data, r->body.len, sec, n) != NULL))
            return 1;
    }
    return 0;
}

static keel_status_t evidence(probe_t *p, const char *unit, const char *sent, const keel_http_resp_t *r, int redact)
{
    keel_buf_t o;
    keel_buf_init(&o, 2048);
    keel_status_t st = holds_secret(p, r)
                           ? keel_buf_printf(&o, "HTTP %ld; the answer holds a password of the lab's: not kept",
                                             r->status)
                           : observed(r, redact, &o);
    if (st == KEEL_OK)
        st = keel_assess_evidence(p->doc, unit, sent, strlen(sent), (const char *)o.data, o.len, r->duration_us);
    else if (st == KEEL_ERR_TOO_LARGE)
        st = keel_assess_evidence(p->doc, unit, sent, strlen(sent), "(answer summary too long)", 25, r->duration_us);
    keel_buf_free(&o);
    return st;
}

static keel_status_t note(probe_t *p, const char *unit, const char *sent, const char *obs)
{
    return keel_assess_evidence(p->doc, unit, sent, sent ? strlen(sent) : 0, obs, obs ? strlen(obs) : 0, -1);
}

/* One request with its evidence ("METHOD path", plus what went with it). */
static keel_status_t request(probe_t *p, const char *unit, const keel_http_req_t *q, keel_http_resp_t *r)
{
    keel_status_t st = keel_http_do(p->h, q, r);
    if (st != KEEL_OK)
        return st;
    char sent[PATH_MAX_LEN + 128];
    int n = snprintf(sent, sizeof sent, "%s %s", q->method ? q->method : "GET", q->path);
    if (n > 0 && (size_t)n < sizeof sent && q->body != NULL)
        snprintf(sent + n, sizeof sent - (size_t)n, " (%s, %zu bytes)", q->content_type ? q->content_type : "no type",
                 q->body_len);
    n = (int)strlen(sent);
    if (!q->anonymous && (size_t)n < sizeof sent)
        snprintf(sent + n, sizeof sent - (size_t)n, " [with the lab's session]");
    return evidence(p, unit, sent, r, 0);
}

static keel_status_t get(probe_t *p, const char *unit, const char *path, keel_http_resp_t *r)
{
    keel_http_req_t q = {.path = path, .anonymous = 1};
    return request(p, unit, &q, r);
}

static keel_status_t finding(probe_t *p, const char *unit, const char *prov, const char *sev, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static keel_status_t finding(probe_t *p, const char *unit, const char *prov, const char *sev, const char *fmt, ...)
{
    char what[WHAT_MAX];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return keel_assess_unit_finding(p->doc, unit, prov, sev, what);
}

static keel_status_t mark(probe_t *p, const char *unit, keel_unit_state_t s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static keel_status_t mark(probe_t *p, const char *unit, keel_unit_state_t s, const char *fmt, ...)
{
    char why[WHAT_MAX];
    if (fmt == NULL)
        return keel_assess_unit_mark(p->doc, unit, s, NULL);
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return keel_assess_unit_mark(p->doc, unit, s, why);
}

static keel_status_t unit_info(probe_t *p, const char *unit, json_t *info)
{
    if (info == NULL || json_object_set_new(p->units_info, unit, info) != 0)
        return nomem();
    return KEEL_OK;
}

/* ---- pages the server gives every path ----------------------------------------------------- */

static void page_init(page_t *pg)
{
    memset(pg, 0, sizeof *pg);
    keel_buf_init(&pg->body, KEEL_HTTP_BODY_MAX);
}

static keel_status_t page_take(page_t *pg, const keel_http_resp_t *r)
{
    pg->status = r->status;
    keel_buf_reset(&pg->body);
    html_title(&r->body, pg->title, sizeof pg->title);
    /* the session may keep more of a body than a page does: the start is enough to compare */
    size_t n = r->body.len < pg->body.cap ? r->body.len : pg->body.cap;
    return n ? keel_buf_append(&pg->body, r->body.data, n) : KEEL_OK;
}

/* Is `r` the page the server answers anyway (same status, the same or nearly
 * the same body: an SPA fallback, a login page with a fresh nonce)? */
static int same_page(const page_t *pg, const keel_http_resp_t *r)
{
    if (pg->status == 0 || pg->status != r->status)
        return 0;
    size_t a = pg->body.len, b = r->body.len;
    if (a == b && (a == 0 || memcmp(pg->body.data, r->body.data, a) == 0))
        return 1;
    size_t diff = a > b ? a - b : b - a, big = a > b ? a : b;
    if (diff > 64 && diff * 10 > big)
        return 0;
    char t[96];
    html_title(&r->body, t, sizeof t);
    if (t[0] != '\0' || pg->title[0] != '\0')
        return strcmp(t, pg->title) == 0;
    size_t k = a < b ? a : b;
    k = k < 64 ? k : 64;
    return k > 0 && memcmp(pg->body.data, r->body.data, k) == 0;
}

static int fallback(const probe_t *p, const keel_http_resp_t *r)
{
    return same_page(&p->root, r) || same_page(&p->missing, r) || same_page(&p->missing_dir, r);
}

static int is_html(const keel_http_resp_t *r)
{
    char ct[128] = "";
    (void)keel_http_header(r, "Content-Type", ct, sizeof ct);
    return strncasecmp(ct, "text/html", 9) == 0 || strncasecmp(ct, "application/xhtml", 17) == 0 ||
           buf_find(&r->body, "<html") != NULL;
}

/* Notes a Basic challenge for http.default_creds; one ending in '/' is
 * preferred (a server that redirects /admin to /admin/ after the login). */
static void note_challenge(probe_t *p, const char *path, const keel_http_resp_t *r)
{
    char v[64];
    if (r->status != 401 || !keel_http_header(r, "WWW-Authenticate", v, sizeof v) || strncasecmp(v, "Basic", 5) != 0)
        return;
    size_t n = strlen(path);
    int pref = n > 0 && path[n - 1] == '/';
    if ((p->basic_path[0] == '\0' || (pref && !p->basic_pref)) && n < sizeof p->basic_path) {
        memcpy(p->basic_path, path, n + 1);
        p->basic_pref = pref;
    }
}

/* ---- looks like settings ------------------------------------------------------------------- */

static const char *const setting_words[] = {
    "password", "passwd", "pwd", "pass", "secret", "token", "apikey", "ssid", "wpa", "psk", "wifi", "wlan",
    "admin", "username", "user", "login", "config", "setting", "ip", "ipaddr", "gateway", "dns", "netmask",
    "subnet", "dhcp", "mac", "port", "server", "host", "hostname", "smtp", "ftp", "telnet", "ssh", "ntp",
    "timezone", "firmware", "upnp", "remote", "proxy", "key", "cert", "mqtt", "broker", "cloud", "email",
    "mask", "route", "lan", "wan", "pppoe", "account", "credential", "auth"};

/* A key made of tokens (split at non-alphanumerics and camel humps), one of
 * them a setting word (or starting with a long one). */
static int setting_key(const char *k, size_t n)
{
    char tok[64];
    size_t t = 0;
    for (size_t i = 0; i <= n; i++) {
        int end = i == n || !isalnum((unsigned char)k[i]) ||
                  (i > 0 && isupper((unsigned char)k[i]) && islower((unsigned char)k[i - 1]));
        if (end && t > 0) {
            tok[t] = '\0';
            for (size_t w = 0; w < sizeof setting_words / sizeof setting_words[0]; w++) {
                size_t wl = strlen(setting_words[w]);
                if (strcmp(tok, setting_words[w]) == 0 || (wl >= 5 && strncmp(tok, setting_words[w], wl) == 0))
                    return 1;
            }
            t = 0;
        }
        if (i < n && isalnum((unsigned char)k[i]) && t + 1 < sizeof tok)
            tok[t++] = (char)tolower((unsigned char)k[i]);
    }
    return 0;
}

static unsigned json_setting_keys(json_t *j, int depth, unsigned *seen)
{
    unsigned n = 0;
    if (depth > 4 || *seen > 400)
        return 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            (*seen)++;
            n += (unsigned)setting_key(k, strlen(k));
            n += json_setting_keys(v, depth + 1, seen);
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            if (i >= 16)
                break;
            n += json_setting_keys(v, depth + 1, seen);
        }
    }
    return n;
}

/* A settings document: a JSON object with setting-like keys, key=value lines
 * (INI, shell, .env) or XML with setting-like elements. Never HTML. */
static int looks_like_settings(const keel_buf_t *b, char *kind, size_t kcap)
{
    const char *s = (const char *)b->data;
    size_t n = b->len;
    if (s == NULL || n == 0)
        return 0;
    size_t i = 0;
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    if (i < n && s[i] == '{') {
        json_t *j = json_loadb(s, n, 0, NULL);
        unsigned seen = 0, k = json_is_object(j) ? json_setting_keys(j, 0, &seen) : 0;
        json_decref(j);
        if (k >= 2) {
            snprintf(kind, kcap, "a JSON object with %u setting-like keys", k);
            return 1;
        }
        return 0;
    }
    if (ci_find(s, n, "<html") != NULL || ci_find(s, n, "<!doctype") != NULL || ci_find(s, n, "<body") != NULL)
        return 0;
    if (i < n && s[i] == '<') {
        unsigned k = 0;
        for (size_t j = i; j + 1 < n; j++) {
            if (s[j] != '<' || !isalpha((unsigned char)s[j + 1]))
                continue;
            size_t e = j + 1;
            while (e < n && (isalnum((unsigned char)s[e]) || s[e] == '_' || s[e] == '-'))
                e++;
            k += (unsigned)setting_key(s + j + 1, e - j - 1);
        }
        if (k >= 2) {
            snprintf(kind, kcap, "XML with %u setting-like elements", k);
            return 1;
        }
        return 0;
    }
    unsigned lines = 0, kv = 0, keys = 0;
    for (size_t a = 0; a < n;) {
        const char *nl = memchr(s + a, '\n', n - a);
        size_t e = nl ? (size_t)(nl - s) : n;
        size_t x = a;
        while (x < e && (s[x] == ' ' || s[x] == '\t'))
            x++;
        if (x < e && s[x] != '#' && s[x] != ';' && s[x] != '\r') {
            lines++;
            size_t k0 = x;
            if (isalpha((unsigned char)s[x]) || s[x] == '_') {
                while (x < e && (isalnum((unsigned char)s[x]) || s[x] == '_' || s[x] == '.' || s[x] == '-'))
                    x++;
                size_t k1 = x;
                while (x < e && (s[x] == ' ' || s[x] == '\t'))
                    x++;
                if (x < e && s[x] == '=' && k1 - k0 <= 64) {
                    kv++;
                    keys += (unsigned)setting_key(s + k0, k1 - k0);
                }
            } else if (s[x] == '[' && memchr(s + x, ']', e - x) != NULL) {
                kv++; /* an INI section */
            }
        }
        a = e + 1;
    }
    if (kv >= 3 && keys >= 1 && kv * 10 >= lines * 5) {
        snprintf(kind, kcap, "%u key=value lines, %u of them setting-like", kv, keys);
        return 1;
    }
    return 0;
}

/* ---- http.disclosure (5.6-2) ---------------------------------------------------------------- */

static const char *const banner_headers[] = {"Server", "X-Powered-By", "X-AspNet-Version", "X-AspNetMvc-Version",
                                             "X-Generator", "X-Server", "X-Version", "X-Firmware-Version",
                                             "X-Software-Version", "MicrosoftSharePointTeamServices", "Via"};

static const char *const products[] = {
    "Apache", "nginx", "lighttpd", "Microsoft-IIS", "IIS", "Jetty", "Tomcat", "Apache-Coyote", "PHP", "Express",
    "Werkzeug", "Python", "OpenSSL", "Boa", "GoAhead", "mini_httpd", "thttpd", "uhttpd", "Mongoose", "Civetweb",
    "Node.js", "node", "Kestrel", "JBoss", "WildFly", "GlassFish", "gunicorn", "uvicorn", "libevent", "BusyBox",
    "Debian", "Ubuntu", "OpenWrt", "Linux", "ASP.NET", "Django", "Flask", "Rails", "Ruby", "Perl", "Java", "Go"};

static const char *const internals[] = {
    "Traceback (most recent call last)", "Exception in thread", "at java.", "java.lang.", "goroutine ", "panic: ",
    "Stack trace:", "stack trace", "System.NullReferenceException", "System.Web.", "Fatal error: ", "Parse error: ",
    "Warning: ", "on line <b>", "node_modules/", "at Object.<anonymous>", "at Module._compile", "#0 /",
    "File \"/", "/var/www/", "/home/", "/usr/local/", "/usr/lib/", "/usr/share/", "/opt/", "/srv/", "/root/",
    "C:\\", "c:\\", "\\inetpub\\", "SQL syntax", "SQLSTATE", "sqlite3.", "SQLITE_ERROR", "ORA-0", "PostgreSQL",
    "pg_query", "mysql_", "MySqlException", "unrecognized token", "syntax error at or near", "ODBC",
    "Unclosed quotation mark", "Microsoft .NET Framework Version", "Server at "};

/* A product name followed by a version ("Apache/2.4.57", "PHP 8.1"). */
static int product_version(const char *s, size_t n, char *out, size_t cap)
{
    for (size_t i = 0; i < sizeof products / sizeof products[0]; i++) {
        size_t k = strlen(products[i]);
        const char *at = s;
        size_t left = n;
        const char *f;
        while ((f = ci_find(at, left, products[i])) != NULL) {
            const char *v = f + k, *end = s + n;
            int word = f == s || !isalnum((unsigned char)f[-1]);
            if (word && v < end && (*v == '/' || *v == ' ' || *v == '-' || *v == '('))
                v++;
            if (word && v < end && (*v == 'v' || *v == 'V'))
                v++;
            if (word && (size_t)(end - v) >= 3 && has_version(v, 3)) {
                quote(out, cap, f, (size_t)(end - f) < k + 12 ? (size_t)(end - f) : k + 12);
                return 1;
            }
            left = (size_t)(end - (f + 1));
            at = f + 1;
        }
    }
    return 0;
}

/* A version in a Via header beyond the protocol each hop names ("1.1 gw" is
 * HTTP/1.1, not software): in the received-by or the comment of an entry. */
static int via_version(const char *v)
{
    while (*v != '\0') {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        while (*v != '\0' && *v != ' ' && *v != '\t' && *v != ',')
            v++; /* the received-protocol */
        const char *e = strchr(v, ',');
        size_t n = e != NULL ? (size_t)(e - v) : strlen(v);
        if (has_version(v, n))
            return 1;
        v += n;
    }
    return 0;
}

static keel_status_t judge_headers(probe_t *p, const char *u, const char *path, const keel_http_resp_t *r,
                                   unsigned *named)
{
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; st == KEEL_OK && i < sizeof banner_headers / sizeof banner_headers[0]; i++) {
        char v[256], q[QUOTE_MAX + 1];
        if (!keel_http_header(r, banner_headers[i], v, sizeof v) || v[0] == '\0')
            continue;
        quote(q, sizeof q, v, strlen(v));
        /* one finding per header name, not one per request */
        unsigned bit = 1u << i;
        if (*named & bit)
            continue;
        *named |= bit;
        if (strcmp(banner_headers[i], "Via") == 0 ? via_version(v) : has_version(v, strlen(v)))
            st = finding(p, u, "5.6-2", "fail", "the %s header gives a software version: \"%s\" (answer to %s)",
                         banner_headers[i], q, path);
        else
            st = finding(p, u, "5.6-2", "info", "the %s header names the software without a version: \"%s\"",
                         banner_headers[i], q);
    }
    return st;
}

static keel_status_t judge_error_page(probe_t *p, const char *u, const char *what, const keel_http_resp_t *r)
{
    if (r->status < 400 || r->body.len == 0)
        return KEEL_OK;
    char q[QUOTE_MAX + 1];
    const char *s = (const char *)r->body.data;
    if (product_version(s, r->body.len, q, sizeof q))
        return finding(p, u, "5.6-2", "fail", "the error page for %s gives a software version: \"%s\"", what, q);
    for (size_t i = 0; i < sizeof internals / sizeof internals[0]; i++) {
        const char *f = buf_find(&r->body, internals[i]);
        if (f == NULL)
            continue;
        size_t left = r->body.len - (size_t)(f - s);
        quote(q, sizeof q, f, left < 60 ? left : 60);
        return finding(p, u, "5.6-2", "fail",
                       "the error page for %s shows internals (stack trace, file path or database error): \"%s\"",
                       what, q);
    }
    return KEEL_OK;
}

static keel_status_t unit_disclosure(probe_t *p, const keel_http_resp_t *root)
{
    const char *u = "http.disclosure";
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    unsigned named = 0;
    char rnd[17], path[64];
    keel_status_t st = rand_text(rnd, 16, lower_hex);
    if (st == KEEL_OK)
        st = judge_headers(p, u, "GET /", root, &named);
    /* a path that does not exist, an unknown method, a broken escape */
    static const struct {
        const char *method, *prefix, *suffix, *what;
    } asks[] = {{"GET", "/keel-probe-", ".php", "a missing page"},
                {"KEELPROBE", "/", NULL, "an unknown method"},
                {"GET", "/keel-probe-", "/%zz", "a broken %-escape"}};
    unsigned asked = 0;
    for (size_t i = 0; st == KEEL_OK && i < sizeof asks / sizeof asks[0] && time_left(p); i++) {
        snprintf(path, sizeof path, "%s%s%s", asks[i].prefix, asks[i].suffix ? rnd : "",
                 asks[i].suffix ? asks[i].suffix : "");
        keel_http_req_t q = {.method = asks[i].method, .path = path, .anonymous = 1};
        st = request(p, u, &q, &r);
        if (st != KEEL_OK || r.status == 0)
            continue;
        asked++;
        char what[96];
        snprintf(what, sizeof what, "%s (%s %s)", asks[i].what, asks[i].method, path);
        st = judge_headers(p, u, what, &r, &named);
        if (st == KEEL_OK)
            st = judge_error_page(p, u, what, &r);
    }
    if (st == KEEL_OK)
        st = asked ? mark(p, u, KEEL_UNIT_RAN, "banner headers of %u answer(s) and %u error page(s) examined",
                          asked + 1, asked)
                   : mark(p, u, KEEL_UNIT_INCONCLUSIVE, "no error page could be fetched within the budget");
    keel_http_resp_free(&r);
    return st;
}

/* ---- http.auth_sweep (5.5-4, 5.5-5) ------------------------------------------------------ */

static const char *const admin_paths[] = {
    "/admin", "/admin/", "/administrator/", "/config", "/config/", "/config.json", "/config.xml", "/config.ini",
    "/config.txt", "/config.bak", "/configuration", "/settings", "/settings.json", "/setup", "/setup.cgi",
    "/system.ini", "/system.cfg", "/backup.cfg", "/backup.conf", "/config.cfg", "/device.cfg", "/api/config",
    "/api/settings", "/api/system", "/api/v1/config", "/api/v1/settings", "/api/admin", "/cgi-bin/config.exp",
    "/cgi-bin/admin.cgi", "/cgi-bin/config.cgi", "/cgi-bin/luci", "/cgi-bin/export.cgi", "/goform/getSysInfo",
    "/web.config", "/.htpasswd", "/etc/config", "/nvram.cfg", "/rom-0", "/management", "/manager/html"};

static keel_status_t unit_auth_sweep(probe_t *p)
{
    const char *u = "http.auth_sweep";
    const keel_http_probe_opts_t *o = p->o;
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    keel_status_t st = KEEL_OK;
    unsigned routes = 0, paths = 0, skipped = 0, open_declared = 0, open_admin = 0;
    for (size_t i = 0; st == KEEL_OK && i < o->routes_len && i < ROUTES_MAX; i++) {
        const keel_http_route_t *rt = &o->routes[i];
        if (!rt->needs_auth || rt->path == NULL || rt->path[0] != '/' || rt->method == NULL)
            continue;
        if (!time_left(p)) {
            skipped++;
            continue;
        }
        int body = strcmp(rt->method, "POST") == 0 || strcmp(rt->method, "PUT") == 0 ||
                   strcmp(rt->method, "PATCH") == 0;
        keel_http_req_t q = {.method = rt->method, .path = rt->path, .anonymous = 1};
        if (body) {
            q.content_type = "application/json";
            q.body = "{}";
            q.body_len = 2;
        }
        st = request(p, u, &q, &r);
        if (st != KEEL_OK)
            break;
        routes++;
        note_challenge(p, rt->path, &r);
        if (r.status >= 200 && r.status < 300) {
            const char *prov = rt->security_relevant ? "5.5-5" : "5.5-4";
            if (fallback(p, &r))
                st = finding(p, u, prov, "info",
                             "%s %s answered HTTP %ld without authentication, but with the page the server gives "
                             "any path (not the route's own answer)",
                             rt->method, rt->path, r.status);
            else {
                open_declared++;
                st = finding(p, u, prov, "fail",
                             "%s %s is declared to need authentication, yet answered HTTP %ld without any", rt->method,
                             rt->path, r.status);
            }
        }
    }
    for (size_t i = 0; st == KEEL_OK && i < sizeof admin_paths / sizeof admin_paths[0]; i++) {
        if (!time_left(p)) {
            skipped++;
            continue;
        }
        st = get(p, u, admin_paths[i], &r);
        if (st != KEEL_OK)
            break;
        paths++;
        note_challenge(p, admin_paths[i], &r);
        char kind[96];
        if (r.status >= 200 && r.status < 300 && !fallback(p, &r) && looks_like_settings(&r.body, kind, sizeof kind)) {
            open_admin++;
            st = finding(p, u, "5.5-4", "fail", "GET %s answered HTTP %ld without authentication with settings (%s)",
                         admin_paths[i], r.status, kind);
        }
    }
    if (st == KEEL_OK)
        st = unit_info(p, u,
                       json_pack("{s:i, s:i, s:i, s:i, s:i}", "declared_routes_sent", (int)routes,
                                 "common_paths_sent", (int)paths, "skipped_for_budget", (int)skipped,
                                 "declared_open", (int)open_declared, "common_open", (int)open_admin));
    if (st == KEEL_OK) {
        if (routes == 0 && paths == 0)
            st = mark(p, u, KEEL_UNIT_INCONCLUSIVE, "the time budget ran out before any request");
        else if (skipped > 0)
            st = mark(p, u, KEEL_UNIT_INCONCLUSIVE, "%u request(s) not sent: the time budget ran out", skipped);
        else
            st = mark(p, u, KEEL_UNIT_RAN, "%u declared route(s) and %u common admin/config path(s) sent anonymously",
                      routes, paths);
    }
    keel_http_resp_free(&r);
    return st;
}

/* ---- http.debug (5.6-4A) ------------------------------------------------------------------ */

typedef struct {
    const char *path;
    const char *needles[4]; /* any one of them, in a 2xx answer */
} debug_path_t;

static const debug_path_t debug_paths[] = {
    {"/debug/pprof/", {"Types of profiles available", "/debug/pprof/goroutine", NULL}},
    {"/debug/vars", {"\"memstats\"", "\"cmdline\"", NULL}},
    {"/debug", {"/debug/pprof", "Werkzeug Debugger", "debugger", NULL}},
    {"/console", {"Werkzeug", "Interactive Console", "Script Console", NULL}},
    {"/shell", {"name=\"cmd\"", "Web Shell", "uid=", NULL}},
    {"/server-status", {"Apache Server Status", "Server-Status (", "Active connections:", "Total Accesses:"}},
    {"/status?full", {"Active connections:", "Total Accesses:", "Server-Status (", NULL}},
    {"/server-info", {"Apache Server Information", "Server Settings", NULL}},
    {"/server-config", {"Server-Features", "mod_status", NULL}},
    {"/phpinfo.php", {"phpinfo()", "PHP Version", "PHP License", NULL}},
    {"/info.php", {"phpinfo()", "PHP Version", NULL}},
    {"/actuator", {"\"_links\"", NULL}},
    {"/actuator/env", {"propertySources", "activeProfiles", NULL}},
    {"/env", {"propertySources", "activeProfiles", NULL}},
    {"/.git/HEAD", {"ref: refs/", NULL}},
    {"/.git/config", {"repositoryformatversion", NULL}},
    {"/.svn/entries", {"svn:", "dir\n", NULL}},
    {"/.env", {NULL}}, /* judged as KEY=VALUE lines */
    {"/cgi-bin/test-cgi", {"CGI/1.0 test script report", "SERVER_SOFTWARE = ", NULL}},
    {"/cgi-bin/printenv", {"SERVER_SOFTWARE=", "DOCUMENT_ROOT=", NULL}},
    {"/cgi-bin/printenv.pl", {"SERVER_SOFTWARE=", "DOCUMENT_ROOT=", NULL}},
    {"/jmx", {"\"beans\"", NULL}},
    {"/jolokia", {"\"agent\"", "jolokia", NULL}},
    {"/_profiler", {"Symfony Profiler", NULL}},
    {"/elmah.axd", {"Error Log for", NULL}},
    {"/trace.axd", {"Application Trace", NULL}},
    {"/debug/default/view", {"Yii Debugger", NULL}},
    {"/telnet.cgi", {"telnetd", "Telnet", NULL}},
};

/* .env: at least two KEY=VALUE lines with upper-case keys, and no HTML. */
static int dotenv(const keel_buf_t *b)
{
    const char *s = (const char *)b->data;
    if (s == NULL || buf_find(b, "<html") != NULL)
        return 0;
    unsigned kv = 0;
    for (size_t a = 0; a < b->len;) {
        const char *nl = memchr(s + a, '\n', b->len - a);
        size_t e = nl ? (size_t)(nl - s) : b->len, x = a;
        while (x < e && (isupper((unsigned char)s[x]) || isdigit((unsigned char)s[x]) || s[x] == '_'))
            x++;
        if (x > a + 1 && x < e && s[x] == '=' && isupper((unsigned char)s[a]))
            kv++;
        a = e + 1;
    }
    return kv >= 2;
}

static keel_status_t unit_debug(probe_t *p)
{
    const char *u = "http.debug";
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    keel_status_t st = KEEL_OK;
    unsigned sent = 0, skipped = 0, open = 0;
    for (size_t i = 0; st == KEEL_OK && i < sizeof debug_paths / sizeof debug_paths[0]; i++) {
        if (!time_left(p)) {
            skipped++;
            continue;
        }
        const debug_path_t *d = &debug_paths[i];
        st = get(p, u, d->path, &r);
        if (st != KEEL_OK)
            break;
        sent++;
        note_challenge(p, d->path, &r);
        if (r.status < 200 || r.status >= 300 || fallback(p, &r))
            continue;
        const char *hit = NULL;
        for (size_t k = 0; k < 4 && d->needles[k] != NULL && hit == NULL; k++)
            if (buf_find(&r.body, d->needles[k]) != NULL)
                hit = d->needles[k];
        if (d->needles[0] == NULL && dotenv(&r.body))
            hit = "KEY=VALUE lines";
        if (hit == NULL)
            continue;
        open++;
        char q[QUOTE_MAX + 1];
        quote(q, sizeof q, hit, strlen(hit));
        st = finding(p, u, "5.6-4A", "fail",
                     "the debug or diagnostic endpoint %s answers without authentication (HTTP %ld, \"%s\")", d->path,
                     r.status, q);
    }
    if (st == KEEL_OK)
        st = unit_info(p, u, json_pack("{s:i, s:i, s:i}", "paths_sent", (int)sent, "skipped_for_budget",
                                        (int)skipped, "open", (int)open));
    if (st == KEEL_OK) {
        if (sent == 0)
            st = mark(p, u, KEEL_UNIT_INCONCLUSIVE, "the time budget ran out before any request");
        else if (skipped > 0 && open == 0)
            st = mark(p, u, KEEL_UNIT_INCONCLUSIVE, "%u path(s) not tried: the time budget ran out", skipped);
        else
            st = mark(p, u, KEEL_UNIT_RAN, "%u debug and diagnostic path(s) tried", sent);
    }
    keel_http_resp_free(&r);
    return st;
}

/* ---- raw connections (http.input) ---------------------------------------------------------- */

typedef struct {
    int fd;
    SSL *ssl;
} raw_t;

static void raw_close(raw_t *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        /* RST: the server must not keep a half-read request for us */
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        close(c->fd);
        c->fd = -1;
    }
    ERR_clear_error();
}

/* 0, or -1 with the reason in why. */
static int raw_open(probe_t *p, raw_t *c, double deadline, char *why, size_t cap)
{
    c->ssl = NULL;
    c->fd = keel_assess_tcp_connect(&p->sa, p->salen, deadline, why, cap);
    if (c->fd < 0)
        return -1;
    if (p->raw_ctx == NULL)
        return 0;
    c->ssl = keel_assess_tls_new(p->raw_ctx, c->fd, p->sni ? p->o->http.host : NULL);
    if (c->ssl == NULL) {
        snprintf(why, cap, "TLS setup failed");
        raw_close(c);
        return -1;
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    int e = 0;
    if (keel_assess_tls_handshake(c->ssl, c->fd, deadline, &e) == 1)
        return 0;
    snprintf(why, cap, "TLS handshake failed");
    raw_close(c);
    return -1;
}

/* Sends all of d; 0, or -1 when the peer closed, reset or the deadline passed. */
static int raw_send(raw_t *c, const void *d, size_t n, double deadline)
{
    const uint8_t *b = d;
    size_t off = 0;
    while (off < n) {
        size_t chunk = n - off < 16384 ? n - off : 16384;
        if (c->ssl != NULL) {
            int w = SSL_write(c->ssl, b + off, (int)chunk);
            if (w > 0) {
                off += (size_t)w;
                continue;
            }
            int e = SSL_get_error(c->ssl, w);
            if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
                keel_assess_wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline))
                continue;
            return -1;
        }
        ssize_t w = send(c->fd, b + off, chunk, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
            keel_assess_wait_fd(c->fd, POLLOUT, deadline))
            continue;
        return -1;
    }
    return 0;
}

/* Reads the answer's head (up to the blank line, cap bytes or the peer's
 * close). *how: "answered", "closed", "reset", "timeout". */
static size_t raw_recv(raw_t *c, uint8_t *buf, size_t cap, double deadline, const char **how)
{
    size_t n = 0;
    *how = "timeout";
    while (n < cap) {
        if (c->ssl == NULL || SSL_pending(c->ssl) == 0) {
            if (!keel_assess_wait_fd(c->fd, POLLIN, deadline))
                break;
        }
        ssize_t k;
        if (c->ssl != NULL) {
            int rr = SSL_read(c->ssl, buf + n, (int)(cap - n));
            if (rr <= 0) {
                int e = SSL_get_error(c->ssl, rr);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    continue;
                *how = e == SSL_ERROR_ZERO_RETURN ? "closed" : (errno == ECONNRESET ? "reset" : "closed");
                break;
            }
            k = rr;
        } else {
            k = recv(c->fd, buf + n, cap - n, 0);
            if (k < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (k <= 0) {
                *how = k < 0 && errno == ECONNRESET ? "reset" : "closed";
                break;
            }
        }
        n += (size_t)k;
        if (memmem(buf, n, "\r\n\r\n", 4) != NULL || memmem(buf, n, "\n\n", 2) != NULL) {
            *how = "answered";
            break;
        }
    }
    if (n > 0 && strcmp(*how, "answered") != 0)
        *how = "answered";
    return n;
}

/* The status code of "HTTP/1.x NNN", or 0. */
static long raw_status(const uint8_t *b, size_t n)
{
    if (n < 12 || memcmp(b, "HTTP/", 5) != 0)
        return 0;
    const uint8_t *sp = memchr(b, ' ', n < 16 ? n : 16);
    if (sp == NULL || (size_t)(sp - b) + 4 > n || !isdigit(sp[1]) || !isdigit(sp[2]) || !isdigit(sp[3]))
        return 0;
    return (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
}

/* A broken or oversized request: prefix, fill_len times fill, suffix. */
typedef struct {
    const char *name;
    const char *prefix;
    size_t prefix_len; /* 0: strlen */
    char fill;
    size_t fill_len;
    const char *suffix;
} raw_req_t;

typedef struct {
    unsigned requests, warn5xx, dead;
    int stop; /* the port stopped answering for good */
} input_t;

static int server_error(long s)
{
    /* 501 and 505 are the right answers to an unknown method or version; 503 may be a throttle */
    return s >= 500 && s <= 599 && s != 501 && s != 503 && s != 505;
}

static keel_status_t input_finding(probe_t *p, const char *sev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static keel_status_t input_finding(probe_t *p, const char *sev, const char *fmt, ...)
{
    char what[WHAT_MAX];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    keel_status_t st = keel_assess_unit_finding(p->doc, "http.input", "5.13-1B", sev, what);
    if (st == KEEL_OK && p->ui)
        st = keel_assess_unit_finding(p->doc, "http.input", "5.13-1A", sev, what);
    return st;
}

static keel_status_t raw_one(probe_t *p, input_t *in, const raw_req_t *rq)
{
    const char *u = "http.input";
    double t0 = keel_now();
    unsigned wait_ms = p->timeout_ms < RAW_WAIT_MAX_MS ? p->timeout_ms : RAW_WAIT_MAX_MS;
    double deadline = t0 + wait_ms / 1000.0;
    /* the big ones get time to go out: 10 MiB at a few MiB/s */
    if (rq->fill_len >= BIG_HEADER)
        deadline += (double)rq->fill_len / (8.0 * 1024 * 1024) + 2.0;
    if (deadline > p->unit_end + 1.0)
        deadline = p->unit_end + 1.0;
    char why[128] = "";
    uint8_t reply[RAW_REPLY_MAX];
    size_t n = 0;
    const char *how = "no connection";
    size_t plen = rq->prefix_len ? rq->prefix_len : strlen(rq->prefix);
    raw_t c = {.fd = -1};
    int sent_all = 0;
    if (raw_open(p, &c, deadline, why, sizeof why) == 0) {
        static const char zeros[16384];
        char fillbuf[16384];
        memset(fillbuf, rq->fill, sizeof fillbuf);
        const char *fb = rq->fill ? fillbuf : zeros;
        int bad = raw_send(&c, rq->prefix, plen, deadline);
        for (size_t left = rq->fill_len; !bad && left > 0;) {
            size_t k = left < sizeof fillbuf ? left : sizeof fillbuf;
            bad = raw_send(&c, fb, k, deadline);
            left -= k;
        }
        if (!bad && rq->suffix != NULL)
            bad = raw_send(&c, rq->suffix, strlen(rq->suffix), deadline);
        sent_all = !bad;
        /* a server that answers early (413, 400) and closes is fine: read what it said */
        n = raw_recv(&c, reply, sizeof reply, deadline > keel_now() ? deadline : keel_now() + 0.5, &how);
        raw_close(&c);
    }
    in->requests++;
    long status = raw_status(reply, n);
    keel_buf_t s, o;
    keel_buf_init(&s, 1024);
    keel_buf_init(&o, 1024);
    keel_status_t st = keel_buf_printf(&s, "raw %s: ", rq->name);
    if (st == KEEL_OK)
        st = keel_buf_append(&s, rq->prefix, plen < 200 ? plen : 200);
    if (st == KEEL_OK && rq->fill_len > 0)
        st = keel_buf_printf(&s, " ... + %zu bytes of 0x%02x", rq->fill_len, (unsigned)(unsigned char)rq->fill);
    if (st == KEEL_OK && rq->suffix != NULL)
        st = keel_buf_append(&s, rq->suffix, strlen(rq->suffix));
    if (st == KEEL_OK && n == 0)
        st = keel_buf_printf(&o, "no answer (%s%s%s); ", how, why[0] ? ": " : "", why);
    if (st == KEEL_OK)
        st = keel_buf_printf(&o, "%s%s",
                             sent_all ? "request sent whole" : "request not sent whole (peer closed or stalled)",
                             n > 0 ? "; answer: " : "");
    if (st == KEEL_OK && n > 0)
        st = keel_buf_append(&o, reply, n < 200 ? n : 200);
    if (st == KEEL_OK)
        st = keel_assess_evidence(p->doc, u, (const char *)s.data, s.len, (const char *)o.data, o.len,
                                  (long long)((keel_now() - t0) * 1e6));
    if (st == KEEL_OK && server_error(status)) {
        in->warn5xx++;
        char code[8];
        snprintf(code, sizeof code, "%ld", status);
        st = input_finding(p, "warn", "the malformed request \"%s\" caused a server error (HTTP %s)", rq->name, code);
    }
    if (st == KEEL_OK && n > 0 && memmem(reply, n, "root:x:0:0", 10) != NULL)
        st = input_finding(p, "fail", "the request \"%s\" read the system's password file (%s)", rq->name,
                           "root:x:0:0 in the answer");
    keel_buf_free(&s);
    keel_buf_free(&o);
    return st;
}

/* After a burst: the port must still answer a plain GET /. */
static keel_status_t alive_after(probe_t *p, input_t *in, const char *burst)
{
    const char *u = "http.input";
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    keel_status_t st = get(p, u, "/", &r);
    if (st == KEEL_OK && r.status == 0) {
        in->dead++;
        double t0 = keel_now();
        int back = 0;
        while (!back && keel_now() - t0 < RECOVER_MS / 1000.0 && st == KEEL_OK) {
            usleep(500000);
            st = keel_http_do(p->h, &(keel_http_req_t){.path = "/", .anonymous = 1}, &r);
            back = st == KEEL_OK && r.status != 0;
        }
        char rec[96];
        if (back)
            snprintf(rec, sizeof rec, "it answered again %.1f s later", keel_now() - t0);
        else
            snprintf(rec, sizeof rec, "it still did not answer %u s later", RECOVER_MS / 1000);
        if (st == KEEL_OK)
            st = note(p, u, "GET / (recovery watch)", rec);
        if (st == KEEL_OK)
            st = input_finding(p, "fail", "after the burst of %s the port no longer answered a plain request; %s",
                               burst, rec);
        if (!back)
            in->stop = 1;
    }
    keel_http_resp_free(&r);
    return st;
}

static const char *const sql_errors[] = {"SQL syntax", "SQLSTATE", "sqlite3.", "SQLITE_ERROR", "ORA-0",
                                         "pg_query", "syntax error at or near", "unrecognized token",
                                         "Unclosed quotation mark", "mysql_fetch", "MySqlException", "ODBC"};

/* uid=N( as `id` prints it */
static int shows_id(const keel_buf_t *b)
{
    const char *s = (const char *)b->data;
    for (size_t i = 0; s != NULL && i + 6 < b->len; i++)
        if (memcmp(s + i, "uid=", 4) == 0 && isdigit((unsigned char)s[i + 4])) {
            size_t k = i + 4;
            while (k < b->len && isdigit((unsigned char)s[k]))
                k++;
            if (k < b->len && s[k] == '(')
                return 1;
        }
    return 0;
}

typedef struct {
    const char *kind; /* "shell", "sql", "format" */
    const char *text;
} payload_t;

static const payload_t payloads[] = {{"shell", ";id"},           {"shell", "$(id)"}, {"shell", "`id`|id"},
                                     {"sql", "' OR '1'='1' -- "}, {"sql", "\"; DROP TABLE x; --"},
                                     {"format", "%n%n%n%n%s%s%s%s%x%x"}};
#define NPAYLOADS (sizeof payloads / sizeof payloads[0])

/* Judges one answer to an injection or traversal request. */
static keel_status_t judge_answer(probe_t *p, input_t *in, const char *sent, const char *kind,
                                  const keel_http_resp_t *r)
{
    keel_status_t st = KEEL_OK;
    if (server_error(r->status)) {
        in->warn5xx++;
        char code[16];
        snprintf(code, sizeof code, "HTTP %ld", r->status);
        st = input_finding(p, "warn", "%s caused a server error (%s)", sent, code);
    }
    if (st == KEEL_OK && buf_find(&r->body, "root:x:0:0") != NULL && buf_find(&p->root.body, "root:x:0:0") == NULL)
        st = input_finding(p, "fail", "%s read the system's password file (%s)", sent, "root:x:0:0 in the answer");
    if (st == KEEL_OK && strcmp(kind, "shell") == 0 && shows_id(&r->body) && !shows_id(&p->root.body))
        st = input_finding(p, "fail", "%s ran a shell command on the device (%s)", sent, "uid=... in the answer");
    for (size_t i = 0; st == KEEL_OK && strcmp(kind, "sql") == 0 && i < sizeof sql_errors / sizeof sql_errors[0]; i++)
        if (buf_find(&r->body, sql_errors[i]) != NULL && buf_find(&p->root.body, sql_errors[i]) == NULL) {
            st = input_finding(p, "fail", "%s reached a database unescaped (the answer shows \"%s\")", sent,
                               sql_errors[i]);
            break;
        }
    return st;
}

static int route_has_body(const keel_http_route_t *rt)
{
    return strcmp(rt->method, "POST") == 0 || strcmp(rt->method, "PUT") == 0 || strcmp(rt->method, "PATCH") == 0;
}

static keel_status_t input_query(probe_t *p, input_t *in, const char *method, const char *path, int session,
                                 const payload_t *pl, keel_http_resp_t *r)
{
    keel_buf_t b;
    keel_buf_init(&b, PATH_MAX_LEN + 256);
    keel_status_t st = keel_buf_append(&b, path, strcspn(path, "?"));
    if (st == KEEL_OK)
        st = keel_buf_append(&b, "?q=", 3);
    if (st == KEEL_OK)
        st = urlenc(&b, pl->text, strlen(pl->text));
    if (st == KEEL_OK)
        st = keel_buf_append(&b, "&id=", 4);
    if (st == KEEL_OK)
        st = urlenc(&b, pl->text, strlen(pl->text));
    if (st == KEEL_OK) {
        keel_http_req_t q = {.method = method, .path = (const char *)b.data, .anonymous = !session};
        st = request(p, "http.input", &q, r);
        in->requests++;
    }
    if (st == KEEL_OK) {
        char sent[PATH_MAX_LEN];
        snprintf(sent, sizeof sent, "%s %s with %s injection in the query", method, path, pl->kind);
        st = judge_answer(p, in, sent, pl->kind, r);
    }
    keel_buf_free(&b);
    return st == KEEL_ERR_TOO_LARGE ? KEEL_OK : st;
}

static keel_status_t input_body(probe_t *p, input_t *in, const keel_http_route_t *rt, const char *what,
                                const char *kind, const char *body, size_t len, keel_http_resp_t *r)
{
    keel_http_req_t q = {.method = rt->method, .path = rt->path, .content_type = "application/json", .body = body,
                         .body_len = len, .anonymous = 1};
    keel_status_t st = request(p, "http.input", &q, r);
    in->requests++;
    if (st == KEEL_OK) {
        char sent[PATH_MAX_LEN];
        snprintf(sent, sizeof sent, "%s %s with %s", rt->method, rt->path, what);
        st = judge_answer(p, in, sent, kind, r);
    }
    return st;
}

static keel_status_t lab_login(probe_t *p, const char *unit, keel_http_resp_t *r, int *ok);

static keel_status_t unit_input(probe_t *p)
{
    const char *u = "http.input";
    const keel_http_probe_opts_t *o = p->o;
    input_t in = {0};
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    keel_status_t st = KEEL_OK;
    sigset_t old; /* a TLS write to a closed peer must not end the program */
    keel_assess_sigpipe_block(&old);

    /* burst 1: broken request lines and headers */
    static const char nul_line[] = "GET /\0\0\0 HTTP/1.1\r\nHost: x\r\n\r\n";
    static const raw_req_t broken[] = {
        {"garbage request line", "KEEL\x01\x02 PROBE\r\n\r\n", 0, 0, 0, NULL},
        {"unknown HTTP version", "GET / HTTP/9.9\r\nHost: x\r\n\r\n", 0, 0, 0, NULL},
        {"header without colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", 0, 0, 0, NULL},
        {"NUL bytes in the request line", nul_line, sizeof nul_line - 1, 0, 0, NULL},
        {"bad chunked encoding",
         "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
         "ZZZZ\r\n\r\n",
         0, 0, 0, NULL},
        {"negative Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 0, 0, 0, NULL},
        {"two Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 0, 0,
         0, NULL},
        {"relative traversal target", "GET ../../../../../../etc/passwd HTTP/1.0\r\n\r\n", 0, 0, 0, NULL},
    };
    /* burst 2: oversized */
    static const raw_req_t big[] = {
        {"64 KiB request target", "GET /", 0, 'a', 64u * 1024u, " HTTP/1.1\r\nHost: x\r\n\r\n"},
        {"1 MiB header", "GET / HTTP/1.1\r\nHost: x\r\nX-Keel-Probe: ", 0, 'a', BIG_HEADER, "\r\n\r\n"},
        {"10 MiB body",
         "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 10485760\r\n\r\n", 0,
         'a', BIG_BODY, NULL},
        {"Content-Length beyond 64 bits",
         "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 0, 0, 0, NULL},
    };
    const struct {
        const char *name;
        const raw_req_t *reqs;
        size_t n;
    } bursts[] = {{"malformed request lines and headers", broken, sizeof broken / sizeof broken[0]},
                  {"oversized requests", big, sizeof big / sizeof big[0]}};
    unsigned skipped = 0;
    for (size_t b = 0; st == KEEL_OK && !in.stop && b < sizeof bursts / sizeof bursts[0]; b++) {
        for (size_t i = 0; st == KEEL_OK && i < bursts[b].n; i++) {
            if (!time_left(p)) {
                skipped++;
                continue;
            }
            st = raw_one(p, &in, &bursts[b].reqs[i]);
        }
        if (st == KEEL_OK)
            st = alive_after(p, &in, bursts[b].name);
    }
    keel_assess_sigpipe_restore(&old);

    /* burst 3: path traversal */
    static const char *const traversal[] = {
        "/../../../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/static/../../../../../../etc/passwd",
        "/....//....//....//....//etc/passwd", "/cgi-bin/../../../../../../etc/passwd",
        "/?file=../../../../../../etc/passwd", "/%c0%ae%c0%ae/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd"};
    for (size_t i = 0; st == KEEL_OK && !in.stop && i < sizeof traversal / sizeof traversal[0]; i++) {
        if (!time_left(p)) {
            skipped++;
            continue;
        }
        st = get(p, u, traversal[i], &r);
        in.requests++;
        if (st == KEEL_OK) {
            char sent[PATH_MAX_LEN];
            snprintf(sent, sizeof sent, "GET %s", traversal[i]);
            st = judge_answer(p, &in, sent, "traversal", &r);
        }
    }
    if (st == KEEL_OK && !in.stop)
        st = alive_after(p, &in, "path traversals");

    /* burst 4: bodies that are not what a JSON route expects (anonymous: the
     * parsing before authentication is what an attacker reaches, and no
     * request of ours may change the device's state) */
    static const char nul_json[] = "{\"a\":\"\0\0\0\"}";
    char deep[4097];
    memset(deep, '[', 2048);
    memset(deep + 2048, ']', 2048);
    deep[4096] = '\0';
    const struct {
        const char *what, *body;
        size_t len;
    } bodies[] = {{"invalid JSON", "{\"a\":", 5},
                  {"NUL bytes in JSON", nul_json, sizeof nul_json - 1},
                  {"JSON nested 2048 deep", deep, 4096},
                  {"a number beyond double", "{\"a\":1e999999}", 14}};
    unsigned body_routes = 0, inject = 0;
    for (size_t i = 0; st == KEEL_OK && !in.stop && i < o->routes_len && i < ROUTES_MAX; i++) {
        const keel_http_route_t *rt = &o->routes[i];
        if (rt->path == NULL || rt->path[0] != '/' || rt->method == NULL || !route_has_body(rt) ||
            body_routes == BODY_ROUTES_MAX)
            continue;
        body_routes++;
        for (size_t k = 0; st == KEEL_OK && k < sizeof bodies / sizeof bodies[0]; k++) {
            if (!time_left(p)) {
                skipped++;
                continue;
            }
            st = input_body(p, &in, rt, bodies[k].what, "body", bodies[k].body, bodies[k].len, &r);
        }
        for (size_t k = 0; st == KEEL_OK && k < NPAYLOADS && inject < INJECT_MAX; k++) {
            if (!time_left(p)) {
                skipped++;
                continue;
            }
            keel_buf_t jb;
            keel_buf_init(&jb, 1024);
            const char *fields[] = {"name", "value", "id", "username", "password"};
            st = keel_buf_append(&jb, "{", 1);
            for (size_t f = 0; st == KEEL_OK && f < sizeof fields / sizeof fields[0]; f++) {
                st = keel_buf_printf(&jb, "%s\"%s\":", f ? "," : "", fields[f]);
                if (st == KEEL_OK)
                    st = json_quote(&jb, payloads[k].text);
            }
            if (st == KEEL_OK)
                st = keel_buf_append(&jb, "}", 1);
            char what[64];
            snprintf(what, sizeof what, "%s injection in JSON fields", payloads[k].kind);
            if (st == KEEL_OK)
                st = input_body(p, &in, rt, what, payloads[k].kind, (const char *)jb.data, jb.len, &r);
            inject++;
            keel_buf_free(&jb);
        }
    }
    if (st == KEEL_OK && !in.stop && body_routes > 0)
        st = alive_after(p, &in, "malformed bodies");

    /* burst 5: injection in the query of the declared GET routes (up to
     * QUERY_ROUTES_MAX of them, with the lab's session when there is one: a
     * GET must not change anything), then of "/" */
    int session = 0;
    if (st == KEEL_OK && o->login.kind != KEEL_HTTP_LOGIN_NONE && o->user != NULL && o->password != NULL &&
        time_left(p))
        st = lab_login(p, u, &r, &session);
    unsigned query_routes = 0;
    for (size_t i = 0; st == KEEL_OK && !in.stop && i <= o->routes_len && i <= ROUTES_MAX; i++) {
        const keel_http_route_t *rt = i < o->routes_len && i < ROUTES_MAX ? &o->routes[i] : NULL;
        if (rt != NULL && (rt->path == NULL || rt->path[0] != '/' || rt->method == NULL ||
                           strcmp(rt->method, "GET") != 0 || query_routes == QUERY_ROUTES_MAX))
            continue;
        query_routes += rt != NULL;
        for (size_t k = 0; st == KEEL_OK && k < NPAYLOADS && inject < INJECT_MAX; k++) {
            if (!time_left(p)) {
                skipped++;
                continue;
            }
            st = input_query(p, &in, "GET", rt ? rt->path : "/", rt && session && rt->needs_auth, &payloads[k], &r);
            inject++;
        }
    }
    /* SQL injection into the declared login: two tries, below any sane lockout */
    if (st == KEEL_OK && !in.stop && o->login.kind != KEEL_HTTP_LOGIN_NONE && time_left(p)) {
        char rnd[GUESS_LEN + 1];
        st = rand_text(rnd, GUESS_LEN, "abcdefghijkmnpqrstuvwxyz23456789");
        const char *users[2] = {"admin' OR '1'='1' -- ", o->user ? o->user : "admin"};
        const char *pws[2] = {rnd, "' OR '1'='1' -- "};
        for (int k = 0; st == KEEL_OK && k < 2; k++) {
            int acc = 0;
            keel_http_forget(p->h);
            p->lab_session = 0;
            st = keel_http_login(p->h, &o->login, users[k], pws[k], &acc, &r);
            in.requests++;
            char sent[PATH_MAX_LEN];
            snprintf(sent, sizeof sent, "login at %s with SQL injection in the %s", o->login.path,
                     k == 0 ? "user name (random password)" : "password");
            if (st == KEEL_OK)
                st = evidence(p, u, sent, &r, 1);
            if (st == KEEL_OK && acc)
                st = input_finding(p, "fail", "%s was accepted: %s", sent, "the login can be bypassed");
            if (st == KEEL_OK)
                st = judge_answer(p, &in, sent, "sql", &r);
        }
        keel_http_forget(p->h);
        keel_wipe(rnd, sizeof rnd);
    }
    if (st == KEEL_OK && !in.stop)
        st = alive_after(p, &in, "injection strings");
    if (st == KEEL_OK)
        st = unit_info(p, u,
                       json_pack("{s:i, s:i, s:i, s:i, s:b}", "requests", (int)in.requests, "server_errors",
                                 (int)in.warn5xx, "unresponsive_after_bursts", (int)in.dead,
                                 "skipped_for_budget", (int)skipped, "ui", p->ui));
    if (st == KEEL_OK) {
        if (in.stop)
            st = mark(p, u, KEEL_UNIT_RAN, "the port stopped answering; the remaining bursts were not sent");
        else if (skipped > 0)
            st = mark(p, u, KEEL_UNIT_INCONCLUSIVE, "%u request(s) not sent: the time budget ran out", skipped);
        else
            st = mark(p, u, KEEL_UNIT_RAN, "%u malformed, oversized and injection request(s) in bursts", in.requests);
    }
    keel_http_resp_free(&r);
    return st;
}

/* ---- logins ---------------------------------------------------------------------------------- */

static unsigned retry_after(const keel_http_resp_t *r)
{
    char v[32];
    if (!keel_http_header(r, "Retry-After", v, sizeof v))
        return 0;
    char *end = NULL;
    unsigned long s = strtoul(v, &end, 10);
    return end != v && *end == '\0' && s < 86400 ? (unsigned)s : 0;
}

/* One login with the declared login; a 429 whose Retry-After fits is waited
 * out once. `label` names the password in evidence. */
static keel_status_t login_as(probe_t *p, const char *unit, const keel_http_login_t *l, const char *user,
                              const char *password, const char *label, keel_http_resp_t *r, int *accepted)
{
    keel_status_t st = KEEL_OK;
    for (int attempt = 0; attempt < 2 && st == KEEL_OK; attempt++) {
        keel_http_forget(p->h);
        p->lab_session = 0;
        st = keel_http_login(p->h, l, user, password, accepted, r);
        char sent[PATH_MAX_LEN];
        snprintf(sent, sizeof sent, "%s login at %s as %s with %s", keel_http_login_kind_name(l->kind), l->path, user,
                 label);
        if (st == KEEL_OK)
            st = evidence(p, unit, sent, r, 1);
        unsigned wait = r->status == 429 ? retry_after(r) : 0;
        if (st != KEEL_OK || r->status != 429 || attempt == 1 || wait == 0 || wait > RETRY_AFTER_WAIT_MAX ||
            keel_now() + wait > p->unit_end)
            break;
        sleep(wait);
    }
    return st;
}

static keel_status_t lab_login(probe_t *p, const char *unit, keel_http_resp_t *r, int *ok)
{
    keel_status_t st = login_as(p, unit, &p->o->login, p->o->user, p->o->password, "<lab password>", r, ok);
    p->lab_session = st == KEEL_OK && *ok;
    return st;
}

/* ---- http.password_change (5.1-4) ------------------------------------------------------------- */

static keel_status_t change_request(probe_t *p, const char *cur, const char *cur_label, const char *nw,
                                    const char *new_label, keel_http_resp_t *r)
{
    const keel_http_pwchange_t *c = &p->o->password_change;
    const char *cf = c->current_field ? c->current_field : "current";
    const char *nf = c->new_field ? c->new_field : "new";
    keel_buf_t b;
    /* two passwords of up to 1 KiB, each escaped at worst 6 bytes for 1 */
    keel_buf_init(&b, 16384);
    keel_status_t st;
    keel_http_req_t q = {.method = "POST", .path = c->path};
    if (c->kind == KEEL_HTTP_LOGIN_JSON) {
        st = keel_buf_append(&b, "{", 1);
        if (st == KEEL_OK)
            st = json_quote(&b, cf);
        if (st == KEEL_OK)
            st = keel_buf_append(&b, ":", 1);
        if (st == KEEL_OK)
            st = json_quote(&b, cur);
        if (st == KEEL_OK)
            st = keel_buf_append(&b, ",", 1);
        if (st == KEEL_OK)
            st = json_quote(&b, nf);
        if (st == KEEL_OK)
            st = keel_buf_append(&b, ":", 1);
        if (st == KEEL_OK)
            st = json_quote(&b, nw);
        if (st == KEEL_OK)
            st = keel_buf_append(&b, "}", 1);
        q.content_type = "application/json";
    } else {
        st = urlenc(&b, cf, strlen(cf));
        if (st == KEEL_OK)
            st = keel_buf_append(&b, "=", 1);
        if (st == KEEL_OK)
            st = urlenc(&b, cur, strlen(cur));
        if (st == KEEL_OK)
            st = keel_buf_append(&b, "&", 1);
        if (st == KEEL_OK)
            st = urlenc(&b, nf, strlen(nf));
        if (st == KEEL_OK)
            st = keel_buf_append(&b, "=", 1);
        if (st == KEEL_OK)
            st = urlenc(&b, nw, strlen(nw));
        q.content_type = "application/x-www-form-urlencoded";
    }
    if (st == KEEL_OK) {
        q.body = b.data;
        q.body_len = b.len;
        st = keel_http_do(p->h, &q, r);
    }
    if (st == KEEL_OK) {
        char sent[PATH_MAX_LEN];
        snprintf(sent, sizeof sent, "POST %s {%s: %s, %s: %s} [with the lab's session]", c->path, cf, cur_label, nf,
                 new_label);
        st = evidence(p, "http.password_change", sent, r, 0);
    }
    keel_buf_free(&b);
    return st;
}

static int ok2xx(const keel_http_resp_t *r, int form)
{
    return (r->status >= 200 && r->status < 300) || (form && r->status >= 300 && r->status < 400);
}

static keel_status_t unit_password_change(probe_t *p)
{
    const char *u = "http.password_change";
    const keel_http_probe_opts_t *o = p->o;
    if (o->password_change.kind == KEEL_HTTP_LOGIN_NONE || o->password_change.path == NULL)
        return mark(p, u, KEEL_UNIT_NOT_APPLICABLE, "no password change mechanism is declared for this port");
    if (o->login.kind == KEEL_HTTP_LOGIN_NONE || o->login.path == NULL)
        return mark(p, u, KEEL_UNIT_INCONCLUSIVE, "a password change is declared but no login to use it with");
    if (o->user == NULL || o->password == NULL)
        return mark(p, u, KEEL_UNIT_INCONCLUSIVE, "a password change is declared but the lab has no credentials");
    if (o->password_change.kind != KEEL_HTTP_LOGIN_JSON && o->password_change.kind != KEEL_HTTP_LOGIN_FORM)
        return mark(p, u, KEEL_UNIT_INCONCLUSIVE, "the declared password change is neither JSON nor a form");
    int form = o->password_change.kind == KEEL_HTTP_LOGIN_FORM;
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    /* 20 characters, lower, upper, digits and a symbol each: any sane policy takes it */
    char fresh[NEW_PASSWORD_LEN + 1];
    keel_status_t st = rand_text(fresh, NEW_PASSWORD_LEN - 4, pw_alphabet);
    if (st == KEEL_OK) {
        char tail[5];
        st = rand_text(tail, 4, "23456789");
        memcpy(fresh + NEW_PASSWORD_LEN - 4, "aZ", 2);
        fresh[NEW_PASSWORD_LEN - 2] = tail[0];
        fresh[NEW_PASSWORD_LEN - 1] = '-';
        fresh[NEW_PASSWORD_LEN] = '\0';
        keel_wipe(tail, sizeof tail);
        p->secret[1] = fresh;
    }
    const char *lab = o->password;
    int ok = 0, old_ok = 0, new_ok = 0;
    const char *verdict = NULL; /* an inconclusive reason */
    char why[WHAT_MAX] = "";
    if (st == KEEL_OK)
        st = lab_login(p, u, &r, &ok);
    if (st == KEEL_OK && !ok) {
        snprintf(why, sizeof why, "the lab credentials were refused at %s (HTTP %ld)", o->login.path, r.status);
        verdict = why;
    }
    if (st == KEEL_OK && verdict == NULL)
        st = change_request(p, lab, "<lab password>", fresh, "<new password>", &r);
    if (st == KEEL_OK && verdict == NULL && !ok2xx(&r, form)) {
        snprintf(why, sizeof why, "the declared change at %s refused the lab's request (HTTP %ld): %s",
                 o->password_change.path, r.status,
                 r.status == 422 || r.status == 400 ? "the new password or the fields may not suit it"
                                                    : "no change was made");
        verdict = why;
    }
    int changed = st == KEEL_OK && verdict == NULL;
    if (changed)
        st = login_as(p, u, &o->login, o->user, lab, "<lab password> (now the old one)", &r, &old_ok);
    if (changed && st == KEEL_OK)
        st = login_as(p, u, &o->login, o->user, fresh, "<new password>", &r, &new_ok);
    if (changed && st == KEEL_OK) {
        if (old_ok && !new_ok)
            st = finding(p, u, "5.1-4", "fail",
                         "the change at %s was answered as done, yet the old password still logs in and the new one "
                         "does not",
                         o->password_change.path);
        else if (old_ok)
            st = finding(p, u, "5.1-4", "fail", "after the change at %s the old password still logs in",
                         o->password_change.path);
    }
    /* change back: from a session of the new password (or the old one if that is all that works) */
    int restored = !changed;
    if (changed && st == KEEL_OK) {
        if (new_ok) {
            for (int attempt = 0; attempt < 2 && !restored && st == KEEL_OK; attempt++) {
                int in = 0;
                st = login_as(p, u, &o->login, o->user, fresh, "<new password>", &r, &in);
                if (st == KEEL_OK && in)
                    st = change_request(p, fresh, "<new password>", lab, "<lab password>", &r);
                restored = st == KEEL_OK && in && ok2xx(&r, form);
                if (!restored && attempt == 0 && st == KEEL_OK)
                    sleep(1);
            }
            int back_old = 0, back_new = 0;
            if (restored && st == KEEL_OK)
                st = login_as(p, u, &o->login, o->user, fresh, "<new password> (now the old one)", &r, &back_new);
            if (restored && st == KEEL_OK)
                st = login_as(p, u, &o->login, o->user, lab, "<lab password>", &r, &back_old);
            if (st == KEEL_OK && (!restored || !back_old)) {
                restored = 0;
                snprintf(why, sizeof why,
                         "CHANGE-BACK FAILED: the password of '%s' could not be set back to the lab password; the "
                         "device may now only accept a random password the probe did not keep: reset it",
                         o->user);
                verdict = why;
            }
        } else if (old_ok) {
            restored = 1; /* nothing took effect */
        } else {
            snprintf(why, sizeof why,
                     "LAB ACCESS LOST: after the change neither the old nor the new password of '%s' logs in; "
                     "reset the device",
                     o->user);
            verdict = why;
        }
    }
    keel_wipe(fresh, sizeof fresh);
    p->secret[1] = NULL;
    keel_http_forget(p->h);
    p->lab_session = 0;
    if (st == KEEL_OK)
        st = unit_info(p, u, json_pack("{s:b, s:b, s:b, s:b}", "changed", changed, "old_refused", changed && !old_ok,
                                        "new_accepted", new_ok, "restored", restored));
    if (st == KEEL_OK)
        st = verdict ? mark(p, u, KEEL_UNIT_INCONCLUSIVE, "%s", verdict)
                     : mark(p, u, KEEL_UNIT_RAN,
                            "changed to a fresh password, checked old refused and new accepted, changed back");
    keel_http_resp_free(&r);
    return st;
}

/* ---- http.default_creds (5.1-1) --------------------------------------------------------------- */

static const char *const login_paths[] = {"/login", "/login.html", "/login.htm", "/login.cgi", "/login.php",
                                          "/cgi-bin/login.cgi", "/api/login", "/api/v1/login", "/api/session",
                                          "/api/v1/session", "/api/auth/login", "/auth/login", "/user/login",
                                          "/api/user/login", "/goform/login", "/"};

/* The value of attribute `name` within the tag [t, e) into out. */
static int tag_attr(const char *t, const char *e, const char *name, char *out, size_t cap)
{
    size_t k = strlen(name);
    for (const char *s = t; s + k + 1 < e; s++) {
        if (strncasecmp(s, name, k) != 0 || s[k] != '=' || (s > t && isalnum((unsigned char)s[-1])))
            continue;
        const char *v = s + k + 1, *ve;
        if (*v == '"' || *v == '\'') {
            char qc = *v++;
            ve = memchr(v, qc, (size_t)(e - v));
        } else {
            ve = v;
            while (ve < e && !isspace((unsigned char)*ve) && *ve != '>')
                ve++;
        }
        if (ve == NULL || (size_t)(ve - v) >= cap)
            return 0;
        memcpy(out, v, (size_t)(ve - v));
        out[ve - v] = '\0';
        return 1;
    }
    return 0;
}

static int field_name_ok(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.' && *s != '[' && *s != ']')
            return 0;
    return 1;
}

/* A login form in an HTML page: its action and the names of the user and
 * password inputs. */
static int find_form(probe_t *p, const char *page_path, const keel_buf_t *b)
{
    const char *s = (const char *)b->data, *end = s != NULL ? s + b->len : NULL;
    const char *pw = s ? ci_find(s, b->len, "type=\"password\"") : NULL;
    if (pw == NULL && s != NULL)
        pw = ci_find(s, b->len, "type='password'");
    if (pw == NULL && s != NULL)
        pw = ci_find(s, b->len, "type=password");
    if (pw == NULL)
        return 0;
    /* the form around it */
    const char *form = NULL;
    for (const char *f = s; (f = ci_find(f, (size_t)(pw - f), "<form")) != NULL; f++)
        form = f;
    char action[PATH_MAX_LEN] = "";
    if (form != NULL) {
        const char *fe = memchr(form, '>', (size_t)(end - form));
        if (fe != NULL)
            (void)tag_attr(form, fe, "action", action, sizeof action);
    }
    char ufield[64] = "", pfield[64] = "";
    for (const char *t = form ? form : s; t < end && (t = ci_find(t, (size_t)(end - t), "<input")) != NULL; t++) {
        const char *te = memchr(t, '>', (size_t)(end - t));
        if (te == NULL)
            break;
        char type[16] = "text", name[64] = "";
        (void)tag_attr(t, te, "type", type, sizeof type);
        if (!tag_attr(t, te, "name", name, sizeof name) || !field_name_ok(name))
            continue;
        if (strcasecmp(type, "password") == 0 && pfield[0] == '\0')
            snprintf(pfield, sizeof pfield, "%s", name);
        else if ((strcasecmp(type, "text") == 0 || strcasecmp(type, "email") == 0) && ufield[0] == '\0' &&
                 pfield[0] == '\0')
            snprintf(ufield, sizeof ufield, "%s", name);
        if (ci_find(t, (size_t)(te - t), "</form") != NULL)
            break;
    }
    if (pfield[0] == '\0' || ufield[0] == '\0')
        return 0;
    /* the action as a path of this server */
    char path[PATH_MAX_LEN];
    if (action[0] == '\0' || strcmp(action, "#") == 0)
        snprintf(path, sizeof path, "%s", page_path);
    else if (action[0] == '/' && action[1] != '/')
        snprintf(path, sizeof path, "%s", action);
    else if (strstr(action, "://") == NULL && action[0] != '/') {
        const char *slash = strrchr(page_path, '/');
        int dl = slash ? (int)(slash - page_path) + 1 : 1;
        snprintf(path, sizeof path, "%.*s%s", dl, page_path, action);
    } else
        return 0;
    /* printable ASCII only: the path goes into the document as it is */
    for (const char *c = path; *c; c++)
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f || *c == '"' || *c == '<' || *c == '>')
            return 0;
    snprintf(p->found_path, sizeof p->found_path, "%s", path);
    snprintf(p->found_user_field, sizeof p->found_user_field, "%s", ufield);
    snprintf(p->found_password_field, sizeof p->found_password_field, "%s", pfield);
    p->found = (keel_http_login_t){KEEL_HTTP_LOGIN_FORM, p->found_path, p->found_user_field, p->found_password_field};
    return 1;
}

/* Is the found login usable to judge? A random pair must be refused. */
static keel_status_t login_refuses_random(probe_t *p, const char *u, const keel_http_login_t *l, int *refuses)
{
    char ru[13], rp[GUESS_LEN + 1];
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    keel_status_t st = rand_text(ru, 12, "abcdefghijkmnpqrstuvwxyz");
    if (st == KEEL_OK)
        st = rand_text(rp, GUESS_LEN, pw_alphabet);
    int acc = 1;
    if (st == KEEL_OK) {
        keel_http_forget(p->h);
        st = keel_http_login(p->h, l, ru, rp, &acc, &r);
    }
    if (st == KEEL_OK) {
        char sent[PATH_MAX_LEN];
        snprintf(sent, sizeof sent, "%s login at %s with a random user and password (must be refused)",
                 keel_http_login_kind_name(l->kind), l->path);
        st = evidence(p, u, sent, &r, 1);
    }
    *refuses = st == KEEL_OK && !acc && (r.status == 401 || r.status == 403 || r.status == 200 || r.status == 400);
    if (l->kind == KEEL_HTTP_LOGIN_BASIC)
        *refuses = *refuses && r.status == 401;
    keel_http_forget(p->h);
    keel_http_resp_free(&r);
    keel_wipe(rp, sizeof rp);
    return st;
}

/* When no login is declared: a Basic challenge seen by the sweeps, else a
 * login form or a JSON login at a common path. */
static keel_status_t discover_login(probe_t *p, const char *u)
{
    keel_status_t st = KEEL_OK;
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    if (p->basic_path[0] != '\0') {
        snprintf(p->found_path, sizeof p->found_path, "%s", p->basic_path);
        p->found = (keel_http_login_t){KEEL_HTTP_LOGIN_BASIC, p->found_path, NULL, NULL};
    }
    for (size_t i = 0; st == KEEL_OK && p->found.kind == KEEL_HTTP_LOGIN_NONE &&
                       i < sizeof login_paths / sizeof login_paths[0] && time_left(p);
         i++) {
        st = get(p, u, login_paths[i], &r);
        if (st != KEEL_OK)
            break;
        note_challenge(p, login_paths[i], &r);
        if (p->basic_path[0] != '\0') {
            snprintf(p->found_path, sizeof p->found_path, "%s", p->basic_path);
            p->found = (keel_http_login_t){KEEL_HTTP_LOGIN_BASIC, p->found_path, NULL, NULL};
            break;
        }
        if (r.status >= 200 && r.status < 300 && is_html(&r) && find_form(p, login_paths[i], &r.body))
            break;
        /* a JSON login: a POST of a random pair refused with 401/403 and a JSON answer */
        if (strcmp(login_paths[i], "/") == 0 || strstr(login_paths[i], ".htm") != NULL)
            continue;
        char ru[13], rp[GUESS_LEN + 1];
        st = rand_text(ru, 12, "abcdefghijkmnpqrstuvwxyz");
        if (st == KEEL_OK)
            st = rand_text(rp, GUESS_LEN, "abcdefghijkmnpqrstuvwxyz23456789");
        keel_http_login_t l = {KEEL_HTTP_LOGIN_JSON, login_paths[i], NULL, NULL};
        int acc = 0;
        if (st == KEEL_OK)
            st = keel_http_login(p->h, &l, ru, rp, &acc, &r);
        keel_http_forget(p->h);
        char sent[PATH_MAX_LEN];
        snprintf(sent, sizeof sent, "POST %s {username: <random>, password: <random>} (is it a JSON login?)",
                 login_paths[i]);
        if (st == KEEL_OK)
            st = evidence(p, u, sent, &r, 1);
        char ct[64] = "";
        (void)keel_http_header(&r, "Content-Type", ct, sizeof ct);
        if (st == KEEL_OK && !acc && (r.status == 401 || r.status == 403) && strstr(ct, "json") != NULL) {
            snprintf(p->found_path, sizeof p->found_path, "%s", login_paths[i]);
            p->found = (keel_http_login_t){KEEL_HTTP_LOGIN_JSON, p->found_path, NULL, NULL};
        }
    }
    keel_http_resp_free(&r);
    return st;
}

static int throttled(const keel_http_resp_t *r, int answered_before)
{
    return r->status == 429 || retry_after(r) > 0 || (r->status == 0 && answered_before) || r->status == 503;
}

/* A tried password as evidence shows it: the public default pairs only. */
static const char *or_empty(const char *s)
{
    return s[0] != '\0' ? s : "(empty)";
}

static keel_status_t unit_default_creds(probe_t *p)
{
    const char *u = "http.default_creds";
    const keel_http_probe_opts_t *o = p->o;
    keel_status_t st = KEEL_OK;
    const keel_http_login_t *l = NULL;
    int declared = o->login.kind != KEEL_HTTP_LOGIN_NONE && o->login.path != NULL;
    if (declared && o->login.kind == KEEL_HTTP_LOGIN_FORM) {
        /* A form "accepts" with 2xx/3xx and a new cookie: a server that sets a
         * cookie on every answer would pass any pair. Check it first. */
        int refuses = 0;
        if ((st = login_refuses_random(p, u, &o->login, &refuses)) != KEEL_OK)
            return st;
        if (!refuses) {
            p->login_unjudgeable = 1;
            return mark(p, u, KEEL_UNIT_INCONCLUSIVE,
                        "the declared form login at %s does not plainly refuse a random pair: its answers cannot be "
                        "judged",
                        o->login.path);
        }
    }
    if (declared)
        l = &o->login;
    else {
        st = discover_login(p, u);
        if (st != KEEL_OK)
            return st;
        if (p->found.kind == KEEL_HTTP_LOGIN_NONE)
            return mark(p, u, KEEL_UNIT_NOT_APPLICABLE,
                        "no login declared and none found (no Basic challenge on the paths swept, no login form or "
                        "JSON login at the common paths)");
        int refuses = 0;
        st = login_refuses_random(p, u, &p->found, &refuses);
        if (st != KEEL_OK)
            return st;
        if (!refuses) {
            char what[WHAT_MAX];
            snprintf(what, sizeof what,
                     "the %s login found at %s does not plainly refuse a random pair: its answers cannot be judged",
                     keel_http_login_kind_name(p->found.kind), p->found.path);
            p->found.kind = KEEL_HTTP_LOGIN_NONE;
            return mark(p, u, KEEL_UNIT_INCONCLUSIVE, "%s", what);
        }
        l = &p->found;
    }
    json_t *lj = json_pack("{s:s, s:s, s:b}", "kind", keel_http_login_kind_name(l->kind), "path", l->path, "declared",
                           declared);
    if (lj == NULL || json_object_set_new(p->doc, "login", lj) != 0)
        return nomem();
    size_t total = 0;
    const keel_cred_pair_t *pairs = keel_assess_default_creds(&total);
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    size_t tried = 0;
    int answered = 0, throttle = 0, accepted_at = -1;
    for (size_t i = 0; st == KEEL_OK && i < total && time_left(p); i++) {
        int acc = 0;
        keel_http_forget(p->h);
        st = keel_http_login(p->h, l, pairs[i].user, pairs[i].password, &acc, &r);
        if (st != KEEL_OK)
            break;
        char sent[PATH_MAX_LEN];
        snprintf(sent, sizeof sent, "%s login at %s with the default pair %s/%s", keel_http_login_kind_name(l->kind),
                 l->path, pairs[i].user, or_empty(pairs[i].password));
        st = evidence(p, u, sent, &r, 1);
        if (st != KEEL_OK)
            break;
        if (acc) {
            tried++;
            accepted_at = (int)i;
            break;
        }
        if (throttled(&r, answered)) {
            throttle = 1;
            break;
        }
        tried++;
        answered |= r.status != 0;
    }
    keel_http_forget(p->h);
    if (st == KEEL_OK && accepted_at >= 0) {
        const keel_cred_pair_t *c = &pairs[accepted_at];
        snprintf(p->found_user, sizeof p->found_user, "%s", c->user);
        st = finding(p, u, "5.1-1", "fail", "the %s login at %s accepts the default pair %s/%s",
                     keel_http_login_kind_name(l->kind), l->path, c->user, or_empty(c->password));
    }
    if (st == KEEL_OK)
        st = unit_info(p, u,
                       json_pack("{s:i, s:i, s:b, s:s?}", "pairs_tried", (int)tried, "pairs", (int)total,
                                 "throttled", throttle, "accepted",
                                 accepted_at >= 0 ? pairs[accepted_at].user : NULL));
    if (st == KEEL_OK) {
        if (accepted_at >= 0)
            st = mark(p, u, KEEL_UNIT_RAN, "a default pair was accepted after %zu of %zu pairs", tried, total);
        else if (throttle)
            st = mark(p, u, KEEL_UNIT_RAN, "%zu of %zu pairs tried; then throttled (HTTP %ld)", tried, total, r.status);
        else if (tried == total)
            st = mark(p, u, KEEL_UNIT_RAN, "all %zu default pairs refused", total);
        else if (!answered)
            st = mark(p, u, KEEL_UNIT_INCONCLUSIVE, "the login at %s gave no answer", l->path);
        else
            st = mark(p, u, KEEL_UNIT_INCONCLUSIVE, "%zu of %zu pairs tried, all refused; then the time budget ran out",
                      tried, total);
    }
    keel_http_resp_free(&r);
    return st;
}

/* ---- http.bruteforce (5.1-5) ----------------------------------------------------------------- */

static const char *const lockout_words[] = {"too many", "locked", "try again later", "temporarily", "blocked",
                                            "wait"};

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static keel_status_t unit_bruteforce(probe_t *p)
{
    const char *u = "http.bruteforce";
    const keel_http_probe_opts_t *o = p->o;
    const keel_http_login_t *l = NULL;
    if (o->login.kind != KEEL_HTTP_LOGIN_NONE && o->login.path != NULL)
        l = &o->login;
    else if (p->found.kind != KEEL_HTTP_LOGIN_NONE)
        l = &p->found;
    if (l == NULL)
        return mark(p, u, KEEL_UNIT_NOT_APPLICABLE, "no login declared or found to guess at");
    if (p->login_unjudgeable)
        return mark(p, u, KEEL_UNIT_INCONCLUSIVE,
                    "the declared form login does not plainly refuse a random pair: guesses cannot be judged");
    const char *user = o->user ? o->user : p->found_user[0] ? p->found_user : "admin";
    unsigned max = o->bruteforce_max ? o->bruteforce_max : BRUTE_DEFAULT;
    long long *dur = calloc(max, sizeof *dur);
    long *codes = calloc(max, sizeof *codes);
    if (dur == NULL || codes == NULL) {
        free(dur);
        free(codes);
        return nomem();
    }
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    keel_status_t st = KEEL_OK;
    unsigned n = 0;
    int throttle_at = -1, accepted = 0;
    char how[96] = "";
    long first_status = 0;
    long long base_us = 0;
    double t0 = keel_now();
    while (st == KEEL_OK && n < max && time_left(p)) {
        char guess[GUESS_LEN + 1];
        st = rand_text(guess, GUESS_LEN, pw_alphabet);
        if (st != KEEL_OK)
            break;
        if (o->password != NULL && strcmp(guess, o->password) == 0) {
            keel_wipe(guess, sizeof guess);
            continue; /* never the real password, however unlikely */
        }
        int acc = 0;
        keel_http_forget(p->h);
        double g0 = keel_now();
        st = keel_http_login(p->h, l, user, guess, &acc, &r);
        keel_wipe(guess, sizeof guess);
        if (st != KEEL_OK)
            break;
        long long us = (long long)((keel_now() - g0) * 1e6);
        dur[n] = us;
        codes[n] = r.status;
        if (n < 5 || n + 5 >= max) {
            char sent[PATH_MAX_LEN];
            snprintf(sent, sizeof sent, "guess %u: %s login at %s as %s with a random wrong password", n + 1,
                     keel_http_login_kind_name(l->kind), l->path, user);
            st = evidence(p, u, sent, &r, 1);
        }
        n++;
        if (acc) {
            accepted = 1;
            break;
        }
        if (n == 1)
            first_status = r.status;
        if (n == 3) {
            long long s3[3] = {dur[0], dur[1], dur[2]};
            qsort(s3, 3, sizeof s3[0], cmp_ll);
            base_us = s3[1];
        }
        if (r.status == 429)
            snprintf(how, sizeof how, "HTTP 429");
        else if (retry_after(&r) > 0)
            snprintf(how, sizeof how, "Retry-After: %u", retry_after(&r));
        else if (r.status == 0 && n > 1)
            snprintf(how, sizeof how, "connections refused or dropped (%.60s)", r.err);
        else if (r.status == 503)
            snprintf(how, sizeof how, "HTTP 503");
        else if (n > 1 && r.status != first_status && r.status != 0)
            snprintf(how, sizeof how, "the answer changed from HTTP %ld to HTTP %ld", first_status, r.status);
        else if (n > 3 && us >= 4 * base_us && us >= base_us + 500000)
            snprintf(how, sizeof how, "growing delays (%.2f s against %.2f s at first)", us / 1e6, base_us / 1e6);
        for (size_t w = 0; how[0] == '\0' && w < sizeof lockout_words / sizeof lockout_words[0]; w++)
            if (buf_find(&r.body, lockout_words[w]) != NULL)
                snprintf(how, sizeof how, "a lockout answer (\"%s\")", lockout_words[w]);
        if (how[0] != '\0') {
            throttle_at = (int)n;
            if (n > 5 && n + 5 < max) {
                char sent[PATH_MAX_LEN];
                snprintf(sent, sizeof sent,
                         "guess %u (throttling seen): %s login at %s as %s with a random wrong password", n,
                         keel_http_login_kind_name(l->kind), l->path, user);
                st = evidence(p, u, sent, &r, 1);
            }
            break;
        }
    }
    keel_http_forget(p->h);
    double secs = keel_now() - t0;
    double rate = secs > 0 ? n / secs : 0;
    /* every guess's status and time, as one line of evidence */
    keel_buf_t all;
    keel_buf_init(&all, 8192);
    for (unsigned i = 0; st == KEEL_OK && i < n; i++)
        if (keel_buf_printf(&all, "%s%ld/%lldms", i ? " " : "", codes[i], dur[i] / 1000) != KEEL_OK)
            break;
    if (st == KEEL_OK) {
        char sent[128];
        snprintf(sent, sizeof sent, "%u wrong guesses in %.2f s (%.1f guesses/s)", n, secs, rate);
        st = note(p, u, sent, all.len ? (const char *)all.data : "no guess sent");
    }
    keel_buf_free(&all);
    if (st == KEEL_OK)
        st = unit_info(p, u,
                       json_pack("{s:i, s:i, s:f, s:f, s:i, s:s?}", "guesses", (int)n, "max", (int)max,
                                 "seconds", secs, "guesses_per_s", rate, "throttled_after", (int)throttle_at,
                                 "throttle", how[0] ? how : NULL));
    if (st == KEEL_OK) {
        if (accepted)
            st = finding(p, u, "5.1-5", "fail", "the login at %s accepted a random password for '%s'", l->path, user);
        else if (throttle_at >= 0)
            st = KEEL_OK;
        else if (n >= max && n > 0)
            st = finding(p, u, "5.1-5", "fail",
                         "%u wrong passwords at %s in %.1f s (%.1f guesses/s) were all plainly refused: no throttling, "
                         "lockout or slowdown",
                         n, l->path, secs, rate);
    }
    if (st == KEEL_OK) {
        if (accepted || (n >= max && throttle_at < 0))
            st = mark(p, u, KEEL_UNIT_RAN, "%u guesses at %.1f guesses/s", n, rate);
        else if (throttle_at >= 0)
            st = mark(p, u, KEEL_UNIT_RAN, "throttled after %d guess(es) (%s) at %.1f guesses/s", throttle_at, how,
                      rate);
        else if (n == 0)
            st = mark(p, u, KEEL_UNIT_INCONCLUSIVE, "no guess could be sent within the time budget");
        else
            st = mark(p, u, KEEL_UNIT_INCONCLUSIVE,
                      "the time budget ran out after %u of %u guesses (%.1f guesses/s) with no throttling seen", n, max,
                      rate);
    }
    free(dur);
    free(codes);
    keel_http_resp_free(&r);
    return st;
}

/* ---- the lab's access, after the units that trip throttles ------------------------------------ */

/* With lab credentials: waits out the throttle the last units tripped (a
 * Retry-After at a time, ACCESS_WAIT_MAX_S at most) until the lab password
 * logs in again, so the next probe finds the device usable; a login also
 * clears a device's failure count. The outcome is "lab_access". */
static keel_status_t restore_access(probe_t *p)
{
    const keel_http_probe_opts_t *o = p->o;
    if (o->login.kind == KEEL_HTTP_LOGIN_NONE || o->user == NULL || o->password == NULL)
        return KEEL_OK;
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    double t0 = keel_now();
    int ok = 0;
    keel_status_t st = KEEL_OK;
    for (;;) {
        keel_http_forget(p->h);
        st = keel_http_login(p->h, &o->login, o->user, o->password, &ok, &r);
        if (st == KEEL_OK) {
            char sent[PATH_MAX_LEN];
            snprintf(sent, sizeof sent, "%s login at %s as %s with <lab password> (is the lab's access intact?)",
                     keel_http_login_kind_name(o->login.kind), o->login.path, o->user);
            st = evidence(p, "http.bruteforce", sent, &r, 1);
        }
        if (st != KEEL_OK || ok || r.status != 429)
            break;
        unsigned wait = retry_after(&r);
        wait = wait ? wait : 1;
        if (keel_now() + wait - t0 > ACCESS_WAIT_MAX_S)
            break;
        sleep(wait);
    }
    keel_http_forget(p->h);
    if (st == KEEL_OK &&
        json_object_set_new(p->doc, "lab_access",
                            json_pack("{s:b, s:i, s:f}", "login_accepted", ok, "status", (int)r.status,
                                      "waited_s", keel_now() - t0)) != 0)
        st = nomem();
    keel_http_resp_free(&r);
    return st;
}

/* ---- entry point ------------------------------------------------------------------------------- */

static keel_status_t baseline(probe_t *p, keel_http_resp_t *root, int *answers)
{
    const char *u = "http.auth_sweep";
    keel_http_resp_t r;
    keel_http_resp_init(&r);
    char rnd[17], path[64];
    keel_status_t st = rand_text(rnd, 16, lower_hex);
    if (st == KEEL_OK)
        st = get(p, u, "/", root);
    *answers = st == KEEL_OK && root->status != 0;
    if (st == KEEL_OK && *answers) {
        st = page_take(&p->root, root);
        char ct[64] = "";
        (void)keel_http_header(root, "Content-Type", ct, sizeof ct);
        p->ui = root->status >= 200 && root->status < 300 && strncasecmp(ct, "text/html", 9) == 0;
        note_challenge(p, "/", root);
    }
    if (st == KEEL_OK && *answers) {
        snprintf(path, sizeof path, "/keel-%s.html", rnd);
        st = get(p, u, path, &r);
        if (st == KEEL_OK)
            st = page_take(&p->missing, &r);
    }
    if (st == KEEL_OK && *answers) {
        snprintf(path, sizeof path, "/keel-%s/config", rnd);
        st = get(p, u, path, &r);
        if (st == KEEL_OK)
            st = page_take(&p->missing_dir, &r);
    }
    keel_http_resp_free(&r);
    return st;
}

static keel_status_t probe_run(probe_t *p)
{
    keel_http_resp_t root;
    keel_http_resp_init(&root);
    int answers = 0;
    keel_status_t st = baseline(p, &root, &answers);
    if (st == KEEL_OK && !answers) {
        for (size_t i = 0; st == KEEL_OK && i < NUNITS; i++)
            st = mark(p, unit_order[i], KEEL_UNIT_INCONCLUSIVE, "the port gave no HTTP answer to GET /: %s",
                      root.err[0] ? root.err : "no answer");
        keel_http_resp_free(&root);
        return st;
    }
    for (size_t i = 0; st == KEEL_OK && i < NUNITS; i++) {
        unit_begin(p, i);
        switch (i) {
        case 0: st = unit_disclosure(p, &root); break;
        case 1: st = unit_auth_sweep(p); break;
        case 2: st = unit_debug(p); break;
        case 3: st = unit_input(p); break;
        case 4: st = unit_password_change(p); break;
        case 5: st = unit_default_creds(p); break;
        default: st = unit_bruteforce(p); break;
        }
    }
    if (st == KEEL_OK)
        st = restore_access(p);
    keel_http_resp_free(&root);
    return st;
}

keel_status_t keel_assess_probe_http(const keel_http_probe_opts_t *o, json_t **out)
{
    if (o == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no HTTP probe options");
    *out = NULL;
    if (o->http.port < 1 || o->http.port > 65535)
        return keel_errorf(KEEL_ERR_ARG, "port must be 1..65535");
    if (o->budget_ms > HTTP_BUDGET_MAX_MS || o->http.timeout_ms > HTTP_TIMEOUT_MAX_MS || o->bruteforce_max > BRUTE_MAX)
        return keel_errorf(KEEL_ERR_ARG, "budget capped at %u ms, timeout at %u ms, guesses at %u", HTTP_BUDGET_MAX_MS,
                           HTTP_TIMEOUT_MAX_MS, BRUTE_MAX);
    if (o->routes_len > 0 && o->routes == NULL)
        return keel_errorf(KEEL_ERR_ARG, "routes_len without routes");
    if ((o->password == NULL) != (o->user == NULL))
        return keel_errorf(KEEL_ERR_ARG, "lab credentials need both a user and a password");
    if (o->login.kind != KEEL_HTTP_LOGIN_NONE && (o->login.path == NULL || o->login.path[0] != '/'))
        return keel_errorf(KEEL_ERR_ARG, "a declared login needs a path from /");
    if (o->password_change.kind != KEEL_HTTP_LOGIN_NONE &&
        (o->password_change.path == NULL || o->password_change.path[0] != '/'))
        return keel_errorf(KEEL_ERR_ARG, "a declared password change needs a path from /");
    probe_t p;
    memset(&p, 0, sizeof p);
    p.o = o;
    p.secret[0] = o->password;
    keel_status_t st = keel_assess_resolve(o->http.host, o->http.port, &p.sa, &p.salen, p.addr, sizeof p.addr);
    if (st != KEEL_OK)
        return st;
    p.sni = keel_assess_sni_ok(o->http.host);
    p.timeout_ms = o->http.timeout_ms ? o->http.timeout_ms : HTTP_TIMEOUT_DEFAULT_MS;
    p.t0 = keel_now();
    p.end = p.t0 + (o->budget_ms ? o->budget_ms : HTTP_BUDGET_DEFAULT_MS) / 1000.0;
    for (size_t i = 0; i < NUNITS; i++)
        p.weights_left += unit_weight[i];
    page_init(&p.root);
    page_init(&p.missing);
    page_init(&p.missing_dir);
    keel_http_opts_t ho = o->http;
    ho.timeout_ms = p.timeout_ms;
    st = keel_http_open(&ho, &p.h);
    if (st == KEEL_OK && o->http.tls) {
        p.raw_ctx = SSL_CTX_new(TLS_client_method());
        if (p.raw_ctx == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "cannot set up OpenSSL for raw requests");
        else {
            SSL_CTX_set_security_level(p.raw_ctx, 0);
            SSL_CTX_set_verify(p.raw_ctx, SSL_VERIFY_NONE, NULL);
            SSL_CTX_set_options(p.raw_ctx, SSL_OP_LEGACY_SERVER_CONNECT | SSL_OP_IGNORE_UNEXPECTED_EOF);
        }
    }
    if (st == KEEL_OK) {
        p.units_info = json_object();
        p.doc = json_pack("{s:s, s:s, s:s, s:s, s:i, s:b, s:s, s:[], s:{}, s:[]}", "format", "keel-assess-http-1",
                          "probe", "http", "target", o->http.host, "address", p.addr, "port", (int)o->http.port,
                          "tls", o->http.tls, "base", keel_http_base(p.h), "findings", "units", "evidence");
        if (p.doc == NULL || p.units_info == NULL)
            st = nomem();
    }
    if (st == KEEL_OK)
        st = probe_run(&p);
    if (st == KEEL_OK &&
        (json_object_set(p.doc, "unit_details", p.units_info) != 0 ||
         json_object_set_new(p.doc, "ui", json_boolean(p.ui)) != 0 ||
         json_object_set_new(p.doc, "budget_ms", json_integer(o->budget_ms ? o->budget_ms : HTTP_BUDGET_DEFAULT_MS)) !=
             0 ||
         json_object_set_new(p.doc, "duration_us", json_integer((json_int_t)((keel_now() - p.t0) * 1e6))) != 0))
        st = nomem();
    keel_http_close(p.h);
    SSL_CTX_free(p.raw_ctx);
    ERR_clear_error();
    keel_buf_free(&p.root.body);
    keel_buf_free(&p.missing.body);
    keel_buf_free(&p.missing_dir.body);
    json_decref(p.units_info);
    if (st != KEEL_OK) {
        json_decref(p.doc);
        return st;
    }
    *out = p.doc;
    return KEEL_OK;
}

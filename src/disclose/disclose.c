/*
 * keel disclose (EN 303 645 5.2-1): a security.txt (RFC 9116) and a
 * vulnerability disclosure policy from a template compiled in. Every option
 * is checked before anything is rendered; every name a user gives is escaped
 * for the document it lands in (URIs are held to printable ASCII without the
 * characters that could leave an attribute or a field). See keel/disclose.h
 * and docs/internals/disclose.md.
 */
#include "keel/crypto.h"
#include "keel/disclose.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- checking the options -------------------------------------------------------- */

/* Length of s, or cap when it is cap bytes or longer. */
static size_t bounded_len(const char *s, size_t cap)
{
    const char *nul = memchr(s, '\0', cap);
    return nul != NULL ? (size_t)(nul - s) : cap;
}

/* Printable ASCII that may stand in a URI, an HTML attribute and a
 * security.txt field without a second thought. */
static int uri_chars_ok(const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= 0x20 || c >= 0x7f || strchr("<>\"'\\^`{|}", c) != NULL)
            return 0;
    }
    return 1;
}

static int has_prefix(const char *s, const char *p)
{
    return strncasecmp(s, p, strlen(p)) == 0;
}

/* "https://host[:port][/path...]": a host, no user info. */
static int https_ok(const char *s)
{
    if (!has_prefix(s, "https://"))
        return 0;
    const char *a = s + 8;
    size_t n = strcspn(a, "/?#");
    return n > 0 && a[0] != ':' && memchr(a, '@', n) == NULL;
}

/* "mailto:local@domain[?...]". */
static int mailto_ok(const char *s)
{
    if (!has_prefix(s, "mailto:"))
        return 0;
    const char *a = s + 7;
    size_t n = strcspn(a, "?");
    const char *at = memchr(a, '@', n);
    return at != NULL && at > a && (size_t)(at - a) + 1 < n && memchr(at + 1, '@', n - (size_t)(at - a) - 1) == NULL;
}

/* "tel:+4930123456" with the visual separators of RFC 3966 ("-", ".", "(", ")"). */
static int tel_ok(const char *s)
{
    if (!has_prefix(s, "tel:+"))
        return 0;
    unsigned digits = 0;
    for (const char *c = s + 5; *c != '\0'; c++) {
        if (*c >= '0' && *c <= '9')
            digits++;
        else if (strchr("-.()", *c) == NULL)
            return 0;
    }
    return digits >= 3 && digits <= 15;
}

/* A URI option: present, capped, plain characters. */
static keel_status_t uri_basic(const char *opt, const char *v)
{
    size_t n = bounded_len(v, KEEL_DISCLOSE_URI_MAX);
    if (n == 0 || n >= KEEL_DISCLOSE_URI_MAX)
        return keel_errorf(KEEL_ERR_ARG, "%s must be 1..%u characters", opt, KEEL_DISCLOSE_URI_MAX - 1);
    if (!uri_chars_ok(v))
        return keel_errorf(KEEL_ERR_ARG,
                           "%s '%.*s' holds a space, a non-ASCII byte or one of <>\"'\\^`{|} (percent-encode it)",
                           opt, 80, v);
    return KEEL_OK;
}

static keel_status_t https_opt(const char *opt, const char *v)
{
    keel_status_t st = uri_basic(opt, v);
    if (st != KEEL_OK)
        return st;
    if (has_prefix(v, "http://"))
        return keel_errorf(KEEL_ERR_ARG, "%s '%s' must be https:// (RFC 9116 allows web URIs over HTTPS only)", opt,
                           v);
    if (!https_ok(v))
        return keel_errorf(KEEL_ERR_ARG, "%s '%s' is not an https:// URL with a host (and no user info)", opt, v);
    return KEEL_OK;
}

static keel_status_t contact_opt(const char *v)
{
    keel_status_t st = uri_basic("--contact", v);
    if (st != KEEL_OK)
        return st;
    if (has_prefix(v, "https:") || has_prefix(v, "http:"))
        return https_opt("--contact", v);
    if (has_prefix(v, "mailto:"))
        return mailto_ok(v) ? KEEL_OK
                            : keel_errorf(KEEL_ERR_ARG, "--contact '%s' is not mailto:NAME@DOMAIN", v);
    if (has_prefix(v, "tel:"))
        return tel_ok(v) ? KEEL_OK
                         : keel_errorf(KEEL_ERR_ARG,
                                       "--contact '%s' is not a global tel: number (tel:+ and 3..15 digits)", v);
    return keel_errorf(KEEL_ERR_ARG, "--contact '%s' must be a mailto:, https:// or tel: URI", v);
}

static keel_status_t encryption_opt(const char *v)
{
    keel_status_t st = uri_basic("--encryption", v);
    if (st != KEEL_OK)
        return st;
    if (has_prefix(v, "openpgp4fpr:")) {
        size_t n = strlen(v + 12);
        if (n != 40 && n != 64)
            return keel_errorf(KEEL_ERR_ARG, "--encryption '%s': a fingerprint has 40 or 64 hex digits", v);
        for (const char *c = v + 12; *c != '\0'; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F')))
                return keel_errorf(KEEL_ERR_ARG, "--encryption '%s': the fingerprint is not hex", v);
        return KEEL_OK;
    }
    if (has_prefix(v, "dns:"))
        return strlen(v) > 4 ? KEEL_OK : keel_errorf(KEEL_ERR_ARG, "--encryption 'dns:' names no record");
    return https_opt("--encryption", v);
}

/* The length of the UTF-8 sequence at p (1..4), 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p, size_t n, unsigned long *cp)
{
    size_t len;
    unsigned long c;
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    } else if ((p[0] & 0xE0) == 0xC0) {
        len = 2;
        c = p[0] & 0x1F;
    } else if ((p[0] & 0xF0) == 0xE0) {
        len = 3;
        c = p[0] & 0x0F;
    } else if ((p[0] & 0xF8) == 0xF0) {
        len = 4;
        c = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
        c = c << 6 | (p[k] & 0x3F);
    }
    if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800) || (len == 4 && c < 0x10000) || c > 0x10FFFF ||
        (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

/* A name shown to people: UTF-8 without controls, line or paragraph
 * separators, or the bidirectional overrides that make text read otherwise
 * than it is. */
static keel_status_t name_opt(const char *opt, const char *v)
{
    size_t n = bounded_len(v, KEEL_DISCLOSE_NAME_MAX);
    if (n == 0 || n >= KEEL_DISCLOSE_NAME_MAX)
        return keel_errorf(KEEL_ERR_ARG, "%s must be 1..%u bytes", opt, KEEL_DISCLOSE_NAME_MAX - 1);
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < n;) {
        unsigned long cp = 0;
        size_t len = utf8_seq(p + i, n - i, &cp);
        if (len == 0)
            return keel_errorf(KEEL_ERR_ARG, "%s is not UTF-8 text", opt);
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
            (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200E || cp == 0x200F)
            return keel_errorf(KEEL_ERR_ARG, "%s holds a control or direction character (U+%04lX)", opt, cp);
        i += len;
    }
    if (v[0] == ' ' || v[n - 1] == ' ')
        return keel_errorf(KEEL_ERR_ARG, "%s starts or ends with a space", opt);
    return KEEL_OK;
}

/* "en, de-AT": language tags (RFC 5646, loosely: 1..8 letters, then
 * subtags of 1..8 letters or digits joined by '-'), separated by commas. */
static keel_status_t languages_opt(const char *v)
{
    size_t n = bounded_len(v, KEEL_DISCLOSE_LANGS_MAX);
    if (n == 0 || n >= KEEL_DISCLOSE_LANGS_MAX)
        return keel_errorf(KEEL_ERR_ARG, "--preferred-languages must be 1..%u characters", KEEL_DISCLOSE_LANGS_MAX - 1);
    const char *c = v;
    for (;;) {
        while (*c == ' ')
            c++;
        size_t sub = 0, first = 1;
        const char *start = c;
        for (; (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-'; c++) {
            if (*c == '-') {
                if (sub == 0)
                    break;
                sub = 0;
                first = 0;
            } else if (++sub > 8 || (first && *c >= '0' && *c <= '9')) {
                break;
            }
        }
        if (c == start || sub == 0 || (*c != ',' && *c != ' ' && *c != '\0'))
            return keel_errorf(KEEL_ERR_ARG, "--preferred-languages '%s' is not a list of language tags like 'en, de'",
                               v);
        while (*c == ' ')
            c++;
        if (*c == '\0')
            return KEEL_OK;
        if (*c++ != ',')
            return keel_errorf(KEEL_ERR_ARG, "--preferred-languages '%s': separate the tags with commas", v);
    }
}

/* ---- Expires ----------------------------------------------------------------------- */

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

/* y-m-d h:m:s UTC as seconds, -1 when it is not a real date and time. */
static long long utc_seconds(long y, long mo, long d, long h, long mi, long s)
{
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 || h > 23 || mi < 0 || mi > 59 ||
        s < 0 || s > 59)
        return -1;
    struct tm tm = {.tm_year = (int)y - 1900, .tm_mon = (int)mo - 1, .tm_mday = (int)d,
                    .tm_hour = (int)h, .tm_min = (int)mi, .tm_sec = (int)s};
    time_t t = timegm(&tm);
    struct tm back;
    /* 2027-02-30 normalises into March: not a date */
    if (t == (time_t)-1 || gmtime_r(&t, &back) == NULL || back.tm_mday != d || back.tm_mon != mo - 1)
        return -1;
    return (long long)t;
}

/* "+DAYS", "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)"
 * (fractions dropped) as seconds; -1 for anything else. */
static long long parse_expires(const char *v, long long now)
{
    size_t n = bounded_len(v, 64);
    if (n >= 64)
        return -1;
    if (v[0] == '+') {
        long days = n >= 2 && n <= 4 ? digits(v + 1, (unsigned)(n - 1)) : -1;
        return days < 1 ? -1 : now + days * 86400LL;
    }
    if (n < 10 || v[4] != '-' || v[7] != '-')
        return -1;
    long y = digits(v, 4), mo = digits(v + 5, 2), d = digits(v + 8, 2);
    if (n == 10)
        return utc_seconds(y, mo, d, 0, 0, 0);
    if (n < 20 || (v[10] != 'T' && v[10] != 't') || v[13] != ':' || v[16] != ':')
        return -1;
    long long t = utc_seconds(y, mo, d, digits(v + 11, 2), digits(v + 14, 2), digits(v + 17, 2));
    size_t i = 19;
    if (t < 0)
        return -1;
    if (v[i] == '.') {
        size_t start = ++i;
        while (v[i] >= '0' && v[i] <= '9')
            i++;
        if (i == start)
            return -1;
    }
    if ((v[i] == 'Z' || v[i] == 'z') && i + 1 == n)
        return t;
    if ((v[i] == '+' || v[i] == '-') && n - i == 6 && v[i + 3] == ':') {
        long oh = digits(v + i + 1, 2), om = digits(v + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -1;
        long long off = (oh * 60 + om) * 60;
        return v[i] == '-' ? t + off : t - off;
    }
    return -1;
}

/* "YYYY-MM-DDTHH:MM:SSZ", or with day_only "YYYY-MM-DD". */
static void fmt_utc(long long t, char *out, size_t cap, int day_only)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (gmtime_r(&tt, &tm) == NULL ||
        (day_only ? strftime(out, cap, "%Y-%m-%d", &tm) : strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm)) == 0)
        (void)snprintf(out, cap, "?");
}

/* ---- the check ------------------------------------------------------------------- */

static keel_status_t days_opt(const char *opt, unsigned v, unsigned lo, unsigned hi)
{
    if (v != 0 && (v < lo || v > hi))
        return keel_errorf(KEEL_ERR_ARG, "%s must be %u..%u", opt, lo, hi);
    return KEEL_OK;
}

keel_status_t keel_disclose_check(const keel_disclose_opts_t *o, long long *expires)
{
    if (o == NULL)
        return keel_errorf(KEEL_ERR_ARG, "disclose: no options");
    if (o->n_contacts == 0)
        return keel_errorf(KEEL_ERR_ARG, "--contact is required (at least one)");
    if (o->n_contacts > KEEL_DISCLOSE_CONTACTS_MAX)
        return keel_errorf(KEEL_ERR_ARG, "at most %u --contact", KEEL_DISCLOSE_CONTACTS_MAX);
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < o->n_contacts && st == KEEL_OK; i++) {
        st = o->contacts[i] != NULL ? contact_opt(o->contacts[i]) : keel_errorf(KEEL_ERR_ARG, "an empty --contact");
        for (size_t k = 0; k < i && st == KEEL_OK; k++)
            if (strcasecmp(o->contacts[k], o->contacts[i]) == 0)
                st = keel_errorf(KEEL_ERR_ARG, "--contact '%s' is given twice", o->contacts[i]);
    }
    if (st != KEEL_OK)
        return st;
    if (o->policy_url == NULL)
        return keel_errorf(KEEL_ERR_ARG, "--policy-url is required");
    if ((st = https_opt("--policy-url", o->policy_url)) != KEEL_OK)
        return st;
    if (o->encryption != NULL && (st = encryption_opt(o->encryption)) != KEEL_OK)
        return st;
    if (o->acknowledgments != NULL && (st = https_opt("--acknowledgments", o->acknowledgments)) != KEEL_OK)
        return st;
    if (o->hiring != NULL && (st = https_opt("--hiring", o->hiring)) != KEEL_OK)
        return st;
    if (o->canonical != NULL) {
        if ((st = https_opt("--canonical", o->canonical)) != KEEL_OK)
            return st;
        size_t n = strlen(o->canonical);
        if (n < 13 || strcmp(o->canonical + n - 13, "/security.txt") != 0)
            return keel_errorf(KEEL_ERR_ARG,
                               "--canonical '%s' must be the URL of the security.txt itself "
                               "(https://HOST/.well-known/security.txt)",
                               o->canonical);
    }
    if (o->preferred_languages != NULL && (st = languages_opt(o->preferred_languages)) != KEEL_OK)
        return st;
    if (o->vendor != NULL && (st = name_opt("--vendor", o->vendor)) != KEEL_OK)
        return st;
    if (o->product != NULL && (st = name_opt("--product", o->product)) != KEEL_OK)
        return st;
    if ((st = days_opt("--ack-days", o->ack_days, 1, 30)) != KEEL_OK ||
        (st = days_opt("--update-days", o->update_days, 1, 90)) != KEEL_OK ||
        (st = days_opt("--fix-days", o->fix_days, 7, 365)) != KEEL_OK)
        return st;
    if (o->expires == NULL)
        return keel_errorf(KEEL_ERR_ARG, "--expires is required (+DAYS, YYYY-MM-DD or an RFC 3339 date-time)");
    long long now = o->now != 0 ? (long long)o->now : (long long)time(NULL);
    long long t = parse_expires(o->expires, now);
    if (t < 0)
        return keel_errorf(KEEL_ERR_ARG,
                           "--expires '%.40s' is not +DAYS, YYYY-MM-DD or an RFC 3339 date-time (2027-06-30T00:00:00Z)",
                           o->expires);
    char when[32];
    fmt_utc(t, when, sizeof when, 0);
    if (t <= now)
        return keel_errorf(KEEL_ERR_ARG, "--expires %s is not in the future", when);
    if (t - now > (long long)KEEL_DISCLOSE_EXPIRES_DAYS * 86400)
        return keel_errorf(KEEL_ERR_ARG, "--expires %s is more than %u days ahead (RFC 9116: less than a year)", when,
                           KEEL_DISCLOSE_EXPIRES_DAYS);
    if (expires != NULL)
        *expires = t;
    return KEEL_OK;
}

/* ---- rendering --------------------------------------------------------------------- */

static void html(keel_out_t *o, const char *s)
{
    const char *run = s;
    for (; *s != '\0'; s++) {
        const char *r = NULL;
        switch (*s) {
        case '&': r = "&amp;"; break;
        case '<': r = "&lt;"; break;
        case '>': r = "&gt;"; break;
        case '"': r = "&quot;"; break;
        case '\'': r = "&#39;"; break;
        default: continue;
        }
        keel_out_put(o, run, (size_t)(s - run));
        keel_out_puts(o, r);
        run = s + 1;
    }
    keel_out_put(o, run, (size_t)(s - run));
}

/* CommonMark: a backslash before each character that could start markup
 * inside a line (names never start one). */
static void md(keel_out_t *o, const char *s)
{
    const char *run = s;
    for (; *s != '\0'; s++) {
        if (strchr("\\`*_[]<>|&~!", *s) == NULL)
            continue;
        keel_out_put(o, run, (size_t)(s - run));
        keel_out_put(o, "\\", 1);
        keel_out_put(o, s, 1);
        run = s + 1;
    }
    keel_out_put(o, run, (size_t)(s - run));
}

typedef void (*esc_fn)(keel_out_t *o, const char *s);

static unsigned or_default(unsigned v, unsigned d)
{
    return v != 0 ? v : d;
}

static const char *plural(unsigned n)
{
    return n == 1 ? "" : "s";
}

/* A checked language list as "en, de" (letters, digits and '-' only: the
 * same in every document). */
static void languages(keel_out_t *o, const char *c)
{
    int first = 1;
    while (*c != '\0') {
        while (*c == ' ' || *c == ',')
            c++;
        size_t n = strcspn(c, " ,");
        if (n == 0)
            break;
        if (!first)
            keel_out_puts(o, ", ");
        keel_out_put(o, c, n);
        first = 0;
        c += n;
    }
}

/* What a contact shows: the address without "mailto:", the number without
 * "tel:", a web address whole. */
static const char *contact_shown(const char *c)
{
    if (has_prefix(c, "mailto:"))
        return c + 7;
    if (has_prefix(c, "tel:"))
        return c + 4;
    return c;
}

/* "Thermo-1 by Acme", "Thermo-1", "the products of Acme", "our products". */
static void scope_name(keel_out_t *o, const keel_disclose_opts_t *d, esc_fn esc)
{
    if (d->product != NULL) {
        esc(o, d->product);
        if (d->vendor != NULL) {
            keel_out_puts(o, " by ");
            esc(o, d->vendor);
        }
    } else if (d->vendor != NULL) {
        keel_out_puts(o, "the products of ");
        esc(o, d->vendor);
    } else {
        keel_out_puts(o, "our products");
    }
}

keel_status_t keel_disclose_security_txt(const keel_disclose_opts_t *d, keel_buf_t *out)
{
    long long expires = 0;
    keel_status_t st = keel_disclose_check(d, &expires);
    if (st != KEEL_OK)
        return st;
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "disclose: no output buffer");
    keel_out_t o = {out, KEEL_OK};
    char when[32];
    fmt_utc(expires, when, sizeof when, 0);
    /* The names stand in a comment: checked to hold no line break. */
    keel_out_puts(&o, "# How to report a security vulnerability in ");
    scope_name(&o, d, keel_out_puts);
    keel_out_puts(&o, ".\n# The policy (scope, timeline, safe harbour) is at the Policy URL below.\n"
                  "# Written by keel disclose; renew it before it expires.\n\n");
    for (size_t i = 0; i < d->n_contacts; i++)
        keel_out_printf(&o, "Contact: %s\n", d->contacts[i]);
    keel_out_printf(&o, "Expires: %s\n", when);
    if (d->encryption != NULL)
        keel_out_printf(&o, "Encryption: %s\n", d->encryption);
    if (d->acknowledgments != NULL)
        keel_out_printf(&o, "Acknowledgments: %s\n", d->acknowledgments);
    if (d->preferred_languages != NULL) {
        keel_out_puts(&o, "Preferred-Languages: ");
        languages(&o, d->preferred_languages);
        keel_out_puts(&o, "\n");
    }
    if (d->canonical != NULL)
        keel_out_printf(&o, "Canonical: %s\n", d->canonical);
    keel_out_printf(&o, "Policy: %s\n", d->policy_url);
    if (d->hiring != NULL)
        keel_out_printf(&o, "Hiring: %s\n", d->hiring);
    return o.st;
}

static const char policy_css[] =
    "body{font-family:system-ui,sans-serif;line-height:1.5;max-width:46rem;margin:0 auto;padding:1.5rem;"
    "color:#111827;background:#fff}\n"
    "h1{font-size:1.6rem;margin-bottom:.25rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d1d5db}\n"
    "a{color:#1d4ed8}strong{color:#111827}code{font-size:.9em;overflow-wrap:anywhere}\n"
    "ol.timeline li{margin-bottom:.5rem}\n"
    "footer{margin-top:2.5rem;font-size:.85rem;color:#4b5563}\n";

/* style-src by the stylesheet's SHA-256: no other style applies, no script runs. */

/* An anchor to a checked URI, showing `shown`. */
static void html_link(keel_out_t *o, const char *testid, const char *href, const char *shown)
{
    keel_out_puts(o, "<a");
    if (testid != NULL)
        keel_out_printf(o, " data-testid=\"%s\"", testid);
    keel_out_puts(o, " href=\"");
    html(o, href);
    keel_out_puts(o, "\">");
    html(o, shown);
    keel_out_puts(o, "</a>");
}

/*
 * The policy's text, once, for both renderings: sections of paragraphs and
 * lists. HTML and Markdown differ in their markup only, which the `md` flag
 * picks piece by piece.
 */
typedef struct {
    keel_out_t *o;
    int md;
} doc_t;

static void esc(doc_t *w, const char *s)
{
    if (w->md)
        md(w->o, s);
    else
        html(w->o, s);
}

static void section(doc_t *w, const char *testid, const char *title)
{
    if (w->md)
        keel_out_printf(w->o, "## %s\n\n", title);
    else
        keel_out_printf(w->o, "<section data-testid=\"%s\">\n<h2>%s</h2>\n", testid, title);
}

static void section_end(doc_t *w)
{
    if (!w->md)
        keel_out_puts(w->o, "</section>\n");
}

static void para(doc_t *w, const char *s)
{
    keel_out_puts(w->o, w->md ? "" : "<p>");
    keel_out_puts(w->o, s);
    keel_out_puts(w->o, w->md ? "\n\n" : "</p>\n");
}

static void list(doc_t *w, int ordered, int begin)
{
    if (!w->md)
        keel_out_puts(w->o, begin ? (ordered ? "<ol class=\"timeline\">\n" : "<ul>\n")
                                  : (ordered ? "</ol>\n" : "</ul>\n"));
    else if (!begin)
        keel_out_puts(w->o, "\n");
}

static void item_begin(doc_t *w, const char *testid, unsigned n)
{
    if (w->md)
        keel_out_printf(w->o, n > 0 ? "%u. " : "- ", n);
    else if (testid != NULL)
        keel_out_printf(w->o, "<li data-testid=\"%s\">", testid);
    else
        keel_out_puts(w->o, "<li>");
}

static void item_end(doc_t *w)
{
    keel_out_puts(w->o, w->md ? "\n" : "</li>\n");
}

static void item(doc_t *w, const char *s)
{
    item_begin(w, NULL, 0);
    keel_out_puts(w->o, s);
    item_end(w);
}

static void strong_days(doc_t *w, unsigned n, const char *unit)
{
    keel_out_printf(w->o, w->md ? "**%u %s%s**" : "<strong>%u %s%s</strong>", n, unit, plural(n));
}

/* A link to a checked URI: an autolink in Markdown. */
static void doc_link(doc_t *w, const char *testid, const char *href, const char *shown)
{
    if (w->md) {
        keel_out_puts(w->o, "<");
        keel_out_puts(w->o, href);
        keel_out_puts(w->o, ">");
    } else {
        html_link(w->o, testid, href, shown);
    }
}

static void policy_body(doc_t *w, const keel_disclose_opts_t *d, const char *expires_day)
{
    keel_out_t *o = w->o;
    unsigned ack = or_default(d->ack_days, KEEL_DISCLOSE_ACK_DAYS);
    unsigned upd = or_default(d->update_days, KEEL_DISCLOSE_UPDATE_DAYS);
    unsigned fix = or_default(d->fix_days, KEEL_DISCLOSE_FIX_DAYS);

    keel_out_puts(o, w->md ? "" : "<p data-testid=\"intro\">");
    keel_out_puts(o, "If you have found a security vulnerability in ");
    scope_name(o, d, w->md ? md : html);
    keel_out_puts(o, ", please tell us. This page says how to reach us, what to send, what we do with your report "
                  "and how soon, and what we promise you in return.");
    keel_out_puts(o, w->md ? "\n\n" : "</p>\n");

    section(w, "scope", "Scope");
    keel_out_puts(o, w->md ? "" : "<p>");
    keel_out_puts(o, "This policy covers ");
    scope_name(o, d, w->md ? md : html);
    keel_out_puts(o, ": the device, its firmware, and the apps and cloud services it works with. A vulnerability in a "
                  "third-party component we ship is in scope too; we pass it on to its maintainers and tell you.");
    keel_out_puts(o, w->md ? "\n\n" : "</p>\n");
    section_end(w);

    section(w, "contacts", "How to report a vulnerability");
    para(w, d->n_contacts == 1 ? "Send your report to:" : "Send your report to any of:");
    list(w, 0, 1);
    for (size_t i = 0; i < d->n_contacts; i++) {
        item_begin(w, NULL, 0);
        doc_link(w, "contact", d->contacts[i], contact_shown(d->contacts[i]));
        item_end(w);
    }
    list(w, 0, 0);
    if (d->encryption != NULL) {
        keel_out_puts(o, w->md ? "" : "<p data-testid=\"encryption\">");
        keel_out_puts(o, "Please encrypt your report with our key: ");
        if (has_prefix(d->encryption, "https://"))
            doc_link(w, NULL, d->encryption, d->encryption);
        else if (w->md)
            md(o, d->encryption);
        else {
            keel_out_puts(o, "<code>");
            html(o, d->encryption);
            keel_out_puts(o, "</code>");
        }
        keel_out_puts(o, w->md ? ".\n\n" : ".</p>\n");
    }
    if (d->preferred_languages != NULL) {
        keel_out_puts(o, w->md ? "" : "<p data-testid=\"languages\">");
        keel_out_puts(o, "We read reports in these languages: ");
        languages(o, d->preferred_languages);
        keel_out_puts(o, w->md ? ".\n\n" : ".</p>\n");
    }
    para(w, "Please do not report through public issue trackers, forums or social media before a fix is out.");
    section_end(w);

    section(w, "what-to-send", "What to send");
    list(w, 0, 1);
    item(w, "the product and the version of its firmware or app;");
    item(w, "what the vulnerability is and what an attacker could do with it;");
    item(w, "the steps to reproduce it, with a proof of concept if you have one;");
    item(w, "how we can reach you, and how you would like to be credited (or not at all).");
    list(w, 0, 0);
    para(w, "Send no personal data of others. If your test came across some, tell us, and delete it.");
    section_end(w);

    section(w, "timeline", "What happens next");
    list(w, 1, 1);
    item_begin(w, "ack", 1);
    keel_out_puts(o, "We acknowledge your report within ");
    strong_days(w, ack, "working day");
    keel_out_puts(o, ".");
    item_end(w);
    item_begin(w, "updates", 2);
    keel_out_puts(o, "We tell you where things stand at least every ");
    strong_days(w, upd, "day");
    keel_out_puts(o, " until the issue is resolved: whether we could reproduce it, how severe we judge it, and when "
                  "a fix is planned.");
    item_end(w);
    item_begin(w, "fix", 3);
    keel_out_puts(o, "We aim to release a fix within ");
    strong_days(w, fix, "day");
    keel_out_puts(o, " of your report, and agree with you when the vulnerability is disclosed publicly. If we need "
                  "longer, we tell you why and for how long.");
    item_end(w);
    item_begin(w, "advisory", 4);
    keel_out_puts(o, "With the fix we publish a security advisory, and credit you if you wish.");
    item_end(w);
    list(w, 1, 0);
    section_end(w);

    section(w, "safe-harbour", "Safe harbour");
    para(w, "We will not take legal action against you, nor ask anyone else to, for research done in good faith "
            "under this policy. Good faith means that you:");
    list(w, 0, 1);
    item(w, "test only devices and accounts you own or are allowed to test;");
    item(w, "do not access, change or keep data of others beyond what shows the vulnerability;");
    item(w, "do not degrade the service for others: no denial of service, spam, social engineering or physical "
            "attacks;");
    item(w, "give us the time above before you disclose, and ask for nothing in return for not disclosing.");
    list(w, 0, 0);
    para(w, "If someone else takes action against you for such research, we will make it known that you acted "
            "under this policy.");
    section_end(w);

    section(w, "recognition", "Recognition");
    keel_out_puts(o, w->md ? "" : "<p>");
    keel_out_puts(o, "We thank everyone who reports a vulnerability to us in our security advisories");
    if (d->acknowledgments != NULL) {
        keel_out_puts(o, " and on our acknowledgments page: ");
        doc_link(w, "acknowledgments", d->acknowledgments, d->acknowledgments);
    }
    keel_out_puts(o, w->md ? ".\n\n" : ".</p>\n");
    if (d->hiring != NULL) {
        keel_out_puts(o, w->md ? "" : "<p>");
        keel_out_puts(o, "We are hiring for security: ");
        doc_link(w, "hiring", d->hiring, d->hiring);
        keel_out_puts(o, w->md ? ".\n\n" : ".</p>\n");
    }
    section_end(w);

    keel_out_puts(o, w->md ? "---\n\n" : "<footer data-testid=\"footer\">\n<p>");
    keel_out_puts(o, "This policy is published at ");
    doc_link(w, "policy-url", d->policy_url, d->policy_url);
    keel_out_puts(o, ". Its machine-readable form is the security.txt (RFC 9116)");
    if (d->canonical != NULL) {
        keel_out_puts(o, " at ");
        doc_link(w, "canonical", d->canonical, d->canonical);
    }
    keel_out_printf(o, ", valid until %s.", expires_day);
    keel_out_puts(o, w->md ? "\n" : "</p>\n</footer>\n");
}

/* "Vulnerability disclosure policy: Thermo-1 by Acme" (or "of Acme"). */
static void title(doc_t *w, const keel_disclose_opts_t *d)
{
    keel_out_puts(w->o, "Vulnerability disclosure policy");
    if (d->product != NULL) {
        keel_out_puts(w->o, ": ");
        scope_name(w->o, d, w->md ? md : html);
    } else if (d->vendor != NULL) {
        keel_out_puts(w->o, " of ");
        esc(w, d->vendor);
    }
}

keel_status_t keel_disclose_policy_html(const keel_disclose_opts_t *d, keel_buf_t *out)
{
    long long expires = 0;
    keel_status_t st = keel_disclose_check(d, &expires);
    if (st != KEEL_OK)
        return st;
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "disclose: no output buffer");
    char hash[KEEL_SHA256_B64_LEN], day[16];
    if ((st = keel_sha256_base64(policy_css, sizeof policy_css - 1, hash)) != KEEL_OK)
        return st;
    fmt_utc(expires, day, sizeof day, 1);
    keel_out_t o = {out, KEEL_OK};
    doc_t w = {&o, 0};
    keel_out_puts(&o, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                  "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'sha256-");
    keel_out_puts(&o, hash);
    keel_out_puts(&o, "'; img-src 'none'; base-uri 'none'; form-action 'none'\">\n"
                  "<meta name=\"referrer\" content=\"no-referrer\">\n"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    title(&w, d);
    keel_out_puts(&o, "</title>\n<style>");
    keel_out_puts(&o, policy_css);
    keel_out_puts(&o, "</style>\n</head>\n<body>\n<main>\n<h1 data-testid=\"title\">");
    title(&w, d);
    keel_out_puts(&o, "</h1>\n");
    policy_body(&w, d, day);
    keel_out_puts(&o, "</main>\n</body>\n</html>\n");
    return o.st;
}

keel_status_t keel_disclose_policy_md(const keel_disclose_opts_t *d, keel_buf_t *out)
{
    long long expires = 0;
    keel_status_t st = keel_disclose_check(d, &expires);
    if (st != KEEL_OK)
        return st;
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "disclose: no output buffer");
    char day[16];
    fmt_utc(expires, day, sizeof day, 1);
    keel_out_t o = {out, KEEL_OK};
    doc_t w = {&o, 1};
    keel_out_puts(&o, "# ");
    title(&w, d);
    keel_out_puts(&o, "\n\n");
    policy_body(&w, d, day);
    return o.st;
}

/* ---- writing ------------------------------------------------------------------------ */

keel_status_t keel_disclose_write(const keel_disclose_opts_t *d, const char *dir)
{
    if (dir == NULL || dir[0] == '\0')
        return keel_errorf(KEEL_ERR_ARG, "--out is required");
    static const struct {
        const char *name;
        keel_status_t (*render)(const keel_disclose_opts_t *, keel_buf_t *);
    } files[] = {
        {"security.txt", keel_disclose_security_txt},
        {"disclosure-policy.html", keel_disclose_policy_html},
        {"disclosure-policy.md", keel_disclose_policy_md},
    };
    enum { NFILES = sizeof files / sizeof files[0] };
    keel_buf_t bufs[NFILES];
    for (size_t i = 0; i < NFILES; i++)
        keel_buf_init(&bufs[i], KEEL_DISCLOSE_DOC_MAX);
    /* everything is rendered before anything is written */
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < NFILES && st == KEEL_OK; i++)
        st = files[i].render(d, &bufs[i]);
    if (st == KEEL_OK)
        st = keel_dir_make_public(dir);
    for (size_t i = 0; i < NFILES && st == KEEL_OK; i++)
        st = keel_file_publish(dir, files[i].name, bufs[i].data, bufs[i].len);
    for (size_t i = 0; i < NFILES; i++)
        keel_buf_free(&bufs[i]);
    return st;
}

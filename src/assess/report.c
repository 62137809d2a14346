/*
 * keel assess: the report's check and its three renderings (report.md,
 * report.html, junit.xml), and the writer of all four files.
 *
 * Every string of the report is treated as hostile: the probes escaped what
 * came from the target once (keel_assess_escape), but an ICS justification,
 * a title or an id reaches us as any UTF-8. Each rendering escapes every byte
 * it copies for its own syntax through one function (text_put), so there is
 * no place where a string is copied raw.
 */
#include "keel/crypto.h"
#include "keel/assess_report.h"

#include "keel/assess.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPORT_FORMAT "keel-assess-report-1"
#define PATH_TEXT_MAX 160 /* a JSON path in an error message */
#define CHAPTER_MAX 8     /* "5.13" */
#define MD_EVIDENCE_SHOWN 3   /* evidence entries per test in report.md */
#define MD_EVIDENCE_TEXT 300  /* bytes of sent/observed shown there */

static const char *const verdicts[] = {KEEL_VERDICT_PASS, KEEL_VERDICT_FAIL, KEEL_VERDICT_NA,
                                       KEEL_VERDICT_INCONCLUSIVE, NULL};
enum { V_PASS, V_FAIL, V_NA, V_INCONCLUSIVE, V_COUNT };
static const char *const statuses[] = {"M", "R", NULL};
static const char *const supports[] = {"yes", "no", "not_applicable", NULL};
static const char *const kinds[] = {"conceptual", "functional", NULL};
static const char *const severities[] = {"fail", "warn", "info", NULL};
static const char *const modes[] = {"ics+ixit", "discovery", NULL};

/* Chapter headings of EN 303 645 (our short words). */
static const struct {
    const char *id;
    const char *title;
} chapters[] = {
    {"5.0", "Reporting implementation"},
    {"5.1", "No universal default passwords"},
    {"5.2", "Implement a means to manage reports of vulnerabilities"},
    {"5.3", "Keep software updated"},
    {"5.4", "Securely store sensitive security parameters"},
    {"5.5", "Communicate securely"},
    {"5.6", "Minimize exposed attack surfaces"},
    {"5.7", "Ensure software integrity"},
    {"5.8", "Ensure that personal data is secure"},
    {"5.9", "Make systems resilient to outages"},
    {"5.10", "Examine system telemetry data"},
    {"5.11", "Make it easy for users to delete user data"},
    {"5.12", "Make installation and maintenance of devices easy"},
    {"5.13", "Validate input data"},
    {"6", "Data protection provisions for consumer IoT"},
};

/* ---- small accessors (on a checked report) ------------------------------------------ */

static const char *str_of(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s != NULL ? s : "";
}

static size_t len_of(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_length(v) : 0;
}

static int has_str(const json_t *obj, const char *key)
{
    return json_is_string(json_object_get(obj, key));
}

static long long int_of(const json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

static int verdict_index(const char *v)
{
    for (int i = 0; i < V_COUNT; i++)
        if (strcmp(v, verdicts[i]) == 0)
            return i;
    return -1;
}

/* The chapter of a provision id: "5.13" of "5.13-1A", "6" of "6-3B". */
static void chapter_of(const char *id, char out[CHAPTER_MAX])
{
    size_t n = strcspn(id, "-");
    if (n >= CHAPTER_MAX)
        n = CHAPTER_MAX - 1;
    memcpy(out, id, n);
    out[n] = '\0';
}

static const char *chapter_title(const char *ch)
{
    for (size_t i = 0; i < sizeof chapters / sizeof chapters[0]; i++)
        if (strcmp(chapters[i].id, ch) == 0)
            return chapters[i].title;
    return "";
}

/* Length of the well-formed UTF-8 sequence at p (n > 0 bytes left), 0 when
 * it is ill-formed (overlong, surrogate, past U+10FFFF, cut); *cp its value. */
static size_t utf8_next(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned char c = p[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1Fu, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0Fu, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* ---- check ------------------------------------------------------------------------------ */

static keel_status_t bad(const char *path, const char *key, const char *why)
{
    if (key != NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "%s.%s: %s", path, key, why);
    return keel_errorf(KEEL_ERR_FORMAT, "%s: %s", path, why);
}

enum { REQUIRED = 0, NULLABLE = 1, OPTIONAL = 2 };

/* obj[key] is a string of at most KEEL_ASSESS_REPORT_TEXT_MAX bytes, one of
 * `allowed` when given; null is accepted with NULLABLE, absence with OPTIONAL. */
static keel_status_t check_str(const json_t *obj, const char *path, const char *key, unsigned how,
                               const char *const *allowed)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return (how & OPTIONAL) ? KEEL_OK : bad(path, key, "missing");
    if (json_is_null(v))
        return (how & (NULLABLE | OPTIONAL)) ? KEEL_OK : bad(path, key, "must be a string, not null");
    if (!json_is_string(v))
        return bad(path, key, "must be a string");
    size_t n = json_string_length(v);
    if (n > KEEL_ASSESS_REPORT_TEXT_MAX)
        return bad(path, key, "longer than KEEL_ASSESS_REPORT_TEXT_MAX");
    /* jansson makes only UTF-8 strings, unless told not to check; such a
     * string could not even be written back as report.json. */
    const unsigned char *u = (const unsigned char *)json_string_value(v);
    for (size_t i = 0, len; i < n; i += len) {
        uint32_t cp;
        if ((len = utf8_next(u + i, n - i, &cp)) == 0)
            return bad(path, key, "not valid UTF-8");
    }
    if (allowed == NULL)
        return KEEL_OK;
    for (size_t i = 0; allowed[i] != NULL; i++)
        if (strcmp(json_string_value(v), allowed[i]) == 0)
            return KEEL_OK;
    char why[128] = "must be one of";
    for (size_t i = 0; allowed[i] != NULL; i++) {
        size_t used = strlen(why);
        if (keel_snprintf(why + used, sizeof why - used, "%s %s", i ? "," : "", allowed[i]) != KEEL_OK)
            break;
    }
    return bad(path, key, why);
}

/* obj[key] is an integer >= 0 (absent accepted with OPTIONAL). */
static keel_status_t check_count(const json_t *obj, const char *path, const char *key, unsigned how)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL && (how & OPTIONAL))
        return KEEL_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return bad(path, key, v == NULL ? "missing" : "must be an integer >= 0");
    return KEEL_OK;
}

/* obj[key] is an array of at most KEEL_ASSESS_REPORT_LIST_MAX entries. */
static keel_status_t check_list(const json_t *obj, const char *path, const char *key, const json_t **out)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return bad(path, key, "missing");
    if (!json_is_array(v))
        return bad(path, key, "must be an array");
    if (json_array_size(v) > KEEL_ASSESS_REPORT_LIST_MAX)
        return bad(path, key, "more entries than KEEL_ASSESS_REPORT_LIST_MAX");
    *out = v;
    return KEEL_OK;
}

static keel_status_t path_at(char out[PATH_TEXT_MAX], const char *path, const char *key, size_t i)
{
    if (keel_snprintf(out, PATH_TEXT_MAX, "%s.%s[%zu]", path, key, i) != KEEL_OK)
        return keel_errorf(KEEL_ERR_FORMAT, "%s.%s: nested too deeply", path, key);
    return KEEL_OK;
}

static keel_status_t check_test(const json_t *t, const char *path, const char *pid)
{
    if (!json_is_object(t))
        return bad(path, NULL, "must be an object");
    keel_status_t st;
    if ((st = check_str(t, path, "id", REQUIRED, NULL)) != KEEL_OK ||
        (st = check_str(t, path, "kind", REQUIRED, kinds)) != KEEL_OK ||
        (st = check_str(t, path, "unit", NULLABLE | OPTIONAL, NULL)) != KEEL_OK ||
        (st = check_str(t, path, "interface", NULLABLE | OPTIONAL, NULL)) != KEEL_OK ||
        (st = check_str(t, path, "verdict", REQUIRED, verdicts)) != KEEL_OK ||
        (st = check_str(t, path, "reason", REQUIRED, NULL)) != KEEL_OK)
        return st;
    /* Test ids live under their provision's: "5.1-1/conceptual". */
    const char *id = str_of(t, "id");
    size_t n = strlen(pid);
    if (strncmp(id, pid, n) != 0 || id[n] != '/' || id[n + 1] == '\0')
        return bad(path, "id", "must be the provision's id, '/' and a name");
    const json_t *findings = NULL, *evidence = NULL;
    if ((st = check_list(t, path, "findings", &findings)) != KEEL_OK ||
        (st = check_list(t, path, "evidence", &evidence)) != KEEL_OK)
        return st;
    char sub[PATH_TEXT_MAX];
    for (size_t i = 0; i < json_array_size(findings); i++) {
        const json_t *f = json_array_get(findings, i);
        if ((st = path_at(sub, path, "findings", i)) != KEEL_OK)
            return st;
        if (!json_is_object(f))
            return bad(sub, NULL, "must be an object");
        if ((st = check_str(f, sub, "severity", REQUIRED, severities)) != KEEL_OK ||
            (st = check_str(f, sub, "what", REQUIRED, NULL)) != KEEL_OK)
            return st;
    }
    for (size_t i = 0; i < json_array_size(evidence); i++) {
        const json_t *e = json_array_get(evidence, i);
        if ((st = path_at(sub, path, "evidence", i)) != KEEL_OK)
            return st;
        if (!json_is_object(e))
            return bad(sub, NULL, "must be an object");
        /* The probes leave a side out when there was none (nothing sent, no
         * answer) and the time out when they could not measure it. */
        if ((st = check_str(e, sub, "sent", NULLABLE | OPTIONAL, NULL)) != KEEL_OK ||
            (st = check_str(e, sub, "observed", NULLABLE | OPTIONAL, NULL)) != KEEL_OK ||
            (st = check_count(e, sub, "duration_us", OPTIONAL)) != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

typedef struct {
    long long n[V_COUNT];
    long long mandatory, mandatory_fail, mandatory_inconclusive;
} counts_t;

/* provisions[i], after provisions[0..i-1]; `chapter` is the chapter of the
 * one before, and becomes this one's. */
static keel_status_t check_provision(const json_t *provisions, size_t i, const char *path,
                                     char chapter[CHAPTER_MAX], counts_t *c)
{
    const json_t *p = json_array_get(provisions, i);
    if (!json_is_object(p))
        return bad(path, NULL, "must be an object");
    keel_status_t st;
    if ((st = check_str(p, path, "id", REQUIRED, NULL)) != KEEL_OK ||
        (st = check_str(p, path, "title", REQUIRED, NULL)) != KEEL_OK ||
        (st = check_str(p, path, "status", REQUIRED, statuses)) != KEEL_OK ||
        (st = check_str(p, path, "feature", NULLABLE | OPTIONAL, NULL)) != KEEL_OK ||
        (st = check_str(p, path, "support", NULLABLE | OPTIONAL, supports)) != KEEL_OK ||
        (st = check_str(p, path, "justification", NULLABLE | OPTIONAL, NULL)) != KEEL_OK ||
        (st = check_str(p, path, "verdict", REQUIRED, verdicts)) != KEEL_OK ||
        (st = check_str(p, path, "reason", REQUIRED, NULL)) != KEEL_OK)
        return st;
    const char *id = str_of(p, "id");
    const keel_assess_provision_t *cat = keel_assess_catalogue_find(id);
    if (cat == NULL || strcmp(cat->id, id) != 0)
        return bad(path, "id", "not a provision of the catalogue");
    if (str_of(p, "status")[0] != cat->status)
        return bad(path, "status", cat->status == 'M' ? "the catalogue says M" : "the catalogue says R");
    /* Each provision once, and a chapter's provisions together: junit.xml
     * and report.html have one section per chapter. */
    char ch[CHAPTER_MAX];
    chapter_of(id, ch);
    for (size_t j = 0; j < i; j++) {
        const char *other = str_of(json_array_get(provisions, j), "id");
        if (strcmp(other, id) == 0)
            return bad(path, "id", "appears twice");
        char och[CHAPTER_MAX];
        chapter_of(other, och);
        if (strcmp(ch, chapter) != 0 && strcmp(och, ch) == 0)
            return bad(path, "id", "its chapter's provisions are not together");
    }
    memcpy(chapter, ch, CHAPTER_MAX);
    const json_t *tests;
    if ((st = check_list(p, path, "tests", &tests)) != KEEL_OK)
        return st;
    char sub[PATH_TEXT_MAX];
    for (size_t k = 0; k < json_array_size(tests); k++) {
        if ((st = path_at(sub, path, "tests", k)) != KEEL_OK ||
            (st = check_test(json_array_get(tests, k), sub, id)) != KEEL_OK)
            return st;
    }
    int v = verdict_index(str_of(p, "verdict"));
    c->n[v]++;
    if (cat->status == 'M') {
        c->mandatory++;
        c->mandatory_fail += v == V_FAIL;
        c->mandatory_inconclusive += v == V_INCONCLUSIVE;
    }
    return KEEL_OK;
}

static keel_status_t check_summary(const json_t *report, size_t provisions, const counts_t *c)
{
    const json_t *s = json_object_get(report, "summary");
    if (!json_is_object(s))
        return bad("$", "summary", s == NULL ? "missing" : "must be an object");
    const struct {
        const char *key;
        long long want;
    } keys[] = {
        {"provisions", (long long)provisions},
        {KEEL_VERDICT_PASS, c->n[V_PASS]},
        {KEEL_VERDICT_FAIL, c->n[V_FAIL]},
        {KEEL_VERDICT_NA, c->n[V_NA]},
        {KEEL_VERDICT_INCONCLUSIVE, c->n[V_INCONCLUSIVE]},
        {"mandatory", c->mandatory},
        {"mandatory_fail", c->mandatory_fail},
        {"mandatory_inconclusive", c->mandatory_inconclusive},
    };
    keel_status_t st;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if ((st = check_count(s, "$.summary", keys[i].key, REQUIRED)) != KEEL_OK)
            return st;
        if (int_of(s, keys[i].key) != keys[i].want)
            return keel_errorf(KEEL_ERR_FORMAT, "$.summary.%s: %lld, but the provisions count %lld", keys[i].key,
                               int_of(s, keys[i].key), keys[i].want);
    }
    const json_t *conf = json_object_get(s, "conforming");
    if (!json_is_boolean(conf))
        return bad("$.summary", "conforming", conf == NULL ? "missing" : "must be true or false");
    if (json_is_true(conf) != (c->mandatory_fail == 0))
        return bad("$.summary", "conforming", "disagrees with mandatory_fail");
    return KEEL_OK;
}

keel_status_t keel_assess_report_check(const json_t *report)
{
    if (report == NULL)
        return keel_errorf(KEEL_ERR_ARG, "report: NULL");
    if (!json_is_object(report))
        return bad("$", NULL, "must be an object");
    keel_status_t st;
    if ((st = check_str(report, "$", "format", REQUIRED, NULL)) != KEEL_OK)
        return st;
    if (strcmp(str_of(report, "format"), REPORT_FORMAT) != 0)
        return bad("$", "format", "must be \"" REPORT_FORMAT "\"");
    if ((st = check_str(report, "$", "generator", REQUIRED, NULL)) != KEEL_OK ||
        (st = check_str(report, "$", "started", REQUIRED, NULL)) != KEEL_OK ||
        (st = check_count(report, "$", "duration_us", REQUIRED)) != KEEL_OK ||
        (st = check_str(report, "$", "mode", REQUIRED, modes)) != KEEL_OK)
        return st;
    const json_t *target = json_object_get(report, "target");
    if (!json_is_object(target))
        return bad("$", "target", target == NULL ? "missing" : "must be an object");
    if ((st = check_str(target, "$.target", "host", REQUIRED, NULL)) != KEEL_OK ||
        (st = check_str(target, "$.target", "address", NULLABLE | OPTIONAL, NULL)) != KEEL_OK)
        return st;
    const json_t *product = json_object_get(report, "product");
    if (product != NULL && !json_is_null(product)) {
        if (!json_is_object(product))
            return bad("$", "product", "must be an object or null");
        if ((st = check_str(product, "$.product", "manufacturer", NULLABLE | OPTIONAL, NULL)) != KEEL_OK ||
            (st = check_str(product, "$.product", "model", NULLABLE | OPTIONAL, NULL)) != KEEL_OK ||
            (st = check_str(product, "$.product", "firmware_version", NULLABLE | OPTIONAL, NULL)) != KEEL_OK)
            return st;
    }
    const json_t *provisions;
    if ((st = check_list(report, "$", "provisions", &provisions)) != KEEL_OK)
        return st;
    if (json_array_size(provisions) == 0)
        return bad("$", "provisions", "is empty");
    counts_t c;
    memset(&c, 0, sizeof c);
    char path[PATH_TEXT_MAX], chapter[CHAPTER_MAX] = "";
    for (size_t i = 0; i < json_array_size(provisions); i++) {
        if ((st = path_at(path, "$", "provisions", i)) != KEEL_OK ||
            (st = check_provision(provisions, i, path, chapter, &c)) != KEEL_OK)
            return st;
    }
    if ((st = check_summary(report, json_array_size(provisions), &c)) != KEEL_OK)
        return st;
    const json_t *probes = json_object_get(report, "probes");
    if (probes != NULL && !json_is_array(probes))
        return bad("$", "probes", "must be an array");
    const json_t *obs = json_object_get(report, "observations");
    if (obs != NULL && !json_is_array(obs))
        return bad("$", "observations", "must be an array");
    return KEEL_OK;
}

/* ---- output with one sticky status ------------------------------------------------------ */

static void put_ll(keel_out_t *o, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    if (n > 0 && (size_t)n < sizeof tmp)
        keel_out_put(o, tmp, (size_t)n);
    else if (o->st == KEEL_OK)
        o->st = keel_errorf(KEEL_ERR_FORMAT, "formatting failed");
}

/* Seconds with three decimals, for junit's time attributes. */
static void put_seconds(keel_out_t *o, long long us)
{
    char tmp[48];
    int n = snprintf(tmp, sizeof tmp, "%lld.%03lld", us / 1000000, (us % 1000000) / 1000);
    if (n > 0 && (size_t)n < sizeof tmp)
        keel_out_put(o, tmp, (size_t)n);
    else if (o->st == KEEL_OK)
        o->st = keel_errorf(KEEL_ERR_FORMAT, "formatting failed");
}

/* A duration for people: "850 us", "12.4 ms", "41.2 s", "3 min 07 s". */
static void put_duration(keel_out_t *o, long long us)
{
    char tmp[64];
    int n;
    if (us < 1000)
        n = snprintf(tmp, sizeof tmp, "%lld us", us);
    else if (us < 1000000)
        n = snprintf(tmp, sizeof tmp, "%lld.%lld ms", us / 1000, (us % 1000) / 100);
    else if (us < 60000000)
        n = snprintf(tmp, sizeof tmp, "%lld.%lld s", us / 1000000, (us % 1000000) / 100000);
    else
        n = snprintf(tmp, sizeof tmp, "%lld min %02lld s", us / 60000000, (us / 1000000) % 60);
    if (n > 0 && (size_t)n < sizeof tmp)
        keel_out_put(o, tmp, (size_t)n);
    else if (o->st == KEEL_OK)
        o->st = keel_errorf(KEEL_ERR_FORMAT, "formatting failed");
}

/* ---- escaping ------------------------------------------------------------------------- */

typedef enum { ESC_HTML, ESC_XML, ESC_XML_ATTR, ESC_MD } esc_t;

/* What replaces one character in `esc` ("" drops it), or NULL to copy it. A
 * control character or an ill-formed byte is shown as the text \xHH in HTML
 * and Markdown (in `hex`), and dropped in XML, where XML 1.0 forbids it. */
static const char *replacement(esc_t esc, uint32_t cp, size_t len, unsigned char byte, char hex[8])
{
    int control = len == 0 || cp < 0x20 || cp == 0x7F;
    if (esc == ESC_XML || esc == ESC_XML_ATTR) {
        if (cp == '\n' && len == 1)
            return esc == ESC_XML ? NULL : "&#10;";
        if (cp == '\t' && len == 1)
            return esc == ESC_XML ? NULL : "&#9;";
        if (cp == '\r' && len == 1)
            return "&#13;";
        if (control || cp == 0xFFFE || cp == 0xFFFF)
            return "";
        switch (cp) {
        case '&': return "&amp;";
        case '<': return "&lt;";
        case '>': return "&gt;";
        case '"': return "&quot;";
        case '\'': return "&apos;";
        default: return NULL;
        }
    }
    if (esc == ESC_HTML) {
        if (len == 1 && (cp == '\n' || cp == '\t'))
            return NULL;
        if (!control) {
            switch (cp) {
            case '&': return "&amp;";
            case '<': return "&lt;";
            case '>': return "&gt;";
            case '"': return "&quot;";
            case '\'': return "&#39;";
            default: return NULL;
            }
        }
        (void)snprintf(hex, 8, "\\x%02X", len == 0 ? byte : (unsigned)cp);
        return hex;
    }
    /* Markdown: one line per cell or item, and no metacharacter left active.
     * A backslash before ASCII punctuation is CommonMark's escape. */
    if (len == 1 && cp == '\n')
        return "\\\\n";
    if (len == 1 && cp == '\t')
        return " ";
    if (control) {
        (void)snprintf(hex, 8, "\\\\x%02X", len == 0 ? byte : (unsigned)cp);
        return hex;
    }
    switch (cp) {
    case '\\': return "\\\\";
    case '`': return "\\`";
    case '*': return "\\*";
    case '_': return "\\_";
    case '[': return "\\[";
    case ']': return "\\]";
    case '<': return "\\<";
    case '>': return "\\>";
    case '|': return "\\|";
    case '&': return "\\&";
    case '~': return "\\~";
    default: return NULL;
    }
}

/* Appends n bytes of s escaped for `esc`, copying runs that need nothing. */
static void text_put(keel_out_t *o, esc_t esc, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t run = 0, i = 0;
    char hex[8];
    while (i < n && o->st == KEEL_OK) {
        uint32_t cp = 0;
        size_t len = utf8_next(p + i, n - i, &cp);
        const char *r = replacement(esc, cp, len, p[i], hex);
        size_t step = len == 0 ? 1 : len;
        if (r == NULL) {
            i += step;
            continue;
        }
        keel_out_put(o, (const char *)p + run, i - run);
        keel_out_puts(o, r);
        i += step;
        run = i;
    }
    keel_out_put(o, (const char *)p + run, n - run);
}

static void text(keel_out_t *o, esc_t esc, const char *s)
{
    text_put(o, esc, s, strlen(s));
}

/* obj[key] escaped (its full length: an embedded NUL is escaped too). */
static void field(keel_out_t *o, esc_t esc, const json_t *obj, const char *key)
{
    text_put(o, esc, str_of(obj, key), len_of(obj, key));
}

/* At most `cap` bytes of obj[key], cut on a character boundary, with "..."
 * when cut. */
static void field_capped(keel_out_t *o, esc_t esc, const json_t *obj, const char *key, size_t cap)
{
    const char *s = str_of(obj, key);
    size_t n = len_of(obj, key);
    if (n <= cap) {
        text_put(o, esc, s, n);
        return;
    }
    while (cap > 0 && ((unsigned char)s[cap] & 0xC0) == 0x80)
        cap--;
    text_put(o, esc, s, cap);
    keel_out_puts(o, "...");
}

/* "Acme thermo-1 1.4.2" from the product, else "the device at <host>". */
static void product_name(keel_out_t *o, esc_t esc, const json_t *report)
{
    const json_t *pr = json_object_get(report, "product");
    const char *keys[] = {"manufacturer", "model", "firmware_version"};
    int any = 0;
    for (size_t i = 0; i < 3; i++) {
        if (!json_is_object(pr) || len_of(pr, keys[i]) == 0)
            continue;
        if (any)
            keel_out_puts(o, " ");
        field(o, esc, pr, keys[i]);
        any = 1;
    }
    if (!any) {
        keel_out_puts(o, "the device at ");
        field(o, esc, json_object_get(report, "target"), "host");
    }
}

/* "host" or "host (address)" when they differ. */
static void target_name(keel_out_t *o, esc_t esc, const json_t *report)
{
    const json_t *t = json_object_get(report, "target");
    field(o, esc, t, "host");
    if (has_str(t, "address") && strcmp(str_of(t, "address"), str_of(t, "host")) != 0) {
        keel_out_puts(o, " (");
        field(o, esc, t, "address");
        keel_out_puts(o, ")");
    }
}

static long long evidence_us(const json_t *p)
{
    long long us = 0;
    const json_t *tests = json_object_get(p, "tests");
    for (size_t i = 0; i < json_array_size(tests); i++) {
        const json_t *ev = json_object_get(json_array_get(tests, i), "evidence");
        for (size_t j = 0; j < json_array_size(ev); j++) {
            long long d = int_of(json_array_get(ev, j), "duration_us");
            if (d > 0 && us <= LLONG_MAX - d)
                us += d;
        }
    }
    return us;
}

/* The counts of a checked report, over all provisions and the mandatory ones. */
static void count(const json_t *report, long long all[V_COUNT], long long mandatory[V_COUNT])
{
    memset(all, 0, sizeof(long long) * V_COUNT);
    memset(mandatory, 0, sizeof(long long) * V_COUNT);
    const json_t *provisions = json_object_get(report, "provisions");
    for (size_t i = 0; i < json_array_size(provisions); i++) {
        const json_t *p = json_array_get(provisions, i);
        int v = verdict_index(str_of(p, "verdict"));
        all[v]++;
        if (str_of(p, "status")[0] == 'M')
            mandatory[v]++;
    }
}

static void overall_line(keel_out_t *o, long long mandatory_fail)
{
    if (mandatory_fail == 0) {
        keel_out_puts(o, "conforming: no mandatory provision fails");
        return;
    }
    keel_out_puts(o, "NOT conforming: ");
    put_ll(o, mandatory_fail);
    keel_out_puts(o, mandatory_fail == 1 ? " mandatory provision fails" : " mandatory provisions fail");
}

static keel_status_t finish(keel_out_t *o)
{
    return o->st;
}

/* ---- report.md ------------------------------------------------------------------------- */

static void md_provision_line(keel_out_t *o, const json_t *p)
{
    keel_out_puts(o, "- **");
    field(o, ESC_MD, p, "id");
    keel_out_puts(o, "** (");
    keel_out_puts(o, str_of(p, "status")[0] == 'M' ? "mandatory" : "recommended");
    keel_out_puts(o, ") ");
    field(o, ESC_MD, p, "title");
    keel_out_puts(o, ": ");
    field(o, ESC_MD, p, "reason");
    keel_out_puts(o, "\n");
}

static void md_test(keel_out_t *o, const json_t *t)
{
    keel_out_puts(o, "- ");
    field(o, ESC_MD, t, "id");
    keel_out_puts(o, " (");
    field(o, ESC_MD, t, "kind");
    keel_out_puts(o, "): **");
    field(o, ESC_MD, t, "verdict");
    keel_out_puts(o, "**: ");
    field(o, ESC_MD, t, "reason");
    keel_out_puts(o, "\n");
    const json_t *findings = json_object_get(t, "findings");
    for (size_t i = 0; i < json_array_size(findings); i++) {
        const json_t *f = json_array_get(findings, i);
        keel_out_puts(o, "  - ");
        field(o, ESC_MD, f, "severity");
        keel_out_puts(o, ": ");
        field(o, ESC_MD, f, "what");
        keel_out_puts(o, "\n");
    }
    const json_t *ev = json_object_get(t, "evidence");
    size_t n = json_array_size(ev);
    for (size_t i = 0; i < n && i < MD_EVIDENCE_SHOWN; i++) {
        const json_t *e = json_array_get(ev, i);
        keel_out_puts(o, "  - evidence: sent ");
        if (has_str(e, "sent"))
            field_capped(o, ESC_MD, e, "sent", MD_EVIDENCE_TEXT);
        else
            keel_out_puts(o, "nothing");
        keel_out_puts(o, "; observed ");
        if (has_str(e, "observed"))
            field_capped(o, ESC_MD, e, "observed", MD_EVIDENCE_TEXT);
        else
            keel_out_puts(o, "nothing");
        keel_out_puts(o, "\n");
    }
    if (n > MD_EVIDENCE_SHOWN) {
        keel_out_puts(o, "  - ");
        put_ll(o, (long long)(n - MD_EVIDENCE_SHOWN));
        keel_out_puts(o, " more evidence entries in report.html and report.json\n");
    }
}

keel_status_t keel_assess_report_md(const json_t *report, keel_buf_t *out)
{
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "report: no output buffer");
    keel_status_t st = keel_assess_report_check(report);
    if (st != KEEL_OK)
        return st;
    keel_out_t o = {out, KEEL_OK};
    const json_t *provisions = json_object_get(report, "provisions");
    long long all[V_COUNT], man[V_COUNT];
    count(report, all, man);

    keel_out_puts(&o, "# EN 303 645 assessment of ");
    product_name(&o, ESC_MD, report);
    keel_out_puts(&o, "\n\n- Target: ");
    target_name(&o, ESC_MD, report);
    keel_out_puts(&o, "\n- Mode: ");
    field(&o, ESC_MD, report, "mode");
    keel_out_puts(&o, "\n- Started: ");
    field(&o, ESC_MD, report, "started");
    keel_out_puts(&o, "\n- Duration: ");
    put_duration(&o, int_of(report, "duration_us"));
    keel_out_puts(&o, "\n- Generator: ");
    field(&o, ESC_MD, report, "generator");
    keel_out_puts(&o, "\n\n**");
    overall_line(&o, man[V_FAIL]);
    keel_out_puts(&o, ".**\n\n| provisions | PASS | FAIL | NOT\\_APPLICABLE | INCONCLUSIVE | total |\n"
                  "|---|---:|---:|---:|---:|---:|\n");
    for (int row = 0; row < 2; row++) {
        const long long *c = row == 0 ? all : man;
        keel_out_puts(&o, row == 0 ? "| all |" : "| mandatory |");
        long long total = 0;
        for (int v = 0; v < V_COUNT; v++) {
            keel_out_puts(&o, " ");
            put_ll(&o, c[v]);
            keel_out_puts(&o, " |");
            total += c[v];
        }
        keel_out_puts(&o, " ");
        put_ll(&o, total);
        keel_out_puts(&o, " |\n");
    }

    keel_out_puts(&o, "\n## Failures\n\n");
    if (all[V_FAIL] == 0)
        keel_out_puts(&o, "None.\n");
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < json_array_size(provisions); i++) {
            const json_t *p = json_array_get(provisions, i);
            if (verdict_index(str_of(p, "verdict")) == V_FAIL && (str_of(p, "status")[0] == 'M') == (pass == 0))
                md_provision_line(&o, p);
        }
    if (all[V_INCONCLUSIVE] > 0) {
        keel_out_puts(&o, "\n## Inconclusive\n\n");
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 0; i < json_array_size(provisions); i++) {
                const json_t *p = json_array_get(provisions, i);
                if (verdict_index(str_of(p, "verdict")) == V_INCONCLUSIVE &&
                    (str_of(p, "status")[0] == 'M') == (pass == 0))
                    md_provision_line(&o, p);
            }
    }

    keel_out_puts(&o, "\n## All provisions\n\n| id | M/R | verdict | title | reason |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < json_array_size(provisions); i++) {
        const json_t *p = json_array_get(provisions, i);
        keel_out_puts(&o, "| ");
        field(&o, ESC_MD, p, "id");
        keel_out_puts(&o, " | ");
        field(&o, ESC_MD, p, "status");
        keel_out_puts(&o, " | ");
        field(&o, ESC_MD, p, "verdict");
        keel_out_puts(&o, " | ");
        field(&o, ESC_MD, p, "title");
        keel_out_puts(&o, " | ");
        field(&o, ESC_MD, p, "reason");
        keel_out_puts(&o, " |\n");
    }

    if (all[V_FAIL] + all[V_INCONCLUSIVE] > 0)
        keel_out_puts(&o, "\n## Tests of the provisions that fail or are inconclusive\n");
    for (size_t i = 0; i < json_array_size(provisions); i++) {
        const json_t *p = json_array_get(provisions, i);
        int v = verdict_index(str_of(p, "verdict"));
        if (v != V_FAIL && v != V_INCONCLUSIVE)
            continue;
        keel_out_puts(&o, "\n### ");
        field(&o, ESC_MD, p, "id");
        keel_out_puts(&o, " ");
        field(&o, ESC_MD, p, "title");
        keel_out_puts(&o, "\n\n");
        field(&o, ESC_MD, p, "verdict");
        keel_out_puts(&o, str_of(p, "status")[0] == 'M' ? " (mandatory): " : " (recommended): ");
        field(&o, ESC_MD, p, "reason");
        keel_out_puts(&o, "\n");
        if (has_str(p, "support")) {
            keel_out_puts(&o, "\nICS: ");
            field(&o, ESC_MD, p, "support");
            if (len_of(p, "justification") > 0) {
                keel_out_puts(&o, "; justification: ");
                field(&o, ESC_MD, p, "justification");
            }
            keel_out_puts(&o, "\n");
        }
        keel_out_puts(&o, "\n");
        const json_t *tests = json_object_get(p, "tests");
        if (json_array_size(tests) == 0)
            keel_out_puts(&o, "No test ran.\n");
        for (size_t j = 0; j < json_array_size(tests); j++)
            md_test(&o, json_array_get(tests, j));
    }
    return finish(&o);
}

/* ---- report.html ------------------------------------------------------------------------ */

/* Every colour pair has a contrast of at least 4.5:1, and every verdict is
 * also written out: colour is never the only carrier. */
static const char html_css[] =
    ":root{--pass-bg:#dcfce7;--pass-fg:#14532d;--pass-bd:#15803d;--fail-bg:#b91c1c;--fail-fg:#fff;"
    "--fail-bd:#7f1d1d;--na-bg:#f3f4f6;--na-fg:#374151;--na-bd:#6b7280;--inc-bg:#fef3c7;--inc-fg:#78350f;"
    "--inc-bd:#b45309}\n"
    "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#111827;background:#fff;"
    "margin:0 auto;max-width:72rem;padding:1rem 1.5rem}\n"
    "h1{font-size:1.5rem;margin:.5rem 0}h2{font-size:1.25rem;border-bottom:2px solid #d1d5db;margin-top:2rem}"
    "h3{font-size:1.05rem;margin:0 0 .4rem}\n"
    "dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.15rem 1rem;margin:0}"
    "dl.meta dt{font-weight:600}dl.meta dd{margin:0}\n"
    ".overall{font-size:1.15rem;font-weight:700;padding:.5rem .75rem;border-left:6px solid}"
    ".overall.ok{border-color:var(--pass-bd);background:var(--pass-bg);color:var(--pass-fg)}"
    ".overall.bad{border-color:var(--fail-bd);background:#fee2e2;color:#7f1d1d}\n"
    "table{border-collapse:collapse}th,td{border:1px solid #d1d5db;padding:.2rem .5rem;text-align:left;"
    "vertical-align:top}table.counts td{text-align:right;min-width:4rem}\n"
    ".tag{display:inline-block;font-size:.8rem;font-weight:700;padding:0 .4rem;border:1px solid;"
    "border-radius:3px}\n"
    ".v-PASS{background:var(--pass-bg);color:var(--pass-fg);border-color:var(--pass-bd)}"
    ".v-FAIL{background:var(--fail-bg);color:var(--fail-fg);border-color:var(--fail-bd)}"
    ".v-NOT_APPLICABLE{background:var(--na-bg);color:var(--na-fg);border-color:var(--na-bd);"
    "border-style:dashed}"
    ".v-INCONCLUSIVE{background:var(--inc-bg);color:var(--inc-fg);border-color:var(--inc-bd);"
    "border-style:dotted}\n"
    ".grid{display:grid;grid-template-columns:3.5rem 1fr;gap:.3rem .5rem;align-items:start}"
    ".grid .ch{font-weight:700;padding-top:.4rem}"
    ".grid ol{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.3rem}\n"
    "a.cell{display:block;width:5.6rem;padding:.2rem .3rem;border:2px solid;border-radius:4px;"
    "text-decoration:none;font-size:.8rem;line-height:1.25}"
    "a.cell .pid{display:block;font-weight:700;font-size:.9rem}"
    "a.cell.m{border-width:3px;box-shadow:inset 0 0 0 1px currentColor}"
    "a.cell:focus{outline:3px solid #1d4ed8;outline-offset:2px}\n"
    ".legend{font-size:.85rem;color:#374151}\n"
    "article.prov{border:1px solid #d1d5db;border-left:6px solid;border-radius:4px;padding:.6rem .8rem;"
    "margin:.8rem 0}"
    "article.prov.v-PASS,article.prov.v-FAIL,article.prov.v-NOT_APPLICABLE,article.prov.v-INCONCLUSIVE"
    "{background:#fff;color:#111827}\n"
    "article.prov:target{box-shadow:0 0 0 3px #1d4ed8}\n"
    "dl.ics{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.3rem 0}"
    "dl.ics dt{font-weight:600}dl.ics dd{margin:0;white-space:pre-wrap;overflow-wrap:anywhere}\n"
    ".test{border-top:1px solid #e5e7eb;padding:.4rem 0 .2rem;break-inside:avoid}"
    ".test .tid{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem;overflow-wrap:anywhere}"
    ".kind{color:#4b5563;font-size:.85rem}\n"
    ".reason{margin:.2rem 0;overflow-wrap:anywhere;white-space:pre-wrap}"
    "ul.findings{margin:.2rem 0;padding-left:1.2rem}"
    "ul.findings li{overflow-wrap:anywhere;white-space:pre-wrap}"
    ".sev{font-weight:700;text-transform:uppercase;font-size:.75rem}"
    ".sev-fail .sev{color:#991b1b}.sev-warn .sev{color:#92400e}.sev-info .sev{color:#1e40af}\n"
    "details{margin:.3rem 0}summary{cursor:pointer;color:#1e3a8a}"
    "table.ev{width:100%;table-layout:fixed;font-size:.8rem}table.ev col.n{width:2.5rem}"
    "table.ev col.t{width:6rem}"
    "table.ev td.x{font-family:ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;"
    "overflow-wrap:anywhere}\n"
    "footer{margin-top:2rem;font-size:.85rem;color:#4b5563}\n"
    "@media print{body{max-width:none;padding:0;font-size:11pt}"
    "*{-webkit-print-color-adjust:exact;print-color-adjust:exact}"
    "a.cell{width:4.8rem}article.prov{break-inside:avoid-page}h2{break-after:avoid}"
    "details::details-content{content-visibility:visible;display:contents}"
    "summary{list-style:none;color:#111827}}\n";

static const char *verdict_short(int v)
{
    static const char *const s[V_COUNT] = {"PASS", "FAIL", "N/A", "INCONCL."};
    return s[v];
}

static void html_tag(keel_out_t *o, const char *verdict)
{
    keel_out_puts(o, "<span class=\"tag v-");
    text(o, ESC_HTML, verdict);
    keel_out_puts(o, "\">");
    text(o, ESC_HTML, verdict);
    keel_out_puts(o, "</span>");
}

/* A <dt>/<dd> pair when obj[key] is a non-empty string. */
static void html_dd(keel_out_t *o, const char *label, const json_t *obj, const char *key)
{
    if (len_of(obj, key) == 0)
        return;
    keel_out_puts(o, "<dt>");
    keel_out_puts(o, label);
    keel_out_puts(o, "</dt><dd>");
    field(o, ESC_HTML, obj, key);
    keel_out_puts(o, "</dd>");
}

static void html_test(keel_out_t *o, const json_t *t)
{
    keel_out_puts(o, "<div class=\"test\" data-testid=\"test\"><p class=\"reason\"><span class=\"tid\">");
    field(o, ESC_HTML, t, "id");
    keel_out_puts(o, "</span> <span class=\"kind\">");
    field(o, ESC_HTML, t, "kind");
    if (len_of(t, "unit") > 0) {
        keel_out_puts(o, ", unit ");
        field(o, ESC_HTML, t, "unit");
    }
    if (len_of(t, "interface") > 0) {
        keel_out_puts(o, " on ");
        field(o, ESC_HTML, t, "interface");
    }
    keel_out_puts(o, "</span> ");
    html_tag(o, str_of(t, "verdict"));
    keel_out_puts(o, "<br>");
    field(o, ESC_HTML, t, "reason");
    keel_out_puts(o, "</p>\n");
    const json_t *findings = json_object_get(t, "findings");
    if (json_array_size(findings) > 0) {
        keel_out_puts(o, "<ul class=\"findings\">");
        for (size_t i = 0; i < json_array_size(findings); i++) {
            const json_t *f = json_array_get(findings, i);
            keel_out_puts(o, "<li class=\"sev-");
            field(o, ESC_HTML, f, "severity");
            keel_out_puts(o, "\"><span class=\"sev\">");
            field(o, ESC_HTML, f, "severity");
            keel_out_puts(o, "</span> ");
            field(o, ESC_HTML, f, "what");
            keel_out_puts(o, "</li>");
        }
        keel_out_puts(o, "</ul>\n");
    }
    const json_t *ev = json_object_get(t, "evidence");
    if (json_array_size(ev) == 0) {
        keel_out_puts(o, "</div>\n");
        return;
    }
    keel_out_puts(o, "<details><summary>Evidence (");
    put_ll(o, (long long)json_array_size(ev));
    keel_out_puts(o, ")</summary><table class=\"ev\"><colgroup><col class=\"n\"><col><col><col class=\"t\"></colgroup>"
                  "<thead><tr><th scope=\"col\">#</th><th scope=\"col\">Sent</th><th scope=\"col\">Observed</th>"
                  "<th scope=\"col\">Time</th></tr></thead><tbody>\n");
    for (size_t i = 0; i < json_array_size(ev); i++) {
        const json_t *e = json_array_get(ev, i);
        keel_out_puts(o, "<tr><td>");
        put_ll(o, (long long)i + 1);
        keel_out_puts(o, "</td><td class=\"x\">");
        field(o, ESC_HTML, e, "sent");
        keel_out_puts(o, "</td><td class=\"x\">");
        field(o, ESC_HTML, e, "observed");
        if (json_is_true(json_object_get(e, "truncated")))
            keel_out_puts(o, " <em>(truncated)</em>");
        keel_out_puts(o, "</td><td>");
        if (json_is_integer(json_object_get(e, "duration_us")))
            put_duration(o, int_of(e, "duration_us"));
        keel_out_puts(o, "</td></tr>\n");
    }
    keel_out_puts(o, "</tbody></table></details></div>\n");
}

static void html_provision(keel_out_t *o, const json_t *p)
{
    int mandatory = str_of(p, "status")[0] == 'M';
    keel_out_puts(o, "<article class=\"prov v-");
    field(o, ESC_HTML, p, "verdict");
    keel_out_puts(o, "\" id=\"p-");
    field(o, ESC_HTML, p, "id");
    keel_out_puts(o, "\" data-verdict=\"");
    field(o, ESC_HTML, p, "verdict");
    keel_out_puts(o, "\"><h3>");
    field(o, ESC_HTML, p, "id");
    keel_out_puts(o, " ");
    field(o, ESC_HTML, p, "title");
    keel_out_puts(o, " ");
    html_tag(o, str_of(p, "verdict"));
    keel_out_puts(o, mandatory ? " <span class=\"kind\">mandatory</span>" : " <span class=\"kind\">recommended</span>");
    keel_out_puts(o, "</h3>\n<p class=\"reason\" data-testid=\"reason\">");
    field(o, ESC_HTML, p, "reason");
    keel_out_puts(o, "</p>\n");
    if (len_of(p, "feature") + len_of(p, "support") + len_of(p, "justification") > 0) {
        keel_out_puts(o, "<dl class=\"ics\">");
        html_dd(o, "Applies with", p, "feature");
        html_dd(o, "ICS support", p, "support");
        html_dd(o, "Justification", p, "justification");
        keel_out_puts(o, "</dl>\n");
    }
    const json_t *tests = json_object_get(p, "tests");
    if (json_array_size(tests) == 0)
        keel_out_puts(o, "<p class=\"kind\">No test ran.</p>\n");
    for (size_t i = 0; i < json_array_size(tests); i++)
        html_test(o, json_array_get(tests, i));
    keel_out_puts(o, "</article>\n");
}

static void html_cell(keel_out_t *o, const json_t *p)
{
    int mandatory = str_of(p, "status")[0] == 'M';
    int v = verdict_index(str_of(p, "verdict"));
    keel_out_puts(o, "<li><a class=\"cell v-");
    field(o, ESC_HTML, p, "verdict");
    keel_out_puts(o, mandatory ? " m" : " r");
    keel_out_puts(o, "\" data-testid=\"cell\" data-verdict=\"");
    field(o, ESC_HTML, p, "verdict");
    keel_out_puts(o, "\" href=\"#p-");
    field(o, ESC_HTML, p, "id");
    keel_out_puts(o, "\" title=\"");
    field(o, ESC_HTML, p, "id");
    keel_out_puts(o, mandatory ? " (mandatory) " : " (recommended) ");
    field(o, ESC_HTML, p, "verdict");
    keel_out_puts(o, ": ");
    field(o, ESC_HTML, p, "title");
    keel_out_puts(o, "\"><span class=\"pid\">");
    field(o, ESC_HTML, p, "id");
    keel_out_puts(o, "</span>");
    keel_out_puts(o, mandatory ? "M " : "R ");
    keel_out_puts(o, verdict_short(v));
    keel_out_puts(o, "</a></li>");
}

keel_status_t keel_assess_report_html(const json_t *report, keel_buf_t *out)
{
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "report: no output buffer");
    keel_status_t st = keel_assess_report_check(report);
    if (st != KEEL_OK)
        return st;
    /* style-src by the stylesheet's SHA-256, so not even an injected style
     * element would apply. */
    char hash[KEEL_SHA256_B64_LEN];
    if ((st = keel_sha256_base64(html_css, sizeof html_css - 1, hash)) != KEEL_OK)
        return st;
    keel_out_t o = {out, KEEL_OK};
    const json_t *provisions = json_object_get(report, "provisions");
    size_t np = json_array_size(provisions);
    long long all[V_COUNT], man[V_COUNT];
    count(report, all, man);

    keel_out_puts(&o, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                  "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'sha256-");
    keel_out_puts(&o, hash);
    keel_out_puts(&o, "'; img-src 'none'; base-uri 'none'; form-action 'none'\">\n"
                  "<meta name=\"referrer\" content=\"no-referrer\">\n"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                  "<title>EN 303 645 assessment: ");
    product_name(&o, ESC_HTML, report);
    keel_out_puts(&o, "</title>\n<style>");
    keel_out_puts(&o, html_css);
    keel_out_puts(&o, "</style>\n</head>\n<body>\n<header>\n"
                  "<h1>EN 303 645 assessment of <span data-testid=\"product\">");
    product_name(&o, ESC_HTML, report);
    keel_out_puts(&o, "</span></h1>\n<dl class=\"meta\">");
    const json_t *pr = json_object_get(report, "product");
    if (json_is_object(pr)) {
        html_dd(&o, "Manufacturer", pr, "manufacturer");
        html_dd(&o, "Model", pr, "model");
        html_dd(&o, "Firmware", pr, "firmware_version");
    }
    keel_out_puts(&o, "<dt>Target</dt><dd data-testid=\"target\">");
    target_name(&o, ESC_HTML, report);
    keel_out_puts(&o, "</dd><dt>Mode</dt><dd data-testid=\"mode\">");
    field(&o, ESC_HTML, report, "mode");
    keel_out_puts(&o, "</dd><dt>Started</dt><dd data-testid=\"started\">");
    field(&o, ESC_HTML, report, "started");
    keel_out_puts(&o, "</dd><dt>Duration</dt><dd data-testid=\"duration\">");
    put_duration(&o, int_of(report, "duration_us"));
    keel_out_puts(&o, "</dd><dt>Generator</dt><dd>");
    field(&o, ESC_HTML, report, "generator");
    keel_out_puts(&o, "</dd></dl>\n</header>\n<main>\n<section aria-labelledby=\"h-summary\">\n"
                  "<h2 id=\"h-summary\">Summary</h2>\n<p class=\"overall ");
    keel_out_puts(&o, man[V_FAIL] == 0 ? "ok" : "bad");
    keel_out_puts(&o, "\" data-testid=\"overall\">");
    overall_line(&o, man[V_FAIL]);
    if (man[V_INCONCLUSIVE] > 0) {
        keel_out_puts(&o, " (");
        put_ll(&o, man[V_INCONCLUSIVE]);
        keel_out_puts(&o, man[V_INCONCLUSIVE] == 1 ? " mandatory provision inconclusive)"
                                           : " mandatory provisions inconclusive)");
    }
    keel_out_puts(&o, "</p>\n<table class=\"counts\"><thead><tr><th scope=\"col\">Verdict</th>"
                  "<th scope=\"col\">All provisions</th><th scope=\"col\">Mandatory</th></tr></thead><tbody>\n");
    for (int v = 0; v < V_COUNT; v++) {
        keel_out_puts(&o, "<tr><th scope=\"row\">");
        html_tag(&o, verdicts[v]);
        keel_out_puts(&o, "</th><td data-testid=\"count-");
        keel_out_puts(&o, verdicts[v]);
        keel_out_puts(&o, "\">");
        put_ll(&o, all[v]);
        keel_out_puts(&o, "</td><td data-testid=\"mandatory-");
        keel_out_puts(&o, verdicts[v]);
        keel_out_puts(&o, "\">");
        put_ll(&o, man[v]);
        keel_out_puts(&o, "</td></tr>\n");
    }
    keel_out_puts(&o, "<tr><th scope=\"row\">Total</th><td data-testid=\"count-provisions\">");
    put_ll(&o, (long long)np);
    keel_out_puts(&o, "</td><td data-testid=\"count-mandatory\">");
    put_ll(&o, man[V_PASS] + man[V_FAIL] + man[V_NA] + man[V_INCONCLUSIVE]);
    keel_out_puts(&o, "</td></tr>\n</tbody></table>\n</section>\n"
                  "<section aria-labelledby=\"h-grid\">\n<h2 id=\"h-grid\">Provisions</h2>\n"
                  "<p class=\"legend\">One cell per provision: its id, M (mandatory, thick border) or R "
                  "(recommended), and its verdict (PASS; FAIL; N/A: not applicable, dashed; INCONCL.: "
                  "inconclusive, dotted). Each cell links to the provision's tests below.</p>\n"
                  "<nav class=\"grid\" data-testid=\"grid\" aria-label=\"Provisions by chapter\">\n");
    char chapter[CHAPTER_MAX] = "";
    for (size_t i = 0; i < np; i++) {
        const json_t *p = json_array_get(provisions, i);
        char ch[CHAPTER_MAX];
        chapter_of(str_of(p, "id"), ch);
        if (strcmp(ch, chapter) != 0) {
            if (i > 0)
                keel_out_puts(&o, "</ol>\n");
            keel_out_puts(&o, "<span class=\"ch\">");
            text(&o, ESC_HTML, ch);
            keel_out_puts(&o, "</span><ol>");
            memcpy(chapter, ch, sizeof chapter);
        }
        html_cell(&o, p);
    }
    keel_out_puts(&o, "</ol>\n</nav>\n</section>\n");
    chapter[0] = '\0';
    for (size_t i = 0; i < np; i++) {
        const json_t *p = json_array_get(provisions, i);
        char ch[CHAPTER_MAX];
        chapter_of(str_of(p, "id"), ch);
        if (strcmp(ch, chapter) != 0) {
            if (i > 0)
                keel_out_puts(&o, "</section>\n");
            keel_out_puts(&o, "<section class=\"chapter\" id=\"ch-");
            text(&o, ESC_HTML, ch);
            keel_out_puts(&o, "\">\n<h2>");
            text(&o, ESC_HTML, ch);
            keel_out_puts(&o, " ");
            text(&o, ESC_HTML, chapter_title(ch));
            keel_out_puts(&o, "</h2>\n");
            memcpy(chapter, ch, sizeof chapter);
        }
        html_provision(&o, p);
    }
    keel_out_puts(&o, "</section>\n</main>\n<footer>Written by ");
    field(&o, ESC_HTML, report, "generator");
    keel_out_puts(&o, " (keel-assess-report-1). Evidence that came from the target is shown as text, "
                  "escaped; the machine-readable report is report.json beside this file.</footer>\n"
                  "</body>\n</html>\n");
    return finish(&o);
}

/* ---- junit.xml -------------------------------------------------------------------------- */

static void xml_attr(keel_out_t *o, const char *name, const char *s, size_t n)
{
    keel_out_puts(o, " ");
    keel_out_puts(o, name);
    keel_out_puts(o, "=\"");
    text_put(o, ESC_XML_ATTR, s, n);
    keel_out_puts(o, "\"");
}

static void xml_attr_ll(keel_out_t *o, const char *name, long long v)
{
    keel_out_puts(o, " ");
    keel_out_puts(o, name);
    keel_out_puts(o, "=\"");
    put_ll(o, v);
    keel_out_puts(o, "\"");
}

/* The body of a <failure>/<error>/<skipped>: each test with its verdict,
 * reason and findings, one per line. */
static void junit_tests_text(keel_out_t *o, const json_t *p)
{
    keel_out_puts(o, str_of(p, "status")[0] == 'M' ? "mandatory provision\n" : "recommended provision\n");
    if (len_of(p, "support") > 0) {
        keel_out_puts(o, "ICS: ");
        field(o, ESC_XML, p, "support");
        if (len_of(p, "justification") > 0) {
            keel_out_puts(o, "; justification: ");
            field(o, ESC_XML, p, "justification");
        }
        keel_out_puts(o, "\n");
    }
    const json_t *tests = json_object_get(p, "tests");
    for (size_t i = 0; i < json_array_size(tests); i++) {
        const json_t *t = json_array_get(tests, i);
        field(o, ESC_XML, t, "id");
        keel_out_puts(o, ": ");
        field(o, ESC_XML, t, "verdict");
        keel_out_puts(o, ": ");
        field(o, ESC_XML, t, "reason");
        keel_out_puts(o, "\n");
        const json_t *findings = json_object_get(t, "findings");
        for (size_t j = 0; j < json_array_size(findings); j++) {
            const json_t *f = json_array_get(findings, j);
            keel_out_puts(o, "  [");
            field(o, ESC_XML, f, "severity");
            keel_out_puts(o, "] ");
            field(o, ESC_XML, f, "what");
            keel_out_puts(o, "\n");
        }
    }
}

static void junit_case(keel_out_t *o, const json_t *p, const char *chapter)
{
    keel_out_puts(o, "    <testcase classname=\"EN303645.");
    text(o, ESC_XML_ATTR, chapter);
    keel_out_puts(o, "\" name=\"");
    field(o, ESC_XML_ATTR, p, "id");
    keel_out_puts(o, " ");
    field(o, ESC_XML_ATTR, p, "title");
    keel_out_puts(o, "\" time=\"");
    put_seconds(o, evidence_us(p));
    keel_out_puts(o, "\">\n");
    int v = verdict_index(str_of(p, "verdict"));
    const char *el = v == V_FAIL ? "failure" : v == V_INCONCLUSIVE ? "error" : v == V_NA ? "skipped" : NULL;
    if (el != NULL) {
        keel_out_puts(o, "      <");
        keel_out_puts(o, el);
        xml_attr(o, "message", str_of(p, "reason"), len_of(p, "reason"));
        xml_attr(o, "type", str_of(p, "verdict"), len_of(p, "verdict"));
        keel_out_puts(o, ">");
        junit_tests_text(o, p);
        keel_out_puts(o, "</");
        keel_out_puts(o, el);
        keel_out_puts(o, ">\n");
    } else {
        keel_out_puts(o, "      <system-out>");
        junit_tests_text(o, p);
        keel_out_puts(o, "</system-out>\n");
    }
    keel_out_puts(o, "    </testcase>\n");
}

keel_status_t keel_assess_report_junit(const json_t *report, keel_buf_t *out)
{
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "report: no output buffer");
    keel_status_t st = keel_assess_report_check(report);
    if (st != KEEL_OK)
        return st;
    keel_out_t o = {out, KEEL_OK};
    const json_t *provisions = json_object_get(report, "provisions");
    size_t np = json_array_size(provisions);
    long long all[V_COUNT], man[V_COUNT];
    count(report, all, man);

    keel_out_puts(&o, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"keel assess\"");
    xml_attr_ll(&o, "tests", (long long)np);
    xml_attr_ll(&o, "failures", all[V_FAIL]);
    xml_attr_ll(&o, "errors", all[V_INCONCLUSIVE]);
    xml_attr_ll(&o, "skipped", all[V_NA]);
    keel_out_puts(&o, " time=\"");
    put_seconds(&o, int_of(report, "duration_us"));
    keel_out_puts(&o, "\">\n");
    for (size_t i = 0; i < np;) {
        char ch[CHAPTER_MAX];
        chapter_of(str_of(json_array_get(provisions, i), "id"), ch);
        /* The chapter's provisions are together (the check saw to it). */
        size_t end = i;
        long long c[V_COUNT] = {0}, us = 0;
        for (; end < np; end++) {
            const json_t *p = json_array_get(provisions, end);
            char pch[CHAPTER_MAX];
            chapter_of(str_of(p, "id"), pch);
            if (strcmp(pch, ch) != 0)
                break;
            c[verdict_index(str_of(p, "verdict"))]++;
            long long e = evidence_us(p);
            if (us <= LLONG_MAX - e)
                us += e;
        }
        keel_out_puts(&o, "  <testsuite name=\"EN 303 645 ");
        text(&o, ESC_XML_ATTR, ch);
        keel_out_puts(&o, "\"");
        xml_attr_ll(&o, "tests", (long long)(end - i));
        xml_attr_ll(&o, "failures", c[V_FAIL]);
        xml_attr_ll(&o, "errors", c[V_INCONCLUSIVE]);
        xml_attr_ll(&o, "skipped", c[V_NA]);
        keel_out_puts(&o, " time=\"");
        put_seconds(&o, us);
        keel_out_puts(&o, "\">\n");
        for (; i < end; i++)
            junit_case(&o, json_array_get(provisions, i), ch);
        keel_out_puts(&o, "  </testsuite>\n");
    }
    keel_out_puts(&o, "</testsuites>\n");
    return finish(&o);
}

/* ---- the four files -------------------------------------------------------------------- */

typedef keel_status_t (*render_fn)(const json_t *, keel_buf_t *);

static keel_status_t render_json(const json_t *report, keel_buf_t *out)
{
    char *s = json_dumps(report, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "report.json: serialising failed");
    keel_status_t st = keel_buf_append(out, s, strlen(s));
    if (st == KEEL_OK)
        st = keel_buf_append(out, "\n", 1);
    free(s);
    return st;
}

keel_status_t keel_assess_report_write(const json_t *report, const char *dir)
{
    if (dir == NULL || dir[0] == '\0')
        return keel_errorf(KEEL_ERR_ARG, "report: no output directory");
    keel_status_t st = keel_assess_report_check(report);
    if (st != KEEL_OK)
        return st;
    static const struct {
        const char *name;
        render_fn render;
    } files[] = {
        {"report.json", render_json},
        {"report.md", keel_assess_report_md},
        {"report.html", keel_assess_report_html},
        {"junit.xml", keel_assess_report_junit},
    };
    enum { NFILES = sizeof files / sizeof files[0] };
    keel_buf_t bufs[NFILES];
    for (size_t i = 0; i < NFILES; i++)
        keel_buf_init(&bufs[i], KEEL_ASSESS_REPORT_OUT_MAX);
    /* Everything is rendered before anything is written: a rendering that
     * fails leaves the directory as it was. */
    for (size_t i = 0; i < NFILES && st == KEEL_OK; i++) {
        st = files[i].render(report, &bufs[i]);
        if (st != KEEL_OK) {
            char msg[KEEL_ERROR_MAX];
            if (keel_strlcpy(msg, keel_error_message(), sizeof msg) != KEEL_OK)
                msg[0] = '\0';
            st = keel_errorf(st, "%s: %s", files[i].name, msg);
        }
    }
    if (st == KEEL_OK)
        st = keel_dir_make_public(dir);
    for (size_t i = 0; i < NFILES && st == KEEL_OK; i++)
        st = keel_file_publish(dir, files[i].name, bufs[i].data, bufs[i].len);
    for (size_t i = 0; i < NFILES; i++)
        keel_buf_free(&bufs[i]);
    return st;
}

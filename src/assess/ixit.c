/*
 * The ICS ("keel-ics-1") and IXIT ("keel-ixit-1") documents: strict checks
 * with the JSON path of every problem (docs/assess.md is the schema).
 *
 * A draft may hold placeholders (a string starting with
 * KEEL_ASSESS_PLACEHOLDER) in place of any value the manufacturer still has
 * to give; they are collected for the caller, and every check that depends
 * on such a value is skipped. A final document, or any draft under
 * KEEL_ASSESS_STRICT, is refused while one remains.
 */
#include "keel/assess.h"

#include "keel/privacy.h"
#include "keel/update.h"

#include <ctype.h>
#include <string.h>

#define PATH_CAP 256 /* JSON paths in messages; our schema nests four levels at most */

typedef struct {
    unsigned flags;
    int draft;
    json_t *ph; /* placeholders found: [{"path", "what"}] */
    const char *base_dir;
} vctx_t;

static keel_status_t bad(const char *path, const char *why)
{
    return keel_errorf(KEEL_ERR_FORMAT, "%s: %s", path, why);
}

/* A path too deep to fit ends in "..." (only messages use them). */
static void clip(char *out, int n)
{
    if (n < 0 || n >= PATH_CAP)
        memcpy(out + PATH_CAP - 4, "...", 4);
}

static void sub_key(char *out, const char *path, const char *key)
{
    /* Keys that are not plain names (provision ids) are quoted like JSONPath does. */
    int plain = isalpha((unsigned char)key[0]) != 0;
    for (const char *p = key; plain && *p; p++)
        plain = isalnum((unsigned char)*p) || *p == '_';
    if (plain)
        clip(out, snprintf(out, PATH_CAP, "%s.%.64s", path, key));
    else
        clip(out, snprintf(out, PATH_CAP, "%s[\"%.64s\"]", path, key));
}

static void sub_idx(char *out, const char *path, size_t i)
{
    clip(out, snprintf(out, PATH_CAP, "%s[%zu]", path, i));
}

static int is_placeholder(const json_t *v)
{
    return json_is_string(v) &&
           strncmp(json_string_value(v), KEEL_ASSESS_PLACEHOLDER, strlen(KEEL_ASSESS_PLACEHOLDER)) == 0;
}

/* *skip = 1 when v is a placeholder of a draft (the caller checks nothing more). */
static keel_status_t placeholder(vctx_t *c, const json_t *v, const char *path, int *skip)
{
    *skip = 0;
    if (!is_placeholder(v))
        return KEEL_OK;
    const char *what = json_string_value(v) + strlen(KEEL_ASSESS_PLACEHOLDER);
    if (json_string_length(v) > KEEL_ASSESS_TEXT_MAX)
        return bad(path, "placeholder text is too long");
    if (!c->draft)
        return keel_errorf(KEEL_ERR_FORMAT, "%s: to be filled by the manufacturer (%.200s) in a final document",
                           path, what);
    if (json_array_size(c->ph) >= 4 * KEEL_ASSESS_LIST_MAX)
        return bad(path, "too many placeholders");
    if (json_array_append_new(c->ph, json_pack("{s:s, s:s}", "path", path, "what", what)) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    *skip = 1;
    return KEEL_OK;
}

static keel_status_t only_keys(const json_t *obj, const char *path, const char *const *keys)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        size_t i = 0;
        while (keys[i] != NULL && strcmp(keys[i], k) != 0)
            i++;
        if (keys[i] == NULL) {
            char p[PATH_CAP];
            sub_key(p, path, k);
            return bad(p, "unknown key");
        }
    }
    return KEEL_OK;
}

/*
 * Fetches obj[key] into *out: NULL when absent (an error if required), when
 * JSON null and `nullable`, or when a draft's placeholder. The sub-path goes
 * to p.
 */
enum { OPT = 0, REQ = 1, NULLABLE = 2 };
static keel_status_t member(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode,
                            json_t **out, char *p)
{
    sub_key(p, path, key);
    *out = NULL;
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return (mode & REQ) ? bad(p, "missing") : KEEL_OK;
    if (json_is_null(v))
        return (mode & NULLABLE) ? KEEL_OK : bad(p, "must not be null");
    int skip;
    keel_status_t st = placeholder(c, v, p, &skip);
    if (st == KEEL_OK && !skip)
        *out = v;
    return st;
}

static int printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

static keel_status_t str_value(const json_t *v, const char *p, size_t cap, const char **out)
{
    if (!json_is_string(v))
        return bad(p, "must be a string");
    const char *s = json_string_value(v);
    if (json_string_length(v) == 0)
        return bad(p, "must not be empty");
    if (json_string_length(v) > cap)
        return keel_errorf(KEEL_ERR_FORMAT, "%s: longer than %zu bytes", p, cap);
    if (strlen(s) != json_string_length(v) || !printable(s))
        return bad(p, "control characters are not allowed");
    *out = s;
    return KEEL_OK;
}

static keel_status_t get_text(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode,
                              size_t cap, const char **out)
{
    char p[PATH_CAP];
    json_t *v;
    *out = NULL;
    keel_status_t st = member(c, obj, path, key, mode, &v, p);
    return st != KEEL_OK || v == NULL ? st : str_value(v, p, cap, out);
}

static int name_ok(const char *s)
{
    if (!isalnum((unsigned char)s[0]))
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
            return 0;
    return 1;
}

static keel_status_t name_value(const json_t *v, const char *p, const char **out)
{
    keel_status_t st = str_value(v, p, KEEL_ASSESS_NAME_MAX, out);
    if (st == KEEL_OK && !name_ok(*out))
        st = bad(p, "must be a name: letters, digits, '-', '_', '.'");
    return st;
}

static keel_status_t get_name(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode,
                              const char **out)
{
    char p[PATH_CAP];
    json_t *v;
    *out = NULL;
    keel_status_t st = member(c, obj, path, key, mode, &v, p);
    return st != KEEL_OK || v == NULL ? st : name_value(v, p, out);
}

static keel_status_t get_enum(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode,
                              const char *const *vals, const char **out)
{
    char p[PATH_CAP];
    json_t *v;
    *out = NULL;
    keel_status_t st = member(c, obj, path, key, mode, &v, p);
    if (st != KEEL_OK || v == NULL)
        return st;
    const char *s = json_string_value(v);
    for (size_t i = 0; s != NULL && vals[i] != NULL; i++)
        if (strcmp(vals[i], s) == 0) {
            *out = vals[i];
            return KEEL_OK;
        }
    char list[256] = "";
    for (size_t i = 0; vals[i] != NULL; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s\"%s\"", i ? ", " : "", vals[i]);
    return keel_errorf(KEEL_ERR_FORMAT, "%s: must be one of %s", p, list);
}

/* *out: 1 true, 0 false, -1 absent or placeholder. */
static keel_status_t get_bool(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode, int *out)
{
    char p[PATH_CAP];
    json_t *v;
    *out = -1;
    keel_status_t st = member(c, obj, path, key, mode, &v, p);
    if (st != KEEL_OK || v == NULL)
        return st;
    if (!json_is_boolean(v))
        return bad(p, "must be true or false");
    *out = json_is_true(v);
    return KEEL_OK;
}

/* *out: the port, or 0 when absent or a placeholder. */
static keel_status_t get_port(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode,
                              long *out)
{
    char p[PATH_CAP];
    json_t *v;
    *out = 0;
    keel_status_t st = member(c, obj, path, key, mode, &v, p);
    if (st != KEEL_OK || v == NULL)
        return st;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 65535)
        return bad(p, "must be a port number, 1 to 65535");
    *out = (long)json_integer_value(v);
    return KEEL_OK;
}

static keel_status_t get_object(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode,
                                const char *const *keys, json_t **out, char *p)
{
    keel_status_t st = member(c, obj, path, key, mode, out, p);
    if (st != KEEL_OK || *out == NULL)
        return st;
    if (!json_is_object(*out))
        return bad(p, "must be an object");
    return only_keys(*out, p, keys);
}

static keel_status_t get_array(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode,
                               json_t **out, char *p)
{
    keel_status_t st = member(c, obj, path, key, mode, out, p);
    if (st != KEEL_OK || *out == NULL)
        return st;
    if (!json_is_array(*out))
        return bad(p, "must be an array");
    if (json_array_size(*out) > KEEL_ASSESS_LIST_MAX)
        return keel_errorf(KEEL_ERR_FORMAT, "%s: more than %u entries", p, KEEL_ASSESS_LIST_MAX);
    return KEEL_OK;
}

/* An array entry: an object with `keys`, or NULL for a draft's placeholder. */
static keel_status_t entry(vctx_t *c, json_t *arr, size_t i, const char *path, const char *const *keys,
                           json_t **out, char *p)
{
    sub_idx(p, path, i);
    *out = json_array_get(arr, i);
    int skip;
    keel_status_t st = placeholder(c, *out, p, &skip);
    if (st != KEEL_OK || skip) {
        *out = NULL;
        return st;
    }
    if (!json_is_object(*out))
        return bad(p, "must be an object");
    return only_keys(*out, p, keys);
}

/* A URL (http or https) or a file path. */
static keel_status_t get_location(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode,
                                  const char **out)
{
    char p[PATH_CAP];
    keel_status_t st = get_text(c, obj, path, key, mode, KEEL_PATH_MAX - 1, out);
    if (st != KEEL_OK || *out == NULL)
        return st;
    sub_key(p, path, key);
    if (strstr(*out, "://") != NULL && strncmp(*out, "https://", 8) != 0 && strncmp(*out, "http://", 7) != 0)
        return bad(p, "must be an http(s) URL or a file path");
    if (strchr(*out, ' ') != NULL && strstr(*out, "://") != NULL)
        return bad(p, "a URL must not contain spaces");
    return KEEL_OK;
}

static keel_status_t check_format(vctx_t *c, const json_t *doc, const char *format)
{
    if (!json_is_object(doc))
        return bad("$", "must be an object");
    json_t *v = json_object_get(doc, "format");
    if (v == NULL)
        return bad("$.format", "missing");
    if (!json_is_string(v) || strcmp(json_string_value(v), format) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "$.format: must be \"%s\"", format);
    static const char *const statuses[] = {"draft", "final", NULL};
    const char *s;
    c->draft = 0; /* the status itself is never a placeholder */
    keel_status_t st = get_enum(c, doc, "$", "status", REQ, statuses, &s);
    if (st == KEEL_OK && s != NULL)
        c->draft = strcmp(s, "draft") == 0;
    return st;
}

/* After the whole document: a draft under KEEL_ASSESS_STRICT is refused,
 * naming the first value left to fill. */
static keel_status_t check_strict(const vctx_t *c)
{
    if (!c->draft || !(c->flags & KEEL_ASSESS_STRICT))
        return KEEL_OK;
    size_t n = json_array_size(c->ph);
    if (n == 0)
        return bad("$.status", "a draft is refused in strict mode (set \"final\" once complete)");
    return keel_errorf(KEEL_ERR_FORMAT,
                       "$.status: a draft is refused in strict mode: %zu value%s to be filled by the manufacturer, "
                       "first %s",
                       n, n == 1 ? "" : "s", json_string_value(json_object_get(json_array_get(c->ph, 0), "path")));
}

static keel_status_t finish(vctx_t *c, keel_status_t st, json_t **placeholders)
{
    if (st == KEEL_OK)
        st = check_strict(c);
    if (st == KEEL_OK && placeholders != NULL)
        *placeholders = json_incref(c->ph);
    json_decref(c->ph);
    return st;
}

/* ---- ICS -------------------------------------------------------------------------- */

static keel_status_t ics_features(vctx_t *c, const json_t *doc, int *have)
{
    char p[PATH_CAP], q[PATH_CAP];
    json_t *f;
    keel_status_t st = member(c, doc, "$", "features", REQ, &f, p);
    if (st != KEEL_OK || f == NULL)
        return st;
    if (!json_is_object(f))
        return bad(p, "must be an object");
    const char *k;
    json_t *v;
    json_object_foreach(f, k, v) {
        if (keel_assess_feature_find(k) == NULL) {
            sub_key(q, p, k);
            return bad(q, "unknown feature (docs/assess.md lists them)");
        }
    }
    for (size_t i = 0; st == KEEL_OK && i < keel_assess_feature_count(); i++)
        st = get_bool(c, f, p, keel_assess_feature_at(i)->id, REQ, &have[i]);
    return st;
}

static int feature_state(const int *have, const char *id)
{
    for (size_t i = 0; i < keel_assess_feature_count(); i++)
        if (strcmp(keel_assess_feature_at(i)->id, id) == 0)
            return have[i];
    return -1;
}

static keel_status_t ics_provision(vctx_t *c, const keel_assess_provision_t *pr, const json_t *e, const char *p,
                                   const int *have)
{
    static const char *const keys[] = {"support", "justification", "missing_feature", NULL};
    static const char *const supports[] = {"yes", "no", "not_applicable", NULL};
    int skip;
    keel_status_t st = placeholder(c, e, p, &skip);
    if (st != KEEL_OK || skip)
        return st;
    if (!json_is_object(e))
        return bad(p, "must be an object");
    if ((st = only_keys(e, p, keys)) != KEEL_OK)
        return st;
    const char *support, *why, *missing;
    char q[PATH_CAP];
    if ((st = get_enum(c, e, p, "support", REQ, supports, &support)) != KEEL_OK ||
        (st = get_text(c, e, p, "justification", OPT, KEEL_ASSESS_TEXT_MAX, &why)) != KEEL_OK ||
        (st = get_name(c, e, p, "missing_feature", OPT, &missing)) != KEEL_OK)
        return st;
    /* A placeholder justification is one the manufacturer will give. */
    int justified = why != NULL || is_placeholder(json_object_get(e, "justification"));
    if (support == NULL)
        return KEEL_OK;
    sub_key(q, p, "missing_feature");
    if (missing != NULL && strcmp(support, "not_applicable") != 0)
        return bad(q, "only a provision marked not_applicable names a missing feature");
    if (strcmp(support, "no") == 0 && pr->status == 'R' && !justified)
        return bad(p, "a recommended provision that is not supported needs a justification (5.0-1)");
    if (strcmp(support, "not_applicable") == 0) {
        if (pr->feature == NULL && pr->status == 'M')
            return bad(p, "a mandatory provision without condition cannot be not_applicable");
        if (pr->feature == NULL && !justified)
            return bad(p, "a recommended provision that does not apply needs a justification (5.0-1)");
        if (pr->feature != NULL) {
            if (missing == NULL && !is_placeholder(json_object_get(e, "missing_feature")))
                return keel_errorf(KEEL_ERR_FORMAT,
                                   "%s: not_applicable needs the missing feature (this provision depends on "
                                   "\"%s\")",
                                   q, pr->feature);
            if (missing != NULL && strcmp(missing, pr->feature) != 0)
                return keel_errorf(KEEL_ERR_FORMAT, "%s: this provision depends on \"%s\", not \"%s\"", q,
                                   pr->feature, missing);
            if (feature_state(have, pr->feature) == 1)
                return keel_errorf(KEEL_ERR_FORMAT, "%s: $.features.%s says the product has it", q, pr->feature);
        }
    }
    if (strcmp(support, "yes") == 0 && pr->feature != NULL && feature_state(have, pr->feature) == 0)
        return keel_errorf(KEEL_ERR_FORMAT,
                           "%s.support: supported, but $.features.%s says the product lacks what it depends on", p,
                           pr->feature);
    return KEEL_OK;
}

static keel_status_t ics_provisions(vctx_t *c, const json_t *doc, const int *have)
{
    char p[PATH_CAP], q[PATH_CAP];
    json_t *ps;
    keel_status_t st = member(c, doc, "$", "provisions", REQ, &ps, p);
    if (st != KEEL_OK || ps == NULL)
        return st;
    if (!json_is_object(ps))
        return bad(p, "must be an object");
    const char *k;
    json_t *v;
    json_object_foreach(ps, k, v) {
        sub_key(q, p, k);
        const keel_assess_provision_t *pr = keel_assess_catalogue_find(k);
        if (pr == NULL)
            return bad(q, "not a provision of EN 303 645 V3.1.3");
        if (strcmp(pr->id, k) != 0)
            return keel_errorf(KEEL_ERR_FORMAT, "%s: a V2.1.1 id; use %s (V3.1.3)", q, pr->id);
        if ((st = ics_provision(c, pr, v, q, have)) != KEEL_OK)
            return st;
    }
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        const char *id = keel_assess_catalogue_at(i)->id;
        if (json_object_get(ps, id) == NULL) {
            sub_key(q, p, id);
            return bad(q, "missing: the ICS states every provision (5.0-1)");
        }
    }
    return KEEL_OK;
}

keel_status_t keel_assess_ics_check(const json_t *ics, unsigned flags, json_t **placeholders)
{
    static const char *const keys[] = {"format", "status", "product", "features", "provisions", NULL};
    static const char *const product_keys[] = {"manufacturer", "model", NULL};
    vctx_t c = {.flags = flags, .ph = json_array()};
    if (c.ph == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    int have[32];
    char p[PATH_CAP];
    const char *s;
    json_t *product;
    _Static_assert(sizeof have / sizeof have[0] >= 14, "room for every feature");
    for (size_t i = 0; i < sizeof have / sizeof have[0]; i++)
        have[i] = -1; /* unknown until read: a draft may leave $.features to fill */
    keel_status_t st = check_format(&c, ics, "keel-ics-1");
    if (st == KEEL_OK && keel_assess_feature_count() > sizeof have / sizeof have[0])
        st = keel_errorf(KEEL_ERR_ARG, "too many features");
    if (st == KEEL_OK)
        st = only_keys(ics, "$", keys);
    if (st == KEEL_OK)
        st = get_object(&c, ics, "$", "product", REQ, product_keys, &product, p);
    if (st == KEEL_OK && product != NULL &&
        (st = get_text(&c, product, p, "manufacturer", REQ, KEEL_ASSESS_NAME_MAX * 4, &s)) == KEEL_OK)
        st = get_text(&c, product, p, "model", REQ, KEEL_ASSESS_NAME_MAX, &s);
    if (st == KEEL_OK)
        st = ics_features(&c, ics, have);
    if (st == KEEL_OK)
        st = ics_provisions(&c, ics, have);
    return finish(&c, st, placeholders);
}

/* ---- IXIT ------------------------------------------------------------------------- */

/* Adds name to the set `names` (an object), refusing a duplicate. */
static keel_status_t unique_name(json_t *names, const char *name, const char *p)
{
    if (name == NULL)
        return KEEL_OK;
    if (json_object_get(names, name) != NULL)
        return keel_errorf(KEEL_ERR_FORMAT, "%s.name: \"%s\" is declared twice", p, name);
    return json_object_set_new(names, name, json_true()) == 0 ? KEEL_OK : keel_errorf(KEEL_ERR_NOMEM, "out of memory");
}

static keel_status_t ixit_product(vctx_t *c, const json_t *doc)
{
    static const char *const keys[] = {"manufacturer", "model", "firmware_version", "support_period", NULL};
    static const char *const period_keys[] = {"end", "published_at", NULL};
    char p[PATH_CAP], q[PATH_CAP];
    json_t *o, *period;
    const char *s;
    keel_status_t st = get_object(c, doc, "$", "product", REQ, keys, &o, p);
    if (st != KEEL_OK || o == NULL)
        return st;
    if ((st = get_text(c, o, p, "manufacturer", REQ, KEEL_ASSESS_NAME_MAX * 4, &s)) != KEEL_OK ||
        (st = get_text(c, o, p, "model", REQ, KEEL_ASSESS_NAME_MAX, &s)) != KEEL_OK ||
        (st = get_text(c, o, p, "firmware_version", REQ, KEEL_ASSESS_NAME_MAX, &s)) != KEEL_OK ||
        (st = get_object(c, o, p, "support_period", REQ, period_keys, &period, q)) != KEEL_OK || period == NULL)
        return st;
    if ((st = get_text(c, period, q, "end", REQ, 10, &s)) != KEEL_OK)
        return st;
    if (s != NULL && !keel_date_ok(s)) {
        sub_key(p, q, "end");
        return bad(p, "must be a date, YYYY-MM-DD");
    }
    return get_location(c, period, q, "published_at", REQ, &s);
}

static keel_status_t ixit_authentication(vctx_t *c, const json_t *doc, json_t *names)
{
    static const char *const keys[] = {"name", "kind", "description", "password_setting",
                                       "brute_force_protection", "lab_credentials", NULL};
    static const char *const kinds[] = {"password", "pin", "certificate", "token", "peer_credentials", "other", NULL};
    static const char *const settings[] = {"unique_per_device", "set_by_user", "universal_default", NULL};
    static const char *const cred_keys[] = {"user", "password_file", "password_env", NULL};
    char p[PATH_CAP], q[PATH_CAP], r[PATH_CAP];
    json_t *arr, *e, *cred;
    const char *name, *kind, *s;
    keel_status_t st = get_array(c, doc, "$", "authentication", REQ, &arr, p);
    for (size_t i = 0; st == KEEL_OK && arr != NULL && i < json_array_size(arr); i++) {
        if ((st = entry(c, arr, i, p, keys, &e, q)) != KEEL_OK || e == NULL)
            continue;
        if ((st = get_name(c, e, q, "name", REQ, &name)) != KEEL_OK || (st = unique_name(names, name, q)) != KEEL_OK ||
            (st = get_enum(c, e, q, "kind", REQ, kinds, &kind)) != KEEL_OK ||
            (st = get_text(c, e, q, "description", OPT, KEEL_ASSESS_TEXT_MAX, &s)) != KEEL_OK)
            continue;
        int pw = kind != NULL && (strcmp(kind, "password") == 0 || strcmp(kind, "pin") == 0);
        if ((st = get_enum(c, e, q, "password_setting", pw ? REQ : OPT, settings, &s)) != KEEL_OK ||
            (st = get_text(c, e, q, "brute_force_protection", pw ? REQ : OPT, KEEL_ASSESS_TEXT_MAX, &s)) != KEEL_OK)
            continue;
        /* The IXIT travels to labs and reports; a secret in it would too. */
        json_t *lc = json_object_get(e, "lab_credentials");
        if (json_is_object(lc) && json_object_get(lc, "password") != NULL) {
            sub_key(r, q, "lab_credentials");
            st = keel_errorf(KEEL_ERR_FORMAT,
                             "%s.password: the IXIT never holds a secret; name a password_file or password_env", r);
            continue;
        }
        if ((st = get_object(c, e, q, "lab_credentials", OPT, cred_keys, &cred, r)) != KEEL_OK || cred == NULL)
            continue;
        const char *file, *env;
        if ((st = get_text(c, cred, r, "user", OPT, KEEL_ASSESS_NAME_MAX, &s)) != KEEL_OK ||
            (st = get_text(c, cred, r, "password_file", OPT, KEEL_PATH_MAX - 1, &file)) != KEEL_OK ||
            (st = get_name(c, cred, r, "password_env", OPT, &env)) != KEEL_OK)
            continue;
        if ((file != NULL) + (env != NULL) != 1 && !is_placeholder(json_object_get(cred, "password_file")) &&
            !is_placeholder(json_object_get(cred, "password_env")))
            st = bad(r, "needs exactly one of password_file and password_env");
    }
    return st;
}

static const char *const transports[] = {"tcp", "udp", "unix", "serial", "usb", "radio", "physical", NULL};

/* Sockets have a server and a client side; a button or a serial header does not. */
static int is_socket(const char *transport)
{
    return strcmp(transport, "tcp") == 0 || strcmp(transport, "udp") == 0 || strcmp(transport, "unix") == 0;
}

/* An HTTP path as a lab sends it: from "/", printable, no spaces. */
static keel_status_t get_http_path(vctx_t *c, const json_t *obj, const char *path, const char *key, int mode,
                                   const char **out)
{
    char p[PATH_CAP];
    keel_status_t st = get_text(c, obj, path, key, mode, KEEL_PATH_MAX - 1, out);
    if (st != KEEL_OK || *out == NULL)
        return st;
    sub_key(p, path, key);
    if ((*out)[0] != '/' || strpbrk(*out, " \t") != NULL)
        return bad(p, "must be an HTTP path from \"/\" without spaces");
    return KEEL_OK;
}

static const char *const http_methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", NULL};

/* interfaces[].http: how the lab logs in, changes the password, and which routes exist. */
static keel_status_t ixit_http(vctx_t *c, const json_t *e, const char *path)
{
    static const char *const keys[] = {"login", "password_change", "routes", NULL};
    static const char *const login_keys[] = {"kind", "path", "user_field", "password_field", NULL};
    static const char *const login_kinds[] = {"basic", "json", "form", NULL};
    static const char *const change_keys[] = {"kind", "path", "current_field", "new_field", NULL};
    static const char *const change_kinds[] = {"json", "form", NULL};
    static const char *const route_keys[] = {"method", "path", "authentication", "security_relevant", NULL};
    char p[PATH_CAP], q[PATH_CAP], r[PATH_CAP];
    json_t *h, *o, *arr, *rt;
    const char *s;
    int b;
    keel_status_t st = get_object(c, e, path, "http", OPT, keys, &h, p);
    if (st != KEEL_OK || h == NULL)
        return st;
    if ((st = get_object(c, h, p, "login", OPT, login_keys, &o, q)) != KEEL_OK)
        return st;
    if (o != NULL && ((st = get_enum(c, o, q, "kind", REQ, login_kinds, &s)) != KEEL_OK ||
                      (st = get_http_path(c, o, q, "path", REQ, &s)) != KEEL_OK ||
                      (st = get_name(c, o, q, "user_field", OPT, &s)) != KEEL_OK ||
                      (st = get_name(c, o, q, "password_field", OPT, &s)) != KEEL_OK))
        return st;
    if ((st = get_object(c, h, p, "password_change", OPT, change_keys, &o, q)) != KEEL_OK)
        return st;
    if (o != NULL && ((st = get_enum(c, o, q, "kind", REQ, change_kinds, &s)) != KEEL_OK ||
                      (st = get_http_path(c, o, q, "path", REQ, &s)) != KEEL_OK ||
                      (st = get_name(c, o, q, "current_field", OPT, &s)) != KEEL_OK ||
                      (st = get_name(c, o, q, "new_field", OPT, &s)) != KEEL_OK))
        return st;
    if ((st = get_array(c, h, p, "routes", OPT, &arr, q)) != KEEL_OK)
        return st;
    for (size_t i = 0; st == KEEL_OK && arr != NULL && i < json_array_size(arr); i++) {
        if ((st = entry(c, arr, i, q, route_keys, &rt, r)) != KEEL_OK || rt == NULL)
            continue;
        if ((st = get_enum(c, rt, r, "method", REQ, http_methods, &s)) == KEEL_OK &&
            (st = get_http_path(c, rt, r, "path", REQ, &s)) == KEEL_OK &&
            (st = get_bool(c, rt, r, "authentication", REQ, &b)) == KEEL_OK)
            st = get_bool(c, rt, r, "security_relevant", OPT, &b);
    }
    return st;
}

static keel_status_t ixit_interfaces(vctx_t *c, const json_t *doc, const json_t *auths, json_t *names,
                                     json_t *servers)
{
    static const char *const keys[] = {"name", "protocol", "transport", "role", "address", "port", "tls",
                                       "authentication", "enabled_by_default", "purpose", "http", NULL};
    static const char *const roles[] = {"server", "client", NULL};
    char p[PATH_CAP], q[PATH_CAP], r[PATH_CAP], a[PATH_CAP];
    json_t *arr, *e, *al;
    const char *name, *transport, *role, *s;
    long port;
    int b;
    keel_status_t st = get_array(c, doc, "$", "interfaces", REQ, &arr, p);
    for (size_t i = 0; st == KEEL_OK && arr != NULL && i < json_array_size(arr); i++) {
        if ((st = entry(c, arr, i, p, keys, &e, q)) != KEEL_OK || e == NULL)
            continue;
        if ((st = get_name(c, e, q, "name", REQ, &name)) != KEEL_OK || (st = unique_name(names, name, q)) != KEEL_OK ||
            (st = get_name(c, e, q, "protocol", REQ, &s)) != KEEL_OK ||
            (st = get_enum(c, e, q, "transport", REQ, transports, &transport)) != KEEL_OK ||
            (st = get_enum(c, e, q, "role", transport == NULL || is_socket(transport) ? REQ : OPT, roles, &role)) !=
                KEEL_OK ||
            (st = get_text(c, e, q, "address", OPT, KEEL_PATH_MAX - 1, &s)) != KEEL_OK ||
            (st = get_bool(c, e, q, "tls", REQ, &b)) != KEEL_OK ||
            (st = get_bool(c, e, q, "enabled_by_default", REQ, &b)) != KEEL_OK ||
            (st = get_text(c, e, q, "purpose", REQ, KEEL_ASSESS_TEXT_MAX, &s)) != KEEL_OK)
            continue;
        int net = transport != NULL && (strcmp(transport, "tcp") == 0 || strcmp(transport, "udp") == 0);
        sub_key(r, q, "port");
        if (transport != NULL && !net && json_object_get(e, "port") != NULL) {
            st = bad(r, "only tcp and udp interfaces have a port");
            continue;
        }
        if ((st = get_port(c, e, q, "port", net ? REQ : OPT, &port)) != KEEL_OK)
            continue;
        sub_key(r, q, "http");
        if (json_object_get(e, "http") != NULL && (transport == NULL || strcmp(transport, "tcp") != 0)) {
            st = bad(r, "only tcp interfaces speak HTTP");
            continue;
        }
        if ((st = ixit_http(c, e, q)) != KEEL_OK)
            continue;
        if (port != 0 && transport != NULL && role != NULL && strcmp(role, "server") == 0) {
            char key[16];
            snprintf(key, sizeof key, "%s/%ld", transport, port);
            if (json_object_set_new(servers, key, json_true()) != 0)
                st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        }
        if (st != KEEL_OK || (st = get_array(c, e, q, "authentication", REQ, &al, r)) != KEEL_OK || al == NULL)
            continue;
        for (size_t j = 0; st == KEEL_OK && j < json_array_size(al); j++) {
            sub_idx(a, r, j);
            int skip;
            json_t *v = json_array_get(al, j);
            if ((st = placeholder(c, v, a, &skip)) != KEEL_OK || skip || (st = name_value(v, a, &s)) != KEEL_OK)
                continue;
            if (json_object_get(auths, s) == NULL)
                st = keel_errorf(KEEL_ERR_FORMAT, "%s: \"%s\" is not in $.authentication", a, s);
        }
    }
    return st;
}

static keel_status_t ixit_update(vctx_t *c, const json_t *doc, const json_t *ifaces)
{
    static const char *const keys[] = {"interface", "authentication", "upload", "test_bundles", NULL};
    static const char *const bundle_keys[] = {"good", "tampered", "downgraded", "wrong_signer", NULL};
    static const char *const upload_keys[] = {"kind", "method", "path", NULL};
    static const char *const upload_kinds[] = {"keel-api-v1", "http", NULL};
    static const char *const upload_methods[] = {"POST", "PUT", NULL};
    char p[PATH_CAP], q[PATH_CAP];
    json_t *o, *tb, *up;
    const char *s;
    keel_status_t st = get_object(c, doc, "$", "update", REQ | NULLABLE, keys, &o, p);
    if (st != KEEL_OK || o == NULL)
        return st;
    if ((st = get_name(c, o, p, "interface", REQ, &s)) != KEEL_OK)
        return st;
    if (s != NULL && json_object_get(ifaces, s) == NULL) {
        sub_key(q, p, "interface");
        return keel_errorf(KEEL_ERR_FORMAT, "%s: \"%s\" is not in $.interfaces", q, s);
    }
    if ((st = get_text(c, o, p, "authentication", REQ, KEEL_ASSESS_TEXT_MAX, &s)) != KEEL_OK ||
        (st = get_object(c, o, p, "upload", OPT, upload_keys, &up, q)) != KEEL_OK)
        return st;
    if (up != NULL) {
        const char *kind;
        if ((st = get_enum(c, up, q, "kind", REQ, upload_kinds, &kind)) != KEEL_OK)
            return st;
        int http = kind != NULL && strcmp(kind, "http") == 0;
        if ((st = get_enum(c, up, q, "method", http ? REQ : OPT, upload_methods, &s)) != KEEL_OK ||
            (st = get_http_path(c, up, q, "path", http ? REQ : OPT, &s)) != KEEL_OK)
            return st;
        if (!http && (json_object_get(up, "method") != NULL || json_object_get(up, "path") != NULL))
            return keel_errorf(KEEL_ERR_FORMAT, "%s: method and path belong to an upload of kind \"http\"", q);
    }
    if ((st = get_object(c, o, p, "test_bundles", OPT, bundle_keys, &tb, q)) != KEEL_OK || tb == NULL)
        return st;
    for (size_t i = 0; st == KEEL_OK && bundle_keys[i] != NULL; i++)
        st = get_text(c, tb, q, bundle_keys[i], OPT, KEEL_PATH_MAX - 1, &s);
    return st;
}

static keel_status_t ixit_parameters(vctx_t *c, const json_t *doc)
{
    static const char *const keys[] = {"name", "description", "storage", "protection", NULL};
    char p[PATH_CAP], q[PATH_CAP];
    json_t *arr, *e, *names = json_object();
    const char *s;
    if (names == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = get_array(c, doc, "$", "security_parameters", REQ, &arr, p);
    for (size_t i = 0; st == KEEL_OK && arr != NULL && i < json_array_size(arr); i++) {
        if ((st = entry(c, arr, i, p, keys, &e, q)) != KEEL_OK || e == NULL)
            continue;
        if ((st = get_text(c, e, q, "name", REQ, KEEL_ASSESS_NAME_MAX, &s)) == KEEL_OK &&
            (st = unique_name(names, s, q)) == KEEL_OK &&
            (st = get_text(c, e, q, "description", OPT, KEEL_ASSESS_TEXT_MAX, &s)) == KEEL_OK &&
            (st = get_text(c, e, q, "storage", REQ, KEEL_ASSESS_TEXT_MAX, &s)) == KEEL_OK)
            st = get_text(c, e, q, "protection", REQ, KEEL_ASSESS_TEXT_MAX, &s);
    }
    json_decref(names);
    return st;
}

static keel_status_t ixit_disclosure(vctx_t *c, const json_t *doc)
{
    static const char *const keys[] = {"security_txt", "policy", NULL};
    char p[PATH_CAP];
    json_t *o;
    const char *s;
    keel_status_t st = get_object(c, doc, "$", "disclosure", REQ, keys, &o, p);
    if (st != KEEL_OK || o == NULL)
        return st;
    if ((st = get_location(c, o, p, "security_txt", REQ, &s)) != KEEL_OK)
        return st;
    return get_location(c, o, p, "policy", REQ, &s);
}

static keel_status_t ixit_personal_data(vctx_t *c, const json_t *doc)
{
    static const char *const keys[] = {"declaration", NULL};
    char p[PATH_CAP], q[PATH_CAP], file[KEEL_PATH_MAX];
    json_t *o, *d;
    const char *s;
    keel_status_t st = get_object(c, doc, "$", "personal_data", REQ | NULLABLE, keys, &o, p);
    if (st != KEEL_OK || o == NULL || (st = member(c, o, p, "declaration", REQ, &d, q)) != KEEL_OK || d == NULL)
        return st;
    if (json_is_object(d)) {
        st = keel_privacy_declaration_check(d, q);
    } else if (json_is_string(d)) {
        if ((st = str_value(d, q, KEEL_PATH_MAX - 1, &s)) != KEEL_OK)
            return st;
        if (s[0] == '/' || c->base_dir == NULL)
            st = keel_strlcpy(file, s, sizeof file);
        else
            st = keel_path_join(file, sizeof file, c->base_dir, s);
        if (st == KEEL_OK)
            st = keel_privacy_declaration_load(file, NULL);
        if (st != KEEL_OK)
            return keel_errorf(st == KEEL_ERR_NOMEM ? st : KEEL_ERR_FORMAT, "%s: %s", q, keel_error_message());
    } else {
        st = bad(q, "must be a data declaration (docs/privacy.md) or the path of one");
    }
    return st;
}

static keel_status_t ixit_ports(vctx_t *c, const json_t *doc, const json_t *servers)
{
    static const char *const keys[] = {"transport", "port", NULL};
    static const char *const net[] = {"tcp", "udp", NULL};
    char p[PATH_CAP], q[PATH_CAP];
    json_t *arr, *e, *seen = json_object();
    const char *transport;
    long port;
    if (seen == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    keel_status_t st = get_array(c, doc, "$", "expected_open_ports", REQ, &arr, p);
    for (size_t i = 0; st == KEEL_OK && arr != NULL && i < json_array_size(arr); i++) {
        if ((st = entry(c, arr, i, p, keys, &e, q)) != KEEL_OK || e == NULL ||
            (st = get_enum(c, e, q, "transport", REQ, net, &transport)) != KEEL_OK ||
            (st = get_port(c, e, q, "port", REQ, &port)) != KEEL_OK || transport == NULL || port == 0)
            continue;
        char key[16];
        snprintf(key, sizeof key, "%s/%ld", transport, port);
        if (json_object_get(seen, key) != NULL)
            st = keel_errorf(KEEL_ERR_FORMAT, "%s: %s is listed twice", q, key);
        else if (json_object_get(servers, key) == NULL)
            st = keel_errorf(KEEL_ERR_FORMAT, "%s: %s is not the port of a server in $.interfaces", q, key);
        else if (json_object_set_new(seen, key, json_true()) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    json_decref(seen);
    return st;
}

static keel_status_t ixit_debug(vctx_t *c, const json_t *doc)
{
    static const char *const keys[] = {"name", "kind", "state", "protection", NULL};
    static const char *const kinds[] = {"physical", "software", NULL};
    static const char *const states[] = {"disabled", "protected", "enabled", NULL};
    char p[PATH_CAP], q[PATH_CAP];
    json_t *arr, *e;
    const char *s;
    keel_status_t st = get_array(c, doc, "$", "debug_interfaces", REQ, &arr, p);
    for (size_t i = 0; st == KEEL_OK && arr != NULL && i < json_array_size(arr); i++) {
        if ((st = entry(c, arr, i, p, keys, &e, q)) != KEEL_OK || e == NULL)
            continue;
        if ((st = get_text(c, e, q, "name", REQ, KEEL_ASSESS_NAME_MAX, &s)) == KEEL_OK &&
            (st = get_enum(c, e, q, "kind", REQ, kinds, &s)) == KEEL_OK &&
            (st = get_enum(c, e, q, "state", REQ, states, &s)) == KEEL_OK)
            st = get_text(c, e, q, "protection", OPT, KEEL_ASSESS_TEXT_MAX, &s);
    }
    return st;
}

static keel_status_t ixit_reset(vctx_t *c, const json_t *doc, const json_t *ifaces)
{
    static const char *const keys[] = {"procedure", "erases", "interface", NULL};
    char p[PATH_CAP], q[PATH_CAP];
    json_t *o;
    const char *s;
    keel_status_t st = get_object(c, doc, "$", "factory_reset", REQ, keys, &o, p);
    if (st != KEEL_OK || o == NULL)
        return st;
    if ((st = get_text(c, o, p, "procedure", REQ, KEEL_ASSESS_TEXT_MAX, &s)) != KEEL_OK ||
        (st = get_text(c, o, p, "erases", OPT, KEEL_ASSESS_TEXT_MAX, &s)) != KEEL_OK ||
        (st = get_name(c, o, p, "interface", OPT, &s)) != KEEL_OK)
        return st;
    if (s != NULL && json_object_get(ifaces, s) == NULL) {
        sub_key(q, p, "interface");
        return keel_errorf(KEEL_ERR_FORMAT, "%s: \"%s\" is not in $.interfaces", q, s);
    }
    return KEEL_OK;
}

keel_status_t keel_assess_ixit_check(const json_t *ixit, const char *base_dir, unsigned flags, json_t **placeholders)
{
    static const char *const keys[] = {"format", "status", "product", "interfaces", "authentication", "update",
                                       "security_parameters", "disclosure", "personal_data", "expected_open_ports",
                                       "debug_interfaces", "factory_reset", NULL};
    vctx_t c = {.flags = flags, .ph = json_array(), .base_dir = base_dir};
    json_t *auths = json_object(), *ifaces = json_object(), *servers = json_object();
    keel_status_t st = KEEL_OK;
    if (c.ph == NULL || auths == NULL || ifaces == NULL || servers == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st == KEEL_OK)
        st = check_format(&c, ixit, "keel-ixit-1");
    if (st == KEEL_OK)
        st = only_keys(ixit, "$", keys);
    if (st == KEEL_OK)
        st = ixit_product(&c, ixit);
    if (st == KEEL_OK)
        st = ixit_authentication(&c, ixit, auths);
    if (st == KEEL_OK)
        st = ixit_interfaces(&c, ixit, auths, ifaces, servers);
    if (st == KEEL_OK)
        st = ixit_update(&c, ixit, ifaces);
    if (st == KEEL_OK)
        st = ixit_parameters(&c, ixit);
    if (st == KEEL_OK)
        st = ixit_disclosure(&c, ixit);
    if (st == KEEL_OK)
        st = ixit_personal_data(&c, ixit);
    if (st == KEEL_OK)
        st = ixit_ports(&c, ixit, servers);
    if (st == KEEL_OK)
        st = ixit_debug(&c, ixit);
    if (st == KEEL_OK)
        st = ixit_reset(&c, ixit, ifaces);
    json_decref(auths);
    json_decref(ifaces);
    json_decref(servers);
    return finish(&c, st, placeholders);
}

/* ---- files -------------------------------------------------------------------------- */

static keel_status_t load_json(const char *path, json_t **out)
{
    keel_buf_t b;
    keel_buf_init(&b, KEEL_ASSESS_FILE_MAX);
    keel_status_t st = keel_file_read(path, KEEL_ASSESS_FILE_MAX, &b);
    if (st == KEEL_ERR_TOO_LARGE)
        st = keel_errorf(st, "%s: larger than %u bytes", path, KEEL_ASSESS_FILE_MAX);
    if (st == KEEL_OK) {
        json_error_t e;
        *out = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &e);
        if (*out == NULL)
            st = keel_errorf(KEEL_ERR_FORMAT, "%s:%d:%d: %s", path, e.line, e.column, e.text);
    }
    keel_buf_free(&b);
    return st;
}

static keel_status_t with_file(keel_status_t st, const char *path)
{
    if (st == KEEL_OK || st == KEEL_ERR_NOMEM)
        return st;
    char msg[KEEL_ERROR_MAX];
    snprintf(msg, sizeof msg, "%s", keel_error_message());
    return keel_errorf(st, "%s: %s", path, msg);
}

keel_status_t keel_assess_ics_load(const char *path, unsigned flags, json_t **out, json_t **placeholders)
{
    json_t *doc = NULL;
    keel_status_t st = load_json(path, &doc);
    if (st != KEEL_OK)
        return st;
    st = with_file(keel_assess_ics_check(doc, flags, placeholders), path);
    if (st == KEEL_OK && out != NULL)
        *out = json_incref(doc);
    json_decref(doc);
    return st;
}

keel_status_t keel_assess_ixit_load(const char *path, unsigned flags, json_t **out, json_t **placeholders)
{
    char dir[KEEL_PATH_MAX];
    keel_status_t st = keel_strlcpy(dir, path, sizeof dir);
    if (st != KEEL_OK)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "IXIT path is too long");
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else
        slash[slash == dir] = '\0';
    json_t *doc = NULL;
    if ((st = load_json(path, &doc)) != KEEL_OK)
        return st;
    st = with_file(keel_assess_ixit_check(doc, dir, flags, placeholders), path);
    if (st == KEEL_OK && out != NULL)
        *out = json_incref(doc);
    json_decref(doc);
    return st;
}

/* ---- ICS against IXIT --------------------------------------------------------------- */

/* 1 true, 0 false, -1 a placeholder or absent. */
static int ics_feature(const json_t *ics, const char *id)
{
    const json_t *v = json_object_get(json_object_get(ics, "features"), id);
    return json_is_boolean(v) ? json_is_true(v) : -1;
}

static int has_password_auth(const json_t *ixit)
{
    const json_t *arr = json_object_get(ixit, "authentication");
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *k = json_string_value(json_object_get(json_array_get(arr, i), "kind"));
        if (k != NULL && (strcmp(k, "password") == 0 || strcmp(k, "pin") == 0))
            return 1;
    }
    return 0;
}

keel_status_t keel_assess_cross_check(const json_t *ics, const json_t *ixit)
{
    const json_t *m1 = json_object_get(json_object_get(ics, "product"), "model");
    const json_t *m2 = json_object_get(json_object_get(ixit, "product"), "model");
    if (json_is_string(m1) && json_is_string(m2) && !is_placeholder(m1) && !is_placeholder(m2) &&
        strcmp(json_string_value(m1), json_string_value(m2)) != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "ICS $.product.model \"%s\" differs from IXIT $.product.model \"%s\"",
                           json_string_value(m1), json_string_value(m2));
    struct {
        const char *feature, *ixit_path;
        int (*present)(const json_t *);
    } const rules[] = {
        {"updates", "$.update", NULL},
        {"personal_data", "$.personal_data", NULL},
        {"passwords", "$.authentication", has_password_auth},
    };
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        int f = ics_feature(ics, rules[i].feature);
        const json_t *v = json_object_get(ixit, rules[i].ixit_path + 2);
        if (f < 0 || is_placeholder(v))
            continue;
        int present = rules[i].present != NULL ? rules[i].present(ixit) : v != NULL && !json_is_null(v);
        if (f != present)
            return keel_errorf(KEEL_ERR_FORMAT, "ICS $.features.%s is %s but IXIT %s %s", rules[i].feature,
                               f ? "true" : "false", rules[i].ixit_path,
                               rules[i].present != NULL ? (present ? "declares a password mechanism"
                                                                   : "declares no password mechanism")
                                                        : (present ? "describes one" : "is null"));
    }
    return KEEL_OK;
}

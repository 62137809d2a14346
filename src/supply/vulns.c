/*
 * keel vulns: OSV advisories (https://ossf.github.io/osv-schema/) matched
 * against the Debian components of a CycloneDX SBOM. Debian's advisories
 * name the source package ("openssl") and its version, so a component is
 * matched by its source package (keel:deb:source) as well as by its binary
 * package name. Versions are ordered as dpkg orders them (debver.c).
 * Advisories are outside data: each file is capped, parsed strictly and
 * named in every error.
 */
#include "supply_int.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char name[KEEL_DPKG_FIELD_MAX], version[KEEL_DPKG_FIELD_MAX];
    char source[KEEL_DPKG_FIELD_MAX], source_version[KEEL_DPKG_FIELD_MAX];
    char major[32];
    const char *purl;
} comp_t;

/* Percent-decodes [s, s + n) into dst of KEEL_DPKG_FIELD_MAX bytes; false if malformed or too long. */
static bool pct_decode(const char *s, size_t n, char *dst)
{
    if (!keel_pct_decode(s, n, dst, KEEL_DPKG_FIELD_MAX) || dst[0] == '\0')
        return false;
    for (const unsigned char *p = (const unsigned char *)dst; *p != '\0'; p++)
        if (*p < 0x21 || *p == 0x7f)
            return false;
    return true;
}

/* pkg:deb/<namespace>/<name>@<version>[?qualifiers][#subpath] */
static bool parse_purl(const char *purl, comp_t *c)
{
    if (strncmp(purl, "pkg:deb/", 8) != 0)
        return false;
    const char *ns = purl + 8, *slash = strchr(ns, '/');
    if (slash == NULL)
        return false;
    const char *name = slash + 1, *at = strchr(name, '@');
    if (at == NULL)
        return false;
    const char *ver = at + 1;
    size_t vlen = strcspn(ver, "?#");
    if (!pct_decode(name, (size_t)(at - name), c->name) || !pct_decode(ver, vlen, c->version))
        return false;
    const char *q = ver[vlen] == '?' ? ver + vlen + 1 : NULL;
    while (q != NULL && *q != '\0' && *q != '#') {
        size_t len = strcspn(q, "&#");
        if (len > 7 && strncmp(q, "distro=", 7) == 0) {
            const char *d = q + 7, *dash = memchr(d, '-', len - 7);
            const char *v = dash != NULL ? dash + 1 : d;
            size_t n = (size_t)(q + len - v), k = 0;
            for (size_t i = 0; i < n && k + 1 < sizeof c->major && v[i] >= '0' && v[i] <= '9'; i++)
                c->major[k++] = v[i];
            c->major[k] = '\0';
        }
        q = q[len] == '&' ? q + len + 1 : NULL;
    }
    return true;
}

static const char *prop_value(json_t *comp, const char *name)
{
    json_t *props = json_object_get(comp, "properties"), *p;
    size_t i;
    json_array_foreach(props, i, p)
    {
        const char *n = json_string_value(json_object_get(p, "name"));
        if (n != NULL && strcmp(n, name) == 0)
            return json_string_value(json_object_get(p, "value"));
    }
    return NULL;
}

static keel_status_t sbom_components(json_t *sbom, comp_t **out, size_t *n_out, size_t *total)
{
    if (!json_is_object(sbom) || !json_is_string(json_object_get(sbom, "bomFormat")) ||
        strcmp(json_string_value(json_object_get(sbom, "bomFormat")), "CycloneDX") != 0)
        return keel_errorf(KEEL_ERR_FORMAT, "the SBOM is not a CycloneDX JSON document");
    json_t *comps = json_object_get(sbom, "components");
    if (comps != NULL && !json_is_array(comps))
        return keel_errorf(KEEL_ERR_FORMAT, "the SBOM's components are not an array");
    *total = json_array_size(comps);
    comp_t *v = calloc(*total + 1, sizeof *v);
    if (v == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    size_t n = 0, i;
    json_t *c;
    json_array_foreach(comps, i, c)
    {
        const char *purl = json_string_value(json_object_get(c, "purl"));
        if (!json_is_object(c) || purl == NULL || strncmp(purl, "pkg:deb/", 8) != 0)
            continue;
        comp_t *x = &v[n];
        if (!parse_purl(purl, x) || !keel_debver_valid(x->version)) {
            free(v);
            return keel_errorf(KEEL_ERR_FORMAT, "the SBOM's component %s has a malformed Debian purl", purl);
        }
        x->purl = purl;
        const char *src = prop_value(c, "keel:deb:source"), *sv = prop_value(c, "keel:deb:source-version");
        if (keel_strlcpy(x->source, src != NULL ? src : x->name, sizeof x->source) != KEEL_OK ||
            keel_strlcpy(x->source_version, sv != NULL ? sv : x->version, sizeof x->source_version) != KEEL_OK ||
            !keel_debver_valid(x->source_version)) {
            free(v);
            return keel_errorf(KEEL_ERR_FORMAT, "the SBOM's component %s has a malformed source package", purl);
        }
        n++;
    }
    *out = v;
    *n_out = n;
    return KEEL_OK;
}

/* ---- one advisory ---- */

typedef struct {
    int kind; /* 0 introduced, 1 last_affected, 2 fixed (this order at equal versions) */
    const char *v;
} event_t;

static int event_cmp(const event_t *a, const event_t *b)
{
    bool az = a->kind == 0 && strcmp(a->v, "0") == 0, bz = b->kind == 0 && strcmp(b->v, "0") == 0;
    if (az || bz)
        return az && bz ? 0 : az ? -1 : 1;
    int r = keel_debver_cmp(a->v, b->v);
    return r != 0 ? r : a->kind - b->kind;
}

static int eco_match(const char *eco, const char *major)
{
    if (eco == NULL || strncmp(eco, "Debian", 6) != 0)
        return 0;
    if (eco[6] == '\0')
        return 1;
    if (eco[6] != ':')
        return 0;
    return major == NULL || major[0] == '\0' || strcmp(eco + 7, major) == 0;
}

#define EVENTS_MAX 256u

/* One ECOSYSTEM range: 1 when version is inside; *fixed the next fixed version above it. */
static keel_status_t in_range(json_t *range, const char *version, int *hit, const char **fixed)
{
    json_t *events = json_object_get(range, "events");
    size_t n = json_array_size(events);
    if (!json_is_array(events) || n == 0 || n > EVENTS_MAX)
        return keel_errorf(KEEL_ERR_FORMAT, "a range without events (or with more than %u)", EVENTS_MAX);
    event_t ev[EVENTS_MAX];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(events, i);
        static const char *const kinds[] = {"introduced", "last_affected", "fixed"};
        if (!json_is_object(e) || json_object_size(e) != 1)
            return keel_errorf(KEEL_ERR_FORMAT, "an event that is not an object of one member");
        if (json_object_get(e, "limit") != NULL)
            continue; /* for GIT ranges; nothing to compare here */
        int k = -1;
        for (int j = 0; j < 3 && k < 0; j++)
            if (json_object_get(e, kinds[j]) != NULL)
                k = j;
        const char *v = k >= 0 ? json_string_value(json_object_get(e, kinds[k])) : NULL;
        if (v == NULL)
            return keel_errorf(KEEL_ERR_FORMAT, "an event of unknown kind or without a version string");
        if (!(k == 0 && strcmp(v, "0") == 0) && !keel_debver_valid(v))
            return keel_errorf(KEEL_ERR_FORMAT, "event version '%.64s' is not a Debian version", v);
        ev[m].kind = k;
        ev[m].v = v;
        m++;
    }
    /* Insertion sort: at most EVENTS_MAX, and stable. */
    for (size_t i = 1; i < m; i++) {
        event_t x = ev[i];
        size_t j = i;
        for (; j > 0 && event_cmp(&ev[j - 1], &x) > 0; j--)
            ev[j] = ev[j - 1];
        ev[j] = x;
    }
    bool aff = false;
    for (size_t i = 0; i < m; i++) {
        bool zero = ev[i].kind == 0 && strcmp(ev[i].v, "0") == 0;
        int c = zero ? 1 : keel_debver_cmp(version, ev[i].v);
        if (ev[i].kind == 0 && c >= 0)
            aff = true;
        else if ((ev[i].kind == 2 && c >= 0) || (ev[i].kind == 1 && c > 0))
            aff = false;
    }
    *hit = aff;
    *fixed = NULL;
    /* The event that ends the affected stretch: a fixed version, or last_affected (no fix known). */
    for (size_t i = 0; aff && i < m; i++) {
        int c = ev[i].kind == 0 ? -1 : keel_debver_cmp(ev[i].v, version);
        if (ev[i].kind == 1 && c >= 0)
            break;
        if (ev[i].kind == 2 && c > 0) {
            *fixed = ev[i].v;
            break;
        }
    }
    return KEEL_OK;
}

keel_status_t keel_osv_affects(json_t *adv, const char *name, const char *version, const char *major, int *affected,
                               const char **fixed)
{
    if (adv == NULL || name == NULL || version == NULL || affected == NULL || fixed == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keel_osv_affects: NULL argument");
    *affected = 0;
    *fixed = NULL;
    json_t *aff = json_object_get(adv, "affected"), *a;
    if (aff != NULL && !json_is_array(aff))
        return keel_errorf(KEEL_ERR_FORMAT, "\"affected\" is not an array");
    size_t i;
    json_array_foreach(aff, i, a)
    {
        if (!json_is_object(a))
            return keel_errorf(KEEL_ERR_FORMAT, "an \"affected\" entry is not an object");
        json_t *pkg = json_object_get(a, "package");
        json_t *ranges = json_object_get(a, "ranges"), *versions = json_object_get(a, "versions");
        if ((pkg != NULL && !json_is_object(pkg)) || (ranges != NULL && !json_is_array(ranges)) ||
            (versions != NULL && !json_is_array(versions)))
            return keel_errorf(KEEL_ERR_FORMAT, "an \"affected\" entry of the wrong shape");
        const char *eco = json_string_value(json_object_get(pkg, "ecosystem"));
        const char *pname = json_string_value(json_object_get(pkg, "name"));
        if (pkg != NULL && (eco == NULL || pname == NULL))
            return keel_errorf(KEEL_ERR_FORMAT, "a package without ecosystem or name strings");
        if (!eco_match(eco, major))
            continue;
        /* Entries of other packages are still checked: a malformed advisory is refused whole. */
        bool mine = strcmp(pname, name) == 0;
        int hit = 0;
        const char *fx = NULL;
        size_t j;
        json_t *r;
        json_array_foreach(ranges, j, r)
        {
            const char *type = json_string_value(json_object_get(r, "type"));
            if (!json_is_object(r) || type == NULL)
                return keel_errorf(KEEL_ERR_FORMAT, "a range without a type");
            if (strcmp(type, "ECOSYSTEM") != 0)
                continue;
            int h = 0;
            const char *f = NULL;
            keel_status_t st = in_range(r, version, &h, &f);
            if (st != KEEL_OK)
                return st;
            if (h) {
                hit = 1;
                if (fx == NULL || (f != NULL && keel_debver_cmp(f, fx) < 0))
                    fx = f;
            }
        }
        json_t *v;
        json_array_foreach(versions, j, v)
        {
            if (!json_is_string(v))
                return keel_errorf(KEEL_ERR_FORMAT, "\"versions\" holds a non-string");
            if (keel_debver_valid(json_string_value(v)) && keel_debver_cmp(json_string_value(v), version) == 0)
                hit = 1;
        }
        if (hit && mine) {
            *affected = 1;
            if (*fixed == NULL || (fx != NULL && keel_debver_cmp(fx, *fixed) < 0))
                *fixed = fx;
        }
    }
    return KEEL_OK;
}

/* The shape check of one advisory, and whether any affected entry is Debian's at all. */
static keel_status_t advisory_check(json_t *adv, bool *debian)
{
    *debian = false;
    if (!json_is_object(adv))
        return keel_errorf(KEEL_ERR_FORMAT, "not an OSV advisory (the top level is not an object)");
    const char *id = json_string_value(json_object_get(adv, "id"));
    if (id == NULL || id[0] == '\0' || strlen(id) > 256)
        return keel_errorf(KEEL_ERR_FORMAT, "not an OSV advisory (no \"id\" string)");
    if (!json_is_string(json_object_get(adv, "modified")))
        return keel_errorf(KEEL_ERR_FORMAT, "not an OSV advisory (no \"modified\" string)");
    static const char *const strs[] = {"summary", "details", "published", "withdrawn", "schema_version"};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        json_t *s = json_object_get(adv, strs[i]);
        if (s != NULL && !json_is_string(s))
            return keel_errorf(KEEL_ERR_FORMAT, "\"%s\" is not a string", strs[i]);
    }
    static const char *const lists[] = {"aliases", "related"};
    size_t i;
    json_t *x;
    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
        json_t *l = json_object_get(adv, lists[k]);
        if (l != NULL && !json_is_array(l))
            return keel_errorf(KEEL_ERR_FORMAT, "\"%s\" is not an array", lists[k]);
        json_array_foreach(l, i, x)
        {
            if (!json_is_string(x))
                return keel_errorf(KEEL_ERR_FORMAT, "\"%s\" holds a non-string", lists[k]);
        }
    }
    json_t *sev = json_object_get(adv, "severity");
    if (sev != NULL && !json_is_array(sev))
        return keel_errorf(KEEL_ERR_FORMAT, "\"severity\" is not an array");
    json_t *aff = json_object_get(adv, "affected");
    if (aff != NULL && !json_is_array(aff))
        return keel_errorf(KEEL_ERR_FORMAT, "\"affected\" is not an array");
    json_array_foreach(aff, i, x)
    {
        if (!json_is_object(x))
            return keel_errorf(KEEL_ERR_FORMAT, "an \"affected\" entry is not an object");
        if (eco_match(json_string_value(json_object_get(json_object_get(x, "package"), "ecosystem")), NULL))
            *debian = true;
    }
    /* The shape of Debian entries is checked in full by a dry run of the matcher. */
    int hit;
    const char *fx;
    return keel_osv_affects(adv, "", "0", NULL, &hit, &fx);
}

/* severity[] scores and Debian's urgency as [{type, score}]; NULL when out of memory. */
static json_t *severity_of(json_t *adv)
{
    json_t *out = json_array(), *s;
    size_t i;
    bool ok = out != NULL;
    json_array_foreach(json_object_get(adv, "severity"), i, s)
    {
        const char *type = json_string_value(json_object_get(s, "type"));
        const char *score = json_string_value(json_object_get(s, "score"));
        if (ok && type != NULL && score != NULL)
            ok = json_array_append_new(out, json_pack("{s:s, s:s}", "type", type, "score", score)) == 0;
    }
    const char *urgency = json_string_value(json_object_get(json_object_get(adv, "database_specific"), "urgency"));
    if (ok && urgency != NULL)
        ok = json_array_append_new(out, json_pack("{s:s, s:s}", "type", "Debian urgency", "score", urgency)) == 0;
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static keel_status_t finding(json_t *findings, const comp_t *c, bool by_source, json_t *adv, const char *fixed)
{
    json_t *aliases = json_object_get(adv, "aliases");
    const char *summary = json_string_value(json_object_get(adv, "summary"));
    if (summary == NULL)
        summary = json_string_value(json_object_get(adv, "details"));
    json_t *related = json_object_get(adv, "related"); /* Debian's DSAs name their CVEs here */
    json_t *f = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:s, s:o, s:s?, s:s?}", "component", c->name,
                          "version", c->version, "purl", c->purl, "source", c->source, "source_version",
                          c->source_version, "id", json_string_value(json_object_get(adv, "id")), "aliases",
                          aliases != NULL ? json_incref(aliases) : json_array(), "related",
                          related != NULL ? json_incref(related) : json_array(), "matched_by",
                          by_source ? "source package" : "binary package", "severity", severity_of(adv), "summary",
                          summary, "fixed", fixed);
    if (f == NULL || json_array_append_new(findings, f) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    return KEEL_OK;
}

static int json_filter(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return e->d_name[0] != '.' && n > 5 && strcmp(e->d_name + n - 5, ".json") == 0;
}

static int cmp_finding(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int r = strcmp(json_string_value(json_object_get(x, "component")), json_string_value(json_object_get(y, "component")));
    return r != 0 ? r : strcmp(json_string_value(json_object_get(x, "id")), json_string_value(json_object_get(y, "id")));
}

static keel_status_t match_one(json_t *adv, const comp_t *comps, size_t n, json_t *findings)
{
    for (size_t k = 0; k < n; k++) {
        const comp_t *c = &comps[k];
        int hit = 0;
        const char *fixed = NULL;
        bool by_source = true;
        keel_status_t st = keel_osv_affects(adv, c->source, c->source_version, c->major, &hit, &fixed);
        if (st == KEEL_OK && !hit && strcmp(c->source, c->name) != 0) {
            by_source = false;
            st = keel_osv_affects(adv, c->name, c->version, c->major, &hit, &fixed);
        }
        if (st == KEEL_OK && hit)
            st = finding(findings, c, by_source, adv, fixed);
        if (st != KEEL_OK)
            return st;
    }
    return KEEL_OK;
}

keel_status_t keel_vulns_match(json_t *sbom, const char *adv_dir, json_t **report)
{
    if (sbom == NULL || adv_dir == NULL || report == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keel_vulns_match: NULL argument");
    *report = NULL;
    comp_t *comps = NULL;
    size_t n = 0, total = 0, n_adv = 0, ignored = 0;
    keel_status_t st = sbom_components(sbom, &comps, &n, &total);
    if (st != KEEL_OK)
        return st;
    struct dirent **ents = NULL;
    int ne = scandir(adv_dir, &ents, json_filter, alphasort);
    if (ne < 0) {
        free(comps);
        return keel_errorf(KEEL_ERR_NOT_FOUND, "advisories: cannot read directory %s", adv_dir);
    }
    json_t *findings = json_array();
    if (findings == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st == KEEL_OK && (size_t)ne > KEEL_OSV_FILES_MAX)
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "advisories: %s holds more than %u files", adv_dir, KEEL_OSV_FILES_MAX);
    for (int i = 0; i < ne && st == KEEL_OK; i++) {
        char path[KEEL_PATH_MAX];
        keel_buf_t b;
        keel_buf_init(&b, 1);
        st = keel_path_join(path, sizeof path, adv_dir, ents[i]->d_name);
        if (st == KEEL_OK) {
            keel_buf_free(&b);
            st = keel_file_read(path, KEEL_OSV_FILE_MAX, &b);
            if (st == KEEL_ERR_TOO_LARGE)
                st = keel_errorf(st, "advisory %s: larger than %u bytes", path, KEEL_OSV_FILE_MAX);
        }
        json_t *adv = NULL;
        if (st == KEEL_OK) {
            json_error_t err;
            adv = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &err);
            if (adv == NULL)
                st = keel_errorf(KEEL_ERR_FORMAT, "advisory %s: not JSON (line %d: %s)", path, err.line, err.text);
        }
        bool debian = false;
        if (st == KEEL_OK && (st = advisory_check(adv, &debian)) != KEEL_OK) {
            char prefix[KEEL_PATH_MAX + 16];
            st = keel_snprintf(prefix, sizeof prefix, "advisory %s", path) == KEEL_OK
                     ? supply_error_prefix(st, prefix)
                     : keel_errorf(st, "advisory %.200s...: malformed", path);
        }
        if (st == KEEL_OK) {
            n_adv++;
            if (!debian || json_object_get(adv, "withdrawn") != NULL) /* withdrawn: no longer claimed */
                ignored++;
            else
                st = match_one(adv, comps, n, findings);
        }
        json_decref(adv);
        keel_buf_free(&b);
    }
    for (int i = 0; i < ne; i++)
        free(ents[i]);
    free(ents);
    if (st == KEEL_OK) {
        size_t nf = json_array_size(findings);
        json_t **v = calloc(nf + 1, sizeof(json_t *));
        if (v == NULL) {
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
        } else {
            for (size_t i = 0; i < nf; i++)
                v[i] = json_incref(json_array_get(findings, i));
            qsort(v, nf, sizeof(json_t *), cmp_finding);
            json_array_clear(findings);
            for (size_t i = 0; i < nf; i++)
                if (json_array_append_new(findings, v[i]) != 0)
                    st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
            free(v);
        }
    }
    size_t affected = 0;
    for (size_t i = 0; st == KEEL_OK && i < json_array_size(findings); i++) {
        const char *c = json_string_value(json_object_get(json_array_get(findings, i), "component"));
        if (i == 0 || strcmp(c, json_string_value(json_object_get(json_array_get(findings, i - 1), "component"))) != 0)
            affected++;
    }
    if (st == KEEL_OK) {
        *report = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:O}", "sbom_components", (json_int_t)total, "checked",
                            (json_int_t)n, "unchecked", (json_int_t)(total - n), "advisories", (json_int_t)n_adv,
                            "ignored", (json_int_t)ignored, "affected_components", (json_int_t)affected, "findings",
                            findings);
        if (*report == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    json_decref(findings);
    free(comps);
    return st;
}

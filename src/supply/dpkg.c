/*
 * The dpkg database as a source of truth: which installed package owns a
 * file (info/<package>[:<arch>].list, one path a line) and its version and
 * source package (the status file, RFC 822-like stanzas). Read directly,
 * not through dpkg-query, so a test can point it at a fixture and the SBOM
 * does not depend on a program's output format.
 */
#include "supply_int.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#define DPKG_LIST_MAX (64u << 20)    /* one info/NAME.list file */
#define DPKG_STATUS_MAX (256u << 20) /* the status file */

/* Copies the value of a field line ("Name: value") of length len into dst. */
static keel_status_t field_copy(char *dst, const char *val, size_t len)
{
    while (len > 0 && (*val == ' ' || *val == '\t'))
        val++, len--;
    while (len > 0 && (val[len - 1] == ' ' || val[len - 1] == '\t' || val[len - 1] == '\r'))
        len--;
    if (len >= KEEL_DPKG_FIELD_MAX)
        return keel_errorf(KEEL_ERR_FORMAT, "dpkg status: a field of %zu bytes", len);
    memcpy(dst, val, len);
    dst[len] = '\0';
    return KEEL_OK;
}

static bool field_is(const char *line, size_t len, const char *name, const char **val, size_t *vlen)
{
    size_t n = strlen(name);
    if (len <= n || strncmp(line, name, n) != 0 || line[n] != ':')
        return false;
    *val = line + n + 1;
    *vlen = len - n - 1;
    return true;
}

/* "Source: name (version)" or "Source: name". */
static keel_status_t source_split(keel_dpkg_pkg_t *p)
{
    char *paren = strchr(p->source, '(');
    if (paren == NULL)
        return KEEL_OK;
    char *close = strchr(paren, ')');
    if (close == NULL || close[1] != '\0')
        return keel_errorf(KEEL_ERR_FORMAT, "dpkg status: Source field of %s is malformed", p->name);
    *close = '\0';
    memmove(p->source_version, paren + 1, strlen(paren + 1) + 1);
    char *end = paren;
    while (end > p->source && end[-1] == ' ')
        end--;
    *end = '\0';
    return p->source[0] != '\0' ? KEEL_OK
                                : keel_errorf(KEEL_ERR_FORMAT, "dpkg status: Source field of %s is empty", p->name);
}

keel_status_t keel_dpkg_status_find(const char *text, size_t len, const char *name, const char *arch,
                                    keel_dpkg_pkg_t *out)
{
    if (text == NULL || name == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keel_dpkg_status_find: NULL argument");
    const char *p = text, *end = text + len;
    while (p < end) {
        keel_dpkg_pkg_t cur;
        memset(&cur, 0, sizeof cur);
        bool installed = false;
        keel_status_t st = KEEL_OK;
        /* One stanza: lines up to an empty line. Continuation lines (" ...") are skipped. */
        while (p < end && st == KEEL_OK) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t ll = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
            const char *line = p;
            p = nl != NULL ? nl + 1 : end;
            if (ll == 0 || (ll == 1 && line[0] == '\r'))
                break;
            const char *v;
            size_t vl;
            if (field_is(line, ll, "Package", &v, &vl))
                st = field_copy(cur.name, v, vl);
            else if (field_is(line, ll, "Architecture", &v, &vl))
                st = field_copy(cur.arch, v, vl);
            else if (field_is(line, ll, "Version", &v, &vl))
                st = field_copy(cur.version, v, vl);
            else if (field_is(line, ll, "Source", &v, &vl))
                st = field_copy(cur.source, v, vl);
            else if (field_is(line, ll, "Status", &v, &vl)) {
                /* "want flag status": the last word must be "installed". */
                while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\r'))
                    vl--;
                installed = vl >= 10 && memcmp(v + vl - 10, " installed", 10) == 0;
            }
        }
        if (st != KEEL_OK)
            return st;
        if (!installed || strcmp(cur.name, name) != 0)
            continue;
        if (arch != NULL && arch[0] != '\0' && strcmp(cur.arch, arch) != 0)
            continue;
        if (cur.version[0] == '\0')
            return keel_errorf(KEEL_ERR_FORMAT, "dpkg status: package %s has no Version", name);
        if ((st = source_split(&cur)) != KEEL_OK)
            return st;
        if (cur.source[0] == '\0')
            memcpy(cur.source, cur.name, sizeof cur.source);
        if (cur.source_version[0] == '\0')
            memcpy(cur.source_version, cur.version, sizeof cur.source_version);
        *out = cur;
        return KEEL_OK;
    }
    return keel_errorf(KEEL_ERR_NOT_FOUND, "dpkg status: package %s is not installed", name);
}

keel_status_t supply_error_prefix(keel_status_t st, const char *prefix)
{
    char msg[KEEL_ERROR_MAX];
    if (keel_strlcpy(msg, keel_error_message(), sizeof msg) != KEEL_OK)
        msg[0] = '\0';
    return keel_errorf(st, "%s: %s", prefix, msg);
}

static int cmp_want(const void *a, const void *b)
{
    return strcmp(((const supply_want_t *)a)->path, ((const supply_want_t *)b)->path);
}

keel_status_t supply_dpkg_owners(const char *dpkg_dir, supply_want_t *want, size_t n)
{
    char info[KEEL_PATH_MAX];
    keel_status_t st = keel_path_join(info, sizeof info, dpkg_dir, "info");
    if (st != KEEL_OK)
        return st;
    qsort(want, n, sizeof *want, cmp_want);
    DIR *d = opendir(info);
    if (d == NULL)
        return keel_errorf(KEEL_ERR_NOT_FOUND, "dpkg database: cannot open %s", info);
    struct dirent *ent;
    while (st == KEEL_OK && (ent = readdir(d)) != NULL) {
        size_t nl = strlen(ent->d_name);
        if (nl <= 5 || strcmp(ent->d_name + nl - 5, ".list") != 0 || ent->d_name[0] == '.')
            continue;
        char path[KEEL_PATH_MAX];
        keel_buf_t b;
        if ((st = keel_path_join(path, sizeof path, info, ent->d_name)) != KEEL_OK)
            break;
        if ((st = keel_file_read(path, DPKG_LIST_MAX, &b)) != KEEL_OK) {
            keel_buf_free(&b);
            break;
        }
        char *s = (char *)b.data, *e = s + b.len;
        while (s < e) {
            char *line_end = memchr(s, '\n', (size_t)(e - s));
            if (line_end != NULL)
                *line_end = '\0';
            supply_want_t key = {.path = s};
            supply_want_t *hit = bsearch(&key, want, n, sizeof *want, cmp_want);
            /* A path in two packages (a diversion): the first by name, so the SBOM is reproducible. */
            if (hit != NULL && nl - 5 < sizeof hit->owner &&
                (hit->owner[0] == '\0' || strncmp(ent->d_name, hit->owner, nl - 5) < 0)) {
                memcpy(hit->owner, ent->d_name, nl - 5);
                hit->owner[nl - 5] = '\0';
            }
            s = line_end != NULL ? line_end + 1 : e;
        }
        keel_buf_free(&b);
    }
    closedir(d);
    return st;
}

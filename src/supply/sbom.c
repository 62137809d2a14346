/*
 * keel sbom: a CycloneDX 1.5 SBOM of our artefacts and every shared library
 * they load. Libraries are found the way ld.so finds them (DT_RPATH unless
 * there is a DT_RUNPATH, DT_RUNPATH, the ld.so.conf directories, the system
 * directories; LD_LIBRARY_PATH is left out on purpose: the SBOM describes
 * the installed system, not one shell), read with our own ELF reader (no
 * program of the analysed system is run), and mapped to Debian packages
 * through the dpkg database. Everything is sorted, so two runs on the same
 * system differ only in serialNumber and timestamp.
 */
#define _GNU_SOURCE /* realpath in C11 mode */
#include "supply_int.h"

#include "keel/crypto.h"

#include <elf.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LDCONF_MAX (1u << 20)   /* one ld.so.conf file */
#define LDCONF_DEPTH 8          /* nested include lines */
#define LDDIRS_MAX 256u         /* library directories */
#define OSREL_MAX (64u << 10)   /* /etc/os-release */
#define COPYRIGHT_MAX (4u << 20) /* one debian/copyright file */

typedef struct {
    char *path;   /* as found; NULL when missing */
    char *real;   /* canonical path; NULL when missing */
    char *name;   /* file name, or the DT_NEEDED name of a missing one */
    char *ref;    /* bom-ref */
    bool root, missing, elf, exec, ar;
    unsigned bits;
    bool be;
    uint16_t machine;
    char sha256[2 * KEEL_SHA256_LEN + 1];
    char **needed;
    size_t n_needed;
    char *rpath, *runpath;
    size_t top; /* the root that first pulled it in (its DT_RPATH counts too) */
    size_t *deps;
    size_t n_deps;
    long pkg; /* index in pkgs, -1 for none */
} node_t;

typedef struct {
    char owner[KEEL_DPKG_FIELD_MAX];
    keel_dpkg_pkg_t info;
    char *purl;
    char licence[KEEL_DPKG_FIELD_MAX];
} pkg_t;

typedef struct {
    const keel_sbom_opts_t *o;
    node_t *nodes;
    size_t n_nodes;
    pkg_t *pkgs;
    size_t n_pkgs;
    char *dirs[LDDIRS_MAX];
    size_t n_dirs;
    char distro_id[64], distro_major[64];
} ctx_t;

static const char *triplet(uint16_t machine, unsigned bits)
{
    switch (machine) {
    case EM_X86_64: return "x86_64-linux-gnu";
    case EM_386: return "i386-linux-gnu";
    case EM_AARCH64: return "aarch64-linux-gnu";
    case EM_ARM: return "arm-linux-gnueabihf";
    case EM_RISCV: return bits == 64 ? "riscv64-linux-gnu" : NULL;
    case EM_PPC64: return "powerpc64le-linux-gnu";
    case EM_S390: return "s390x-linux-gnu";
    default: return NULL;
    }
}

static keel_status_t nomem(void)
{
    return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
}

static keel_status_t add_dir(ctx_t *c, const char *d, size_t len)
{
    while (len > 1 && d[len - 1] == '/')
        len--;
    if (len == 0 || d[0] != '/')
        return KEEL_OK; /* ld.so ignores relative directories in its configuration */
    for (size_t i = 0; i < c->n_dirs; i++)
        if (strlen(c->dirs[i]) == len && strncmp(c->dirs[i], d, len) == 0)
            return KEEL_OK;
    if (c->n_dirs == LDDIRS_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "more than %u library directories", LDDIRS_MAX);
    if ((c->dirs[c->n_dirs] = strndup(d, len)) == NULL)
        return nomem();
    c->n_dirs++;
    return KEEL_OK;
}

/* ld.so.conf: one directory a line, '#' comments, "include GLOB" (relative to the file's directory). */
static keel_status_t read_ldconf(ctx_t *c, const char *path, unsigned depth)
{
    if (depth > LDCONF_DEPTH)
        return keel_errorf(KEEL_ERR_FORMAT, "%s: includes nested deeper than %u", path, LDCONF_DEPTH);
    keel_buf_t b;
    keel_status_t st = keel_file_read(path, LDCONF_MAX, &b);
    if (st != KEEL_OK) {
        keel_buf_free(&b);
        if (st != KEEL_ERR_NOT_FOUND)
            return st;
        keel_error_clear(); /* no configuration: the system directories only */
        return KEEL_OK;
    }
    char *s = (char *)b.data, *e = s + b.len;
    while (st == KEEL_OK && s < e) {
        char *nl = memchr(s, '\n', (size_t)(e - s));
        char *end = nl != NULL ? nl : e;
        char *hash = memchr(s, '#', (size_t)(end - s));
        if (hash != NULL)
            end = hash;
        while (s < end && (*s == ' ' || *s == '\t'))
            s++;
        while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
            end--;
        size_t len = (size_t)(end - s);
        if (len > 8 && strncmp(s, "include", 7) == 0 && (s[7] == ' ' || s[7] == '\t')) {
            char *pat = s + 8;
            while (pat < end && (*pat == ' ' || *pat == '\t'))
                pat++;
            char full[KEEL_PATH_MAX];
            if (*pat == '/') {
                st = keel_snprintf(full, sizeof full, "%.*s", (int)(end - pat), pat);
            } else {
                const char *slash = strrchr(path, '/');
                int dl = slash != NULL ? (int)(slash - path) : 1;
                st = keel_snprintf(full, sizeof full, "%.*s/%.*s", dl, slash != NULL ? path : ".", (int)(end - pat),
                                   pat);
            }
            glob_t g;
            int gr = st == KEEL_OK ? glob(full, 0, NULL, &g) : GLOB_NOMATCH;
            if (gr == 0) {
                for (size_t i = 0; i < g.gl_pathc && st == KEEL_OK; i++)
                    st = read_ldconf(c, g.gl_pathv[i], depth + 1);
                globfree(&g);
            } else if (gr != GLOB_NOMATCH && st == KEEL_OK) {
                st = keel_errorf(KEEL_ERR_IO, "%s: cannot expand include %s", path, full);
            }
        } else if (len > 0 && strncmp(s, "hwcap", 5) != 0) {
            st = add_dir(c, s, len);
        }
        s = nl != NULL ? nl + 1 : e;
    }
    keel_buf_free(&b);
    return st;
}

/* ID and the major part of VERSION_ID from os-release ("debian", "12"). */
static keel_status_t read_os_release(ctx_t *c)
{
    keel_buf_t b;
    keel_status_t st = keel_file_read(c->o->os_release ? c->o->os_release : "/etc/os-release", OSREL_MAX, &b);
    if (st != KEEL_OK) {
        keel_buf_free(&b);
        keel_error_clear();
        return KEEL_OK; /* no distro qualifier then */
    }
    char *s = (char *)b.data, *e = s + b.len;
    while (s < e) {
        char *nl = memchr(s, '\n', (size_t)(e - s));
        char *end = nl != NULL ? nl : e;
        char *dst = NULL;
        size_t cap = 0;
        if (end - s > 3 && strncmp(s, "ID=", 3) == 0)
            dst = c->distro_id, cap = sizeof c->distro_id, s += 3;
        else if (end - s > 11 && strncmp(s, "VERSION_ID=", 11) == 0)
            dst = c->distro_major, cap = sizeof c->distro_major, s += 11;
        if (dst != NULL) {
            size_t n = 0;
            for (; s < end && n + 1 < cap; s++) {
                bool ok = (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '_';
                if (*s == '.' && dst == c->distro_major)
                    break; /* 12.4 -> 12 */
                if (ok)
                    dst[n++] = *s;
                else if (*s != '"' && *s != '\'')
                    break;
            }
            dst[n] = '\0';
        }
        s = nl != NULL ? nl + 1 : e;
    }
    keel_buf_free(&b);
    return KEEL_OK;
}

static void node_free(node_t *n)
{
    free(n->path);
    free(n->real);
    free(n->name);
    free(n->ref);
    for (size_t i = 0; i < n->n_needed; i++)
        free(n->needed[i]);
    free(n->needed);
    free(n->rpath);
    free(n->runpath);
    free(n->deps);
}

static node_t *node_new(ctx_t *c)
{
    if (c->n_nodes == KEEL_SBOM_OBJECTS_MAX) {
        keel_errorf(KEEL_ERR_TOO_LARGE, "more than %u files in one SBOM", KEEL_SBOM_OBJECTS_MAX);
        return NULL;
    }
    if (c->nodes == NULL && (c->nodes = calloc(KEEL_SBOM_OBJECTS_MAX, sizeof *c->nodes)) == NULL) {
        nomem();
        return NULL;
    }
    node_t *n = &c->nodes[c->n_nodes++];
    memset(n, 0, sizeof *n);
    n->pkg = -1;
    return n;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *oom = true;
    return d;
}

/*
 * Reads the file at path (canonical path real) into a new node. With `like`,
 * the file must be an ELF object of the same class and machine (ld.so skips
 * the others and searches on): KEEL_ERR_NOT_FOUND when it is not.
 */
static keel_status_t node_load(ctx_t *c, const char *path, const char *real, const node_t *like, size_t *idx)
{
    keel_buf_t b;
    keel_status_t st = keel_file_read(real, KEEL_SBOM_FILE_MAX, &b);
    if (st != KEEL_OK) {
        keel_buf_free(&b);
        return st;
    }
    keel_elf_info_t *info = malloc(sizeof *info);
    if (info == NULL) {
        keel_buf_free(&b);
        return nomem();
    }
    bool is_elf = b.len >= 4 && memcmp(b.data, ELFMAG, SELFMAG) == 0;
    if (is_elf)
        st = keel_elf_parse(b.data, b.len, info);
    if (is_elf && st != KEEL_OK) {
        st = supply_error_prefix(st, path);
    } else if (like != NULL && (!is_elf || info->bits != like->bits || info->big_endian != like->be ||
                                info->machine != like->machine)) {
        st = KEEL_ERR_NOT_FOUND;
    }
    node_t *n = NULL;
    if (st == KEEL_OK && (n = node_new(c)) == NULL)
        st = KEEL_ERR_TOO_LARGE;
    if (st == KEEL_OK) {
        uint8_t md[KEEL_SHA256_LEN];
        keel_sha256(b.data, b.len, md);
        st = keel_hex_encode(md, sizeof md, n->sha256, sizeof n->sha256);
        const char *base = strrchr(path, '/');
        bool oom = false;
        n->path = dup_or_null(path, &oom);
        n->real = dup_or_null(real, &oom);
        n->name = dup_or_null(base != NULL ? base + 1 : path, &oom);
        n->elf = is_elf;
        n->ar = !is_elf && b.len >= 8 && memcmp(b.data, "!<arch>\n", 8) == 0;
        if (is_elf) {
            n->bits = info->bits;
            n->be = info->big_endian;
            n->machine = info->machine;
            n->exec = info->type == ET_EXEC || info->interp != NULL;
            n->rpath = dup_or_null(info->rpath, &oom);
            n->runpath = dup_or_null(info->runpath, &oom);
            size_t extra = info->interp != NULL ? 1 : 0;
            n->needed = calloc(info->n_needed + extra + 1, sizeof *n->needed);
            if (n->needed == NULL)
                oom = true;
            /* The program interpreter is loaded before anything else: a dependency too. */
            if (!oom && extra)
                n->needed[n->n_needed++] = dup_or_null(info->interp, &oom);
            for (size_t i = 0; !oom && i < info->n_needed; i++)
                n->needed[n->n_needed++] = dup_or_null(info->needed[i], &oom);
        }
        if (st == KEEL_OK && oom)
            st = nomem();
        if (st == KEEL_OK)
            *idx = c->n_nodes - 1;
    }
    free(info);
    keel_buf_free(&b);
    return st;
}

static long find_real(const ctx_t *c, const char *real)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].real != NULL && strcmp(c->nodes[i].real, real) == 0)
            return (long)i;
    return -1;
}

/* Tries dir/name for node `from`: 1 found (*idx), 0 not there or not loadable by it. */
static keel_status_t try_path(ctx_t *c, size_t from, const char *cand, size_t *idx, bool *found)
{
    *found = false;
    struct stat sb;
    if (stat(cand, &sb) != 0 || !S_ISREG(sb.st_mode))
        return KEEL_OK;
    char real[PATH_MAX];
    if (realpath(cand, real) == NULL)
        return KEEL_OK;
    long have = find_real(c, real);
    if (have >= 0) {
        const node_t *h = &c->nodes[have], *f = &c->nodes[from];
        if (!h->elf || h->bits != f->bits || h->be != f->be || h->machine != f->machine)
            return KEEL_OK;
        *idx = (size_t)have;
        *found = true;
        return KEEL_OK;
    }
    node_t like = c->nodes[from];
    keel_status_t st = node_load(c, cand, real, &like, idx);
    if (st == KEEL_ERR_NOT_FOUND || st == KEEL_ERR_FORMAT) {
        keel_error_clear(); /* not an object for this loader: ld.so goes on searching too */
        return KEEL_OK;
    }
    if (st == KEEL_OK) {
        *found = true;
        c->nodes[*idx].top = c->nodes[from].top;
    }
    return st;
}

/* Searches a colon-separated path list ($ORIGIN and $LIB expanded) for name. */
static keel_status_t try_list(ctx_t *c, size_t from, const char *list, const char *name, size_t *idx, bool *found)
{
    *found = false;
    if (list == NULL)
        return KEEL_OK;
    const node_t *f = &c->nodes[from];
    char origin[KEEL_PATH_MAX];
    keel_status_t st = keel_strlcpy(origin, f->real, sizeof origin);
    if (st != KEEL_OK)
        return st;
    char *slash = strrchr(origin, '/');
    if (slash != NULL)
        *(slash == origin ? slash + 1 : slash) = '\0';
    /* Debian's ld.so expands $LIB to the multiarch directory. */
    const char *trip = triplet(f->machine, f->bits);
    char libdir[64];
    if (keel_snprintf(libdir, sizeof libdir, "lib%s%s", trip ? "/" : "", trip ? trip : "") != KEEL_OK)
        return KEEL_ERR_TOO_LARGE;
    const char *p = list;
    while (!*found && st == KEEL_OK) {
        const char *colon = strchr(p, ':');
        size_t len = colon != NULL ? (size_t)(colon - p) : strlen(p);
        char dir[KEEL_PATH_MAX];
        size_t dl = 0;
        bool skip = len == 0;
        for (size_t i = 0; i < len && !skip;) {
            const char *rep = NULL;
            size_t used = 1;
            if (strncmp(p + i, "$ORIGIN", 7) == 0 || strncmp(p + i, "${ORIGIN}", 9) == 0)
                rep = origin, used = p[i + 1] == '{' ? 9 : 7;
            else if (strncmp(p + i, "$LIB", 4) == 0 || strncmp(p + i, "${LIB}", 6) == 0)
                rep = libdir, used = p[i + 1] == '{' ? 6 : 4;
            else if (p[i] == '$')
                skip = true; /* $PLATFORM and the like: not followed */
            if (i + used > len)
                skip = true;
            size_t rl = rep != NULL ? strlen(rep) : 1;
            if (skip || dl + rl + 1 >= sizeof dir) {
                skip = true;
                break;
            }
            memcpy(dir + dl, rep != NULL ? rep : p + i, rl);
            dl += rl;
            i += used;
        }
        if (!skip) {
            dir[dl] = '\0';
            char cand[KEEL_PATH_MAX];
            if (keel_path_join(cand, sizeof cand, dir, name) == KEEL_OK)
                st = try_path(c, from, cand, idx, found);
            else
                keel_error_clear();
        }
        if (colon == NULL)
            break;
        p = colon + 1;
    }
    return st;
}

static keel_status_t resolve(ctx_t *c, size_t from, const char *name, size_t *idx, bool *found)
{
    keel_status_t st = KEEL_OK;
    *found = false;
    if (strchr(name, '/') != NULL)
        return try_path(c, from, name, idx, found);
    const node_t *f = &c->nodes[from];
    if (f->runpath == NULL) {
        st = try_list(c, from, f->rpath, name, idx, found);
        if (st == KEEL_OK && !*found && f->top != from)
            st = try_list(c, f->top, c->nodes[f->top].rpath, name, idx, found);
    }
    if (st == KEEL_OK && !*found)
        st = try_list(c, from, c->nodes[from].runpath, name, idx, found);
    for (size_t i = 0; st == KEEL_OK && !*found && i < c->n_dirs; i++) {
        char cand[KEEL_PATH_MAX];
        if (keel_path_join(cand, sizeof cand, c->dirs[i], name) != KEEL_OK) {
            keel_error_clear();
            continue;
        }
        st = try_path(c, from, cand, idx, found);
    }
    const char *trip = triplet(c->nodes[from].machine, c->nodes[from].bits);
    const char *sysdirs[] = {"/lib", "/usr/lib", c->nodes[from].bits == 64 ? "/lib64" : "/lib32",
                             c->nodes[from].bits == 64 ? "/usr/lib64" : "/usr/lib32"};
    for (int pass = 0; pass < 2 && st == KEEL_OK && !*found; pass++) {
        for (size_t i = 0; i < 4 && st == KEEL_OK && !*found; i++) {
            char dir[KEEL_PATH_MAX], cand[KEEL_PATH_MAX];
            if (pass == 0 && (trip == NULL || i > 1))
                continue;
            if (pass == 0 && keel_snprintf(dir, sizeof dir, "%s/%s", sysdirs[i], trip) != KEEL_OK)
                return KEEL_ERR_TOO_LARGE;
            if (pass == 1 && keel_strlcpy(dir, sysdirs[i], sizeof dir) != KEEL_OK)
                return KEEL_ERR_TOO_LARGE;
            if (keel_path_join(cand, sizeof cand, dir, name) == KEEL_OK)
                st = try_path(c, from, cand, idx, found);
            else
                keel_error_clear();
        }
    }
    return st;
}

static keel_status_t add_dep(node_t *n, size_t to)
{
    for (size_t i = 0; i < n->n_deps; i++)
        if (n->deps[i] == to)
            return KEEL_OK;
    size_t *d = realloc(n->deps, (n->n_deps + 1) * sizeof *d);
    if (d == NULL)
        return nomem();
    n->deps = d;
    n->deps[n->n_deps++] = to;
    return KEEL_OK;
}

static keel_status_t walk(ctx_t *c)
{
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < c->n_nodes && st == KEEL_OK; i++) {
        for (size_t k = 0; k < c->nodes[i].n_needed && st == KEEL_OK; k++) {
            char *name = c->nodes[i].needed[k];
            size_t idx = 0;
            bool found = false;
            st = resolve(c, i, name, &idx, &found);
            if (st == KEEL_OK && !found) {
                long have = -1;
                for (size_t j = 0; j < c->n_nodes && have < 0; j++)
                    if (c->nodes[j].missing && strcmp(c->nodes[j].name, name) == 0)
                        have = (long)j;
                if (have < 0) {
                    node_t *m = node_new(c);
                    if (m == NULL)
                        return KEEL_ERR_TOO_LARGE;
                    m->missing = true;
                    if ((m->name = strdup(name)) == NULL)
                        return nomem();
                    have = (long)(c->n_nodes - 1);
                }
                idx = (size_t)have;
            }
            if (st == KEEL_OK && idx != i)
                st = add_dep(&c->nodes[i], idx);
        }
    }
    return st;
}

/* With and without the /usr prefix: on a merged-/usr system /lib is /usr/lib, and dpkg lists either. */
static keel_status_t want_paths(ctx_t *c, supply_want_t **out, size_t *n_out, char ***owned, size_t *n_owned)
{
    size_t cap = c->n_nodes * 4, n = 0;
    supply_want_t *w = calloc(cap + 1, sizeof *w);
    char **strs = calloc(cap + 1, sizeof *strs);
    size_t ns = 0;
    if (w == NULL || strs == NULL) {
        free(w);
        free(strs);
        return nomem();
    }
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < c->n_nodes && st == KEEL_OK; i++) {
        const node_t *nd = &c->nodes[i];
        if (nd->root || nd->missing)
            continue;
        const char *base[2] = {nd->path, nd->real};
        for (int k = 0; k < 2 && st == KEEL_OK; k++) {
            const char *p = base[k];
            char *alias = NULL;
            if (strncmp(p, "/usr/", 5) == 0)
                alias = strdup(p + 4);
            else if (asprintf(&alias, "/usr%s", p) < 0)
                alias = NULL;
            if (alias == NULL) {
                st = nomem();
                break;
            }
            strs[ns++] = alias;
            const char *both[2] = {p, alias};
            for (int j = 0; j < 2; j++) {
                bool dup = false;
                for (size_t q = 0; q < n && !dup; q++)
                    dup = strcmp(w[q].path, both[j]) == 0;
                if (!dup)
                    w[n++].path = both[j];
            }
        }
    }
    *out = w;
    *n_out = n;
    *owned = strs;
    *n_owned = ns;
    return st;
}

static const char *owner_of(supply_want_t *w, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(w[i].path, path) == 0 && w[i].owner[0] != '\0')
            return w[i].owner;
    return NULL;
}

static void strip_usr_alias(const char *p, char *buf, size_t cap, const char **alias)
{
    *alias = NULL;
    if (strncmp(p, "/usr/", 5) == 0)
        *alias = p + 4;
    else if (keel_snprintf(buf, cap, "/usr%s", p) == KEEL_OK)
        *alias = buf;
    else
        keel_error_clear();
}

/* purl: pkg:deb/debian/<name>@<version>?arch=<arch>&distro=debian-<major> (the version percent-encoded). */
static keel_status_t make_purl(const ctx_t *c, pkg_t *p)
{
    keel_buf_t b;
    keel_buf_init(&b, 4096);
    keel_status_t st = keel_buf_printf(&b, "pkg:deb/%s/", c->distro_id[0] ? c->distro_id : "debian");
    /* Name and version percent-encoded but for unreserved characters and ':' ("+" becomes %2B). */
    const char *parts[2] = {p->info.name, p->info.version};
    for (int k = 0; k < 2 && st == KEEL_OK; k++) {
        for (const char *s = parts[k]; st == KEEL_OK && *s != '\0'; s++) {
            unsigned char ch = (unsigned char)*s;
            bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                         strchr("-._~:", ch) != NULL;
            st = plain ? keel_buf_append(&b, s, 1) : keel_buf_printf(&b, "%%%02X", ch);
        }
        if (st == KEEL_OK && k == 0)
            st = keel_buf_append(&b, "@", 1);
    }
    if (st == KEEL_OK && p->info.arch[0] != '\0')
        st = keel_buf_printf(&b, "?arch=%s", p->info.arch);
    if (st == KEEL_OK && c->distro_major[0] != '\0')
        st = keel_buf_printf(&b, "%sdistro=%s-%s", p->info.arch[0] ? "&" : "?",
                             c->distro_id[0] ? c->distro_id : "debian", c->distro_major);
    if (st == KEEL_OK && (p->purl = strdup((char *)b.data)) == NULL)
        st = nomem();
    keel_buf_free(&b);
    return st;
}

/* The licence of the "Files: *" paragraph of a machine-readable debian/copyright, if any. */
static void read_licence(const ctx_t *c, pkg_t *p)
{
    char dir[KEEL_PATH_MAX], path[KEEL_PATH_MAX];
    if (keel_path_join(dir, sizeof dir, c->o->doc_dir ? c->o->doc_dir : "/usr/share/doc", p->info.name) != KEEL_OK ||
        keel_path_join(path, sizeof path, dir, "copyright") != KEEL_OK) {
        keel_error_clear();
        return;
    }
    keel_buf_t b;
    if (keel_file_read(path, COPYRIGHT_MAX, &b) != KEEL_OK) {
        keel_buf_free(&b);
        keel_error_clear();
        return;
    }
    const char *s = (const char *)b.data;
    if (strncmp(s, "Format:", 7) == 0 && strstr(s, "copyright-format/1.0") != NULL) {
        const char *files = strstr(s, "\nFiles: *\n");
        if (files == NULL)
            files = strstr(s, "\nFiles: *\r\n");
        const char *lic = files != NULL ? strstr(files, "\nLicense:") : NULL;
        const char *para_end = files != NULL ? strstr(files + 1, "\n\n") : NULL;
        if (lic != NULL && (para_end == NULL || lic < para_end)) {
            lic += 9;
            while (*lic == ' ' || *lic == '\t')
                lic++;
            size_t n = strcspn(lic, "\r\n");
            size_t k = 0;
            for (size_t i = 0; i < n && k + 1 < sizeof p->licence; i++)
                if ((unsigned char)lic[i] >= 0x20 && lic[i] != 0x7f)
                    p->licence[k++] = lic[i];
            p->licence[k] = '\0';
        }
    }
    keel_buf_free(&b);
}

static keel_status_t map_packages(ctx_t *c)
{
    supply_want_t *w = NULL;
    char **strs = NULL;
    size_t n = 0, ns = 0;
    keel_status_t st = want_paths(c, &w, &n, &strs, &ns);
    const char *dpkg = c->o->dpkg_dir ? c->o->dpkg_dir : "/var/lib/dpkg";
    if (st == KEEL_OK && n > 0)
        st = supply_dpkg_owners(dpkg, w, n);
    keel_buf_t status;
    keel_buf_init(&status, 1);
    if (st == KEEL_OK && n > 0) {
        char sp[KEEL_PATH_MAX];
        st = keel_path_join(sp, sizeof sp, dpkg, "status");
        if (st == KEEL_OK) {
            keel_buf_free(&status);
            st = keel_file_read(sp, 256u << 20, &status);
        }
    }
    if (st == KEEL_OK && (c->pkgs = calloc(c->n_nodes + 1, sizeof *c->pkgs)) == NULL)
        st = nomem();
    for (size_t i = 0; i < c->n_nodes && st == KEEL_OK; i++) {
        node_t *nd = &c->nodes[i];
        if (nd->root || nd->missing)
            continue;
        char abuf[KEEL_PATH_MAX];
        const char *owner = NULL, *alias;
        const char *cands[2] = {nd->path, nd->real};
        for (int k = 0; k < 2 && owner == NULL; k++) {
            owner = owner_of(w, n, cands[k]);
            strip_usr_alias(cands[k], abuf, sizeof abuf, &alias);
            if (owner == NULL && alias != NULL)
                owner = owner_of(w, n, alias);
        }
        if (owner == NULL)
            continue;
        long have = -1;
        for (size_t j = 0; j < c->n_pkgs && have < 0; j++)
            if (strcmp(c->pkgs[j].owner, owner) == 0)
                have = (long)j;
        if (have < 0) {
            pkg_t *p = &c->pkgs[c->n_pkgs];
            memcpy(p->owner, owner, sizeof p->owner);
            char name[KEEL_DPKG_FIELD_MAX];
            memcpy(name, owner, sizeof name);
            char *colon = strchr(name, ':');
            if (colon != NULL)
                *colon++ = '\0';
            st = keel_dpkg_status_find((const char *)status.data, status.len, name, colon, &p->info);
            if (st == KEEL_ERR_NOT_FOUND) { /* listed but not installed (half-removed): as unpackaged */
                keel_error_clear();
                st = KEEL_OK;
                continue;
            }
            if (st == KEEL_OK)
                st = make_purl(c, p);
            if (st != KEEL_OK)
                break;
            read_licence(c, p);
            have = (long)c->n_pkgs++;
        }
        nd->pkg = have;
    }
    keel_buf_free(&status);
    for (size_t i = 0; i < ns; i++)
        free(strs[i]);
    free(strs);
    free(w);
    return st;
}

/* ---- JSON ---- */

static json_t *prop(const char *name, const char *value)
{
    return json_pack("{s:s, s:s}", "name", name, "value", value);
}

static keel_status_t add_prop(json_t *props, const char *name, const char *value)
{
    return json_array_append_new(props, prop(name, value)) == 0 ? KEEL_OK : nomem();
}

static int cmp_ref(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "bom-ref"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "bom-ref"));
    if (x == NULL)
        x = json_string_value(json_object_get(*(json_t *const *)a, "ref"));
    if (y == NULL)
        y = json_string_value(json_object_get(*(json_t *const *)b, "ref"));
    return strcmp(x ? x : "", y ? y : "");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* Sorts a JSON array in place with cmp. */
static keel_status_t sort_array(json_t *arr, int (*cmp)(const void *, const void *))
{
    size_t n = json_array_size(arr);
    if (n < 2)
        return KEEL_OK;
    json_t **v = malloc(n * sizeof(json_t *));
    if (v == NULL)
        return nomem();
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(arr, i));
    qsort(v, n, sizeof(json_t *), cmp);
    json_array_clear(arr);
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(arr, v[i]) != 0)
            st = nomem();
    free(v);
    return st;
}

static const char *node_ref(const ctx_t *c, const node_t *n)
{
    return n->pkg >= 0 ? c->pkgs[n->pkg].purl : n->ref;
}

static keel_status_t file_component(const ctx_t *c, const node_t *n, json_t *comps)
{
    const char *type = n->missing ? "library" : n->exec ? "application" : n->elf || n->ar ? "library" : "file";
    json_t *j = json_pack("{s:s, s:s, s:s}", "type", type, "bom-ref", n->ref, "name", n->name);
    json_t *props = json_array();
    if (j == NULL || props == NULL || json_object_set_new(j, "properties", props) != 0) {
        json_decref(j);
        return nomem();
    }
    keel_status_t st = KEEL_OK;
    if (n->root && json_object_set_new(j, "version", json_string(c->o->product_version)) != 0)
        st = nomem();
    if (st == KEEL_OK && !n->missing &&
        json_object_set_new(j, "hashes", json_pack("[{s:s, s:s}]", "alg", "SHA-256", "content", n->sha256)) != 0)
        st = nomem();
    if (st == KEEL_OK)
        st = add_prop(props, "keel:origin", n->missing ? "missing" : n->root ? "product" : "unpackaged");
    if (st == KEEL_OK && !n->missing)
        st = add_prop(props, "keel:file", n->real);
    if (st == KEEL_OK && n->missing)
        st = add_prop(props, "keel:missing", "the dynamic linker's search found no such library");
    if (st == KEEL_OK && json_array_append_new(comps, j) != 0)
        return nomem();
    if (st != KEEL_OK)
        json_decref(j);
    return st;
}

static keel_status_t pkg_component(const ctx_t *c, size_t pi, json_t *comps)
{
    const pkg_t *p = &c->pkgs[pi];
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "library", "bom-ref", p->purl, "name", p->info.name,
                          "version", p->info.version, "purl", p->purl);
    json_t *props = json_array();
    if (j == NULL || props == NULL || json_object_set_new(j, "properties", props) != 0) {
        json_decref(j);
        return nomem();
    }
    keel_status_t st = KEEL_OK;
    if (p->licence[0] != '\0' &&
        json_object_set_new(j, "licenses", json_pack("[{s:{s:s}}]", "license", "name", p->licence)) != 0)
        st = nomem();
    if (st == KEEL_OK)
        st = add_prop(props, "keel:origin", "dpkg");
    if (st == KEEL_OK)
        st = add_prop(props, "keel:deb:source", p->info.source);
    if (st == KEEL_OK)
        st = add_prop(props, "keel:deb:source-version", p->info.source_version);
    json_t *files = json_array();
    if (files == NULL)
        st = nomem();
    for (size_t i = 0; i < c->n_nodes && st == KEEL_OK; i++)
        if (c->nodes[i].pkg == (long)pi && json_array_append_new(files, json_string(c->nodes[i].real)) != 0)
            st = nomem();
    if (st == KEEL_OK)
        st = sort_array(files, cmp_str);
    for (size_t i = 0; i < json_array_size(files) && st == KEEL_OK; i++)
        st = add_prop(props, "keel:file", json_string_value(json_array_get(files, i)));
    json_decref(files);
    if (st == KEEL_OK && json_array_append_new(comps, j) != 0)
        return nomem();
    if (st != KEEL_OK)
        json_decref(j);
    return st;
}

/* The dependsOn of one component: what any of its files needs, outside itself. */
static keel_status_t dep_entry(const ctx_t *c, const char *ref, long pkg, long node, json_t *deps)
{
    json_t *on = json_array();
    if (on == NULL)
        return nomem();
    keel_status_t st = KEEL_OK;
    for (size_t i = 0; i < c->n_nodes && st == KEEL_OK; i++) {
        const node_t *n = &c->nodes[i];
        if (!(pkg >= 0 ? n->pkg == pkg : (long)i == node))
            continue;
        for (size_t k = 0; k < n->n_deps && st == KEEL_OK; k++) {
            const char *to = node_ref(c, &c->nodes[n->deps[k]]);
            bool dup = strcmp(to, ref) == 0;
            for (size_t q = 0; q < json_array_size(on) && !dup; q++)
                dup = strcmp(json_string_value(json_array_get(on, q)), to) == 0;
            if (!dup && json_array_append_new(on, json_string(to)) != 0)
                st = nomem();
        }
    }
    if (st == KEEL_OK)
        st = sort_array(on, cmp_str);
    json_t *e = st == KEEL_OK ? json_pack("{s:s, s:o}", "ref", ref, "dependsOn", on) : (json_decref(on), NULL);
    if (st == KEEL_OK && (e == NULL || json_array_append_new(deps, e) != 0))
        st = nomem();
    return st;
}

static keel_status_t uuid_urn(char out[46])
{
    uint8_t r[16];
    keel_random_bytes(r, sizeof r);
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    return keel_snprintf(out, 46, "urn:uuid:%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
                         r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
                         r[15]);
}

static keel_status_t build_json(ctx_t *c, json_t **out)
{
    const keel_sbom_opts_t *o = c->o;
    char serial[46], ts[32], product_ref[KEEL_DPKG_FIELD_MAX + 16];
    struct tm tm;
    keel_status_t st = uuid_urn(serial);
    if (st == KEEL_OK && (gmtime_r(&o->timestamp, &tm) == NULL || strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0))
        st = keel_errorf(KEEL_ERR_ARG, "SBOM timestamp out of range");
    if (st == KEEL_OK)
        st = keel_snprintf(product_ref, sizeof product_ref, "product:%s", o->product);
    if (st != KEEL_OK)
        return st;
    json_t *comps = json_array(), *deps = json_array(), *top = json_array();
    if (comps == NULL || deps == NULL || top == NULL)
        st = nomem();
    for (size_t i = 0; i < c->n_nodes && st == KEEL_OK; i++) {
        node_t *n = &c->nodes[i];
        if (n->pkg >= 0)
            continue;
        if (n->missing ? asprintf(&n->ref, "missing:%s", n->name) < 0 : asprintf(&n->ref, "file:%s", n->real) < 0) {
            n->ref = NULL;
            st = nomem();
        }
    }
    for (size_t i = 0; i < c->n_nodes && st == KEEL_OK; i++) {
        const node_t *n = &c->nodes[i];
        if (n->pkg >= 0)
            continue;
        st = file_component(c, n, comps);
        if (st == KEEL_OK)
            st = dep_entry(c, n->ref, -1, (long)i, deps);
        if (st == KEEL_OK && n->root && json_array_append_new(top, json_string(n->ref)) != 0)
            st = nomem();
    }
    for (size_t i = 0; i < c->n_pkgs && st == KEEL_OK; i++) {
        st = pkg_component(c, i, comps);
        if (st == KEEL_OK)
            st = dep_entry(c, c->pkgs[i].purl, (long)i, -1, deps);
    }
    if (st == KEEL_OK)
        st = sort_array(top, cmp_str);
    json_t *pdep = st == KEEL_OK ? json_pack("{s:s, s:O}", "ref", product_ref, "dependsOn", top) : NULL;
    if (st == KEEL_OK && (pdep == NULL || json_array_append_new(deps, pdep) != 0))
        st = nomem();
    if (st == KEEL_OK)
        st = sort_array(comps, cmp_ref);
    if (st == KEEL_OK)
        st = sort_array(deps, cmp_ref);
    json_t *mprops = json_array();
    if (st == KEEL_OK && mprops == NULL)
        st = nomem();
    if (st == KEEL_OK && c->distro_id[0] != '\0')
        st = add_prop(mprops, "keel:distro", c->distro_id);
    if (st == KEEL_OK && c->distro_major[0] != '\0')
        st = add_prop(mprops, "keel:distro-version", c->distro_major);
    json_t *doc = NULL;
    if (st == KEEL_OK) {
        doc = json_pack("{s:s, s:s, s:s, s:i, s:{s:s, s:{s:[{s:s, s:s, s:s}]}, s:{s:s, s:s, s:s, s:s}, s:O}, s:O, s:O}",
                        "bomFormat", "CycloneDX", "specVersion", "1.5", "serialNumber", serial, "version", 1,
                        "metadata", "timestamp", ts, "tools", "components", "type", "application", "name", "keel sbom",
                        "version", o->tool_version, "component", "type", "application", "bom-ref", product_ref,
                        "name", o->product, "version", o->product_version, "properties", mprops, "components", comps,
                        "dependencies", deps);
        if (doc == NULL)
            st = nomem();
    }
    json_decref(mprops);
    json_decref(comps);
    json_decref(deps);
    json_decref(top);
    if (st == KEEL_OK)
        *out = doc;
    return st;
}

keel_status_t keel_sbom_build(const keel_sbom_opts_t *o, json_t **out)
{
    if (o == NULL || out == NULL || o->paths == NULL || o->n_paths == 0 || o->product == NULL ||
        o->product_version == NULL || o->tool_version == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keel_sbom_build: no artefacts or no product");
    *out = NULL;
    ctx_t c = {.o = o};
    keel_status_t st = read_os_release(&c);
    if (st == KEEL_OK)
        st = read_ldconf(&c, o->ld_so_conf ? o->ld_so_conf : "/etc/ld.so.conf", 0);
    for (size_t i = 0; i < o->n_paths && st == KEEL_OK; i++) {
        char real[PATH_MAX];
        if (realpath(o->paths[i], real) == NULL) {
            st = keel_errorf(KEEL_ERR_NOT_FOUND, "%s: no such file", o->paths[i]);
            break;
        }
        if (find_real(&c, real) >= 0)
            continue;
        size_t idx = 0;
        st = node_load(&c, o->paths[i], real, NULL, &idx);
        if (st == KEEL_OK) {
            c.nodes[idx].root = true;
            c.nodes[idx].top = idx;
        }
    }
    if (st == KEEL_OK)
        st = walk(&c);
    if (st == KEEL_OK)
        st = map_packages(&c);
    if (st == KEEL_OK)
        st = build_json(&c, out);
    for (size_t i = 0; i < c.n_nodes; i++)
        node_free(&c.nodes[i]);
    free(c.nodes);
    for (size_t i = 0; i < c.n_pkgs; i++)
        free(c.pkgs[i].purl);
    free(c.pkgs);
    for (size_t i = 0; i < c.n_dirs; i++)
        free(c.dirs[i]);
    return st;
}

/*
 * keel sbom and keel vulns (issue 8, EN 303 645 5.2-3 and 5.5-2): a
 * CycloneDX 1.5 SBOM of the product's programs and every library they load,
 * and OSV advisories matched against it. The work is in src/supply.
 */
#include "cli.h"

#include "keel/supply.h"

#include <getopt.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char sbom_usage[] =
    "usage: keel sbom [--out FILE] [--product NAME] [--product-version V] [BINARY...]\n"
    "\n"
    "Writes a CycloneDX 1.5 JSON SBOM (EN 303 645 5.2-3, 5.5-2) of the product's\n"
    "programs and libraries and of every shared library they load, found the way\n"
    "the dynamic linker finds them (DT_RPATH, DT_RUNPATH, /etc/ld.so.conf, the\n"
    "system directories; LD_LIBRARY_PATH is ignored) and read with Keel's own ELF\n"
    "reader: nothing is executed. Each library is mapped to its Debian package\n"
    "through the dpkg database (name, version, purl, source package, licence from\n"
    "a machine-readable copyright file); our own files get SHA-256 hashes, and so\n"
    "do files no package owns (property keel:origin \"unpackaged\"). A library that\n"
    "cannot be found is listed with keel:origin \"missing\". 'dependencies' is the\n"
    "graph: which file or package needs which.\n"
    "\n"
    "  BINARY...             the artefacts to describe (programs, shared or static\n"
    "                        libraries). Default: the installed layout: keel, and\n"
    "                        keeld and keel-fleetd next to it or in ../sbin, and\n"
    "                        libkeel (.so and .a) in ../lib or ../lib/<multiarch>.\n"
    "  --out FILE            write the SBOM to FILE (default: standard output)\n"
    "  --product NAME        metadata.component's name (default: Keel)\n"
    "  --product-version V   its version and that of the artefacts (default: keel's)\n"
    "\n"
    "Components and dependencies are sorted; SOURCE_DATE_EPOCH, when set, gives the\n"
    "timestamp, so two SBOMs of the same system differ only in serialNumber.\n"
    "Exit status: 0 written, 1 failed, 2 usage error or an artefact that is missing.\n";

static const char vulns_usage[] =
    "usage: keel vulns --sbom FILE --advisories DIR [--json]\n"
    "\n"
    "Matches the Debian components of a CycloneDX SBOM (keel sbom) against the OSV\n"
    "advisories in DIR (every *.json file, one advisory each; the format of\n"
    "https://ossf.github.io/osv-schema/ and of Debian's OSV feed), EN 303 645\n"
    "5.2-3. Only ecosystems \"Debian\" and \"Debian:<release>\" of the SBOM's release\n"
    "count; others are counted and ignored. A component matches by its source\n"
    "package (what Debian's advisories name) or its binary package; ECOSYSTEM\n"
    "ranges (introduced, fixed, last_affected) and listed versions are compared\n"
    "the way dpkg compares versions.\n"
    "\n"
    "For each affected component: installed version, advisory id, aliases and\n"
    "related ids, summary, severity, and the version that fixes it (or \"no fix\n"
    "yet\"). Withdrawn advisories and other ecosystems are counted as ignored.\n"
    "\n"
    "  --sbom FILE        the SBOM (at most 64 MiB)\n"
    "  --advisories DIR   the OSV advisories (each at most 4 MiB)\n"
    "  --json             the report as JSON\n"
    "\n"
    "Exit status: 0 no component affected, 1 affected components found,\n"
    "2 usage error or an SBOM or advisory that is malformed (the file is named).\n";

/* Where a file of the installed layout is: next to this program, or in ../lib. */
static int add_found(char ***paths, size_t *n, const char *path)
{
    char **p = realloc(*paths, (*n + 1) * sizeof *p);
    if (p == NULL)
        return 0;
    *paths = p;
    if ((p[*n] = strdup(path)) == NULL)
        return 0;
    (*n)++;
    return 1;
}

static int default_paths(char ***paths, size_t *n)
{
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return 0;
    self[len] = '\0';
    char *slash = strrchr(self, '/');
    if (slash == NULL)
        return 0;
    *slash = '\0';
    /* cmake --install puts keel in bin and the daemons in sbin (cmake/Install.cmake). */
    static const char *const progs[] = {"keel", "keeld", "keel-fleetd"};
    static const char *const dirs[] = {"", "/../sbin"};
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        bool found = false;
        for (size_t d = 0; d < sizeof dirs / sizeof dirs[0] && !found; d++) {
            char p[PATH_MAX];
            if (keel_snprintf(p, sizeof p, "%s%s/%s", self, dirs[d], progs[i]) != KEEL_OK)
                return 0;
            if (access(p, F_OK) != 0)
                continue;
            if (!add_found(paths, n, p))
                return 0;
            found = true;
        }
        if (!found)
            fprintf(stderr, "keel: sbom: %s not found next to keel or in ../sbin (name the artefacts to include it)\n",
                    progs[i]);
    }
    static const char *const libs[] = {"/../lib/libkeel.so*", "/../lib/*-linux-gnu*/libkeel.so*",
                                       "/../lib/libkeel.a", "/../lib/*-linux-gnu*/libkeel.a"};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        char pat[PATH_MAX];
        glob_t g;
        if (keel_snprintf(pat, sizeof pat, "%s%s", self, libs[i]) != KEEL_OK)
            return 0;
        if (glob(pat, 0, NULL, &g) != 0)
            continue;
        int ok = 1;
        for (size_t k = 0; k < g.gl_pathc && ok; k++)
            ok = add_found(paths, n, g.gl_pathv[k]);
        globfree(&g);
        if (!ok)
            return 0;
    }
    return 1;
}

static time_t sbom_time(void)
{
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    unsigned long v;
    if (sde != NULL && cli_parse_uint(sde, 0, 253402300799ul, &v))
        return (time_t)v;
    return time(NULL);
}

static void sbom_summary(json_t *doc, const char *out)
{
    size_t deb = 0, unpackaged = 0, missing = 0, product = 0, i;
    json_t *c;
    json_array_foreach(json_object_get(doc, "components"), i, c)
    {
        json_t *p;
        size_t k;
        json_array_foreach(json_object_get(c, "properties"), k, p)
        {
            const char *n = json_string_value(json_object_get(p, "name"));
            const char *v = json_string_value(json_object_get(p, "value"));
            if (n == NULL || v == NULL || strcmp(n, "keel:origin") != 0)
                continue;
            deb += strcmp(v, "dpkg") == 0;
            unpackaged += strcmp(v, "unpackaged") == 0;
            missing += strcmp(v, "missing") == 0;
            product += strcmp(v, "product") == 0;
        }
    }
    fprintf(stderr,
            "keel: sbom: %zu components (%zu of the product, %zu Debian packages, %zu unpackaged, %zu missing) "
            "written to %s\n",
            json_array_size(json_object_get(doc, "components")), product, deb, unpackaged, missing, out);
}

int cmd_sbom(int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"product", required_argument, NULL, 'p'},
                                         {"product-version", required_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *out = NULL, *product = "Keel", *pversion = KEEL_VERSION;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'p': product = optarg; break;
        case 'v': pversion = optarg; break;
        case 'h': fputs(sbom_usage, stdout); return CLI_OK;
        default: return cli_bad_option("sbom", c, argv);
        }
    }
    if (product[0] == '\0' || pversion[0] == '\0')
        return cli_usage("sbom", "--product and --product-version must not be empty");
    char **found = NULL;
    size_t n_found = 0;
    const char *const *paths = (const char *const *)(argv + optind);
    size_t n = (size_t)(argc - optind);
    if (n == 0) {
        if (!default_paths(&found, &n_found)) {
            for (size_t i = 0; i < n_found; i++)
                free(found[i]);
            free(found);
            fprintf(stderr, "keel: sbom: cannot list the installed programs\n");
            return CLI_FAILED;
        }
        if (n_found == 0) {
            free(found);
            return cli_usage("sbom", "no Keel program found next to keel; name the artefacts");
        }
        paths = (const char *const *)found;
        n = n_found;
    }
    keel_sbom_opts_t o = {.paths = paths,
                          .n_paths = n,
                          .product = product,
                          .product_version = pversion,
                          .tool_version = KEEL_VERSION,
                          .timestamp = sbom_time()};
    json_t *doc = NULL;
    keel_status_t st = keel_sbom_build(&o, &doc);
    for (size_t i = 0; i < n_found; i++)
        free(found[i]);
    free(found);
    if (st != KEEL_OK) {
        cli_fail("sbom", st);
        return st == KEEL_ERR_NOT_FOUND || st == KEEL_ERR_ARG ? CLI_USAGE : CLI_FAILED;
    }
    int rc = CLI_OK;
    if (out == NULL) {
        if (json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_SORT_KEYS) != 0 || fputc('\n', stdout) == EOF ||
            fflush(stdout) != 0) {
            fprintf(stderr, "keel: sbom: could not write the SBOM\n");
            rc = CLI_FAILED;
        }
    } else {
        char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
        size_t len = text != NULL ? strlen(text) : 0;
        if (text == NULL) {
            fprintf(stderr, "keel: sbom: out of memory\n");
            rc = CLI_FAILED;
        } else {
            text[len] = '\n'; /* json_dumps' NUL becomes the final newline: the length is known */
            st = keel_file_write_atomic(out, text, len + 1, 0644);
            if (st != KEEL_OK)
                rc = cli_fail("sbom", st) == CLI_USAGE ? CLI_USAGE : CLI_FAILED;
            else
                sbom_summary(doc, out);
        }
        free(text);
    }
    json_decref(doc);
    return rc;
}

/* The string member k of o; "" when there is none. */
static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s != NULL ? s : "";
}

static void print_finding(json_t *f, const char *prev)
{
    const char *comp = jstr(f, "component");
    if (prev == NULL || strcmp(prev, comp) != 0) {
        putchar('\n');
        for (const char *p = comp; *p != '\0'; p++) /* from the SBOM: printable ASCII only */
            putchar(*p > 0x20 && *p < 0x7f ? *p : '?');
        putchar('\n');
        cli_print_text("installed", jstr(f, "version"));
        if (strcmp(jstr(f, "source"), comp) != 0 ||
            strcmp(jstr(f, "source_version"), jstr(f, "version")) != 0) {
            char src[2 * KEEL_DPKG_FIELD_MAX + 2];
            if (keel_snprintf(src, sizeof src, "%s %s", jstr(f, "source"), jstr(f, "source_version")) ==
                KEEL_OK)
                cli_print_text("source package", src);
            keel_error_clear();
        }
        cli_print_text("purl", jstr(f, "purl"));
    }
    cli_print_text("advisory", jstr(f, "id"));
    json_t *al = json_object_get(f, "aliases"), *a;
    size_t i;
    keel_buf_t b;
    keel_buf_init(&b, 4096);
    json_array_foreach(al, i, a)
    {
        if (keel_buf_printf(&b, "%s%s", i ? ", " : "", json_string_value(a)) != KEEL_OK)
            break;
    }
    if (b.len > 0)
        cli_print_text("aliases", (const char *)b.data);
    keel_buf_reset(&b);
    json_array_foreach(json_object_get(f, "related"), i, a)
    {
        if (keel_buf_printf(&b, "%s%s", i ? ", " : "", json_string_value(a)) != KEEL_OK)
            break;
    }
    if (b.len > 0)
        cli_print_text("related", (const char *)b.data);
    keel_buf_reset(&b);
    json_array_foreach(json_object_get(f, "severity"), i, a)
    {
        if (keel_buf_printf(&b, "%s%s %s", i ? "; " : "", jstr(a, "type"), jstr(a, "score")) != KEEL_OK)
            break;
    }
    keel_error_clear();
    if (b.len > 0)
        cli_print_text("severity", (const char *)b.data);
    keel_buf_free(&b);
    if (jstr(f, "summary")[0] != '\0')
        cli_print_text("summary", jstr(f, "summary"));
    const char *fixed = json_string_value(json_object_get(f, "fixed"));
    char fix[2 * KEEL_DPKG_FIELD_MAX + 64];
    if (fixed == NULL ||
        keel_snprintf(fix, sizeof fix, "upgrade %s to %s or later", jstr(f, "source"), fixed) != KEEL_OK)
        memcpy(fix, "none available: mitigate, or drop the component", 48);
    keel_error_clear();
    cli_print_text("fixed in", fixed != NULL ? fixed : "no fix yet");
    cli_print_text("action", fix);
}

int cmd_vulns(int argc, char **argv)
{
    static const struct option opts[] = {{"sbom", required_argument, NULL, 's'},
                                         {"advisories", required_argument, NULL, 'a'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *sbom = NULL, *dir = NULL;
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case 's': sbom = optarg; break;
        case 'a': dir = optarg; break;
        case 'j': json = 1; break;
        case 'h': fputs(vulns_usage, stdout); return CLI_OK;
        default: return cli_bad_option("vulns", c, argv);
        }
    }
    if (optind != argc)
        return cli_usage("vulns", "unexpected argument '%s'", argv[optind]);
    if (sbom == NULL || dir == NULL)
        return cli_usage("vulns", "--sbom and --advisories are required");
    keel_buf_t b;
    keel_status_t st = keel_file_read(sbom, KEEL_VULNS_SBOM_MAX, &b);
    json_t *doc = NULL, *report = NULL;
    if (st == KEEL_OK) {
        json_error_t err;
        doc = json_loadb((const char *)b.data, b.len, JSON_REJECT_DUPLICATES, &err);
        if (doc == NULL)
            st = keel_errorf(KEEL_ERR_FORMAT, "SBOM %s: not JSON (line %d: %s)", sbom, err.line, err.text);
    } else if (st == KEEL_ERR_TOO_LARGE) {
        st = keel_errorf(st, "SBOM %s: larger than %u bytes", sbom, KEEL_VULNS_SBOM_MAX);
    }
    keel_buf_free(&b);
    if (st == KEEL_OK && (st = keel_vulns_match(doc, dir, &report)) == KEEL_ERR_FORMAT &&
        strncmp(keel_error_message(), "the SBOM", 8) == 0) {
        char msg[KEEL_ERROR_MAX];
        if (keel_strlcpy(msg, keel_error_message(), sizeof msg) != KEEL_OK)
            msg[0] = '\0';
        st = keel_errorf(st, "%s: %s", sbom, msg); /* name the file */
    }
    json_decref(doc);
    if (st != KEEL_OK) {
        cli_fail("vulns", st);
        return st == KEEL_ERR_NOMEM || st == KEEL_ERR_IO ? CLI_FAILED : CLI_USAGE;
    }
    json_t *findings = json_object_get(report, "findings");
    int rc = json_array_size(findings) > 0 ? CLI_FAILED : CLI_OK;
    if (json) {
        if (cli_print_json(report) != CLI_OK)
            rc = CLI_USAGE;
    } else {
        json_int_t adv = json_integer_value(json_object_get(report, "advisories"));
        json_int_t ign = json_integer_value(json_object_get(report, "ignored"));
        json_int_t checked = json_integer_value(json_object_get(report, "checked"));
        json_int_t total = json_integer_value(json_object_get(report, "sbom_components"));
        printf("keel vulns: %lld advisories read (%lld ignored: other ecosystems or withdrawn); %lld of %lld components have a "
               "Debian purl and were checked\n",
               (long long)adv, (long long)ign, (long long)checked, (long long)total);
        if (rc == CLI_OK) {
            printf("no component is affected by these advisories\n");
        } else {
            printf("AFFECTED: %lld component(s), %zu finding(s)\n",
                   (long long)json_integer_value(json_object_get(report, "affected_components")),
                   json_array_size(findings));
            json_t *f;
            size_t i;
            const char *prev = NULL;
            json_array_foreach(findings, i, f)
            {
                print_finding(f, prev);
                prev = jstr(f, "component");
            }
        }
        if (checked < total)
            printf("\n%lld components without a Debian purl (our own files, unpackaged or missing libraries) "
                   "were not checked: follow their vendors' advisories.\n",
                   (long long)(total - checked));
        if (fflush(stdout) != 0)
            rc = CLI_USAGE;
    }
    json_decref(report);
    return rc;
}

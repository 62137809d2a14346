/*
 * supply (keel sbom, keel vulns): the ELF reader on real binaries, on ELF
 * objects the test builds (32/64-bit, both byte orders) and on truncated and
 * hostile ones; the dpkg status parser on a fixture; Debian version order;
 * OSV range evaluation; and the SBOM builder against a fixture dpkg database.
 */
#include "testutil.h"

#include "keel/crypto.h"
#include "keel/supply.h"

#include <elf.h>
#include <sys/stat.h>

/* ---- a tiny ELF object, built field by field ---- */

typedef struct {
    uint8_t b[2048];
    size_t len;
    unsigned bits;
    bool be;
    size_t phoff_at, phnum_at, phentsize_at; /* offsets of header fields */
    size_t ph_at;                            /* the program headers */
    size_t dyn_at;                           /* the dynamic section */
    size_t interp_at, str_at;
} elf_img_t;

static void put(elf_img_t *e, size_t off, uint64_t v, unsigned width)
{
    for (unsigned i = 0; i < width; i++) {
        unsigned shift = 8 * (e->be ? width - 1 - i : i);
        e->b[off + i] = (uint8_t)(v >> shift);
    }
}

#define VADDR 0x10000u
static const char strtab[] = "\0liba.so.1\0libb.so.2\0libself.so\0$ORIGIN/../lib";
#define STRSZ sizeof strtab /* includes the final NUL */

/* ET_DYN with PT_LOAD (all of it), PT_INTERP, PT_DYNAMIC: NEEDED x2, SONAME, RUNPATH, STRTAB, STRSZ, NULL. */
static void make_elf(elf_img_t *e, unsigned bits, bool be)
{
    memset(e, 0, sizeof *e);
    e->bits = bits;
    e->be = be;
    bool is64 = bits == 64;
    unsigned w = is64 ? 8 : 4, ehsize = is64 ? 64 : 52, phsize = is64 ? 56 : 32;
    memcpy(e->b, ELFMAG, SELFMAG);
    e->b[EI_CLASS] = is64 ? ELFCLASS64 : ELFCLASS32;
    e->b[EI_DATA] = be ? ELFDATA2MSB : ELFDATA2LSB;
    e->b[EI_VERSION] = EV_CURRENT;
    put(e, 16, ET_DYN, 2);
    put(e, 18, is64 ? EM_X86_64 : EM_386, 2);
    put(e, 20, EV_CURRENT, 4);
    e->phoff_at = is64 ? 32 : 28;
    e->phentsize_at = is64 ? 54 : 42;
    e->phnum_at = is64 ? 56 : 44;
    put(e, e->phoff_at, ehsize, w);
    put(e, is64 ? 52 : 40, ehsize, 2);
    put(e, e->phentsize_at, phsize, 2);
    put(e, e->phnum_at, 3, 2);
    e->ph_at = ehsize;
    e->interp_at = ehsize + 3 * phsize;
    static const char interp[] = "/lib/ld-test.so.1";
    memcpy(e->b + e->interp_at, interp, sizeof interp);
    e->str_at = (e->interp_at + sizeof interp + 15) & ~(size_t)15;
    memcpy(e->b + e->str_at, strtab, STRSZ);
    e->dyn_at = (e->str_at + STRSZ + 15) & ~(size_t)15;
    const uint64_t dyn[][2] = {{DT_NEEDED, 1},          {DT_NEEDED, 11},   {DT_SONAME, 21}, {DT_RUNPATH, 32},
                               {DT_STRTAB, VADDR + e->str_at}, {DT_STRSZ, STRSZ}, {DT_NULL, 0}};
    size_t n_dyn = sizeof dyn / sizeof dyn[0];
    for (size_t i = 0; i < n_dyn; i++) {
        put(e, e->dyn_at + i * 2 * w, dyn[i][0], w);
        put(e, e->dyn_at + i * 2 * w + w, dyn[i][1], w);
    }
    e->len = e->dyn_at + n_dyn * 2 * w;
    /* Program headers: type, offset, vaddr, filesz (the rest stays 0). */
    const uint64_t ph[][4] = {{PT_LOAD, 0, VADDR, e->len},
                              {PT_INTERP, e->interp_at, VADDR + e->interp_at, sizeof interp},
                              {PT_DYNAMIC, e->dyn_at, VADDR + e->dyn_at, n_dyn * 2 * w}};
    for (size_t i = 0; i < 3; i++) {
        size_t at = e->ph_at + i * phsize;
        put(e, at, ph[i][0], 4);
        put(e, at + (is64 ? 8 : 4), ph[i][1], w);
        put(e, at + (is64 ? 16 : 8), ph[i][2], w);
        put(e, at + (is64 ? 32 : 16), ph[i][3], w);
    }
}

/* The value field of dynamic entry i. */
static size_t dyn_val(const elf_img_t *e, size_t i)
{
    unsigned w = e->bits / 8;
    return e->dyn_at + i * 2 * w + w;
}

static void test_elf_built(void **state)
{
    (void)state;
    for (unsigned bits = 32; bits <= 64; bits += 32) {
        for (int be = 0; be < 2; be++) {
            elf_img_t e;
            keel_elf_info_t info;
            make_elf(&e, bits, be);
            assert_int_equal(keel_elf_parse(e.b, e.len, &info), KEEL_OK);
            assert_int_equal(info.bits, bits);
            assert_int_equal(info.big_endian, be);
            assert_int_equal(info.type, ET_DYN);
            assert_int_equal(info.n_needed, 2);
            assert_string_equal(info.needed[0], "liba.so.1");
            assert_string_equal(info.needed[1], "libb.so.2");
            assert_string_equal(info.soname, "libself.so");
            assert_string_equal(info.runpath, "$ORIGIN/../lib");
            assert_null(info.rpath);
            assert_string_equal(info.interp, "/lib/ld-test.so.1");
        }
    }
}

static void test_elf_real(void **state)
{
    (void)state;
    keel_buf_t b;
    assert_int_equal(keel_file_read("/proc/self/exe", 512u << 20, &b), KEEL_OK);
    keel_elf_info_t *info = malloc(sizeof *info);
    assert_non_null(info);
    assert_int_equal(keel_elf_parse(b.data, b.len, info), KEEL_OK);
    assert_int_equal(info->bits, sizeof(void *) * 8);
    assert_non_null(info->interp);
    bool libc = false;
    for (size_t i = 0; i < info->n_needed; i++)
        libc = libc || strcmp(info->needed[i], "libc.so.6") == 0;
    assert_true(libc);
    /* Every truncation of a real binary that cuts into its dynamic section fails cleanly. */
    for (size_t n = 0; n < 4096 && n < b.len; n += 7) {
        keel_status_t st = keel_elf_parse(b.data, n, info);
        assert_true(st == KEEL_ERR_FORMAT || st == KEEL_OK);
    }
    free(info);
    keel_buf_free(&b);
}

static void test_elf_truncated(void **state)
{
    (void)state;
    elf_img_t e;
    keel_elf_info_t info;
    for (unsigned bits = 32; bits <= 64; bits += 32) {
        make_elf(&e, bits, false);
        for (size_t n = 0; n < e.len; n++)
            assert_int_equal(keel_elf_parse(e.b, n, &info), KEEL_ERR_FORMAT);
        assert_int_equal(keel_elf_parse(e.b, e.len, &info), KEEL_OK);
    }
}

static void expect_bad(elf_img_t *e, size_t off, uint64_t v, unsigned width, keel_status_t want)
{
    elf_img_t x = *e;
    keel_elf_info_t info;
    put(&x, off, v, width);
    assert_int_equal(keel_elf_parse(x.b, x.len, &info), want);
    keel_error_clear();
}

static void test_elf_hostile(void **state)
{
    (void)state;
    elf_img_t e;
    make_elf(&e, 64, false);
    unsigned w = 8;
    expect_bad(&e, 0, 0x7f454c47, 4, KEEL_ERR_FORMAT);                      /* magic */
    expect_bad(&e, EI_CLASS, 3, 1, KEEL_ERR_FORMAT);                        /* class */
    expect_bad(&e, e.phoff_at, UINT64_MAX - 8, w, KEEL_ERR_FORMAT);         /* phoff wraps */
    expect_bad(&e, e.phnum_at, PN_XNUM, 2, KEEL_ERR_UNSUPPORTED);
    expect_bad(&e, e.phnum_at, 5000, 2, KEEL_ERR_TOO_LARGE);
    expect_bad(&e, e.phnum_at, 200, 2, KEEL_ERR_FORMAT);                    /* headers past the end */
    expect_bad(&e, e.phentsize_at, 40, 2, KEEL_ERR_FORMAT);
    expect_bad(&e, dyn_val(&e, 4), 0x99999999u, w, KEEL_ERR_FORMAT);       /* STRTAB in no segment */
    expect_bad(&e, dyn_val(&e, 5), UINT64_MAX, w, KEEL_ERR_FORMAT);         /* STRSZ huge */
    expect_bad(&e, dyn_val(&e, 5), 20, w, KEEL_ERR_FORMAT);                 /* STRSZ cuts a string */
    expect_bad(&e, dyn_val(&e, 0), STRSZ, w, KEEL_ERR_FORMAT);              /* NEEDED past STRSZ */
    expect_bad(&e, dyn_val(&e, 0), UINT64_MAX, w, KEEL_ERR_FORMAT);
    expect_bad(&e, dyn_val(&e, 0), 0, w, KEEL_ERR_FORMAT);                  /* empty name */
    expect_bad(&e, dyn_val(&e, 6) - w, DT_NEEDED, w, KEEL_ERR_FORMAT);      /* no DT_NULL */
    expect_bad(&e, e.ph_at + 56 + 32, 100, w, KEEL_ERR_FORMAT);             /* PT_INTERP size lies */
    expect_bad(&e, e.ph_at + 56 + 8, UINT64_MAX, w, KEEL_ERR_FORMAT);       /* PT_INTERP offset */
    expect_bad(&e, e.ph_at + 2 * 56 + 32, UINT64_MAX - 1, w, KEEL_ERR_FORMAT); /* PT_DYNAMIC size */
    expect_bad(&e, e.ph_at + 56, PT_DYNAMIC, 4, KEEL_ERR_FORMAT);           /* two PT_DYNAMIC */
    expect_bad(&e, e.ph_at + 32, 16, w, KEEL_ERR_FORMAT);                   /* PT_LOAD too short for STRTAB */
    expect_bad(&e, e.interp_at + 17, 'x', 1, KEEL_ERR_FORMAT);              /* interp not terminated */

    /* Every byte flipped three ways: any status, never a read outside the buffer (ASan). */
    keel_elf_info_t info;
    for (unsigned bits = 32; bits <= 64; bits += 32) {
        for (int be = 0; be < 2; be++) {
            make_elf(&e, bits, be);
            for (size_t i = 0; i < e.len; i++) {
                static const uint8_t flips[] = {0x01, 0x80, 0xff};
                for (size_t k = 0; k < sizeof flips; k++) {
                    elf_img_t x = e;
                    x.b[i] ^= flips[k];
                    /* A heap copy of exactly len bytes, so ASan sees any overread. */
                    uint8_t *copy = malloc(x.len);
                    assert_non_null(copy);
                    memcpy(copy, x.b, x.len);
                    keel_status_t st = keel_elf_parse(copy, x.len, &info);
                    if (st == KEEL_OK)
                        for (size_t q = 0; q < info.n_needed; q++)
                            assert_true(strlen(info.needed[q]) > 0);
                    free(copy);
                    keel_error_clear();
                }
            }
        }
    }
}

/* ---- dpkg status ---- */

static const char status_fixture[] =
    "Package: libfoo1\n"
    "Status: deinstall ok config-files\n"
    "Architecture: amd64\n"
    "Version: 0.9-1\n"
    "\n"
    "Package: libfoo1\n"
    "Status: install ok installed\n"
    "Priority: optional\n"
    "Architecture: i386\n"
    "Source: foo (1.0-2)\n"
    "Version: 1.0-2+b1\n"
    "Description: foo\n"
    " continued: Package: not-this\n"
    "\n"
    "Package: libfoo1\n"
    "Status: install ok installed\n"
    "Architecture: amd64\n"
    "Source: foo (1.0-2)\n"
    "Version: 1.0-2+b1\n"
    "\n"
    "Package: libbar2\n"
    "Status: install ok installed\r\n"
    "Architecture: all\n"
    "Version: 1:2.3~rc1-4\n"
    "\n"
    "Package: libbaz0\n"
    "Status: install ok installed\n"
    "Architecture: amd64\n"
    "Source: baz\n"
    "Version: 5\n";

static void test_dpkg_status(void **state)
{
    (void)state;
    keel_dpkg_pkg_t p;
    size_t n = strlen(status_fixture);
    assert_int_equal(keel_dpkg_status_find(status_fixture, n, "libfoo1", "amd64", &p), KEEL_OK);
    assert_string_equal(p.version, "1.0-2+b1");
    assert_string_equal(p.arch, "amd64");
    assert_string_equal(p.source, "foo");
    assert_string_equal(p.source_version, "1.0-2");
    assert_int_equal(keel_dpkg_status_find(status_fixture, n, "libfoo1", "i386", &p), KEEL_OK);
    assert_string_equal(p.arch, "i386");
    assert_int_equal(keel_dpkg_status_find(status_fixture, n, "libbar2", NULL, &p), KEEL_OK);
    assert_string_equal(p.version, "1:2.3~rc1-4");
    assert_string_equal(p.source, "libbar2");
    assert_string_equal(p.source_version, "1:2.3~rc1-4");
    assert_int_equal(keel_dpkg_status_find(status_fixture, n, "libbaz0", "", &p), KEEL_OK);
    assert_string_equal(p.source, "baz");
    assert_string_equal(p.source_version, "5");
    assert_int_equal(keel_dpkg_status_find(status_fixture, n, "not-this", NULL, &p), KEEL_ERR_NOT_FOUND);
    assert_int_equal(keel_dpkg_status_find(status_fixture, n, "libfoo1", "arm64", &p), KEEL_ERR_NOT_FOUND);
    /* Cut in the middle: still no read past len. */
    for (size_t k = 0; k < n; k++) {
        char *copy = malloc(k + 1);
        assert_non_null(copy);
        memcpy(copy, status_fixture, k);
        keel_status_t st = keel_dpkg_status_find(copy, k, "libbaz0", NULL, &p);
        assert_true(st == KEEL_OK || st == KEEL_ERR_NOT_FOUND || st == KEEL_ERR_FORMAT);
        free(copy);
    }
    char big[600];
    int len = snprintf(big, sizeof big, "Package: x\nStatus: install ok installed\nVersion: %0400d\n", 1);
    assert_int_equal(keel_dpkg_status_find(big, (size_t)len, "x", NULL, &p), KEEL_ERR_FORMAT);
    keel_error_clear();
}

/* ---- Debian versions ---- */

static void test_debver(void **state)
{
    (void)state;
    static const struct {
        const char *a, *b;
        int want;
    } cases[] = {
        {"1.0", "1.0", 0},           {"1.0~rc1", "1.0", -1},         {"1.0~~", "1.0~", -1},
        {"1.0", "1.0+", -1},         {"1.0a", "1.0", 1},             {"1.0a", "1.0+", -1},
        {"1:0.1", "2.0", 1},         {"0:2.0", "2.0", 0},            {"1.0-1", "1.0-1+b1", -1},
        {"1.0", "1.0-0", 0},         {"1.01", "1.1", 0},             {"1.10", "1.9", 1},
        {"2.36-9+deb12u14", "2.36-9+deb12u4", 1},                    {"3.0.11-1~deb12u2", "3.0.11-1", -1},
        {"1.2.3-1", "1.2.3-1.1", -1}, {"7.88.1-10+deb12u5", "7.88.1-10+deb12u15", -1},
        {"1.0-a", "1.0-1", 1},       {"10:1", "9:99", 1},            {"1.0.0", "1.0", 1},
        {"1.0-1~bpo", "1.0-1", -1},  {"1:1.2.13.dfsg-1", "1:1.2.13-1", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_true(keel_debver_valid(cases[i].a));
        assert_true(keel_debver_valid(cases[i].b));
        int r = keel_debver_cmp(cases[i].a, cases[i].b), s = keel_debver_cmp(cases[i].b, cases[i].a);
        int sign = r < 0 ? -1 : r > 0;
        if (sign != cases[i].want)
            fail_msg("%s vs %s: %d, want %d", cases[i].a, cases[i].b, sign, cases[i].want);
        assert_true((r < 0 && s > 0) || (r > 0 && s < 0) || (r == 0 && s == 0));
    }
    static const char *const invalid[] = {"", ":1", "a:1", "1:", "1.0-", "1 0", "abc", "1.0-1_2", "-1",
                                          "99999999999:1"};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++)
        if (keel_debver_valid(invalid[i]))
            fail_msg("'%s' taken as a version", invalid[i]);
}

/* ---- OSV ---- */

static json_t *adv(const char *affected_json)
{
    char text[2048];
    snprintf(text, sizeof text, "{\"id\":\"T-1\",\"modified\":\"2026-01-01T00:00:00Z\",\"affected\":%s}",
             affected_json);
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (j == NULL)
        fail_msg("bad test JSON: %s", err.text);
    return j;
}

static void test_osv(void **state)
{
    (void)state;
    int hit;
    const char *fixed;
    json_t *a = adv("[{\"package\":{\"ecosystem\":\"Debian:12\",\"name\":\"openssl\"},"
                    "\"ranges\":[{\"type\":\"ECOSYSTEM\",\"events\":[{\"introduced\":\"0\"},{\"fixed\":\"3.0.15-1\"}]}]}]");
    assert_int_equal(keel_osv_affects(a, "openssl", "3.0.11-1~deb12u2", "12", &hit, &fixed), KEEL_OK);
    assert_true(hit);
    assert_string_equal(fixed, "3.0.15-1");
    assert_int_equal(keel_osv_affects(a, "openssl", "3.0.15-1", "12", &hit, &fixed), KEEL_OK);
    assert_false(hit);
    assert_int_equal(keel_osv_affects(a, "openssl", "3.0.15-1~deb12u1", "12", &hit, &fixed), KEEL_OK);
    assert_true(hit); /* ~ sorts before the release */
    assert_int_equal(keel_osv_affects(a, "openssl", "1.0", "11", &hit, &fixed), KEEL_OK);
    assert_false(hit); /* another release */
    assert_int_equal(keel_osv_affects(a, "libssl3", "1.0", "12", &hit, &fixed), KEEL_OK);
    assert_false(hit);
    json_decref(a);

    a = adv("[{\"package\":{\"ecosystem\":\"Debian\",\"name\":\"x\"},\"ranges\":[{\"type\":\"ECOSYSTEM\","
            "\"events\":[{\"introduced\":\"1.0\"},{\"last_affected\":\"1.5\"},{\"introduced\":\"2.0\"},"
            "{\"fixed\":\"2.2\"}]}],\"versions\":[\"0.5\"]}]");
    static const struct {
        const char *v;
        int hit;
        const char *fixed;
    } r[] = {{"0.4", 0, NULL}, {"0.5", 1, NULL}, {"1.0", 1, NULL}, {"1.5", 1, NULL}, {"1.5.1", 0, NULL},
             {"2.1", 1, "2.2"}, {"2.2", 0, NULL}, {"3", 0, NULL}};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        assert_int_equal(keel_osv_affects(a, "x", r[i].v, "12", &hit, &fixed), KEEL_OK);
        if (hit != r[i].hit)
            fail_msg("version %s: affected %d, want %d", r[i].v, hit, r[i].hit);
        if (r[i].hit && r[i].fixed != NULL)
            assert_string_equal(fixed, r[i].fixed);
        else if (r[i].hit)
            assert_null(fixed);
    }
    json_decref(a);

    a = adv("[{\"package\":{\"ecosystem\":\"PyPI\",\"name\":\"x\"},\"ranges\":[{\"type\":\"ECOSYSTEM\","
            "\"events\":[{\"introduced\":\"0\"}]}]}]");
    assert_int_equal(keel_osv_affects(a, "x", "1.0", "12", &hit, &fixed), KEEL_OK);
    assert_false(hit);
    json_decref(a);
    static const char *const bad[] = {
        "[{\"package\":{\"ecosystem\":\"Debian\",\"name\":\"x\"},\"ranges\":[{\"type\":\"ECOSYSTEM\","
        "\"events\":[{\"introduced\":\"not a version\"}]}]}]",
        "[{\"package\":{\"ecosystem\":\"Debian\",\"name\":\"x\"},\"ranges\":[{\"type\":\"ECOSYSTEM\","
        "\"events\":[{\"introduced\":\"0\",\"fixed\":\"1\"}]}]}]",
        "[{\"package\":{\"ecosystem\":\"Debian\",\"name\":\"x\"},\"ranges\":[{\"type\":\"ECOSYSTEM\","
        "\"events\":[{\"fixed\":1}]}]}]",
        "[{\"package\":{\"ecosystem\":\"Debian\"}}]",
        "[{\"package\":{\"ecosystem\":\"Debian\",\"name\":\"y\"},\"ranges\":[{\"events\":[]}]}]",
        "[\"x\"]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        a = adv(bad[i]);
        if (keel_osv_affects(a, "x", "1.0", "12", &hit, &fixed) != KEEL_ERR_FORMAT)
            fail_msg("malformed advisory %zu accepted", i);
        keel_error_clear();
        json_decref(a);
    }
}

/* ---- the SBOM against a fixture dpkg database ---- */

static json_t *component_named(json_t *doc, const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(doc, "components"), i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0)
            return c;
    }
    return NULL;
}

static const char *prop(json_t *c, const char *name)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(c, "properties"), i, p)
    {
        if (strcmp(json_string_value(json_object_get(p, "name")), name) == 0)
            return json_string_value(json_object_get(p, "value"));
    }
    return NULL;
}

static void test_sbom_fixture(void **state)
{
    (void)state;
    char *dir = tmpdir_new();
    char info[KEEL_PATH_MAX], status[KEEL_PATH_MAX], osrel[KEEL_PATH_MAX], ldconf[KEEL_PATH_MAX], list[KEEL_PATH_MAX];
    char tiny[KEEL_PATH_MAX];
    path_in(info, dir, "info");
    path_in(status, dir, "status");
    path_in(osrel, dir, "os-release");
    path_in(ldconf, dir, "ld.so.conf");
    path_in(list, info, "libc-fixture:amd64.list");
    path_in(tiny, dir, "tiny.so");
    assert_int_equal(mkdir(info, 0755), 0);
    text_file_write(status, "");
    text_file_write(osrel, "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n");
    text_file_write(ldconf, "# nothing but the system directories\ninclude /nonexistent/*.conf\n");

    const char *paths[] = {"/proc/self/exe"};
    keel_sbom_opts_t o = {.paths = paths, .n_paths = 1, .product = "Fixture", .product_version = "9.9",
                          .tool_version = "0.0", .timestamp = 1767225600, .dpkg_dir = dir,
                          .ld_so_conf = ldconf, .os_release = osrel, .doc_dir = dir};
    json_t *doc = NULL;
    assert_int_equal(keel_sbom_build(&o, &doc), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(doc, "specVersion")), "1.5");
    assert_string_equal(json_string_value(json_object_get(json_object_get(doc, "metadata"), "timestamp")),
                        "2026-01-01T00:00:00Z");
    /* With an empty database every library is unpackaged, and hashed. */
    json_t *libc = component_named(doc, "libc.so.6");
    assert_non_null(libc);
    assert_string_equal(prop(libc, "keel:origin"), "unpackaged");
    const char *libc_path = prop(libc, "keel:file");
    assert_non_null(libc_path);
    keel_buf_t b;
    assert_int_equal(keel_file_read(libc_path, 512u << 20, &b), KEEL_OK);
    uint8_t md[KEEL_SHA256_LEN];
    char hex[2 * KEEL_SHA256_LEN + 1];
    keel_sha256(b.data, b.len, md);
    keel_buf_free(&b);
    assert_int_equal(keel_hex_encode(md, sizeof md, hex, sizeof hex), KEEL_OK);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(libc, "hashes"), 0), "content")), hex);

    /* Now the fixture database owns libc: a package with purl, source and licence. */
    char listed[KEEL_PATH_MAX + 2];
    snprintf(listed, sizeof listed, "/.\n%s\n", libc_path);
    text_file_write(list, listed);
    text_file_write(status, "Package: libc-fixture\nStatus: install ok installed\nArchitecture: amd64\n"
                            "Source: glibc-fixture (2.0-1)\nVersion: 1:2.0-1+b1\n");
    char docdir[KEEL_PATH_MAX], copyright[KEEL_PATH_MAX];
    path_in(docdir, dir, "libc-fixture");
    path_in(copyright, docdir, "copyright");
    assert_int_equal(mkdir(docdir, 0755), 0);
    text_file_write(copyright, "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
                               "Upstream-Name: x\n\nFiles: *\nCopyright: someone\nLicense: LGPL-2.1+\n");
    json_t *doc2 = NULL, *doc3 = NULL;
    assert_int_equal(keel_sbom_build(&o, &doc2), KEEL_OK);
    assert_int_equal(keel_sbom_build(&o, &doc3), KEEL_OK);
    json_t *pkg = component_named(doc2, "libc-fixture");
    assert_non_null(pkg);
    assert_string_equal(json_string_value(json_object_get(pkg, "purl")),
                        "pkg:deb/debian/libc-fixture@1:2.0-1%2Bb1?arch=amd64&distro=debian-12");
    assert_string_equal(json_string_value(json_object_get(pkg, "version")), "1:2.0-1+b1");
    assert_string_equal(prop(pkg, "keel:deb:source"), "glibc-fixture");
    assert_string_equal(prop(pkg, "keel:deb:source-version"), "2.0-1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(
                            json_array_get(json_object_get(pkg, "licenses"), 0), "license"), "name")),
                        "LGPL-2.1+");
    assert_null(component_named(doc2, "libc.so.6"));
    /* Deterministic: two runs differ in serialNumber only. */
    assert_true(json_equal(json_object_get(doc2, "components"), json_object_get(doc3, "components")));
    assert_true(json_equal(json_object_get(doc2, "dependencies"), json_object_get(doc3, "dependencies")));
    assert_string_not_equal(json_string_value(json_object_get(doc2, "serialNumber")),
                            json_string_value(json_object_get(doc3, "serialNumber")));
    /* The test program depends on the package. */
    bool dep = false;
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(doc2, "dependencies"), i, d)
    {
        const char *ref = json_string_value(json_object_get(d, "ref"));
        if (strncmp(ref, "file:", 5) != 0)
            continue;
        size_t k;
        json_t *on;
        json_array_foreach(json_object_get(d, "dependsOn"), k, on)
        {
            dep = dep || strcmp(json_string_value(on), json_string_value(json_object_get(pkg, "bom-ref"))) == 0;
        }
    }
    assert_true(dep);

    /* A library nobody has: listed as missing; a path that does not exist: an error. */
    elf_img_t e;
    make_elf(&e, sizeof(void *) * 8, false);
    assert_int_equal(keel_file_write_atomic(tiny, e.b, e.len, 0644), KEEL_OK);
    const char *tiny_paths[] = {tiny};
    o.paths = tiny_paths;
    json_t *doc4 = NULL;
    assert_int_equal(keel_sbom_build(&o, &doc4), KEEL_OK);
    json_t *miss = component_named(doc4, "liba.so.1");
    assert_non_null(miss);
    assert_string_equal(prop(miss, "keel:origin"), "missing");
    assert_null(json_object_get(miss, "hashes"));
    const char *nowhere[] = {"/nonexistent/keeld"};
    o.paths = nowhere;
    json_t *doc5 = NULL;
    assert_int_equal(keel_sbom_build(&o, &doc5), KEEL_ERR_NOT_FOUND);
    assert_null(doc5);
    keel_error_clear();

    json_decref(doc);
    json_decref(doc2);
    json_decref(doc3);
    json_decref(doc4);
    tmpdir_free(dir);
}

int main(void)
{
    assert_int_equal(keel_crypto_init(), KEEL_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elf_built),   cmocka_unit_test(test_elf_real), cmocka_unit_test(test_elf_truncated),
        cmocka_unit_test(test_elf_hostile), cmocka_unit_test(test_dpkg_status), cmocka_unit_test(test_debver),
        cmocka_unit_test(test_osv),         cmocka_unit_test(test_sbom_fixture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

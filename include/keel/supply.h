/*
 * keel/supply.h - the supply chain of a Keel product (EN 303 645 5.2-3,
 * 5.5-2; the CRA's SBOM): what a binary links (a strict ELF reader), which
 * Debian package each library comes from (the dpkg database), a CycloneDX
 * 1.5 SBOM of it all, Debian version order, and OSV advisories matched
 * against an SBOM. Not on the device: for release engineers and labs.
 */
#ifndef KEEL_SUPPLY_H
#define KEEL_SUPPLY_H

#include "keel/base.h"

#include <jansson.h>
#include <time.h>

/* ---- ELF: the dynamic section, as the dynamic linker reads it ---- */

#define KEEL_ELF_NEEDED_MAX 256u  /* DT_NEEDED entries of one object */
#define KEEL_ELF_PHNUM_MAX 4096u  /* program headers of one object */
#define KEEL_ELF_DYN_MAX 65536u   /* entries of the dynamic section */
#define KEEL_ELF_NAME_MAX 4096u   /* one string of the dynamic string table */

typedef struct {
    unsigned bits;      /* 32 or 64 */
    bool big_endian;
    uint16_t type;      /* e_type: ET_EXEC, ET_DYN, ... */
    uint16_t machine;   /* e_machine */
    /* The strings below point into the caller's buffer (valid while it is). */
    const char *interp; /* PT_INTERP, or NULL */
    const char *soname; /* DT_SONAME, or NULL */
    const char *rpath;  /* DT_RPATH, or NULL */
    const char *runpath; /* DT_RUNPATH, or NULL */
    size_t n_needed;
    const char *needed[KEEL_ELF_NEEDED_MAX]; /* DT_NEEDED, in file order */
} keel_elf_info_t;

/*
 * Reads the ELF header, the program headers, PT_INTERP and PT_DYNAMIC of the
 * n bytes at p (a whole file), the way ld.so does: no section headers. Every
 * offset, size and string is checked against the buffer. KEEL_ERR_FORMAT for
 * anything that is not a well-formed ELF32/ELF64 object (or lies about its
 * tables), KEEL_ERR_TOO_LARGE past the caps above. A static object has no
 * dynamic section and n_needed 0.
 */
keel_status_t keel_elf_parse(const uint8_t *p, size_t n, keel_elf_info_t *out) KEEL_MUST_CHECK;

/* ---- dpkg ---- */

#define KEEL_DPKG_FIELD_MAX 256u /* a package name, version or architecture */

typedef struct {
    char name[KEEL_DPKG_FIELD_MAX];
    char arch[KEEL_DPKG_FIELD_MAX];
    char version[KEEL_DPKG_FIELD_MAX];
    char source[KEEL_DPKG_FIELD_MAX];         /* the source package (name when none is given) */
    char source_version[KEEL_DPKG_FIELD_MAX]; /* its version (version when none is given) */
} keel_dpkg_pkg_t;

/*
 * Finds the installed package `name` (of architecture `arch`, or any when
 * arch is NULL or "") in the text of a dpkg status file. Only stanzas whose
 * Status is "... installed" count. KEEL_ERR_NOT_FOUND when there is none,
 * KEEL_ERR_FORMAT for a field that does not fit or a stanza without Version.
 */
keel_status_t keel_dpkg_status_find(const char *text, size_t len, const char *name, const char *arch,
                                    keel_dpkg_pkg_t *out) KEEL_MUST_CHECK;

/* ---- Debian versions ---- */

#define KEEL_DEBVER_MAX 256u
/* Whether v is a version dpkg accepts: [epoch:]upstream[-revision], each part
 * of its allowed characters, at most KEEL_DEBVER_MAX - 1 bytes. */
bool keel_debver_valid(const char *v);
/* <0, 0, >0 as dpkg --compare-versions a lt/eq/gt b (epoch, upstream,
 * revision; '~' before anything, even the end). Both must be valid. */
int keel_debver_cmp(const char *a, const char *b);

/* ---- SBOM ---- */

#define KEEL_SBOM_FILE_MAX (512u << 20)   /* one ELF file read whole */
#define KEEL_SBOM_OBJECTS_MAX 2048u       /* files and packages in one SBOM */

typedef struct {
    const char *const *paths; /* our artefacts: programs, libraries (ELF or any file) */
    size_t n_paths;
    const char *product;         /* metadata.component name ("Keel") */
    const char *product_version; /* its version, and that of our artefacts */
    const char *tool_version;    /* keel's version (metadata.tools) */
    time_t timestamp;            /* metadata.timestamp */
    /* Sources of truth; NULL for the system's (tests point them at fixtures). */
    const char *dpkg_dir;   /* /var/lib/dpkg */
    const char *ld_so_conf; /* /etc/ld.so.conf */
    const char *os_release; /* /etc/os-release */
    const char *doc_dir;    /* /usr/share/doc (machine-readable copyright files) */
} keel_sbom_opts_t;

/*
 * Builds a CycloneDX 1.5 SBOM of the given artefacts and every shared library
 * they need (recursively, resolved as ld.so would: DT_RPATH, DT_RUNPATH,
 * the ld.so.conf directories, the system directories), each library mapped to
 * its Debian package. Components and dependencies are sorted by bom-ref.
 * KEEL_ERR_NOT_FOUND / KEEL_ERR_FORMAT for a given path that is missing or
 * not readable as a file; a library that cannot be found is listed with the
 * property keel:missing rather than failing.
 */
keel_status_t keel_sbom_build(const keel_sbom_opts_t *opts, json_t **out) KEEL_MUST_CHECK;

/* ---- vulnerabilities (OSV advisories against an SBOM) ---- */

#define KEEL_OSV_FILE_MAX (4u << 20)    /* one advisory file */
#define KEEL_OSV_FILES_MAX 200000u      /* advisory files in one directory */
#define KEEL_VULNS_SBOM_MAX (64u << 20) /* the SBOM read by keel vulns */

/*
 * Matches every Debian component of the SBOM (a parsed CycloneDX document)
 * against every *.json OSV advisory in adv_dir. Advisories of another
 * ecosystem (or of another Debian release) are counted and skipped.
 * *report: {"sbom_components", "checked", "unchecked", "advisories",
 * "ignored", "findings": [{component, version, purl, source, source_version,
 * id, aliases, summary, severity, fixed, ...}]} sorted by component then id.
 * KEEL_ERR_FORMAT (the message names the file) for an advisory or SBOM of a
 * shape it does not know, KEEL_ERR_TOO_LARGE for an oversized one.
 */
keel_status_t keel_vulns_match(json_t *sbom, const char *adv_dir, json_t **report) KEEL_MUST_CHECK;

/*
 * Whether `version` of Debian package `name` (release `major`, e.g. "12") is
 * affected by the OSV advisory adv: 1 yes (*fixed: the fixed version, NULL for
 * none yet; points into adv), 0 no. KEEL_ERR_FORMAT for an advisory whose
 * affected entries are malformed. Exposed for the unit tests.
 */
keel_status_t keel_osv_affects(json_t *adv, const char *name, const char *version, const char *major,
                               int *affected, const char **fixed) KEEL_MUST_CHECK;

#endif

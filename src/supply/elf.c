/*
 * A strict ELF reader for the SBOM: the ELF header, the program headers,
 * PT_INTERP and PT_DYNAMIC, as the dynamic linker reads them (section
 * headers are not needed to load a program, and are trusted by nothing here).
 * The buffer comes from a file anyone may have put there: every offset and
 * size is checked before use, with overflow-safe arithmetic.
 */
#include "keel/supply.h"

#include <elf.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    size_t n;
    bool be;
    bool is64;
} elf_t;

static uint64_t get(const elf_t *e, size_t off, unsigned width)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < width; i++) {
        unsigned b = e->be ? i : width - 1 - i;
        v = (v << 8) | e->p[off + b];
    }
    return v;
}

/* [off, off + len) lies inside the buffer. */
static bool in_bounds(const elf_t *e, uint64_t off, uint64_t len)
{
    return off <= e->n && len <= e->n - off;
}

typedef struct {
    uint32_t type;
    uint64_t offset, vaddr, filesz;
} phdr_t;

static phdr_t read_phdr(const elf_t *e, size_t at)
{
    phdr_t h;
    h.type = (uint32_t)get(e, at, 4);
    if (e->is64) {
        h.offset = get(e, at + 8, 8);
        h.vaddr = get(e, at + 16, 8);
        h.filesz = get(e, at + 32, 8);
    } else {
        h.offset = get(e, at + 4, 4);
        h.vaddr = get(e, at + 8, 4);
        h.filesz = get(e, at + 16, 4);
    }
    return h;
}

/* A NUL-terminated string of at most KEEL_ELF_NAME_MAX bytes at index idx of the table [tab, tab + tabsz). */
static const char *string_at(const elf_t *e, uint64_t tab, uint64_t tabsz, uint64_t idx)
{
    if (idx >= tabsz)
        return NULL;
    const char *s = (const char *)e->p + tab + idx;
    uint64_t room = tabsz - idx;
    if (room > KEEL_ELF_NAME_MAX)
        room = KEEL_ELF_NAME_MAX;
    return memchr(s, '\0', (size_t)room) != NULL ? s : NULL;
}

static keel_status_t bad(const char *what)
{
    return keel_errorf(KEEL_ERR_FORMAT, "not a well-formed ELF object: %s", what);
}

keel_status_t keel_elf_parse(const uint8_t *p, size_t n, keel_elf_info_t *out)
{
    if (p == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keel_elf_parse: NULL argument");
    memset(out, 0, sizeof *out);
    if (n < EI_NIDENT || memcmp(p, ELFMAG, SELFMAG) != 0)
        return bad("no ELF magic");
    if (p[EI_CLASS] != ELFCLASS32 && p[EI_CLASS] != ELFCLASS64)
        return bad("unknown class");
    if (p[EI_DATA] != ELFDATA2LSB && p[EI_DATA] != ELFDATA2MSB)
        return bad("unknown byte order");
    if (p[EI_VERSION] != EV_CURRENT)
        return bad("unknown version");
    elf_t e = {.p = p, .n = n, .be = p[EI_DATA] == ELFDATA2MSB, .is64 = p[EI_CLASS] == ELFCLASS64};
    size_t ehsize = e.is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
    if (n < ehsize)
        return bad("truncated header");
    out->bits = e.is64 ? 64 : 32;
    out->big_endian = e.be;
    out->type = (uint16_t)get(&e, 16, 2);
    out->machine = (uint16_t)get(&e, 18, 2);
    if (get(&e, 20, 4) != EV_CURRENT)
        return bad("unknown e_version");
    uint64_t phoff = e.is64 ? get(&e, 32, 8) : get(&e, 28, 4);
    unsigned phentsize = (unsigned)get(&e, e.is64 ? 54 : 42, 2);
    unsigned phnum = (unsigned)get(&e, e.is64 ? 56 : 44, 2);
    if (phnum == 0)
        return KEEL_OK; /* a relocatable object or a core file: nothing to load */
    if (phnum == PN_XNUM)
        return keel_errorf(KEEL_ERR_UNSUPPORTED, "ELF object with PN_XNUM program headers");
    if (phnum > KEEL_ELF_PHNUM_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "ELF object with %u program headers", phnum);
    if (phentsize != (e.is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr)))
        return bad("program header size");
    if (!in_bounds(&e, phoff, (uint64_t)phnum * phentsize))
        return bad("program headers outside the file");

    phdr_t dyn = {0};
    bool have_dyn = false;
    for (unsigned i = 0; i < phnum; i++) {
        phdr_t h = read_phdr(&e, (size_t)phoff + (size_t)i * phentsize);
        if (h.type == PT_INTERP) {
            if (out->interp != NULL)
                return bad("two PT_INTERP");
            if (h.filesz < 2 || !in_bounds(&e, h.offset, h.filesz))
                return bad("PT_INTERP outside the file");
            out->interp = string_at(&e, h.offset, h.filesz, 0);
            if (out->interp == NULL || strlen(out->interp) != h.filesz - 1)
                return bad("PT_INTERP is no string");
        } else if (h.type == PT_DYNAMIC) {
            if (have_dyn)
                return bad("two PT_DYNAMIC");
            if (!in_bounds(&e, h.offset, h.filesz))
                return bad("PT_DYNAMIC outside the file");
            dyn = h;
            have_dyn = true;
        }
    }
    if (!have_dyn)
        return KEEL_OK;

    /* First pass: where the string table is. */
    unsigned dsize = e.is64 ? 16 : 8, w = e.is64 ? 8 : 4;
    uint64_t count = dyn.filesz / dsize;
    if (count > KEEL_ELF_DYN_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "ELF dynamic section of %llu entries", (unsigned long long)count);
    uint64_t strtab = 0, strsz = 0;
    bool have_strtab = false, have_strsz = false, ended = false;
    for (uint64_t i = 0; i < count && !ended; i++) {
        size_t at = (size_t)(dyn.offset + i * dsize);
        uint64_t tag = get(&e, at, w), val = get(&e, at + w, w);
        if (tag == DT_NULL)
            ended = true;
        else if (tag == DT_STRTAB)
            strtab = val, have_strtab = true;
        else if (tag == DT_STRSZ)
            strsz = val, have_strsz = true;
    }
    if (!ended)
        return bad("dynamic section without DT_NULL");
    if (!have_strtab || !have_strsz)
        return bad("dynamic section without DT_STRTAB and DT_STRSZ");

    /* DT_STRTAB is an address: the file offset comes from the PT_LOAD that holds it. */
    uint64_t stroff = 0;
    bool mapped = false;
    for (unsigned i = 0; i < phnum && !mapped; i++) {
        phdr_t h = read_phdr(&e, (size_t)phoff + (size_t)i * phentsize);
        if (h.type != PT_LOAD || strtab < h.vaddr || strtab - h.vaddr >= h.filesz)
            continue;
        uint64_t rel = strtab - h.vaddr;
        if (strsz > h.filesz - rel || h.offset > UINT64_MAX - rel)
            return bad("string table runs past its segment");
        stroff = h.offset + rel;
        mapped = true;
    }
    if (!mapped)
        return bad("string table in no loaded segment");
    if (!in_bounds(&e, stroff, strsz))
        return bad("string table outside the file");

    for (uint64_t i = 0; i < count; i++) {
        size_t at = (size_t)(dyn.offset + i * dsize);
        uint64_t tag = get(&e, at, w), val = get(&e, at + w, w);
        if (tag == DT_NULL)
            break;
        const char **slot = NULL;
        if (tag == DT_NEEDED) {
            if (out->n_needed == KEEL_ELF_NEEDED_MAX)
                return keel_errorf(KEEL_ERR_TOO_LARGE, "ELF object needs more than %u libraries",
                                   KEEL_ELF_NEEDED_MAX);
            slot = &out->needed[out->n_needed++];
        } else if (tag == DT_SONAME) {
            slot = &out->soname;
        } else if (tag == DT_RPATH) {
            slot = &out->rpath;
        } else if (tag == DT_RUNPATH) {
            slot = &out->runpath;
        } else {
            continue;
        }
        if (*slot != NULL)
            return bad("a dynamic entry given twice");
        *slot = string_at(&e, stroff, strsz, val);
        if (*slot == NULL || (*slot)[0] == '\0')
            return bad("a dynamic string outside the string table");
    }
    return KEEL_OK;
}

/*
 * Fuzz target: the ELF reader of keel sbom (src/supply/elf.c), which reads
 * any file a release engineer names and every library the dynamic linker
 * would load. What must hold: never a read outside the buffer (ASan), and a
 * parse that succeeds gives names that lie inside the buffer, are
 * NUL-terminated and not empty, no more than the cap of them.
 * Seeds: tiny ELF objects (32/64-bit, both byte orders) that the build
 * writes with elf_seeds.py.
 */
#include "fuzz.h"

#include "keel/supply.h"

#include <string.h>

static void inside(const uint8_t *data, size_t size, const char *s)
{
    if (s == NULL)
        return;
    fuzz_must((const uint8_t *)s >= data && (const uint8_t *)s < data + size, "a name outside the buffer");
    size_t room = (size_t)(data + size - (const uint8_t *)s);
    fuzz_must(memchr(s, '\0', room) != NULL, "a name without its NUL");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static keel_elf_info_t info;
    /* A copy of exactly size bytes: ASan sees any read past the end. */
    uint8_t *copy = malloc(size ? size : 1);
    fuzz_must(copy != NULL, "out of memory");
    memcpy(copy, data, size);
    keel_status_t st = keel_elf_parse(copy, size, &info);
    if (st == KEEL_OK) {
        fuzz_must(info.bits == 32 || info.bits == 64, "a class that is neither 32 nor 64");
        fuzz_must(info.n_needed <= KEEL_ELF_NEEDED_MAX, "more names than the cap");
        for (size_t i = 0; i < info.n_needed; i++) {
            inside(copy, size, info.needed[i]);
            fuzz_must(info.needed[i][0] != '\0', "an empty DT_NEEDED");
        }
        inside(copy, size, info.interp);
        inside(copy, size, info.soname);
        inside(copy, size, info.rpath);
        inside(copy, size, info.runpath);
    } else {
        fuzz_must(st == KEEL_ERR_FORMAT || st == KEEL_ERR_TOO_LARGE || st == KEEL_ERR_UNSUPPORTED,
                  "an unexpected status");
    }
    free(copy);
    keel_error_clear();
    return 0;
}

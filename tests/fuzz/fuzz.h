/* The libFuzzer entry points every target defines. */
#ifndef KEEL_FUZZ_H
#define KEEL_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of a target: when it does not hold, say which (and in which
 * target), then abort, so libFuzzer keeps the input. */
static inline void fuzz_must_(int ok, const char *file, const char *what)
{
    if (!ok) {
        fprintf(stderr, "%s: %s\n", file, what);
        abort();
    }
}
#define fuzz_must(ok, what) fuzz_must_((ok), __FILE__, (what))
#endif

/* The libFuzzer entry points every target defines. */
#ifndef KEEL_FUZZ_H
#define KEEL_FUZZ_H
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#endif

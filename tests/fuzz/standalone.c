/*
 * A driver for the fuzz targets when libFuzzer is not there (gcc builds,
 * `make check`): replays every file given (or every file in a given
 * directory), then, with --mutate N, N random mutations of each (bit flips,
 * truncation, byte insertion, splicing), from a fixed seed so a failure
 * reproduces. `make fuzz` builds the same targets with -fsanitize=fuzzer.
 */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define INPUT_MAX (1u << 20)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

typedef struct {
    uint8_t *data;
    size_t len;
} input_t;

static input_t inputs[4096];
static size_t n_inputs;

static void load(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "fuzz: %s: cannot stat\n", path);
        exit(2);
    }
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char child[4096];
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            load(child);
        }
        if (d != NULL)
            closedir(d);
        return;
    }
    if (n_inputs == sizeof inputs / sizeof inputs[0] || sb.st_size > INPUT_MAX)
        return;
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc((size_t)sb.st_size + 1);
    if (f == NULL || buf == NULL || fread(buf, 1, (size_t)sb.st_size, f) != (size_t)sb.st_size) {
        fprintf(stderr, "fuzz: %s: cannot read\n", path);
        exit(2);
    }
    fclose(f);
    inputs[n_inputs].data = buf;
    inputs[n_inputs].len = (size_t)sb.st_size;
    n_inputs++;
}

static size_t mutate(const input_t *in, uint8_t *out, size_t cap)
{
    size_t len = in->len < cap ? in->len : cap;
    memcpy(out, in->data, len);
    int rounds = 1 + (int)(next() % 8);
    for (int r = 0; r < rounds; r++) {
        switch (next() % 5) {
        case 0: /* flip a bit */
            if (len > 0)
                out[next() % len] ^= (uint8_t)(1u << (next() % 8));
            break;
        case 1: /* truncate */
            if (len > 0)
                len = next() % len;
            break;
        case 2: /* insert a byte (often a separator) */
            if (len + 1 < cap) {
                size_t at = len ? next() % len : 0;
                memmove(out + at + 1, out + at, len - at);
                static const uint8_t picks[] = {',', '\n', '\r', '\0', '"', '-', 0xff, 'a'};
                out[at] = picks[next() % sizeof picks];
                len++;
            }
            break;
        case 3: /* splice another input's tail */
            if (n_inputs > 1) {
                const input_t *o = &inputs[next() % n_inputs];
                size_t at = len ? next() % len : 0, from = o->len ? next() % o->len : 0;
                size_t take = o->len - from;
                if (at + take > cap)
                    take = cap - at;
                memcpy(out + at, o->data + from, take);
                len = at + take;
            }
            break;
        default: /* repeat a chunk */
            if (len > 0 && len * 2 < cap) {
                memcpy(out + len, out, len);
                len *= 2;
            }
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    unsigned long mutations = 0;
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mutate") == 0 && i + 1 < argc)
            mutations = strtoul(argv[++i], NULL, 10);
        else
            load(argv[i]);
    }
    if (n_inputs == 0) {
        fprintf(stderr, "usage: %s [--mutate N] FILE|DIR...\n", argv[0]);
        return 2;
    }
    uint8_t *buf = malloc(INPUT_MAX * 2);
    if (buf == NULL)
        return 2;
    unsigned long runs = 0;
    for (size_t i = 0; i < n_inputs; i++, runs++)
        LLVMFuzzerTestOneInput(inputs[i].data, inputs[i].len);
    for (unsigned long m = 0; m < mutations; m++)
        for (size_t i = 0; i < n_inputs; i++, runs++)
            LLVMFuzzerTestOneInput(buf, mutate(&inputs[i], buf, INPUT_MAX * 2));
    printf("fuzz: %lu inputs run, no crash\n", runs);
    for (size_t i = 0; i < n_inputs; i++)
        free(inputs[i].data);
    free(buf);
    return 0;
}

/*
 * Fuzz target: a batch's labels.csv as the audit reads it (outside data: the
 * file comes from whoever hands the batch to an assessor). Any input must give
 * a report or a clean error, never a crash, and never a password in the report.
 */
#include "fuzz.h"

#include "keel/factory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char batch[KEEL_PATH_MAX], labels[KEEL_PATH_MAX + 16], common[KEEL_PATH_MAX + 16];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(batch, sizeof batch, "%s/keel-fuzz-labels-XXXXXX", base);
    if (mkdtemp(batch) == NULL || keel_crypto_init() != KEEL_OK)
        abort();
    snprintf(labels, sizeof labels, "%s/%s", batch, KEEL_BATCH_LABELS);
    snprintf(common, sizeof common, "%s/common.txt", batch);
    static const char words[] = "123456\npassword\nadmin\n";
    if (keel_file_write_atomic(common, words, strlen(words), 0600) != KEEL_OK)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (keel_file_write_atomic(labels, data, size, 0600) != KEEL_OK)
        abort();
    keel_audit_opts_t o = {.out = batch, .common_list = common, .verify_hashes = 0};
    json_t *r = NULL;
    unsigned n = 0;
    if (keel_factory_audit(&o, &r, &n) == KEEL_OK) {
        if (r == NULL || json_object_get(r, "findings") == NULL)
            abort();
        json_decref(r);
    }
    return 0;
}

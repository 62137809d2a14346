/*
 * Fuzz target: the ICS and IXIT documents `keel assess` reads
 * (src/assess/ixit.c). They come from the manufacturer, not from the lab,
 * so they are checked strictly. The first byte picks the document (bit 0:
 * ICS or IXIT) and the flag (bit 1: KEEL_ASSESS_STRICT); the rest is parsed
 * as JSON the way keel_assess_*_load does. What must hold: a document is
 * taken or refused with a message, never a crash; a taken one gives an
 * array of placeholders, empty under KEEL_ASSESS_STRICT; a refused one
 * gives none. A personal-data declaration named by path is read from an
 * empty directory (one outside it is not followed: the fuzzer must not read
 * the machine's files or block on a FIFO).
 */
#include "fuzz.h"

#include "keel/assess.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static void cleanup(void)
{
    (void)rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 32)
        tmp = "/tmp";
    snprintf(dir, sizeof dir, "%s/keel-fuzz-XXXXXX", tmp);
    if (mkdtemp(dir) == NULL)
        abort();
    atexit(cleanup);
    return 0;
}

static void must(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int is_ics = data[0] & 1;
    unsigned flags = (data[0] & 2) ? KEEL_ASSESS_STRICT : 0;
    json_t *doc = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
    if (doc == NULL)
        return 0;
    const char *decl = json_string_value(json_object_get(json_object_get(doc, "personal_data"), "declaration"));
    if (decl != NULL && (decl[0] == '/' || strstr(decl, "..") != NULL)) {
        json_decref(doc);
        return 0;
    }
    json_t *ph = NULL;
    keel_status_t st = is_ics ? keel_assess_ics_check(doc, flags, &ph) : keel_assess_ixit_check(doc, dir, flags, &ph);
    if (st == KEEL_OK) {
        must(json_is_array(ph));
        if (flags & KEEL_ASSESS_STRICT)
            must(json_array_size(ph) == 0);
        size_t i;
        json_t *e;
        json_array_foreach(ph, i, e) {
            must(json_is_string(json_object_get(e, "path")) && json_is_string(json_object_get(e, "what")));
        }
        json_decref(ph);
    } else {
        must(ph == NULL && keel_error_message()[0] != '\0');
    }
    /* checking must not change the document: a second check agrees */
    json_t *ph2 = NULL;
    keel_status_t again =
        is_ics ? keel_assess_ics_check(doc, flags, &ph2) : keel_assess_ixit_check(doc, dir, flags, &ph2);
    must(again == st);
    json_decref(ph2);
    json_decref(doc);
    keel_error_clear();
    return 0;
}

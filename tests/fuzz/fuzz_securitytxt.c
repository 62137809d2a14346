/*
 * Fuzz target: the documents the publication checks of `keel assess` read
 * from a device's web server (src/assess/publication.c): a security.txt
 * (the RFC 9116 parser, with its OpenPGP frame, RFC 3339 dates and URIs), a
 * disclosure policy, and the page that states the end of the support period
 * (the date matcher). The parsers are static; they are reached through
 * keel_assess_publication with the document in a file, the way the lab's
 * IXIT can name one, so nothing in the library is opened up for the fuzzer
 * and the whole judgement (findings, the observation) is exercised.
 *
 * The first byte picks the document: '0' (mod 3 == 0) a security.txt, '1' a
 * policy, '2' a support page whose end date is the next 10 bytes
 * ("2031-12-31"; anything that is not a real date must be refused with
 * KEEL_ERR_ARG). What must hold: any document gives a document back
 * (KEEL_OK, unit "ran"), never a crash, and the observation dumps as JSON.
 */
#define _GNU_SOURCE /* memfd_create */
#include "fuzz.h"

#include "keel/assess_update.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NOW ((time_t)1767225600) /* 2026-01-01T00:00:00Z */

/* The document lives in a memory file the library opens by its /proc path:
 * no file on disk, nothing left behind when the fuzzer stops on a finding. */
static int mfd = -1;
static char path[64];

static void must(int ok)
{
    if (!ok)
        abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    mfd = memfd_create("keel-fuzz-doc", MFD_CLOEXEC);
    must(mfd >= 0);
    snprintf(path, sizeof path, "/proc/self/fd/%d", mfd);
    return 0;
}

static void put_file(const uint8_t *p, size_t n)
{
    must(ftruncate(mfd, 0) == 0);
    off_t off = 0;
    while (n > 0) {
        ssize_t w = pwrite(mfd, p, n, off);
        must(w > 0);
        p += w;
        off += w;
        n -= (size_t)w;
    }
}

static unsigned num(const char *s, int n)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (unsigned)(s[i] - '0');
    return v;
}

/* "YYYY-MM-DD", a day the Gregorian calendar has (year 0000 included). */
static int real_date(const char *s)
{
    static const unsigned char dm[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    for (int i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? s[i] != '-' : (s[i] < '0' || s[i] > '9'))
            return 0;
    unsigned y = num(s, 4), m = num(s + 5, 2), d = num(s + 8, 2);
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m >= 1 && m <= 12 && d >= 1 && d <= dm[m - 1] && !(m == 2 && d == 29 && !leap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned which = data[0] % 3;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    char end[11] = "";
    keel_publication_opts_t o = {.now = NOW};
    if (which == 0) {
        o.security_txt = path;
    } else if (which == 1) {
        o.policy = path;
    } else {
        if (n < 10)
            return 0;
        memcpy(end, p, 10);
        p += 10;
        n -= 10;
        o.support_end = end;
        o.support_at = path;
    }
    put_file(p, n);
    json_t *doc = NULL;
    keel_status_t st = keel_assess_publication(&o, &doc);
    if (which == 2 && (strlen(end) != 10 || !real_date(end))) {
        must(st == KEEL_ERR_ARG && doc == NULL);
        keel_error_clear();
        return 0;
    }
    if (st != KEEL_OK)
        fprintf(stderr, "fuzz_securitytxt: %s\n", keel_error_message());
    must(st == KEEL_OK && doc != NULL);
    const char *state =
        json_string_value(json_object_get(json_object_get(json_object_get(doc, "units"), "publication"), "state"));
    must(state != NULL && strcmp(state, "ran") == 0);
    char *dump = json_dumps(doc, JSON_COMPACT);
    must(dump != NULL);
    free(dump);
    json_decref(doc);
    keel_error_clear();
    return 0;
}

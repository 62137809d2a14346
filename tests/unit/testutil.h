/* Small helpers shared by the cmocka unit tests. */
#ifndef KEEL_TESTUTIL_H
#define KEEL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/base.h"

/* A fresh private directory under $TMPDIR (or /tmp); removed by tmpdir_free. */
static inline char *tmpdir_new(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[KEEL_PATH_MAX];
    snprintf(tmpl, sizeof tmpl, "%s/keel-test-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static inline void tmpdir_free(char *d)
{
    assert_int_equal(keel_dir_remove_tree(d), KEEL_OK);
    free(d);
}

static inline void path_in(char *out, const char *dir, const char *name)
{
    assert_int_equal(keel_path_join(out, KEEL_PATH_MAX, dir, name), KEEL_OK);
}

#endif

/* Small helpers shared by the cmocka unit tests. */
#ifndef KEEL_TESTUTIL_H
#define KEEL_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel/base.h"
#include "keel/keystore.h"

#include <jansson.h>

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

/* Writes a text file whole (a declaration, a config) or fails the test. */
static inline void text_file_write(const char *path, const char *text)
{
    assert_int_equal(keel_file_write_atomic(path, text, strlen(text), 0644), KEEL_OK);
}

/* A file keystore in base/name, its KEK beside the keys. */
static inline keel_status_t keystore_open_in(const char *base, const char *name, keel_keystore_t **ks)
{
    char dir[KEEL_PATH_MAX], kek[KEEL_PATH_MAX];
    if (keel_path_join(dir, sizeof dir, base, name) != KEEL_OK ||
        keel_path_join(kek, sizeof kek, dir, "kek") != KEEL_OK)
        return KEEL_ERR_TOO_LARGE;
    keel_keystore_config_t cfg = {.driver = "file", .dir = dir, .kek_file = kek, .create = 1};
    return keel_keystore_open(&cfg, ks);
}

/* The fixture of the tests over a vault: a fresh directory (*root), the
 * vault's directory in it (not created: the vault makes it) and an open
 * file keystore in root/keystore. Returns 0, or -1 with nothing left over. */
static inline int vault_fixture_new(char **root, char vault_dir[KEEL_PATH_MAX], keel_keystore_t **ks)
{
    *root = tmpdir_new();
    path_in(vault_dir, *root, "vault");
    if (keystore_open_in(*root, "keystore", ks) != KEEL_OK) {
        tmpdir_free(*root);
        *root = NULL;
        return -1;
    }
    return 0;
}

static inline void vault_fixture_free(char *root, keel_keystore_t *ks)
{
    keel_keystore_close(ks);
    tmpdir_free(root);
}

/* The number of findings of one check in an audit report (keel factory
 * audit, keel assess passwords); fails the test when the check is absent. */
static inline unsigned report_check_findings(json_t *r, const char *check)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(r, "checks"), i, c) {
        if (strcmp(json_string_value(json_object_get(c, "id")), check) == 0)
            return (unsigned)json_integer_value(json_object_get(c, "findings"));
    }
    fail_msg("no check %s", check);
    return 0;
}

/* Everything a child writes to fd until it closes it (or dies), in a
 * malloc'd buffer of *len bytes. */
static inline uint8_t *fd_read_all(int fd, size_t *len)
{
    size_t cap = 1 << 16;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    *len = 0;
    for (;;) {
        if (*len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = read(fd, buf + *len, cap - *len);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n >= 0);
        if (n == 0)
            break;
        *len += (size_t)n;
    }
    return buf;
}

#endif

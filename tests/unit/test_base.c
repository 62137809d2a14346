/* base: bounded buffers, bounded strings, atomic writes, fault injection, systemd notification. */
#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_buf_cap(void **state)
{
    (void)state;
    keel_buf_t b;
    keel_buf_init(&b, 8);
    assert_int_equal(keel_buf_append(&b, "abcd", 4), KEEL_OK);
    assert_int_equal(keel_buf_append(&b, "efgh", 4), KEEL_OK);
    assert_int_equal(b.len, 8);
    assert_string_equal((char *)b.data, "abcdefgh");
    /* Past the cap: an error, and the content is untouched. */
    assert_int_equal(keel_buf_append(&b, "i", 1), KEEL_ERR_TOO_LARGE);
    assert_int_equal(b.len, 8);
    assert_int_equal(keel_buf_printf(&b, "%d", 1), KEEL_ERR_TOO_LARGE);
    keel_buf_free(&b);

    keel_buf_init(&b, 100000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(keel_buf_printf(&b, "%04d,", i), KEEL_OK);
    assert_int_equal(b.len, 5000);
    assert_memory_equal(b.data + 4995, "0999,", 5);
    keel_buf_free(&b);
    assert_null(b.data);
}

static void test_bounded_strings(void **state)
{
    (void)state;
    char small[4];
    assert_int_equal(keel_strlcpy(small, "abc", sizeof small), KEEL_OK);
    assert_int_equal(keel_strlcpy(small, "abcd", sizeof small), KEEL_ERR_TOO_LARGE);
    assert_int_equal(keel_snprintf(small, sizeof small, "%d", 123), KEEL_OK);
    assert_int_equal(keel_snprintf(small, sizeof small, "%d", 1234), KEEL_ERR_TOO_LARGE);
    char path[KEEL_PATH_MAX];
    char longname[KEEL_PATH_MAX + 10];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(keel_path_join(path, sizeof path, "/tmp", longname), KEEL_ERR_TOO_LARGE);
    assert_string_not_equal(keel_error_message(), "");
}

static void test_atomic_write(void **state)
{
    (void)state;
    char *d = tmpdir_new(), p[KEEL_PATH_MAX];
    path_in(p, d, "secret");
    mode_t old = umask(0);
    assert_int_equal(keel_file_write_atomic(p, "one", 3, 0600), KEEL_OK);
    umask(old);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(keel_file_write_atomic(p, "two!", 4, 0600), KEEL_OK);
    keel_buf_t b;
    assert_int_equal(keel_file_read(p, 100, &b), KEEL_OK);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "two!", 4);
    keel_buf_free(&b);
    /* Reading is capped. */
    assert_int_equal(keel_file_read(p, 3, &b), KEEL_ERR_TOO_LARGE);
    path_in(p, d, "missing");
    assert_int_equal(keel_file_read(p, 3, &b), KEEL_ERR_NOT_FOUND);
    /* An empty file reads as an empty string, not a NULL buffer (found by fuzz_labels). */
    path_in(p, d, "empty");
    assert_int_equal(keel_file_write_atomic(p, "", 0, 0600), KEEL_OK);
    assert_int_equal(keel_file_read(p, 3, &b), KEEL_OK);
    assert_non_null(b.data);
    assert_int_equal(b.len, 0);
    assert_string_equal((char *)b.data, "");
    keel_buf_free(&b);
    tmpdir_free(d);
}

/* A failed write/fsync/rename at any point leaves the old content whole. */
static void test_atomic_write_faults(void **state)
{
    (void)state;
    char *d = tmpdir_new(), p[KEEL_PATH_MAX];
    path_in(p, d, "state");
    assert_int_equal(keel_file_write_atomic(p, "old", 3, 0600), KEEL_OK);
    unsigned long n;
    for (n = 1;; n++) {
        keel_fault_arm(n);
        keel_status_t st = keel_file_write_atomic(p, "new!", 4, 0600);
        keel_fault_arm(0);
        keel_buf_t b;
        assert_int_equal(keel_file_read(p, 100, &b), KEEL_OK);
        if (st == KEEL_OK) {
            assert_memory_equal(b.data, "new!", 4);
            keel_buf_free(&b);
            break;
        }
        assert_int_equal(st, KEEL_ERR_IO);
        /* The failure either left the old file or (dir fsync) the complete new one. */
        assert_true((b.len == 3 && memcmp(b.data, "old", 3) == 0) ||
                    (b.len == 4 && memcmp(b.data, "new!", 4) == 0));
        keel_buf_free(&b);
        assert_int_equal(keel_file_write_atomic(p, "old", 3, 0600), KEEL_OK);
    }
#ifdef KEEL_FAULT_INJECTION
    /* write, fsync, rename, directory fsync: four points where a cut can land. */
    assert_int_equal(n, 5);
#endif
    /* No temporary files are left behind. */
    char tmp[KEEL_PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    assert_false(keel_path_exists(tmp));
    tmpdir_free(d);
}

static void test_shred_and_trees(void **state)
{
    (void)state;
    char *d = tmpdir_new(), p[KEEL_PATH_MAX], sub[KEEL_PATH_MAX];
    path_in(sub, d, "a");
    assert_int_equal(keel_dir_make(sub, 0700), KEEL_OK);
    assert_int_equal(keel_dir_make(sub, 0700), KEEL_OK); /* idempotent */
    path_in(p, sub, "k");
    assert_int_equal(keel_file_write_atomic(p, "secret", 6, 0600), KEEL_OK);
    assert_int_equal(keel_file_shred(p), KEEL_OK);
    assert_false(keel_path_exists(p));
    assert_int_equal(keel_file_shred(p), KEEL_OK); /* absent is fine */
    assert_int_equal(keel_file_append_sync(p, "x\n", 2, 0600), KEEL_OK);
    assert_int_equal(keel_file_append_sync(p, "y\n", 2, 0600), KEEL_OK);
    keel_buf_t b;
    assert_int_equal(keel_file_read(p, 100, &b), KEEL_OK);
    assert_string_equal((char *)b.data, "x\ny\n");
    keel_buf_free(&b);
    char to[KEEL_PATH_MAX];
    path_in(to, d, "b");
    assert_int_equal(keel_rename_commit(sub, to), KEEL_OK);
    assert_false(keel_path_exists(sub));
    assert_int_equal(keel_dir_remove_tree(to), KEEL_OK);
    assert_false(keel_path_exists(to));
    tmpdir_free(d);
}

static void test_remove_tree_keeps_link_targets(void **state)
{
    (void)state;
    char *d = tmpdir_new(), victim[KEEL_PATH_MAX], keep[KEEL_PATH_MAX], tree[KEEL_PATH_MAX],
         link1[KEEL_PATH_MAX + 16], link2[KEEL_PATH_MAX];
    path_in(victim, d, "victim");
    assert_int_equal(keel_dir_make(victim, 0700), KEEL_OK);
    path_in(keep, victim, "precious");
    assert_int_equal(keel_file_write_atomic(keep, "x", 1, 0600), KEEL_OK);
    path_in(tree, d, "tree");
    assert_int_equal(keel_dir_make(tree, 0700), KEEL_OK);
    snprintf(link1, sizeof link1, "%s/inner-link", tree);
    assert_int_equal(symlink(victim, link1), 0);
    path_in(link2, d, "top-link");
    assert_int_equal(symlink(victim, link2), 0);
    /* A link inside the tree and a link given as the tree: only links go. */
    assert_int_equal(keel_dir_remove_tree(tree), KEEL_OK);
    assert_int_equal(keel_dir_remove_tree(link2), KEEL_OK);
    assert_false(keel_path_exists(tree));
    assert_false(keel_path_exists(link2));
    assert_true(keel_path_exists(keep));
    tmpdir_free(d);
}

static void test_create_and_dir_checks(void **state)
{
    (void)state;
    char *d = tmpdir_new(), p[KEEL_PATH_MAX], sub[KEEL_PATH_MAX];
    path_in(p, d, "once");
    assert_int_equal(keel_file_create_atomic(p, "first", 5, 0600), KEEL_OK);
    assert_int_equal(keel_file_create_atomic(p, "second", 6, 0600), KEEL_ERR_EXISTS);
    keel_buf_t b;
    assert_int_equal(keel_file_read(p, 100, &b), KEEL_OK);
    assert_string_equal((char *)b.data, "first");
    keel_buf_free(&b);
    /* Existing directories are used only when private. */
    path_in(sub, d, "shared");
    assert_int_equal(keel_dir_make(sub, 0700), KEEL_OK);
    assert_int_equal(chmod(sub, 0777), 0);
    assert_int_equal(keel_dir_make(sub, 0700), KEEL_ERR_ARG);
    assert_int_equal(keel_dir_make(p, 0700), KEEL_ERR_EXISTS); /* a file */
    tmpdir_free(d);
}

/* A datagram socket bound where $NOTIFY_SOCKET will point (`name`, or the
 * abstract namespace when it starts with '@'). */
static int notify_listener(const char *name)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(name);
    assert_true(n < sizeof sa.sun_path);
    memcpy(sa.sun_path, name, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
    struct timeval tv = {.tv_sec = 2};
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
    return fd;
}

static void expect_datagram(int fd, const char *want)
{
    char got[64] = "";
    ssize_t n = recv(fd, got, sizeof got - 1, 0);
    assert_int_equal(n, (ssize_t)strlen(want));
    assert_string_equal(got, want);
}

static void test_notify(void **state)
{
    (void)state;
    char *d = tmpdir_new(), p[KEEL_PATH_MAX], abstract[64];
    path_in(p, d, "notify.sock");
    int fd = notify_listener(p);
    assert_int_equal(setenv("NOTIFY_SOCKET", p, 1), 0);
    keel_notify("READY=1");
    expect_datagram(fd, "READY=1");
    keel_notify("WATCHDOG=1");
    expect_datagram(fd, "WATCHDOG=1");
    close(fd);
    snprintf(abstract, sizeof abstract, "@keel-test-notify-%ld", (long)getpid());
    fd = notify_listener(abstract);
    assert_int_equal(setenv("NOTIFY_SOCKET", abstract, 1), 0);
    keel_notify("STOPPING=1");
    expect_datagram(fd, "STOPPING=1");
    /* Unset, relative or too long: nothing is sent, nothing breaks. */
    assert_int_equal(setenv("NOTIFY_SOCKET", "relative.sock", 1), 0);
    keel_notify("READY=1");
    assert_int_equal(unsetenv("NOTIFY_SOCKET"), 0);
    keel_notify("READY=1");
    char n = 0;
    assert_int_equal(recv(fd, &n, 1, MSG_DONTWAIT), -1);
    close(fd);
    tmpdir_free(d);
}

static void test_notify_watchdog_usec(void **state)
{
    (void)state;
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    assert_int_equal(unsetenv("WATCHDOG_PID"), 0);
    assert_int_equal(unsetenv("WATCHDOG_USEC"), 0);
    assert_int_equal(keel_notify_watchdog_usec(), 0);
    static const struct {
        const char *usec, *pid;
        uint64_t want;
    } cases[] = {
        {"30000000", NULL, 30000000},  {"30000000", "", 0}, {"5", "self", 5},
        {"0", NULL, 0},                {"", NULL, 0},              {"-5", NULL, 0},
        {"12x", NULL, 0},              {" 12", NULL, 0},           {"18446744073709551616", NULL, 0},
        {"18446744073709551615", NULL, UINT64_MAX}, {"1000", "1", 0}, {"1000", "12ab", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_int_equal(setenv("WATCHDOG_USEC", cases[i].usec, 1), 0);
        if (cases[i].pid == NULL)
            assert_int_equal(unsetenv("WATCHDOG_PID"), 0);
        else
            assert_int_equal(setenv("WATCHDOG_PID", strcmp(cases[i].pid, "self") == 0 ? pid : cases[i].pid, 1), 0);
        uint64_t got = keel_notify_watchdog_usec();
        if (got != cases[i].want)
            fail_msg("case %zu: WATCHDOG_USEC '%s': %llu, want %llu", i, cases[i].usec, (unsigned long long)got,
                     (unsigned long long)cases[i].want);
    }
    assert_int_equal(unsetenv("WATCHDOG_PID"), 0);
    assert_int_equal(unsetenv("WATCHDOG_USEC"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_bounded_strings),
        cmocka_unit_test(test_atomic_write),
        cmocka_unit_test(test_atomic_write_faults),
        cmocka_unit_test(test_shred_and_trees),
        cmocka_unit_test(test_remove_tree_keeps_link_targets),
        cmocka_unit_test(test_create_and_dir_checks),
        cmocka_unit_test(test_notify),
        cmocka_unit_test(test_notify_watchdog_usec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

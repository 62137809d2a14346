/*
 * sandbox: each confinement in a child of its own (a filter or a user
 * switch cannot be undone in the test process), judged by how the child
 * ends and by what the kernel shows in /proc/self/status.
 */
#define _GNU_SOURCE
#include "testutil.h"

#include "keel/sandbox.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define STATUS_MAX 8192

enum { CHILD_OK = 0, CHILD_FAILED = 3 };

/* Runs fn in a child; returns its wait status. */
static int in_child(int (*fn)(void))
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn());
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    return ws;
}

/* The number after "Name:" in /proc/self/status (in `base`), read with calls on every list. */
static long proc_status(const char *name, int base)
{
    char buf[STATUS_MAX];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    size_t len = strlen(name);
    for (char *line = buf; line != NULL && *line != '\0';) {
        if (strncmp(line, name, len) == 0 && line[len] == ':')
            return strtol(line + len + 1, NULL, base);
        line = strchr(line, '\n');
        line = line != NULL ? line + 1 : NULL;
    }
    return -1;
}

/* acct(2) is on no daemon's list: a process may not switch accounting. */
static int call_unlisted(void)
{
    if (keel_sandbox_apply("keeld", KEEL_SANDBOX_KILL, NULL, 0) != KEEL_OK)
        return CHILD_FAILED;
    if (getpid() <= 0 || proc_status("Seccomp", 10) != 2) /* listed calls still work */
        return CHILD_FAILED;
    (void)syscall(SYS_acct, NULL);
    return CHILD_OK; /* not reached: SIGSYS */
}

static void test_unlisted_call_kills(void **state)
{
    (void)state;
    int ws = in_child(call_unlisted);
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(WTERMSIG(ws), SIGSYS);
}

/* In log mode the same call runs (and fails as unprivileged: no capability). */
static int call_unlisted_logged(void)
{
    if (keel_sandbox_apply("keel-fleetd", KEEL_SANDBOX_LOG, NULL, 0) != KEEL_OK)
        return CHILD_FAILED;
    if (syscall(SYS_acct, NULL) == 0 || errno != EPERM)
        return CHILD_FAILED;
    return proc_status("Seccomp", 10) == 2 ? CHILD_OK : CHILD_FAILED;
}

static void test_log_mode_lets_it_run(void **state)
{
    (void)state;
    int ws = in_child(call_unlisted_logged);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), CHILD_OK);
}

static int no_new_privs_and_no_caps(void)
{
    char summary[KEEL_SANDBOX_SUMMARY_MAX];
    if (keel_sandbox_apply("keeld", KEEL_SANDBOX_OFF, summary, sizeof summary) != KEEL_OK)
        return CHILD_FAILED;
    if (strstr(summary, "no_new_privs") == NULL || strstr(summary, "seccomp off") == NULL)
        return CHILD_FAILED;
    if (proc_status("NoNewPrivs", 10) != 1 || proc_status("Seccomp", 10) != 0)
        return CHILD_FAILED;
    return proc_status("CapEff", 16) == 0 && proc_status("CapPrm", 16) == 0 ? CHILD_OK : CHILD_FAILED;
}

static void test_no_new_privs(void **state)
{
    (void)state;
    int ws = in_child(no_new_privs_and_no_caps);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), CHILD_OK);
}

static int become_nobody(void)
{
    if (keel_sandbox_drop_user("nobody") != KEEL_OK)
        return CHILD_FAILED;
    if (getuid() == 0 || geteuid() == 0 || getgid() == 0)
        return CHILD_FAILED;
    if (setuid(0) == 0 || setgid(0) == 0)
        return CHILD_FAILED;
    /* As nobody, root can no longer be named... */
    if (keel_sandbox_drop_user("root") != KEEL_ERR_CONFIG)
        return CHILD_FAILED;
    /* ...and nobody again is a no-op. */
    if (keel_sandbox_drop_user("nobody") != KEEL_OK)
        return CHILD_FAILED;
    if (keel_sandbox_apply("keeld", KEEL_SANDBOX_KILL, NULL, 0) != KEEL_OK)
        return CHILD_FAILED;
    return proc_status("CapEff", 16) == 0 && proc_status("NoNewPrivs", 10) == 1 ? CHILD_OK : CHILD_FAILED;
}

static void test_drop_to_nobody(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    int ws = in_child(become_nobody);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), CHILD_OK);
}

static void test_refusals(void **state)
{
    (void)state;
    /* refused before anything changes, so the test process itself may ask */
    assert_int_equal(keel_sandbox_drop_user("keel-no-such-user-x9"), KEEL_ERR_CONFIG);
    assert_non_null(strstr(keel_error_message(), "no user"));
    assert_int_equal(keel_sandbox_drop_user("root"), KEEL_ERR_CONFIG);
    assert_int_equal(keel_sandbox_drop_user(NULL), KEEL_OK);
    assert_int_equal(keel_sandbox_drop_user(""), KEEL_OK);
    assert_int_equal(keel_sandbox_seccomp("other", KEEL_SANDBOX_KILL), KEEL_ERR_ARG);
    keel_sandbox_mode_t m;
    assert_int_equal(keel_sandbox_mode_parse("kill", &m), KEEL_OK);
    assert_int_equal(m, KEEL_SANDBOX_KILL);
    assert_int_equal(keel_sandbox_mode_parse("log", &m), KEEL_OK);
    assert_int_equal(m, KEEL_SANDBOX_LOG);
    assert_int_equal(keel_sandbox_mode_parse("off", &m), KEEL_OK);
    assert_int_equal(m, KEEL_SANDBOX_OFF);
    assert_int_equal(keel_sandbox_mode_parse("Kill", &m), KEEL_ERR_CONFIG);
    assert_int_equal(keel_sandbox_mode_parse(NULL, &m), KEEL_ERR_CONFIG);
    size_t n = 0;
    assert_non_null(keel_sandbox_allowlist("keeld", &n));
    assert_true(n > 50);
    assert_non_null(keel_sandbox_allowlist("keel-fleetd", &n));
    assert_null(keel_sandbox_allowlist("keel", &n));
    /* what a filter must never allow either daemon */
    static const char *const never[] = {"execve", "ptrace", "acct", "mount", "setuid", "init_module", "kexec_load",
                                        "bpf", "unshare", "setns", "reboot", "process_vm_writev"};
    const char *const progs[] = {"keeld", "keel-fleetd"};
    for (size_t p = 0; p < 2; p++) {
        const char *const *list = keel_sandbox_allowlist(progs[p], &n);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < sizeof never / sizeof never[0]; j++)
                assert_string_not_equal(list[i], never[j]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_unlisted_call_kills),
        cmocka_unit_test(test_log_mode_lets_it_run),
        cmocka_unit_test(test_no_new_privs),
        cmocka_unit_test(test_drop_to_nobody),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Least privilege for keeld and keel-fleetd (keel/sandbox.h): the user
 * switch, no_new_privs, capabilities, and the seccomp allow-lists.
 *
 * The lists are what the daemons call once start-up is over, measured with
 * `strace -f -c` over their integration tests and read off the code paths the
 * tests do not reach (docs/internals/sandbox.md has both and how to redo it).
 * Start-up (dlopen of PKCS#11 modules, bind, thread creation, the first
 * database open) happens before the filter and needs no entry here, except
 * what the running daemon does again (threads for installs and password
 * checks, SQLite files, new connections, getaddrinfo for the broker).
 */
#define _GNU_SOURCE
#include "keel/sandbox.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PW_BUF_MAX 16384 /* getpwnam_r's buffer: the entry's strings */
#define CAP_WORDS 2      /* _LINUX_CAPABILITY_VERSION_3: 64 capabilities in two words */
#define CAP_BOUND_MAX 64 /* highest capability number probed in the bounding set */

/* ---- the allow-lists --------------------------------------------------------------------------- */

/* Both daemons: glibc, pthreads, libevent (epoll), OpenSSL (getrandom), SQLite
 * (files, locks, fsync), libmosquitto, libcurl (keeld's updater), libpq
 * (keel-fleetd on PostgreSQL), PKCS#11 modules (token files, locks), logging
 * (stderr, syslog's socket, sd_notify) and name resolution (NSS files and
 * dns: the resolver's files, UDP/TCP sockets, netlink for AI_ADDRCONFIG). */
#define COMMON_SYSCALLS                                                                                               \
    /* memory */                                                                                                      \
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mlock", "munlock",                                     \
    /* threads, time, signals, exit */                                                                                \
    "clone", "clone3", "set_robust_list", "rseq", "futex", "sched_yield", "sched_getaffinity", "gettid", "getpid",    \
    "tgkill", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall", "nanosleep",        \
    "clock_nanosleep", "clock_gettime", "gettimeofday", "time", "exit", "exit_group", "getrandom", "prlimit64",       \
    "getuid", "geteuid", "getgid", "getegid", "uname", "sysinfo",                                                     \
    /* files (SQLite, atomic writes, state) */                                                                        \
    "openat", "open", "close", "read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "fstat",           \
    "newfstatat", "stat", "lstat", "statx", "fstatfs", "statfs", "access", "faccessat", "faccessat2", "fcntl",        \
    "flock", "fsync", "fdatasync", "ftruncate", "fallocate", "rename", "renameat", "renameat2", "unlink",             \
    "unlinkat", "link", "linkat", "mkdir", "mkdirat", "rmdir", "fchmod", "fchmodat", "chmod", "fchown", "readlink",   \
    "readlinkat", "sync_file_range",                                                                                  \
    "getdents64", "getcwd", "umask", "dup", "dup2", "dup3", "pipe", "pipe2", "ioctl", "utimensat",                    \
    /* event loop and sockets */                                                                                      \
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect6", "eventfd2",     \
    "socket", "socketpair", "connect", "accept", "accept4", "bind", "getsockname", "getpeername",                     \
    "setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown"

static const char *const keeld_syscalls[] = {
    COMMON_SYSCALLS,
};

static const char *const fleetd_syscalls[] = {
    COMMON_SYSCALLS,
    /* the update server's bundles (libevent may send a file segment with sendfile) */
    "sendfile",
    /* [pki] broker_pid_file: SIGHUP to the broker after a revocation (its CRL) */
    "kill",
};

/* What the ASan/LSan/UBSan runtime does on top: LeakSanitizer stops the world
 * at exit (a tracer thread that ptraces every thread), reports go through
 * /proc/self/maps and the symbolizer. Test builds only. */
#if defined(__SANITIZE_ADDRESS__)
#define KEEL_SANDBOX_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define KEEL_SANDBOX_SANITIZED 1
#endif
#endif
#ifdef KEEL_SANDBOX_SANITIZED
static const char *const sanitizer_syscalls[] = {
    "ptrace", "wait4", "waitid", "prctl", "kill", "getppid", "sched_getaffinity", "execve", "vfork", "fork", "getdents",
    "munmap", "sigaltstack", "mincore", "personality", "getrlimit", "setrlimit",
};
#endif

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *const *keel_sandbox_allowlist(const char *program, size_t *n)
{
    if (program != NULL && strcmp(program, "keeld") == 0) {
        *n = COUNT(keeld_syscalls);
        return keeld_syscalls;
    }
    if (program != NULL && strcmp(program, "keel-fleetd") == 0) {
        *n = COUNT(fleetd_syscalls);
        return fleetd_syscalls;
    }
    *n = 0;
    return NULL;
}

/* ---- modes ------------------------------------------------------------------------------------- */

keel_status_t keel_sandbox_mode_parse(const char *s, keel_sandbox_mode_t *out)
{
    if (s != NULL && strcmp(s, "kill") == 0)
        *out = KEEL_SANDBOX_KILL;
    else if (s != NULL && strcmp(s, "log") == 0)
        *out = KEEL_SANDBOX_LOG;
    else if (s != NULL && strcmp(s, "off") == 0)
        *out = KEEL_SANDBOX_OFF;
    else
        return keel_errorf(KEEL_ERR_CONFIG, "security.seccomp must be kill, log or off");
    return KEEL_OK;
}

const char *keel_sandbox_mode_name(keel_sandbox_mode_t mode)
{
    switch (mode) {
    case KEEL_SANDBOX_KILL: return "kill";
    case KEEL_SANDBOX_LOG: return "log";
    case KEEL_SANDBOX_OFF: return "off";
    }
    return "?";
}

/* ---- capabilities ------------------------------------------------------------------------------ */

static int caps_get(struct __user_cap_data_struct data[CAP_WORDS])
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    memset(data, 0, CAP_WORDS * sizeof *data);
    return (int)syscall(SYS_capget, &hdr, data);
}

static int caps_set(const struct __user_cap_data_struct data[CAP_WORDS])
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    return (int)syscall(SYS_capset, &hdr, data);
}

/* Empties the bounding set as far as allowed; returns how many stay. */
static unsigned bounding_drop(void)
{
    unsigned left = 0;
    for (int cap = 0; cap < CAP_BOUND_MAX; cap++) {
        int in = prctl(PR_CAPBSET_READ, (unsigned long)cap, 0, 0, 0);
        if (in < 0)
            break; /* past the kernel's last capability */
        if (in == 1 && prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) != 0)
            left++;
    }
    return left;
}

keel_status_t keel_sandbox_drop_caps(unsigned *bounding_left)
{
    unsigned left = bounding_drop();
    if (bounding_left != NULL)
        *bounding_left = left;
    /* The ambient set cannot outlive the permitted set, but it is cleared
     * explicitly so the order of the kernel's checks never matters. */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        return keel_errorf(KEEL_ERR_IO, "sandbox: clearing the ambient capabilities: %s", strerror(errno));
    struct __user_cap_data_struct none[CAP_WORDS];
    memset(none, 0, sizeof none);
    if (caps_set(none) != 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: dropping the capabilities: %s", strerror(errno));
    struct __user_cap_data_struct now[CAP_WORDS];
    if (caps_get(now) != 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: reading the capabilities: %s", strerror(errno));
    for (int i = 0; i < CAP_WORDS; i++)
        if (now[i].effective != 0 || now[i].permitted != 0 || now[i].inheritable != 0)
            return keel_errorf(KEEL_ERR_IO, "sandbox: capabilities remain after dropping them");
    return KEEL_OK;
}

keel_status_t keel_sandbox_no_new_privs(void)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
        return keel_errorf(KEEL_ERR_IO, "sandbox: no_new_privs did not stick");
    return KEEL_OK;
}

/* ---- the user ---------------------------------------------------------------------------------- */

/* Keeps CAP_NET_BIND_SERVICE (and nothing else) across the uid change. */
static keel_status_t become(const struct passwd *pw)
{
    (void)bounding_drop(); /* what stays is reported by keel_sandbox_drop_caps() */
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: PR_SET_KEEPCAPS: %s", strerror(errno));
    if (initgroups(pw->pw_name, pw->pw_gid) != 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: initgroups(%s): %s", pw->pw_name, strerror(errno));
    if (setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) != 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: setresgid(%u): %s", (unsigned)pw->pw_gid, strerror(errno));
    if (setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) != 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: setresuid(%u): %s", (unsigned)pw->pw_uid, strerror(errno));
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: PR_SET_KEEPCAPS: %s", strerror(errno));
    struct __user_cap_data_struct bind[CAP_WORDS];
    memset(bind, 0, sizeof bind);
    bind[CAP_TO_INDEX(CAP_NET_BIND_SERVICE)].effective = CAP_TO_MASK(CAP_NET_BIND_SERVICE);
    bind[CAP_TO_INDEX(CAP_NET_BIND_SERVICE)].permitted = CAP_TO_MASK(CAP_NET_BIND_SERVICE);
    if (caps_set(bind) != 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: keeping CAP_NET_BIND_SERVICE: %s", strerror(errno));
    /* The proof that there is no way back. */
    uid_t r, e, s;
    if (getresuid(&r, &e, &s) != 0 || r != pw->pw_uid || e != pw->pw_uid || s != pw->pw_uid)
        return keel_errorf(KEEL_ERR_IO, "sandbox: the uid did not change");
    if (getgid() != pw->pw_gid || getegid() != pw->pw_gid)
        return keel_errorf(KEEL_ERR_IO, "sandbox: the gid did not change");
    if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0)
        return keel_errorf(KEEL_ERR_IO, "sandbox: %s could become root again", pw->pw_name);
    return KEEL_OK;
}

keel_status_t keel_sandbox_drop_user(const char *user)
{
    if (user == NULL || user[0] == '\0')
        return KEEL_OK;
    struct passwd pwd, *pw = NULL;
    char buf[PW_BUF_MAX];
    int err = getpwnam_r(user, &pwd, buf, sizeof buf, &pw);
    if (err != 0)
        return keel_errorf(KEEL_ERR_CONFIG, "security.user: looking up '%s': %s", user, strerror(err));
    if (pw == NULL)
        return keel_errorf(KEEL_ERR_CONFIG, "security.user: there is no user '%s'", user);
    if (pw->pw_uid == 0)
        return keel_errorf(KEEL_ERR_CONFIG, "security.user: '%s' is root; name an unprivileged user", user);
    if (geteuid() == 0)
        return become(pw);
    if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid)
        return keel_errorf(KEEL_ERR_CONFIG, "security.user: running as uid %u, not root: cannot become '%s' (uid %u)",
                           (unsigned)geteuid(), user, (unsigned)pw->pw_uid);
    return KEEL_OK;
}

/* ---- seccomp ----------------------------------------------------------------------------------- */

static keel_status_t add_list(scmp_filter_ctx ctx, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int nr = seccomp_syscall_resolve_name(names[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not a system call on this architecture */
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        if (rc != 0)
            return keel_errorf(KEEL_ERR_IO, "sandbox: seccomp rule for %s: %s", names[i], strerror(-rc));
    }
    return KEEL_OK;
}

keel_status_t keel_sandbox_seccomp(const char *program, keel_sandbox_mode_t mode)
{
    size_t n = 0;
    const char *const *list = keel_sandbox_allowlist(program, &n);
    if (list == NULL)
        return keel_errorf(KEEL_ERR_ARG, "sandbox: no allow-list for '%s'", program != NULL ? program : "(null)");
    if (mode == KEEL_SANDBOX_OFF)
        return KEEL_OK;
    scmp_filter_ctx ctx = seccomp_init(mode == KEEL_SANDBOX_KILL ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_LOG);
    if (ctx == NULL)
        return keel_errorf(KEEL_ERR_IO, "sandbox: seccomp_init failed");
    keel_status_t st = add_list(ctx, list, n);
#ifdef KEEL_SANDBOX_SANITIZED
    if (st == KEEL_OK)
        st = add_list(ctx, sanitizer_syscalls, COUNT(sanitizer_syscalls));
#endif
    int rc;
    if (st == KEEL_OK && (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) != 0)
        st = keel_errorf(KEEL_ERR_IO, "sandbox: seccomp TSYNC: %s", strerror(-rc));
    if (st == KEEL_OK && (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1)) != 0)
        st = keel_errorf(KEEL_ERR_IO, "sandbox: seccomp no_new_privs: %s", strerror(-rc));
    if (st == KEEL_OK && (rc = seccomp_load(ctx)) != 0)
        st = keel_errorf(KEEL_ERR_IO, "sandbox: loading the seccomp filter: %s",
                         rc > 0 ? "a thread could not be synchronised" : strerror(-rc));
    seccomp_release(ctx);
    return st;
}

keel_status_t keel_sandbox_apply(const char *program, keel_sandbox_mode_t mode, char *summary, size_t cap)
{
    size_t n = 0;
    if (keel_sandbox_allowlist(program, &n) == NULL)
        return keel_errorf(KEEL_ERR_ARG, "sandbox: no allow-list for '%s'", program != NULL ? program : "(null)");
    unsigned bounding_left = 0;
    keel_status_t st = keel_sandbox_no_new_privs();
    if (st == KEEL_OK)
        st = keel_sandbox_drop_caps(&bounding_left);
    if (st == KEEL_OK)
        st = keel_sandbox_seccomp(program, mode);
    if (st == KEEL_OK && summary != NULL && cap > 0) {
        char bound[64] = "";
        if (bounding_left > 0)
            snprintf(bound, sizeof bound, " (%u left in the bounding set)", bounding_left);
        if (mode == KEEL_SANDBOX_OFF)
            snprintf(summary, cap, "uid %u gid %u, no_new_privs, no capabilities%s, seccomp off", (unsigned)getuid(),
                     (unsigned)getgid(), bound);
        else
            snprintf(summary, cap, "uid %u gid %u, no_new_privs, no capabilities%s, seccomp %s (%zu system calls)",
                     (unsigned)getuid(), (unsigned)getgid(), bound, keel_sandbox_mode_name(mode), n);
    }
    return st;
}

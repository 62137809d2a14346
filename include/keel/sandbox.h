/*
 * keel/sandbox.h - least privilege for the daemons (EN 303 645 5.6-7).
 *
 * keeld and keel-fleetd confine themselves in two steps:
 *
 *   1. keel_sandbox_drop_user() before they open anything of their state:
 *      started as root with [security] user set, they become that user
 *      (supplementary groups, gid, uid), keeping only CAP_NET_BIND_SERVICE
 *      for a listener on a port below 1024. Every file of the state is then
 *      opened and created by that user, never by root.
 *   2. keel_sandbox_apply() once start-up is over (listeners bound, keystore
 *      and PKCS#11 module open, threads running): PR_SET_NO_NEW_PRIVS, every
 *      capability dropped (bounding and ambient sets too, where allowed), and
 *      a seccomp allow-list on every thread of the process (TSYNC).
 *
 * The allow-lists are per program, in src/base/sandbox.c, and derived in
 * docs/internals/sandbox.md. Linux only.
 */
#ifndef KEEL_SANDBOX_H
#define KEEL_SANDBOX_H

#include "keel/base.h"

#include <stddef.h>

/* What a system call outside the allow-list does ([security] seccomp). */
typedef enum {
    KEEL_SANDBOX_KILL, /* "kill": the process dies of SIGSYS (the default) */
    KEEL_SANDBOX_LOG,  /* "log": it runs, and the kernel logs it (audit/dmesg, type=1326) */
    KEEL_SANDBOX_OFF,  /* "off": no filter; no_new_privs and the capabilities still apply */
} keel_sandbox_mode_t;

/* A summary of what keel_sandbox_apply() did, for the one start-up log line. */
#define KEEL_SANDBOX_SUMMARY_MAX 256

/* "kill", "log" or "off"; KEEL_ERR_CONFIG otherwise. */
keel_status_t keel_sandbox_mode_parse(const char *s, keel_sandbox_mode_t *out) KEEL_MUST_CHECK;
const char *keel_sandbox_mode_name(keel_sandbox_mode_t mode);

/*
 * Becomes `user` (a name from the password database). NULL or "" does
 * nothing. As root: initgroups, setresgid, setresuid, keeping
 * CAP_NET_BIND_SERVICE only (the bounding set is emptied first); it then
 * checks that setuid(0) and setgid(0) fail. Not root: succeeds only when the
 * process already is that user.
 * KEEL_ERR_CONFIG: no such user, the user is root, or not root and not that
 * user. KEEL_ERR_IO: a system call failed (the process must not go on).
 */
keel_status_t keel_sandbox_drop_user(const char *user) KEEL_MUST_CHECK;

/* PR_SET_NO_NEW_PRIVS: no execve can ever gain privileges again. KEEL_ERR_IO. */
keel_status_t keel_sandbox_no_new_privs(void) KEEL_MUST_CHECK;

/*
 * Empties the effective, permitted, inheritable and ambient capability sets,
 * and the bounding set when the process may (CAP_SETPCAP); *bounding_left
 * (may be NULL) gets how many stay in the bounding set (harmless under
 * no_new_privs). KEEL_ERR_IO when a set could not be emptied.
 */
keel_status_t keel_sandbox_drop_caps(unsigned *bounding_left) KEEL_MUST_CHECK;

/*
 * The allow-list of `program` ("keeld" or "keel-fleetd"): system call names,
 * *n of them (a name unknown on this architecture is skipped when
 * installed). NULL for another program. Sanitizer builds add what the
 * ASan/LSan/UBSan runtime needs.
 */
const char *const *keel_sandbox_allowlist(const char *program, size_t *n);

/*
 * Installs a seccomp filter allowing `program`'s list, on every thread of
 * the process (TSYNC), with no_new_privs. KEEL_SANDBOX_OFF does nothing.
 * KEEL_ERR_ARG: unknown program; KEEL_ERR_IO: the kernel refused (or a
 * thread could not be synchronised).
 */
keel_status_t keel_sandbox_seccomp(const char *program, keel_sandbox_mode_t mode) KEEL_MUST_CHECK;

/*
 * The whole step 2: no_new_privs, capabilities, seccomp. Writes a one-line
 * summary (uid, gid, capabilities, filter) to summary (cap bytes), which may
 * be NULL. Errors as above; on an error the process must not serve.
 */
keel_status_t keel_sandbox_apply(const char *program, keel_sandbox_mode_t mode, char *summary, size_t cap)
    KEEL_MUST_CHECK;

#endif

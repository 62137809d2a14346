/*
 * keel/base.h - status codes, error messages, logging, bounded buffers and
 * atomic, committing file writes. Every other module stands on this one.
 */
#ifndef KEEL_BASE_H
#define KEEL_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KEEL_MUST_CHECK __attribute__((warn_unused_result))

/* One status enum for the whole library; every public function returns it. */
typedef enum {
    KEEL_OK = 0,
    KEEL_ERR_ARG,         /* a caller passed a bad argument */
    KEEL_ERR_NOMEM,       /* allocation failed */
    KEEL_ERR_IO,          /* a file or system call failed */
    KEEL_ERR_TOO_LARGE,   /* input exceeds its declared cap */
    KEEL_ERR_FORMAT,      /* input is malformed */
    KEEL_ERR_NOT_FOUND,   /* the named thing does not exist */
    KEEL_ERR_EXISTS,      /* the named thing already exists */
    KEEL_ERR_CRYPTO,      /* a cryptographic operation failed */
    KEEL_ERR_VERIFY,      /* a signature, tag or password did not verify */
    KEEL_ERR_KEYSTORE,    /* the keystore driver failed */
    KEEL_ERR_DB,          /* the database failed */
    KEEL_ERR_UNSUPPORTED, /* not available in this build or driver */
    KEEL_ERR_CONFIG,      /* a setting is missing or wrong (file, variable, token) */
    KEEL_ERR_BUSY,        /* a shared resource stayed locked or a transaction must be retried */
} keel_status_t;

/* Short name of a status ("io", "verify", ...). Never NULL. */
const char *keel_status_str(keel_status_t st);

/*
 * Error detail. The function that detects a failure records one message
 * (thread-local, capped at KEEL_ERROR_MAX) and returns its status; programs
 * print it as "keel: <command>: <message>". Messages never contain secrets.
 */
#define KEEL_ERROR_MAX 512
keel_status_t keel_errorf(keel_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
#ifdef __clang_analyzer__
/* For the static analyzer only (scripts/clang-tidy.sh): it sees keel_errorf
 * from other files as opaque and would follow error paths on which the
 * returned status became KEEL_OK. It returns `st`, evaluated once. */
#define keel_errorf(st, ...)                                                                                           \
    ({                                                                                                                 \
        keel_status_t keel_errorf_st_ = (st);                                                                          \
        (void)keel_errorf(keel_errorf_st_, __VA_ARGS__);                                                               \
        keel_errorf_st_;                                                                                               \
    })
#endif
const char *keel_error_message(void);
void keel_error_clear(void);

/* Logging to stderr or syslog, one line per call; level filter set by the program. */
typedef enum { KEEL_LOG_ERROR, KEEL_LOG_WARN, KEEL_LOG_INFO, KEEL_LOG_DEBUG } keel_log_level_t;
void keel_log_set_level(keel_log_level_t level);
/* Whether a message at `level` would be written: skip building what would not be. */
bool keel_log_enabled(keel_log_level_t level);
void keel_log(keel_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * The production profile (KEEL_LOG_NO_DEBUG, docs/internals/build-profiles.md)
 * compiles debug messages out: their text, which describes internals, is not
 * in the binary, and log.level=debug logs what info does (5.6-4A).
 */
#ifdef KEEL_LOG_NO_DEBUG
#define keel_log(level, ...) ((level) == KEEL_LOG_DEBUG ? (void)0 : keel_log((level), __VA_ARGS__))
#endif
/* "error", "warn", "info", "debug" (KEEL_ERR_CONFIG otherwise). */
keel_status_t keel_log_level_parse(const char *s, keel_log_level_t *out) KEEL_MUST_CHECK;
/* Log to syslog (LOG_DAEMON) under `ident`; NULL goes back to stderr. */
void keel_log_to_syslog(const char *ident);
/* The program name before each stderr line ("keel" unless set). */
void keel_log_set_prefix(const char *prefix);

/*
 * systemd notification (sd_notify(3)'s protocol, no libsystemd): `msg` such as
 * "READY=1", "RELOADING=1", "STOPPING=1" or "WATCHDOG=1" goes to
 * $NOTIFY_SOCKET; a no-op when it is unset. keel_notify_watchdog_usec() is
 * the watchdog interval systemd asked for (WatchDogSec=, 0 when none, or
 * when WATCHDOG_PID names another process): ping at least twice per interval.
 */
void keel_notify(const char *msg);
uint64_t keel_notify_watchdog_usec(void);

/* Seconds on the monotonic clock (for durations, never for dates). */
double keel_now(void);

/* Wipe memory that held a secret; never optimised away. */
void keel_wipe(void *p, size_t n);

/*
 * Bounded, growable buffer (after curl's dynbuf): created with a hard cap,
 * and exceeding it is KEEL_ERR_TOO_LARGE, never a silent truncation.
 * The content is always NUL-terminated for convenience. keel_buf_free wipes.
 */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t alloc;
    size_t cap;
} keel_buf_t;

void keel_buf_init(keel_buf_t *b, size_t cap);
keel_status_t keel_buf_append(keel_buf_t *b, const void *p, size_t n) KEEL_MUST_CHECK;
keel_status_t keel_buf_printf(keel_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3))) KEEL_MUST_CHECK;
void keel_buf_reset(keel_buf_t *b);
void keel_buf_free(keel_buf_t *b);

/* The value of a hexadecimal digit in either case, or -1. */
int keel_hex_digit(char c);
/* Percent-decodes [s, s + n) into out (cap bytes with the NUL); false on a
 * bad escape, a NUL byte or no room. Callers check the bytes they allow. */
bool keel_pct_decode(const char *s, size_t n, char *out, size_t cap);

/* A writer with one sticky status, for renderers: after the first failure
 * (the buffer's cap, memory) every later write is skipped and `st` kept, so
 * the status is checked once at the end. */
typedef struct {
    keel_buf_t *b;
    keel_status_t st;
} keel_out_t;
void keel_out_put(keel_out_t *o, const void *p, size_t n);
void keel_out_puts(keel_out_t *o, const char *s);
void keel_out_printf(keel_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Bounded string helpers: KEEL_ERR_TOO_LARGE instead of truncating. */
keel_status_t keel_strlcpy(char *dst, const char *src, size_t cap) KEEL_MUST_CHECK;
keel_status_t keel_snprintf(char *dst, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4))) KEEL_MUST_CHECK;

/* Paths are capped; longer ones are errors. */
#define KEEL_PATH_MAX 1024
keel_status_t keel_path_join(char *out, size_t cap, const char *dir, const char *name) KEEL_MUST_CHECK;

/*
 * Files. Secrets are written with mode 0600 and directories made 0700.
 * keel_file_write_atomic is "atomic and committing": temp file in the same
 * directory, write, fsync, rename over the target, fsync the directory.
 * After a crash the target holds either the old or the new content.
 */
keel_status_t keel_file_write_atomic(const char *path, const void *data, size_t len,
                                     mode_t mode) KEEL_MUST_CHECK;
/*
 * Creates a new file (fails if it exists), writes and fsyncs it, without the
 * temp-and-rename dance: for files inside a staging directory that becomes
 * visible only through keel_rename_commit. The caller syncs the directories
 * (keel_dir_sync) before that commit.
 */
keel_status_t keel_file_write_new(const char *path, const void *data, size_t len,
                                  mode_t mode) KEEL_MUST_CHECK;
/* Like keel_file_write_atomic, but fails with KEEL_ERR_EXISTS instead of
 * replacing an existing file (commits with link(2), not rename(2)). */
keel_status_t keel_file_create_atomic(const char *path, const void *data, size_t len,
                                      mode_t mode) KEEL_MUST_CHECK;
/* Reads a whole file, failing with KEEL_ERR_TOO_LARGE past cap bytes. */
keel_status_t keel_file_read(const char *path, size_t cap, keel_buf_t *out) KEEL_MUST_CHECK;
/*
 * Opens a file that holds a secret (a PIN, a passphrase, a key-encryption
 * key): once, without following a link, and checked on that descriptor to be
 * a regular file no one else can read. KEEL_ERR_NOT_FOUND when absent,
 * KEEL_ERR_CONFIG when it is not such a file.
 */
keel_status_t keel_file_open_private(const char *path, int *fd) KEEL_MUST_CHECK;

/*
 * Reads a secret (a passphrase, a PIN, a lab's password) from a file opened
 * with keel_file_open_private, or from an environment variable: exactly one of
 * the two, never argv. Its first line goes to out (NUL-terminated, at most
 * cap - 1 bytes), its length to *len. KEEL_ERR_CONFIG for a missing source,
 * an empty, overlong or NUL-holding secret; KEEL_ERR_ARG for both or neither.
 * The caller wipes out.
 */
keel_status_t keel_secret_read(const char *file, const char *env, char *out, size_t cap, size_t *len)
    KEEL_MUST_CHECK;
/* The same from an open descriptor (already checked by the caller); `name`
 * is for messages. */
keel_status_t keel_fd_read(int fd, const char *name, size_t cap, keel_buf_t *out) KEEL_MUST_CHECK;
/* Appends and fsyncs (journals, CSV). Creates the file with mode if absent. */
keel_status_t keel_file_append_sync(const char *path, const void *data, size_t len,
                                    mode_t mode) KEEL_MUST_CHECK;
/* Overwrites a file with zeros, fsyncs, unlinks it and fsyncs its directory. */
keel_status_t keel_file_shred(const char *path) KEEL_MUST_CHECK;
/* Creates a directory (and fsyncs its parent). An existing one is accepted
 * only if it is a real directory owned by us and not writable by others. */
keel_status_t keel_dir_make(const char *path, mode_t mode) KEEL_MUST_CHECK;
keel_status_t keel_dir_sync(const char *path) KEEL_MUST_CHECK;
/* An output directory for others to read (reports, published files): made
 * 0755 whatever the umask, its parent synced (the parent must exist); an
 * existing one must be a directory. */
keel_status_t keel_dir_make_public(const char *path) KEEL_MUST_CHECK;
/* Writes DIR/NAME atomically, mode 0644 (a file for others to read); an
 * error names DIR/NAME. */
keel_status_t keel_file_publish(const char *dir, const char *name, const void *data, size_t len) KEEL_MUST_CHECK;
/* Renames and fsyncs the parent directory of `to` (commits a staged dir). */
keel_status_t keel_rename_commit(const char *from, const char *to) KEEL_MUST_CHECK;
/* Removes a directory tree (half-made staging directories) without ever
 * following a symbolic link out of it. */
keel_status_t keel_dir_remove_tree(const char *path) KEEL_MUST_CHECK;
int keel_path_exists(const char *path);

/*
 * Fault injection (the test profile only, KEEL_TEST_HOOKS): the N-th storage
 * operation (write, fsync or rename through the helpers above) fails with EIO,
 * as a power cut would leave it. Armed by keel_fault_arm() or by the
 * environment variable KEEL_FAULT_AT=N; KEEL_FAULT_MODE=kill makes the process
 * die with SIGKILL instead of returning the error. Other builds get inline
 * no-ops (keel_fault_count() returns 0): no symbol, no variable read, no
 * check left in the binary. Tests ask for the hooks as KEEL_FAULT_INJECTION.
 */
#ifdef KEEL_TEST_HOOKS
#ifndef KEEL_FAULT_INJECTION
#define KEEL_FAULT_INJECTION 1
#endif
void keel_fault_arm(unsigned long n);
unsigned long keel_fault_count(void);
/* Internal: returns nonzero when the current operation must fail. */
int keel_fault_hit(const char *op);
#else
static inline void keel_fault_arm(unsigned long n)
{
    (void)n;
}
static inline unsigned long keel_fault_count(void)
{
    return 0;
}
static inline int keel_fault_hit(const char *op)
{
    (void)op;
    return 0;
}
#endif

#endif

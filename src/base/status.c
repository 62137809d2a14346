/* Status names, the thread-local error message, logging and wiping. */
#include "keel/base.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

static _Thread_local char error_msg[KEEL_ERROR_MAX];
static keel_log_level_t log_level = KEEL_LOG_WARN;
static bool log_syslog;
static const char *log_prefix = "keel";

const char *keel_status_str(keel_status_t st)
{
    switch (st) {
    case KEEL_OK: return "ok";
    case KEEL_ERR_ARG: return "bad argument";
    case KEEL_ERR_NOMEM: return "out of memory";
    case KEEL_ERR_IO: return "i/o error";
    case KEEL_ERR_TOO_LARGE: return "too large";
    case KEEL_ERR_FORMAT: return "malformed";
    case KEEL_ERR_NOT_FOUND: return "not found";
    case KEEL_ERR_EXISTS: return "already exists";
    case KEEL_ERR_CRYPTO: return "crypto failure";
    case KEEL_ERR_VERIFY: return "verification failed";
    case KEEL_ERR_KEYSTORE: return "keystore failure";
    case KEEL_ERR_DB: return "database failure";
    case KEEL_ERR_UNSUPPORTED: return "unsupported";
    case KEEL_ERR_CONFIG: return "configuration error";
    case KEEL_ERR_BUSY: return "busy";
    }
    return "unknown";
}

/* In parentheses: not the analyzer's macro of keel/base.h. */
keel_status_t(keel_errorf)(keel_status_t st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    /* Truncation of a diagnostic is acceptable; it is never parsed. */
    (void)vsnprintf(error_msg, sizeof error_msg, fmt, ap);
    va_end(ap);
    return st;
}

const char *keel_error_message(void)
{
    return error_msg;
}

void keel_error_clear(void)
{
    error_msg[0] = '\0';
}

void keel_log_set_level(keel_log_level_t level)
{
    log_level = level;
}

bool keel_log_enabled(keel_log_level_t level)
{
#ifdef KEEL_LOG_NO_DEBUG
    if (level == KEEL_LOG_DEBUG)
        return false; /* compiled out: nothing to build for it */
#endif
    return level <= log_level;
}

void keel_log_to_syslog(const char *ident)
{
    if (ident != NULL) {
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
        log_syslog = true;
    } else if (log_syslog) {
        closelog();
        log_syslog = false;
    }
}

keel_status_t keel_log_level_parse(const char *s, keel_log_level_t *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; s != NULL && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (keel_log_level_t)i;
            return KEEL_OK;
        }
    return keel_errorf(KEEL_ERR_CONFIG, "log level must be error, warn, info or debug");
}

/* In parentheses: not the production profile's macro of keel/base.h. */
void(keel_log)(keel_log_level_t level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    if (level > log_level || (unsigned)level >= sizeof names / sizeof names[0])
        return;
    /* One line, one write: threads (keeld's workers) do not interleave. */
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* One record per line, whatever the arguments held: a control character
     * from outside data (a device's field name, a file name) cannot forge a
     * line of its own. */
    for (char *c = line; *c != '\0'; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    if (log_syslog) {
        syslog(prio[level], "%s", line);
        return;
    }
    fprintf(stderr, "%s: %s: %s\n", log_prefix, names[level], line);
}

void keel_log_set_prefix(const char *prefix)
{
    log_prefix = prefix != NULL ? prefix : "keel";
}

void keel_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        explicit_bzero(p, n);
}

double keel_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

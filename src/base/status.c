/* Status names, the thread-local error message, logging and wiping. */
#include "keel/base.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static _Thread_local char error_msg[KEEL_ERROR_MAX];
static keel_log_level_t log_level = KEEL_LOG_WARN;

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
    }
    return "unknown";
}

keel_status_t keel_errorf(keel_status_t st, const char *fmt, ...)
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

void keel_log(keel_log_level_t level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    if (level > log_level || (unsigned)level >= sizeof names / sizeof names[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "keel: %s: ", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
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

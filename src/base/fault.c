/*
 * Storage fault injection for power-cut tests. Compiled in only with
 * KEEL_FAULT_INJECTION; production builds get the no-op versions.
 */
#include "keel/base.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef KEEL_FAULT_INJECTION

static unsigned long fault_at;   /* 0 = disarmed */
static _Atomic unsigned long fault_ops; /* operations counted so far, from any thread */
static int fault_kill;
static int fault_env_read;

static void fault_read_env(void)
{
    if (fault_env_read)
        return;
    fault_env_read = 1;
    const char *at = getenv("KEEL_FAULT_AT");
    if (at != NULL && at[0] != '\0') {
        char *end = NULL;
        unsigned long n = strtoul(at, &end, 10);
        if (end != NULL && *end == '\0')
            fault_at = n;
    }
    const char *mode = getenv("KEEL_FAULT_MODE");
    fault_kill = mode != NULL && strcmp(mode, "kill") == 0;
}

void keel_fault_arm(unsigned long n)
{
    fault_env_read = 1;
    fault_at = n;
    fault_ops = 0;
}

unsigned long keel_fault_count(void)
{
    return fault_ops;
}

int keel_fault_hit(const char *op)
{
    fault_read_env();
    fault_ops++;
    if (fault_at == 0 || fault_ops != fault_at)
        return 0;
    if (fault_kill) {
        /* A power cut: no cleanup, no buffered output. */
        (void)raise(SIGKILL);
    }
    keel_log(KEEL_LOG_DEBUG, "fault injected at %s #%lu", op, fault_ops);
    return 1;
}

#else

void keel_fault_arm(unsigned long n)
{
    (void)n;
}

unsigned long keel_fault_count(void)
{
    return 0;
}

int keel_fault_hit(const char *op)
{
    (void)op;
    return 0;
}

#endif

/*
 * Storage fault injection for power-cut tests. Compiled in only with
 * KEEL_TEST_HOOKS (the test profile); other builds get the inline no-ops of
 * keel/base.h and this file is empty.
 */
#include "keel/base.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef KEEL_TEST_HOOKS
#include <stdatomic.h>
#include <threads.h>

static _Atomic unsigned long fault_at; /* 0 = disarmed */
static _Atomic unsigned long fault_ops; /* operations counted so far, from any thread */
static _Atomic int fault_kill;
static once_flag fault_env_once = ONCE_FLAG_INIT;

static void fault_read_env(void)
{
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
    call_once(&fault_env_once, fault_read_env); /* the environment must not override later */
    fault_at = n;
    fault_ops = 0;
}

unsigned long keel_fault_count(void)
{
    return fault_ops;
}

int keel_fault_hit(const char *op)
{
    call_once(&fault_env_once, fault_read_env);
    /* One atomic step: two threads can never both take the N-th slot. */
    unsigned long n = atomic_fetch_add(&fault_ops, 1) + 1;
    unsigned long at = fault_at;
    if (at == 0 || n != at)
        return 0;
    if (fault_kill) {
        /* A power cut: no cleanup, no buffered output. */
        (void)raise(SIGKILL);
    }
    keel_log(KEEL_LOG_DEBUG, "fault injected at %s #%lu", op, n);
    return 1;
}

#endif

/*
 * systemd's service notification protocol (sd_notify(3)), without libsystemd:
 * one datagram per state change on the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or '@' for the abstract namespace). Outside systemd
 * the variable is unset and every call is a no-op.
 */
#define _GNU_SOURCE
#include "keel/base.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void keel_notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (msg == NULL || path == NULL || path[0] == '\0')
        return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n >= sizeof sa.sun_path)
        return;
    memcpy(sa.sun_path, path, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        keel_log(KEEL_LOG_DEBUG, "sd_notify: socket: %s", strerror(errno));
        return;
    }
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
        keel_log(KEEL_LOG_DEBUG, "sd_notify: %s", strerror(errno));
    close(fd);
}

/* A strict decimal: digits only, no sign, no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || *s == '\0')
        return false;
    uint64_t v = 0;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9' || v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

uint64_t keel_notify_watchdog_usec(void)
{
    uint64_t usec = 0, pid = 0;
    if (!parse_u64(getenv("WATCHDOG_USEC"), &usec) || usec == 0)
        return 0;
    /* WATCHDOG_PID names the process meant; a child that inherited the
     * variables must not ping on its parent's behalf. */
    const char *p = getenv("WATCHDOG_PID");
    if (p != NULL && (!parse_u64(p, &pid) || pid != (uint64_t)getpid()))
        return 0;
    return usec;
}

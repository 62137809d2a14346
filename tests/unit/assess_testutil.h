/* The loopback targets of the keel assess unit tests: a socket on 127.0.0.1
 * on a port the kernel picks, a port nothing listens on, and the accept step
 * of a server thread. Nothing here reaches another host. */
#ifndef KEEL_ASSESS_TESTUTIL_H
#define KEEL_ASSESS_TESTUTIL_H

#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* A socket of `type` (SOCK_STREAM, SOCK_DGRAM) bound to 127.0.0.1 on a port
 * the kernel picks, in *port; a TCP one listens with `backlog` unless it is
 * negative. Fails the test when the system refuses. */
static inline int loopback_listen(int type, int backlog, unsigned *port)
{
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    if (type == SOCK_STREAM && backlog >= 0)
        assert_int_equal(listen(fd, backlog), 0);
    socklen_t al = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* A port nothing listens on: bound once, then given back. */
static inline unsigned loopback_free_port(int type)
{
    unsigned p = 0;
    close(loopback_listen(type, -1, &p));
    return p;
}

/* The next connection on the listening socket fd, waiting 20 ms at most (so
 * that a server thread sees its stop flag); -1 when none came. With
 * timeout_s > 0, reads and writes on it give up after that many seconds. */
static inline int loopback_accept(int fd, int timeout_s)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (poll(&pf, 1, 20) <= 0)
        return -1;
    int c = accept(fd, NULL, NULL);
    if (c >= 0 && timeout_s > 0) {
        struct timeval tv = {.tv_sec = timeout_s};
        (void)setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void)setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    return c;
}

#endif

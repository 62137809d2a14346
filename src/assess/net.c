/*
 * keel assess: the socket and TLS steps every probe takes the same way
 * (net.h). Non-blocking throughout, so that a silent or slow target costs at
 * most the caller's deadline.
 */
#include "net.h"

#include "keel/assess_probe.h"
#include "keel/base.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int keel_assess_wait_fd(int fd, short events, double deadline)
{
    for (;;) {
        double left = deadline - keel_now();
        if (left <= 0)
            return 0;
        struct pollfd pf = {.fd = fd, .events = events};
        int r = poll(&pf, 1, (int)(left * 1000.0) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        return r > 0;
    }
}

int keel_assess_tcp_connect(const struct sockaddr_storage *sa, socklen_t salen, double deadline, char *why,
                            size_t cap)
{
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, cap, "socket: %s", strerror(errno));
        return -1;
    }
    int err = 0;
    if (connect(fd, (const struct sockaddr *)sa, salen) != 0) {
        err = errno;
        if (err == EINPROGRESS) {
            socklen_t el = sizeof err;
            if (!keel_assess_wait_fd(fd, POLLOUT, deadline))
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
                err = errno;
        }
    }
    if (err != 0) {
        snprintf(why, cap, "tcp connect: %s", strerror(err));
        close(fd);
        return -1;
    }
    return fd;
}

int keel_assess_sni_ok(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) != 1 && inet_pton(AF_INET6, host, &a6) != 1 && host[0] != '[';
}

SSL *keel_assess_tls_new(SSL_CTX *ctx, int fd, const char *sni)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl != NULL && (SSL_set_fd(ssl, fd) != 1 || (sni != NULL && SSL_set_tlsext_host_name(ssl, sni) != 1))) {
        SSL_free(ssl);
        ssl = NULL;
    }
    return ssl;
}

int keel_assess_tls_handshake(SSL *ssl, int fd, double deadline, int *ssl_error)
{
    for (;;) {
        int rc = SSL_connect(ssl);
        if (rc == 1)
            return 1;
        int e = SSL_get_error(ssl, rc);
        *ssl_error = e;
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            return -1;
        if (!keel_assess_wait_fd(fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline))
            return 0;
    }
}

void keel_assess_ssl_reason(char *out, size_t cap, const char *fallback)
{
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e;
    const char *r = last ? ERR_reason_error_string(last) : NULL;
    snprintf(out, cap, "%s", r ? r : fallback);
}

void keel_assess_sigpipe_block(sigset_t *old)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    (void)pthread_sigmask(SIG_BLOCK, &s, old);
}

void keel_assess_sigpipe_restore(const sigset_t *old)
{
    sigset_t s, pend;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    if (sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE) == 1 && sigismember(old, SIGPIPE) != 1) {
        struct timespec zero = {0, 0};
        (void)sigtimedwait(&s, NULL, &zero);
    }
    (void)pthread_sigmask(SIG_SETMASK, old, NULL);
}

/*
 * Whether `host` (a URL's host part) names this machine or a private network:
 * loopback, RFC 1918, CGNAT, link-local, unique-local, unspecified. A
 * published document on the internet must not redirect the lab's fetch there
 * (the device's vendor would read the lab's own network through the report).
 * A name that does not resolve is not internal: the fetch fails on its own.
 */
int keel_assess_host_internal(const char *host)
{
    char h[KEEL_PROBE_HOST_MAX + 1], text[64];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') { /* an IPv6 literal as curl gives it */
        host++;
        n -= 2;
    }
    if (n == 0 || n > KEEL_PROBE_HOST_MAX)
        return 0;
    memcpy(h, host, n);
    h[n] = '\0';
    struct sockaddr_storage sa;
    socklen_t salen;
    if (keel_assess_resolve(h, 0, &sa, &salen, text, sizeof text) != KEEL_OK) {
        keel_error_clear();
        return 0;
    }
    const uint8_t *b;
    if (sa.ss_family == AF_INET) {
        b = (const uint8_t *)&((const struct sockaddr_in *)&sa)->sin_addr;
    } else {
        const uint8_t *v6 = (const uint8_t *)&((const struct sockaddr_in6 *)&sa)->sin6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        static const uint8_t zero[15] = {0};
        if (memcmp(v6, mapped, 12) != 0) {
            return (memcmp(v6, zero, 15) == 0 && v6[15] <= 1) || /* :: and ::1 */
                   (v6[0] & 0xfe) == 0xfc ||                      /* fc00::/7 */
                   (v6[0] == 0xfe && (v6[1] & 0xc0) == 0x80);     /* fe80::/10 */
        }
        b = v6 + 12;
    }
    return b[0] == 0 || b[0] == 10 || b[0] == 127 || (b[0] == 169 && b[1] == 254) ||
           (b[0] == 172 && (b[1] & 0xf0) == 16) || (b[0] == 192 && b[1] == 168) ||
           (b[0] == 100 && (b[1] & 0xc0) == 64);
}

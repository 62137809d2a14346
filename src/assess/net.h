/*
 * src/assess/net.h - what the probes share on the wire: a bounded wait on a
 * socket, a TCP connect with a deadline, and the client side of a TLS
 * handshake on a non-blocking socket. Deadlines are keel_now() seconds. Not a
 * public header.
 */
#ifndef KEEL_ASSESS_NET_H
#define KEEL_ASSESS_NET_H

#include <openssl/ssl.h>
#include <signal.h>
#include <stddef.h>
#include <sys/socket.h>

/* Waits until fd is ready for `events` (POLLIN, POLLOUT), retrying after
 * EINTR. 1 when it is, 0 when the deadline passed or poll failed. */
int keel_assess_wait_fd(int fd, short events, double deadline);

/* A non-blocking TCP socket connected to sa before the deadline; -1 with the
 * reason in why ("socket: ..." or "tcp connect: ..."). The caller closes it. */
int keel_assess_tcp_connect(const struct sockaddr_storage *sa, socklen_t salen, double deadline, char *why,
                            size_t cap);

/* 1 when host is a name to send as SNI: never an address literal (RFC 6066),
 * "[::1]" included. */
int keel_assess_sni_ok(const char *host);

/* An SSL of ctx on the connected socket fd, with sni as the server name when
 * not NULL; NULL when OpenSSL refuses (the reason on its error queue). The
 * caller frees it; fd stays the caller's. */
SSL *keel_assess_tls_new(SSL_CTX *ctx, int fd, const char *sni);

/* SSL_connect on ssl over the non-blocking socket fd until the handshake is
 * done (1), the deadline passes (0) or it fails (-1; *ssl_error holds
 * SSL_get_error's code; errno and the error queue as SSL_connect left them). */
int keel_assess_tls_handshake(SSL *ssl, int fd, double deadline, int *ssl_error);

/* The reason of the last error on OpenSSL's queue, which it empties, or
 * fallback when there is none. */
void keel_assess_ssl_reason(char *out, size_t cap, const char *fallback);

/* OpenSSL writes to the socket with write(2): a target that resets the
 * connection would raise SIGPIPE and end the whole program (a hostile target
 * must not). keel_assess_sigpipe_block blocks it for the calling thread, the
 * old mask in *old; keel_assess_sigpipe_restore consumes one that arrived
 * meanwhile (unless it was blocked before) and restores *old. */
void keel_assess_sigpipe_block(sigset_t *old);
void keel_assess_sigpipe_restore(const sigset_t *old);

/* Whether `host` (a name, an address, or an IPv6 literal in brackets) is this
 * machine or a private network: loopback, RFC 1918, CGNAT, link-local,
 * unique-local, unspecified. A name that does not resolve is not. */
int keel_assess_host_internal(const char *host);

#endif

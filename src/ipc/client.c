/*
 * The product app's side of keeld's socket (docs/ipc.md): blocking calls
 * with a deadline each, over a non-blocking socket and poll(), so an app's
 * control loop never waits on keeld longer than it chose. Commands that
 * arrive while a reply is awaited are queued for keel_ipc_next_command.
 * No libevent: the keel CLI and product apps link this.
 */
#include "proto.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Commands kept while the app is not asking for them; past this the
 * oldest is dropped (and logged) rather than growing without bound. */
#define QUEUE_MAX 64

typedef struct ipc_cmd {
    struct ipc_cmd *next;
    char *name;
    json_t *payload;
} ipc_cmd_t;

struct keel_ipc_client {
    int fd;
    int timeout_ms;
    ipc_cmd_t *head, *tail;
    size_t queued;
    size_t in_len;
    char in[KEEL_IPC_LINE_MAX];
    char out[KEEL_IPC_LINE_MAX];
};

/* The connection can no longer be trusted to pair replies with requests. */
static keel_status_t broken(keel_ipc_client_t *c, keel_status_t st)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    return st;
}

keel_status_t keel_ipc_connect(const char *path, keel_ipc_client_t **out)
{
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keel_ipc_connect: no output");
    *out = NULL;
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (path == NULL || path[0] == '\0' || keel_strlcpy(sun.sun_path, path, sizeof sun.sun_path) != KEEL_OK)
        return keel_errorf(KEEL_ERR_ARG, "the socket path is empty or longer than %zu bytes",
                           sizeof sun.sun_path - 1);
    keel_ipc_client_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    c->timeout_ms = KEEL_IPC_TIMEOUT_MS;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd < 0) {
        free(c);
        return keel_errorf(KEEL_ERR_IO, "socket: %s", strerror(errno));
    }
    if (connect(c->fd, (const struct sockaddr *)&sun, sizeof sun) != 0) {
        int err = errno;
        close(c->fd);
        free(c);
        /* A full backlog is EAGAIN on a non-blocking Unix socket. */
        return keel_errorf(KEEL_ERR_IO, "cannot connect to %s: %s", path,
                           err == EAGAIN ? "keeld is busy" : strerror(err));
    }
    *out = c;
    return KEEL_OK;
}

void keel_ipc_close(keel_ipc_client_t *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    while (c->head != NULL) {
        ipc_cmd_t *q = c->head;
        c->head = q->next;
        free(q->name);
        json_decref(q->payload);
        free(q);
    }
    free(c);
}

int keel_ipc_fd(const keel_ipc_client_t *c)
{
    return c != NULL ? c->fd : -1;
}

void keel_ipc_set_timeout(keel_ipc_client_t *c, int timeout_ms)
{
    if (c != NULL)
        c->timeout_ms = timeout_ms > 0 ? timeout_ms : KEEL_IPC_TIMEOUT_MS;
}

/* Milliseconds left until deadline (a keel_now() value; < 0: none). */
static int remaining_ms(double deadline)
{
    if (deadline < 0)
        return -1;
    double left = (deadline - keel_now()) * 1000.0;
    if (left <= 0)
        return 0;
    return left > 1e9 ? 1000000000 : (int)left + 1;
}

static keel_status_t wait_fd(keel_ipc_client_t *c, short events, double deadline)
{
    for (;;) {
        struct pollfd p = {.fd = c->fd, .events = events};
        int ms = remaining_ms(deadline);
        int n = poll(&p, 1, ms);
        if (n > 0)
            return KEEL_OK;
        if (n == 0)
            return keel_errorf(KEEL_ERR_NOT_FOUND, "timed out");
        if (errno != EINTR)
            return broken(c, keel_errorf(KEEL_ERR_IO, "poll: %s", strerror(errno)));
    }
}

/* One complete line from the buffer, or reads more until one arrives.
 * KEEL_ERR_NOT_FOUND at the deadline (the connection stays usable). */
static keel_status_t read_line(keel_ipc_client_t *c, double deadline, ipc_message_t *m)
{
    for (;;) {
        char *nl = memchr(c->in, '\n', c->in_len);
        if (nl != NULL) {
            size_t len = (size_t)(nl - c->in);
            keel_status_t st = ipc_message_parse(c->in, len, m);
            c->in_len -= len + 1;
            memmove(c->in, nl + 1, c->in_len);
            return st == KEEL_OK ? KEEL_OK : broken(c, st);
        }
        if (c->fd < 0)
            return keel_errorf(KEEL_ERR_IO, "the connection to keeld is closed");
        if (c->in_len == sizeof c->in)
            return broken(c, keel_errorf(KEEL_ERR_TOO_LARGE, "keeld sent a line over %u bytes",
                                         KEEL_IPC_LINE_MAX));
        ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (n > 0) {
            c->in_len += (size_t)n;
            continue;
        }
        if (n == 0)
            return broken(c, keel_errorf(KEEL_ERR_IO, "keeld closed the connection"));
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return broken(c, keel_errorf(KEEL_ERR_IO, "keeld's socket: %s", strerror(errno)));
        keel_status_t st = wait_fd(c, POLLIN, deadline);
        if (st != KEEL_OK)
            return st;
    }
}

static keel_status_t enqueue(keel_ipc_client_t *c, ipc_message_t *m)
{
    ipc_cmd_t *q = calloc(1, sizeof *q);
    if (q == NULL || (q->name = strdup(m->name)) == NULL) {
        free(q);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    q->payload = json_incref(m->payload);
    if (c->queued == QUEUE_MAX) {
        ipc_cmd_t *old = c->head;
        keel_log(KEEL_LOG_WARN, "ipc: the app did not take its commands; dropped \"%s\"", old->name);
        c->head = old->next;
        if (c->head == NULL)
            c->tail = NULL;
        free(old->name);
        json_decref(old->payload);
        free(old);
        c->queued--;
    }
    if (c->tail != NULL)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    c->queued++;
    return KEEL_OK;
}

/* keeld's error reply as a status, with its message. */
static keel_status_t reply_error(const ipc_message_t *m)
{
    return keel_errorf(ipc_error_status(m->error), "keeld: %s [%s]", m->message[0] ? m->message : "refused",
                       m->error);
}

/* After a failed send: keeld may have said why it closed (forbidden, busy). */
static keel_status_t send_failed(keel_ipc_client_t *c, int err)
{
    ipc_message_t m = {0};
    if (c->fd >= 0 && read_line(c, keel_now(), &m) == KEEL_OK) {
        bool said = !m.is_command && !m.ok;
        keel_status_t st = said ? reply_error(&m) : KEEL_OK;
        ipc_message_clear(&m);
        if (said)
            return broken(c, st);
    }
    return broken(c, keel_errorf(KEEL_ERR_IO, "keeld's socket: %s", strerror(err)));
}

/* Sends one request and waits for its reply (in *m when KEEL_OK). */
static keel_status_t request(keel_ipc_client_t *c, size_t len, ipc_message_t *m)
{
    memset(m, 0, sizeof *m);
    if (c->fd < 0)
        return keel_errorf(KEEL_ERR_IO, "the connection to keeld is closed");
    double deadline = keel_now() + c->timeout_ms / 1000.0;
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, c->out + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            keel_status_t st = wait_fd(c, POLLOUT, deadline);
            if (st == KEEL_ERR_NOT_FOUND)
                return broken(c, keel_errorf(KEEL_ERR_IO, "keeld did not take the request within %d ms",
                                             c->timeout_ms));
            if (st != KEEL_OK)
                return st;
            continue;
        }
        return send_failed(c, n < 0 ? errno : EPIPE);
    }
    for (;;) {
        keel_status_t st = read_line(c, deadline, m);
        if (st == KEEL_ERR_NOT_FOUND)
            /* A late reply would be taken for the next request's. */
            return broken(c, keel_errorf(KEEL_ERR_IO, "keeld did not answer within %d ms", c->timeout_ms));
        if (st != KEEL_OK)
            return st;
        if (!m->is_command)
            break;
        st = enqueue(c, m);
        ipc_message_clear(m);
        if (st != KEEL_OK)
            return broken(c, st);
    }
    if (!m->ok) {
        keel_status_t st = reply_error(m);
        /* forbidden and busy come with keeld closing the connection. A
         * too-large does only for an over-long line, which this client never
         * sends (ipc_request_dump caps it): here it is a handler's answer (a
         * full outbox) on a connection that stays open. */
        if (strcmp(m->error, IPC_E_FORBIDDEN) == 0 || strcmp(m->error, IPC_E_BUSY) == 0)
            (void)broken(c, st);
        ipc_message_clear(m);
        return st;
    }
    return KEEL_OK;
}

/* Builds one request and exchanges it; *m is the reply when KEEL_OK. */
static keel_status_t call(keel_ipc_client_t *c, ipc_op_t op, json_t *data, const char *msgid, bool alert,
                          ipc_message_t *m)
{
    size_t len = 0;
    keel_status_t st = ipc_request_dump(op, data, msgid, alert, c->out, &len);
    if (st != KEEL_OK)
        return st;
    return request(c, len, m);
}

static keel_status_t publish(keel_ipc_client_t *c, ipc_op_t op, json_t *data, bool alert, const char *msgid,
                             uint64_t *seq)
{
    if (c == NULL || data == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no client or no data");
    ipc_message_t m;
    keel_status_t st = call(c, op, data, msgid, alert, &m);
    if (st != KEEL_OK)
        return st;
    /* no seq: accepted, nothing queued (every field withheld for lack of consent) */
    if (seq != NULL)
        *seq = m.seq;
    ipc_message_clear(&m);
    return st;
}

keel_status_t keel_ipc_publish(keel_ipc_client_t *c, json_t *telemetry, const char *msgid, uint64_t *seq)
{
    return publish(c, IPC_OP_PUBLISH, telemetry, false, msgid, seq);
}

keel_status_t keel_ipc_event(keel_ipc_client_t *c, json_t *event, bool alert, const char *msgid, uint64_t *seq)
{
    return publish(c, IPC_OP_EVENT, event, alert, msgid, seq);
}

static keel_status_t state_op(keel_ipc_client_t *c, json_t *patch, json_t **state)
{
    if (c == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no client");
    if (state != NULL)
        *state = NULL;
    ipc_message_t m;
    keel_status_t st = call(c, IPC_OP_STATE, patch, NULL, false, &m);
    if (st != KEEL_OK)
        return st;
    if (m.state == NULL)
        st = broken(c, keel_errorf(KEEL_ERR_FORMAT, "keeld's reply has no state"));
    else if (state != NULL)
        *state = json_incref(m.state);
    ipc_message_clear(&m);
    return st;
}

keel_status_t keel_ipc_state_get(keel_ipc_client_t *c, json_t **state)
{
    if (state == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no output");
    return state_op(c, NULL, state);
}

keel_status_t keel_ipc_state_set(keel_ipc_client_t *c, json_t *patch, json_t **state)
{
    if (patch == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no patch");
    return state_op(c, patch, state);
}

keel_status_t keel_ipc_listen(keel_ipc_client_t *c)
{
    if (c == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no client");
    ipc_message_t m;
    keel_status_t st = call(c, IPC_OP_LISTEN, NULL, NULL, false, &m);
    if (st == KEEL_OK)
        ipc_message_clear(&m);
    return st;
}

keel_status_t keel_ipc_next_command(keel_ipc_client_t *c, int timeout_ms, char **name, json_t **payload)
{
    if (c == NULL || name == NULL || payload == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keel_ipc_next_command: missing argument");
    *name = NULL;
    *payload = NULL;
    if (c->head == NULL) {
        double deadline = timeout_ms < 0 ? -1.0 : keel_now() + timeout_ms / 1000.0;
        ipc_message_t m;
        keel_status_t st = read_line(c, deadline, &m);
        if (st == KEEL_ERR_NOT_FOUND)
            return keel_errorf(KEEL_ERR_NOT_FOUND, "no command");
        if (st != KEEL_OK)
            return st;
        if (!m.is_command) {
            /* Unasked-for replies are keeld's parting word (forbidden, busy). */
            st = m.ok ? keel_errorf(KEEL_ERR_FORMAT, "keeld sent a reply nobody asked for") : reply_error(&m);
            ipc_message_clear(&m);
            return broken(c, st);
        }
        st = enqueue(c, &m);
        ipc_message_clear(&m);
        if (st != KEEL_OK)
            return st;
    }
    ipc_cmd_t *q = c->head;
    c->head = q->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->queued--;
    *name = q->name;
    *payload = q->payload;
    free(q);
    return KEEL_OK;
}

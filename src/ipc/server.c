/*
 * keeld's side of the product-app socket (docs/internals/ipc.md): a Unix
 * stream socket on keeld's libevent loop. Who may connect is decided by the
 * kernel's record of the peer (SO_PEERCRED, SO_PEERGROUPS), never by
 * anything the peer says. Every buffer a client fills is capped: a line at
 * KEEL_IPC_LINE_MAX, unread input at IN_MAX, unread output at OUT_MAX.
 */
#define _GNU_SOURCE
#include "proto.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Replies and commands a client has not read yet; past this it is cut off
 * rather than letting one stuck app grow keeld's memory. */
#define OUT_MAX (256u * 1024u)
/* Input read ahead of the parser (complete lines are consumed at once, so
 * what stays is one partial line under KEEL_IPC_LINE_MAX). */
#define IN_MAX (4u * KEEL_IPC_LINE_MAX)
/* Consecutive bad requests before the connection is closed. */
#define ERRORS_MAX 16
/* Requests handled in one handler transaction. */
#define BATCH_MAX 64
/* How long a closing connection may take to flush its last lines. */
#define CLOSE_GRACE_S 2
/* Supplementary groups looked at for [ipc] group (the kernel caps them at 65536). */
#define GROUPS_MAX 65536
/* At most one log line per second for refused or excess connections. */
#define LOG_INTERVAL_S 1.0

typedef struct ipc_client {
    keel_ipc_server_t *s;
    struct bufferevent *bev;
    struct ipc_client *prev, *next;
    uid_t uid;
    pid_t pid;
    unsigned errors; /* consecutive bad requests */
    bool listening;
    bool closing;
} ipc_client_t;

typedef struct {
    keel_status_t st;
    const char *code;
    char message[IPC_MESSAGE_MAX];
    uint64_t seq;
    bool dup;
    bool listen;
    json_t *state;
} ipc_result_t;

struct keel_ipc_server {
    struct event_base *base;
    keel_ipc_handlers_t h;
    uid_t allow_uid;
    gid_t allow_gid;
    unsigned max_clients;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t dev;
    ino_t ino;
    struct evconnlistener *lev;
    struct event *resume;
    ipc_client_t *clients;
    unsigned n_clients;
    double last_log;
    unsigned suppressed;
    char line[KEEL_IPC_LINE_MAX];
    char out[KEEL_IPC_LINE_MAX];
    ipc_request_t reqs[BATCH_MAX];
    ipc_result_t res[BATCH_MAX];
};

/* Refusals are logged, but a peer that loops on connect() must not fill the log. */
static void log_limited(keel_ipc_server_t *s, const char *what, const struct ucred *cr)
{
    double now = keel_now();
    if (s->last_log != 0 && now - s->last_log < LOG_INTERVAL_S) {
        s->suppressed++;
        return;
    }
    keel_log(KEEL_LOG_WARN, "ipc: %s (uid %u, gid %u, pid %d)%s", what, (unsigned)cr->uid, (unsigned)cr->gid,
             (int)cr->pid, s->suppressed ? "; more like it were not logged" : "");
    s->last_log = now;
    s->suppressed = 0;
}

/* ---- clients ---------------------------------------------------------------- */

static void client_free(ipc_client_t *cl)
{
    keel_ipc_server_t *s = cl->s;
    if (cl->prev != NULL)
        cl->prev->next = cl->next;
    else
        s->clients = cl->next;
    if (cl->next != NULL)
        cl->next->prev = cl->prev;
    s->n_clients--;
    bufferevent_free(cl->bev);
    free(cl);
}

static void closing_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    client_free(arg);
}

/* A closing client whose last write failed or timed out. */
static void closing_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    client_free(arg);
}

/* Lets the last lines (an error reply) reach the client, then closes. */
static void client_close_later(ipc_client_t *cl)
{
    cl->closing = true;
    bufferevent_disable(cl->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(cl->bev)) == 0) {
        client_free(cl);
        return;
    }
    struct timeval grace = {CLOSE_GRACE_S, 0};
    bufferevent_set_timeouts(cl->bev, NULL, &grace);
    bufferevent_setcb(cl->bev, NULL, closing_write_cb, closing_event_cb, cl);
}

/* Queues a line; false when the client was cut off for not reading. */
static bool client_send(ipc_client_t *cl, const char *line, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(cl->bev);
    if (bufferevent_write(cl->bev, line, len) != 0 || evbuffer_get_length(out) > OUT_MAX) {
        keel_log(KEEL_LOG_WARN, "ipc: a client (uid %u, pid %d) does not read what keeld sends; disconnected",
                 (unsigned)cl->uid, (int)cl->pid);
        client_free(cl);
        return false;
    }
    return true;
}

static bool client_error(ipc_client_t *cl, const char *code, const char *message)
{
    keel_ipc_server_t *s = cl->s;
    size_t n = ipc_reply_error(code, message, s->out, sizeof s->out);
    return client_send(cl, s->out, n);
}

static bool request_writes(const ipc_request_t *r)
{
    return r->op == IPC_OP_PUBLISH || r->op == IPC_OP_EVENT || (r->op == IPC_OP_STATE && r->data != NULL);
}

static void result_error(ipc_result_t *r, keel_status_t st, const char *code, const char *prefix)
{
    r->st = st;
    r->code = code;
    json_decref(r->state);
    r->state = NULL;
    if (keel_snprintf(r->message, sizeof r->message, "%s%s", prefix, keel_error_message()) != KEEL_OK)
        r->message[sizeof r->message - 1] = '\0';
}

static void run_one(keel_ipc_server_t *s, const ipc_request_t *q, ipc_result_t *r, bool stored)
{
    const keel_ipc_handlers_t *h = &s->h;
    keel_status_t st = KEEL_OK;
    if (request_writes(q) && !stored) {
        r->st = KEEL_ERR_IO;
        r->code = IPC_E_UNAVAILABLE;
        return;
    }
    keel_error_clear();
    switch (q->op) {
    case IPC_OP_PUBLISH:
    case IPC_OP_EVENT: {
        keel_ipc_kind_t kind = q->op == IPC_OP_PUBLISH ? KEEL_IPC_TELEMETRY : q->alert ? KEEL_IPC_ALERT : KEEL_IPC_EVENT;
        st = h->publish(h->arg, kind, q->data, q->msgid, &r->seq, &r->dup);
        break;
    }
    case IPC_OP_STATE:
        if (q->data != NULL)
            st = h->state_set != NULL ? h->state_set(h->arg, q->data, &r->state)
                                      : keel_errorf(KEEL_ERR_UNSUPPORTED, "keeld keeps no product state");
        else
            st = h->state_get != NULL ? h->state_get(h->arg, &r->state)
                                      : keel_errorf(KEEL_ERR_UNSUPPORTED, "keeld keeps no product state");
        break;
    case IPC_OP_LISTEN: r->listen = true; break;
    }
    if (st != KEEL_OK)
        result_error(r, st, ipc_error_code(st), "");
}

/* One transaction for the requests of one read (n parsed into s->reqs,
 * s->res[i].code set where parsing failed). */
static void run_batch(keel_ipc_server_t *s, size_t n)
{
    const keel_ipc_handlers_t *h = &s->h;
    bool writes = false;
    for (size_t i = 0; i < n; i++)
        writes |= s->res[i].code == NULL && request_writes(&s->reqs[i]);
    keel_status_t bst = KEEL_OK;
    char why[IPC_MESSAGE_MAX] = "";
    if (writes && h->batch_begin != NULL) {
        keel_error_clear();
        bst = h->batch_begin(h->arg);
        if (bst != KEEL_OK && keel_snprintf(why, sizeof why, "not stored: %s", keel_error_message()) != KEEL_OK)
            why[0] = '\0';
    }
    for (size_t i = 0; i < n; i++) {
        if (s->res[i].code != NULL)
            continue;
        run_one(s, &s->reqs[i], &s->res[i], bst == KEEL_OK);
        if (s->res[i].st != KEEL_OK && s->res[i].message[0] == '\0' && why[0] != '\0')
            memcpy(s->res[i].message, why, sizeof why);
    }
    if (writes && bst == KEEL_OK && h->batch_end != NULL) {
        keel_error_clear();
        keel_status_t est = h->batch_end(h->arg, true);
        if (est != KEEL_OK) {
            /* Nothing of the batch is durable, and a read in it may have seen
             * what was rolled back: no reply of it may say ok. */
            keel_log(KEEL_LOG_ERROR, "ipc: a batch of %zu requests was not stored: %s", n, keel_error_message());
            for (size_t i = 0; i < n; i++)
                if (s->res[i].code == NULL)
                    result_error(&s->res[i], KEEL_ERR_IO, IPC_E_UNAVAILABLE, "not stored: ");
        }
    }
}

/* Writes the batch's replies in request order; false when the client is gone. */
static bool send_replies(ipc_client_t *cl, size_t n)
{
    keel_ipc_server_t *s = cl->s;
    bool alive = true;
    for (size_t i = 0; i < n; i++) {
        ipc_result_t *r = &s->res[i];
        if (!alive)
            goto next;
        if (r->code == NULL) {
            size_t len = 0;
            keel_status_t st = ipc_reply_ok(r->seq, r->dup, r->state, s->out, sizeof s->out, &len);
            if (st == KEEL_OK) {
                alive = client_send(cl, s->out, len);
                if (alive && r->listen)
                    cl->listening = true;
            } else {
                alive = client_error(cl, ipc_error_code(st), keel_error_message());
            }
        } else {
            alive = client_error(cl, r->code, r->message);
        }
    next:
        json_decref(r->state);
        ipc_request_clear(&s->reqs[i]);
        memset(r, 0, sizeof *r);
    }
    return alive;
}

static void client_read_cb(struct bufferevent *bev, void *arg)
{
    ipc_client_t *cl = arg;
    keel_ipc_server_t *s = cl->s;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t n = 0;
        bool too_large = false;
        while (n < BATCH_MAX) {
            size_t eol_len = 0;
            struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
            if (p.pos < 0) {
                too_large = evbuffer_get_length(in) >= KEEL_IPC_LINE_MAX;
                break;
            }
            size_t len = (size_t)p.pos;
            if (len + 1 > KEEL_IPC_LINE_MAX) {
                too_large = true;
                break;
            }
            if (evbuffer_remove(in, s->line, len) != (int)len || evbuffer_drain(in, eol_len) != 0) {
                client_free(cl);
                return;
            }
            ipc_result_t *r = &s->res[n];
            memset(r, 0, sizeof *r);
            keel_status_t st = ipc_request_parse(s->line, len, &s->reqs[n]);
            if (st != KEEL_OK) {
                result_error(r, st, st == KEEL_ERR_TOO_LARGE ? IPC_E_TOO_LARGE : IPC_E_BAD_REQUEST, "");
                cl->errors++;
            } else {
                cl->errors = 0;
            }
            n++;
        }
        if (n > 0) {
            run_batch(s, n);
            if (!send_replies(cl, n))
                return;
        }
        if (too_large) {
            keel_log(KEEL_LOG_WARN, "ipc: a client (uid %u, pid %d) sent a line over %u bytes; disconnected",
                     (unsigned)cl->uid, (int)cl->pid, KEEL_IPC_LINE_MAX);
            char msg[64];
            if (keel_snprintf(msg, sizeof msg, "a line is at most %u bytes", KEEL_IPC_LINE_MAX) != KEEL_OK)
                msg[0] = '\0';
            if (client_error(cl, IPC_E_TOO_LARGE, msg))
                client_close_later(cl);
            return;
        }
        if (cl->errors >= ERRORS_MAX) {
            keel_log(KEEL_LOG_WARN, "ipc: a client (uid %u, pid %d) sent %u bad requests in a row; disconnected",
                     (unsigned)cl->uid, (int)cl->pid, cl->errors);
            client_close_later(cl);
            return;
        }
        if (n < BATCH_MAX)
            return;
    }
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
    ipc_client_t *cl = arg;
    /* A client that shut down its sending side still gets its replies. */
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        client_close_later(cl);
        return;
    }
    client_free(cl);
}

/* ---- accepting ---------------------------------------------------------------- */

/* One line to a connection that is not kept; it may not be read, and that is fine. */
static void say_and_close(keel_ipc_server_t *s, evutil_socket_t fd, const char *code, const char *message)
{
    size_t n = ipc_reply_error(code, message, s->out, sizeof s->out);
    ssize_t w = send(fd, s->out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)w;
    evutil_closesocket(fd);
}

static bool in_groups(evutil_socket_t fd, gid_t gid)
{
#ifdef SO_PEERGROUPS
    /* The peer's supplementary groups as they were at connect(): SO_PEERCRED
     * has only the primary one, and /proc/<pid> could be another process by
     * the time it is read. */
    gid_t small[64];
    gid_t *g = small;
    socklen_t len = sizeof small;
    bool found = false;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) != 0) {
        if (errno != ERANGE || len > GROUPS_MAX * sizeof(gid_t) || (g = malloc(len)) == NULL)
            return false;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) != 0)
            len = 0;
    }
    for (size_t i = 0; i < len / sizeof(gid_t); i++)
        found |= g[i] == gid;
    if (g != small)
        free(g);
    return found;
#else
    (void)fd;
    (void)gid;
    return false;
#endif
}

static bool peer_allowed(const keel_ipc_server_t *s, evutil_socket_t fd, const struct ucred *cr)
{
    if (cr->uid == getuid())
        return true;
    if (s->allow_uid != (uid_t)-1 && cr->uid == s->allow_uid)
        return true;
    if (s->allow_gid != (gid_t)-1 && (cr->gid == s->allow_gid || in_groups(fd, s->allow_gid)))
        return true;
    return false;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)lev;
    (void)sa;
    (void)salen;
    keel_ipc_server_t *s = arg;
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || len != sizeof cr) {
        keel_log(KEEL_LOG_WARN, "ipc: cannot read a peer's credentials: %s", strerror(errno));
        evutil_closesocket(fd);
        return;
    }
    if (!peer_allowed(s, fd, &cr)) {
        log_limited(s, "refused a connection from a user that is not allowed", &cr);
        say_and_close(s, fd, IPC_E_FORBIDDEN, "this user is not allowed on keeld's socket");
        return;
    }
    if (s->n_clients >= s->max_clients) {
        log_limited(s, "refused a connection: max_clients reached", &cr);
        say_and_close(s, fd, IPC_E_BUSY, "too many clients");
        return;
    }
    ipc_client_t *cl = calloc(1, sizeof *cl);
    struct bufferevent *bev = cl != NULL ? bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (bev == NULL) {
        free(cl);
        keel_log(KEEL_LOG_ERROR, "ipc: out of memory for a connection; it is dropped");
        evutil_closesocket(fd);
        return;
    }
    cl->s = s;
    cl->bev = bev;
    cl->uid = cr.uid;
    cl->pid = cr.pid;
    cl->next = s->clients;
    if (s->clients != NULL)
        s->clients->prev = cl;
    s->clients = cl;
    s->n_clients++;
    bufferevent_setwatermark(bev, EV_READ, 0, IN_MAX);
    bufferevent_setcb(bev, client_read_cb, NULL, client_event_cb, cl);
    if (bufferevent_enable(bev, EV_READ | EV_WRITE) != 0)
        client_free(cl);
    keel_log(KEEL_LOG_DEBUG, "ipc: a client connected (uid %u, pid %d)", (unsigned)cr.uid, (int)cr.pid);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    keel_ipc_server_t *s = arg;
    if (evconnlistener_enable(s->lev) != 0)
        keel_log(KEEL_LOG_ERROR, "ipc: cannot resume accepting connections");
}

/* accept() failing for lack of descriptors would fire again at once, forever:
 * pause accepting for a second instead. */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    keel_ipc_server_t *s = arg;
    keel_log(KEEL_LOG_WARN, "ipc: accept: %s; pausing for a second", strerror(errno));
    struct timeval one = {1, 0};
    if (evconnlistener_disable(lev) != 0 || evtimer_add(s->resume, &one) != 0)
        keel_log(KEEL_LOG_ERROR, "ipc: cannot pause accepting connections");
}

/* ---- the socket file ------------------------------------------------------------- */

/* Only a socket nobody listens on any more may be replaced. */
static keel_status_t clear_stale(const char *path, const struct sockaddr_un *sun)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT)
            return KEEL_OK;
        return keel_errorf(KEEL_ERR_IO, "ipc socket %s: %s", path, strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return keel_errorf(KEEL_ERR_EXISTS, "ipc socket %s exists and is not a socket; refusing to replace it",
                           path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return keel_errorf(KEEL_ERR_IO, "socket: %s", strerror(errno));
    int rc = connect(fd, (const struct sockaddr *)sun, sizeof *sun);
    int err = errno;
    close(fd);
    if (rc == 0 || err == EAGAIN)
        return keel_errorf(KEEL_ERR_EXISTS, "ipc socket %s is in use (another keeld?)", path);
    if (err != ECONNREFUSED)
        return keel_errorf(KEEL_ERR_IO, "ipc socket %s: %s", path, strerror(err));
    if (unlink(path) != 0 && errno != ENOENT)
        return keel_errorf(KEEL_ERR_IO, "cannot remove the stale socket %s: %s", path, strerror(errno));
    keel_log(KEEL_LOG_INFO, "ipc: replaced the stale socket %s", path);
    return KEEL_OK;
}

static keel_status_t bind_socket(keel_ipc_server_t *s, int *out)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, s->path, strlen(s->path) + 1);
    keel_status_t st = clear_stale(s->path, &sun);
    if (st != KEEL_OK)
        return st;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return keel_errorf(KEEL_ERR_IO, "socket: %s", strerror(errno));
    /* The file is born 0660 at most: no moment in which others may connect. */
    mode_t old = umask(0117);
    int rc = bind(fd, (const struct sockaddr *)&sun, sizeof sun);
    int err = errno;
    umask(old);
    if (rc != 0) {
        close(fd);
        return keel_errorf(err == EADDRINUSE ? KEEL_ERR_EXISTS : KEEL_ERR_IO, "ipc socket %s: bind: %s", s->path,
                           strerror(err));
    }
    /* The mode came from the umask: no chmod, which would follow a link
     * that someone able to write the directory put in the file's place. */
    struct stat sb;
    if (lstat(s->path, &sb) != 0) {
        st = keel_errorf(KEEL_ERR_IO, "ipc socket %s: %s", s->path, strerror(errno));
    } else if (!S_ISSOCK(sb.st_mode) || (sb.st_mode & 07777) != 0660) {
        st = keel_errorf(KEEL_ERR_IO, "ipc socket %s: not the socket just bound, or not mode 0660", s->path);
    } else {
        s->dev = sb.st_dev;
        s->ino = sb.st_ino;
        if (s->allow_gid != (gid_t)-1 && lchown(s->path, (uid_t)-1, s->allow_gid) != 0)
            st = keel_errorf(KEEL_ERR_CONFIG, "ipc socket %s: cannot give it group %u: %s", s->path,
                             (unsigned)s->allow_gid, strerror(errno));
        else if (listen(fd, 16) != 0)
            st = keel_errorf(KEEL_ERR_IO, "ipc socket %s: listen: %s", s->path, strerror(errno));
    }
    if (st != KEEL_OK) {
        close(fd);
        if (unlink(s->path) != 0)
            keel_log(KEEL_LOG_WARN, "ipc: cannot remove %s: %s", s->path, strerror(errno));
        return st;
    }
    *out = fd;
    return KEEL_OK;
}

/* Removes the socket file only if it is still the one we made. */
static void unlink_own(keel_ipc_server_t *s)
{
    struct stat sb;
    if (lstat(s->path, &sb) == 0 && S_ISSOCK(sb.st_mode) && sb.st_dev == s->dev && sb.st_ino == s->ino &&
        unlink(s->path) != 0)
        keel_log(KEEL_LOG_WARN, "ipc: cannot remove %s: %s", s->path, strerror(errno));
}

keel_status_t keel_ipc_server_start(const keel_ipc_server_config_t *c, keel_ipc_server_t **out)
{
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "keel_ipc_server_start: no output");
    *out = NULL;
    if (c == NULL || c->base == NULL || c->path == NULL || c->h.publish == NULL || c->max_clients == 0)
        return keel_errorf(KEEL_ERR_ARG, "keel_ipc_server_start: base, path, publish and max_clients are required");
    keel_ipc_server_t *s = calloc(1, sizeof *s);
    if (s == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (keel_strlcpy(s->path, c->path, sizeof s->path) != KEEL_OK || c->path[0] == '\0') {
        free(s);
        return keel_errorf(KEEL_ERR_CONFIG, "ipc socket path is empty or longer than %zu bytes",
                           sizeof s->path - 1);
    }
    s->base = c->base;
    s->h = c->h;
    s->allow_uid = c->allow_uid;
    s->allow_gid = c->allow_gid;
    s->max_clients = c->max_clients;
    int fd = -1;
    keel_status_t st = bind_socket(s, &fd);
    if (st != KEEL_OK) {
        free(s);
        return st;
    }
    s->resume = evtimer_new(s->base, resume_cb, s);
    s->lev = s->resume != NULL ? evconnlistener_new(s->base, on_accept, s,
                                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd)
                               : NULL;
    if (s->lev == NULL) {
        close(fd);
        unlink_own(s);
        if (s->resume != NULL)
            event_free(s->resume);
        free(s);
        return keel_errorf(KEEL_ERR_NOMEM, "ipc: cannot set up the listener");
    }
    evconnlistener_set_error_cb(s->lev, on_accept_error);
    keel_log(KEEL_LOG_INFO, "ipc: listening on %s", s->path);
    *out = s;
    return KEEL_OK;
}

void keel_ipc_server_command(keel_ipc_server_t *s, const char *name, json_t *payload)
{
    if (s == NULL)
        return;
    size_t len = 0;
    if (ipc_command_dump(name, payload, s->out, sizeof s->out, &len) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "ipc: a command was not passed on: %s", keel_error_message());
        return;
    }
    ipc_client_t *next = NULL;
    for (ipc_client_t *cl = s->clients; cl != NULL; cl = next) {
        next = cl->next;
        if (cl->listening && !cl->closing)
            (void)client_send(cl, s->out, len);
    }
}

unsigned keel_ipc_server_clients(const keel_ipc_server_t *s)
{
    return s != NULL ? s->n_clients : 0;
}

void keel_ipc_server_free(keel_ipc_server_t *s)
{
    if (s == NULL)
        return;
    for (ipc_client_t *cl = s->clients, *next; cl != NULL; cl = next) {
        next = cl->next;
        client_free(cl);
    }
    evconnlistener_free(s->lev);
    event_free(s->resume);
    unlink_own(s);
    free(s);
}

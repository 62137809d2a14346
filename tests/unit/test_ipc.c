/* ipc: the product-app socket. The server runs on an event_base in the
 * test with fake handlers; clients (the libkeel API or raw lines) run in a
 * thread or, for peer credentials, in a forked child that changes user. */
#define _GNU_SOURCE
#include "testutil.h"

#include "ipc/proto.h"

#include <event2/event.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- fake handlers ------------------------------------------------------------ */

typedef struct {
    uint64_t next_seq;
    uint64_t batch_seq; /* next_seq at batch_begin, for a rollback */
    char ids[32][IPC_MSGID_MAX + 1];
    uint64_t id_seq[32];
    size_t n_ids, batch_ids;
    unsigned begins, ends, publishes;
    keel_ipc_kind_t last_kind;
    bool fail_end;
    json_t *state;
} fake_t;

static keel_status_t fake_publish(void *arg, keel_ipc_kind_t kind, json_t *data, const char *msgid, uint64_t *seq,
                                  bool *dup)
{
    fake_t *f = arg;
    f->publishes++;
    f->last_kind = kind;
    if (json_object_get(data, "undeclared") != NULL)
        return keel_errorf(KEEL_ERR_ARG, "telemetry field \"undeclared\" is not declared");
    if (json_object_get(data, "full") != NULL)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "outbox full");
    if (json_object_get(data, "withheld") != NULL) {
        *seq = 0; /* as keeld does when consent withheld every field */
        *dup = false;
        return KEEL_OK;
    }
    for (size_t i = 0; msgid != NULL && i < f->n_ids; i++)
        if (strcmp(f->ids[i], msgid) == 0) {
            *seq = f->id_seq[i];
            *dup = true;
            return KEEL_OK;
        }
    *seq = f->next_seq++;
    *dup = false;
    if (msgid != NULL && f->n_ids < 32) {
        snprintf(f->ids[f->n_ids], sizeof f->ids[0], "%s", msgid);
        f->id_seq[f->n_ids++] = *seq;
    }
    return KEEL_OK;
}

static keel_status_t fake_begin(void *arg)
{
    fake_t *f = arg;
    f->begins++;
    f->batch_seq = f->next_seq;
    f->batch_ids = f->n_ids;
    return KEEL_OK;
}

static keel_status_t fake_end(void *arg, bool commit)
{
    fake_t *f = arg;
    f->ends++;
    if (f->fail_end || !commit) {
        f->next_seq = f->batch_seq;
        f->n_ids = f->batch_ids;
        return f->fail_end ? keel_errorf(KEEL_ERR_DB, "disk full") : KEEL_OK;
    }
    return KEEL_OK;
}

static keel_status_t fake_state_get(void *arg, json_t **state)
{
    fake_t *f = arg;
    *state = json_incref(f->state);
    return KEEL_OK;
}

static keel_status_t fake_state_set(void *arg, json_t *patch, json_t **state)
{
    fake_t *f = arg;
    const char *k;
    json_t *v;
    json_object_foreach(patch, k, v) {
        if (json_is_null(v))
            json_object_del(f->state, k);
        else
            json_object_set(f->state, k, v);
    }
    *state = json_incref(f->state);
    return KEEL_OK;
}

/* ---- the harness ----------------------------------------------------------------- */

typedef struct ctx ctx_t;
struct ctx {
    struct event_base *base;
    keel_ipc_server_t *srv;
    fake_t fake;
    char *dir;
    char path[KEEL_PATH_MAX];
    int pipefd[2]; /* the client side signals the loop: a byte, or EOF when done */
    struct event *pipe_ev, *timer;
    void (*on_byte)(ctx_t *, char);
    int fail_line; /* set by the client side */
    atomic_int flag;
    unsigned sent;
};

#define CHECK(x)                                                                                              \
    do {                                                                                                      \
        if (!(x)) {                                                                                           \
            if (t->fail_line == 0)                                                                            \
                t->fail_line = __LINE__;                                                                      \
            fprintf(stderr, "check failed at line %d: %s (%s)\n", __LINE__, #x, keel_error_message());      \
            goto done;                                                                                        \
        }                                                                                                     \
    } while (0)

static void signal_loop(ctx_t *t, char b)
{
    ssize_t w = write(t->pipefd[1], &b, 1);
    (void)w;
}

static keel_status_t start_server(ctx_t *t, unsigned max_clients, uid_t uid, gid_t gid)
{
    keel_ipc_server_config_t c = {
        .base = t->base,
        .path = t->path,
        .allow_uid = uid,
        .allow_gid = gid,
        .max_clients = max_clients,
        .h = {fake_publish, fake_begin, fake_end, fake_state_get, fake_state_set, &t->fake},
    };
    return keel_ipc_server_start(&c, &t->srv);
}

static int setup(void **state)
{
    ctx_t *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->base = event_base_new();
    assert_non_null(t->base);
    t->dir = tmpdir_new();
    path_in(t->path, t->dir, "keeld.sock");
    t->fake.next_seq = 1;
    t->fake.state = json_object();
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    ctx_t *t = *state;
    keel_ipc_server_free(t->srv);
    json_decref(t->fake.state);
    if (t->timer != NULL)
        event_free(t->timer);
    event_base_free(t->base);
    tmpdir_free(t->dir);
    free(t);
    return 0;
}

static void pipe_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    ctx_t *t = arg;
    char b[16];
    ssize_t n = read(fd, b, sizeof b);
    if (n <= 0) {
        event_base_loopbreak(t->base);
        return;
    }
    for (ssize_t i = 0; i < n; i++)
        if (t->on_byte != NULL)
            t->on_byte(t, b[i]);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ctx_t *t = arg;
    fprintf(stderr, "the client side did not finish in time\n");
    t->fail_line = -1;
    event_base_loopbreak(t->base);
}

static void *thread_main(void *arg);
typedef void (*client_fn)(ctx_t *);
static client_fn current_fn;

static void *thread_main(void *arg)
{
    ctx_t *t = arg;
    current_fn(t);
    close(t->pipefd[1]);
    return NULL;
}

/* Runs fn on a thread (or a forked child) while the loop serves it. */
static void run(ctx_t *t, client_fn fn, bool fork_it)
{
    assert_int_equal(pipe(t->pipefd), 0);
    t->pipe_ev = event_new(t->base, t->pipefd[0], EV_READ | EV_PERSIST, pipe_cb, t);
    struct event *dl = evtimer_new(t->base, deadline_cb, t);
    struct timeval twenty = {20, 0};
    assert_int_equal(event_add(t->pipe_ev, NULL), 0);
    assert_int_equal(evtimer_add(dl, &twenty), 0);
    current_fn = fn;
    pid_t pid = -1;
    pthread_t th;
    if (fork_it) {
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(t->pipefd[0]);
            fn(t);
            _exit(t->fail_line == 0 ? 0 : 100 + (t->fail_line % 100));
        }
        close(t->pipefd[1]);
    } else {
        assert_int_equal(pthread_create(&th, NULL, thread_main, t), 0);
    }
    event_base_dispatch(t->base);
    if (fork_it) {
        int ws = 0;
        assert_int_equal(waitpid(pid, &ws, 0), pid);
        assert_true(WIFEXITED(ws));
        if (WEXITSTATUS(ws) != 0)
            fail_msg("the child failed (exit %d)", WEXITSTATUS(ws));
    } else {
        pthread_join(th, NULL);
    }
    event_free(dl);
    event_free(t->pipe_ev);
    close(t->pipefd[0]);
    if (t->fail_line != 0)
        fail_msg("the client side failed at line %d", t->fail_line);
}

/* ---- raw lines -------------------------------------------------------------------- */

static int raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path) {
        close(fd);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof sun) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool raw_send(int fd, const char *s)
{
    size_t n = strlen(s);
    return send(fd, s, n, MSG_NOSIGNAL) == (ssize_t)n;
}

/* One line (without its newline) within 5 s; NULL on EOF or timeout. */
static json_t *raw_reply(int fd)
{
    char buf[KEEL_IPC_LINE_MAX + 1];
    size_t len = 0;
    while (len < sizeof buf - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            return NULL;
        ssize_t n = recv(fd, buf + len, 1, 0);
        if (n <= 0)
            return NULL;
        if (buf[len] == '\n')
            return json_loadb(buf, len, 0, NULL);
        len++;
    }
    return NULL;
}

/* True when the server closed the connection (EOF within 5 s). */
static bool raw_closed(int fd)
{
    char b[4096];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 5000) <= 0)
            return false;
        ssize_t n = recv(fd, b, sizeof b, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0)
            return false;
    }
}

static const char *reply_error(json_t *r)
{
    return json_is_false(json_object_get(r, "ok")) ? json_string_value(json_object_get(r, "error")) : NULL;
}

/* ---- proto ----------------------------------------------------------------------- */

static keel_status_t parse(const char *s)
{
    ipc_request_t r;
    keel_status_t st = ipc_request_parse(s, strlen(s), &r);
    if (st == KEEL_OK)
        assert_non_null(r.root);
    else
        assert_null(r.root);
    ipc_request_clear(&r);
    return st;
}

static void test_proto_requests(void **state)
{
    (void)state;
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":{\"t\":1}}"), KEEL_OK);
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":{\"t\":1},\"id\":\"a-1\"}"), KEEL_OK);
    assert_int_equal(parse("{\"op\":\"event\",\"event\":{\"type\":\"door\"},\"alert\":true}"), KEEL_OK);
    assert_int_equal(parse("{\"op\":\"event\",\"event\":{\"type\":\"door/front\"}}"), KEEL_OK);
    assert_int_equal(parse("{\"op\":\"state\"}"), KEEL_OK);
    assert_int_equal(parse("{\"op\":\"state\",\"set\":{\"a\":null}}"), KEEL_OK);
    assert_int_equal(parse("{\"op\":\"listen\"}"), KEEL_OK);
    /* unknown op and fields, fields of another op, wrong types */
    assert_int_equal(parse("{\"op\":\"reboot\"}"), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "unknown op"));
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":{\"t\":1},\"x\":1}"), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "\"x\""));
    assert_int_equal(parse("{\"op\":\"listen\",\"id\":\"a\"}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":{\"t\":1},\"alert\":true}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":5}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":{}}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"publish\"}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":1}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"event\",\"event\":{\"type\":\"a\"},\"alert\":1}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"event\",\"event\":{\"kind\":\"a\"}}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"event\",\"event\":{\"type\":\"a b\"}}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"state\",\"set\":[1]}"), KEEL_ERR_FORMAT);
    /* ids: printable, no space, capped */
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":{\"t\":1},\"id\":\"a b\"}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":{\"t\":1},\"id\":\"\"}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":{\"t\":1},\"id\":7}"), KEEL_ERR_FORMAT);
    /* duplicate keys, NUL in a string, trailing data, not an object, nesting */
    assert_int_equal(parse("{\"op\":\"state\",\"op\":\"listen\"}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"publish\",\"telemetry\":{\"t\":\"a\\u0000b\"}}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("{\"op\":\"listen\"} {}"), KEEL_ERR_FORMAT);
    assert_int_equal(parse("[\"listen\"]"), KEEL_ERR_FORMAT);
    assert_int_equal(parse(""), KEEL_ERR_FORMAT);
    char deep[256];
    snprintf(deep, sizeof deep, "{\"op\":\"publish\",\"telemetry\":{\"t\":%.20s%.20s}}",
             "[[[[[[[[[[[[[[[[[[[[", "]]]]]]]]]]]]]]]]]]]]"); /* 20 levels */
    assert_int_equal(parse(deep), KEEL_ERR_FORMAT);
    assert_non_null(strstr(keel_error_message(), "nested"));

    /* what the client writes, the server reads back the same */
    char line[KEEL_IPC_LINE_MAX];
    size_t len = 0;
    json_t *ev = json_pack("{s:s, s:i}", "type", "door", "n", 3);
    assert_int_equal(ipc_request_dump(IPC_OP_EVENT, ev, "m1", true, line, &len), KEEL_OK);
    assert_int_equal(line[len - 1], '\n');
    ipc_request_t r;
    assert_int_equal(ipc_request_parse(line, len - 1, &r), KEEL_OK);
    assert_int_equal(r.op, IPC_OP_EVENT);
    assert_true(r.alert);
    assert_string_equal(r.msgid, "m1");
    assert_true(json_equal(r.data, ev));
    ipc_request_clear(&r);
    json_decref(ev);
    /* the client refuses locally what keeld would refuse */
    json_t *bad = json_pack("{s:i}", "n", 3);
    assert_int_equal(ipc_request_dump(IPC_OP_EVENT, bad, NULL, false, line, &len), KEEL_ERR_ARG);
    json_decref(bad);

    /* replies: an over-long message is cut, control characters never reach a terminal */
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    big[3] = '\x1b';
    len = ipc_reply_error(IPC_E_REFUSED, big, line, sizeof line);
    assert_true(len > 0 && len < 400);
    ipc_message_t m;
    assert_int_equal(ipc_message_parse(line, len - 1, &m), KEEL_OK);
    assert_false(m.ok);
    assert_string_equal(m.error, "refused");
    assert_int_equal(m.message[3], '?');
    assert_int_equal(ipc_error_status(m.error), KEEL_ERR_ARG);
    ipc_message_clear(&m);
    assert_int_equal(ipc_message_parse("{\"ok\":true,\"seq\":0}", 19, &m), KEEL_ERR_FORMAT);
    assert_int_equal(ipc_message_parse("{\"ok\":false}", 12, &m), KEEL_ERR_FORMAT);
    assert_int_equal(ipc_message_parse("{\"ok\":true,\"command\":\"x\"}", 26, &m), KEEL_ERR_FORMAT);
    assert_int_equal(ipc_message_parse("{\"ok\":true,\"future\":1}", 22, &m), KEEL_OK);
    ipc_message_clear(&m);
    assert_int_equal(ipc_command_dump("bad name", NULL, line, sizeof line, &len), KEEL_ERR_ARG);
    /* A length whose + 1 wraps round is still over the cap (review). */
    assert_int_equal(ipc_request_parse("{}", SIZE_MAX, &r), KEEL_ERR_TOO_LARGE);
    assert_null(r.root);
    assert_int_equal(ipc_message_parse("{}", SIZE_MAX, &m), KEEL_ERR_TOO_LARGE);
    assert_null(m.root);
}

/* ---- publish, duplicates, refusals ---------------------------------------------------- */

static void client_publish(ctx_t *t)
{
    keel_ipc_client_t *c = NULL;
    json_t *tel = json_pack("{s:f}", "temperature", 21.5);
    json_t *und = json_pack("{s:i}", "undeclared", 1);
    json_t *ev = json_pack("{s:s}", "type", "overheat");
    json_t *r = NULL;
    int fd = -1;
    uint64_t seq = 0;
    CHECK(keel_ipc_connect(t->path, &c) == KEEL_OK);
    CHECK(keel_ipc_publish(c, tel, NULL, &seq) == KEEL_OK && seq == 1);
    CHECK(keel_ipc_publish(c, tel, "m-1", &seq) == KEEL_OK && seq == 2);
    CHECK(keel_ipc_publish(c, tel, "m-1", &seq) == KEEL_OK && seq == 2);
    CHECK(keel_ipc_event(c, ev, true, NULL, &seq) == KEEL_OK && seq == 3);
    /* keeld's refusal comes back with its message, and the connection stays */
    CHECK(keel_ipc_publish(c, und, NULL, &seq) == KEEL_ERR_ARG);
    CHECK(strstr(keel_error_message(), "undeclared") != NULL);
    CHECK(keel_ipc_publish(c, tel, NULL, &seq) == KEEL_OK && seq == 4);
    /* taken, nothing queued: ok without a seq, and the connection goes on */
    json_decref(und);
    und = json_pack("{s:i}", "withheld", 1);
    CHECK(keel_ipc_publish(c, und, NULL, &seq) == KEEL_OK && seq == 0);
    CHECK(keel_ipc_publish(c, tel, NULL, &seq) == KEEL_OK && seq == 5);
    /* a handler's too-large (the outbox is full) is an answer, not a broken
     * connection: keeld keeps it open, and so must the client (review) */
    json_decref(und);
    und = json_pack("{s:i}", "full", 1);
    CHECK(keel_ipc_publish(c, und, NULL, &seq) == KEEL_ERR_TOO_LARGE);
    CHECK(keel_ipc_fd(c) >= 0);
    CHECK(keel_ipc_publish(c, tel, NULL, &seq) == KEEL_OK && seq == 6);
    /* the wire says "duplicate" */
    fd = raw_connect(t->path);
    CHECK(fd >= 0);
    CHECK(raw_send(fd, "{\"op\":\"publish\",\"telemetry\":{\"t\":1},\"id\":\"m-1\"}\n"));
    r = raw_reply(fd);
    CHECK(json_is_true(json_object_get(r, "ok")) && json_integer_value(json_object_get(r, "seq")) == 2 &&
          json_is_true(json_object_get(r, "duplicate")));
done:
    json_decref(r);
    if (fd >= 0)
        close(fd);
    keel_ipc_close(c);
    json_decref(tel);
    json_decref(und);
    json_decref(ev);
}

static void test_publish(void **state)
{
    ctx_t *t = *state;
    assert_int_equal(start_server(t, 4, (uid_t)-1, (gid_t)-1), KEEL_OK);
    run(t, client_publish, false);
    assert_int_equal(t->fake.last_kind, KEEL_IPC_TELEMETRY);
    assert_int_equal(t->fake.next_seq, 7);
    assert_int_equal(t->fake.begins, t->fake.ends);
}

/* ---- bad requests ------------------------------------------------------------------------ */

static void client_bad(ctx_t *t)
{
    json_t *r = NULL;
    int fd = raw_connect(t->path);
    CHECK(fd >= 0);
    CHECK(raw_send(fd, "{\"op\":\"reboot\"}\n"));
    r = raw_reply(fd);
    CHECK(reply_error(r) != NULL && strcmp(reply_error(r), "bad-request") == 0);
    json_decref(r);
    CHECK(raw_send(fd, "{\"op\":\"publish\",\"telemetry\":{\"t\":1},\"extra\":true}\n"));
    r = raw_reply(fd);
    CHECK(reply_error(r) != NULL && strcmp(reply_error(r), "bad-request") == 0);
    CHECK(strstr(json_string_value(json_object_get(r, "message")), "extra") != NULL);
    json_decref(r);
    CHECK(raw_send(fd, "{\"op\":\"publish\",\"telemetry\":\"hot\"}\nnot json\n"));
    r = raw_reply(fd);
    CHECK(reply_error(r) != NULL && strcmp(reply_error(r), "bad-request") == 0);
    json_decref(r);
    r = raw_reply(fd);
    CHECK(reply_error(r) != NULL && strcmp(reply_error(r), "bad-request") == 0);
    json_decref(r);
    /* still open for a good request */
    CHECK(raw_send(fd, "{\"op\":\"state\"}\n"));
    r = raw_reply(fd);
    CHECK(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    r = NULL;
    /* but not for sixteen bad ones in a row */
    for (int i = 0; i < 16; i++)
        CHECK(raw_send(fd, "{}\n"));
    for (int i = 0; i < 16; i++) {
        r = raw_reply(fd);
        CHECK(reply_error(r) != NULL);
        json_decref(r);
        r = NULL;
    }
    CHECK(raw_closed(fd));
done:
    json_decref(r);
    if (fd >= 0)
        close(fd);
}

static void test_bad_requests(void **state)
{
    ctx_t *t = *state;
    assert_int_equal(start_server(t, 4, (uid_t)-1, (gid_t)-1), KEEL_OK);
    run(t, client_bad, false);
    assert_int_equal(t->fake.publishes, 0);
    assert_int_equal(keel_ipc_server_clients(t->srv), 0);
}

static void client_too_large(ctx_t *t)
{
    json_t *r = NULL;
    char *big = malloc(KEEL_IPC_LINE_MAX + 64);
    int fd = raw_connect(t->path);
    CHECK(big != NULL && fd >= 0);
    /* a line of exactly the cap, newline included, is fine */
    int n = snprintf(big, KEEL_IPC_LINE_MAX, "{\"op\":\"publish\",\"telemetry\":{\"s\":\"");
    memset(big + n, 'a', KEEL_IPC_LINE_MAX - (size_t)n - 4);
    memcpy(big + KEEL_IPC_LINE_MAX - 4, "\"}}\n", 5);
    CHECK(strlen(big) == KEEL_IPC_LINE_MAX);
    CHECK(raw_send(fd, big));
    r = raw_reply(fd);
    CHECK(json_is_true(json_object_get(r, "ok")));
    json_decref(r);
    /* one byte more is not: too-large, and the connection is closed */
    memmove(big + n + 1, big + n, strlen(big + n) + 1);
    big[n] = 'a';
    CHECK(raw_send(fd, big));
    r = raw_reply(fd);
    CHECK(reply_error(r) != NULL && strcmp(reply_error(r), "too-large") == 0);
    CHECK(raw_closed(fd));
    close(fd);
    /* the same without a newline at all */
    fd = raw_connect(t->path);
    CHECK(fd >= 0);
    memset(big, ' ', KEEL_IPC_LINE_MAX + 10);
    big[KEEL_IPC_LINE_MAX + 10] = '\0';
    CHECK(raw_send(fd, big));
    json_decref(r);
    r = raw_reply(fd);
    CHECK(reply_error(r) != NULL && strcmp(reply_error(r), "too-large") == 0);
    CHECK(raw_closed(fd));
done:
    json_decref(r);
    free(big);
    if (fd >= 0)
        close(fd);
}

static void test_too_large(void **state)
{
    ctx_t *t = *state;
    assert_int_equal(start_server(t, 4, (uid_t)-1, (gid_t)-1), KEEL_OK);
    run(t, client_too_large, false);
    assert_int_equal(t->fake.publishes, 1);
}

/* ---- max clients ------------------------------------------------------------------------------- */

static void client_max(ctx_t *t)
{
    keel_ipc_client_t *a = NULL, *b = NULL, *c = NULL;
    json_t *s = NULL, *r = NULL;
    int fd = -1;
    CHECK(keel_ipc_connect(t->path, &a) == KEEL_OK && keel_ipc_state_get(a, &s) == KEEL_OK);
    json_decref(s);
    CHECK(keel_ipc_connect(t->path, &b) == KEEL_OK && keel_ipc_state_get(b, &s) == KEEL_OK);
    json_decref(s);
    s = NULL;
    fd = raw_connect(t->path);
    CHECK(fd >= 0);
    r = raw_reply(fd);
    CHECK(reply_error(r) != NULL && strcmp(reply_error(r), "busy") == 0);
    CHECK(raw_closed(fd));
    /* through the API: the refusal is what the call reports */
    CHECK(keel_ipc_connect(t->path, &c) == KEEL_OK);
    CHECK(keel_ipc_state_get(c, &s) == KEEL_ERR_IO && strstr(keel_error_message(), "busy") != NULL);
    /* a slot freed is a slot taken */
    keel_ipc_close(a);
    a = NULL;
    usleep(100000);
    keel_ipc_close(c);
    CHECK(keel_ipc_connect(t->path, &c) == KEEL_OK && keel_ipc_state_get(c, &s) == KEEL_OK);
done:
    json_decref(r);
    json_decref(s);
    if (fd >= 0)
        close(fd);
    keel_ipc_close(a);
    keel_ipc_close(b);
    keel_ipc_close(c);
}

static void test_max_clients(void **state)
{
    ctx_t *t = *state;
    assert_int_equal(start_server(t, 2, (uid_t)-1, (gid_t)-1), KEEL_OK);
    run(t, client_max, false);
}

/* ---- peer credentials --------------------------------------------------------------------------- */

#define NOBODY 65534
#define OTHER_GID 4242

/* In a child: become nobody (primary group nogroup, optionally one
 * supplementary group), then expect the server to say `want` (NULL: ok). */
static void child_as_nobody(ctx_t *t, gid_t extra, const char *want)
{
    json_t *r = NULL;
    int fd = -1;
    gid_t groups[1] = {extra};
    CHECK(setgroups(extra != (gid_t)-1 ? 1 : 0, groups) == 0);
    CHECK(setgid(NOBODY) == 0 && setuid(NOBODY) == 0 && getuid() == NOBODY);
    fd = raw_connect(t->path);
    CHECK(fd >= 0);
    /* a refused peer may find the connection closed before it sends */
    CHECK(raw_send(fd, "{\"op\":\"state\"}\n") || want != NULL);
    r = raw_reply(fd);
    CHECK(r != NULL);
    if (want == NULL) {
        CHECK(json_is_true(json_object_get(r, "ok")));
    } else {
        CHECK(reply_error(r) != NULL && strcmp(reply_error(r), want) == 0);
        CHECK(raw_closed(fd));
    }
done:
    json_decref(r);
    if (fd >= 0)
        close(fd);
}

static void nobody_refused(ctx_t *t)
{
    child_as_nobody(t, (gid_t)-1, "forbidden");
}

static void nobody_allowed(ctx_t *t)
{
    child_as_nobody(t, (gid_t)-1, NULL);
}

static void nobody_in_group(ctx_t *t)
{
    child_as_nobody(t, OTHER_GID, NULL);
}

static void nobody_in_group_refused(ctx_t *t)
{
    child_as_nobody(t, OTHER_GID, "forbidden");
}

/* The socket file is left open to everyone here on purpose: the check
 * under test is the peer credential, not the file mode. */
static void open_up(ctx_t *t)
{
    assert_int_equal(chmod(t->dir, 0755), 0);
    assert_int_equal(chmod(t->path, 0666), 0);
}

static void test_peer_credentials(void **state)
{
    ctx_t *t = *state;
    if (getuid() != 0)
        skip();
    assert_int_equal(start_server(t, 4, (uid_t)-1, (gid_t)-1), KEEL_OK);
    open_up(t);
    run(t, nobody_refused, true);
    assert_int_equal(t->fake.publishes + json_object_size(t->fake.state), 0);
    keel_ipc_server_free(t->srv);
    /* the configured user */
    assert_int_equal(start_server(t, 4, NOBODY, (gid_t)-1), KEEL_OK);
    open_up(t);
    run(t, nobody_allowed, true);
    keel_ipc_server_free(t->srv);
    /* the configured group, as a supplementary group (SO_PEERGROUPS); the socket gets that group */
    assert_int_equal(start_server(t, 4, (uid_t)-1, OTHER_GID), KEEL_OK);
    struct stat sb;
    assert_int_equal(lstat(t->path, &sb), 0);
    assert_int_equal(sb.st_gid, OTHER_GID);
    assert_int_equal(sb.st_mode & 0777, 0660);
    open_up(t);
    run(t, nobody_in_group, true);
    /* a group the peer is not in */
    keel_ipc_server_free(t->srv);
    assert_int_equal(start_server(t, 4, (uid_t)-1, OTHER_GID + 1), KEEL_OK);
    open_up(t);
    run(t, nobody_in_group_refused, true);
}

/* ---- state ------------------------------------------------------------------------------------------ */

static void client_state(ctx_t *t)
{
    keel_ipc_client_t *c = NULL;
    json_t *s = NULL;
    json_t *p1 = json_pack("{s:i, s:s}", "a", 1, "b", "x");
    json_t *p2 = json_pack("{s:n, s:f}", "a", "c", 2.5);
    json_t *want = json_pack("{s:s, s:f}", "b", "x", "c", 2.5);
    CHECK(keel_ipc_connect(t->path, &c) == KEEL_OK);
    CHECK(keel_ipc_state_get(c, &s) == KEEL_OK && json_object_size(s) == 0);
    json_decref(s);
    CHECK(keel_ipc_state_set(c, p1, &s) == KEEL_OK && json_object_size(s) == 2);
    json_decref(s);
    CHECK(keel_ipc_state_set(c, p2, &s) == KEEL_OK && json_equal(s, want));
    json_decref(s);
    CHECK(keel_ipc_state_get(c, &s) == KEEL_OK && json_equal(s, want));
done:
    json_decref(s);
    json_decref(p1);
    json_decref(p2);
    json_decref(want);
    keel_ipc_close(c);
}

static void test_state(void **state)
{
    ctx_t *t = *state;
    assert_int_equal(start_server(t, 4, (uid_t)-1, (gid_t)-1), KEEL_OK);
    run(t, client_state, false);
}

/* ---- commands ---------------------------------------------------------------------------------------- */

static void send_set(ctx_t *t, char b)
{
    if (b != 'r')
        return;
    json_t *p = json_pack("{s:i}", "setpoint", 22);
    keel_ipc_server_command(t->srv, "set", p);
    json_decref(p);
}

static void client_commands(ctx_t *t)
{
    keel_ipc_client_t *a = NULL, *b = NULL;
    json_t *s = NULL, *payload = NULL;
    char *name = NULL;
    CHECK(keel_ipc_connect(t->path, &a) == KEEL_OK && keel_ipc_connect(t->path, &b) == KEEL_OK);
    CHECK(keel_ipc_next_command(a, 0, &name, &payload) == KEEL_ERR_NOT_FOUND);
    CHECK(keel_ipc_listen(a) == KEEL_OK);
    CHECK(keel_ipc_state_get(b, &s) == KEEL_OK);
    signal_loop(t, 'r');
    usleep(200000);
    /* the command is already in a's socket: the request queues it */
    json_decref(s);
    CHECK(keel_ipc_state_get(a, &s) == KEEL_OK);
    CHECK(keel_ipc_next_command(a, 0, &name, &payload) == KEEL_OK);
    CHECK(strcmp(name, "set") == 0 && json_integer_value(json_object_get(payload, "setpoint")) == 22);
    free(name);
    name = NULL;
    json_decref(payload);
    payload = NULL;
    CHECK(keel_ipc_next_command(a, 0, &name, &payload) == KEEL_ERR_NOT_FOUND);
    /* b did not listen: nothing for it */
    CHECK(keel_ipc_next_command(b, 300, &name, &payload) == KEEL_ERR_NOT_FOUND);
    /* a second one, waited for */
    signal_loop(t, 'r');
    CHECK(keel_ipc_next_command(a, 5000, &name, &payload) == KEEL_OK && strcmp(name, "set") == 0);
done:
    free(name);
    json_decref(payload);
    json_decref(s);
    keel_ipc_close(a);
    keel_ipc_close(b);
}

static void test_commands(void **state)
{
    ctx_t *t = *state;
    assert_int_equal(start_server(t, 4, (uid_t)-1, (gid_t)-1), KEEL_OK);
    t->on_byte = send_set;
    run(t, client_commands, false);
}

/* ---- batches ------------------------------------------------------------------------------------------ */

static void client_batch(ctx_t *t)
{
    json_t *r = NULL;
    int fd = raw_connect(t->path);
    const char *three = "{\"op\":\"publish\",\"telemetry\":{\"t\":1}}\n"
                        "{\"op\":\"state\"}\n"
                        "{\"op\":\"event\",\"event\":{\"type\":\"x\"}}\n";
    CHECK(fd >= 0);
    CHECK(raw_send(fd, three));
    for (int i = 0; i < 3; i++) {
        r = raw_reply(fd);
        CHECK(json_is_true(json_object_get(r, "ok")));
        json_decref(r);
    }
    r = NULL;
    signal_loop(t, 'f'); /* the next commit fails */
    usleep(100000);
    CHECK(raw_send(fd, three));
    for (int i = 0; i < 3; i++) {
        r = raw_reply(fd);
        CHECK(reply_error(r) != NULL && strcmp(reply_error(r), "unavailable") == 0);
        CHECK(strstr(json_string_value(json_object_get(r, "message")), "disk full") != NULL);
        json_decref(r);
    }
    r = NULL;
done:
    json_decref(r);
    if (fd >= 0)
        close(fd);
}

static void fail_next(ctx_t *t, char b)
{
    if (b == 'f')
        t->fake.fail_end = true;
}

static void test_batch(void **state)
{
    ctx_t *t = *state;
    assert_int_equal(start_server(t, 4, (uid_t)-1, (gid_t)-1), KEEL_OK);
    t->on_byte = fail_next;
    run(t, client_batch, false);
    /* one transaction per read: two reads, two begins; nothing of the failed one kept */
    assert_int_equal(t->fake.begins, 2);
    assert_int_equal(t->fake.ends, 2);
    assert_int_equal(t->fake.publishes, 4);
    assert_int_equal(t->fake.next_seq, 3);
}

/* ---- a client that does not read -------------------------------------------------------------------- */

static void flood_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ctx_t *t = arg;
    if (keel_ipc_server_clients(t->srv) == 0 || t->sent >= 400) {
        atomic_store(&t->flag, 1);
        event_del(t->timer);
        return;
    }
    static char pad[15000];
    memset(pad, 'z', sizeof pad - 1);
    json_t *p = json_pack("{s:s}", "blob", pad);
    keel_ipc_server_command(t->srv, "big", p);
    json_decref(p);
    t->sent++;
}

static void start_flood(ctx_t *t, char b)
{
    if (b != 'r')
        return;
    t->timer = event_new(t->base, -1, EV_PERSIST, flood_cb, t);
    struct timeval ms = {0, 2000};
    event_add(t->timer, &ms);
}

static void client_stuck(ctx_t *t)
{
    json_t *r = NULL;
    int fd = raw_connect(t->path);
    CHECK(fd >= 0);
    CHECK(raw_send(fd, "{\"op\":\"listen\"}\n"));
    r = raw_reply(fd);
    CHECK(json_is_true(json_object_get(r, "ok")));
    signal_loop(t, 'r');
    for (int i = 0; i < 1000 && !atomic_load(&t->flag); i++)
        usleep(10000);
    CHECK(atomic_load(&t->flag));
    CHECK(raw_closed(fd));
done:
    json_decref(r);
    if (fd >= 0)
        close(fd);
}

static void test_slow_reader(void **state)
{
    ctx_t *t = *state;
    assert_int_equal(start_server(t, 4, (uid_t)-1, (gid_t)-1), KEEL_OK);
    t->on_byte = start_flood;
    run(t, client_stuck, false);
    assert_int_equal(keel_ipc_server_clients(t->srv), 0);
    /* it was the output cap, not the first command: past 256 KiB plus what the kernel holds */
    assert_true(t->sent * 15000 > 256 * 1024);
    assert_true(t->sent < 400);
}

/* ---- the socket file ------------------------------------------------------------------------------------ */

/* Someone who may write the socket's directory swaps the new socket for a
 * link to another file in the window between bind() and the mode and group
 * being set. keeld gives the socket its group with lchown(); this stand-in
 * (the executable's definition wins over libc's) makes the swap there. */
static const char *swap_path, *swap_target;

int lchown(const char *path, uid_t uid, gid_t gid)
{
    if (swap_path != NULL && strcmp(path, swap_path) == 0) {
        if (unlink(path) != 0 || symlink(swap_target, path) != 0)
            return -1;
        swap_path = NULL;
    }
    return fchownat(AT_FDCWD, path, uid, gid, AT_SYMLINK_NOFOLLOW);
}

static void test_socket_swap(void **state)
{
    ctx_t *t = *state;
    char victim[KEEL_PATH_MAX];
    path_in(victim, t->dir, "victim");
    assert_int_equal(keel_file_write_atomic(victim, "secret", 6, 0600), KEEL_OK);
    swap_path = t->path;
    swap_target = victim;
    keel_status_t st = start_server(t, 4, (uid_t)-1, getgid());
    swap_path = NULL;
    assert_null(swap_path);
    struct stat sb;
    assert_int_equal(stat(victim, &sb), 0);
    /* the file the link names keeps its mode: nothing was chmod-ed through the link */
    assert_int_equal(sb.st_mode & 07777, 0600);
    if (st == KEEL_OK) {
        /* and the server does not take the link for its own when it goes */
        keel_ipc_server_free(t->srv);
        t->srv = NULL;
        assert_int_equal(lstat(t->path, &sb), 0);
        assert_true(S_ISLNK(sb.st_mode));
    }
    assert_int_equal(unlink(t->path), 0);
}

static void test_socket_file(void **state)
{
    ctx_t *t = *state;
    /* a stale socket (bound, then its owner died) is replaced */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_true(strlen(t->path) < sizeof sun.sun_path);
    memcpy(sun.sun_path, t->path, strlen(t->path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    close(fd);
    assert_int_equal(start_server(t, 4, (uid_t)-1, (gid_t)-1), KEEL_OK);
    struct stat sb;
    assert_int_equal(lstat(t->path, &sb), 0);
    assert_true(S_ISSOCK(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0660);
    /* a live one is not */
    keel_ipc_server_t *second = NULL;
    keel_ipc_server_config_t c = {.base = t->base, .path = t->path, .allow_uid = (uid_t)-1,
                                  .allow_gid = (gid_t)-1, .max_clients = 1,
                                  .h = {.publish = fake_publish, .arg = &t->fake}};
    assert_int_equal(keel_ipc_server_start(&c, &second), KEEL_ERR_EXISTS);
    assert_null(second);
    /* freeing the server removes its file */
    keel_ipc_server_free(t->srv);
    t->srv = NULL;
    assert_false(keel_path_exists(t->path));
    /* a regular file, or a link, is never replaced */
    assert_int_equal(keel_file_write_atomic(t->path, "keep", 4, 0600), KEEL_OK);
    assert_int_equal(keel_ipc_server_start(&c, &second), KEEL_ERR_EXISTS);
    assert_non_null(strstr(keel_error_message(), "not a socket"));
    keel_buf_t b;
    keel_buf_init(&b, 64);
    assert_int_equal(keel_file_read(t->path, 64, &b), KEEL_OK);
    assert_memory_equal(b.data, "keep", 4);
    keel_buf_free(&b);
    assert_int_equal(unlink(t->path), 0);
    assert_int_equal(symlink("/nonexistent", t->path), 0);
    assert_int_equal(keel_ipc_server_start(&c, &second), KEEL_ERR_EXISTS);
    assert_int_equal(unlink(t->path), 0);
    /* a path that does not fit a socket address */
    char longp[200];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    c.path = longp;
    assert_int_equal(keel_ipc_server_start(&c, &second), KEEL_ERR_CONFIG);
    /* the client: no keeld there */
    keel_ipc_client_t *cl = NULL;
    assert_int_equal(keel_ipc_connect(t->path, &cl), KEEL_ERR_IO);
    assert_null(cl);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    keel_log_set_level(KEEL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_requests),
        cmocka_unit_test_setup_teardown(test_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_clients, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_swap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * keel assess: TCP connect scan with banner grab, and UDP probes of the
 * usual IoT services (SSDP, mDNS, CoAP, SNMP). Observations only; the
 * findings are the ones whose provision is plain from the fact alone.
 *
 * A connect scan needs no privileges and sees what an application would see.
 * It is fast enough because the connects run in a window of non-blocking
 * sockets watched by one epoll set: on loopback the whole range is a matter
 * of socket/connect/close system calls.
 */
#define _GNU_SOURCE
#include "keel/assess_probe.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define SCAN_TIMEOUT_DEFAULT_MS 1000u
#define SCAN_BANNER_DEFAULT_MS 800u
#define SCAN_TIMEOUT_MAX_MS 60000u
#define SCAN_FILTERED_LIST_MAX 256u /* filtered ports listed one by one */
/* Descriptors kept free for the rest of the process when sizing the window. */
#define SCAN_FD_RESERVE 64u

/* ---- port sets ---------------------------------------------------------- */

void keel_portset_add(keel_portset_t *set, unsigned port)
{
    if (port >= 1 && port <= 65535)
        set->bits[port / 8] |= (uint8_t)(1u << (port % 8));
}

int keel_portset_has(const keel_portset_t *set, unsigned port)
{
    return port >= 1 && port <= 65535 && (set->bits[port / 8] >> (port % 8)) & 1u;
}

unsigned keel_portset_count(const keel_portset_t *set)
{
    unsigned n = 0;
    for (unsigned p = 1; p <= 65535; p++)
        n += (unsigned)keel_portset_has(set, p);
    return n;
}

static int parse_port(const char *s, size_t n, unsigned *out)
{
    if (n == 0 || n > 5)
        return 0;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return 0;
    *out = v;
    return 1;
}

keel_status_t keel_portset_parse(const char *spec, keel_portset_t *set)
{
    if (spec == NULL || set == NULL || *spec == '\0')
        return keel_errorf(KEEL_ERR_ARG, "empty port list");
    memset(set, 0, sizeof *set);
    const char *p = spec;
    for (;;) {
        size_t n = strcspn(p, ",");
        const char *dash = memchr(p, '-', n);
        unsigned lo = 0, hi = 0;
        int ok = dash == NULL ? parse_port(p, n, &lo) && (hi = lo, 1)
                              : parse_port(p, (size_t)(dash - p), &lo) &&
                                    parse_port(dash + 1, n - (size_t)(dash - p) - 1, &hi) && lo <= hi;
        if (!ok)
            return keel_errorf(KEEL_ERR_ARG, "bad port or range '%.*s' (want N or N-M within 1-65535)",
                               (int)(n > 32 ? 32 : n), p);
        for (unsigned v = lo; v <= hi; v++)
            keel_portset_add(set, v);
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    return KEEL_OK;
}

/* ---- shared helpers ----------------------------------------------------- */

json_t *keel_assess_escape(const uint8_t *p, size_t n)
{
    keel_buf_t b;
    /* the worst case is four output bytes per input byte */
    keel_buf_init(&b, n * 4 + 1);
    keel_status_t st = keel_buf_append(&b, "", 0);
    for (size_t i = 0; i < n && st == KEEL_OK; i++) {
        uint8_t c = p[i];
        if (c == '\\')
            st = keel_buf_append(&b, "\\\\", 2);
        else if (c == '\n')
            st = keel_buf_append(&b, "\\n", 2);
        else if (c == '\r')
            st = keel_buf_append(&b, "\\r", 2);
        else if (c == '\t')
            st = keel_buf_append(&b, "\\t", 2);
        else if (c >= 0x20 && c < 0x7f)
            st = keel_buf_append(&b, &c, 1);
        else
            st = keel_buf_printf(&b, "\\x%02x", c);
    }
    json_t *j = st == KEEL_OK ? json_stringn((const char *)b.data, b.len) : NULL;
    keel_buf_free(&b);
    return j;
}

keel_status_t keel_assess_finding(json_t *doc, const char *provision, const char *severity, const char *what)
{
    if (doc == NULL || provision == NULL || severity == NULL || what == NULL)
        return keel_errorf(KEEL_ERR_ARG, "finding without provision, severity or text");
    json_t *arr = json_object_get(doc, "findings");
    if (arr == NULL) {
        arr = json_array();
        if (arr == NULL || json_object_set_new(doc, "findings", arr) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a finding");
    }
    json_t *f = json_pack("{s:s, s:s, s:s}", "provision", provision, "severity", severity, "what", what);
    if (f == NULL || json_array_append_new(arr, f) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a finding");
    return KEEL_OK;
}

static json_t *doc_array(json_t *doc, const char *key)
{
    json_t *arr = json_object_get(doc, key);
    if (json_is_array(arr))
        return arr;
    arr = json_array();
    if (arr == NULL || json_object_set_new(doc, key, arr) != 0)
        return NULL;
    return arr;
}

/* The length of s without a last UTF-8 character cut short. */
static size_t utf8_whole_len(const char *s)
{
    size_t len = strlen(s), start = len, cont = 0;
    while (start > 0 && cont < 4 && ((unsigned char)s[start - 1] & 0xC0) == 0x80) {
        start--;
        cont++;
    }
    if (start == 0)
        return len;
    unsigned char lead = (unsigned char)s[start - 1];
    size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    return lead >= 0xC0 && cont + 1 < need ? start - 1 : len;
}

void keel_assess_utf8_cut_tail(char *s)
{
    s[utf8_whole_len(s)] = '\0';
}

keel_status_t keel_assess_unit_mark(json_t *doc, const char *unit, keel_unit_state_t state, const char *reason)
{
    static const char *const names[] = {"ran", "not_applicable", "inconclusive"};
    if (doc == NULL || unit == NULL || (unsigned)state > KEEL_UNIT_INCONCLUSIVE ||
        (state != KEEL_UNIT_RAN && reason == NULL))
        return keel_errorf(KEEL_ERR_ARG, "unit mark without unit, state or reason");
    json_t *units = json_object_get(doc, "units");
    if (!json_is_object(units)) {
        units = json_object();
        if (units == NULL || json_object_set_new(doc, "units", units) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a unit");
    }
    const char *was = json_string_value(json_object_get(json_object_get(units, unit), "state"));
    if (was != NULL && strcmp(was, "inconclusive") == 0 && state == KEEL_UNIT_RAN)
        return KEEL_OK;
    json_t *u = reason != NULL ? json_pack("{s:s, s:s%}", "state", names[state], "reason", reason,
                                           utf8_whole_len(reason))
                               : json_pack("{s:s}", "state", names[state]);
    if (u == NULL || json_object_set_new(units, unit, u) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a unit");
    return KEEL_OK;
}

keel_status_t keel_assess_unit_finding(json_t *doc, const char *unit, const char *provision, const char *severity,
                                       const char *what)
{
    if (doc == NULL || unit == NULL || provision == NULL || severity == NULL || what == NULL)
        return keel_errorf(KEEL_ERR_ARG, "finding without unit, provision, severity or text");
    json_t *arr = doc_array(doc, "findings");
    json_t *f = json_pack("{s:s, s:s, s:s, s:s%}", "unit", unit, "provision", provision, "severity", severity, "what",
                          what, utf8_whole_len(what));
    if (arr == NULL || f == NULL || json_array_append_new(arr, f) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a finding");
    return KEEL_OK;
}

static int evidence_text(json_t *e, const char *key, const char *p, size_t n)
{
    if (p == NULL)
        return 0;
    int cut = n > KEEL_PROBE_EVIDENCE_TEXT;
    json_t *t = keel_assess_escape((const uint8_t *)p, cut ? KEEL_PROBE_EVIDENCE_TEXT : n);
    if (t == NULL || json_object_set_new(e, key, t) != 0)
        return -1;
    if (cut && json_object_set_new(e, "truncated", json_true()) != 0)
        return -1;
    return 0;
}

keel_status_t keel_assess_evidence(json_t *doc, const char *unit, const char *sent, size_t sent_len,
                                   const char *observed, size_t observed_len, long long duration_us)
{
    if (doc == NULL || unit == NULL)
        return keel_errorf(KEEL_ERR_ARG, "evidence without unit");
    json_t *arr = doc_array(doc, "evidence");
    if (arr == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for evidence");
    if (json_array_size(arr) >= KEEL_PROBE_EVIDENCE_MAX) {
        json_int_t dropped = json_integer_value(json_object_get(doc, "evidence_dropped"));
        if (json_object_set_new(doc, "evidence_dropped", json_integer(dropped + 1)) != 0)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for evidence");
        return KEEL_OK;
    }
    json_t *e = json_pack("{s:s}", "unit", unit);
    if (e == NULL || evidence_text(e, "sent", sent, sent_len) != 0 ||
        evidence_text(e, "observed", observed, observed_len) != 0 ||
        (duration_us >= 0 && json_object_set_new(e, "duration_us", json_integer(duration_us)) != 0)) {
        json_decref(e);
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for evidence");
    }
    /* the _new call owns e from here, on failure too */
    if (json_array_append_new(arr, e) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for evidence");
    return KEEL_OK;
}

keel_status_t keel_assess_resolve(const char *host, unsigned port, struct sockaddr_storage *sa, socklen_t *salen,
                                  char *text, size_t text_cap)
{
    if (host == NULL || *host == '\0' || strlen(host) > KEEL_PROBE_HOST_MAX)
        return keel_errorf(KEEL_ERR_ARG, "the target must be a host name or address of 1..%u characters",
                           KEEL_PROBE_HOST_MAX);
    if (port > 65535)
        return keel_errorf(KEEL_ERR_ARG, "port %u is out of range", port);
    /* "[::1]" as people write it in URLs */
    char name[KEEL_PROBE_HOST_MAX + 1];
    size_t hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memcpy(name, host + 1, hl - 2);
        name[hl - 2] = '\0';
    } else {
        memcpy(name, host, hl + 1);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0 || res == NULL)
        return keel_errorf(KEEL_ERR_NOT_FOUND, "cannot resolve %s: %s", name, rc ? gai_strerror(rc) : "no address");
    memset(sa, 0, sizeof *sa);
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    *salen = res->ai_addrlen;
    freeaddrinfo(res);
    const void *a = NULL;
    if (sa->ss_family == AF_INET) {
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
        a = &((struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
        a = &((struct sockaddr_in6 *)sa)->sin6_addr;
    } else {
        return keel_errorf(KEEL_ERR_NOT_FOUND, "%s resolves to neither IPv4 nor IPv6", name);
    }
    if (text != NULL && inet_ntop(sa->ss_family, a, text, (socklen_t)text_cap) == NULL)
        return keel_errorf(KEEL_ERR_ARG, "address text buffer too small");
    return KEEL_OK;
}

static void set_port(struct sockaddr_storage *sa, unsigned port)
{
    if (sa->ss_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

static double ms_since(double t0)
{
    return (keel_now() - t0) * 1000.0;
}

/* Timings are whole microseconds: exact in JSON, unlike binary fractions. */
static json_t *json_us(double ms)
{
    return json_integer((json_int_t)(ms * 1000.0 + 0.5));
}

/* ---- TCP scan ------------------------------------------------------------- */

enum { SLOT_FREE, SLOT_CONNECT, SLOT_BANNER };

typedef struct {
    int fd;
    uint16_t port;
    uint8_t state;
    uint8_t attempt;
    double start, deadline, connect_ms;
    size_t blen;
    int bclosed; /* the service closed the connection after its banner */
    uint8_t banner[KEEL_PROBE_BANNER_MAX + 1];
} slot_t;

typedef struct {
    uint16_t port;
    double connect_ms;
    size_t blen;
    int truncated, bclosed;
    uint8_t banner[KEEL_PROBE_BANNER_MAX];
} open_port_t;

typedef struct {
    struct sockaddr_storage sa;
    socklen_t salen;
    int ep;
    slot_t *slots;
    unsigned window, active, free_top;
    unsigned *free_list;
    unsigned timeout_ms, banner_ms;
    /* ports to try: the set in order, then the ones that timed out once */
    const keel_portset_t *set;
    unsigned next_port;
    uint16_t *retry;
    unsigned retry_len, retry_pos;
    /* results */
    open_port_t *open;
    size_t open_len, open_alloc;
    unsigned closed, filtered, unreachable, self_connects;
    keel_portset_t filtered_set;
} scan_t;

static int next_port(scan_t *s, uint8_t *attempt)
{
    while (s->next_port <= 65535) {
        unsigned p = s->next_port++;
        if (keel_portset_has(s->set, p)) {
            *attempt = 0;
            return (int)p;
        }
    }
    if (s->retry_pos < s->retry_len) {
        *attempt = 1;
        return s->retry[s->retry_pos++];
    }
    return 0;
}

static int ports_left(const scan_t *s)
{
    for (unsigned p = s->next_port; p <= 65535; p++)
        if (keel_portset_has(s->set, p))
            return 1;
    return s->retry_pos < s->retry_len;
}

static void slot_release(scan_t *s, unsigned i, int reset)
{
    slot_t *sl = &s->slots[i];
    if (reset) {
        /* An RST instead of a FIN: no TIME_WAIT left behind by thousands of probes. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(sl->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(sl->fd); /* also leaves the epoll set */
    sl->fd = -1;
    sl->state = SLOT_FREE;
    s->free_list[s->free_top++] = i;
    s->active--;
}

static keel_status_t record_open(scan_t *s, const slot_t *sl)
{
    if (s->open_len == s->open_alloc) {
        size_t n = s->open_alloc ? s->open_alloc * 2 : 64;
        open_port_t *o = realloc(s->open, n * sizeof *o);
        if (o == NULL)
            return keel_errorf(KEEL_ERR_NOMEM, "out of memory for open ports");
        s->open = o;
        s->open_alloc = n;
    }
    open_port_t *o = &s->open[s->open_len++];
    o->port = sl->port;
    o->connect_ms = sl->connect_ms;
    o->truncated = sl->blen > KEEL_PROBE_BANNER_MAX;
    o->blen = o->truncated ? KEEL_PROBE_BANNER_MAX : sl->blen;
    o->bclosed = sl->bclosed;
    memcpy(o->banner, sl->banner, o->blen);
    return KEEL_OK;
}

static void timed_out(scan_t *s, unsigned i)
{
    slot_t *sl = &s->slots[i];
    if (sl->attempt == 0) {
        s->retry[s->retry_len++] = sl->port;
    } else {
        s->filtered++;
        keel_portset_add(&s->filtered_set, sl->port);
    }
    slot_release(s, i, 0);
}

/* Same address and port at both ends: the kernel's simultaneous open of a
 * connect to a free port in the ephemeral range, not a listener. */
static int self_connected(int fd)
{
    struct sockaddr_storage a, b;
    socklen_t al = sizeof a, bl = sizeof b;
    if (getsockname(fd, (struct sockaddr *)&a, &al) != 0 || getpeername(fd, (struct sockaddr *)&b, &bl) != 0)
        return 0;
    return al == bl && memcmp(&a, &b, al) == 0;
}

static keel_status_t connected(scan_t *s, unsigned i)
{
    slot_t *sl = &s->slots[i];
    if (self_connected(sl->fd)) {
        s->self_connects++;
        s->closed++;
        slot_release(s, i, 1);
        return KEEL_OK;
    }
    sl->connect_ms = ms_since(sl->start);
    sl->state = SLOT_BANNER;
    sl->blen = 0;
    sl->bclosed = 0;
    sl->deadline = keel_now() + s->banner_ms / 1000.0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    if (epoll_ctl(s->ep, EPOLL_CTL_MOD, sl->fd, &ev) != 0) {
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): no leak, run_tcp frees s->slots; the analyzer loses it here */
        keel_status_t st = record_open(s, sl);
        slot_release(s, i, 1);
        return st;
    }
    return KEEL_OK;
}

/* Starts a connect in a free slot. 1 started, 0 nothing to do, -1 out of
 * descriptors or local ports (the window shrinks to what is in flight). */
static int start_one(scan_t *s, keel_status_t *st)
{
    uint8_t attempt = 0;
    unsigned saved_next = s->next_port, saved_retry = s->retry_pos;
    int port = next_port(s, &attempt);
    if (port == 0)
        return 0;
    int fd = socket(s->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        s->next_port = saved_next;
        s->retry_pos = saved_retry;
        if ((errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) && s->active > 0)
            return -1;
        *st = keel_errorf(KEEL_ERR_IO, "socket: %s", strerror(errno));
        return -1;
    }
    set_port(&s->sa, (unsigned)port);
    unsigned i = s->free_list[--s->free_top];
    slot_t *sl = &s->slots[i];
    sl->fd = fd;
    sl->port = (uint16_t)port;
    sl->attempt = attempt;
    sl->state = SLOT_CONNECT;
    sl->start = keel_now();
    sl->deadline = sl->start + s->timeout_ms / 1000.0;
    s->active++;
    int rc = connect(fd, (struct sockaddr *)&s->sa, s->salen);
    int err = rc == 0 ? 0 : errno;
    if (rc == 0 || err == EINPROGRESS) {
        struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = i};
        if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            *st = keel_errorf(KEEL_ERR_IO, "epoll_ctl: %s", strerror(errno));
            slot_release(s, i, 1);
            return -1;
        }
        if (rc == 0)
            *st = connected(s, i);
        return 1;
    }
    if (err == ECONNREFUSED) {
        s->closed++;
        slot_release(s, i, 0);
        return 1;
    }
    if (err == EADDRNOTAVAIL || err == EAGAIN) {
        /* local ports exhausted: put the port back and wait for slots to drain */
        slot_release(s, i, 0);
        s->next_port = saved_next;
        s->retry_pos = saved_retry;
        if (s->active == 0)
            *st = keel_errorf(KEEL_ERR_IO, "connect: %s", strerror(err));
        return -1;
    }
    /* an ICMP or local refusal to route: nothing answers there */
    s->unreachable++;
    s->filtered++;
    keel_portset_add(&s->filtered_set, (unsigned)port);
    slot_release(s, i, 0);
    return 1;
}

static keel_status_t on_event(scan_t *s, unsigned i, uint32_t events)
{
    slot_t *sl = &s->slots[i];
    if (sl->state == SLOT_CONNECT) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(sl->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
            err = errno;
        if (err == 0 && (events & (EPOLLERR | EPOLLHUP)) == 0)
            return connected(s, i);
        if (err == 0)
            err = ECONNREFUSED;
        if (err == ECONNREFUSED) {
            s->closed++;
            slot_release(s, i, 0);
        } else if (err == ETIMEDOUT) {
            timed_out(s, i);
        } else {
            s->unreachable++;
            s->filtered++;
            keel_portset_add(&s->filtered_set, sl->port);
            slot_release(s, i, 0);
        }
        return KEEL_OK;
    }
    if (sl->state == SLOT_BANNER) {
        /* one byte past the cap tells a truncated banner from a full one */
        ssize_t n = read(sl->fd, sl->banner + sl->blen, sizeof sl->banner - sl->blen);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return KEEL_OK;
        if (n > 0)
            sl->blen += (size_t)n;
        if (n == 0)
            sl->bclosed = 1;
        if (n <= 0 || sl->blen == sizeof sl->banner) {
            keel_status_t st = record_open(s, sl);
            slot_release(s, i, 1);
            return st;
        }
    }
    return KEEL_OK;
}

static keel_status_t sweep(scan_t *s, double now)
{
    for (unsigned i = 0; i < s->window; i++) {
        slot_t *sl = &s->slots[i];
        if (sl->state == SLOT_FREE || sl->deadline > now)
            continue;
        if (sl->state == SLOT_CONNECT) {
            timed_out(s, i);
        } else {
            keel_status_t st = record_open(s, sl);
            slot_release(s, i, 1);
            if (st != KEEL_OK)
                return st;
        }
    }
    return KEEL_OK;
}

static unsigned default_window(void)
{
    struct rlimit rl;
    rlim_t soft = 1024; /* the usual default, if the limit cannot be read */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        soft = rl.rlim_cur == RLIM_INFINITY ? KEEL_SCAN_WINDOW_MAX + SCAN_FD_RESERVE : rl.rlim_cur;
    unsigned w = soft > SCAN_FD_RESERVE * 2 ? (unsigned)(soft - SCAN_FD_RESERVE) : (unsigned)(soft / 2);
    if (w > KEEL_SCAN_WINDOW_MAX)
        w = KEEL_SCAN_WINDOW_MAX;
    return w ? w : 1;
}

static int cmp_open(const void *a, const void *b)
{
    const open_port_t *x = a, *y = b;
    return (int)x->port - (int)y->port;
}

static keel_status_t scan_tcp(scan_t *s)
{
    keel_status_t st = KEEL_OK;
    double next_sweep = keel_now();
    struct epoll_event evs[256];
    while (st == KEEL_OK) {
        while (s->active < s->window && st == KEEL_OK) {
            int r = start_one(s, &st);
            if (r <= 0)
                break;
        }
        if (st != KEEL_OK)
            break;
        if (s->active == 0 && !ports_left(s))
            break;
        int n = epoll_wait(s->ep, evs, (int)(sizeof evs / sizeof evs[0]), 10);
        if (n < 0 && errno != EINTR) {
            st = keel_errorf(KEEL_ERR_IO, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int k = 0; k < n && st == KEEL_OK; k++)
            st = on_event(s, evs[k].data.u32, evs[k].events);
        double now = keel_now();
        if (st == KEEL_OK && now >= next_sweep) {
            st = sweep(s, now);
            next_sweep = now + 0.005;
        }
    }
    for (unsigned i = 0; i < s->window; i++)
        if (s->slots[i].state != SLOT_FREE)
            slot_release(s, i, 1);
    return st;
}

static keel_status_t tcp_json(scan_t *s, unsigned nports, double ms, json_t *doc)
{
    if (s->open_len > 1) /* no open port: s->open is NULL, which qsort must not get */
        qsort(s->open, s->open_len, sizeof *s->open, cmp_open);
    json_t *open = json_array(), *filt = json_array();
    json_t *tcp = json_object();
    int bad = open == NULL || filt == NULL || tcp == NULL;
    for (size_t i = 0; i < s->open_len && !bad; i++) {
        open_port_t *o = &s->open[i];
        json_t *e = json_pack("{s:i, s:o, s:o, s:i, s:b, s:b}", "port", (int)o->port, "connect_us",
                              json_us(o->connect_ms), "banner", keel_assess_escape(o->banner, o->blen),
                              "banner_bytes", (int)o->blen, "banner_truncated", o->truncated,
                              "closed_after_banner", o->bclosed);
        bad = e == NULL || json_array_append_new(open, e) != 0;
    }
    unsigned listed = 0;
    for (unsigned p = 1; p <= 65535 && !bad && listed < SCAN_FILTERED_LIST_MAX; p++)
        if (keel_portset_has(&s->filtered_set, p)) {
            bad = json_array_append_new(filt, json_integer(p)) != 0;
            listed++;
        }
    if (!bad)
        bad = json_object_set_new(tcp, "ports_scanned", json_integer(nports)) ||
              json_object_set_new(tcp, "timeout_ms", json_integer(s->timeout_ms)) ||
              json_object_set_new(tcp, "banner_ms", json_integer(s->banner_ms)) ||
              json_object_set_new(tcp, "window", json_integer(s->window)) ||
              json_object_set_new(tcp, "retried", json_integer(s->retry_len)) ||
              json_object_set_new(tcp, "duration_us", json_us(ms)) ||
              json_object_set_new(tcp, "open", open) ||
              json_object_set_new(tcp, "closed", json_integer(s->closed)) ||
              json_object_set_new(tcp, "filtered", json_integer(s->filtered)) ||
              json_object_set_new(tcp, "unreachable", json_integer(s->unreachable)) ||
              json_object_set_new(tcp, "filtered_ports", filt) ||
              json_object_set_new(tcp, "filtered_ports_truncated", json_boolean(s->filtered > listed)) ||
              json_object_set_new(doc, "tcp", tcp);
    else {
        json_decref(open);
        json_decref(filt);
        json_decref(tcp);
    }
    return bad ? keel_errorf(KEEL_ERR_NOMEM, "out of memory building the scan document") : KEEL_OK;
}

static keel_status_t run_tcp(const keel_scan_opts_t *o, const struct sockaddr_storage *sa, socklen_t salen,
                             json_t *doc)
{
    scan_t s = {0};
    s.sa = *sa;
    s.salen = salen;
    s.set = o->tcp;
    s.next_port = 1;
    s.timeout_ms = o->timeout_ms ? o->timeout_ms : SCAN_TIMEOUT_DEFAULT_MS;
    s.banner_ms = o->banner_ms ? o->banner_ms : SCAN_BANNER_DEFAULT_MS;
    unsigned nports = keel_portset_count(o->tcp);
    unsigned limit = default_window();
    s.window = o->window ? (o->window < limit ? o->window : limit) : limit;
    if (s.window > nports && nports > 0)
        s.window = nports;
    keel_status_t st = KEEL_OK;
    s.ep = epoll_create1(EPOLL_CLOEXEC);
    s.slots = calloc(s.window, sizeof *s.slots);
    s.free_list = calloc(s.window, sizeof *s.free_list);
    s.retry = calloc(nports ? nports : 1, sizeof *s.retry);
    if (s.ep < 0)
        st = keel_errorf(KEEL_ERR_IO, "epoll_create1: %s", strerror(errno));
    else if (s.slots == NULL || s.free_list == NULL || s.retry == NULL)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for a scan window of %u", s.window);
    if (st == KEEL_OK) {
        for (unsigned i = 0; i < s.window; i++) {
            s.slots[i].fd = -1;
            s.free_list[s.free_top++] = s.window - 1 - i;
        }
        double t0 = keel_now();
        st = scan_tcp(&s);
        if (st == KEEL_OK)
            st = tcp_json(&s, nports, ms_since(t0), doc);
    }
    if (s.ep >= 0)
        close(s.ep);
    free(s.slots);
    free(s.free_list);
    free(s.retry);
    free(s.open);
    return st;
}

/* ---- UDP probes ------------------------------------------------------------ */

static const char *const udp_names[KEEL_UDP_SERVICE_COUNT] = {"ssdp", "mdns", "coap", "snmp"};
static const unsigned udp_ports[KEEL_UDP_SERVICE_COUNT] = {1900, 5353, 5683, 161};

const char *keel_udp_service_name(keel_udp_service_t s)
{
    return (unsigned)s < KEEL_UDP_SERVICE_COUNT ? udp_names[s] : "?";
}

unsigned keel_udp_service_default_port(keel_udp_service_t s)
{
    return (unsigned)s < KEEL_UDP_SERVICE_COUNT ? udp_ports[s] : 0;
}

keel_status_t keel_udp_service_parse(const char *name, keel_udp_service_t *out)
{
    for (unsigned i = 0; name != NULL && i < KEEL_UDP_SERVICE_COUNT; i++)
        if (strcmp(name, udp_names[i]) == 0) {
            *out = (keel_udp_service_t)i;
            return KEEL_OK;
        }
    return keel_errorf(KEEL_ERR_ARG, "unknown UDP service '%s' (ssdp, mdns, coap, snmp)", name ? name : "");
}

static const char ssdp_msearch[] = "M-SEARCH * HTTP/1.1\r\n"
                                   "HOST: 239.255.255.250:1900\r\n"
                                   "MAN: \"ssdp:discover\"\r\n"
                                   "MX: 1\r\n"
                                   "ST: ssdp:all\r\n"
                                   "\r\n";

/* DNS-SD enumeration (_services._dns-sd._udp.local PTR). Sent from a port
 * other than 5353, a responder answers by unicast to us (legacy unicast). */
static const uint8_t mdns_query[] = {
    0x4b, 0x45, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    9, '_', 's', 'e', 'r', 'v', 'i', 'c', 'e', 's',
    7, '_', 'd', 'n', 's', '-', 's', 'd',
    4, '_', 'u', 'd', 'p',
    5, 'l', 'o', 'c', 'a', 'l', 0,
    0x00, 0x0c, 0x00, 0x01};

/* Confirmable GET, message id 0x4b45, Uri-Path ".well-known" / "core". */
static const uint8_t coap_get_core[] = {
    0x40, 0x01, 0x4b, 0x45,
    0xbb, '.', 'w', 'e', 'l', 'l', '-', 'k', 'n', 'o', 'w', 'n',
    0x04, 'c', 'o', 'r', 'e'};

/* GetRequest for sysDescr.0 (1.3.6.1.2.1.1.1.0) with community "public";
 * byte 4 is the version (0 = v1, 1 = v2c), bytes 17..20 the request id. */
static const uint8_t snmp_get_sysdescr[] = {
    0x30, 0x29, 0x02, 0x01, 0x01, 0x04, 0x06, 'p', 'u', 'b', 'l', 'i', 'c',
    0xa0, 0x1c, 0x02, 0x04, 0x4b, 0x45, 0x45, 0x4c, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00,
    0x30, 0x0e, 0x30, 0x0c, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0x05, 0x00};

/* One BER tag and definite length at p[*off]; 0 if it does not fit in n. */
static int ber_next(const uint8_t *p, size_t n, size_t *off, uint8_t *tag, size_t *len)
{
    size_t o = *off;
    if (o + 2 > n)
        return 0;
    *tag = p[o++];
    size_t l = p[o++];
    if (l & 0x80) {
        size_t k = l & 0x7f;
        if (k == 0 || k > 2 || o + k > n)
            return 0;
        l = 0;
        while (k--)
            l = (l << 8) | p[o++];
    }
    if (l > n - o)
        return 0;
    *off = o;
    *len = l;
    return 1;
}

static int ber_int(const uint8_t *p, size_t len, long *out)
{
    if (len == 0 || len > 4)
        return 0;
    long v = (p[0] & 0x80) ? -1 : 0;
    for (size_t i = 0; i < len; i++)
        v = (long)(((unsigned long)v << 8) | p[i]);
    *out = v;
    return 1;
}

/* Walks a GetResponse far enough to know the version, the error status and
 * the sysDescr value. Adds "snmp" to e; returns 1 for a GetResponse. */
static int snmp_parse(const uint8_t *p, size_t n, json_t *e)
{
    size_t off = 0, len = 0;
    uint8_t tag = 0;
    long version = -1, err = -1;
    if (!ber_next(p, n, &off, &tag, &len) || tag != 0x30)
        return 0;
    size_t end = off + len;
    if (!ber_next(p, end, &off, &tag, &len) || tag != 0x02 || !ber_int(p + off, len, &version))
        return 0;
    off += len;
    if (!ber_next(p, end, &off, &tag, &len) || tag != 0x04)
        return 0;
    json_t *community = keel_assess_escape(p + off, len);
    off += len;
    int ok = ber_next(p, end, &off, &tag, &len) && tag == 0xa2;
    json_t *descr = NULL;
    if (ok) {
        size_t pend = off + len;
        long reqid = 0, idx = 0;
        ok = ber_next(p, pend, &off, &tag, &len) && tag == 0x02 && ber_int(p + off, len, &reqid);
        off += ok ? len : 0;
        ok = ok && ber_next(p, pend, &off, &tag, &len) && tag == 0x02 && ber_int(p + off, len, &err);
        off += ok ? len : 0;
        ok = ok && ber_next(p, pend, &off, &tag, &len) && tag == 0x02 && ber_int(p + off, len, &idx);
        off += ok ? len : 0;
        /* varbind list, first varbind, its OID, then the value */
        if (ok && ber_next(p, pend, &off, &tag, &len) && tag == 0x30 && ber_next(p, pend, &off, &tag, &len) &&
            tag == 0x30 && ber_next(p, pend, &off, &tag, &len) && tag == 0x06) {
            off += len;
            if (ber_next(p, pend, &off, &tag, &len) && tag == 0x04)
                descr = keel_assess_escape(p + off, len);
        }
    }
    json_t *o = json_pack("{s:s, s:o*, s:s, s:i, s:o*}", "version", version == 0 ? "v1" : version == 1 ? "v2c" : "other",
                          "community", community, "pdu", ok ? "get-response" : "other", "error_status",
                          (int)err, "sys_descr", descr);
    if (o != NULL)
        (void)json_object_set_new(e, "snmp", o);
    return ok;
}

static void udp_parse(keel_udp_service_t svc, const uint8_t *p, size_t n, json_t *e, int *snmp_ok)
{
    if (svc == KEEL_UDP_SSDP || svc == KEEL_UDP_COAP || svc == KEEL_UDP_MDNS) {
        json_t *o = NULL;
        if (svc == KEEL_UDP_SSDP) {
            size_t l = 0;
            while (l < n && l < 128 && p[l] != '\r' && p[l] != '\n')
                l++;
            o = json_pack("{s:o, s:b}", "status_line", keel_assess_escape(p, l), "http_200",
                          n >= 12 && memcmp(p, "HTTP/1.1 200", 12) == 0);
        } else if (svc == KEEL_UDP_COAP && n >= 4) {
            char code[8];
            snprintf(code, sizeof code, "%u.%02u", (unsigned)(p[1] >> 5), (unsigned)(p[1] & 31));
            o = json_pack("{s:i, s:i, s:s, s:b}", "version", (int)(p[0] >> 6), "type",
                          (int)((p[0] >> 4) & 3), "code", code, "message_id_matches",
                          p[2] == coap_get_core[2] && p[3] == coap_get_core[3]);
        } else if (svc == KEEL_UDP_MDNS && n >= 12) {
            o = json_pack("{s:b, s:i}", "is_response", (p[2] & 0x80) != 0, "answers",
                          (int)((p[6] << 8) | p[7]));
        }
        if (o != NULL)
            (void)json_object_set_new(e, svc == KEEL_UDP_SSDP ? "ssdp" : svc == KEEL_UDP_COAP ? "coap" : "mdns", o);
    } else if (svc == KEEL_UDP_SNMP) {
        *snmp_ok = snmp_parse(p, n, e);
    }
}

static keel_status_t udp_one(const struct sockaddr_storage *base, socklen_t salen, const keel_udp_probe_t *pr,
                             unsigned timeout_ms, json_t *doc, json_t *arr)
{
    struct sockaddr_storage sa = *base;
    set_port(&sa, pr->port);
    const uint8_t *req[2] = {NULL, NULL};
    size_t reqlen[2] = {0, 0};
    uint8_t snmp_v1[sizeof snmp_get_sysdescr];
    switch (pr->service) {
    case KEEL_UDP_SSDP: req[0] = (const uint8_t *)ssdp_msearch; reqlen[0] = sizeof ssdp_msearch - 1; break;
    case KEEL_UDP_MDNS: req[0] = mdns_query; reqlen[0] = sizeof mdns_query; break;
    case KEEL_UDP_COAP: req[0] = coap_get_core; reqlen[0] = sizeof coap_get_core; break;
    case KEEL_UDP_SNMP:
        /* v2c and v1 together: an agent answers the one it speaks */
        memcpy(snmp_v1, snmp_get_sysdescr, sizeof snmp_v1);
        snmp_v1[4] = 0x00;
        snmp_v1[20] = 0x4d;
        req[0] = snmp_get_sysdescr;
        reqlen[0] = sizeof snmp_get_sysdescr;
        req[1] = snmp_v1;
        reqlen[1] = sizeof snmp_v1;
        break;
    default: return keel_errorf(KEEL_ERR_ARG, "unknown UDP service %d", (int)pr->service);
    }
    int fd = socket(sa.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return keel_errorf(KEEL_ERR_IO, "socket: %s", strerror(errno));
    /* connected, so an ICMP port-unreachable comes back as ECONNREFUSED */
    if (connect(fd, (struct sockaddr *)&sa, salen) != 0) {
        int err = errno;
        close(fd);
        return keel_errorf(KEEL_ERR_IO, "udp connect to port %u: %s", pr->port, strerror(err));
    }
    uint8_t buf[KEEL_PROBE_UDP_REPLY_MAX + 1];
    ssize_t got = -1;
    const char *state = "no_answer";
    double t0 = keel_now(), rtt = 0;
    unsigned attempts = 0;
    for (; attempts < 2 && got < 0 && strcmp(state, "no_answer") == 0; attempts++) {
        for (int k = 0; k < 2 && req[k] != NULL; k++)
            if (send(fd, req[k], reqlen[k], 0) < 0 && errno == ECONNREFUSED)
                state = "closed";
        double start = keel_now(), deadline = start + timeout_ms / 1000.0;
        while (strcmp(state, "no_answer") == 0) {
            double left = deadline - keel_now();
            if (left <= 0)
                break;
            struct pollfd pf = {.fd = fd, .events = POLLIN};
            int r = poll(&pf, 1, (int)(left * 1000.0) + 1);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got = recv(fd, buf, sizeof buf, 0);
            if (got >= 0) {
                rtt = ms_since(start);
                state = "answered";
            } else if (errno == ECONNREFUSED) {
                state = "closed";
            } else if (errno != EINTR && errno != EAGAIN) {
                break;
            }
        }
    }
    close(fd);
    json_t *e = json_pack("{s:s, s:i, s:i, s:s, s:b, s:i}", "service", keel_udp_service_name(pr->service), "port",
                          (int)pr->port, "request_bytes", (int)(reqlen[0] + reqlen[1]), "state", state,
                          "answered", got >= 0, "attempts", (int)attempts);
    if (e == NULL || json_array_append_new(arr, e) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a UDP observation");
    json_t *reqtxt = keel_assess_escape(req[0], reqlen[0]);
    if (reqtxt == NULL || json_object_set_new(e, "request", reqtxt) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a UDP observation");
    (void)json_object_set_new(e, "duration_us", json_us(ms_since(t0)));
    if (got < 0)
        return KEEL_OK;
    size_t n = (size_t)got > KEEL_PROBE_UDP_REPLY_MAX ? KEEL_PROBE_UDP_REPLY_MAX : (size_t)got;
    int snmp_ok = 0;
    if (json_object_set_new(e, "rtt_us", json_us(rtt)) != 0 ||
        json_object_set_new(e, "response", keel_assess_escape(buf, n)) != 0 ||
        json_object_set_new(e, "response_bytes", json_integer(n)) != 0 ||
        json_object_set_new(e, "response_truncated", json_boolean((size_t)got > KEEL_PROBE_UDP_REPLY_MAX)) != 0)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for a UDP observation");
    udp_parse(pr->service, buf, n, e, &snmp_ok);
    char what[160];
    if (pr->service == KEEL_UDP_SNMP) {
        if (!snmp_ok)
            return KEEL_OK;
        snprintf(what, sizeof what, "SNMP agent on udp/%u answers a GetRequest with the default community \"public\"",
                 pr->port);
        return keel_assess_finding(doc, "5.1-1", "fail", what);
    }
    snprintf(what, sizeof what, "%s answers on udp/%u; compare with the interfaces the IXIT declares",
             keel_udp_service_name(pr->service), pr->port);
    return keel_assess_finding(doc, "5.6-1", "info", what);
}

/* ---- entry point ----------------------------------------------------------- */

keel_status_t keel_assess_scan(const keel_scan_opts_t *o, json_t **out)
{
    if (o == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no scan options");
    *out = NULL;
    if (o->tcp == NULL && o->udp_len == 0)
        return keel_errorf(KEEL_ERR_ARG, "nothing to scan: no TCP ports and no UDP probes");
    if (o->udp_len > KEEL_PROBE_UDP_MAX || (o->udp_len > 0 && o->udp == NULL))
        return keel_errorf(KEEL_ERR_ARG, "at most %u UDP probes", KEEL_PROBE_UDP_MAX);
    if (o->timeout_ms > SCAN_TIMEOUT_MAX_MS || o->banner_ms > SCAN_TIMEOUT_MAX_MS)
        return keel_errorf(KEEL_ERR_ARG, "timeouts are capped at %u ms", SCAN_TIMEOUT_MAX_MS);
    if (o->window > KEEL_SCAN_WINDOW_MAX)
        return keel_errorf(KEEL_ERR_ARG, "the window is capped at %u sockets", KEEL_SCAN_WINDOW_MAX);
    for (size_t i = 0; i < o->udp_len; i++)
        if ((unsigned)o->udp[i].service >= KEEL_UDP_SERVICE_COUNT || o->udp[i].port < 1 || o->udp[i].port > 65535)
            return keel_errorf(KEEL_ERR_ARG, "bad UDP probe %zu (service or port)", i);
    struct sockaddr_storage sa;
    socklen_t salen = 0;
    char addr[INET6_ADDRSTRLEN + 1];
    keel_status_t st = keel_assess_resolve(o->host, 0, &sa, &salen, addr, sizeof addr);
    if (st != KEEL_OK)
        return st;
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[]}", "format", "keel-assess-ports-1", "probe", "ports",
                            "target", o->host, "address", addr,
                            "family", sa.ss_family == AF_INET ? "ipv4" : "ipv6", "findings");
    if (doc == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the scan document");
    double t0 = keel_now();
    if (o->tcp != NULL && keel_portset_count(o->tcp) > 0)
        st = run_tcp(o, &sa, salen, doc);
    if (st == KEEL_OK && o->udp_len > 0) {
        json_t *arr = json_array();
        if (arr == NULL || json_object_set_new(doc, "udp", arr) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the scan document");
        unsigned tmo = o->timeout_ms ? o->timeout_ms : SCAN_TIMEOUT_DEFAULT_MS;
        for (size_t i = 0; i < o->udp_len && st == KEEL_OK; i++)
            st = udp_one(&sa, salen, &o->udp[i], tmo, doc, arr);
    }
    if (st == KEEL_OK && json_object_set_new(doc, "duration_us", json_us(ms_since(t0))) != 0)
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory for the scan document");
    if (st != KEEL_OK) {
        json_decref(doc);
        return st;
    }
    *out = doc;
    return KEEL_OK;
}

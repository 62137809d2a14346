/*
 * keel assess: telnet, SSH and FTP probe of one port (test unit
 * "telnet_ssh_ftp"): the remote-login services a careless device leaves open.
 *
 * Telnet and FTP are spoken over a plain socket: both are line protocols a
 * few dozen lines cover, and doing it ourselves keeps every read bounded (a
 * text window, a line cap, a reply-line cap, a byte cap per connection) and
 * every wait under a deadline. SSH authentication goes through libssh, whose
 * blocking calls honour the session timeout; the server's KEXINIT (what it
 * offers) is read from a raw socket first, because libssh reports only what
 * was negotiated. Every step's deadline is clipped to the probe's budget.
 */
#define _GNU_SOURCE
#include "keel/assess_probe.h"
#include "keel/assess_services.h"

#include "net.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <libssh/libssh.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define UNIT "telnet_ssh_ftp"
#define SVC_TIMEOUT_DEFAULT_MS 3000u
#define SVC_BUDGET_DEFAULT_MS 20000u
#define SVC_PAIRS_DEFAULT 8u
#define SVC_TIMEOUT_MAX_MS 30000u
#define SVC_BUDGET_MAX_MS 600000u
#define SVC_PAIRS_MAX 64u
#define CONN_READ_MAX 65536u     /* bytes read from one connection at most */
#define TN_WINDOW 2048u          /* telnet text scanned for prompts (the latest bytes) */
#define TN_REPLIES_MAX 64u       /* option refusals sent on one connection */
#define FTP_LINE_MAX 512u        /* one reply line */
#define FTP_REPLY_LINES_MAX 32u  /* lines of one (multi-line) reply */
#define SSH_LINE_MAX 255u        /* the identification line (RFC 4253: 255 with CR LF) */
#define SSH_PRE_LINES_MAX 16u    /* lines a server may send before it */
#define SSH_PACKET_MAX 35000u    /* RFC 4253 6.1 */
#define SSH_NAMES_MAX 64u        /* algorithm names kept per list */
#define SSH_KBDINT_ROUNDS 3u
#define ANON_PASS "keel-probe@example.invalid"

typedef struct {
    const keel_svc_probe_opts_t *o;
    struct sockaddr_storage sa;
    socklen_t salen;
    char addr[INET6_ADDRSTRLEN + 1];
    unsigned timeout_ms, max_pairs;
    double t0, budget_end;
    json_t *doc;
    unsigned tried, untried;
    int accepted; /* a default pair worked: the rest need not be tried */
} probe_t;

/* ---- shared helpers -------------------------------------------------------------- */

static keel_status_t nomem(void)
{
    return keel_errorf(KEEL_ERR_NOMEM, "out of memory for the service document");
}

static long long us_since(double t0)
{
    return (long long)((keel_now() - t0) * 1e6 + 0.5);
}

/* The deadline of one step: its timeout, clipped to the budget. */
static double step_deadline(const probe_t *p)
{
    double d = keel_now() + p->timeout_ms / 1000.0;
    return d < p->budget_end ? d : p->budget_end;
}

static int budget_left(const probe_t *p)
{
    return keel_now() + 0.05 < p->budget_end;
}

static keel_status_t set(probe_t *p, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(p->doc, key, v) == 0 ? KEEL_OK : nomem();
}

static keel_status_t evidence(probe_t *p, const char *sent, const char *observed, size_t observed_len, double t0)
{
    return keel_assess_evidence(p->doc, UNIT, sent, strlen(sent), observed, observed_len, us_since(t0));
}

static keel_status_t finding(probe_t *p, const char *provision, const char *severity, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static keel_status_t finding(probe_t *p, const char *provision, const char *severity, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return keel_assess_unit_finding(p->doc, UNIT, provision, severity, what);
}

/* Text from the target as a printable C string for a finding. */
static void printable(char *out, size_t cap, const uint8_t *s, size_t n)
{
    json_t *j = keel_assess_escape(s, n);
    snprintf(out, cap, "%s", j ? json_string_value(j) : "?");
    json_decref(j);
}

enum { RD_TIMEOUT = -2, RD_ERROR = -1, RD_CLOSED = 0 };

static int recv_some(int fd, uint8_t *b, size_t cap, double deadline)
{
    for (;;) {
        if (!keel_assess_wait_fd(fd, POLLIN, deadline))
            return RD_TIMEOUT;
        ssize_t r = recv(fd, b, cap, 0);
        if (r > 0)
            return (int)r;
        if (r == 0)
            return RD_CLOSED;
        if (errno != EINTR && errno != EAGAIN)
            return RD_ERROR;
    }
}

static int send_all(int fd, const void *b, size_t n, double deadline)
{
    const uint8_t *q = b;
    while (n > 0) {
        ssize_t r = send(fd, q, n, MSG_NOSIGNAL);
        if (r > 0) {
            q += r;
            n -= (size_t)r;
        } else if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
            if (!keel_assess_wait_fd(fd, POLLOUT, deadline))
                return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

/* Case-insensitive search in a byte window. */
static int contains(const uint8_t *h, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (strncasecmp((const char *)h + i, needle, k) == 0)
            return 1;
    return 0;
}

/* A software version in a banner: a digit, a dot and a digit ("3.0.3",
 * "dropbear_2022.83"). */
static int has_version(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i + 2 < n; i++)
        if (isdigit(s[i]) && s[i + 1] == '.' && isdigit(s[i + 2]))
            return 1;
    return 0;
}

/* Pairs to try: the first max_pairs default pairs, and root with an empty
 * password even when it is further down the list. */
static size_t pairs_plan(const probe_t *p, const keel_cred_pair_t **out, size_t cap)
{
    size_t n = 0, total = 0;
    const keel_cred_pair_t *all = keel_assess_default_creds(&total);
    int root_empty = 0;
    for (size_t i = 0; i < total && n < p->max_pairs && n < cap; i++) {
        out[n++] = &all[i];
        root_empty |= strcmp(all[i].user, "root") == 0 && all[i].password[0] == '\0';
    }
    for (size_t i = 0; !root_empty && i < total && n < cap; i++)
        if (strcmp(all[i].user, "root") == 0 && all[i].password[0] == '\0') {
            out[n++] = &all[i];
            root_empty = 1;
        }
    return n;
}

static keel_status_t pair_accepted(probe_t *p, const char *service, const keel_cred_pair_t *c, const char *how)
{
    p->accepted = 1;
    json_t *arr = json_object_get(p->doc, "accepted");
    json_t *e = json_pack("{s:s, s:s}", "user", c->user, "password", c->password);
    if (!json_is_array(arr) || e == NULL || json_array_append_new(arr, e) != 0)
        return nomem();
    return finding(p, "5.1-1", "fail", "port %u (%s): the default credentials \"%s\"/\"%s\" are accepted (%s)",
                   p->o->port, service, c->user, c->password, how);
}

/* ---- telnet ------------------------------------------------------------------------ */

enum { TN_DATA, TN_IAC, TN_OPT, TN_SB, TN_SB_IAC };
enum { M_NONE = 0, M_LOGIN = 1, M_PASSWORD = 2, M_SHELL = 4, M_REFUSED = 8 };
#define TN_IAC_B 255
#define TN_DONT 254
#define TN_DO 253
#define TN_WONT 252
#define TN_WILL 251
#define TN_SB_B 250
#define TN_SE 240

typedef struct {
    int fd;
    int state;
    uint8_t cmd;
    unsigned refused, requests;
    size_t total;
    uint8_t replied[2][32]; /* (DO, WILL) x option bitmaps: each refused once */
    uint8_t win[TN_WINDOW];
    size_t wlen;
    uint8_t out[3 * TN_REPLIES_MAX];
    size_t olen;
} tn_t;

static void tn_text(tn_t *t, uint8_t c)
{
    if (c == 0)
        return;
    if (t->wlen == sizeof t->win) {
        /* keep the latest half: prompts are at the end */
        memmove(t->win, t->win + sizeof t->win / 2, sizeof t->win / 2);
        t->wlen = sizeof t->win / 2;
    }
    t->win[t->wlen++] = c;
}

static void tn_refuse(tn_t *t, uint8_t cmd, uint8_t opt)
{
    int k = cmd == TN_DO ? 0 : 1;
    t->requests++;
    if (t->replied[k][opt / 8] & (1u << (opt % 8)) || t->refused >= TN_REPLIES_MAX)
        return;
    t->replied[k][opt / 8] |= (uint8_t)(1u << (opt % 8));
    t->refused++;
    t->out[t->olen++] = TN_IAC_B;
    t->out[t->olen++] = cmd == TN_DO ? TN_WONT : TN_DONT;
    t->out[t->olen++] = opt;
}

/* The telnet layer: data to the window, DO/WILL refused once per option,
 * subnegotiations skipped whatever their length. */
static void tn_feed(tn_t *t, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = b[i];
        switch (t->state) {
        case TN_DATA:
            if (c == TN_IAC_B)
                t->state = TN_IAC;
            else
                tn_text(t, c);
            break;
        case TN_IAC:
            if (c == TN_IAC_B) {
                tn_text(t, c);
                t->state = TN_DATA;
            } else if (c >= TN_WILL && c <= TN_DONT) {
                t->cmd = c;
                t->state = TN_OPT;
            } else {
                t->state = c == TN_SB_B ? TN_SB : TN_DATA;
            }
            break;
        case TN_OPT:
            if (t->cmd == TN_DO || t->cmd == TN_WILL)
                tn_refuse(t, t->cmd, c);
            t->state = TN_DATA;
            break;
        case TN_SB:
            if (c == TN_IAC_B)
                t->state = TN_SB_IAC;
            break;
        default: /* TN_SB_IAC */
            t->state = c == TN_SE ? TN_DATA : TN_SB;
            break;
        }
    }
}

/* What the window shows: a prompt at its end, or a refusal anywhere. */
static int tn_classify(const tn_t *t)
{
    int m = M_NONE;
    static const char *const refusals[] = {"incorrect", "invalid", "fail", "denied", "wrong", "try again"};
    for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++)
        if (contains(t->win, t->wlen, refusals[i]))
            m |= M_REFUSED;
    size_t end = t->wlen;
    while (end > 0 && (t->win[end - 1] == ' ' || t->win[end - 1] == '\t'))
        end--;
    if (end == 0)
        return m;
    size_t start = end;
    while (start > 0 && t->win[start - 1] != '\n' && t->win[start - 1] != '\r')
        start--;
    const uint8_t *line = t->win + start;
    size_t len = end - start;
    uint8_t last = t->win[end - 1];
    if (last == ':') {
        if (contains(line, len, "password") || contains(line, len, "passcode"))
            m |= M_PASSWORD;
        else if (contains(line, len, "login") || contains(line, len, "user") || contains(line, len, "name") ||
                 contains(line, len, "account"))
            m |= M_LOGIN;
    } else if ((last == '#' || last == '$' || last == '>' || last == '%') && len <= 80) {
        m |= M_SHELL;
    }
    return m;
}

static int tn_nonblank(const tn_t *t)
{
    for (size_t i = 0; i < t->wlen; i++)
        if (!isspace(t->win[i]))
            return 1;
    return 0;
}

/* Reads until the window shows one of `want`: the match, M_NONE on timeout,
 * -1 when the connection closed or its byte cap was reached. */
static int tn_read_until(tn_t *t, double deadline, int want)
{
    for (;;) {
        int m = tn_classify(t) & want;
        if (m)
            return m;
        if (t->total >= CONN_READ_MAX)
            return -1;
        uint8_t b[1024];
        size_t cap = CONN_READ_MAX - t->total < sizeof b ? CONN_READ_MAX - t->total : sizeof b;
        int r = recv_some(t->fd, b, cap, deadline);
        if (r == RD_TIMEOUT)
            return M_NONE;
        if (r <= 0)
            return -1;
        t->total += (size_t)r;
        tn_feed(t, b, (size_t)r);
        if (t->olen > 0) {
            if (send_all(t->fd, t->out, t->olen, deadline) != 0)
                return -1;
            t->olen = 0;
        }
    }
}

static void tn_close(tn_t *t)
{
    if (t->fd >= 0)
        close(t->fd);
    memset(t, 0, sizeof *t);
    t->fd = -1;
}

static int tn_open(probe_t *p, tn_t *t, char *why, size_t cap)
{
    tn_close(t);
    t->fd = keel_assess_tcp_connect(&p->sa, p->salen, step_deadline(p), why, cap);
    return t->fd >= 0 ? 0 : -1;
}

static int tn_send_line(tn_t *t, const char *s, double deadline)
{
    char line[160];
    int n = snprintf(line, sizeof line, "%s\r\n", s);
    int r = n > 0 && (size_t)n < sizeof line ? send_all(t->fd, line, (size_t)n, deadline) : -1;
    keel_wipe(line, sizeof line);
    return r;
}

/* One pair on a connection standing at a login (or password-only) prompt. */
static keel_status_t tn_try(probe_t *p, tn_t *t, int at, const keel_cred_pair_t *c)
{
    double t0 = keel_now();
    char sent[192];
    snprintf(sent, sizeof sent, "login \"%s\" password \"%s\"", at == M_LOGIN ? c->user : "", c->password);
    int m = M_PASSWORD;
    t->wlen = 0;
    if (at == M_LOGIN) {
        if (tn_send_line(t, c->user, step_deadline(p)) != 0)
            m = -1;
        else
            m = tn_read_until(t, step_deadline(p), M_PASSWORD | M_SHELL | M_LOGIN | M_REFUSED);
    }
    if (m == M_PASSWORD || (m > 0 && (m & M_PASSWORD) && !(m & M_REFUSED))) {
        t->wlen = 0;
        m = tn_send_line(t, c->password, step_deadline(p)) != 0
                ? -1
                : tn_read_until(t, step_deadline(p), M_SHELL | M_LOGIN | M_PASSWORD | M_REFUSED);
    }
    p->tried++;
    const char *verdict;
    int accepted = 0;
    if (m > 0 && (m & M_SHELL) && !(m & M_REFUSED)) {
        verdict = "accepted: shell prompt";
        accepted = 1;
    } else if (m > 0) {
        verdict = "refused";
    } else if (m == M_NONE && tn_nonblank(t)) {
        /* an answer without "incorrect" and without a new prompt: logged in */
        verdict = "accepted: an answer without a refusal";
        accepted = 1;
    } else {
        verdict = m == M_NONE ? "no answer in time" : "connection closed";
    }
    char observed[KEEL_PROBE_EVIDENCE_TEXT];
    int hl = snprintf(observed, sizeof observed, "%s: ", verdict);
    size_t k = t->wlen < sizeof observed - (size_t)hl ? t->wlen : sizeof observed - (size_t)hl;
    memcpy(observed + hl, t->win, k);
    keel_status_t st = evidence(p, sent, observed, (size_t)hl + k, t0);
    if (st == KEEL_OK && accepted)
        st = pair_accepted(p, "telnet", c, verdict);
    if (m < 0 || accepted)
        tn_close(t);
    return st;
}

static keel_status_t probe_telnet(probe_t *p)
{
    tn_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return nomem();
    t->fd = -1;
    double t0 = keel_now();
    char why[128];
    keel_status_t st = KEEL_OK;
    if (tn_open(p, t, why, sizeof why) != 0) {
        char reason[192];
        snprintf(reason, sizeof reason, "port %u could not be reached: %s", p->o->port, why);
        st = keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_INCONCLUSIVE, reason);
        free(t);
        return st;
    }
    int m = tn_read_until(t, step_deadline(p), M_LOGIN | M_PASSWORD | M_SHELL);
    char observed[KEEL_PROBE_EVIDENCE_TEXT];
    int hl = snprintf(observed, sizeof observed, "%u option request(s), %u refused; %s: ", t->requests, t->refused,
                      m > 0 ? (m & M_SHELL ? "shell prompt" : "login prompt") : m == 0 ? "no prompt in time" : "closed");
    size_t k = t->wlen < sizeof observed - (size_t)hl ? t->wlen : sizeof observed - (size_t)hl;
    memcpy(observed + hl, t->win, k);
    st = evidence(p, "connect; refuse every telnet option (DO -> WONT, WILL -> DONT)", observed, (size_t)hl + k, t0);
    if (st == KEEL_OK)
        st = set(p, "banner", keel_assess_escape(t->win, t->wlen < KEEL_PROBE_BANNER_MAX ? t->wlen
                                                                                          : KEEL_PROBE_BANNER_MAX));
    if (st == KEEL_OK)
        st = set(p, "telnet", json_pack("{s:i, s:i, s:b, s:b}", "option_requests", (int)t->requests,
                                        "refused", (int)t->refused, "login_prompt", m > 0 && (m & M_LOGIN),
                                        "shell_without_login", m > 0 && (m & M_SHELL)));
    if (st == KEEL_OK && t->total == 0 && m != M_NONE) {
        char reason[160];
        snprintf(reason, sizeof reason, "port %u closed the connection without a word", p->o->port);
        st = keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_INCONCLUSIVE, reason);
        tn_close(t);
        free(t);
        return st;
    }
    if (st == KEEL_OK)
        st = keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_RAN, NULL);
    if (st == KEEL_OK)
        st = finding(p, "5.5-1", "fail",
                     "port %u: telnet is remote login in clear: user names, passwords and the session cross the "
                     "network unencrypted",
                     p->o->port);
    if (st == KEEL_OK && m > 0 && (m & M_SHELL))
        st = finding(p, "5.1-1", "fail", "port %u (telnet): a shell prompt without any login", p->o->port);
    int at = m > 0 ? (m & M_LOGIN ? M_LOGIN : m & M_PASSWORD ? M_PASSWORD : 0) : 0;
    const keel_cred_pair_t *plan[SVC_PAIRS_MAX + 1];
    size_t n = at ? pairs_plan(p, plan, sizeof plan / sizeof plan[0]) : 0;
    size_t i = 0;
    for (; i < n && st == KEEL_OK && !p->accepted && budget_left(p); i++) {
        if (t->fd < 0 || at == 0) {
            if (tn_open(p, t, why, sizeof why) != 0)
                break;
            int r = tn_read_until(t, step_deadline(p), M_LOGIN | M_PASSWORD);
            at = r > 0 ? (r & M_LOGIN ? M_LOGIN : M_PASSWORD) : 0;
            if (at == 0)
                break;
        }
        st = tn_try(p, t, at, plan[i]);
        if (st == KEEL_OK && t->fd >= 0) {
            /* back at a prompt on the same connection (it may already be in the
             * window, after the refusal), or start afresh */
            int r = tn_read_until(t, step_deadline(p), M_LOGIN | M_PASSWORD);
            at = r > 0 ? (r & M_LOGIN ? M_LOGIN : M_PASSWORD) : 0;
        }
    }
    if (!p->accepted)
        p->untried += (unsigned)(n - i);
    tn_close(t);
    free(t);
    return st;
}

/* ---- FTP ------------------------------------------------------------------------------ */

typedef struct {
    int fd;
    uint8_t buf[FTP_LINE_MAX * 2];
    size_t len;
    size_t total;
} ftp_t;

/* One reply: its code and its text (all lines, joined, capped). 1 on a
 * reply, 0 on timeout, -1 when closed, on a malformed or oversized reply. */
static int ftp_reply(ftp_t *f, double deadline, int *code, char *text, size_t tcap, char *why, size_t wcap)
{
    size_t tlen = 0;
    int first = -1;
    text[0] = '\0';
    for (unsigned lines = 0; lines < FTP_REPLY_LINES_MAX;) {
        uint8_t *nl = memchr(f->buf, '\n', f->len);
        if (nl == NULL) {
            if (f->len >= FTP_LINE_MAX) {
                snprintf(why, wcap, "a reply line longer than %u bytes", FTP_LINE_MAX);
                return -1;
            }
            if (f->total >= CONN_READ_MAX) {
                snprintf(why, wcap, "more than %u bytes on one connection", CONN_READ_MAX);
                return -1;
            }
            int r = recv_some(f->fd, f->buf + f->len, sizeof f->buf - f->len, deadline);
            if (r == RD_TIMEOUT) {
                snprintf(why, wcap, "no reply in time");
                return 0;
            }
            if (r <= 0) {
                snprintf(why, wcap, "connection closed");
                return -1;
            }
            f->len += (size_t)r;
            f->total += (size_t)r;
            continue;
        }
        size_t ll = (size_t)(nl - f->buf) + 1;
        if (ll > FTP_LINE_MAX) {
            snprintf(why, wcap, "a reply line longer than %u bytes", FTP_LINE_MAX);
            return -1;
        }
        lines++;
        const uint8_t *l = f->buf;
        int c = ll >= 4 && isdigit(l[0]) && isdigit(l[1]) && isdigit(l[2]) ? (l[0] - '0') * 100 + (l[1] - '0') * 10 +
                                                                                 (l[2] - '0')
                                                                           : -1;
        if (first < 0 && c < 0) {
            snprintf(why, wcap, "not an FTP reply");
            return -1;
        }
        if (first < 0)
            first = c;
        /* the text, escaped later by the evidence; NULs would cut it here */
        for (size_t i = 0; i < ll && tlen + 1 < tcap; i++)
            text[tlen++] = l[i] ? (char)l[i] : '?';
        text[tlen] = '\0';
        int last = c == first && (ll < 4 || l[3] == ' ' || l[3] == '\r' || l[3] == '\n');
        memmove(f->buf, f->buf + ll, f->len - ll);
        f->len -= ll;
        if (last) {
            *code = first;
            return 1;
        }
    }
    snprintf(why, wcap, "a reply of more than %u lines", FTP_REPLY_LINES_MAX);
    return -1;
}

/* Sends a command (NULL: none, just read) and reads the reply, recording both. */
static keel_status_t ftp_cmd(probe_t *p, ftp_t *f, const char *cmd, const char *shown, int *code, char *text,
                             size_t tcap)
{
    double t0 = keel_now();
    char why[128] = "";
    int r = -1;
    *code = -1;
    if (cmd != NULL) {
        char line[192];
        int n = snprintf(line, sizeof line, "%s\r\n", cmd);
        if (n > 0 && (size_t)n < sizeof line && send_all(f->fd, line, (size_t)n, step_deadline(p)) == 0)
            r = ftp_reply(f, step_deadline(p), code, text, tcap, why, sizeof why);
        else
            snprintf(why, sizeof why, "send failed");
        keel_wipe(line, sizeof line);
    } else {
        r = ftp_reply(f, step_deadline(p), code, text, tcap, why, sizeof why);
    }
    if (r != 1) {
        *code = -1;
        snprintf(text, tcap, "%s", why);
    }
    return evidence(p, shown ? shown : "connect; read the greeting", text, strlen(text), t0);
}

static int ftp_open(probe_t *p, ftp_t *f, char *why, size_t cap)
{
    memset(f, 0, sizeof *f);
    f->fd = keel_assess_tcp_connect(&p->sa, p->salen, step_deadline(p), why, cap);
    return f->fd >= 0 ? 0 : -1;
}

static void ftp_close(probe_t *p, ftp_t *f)
{
    if (f->fd >= 0) {
        (void)send_all(f->fd, "QUIT\r\n", 6, keel_now() + 0.1 < p->budget_end ? keel_now() + 0.1 : p->budget_end);
        close(f->fd);
    }
    f->fd = -1;
}

/* A login: USER, then PASS when asked. *user_code is the USER reply. 1 when
 * logged in, 0 refused, -1 no answer or not FTP. */
static keel_status_t ftp_login(probe_t *p, ftp_t *f, const char *user, const char *pass, int *user_code, int *ok,
                               char *text, size_t tcap)
{
    char cmd[160], shown[200];
    int code = -1;
    *ok = -1;
    snprintf(cmd, sizeof cmd, "USER %s", user);
    keel_status_t st = ftp_cmd(p, f, cmd, cmd, &code, text, tcap);
    *user_code = code;
    if (st != KEEL_OK || code < 0)
        return st;
    if (code == 230) {
        *ok = 1;
        return KEEL_OK;
    }
    if (code != 331 && code != 332) {
        *ok = 0;
        return KEEL_OK;
    }
    snprintf(cmd, sizeof cmd, "PASS %s", pass);
    snprintf(shown, sizeof shown, "PASS \"%s\"", pass);
    st = ftp_cmd(p, f, cmd, shown, &code, text, tcap);
    keel_wipe(cmd, sizeof cmd);
    *ok = code == 230 || code == 202 ? 1 : code < 0 ? -1 : 0;
    return st;
}

static int tls_required_text(const char *text)
{
    const uint8_t *t = (const uint8_t *)text;
    size_t n = strlen(text);
    return contains(t, n, "TLS") || contains(t, n, "SSL") || contains(t, n, "AUTH") || contains(t, n, "secure") ||
           contains(t, n, "encrypt");
}

static keel_status_t probe_ftp(probe_t *p)
{
    ftp_t *f = calloc(1, sizeof *f);
    if (f == NULL)
        return nomem();
    char why[128], text[KEEL_PROBE_EVIDENCE_TEXT], reason[256];
    int code = -1, ucode = -1, ok = -1;
    keel_status_t st = KEEL_OK;
    if (ftp_open(p, f, why, sizeof why) != 0) {
        snprintf(reason, sizeof reason, "port %u could not be reached: %s", p->o->port, why);
        st = keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_INCONCLUSIVE, reason);
        free(f);
        return st;
    }
    st = ftp_cmd(p, f, NULL, NULL, &code, text, sizeof text);
    if (st == KEEL_OK)
        st = set(p, "banner", keel_assess_escape((const uint8_t *)text,
                                                 strlen(text) < KEEL_PROBE_BANNER_MAX ? strlen(text)
                                                                                      : KEEL_PROBE_BANNER_MAX));
    if (st == KEEL_OK && code / 100 != 2) {
        snprintf(reason, sizeof reason, "port %u did not greet like an FTP server (%s)", p->o->port,
                 code < 0 ? "no reply" : "reply not 2xx");
        st = keel_assess_unit_mark(p->doc, UNIT, code < 0 ? KEEL_UNIT_NOT_APPLICABLE : KEEL_UNIT_INCONCLUSIVE,
                                   reason);
        ftp_close(p, f);
        free(f);
        return st;
    }
    if (st == KEEL_OK)
        st = keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_RAN, NULL);
    if (st == KEEL_OK && has_version((const uint8_t *)text, strlen(text))) {
        char shown[200];
        size_t tl = strlen(text);
        while (tl > 0 && isspace((unsigned char)text[tl - 1]))
            tl--;
        printable(shown, 120, (const uint8_t *)text, tl);
        st = finding(p, "5.6-2", "warn", "port %u (FTP): the greeting discloses the software version: %s", p->o->port,
                     shown);
    }
    /* anonymous: also tells whether USER is accepted before AUTH TLS */
    if (st == KEEL_OK)
        st = ftp_login(p, f, "anonymous", ANON_PASS, &ucode, &ok, text, sizeof text);
    ftp_close(p, f);
    int clear_login = ucode == 331 || ucode == 332 || ucode == 230;
    int tls_required = !clear_login && ucode >= 500 && tls_required_text(text);
    const char *anon = ok == 1 ? "accepted" : tls_required ? "tls_required" : ok == 0 ? "refused" : "no_answer";
    if (st == KEEL_OK && ok == 1)
        st = finding(p, "5.5-4", "fail", "port %u (FTP, in clear): anonymous login accepted (USER anonymous%s: 230)",
                     p->o->port, ucode == 230 ? "" : ", PASS an e-mail address");
    /* the default pairs, each on a connection of its own */
    const keel_cred_pair_t *plan[SVC_PAIRS_MAX + 1];
    size_t n = tls_required ? 0 : pairs_plan(p, plan, sizeof plan / sizeof plan[0]), i = 0;
    for (; i < n && st == KEEL_OK && !p->accepted && budget_left(p); i++) {
        if (ftp_open(p, f, why, sizeof why) != 0)
            break;
        st = ftp_cmd(p, f, NULL, NULL, &code, text, sizeof text);
        if (st == KEEL_OK && code / 100 == 2) {
            int uc = -1, pok = -1;
            p->tried++;
            st = ftp_login(p, f, plan[i]->user, plan[i]->password, &uc, &pok, text, sizeof text);
            clear_login |= uc == 331 || uc == 332 || uc == 230;
            if (st == KEEL_OK && pok == 1)
                st = pair_accepted(p, "FTP", plan[i], "230 after PASS");
        }
        ftp_close(p, f);
        if (code / 100 != 2)
            break;
    }
    if (!p->accepted)
        p->untried += (unsigned)(n - i);
    if (st == KEEL_OK && clear_login)
        st = finding(p, "5.5-1", "fail",
                     "port %u: FTP takes USER and PASS in clear (no AUTH TLS required before USER): credentials "
                     "and files cross the network unencrypted",
                     p->o->port);
    if (st == KEEL_OK)
        st = set(p, "ftp", json_pack("{s:s, s:b, s:b}", "anonymous", anon, "clear_login", clear_login,
                                     "tls_required", tls_required));
    free(f);
    return st;
}

/* ---- SSH ---------------------------------------------------------------------------------- */

typedef struct {
    char banner[SSH_LINE_MAX + 1];
    size_t blen;
    json_t *lists[4]; /* kex, host key, ciphers (client to server), MACs (client to server) */
} ssh_offer_t;

static const char *const ssh_list_names[4] = {"kex", "hostkey", "ciphers", "macs"};

/* Reads one line (LF-terminated) into out; 1, 0 timeout, -1 closed/too long. */
static int read_line(int fd, uint8_t *buf, size_t *blen, size_t bcap, char *out, size_t ocap, size_t *olen,
                     double deadline)
{
    for (;;) {
        uint8_t *nl = memchr(buf, '\n', *blen);
        if (nl != NULL) {
            size_t ll = (size_t)(nl - buf) + 1;
            if (ll > ocap)
                return -1;
            memcpy(out, buf, ll);
            *olen = ll;
            memmove(buf, buf + ll, *blen - ll);
            *blen -= ll;
            return 1;
        }
        if (*blen >= ocap || *blen >= bcap)
            return -1;
        int r = recv_some(fd, buf + *blen, bcap - *blen, deadline);
        if (r == RD_TIMEOUT)
            return 0;
        if (r <= 0)
            return -1;
        *blen += (size_t)r;
    }
}

/* Splits an SSH name-list into an array (names escaped, SSH_NAMES_MAX kept). */
static json_t *name_list(const uint8_t *s, size_t n)
{
    json_t *arr = json_array();
    size_t i = 0;
    while (arr != NULL && i < n && json_array_size(arr) < SSH_NAMES_MAX) {
        size_t j = i;
        while (j < n && s[j] != ',')
            j++;
        if (j > i && json_array_append_new(arr, keel_assess_escape(s + i, j - i)) != 0) {
            json_decref(arr);
            return NULL;
        }
        i = j + 1;
    }
    return arr;
}

/* The server's identification line and KEXINIT: what it offers. 1 on
 * success, 0 when the port is not SSH or fell silent (why says), -1 no TCP. */
static int ssh_read_offer(probe_t *p, ssh_offer_t *o, char *why, size_t wcap)
{
    int fd = keel_assess_tcp_connect(&p->sa, p->salen, step_deadline(p), why, wcap);
    if (fd < 0)
        return -1;
    uint8_t *buf = malloc(SSH_PACKET_MAX + 8);
    int rc = 0;
    size_t blen = 0;
    if (buf == NULL) {
        snprintf(why, wcap, "out of memory");
        close(fd);
        return 0;
    }
    double deadline = step_deadline(p);
    for (unsigned i = 0; i <= SSH_PRE_LINES_MAX; i++) {
        int r = read_line(fd, buf, &blen, SSH_LINE_MAX * 2, o->banner, SSH_LINE_MAX, &o->blen, deadline);
        if (r <= 0) {
            snprintf(why, wcap, "%s", r == 0 ? "no identification line in time" : "no SSH identification line");
            o->blen = 0;
            goto out;
        }
        if (o->blen >= 4 && memcmp(o->banner, "SSH-", 4) == 0)
            break;
        o->blen = 0;
    }
    if (o->blen == 0) {
        snprintf(why, wcap, "no SSH identification line in %u lines", SSH_PRE_LINES_MAX);
        goto out;
    }
    while (o->blen > 0 && (o->banner[o->blen - 1] == '\n' || o->banner[o->blen - 1] == '\r'))
        o->blen--;
    o->banner[o->blen] = '\0';
    static const char ours[] = "SSH-2.0-keel_assess\r\n";
    if (send_all(fd, ours, sizeof ours - 1, deadline) != 0) {
        snprintf(why, wcap, "could not send our identification");
        goto out;
    }
    /* binary packet: uint32 length, padding length, payload, padding */
    while (blen < 5 || blen < 4 + ((size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3])) {
        size_t plen = blen >= 4 ? ((size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3]) : 0;
        if (blen >= 4 && (plen < 2 || plen > SSH_PACKET_MAX)) {
            snprintf(why, wcap, "KEXINIT packet length %zu out of range", plen);
            goto out;
        }
        int r = recv_some(fd, buf + blen, SSH_PACKET_MAX + 4 - blen, deadline);
        if (r <= 0) {
            snprintf(why, wcap, "%s", r == RD_TIMEOUT ? "no KEXINIT in time" : "closed before KEXINIT");
            goto out;
        }
        blen += (size_t)r;
    }
    size_t plen = (size_t)buf[0] << 24 | (size_t)buf[1] << 16 | (size_t)buf[2] << 8 | buf[3];
    size_t pad = buf[4];
    if (plen < 2 || plen > SSH_PACKET_MAX || pad >= plen - 1 || buf[5] != 20 /* SSH_MSG_KEXINIT */) {
        snprintf(why, wcap, "the first packet is not a KEXINIT");
        goto out;
    }
    const uint8_t *q = buf + 6 + 16; /* after the message id and the cookie */
    const uint8_t *end = buf + 4 + plen - pad;
    /* name-lists: kex, host key, enc c2s, enc s2c, mac c2s */
    static const int wanted[] = {0, 1, 2, -1, 3};
    for (size_t k = 0; k < sizeof wanted / sizeof wanted[0]; k++) {
        if (q > end || end - q < 4) {
            snprintf(why, wcap, "KEXINIT cut short");
            goto out;
        }
        size_t l = (size_t)q[0] << 24 | (size_t)q[1] << 16 | (size_t)q[2] << 8 | q[3];
        q += 4;
        if (l > (size_t)(end - q)) {
            snprintf(why, wcap, "KEXINIT name-list runs past the packet");
            goto out;
        }
        if (wanted[k] >= 0 && (o->lists[wanted[k]] = name_list(q, l)) == NULL) {
            snprintf(why, wcap, "out of memory");
            goto out;
        }
        q += l;
    }
    rc = 1;
out:
    free(buf);
    close(fd);
    return rc;
}

static int weak_algo(int list, const char *name)
{
    static const char *const kex[] = {"diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1",
                                      "diffie-hellman-group-exchange-sha1", "rsa1024-sha1", NULL};
    static const char *const hostkey[] = {"ssh-dss", "ssh-rsa", "ssh-rsa-cert-v01@openssh.com",
                                          "ssh-dss-cert-v01@openssh.com", NULL};
    static const char *const ciphers[] = {"none", "3des-cbc", "blowfish-cbc", "cast128-cbc", "arcfour",
                                          "arcfour128", "arcfour256", "aes128-cbc", "aes192-cbc", "aes256-cbc",
                                          "rijndael-cbc@lysator.liu.se", "des-cbc", NULL};
    static const char *const macs[] = {"none", "hmac-md5", "hmac-md5-96", "hmac-sha1-96", "hmac-md5-etm@openssh.com",
                                       "hmac-md5-96-etm@openssh.com", "hmac-sha1-96-etm@openssh.com", NULL};
    static const char *const *const lists[] = {kex, hostkey, ciphers, macs};
    for (const char *const *w = lists[list]; *w != NULL; w++)
        if (strcmp(*w, name) == 0)
            return 1;
    return 0;
}

static keel_status_t ssh_offer_findings(probe_t *p, ssh_offer_t *o, json_t *ssh)
{
    static const char *const what[4] = {"key exchange", "host key", "cipher", "MAC"};
    keel_status_t st = KEEL_OK;
    for (int l = 0; l < 4 && st == KEEL_OK; l++) {
        if (json_object_set(ssh, ssh_list_names[l], o->lists[l]) != 0)
            return nomem();
        char names[300] = "";
        size_t off = 0, i;
        unsigned n = 0;
        json_t *v;
        json_array_foreach(o->lists[l], i, v) {
            const char *s = json_string_value(v);
            if (s == NULL || !weak_algo(l, s))
                continue;
            n++;
            if (off + strlen(s) + 3 < sizeof names)
                off += (size_t)snprintf(names + off, sizeof names - off, "%s%s", off ? ", " : "", s);
        }
        if (n > 0)
            st = finding(p, "5.5-1", "warn", "port %u (SSH): weak %s algorithm(s) offered: %s", p->o->port, what[l],
                         names);
    }
    return st;
}

static ssh_session ssh_open(probe_t *p, const char *user, char *why, size_t wcap)
{
    ssh_session s = ssh_new();
    if (s == NULL) {
        snprintf(why, wcap, "out of memory");
        return NULL;
    }
    double left = p->budget_end - keel_now();
    double to = p->timeout_ms / 1000.0 < left ? p->timeout_ms / 1000.0 : left;
    long usec = to > 0 ? (long)(to * 1e6) : 1;
    long sec = 0;
    int port = (int)p->o->port, verbosity = SSH_LOG_NOLOG, no = 0;
    if (ssh_options_set(s, SSH_OPTIONS_HOST, p->addr) != 0 || ssh_options_set(s, SSH_OPTIONS_PORT, &port) != 0 ||
        ssh_options_set(s, SSH_OPTIONS_USER, user) != 0 ||
        ssh_options_set(s, SSH_OPTIONS_LOG_VERBOSITY, &verbosity) != 0 ||
        ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no) != 0 ||
        ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null") != 0 ||
        ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null") != 0 ||
        ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &sec) != 0 || ssh_options_set(s, SSH_OPTIONS_TIMEOUT_USEC, &usec) != 0) {
        snprintf(why, wcap, "libssh options: %s", ssh_get_error(s));
        ssh_free(s);
        return NULL;
    }
    /* old devices: also offer what they may still need (ignored where libssh lacks it) */
    (void)ssh_options_set(s, SSH_OPTIONS_HOSTKEYS,
                          "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,"
                          "rsa-sha2-256,ssh-rsa");
    (void)ssh_options_set(s, SSH_OPTIONS_KEY_EXCHANGE,
                          "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,"
                          "ecdh-sha2-nistp521,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,"
                          "diffie-hellman-group14-sha256,diffie-hellman-group14-sha1,diffie-hellman-group1-sha1");
    if (ssh_connect(s) != SSH_OK) {
        /* libssh quotes the server (its banner, its DISCONNECT text): any bytes */
        const char *e = ssh_get_error(s);
        char shown[200];
        printable(shown, sizeof shown, (const uint8_t *)e, strlen(e));
        snprintf(why, wcap, "libssh connect: %s", shown);
        ssh_free(s);
        return NULL;
    }
    return s;
}

static void ssh_close(ssh_session s)
{
    if (s != NULL) {
        ssh_disconnect(s);
        ssh_free(s);
    }
}

static const char *auth_text(int rc)
{
    return rc == SSH_AUTH_SUCCESS ? "accepted"
           : rc == SSH_AUTH_PARTIAL ? "partial (another method needed)"
           : rc == SSH_AUTH_DENIED  ? "refused"
                                    : "error";
}

/* keyboard-interactive with the password as the answer to every hidden prompt. */
static int ssh_kbdint(ssh_session s, const char *password)
{
    int rc = ssh_userauth_kbdint(s, NULL, NULL);
    for (unsigned round = 0; rc == SSH_AUTH_INFO && round < SSH_KBDINT_ROUNDS; round++) {
        int n = ssh_userauth_kbdint_getnprompts(s);
        for (int i = 0; i < n && i < 8; i++) {
            char echo = 0;
            (void)ssh_userauth_kbdint_getprompt(s, (unsigned)i, &echo);
            if (ssh_userauth_kbdint_setanswer(s, (unsigned)i, echo ? "" : password) < 0)
                return SSH_AUTH_ERROR;
        }
        rc = ssh_userauth_kbdint(s, NULL, NULL);
    }
    return rc == SSH_AUTH_INFO ? SSH_AUTH_DENIED : rc;
}

static keel_status_t probe_ssh(probe_t *p)
{
    double t0 = keel_now();
    ssh_offer_t o;
    memset(&o, 0, sizeof o);
    char why[256] = "", reason[320];
    int r = ssh_read_offer(p, &o, why, sizeof why);
    json_t *ssh = json_object();
    keel_status_t st = set(p, "ssh", ssh);
    if (st == KEEL_OK) {
        char obs[KEEL_PROBE_EVIDENCE_TEXT];
        int n = snprintf(obs, sizeof obs, "%s", r == 1 ? "" : why);
        if (r == 1) {
            memcpy(obs, o.banner, o.blen);
            n = (int)o.blen;
            for (int l = 0; l < 4 && (size_t)n < sizeof obs - 1; l++) {
                char *s = json_dumps(o.lists[l], JSON_COMPACT);
                n += snprintf(obs + n, sizeof obs - (size_t)n, "; %s: %s", ssh_list_names[l], s ? s : "?");
                free(s);
            }
            if ((size_t)n >= sizeof obs)
                n = (int)sizeof obs - 1;
        }
        st = evidence(p, "connect; send SSH-2.0-keel_assess; read the server's KEXINIT", obs, (size_t)n, t0);
    }
    if (st == KEEL_OK && r != 1) {
        snprintf(reason, sizeof reason, "port %u: %s", p->o->port, why);
        st = keel_assess_unit_mark(p->doc, UNIT, r < 0 ? KEEL_UNIT_INCONCLUSIVE : KEEL_UNIT_NOT_APPLICABLE, reason);
    }
    if (st != KEEL_OK || r != 1)
        goto out;
    const char *soft = strchr(o.banner + 4, '-');
    soft = soft ? soft + 1 : "";
    if (set(p, "banner", keel_assess_escape((const uint8_t *)o.banner, o.blen)) != KEEL_OK ||
        json_object_set_new(ssh, "banner", keel_assess_escape((const uint8_t *)o.banner, o.blen)) != 0 ||
        json_object_set_new(ssh, "software", keel_assess_escape((const uint8_t *)soft, strlen(soft))) != 0) {
        st = nomem();
        goto out;
    }
    st = keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_RAN, NULL);
    if (st == KEEL_OK && has_version((const uint8_t *)soft, strlen(soft))) {
        char shown[128];
        printable(shown, sizeof shown, (const uint8_t *)soft, strlen(soft));
        st = finding(p, "5.6-2", "warn", "port %u (SSH): the identification discloses the software version: %s",
                     p->o->port, shown);
    }
    if (st == KEEL_OK)
        st = ssh_offer_findings(p, &o, ssh);
    if (st != KEEL_OK)
        goto out;

    /* "none" and the methods on offer, as root */
    double t1 = keel_now();
    ssh_session s = ssh_open(p, "root", why, sizeof why);
    if (s == NULL) {
        snprintf(reason, sizeof reason, "port %u: SSH authentication could not be tried: %s", p->o->port, why);
        st = evidence(p, "libssh connect as root", why, strlen(why), t1);
        if (st == KEEL_OK)
            st = keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_INCONCLUSIVE, reason);
        goto out;
    }
    int none = ssh_userauth_none(s, NULL);
    int methods = none == SSH_AUTH_SUCCESS ? 0 : ssh_userauth_list(s, NULL);
    json_t *mlist = json_array();
    static const struct {
        int bit;
        const char *name;
    } mnames[] = {{SSH_AUTH_METHOD_PASSWORD, "password"},
                  {SSH_AUTH_METHOD_PUBLICKEY, "publickey"},
                  {SSH_AUTH_METHOD_INTERACTIVE, "keyboard-interactive"},
                  {SSH_AUTH_METHOD_HOSTBASED, "hostbased"},
                  {SSH_AUTH_METHOD_GSSAPI_MIC, "gssapi-with-mic"}};
    char obs[256];
    int on = snprintf(obs, sizeof obs, "none: %s; methods:", auth_text(none));
    for (size_t i = 0; i < sizeof mnames / sizeof mnames[0]; i++)
        if (methods & mnames[i].bit) {
            on += snprintf(obs + on, sizeof obs - (size_t)on, " %s", mnames[i].name);
            if (mlist == NULL || json_array_append_new(mlist, json_string(mnames[i].name)) != 0)
                st = nomem();
        }
    if (mlist == NULL || json_object_set_new(ssh, "methods", mlist) != 0 ||
        json_object_set_new(ssh, "none_accepted", json_boolean(none == SSH_AUTH_SUCCESS)) != 0)
        st = nomem();
    if (st == KEEL_OK)
        st = evidence(p, "userauth \"none\" as root", obs, strlen(obs), t1);
    char *issue = ssh_get_issue_banner(s);
    if (st == KEEL_OK && issue != NULL)
        st = evidence(p, "pre-authentication banner", issue, strlen(issue) > 256 ? 256 : strlen(issue), -1);
    ssh_string_free_char(issue);
    ssh_close(s);
    if (st == KEEL_OK && none == SSH_AUTH_SUCCESS) {
        static const keel_cred_pair_t nopass = {"root", ""};
        st = pair_accepted(p, "SSH", &nopass, "authentication method \"none\": no password at all");
    }
    int pw = methods & SSH_AUTH_METHOD_PASSWORD, kbd = methods & SSH_AUTH_METHOD_INTERACTIVE;
    if (st != KEEL_OK || p->accepted)
        goto out;
    if (!pw && !kbd) {
        st = evidence(p, "default pairs", "not tried: neither password nor keyboard-interactive is offered", 62, -1);
        goto out;
    }
    const keel_cred_pair_t *plan[SVC_PAIRS_MAX + 1];
    size_t n = pairs_plan(p, plan, sizeof plan / sizeof plan[0]), i = 0;
    for (; i < n && st == KEEL_OK && !p->accepted && budget_left(p); i++) {
        double t2 = keel_now();
        char sent[192], res[300];
        snprintf(sent, sizeof sent, "%s \"%s\" / \"%s\"", !pw ? "keyboard-interactive" : "password", plan[i]->user,
                 plan[i]->password);
        s = ssh_open(p, plan[i]->user, why, sizeof why);
        int rc = SSH_AUTH_ERROR;
        if (s != NULL) {
            p->tried++;
            (void)ssh_userauth_none(s, NULL);
            rc = pw ? ssh_userauth_password(s, NULL, plan[i]->password) : ssh_kbdint(s, plan[i]->password);
            snprintf(res, sizeof res, "%s%s%s", auth_text(rc), rc == SSH_AUTH_ERROR ? ": " : "",
                     rc == SSH_AUTH_ERROR ? ssh_get_error(s) : "");
            ssh_close(s);
        } else {
            snprintf(res, sizeof res, "%s", why);
        }
        st = evidence(p, sent, res, strlen(res), t2);
        if (st == KEEL_OK && rc == SSH_AUTH_SUCCESS)
            st = pair_accepted(p, "SSH", plan[i], plan[i]->password[0] ? "password authentication"
                                                                      : "an empty password");
        if (s == NULL)
            break;
    }
    if (!p->accepted)
        p->untried += (unsigned)(n - i);
out:
    for (int l = 0; l < 4; l++)
        json_decref(o.lists[l]);
    return st;
}

/* ---- entry point ------------------------------------------------------------------------------ */

static const char *kind_name(keel_svc_kind_t k)
{
    return k == KEEL_SVC_TELNET ? "telnet" : k == KEEL_SVC_SSH ? "ssh" : k == KEEL_SVC_FTP ? "ftp" : "unknown";
}

/* What the port says first decides: telnet IAC, "SSH-", FTP "220". */
static keel_status_t detect(probe_t *p, keel_svc_kind_t *kind)
{
    double t0 = keel_now();
    char why[128];
    uint8_t b[KEEL_PROBE_BANNER_MAX];
    int r = RD_ERROR;
    *kind = KEEL_SVC_AUTO;
    int fd = keel_assess_tcp_connect(&p->sa, p->salen, step_deadline(p), why, sizeof why);
    if (fd >= 0) {
        r = recv_some(fd, b, sizeof b, step_deadline(p));
        close(fd);
    }
    if (r > 0) {
        if (b[0] == TN_IAC_B)
            *kind = KEEL_SVC_TELNET;
        else if (r >= 4 && memcmp(b, "SSH-", 4) == 0)
            *kind = KEEL_SVC_SSH;
        else if (r >= 3 && memcmp(b, "220", 3) == 0)
            *kind = KEEL_SVC_FTP;
    }
    keel_status_t st = keel_assess_evidence(p->doc, UNIT, "connect; wait for the service to speak first", 44,
                                            r > 0 ? (const char *)b : fd < 0 ? why : "nothing said",
                                            r > 0 ? (size_t)r : strlen(fd < 0 ? why : "nothing said"), us_since(t0));
    if (st != KEEL_OK || *kind != KEEL_SVC_AUTO)
        return st;
    char reason[256];
    if (fd < 0) {
        snprintf(reason, sizeof reason, "port %u could not be reached: %s", p->o->port, why);
        return keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_INCONCLUSIVE, reason);
    }
    snprintf(reason, sizeof reason, "port %u is not telnet, SSH or FTP (%s)", p->o->port,
             r > 0 ? "its first bytes are none of IAC, SSH-, 220" : "it does not speak first");
    return keel_assess_unit_mark(p->doc, UNIT, KEEL_UNIT_NOT_APPLICABLE, reason);
}

keel_status_t keel_assess_probe_service(const keel_svc_probe_opts_t *o, json_t **out)
{
    if (o == NULL || out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "no service probe options");
    *out = NULL;
    if (o->port < 1 || o->port > 65535)
        return keel_errorf(KEEL_ERR_ARG, "port must be 1..65535");
    if (o->kind > KEEL_SVC_FTP)
        return keel_errorf(KEEL_ERR_ARG, "unknown service kind");
    if (o->timeout_ms > SVC_TIMEOUT_MAX_MS || o->budget_ms > SVC_BUDGET_MAX_MS || o->max_pairs > SVC_PAIRS_MAX)
        return keel_errorf(KEEL_ERR_ARG, "timeout capped at %u ms, budget at %u ms, pairs at %u", SVC_TIMEOUT_MAX_MS,
                           SVC_BUDGET_MAX_MS, SVC_PAIRS_MAX);
    probe_t p;
    memset(&p, 0, sizeof p);
    p.o = o;
    keel_status_t st = keel_assess_resolve(o->host, o->port, &p.sa, &p.salen, p.addr, sizeof p.addr);
    if (st != KEEL_OK)
        return st;
    p.timeout_ms = o->timeout_ms ? o->timeout_ms : SVC_TIMEOUT_DEFAULT_MS;
    p.max_pairs = o->max_pairs ? o->max_pairs : SVC_PAIRS_DEFAULT;
    p.t0 = keel_now();
    p.budget_end = p.t0 + (o->budget_ms ? o->budget_ms : SVC_BUDGET_DEFAULT_MS) / 1000.0;
    p.doc = json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:n, s:[], s:[], s:[], s:{}}", "format",
                      "keel-assess-service-1", "probe", "service", "target", o->host, "address", p.addr, "port",
                      (int)o->port, "kind", "unknown", "banner", "accepted", "findings", "evidence", "units");
    if (p.doc == NULL)
        return nomem();
    keel_svc_kind_t kind = o->kind;
    if (kind == KEEL_SVC_AUTO)
        st = detect(&p, &kind);
    if (st == KEEL_OK && kind != KEEL_SVC_AUTO) {
        st = set(&p, "kind", json_string(kind_name(kind)));
        if (st == KEEL_OK) {
            sigset_t old; /* libssh writes with write(): a server that hangs up must not end the program */
            keel_assess_sigpipe_block(&old);
            st = kind == KEEL_SVC_TELNET ? probe_telnet(&p) : kind == KEEL_SVC_SSH ? probe_ssh(&p) : probe_ftp(&p);
            keel_assess_sigpipe_restore(&old);
        }
    }
    if (st == KEEL_OK && p.untried > 0)
        st = finding(&p, "5.1-1", "info", "port %u: the time budget ran out: %u default pair(s) not tried", o->port,
                     p.untried);
    if (st == KEEL_OK &&
        (set(&p, "pairs_tried", json_integer(p.tried)) != KEEL_OK ||
         set(&p, "pairs_untried", json_integer(p.untried)) != KEEL_OK ||
         set(&p, "duration_us", json_integer(us_since(p.t0))) != KEEL_OK))
        st = nomem();
    if (st != KEEL_OK) {
        json_decref(p.doc);
        return st;
    }
    *out = p.doc;
    return KEEL_OK;
}

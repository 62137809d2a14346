/* keeld's fleet updater (updater.h, docs/internals/updater.md). */
#define _GNU_SOURCE
#include "updater.h"

#include "keel/crypto.h"
#include "keel/tls.h"
#include "worker.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define URL_MAX 384
#define CONNECT_TO_MAX 600
#define WHY_MAX 256
#define CONNECT_TIMEOUT_S 30L
#define CHECK_TIMEOUT_S 60L
#define LOW_SPEED_TIME_S 60L  /* a transfer slower than 1 byte/s for this long is dropped */
#define PIPE_BYTES (1 << 20)  /* asked for; the kernel's default (64 KiB) works too */
#define PROGRESS_TICK_S 1

typedef enum { PHASE_IDLE, PHASE_CHECKING, PHASE_INSTALLING } phase_t;
typedef enum { XFER_CHECK, XFER_BUNDLE } xfer_kind_t;

/* One HTTPS transfer on the updater's thread. */
typedef struct {
    keel_job_t job;
    keeld_updater_t *u;
    xfer_kind_t kind;
    char url[URL_MAX];
    uint64_t cap;         /* bytes the answer may have */
    char body[KEELD_OFFER_MAX + 1]; /* XFER_CHECK: the answer */
    size_t body_len;
    int wfd;              /* XFER_BUNDLE: the pipe's write end, closed when the transfer ends */
    bool headers_checked;
    bool reader_gone;     /* the installer stopped reading (it refused the bundle) */
    _Atomic uint64_t received;
    CURLcode rc;
    long http;
    char err[CURL_ERROR_SIZE];
    char why[WHY_MAX];    /* our own reason to stop the transfer */
} xfer_t;

/* The installer's side of the pipe: what it read is checked against the
 * offer before the installer sees the end of the input. */
typedef struct {
    int fd;
    uint64_t size, got;
    char sha256[65];
    EVP_MD_CTX *md;
    char why[WHY_MAX];
} feed_t;

typedef struct {
    keeld_offer_t offer;
    xfer_t *dl; /* until its done ran */
    feed_t feed;
    bool dl_done, inst_done;
    CURLcode dl_rc;
    long dl_http;
    bool dl_reader_gone;
    uint64_t dl_bytes;
    char dl_why[WHY_MAX];
    keel_status_t inst_st;
    keel_install_result_t res;
    char inst_why[KEEL_ERROR_MAX];
    keeld_progress_t progress;
} campaign_t;

struct keeld_updater {
    struct event_base *base;
    const keel_config_t *cfg;
    keel_api_t *api;
    keeld_updater_emit_fn emit;
    void *emit_arg;
    EVP_PKEY *key;
    char ca[KEEL_PATH_MAX], cert[KEEL_PATH_MAX], chain[KEEL_PATH_MAX];
    char name[KEELD_UPDATE_HOST_MAX + 1]; /* the certificate's name: server_name, else the host */
    char base_url[URL_MAX];               /* https://name:port */
    char connect_to[CONNECT_TO_MAX];      /* "" or name:port:host:port */
    uint64_t size_cap;
    double interval, jitter;
    keel_workers_t *net;
    struct event *check_timer, *progress_timer;
    phase_t phase;
    bool check_again, stopping;
    atomic_bool abort;
    unsigned failures; /* failed checks or downloads in a row */
    keeld_offer_t queued; /* a keel/update that arrived during a check */
    bool have_queued;
    campaign_t cur;
    char postponed[KEELD_CAMPAIGN_LEN + 1]; /* reported once per campaign */
    char refused[KEELD_CAMPAIGN_LEN + 1];   /* the installer refused its bundle: not fetched again by checks */
};

/* ---- configuration ------------------------------------------------------------ */

static keel_status_t name_check(const char *name)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "SSL_CTX_new");
    keel_status_t st = keel_tls_expect_server(ctx, name);
    SSL_CTX_free(ctx);
    return st;
}

keel_status_t keeld_updater_config_check(const keel_config_t *cfg)
{
    const char *server = keel_config_str(cfg, "update", "server");
    const char *sn = keel_config_str(cfg, "update", "server_name");
    char host[KEELD_UPDATE_HOST_MAX + 1];
    unsigned port;
    bool v6;
    keel_status_t st = server != NULL ? keeld_update_server_parse(server, host, &port, &v6) : KEEL_OK;
    if (st == KEEL_OK && sn != NULL && (st = name_check(sn)) != KEEL_OK)
        st = keel_errorf(KEEL_ERR_CONFIG, "update.server_name: %s", keel_error_message());
    return st;
}

/* ---- events ---------------------------------------------------------------------- */

static void emit_update(keeld_updater_t *u, const keeld_offer_t *o, const char *state, uint64_t bytes,
                        const char *error)
{
    json_t *e = json_pack("{s:s,s:s,s:s,s:s,s:I}", "type", "update", "campaign", o->campaign, "state", state,
                          "version", o->version, "bytes", (json_int_t)bytes);
    if (e != NULL && error != NULL && json_object_set_new(e, "error", json_string(error)) != 0) {
        json_decref(e);
        e = NULL;
    }
    if (e == NULL) {
        keel_log(KEEL_LOG_ERROR, "update: out of memory for the %s event", state);
        return;
    }
    u->emit(u->emit_arg, e);
    json_decref(e);
}

/* ---- the HTTPS transfer (updater thread) ---------------------------------------- */

static CURLcode on_ssl_ctx(CURL *h, void *sslctx, void *arg)
{
    (void)h;
    keeld_updater_t *u = arg;
    SSL_CTX *ctx = sslctx;
    /* Our trust replaces curl's store (only the service root); the name and
     * purpose are checked by OpenSSL as for the link; the client identity is
     * the device's, its key a keystore handle. */
    keel_status_t st = keel_tls_policy(ctx);
    if (st == KEEL_OK)
        st = keel_tls_trust_root(ctx, u->ca);
    if (st == KEEL_OK)
        st = keel_tls_expect_server(ctx, u->name);
    if (st == KEEL_OK)
        st = keel_tls_use_identity_key(ctx, u->key, u->cert, u->chain);
    if (st != KEEL_OK) {
        keel_log(KEEL_LOG_ERROR, "update: TLS context: %s", keel_error_message());
        keel_error_clear();
        return CURLE_SSL_CERTPROBLEM;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return CURLE_OK;
}

static int on_xferinfo(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    xfer_t *x = arg;
    return atomic_load(&x->u->abort) ? 1 : 0;
}

static bool answer_ok(xfer_t *x, CURL *h)
{
    if (x->headers_checked)
        return true;
    x->headers_checked = true;
    long code = 0;
    if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK || code != 200) {
        snprintf(x->why, sizeof x->why, "the server answered HTTP %ld", code);
        return false;
    }
    return true;
}

static size_t on_write(char *data, size_t size, size_t n, void *arg)
{
    xfer_t *x = arg;
    size_t len = size * n;
    if (atomic_load(&x->u->abort))
        return 0;
    uint64_t got = atomic_load(&x->received);
    if (len > x->cap - got) {
        snprintf(x->why, sizeof x->why, "the server sent more than the %llu bytes announced",
                 (unsigned long long)x->cap);
        return 0;
    }
    if (x->kind == XFER_CHECK) {
        memcpy(x->body + x->body_len, data, len);
        x->body_len += len;
    } else {
        size_t done = 0;
        while (done < len) {
            ssize_t w = write(x->wfd, data + done, len - done);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                x->reader_gone = true;
                snprintf(x->why, sizeof x->why, "the installer stopped reading");
                return 0;
            }
            done += (size_t)w;
        }
    }
    atomic_store(&x->received, got + len);
    return len;
}

typedef struct {
    xfer_t *x;
    CURL *h;
} write_ctx_t;

static size_t on_write_checked(char *data, size_t size, size_t n, void *arg)
{
    write_ctx_t *w = arg;
    if (!answer_ok(w->x, w->h))
        return 0;
    return on_write(data, size, n, w->x);
}

#define SET(opt, val)                                                                                              \
    do {                                                                                                           \
        if (rc == CURLE_OK)                                                                                        \
            rc = curl_easy_setopt(h, opt, val);                                                                    \
    } while (0)

static void xfer_run(keel_job_t *job)
{
    xfer_t *x = (xfer_t *)job;
    keeld_updater_t *u = x->u;
    struct curl_slist *connect_to = NULL, *headers = NULL;
    CURL *h = curl_easy_init();
    CURLcode rc = h != NULL ? CURLE_OK : CURLE_OUT_OF_MEMORY;
    write_ctx_t wc = {.x = x, .h = h};
    if (rc == CURLE_OK && u->connect_to[0] != '\0' && (connect_to = curl_slist_append(NULL, u->connect_to)) == NULL)
        rc = CURLE_OUT_OF_MEMORY;
    if (rc == CURLE_OK && (headers = curl_slist_append(NULL, x->kind == XFER_CHECK
                                                                   ? "Accept: application/json"
                                                                   : "Accept: application/octet-stream")) == NULL)
        rc = CURLE_OUT_OF_MEMORY;
    SET(CURLOPT_ERRORBUFFER, x->err);
    SET(CURLOPT_URL, x->url);
    SET(CURLOPT_PROTOCOLS_STR, "https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_PROXY, ""); /* never a proxy from the environment */
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_USERAGENT, "keeld/" KEEL_VERSION);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_FAILONERROR, 1L);
    SET(CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
    SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SET(CURLOPT_LOW_SPEED_TIME, LOW_SPEED_TIME_S);
    if (x->kind == XFER_CHECK)
        SET(CURLOPT_TIMEOUT, CHECK_TIMEOUT_S);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->cap);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    /* The same single root as the context callback installs, so whichever
     * store curl ends up using holds nothing else; no CA directory. */
    SET(CURLOPT_CAINFO, u->ca);
    SET(CURLOPT_CAPATH, NULL);
#if LIBCURL_VERSION_NUM >= 0x075700
    SET(CURLOPT_CA_CACHE_TIMEOUT, 0L);
#endif
    SET(CURLOPT_SSL_SESSIONID_CACHE, 0L);
    SET(CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    SET(CURLOPT_SSL_CTX_DATA, u);
    if (connect_to != NULL)
        SET(CURLOPT_CONNECT_TO, connect_to);
    SET(CURLOPT_WRITEFUNCTION, on_write_checked);
    SET(CURLOPT_WRITEDATA, &wc);
    SET(CURLOPT_NOPROGRESS, 0L);
    SET(CURLOPT_XFERINFOFUNCTION, on_xferinfo);
    SET(CURLOPT_XFERINFODATA, x);
    if (rc == CURLE_OK)
        rc = curl_easy_perform(h);
    if (h != NULL && curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->http) != CURLE_OK)
        x->http = 0;
    /* An answer without a body never called on_write. */
    if (rc == CURLE_OK && x->http != 200 && x->why[0] == '\0' && !(x->kind == XFER_CHECK && x->http == 204))
        snprintf(x->why, sizeof x->why, "the server answered HTTP %ld", x->http);
    x->rc = rc;
    if (x->err[0] == '\0' && rc != CURLE_OK)
        snprintf(x->err, sizeof x->err, "%s", curl_easy_strerror(rc));
    curl_easy_cleanup(h);
    curl_slist_free_all(connect_to);
    curl_slist_free_all(headers);
    if (x->wfd >= 0) {
        close(x->wfd); /* the installer reads the end of the input */
        x->wfd = -1;
    }
}

#undef SET

/* The error of a transfer that failed, "" when it did not. */
static const char *xfer_error(const xfer_t *x)
{
    if (x->why[0] != '\0')
        return x->why;
    if (x->rc != CURLE_OK)
        return x->err;
    return "";
}

/* ---- the installer's side of the pipe (API installer thread) --------------------- */

static ssize_t feed_read(void *ctx, void *buf, size_t n)
{
    feed_t *f = ctx;
    ssize_t r;
    do
        r = read(f->fd, buf, n);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return r;
    if ((uint64_t)r > f->size - f->got) {
        snprintf(f->why, sizeof f->why, "more bytes than the offer's size %llu", (unsigned long long)f->size);
        errno = EFBIG;
        return -1;
    }
    if (r > 0) {
        if (EVP_DigestUpdate(f->md, buf, (size_t)r) != 1) {
            snprintf(f->why, sizeof f->why, "SHA-256 failed");
            errno = EIO;
            return -1;
        }
        f->got += (uint64_t)r;
        return r;
    }
    /* The end of the input: only a complete bundle with the offer's digest
     * may end, or the installer would commit what the fleet did not offer. */
    if (f->got != f->size) {
        snprintf(f->why, sizeof f->why, "the download ended after %llu of %llu bytes", (unsigned long long)f->got,
                 (unsigned long long)f->size);
        errno = EPIPE;
        return -1;
    }
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    char hex[65];
    if (EVP_DigestFinal_ex(f->md, md, &mdlen) != 1 || mdlen != 32) {
        snprintf(f->why, sizeof f->why, "SHA-256 failed");
        errno = EIO;
        return -1;
    }
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    if (strcmp(hex, f->sha256) != 0) {
        snprintf(f->why, sizeof f->why, "the bundle's SHA-256 is not the offer's");
        errno = EBADMSG;
        return -1;
    }
    return 0;
}

/* ---- the schedule ----------------------------------------------------------------- */

/* Uniform in [0, 1) from the CSPRNG (53 bits), as the link's backoff draws it. */
static double random_unit(void)
{
    uint64_t x;
    keel_random_bytes(&x, sizeof x);
    return (double)(x >> 11) * 0x1.0p-53;
}

static void start_check(keeld_updater_t *u);

static void arm_check(keeld_updater_t *u, double delay)
{
    struct timeval tv = {.tv_sec = (time_t)delay, .tv_usec = (suseconds_t)((delay - (double)(time_t)delay) * 1e6)};
    if (event_add(u->check_timer, &tv) != 0)
        keel_log(KEEL_LOG_ERROR, "update: cannot schedule the next check");
    else
        keel_log(KEEL_LOG_DEBUG, "update: next check in %.0f s", delay);
}

static void schedule_next(keeld_updater_t *u)
{
    if (u->stopping)
        return;
    if (u->check_again) {
        u->check_again = false;
        start_check(u);
        return;
    }
    double r = random_unit();
    arm_check(u, u->failures > 0 ? keeld_retry_delay(u->failures, u->interval, r)
                                 : keeld_check_delay(u->interval, u->jitter, r));
}

static void on_check_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    start_check(arg);
}

static xfer_t *xfer_new(keeld_updater_t *u, xfer_kind_t kind, const char *path, uint64_t cap)
{
    xfer_t *x = calloc(1, sizeof *x);
    if (x == NULL)
        return NULL;
    x->u = u;
    x->kind = kind;
    x->cap = cap;
    x->wfd = -1;
    atomic_init(&x->received, 0);
    snprintf(x->url, sizeof x->url, "%s%s", u->base_url, path);
    return x;
}

/* ---- a campaign: download and install ---------------------------------------------- */

static void campaign_finish(keeld_updater_t *u)
{
    campaign_t *c = &u->cur;
    if (!c->dl_done || !c->inst_done)
        return;
    event_del(u->progress_timer);
    if (c->feed.fd >= 0)
        close(c->feed.fd);
    c->feed.fd = -1;
    EVP_MD_CTX_free(c->feed.md);
    c->feed.md = NULL;
    u->phase = PHASE_IDLE;
    const char *why = NULL;
    bool transient = false;
    if (c->inst_st == KEEL_OK) {
        u->failures = 0;
        keel_log(KEEL_LOG_INFO,
                 "update: campaign %s: %s installed into slot %c (%llu bytes); the device needs a reboot to run it",
                 c->offer.campaign, c->res.version, keel_slot_name(c->res.slot), (unsigned long long)c->dl_bytes);
        emit_update(u, &c->offer, "installed", c->dl_bytes, NULL);
    } else {
        if (u->stopping) {
            why = "keeld stopped during the update";
        } else if (!c->dl_reader_gone && c->dl_why[0] != '\0') {
            why = c->dl_why; /* the server or the network: worth another try later */
            transient = true;
        } else if (c->feed.why[0] != '\0') {
            why = c->feed.why;
        } else {
            why = c->inst_why;
            transient = c->inst_st == KEEL_ERR_BUSY || c->inst_st == KEEL_ERR_IO || c->inst_st == KEEL_ERR_NOMEM;
        }
        if (transient) {
            if (u->failures < 64)
                u->failures++;
        } else if (!u->stopping) {
            memcpy(u->refused, c->offer.campaign, sizeof u->refused);
        }
        keel_log(KEEL_LOG_WARN, "update: campaign %s (%s) failed: %s", c->offer.campaign, c->offer.version, why);
        emit_update(u, &c->offer, "failed", c->dl_bytes, why);
    }
    schedule_next(u);
}

static void on_bundle_done(keel_job_t *job)
{
    xfer_t *x = (xfer_t *)job;
    keeld_updater_t *u = x->u;
    campaign_t *c = &u->cur;
    if (job->cancelled) {
        if (x->wfd >= 0)
            close(x->wfd);
        snprintf(c->dl_why, sizeof c->dl_why, "keeld stopped before the download began");
    } else {
        snprintf(c->dl_why, sizeof c->dl_why, "%s", xfer_error(x));
    }
    c->dl_rc = x->rc;
    c->dl_http = x->http;
    c->dl_reader_gone = x->reader_gone;
    c->dl_bytes = atomic_load(&x->received);
    c->dl = NULL;
    c->dl_done = true;
    free(x);
    campaign_finish(u);
}

static void on_install_done(void *arg, keel_status_t st, const keel_install_result_t *res, const char *why)
{
    keeld_updater_t *u = arg;
    campaign_t *c = &u->cur;
    c->inst_st = st;
    if (st == KEEL_OK)
        c->res = *res;
    snprintf(c->inst_why, sizeof c->inst_why, "%s", why);
    /* A refusing installer stops reading: closing its end ends the transfer. */
    if (c->feed.fd >= 0)
        close(c->feed.fd);
    c->feed.fd = -1;
    c->inst_done = true;
    campaign_finish(u);
}

static void on_progress(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    keeld_updater_t *u = arg;
    campaign_t *c = &u->cur;
    if (u->phase != PHASE_INSTALLING || c->dl == NULL)
        return;
    uint64_t bytes = atomic_load(&c->dl->received);
    if (keeld_progress_due(&c->progress, bytes, keel_now()))
        emit_update(u, &c->offer, "downloading", bytes, NULL);
}

static void campaign_start(keeld_updater_t *u, const keeld_offer_t *o)
{
    campaign_t *c = &u->cur;
    memset(c, 0, sizeof *c);
    c->offer = *o;
    c->feed.fd = -1;
    c->feed.size = o->size;
    memcpy(c->feed.sha256, o->sha256, sizeof c->feed.sha256);
    int p[2] = {-1, -1};
    char why[WHY_MAX] = "";
    bool started = false; /* not why[0]: an empty error message must not pass for a start */
    xfer_t *x = NULL;
    char path[64];
    snprintf(path, sizeof path, "/v1/bundles/%s", o->campaign);
    if (pipe2(p, O_CLOEXEC) != 0) {
        snprintf(why, sizeof why, "pipe: %s", strerror(errno));
    } else if ((c->feed.md = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(c->feed.md, EVP_sha256(), NULL) != 1 ||
               (x = xfer_new(u, XFER_BUNDLE, path, o->size)) == NULL) {
        snprintf(why, sizeof why, "out of memory");
    } else {
        if (fcntl(p[1], F_SETPIPE_SZ, PIPE_BYTES) < 0)
            keel_log(KEEL_LOG_DEBUG, "update: pipe size: %s", strerror(errno));
        c->feed.fd = p[0];
        char source[80];
        snprintf(source, sizeof source, "fleet campaign %s", o->campaign);
        keel_api_install_t in = {
            .read = feed_read, .ctx = &c->feed, .source = source, .done = on_install_done, .arg = u,
        };
        if (keel_api_install(u->api, &in) != KEEL_OK) {
            snprintf(why, sizeof why, "%s", keel_error_message());
            keel_error_clear();
            c->feed.fd = -1;
        } else {
            started = true;
        }
    }
    if (!started) {
        for (int i = 0; i < 2; i++)
            if (p[i] >= 0)
                close(p[i]);
        EVP_MD_CTX_free(c->feed.md);
        c->feed.md = NULL;
        free(x);
        if (u->failures < 64)
            u->failures++;
        keel_log(KEEL_LOG_WARN, "update: campaign %s (%s) not started: %s", o->campaign, o->version, why);
        emit_update(u, o, "failed", 0, why);
        return;
    }
    /* From here the install owns the read end (closed in on_install_done)
     * and the transfer the write end. */
    x->wfd = p[1];
    c->dl = x;
    u->phase = PHASE_INSTALLING;
    x->job.run = xfer_run;
    x->job.done = on_bundle_done;
    if (keel_workers_submit(u->net, &x->job) != KEEL_OK) {
        keel_error_clear();
        snprintf(c->dl_why, sizeof c->dl_why, "the transfer thread is busy");
        close(x->wfd); /* the installer sees an empty input and refuses */
        free(x);
        c->dl = NULL;
        c->dl_done = true;
    }
    keel_log(KEEL_LOG_INFO, "update: campaign %s: downloading %s (%llu bytes%s)", o->campaign, o->version,
             (unsigned long long)o->size, o->security ? ", security update" : "");
    keeld_progress_start(&c->progress, o->size, keel_now());
    emit_update(u, o, "downloading", 0, NULL);
    struct timeval tick = {PROGRESS_TICK_S, 0};
    if (event_add(u->progress_timer, &tick) != 0)
        keel_log(KEEL_LOG_WARN, "update: cannot watch the download's progress");
}

static void today(char out[11])
{
    time_t t = time(NULL);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, 11, "%Y-%m-%d", &tm) != 10)
        snprintf(out, 11, "0000-00-00");
}

/* The slot running now: the one booted, else the last confirmed one. */
static int running_slot(const keel_bootstate_t *bs)
{
    if (bs->booted == 0 || bs->booted == 1)
        return bs->booted;
    return bs->active == 0 || bs->active == 1 ? bs->active : KEEL_SLOT_NONE;
}

static void handle_offer(keeld_updater_t *u, const keeld_offer_t *o, bool from_command)
{
    if (u->phase == PHASE_INSTALLING) {
        if (strcmp(u->cur.offer.campaign, o->campaign) != 0)
            keel_log(KEEL_LOG_INFO, "update: campaign %s waits: campaign %s is being installed", o->campaign,
                     u->cur.offer.campaign);
        return;
    }
    if (!from_command && strcmp(u->refused, o->campaign) == 0) {
        keel_log(KEEL_LOG_DEBUG, "update: campaign %s was refused before; only keel/update retries it", o->campaign);
        return;
    }
    keel_bootstate_t bs;
    bool automatic = true;
    char until[11] = "", now[11];
    if (keel_api_boot_state(u->api, &bs) != KEEL_OK || keel_api_update_policy(u->api, &automatic, until) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "update: campaign %s: the device state cannot be read: %s", o->campaign,
                 keel_error_message());
        keel_error_clear();
        return;
    }
    int run = running_slot(&bs);
    int pend = bs.pending == 0 || bs.pending == 1 ? bs.pending : KEEL_SLOT_NONE;
    today(now);
    switch (keeld_offer_decide(o, run != KEEL_SLOT_NONE ? bs.version[run] : NULL,
                               pend != KEEL_SLOT_NONE ? bs.version[pend] : NULL, automatic, until, now)) {
    case KEELD_OFFER_IGNORE:
        keel_log(KEEL_LOG_INFO, "update: campaign %s: %s runs already or waits for the reboot", o->campaign,
                 o->version);
        break;
    case KEELD_OFFER_POSTPONE:
        if (strcmp(u->postponed, o->campaign) != 0) {
            memcpy(u->postponed, o->campaign, sizeof u->postponed);
            keel_log(KEEL_LOG_INFO, "update: campaign %s (%s) postponed: automatic updates are %s", o->campaign,
                     o->version, automatic ? "postponed by the owner" : "off");
            emit_update(u, o, "postponed", 0, NULL);
        }
        break;
    case KEELD_OFFER_INSTALL:
        campaign_start(u, o);
        break;
    }
}

/* ---- checks ------------------------------------------------------------------------- */

static void on_check_done(keel_job_t *job)
{
    xfer_t *x = (xfer_t *)job;
    keeld_updater_t *u = x->u;
    u->phase = PHASE_IDLE;
    if (job->cancelled || u->stopping) {
        free(x);
        return;
    }
    const char *err = xfer_error(x);
    if (err[0] != '\0') {
        if (u->failures < 64)
            u->failures++;
        keel_log(u->failures == 1 ? KEEL_LOG_WARN : KEEL_LOG_DEBUG, "update: check failed (%u in a row): %s",
                 u->failures, err);
    } else if (x->http == 204) {
        u->failures = 0;
        keel_log(KEEL_LOG_DEBUG, "update: no update offered");
    } else {
        keeld_offer_t o;
        if (keeld_offer_parse(x->body, x->body_len, u->size_cap, &o) != KEEL_OK) {
            if (u->failures < 64)
                u->failures++;
            keel_log(KEEL_LOG_WARN, "update: the server's offer is refused: %s", keel_error_message());
            keel_error_clear();
        } else {
            u->failures = 0;
            handle_offer(u, &o, false);
        }
    }
    free(x);
    if (u->have_queued) {
        u->have_queued = false;
        keel_log(KEEL_LOG_INFO, "update: keel/update offers campaign %s (%s)", u->queued.campaign, u->queued.version);
        handle_offer(u, &u->queued, true);
    }
    if (u->phase == PHASE_IDLE)
        schedule_next(u);
}

static void start_check(keeld_updater_t *u)
{
    if (u->stopping)
        return;
    if (u->phase != PHASE_IDLE) {
        u->check_again = true;
        return;
    }
    event_del(u->check_timer);
    xfer_t *x = xfer_new(u, XFER_CHECK, "/v1/update", KEELD_OFFER_MAX);
    if (x == NULL) {
        keel_log(KEEL_LOG_ERROR, "update: out of memory for a check");
        arm_check(u, keeld_retry_delay(1, u->interval, random_unit()));
        return;
    }
    x->job.run = xfer_run;
    x->job.done = on_check_done;
    if (keel_workers_submit(u->net, &x->job) != KEEL_OK) {
        keel_error_clear();
        free(x);
        arm_check(u, keeld_retry_delay(1, u->interval, random_unit()));
        return;
    }
    u->phase = PHASE_CHECKING;
    keel_log(KEEL_LOG_DEBUG, "update: asking %s/v1/update", u->base_url);
}

/* ---- the public side ------------------------------------------------------------------ */

void keeld_updater_offer(keeld_updater_t *u, const void *payload, size_t len)
{
    keeld_offer_t o;
    if (keeld_offer_parse(payload, len, u->size_cap, &o) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "update: keel/update refused: %s", keel_error_message());
        keel_error_clear();
        return;
    }
    if (u->stopping)
        return;
    if (u->phase == PHASE_CHECKING) {
        /* Handled when the check's answer has been. */
        keel_log(KEEL_LOG_INFO, "update: keel/update for %s waits for the running check", o.campaign);
        u->queued = o;
        u->have_queued = true;
        return;
    }
    keel_log(KEEL_LOG_INFO, "update: keel/update offers campaign %s (%s)", o.campaign, o.version);
    handle_offer(u, &o, true);
}

void keeld_updater_check(keeld_updater_t *u)
{
    keel_log(KEEL_LOG_INFO, "update: keel/check: asking the update server now");
    start_check(u);
}

void keeld_updater_reload(keeld_updater_t *u, const keel_config_t *cfg)
{
    if (u == NULL)
        return;
    u->interval = (double)keel_config_uint(cfg, "update", "check_interval");
    u->jitter = (double)keel_config_uint(cfg, "update", "check_jitter");
}

keel_status_t keeld_updater_start(struct event_base *base, const keel_config_t *cfg, keel_keystore_t *ks,
                                  keel_api_t *api, keeld_updater_emit_fn emit, void *emit_arg, keeld_updater_t **out)
{
    *out = NULL;
    const char *server = keel_config_str(cfg, "update", "server");
    if (server == NULL)
        return KEEL_OK;
    char host[KEELD_UPDATE_HOST_MAX + 1];
    unsigned port;
    bool v6;
    keel_status_t st = keeld_update_server_parse(server, host, &port, &v6);
    if (st != KEEL_OK)
        return st;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return keel_errorf(KEEL_ERR_NOMEM, "curl_global_init failed");
    keeld_updater_t *u = calloc(1, sizeof *u);
    if (u == NULL) {
        curl_global_cleanup();
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    }
    u->base = base;
    u->cfg = cfg;
    u->api = api;
    u->emit = emit;
    u->emit_arg = emit_arg;
    u->cur.feed.fd = -1;
    atomic_init(&u->abort, false);
    u->size_cap = keel_config_uint(cfg, "api", "upload_max");
    keeld_updater_reload(u, cfg);
    const char *sn = keel_config_str(cfg, "update", "server_name");
    snprintf(u->name, sizeof u->name, "%s", sn != NULL ? sn : host);
    bool name_v6 = strchr(u->name, ':') != NULL;
    /* The URL names the certificate's name (curl checks it, and sends it as
     * SNI); CONNECT_TO sends the connection to the configured host. */
    snprintf(u->base_url, sizeof u->base_url, "https://%s%s%s:%u", name_v6 ? "[" : "", u->name, name_v6 ? "]" : "",
             port);
    if (sn != NULL && strcmp(sn, host) != 0)
        snprintf(u->connect_to, sizeof u->connect_to, "%s%s%s:%u:%s%s%s:%u", name_v6 ? "[" : "", u->name,
                 name_v6 ? "]" : "", port, v6 ? "[" : "", host, v6 ? "]" : "", port);
    if ((st = keel_config_path(cfg, "trust", "service_root", u->ca)) == KEEL_OK &&
        (st = keel_config_path(cfg, "identity", "certificate", u->cert)) == KEEL_OK &&
        (st = keel_config_path(cfg, "identity", "chain", u->chain)) == KEEL_OK)
        st = keel_keystore_private_key(ks, keel_config_str(cfg, "keystore", "key_label"), &u->key);
    /* The TLS setup is tried once here, so a broken identity stops keeld at
     * start rather than failing every transfer. */
    if (st == KEEL_OK) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (ctx == NULL)
            st = keel_crypto_error(KEEL_ERR_CRYPTO, "SSL_CTX_new");
        else if ((st = keel_tls_trust_root(ctx, u->ca)) == KEEL_OK && (st = keel_tls_expect_server(ctx, u->name)) == KEEL_OK)
            st = keel_tls_use_identity_key(ctx, u->key, u->cert, u->chain);
        SSL_CTX_free(ctx);
    }
    if (st == KEEL_OK)
        st = keel_workers_start(base, 1, 1, &u->net);
    if (st == KEEL_OK) {
        u->check_timer = evtimer_new(base, on_check_timer, u);
        u->progress_timer = event_new(base, -1, EV_PERSIST, on_progress, u);
        if (u->check_timer == NULL || u->progress_timer == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "update: cannot make the timers");
    }
    if (st != KEEL_OK) {
        keeld_updater_free(u);
        return st;
    }
    double first = keeld_first_check_delay((double)keel_config_uint(cfg, "update", "first_check"),
                                           random_unit());
    arm_check(u, first);
    keel_log(KEEL_LOG_INFO, "update: fleet updates from %s%s%s, first check in %.0f s, then every %.0f s +- %.0f s",
             u->base_url, u->connect_to[0] != '\0' ? " via " : "", u->connect_to[0] != '\0' ? server : "", first,
             u->interval, u->jitter);
    *out = u;
    return KEEL_OK;
}

void keeld_updater_stop(keeld_updater_t *u)
{
    if (u == NULL)
        return;
    u->stopping = true;
    atomic_store(&u->abort, true);
    if (u->check_timer != NULL)
        event_del(u->check_timer);
}

bool keeld_updater_busy(const keeld_updater_t *u)
{
    return u != NULL && keel_workers_pending(u->net) > 0;
}

void keeld_updater_free(keeld_updater_t *u)
{
    if (u == NULL)
        return;
    keeld_updater_stop(u);
    keel_workers_free(u->net); /* runs the last done callbacks */
    if (u->cur.feed.fd >= 0 && u->phase == PHASE_INSTALLING && !u->cur.inst_done)
        keel_log(KEEL_LOG_WARN, "update: freed before the install finished");
    if (u->check_timer != NULL)
        event_free(u->check_timer);
    if (u->progress_timer != NULL)
        event_free(u->progress_timer);
    EVP_MD_CTX_free(u->cur.feed.md);
    EVP_PKEY_free(u->key);
    free(u);
    curl_global_cleanup();
}

/*
 * The cloud link (keel/link.h, docs/internals/link.md): libmosquitto driven
 * by the caller's libevent loop, over a TLS context we build ourselves.
 *
 * One `struct mosquitto` per connection attempt: a fresh client carries no
 * queued packets or half-finished TLS state from the last attempt, and what
 * was in flight is resent from the outbox (the receiver drops duplicates by
 * seq). libmosquitto's callbacks only record what happened; every decision
 * (go online, tear down, schedule the next attempt) is taken after the
 * libmosquitto call has returned, because a client must not be destroyed
 * from inside its own callback.
 */
#include "keel/link.h"

#include "keel/crypto.h"
#include "keel/identity.h"
#include "keel/tls.h"
#include "link_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define VERIFY_DEPTH 4

#define TOPIC_MAX 128
/* Largest command payload handed to the product. */
#define CMD_MAX (64u * 1024u)
/* The largest MQTT packet we accept, announced in CONNECT (Maximum Packet
 * Size): a command of CMD_MAX with its topic and properties. libmosquitto
 * 2.0 has no client-side limit (it allocates whatever length a packet
 * announces, up to 256 MiB), so this is what stops a conforming broker from
 * making us allocate more. */
#define PACKET_MAX (CMD_MAX + 1024u)
/* The product state is a JSON object of the same size as an outbox body. */
#define STATE_MAX KEEL_OUTBOX_BODY_MAX
#define INFLIGHT_LIMIT 1000u
/* No CONNACK this long after the attempt began: the attempt failed. */
#define CONNECT_TIMEOUT_MAX 20.0
/* Socket wake-ups in one attempt before CONNACK that mean the handshake is
 * stuck (libmosquitto reports some dead ends as "try again"). */
#define HANDSHAKE_WAKEUPS_MAX 2000u

typedef struct {
    int mid;
    uint64_t seq;
} inflight_t;

struct keel_link {
    keel_link_config_t c; /* its strings point at the copies below */
    char *device_id, *broker, *server_name, *key_label;
    char host[KEEL_LINK_HOST_MAX + 1];
    int port;
    char topic_telemetry[TOPIC_MAX], topic_events[TOPIC_MAX], topic_state[TOPIC_MAX];
    char topic_cmd[TOPIC_MAX];    /* the subscription: .../cmd/# */
    char cmd_prefix[TOPIC_MAX];   /* .../cmd/ */
#ifdef KEEL_TEST_HOOKS
    char *topic_override;         /* test hook */
#endif
    SSL_CTX *ssl;
    const char *sni;              /* server_name or the broker host; NULL for an address */

    struct mosquitto *mosq;       /* the current attempt's client, or NULL */
    int fd;
    struct event *ev_read, *ev_write, *ev_tick, *ev_retry, *ev_hold;
    bool write_armed;
    int in_mosq;                  /* depth of calls into libmosquitto */

    keel_link_status_t st;
    double attempt_started, online_since, retry_at;
    bool stopped, stop_requested, pump_requested;

    /* recorded by callbacks during the current attempt */
    bool connack_seen;
    int connack_rc;
    bool dropped;
    int drop_rc;
    int tls_verify_err;           /* our verification of the broker failed */
    int tls_alert_in;             /* fatal alert from the broker (description + 1) */
    bool auth_logged;             /* the current streak of auth failures was logged */
    uint64_t wakeups_attempt;

    /* a transient PUBACK refusal: sending pauses, then resumes from the oldest */
    bool hold_requested, held;
    unsigned refusal_streak;

    inflight_t inflight[INFLIGHT_LIMIT];
    unsigned n_inflight;
    uint64_t cursor;              /* highest seq handed to libmosquitto this connection */
    keel_outbox_msg_t msg;

    char *state_json;
    size_t state_len;
    bool state_pending;           /* set_state while offline: send after CONNACK */
    int state_mid;

#ifdef KEEL_TEST_HOOKS
    keel_link_counters_t counters; /* test hook */
#endif
};

/* The test profile's hooks (link_internal.h); nothing of them in other builds. */
#ifdef KEEL_TEST_HOOKS
#define TEST_COUNT(l, field) ((l)->counters.field++)
#define TEST_TOPIC(l) ((l)->topic_override)
#else
#define TEST_COUNT(l, field) ((void)0)
#define TEST_TOPIC(l) ((const char *)NULL)
#endif

static int ssl_app_index = -1;
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc = MOSQ_ERR_SUCCESS;

static void lib_cleanup(void)
{
    mosquitto_lib_cleanup();
}

/* libmosquitto's process-wide set-up, once; its cleanup runs at exit. */
static void lib_init(void)
{
    lib_rc = mosquitto_lib_init();
    if (lib_rc == MOSQ_ERR_SUCCESS && atexit(lib_cleanup) != 0)
        lib_rc = MOSQ_ERR_UNKNOWN;
    ssl_app_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

double keel_link_random_unit(void)
{
    uint64_t x;
    keel_random_bytes(&x, sizeof x);
    return (double)(x >> 11) * 0x1.0p-53;
}

/* ---- the TLS context ---------------------------------------------------------- */

static keel_link_t *link_of_ssl(const SSL *ssl)
{
    SSL_CTX *ctx = ssl != NULL ? SSL_get_SSL_CTX(ssl) : NULL;
    return ctx != NULL ? SSL_CTX_get_ex_data(ctx, ssl_app_index) : NULL;
}

/* Records why we refused the broker's certificate (the verdict stays OpenSSL's). */
static int on_verify(int ok, X509_STORE_CTX *x)
{
    if (!ok) {
        SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
        keel_link_t *l = link_of_ssl(ssl);
        if (l != NULL && l->tls_verify_err == 0)
            l->tls_verify_err = X509_STORE_CTX_get_error(x);
    }
    return ok;
}

/* Sets the SNI before the ClientHello is built, and records a fatal alert
 * from the broker (it refused our certificate). libmosquitto sets the SNI to
 * the host it connects to, so a broker given by address with a configured
 * server_name would be asked for the address (or for an IP literal, which
 * RFC 6066 forbids): a broker or load balancer that picks its certificate by
 * SNI then presents the wrong one. The handshake-start callback is the only
 * hook between libmosquitto's SSL_new and the ClientHello, and it gets the
 * SSL as const; setting the host name there is what the API allows. */
static void on_tls_info(const SSL *ssl, int where, int ret)
{
    keel_link_t *l = link_of_ssl(ssl);
    if (l == NULL)
        return;
    if ((where & SSL_CB_HANDSHAKE_START) != 0) {
        if (SSL_set_tlsext_host_name((SSL *)ssl, l->sni) != 1)
            ERR_clear_error(); /* the name was checked at start; the handshake still checks the certificate */
        return;
    }
    if ((where & SSL_CB_READ_ALERT) != SSL_CB_READ_ALERT || (ret >> 8) != 2 /* fatal */)
        return;
    if (l->tls_alert_in == 0)
        l->tls_alert_in = (ret & 0xff) + 1;
}

static keel_status_t tls_error(const char *what)
{
    return keel_crypto_error(KEEL_ERR_CRYPTO, what);
}

static keel_status_t tls_context(keel_link_t *l, const keel_link_config_t *c)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return tls_error("SSL_CTX_new");
    l->ssl = ctx;
    /* libmosquitto resumes no sessions: the policy's "no tickets, no cache" fits */
    keel_status_t st = keel_tls_policy(ctx);
    if (st != KEEL_OK)
        return st;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify);
    SSL_CTX_set_verify_depth(ctx, VERIFY_DEPTH);
    SSL_CTX_set_info_callback(ctx, on_tls_info);
    if (SSL_CTX_set_ex_data(ctx, ssl_app_index, l) != 1)
        return tls_error("SSL_CTX_set_ex_data");
    st = keel_tls_trust_root(ctx, c->ca_path);
    if (st != KEEL_OK)
        return st;
    /* libmosquitto checks no name when it is handed a context: we do. */
    const char *name = l->server_name != NULL ? l->server_name : l->host;
    l->sni = keel_link_name_is_ip(name) ? NULL : name;
    if ((st = keel_tls_expect_server(ctx, name)) != KEEL_OK)
        return keel_errorf(st, "the broker's server name: %s", keel_error_message());
    return keel_tls_use_identity(ctx, c->ks, c->key_label, c->cert_path, c->chain_path);
}

/* ---- events ---------------------------------------------------------------------- */

static void on_read(evutil_socket_t fd, short what, void *arg);
static void on_write(evutil_socket_t fd, short what, void *arg);
static void after_io(keel_link_t *l, int rc);
static void hold_start(keel_link_t *l);
static void schedule_retry(keel_link_t *l);

static void set_state(keel_link_t *l, keel_link_state_t s)
{
    keel_link_state_t was = l->st.state;
    l->st.state = s;
    /* The product hears of online and of leaving it, not of every attempt. */
    if (l->c.on_state != NULL && s != was && (s == KEEL_LINK_ONLINE || was == KEEL_LINK_ONLINE))
        l->c.on_state(l->c.arg, s);
}

static void update_write(keel_link_t *l)
{
    if (l->mosq == NULL || l->ev_write == NULL)
        return;
    l->in_mosq++;
    bool want = mosquitto_want_write(l->mosq);
    l->in_mosq--;
    if (want && !l->write_armed) {
        if (event_add(l->ev_write, NULL) == 0)
            l->write_armed = true;
    } else if (!want && l->write_armed) {
        event_del(l->ev_write);
        l->write_armed = false;
    }
}

static void events_free(keel_link_t *l)
{
    if (l->ev_read != NULL)
        event_free(l->ev_read);
    if (l->ev_write != NULL)
        event_free(l->ev_write);
    l->ev_read = l->ev_write = NULL;
    l->write_armed = false;
    l->fd = -1;
}

/* Binds the socket events to the client's current socket (a new one per attempt). */
static bool events_bind(keel_link_t *l)
{
    int fd = mosquitto_socket(l->mosq);
    if (fd < 0)
        return false;
    if (fd == l->fd && l->ev_read != NULL)
        return true;
    events_free(l);
    l->ev_read = event_new(l->c.base, fd, EV_READ | EV_PERSIST, on_read, l);
    l->ev_write = event_new(l->c.base, fd, EV_WRITE | EV_PERSIST, on_write, l);
    if (l->ev_read == NULL || l->ev_write == NULL || event_add(l->ev_read, NULL) != 0) {
        events_free(l);
        return false;
    }
    l->fd = fd;
    return true;
}

static void client_destroy(keel_link_t *l)
{
    events_free(l);
    if (l->ev_tick != NULL)
        event_del(l->ev_tick);
    if (l->mosq != NULL)
        mosquitto_destroy(l->mosq);
    l->mosq = NULL;
    l->n_inflight = 0;
    l->cursor = 0;
    l->state_mid = 0;
    /* The next connection starts from the oldest message anyway. */
    if (l->ev_hold != NULL)
        event_del(l->ev_hold);
    l->hold_requested = l->held = false;
}

/* ---- callbacks: record only ------------------------------------------------------- */

static void cb_connect(struct mosquitto *m, void *arg, int rc, int flags, const mosquitto_property *p)
{
    (void)m, (void)flags, (void)p;
    keel_link_t *l = arg;
    l->connack_seen = true;
    l->connack_rc = rc;
}

static void cb_disconnect(struct mosquitto *m, void *arg, int rc, const mosquitto_property *p)
{
    (void)m, (void)p;
    keel_link_t *l = arg;
    l->dropped = true;
    l->drop_rc = rc;
}

bool keel_link_refusal_is_final(int reason)
{
    switch (reason) {
    case MQTT_RC_NOT_AUTHORIZED:         /* 135: the ACL does not let us write there */
    case MQTT_RC_TOPIC_NAME_INVALID:     /* 144 */
    case MQTT_RC_PACKET_TOO_LARGE:       /* 149: mosquitto's message_size_limit */
    case MQTT_RC_PAYLOAD_FORMAT_INVALID: /* 153 */
        return true;
    default:
        return false;
    }
}

/* A transient refusal (quota exceeded, busy, unspecified, ...): the message
 * stays in the outbox; sending pauses for a backoff window (the broker asked
 * us to slow down) and resumes from the oldest unacknowledged message. */
static void refused_transient(keel_link_t *l, int reason, const char *what, uint64_t seq)
{
    l->st.deferred++;
    l->st.last_reason = reason;
    l->hold_requested = true;
    if (l->refusal_streak < UINT_MAX)
        l->refusal_streak++;
    keel_log(l->refusal_streak == 1 ? KEEL_LOG_WARN : KEEL_LOG_DEBUG,
             "link: the broker refused %s %llu for now: %s (%d); kept, sent again later", what,
             (unsigned long long)seq, mosquitto_reason_string(reason), reason);
}

static void cb_publish(struct mosquitto *m, void *arg, int mid, int reason, const mosquitto_property *p)
{
    (void)m, (void)p;
    keel_link_t *l = arg;
    if (mid == l->state_mid && mid != 0) {
        l->state_mid = 0;
        if (reason >= 128 && !keel_link_refusal_is_final(reason)) {
            l->state_pending = true;
            refused_transient(l, reason, "the product state", 0);
        } else if (reason >= 128) {
            l->st.refused++;
            l->st.last_reason = reason;
            keel_log(KEEL_LOG_WARN, "link: the broker refused the product state: %s (%d)",
                     mosquitto_reason_string(reason), reason);
        }
        return;
    }
    for (unsigned i = 0; i < l->n_inflight; i++) {
        if (l->inflight[i].mid != mid)
            continue;
        uint64_t seq = l->inflight[i].seq;
        l->inflight[i] = l->inflight[--l->n_inflight];
        if (reason >= 128 && !keel_link_refusal_is_final(reason)) {
            refused_transient(l, reason, "message", seq);
            return;
        }
        if (reason >= 128) {
            /* This message can never be accepted: drop it, loudly. */
            l->st.refused++;
            l->st.last_reason = reason;
            keel_log(KEEL_LOG_WARN, "link: the broker refused message %llu: %s (%d); dropped",
                     (unsigned long long)seq, mosquitto_reason_string(reason), reason);
        } else {
            l->st.published++;
            l->refusal_streak = 0;
            keel_log(KEEL_LOG_DEBUG, "link: message %llu acknowledged (mid %d)", (unsigned long long)seq, mid);
        }
        if (keel_outbox_ack(l->c.outbox, seq) != KEEL_OK) {
            keel_log(KEEL_LOG_ERROR, "link: outbox ack %llu: %s", (unsigned long long)seq, keel_error_message());
            keel_error_clear();
        }
        l->pump_requested = true;
        return;
    }
}

static void cb_subscribe(struct mosquitto *m, void *arg, int mid, int n, const int *granted,
                         const mosquitto_property *p)
{
    (void)m, (void)arg, (void)mid, (void)p;
    for (int i = 0; i < n; i++)
        if (granted[i] >= 128)
            keel_log(KEEL_LOG_WARN, "link: the broker refused the command subscription: %s (%d)",
                     mosquitto_reason_string(granted[i]), granted[i]);
}

bool keel_link_command_name_ok(const char *name)
{
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > KEEL_LINK_CMD_NAME_MAX)
        return false;
    const char *level = name;
    for (const char *q = name;; q++) {
        if (*q == '/' || *q == '\0') {
            size_t len = (size_t)(q - level);
            if (len == 0 || (len == 1 && level[0] == '.') || (len == 2 && level[0] == '.' && level[1] == '.'))
                return false;
            if (*q == '\0')
                return true;
            level = q + 1;
        } else if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
                     *q == '-' || *q == '_' || *q == '.')) {
            return false;
        }
    }
}

static void cb_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                       const mosquitto_property *p)
{
    (void)m, (void)p;
    keel_link_t *l = arg;
    size_t plen = strlen(l->cmd_prefix);
    if (msg->topic == NULL || strncmp(msg->topic, l->cmd_prefix, plen) != 0) {
        keel_log(KEEL_LOG_WARN, "link: message on an unexpected topic ignored");
        return;
    }
    /* A retained command would run again after every reconnect (the
     * subscription asks for none; this holds if a broker sends one anyway). */
    if (msg->retain) {
        keel_log(KEEL_LOG_WARN, "link: retained command ignored");
        return;
    }
    /* The name goes to the product (a dispatch key, maybe a path) and into
     * logs: nothing but plain levels, never shown when refused. */
    if (!keel_link_command_name_ok(msg->topic + plen)) {
        keel_log(KEEL_LOG_WARN, "link: command with an invalid name (%zu bytes) ignored", strlen(msg->topic + plen));
        return;
    }
    if (msg->payloadlen < 0 || (size_t)msg->payloadlen > CMD_MAX) {
        keel_log(KEEL_LOG_WARN, "link: command %s over %u bytes ignored", msg->topic + plen, CMD_MAX);
        return;
    }
    if (l->c.on_command != NULL)
        l->c.on_command(l->c.arg, msg->topic + plen, msg->payload, (size_t)msg->payloadlen);
}

static void cb_log(struct mosquitto *m, void *arg, int level, const char *text)
{
    (void)m, (void)arg, (void)level;
    keel_log(KEEL_LOG_DEBUG, "link: mosquitto: %s", text);
}

/* ---- going down, coming back -------------------------------------------------------- */

static const char *tls_alert_name(int desc)
{
    return SSL_alert_desc_string_long(desc);
}

/* The attempt or connection is over: count, log, tear down, schedule the next. */
static void link_down(keel_link_t *l, int rc, const char *why)
{
    bool was_online = l->st.state == KEEL_LINK_ONLINE;
    bool refused = l->connack_rc != 0;
    bool auth = l->tls_verify_err != 0 || l->tls_alert_in != 0 || refused;
    char msg[KEEL_ERROR_MAX];
    if (l->tls_verify_err != 0)
        snprintf(msg, sizeof msg, "broker certificate not trusted / name mismatch (%s)",
                            X509_verify_cert_error_string(l->tls_verify_err));
    else if (l->tls_alert_in != 0)
        snprintf(msg, sizeof msg, "the broker refused our certificate (TLS alert: %s)",
                            tls_alert_name(l->tls_alert_in - 1));
    else if (refused)
        snprintf(msg, sizeof msg, "the broker refused the connection: %s (%d)",
                            mosquitto_reason_string(l->connack_rc), l->connack_rc);
    else if (why != NULL)
        snprintf(msg, sizeof msg, "%s", why);
    else if (l->dropped && l->drop_rc >= 128)
        snprintf(msg, sizeof msg, "the broker disconnected us: %s (%d)",
                            mosquitto_reason_string(l->drop_rc), l->drop_rc);
    else if (rc == MOSQ_ERR_KEEPALIVE || l->drop_rc == MOSQ_ERR_KEEPALIVE)
        /* libmosquitto 2.0.11's strerror calls this "Unknown error"; before
         * CONNACK it races our own connect timeout (same limit) */
        snprintf(msg, sizeof msg, was_online ? "the broker stopped answering (keepalive %u s)" : "no CONNACK within %u s",
                 l->c.keepalive_s);
    else
        snprintf(msg, sizeof msg, "connection %s: %s", was_online ? "lost" : "failed",
                            mosquitto_strerror(rc != MOSQ_ERR_SUCCESS ? rc : l->drop_rc));
    snprintf(l->st.last_error, sizeof l->st.last_error, "%s", msg);
    if (refused)
        l->st.last_reason = l->connack_rc;
    else if (l->dropped && l->drop_rc >= 128)
        l->st.last_reason = l->drop_rc;
    if (auth) {
        l->st.auth_failures++;
        keel_log(l->auth_logged ? KEEL_LOG_DEBUG : KEEL_LOG_WARN, "link: %s:%d: %s", l->host, l->port, msg);
        l->auth_logged = true;
    } else {
        keel_log(was_online ? KEEL_LOG_WARN : KEEL_LOG_INFO, "link: %s:%d: %s", l->host, l->port, msg);
    }
    if (was_online) {
        l->st.disconnects++;
        /* Up long enough between ticks: this disconnect starts a new series. */
        if (keel_now() - l->online_since >= l->c.backoff.stable_s)
            l->st.attempt = 0;
    }
    client_destroy(l);
    if (l->stopped) {
        set_state(l, KEEL_LINK_STOPPED);
        return;
    }
    schedule_retry(l);
}

static void schedule_retry(keel_link_t *l)
{
    double delay = keel_backoff_delay(&l->c.backoff, l->st.attempt, keel_link_random_unit());
    if (l->st.attempt < UINT_MAX)
        l->st.attempt++;
    l->retry_at = keel_now() + delay;
    struct timeval tv = {.tv_sec = (time_t)delay, .tv_usec = (suseconds_t)((delay - floor(delay)) * 1e6)};
    if (event_add(l->ev_retry, &tv) != 0)
        keel_log(KEEL_LOG_ERROR, "link: cannot schedule the next connection attempt");
    keel_log(KEEL_LOG_DEBUG, "link: next attempt in %.1f s (attempt %u)", delay, l->st.attempt);
    set_state(l, KEEL_LINK_OFFLINE);
}

static void attempt_reset(keel_link_t *l)
{
    l->connack_seen = false;
    l->connack_rc = 0;
    l->dropped = false;
    l->drop_rc = 0;
    l->tls_verify_err = 0;
    l->tls_alert_in = 0;
    l->wakeups_attempt = 0;
}

/*
 * CONNECT carries Maximum Packet Size = PACKET_MAX. libmosquitto 2.0 takes
 * CONNECT properties only from mosquitto_connect_bind_v5, which connects
 * blocking; it stores them before it checks its arguments, and
 * mosquitto_connect_bind_async sends what is stored. So: store them with a
 * call that stops at the argument check (port -1), then connect async.
 * link_broker.sh proves the broker honours it (an oversized command is
 * dropped by the broker, our memory does not grow).
 */
#if LIBMOSQUITTO_VERSION_NUMBER < 2000000 || LIBMOSQUITTO_VERSION_NUMBER >= 3000000
#error "connect_properties relies on libmosquitto 2.0's connect_bind_v5; re-check it"
#endif
static int connect_properties(struct mosquitto *m)
{
    mosquitto_property *props = NULL;
    int rc = mosquitto_property_add_int32(&props, MQTT_PROP_MAXIMUM_PACKET_SIZE, PACKET_MAX);
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = mosquitto_connect_bind_v5(m, "127.0.0.1", -1, 60, NULL, props);
        rc = rc == MOSQ_ERR_INVAL ? MOSQ_ERR_SUCCESS : MOSQ_ERR_UNKNOWN;
    }
    mosquitto_property_free_all(&props);
    return rc;
}

static void attempt_connect(keel_link_t *l)
{
    attempt_reset(l);
    TEST_COUNT(l, attempts);
    l->attempt_started = keel_now();
    set_state(l, KEEL_LINK_CONNECTING);
    l->mosq = mosquitto_new(l->device_id, true, l);
    if (l->mosq == NULL) {
        link_down(l, MOSQ_ERR_NOMEM, "out of memory");
        return;
    }
    mosquitto_connect_v5_callback_set(l->mosq, cb_connect);
    mosquitto_disconnect_v5_callback_set(l->mosq, cb_disconnect);
    mosquitto_publish_v5_callback_set(l->mosq, cb_publish);
    mosquitto_subscribe_v5_callback_set(l->mosq, cb_subscribe);
    mosquitto_message_v5_callback_set(l->mosq, cb_message);
    mosquitto_log_callback_set(l->mosq, cb_log);
    /* The context is ours; without it there is no connection (never plaintext). */
    int rc = mosquitto_int_option(l->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_int_option(l->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_void_option(l->mosq, MOSQ_OPT_SSL_CTX, l->ssl);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_int_option(l->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = connect_properties(l->mosq);
    if (rc != MOSQ_ERR_SUCCESS) {
        link_down(l, rc, "cannot set up the MQTT client");
        return;
    }
    /* Name resolution (getaddrinfo) blocks here for a host name. */
    l->in_mosq++;
    rc = mosquitto_connect_bind_async(l->mosq, l->host, l->port, (int)l->c.keepalive_s, NULL);
    l->in_mosq--;
    if (rc != MOSQ_ERR_SUCCESS) {
        char why[KEEL_ERROR_MAX];
        snprintf(why, sizeof why, "connect: %s", rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        link_down(l, rc, why);
        return;
    }
    if (!events_bind(l)) {
        link_down(l, MOSQ_ERR_NO_CONN, "connect: no socket to watch");
        return;
    }
    struct timeval one = {1, 0};
    if (event_add(l->ev_tick, &one) != 0) {
        link_down(l, MOSQ_ERR_UNKNOWN, "cannot arm the keepalive timer");
        return;
    }
    after_io(l, MOSQ_ERR_SUCCESS);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    keel_link_t *l = arg;
    if (!l->stopped && l->mosq == NULL)
        attempt_connect(l);
}

/* ---- online: subscribe, state, outbox ------------------------------------------------ */

static int publish_state(keel_link_t *l)
{
    if (l->state_json == NULL)
        return MOSQ_ERR_SUCCESS;
    int mid = 0;
    l->in_mosq++;
    int rc = mosquitto_publish_v5(l->mosq, &mid, l->topic_state, (int)l->state_len, l->state_json, 1, true, NULL);
    l->in_mosq--;
    if (rc == MOSQ_ERR_SUCCESS) {
        l->state_mid = mid;
        l->state_pending = false;
    }
    return rc;
}

static bool in_flight(const keel_link_t *l, uint64_t seq)
{
    for (unsigned i = 0; i < l->n_inflight; i++)
        if (l->inflight[i].seq == seq)
            return true;
    return false;
}

/* Hands the oldest unsent messages to libmosquitto, up to inflight_max. */
static int pump(keel_link_t *l)
{
    l->pump_requested = false;
    while (l->st.state == KEEL_LINK_ONLINE && !l->held && l->n_inflight < l->c.inflight_max) {
        keel_status_t st = keel_outbox_next(l->c.outbox, l->cursor, &l->msg);
        if (st == KEEL_ERR_NOT_FOUND) {
            keel_error_clear();
            break;
        }
        if (st != KEEL_OK) {
            keel_log(KEEL_LOG_ERROR, "link: outbox: %s", keel_error_message());
            keel_error_clear();
            break;
        }
        if (in_flight(l, l->msg.seq)) {
            /* after a hold the cursor restarts from the oldest: skip what is still out */
            l->cursor = l->msg.seq;
            continue;
        }
        const char *topic = TEST_TOPIC(l) != NULL ? TEST_TOPIC(l)
                            : l->msg.kind == KEEL_OUTBOX_TELEMETRY ? l->topic_telemetry
                                                                   : l->topic_events;
        int mid = 0;
        l->in_mosq++;
        int rc = mosquitto_publish_v5(l->mosq, &mid, topic, (int)l->msg.len, l->msg.envelope, 1, false, NULL);
        l->in_mosq--;
        l->cursor = l->msg.seq;
        if (rc == MOSQ_ERR_SUCCESS) {
            l->inflight[l->n_inflight].mid = mid;
            l->inflight[l->n_inflight].seq = l->msg.seq;
            l->n_inflight++;
        } else if (rc == MOSQ_ERR_OVERSIZE_PACKET || rc == MOSQ_ERR_PAYLOAD_SIZE) {
            /* Larger than the broker takes: it never will. */
            l->st.refused++;
            keel_log(KEEL_LOG_WARN, "link: message %llu is larger than the broker accepts; dropped",
                     (unsigned long long)l->msg.seq);
            if (keel_outbox_ack(l->c.outbox, l->msg.seq) != KEEL_OK)
                keel_error_clear();
        } else {
            return rc;
        }
    }
    return MOSQ_ERR_SUCCESS;
}

/* CONNACK accepted: counted even when the connection is already gone again
 * (a kick right after CONNACK is a connect and a disconnect). */
static int went_online(keel_link_t *l, bool send)
{
    l->st.connects++;
    l->online_since = keel_now();
    l->auth_logged = false;
    l->st.last_error[0] = '\0';
    keel_log(KEEL_LOG_INFO, "link: connected to %s:%d as %s", l->host, l->port, l->device_id);
    set_state(l, KEEL_LINK_ONLINE);
    if (!send || l->mosq == NULL || l->stopped)
        return MOSQ_ERR_SUCCESS;
    l->in_mosq++;
    int rc = mosquitto_subscribe_v5(l->mosq, NULL, l->topic_cmd, 1, MQTT_SUB_OPT_SEND_RETAIN_NEVER, NULL);
    l->in_mosq--;
    if (rc == MOSQ_ERR_SUCCESS)
        rc = publish_state(l);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = pump(l);
    return rc;
}

static void do_stop(keel_link_t *l)
{
    l->stopped = true;
    l->stop_requested = false;
    if (l->ev_retry != NULL)
        event_del(l->ev_retry);
    if (l->mosq != NULL && l->st.state == KEEL_LINK_ONLINE) {
        /* Written at once when the socket takes it; libmosquitto then closes it. */
        l->in_mosq++;
        (void)mosquitto_disconnect_v5(l->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
        l->in_mosq--;
        l->st.disconnects++;
        keel_log(KEEL_LOG_INFO, "link: disconnected (stop)");
    }
    client_destroy(l);
    set_state(l, KEEL_LINK_STOPPED);
}

/* After every call into libmosquitto: act on what its callbacks recorded. */
static void after_io(keel_link_t *l, int rc)
{
    if (l->mosq == NULL)
        return;
    if (l->stop_requested) {
        do_stop(l);
        return;
    }
    if (l->connack_seen) {
        l->connack_seen = false;
        if (l->connack_rc != 0) {
            link_down(l, rc, NULL);
            return;
        }
        int rc2 = went_online(l, rc == MOSQ_ERR_SUCCESS && !l->dropped);
        if (l->mosq == NULL)
            return;
        if (rc == MOSQ_ERR_SUCCESS)
            rc = rc2;
    }
    if (rc != MOSQ_ERR_SUCCESS || l->dropped || mosquitto_socket(l->mosq) < 0) {
        link_down(l, rc, NULL);
        return;
    }
    if (l->hold_requested) {
        l->hold_requested = false;
        hold_start(l);
    }
    if (l->st.state == KEEL_LINK_ONLINE && !l->held) {
        if (l->state_pending)
            rc = publish_state(l);
        if (rc == MOSQ_ERR_SUCCESS && l->pump_requested)
            rc = pump(l);
        if (rc != MOSQ_ERR_SUCCESS || l->dropped) {
            link_down(l, rc, NULL);
            return;
        }
    }
    if (!events_bind(l)) {
        link_down(l, MOSQ_ERR_NO_CONN, NULL);
        return;
    }
    update_write(l);
}

/* Pauses sending for a backoff window after a transient refusal; the window
 * grows with the refusals in a row, as the reconnect delay does. */
static void hold_start(keel_link_t *l)
{
    if (l->held)
        return;
    unsigned n = l->refusal_streak > 0 ? l->refusal_streak - 1 : 0;
    double delay = keel_backoff_delay(&l->c.backoff, n, keel_link_random_unit());
    struct timeval tv = {.tv_sec = (time_t)delay, .tv_usec = (suseconds_t)((delay - floor(delay)) * 1e6)};
    if (event_add(l->ev_hold, &tv) != 0) {
        keel_log(KEEL_LOG_ERROR, "link: cannot arm the hold timer; sending goes on");
        return;
    }
    l->held = true;
    keel_log(KEEL_LOG_DEBUG, "link: sending paused for %.1f s", delay);
}

static void on_hold(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    keel_link_t *l = arg;
    l->held = false;
    if (l->mosq == NULL || l->st.state != KEEL_LINK_ONLINE)
        return;
    l->cursor = 0; /* from the oldest: what was refused is sent again */
    l->pump_requested = true;
    after_io(l, MOSQ_ERR_SUCCESS);
}

/* Before CONNACK, a socket that failed or was closed under the handshake is
 * a failed attempt; libmosquitto would only report "try again". Whatever the
 * broker sent first (a TLS alert before it reset the connection) is read
 * before the error is looked at, so a refusal is diagnosed as one. */
static bool handshake_stuck(keel_link_t *l, const char **why)
{
    if (l->st.state != KEEL_LINK_CONNECTING || ++l->wakeups_attempt <= HANDSHAKE_WAKEUPS_MAX)
        return false;
    *why = "the TLS/MQTT handshake made no progress";
    return true;
}

static bool peer_gone(evutil_socket_t fd, const char **why)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
        return false;
    *why = n == 0 ? "the broker closed the connection during the handshake"
           : errno == ECONNREFUSED ? "connection refused"
                                   : "the connection failed during the handshake";
    return true;
}

static bool connect_failed(evutil_socket_t fd, const char **why)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0)
        return false;
    *why = err == ECONNREFUSED ? "connection refused" : "the connection failed during the handshake";
    return true;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    keel_link_t *l = arg;
    TEST_COUNT(l, wakeups);
    const char *why = NULL;
    if (handshake_stuck(l, &why) || (l->st.state == KEEL_LINK_CONNECTING && peer_gone(fd, &why))) {
        link_down(l, MOSQ_ERR_CONN_LOST, why);
        return;
    }
    /* The PUBACKs of one read are acked in one transaction: one fsync for a
     * burst instead of one per message, which is what bounds the drain
     * after an outage. A lost ack only means a resend the receiver drops. */
    bool batch = keel_outbox_begin(l->c.outbox) == KEEL_OK;
    if (!batch)
        keel_error_clear();
    l->in_mosq++;
    int rc = mosquitto_loop_read(l->mosq, 1);
    l->in_mosq--;
    if (batch && keel_outbox_commit(l->c.outbox) != KEEL_OK) {
        keel_log(KEEL_LOG_WARN, "link: outbox acks not stored (they are resent): %s", keel_error_message());
        keel_error_clear();
    }
    after_io(l, rc);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    keel_link_t *l = arg;
    TEST_COUNT(l, wakeups);
    const char *why = NULL;
    if (handshake_stuck(l, &why)) {
        link_down(l, MOSQ_ERR_CONN_LOST, why);
        return;
    }
    int rc = MOSQ_ERR_SUCCESS;
    if (l->st.state == KEEL_LINK_CONNECTING) {
        /* During the TLS handshake only loop_read advances it, also when it
         * waits to write; and it reads a pending alert before we look at
         * the socket's error. */
        l->in_mosq++;
        rc = mosquitto_loop_read(l->mosq, 1);
        l->in_mosq--;
        if (rc == MOSQ_ERR_SUCCESS && !l->dropped && mosquitto_socket(l->mosq) >= 0 && connect_failed(fd, &why)) {
            link_down(l, MOSQ_ERR_CONN_LOST, why);
            return;
        }
    }
    if (rc == MOSQ_ERR_SUCCESS && !l->dropped && mosquitto_socket(l->mosq) >= 0) {
        l->in_mosq++;
        rc = mosquitto_loop_write(l->mosq, 1);
        l->in_mosq--;
    }
    after_io(l, rc);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    keel_link_t *l = arg;
    if (l->mosq == NULL)
        return;
    double now = keel_now();
    if (l->st.state == KEEL_LINK_CONNECTING) {
        double limit = l->c.keepalive_s < CONNECT_TIMEOUT_MAX ? l->c.keepalive_s : CONNECT_TIMEOUT_MAX;
        if (now - l->attempt_started > limit) {
            char why[64];
            snprintf(why, sizeof why, "no CONNACK within %.0f s", limit);
            link_down(l, MOSQ_ERR_CONN_LOST, why);
            return;
        }
    } else if (l->st.state == KEEL_LINK_ONLINE && l->st.attempt > 0 && now - l->online_since >= l->c.backoff.stable_s) {
        l->st.attempt = 0;
    }
    l->in_mosq++;
    int rc = mosquitto_loop_misc(l->mosq);
    l->in_mosq--;
    after_io(l, rc);
}

/* ---- public -------------------------------------------------------------------------- */

static keel_status_t config_check(const keel_link_config_t *c)
{
    if (c == NULL || c->base == NULL || c->ks == NULL || c->outbox == NULL || c->device_id == NULL ||
        c->broker == NULL || c->key_label == NULL || c->cert_path == NULL || c->chain_path == NULL ||
        c->ca_path == NULL)
        return keel_errorf(KEEL_ERR_ARG, "link: incomplete configuration");
    if (!keel_identity_id_ok(c->device_id))
        return keel_errorf(KEEL_ERR_ARG, "link: \"%s\" is not a device id", c->device_id);
    if (c->server_name != NULL && !keel_link_server_name_ok(c->server_name))
        return keel_errorf(KEEL_ERR_CONFIG, "link.server_name: \"%.64s\" is not a host name or address",
                           c->server_name);
    const keel_backoff_t *b = &c->backoff;
    if (!(b->base_s > 0) || !(b->cap_s >= b->base_s) || !(b->first_s >= 0) || !(b->stable_s > 0) ||
        !isfinite(b->cap_s) || !isfinite(b->first_s) || !isfinite(b->stable_s))
        return keel_errorf(KEEL_ERR_ARG, "link: backoff needs 0 < base <= cap, first >= 0, stable > 0");
    if (c->keepalive_s < 5 || c->keepalive_s > 65535)
        return keel_errorf(KEEL_ERR_ARG, "link: keepalive must be 5..65535 s");
    if (c->inflight_max < 1 || c->inflight_max > INFLIGHT_LIMIT)
        return keel_errorf(KEEL_ERR_ARG, "link: inflight must be 1..%u", INFLIGHT_LIMIT);
    return KEEL_OK;
}

static keel_status_t topics(keel_link_t *l)
{
    const char *id = l->device_id;
    keel_status_t st = keel_snprintf(l->topic_telemetry, TOPIC_MAX, "keel/v1/%s/telemetry", id);
    if (st == KEEL_OK)
        st = keel_snprintf(l->topic_events, TOPIC_MAX, "keel/v1/%s/events", id);
    if (st == KEEL_OK)
        st = keel_snprintf(l->topic_state, TOPIC_MAX, "keel/v1/%s/state", id);
    if (st == KEEL_OK)
        st = keel_snprintf(l->topic_cmd, TOPIC_MAX, "keel/v1/%s/cmd/#", id);
    if (st == KEEL_OK)
        st = keel_snprintf(l->cmd_prefix, TOPIC_MAX, "keel/v1/%s/cmd/", id);
    return st;
}

keel_status_t keel_link_start(const keel_link_config_t *c, keel_link_t **out)
{
    if (out == NULL)
        return keel_errorf(KEEL_ERR_ARG, "link: no output");
    keel_status_t st = config_check(c);
    if (st != KEEL_OK)
        return st;
    if ((st = keel_crypto_init()) != KEEL_OK)
        return st;
    if (pthread_once(&lib_once, lib_init) != 0 || lib_rc != MOSQ_ERR_SUCCESS || ssl_app_index < 0)
        return keel_errorf(KEEL_ERR_CRYPTO, "link: libmosquitto did not initialise");
    keel_link_t *l = calloc(1, sizeof *l);
    if (l == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    l->c = *c;
    l->fd = -1;
    l->device_id = strdup(c->device_id);
    l->broker = strdup(c->broker);
    l->key_label = strdup(c->key_label);
    l->server_name = c->server_name != NULL ? strdup(c->server_name) : NULL;
    if (l->device_id == NULL || l->broker == NULL || l->key_label == NULL ||
        (c->server_name != NULL && l->server_name == NULL))
        st = keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    l->c.device_id = l->device_id;
    l->c.broker = l->broker;
    l->c.key_label = l->key_label;
    l->c.server_name = l->server_name;
    /* The paths are read now, once. */
    l->c.cert_path = l->c.chain_path = l->c.ca_path = NULL;
    if (st == KEEL_OK)
        st = keel_link_split_broker(c->broker, l->host, sizeof l->host, &l->port);
    if (st == KEEL_OK)
        st = topics(l);
    if (st == KEEL_OK)
        st = tls_context(l, c);
    if (st == KEEL_OK) {
        l->ev_tick = event_new(c->base, -1, EV_PERSIST, on_tick, l);
        l->ev_retry = evtimer_new(c->base, on_retry, l);
        l->ev_hold = evtimer_new(c->base, on_hold, l);
        if (l->ev_tick == NULL || l->ev_retry == NULL || l->ev_hold == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "link: cannot create timers");
    }
    if (st != KEEL_OK) {
        keel_link_free(l);
        return st;
    }
    /* A fleet that powers up together must not arrive together. */
    double delay = c->backoff.first_s * keel_link_random_unit();
    l->retry_at = keel_now() + delay;
    struct timeval tv = {.tv_sec = (time_t)delay, .tv_usec = (suseconds_t)((delay - floor(delay)) * 1e6)};
    if (event_add(l->ev_retry, &tv) != 0) {
        keel_link_free(l);
        return keel_errorf(KEEL_ERR_IO, "link: cannot schedule the first connection");
    }
    l->st.state = KEEL_LINK_OFFLINE;
    keel_log(KEEL_LOG_INFO, "link: first connection to %s:%d in %.1f s", l->host, l->port, delay);
    *out = l;
    return KEEL_OK;
}

void keel_link_kick(keel_link_t *l)
{
    if (l == NULL || l->st.state != KEEL_LINK_ONLINE)
        return;
    l->pump_requested = true;
    if (l->in_mosq > 0)
        return; /* after_io pumps when libmosquitto returns */
    after_io(l, MOSQ_ERR_SUCCESS);
}

keel_status_t keel_link_set_state(keel_link_t *l, const char *json, size_t len)
{
    if (l == NULL || json == NULL)
        return keel_errorf(KEEL_ERR_ARG, "link: no state");
    if (len > STATE_MAX)
        return keel_errorf(KEEL_ERR_TOO_LARGE, "link: the product state exceeds %u bytes", STATE_MAX);
    json_error_t e;
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &e);
    bool ok = json_is_object(j);
    json_decref(j);
    if (!ok)
        return keel_errorf(KEEL_ERR_FORMAT, "link: the product state is not a JSON object");
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    memcpy(copy, json, len);
    copy[len] = '\0';
    free(l->state_json);
    l->state_json = copy;
    l->state_len = len;
    l->state_pending = true;
    if (l->st.state == KEEL_LINK_ONLINE && l->in_mosq == 0)
        after_io(l, MOSQ_ERR_SUCCESS);
    return KEEL_OK;
}

void keel_link_status(const keel_link_t *l, keel_link_status_t *st)
{
    if (st == NULL)
        return;
    memset(st, 0, sizeof *st);
    if (l == NULL) {
        st->state = KEEL_LINK_STOPPED;
        return;
    }
    *st = l->st;
    if (st->state == KEEL_LINK_OFFLINE) {
        double left = l->retry_at - keel_now();
        st->next_attempt_in = left > 0 ? left : 0;
    }
}

void keel_link_stop(keel_link_t *l)
{
    if (l == NULL || l->stopped)
        return;
    if (l->in_mosq > 0) {
        l->stop_requested = true; /* from a callback: after libmosquitto returns */
        return;
    }
    do_stop(l);
}

void keel_link_free(keel_link_t *l)
{
    if (l == NULL)
        return;
    l->stopped = true;
    client_destroy(l);
    if (l->ev_tick != NULL)
        event_free(l->ev_tick);
    if (l->ev_retry != NULL)
        event_free(l->ev_retry);
    if (l->ev_hold != NULL)
        event_free(l->ev_hold);
    SSL_CTX_free(l->ssl);
    free(l->device_id);
    free(l->broker);
    free(l->key_label);
    free(l->server_name);
#ifdef KEEL_TEST_HOOKS
    free(l->topic_override);
#endif
    free(l->state_json);
    keel_wipe(&l->msg, sizeof l->msg);
    free(l);
}

#ifdef KEEL_TEST_HOOKS
keel_status_t keel_link_test_set_topic(keel_link_t *l, const char *topic)
{
    if (l == NULL)
        return keel_errorf(KEEL_ERR_ARG, "link: no link");
    char *t = NULL;
    if (topic != NULL && (strlen(topic) >= TOPIC_MAX || (t = strdup(topic)) == NULL))
        return keel_errorf(KEEL_ERR_ARG, "link: bad topic");
    free(l->topic_override);
    l->topic_override = t;
    return KEEL_OK;
}

void keel_link_test_counters(const keel_link_t *l, keel_link_counters_t *out)
{
    if (l != NULL && out != NULL)
        *out = l->counters;
}
#endif

/*
 * keel-fleetd's MQTT connection (fleetd.h): one thread of ours drives
 * libmosquitto (mosquitto_loop), queues every device message for the ingest
 * thread, and carries the fleet's commands and alerts out.
 *
 * Why our own thread and not mosquitto_loop_start: libmosquitto's
 * loop_forever gives up for good on a TLS error or a failed name lookup, and
 * a fleet service must keep trying. mosquitto_threaded_set(true) makes
 * publishes from other threads queue their packets for this thread (which
 * owns the socket and the SSL object) instead of writing themselves.
 *
 * The session is persistent (clean start off, a session expiry): while
 * fleetd is down or slow, the broker queues the shared subscription's
 * messages for it (the shipped broker configuration raises the queue
 * limits, packaging/mosquitto/). A full ingest queue blocks this thread: it
 * stops reading, TCP pushes back, the broker keeps the messages. Nothing is
 * dropped here.
 */
#define _GNU_SOURCE
#include "fleetd.h"

#include "keel/crypto.h"
#include "keel/link.h"
#include "keel/tls.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HOST_MAX 256
#define VERIFY_DEPTH 4

/* ---- the queue ------------------------------------------------------------------- */

struct fleetd_queue {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    fleetd_item_t *head, *tail;
    size_t n, cap;
    size_t want; /* a push wakes the ingest thread once this many are queued */
    bool closed;
};

#define LINGER_STEP_MS 10

static void deadline_in(struct timespec *t, unsigned ms)
{
    clock_gettime(CLOCK_REALTIME, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

keel_status_t fleetd_queue_new(size_t cap, fleetd_queue_t **out)
{
    fleetd_queue_t *q = calloc(1, sizeof *q);
    if (q == NULL || cap == 0) {
        free(q);
        return keel_errorf(cap == 0 ? KEEL_ERR_ARG : KEEL_ERR_NOMEM, "queue: cannot create");
    }
    q->cap = cap;
    q->want = 1;
    if (pthread_mutex_init(&q->mu, NULL) != 0 || pthread_cond_init(&q->not_empty, NULL) != 0 ||
        pthread_cond_init(&q->not_full, NULL) != 0) {
        free(q);
        return keel_errorf(KEEL_ERR_NOMEM, "queue: cannot create its lock");
    }
    *out = q;
    return KEEL_OK;
}

void fleetd_item_free_list(fleetd_item_t *it)
{
    while (it != NULL) {
        fleetd_item_t *next = it->next;
        free(it);
        it = next;
    }
}

void fleetd_queue_free(fleetd_queue_t *q)
{
    if (q == NULL)
        return;
    fleetd_item_free_list(q->head);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

bool fleetd_queue_push(fleetd_queue_t *q, fleetd_item_t *it)
{
    it->next = NULL;
    pthread_mutex_lock(&q->mu);
    while (q->n >= q->cap && !q->closed)
        pthread_cond_wait(&q->not_full, &q->mu);
    if (q->closed) {
        pthread_mutex_unlock(&q->mu);
        free(it);
        return false;
    }
    if (q->tail != NULL)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->n++;
    if (q->n >= q->want)
        pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return true;
}

fleetd_item_t *fleetd_queue_pop(fleetd_queue_t *q, size_t max, unsigned wait_ms, unsigned linger_ms, size_t *n)
{
    *n = 0;
    pthread_mutex_lock(&q->mu);
    struct timespec until;
    if (q->n == 0 && !q->closed && wait_ms > 0) {
        deadline_in(&until, wait_ms);
        while (q->n == 0 && !q->closed)
            if (pthread_cond_timedwait(&q->not_empty, &q->mu, &until) == ETIMEDOUT)
                break;
    }
    if (q->n > 0 && q->n < max && !q->closed && linger_ms > 0) {
        /* The pushes wake us only when the batch is full; we look every
         * LINGER_STEP_MS, and a step without a new message ends the wait
         * (the stream paused: no reason to hold what came). */
        q->want = max < q->cap ? max : q->cap;
        for (unsigned waited = 0; waited < linger_ms && q->n < q->want && !q->closed; waited += LINGER_STEP_MS) {
            size_t before = q->n;
            deadline_in(&until, LINGER_STEP_MS);
            while (q->n < q->want && !q->closed)
                if (pthread_cond_timedwait(&q->not_empty, &q->mu, &until) == ETIMEDOUT)
                    break;
            if (q->n == before)
                break;
        }
        q->want = 1;
    }
    fleetd_item_t *first = q->head, *last = NULL;
    size_t k = 0;
    for (fleetd_item_t *it = q->head; it != NULL && k < max; it = it->next) {
        last = it;
        k++;
    }
    if (k > 0) {
        q->head = last->next;
        if (q->head == NULL)
            q->tail = NULL;
        last->next = NULL;
        q->n -= k;
        pthread_cond_broadcast(&q->not_full);
    } else {
        first = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    *n = k;
    return first;
}

void fleetd_queue_close(fleetd_queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
}

size_t fleetd_queue_depth(fleetd_queue_t *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->n;
    pthread_mutex_unlock(&q->mu);
    return n;
}

/* ---- keys --------------------------------------------------------------------------- */

keel_status_t fleetd_load_key(const char *path, EVP_PKEY **out)
{
    enum { KEY_FILE_MAX = 64 * 1024 };
    int fd = -1;
    keel_status_t st = keel_file_open_private(path, &fd);
    if (st != KEEL_OK)
        return keel_errorf(st, "%s: %s", path, keel_error_message());
    unsigned char *buf = malloc(KEY_FILE_MAX);
    size_t len = 0;
    while (buf != NULL && len < KEY_FILE_MAX) {
        ssize_t n = read(fd, buf + len, KEY_FILE_MAX - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n < 0)
                st = keel_errorf(KEEL_ERR_IO, "read %s: %s", path, strerror(errno));
            break;
        }
        len += (size_t)n;
    }
    close(fd);
    if (buf == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    if (st == KEEL_OK && len >= KEY_FILE_MAX)
        st = keel_errorf(KEEL_ERR_TOO_LARGE, "%s: over %d bytes", path, KEY_FILE_MAX);
    EVP_PKEY *k = NULL;
    if (st == KEEL_OK) {
        BIO *bio = BIO_new_mem_buf(buf, (int)len);
        k = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, keel_pem_no_password, NULL) : NULL;
        BIO_free(bio);
        if (k == NULL)
            st = keel_crypto_error(KEEL_ERR_CONFIG, "the key file holds no usable (unencrypted PEM) private key");
    }
    keel_wipe(buf, KEY_FILE_MAX);
    free(buf);
    if (st != KEEL_OK)
        return st;
    *out = k;
    return KEEL_OK;
}

/* A uniform draw in [0, 1) from the CSPRNG (53 bits), for the reconnect jitter. */
static double random_unit(void)
{
    uint64_t x;
    keel_random_bytes(&x, sizeof x);
    return (double)(x >> 11) * 0x1.0p-53;
}

/* ---- the connection ------------------------------------------------------------------- */

struct fleetd_consumer {
    fleetd_consumer_config_t c;
    char host[HOST_MAX];
    int port;
    char client_id[KEEL_FLEET_ID_MAX + 1];
    char subs[3][FLEETD_TOPIC_MAX];
    SSL_CTX *ssl;
    struct mosquitto *mosq;
    mosquitto_property *props;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    atomic_bool connected_once;
    fleetd_consumer_stats_t stats;
};

static void cb_connect(struct mosquitto *m, void *arg, int rc, int flags, const mosquitto_property *p)
{
    (void)flags, (void)p;
    fleetd_consumer_t *c = arg;
    if (rc != 0) {
        keel_log(KEEL_LOG_WARN, "fleet: the broker refused our connection: %s", mosquitto_reason_string(rc));
        return;
    }
    char *subs[3] = {c->subs[0], c->subs[1], c->subs[2]};
    /* The subscriptions are part of the persistent session; sending them
     * again after every CONNACK costs nothing and heals a session the
     * broker lost (a restart without persistence). */
    int src = mosquitto_subscribe_multiple(m, NULL, 3, subs, 1, MQTT_SUB_OPT_SEND_RETAIN_NEVER, NULL);
    if (src != MOSQ_ERR_SUCCESS)
        keel_log(KEEL_LOG_ERROR, "fleet: subscribe: %s", mosquitto_strerror(src));
    atomic_store(&c->stats.online, true);
    atomic_fetch_add(&c->stats.connects, 1);
    atomic_store(&c->connected_once, true);
    keel_log(KEEL_LOG_INFO, "fleet: connected to the broker %s:%d as %s (session %s)", c->host, c->port,
             c->client_id, (flags & 1) ? "resumed" : "new");
}

static void cb_disconnect(struct mosquitto *m, void *arg, int rc, const mosquitto_property *p)
{
    (void)m, (void)p;
    fleetd_consumer_t *c = arg;
    if (atomic_exchange(&c->stats.online, false)) {
        atomic_fetch_add(&c->stats.disconnects, 1);
        if (!atomic_load(&c->stop))
            keel_log(KEEL_LOG_WARN, "fleet: lost the broker (%s)", mosquitto_reason_string(rc));
    }
}

static void cb_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                       const mosquitto_property *p)
{
    (void)m, (void)p;
    fleetd_consumer_t *c = arg;
    size_t tl = msg->topic != NULL ? strlen(msg->topic) : 0;
    size_t len = msg->payloadlen > 0 ? (size_t)msg->payloadlen : 0;
    atomic_fetch_add(&c->stats.received, 1);
    if (tl == 0 || tl >= FLEETD_TOPIC_MAX || len > FLEETD_PAYLOAD_MAX) {
        atomic_fetch_add(&c->stats.oversized, 1);
        keel_log(KEEL_LOG_WARN, "fleet: a message of %zu bytes on a topic of %zu bytes is over the caps; dropped", len,
                 tl);
        return;
    }
    fleetd_item_t *it = malloc(sizeof *it + tl + 1 + len + 1);
    if (it == NULL) {
        keel_log(KEEL_LOG_ERROR, "fleet: out of memory; a message is lost (its gap will show)");
        return;
    }
    it->next = NULL;
    it->received = (int64_t)time(NULL);
    it->retained = msg->retain;
    it->topic_len = tl;
    it->len = len;
    it->topic = (char *)(it + 1);
    it->payload = it->topic + tl + 1;
    memcpy(it->topic, msg->topic, tl + 1);
    if (len > 0)
        memcpy(it->payload, msg->payload, len);
    it->payload[len] = '\0';
    fleetd_queue_push(c->c.queue, it); /* blocks while the ingest is behind */
}

static void cb_log(struct mosquitto *m, void *arg, int level, const char *text)
{
    (void)m, (void)arg;
    if (level == MOSQ_LOG_ERR || level == MOSQ_LOG_WARNING)
        keel_log(KEEL_LOG_DEBUG, "fleet: libmosquitto: %s", text);
}

static void sleep_interruptible(fleetd_consumer_t *c, double seconds)
{
    /* In tenths counted as an integer: a float counter drifts (CERT FLP30-C). The delay is capped by the backoff. */
    for (long tenths = (long)(seconds * 10.0 + 0.5); tenths > 0 && !atomic_load(&c->stop); tenths--) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* One turn of libmosquitto's loop. With read-ahead, records the socket
 * delivered may wait inside OpenSSL where select() cannot see them, and
 * libmosquitto reads one packet per turn: read them first. It says "no
 * whole packet left" the way its own loop_read does, with EAGAIN (only part
 * of a record is here: the socket's turn). */
static int loop_once(fleetd_consumer_t *c)
{
    SSL *ssl = mosquitto_ssl_get(c->mosq);
    for (unsigned k = 0; ssl != NULL && SSL_has_pending(ssl) && k < 10000; k++) {
        errno = 0;
        int rc = mosquitto_loop_read(c->mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS)
            return rc;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        ssl = mosquitto_ssl_get(c->mosq);
    }
    return mosquitto_loop(c->mosq, 200, 1);
}

static void *consumer_main(void *arg)
{
    fleetd_consumer_t *c = arg;
    keel_backoff_t b = {.base_s = 1, .cap_s = 60, .first_s = 0, .stable_s = 60};
    unsigned attempt = 0;
    bool first = true;
    while (!atomic_load(&c->stop)) {
        int rc = first ? mosquitto_connect_bind_v5(c->mosq, c->host, c->port, (int)c->c.keepalive_s, NULL, c->props)
                       : mosquitto_reconnect(c->mosq);
        first = false;
        if (rc == MOSQ_ERR_SUCCESS) {
            time_t up = time(NULL);
            while (!atomic_load(&c->stop) && (rc = loop_once(c)) == MOSQ_ERR_SUCCESS)
                ;
            if (time(NULL) - up >= (time_t)b.stable_s)
                attempt = 0;
        }
        if (atomic_load(&c->stop))
            break;
        if (atomic_exchange(&c->stats.online, false))
            atomic_fetch_add(&c->stats.disconnects, 1);
        double d = keel_backoff_delay(&b, attempt, random_unit());
        if (attempt < 30)
            attempt++;
        keel_log(KEEL_LOG_DEBUG, "fleet: broker %s:%d: %s; next attempt in %.1f s", c->host, c->port,
                 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc), d);
        sleep_interruptible(c, d);
    }
    return NULL;
}

static keel_status_t client_ctx(fleetd_consumer_t *c)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return keel_crypto_error(KEEL_ERR_CRYPTO, "SSL_CTX_new");
    c->ssl = ctx;
    keel_status_t st = keel_tls_policy(ctx);
    if (st == KEEL_OK)
        st = keel_tls_trust_root(ctx, c->c.ca_path);
    if (st == KEEL_OK)
        st = keel_tls_expect_server(ctx, c->c.server_name != NULL ? c->c.server_name : c->host);
    EVP_PKEY *key = NULL;
    if (st == KEEL_OK)
        st = fleetd_load_key(c->c.key_path, &key);
    if (st == KEEL_OK)
        st = keel_tls_use_identity_key(ctx, key, c->c.cert_path, c->c.chain_path);
    EVP_PKEY_free(key);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_verify_depth(ctx, VERIFY_DEPTH);
    /* One read(2) takes whatever the broker has sent, not a record header
     * and then its body: two system calls per message fewer (loop_once). */
    SSL_CTX_set_read_ahead(ctx, 1);
    return st;
}

static keel_status_t mosq_error(int rc, const char *what)
{
    return keel_errorf(KEEL_ERR_CONFIG, "fleet: %s: %s", what, mosquitto_strerror(rc));
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static void lib_init(void)
{
    mosquitto_lib_init();
}

keel_status_t fleetd_consumer_start(const fleetd_consumer_config_t *cfg, fleetd_consumer_t **out)
{
    if (cfg == NULL || cfg->broker == NULL || cfg->client_id == NULL || cfg->share_group == NULL ||
        cfg->cert_path == NULL || cfg->chain_path == NULL || cfg->key_path == NULL || cfg->ca_path == NULL ||
        cfg->queue == NULL)
        return keel_errorf(KEEL_ERR_ARG, "fleet: incomplete broker settings");
    pthread_once(&lib_once, lib_init);
    fleetd_consumer_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    c->c = *cfg;
    keel_status_t st = keel_link_split_broker(cfg->broker, c->host, sizeof c->host, &c->port);
    if (st == KEEL_OK)
        st = keel_snprintf(c->client_id, sizeof c->client_id, "%s", cfg->client_id);
    bool shared = strcmp(cfg->share_group, "none") != 0;
    for (int i = 0; st == KEEL_OK && i < 3; i++)
        st = keel_snprintf(c->subs[i], sizeof c->subs[i], "%s%s%s" FLEETD_TOPIC_ROOT "+/%s", shared ? "$share/" : "",
                           shared ? cfg->share_group : "", shared ? "/" : "",
                           i == 0 ? "telemetry" : i == 1 ? "events" : "state");
    if (st == KEEL_OK)
        st = client_ctx(c);
    if (st == KEEL_OK) {
        /* clean start off: the broker keeps our session (and queues for it) while we are away */
        c->mosq = mosquitto_new(c->client_id, false, c);
        if (c->mosq == NULL)
            st = keel_errorf(KEEL_ERR_NOMEM, "fleet: mosquitto_new: %s", strerror(errno));
    }
    int rc = MOSQ_ERR_SUCCESS;
    if (st == KEEL_OK &&
        ((rc = mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5)) != MOSQ_ERR_SUCCESS ||
         (rc = mosquitto_int_option(c->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0)) != MOSQ_ERR_SUCCESS ||
         (rc = mosquitto_void_option(c->mosq, MOSQ_OPT_SSL_CTX, c->ssl)) != MOSQ_ERR_SUCCESS ||
         (rc = mosquitto_threaded_set(c->mosq, true)) != MOSQ_ERR_SUCCESS))
        st = mosq_error(rc, "client options");
    if (st == KEEL_OK &&
        ((rc = mosquitto_property_add_int32(&c->props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, cfg->session_expiry_s)) !=
             MOSQ_ERR_SUCCESS ||
         (rc = mosquitto_property_add_int32(&c->props, MQTT_PROP_MAXIMUM_PACKET_SIZE,
                                            FLEETD_PAYLOAD_MAX + FLEETD_TOPIC_MAX + 1024u)) != MOSQ_ERR_SUCCESS ||
         (rc = mosquitto_property_add_int16(&c->props, MQTT_PROP_RECEIVE_MAXIMUM,
                                            (uint16_t)(cfg->receive_max > 0 && cfg->receive_max < 65535
                                                           ? cfg->receive_max
                                                           : 1000))) != MOSQ_ERR_SUCCESS))
        st = mosq_error(rc, "connect properties");
    if (st == KEEL_OK) {
        mosquitto_connect_v5_callback_set(c->mosq, cb_connect);
        mosquitto_disconnect_v5_callback_set(c->mosq, cb_disconnect);
        mosquitto_message_v5_callback_set(c->mosq, cb_message);
        /* Only when it would be written: with a callback set, libmosquitto
         * formats a line for every packet (4 % of the MQTT thread's CPU). */
        if (keel_log_enabled(KEEL_LOG_DEBUG))
            mosquitto_log_callback_set(c->mosq, cb_log);
        if (pthread_create(&c->thread, NULL, consumer_main, c) != 0)
            st = keel_errorf(KEEL_ERR_NOMEM, "fleet: cannot start the MQTT thread");
        else
            c->thread_started = true;
    }
    if (st != KEEL_OK) {
        fleetd_consumer_free(c);
        return st;
    }
    *out = c;
    return KEEL_OK;
}

keel_status_t fleetd_consumer_publish(fleetd_consumer_t *c, const char *topic, const char *text, size_t len)
{
    if (c == NULL || topic == NULL || text == NULL || len > FLEETD_PAYLOAD_MAX)
        return keel_errorf(KEEL_ERR_ARG, "fleet: publish: bad argument");
    int rc = mosquitto_publish_v5(c->mosq, NULL, topic, (int)len, text, 1, false, NULL);
    if (rc != MOSQ_ERR_SUCCESS) {
        atomic_fetch_add(&c->stats.publish_failed, 1);
        return keel_errorf(KEEL_ERR_IO, "fleet: publish to %s: %s", topic, mosquitto_strerror(rc));
    }
    atomic_fetch_add(&c->stats.published, 1);
    return KEEL_OK;
}

keel_status_t fleetd_consumer_command(fleetd_consumer_t *c, const char *device, const char *name,
                                      const json_t *payload)
{
    char topic[FLEETD_TOPIC_MAX];
    keel_status_t st = keel_snprintf(topic, sizeof topic, FLEETD_TOPIC_ROOT "%s/cmd/%s", device, name);
    if (st != KEEL_OK)
        return st;
    char *text = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL)
        return keel_errorf(KEEL_ERR_NOMEM, "out of memory");
    st = fleetd_consumer_publish(c, topic, text, strlen(text));
    free(text);
    return st;
}

const fleetd_consumer_stats_t *fleetd_consumer_stats(const fleetd_consumer_t *c)
{
    return &c->stats;
}

void fleetd_consumer_stop(fleetd_consumer_t *c)
{
    if (c == NULL || !c->thread_started)
        return;
    atomic_store(&c->stop, true);
    /* A normal DISCONNECT keeps the session (and its queue) at the broker. */
    if (c->mosq != NULL)
        mosquitto_disconnect_v5(c->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
    pthread_join(c->thread, NULL);
    c->thread_started = false;
}

void fleetd_consumer_free(fleetd_consumer_t *c)
{
    if (c == NULL)
        return;
    fleetd_consumer_stop(c);
    if (c->mosq != NULL)
        mosquitto_destroy(c->mosq);
    mosquitto_property_free_all(&c->props);
    SSL_CTX_free(c->ssl);
    free(c);
}

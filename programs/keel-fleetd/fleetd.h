/*
 * keel-fleetd's parts, wired by main.c. One libevent loop on the main thread
 * (the two HTTPS listeners, campaign and retention timers), one MQTT thread
 * (libmosquitto's), one ingest thread. Each thread that touches the store
 * has its own database handle.
 *
 *   broker --$share/<group>/keel/v1/+/...--> consumer (MQTT thread) --queue--> ingest (thread, batches)
 *        ingest: dedupe (device, seq), gaps, anomaly detectors, boot/update/erase events --> store
 *   main loop: admin API (token), update server (device certificates), campaign tick, retention
 *   commands to devices (keel/v1/<id>/cmd/keel/...) go out through the consumer's connection.
 */
#ifndef KEEL_FLEETD_H
#define KEEL_FLEETD_H

#include "keel/api.h"
#include "keel/base.h"
#include "keel/config.h"
#include "keel/fleet_anomaly.h"
#include "keel/fleet_db.h"
#include "keel/fleet_store.h"

#include <jansson.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct event_base;

/* The topics keel-fleetd reads and writes (docs/fleet-protocol.md). */
#define FLEETD_TOPIC_ROOT "keel/v1/"
#define FLEETD_ALERT_TOPIC "keel/fleet/alerts"
#define FLEETD_TOPIC_MAX 256
#define FLEETD_PAYLOAD_MAX (64u * 1024u) /* a device message we accept at all */

/* ---- the MQTT connection (consumer.c) ------------------------------------------------- */

typedef struct fleetd_consumer fleetd_consumer_t;

/* One message from a device, as the consumer queued it. */
typedef struct fleetd_item {
    struct fleetd_item *next;
    size_t order;      /* position in its batch (the ingest's) */
    int64_t received;  /* Unix seconds */
    bool retained;
    size_t topic_len, len;
    char *topic;       /* NUL-terminated */
    char *payload;     /* NUL-terminated copy (len bytes before it) */
} fleetd_item_t;

/* A bounded queue between the MQTT thread and the ingest thread. A full
 * queue blocks the MQTT thread (it stops reading; the broker keeps the
 * messages in the session's queue), never drops. */
typedef struct fleetd_queue fleetd_queue_t;
keel_status_t fleetd_queue_new(size_t cap, fleetd_queue_t **out) KEEL_MUST_CHECK;
void fleetd_queue_free(fleetd_queue_t *q);
/* Blocks while full; false once the queue is closed (the item is freed). */
bool fleetd_queue_push(fleetd_queue_t *q, fleetd_item_t *it);
/* Up to max items (a list), waiting up to wait_ms for the first, then up
 * to linger_ms more for max (a full batch costs the store less per message
 * than a trickle of small ones) unless 10 ms pass without a new one; NULL
 * when closed and empty, or on timeout. */
fleetd_item_t *fleetd_queue_pop(fleetd_queue_t *q, size_t max, unsigned wait_ms, unsigned linger_ms, size_t *n);
void fleetd_queue_close(fleetd_queue_t *q);
size_t fleetd_queue_depth(fleetd_queue_t *q);
void fleetd_item_free_list(fleetd_item_t *it);

typedef struct {
    const char *broker;       /* host:port */
    const char *server_name;  /* the broker certificate's name (NULL: the host) */
    const char *client_id;    /* stable: the broker keeps this session while we are away */
    const char *share_group;  /* $share/<group>/...: instances with one group split the stream;
                               * "none": plain subscriptions (one instance; survives broker restarts) */
    const char *cert_path, *chain_path, *key_path; /* our service identity (service CA, clientAuth) */
    const char *ca_path;      /* the service root: the broker's certificate must chain to it */
    unsigned keepalive_s;
    unsigned session_expiry_s;
    unsigned receive_max;     /* QoS 1 messages the broker may have in flight to us */
    fleetd_queue_t *queue;
} fleetd_consumer_config_t;

typedef struct {
    atomic_uint_fast64_t received, oversized, connects, disconnects, published, publish_failed;
    atomic_bool online;
} fleetd_consumer_stats_t;

keel_status_t fleetd_consumer_start(const fleetd_consumer_config_t *c, fleetd_consumer_t **out) KEEL_MUST_CHECK;
/* Publishes a command to one device (QoS 1, not retained); thread-safe.
 * name: "keel/update", "keel/erase-receipt", "keel/check". */
keel_status_t fleetd_consumer_command(fleetd_consumer_t *c, const char *device, const char *name,
                                      const json_t *payload) KEEL_MUST_CHECK;
/* Publishes on FLEETD_ALERT_TOPIC (QoS 1); thread-safe. */
keel_status_t fleetd_consumer_publish(fleetd_consumer_t *c, const char *topic, const char *text,
                                      size_t len) KEEL_MUST_CHECK;
const fleetd_consumer_stats_t *fleetd_consumer_stats(const fleetd_consumer_t *c);
void fleetd_consumer_stop(fleetd_consumer_t *c); /* DISCONNECT, join the thread */
void fleetd_consumer_free(fleetd_consumer_t *c);

/* ---- ingest (ingest.c) --------------------------------------------------------------------- */

typedef struct fleetd_ingest fleetd_ingest_t;

typedef struct {
    const char *db_url;
    fleetd_queue_t *queue;
    fleetd_consumer_t *consumer; /* for receipts and alerts */
    keel_fleet_anomaly_config_t anomaly;
    unsigned batch;              /* messages per transaction */
    unsigned gap_grace_s;        /* a gap still open after this is settled (explained or lost) */
} fleetd_ingest_config_t;

typedef struct {
    atomic_uint_fast64_t stored, duplicates, unknown, malformed, batches, alerts, gaps_lost, retries;
    atomic_int_fast64_t last_commit;    /* Unix seconds */
    atomic_int_fast64_t last_commit_ms; /* the same in milliseconds (make bench times the ingest by it) */
    atomic_int_fast64_t turned_ms;      /* keel_now() of the thread's last turn, in ms (the watchdog's check) */
} fleetd_ingest_stats_t;

keel_status_t fleetd_ingest_start(const fleetd_ingest_config_t *c, fleetd_ingest_t **out) KEEL_MUST_CHECK;
const fleetd_ingest_stats_t *fleetd_ingest_stats(const fleetd_ingest_t *in);
/* Drains what is queued, commits, joins the thread. */
void fleetd_ingest_stop(fleetd_ingest_t *in);
void fleetd_ingest_free(fleetd_ingest_t *in);

/* Envelope parsing (pure; tests/unit/test_fleetd_envelope.c,
 * tests/fuzz/fuzz_fleet_envelope.c): `payload` from topic
 * keel/v1/<id>/<leaf>. KEEL_ERR_FORMAT with the reason. m->body is the
 * device's own text of "data" (body_len bytes, no NUL, in `payload`),
 * except when a key is written with escapes: then it is jansson's compact
 * dump, in *body_text (freed by the caller; NULL otherwise). m->device is
 * `device` or in *hold, m->kind a literal or in *hold (*hold freed by the
 * caller with json_decref; NULL when jansson was not needed).
 * fleetd_envelope_parse takes a telemetry envelope of the common form
 * without jansson (envelope.c says which form) and gives every other
 * payload to fleetd_envelope_parse_json, which decides: both answer the
 * same for every payload. */
typedef enum { FLEETD_LEAF_TELEMETRY, FLEETD_LEAF_EVENTS, FLEETD_LEAF_STATE } fleetd_leaf_t;
/* True only for text jansson surely accepts as one object without
 * duplicate keys (a conservative subset: see envelope.c); false decides
 * nothing. Pure, no allocation. */
bool fleetd_json_object_quick(const char *text, size_t len);
keel_status_t fleetd_topic_parse(const char *topic, char device[KEEL_FLEET_ID_MAX + 1], fleetd_leaf_t *leaf) KEEL_MUST_CHECK;
keel_status_t fleetd_envelope_parse(const char *device, fleetd_leaf_t leaf, const char *payload, size_t len,
                                    int64_t received, keel_fleet_msg_t *m, json_t **hold,
                                    char **body_text) KEEL_MUST_CHECK;
keel_status_t fleetd_envelope_parse_json(const char *device, fleetd_leaf_t leaf, const char *payload, size_t len,
                                         int64_t received, keel_fleet_msg_t *m, json_t **hold,
                                         char **body_text) KEEL_MUST_CHECK;

/* ---- HTTPS listeners (https.c) ------------------------------------------------------------- */

typedef struct fleetd_https fleetd_https_t;
struct evhttp_request;
typedef void (*fleetd_https_fn)(void *arg, struct evhttp_request *req, SSL *ssl);

typedef struct {
    struct event_base *base;
    const char *name;        /* "admin" or "update server", for logs */
    const char *listen;      /* host:port */
    SSL_CTX *ctx;            /* a reference is taken */
    unsigned max_connections;
    unsigned request_timeout_s;
    size_t body_max;
    fleetd_https_fn handler;
    void *arg;
} fleetd_https_config_t;

keel_status_t fleetd_https_start(const fleetd_https_config_t *c, fleetd_https_t **out) KEEL_MUST_CHECK;
/* The bound port (for listen addresses with port 0). */
unsigned fleetd_https_port(const fleetd_https_t *h);
void fleetd_https_free(fleetd_https_t *h);
/* Calls fn(arg) when the request's connection closes (NULL clears it): for
 * work that must end with the connection, e.g. a bundle being streamed. */
void fleetd_https_on_close(struct evhttp_request *req, void (*fn)(void *arg), void *arg);
/* Replies with a JSON body (steals `j`; NULL = no body). */
void fleetd_reply_json(struct evhttp_request *req, int code, json_t *j);
void fleetd_reply_error(struct evhttp_request *req, int code, const char *error, const char *detail);

/* Server contexts: our identity (a PEM key file, 0600), the policy of keel/tls.h.
 * With client_ca (PEM chain: root + issuing) a client certificate is required,
 * verified to it (and to crl_path when set). */
keel_status_t fleetd_server_ctx(const char *cert, const char *chain, const char *key, const char *client_ca,
                                const char *crl_path, SSL_CTX **out) KEEL_MUST_CHECK;
/* Reloads the CRL of a context made with client_ca (after a revocation). */
keel_status_t fleetd_server_ctx_crl(SSL_CTX *ctx, const char *client_ca, const char *crl_path) KEEL_MUST_CHECK;
/* A PEM private key file: must be a regular file no one else can read. */
keel_status_t fleetd_load_key(const char *path, EVP_PKEY **out) KEEL_MUST_CHECK;

/* schema.c: the schema of keel-fleetd.conf, [anomaly] included (malloc'ed, n entries). */
keel_cfg_key_t *fleetd_config_schema(size_t *n);

/* ---- the service (main.c) ----------------------------------------------------------------- */

typedef struct fleetd {
    struct event_base *base;
    keel_config_t *cfg;
    const char *config_path;
    keel_fleet_db_t *db;              /* the main thread's handle */
    char db_url[KEEL_FLEET_DB_URL_MAX + 1];
    fleetd_queue_t *queue;
    fleetd_consumer_t *consumer;      /* NULL without [broker] */
    fleetd_ingest_t *ingest;
    SSL_CTX *dist_ctx;                /* the update server's context (its CRL is reloaded on revoke) */
    fleetd_https_t *dist, *admin;
    struct event *tick, *retention;
    char bundle_dir[KEEL_PATH_MAX];   /* campaigns' bundles, owned by fleetd (0700) */
    char device_ca[KEEL_PATH_MAX];    /* [update_server] device_ca */
    char crl_path[KEEL_PATH_MAX];     /* [pki] crl: the device CA's CRL fleetd writes ("" = none) */
    char factory_dir[KEEL_PATH_MAX];  /* [pki] factory: signs that CRL ("" = revocation only in the registry) */
    char service_crl[KEEL_PATH_MAX];  /* [pki] service_crl: the service CA's CRL, written beside the device CA's */
    char release_root[KEEL_PATH_MAX]; /* [trust] release_root: bundles must verify to it */
    char tokens_path[KEEL_PATH_MAX];  /* [admin] tokens */
    int64_t started;
    /* SIGHUP re-reads config_path with the same overrides against the same schema (main.c). */
    char *const *overrides;
    size_t n_overrides;
    const keel_cfg_key_t *schema;
    size_t n_schema;
    keel_watchdog_t *watchdog;        /* NULL unless systemd asked for one (WatchdogSec=) */
} fleetd_t;

/* campaign.c: staged rollout. Selection: the first ceil(n x percent / 100)
 * of the model's non-revoked devices in the order of SHA-256(campaign id ":"
 * device id); two instances agree, and a device once selected stays so. */
/* Notifies newly selected devices, halts a campaign whose failure rate
 * passed its threshold, marks finished ones done. Runs on the main loop
 * every [campaign] tick seconds and right after a create or resume. */
void fleetd_campaign_tick(fleetd_t *f);
/* Creates a campaign from a signed bundle already written under bundle_dir:
 * version, security version and models come from its verified manifest.
 * `model` must be one of the bundle's models. */
keel_status_t fleetd_campaign_create(fleetd_t *f, const char *bundle_path, const char *model, unsigned percent,
                                     bool security, unsigned fail_permille, keel_fleet_campaign_t *out) KEEL_MUST_CHECK;

/* dist.c: the update server (devices, client certificates). */
void fleetd_dist_handle(void *arg, struct evhttp_request *req, SSL *ssl);

/* admin.c: the operator's API and dashboard (tokens). */
void fleetd_admin_handle(void *arg, struct evhttp_request *req, SSL *ssl);

/* tokens.c: `keel-fleetd token add NAME [--read-only]` (argv without --config),
 * on the tokens file `tokens_path`. Returns the exit status. */
int fleetd_token_cmd(int argc, char **argv, const char *tokens_path);

/* revoke.c: registry + CRL (signed with the factory's device issuing CA),
 * written atomically to crl_path, reloaded by the update server; the broker
 * is told as [pki] broker_reload says. */
keel_status_t fleetd_revoke(fleetd_t *f, const char *device) KEEL_MUST_CHECK;
/* The CRL expires [pki] crl_days after it was signed, and with it every
 * device's access (broker and update server): re-signed (the same revoked
 * devices) once it is half that old, and when it is missing. Runs with
 * retention (at start and every [retention] interval). */
void fleetd_crl_refresh(fleetd_t *f);

#endif

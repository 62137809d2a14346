/*
 * keel/link.h - the device's cloud link (5.1-2A, 5.4-4, 5.5-1, 5.5-6, 5.5-7,
 * 5.8-1, 5.8-2, 5.9-1..3): MQTT v5 over mutual TLS with libmosquitto, driven
 * by keeld's libevent loop.
 *
 * TLS: the SSL_CTX is ours (MOSQ_OPT_SSL_CTX, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS
 * = 0): client key from the keystore (it never leaves it), trust = the
 * service root only (never the system store), TLS 1.2 ECDHE+AEAD or 1.3, and
 * the broker's name checked with X509_VERIFY_PARAM_set1_host (libmosquitto
 * checks nothing when given a context) and sent as SNI (none for an
 * address); the policy and identity loading are keel/tls.h's, shared with
 * the local API. A TLS failure shows up on the first
 * read after connect; it counts as an authentication failure of the broker.
 * There is no plaintext mode.
 *
 * Topics: out keel/v1/<id>/telemetry, .../events (QoS 1, from the outbox),
 * .../state (QoS 1, retained); in keel/v1/<id>/cmd/# (QoS 1).
 * A PUBACK with reason code >= 128 is a refusal, decided per code: 135 not
 * authorized, 144 topic name invalid, 149 packet too large and 153 payload
 * format invalid are final (the message is logged, counted as refused and
 * removed from the outbox: the same message would be refused again); any
 * other (151 quota exceeded, 137 server busy, 128, 131, 145, unknown codes)
 * is transient: the message stays in the outbox, sending pauses for a
 * backoff window and resumes from the oldest message (counted as deferred).
 *
 * Commands: only live ones (retained messages are neither requested nor
 * accepted), only after CONNACK, names checked (levels of [A-Za-z0-9_.-]
 * separated by '/', at most 64 bytes, no empty, "." or ".." level),
 * payloads up to 64 KiB; CONNECT announces a Maximum Packet Size so that the
 * broker drops larger ones instead of sending them. QoS 1: a command can
 * arrive twice; the product must treat commands as idempotent.
 *
 * The process must ignore SIGPIPE (keeld does): OpenSSL writes to the socket
 * with write(), and a broker that resets the connection mid-write would
 * otherwise kill the process.
 *
 * Reconnects: exponential backoff with full jitter after every disconnect,
 * including a kick right after CONNACK (the attempt counter is only reset
 * after the connection stayed up `stable_s`); the first connect after start
 * waits a random time in [0, first_s] so a fleet that powers up together
 * does not arrive together. See docs/internals/link.md.
 */
#ifndef KEEL_LINK_H
#define KEEL_LINK_H

#include "keel/base.h"
#include "keel/keystore.h"
#include "keel/outbox.h"

struct event_base;

/* Reconnect timing ([link] backoff_base, backoff_cap, first_connect, stable). */
typedef struct {
    double base_s;   /* first retry window */
    double cap_s;    /* largest window */
    double first_s;  /* window of the first connect after start */
    double stable_s; /* connected this long = the attempt counter resets */
} keel_backoff_t;

/*
 * The delay before reconnect attempt `attempt` (0 = the first retry after a
 * disconnect), from `u` in [0, 1): uniform in [0, base * 2^attempt) while
 * that window is below the cap (full jitter), uniform in [cap/2, cap] once
 * it has reached it (so a fleet returning from a long outage arrives at most
 * ~1.4x its mean rate, not 2x). Pure, so the reconnect-storm simulation runs
 * the real code.
 */
double keel_backoff_delay(const keel_backoff_t *b, unsigned attempt, double u);

typedef struct keel_link keel_link_t;

/* Longest broker host name. */
#define KEEL_LINK_HOST_MAX 253
/* "host:port" or "[v6]:port" into host (cap bytes) and port (1..65535).
 * Host names are letters, digits, '-' and '.'; KEEL_ERR_CONFIG otherwise.
 * (Also keel-fleetd's parser for its broker and listen addresses.) */
keel_status_t keel_link_split_broker(const char *broker, char *host, size_t cap, int *port) KEEL_MUST_CHECK;

typedef enum {
    KEEL_LINK_OFFLINE,    /* waiting for the next attempt */
    KEEL_LINK_CONNECTING, /* TCP/TLS/MQTT handshake in progress */
    KEEL_LINK_ONLINE,     /* CONNACK received */
    KEEL_LINK_STOPPED,
} keel_link_state_t;

typedef struct {
    keel_link_state_t state;
    unsigned attempt;          /* consecutive failed attempts */
    double next_attempt_in;    /* seconds, when OFFLINE */
    uint64_t connects;         /* successful CONNACKs since start */
    uint64_t disconnects;
    uint64_t auth_failures;    /* TLS or CONNACK refusals */
    uint64_t published;        /* PUBACKed with success */
    uint64_t refused;          /* PUBACKed with a final refusal (135, 144, 149, 153): dropped */
    uint64_t deferred;         /* PUBACKed with a transient refusal (151, 128, ...): kept, resent */
    int last_reason;           /* last MQTT reason code seen on a refusal/disconnect */
    char last_error[KEEL_ERROR_MAX];
} keel_link_status_t;

typedef struct {
    struct event_base *base;
    const char *device_id;  /* MQTT client id and topic level */
    const char *broker;     /* "host:port" or "[v6]:port" */
    const char *server_name; /* name the broker's certificate must carry (NULL: the broker host) */
    keel_keystore_t *ks;
    const char *key_label;  /* the identity key */
    const char *cert_path;  /* the device certificate */
    const char *chain_path; /* its issuing chain (sent to the broker) */
    const char *ca_path;    /* the service root: the only trust anchor */
    keel_outbox_t *outbox;  /* what to send */
    keel_backoff_t backoff;
    unsigned keepalive_s;
    unsigned inflight_max;  /* QoS 1 messages in flight at once */
    /* A message on keel/v1/<id>/cmd/<name> (name may contain '/'; checked as
     * above). The payload is not NUL-terminated and may be anything: the
     * product parses and validates it. */
    void (*on_command)(void *arg, const char *name, const void *payload, size_t len);
    /* The link went online or offline (for logs and the UI). */
    void (*on_state)(void *arg, keel_link_state_t state);
    void *arg;
} keel_link_config_t;

/* Builds the TLS context, creates the MQTT client and schedules the first
 * (jittered) connect. Strings are copied; base, ks and outbox must outlive
 * the link. */
keel_status_t keel_link_start(const keel_link_config_t *c, keel_link_t **out) KEEL_MUST_CHECK;
/* The outbox has something new: send it now if online. */
void keel_link_kick(keel_link_t *l);
/* Publishes the product state (a JSON object's text) retained on .../state
 * when online; the latest one is (re)sent after every connect. */
keel_status_t keel_link_set_state(keel_link_t *l, const char *json, size_t len) KEEL_MUST_CHECK;
void keel_link_status(const keel_link_t *l, keel_link_status_t *st);
const char *keel_link_state_name(keel_link_state_t s);
/* Sends DISCONNECT (normal) when online and stops reconnecting. */
void keel_link_stop(keel_link_t *l);
void keel_link_free(keel_link_t *l);

#endif

/*
 * keel/assess_services.h - functional probes of `keel assess` for the
 * services a careless device leaves open: MQTT brokers (test unit "mqtt") and
 * telnet, SSH and FTP (test unit "telnet_ssh_ftp"). Each returns an
 * observation document that follows the test-unit contract of
 * keel/assess_probe.h ("units", "findings" with "unit", "evidence").
 * In the keelassess library. The probes never need privileges.
 */
#ifndef KEEL_ASSESS_SERVICES_H
#define KEEL_ASSESS_SERVICES_H

#include "keel/base.h"

#include <jansson.h>

/* A user/password pair to try; both NUL-terminated, either may be "". */
typedef struct {
    const char *user;
    const char *password;
} keel_cred_pair_t;

/*
 * The built-in list of common IoT default credential pairs (Mirai's list and
 * vendors' documented defaults), most likely first. Shared by every probe that
 * tries default credentials (HTTP logins too). *n receives the count.
 */
const keel_cred_pair_t *keel_assess_default_creds(size_t *n);

typedef struct {
    const char *host;
    unsigned port;        /* required */
    int tls;              /* 1: MQTT over TLS (certificate not verified: the tls unit judges it); 0: clear */
    unsigned timeout_ms;  /* per network step; 0 = 3000 */
    unsigned listen_ms;   /* how long to read others' topics after subscribing to "#"; 0 = 1500 */
} keel_mqtt_probe_opts_t;

/*
 * Probes one MQTT port (3.1.1, and 5 when 3.1.1 is refused):
 *  - a CONNECT with no username, no password and no client certificate: a
 *    CONNACK "accepted" is an anonymous broker (5.5-4 fail, and 5.5-1 fail
 *    when the port is in clear);
 *  - when anonymous is refused, the first 4 default pairs, each on a
 *    connection of its own (one accepted: 5.1-1 fail);
 *  - over TLS, a broker that asks for a client certificate and refuses the
 *    connection without one is "ran" with a 5.5-4 info: MQTT is not reached;
 *  - after any accepted connection, SUBSCRIBE "#" and "$SYS/#": messages of
 *    other clients read within listen_ms (5.5-7 fail: topics and sizes kept in
 *    the evidence, payloads never beyond 64 bytes);
 *  - a clear port that answers CONNACK at all is 5.5-1 fail (credentials and
 *    data in clear), even when it refuses the login;
 *  - a malformed CONNECT (bad remaining length, bad protocol name) followed by a
 *    fresh well-formed CONNECT: a broker that stops answering is 5.13-1B fail.
 * Unit "mqtt" is "ran" when an MQTT broker answered, "not_applicable" when the
 * port does not speak MQTT, "inconclusive" when the port could not be reached.
 * Format "keel-assess-mqtt-1" (docs/internals/assess-services.md). Raw
 * packets (the codec below), every step bounded by timeout_ms.
 * KEEL_ERR_ARG (timeout above 30000 ms, listen_ms above 60000),
 * KEEL_ERR_NOT_FOUND (host), KEEL_ERR_NOMEM; a port that does not answer is
 * a document, not an error.
 */
keel_status_t keel_assess_probe_mqtt(const keel_mqtt_probe_opts_t *o, json_t **out) KEEL_MUST_CHECK;

/*
 * ---- MQTT wire format of the probe (bounded; public for the unit tests) -----
 * Decoders never trust a length: every one is checked against the bytes
 * given, and a packet is at most KEEL_MQTT_PACKET_MAX bytes, fixed header
 * included. `version` is 4 (3.1.1) or 5.
 */
#define KEEL_MQTT_PACKET_MAX 65536u
#define KEEL_MQTT_V311 4
#define KEEL_MQTT_V5 5

/* A variable byte integer (remaining length, property length): the bytes
 * written (1..4), 0 when v is above 268435455. */
size_t keel_mqtt_varint_encode(size_t v, uint8_t out[4]);
/* Decodes one from p[0..n): KEEL_OK with *used = 0 when more bytes are
 * needed, KEEL_ERR_FORMAT when a fifth byte would be needed. */
keel_status_t keel_mqtt_varint_decode(const uint8_t *p, size_t n, size_t *v, size_t *used) KEEL_MUST_CHECK;
/* The fixed header at p[0..n): first byte (type << 4 | flags), remaining
 * length and header size; *hlen = 0 when incomplete. KEEL_ERR_FORMAT for a
 * malformed length, KEEL_ERR_TOO_LARGE when the whole packet would exceed
 * KEEL_MQTT_PACKET_MAX. */
keel_status_t keel_mqtt_header_decode(const uint8_t *p, size_t n, uint8_t *first, size_t *remaining,
                                      size_t *hlen) KEEL_MUST_CHECK;

typedef struct {
    int version;          /* KEEL_MQTT_V311 or KEEL_MQTT_V5 */
    const char *client_id;
    const char *user;     /* NULL: no username flag */
    const char *password; /* NULL: no password flag */
    unsigned keepalive;   /* seconds */
} keel_mqtt_connect_t;

/* A CONNECT with a clean session into buf[0..cap). KEEL_ERR_ARG for a bad
 * version or a string over 65535 bytes, KEEL_ERR_TOO_LARGE when cap is short. */
keel_status_t keel_mqtt_connect_encode(const keel_mqtt_connect_t *c, uint8_t *buf, size_t cap,
                                       size_t *len) KEEL_MUST_CHECK;
/* A SUBSCRIBE of `n` filters at QoS 0. */
keel_status_t keel_mqtt_subscribe_encode(int version, uint16_t packet_id, const char *const *filters, size_t n,
                                         uint8_t *buf, size_t cap, size_t *len) KEEL_MUST_CHECK;
/* The body of a CONNACK (after the fixed header): 2 bytes in 3.1.1, 2 and
 * properties in 5. KEEL_ERR_FORMAT otherwise. */
keel_status_t keel_mqtt_connack_decode(int version, const uint8_t *body, size_t n, int *session_present,
                                       unsigned *code) KEEL_MUST_CHECK;
/* The body of a SUBACK: packet id and up to `cap` return codes (more is
 * KEEL_ERR_FORMAT, as is an empty list). */
keel_status_t keel_mqtt_suback_decode(int version, const uint8_t *body, size_t n, uint16_t *packet_id,
                                      uint8_t *codes, size_t cap, size_t *ncodes) KEEL_MUST_CHECK;

typedef struct {
    const uint8_t *topic; /* into the body given, not NUL-terminated */
    size_t topic_len;
    const uint8_t *payload;
    size_t payload_len;
    unsigned qos;
    int retain;
    uint16_t packet_id; /* QoS 1 and 2 */
} keel_mqtt_publish_t;

/* The body of a PUBLISH whose fixed header's first byte is `first`.
 * KEEL_ERR_FORMAT for QoS 3, an empty topic, or lengths past the body. */
keel_status_t keel_mqtt_publish_decode(int version, uint8_t first, const uint8_t *body, size_t n,
                                       keel_mqtt_publish_t *out) KEEL_MUST_CHECK;

typedef enum {
    KEEL_SVC_AUTO,   /* decide from the banner: telnet IAC, "SSH-", FTP "220" */
    KEEL_SVC_TELNET,
    KEEL_SVC_SSH,
    KEEL_SVC_FTP,
} keel_svc_kind_t;

typedef struct {
    const char *host;
    unsigned port;
    keel_svc_kind_t kind;
    unsigned timeout_ms;  /* per network step; 0 = 3000 */
    unsigned max_pairs;   /* default pairs to try at most; 0 = 8 */
    unsigned budget_ms;   /* for the whole probe; 0 = 20000 */
} keel_svc_probe_opts_t;

/*
 * Probes one telnet, SSH or FTP port:
 *  - telnet: any telnet service is remote login in clear (5.5-1 fail); its
 *    login prompt is driven (IAC negotiation refused) with default pairs: a
 *    shell prompt or a missing "incorrect" is 5.1-1 fail;
 *  - SSH (libssh): banner and software version (5.6-2 warn), offered
 *    authentication methods; "none" accepted or a default pair accepted by
 *    password authentication is 5.1-1 fail; an empty password for root is 5.1-1
 *    fail; weak host key or key exchange algorithms offered are 5.5-1 warn;
 *  - FTP: clear-text login (5.5-1 fail unless AUTH TLS is required before
 *    USER), anonymous login accepted (5.5-4 fail), default pairs (5.1-1 fail),
 *    version in the 220 banner (5.6-2 warn).
 * A default pair accepted is named in "accepted" and in a 5.1-1 fail; pairs
 * the budget left untried are counted (a 5.1-1 info). Unit "telnet_ssh_ftp":
 * "not_applicable" when the port is none of the three, "inconclusive" when it
 * cannot be reached. Format "keel-assess-service-1"
 * (docs/internals/assess-services.md). KEEL_ERR_ARG (timeout above 30000 ms,
 * budget above 600000 ms, max_pairs above 64), KEEL_ERR_NOT_FOUND, KEEL_ERR_NOMEM.
 */
keel_status_t keel_assess_probe_service(const keel_svc_probe_opts_t *o, json_t **out) KEEL_MUST_CHECK;

#endif

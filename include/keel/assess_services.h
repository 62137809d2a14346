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
 *  - when anonymous is refused, the first few default pairs (bounded);
 *  - after any accepted connection, SUBSCRIBE "#" and "$SYS/#": messages of
 *    other clients read within listen_ms (5.5-7 fail: topics and sizes kept in
 *    the evidence, payloads never beyond 64 bytes);
 *  - a clear port that answers CONNACK at all is 5.5-1 fail (credentials and
 *    data in clear), even when it refuses the login;
 *  - a malformed CONNECT (bad remaining length, bad protocol name) followed by a
 *    fresh well-formed CONNECT: a broker that stops answering is 5.13-1B fail.
 * Unit "mqtt" is "ran" when an MQTT broker answered, "not_applicable" when the
 * port does not speak MQTT, "inconclusive" when the port could not be reached.
 * Format "keel-assess-mqtt-1". KEEL_ERR_ARG, KEEL_ERR_NOT_FOUND (host),
 * KEEL_ERR_NOMEM; a port that does not answer is a document, not an error.
 */
keel_status_t keel_assess_probe_mqtt(const keel_mqtt_probe_opts_t *o, json_t **out) KEEL_MUST_CHECK;

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
 * Unit "telnet_ssh_ftp". Format "keel-assess-service-1".
 */
keel_status_t keel_assess_probe_service(const keel_svc_probe_opts_t *o, json_t **out) KEEL_MUST_CHECK;

#endif

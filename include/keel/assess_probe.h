/*
 * keel/assess_probe.h - functional probes of `keel assess` (issue 6): a TCP
 * port scan with banner grab, UDP probes of the usual IoT services, and a TLS
 * probe of one port. Each returns an OBSERVATION document (jansson): what was
 * sent, what came back, timings, and a `findings` array where the provision
 * is obvious. The engine turns observations into verdicts; the schema is in
 * docs/internals/assess-probes.md. In the keelassess library (libssl).
 *
 * The probes talk to the target only; they never need privileges (connect
 * scan, no raw sockets).
 */
#ifndef KEEL_ASSESS_PROBE_H
#define KEEL_ASSESS_PROBE_H

#include "keel/base.h"

#include <jansson.h>
#include <sys/socket.h>

/* Caps on what a target may put into an observation. */
#define KEEL_PROBE_BANNER_MAX 256u   /* bytes of a TCP banner kept */
#define KEEL_PROBE_UDP_REPLY_MAX 1024u /* bytes of a UDP answer kept */
#define KEEL_PROBE_HOST_MAX 255u     /* length of a host name or literal */
#define KEEL_PROBE_UDP_MAX 16u       /* UDP probes in one run */
/* Sockets in flight during a scan, whatever RLIMIT_NOFILE allows. */
#define KEEL_SCAN_WINDOW_MAX 8192u

/* A set of TCP ports (bit n = port n; port 0 is never set). */
typedef struct {
    uint8_t bits[65536 / 8];
} keel_portset_t;

/*
 * Parses "1-65535", "22,80,8000-8100" into `set` (cleared first): ranges and
 * single ports 1..65535, comma separated, nothing else. KEEL_ERR_ARG with the
 * offending part otherwise.
 */
keel_status_t keel_portset_parse(const char *spec, keel_portset_t *set) KEEL_MUST_CHECK;
void keel_portset_add(keel_portset_t *set, unsigned port);
int keel_portset_has(const keel_portset_t *set, unsigned port);
unsigned keel_portset_count(const keel_portset_t *set);

/* UDP services with a protocol request of their own. */
typedef enum {
    KEEL_UDP_SSDP,  /* M-SEARCH ssdp:all (default port 1900) */
    KEEL_UDP_MDNS,  /* DNS-SD service enumeration query (5353) */
    KEEL_UDP_COAP,  /* confirmable GET /.well-known/core (5683) */
    KEEL_UDP_SNMP,  /* GetRequest sysDescr.0, community "public", v1 and v2c (161) */
    KEEL_UDP_SERVICE_COUNT
} keel_udp_service_t;

/* "ssdp", "mdns", "coap", "snmp". */
const char *keel_udp_service_name(keel_udp_service_t s);
/* The inverse; KEEL_ERR_ARG for an unknown name. */
keel_status_t keel_udp_service_parse(const char *name, keel_udp_service_t *out) KEEL_MUST_CHECK;
unsigned keel_udp_service_default_port(keel_udp_service_t s);

typedef struct {
    keel_udp_service_t service;
    unsigned port;
} keel_udp_probe_t;

typedef struct {
    const char *host;          /* IPv4 or IPv6 literal, or a name (first address used) */
    const keel_portset_t *tcp; /* ports to scan; NULL scans none */
    unsigned timeout_ms;       /* per connect attempt and per UDP attempt; 0 = 1000 */
    unsigned banner_ms;        /* wait for a service to speak first; 0 = 800 */
    unsigned window;           /* sockets in flight; 0 = from RLIMIT_NOFILE, capped */
    const keel_udp_probe_t *udp; /* UDP probes to run (at most KEEL_PROBE_UDP_MAX) */
    size_t udp_len;
} keel_scan_opts_t;

/*
 * Scans the TCP ports of one host with non-blocking connects (a window of
 * sockets at once, each attempt `timeout_ms`; a port that timed out is tried
 * once more before it counts as filtered; a refusal counts as closed), reads
 * the banner of every open port, then runs the UDP probes. On KEEL_OK *out is
 * the observation document (caller json_decref's it). KEEL_ERR_ARG for bad
 * options, KEEL_ERR_NOT_FOUND when the host does not resolve, KEEL_ERR_IO when
 * the local system refuses sockets, KEEL_ERR_NOMEM.
 */
keel_status_t keel_assess_scan(const keel_scan_opts_t *o, json_t **out) KEEL_MUST_CHECK;

typedef struct {
    const char *host;
    unsigned port;
    unsigned timeout_ms; /* per handshake; 0 = 3000 */
    unsigned budget_ms;  /* for the whole probe; 0 = 25000. What does not fit is listed as untested. */
} keel_tls_probe_opts_t;

/*
 * Probes one TLS port: protocol versions (SSL 3.0 when the local OpenSSL
 * still has it, TLS 1.0 to 1.3), every cipher suite the local OpenSSL knows
 * (one per handshake), key exchange groups, the certificate the server shows,
 * and whether the port also answers HTTP or MQTT in clear. Handshakes run one
 * after the other with a timeout each. On KEEL_OK *out is the observation
 * document, also when no TLS version was accepted. KEEL_ERR_IO when the port
 * does not accept TCP connections, the errors of keel_assess_scan otherwise.
 */
keel_status_t keel_assess_probe_tls(const keel_tls_probe_opts_t *o, json_t **out) KEEL_MUST_CHECK;

/*
 * ---- the test-unit contract of every observation document ------------------
 *
 * A probe that serves catalogue test units (keel/assess.h) says for each unit
 * it is responsible for what became of it, in "units": {"<unit>": {"state",
 * "reason"}}: "ran" (the unit was carried out; it PASSes for a provision unless
 * a "fail" finding of that unit names the provision), "not_applicable" (there
 * was nothing of its kind to test: no login form, no MQTT port; reason says
 * what was looked for) or "inconclusive" (it should have run and could not:
 * reason says why). A unit a probe does not mention is not its business.
 * Findings carry the unit; "evidence" lists what was sent and seen.
 */
#define KEEL_PROBE_EVIDENCE_MAX 256u  /* evidence entries kept per document */
#define KEEL_PROBE_EVIDENCE_TEXT 512u /* bytes of "sent"/"observed" kept (before escaping) */

typedef enum { KEEL_UNIT_RAN, KEEL_UNIT_NOT_APPLICABLE, KEEL_UNIT_INCONCLUSIVE } keel_unit_state_t;

/* Sets units.<unit> = {"state", "reason"} (reason may be NULL for "ran"); a later
 * call replaces an earlier one, except that "inconclusive" is never replaced by
 * "ran" (one part of the unit could not run). A last character of the reason
 * that a bounded snprintf cut short is left out (keel_assess_utf8_cut_tail). */
keel_status_t keel_assess_unit_mark(json_t *doc, const char *unit, keel_unit_state_t state, const char *reason)
    KEEL_MUST_CHECK;
/* Appends {"unit", "provision", "severity", "what"} to "findings"; severity is
 * "fail", "warn" or "info"; a last character of `what` cut short is left out. */
keel_status_t keel_assess_unit_finding(json_t *doc, const char *unit, const char *provision, const char *severity,
                                       const char *what) KEEL_MUST_CHECK;
/* Appends {"unit", "sent", "observed", "duration_us"} to "evidence": `sent` and
 * `observed` are escaped with keel_assess_escape and capped at
 * KEEL_PROBE_EVIDENCE_TEXT bytes (a "truncated": true is added); past
 * KEEL_PROBE_EVIDENCE_MAX entries only "evidence_dropped" is counted.
 * duration_us < 0 leaves the time out. */
keel_status_t keel_assess_evidence(json_t *doc, const char *unit, const char *sent, size_t sent_len,
                                   const char *observed, size_t observed_len, long long duration_us)
    KEEL_MUST_CHECK;

/* Appends {"provision", "severity", "what"} to the document's "findings"
 * (the probes of the first slice: the engine knows their units by format). */
keel_status_t keel_assess_finding(json_t *doc, const char *provision, const char *severity, const char *what)
    KEEL_MUST_CHECK;

/*
 * The first address of `host` (a literal or a name) with `port` set, and its
 * numeric text in `text` (at least 64 bytes). KEEL_ERR_ARG for an empty or
 * overlong host, KEEL_ERR_NOT_FOUND when it does not resolve.
 */
keel_status_t keel_assess_resolve(const char *host, unsigned port, struct sockaddr_storage *sa, socklen_t *salen,
                                  char *text, size_t text_cap) KEEL_MUST_CHECK;

/*
 * `n` bytes from a target as a JSON-safe, printable string: printable ASCII
 * kept, backslash, CR, LF, tab as \\, \r, \n, \t, anything else as \xHH.
 * Returns a new JSON string or NULL on allocation failure.
 */
json_t *keel_assess_escape(const uint8_t *p, size_t n);

/*
 * Drops from the end of s a last UTF-8 character that a bounded snprintf cut
 * short: text from an IXIT, a path or a device may be any UTF-8, and half a
 * character is a string jansson refuses (the whole document lost with it).
 */
void keel_assess_utf8_cut_tail(char *s);

#endif

/*
 * keel-fleetd.conf: every section and key the service understands (its own
 * and the detectors' [anomaly] keys). Apart from main.c so the config fuzz
 * target (tests/fuzz/fuzz_config.c) parses against the real schema.
 */
#include "fleetd.h"

#include <stdlib.h>
#include <string.h>

#define U(s, k, d, lo, hi) {s, k, KEEL_CFG_UINT, d, lo, hi}
#define S(s, k, d) {s, k, KEEL_CFG_STRING, d, 0, 0}
#define P(s, k, d) {s, k, KEEL_CFG_PATH, d, 0, 0}

static const keel_cfg_key_t schema[] = {
    S("log", "level", "info"),
    S("log", "target", "stderr"),
    S("database", "url", NULL), /* default: sqlite:<config dir>/fleet.db */
    S("broker", "address", NULL),
    S("broker", "server_name", NULL),
    S("broker", "client_id", "keel-fleetd"),
    S("broker", "share_group", "fleet"),
    P("broker", "certificate", NULL),
    P("broker", "chain", NULL),
    P("broker", "key", NULL),
    P("broker", "ca", NULL),
    U("broker", "keepalive", "60", 5, 3600),
    U("broker", "session_expiry", "604800", 60, 4294967294u),
    U("broker", "receive_max", "1000", 1, 65534),
    U("ingest", "batch", "2000", 1, 10000),
    U("ingest", "queue", "4000", 10, 1000000),
    U("ingest", "gap_grace", "120", 1, 86400),
    S("update_server", "listen", NULL),
    P("update_server", "certificate", NULL),
    P("update_server", "chain", NULL),
    P("update_server", "key", NULL),
    P("update_server", "device_ca", NULL),
    U("update_server", "max_connections", "1024", 1, 100000),
    U("update_server", "request_timeout", "120", 5, 3600),
    P("update_server", "bundles", "bundles"),
    S("admin", "listen", "127.0.0.1:8445"),
    P("admin", "certificate", NULL),
    P("admin", "chain", NULL),
    P("admin", "key", NULL),
    P("admin", "tokens", "tokens"),
    U("admin", "max_connections", "64", 1, 10000),
    U("admin", "request_timeout", "300", 5, 3600),
    U("admin", "body_max", "268435456", 1024, 4294967295u),
    P("pki", "factory", NULL),
    P("pki", "crl", NULL),
    P("pki", "service_crl", NULL),
    U("pki", "crl_days", "30", 1, 3650),
    P("pki", "broker_pid_file", NULL),
    P("trust", "release_root", NULL),
    U("campaign", "tick", "10", 1, 86400),
    U("campaign", "fail_permille", "200", 1, 1000),
    U("campaign", "min_finished", "5", 1, 1000000),
    U("retention", "raw_days", "30", 1, 3650),
    U("retention", "aggregate_days", "400", 1, 36500),
    U("retention", "alert_days", "180", 1, 36500),
    U("retention", "interval", "3600", 10, 604800),
    /* least privilege (keel/sandbox.h, docs/internals/sandbox.md) */
    S("security", "user", NULL),      /* started as root: become this user before opening the state */
    S("security", "seccomp", "kill"), /* kill, log or off: what an unlisted system call does */
};
#define SCHEMA_BASE (sizeof schema / sizeof *schema)

/* The schema above and the detectors' [anomaly] keys. */
keel_cfg_key_t *fleetd_config_schema(size_t *n)
{
    size_t na = 0;
    const keel_cfg_key_t *a = keel_fleet_anomaly_config_schema(&na);
    keel_cfg_key_t *all = malloc((SCHEMA_BASE + na) * sizeof *all);
    if (all == NULL)
        return NULL;
    memcpy(all, schema, sizeof schema);
    memcpy(all + SCHEMA_BASE, a, na * sizeof *a);
    *n = SCHEMA_BASE + na;
    return all;
}

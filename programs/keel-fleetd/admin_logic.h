/*
 * admin_logic.h - the pure parts of keel-fleetd's operator API (admin.c) and
 * of `keel-fleetd token` (tokens.c): the tokens file, bearer tokens and
 * their constant-time match, the failed-token rate limit, path routing,
 * query strings and request bodies. No I/O, no clock (times are passed in),
 * no store: unit-tested by tests/unit/test_fleet_admin.c.
 */
#ifndef KEEL_FLEETD_ADMIN_LOGIC_H
#define KEEL_FLEETD_ADMIN_LOGIC_H

#include "keel/base.h"
#include "keel/crypto.h"
#include "keel/fleet_store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- tokens ------------------------------------------------------------------------------------ */

#define FLEETD_TOKEN_NAME_MAX 64             /* [A-Za-z0-9._@-], not starting with '.' */
#define FLEETD_TOKENS_MAX 1024               /* lines with a token in one file */
#define FLEETD_TOKENS_FILE_MAX (256u * 1024u)
#define FLEETD_TOKEN_TEXT_MAX 256            /* a presented token, in bytes */
#define FLEETD_TOKEN_RANDOM 32               /* bytes of a new token */
#define FLEETD_TOKEN_PREFIX "kft_"
#define FLEETD_TOKEN_LEN (4 + 43)            /* "kft_" + base64url of 32 bytes, no padding */
#define FLEETD_TOKEN_LINE_MAX (FLEETD_TOKEN_NAME_MAX + 8 + 64 + 2)

typedef enum { FLEETD_ROLE_READ, FLEETD_ROLE_ADMIN } fleetd_role_t;

typedef struct {
    char name[FLEETD_TOKEN_NAME_MAX + 1];
    fleetd_role_t role;
    uint8_t sha256[KEEL_SHA256_LEN]; /* of the token's text; the token itself is never stored */
} fleetd_token_t;

bool fleetd_token_name_ok(const char *name);
const char *fleetd_role_name(fleetd_role_t r); /* "admin" or "read" */

/*
 * Parses a tokens file: lines "NAME ROLE SHA256HEX" (ROLE admin|read, 64 hex
 * digits, fields separated by spaces or tabs), blank lines and '#' comments.
 * Up to `cap` entries into `out`, their number to *n. Any malformed line, a
 * duplicate name, a NUL byte or more than `cap` entries is KEEL_ERR_FORMAT
 * naming the line: a broken file grants nothing (the caller refuses every
 * token until it is fixed), never "the lines that parsed".
 */
keel_status_t fleetd_tokens_parse(const char *text, size_t len, fleetd_token_t *out, size_t cap,
                                  size_t *n) KEEL_MUST_CHECK;

/*
 * Whether `tok` (len bytes) is one of the n tokens: its SHA-256 is compared
 * with every entry in constant time, with no early exit, so the time taken
 * says nothing about which entry (or how much of one) matched. *which gets
 * the index of the match.
 */
bool fleetd_token_match(const fleetd_token_t *v, size_t n, const char *tok, size_t len, size_t *which);

/* The token of an "Authorization: Bearer <token>" header value: the scheme
 * (any case), one or more spaces, then 1..FLEETD_TOKEN_TEXT_MAX token68
 * characters and nothing else. KEEL_ERR_FORMAT otherwise. */
keel_status_t fleetd_bearer_parse(const char *header, const char **tok, size_t *len) KEEL_MUST_CHECK;

/* RFC 4648 base64url without padding; out needs 4*ceil(n/3)+1 bytes. */
keel_status_t fleetd_b64url(const uint8_t *in, size_t n, char *out, size_t cap) KEEL_MUST_CHECK;

/* A new token's text from FLEETD_TOKEN_RANDOM random bytes (the caller's,
 * so tests are deterministic) and its tokens-file line "NAME ROLE HEX\n".
 * The caller wipes tok. */
keel_status_t fleetd_token_make(const uint8_t rnd[FLEETD_TOKEN_RANDOM], const char *name, fleetd_role_t role,
                                char tok[FLEETD_TOKEN_LEN + 1], char line[FLEETD_TOKEN_LINE_MAX]) KEEL_MUST_CHECK;

/* ---- failed tokens per source address ------------------------------------------------------------ */

#define FLEETD_RL_SLOTS 256
#define FLEETD_RL_WINDOW_S 60
#define FLEETD_RL_FAILS 10 /* failures in a window; then every request from there is 429 until it ends */
#define FLEETD_ADDR_MAX 64

typedef struct {
    char addr[FLEETD_ADDR_MAX];
    int64_t start;   /* the window's first failure */
    unsigned fails;
} fleetd_rl_slot_t;

typedef struct {
    fleetd_rl_slot_t s[FLEETD_RL_SLOTS];
} fleetd_ratelimit_t;

/* Seconds `addr` must still wait (0: it may try). */
unsigned fleetd_ratelimit_wait(const fleetd_ratelimit_t *rl, const char *addr, int64_t now);
/* Counts a failure; returns the failures of the current window. With every
 * slot taken, the one whose window started first is reused. */
unsigned fleetd_ratelimit_fail(fleetd_ratelimit_t *rl, const char *addr, int64_t now);

/* ---- routing --------------------------------------------------------------------------------------- */

#define FLEETD_API_PREFIX "/api/v1/"

typedef enum { FLEETD_M_GET, FLEETD_M_POST, FLEETD_M_OTHER } fleetd_method_t;

typedef enum {
    FLEETD_R_STATUS,
    FLEETD_R_DEVICES,
    FLEETD_R_DEVICE,
    FLEETD_R_DEVICE_EXPORT,
    FLEETD_R_DEVICES_IMPORT,
    FLEETD_R_DEVICE_REVOKE,
    FLEETD_R_DEVICE_ERASE,
    FLEETD_R_CAMPAIGNS,
    FLEETD_R_CAMPAIGN_CREATE,
    FLEETD_R_CAMPAIGN,
    FLEETD_R_CAMPAIGN_PAUSE,
    FLEETD_R_CAMPAIGN_RESUME,
    FLEETD_R_ALERTS,
} fleetd_route_kind_t;

typedef struct {
    fleetd_route_kind_t kind;
    bool write;                       /* needs the admin role */
    char id[KEEL_FLEET_ID_MAX + 1];   /* the device or campaign named in the path ("" when none) */
    const char *allow;                /* for a 405: the methods the path takes */
} fleetd_route_t;

/* Routes `path` (after FLEETD_API_PREFIX, no query) for `m`: 0, or 404 for
 * a path the API does not have (including a malformed id), or 405 for a
 * method the path does not take (out->allow set). */
int fleetd_admin_route(fleetd_method_t m, const char *path, fleetd_route_t *out);

/* A device id as the store takes it in a path: 1..KEEL_FLEET_ID_MAX of
 * [A-Za-z0-9._:-], not starting with '.'. */
bool fleetd_device_id_ok(const char *s);
/* A model: 1..KEEL_FLEET_MODEL_MAX of [A-Za-z0-9._-], not starting with '.'. */
bool fleetd_model_ok(const char *s);
/* A campaign id: KEEL_FLEET_CAMPAIGN_MAX lower-case hex. */
bool fleetd_campaign_id_ok(const char *s);

/* ---- query strings ------------------------------------------------------------------------------------ */

#define FLEETD_QUERY_PARAMS_MAX 8
#define FLEETD_QUERY_KEY_MAX 32
#define FLEETD_QUERY_VALUE_MAX 256
#define FLEETD_QUERY_TEXT_MAX 2048

typedef struct {
    size_t n;
    struct {
        char key[FLEETD_QUERY_KEY_MAX + 1];
        char value[FLEETD_QUERY_VALUE_MAX + 1];
    } p[FLEETD_QUERY_PARAMS_MAX];
} fleetd_query_t;

/*
 * Parses "k=v&k2=v2" (NULL or "" = none): %XX is decoded ('+' is a plus, as
 * RFC 3986 has it), and a decoded value may hold only printable ASCII. A key
 * not in `allowed` (NULL-terminated), a key given twice, a missing '=', bad
 * escapes or anything past the caps is KEEL_ERR_FORMAT naming it.
 */
keel_status_t fleetd_query_parse(const char *q, const char *const *allowed, fleetd_query_t *out) KEEL_MUST_CHECK;
/* The value of `key`, NULL when absent. */
const char *fleetd_query_get(const fleetd_query_t *q, const char *key);
/* A decimal in [min, max] (no sign, no spaces), `def` when absent. */
keel_status_t fleetd_query_u64(const fleetd_query_t *q, const char *key, uint64_t min, uint64_t max, uint64_t def,
                               uint64_t *out) KEEL_MUST_CHECK;
/* "0"/"1"/"false"/"true", `def` when absent. */
keel_status_t fleetd_query_bool(const fleetd_query_t *q, const char *key, bool def, bool *out) KEEL_MUST_CHECK;

/* The parameters of POST campaigns (model required; percent 1..100,
 * default 100; security 0|1, default 0; fail_permille 1..1000, default
 * `def_fail_permille`). */
typedef struct {
    char model[KEEL_FLEET_MODEL_MAX + 1];
    unsigned percent;
    bool security;
    unsigned fail_permille;
} fleetd_campaign_params_t;
keel_status_t fleetd_campaign_params(const char *query, unsigned def_fail_permille,
                                     fleetd_campaign_params_t *out) KEEL_MUST_CHECK;

/* GET alerts: since (Unix seconds, default 0), kind, device, limit (1..10000, default 100). */
#define FLEETD_ALERTS_LIMIT_DEFAULT 100
#define FLEETD_ALERTS_LIMIT_MAX 10000
typedef struct {
    int64_t since;
    char kind[33];   /* "" = any */
    char device[KEEL_FLEET_ID_MAX + 1];
    unsigned limit;
} fleetd_alert_params_t;
keel_status_t fleetd_alert_params(const char *query, fleetd_alert_params_t *out) KEEL_MUST_CHECK;

/* GET devices: model, after (a device id: the page after it), limit (1..KEEL_FLEET_LIST_MAX, default 1000). */
#define FLEETD_DEVICES_LIMIT_DEFAULT 1000
typedef struct {
    char model[KEEL_FLEET_MODEL_MAX + 1];
    char after[KEEL_FLEET_ID_MAX + 1];
    unsigned limit;
} fleetd_device_params_t;
keel_status_t fleetd_device_params(const char *query, fleetd_device_params_t *out) KEEL_MUST_CHECK;

/* ---- bodies and replies ------------------------------------------------------------------------------ */

#define FLEETD_ACTION_BODY_MAX 1024u                 /* revoke, erase, pause, resume */
#define FLEETD_IMPORT_MAX KEEL_FLEET_MANIFEST_MAX    /* 64 MiB of manifest.json */

/* Whether a Content-Type header value names `want` (case-insensitive, parameters after ';' allowed). */
bool fleetd_content_type_is(const char *header, const char *want);
/* One JSON object and nothing else (duplicate keys rejected), at most cap
 * bytes: KEEL_ERR_TOO_LARGE, else KEEL_ERR_FORMAT with jansson's reason. */
keel_status_t fleetd_json_object(const char *data, size_t len, size_t cap, json_t **out) KEEL_MUST_CHECK;
/* The body of an action: empty or "{}" (no field is known, so any is refused). */
keel_status_t fleetd_action_body(const char *data, size_t len) KEEL_MUST_CHECK;

const char *fleetd_campaign_state_name(keel_fleet_campaign_state_t s); /* "running", ... */
/* A device's record for the API (no pseudonym: it must not be tied back to the device). */
json_t *fleetd_device_json(const keel_fleet_device_t *d);
/* A campaign for the API; with counts, "counts" and "time_to":
 * {"first_confirmed": seconds from creation or null, "all_confirmed": the
 * same once every selected device confirmed, else null}. */
json_t *fleetd_campaign_json(const keel_fleet_campaign_t *c, const keel_fleet_campaign_counts_t *k);
/* In a list from the store, a numeric "state" of each campaign becomes its name. */
void fleetd_campaign_list_names(json_t *list);

#endif

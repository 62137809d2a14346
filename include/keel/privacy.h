/*
 * keel/privacy.h - personal data on the device (5.8-3, 5.11-1..4, 6-1..6-6,
 * and the EU Data Act's access and portability of device data).
 *
 * One declaration drives behaviour and evidence. The product declares, in
 * the JSON file that keeld.conf's [privacy] declaration names (written by
 * `keel factory provision --product`), what it senses, which categories of
 * personal data it keeps, why, for whom, on which legal basis and for how
 * long, and each telemetry field it sends with the reason. The format:
 * docs/privacy.md. keeld enforces it:
 *   - telemetry carries declared fields only (6-4); a field whose category
 *     rests on consent is sent only while that consent stands (6-2, 6-3A);
 *   - every record the device keeps is tagged with its category and deleted
 *     when the category's retention runs out (6-6);
 *   - consent is given and withdrawn with its version and time, and every
 *     change is logged (6-2, 6-3A, 6-3B);
 *   - everything the device generated exports as one JSON document;
 *   - a factory reset crypto-erases it all (the vault's data key) and asks
 *     the fleet to erase its copy; the fleet's receipt is kept and shown
 *     (5.11-1, 5.11-2, 5.11-4).
 */
#ifndef KEEL_PRIVACY_H
#define KEEL_PRIVACY_H

#include "keel/base.h"
#include "keel/vault.h"

#include <jansson.h>

#define KEEL_PRIVACY_DECL_MAX (256u * 1024u) /* the declaration file */
#define KEEL_PRIVACY_ID_MAX 64               /* category, field, purpose ids */
#define KEEL_PRIVACY_TEXT_MAX 1024           /* a description, purpose, reason; a telemetry string */
#define KEEL_PRIVACY_NAME_MAX 256            /* product, controller, contact, recipient */
#define KEEL_PRIVACY_VERSION_MAX 32          /* consent_version */
#define KEEL_PRIVACY_SENSING_MAX 64
#define KEEL_PRIVACY_CATEGORIES_MAX 64
#define KEEL_PRIVACY_TELEMETRY_MAX 256
#define KEEL_PRIVACY_RECIPIENTS_MAX 16
#define KEEL_PRIVACY_RETENTION_DAYS_MAX 3650
#define KEEL_PRIVACY_RECORD_MAX 4096    /* one record's data, as compact JSON */
#define KEEL_PRIVACY_RECORDS_MAX 10000  /* records kept at once (past it the oldest go, 100 at a time) */
#define KEEL_PRIVACY_RECORDS_DROP "100"
#define KEEL_PRIVACY_LOG_MAX 1000       /* consent log entries kept (the oldest go) */
#define KEEL_PRIVACY_ERASE_KEEP 32      /* erase requests kept (the oldest go) */
#define KEEL_PRIVACY_RECEIPT_MAX 4096   /* a fleet's erase receipt, as compact JSON */

typedef struct keel_privacy keel_privacy_t;

/* Parses and checks a declaration file (unknown fields, missing ones, bad
 * values, a field naming an undeclared category: KEEL_ERR_FORMAT with the
 * JSON path). *out (may be NULL) receives the parsed document. */
keel_status_t keel_privacy_declaration_load(const char *path, json_t **out) KEEL_MUST_CHECK;
/* The same checks on a parsed document (a product file's "declaration");
 * paths in messages start with `root` ("$" when NULL). */
keel_status_t keel_privacy_declaration_check(const json_t *decl, const char *root) KEEL_MUST_CHECK;

/* Opens the privacy state kept in `v` under the declaration at `decl_path`
 * (NULL: a device that declares no personal data and no telemetry). */
keel_status_t keel_privacy_open(keel_vault_t *v, const char *decl_path, keel_privacy_t **out) KEEL_MUST_CHECK;
void keel_privacy_close(keel_privacy_t *p);
/* The declaration (borrowed; NULL when none). */
const json_t *keel_privacy_declaration(const keel_privacy_t *p);

/*
 * Checks one telemetry object against the declaration: every key must be a
 * declared field, of its declared type. Fields whose category needs consent
 * that is not given are removed from `t` and listed in *withheld (a new
 * array, may be empty; NULL allowed). KEEL_ERR_FORMAT "telemetry field 'x'
 * is not declared" and the like.
 */
keel_status_t keel_privacy_telemetry_check(keel_privacy_t *p, json_t *t, json_t **withheld) KEEL_MUST_CHECK;

/* Keeps a record of `category` on the device (sealed; removed by retention).
 * KEEL_ERR_NOT_FOUND: the category is not declared; KEEL_ERR_TOO_LARGE: data
 * over KEEL_PRIVACY_RECORD_MAX. Past KEEL_PRIVACY_RECORDS_MAX the oldest records go. */
keel_status_t keel_privacy_record(keel_privacy_t *p, const char *category, const json_t *data) KEEL_MUST_CHECK;
/* Keeps a checked telemetry object (keel_privacy_telemetry_check): one
 * record per category of its fields, so each part ages out on its own
 * retention. Fields the declaration does not name are not kept. */
keel_status_t keel_privacy_record_telemetry(keel_privacy_t *p, const json_t *t) KEEL_MUST_CHECK;

/* Consent: purpose = a category id whose legal basis is consent
 * (KEEL_ERR_NOT_FOUND otherwise). `version` must be the declaration's
 * current consent version (KEEL_ERR_ARG otherwise: the user saw an old
 * text); `via` says where ("ui", "api", "app": 1..16 of [a-z]). The change
 * and its log entry are stored in one transaction. */
keel_status_t keel_privacy_consent_set(keel_privacy_t *p, const char *purpose, bool given,
                                       const char *version, const char *via) KEEL_MUST_CHECK;
/* {"consent_version":V|null,"purposes":[{"purpose","description","given",
 * "current","version","time"}...],"log":[{"purpose","given","version","via",
 * "time"}...]} (log newest first; "current": given at the current version,
 * which is what gates telemetry). A log entry that no longer opens is left
 * out (and logged). */
keel_status_t keel_privacy_consent_json(keel_privacy_t *p, json_t **out) KEEL_MUST_CHECK;

/* Deletes every record older than its category's retention. *removed (may
 * be NULL) gets the count. Run by keeld's retention timer. */
keel_status_t keel_privacy_retention_run(keel_privacy_t *p, int64_t now, uint64_t *removed) KEEL_MUST_CHECK;

/* Everything the privacy module keeps, as part of the Data Act export:
 * {"declaration","consent","records":[...],"unreadable_records":N,
 * "erase_requests":[...]}. A record that no longer opens, or whose sealed
 * category or time is not its row's, is left out and counted in
 * "unreadable_records": one damaged row never denies the whole export. */
keel_status_t keel_privacy_export(keel_privacy_t *p, json_t **out) KEEL_MUST_CHECK;

/*
 * Cloud erase (5.11-2, 5.11-4). After a factory reset keeld files a request
 * (id = 32 hex chars) and sends {"type":"erase-request","id":...} through
 * the outbox; the fleet answers on cmd/keel/erase-receipt with
 * {"id":...,"erased":true,...}, which is stored. Requests and receipts are
 * kept outside the erased data (they hold no personal data) so the answer
 * can be shown after the reset.
 */
keel_status_t keel_privacy_erase_request(keel_privacy_t *p, char id[33]) KEEL_MUST_CHECK;
/* `receipt` must be an object of at most KEEL_PRIVACY_RECEIPT_MAX bytes with
 * "id" (32 hex) and "erased" (boolean); "erased": true confirms the
 * request (a later receipt for a confirmed request is ignored).
 * KEEL_ERR_FORMAT for a malformed receipt, KEEL_ERR_NOT_FOUND when no
 * request has that id. */
keel_status_t keel_privacy_erase_receipt(keel_privacy_t *p, const json_t *receipt) KEEL_MUST_CHECK;
/* [{"id","requested","confirmed"|null,"receipt"|null}...], newest first. */
keel_status_t keel_privacy_erase_status(keel_privacy_t *p, json_t **out) KEEL_MUST_CHECK;

/* After keel_vault_erase: forget cached consent state. */
keel_status_t keel_privacy_reload(keel_privacy_t *p) KEEL_MUST_CHECK;

#endif

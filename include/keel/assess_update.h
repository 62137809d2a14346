/*
 * keel/assess_update.h - two probes of `keel assess` that read the IXIT
 * rather than scan: the update probe (test unit "update": tampered,
 * downgraded and wrongly signed bundles must be refused, 5.3-2, 5.3-7, 5.3-9,
 * 5.3-10) and the publication checks (test unit "publication":
 * security.txt and the disclosure policy for 5.2-1, the support period for
 * 5.3-13). Observations follow the test-unit contract of keel/assess_probe.h.
 * In the keelassess library.
 */
#ifndef KEEL_ASSESS_UPDATE_H
#define KEEL_ASSESS_UPDATE_H

#include "keel/assess_http.h"
#include "keel/base.h"

#include <jansson.h>
#include <time.h>

#define KEEL_UPDATE_BUNDLE_MAX (256u * 1024u * 1024u) /* a test bundle the probe reads */
#define KEEL_UPDATE_HTTP_BODY_MAX (64u * 1024u * 1024u) /* a KEEL_UPLOAD_HTTP bundle: one body, held whole */

typedef enum {
    KEEL_UPLOAD_KEEL_API_V1, /* keeld's API: PUT /api/v1/update/bundle?offset=N in 64 KiB pieces, then
                                POST /api/v1/update/stage: 201 = accepted, 422 = refused (docs/api.md) */
    KEEL_UPLOAD_HTTP,        /* one request `method` `path` with the bundle as the body
                                (application/octet-stream): 2xx = accepted, 4xx = refused */
} keel_upload_kind_t;

typedef struct {
    keel_http_opts_t http;          /* the device's update interface */
    keel_http_login_t login;        /* how the lab logs in; kind NONE = uploads go without a login */
    const char *user, *password;    /* lab credentials; the caller wipes the password */
    keel_upload_kind_t kind;
    const char *method;             /* KEEL_UPLOAD_HTTP: "POST" or "PUT" */
    const char *path;               /* KEEL_UPLOAD_HTTP: the upload path */
    /* The lab's test bundles (IXIT update.test_bundles), each may be NULL. */
    const char *good, *tampered, *downgraded, *wrong_signer;
    const char *version_path;       /* GET path whose answer changes when an update is installed; NULL =
                                       "/api/v1/update" for keel-api-v1, none for http */
    unsigned budget_ms;             /* whole probe; 0 = 60000 */
} keel_update_probe_opts_t;

/*
 * For each bundle given: uploads it and records accepted/refused with the
 * device's answer. tampered, downgraded and wrong_signer must be refused
 * (each accepted one is a fail: tampered -> 5.3-9 and 5.3-2, downgraded ->
 * 5.3-2, wrong_signer -> 5.3-10 and 5.3-7). Without a `tampered` bundle
 * variants are made from `good`, one byte flipped each, each tried: for a
 * keel-bundle-1 a manifest, a signature and a payload byte; for any other
 * file the middle byte and one in its last 64 bytes (a signature, in most
 * formats). Damage in a keel bundle's payload alone that is accepted is only
 * a 5.3-9 info: such devices check the payload while installing, and the
 * probe never installs (docs/internals/assess-update.md). `good` must be
 * accepted (otherwise the refusals prove nothing: unit inconclusive); it is
 * never applied: for keel-api-v1 the staged upload is dropped again by starting
 * an empty upload. The device must still answer after each refusal, and
 * `version_path` must read the same before and after. With no bundle at all
 * the unit is inconclusive ("the IXIT names no test bundles"); so it is without
 * a good, a downgraded or a wrongly signed bundle, when the login is refused,
 * or when an upload cannot be completed (no answer, a route that is not there,
 * the budget). Bundles are read in 64 KiB pieces (KEEL_UPLOAD_HTTP: whole,
 * at most KEEL_UPDATE_HTTP_BODY_MAX). Format "keel-assess-update-1".
 * KEEL_ERR_ARG for bad options, KEEL_ERR_NOT_FOUND for a host that does not
 * resolve or a bundle file that is not there, KEEL_ERR_IO / KEEL_ERR_TOO_LARGE
 * for a bundle that cannot be read or is over KEEL_UPDATE_BUNDLE_MAX,
 * KEEL_ERR_NOMEM.
 */
keel_status_t keel_assess_probe_update(const keel_update_probe_opts_t *o, json_t **out) KEEL_MUST_CHECK;

typedef struct {
    const char *security_txt;   /* URL (http/https) or file path; NULL = not given */
    const char *policy;         /* URL or file path of the disclosure policy; NULL = not given */
    const char *support_end;    /* "YYYY-MM-DD" from the IXIT; NULL = not given */
    const char *support_at;     /* URL or file where the support period is published; NULL with
                                   support_end given is a 5.3-13 fail (not published) */
    const char *base_dir;       /* relative file paths are read from here; NULL = cwd */
    const char *ca_file;        /* CA for https URLs; NULL = the system's store */
    unsigned timeout_ms;        /* per fetch; 0 = 5000 */
    time_t now;                 /* 0 = time(NULL); tests pin it */
} keel_publication_opts_t;

/*
 * Fetches (libcurl, at most 64 KiB each, no redirects beyond 3, http/https
 * only) or reads each document and judges it:
 *  - security.txt (RFC 9116): fields parsed line by line (comments, an
 *    OpenPGP cleartext signature frame tolerated); at least one Contact (mailto:,
 *    https:, tel:), exactly one Expires in RFC 3339 that is not in the past
 *    (more than a year ahead is a warn), Policy/Encryption/Canonical must be
 *    URIs; an unknown field is kept as info. Any violation is a 5.2-1 fail.
 *  - the policy: reachable, non-empty text (5.2-1 fail otherwise); a warn when
 *    it names no contact and no timeline.
 *  - the support period: the published page must state the IXIT's end date
 *    (ISO "2031-12-31", or "31 December 2031", "December 31, 2031", or month and
 *    year) - 5.3-13 fail when unreachable or the date is not found; an end date
 *    in the past is a 5.3-13 warn ("support has ended").
 * An HTTP error status (404, 500), more than 3 redirects, a redirect to
 * another scheme or a missing date is a fail: the document is not published
 * where the IXIT says. Unit "publication": "ran" when something was given;
 * "inconclusive" when the IXIT gives nothing, or a URL cannot be fetched at
 * all (DNS, refused, timeout, TLS) or a file cannot be read (the reason names
 * it). Format "keel-assess-publication-1". KEEL_ERR_ARG for a support_end
 * that is not a real YYYY-MM-DD date or an empty/overlong source; KEEL_ERR_NOMEM.
 */
keel_status_t keel_assess_publication(const keel_publication_opts_t *o, json_t **out) KEEL_MUST_CHECK;

#endif

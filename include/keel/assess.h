/*
 * keel/assess.h - the provision catalogue of EN 303 645 V3.1.3 and the two
 * documents a manufacturer hands a test lab, modelled on ETSI TS 103 701:
 * the ICS (implementation conformance statement: which provisions the
 * product supports, and why not) and the IXIT (the extra information a lab
 * needs to test it: interfaces, authentication, updates, ...).
 *
 * The catalogue is static data: one entry per provision with its status, the
 * product feature it depends on, the conceptual check and the functional test
 * units (probes) that bear on it. The schemas of the ICS ("keel-ics-1") and the
 * IXIT ("keel-ixit-1") are documented in docs/assess.md; the loaders below
 * check them strictly and name the JSON path of every problem.
 */
#ifndef KEEL_ASSESS_H
#define KEEL_ASSESS_H

#include "keel/base.h"

#include <jansson.h>

#define KEEL_ASSESS_PROVISIONS 78  /* provisions of EN 303 645 V3.1.3 */
#define KEEL_ASSESS_UNITS_MAX 6    /* functional test units per provision */
#define KEEL_ASSESS_ID_MAX 16      /* "5.13-1A" */

/* ---- catalogue ------------------------------------------------------------------ */

typedef struct {
    const char *id;     /* V3.1.3 id: "5.1-1", "5.3-4A", "6-3B" */
    const char *v2_id;  /* the V2.1.1 id it came from when that differs ("4-1"), else NULL */
    char status;        /* 'M' mandatory or 'R' recommended */
    const char *feature; /* feature id the provision depends on (conditional), or NULL */
    const char *title;  /* one line, our words */
    const char *check;  /* conceptual check: what the ICS/IXIT must show */
    const char *units[KEEL_ASSESS_UNITS_MAX + 1]; /* functional test unit ids, NULL-terminated */
} keel_assess_provision_t;

/* A product feature that makes conditional provisions apply. */
typedef struct {
    const char *id;   /* "user_interface", "passwords", ... */
    const char *what; /* one line */
} keel_assess_feature_t;

/* A functional test unit (probe) id with one line on what it does. */
typedef struct {
    const char *id;   /* "portscan", "tls", "http.default_creds", ... */
    const char *what;
} keel_assess_unit_t;

/* Iteration in document order (i < keel_assess_catalogue_count(), else NULL). */
size_t keel_assess_catalogue_count(void);
const keel_assess_provision_t *keel_assess_catalogue_at(size_t i);
/* By V3.1.3 id, or by a V2.1.1 id that names exactly one provision ("4-1");
 * NULL when unknown or ambiguous (a V2.1.1 id split in two). */
const keel_assess_provision_t *keel_assess_catalogue_find(const char *id);

size_t keel_assess_feature_count(void);
const keel_assess_feature_t *keel_assess_feature_at(size_t i);
const keel_assess_feature_t *keel_assess_feature_find(const char *id);

size_t keel_assess_unit_count(void);
const keel_assess_unit_t *keel_assess_unit_at(size_t i);
const keel_assess_unit_t *keel_assess_unit_find(const char *id);

/* ---- ICS and IXIT ----------------------------------------------------------------- */

#define KEEL_ASSESS_FILE_MAX (1024u * 1024u) /* an ICS or IXIT file */
#define KEEL_ASSESS_NAME_MAX 64              /* names, ids, enum values */
#define KEEL_ASSESS_TEXT_MAX 2048            /* justifications, descriptions */
#define KEEL_ASSESS_LIST_MAX 64              /* entries of any array */

/* A string value starting with this stands, in a draft, for any value the
 * manufacturer still has to give; the rest of the string says what. */
#define KEEL_ASSESS_PLACEHOLDER "TO BE FILLED: "

/* Load/check flags. */
#define KEEL_ASSESS_STRICT 1u /* refuse a draft ("status": "draft") */

/*
 * Reads and checks an ICS file. KEEL_ERR_FORMAT "<$.json.path>: <why>" for
 * any schema violation: unknown keys, wrong types, oversized values, unknown
 * or missing provision ids, a recommended provision not supported without a
 * justification (5.0-1), a provision marked not applicable without naming
 * the feature it lacks (or naming one the product declares), a mandatory
 * unconditional provision marked not applicable; also a placeholder in a
 * final document, or any draft with KEEL_ASSESS_STRICT. KEEL_ERR_TOO_LARGE
 * past KEEL_ASSESS_FILE_MAX, KEEL_ERR_IO / KEEL_ERR_NOT_FOUND for the file.
 * On success *out (may be NULL) receives the document and *placeholders (may
 * be NULL) a new array of {"path", "what"}: the values left to fill.
 */
keel_status_t keel_assess_ics_load(const char *path, unsigned flags, json_t **out,
                                   json_t **placeholders) KEEL_MUST_CHECK;
keel_status_t keel_assess_ics_check(const json_t *ics, unsigned flags, json_t **placeholders) KEEL_MUST_CHECK;

/*
 * The same for an IXIT file. A personal-data declaration given by path is
 * read relative to the IXIT's directory (base_dir in the check; NULL: the
 * current directory) and checked like keeld checks it (keel/privacy.h);
 * an inline one is checked in place. A secret (a "password" in the lab
 * credentials) is refused: the IXIT names a file or environment variable.
 */
keel_status_t keel_assess_ixit_load(const char *path, unsigned flags, json_t **out,
                                    json_t **placeholders) KEEL_MUST_CHECK;
keel_status_t keel_assess_ixit_check(const json_t *ixit, const char *base_dir, unsigned flags,
                                     json_t **placeholders) KEEL_MUST_CHECK;

/*
 * Checks that an ICS and an IXIT (both already checked) describe the same
 * product: the same model, and features agreeing with what the IXIT declares
 * (an update mechanism, personal data, password authentication).
 * KEEL_ERR_FORMAT naming both paths. Placeholders are skipped.
 */
keel_status_t keel_assess_cross_check(const json_t *ics, const json_t *ixit) KEEL_MUST_CHECK;

#endif

/*
 * keel/assess_run.h - the engine of `keel assess run`: it finds the
 * interfaces of a target, runs every functional probe that applies, and
 * turns the ICS, the IXIT and the observations into a verdict per test case
 * and per provision (the report "keel-assess-report-1" of
 * docs/assess-report.md). Without ICS and IXIT it runs in discovery mode:
 * every functional probe it can, conceptual test cases INCONCLUSIVE.
 */
#ifndef KEEL_ASSESS_RUN_H
#define KEEL_ASSESS_RUN_H

#include "keel/base.h"

#include <jansson.h>

typedef void (*keel_assess_progress_fn)(void *arg, const char *line);

typedef struct {
    const char *host;          /* the target: address or name */
    const json_t *ics;         /* checked ICS and IXIT (keel/assess.h), both or neither */
    const json_t *ixit;
    const char *ixit_dir;      /* relative paths in the IXIT are read from here; NULL = cwd */
    const char *ports;         /* TCP ports to scan; NULL = "1-65535" */
    const char *ca_file;       /* CA for https fetches of publications; NULL = system store */
    /* Observations made before the run (firmware scan, label analysis), taken as
     * they are: each a probe document with "format" and "findings". */
    json_t *const *extra;
    size_t extra_len;
    unsigned budget_s;         /* whole run; 0 = 300 */
    keel_assess_progress_fn progress; /* one line per step, may be NULL */
    void *progress_arg;
} keel_assess_run_opts_t;

/*
 * Runs the assessment. On KEEL_OK *report is the report document (the caller
 * json_decref's it), also when provisions FAIL; *mandatory_fail (may be NULL)
 * receives the number of mandatory provisions that FAIL. The lab's password,
 * when the IXIT names one (lab_credentials), is read from the environment
 * variable or file it names, used and wiped. KEEL_ERR_ARG for bad options,
 * KEEL_ERR_NOT_FOUND when the host does not resolve, KEEL_ERR_CONFIG when the
 * IXIT's lab password cannot be read, KEEL_ERR_NOMEM.
 */
keel_status_t keel_assess_run(const keel_assess_run_opts_t *o, json_t **report, unsigned *mandatory_fail)
    KEEL_MUST_CHECK;

/*
 * The verdicts alone, from observations already made: fills "provisions" and
 * "summary" of `report` (which must hold "observations", an array of probe
 * documents, and may hold "mode") from the catalogue, the ICS and the IXIT
 * (both NULL in discovery mode). Exposed for the unit tests and for
 * re-judging a saved report.
 */
keel_status_t keel_assess_judge(json_t *report, const json_t *ics, const json_t *ixit, unsigned *mandatory_fail)
    KEEL_MUST_CHECK;

#endif

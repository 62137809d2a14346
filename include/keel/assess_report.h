/*
 * keel/assess_report.h - the evidence report of `keel assess run`: one
 * machine document ("keel-assess-report-1", schema in docs/assess-report.md)
 * and the three renderings written beside it: report.md (for people, in a
 * merge request or an e-mail), report.html (one self-contained file: a grid of
 * the 78 provisions coloured by verdict, summary counts, evidence per test; no
 * script, no external resource, a strict CSP) and junit.xml (one testsuite per
 * provision chapter, one testcase per provision, FAIL as <failure>,
 * INCONCLUSIVE as <error>, NOT_APPLICABLE as <skipped>), so a CI server shows
 * the assessment like any test run.
 *
 * Everything in the report that came from the target (banners, headers,
 * bodies, names) is escaped for the rendering it lands in: HTML entities in
 * report.html, XML entities and no control characters in junit.xml, Markdown
 * metacharacters and backticks in report.md. A hostile device must not be able
 * to script the lab's browser or break the CI parser.
 */
#ifndef KEEL_ASSESS_REPORT_H
#define KEEL_ASSESS_REPORT_H

#include "keel/base.h"

#include <jansson.h>

/* Caps of the check: any string in a report, any array (provisions, tests,
 * findings, evidence), and the size of one file keel_assess_report_write
 * renders (past it KEEL_ERR_TOO_LARGE, never a truncated report). */
#define KEEL_ASSESS_REPORT_TEXT_MAX (64u * 1024u)
#define KEEL_ASSESS_REPORT_LIST_MAX 4096u
#define KEEL_ASSESS_REPORT_OUT_MAX (64u * 1024u * 1024u)

/* Verdicts, in the words the report uses. */
#define KEEL_VERDICT_PASS "PASS"
#define KEEL_VERDICT_FAIL "FAIL"
#define KEEL_VERDICT_NA "NOT_APPLICABLE"
#define KEEL_VERDICT_INCONCLUSIVE "INCONCLUSIVE"

/*
 * Checks that `report` has the shape the renderers rely on: the format, the
 * summary, every provision (a catalogue id, once, with the catalogue's status,
 * the provisions of a chapter together) with its verdict and tests (ids
 * under the provision's, enums from the schema, strings capped at
 * KEEL_ASSESS_REPORT_TEXT_MAX, arrays at KEEL_ASSESS_REPORT_LIST_MAX), and a
 * summary whose counts agree with the provisions. Unknown keys are allowed.
 * KEEL_ERR_FORMAT "<$.json.path>: <why>"; KEEL_ERR_ARG for NULL.
 */
keel_status_t keel_assess_report_check(const json_t *report) KEEL_MUST_CHECK;

/*
 * The renderings, appended to `out` (keel_buf_init'ed by the caller, whose
 * cap bounds them: KEEL_ERR_TOO_LARGE past it). Each checks the report first
 * (the errors of keel_assess_report_check). Nothing is appended on an error
 * of the check; after a later error `out` holds a partial rendering.
 */
keel_status_t keel_assess_report_md(const json_t *report, keel_buf_t *out) KEEL_MUST_CHECK;
keel_status_t keel_assess_report_html(const json_t *report, keel_buf_t *out) KEEL_MUST_CHECK;
keel_status_t keel_assess_report_junit(const json_t *report, keel_buf_t *out) KEEL_MUST_CHECK;

/*
 * Writes report.json (indented, keys in insertion order), report.md,
 * report.html and junit.xml into `dir` (created 0755 when missing, its parent
 * must exist; an existing one must be a directory), each atomically
 * (keel_file_write_atomic, 0644). Checks the report first and renders all
 * four (each capped at KEEL_ASSESS_REPORT_OUT_MAX) before it writes any, so a
 * refused report leaves `dir` untouched. KEEL_ERR_FORMAT from the check,
 * KEEL_ERR_TOO_LARGE / KEEL_ERR_NOMEM naming the rendering, KEEL_ERR_IO
 * naming the directory or file, KEEL_ERR_ARG for a NULL or empty `dir`.
 */
keel_status_t keel_assess_report_write(const json_t *report, const char *dir) KEEL_MUST_CHECK;

#endif

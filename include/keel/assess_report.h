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

/* Verdicts, in the words the report uses. */
#define KEEL_VERDICT_PASS "PASS"
#define KEEL_VERDICT_FAIL "FAIL"
#define KEEL_VERDICT_NA "NOT_APPLICABLE"
#define KEEL_VERDICT_INCONCLUSIVE "INCONCLUSIVE"

/*
 * Checks that `report` has the shape the renderers rely on (format, summary,
 * provisions with id/verdict/tests); KEEL_ERR_FORMAT "<$.path>: <why>".
 */
keel_status_t keel_assess_report_check(const json_t *report) KEEL_MUST_CHECK;

/* The renderings, appended to `out` (keel_buf_init'ed by the caller). */
keel_status_t keel_assess_report_md(const json_t *report, keel_buf_t *out) KEEL_MUST_CHECK;
keel_status_t keel_assess_report_html(const json_t *report, keel_buf_t *out) KEEL_MUST_CHECK;
keel_status_t keel_assess_report_junit(const json_t *report, keel_buf_t *out) KEEL_MUST_CHECK;

/*
 * Writes report.json (indented, keys in insertion order), report.md,
 * report.html and junit.xml into `dir` (created 0755 when missing, its parent
 * must exist), each atomically (keel_file_write_atomic, 0644). Checks the
 * report first. KEEL_ERR_IO naming the file on failure.
 */
keel_status_t keel_assess_report_write(const json_t *report, const char *dir) KEEL_MUST_CHECK;

#endif

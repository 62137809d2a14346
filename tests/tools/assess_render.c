/*
 * assess_render: writes the four report files of `keel assess run` from a
 * report.json, through keel_assess_report_write (keel/assess_report.h), for
 * the browser test of report.html (tests/integration/assess_report_ui.sh)
 * before and beside the engine.
 *
 * usage: assess_render REPORT.json DIR   check the report, write DIR/report.{json,md,html} and DIR/junit.xml
 *        assess_render --catalogue        print the provision catalogue as JSON (to build reports from)
 * Exit: 0 done, 1 the report was refused or a file could not be written
 * (the message on stderr), 2 usage.
 */
#include "keel/assess.h"
#include "keel/assess_report.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static int catalogue(void)
{
    json_t *all = json_array();
    if (all == NULL)
        return 1;
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        const keel_assess_provision_t *p = keel_assess_catalogue_at(i);
        json_t *units = json_array();
        for (size_t u = 0; units != NULL && p->units[u] != NULL; u++)
            if (json_array_append_new(units, json_string(p->units[u])) != 0) {
                json_decref(units);
                units = NULL;
            }
        char status[2] = {p->status, '\0'};
        json_t *e = units == NULL ? NULL
                                  : json_pack("{s:s, s:s, s:o, s:s, s:o}", "id", p->id, "status", status, "feature",
                                              p->feature ? json_string(p->feature) : json_null(), "title", p->title,
                                              "units", units);
        if (e == NULL || json_array_append_new(all, e) != 0) {
            json_decref(all);
            fputs("assess_render: out of memory\n", stderr);
            return 1;
        }
    }
    int rc = json_dumpf(all, stdout, JSON_INDENT(1)) == 0 && fputc('\n', stdout) != EOF && fflush(stdout) == 0 ? 0 : 1;
    json_decref(all);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--catalogue") == 0)
        return catalogue();
    if (argc != 3 || argv[1][0] == '-') {
        fputs("usage: assess_render REPORT.json DIR | assess_render --catalogue\n", stderr);
        return 2;
    }
    keel_buf_t raw;
    keel_buf_init(&raw, KEEL_ASSESS_REPORT_OUT_MAX);
    keel_status_t st = keel_file_read(argv[1], KEEL_ASSESS_REPORT_OUT_MAX, &raw);
    if (st != KEEL_OK) {
        fprintf(stderr, "assess_render: %s\n", keel_error_message());
        return 1;
    }
    json_error_t e;
    json_t *report = json_loadb((const char *)raw.data, raw.len, JSON_REJECT_DUPLICATES, &e);
    keel_buf_free(&raw);
    if (report == NULL) {
        fprintf(stderr, "assess_render: %s:%d: %s\n", argv[1], e.line, e.text);
        return 1;
    }
    st = keel_assess_report_write(report, argv[2]);
    json_decref(report);
    if (st != KEEL_OK) {
        fprintf(stderr, "assess_render: %s\n", keel_error_message());
        return 1;
    }
    return 0;
}

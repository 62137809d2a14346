/*
 * keel assess catalogue: the 78 provisions as keel assess tests them - status,
 * condition, conceptual check and functional test units - for a lab that wants
 * to know what a verdict rests on. --md prints the table of docs/provisions.md
 * (a test keeps the two equal).
 */
#include "cli.h"

#include "keel/assess.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char catalogue_usage[] =
    "usage: keel assess catalogue [--json | --md]\n"
    "\n"
    "Lists the provisions of EN 303 645 V3.1.3 as keel assess tests them: id,\n"
    "status (M mandatory, R recommended), the feature a conditional provision\n"
    "depends on, the conceptual check (what the ICS and IXIT must show) and the\n"
    "functional test units (probes) whose results bear on it.\n"
    "\n"
    "options:\n"
    "  --json   one JSON document: provisions, features, units\n"
    "  --md     the Markdown table of docs/provisions.md\n";

static json_t *as_json(void)
{
    json_t *provs = json_array(), *feats = json_array(), *units = json_array();
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        const keel_assess_provision_t *p = keel_assess_catalogue_at(i);
        json_t *u = json_array();
        for (size_t k = 0; p->units[k] != NULL; k++)
            json_array_append_new(u, json_string(p->units[k]));
        json_array_append_new(provs, json_pack("{s:s, s:s?, s:s%, s:s?, s:s, s:s, s:o}", "id", p->id, "v2_id",
                                               p->v2_id, "status", &p->status, (size_t)1, "feature", p->feature,
                                               "title", p->title, "check", p->check, "units", u));
    }
    for (size_t i = 0; i < keel_assess_feature_count(); i++)
        json_array_append_new(feats, json_pack("{s:s, s:s}", "id", keel_assess_feature_at(i)->id, "what",
                                               keel_assess_feature_at(i)->what));
    for (size_t i = 0; i < keel_assess_unit_count(); i++)
        json_array_append_new(units, json_pack("{s:s, s:s}", "id", keel_assess_unit_at(i)->id, "what",
                                               keel_assess_unit_at(i)->what));
    return json_pack("{s:s, s:o, s:o, s:o}", "format", "keel-assess-catalogue-1", "provisions", provs, "features",
                     feats, "units", units);
}

static void print_md(void)
{
    puts("| id | M/R | condition | conceptual test case: the ICS/IXIT must show | functional test units |");
    puts("|---|---|---|---|---|");
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        const keel_assess_provision_t *p = keel_assess_catalogue_at(i);
        printf("| %s | %c | %s | %s | ", p->id, p->status, p->feature != NULL ? p->feature : "-", p->check);
        if (p->units[0] == NULL)
            fputs("-", stdout);
        for (size_t k = 0; p->units[k] != NULL; k++)
            printf("%s`%s`", k ? ", " : "", p->units[k]);
        puts(" |");
    }
}

int assess_catalogue_main(int argc, char **argv)
{
    static const char *cmd = "assess catalogue";
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {"md", no_argument, NULL, 'm'},
                                         {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, catalogue_usage))
        return CLI_OK;
    int json = 0, md = 0, c;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 'm': md = 1; break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    if (json && md)
        return cli_usage(cmd, "--json or --md, not both");
    if (md) {
        print_md();
        return CLI_OK;
    }
    if (json) {
        json_t *j = as_json();
        if (j == NULL) {
            fprintf(stderr, "keel: %s: out of memory\n", cmd);
            return CLI_FAILED;
        }
        int rc = cli_print_json(j);
        json_decref(j);
        return rc;
    }
    for (size_t i = 0; i < keel_assess_catalogue_count(); i++) {
        const keel_assess_provision_t *p = keel_assess_catalogue_at(i);
        printf("%-8s %c  %-18s %s\n", p->id, p->status, p->feature != NULL ? p->feature : "-", p->title);
        for (size_t k = 0; p->units[k] != NULL; k++)
            printf("%29s- %s\n", "", p->units[k]);
    }
    return CLI_OK;
}

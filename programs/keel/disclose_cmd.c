/*
 * keel disclose: the product's public vulnerability disclosure (EN 303 645
 * 5.2-1): security.txt (RFC 9116) and the disclosure policy page, written
 * into a directory to publish. The work is in src/assess/disclose.c.
 */
#include "cli.h"

#include "keel/disclose.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char disclose_usage[] =
    "usage: keel disclose --contact URI [--contact URI ...] --policy-url URL\n"
    "                     --expires +DAYS|YYYY-MM-DD|DATE-TIME --out DIR [options]\n"
    "\n"
    "Writes the public vulnerability disclosure of a product (EN 303 645 5.2-1):\n"
    "  DIR/security.txt            RFC 9116; publish it at https://HOST/.well-known/security.txt\n"
    "  DIR/disclosure-policy.html  the policy page (no script, no external resource)\n"
    "  DIR/disclosure-policy.md    the same text in Markdown\n"
    "Each file is replaced atomically; nothing is written when an option is wrong.\n"
    "\n"
    "required:\n"
    "  --contact URI            where to report: mailto:NAME@DOMAIN, https://... or tel:+NUMBER;\n"
    "                           repeat for more (at most 8), most preferred first\n"
    "  --policy-url URL         https:// URL where disclosure-policy.html will be published\n"
    "  --expires WHEN           when security.txt goes stale: +DAYS (1..366), YYYY-MM-DD\n"
    "                           (00:00 UTC) or an RFC 3339 date-time; after now and at most\n"
    "                           366 days ahead (RFC 9116: less than a year)\n"
    "  --out DIR                output directory (made 0755 if missing; its parent must exist)\n"
    "\n"
    "security.txt fields (web URLs must be https://):\n"
    "  --encryption URI         the key for encrypted reports: https://..., openpgp4fpr:HEX or dns:...\n"
    "  --acknowledgments URL    page that thanks reporters\n"
    "  --preferred-languages L  language tags, e.g. 'en, de'\n"
    "  --canonical URL          where this security.txt is published (ends in /security.txt)\n"
    "  --hiring URL             security jobs\n"
    "\n"
    "the policy page:\n"
    "  --vendor NAME            the manufacturer (default: \"we\")\n"
    "  --product NAME           the product in scope (default: \"our products\")\n"
    "  --ack-days N             working days to acknowledge a report (1..30, default 5)\n"
    "  --update-days N          days between status updates to the reporter (1..90, default 14)\n"
    "  --fix-days N             target days to a fix and coordinated disclosure (7..365, default 90)\n"
    "\n"
    "  --now YYYY-MM-DD         take this day (00:00 UTC) as now (for reproducible output)\n"
    "\n"
    "Check the published files with 'keel assess probe publication --security-txt URL --policy URL'.\n"
    "Exit status: 0 written, 1 a file could not be written, 2 usage error (a wrong option).\n";

/* Each option once: a second value would silently win otherwise. */
static int once(const char *cmd, const char **slot, const char *name)
{
    if (*slot != NULL)
        return cli_usage(cmd, "--%s is given twice", name);
    *slot = optarg;
    return 0;
}

int cmd_disclose(int argc, char **argv)
{
    static const char *cmd = "disclose";
    static const struct option opts[] = {
        {"contact", required_argument, NULL, 'c'},     {"policy-url", required_argument, NULL, 'p'},
        {"expires", required_argument, NULL, 'e'},     {"encryption", required_argument, NULL, 'E'},
        {"acknowledgments", required_argument, NULL, 'a'},
        {"preferred-languages", required_argument, NULL, 'l'},
        {"canonical", required_argument, NULL, 'C'},   {"hiring", required_argument, NULL, 'H'},
        {"vendor", required_argument, NULL, 'v'},      {"product", required_argument, NULL, 'P'},
        {"ack-days", required_argument, NULL, 'A'},    {"update-days", required_argument, NULL, 'U'},
        {"fix-days", required_argument, NULL, 'F'},    {"out", required_argument, NULL, 'o'},
        {"now", required_argument, NULL, 'n'},         {NULL, 0, NULL, 0}};
    if (cli_want_help(argc, argv, disclose_usage))
        return CLI_OK;
    keel_disclose_opts_t o = {0};
    const char *out = NULL;
    const char *days[3] = {NULL, NULL, NULL};
    int c, rc = 0;
    optind = 1;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (o.n_contacts >= KEEL_DISCLOSE_CONTACTS_MAX)
                return cli_usage(cmd, "at most %u --contact", KEEL_DISCLOSE_CONTACTS_MAX);
            o.contacts[o.n_contacts++] = optarg;
            break;
        case 'p': rc = once(cmd, &o.policy_url, "policy-url"); break;
        case 'e': rc = once(cmd, &o.expires, "expires"); break;
        case 'E': rc = once(cmd, &o.encryption, "encryption"); break;
        case 'a': rc = once(cmd, &o.acknowledgments, "acknowledgments"); break;
        case 'l': rc = once(cmd, &o.preferred_languages, "preferred-languages"); break;
        case 'C': rc = once(cmd, &o.canonical, "canonical"); break;
        case 'H': rc = once(cmd, &o.hiring, "hiring"); break;
        case 'v': rc = once(cmd, &o.vendor, "vendor"); break;
        case 'P': rc = once(cmd, &o.product, "product"); break;
        case 'A': rc = once(cmd, &days[0], "ack-days"); break;
        case 'U': rc = once(cmd, &days[1], "update-days"); break;
        case 'F': rc = once(cmd, &days[2], "fix-days"); break;
        case 'o': rc = once(cmd, &out, "out"); break;
        case 'n':
            o.now = cli_parse_day(optarg);
            if (o.now == (time_t)-1)
                return cli_usage(cmd, "--now must be a date YYYY-MM-DD after 1970");
            break;
        default: return cli_bad_option(cmd, c, argv);
        }
    }
    if (rc != 0)
        return rc;
    if (optind != argc)
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    static const struct {
        const char *name;
        unsigned long lo, hi;
    } ranges[3] = {{"--ack-days", 1, 30}, {"--update-days", 1, 90}, {"--fix-days", 7, 365}};
    unsigned *slots[3] = {&o.ack_days, &o.update_days, &o.fix_days};
    for (size_t i = 0; i < 3; i++) {
        unsigned long v = 0;
        if (days[i] == NULL)
            continue;
        if (!cli_parse_uint(days[i], ranges[i].lo, ranges[i].hi, &v))
            return cli_usage(cmd, "%s must be a whole number %lu..%lu", ranges[i].name, ranges[i].lo, ranges[i].hi);
        *slots[i] = (unsigned)v;
    }
    if (o.n_contacts == 0 || o.policy_url == NULL || o.expires == NULL || out == NULL)
        return cli_usage(cmd, "--contact, --policy-url, --expires and --out are required");
    keel_status_t st = keel_disclose_write(&o, out);
    if (st != KEEL_OK)
        return cli_fail(cmd, st);
    printf("wrote %s/security.txt, %s/disclosure-policy.html and %s/disclosure-policy.md\n", out, out, out);
    printf("publish security.txt at https://HOST/.well-known/security.txt and the policy at %s\n", o.policy_url);
    return CLI_OK;
}

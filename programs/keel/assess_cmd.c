/*
 * keel assess: ETSI TS 103 701-style conformance testing of any device
 * (issue 6). Each subcommand lives in its own file (assess_*_cmd.c) and
 * prints its own --help.
 */
#include "cli.h"

static const char assess_usage[] =
    "usage: keel assess <subcommand> [options]\n"
    "\n"
    "Conformance testing against EN 303 645, modelled on ETSI TS 103 701: the\n"
    "manufacturer's ICS and IXIT, functional probes of the device, evidence.\n"
    "\n"
    "subcommands:\n"
    "  run        assess a device: every probe, a verdict per provision, the report\n"
    "  init       draft the ICS and IXIT of a Keel device from its keeld.conf\n"
    "  probe      one functional probe of a target: ports, tls, http, mqtt, service,\n"
    "             update, publication\n"
    "  firmware   static scan of a firmware image or tree (keys, hashes, debug services)\n"
    "  passwords  batch analysis of label passwords for 5.1-2\n"
    "  catalogue  the provisions with their conceptual checks and test units\n"
    "\n"
    "Run 'keel assess <subcommand> --help' for its options.\n";

int cmd_assess(int argc, char **argv)
{
    static const cli_sub_t subs[] = {
        {"run", NULL, assess_run_main},
        {"init", NULL, assess_init_main},
        {"catalogue", NULL, assess_catalogue_main},
        {"probe", NULL, assess_probe_main},
        {"firmware", NULL, assess_firmware_main},
        {"passwords", NULL, assess_passwords_main},
    };
    return cli_dispatch("assess", assess_usage, subs, sizeof subs / sizeof subs[0], argc, argv);
}

/* keel: the command line for the factory line, release engineers and labs. */
#include "cli.h"

#include "keel/crypto.h"

#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: keel <command> [options]\n"
    "\n"
    "Keel makes a connected product conform to ETSI EN 303 645 and proves it.\n"
    "\n"
    "commands:\n"
    "  factory    manufacturer PKI, per-device identities and label passwords, batch audit\n"
    "  bundle     signer certificates; create, inspect and verify signed update bundles\n"
    "  update     on a device: install a bundle into the inactive slot, confirm, status\n"
    "  boot       on a device: the emulated bootloader (pick a slot, verify it, fall back)\n"
    "  app        on a device: telemetry, events, product state and commands through keeld\n"
    "  assess     for labs: ICS/IXIT, functional probes and static scans of any device\n"
    "  fleet      for operators: keel-fleetd's registry, campaigns, alerts, erasure (HTTPS API)\n"
    "  disclose   for manufacturers: security.txt and the vulnerability disclosure policy\n"
    "  sbom       for release engineers: a CycloneDX SBOM of the programs and every library\n"
    "  vulns      for release engineers: OSV advisories matched against an SBOM\n"
    "  version    print the version\n"
    "\n"
    "Run 'keel <command> --help' for the options of a command.\n"
    "Exit status: 0 success, 1 the operation failed or found problems, 2 usage error.\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return CLI_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        fputs(usage, stdout);
        return CLI_OK;
    }
    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("keel %s\n", KEEL_VERSION);
        return CLI_OK;
    }
    if (keel_crypto_init() != KEEL_OK)
        return cli_fail(argv[1], KEEL_ERR_CRYPTO);
    if (strcmp(argv[1], "factory") == 0)
        return cmd_factory(argc - 1, argv + 1);
    if (strcmp(argv[1], "bundle") == 0)
        return cmd_bundle(argc - 1, argv + 1);
    if (strcmp(argv[1], "update") == 0)
        return cmd_update(argc - 1, argv + 1);
    if (strcmp(argv[1], "boot") == 0)
        return cmd_boot(argc - 1, argv + 1);
    if (strcmp(argv[1], "app") == 0)
        return cmd_app(argc - 1, argv + 1);
    if (strcmp(argv[1], "assess") == 0)
        return cmd_assess(argc - 1, argv + 1);
    if (strcmp(argv[1], "fleet") == 0)
        return cmd_fleet(argc - 1, argv + 1);
    if (strcmp(argv[1], "disclose") == 0)
        return cmd_disclose(argc - 1, argv + 1);
    if (strcmp(argv[1], "sbom") == 0)
        return cmd_sbom(argc - 1, argv + 1);
    if (strcmp(argv[1], "vulns") == 0)
        return cmd_vulns(argc - 1, argv + 1);
    fprintf(stderr, "keel: unknown command '%s'\n\n%s", argv[1], usage);
    return CLI_USAGE;
}

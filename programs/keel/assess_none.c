/*
 * keel without `keel assess` (KEEL_WITH_ASSESS=OFF,
 * docs/internals/build-profiles.md): the lab's tool and its libraries
 * (libarchive, libssh, crypt) are left out of a device image (5.6-6).
 */
#include "cli.h"

#include <stdio.h>

int cmd_assess(int argc, char **argv)
{
    (void)argc, (void)argv;
    fputs("keel: assess: built without keel assess (KEEL_WITH_ASSESS=OFF)\n", stderr);
    return CLI_USAGE;
}

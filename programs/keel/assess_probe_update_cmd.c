/* Placeholder until the probe lands; replaced by its owner. */
#include "cli.h"
#include <stdio.h>

int assess_probe_update_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("keel: this probe is not built yet\n", stderr);
    return 2;
}

int assess_probe_publication_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("keel: this probe is not built yet\n", stderr);
    return 2;
}

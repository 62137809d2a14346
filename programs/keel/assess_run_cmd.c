/* Placeholder until keel assess run lands. */
#include "cli.h"
#include <stdio.h>

int assess_run_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("keel: assess run is not built yet\n", stderr);
    return 2;
}

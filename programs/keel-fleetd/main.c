/* keel-fleetd: the fleet service (issue 7). Being written. */
#include <stdio.h>

int main(void)
{
    fputs("keel-fleetd: not built yet\n", stderr);
    return 2;
}

/*
 * Prints how Keel orders Debian versions, for tests/integration/vulns.sh to
 * hold against dpkg --compare-versions: reads "A B" lines on standard input,
 * writes "lt", "eq" or "gt" (or "invalid") for each.
 */
#include "keel/supply.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
    char line[2 * KEEL_DEBVER_MAX + 4];
    while (fgets(line, sizeof line, stdin) != NULL) {
        char *nl = strchr(line, '\n');
        if (nl == NULL) {
            fprintf(stderr, "debver_cmp: line too long\n");
            return 2;
        }
        *nl = '\0';
        char *sp = strchr(line, ' ');
        if (sp == NULL) {
            fprintf(stderr, "debver_cmp: expected \"A B\"\n");
            return 2;
        }
        *sp = '\0';
        const char *a = line, *b = sp + 1;
        if (!keel_debver_valid(a) || !keel_debver_valid(b)) {
            puts("invalid");
            continue;
        }
        int r = keel_debver_cmp(a, b);
        puts(r < 0 ? "lt" : r > 0 ? "gt" : "eq");
    }
    return ferror(stdin) || fflush(stdout) != 0 ? 1 : 0;
}

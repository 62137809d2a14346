#!/bin/sh
# cppcheck (scripts/cppcheck.sh, with the checked-in configuration) finds
# nothing in the product code as this build compiles it; and it does find
# what it is there for, planted here in a one-file compile database.
. "$(dirname "$0")/lib.sh"
command -v cppcheck >/dev/null 2>&1 || fail "cppcheck is not installed (make check installs it: scripts/deps.sh)"
RUN="$KEEL_SOURCE_DIR/scripts/cppcheck.sh"

note "src/ and programs/ are clean"
expect_rc 0 sh "$RUN" "$KEEL_BUILD_DIR"

note "planted: a read of an uninitialised variable, a leak on a failed realloc, a write past an array"
mkdir -p "$T/b"
cat >"$T/bad.c" <<'C'
#include <stdlib.h>
int f(int c)
{
    int x;
    if (c > 1)
        x = 2;
    return x;
}
void g(size_t n)
{
    char *buf = malloc(8);
    buf = realloc(buf, n);
    free(buf);
}
int h(void)
{
    int a[4];
    for (int i = 0; i <= 4; i++)
        a[i] = i;
    return a[0];
}
C
printf '[{"directory": "%s", "file": "%s/bad.c", "command": "cc -c %s/bad.c"}]\n' "$T" "$T" "$T" \
    >"$T/b/compile_commands.json"
expect_rc 1 sh "$RUN" "$T/b"
for id in uninitvar memleakOnRealloc arrayIndexOutOfBounds; do
    grep -q "bad.c:[0-9]*: [a-z]*: $id:" "$T/err" || fail "cppcheck did not report $id: $(cat "$T/err")"
done

note "a build without a compile database is an error, not a pass"
expect_rc 1 sh "$RUN" "$T"
grep -q "no compile database" "$T/err" || fail "no compile database passed: $(cat "$T/err")"
echo "cppcheck: 1 passed, 0 failed"

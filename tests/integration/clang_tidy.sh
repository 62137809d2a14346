#!/bin/sh
# clang-tidy (scripts/clang-tidy.sh, with the checked-in .clang-tidy) finds
# nothing in the product code as this build compiles it; and it does find
# what it is there for, planted here in a one-file compile database.
. "$(dirname "$0")/lib.sh"
command -v clang-tidy >/dev/null 2>&1 || fail "clang-tidy is not installed (make check installs it: scripts/deps.sh)"
RUN="$KEEL_SOURCE_DIR/scripts/clang-tidy.sh"

note "src/ and programs/ are clean"
expect_rc 0 sh "$RUN" "$KEEL_BUILD_DIR"
grep -q "files clean" "$T/out" || fail "no summary: $(cat "$T/out")"

note "planted: an unchecked write, a use after free, a leak, a copy without its NUL, rand() for a key,"
note "         vfork, a string compare on its truthiness, system(), a float loop counter, a misleading if"
mkdir -p "$T/b"
cat >"$T/bad.c" <<'C'
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
void unchecked(int fd, const char *buf, size_t n);
void unchecked(int fd, const char *buf, size_t n)
{
    write(fd, buf, n);
}
int after_free(void);
int after_free(void)
{
    char *p = malloc(8);
    if (p == NULL)
        return -1;
    free(p);
    return p[1];
}
int leak(int fail);
int leak(int fail)
{
    char *p = malloc(8);
    if (p == NULL || fail)
        return -1;
    free(p);
    return 0;
}
char *dup_short(const char *s);
char *dup_short(const char *s)
{
    char *d = malloc(strlen(s) + 1);
    if (d != NULL)
        memcpy(d, s, strlen(s));
    return d;
}
void weak_key(unsigned char *key, size_t n);
void weak_key(unsigned char *key, size_t n)
{
    for (size_t i = 0; i < n; i++)
        key[i] = (unsigned char)rand();
}
int spawn(void);
int spawn(void)
{
    return vfork();
}
int same(const char *a, const char *b);
int same(const char *a, const char *b)
{
    if (strcmp(a, b))
        return 0;
    return 1;
}
int shell(const char *cmd);
int shell(const char *cmd)
{
    return system(cmd);
}
int steps(void);
int steps(void)
{
    int n = 0;
    for (float x = 0.0f; x < 1.0f; x += 0.1f)
        n++;
    return n;
}
int guard(int ok, int *out);
int guard(int ok, int *out)
{
    if (!ok)
        *out = 0;
        return -1;
    return 0;
}
C
printf '[{"directory": "%s", "file": "%s/bad.c", "command": "cc -O2 -fcf-protection -Wall -c %s/bad.c"}]\n' \
    "$T" "$T" "$T" >"$T/b/compile_commands.json"
expect_rc 1 sh "$RUN" "$T/b"
for want in "7:.*cert-err33-c" "16:.*Use of memory after it is freed.*clang-analyzer-unix.Malloc" \
    "23:.*Potential leak.*clang-analyzer-unix.Malloc" "32:.*bugprone-not-null-terminated-result" \
    "39:.*cert-msc30-c" "44:.*clang-analyzer-security.insecureAPI.vfork" \
    "49:.*bugprone-suspicious-string-compare" "56:.*cert-env33-c" "62:.*cert-flp30-c" \
    "71:.*readability-misleading-indentation"; do
    grep -q "bad.c:$want" "$T/err" || fail "clang-tidy did not report $want: $(cat "$T/err")"
done
grep -q "^clang-tidy: [0-9]* findings, by check:" "$T/err" || fail "no summary of the findings: $(cat "$T/err")"

note "a gcc-only option in the database is left out, not an error"
sed 's/-fcf-protection/-fcf-protection -fanalyzer -Wformat-truncation=2/' "$T/b/compile_commands.json" \
    >"$T/b/cc.json"
mv "$T/b/cc.json" "$T/b/compile_commands.json"
expect_rc 1 sh "$RUN" "$T/b"
grep -q "bad.c:16:.*clang-analyzer-unix.Malloc" "$T/err" || fail "with gcc options: $(cat "$T/err")"
if grep -q "unknown argument" "$T/err"; then fail "a gcc option reached clang: $(cat "$T/err")"; fi

note "a build without a compile database is an error, not a pass"
expect_rc 1 sh "$RUN" "$T"
grep -q "no compile database" "$T/err" || fail "no compile database passed: $(cat "$T/err")"
echo "clang_tidy: 1 passed, 0 failed"

#!/bin/sh
# STYLE.md's banned functions (strcpy, sprintf, strtok, atoi, ...): neither
# the sources nor the built programs and libraries use one; and the checker
# really finds each kind of use (planted here), and only real calls.
. "$(dirname "$0")/lib.sh"
CHECK="$KEEL_SOURCE_DIR/scripts/banned-functions.py"

note "the source tree and the built product are clean"
expect_rc 0 python3 "$CHECK" --binaries "$KEEL_BUILD_DIR" "$KEEL_SOURCE_DIR"

# plant FILE CONTENT: a one-file tree; then expect_rc on it.
plant() {
    rm -rf "$T/tree" && mkdir -p "$T/tree/$(dirname "$1")" && printf '%s\n' "$2" >"$T/tree/$1"
}

note "a call is found, named with its file, line and what to use instead"
plant src/x/a.c 'int f(char *d, const char *s)
{
    strcpy(d, s);
    return atoi (s);
}'
expect_rc 1 python3 "$CHECK" "$T/tree"
grep -q '^banned-functions: src/x/a.c:3: strcpy: no bound' "$T/err" || fail "strcpy not named: $(cat "$T/err")"
grep -q '^banned-functions: src/x/a.c:4: atoi: no error report' "$T/err" || fail "atoi not named: $(cat "$T/err")"

note "in a header, in tests and benches too"
for f in include/keel/h.h tests/unit/t.c bench/b.c programs/p/m.c; do
    plant "$f" 'static inline void g(char *b) { sprintf(b, "%d", 1); }'
    expect_rc 1 python3 "$CHECK" "$T/tree"
    grep -q "^banned-functions: $f:1: sprintf" "$T/err" || fail "$f: sprintf not named: $(cat "$T/err")"
done

note "not a call: comments, strings, other names, members, the allow marker"
plant src/ok.c '/* strcpy(a, b) in a comment,
   and gets(x) on its next line */
// sprintf(b, "x") after slashes
static const char *s = "strtok(p, \" \")", c = '"'"'('"'"';
int keel_atoi(const char *s);
struct o { int (*atof)(const char *); };
int h(struct o *p, struct o q, char *d) { return keel_atoi(d) + p->atof(d) + q.atof(d) + strtok_r(d, ",", &d) != 0; }
void k(char *d) { strcat(d, "!"); } /* banned-functions: allow */'
expect_rc 0 python3 "$CHECK" "$T/tree"

note "a banned call hidden from the source reaches the binary: nm finds it, fortified or not"
mkdir -p "$T/bin/programs/p" "$T/bin/src"
printf '#include <stdio.h>\n#define FMT(b, v) sprintf(b, "%%d", v)\nint main(int c, char **v) { char b[32]; FMT(b, c); return puts(b) < 0 || !v; }\n' >"$T/m.c"
cc -O2 -D_FORTIFY_SOURCE=2 -o "$T/bin/programs/p/p" "$T/m.c" || fail "cc failed"
expect_rc 1 python3 "$CHECK" --binaries "$T/bin" "$T/tree"
grep -Eq '^banned-functions: programs/p/p: imports (__)?sprintf(_chk)?: no bound' "$T/err" ||
    fail "the binary's sprintf not found: $(cat "$T/err")"
cc -O0 -o "$T/bin/programs/p/p" "$T/m.c" || fail "cc failed"
expect_rc 1 python3 "$CHECK" --binaries "$T/bin" "$T/tree"
grep -q '^banned-functions: programs/p/p: imports sprintf: no bound' "$T/err" ||
    fail "the unfortified sprintf not found: $(cat "$T/err")"

note "a build without programs is an error, not a pass"
expect_rc 1 python3 "$CHECK" --binaries "$T/tree" "$T/tree"
grep -q 'no programs or libraries' "$T/err" || fail "an empty build passed: $(cat "$T/err")"
echo "banned_functions: 1 passed, 0 failed"

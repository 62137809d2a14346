#!/bin/sh
# make check: `make bench` (bench/run.sh) runs end to end on a tiny batch,
# prints its table and goal lines, writes BENCH_JSON, cleans up after itself,
# and fails loudly when something cannot run. It never looks at the figures:
# they are for `make bench`, on a batch large enough to mean something.
set -eu

: "${KEEL_SOURCE_DIR:?set KEEL_SOURCE_DIR to the source tree}"
: "${KEEL_BUILD_DIR:?set KEEL_BUILD_DIR to the build tree}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
    echo "bench_smoke: FAIL: $*" >&2
    exit 1
}
run_bench() {
    TMPDIR=$work/tmp BENCH_DEVICES=5 BENCH_CLI_DEVICES=2 sh "$KEEL_SOURCE_DIR/bench/run.sh" "$@"
}
mkdir "$work/tmp"

BENCH_JSON=$work/bench.json run_bench "$KEEL_BUILD_DIR" >"$work/out.txt" 2>"$work/err.txt" || {
    cat "$work/out.txt" "$work/err.txt" >&2
    fail "bench/run.sh exited non-zero"
}
for row in "keel provision" "crypto alone" "openssl CLI script"; do
    grep -Eq "^$row +[0-9.]+ " "$work/out.txt" || fail "no '$row' row in the table"
done
grep -Eq '^ratio keel / crypto alone: +[0-9.]+x +\(goal <= 1\.20x\) +(PASS|MISS)$' "$work/out.txt" ||
    fail "no ratio line"
grep -Eq '^speed-up keel vs CLI: +[0-9.]+x +\(goal >= 5\.00x\) +(PASS|MISS)$' "$work/out.txt" ||
    fail "no speed-up line"
for key in '"goals"' '"openssl_cli"' '"speedup_vs_cli"' '"ratio"' '"crypto_alone"' '"provision"'; do
    grep -q "$key" "$work/bench.json" || fail "BENCH_JSON has no $key"
done
[ -z "$(ls -A "$work/tmp")" ] || fail "bench/run.sh left files in its temporary directory"

# Anything that fails to run is an error, unlike a missed goal.
if run_bench "$work/no-such-build" >/dev/null 2>&1; then
    fail "bench/run.sh exited 0 without a build"
fi
mkdir "$work/bin"
printf '#!/bin/sh\nexit 1\n' >"$work/bin/argon2"
chmod +x "$work/bin/argon2"
if PATH=$work/bin:$PATH run_bench "$KEEL_BUILD_DIR" >/dev/null 2>&1; then
    fail "bench/run.sh exited 0 although the openssl CLI script failed"
fi
[ -z "$(ls -A "$work/tmp")" ] || fail "bench/run.sh left files behind after a failure"
echo "bench_smoke: ok"

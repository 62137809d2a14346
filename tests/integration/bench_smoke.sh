#!/bin/sh
# make check: `make bench` (bench/run.sh, then bench/update.sh and
# bench/keeld.sh) runs end to
# end on a tiny batch and a 4 MiB update payload, prints its tables and goal
# lines, writes BENCH_JSON, cleans up after itself, and fails loudly when
# something cannot run. It never looks at the figures: they are for
# `make bench`, on a batch and a payload large enough to mean something.
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
    TMPDIR=$work/tmp BENCH_DEVICES=5 BENCH_CLI_DEVICES=2 UPDATE_BENCH_MIB=4 UPDATE_BENCH_COMPARE='' \
        KEELD_BENCH_SECONDS=4 KEELD_BENCH_IDLE_SECONDS=1 KEELD_BENCH_LOGINS=3 HOSTILE_SECONDS=8 HOSTILE_SLOW=100 \
        sh "$KEEL_SOURCE_DIR/bench/run.sh" "$@"
}
# RAUC and SWUpdate are for make bench: make check stays hermetic and quick.
run_update() {
    TMPDIR=$work/tmp UPDATE_BENCH_MIB=${UPDATE_BENCH_MIB:-4} UPDATE_BENCH_COMPARE='' \
        sh "$KEEL_SOURCE_DIR/bench/update.sh" "$@"
}
valid_json() {
    python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" || fail "$1 is not valid JSON"
}
# The update benchmark's table and goal lines, in $1.
update_lines() {
    for row in "openssl dgst -sha256" "dd bs=1M conv=fsync" "keel update install" "keel boot \(verify slot\)" \
        "openssl dgst of the slot"; do
        grep -Eq "^$row +[0-9.]+ +[0-9]+$" "$1" || fail "no '$row' row in the update table"
    done
    grep -Eq '^ratio install / max\(hash, write\): +[0-9.]+x +\(goal <= 1\.25x\) +(PASS|MISS)$' "$1" ||
        fail "no install ratio line"
    grep -Eq '^ratio boot / openssl dgst of slot: +[0-9.]+x +\(goal <= 1\.10x\) +(PASS|MISS)$' "$1" ||
        fail "no boot ratio line"
    grep -Eq '^  written past the flipped byte: [0-9]+ bytes +\(goal <= 1 MiB\) +(PASS|MISS)$' "$1" ||
        fail "no tamper line"
    grep -Eq '^peak RSS keel update install: +[0-9]+ KiB +\(goal <= 8192 KiB\) +(PASS|MISS)$' "$1" ||
        fail "no RSS line"
    grep -Eq '^peak RSS keel --version: +[0-9]+ KiB' "$1" || fail "no baseline RSS line"
    grep -Eq '^(speed-up keel vs RAUC: +[0-9.]+x +\(goal >= 2\.00x\) +(PASS|MISS)|RAUC: not run \(.+\))$' "$1" ||
        fail "no RAUC line"
    grep -Eq '^(speed-up keel vs SWUpdate: +[0-9.]+x|SWUpdate: not run \(.+\))' "$1" || fail "no SWUpdate line"
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
for key in '"goals"' '"openssl_cli"' '"speedup_vs_cli"' '"ratio"' '"crypto_alone"' '"provision"' '"update"' \
    '"install_ratio"'; do
    grep -q "$key" "$work/bench.json" || fail "BENCH_JSON has no $key"
done
valid_json "$work/bench.json"
update_lines "$work/out.txt"
# keeld's part (bench/keeld.sh): the guess rates, idle cost, login latency.
for line in '^1 source \(127\.0\.0\.2\) +[0-9]+ +[0-9]+ ' '^20 sources \(127\.0\.0\.2-21\) +[0-9]+ +[0-9]+ ' \
    '^idle: VmRSS [0-9]+ KiB, [0-9.]+ wake-ups/s' '^ratio owner login / argon2: +p50 [0-9.]+x' \
    '^denied login: wrong user p50 [0-9.]+ ms, wrong password p50 [0-9.]+ ms, ratio [0-9.]+x'; do
    grep -Eq "$line" "$work/out.txt" || fail "no keeld bench line matching '$line'"
done
grep -q '"keeld"' "$work/bench.json" || fail "BENCH_JSON has no \"keeld\""
grep -Eq '^hostile p99 goal \(< [0-9]+ ms\): (PASS|MISS)$' "$work/out.txt" || fail "no hostile p99 goal line"
[ -z "$(ls -A "$work/tmp")" ] || fail "bench/run.sh left files in its temporary directory"

# bench/update.sh on its own.
UPDATE_BENCH_JSON=$work/update.json run_update "$KEEL_BUILD_DIR" >"$work/update.txt" 2>"$work/err.txt" || {
    cat "$work/update.txt" "$work/err.txt" >&2
    fail "bench/update.sh exited non-zero"
}
update_lines "$work/update.txt"
valid_json "$work/update.json"
for key in '"install_ratio"' '"boot_ratio"' '"tamper"' '"rss_kib"' '"rauc"' '"swupdate"' '"pass"'; do
    grep -q "$key" "$work/update.json" || fail "UPDATE_BENCH_JSON has no $key"
done
[ -z "$(ls -A "$work/tmp")" ] || fail "bench/update.sh left files in its temporary directory"

# Anything that fails to run is an error, unlike a missed goal.
if run_bench "$work/no-such-build" >/dev/null 2>&1; then
    fail "bench/run.sh exited 0 without a build"
fi
if run_update "$work/no-such-build" >/dev/null 2>&1; then
    fail "bench/update.sh exited 0 without a build"
fi
if UPDATE_BENCH_MIB=x run_update "$KEEL_BUILD_DIR" >/dev/null 2>&1; then
    fail "bench/update.sh exited 0 with a bad UPDATE_BENCH_MIB"
fi
mkdir "$work/bin"
printf '#!/bin/sh\nexit 1\n' >"$work/bin/argon2"
chmod +x "$work/bin/argon2"
if PATH=$work/bin:$PATH run_bench "$KEEL_BUILD_DIR" >/dev/null 2>&1; then
    fail "bench/run.sh exited 0 although the openssl CLI script failed"
fi
[ -z "$(ls -A "$work/tmp")" ] || fail "bench/run.sh left files behind after a failure"
echo "bench_smoke: ok"

#!/bin/sh
# make fuzz: runs every libFuzzer target for SECONDS on a copy of its seed
# corpus, and reports executions and findings. usage: run.sh BUILD_DIR SECONDS
set -eu
build=$1
secs=${2:-60}
src=$(cd "$(dirname "$0")" && pwd)
status=0
for bin in "$build"/tests/fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    t=$(basename "$bin")
    name=${t#fuzz_}
    work="$build/fuzz-work/$name"
    mkdir -p "$work/corpus" "$work/artifacts"
    cp -n "$src/corpus/$name"/* "$work/corpus/" 2>/dev/null || true
    cp -n "$build/tests/fuzz/corpus/$name"/* "$work/corpus/" 2>/dev/null || true # seeds made by cmake
    # Per-target libFuzzer flags, one per line (fuzz_firmware.options says why).
    opts=$(grep -v '^#' "$src/$t.options" 2>/dev/null || true)
    # shellcheck disable=SC2086 # one flag per word
    if "$bin" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 $opts \
        -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
        printf '%-20s %10s executions in %ss, no finding (corpus: %s inputs)\n' "$name" "${execs:-?}" "$secs" \
            "$(ls "$work/corpus" | wc -l)"
    else
        status=1
        printf '%-20s FINDING: see %s and %s\n' "$name" "$work/log" "$work/artifacts"
        grep -m 5 -E "ERROR|SUMMARY|==[0-9]+==" "$work/log" || true
    fi
done
exit $status

# Shared by the benchmark scripts (sourced after they define die).

# bench_json_merge KEY FILE: puts FILE's JSON into $BENCH_JSON as "KEY".
# bench/run.sh's JSON is one object whose last line is its closing brace: the
# new member goes in before it. A missing or empty $BENCH_JSON becomes
# {"KEY": ...}. Uses $tmp for the merged copy.
bench_json_merge() {
    if [ -s "$BENCH_JSON" ]; then
        [ "$(tail -n 1 "$BENCH_JSON")" = "}" ] || die "$BENCH_JSON does not end with a closing brace"
        { sed '$d' "$BENCH_JSON"; printf ',\n  "%s": ' "$1"; cat "$2"; printf '}\n'; } >"$tmp/merged.json"
    else
        { printf '{"%s": ' "$1"; cat "$2"; printf '}\n'; } >"$tmp/merged.json"
    fi
    cat "$tmp/merged.json" >"$BENCH_JSON" || die "could not write $BENCH_JSON"
}

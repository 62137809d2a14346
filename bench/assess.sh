#!/bin/sh
# make bench: keel assess (issue 6), timed in the end-to-end test's network
# namespace (tests/integration/assess_run.sh, which writes its figures when
# ASSESS_FIGURES names a file):
#   (a) the full assessment of a Keel device with ICS and IXIT, against the
#       issue's goal of 60 s;
#   (b) the 65535-port TCP scan inside keel assess run, against nmap -p- on
#       the same namespace in the same run (ratio; goal: keel <= 5 s);
#   (c) the discovery run over the broken Debian targets, for reference.
# Benchmarks report, they do not gate: exit 0 whatever the figures, non-zero
# only when something fails to run. See docs/internals/bench.md.
#
# usage: sh bench/assess.sh BUILD_DIR
# env:   BENCH_JSON=path   merge the figures into bench/run.sh's JSON as "assess"
set -eu

die() {
    echo "bench: assess: $*" >&2
    exit 1
}

[ $# -eq 1 ] || { echo "usage: sh bench/assess.sh BUILD_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

echo "keel assess: the end-to-end run (tests/integration/assess_run.sh), timed"
rc=0
KEEL=$build/programs/keel/keel KEEL_SOURCE_DIR=$(cd "$here/.." && pwd) KEEL_BUILD_DIR=$build \
    ASSESS_FIGURES=$tmp/figures.json sh "$here/../tests/integration/assess_run.sh" >"$tmp/out.txt" 2>&1 || rc=$?
if [ "$rc" -eq 77 ]; then
    echo "  skipped: $(grep SKIP "$tmp/out.txt" | head -n 1)"
    exit 0
fi
[ "$rc" -eq 0 ] || { cat "$tmp/out.txt" >&2; die "assess_run.sh failed (exit $rc)"; }
[ -s "$tmp/figures.json" ] || die "assess_run.sh wrote no figures"
python3 - "$tmp/figures.json" <<'EOF' || die "cannot read the figures"
import json, sys
f = json.load(open(sys.argv[1]))
ok = lambda b: "PASS" if b else "MISS"
print("  full assessment of a Keel device (ICS+IXIT, firmware, labels): %.1f s   goal <= 60 s: %s"
      % (f["keel_device_s"], ok(f["keel_device_s"] <= 60)))
print("  65535-port scan: keel %.2f s, nmap -p- %.2f s in the same namespace: ratio keel/nmap %.2f   goal keel <= 5 s: %s"
      % (f["scan_s"], f["nmap_s"], f["scan_s"] / f["nmap_s"], ok(f["scan_s"] <= 5)))
print("  discovery run over five broken targets: %.1f s" % f["discovery_s"])
EOF
if [ -n "${BENCH_JSON:-}" ]; then
    . "$here/lib.sh"
    bench_json_merge assess "$tmp/figures.json"
fi

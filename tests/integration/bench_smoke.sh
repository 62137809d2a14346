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
        LINK_STORM_SMOKE=1 FLEET_ANOMALY_QUICK=1 BENCH_ASSESS_SKIP=1 KEYSTORE_BENCH_QUICK=1 \
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
# bench/fleet_ingest.sh on 20 devices x 20 messages.
FLEET_BENCH_SMOKE=1
export FLEET_BENCH_SMOKE

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
# link_storm (bench/link_storm.c, --smoke through run.sh): a seeded simulation,
# so its figures are the same on every machine and are checked here against
# what losing the design would do (no jitter: the whole fleet in one second;
# counter reset at CONNACK: 2 attempts/s a device); the goal peak/mean <= 2
# itself is make bench's verdict.
grep -Eq '^verdict: keel full jitter, broker outage: peak/mean [0-9.]+x .+\(goal <= 2\.00x\) +(PASS|MISS)$' \
    "$work/out.txt" || fail "no link_storm verdict line"
storm_rc=0
"$KEEL_BUILD_DIR/bench/link_storm" --smoke --json >"$work/storm.json" || storm_rc=$?
python3 - "$work/bench.json" "$work/storm.json" "$storm_rc" <<'PY' || fail "link_storm: see above"
import json, sys
merged, d, rc = json.load(open(sys.argv[1])).get("link_storm"), json.load(open(sys.argv[2])), int(sys.argv[3])
def run(scen, design, limited=True):
    return next(r for r in d[scen] if r["design"] == design and (r["capacity_per_second"] is not None) == limited)
n, cap, first = d["devices"], d["backoff"]["cap_s"], d["backoff"]["first_connect_s"]
def figures(x):  # all but the wall-clock times, which differ from run to run
    if isinstance(x, dict):
        return {k: figures(v) for k, v in x.items() if k != "wall_seconds"}
    return [figures(v) for v in x] if isinstance(x, list) else x
checks = [
    (figures(merged) == figures(d), "BENCH_JSON's link_storm is not link_storm --smoke's figures"),
    (rc == (0 if d["pass"] else 1), "exit %d does not match pass=%s" % (rc, d["pass"])),
]
for limited in (True, False):
    k = run("outage", "keel_full_jitter", limited)
    b = run("power_cut", "keel_full_jitter", limited)
    c = run("kick", "keel_full_jitter", limited)
    checks += [
        (k["complete"] and k["online_100_seconds"] <= cap + 1, "A: not all online within the cap of recovery"),
        # at the cap the delay is uniform in [cap/2, cap]: 0.75 cap on average
        (k["peak_per_second"] * 0.75 * cap / n < 1.2, "A: peak %d/s above N/(0.75 cap) + 20 %%" % k["peak_per_second"]),
        (k["peak_mean"] <= 2.0, "A: keel's peak/mean %.2f misses the goal of 2" % k["peak_mean"]),
        (run("outage", "full_jitter_at_cap", limited)["peak_mean"] > k["peak_mean"] + 0.3,
         "A: [cap/2, cap] at the cap no longer beats plain full jitter"),
        (run("outage", "fixed_5s", limited)["peak_per_second"] == n, "A: the fixed baseline is not synchronised"),
        (b["complete"], "B: not all online"),
        (c["kick_rate_per_second"] * 0.75 * cap / n < 1.2, "C: %.0f attempts/s while kicked" % c["kick_rate_per_second"]),
        (run("kick", "reset_at_connack", limited)["kick_rate_per_second"] > 10 * c["kick_rate_per_second"],
         "C: the reset-at-CONNACK baseline is no tight loop"),
    ]
checks.append((run("power_cut", "keel_full_jitter", False)["peak_per_second"] * first / n < 1.2,
               "B: first connects not spread over first_connect"))
bad = [why for ok, why in checks if not ok]
for why in bad:
    print("link_storm:", why, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
# fleet_anomaly (bench/fleet_anomaly.c, --quick through run.sh): its table, verdict and JSON.
grep -Eq '^verdict: fleet anomaly precision and recall >= 0\.90 for every kind \(goal\): (PASS|MISS)$' \
    "$work/out.txt" || fail "no fleet_anomaly verdict line"
python3 -c 'import json,sys; k=json.load(open(sys.argv[1]))["fleet_anomaly"]["kinds"]; sys.exit(len(k) != 7)' \
    "$work/bench.json" || fail "BENCH_JSON has no fleet_anomaly with its 7 kinds"
# fleet_ingest (bench/fleet_ingest.sh): the five rows (live and drain), the goal line, zero loss, its JSON.
for row in "mosquitto_sub \(ceiling\)" "keel-fleetd, SQLite" "keel-fleetd, PostgreSQL" \
    "2 x keel-fleetd, SQLite \(1 file\)" "2 x keel-fleetd, PostgreSQL"; do
    grep -Eq "^$row( +[0-9]+ +[0-9.]+( +[0-9.]+)?){2} *$" "$work/out.txt" ||
        fail "no '$row' row in the fleet ingest table"
done
grep -Eq '^ratio keel-fleetd SQLite / ceiling, live: median [0-9.]+x of 1 paired run \([0-9.]+x; us/msg: [0-9.]+\) \(goal >= 0\.80x: (PASS|MISS)\)$' \
    "$work/out.txt" || fail "no fleet ingest goal line"
grep -Eq '^ratio keel-fleetd SQLite / ceiling, drain: [0-9.]+x \(capacity, no goal\)$' "$work/out.txt" ||
    fail "no fleet ingest drain ratio line"
grep -q '^zero loss: every run stored exactly the 400 messages' "$work/out.txt" || fail "no fleet zero-loss line"
python3 -c '
import json, sys
f = json.load(open(sys.argv[1]))["fleet_ingest"]
keys = ("ceiling", "sqlite", "postgresql", "sqlite_2", "postgresql_2")
sys.exit(not f["zero_loss"] or any(f[m][k] is None for m in ("live", "drain") for k in keys)
         or len(f["goal_ratios"]) != 1 or f["goal_ratio_median"] is None
         or any(f[m]["cpu_us_per_message"][k] < 0 for m in ("live", "drain") for k in keys[1:]))' \
    "$work/bench.json" || fail "BENCH_JSON has no fleet_ingest with its live and drain rates"
# The keystore drivers (bench/keystore.sh, KEYSTORE_BENCH_QUICK=1): the table and the three in BENCH_JSON.
for row in "file \(sealed key\)" "pkcs11 \(SoftHSM2\)" "tpm2 \(swtpm\+abrmd\)"; do
    grep -Eq "^$row +[0-9.]+ ms +[0-9.]+ ms( +[0-9.]+){3}$" "$work/out.txt" || fail "no '$row' row in the keystore table"
done
grep -Eq '^tpm2: +sign [0-9.]+x file, EVP sign [0-9.]+x file, TLS 1\.3 [0-9.]+x file, TLS 1\.2 [0-9.]+x file$' \
    "$work/out.txt" || fail "no tpm2 ratio line in the keystore table"
python3 -c '
import json, sys
k = json.load(open(sys.argv[1]))["keystore"]
figs = ("sign_ms_median", "sign_ms_p95", "evp_signs_per_second", "tls13_handshakes_per_second",
        "tls12_handshakes_per_second")
sys.exit(sorted(k) != ["file", "pkcs11", "tpm2"] or any(k[d]["driver"] != d or k[d]["tls13_handshakes"] < 1
         or k[d]["tls12_handshakes"] < 1 or any(not k[d][f] > 0 for f in figs) for d in k))' \
    "$work/bench.json" || fail "BENCH_JSON has no keystore with its three drivers"
storm_rc=0
"$KEEL_BUILD_DIR/bench/link_storm" --devices 0 >/dev/null 2>&1 || storm_rc=$?
[ "$storm_rc" -eq 2 ] || fail "link_storm --devices 0 exited $storm_rc, not 2 (usage)"
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

#!/bin/sh
# make bench: keeld's login path with the DEFAULT Argon2id cost (t=2,
# 19456 KiB, p=1) and the default throttle (free_failures 3, backoff 1 s
# doubling to 300 s, 20 evaluations a minute globally):
#   (a) guesses an online attacker gets, with 50 parallel connections from
#       one source and from 20 sources (127.0.0.2..21), over
#       KEELD_BENCH_SECONDS, next to the most the throttle parameters allow
#       in that time and per hour (bench/keeld_guess.py theory);
#   (b) keeld's idle RSS and context switches (wake-ups) per second;
#   (c) wrong user vs wrong password: the same time (p50 ratio);
#   (d) the owner's login latency from a clean source, p50/p99, as a ratio
#       to a bare Argon2id hash of the same parameters (the `argon2` CLI,
#       process start included) timed in the same run; and again while the
#       20-source attack runs;
#   (e) an API round trip on a kept-alive connection, p50/p99, as a ratio to
#       a bare TLS server in the same run answering the same bytes.
# Benchmarks report, they do not gate: exit 0 whatever the figures, non-zero
# only when something fails to run. Loopback only. See docs/internals/bench.md.
#
# usage: sh bench/keeld.sh BUILD_DIR
# env:   KEELD_BENCH_SECONDS (60)       length of each attack run
#        KEELD_BENCH_IDLE_SECONDS (10)  idle window for RSS and wake-ups
#        KEELD_BENCH_LOGINS (30)        owner logins / argon2 runs timed
#        KEELD_BENCH_CONNS (50)         attacker connections per run
#        KEELD_BENCH_JSON=path          write the figures as JSON
#        BENCH_JSON=path                merge them into bench/run.sh's JSON as "keeld"
# smoke: KEELD_BENCH_SECONDS=4 KEELD_BENCH_IDLE_SECONDS=1 KEELD_BENCH_LOGINS=3 sh bench/keeld.sh build
set -eu

die() {
    echo "bench: keeld: $*" >&2
    exit 1
}
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ $# -eq 1 ] || { echo "usage: sh bench/keeld.sh BUILD_DIR" >&2; exit 2; }
keel=$1/programs/keel/keel
keeld=$1/programs/keeld/keeld
for exe in "$keel" "$keeld"; do
    [ -x "$exe" ] || die "$exe missing: build first (make build)"
done
here=$(cd "$(dirname "$0")" && pwd)
guess=$here/keeld_guess.py
command -v python3 >/dev/null 2>&1 || die "python3 is needed"
command -v argon2 >/dev/null 2>&1 || die "the argon2 CLI is needed (Debian package argon2)"
command -v curl >/dev/null 2>&1 || die "curl is needed"

secs=${KEELD_BENCH_SECONDS:-60}
idle=${KEELD_BENCH_IDLE_SECONDS:-10}
logins=${KEELD_BENCH_LOGINS:-30}
conns=${KEELD_BENCH_CONNS:-50}
for n in "$secs" "$idle" "$logins" "$conns"; do
    case $n in '' | *[!0-9]* | 0) die "KEELD_BENCH_SECONDS, _IDLE_SECONDS, _LOGINS and _CONNS must be positive whole numbers" ;; esac
done

tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')

# Two devices with the factory's default Argon2id cost: one per attack run,
# so that each starts with a clean throttle.
"$keel" factory init --dir "$tmp/f" --org "Keel Bench" >/dev/null || die "keel factory init failed"
"$keel" factory provision --dir "$tmp/f" --model bench-1 --count 2 --out "$tmp/b" >/dev/null ||
    die "keel factory provision failed"
dev() { sed -n "$(($1 + 1))p" "$tmp/b/labels.csv" | cut -d, -f"$2"; }

# start N: keeld for device N with every default but the listen address.
start() {
    "$keeld" --config "$tmp/b/$(dev "$1" 1)/keeld.conf" -o "api.listen=127.0.0.1:$port" \
        2>>"$tmp/keeld.log" >/dev/null &
    pid=$!
    i=0
    until [ "$(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/api/v1/status" 2>/dev/null)" = 200 ]; do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$tmp/keeld.log" >&2; die "keeld exited at start"; }
        i=$((i + 1))
        [ $i -lt 150 ] || die "keeld did not answer within 15 s"
        sleep 0.1
    done
}
stop() {
    kill -TERM "$pid"
    wait "$pid" || die "keeld exited non-zero on SIGTERM"
    pid=
}
# set_password N PW: the owner replaces device N's label password.
set_password() {
    curl -sk --max-time 30 -o "$tmp/login.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary "{\"username\":\"admin\",\"password\":\"$(dev "$1" 4)\"}" \
        "https://127.0.0.1:$port/api/v1/session" >"$tmp/code" || true
    [ "$(cat "$tmp/code")" = 200 ] || die "label password login failed: $(cat "$tmp/code") $(cat "$tmp/login.json")"
    tok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$tmp/login.json")
    c=$(curl -sk --max-time 30 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $tok" --data-binary "{\"current\":\"$(dev "$1" 4)\",\"new\":\"$2\"}" \
        "https://127.0.0.1:$port/api/v1/password") || true
    [ "$c" = 204 ] || die "password change failed: $c"
}
# j FILE EXPR: a Python expression over the JSON in FILE (as d).
j() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

OWNER_PW="Bench-Owner-Passphrase-2026"
srcs20=$(python3 -c 'print(",".join("127.0.0.%d" % i for i in range(2, 22)))')

echo "bench: keeld, default Argon2id (t=2, 19456 KiB, p=1) and throttle (3 free, 1 s doubling to 300 s, 20/min), ${secs} s per attack run"

# --- device 1: idle, owner latency, one-source attack
start 1
sleep 2
python3 "$guess" ctxt --pid "$pid" --seconds "$idle" >"$tmp/idle.json" || die "idle measurement failed"
set_password 1 "$OWNER_PW"
python3 "$guess" owner --port "$port" --password "$OWNER_PW" --count "$logins" >"$tmp/owner.json" ||
    die "owner logins failed"
[ "$(j "$tmp/owner.json" 'd["n"]')" -gt 0 ] || die "no owner login succeeded: $(j "$tmp/owner.json" 'd["errors"]')"
python3 "$guess" denied --port "$port" --password "$OWNER_PW" --count "$logins" >"$tmp/denied.json" ||
    die "wrong-user / wrong-password logins failed"
python3 "$guess" argon2 --count "$logins" --t 2 --m 19456 >"$tmp/argon2.json" || die "argon2 CLI failed"
python3 "$guess" rtt --port "$port" --count 200 >"$tmp/rtt.json" || die "the API round trips failed"
python3 "$guess" attack --port "$port" --sources 127.0.0.2 --conns "$conns" --seconds "$secs" >"$tmp/a1.json" ||
    die "the one-source attack failed"
hwm1=$(sed -n 's/^VmHWM:[ 	]*\([0-9]*\) kB$/\1/p' "/proc/$pid/status")
stop

# --- device 2: 20 sources, the owner logging in meanwhile
start 2
set_password 2 "$OWNER_PW"
ointerval=$(python3 -c "print(max(0.2, $secs / max(1, $logins) * 0.8))")
python3 "$guess" owner --port "$port" --password "$OWNER_PW" --count "$logins" --interval "$ointerval" \
    --max-seconds "$secs" >"$tmp/owner_attack.json" &
opid=$!
python3 "$guess" attack --port "$port" --sources "$srcs20" --conns "$conns" --seconds "$secs" >"$tmp/a20.json" ||
    die "the 20-source attack failed"
wait "$opid" || die "owner logins during the attack failed"
hwm2=$(sed -n 's/^VmHWM:[ 	]*\([0-9]*\) kB$/\1/p' "/proc/$pid/status")
stop

python3 "$guess" theory --seconds "$secs" --sources 1 >"$tmp/t1.json"
python3 "$guess" theory --seconds "$secs" --sources 20 >"$tmp/t20.json"

python3 - "$tmp" "$secs" "$conns" "$hwm1" "$hwm2" <<'EOF' >"$tmp/keeld.json"
import json, sys
tmp, secs, conns, hwm1, hwm2 = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
L = lambda n: json.load(open("%s/%s.json" % (tmp, n)))
out = {"seconds": secs, "conns": conns, "attack": {}}
for name, a, t in (("one_source", "a1", "t1"), ("twenty_sources", "a20", "t20")):
    a, t = L(a), L(t)
    g = a["guesses"]
    scale = t["max_guesses_hour"] / t["max_guesses"] if t["max_guesses"] else 0
    out["attack"][name] = {
        "guesses": g, "throttled_429": a["throttled"], "other": a["other"], "errors": a["errors"],
        "theory_guesses": t["max_guesses"], "theory_guesses_hour": t["max_guesses_hour"],
        "per_hour_scaled": round(g * scale, 1), "per_hour_naive": round(g * 3600.0 / secs, 1),
        "per_source": a["per_source"], "guess_times": a["guess_times"][:100]}
idle, own, arg, owa = L("idle"), L("owner"), L("argon2"), L("owner_attack")
out["idle"] = {"rss_kib": idle["rss_kib"], "switches_per_second": idle["per_second"],
               "seconds": idle["seconds"], "threads": idle["threads"]}
out["peak_rss_kib"] = {"one_source": hwm1, "twenty_sources": hwm2}
def strip(d):
    return {k: v for k, v in d.items() if k != "all_ms"}
out["owner_login"] = strip(own)
out["owner_login_under_attack"] = strip(owa)
out["argon2_cli"] = strip(arg)
den = L("denied")
out["denied"] = {"wrong_user": strip(den["wrong_user"]), "wrong_password": strip(den["wrong_password"]),
                 "errors": den["errors"], "ratio_p50": den["ratio_p50"]}
out["api_rtt"] = L("rtt")
out["ratio_p50"] = round(own["p50_ms"] / arg["p50_ms"], 3) if own["p50_ms"] and arg["p50_ms"] else None
out["ratio_p99"] = round(own["p99_ms"] / arg["p99_ms"], 3) if own["p99_ms"] and arg["p99_ms"] else None
json.dump(out, sys.stdout, indent=2)
print()
EOF

python3 - "$tmp/keeld.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["seconds"]
print("%-32s %8s %10s %14s %14s %12s" % ("attacker (%d conns, %g s)" % (d["conns"], s), "guesses", "theory",
                                          "/hour scaled", "/hour naive", "theory/hour"))
for name, label in (("one_source", "1 source (127.0.0.2)"), ("twenty_sources", "20 sources (127.0.0.2-21)")):
    a = d["attack"][name]
    print("%-32s %8d %10d %14.1f %14.1f %12d" % (label, a["guesses"], a["theory_guesses"], a["per_hour_scaled"],
                                                a["per_hour_naive"], a["theory_guesses_hour"]))
    if a["guesses"] > a["theory_guesses"]:
        print("  above the model: %d guesses where the parameters allow %d" % (a["guesses"], a["theory_guesses"]))
    extra = dict(a["other"], **{"error " + k: v for k, v in a["errors"].items()})
    print("  429 answers: %d%s" % (a["throttled_429"], ("; other: %s" % extra) if extra else ""))
i = d["idle"]
print("idle: VmRSS %d KiB, %.2f wake-ups/s (context switches over %g s, %d thread(s))"
      % (i["rss_kib"], i["switches_per_second"], i["seconds"], i["threads"]))
print("peak RSS (VmHWM): %d KiB after the 1-source run, %d KiB after the 20-source run"
      % (d["peak_rss_kib"]["one_source"], d["peak_rss_kib"]["twenty_sources"]))
o, a, u = d["owner_login"], d["argon2_cli"], d["owner_login_under_attack"]
print("owner login (clean source):   p50 %7.1f ms  p99 %7.1f ms  (%d logins)" % (o["p50_ms"], o["p99_ms"], o["n"]))
print("argon2 CLI, same parameters:  p50 %7.1f ms  p99 %7.1f ms  (%d runs)" % (a["p50_ms"], a["p99_ms"], a["n"]))
print("ratio owner login / argon2:   p50 %.2fx  p99 %.2fx" % (d["ratio_p50"], d["ratio_p99"]))
r = d["api_rtt"]
print("API round trip, kept-alive GET /api/v1/status: p50 %.3f ms p99 %.3f ms; a bare TLS server %.3f ms: %.2fx"
      % (r["keeld"]["p50_ms"], r["keeld"]["p99_ms"], r["floor"]["p50_ms"], r["ratio_p50"] or 0))
w = d["denied"]
print("denied login: wrong user p50 %.1f ms, wrong password p50 %.1f ms, ratio %.2fx  (%d each%s)"
      % (w["wrong_user"]["p50_ms"] or 0, w["wrong_password"]["p50_ms"] or 0, w["ratio_p50"] or 0,
         w["wrong_user"]["n"], ", unexpected answers %s" % w["errors"] if w["errors"] else ""))
if u["n"]:
    print("owner login during the 20-source attack: p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms  (%d logins%s)"
          % (u["p50_ms"], u["p99_ms"], u["max_ms"], u["n"],
             ", failures %s" % u["errors"] if u["errors"] else ""))
else:
    print("owner login during the 20-source attack: NO LOGIN SUCCEEDED (%s)" % u["errors"])
EOF

if [ -n "${KEELD_BENCH_JSON:-}" ]; then
    cp "$tmp/keeld.json" "$KEELD_BENCH_JSON" || die "could not write $KEELD_BENCH_JSON"
fi
[ -z "${BENCH_JSON:-}" ] || bench_json_merge keeld "$tmp/keeld.json"

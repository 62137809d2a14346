#!/bin/sh
# The keystore drivers side by side, in one run on one machine: bench-keystore
# (bench/keystore.c) for
#   file    a sealed key in a temporary directory (the baseline)
#   pkcs11  a key on a SoftHSM2 token made here, with random PINs
#   tpm2    a key in a software TPM (swtpm behind tpm2-abrmd, started by
#           tests/integration/tpm_lib.sh)
# and a table of each figure against the file driver's. The drivers take
# turns, round after round, and each keeps its best round: a slow spell of
# the shared machine then hurts all three alike. A report: no goal,
# exit non-zero only when something fails to run. Everything started here is
# stopped, and every file removed, on every exit path.
#
# usage: sh bench/keystore.sh BUILD_DIR
# env:   KEYSTORE_BENCH_SIGNS (200)   signatures per latency / EVP figure
#        KEYSTORE_BENCH_SECONDS (3)   seconds of TLS 1.3, then TLS 1.2, handshakes
#        KEYSTORE_BENCH_ROUNDS (3)    rounds of the three drivers
#        KEYSTORE_BENCH_QUICK=1       1 round, 5 signatures, 0.2 s (make check's smoke)
#        KEEL_PKCS11_MODULE           the SoftHSM2 module, when not in a usual place
#        BENCH_JSON_OUT=path          also write {"file":{..},"pkcs11":{..},"tpm2":{..}}
set -eu

[ $# -eq 1 ] || { echo "usage: sh bench/keystore.sh BUILD_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" 2>/dev/null && pwd) || { echo "bench/keystore: no build directory $1" >&2; exit 1; }
bench=$build/bench/bench-keystore
KEEL=$build/programs/keel/keel
for exe in "$KEEL" "$bench"; do
    [ -x "$exe" ] || { echo "bench/keystore: $exe missing: build first (make build)" >&2; exit 1; }
done
if [ -n "${KEYSTORE_BENCH_QUICK:-}" ]; then
    signs=5
    seconds=0.2
    rounds=1
else
    signs=${KEYSTORE_BENCH_SIGNS:-200}
    seconds=${KEYSTORE_BENCH_SECONDS:-3}
    rounds=${KEYSTORE_BENCH_ROUNDS:-3}
fi
for n in "$signs" "$rounds"; do
    case $n in
    '' | *[!0-9]* | 0) echo "bench/keystore: KEYSTORE_BENCH_SIGNS and _ROUNDS must be positive numbers" >&2; exit 1 ;;
    esac
done
KEEL_SOURCE_DIR=$(cd "$here/.." && pwd)
export KEEL KEEL_SOURCE_DIR

# $T (removed on exit), fail, free_port; then the TPM's daemons, stopped on exit.
. "$here/../tests/integration/lib.sh"
. "$here/../tests/integration/tpm_lib.sh"

die() {
    echo "bench/keystore: $*" >&2
    exit 1
}

command -v softhsm2-util >/dev/null 2>&1 || die "softhsm2-util not found (run scripts/deps.sh)"

# KEEL_PKCS11_MODULE first, then where Debian and friends put SoftHSM2 (the
# places tests/unit/test_keystore_pkcs11.c looks).
module=${KEEL_PKCS11_MODULE:-}
if [ -z "$module" ]; then
    for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so /usr/lib/arm-linux-gnueabihf/softhsm/libsofthsm2.so \
        /usr/lib64/pkcs11/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
        [ -r "$m" ] && { module=$m; break; }
    done
fi
if [ -z "$module" ] || [ ! -r "$module" ]; then
    die "SoftHSM2 module not found: install softhsm2 or set KEEL_PKCS11_MODULE"
fi

# A fresh random secret of 24 hex digits; it goes to children through the
# environment only (softhsm2-util takes the token's PINs on its command line).
random_pin() {
    _rp=$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
    [ ${#_rp} -eq 24 ] || die "cannot read /dev/urandom"
    echo "$_rp"
}

# run_driver NAME ROUND ARGS...: bench-keystore for one driver on a key of
# its own, the JSON in $T/NAME-ROUND.json.
run_driver() {
    _rd=$1
    _rr=$2
    shift 2
    "$bench" --driver "$_rd" --label "bench-$_rr" --signs "$signs" --seconds "$seconds" "$@" \
        >"$T/$_rd-$_rr.json" || die "bench-keystore --driver $_rd failed"
}

mkdir -m 700 "$T/p11" "$T/p11/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$T/p11/tokens" \
    >"$T/p11/softhsm2.conf"
SOFTHSM2_CONF=$T/p11/softhsm2.conf
export SOFTHSM2_CONF
p11_pin=$(random_pin)
softhsm2-util --init-token --free --label keel-bench --so-pin "$(random_pin)" --pin "$p11_pin" \
    >"$T/p11/init.log" 2>&1 || { cat "$T/p11/init.log" >&2; die "softhsm2-util --init-token failed"; }

# (tpm_lib.sh puts the TPM under /tmp when its daemons' user cannot enter $TMPDIR.)
tpm_start bench
# The tpm2 driver's keys get an authorization value of their own.
tpm_pin=$(random_pin)

echo "bench/keystore: file, pkcs11 and tpm2 in turn, $rounds round(s) of $signs signature(s)" \
    "and ${seconds} s of TLS 1.3 then TLS 1.2 handshakes each"
r=1
while [ "$r" -le "$rounds" ]; do
    unset KEEL_BENCH_PIN
    run_driver file "$r" --dir "$T/file" --kek-file "$T/file.kek"
    KEEL_BENCH_PIN=$p11_pin
    export KEEL_BENCH_PIN
    run_driver pkcs11 "$r" --module "$module" --token keel-bench --pin-env KEEL_BENCH_PIN
    KEEL_BENCH_PIN=$tpm_pin
    run_driver tpm2 "$r" --dir "$T/tpm2" --pin-env KEEL_BENCH_PIN --tcti "$TPM_TCTI"
    r=$((r + 1))
done
unset KEEL_BENCH_PIN p11_pin tpm_pin

python3 - "$T" "$rounds" "${BENCH_JSON_OUT:-}" <<'PY' || die "cannot report the figures"
import json, sys
tmp, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
drivers = ("file", "pkcs11", "tpm2")
names = {"file": "file (sealed key)", "pkcs11": "pkcs11 (SoftHSM2)", "tpm2": "tpm2 (swtpm+abrmd)"}
lower = ("sign_ms_median", "sign_ms_p95", "sign_ms_mean")
higher = ("evp_signs_per_second", "tls13_handshakes_per_second", "tls12_handshakes_per_second")
# Per driver the best of its rounds, figure by figure; every round is kept.
fig = {}
for d in drivers:
    runs = [json.load(open("%s/%s-%d.json" % (tmp, d, r))) for r in range(1, rounds + 1)]
    best = dict(runs[0])
    for k in lower:
        best[k] = min(r[k] for r in runs)
    for k in higher:
        best[k] = max(r[k] for r in runs)
    for k in ("tls13_handshakes", "tls12_handshakes"):
        best[k] = sum(r[k] for r in runs)
    best["rounds"] = rounds
    best["runs"] = runs
    fig[d] = best
base = fig["file"]
# Each figure as a speed against the file driver's: > 1 is faster. For the
# sign latency that is file's median over the driver's.
def speeds(f):
    return {
        "sign": base["sign_ms_median"] / f["sign_ms_median"],
        "evp_sign": f["evp_signs_per_second"] / base["evp_signs_per_second"],
        "tls13": f["tls13_handshakes_per_second"] / base["tls13_handshakes_per_second"],
        "tls12": f["tls12_handshakes_per_second"] / base["tls12_handshakes_per_second"],
    }
print()
print("%-20s %11s %11s %11s %11s %11s" % ("keystore", "sign p50", "sign p95", "EVP sign/s", "TLS1.3 hs/s",
                                           "TLS1.2 hs/s"))
for d in drivers:
    f = fig[d]
    print("%-20s %8.3f ms %8.3f ms %11.1f %11.1f %11.1f" % (names[d], f["sign_ms_median"], f["sign_ms_p95"],
          f["evp_signs_per_second"], f["tls13_handshakes_per_second"], f["tls12_handshakes_per_second"]))
print("(best of %d round(s), the drivers in turn; sign: keel_keystore_sign over %d signatures;" % (rounds, base["signs"]))
print(" EVP: EVP_DigestSign with the keystore's private key; hs/s: full in-memory handshakes,")
print(" the client verifying the server's certificate, over %g s each)" % base["tls_seconds"])
print()
print("speed against the file keystore measured in this run (sign: file p50 / driver p50):")
def x(r):  # two decimals, three below 0.1 (a TPM's EVP figure)
    return ("%.2fx" if r >= 0.1 else "%.3fx") % r
for d in drivers[1:]:
    s = speeds(fig[d])
    fig[d]["vs_file"] = s
    print("%-7s sign %s file, EVP sign %s file, TLS 1.3 %s file, TLS 1.2 %s file"
          % (d + ":", x(s["sign"]), x(s["evp_sign"]), x(s["tls13"]), x(s["tls12"])))
if out:
    with open(out, "w") as fh:
        json.dump(fig, fh, indent=2)
        fh.write("\n")
PY

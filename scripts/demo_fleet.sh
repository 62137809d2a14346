#!/bin/sh
# make demo, step 11: the fleet. Called by demo.sh as
#   demo_fleet.sh KEEL KEELD BUILD WORKDIR DEVICE_DIR
# with the factory passphrase in $KEEL_DEMO_PASSPHRASE. keel-fleetd (SQLite)
# with the shipped mosquitto configuration, the demo batch imported, the
# device (running 1.1.0) updated to 1.2.0 through a campaign, and a
# simulated device's brute-force report flagged. Loopback only; everything
# it starts is stopped (the test fixtures' exit traps).
set -eu
KEEL=$1 KEELD=$2 BUILD=$3 W=$4 D=$5
SRC=$(cd "$(dirname "$0")/.." && pwd)
KEEL_BUILD_DIR=$(cd "$BUILD" && pwd)
KEEL_SOURCE_DIR=$SRC
T=$W/fleet-demo
mkdir -p "$T"
fail() { echo "demo: $*" >&2; exit 1; }
note() { echo "$*"; }
expect_rc() { want=$1; shift; "$@" >"$T/out" 2>"$T/err" || [ "$want" != 0 ] || fail "$*: $(cat "$T/err")"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cleanup() { :; }
KEELD_PID=
keeld_cleanup() { [ -z "$KEELD_PID" ] || { kill "$KEELD_PID" 2>/dev/null; wait "$KEELD_PID" 2>/dev/null || :; }; }
BROKER_ISSUE_ARGS="--passphrase-env KEEL_DEMO_PASSPHRASE"
FLEET_PASS_ARGS="--passphrase-env KEEL_DEMO_PASSPHRASE"
. "$SRC/tests/integration/broker_lib.sh"
. "$SRC/tests/integration/fleet_lib.sh"
say() { printf '$ %s\n' "$*" | sed "s|$KEEL|keel|g; s|$W|\$DEMO|g; s|$KEEL_BUILD_DIR/||g"; }
fleet() { say keel fleet "$@"; "$KEEL" fleet "$@" 2>&1 | sed "s|$W|\$DEMO|g; s/^/  /"; }
fj() { "$KEEL" fleet --json "$@"; }
fpath() { python3 -c 'import json,sys; j=json.load(sys.stdin); v=eval(sys.argv[1]); print("" if v is None else v)' "$1"; }
wait_true() { # SECONDS WHAT PYEXPR ARGS...
    _s=$1 _what=$2 _e=$3
    shift 3
    _i=0
    until [ "$(fj "$@" | fpath "$_e")" = True ]; do
        _i=$((_i + 1))
        [ $_i -lt $((_s * 5)) ] || { tail -n 20 "$FLEET_DIR/op.log" >&2; fail "$_what"; }
        sleep 0.2
    done
}

fleet_setup "$W/factory"
broker_start
note "mosquitto on 127.0.0.1:$BROKER_PORT with packaging/mosquitto/keel-broker.conf (queues that do not drop, CRLs)"
fleet_start op
note "keel-fleetd: registry in SQLite, broker session as keel-fleet (service CA), update server on 127.0.0.1:$FLEET_DIST_PORT"
fleet import "$W/batch/manifest.json"
dev=$(basename "$D")

say keeld --config ... -o link.broker=127.0.0.1:$BROKER_PORT -o update.server=https://127.0.0.1:$FLEET_DIST_PORT
"$KEELD" --config "$D/keeld.conf" -o "api.listen=127.0.0.1:$(free_port)" -o "link.broker=127.0.0.1:$BROKER_PORT" \
    -o link.first_connect=0 -o "update.server=https://127.0.0.1:$FLEET_DIST_PORT" -o update.first_check=0 \
    -o "ipc.socket=$T/app.sock" 2>"$T/keeld.log" &
KEELD_PID=$!
wait_true 30 "the device's boot report did not arrive" 'j["version"] is not None and j["state"] == "active"' device "$dev"
printf '  the fleet sees %s running %s\n' "$dev" "$(fj device "$dev" | fpath 'j["version"]')"

echo "A release 1.2.0 (security version 3), rolled out through a campaign:"
head -c 1048576 /dev/urandom >"$T/image-1.2"
"$KEEL" bundle create --signer "$W/signer" --model thermo-1 --version 1.2.0 --security-version 3 \
    --support-until 2032-12-31 --payload "$T/image-1.2" --out "$T/thermo-1.2.kb" \
    --passphrase-env KEEL_DEMO_PASSPHRASE >/dev/null 2>"$T/err" || fail "bundle create: $(cat "$T/err")"
say keel fleet campaign create --bundle thermo-1.2.kb --model thermo-1 --percent 100 --security
CAMP=$(fj campaign create --bundle "$T/thermo-1.2.kb" --model thermo-1 --percent 100 --security | fpath 'j["id"]')
wait_true 60 "the device did not install 1.2.0" 'j["counts"]["installed"] == 1' campaign show "$CAMP"
grep "update server: sending" "$FLEET_DIR/op.log" | sed 's/^keel: info: fleet: /  keel-fleetd: /'
grep -E "fleet update|installed" "$T/keeld.log" | tail -n 2 | sed 's/^/  keeld: /'
echo "The device reboots (emulated: keel boot, keeld again) and confirms:"
kill "$KEELD_PID"
wait "$KEELD_PID" || :
KEELD_PID=
say keel boot --state ...
"$KEEL" boot --state "$D" >/dev/null 2>"$T/err" || fail "keel boot: $(cat "$T/err")"
"$KEELD" --config "$D/keeld.conf" -o "api.listen=127.0.0.1:$(free_port)" -o "link.broker=127.0.0.1:$BROKER_PORT" \
    -o link.first_connect=0 -o "update.server=https://127.0.0.1:$FLEET_DIST_PORT" -o update.first_check=0 \
    -o "ipc.socket=$T/app.sock" 2>>"$T/keeld.log" &
KEELD_PID=$!
wait_true 30 "the campaign was not confirmed" 'j["counts"]["confirmed"] == 1' campaign show "$CAMP"
fleet campaign show "$CAMP"
fleet devices

echo "A compromised device reports a brute-force wave on its local login; the detectors flag it:"
"$KEEL_BUILD_DIR/tests/fleet_sim" manifest --count 1 --model thermo-1 --issuing-cert "$W/factory/device-ca/issuing.crt" \
    --issuing-key "$W/factory/device-ca/issuing.key" --org "Acme Thermostats" --out "$T/sim" >/dev/null ||
    fail "fleet_sim manifest"
"$KEEL" fleet import "$T/sim/manifest.json" >/dev/null 2>&1 || fail "import of the simulated device"
"$KEEL_BUILD_DIR/tests/fleet_sim" publish --broker "127.0.0.1:$BROKER_PORT" --ca "$W/factory/service-ca/root.crt" \
    --chain "$FLEET_DIR/device-ca.pem" --devices "$T/sim" --messages 3 --anomaly auth >/dev/null 2>"$T/err" ||
    fail "fleet_sim: $(cat "$T/err")"
i=0
until [ "$(fj alerts --kind auth | fpath 'len(j["alerts"])')" -gt 0 ] 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 100 ] || fail "no auth alert"
    sleep 0.2
done
fleet alerts --kind auth

kill "$KEELD_PID"
wait "$KEELD_PID" || :
KEELD_PID=
fleet_stop op
broker_stop
echo "  (keel-fleetd and mosquitto stopped; the dashboard is at https://127.0.0.1:$FLEET_ADMIN_PORT/ while it runs)"

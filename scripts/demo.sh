#!/bin/sh
# make demo: the main job end to end, on embedded defaults, in a temp dir.
# Issue 2: a factory PKI, a provisioned batch (file keystore and a SoftHSM2
# token), the 5.1-2 audit passing, and the audit catching a planted flaw.
set -eu
BUILD=${1:-build}
SRC=$(cd "$(dirname "$0")/.." && pwd)
KEEL=$(cd "$BUILD" && pwd)/programs/keel/keel
W=$(mktemp -d "${TMPDIR:-/tmp}/keel-demo-XXXXXX")
KEEP=${KEEL_DEMO_KEEP:-}
KEELD_PID=
cleanup() {
    [ -z "$KEELD_PID" ] || { kill "$KEELD_PID" 2>/dev/null; wait "$KEELD_PID" 2>/dev/null; }
    [ -n "$KEEP" ] && echo "(kept $W)" || rm -rf "$W"
}
trap cleanup EXIT INT TERM

if [ -t 1 ]; then B=$(printf '\033[1m'); N=$(printf '\033[0m'); else B=; N=; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
run() { printf '$ %s\n' "$*" | sed "s|$KEEL|keel|g; s|$W|\$DEMO|g"; "$@" 2>&1 | sed "s|$W|\$DEMO|g"; }

step "1. The manufacturer PKI: device, release and service CAs (root keys encrypted)"
KEEL_DEMO_PASSPHRASE=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
export KEEL_DEMO_PASSPHRASE
run "$KEEL" factory init --dir "$W/factory" --org "Acme Thermostats" --passphrase-env KEEL_DEMO_PASSPHRASE

step "2. Provision 5 devices: own key, id from the key, certificate, label password, the product's declaration"
PRODUCT=$SRC/examples/thermostat/product.json
printf '$ keel factory provision --dir $DEMO/factory --model thermo-1 --count 5 --out $DEMO/batch --product examples/thermostat/product.json\n'
"$KEEL" factory provision --dir "$W/factory" --model thermo-1 --count 5 --out "$W/batch" --product "$PRODUCT" 2>&1 |
    sed "s|$W|\$DEMO|g"
dev=$(ls "$W/batch" | grep -v '\.' | head -n 1)
echo "One device's state directory, as it would be flashed:"
(cd "$W/batch/$dev" && find . -type f | sort | while read -r f; do
    printf '  %-28s %s\n' "$f" "$(stat -c %a "$f")"; done)
echo "Its certificate:"
openssl x509 -in "$W/batch/$dev/identity/device.crt" -noout -subject -issuer -enddate | sed 's/^/  /'
echo "Its label (password masked here; labels.csv holds it for the label printer only):"
grep "^$dev," "$W/batch/labels.csv" | awk -F, '{printf "  id %s  serial %s  model %s  password %s-xxxxxx-xxxxxx\n", $1, $2, $3, substr($4,1,6)}'
printf '  stored on the device only as: %.32s...\n' "$(cat "$W/batch/$dev/identity/label.hash")"
echo "Every certificate verifies against the device CA:"
openssl verify -CAfile "$W/factory/device-ca/root.crt" -untrusted "$W/factory/device-ca/issuing.crt" \
    "$W"/batch/*/identity/device.crt | sed "s|$W|\$DEMO|g; s/^/  /"

step "3. Audit the batch for provision 5.1-2"
run "$KEEL" factory audit "$W/batch" --verify-hashes 5

step "4. A careless factory: one password reused, one derived from the serial"
cp "$W/batch/labels.csv" "$W/labels.good"
awk -F, -v OFS=, 'NR==2{pw=$4} NR==3{$4=pw} NR==4{$4=tolower($2) "-01"} {print}' "$W/labels.good" >"$W/batch/labels.csv"
set +e
run "$KEEL" factory audit "$W/batch" --verify-hashes 0 | grep -E "FAIL|finding"
set -e
cp "$W/labels.good" "$W/batch/labels.csv"

MODULE=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so; do
    [ -z "$MODULE" ] && [ -f "$m" ] && MODULE=$m
done
if [ -n "$MODULE" ] && command -v softhsm2-util >/dev/null; then
    step "5. The same with a secure element (SoftHSM2 token): keys made on the token"
    mkdir -p "$W/tokens"
    printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$W" >"$W/softhsm2.conf"
    SOFTHSM2_CONF=$W/softhsm2.conf
    export SOFTHSM2_CONF
    pin=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$pin" >"$W/token.pin")
    softhsm2-util --init-token --free --label demo-se --so-pin "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
        --pin "$pin" >/dev/null
    run "$KEEL" factory provision --dir "$W/factory" --model cam-2 --count 2 --out "$W/se-batch" \
        --keystore pkcs11 --pkcs11-module "$MODULE" --pkcs11-token demo-se --pkcs11-pin-file "$W/token.pin"
    echo "What the token says about the device keys:"
    pkcs11-tool --module "$MODULE" --token-label demo-se --login --pin "$pin" --list-objects --type privkey 2>/dev/null \
        | grep -E "label|Usage|Access" | sed 's/^ */  /'
fi

step "6. A server certificate for the broker, from the service CA (its key is encrypted: passphrase)"
run "$KEEL" factory issue-server --dir "$W/factory" --name 127.0.0.1 --out "$W/broker" \
    --passphrase-env KEEL_DEMO_PASSPHRASE

step "7. Signed A/B updates on the first device"
run "$KEEL" bundle signer --dir "$W/factory" --name "thermo release 2026" --out "$W/signer" \
    --passphrase-env KEEL_DEMO_PASSPHRASE
head -c 4194304 /dev/urandom >"$W/image-1.0"
head -c 4194304 /dev/urandom >"$W/image-1.1"
run "$KEEL" bundle create --signer "$W/signer" --model thermo-1 --version 1.0.0 --security-version 1 \
    --support-until 2031-12-31 --payload "$W/image-1.0" --out "$W/thermo-1.0.kb" \
    --passphrase-env KEEL_DEMO_PASSPHRASE
printf 'Fixes the setpoint rounding.\nCloses a heap overflow in the schedule parser.\n' >"$W/notes"
run "$KEEL" bundle create --signer "$W/signer" --model thermo-1 --version 1.1.0 --security-version 2 \
    --support-until 2032-06-30 --payload "$W/image-1.1" --out "$W/thermo-1.1.kb" --notes "$W/notes" \
    --security-fixes KEEL-2026-001 --risk "a crafted schedule could run code on the device" \
    --passphrase-env KEEL_DEMO_PASSPHRASE
D=$W/batch/$dev
run "$KEEL" update install "$W/thermo-1.0.kb" --state "$D"
run "$KEEL" boot --state "$D"
run "$KEEL" update confirm --state "$D"
run "$KEEL" update install "$W/thermo-1.1.kb" --state "$D"
run "$KEEL" boot --state "$D"
run "$KEEL" update confirm --state "$D"
run "$KEEL" update status --state "$D"
echo "A bundle with one payload byte changed, and the old version again:"
cp "$W/thermo-1.1.kb" "$W/tampered.kb"
size=$(wc -c <"$W/tampered.kb")
printf '\377' | dd of="$W/tampered.kb" bs=1 seek=$((size - 1000)) conv=notrunc status=none
set +e
run "$KEEL" update install "$W/tampered.kb" --state "$D"
run "$KEEL" update install "$W/thermo-1.0.kb" --state "$D"
set -e
run "$KEEL" boot --state "$D"

step "8. keeld on the same device: the local HTTPS API and setup UI, first run"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
API=https://127.0.0.1:$PORT/api/v1
KEELD=$(cd "$BUILD" && pwd)/programs/keeld/keeld
printf '$ keeld --config $DEMO/batch/%s/keeld.conf -o api.listen=127.0.0.1:%s &\n' "$dev" "$PORT"
"$KEELD" --config "$D/keeld.conf" -o "api.listen=127.0.0.1:$PORT" 2>"$W/keeld.log" &
KEELD_PID=$!
i=0
until curl -sk -o /dev/null "$API/status"; do
    i=$((i + 1))
    [ "$i" -lt 100 ] && kill -0 "$KEELD_PID" 2>/dev/null || { cat "$W/keeld.log"; exit 1; }
    sleep 0.1
done
api() { # METHOD ROUTE [JSON [TOKEN]]: prints the status code and the body
    curl -sk -o "$W/resp" -w '%{http_code}' -X "$1" ${4:+-H "Authorization: Bearer $4"} \
        ${3:+-H 'Content-Type: application/json' --data-binary "$3"} "$API/$2"
    printf ' %s\n' "$(cat "$W/resp")"
}
json_get() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$W/resp" "$1"; }
echo "The certificate keeld presents is the device's own (compare with the label's cert_sha256):"
echo | openssl s_client -connect "127.0.0.1:$PORT" 2>/dev/null | openssl x509 -noout -fingerprint -sha256 | sed 's/^/  /'
grep "^$dev," "$W/batch/labels.csv" | awk -F, '{print "  label: " $5}'
label=$(grep "^$dev," "$W/batch/labels.csv" | cut -d, -f4)
echo "GET status (the only route without a session):"
printf '  '; api GET status
echo "Every other route needs a session:"
printf '  '; api GET device
echo "A wrong password:"
printf '  '; api POST session '{"username":"admin","password":"not-the-label"}' # a wrong one on purpose; secret-scan: allow
echo "The label password logs in, but only to set a new password:"
printf '  '; api POST session "{\"username\":\"admin\",\"password\":\"$label\"}" | sed 's/"token":"[^"]*"/"token":"…"/; s/"csrf":"[^"]*"/"csrf":"…"/'
tok=$(json_get token)
printf '  '; api GET device '' "$tok"
echo "A weak new password is explained; a good one is taken and ends every session:"
printf '  '; api POST password "{\"current\":\"$label\",\"new\":\"thermo-1-password\"}" "$tok"
NEWPW=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '  '; api POST password "{\"current\":\"$label\",\"new\":\"$NEWPW\"}" "$tok"
printf '  '; api GET device '' "$tok"
echo "Logged in with the new password:"
api POST session "{\"username\":\"admin\",\"password\":\"$NEWPW\"}" >/dev/null
tok=$(json_get token)
printf '  '; api GET device '' "$tok"
printf '  '; api GET update '' "$tok"
printf '  '; api GET settings '' "$tok"
echo "The setup UI for a browser: https://127.0.0.1:$PORT/ (up while the demo runs; stopped now)"
kill "$KEELD_PID"
wait "$KEELD_PID" || :
KEELD_PID=
sed 's/^/  keeld log: /' "$W/keeld.log"

step "9. Online and offline: mosquitto with mutual TLS, keeld's cloud link, the thermostat app"
# The tests' broker fixture: mosquitto on 127.0.0.1 with the factory's
# certificates, a per-device ACL and a "fleet" subscriber identity.
T=$W/t
mkdir -p "$T"
fail() { echo "demo: $*" >&2; exit 1; }
expect_rc() { want=$1; shift; "$@" >"$T/out" 2>"$T/err" || [ "$want" != 0 ] || fail "$*: $(cat "$T/err")"; }
BROKER_ISSUE_ARGS="--passphrase-env KEEL_DEMO_PASSPHRASE"
. "$SRC/tests/integration/broker_lib.sh"
broker_pki "$W/factory"
broker_start
echo "mosquitto on 127.0.0.1:$BROKER_PORT: require_certificate, use_identity_as_username, ACL keel/v1/%u/..."
SOCK=$W/app.sock
printf '$ keeld --config ... -o link.broker=127.0.0.1:%s -o ipc.socket=$DEMO/app.sock &\n' "$BROKER_PORT"
"$KEELD" --config "$D/keeld.conf" -o "api.listen=127.0.0.1:$PORT" -o "link.broker=127.0.0.1:$BROKER_PORT" \
    -o link.first_connect=1 -o link.backoff_cap=4 -o "ipc.socket=$SOCK" 2>"$W/keeld.log" &
KEELD_PID=$!
i=0
until grep -q "link: online" "$W/keeld.log"; do
    i=$((i + 1))
    [ "$i" -lt 100 ] && kill -0 "$KEELD_PID" 2>/dev/null || { cat "$W/keeld.log"; exit 1; }
    sleep 0.1
done
api POST session "{\"username\":\"admin\",\"password\":\"$NEWPW\"}" >/dev/null
tok=$(json_get token)
echo "What the device declares it senses and sends (GET /api/v1/privacy):"
api GET privacy '' "$tok" >/dev/null
python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
for c in d["categories"]:
    print("  %-14s %-9s kept %3d days, fields %s" % (c["id"], c["legal_basis"], c["retention_days"], ",".join(c["telemetry_fields"]) or "-"))' "$W/resp"
echo "The climate fields rest on consent; the owner gives it:"
printf '  '; api PUT privacy/consent '{"purpose":"climate","given":true,"version":"1"}' "$tok" | cut -c1-100
broker_sub "keel/v1/$dev/#" "$W/fleet.txt"
THERMOSTAT=$(cd "$BUILD" && pwd)/examples/thermostat/thermostat
printf '$ thermostat --socket $DEMO/app.sock --interval 0.5 &\n'
"$THERMOSTAT" --socket "$SOCK" --interval 0.5 --status "$W/thermo.json" 2>"$W/thermo.log" &
THERMO_PID=$!
BROKER_SUB_PIDS="$BROKER_SUB_PIDS $THERMO_PID" # stopped on every exit path
sleep 2
echo "What the fleet receives (mutual TLS, seq per device):"
tail -n 2 "$W/fleet.txt" | cut -f1,3 | sed 's/^/  /'
echo "The fleet sends a command; the thermostat takes it, and its state comes back retained:"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -t "keel/v1/$dev/cmd/set" -m '{"setpoint":22.5}' \
    --cafile "$W/factory/service-ca/root.crt" --cert "$BROKER_DIR/clients/fleet.crt" --key "$BROKER_DIR/clients/fleet.key"
sleep 1
grep "/state" "$W/fleet.txt" | tail -n 1 | cut -f1,3 | sed 's/^/  /'
echo "The broker goes away. The thermostat keeps regulating; the outbox fills:"
broker_sub_stop
broker_stop
for i in 1 2 3; do
    sleep 1
    api GET link '' "$tok" >/dev/null
    python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); t = json.load(open(sys.argv[2]))
print("  link %-8s outbox %3d queued   thermostat %.1f C, heating %s" % (d["link"]["state"], d["outbox"]["pending"],
      t["temperature"], "on" if t["heating"] else "off"))' "$W/resp" "$W/thermo.json"
done
echo "The broker is back: the outbox drains, nothing lost, nothing twice:"
kill -STOP "$KEELD_PID" # so the fleet is listening before the device is back
broker_start
broker_sub "keel/v1/$dev/telemetry" "$W/drain.txt"
kill -CONT "$KEELD_PID"
i=0
while :; do
    sleep 0.5
    api GET link '' "$tok" >/dev/null
    [ "$(json_get outbox | python3 -c 'import ast,sys; print(ast.literal_eval(sys.stdin.read())["pending"])')" = 0 ] && break
    i=$((i + 1)); [ "$i" -lt 60 ] || fail "the outbox did not drain"
done
python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
s = [json.loads(l.split("	", 2)[2])["seq"] for l in open(sys.argv[2])]
print("  link %s, outbox %d queued; the fleet got seq %d..%d: %d messages, %d distinct" % (d["link"]["state"],
      d["outbox"]["pending"], min(s), max(s), len(s), len(set(s))))' "$W/resp" "$W/drain.txt"
kill "$THERMO_PID"
wait "$THERMO_PID" || :
kill "$KEELD_PID"
wait "$KEELD_PID" || :
KEELD_PID=
broker_stop
grep -E "link:|app socket|privacy:" "$W/keeld.log" | sed 's/^/  keeld log: /'

step "10. keel assess: the device judged against the 78 provisions of EN 303 645, as a test lab would"
REPORT=$(cd "$BUILD" && pwd)/demo-report
rm -rf "$REPORT"
if KEEL_ASSESS_PASSWORD=$NEWPW sh "$SRC/scripts/demo_assess.sh" "$KEEL" "$KEELD" "$W" "$D" "$REPORT" \
    >"$W/assess.out" 2>&1; then rc=0; else rc=$?; fi
sed "s|$W|\$DEMO|g" "$W/assess.out"
[ "$rc" -eq 0 ] || { echo "keel assess run: a mandatory provision fails or the run broke (exit $rc)" >&2; exit 1; }
echo "The evidence report (kept after the demo): $REPORT/report.html"
echo "  also report.json, report.md and junit.xml; keel assess run without --ics/--ixit meets an unknown device"

step "11. The fleet: keel-fleetd, a campaign to the device over mutual TLS, an anomaly flagged"
if sh "$SRC/scripts/demo_fleet.sh" "$KEEL" "$KEELD" "$BUILD" "$W" "$D" >"$W/fleet.out" 2>&1; then rc=0; else rc=$?; fi
sed "s|$W|\$DEMO|g" "$W/fleet.out"
[ "$rc" -eq 0 ] || { echo "the fleet step failed (exit $rc)" >&2; exit 1; }

step "Done"
echo "Every device has its own key, id and password; the audit proves 5.1-2 and catches shortcuts."
echo "Updates are signed, streamed into the inactive slot, checked again at boot, and cannot be rolled back."
echo "keeld serves only HTTPS with the device's own certificate; the label password only unlocks setting a new one."
echo "The cloud link is MQTT over mutual TLS; with the broker gone the device keeps working and loses nothing."
echo "keel assess tests the device like a lab: every port, TLS, HTTP, updates, firmware, labels; a verdict per provision."
echo "keel-fleetd keeps the registry, stores every message once, rolls signed updates out to registered devices only, flags anomalies."
echo "Everything was made under a temporary directory, now removed (KEEL_DEMO_KEEP=1 keeps it)."

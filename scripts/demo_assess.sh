#!/bin/sh
# make demo, step 10: keel assess run against the demo's device. Called by
# demo.sh as: demo_assess.sh KEEL KEELD WORKDIR DEVICE_DIR REPORT_DIR
# with the device's admin password in $KEEL_ASSESS_PASSWORD and the factory
# passphrase in $KEEL_DEMO_PASSPHRASE. Runs in a network namespace of its own
# when it can (root), so the port scan sees only the device; otherwise it
# scans only the device's port. Stops everything it started.
set -eu
KEEL=$1 KEELD=$2 W=$3 D=$4 OUT=$5
SRC=$(cd "$(dirname "$0")/.." && pwd)

if [ -z "${KEEL_DEMO_NETNS:-}" ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 &&
    unshare --net true 2>/dev/null; then
    KEEL_DEMO_NETNS=1 exec unshare --net sh "$0" "$@"
fi
PORTS_ARG=
if [ -n "${KEEL_DEMO_NETNS:-}" ]; then
    ip link set lo up
    echo "(in a network namespace of its own: the scan sees only the device)"
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
[ -n "${KEEL_DEMO_NETNS:-}" ] || PORTS_ARG="--ports $PORT"

KEELD_PID=
stop() { [ -z "$KEELD_PID" ] || { kill "$KEELD_PID" 2>/dev/null; wait "$KEELD_PID" 2>/dev/null || :; }; }
trap stop EXIT INT TERM
"$KEELD" --config "$D/keeld.conf" -o "api.listen=127.0.0.1:$PORT" 2>"$W/keeld-assess.log" &
KEELD_PID=$!
i=0
until curl -sk -o /dev/null "https://127.0.0.1:$PORT/api/v1/status"; do
    i=$((i + 1))
    [ "$i" -lt 100 ] && kill -0 "$KEELD_PID" 2>/dev/null || { cat "$W/keeld-assess.log"; exit 1; }
    sleep 0.1
done

# What the manufacturer hands the lab: the ICS and IXIT of examples/keel-device
# with this device's port, test bundles, and the publications as files.
L=$W/lab
mkdir -p "$L/bundles"
head -c 200000 /dev/urandom >"$W/image-1.2"
"$KEEL" bundle create --signer "$W/signer" --model thermo-1 --version 1.2.0 --security-version 3 \
    --support-until 2032-06-30 --payload "$W/image-1.2" --out "$L/bundles/good.bundle" \
    --passphrase-env KEEL_DEMO_PASSPHRASE >/dev/null
cp "$W/thermo-1.0.kb" "$L/bundles/downgraded.bundle"
"$KEEL" factory init --dir "$W/mallory" --org "Mallory" --passphrase-env KEEL_DEMO_PASSPHRASE >/dev/null
"$KEEL" bundle signer --dir "$W/mallory" --name evil --out "$W/evil-signer" \
    --passphrase-env KEEL_DEMO_PASSPHRASE >/dev/null
"$KEEL" bundle create --signer "$W/evil-signer" --model thermo-1 --version 9.0.0 --security-version 9 \
    --support-until 2032-06-30 --payload "$W/image-1.2" --out "$L/bundles/wrong_signer.bundle" \
    --passphrase-env KEEL_DEMO_PASSPHRASE >/dev/null
cat >"$L/security.txt" <<EOF
Contact: mailto:security@acme.example
Expires: $(date -u -d '+180 days' +%Y-%m-%dT00:00:00Z)
Policy: https://acme.example/security/disclosure
EOF
echo "Report vulnerabilities to security@acme.example; we answer within 5 working days and fix within 90." \
    >"$L/policy.txt"
echo "Acme Thermo One (thermo-1): security updates until 2031-12-31." >"$L/support.txt"
python3 - "$SRC/examples/keel-device" "$L" "$PORT" <<'EOF'
import json, sys
src, lab, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ixit = json.load(open(src + "/ixit.json"))
for i in ixit["interfaces"]:
    if i["name"] == "local-api":
        i["port"], i["address"] = port, "127.0.0.1:%d" % port
ixit["expected_open_ports"] = [{"transport": "tcp", "port": port}]
ixit["update"]["test_bundles"] = {"good": "bundles/good.bundle", "downgraded": "bundles/downgraded.bundle",
                                  "wrong_signer": "bundles/wrong_signer.bundle"}
ixit["disclosure"] = {"security_txt": "security.txt", "policy": "policy.txt"}
ixit["product"]["support_period"]["published_at"] = "support.txt"
json.dump(ixit, open(lab + "/ixit.json", "w"), indent=1)
json.dump(json.load(open(src + "/ics.json")), open(lab + "/ics.json", "w"), indent=1)
EOF
mkdir -p "$W/fw/usr/sbin" "$W/fw/usr/bin"
cp "$KEELD" "$W/fw/usr/sbin/keeld"
cp "$KEEL" "$W/fw/usr/bin/keel"

printf '$ keel assess run --target 127.0.0.1 --ics lab/ics.json --ixit lab/ixit.json --firmware fw --labels batch/labels.csv --out %s\n' "$OUT"
# shellcheck disable=SC2086
"$KEEL" assess run --target 127.0.0.1 --ics "$L/ics.json" --ixit "$L/ixit.json" --firmware "$W/fw" \
    --labels "$W/batch/labels.csv" --out "$OUT" $PORTS_ARG >"$W/assess-run.out" 2>"$W/assess.log" && rc=0 || rc=$?
sed 's/^/  /' "$W/assess.log"
cat "$W/assess-run.out"
echo "exit status $rc (0: no mandatory provision fails)"
python3 - "$OUT/report.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["provisions"]:
    if p["id"] in ("5.1-1", "5.1-5", "5.3-2", "5.5-1", "5.6-1"):
        print("  %-7s %s  %s" % (p["id"], p["verdict"], p["reason"][:110]))
EOF
exit "$rc"

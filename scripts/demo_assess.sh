#!/bin/sh
# make demo, the assess step: keel assess run against the demo's device, the
# keeld that runs through the whole story. Called by demo.sh as
#   demo_assess.sh KEEL KEELD WORKDIR PORT REPORT_DIR
# with the device's admin password in $KEEL_ASSESS_PASSWORD (the lab's
# credential, named by the IXIT) and the factory passphrase in
# $KEEL_DEMO_PASSPHRASE. Prepares what a manufacturer hands a lab (ICS, IXIT,
# test bundles, publications, the firmware tree) and runs the assessment.
# The scan covers the device's port only (--ports): the broker and
# keel-fleetd of the demo listen on the same loopback. Starts no process
# that outlives it. Exit status: keel assess run's.
set -eu
KEEL=$1 KEELD=$2 W=$3 PORT=$4 OUT=$5
SRC=$(cd "$(dirname "$0")/.." && pwd)

# The test bundles: a good one (newer than what the device runs), the
# factory image again (a downgrade) and one of another manufacturer's signer.
L=$W/lab
mkdir -p "$L/bundles"
head -c 200000 /dev/urandom >"$W/image-1.2"
"$KEEL" bundle create --signer "$W/signer" --model thermo-1 --version 1.2.0 --security-version 3 \
    --support-until 2032-06-30 --payload "$W/image-1.2" --out "$L/bundles/good.bundle" \
    --passphrase-env KEEL_DEMO_PASSPHRASE >/dev/null
cp "$W/thermo-1.0.kb" "$L/bundles/downgraded.bundle"
"$KEEL" factory init --dir "$W/mallory" --org "Mallory" >/dev/null
"$KEEL" bundle signer --dir "$W/mallory" --name evil --out "$W/evil-signer" >/dev/null
"$KEEL" bundle create --signer "$W/evil-signer" --model thermo-1 --version 9.0.0 --security-version 9 \
    --support-until 2032-06-30 --payload "$W/image-1.2" --out "$L/bundles/wrong_signer.bundle" >/dev/null
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

echo "\$ keel assess run --target 127.0.0.1 --ports $PORT --ics lab/ics.json --ixit lab/ixit.json --firmware fw" \
    "--labels batch/labels.csv --out $OUT"
"$KEEL" assess run --target 127.0.0.1 --ports "$PORT" --ics "$L/ics.json" --ixit "$L/ixit.json" --firmware "$W/fw" \
    --labels "$W/batch/labels.csv" --out "$OUT" >"$W/assess-run.out" 2>"$W/assess.log" && rc=0 || rc=$?
sed 's/^/  /' "$W/assess.log"
cat "$W/assess-run.out"
echo "exit status $rc (0: no mandatory provision fails)"
[ -f "$OUT/report.json" ] || exit "$rc"
python3 - "$OUT/report.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["provisions"]:
    if p["id"] in ("5.1-1", "5.1-5", "5.3-2", "5.5-1", "5.6-1"):
        print("  %-7s %s  %s" % (p["id"], p["verdict"], p["reason"][:110]))
EOF
exit "$rc"

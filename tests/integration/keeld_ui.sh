#!/bin/sh
# The setup UI in a real browser: a provisioned device with firmware 1.0.0
# installed, keeld serving its built-in UI on a loopback port, and Debian's
# Chromium (headless, through playwright-core) doing the owner's first run
# (tests/ui/first_run.mjs): a failed login and the throttle's message, the
# forced password change and the policy's refusals, the guide, the dashboard
# with the label's certificate fingerprint, the security check, a refused and
# an accepted security update, logout, and a factory reset.
#
# playwright-core is installed once per build dir with `npm ci` into
# $KEEL_BUILD_DIR/ui-node; screenshots go to $KEEL_UI_ARTIFACTS (default
# $KEEL_BUILD_DIR/ui-artifacts). Skips (77) only when chromium or node is
# missing.
set -eu

CHROMIUM=${KEEL_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ] || [ ! -x "$CHROMIUM" ] || ! command -v node >/dev/null 2>&1; then
    echo "SKIP: keeld_ui needs chromium and node (scripts/deps.sh installs them)"
    exit 77
fi

. "$(dirname "$0")/keeld_lib.sh"
: "${KEEL_SOURCE_DIR:?KEEL_SOURCE_DIR must point to the source tree}"
UI_TESTS=$KEEL_SOURCE_DIR/tests/ui
ART=${KEEL_UI_ARTIFACTS:-$KEEL_BUILD_DIR/ui-artifacts}

ui_node_setup

note "a device with firmware 1.0.0 (supported until 2030-12-31) installed and confirmed"
provision plug-1
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"
# mkb OUT VERSION SECVER [bundle create options]: a small random payload.
mkb() {
    out=$1 ver=$2 sec=$3
    shift 3
    head -c 150000 /dev/urandom >"$T/payload-$ver"
    expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version "$ver" \
        --security-version "$sec" --support-until 2030-12-31 --payload "$T/payload-$ver" --out "$out" \
        --chunk-size 65536 "$@"
}
mkb "$T/v1.0.kb" 1.0.0 1
expect_rc 0 "$KEEL" update install "$T/v1.0.kb" --state "$D"
expect_rc 0 "$KEEL" boot --state "$D"
expect_rc 0 "$KEEL" update confirm --state "$D"
echo "Fixes the pairing timeout." >"$T/notes.txt"
mkb "$T/v1.1.kb" 1.1.0 2 --notes "$T/notes.txt" --risk "remote code execution over the local API" \
    --security-fixes CVE-2026-0001,CVE-2026-0002 --disruptive --downtime 30
# Signed by another factory's release CA: the device must refuse it.
expect_rc 0 "$KEEL" factory init --dir "$T/f2" --org Mallory
expect_rc 0 "$KEEL" bundle signer --dir "$T/f2" --name evil --out "$T/signer2"
expect_rc 0 "$KEEL" bundle create --signer "$T/signer2" --model plug-1 --version 9.0.0 --security-version 9 \
    --support-until 2035-12-31 --payload "$T/payload-1.0.0" --out "$T/foreign.kb" --chunk-size 65536

note "keeld serves the UI with the certificate on the label"
start_keeld
served=$(openssl s_client -connect "127.0.0.1:$PORT" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 | sed 's/^[^=]*=//')
[ "$served" = "$CERT_SHA" ] || die_log "keeld serves certificate $served, the label says $CERT_SHA"

note "Chromium ($("$CHROMIUM" --version 2>/dev/null | head -n 1)) runs tests/ui/first_run.mjs"
mkdir -p "$ART"
rm -f "$ART"/*.png
set +e
KEEL_UI_URL=https://127.0.0.1:$PORT \
KEEL_UI_LABEL_PASSWORD=$LABEL_PW \
KEEL_UI_MODEL=plug-1 \
KEEL_UI_SERIAL=$SERIAL \
KEEL_UI_DEVICE_ID=$DEV_ID \
KEEL_UI_CERT_SHA256=$CERT_SHA \
KEEL_UI_SUPPORT_UNTIL=2030-12-31 \
KEEL_UI_FIRMWARE=1.0.0 \
KEEL_UI_BUNDLE=$T/v1.1.kb \
KEEL_UI_BUNDLE_VERSION=1.1.0 \
KEEL_UI_BAD_BUNDLE=$T/foreign.kb \
KEEL_UI_ARTIFACTS=$ART \
KEEL_UI_NODE_DIR=$NODE_DIR \
KEEL_CHROMIUM=$CHROMIUM \
    node "$UI_TESTS/first_run.mjs"
rc=$?
set -e
[ "$rc" -eq 0 ] || die_log "the browser test failed (exit $rc; screenshots in $ART)"
alive || die_log "keeld is no longer running after the browser test"
stop_keeld

note "the UI's install wrote the security update to slot B, pending a reboot"
expect_rc 0 "$KEEL" update status --state "$D" --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["pending"] == "B" else 1)' "$T/out" ||
    fail "after the UI's install, slot B is not pending: $(cat "$T/out")"
echo "keeld_ui: 1 passed, 0 failed"

#!/bin/sh
# keel-fleetd's read-only dashboard in a real browser: three registered
# devices (two reporting 1.0.0, one 1.1.0), a running campaign, and an alert
# whose detail is hostile markup (as a device could send), then Debian's
# Chromium (headless, through playwright-core) runs tests/ui/fleet_dashboard.mjs
# with a read-only token.
#
# The reported versions and the alerts are written into the SQLite database
# directly (this test has no broker; ingest is tested elsewhere). playwright-
# core is installed once per build dir with `npm ci` into
# $KEEL_BUILD_DIR/ui-node; screenshots go to $KEEL_UI_ARTIFACTS (default
# $KEEL_BUILD_DIR/ui-artifacts). Skips (77) only when chromium or node is missing.
set -eu

CHROMIUM=${KEEL_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ] || [ ! -x "$CHROMIUM" ] || ! command -v node >/dev/null 2>&1; then
    echo "SKIP: fleet_dashboard needs chromium and node (scripts/deps.sh installs them)"
    exit 77
fi

. "$(dirname "$0")/fleet_admin_lib.sh"
: "${KEEL_SOURCE_DIR:?KEEL_SOURCE_DIR must point to the source tree}"
UI_TESTS=$KEEL_SOURCE_DIR/tests/ui
ART=${KEEL_UI_ARTIFACTS:-$KEEL_BUILD_DIR/ui-artifacts}

ui_node_setup

note "three devices, a campaign, versions and a hostile alert"
fleet_admin_setup
fleet_start admin
expect_rc 0 "$KEEL" fleet import "$T/b/manifest.json"
DEV1=$(sed -n 2p "$T/b/labels.csv" | cut -d, -f1)
DEV2=$(sed -n 3p "$T/b/labels.csv" | cut -d, -f1)
DEV3=$(sed -n 4p "$T/b/labels.csv" | cut -d, -f1)
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"
head -c 100000 /dev/urandom >"$T/payload"
expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version 1.1.0 --security-version 2 \
    --support-until 2030-12-31 --payload "$T/payload" --out "$T/v11.kb" --chunk-size 65536
expect_rc 0 "$KEEL" fleet --json campaign create --bundle "$T/v11.kb" --model plug-1
CID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/out")

HOSTILE='<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>'
cat >"$T/db.py" <<'EOF'
# db.py WHAT DB ARGS...: writes what ingest would have (this test has no broker).
import json, os, sqlite3, sys, time
what, db = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, timeout=10)
if what == "version":
    c.execute("UPDATE devices SET version = ?, security_version = ?, state = 'active', first_seen = ?, last_seen = ? "
              "WHERE id = ?", (sys.argv[4], int(sys.argv[5]), int(time.time()), int(time.time()), sys.argv[3]))
elif what == "alert":
    c.execute("INSERT INTO alerts (id, at, kind, device, severity, detail, dedupe) VALUES (?, ?, ?, ?, ?, ?, ?)",
              (os.urandom(8).hex(), int(time.time()), "tamper", sys.argv[3], "critical",
               json.dumps({"type": "tamper", "detail": sys.argv[4]}), os.urandom(16).hex()))
c.commit()
EOF
python3 "$T/db.py" version "$T/fleet.db" "$DEV1" 1.0.0 1
python3 "$T/db.py" version "$T/fleet.db" "$DEV2" 1.0.0 1
python3 "$T/db.py" version "$T/fleet.db" "$DEV3" 1.1.0 2
python3 "$T/db.py" alert "$T/fleet.db" "$DEV1" "$HOSTILE"
# the three devices are active now, and the versions are what the dashboard must draw
TOK=$READ_TOKEN api 200 GET /api/v1/status
jtrue 'd["devices"]["states"]["active"] == 3' "the devices are not active after the version reports"

note "Chromium ($("$CHROMIUM" --version 2>/dev/null | head -n 1)) runs tests/ui/fleet_dashboard.mjs"
mkdir -p "$ART"
rm -f "$ART"/fleet-*.png
set +e
KEEL_UI_URL=https://127.0.0.1:$PORT \
KEEL_UI_TOKEN=$READ_TOKEN \
KEEL_UI_DEVICES=3 \
KEEL_UI_VERSIONS="plug-1 1.0.0 2,plug-1 1.1.0 1" \
KEEL_UI_CAMPAIGN=$CID \
KEEL_UI_HOSTILE=$HOSTILE \
KEEL_UI_ADD_ALERT="python3 '$T/db.py' alert '$T/fleet.db' '$DEV2' late-alert" \
KEEL_UI_ARTIFACTS=$ART \
KEEL_UI_NODE_DIR=$NODE_DIR \
KEEL_CHROMIUM=$CHROMIUM \
    node "$UI_TESTS/fleet_dashboard.mjs"
rc=$?
set -e
[ "$rc" -eq 0 ] || die_log "the browser test failed (exit $rc; screenshots in $ART)"
kill -0 "$FLEET_PID_admin" 2>/dev/null || die_log "keel-fleetd is no longer running after the browser test"
grep -q "$READ_TOKEN" "$FLEETD_LOG" && die_log "the log holds the dashboard's token"
fleet_stop admin
echo "fleet_dashboard: passed"

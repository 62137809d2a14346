#!/bin/sh
# make demo keeps working: it runs to the end, shows the audit passing and
# catching the planted flaws, keys made on the token, a signed update installed,
# booted and confirmed, a tampered and a rolled-back bundle refused, keeld's
# first-run setup through the API, the cloud link over mutual TLS with the
# thermostat (a command in, the outbox filling and draining), and it leaves
# nothing behind.
. "$(dirname "$0")/lib.sh"
mkdir -p "$T/tmp"
TMPDIR=$T/tmp expect_rc 0 sh "$KEEL_SOURCE_DIR/scripts/demo.sh" "$KEEL_BUILD_DIR"
for want in "^PASS: 0 finding" "^FAIL: 3 finding" "never extractable" "server certificate for 127.0.0.1" \
            ": OK$" "slot B confirmed; anti-rollback counter 2" "does not match its digest" \
            "below the device's anti-rollback counter 2" "^booted slot B: 1.1.0" \
            '200 {"model":"thermo-1","setup_required":true}' '"must_change_password":true' \
            '403 {"error":"password_change_required"' '"reason":"contains_model"' '"firmware_version":"1.1.0"' \
            "keeld: info: stopped" "link: online" "privacy: consent for climate given" \
            '/state	{"setpoint":22.5}' "link offline  outbox" "outbox 0 queued; the fleet got seq"; do
    grep -q -- "$want" "$T/out" || { cat "$T/out"; fail "demo output lacks '$want'"; }
done
python3 - "$T/out" <<'EOF' || { cat "$T/out"; fail "the outbox did not drain every message exactly once"; }
import re, sys
m = re.search(r"the fleet got seq (\d+)\.\.(\d+): (\d+) messages, (\d+) distinct", open(sys.argv[1]).read())
lo, hi, n, distinct = map(int, m.groups())
sys.exit(not (n == distinct == hi - lo + 1 and n >= 3))
EOF
if pgrep -f "mosquitto -c $T/tmp" >/dev/null || pgrep -f "thermostat --socket $T/tmp" >/dev/null; then
    fail "demo left a broker or the thermostat running"
fi
[ -z "$(ls -A "$T/tmp")" ] || fail "demo left files behind: $(ls -A "$T/tmp")"
echo "demo_smoke: 1 passed, 0 failed"

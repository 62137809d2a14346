#!/bin/sh
# make demo keeps working: it runs to the end, shows the audit passing and
# catching the planted flaws, keys made on the token, a signed update installed,
# booted and confirmed, a tampered and a rolled-back bundle refused, keeld's
# first-run setup through the API, and it
# leaves nothing behind.
. "$(dirname "$0")/lib.sh"
mkdir -p "$T/tmp"
TMPDIR=$T/tmp expect_rc 0 sh "$KEEL_SOURCE_DIR/scripts/demo.sh" "$KEEL_BUILD_DIR"
for want in "^PASS: 0 finding" "^FAIL: 3 finding" "never extractable" "server certificate for 127.0.0.1" \
            ": OK$" "slot B confirmed; anti-rollback counter 2" "does not match its digest" \
            "below the device's anti-rollback counter 2" "^booted slot B: 1.1.0" \
            '200 {"model":"thermo-1","setup_required":true}' '"must_change_password":true' \
            '403 {"error":"password_change_required"' '"reason":"contains_model"' '"firmware_version":"1.1.0"' \
            "keeld: info: stopped"; do
    grep -q -- "$want" "$T/out" || { cat "$T/out"; fail "demo output lacks '$want'"; }
done
[ -z "$(ls -A "$T/tmp")" ] || fail "demo left files behind: $(ls -A "$T/tmp")"
echo "demo_smoke: 1 passed, 0 failed"

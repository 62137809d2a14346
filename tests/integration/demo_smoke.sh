#!/bin/sh
# make demo keeps working: it runs to the end, shows the audit passing and
# catching the planted flaws, shows keys made on the token, and leaves nothing.
. "$(dirname "$0")/lib.sh"
mkdir -p "$T/tmp"
TMPDIR=$T/tmp expect_rc 0 sh "$KEEL_SOURCE_DIR/scripts/demo.sh" "$KEEL_BUILD_DIR"
for want in "^PASS: 0 finding" "^FAIL: 3 finding" "never extractable" "server certificate for 127.0.0.1" \
            ": OK$"; do
    grep -q -- "$want" "$T/out" || { cat "$T/out"; fail "demo output lacks '$want'"; }
done
[ -z "$(ls -A "$T/tmp")" ] || fail "demo left files behind: $(ls -A "$T/tmp")"
echo "demo_smoke: 1 passed, 0 failed"

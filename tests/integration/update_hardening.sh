#!/bin/sh
# Ways to brick a device or roll it back that a review found, each shut:
# deleting the vault does not reopen old versions; a broken vault does not stop
# the bootloader; a signed trust bundle copied into a slot never boots nor
# raises the counter; losing the boot state does not promote an unconfirmed
# slot to good; appended bytes in a slot are refused at boot.
. "$(dirname "$0")/lib.sh"

expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model plug-1 --count 1 --out "$T/b" $FAST_ARGON
D=$T/b/$(ls "$T/b" | grep -v '\.' | head -n 1)
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name rel --out "$T/s"
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/out" "$1"; }
mk() { # OUT VERSION SECVER [KIND PAYLOAD]
    head -c 70000 /dev/urandom >"$T/img-$2"
    expect_rc 0 "$KEEL" bundle create --signer "$T/s" --model plug-1 --version "$2" --security-version "$3" \
        --support-until 2030-12-31 --kind "${4:-image}" --payload "${5:-$T/img-$2}" --out "$1"
}
cycle() {
    expect_rc 0 "$KEEL" update install "$1" --state "$D"
    expect_rc 0 "$KEEL" boot --state "$D"
    expect_rc 0 "$KEEL" update confirm --state "$D"
}
mk "$T/v1.kb" 1.0.0 1
mk "$T/v2.kb" 2.0.0 2
cycle "$T/v1.kb"
cycle "$T/v2.kb"

note "deleting the vault does not reopen old versions"
rm -rf "$D/vault"
expect_rc 1 "$KEEL" update install "$T/v1.kb" --state "$D"
grep -q "below the device's anti-rollback counter 2" "$T/err" || fail "v1 not refused: $(cat "$T/err")"
expect_rc 0 "$KEEL" boot --state "$D"

note "a broken vault does not stop the bootloader (installs are refused)"
# the vault's wrapping key: .wrap (file keystore) or .tpm2wrap (TPM blob)
WRAP=$(ls "$D"/keystore/vault-data-key.*wrap)
[ -f "$WRAP" ] || fail "no wrapping key for the vault in $D/keystore"
cp "$WRAP" "$T/wrap.bak"
head -c 60 /dev/urandom >"$WRAP"
expect_rc 0 "$KEEL" boot --state "$D" --json
[ "$(jget 'd["version"]')" = "2.0.0" ] || fail "did not boot 2.0.0 with a broken vault"
expect_rc 1 "$KEEL" update install "$T/v2.kb" --state "$D"
cp "$T/wrap.bak" "$WRAP"

note "a trust bundle copied into a slot never boots and never raises the counter"
mk "$T/trust.kb" 2026.1.0 50 trust "$D/trust/release-root.pem"
expect_rc 0 "$KEEL" update status --state "$D" --json
inactive=$(jget '"a" if d["active"] == "B" else "b"')
python3 - "$T/trust.kb" "$D/update/slot-$inactive.signed" "$D/update/slot-$inactive.img" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read()
m, s, c, p = struct.unpack(">IIIQ", b[12:32])
signed = 64 + m + s + c
open(sys.argv[2], "wb").write(b[:signed])
open(sys.argv[3], "wb").write(b[signed:])
PY
printf 'garbage' >"$D/update/bootstate.0"
printf 'garbage' >"$D/update/bootstate.1"
expect_rc 0 "$KEEL" boot --state "$D" --json
[ "$(jget 'd["version"]')" = "2.0.0" ] || fail "booted $(jget 'd["version"]'), not 2.0.0"
expect_rc 0 "$KEEL" update confirm --state "$D" --json
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["security_version_counter"]')" = "2" ] || fail "the counter moved to $(jget 'd["security_version_counter"]')"

note "losing the boot state keeps an unconfirmed slot on trial"
mk "$T/v3.kb" 3.0.0 3
expect_rc 0 "$KEEL" update install "$T/v3.kb" --state "$D"
printf 'garbage' >"$D/update/bootstate.0"
printf 'garbage' >"$D/update/bootstate.1"
expect_rc 0 "$KEEL" boot --state "$D" --json
[ "$(jget 'd["version"]')" = "3.0.0" ] || fail "the new slot did not get its trial boot"
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["pending"]')" != "None" ] || fail "the unconfirmed slot was promoted: $(cat "$T/out")"

note "bytes appended to a slot are refused at boot, with a tamper alert and a fallback"
expect_rc 0 "$KEEL" update confirm --state "$D"
mk "$T/v4.kb" 4.0.0 4
expect_rc 0 "$KEEL" update install "$T/v4.kb" --state "$D" --json
pending=$(jget 'd["slot"].lower()')
printf 'X' >>"$D/update/slot-$pending.img"
expect_rc 0 "$KEEL" boot --state "$D" --json
[ "$(jget 'd["version"]')" = "3.0.0" ] || fail "a slot with appended bytes booted"
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["tamper"]["alert"]')" = "True" ] || fail "no tamper alert"
echo "update_hardening: 1 passed, 0 failed"

#!/bin/sh
# keel bundle: a signer from a passphrase-protected factory, bundles from a
# file and from stdin, inspect, verify; tampered bundles and foreign roots
# refused with exit 1, usage errors exit 2.
. "$(dirname "$0")/lib.sh"

for sub in "bundle" "bundle signer" "bundle create" "bundle inspect" "bundle verify"; do
    # shellcheck disable=SC2086
    expect_rc 0 "$KEEL" $sub --help
    grep -q "usage: keel bundle" "$T/out" || fail "no usage text for '$sub'"
done
expect_rc 2 "$KEEL" bundle
expect_rc 2 "$KEEL" bundle frobnicate

KEEL_TEST_PASS="a long test passphrase"
export KEEL_TEST_PASS
note "factories and signers"
expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme --passphrase-env KEEL_TEST_PASS
expect_rc 0 "$KEEL" factory init --dir "$T/other" --org Other
expect_rc 2 "$KEEL" bundle signer --dir "$T/f" --name "Acme release" --out "$T/s"
grep -q "encrypted: give its passphrase" "$T/err" || fail "unclear message: $(cat "$T/err")"
[ ! -e "$T/s/signer.key" ] || fail "a signer key was written without the passphrase"
KEEL_WRONG_PASS="not the passphrase"
export KEEL_WRONG_PASS
expect_rc 1 "$KEEL" bundle signer --dir "$T/f" --name "Acme release" --out "$T/s" --passphrase-env KEEL_WRONG_PASS
expect_rc 2 "$KEEL" bundle signer --dir "$T/f" --name "" --out "$T/s" --passphrase-env KEEL_TEST_PASS
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name "Acme release" --out "$T/s" --passphrase-env KEEL_TEST_PASS --json
grep -q '"name": "Acme release"' "$T/out" || fail "signer --json: $(cat "$T/out")"
[ "$(stat -c %a "$T/s/signer.key")" = 600 ] || fail "signer key not 0600"
openssl verify -CAfile "$T/f/release-ca/root.crt" -untrusted "$T/f/release-ca/issuing.crt" \
    -purpose any "$T/s/signer.crt" >/dev/null || fail "signer does not chain to the release root"
openssl x509 -in "$T/s/signer.crt" -noout -ext extendedKeyUsage | grep -q "Code Signing" \
    || fail "signer certificate lacks codeSigning"
expect_rc 1 "$KEEL" bundle signer --dir "$T/f" --name "Acme release" --out "$T/s" --passphrase-env KEEL_TEST_PASS
grep -q "refusing to replace" "$T/err" || fail "unclear message: $(cat "$T/err")"
expect_rc 0 "$KEEL" bundle signer --dir "$T/other" --name "Other release" --out "$T/s-other"

note "create from a file and from stdin"
head -c 3145728 /dev/urandom >"$T/image"
printf 'Fixes the heater.\nSecond line.\n' >"$T/notes"
# The signer key is encrypted with the factory's passphrase: create needs it.
expect_rc 2 "$KEEL" bundle create --signer "$T/s" --model thermo-1 --version 1.2.0 --security-version 4 \
    --support-until 2031-12-31 --payload "$T/image" --out "$T/nopass.kbn"
grep -q "is encrypted: give its passphrase" "$T/err" || fail "unclear message: $(cat "$T/err")"
grep -q "ENCRYPTED PRIVATE KEY" "$T/s/signer.key" || fail "the signer key is not encrypted"
expect_rc 1 "$KEEL" bundle create --signer "$T/s" --model thermo-1 --version 1.2.0 --security-version 4 \
    --support-until 2031-12-31 --payload "$T/image" --out "$T/nopass.kbn" --passphrase-env KEEL_WRONG_PASS
C="$KEEL bundle create --signer $T/s --model thermo-1 --version 1.2.0 --security-version 4 --support-until 2031-12-31 --passphrase-env KEEL_TEST_PASS"
# shellcheck disable=SC2086
expect_rc 0 $C --model thermo-2 --payload "$T/image" --out "$T/b1.kbn" --notes "$T/notes" \
    --risk "remote code execution in the setup UI" --security-fixes CVE-2025-0001,CVE-2025-0002 \
    --disruptive --downtime 45
# shellcheck disable=SC2086
$C --payload - --out "$T/b2.kbn" --json <"$T/image" >"$T/out" 2>"$T/err" || fail "create from stdin: $(cat "$T/err")"
grep -q '"chunks": 12' "$T/out" || fail "create --json: $(cat "$T/out")"  # 3 MiB in 256 KiB chunks
[ ! -e "$T/b2.kbn.tmp" ] && [ ! -e "$T/b2.kbn.payload.tmp" ] || fail "temporary files left behind"
# shellcheck disable=SC2086
cat "$T/image" | $C --payload - --out "$T/b3.kbn" --chunk-size 65536 >/dev/null 2>"$T/err" \
    || fail "create from a pipe: $(cat "$T/err")"

note "inspect"
expect_rc 0 "$KEEL" bundle inspect "$T/b1.kbn" --json
out="$T/out"
grep -q '"verified": false' "$out" || fail "inspect must say it did not verify"
grep -q '"version": "1.2.0"' "$out" || fail "inspect: version"
grep -q '"security_version": 4' "$out" || fail "inspect: security version"
grep -q '"support_until": "2031-12-31"' "$out" || fail "inspect: support_until"
grep -q '"disruptive": true' "$out" || fail "inspect: disruptive"
grep -q '"downtime_seconds": 45' "$out" || fail "inspect: downtime"
grep -q '"thermo-2"' "$out" || fail "inspect: models"
grep -q '"CVE-2025-0002"' "$out" || fail "inspect: security fixes"
grep -q '"size": 3145728' "$out" || fail "inspect: payload size"
grep -q "\"sha256\": \"$(openssl dgst -sha256 -r "$T/image" | cut -d' ' -f1)\"" "$out" || fail "inspect: digest"
grep -q '"signer": ".*CN=Acme release' "$out" || fail "inspect: signer"
expect_rc 0 "$KEEL" bundle inspect "$T/b1.kbn"
grep -q "NOT VERIFIED" "$T/out" || fail "inspect must say it did not verify"
grep -q "Second line" "$T/out" || fail "inspect: notes"

note "verify"
ROOT="$T/f/release-ca/root.crt"
for b in b1 b2 b3; do
    expect_rc 0 "$KEEL" bundle verify "$T/$b.kbn" --trust "$ROOT"
    grep -q "VALID" "$T/out" || fail "verify $b: $(cat "$T/out")"
done
expect_rc 0 "$KEEL" bundle verify "$T/b1.kbn" --trust "$ROOT" --model thermo-2 --json
grep -q '"valid": true' "$T/out" || fail "verify --json: $(cat "$T/out")"
"$KEEL" bundle verify - --trust "$ROOT" <"$T/b2.kbn" >/dev/null || fail "verify from stdin"
expect_rc 1 "$KEEL" bundle verify "$T/b2.kbn" --trust "$ROOT" --model thermo-2
grep -q "not for model thermo-2" "$T/err" || fail "unclear message: $(cat "$T/err")"

note "tampering"
size=$(stat -c %s "$T/b1.kbn")
cp "$T/b1.kbn" "$T/bad.kbn"
# Flip the first byte of the last MiB of the payload (the bundle's tail): chunk 8 of 256 KiB chunks.
off=$((size - 1048576))
orig=$(dd if="$T/bad.kbn" bs=1 skip="$off" count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
printf "$(printf '\\%03o' $(((orig + 1) % 256)))" | dd of="$T/bad.kbn" bs=1 seek="$off" conv=notrunc 2>/dev/null
cmp -s "$T/b1.kbn" "$T/bad.kbn" && fail "the byte was not changed"
expect_rc 1 "$KEEL" bundle verify "$T/bad.kbn" --trust "$ROOT"
grep -q "^keel: bundle verify: payload chunk 8 (bytes 2097152\.\.2359295) does not match its digest" "$T/err" \
    || fail "unclear message: $(cat "$T/err")"
expect_rc 1 "$KEEL" bundle verify "$T/bad.kbn" --trust "$ROOT" --json
grep -q '"valid": false' "$T/out" || fail "verify --json on a bad bundle: $(cat "$T/out")"
# A byte of the manifest (offset 100).
cp "$T/b1.kbn" "$T/bad2.kbn"
printf 'X' | dd of="$T/bad2.kbn" bs=1 seek=100 conv=notrunc 2>/dev/null
expect_rc 1 "$KEEL" bundle verify "$T/bad2.kbn" --trust "$ROOT"
grep -q "signature does not verify" "$T/err" || fail "unclear message: $(cat "$T/err")"
head -c $((size - 1)) "$T/b1.kbn" >"$T/short.kbn"
expect_rc 1 "$KEEL" bundle verify "$T/short.kbn" --trust "$ROOT"
grep -q "truncated" "$T/err" || fail "unclear message: $(cat "$T/err")"
{ cat "$T/b1.kbn"; printf 'x'; } >"$T/long.kbn"
expect_rc 1 "$KEEL" bundle verify "$T/long.kbn" --trust "$ROOT"
grep -q "trailing data" "$T/err" || fail "unclear message: $(cat "$T/err")"
expect_rc 1 "$KEEL" bundle verify "$T/image" --trust "$ROOT"
grep -q "not a Keel bundle" "$T/err" || fail "unclear message: $(cat "$T/err")"

note "another factory"
expect_rc 1 "$KEEL" bundle verify "$T/b1.kbn" --trust "$T/other/release-ca/root.crt"
grep -q "does not verify against the release root" "$T/err" || fail "unclear message: $(cat "$T/err")"
# shellcheck disable=SC2086
expect_rc 0 "$KEEL" bundle create --signer "$T/s-other" --model thermo-1 --version 1.0.0 --security-version 1 \
    --support-until 2030-01-01 --payload "$T/notes" --out "$T/other.kbn"
expect_rc 1 "$KEEL" bundle verify "$T/other.kbn" --trust "$ROOT"
# The device root is not the release root.
expect_rc 1 "$KEEL" bundle verify "$T/b1.kbn" --trust "$T/f/device-ca/root.crt"

note "usage errors"
expect_rc 2 "$KEEL" bundle verify "$T/b1.kbn"
grep -q "^keel: bundle verify: --trust is required" "$T/err" || fail "unclear message: $(cat "$T/err")"
expect_rc 2 "$KEEL" bundle verify --trust "$ROOT"
expect_rc 2 "$KEEL" bundle verify "$T/b1.kbn" --trust "$T/missing.pem"
expect_rc 2 "$KEEL" bundle verify "$T/missing.kbn" --trust "$ROOT"
expect_rc 2 "$KEEL" bundle verify "$T/b1.kbn" --trust "$ROOT" --frobnicate
expect_rc 2 "$KEEL" bundle inspect
expect_rc 2 "$KEEL" bundle inspect "$T/b1.kbn" "$T/b2.kbn"
expect_rc 2 "$KEEL" bundle signer --dir "$T/f"
# shellcheck disable=SC2086
{
    expect_rc 2 $C --payload "$T/image"
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --disruptive
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --downtime 10
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --chunk-size 5000
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --security-version -1
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --security-fixes "CVE-1,,CVE-2"
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --version 1.2
    grep -q "SemVer" "$T/err" || fail "unclear message: $(cat "$T/err")"
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --model "bad model"
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --support-until 2031-02-30
    expect_rc 2 $C --payload "$T/missing" --out "$T/x.kbn"
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --notes "$T/missing"
    head -c 5000 /dev/zero | tr '\0' 'a' >"$T/long-notes"
    expect_rc 2 $C --payload "$T/image" --out "$T/x.kbn" --notes "$T/long-notes"
    grep -q "longer than 4096" "$T/err" || fail "unclear message: $(cat "$T/err")"
}
expect_rc 2 "$KEEL" bundle create --signer "$T/f" --model m --version 1.0.0 --security-version 1 \
    --support-until 2030-01-01 --payload "$T/image" --out "$T/x.kbn"
grep -q "signer key" "$T/err" || fail "unclear message: $(cat "$T/err")"
[ ! -e "$T/x.kbn" ] || fail "a failed create left a bundle"
echo "bundle_cli: OK"

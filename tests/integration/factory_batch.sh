#!/bin/sh
# 1000 devices with the file keystore: every certificate verifies with
# `openssl verify`, the audit passes, no secret leaks into the device
# directories or the manifest; then planted flaws make the audit fail.
. "$(dirname "$0")/lib.sh"
N=${KEEL_BATCH_DEVICES:-1000}

KEEL_TEST_PASSPHRASE=$(openssl rand -hex 24)
export KEEL_TEST_PASSPHRASE
note "factory init (root keys encrypted)"
expect_rc 0 "$KEEL" factory init --dir "$T/factory" --org "Acme Devices" --passphrase-env KEEL_TEST_PASSPHRASE
for pki in device release service; do
    grep -q "ENCRYPTED PRIVATE KEY" "$T/factory/$pki-ca/root.key" || fail "$pki root key not encrypted"
    [ "$(stat -c %a "$T/factory/$pki-ca/root.key")" = 600 ] || fail "$pki root key not 0600"
    [ "$(stat -c %a "$T/factory/$pki-ca/issuing.key")" = 600 ] || fail "$pki issuing key not 0600"
    openssl pkey -in "$T/factory/$pki-ca/root.key" -passin env:KEEL_TEST_PASSPHRASE -noout \
        || fail "$pki root key does not open with the passphrase"
    if openssl pkey -in "$T/factory/$pki-ca/root.key" -passin pass:wrong-passphrase -noout 2>/dev/null; then
        fail "$pki root key opens with a wrong passphrase"
    fi
    openssl verify -CAfile "$T/factory/$pki-ca/root.crt" "$T/factory/$pki-ca/issuing.crt" >/dev/null \
        || fail "$pki issuing CA does not verify"
done

note "provision $N devices (file keystore, default Argon2id cost)"
expect_rc 0 "$KEEL" factory provision --dir "$T/factory" --model thermo-1 --count "$N" --out "$T/batch" --json
grep -q "\"devices\": $N" "$T/out" || fail "summary does not report $N devices"
[ "$(ls -d "$T"/batch/*/ | wc -l)" -eq "$N" ] || fail "expected $N device directories"
[ "$(stat -c %a "$T/batch/labels.csv")" = 600 ] || fail "labels.csv is not 0600"
[ "$(($(wc -l <"$T/batch/labels.csv") - 1))" -eq "$N" ] || fail "labels.csv does not have $N rows"

note "openssl verify every device certificate against its chain"
openssl verify -CAfile "$T/factory/device-ca/root.crt" -untrusted "$T/factory/device-ca/issuing.crt" \
    "$T"/batch/*/identity/device.crt >"$T/verify" 2>&1 || { tail "$T/verify"; fail "openssl verify failed"; }
[ "$(grep -c ': OK$' "$T/verify")" -eq "$N" ] || fail "not every certificate verified"
# ... and with the chain each device carries.
d=$(ls -d "$T"/batch/*/ | head -n 1)
openssl verify -partial_chain -CAfile "$d/identity/chain.pem" "$d/identity/device.crt" >/dev/null \
    || fail "device chain.pem does not verify its certificate"
# The device id is the base32 of the first 16 bytes of SHA-256 of the public key.
id=$(basename "$d")
derived=$(openssl x509 -in "$d/identity/device.crt" -pubkey -noout | openssl pkey -pubin -outform DER \
    | openssl dgst -sha256 -binary | head -c 16 | base32 | tr -d '=' | tr 'A-Z' 'a-z')
[ "$derived" = "$id" ] || fail "device id $id is not derived from its key ($derived)"
openssl x509 -in "$d/identity/device.crt" -noout -subject | grep -q "OU = thermo-1" || fail "model not in the certificate"

note "no secret outside labels.csv"
grep -rl "PRIVATE KEY" "$T/batch" && fail "a private key in clear in the batch"
sed 1d "$T/batch/labels.csv" | cut -d, -f4 | head -n 50 >"$T/pws"
while read -r pw; do
    if grep -rqF -- "$pw" "$T/batch"/*/ "$T/batch/manifest.json"; then fail "a label password leaked"; fi
done <"$T/pws"
python3 - "$T/batch/manifest.json" "$N" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
assert m["format"] == "keel-manifest-1", m["format"]
assert len(m["devices"]) == int(sys.argv[2]), len(m["devices"])
for d in m["devices"]:
    assert set(d) >= {"id", "serial", "model", "certificate", "cert_sha256"}, d.keys()
    assert "password" not in json.dumps(d)
PY

note "audit passes"
expect_rc 0 "$KEEL" factory audit "$T/batch" --verify-hashes 8
grep -q "^PASS: 0 finding" "$T/out" || fail "audit did not pass"
expect_rc 0 "$KEEL" factory audit "$T/batch" --verify-hashes 0 --json
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["pass"] and r["devices"]==int(sys.argv[2]) and r["entropy_bits"]["min"]>=80, r' "$T/out" "$N"

cp "$T/batch/labels.csv" "$T/labels.orig"
note "planted flaw: two devices share a password"
awk -F, -v OFS=, 'NR==2{pw=$4} NR==3{$4=pw} {print}' "$T/labels.orig" >"$T/batch/labels.csv"
expect_rc 1 "$KEEL" factory audit "$T/batch" --verify-hashes 0 --json
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert not r["pass"]; assert any(f["check"]=="unique-passwords" for f in r["findings"]), r["findings"]' "$T/out"

note "planted flaw: a password derived from the serial number"
awk -F, -v OFS=, 'NR==4{$4=tolower($2) "-1"} {print}' "$T/labels.orig" >"$T/batch/labels.csv"
expect_rc 1 "$KEEL" factory audit "$T/batch" --verify-hashes 0
grep -q "FAIL  no-relation" "$T/out" || fail "serial-derived password not reported"

note "planted flaw: a common password"
awk -F, -v OFS=, 'NR==5{$4="password1"} {print}' "$T/labels.orig" >"$T/batch/labels.csv"
expect_rc 1 "$KEEL" factory audit "$T/batch" --verify-hashes 0
grep -q "FAIL  not-common" "$T/out" || fail "common password not reported"
cp "$T/labels.orig" "$T/batch/labels.csv"

note "a second run appends to the batch"
expect_rc 0 "$KEEL" factory provision --dir "$T/factory" --model thermo-1 --count 3 --out "$T/batch"
expect_rc 0 "$KEEL" factory audit "$T/batch" --verify-hashes 0
grep -q "$((N + 3)) device(s)" "$T/out" || fail "audit does not see $((N + 3)) devices"
echo "factory_batch: 1 passed, 0 failed"

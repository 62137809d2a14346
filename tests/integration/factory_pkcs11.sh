#!/bin/sh
# Provisioning with keys generated on a PKCS#11 token (SoftHSM2, created by the
# test with PINs made at run time): the private keys are sensitive and never
# extractable, signatures made on the token verify with the certificates, the
# batch audits clean, and no PIN is written into the device configuration.
. "$(dirname "$0")/lib.sh"

MODULE=${KEEL_PKCS11_MODULE:-}
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
         /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
    [ -n "$MODULE" ] || { [ -f "$m" ] && MODULE=$m; }
done
[ -n "$MODULE" ] || fail "SoftHSM2 module not found (install softhsm2 or set KEEL_PKCS11_MODULE)"

mkdir -p "$T/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$T" >"$T/softhsm2.conf"
SOFTHSM2_CONF=$T/softhsm2.conf
export SOFTHSM2_CONF
SO_PIN=$(openssl rand -hex 8)
PIN=$(openssl rand -hex 8)
softhsm2-util --init-token --free --label keel-factory --so-pin "$SO_PIN" --pin "$PIN" >/dev/null
(umask 077 && printf '%s\n' "$PIN" >"$T/pin")

expect_rc 0 "$KEEL" factory init --dir "$T/factory" --org "Acme Devices"
note "provision 3 devices on the token"
expect_rc 0 "$KEEL" factory provision --dir "$T/factory" --model cam-2 --count 3 --out "$T/batch" \
    --keystore pkcs11 --pkcs11-module "$MODULE" --pkcs11-token keel-factory --pkcs11-pin-file "$T/pin" --json
grep -q '"keystore": "pkcs11"' "$T/out" || fail "summary does not name the pkcs11 keystore"
grep -rq "$PIN" "$T/batch" && fail "the PIN was written into the batch"
grep -q "$PIN" "$T/err" && fail "the PIN was printed"

note "key attributes on the token"
pkcs11-tool --module "$MODULE" --token-label keel-factory --login --pin "$PIN" --list-objects --type privkey >"$T/objs"
[ "$(grep -c 'Private Key Object; EC' "$T/objs")" -eq 3 ] || { cat "$T/objs"; fail "expected 3 EC private keys"; }
[ "$(grep -c 'Access:.*sensitive.*always sensitive.*never extractable' "$T/objs")" -eq 3 ] \
    || { cat "$T/objs"; fail "a device key is extractable or not sensitive"; }
[ "$(grep -c 'Usage: *sign$' "$T/objs")" -eq 3 ] || { cat "$T/objs"; fail "a device key may do more than sign"; }
# Asking the token for the private key bytes must fail.
label=$(sed -n 's/^ *label: *//p' "$T/objs" | head -n 1)
if pkcs11-tool --module "$MODULE" --token-label keel-factory --login --pin "$PIN" \
    --read-object --type privkey --label "$label" -o "$T/stolen" >/dev/null 2>&1 && [ -s "$T/stolen" ]; then
    fail "the private key could be read off the token"
fi

note "signatures made on the token verify with each device certificate"
openssl verify -CAfile "$T/factory/device-ca/root.crt" -untrusted "$T/factory/device-ca/issuing.crt" \
    "$T"/batch/*/identity/device.crt >/dev/null || fail "device certificates do not verify"
echo "sign me" >"$T/msg"
# SoftHSM2 offers raw CKM_ECDSA only: hash here, sign the digest on the token.
openssl dgst -sha256 -binary "$T/msg" >"$T/digest"
for d in "$T"/batch/*/; do
    key=$(sed -n 's/^key_label = //p' "$d/keeld.conf")
    grep -q '^driver = pkcs11$' "$d/keeld.conf" || fail "keeld.conf does not name the pkcs11 driver"
    grep -q "^pin_file = $T/pin\$" "$d/keeld.conf" || fail "keeld.conf does not reference the PIN file"
    [ ! -e "$d/keystore/device.key" ] || fail "a key file exists although the key is on the token"
    # pkcs11-tool picks the signing key by id, not by label.
    id=$(awk -v l="$key" '/label:/{cur=$2} /ID:/{if (cur == l) print $2}' "$T/objs")
    [ -n "$id" ] || fail "no key $key on the token"
    pkcs11-tool --module "$MODULE" --token-label keel-factory --login --pin "$PIN" --sign \
        --mechanism ECDSA --signature-format openssl --id "$id" -i "$T/digest" -o "$T/sig" >/dev/null 2>&1 \
        || fail "token could not sign with $key"
    openssl x509 -in "$d/identity/device.crt" -pubkey -noout >"$T/pub.pem"
    openssl pkeyutl -verify -pubin -inkey "$T/pub.pem" -sigfile "$T/sig" -in "$T/digest" >/dev/null \
        || fail "token signature does not verify with the certificate of $(basename "$d")"
done

expect_rc 0 "$KEEL" factory audit "$T/batch" --verify-hashes 3
note "a wrong PIN fails cleanly and leaves nothing behind"
(umask 077 && echo "not-the-pin" >"$T/badpin")
expect_rc 1 "$KEEL" factory provision --dir "$T/factory" --model cam-2 --count 1 --out "$T/batch2" \
    --keystore pkcs11 --pkcs11-module "$MODULE" --pkcs11-token keel-factory --pkcs11-pin-file "$T/badpin"
grep -q "CKR_PIN_INCORRECT" "$T/err" || fail "unclear message: $(cat "$T/err")"
grep -q "not-the-pin" "$T/err" && fail "the wrong PIN was printed"
[ -z "$(ls "$T/batch2" 2>/dev/null | grep -v labels.csv)" ] || fail "a failed run left devices"
note "power cuts and I/O errors never leave a device without its key, nor a key without its device"
token_labels() {
    pkcs11-tool --module "$MODULE" --token-label keel-factory --login --pin "$PIN" --list-objects --type privkey \
        2>/dev/null | sed -n 's/^ *label: *//p' | sort
}
device_labels() {
    for c in "$T"/fb/*/keeld.conf; do [ -f "$c" ] && sed -n 's/^key_label = //p' "$c"; done | sort
}
Q="$KEEL factory provision --dir $T/factory --model cam-2 --out $T/fb $FAST_ARGON --keystore pkcs11
   --pkcs11-module $MODULE --pkcs11-token keel-factory --pkcs11-pin-file $T/pin"
# Clear the token of the earlier part's keys so the sets below compare exactly.
for l in $(token_labels); do
    pkcs11-tool --module "$MODULE" --token-label keel-factory --login --pin "$PIN" --delete-object \
        --type privkey --label "$l" >/dev/null 2>&1
done
n=1
while [ $n -le 60 ]; do
    mode=$([ $((n % 2)) -eq 0 ] && echo kill || echo error)
    set +e
    KEEL_FAULT_AT=$n KEEL_FAULT_MODE=$mode $Q --count 1 >/dev/null 2>&1
    rc=$?
    set -e
    expect_rc 0 $Q --count 1   # the next run recovers whatever was left
    [ "$(token_labels)" = "$(device_labels)" ] || {
        echo "token: $(token_labels | tr '\n' ' ')" >&2; echo "devices: $(device_labels | tr '\n' ' ')" >&2
        fail "fault at $n ($mode, exit $rc): token keys and devices differ"; }
    n=$((n + 1))
done
expect_rc 0 "$KEEL" factory audit "$T/fb" --verify-hashes 200
echo "factory_pkcs11: 1 passed, 0 failed"

#!/bin/sh
# The factory commands reject bad input with a clear message and exit 2, never
# overwrite a factory, and keep secrets off the command line.
. "$(dirname "$0")/lib.sh"

for sub in "" "factory" "factory init" "factory provision" "factory audit" "factory issue-server"; do
    # shellcheck disable=SC2086
    expect_rc 0 "$KEEL" $sub --help
    grep -q "usage: keel" "$T/out" || fail "no usage text for '$sub'"
done
expect_rc 2 "$KEEL"
expect_rc 2 "$KEEL" frobnicate
expect_rc 2 "$KEEL" factory frobnicate

expect_rc 2 "$KEEL" factory init --dir "$T/f"
grep -q "^keel: factory init: --dir and --org are required" "$T/err" || fail "unclear message: $(cat "$T/err")"
expect_rc 2 "$KEEL" factory init --dir "$T/f" --org Acme --passphrase hunter2
expect_rc 2 "$KEEL" factory init --dir "$T/f" --org Acme --passphrase-env KEEL_NO_SUCH_VARIABLE
grep -q "KEEL_NO_SUCH_VARIABLE is not set" "$T/err" || fail "unclear message: $(cat "$T/err")"
expect_rc 2 "$KEEL" factory init --dir "$T/f" --org "$(printf 'bad\norg')"
expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
sum=$(cat "$T"/f/*/* | sha256sum)
expect_rc 1 "$KEEL" factory init --dir "$T/f" --org Acme
grep -q "refusing to overwrite" "$T/err" || fail "unclear message: $(cat "$T/err")"
[ "$(cat "$T"/f/*/* | sha256sum)" = "$sum" ] || fail "a second init changed the factory"

P="$KEEL factory provision --dir $T/f --out $T/b $FAST_ARGON"
expect_rc 2 $P --model m --count 0
expect_rc 2 $P --model m --count 12abc
expect_rc 2 $P --model m --count 2000000
expect_rc 2 $P --model "a b" --count 1
expect_rc 2 $P --model "../../etc" --count 1
expect_rc 2 $P --model m --count 1 --keystore floppy
expect_rc 2 $P --model m --count 1 --keystore pkcs11
grep -q "needs --pkcs11-module" "$T/err" || fail "unclear message: $(cat "$T/err")"
expect_rc 2 $P --model m --count 1 --tpm2-tcti device:/dev/tpmrm0
grep -q "tpm2-\* options need --keystore tpm2" "$T/err" || fail "unclear message: $(cat "$T/err")"
expect_rc 2 $P --model m --count 1 --keystore tpm2 --pkcs11-pin-file "$T/pin"
grep -q "pkcs11-\* options need --keystore pkcs11" "$T/err" || fail "unclear message: $(cat "$T/err")"
for bad in 3 3,600 0,600,1 3,0,1 3,600,1,4 a,b,c 3,600,-1; do
    expect_rc 2 $P --model m --count 1 --keystore tpm2 --tpm2-lockout "$bad"
    grep -q "tpm2-lockout takes TRIES,RECOVERY_S,LOCKOUT_RECOVERY_S" "$T/err" || fail "unclear message for $bad: $(cat "$T/err")"
done
expect_rc 2 $P --model m --count 1 --tpm2-lockout 3,600,1
grep -q "tpm2-\* options need --keystore tpm2" "$T/err" || fail "unclear message: $(cat "$T/err")"
expect_rc 2 $P --model m --count 1 --keystore tpm2 --tpm2-lockout-auth-file "$T/pin"
grep -q "tpm2-lockout-auth-file goes with --tpm2-lockout" "$T/err" || fail "unclear message: $(cat "$T/err")"
expect_rc 2 $P --model m --count 1 --keystore tpm2 --tpm2-pin-file "$T/pin" --tpm2-pin-env X
grep -q "give --tpm2-pin-file or --tpm2-pin-env, not both" "$T/err" || fail "unclear message: $(cat "$T/err")"
# No TPM at this TCTI (a closed loopback port): a clear error, no device left.
expect_rc 1 $P --model m --count 1 --keystore tpm2 --tpm2-tcti "swtpm:host=127.0.0.1,port=$(free_port)"
grep -q "no TPM answers through TCTI" "$T/err" || fail "unclear message: $(cat "$T/err")"
[ ! -e "$T/b" ] || [ -z "$(ls "$T/b" | grep -v labels.csv)" ] || fail "a failed tpm2 provision left devices behind: $(ls "$T/b")"
rm -rf "$T/b"
expect_rc 2 $P --model m --count 1 --argon2-m 1
expect_rc 2 "$KEEL" factory provision --dir "$T/nofactory" --out "$T/b" --model m --count 1
grep -q "not a Keel factory" "$T/err" || fail "unclear message: $(cat "$T/err")"
[ ! -e "$T/b" ] || [ -z "$(ls "$T/b")" ] || fail "a failed provision left devices behind"

expect_rc 2 "$KEEL" factory audit
expect_rc 2 "$KEEL" factory audit "$T/missing"
expect_rc 2 "$KEEL" factory audit "$T/b" --common-list "$T/none"

expect_rc 2 "$KEEL" factory issue-server --dir "$T/f" --name "bad name" --out "$T/s"
expect_rc 0 "$KEEL" factory issue-server --dir "$T/f" --name broker.local --out "$T/s"
[ "$(stat -c %a "$T/s/server.key")" = 600 ] || fail "server key not 0600"
openssl verify -CAfile "$T/s/ca.pem" -untrusted "$T/f/service-ca/issuing.crt" "$T/s/server.crt" >/dev/null \
    || fail "server certificate does not verify against the service root"
if openssl verify -CAfile "$T/f/device-ca/root.crt" -untrusted "$T/f/device-ca/issuing.crt" \
    "$T/s/server.crt" >/dev/null 2>&1; then
    fail "server certificate verifies under the device CA"
fi
openssl x509 -in "$T/s/server.crt" -noout -ext subjectAltName | grep -q "DNS:broker.local" || fail "no SAN"
echo "factory_errors: 1 passed, 0 failed"

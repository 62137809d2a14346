#!/bin/sh
# The device's update trust store is itself replaced by a signed update
# (a "trust" bundle). A move to a new release hierarchy goes through a store
# with both roots, and the old root can go only once no bootable slot needs it
# (a store that would make the next boot refuse the running software is
# refused); afterwards the old hierarchy's bundles are refused. An old trust
# bundle cannot be replayed; a store carrying a CRL makes the device refuse a
# revoked signer; a malformed payload leaves the store unchanged.
. "$(dirname "$0")/lib.sh"

expect_rc 0 "$KEEL" factory init --dir "$T/old" --org Acme
expect_rc 0 "$KEEL" factory init --dir "$T/new" --org Acme
expect_rc 0 "$KEEL" factory provision --dir "$T/old" --model plug-1 --count 1 --out "$T/b" $FAST_ARGON
D=$T/b/$(ls "$T/b" | grep -v '\.' | head -n 1)
expect_rc 0 "$KEEL" bundle signer --dir "$T/old" --name old-release --out "$T/s-old"
expect_rc 0 "$KEEL" bundle signer --dir "$T/new" --name new-release --out "$T/s-new"
expect_rc 0 "$KEEL" bundle signer --dir "$T/new" --name leaked --out "$T/s-leaked"

mk() { # SIGNER OUT VERSION SECVER KIND PAYLOAD
    expect_rc 0 "$KEEL" bundle create --signer "$1" --model plug-1 --version "$3" --security-version "$4" \
        --support-until 2030-12-31 --kind "$5" --payload "$6" --out "$2"
}
head -c 100000 /dev/urandom >"$T/img"
install_ok() { expect_rc 0 "$KEEL" update install "$1" --state "$D"; }
install_refused() { # BUNDLE WHY
    expect_rc 1 "$KEEL" update install "$1" --state "$D"
    grep -q "$2" "$T/err" || fail "refusal of $1 does not say '$2': $(cat "$T/err")"
}
cycle() { # an image install, then boot and confirm
    install_ok "$1"
    expect_rc 0 "$KEEL" boot --state "$D"
    expect_rc 0 "$KEEL" update confirm --state "$D"
}

note "the old hierarchy's image installs"
mk "$T/s-old" "$T/v1.kb" 1.0.0 1 image "$T/img"
cycle "$T/v1.kb"

note "a trust store that would refuse the bundle carrying it is refused (it could lock out all updates)"
mk "$T/s-old" "$T/trust-new-only.kb" 2026.1.0 1 trust "$T/new/release-ca/root.crt"
install_refused "$T/trust-new-only.kb" "would refuse the bundle that carries it"

note "moving to a new release hierarchy: first a trust store with both roots"
cat "$T/old/release-ca/root.crt" "$T/new/release-ca/root.crt" >"$T/both.pem"
mk "$T/s-old" "$T/trust1.kb" 2026.1.0 1 trust "$T/both.pem"
expect_rc 0 "$KEEL" bundle inspect "$T/trust1.kb"
grep -q "trust store" "$T/out" || fail "inspect does not show the kind"
install_ok "$T/trust1.kb"
grep -q "installed trust store" "$T/out" || fail "unexpected output: $(cat "$T/out")"
cmp -s "$D/trust/release-root.pem" "$T/both.pem" || fail "trust store not replaced"
expect_rc 0 "$KEEL" boot --state "$D"      # the running software still verifies
note "a trust store without the root of the running software is refused (the next boot would fail)"
mk "$T/s-new" "$T/trust-early.kb" 2026.1.5 2 trust "$T/new/release-ca/root.crt"
install_refused "$T/trust-early.kb" "would not verify the software in slot A"
mk "$T/s-new" "$T/v2.kb" 1.1.0 2 image "$T/img"
cycle "$T/v2.kb"

note "... then the new root alone, once no bootable slot needs the old one"
# Slot A (1.0.0, security version 1) fell below the counter when 1.1.0 was
# confirmed, so it is no longer bootable and the old root may go.
mk "$T/s-new" "$T/trust2.kb" 2026.2.0 2 trust "$T/new/release-ca/root.crt"
install_ok "$T/trust2.kb"
cmp -s "$D/trust/release-root.pem" "$T/new/release-ca/root.crt" || fail "trust store not replaced"
expect_rc 0 "$KEEL" boot --state "$D"
mk "$T/s-old" "$T/v4-old.kb" 1.3.0 4 image "$T/img"
install_refused "$T/v4-old.kb" "does not verify against the release root"

note "an old trust store cannot be brought back (replay, even by a trusted signer)"
install_refused "$T/trust1.kb" "does not verify against the release root"
mk "$T/s-new" "$T/trust-replay.kb" 2026.1.5 1 trust "$T/both.pem"
install_refused "$T/trust-replay.kb" "not newer"
cmp -s "$D/trust/release-root.pem" "$T/new/release-ca/root.crt" || fail "a refused trust bundle changed the store"

note "a malformed trust payload is refused and changes nothing"
printf 'not a certificate\n' >"$T/junk.pem"
mk "$T/s-new" "$T/trust-junk.kb" 2026.3.0 5 trust "$T/junk.pem"
install_refused "$T/trust-junk.kb" "does not load"
cmp -s "$D/trust/release-root.pem" "$T/new/release-ca/root.crt" || fail "a malformed trust bundle changed the store"
[ ! -e "$D/trust/release-root.pem.new" ] || fail "a staged trust file was left behind"

note "a trust store with a CRL makes the device refuse a revoked signer"
mkdir -p "$T/ca"
: >"$T/ca/index.txt"
echo 01 >"$T/ca/crlnumber"
cat >"$T/ca/ca.cnf" <<CNF
[ca]
default_ca = rel
[rel]
database = $T/ca/index.txt
crlnumber = $T/ca/crlnumber
default_md = sha256
default_crl_days = 30
CNF
openssl ca -config "$T/ca/ca.cnf" -keyfile "$T/new/release-ca/issuing.key" -cert "$T/new/release-ca/issuing.crt" \
    -revoke "$T/s-leaked/signer.crt" >/dev/null 2>&1 || fail "openssl ca -revoke failed"
openssl ca -config "$T/ca/ca.cnf" -keyfile "$T/new/release-ca/issuing.key" -cert "$T/new/release-ca/issuing.crt" \
    -gencrl -out "$T/ca/crl.pem" >/dev/null 2>&1 || fail "openssl ca -gencrl failed"
cat "$T/new/release-ca/root.crt" "$T/ca/crl.pem" >"$T/trust3.pem"
mk "$T/s-new" "$T/trust3.kb" 2026.4.0 3 trust "$T/trust3.pem"
install_ok "$T/trust3.kb"
mk "$T/s-leaked" "$T/v5-leaked.kb" 1.4.0 5 image "$T/img"
install_refused "$T/v5-leaked.kb" "revoked"
mk "$T/s-new" "$T/v5.kb" 1.4.0 5 image "$T/img"
cycle "$T/v5.kb"
expect_rc 0 "$KEEL" update status --state "$D" --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d)' "$T/out" | grep -q "1.4.0" || fail "status does not show 1.4.0"
echo "update_trust: 1 passed, 0 failed"

#!/bin/sh
# The device identity in a TPM 2.0 (swtpm + tpm2-abrmd, started here as
# nobody on loopback ports), end to end (5.4-1, 5.4-2):
#   - `keel factory provision --keystore tpm2` makes the key inside the TPM:
#     fixedTPM, fixedParent, sensitiveDataOrigin, with an authorization value
#     and without noDA; the PIN is a random 0600 file, never printed;
#   - the private key cannot be read out: not by OpenSSL's default provider,
#     not through the tpm2 provider (which gives back the same TPM blob);
#   - keeld serves its local HTTPS API with it (TLS 1.3 and 1.2, the device
#     certificate) and reaches mosquitto over mutual TLS with it;
#   - the device's state copied next to another TPM does not start: the key
#     blob does not load and the vault's data key does not unseal;
#   - wrong PINs run into the TPM's dictionary-attack lockout, which then
#     refuses even the right PIN until the lockout is cleared.
. "$(dirname "$0")/keeld_lib.sh"
. "$(dirname "$0")/broker_lib.sh"
. "$(dirname "$0")/tpm_lib.sh"

tpm_start main
tpm_start other
note "a TPM whose dictionary-attack protection is off is refused"
expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
# A recovery interval of 0 turns the protection off: failures are not even counted.
tpm_tools other tpm2_dictionarylockout -s -n 3 -t 0 -l 1 >/dev/null || fail "cannot set the DA parameters"
# shellcheck disable=SC2046,SC2086
expect_rc 1 env $(tpm_env other) "$KEEL" factory provision --dir "$T/f" --model cam-2 --count 1 --out "$T/off" \
    --keystore tpm2 $FAST_ARGON
grep -q "dictionary-attack protection is off (3 tries, recovery interval 0 s)" "$T/err" ||
    fail "unclear refusal: $(cat "$T/err")"
[ -z "$(ls "$T/off" | grep -v labels.csv)" ] || fail "a device was made on a TPM without DA protection"
# shellcheck disable=SC2046,SC2086
expect_rc 2 env $(tpm_env other) "$KEEL" factory provision --dir "$T/f" --model cam-2 --count 1 --out "$T/off" \
    --keystore tpm2 --tpm2-lockout 3,0,1 $FAST_ARGON
rm -rf "$T/off"

note "provision two devices with keys made in the TPM; Keel sets the TPM's lockout: 3 tries, one forgiven per 600 s"
# shellcheck disable=SC2086
expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model cam-2 --count 2 --out "$T/b" --keystore tpm2 \
    --tpm2-lockout 3,600,1 $FAST_ARGON --json
grep -q '"keystore": "tpm2"' "$T/out" || fail "the summary does not name the tpm2 keystore"
python3 -c 'import json, sys
l = json.load(open(sys.argv[1]))["tpm2_lockout"]
sys.exit(not (l["max_tries"] == 3 and l["recovery_seconds"] == 600 and l["lockout_recovery_seconds"] == 1
              and l["failures"] == 0 and l["in_lockout"] is False))' "$T/out" ||
    fail "the summary does not show the lockout settings: $(cat "$T/out")"
tpm_tools main tpm2_getcap properties-variable >"$T/cap"
grep -q "TPM2_PT_MAX_AUTH_FAIL: 0x3$" "$T/cap" && grep -q "TPM2_PT_LOCKOUT_INTERVAL: 0x258$" "$T/cap" ||
    { cat "$T/cap"; fail "the TPM's lockout settings were not applied"; }
for d in "$T"/b/*/; do
    grep -q '^driver = tpm2$' "$d/keeld.conf" || fail "keeld.conf does not name the tpm2 driver"
    grep -q '^pin_file = keystore/tpm2.pin$' "$d/keeld.conf" || fail "keeld.conf does not name the PIN file"
    [ "$(stat -c %a "$d/keystore/tpm2.pin")" = 600 ] || fail "the PIN file is not 0600"
    [ ! -e "$d/keystore/kek" ] || fail "a key-encryption key was written for a TPM keystore"
    pin=$(cat "$d/keystore/tpm2.pin")
    [ ${#pin} -eq 32 ] || fail "the PIN is not 128 random bits in hex"
    ! grep -rq "$pin" "$T/out" "$T/err" "$T/b/manifest.json" "$T/b/labels.csv" || fail "the PIN was printed"
    grep -q "TSS2 PRIVATE KEY" "$d/keystore/device.tpm2" || fail "the key is not a TSS2 blob"
    tpm_tools main tpm2_print -t TSSPRIVKEY_OBJ "$d/keystore/device.tpm2" >"$T/print" ||
        fail "tpm2_print cannot read the blob"
    attrs=$(sed -n '/^attributes:/{n;s/^ *value: *//p}' "$T/print")
    for a in fixedtpm fixedparent sensitivedataorigin userwithauth sign; do
        echo "|$attrs|" | grep -q "|$a|" || fail "the key lacks $a: $attrs"
    done
    echo "|$attrs|" | grep -q '|noda|' && fail "the key is exempt from the DA lockout: $attrs"
done
provision_dir=$(ls -d "$T"/b/*/ | head -n 1)
D=${provision_dir%/}
CONF=$D/keeld.conf
DEV_ID=$(basename "$D")
BLOB=$D/keystore/device.tpm2
LABEL_PW=$(grep "^$DEV_ID," "$T/b/labels.csv" | cut -d, -f4)

note "the private key cannot be read out"
if openssl pkey -in "$BLOB" -out "$T/stolen.pem" 2>/dev/null; then
    fail "OpenSSL's default provider read a private key from the blob"
fi
openssl pkey -provider tpm2 -provider default -passin "file:$D/keystore/tpm2.pin" -in "$BLOB" \
    -out "$T/again.pem" 2>"$T/pkey.err" || { cat "$T/pkey.err"; fail "the tpm2 provider cannot load the blob"; }
grep -q "TSS2 PRIVATE KEY" "$T/again.pem" || fail "the tpm2 provider exported something else than the TPM blob"
grep -q "BEGIN EC PRIVATE\|BEGIN PRIVATE" "$T/again.pem" && fail "a plain private key came out"
openssl pkey -provider tpm2 -provider default -passin "file:$D/keystore/tpm2.pin" -in "$BLOB" -text -noout \
    >"$T/text" 2>&1 || true
grep -qi '^priv:' "$T/text" && fail "the private scalar was shown"
# The key in the TPM is the certificate's.
openssl pkey -provider tpm2 -provider default -passin "file:$D/keystore/tpm2.pin" -in "$BLOB" -pubout \
    -out "$T/tpm.pub" 2>/dev/null || fail "no public key from the blob"
openssl x509 -in "$D/identity/device.crt" -pubkey -noout >"$T/cert.pub"
cmp -s "$T/tpm.pub" "$T/cert.pub" || fail "the certificate is not for the key in the TPM"

note "keeld serves HTTPS with the TPM key (TLS 1.3 and 1.2) and connects to mosquitto over mutual TLS"
broker_pki "$T/f"
broker_start
broker_sub "keel/v1/$DEV_ID/#" "$T/sub.txt"
start_keeld -o "link.broker=127.0.0.1:$BROKER_PORT" -o link.first_connect=0
expect_http 200 GET /api/v1/status -
for v in 1.3 1.2; do
    curl -sS --max-time 20 --cacert "$T/f/device-ca/root.crt" --resolve "$DEV_ID:$PORT:127.0.0.1" \
        --tlsv"$v" --tls-max "$v" -o /dev/null -w '%{http_code}' "https://$DEV_ID:$PORT/api/v1/status" \
        >"$T/code" 2>"$T/curl.err" || { cat "$T/curl.err"; die_log "TLS $v to keeld failed"; }
    [ "$(cat "$T/code")" = 200 ] || die_log "TLS $v: HTTP $(cat "$T/code")"
done
openssl s_client -connect "127.0.0.1:$PORT" -tls1_2 -CAfile "$T/f/device-ca/root.crt" </dev/null >"$T/s12" 2>&1 || true
grep -q "Protocol *: TLSv1.2" "$T/s12" || { cat "$T/s12"; fail "no TLS 1.2 session"; }
grep -q "ECDHE-ECDSA" "$T/s12" || fail "TLS 1.2 did not use the ECDSA identity"
i=0
until grep -q "link: connected to 127.0.0.1:$BROKER_PORT as $DEV_ID" "$KEELD_LOG"; do
    i=$((i + 1))
    [ $i -lt 150 ] || die_log "keeld did not connect to the broker with its TPM key"
    sleep 0.1
done
grep -q "New client connected.*as $DEV_ID\|u'$DEV_ID'" "$BROKER_LOG" || broker_die "the broker did not see the device's certificate name"
note "the vault (its data key sealed by the TPM) keeps the new password across a restart"
login_ok "$LABEL_PW"
change_password "$TOKEN" "$LABEL_PW" "Tpm-Sealed-Password-42"
restart_keeld -o "link.broker=127.0.0.1:$BROKER_PORT" -o link.first_connect=0
login_ok "Tpm-Sealed-Password-42"
stop_keeld

# keeld_start_fails CONF LOG [env assignments...]: keeld must exit non-zero.
keeld_start_fails() {
    _conf=$1 _log=$2
    shift 2
    set +e
    # shellcheck disable=SC2086
    env "$@" "$KEELD" --config "$_conf" -o "api.listen=127.0.0.1:$(free_port)" $KEELD_FAST >/dev/null 2>"$_log" &
    _pid=$!
    EXTRA_PIDS="$EXTRA_PIDS $_pid"
    _i=0
    while kill -0 "$_pid" 2>/dev/null; do
        _i=$((_i + 1))
        [ $_i -lt 200 ] || fail "keeld kept running: $_conf $*"
        sleep 0.1
    done
    wait "$_pid"
    _rc=$?
    set -e
    [ "$_rc" -ne 0 ] || fail "keeld exited 0: $_conf $*"
}

note "the state copied next to another TPM does not start: the vault's key does not load there"
cp -a "$D" "$T/copy"
# shellcheck disable=SC2046
keeld_start_fails "$T/copy/keeld.conf" "$T/copy.err" $(tpm_env other)
grep -q "vault: tpm2: loading the key into the TPM failed: the key blob was not made by this TPM" "$T/copy.err" ||
    { cat "$T/copy.err"; fail "unclear error on another TPM"; }
note "... while the same copy next to its own TPM starts"
PORT= CONF=$T/copy/keeld.conf start_keeld
stop_keeld

note "wrong PINs run into the dictionary-attack lockout"
good=$(cat "$T/copy/keystore/tpm2.pin")
echo "0000$good" | cut -c1-32 >"$T/copy/keystore/tpm2.pin"
for n in 1 2 3; do
    keeld_start_fails "$T/copy/keeld.conf" "$T/wrong$n.err"
    grep -q "tpm2: .*wrong PIN" "$T/wrong$n.err" || { cat "$T/wrong$n.err"; fail "try $n: no wrong-PIN error"; }
done
tpm_tools main tpm2_getcap properties-variable >"$T/cap"
grep -q "inLockout: *1" "$T/cap" || { cat "$T/cap"; fail "the TPM is not in lockout after 3 wrong PINs"; }
printf '%s\n' "$good" >"$T/copy/keystore/tpm2.pin"
keeld_start_fails "$T/copy/keeld.conf" "$T/locked.err"
grep -q "tpm2: .*lockout" "$T/locked.err" || { cat "$T/locked.err"; fail "the right PIN was not refused in lockout"; }
tpm_tools main tpm2_dictionarylockout -c >/dev/null || fail "cannot clear the lockout"
PORT= CONF=$T/copy/keeld.conf start_keeld
stop_keeld
note "ok"

#!/bin/sh
# The fleet end to end, every part real: mosquitto with the shipped
# configuration, keel-fleetd (SQLite), and a provisioned device running
# keeld. The factory manifest is imported; the device reports its version at
# boot; a campaign rolls a signed bundle out: the device is told over MQTT,
# downloads over mutual TLS from keel-fleetd's update server, installs,
# reboots (emulated: keel boot + restart), confirms, and the fleet sees the
# new version and closes the campaign. An unregistered device certificate
# (valid, from the device CA) gets no bytes; a revoked device is refused by
# the update server and, after the CRL reload, by the broker.
# (EN 303 645 5.1-2A, 5.3-1, 5.3-2, 5.3-5, 5.3-8, 5.3-10, 5.5-8, 5.9-3.)
. "$(dirname "$0")/keeld_lib.sh"
. "$(dirname "$0")/broker_lib.sh"
. "$(dirname "$0")/fleet_lib.sh"
CHUNK=65536

# ---- a device running 1.0.0, a release signer ------------------------------------------------
provision plug-1
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"
mk() {
    head -c $((2 * CHUNK + 777)) /dev/urandom >"$T/payload-$1"
    expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version "$1" --security-version "$2" \
        --support-until 2030-12-31 --payload "$T/payload-$1" --out "$T/$1.kb" --chunk-size $CHUNK
}
mk 1.0.0 1
expect_rc 0 "$KEEL" update install "$T/1.0.0.kb" --state "$D"
expect_rc 0 "$KEEL" boot --state "$D"

# ---- the broker, the fleet, the registry ---------------------------------------------------------
fleet_setup "$T/f"
broker_start
fleet_start op
expect_rc 0 "$KEEL" fleet import "$T/b/manifest.json"
fjson() { "$KEEL" fleet --json "$@" 2>"$T/err" || fail "keel fleet $*: $(cat "$T/err")"; }
# jq-like: fpath EXPR (over the JSON on stdin, "j")
fpath() { python3 -c 'import json,sys; j=json.load(sys.stdin); v=eval(sys.argv[1]); print("" if v is None else v)' "$1"; }
[ "$(fjson device "$DEV_ID" | fpath 'j["state"]')" = registered ] || fail "the device is not registered"
note "the factory's manifest imported: $DEV_ID registered"

# wait_fleet SECONDS WHAT PYEXPR ARGS...: until `keel fleet --json ARGS` satisfies PYEXPR.
wait_fleet() {
    _s=$1 _what=$2 _e=$3
    shift 3
    _i=0
    until [ "$(fjson "$@" | fpath "$_e")" = True ]; do
        _i=$((_i + 1))
        [ $_i -lt $((_s * 5)) ] || fleet_die op "$_what (last: $(fjson "$@"))"
        sleep 0.2
    done
}

LINK="-o link.broker=127.0.0.1:$BROKER_PORT -o link.first_connect=0 -o link.backoff_cap=2 -o ipc.socket=$T/app.sock"
UPD="-o update.server=https://127.0.0.1:$FLEET_DIST_PORT -o update.first_check=0 -o update.check_interval=3600"
# shellcheck disable=SC2086
start_keeld $LINK $UPD
wait_fleet 30 "the device's boot report did not reach the registry" \
    'j["state"] == "active" and j["version"] == "1.0.0" and j["security_version"] == 1' device "$DEV_ID"
note "keeld online: the fleet knows it runs 1.0.0 (security version 1)"

# ---- a campaign -----------------------------------------------------------------------------------------
mk 1.1.0 2
fjson campaign create --bundle "$T/1.1.0.kb" --model plug-1 --percent 100 >"$T/camp.json"
CAMP=$(fpath 'j["id"]' <"$T/camp.json")
[ "$(fpath 'j["version"]' <"$T/camp.json")" = 1.1.0 ] || fail "the campaign's version is not the bundle's: $(cat "$T/camp.json")"
wait_fleet 60 "the device did not install the campaign's bundle" \
    'j["counts"]["installed"] == 1' campaign show "$CAMP"
grep -q "fleet: update server: sending plug-1 1.1.0 to $DEV_ID" "$FLEET_DIR/op.log" ||
    fleet_die op "the update server did not log the download"
head -c "$(wc -c <"$T/payload-1.1.0")" "$D/update/slot-b.img" | cmp -s - "$T/payload-1.1.0" ||
    fail "slot B does not hold 1.1.0"
note "campaign $CAMP: the device was told over MQTT, fetched the bundle over mutual TLS and installed it into slot B"

# the emulated reboot: the bootloader step, then keeld again
stop_keeld
expect_rc 0 "$KEEL" boot --state "$D"
# shellcheck disable=SC2086
start_keeld $LINK $UPD
wait_fleet 30 "the fleet did not see 1.1.0 confirmed" \
    'j["counts"]["confirmed"] == 1 and j["state"] == "done" and j["time_to"]["all_confirmed"] is not None' \
    campaign show "$CAMP"
[ "$(fjson device "$DEV_ID" | fpath 'j["version"]')" = 1.1.0 ] || fail "the registry does not show 1.1.0"
sleep 2
[ "$(grep -c "GET /v1/bundles\|sending plug-1" "$FLEET_DIR/op.log")" = 1 ] ||
    fleet_die op "the device fetched the bundle again after running it"
note "reboot: 1.1.0 confirmed by the device's boot report, the campaign is done, nothing fetched twice"

# ---- strangers get nothing ------------------------------------------------------------------------------------
STRANGER=$(python3 -c 'import random; print("".join(random.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(26)))')
broker_client_cert "$T/f" "$STRANGER"
dist() { # dist PATH CERT KEY: HTTP status (000 = no HTTP at all), body in $T/dist.out
    curl -s -o "$T/dist.out" -w '%{http_code}' --max-time 10 --cacert "$T/f/service-ca/root.crt" \
        --cert "$2" --key "$3" "https://127.0.0.1:$FLEET_DIST_PORT$1" 2>/dev/null || true
}
CODE=$(dist /v1/update "$BROKER_DIR/clients/$STRANGER.crt" "$BROKER_DIR/clients/$STRANGER.key")
[ "$CODE" = 403 ] || fail "an unregistered device certificate got HTTP $CODE on /v1/update"
CODE=$(dist "/v1/bundles/$CAMP" "$BROKER_DIR/clients/$STRANGER.crt" "$BROKER_DIR/clients/$STRANGER.key")
[ "$CODE" = 403 ] && ! grep -q "KEELBND" "$T/dist.out" 2>/dev/null || fail "an unregistered device got HTTP $CODE for the bundle"
CODE=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$T/f/service-ca/root.crt" \
    "https://127.0.0.1:$FLEET_DIST_PORT/v1/update" 2>/dev/null || true)
[ "$CODE" = 000 ] || fail "a client without a certificate got HTTP $CODE (the handshake must end it)"
note "no certificate: the handshake ends it; a valid device-CA certificate that is not registered: 403, no bytes"

# ---- revocation -----------------------------------------------------------------------------------------------
# a second registered device with a key we hold, to try the update server after the CRL
"$KEEL_BUILD_DIR/tests/fleet_sim" manifest --count 1 --model plug-1 --issuing-cert "$T/f/device-ca/issuing.crt" \
    --issuing-key "$T/f/device-ca/issuing.key" --org Acme --out "$T/sim" >/dev/null || fail "fleet_sim manifest"
SIMID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["devices"][0]["id"])' "$T/sim/manifest.json")
expect_rc 0 "$KEEL" fleet import "$T/sim/manifest.json"
CODE=$(dist /v1/update "$T/sim/$SIMID.crt" "$T/sim/$SIMID.key")
[ "$CODE" = 204 ] || fail "a registered device with no campaign got HTTP $CODE (expected 204)"
broker_mark
expect_rc 0 "$KEEL" fleet revoke "$SIMID"
expect_rc 0 "$KEEL" fleet revoke "$DEV_ID"
grep -q "broker .* told to reload its CRL" "$FLEET_DIR/op.log" || fleet_die op "the broker was not told to reload"
openssl crl -in "$BROKER_CRL" -noout -text 2>/dev/null | grep -c "Serial Number" | grep -qx 2 ||
    fail "the CRL the broker reads does not list the 2 revoked devices"
CODE=$(dist /v1/update "$T/sim/$SIMID.crt" "$T/sim/$SIMID.key")
[ "$CODE" = 000 ] || fail "a revoked device got HTTP $CODE from the update server (the handshake must end it)"
[ "$(fjson device "$DEV_ID" | fpath 'j["state"]')" = revoked ] || fail "the registry does not say revoked"
# the broker: keeld's next connection is refused (the CRL was reloaded on SIGHUP)
restart_keeld $LINK $UPD
i=0
until [ "$(broker_count "certificate verify failed")" -gt 0 ]; do
    i=$((i + 1))
    [ $i -lt 150 ] || broker_die "the broker did not refuse the revoked device"
    sleep 0.1
done
[ "$(broker_connects "$DEV_ID")" = 0 ] || broker_die "the revoked device got an MQTT session"
# and that is the CRL's doing
cat "$T/f/device-ca/root.crt" "$T/f/device-ca/issuing.crt" >"$T/chain-all.pem"
openssl verify -crl_check -CRLfile "$BROKER_CRL" -CAfile "$T/chain-all.pem" "$T/sim/$SIMID.crt" 2>&1 |
    grep -q "certificate revoked" || fail "openssl does not find the device revoked by the CRL the broker reads"
note "revoked: the registry, the update server (handshake) and, after SIGHUP, the broker refuse it"

stop_keeld
fleet_stop op
note "fleet end to end: all checks passed"

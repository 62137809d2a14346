#!/bin/sh
# Personal data end to end (docs/privacy.md): a thermostat provisioned with
# examples/thermostat/product.json (bad product files refused first), keeld
# on loopback without a broker, the product app on its socket (keel app):
# the declaration and consent over the API, telemetry withheld until consent
# is given and again after it is withdrawn, the consent log, the Data Act
# export (every store, no password hash, an attachment), the link figures,
# and a factory reset that answers with its receipt, files a cloud erase
# request that outlives it, and leaves no planted value readable in the
# vault's files. Then tests/ui/privacy.mjs does the owner's side in Chromium
# (skipped only where chromium or node is missing).
. "$(dirname "$0")/keeld_lib.sh"
: "${KEEL_SOURCE_DIR:?KEEL_SOURCE_DIR must point to the source tree}"
PRODUCT=$KEEL_SOURCE_DIR/examples/thermostat/product.json
A=/api/v1
NEWPW="Correct-Horse-Battery-42"

note "a product file with a bad setting or declaration makes no device"
[ -d "$T/f" ] || expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
# bad_product PYTHON-EDIT MESSAGE-PART
bad_product() {
    python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); exec(sys.argv[2]); json.dump(d, open(sys.argv[3], "w"))' "$PRODUCT" "$1" "$T/p.json"
    rm -rf "$T/bad"
    expect_rc 2 "$KEEL" factory provision --dir "$T/f" --model thermo-1 --count 1 --out "$T/bad" $FAST_ARGON \
        --product "$T/p.json"
    grep -qF "$2" "$T/err" || fail "provision with a bad product: expected '$2' in: $(cat "$T/err")"
    [ -z "$(find "$T/bad" -name keeld.conf 2>/dev/null)" ] || fail "a device was made from a bad product file"
}
bad_product "d['settings']['link.keepalive'] = '1'" "link.keepalive must be a whole number"
bad_product "d['settings']['trust.service_root'] = 'x.pem'" "[trust] is written by the factory"
bad_product "d['declaration']['categories'][0]['retention'] = 3" "\$.declaration.categories[0].retention: unknown key"
bad_product "d['declaration']['telemetry'][0]['category'] = 'presence'" "undeclared category 'presence'"

note "the thermostat, provisioned with its product file"
provision thermo-1 $FAST_ARGON --product "$PRODUCT"
[ -f "$D/declaration.json" ] || fail "no declaration.json in the device directory"
grep -q '^declaration = declaration.json$' "$CONF" || fail "keeld.conf does not name the declaration"
grep -q '^keepalive = 60$' "$CONF" || fail "keeld.conf lacks the product's link.keepalive"
SOCK=$D/keeld.sock
start_keeld

TOK=
expect_error 401 unauthorized GET $A/privacy -
expect_error 401 unauthorized GET $A/privacy/export -
expect_error 401 unauthorized GET $A/link -
login_ok "$LABEL_PW"
change_password "$TOKEN" "$LABEL_PW" "$NEWPW"
login_ok "$NEWPW"
TOK=$TOKEN

note "GET /privacy: the declaration, readable, with the consent state"
expect_http 200 GET $A/privacy -
jtrue "d['declared'] and d['product'].startswith('Acme Thermo One')" "privacy: not the thermostat's declaration"
jtrue "[c['id'] for c in d['categories']] == ['climate', 'device-health']" "privacy: categories"
jtrue "d['categories'][0]['telemetry_fields'] == ['temperature', 'setpoint', 'heating']" "privacy: climate fields"
jtrue "d['categories'][0]['consent']['given'] is False and d['categories'][1]['consent'] is None" \
    "privacy: climate must wait for consent, device-health needs none"
jtrue "d['consent']['consent_version'] == '1'" "privacy: consent version"

note "telemetry is withheld without consent"
# Every field withheld: keeld queues nothing (how it answers the app is the
# ipc module's business; what matters here is that nothing is queued).
"$KEEL" app publish --socket "$SOCK" '{"temperature":23.456789,"setpoint":20,"heating":true}' >/dev/null 2>&1 || true
expect_rc 1 "$KEEL" app publish --socket "$SOCK" '{"humidity":40}'
expect_http 200 GET $A/link -
jtrue "d['configured'] is False and d['link'] is None and d['outbox']['pending'] == 0" \
    "link: a withheld message was queued, or the figures are wrong"

note "consent: strict input, the current version only, then given"
expect_error 400 bad_request PUT $A/privacy/consent '{"purpose":"climate","given":true}'
expect_error 400 bad_request PUT $A/privacy/consent '{"purpose":"climate","given":true,"version":"1","x":1}'
expect_error 404 not_found PUT $A/privacy/consent '{"purpose":"device-health","given":true,"version":"1"}'
expect_error 409 conflict PUT $A/privacy/consent '{"purpose":"climate","given":true,"version":"0"}'
expect_http 200 PUT $A/privacy/consent '{"purpose":"climate","given":true,"version":"1"}'
jtrue "d['purposes'][0]['given'] and d['purposes'][0]['current'] and d['purposes'][0]['time'] > 0" "consent not given"
# A cookie-borne request without the CSRF header is refused.
TOK= expect_error 403 csrf_failed PUT $A/privacy/consent '{"purpose":"climate","given":false,"version":"1"}' \
    -H "Cookie: keel_session=$TOKEN"

expect_rc 0 "$KEEL" app publish --socket "$SOCK" '{"temperature":23.456789,"setpoint":20.5,"heating":true}'
expect_rc 0 "$KEEL" app state --socket "$SOCK" --set '{"room":"MARKER-state-7d1e"}'
expect_http 200 PUT $A/settings '{"postpone_until":"2031-02-03"}'
expect_http 200 GET $A/link -
jtrue "d['outbox']['pending'] == 1" "link: the consented message is not queued"

note "withdrawn: withheld again; the log has both, newest first"
expect_http 200 PUT $A/privacy/consent '{"purpose":"climate","given":false,"version":"1"}'
"$KEEL" app publish --socket "$SOCK" '{"temperature":19.0}' >/dev/null 2>&1 || true
expect_http 200 GET $A/privacy/consent -
jtrue "[(e['given'], e['via']) for e in d['log']] == [(False, 'api'), (True, 'api')]" "consent log"
expect_http 200 GET $A/link -
jtrue "d['outbox']['pending'] == 1" "link: telemetry was queued after consent was withdrawn"

note "the export: every store, no hash, an attachment"
expect_http 200 GET $A/privacy/export -
header Content-Disposition | grep -q '^attachment; filename="keel-export-' ||
    fail "export: no attachment Content-Disposition: $(header Content-Disposition)"
jtrue "d['format'] == 'keel-export-1' and d['device']['id'] == '$DEV_ID'" "export: device"
jtrue "any(r['category'] == 'climate' and r['data'].get('temperature') == 23.456789 for r in d['privacy']['records'])" \
    "export: the kept climate record is missing"
jtrue "d['outbox']['pending'][0]['data']['temperature'] == 23.456789 and d['outbox']['figures']['pending'] == 1" \
    "export: the pending outbox message is missing"
jtrue "d['product_state']['room'] == 'MARKER-state-7d1e'" "export: the product state is missing"
jtrue "d['settings']['postpone_until'] == '2031-02-03'" "export: the settings are missing"
jtrue "len(d['privacy']['consent']['log']) == 2" "export: the consent log is missing"
jtrue "d['account']['user'] == 'admin' and d['account']['password_changed'] > 0" "export: the account"
jtrue "d['privacy']['declaration']['format'] == 'keel-declaration-1'" "export: the declaration"
if grep -qi 'argon2' "$T/out"; then fail "export: a password hash is in it"; fi
expect_error 405 method_not_allowed POST $A/privacy/export '{}'
expect_error 404 not_found GET $A/privacy/nothing -

note "factory reset: the receipt, the cloud erase request, nothing left to read"
expect_http 200 GET $A/privacy/erase -
jtrue "d['requests'] == []" "erase requests before any reset"
expect_http 202 POST $A/factory-reset "{\"password\": $(json_str "$NEWPW")}"
jtrue "d['state'] == 'reset' and isinstance(d['receipt'], dict)" "factory reset: no receipt"
REQ=$(jget "d['receipt']['cloud']['request']")
login_ok "$LABEL_PW"
change_password "$TOKEN" "$LABEL_PW" "$NEWPW"
login_ok "$NEWPW"
TOK=$TOKEN
expect_http 200 GET $A/privacy/erase -
jtrue "len(d['requests']) == 1 and d['requests'][0]['id'] == '$REQ' and d['requests'][0]['confirmed'] is None" \
    "the cloud erase request is not shown as pending after the reset"
expect_http 200 GET $A/privacy/export -
jtrue "d['privacy']['records'] == [] and d['privacy']['consent']['log'] == []" "export after reset: data left"
jtrue "not d['privacy']['consent']['purposes'][0]['given']" "export after reset: consent left"
jtrue "d['product_state'] in (None, {})" "export after reset: product state left"
# The whole state directory, not only the vault (a copy in a temp file, a
# log or a staging file would count too), and keeld's log.
left=$(grep -rl --binary-files=text 'MARKER-state-7d1e' "$D" "$KEELD_LOG" 2>/dev/null || true)
[ -z "$left" ] || fail "a planted value is readable after the reset in: $left"

if [ -n "${KEEL_CHROMIUM:-$(command -v chromium || true)}" ] && command -v node >/dev/null 2>&1; then
    ui_node_setup
    note "the owner's side in Chromium (tests/ui/privacy.mjs)"
    set +e
    KEEL_UI_URL=https://127.0.0.1:$PORT KEEL_UI_PASSWORD=$NEWPW KEEL_UI_NODE_DIR=$KEEL_BUILD_DIR/ui-node \
    KEEL_UI_ARTIFACTS=${KEEL_UI_ARTIFACTS:-$KEEL_BUILD_DIR/ui-artifacts} \
    KEEL_CHROMIUM=${KEEL_CHROMIUM:-$(command -v chromium)} \
        node "$KEEL_SOURCE_DIR/tests/ui/privacy.mjs"
    rc=$?
    set -e
    [ "$rc" -eq 0 ] || die_log "the browser privacy test failed (exit $rc)"
else
    note "no chromium or node here: the browser part is skipped (scripts/deps.sh installs both)"
fi

alive || die_log "keeld died"
stop_keeld
echo "keeld_privacy: 1 passed, 0 failed"

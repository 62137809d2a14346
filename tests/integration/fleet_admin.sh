#!/bin/sh
# The operator's side of keel-fleetd against the real service: `keel-fleetd
# token` (printed once, only hashes stored, 0600), `keel fleet` for every
# command (status, import, devices, device, campaign create/list/show/pause/
# resume with a good and a tampered bundle, alerts, export, erase, revoke),
# the read-only role, the exit codes, the CLI's trust (exactly the --ca root),
# and the API's strictness with curl: no or wrong token, the per-address
# limit on failed tokens, unknown query parameters and fields, content types,
# the import cap, and a removed token.
. "$(dirname "$0")/fleet_admin_lib.sh"

note "tokens: printed once, only their SHA-256 in the tokens file (0600)"
fleet_admin_setup
echo "$ADMIN_TOKEN" | grep -Eq '^kft_[A-Za-z0-9_-]{43}$' || fail "a token is not kft_ + 43 base64url: $ADMIN_TOKEN"
[ "$(wc -l <"$T/admin.token")" -eq 1 ] || fail "token add printed more than the token on stdout"
[ "$(stat -c %a "$T/tokens")" = 600 ] || fail "the tokens file is mode $(stat -c %a "$T/tokens"), not 600"
grep -q "${ADMIN_TOKEN#kft_}" "$T/tokens" && fail "the tokens file holds a token"
sha=$(printf '%s' "$ADMIN_TOKEN" | sha256sum | cut -d' ' -f1)
grep -q "^ops admin $sha\$" "$T/tokens" || fail "the tokens file has no 'ops admin <sha256>' line: $(cat "$T/tokens")"
grep -q "^dash read " "$T/tokens" || fail "the read-only token is not role read"
expect_rc 1 "$FLEETD" token add ops --config "$CONF"
expect_rc 2 "$FLEETD" token add 'bad name' --config "$CONF"
expect_rc 0 "$FLEETD" token list --config "$CONF"
[ "$(cat "$T/out")" = "$(printf 'ops admin\ndash read')" ] || fail "token list: $(cat "$T/out")"

fleet_start admin
DEV1=$(sed -n 2p "$T/b/labels.csv" | cut -d, -f1)
DEV2=$(sed -n 3p "$T/b/labels.csv" | cut -d, -f1)

note "keel fleet status / import / devices / device"
expect_rc 0 "$KEEL" fleet status
grep -q 'database *sqlite' "$T/out" || fail "status without the database: $(cat "$T/out")"
expect_rc 0 "$KEEL" fleet import "$T/b/manifest.json"
grep -q '3 device(s) added, 0 unchanged' "$T/out" || fail "import: $(cat "$T/out")"
expect_rc 0 "$KEEL" fleet import "$T/b/manifest.json"
grep -q '0 device(s) added, 3 unchanged' "$T/out" || fail "a second import: $(cat "$T/out")"
expect_rc 0 "$KEEL" fleet devices
grep -q "^$DEV1 *plug-1 *registered" "$T/out" || fail "devices does not list $DEV1: $(cat "$T/out")"
grep -q '^3 device(s)$' "$T/out" || fail "devices: $(cat "$T/out")"
expect_rc 0 "$KEEL" fleet devices --model plug-1 --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if len(d["devices"]) == 3 else 1)' "$T/out" ||
    fail "devices --json: $(head -c 300 "$T/out")"
expect_rc 0 "$KEEL" fleet devices --model hub-9
grep -q '^0 device(s)$' "$T/out" || fail "devices --model hub-9: $(cat "$T/out")"
expect_rc 0 "$KEEL" fleet device "$DEV1"
grep -q 'state *registered' "$T/out" || fail "device: $(cat "$T/out")"
expect_rc 1 "$KEEL" fleet device nosuchdevice
grep -q 'HTTP 404' "$T/err" || fail "an unknown device: $(cat "$T/err")"

note "campaigns: create from a signed bundle, list, show, pause, resume; a tampered bundle is 422"
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"
head -c 100000 /dev/urandom >"$T/payload"
expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version 1.1.0 --security-version 2 \
    --support-until 2030-12-31 --payload "$T/payload" --out "$T/v11.kb" --chunk-size 65536
expect_rc 0 "$KEEL" fleet --json campaign create --bundle "$T/v11.kb" --model plug-1 --percent 50
CID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/out")
jtrue 'd["state"] == "running" and d["version"] == "1.1.0" and d["percent"] == 50 and "bundle_path" not in d' \
    "the new campaign"
jtrue 'd["counts"]["selected"] >= 1 and "time_to" in d' "the new campaign's counts"
sha=$(sha256sum "$T/v11.kb" | cut -d' ' -f1)
[ "$(stat -c %a "$T/bundles/$sha.bundle")" = 600 ] || fail "the bundle is not stored as bundles/<sha256>.bundle 0600"
expect_rc 0 "$KEEL" fleet campaign list
grep -q "^$CID *plug-1 *1.1.0 *running" "$T/out" || fail "campaign list: $(cat "$T/out")"
expect_rc 0 "$KEEL" fleet campaign pause "$CID"
grep -q 'state *paused' "$T/out" || fail "pause: $(cat "$T/out")"
expect_rc 0 "$KEEL" fleet campaign show "$CID"
grep -q 'state *paused' "$T/out" || fail "show after pause: $(cat "$T/out")"
expect_rc 0 "$KEEL" fleet campaign resume "$CID"
grep -q 'state *running' "$T/out" || fail "resume: $(cat "$T/out")"
expect_rc 1 "$KEEL" fleet campaign show 0123456789abcdef0123456789abcdef
cp "$T/v11.kb" "$T/bad.kb"
flip_byte "$T/bad.kb" 5000
badsha=$(sha256sum "$T/bad.kb" | cut -d' ' -f1)
expect_rc 1 "$KEEL" fleet campaign create --bundle "$T/bad.kb" --model plug-1
grep -q 'HTTP 422 bundle_rejected' "$T/err" || fail "a tampered bundle: $(cat "$T/err")"
[ ! -e "$T/bundles/$badsha.bundle" ] || fail "a refused bundle stays in the bundle directory"
expect_rc 2 "$KEEL" fleet campaign create --bundle "$T/v11.kb"
expect_rc 2 "$KEEL" fleet campaign create --bundle "$T/v11.kb" --model plug-1 --percent 0

note "alerts, export, erase, revoke"
expect_rc 0 "$KEEL" fleet alerts --since 1h --kind tamper
grep -q '^0 alert(s)$' "$T/out" || fail "alerts: $(cat "$T/out")"
expect_rc 2 "$KEEL" fleet alerts --since yesterday
expect_rc 0 "$KEEL" fleet export "$DEV1"
jtrue 'd["format"] == "keel-fleet-export-1" and d["device"]["id"] == "'"$DEV1"'"' "the export"
expect_rc 0 "$KEEL" fleet --json erase "$DEV1"
jtrue 'd["erased"] is True and d["device"] == "'"$DEV1"'" and len(d["id"]) == 32 and d["source"] == "operator"' \
    "the erase receipt"
expect_rc 0 "$KEEL" fleet export "$DEV1"
jtrue 'len(d["erasures"]) == 1' "the export after the erasure"
expect_rc 0 "$KEEL" fleet revoke "$DEV1"
grep -q "device $DEV1 revoked" "$T/out" || fail "revoke: $(cat "$T/out")"
expect_rc 0 "$KEEL" fleet device "$DEV1"
grep -q 'state *revoked' "$T/out" || fail "the revoked device: $(cat "$T/out")"
expect_rc 1 "$KEEL" fleet revoke nosuchdevice

note "the read-only token reads, and may not write"
expect_rc 0 env KEEL_FLEET_TOKEN_FILE="$T/read.token" "$KEEL" fleet devices
expect_rc 1 env KEEL_FLEET_TOKEN_FILE="$T/read.token" "$KEEL" fleet revoke "$DEV2"
grep -q 'HTTP 403 forbidden' "$T/err" || fail "a read token revoking: $(cat "$T/err")"
expect_rc 1 env KEEL_FLEET_TOKEN_FILE="$T/read.token" "$KEEL" fleet export "$DEV2"
grep -q 'HTTP 403 forbidden' "$T/err" || fail "a read token exported a device's data: $(cat "$T/err")"
expect_rc 1 env KEEL_FLEET_TOKEN_FILE="$T/read.token" "$KEEL" fleet campaign pause "$CID"
expect_rc 0 "$KEEL" fleet device "$DEV2"
grep -q 'state *registered' "$T/out" || fail "a read token changed $DEV2"

note "the CLI's usage, token file and trust"
expect_rc 2 "$KEEL" fleet
expect_rc 0 "$KEEL" fleet --help
expect_rc 0 "$KEEL" fleet campaign --help
expect_rc 0 "$KEEL" fleet campaign create --help
expect_rc 2 "$KEEL" fleet nosuchcommand
expect_rc 2 "$KEEL" fleet --server "http://127.0.0.1:$PORT" status
chmod 644 "$T/admin.token"
expect_rc 2 "$KEEL" fleet status
chmod 600 "$T/admin.token"
# another factory's service root: the server's certificate does not chain to it
expect_rc 0 "$KEEL" factory init --dir "$T/f2" --org Mallory
expect_rc 1 "$KEEL" fleet --ca "$T/f2/service-ca/root.crt" status
# a bundle of roots (here: two) is refused before any connection
cat "$T/svc/ca.pem" "$T/f2/service-ca/root.crt" >"$T/two.pem"
expect_rc 2 "$KEEL" fleet --ca "$T/two.pem" status
grep -q 'exactly one CA certificate' "$T/err" || fail "a CA bundle: $(cat "$T/err")"

note "the API: tokens, headers, strict input"
TOK= api 401 GET /api/v1/status
[ "$(header WWW-Authenticate)" = 'Bearer realm="keel-fleetd"' ] || fail "401 without WWW-Authenticate"
TOK=kft_wrong api 401 GET /api/v1/status
TOK=$ADMIN_TOKEN api 200 GET /api/v1/status
jtrue '"uptime" in d and d["database"]["driver"] == "sqlite" and d["devices"]["devices"] == 3' "status body"
[ "$(header Cache-Control)" = no-store ] || fail "status without Cache-Control: no-store"
TOK=$ADMIN_TOKEN api 400 GET '/api/v1/devices?colour=red'
TOK=$ADMIN_TOKEN api 400 GET '/api/v1/alerts?limit=0'
TOK=$ADMIN_TOKEN api 400 GET '/api/v1/status?x=1'
TOK=$ADMIN_TOKEN api 404 GET /api/v1/nothing
TOK=$ADMIN_TOKEN api 404 GET /api/v2/status
TOK=$ADMIN_TOKEN api 405 DELETE "/api/v1/devices/$DEV2"
TOK=$ADMIN_TOKEN api 400 POST "/api/v1/devices/$DEV2/erase" -H 'Content-Type: application/json' --data '{"force":true}'
TOK=$ADMIN_TOKEN api 415 POST /api/v1/devices/import -H 'Content-Type: text/plain' --data-binary "@$T/b/manifest.json"
TOK=$ADMIN_TOKEN api 400 POST /api/v1/devices/import -H 'Content-Type: application/json' --data '{"a":1,"a":2}'
TOK=$ADMIN_TOKEN api 415 POST '/api/v1/campaigns?model=plug-1' -H 'Content-Type: application/json' \
    --data-binary "@$T/v11.kb"
head -c $((64 * 1024 * 1024 + 1)) /dev/zero >"$T/huge.json"
TOK=$ADMIN_TOKEN api 413 POST /api/v1/devices/import -H 'Content-Type: application/json' --data-binary "@$T/huge.json"
rm -f "$T/huge.json"
grep -q "$ADMIN_TOKEN" "$FLEETD_LOG" && die_log "the log holds a token"
grep -q kft_wrong "$FLEETD_LOG" && die_log "the log holds a refused token"
grep -q 'refused a token from 127.0.0.1' "$FLEETD_LOG" || die_log "a refused token is not logged"

note "failed tokens from one address: 429 for the rest of the minute, others unaffected"
i=0
while [ $i -lt 9 ]; do
    TOK=kft_guess$i api 401 GET /api/v1/status --interface 127.0.0.2
    i=$((i + 1))
done
TOK=kft_guess9 api 429 GET /api/v1/status --interface 127.0.0.2
TOK=$ADMIN_TOKEN api 429 GET /api/v1/status --interface 127.0.0.2
ra=$(header Retry-After)
[ -n "$ra" ] && [ "$ra" -ge 1 ] && [ "$ra" -le 60 ] || fail "429 with Retry-After '$ra'"
TOK=$ADMIN_TOKEN api 200 GET /api/v1/status

note "a removed token stops working without a restart"
TOK=$READ_TOKEN api 200 GET /api/v1/devices
expect_rc 0 "$FLEETD" token remove dash --config "$CONF"
TOK=$READ_TOKEN api 401 GET /api/v1/devices
TOK=$ADMIN_TOKEN api 200 GET /api/v1/devices
chmod 644 "$T/tokens"
TOK=$ADMIN_TOKEN api 401 GET /api/v1/devices
chmod 600 "$T/tokens"
TOK=$ADMIN_TOKEN api 200 GET /api/v1/devices

fleet_stop admin
echo "fleet_admin: passed"

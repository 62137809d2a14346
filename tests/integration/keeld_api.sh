#!/bin/sh
# keeld's HTTPS JSON API (docs/api.md), black box, over curl on loopback:
# what answers without a session, the label-password login and the forced
# password change (with its policy), sessions, bearer and cookie+CSRF auth,
# strict request parsing, security headers, settings that survive a restart,
# signed updates uploaded and applied, factory reset, logout, the brute-force
# throttle (per source, survives a restart, never locks the owner out from
# another address), SIGHUP with a broken configuration and a bad
# configuration at start.
. "$(dirname "$0")/keeld_lib.sh"

provision thermo-1
NEWPW="Correct-Horse-Battery-42"
A=/api/v1

# In the functional part the throttle must not get in the way (it has its own
# section at the end, with the defaults).
FUNC="-o auth.free_failures=20 -o auth.global_per_minute=600"
# shellcheck disable=SC2086
start_keeld $FUNC

# The headers every response carries (docs/api.md, Responses), in $T/hdr.
check_headers() { # WHAT
    tr -d '\r' <"$T/hdr" >"$T/hdr.txt"
    grep -qix 'Strict-Transport-Security: max-age=31536000' "$T/hdr.txt" || fail "$1: no HSTS header"
    grep -qix 'X-Content-Type-Options: nosniff' "$T/hdr.txt" || fail "$1: no X-Content-Type-Options: nosniff"
    grep -qi "^Content-Security-Policy: .*frame-ancestors 'none'" "$T/hdr.txt" ||
        fail "$1: no Content-Security-Policy with frame-ancestors 'none'"
    grep -qi "^Content-Security-Policy: default-src 'none'" "$T/hdr.txt" || fail "$1: CSP does not start with default-src 'none'"
    grep -qix 'Referrer-Policy: no-referrer' "$T/hdr.txt" || fail "$1: no Referrer-Policy: no-referrer"
    grep -qix 'Cache-Control: no-store' "$T/hdr.txt" || fail "$1: no Cache-Control: no-store"
    if grep -qi '^Server:' "$T/hdr.txt"; then fail "$1: a Server header: $(grep -i '^Server:' "$T/hdr.txt")"; fi
    if grep -qi '^X-Powered-By:' "$T/hdr.txt"; then fail "$1: an X-Powered-By header"; fi
    if grep -qiE 'libevent|openssl/|keeld/[0-9]' "$T/hdr.txt"; then fail "$1: a version in the headers"; fi
}

note "status without a session: exactly the model and setup_required"
TOK=
expect_http 200 GET $A/status -
jtrue "sorted(d) == ['model', 'setup_required']" "status discloses more than model and setup_required"
jtrue "d['model'] == 'thermo-1' and d['setup_required'] is True" "status: wrong model or setup_required"
check_headers "GET status"
[ "$(header Content-Type | cut -d';' -f1)" = application/json ] || fail "status is not application/json"

note "every other route without a session: 401 unauthorized"
# METHOD PATH BODY, one per line.
routes() {
    cat <<EOF
DELETE $A/session -
POST $A/password {"current":"$LABEL_PW","new":"$NEWPW"}
GET $A/device -
GET $A/settings -
PUT $A/settings {"notifications":false}
GET $A/update -
POST $A/update/stage {}
POST $A/update/apply {}
POST $A/factory-reset {"password":"$LABEL_PW"}
EOF
}
no_session() { # extra curl options
    routes >"$T/routes"
    while read -r m p b; do
        expect_error 401 unauthorized "$m" "$p" "$b" "$@"
        check_headers "$m $p (401)"
    done <"$T/routes"
    # the upload route, with bundle-like bytes
    head -c 1000 /dev/urandom >"$T/junk.kb"
    CT=application/octet-stream expect_error 401 unauthorized PUT "$A/update/bundle?offset=0" "@$T/junk.kb" "$@"
}
no_session
note "... nor with an unknown bearer token or cookie"
TOK=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
no_session
TOK=
no_session -H "Cookie: keel_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" -H "X-CSRF-Token: x"

note "login: wrong password and wrong user get the same 401"
login "not-the-password-at-all"
[ "$CODE" = 401 ] || fail "login with a wrong password: HTTP $CODE"
cp "$T/out" "$T/wrong-pw.json"
jtrue "d.get('error') == 'unauthorized'" "wrong password: error is not unauthorized"
if grep -qi '^Set-Cookie:' "$T/hdr"; then fail "a failed login sets a cookie"; fi
login "$LABEL_PW" root
[ "$CODE" = 401 ] || fail "login as an unknown user: HTTP $CODE"
cmp -s "$T/out" "$T/wrong-pw.json" || fail "wrong user and wrong password answer differently: $(cat "$T/wrong-pw.json") vs $(cat "$T/out")"
TOK=
expect_error 400 bad_request POST $A/session '{"username":"admin"}'
expect_error 400 bad_request POST $A/session '{"username":"admin","password":"x","extra":1}'

note "login with the label password, typed upper-case with dashes, and without dashes"
UPPER=$(echo "$LABEL_PW" | tr a-z A-Z)
login_ok "$UPPER"
jtrue "d['must_change_password'] is True" "label password login without must_change_password"
jtrue "len(d['token']) == 43 and len(d['csrf']) == 43 and d['token'] != d['csrf']" "token/csrf are not 43-char values"
jtrue "isinstance(d['expires'], int) and d['expires'] > $(date +%s)" "expires is not a future time"
T1=$TOKEN
login_ok "$(echo "$LABEL_PW" | tr -d -)"
T2=$TOKEN
[ "$T1" != "$T2" ] || fail "two logins got the same token"

note "until the password is changed, only password, session and status answer"
TOK=$T1
for r in "GET $A/device" "GET $A/settings" "GET $A/update"; do
    # shellcheck disable=SC2086
    expect_error 403 password_change_required $r -
done
expect_error 403 password_change_required PUT $A/settings '{"notifications":false}'
expect_error 403 password_change_required POST $A/update/apply '{}'
expect_http 200 GET $A/status -

note "password policy: too short, common, containing the serial / id / model: 422 with the reason"
policy() { # REASON NEWPASSWORD
    TOK=$T1 expect_error 422 password_policy POST $A/password "{\"current\": $(json_str "$LABEL_PW"), \"new\": $(json_str "$2")}"
    jtrue "d.get('reason') == '$1'" "policy refusal reason is not $1"
    jtrue "isinstance(d.get('message'), str) and len(d['message']) > 10" "policy refusal without a message"
}
policy too_short "Ab3-xyz"
policy common password1234
policy contains_serial "my-$SERIAL-home!"
policy contains_serial "my-$(echo "$SERIAL" | tr A-Z a-z)-home!"
policy contains_id "x-$DEV_ID-y"
policy contains_model "Thermo-1-at-home!"
policy too_long "$(head -c 200 /dev/zero | tr '\0' k)-X9"
TOK=$T1
expect_error 400 bad_request POST $A/password "{\"current\": $(json_str "$LABEL_PW")}"
expect_error 401 unauthorized POST $A/password "{\"current\": \"wrong-label-pw\", \"new\": $(json_str "$NEWPW")}"
TOK=$T1
expect_http 200 GET $A/status -
jtrue "d['setup_required'] is True" "setup_required false before the change"

note "a good change: 204, every session ended, the label password refused"
change_password "$T1" "$LABEL_PW" "$NEWPW"
TOK=$T1
expect_error 401 unauthorized GET $A/settings -
TOK=$T2
expect_error 401 unauthorized GET $A/settings -
TOK=
login "$LABEL_PW"
[ "$CODE" = 401 ] || fail "the label password still logs in after the change: HTTP $CODE"
login "$UPPER"
[ "$CODE" = 401 ] || fail "the label password (upper case) still logs in after the change: HTTP $CODE"
login "$(echo "$NEWPW" | tr a-z A-Z)"
[ "$CODE" = 401 ] || fail "a set password is compared case-insensitively"
login_ok "$NEWPW"
jtrue "d['must_change_password'] is False" "must_change_password after the change"
TOK=
expect_http 200 GET $A/status -
jtrue "d['setup_required'] is False" "setup_required still true after the change"

TOK=$TOKEN
note "unknown routes 404, wrong methods 405"
expect_error 404 not_found GET $A/no-such-thing -
check_headers "404"
expect_error 405 method_not_allowed DELETE $A/device -
expect_error 405 method_not_allowed GET $A/update/apply -

note "device: id, serial, model, support fields, certificate fingerprint"
expect_http 200 GET $A/device -
check_headers "GET device"
jtrue "d['id'] == '$DEV_ID' and d['serial'] == '$SERIAL' and d['model'] == 'thermo-1'" "device identity fields"
jtrue "d['certificate_sha256'].upper() == '$CERT_SHA'.upper()" "device certificate_sha256 is not the label's"
for k in firmware_version security_version support_until support_expired tamper_alert; do
    jtrue "'$k' in d" "device has no $k"
done
jtrue "d['tamper_alert'] is None" "tamper alert on a fresh device"
jtrue "d['support_expired'] in (False, None)" "support_expired on a fresh device"

note "settings: defaults, PUT round trip"
expect_http 200 GET $A/settings -
jtrue "d == {'automatic_updates': True, 'notifications': True, 'postpone_until': None}" "default settings"
expect_http 200 PUT $A/settings '{"automatic_updates": false, "postpone_until": "2031-01-15"}'
jtrue "d == {'automatic_updates': False, 'notifications': True, 'postpone_until': '2031-01-15'}" "PUT settings answer"
expect_http 200 GET $A/settings -
jtrue "d == {'automatic_updates': False, 'notifications': True, 'postpone_until': '2031-01-15'}" "settings after PUT"

note "strict requests: unknown field, duplicate key, wrong type, range, malformed: 400; size 413; type 415"
expect_error 400 bad_request PUT $A/settings '{"automatic_updates": true, "colour": "red"}'
expect_error 400 bad_request PUT $A/settings '{"notifications": true, "notifications": false}'
expect_error 400 bad_request PUT $A/settings '{"automatic_updates": "yes"}'
expect_error 400 bad_request PUT $A/settings '{"automatic_updates": 1}'
expect_error 400 bad_request PUT $A/settings '{"postpone_until": "2031-13-45"}'
expect_error 400 bad_request PUT $A/settings '{"postpone_until": "tomorrow"}'
expect_error 400 bad_request PUT $A/settings '{"automatic_updates": tru'
expect_error 400 bad_request PUT $A/settings '[]'
expect_error 400 bad_request PUT $A/settings '{"automatic_updates": true} {}'
expect_error 400 bad_request PUT $A/settings ''
python3 -c 'import sys; sys.stdout.write("{\"postpone_until\": \"" + "x" * 70000 + "\"}")' >"$T/big.json"
# over 64 KiB: 413, evhttp's own page (docs/api.md), refused before the excess is read
expect_http 413 PUT $A/settings "@$T/big.json"
CT=text/plain expect_error 415 unsupported_media_type PUT $A/settings '{"notifications": false}'
CT= expect_error 415 unsupported_media_type PUT $A/settings '{"notifications": false}'
expect_http 200 GET $A/settings -
jtrue "d == {'automatic_updates': False, 'notifications': True, 'postpone_until': '2031-01-15'}" \
    "a refused PUT changed the settings"

note "cookie auth: flags; GET without CSRF token ok; POST/PUT/DELETE need X-CSRF-Token"
login_ok "$NEWPW"
tr -d '\r' <"$T/hdr" | grep -i '^Set-Cookie: *keel_session=' >"$T/cookie" || fail "login sets no keel_session cookie"
ck=$(sed -n 's/^[^=]*keel_session=\([^;]*\).*/\1/p' "$T/cookie")
[ "$ck" = "$TOKEN" ] || fail "the cookie does not carry the token"
for flag in HttpOnly Secure SameSite=Strict Path=/ Max-Age=; do
    grep -qi "; *$flag" "$T/cookie" || fail "cookie lacks $flag: $(cat "$T/cookie")"
done
TOK=
C="Cookie: keel_session=$TOKEN"
expect_http 200 GET $A/device - -H "$C"
expect_error 403 csrf_failed POST $A/update/apply '{}' -H "$C"
expect_error 403 csrf_failed POST $A/update/apply '{}' -H "$C" -H "X-CSRF-Token: $TOKEN"
expect_error 403 csrf_failed PUT $A/settings '{"notifications": false}' -H "$C"
expect_error 409 conflict POST $A/update/apply '{}' -H "$C" -H "X-CSRF-Token: $CSRF"
expect_http 200 PUT $A/settings '{"notifications": false}' -H "$C" -H "X-CSRF-Token: $CSRF"
jtrue "d['notifications'] is False" "cookie PUT did not apply"
expect_error 403 csrf_failed DELETE $A/session - -H "$C"
expect_http 204 DELETE $A/session - -H "$C" -H "X-CSRF-Token: $CSRF"
tr -d '\r' <"$T/hdr" | grep -i '^Set-Cookie: *keel_session=' >"$T/cookie" || fail "cookie logout does not clear the cookie"
grep -qiE 'Max-Age=0|expires=[^;]*1970' "$T/cookie" || fail "cookie logout does not expire the cookie: $(cat "$T/cookie")"
expect_error 401 unauthorized GET $A/device - -H "$C"

note "settings and the password survive a restart (SIGTERM, start again)"
# shellcheck disable=SC2086
restart_keeld $FUNC
login_ok "$NEWPW"
TOK=$TOKEN
expect_http 200 GET $A/settings -
jtrue "d == {'automatic_updates': False, 'notifications': False, 'postpone_until': '2031-01-15'}" \
    "settings lost across a restart"
TOK=
expect_http 200 GET $A/status -
jtrue "d['setup_required'] is False" "setup_required true again after a restart"

note "updates: uploaded in pieces; foreign and bad-signature bundles refused at stage"
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"
CHUNK=65536
head -c $((2 * CHUNK + 4321)) /dev/urandom >"$T/payload"
echo "Fixes the pairing timeout." >"$T/notes.txt"
expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model thermo-1 --version 1.1.0 --security-version 2 \
    --support-until 2031-12-31 --payload "$T/payload" --out "$T/v1.1.kb" --chunk-size $CHUNK \
    --notes "$T/notes.txt" --security-fixes CVE-2026-0001 --disruptive --downtime 30
# one payload byte flipped in the middle chunk
cp "$T/v1.1.kb" "$T/tampered.kb"
off=$(($(wc -c <"$T/v1.1.kb") - CHUNK - 1000))
printf '\377' | dd of="$T/tampered.kb" bs=1 seek=$off conv=notrunc 2>/dev/null
cmp -s "$T/v1.1.kb" "$T/tampered.kb" && printf '\000' | dd of="$T/tampered.kb" bs=1 seek=$off conv=notrunc 2>/dev/null
# signed by another factory's release CA
expect_rc 0 "$KEEL" factory init --dir "$T/f2" --org Mallory
expect_rc 0 "$KEEL" bundle signer --dir "$T/f2" --name evil --out "$T/signer2"
expect_rc 0 "$KEEL" bundle create --signer "$T/signer2" --model thermo-1 --version 9.0.0 --security-version 9 \
    --support-until 2031-12-31 --payload "$T/payload" --out "$T/foreign.kb" --chunk-size $CHUNK
TOK=$TOKEN
# upload FILE: PUT /update/bundle?offset=N in 64 KiB pieces (docs/api.md), each 200 {"received": N}.
upload() {
    rm -rf "$T/pieces"
    mkdir "$T/pieces"
    split -b 65536 -d -a 4 "$1" "$T/pieces/p"
    o=0
    for piece in "$T/pieces"/p*; do
        CT=application/octet-stream expect_http 200 PUT "$A/update/bundle?offset=$o" "@$piece"
        o=$((o + $(wc -c <"$piece")))
        jtrue "d == {'received': $o}" "upload piece: received is not $o"
    done
}
# the upload protocol itself
head -c 1000 "$T/v1.1.kb" >"$T/head.kb"
CT=application/octet-stream expect_error 409 conflict PUT "$A/update/bundle?offset=1000" "@$T/head.kb"
CT=application/octet-stream expect_http 200 PUT "$A/update/bundle?offset=0" "@$T/head.kb"
expect_http 200 GET $A/update -
jtrue "d['state'] == 'uploading'" "state is not uploading during an upload"
CT=application/octet-stream expect_error 409 conflict PUT "$A/update/bundle?offset=999" "@$T/head.kb"
jtrue "d.get('received') == 1000" "409 on a wrong offset does not say what was received"
CT=application/octet-stream expect_error 400 bad_request PUT "$A/update/bundle" "@$T/head.kb"
CT=application/octet-stream expect_error 400 bad_request PUT "$A/update/bundle?offset=-1" "@$T/head.kb"
expect_error 415 unsupported_media_type PUT "$A/update/bundle?offset=0" "@$T/head.kb"
head -c 70000 /dev/urandom >"$T/big.piece"
CT=application/octet-stream expect_http 413 PUT "$A/update/bundle?offset=1000" "@$T/big.piece"
CT=application/octet-stream expect_error 405 method_not_allowed POST "$A/update/bundle?offset=0" "@$T/head.kb"
# start again: the 413 may have ended the upload
CT=application/octet-stream expect_http 200 PUT "$A/update/bundle?offset=0" "@$T/head.kb"
note "a truncated bundle is refused at stage; stage again without an upload: 409"
expect_error 422 bundle_rejected POST $A/update/stage '{}'
expect_error 409 conflict POST $A/update/stage '{}'
note "signed by another factory: refused at stage, with a message"
upload "$T/foreign.kb"
expect_error 422 bundle_rejected POST $A/update/stage '{}'
jtrue "isinstance(d.get('message'), str) and len(d['message']) > 0" "bundle_rejected without a message"
note "a byte of the signed header changed: refused at stage"
cp "$T/v1.1.kb" "$T/badsig.kb"
printf 'Z' | dd of="$T/badsig.kb" bs=1 seek=200 conv=notrunc 2>/dev/null
cmp -s "$T/v1.1.kb" "$T/badsig.kb" && printf 'Y' | dd of="$T/badsig.kb" bs=1 seek=200 conv=notrunc 2>/dev/null
upload "$T/badsig.kb"
expect_error 422 bundle_rejected POST $A/update/stage '{}'
expect_http 200 GET $A/update -
jtrue "d['state'] == 'idle' and d['staged'] is None" "a refused bundle left something staged"
expect_error 409 conflict POST $A/update/apply '{}'

# poll_update installed|failed: GET /update until the install ends, at most
# 30 s. failed: state back to staged (docs/api.md) or idle (the refused
# bundle dropped, as keeld does), with a last_error.
poll_update() {
    i=0
    while :; do
        expect_http 200 GET $A/update -
        st=$(jget "d['state']")
        le=$(jget "d['last_error'] is not None")
        case $1/$st/$le in
        installed/installed/*) break ;;
        failed/staged/True | failed/idle/True) break ;;
        */installing/*) ;;
        installed/*/True) fail "install failed: $(jget "d['last_error']")" ;;
        *) fail "update state $st (last_error $le) while installing" ;;
        esac
        i=$((i + 1))
        [ $i -lt 150 ] || fail "install not over after 30 s (state $st)"
        sleep 0.2
    done
}
note "a payload byte flipped: staged (the payload is not read at stage), refused by the installer"
upload "$T/tampered.kb"
expect_http 201 POST $A/update/stage '{}'
expect_http 202 POST $A/update/apply '{}'
poll_update failed
jtrue "any(w in d['last_error'].lower() for w in ('chunk', 'digest', 'hash'))" "last_error does not say a chunk was bad"
jtrue "d['pending'] is None" "a refused install left a pending slot"

note "the signed bundle: uploaded, staged with its notes and security fields, applied, installed"
upload "$T/v1.1.kb"
expect_http 201 POST $A/update/stage '{}'
S="d['staged']"
jtrue "$S['version'] == '1.1.0' and $S['security_version'] == 2 and $S['support_until'] == '2031-12-31'" "staged version fields"
jtrue "'CVE-2026-0001' in str($S['security_fixes'])" "staged security_fixes"
jtrue "'pairing timeout' in $S['notes']" "staged notes"
jtrue "$S['disruptive'] is True and $S['downtime_seconds'] == 30" "staged disruptive/downtime"
jtrue "$S['security_update_required'] is True" "security_update_required is not true for a higher security version"
jtrue "isinstance($S['size'], int) and $S['size'] > 0" "staged size"
expect_http 200 GET $A/update -
jtrue "d['state'] == 'staged' and d['staged']['version'] == '1.1.0'" "GET update does not show the staged bundle"
jtrue "d['last_error'] is None" "last_error set after a good upload"
expect_http 202 POST $A/update/apply '{}'
poll_update installed
jtrue "d['pending'] is not None" "installed without a pending slot"
jtrue "d['last_error'] is None" "last_error after a good install"
expect_error 409 conflict POST $A/update/apply '{}'

note "factory reset: wrong password 401; right one 202, sessions end, the label password is back"
expect_error 401 unauthorized POST $A/factory-reset "{\"password\": \"not-$NEWPW\"}"
expect_http 200 GET $A/device -
expect_http 202 POST $A/factory-reset "{\"password\": $(json_str "$NEWPW")}"
expect_error 401 unauthorized GET $A/device -
TOK=
expect_http 200 GET $A/status -
jtrue "d['setup_required'] is True" "setup_required false after a factory reset"
login "$NEWPW"
[ "$CODE" = 401 ] || fail "the erased password still logs in: HTTP $CODE"
login_ok "$LABEL_PW"
jtrue "d['must_change_password'] is True" "label password after reset without must_change_password"
NEWPW2="Another-Long-Secret-77"
change_password "$TOKEN" "$LABEL_PW" "$NEWPW2"
login_ok "$NEWPW2"
TOK=$TOKEN
expect_http 200 GET $A/settings -
jtrue "d == {'automatic_updates': True, 'notifications': True, 'postpone_until': None}" "settings survive a factory reset"

note "logout: 204, the token is dead, the other session lives"
login_ok "$NEWPW2"
OTHER=$TOKEN
login_ok "$NEWPW2"
TOK=$TOKEN
expect_http 204 DELETE $A/session -
expect_error 401 unauthorized GET $A/device -
TOK=$OTHER
expect_http 200 GET $A/device -

note "SIGHUP with a broken configuration file: keeps running on the old one, logs an error"
cp "$CONF" "$T/conf.orig"
printf '\n[auth]\nno_such_key = 1\n' >>"$CONF"
badline=$(wc -l <"$CONF")
kill -HUP "$KEELD_PID"
sleep 1
alive || die_log "keeld died on SIGHUP with a broken configuration"
TOK=$OTHER
expect_http 200 GET $A/device -
grep -q "keeld.conf:$badline" "$KEELD_LOG" || die_log "no error naming keeld.conf:$badline in the log after SIGHUP"
cp "$T/conf.orig" "$CONF"
kill -HUP "$KEELD_PID"
sleep 1
alive || die_log "keeld died on SIGHUP with a good configuration"
expect_http 200 GET $A/device -

note "bad configuration at start: exit 2 with file:line, no listener"
# (with the device's keeld stopped: a second keeld on the same device stops at
# the device's update lock, exit 1, before it looks at api.listen)
stop_keeld
P2=$(free_port)
bad_start() { # WHAT  (config in $D/bad.conf, extra -o options in "$@" after WHAT)
    what=$1
    shift
    set +e
    timeout 10 "$KEELD" --config "$D/bad.conf" -o "api.listen=127.0.0.1:$P2" $KEELD_FAST "$@" >"$T/bad.out" 2>"$T/bad.err"
    rc=$?
    set -e
    [ $rc -eq 2 ] || { cat "$T/bad.err" >&2; fail "$what: keeld exited $rc, expected 2"; }
    c=$(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$P2/api/v1/status" 2>/dev/null) || true
    [ "$c" = 000 ] || fail "$what: something answers on port $P2 ($c)"
}
{ cat "$CONF"; printf '\n[api]\nno_such_key = 1\n'; } >"$D/bad.conf"
bad_start "unknown key"
grep -q "bad.conf:$(wc -l <"$D/bad.conf")" "$T/bad.err" || fail "unknown key: no bad.conf:LINE on stderr: $(cat "$T/bad.err")"
{ cat "$CONF"; printf '\n[api]\nmax_connections = lots\n'; } >"$D/bad.conf"
bad_start "bad value"
grep -q "bad.conf:$(wc -l <"$D/bad.conf")" "$T/bad.err" || fail "bad value: no bad.conf:LINE on stderr: $(cat "$T/bad.err")"
cp "$CONF" "$D/bad.conf"
bad_start "unknown -o key" -o api.no_such_key=1
grep -q "no_such_key" "$T/bad.err" || fail "unknown -o key not named: $(cat "$T/bad.err")"
bad_start "out-of-range -o value" -o api.max_connections=0
bad_start "bad listen address" -o api.listen=nowhere

note "throttle: after free_failures wrong logins from one source 429 + Retry-After, the owner elsewhere unaffected"
# Defaults but a long first backoff, so the 429 is not a race with the clock.
start_keeld -o auth.backoff_base=30 -o auth.backoff_max=60
TOK=
for i in 1 2 3; do
    SRC=127.0.0.3 login "wrong-guess-$i"
    [ "$CODE" = 401 ] || fail "free failure $i from 127.0.0.3: HTTP $CODE"
done
check_429() { # WHAT
    [ "$CODE" = 429 ] || { cat "$T/out" >&2; fail "$1: HTTP $CODE, expected 429"; }
    jtrue "d.get('error') == 'too_many_attempts' and isinstance(d.get('retry_after'), int)" "$1: no too_many_attempts/retry_after"
    ra=$(header Retry-After)
    [ -n "$ra" ] || fail "$1: no Retry-After header"
    [ "$(jget "d['retry_after']")" = "$ra" ] || fail "$1: Retry-After $ra differs from retry_after $(jget "d['retry_after']")"
    [ "$ra" -ge 1 ] && [ "$ra" -le 30 ] || fail "$1: Retry-After $ra not in 1..30 (backoff_base 30)"
}
SRC=127.0.0.3 login "wrong-guess-4"
check_429 "4th wrong login"
SRC=127.0.0.3 login "$NEWPW2"
check_429 "right password from a throttled source"
t0=$(date +%s.%N)
SRC=127.0.0.2 login "$NEWPW2"
t1=$(date +%s.%N)
[ "$CODE" = 200 ] || fail "the owner from 127.0.0.2 is locked out: HTTP $CODE $(cat "$T/out")"
python3 -c "import sys; sys.exit(0 if $t1 - $t0 < 2 else 1)" || fail "the owner's login from 127.0.0.2 took $(python3 -c "print(round($t1 - $t0, 2))") s"
note "the throttle survives a restart"
restart_keeld -o auth.backoff_base=30 -o auth.backoff_max=60
SRC=127.0.0.3 login "wrong-guess-5"
check_429 "wrong login right after a restart"
SRC=127.0.0.2 login "$NEWPW2"
[ "$CODE" = 200 ] || fail "the owner from 127.0.0.2 after the restart: HTTP $CODE"

note "a factory reset cut off after the erase is finished at the next start (counters from its journal)"
stop_keeld
printf 'update.security_version=7\nupdate.trust_version=3\n' >"$D/update/reset-counters"
start_keeld
[ ! -e "$D/update/reset-counters" ] || die_log "the reset journal is still there after the start"
grep -q "a factory reset was finished: anti-rollback counters update.security_version=7" "$KEELD_LOG" || die_log "keeld did not log the recovery"
SRC=127.0.0.2 login_ok "$NEWPW2"
TOK=$TOKEN
expect_http 200 GET $A/update -
[ "$(jget "d['counter']")" = 7 ] || fail "anti-rollback counter after the recovery: $(jget "d['counter']"), expected 7"

stop_keeld
echo "keeld_api: 1 passed, 0 failed"

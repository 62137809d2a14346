#!/bin/sh
# keeld's fleet updater against real servers on 127.0.0.1: nginx as the
# fleet's update server (mutual TLS: the service CA's server certificate, the
# device CA required of clients) and mosquitto as the broker. keeld checks
# after start, downloads the offered bundle over mutual TLS into the inactive
# slot and reports downloading/installed; the emulated reboot brings a boot
# event with the new version; keel/update and keel/check from the fleet start
# a download or a check; a device nginx does not accept, a server of another
# CA, a tampered bundle and a digest unlike the offer's all end in a failed
# event with the running slot unchanged; automatic updates off -> postponed;
# failed logins -> auth-failures (EN 303 645 5.3-1, 5.3-2, 5.3-5, 5.3-6A).
. "$(dirname "$0")/keeld_lib.sh"
. "$(dirname "$0")/broker_lib.sh"
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$NGINX" ] || fail "nginx is needed (Debian package nginx-light)"
A=/api/v1
NEWPW="Correct-Horse-Battery-42"
CHUNK=65536

# ---- the device, its first image, the release signer -------------------------------
provision plug-1
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"

# mk VERSION SECVER: a signed 3-chunk bundle $T/VERSION.kb of random payload $T/payload-VERSION.
mk() {
    head -c $((2 * CHUNK + 4321)) /dev/urandom >"$T/payload-$1"
    expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version "$1" --security-version "$2" \
        --support-until 2030-12-31 --payload "$T/payload-$1" --out "$T/$1.kb" --chunk-size $CHUNK
}
# slot_holds SLOT VERSION: the slot image starts with that version's payload.
slot_holds() {
    _f=$D/update/slot-$(echo "$1" | tr AB ab).img
    head -c "$(wc -c <"$T/payload-$2")" "$_f" | cmp -s - "$T/payload-$2" || fail "slot $1 does not hold $2"
}
mk 1.0.0 1
expect_rc 0 "$KEEL" update install "$T/1.0.0.kb" --state "$D"
expect_rc 0 "$KEEL" boot --state "$D"

# ---- the broker and the update server ----------------------------------------------
broker_pki "$T/f"
broker_start
expect_rc 0 "$KEEL" factory init --dir "$T/f2" --org Mallory
NG=$T/ngx
mkdir -p "$NG/www/v1/bundles" "$NG/tmp" "$NG/logs"
broker_server_cert "$T/f" 127.0.0.1 "$NG/good"
broker_server_cert "$T/f2" 127.0.0.1 "$NG/foreign"
broker_server_cert "$T/f" updates.test "$NG/named"
cat "$T/f2/device-ca/issuing.crt" "$T/f2/device-ca/root.crt" >"$NG/other-device-ca.pem"
NPORT=$(free_port)
NGINX_PID=

# nginx_start CERTDIR CLIENT-CA: nginx in the foreground (daemon off) with its
# own prefix, temp dirs, pid and logs in $NG; waits until the port accepts.
nginx_start() {
    _user=
    [ "$(id -u)" != 0 ] || _user="user $(id -un);"
    cat >"$NG/nginx.conf" <<EOF
$_user
daemon off;
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/logs/error.log info;
events { worker_connections 64; }
http {
    log_format keel '\$request \$status \$body_bytes_sent "\$ssl_client_s_dn" \$ssl_client_verify';
    access_log $NG/logs/access.log keel;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    server {
        listen 127.0.0.1:$NPORT ssl;
        ssl_certificate $1/chain.pem;
        ssl_certificate_key $1/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_client_certificate $2;
        ssl_verify_client on;
        ssl_verify_depth 2;
        root $NG/www;
        location = /v1/update {
            default_type application/json;
            try_files /offer.json =204;
        }
        location /v1/bundles/ {
            default_type application/octet-stream;
            if (-f $NG/slow) { set \$limit_rate 256k; }
        }
        location / { return 404; }
    }
}
EOF
    echo "=== start nginx ($(date +%T)) cert=$1 client-ca=$2" >>"$NG/logs/error.log"
    "$NGINX" -p "$NG" -c "$NG/nginx.conf" -e "$NG/logs/error.log" >>"$NG/logs/stderr.log" 2>&1 &
    NGINX_PID=$!
    EXTRA_PIDS="$EXTRA_PIDS $NGINX_PID"
    _i=0
    while ! python3 -c 'import socket,sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5); s.close()' "$NPORT" 2>/dev/null; do
        kill -0 "$NGINX_PID" 2>/dev/null || { cat "$NG/logs/stderr.log" "$NG/logs/error.log" >&2; fail "nginx exited"; }
        _i=$((_i + 1))
        [ $_i -lt 100 ] || fail "nginx did not listen on 127.0.0.1:$NPORT within 10 s"
        sleep 0.1
    done
}
nginx_stop() {
    [ -n "$NGINX_PID" ] || return 0
    kill -TERM "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=
}
nginx_restart() {
    nginx_stop
    nginx_start "$@"
}
# access_mark / access_since: the access log's lines since the mark.
access_mark() { ACCESS_MARK=$(wc -l <"$NG/logs/access.log" 2>/dev/null || echo 0); }
access_since() { tail -n +"$((ACCESS_MARK + 1))" "$NG/logs/access.log" 2>/dev/null || true; }

# publish VERSION: the bundle on the server under a new campaign; sets CAMP, SHA, SIZE.
publish() {
    CAMP=$(openssl rand -hex 16)
    cp "$T/$1.kb" "$NG/www/v1/bundles/$CAMP"
    SHA=$(sha256sum "$T/$1.kb" | cut -d' ' -f1)
    SIZE=$(wc -c <"$T/$1.kb")
}
# offer VERSION [SHA]: the offer JSON for the last published campaign, in $T/offer.json.
offer() {
    printf '{"campaign":"%s","version":"%s","security_version":1,"size":%s,"sha256":"%s","security":false}' \
        "$CAMP" "$1" "$SIZE" "${2:-$SHA}" >"$T/offer.json"
}
command_update() { broker_pub "keel/v1/$DEV_ID/cmd/keel/update" "$T/offer.json"; }

# wait_for PYTHON-CONDITION WHAT: until the condition over the events the
# fleet received, `m` (a list of their `data` objects, oldest first), holds.
wait_for() {
    broker_wait "$T/events.txt" "e['data']" "$1" || die_log "$2"
}
# upd CAMPAIGN STATE: the condition "an update event of that campaign and state".
upd() { echo "any(e.get('type') == 'update' and e.get('campaign') == '$1' and e.get('state') == '$2' for e in m)"; }

nginx_start "$NG/good" "$BROKER_DIR/device-ca.pem"
broker_sub "keel/v1/$DEV_ID/events" "$T/events.txt"
LINK="-o link.broker=127.0.0.1:$BROKER_PORT -o link.first_connect=0 -o link.backoff_cap=2 -o ipc.socket=$T/app.sock"
UPD="-o update.server=https://127.0.0.1:$NPORT -o update.first_check=0 -o auth.report_window=2"

note "the new keys are checked before keeld starts"
for bad in update.server=http://127.0.0.1:1 update.server=https://127.0.0.1:1/v1 update.server=https://:1 \
           update.server_name= "update.server_name=a b" update.check_interval=0; do
    expect_rc 2 "$KEELD" --config "$CONF" --check -o "$bad"
done
expect_rc 0 "$KEELD" --config "$CONF" --check -o "update.server=https://[::1]:8443" -o update.server_name=updates.test

note "the first check after start finds the offer; the bundle comes over mutual TLS into slot B"
mk 1.1.0 1
publish 1.1.0
C1=$CAMP
offer 1.1.0
cp "$T/offer.json" "$NG/www/offer.json"
# shellcheck disable=SC2086
start_keeld $LINK $UPD
wait_for "any(e.get('type') == 'boot' and e.get('version') == '1.0.0' and e.get('slot') == 'A' and e.get('security_version') == 1 and e.get('model') == 'plug-1' for e in m)" \
    "no boot event with the running version 1.0.0"
wait_for "$(upd "$C1" downloading)" "no downloading event"
wait_for "any(e.get('type') == 'update' and e.get('campaign') == '$C1' and e.get('state') == 'installed' and e.get('version') == '1.1.0' and e.get('bytes') == $SIZE for e in m)" \
    "no installed event for 1.1.0"
slot_holds B 1.1.0
grep -q "GET /v1/update HTTP/1.1 200 .*CN=$DEV_ID.* SUCCESS" "$NG/logs/access.log" ||
    fail "nginx did not see the device's certificate on /v1/update: $(cat "$NG/logs/access.log")"
grep -q "GET /v1/bundles/$C1 HTTP/1.1 200 $SIZE .*CN=$DEV_ID" "$NG/logs/access.log" ||
    fail "nginx did not serve the bundle to the device: $(cat "$NG/logs/access.log")"
grep -q "needs a reboot" "$KEELD_LOG" || die_log "keeld did not say the install needs a reboot"

note "failed logins on the local API are reported to the fleet"
login wrong-password-1
[ "$CODE" = 401 ] || fail "a wrong password got HTTP $CODE"
wait_for "any(e.get('type') == 'auth-failures' and e.get('count', 0) >= 1 and e.get('window_s') == 2 for e in m)" \
    "no auth-failures event"
login_ok "$LABEL_PW"
change_password "$TOKEN" "$LABEL_PW" "$NEWPW"
login_ok "$NEWPW"
TOK=$TOKEN expect_http 200 GET $A/update -
jtrue "d['state'] == 'installed' and d['pending']['version'] == '1.1.0' and d['running']['version'] == '1.0.0'" \
    "the API does not show 1.1.0 installed and pending"

note "emulated reboot: keel boot, keeld again -> boot event with 1.1.0; the same offer is not fetched again"
stop_keeld
expect_rc 0 "$KEEL" boot --state "$D"
access_mark
# shellcheck disable=SC2086
start_keeld $LINK $UPD
wait_for "any(e.get('type') == 'boot' and e.get('version') == '1.1.0' and e.get('slot') == 'B' for e in m)" \
    "no boot event with 1.1.0"
i=0
until grep -q "campaign $C1: 1.1.0 runs already" "$KEELD_LOG"; do
    i=$((i + 1)); [ $i -lt 100 ] || die_log "the offer of the running version was not ignored"; sleep 0.1
done
access_since | grep -q "/v1/bundles/" && fail "the running version was downloaded again"
rm -f "$NG/www/offer.json"
login_ok "$NEWPW"

note "keel/update from the fleet starts a download (from the configured server)"
mk 1.2.0 1
publish 1.2.0
C2=$CAMP
offer 1.2.0
command_update
wait_for "$(upd "$C2" installed)" "keel/update did not install 1.2.0"
slot_holds A 1.2.0

note "a tampered bundle is refused by the installer; slot B keeps running"
mk 1.3.0 1
publish 1.3.0
C3=$CAMP
off=$((SIZE - CHUNK - 1000))
printf '\377' | dd of="$NG/www/v1/bundles/$C3" bs=1 seek=$off conv=notrunc 2>/dev/null
cmp -s "$T/1.3.0.kb" "$NG/www/v1/bundles/$C3" &&
    { printf '\000' | dd of="$NG/www/v1/bundles/$C3" bs=1 seek=$off conv=notrunc 2>/dev/null; }
offer 1.3.0 "$(sha256sum "$NG/www/v1/bundles/$C3" | cut -d' ' -f1)"
command_update
wait_for "any(e.get('type') == 'update' and e.get('campaign') == '$C3' and e.get('state') == 'failed' and 'chunk' in e.get('error', '') for e in m)" \
    "the tampered bundle did not fail with a chunk error"
TOK=$TOKEN expect_http 200 GET $A/update -
jtrue "d['running']['version'] == '1.1.0' and d['running']['slot'] == 'B' and d['pending'] is None" \
    "the running slot changed after a refused bundle"
jtrue "'fleet campaign $C3' in (d['last_error'] or '') and d['state'] == 'idle'" "the API does not show the refusal"

note "a bundle whose digest is not the offer's never completes an install"
publish 1.3.0
C3B=$CAMP
offer 1.3.0 "$(echo "$SHA" | tr 0-9a-f 1-9a-f0)"
command_update
wait_for "any(e.get('type') == 'update' and e.get('campaign') == '$C3B' and e.get('state') == 'failed' and 'SHA-256' in e.get('error', '') for e in m)" \
    "a digest unlike the offer's did not fail"

note "a device whose certificate the server does not accept gets no bundle"
nginx_restart "$NG/good" "$NG/other-device-ca.pem"
access_mark
publish 1.3.0
C4=$CAMP
offer 1.3.0
command_update
wait_for "any(e.get('type') == 'update' and e.get('campaign') == '$C4' and e.get('state') == 'failed' and e.get('bytes') == 0 and '400' in e.get('error', '') for e in m)" \
    "the refused client certificate did not end in a failed event"
access_since | grep -q "GET /v1/bundles/$C4 HTTP/1.1 400 .* FAILED" ||
    fail "nginx did not refuse the device's certificate: $(access_since)"

note "a server certificate of another CA is refused before any request"
nginx_restart "$NG/foreign" "$BROKER_DIR/device-ca.pem"
access_mark
publish 1.3.0
C5=$CAMP
offer 1.3.0
command_update
wait_for "any(e.get('type') == 'update' and e.get('campaign') == '$C5' and e.get('state') == 'failed' and e.get('bytes') == 0 for e in m)" \
    "a server of another CA did not end in a failed event"
grep "campaign $C5" "$KEELD_LOG" | grep -qi "certificate" || die_log "keeld did not say the server's certificate failed"
[ -z "$(access_since)" ] || fail "a request reached the server of another CA: $(access_since)"
TOK=$TOKEN expect_http 200 GET $A/update -
jtrue "d['running']['version'] == '1.1.0' and d['pending'] is None" "the slots changed after the failed downloads"

note "a slow download reports progress; SIGTERM aborts it and nothing is committed"
nginx_restart "$NG/good" "$BROKER_DIR/device-ca.pem"
head -c $((4 * 1024 * 1024)) /dev/urandom >"$T/payload-2.0.0"
expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version 2.0.0 --security-version 1 \
    --support-until 2030-12-31 --payload "$T/payload-2.0.0" --out "$T/2.0.0.kb" --chunk-size $CHUNK
publish 2.0.0
C7=$CAMP
offer 2.0.0
: >"$NG/slow"
command_update
wait_for "any(e.get('type') == 'update' and e.get('campaign') == '$C7' and e.get('state') == 'downloading' and e.get('bytes', 0) > 0 for e in m)" \
    "no downloading event with progress"
TOK=$TOKEN expect_http 200 GET $A/update -
jtrue "d['state'] == 'installing'" "the API does not show the fleet install"
head -c 1000 "$T/1.0.0.kb" >"$T/piece"
TOK=$TOKEN CT=application/octet-stream expect_error 409 conflict PUT "$A/update/bundle?offset=0" "@$T/piece"
stop_keeld
rm -f "$NG/slow"
grep -q "campaign $C7 (2.0.0) failed: keeld stopped" "$KEELD_LOG" || die_log "the stop did not end the download"
# shellcheck disable=SC2086
start_keeld $LINK $UPD -o update.first_check=3600
wait_for "any(e.get('type') == 'update' and e.get('campaign') == '$C7' and e.get('state') == 'failed' for e in m)" \
    "the aborted download was not reported"
login_ok "$NEWPW"
TOK=$TOKEN expect_http 200 GET $A/update -
jtrue "d['running']['version'] == '1.1.0' and d['pending'] is None and d['state'] == 'idle'" \
    "the aborted download changed the slots"

note "automatic updates off: keel/check finds the offer, postponed, nothing fetched"
TOK=$TOKEN expect_http 200 PUT $A/settings '{"automatic_updates": false}'
publish 1.3.0
C6=$CAMP
offer 1.3.0
cp "$T/offer.json" "$NG/www/offer.json"
access_mark
printf '{}' >"$T/empty.json"
broker_pub "keel/v1/$DEV_ID/cmd/keel/check" "$T/empty.json"
wait_for "$(upd "$C6" postponed)" "no postponed event with automatic updates off"
access_since | grep -q "GET /v1/update HTTP/1.1 200" || fail "keel/check did not ask the server: $(access_since)"
access_since | grep -q "/v1/bundles/" && fail "a postponed update was downloaded: $(access_since)"
TOK=$TOKEN expect_http 200 GET $A/update -
jtrue "d['pending'] is None" "a postponed update was installed"

note "automatic updates on again, with the server named by update.server_name: keel/check installs"
stop_keeld
nginx_restart "$NG/named" "$BROKER_DIR/device-ca.pem"
# shellcheck disable=SC2086
start_keeld $LINK $UPD -o update.server_name=updates.test -o update.first_check=3600
login_ok "$NEWPW"
TOK=$TOKEN expect_http 200 PUT $A/settings '{"automatic_updates": true}'
broker_pub "keel/v1/$DEV_ID/cmd/keel/check" "$T/empty.json"
wait_for "$(upd "$C6" installed)" "keel/check did not install 1.3.0 from the named server"
slot_holds A 1.3.0

stop_keeld
nginx_stop
note "ok"

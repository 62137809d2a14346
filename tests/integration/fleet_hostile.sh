#!/bin/sh
# keel-fleetd under attack, every part real (mosquitto with the shipped
# configuration, keel-fleetd on SQLite, devices with their own certificates):
#   devices: control characters in what the log might echo (an erase request
#     id, an unknown envelope field, a boot version), a boot report and an
#     update report the store refuses (each must cost only itself, not the
#     batch of other devices' messages it arrived in), an oversized envelope,
#     1000 unregistered devices;
#   the update server: path traversal in /v1/bundles/<id>, Range headers (416,
#     overflow), idle connections and a stalled handshake (closed after the
#     request timeout), connections without certificates, many concurrent
#     downloads by one device (429 past the cap), a device that vanishes
#     mid-download (no descriptor or memory left behind);
#   the device CRL: renewed before it expires.
# Every server listens on 127.0.0.1 only. (EN 303 645 5.5-8, 5.6-*, 5.13-1.)
. "$(dirname "$0")/keeld_lib.sh"
. "$(dirname "$0")/broker_lib.sh"
. "$(dirname "$0")/fleet_lib.sh"
SIM=${FLEET_SIM:-$KEEL_BUILD_DIR/tests/fleet_sim}
[ -x "$SIM" ] || fail "fleet_sim not built: $SIM"
command -v mosquitto_pub >/dev/null 2>&1 || { echo "mosquitto_pub is needed" >&2; exit 77; }

expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
FLEET_LOG_LEVEL=debug
fleet_setup "$T/f"
fleet_conf op "update_server.request_timeout=5" "update_server.max_connections=16"
broker_start
fleet_start op
LOG=$FLEET_DIR/op.log
PID=$FLEET_PID_op

"$SIM" manifest --count 3 --model plug-1 --issuing-cert "$T/f/device-ca/issuing.crt" \
    --issuing-key "$T/f/device-ca/issuing.key" --org Acme --out "$T/sim" >/dev/null || fail "fleet_sim manifest"
expect_rc 0 "$KEEL" fleet import "$T/sim/manifest.json"
devid() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["devices"][int(sys.argv[2])]["id"])' "$T/sim/manifest.json" "$1"; }
A=$(devid 0)
B=$(devid 1)
C=$(devid 2)
for d in "$A" "$B" "$C"; do
    cat "$T/sim/$d.crt" "$T/f/device-ca/issuing.crt" >"$T/sim/$d.chain"
done

# a running campaign for plug-1 (every device): a bundle to serve, progress to report
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"
head -c 32000000 /dev/urandom >"$T/payload" # more than loopback buffers hold
expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version 2.0.0 --security-version 2 \
    --support-until 2030-12-31 --payload "$T/payload" --out "$T/2.0.0.kb" --chunk-size 65536
"$KEEL" fleet --json campaign create --bundle "$T/2.0.0.kb" --model plug-1 --percent 100 >"$T/camp.json" 2>"$T/err" ||
    fail "campaign create: $(cat "$T/err")"
CAMP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/camp.json")
SIZE=$(wc -c <"$T/2.0.0.kb")

# pub DEVICE LEAF JSON: one QoS 1 message as the device (its own certificate; the broker's ACL).
pub() {
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" --cafile "$T/f/service-ca/root.crt" --cert "$T/sim/$1.chain" \
        --key "$T/sim/$1.key" -i "$1" -q 1 -V mqttv5 -t "keel/v1/$1/$2" -m "$3" ||
        fail "mosquitto_pub as $1 on $2"
}
# envl DEVICE SEQ KIND DATA: an envelope
envl() { printf '{"device":"%s","seq":%s,"ts":%s,"kind":"%s","data":%s}' "$1" "$2" "$(date +%s)" "$3" "$4"; }
stored() { fleet_sql "SELECT count(*) FROM messages WHERE device = '$1'"; }
alive() { kill -0 "$PID" 2>/dev/null || fleet_die op "keel-fleetd died"; }

# ---- devices: log injection --------------------------------------------------------------------------
FORGED='keel-fleetd: error: FORGED'
pub "$A" events "$(envl "$A" 1 event '{"type":"erase-request","id":"01234\nkeel-fleetd: error: FORGED"}')"
pub "$A" events "$(printf '{"device":"%s","seq":2,"ts":1,"kind":"event","data":{},"x\\n%s":1}' "$A" "$FORGED")"
pub "$A" events "$(envl "$A" 3 event '{"type":"boot","version":"1.0\r\nkeel-fleetd: error: FORGED","security_version":1}')"
pub "$A" telemetry "$(envl "$A" 4 telemetry '{"t":1}')"
fleet_wait_sql "SELECT count(*) FROM messages WHERE device = '$A' AND seq = 4" 1 20
sleep 1
grep -q "^$FORGED" "$LOG" && fleet_die op "a device forged a line of keel-fleetd's log"
alive
note "log injection: control characters from a device never start a line of the log"

# ---- devices: a report the store refuses costs only itself -------------------------------------------
# Sent while keel-fleetd is away, so the broker delivers them in one burst: one batch.
fleet_stop op
pub "$B" events "$(envl "$B" 1 event '{"type":"boot","version":"1.0 beta","security_version":1}')"
BIG=$(python3 -c 'print("e" * 3000)')
pub "$B" events "$(envl "$B" 2 event "{\"type\":\"update\",\"campaign\":\"$CAMP\",\"state\":\"downloading\",\"error\":\"$BIG\"}")"
for s in 1 2 3 4 5; do
    pub "$C" telemetry "$(envl "$C" $s telemetry '{"t":1}')"
done
fleet_start op
PID=$FLEET_PID_op
fleet_wait_sql "SELECT count(*) FROM messages WHERE device = '$C'" 5 20
fleet_wait_sql "SELECT count(*) FROM messages WHERE device = '$B'" 2 20
grep -q "a batch of .* messages was not stored" "$LOG" && fleet_die op "one device's malformed report cost a whole batch"
note "a boot version with a space and an update report with a 3 KB error: dropped alone, the batch stored"

# ---- devices: oversized, unknown -----------------------------------------------------------------------
python3 -c 'import sys; sys.stdout.write("{\"pad\":\"" + "x" * 70000 + "\"}")' >"$T/huge.json"
mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" --cafile "$T/f/service-ca/root.crt" --cert "$T/sim/$C.chain" \
    --key "$T/sim/$C.key" -i "$C" -q 1 -V mqttv5 -t "keel/v1/$C/telemetry" -f "$T/huge.json" >/dev/null 2>&1 || true
pub "$C" telemetry "$(envl "$C" 6 telemetry '{"t":1}')"
fleet_wait_sql "SELECT count(*) FROM messages WHERE device = '$C'" 6 20
alive
note "an envelope over 64 KiB: dropped, the device's next message stored"

"$SIM" manifest --count 1000 --model plug-1 --issuing-cert "$T/f/device-ca/issuing.crt" \
    --issuing-key "$T/f/device-ca/issuing.key" --org Acme --out "$T/strangers" >/dev/null || fail "fleet_sim manifest"
"$SIM" publish --broker "127.0.0.1:$BROKER_PORT" --ca "$T/f/service-ca/root.crt" --chain "$FLEET_DIR/device-ca.pem" \
    --devices "$T/strangers" --messages 1 --json >"$T/pub.json" 2>"$T/pub.err" || { cat "$T/pub.err" >&2; fail "fleet_sim publish"; }
i=0
until "$KEEL" fleet --json status 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["ingest"]["unknown"] >= 1000 else 1)'; do
    i=$((i + 1))
    [ $i -lt 150 ] || fleet_die op "1000 unknown devices were not all counted"
    sleep 0.2
done
[ "$(fleet_sql "SELECT count(*) FROM devices")" = 3 ] || fail "unknown devices reached the registry"
[ "$(fleet_sql "SELECT count(*) FROM messages WHERE device NOT IN ('$A', '$B', '$C')")" = 0 ] || fail "unknown devices' messages were stored"
alive
note "1000 unregistered devices: every message counted and dropped, nothing stored"

# ---- the update server ---------------------------------------------------------------------------------
URL=https://127.0.0.1:$FLEET_DIST_PORT
# dist DEVICE PATH [CURL ARGS]: the HTTP status; the body in $T/dist.out
dist() {
    _d=$1 _p=$2
    shift 2
    curl -s -o "$T/dist.out" -w '%{http_code}' --max-time 20 --cacert "$T/f/service-ca/root.crt" \
        --cert "$T/sim/$_d.crt" --key "$T/sim/$_d.key" "$@" "$URL$_p" 2>/dev/null || true
}
[ "$(dist "$C" /v1/update)" = 200 ] || fail "device $C got no offer: $(cat "$T/dist.out")"
[ "$(dist "$C" "/v1/bundles/$CAMP")" = 200 ] && cmp -s "$T/dist.out" "$T/2.0.0.kb" || fail "the bundle did not arrive intact"

for p in "/v1/bundles/../../../etc/passwd" "/v1/bundles/%2e%2e%2f%2e%2e%2fetc%2fpasswd" "/v1/bundles/$CAMP/../x" \
    "/v1/bundles/${CAMP}%00" "/v1/bundles/$(echo "$CAMP" | tr a-f A-F)" "/v1/bundles/" "/v1/bundles/$CAMP/"; do
    code=$(dist "$C" "$p" --path-as-is)
    [ "$code" = 404 ] || [ "$code" = 400 ] || fail "GET $p: HTTP $code"
    grep -q "root:" "$T/dist.out" && fail "GET $p served a system file"
done
note "path traversal in /v1/bundles/<id>: 404, nothing outside the bundles"

[ "$(dist "$C" "/v1/bundles/$CAMP" -H "Range: bytes=1000-")" = 206 ] || fail "Range bytes=1000-: not 206"
tail -c +1001 "$T/2.0.0.kb" | cmp -s - "$T/dist.out" || fail "Range bytes=1000-: not the rest of the bundle"
for r in "bytes=$SIZE-" "bytes=99999999999999999999-" "bytes=-10" "bytes=0-10" "bytes=5-,7-" "bytes= 5-" \
    "bytes=-0-" "bytes=+5-" "items=0-" "bytes=0x10-"; do
    code=$(dist "$C" "/v1/bundles/$CAMP" -H "Range: $r")
    [ "$code" = 416 ] || fail "Range: $r: HTTP $code (expected 416)"
done
dist "$C" "/v1/bundles/$CAMP" -H "Range: bytes=$SIZE-" -D "$T/h416" >/dev/null
grep -qi "^Content-Range: bytes \*/$SIZE" "$T/h416" || fail "a 416 does not say the size (Content-Range: bytes */$SIZE)"
note "Range: bytes=N- resumes; past the end, overflowing, suffix, multiple or other units: 416 with the size"

fds() { ls "/proc/$PID/fd" | wc -l; }
# fds_back N WHAT: the descriptors come back to N (a socket closes a moment
# after the callback that logged its end), else fail naming WHAT.
fds_back() {
    _i=0
    until [ "$(fds)" -le "$1" ]; do
        _i=$((_i + 1))
        [ $_i -lt 50 ] || fleet_die op "descriptors left behind by $2: $1 before, $(fds) after"
        sleep 0.1
    done
}
FDS0=$(fds)
# a device vanishes mid-download, several times
for i in 1 2 3 4 5; do
    curl -s -o /dev/null --limit-rate 50k --max-time 30 --cacert "$T/f/service-ca/root.crt" \
        --cert "$T/sim/$C.crt" --key "$T/sim/$C.key" "$URL/v1/bundles/$CAMP" &
    cp=$!
    sleep 0.5
    kill -KILL "$cp" 2>/dev/null || true
    wait "$cp" 2>/dev/null || true
done
i=0
until [ "$(grep -c "$C left with .* bytes unsent" "$LOG")" -ge 5 ]; do
    i=$((i + 1))
    [ $i -lt 100 ] || fleet_die op "the update server did not see the downloads end"
    sleep 0.1
done
fds_back "$FDS0" "aborted downloads"
note "5 downloads killed mid-stream: each ended on the server, no descriptor left ($(fds) open)"

# one device, many downloads at once: past the cap it gets 429
SLOW=
for i in 1 2 3 4; do
    curl -s -o /dev/null -w '%{http_code}\n' --limit-rate 20k --max-time 8 --cacert "$T/f/service-ca/root.crt" \
        --cert "$T/sim/$B.crt" --key "$T/sim/$B.key" "$URL/v1/bundles/$CAMP" >>"$T/slow.codes" 2>/dev/null &
    SLOW="$SLOW $!"
    sleep 0.3
done
[ "$(dist "$B" "/v1/bundles/$CAMP")" = 429 ] || fail "a 5th concurrent download by one device was not refused (429)"
[ "$(dist "$A" "/v1/update")" = 200 ] || fail "another device was not served while $B hogged downloads"
for p in $SLOW; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
note "one device's concurrent downloads are capped (429); other devices are served"

# idle connections and stalled handshakes past max_connections (16 here): the
# descriptors stay bounded, the request timeout (5 s) closes them, then devices are served
cat >"$T/idle.py" <<'EOF2'
import socket, sys, time
port, n, wait = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if i % 3 == 1:
        s.sendall(b"\x16\x03\x01\x00\x50")  # half a ClientHello: a stalled handshake
    socks.append(s)
open_ = list(socks)
deadline = time.time() + wait
while open_ and time.time() < deadline:
    for s in list(open_):
        s.settimeout(0.02)
        try:
            if s.recv(4096) == b"":
                open_.remove(s)
        except socket.timeout:
            pass
        except OSError:
            open_.remove(s)
print(len(open_))
EOF2
FDS0=$(fds)
python3 "$T/idle.py" "$FLEET_DIST_PORT" 60 40 >"$T/idle.out" &
IDLE=$!
sleep 2
FDS1=$(fds)
[ "$FDS1" -le $((FDS0 + 16)) ] || fleet_die op "60 idle connections took $((FDS1 - FDS0)) descriptors (max_connections 16)"
grep -q "update server: 16 connections open: not accepting more" "$LOG" || fleet_die op "the cap was not logged"
wait "$IDLE" || fail "idle connections: $(cat "$T/idle.out")"
[ "$(cat "$T/idle.out")" = 0 ] || fail "$(cat "$T/idle.out") idle or stalled connections were still open after 40 s (timeout 5 s)"
code=$(dist "$A" "/v1/update")
[ "$code" = 200 ] || fleet_die op "a device was not served after the idle connections ended (HTTP $code)"
note "60 idle or stalled connections: at most 16 held at once ($((FDS1 - FDS0)) descriptors), each closed by the request timeout"

# connections without a certificate: the handshake ends them, no HTTP
for i in 1 2 3 4 5 6 7 8 9 10; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$T/f/service-ca/root.crt" "$URL/v1/update" 2>/dev/null || true)
    [ "$code" = 000 ] || fail "a client without a certificate got HTTP $code"
done
fds_back "$FDS0" "clients without a certificate"
alive
note "no certificate: no HTTP, nothing left behind"

# ---- the device CRL: renewed before it expires (an expired CRL locks every device out)
fleet_stop op
touch -d '20 days ago' "$BROKER_CRL"
fleet_start op
PID=$FLEET_PID_op
grep -q "the device CRL .* was renewed for 30 days" "$LOG" || fleet_die op "a CRL signed 20 days ago (of 30) was not renewed"
LAST=$(openssl crl -in "$BROKER_CRL" -noout -lastupdate | cut -d= -f2)
[ $(($(date +%s) - $(date -d "$LAST" +%s))) -lt 600 ] || fail "the renewed CRL was signed at $LAST"
[ "$(dist "$A" "/v1/update")" = 200 ] || fleet_die op "a device was refused after the CRL was renewed"
note "a device CRL 20 of its 30 days old: re-signed at start, the update server and the broker reload it"

fleet_stop op
note "keel-fleetd hostile: all checks passed"

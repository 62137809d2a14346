#!/bin/sh
# keel-fleetd's ingest against the shipped mosquitto configuration, with
# simulated devices (tests/tools/fleet_sim: one mutual-TLS connection per
# device, its own certificate): the registry import, idempotent ingest (a
# resent seq is stored once), gaps settled as lost (loss alerts) or closed by
# late messages, messages of unregistered devices dropped, a tamper alert and
# a message flood flagged, an erase request answered with a receipt and the
# device's messages gone, nothing lost while keel-fleetd is stopped
# (persistent session) or killed (what it acknowledged and did not store
# shows as loss), and two instances splitting one shared subscription.
# With KEEL_FLEET_TEST_PG=1 the same runs on a private PostgreSQL.
# (EN 303 645 5.9-2, 5.10-1, 5.11-2, 5.11-4.)
. "$(dirname "$0")/keeld_lib.sh"
. "$(dirname "$0")/broker_lib.sh"
if [ -n "${KEEL_FLEET_TEST_PG:-}" ]; then
    . "$(dirname "$0")/pg_lib.sh"
    pg_start
    FLEET_DB_URL=$PG_URL
    note "the fleet's database: a private PostgreSQL on 127.0.0.1:$PG_PORT"
fi
. "$(dirname "$0")/fleet_lib.sh"
SIM=${FLEET_SIM:-$KEEL_BUILD_DIR/tests/fleet_sim}
[ -x "$SIM" ] || fail "fleet_sim not built: $SIM"

expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
FLEET_GAP_GRACE=10
fleet_setup "$T/f"
broker_start
fleet_start op

# ---- the registry ------------------------------------------------------------------------------
N=12
"$SIM" manifest --count $N --model plug-1 --issuing-cert "$T/f/device-ca/issuing.crt" \
    --issuing-key "$T/f/device-ca/issuing.key" --org Acme --out "$T/sim" >/dev/null || fail "fleet_sim manifest"
"$SIM" manifest --count 2 --model plug-1 --issuing-cert "$T/f/device-ca/issuing.crt" \
    --issuing-key "$T/f/device-ca/issuing.key" --org Acme --out "$T/stranger" >/dev/null || fail "fleet_sim manifest"
expect_rc 0 "$KEEL" fleet --json import "$T/sim/manifest.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["added"] == int(sys.argv[2]), d' \
    "$T/out" $N 2>/dev/null || grep -q "\"added\":$N" "$T/out" || true
[ "$(fleet_sql "SELECT count(*) FROM devices")" = $N ] || fail "the import registered $(fleet_sql "SELECT count(*) FROM devices") devices, not $N"
expect_rc 0 "$KEEL" fleet import "$T/sim/manifest.json"
[ "$(fleet_sql "SELECT count(*) FROM devices")" = $N ] || fail "a second import changed the registry"
note "import: $N devices registered; importing again changes nothing"

# publish ARGS...: fleet_sim publish as the simulated devices; its JSON summary in $T/pub.json.
publish() {
    "$SIM" publish --broker "127.0.0.1:$BROKER_PORT" --ca "$T/f/service-ca/root.crt" \
        --chain "$FLEET_DIR/device-ca.pem" --json "$@" >"$T/pub.json" 2>"$T/pub.err" ||
        { cat "$T/pub.err" >&2; fail "fleet_sim publish $*"; }
}
pubval() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$T/pub.json" "$1"; }
stored() { fleet_sql "SELECT count(*) FROM messages"; }

# ---- dedupe and gaps ------------------------------------------------------------------------------
publish --devices "$T/sim" --messages 45 --dup-every 7 --skip-every 10
ACKED=$(pubval acked)
DUPS=$(pubval duplicates)
SKIPPED=$(pubval skipped)
WANT=$((ACKED - DUPS))
fleet_wait_sql "SELECT count(*) FROM messages" "$WANT" 30
note "dedupe: $ACKED acknowledged by the broker, $DUPS of them resent seqs: $WANT stored, each once"
# every skipped seq is a gap that no message closes; after the grace period each is settled as lost
fleet_wait_sql "SELECT count(*) FROM gaps WHERE state = 'lost'" "$SKIPPED" 45
fleet_wait_sql "SELECT count(*) FROM alerts WHERE kind = 'loss'" "$SKIPPED" 10
LOST=$(fleet_sql "SELECT coalesce(sum(seq_last - seq_first + 1), 0) FROM gaps WHERE state = 'lost'")
[ "$LOST" = "$SKIPPED" ] || fail "$SKIPPED seqs were never sent, $LOST were reported lost"
note "gaps: the $SKIPPED seqs never sent are reported lost ($(fleet_sql "SELECT count(*) FROM alerts WHERE kind = 'loss'") loss alerts)"

# late messages close their gaps: seqs 47 and 49 of the first device arrive after 48 and 50
devid() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["devices"][int(sys.argv[2])]["id"])' "$T/sim/manifest.json" "$1"; }
FIRST=$(devid 0)
publish --devices "$T/sim" --count 1 --messages 5 --seq-start 46 --skip-every 2
fleet_wait_sql "SELECT count(*) FROM gaps WHERE device = '$FIRST' AND state = 'open'" 2 10
publish --devices "$T/sim" --count 1 --messages 1 --seq-start 47
publish --devices "$T/sim" --count 1 --messages 1 --seq-start 49
fleet_wait_sql "SELECT count(*) FROM gaps WHERE device = '$FIRST' AND state = 'open'" 0 10
note "a late message closes its gap before the grace period ends: no loss reported for it"

# ---- strangers -----------------------------------------------------------------------------------
BEFORE=$(stored)
publish --devices "$T/stranger" --messages 5
[ "$(pubval acked)" -gt 0 ] || fail "the broker did not take the stranger's messages (the test needs it to)"
sleep 2
[ "$(stored)" = "$BEFORE" ] || fail "messages of an unregistered device were stored"
note "an unregistered device (a valid certificate of the device CA): its $(pubval acked) messages are not stored"

# ---- anomalies ------------------------------------------------------------------------------------
publish --devices "$T/sim" --count 1 --messages 1 --seq-start 200 --anomaly tamper
fleet_wait_sql "SELECT count(*) FROM alerts WHERE kind = 'tamper' AND device = '$FIRST'" 1 15
expect_rc 0 "$KEEL" fleet alerts --kind tamper
grep -q "$FIRST" "$T/out" || fail "keel fleet alerts does not list the tamper alert: $(cat "$T/out")"
note "a tamper alert from a device becomes a fleet alert (keel fleet alerts lists it)"

# ---- erasure ----------------------------------------------------------------------------------------
SECOND=$(devid 1)
[ "$(fleet_sql "SELECT count(*) FROM messages WHERE device = '$SECOND'")" -gt 0 ] || fail "no messages of $SECOND"
REQ=$(openssl rand -hex 16)
printf '{"device":"%s","seq":900,"ts":%s,"kind":"event","data":{"type":"erase-request","id":"%s"}}' \
    "$SECOND" "$(date +%s)" "$REQ" >"$T/erase.json"
# One connection that publishes the request and waits for the answer (the
# broker makes the certificate's CN the client id: a second connection of the
# same device would end the first).
mosquitto_rr -V mqttv5 -h 127.0.0.1 -p "$BROKER_PORT" --cafile "$T/f/service-ca/root.crt" \
    --cert "$T/sim/$SECOND.crt" --key "$T/sim/$SECOND.key" -i "$SECOND" -q 1 -W 20 \
    -t "keel/v1/$SECOND/events" -e "keel/v1/$SECOND/cmd/keel/erase-receipt" -m "$(cat "$T/erase.json")" \
    >"$T/receipt.json" 2>"$T/rr.err" || fail "no erase receipt reached the device: $(cat "$T/rr.err")"
python3 - "$T/receipt.json" "$REQ" <<'EOF' || fail "bad receipt: $(cat "$T/receipt.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["id"] == sys.argv[2] and r["erased"] is True and r["records"] > 0, r
EOF
[ "$(fleet_sql "SELECT count(*) FROM messages WHERE device = '$SECOND'")" = 0 ] ||
    fail "the erase left messages of $SECOND"
note "erase request: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["records"])' "$T/receipt.json") messages deleted, receipt on cmd/keel/erase-receipt"

# ---- a campaign halts itself when its installs fail -------------------------------------------------------
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"
head -c 70000 /dev/urandom >"$T/payload"
expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version 2.0.0 --security-version 2 \
    --support-until 2030-12-31 --payload "$T/payload" --out "$T/2.0.0.kb"
CAMP=$("$KEEL" fleet --json campaign create --bundle "$T/2.0.0.kb" --model plug-1 --percent 50 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
SEL=$(fleet_sql "SELECT count(*) FROM campaign_devices WHERE campaign = '$CAMP'")
[ "$SEL" = $((N / 2)) ] || fail "a 50 % campaign over $N devices selected $SEL"
VICTIM=$(fleet_sql "SELECT device FROM campaign_devices WHERE campaign = '$CAMP' ORDER BY device LIMIT 1")
printf '{"device":"%s","seq":7000,"ts":%s,"kind":"event","data":{"type":"update","campaign":"%s","state":"failed","version":"2.0.0","bytes":0,"error":"flash write failed"}}' \
    "$VICTIM" "$(date +%s)" "$CAMP" >"$T/failed.json"
mosquitto_pub -V mqttv5 -h 127.0.0.1 -p "$BROKER_PORT" --cafile "$T/f/service-ca/root.crt" \
    --cert "$T/sim/$VICTIM.crt" --key "$T/sim/$VICTIM.key" -i "$VICTIM" -q 1 \
    -t "keel/v1/$VICTIM/events" -f "$T/failed.json" 2>"$T/pub.err" || fail "mosquitto_pub: $(cat "$T/pub.err")"
fleet_wait_sql "SELECT state FROM campaigns WHERE id = '$CAMP'" halted 20
fleet_wait_sql "SELECT count(*) FROM alerts WHERE kind = 'campaign'" 1 10
note "a 50 % campaign selected $SEL of $N devices; one failed install of one finished halted it (campaign alert)"

# ---- nothing lost while keel-fleetd is away ------------------------------------------------------------
fleet_stop op
BEFORE=$(stored)
publish --devices "$T/sim" --messages 30 --seq-start 1000
ACKED=$(pubval acked)
fleet_start op
fleet_wait_sql "SELECT count(*) FROM messages" "$((BEFORE + ACKED))" 30
note "keel-fleetd stopped: the broker kept the $ACKED messages sent meanwhile for its session; all stored on return"

# ---- a crash: what keel-fleetd acknowledged and did not store is reported, never silent ---------------
# seqs 1100..1499 of every device, then 1500 after the crash (so a loss at the end is a gap too)
in_range() { # stored + lost messages with seq in [1100, 1500]; $2: "first|last" rows of lost gaps
    python3 -c 'import sys
n = sum(max(0, min(int(b), 1500) - max(int(a), 1100) + 1) for a, b in (l.split("|") for l in sys.argv[2].split()))
print(int(sys.argv[1]) + n)' "$1" "$2"
}
"$SIM" publish --broker "127.0.0.1:$BROKER_PORT" --ca "$T/f/service-ca/root.crt" --chain "$FLEET_DIR/device-ca.pem" \
    --devices "$T/sim" --messages 400 --seq-start 1100 --json >"$T/pub.json" 2>"$T/pub.err" &
PUBP=$!
EXTRA_PIDS="$EXTRA_PIDS $PUBP"
sleep 1
fleet_kill op
wait "$PUBP" || { cat "$T/pub.err" >&2; fail "fleet_sim publish during the crash"; }
ACKED=$(pubval acked)
publish --devices "$T/sim" --messages 1 --seq-start 1500
ACKED=$((ACKED + $(pubval acked)))
fleet_start op
i=0
while :; do
    GOT=$(fleet_sql "SELECT count(*) FROM messages WHERE seq BETWEEN 1100 AND 1500")
    LOSTROWS=$(fleet_sql "SELECT seq_first, seq_last FROM gaps WHERE state = 'lost' AND seq_last >= 1100 AND seq_first <= 1500")
    OPEN=$(fleet_sql "SELECT count(*) FROM gaps WHERE state = 'open' AND seq_last >= 1100 AND seq_first <= 1500")
    SUM=$(in_range "$GOT" "$LOSTROWS")
    [ "$OPEN" = 0 ] && [ "$SUM" -eq "$ACKED" ] && break
    i=$((i + 1))
    [ $i -lt 600 ] || fleet_die op "after the crash: $ACKED acknowledged, $GOT stored, $SUM stored + lost, $OPEN gaps open"
    sleep 0.1
done
note "kill -9 mid-stream: of $ACKED messages the broker took, $GOT were stored and $((SUM - GOT)) reported lost (loss alerts): none unaccounted"

# ---- two instances, one shared subscription ----------------------------------------------------------------
expect_rc 0 "$KEEL" factory issue-client --dir "$T/f" --name keel-fleet-2 --out "$FLEET_DIR/client2"
printf '\nuser keel-fleet-2\ntopic read keel/v1/#\ntopic write keel/v1/+/cmd/#\ntopic write keel/fleet/alerts\n' \
    >>"$BROKER_DIR/etc/keel-broker.acl"
kill -HUP "$BROKER_PID"
sleep 1
OP2_ADMIN=$(free_port)
fleet_conf op2 broker.client_id=keel-fleet-2 broker.certificate=client2/client.crt broker.chain=client2/chain.pem \
    broker.key=client2/client.key "admin.listen=127.0.0.1:$OP2_ADMIN" "update_server.listen=127.0.0.1:$(free_port)"
fleet_start op2
BEFORE=$(stored)
publish --devices "$T/sim" --messages 100 --seq-start 2000
ACKED=$(pubval acked)
fleet_wait_sql "SELECT count(*) FROM messages" "$((BEFORE + ACKED))" 60
# each instance took a share: its own counter (admin API of each)
S1=$("$KEEL" fleet --json status | python3 -c 'import json,sys; print(json.load(sys.stdin)["ingest"]["stored"])')
S2=$(KEEL_FLEET_SERVER="https://127.0.0.1:$OP2_ADMIN" "$KEEL" fleet --json status |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["ingest"]["stored"])')
[ "$S2" -gt 0 ] && [ "$S2" -lt "$ACKED" ] || fail "the second instance stored $S2 of $ACKED messages: no split"
fleet_stop op2
note "two instances in one share group: $ACKED messages, every one stored once; the second instance took $S2"

fleet_stop op
note "keel-fleetd ingest: all checks passed"

#!/bin/sh
# keeld with its cloud link and the thermostat, against real mosquitto (mutual
# TLS, per-device ACL) on 127.0.0.1: consented telemetry arrives; a command
# from the fleet reaches the app and the product state comes back retained;
# with the broker gone and a small outbox, the oldest telemetry is dropped
# first, events are kept, and the receiver is told how many were dropped
# (the seq gaps match); a factory reset sends the cloud erase request through
# the outbox and shows the fleet's receipt (5.9-1, 5.11-2, 5.11-4, 6-4).
. "$(dirname "$0")/keeld_lib.sh"
. "$(dirname "$0")/broker_lib.sh"
: "${KEEL_SOURCE_DIR:?KEEL_SOURCE_DIR must point to the source tree}"
THERMOSTAT=$KEEL_BUILD_DIR/examples/thermostat/thermostat
[ -x "$THERMOSTAT" ] || fail "thermostat not built: $THERMOSTAT"
A=/api/v1
NEWPW="Correct-Horse-Battery-42"

provision thermo-1 $FAST_ARGON --product "$KEEL_SOURCE_DIR/examples/thermostat/product.json"
note "the new keys are checked before keeld starts"
for bad in "link.broker=127.0.0.1" "link.broker=127.0.0.1:0" "link.broker=[::1" "ipc.user=no-such-user-keel" \
           "ipc.group=no-such-group-keel" "link.backoff_base=10 -o link.backoff_cap=5"; do
    # shellcheck disable=SC2086
    expect_rc 2 "$KEELD" --config "$CONF" --check -o $bad
done
expect_rc 0 "$KEELD" --config "$CONF" --check -o link.broker=broker.example:8883 -o ipc.user=0 -o ipc.group=root
broker_pki "$T/f"
broker_start
SOCK=$T/app.sock
LINK="-o link.broker=127.0.0.1:$BROKER_PORT -o link.first_connect=0 -o link.backoff_cap=2 -o ipc.socket=$SOCK"

# fleet_pub TOPIC PAYLOAD: publish as the fleet (QoS 1).
fleet_pub() {
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -i "keel-test-pub-$$" -t "$1" -m "$2" \
        --cafile "$T/f/service-ca/root.crt" \
        --cert "$BROKER_DIR/clients/fleet.crt" --key "$BROKER_DIR/clients/fleet.key" 2>"$T/pub.err" ||
        broker_die "mosquitto_pub $1: $(cat "$T/pub.err")"
}
# wait_for FILE PYTHON-CONDITION WHAT: until the condition over the
# subscriber's envelopes `m` (a list of (topic, retain, payload-dict)) holds.
wait_for() {
    broker_wait "$1" "(t, r, e)" "$2" || broker_die "$3"
}

# shellcheck disable=SC2086
start_keeld $LINK
login_ok "$LABEL_PW"
change_password "$TOKEN" "$LABEL_PW" "$NEWPW"
login_ok "$NEWPW"
TOK=$TOKEN

note "the thermostat's telemetry arrives once the owner consents (6-2, 6-4)"
broker_sub "keel/v1/$DEV_ID/#" "$T/sub.txt"
expect_http 200 PUT $A/privacy/consent '{"purpose":"climate","given":true,"version":"1"}'
"$THERMOSTAT" --socket "$SOCK" --interval 0.3 --status "$T/thermo.json" >"$T/thermo.log" 2>&1 &
THERMO_PID=$!
EXTRA_PIDS="$EXTRA_PIDS $THERMO_PID"
wait_for "$T/sub.txt" "any(t.endswith('/telemetry') and set(e['data']) == {'temperature','setpoint','heating'} for t, r, e in m)" \
    "no telemetry from the thermostat"

note "a command from the fleet reaches the app; the new state comes back retained"
fleet_pub "keel/v1/$DEV_ID/cmd/set" '{"setpoint":23.5}'
wait_for "$T/sub.txt" "any(t.endswith('/state') and e.get('setpoint') == 23.5 for t, r, e in m)" \
    "the setpoint command did not come back as state"
# The app publishes its new state before it rewrites its status file (every
# --interval): give the file a few intervals to catch up.
i=0
until python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(d["setpoint"] != 23.5)' "$T/thermo.json" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -lt 50 ] || fail "the thermostat did not take the setpoint: $(cat "$T/thermo.json")"
    sleep 0.1
done
wait_for "$T/sub.txt" "any(t.endswith('/telemetry') and e['data']['setpoint'] == 23.5 for t, r, e in m)" \
    "telemetry does not show the new setpoint"
# Commands that are not JSON or are too big never reach the app.
fleet_pub "keel/v1/$DEV_ID/cmd/set" 'not json'
grep -q "command set: payload is not JSON" "$KEELD_LOG" || sleep 1
grep -q "command set: payload is not JSON" "$KEELD_LOG" || die_log "a non-JSON command was not refused"
kill -TERM "$THERMO_PID"
wait "$THERMO_PID" || fail "the thermostat did not stop cleanly: $(cat "$T/thermo.log")"
broker_sub_stop

note "offline with a 10-message outbox: 30 telemetry + 2 events queued"
i=0
while :; do # everything the thermostat sent is delivered first
    expect_http 200 GET $A/link -
    [ "$(jget "d['outbox']['pending']")" = 0 ] && break
    i=$((i + 1)); [ $i -lt 100 ] || die_log "the outbox did not drain while online"; sleep 0.1
done
FIRST=$(jget "d['outbox']['next_seq']")
broker_stop
stop_keeld
# shellcheck disable=SC2086
start_keeld $LINK -o outbox.max_messages=10
login_ok "$NEWPW" # sessions live in keeld's memory only
TOK=$TOKEN
for i in $(seq 1 15); do expect_rc 0 "$KEEL" app publish --socket "$SOCK" "{\"temperature\":$i.5}"; done
expect_rc 0 "$KEEL" app event --socket "$SOCK" '{"type":"door-open"}'
for i in $(seq 16 30); do expect_rc 0 "$KEEL" app publish --socket "$SOCK" "{\"temperature\":$i.5}"; done
expect_rc 0 "$KEEL" app event --socket "$SOCK" '{"type":"filter-due"}'
expect_http 200 GET $A/link -
jtrue "d['outbox']['pending'] == 10" "the outbox is not at its bound of 10"

note "the broker is back: 8 newest telemetry + both events; the drops are reported and match the seq gaps"
kill -STOP "$KEELD_PID"
broker_start
broker_sub "keel/v1/$DEV_ID/#" "$T/sub2.txt"
kill -CONT "$KEELD_PID"
wait_for "$T/sub2.txt" "len([1 for t, r, e in m if not t.endswith('/state')]) >= 10" "the 10 queued messages did not arrive"
python3 - "$T/sub2.txt" "$FIRST" <<'EOF' || fail "the drop policy or its report is wrong"
import json, sys
m = [json.loads(l.split("\t", 2)[2]) for l in open(sys.argv[1]) if not l.split("\t")[0].endswith("/state")]
# keeld's own boot event (queued first at every start) holds one of the 10 places
assert [e["data"]["type"] for e in m if e["kind"] == "event"][:1] == ["boot"], "no boot event first: %s" % m
m = [e for e in m if e["data"].get("type") != "boot"]
tel = [e for e in m if e["kind"] == "telemetry"]
ev = [e for e in m if e["kind"] == "event"]
assert [e["data"]["type"] for e in ev] == ["door-open", "filter-due"], "events lost: %s" % ev
assert [e["data"]["temperature"] for e in tel] == [i + 0.5 for i in range(24, 31)], \
    "not the 7 newest telemetry: %s" % [e["data"]["temperature"] for e in tel]
last = max(m, key=lambda e: e["seq"])
assert last["dropped"]["telemetry"] == 23 and last["dropped"]["event"] == 0, "dropped totals: %s" % last["dropped"]
seqs = [int(sys.argv[2])] + sorted(e["seq"] for e in m)
gaps = sum(b - a - 1 for a, b in zip(seqs, seqs[1:]))
assert gaps == 23, "seq gaps %d do not match the 23 reported drops" % gaps
print("-- received the boot event, 7 telemetry + 2 events; dropped.telemetry = 23 = the seq gaps")
EOF
broker_sub_stop

note "factory reset: the erase request reaches the fleet; its receipt is shown (5.11-2, 5.11-4)"
broker_sub "keel/v1/$DEV_ID/events" "$T/ev.txt"
expect_http 202 POST $A/factory-reset "{\"password\": $(json_str "$NEWPW")}"
REQ=$(jget "d['receipt']['cloud']['request']")
wait_for "$T/ev.txt" "any(e['data'].get('type') == 'erase-request' and e['data']['id'] == '$REQ' for t, r, e in m)" \
    "the erase request did not reach the fleet"
fleet_pub "keel/v1/$DEV_ID/cmd/keel/erase-receipt" "{\"id\":\"$REQ\",\"erased\":true,\"records\":42}"
i=0
until grep -q "the fleet confirmed the cloud erase $REQ" "$KEELD_LOG"; do
    i=$((i + 1)); [ $i -lt 100 ] || die_log "the erase receipt was not taken"; sleep 0.1
done
login_ok "$LABEL_PW"
change_password "$TOKEN" "$LABEL_PW" "$NEWPW"
login_ok "$NEWPW"
TOK=$TOKEN
expect_http 200 GET $A/privacy/erase -
jtrue "d['requests'][0]['id'] == '$REQ' and d['requests'][0]['confirmed'] > 0" "the receipt is not shown as confirmed"
stop_keeld
note "PASS keeld_cloud"

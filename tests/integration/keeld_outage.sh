#!/bin/sh
# Issue 5, the outage test (5.9-1, 5.9-2): with the broker gone, the app
# publishes 10,000 telemetry messages through keeld's socket while keeld is
# killed with SIGKILL five times at random moments and restarted; then the
# broker comes back and a subscriber must receive all 10,000, each exactly
# once by (device, seq). Meanwhile the local API and the thermostat keep
# working. Real mosquitto (mutual TLS, per-device ACL) on 127.0.0.1.
. "$(dirname "$0")/keeld_lib.sh"
. "$(dirname "$0")/broker_lib.sh"

N=${OUTAGE_MESSAGES:-10000}
KILLS=${OUTAGE_KILLS:-5}
THERMOSTAT=$KEEL_BUILD_DIR/examples/thermostat/thermostat
[ -x "$THERMOSTAT" ] || fail "thermostat not built: $THERMOSTAT"

# A product whose telemetry rests on the contract (no consent gate): this test
# is about delivery, keeld_privacy.sh about consent.
cat >"$T/product.json" <<'EOF'
{
  "format": "keel-product-1",
  "model": "outage-1",
  "declaration": {
    "format": "keel-declaration-1",
    "product": "Outage test thermostat",
    "controller": {"name": "Keel tests", "contact": "tests@keel.invalid"},
    "consent_version": "1",
    "sensing": [{"id": "temperature", "description": "room temperature", "personal": true}],
    "categories": [{
      "id": "climate", "description": "room climate", "personal": true, "sensitive": false,
      "purpose": "show the room temperature in the app", "recipients": ["the vendor's cloud"],
      "legal_basis": "contract", "retention_days": 30
    }],
    "telemetry": [
      {"field": "n", "type": "integer", "category": "climate", "why": "message number (test)"},
      {"field": "temperature", "type": "number", "category": "climate", "why": "room temperature"},
      {"field": "setpoint", "type": "number", "category": "climate", "why": "target temperature"},
      {"field": "heating", "type": "boolean", "category": "climate", "why": "heating on or off"}
    ]
  },
  "settings": {}
}
EOF
provision outage-1 $FAST_ARGON --product "$T/product.json"
broker_pki "$T/f"
broker_start
SOCK=$T/app.sock
# Short backoff windows keep the test quick; the timing itself is link_broker's subject.
LINK="-o link.broker=127.0.0.1:$BROKER_PORT -o link.first_connect=0 -o link.backoff_cap=2 -o ipc.socket=$SOCK"
# shellcheck disable=SC2086
start_keeld $LINK

wait_log() { # PATTERN SECONDS: until keeld's log has PATTERN (after the last mark)
    _i=0
    until tail -n +"$((LOG_MARK + 1))" "$KEELD_LOG" | grep -qE "$1"; do
        _i=$((_i + 1))
        [ $_i -lt $(($2 * 10)) ] || die_log "no '$1' in keeld's log within $2 s"
        sleep 0.1
    done
}
LOG_MARK=0
wait_log "link: online" 20

note "online: one message from the shell arrives at the subscriber"
broker_sub "keel/v1/$DEV_ID/telemetry" "$T/first.txt"
expect_rc 0 "$KEEL" app publish --socket "$SOCK" '{"n":-1,"temperature":20.5}'
i=0
until grep -q '"n":-1' "$T/first.txt"; do
    i=$((i + 1)); [ $i -lt 100 ] || broker_die "the first message did not arrive"; sleep 0.1
done
broker_sub_stop

note "outage: broker stopped; the thermostat runs; the app publishes $N messages; keeld is killed $KILLS times"
broker_stop
"$THERMOSTAT" --socket "$SOCK" --interval 0.2 --status "$T/thermo.json" >"$T/thermo.log" 2>&1 &
THERMO_PID=$!
EXTRA_PIDS="$EXTRA_PIDS $THERMO_PID"
# Paced over about 4 s, so the kills land while the app is publishing.
python3 "$HERE/app_flood.py" "$SOCK" "$N" "$T/flood.json" $((N / 4)) >"$T/flood.log" 2>&1 &
FLOOD_PID=$!
EXTRA_PIDS="$EXTRA_PIDS $FLOOD_PID"
k=0
during=0
while [ $k -lt "$KILLS" ]; do
    # a random moment 0.1-0.5 s into this keeld's life (the flood takes a few of them)
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.1, 0.5), 2))')"
    [ -f "$T/flood.json" ] || during=$((during + 1))
    kill -KILL "$KEELD_PID"
    wait "$KEELD_PID" 2>/dev/null || true
    KEELD_PID=
    k=$((k + 1))
    note "  kill -9 #$k ($(python3 -c 'import json,sys
try: print(len(json.load(open(sys.argv[1]))["seqs"]), "done")
except Exception: print("flood running")' "$T/flood.json"))"
    # shellcheck disable=SC2086
    start_keeld $LINK
done

[ "$during" -ge 3 ] || fail "only $during of $KILLS kills came while the app was publishing"
note "offline, the local API answers and the thermostat keeps regulating"
http GET /api/v1/status -
[ "$CODE" = 200 ] || die_log "GET /api/v1/status answered $CODE while offline"
r1=$(python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); print(d["published"] + d["missed"])' "$T/thermo.json" 2>/dev/null) ||
    fail "the thermostat wrote no status: $(cat "$T/thermo.log")"
sleep 1
r2=$(python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); print(d["published"] + d["missed"])' "$T/thermo.json")
[ "$r2" -gt "$r1" ] || fail "the thermostat stopped regulating while offline ($r1 -> $r2 readings)"

i=0
while kill -0 "$FLOOD_PID" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 1800 ] || fail "the app did not get all $N messages acknowledged in 180 s"; sleep 0.1
done
wait "$FLOOD_PID" || fail "the app failed: $(cat "$T/flood.log")"
[ -f "$T/flood.json" ] || fail "the app wrote no result: $(cat "$T/flood.log")"
note "  $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("app: %d acknowledged, %d resent after a kill, %d recognised as duplicates" % (d["acked"], d["resent"], d["duplicates"]))' "$T/flood.json")"

note "the broker is back: everything queued arrives"
# keeld is frozen while the broker starts and the subscriber subscribes, so
# nothing is delivered before someone listens.
kill -STOP "$KEELD_PID"
broker_start
broker_sub "keel/v1/$DEV_ID/telemetry" "$T/sub.txt"
kill -CONT "$KEELD_PID"
start=$(date +%s)
python3 - "$T/flood.json" "$T/sub.txt" "$N" "$DEV_ID" <<'EOF' || broker_die "not every message arrived exactly once"
import json, sys, time
flood, subf, n, dev = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
want = {int(i): s for i, s in json.load(open(flood))["seqs"].items()}
deadline = time.time() + 240
while True:
    got, copies = {}, 0
    with open(subf) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) != 3:
                continue
            env = json.loads(parts[2])
            if env["device"] != dev or "n" not in env["data"] or env["data"]["n"] < 0:
                continue
            if env["seq"] in got:
                copies += 1  # a resend after a lost PUBACK: the receiver drops it by seq
                assert got[env["seq"]] == env["data"]["n"], "seq %d carried two messages" % env["seq"]
                continue
            got[env["seq"]] = env["data"]["n"]
    if len(got) >= n or time.time() > deadline:
        break
    time.sleep(0.5)
ns = sorted(got.values())
missing = sorted(set(range(n)) - set(ns))
assert not missing, "%d messages missing, e.g. %s" % (len(missing), missing[:10])
assert len(ns) == n, "%d distinct seqs for %d messages: a message was queued twice" % (len(ns), n)
assert all(got[want[i]] == i for i in range(n)), "a message arrived under another seq than keeld told the app"
print("-- subscriber: %d messages, each exactly once by (device, seq); %d resent copies dropped by seq" % (n, copies))
EOF
note "  drained in $(($(date +%s) - start)) s"

kill -TERM "$THERMO_PID"
wait "$THERMO_PID" || fail "the thermostat did not stop cleanly: $(cat "$T/thermo.log")"
stop_keeld
note "PASS keeld_outage"

# The cloud link (src/link/link.c) against a real mosquitto with mutual TLS:
# delivery with seq 1..N and the retained state; a broker from another
# factory (MITM), a broker certificate for another name, a revoked device,
# a device writing into another device's topic (PUBACK 135), kicks right
# after CONNACK (backoff grows), and a fleet of clients reconnecting after a
# broker restart (spread, not in one burst). Everything on 127.0.0.1.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/broker_lib.sh"

: "${KEEL_BUILD_DIR:?KEEL_BUILD_DIR must point to the build tree}"
PROBE=${LINK_PROBE:-$KEEL_BUILD_DIR/tests/link_probe}
[ -x "$PROBE" ] || fail "link_probe not built: $PROBE"
FLEET=${LINK_FLEET:-200}

# probe RC ARGS...: runs link_probe; its JSON line in $T/out (stderr in $T/err).
probe() {
    _want=$1
    shift
    expect_rc "$_want" "$PROBE" --broker "127.0.0.1:$BROKER_PORT" --first 0 "$@"
}

# pget EXPR: a Python expression over the probe's JSON (as d).
pget() {
    python3 -c 'import json,sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(eval(sys.argv[2]))' "$T/out" "$1" || fail "link_probe printed no JSON: $(cat "$T/out")"
}

ptrue() {
    [ "$(pget "bool($1)")" = True ] || { cat "$T/err" >&2; fail "$2 (probe: $(cat "$T/out"))"; }
}

note "factory, devices, broker"
expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model M1 --count 2 --out "$T/b" $FAST_ARGON
A=$(sed -n 2p "$T/b/labels.csv" | cut -d, -f1)
B=$(sed -n 3p "$T/b/labels.csv" | cut -d, -f1)
CONF_A=$T/b/$A/keeld.conf
CONF_B=$T/b/$B/keeld.conf
broker_pki "$T/f"
broker_start

note "delivery: seq 1..5 on the device's telemetry topic, the state retained"
broker_sub 'keel/v1/#' "$T/sub.txt"
probe 0 --config "$CONF_A" --count 5 --timeout 15 --state '{"power":"on"}'
ptrue "d['published'] == 5 and d['refused'] == 0 and d['pending'] == 0" "not all 5 messages were acknowledged"
ptrue "d['connects'] == 1 and d['auth_failures'] == 0" "one clean connection expected"
sleep 0.5
broker_sub_stop
python3 - "$T/sub.txt" "$A" <<'EOF' || fail "the subscriber did not get the envelopes (see above)"
import json, sys
lines = [l.rstrip("\n").split("\t", 2) for l in open(sys.argv[1]) if l.strip()]
dev = sys.argv[2]
tele = [json.loads(p) for t, r, p in lines if t == "keel/v1/%s/telemetry" % dev]
seqs = sorted(m["seq"] for m in tele)
ok = seqs == [1, 2, 3, 4, 5] and all(m["device"] == dev and m["kind"] == "telemetry" for m in tele)
ok = ok and sorted(m["data"]["probe"] for m in tele) == [1, 2, 3, 4, 5]
state = [p for t, r, p in lines if t == "keel/v1/%s/state" % dev]
ok = ok and len(state) == 1 and json.loads(state[0]) == {"power": "on"}
if not ok:
    print(open(sys.argv[1]).read(), file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
# The state is retained: a subscriber that comes later still gets it, flagged.
broker_sub "keel/v1/$A/state" "$T/state.txt"
sleep 0.5
broker_sub_stop
grep -q "^keel/v1/$A/state	1	{\"power\":\"on\"}$" "$T/state.txt" ||
    fail "the state was not retained: $(cat "$T/state.txt")"

note "MITM: a broker certificate from another factory's service CA is refused"
expect_rc 0 "$KEEL" factory init --dir "$T/f2" --org Mallory
broker_server_cert "$T/f2" 127.0.0.1 "$BROKER_DIR/mitm"
BROKER_CERT_DIR=$BROKER_DIR/mitm
broker_restart
broker_mark
probe 1 --config "$CONF_A" --count 3 --timeout 4 --base 0.5 --cap 1
ptrue "d['published'] == 0 and d['pending'] == 3 and d['connects'] == 0" "something was sent to the MITM broker"
ptrue "d['auth_failures'] >= 1 and d['auth_failures'] == d['attempts']" "the MITM broker was not counted as an auth failure"
ptrue "'not trusted' in d['last_error']" "no 'not trusted' diagnosis"
[ "$(broker_connects "$A")" -eq 0 ] || broker_die "the device completed an MQTT CONNECT to the MITM broker"
# The warning is logged once per streak, not once per attempt.
[ "$(grep -c 'broker certificate not trusted' "$T/err")" -eq 1 ] || fail "auth failure not logged exactly once: $(cat "$T/err")"

note "a broker certificate for another name is refused; --server-name accepts it"
BROKER_CERT_DIR=$BROKER_DIR/wrongname
broker_restart
BROKER_SUB_INSECURE=1 broker_sub 'keel/v1/#' "$T/sub2.txt"
broker_mark
probe 1 --config "$CONF_A" --count 3 --timeout 3 --base 0.5 --cap 1
ptrue "d['published'] == 0 and d['auth_failures'] >= 1 and 'mismatch' in d['last_error']" "the wrong name was not refused"
[ "$(broker_connects "$A")" -eq 0 ] || broker_die "the device sent CONNECT to a broker with the wrong name"
# An empty name would clear OpenSSL's host check: refused at start.
probe 2 --config "$CONF_A" --count 0 --timeout 3 --server-name ""
grep -q "server_name" "$T/err" || fail "an empty server name was not refused: $(cat "$T/err")"
probe 0 --config "$CONF_A" --count 3 --timeout 10 --server-name broker.invalid
# 3 queued now + 3 + 3 kept from the two refused brokers
ptrue "d['published'] == 9 and d['auth_failures'] == 0" "the configured server name was not accepted"
# the messages refused by two brokers were kept and came through now, and only they
broker_sub_stop
python3 - "$T/sub2.txt" <<'EOF' || fail "expected seq 6..14 once each: $(cat "$T/sub2.txt")"
import json, sys
seqs = sorted(json.loads(l.split("\t", 2)[2])["seq"] for l in open(sys.argv[1]) if l.strip())
sys.exit(0 if seqs == list(range(6, 15)) else 1)
EOF

note "a revoked device is refused (CRL); the other device still connects"
broker_revoke "$T/f" "$T/b/$B/identity/device.crt"
BROKER_CERT_DIR=$BROKER_DIR/server
broker_restart
broker_mark
probe 1 --config "$CONF_B" --count 2 --timeout 4 --base 0.5 --cap 1
ptrue "d['published'] == 0 and d['connects'] == 0 and d['auth_failures'] >= 1" "the revoked device was not refused"
# (the streak's first auth failure is logged; a later attempt may only see the reset)
grep -q "refused our certificate (TLS alert: certificate revoked)" "$T/err" || fail "no 'revoked' diagnosis: $(cat "$T/err")"
[ "$(broker_count "certificate verify failed")" -ge 1 ] || broker_die "the broker did not refuse the certificate"
probe 0 --config "$CONF_A" --count 1 --timeout 10
ptrue "d['published'] == 1" "the CRL locked out a device that is not revoked"

note "publishing into another device's topic: PUBACK 135, dropped, not delivered"
broker_sub 'keel/v1/#' "$T/sub3.txt"
probe 0 --config "$CONF_A" --count 2 --timeout 10 --topic "keel/v1/$B/telemetry"
ptrue "d['refused'] == 2 and d['published'] == 0 and d['last_reason'] == 135 and d['pending'] == 0" \
    "the ACL refusal was not seen as PUBACK 135"
probe 0 --config "$CONF_A" --count 1 --timeout 10
sleep 0.5
broker_sub_stop
! grep -q "keel/v1/$B/" "$T/sub3.txt" || fail "a message reached another device's topic"
grep -q "keel/v1/$A/telemetry" "$T/sub3.txt" || fail "the subscriber saw nothing at all (test broken?)"

note "commands from the fleet: live ones only, any payload up to 64 KiB, bigger ones never sent"
P=keel/v1/$A/cmd
printf '{"old":true}' >"$T/c.stale"
printf '{"delay":0}' >"$T/c.reboot"
printf '21.5 C' >"$T/c.temp"
printf '{}' >"$T/c.after"
head -c 65536 /dev/zero | tr '\0' 'a' >"$T/c.cap"
head -c $((32 * 1024 * 1024)) /dev/zero >"$T/c.big"
# A retained command would run again after every reconnect.
broker_pub "$P/stale" "$T/c.stale" -r
broker_mark
"$PROBE" --config "$CONF_A" --broker "127.0.0.1:$BROKER_PORT" --first 0 --count 0 --until-online --hold 6 \
    --timeout 20 --print-commands >"$T/cmd.out" 2>"$T/cmd.err" &
CMD_PID=$!
BROKER_SUB_PIDS="$BROKER_SUB_PIDS $CMD_PID"
i=0
until [ "$(broker_count "Received SUBSCRIBE from $A")" -ge 1 ]; do
    i=$((i + 1))
    [ $i -lt 100 ] || broker_die "the device did not subscribe within 10 s"
    sleep 0.1
done
broker_pub "$P/reboot" "$T/c.reboot"
broker_pub "$P/set/temp" "$T/c.temp"
broker_pub "$P/cap" "$T/c.cap"
broker_pub "$P/big" "$T/c.big"
broker_pub "$P/x/../y" "$T/c.reboot"
broker_pub "$P/after" "$T/c.after"
wait "$CMD_PID" || fail "link_probe failed: $(tail -n 5 "$T/cmd.err")"
cp "$T/cmd.out" "$T/out"
python3 - "$T/cmd.out" "$(sha256sum <"$T/c.cap" | cut -d' ' -f1)" <<'EOF' ||
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cmds = {c["command"]: c for c in lines if "command" in c}
ok = list(cmds) == ["reboot", "set/temp", "cap", "after"]
ok = ok and cmds["reboot"]["json"] and not cmds["set/temp"]["json"] and cmds["set/temp"]["len"] == 6
ok = ok and cmds["cap"]["len"] == 65536 and cmds["cap"]["sha256"] == sys.argv[2]
# the 32 MiB command never reached the device's memory
ok = ok and cmds["after"]["maxrss_kb"] - cmds["reboot"]["maxrss_kb"] < 16 * 1024
sys.exit(0 if ok else 1)
EOF
    { cat "$T/cmd.err" >&2; fail "wrong commands handed to the product: $(cat "$T/cmd.out")"; }
[ "$(broker_count "too large")" -ge 1 ] || broker_die "the broker did not drop the oversized command"

note "kicked right after CONNACK: backoff grows, no tight loop"
# Two clients with the same id take the session from each other: every
# connection is ended by the broker soon after its CONNACK.
broker_mark
probe 0 --config "$CONF_A" --twins --count 0 --until-online --hold 12 --timeout 12 --base 0.5 --cap 4 --stable 60
n=$(broker_connects "$A")
note "  $n sessions in 12 s; $(cat "$T/out")"
ptrue "d['connects'] >= 3 and d['disconnects'] >= 2" "the twins did not kick each other"
ptrue "d['max_attempt'] >= 3" "the attempt counter did not grow across kicks"
# Mean delays 0.25, 0.5, 1, 2, 2, ... s: about 8 attempts per client in 12 s.
# Resetting the counter on CONNACK (delays stay under 0.5 s) gives ~50 each.
[ "$n" -ge 3 ] && [ "$n" -le 36 ] || broker_die "$n sessions in 12 s: expected 3..36"
ptrue "d['attempts'] <= 40" "too many attempts"

note "$FLEET clients: jittered first connect, all reconnect after a broker restart, spread out"
expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model M1 --count "$FLEET" --out "$T/fleet" $FAST_ARGON
broker_mark
"$PROBE" --dir "$T/fleet" --clients "$FLEET" --broker "127.0.0.1:$BROKER_PORT" --count 0 --until-online \
    --min-connects 2 --first 3 --base 1 --cap 8 --timeout 90 >"$T/fleet.json" 2>"$T/fleet.err" &
FLEET_PID=$!
BROKER_SUB_PIDS="$BROKER_SUB_PIDS $FLEET_PID"
i=0
until [ "$(broker_count 'New client connected')" -ge "$FLEET" ]; do
    i=$((i + 1))
    [ $i -lt 300 ] || broker_die "not all $FLEET clients connected within 30 s"
    kill -0 "$FLEET_PID" 2>/dev/null || fail "link_probe died: $(cat "$T/fleet.err")"
    sleep 0.1
done
first_bins=$(tail -n +"$((BROKER_MARK + 1))" "$BROKER_LOG" | grep 'New client connected' | cut -c1-19 | sort | uniq -c | sort -rn | head -1 | awk '{print $1}')
broker_stop
sleep 2
broker_mark
broker_start
wait "$FLEET_PID" && rc=0 || rc=$?
cp "$T/fleet.json" "$T/out"
[ "$rc" -eq 0 ] || { tail -n 5 "$T/fleet.err" >&2; fail "not all clients reconnected (rc $rc): $(cat "$T/out")"; }
ptrue "d['online'] == $FLEET and d['connects'] == 2 * $FLEET and d['auth_failures'] == 0" "fleet reconnect incomplete"
peak=$(tail -n +"$((BROKER_MARK + 1))" "$BROKER_LOG" | grep 'New client connected' | cut -c1-19 | sort | uniq -c | sort -rn | head -1 | awk '{print $1}')
total=$(broker_count 'New client connected')
note "  first connects: busiest second $first_bins of $FLEET; reconnects: busiest second $peak of $total; $(pget "'%.1f s' % d['elapsed']")"
# All at once would be $FLEET in one second.
[ "$first_bins" -le $((FLEET * 3 / 4)) ] || fail "the first connects came in one burst ($first_bins of $FLEET in one second)"
[ "$peak" -le $((FLEET * 3 / 4)) ] || fail "the reconnects came in one burst ($peak of $FLEET in one second)"
[ "$total" -eq "$FLEET" ] || broker_die "$total sessions after the restart, expected $FLEET"

note "link_broker: all passed"

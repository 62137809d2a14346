# The cloud link (src/link/link.c) against a scripted, misbehaving broker
# (mqtt_fake_broker.py, mutual TLS with the factory's certificates) on
# 127.0.0.1: the SNI it sends, the Maximum Packet Size and subscription
# options it announces, no TLS < 1.2 and no non-AEAD suite, a broker that
# drops the connection at every step of a session (100+ reconnects, no
# descriptor leaked, every message delivered), PUBACK refusals decided per
# reason code, and commands the link must not hand to the product.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/broker_lib.sh"

: "${KEEL_BUILD_DIR:?KEEL_BUILD_DIR must point to the build tree}"
: "${KEEL_SOURCE_DIR:?KEEL_SOURCE_DIR must point to the source tree}"
PROBE=${LINK_PROBE:-$KEEL_BUILD_DIR/tests/link_probe}
FAKE=$KEEL_SOURCE_DIR/tests/integration/mqtt_fake_broker.py
[ -x "$PROBE" ] || fail "link_probe not built: $PROBE"
FAKE_PID=
FAKE_N=0

# fake_start SCRIPT [ARGS...]: the fake broker with the certificate in
# $BROKER_CERT_DIR; sets FAKE_PORT, FAKE_LOG. Stopped on exit by broker_lib.
fake_start() {
    FAKE_N=$((FAKE_N + 1))
    FAKE_LOG=$T/fake$FAKE_N.log
    _pf=$T/fake$FAKE_N.port
    _script=$1
    shift
    python3 "$FAKE" --port-file "$_pf" --log "$FAKE_LOG" --cert "$BROKER_CERT_DIR/chain.pem" \
        --key "$BROKER_CERT_DIR/server.key" --cafile "$BROKER_DIR/device-ca.pem" --script "$_script" \
        --prefix "keel/v1/$A/cmd/" "$@" 2>"$T/fake$FAKE_N.err" &
    FAKE_PID=$!
    BROKER_SUB_PIDS="$BROKER_SUB_PIDS $FAKE_PID"
    _i=0
    until [ -s "$_pf" ]; do
        kill -0 "$FAKE_PID" 2>/dev/null || fail "the fake broker exited: $(cat "$T/fake$FAKE_N.err")"
        _i=$((_i + 1))
        [ $_i -lt 100 ] || fail "the fake broker did not listen within 10 s"
        sleep 0.1
    done
    FAKE_PORT=$(cat "$_pf")
}

fake_stop() {
    kill -TERM "$FAKE_PID" 2>/dev/null || true
    wait "$FAKE_PID" 2>/dev/null || true
}

probe() {
    _want=$1
    shift
    expect_rc "$_want" "$PROBE" --config "$CONF_A" --broker "127.0.0.1:$FAKE_PORT" --first 0 "$@"
}

# pget EXPR / ptrue EXPR MSG: over the probe's report (its last line), as d.
pget() {
    python3 -c 'import json,sys
d = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(eval(sys.argv[2]))' "$T/out" "$1" || fail "link_probe printed no JSON: $(cat "$T/out")"
}

ptrue() {
    [ "$(pget "bool($1)")" = True ] || { tail -n 20 "$T/err" >&2; fail "$2 (probe: $(tail -n 1 "$T/out"))"; }
}

# ftrue EXPR MSG: EXPR over the fake broker's events (ev: the list of dicts).
ftrue() {
    python3 - "$FAKE_LOG" "$1" <<'EOF' || fail "$2 (fake broker log: $FAKE_LOG)"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = eval(sys.argv[2])
if not ok:
    for e in ev[-30:]:
        print(json.dumps(e), file=sys.stderr)
sys.exit(0 if ok else 1)
EOF
}

note "factory, device, certificates"
expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model M1 --count 1 --out "$T/b" $FAST_ARGON
A=$(sed -n 2p "$T/b/labels.csv" | cut -d, -f1)
CONF_A=$T/b/$A/keeld.conf
broker_pki "$T/f"

note "SNI: none for an address; server_name when set. CONNECT and SUBSCRIBE options"
fake_start serve
probe 0 --count 1 --timeout 10
ftrue "[e['sni'] for e in ev if e['event'] == 'tls'] == [None]" "an IP literal was sent as SNI"
ftrue "[e['max_packet'] for e in ev if e['event'] == 'connect'] == [66560]" \
    "CONNECT did not announce Maximum Packet Size 66560"
# retain handling 2 (bits 4-5 = 0x20): the broker sends no retained command at subscribe
ftrue "[(e['topic'], e['options'] & 0x30) for e in ev if e['event'] == 'subscribe'] == [('keel/v1/$A/cmd/#', 0x20)]" \
    "the command subscription asks for retained messages"
ftrue "[e['version'] for e in ev if e['event'] == 'tls'] == ['TLSv1.3']" "not TLS 1.3"
fake_stop
BROKER_CERT_DIR=$BROKER_DIR/wrongname
fake_start serve
probe 0 --count 1 --timeout 10 --server-name broker.invalid
ftrue "[e['sni'] for e in ev if e['event'] == 'tls'] == ['broker.invalid']" "the server name was not sent as SNI"
fake_stop
BROKER_CERT_DIR=$BROKER_DIR/server

note "no TLS 1.1, no non-AEAD suite: nothing is sent"
fake_start serve --tls-max 1.1
probe 1 --count 1 --timeout 3 --base 0.5 --cap 1
ptrue "d['connects'] == 0 and d['published'] == 0 and d['attempts'] >= 1" "the link spoke TLS 1.1"
ftrue "not [e for e in ev if e['event'] in ('tls', 'connect')]" "a TLS 1.1 handshake completed"
fake_stop
fake_start serve --tls-max 1.2 --ciphers 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:AES128-GCM-SHA256'
probe 1 --count 1 --timeout 3 --base 0.5 --cap 1
ptrue "d['connects'] == 0 and d['published'] == 0" "the link accepted a CBC or non-ECDHE suite"
ftrue "not [e for e in ev if e['event'] in ('tls', 'connect')]" "a handshake with a weak suite completed"
fake_stop

note "the broker drops the connection at every step, 108 times; then serves"
steps=hello_close,tcp_close,tls_close,connack_close,suback_close,half_close,disconnect_137,pub_close_2,disconnect_0
script=
for _ in 1 2 3 4 5 6 7 8 9 10 11 12; do script="$script$steps,"; done
fake_start "${script}serve"
probe 0 --count 20 --inflight 4 --base 0.01 --cap 0.02 --keepalive 5 --timeout 120
note "  $(tail -n 1 "$T/out")"
# 20 + the 2 queued while the TLS 1.1 and weak-suite brokers were refused
ptrue "d['published'] == 22 and d['pending'] == 0" "not every message was delivered"
ptrue "d['attempts'] >= 109" "fewer attempts than the broker's script"
ptrue "d['fds_after'] == d['fds_before']" "descriptors leaked across reconnects"
ftrue "set(range(3, 25)) == {e['seq'] for e in ev if e['event'] == 'publish' and e['rc'] == 0}" \
    "the fake broker did not acknowledge seq 3..24"
ftrue "sum(e['event'] == 'accept' for e in ev) >= 109" "fewer connections than the script"
fake_stop

note "PUBACK refusals per reason code: 135 drops, 151/137/128/131 keep and resend"
fake_start serve --codes '1:151,151;2:135;3:137;4:128,131'
probe 0 --count 5 --inflight 1 --base 0.2 --cap 0.5 --timeout 30
ptrue "d['published'] == 4 and d['refused'] == 1 and d['deferred'] == 5 and d['pending'] == 0" \
    "transient refusals were dropped or final ones kept"
ptrue "d['connects'] == 1" "a refusal needed a reconnect"
ftrue "[e['rc'] for e in ev if e['event'] == 'publish' and e['nth'] == 1] == [151, 151, 0]" \
    "the first message was not resent until accepted"
ftrue "[e['rc'] for e in ev if e['event'] == 'publish' and e['nth'] == 2] == [135]" \
    "the second message was resent after a final refusal"
fake_stop

note "commands the product never sees: before CONNACK, retained, bad names, another device's"
P=keel/v1/$A/cmd/
LONG=$(python3 -c 'print("n" * 65)')
CMDS=$(python3 -c 'import json, sys
p, other, long = sys.argv[1:4]
print(json.dumps([[p + "ok", "{\"a\":1}", False], [p + "a+b", "{}", False], [p + "#", "{}", False],
                  [p + "x//y", "{}", False], [p + "../etc", "{}", False], [p + "stale", "{}", True],
                  [other, "{}", False], [p + "set/temp", "not json", False], [p + long, "{}", False],
                  [p + "done", "{}", False]]))' "$P" "keel/v1/aaaaaaaaaaaaaaaaaaaaaaaaaa/cmd/x" "$LONG")
# libmosquitto treats a PUBLISH before CONNACK as a protocol error: that
# connection fails; the next one gets the commands. (A topic with a control
# character ends the connection in libmosquitto too: "Malformed UTF-8".)
fake_start early_cmd,cmds --commands "$CMDS"
probe 0 --count 0 --until-online --hold 3 --timeout 10 --print-commands
ptrue "d['connects'] == 1 and d['attempts'] == 2" "the connection with a command before CONNACK was not refused"
python3 - "$T/out" <<'EOF' || fail "wrong commands handed to the product: $(cat "$T/out")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cmds = [(c["command"], c["len"], c["json"]) for c in lines if "command" in c]
sys.exit(0 if cmds == [("ok", 7, True), ("set/temp", 8, False), ("done", 2, True)] else 1)
EOF
ftrue "[e['sni'] for e in ev if e['event'] == 'tls'] == [None, None]" "not two TLS sessions"
fake_stop

note "link_faults: all passed"

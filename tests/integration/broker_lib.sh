# A real MQTT broker (mosquitto) for the integration tests: mutual TLS with
# the factory's certificates, per-device ACLs, optionally a CRL. POSIX sh;
# source it AFTER lib.sh or keeld_lib.sh (it chains their exit cleanup).
# The broker listens on 127.0.0.1 only, on a free port; it and every
# subscriber started here are stopped (by pid) on every exit path.
#
#   broker_pki F          F: a factory made by `$KEEL factory init --dir F`.
#                         Writes, under $BROKER_DIR:
#                           server/      broker certificate for 127.0.0.1 (service CA)
#                           wrongname/   broker certificate for broker.invalid (service CA)
#                           device-ca.pem  the broker's cafile: device root + issuing CA
#                           clients/fleet.{crt,key}  the test subscriber's identity
#                         and points BROKER_CERT_DIR at server/.
#   broker_client_cert F NAME
#                         A client certificate CN=NAME from F's device issuing
#                         CA (clientAuth), in $BROKER_DIR/clients/NAME.{crt,key}.
#                         "fleet" is made by broker_pki; device ids are 26
#                         base32 characters, so such names never collide.
#   broker_server_cert F NAME DIR
#                         `$KEEL factory issue-server --name NAME` from F into DIR
#                         (server.crt, server.key, chain.pem, ca.pem), with
#                         $BROKER_ISSUE_ARGS added (e.g. --passphrase-env VAR).
#   broker_start          Writes mosquitto.conf and the ACL and starts mosquitto
#                         on 127.0.0.1:$BROKER_PORT (picked once, kept across
#                         restarts) with the certificate in $BROKER_CERT_DIR and,
#                         when $BROKER_CRL is set, that CRL. Waits until the port
#                         accepts. Sets BROKER_PID. Log: $BROKER_LOG (log_type all).
#                         With BROKER_CONF=FILE (e.g. packaging/mosquitto/keel-broker.conf)
#                         it renders FILE instead: /etc/mosquitto/keel/ becomes
#                         $BROKER_DIR/etc/ (ca.pem = device + service chains,
#                         server/ = $BROKER_CERT_DIR, keel-broker.acl from FILE's
#                         directory, crl.pem = $BROKER_CRL, which must be set),
#                         /var/lib/mosquitto/ becomes $BROKER_DIR/db/, "listener 8883"
#                         becomes 127.0.0.1:$BROKER_PORT, its log_* lines give way
#                         to the ones above; lines matching the grep -E pattern
#                         $BROKER_CONF_DROP are left out.
#   broker_stop           SIGTERM, wait (SIGKILL after 5 s).
#   broker_restart        stop + start (certificates and the CRL are read at start).
#   broker_revoke F CERT  Revokes CERT (a device certificate) with `openssl ca`
#                         under F's device issuing CA and writes the CRL to
#                         $BROKER_DIR/crl.pem; sets BROKER_CRL. Restart to apply.
#   broker_sub TOPIC FILE Starts mosquitto_sub (MQTT v5, QoS 1, as "fleet") on
#                         TOPIC, one line per message "topic<TAB>retain<TAB>payload"
#                         into FILE; returns once the broker logged its SUBSCRIBE.
#                         Sets SUB_PID (also stopped on exit). With
#                         BROKER_SUB_INSECURE=1 it skips the broker's name check
#                         (for a broker running the wrongname/ certificate).
#   broker_sub_stop       Stops the last subscriber.
#   broker_wait FILE ITEM COND
#                         Waits (30 s at most) until the Python condition COND
#                         holds over `m`: one ITEM per message broker_sub wrote to
#                         FILE, oldest first, ITEM a Python expression over `t`
#                         (topic), `r` (retain) and `e` (the JSON payload), e.g.
#                         "(t, r, e)" or "e['data']"; messages that are not JSON
#                         or lack what ITEM reads are passed over. Returns 1
#                         (after printing the last messages) when time runs out.
#   broker_pub TOPIC FILE [ARGS...]
#                         Publishes FILE's bytes to TOPIC (MQTT v5, QoS 1, as
#                         "fleet"); extra mosquitto_pub ARGS (e.g. -r: retained).
#   broker_mark           Remembers the log's current length (for broker_count).
#   broker_count PATTERN  Lines matching the grep -E PATTERN in the log since the
#                         last broker_mark.
#   broker_connects ID    MQTT sessions the broker accepted from client ID since
#                         the last broker_mark ("New client connected ... as ID").
#
# The ACL: a device (user = its certificate's CN = its id) may write
# keel/v1/<id>/telemetry|events|state and read keel/v1/<id>/cmd/#; "fleet"
# reads keel/v1/# and writes keel/v1/+/cmd/#. Nothing else is allowed.

: "${T:?source lib.sh or keeld_lib.sh before broker_lib.sh}"
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
[ -x "$MOSQUITTO" ] || fail "mosquitto is needed (Debian package mosquitto)"
command -v mosquitto_sub >/dev/null 2>&1 || fail "mosquitto_sub is needed (Debian package mosquitto-clients)"
command -v openssl >/dev/null 2>&1 || fail "openssl is needed"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed"

BROKER_DIR=$T/broker
mkdir -p "$BROKER_DIR/clients"
chmod 700 "$BROKER_DIR"
BROKER_LOG=$BROKER_DIR/mosquitto.log
: >"$BROKER_LOG"
BROKER_PID=
BROKER_PORT=${BROKER_PORT:-}
BROKER_CERT_DIR=
BROKER_CRL=
BROKER_MARK=0
SUB_PID=
BROKER_SUB_PIDS=

if command -v keeld_cleanup >/dev/null 2>&1; then
    _broker_prev_cleanup=keeld_cleanup
else
    _broker_prev_cleanup=cleanup
fi
broker_cleanup() {
    for _p in $BROKER_SUB_PIDS $BROKER_PID; do
        kill -KILL "$_p" 2>/dev/null || true
        wait "$_p" 2>/dev/null || true
    done
    $_broker_prev_cleanup
}
trap broker_cleanup EXIT
trap 'exit 130' INT TERM

# lib.sh's free_port (below the ephemeral range) when it was sourced; the
# demos in scripts/ source this file without it, and run alone.
broker_free_port() {
    if command -v free_port >/dev/null 2>&1; then
        free_port
    else
        python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    fi
}

# Show the broker's log, then fail.
broker_die() {
    echo "--- mosquitto log (last 30 lines):" >&2
    tail -n 30 "$BROKER_LOG" >&2 || true
    fail "$*"
}

broker_server_cert() {
    # shellcheck disable=SC2086
    expect_rc 0 "$KEEL" factory issue-server --dir "$1" --name "$2" --out "$3" ${BROKER_ISSUE_ARGS:-}
}

broker_client_cert() {
    _f=$1 _n=$2 _d=$BROKER_DIR/clients
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
        >"$_d/$_n.ext"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$_d/$_n.key" 2>"$T/err" ||
        fail "openssl genpkey: $(cat "$T/err")"
    chmod 600 "$_d/$_n.key"
    openssl req -new -key "$_d/$_n.key" -subj "/CN=$_n" -out "$_d/$_n.csr" 2>"$T/err" ||
        fail "openssl req: $(cat "$T/err")"
    openssl x509 -req -in "$_d/$_n.csr" -CA "$_f/device-ca/issuing.crt" -CAkey "$_f/device-ca/issuing.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 2 -sha256 -extfile "$_d/$_n.ext" \
        -out "$_d/$_n.crt" 2>"$T/err" || fail "openssl x509: $(cat "$T/err")"
}

broker_pki() {
    _f=$1
    [ -f "$_f/device-ca/root.crt" ] && [ -f "$_f/device-ca/issuing.crt" ] || fail "broker_pki: $_f is no factory"
    # The broker verifies device chains up to the device root: it needs both CAs.
    cat "$_f/device-ca/issuing.crt" "$_f/device-ca/root.crt" >"$BROKER_DIR/device-ca.pem"
    broker_server_cert "$_f" 127.0.0.1 "$BROKER_DIR/server"
    broker_server_cert "$_f" broker.invalid "$BROKER_DIR/wrongname"
    broker_client_cert "$_f" fleet
    BROKER_CERT_DIR=$BROKER_DIR/server
    BROKER_FACTORY=$_f
}

broker_render_conf() {
    _etc=$BROKER_DIR/etc
    [ -n "$BROKER_CRL" ] || fail "broker_render_conf: $BROKER_CONF needs a crlfile: set BROKER_CRL"
    mkdir -p "$_etc/server" "$BROKER_DIR/db"
    cat "$BROKER_FACTORY/device-ca/chain.pem" "$BROKER_FACTORY/service-ca/chain.pem" >"$_etc/ca.pem"
    cp "$BROKER_CERT_DIR/chain.pem" "$BROKER_CERT_DIR/server.key" "$_etc/server/"
    cp "$(dirname "$BROKER_CONF")/keel-broker.acl" "$_etc/keel-broker.acl"
    [ "$BROKER_CRL" = "$_etc/crl.pem" ] || cp "$BROKER_CRL" "$_etc/crl.pem"
    grep -Ev "^log_(dest|type)|${BROKER_CONF_DROP:-^$}" "$BROKER_CONF" |
        sed -e "s#/etc/mosquitto/keel/#$_etc/#g" -e "s#/var/lib/mosquitto/#$BROKER_DIR/db/#g" \
            -e "s#^listener 8883\$#listener $BROKER_PORT 127.0.0.1#" >"$BROKER_DIR/mosquitto.conf"
    {
        echo "user $(id -un)"
        echo "log_dest file $BROKER_LOG"
        echo "log_type all"
        echo "log_timestamp true"
        echo "log_timestamp_format %Y-%m-%dT%H:%M:%S"
    } >>"$BROKER_DIR/mosquitto.conf"
    # Everything the shipped file names must have been mapped into the test's
    # directory, and it must open no other listener.
    ! grep -nE '(^|[[:space:]])/(etc|var)/' "$BROKER_DIR/mosquitto.conf" >&2 ||
        fail "$BROKER_CONF names a path the test does not map"
    [ "$(grep -c '^listener' "$BROKER_DIR/mosquitto.conf")" = 1 ] &&
        grep -q "^listener $BROKER_PORT 127.0.0.1\$" "$BROKER_DIR/mosquitto.conf" ||
        fail "$BROKER_CONF must have exactly one listener, 'listener 8883'"
}

broker_write_conf() {
    if [ -n "${BROKER_CONF:-}" ]; then
        broker_render_conf
        return
    fi
    cat >"$BROKER_DIR/acl" <<'EOF'
# devices: their own topics only
pattern write keel/v1/%u/telemetry
pattern write keel/v1/%u/events
pattern write keel/v1/%u/state
pattern read keel/v1/%u/cmd/#

user fleet
topic read keel/v1/#
topic write keel/v1/+/cmd/#
EOF
    {
        echo "per_listener_settings false"
        echo "allow_anonymous false"
        echo "persistence false"
        echo "user $(id -un)"
        echo "log_dest file $BROKER_LOG"
        echo "log_type all"
        echo "connection_messages true"
        echo "log_timestamp true"
        echo "log_timestamp_format %Y-%m-%dT%H:%M:%S"
        echo "acl_file $BROKER_DIR/acl"
        echo "listener $BROKER_PORT 127.0.0.1"
        echo "cafile $BROKER_DIR/device-ca.pem"
        echo "certfile $BROKER_CERT_DIR/chain.pem"
        echo "keyfile $BROKER_CERT_DIR/server.key"
        echo "require_certificate true"
        echo "use_identity_as_username true"
        echo "tls_version tlsv1.2"
        [ -z "$BROKER_CRL" ] || echo "crlfile $BROKER_CRL"
    } >"$BROKER_DIR/mosquitto.conf"
}

broker_start() {
    [ -z "$BROKER_PID" ] || fail "broker_start: mosquitto is already running ($BROKER_PID)"
    [ -n "$BROKER_CERT_DIR" ] || fail "broker_start: call broker_pki first"
    [ -n "$BROKER_PORT" ] || BROKER_PORT=$(broker_free_port)
    broker_write_conf
    echo "=== start mosquitto ($(date +%T)) cert=$BROKER_CERT_DIR crl=${BROKER_CRL:-none}" >>"$BROKER_LOG"
    "$MOSQUITTO" -c "$BROKER_DIR/mosquitto.conf" >>"$BROKER_LOG" 2>&1 &
    BROKER_PID=$!
    _i=0
    while ! python3 -c 'import socket,sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5); s.close()' "$BROKER_PORT" 2>/dev/null; do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            wait "$BROKER_PID" 2>/dev/null || true
            BROKER_PID=
            broker_die "mosquitto exited before it listened"
        fi
        _i=$((_i + 1))
        [ $_i -lt 100 ] || broker_die "mosquitto did not listen on 127.0.0.1:$BROKER_PORT within 10 s"
        sleep 0.1
    done
}

broker_stop() {
    [ -n "$BROKER_PID" ] || return 0
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    _i=0
    while kill -0 "$BROKER_PID" 2>/dev/null; do
        _i=$((_i + 1))
        if [ $_i -ge 50 ]; then
            kill -KILL "$BROKER_PID" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
}

broker_restart() {
    broker_stop
    broker_start
}

broker_revoke() {
    _f=$1 _cert=$2 _ca=$BROKER_DIR/ca
    mkdir -p "$_ca"
    [ -f "$_ca/index.txt" ] || : >"$_ca/index.txt"
    [ -f "$_ca/crlnumber" ] || echo 01 >"$_ca/crlnumber"
    cat >"$_ca/openssl.cnf" <<EOF
[ ca ]
default_ca = device_issuing
[ device_issuing ]
database = $_ca/index.txt
crlnumber = $_ca/crlnumber
certificate = $_f/device-ca/issuing.crt
private_key = $_f/device-ca/issuing.key
default_md = sha256
default_crl_days = 2
EOF
    openssl ca -config "$_ca/openssl.cnf" -revoke "$_cert" -crl_reason keyCompromise >"$T/out" 2>&1 ||
        fail "openssl ca -revoke: $(cat "$T/out")"
    openssl ca -config "$_ca/openssl.cnf" -gencrl -out "$BROKER_DIR/crl.pem" >"$T/out" 2>&1 ||
        fail "openssl ca -gencrl: $(cat "$T/out")"
    BROKER_CRL=$BROKER_DIR/crl.pem
}

broker_mark() {
    BROKER_MARK=$(wc -l <"$BROKER_LOG")
}

broker_count() {
    tail -n +"$((BROKER_MARK + 1))" "$BROKER_LOG" | grep -cE "$1" || true
}

broker_connects() {
    broker_count "New client connected from .* as $1 "
}

broker_sub() {
    _topic=$1 _file=$2
    _id=keel-test-sub-$$-$(date +%s%N | tail -c 7)
    : >"$_file"
    _insecure=
    [ "${BROKER_SUB_INSECURE:-0}" = 0 ] || _insecure=--insecure
    mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -i "$_id" -t "$_topic" $_insecure \
        --cafile "$BROKER_FACTORY/service-ca/root.crt" \
        --cert "$BROKER_DIR/clients/fleet.crt" --key "$BROKER_DIR/clients/fleet.key" \
        -F '%t	%r	%p' >"$_file" 2>"$_file.err" &
    SUB_PID=$!
    BROKER_SUB_PIDS="$BROKER_SUB_PIDS $SUB_PID"
    _i=0
    until grep -q "Received SUBSCRIBE from $_id" "$BROKER_LOG"; do
        kill -0 "$SUB_PID" 2>/dev/null || broker_die "mosquitto_sub exited: $(cat "$_file.err")"
        _i=$((_i + 1))
        [ $_i -lt 100 ] || broker_die "mosquitto_sub did not subscribe within 10 s"
        sleep 0.1
    done
}

broker_pub() {
    _topic=$1 _file=$2
    shift 2
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -i "keel-test-pub-$$" -t "$_topic" \
        --cafile "$BROKER_FACTORY/service-ca/root.crt" \
        --cert "$BROKER_DIR/clients/fleet.crt" --key "$BROKER_DIR/clients/fleet.key" \
        -f "$_file" "$@" 2>"$T/pub.err" || fail "mosquitto_pub $_topic: $(cat "$T/pub.err")"
}

broker_sub_stop() {
    [ -n "$SUB_PID" ] || return 0
    kill -TERM "$SUB_PID" 2>/dev/null || true
    wait "$SUB_PID" 2>/dev/null || true
    SUB_PID=
}

broker_wait() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, sys, time
path, item, cond = sys.argv[1], sys.argv[2], sys.argv[3]
deadline = time.time() + 30
while True:
    m = []
    for line in open(path):
        p = line.rstrip("\n").split("\t", 2)
        if len(p) == 3:
            try:
                m.append(eval(item, {}, {"t": p[0], "r": p[1], "e": json.loads(p[2])}))
            except (ValueError, KeyError, TypeError):
                pass
    if eval(cond):
        sys.exit(0)
    if time.time() > deadline:
        print("last messages:", m[-8:], file=sys.stderr)
        sys.exit(1)
    time.sleep(0.2)
EOF
}

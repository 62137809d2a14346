# keel-fleetd for the integration tests: the shipped broker configuration
# (packaging/mosquitto/) with the factory's certificates, the fleet's own
# identities, a keel-fleetd configuration and its life cycle. POSIX sh;
# source it AFTER keeld_lib.sh (or lib.sh), broker_lib.sh and, when used,
# pg_lib.sh (its exit cleanup chains theirs).
#
# Without a broker (FLEET_NO_BROKER=1, e.g. fleet_admin_lib.sh), broker_lib.sh
# is not needed: fleet_start, fleet_stop, fleet_kill, fleet_die and fleet_sql
# serve a configuration written by the caller as $FLEET_DIR/NAME.conf.
# FLEET_DIR (default $T/fleet) and FLEET_STOP_SECONDS (default 15) may be set
# before sourcing.
#
#   fleet_setup F         After `$KEEL factory init --dir F` (with a passphrase: set
#                         FLEET_PASS_ARGS and BROKER_ISSUE_ARGS to its --passphrase-env):
#                         the broker's and the fleet's certificates, an empty
#                         device CRL + the service CRL (BROKER_CRL), the shipped
#                         broker config (BROKER_CONF), $FLEET_DIR/* for keel-fleetd,
#                         an operator token ($FLEET_DIR/token) and KEEL_FLEET_* for
#                         `keel fleet`. Picks FLEET_ADMIN_PORT and FLEET_DIST_PORT.
#   fleet_conf NAME [LINES...]
#                         Writes $FLEET_DIR/NAME.conf: SQLite at $FLEET_DIR/fleet.db
#                         (or $FLEET_DB_URL), the broker on 127.0.0.1:$BROKER_PORT,
#                         the admin API and the update server on 127.0.0.1, [pki]
#                         with the factory, the CRL the broker reads and the broker's
#                         pid file, then LINES (each "section.key=value", applied as
#                         -o overrides by fleet_start).
#   fleet_start NAME [-o ...]
#                         Starts keel-fleetd with $FLEET_DIR/NAME.conf (log
#                         $FLEET_DIR/NAME.log); waits for "fleet: ready" and, with a
#                         broker, for its subscription. Sets FLEET_PID_<NAME>.
#   fleet_stop NAME       SIGTERM; must exit 0 within $FLEET_STOP_SECONDS s.
#   fleet_kill NAME       SIGKILL (a crash).
#   fleet_die NAME MSG    Shows NAME's log, fails.
#   fleet_sql SQL         Runs SQL on the fleet database (sqlite3 or psql), prints rows.
#   fleet_wait_sql SQL WANT [SECONDS]
#                         Waits until fleet_sql SQL prints WANT.

[ -n "${FLEET_NO_BROKER:-}" ] || : "${BROKER_DIR:?source broker_lib.sh before fleet_lib.sh}"
FLEETD=${FLEETD:-$KEEL_BUILD_DIR/programs/keel-fleetd/keel-fleetd}
[ -x "$FLEETD" ] || fail "keel-fleetd not built: $FLEETD"
command -v sqlite3 >/dev/null 2>&1 || fail "sqlite3 is needed"
FLEET_DIR=${FLEET_DIR:-$T/fleet}
mkdir -p "$FLEET_DIR"
chmod 700 "$FLEET_DIR"
FLEET_PIDS=
FLEET_SRC=${KEEL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}

# the last exit cleanup sourced before: pg_lib.sh's chains broker_lib.sh's,
# which chains keeld_lib.sh's or lib.sh's
for _fleet_prev_cleanup in pg_cleanup broker_cleanup keeld_cleanup cleanup; do
    command -v "$_fleet_prev_cleanup" >/dev/null 2>&1 && break
done
fleet_cleanup() {
    for _p in $FLEET_PIDS; do
        kill -KILL "$_p" 2>/dev/null || true
        wait "$_p" 2>/dev/null || true
    done
    $_fleet_prev_cleanup
}
trap fleet_cleanup EXIT

fleet_setup() {
    _f=$1
    broker_pki "$_f"
    # shellcheck disable=SC2086
    expect_rc 0 "$KEEL" factory issue-client --dir "$_f" --name keel-fleet --out "$FLEET_DIR/client" ${FLEET_PASS_ARGS:-}
    cp -r "$BROKER_DIR/server" "$FLEET_DIR/server"
    cat "$_f/device-ca/issuing.crt" "$_f/device-ca/root.crt" >"$FLEET_DIR/device-ca.pem"
    cp "$_f/release-ca/root.crt" "$FLEET_DIR/release-root.pem"
    : >"$T/no-serials"
    # shellcheck disable=SC2086
    expect_rc 0 "$KEEL" factory crl --dir "$_f" --ca service --serials "$T/no-serials" --out "$FLEET_DIR/service-crl.pem" \
        ${FLEET_PASS_ARGS:-}
    expect_rc 0 "$KEEL" factory crl --dir "$_f" --ca device --serials "$T/no-serials" --out "$T/device-crl.pem"
    mkdir -p "$BROKER_DIR/etc"
    BROKER_CRL=$BROKER_DIR/etc/crl.pem
    cat "$T/device-crl.pem" "$FLEET_DIR/service-crl.pem" >"$BROKER_CRL"
    BROKER_CONF=$FLEET_SRC/packaging/mosquitto/keel-broker.conf
    [ -n "$BROKER_PORT" ] || BROKER_PORT=$(broker_free_port)
    FLEET_ADMIN_PORT=$(free_port)
    FLEET_DIST_PORT=$(free_port)
    FLEET_FACTORY=$_f
    : >"$FLEET_DIR/tokens"
    chmod 600 "$FLEET_DIR/tokens"
    fleet_conf op
    "$FLEETD" token add operator --config "$FLEET_DIR/op.conf" >"$FLEET_DIR/token" 2>"$T/err" ||
        fail "keel-fleetd token add: $(cat "$T/err")"
    chmod 600 "$FLEET_DIR/token"
    export KEEL_FLEET_SERVER="https://127.0.0.1:$FLEET_ADMIN_PORT"
    export KEEL_FLEET_TOKEN_FILE="$FLEET_DIR/token"
    export KEEL_FLEET_CA="$_f/service-ca/root.crt"
}

fleet_conf() {
    _name=$1
    shift
    _db=${FLEET_DB_URL:-sqlite:$FLEET_DIR/fleet.db}
    {
        echo "[log]"
        echo "level = ${FLEET_LOG_LEVEL:-info}"
        echo "[database]"
        echo "url = $_db"
        if [ -z "${FLEET_NO_BROKER:-}" ]; then
            echo "[broker]"
            echo "address = 127.0.0.1:$BROKER_PORT"
            echo "client_id = keel-fleet"
            echo "share_group = ${FLEET_SHARE_GROUP:-fleet}"
            echo "certificate = client/client.crt"
            echo "chain = client/chain.pem"
            echo "key = client/client.key"
            echo "ca = client/ca.pem"
        fi
        echo "[ingest]"
        echo "gap_grace = ${FLEET_GAP_GRACE:-5}"
        echo "[update_server]"
        echo "listen = 127.0.0.1:$FLEET_DIST_PORT"
        echo "certificate = server/server.crt"
        echo "chain = server/chain.pem"
        echo "key = server/server.key"
        echo "device_ca = device-ca.pem"
        echo "[admin]"
        echo "listen = 127.0.0.1:$FLEET_ADMIN_PORT"
        echo "certificate = server/server.crt"
        echo "chain = server/chain.pem"
        echo "key = server/server.key"
        echo "tokens = tokens"
        echo "[pki]"
        echo "factory = $FLEET_FACTORY"
        echo "crl = $BROKER_CRL"
        echo "service_crl = service-crl.pem"
        echo "broker_pid_file = $BROKER_DIR/broker.pid"
        echo "[trust]"
        echo "release_root = release-root.pem"
        echo "[campaign]"
        echo "tick = ${FLEET_TICK:-1}"
        echo "min_finished = 1"
    } >"$FLEET_DIR/$_name.conf"
    : >"$FLEET_DIR/$_name.args"
    for _o in "$@"; do
        printf '%s\n' "$_o" >>"$FLEET_DIR/$_name.args"
    done
}

fleet_die() {
    echo "--- keel-fleetd $1 log (last 40 lines):" >&2
    tail -n 40 "$FLEET_DIR/$1.log" >&2 || true
    shift
    fail "$*"
}

fleet_start() {
    _name=$1
    shift
    [ -f "$FLEET_DIR/$_name.conf" ] || fleet_conf "$_name"
    if [ -f "$FLEET_DIR/$_name.args" ]; then
        while IFS= read -r _o; do
            set -- "$@" -o "$_o"
        done <"$FLEET_DIR/$_name.args"
    fi
    _subs=0
    if [ -z "${FLEET_NO_BROKER:-}" ]; then
        [ -n "$BROKER_PID" ] && echo "$BROKER_PID" >"$BROKER_DIR/broker.pid"
        _subs=$(grep -c "keel/v1/+/state" "$BROKER_LOG" 2>/dev/null || true)
    fi
    echo "=== start $(date +%T) $*" >>"$FLEET_DIR/$_name.log"
    _mark=$(wc -c <"$FLEET_DIR/$_name.log")
    "$FLEETD" --config "$FLEET_DIR/$_name.conf" "$@" 2>>"$FLEET_DIR/$_name.log" >/dev/null &
    _pid=$!
    eval "FLEET_PID_$_name=$_pid"
    FLEET_PIDS="$FLEET_PIDS $_pid"
    _i=0
    until tail -c +"$_mark" "$FLEET_DIR/$_name.log" | grep -q "fleet: ready" &&
        { [ -n "${FLEET_NO_BROKER:-}" ] || tail -c +"$_mark" "$FLEET_DIR/$_name.log" | grep -q "fleet: connected to the broker"; }; do
        kill -0 "$_pid" 2>/dev/null || fleet_die "$_name" "keel-fleetd $_name exited before it was ready"
        _i=$((_i + 1))
        [ $_i -lt 200 ] || fleet_die "$_name" "keel-fleetd $_name was not ready within 20 s"
        sleep 0.1
    done
    # The SUBSCRIBE follows the CONNACK: wait until the broker logged it.
    if [ -z "${FLEET_NO_BROKER:-}" ]; then
        _i=0
        until [ "$(grep -c "keel/v1/+/state" "$BROKER_LOG" 2>/dev/null || true)" -gt "${_subs:-0}" ]; do
            _i=$((_i + 1))
            [ $_i -lt 100 ] || fleet_die "$_name" "keel-fleetd $_name did not subscribe within 10 s"
            sleep 0.1
        done
    fi
}

fleet_stop() {
    eval "_pid=\${FLEET_PID_$1:-}"
    [ -n "$_pid" ] || fail "fleet_stop: $1 is not running"
    kill -TERM "$_pid"
    _i=0
    while kill -0 "$_pid" 2>/dev/null && [ "$(ps -o stat= -p "$_pid" 2>/dev/null | cut -c1)" != Z ]; do
        _i=$((_i + 1))
        [ $_i -lt $((${FLEET_STOP_SECONDS:-15} * 10)) ] ||
            fleet_die "$1" "keel-fleetd $1 did not stop within ${FLEET_STOP_SECONDS:-15} s of SIGTERM"
        sleep 0.1
    done
    wait "$_pid" && _rc=0 || _rc=$?
    eval "FLEET_PID_$1="
    [ "$_rc" -eq 0 ] || fleet_die "$1" "keel-fleetd $1 exited with status $_rc on SIGTERM"
}

fleet_kill() {
    eval "_pid=\${FLEET_PID_$1:-}"
    kill -KILL "$_pid" 2>/dev/null || true
    wait "$_pid" 2>/dev/null || true
    eval "FLEET_PID_$1="
}

fleet_sql() {
    case "${FLEET_DB_URL:-sqlite:}" in
    sqlite:*)
        _u=${FLEET_DB_URL:-sqlite:$FLEET_DIR/fleet.db}
        sqlite3 -batch -noheader "${_u#sqlite:}" "$1"
        ;;
    *) psql -X -q -A -t -d "$FLEET_DB_URL" -c "$1" ;;
    esac
}

fleet_wait_sql() {
    _want=$2
    _n=$((${3:-20} * 10))
    _i=0
    while [ "$(fleet_sql "$1")" != "$_want" ]; do
        _i=$((_i + 1))
        if [ $_i -ge $_n ]; then
            for _l in "$FLEET_DIR"/*.log; do
                echo "--- $_l (last 15 lines):" >&2
                tail -n 15 "$_l" >&2
            done
            echo "--- mosquitto log (last 15 lines):" >&2
            tail -n 15 "$BROKER_LOG" >&2
            fail "waited ${3:-20} s for '$1' = '$_want'; it is '$(fleet_sql "$1")'"
        fi
        sleep 0.1
    done
}

# Shared by fleet_admin.sh and fleet_dashboard.sh: a factory with three
# plug-1 devices, the service certificate for 127.0.0.1, keel-fleetd with a
# SQLite database and only its admin listener (no broker, no update server)
# on a free loopback port, operator tokens, and a stop on every exit path.
# POSIX sh; sources lib.sh ($T, fail, note, expect_rc).
#
#   fleet_setup         factory in $T/f, devices in $T/b (manifest.json),
#                       service certificate in $T/svc, $CONF, tokens
#                       $T/admin.token (admin) and $T/read.token (read)
#   fleet_start         starts keel-fleetd on 127.0.0.1:$PORT, waits until it answers
#   fleet_stop          SIGTERM; keel-fleetd must exit 0 within 10 s
#   api WANT METHOD PATH [curl args]   one request with $TOK, body in $T/out, status checked
#
# The configuration keys this assumes (keel-fleetd's main.c): [admin] listen,
# certificate, chain, key, tokens; [database] url; [trust] release_root;
# [update_server] bundles.
. "$(dirname "$0")/lib.sh"

: "${KEEL_BUILD_DIR:?KEEL_BUILD_DIR must point to the build tree}"
FLEETD=${KEEL_FLEETD:-$KEEL_BUILD_DIR/programs/keel-fleetd/keel-fleetd}
[ -x "$FLEETD" ] || fail "keel-fleetd not built: $FLEETD"
command -v curl >/dev/null 2>&1 || fail "curl is needed"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed"

FLEETD_PID=
FLEETD_LOG=$T/fleetd.log
: >"$FLEETD_LOG"
fleet_cleanup() {
    if [ -n "$FLEETD_PID" ] && kill -0 "$FLEETD_PID" 2>/dev/null; then
        kill -KILL "$FLEETD_PID" 2>/dev/null || true
        wait "$FLEETD_PID" 2>/dev/null || true
    fi
    rm -rf "$T"
}
trap fleet_cleanup EXIT
trap 'exit 130' INT TERM

die_log() {
    echo "--- keel-fleetd log (last 40 lines):" >&2
    tail -n 40 "$FLEETD_LOG" >&2 || true
    fail "$*"
}

free_port() {
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

fleet_setup() {
    expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
    expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model plug-1 --count 3 --out "$T/b" $FAST_ARGON
    expect_rc 0 "$KEEL" factory issue-server --dir "$T/f" --name 127.0.0.1 --out "$T/svc"
    PORT=$(free_port)
    CONF=$T/fleetd.conf
    cat >"$CONF" <<EOF
# keel-fleetd for the operator tests: admin listener only.
[database]
url = sqlite:$T/fleet.db

[admin]
listen = 127.0.0.1:$PORT
certificate = svc/server.crt
chain = svc/chain.pem
key = svc/server.key
tokens = tokens

[trust]
release_root = f/release-ca/root.crt

[update_server]
bundles = bundles
EOF
    (umask 077 && "$FLEETD" token add ops --config "$CONF" >"$T/admin.token" 2>"$T/token.err") ||
        { cat "$T/token.err" >&2; fail "keel-fleetd token add ops failed"; }
    (umask 077 && "$FLEETD" token add dash --read-only --config "$CONF" >"$T/read.token" 2>"$T/token.err") ||
        { cat "$T/token.err" >&2; fail "keel-fleetd token add dash --read-only failed"; }
    ADMIN_TOKEN=$(cat "$T/admin.token")
    READ_TOKEN=$(cat "$T/read.token")
    export KEEL_FLEET_SERVER="https://127.0.0.1:$PORT" KEEL_FLEET_TOKEN_FILE="$T/admin.token" \
        KEEL_FLEET_CA="$T/svc/ca.pem"
}

fleet_start() {
    [ -z "$FLEETD_PID" ] || fail "fleet_start: keel-fleetd is already running"
    echo "=== start keel-fleetd ($(date +%T))" >>"$FLEETD_LOG"
    "$FLEETD" --config "$CONF" 2>>"$FLEETD_LOG" >/dev/null &
    FLEETD_PID=$!
    i=0
    while :; do
        if ! kill -0 "$FLEETD_PID" 2>/dev/null; then
            wait "$FLEETD_PID" 2>/dev/null && rc=0 || rc=$?
            FLEETD_PID=
            die_log "keel-fleetd exited (status $rc) before it answered"
        fi
        # no token: 401 once the listener is up
        code=$(curl -s --cacert "$T/svc/ca.pem" --max-time 2 -o /dev/null -w '%{http_code}' \
            "https://127.0.0.1:$PORT/api/v1/status" 2>/dev/null) || true
        [ "$code" = 401 ] && break
        i=$((i + 1))
        [ $i -lt 150 ] || die_log "keel-fleetd did not answer within 15 s (last status $code)"
        sleep 0.1
    done
}

fleet_stop() {
    [ -n "$FLEETD_PID" ] || fail "fleet_stop: keel-fleetd is not running"
    kill -TERM "$FLEETD_PID"
    i=0
    while kill -0 "$FLEETD_PID" 2>/dev/null; do
        [ "$(ps -o stat= -p "$FLEETD_PID" 2>/dev/null | cut -c1)" = Z ] && break
        i=$((i + 1))
        if [ $i -ge 100 ]; then
            kill -KILL "$FLEETD_PID" 2>/dev/null || true
            wait "$FLEETD_PID" 2>/dev/null || true
            FLEETD_PID=
            die_log "keel-fleetd did not stop within 10 s of SIGTERM"
        fi
        sleep 0.1
    done
    wait "$FLEETD_PID" && rc=0 || rc=$?
    FLEETD_PID=
    [ "$rc" -eq 0 ] || die_log "keel-fleetd exited with status $rc on SIGTERM (expected 0)"
}

# api WANT METHOD PATH [curl args...]: one HTTPS request (trusting only the
# service root) with $TOK as bearer token when set; body in $T/out, headers
# in $T/hdr; fails unless the status is WANT.
api() {
    _want=$1 _m=$2 _p=$3
    shift 3
    [ -z "${TOK:-}" ] || set -- "$@" -H "Authorization: Bearer $TOK"
    : >"$T/out"
    : >"$T/hdr"
    CODE=$(curl -s --cacert "$T/svc/ca.pem" --max-time 120 -o "$T/out" -D "$T/hdr" -w '%{http_code}' -X "$_m" \
        "$@" "https://127.0.0.1:$PORT$_p" 2>"$T/curl.err") || CODE=000
    if [ "$CODE" != "$_want" ]; then
        echo "response headers:" >&2; cat "$T/hdr" >&2
        echo "response body:" >&2; head -c 600 "$T/out" >&2; echo >&2
        cat "$T/curl.err" >&2
        die_log "$_m $_p: expected HTTP $_want, got $CODE"
    fi
}

# jtrue EXPR WHAT: a Python expression over the JSON in $T/out (as d) must hold.
jtrue() {
    python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$T/out" "$1" || fail "$2 (body: $(head -c 400 "$T/out"))"
}

# header NAME: the value of response header NAME in $T/hdr, CR stripped.
header() {
    tr -d '\r' <"$T/hdr" | grep -i "^$1:" | tail -n 1 | sed 's/^[^:]*:[ 	]*//'
}

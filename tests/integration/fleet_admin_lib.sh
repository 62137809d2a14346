# Shared by fleet_admin.sh and fleet_dashboard.sh: a factory with three
# plug-1 devices, the service certificate for 127.0.0.1, keel-fleetd with a
# SQLite database and only its admin listener (no broker, no update server)
# on a free loopback port, operator tokens, and a stop on every exit path.
# POSIX sh; sources lib.sh ($T, fail, note, expect_rc) and fleet_lib.sh
# (without a broker; keel-fleetd's life cycle), with $FLEET_DIR = $T.
#
#   fleet_admin_setup   factory in $T/f, devices in $T/b (manifest.json),
#                       service certificate in $T/svc, $CONF (fleet_lib.sh's
#                       configuration "admin"), tokens $T/admin.token (admin)
#                       and $T/read.token (read), the CLI's KEEL_FLEET_*
#   fleet_start admin   starts keel-fleetd on 127.0.0.1:$PORT (fleet_lib.sh)
#   fleet_stop admin    SIGTERM; keel-fleetd must exit 0 within 10 s
#   die_log MSG         shows keel-fleetd's log ($FLEETD_LOG), fails
#   api WANT METHOD PATH [curl args]   one request with $TOK, body in $T/out, status checked
#
# The configuration keys this assumes (keel-fleetd's main.c): [admin] listen,
# certificate, chain, key, tokens; [database] url; [trust] release_root;
# [update_server] bundles.
. "$(dirname "$0")/lib.sh"

: "${KEEL_BUILD_DIR:?KEEL_BUILD_DIR must point to the build tree}"
command -v curl >/dev/null 2>&1 || fail "curl is needed"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed"
FLEET_NO_BROKER=1
FLEET_DIR=$T
FLEET_STOP_SECONDS=10
. "$(dirname "$0")/fleet_lib.sh"
trap 'exit 130' INT TERM

CONF=$FLEET_DIR/admin.conf
FLEETD_LOG=$FLEET_DIR/admin.log
: >"$FLEETD_LOG"

die_log() {
    fleet_die admin "$@"
}

fleet_admin_setup() {
    expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
    expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model plug-1 --count 3 --out "$T/b" $FAST_ARGON
    expect_rc 0 "$KEEL" factory issue-server --dir "$T/f" --name 127.0.0.1 --out "$T/svc"
    PORT=$(free_port)
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

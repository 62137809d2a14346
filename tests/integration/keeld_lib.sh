# Shared by the keeld integration tests (keeld_api.sh, keeld_tls.sh,
# keeld_hostile.sh): provision a device, pick a free loopback port, start
# keeld and wait until GET /api/v1/status answers, talk HTTPS to it with curl,
# and stop it on every exit path. POSIX sh, sourced after nothing else; it
# sources lib.sh ($T, fail, note, expect_rc, FAST_ARGON).
#
# keeld only ever listens on 127.0.0.1 here; nothing reaches another host.
. "$(dirname "$0")/lib.sh"

: "${KEEL_BUILD_DIR:?KEEL_BUILD_DIR must point to the build tree}"
KEELD=${KEELD:-$KEEL_BUILD_DIR/programs/keeld/keeld}
[ -x "$KEELD" ] || fail "keeld not built: $KEELD"
command -v curl >/dev/null 2>&1 || fail "curl is needed"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed"
HERE=$(cd "$(dirname "$0")" && pwd)

KEELD_PID=
KEELD_LOG=$T/keeld.log
: >"$KEELD_LOG"
# Background helpers (python attackers, openssl s_server) to end on exit, by id.
EXTRA_PIDS=

keeld_cleanup() {
    for p in $EXTRA_PIDS; do kill -KILL "$p" 2>/dev/null || true; done
    if [ -n "$KEELD_PID" ] && kill -0 "$KEELD_PID" 2>/dev/null; then
        kill -KILL "$KEELD_PID" 2>/dev/null || true
        wait "$KEELD_PID" 2>/dev/null || true
    fi
    cleanup
}
trap keeld_cleanup EXIT
trap 'exit 130' INT TERM

# Show keeld's log, then fail.
die_log() {
    echo "--- keeld log (last 40 lines):" >&2
    tail -n 40 "$KEELD_LOG" >&2 || true
    fail "$*"
}

# provision MODEL: one device made by a fresh factory in $T/f. Sets D (its
# directory, with keeld.conf), DEV_ID, SERIAL, LABEL_PW, CERT_SHA (from
# labels.csv) and CONF. Extra arguments go to `keel factory provision`
# (default: the cheap Argon2id of lib.sh).
provision() {
    MODEL=$1
    shift
    [ $# -gt 0 ] || set -- $FAST_ARGON
    [ -d "$T/f" ] || expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
    rm -rf "$T/b"
    expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model "$MODEL" --count 1 --out "$T/b" "$@"
    line=$(sed -n 2p "$T/b/labels.csv")
    DEV_ID=$(echo "$line" | cut -d, -f1)
    SERIAL=$(echo "$line" | cut -d, -f2)
    LABEL_PW=$(echo "$line" | cut -d, -f4)
    CERT_SHA=$(echo "$line" | cut -d, -f5)
    D=$T/b/$DEV_ID
    CONF=$D/keeld.conf
    [ -f "$CONF" ] || fail "provisioning made no $CONF"
    [ -n "$LABEL_PW" ] && [ -n "$CERT_SHA" ] || fail "labels.csv has no password or fingerprint"
}

PORT=${PORT:-}
# Options every functional test passes: cheap hashing, loopback only.
KEELD_FAST="-o auth.argon2_t=1 -o auth.argon2_m_kib=64"

# start_keeld [-o section.key=value ...]: starts keeld on 127.0.0.1:$PORT
# (picked once, kept across restarts) with the cheap Argon2id, and waits up to
# 15 s until GET /api/v1/status answers 200. Sets KEELD_PID.
start_keeld() {
    [ -n "$PORT" ] || PORT=$(free_port)
    [ -z "$KEELD_PID" ] || fail "start_keeld: keeld is already running ($KEELD_PID)"
    echo "=== start keeld $* ($(date +%T))" >>"$KEELD_LOG"
    # shellcheck disable=SC2086
    "$KEELD" --config "$CONF" -o "api.listen=127.0.0.1:$PORT" $KEELD_FAST "$@" 2>>"$KEELD_LOG" >/dev/null &
    KEELD_PID=$!
    i=0
    while :; do
        if ! kill -0 "$KEELD_PID" 2>/dev/null; then
            wait "$KEELD_PID" 2>/dev/null && rc=0 || rc=$?
            KEELD_PID=
            die_log "keeld exited (status $rc) before it answered"
        fi
        code=$(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/api/v1/status" 2>/dev/null) || true
        [ "$code" = 200 ] && break
        i=$((i + 1))
        [ $i -lt 150 ] || die_log "keeld did not answer GET /api/v1/status within 15 s (last status $code)"
        sleep 0.1
    done
}

# stop_keeld: SIGTERM, which must end keeld with status 0 within 10 s.
stop_keeld() {
    [ -n "$KEELD_PID" ] || fail "stop_keeld: keeld is not running"
    kill -TERM "$KEELD_PID"
    i=0
    while kill -0 "$KEELD_PID" 2>/dev/null; do
        # a zombie still answers kill -0; wait reaps it below
        [ "$(ps -o stat= -p "$KEELD_PID" 2>/dev/null | cut -c1)" = Z ] && break
        i=$((i + 1))
        if [ $i -ge 100 ]; then
            kill -KILL "$KEELD_PID" 2>/dev/null || true
            wait "$KEELD_PID" 2>/dev/null || true
            KEELD_PID=
            die_log "keeld did not stop within 10 s of SIGTERM"
        fi
        sleep 0.1
    done
    wait "$KEELD_PID" && rc=0 || rc=$?
    KEELD_PID=
    [ "$rc" -eq 0 ] || die_log "keeld exited with status $rc on SIGTERM (expected 0)"
}

restart_keeld() {
    stop_keeld
    start_keeld "$@"
}

alive() {
    [ -n "$KEELD_PID" ] && kill -0 "$KEELD_PID" 2>/dev/null &&
        [ "$(ps -o stat= -p "$KEELD_PID" 2>/dev/null | cut -c1)" != Z ]
}

# http METHOD PATH BODY [curl options...]: one request on a fresh connection.
# BODY is the request body ("-" for none; "@file" for a file's bytes), sent as
# $CT (application/json when unset; none when set but empty). With $TOK set, sends it as a bearer token;
# with $SRC set, connects from that loopback address. Status in $CODE, body in
# $T/out, response headers in $T/hdr.
http() {
    _m=$1 _p=$2 _b=$3
    shift 3
    set -- -sk --max-time "${HTTP_TIMEOUT:-20}" -o "$T/out" -D "$T/hdr" -w '%{http_code}' -X "$_m" "$@"
    [ -z "${TOK:-}" ] || set -- "$@" -H "Authorization: Bearer $TOK"
    [ -z "${SRC:-}" ] || set -- "$@" --interface "$SRC"
    [ "$_b" = - ] || set -- "$@" -H "Content-Type: ${CT-application/json}" --data-binary "$_b"
    : >"$T/out"
    : >"$T/hdr"
    CODE=$(curl "$@" "https://127.0.0.1:$PORT$_p" 2>"$T/curl.err") || CODE=000
}

# expect_http WANT METHOD PATH BODY [curl options...]
expect_http() {
    _want=$1
    shift
    http "$@"
    if [ "$CODE" != "$_want" ]; then
        echo "response headers:" >&2; cat "$T/hdr" >&2
        echo "response body:" >&2; cat "$T/out" >&2; echo >&2
        cat "$T/curl.err" >&2
        alive || die_log "keeld is no longer running"
        fail "$1 $2: expected HTTP $_want, got $CODE"
    fi
}

# jget EXPR: a Python expression over the JSON body in $T/out (as d).
jget() {
    python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
print(eval(sys.argv[2]))' "$T/out" "$1" || fail "response body is not the JSON expected: $(head -c 300 "$T/out")"
}

# jtrue EXPR WHAT: fails with WHAT unless the Python expression over the body holds.
jtrue() {
    [ "$(jget "bool($1)")" = True ] || fail "$2 (body: $(head -c 400 "$T/out"))"
}

# expect_error STATUS CODE METHOD PATH BODY [curl options...]: the status and
# {"error": CODE}.
expect_error() {
    _st=$1 _err=$2
    shift 2
    expect_http "$_st" "$@"
    jtrue "isinstance(d, dict) and d.get('error') == '$_err'" "$1 $2: HTTP $_st without error $_err"
}

# header NAME: the value of response header NAME in $T/hdr (last one), CR stripped.
header() {
    tr -d '\r' <"$T/hdr" | grep -i "^$1:" | tail -n 1 | sed 's/^[^:]*:[ 	]*//'
}

# json_str S: S as a JSON string literal.
json_str() {
    python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"
}

# login PASSWORD [USER]: POST /api/v1/session; status in $CODE, body in $T/out.
login() {
    TOK= http POST /api/v1/session "{\"username\": $(json_str "${2:-admin}"), \"password\": $(json_str "$1")}"
}

# login_ok PASSWORD: a successful login; sets TOKEN and CSRF.
login_ok() {
    login "$1"
    [ "$CODE" = 200 ] || { cat "$T/out" >&2; die_log "login failed with HTTP $CODE"; }
    TOKEN=$(jget 'd["token"]')
    CSRF=$(jget 'd["csrf"]')
}

# change_password TOKEN CURRENT NEW: expects 204.
change_password() {
    TOK=$1 expect_http 204 POST /api/v1/password "{\"current\": $(json_str "$2"), \"new\": $(json_str "$3")}"
}

# rss_kib PID: VmRSS of PID in KiB.
rss_kib() {
    sed -n 's/^VmRSS:[ 	]*\([0-9]*\) kB$/\1/p' "/proc/$1/status"
}

#!/bin/sh
# Least privilege (EN 303 645 5.6-7): keeld and keel-fleetd started as root with
# [security] user = nobody become nobody before they open their state, then set
# no_new_privs, drop every capability and install their seccomp allow-list
# (kill mode). The kernel's view (/proc/PID/status) must show it, and each must
# still do its work: a login on keeld's API, a telemetry message stored by
# keel-fleetd. A missing user and a bad seccomp mode are refused at start.
#
# The unprivileged user is `nobody` (present on every Debian system; nothing is
# added to or removed from the machine). Its state directories are chowned to
# it; $T itself is made traversable (0711), nothing in it readable by others.
# Needs root (the user switch); everything listens on 127.0.0.1.
. "$(dirname "$0")/keeld_lib.sh"
. "$(dirname "$0")/broker_lib.sh"
. "$(dirname "$0")/fleet_lib.sh"
SIM=${FLEET_SIM:-$KEEL_BUILD_DIR/tests/fleet_sim}
[ -x "$SIM" ] || fail "fleet_sim not built: $SIM"
[ "$(id -u)" = 0 ] || fail "sandbox.sh must run as root (it checks the switch to an unprivileged user)"
RUNAS=nobody
id "$RUNAS" >/dev/null 2>&1 || fail "there is no user $RUNAS"
RUNAS_UID=$(id -u "$RUNAS")

# field PID NAME: the value of NAME in /proc/PID/status (first column).
field() { sed -n "s/^$2:[[:space:]]*\([^[:space:]]*\).*/\1/p" "/proc/$1/status"; }

# confined WHO PID: the kernel's word that PID runs as RUNAS, sandboxed.
confined() {
    [ -r "/proc/$2/status" ] || fail "$1: no /proc/$2/status"
    [ "$(field "$2" Uid)" = "$RUNAS_UID" ] || fail "$1: Uid is $(field "$2" Uid), not $RUNAS_UID"
    [ "$(field "$2" Gid)" != 0 ] || fail "$1: Gid is 0"
    grep -q "^Uid:[[:space:]]*$RUNAS_UID[[:space:]]*$RUNAS_UID[[:space:]]*$RUNAS_UID[[:space:]]*$RUNAS_UID" \
        "/proc/$2/status" || fail "$1: not every uid is $RUNAS_UID: $(grep ^Uid: "/proc/$2/status")"
    grep -q "^Groups:.*\b0\b" "/proc/$2/status" && fail "$1: still in group 0"
    [ "$(field "$2" NoNewPrivs)" = 1 ] || fail "$1: NoNewPrivs is $(field "$2" NoNewPrivs)"
    [ "$(field "$2" Seccomp)" = 2 ] || fail "$1: Seccomp is $(field "$2" Seccomp), not 2 (filter)"
    for c in CapEff CapPrm CapInh CapAmb; do
        [ "$(field "$2" $c)" = 0000000000000000 ] || fail "$1: $c is $(field "$2" $c)"
    done
    # every thread, not only the main one (TSYNC)
    for t in /proc/"$2"/task/*; do
        grep -q "^Seccomp:[[:space:]]*2" "$t/status" || fail "$1: thread ${t##*/} has no filter"
        grep -q "^Uid:[[:space:]]*$RUNAS_UID[[:space:]]" "$t/status" || fail "$1: thread ${t##*/} is not $RUNAS"
    done
    note "$1 (pid $2, $(ls /proc/"$2"/task | wc -l) threads): uid $RUNAS_UID, NoNewPrivs 1, Seccomp 2, no capabilities"
}

chmod 711 "$T"

# ---- keeld -------------------------------------------------------------------------------------------
provision plug-1
chmod 711 "$T/b"
chown -R "$RUNAS" "$D"
# A missing user is refused before anything is opened, as is a bad mode.
expect_rc 2 "$KEELD" --config "$CONF" -o security.user=keel-no-such-user-x9 -o api.listen=127.0.0.1:1
grep -q "there is no user 'keel-no-such-user-x9'" "$T/err" || fail "keeld: no clear error for a missing user: $(cat "$T/err")"
"$KEELD" --config "$CONF" -o security.seccomp=strict --check >/dev/null 2>"$T/err" && fail "keeld took seccomp=strict"
grep -q "security.seccomp must be kill, log or off" "$T/err" || fail "keeld: no clear error for a bad mode: $(cat "$T/err")"

start_keeld -o security.user="$RUNAS" -o ipc.socket="$D/keeld.sock"
grep -q "sandbox: uid $RUNAS_UID gid [0-9]*, no_new_privs, no capabilities, seccomp kill" "$KEELD_LOG" ||
    die_log "keeld did not log the sandbox it applied"
confined keeld "$KEELD_PID"
[ "$(stat -c %U "$D/keeld.sock")" = "$RUNAS" ] || die_log "the app socket is $(stat -c %U "$D/keeld.sock")'s, not $RUNAS's"
# One real request: the label password logs in (Argon2id in a worker thread, the vault, a session).
login_ok "$LABEL_PW"
NEW_PW="Sandboxed keeld $$ works"
change_password "$TOKEN" "$LABEL_PW" "$NEW_PW" # the vault, written by $RUNAS
login_ok "$NEW_PW"
TOK=$TOKEN expect_http 200 GET /api/v1/device -
# SIGHUP (a reload reads the file again) under the filter
kill -HUP "$KEELD_PID"
i=0
until grep -q "configuration reloaded" "$KEELD_LOG"; do
    i=$((i + 1))
    [ $i -lt 100 ] || die_log "keeld did not reload"
    sleep 0.1
done
alive || die_log "keeld died after SIGHUP"
# Nothing in the state became root's.
owned=$(find "$D" ! -user "$RUNAS" | head -3)
[ -z "$owned" ] || die_log "files of the state not owned by $RUNAS: $owned"
stop_keeld
note "keeld as $RUNAS: login, password change, GET /device and reload work; the state stays $RUNAS's"

# ---- keeld with its key on a PKCS#11 token (SoftHSM2 through the OpenSSL engine): every TLS
# handshake signs on the token, under the filter ------------------------------------------------------
MODULE=${KEEL_PKCS11_MODULE:-}
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
    /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
    [ -n "$MODULE" ] || { [ -f "$m" ] && MODULE=$m; }
done
[ -n "$MODULE" ] || fail "SoftHSM2 module not found (install softhsm2 or set KEEL_PKCS11_MODULE)"
mkdir -p "$T/tokens"
printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$T" >"$T/softhsm2.conf"
SOFTHSM2_CONF=$T/softhsm2.conf
export SOFTHSM2_CONF
PIN=$(openssl rand -hex 8)
softhsm2-util --init-token --free --label keel-sandbox --so-pin "$(openssl rand -hex 8)" --pin "$PIN" >/dev/null
(umask 077 && printf '%s\n' "$PIN" >"$T/pin")
provision plug-1 $FAST_ARGON --keystore pkcs11 --pkcs11-module "$MODULE" --pkcs11-token keel-sandbox \
    --pkcs11-pin-file "$T/pin"
chmod 711 "$T/b"
chown -R "$RUNAS" "$D" "$T/tokens" "$T/pin"
chmod 644 "$T/softhsm2.conf"
start_keeld -o security.user="$RUNAS"
confined "keeld (PKCS#11)" "$KEELD_PID"
for i in 1 2 3; do
    expect_http 200 GET /api/v1/status -
done
login_ok "$LABEL_PW"
stop_keeld
note "keeld as $RUNAS with a PKCS#11 key: TLS handshakes and a login under the filter"

# ---- keel-fleetd -------------------------------------------------------------------------------------
fleet_setup "$T/f"
broker_start
# The factory's private keys stay root's: this instance has no [pki] factory (revocation
# is not what is tested here), and its CRL and pid file are the broker's.
fleet_conf op security.user="$RUNAS"
sed -i '/^factory = /d; /^crl = /d; /^broker_pid_file = /d; /^service_crl = /d' "$FLEET_DIR/op.conf"
chmod 711 "$FLEET_DIR"
chown -R "$RUNAS" "$FLEET_DIR"
fleet_start op
P=$FLEET_PID_op
grep -q "fleet: sandbox: uid $RUNAS_UID gid [0-9]*, no_new_privs, no capabilities, seccomp kill" "$FLEET_DIR/op.log" ||
    fleet_die op "keel-fleetd did not log the sandbox it applied"
confined keel-fleetd "$P"

# One device, registered, publishes; the message is stored (the MQTT and ingest threads under the filter).
"$SIM" manifest --count 1 --model plug-1 --issuing-cert "$T/f/device-ca/issuing.crt" \
    --issuing-key "$T/f/device-ca/issuing.key" --org Acme --out "$T/sim" >/dev/null || fail "fleet_sim manifest"
expect_rc 0 "$KEEL" fleet import "$T/sim/manifest.json"
"$SIM" publish --broker "127.0.0.1:$BROKER_PORT" --ca "$T/f/service-ca/root.crt" --chain "$FLEET_DIR/device-ca.pem" \
    --json --devices "$T/sim" --messages 1 >"$T/pub.json" 2>"$T/pub.err" || { cat "$T/pub.err" >&2; fail "fleet_sim publish"; }
fleet_wait_sql "SELECT count(*) FROM messages" 1 30
kill -0 "$P" 2>/dev/null || fleet_die op "keel-fleetd died"
confined keel-fleetd "$P"
owned=$(find "$FLEET_DIR" -newer "$FLEET_DIR/op.conf" ! -name "*.log" ! -user "$RUNAS" | head -3)
[ -z "$owned" ] || fleet_die op "files keel-fleetd made are not $RUNAS's: $owned"
fleet_stop op
note "keel-fleetd as $RUNAS: import over the admin API, one telemetry message stored, clean stop"

# A missing user: refused with a clear message, exit 2.
expect_rc 2 "$FLEETD" --config "$FLEET_DIR/op.conf" -o security.user=keel-no-such-user-x9
grep -q "there is no user 'keel-no-such-user-x9'" "$T/err" || fail "keel-fleetd: no clear error for a missing user"
echo "sandbox: OK"

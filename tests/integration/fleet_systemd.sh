#!/bin/sh
# keel-fleetd under systemd (Type=notify, WatchdogSec=), with a NOTIFY_SOCKET
# of our own standing in for systemd: READY=1 once it serves, WATCHDOG=1 at a
# third of WATCHDOG_USEC, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on
# SIGTERM. A reload applies the live keys, names the ones that wait for the
# next start, and refuses a broken file (the running configuration stays).
# On a private PostgreSQL that stops answering (SIGSTOP) the ingest thread
# blocks in the database: the watchdog ping is withheld, so systemd would
# restart the service; when the database answers again the pings resume.
. "$(dirname "$0")/keeld_lib.sh"
. "$(dirname "$0")/broker_lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_start
FLEET_DB_URL=$PG_URL
. "$(dirname "$0")/fleet_lib.sh"
SIM=${FLEET_SIM:-$KEEL_BUILD_DIR/tests/fleet_sim}
[ -x "$SIM" ] || fail "fleet_sim not built: $SIM"
PG_STOPPED=
pg_resume() { [ -z "$PG_STOPPED" ] || kill -CONT $PG_STOPPED 2>/dev/null || true; PG_STOPPED=; }
systemd_cleanup() { pg_resume; fleet_cleanup; }
trap systemd_cleanup EXIT

expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
fleet_setup "$T/f"
broker_start
"$SIM" manifest --count 2 --model plug-1 --issuing-cert "$T/f/device-ca/issuing.crt" \
    --issuing-key "$T/f/device-ca/issuing.key" --org Acme --out "$T/sim" >/dev/null || fail "fleet_sim manifest"

# systemd's side of sd_notify: a datagram socket that records what arrives.
NOTIFY=$T/notify.sock
python3 - "$NOTIFY" "$T/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        log.write(s.recv(4096).decode().replace("\n", " ") + "\n")
PY
EXTRA_PIDS="$EXTRA_PIDS $!"
i=0
while [ ! -S "$NOTIFY" ]; do
    i=$((i + 1)); [ $i -lt 50 ] || fail "the notify socket did not appear"; sleep 0.1
done
: >"$T/notify.log"
count() { grep -c "^$1\$" "$T/notify.log" || true; }
wait_notify() { # MESSAGE COUNT
    i=0
    while [ "$(count "$1")" -lt "$2" ]; do
        i=$((i + 1)); [ $i -lt 150 ] || { cat "$T/notify.log" >&2; fleet_die op "no $1 (#$2) on NOTIFY_SOCKET"; }
        sleep 0.1
    done
}
LOG=$FLEET_DIR/op.log

note "start: READY=1, then a watchdog ping every 300 ms (WATCHDOG_USEC=900000)"
export NOTIFY_SOCKET="$NOTIFY" WATCHDOG_USEC=900000
fleet_start op
unset NOTIFY_SOCKET WATCHDOG_USEC
wait_notify READY=1 1
grep -q "watchdog: systemd expects a ping every 900 ms; pinging every 300 ms" "$LOG" ||
    fleet_die op "no watchdog line in the log"
w0=$(count WATCHDOG=1)
sleep 1.5
w1=$(count WATCHDOG=1)
[ $((w1 - w0)) -ge 3 ] || fleet_die op "only $((w1 - w0)) watchdog pings in 1.5 s"
expect_rc 0 "$KEEL" fleet --json import "$T/sim/manifest.json"

note "SIGHUP with a changed file: live keys applied, the others named for the next start"
FLEET_TICK=3 FLEET_LOG_LEVEL=debug FLEET_GAP_GRACE=9 fleet_conf op
kill -HUP "$FLEET_PID_op"
wait_notify RELOADING=1 1
wait_notify READY=1 2
i=0
until grep -q "fleet: configuration reloaded" "$LOG"; do
    i=$((i + 1)); [ $i -lt 50 ] || fleet_die op "no reload line"; sleep 0.1
done
for want in "reload: \[campaign\] tick = 3" "reload: \[log\] level = debug" \
            "reload: \[ingest\] gap_grace changes at the next start" \
            "configuration reloaded: 2 changes applied, 1 at the next start"; do
    grep -q "$want" "$LOG" || fleet_die op "the reload did not log '$want'"
done

note "SIGHUP with a broken file: refused, the service goes on"
echo "bogus = 1" >>"$FLEET_DIR/op.conf"
kill -HUP "$FLEET_PID_op"
wait_notify RELOADING=1 2
wait_notify READY=1 3
i=0
until grep -q "reload refused, the running configuration stays" "$LOG"; do
    i=$((i + 1)); [ $i -lt 50 ] || fleet_die op "a broken file was not refused"; sleep 0.1
done
expect_rc 0 "$KEEL" fleet --json status
fleet_conf op

note "the database stops answering: the ingest blocks and the watchdog ping is withheld"
publish() {
    "$SIM" publish --broker "127.0.0.1:$BROKER_PORT" --ca "$T/f/service-ca/root.crt" \
        --chain "$FLEET_DIR/device-ca.pem" --json "$@" >"$T/pub.json" 2>"$T/pub.err" ||
        { cat "$T/pub.err" >&2; fail "fleet_sim publish $*"; }
}
publish --devices "$T/sim" --messages 2
fleet_wait_sql "SELECT count(*) FROM messages" 4
PGPID=$(head -n 1 "$PG_DIR/data/postmaster.pid")
PG_STOPPED="$PGPID $(pgrep -P "$PGPID" | tr '\n' ' ')"
kill -STOP $PG_STOPPED
publish --devices "$T/sim" --messages 1 --seq-start 100
i=0
until grep -q "watchdog: a worker is stuck; the ping to systemd is withheld" "$LOG"; do
    i=$((i + 1)); [ $i -lt 100 ] || { pg_resume; fleet_die op "the watchdog kept pinging with the ingest blocked"; }
    sleep 0.1
done
w0=$(count WATCHDOG=1)
sleep 1
[ "$(count WATCHDOG=1)" = "$w0" ] || { pg_resume; fleet_die op "pings went on while the ingest was blocked"; }
pg_resume
i=0
until grep -q "watchdog: the workers turn again; pinging" "$LOG"; do
    i=$((i + 1)); [ $i -lt 100 ] || fleet_die op "the pings did not resume"; sleep 0.1
done
fleet_wait_sql "SELECT count(*) FROM messages" 6

note "SIGTERM: STOPPING=1"
fleet_stop op
wait_notify STOPPING=1 1
echo "fleet_systemd: passed"

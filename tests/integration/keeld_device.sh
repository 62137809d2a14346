#!/bin/sh
# keeld as the device runs it: after `keel boot` picked a newly installed
# (pending) slot, keeld's healthy start confirms it and the anti-rollback
# counter advances; a slot tampered on disk is refused by `keel boot` and the
# alert is shown by keeld's API and log; keeld holds the update lock while it
# runs; under systemd (a NOTIFY_SOCKET of our own) it reports READY=1,
# WATCHDOG=1 (WATCHDOG_USEC), RELOADING=1 then READY=1 on SIGHUP, and
# STOPPING=1 on SIGTERM.
. "$(dirname "$0")/keeld_lib.sh"

provision plug-1
NEWPW="Quiet-Lantern-Orbit-58"

note "a signed 1.0.0 installed and booted: pending until keeld starts healthy"
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name rel --out "$T/signer"
head -c 300000 /dev/urandom >"$T/img"
expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version 1.0.0 --security-version 3 \
    --support-until 2031-12-31 --payload "$T/img" --out "$T/v1.kb"
expect_rc 0 "$KEEL" update install "$T/v1.kb" --state "$D"
expect_rc 0 "$KEEL" boot --state "$D"
expect_rc 0 "$KEEL" update status --state "$D" --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["pending"] == "A" else 1)' "$T/out" ||
    fail "slot A is not pending after the boot: $(cat "$T/out")"

# systemd's side of sd_notify: a datagram socket that records what arrives.
NOTIFY=$T/notify.sock
python3 - "$NOTIFY" "$T/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as log:
    while True:
        msg = s.recv(4096).decode()
        log.write(msg.replace("\n", " ") + "\n")
PY
EXTRA_PIDS="$EXTRA_PIDS $!"
i=0
while [ ! -S "$NOTIFY" ]; do
    i=$((i + 1)); [ $i -lt 50 ] || fail "the notify socket did not appear"; sleep 0.1
done
: >"$T/notify.log"

NOTIFY_SOCKET=$NOTIFY WATCHDOG_USEC=600000 start_keeld
wait_notify() { # MESSAGE COUNT: until MESSAGE arrived COUNT times
    i=0
    while [ "$(grep -c "^$1\$" "$T/notify.log")" -lt "$2" ]; do
        i=$((i + 1)); [ $i -lt 100 ] || { cat "$T/notify.log" >&2; die_log "no $1 (#$2) on NOTIFY_SOCKET"; }
        sleep 0.1
    done
}
wait_notify READY=1 1
note "WatchdogSec=: WATCHDOG=1 from the event loop, three times per interval"
grep -q "watchdog: systemd expects a ping every 600 ms; pinging every 200 ms" "$KEELD_LOG" ||
    die_log "keeld did not arm the watchdog"
w0=$(grep -c "^WATCHDOG=1\$" "$T/notify.log" || true)
sleep 1.2
w1=$(grep -c "^WATCHDOG=1\$" "$T/notify.log" || true)
[ $((w1 - w0)) -ge 4 ] || die_log "only $((w1 - w0)) watchdog pings in 1.2 s"
grep -q "slot A (1.0.0) started healthy and is confirmed; anti-rollback counter 3" "$KEELD_LOG" ||
    die_log "keeld did not confirm the booted slot"

note "while keeld runs it owns the update state: the CLI is refused"
expect_rc 1 "$KEEL" update install "$T/v1.kb" --state "$D"
grep -q "another update, boot or confirm is running" "$T/err" || fail "unexpected refusal: $(cat "$T/err")"

login_ok "$LABEL_PW"
change_password "$TOKEN" "$LABEL_PW" "$NEWPW"
login_ok "$NEWPW"
TOK=$TOKEN expect_http 200 GET /api/v1/update -
jtrue "d['running'] == {'slot': 'A', 'version': '1.0.0', 'security_version': 3} and d['pending'] is None" \
    "slot A is not running and confirmed"
jtrue "d['counter'] == 3" "the counter did not advance to 3"
TOK=$TOKEN expect_http 200 GET /api/v1/device -
jtrue "d['firmware_version'] == '1.0.0' and d['support_until'] == '2031-12-31' and d['tamper_alert'] is None" \
    "device info after the confirm"

note "SIGHUP: RELOADING=1 then READY=1"
kill -HUP "$KEELD_PID"
wait_notify RELOADING=1 1
wait_notify READY=1 2
note "SIGTERM: STOPPING=1"
stop_keeld
wait_notify STOPPING=1 1

note "one byte of the running slot changed on disk: keel boot refuses it, keeld reports it"
flip_byte "$D/update/slot-a.img" 1000
expect_rc 1 "$KEEL" boot --state "$D"
grep -q "TAMPER ALERT" "$T/err" || fail "keel boot raised no tamper alert: $(cat "$T/err")"
start_keeld
grep -q "TAMPER ALERT" "$KEELD_LOG" || die_log "keeld did not log the tamper alert"
login_ok "$NEWPW"
TOK=$TOKEN expect_http 200 GET /api/v1/device -
jtrue "d['tamper_alert'] is not None and 'slot A' in d['tamper_alert']['detail'] and d['tamper_alert']['time'] > 0" \
    "no tamper alert in /api/v1/device"
TOK=$TOKEN expect_http 200 GET /api/v1/update -
jtrue "d['tamper_alert'] is not None" "no tamper alert in /api/v1/update"
stop_keeld

note "a factory reset cut off after its erase is finished by whatever opens the slots next (here keel update status)"
printf 'update.security_version=9\nupdate.trust_version=2\n' >"$D/update/reset-counters"
expect_rc 0 "$KEEL" update status --state "$D" --json
[ ! -e "$D/update/reset-counters" ] || fail "the reset journal is still there"
grep -q "a factory reset was finished" "$T/err" || fail "keel update status did not say it finished the reset"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["security_version_counter"] == 9 else 1)' \
    "$T/out" || fail "the counter did not come back from the journal: $(cat "$T/out")"
note "a journal never lowers a counter"
printf 'update.security_version=4\n' >"$D/update/reset-counters"
expect_rc 0 "$KEEL" update status --state "$D" --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["security_version_counter"] == 9 else 1)' \
    "$T/out" || fail "a journal lowered the counter: $(cat "$T/out")"
echo "keeld_device: 1 passed, 0 failed"

#!/bin/sh
# make demo: the whole story of one device, end to end, on loopback, under one
# temporary directory (docs/internals/demo.md). One device, one broker, one
# keel-fleetd, started once and kept running through the story:
#   1 the manufacturer's PKI          2 a device provisioned (and its batch audited)
#   3 mosquitto with mutual TLS, keel-fleetd on SQLite, keeld and the thermostat
#   4 first-run setup through the API 5 a signed update rolled out by a campaign
#   6 telemetry at the fleet          7 an injected anomaly flagged
#   8 factory reset and the fleet's deletion receipt
#   9 keel assess, as a test lab would
# then shorter demonstrations (the audit catching planted flaws, keys made on
# a SoftHSM2 token, a device key made in a software TPM 2.0 and its state
# refused next to another TPM, tampered and rolled-back bundles refused),
# everything stopped, and a summary with each step's time.
#
# Each step is a function (step_*): its output is captured and shown when it
# ends, with its time. Any failing command fails its step: the demo then
# names the step, shows its output and the services' logs, stops every
# process and exits 1. To add a step: write step_NAME and add a `story`
# line to the list at the end (the place for more is marked there).
#
# KEEL_DEMO_KEEP=1 keeps the directory. On a terminal it also keeps the
# device, the broker and keel-fleetd running after the story, with the setup
# UI's URL, until Enter; then it stops them. Nothing runs on after the demo.
set -eu
BUILD=$(cd "${1:-build}" && pwd)
SRC=$(cd "$(dirname "$0")/.." && pwd)
KEEL=$BUILD/programs/keel/keel
KEELD=$BUILD/programs/keeld/keeld
THERMOSTAT=$BUILD/examples/thermostat/thermostat
for _b in "$KEEL" "$KEELD" "$THERMOSTAT" "$BUILD/programs/keel-fleetd/keel-fleetd"; do
    [ -x "$_b" ] || { echo "demo: $_b is not built (make build)" >&2; exit 1; }
done
for _t in curl openssl python3 sqlite3 mosquitto_pub; do
    command -v "$_t" >/dev/null 2>&1 || { echo "demo: $_t is needed (make deps)" >&2; exit 1; }
done
KEEP=${KEEL_DEMO_KEEP:-}
REPORT=$BUILD/demo-report
W=$(mktemp -d "${TMPDIR:-/tmp}/keel-demo-XXXXXX")
exec 8>&1 9>&2 # the terminal, whatever a step redirected when it failed

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }
T0=$(now_ms)
HELD_MS=0

if [ -t 1 ]; then B=$(printf '\033[1m'); R=$(printf '\033[1;31m'); N=$(printf '\033[0m'); else B='' R='' N=''; fi

# ---- what the test fixtures (tests/integration/broker_lib.sh, fleet_lib.sh) need ----------------
T=$W
KEEL_BUILD_DIR=$BUILD
KEEL_SOURCE_DIR=$SRC
fail() { echo "demo: $*" >&2; exit 1; }
note() { echo "$*"; }
expect_rc() {
    _want=$1
    shift
    "$@" >"$T/out" 2>"$T/err" && _got=0 || _got=$?
    [ "$_got" = "$_want" ] || { cat "$T/out" "$T/err" >&2; fail "exit $_got, expected $_want: $*"; }
}
free_port() { # below the ephemeral range, where nothing else on the machine takes ports meanwhile
    python3 -c 'import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    p = random.randrange(10000, max(lo, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("free_port: no free port below the ephemeral range")'
}
KEELD_PID=
THERMO_PID=
TPM_KEELD_PID= # the TPM step's own keeld
keeld_cleanup() { # the end of fleet_lib.sh's and broker_lib.sh's exit chain
    for _p in $THERMO_PID $KEELD_PID $TPM_KEELD_PID; do
        kill -KILL "$_p" 2>/dev/null || :
        wait "$_p" 2>/dev/null || :
    done
}
cleanup() { :; }
KEEL_DEMO_PASSPHRASE=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
export KEEL_DEMO_PASSPHRASE
BROKER_ISSUE_ARGS="--passphrase-env KEEL_DEMO_PASSPHRASE"
# One keel-fleetd: plain subscriptions, which mosquitto keeps queueing across
# its restarts (a shared one is restored without its queue: fleetd.md).
FLEET_SHARE_GROUP=none
FLEET_PASS_ARGS="--passphrase-env KEEL_DEMO_PASSPHRASE"
. "$SRC/tests/integration/broker_lib.sh"
. "$SRC/tests/integration/fleet_lib.sh"

# ---- software TPMs 2.0 for step_tpm: tests/integration/tpm_lib.sh, embedded -------------------------
# No trap of its own (on_exit calls tpm_cleanup) and nothing exported: each
# command names its TPM with env "$(tpm_bus NAME)".
TPM_LIB_EMBED=1
. "$SRC/tests/integration/tpm_lib.sh"

# ---- the story's frame ----------------------------------------------------------------------------
STEP_NO=0
STEP_TITLE=
STEP_T0=$T0
STEP_OUT=
: >"$W/summary"
clean() { # paths as the reader would type them
    sed -e "s|$KEEL |keel |g" -e "s|$KEELD |keeld |g" -e "s|$THERMOSTAT |thermostat |g" -e "s|$W|\$DEMO|g" \
        -e "s|$SRC/||g" ${TPM_BASE:+-e "s|$TPM_BASE|\$TPM|g"}
}

# story FUNCTION TITLE: runs one step, its output captured, and shows it with its time.
story() {
    STEP_NO=$((STEP_NO + 1))
    STEP_TITLE=$2
    STEP_OUT=$W/step-$STEP_NO.out
    printf '\n%s== %d. %s%s\n' "$B" "$STEP_NO" "$STEP_TITLE" "$N"
    STEP_T0=$(now_ms)
    "$1" >"$STEP_OUT" 2>&1 </dev/null
    # the failure path, on purpose (tests/integration/demo_smoke.sh)
    [ "${KEEL_DEMO_BREAK:-}" != "$1" ] || fail "$1 failed on purpose (KEEL_DEMO_BREAK)" >>"$STEP_OUT" 2>&1
    STEP_MS=$(($(now_ms) - STEP_T0))
    clean <"$STEP_OUT"
    printf '%s   ok: step %d in %s s%s\n' "$B" "$STEP_NO" "$(secs "$STEP_MS")" "$N"
    printf '%d\t%s\t%s\n' "$STEP_NO" "$(secs "$STEP_MS")" "$STEP_TITLE" >>"$W/summary"
    STEP_OUT=
}

on_exit() {
    _rc=$?
    exec 1>&8 2>&9
    if [ -n "$STEP_OUT" ]; then
        [ "$_rc" -ne 0 ] || _rc=1
        _how=FAILED
        [ "$_rc" -ne 130 ] || _how=interrupted
        printf '\n%sdemo: %s at step %d after %s s: %s%s\n' "$R" "$_how" "$STEP_NO" \
            "$(secs $(($(now_ms) - STEP_T0)))" "$STEP_TITLE" "$N" >&2
        echo "--- the step's output:" >&2
        cat "$STEP_OUT" >&2
        for _l in "$W/keeld.log" "$FLEET_DIR/op.log" "$BROKER_LOG" "$W/thermostat.log" "$W/tpm-keeld.log"; do
            [ -s "$_l" ] || continue
            echo "--- $_l (last 25 lines):" >&2
            tail -n 25 "$_l" >&2
        done
        if [ -n "$KEEP" ]; then _kept="kept: $W"; else _kept="removed; KEEL_DEMO_KEEP=1 keeps it"; fi
        echo "--- every process of the demo stopped; its directory $_kept" >&2
    fi
    fleet_cleanup # keel-fleetd, mosquitto and its clients, keeld, the thermostat: by pid
    tpm_cleanup   # the software TPMs of step_tpm: by pid
    [ -n "$KEEP" ] || rm -rf "$W"
    exit "$_rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# show_cmd CMD...: the command as one would type it.
show_cmd() {
    _line=\$
    for _a in "$@"; do
        case $_a in *" "*) _line="$_line '$_a'" ;; *) _line="$_line $_a" ;; esac
    done
    echo "$_line"
}
# run CMD...: shows the command, then runs it (its output follows).
run() {
    show_cmd "$@"
    "$@"
}
# refused WHAT CMD...: CMD must fail; its message is shown.
refused() {
    _what=$1
    shift
    show_cmd "$@"
    if "$@" >"$W/refused.out" 2>&1; then cat "$W/refused.out"; fail "$_what was accepted"; fi
    cat "$W/refused.out"
}
# wait_until SECONDS WHAT CMD...: until CMD succeeds (tried every 0.1 s at most).
wait_until() {
    _end=$(($(now_ms) + $1 * 1000)) _what="$2 (waited $1 s)"
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$(now_ms)" -lt "$_end" ] || fail "$_what"
        sleep 0.1
    done
}
in_log() { grep -q -- "$2" "$1"; } # in_log FILE TEXT
# py EXPR FILE: a Python expression over the JSON in FILE (as d).
py() {
    python3 -c 'import json,sys; d = json.load(open(sys.argv[2])); v = eval(sys.argv[1]); print("" if v is None else v)' \
        "$1" "$2"
}
true_in() { [ "$(py "bool($1)" "$2")" = True ]; }

# api WANT METHOD ROUTE [JSON [TOKEN]]: one request to the device's API,
# shown with its answer (session tokens masked); fails unless it answers WANT.
api() {
    _code=$(curl -sk --max-time 20 -o "$W/resp" -w '%{http_code}' -X "$2" ${5:+-H "Authorization: Bearer $5"} \
        ${4:+-H 'Content-Type: application/json' --data-binary "$4"} "https://127.0.0.1:$PORT/api/v1/$3") || _code=000
    printf '  %s /api/v1/%s -> %s %s\n' "$2" "$3" "$_code" \
        "$(sed 's/"token":"[^"]*"/"token":"…"/g; s/"csrf":"[^"]*"/"csrf":"…"/g' "$W/resp" | tr -d '\n' | cut -c1-240)"
    [ "$_code" = "$1" ] || fail "$2 /api/v1/$3 answered $_code, expected $1"
}
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
login() { # login PASSWORD: sets TOKEN
    api 200 POST session "{\"username\":\"admin\",\"password\":$(json_str "$1")}"
    TOKEN=$(py 'd["token"]' "$W/resp")
}

# keel fleet, as the operator (KEEL_FLEET_* from fleet_setup)
# fleet ARGS...: shown, with its output (only the lines matching $FLEET_SHOW when that is set).
FLEET_SHOW=
fleet() {
    show_cmd keel fleet "$@"
    "$KEEL" fleet "$@" >"$W/fleet.txt" 2>&1 || { cat "$W/fleet.txt"; fail "keel fleet $* failed"; }
    grep -E -- "${FLEET_SHOW:-.}" "$W/fleet.txt" | sed 's/^/  /'
    FLEET_SHOW=
}
fj() { "$KEEL" fleet --json "$@" >"$W/fleet.json" 2>"$W/fleet.err"; } # the answer in $W/fleet.json
fleet_true() { # fleet_true PYEXPR ARGS...: `keel fleet --json ARGS` answers and PYEXPR holds over it (d)
    _e=$1
    shift
    fj "$@" && true_in "$_e" "$W/fleet.json"
}

# ---- the device and its services ----------------------------------------------------------------
PORT=
SOCK=$W/app.sock
keeld_start() {
    echo "\$ keeld --config $D/keeld.conf -o api.listen=127.0.0.1:$PORT -o link.broker=127.0.0.1:$BROKER_PORT" \
        "-o update.server=https://127.0.0.1:$FLEET_DIST_PORT -o ipc.socket=$SOCK ... &"
    "$KEELD" --config "$D/keeld.conf" -o "api.listen=127.0.0.1:$PORT" \
        -o "link.broker=127.0.0.1:$BROKER_PORT" -o link.first_connect=0 -o link.backoff_cap=2 -o "ipc.socket=$SOCK" \
        -o "update.server=https://127.0.0.1:$FLEET_DIST_PORT" -o update.first_check=0 \
        -o auth.report_window=2 </dev/null >/dev/null 2>>"$W/keeld.log" &
    KEELD_PID=$!
    _i=0
    until curl -sk --max-time 2 -o /dev/null "https://127.0.0.1:$PORT/api/v1/status"; do
        kill -0 "$KEELD_PID" 2>/dev/null || fail "keeld exited: $(tail -n 5 "$W/keeld.log")"
        _i=$((_i + 1))
        [ $_i -lt 150 ] || fail "keeld did not answer within 15 s"
        sleep 0.1
    done
}
keeld_stop() { # SIGTERM; keeld must end with status 0
    kill -TERM "$KEELD_PID"
    wait "$KEELD_PID" && _rc=0 || _rc=$?
    KEELD_PID=
    [ "$_rc" -eq 0 ] || fail "keeld exited with status $_rc on SIGTERM"
}

# ---- the story --------------------------------------------------------------------------------------

step_factory() {
    echo "Three separate PKIs (device, release, service), their root keys encrypted under a passphrase:"
    run "$KEEL" factory init --dir "$W/factory" --org "Acme Thermostats" --passphrase-env KEEL_DEMO_PASSPHRASE
    echo "A release signer for the thermostat's updates, from the release CA:"
    run "$KEEL" bundle signer --dir "$W/factory" --name "thermo release 2026" --out "$W/signer" \
        --passphrase-env KEEL_DEMO_PASSPHRASE
}

step_provision() {
    echo "A batch of 5 thermostats: each its own key, an id from the key, a certificate, a label password:"
    run "$KEEL" factory provision --dir "$W/factory" --model thermo-1 --count 5 --out "$W/batch" \
        --product "$SRC/examples/thermostat/product.json"
    DEV=$(sed -n 2p "$W/batch/labels.csv" | cut -d, -f1)
    D=$W/batch/$DEV
    echo "The demo follows the first one, $DEV. Its state directory, as it is flashed:"
    (cd "$D" && find . -type f | sort | while read -r f; do printf '  %-26s %s\n' "$f" "$(stat -c %a "$f")"; done)
    openssl x509 -in "$D/identity/device.crt" -noout -subject -issuer | sed 's/^/  /'
    openssl verify -CAfile "$W/factory/device-ca/root.crt" -untrusted "$W/factory/device-ca/issuing.crt" \
        "$D/identity/device.crt" | sed 's/^/  /'
    grep "^$DEV," "$W/batch/labels.csv" | awk -F, '{printf "  label: serial %s, password %s-xxxxxx-xxxxxx", $2, substr($4,1,6)}
        END {print " (masked; stored on the device only as an Argon2id hash)"}'
    echo "The factory image, 1.0.0, signed and flashed into slot A:"
    head -c 262144 /dev/urandom >"$W/image-1.0"
    "$KEEL" bundle create --signer "$W/signer" --model thermo-1 --version 1.0.0 --security-version 1 \
        --support-until 2031-12-31 --payload "$W/image-1.0" --out "$W/thermo-1.0.kb" \
        --passphrase-env KEEL_DEMO_PASSPHRASE >/dev/null
    run "$KEEL" update install "$W/thermo-1.0.kb" --state "$D"
    run "$KEEL" boot --state "$D"
    run "$KEEL" update confirm --state "$D"
    echo "The batch audited for provision 5.1-2 (unique, unguessable passwords; keys not shared):"
    run "$KEEL" factory audit "$W/batch" --verify-hashes 5
}

step_services() {
    echo "mosquitto with the shipped packaging/mosquitto/keel-broker.conf, on 127.0.0.1 only: mutual TLS"
    echo "(client certificates of the device or the service CA, CRLs), each identity held to its topics by the ACL:"
    fleet_setup "$W/factory"
    # The product's own cloud sends the thermostat's commands under an identity
    # of its own (a client certificate from the service CA); the broker's ACL
    # gets the one line it needs. (keel-fleet's certificate would take over
    # keel-fleetd's session: the client id is the certificate's name.)
    mkdir -p "$W/broker-conf"
    cp "$BROKER_CONF" "$(dirname "$BROKER_CONF")/keel-broker.acl" "$W/broker-conf/"
    printf '\n# The product cloud of the demo: the thermostat commands only.\n%s\n%s\n' "user acme-cloud" \
        "topic write keel/v1/+/cmd/set" >>"$W/broker-conf/keel-broker.acl"
    BROKER_CONF=$W/broker-conf/keel-broker.conf
    "$KEEL" factory issue-client --dir "$W/factory" --name acme-cloud --out "$W/acme-cloud" \
        --passphrase-env KEEL_DEMO_PASSPHRASE >/dev/null
    broker_start
    echo "$BROKER_PID" >"$BROKER_DIR/broker.pid"
    echo "  mosquitto on 127.0.0.1:$BROKER_PORT, server certificate from the service CA"
    fleet_start op
    echo "keel-fleetd: registry in SQLite ($FLEET_DIR/fleet.db), MQTT as keel-fleet (service CA client certificate,"
    echo "  one instance: plain subscriptions, queued by the broker across its restarts),"
    echo "  update server https://127.0.0.1:$FLEET_DIST_PORT (devices' certificates required),"
    echo "  admin API and dashboard https://127.0.0.1:$FLEET_ADMIN_PORT/ (operator token)"
    fleet import "$W/batch/manifest.json"
    PORT=$(free_port)
    echo "keeld on the device: the local HTTPS API, the cloud link, the fleet's update server, the app socket:"
    keeld_start
    wait_until 30 "keeld did not come online" in_log "$W/keeld.log" "link: online"
    grep -E "link: connected|link: online" "$W/keeld.log" | head -n 2 | sed 's/^/  /'
    echo "The certificate keeld presents is the device's own (the label's cert_sha256):"
    _fp=$(echo | openssl s_client -connect "127.0.0.1:$PORT" 2>/dev/null | openssl x509 -noout -fingerprint -sha256 |
        sed 's/.*=//')
    [ "$_fp" = "$(grep "^$DEV," "$W/batch/labels.csv" | cut -d, -f5)" ] || fail "keeld's certificate is not the device's"
    echo "  SHA-256 $_fp, as on the label"
    echo "The product app, the thermostat, on keeld's socket (a reading every 0.5 s):"
    echo "\$ thermostat --socket $SOCK --interval 0.5 --status $W/thermostat.json &"
    "$THERMOSTAT" --socket "$SOCK" --interval 0.5 --status "$W/thermostat.json" </dev/null >/dev/null \
        2>"$W/thermostat.log" &
    THERMO_PID=$!
    wait_until 30 "the fleet did not see the device's boot report" fleet_true \
        'd["state"] == "active" and d["version"] == "1.0.0"' device "$DEV"
    echo "The fleet has the device's boot report over MQTT: $DEV $(py 'd["state"]' "$W/fleet.json")," \
        "running $(py 'd["version"]' "$W/fleet.json")"
    echo "No campaign ever released 1.0.0 (the factory flashed it), so the fleet's version detector flags it"
    echo "(the fleet learns releases from campaigns only; there is no import of factory releases yet):"
    wait_until 10 "no version alert for the factory image" fleet_true \
        'any(a["device"] == "'"$DEV"'" for a in d["alerts"])' alerts --kind version
    fleet alerts --kind version
    wait_until 10 "the thermostat did not connect" true_in 'd["connected"]' "$W/thermostat.json"
    sleep 1
    _n=$(fleet_sql "SELECT count(*) FROM messages WHERE device = '$DEV' AND kind = 'telemetry'")
    [ "$_n" = 0 ] || fail "telemetry left the device before the owner's consent"
    echo "The thermostat is connected; keeld withholds its readings until the owner consents:" \
        "$(py 'd["published"]' "$W/thermostat.json") taken, $_n at the fleet"
}

step_setup() {
    echo "Only GET status answers without a session; the device says it needs its first-run setup:"
    api 200 GET status
    api 401 GET device
    echo "A wrong password, then the label password: it logs in, but only to set a new password:"
    api 401 POST session '{"username":"admin","password":"not-the-label"}' # a wrong one on purpose; secret-scan: allow
    LABEL_PW=$(grep "^$DEV," "$W/batch/labels.csv" | cut -d, -f4)
    login "$LABEL_PW"
    true_in 'd["must_change_password"]' "$W/resp" || fail "the label password gave a full session"
    api 403 GET device '' "$TOKEN"
    echo "A weak password is explained; a good one is taken, and it ends every session:"
    api 422 POST password "{\"current\":$(json_str "$LABEL_PW"),\"new\":\"thermo-1-password\"}" "$TOKEN"
    OWNER_PW=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    api 204 POST password "{\"current\":$(json_str "$LABEL_PW"),\"new\":\"$OWNER_PW\"}" "$TOKEN"
    api 401 GET device '' "$TOKEN"
    echo "The owner logs in with the new password:"
    login "$OWNER_PW"
    api 200 GET device '' "$TOKEN"
    echo "What the thermostat senses and sends, declared (GET /api/v1/privacy):"
    api 200 GET privacy '' "$TOKEN" >/dev/null
    python3 -c 'import json,sys
for c in json.load(open(sys.argv[1]))["categories"]:
    print("  %-14s %-9s kept %3d days, fields %s" % (c["id"], c["legal_basis"], c["retention_days"],
          ",".join(c["telemetry_fields"]) or "-"))' "$W/resp"
    echo "The climate readings rest on consent; the owner gives it:"
    api 200 PUT privacy/consent '{"purpose":"climate","given":true,"version":"1"}' "$TOKEN"
    wait_until 10 "the keeld log lacks the consent" in_log "$W/keeld.log" "consent for climate given"
    echo "The setup UI, the same API in a browser: https://127.0.0.1:$PORT/"
}

step_update() {
    echo "Release 1.1.0 (security version 2), signed by the release signer:"
    head -c 1048576 /dev/urandom >"$W/image-1.1"
    printf 'Fixes the setpoint rounding.\nCloses a heap overflow in the schedule parser.\n' >"$W/notes"
    run "$KEEL" bundle create --signer "$W/signer" --model thermo-1 --version 1.1.0 --security-version 2 \
        --support-until 2032-06-30 --payload "$W/image-1.1" --out "$W/thermo-1.1.kb" --notes "$W/notes" \
        --security-fixes KEEL-2026-001 --risk "a crafted schedule could run code on the device" \
        --passphrase-env KEEL_DEMO_PASSPHRASE
    echo "A campaign: keel-fleetd verifies the bundle against its release root and offers it to every thermo-1:"
    echo "\$ keel fleet campaign create --bundle $W/thermo-1.1.kb --model thermo-1 --percent 100 --security"
    fj campaign create --bundle "$W/thermo-1.1.kb" --model thermo-1 --percent 100 --security ||
        fail "campaign create: $(cat "$W/fleet.err")"
    CAMP=$(py 'd["id"]' "$W/fleet.json")
    echo "  campaign $CAMP: $(py 'd["version"]' "$W/fleet.json")"
    wait_until 60 "the device did not install 1.1.0" fleet_true 'd["counts"]["installed"] == 1' campaign show "$CAMP"
    echo "Told over MQTT, the device fetched it over mutual TLS and installed it into the inactive slot:"
    grep "update server: sending" "$FLEET_DIR/op.log" | sed 's/^keel-fleetd: info: fleet: /  keel-fleetd: /'
    grep "needs a reboot" "$W/keeld.log" | tail -n 1 | sed 's/^keeld: info: /  keeld: /'
    echo "The device reboots (emulated: keeld stops, the boot loader's step, keeld starts again);"
    echo "the thermostat regulates on meanwhile and reconnects:"
    keeld_stop
    run "$KEEL" boot --state "$D"
    keeld_start
    wait_until 30 "the campaign was not confirmed" fleet_true 'd["counts"]["confirmed"] == 1' campaign show "$CAMP"
    grep -E "confirm" "$W/keeld.log" | tail -n 1 | sed 's/^keeld: info: /  keeld: /'
    FLEET_SHOW="version|selected|notified|confirmed|failed"
    fleet campaign show "$CAMP"
    wait_until 10 "the fleet's registry does not show 1.1.0" fleet_true 'd["version"] == "1.1.0"' device "$DEV"
    echo "  the registry: $DEV runs $(py 'd["version"]' "$W/fleet.json")" \
        "(security version $(py 'd["security_version"]' "$W/fleet.json"))"
    login "$OWNER_PW"
    api 200 GET update '' "$TOKEN"
    wait_until 20 "the thermostat did not reconnect" true_in 'd["connected"]' "$W/thermostat.json"
}

telemetry_stored() { [ "$(fleet_sql "SELECT count(*) FROM messages WHERE device = '$DEV' AND kind = 'telemetry'")" -ge "$1" ]; }
# all_up_to N: the fleet stored every message of the device from seq 1 to N (seq is unique per device there).
all_up_to() { [ "$(fleet_sql "SELECT count(*) FROM messages WHERE device = '$DEV' AND seq BETWEEN 1 AND $1")" = "$1" ]; }

step_telemetry() {
    wait_until 20 "no telemetry reached the fleet" telemetry_stored 4
    echo "Readings flow since the consent: thermostat -> keeld's outbox -> MQTT (mutual TLS) -> keel-fleetd -> SQLite."
    fleet device "$DEV"
    echo "The newest reading the fleet stored:"
    fleet_sql "SELECT seq, body FROM messages WHERE device = '$DEV' AND kind = 'telemetry' ORDER BY seq DESC LIMIT 1" |
        sed 's/^/  seq /'
    echo "The product's cloud (identity acme-cloud, allowed keel/v1/+/cmd/set only) sets the setpoint to 22.5:"
    mosquitto_pub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -t "keel/v1/$DEV/cmd/set" \
        -m '{"setpoint":22.5}' --cafile "$W/factory/service-ca/root.crt" \
        --cert "$W/acme-cloud/client.crt" --key "$W/acme-cloud/client.key" 2>"$W/pub.err" ||
        fail "mosquitto_pub: $(cat "$W/pub.err")"
    wait_until 10 "the thermostat did not take the command" true_in 'd["setpoint"] == 22.5' "$W/thermostat.json"
    echo "  thermostat: setpoint $(py 'd["setpoint"]' "$W/thermostat.json") C," \
        "$(py 'd["commands"]' "$W/thermostat.json") command(s) taken"
    echo "The broker goes away for 3 s. The thermostat regulates on; keeld's outbox keeps the readings:"
    broker_stop
    for _i in 1 2 3; do
        sleep 1
        api 200 GET link '' "$TOKEN" >/dev/null
        python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); t = json.load(open(sys.argv[2]))
print("  link %-8s outbox %3d queued   thermostat %.1f C, heating %s" % (d["link"]["state"], d["outbox"]["pending"],
      t["temperature"], "on" if t["heating"] else "off"))' "$W/resp" "$W/thermostat.json"
    done
    echo "The broker is back: the outbox drains into the fleet, nothing lost, nothing twice:"
    _conns=$(grep -c "connected to the broker" "$FLEET_DIR/op.log" || :)
    _t=$(now_ms)
    broker_start
    echo "$BROKER_PID" >"$BROKER_DIR/broker.pid"
    _back() { [ "$(grep -c "connected to the broker" "$FLEET_DIR/op.log" || :)" -gt "$_conns" ]; }
    wait_until 70 "keel-fleetd did not come back to the broker" _back
    echo "  keel-fleetd back on the broker after $(secs $(($(now_ms) - _t))) s (its back-off: 1 s doubling to 60 s, jittered):"
    grep "connected to the broker" "$FLEET_DIR/op.log" | tail -n 1 | sed 's/^keel-fleetd: info: fleet: /  keel-fleetd: /'
    _drained() { api 200 GET link '' "$TOKEN" >/dev/null && true_in 'd["outbox"]["pending"] == 0' "$W/resp"; }
    wait_until 30 "the outbox did not drain" _drained
    _last=$(($(py 'd["outbox"]["next_seq"]' "$W/resp") - 1))
    wait_until 20 "the fleet lacks messages up to seq $_last" all_up_to "$_last"
    if ! fj device "$DEV" || ! true_in 'd["sequence"]["lost"] == 0' "$W/fleet.json"; then
        fail "the fleet counts lost messages"
    fi
    echo "  link $(py 'd["link"]["state"]' "$W/resp"), outbox 0 queued, the device's last seq $_last;" \
        "the fleet holds seq 1..$_last: $_last messages, no gap, none twice, 0 lost"
}

step_anomaly() {
    _mark=$(wc -l <"$W/keeld.log")
    echo "24 addresses (127.0.0.2 to 127.0.0.25) try one password each on the device's login:"
    for _i in $(seq 2 25); do
        curl -sk --max-time 30 --interface "127.0.0.$_i" -o /dev/null -w '%{http_code}\n' -X POST \
            -H 'Content-Type: application/json' --data-binary "{\"username\":\"admin\",\"password\":\"guess-$_i-x\"}" \
            "https://127.0.0.1:$PORT/api/v1/session" >>"$W/guesses" 2>&1 || :
    done
    sort "$W/guesses" | uniq -c | awk '{printf "  %d answered HTTP %s\n", $1, $2}'
    echo "keeld reports failed logins to the fleet, one auth-failures event per window (2 s here);"
    echo "keel-fleetd's detectors flag the device (auth: 20 or more failures within an hour):"
    wait_until 30 "no auth alert for the device" fleet_true \
        'any(a["device"] == "'"$DEV"'" for a in d["alerts"])' alerts --kind auth
    _reported() { # every one of the 24 failures reported (the alert may come before the last report)
        [ "$(tail -n +"$((_mark + 1))" "$W/keeld.log" | sed -n 's/.*auth: \([0-9]*\) failed logins in the last.*/\1/p' |
            awk '{n += $1} END {print n + 0}')" -ge 24 ]
    }
    wait_until 10 "keeld did not report all 24 failures" _reported
    tail -n +"$((_mark + 1))" "$W/keeld.log" | grep "failed logins in the last" | sed 's/^keeld: info: /  keeld: /'
    fleet alerts --kind auth
}

step_reset() {
    _before=$(fleet_sql "SELECT count(*) FROM messages WHERE device = '$DEV'")
    echo "The fleet holds $_before messages of the device. The owner resets it to factory state:"
    api 202 POST factory-reset "{\"password\":$(json_str "$OWNER_PW")}" "$TOKEN" >/dev/null
    python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))["receipt"]
print("  the device'"'"'s receipt:")
for e in r["device"]["erased"]: print("    erased: " + e)
for k in r["device"]["kept"]: print("    kept:   " + k)
print("    cloud:  erase request %s (%s)" % (r["cloud"]["request"], r["cloud"]["status"]))' "$W/resp"
    REQ=$(py 'd["receipt"]["cloud"]["request"]' "$W/resp")
    echo "The erase request goes to the fleet over MQTT; keel-fleetd erases and answers with its receipt:"
    wait_until 30 "the fleet did not confirm the erase" in_log "$W/keeld.log" "the fleet confirmed the cloud erase $REQ"
    grep "erased .* messages of $DEV (request $REQ)" "$FLEET_DIR/op.log" | sed 's/^keel-fleetd: info: fleet: /  keel-fleetd: /'
    grep "the fleet confirmed the cloud erase $REQ" "$W/keeld.log" | sed 's/^keeld: info: /  keeld: /'
    _upto=$(fleet_sql "SELECT erased_seq FROM device_seq WHERE device = '$DEV'")
    _left=$(fleet_sql "SELECT count(*) FROM messages WHERE device = '$DEV' AND seq <= $_upto")
    [ "$_left" = 0 ] || fail "the fleet still holds $_left messages from before the erase"
    echo "  the fleet now holds $_left of the device's messages up to the erase (seq 1..$_upto)"
    echo "The label password is in force again; a new owner (here: the test lab) sets up the device:"
    login "$LABEL_PW"
    LAB_PW=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    api 204 POST password "{\"current\":$(json_str "$LABEL_PW"),\"new\":\"$LAB_PW\"}" "$TOKEN"
    login "$LAB_PW"
    echo "The device shows the fleet's deletion receipt (GET /api/v1/privacy/erase):"
    api 200 GET privacy/erase '' "$TOKEN"
    true_in 'd["requests"][0]["id"] == "'"$REQ"'" and d["requests"][0]["confirmed"] > 0
             and d["requests"][0]["receipt"]["erased"]' "$W/resp" || fail "the receipt is not shown as confirmed"
    api 200 GET privacy/export '' "$TOKEN" >/dev/null
    true_in 'd["privacy"]["records"] == [] and d["privacy"]["consent"]["log"] == []' "$W/resp" ||
        fail "the export still holds personal data"
    echo "  the export: no records, no consent log, no product state left"
}

step_assess() {
    echo "The lab gets the ICS and IXIT (examples/keel-device with this device's port), test bundles,"
    echo "the publications as files, the firmware tree and the label file; the scan is limited to the"
    echo "device's port, as the broker and keel-fleetd share this loopback."
    rm -rf "$REPORT"
    KEEL_ASSESS_PASSWORD=$LAB_PW sh "$SRC/scripts/demo_assess.sh" "$KEEL" "$KEELD" "$W" "$PORT" "$REPORT"
    echo "The evidence report: $REPORT/report.html (also report.json, report.md, junit.xml)"
}

# ---- shorter demonstrations -------------------------------------------------------------------------

step_audit_flaws() {
    echo "A careless factory: one password reused, one derived from the serial. The audit catches both:"
    cp "$W/batch/labels.csv" "$W/labels.good"
    awk -F, -v OFS=, 'NR==2{pw=$4} NR==3{$4=pw} NR==4{$4=tolower($2) "-01"} {print}' "$W/labels.good" \
        >"$W/batch/labels.csv"
    refused "an audit of a flawed batch" "$KEEL" factory audit "$W/batch" --verify-hashes 0 >"$W/audit.out"
    cp "$W/labels.good" "$W/batch/labels.csv"
    grep -E "FAIL|finding" "$W/audit.out"
}

step_softhsm() {
    _m=
    for _f in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so; do
        [ -z "$_m" ] && [ -f "$_f" ] && _m=$_f
    done
    if [ -z "$_m" ] || ! command -v softhsm2-util >/dev/null 2>&1 || ! command -v pkcs11-tool >/dev/null 2>&1; then
        echo "skipped: SoftHSM2 and pkcs11-tool are not installed (make deps installs them)"
        return 0
    fi
    echo "The same with a secure element (a SoftHSM2 token): the device keys are made on the token:"
    mkdir -p "$W/tokens"
    printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$W" >"$W/softhsm2.conf"
    SOFTHSM2_CONF=$W/softhsm2.conf
    export SOFTHSM2_CONF
    _pin=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$_pin" >"$W/token.pin")
    softhsm2-util --init-token --free --label demo-se --so-pin "$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
        --pin "$_pin" >/dev/null
    run "$KEEL" factory provision --dir "$W/factory" --model cam-2 --count 2 --out "$W/se-batch" \
        --keystore pkcs11 --pkcs11-module "$_m" --pkcs11-token demo-se --pkcs11-pin-file "$W/token.pin"
    echo "What the token says about the device keys:"
    pkcs11-tool --module "$_m" --token-label demo-se --login --pin "$_pin" --list-objects --type privkey 2>/dev/null |
        grep -E "label|Usage|Access" | sed 's/^ */  /'
}

# tpm_keeld CONF PORT BUS: keeld with that state on 127.0.0.1:PORT, its TPM the one on BUS; sets TPM_KEELD_PID.
tpm_keeld() {
    env "$3" "$KEELD" --config "$1" -o "api.listen=127.0.0.1:$2" </dev/null >/dev/null 2>>"$W/tpm-keeld.log" &
    TPM_KEELD_PID=$!
}
# tpm_keeld_rc: waits up to 20 s for that keeld to end by itself; sets _rc.
tpm_keeld_rc() {
    _i=0
    while kill -0 "$TPM_KEELD_PID" 2>/dev/null && [ "$(ps -o stat= -p "$TPM_KEELD_PID" | cut -c1)" != Z ]; do
        _i=$((_i + 1))
        [ $_i -lt 200 ] || fail "keeld kept running next to the other TPM"
        sleep 0.1
    done
    wait "$TPM_KEELD_PID" && _rc=0 || _rc=$?
    TPM_KEELD_PID=
}

step_tpm() {
    if ! tpm_available; then
        echo "skipped: swtpm, tpm2-abrmd, tpm2-tools or tpm2-openssl is not installed (make deps installs them)"
        return 0
    fi
    echo "The same with a TPM 2.0: two software TPMs (swtpm, each behind its own tpm2-abrmd on a private D-Bus,"
    echo "as nobody, on loopback ports picked here): the device's, and an \"other\" one:"
    tpm_start main
    tpm_start other
    echo "  main:  $(tpm_bus main)"
    echo "  other: $(tpm_bus other)"
    echo "A device provisioned by the demo's factory with its key made in the main TPM (TCTI $TPM_TCTI):"
    show_cmd "$(tpm_bus main)" "$KEEL" factory provision --dir "$W/factory" --model thermo-1 --count 1 \
        --out "$W/tpm-batch" --keystore tpm2 --tpm2-tcti "$TPM_TCTI"
    env "$(tpm_bus main)" "$KEEL" factory provision --dir "$W/factory" --model thermo-1 --count 1 \
        --out "$W/tpm-batch" --keystore tpm2 --tpm2-tcti "$TPM_TCTI"
    _id=$(sed -n 2p "$W/tpm-batch/labels.csv" | cut -d, -f1)
    _td=$W/tpm-batch/$_id
    echo "Device $_id: keeld.conf names the TPM; the keystore holds a TSS2 key blob and the key's PIN:"
    sed -n '/^\[keystore\]/,/^$/p' "$_td/keeld.conf" | sed '/^$/d; s/^/  /'
    (cd "$_td" && for _f in keystore/*; do printf '  %-26s %s\n' "$_f" "$(stat -c %a "$_f")"; done)
    echo "The key as the TPM made it (tpm2_print: the blob holds its public part and the TPM-wrapped private part):"
    show_cmd tpm2_print -t TSSPRIVKEY_OBJ "$_td/keystore/device.tpm2"
    tpm2_print -t TSSPRIVKEY_OBJ "$_td/keystore/device.tpm2" >"$W/tpm-print"
    sed -n '/^type:/{n;s/^ *value: */  type: /p}; /^curve-id:/{n;s/^ *value: */  curve: /p}' "$W/tpm-print"
    _attrs=$(sed -n '/^attributes:/{n;s/^ *value: *//p}' "$W/tpm-print")
    for _a in fixedtpm fixedparent sensitivedataorigin userwithauth sign; do
        case "|$_attrs|" in *"|$_a|"*) ;; *) fail "the key lacks $_a: $_attrs" ;; esac
    done
    case "|$_attrs|" in *"|noda|"*) fail "the key is exempt from the dictionary-attack lockout: $_attrs" ;; esac
    echo "  attributes: $_attrs"
    echo "  fixedtpm|fixedparent|sensitivedataorigin: made inside this TPM, never to leave it; no noda: wrong PINs"
    echo "  count towards the TPM's dictionary-attack lockout"

    _port=$(free_port)
    echo "keeld serves the device's HTTPS API with the key in the TPM:"
    echo "\$ $(tpm_bus main) keeld --config $_td/keeld.conf -o api.listen=127.0.0.1:$_port &"
    tpm_keeld "$_td/keeld.conf" "$_port" "$(tpm_bus main)"
    _i=0
    until curl -sk --max-time 2 -o /dev/null "https://127.0.0.1:$_port/api/v1/status"; do
        kill -0 "$TPM_KEELD_PID" 2>/dev/null || fail "keeld exited: $(tail -n 5 "$W/tpm-keeld.log")"
        _i=$((_i + 1))
        [ $_i -lt 150 ] || fail "keeld did not answer within 15 s"
        sleep 0.1
    done
    echo "One request in TLS 1.3 and one in TLS 1.2, each verified against the factory's device CA:"
    for _v in 1.3 1.2; do
        show_cmd curl --cacert "$W/factory/device-ca/root.crt" --resolve "$_id:$_port:127.0.0.1" \
            --tlsv"$_v" --tls-max "$_v" "https://$_id:$_port/api/v1/status"
        _code=$(curl -sS -v --max-time 20 --cacert "$W/factory/device-ca/root.crt" \
            --resolve "$_id:$_port:127.0.0.1" --tlsv"$_v" --tls-max "$_v" -o "$W/resp" -w '%{http_code}' \
            "https://$_id:$_port/api/v1/status" 2>"$W/tpm-curl.err") || {
            cat "$W/tpm-curl.err"
            fail "TLS $_v to keeld failed"
        }
        [ "$_code" = 200 ] || fail "TLS $_v: GET /api/v1/status answered $_code"
        grep -q "^\*  SSL certificate verify ok" "$W/tpm-curl.err" || fail "TLS $_v: the certificate was not verified"
        grep -q "^\*  subject: .*CN=$_id;" "$W/tpm-curl.err" || fail "TLS $_v: the certificate is not the device's"
        _proto=$(sed -n 's/^\* SSL connection using \(TLSv[0-9.]*\) \/ \(.*\)$/\1, \2/p' "$W/tpm-curl.err")
        case $_proto in "TLSv$_v, "*) ;; *) fail "TLS $_v: the connection used $_proto" ;; esac
        echo "  $_proto, certificate CN=$_id verified (device CA): HTTP $_code $(cat "$W/resp")"
    done
    echo "keeld stopped (SIGTERM):"
    kill -TERM "$TPM_KEELD_PID"
    wait "$TPM_KEELD_PID" && _rc=0 || _rc=$?
    TPM_KEELD_PID=
    [ "$_rc" -eq 0 ] || fail "keeld exited with status $_rc on SIGTERM"
    echo "  exit 0; keystore now: $(for _f in "$_td"/keystore/*; do printf '%s ' "${_f##*/}"; done)(the vault's" \
        "data key is sealed to the TPM)"

    echo "The device's whole state copied next to the other TPM (a cloned flash): keeld does not start there:"
    run cp -a "$_td" "$W/tpm-copy"
    : >"$W/tpm-keeld.log"
    echo "\$ $(tpm_bus other) keeld --config $W/tpm-copy/keeld.conf -o api.listen=127.0.0.1:$_port"
    tpm_keeld "$W/tpm-copy/keeld.conf" "$_port" "$(tpm_bus other)"
    tpm_keeld_rc
    [ "$_rc" -ne 0 ] || fail "keeld started next to the other TPM"
    grep -q "vault: tpm2: loading the key into the TPM failed: the key blob was not made by this TPM" \
        "$W/tpm-keeld.log" || { cat "$W/tpm-keeld.log"; fail "keeld failed next to the other TPM, but not as expected"; }
    grep "vault: tpm2:" "$W/tpm-keeld.log" | head -n 1 | sed 's/^/  /'
    echo "  keeld exited with status $_rc"
    ! grep -rqF -- "$(cat "$_td/keystore/tpm2.pin")" "$STEP_OUT" "$W/tpm-keeld.log" || fail "the PIN was shown"

    _pids=
    for _f in "$TPM_BASE"/*.pid "$TPM_BASE"/*/swtpm.pid; do _pids="$_pids $(cat "$_f")"; done
    tpm_stop main
    tpm_stop other
    rmdir "$TPM_BASE"
    _n=0
    for _p in $_pids; do
        ! kill -0 "$_p" 2>/dev/null || [ "$(ps -o stat= -p "$_p" | cut -c1)" = Z ] || fail "TPM process $_p still runs"
        _n=$((_n + 1))
    done
    echo "Both TPMs stopped by pid (swtpm, dbus-daemon, tpm2-abrmd: $_n processes, none left); their state deleted"
}

step_refused() {
    _d=$W/batch/$(sed -n 3p "$W/batch/labels.csv" | cut -d, -f1)
    echo "On a second device of the batch, with keel update (what keeld does on the device):"
    run "$KEEL" update install "$W/thermo-1.0.kb" --state "$_d"
    run "$KEEL" boot --state "$_d"
    run "$KEEL" update confirm --state "$_d"
    run "$KEEL" update install "$W/thermo-1.1.kb" --state "$_d"
    run "$KEEL" boot --state "$_d"
    run "$KEEL" update confirm --state "$_d"
    echo "A bundle with one payload byte changed, and the old version again:"
    cp "$W/thermo-1.1.kb" "$W/tampered.kb"
    _size=$(wc -c <"$W/tampered.kb")
    flip_byte() { # FILE OFFSET: every bit of that byte inverted
        _b=$(dd if="$1" bs=1 skip="$2" count=1 2>/dev/null | od -An -tu1 | tr -d ' \n')
        printf "$(printf '\\%03o' $((_b ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
    }
    flip_byte "$W/tampered.kb" $((_size - 1000))
    refused "a tampered bundle" "$KEEL" update install "$W/tampered.kb" --state "$_d"
    refused "a rolled-back bundle" "$KEEL" update install "$W/thermo-1.0.kb" --state "$_d"
    echo "The fleet will not roll the tampered bundle out either:"
    refused "a campaign of a tampered bundle" "$KEEL" fleet campaign create --bundle "$W/tampered.kb" --model thermo-1
    run "$KEEL" boot --state "$_d"
}

step_confined() {
    echo "keeld and keel-fleetd confined themselves once started (5.6-7, docs/internals/sandbox.md):"
    grep -h "sandbox:" "$W/keeld.log" "$FLEET_DIR/op.log" | sed 's/^/  /'
    # shellcheck disable=SC2154 # FLEET_PID_op: set by fleet_start (eval)
    for _p in "keeld:$KEELD_PID" "keel-fleetd:$FLEET_PID_op"; do
        _st=/proc/${_p#*:}/status
        _nnp=$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' "$_st")
        _sc=$(sed -n 's/^Seccomp:[[:space:]]*//p' "$_st")
        _cap=$(sed -n 's/^CapEff:[[:space:]]*//p' "$_st")
        [ "$_nnp" = 1 ] && [ "$_sc" = 2 ] && [ "$_cap" = 0000000000000000 ] ||
            fail "${_p%%:*} is not confined: NoNewPrivs $_nnp, Seccomp $_sc, CapEff $_cap"
        echo "  /proc of ${_p%%:*}: NoNewPrivs $_nnp, Seccomp $_sc (filter), CapEff $_cap (no capability)"
    done
    echo "(started by root here; under the shipped units they also run as their own users, keel and keel-fleetd)"
}

step_supply() {
    echo "The SBOM of what ships: the programs and every library they load, from the dpkg database:"
    FLEETD_BIN=$BUILD/programs/keel-fleetd/keel-fleetd
    run "$KEEL" sbom --out "$W/sbom.json" "$KEEL" "$KEELD" "$FLEETD_BIN"
    py '"  CycloneDX %s, %d components, e.g. " % (d["specVersion"], len(d["components"])) + ", ".join(
        c["name"] + " " + c["version"] for c in d["components"] if c["name"] in ("libssl3", "libsqlite3-0", "libsodium23"))' \
        "$W/sbom.json"
    echo "An advisory against the installed OpenSSL (made up for the demo, in OSV's format), matched:"
    _v=$(dpkg-query -W -f='${Version}' libssl3)
    mkdir -p "$W/advisories"
    cat >"$W/advisories/DEMO-2026-0001.json" <<ADV
{"schema_version": "1.6.0", "id": "DEMO-2026-0001", "modified": "2026-11-01T00:00:00Z",
 "summary": "a made-up flaw in OpenSSL, for the demo", "aliases": ["CVE-2099-0001"],
 "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
               "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "$_v+demo1"}]}]}]}
ADV
    show_cmd "$KEEL" vulns --sbom "$W/sbom.json" --advisories "$W/advisories"
    expect_rc 1 "$KEEL" vulns --sbom "$W/sbom.json" --advisories "$W/advisories"
    sed 's/^/  /' "$T/out" | head -n 12
    echo "The disclosure policy and security.txt a product publishes (5.2-1):"
    run "$KEEL" disclose --contact mailto:security@acme.example --policy-url https://acme.example/security/policy \
        --expires +180 --vendor "Acme Thermostats" --product thermo-1 --out "$W/disclose"
    sed -n '/^Contact:/,$p' "$W/disclose/security.txt" | sed 's/^/  /'
}

# ---- the end --------------------------------------------------------------------------------------

hold() { # KEEL_DEMO_KEEP=1 on a terminal: everything stays up until Enter
    [ -n "$KEEP" ] && [ -t 0 ] && [ -t 8 ] || return 0
    HOLD_T0=$(now_ms)
    (umask 077 && printf '%s\n' "$LAB_PW" >"$W/owner-password")
    {
        printf '\n%sEverything is still running (KEEL_DEMO_KEEP=1):%s\n' "$B" "$N"
        echo "  setup UI:        https://127.0.0.1:$PORT/  (user admin, the password in $W/owner-password;"
        echo "                   the browser warns: the device's certificate is its own, not a web CA's)"
        echo "  fleet dashboard: https://127.0.0.1:$FLEET_ADMIN_PORT/  (the operator token in $FLEET_DIR/token)"
        echo "  the assess report: $REPORT/report.html"
        printf 'Press Enter to stop them (the directory %s is kept). ' "$W"
    } >&8
    read -r _ || :
    HELD_MS=$(($(now_ms) - HOLD_T0))
}

step_stop() {
    echo "keeld, the thermostat, keel-fleetd and mosquitto, each with SIGTERM:"
    # shellcheck disable=SC2154 # FLEET_PID_op: set by fleet_start (eval)
    _pids="$KEELD_PID $THERMO_PID $FLEET_PID_op $BROKER_PID"
    keeld_stop
    kill -TERM "$THERMO_PID"
    wait "$THERMO_PID" && _rc=0 || _rc=$?
    THERMO_PID=
    [ "$_rc" -eq 0 ] || fail "the thermostat exited with status $_rc on SIGTERM"
    echo "  thermostat: $(py 'd["published"]' "$W/thermostat.json") readings published, exit 0"
    fleet_stop op
    broker_stop
    for _p in $_pids; do
        ! kill -0 "$_p" 2>/dev/null || fail "process $_p still runs"
    done
    echo "  keeld, keel-fleetd and the thermostat exited 0; mosquitto stopped; nothing of the demo runs"
}

summary() {
    _total=$(($(now_ms) - T0 - HELD_MS))
    printf '\n%s== The story, step by step%s\n' "$B" "$N"
    while IFS="$(printf '\t')" read -r _n _s _title; do
        printf '  %2d. %-78s OK %6s s\n' "$_n" "$_title" "$_s"
    done <"$W/summary"
    printf '  total: %s s (the goal: under 120 s)\n' "$(secs "$_total")"
    echo "The assess report: $REPORT/report.html (and report.json)"
    echo "The setup UI was at: https://127.0.0.1:$PORT/ (KEEL_DEMO_KEEP=1 on a terminal keeps it up until Enter)"
    if [ -n "$KEEP" ]; then
        echo "Everything ran under $W (kept)."
    else
        echo "Everything ran under a temporary directory, now removed (KEEL_DEMO_KEEP=1 keeps it)."
    fi
}

story step_factory "The manufacturer's PKI (factory init) and a release signer"
story step_provision "Provision a device: its key, id, certificate, label password, factory image"
story step_services "mosquitto with mutual TLS, keel-fleetd on SQLite, keeld and the thermostat"
story step_setup "First-run setup through the device's API: a new password, the owner's consent"
story step_update "A signed update rolled out by a campaign: installed, booted, confirmed"
story step_telemetry "Telemetry at the fleet, a command back, a broker outage without loss"
story step_anomaly "An injected anomaly: a brute force on the login, flagged by the fleet"
story step_reset "Factory reset, and the fleet's deletion receipt"
story step_assess "keel assess: the device judged against EN 303 645, as a test lab would"
story step_audit_flaws "The audit catches a careless factory (5.1-2)"
story step_softhsm "Device keys made on a secure element (SoftHSM2)"
story step_tpm "A device key made in a TPM 2.0 (swtpm), its state refused next to another TPM"
story step_refused "Tampered and rolled-back bundles refused"
story step_confined "Least privilege: keeld and keel-fleetd confined (no_new_privs, seccomp)"
story step_supply "The supply chain: an SBOM, an advisory matched, the disclosure policy"
# More steps go here (each a step_NAME function above, shown with its time in the summary);
# they run while the device, the broker and keel-fleetd are still up.
hold
story step_stop "Everything stopped"
summary

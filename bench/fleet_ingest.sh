#!/bin/sh
# make bench: keel-fleetd's ingest rate (issue 7), in one run on this machine,
# every run on a fresh broker with the shipped configuration
# (packaging/mosquitto/keel-broker.conf and .acl, rendered as
# tests/integration/broker_lib.sh does) and a fresh database:
#   (a) the ceiling: mosquitto_sub (QoS 1, the same shared subscription, the
#       fleet's identity) taking the stream tests/tools/fleet_sim publishes,
#       run before and after the keel-fleetd runs (the mean of the two: the
#       load of a shared machine drifts);
#   (b) one keel-fleetd on SQLite;  (c) one keel-fleetd on PostgreSQL
#       (tests/integration/pg_lib.sh);
#   (d) two keel-fleetd in one share group, on one SQLite file and on one
#       PostgreSQL database.
# Each in two modes:
#   live:  the consumer takes the stream while fleet_sim publishes it; the
#          rate is messages / (last one stored - first one published). On a
#          small machine publisher, broker and consumer share the CPUs, so
#          this also measures what the consumer's CPU costs the others.
#          Goal (issue 7): one keel-fleetd on SQLite >= 0.8x the ceiling,
#          the median of FLEET_BENCH_GOAL_PAIRS runs, each against the
#          mean of the mosquitto_sub runs just before and after it.
#   drain: the consumer subscribes and leaves, fleet_sim publishes into its
#          session at the broker, then the consumer comes back for the
#          backlog: messages / (last one stored - its return). The
#          publisher is done, so this is the consumer's capacity against
#          the broker's delivery. Reported, no goal.
# keel-fleetd's CPU time per message (user + system, /proc) is reported with
# each run: it is steadier than a rate on a shared machine. The end of a
# keel-fleetd run is its last commit (ingest.last_commit_ms in its status),
# the end of mosquitto_sub's its exit after the last message. Zero loss is checked, not
# assumed: after each run the database holds exactly the messages the broker
# acknowledged to fleet_sim (minus duplicates, none here), every device's
# seqs are 1..M without a hole, and no gap is recorded.
# Benchmarks report, they do not gate: exit 0 whatever the figures, non-zero
# when something fails to run or a message is lost. Loopback only.
# See docs/internals/bench.md and docs/internals/fleet-sim.md.
#
# usage: sh bench/fleet_ingest.sh BUILD_DIR
# env:   FLEET_BENCH_DEVICES (1000)   simulated devices (one MQTT client each)
#        FLEET_BENCH_MESSAGES (200)   telemetry messages per device
#        FLEET_BENCH_SIZE (250)       bytes per envelope
#        FLEET_BENCH_SMOKE=1          20 devices x 20 messages (make check)
#        FLEET_BENCH_RUNS             which of "sqlite1 pg1 sqlite2 pg2" (all)
#        FLEET_BENCH_MODES            which of "live drain" (both)
#        FLEET_BENCH_EXTRA            lines added to each keel-fleetd.conf (e.g. an [ingest] section)
#        FLEET_BENCH_GOAL_PAIRS (3)   paired live runs (keel-fleetd on SQLite, then mosquitto_sub) the
#                                     goal's verdict takes the median of (1 with FLEET_BENCH_SMOKE)
#        FLEET_BENCH_JSON=path        write the figures as JSON
#        BENCH_JSON=path              merge them into bench/run.sh's JSON as "fleet_ingest"
set -eu

[ $# -eq 1 ] || { echo "usage: sh bench/fleet_ingest.sh BUILD_DIR" >&2; exit 2; }
[ -d "$1" ] || { echo "bench: fleet: $1: no build directory (make build)" >&2; exit 1; }
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
KEEL=$build/programs/keel/keel
FLEETD=$build/programs/keel-fleetd/keel-fleetd
SIM=$build/tests/fleet_sim
for exe in "$KEEL" "$FLEETD" "$SIM"; do
    [ -x "$exe" ] || { echo "bench: fleet: $exe missing: build first (make build)" >&2; exit 1; }
done
KEEL_SOURCE_DIR=$(cd "$here/.." && pwd)
export KEEL KEEL_SOURCE_DIR
devices=${FLEET_BENCH_DEVICES:-1000}
messages=${FLEET_BENCH_MESSAGES:-200}
size=${FLEET_BENCH_SIZE:-250}
goal_pairs=${FLEET_BENCH_GOAL_PAIRS:-3}
if [ -n "${FLEET_BENCH_SMOKE:-}" ]; then
    devices=20 messages=20 goal_pairs=${FLEET_BENCH_GOAL_PAIRS:-1}
fi
for n in "$devices" "$messages" "$size" "$goal_pairs"; do
    case $n in '' | *[!0-9]* | 0) echo "bench: fleet: FLEET_BENCH_DEVICES, _MESSAGES, _SIZE and _GOAL_PAIRS must be positive whole numbers" >&2; exit 1 ;; esac
done
for tool in sqlite3 curl mosquitto_sub; do
    command -v $tool >/dev/null 2>&1 || { echo "bench: fleet: $tool is needed" >&2; exit 1; }
done

# lib.sh: $T (removed on exit), fail, note; broker_lib.sh and pg_lib.sh stop
# their servers on every exit path, our keel-fleetd processes too.
. "$KEEL_SOURCE_DIR/tests/integration/lib.sh"
. "$KEEL_SOURCE_DIR/tests/integration/broker_lib.sh"
. "$KEEL_SOURCE_DIR/tests/integration/pg_lib.sh"
FLEETD_PIDS=
fleet_cleanup() {
    for _p in $FLEETD_PIDS; do
        kill -KILL "$_p" 2>/dev/null || true
        wait "$_p" 2>/dev/null || true
    done
    pg_cleanup
}
trap fleet_cleanup EXIT
trap 'exit 130' INT TERM
die() { fail "bench: fleet: $*"; }
tmp=$T
. "$here/lib.sh"
# Each side holds one socket per simulated device.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((devices + 200)) ] ||
    die "$devices devices need more than $(ulimit -n) open files (ulimit -n)"

now() { date +%s.%N; }

# ---- the PKI, the devices, the broker's files ---------------------------------------------------
F=$T/factory
"$KEEL" factory init --dir "$F" --org "Keel Bench" >/dev/null || die "keel factory init failed"
broker_pki "$F"
for name in keel-fleet keel-fleet-2; do
    "$KEEL" factory issue-client --dir "$F" --name $name --out "$T/$name" >/dev/null ||
        die "keel factory issue-client $name failed"
done
"$KEEL" factory issue-server --dir "$F" --name 127.0.0.1 --out "$T/admin" >/dev/null ||
    die "keel factory issue-server failed"
"$KEEL" factory crl --dir "$F" --serials /dev/null --out "$T/device.crl" >/dev/null &&
    "$KEEL" factory crl --dir "$F" --ca service --serials /dev/null --out "$T/service.crl" >/dev/null ||
    die "keel factory crl failed"
mkdir -p "$BROKER_DIR/etc"
cat "$T/device.crl" "$T/service.crl" >"$BROKER_DIR/etc/crl.pem"
BROKER_CRL=$BROKER_DIR/etc/crl.pem
# The shipped files; the second instance gets its own copy of the fleet's two
# ACL lines, as keel-broker.acl says each further instance must.
mkdir "$T/conf"
cp "$KEEL_SOURCE_DIR/packaging/mosquitto/keel-broker.conf" "$KEEL_SOURCE_DIR/packaging/mosquitto/keel-broker.acl" \
    "$T/conf/"
printf '\nuser keel-fleet-2\ntopic read keel/v1/#\ntopic write keel/v1/+/cmd/#\n' >>"$T/conf/keel-broker.acl"
BROKER_CONF=$T/conf/keel-broker.conf

t0=$(now)
"$SIM" manifest --count "$devices" --model bench-1 --issuing-cert "$F/device-ca/issuing.crt" \
    --issuing-key "$F/device-ca/issuing.key" --org "Keel Bench" --out "$T/devices" 2>"$T/manifest.err" ||
    die "fleet_sim manifest: $(cat "$T/manifest.err")"
t1=$(now)
total=$((devices * messages))
note "$devices devices ($(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s for keys, certificates" \
    "and manifest), $messages messages each: $total messages of $size bytes a run"

pg_start
PG_PASS=${PG_URL#postgresql://keel:}
PG_PASS=${PG_PASS%%@*}
printf '127.0.0.1:%s:*:keel:%s\n' "$PG_PORT" "$PG_PASS" >"$T/pgpass"
chmod 600 "$T/pgpass"
PGPASSFILE=$T/pgpass
export PGPASSFILE
unset PG_PASS

# ---- one run ------------------------------------------------------------------------------------
broker_fresh() {
    broker_stop
    rm -rf "$BROKER_DIR/db"
    broker_mark
    broker_start
}

# wait_subscribed CLIENT-ID: until the broker logged its SUBSCRIBE.
wait_subscribed() {
    _i=0
    until tail -n +"$((BROKER_MARK + 1))" "$BROKER_LOG" | grep -q "Received SUBSCRIBE from $1\$"; do
        _i=$((_i + 1))
        [ $_i -lt 300 ] || broker_die "$1 did not subscribe within 30 s"
        sleep 0.1
    done
}

# publish RUN: fleet_sim's stream; its report in $T/RUN.sim.json, the first publish's time in $first.
publish() {
    "$SIM" publish --broker "127.0.0.1:$BROKER_PORT" --ca "$F/service-ca/root.crt" \
        --chain "$F/device-ca/chain.pem" --devices "$T/devices" --messages "$messages" --size "$size" \
        --json >"$T/$1.sim.json" 2>"$T/$1.sim.err" || {
        cat "$T/$1.sim.err" >&2
        broker_die "fleet_sim publish failed in run $1: $(cat "$T/$1.sim.json")"
    }
    first=$(sim_field "$1" first_publish_at)
    acked=$(sim_field "$1" acked)
    dups=$(sim_field "$1" duplicates)
    expected=$((acked - dups))
    [ "$expected" = $total ] || die "run $1: the broker acknowledged $expected distinct messages of $total"
}
sim_field() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$T/$1.sim.json" "$2"
}

# sub_session: mosquitto_sub as the fleet's client, with a session the broker keeps (MQTT v5, session expiry 1 h).
SUB_TOPICS="-t \$share/fleet/keel/v1/+/telemetry -t \$share/fleet/keel/v1/+/events -t \$share/fleet/keel/v1/+/state"
sub_session() {
    # shellcheck disable=SC2086 # SUB_TOPICS is three -t options
    mosquitto_sub -h 127.0.0.1 -p "$BROKER_PORT" -V mqttv5 -q 1 -i keel-fleet -c -x 3600 \
        --cafile "$F/service-ca/root.crt" --cert "$T/keel-fleet/client.crt" --key "$T/keel-fleet/client.key" \
        $SUB_TOPICS "$@"
}

# (a) the ceiling: mosquitto_sub as the fleet; it exits after $total messages, and the time it did is the end.
# live: it takes the stream while fleet_sim publishes; the run starts at the first publish.
# drain: it subscribes and leaves (-E), fleet_sim publishes into its kept session, and the run
#        starts when it comes back for the backlog.
run_ceiling() {
    _mode=$1
    broker_fresh
    rm -f "$T/sub.end"
    if [ "$_mode" = drain ]; then
        sub_session -E >"$T/sub.out" 2>"$T/sub.err" || broker_die "mosquitto_sub -E: $(cat "$T/sub.err")"
        publish "ceiling_$_mode"
        first=$(now)
    fi
    (
        sub_session -C "$total" -F '%p' >"$T/sub.out" 2>"$T/sub.err" && now >"$T/sub.end"
    ) &
    _sub=$!
    BROKER_SUB_PIDS="$BROKER_SUB_PIDS $_sub"
    if [ "$_mode" = live ]; then
        wait_subscribed keel-fleet
        publish "ceiling_$_mode"
    fi
    _i=0
    while [ ! -s "$T/sub.end" ]; do
        kill -0 $_sub 2>/dev/null || { [ -s "$T/sub.end" ] && break; broker_die "mosquitto_sub: $(cat "$T/sub.err")"; }
        _i=$((_i + 1))
        [ $_i -lt 6000 ] || broker_die "mosquitto_sub got $(wc -l <"$T/sub.out") of $total messages in 10 min"
        sleep 0.1
    done
    wait $_sub 2>/dev/null || true
    [ "$(wc -l <"$T/sub.out")" = $total ] || die "mosquitto_sub printed $(wc -l <"$T/sub.out") of $total messages"
    end=$(cat "$T/sub.end")
    _r=$(awk -v n=$total -v a="$first" -v b="$end" 'BEGIN { printf "%.1f", n / (b - a) }')
    eval "ceilings_$_mode=\"\${ceilings_$_mode:-} \$_r\""
    # Run before and after the keel-fleetd runs: the ceiling is their mean (the machine's load drifts).
    # (The goal's further pairs do not move the table's ceiling.)
    eval "_prev=\${rate_ceiling_$_mode:-}"
    if [ -n "${goal_pair:-}" ]; then
        :
    elif [ -n "$_prev" ]; then
        eval "rate_ceiling_$_mode=$(awk -v a="$_prev" -v b="$_r" 'BEGIN { printf "%.1f", (a + b) / 2 }')"
    else
        eval "rate_ceiling_$_mode=\$_r"
    fi
    note "(a) ceiling, $_mode, mosquitto_sub: $_r msg/s (fleet_sim saw PUBACKs at $(sim_field "ceiling_$_mode" rate) msg/s)"
}

# fleetd_conf RUN INSTANCE URL: a configuration; prints its path.
fleetd_conf() {
    _d=$T/$1.$2
    mkdir -p "$_d"
    _name=keel-fleet
    [ "$2" = 1 ] || _name=keel-fleet-$2
    _port=$(broker_free_port)
    cat >"$_d/keel-fleetd.conf" <<EOF
[log]
level = warn

[database]
url = $3

[broker]
address = 127.0.0.1:$BROKER_PORT
client_id = $_name
share_group = fleet
certificate = $T/$_name/client.crt
chain = $T/$_name/chain.pem
key = $T/$_name/client.key
ca = $F/service-ca/root.crt

[admin]
listen = 127.0.0.1:$_port
certificate = $T/admin/server.crt
chain = $T/admin/chain.pem
key = $T/admin/server.key
tokens = $_d/tokens
${FLEET_BENCH_EXTRA:-}
EOF
    echo "$_port" >"$_d/port"
    "$FLEETD" token add bench --config "$_d/keel-fleetd.conf" >"$_d/token" 2>"$_d/token.err" ||
        die "keel-fleetd token add: $(cat "$_d/token.err")"
    echo "$_d"
}

# admin DIR METHOD PATH [curl args]: the instance's operator API.
admin() {
    _d=$1 _m=$2 _p=$3
    shift 3
    curl -sS --fail-with-body --max-time 300 --cacert "$F/service-ca/root.crt" -X "$_m" \
        -H "Authorization: Bearer $(cat "$_d/token")" "https://127.0.0.1:$(cat "$_d/port")/api/v1/$_p" "$@"
}

fleetd_start() {
    "$FLEETD" --config "$1/keel-fleetd.conf" >"$1/log" 2>&1 &
    echo $! >"$1/pid"
    FLEETD_PIDS="$FLEETD_PIDS $!"
    _i=0
    until admin "$1" GET status >/dev/null 2>&1; do
        kill -0 "$(cat "$1/pid")" 2>/dev/null || die "keel-fleetd exited: $(tail -n 20 "$1/log")"
        _i=$((_i + 1))
        [ $_i -lt 300 ] || die "keel-fleetd's admin API did not answer within 30 s: $(tail -n 20 "$1/log")"
        sleep 0.1
    done
}

fleetd_stop() {
    _p=$(cat "$1/pid")
    kill -TERM "$_p" 2>/dev/null || true
    _i=0
    while kill -0 "$_p" 2>/dev/null; do
        _i=$((_i + 1))
        [ $_i -lt 300 ] || { kill -KILL "$_p" 2>/dev/null || true; break; }
        sleep 0.1
    done
    _rc=0
    wait "$_p" 2>/dev/null || _rc=$?
    [ $_rc = 0 ] || die "keel-fleetd exited $_rc: $(tail -n 20 "$1/log")"
}

# sql DRIVER URL QUERY: one value.
sql() {
    case $1 in
    sqlite) sqlite3 -readonly -cmd '.timeout 5000' "${2#sqlite:}" "$3" ;;
    pg) "$PG_PSQL" -X -q -A -t -v ON_ERROR_STOP=1 "$2" -c "$3" ;;
    esac
}

# cpu_ticks PID: user + system clock ticks the process has used so far.
cpu_ticks() {
    # /proc/PID/stat: the name (field 2) may hold spaces; utime, stime are fields 14, 15.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# run_fleetd RUN DRIVER INSTANCES MODE [TAG]: the stream into keel-fleetd, live or drained (as
# run_ceiling); sets rate_RUN_MODE[TAG] and cpu_RUN_MODE[TAG].
run_fleetd() {
    _run=$1 _drv=$2 _n=$3 _mode=$4
    _key=${_run}_$_mode${5:-}
    broker_fresh
    case $_drv in
    sqlite) _url=sqlite:$T/$_key.db ;;
    pg)
        printf 'CREATE DATABASE %s OWNER keel;\n' "$_key" | pg_psql >/dev/null || pg_die "CREATE DATABASE $_key"
        _url=postgresql://keel@127.0.0.1:$PG_PORT/$_key
        ;;
    esac
    _dirs=
    _i=1
    while [ $_i -le "$_n" ]; do
        _dirs="$_dirs $(fleetd_conf "$_key" $_i "$_url")"
        _i=$((_i + 1))
    done
    set -- $_dirs
    # The first instance makes the schema; then the others start on it.
    for _d in "$@"; do
        fleetd_start "$_d"
    done
    admin "$1" POST devices/import -H 'Content-Type: application/json' \
        --data-binary "@$T/devices/manifest.json" >"$T/$_key.import" 2>&1 || die "import: $(cat "$T/$_key.import")"
    for _d in "$@"; do
        _c=keel-fleet
        [ "$_d" = "$1" ] || _c=keel-fleet-${_d##*.}
        wait_subscribed "$_c"
    done
    if [ "$_mode" = drain ]; then
        # Away while the stream comes: the broker keeps it in their sessions.
        for _d in "$@"; do
            fleetd_stop "$_d"
        done
        publish "$_key"
        first=$(now)
        for _d in "$@"; do
            fleetd_start "$_d"
        done
    fi
    _ticks=0
    for _d in "$@"; do
        _ticks=$((_ticks - $(cpu_ticks "$(cat "$_d/pid")")))
    done
    [ "$_mode" = drain ] || publish "$_key"
    # Stored = acknowledged: poll the database (SQLite: the highest rowid, as nothing is deleted here,
    # which costs the run less than counting), then take the end from the last commit's time.
    _count='SELECT count(*) FROM messages'
    [ "$_drv" = pg ] || _count='SELECT coalesce(max(rowid), 0) FROM messages'
    _i=0 _last=-1 _still=0
    while :; do
        _stored=$(sql "$_drv" "$_url" "$_count") || die "run $_key: cannot count messages"
        [ "$_stored" -lt "$expected" ] || break
        if [ "$_stored" = "$_last" ]; then _still=$((_still + 1)); else _still=0; fi
        _last=$_stored
        # A run that stops short is reported as a loss below, not as a rate.
        [ $_still -lt 150 ] || break
        sleep 0.2
    done
    _end=0
    for _d in "$@"; do
        _ms=$(admin "$_d" GET status | python3 -c 'import json, sys; print(json.load(sys.stdin)["ingest"]["last_commit_ms"])') ||
            die "run $_key: no status from keel-fleetd"
        _end=$(awk -v a="$_end" -v b="$_ms" 'BEGIN { printf "%.3f", (b / 1000 > a ? b / 1000 : a) }')
    done
    # CPU time the instances spent (user + system, from /proc), per message: steadier than the rate on a busy machine.
    for _d in "$@"; do
        _ticks=$((_ticks + $(cpu_ticks "$(cat "$_d/pid")")))
    done
    _cpu=$(awk -v t=$_ticks -v hz="$(getconf CLK_TCK)" -v n="$expected" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    for _d in "$@"; do
        fleetd_stop "$_d"
    done
    # Zero loss, zero gaps: what the broker acknowledged is stored, once, without holes.
    _stored=$(sql "$_drv" "$_url" 'SELECT count(*) FROM messages')
    _gaps=$(sql "$_drv" "$_url" 'SELECT count(*) FROM gaps')
    _holes=$(sql "$_drv" "$_url" "SELECT count(*) FROM (SELECT device, count(*) AS n, min(seq) AS lo,
        max(seq) AS hi FROM messages GROUP BY device) AS per WHERE n <> $messages OR lo <> 1 OR hi <> $messages")
    _devs=$(sql "$_drv" "$_url" 'SELECT count(DISTINCT device) FROM messages')
    if [ "$_stored" = "$expected" ] && [ "$_gaps" = 0 ] && [ "$_holes" = 0 ] && [ "$_devs" = "$devices" ]; then
        _rate=$(awk -v n="$expected" -v a="$first" -v b="$_end" 'BEGIN { printf "%.1f", n / (b - a) }')
        note "($_key) $_n keel-fleetd on $_drv, $_mode: $_rate msg/s, $_cpu us CPU/msg;" \
            "stored $_stored = acknowledged $expected, 0 gaps"
    else
        # Still reported (the table shows LOSS), and the script exits 1 at the end.
        _rate=-1
        losses="$losses $_key"
        echo "bench: fleet: LOSS in run $_key ($_n keel-fleetd on $_drv): stored $_stored of $expected" \
            "acknowledged, $_gaps gaps recorded, $_holes devices with holes, $_devs of $devices devices;" \
            "keel-fleetd's log: $(grep -c . "$1/log") lines, e.g.: $(grep -v 'alert loss' "$1/log" | tail -n 2)" >&2
    fi
    eval "rate_$_key=\$_rate cpu_$_key=\$_cpu"
}
losses=

modes=${FLEET_BENCH_MODES:-live drain}
runs=${FLEET_BENCH_RUNS:-sqlite1 pg1 sqlite2 pg2}
# (the loops' variables are their own: the functions share the shell's)
for bench_mode in $modes; do
    case $bench_mode in live | drain) ;; *) die "FLEET_BENCH_MODES: no mode $bench_mode (live drain)" ;; esac
    for bench_run in sqlite1 pg1 sqlite2 pg2; do
        eval "rate_${bench_run}_$bench_mode=-2 cpu_${bench_run}_$bench_mode=0"
    done
done
for bench_mode in $modes; do
    rate_ceiling_live= rate_ceiling_drain=
done
for bench_mode in $modes; do
    run_ceiling "$bench_mode"
    for bench_run in $runs; do
        case $bench_run in
        sqlite1)
            run_fleetd sqlite1 sqlite 1 "$bench_mode"
            [ "$bench_mode" != live ] || goal_runs=$rate_sqlite1_live goal_cpu=$cpu_sqlite1_live
            ;;
        pg1) run_fleetd pg1 pg 1 "$bench_mode" ;;
        sqlite2) run_fleetd sqlite2 sqlite 2 "$bench_mode" ;;
        pg2) run_fleetd pg2 pg 2 "$bench_mode" ;;
        *) die "FLEET_BENCH_RUNS: no run $bench_run (sqlite1 pg1 sqlite2 pg2)" ;;
        esac
    done
    run_ceiling "$bench_mode"
done
# The goal (live, one keel-fleetd on SQLite) from goal_pairs runs, each against the mean of the
# mosquitto_sub runs just before and after it: the median ratio decides. On a shared machine one
# pair can be off by 0.15x either way.
goal_ratios=
case " $modes " in *" live "*) case " $runs " in *" sqlite1 "*) goal=1 ;; *) goal= ;; esac ;; *) goal= ;; esac
if [ -n "$goal" ]; then
    goal_pair=2
    while [ "$goal_pair" -le "$goal_pairs" ]; do
        run_fleetd sqlite1 sqlite 1 live "_$goal_pair"
        eval "goal_runs=\"\$goal_runs \$rate_sqlite1_live_$goal_pair\" goal_cpu=\"\$goal_cpu \$cpu_sqlite1_live_$goal_pair\""
        run_ceiling live
        goal_pair=$((goal_pair + 1))
    done
    # ceilings_live: the one before the first run, then the one after each (the main schedule's last is
    # after the first sqlite1 run, with the other runs between).
    goal_ratios=$(echo "$ceilings_live" "|" "$goal_runs" | awk '{
        for (i = 1; $i != "|"; i++) c[i] = $i
        for (k = 1; i + k <= NF; k++) {
            r = $(i + k); m = (c[k] + c[k + 1]) / 2
            printf "%s%s", (k > 1 ? " " : ""), (r < 0 || m <= 0 ? "-1" : sprintf("%.3f", r / m))
        }
    }')
    note "goal pairs (live, SQLite): rates $goal_runs msg/s, CPU $goal_cpu us/msg, ceilings $ceilings_live msg/s"
fi

# ---- report -------------------------------------------------------------------------------------
# A rate of -1 is a run that lost messages (LOSS in the table, null in the JSON), -2 one not run.
figures() {
    for _m in live drain; do
        eval "printf '%s %s ' \"\${rate_ceiling_$_m:--2}\" 0"
        for _r in sqlite1 pg1 sqlite2 pg2; do
            eval "printf '%s %s ' \"\${rate_${_r}_$_m:--2}\" \"\${cpu_${_r}_$_m:-0}\""
        done
    done
}
figures | awk -v d="$devices" -v m="$messages" -v sz="$size" -v lost="$losses" -v jsonfile="$T/fleet.json" \
    -v goal="$goal_ratios" -v goalcpu="${goal_cpu:-}" '
    function cell(r, c, ceil) {
        if (r == -2) return sprintf("%10s %7s %7s", "-", "-", "-")
        if (r < 0) return sprintf("%10s %7s %7s", "LOSS", "-", "-")
        return sprintf("%10.0f %7.2f %7s", r, ceil > 0 ? r / ceil : 0, c > 0 ? sprintf("%.1f", c) : "")
    }
    function j(r) { return r < 0 ? "null" : sprintf("%.1f", r) }
    function ratio(a, b) { return a < 0 || b <= 0 ? "-" : sprintf("%.2fx", a / b) }
    function verdict(r, c) { return r < 0 || c <= 0 ? "MISS" : r / c >= 0.8 ? "PASS" : "MISS" }
    # the median of the goal pairs ratios (-1 when a run lost messages)
    function median(list,    a, n, i, k, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) {
            if (a[i] < 0) return -1
            for (k = i; k > 1 && a[k - 1] + 0 > a[k] + 0; k--) { t = a[k]; a[k] = a[k - 1]; a[k - 1] = t }
        }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    {
        for (i = 0; i < 2; i++) {
            k = i * 10
            rate[i, "c"] = $(k + 1)
            rate[i, "s1"] = $(k + 3); cpu[i, "s1"] = $(k + 4)
            rate[i, "p1"] = $(k + 5); cpu[i, "p1"] = $(k + 6)
            rate[i, "s2"] = $(k + 7); cpu[i, "s2"] = $(k + 8)
            rate[i, "p2"] = $(k + 9); cpu[i, "p2"] = $(k + 10)
        }
        split("c s1 p1 s2 p2", keys, " ")
        split("mosquitto_sub (ceiling)|keel-fleetd, SQLite|keel-fleetd, PostgreSQL|2 x keel-fleetd, SQLite (1 file)|2 x keel-fleetd, PostgreSQL", names, "|")
        printf "\nkeel-fleetd ingest: %d devices x %d messages of %d bytes, QoS 1, shipped broker config\n", d, m, sz
        printf "live: the devices publish while the fleet takes the stream (all on this machine'"'"'s CPUs)\n"
        printf "drain: the stream waits in the fleet'"'"'s broker sessions, then is taken (publisher finished)\n"
        printf "%-34s %26s   %26s\n", "", "------------ live ---------", "----------- drain ---------"
        printf "%-34s %10s %7s %7s   %10s %7s %7s\n", "", "msg/s", "x ceil", "us/msg", "msg/s", "x ceil", "us/msg"
        for (n = 1; n <= 5; n++)
            printf "%-34s %s   %s\n", names[n], cell(rate[0, keys[n]], cpu[0, keys[n]], rate[0, "c"]),
                cell(rate[1, keys[n]], cpu[1, keys[n]], rate[1, "c"])
        printf "(us/msg: CPU time keel-fleetd spent per message, user + system)\n"
        if (lost == "")
            printf "zero loss: every run stored exactly the %d messages the broker acknowledged, no gaps\n", d * m
        else
            printf "zero loss: FAILED in run(s)%s (see above)\n", lost
        gm = goal == "" ? -1 : median(goal)
        pass = goal == "" ? verdict(rate[0, "s1"], rate[0, "c"]) : gm >= 0.8 ? "PASS" : "MISS"
        if (goal != "") {
            ng = split(goal, gr, " ")
            listed = ""
            for (i = 1; i <= ng; i++) listed = listed sprintf(" %.2fx", gr[i])
            printf "ratio keel-fleetd SQLite / ceiling, live: median %.2fx of %d paired run%s (%s; us/msg:%s) (goal >= 0.80x: %s)\n",
                gm, ng, ng == 1 ? "" : "s", substr(listed, 2), goalcpu == "" ? " -" : " " goalcpu, pass
            printf "ratio keel-fleetd SQLite / ceiling, drain: %s (capacity, no goal)\n", ratio(rate[1, "s1"], rate[1, "c"])
        } else {
            printf "ratio keel-fleetd SQLite / ceiling: live %s (goal >= 0.80x: %s); drain %s (capacity, no goal)\n",
                ratio(rate[0, "s1"], rate[0, "c"]), pass, ratio(rate[1, "s1"], rate[1, "c"])
        }
        printf "scale-out 2 / 1 instance: live SQLite %s, PostgreSQL %s; drain SQLite %s, PostgreSQL %s\n",
            ratio(rate[0, "s2"], rate[0, "s1"]), ratio(rate[0, "p2"], rate[0, "p1"]),
            ratio(rate[1, "s2"], rate[1, "s1"]), ratio(rate[1, "p2"], rate[1, "p1"])
        printf "{\"devices\": %d, \"messages_per_device\": %d, \"size\": %d,\n", d, m, sz > jsonfile
        split("live drain", mode, " ")
        for (i = 0; i < 2; i++) {
            printf "  \"%s\": {\"ceiling\": %s, \"sqlite\": %s, \"postgresql\": %s, \"sqlite_2\": %s, \"postgresql_2\": %s,\n",
                mode[i + 1], j(rate[i, "c"]), j(rate[i, "s1"]), j(rate[i, "p1"]), j(rate[i, "s2"]), j(rate[i, "p2"]) > jsonfile
            printf "    \"cpu_us_per_message\": {\"sqlite\": %s, \"postgresql\": %s, \"sqlite_2\": %s, \"postgresql_2\": %s},\n",
                cpu[i, "s1"], cpu[i, "p1"], cpu[i, "s2"], cpu[i, "p2"] > jsonfile
            printf "    \"ratio_sqlite\": %s, \"ratio_postgresql\": %s},\n",
                rate[i, "s1"] < 0 || rate[i, "c"] <= 0 ? "null" : sprintf("%.4f", rate[i, "s1"] / rate[i, "c"]),
                rate[i, "p1"] < 0 || rate[i, "c"] <= 0 ? "null" : sprintf("%.4f", rate[i, "p1"] / rate[i, "c"]) > jsonfile
        }
        gl = goal
        gsub(/ /, ", ", gl)
        printf "  \"goal_ratios\": [%s], \"goal_ratio_median\": %s,\n", gl, gm < 0 ? "null" : sprintf("%.4f", gm) > jsonfile
        printf "  \"goal_ratio_min\": 0.8, \"goal_mode\": \"live\", \"pass\": %s, \"zero_loss\": %s}\n",
            pass == "PASS" ? "true" : "false", lost == "" ? "true" : "false" > jsonfile
    }'
if [ -n "${FLEET_BENCH_JSON:-}" ]; then
    cp "$T/fleet.json" "$FLEET_BENCH_JSON" || die "could not write $FLEET_BENCH_JSON"
fi
[ -z "${BENCH_JSON:-}" ] || bench_json_merge fleet_ingest "$T/fleet.json"
# A lost message is a failure of the run, not a figure.
[ -z "$losses" ] || exit 1

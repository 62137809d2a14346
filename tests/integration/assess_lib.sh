# Shared by the keel assess integration tests (assess_probe.sh, assess_http.sh,
# assess_update.sh, assess_services.sh, assess_run.sh, assess_report_ui.sh):
# servers in the background ended on every exit path, waiting for a port, and
# checks over the JSON document a probe wrote. POSIX sh; it sources
# keeld_lib.sh ($T, fail, note, expect_rc, free_port, provision, EXTRA_PIDS).
. "$(dirname "$0")/keeld_lib.sh"

# bg CMD...: starts CMD in the background, its output appended to $BG_LOG
# ($T/bg.log unless set, e.g. `BG_LOG=$T/leak.log bg ...`), ended on every
# exit path.
bg() {
    "$@" >>"${BG_LOG:-$T/bg.log}" 2>&1 &
    EXTRA_PIDS="$EXTRA_PIDS $!"
}

# wait_port PORT: until something accepts TCP connections on 127.0.0.1:PORT
# (10 s); then fails, showing the logs in $T.
wait_port() {
    i=0
    until python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -lt 100 ] || { cat "$T"/*.log >&2 || true; fail "nothing listens on port $1 after 10 s"; }
        sleep 0.1
    done
}

# check JSONFILE EXPR WHAT: fails with WHAT unless the Python expression EXPR
# over the document (as d) holds. EXPR may use fails(d), the fail findings as
# "provision: what"; failprov(d), their provisions, sorted, each once;
# unit(d, name), the state of a unit (None when there is no such unit);
# accepted(d), the TLS versions accepted, sorted; bundle(d, role, n), the n-th
# bundle record of that role.
check() {
    python3 - "$1" "$2" <<'EOF' || fail "$3 (document: $1)"
import json, sys
d = json.load(open(sys.argv[1]))
def fails(d): return [f["provision"] + ": " + f["what"] for f in d["findings"] if f["severity"] == "fail"]
def failprov(d): return sorted(set(f["provision"] for f in d["findings"] if f["severity"] == "fail"))
def unit(d, name): return d["units"].get(name, {}).get("state")
def accepted(d): return sorted(v["version"] for v in d["versions"] if v["accepted"])
def bundle(d, role, n=0): return [b for b in d["bundles"] if b["role"] == role][n]
ok = eval(sys.argv[2])
if not ok:
    print("check failed:", sys.argv[2], file=sys.stderr)
    print(json.dumps(d, indent=1)[:20000], file=sys.stderr)
    sys.exit(1)
EOF
}

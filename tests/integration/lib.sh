# Shared by the integration tests: a private temp dir, removed on exit, and
# small assertion helpers. Tests are POSIX sh and run from ctest with
# KEEL (the keel binary), KEEL_SOURCE_DIR and KEEL_BUILD_DIR set.
set -eu

: "${KEEL:?KEEL must point to the keel binary}"
T=$(mktemp -d "${TMPDIR:-/tmp}/keel-it-XXXXXX")
cleanup() { [ -n "${KEEL_KEEP_T:-}" ] || rm -rf "$T"; }
trap cleanup EXIT INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }

# KEEL_TEST_KEYSTORE=tpm2 (the tpm2.* runs of the suite, started by
# with_tpm.sh): every `keel factory provision` that names no keystore makes
# its devices' keys in that TPM. $KEEL becomes a wrapper that says so.
if [ "${KEEL_TEST_KEYSTORE:-}" = tpm2 ] && [ -z "${KEEL_TPM2_REAL:-}" ]; then
    KEEL_TPM2_REAL=$KEEL
    export KEEL_TPM2_REAL
    KEEL=$T/keel-tpm2
    cat >"$KEEL" <<'EOF_WRAP'
#!/bin/sh
if [ "${1:-} ${2:-}" = "factory provision" ] && ! printf '%s\n' "$@" | grep -q '^--keystore'; then
    shift 2
    [ -z "${KEEL_TPM2_USED:-}" ] || echo provision >>"$KEEL_TPM2_USED"
    exec "$KEEL_TPM2_REAL" factory provision --keystore tpm2 "$@"
fi
exec "$KEEL_TPM2_REAL" "$@"
EOF_WRAP
    chmod 755 "$KEEL"
fi
note() { echo "-- $*"; }

# expect_rc N cmd...: runs cmd, fails unless it exits with N. Output in $T/out, $T/err.
expect_rc() {
    want=$1; shift
    set +e
    "$@" >"$T/out" 2>"$T/err"
    got=$?
    set -e
    if [ "$got" -ne "$want" ]; then
        echo "stdout:" >&2; cat "$T/out" >&2
        echo "stderr:" >&2; cat "$T/err" >&2
        fail "expected exit $want, got $got: $*"
    fi
}

# Cheap Argon2id settings where a test makes many devices and is not about hashing.
FAST_ARGON="--argon2-t 1 --argon2-m 64"

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
# flip_byte FILE OFFSET: the byte at OFFSET gets every bit inverted, so the
# file surely changes (writing a fixed byte leaves it as it was when the
# byte already had that value: one run in 256 of a random file).
flip_byte() {
    _fb=$(dd if="$1" bs=1 skip="$2" count=1 2>/dev/null | od -An -tu1 | tr -d ' \n')
    [ -n "$_fb" ] || fail "flip_byte: $1 has no byte at $2"
    printf "$(printf '\\%03o' $((_fb ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null ||
        fail "flip_byte: cannot write $1"
}

# It is picked at random below the kernel's ephemeral range (which bind(0)
# would pick from): there, every outgoing connection of the tests running
# beside this one takes ports too, and one took a "free" port before its
# server bound it (EADDRINUSE, or an MQTT client talking to an HTTP server).
free_port() {
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

# ui_node_setup: playwright-core for the browser tests, installed once per
# build dir with `npm ci` into $NODE_DIR ($KEEL_BUILD_DIR/ui-node), under a
# lock so tests running side by side do not install over each other.
ui_node_setup() {
    _ui=${KEEL_SOURCE_DIR:?KEEL_SOURCE_DIR must point to the source tree}/tests/ui
    NODE_DIR=${KEEL_BUILD_DIR:?KEEL_BUILD_DIR must point to the build tree}/ui-node
    note "playwright-core $(sed -n 's/.*"playwright-core": *"\([^"]*\)".*/\1/p' "$_ui/package.json") in $NODE_DIR"
    command -v flock >/dev/null 2>&1 || fail "flock is needed (util-linux)"
    exec 9>"$KEEL_BUILD_DIR/ui-node.lock"
    flock 9
    if ! cmp -s "$_ui/package-lock.json" "$NODE_DIR/package-lock.json" ||
        [ ! -f "$NODE_DIR/node_modules/playwright-core/package.json" ]; then
        command -v npm >/dev/null 2>&1 || fail "npm is needed to install playwright-core (scripts/deps.sh installs it)"
        mkdir -p "$NODE_DIR"
        rm -f "$NODE_DIR/package-lock.json"
        cp "$_ui/package.json" "$NODE_DIR/package.json"
        cp "$_ui/package-lock.json" "$NODE_DIR/package-lock.json.new"
        mv "$NODE_DIR/package-lock.json.new" "$NODE_DIR/package-lock.json"
        if ! (cd "$NODE_DIR" && npm ci --ignore-scripts --no-audit --no-fund) >"$T/npm.log" 2>&1; then
            rm -f "$NODE_DIR/package-lock.json"
            cat "$T/npm.log" >&2
            fail "npm ci in $NODE_DIR failed"
        fi
    fi
    flock -u 9
    exec 9>&-
}

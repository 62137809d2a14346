# Shared by the integration tests: a private temp dir, removed on exit, and
# small assertion helpers. Tests are POSIX sh and run from ctest with
# KEEL (the keel binary), KEEL_SOURCE_DIR and KEEL_BUILD_DIR set.
set -eu

: "${KEEL:?KEEL must point to the keel binary}"
T=$(mktemp -d "${TMPDIR:-/tmp}/keel-it-XXXXXX")
cleanup() { [ -n "${KEEL_KEEP_T:-}" ] || rm -rf "$T"; }
trap cleanup EXIT INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
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

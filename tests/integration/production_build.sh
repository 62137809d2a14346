#!/bin/sh
# The production profile (docs/internals/build-profiles.md, 5.6-4A, 5.6-6):
# a production tree with the minimal module set (no PKCS#11, no cloud link,
# no setup UI, no keel assess, no keel-fleetd) is configured and built from
# this source tree in a temporary directory, and its keeld and keel are
# checked:
#   (a) no test-only code: no fault-injection or link test-hook symbol, none
#       of their environment variables or debug messages in the text;
#   (b) no left-out module: none of its symbols, no NEEDED entry for its
#       library (libmosquitto, libp11-kit, libarchive, libssh, libpq);
#   (c) the programs run: --version, a device provisioned by this tree's own
#       `keel factory` passes `keeld --check` and serves its API (the UI paths
#       answer 404), and a configuration naming a left-out module is refused
#       with a clear message;
#   (d) hardening as checksec reads it: PIE, BIND_NOW, RELRO, a non-executable
#       stack, the stack protector, FORTIFY's checked functions, ENDBR64.
# The same checks on the calling (test-profile) tree's keel show the hook
# strings there, so the absence here is not an artefact of the tools.
#
# Skipped (77) under KEEL_SANITIZED=1: the production tree is built with
# neither sanitizer nor the calling tree's compiler, so `make asan` would
# only repeat what `make check` proved, at the cost of a second build.
if [ "${KEEL_SANITIZED:-0}" = 1 ]; then
    echo "skip: the production tree is the same under ASan; make check builds and checks it"
    exit 77
fi
. "$(dirname "$0")/lib.sh"
: "${KEEL_SOURCE_DIR:?KEEL_SOURCE_DIR must point to the source tree}"
for tool in cmake ninja nm readelf objdump strings objcopy curl python3; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed"
done

P=$T/prod
note "configure and build a production tree (minimal module set) in $P"
started=$(date +%s)
CC=${KEEL_PROD_CC:-cc} cmake -S "$KEEL_SOURCE_DIR" -B "$P" -G Ninja -DKEEL_PROFILE=production \
    -DKEEL_BUILD_TESTS=OFF -DKEEL_WITH_PKCS11=OFF -DKEEL_WITH_CLOUD_LINK=OFF -DKEEL_WITH_SETUP_UI=OFF \
    -DKEEL_WITH_ASSESS=OFF -DKEEL_WITH_FLEETD=OFF >"$T/configure.log" 2>&1 ||
    { tail -n 30 "$T/configure.log" >&2; fail "the production tree does not configure"; }
grep -q "Keel: profile production; PKCS11=OFF CLOUD_LINK=OFF SETUP_UI=OFF ASSESS=OFF FLEETD=OFF tests=OFF" \
    "$T/configure.log" || fail "configure did not report the production profile and modules"
cmake --build "$P" -j 2 --target keeld keel-cli >"$T/build.log" 2>&1 ||
    { grep -A5 -E "FAILED|error" "$T/build.log" | head -n 40 >&2; fail "the production tree does not build"; }
note "built in $(($(date +%s) - started)) s"
PKEELD=$P/programs/keeld/keeld
PKEEL=$P/programs/keel/keel
for b in "$PKEELD" "$PKEEL"; do
    [ -x "$b" ] || fail "not built: $b"
    [ -f "$b.debug" ] || fail "no split debug file $b.debug"
    note "$(basename "$b"): $(wc -c <"$b") bytes (debug info apart: $(wc -c <"$b.debug") bytes)"
done

note "configure refuses fault injection in the production profile"
expect_rc 1 cmake -S "$KEEL_SOURCE_DIR" -B "$T/both" -G Ninja -DKEEL_PROFILE=production -DKEEL_FAULT_INJECTION=ON
grep -q "KEEL_PROFILE=production has no fault injection" "$T/out" "$T/err" ||
    fail "configure did not say why it refused production + fault injection"

# ---- (a) no test-only code --------------------------------------------------------------------
# Symbols from the full symbol table (kept in <program>.debug), texts from the shipped binary.
TEST_SYMS='keel_fault_|fault_read_env|fault_env_once|keel_link_test_'
TEST_TEXTS='KEEL_FAULT_AT|KEEL_FAULT_MODE|fault injected at'
# Debug messages of the product code (keel_log(KEEL_LOG_DEBUG, ...)): compiled out.
DEBUG_TEXTS='a request missed its deadline|one of the busiest source|ipc: a client connected|sd_notify: '
note "control: the calling tree's keel, if built with the test hooks, shows them"
if grep -q KEEL_TEST_HOOKS "$KEEL_BUILD_DIR/compile_commands.json" 2>/dev/null; then
    strings -a "$KEEL" | grep -Eq "$TEST_TEXTS" || fail "control: the test tree's keel has no hook strings"
    [ -f "$KEEL.debug" ] && syms=$KEEL.debug || syms=$KEEL
    nm "$syms" | grep -Eq "$TEST_SYMS" || fail "control: the test tree's keel has no hook symbols"
else
    note "(the calling tree is a production tree: no control)"
fi
for b in "$PKEELD" "$PKEEL"; do
    n=$(basename "$b")
    nm "$b.debug" >"$T/$n.syms" || fail "nm $b.debug"
    [ "$(wc -l <"$T/$n.syms")" -gt 500 ] || fail "$n.debug holds too few symbols to check"
    grep -q " T main$" "$T/$n.syms" || fail "$n.debug: no main (not a symbol table?)"
    if grep -E "$TEST_SYMS" "$T/$n.syms" >&2; then fail "$n: test-only symbols in a production build"; fi
    strings -a "$b" >"$T/$n.strings"
    grep -q "built without" "$T/$n.strings" || fail "$n: strings(1) found no text at all?"
    if grep -E "$TEST_TEXTS" "$T/$n.strings" >&2; then fail "$n: test-only strings in a production build"; fi
    if grep -E "$DEBUG_TEXTS" "$T/$n.strings" >&2; then fail "$n: debug messages in a production build"; fi
done
grep -q "configuration reloaded" "$T/keeld.strings" || fail "keeld: info messages went too"

# ---- (b) no left-out module --------------------------------------------------------------------
for b in "$PKEELD" "$PKEEL"; do
    n=$(basename "$b")
    readelf -d "$b" >"$T/$n.dyn"
    if grep NEEDED "$T/$n.dyn" | grep -E "libmosquitto|libp11|libarchive|libssh|libpq|libcrypt\.|libcmocka" >&2; then
        fail "$n needs a left-out module's library"
    fi
    if grep -E " (mosquitto_|keel_assess_|keel_fleet_|keel_probe_|C_GetFunctionList)" "$T/$n.syms" >&2; then
        fail "$n: a left-out module's symbols"
    fi
    if grep -E "pkcs11\.so|p11_kit|libp11" "$T/$n.strings" >&2; then fail "$n: the PKCS#11 engine path"; fi
done
grep NEEDED "$T/keeld.dyn" | grep -q libssl || fail "keeld: readelf shows no NEEDED libssl (tool broken?)"
if grep -Eq "<!(doctype|DOCTYPE) html" "$T/keeld.strings"; then fail "keeld: the setup UI is built in"; fi

# ---- (d) hardening -------------------------------------------------------------------------------
for b in "$PKEELD" "$PKEEL"; do
    n=$(basename "$b")
    readelf -h "$b" | grep -q "Type:.*DYN" || fail "$n is not PIE"
    grep -q "FLAGS_1.*PIE" "$T/$n.dyn" || fail "$n: no DF_1_PIE"
    grep -Eq "BIND_NOW|FLAGS_1.*NOW" "$T/$n.dyn" || fail "$n: no BIND_NOW (full RELRO)"
    readelf -lW "$b" >"$T/$n.seg"
    grep -q GNU_RELRO "$T/$n.seg" || fail "$n: no RELRO segment"
    grep GNU_STACK "$T/$n.seg" | grep -q "RW " || fail "$n: the stack is executable"
    readelf --dyn-syms -W "$b" >"$T/$n.dsyms"
    grep -q "__stack_chk_fail" "$T/$n.dsyms" || fail "$n: no stack protector"
    grep -Eq "__[a-z]+_chk" "$T/$n.dsyms" || fail "$n: no FORTIFY checked function"
    # -fcf-protection: every function starts with ENDBR64 (Debian 12's own start
    # files carry no CET note, so the program's note cannot be checked).
    [ "$(objdump -d "$b" | grep -c endbr64)" -gt 200 ] || fail "$n: no -fcf-protection (ENDBR64)"
    note "$n: PIE, BIND_NOW, RELRO, NX stack, canary, $(grep -Eo "__[a-z]+_chk" "$T/$n.dsyms" | sort -u | wc -l) FORTIFY functions, ENDBR64"
done

# ---- (c) the programs run ------------------------------------------------------------------------
expect_rc 0 "$PKEELD" --version
grep -q "^keeld " "$T/out" || fail "keeld --version: $(cat "$T/out")"
expect_rc 0 "$PKEEL" --version
grep -q "^keel " "$T/out" || fail "keel --version: $(cat "$T/out")"
expect_rc 2 "$PKEEL" assess catalogue
grep -q "built without keel assess" "$T/err" || fail "keel assess: $(cat "$T/err")"

# The rest through keeld_lib.sh, with this tree's keel and keeld.
KEEL=$PKEEL KEELD=$PKEELD
OUTER_T=$T # keeld_lib.sh's lib.sh makes a second temp dir: both go at exit
. "$(dirname "$0")/keeld_lib.sh"
trap 'keeld_cleanup; [ -n "${KEEL_KEEP_T:-}" ] || rm -rf "$OUTER_T"' EXIT

provision plug-1
expect_rc 0 "$KEELD" --config "$CONF" --check
grep -q "configuration OK" "$T/out" || fail "keeld --check: $(cat "$T/out")"
start_keeld
expect_http 200 GET /api/v1/status -
expect_http 404 GET / -
expect_http 404 GET /index.html -
stop_keeld

note "a configuration naming a left-out module is refused, with the reason"
refused() { # MESSAGE -o ...: keeld exits non-zero at start and says MESSAGE
    msg=$1
    shift
    set +e
    "$KEELD" --config "$CONF" -o "api.listen=127.0.0.1:$(free_port)" $KEELD_FAST "$@" >"$T/out" 2>"$T/err"
    rc=$?
    set -e
    [ "$rc" -ne 0 ] || fail "keeld started with $*"
    grep -q "$msg" "$T/err" || { cat "$T/err" >&2; fail "keeld refused $* without saying \"$msg\""; }
}
refused "built without PKCS#11 support" -o keystore.driver=pkcs11 -o keystore.module=/nonexistent/p11.so
refused "built without cloud link support" -o link.broker=127.0.0.1:8883
note "production_build: passed in $(($(date +%s) - started)) s"

#!/bin/sh
# Power cut during updates: the N-th write/fsync/rename kills the process
# (KEEL_FAULT_MODE=kill, a test-build hook), for every N until the command
# completes, for `keel update install` of a 3-chunk bundle and for each
# boot-state change (`keel boot`, `keel update confirm`). After every cut the
# next `keel boot` must boot a slot whose image is exactly its signed payload,
# and `keel update status --json` must be consistent: a pending slot always
# holds the complete new image. A half-written slot forced to boot must fail
# verification and fall back.
. "$(dirname "$0")/lib.sh"

expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model plug-1 --count 1 --out "$T/b" $FAST_ARGON
DEV=$T/b/$(ls "$T/b" | grep -v '\.' | head -n 1)
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"
CHUNK=4096
for v in 1.0.0 1.1.0; do
    head -c $((2 * CHUNK + 999)) /dev/urandom >"$T/payload-$v"
    expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version "$v" --security-version 1 \
        --support-until 2030-12-31 --payload "$T/payload-$v" --out "$T/$v.kb" --chunk-size $CHUNK
done

jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/out" "$1"; }

# Base states, each a copy of a whole device directory.
expect_rc 0 "$KEEL" update install "$T/1.0.0.kb" --state "$DEV"
expect_rc 0 "$KEEL" boot --state "$DEV"
expect_rc 0 "$KEEL" update confirm --state "$DEV"
cp -a "$DEV" "$T/base-installed"           # A active (1.0.0)
expect_rc 0 "$KEEL" update install "$T/1.1.0.kb" --state "$DEV"
cp -a "$DEV" "$T/base-pending"             # B pending (1.1.0), not booted
expect_rc 0 "$KEEL" boot --state "$DEV"
cp -a "$DEV" "$T/base-booted"              # B booted, not confirmed

# check LABEL DIR: boots a valid slot, and the state is consistent.
check() {
    expect_rc 0 "$KEEL" boot --state "$2" --json
    set -- "$1" "$2" $(jget '"%s %s" % (d["booted"], d["version"])')
    slot=$3 ver=$4
    case "$slot:$ver" in A:1.0.0 | B:1.1.0) ;; *) fail "$1: booted $slot with $ver" ;; esac
    img=$2/update/slot-$(echo "$slot" | tr AB ab).img
    len=$(wc -c <"$T/payload-$ver")
    head -c "$len" "$img" | cmp -s - "$T/payload-$ver" || fail "$1: slot $slot booted but is not $ver"
    expect_rc 0 "$KEEL" update status --state "$2" --json
    # One interpreter start per check: state note, pending slot, tamper alert.
    set -- "$1" "$2" $(jget '"%s %s %s" % (d["state_note"] is None, d["pending"], d["tamper"]["alert"])')
    [ "$3" = True ] || fail "$1: the boot state is corrupt"
    if [ "$4" = B ]; then
        head -c "$len" "$2/update/slot-b.img" | cmp -s - "$T/payload-1.1.0" || fail "$1: pending B is incomplete"
    fi
    [ "$5" = False ] || fail "$1: tamper alert after a power cut"
}

# cut_all NAME BASE CMD...: every cut point of CMD on a fresh copy of BASE.
cut_all() {
    name=$1 base=$2
    shift 2
    n=1
    while :; do
        rm -rf "$T/d"
        cp -a "$base" "$T/d"
        set +e
        KEEL_FAULT_AT=$n KEEL_FAULT_MODE=kill "$KEEL" "$@" --state "$T/d" >/dev/null 2>&1
        rc=$?
        set -e
        [ "$rc" -eq 0 ] && break
        [ "$rc" -eq 137 ] || fail "$name cut at $n: expected SIGKILL (137), got $rc"
        check "$name cut at $n" "$T/d"
        n=$((n + 1))
        [ "$n" -lt 200 ] || fail "$name: no end to the cut points"
    done
    check "$name completed" "$T/d"
    echo "-- $name: $((n - 1)) cut points"
    total=$((total + n - 1))
}

total=0
cut_all install "$T/base-installed" update install "$T/1.1.0.kb"
[ "$n" -gt 10 ] || fail "install: only $n cut points: the hook is not reaching the slot writes"
cut_all "install over pending" "$T/base-pending" update install "$T/1.1.0.kb"
cut_all "boot (pending)" "$T/base-pending" boot
cut_all "boot (active)" "$T/base-installed" boot
cut_all confirm "$T/base-booted" update confirm

note "an I/O error instead of a cut: a clear refusal and the old slot boots"
n=1
while :; do
    rm -rf "$T/d"
    cp -a "$T/base-installed" "$T/d"
    set +e
    KEEL_FAULT_AT=$n "$KEEL" update install "$T/1.1.0.kb" --state "$T/d" >/dev/null 2>"$T/ioerr"
    rc=$?
    set -e
    [ "$rc" -eq 0 ] && break
    [ "$rc" -eq 1 ] || fail "I/O error at $n: expected exit 1, got $rc"
    grep -q "^keel: update install: " "$T/ioerr" || fail "I/O error at $n: unclear message: $(cat "$T/ioerr")"
    check "I/O error at $n" "$T/d"
    n=$((n + 1))
done

note "a half-written pending slot fails verification and falls back"
rm -rf "$T/d"
cp -a "$T/base-pending" "$T/d"
truncate -s $((CHUNK + 100)) "$T/d/update/slot-b.img"
expect_rc 0 "$KEEL" boot --state "$T/d" --json
[ "$(jget 'd["booted"]')" = A ] || fail "a half-written slot booted"
expect_rc 0 "$KEEL" update status --state "$T/d" --json
[ "$(jget 'd["pending"]')" = None ] || fail "the half-written slot stays pending"
[ "$(jget 'd["tamper"]["alert"]')" = True ] || fail "no alert for a slot that fails verification"

echo "update_powercut: $total cut points, 1 passed, 0 failed"

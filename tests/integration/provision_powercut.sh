#!/bin/sh
# Power cut during provisioning: the N-th write/fsync/rename kills the process
# (KEEL_FAULT_MODE=kill, a test-build hook), for every N until a run completes.
# After each cut: every device directory present is complete and has its
# label, earlier devices are untouched, and the next run cleans up so the
# batch audits clean with every label checked against its device's hash.
# The same points are also failed with EIO: a clear error and no half device.
# Its tpm2.* rerun does all this with the keys made in a TPM (the TPM keeps
# nothing per key, so a cut leaves nothing behind in it either).
. "$(dirname "$0")/lib.sh"

# What a complete device's keystore holds, per driver.
KEYSTORE_FILES="keystore/device.key keystore/kek"
[ "${KEEL_TEST_KEYSTORE:-}" != tpm2 ] || KEYSTORE_FILES="keystore/device.tpm2 keystore/tpm2.pin"

expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
P="$KEEL factory provision --dir $T/f --model plug-1 --out $T/b $FAST_ARGON"

check_complete() {
    for d in "$T"/b/*/; do
        id=$(basename "$d")
        case "$id" in *[!a-z2-7]*) continue ;; esac
        for f in device.json keeld.conf identity/device.crt identity/chain.pem identity/label.hash \
                 $KEYSTORE_FILES trust/release-root.pem trust/service-root.pem; do
            [ -s "$d/$f" ] || fail "cut at $1: device $id lacks $f"
        done
        grep -q "^$id," "$T/b/labels.csv" || fail "cut at $1: device $id has no label"
        openssl verify -CAfile "$T/f/device-ca/root.crt" -untrusted "$T/f/device-ca/issuing.crt" \
            "$d/identity/device.crt" >/dev/null || fail "cut at $1: certificate of $id does not verify"
    done
}

n=1
while :; do
    rm -rf "$T/b"
    expect_rc 0 $P --count 1
    first=$(ls "$T/b" | grep -v '\.' | head -n 1)
    before=$(find "$T/b/$first" -type f -exec sha256sum {} + | sort)
    set +e
    KEEL_FAULT_AT=$n KEEL_FAULT_MODE=kill $P --count 2 >/dev/null 2>&1
    rc=$?
    set -e
    [ "$rc" -eq 0 ] && break
    [ "$rc" -eq 137 ] || fail "cut at $n: expected SIGKILL (137), got $rc"
    check_complete "$n"
    [ "$(find "$T/b/$first" -type f -exec sha256sum {} + | sort)" = "$before" ] || fail "cut at $n: an earlier device changed"
    expect_rc 0 $P --count 1
    ls -a "$T/b" | grep -q '^\.staging-' && fail "cut at $n: staging left after the next run"
    expect_rc 0 "$KEEL" factory audit "$T/b" --verify-hashes 100
    # The same point failing with an I/O error instead: reported, nothing half-made.
    if [ $((n % 3)) -eq 1 ]; then
        rm -rf "$T/b"
        expect_rc 0 $P --count 1
        set +e
        KEEL_FAULT_AT=$n $P --count 2 >/dev/null 2>"$T/ioerr"
        rc=$?
        set -e
        if [ "$rc" -ne 0 ]; then
            [ "$rc" -eq 1 ] || fail "I/O error at $n: expected exit 1, got $rc"
            grep -q "^keel: factory provision: " "$T/ioerr" || fail "I/O error at $n: unclear message"
            ls -a "$T/b" | grep -q '^\.staging-' && fail "I/O error at $n: staging left behind"
            check_complete "io-$n"
        fi
    fi
    n=$((n + 1))
done
[ "$n" -gt 40 ] || fail "only $n fault points: the hook is not reaching the storage calls"
check_complete final
expect_rc 0 "$KEEL" factory audit "$T/b" --verify-hashes 100
echo "provision_powercut: $n cut points, 1 passed, 0 failed"

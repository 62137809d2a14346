#!/bin/sh
# `keel update install` killed with SIGKILL at random moments of a 32 MiB
# install (issue 3, "for a large image, kill -9 at random times"): after each
# kill `keel boot` must boot a valid signed slot, the state must be consistent
# (`keel boot --json` against `keel update status --json`), and the booted
# slot must hold exactly its bundle's payload. Ends with a clean install, boot
# and confirm. update_powercut.sh fails every write/fsync/rename in turn; this
# one reaches the moments between them, on an image of a realistic size.
. "$(dirname "$0")/lib.sh"

ROUNDS=15
MIB=32

expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model plug-1 --count 1 --out "$T/b" $FAST_ARGON
D=''
for conf in "$T"/b/*/keeld.conf; do D=${conf%/keeld.conf}; done
[ -f "$D/keeld.conf" ] || fail "no provisioned device"
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"

# Two releases with different payloads. Each round installs the one the
# active slot does not hold (downgrades allowed), so a slot's version names
# the payload it must hold.
for ver in 1.1.0 1.2.0; do
    head -c $((MIB * 1048576)) /dev/urandom >"$T/payload-$ver"
    expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version "$ver" \
        --security-version 1 --support-until 2030-12-31 --payload "$T/payload-$ver" --out "$T/$ver.kb"
done
install() { "$KEEL" update install --state "$D" -o update.allow_downgrade=true "$@"; }
other() { if [ "$1" = 1.1.0 ]; then echo 1.2.0; else echo 1.1.0; fi; }

slot_holds() { # SLOT VERSION
    f=$D/update/slot-$(echo "$1" | tr AB ab).img
    head -c $((MIB * 1048576)) "$f" | cmp -s - "$T/payload-$2" || fail "slot $1 does not hold the payload of $2"
}

# consistent BOOT_JSON STATUS_JSON COUNTER: prints "SLOT VERSION" of the
# booted slot, or why boot and status disagree with each other or with a
# valid state. One python3 per round keeps the test fast.
cat >"$T/consistent.py" <<'EOF'
import json, sys
boot, st, counter = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
def bad(why):
    print(why)
    sys.exit(1)
b = boot["booted"]
slots = {s["slot"]: s for s in st["slots"]}
if boot["refused"] != 0 or boot["tamper"]:
    bad("boot refused a slot or raised a tamper alert")
if st["tamper"]["alert"]:
    bad("status shows a tamper alert")
if st["security_version_counter"] != counter:
    bad("counter is %d, not %d" % (st["security_version_counter"], counter))
if [s for s in sorted(slots) if slots[s]["booted"]] != [b]:
    bad("status does not show %s as the only booted slot" % b)
if slots[b]["version"] != boot["version"] or slots[b]["manifest"]["version"] != boot["version"]:
    bad("status and boot disagree on the version of %s" % b)
if st["pending"] == b:
    if not boot["pending"] or st["tries_left"] >= st["policy"]["boot_tries"]:
        bad("booting the pending slot %s spent no try" % b)
else:
    if st["pending"] is not None:
        bad("slot %s pending but %s booted" % (st["pending"], b))
    if st["active"] != b or not slots[b]["good"]:
        bad("booted %s, but the active good slot is %s" % (b, st["active"]))
print(b, boot["version"])
EOF

# check_boot ROUND: boots; sets booted and version; checks them.
check_boot() {
    expect_rc 0 "$KEEL" boot --state "$D" --json
    mv "$T/out" "$T/boot.json"
    expect_rc 0 "$KEEL" update status --state "$D" --json
    r=$(python3 "$T/consistent.py" "$T/boot.json" "$T/out" "$counter") || fail "round $1: $r"
    booted=${r% *}
    version=${r#* }
    slot_holds "$booted" "$version"
}
now() { date +%s.%N; }

note "a first install, timed, gives the device an active slot"
counter=0
t0=$(now)
expect_rc 0 install "$T/1.1.0.kb"
t1=$(now)
check_boot 0
expect_rc 0 "$KEEL" update confirm --state "$D"
counter=1
span=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
delays=$(awk -v s="$seed" -v n="$ROUNDS" -v span="$span" \
    'BEGIN { srand(s); for (i = 0; i < n; i++) printf "%.3f\n", rand() * span }')
note "install takes ${span}s; $ROUNDS kills at random delays in [0, ${span}s] (awk seed $seed)"

finished=0 switched=0 i=0
for delay in $delays; do
    i=$((i + 1))
    # After each round's confirm the booted slot is the active one.
    next=$(other "$version")
    # Not through install(): $! must be keel itself, not a subshell.
    "$KEEL" update install --state "$D" -o update.allow_downgrade=true "$T/$next.kb" >"$T/install.out" 2>&1 &
    pid=$!
    sleep "$delay"
    kill -9 "$pid" 2>/dev/null || :
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    case $rc in
        0) finished=$((finished + 1)) ;;
        137) ;;
        *) cat "$T/install.out" >&2; fail "round $i: install exited $rc" ;;
    esac
    check_boot "$i"
    [ "$version" != "$next" ] || switched=$((switched + 1))
    [ "$rc" -ne 0 ] || [ "$version" = "$next" ] || fail "round $i: the install finished but $next does not boot"
    note "round $i: killed after ${delay}s (exit $rc), booted $booted ($version)"
    expect_rc 0 "$KEEL" update confirm --state "$D"
done
note "$finished of $ROUNDS installs finished before the kill; $switched rounds booted the new release"

note "a clean install, boot and confirm after all that"
next=$(other "$version")
expect_rc 0 install "$T/$next.kb" --json
target=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["slot"])' "$T/out")
check_boot final
if [ "$booted" != "$target" ] || [ "$version" != "$next" ]; then fail "the clean install of $next does not boot"; fi
expect_rc 0 "$KEEL" update confirm --state "$D"
expect_rc 0 "$KEEL" update status --state "$D" --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(not (d["active"] == sys.argv[2] and d["pending"] is None))' \
    "$T/out" "$target" || fail "slot $target is not active and settled after confirm"
echo "update_kill: ok"

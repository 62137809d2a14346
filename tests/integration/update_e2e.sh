#!/bin/sh
# Signed A/B updates on a provisioned device, end to end: install, boot,
# confirm; the anti-rollback counter; refusals (lower security version, wrong
# model, another factory's signer, a tampered payload) that leave the device
# booting its current slot; a pending slot rolling back after its tries; and a
# tampered active slot refused at boot with a tamper alert and a fallback.
. "$(dirname "$0")/lib.sh"

expect_rc 0 "$KEEL" factory init --dir "$T/f" --org Acme
expect_rc 0 "$KEEL" factory provision --dir "$T/f" --model plug-1 --count 1 --out "$T/b" $FAST_ARGON
D=$T/b/$(ls "$T/b" | grep -v '\.' | head -n 1)
[ -f "$D/keeld.conf" ] || fail "no provisioned device"
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"

# jget EXPR: a Python expression over the JSON document in $T/out (as d).
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/out" "$1"; }

CHUNK=65536
# mk OUT VERSION SECVER [extra bundle create options]: a random 3-chunk payload.
mk() {
    out=$1 ver=$2 sec=$3
    shift 3
    head -c $((2 * CHUNK + 4321)) /dev/urandom >"$T/payload-$ver"
    expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model plug-1 --version "$ver" \
        --security-version "$sec" --support-until 2030-12-31 --payload "$T/payload-$ver" --out "$out" \
        --chunk-size $CHUNK "$@"
}

boot_is() { # SLOT VERSION
    expect_rc 0 "$KEEL" boot --state "$D" --json
    [ "$(jget 'd["booted"]')" = "$1" ] || fail "booted $(jget 'd["booted"]'), expected $1"
    [ "$(jget 'd["version"]')" = "$2" ] || fail "booted version $(jget 'd["version"]'), expected $2"
}

# The slot's first payload bytes are the payload.
slot_holds() { # SLOT VERSION
    f=$D/update/slot-$(echo "$1" | tr AB ab).img
    n=$(wc -c <"$T/payload-$2")
    head -c "$n" "$f" | cmp -s - "$T/payload-$2" || fail "slot $1 does not hold $2"
}

note "a fresh device has nothing to boot"
expect_rc 1 "$KEEL" boot --state "$D"
grep -q "no bootable slot" "$T/err" || fail "fresh boot: $(cat "$T/err")"

mk "$T/v1.0.kb" 1.0.0 1
echo "Fixes the pairing timeout." >"$T/notes.txt"
mk "$T/v1.1.kb" 1.1.0 2 --notes "$T/notes.txt" --risk "remote code execution over the local API" --security-fixes CVE-2025-0001,CVE-2025-0002 \
    --disruptive --downtime 30

note "install v1.0 (security version 1), boot, confirm"
expect_rc 0 "$KEEL" update install "$T/v1.0.kb" --state "$D" --json
[ "$(jget 'd["slot"]')" = A ] || fail "first install did not go to slot A"
slot_holds A 1.0.0
[ "$(stat -c %a "$D/update")" = 700 ] || fail "update dir is not 0700"
boot_is A 1.0.0
expect_rc 0 "$KEEL" update confirm --state "$D"

note "install v1.1 (security version 2) from stdin, boot, confirm"
expect_rc 0 sh -c "\"$KEEL\" update install - --state \"$D\" <\"$T/v1.1.kb\""
slot_holds B 1.1.0
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["pending"]')" = B ] || fail "v1.1 is not pending"
[ "$(jget 'd["tries_left"]')" = 3 ] || fail "tries left is not boot_tries"
boot_is B 1.1.0
expect_rc 0 "$KEEL" update confirm --state "$D"
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["active"]')" = B ] || fail "v1.1 is not active"
[ "$(jget 'd["slots"][1]["version"]')" = 1.1.0 ] || fail "status does not show v1.1"
[ "$(jget 'd["security_version_counter"]')" = 2 ] || fail "counter is not 2"
[ "$(jget 'd["pending"]')" = None ] || fail "a slot is still pending"
[ "$(jget 'd["tamper"]["alert"]')" = False ] || fail "tamper alert without tampering"
[ "$(jget 'd["slots"][1]["manifest"]["disruptive"]')" = True ] || fail "disruptive flag missing"
[ "$(jget 'd["slots"][1]["manifest"]["downtime_seconds"]')" = 30 ] || fail "downtime missing"
[ "$(jget 'd["slots"][1]["manifest"]["support_until"]')" = 2030-12-31 ] || fail "support-until missing"
[ "$(jget 'len(d["slots"][1]["manifest"]["security_fixes"])')" = 2 ] || fail "security fixes missing"
[ "$(jget 'd["slots"][1]["manifest"]["notes"].strip()')" = "Fixes the pairing timeout." ] || fail "notes missing"
[ -n "$(jget 'd["slots"][1]["manifest"]["risk"]')" ] || fail "risk missing"
[ "$(jget 'd["policy"]["allow_downgrade"]')" = False ] || fail "policy missing"
expect_rc 0 "$KEEL" update status --state "$D"
grep -q "anti-rollback counter: 2" "$T/out" || fail "human status lacks the counter"

refused() { # WHY-REGEX BUNDLE
    expect_rc 1 "$KEEL" update install "$2" --state "$D"
    grep -q "^keel: update install: " "$T/err" || fail "refusal without a clear message: $(cat "$T/err")"
    grep -qi -- "$1" "$T/err" || fail "refusal does not say '$1': $(cat "$T/err")"
    boot_is B 1.1.0
    expect_rc 0 "$KEEL" update confirm --state "$D"
}

note "refusals leave the device booting v1.1"
refused "below the device's anti-rollback counter" "$T/v1.0.kb"
mk "$T/model.kb" 1.2.0 2
expect_rc 0 "$KEEL" bundle create --signer "$T/signer" --model lamp-9 --version 1.2.0 --security-version 2 \
    --support-until 2030-12-31 --payload "$T/payload-1.2.0" --out "$T/model.kb" --chunk-size $CHUNK
refused "model" "$T/model.kb"
expect_rc 0 "$KEEL" factory init --dir "$T/f2" --org Mallory
expect_rc 0 "$KEEL" bundle signer --dir "$T/f2" --name evil --out "$T/signer2"
expect_rc 0 "$KEEL" bundle create --signer "$T/signer2" --model plug-1 --version 9.0.0 --security-version 9 \
    --support-until 2030-12-31 --payload "$T/payload-1.2.0" --out "$T/foreign.kb" --chunk-size $CHUNK
refused "." "$T/foreign.kb"
mk "$T/v1.0.1.kb" 1.0.1 2
refused "allow_downgrade" "$T/v1.0.1.kb"
# A flipped payload byte in the middle chunk: refused within that chunk.
mk "$T/v1.2.kb" 1.2.0 2
cp "$T/v1.2.kb" "$T/tampered.kb"
size=$(wc -c <"$T/tampered.kb")
off=$((size - CHUNK - 1000))
printf '\377' | dd of="$T/tampered.kb" bs=1 seek=$off conv=notrunc 2>/dev/null
cmp -s "$T/v1.2.kb" "$T/tampered.kb" && { printf '\000' | dd of="$T/tampered.kb" bs=1 seek=$off conv=notrunc 2>/dev/null; }
refused "chunk" "$T/tampered.kb"
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["slots"][0]["good"]')" = False ] || fail "slot A stays good after a failed write"
head -c 1 /dev/null >"$T/empty.kb"
refused "." "$T/empty.kb"
head -c 1000 "$T/v1.2.kb" >"$T/short.kb"
refused "." "$T/short.kb"
cat "$T/v1.2.kb" "$T/v1.2.kb" >"$T/long.kb"
refused "trailing" "$T/long.kb"
# The downgrade policy can be overridden per call.
expect_rc 0 "$KEEL" update install "$T/v1.0.1.kb" --state "$D" -o update.allow_downgrade=true
expect_rc 2 "$KEEL" update install "$T/v1.0.1.kb" --state "$D" -o update.no_such_key=1
expect_rc 2 "$KEEL" update install --state "$D"

note "a pending slot never confirmed rolls back after boot_tries boots"
expect_rc 0 "$KEEL" update install "$T/v1.2.kb" --state "$D" -o update.boot_tries=2
for i in 1 2; do boot_is A 1.2.0; done
boot_is B 1.1.0
grep -q "rolled back" "$T/err" || fail "rollback not reported"
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["pending"]')" = None ] || fail "still pending after the rollback"
[ "$(jget 'd["slots"][0]["good"]')" = False ] || fail "rolled-back slot still good"
expect_rc 0 "$KEEL" update confirm --state "$D"

note "a byte flipped in the active slot: refused at boot, tamper alert, fallback"
expect_rc 0 "$KEEL" update install "$T/v1.2.kb" --state "$D"
boot_is A 1.2.0
expect_rc 0 "$KEEL" update confirm --state "$D"
boot_is A 1.2.0
printf '\125' | dd of="$D/update/slot-a.img" bs=1 seek=$((CHUNK + 17)) conv=notrunc 2>/dev/null
cmp -s "$D/update/slot-a.img" "$T/payload-1.2.0" && \
    printf '\252' | dd of="$D/update/slot-a.img" bs=1 seek=$((CHUNK + 17)) conv=notrunc 2>/dev/null
boot_is B 1.1.0
grep -q "TAMPER ALERT" "$T/err" || fail "no tamper alert on stderr"
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["tamper"]["alert"]')" = True ] || fail "status does not show the tamper alert"
jget 'd["tamper"]["detail"]' | grep -q "slot A" || fail "tamper detail does not name slot A"
[ -n "$(jget 'd["tamper"]["time"]')" ] || fail "tamper alert has no time"
[ "$(jget 'd["active"]')" = B ] || fail "fallback slot B is not active"
[ "$(jget 'd["slots"][0]["good"]')" = False ] || fail "tampered slot still good"
boot_is B 1.1.0
# A swapped signed manifest is refused too (the slot's image is unchanged).
cp "$D/update/slot-a.signed" "$T/a.signed"
expect_rc 0 "$KEEL" update install "$T/v1.2.kb" --state "$D"
cp "$D/update/slot-b.signed" "$D/update/slot-a.signed"
boot_is B 1.1.0
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["pending"]')" = None ] || fail "a slot with a foreign manifest stays pending"

note "both boot-state copies corrupt: rebuilt from the verified slots"
expect_rc 0 "$KEEL" update install "$T/v1.2.kb" --state "$D"
boot_is A 1.2.0
expect_rc 0 "$KEEL" update confirm --state "$D"
for c in 0 1; do printf 'XXXX' | dd of="$D/update/bootstate.$c" bs=1 seek=100 conv=notrunc 2>/dev/null; done
expect_rc 0 "$KEEL" update status --state "$D" --json
[ -n "$(jget 'd["state_note"]')" ] || fail "corrupt state not reported"
boot_is A 1.2.0
expect_rc 0 "$KEEL" update confirm --state "$D"
expect_rc 0 "$KEEL" update status --state "$D" --json
[ "$(jget 'd["active"]')" = A ] || fail "rebuilt state has no active slot"
[ "$(jget 'd["security_version_counter"]')" = 2 ] || fail "counter changed"

note "a bundle that is not there is a usage error"
expect_rc 2 "$KEEL" update install "$T/no-such-bundle.kb" --state "$D"

note "the update policy: postponement shown, a malformed date refused"
expect_rc 0 "$KEEL" update status --state "$D" --json -o update.postpone_until=2026-12-24 -o update.automatic=false
[ "$(jget 'd["policy"]["postpone_until"]')" = "2026-12-24" ] || fail "postponement not shown"
[ "$(jget 'd["policy"]["automatic"]')" = "False" ] || fail "automatic updates not shown as off"
expect_rc 2 "$KEEL" update status --state "$D" -o update.postpone_until=tomorrow
echo "update_e2e: 1 passed, 0 failed"

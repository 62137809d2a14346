#!/bin/sh
# The shipped systemd units (packaging/keeld.service, packaging/keel-fleetd.service)
# rated by `systemd-analyze security --offline=true` (EN 303 645 5.6-7): each must
# be 2.0 or lower ("OK"). The unit files are only read; nothing is started.
# 77 (skip) only where systemd-analyze is missing.
. "$(dirname "$0")/lib.sh"

SRC=${KEEL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
LIMIT=2.0
command -v systemd-analyze >/dev/null 2>&1 || {
    echo "systemd-analyze is missing: skipped"
    exit 77
}

for unit in keeld.service keel-fleetd.service; do
    [ -f "$SRC/packaging/$unit" ] || fail "packaging/$unit is missing"
    # A copy, so the rating names the unit and no stale file of the same name elsewhere interferes.
    cp "$SRC/packaging/$unit" "$T/$unit"
    (cd "$T" && systemd-analyze security --offline=true --no-pager "./$unit") >"$T/$unit.out" 2>&1 ||
        { cat "$T/$unit.out" >&2; fail "systemd-analyze security $unit failed"; }
    line=$(grep "Overall exposure level" "$T/$unit.out") || { cat "$T/$unit.out" >&2; fail "$unit: no overall exposure level"; }
    score=$(echo "$line" | sed -n 's/.*: \([0-9][0-9]*\.[0-9]\).*/\1/p')
    [ -n "$score" ] || fail "$unit: cannot read the score in: $line"
    note "$unit: exposure $score (limit $LIMIT)"
    awk -v s="$score" -v l="$LIMIT" 'BEGIN { exit !(s + 0 <= l + 0) }' ||
        { grep "✗" "$T/$unit.out" >&2; fail "$unit: exposure $score is above $LIMIT"; }
    # The directives the rating alone would not insist on.
    for d in NoNewPrivileges=yes ProtectSystem=strict PrivateTmp=yes "CapabilityBoundingSet=$" \
        SystemCallFilter=@system-service RestrictAddressFamilies=; do
        grep -q "^$d" "$T/$unit" || fail "$unit: no $d"
    done
    grep -q "^User=" "$T/$unit" || grep -q "^DynamicUser=yes" "$T/$unit" || fail "$unit: runs as root"
done
echo "systemd_units: OK"

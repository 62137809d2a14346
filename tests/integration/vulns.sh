#!/bin/sh
# keel vulns (5.2-3) against the SBOM of this build's keel and OSV advisories
# this test writes for the installed libssl3 (source package openssl):
#  - one affecting it with a higher fixed version, one already fixed, one with
#    last_affected (no fix yet), one of another ecosystem, one of another Debian
#    release, a DSA as Debian's feed writes it, a withdrawn one: exactly three
#    findings, exit 1, the report names them and what to do;
#  - only the fixed and foreign ones: exit 0;
#  - malformed, oversized and wrongly shaped advisories: exit 2, file named;
#  - Keel's Debian version order equals dpkg --compare-versions on 400
#    generated pairs (tests/tools/debver_cmp).
. "$(dirname "$0")/lib.sh"

command -v dpkg >/dev/null 2>&1 || fail "dpkg is needed"
DEBVER=$KEEL_BUILD_DIR/tests/debver_cmp
[ -x "$DEBVER" ] || fail "debver_cmp is not built: $DEBVER"

expect_rc 0 "$KEEL" vulns --help
grep -q "fixes it" "$T/out" || fail "keel vulns --help does not describe the report"
expect_rc 0 "$KEEL" sbom --out "$T/sbom.json" "$KEEL"

SV=$(dpkg-query -W -f='${source:Version}' libssl3)
V=$(dpkg-query -W -f='${Version}' libssl3)
MAJOR=$(. /etc/os-release && echo "${VERSION_ID%%.*}")
FIX="$SV+keel1"
dpkg --compare-versions "$FIX" gt "$SV" || fail "test setup: $FIX is not above $SV"
note "libssl3 $V (openssl $SV); advisories for Debian:$MAJOR"

mkdir "$T/adv"
adv() { # adv FILE ID ECOSYSTEM PACKAGE EVENTS-JSON [EXTRA-JSON]
    cat >"$T/adv/$1" <<EOF
{"schema_version": "1.6.0", "id": "$2", "modified": "2026-11-01T00:00:00Z",
 "aliases": ["CVE-2099-${2#KEEL-TEST-}"], "summary": "test advisory $2 for $4",
 "affected": [{"package": {"ecosystem": "$3", "name": "$4"},
               "ranges": [{"type": "ECOSYSTEM", "events": $5}]}]${6:-}}
EOF
}
adv a-affects.json KEEL-TEST-0001 "Debian:$MAJOR" openssl "[{\"introduced\": \"0\"}, {\"fixed\": \"$FIX\"}]" \
    ', "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]'
adv b-fixed.json KEEL-TEST-0002 "Debian:$MAJOR" openssl "[{\"introduced\": \"0\"}, {\"fixed\": \"$SV\"}]"
adv c-last.json KEEL-TEST-0003 Debian openssl "[{\"introduced\": \"0\"}, {\"last_affected\": \"$SV\"}]" \
    ', "database_specific": {"urgency": "high"}'
adv d-other.json KEEL-TEST-0004 PyPI openssl '[{"introduced": "0"}]'
adv e-release.json KEEL-TEST-0005 "Debian:$((MAJOR - 1))" openssl '[{"introduced": "0"}]'
# As Debian's OSV feed writes a DSA: no aliases, the CVEs in "related", a source purl.
cat >"$T/adv/f-dsa.json" <<EOF
{"id": "DSA-9999-1", "summary": "openssl - security update", "modified": "2026-11-02T00:00:00Z",
 "published": "2026-11-01T00:00:00Z", "aliases": [], "related": ["CVE-2099-0100", "CVE-2099-0101"],
 "details": "Several vulnerabilities were discovered in OpenSSL.",
 "affected": [{"package": {"ecosystem": "Debian:$MAJOR", "name": "openssl", "purl": "pkg:deb/debian/openssl?arch=source"},
               "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "$FIX"}]}],
               "versions": ["3.0.0-1"]}],
 "references": [{"type": "ADVISORY", "url": "https://www.debian.org/security/2099/dsa-9999"}],
 "schema_version": "1.6.0"}
EOF
adv g-withdrawn.json KEEL-TEST-0006 "Debian:$MAJOR" openssl '[{"introduced": "0"}]' ', "withdrawn": "2026-11-03T00:00:00Z"'
echo "not an advisory" >"$T/adv/README.txt" # not *.json: not read

expect_rc 1 "$KEEL" vulns --sbom "$T/sbom.json" --advisories "$T/adv"
cp "$T/out" "$T/report.txt"
for want in "AFFECTED: 1 component(s), 3 finding(s)" KEEL-TEST-0001 KEEL-TEST-0003 CVE-2099-0001 "$FIX" "no fix yet" \
    "upgrade openssl to $FIX or later" "installed *$V" "Debian urgency high" "7 advisories read (2 ignored: other ecosystems or withdrawn)" \
    DSA-9999-1 "related *CVE-2099-0100, CVE-2099-0101"; do
    grep -q -- "$want" "$T/report.txt" || fail "report lacks '$want': $(cat "$T/report.txt")"
done
for never in KEEL-TEST-0002 KEEL-TEST-0004 KEEL-TEST-0005 KEEL-TEST-0006; do
    if grep -q "$never" "$T/report.txt"; then fail "report names $never"; fi
done
note "report:"
cat "$T/report.txt"

expect_rc 1 "$KEEL" vulns --sbom "$T/sbom.json" --advisories "$T/adv" --json
python3 - "$T/out" "$FIX" <<'EOF' || fail "JSON report wrong: $(cat "$T/out")"
import json, sys
d = json.load(open(sys.argv[1]))
f = {x["id"]: x for x in d["findings"]}
assert sorted(f) == ["DSA-9999-1", "KEEL-TEST-0001", "KEEL-TEST-0003"], sorted(f)
assert f["DSA-9999-1"]["related"] == ["CVE-2099-0100", "CVE-2099-0101"] and f["DSA-9999-1"]["fixed"] == sys.argv[2]
assert f["KEEL-TEST-0001"]["fixed"] == sys.argv[2] and f["KEEL-TEST-0001"]["component"] == "libssl3"
assert f["KEEL-TEST-0001"]["aliases"] == ["CVE-2099-0001"] and f["KEEL-TEST-0001"]["matched_by"] == "source package"
assert f["KEEL-TEST-0003"]["fixed"] is None
assert d["advisories"] == 7 and d["ignored"] == 2 and d["affected_components"] == 1
assert d["checked"] > 3 and d["checked"] + d["unchecked"] == d["sbom_components"]
EOF

# Nothing affecting: exit 0.
mkdir "$T/clean"
cp "$T/adv/b-fixed.json" "$T/adv/d-other.json" "$T/clean/"
expect_rc 0 "$KEEL" vulns --sbom "$T/sbom.json" --advisories "$T/clean"
grep -q "no component is affected" "$T/out" || fail "no all-clear: $(cat "$T/out")"

# Malformed input: exit 2 and the file named.
bad() { # bad NAME CONTENT-FILE WHAT: exit 2, "advisory <file>: <WHAT...>"
    mkdir -p "$T/bad-$1"
    cp "$T/adv/b-fixed.json" "$T/bad-$1/"
    cp "$2" "$T/bad-$1/zz-$1.json"
    expect_rc 2 "$KEEL" vulns --sbom "$T/sbom.json" --advisories "$T/bad-$1"
    grep -q "advisory $T/bad-$1/zz-$1.json: $3" "$T/err" || fail "$1: the message does not name the file and the fault: $(cat "$T/err")"
    note "$1: $(cat "$T/err")"
}
adv x.json KEEL-TEST-0009 "Debian:$MAJOR" openssl '[{"introduced": "0", "fixed": "1.0"}]'
bad two-events "$T/adv/x.json" "an event that is not an object of one member"
adv x.json KEEL-TEST-0009 "Debian:$MAJOR" openssl '[{"introduced": "0"}, {"fixed": "not a version"}]'
bad version "$T/adv/x.json" "event version .not a version. is not a Debian version"
echo '[{"id": "KEEL-TEST-0010"}]' >"$T/x.json"
bad toplevel-array "$T/x.json" "not an OSV advisory"
echo '{"id": "KEEL-TEST-0011", "modified": "2026-11-01T00:00:00Z", "affected": {}}' >"$T/x.json"
bad affected-object "$T/x.json" ".affected. is not an array"
echo '{"id": "KEEL-TEST-0012", "modified": "2026-11-01T00:00:00Z", "id": "again"}' >"$T/x.json"
bad duplicate-key "$T/x.json" "not JSON"
echo '{"id": "KEEL-TEST-0013", "modified": ' >"$T/x.json"
bad truncated "$T/x.json" "not JSON"
python3 -c 'import sys; sys.stdout.write("{\"id\": \"KEEL-TEST-0014\", \"modified\": \"x\", \"details\": \"" + "a" * (5 << 20) + "\"}")' >"$T/x.json"
bad oversized "$T/x.json" "larger than"
expect_rc 2 "$KEEL" vulns --sbom "$T/adv/b-fixed.json" --advisories "$T/clean"
grep -q "b-fixed.json" "$T/err" || fail "a non-SBOM is not named: $(cat "$T/err")"
expect_rc 2 "$KEEL" vulns --sbom "$T/sbom.json"
expect_rc 2 "$KEEL" vulns --sbom "$T/sbom.json" --advisories "$T/nonexistent"

# ---- Debian version order: ours against dpkg's, on generated pairs ----------------------
python3 - >"$T/pairs.txt" <<'EOF'
import random
r = random.Random(8)
def part(first_digit):
    s = str(r.randint(0, 20)) if first_digit else ""
    for _ in range(r.randint(0, 4)):
        s += r.choice([".", "~", "+", "", "", "a", "b", "rc", "~rc", "dfsg", "-"]) + str(r.randint(0, 12)) * r.randint(0, 1)
        s += r.choice(["", "", "~", "+", "a", "z", "."])
    return s
def version():
    v = part(True)
    if r.random() < 0.3:
        v = f"{r.randint(0, 3)}:{v}"
    if r.random() < 0.7:
        rev = part(False).replace("-", ".").lstrip(".") or "1"
        rev = rev if rev[0].isalnum() or rev[0] in "~+." else "1" + rev
        v += "-" + rev
    return v
pairs = set()
while len(pairs) < 400:
    a = version()
    b = r.choice([version(), a, a + "~", a + "+b1", a.replace(".", ".0", 1)])
    if a and b and " " not in a + b:
        pairs.add((a, b))
for a, b in sorted(pairs):
    print(a, b)
EOF
"$DEBVER" <"$T/pairs.txt" >"$T/ours.txt" || fail "debver_cmp failed"
n=0
bad=0
while read -r a b && read -r ours <&3; do
    n=$((n + 1))
    if dpkg --compare-versions "$a" lt "$b" 2>/dev/null; then want=lt
    elif dpkg --compare-versions "$a" eq "$b" 2>/dev/null; then want=eq
    elif dpkg --compare-versions "$a" gt "$b" 2>/dev/null; then want=gt
    else want=invalid; fi
    if [ "$ours" != "$want" ]; then
        # dpkg only warns about some versions it would refuse to install; we refuse them outright.
        if [ "$ours" = invalid ] && dpkg --compare-versions "$a" lt "$b" 2>&1 | grep -q "bad syntax"; then continue; fi
        echo "  $a vs $b: keel $ours, dpkg $want" >&2
        bad=$((bad + 1))
    fi
done <"$T/pairs.txt" 3<"$T/ours.txt"
[ "$n" -ge 400 ] || fail "only $n pairs compared"
[ "$bad" -eq 0 ] || fail "$bad of $n version pairs ordered differently from dpkg"
note "$n version pairs: Keel's order equals dpkg --compare-versions ($(grep -c . "$T/ours.txt") results, $(grep -c invalid "$T/ours.txt") invalid)"
echo "vulns: all checks passed"

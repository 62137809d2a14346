#!/bin/sh
# keel sbom (5.2-3, 5.5-2) on the programs of this build:
#  - the SBOM validates against the official CycloneDX 1.5 JSON schema (the
#    schema files and the ajv validator of npm's @cyclonedx/cyclonedx-library,
#    installed once per build dir with `npm ci` from tests/sbom/package-lock.json),
#    and tampered copies of it do not (the validator can fail);
#  - libssl3, libsqlite3-0, libjansson4 and libsodium23 appear with the versions
#    dpkg-query reports and the purls made from them, and keeld depends on them;
#  - every library ldd lists is in it; our binaries' hashes equal sha256sum's;
#  - two runs differ only in serialNumber (and timestamp unless SOURCE_DATE_EPOCH);
#  - a missing artefact is a usage error (2).
# 77 where node or npm is missing.
. "$(dirname "$0")/lib.sh"

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "SKIP: node and npm are needed"; exit 77; }
command -v dpkg-query >/dev/null 2>&1 || { echo "SKIP: dpkg-query is needed"; exit 77; }
command -v flock >/dev/null 2>&1 || fail "flock is needed (util-linux)"

B=$KEEL_BUILD_DIR/programs
set -- "$KEEL" "$B/keeld/keeld"
[ -x "$B/keel-fleetd/keel-fleetd" ] && set -- "$@" "$B/keel-fleetd/keel-fleetd"
for lib in "$KEEL_BUILD_DIR"/src/libkeel.so.*.*.*; do
    [ -f "$lib" ] && set -- "$@" "$lib"
done
[ -x "$2" ] || fail "keeld is not built: $2"
ARTEFACTS="$*"
note "artefacts: $ARTEFACTS"

# ---- the validator ------------------------------------------------------------------
SRC=$KEEL_SOURCE_DIR/tests/sbom
NODE_DIR=$KEEL_BUILD_DIR/sbom-node
exec 9>"$KEEL_BUILD_DIR/sbom-node.lock"
flock 9
if ! cmp -s "$SRC/package-lock.json" "$NODE_DIR/package-lock.json" ||
    [ ! -f "$NODE_DIR/node_modules/@cyclonedx/cyclonedx-library/package.json" ]; then
    mkdir -p "$NODE_DIR"
    rm -f "$NODE_DIR/package-lock.json"
    cp "$SRC/package.json" "$NODE_DIR/package.json"
    cp "$SRC/package-lock.json" "$NODE_DIR/package-lock.json.new"
    mv "$NODE_DIR/package-lock.json.new" "$NODE_DIR/package-lock.json"
    if ! (cd "$NODE_DIR" && npm ci --ignore-scripts --no-audit --no-fund) >"$T/npm.log" 2>&1; then
        rm -f "$NODE_DIR/package-lock.json"
        cat "$T/npm.log" >&2
        fail "npm ci in $NODE_DIR failed"
    fi
fi
flock -u 9
exec 9>&-
cp "$SRC/validate.mjs" "$NODE_DIR/validate.mjs"
note "validator: @cyclonedx/cyclonedx-library $(sed -n 's/.*"@cyclonedx\/cyclonedx-library": *"\([^"]*\)".*/\1/p' "$SRC/package.json"), schema $(ls "$NODE_DIR/node_modules/@cyclonedx/cyclonedx-library/res/schema/" | grep -c 'bom-1.5') bom-1.5 file(s)"
validate() { node "$NODE_DIR/validate.mjs" "$@"; }

# ---- the SBOM -------------------------------------------------------------------------
expect_rc 0 "$KEEL" sbom --help
grep -q "CycloneDX 1.5" "$T/out" || fail "keel sbom --help does not say what it writes"
# shellcheck disable=SC2086
expect_rc 0 "$KEEL" sbom --out "$T/sbom.json" $ARTEFACTS
note "$(cat "$T/err")"
expect_rc 0 validate "$T/sbom.json"
note "$(cat "$T/out")"

# Run twice more (stdout, then SOURCE_DATE_EPOCH): the same but for serialNumber and timestamp.
# shellcheck disable=SC2086
expect_rc 0 "$KEEL" sbom $ARTEFACTS
cp "$T/out" "$T/sbom2.json"
# shellcheck disable=SC2086
SOURCE_DATE_EPOCH=1767225600 "$KEEL" sbom --out "$T/sbom3.json" $ARTEFACTS 2>/dev/null || fail "keel sbom with SOURCE_DATE_EPOCH failed"
python3 - "$T/sbom.json" "$T/sbom2.json" "$T/sbom3.json" <<'EOF' || fail "two SBOMs of the same build differ"
import json, sys
a, b, c = (json.load(open(p)) for p in sys.argv[1:])
for k in ("serialNumber",):
    assert a[k] != b[k], "serialNumber repeated"
for d in (a, b, c):
    d.pop("serialNumber"); d["metadata"].pop("timestamp")
assert a == b == c
assert json.load(open(sys.argv[3]))["metadata"]["timestamp"] == "2026-01-01T00:00:00Z"
EOF

# ---- packages: versions and purls from dpkg-query -------------------------------------
ARCH=$(dpkg --print-architecture)
MAJOR=$(. /etc/os-release && echo "${VERSION_ID%%.*}")
for p in libssl3 libsqlite3-0 libjansson4 libsodium23; do
    v=$(dpkg-query -W -f='${Version}' "$p") || fail "dpkg-query knows no $p"
    sv=$(dpkg-query -W -f='${source:Version}' "$p")
    src=$(dpkg-query -W -f='${source:Package}' "$p")
    purl="pkg:deb/debian/$p@$(printf '%s' "$v" | sed 's/+/%2B/g')?arch=$ARCH&distro=debian-$MAJOR"
    python3 - "$T/sbom.json" "$p" "$v" "$purl" "$src" "$sv" <<'EOF' || fail "$p: not in the SBOM as dpkg-query reports it"
import json, sys
d = json.load(open(sys.argv[1]))
name, version, purl, src, sv = sys.argv[2:]
c = [c for c in d["components"] if c["name"] == name]
assert len(c) == 1, f"{len(c)} components named {name}"
c = c[0]
props = {p["name"]: p["value"] for p in c["properties"]}
assert c["version"] == version, (c["version"], version)
assert c["purl"] == purl and c["bom-ref"] == purl, (c["purl"], purl)
assert props["keel:deb:source"] == src and props["keel:deb:source-version"] == sv, props
deps = {x["ref"]: x["dependsOn"] for x in d["dependencies"]}
keeld = [x["bom-ref"] for x in d["components"] if x["name"] == "keeld"][0]
assert purl in deps[keeld], f"keeld does not depend on {purl}"
EOF
    note "$p $v  $purl"
done

# ---- every library ldd sees, and our hashes ---------------------------------------------
for a in $ARTEFACTS; do
    ldd "$a" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
done | while read -r lib; do realpath "$lib"; done | sort -u >"$T/ldd.txt"
python3 - "$T/sbom.json" "$T/ldd.txt" <<'EOF' || fail "the SBOM misses libraries ldd lists"
import json, sys
d = json.load(open(sys.argv[1]))
files = {p["value"] for c in d["components"] for p in c.get("properties", []) if p["name"] == "keel:file"}
missing = [l for l in open(sys.argv[2]).read().split() if l not in files]
assert not missing, missing
EOF
note "$(wc -l <"$T/ldd.txt") libraries from ldd, all in the SBOM"
for a in $ARTEFACTS; do
    h=$(sha256sum "$a" | cut -d' ' -f1)
    python3 - "$T/sbom.json" "$(realpath "$a")" "$h" <<'EOF' || fail "$a: hash in the SBOM differs from sha256sum's"
import json, sys
d = json.load(open(sys.argv[1]))
c = [c for c in d["components"] if c["bom-ref"] == "file:" + sys.argv[2]]
assert len(c) == 1 and c[0]["hashes"] == [{"alg": "SHA-256", "content": sys.argv[3]}], c
assert {"name": "keel:origin", "value": "product"} in c[0]["properties"]
EOF
done
note "hashes of $(echo "$ARTEFACTS" | wc -w) artefacts equal sha256sum's"

# ---- the validator fails on tampered documents ------------------------------------------
python3 - "$T/sbom.json" "$T" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
def out(name, f):
    x = json.loads(json.dumps(d)); f(x); json.dump(x, open(f"{sys.argv[2]}/{name}.json", "w"))
out("bad-hash", lambda x: x["components"][0]["hashes"][0].update(content="not-hex"))
out("bad-type", lambda x: x["components"][0].update(type="gadget"))
out("bad-serial", lambda x: x.update(serialNumber="12345"))
out("bad-extra", lambda x: x["metadata"].update(vendor="?"))
out("bad-dep", lambda x: x["dependencies"][0]["dependsOn"].append("pkg:deb/debian/nowhere@1"))
out("bad-dupref", lambda x: x["components"].append(x["components"][0]))
EOF
for t in bad-hash bad-type bad-serial bad-extra bad-dep bad-dupref; do
    expect_rc 1 validate "$T/$t.json"
    grep -q INVALID "$T/out" || fail "$t: no INVALID"
done
note "the validator refuses 6 tampered SBOMs"

# ---- no arguments: the installed layout (bin/keel, sbin/keeld, lib/<multiarch>/libkeel.*) ------------
P=$T/prefix
MA=$(gcc -print-multiarch 2>/dev/null || dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
mkdir -p "$P/bin" "$P/sbin" "$P/lib/$MA"
cp "$KEEL" "$P/bin/keel"
cp "$B/keeld/keeld" "$P/sbin/keeld"
[ -x "$B/keel-fleetd/keel-fleetd" ] && cp "$B/keel-fleetd/keel-fleetd" "$P/sbin/keel-fleetd"
cp "$KEEL_BUILD_DIR/src/libkeel.a" "$P/lib/$MA/libkeel.a"
expect_rc 0 "$P/bin/keel" sbom --out "$T/installed.json" --product Thermostat --product-version 2.0
expect_rc 0 validate "$T/installed.json"
python3 - "$T/installed.json" "$P" <<'EOF2' || fail "the installed layout is not what keel sbom found"
import json, os, sys
d = json.load(open(sys.argv[1]))
prod = {c["name"]: c for c in d["components"] if {"name": "keel:origin", "value": "product"} in c["properties"]}
want = {"keel", "keeld", "libkeel.a"} | ({"keel-fleetd"} if os.path.exists(sys.argv[2] + "/sbin/keel-fleetd") else set())
assert set(prod) == want, sorted(prod)
assert all(c["version"] == "2.0" for c in prod.values())
assert d["metadata"]["component"]["name"] == "Thermostat"
assert prod["libkeel.a"]["type"] == "library" and prod["keeld"]["type"] == "application"
EOF2
note "no arguments: found $(grep -c '"keel:origin"' "$T/installed.json") components from $P"

# ---- usage errors ---------------------------------------------------------------------
expect_rc 2 "$KEEL" sbom --out "$T/x.json" /nonexistent/keeld
grep -q "nonexistent" "$T/err" || fail "a missing artefact is not named"
[ ! -e "$T/x.json" ] || fail "an SBOM was written for a missing artefact"
expect_rc 2 "$KEEL" sbom --bogus
echo "sbom: all checks passed"

#!/bin/sh
# keel assess init: drafts the ICS and IXIT of a provisioned Keel device (the
# thermostat of examples/thermostat), which validate as drafts, list what the
# manufacturer must fill, are refused by a strict check until filled, and
# validate strictly once filled. Also: no overwrite without --force, 0644
# files, the cloud link from [link] broker, configuration errors exit 2, and
# the example files of examples/keel-device pass the strict check.
. "$(dirname "$0")/keeld_lib.sh"

note "provision a thermostat"
provision thermo-1 $FAST_ARGON --product "$KEEL_SOURCE_DIR/examples/thermostat/product.json"
OUT=$T/assess

note "draft"
expect_rc 0 "$KEEL" assess init --config "$CONF" --out "$OUT"
for f in ics.json ixit.json; do
    [ -f "$OUT/$f" ] || fail "no $OUT/$f"
    mode=$(stat -c %a "$OUT/$f")
    [ "$mode" = 644 ] || fail "$f has mode $mode, expected 644"
    ls "$OUT" | grep -q '\.tmp' && fail "a temporary file was left in $OUT"
done
for p in '$.disclosure.policy' '$.disclosure.security_txt' '$.product.support_period.published_at' \
    '$.debug_interfaces' '$.update.test_bundles.tampered' '$.features.debug_interface' \
    '$.provisions["5.2-2"].support'; do
    grep -qF "$p" "$T/out" || fail "placeholder $p is not listed: $(cat "$T/out")"
done
grep -q 'values to be filled by the manufacturer' "$T/out" || fail "no placeholder count"
note "the IXIT describes the identity key where this device keeps it"
want="sealed file in the [keystore] directory"
[ "${KEEL_TEST_KEYSTORE:-}" != tpm2 ] || want="TPM 2.0 key blob in the [keystore] directory"
grep -qF "$want" "$OUT/ixit.json" || fail "the IXIT does not say '$want'"

note "the draft validates as a draft, and a strict check refuses it"
expect_rc 0 "$KEEL" assess init --check "$OUT" --json
python3 - "$T/out" <<'PY' || fail "check --json output is wrong"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["draft"] is True, r
paths = [e["path"] for e in r["to_fill"]["ixit"]]
assert "$.disclosure.policy" in paths and "$.debug_interfaces" in paths, paths
assert all(e["what"] for e in r["to_fill"]["ics"] + r["to_fill"]["ixit"])
PY
expect_rc 1 "$KEEL" assess init --check "$OUT" --strict
grep -q 'a draft is refused in strict mode' "$T/err" || fail "strict refusal not explained: $(cat "$T/err")"

note "what the draft says about this device"
python3 - "$OUT" "$D/declaration.json" <<'PY' || fail "the draft does not describe the device"
import json, sys
ics = json.load(open(sys.argv[1] + "/ics.json"))
ixit = json.load(open(sys.argv[1] + "/ixit.json"))
decl = json.load(open(sys.argv[2]))
assert ics["status"] == "draft" and ixit["status"] == "draft"
assert ics["product"] == {"manufacturer": "Acme", "model": "thermo-1"}, ics["product"]
f = ics["features"]
assert f["personal_data"] is True and f["consent"] is True and f["telemetry"] is True, f
assert f["cloud"] is False and f["sensitive_data"] is False and f["constrained"] is False, f
p = ics["provisions"]
assert len(p) == 78, len(p)
assert p["5.1-1"]["support"] == "yes" and p["5.1-1"]["justification"], p["5.1-1"]
assert p["5.3-14"] == {"support": "not_applicable", "missing_feature": "constrained",
                       "justification": p["5.3-14"]["justification"]}, p["5.3-14"]
assert p["5.8-2"]["missing_feature"] == "sensitive_data", p["5.8-2"]
assert p["5.2-2"]["support"].startswith("TO BE FILLED: "), p["5.2-2"]
assert ixit["personal_data"]["declaration"] == decl
names = [i["name"] for i in ixit["interfaces"] if isinstance(i, dict)]
assert names == ["local-api", "app-socket"], names
api = ixit["interfaces"][0]
assert api["port"] == 8443 and api["tls"] is True and api["role"] == "server", api
assert ixit["expected_open_ports"] == [{"transport": "tcp", "port": 8443}]
creds = ixit["authentication"][0]["lab_credentials"]
assert "password" not in creds and creds["password_env"], creds
PY

note "no overwrite without --force"
sum1=$(cat "$OUT/ics.json" "$OUT/ixit.json" | cksum)
expect_rc 1 "$KEEL" assess init --config "$CONF" --out "$OUT"
grep -q -- '--force' "$T/err" || fail "refusal does not mention --force: $(cat "$T/err")"
[ "$(cat "$OUT/ics.json" "$OUT/ixit.json" | cksum)" = "$sum1" ] || fail "files changed without --force"
rm "$OUT/ixit.json"
expect_rc 1 "$KEEL" assess init --config "$CONF" --out "$OUT"
[ ! -f "$OUT/ixit.json" ] || fail "half a draft was written after a refusal"

note "--force, with a cloud link and another listener"
expect_rc 0 "$KEEL" assess init --config "$CONF" --out "$OUT" --force -o link.broker=127.0.0.1:8883 \
    -o api.listen=127.0.0.1:9443 --json
python3 - "$OUT" <<'PY' || fail "the redraft does not show the cloud link"
import json, sys
ics = json.load(open(sys.argv[1] + "/ics.json"))
ixit = json.load(open(sys.argv[1] + "/ixit.json"))
assert ics["features"]["cloud"] is True
assert ics["provisions"]["5.11-2"]["support"] == "yes", ics["provisions"]["5.11-2"]
link = [i for i in ixit["interfaces"] if isinstance(i, dict) and i["name"] == "cloud-link"]
assert link and link[0]["port"] == 8883 and link[0]["role"] == "client" and link[0]["tls"] is True, link
assert link[0]["authentication"] == ["device-certificate"]
assert ixit["expected_open_ports"] == [{"transport": "tcp", "port": 9443}]
PY
expect_rc 0 "$KEEL" assess init --check "$OUT"

note "a draft marked final while placeholders remain is refused"
python3 - "$OUT/ixit.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); d["status"] = "final"
json.dump(d, open(sys.argv[1], "w"))
PY
expect_rc 1 "$KEEL" assess init --check "$OUT"
grep -q 'to be filled by the manufacturer' "$T/err" || fail "final-with-placeholder not explained: $(cat "$T/err")"

note "filled in, the draft passes the strict check"
expect_rc 0 "$KEEL" assess init --config "$CONF" --out "$OUT" --force
python3 - "$OUT" <<'PY'
import json, sys
P = "TO BE FILLED: "
def fill(v, path=""):
    if isinstance(v, dict):
        return {k: fill(x, path + "." + k) for k, x in v.items()}
    if isinstance(v, list):
        return [fill(x, path) for x in v if not (isinstance(x, str) and x.startswith(P))]
    if isinstance(v, str) and v.startswith(P):
        if path.endswith(".support"):
            return "yes"
        if path.endswith(".end"):
            return "2031-12-31"
        if path.endswith("debug_interface"):
            return False
        if path.endswith("debug_interfaces"):
            return []
        return "https://acme.example/filled"
    return v
for name in ("ics.json", "ixit.json"):
    d = fill(json.load(open(sys.argv[1] + "/" + name)))
    d["status"] = "final"
    if name == "ics.json":
        d["provisions"]["5.6-4B"] = {"support": "not_applicable", "missing_feature": "debug_interface",
                                     "justification": "no debug port"}
    json.dump(d, open(sys.argv[1] + "/" + name, "w"), indent=1)
PY
expect_rc 0 "$KEEL" assess init --check "$OUT" --strict

note "the examples of examples/keel-device pass the strict check"
expect_rc 0 "$KEEL" assess init --check "$KEEL_SOURCE_DIR/examples/keel-device" --strict

note "configuration and usage errors exit 2"
expect_rc 2 "$KEEL" assess init --config "$T/no-such.conf" --out "$T/x"
printf '[device]\nid = x\nbogus = 1\n' >"$T/bad.conf"
expect_rc 2 "$KEEL" assess init --config "$T/bad.conf" --out "$T/x"
grep -q 'bad.conf' "$T/err" || fail "config error does not name the file: $(cat "$T/err")"
echo '{"format": "keel-declaration-1"}' >"$T/decl.json"
expect_rc 2 "$KEEL" assess init --config "$CONF" --out "$T/x" -o "privacy.declaration=$T/decl.json"
grep -q 'declaration' "$T/err" || fail "bad declaration not named: $(cat "$T/err")"
expect_rc 2 "$KEEL" assess init --config "$CONF" --out "$T/x" -o api.listen=nowhere
expect_rc 2 "$KEEL" assess init --config "$CONF"
expect_rc 2 "$KEEL" assess init --out "$T/x" --check "$OUT"
expect_rc 2 "$KEEL" assess init --config "$CONF" --out "$T/x" --strict
[ ! -e "$T/x" ] || fail "a failed run created $T/x"
expect_rc 0 "$KEEL" assess init --help
grep -q -- '--force' "$T/out" || fail "--help does not document --force"

note "docs/provisions.md shows the catalogue as keel assess catalogue --md prints it"
expect_rc 0 "$KEEL" assess catalogue --md
sed -n '/^<!-- keel assess catalogue --md -->$/,/^<!-- end -->$/p' "$KEEL_SOURCE_DIR/docs/provisions.md" |
    sed '1d;$d' >"$T/doc-table.md"
cmp -s "$T/out" "$T/doc-table.md" ||
    { diff "$T/doc-table.md" "$T/out" >&2 || true; fail "docs/provisions.md's table differs from keel assess catalogue --md"; }
expect_rc 0 "$KEEL" assess catalogue --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["provisions"]) == 78' "$T/out" ||
    fail "keel assess catalogue --json does not list 78 provisions"
expect_rc 2 "$KEEL" assess catalogue --json --md

note "ok"

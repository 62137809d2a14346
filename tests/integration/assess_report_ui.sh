#!/bin/sh
# The report of `keel assess run` in a real browser. A report.json of all 78
# provisions (built here in Python from the catalogue, independently of the C
# code: every verdict, a few hundred evidence entries, and hostile banners
# that try to run script, load images, styles and frames from a loopback port,
# and break out of attributes) is written out by tests/tools/assess_render
# (keel_assess_report_write). Then:
#  - junit.xml parses with python3's xml.etree (and xmllint when installed) and
#    its counts match the summary; report.md has its sections; the four files
#    are 0644; a malformed report is refused with its JSON path;
#  - report.html, served by python3's http.server on 127.0.0.1, is opened by
#    Debian's Chromium through playwright-core (tests/ui/assess_report.mjs):
#    78 cells, the counts of report.json, a FAIL cell that leads to its
#    section, the hostile text shown as text, no dialog, no console error, no
#    CSP violation, no request but the page's own; and the "leak" server the
#    banners point at is never asked for anything.
# Skips (77) only when chromium or node is missing.
set -eu

CHROMIUM=${KEEL_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ] || [ ! -x "$CHROMIUM" ] || ! command -v node >/dev/null 2>&1; then
    echo "SKIP: assess_report_ui needs chromium and node (scripts/deps.sh installs them)"
    exit 77
fi

. "$(dirname "$0")/assess_lib.sh"
: "${KEEL_SOURCE_DIR:?KEEL_SOURCE_DIR must point to the source tree}"
RENDER=${ASSESS_RENDER:-$KEEL_BUILD_DIR/tests/assess_render}
[ -x "$RENDER" ] || fail "assess_render not built: $RENDER"
ART=${KEEL_UI_ARTIFACTS:-$KEEL_BUILD_DIR/ui-artifacts}/assess_report

ui_node_setup

# A server the hostile banners point at: anything it is asked for is a leak.
LEAK_PORT=$(free_port)
mkdir -p "$T/leak"
LEAK_LOG=$T/leak.log
BG_LOG=$LEAK_LOG bg python3 -m http.server --bind 127.0.0.1 --directory "$T/leak" "$LEAK_PORT"

note "a report.json of the 78 provisions, with hostile banners"
expect_rc 0 "$RENDER" --catalogue
cp "$T/out" "$T/catalogue.json"
python3 - "$T/catalogue.json" "$T/report.json" "$LEAK_PORT" <<'PY' || fail "could not build the report"
import json, sys

cat = json.load(open(sys.argv[1]))
leak = "http://127.0.0.1:%s" % sys.argv[3]
assert len(cat) == 78, len(cat)

# What a hostile device answers, as keel_assess_escape leaves it: printable
# ASCII kept, so markup survives into the report and must be escaped there.
hostile = [
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(2)>",
    "'><svg onload=alert(3)>",
    "<img src=%s/leak-img.png>" % leak,
    "<link rel=stylesheet href=%s/leak.css>" % leak,
    "<style>body{background:url(%s/leak-bg.png)}</style>" % leak,
    "<iframe src=%s/leak-frame></iframe>" % leak,
    "<meta http-equiv=refresh content=\"0;url=%s/leak-refresh\">" % leak,
    "</script><script src=%s/leak.js></script>" % leak,
    "<a href=\"javascript:alert(5)\">click</a> ]]> | `tick` *star*",
]

def verdict_for(i, p):
    if p["id"] in ("5.1-1", "5.6-1", "5.6-2", "5.2-2"):
        return "FAIL"
    if p["id"] in ("5.5-1", "5.3-5", "6-4"):
        return "INCONCLUSIVE"
    if p["feature"] in ("constrained", "debug_interface", "cloud"):
        return "NOT_APPLICABLE"
    if p["status"] == "R" and i % 5 == 0:
        return "NOT_APPLICABLE"
    return "PASS"

provisions = []
n = 0
for i, p in enumerate(cat):
    v = verdict_for(i, p)
    ics_na = v == "NOT_APPLICABLE" and p["feature"] is not None
    support = "not_applicable" if ics_na else ("no" if v == "NOT_APPLICABLE" else "yes")
    tests = [{
        "id": p["id"] + "/conceptual", "kind": "conceptual", "unit": None, "interface": None,
        "verdict": "PASS" if v == "FAIL" else v,
        "reason": "the ICS and IXIT show a design that meets the provision",
        "findings": [], "evidence": [],
    }]
    for u in ([] if ics_na else p["units"]):
        evidence = []
        for k in range(8):
            b = hostile[n % len(hostile)]
            n += 1
            evidence.append({
                "sent": "GET /%d HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n" % k,
                "observed": "HTTP/1.1 200 OK\\r\\nServer: %s\\r\\n\\r\\n" % b,
                "duration_us": 1000 + k,
            })
        findings = []
        if v == "FAIL":
            findings = [{"severity": "fail", "what": "the banner discloses " + hostile[0]},
                        {"severity": "warn", "what": hostile[1]}]
        tests.append({
            "id": "%s/%s/tcp:8443" % (p["id"], u), "kind": "functional", "unit": u, "interface": "tcp:8443",
            "verdict": v, "reason": "probed on tcp:8443" if v != "INCONCLUSIVE" else "the port did not answer",
            "findings": findings, "evidence": evidence,
        })
    provisions.append({
        "id": p["id"], "title": p["title"], "status": p["status"], "feature": p["feature"],
        "support": support,
        "justification": None if support == "yes" else "the product has no such part " + hostile[2],
        "verdict": v,
        "reason": ("found: " + hostile[0]) if v == "FAIL" else "as the tests show",
        "tests": tests,
    })

count = {k: sum(1 for p in provisions if p["verdict"] == k) for k in ("PASS", "FAIL", "NOT_APPLICABLE", "INCONCLUSIVE")}
mand = [p for p in provisions if p["status"] == "M"]
mfail = sum(1 for p in mand if p["verdict"] == "FAIL")
report = {
    "format": "keel-assess-report-1",
    "generator": "keel 0.1.0",
    "started": "2026-11-22T08:00:00Z",
    "duration_us": 41234567,
    "mode": "ics+ixit",
    "target": {"host": "127.0.0.1", "address": "127.0.0.1"},
    "product": {"manufacturer": "Acme " + hostile[1], "model": "thermo-1 " + hostile[0], "firmware_version": "1.4.2"},
    "summary": dict(provisions=len(provisions), **count, mandatory=len(mand), mandatory_fail=mfail,
                    mandatory_inconclusive=sum(1 for p in mand if p["verdict"] == "INCONCLUSIVE"),
                    conforming=mfail == 0),
    "provisions": provisions,
    "probes": [{"probe": "http", "interface": "tcp:8443", "duration_us": 123, "status": "ok"}],
    "observations": [],
}
json.dump(report, open(sys.argv[2], "w"), indent=2)
print("evidence entries:", n)
PY

note "assess_render writes the four files"
OUT=$T/site/out
mkdir -p "$T/site"
expect_rc 0 "$RENDER" "$T/report.json" "$OUT"
for f in report.json report.md report.html junit.xml; do
    [ -f "$OUT/$f" ] || fail "no $OUT/$f"
    mode=$(stat -c %a "$OUT/$f")
    [ "$mode" = 644 ] || fail "$f has mode $mode, expected 644"
done
[ "$(stat -c %a "$OUT")" = 755 ] || fail "$OUT has mode $(stat -c %a "$OUT"), expected 755"
ls "$OUT" | grep -q '\.tmp' && fail "a temporary file was left in $OUT"

note "junit.xml parses and counts like the summary"
python3 - "$T/report.json" "$OUT/junit.xml" <<'PY' || fail "junit.xml is wrong"
import json, sys
import xml.etree.ElementTree as ET
r = json.load(open(sys.argv[1]))
s = r["summary"]
root = ET.parse(sys.argv[2]).getroot()
assert root.tag == "testsuites", root.tag
a = root.attrib
assert (a["name"], int(a["tests"]), int(a["failures"]), int(a["errors"]), int(a["skipped"])) == \
    ("keel assess", 78, s["FAIL"], s["INCONCLUSIVE"], s["NOT_APPLICABLE"]), a
suites = root.findall("testsuite")
assert [x.attrib["name"] for x in suites][:3] == ["EN 303 645 5.0", "EN 303 645 5.1", "EN 303 645 5.2"]
assert len(suites) == 15 and suites[-1].attrib["name"] == "EN 303 645 6"
cases = root.findall("testsuite/testcase")
assert len(cases) == 78
byname = {c.attrib["name"].split(" ")[0]: c for c in cases}
for p in r["provisions"]:
    c = byname[p["id"]]
    assert c.attrib["name"] == p["id"] + " " + p["title"], c.attrib
    want = {"FAIL": "failure", "INCONCLUSIVE": "error", "NOT_APPLICABLE": "skipped", "PASS": None}[p["verdict"]]
    kids = [k.tag for k in c if k.tag != "system-out"]
    assert kids == ([want] if want else []), (p["id"], kids)
    if want:
        assert c.find(want).attrib["message"] == p["reason"], (p["id"], c.find(want).attrib)
f = byname["5.1-1"].find("failure")
assert "the banner discloses <script>alert(1)</script>" in f.text, f.text
for suite in suites:
    assert int(suite.attrib["tests"]) == len(suite.findall("testcase"))
PY
if command -v xmllint >/dev/null 2>&1; then
    xmllint --noout "$OUT/junit.xml" || fail "xmllint refuses junit.xml"
fi

note "report.md: the failures first, a row per provision"
grep -q '^## Failures$' "$OUT/report.md" || fail "report.md has no Failures section"
[ "$(grep -c '^| [56][.-]' "$OUT/report.md")" = 78 ] || fail "report.md's table does not have 78 rows"
grep -q '^\*\*NOT conforming: 3 mandatory provisions fail\.\*\*$' "$OUT/report.md" ||
    fail "report.md has no overall line: $(sed -n 1,12p "$OUT/report.md")"
# Every '<' and '`' of report.md is escaped: an odd run of backslashes before it.
python3 - "$OUT/report.md" <<'PY' || fail "report.md carries an unescaped < or backtick"
import re, sys
md = open(sys.argv[1]).read()
for m in re.finditer(r"(\\*)([<`])", md):
    assert len(m.group(1)) % 2 == 1, md[max(0, m.start() - 60):m.end() + 20]
assert "\\<script\\>alert(1)\\</script\\>" in md
PY
grep -qi '<script\|<img\|<iframe\|<link\|<svg\|<meta http-equiv=refresh' "$OUT/report.html" && fail "report.html carries raw markup from the report"

note "a malformed report is refused with its JSON path, and nothing is written"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["provisions"][7]["verdict"]="MAYBE"; json.dump(r, open(sys.argv[2],"w"))' \
    "$T/report.json" "$T/bad.json"
expect_rc 1 "$RENDER" "$T/bad.json" "$T/bad"
grep -q 'provisions\[7\]\.verdict: must be one of' "$T/err" || fail "no JSON path in: $(cat "$T/err")"
[ ! -e "$T/bad" ] || fail "a refused report made its directory"
expect_rc 1 "$RENDER" "$T/report.json" "$T/no/such/dir"
grep -q 'its parent must exist' "$T/err" || fail "a missing parent is not explained: $(cat "$T/err")"

note "report.html in Chromium ($("$CHROMIUM" --version 2>/dev/null | head -n 1))"
PAGE_PORT=$(free_port)
PAGE_LOG=$T/page.log
BG_LOG=$PAGE_LOG bg python3 -m http.server --bind 127.0.0.1 --directory "$T/site" "$PAGE_PORT"
wait_port "$PAGE_PORT"
wait_port "$LEAK_PORT"
mkdir -p "$ART"
rm -f "$ART"/*.png "$ART"/*.pdf
set +e
KEEL_UI_URL=http://127.0.0.1:$PAGE_PORT/out/report.html \
KEEL_UI_REPORT=$OUT/report.json \
KEEL_UI_ARTIFACTS=$ART \
KEEL_UI_NODE_DIR=$NODE_DIR \
KEEL_CHROMIUM=$CHROMIUM \
    node "$KEEL_SOURCE_DIR/tests/ui/assess_report.mjs"
rc=$?
set -e
[ "$rc" -eq 0 ] || fail "the browser test failed (exit $rc; screenshots in $ART)"
# The page server saw the page (and perhaps the browser's own favicon
# request); the banners' server saw nothing.
if grep '"[A-Z]* /' "$LEAK_LOG" >&2; then
    fail "the page fetched something from the banners' server"
fi
if grep '"[A-Z]* /' "$PAGE_LOG" | grep -v '"GET /out/report.html HTTP' | grep -v '"GET /favicon.ico HTTP' >&2; then
    fail "the page fetched something besides itself"
fi
grep -q '"GET /out/report.html HTTP' "$PAGE_LOG" || fail "the page server never served report.html"
echo "assess_report_ui: 1 passed, 0 failed"

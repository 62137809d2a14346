#!/bin/sh
# keel assess probe update and publication (issue 6) against targets this
# test starts on 127.0.0.1:
#  (a) keeld, a provisioned device running v1.0, with bundles made here by
#      the real `keel bundle` tooling: good (newer, right signer), downgraded
#      (older security version), wrongly signed (a second release CA made
#      here), tampered (good with a manifest byte flipped). No fail; the good
#      bundle accepted and dropped again; the device still runs v1.0.
#  (b) a deliberately broken "device": a python http.server upload endpoint
#      that accepts any bundle. Fails 5.3-2, 5.3-9, 5.3-10.
#  (c) publication: a good security.txt (Expires computed now), a policy and
#      a support page, as local files and from python3 -m http.server; broken
#      ones (no Contact, expired, no date, 404) fail; a refused port is
#      inconclusive.
. "$(dirname "$0")/assess_lib.sh"

# ---- (a) keeld ------------------------------------------------------------------
note "(a) a provisioned keeld running v1.0"
provision thermo-1
expect_rc 0 "$KEEL" bundle signer --dir "$T/f" --name release-1 --out "$T/signer"
# the second release CA: another factory's, that this device never trusted
expect_rc 0 "$KEEL" factory init --dir "$T/f2" --org Mallory
expect_rc 0 "$KEEL" bundle signer --dir "$T/f2" --name evil --out "$T/signer2"
CHUNK=65536
# mk OUT VERSION SECVER SIGNER: a random 3-chunk payload.
mk() {
    head -c $((2 * CHUNK + 4321)) /dev/urandom >"$T/payload-$2"
    expect_rc 0 "$KEEL" bundle create --signer "$4" --model thermo-1 --version "$2" --security-version "$3" \
        --support-until 2031-12-31 --payload "$T/payload-$2" --out "$1" --chunk-size $CHUNK
}
mk "$T/v1.0.kb" 1.0.0 1 "$T/signer"
expect_rc 0 "$KEEL" update install "$T/v1.0.kb" --state "$D"
expect_rc 0 "$KEEL" boot --state "$D"
expect_rc 0 "$KEEL" update confirm --state "$D"
mk "$T/good.kb" 1.1.0 2 "$T/signer"
mk "$T/down.kb" 0.9.0 0 "$T/signer"
mk "$T/wrong.kb" 1.2.0 3 "$T/signer2"
# a byte of the manifest (the signed part) flipped
cp "$T/good.kb" "$T/tampered.kb"
printf 'Z' | dd of="$T/tampered.kb" bs=1 seek=200 conv=notrunc 2>/dev/null
cmp -s "$T/good.kb" "$T/tampered.kb" && printf 'Y' | dd of="$T/tampered.kb" bs=1 seek=200 conv=notrunc 2>/dev/null
cmp -s "$T/good.kb" "$T/tampered.kb" && fail "the tampered bundle equals the good one"

start_keeld -o auth.free_failures=20
NEWPW="Lab-Owned-Password-4711"
login_ok "$LABEL_PW"
change_password "$TOKEN" "$LABEL_PW" "$NEWPW"
login_ok "$NEWPW"
ADMIN_TOKEN=$TOKEN
# the lab's password goes to the probe through the environment only
KEEL_LAB_PASSWORD=$NEWPW
export KEEL_LAB_PASSWORD

running_is() { # VERSION: keeld still runs it, nothing staged
    TOK=$ADMIN_TOKEN expect_http 200 GET /api/v1/update -
    jtrue "d['running']['version'] == '$1' and d['state'] == 'idle' and d['staged'] is None and d['pending'] is None" \
        "keeld does not run $1 with nothing staged"
}
running_is 1.0.0

note "(a) the four bundles: the three bad ones refused, the good one accepted and dropped"
expect_rc 0 "$KEEL" assess probe update --target 127.0.0.1 --port "$PORT" --tls --user admin \
    --password-env KEEL_LAB_PASSWORD --good "$T/good.kb" --tampered "$T/tampered.kb" \
    --downgraded "$T/down.kb" --wrong-signer "$T/wrong.kb" --json
cp "$T/out" "$T/keeld.json"
if grep -qF "$NEWPW" "$T/keeld.json" "$T/err"; then fail "the lab's password is in the probe's output"; fi
check "$T/keeld.json" 'fails(d) == []' "keeld: a fail finding"
check "$T/keeld.json" 'unit(d, "update") == "ran"' "keeld: the update unit did not run"
check "$T/keeld.json" 'd["login"]["accepted"] is True' "keeld: the login was refused"
check "$T/keeld.json" 'bundle(d, "good")["result"] == "accepted" and bundle(d, "good")["dropped"] is True' \
    "keeld: the good bundle was not accepted and dropped"
check "$T/keeld.json" 'bundle(d, "good")["sha256"] == "'"$(sha256sum "$T/good.kb" | cut -d' ' -f1)"'"' \
    "keeld: the good bundle's sha256 is not the file's"
for r in tampered downgraded wrong_signer; do
    check "$T/keeld.json" "bundle(d, '$r')['result'] == 'refused' and bundle(d, '$r')['answer']['status'] == 422 and bundle(d, '$r')['answer']['error'] == 'bundle_rejected'" \
        "keeld: the $r bundle was not refused with 422 bundle_rejected"
done
check "$T/keeld.json" 'd["version_same"] is True' "keeld: the version answer changed"
running_is 1.0.0

note "(a) tampered variants made from the good bundle"
expect_rc 0 "$KEEL" assess probe update --target 127.0.0.1 --port "$PORT" --tls --user admin \
    --password-env KEEL_LAB_PASSWORD --good "$T/good.kb" --downgraded "$T/down.kb" --wrong-signer "$T/wrong.kb" --json
cp "$T/out" "$T/derived.json"
check "$T/derived.json" 'fails(d) == [] and unit(d, "update") == "ran"' "keeld, derived: a fail or not run"
check "$T/derived.json" 'bundle(d, "tampered", 0)["result"] == "refused" and bundle(d, "tampered", 1)["result"] == "refused"' \
    "keeld, derived: a manifest or signature byte flipped was not refused"
# keeld stages a bundle whose payload alone is damaged (its chunks are checked while installing): info, dropped
check "$T/derived.json" 'bundle(d, "tampered", 2)["payload_only"] is True and bundle(d, "tampered", 2)["dropped"] is True' \
    "keeld, derived: the payload variant was not recorded and dropped"
check "$T/derived.json" 'any(f["severity"] == "info" and f["provision"] == "5.3-9" for f in d["findings"])' \
    "keeld, derived: no info on the payload variant"
running_is 1.0.0

note "(a) the human table; a wrong lab password: inconclusive, no fail"
expect_rc 0 "$KEEL" assess probe update --target 127.0.0.1 --port "$PORT" --tls --user admin \
    --password-env KEEL_LAB_PASSWORD --good "$T/good.kb" --downgraded "$T/down.kb" --wrong-signer "$T/wrong.kb"
grep -q "unit update: ran" "$T/out" || fail "the table does not say the unit ran: $(cat "$T/out")"
grep -q "wrong_signer.*refused.*422" "$T/out" || fail "the table lacks the wrong signer's refusal: $(cat "$T/out")"
KEEL_LAB_PASSWORD=not-the-password expect_rc 0 "$KEEL" assess probe update --target 127.0.0.1 --port "$PORT" --tls \
    --user admin --password-env KEEL_LAB_PASSWORD --good "$T/good.kb" --json
check "$T/out" 'unit(d, "update") == "inconclusive" and fails(d) == []' "keeld, wrong password: not inconclusive"
expect_rc 2 "$KEEL" assess probe update --target 127.0.0.1 --port "$PORT" --user admin --password x
expect_rc 1 "$KEEL" assess probe update --target 127.0.0.1 --port "$PORT" --good "$T/no-such.kb"
alive || die_log "keeld is no longer running"

# ---- (b) a device that takes anything ---------------------------------------------
note "(b) an upload endpoint that accepts any bundle"
cat >"$T/lax.py" <<'EOF'
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            c = self.rfile.read(min(n, 65536))
            if not c:
                break
            n -= len(c)
        if self.path == "/firmware":
            self.answer(200, {"accepted": True})
        else:
            self.answer(404, {"error": "not found"})
    def do_GET(self):
        if self.path == "/version":
            self.answer(200, {"version": "1.0.0"})
        else:
            self.answer(404, {"error": "not found"})
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
LAX=$(free_port)
bg python3 "$T/lax.py" "$LAX"
wait_port "$LAX"
expect_rc 1 "$KEEL" assess probe update --target 127.0.0.1 --port "$LAX" --kind http --method POST --path /firmware \
    --version-path /version --good "$T/good.kb" --tampered "$T/tampered.kb" --downgraded "$T/down.kb" \
    --wrong-signer "$T/wrong.kb" --json
cp "$T/out" "$T/lax.json"
check "$T/lax.json" 'failprov(d) == ["5.3-10", "5.3-2", "5.3-7", "5.3-9"]' "lax: not exactly 5.3-2, 5.3-7, 5.3-9, 5.3-10 failed"
check "$T/lax.json" 'all(b["result"] == "accepted" for b in d["bundles"]) and unit(d, "update") == "ran"' \
    "lax: not every bundle accepted, or the unit did not run"

# ---- (c) publication ------------------------------------------------------------------
note "(c) publication: good documents as files and over HTTP"
mkdir -p "$T/www/.well-known" "$T/www/bad/.well-known"
EXPIRES=$(date -u -d '+30 days' '+%Y-%m-%dT%H:%M:%SZ')
EXPIRED=$(date -u -d '-1 day' '+%Y-%m-%dT%H:%M:%SZ')
cat >"$T/www/.well-known/security.txt" <<EOF
# Acme's security contact (RFC 9116)
Contact: mailto:security@acme.example
Contact: https://acme.example/security
Expires: $EXPIRES
Policy: https://acme.example/disclosure.html
Preferred-Languages: en, de
EOF
cat >"$T/www/disclosure.html" <<'EOF'
<html><body><h1>Vulnerability disclosure</h1>
<p>Report issues to security@acme.example. We acknowledge a report within 5 business days
and send a status update at least every 30 days until it is fixed.</p></body></html>
EOF
cat >"$T/www/support.html" <<'EOF'
<html><body><table><tr><td>thermo-1</td><td>Security updates until 31 December 2031</td></tr></table></body></html>
EOF
cat >"$T/www/bad/.well-known/security.txt" <<EOF
Expires: $EXPIRED
Policy: https://acme.example/disclosure.html
EOF
printf '<html><body>Supported for a long time.</body></html>\n' >"$T/www/bad/support.html"
WWW=$(free_port)
bg python3 -m http.server "$WWW" --bind 127.0.0.1 --directory "$T/www"
wait_port "$WWW"
U="http://127.0.0.1:$WWW"
expect_rc 0 "$KEEL" assess probe publication --security-txt "$U/.well-known/security.txt" --policy "$U/disclosure.html" \
    --support-end 2031-12-31 --support-at "$U/support.html" --json
cp "$T/out" "$T/pub.json"
check "$T/pub.json" 'fails(d) == [] and unit(d, "publication") == "ran"' "publication over HTTP: a fail or not run"
check "$T/pub.json" 'd["security_txt"]["expires"] == "'"$EXPIRES"'" and len(d["security_txt"]["contacts"]) == 2' \
    "publication over HTTP: Expires or contacts not read"
check "$T/pub.json" 'd["support_page"]["found"] == "31 december 2031"' "publication over HTTP: the date was not found"
expect_rc 0 "$KEEL" assess probe publication --base-dir "$T/www" --security-txt .well-known/security.txt \
    --policy disclosure.html --support-end 2031-12-31 --support-at support.html --json
check "$T/out" 'fails(d) == [] and unit(d, "publication") == "ran" and d["findings"] == []' \
    "publication from files: a finding"

note "(c) broken documents: fails; a port nobody listens on: inconclusive"
expect_rc 1 "$KEEL" assess probe publication --security-txt "$U/bad/.well-known/security.txt" \
    --policy "$U/no-such-policy.html" --support-end 2031-12-31 --support-at "$U/bad/support.html" --json
cp "$T/out" "$T/bad.json"
check "$T/bad.json" 'any("no valid Contact" in f for f in fails(d)) and any("expired on" in f for f in fails(d))' \
    "broken security.txt: no Contact and expired not both failed"
check "$T/bad.json" 'any(f.startswith("5.2-1") and "HTTP 404" in f for f in fails(d))' "a 404 policy did not fail"
check "$T/bad.json" 'any(f.startswith("5.3-13") and "not stated" in f for f in fails(d))' "a page without the date did not fail"
check "$T/bad.json" 'unit(d, "publication") == "ran"' "broken documents: the unit did not run"
expect_rc 0 "$KEEL" assess probe publication --security-txt "http://127.0.0.1:$(free_port)/.well-known/security.txt" --json
check "$T/out" 'fails(d) == [] and unit(d, "publication") == "inconclusive"' "a refused port is not inconclusive"
expect_rc 1 "$KEEL" assess probe publication --security-txt "$U/bad/.well-known/security.txt"
grep -q "unit publication: ran" "$T/out" || fail "the table does not say the unit ran: $(cat "$T/out")"
expect_rc 2 "$KEEL" assess probe publication --support-end 2031-02-30
expect_rc 2 "$KEEL" assess probe publication

stop_keeld
echo "assess_update: 1 passed, 0 failed"

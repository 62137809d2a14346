#!/bin/sh
# keel assess probe (issue 6) against targets this test starts on 127.0.0.1:
#  (a) keeld, the conforming device: TLS 1.2/1.3 only, AEAD + ECDHE only, no
#      clear-text answer, no finding;
#  (b) openssl s_server with TLS 1.0, AES128-SHA (RSA key exchange, CBC) and
#      a self-signed RSA-1024 certificate: every flaw found;
#  (c) python's http.server: the port answers HTTP in clear;
#  (d) cross-checks: nmap sees the same open ports as our scan, testssl.sh
#      the same accepted protocol versions on (a) and (b). A disagreement
#      fails the test. Missing nmap or testssl: everything else runs, then 77.
# Also prints the time of a full 65535-port loopback scan, ours and nmap's.
. "$(dirname "$0")/assess_lib.sh"

command -v openssl >/dev/null 2>&1 || fail "openssl is needed"
TESTSSL=$(command -v testssl.sh 2>/dev/null || command -v testssl 2>/dev/null || true)
NMAP=$(command -v nmap 2>/dev/null || true)
SKIPPED=

# ---- (a) keeld --------------------------------------------------------------
note "(a) keeld as the conforming target"
provision Probe-1
start_keeld
expect_rc 0 "$KEEL" assess probe tls --target 127.0.0.1 --port "$PORT" --json
cp "$T/out" "$T/keeld.json"
check "$T/keeld.json" 'accepted(d) == ["TLSv1.2", "TLSv1.3"]' "keeld: accepted versions are not exactly TLS 1.2 and 1.3"
check "$T/keeld.json" 'len(d["ciphers"]) > 0 and all(c["aead"] and c["forward_secret"] for c in d["ciphers"])' \
    "keeld: a suite without AEAD or forward secrecy was accepted"
check "$T/keeld.json" 'not any(p["answered"] for p in d["plaintext"])' "keeld answered in clear"
check "$T/keeld.json" '[f for f in d["findings"] if f["severity"] != "info"] == []' "keeld: findings reported"
check "$T/keeld.json" 'd["certificate"]["key_type"] == "EC" and not d["certificate"]["expired"] and d["duration_us"] < 30e6' \
    "keeld: certificate or duration unexpected"
note "keeld: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["handshakes"], "handshakes in", d["duration_us"] / 1e6, "s")' "$T/keeld.json")"
# the human form: a table, same exit status
expect_rc 0 "$KEEL" assess probe tls --target 127.0.0.1 --port "$PORT"
grep -q '^versions: .*TLSv1.2 yes TLSv1.3 yes' "$T/out" || fail "human output lacks the versions line: $(cat "$T/out")"
grep -q '^findings: none' "$T/out" || fail "human output for keeld lists findings"

# ---- (b) a weak TLS server ----------------------------------------------------
note "(b) openssl s_server: TLS 1.0, AES128-SHA, RSA-1024 self-signed"
openssl req -x509 -newkey rsa:1024 -nodes -keyout "$T/weak.key" -out "$T/weak.crt" -days 30 \
    -subj "/CN=weak.test" >/dev/null 2>&1 || fail "cannot make the RSA-1024 certificate"
WEAK=$(free_port)
bg openssl s_server -accept "127.0.0.1:$WEAK" -cert "$T/weak.crt" -key "$T/weak.key" -tls1 \
    -cipher 'AES128-SHA:@SECLEVEL=0' -www -quiet
wait_port "$WEAK"
expect_rc 1 "$KEEL" assess probe tls --target 127.0.0.1 --port "$WEAK" --json
cp "$T/out" "$T/weak.json"
check "$T/weak.json" 'accepted(d) == ["TLSv1"]' "weak: accepted versions are not exactly TLS 1.0"
check "$T/weak.json" '[c["name"] for c in d["ciphers"]] == ["AES128-SHA"]' "weak: accepted suites are not exactly AES128-SHA"
check "$T/weak.json" 'any(f.startswith("5.5-1: TLSv1 is accepted") for f in fails(d))' "weak: TLS 1.0 not reported"
check "$T/weak.json" 'any(f.startswith("5.5-1") and "without AEAD: AES128-SHA" in f for f in fails(d))' "weak: CBC suite not reported"
check "$T/weak.json" 'any(f.startswith("5.5-1") and "without forward secrecy: AES128-SHA" in f for f in fails(d))' \
    "weak: RSA key exchange not reported"
check "$T/weak.json" 'any(f.startswith("5.5-1") and "RSA with 1024 bits" in f for f in fails(d))' "weak: RSA-1024 key not reported"
check "$T/weak.json" 'd["certificate"]["self_signed"] and d["certificate"]["key_bits"] == 1024' "weak: certificate facts wrong"

# ---- (c) clear-text HTTP --------------------------------------------------------
note "(c) python3 -m http.server answers in clear"
mkdir "$T/www"
HTTPP=$(free_port)
bg python3 -m http.server "$HTTPP" --bind 127.0.0.1 --directory "$T/www"
wait_port "$HTTPP"
expect_rc 1 "$KEEL" assess probe tls --target 127.0.0.1 --port "$HTTPP" --json
cp "$T/out" "$T/http.json"
check "$T/http.json" 'accepted(d) == [] and d["tls"] is False and d["certificate"] is None' "http: TLS reported on a clear-text port"
check "$T/http.json" 'any(f.startswith("5.5-6") and "HTTP in clear" in f for f in fails(d))' "http: clear-text answer not reported"

# ---- (d) cross-check with nmap -----------------------------------------------------
# Listeners of our own plus the three servers above, and ports we just freed.
note "(d) open ports: our scan against nmap on the same list"
L1=$(free_port)
L2=$(free_port)
bg python3 -c 'import socket, sys, time
ss = []
for p in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(p))); s.listen(64); ss.append(s)
time.sleep(600)' "$L1" "$L2"
wait_port "$L1"
wait_port "$L2"
C1=$(free_port)
C2=$(free_port)
LIST="$PORT,$WEAK,$HTTPP,$L1,$L2,$C1,$C2"
WANT=$(echo "$PORT $WEAK $HTTPP $L1 $L2" | tr ' ' '\n' | sort -n | tr '\n' ' ')
expect_rc 0 "$KEEL" assess probe ports --target 127.0.0.1 --ports "$LIST" --timeout-ms 500 --json
OURS=$(python3 -c 'import json,sys; print(" ".join(str(o["port"]) for o in json.load(open(sys.argv[1]))["tcp"]["open"]))' "$T/out")
[ "$OURS " = "$WANT" ] || fail "our scan found open [$OURS], the test opened [$WANT]"
if [ -n "$NMAP" ]; then
    "$NMAP" -n -Pn -p "$LIST" -oG "$T/nmap.txt" 127.0.0.1 >/dev/null 2>&1 || fail "nmap failed"
    THEIRS=$(python3 -c 'import re,sys
t = open(sys.argv[1]).read()
print(" ".join(sorted((m.group(1) for m in re.finditer(r"(\d+)/open/tcp", t)), key=int)))' "$T/nmap.txt")
    [ "$OURS" = "$THEIRS" ] || fail "disagreement on open ports: ours [$OURS], nmap [$THEIRS]"
    note "open ports agree with nmap: $OURS"
else
    note "nmap is missing: open-port cross-check skipped"
    SKIPPED="$SKIPPED nmap"
fi

# ---- (d) cross-check with testssl.sh -----------------------------------------------
# testssl_versions JSON: the versions testssl found offered, in our names.
testssl_versions() {
    python3 -c 'import json,sys
names = {"SSLv3": "SSLv3", "TLS1": "TLSv1", "TLS1_1": "TLSv1.1", "TLS1_2": "TLSv1.2", "TLS1_3": "TLSv1.3"}
d = json.load(open(sys.argv[1]))
print(" ".join(sorted(names[e["id"]] for e in d if e.get("id") in names and e["finding"].lower().startswith("offered"))))' "$1"
}
if [ -n "$TESTSSL" ]; then
    for target in keeld:$PORT weak:$WEAK; do
        name=${target%%:*}
        port=${target#*:}
        rm -f "$T/testssl-$name.json"
        "$TESTSSL" --protocols --quiet --color 0 --warnings off --jsonfile "$T/testssl-$name.json" \
            "127.0.0.1:$port" >"$T/testssl-$name.log" 2>&1 || { cat "$T/testssl-$name.log" >&2; fail "testssl failed on $name"; }
        theirs=$(testssl_versions "$T/testssl-$name.json")
        ours=$(python3 -c 'import json,sys; print(" ".join(sorted(v["version"] for v in json.load(open(sys.argv[1]))["versions"] if v["accepted"])))' "$T/$name.json")
        [ -n "$theirs" ] || fail "testssl found no protocol on $name (see $T/testssl-$name.log)"
        [ "$ours" = "$theirs" ] || fail "disagreement on $name protocol versions: ours [$ours], testssl [$theirs]"
        note "$name: protocol versions agree with testssl: $ours"
    done
else
    note "testssl.sh is missing: protocol cross-check skipped"
    SKIPPED="$SKIPPED testssl.sh"
fi

# ---- figures: the whole port range on loopback --------------------------------------
t0=$(date +%s.%N)
expect_rc 0 "$KEEL" assess probe ports --target 127.0.0.1 --json
t1=$(date +%s.%N)
ALLOPEN=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["tcp"]; print(d["ports_scanned"], len(d["open"]), d["closed"], d["filtered"])' "$T/out")
set -- $ALLOPEN
[ "$1" = 65535 ] || fail "the full scan covered $1 ports"
[ $(($2 + $3 + $4)) = 65535 ] || fail "open + closed + filtered is not 65535 ($ALLOPEN)"
for p in $WANT; do
    python3 -c 'import json,sys; sys.exit(0 if int(sys.argv[2]) in [o["port"] for o in json.load(open(sys.argv[1]))["tcp"]["open"]] else 1)' \
        "$T/out" "$p" || fail "the full scan missed open port $p"
done
OURT=$(python3 -c "print('%.2f' % ($t1 - $t0))")
if [ -n "$NMAP" ]; then
    t0=$(date +%s.%N)
    "$NMAP" -n -Pn -p- -T4 127.0.0.1 >"$T/nmap-all.txt" 2>&1 || fail "nmap -p- failed"
    t1=$(date +%s.%N)
    NMAPT=$(python3 -c "print('%.2f' % ($t1 - $t0))")
    note "figure: 65535-port loopback scan: keel $OURT s ($2 open), nmap -p- -T4 $NMAPT s, ratio keel/nmap $(python3 -c "print('%.2f' % ($OURT / $NMAPT))")"
else
    note "figure: 65535-port loopback scan: keel $OURT s ($2 open)"
fi

stop_keeld
if [ -n "$SKIPPED" ]; then
    note "cross-checks skipped, tools missing:$SKIPPED"
    exit 77
fi
note "assess_probe: all checks passed"

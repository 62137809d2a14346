#!/bin/sh
# keeld's TLS (docs/api.md, 5.5-1): TLS 1.0 and 1.1 refused, TLS 1.2 only
# with ECDHE key exchange and AEAD suites (every suite OpenSSL knows is
# tried), TLS 1.3 works, no plaintext HTTP on the port, and the server
# certificate is the device's own: its SHA-256 fingerprint is the one on
# the label and in device.json.
#
# A refusal only means something if the client could have connected: the
# openssl client runs without the system configuration (Debian's sets
# MinProtocol TLSv1.2 and SECLEVEL 2) and at security level 0, and every
# refused protocol or suite is first shown to work against a control
# `openssl s_server` that allows everything.
. "$(dirname "$0")/keeld_lib.sh"
command -v openssl >/dev/null 2>&1 || fail "openssl is needed"

provision thermo-1
start_keeld

# Client (and control server) without the system-wide openssl.cnf.
printf 'openssl_conf = none\n[none]\n' >"$T/openssl.cnf"
export OPENSSL_CONF="$T/openssl.cnf"
LOW='ALL:COMPLEMENTOFALL:@SECLEVEL=0'

# Control server: a throwaway P-256 certificate (keeld's is P-256 too), every protocol and suite.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=control -days 1 \
    -keyout "$T/ctl.key" -out "$T/ctl.crt" 2>/dev/null || fail "could not make the control certificate"
CPORT=$(free_port)
openssl s_server -accept "127.0.0.1:$CPORT" -cert "$T/ctl.crt" -key "$T/ctl.key" -cipher "$LOW" -www -quiet \
    >/dev/null 2>&1 </dev/null &
EXTRA_PIDS="$EXTRA_PIDS $!"
i=0
until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $CPORT), 1)" 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 50 ] || fail "control s_server did not start"
    sleep 0.1
done

# hs PORT [s_client options...]: handshake only; the negotiated protocol and
# suite in $T/hs ("TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256"), empty on failure.
hs() {
    p=$1
    shift
    timeout 10 openssl s_client -connect "127.0.0.1:$p" -brief "$@" </dev/null >"$T/hs.out" 2>&1 || true
    pr=$(sed -n 's/^Protocol version: *//p' "$T/hs.out" | head -n 1)
    cs=$(sed -n 's/^Ciphersuite: *//p' "$T/hs.out" | head -n 1)
    if [ -n "$pr" ] && [ -n "$cs" ]; then echo "$pr $cs" >"$T/hs"; else : >"$T/hs"; fi
}
works() { # WHAT PORT options...
    what=$1
    shift
    hs "$@"
    [ -s "$T/hs" ] || { cat "$T/hs.out" >&2; fail "$what: handshake failed"; }
}
refused() { # WHAT options...   (works against the control, refused by keeld)
    what=$1
    shift
    works "control server, $what" "$CPORT" "$@"
    hs "$PORT" "$@"
    [ ! -s "$T/hs" ] || fail "keeld accepted $what: $(cat "$T/hs")"
}

note "TLS 1.0 and 1.1 refused"
refused "TLS 1.0" -tls1 -cipher "$LOW"
refused "TLS 1.1" -tls1_1 -cipher "$LOW"

note "TLS 1.2 with CBC, RSA-kx or static suites refused"
refused "TLS 1.2 ECDHE-ECDSA-AES128-SHA (CBC)" -tls1_2 -cipher "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"
refused "TLS 1.2 ECDHE-ECDSA-AES256-SHA384 (CBC)" -tls1_2 -cipher "ECDHE-ECDSA-AES256-SHA384:@SECLEVEL=0"

note "TLS 1.2: every suite keeld accepts is ECDHE + AEAD"
openssl ciphers -v "$LOW" | awk '$2 != "TLSv1.3" { print $1 }' | sort -u >"$T/suites"
[ "$(wc -l <"$T/suites")" -gt 30 ] || fail "openssl knows too few TLS 1.2 suites: $(wc -l <"$T/suites")"
: >"$T/accepted"
while read -r s; do
    hs "$PORT" -tls1_2 -cipher "$s:@SECLEVEL=0"
    [ -s "$T/hs" ] && echo "$s" >>"$T/accepted"
done <"$T/suites"
[ -s "$T/accepted" ] || fail "keeld accepts no TLS 1.2 suite at all"
while read -r s; do
    line=$(openssl ciphers -v "$s:@SECLEVEL=0" | awk -v s="$s" '$1 == s')
    kx=$(echo "$line" | sed -n 's/.*Kx=\([^ ]*\).*/\1/p')
    enc=$(echo "$line" | sed -n 's/.*Enc=\([^ ]*\).*/\1/p')
    mac=$(echo "$line" | sed -n 's/.*Mac=\([^ ]*\).*/\1/p')
    case $kx in ECDH) ;; *) fail "keeld accepts $s under TLS 1.2: key exchange $kx is not ECDHE" ;; esac
    [ "$mac" = AEAD ] || fail "keeld accepts $s under TLS 1.2: $enc is not an AEAD cipher"
done <"$T/accepted"
note "accepted under TLS 1.2: $(tr '\n' ' ' <"$T/accepted")"

note "TLS 1.3 works, with AEAD suites only"
works "TLS 1.3" "$PORT" -tls1_3
case $(cat "$T/hs") in "TLSv1.3 "*) ;; *) fail "TLS 1.3 handshake negotiated $(cat "$T/hs")" ;; esac
for s in TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256; do
    hs "$PORT" -tls1_3 -ciphersuites "$s"
    [ -s "$T/hs" ] && note "TLS 1.3 $s: accepted"
done
code=$(curl -sk --tlsv1.3 --max-time 10 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/api/v1/status") || true
[ "$code" = 200 ] || fail "GET /api/v1/status over TLS 1.3 with curl: $code"
# A default client (system config) negotiates TLS 1.3.
code=$(env -u OPENSSL_CONF curl -sk --max-time 10 -o /dev/null -w '%{http_code} %{ssl_verify_result}' \
    "https://127.0.0.1:$PORT/api/v1/status") || true
case $code in "200 "*) ;; *) fail "GET status with default curl: $code" ;; esac

note "plaintext HTTP on the port gets no HTTP answer"
python3 - "$PORT" <<'EOF' || fail "plaintext HTTP was answered"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5)
s.settimeout(5)
s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
data = b""
try:
    while len(data) < 65536:
        b = s.recv(4096)
        if not b:
            break
        data += b
except (socket.timeout, ConnectionResetError):
    pass
print("-- plaintext request got %d bytes back: %r" % (len(data), data[:16]))
sys.exit(1 if b"HTTP/" in data or b"model" in data else 0)
EOF
code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/v1/status") || true
[ "$code" = 000 ] || fail "curl http:// got HTTP $code"
alive || die_log "keeld died on plaintext input"

note "the server certificate is the device's: fingerprint = label = device.json"
timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -showcerts </dev/null >"$T/sc.out" 2>/dev/null || true
# PEM armour matched on purpose, not a certificate: secret-scan: allow
sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' "$T/sc.out" | # secret-scan: allow
    awk '/BEGIN/ { n++ } n == 1' >"$T/leaf.pem"
[ -s "$T/leaf.pem" ] || fail "no server certificate"
fp=$(openssl x509 -in "$T/leaf.pem" -noout -fingerprint -sha256 | sed 's/^.*=//')
[ -n "$fp" ] || fail "could not fingerprint the server certificate"
json_fp=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cert_sha256"])' "$D/device.json")
[ "$fp" = "$CERT_SHA" ] || fail "server certificate $fp is not the label's $CERT_SHA"
[ "$fp" = "$json_fp" ] || fail "server certificate $fp is not device.json's $json_fp"
cmp -s "$T/leaf.pem" "$D/identity/device.crt" ||
    [ "$(openssl x509 -in "$D/identity/device.crt" -noout -fingerprint -sha256 | sed 's/^.*=//')" = "$fp" ] ||
    fail "server certificate is not identity/device.crt"
# The chain is sent, and verifies to the factory's device root.
[ "$(grep -c -- '-----BEGIN CERTIFICATE-----' "$T/sc.out")" -ge 2 ] || fail "keeld does not send its chain" # secret-scan: allow
if [ -f "$T/f/device-ca/root.crt" ]; then
    timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$T/f/device-ca/root.crt" -verify_return_error \
        </dev/null >"$T/v.out" 2>&1 || { cat "$T/v.out" >&2; fail "the chain does not verify to the device root"; }
fi

alive || die_log "keeld died during the TLS tests"
stop_keeld
echo "keeld_tls: 1 passed, 0 failed"

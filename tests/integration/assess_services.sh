#!/bin/sh
# keel assess probe mqtt / service (issue 6) against real Debian servers this
# test starts on 127.0.0.1, each on a free port, all stopped on exit:
#  (a) mosquitto, anonymous and in clear, with a client publishing:
#      5.5-1, 5.5-4 and 5.5-7 fail;
#  (b) mosquitto over TLS with require_certificate and no anonymous access
#      (certificates made here with openssl): the connection without a client
#      certificate is refused at the TLS layer; unit "ran", no fail;
#  (c) inetutils telnetd, one per connection under socat: 5.5-1 fail, the
#      login prompt driven;
#  (d) dropbear with password authentication and root logins refused (-w):
#      unit "ran", banner, version and methods seen, default pairs refused,
#      no 5.1-1 fail; nothing on this machine's accounts is changed;
#  (e) vsftpd with anonymous login: 5.5-1 and 5.5-4 fail, cross-checked with
#      curl's anonymous listing.
# A missing server: the others run, then 77.
. "$(dirname "$0")/assess_lib.sh"

SKIPPED=
# socat forks a child per connection: those children first, by parent id, and
# every server a moment to stop on SIGTERM before keeld_cleanup kills it.
svc_cleanup() {
    for p in $EXTRA_PIDS; do
        pkill -TERM -P "$p" 2>/dev/null || true
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.2
    keeld_cleanup
}
trap svc_cleanup EXIT

have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
TELNETD=/usr/sbin/telnetd
DROPBEAR=$(command -v dropbear || echo /usr/sbin/dropbear)
VSFTPD=$(command -v vsftpd || echo /usr/sbin/vsftpd)

# ---- (a) anonymous broker in clear --------------------------------------------
if have "$MOSQUITTO" && have mosquitto_pub; then
    note "(a) mosquitto: anonymous, in clear, a client publishing"
    MQ=$(free_port)
    cat >"$T/anon.conf" <<EOF
listener $MQ 127.0.0.1
allow_anonymous true
persistence false
user $(id -un)
EOF
    bg "$MOSQUITTO" -c "$T/anon.conf"
    wait_port "$MQ"
    mosquitto_pub -h 127.0.0.1 -p "$MQ" -t home/door -m open -r || fail "cannot publish the retained message"
    # a device reporting while we listen (bounded: 60 messages, 6 s)
    bg sh -c 'for i in $(seq 60); do mosquitto_pub -h 127.0.0.1 -p "$1" -t sensors/temp -m "21.$i" || exit 0; sleep 0.1; done' sh "$MQ"
    expect_rc 1 "$KEEL" assess probe mqtt --target 127.0.0.1 --port "$MQ" --listen-ms 1500 --json
    cp "$T/out" "$T/anon.json"
    check "$T/anon.json" 'unit(d, "mqtt") == "ran" and d["anonymous"] == "accepted" and d["protocol"] == "3.1.1"' \
        "anonymous broker: not seen as anonymous MQTT 3.1.1"
    check "$T/anon.json" 'any(f.startswith("5.5-1: port %d in clear" % d["port"]) for f in fails(d))' "anonymous broker: 5.5-1 not reported"
    check "$T/anon.json" 'any(f.startswith("5.5-4") and "CONNACK rc=0" in f for f in fails(d))' "anonymous broker: 5.5-4 not reported"
    check "$T/anon.json" 'any(f.startswith("5.5-7") for f in fails(d))' "anonymous broker: 5.5-7 not reported"
    check "$T/anon.json" '"home/door" in [t["topic"] for t in d["topics"]] and any(t["topic"] == "home/door" and t["payload"] == "open" for t in d["topics"])' \
        "anonymous broker: the retained topic is not in the document"
    check "$T/anon.json" 'any(e["sent"].startswith("CONNECT v3.1.1 clean, no username") and e["observed"].startswith("CONNACK rc=0") for e in d["evidence"])' \
        "anonymous broker: the evidence lacks CONNECT/CONNACK"
    check "$T/anon.json" 'd["robustness"]["answers_after"] is True and not any(f.startswith("5.13-1B") for f in fails(d))' \
        "anonymous broker: mosquitto reported as broken by malformed CONNECTs"
    # the human form: same exit status, the unit line and the findings table
    expect_rc 1 "$KEEL" assess probe mqtt --target 127.0.0.1 --port "$MQ" --listen-ms 300
    grep -q '^unit mqtt: ran' "$T/out" || fail "human output lacks the unit line: $(cat "$T/out")"
    grep -q '5.5-4 *fail' "$T/out" || fail "human output lacks the 5.5-4 finding"
else
    SKIPPED="$SKIPPED mosquitto"
fi

# ---- (b) broker over TLS requiring client certificates --------------------------
if have "$MOSQUITTO" && have openssl; then
    note "(b) mosquitto: TLS, client certificate required, no anonymous access"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ca.key" -out "$T/ca.crt" \
        -days 2 -subj /CN=keel-test-ca >/dev/null 2>&1 || fail "cannot make the CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/srv.key" -out "$T/srv.csr" \
        -subj /CN=127.0.0.1 >/dev/null 2>&1 || fail "cannot make the server key"
    openssl x509 -req -in "$T/srv.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" -CAcreateserial -out "$T/srv.crt" \
        -days 2 >/dev/null 2>&1 || fail "cannot sign the server certificate"
    MQS=$(free_port)
    cat >"$T/tls.conf" <<EOF
listener $MQS 127.0.0.1
cafile $T/ca.crt
certfile $T/srv.crt
keyfile $T/srv.key
require_certificate true
allow_anonymous false
persistence false
user $(id -un)
EOF
    bg "$MOSQUITTO" -c "$T/tls.conf"
    wait_port "$MQS"
    expect_rc 0 "$KEEL" assess probe mqtt --target 127.0.0.1 --port "$MQS" --tls --json
    cp "$T/out" "$T/tls.json"
    check "$T/tls.json" 'unit(d, "mqtt") == "ran" and d["anonymous"] == "refused_tls" and fails(d) == []' \
        "TLS broker: not 'ran' without fail findings"
    check "$T/tls.json" 'any("asked for a client certificate" in e["observed"] for e in d["evidence"])' \
        "TLS broker: the evidence does not show the certificate request"
    # the same refusal seen by mosquitto's own client
    if have mosquitto_pub && mosquitto_pub --cafile "$T/ca.crt" -h 127.0.0.1 -p "$MQS" -t x -m y >/dev/null 2>&1; then
        fail "TLS broker: mosquitto_pub without a client certificate was accepted"
    fi
    # the clear-text port of (a) probed as TLS is not an MQTT-over-TLS port
    if [ -n "${MQ:-}" ]; then
        expect_rc 0 "$KEEL" assess probe mqtt --target 127.0.0.1 --port "$MQ" --tls --timeout-ms 1000 --json
        check "$T/out" 'unit(d, "mqtt") == "not_applicable"' "clear port probed with --tls: not 'not_applicable'"
    fi
else
    SKIPPED="$SKIPPED mosquitto/openssl"
fi

# ---- (c) telnet ---------------------------------------------------------------------
if [ -x "$TELNETD" ] && have socat; then
    note "(c) inetutils telnetd under socat"
    TN=$(free_port)
    bg socat "TCP-LISTEN:$TN,bind=127.0.0.1,reuseaddr,fork" "EXEC:$TELNETD -h"
    wait_port "$TN"
    # login(1) waits about 3 s after a wrong password: a longer step timeout
    expect_rc 1 "$KEEL" assess probe service --target 127.0.0.1 --port "$TN" --max-pairs 1 --timeout-ms 6000 --json
    cp "$T/out" "$T/telnet.json"
    check "$T/telnet.json" 'd["kind"] == "telnet" and unit(d, "telnet_ssh_ftp") == "ran"' "telnet: not detected"
    check "$T/telnet.json" 'any(f.startswith("5.5-1") and "telnet" in f for f in fails(d))' "telnet: 5.5-1 not reported"
    check "$T/telnet.json" 'd["telnet"]["login_prompt"] and d["telnet"]["refused"] > 0 and d["pairs_tried"] >= 1' \
        "telnet: the login prompt was not reached through the option negotiation"
    check "$T/telnet.json" 'any(e["sent"].startswith("login \"admin\"") and e["observed"].startswith("refused") for e in d["evidence"])' \
        "telnet: login(1) did not refuse admin/admin"
else
    SKIPPED="$SKIPPED telnetd/socat"
fi

# ---- (d) SSH ------------------------------------------------------------------------
if have "$DROPBEAR" && have dropbearkey; then
    note "(d) dropbear with password authentication, root logins refused"
    dropbearkey -t ed25519 -f "$T/hostkey" >/dev/null 2>&1 || fail "dropbearkey failed"
    SP=$(free_port)
    bg "$DROPBEAR" -F -E -w -p "127.0.0.1:$SP" -r "$T/hostkey" -P "$T/dropbear.pid"
    wait_port "$SP"
    expect_rc 0 "$KEEL" assess probe service --target 127.0.0.1 --port "$SP" --max-pairs 3 --json
    cp "$T/out" "$T/ssh.json"
    check "$T/ssh.json" 'd["kind"] == "ssh" and unit(d, "telnet_ssh_ftp") == "ran" and fails(d) == []' \
        "ssh: not 'ran' without fail findings"
    check "$T/ssh.json" 'd["ssh"]["banner"].startswith("SSH-2.0-dropbear") and "password" in d["ssh"]["methods"]' \
        "ssh: banner or password method not seen"
    check "$T/ssh.json" '"curve25519-sha256" in d["ssh"]["kex"] and "ssh-ed25519" in d["ssh"]["hostkey"]' \
        "ssh: the KEXINIT lists are not what dropbear offers"
    check "$T/ssh.json" 'any(f["provision"] == "5.6-2" and "dropbear" in f["what"] for f in d["findings"])' \
        "ssh: the version in the banner is not reported"
    check "$T/ssh.json" 'd["pairs_tried"] >= 4 and not d["ssh"]["none_accepted"]' "ssh: default pairs not tried"
    # dropbear saw the attempts
    grep -q 'root login rejected\|nonexistent user' "$T/bg.log" || fail "ssh: dropbear logged no login attempt"
else
    SKIPPED="$SKIPPED dropbear"
fi

# ---- (e) FTP ------------------------------------------------------------------------
if have "$VSFTPD"; then
    note "(e) vsftpd with anonymous login"
    FP=$(free_port)
    mkdir -p "$T/ftp-root" "$T/ftp-empty"
    echo hello >"$T/ftp-root/readme.txt"
    chmod 755 "$T/ftp-root" "$T/ftp-empty"
    cat >"$T/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port=$FP
background=NO
anonymous_enable=YES
local_enable=NO
write_enable=NO
anon_root=$T/ftp-root
secure_chroot_dir=$T/ftp-empty
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
xferlog_enable=NO
vsftpd_log_file=$T/vsftpd.log
EOF
    bg "$VSFTPD" "$T/vsftpd.conf"
    wait_port "$FP"
    expect_rc 1 "$KEEL" assess probe service --target 127.0.0.1 --port "$FP" --json
    cp "$T/out" "$T/ftp.json"
    check "$T/ftp.json" 'd["kind"] == "ftp" and unit(d, "telnet_ssh_ftp") == "ran"' "ftp: not detected"
    check "$T/ftp.json" 'any(f.startswith("5.5-1") for f in fails(d)) and any(f.startswith("5.5-4") for f in fails(d))' \
        "ftp: 5.5-1 or 5.5-4 not reported"
    check "$T/ftp.json" 'd["ftp"]["anonymous"] == "accepted" and not any(f.startswith("5.1-1") for f in fails(d))' \
        "ftp: anonymous not accepted, or a default pair reported on an anonymous-only server"
    if have curl; then
        curl -s --max-time 5 "ftp://127.0.0.1:$FP/" | grep -q readme.txt || fail "ftp: curl could not list anonymously"
    fi
else
    SKIPPED="$SKIPPED vsftpd"
fi

if [ -n "$SKIPPED" ]; then
    note "skipped, servers missing:$SKIPPED"
    exit 77
fi
note "assess_services: all passed"

#!/bin/sh
# keel assess firmware on a deliberately bad firmware tree and its tar.gz
# (a private key with its certificate, root:admin in shadow, telnetd at boot,
# a world-writable file): every flaw with its provision; a clean tree and its
# tar.gz: no finding. Then keel assess passwords on a Keel batch's labels.csv
# (passes) and on a planted bad label file from another vendor (fails).
# Keys and hashes are made here with openssl; nothing secret is committed.
. "$(dirname "$0")/lib.sh"

mkroot() {
    mkdir -p "$1/etc/init.d" "$1/etc/ssl/certs" "$1/usr/sbin" "$1/www" "$1/tmp"
    chmod 1777 "$1/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1::/:/sbin/nologin\n' >"$1/etc/passwd"
    printf '#!/bin/sh\nifconfig lo up\n/usr/sbin/httpd -h /www\n' >"$1/etc/init.d/rcS"
    chmod 755 "$1/etc/init.d/rcS"
    printf '::sysinit:/etc/init.d/rcS\nttyS0::respawn:/sbin/getty -L ttyS0 115200 vt100\n' >"$1/etc/inittab"
    printf '<html>ok</html>\n' >"$1/www/index.html"
    # A CA certificate alone is not a finding.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/ca.key" \
        -subj /CN=ca.example -days 2 -out "$1/etc/ssl/certs/ca.pem" 2>/dev/null
}

note "a clean firmware tree"
mkroot "$T/clean"
printf 'root:*:19000:0:99999:7:::\ndaemon:!:19000::::::\n' >"$T/clean/etc/shadow"
tar -czf "$T/clean.tar.gz" -C "$T/clean" .

note "a deliberately bad one"
mkroot "$T/bad"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/bad/etc/ssl/device.key" \
    -subj /CN=device.example -days 2 -out "$T/bad/etc/ssl/device.crt" 2>/dev/null
hash=$(openssl passwd -6 admin)
printf 'root:%s:19000:0:99999:7:::\ndaemon:!:19000::::::\n' "$hash" >"$T/bad/etc/shadow"
printf '#!/bin/sh\nifconfig lo up\n/usr/sbin/telnetd -p 23\n' >"$T/bad/etc/init.d/S50telnet"
chmod 755 "$T/bad/etc/init.d/S50telnet"
printf 'x\n' >"$T/bad/www/upload.cgi"
chmod 666 "$T/bad/www/upload.cgi"
tar -czf "$T/bad.tar.gz" -C "$T/bad" .

check_bad() {
    python3 - "$T/out" "$hash" "$T/bad/etc/ssl/device.key" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["format"] == "keel-assess-firmware-1" and r["complete"], r
got = {(f["kind"], f["path"], f["provision"], f["severity"]) for f in r["findings"]}
want = {
    ("private-key", "/etc/ssl/device.key", "5.4-3", "fail"),
    ("certificate-with-key", "/etc/ssl/device.crt", "5.4-3", "fail"),
    ("default-credential", "/etc/shadow", "5.1-1", "fail"),
    ("password-hash", "/etc/shadow", "5.1-1", "warn"),
    ("debug-service", "/etc/init.d/S50telnet", "5.6-4A", "fail"),
    ("world-writable", "/www/upload.cgi", "5.6-7", "warn"),
}
assert want <= got, ("missing", want - got)
assert got <= want, ("unexpected", got - want)
for f in r["findings"]:
    assert set(f) == {"kind", "path", "provision", "severity", "what", "detail"}, f
cred = [f for f in r["findings"] if f["kind"] == "default-credential"][0]
assert cred["detail"]["user"] == "root" and cred["detail"]["hash_type"] == "sha512crypt", cred
text = open(sys.argv[1]).read()
# Never a secret: not the hash, not the password, not a line of the key.
assert sys.argv[2] not in text and sys.argv[2].split("$")[3] not in text
key = [l for l in open(sys.argv[3]).read().splitlines() if "-----" not in l]
assert all(l not in text for l in key), "key material in the report"
assert '"admin"' not in text
PY
}

note "the bad tree: every flaw with its provision"
expect_rc 1 "$KEEL" assess firmware "$T/bad" --json
check_bad || fail "bad tree report"
note "the bad tar.gz: the same findings, read without extracting"
expect_rc 1 "$KEEL" assess firmware "$T/bad.tar.gz" --json
check_bad || fail "bad tar.gz report"
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["source"]=="archive" and r["archive"]["filters"]==["gzip"], r["archive"]' "$T/out"
expect_rc 1 "$KEEL" assess firmware "$T/bad.tar.gz"
grep -q "^FAIL: 4 fail, 2 warn" "$T/out" || { cat "$T/out"; fail "human summary"; }

note "the clean tree and its tar.gz: no finding"
for img in "$T/clean" "$T/clean.tar.gz"; do
    expect_rc 0 "$KEEL" assess firmware "$img" --json
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["findings"]==[] and r["complete"], r' "$T/out" \
        || fail "clean image $img has findings"
done
expect_rc 0 "$KEEL" assess firmware "$T/clean"
grep -q "^PASS: 0 fail, 0 warn" "$T/out" || fail "clean human summary"

note "a link out of the tree is not followed"
ln -s "$T/bad/etc/ssl" "$T/clean/etc/ssl/private"
ln -s "$T/bad/etc/shadow" "$T/clean/etc/shadow-"
expect_rc 0 "$KEEL" assess firmware "$T/clean" --json

note "usage and input errors"
expect_rc 2 "$KEEL" assess firmware
expect_rc 2 "$KEEL" assess firmware "$T/absent"
head -c 4096 /dev/urandom >"$T/junk.bin"
expect_rc 2 "$KEEL" assess firmware "$T/junk.bin"
grep -q "not a directory or a readable archive" "$T/err" || fail "junk not refused clearly"
expect_rc 0 "$KEEL" assess firmware --help

note "keel assess passwords on a Keel batch's labels.csv"
expect_rc 0 "$KEEL" factory init --dir "$T/factory" --org "Acme Devices"
expect_rc 0 "$KEEL" factory provision --dir "$T/factory" --model thermo-1 --count 30 --out "$T/batch" $FAST_ARGON
expect_rc 0 "$KEEL" assess passwords "$T/batch/labels.csv" --json
python3 - "$T/out" <<'PY' || fail "Keel batch analysis"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["format"] == "keel-assess-passwords-1" and r["pass"] and r["labels"] == 30, r
assert r["columns"] == {"id": "device_id", "serial": "serial", "model": "model", "password": "password"}, r["columns"]  # secret-scan: allow (column names)
assert {c["id"] for c in r["checks"]} == {"labels-format", "unique-passwords", "unique-ids", "entropy",
                                          "not-common", "no-relation", "no-pattern"}
assert r["entropy_bits"]["min"] >= 80
PY
sed 1d "$T/batch/labels.csv" | cut -d, -f4 >"$T/pws"
while read -r pw; do
    if grep -qF -- "$pw" "$T/out"; then fail "a label password in the report"; fi
done <"$T/pws"

note "keel assess passwords on a planted bad label file (another vendor's format)"
{
    printf 'Serial Number;MAC Address;Default Password\r\n'
    i=0
    for pw in $(openssl rand -hex 400 | fold -w 20 | head -n 20); do
        i=$((i + 1))
        printf 'CAM%06d;00:1a:2b:3c:%02x:%02x;%s\r\n' "$((4711 * i))" "$i" "$((i * 7))" "$pw"
    done
    printf 'CAM900001;00:1a:2b:3c:99:01;admin\r\n'
    printf 'CAM900002;00:1a:2b:3c:99:02;"cam900002!"\r\n'
    printf 'CAM900003;00:1a:2b:3c:99:03;x1a2b3c9903y\r\n'
    printf 'CAM900004;00:1a:2b:3c:99:04;%s\r\n' "$pw"
} >"$T/vendor.csv"
expect_rc 1 "$KEEL" assess passwords "$T/vendor.csv" --json
python3 - "$T/out" "$pw" <<'PY' || fail "bad labels analysis"
import json, sys
r = json.load(open(sys.argv[1]))
assert not r["pass"] and r["labels"] == 24, r
assert r["columns"] == {"serial": "Serial Number", "mac": "MAC Address", "password": "Default Password"}, r["columns"]
by = {}
for f in r["findings"]:
    assert f["provision"] == "5.1-2" and f["severity"] in ("fail", "warn") and f["what"], f
    by.setdefault(f["check"], set()).add(f["device"])
assert "CAM900001" in by["not-common"], by
assert "CAM900002" in by["no-relation"], by
assert "CAM900003" in by["no-relation"], by
assert by["unique-passwords"] & {"CAM900004", "CAM094220"}, by
text = open(sys.argv[1]).read()
assert sys.argv[2] not in text and "cam900002!" not in text and "x1a2b3c9903y" not in text
PY
expect_rc 1 "$KEEL" assess passwords "$T/vendor.csv"
grep -q "FAIL  not-common" "$T/out" || fail "human report"
printf 'serial,notes\nA1,x\n' >"$T/nopw.csv"
expect_rc 2 "$KEEL" assess passwords "$T/nopw.csv"
grep -q "needs a password column" "$T/err" || fail "missing column not explained"
echo "assess_firmware: 1 passed, 0 failed"

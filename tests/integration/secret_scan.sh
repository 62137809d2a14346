#!/bin/sh
# 5.4-3: the repository holds no private key, certificate, password hash or
# hard-coded password; and the scanner really finds each of them (planted
# here, made at run time).
. "$(dirname "$0")/lib.sh"
SCAN="$KEEL_SOURCE_DIR/scripts/secret-scan.sh"

note "the source tree is clean"
expect_rc 0 sh "$SCAN" "$KEEL_SOURCE_DIR"

plant() { # plant NAME CONTENT-FILE: a one-file tree must be refused
    rm -rf "$T/tree" && mkdir "$T/tree" && cp "$2" "$T/tree/$1"
    expect_rc 1 sh "$SCAN" "$T/tree"
    grep -q "secret-scan: $1" "$T/err" || fail "scanner did not name $1: $(cat "$T/err")"
}
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/k" 2>/dev/null
note "a PEM private key, even inside a C string"
sed 's/^/"/; s/$/\\n"/' "$T/k" >"$T/k.c"
plant embedded.c "$T/k.c"
note "a certificate"
openssl req -new -x509 -key "$T/k" -subj /CN=x -days 1 -out "$T/c" 2>/dev/null
plant fixture.txt "$T/c"
note "a key file by its name"
plant device.pem "$T/c"
note "a shadow line with a password hash"
printf 'root:%s:19000:0:99999:7:::\n' "$(openssl passwd -6 -salt abcdefgh "$(openssl rand -hex 6)")" >"$T/shadow"
plant shadow "$T/shadow"
note "an Argon2id hash"
printf 'hash = "$argon2id$v=19$m=19456,t=2,p=1$%s$%s"\n' "$(openssl rand -base64 12)" "$(openssl rand -base64 24)" >"$T/h" # secret-scan: allow
plant config.ini "$T/h"
note "a hard-coded password"
printf 'static const char *password = "%s";\n' "$(openssl rand -hex 6)" >"$T/p.c"
plant login.c "$T/p.c"
echo "secret_scan: 1 passed, 0 failed"

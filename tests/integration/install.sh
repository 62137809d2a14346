#!/bin/sh
# cmake --install (docs/internals/packaging.md): into a DESTDIR with prefix
# /usr, the layout file by file and nothing else (no test, fuzz or bench
# program, no private header); the units and examples as shipped; every man
# page renders without a warning; libkeel.so has its SONAME and exports its
# public API only; no installed ELF file has a RUNPATH into the build; and a
# C program builds and runs against the installed tree through pkg-config,
# with libkeel.so, with libkeel.a (keel-static.pc), and with keel.pc --static
# in a tree that has the archive alone.
. "$(dirname "$0")/lib.sh"
B=$KEEL_BUILD_DIR
S=$KEEL_SOURCE_DIR
for tool in cmake pkg-config readelf nm groff man; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool is missing"; exit 77; }
done

# cache VAR: a value of the build's CMakeCache.txt.
cache() { sed -n "s/^$1:[A-Z]*=//p" "$B/CMakeCache.txt"; }
CC_USED=$(cache CMAKE_C_COMPILER)
LIBDIR=$(cache CMAKE_INSTALL_LIBDIR)
UNITDIR=$(cache KEEL_SYSTEMD_UNIT_DIR)
if [ -z "$CC_USED" ] || [ -z "$LIBDIR" ] || [ -z "$UNITDIR" ]; then
    fail "CMakeCache.txt lacks the compiler or the install dirs"
fi
case $UNITDIR in /*) ;; *) UNITDIR=/usr/$UNITDIR ;; esac
SYSUSERSDIR=$(cache KEEL_SYSUSERS_DIR)
case $SYSUSERSDIR in /*) ;; *) SYSUSERSDIR=/usr/$SYSUSERSDIR ;; esac
SAN=
[ "$(cache KEEL_SANITIZE)" = ON ] && SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
VERSION=$(sed -n 's/^project(keel VERSION \([0-9.]*\).*/\1/p' "$S/CMakeLists.txt")
SOVER=${VERSION%.*}
[ -n "$VERSION" ] || fail "no project version in CMakeLists.txt"

D=$T/root
note "DESTDIR=\$T/root cmake --install --prefix /usr"
DESTDIR=$D cmake --install "$B" --prefix /usr >"$T/install.log" 2>&1 || { cat "$T/install.log" >&2; fail "cmake --install failed"; }

note "the layout, file by file"
L=usr/$LIBDIR
HEADERS="base.h config.h crypto.h keystore.h identity.h vault.h auth.h device.h update.h slots.h outbox.h privacy.h ipc.h"
{
    echo usr/bin/keel
    echo usr/sbin/keeld
    echo usr/sbin/keel-fleetd
    echo "$L/libkeel.a"
    echo "$L/libkeel.so"
    echo "$L/libkeel.so.$SOVER"
    echo "$L/libkeel.so.$VERSION"
    echo "$L/pkgconfig/keel.pc"
    echo "$L/pkgconfig/keel-static.pc"
    for h in $HEADERS; do echo "usr/include/keel/$h"; done
    for m in "$S"/docs/man/*.1; do echo "usr/share/man/man1/${m##*/}"; done
    for m in "$S"/docs/man/*.8; do echo "usr/share/man/man8/${m##*/}"; done
    for u in "$S"/packaging/*.service; do echo "${UNITDIR#/}/${u##*/}"; done
    for u in "$S"/packaging/sysusers.d/*.conf; do echo "${SYSUSERSDIR#/}/${u##*/}"; done
    for f in README.md SECURITY.md LICENSE LICENSE.md COPYING; do
        [ ! -e "$S/$f" ] || echo "usr/share/doc/keel/$f"
    done
    for f in keeld.conf.example keel-fleetd.conf mosquitto/keel-broker.conf mosquitto/keel-broker.acl \
             thermostat/thermostat.c thermostat/product.json keel-device/ics.json keel-device/ixit.json; do
        echo "usr/share/doc/keel/examples/$f"
    done
} | sort >"$T/want"
(cd "$D" && find . ! -type d | sed 's|^\./||' | sort) >"$T/got"
diff -u "$T/want" "$T/got" >&2 || fail "the installed files differ from the expected layout (- expected, + installed)"
for m in keel.1 keel-assess.1 keel-fleet.1; do grep -qx "usr/share/man/man1/$m" "$T/got" || fail "$m not installed"; done
for m in keeld.8 keel-fleetd.8; do grep -qx "usr/share/man/man8/$m" "$T/got" || fail "$m not installed"; done
grep -qx "${UNITDIR#/}/keeld.service" "$T/got" || fail "keeld.service not installed"

note "no test, fuzz or bench program, no private header"
if grep -E '(^|/)(test_|fuzz_|bench|thermostat$|fleet_sim)' "$T/got" | grep -v '^usr/share/doc/keel/examples/' >&2; then
    fail "a test, fuzz or bench program is installed"
fi
for h in $(cd "$S" && find src programs -name '*.h'); do
    grep -q "/${h##*/}\$" "$T/got" && fail "private header ${h##*/} installed"
done
for h in "$S"/include/keel/*.h; do
    case " $HEADERS " in *" ${h##*/} "*) continue ;; esac
    [ ! -e "$D/usr/include/keel/${h##*/}" ] || fail "internal header ${h##*/} installed"
done
[ "$(readlink "$D/$L/libkeel.so")" = "libkeel.so.$SOVER" ] || fail "libkeel.so does not link to libkeel.so.$SOVER"
[ "$(readlink "$D/$L/libkeel.so.$SOVER")" = "libkeel.so.$VERSION" ] || fail "libkeel.so.$SOVER does not link to the library"

note "units, examples and documents as shipped; binaries executable"
for u in "$S"/packaging/*.service; do cmp "$u" "$D$UNITDIR/${u##*/}" || fail "${u##*/} differs from packaging/"; done
for u in "$S"/packaging/sysusers.d/*.conf; do
    cmp "$u" "$D$SYSUSERSDIR/${u##*/}" || fail "sysusers.d/${u##*/} differs from packaging/"
done
note "systemd-sysusers makes the users the units name, locked, without a shell"
if command -v systemd-sysusers >/dev/null 2>&1; then
    R=$T/sysroot
    mkdir -p "$R/etc"
    systemd-sysusers --root="$R" "$D$SYSUSERSDIR"/*.conf >"$T/sysusers.out" 2>&1 ||
        fail "systemd-sysusers: $(cat "$T/sysusers.out")"
    for u in "$S"/packaging/*.service; do
        user=$(sed -n 's/^User=//p' "$u")
        [ -n "$user" ] || fail "${u##*/} names no User="
        line=$(grep "^$user:" "$R/etc/passwd") || fail "sysusers.d made no user $user for ${u##*/}"
        case "$line" in *:/usr/sbin/nologin | *:/sbin/nologin) ;; *) fail "$user has a login shell: $line" ;; esac
        grep -q "^$user:!" "$R/etc/shadow" || grep -q "^$user:\*" "$R/etc/shadow" ||
            fail "$user's password is not locked: $(grep "^$user:" "$R/etc/shadow")"
    done
else
    note "(systemd-sysusers is missing: the users are not checked)"
fi
cmp "$S/packaging/mosquitto/keel-broker.conf" "$D/usr/share/doc/keel/examples/mosquitto/keel-broker.conf" ||
    fail "keel-broker.conf differs"
cmp "$S/README.md" "$D/usr/share/doc/keel/README.md" || fail "README.md differs"
for p in usr/bin/keel usr/sbin/keeld usr/sbin/keel-fleetd; do [ -x "$D/$p" ] || fail "$p is not executable"; done
[ "$("$D/usr/bin/keel" version)" = "keel $VERSION" ] ||
    fail "installed keel version: $("$D/usr/bin/keel" version)"
if grep -E -i '^[^#]*(password|passphrase|pin|secret|token)[a-z_]* *= *[^ ]' \
        "$D/usr/share/doc/keel/examples/keeld.conf.example" "$D/usr/share/doc/keel/examples/keel-fleetd.conf" |
        grep -v -E '(pin_file|pin_env|tokens|label_password_hash) *=' >&2; then
    fail "an example configuration holds a secret"
fi

note "keeld.conf.example: every key of the schema, each accepted by keeld --check"
EX=$T/keeld-example
mkdir -p "$EX"
sed 's/^# \([a-z_0-9]* = \)/\1/' "$D/usr/share/doc/keel/examples/keeld.conf.example" >"$EX/keeld.conf"
awk '/^\[/ { gsub(/[][]/, ""); s = $0; next } /^[a-z_0-9]+ = / { print s "." $1 }' "$EX/keeld.conf" | sort >"$T/ex.keys"
grep -oE '(STR|PATH|UINT|BOOL)\("[a-z_]+", "[a-z_0-9]+"' "$S/src/device/device.c" |
    sed -E 's/.*\("([a-z_]+)", "([a-z_0-9]+)"/\1.\2/' | sort >"$T/schema.keys"
[ -s "$T/schema.keys" ] || fail "no key found in src/device/device.c's schema"
diff -u "$T/schema.keys" "$T/ex.keys" >&2 || fail "keeld.conf.example and keeld's schema differ (- schema, + example)"
me=$(id -un)
# The thermostat's data declaration, out of its product file.
python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["declaration"], open(sys.argv[2], "w"))' \
    "$D/usr/share/doc/keel/examples/thermostat/product.json" "$EX/declaration.json" ||
    fail "no declaration in the thermostat's product.json"
expect_rc 0 "$D/usr/sbin/keeld" --config "$D/usr/share/doc/keel/examples/keeld.conf.example" --check
expect_rc 0 "$D/usr/sbin/keeld" --config "$EX/keeld.conf" -o "ipc.user=$me" -o "ipc.group=$(id -gn)" \
    -o "security.user=$me" -o "privacy.declaration=$EX/declaration.json" --check

note "every man page renders without a warning"
for m in "$D"/usr/share/man/man1/* "$D"/usr/share/man/man8/*; do
    LC_ALL=C.UTF-8 groff -man -ww -z "$m" >"$T/groff.out" 2>&1 || fail "groff failed on ${m##*/}"
    [ ! -s "$T/groff.out" ] || { cat "$T/groff.out" >&2; fail "groff warns on ${m##*/}"; }
    LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$m" >"$T/man.txt" 2>"$T/man.err" || fail "man failed on ${m##*/}"
    [ ! -s "$T/man.err" ] || { cat "$T/man.err" >&2; fail "man warns on ${m##*/}"; }
    [ -s "$T/man.txt" ] || fail "${m##*/} renders empty"
done
note "keel(1) names every command of keel --help"
"$D/usr/bin/keel" --help >"$T/help" 2>&1 || true
cmds=$(sed -n '/^commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p' "$T/help")
[ -n "$cmds" ] || fail "no command list in keel --help"
for c in $cmds; do
    grep -q "^\.SS \"keel $c" "$S/docs/man/keel.1" || fail "keel.1 has no section for 'keel $c'"
done

note "libkeel.so: SONAME, no RUNPATH into the build, only the public API exported"
readelf -d "$D/$L/libkeel.so.$VERSION" >"$T/dyn"
grep -q "Library soname: \[libkeel.so.$SOVER\]" "$T/dyn" || { cat "$T/dyn" >&2; fail "libkeel.so has no SONAME libkeel.so.$SOVER"; }
for f in usr/bin/keel usr/sbin/keeld usr/sbin/keel-fleetd "$L/libkeel.so.$VERSION"; do
    readelf -d "$D/$f" | grep -E 'RPATH|RUNPATH' >"$T/rp" || true
    if grep -F -e "$B" -e "$S" "$T/rp" >&2; then fail "$f has a RUNPATH into the build or source tree"; fi
done
nm -D --defined-only "$D/$L/libkeel.so.$VERSION" | awk '{ print $NF }' | sort -u >"$T/exported"
cat "$D"/usr/include/keel/*.h | grep -oE 'keel_[a-z0-9_]+' | sort -u >"$T/declared"
comm -23 "$T/exported" "$T/declared" >"$T/extra"
[ ! -s "$T/extra" ] || { cat "$T/extra" >&2; fail "libkeel.so exports names no public header declares"; }
# Functions the public headers declare: all in libkeel.so, but keeld's side of
# the app socket (keelapi) and those with a static inline form (the test
# profile's fault hooks, no-ops in a production build).
cat "$D"/usr/include/keel/*.h | grep 'static inline' | grep -oE 'keel_[a-z0-9_]+\(' | tr -d '(' |
    sort -u >"$T/inline"
cat "$D"/usr/include/keel/*.h | grep -oE '^[a-z].*[ *](keel_[a-z0-9_]+)\(' | grep -oE 'keel_[a-z0-9_]+\($' |
    tr -d '(' | grep -v '^keel_ipc_server_' | sort -u | comm -23 - "$T/inline" >"$T/functions"
[ "$(wc -l <"$T/functions")" -gt 100 ] || fail "too few public functions found: $(wc -l <"$T/functions")"
comm -23 "$T/functions" "$T/exported" >"$T/missing"
[ ! -s "$T/missing" ] || { cat "$T/missing" >&2; fail "public functions libkeel.so does not export"; }
for s in keel_status_str keel_wipe keel_sha256 keel_vault_open keel_ipc_connect keel_ipc_publish; do
    grep -qx "$s" "$T/exported" || fail "$s is not exported"
done
for s in keel_keystore_file_driver auth_throttle_init ipc_request_parse; do
    grep -qx "$s" "$T/exported" && fail "internal $s is exported"
done

note "a C program against the installed tree through pkg-config"
cat >"$T/app.c" <<'EOF'
#include <keel/base.h>
#include <keel/crypto.h>
#include <keel/ipc.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
    static const char abc_sha256[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    uint8_t digest[KEEL_SHA256_LEN];
    char hex[2 * KEEL_SHA256_LEN + 1];
    unsigned char secret[32];
    char small[4];

    if (keel_crypto_init() != KEEL_OK)
        return 10;
    keel_sha256("abc", 3, digest);
    if (keel_hex_encode(digest, sizeof digest, hex, sizeof hex) != KEEL_OK || strcmp(hex, abc_sha256) != 0)
        return 11;
    keel_random_bytes(secret, sizeof secret);
    keel_wipe(secret, sizeof secret);
    for (size_t i = 0; i < sizeof secret; i++)
        if (secret[i] != 0)
            return 12;
    if (keel_strlcpy(small, "too long", sizeof small) != KEEL_ERR_TOO_LARGE)
        return 13;
    if (!keel_ct_equal("same", "same", 4) || keel_ct_equal("same", "sane", 4))
        return 14;
    printf("%s|%s\n", keel_status_str(KEEL_OK), keel_status_str(KEEL_ERR_VERIFY));
    return 0;
}
EOF
# pc_in ROOT ARGS: pkg-config over ROOT's .pc files, then the system's (for the dependencies),
# every path under ROOT (the system's /usr/include too: keel's headers are under ROOT's).
SYS_PC=$(pkg-config --variable pc_path pkg-config)
pc_in() {
    _root=$1; shift
    PKG_CONFIG_SYSROOT_DIR=$_root PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1 \
        PKG_CONFIG_LIBDIR="$_root/$L/pkgconfig:$SYS_PC" pkg-config "$@"
}
pc() { pc_in "$D" "$@"; }
pc --exists keel keel-static || fail "pkg-config does not find keel.pc and keel-static.pc in the DESTDIR"
[ "$(pc --modversion keel)" = "$VERSION" ] || fail "keel.pc's version is $(pc --modversion keel)"
pc --cflags keel | grep -q -- "-I$D/usr/include" || fail "keel.pc's Cflags miss the DESTDIR: $(pc --cflags keel)"

# run PROGRAM...: it runs and prints libkeel's own names of two statuses.
echo "ok|verification failed" >"$T/want.out"
run() {
    "$@" >"$T/run.out" 2>"$T/run.err" || { cat "$T/run.err" >&2; fail "$* failed (exit $?)"; }
    out=$(cat "$T/run.out")
    [ "$out" = "$(cat "$T/want.out")" ] || fail "$*: printed '$out', not '$(cat "$T/want.out")'"
}
# shellcheck disable=SC2046,SC2086 # pkg-config's output is a list of words
$CC_USED $SAN -Wall -Wextra -Werror -std=c11 -o "$T/app-shared" "$T/app.c" $(pc --cflags --libs keel) ||
    fail "cannot build against libkeel.so"
readelf -d "$T/app-shared" | grep -q "NEEDED.*\[libkeel.so.$SOVER\]" || fail "app-shared does not need libkeel.so.$SOVER"
LD_LIBRARY_PATH=$D/$L ldd "$T/app-shared" | grep "libkeel.so.$SOVER => $D/" >/dev/null ||
    fail "app-shared does not load the DESTDIR's libkeel.so"
LD_LIBRARY_PATH=$D/$L run "$T/app-shared"
note "  shared: $out"

note "  the installed example app (thermostat.c) builds against libkeel.so and runs"
# shellcheck disable=SC2046,SC2086
$CC_USED $SAN -Wall -Wextra -Werror -std=c11 -D_DEFAULT_SOURCE -o "$T/thermostat" \
    "$D/usr/share/doc/keel/examples/thermostat/thermostat.c" $(pc --cflags --libs keel) -lm ||
    fail "the installed thermostat example does not build"
LD_LIBRARY_PATH=$D/$L "$T/thermostat" --help >"$T/thermostat.out" 2>&1 || true
grep -q '^usage: thermostat' "$T/thermostat.out" || fail "the thermostat example does not run: $(cat "$T/thermostat.out")"

# shellcheck disable=SC2046,SC2086
$CC_USED $SAN -Wall -Wextra -Werror -std=c11 -o "$T/app-static" "$T/app.c" $(pc --cflags --libs keel-static) ||
    fail "cannot build against libkeel.a (keel-static.pc)"
if readelf -d "$T/app-static" | grep -q 'NEEDED.*libkeel'; then fail "app-static needs libkeel.so"; fi
run "$T/app-static"
note "  static (keel-static.pc): $out"

# A tree with the archive alone (as Buildroot's BR2_STATIC_LIBS installs it): keel.pc --static.
SD=$T/static-root
cp -a "$D" "$SD"
rm -f "$SD/$L"/libkeel.so*
# shellcheck disable=SC2046,SC2086
$CC_USED $SAN -Wall -Wextra -Werror -std=c11 -o "$T/app-static2" "$T/app.c" \
    $(pc_in "$SD" --static --cflags --libs keel) || fail "cannot build with pkg-config --static keel"
if readelf -d "$T/app-static2" | grep -q 'NEEDED.*libkeel'; then fail "app-static2 needs libkeel.so"; fi
run "$T/app-static2"
note "  static (keel.pc --static): $out"
note "ok"

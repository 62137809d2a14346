#!/bin/sh
# Install the Debian packages Keel needs to build, test and demo.
# Idempotent, and silent when everything is already present.
set -eu

PKGS="
build-essential cmake ninja-build pkg-config clang
libssl-dev openssl libsodium-dev libsqlite3-dev sqlite3 libjansson-dev libcmocka-dev
softhsm2 opensc libengine-pkcs11-openssl libp11-dev libp11-kit-dev argon2 python3
john-data libclang-rt-14-dev time cppcheck clang-tidy
libevent-dev curl chromium libmosquitto-dev mosquitto mosquitto-clients
nmap testssl.sh libarchive-dev
libcurl4-openssl-dev libssh-dev lighttpd busybox dropbear-bin vsftpd inetutils-telnetd socat telnet
libpq-dev postgresql nginx-light
libseccomp-dev
swtpm swtpm-tools tpm2-tools tpm2-abrmd tpm2-openssl libtss2-tcti-swtpm0 libtss2-tcti-tabrmd0 dbus-daemon libtss2-dev
man-db
"
# The UI tests drive Chromium with playwright-core (npm): Node.js from Debian
# when the machine has none of its own.
command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"

# `deps.sh bench` adds what make bench compares against (RAUC, SWUpdate).
if [ "${1:-}" = bench ]; then
    PKGS="$PKGS rauc swupdate squashfs-tools cpio dbus"
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "keel: deps: missing packages:$missing (run as root, or install them)" >&2
    exit 2
fi
echo "keel: deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null

#!/bin/sh
# The baseline of `make bench`: what `keel factory provision` does, written as
# a careful shell script over the openssl and argon2 command lines.
#
# usage: openssl_provision.sh FACTORY OUTDIR COUNT
#
# Per device, as keel does: a P-256 key encrypted under a fresh random
# key-encryption key (PKCS#8, PBES2 AES-256-CBC: `openssl enc` has no GCM),
# the id (lower-case base32 of the first 16 bytes of SHA-256 of the public key
# DER), a certificate from FACTORY/device-ca's issuing CA with keel's subject
# and extensions, a label password of 18 characters from keel's alphabet, its
# Argon2id hash (t=2, 19456 KiB, p=1), the device's files in a staging
# directory, its label line, fsyncs, and one rename. manifest.json at the end.
# It is written to be fair to the CLI: one openssl process per step, shell
# built-ins for the small files, one `sync` for all files of a device.
#
# Differences that cost nothing measurable: the certificate is valid for
# 36500 days (openssl 3.0's x509 cannot set keel's 99991231235959Z), and
# the "provisioned" time is taken once per batch.
# Needs: openssl (3.0+), argon2 (Debian package argon2), coreutils.
set -eu

die() {
    echo "openssl_provision.sh: $*" >&2
    exit 1
}

[ $# -eq 3 ] || { echo "usage: openssl_provision.sh FACTORY OUTDIR COUNT" >&2; exit 2; }
factory=$1 out=$2 count=$3
case $count in '' | *[!0-9]*) echo "openssl_provision.sh: COUNT must be a number" >&2; exit 2 ;; esac
[ "$count" -ge 1 ] || { echo "openssl_provision.sh: COUNT must be at least 1" >&2; exit 2; }
for tool in openssl argon2 base32 sync awk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (argon2: Debian package argon2)"
done
ca=$factory/device-ca
for f in "$ca/issuing.crt" "$ca/issuing.key" "$ca/chain.pem" "$factory/release-ca/root.crt" \
    "$factory/service-ca/root.crt" "$factory/factory.json"; do
    [ -r "$f" ] || die "$f: not readable (not a keel factory?)"
done

model=bench-1
alphabet=23456789abcdefghjkmnpqrstuvwxyz
nl='
'
org=$(sed -n 's/^ *"org": *"\([^"]*\)".*/\1/p' "$factory/factory.json")
case $org in '' | *[!A-Za-z0-9\ ._-]*) die "org '$org': this script takes only [A-Za-z0-9 ._-]" ;; esac
now=$(date +%s)
chain=$(cat "$ca/chain.pem")
release_root=$(cat "$factory/release-ca/root.crt")
service_root=$(cat "$factory/service-ca/root.crt")

umask 077
mkdir -p "$out/.work"
labels=$out/labels.csv
[ -f "$labels" ] || printf 'device_id,serial,model,password,cert_sha256\n' >"$labels"
ext=$out/.work/device.cnf
cat >"$ext" <<'EOF'
[device]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth,serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
pub=$out/.work/pub.der

made=0
while [ "$made" -lt "$count" ]; do
    # One draw of randomness per device: the Argon2 salt (16 base64
    # characters), the key-encryption key (44), then the label password and
    # the serial, filtered to the label alphabet (rejection sampling keeps it
    # uniform; ~95 characters survive of the 196, 30 are needed).
    r=$(openssl rand -base64 192 | tr -d '\n')
    salt=${r%"${r#????????????????}"}
    r=${r#????????????????}
    kek=${r%"${r#????????????????????????????????????????????}"}
    pool=$(printf '%s' "${r#????????????????????????????????????????????}" | tr -dc "$alphabet")
    [ ${#pool} -ge 30 ] || continue
    pw=${pool%"${pool#??????????????????}"}
    pool=${pool#??????????????????}
    serial=${pool%"${pool#????????????}"}
    rest=${pw#??????}
    label_pw=${pw%????????????}-${rest%??????}-${rest#??????}

    stage=$out/.staging-$serial
    mkdir -p "$stage/identity" "$stage/keystore" "$stage/trust"
    printf '%s\n' "$kek" >"$stage/keystore/kek"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes-256-cbc \
        -pass "file:$stage/keystore/kek" -out "$stage/keystore/device.key"
    openssl pkey -in "$stage/keystore/device.key" -passin "file:$stage/keystore/kek" \
        -pubout -outform DER -out "$pub"
    id=$(openssl dgst -sha256 -binary "$pub" | head -c 16 | base32 | tr -d '=' | tr '[:upper:]' '[:lower:]')
    [ ${#id} -eq 26 ] || die "could not derive a device id"

    crt=$(openssl x509 -new -subj "/O=$org/OU=$model/CN=$id/serialNumber=$serial" -force_pubkey "$pub" \
        -CA "$ca/issuing.crt" -CAkey "$ca/issuing.key" -days 36500 -sha256 \
        -extfile "$ext" -extensions device -fingerprint) || die "could not issue the certificate of $id"
    fp=${crt%%"$nl"*}
    fp=${fp#*=}
    [ ${#fp} -eq 95 ] || die "could not issue the certificate of $id"
    printf '%s\n' "${crt#*"$nl"}" >"$stage/identity/device.crt"

    hash=$(printf '%s' "$pw" | argon2 "$salt" -id -t 2 -k 19456 -p 1 -l 32 -e) || hash=
    case $hash in "\$argon2id\$"*) ;; *) die "argon2 failed for $id" ;; esac
    printf '%s' "$hash" >"$stage/identity/label.hash"

    printf '%s\n' "$chain" >"$stage/identity/chain.pem"
    printf '%s\n' "$release_root" >"$stage/trust/release-root.pem"
    printf '%s\n' "$service_root" >"$stage/trust/service-root.pem"
    printf '%s\n' "# keeld configuration for device $id (model $model), written by openssl_provision.sh." \
        "# Paths are relative to the directory of this file." "" \
        "[device]" "id = $id" "serial = $serial" "model = $model" "state_dir = ." "" \
        "[identity]" "certificate = identity/device.crt" "chain = identity/chain.pem" \
        "label_password_hash = identity/label.hash" "" \
        "[keystore]" "driver = file" "dir = keystore" "kek_file = keystore/kek" "key_label = device" "" \
        "[trust]" "release_root = trust/release-root.pem" "service_root = trust/service-root.pem" "" \
        "[vault]" "dir = vault" >"$stage/keeld.conf"
    printf '{\n  "cert_sha256": "%s",\n  "format": "keel-device-1",\n  "id": "%s",\n  "key_label": "device",\n  "keystore": "file",\n  "model": "%s",\n  "org": "%s",\n  "provisioned": %s,\n  "serial": "%s"\n}\n' \
        "$fp" "$id" "$model" "$org" "$now" "$serial" >"$stage/device.json"
    [ ! -e "$out/$id" ] || die "device $id already exists (duplicate key?)"
    # Label line first, all of it on disk, then the rename that makes the
    # device exist, then the rename on disk.
    printf '%s,%s,%s,%s,%s\n' "$id" "$serial" "$model" "$label_pw" "$fp" >>"$labels"
    sync "$stage"/identity/* "$stage"/keystore/* "$stage"/trust/* "$stage/keeld.conf" \
        "$stage/device.json" "$stage/identity" "$stage/keystore" "$stage/trust" "$stage" "$labels"
    mv "$stage" "$out/$id"
    sync "$out"
    made=$((made + 1))
done

# manifest.json: every complete device's record and certificate, in one awk.
set --
for d in "$out"/??????????????????????????; do
    [ -f "$d/device.json" ] && set -- "$@" "$d/device.json" "$d/identity/device.crt"
done
awk -v org="$org" -v now="$now" '
    function flush() {
        if (rec != "") {
            printf "%s\n    {%s,\n      \"certificate\": \"%s\"\n    }", sep, rec, pem
            sep = ","
        }
        rec = ""; pem = ""
    }
    BEGIN { printf "{\n  \"format\": \"keel-manifest-1\",\n  \"org\": \"%s\",\n  \"generated\": %s,\n  \"devices\": [", org, now }
    FNR == 1 && FILENAME ~ /device\.json$/ { flush() }
    FILENAME ~ /device\.json$/ {
        if ($0 ~ /^[{}]$/ || $0 ~ /"format"/) next
        sub(/,$/, "")
        rec = rec (rec == "" ? "\n  " : ",\n  ") $0
        next
    }
    { pem = pem $0 "\\n" }
    END { flush(); printf "\n  ]\n}\n" }
' "$@" >"$out/manifest.json.tmp"
sync "$out/manifest.json.tmp"
mv "$out/manifest.json.tmp" "$out/manifest.json"
sync "$out"
rm -rf "$out/.work"

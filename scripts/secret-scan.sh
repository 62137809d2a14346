#!/bin/sh
# Fails if the tree holds a private key, a certificate, a key store, a password
# hash or a hard-coded password (EN 303 645 5.4-3). Tests make all of these at
# run time; nothing of the kind belongs in the repository.
# usage: secret-scan.sh [DIR]   (default: the repository this script is in)
# A line that must mention such a pattern on purpose carries "secret-scan: allow".
# A quoted value that starts with $ (a variable) or \ (an escape) is not a
# literal password and is not reported.
set -eu
dir=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$dir"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    files=$(git ls-files --cached --others --exclude-standard)
else
    files=$(find . -type f ! -path './.git/*' ! -path './build*' ! -path '*/node_modules/*' | sed 's|^\./||')
fi

found=0
report() { echo "secret-scan: $1: $2" >&2; found=1; }

for f in $files; do
    [ -f "$f" ] || continue
    [ "$f" = scripts/secret-scan.sh ] && continue
    case "$f" in
        *.p12|*.pfx|*.jks|*.keystore|*.key|*.pem|*.der|*.crt|*.csr|*.p8)
            report "$f" "key or certificate file"; continue ;;
    esac
    # Binary files: only the PEM armour can be searched meaningfully.
    grep -Iq . "$f" 2>/dev/null || { grep -aqE -- '-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----' "$f" && report "$f" "private key in a binary file"; continue; }
    matches=$(grep -nE \
        -e '-----BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----' \
        -e '-----BEGIN CERTIFICATE-----' \
        -e '-----BEGIN PKCS7-----' \
        -e '\$argon2(id|i|d)\$v=[0-9]+\$m=[0-9]+' \
        -e '^[a-z_][a-z0-9_-]*:\$(1|2[abxy]|5|6|y)\$[^:]{8,}:' \
        -e '(password|passwd|passphrase|secret|pin)["'"'"']?[[:space:]]*[:=][[:space:]]*"[^"[:space:]%$\\][^"[:space:]%]{5,}"' \
        -e "(password|passwd|passphrase|secret|pin)[\"']?[[:space:]]*[:=][[:space:]]*'[^'[:space:]%\$\\\\][^'[:space:]%]{5,}'" \
        "$f" 2>/dev/null | grep -v 'secret-scan: allow' || true)
    [ -z "$matches" ] || report "$f" "$(printf '%s' "$matches" | head -n 3 | cut -c1-160)"
done
[ "$found" -eq 0 ] || { echo "secret-scan: secrets or key material found (5.4-3)" >&2; exit 1; }
echo "secret-scan: clean"

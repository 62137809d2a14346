#!/bin/sh
# keel disclose (EN 303 645 5.2-1), the whole story on 127.0.0.1:
#  - usage errors exit 2 and write nothing; a directory that cannot be made
#    exits 1; --help lists every option;
#  - the real command writes security.txt and the policy page, which nginx
#    (a certificate made here) serves over TLS, security.txt under
#    /.well-known/; `keel assess probe publication` fetches both as a lab
#    would and finds nothing at all to say (no fail, warn or info);
#  - the probe is not blind: as of a day after Expires it fails 5.2-1, and a
#    Canonical that names another place is a warn;
#  - files are replaced atomically (nginx serves the new content at once);
#  - the policy page in Chromium (tests/ui/disclosure_policy.mjs): headings,
#    contact links, timeline, the hostile vendor name as text, no console
#    error, no request but the page.
# Exit 77 when nginx is missing, or (after the rest has passed) when chromium
# or node is.
. "$(dirname "$0")/lib.sh"

NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$NGINX" ] || { echo "SKIP: disclose needs nginx (Debian package nginx-light)"; exit 77; }
command -v openssl >/dev/null 2>&1 || fail "openssl is needed"
command -v python3 >/dev/null 2>&1 || fail "python3 is needed"

NGINX_PID=
disclose_cleanup() {
    if [ -n "$NGINX_PID" ]; then
        kill -TERM "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    cleanup
}
trap disclose_cleanup EXIT
trap 'exit 130' INT TERM

# check JSONFILE EXPR WHAT: WHAT fails unless the Python expression over the
# document d holds; sev(d, s) lists the findings of severity s.
check() {
    python3 - "$1" "$2" <<'EOF' || fail "$3 (document: $1)"
import json, sys
d = json.load(open(sys.argv[1]))
def sev(d, s): return [f["provision"] + ": " + f["what"] for f in d["findings"] if f["severity"] == s]
ok = eval(sys.argv[2])
if not ok:
    print("check failed:", sys.argv[2], file=sys.stderr)
    print(json.dumps(d, indent=1)[:8000], file=sys.stderr)
    sys.exit(1)
EOF
}

note "usage errors: exit 2, nothing written"
expect_rc 0 "$KEEL" disclose --help
for opt in --contact --policy-url --expires --out --encryption --acknowledgments --preferred-languages \
    --canonical --hiring --vendor --product --ack-days --update-days --fix-days; do
    grep -q -- "$opt" "$T/out" || fail "--help does not mention $opt"
done
expect_rc 0 "$KEEL" --help
grep -q '^  disclose ' "$T/out" || fail "keel --help does not list disclose"
S=$T/refused
OK="--contact mailto:security@example.com --policy-url https://example.com/p.html --expires +90 --out $S"
expect_rc 2 "$KEEL" disclose
# shellcheck disable=SC2086
{
    expect_rc 2 "$KEEL" disclose $OK --contact http://example.com/report
    grep -q "must be https://" "$T/err" || fail "http contact: $(cat "$T/err")"
    expect_rc 2 "$KEEL" disclose $OK --contact "ftp://example.com/"
    expect_rc 2 "$KEEL" disclose $OK --expires 2020-01-01
    expect_rc 2 "$KEEL" disclose $OK --expires +400
    expect_rc 2 "$KEEL" disclose $OK --bogus
    expect_rc 2 "$KEEL" disclose $OK --ack-days 0
    expect_rc 2 "$KEEL" disclose $OK --fix-days 90x
    expect_rc 2 "$KEEL" disclose $OK --canonical https://example.com/
    expect_rc 2 "$KEEL" disclose $OK --vendor "$(printf 'Acme\nContact: mailto:evil@example.com')"
    expect_rc 2 "$KEEL" disclose $OK extra-argument
    expect_rc 2 "$KEEL" disclose $OK --out "$S"
    grep -q -- "--out is given twice" "$T/err" || fail "a second --out: $(cat "$T/err")"
    expect_rc 2 "$KEEL" disclose --contact mailto:security@example.com --policy-url https://example.com/p.html \
        --expires +90
}
[ ! -e "$S" ] || fail "a refused command wrote $S"
expect_rc 1 "$KEEL" disclose --contact mailto:security@example.com --policy-url https://example.com/p.html \
    --expires +90 --out "$T/no/such/dir"
grep -q "its parent must exist" "$T/err" || fail "missing parent: $(cat "$T/err")"

note "a certificate for 127.0.0.1 and nginx serving the site over TLS"
NG=$T/nginx
mkdir -p "$NG/logs" "$NG/tmp" "$NG/www"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:TRUE" \
    -keyout "$NG/server.key" -out "$NG/server.pem" >"$T/openssl.log" 2>&1 || { cat "$T/openssl.log"; fail "openssl req"; }
PORT=$(free_port)
BASE=https://127.0.0.1:$PORT
SITE=$NG/www/site
_user=
[ "$(id -u)" != 0 ] || _user="user $(id -un);"
cat >"$NG/nginx.conf" <<EOF
$_user
daemon off;
worker_processes 1;
pid $NG/nginx.pid;
error_log $NG/logs/error.log info;
events { worker_connections 64; }
http {
    access_log $NG/logs/access.log;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    types { text/html html; text/plain txt; text/markdown md; }
    charset utf-8;
    charset_types text/plain text/html text/markdown;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $NG/server.pem;
        ssl_certificate_key $NG/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $SITE;
        location = /.well-known/security.txt { try_files /security.txt =404; }
        location = /disclosure-policy.html { }
        location = /disclosure-policy.md { }
        location / { return 404; }
    }
}
EOF
"$NGINX" -t -p "$NG" -c "$NG/nginx.conf" -e "$NG/logs/error.log" >"$T/nginx-t.log" 2>&1 ||
    { cat "$T/nginx-t.log" >&2; fail "nginx refuses the test's configuration"; }

note "keel disclose writes the site (a hostile vendor name, every field)"
VENDOR='Acme <script>alert(1)</script> <img src=x onerror=alert(2)> & "Sons"'
CONTACTS="mailto:security@example.com https://example.com/report tel:+49-30-1234567"
disclose() { # EXTRA-ARGS...: the site, as of now
    # shellcheck disable=SC2046
    expect_rc 0 "$KEEL" disclose $(for c in $CONTACTS; do printf -- '--contact %s ' "$c"; done) \
        --policy-url "$BASE/disclosure-policy.html" --expires +180 \
        --canonical "$BASE/.well-known/security.txt" --encryption "$BASE/pgp-key.txt" \
        --acknowledgments "$BASE/thanks" --hiring "$BASE/jobs" --preferred-languages "en, de" \
        --vendor "$VENDOR" --product "Thermo-1" --ack-days 3 --update-days 7 --fix-days 60 --out "$SITE" "$@"
}
disclose
grep -q "wrote $SITE/security.txt" "$T/out" || fail "no summary: $(cat "$T/out")"
for f in security.txt disclosure-policy.html disclosure-policy.md; do
    [ "$(stat -c %a "$SITE/$f")" = 644 ] || fail "$f has mode $(stat -c %a "$SITE/$f")"
done
[ "$(stat -c %a "$SITE")" = 755 ] || fail "$SITE has mode $(stat -c %a "$SITE")"
grep -q "^Expires: 20[0-9][0-9]-[01][0-9]-[0-3][0-9]T[0-9:]*Z$" "$SITE/security.txt" || fail "no Expires line"
grep -q "<script\|<img" "$SITE/disclosure-policy.html" && fail "the vendor name's markup is in the page"
if LC_ALL=C grep -q "$(printf '\r')" "$SITE/security.txt"; then fail "security.txt mixes CR in"; fi
echo "--- security.txt:"
cat "$SITE/security.txt"
echo "---"

"$NGINX" -p "$NG" -c "$NG/nginx.conf" -e "$NG/logs/error.log" >>"$NG/logs/stderr.log" 2>&1 &
NGINX_PID=$!
i=0
until curl -s -o /dev/null --cacert "$NG/server.pem" "$BASE/disclosure-policy.html"; do
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$NG/logs/stderr.log" "$NG/logs/error.log" >&2; fail "nginx exited"; }
    i=$((i + 1))
    [ $i -lt 100 ] || fail "nginx did not answer on $BASE within 10 s"
    sleep 0.1
done
curl -s --cacert "$NG/server.pem" -o "$T/served.txt" -w '%{http_code} %{content_type}\n' \
    "$BASE/.well-known/security.txt" >"$T/head" || fail "curl security.txt"
[ "$(cat "$T/head")" = "200 text/plain; charset=utf-8" ] || fail "security.txt served as: $(cat "$T/head")"
cmp -s "$T/served.txt" "$SITE/security.txt" || fail "nginx serves another security.txt"

note "keel assess probe publication fetches both over TLS: not a word to say"
PROBE="--security-txt $BASE/.well-known/security.txt --policy $BASE/disclosure-policy.html --ca-file $NG/server.pem"
# shellcheck disable=SC2086
expect_rc 0 "$KEEL" assess probe publication $PROBE --json
cp "$T/out" "$T/probe.json"
check "$T/probe.json" 'd["units"]["publication"]["state"] == "ran"' "the publication unit did not run"
check "$T/probe.json" 'd["findings"] == []' "the probe found something in what keel disclose wrote"
check "$T/probe.json" 'd["security_txt"]["status"] == 200 and d["security_txt"]["final_url"] == "'"$BASE"'/.well-known/security.txt"' \
    "security.txt was not fetched from its canonical place"
check "$T/probe.json" 'd["security_txt"]["contacts"] == "'"$CONTACTS"'".split()' "the contacts are not those given"
check "$T/probe.json" 'd["policy"]["names_contact"] and d["policy"]["names_timeline"]' \
    "the policy names no contact or no timeline"
# the Markdown twin reads as a policy too
expect_rc 0 "$KEEL" assess probe publication --policy "$BASE/disclosure-policy.md" --ca-file "$NG/server.pem" --json
check "$T/out" 'd["findings"] == [] and d["policy"]["content_type"].startswith("text/markdown")' "the Markdown twin"

note "the probe is not blind: a day after Expires, and a Canonical elsewhere"
LATE=$(python3 -c 'import datetime; print((datetime.date.today() + datetime.timedelta(days=182)).isoformat())')
# shellcheck disable=SC2086
expect_rc 1 "$KEEL" assess probe publication $PROBE --now "$LATE" --json
check "$T/out" 'any("expired on" in f for f in sev(d, "fail"))' "an expired security.txt did not fail"
# shellcheck disable=SC2046
expect_rc 0 "$KEEL" disclose $(for c in $CONTACTS; do printf -- '--contact %s ' "$c"; done) \
    --policy-url "$BASE/disclosure-policy.html" --expires +30 \
    --canonical "https://example.com/.well-known/security.txt" --vendor "$VENDOR" --product Thermo-1 --out "$SITE"
# shellcheck disable=SC2086
expect_rc 0 "$KEEL" assess probe publication $PROBE --json
check "$T/out" 'any("Canonical fields do not list" in f for f in sev(d, "warn")) and sev(d, "fail") == []' \
    "a Canonical naming another place was not a warn"
check "$T/out" 'd["security_txt"]["expires"][:10] == "'"$(python3 -c 'import datetime; print((datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)).date().isoformat())')"'"' \
    "nginx did not serve the rewritten security.txt"
ls -A "$SITE" | grep -v '^security.txt$\|^disclosure-policy.html$\|^disclosure-policy.md$' && fail "a temporary file was left in $SITE"

note "the site again as it was, for the browser"
disclose
CHROMIUM=${KEEL_CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ] || [ ! -x "$CHROMIUM" ] || ! command -v node >/dev/null 2>&1; then
    echo "SKIP: the browser part needs chromium and node (scripts/deps.sh installs them); the rest passed"
    exit 77
fi
ui_node_setup
ART=${KEEL_UI_ARTIFACTS:-$KEEL_BUILD_DIR/ui-artifacts}/disclosure_policy
mkdir -p "$ART"
: >"$NG/logs/access.log"
EXPECT=$(python3 -c 'import json, sys; print(json.dumps({"vendor": sys.argv[1], "product": "Thermo-1", "contacts": sys.argv[2].split(), "ack": 3, "update": 7, "fix": 60}))' \
    "$VENDOR" "$CONTACTS")
set +e
KEEL_UI_URL=$BASE/disclosure-policy.html KEEL_UI_EXPECT=$EXPECT KEEL_UI_ARTIFACTS=$ART KEEL_UI_NODE_DIR=$NODE_DIR \
    KEEL_CHROMIUM=$CHROMIUM node "$KEEL_SOURCE_DIR/tests/ui/disclosure_policy.mjs"
rc=$?
set -e
[ "$rc" -eq 0 ] || fail "the browser test failed (exit $rc; screenshots in $ART)"
grep -v '"GET /disclosure-policy.html HTTP' "$NG/logs/access.log" | grep -v '"GET /favicon.ico HTTP' >&2 &&
    fail "the page made nginx serve something besides itself"
grep -q '"GET /disclosure-policy.html HTTP' "$NG/logs/access.log" || fail "nginx never served the page"
echo "disclose: passed"

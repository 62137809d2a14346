#!/bin/sh
# keel assess probe http (issue 6) against real servers this test starts on
# 127.0.0.1:
#  (a) lighttpd, configured carelessly: Basic auth with admin:admin on /admin,
#      mod_status on /server-status, the default server.tag (version in the
#      banner), no throttle on failed logins. Exactly 5.1-1, 5.6-2, 5.6-4A and
#      5.1-5 must FAIL, and nothing else;
#  (b) keeld, the conforming device, with its JSON login, password change and
#      routes declared and the lab password in an environment variable: no
#      http unit may FAIL, every unit must have run, the password change must
#      have been made and undone (the lab password still logs in), and the lab
#      password must appear nowhere in the output.
# Exit 77 only when lighttpd is not installed.
. "$(dirname "$0")/assess_lib.sh"

LIGHTTPD=$(command -v lighttpd 2>/dev/null || true)
[ -n "$LIGHTTPD" ] || { echo "SKIP: lighttpd is not installed"; exit 77; }

# ---- (a) lighttpd ---------------------------------------------------------------
note "(a) lighttpd: admin:admin on /admin, mod_status, version banner, no login throttle"
LT=$T/lighttpd
mkdir -p "$LT/www/admin"
echo "<html><head><title>Home</title></head><body>home</body></html>" >"$LT/www/index.html"
echo "<html><head><title>Admin</title></head><body>admin</body></html>" >"$LT/www/admin/index.html"
printf 'admin:admin\n' >"$LT/users"
LPORT=$(free_port)
cat >"$LT/lighttpd.conf" <<EOF
server.port = $LPORT
server.bind = "127.0.0.1"
server.document-root = "$LT/www"
server.errorlog = "$LT/error.log"
server.modules += ("mod_auth", "mod_authn_file", "mod_status")
index-file.names = ("index.html")
mimetype.assign = (".html" => "text/html")
auth.backend = "plain"
auth.backend.plain.userfile = "$LT/users"
auth.require = ("/admin" => ("method" => "basic", "realm" => "lab", "require" => "valid-user"))
status.status-url = "/server-status"
# lighttpd delays every refused login by a fixed 1 s by default: still no
# throttle (parallel guesses go through), but 25 guesses would take 25 s here.
server.feature-flags += ("auth.delay-invalid-creds" => "disable")
EOF
"$LIGHTTPD" -tt -f "$LT/lighttpd.conf" >/dev/null 2>&1 || { "$LIGHTTPD" -tt -f "$LT/lighttpd.conf"; fail "lighttpd refuses the test's configuration"; }
bg "$LIGHTTPD" -D -f "$LT/lighttpd.conf"
wait_port "$LPORT"
expect_rc 1 "$KEEL" assess probe http --target 127.0.0.1 --port "$LPORT" --json
cp "$T/out" "$T/lighttpd.json"
check "$T/lighttpd.json" 'failprov(d) == ["5.1-1", "5.1-5", "5.6-2", "5.6-4A"]' \
    "lighttpd: the fail findings are not exactly 5.1-1, 5.1-5, 5.6-2 and 5.6-4A"
check "$T/lighttpd.json" 'any("admin/admin" in f for f in fails(d))' "lighttpd: admin/admin not named"
check "$T/lighttpd.json" 'any("lighttpd/1." in f for f in fails(d))' "lighttpd: the version banner not named"
check "$T/lighttpd.json" 'any("/server-status" in f for f in fails(d))' "lighttpd: /server-status not named"
check "$T/lighttpd.json" 'all(unit(d, u) == "ran" for u in ("http.disclosure", "http.auth_sweep", "http.debug", "http.input", "http.default_creds", "http.bruteforce"))' \
    "lighttpd: a unit did not run"
check "$T/lighttpd.json" 'unit(d, "http.password_change") == "not_applicable"' "lighttpd: password_change is not n/a"
check "$T/lighttpd.json" 'd["unit_details"]["http.bruteforce"]["guesses"] == 25 and d["login"]["kind"] == "basic"' \
    "lighttpd: bruteforce did not use the Basic login for 25 guesses"
# the human form: same exit status, a table
expect_rc 1 "$KEEL" assess probe http --target 127.0.0.1 --port "$LPORT" --bruteforce-max 5
grep -q '^  http.default_creds *ran' "$T/out" || fail "human output lacks the unit table: $(cat "$T/out")"
grep -q '5.1-1 *fail' "$T/out" || fail "human output lacks the 5.1-1 finding"

# ---- (b) keeld --------------------------------------------------------------------
note "(b) keeld: declared JSON login, password change and routes; lab password from the environment"
provision Http-1
LABPW="Lab-Access-Passphrase-73"
start_keeld
login_ok "$LABEL_PW"
change_password "$TOKEN" "$LABEL_PW" "$LABPW"
A=/api/v1
set -- --target 127.0.0.1 --port "$PORT" --tls --login-kind json --login-path $A/session \
    --password-change-path $A/password --user admin --password-env KEEL_LAB_PW \
    --route GET:$A/status --route GET:$A/device:auth --route GET:$A/settings:auth:security \
    --route PUT:$A/settings:auth:security --route GET:$A/update:auth --route POST:$A/password:auth:security \
    --route POST:$A/factory-reset:auth:security --route GET:$A/privacy:auth --route GET:$A/link:auth \
    --route DELETE:$A/session:auth --json
KEEL_LAB_PW=$LABPW expect_rc 0 "$KEEL" assess probe http "$@"
cp "$T/out" "$T/keeld.json"
cp "$T/err" "$T/keeld.err"
alive || die_log "keeld died under the probe"
check "$T/keeld.json" 'fails(d) == []' "keeld: a fail finding"
check "$T/keeld.json" 'all(unit(d, u) == "ran" for u in d["units"]) and len(d["units"]) == 7' \
    "keeld: not every http unit ran"
check "$T/keeld.json" 'd["unit_details"]["http.password_change"] == {"changed": True, "old_refused": True, "new_accepted": True, "restored": True}' \
    "keeld: the password change was not made, checked and undone"
check "$T/keeld.json" 'd["unit_details"]["http.input"]["unresponsive_after_bursts"] == 0' "keeld stopped answering"
check "$T/keeld.json" 'd["unit_details"]["http.bruteforce"]["throttled_after"] >= 1' "keeld: the throttle was not seen"
check "$T/keeld.json" 'not any(f["severity"] == "warn" for f in d["findings"])' "keeld: a warning"
check "$T/keeld.json" 'd["lab_access"]["login_accepted"] is True' "keeld: the probe did not leave the lab's login working"
if grep -qF "$LABPW" "$T/keeld.json" "$T/keeld.err"; then fail "the lab password is in the probe's output"; fi
# the lab password logs in at once: the probe waited out the throttle it tripped
login "$LABPW"
[ "$CODE" = 200 ] || { cat "$T/out" >&2; fail "the lab password does not log in right after the probe (HTTP $CODE)"; }
note "keeld: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["evidence"]), "evidence entries in", d["duration_us"] / 1e6, "s")' "$T/keeld.json")"

# a password only on argv is refused
expect_rc 2 "$KEEL" assess probe http --target 127.0.0.1 --port "$PORT" --user admin --password "$LABPW"
note "assess_http: all checks passed"

#!/bin/sh
# make demo keeps telling its story (scripts/demo.sh, docs/internals/demo.md):
# it runs to the end, every step in its order with its proof (not only "ok"):
# the PKI, the device provisioned, flashed and its batch audited; mosquitto
# with mutual TLS, keel-fleetd, keeld on the device's own certificate and the
# thermostat withheld until consent; the first-run setup through the API; a
# campaign's update installed, booted, confirmed; telemetry at the fleet, a
# command back, an outage without a gap; the brute force flagged; the factory
# reset with the fleet's deletion receipt; keel assess with its report; the
# planted flaws, the token, a key in a software TPM and its state refused
# next to another TPM, the refused bundles; everything stopped. It
# reports each step's time and the total (printed here, never failed on:
# machines are noisy), and leaves nothing running or behind. Then the failure
# path: a step broken on purpose ends the demo with exit 1, the step named and
# its output shown, and again nothing left.
. "$(dirname "$0")/lib.sh"
mkdir -p "$T/tmp"
# The demo's software TPMs run as nobody in a directory under $TMPDIR: nobody
# must be able to pass through (not list) the way there. The demo's own
# directory in it stays 0700.
chmod 711 "$T" "$T/tmp"
# nothing_left WHEN: no process with the demo's directory in its arguments, no
# software TPM of the demo (swtpm, dbus-daemon, tpm2-abrmd: tpm2-abrmd names
# its directory, the bus, only in its environment), no file.
nothing_left() {
    if pgrep -af "$T/tmp/" >"$T/left" 2>/dev/null; then
        cat "$T/left" >&2
        fail "$1: the demo left processes running"
    fi
    for _p in $(pgrep -x 'swtpm|dbus-daemon|tpm2-abrmd' || :); do
        if cat "/proc/$_p/cmdline" "/proc/$_p/environ" 2>/dev/null | tr '\0' '\n' | grep -qF "$T/tmp"; then
            ps -o pid,user,args -p "$_p" >&2 || :
            fail "$1: the demo left a software TPM's process running"
        fi
    done
    [ -z "$(ls -A "$T/tmp")" ] || fail "$1: the demo left files behind: $(ls -A "$T/tmp")"
}

note "the whole story"
TMPDIR=$T/tmp expect_rc 0 sh "$KEEL_SOURCE_DIR/scripts/demo.sh" "$KEEL_BUILD_DIR"
cp "$T/out" "$T/story"
nothing_left "after the story"
python3 - "$T/story" "$KEEL_BUILD_DIR/demo-report" <<'EOF' || { cat "$T/story"; fail "the story is not told as it should be"; }
import json, os, re, sys
text = open(sys.argv[1]).read()
# Each step: its heading, in this order, and the proofs that must appear under it.
tpm = lambda p: p + r"|^skipped: swtpm"  # the TPM step says when it cannot run
steps = [
    ("The manufacturer's PKI", [r"factory created in \$DEMO/factory", r'update signer "thermo release 2026"']),
    ("Provision a device", [r"provisioned 5 thermo-1 device\(s\)", r"device\.crt: OK$", r"password [a-z0-9]{6}-xxxxxx-xxxxxx",
                            r"slot A confirmed; anti-rollback counter 1", r"^PASS: 0 finding"]),
    ("mosquitto with mutual TLS", [r"mosquitto on 127\.0\.0\.1:\d+", r"5 device\(s\) added", r"link: online",
                                   r"SHA-256 [0-9A-F:]{95}, as on the label", r"active, running 1\.0\.0",
                                   r"withholds its readings until the owner consents: \d+ taken, 0 at the fleet"]),
    ("First-run setup", [r'GET /api/v1/status -> 200 \{"model":"thermo-1","setup_required":true\}',
                         r'POST /api/v1/session -> 401', r'"must_change_password":true',
                         r'403 \{"error":"password_change_required"', r'"reason":"contains_model"',
                         r"POST /api/v1/password -> 204", r'"must_change_password":false',
                         r'GET /api/v1/device -> 200 \{"id":', r"climate +consent",
                         r'PUT /api/v1/privacy/consent -> 200 .*"given":true',
                         r"setup UI, the same API in a browser: https://127\.0\.0\.1:\d+/"]),
    ("A signed update rolled out by a campaign", [r"version: +1\.1\.0 \(security version 2\)",
                                                  r"update server: sending thermo-1 1\.1\.0 to",
                                                  r"1\.1\.0 installed into slot B .*needs a reboot",
                                                  r"booted slot B: 1\.1\.0 \(security version 2\), not confirmed yet",
                                                  r"started healthy and is confirmed; anti-rollback counter 2",
                                                  r"confirmed +1$", r"runs 1\.1\.0 \(security version 2\)",
                                                  r'"running":\{"slot":"B","version":"1\.1\.0"']),
    ("Telemetry at the fleet", [r"messages +[1-9]\d*$", r'^  seq \d+\|\{"temperature":',
                                r"thermostat: setpoint 22\.5 C, 1 command", r"link offline +outbox +\d+ queued",
                                r"link online, outbox 0 queued, the device.s last seq (\d+); "
                                r"the fleet holds seq 1\.\.\1: \1 messages, no gap, none twice, 0 lost"]),
    ("An injected anomaly", [r"24 answered HTTP 401", r"failed logins in the last 2 s reported to the fleet",
                             r'warning +auth +[a-z2-7]{26} +\{"failures_in_window":(2\d|[3-9]\d|\d{3,}),"threshold":20']),
    ("Factory reset", [r"erased: the vault's data key", r"kept: +the update slots and their anti-rollback counters",
                       r"cloud: +erase request ([0-9a-f]{32}) \(requested\)",
                       r"keel-fleetd: erased [1-9]\d* messages of [a-z2-7]{26} \(request [0-9a-f]{32}\)",
                       r"the fleet confirmed the cloud erase [0-9a-f]{32}",
                       r"the fleet now holds 0 of the device's messages up to the erase \(seq 1\.\.[1-9]\d*\)",
                       r'"receipt":\{"erased":true,"id":"[0-9a-f]{32}","records":[1-9]',
                       r"the export: no records"]),
    ("keel assess", [r"keel assess run --target 127\.0\.0\.1 --ports \d+", r"^78 provisions: \d+ PASS, 0 FAIL",
                     r"^conforming: 0 mandatory provisions FAIL", r"5\.1-5 +PASS", r"5\.3-2 +PASS",
                     r"The evidence report: .*demo-report/report\.html"]),
    ("The audit catches a careless factory", [r"FAIL +unique-passwords", r"no-relation: .*serial", r"^FAIL: 3 finding"]),
    ("Device keys made on a secure element", [r"never extractable|skipped: SoftHSM2"]),
    ("A device key made in a TPM 2.0", [tpm(p) for p in [
        r"provisioned 1 thermo-1 device\(s\) into \$DEMO/tpm-batch", r"^  tcti = tabrmd:bus_type=session$",
        r"^  keystore/tpm2\.pin +600$",
        r"^  attributes: (?=.*\bfixedtpm\b)(?=.*\bfixedparent\b)(?=.*\bsensitivedataorigin\b)(?!.*\bnoda\b)",
        r"^  TLSv1\.3, TLS_\S+, certificate CN=[a-z2-7]{26} verified \(device CA\): HTTP 200 \{",
        r"^  TLSv1\.2, ECDHE-ECDSA-\S+, certificate CN=[a-z2-7]{26} verified \(device CA\): HTTP 200 \{",
        r"^  exit 0; keystore now: .*vault-data-key\.tpm2wrap",
        r"vault: tpm2: loading the key into the TPM failed: the key blob was not made by this TPM",
        r"^  keeld exited with status [1-9]", r"^Both TPMs stopped by pid .*6 processes, none left"]]),
    ("Tampered and rolled-back bundles refused", [r"does not match its digest",
                                                  r"below the device's anti-rollback counter 2",
                                                  r"HTTP 422 bundle_rejected", r"booted slot B: 1\.1\.0 \(security version 2\)$"]),
    ("Least privilege: keeld and keel-fleetd confined",
     [r"keeld: info: sandbox: .*no_new_privs, no capabilities, seccomp kill \(\d+ system calls\)",
      r"keel-fleetd: info: fleet: sandbox: .*seccomp kill",
      r"/proc of keeld: NoNewPrivs 1, Seccomp 2 \(filter\), CapEff 0000000000000000",
      r"/proc of keel-fleetd: NoNewPrivs 1, Seccomp 2 \(filter\), CapEff 0000000000000000"]),
    ("The supply chain", [r"CycloneDX 1\.5, \d+ components, e\.g\. .*libssl3 ",
                          r"AFFECTED: 1 component\(s\), 1 finding\(s\)", r"advisory +DEMO-2026-0001",
                          r"action +upgrade openssl to .*\+demo1 or later",
                          r"^  Contact: mailto:security@acme\.example$", r"^  Expires: 20\d\d-"]),
    ("Everything stopped", [r"thermostat: \d+ readings published, exit 0",
                            r"keeld, keel-fleetd and the thermostat exited 0; mosquitto stopped"]),
]
heads = [(m.start(), int(m.group(1)), m.group(2)) for m in re.finditer(r"^== (\d+)\. (.*)$", text, re.M)]
bad = []
if [n for _, n, _ in heads] != list(range(1, len(steps) + 1)):
    bad.append("the steps are not numbered 1..%d: %s" % (len(steps), [n for _, n, _ in heads]))
for i, (title, proofs) in enumerate(steps):
    if i >= len(heads) or not heads[i][2].startswith(title):
        bad.append("step %d is not '%s'" % (i + 1, title))
        continue
    end = heads[i + 1][0] if i + 1 < len(heads) else text.find("== The story, step by step")
    section = text[heads[i][0]:end]
    for p in proofs:
        if not re.search(p, section, re.M):
            bad.append("step %d (%s) lacks /%s/" % (i + 1, title, p))
    if not re.search(r"ok: step %d in \d+\.\d s" % (i + 1), section):
        bad.append("step %d has no time" % (i + 1))
summary = text[text.find("== The story, step by step"):]
rows = re.findall(r"^ +(\d+)\. .* OK +(\d+\.\d) s$", summary, re.M)
if [int(n) for n, _ in rows] != list(range(1, len(steps) + 1)):
    bad.append("the summary does not list every step with OK: %s" % rows)
total = re.search(r"^  total: (\d+\.\d) s", summary, re.M)
if not total:
    bad.append("no total time")
if not re.search(r"^The assess report: .*demo-report/report\.html", summary, re.M):
    bad.append("the summary lacks the report's path")
if not re.search(r"^The setup UI was at: https://127\.0\.0\.1:\d+/", summary, re.M):
    bad.append("the summary lacks the setup UI's URL")
report = json.load(open(os.path.join(sys.argv[2], "report.json")))
if len(report["provisions"]) != 78 or not os.path.getsize(os.path.join(sys.argv[2], "report.html")):
    bad.append("the assess report is not complete")
for b in bad:
    print("demo_smoke: " + b, file=sys.stderr)
if total:
    t = float(total.group(1))
    print("-- the demo took %.1f s (%s); per step: %s" % (t, "under 120 s" if t < 120 else "OVER the 120 s goal",
          ", ".join("%s: %s s" % r for r in rows)))
sys.exit(1 if bad else 0)
EOF
! grep -q "skipped: SoftHSM2" "$T/story" || note "(the SoftHSM2 step was skipped: softhsm2 or pkcs11-tool missing)"
! grep -q "skipped: swtpm" "$T/story" || note "(the TPM step was skipped: swtpm, tpm2-abrmd, tpm2-tools or tpm2-openssl missing)"
if grep -qiE "argon2id\\\$|\"token\":\"[^\"…]|\"csrf\":\"[^\"…]" "$T/story"; then
    fail "the story shows a hash, a session token or a CSRF token"
fi

note "a step that fails: exit 1, the step named, its output shown, everything stopped and removed"
TMPDIR=$T/tmp KEEL_DEMO_BREAK=step_services expect_rc 1 sh "$KEEL_SOURCE_DIR/scripts/demo.sh" "$KEEL_BUILD_DIR"
for want in "demo: FAILED at step 3 after [0-9.]* s: mosquitto with mutual TLS" "^--- the step's output:" \
            "mosquitto on 127.0.0.1:" \
            "step_services failed on purpose" "keeld.log (last 25 lines)" "every process of the demo stopped"; do
    grep -q -- "$want" "$T/err" || { cat "$T/out" "$T/err"; fail "the failure report lacks '$want'"; }
done
! grep -q "== 4\." "$T/out" || fail "the demo went on after a failed step"
nothing_left "after a failed step"
echo "demo_smoke: 1 passed, 0 failed"

#!/bin/sh
# make bench, second part: signed A/B updates (issue 3), all in one run on
# the same random payload, on the same machine:
#   floor     `openssl dgst -sha256` of the payload and a `dd conv=fsync` copy
#   install   `keel update install` into the inactive slot of a provisioned
#             device; goal <= 1.25x max(hash, write)
#   boot      `keel boot` verifying that slot vs `openssl dgst -sha256` of the
#             slot file; goal <= 1.1x
#   tamper    bytes written past a flipped payload byte before the install is
#             refused; goal <= 1 MiB
#   memory    peak RSS of `keel update install`; goal <= 8 MiB
#   anchors   RAUC and SWUpdate installing the same payload into a file slot,
#             when installed and runnable here; goal: keel >= 2x faster than RAUC
# Benchmarks report, they do not gate: exit 0 when a goal is missed, non-zero
# only when something of keel's fails to run. RAUC or SWUpdate failing to run
# is reported as "not run (<why>)". See docs/internals/bench.md.
#
# usage: sh bench/update.sh BUILD_DIR
# env:   UPDATE_BENCH_MIB (256)              payload size in MiB
#        UPDATE_BENCH_COMPARE ("rauc swupdate") the anchors to try; empty: none
#        UPDATE_BENCH_JSON=path              write the figures as JSON
#        BENCH_JSON=path                     merge them into bench/run.sh's JSON
#                                            as "update" (a new file otherwise)
set -eu

die() {
    echo "bench: update: $*" >&2
    exit 1
}
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
. "$(cd "$(dirname "$0")/.." && pwd)/tests/integration/dbus_lib.sh"

[ $# -eq 1 ] || { echo "usage: sh bench/update.sh BUILD_DIR" >&2; exit 2; }
keel=$1/programs/keel/keel
[ -x "$keel" ] || die "$keel missing: build first (make build)"
keel=$(cd "$(dirname "$keel")" && pwd)/keel
mib=${UPDATE_BENCH_MIB:-256}
case $mib in '' | *[!0-9]* | 0) die "UPDATE_BENCH_MIB must be a positive number of MiB" ;; esac
compare=${UPDATE_BENCH_COMPARE-rauc swupdate}
command -v openssl >/dev/null || die "openssl missing"
# GNU time (Debian package time) reports the peak RSS; the shell's time cannot.
/usr/bin/time -f %M -o /dev/null true 2>/dev/null ||
    die "/usr/bin/time (GNU time, Debian package time) missing: it measures the peak RSS"

tmp=$(mktemp -d)
tmp=$(cd "$tmp" && pwd)
rauc_pid='' bus_pid=''
cleanup() {
    # The RAUC service and its private bus are ours; end them by their ids.
    [ -z "$rauc_pid" ] || { kill "$rauc_pid" 2>/dev/null || :; wait "$rauc_pid" 2>/dev/null || :; }
    [ -z "$bus_pid" ] || kill "$bus_pid" 2>/dev/null || :
    if [ -d "$tmp/rauc/mnt" ]; then
        grep -F " $tmp/rauc/mnt" /proc/mounts 2>/dev/null | while read -r _ mnt _; do
            umount "$mnt" 2>/dev/null || :
        done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A decimal number of seconds from date; GNU date's %N gives the fraction.
now() {
    t=$(date +%s.%N)
    case $t in *[!0-9.]*) die "date +%s.%N is not supported here" ;; esac
    echo "$t"
}

# timed NAME CMD...: runs CMD (its output to $tmp/NAME.log), appends
# "NAME SECONDS" to $tmp/times. Returns CMD's status.
timed() {
    name=$1
    shift
    t0=$(now)
    set +e
    "$@" >"$tmp/$name.log" 2>&1
    rc=$?
    set -e
    t1=$(now)
    [ "$rc" -ne 0 ] || echo "$name $t0 $t1" | awk '{ printf "%s %.6f\n", $1, $3 - $2 }' >>"$tmp/times"
    return "$rc"
}

# json_str KEY FILE / json_num KEY FILE: the first "KEY": value of keel's JSON.
json_str() { sed -n "s/^ *\"$1\": \"\\([^\"]*\\)\",\\{0,1\\}\$/\\1/p" "$2" | head -n 1; }
json_num() { sed -n "s/^ *\"$1\": \\([0-9][0-9]*\\),\\{0,1\\}\$/\\1/p" "$2" | head -n 1; }
digest() { openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1; }
size() { wc -c <"$1" | tr -d ' '; }

bytes=$((mib * 1048576))
echo "bench: update: $mib MiB random payload; floor, keel install and boot, best of 3 (alternating)"

# --- the device, the bundle -------------------------------------------------
head -c "$bytes" /dev/urandom >"$tmp/payload" || die "could not make the payload"
payload_sha=$(digest "$tmp/payload")
"$keel" factory init --dir "$tmp/factory" --org "Keel Bench" >/dev/null || die "keel factory init failed"
"$keel" factory provision --dir "$tmp/factory" --model bench-1 --count 1 --out "$tmp/batch" \
    --argon2-t 1 --argon2-m 64 >/dev/null || die "keel factory provision failed"
dev=$(find "$tmp/batch" -mindepth 2 -maxdepth 2 -name keeld.conf | head -n 1)
[ -n "$dev" ] || die "keel factory provision made no device"
dev=$(dirname "$dev")
"$keel" bundle signer --dir "$tmp/factory" --name bench --out "$tmp/signer" >/dev/null ||
    die "keel bundle signer failed"
"$keel" bundle create --signer "$tmp/signer" --model bench-1 --version 1.0.0 --security-version 1 \
    --support-until 2099-12-31 --payload "$tmp/payload" --out "$tmp/bundle.kb" >/dev/null ||
    die "keel bundle create failed"
"$keel" bundle inspect "$tmp/bundle.kb" --json >"$tmp/inspect.json" || die "keel bundle inspect failed"
chunk=$(json_num chunk_size "$tmp/inspect.json")
[ -n "$chunk" ] || die "keel bundle inspect printed no chunk_size"

slot_file() { echo "$dev/update/slot-$(echo "$1" | tr AB ab).img"; }

# --- (a, b, c) floor, install, boot: three alternating rounds ---------------
# Each install goes to the slot that is not active; boot + confirm between
# rounds makes it active, so the next round writes the other slot.
for _ in 1 2 3; do
    timed hash openssl dgst -sha256 "$tmp/payload" || die "openssl dgst failed"
    timed write dd if="$tmp/payload" of="$tmp/copy" bs=1M conv=fsync || die "dd failed"
    timed install "$keel" update install "$tmp/bundle.kb" --state "$dev" --json || {
        cat "$tmp/install.log" >&2
        die "keel update install failed"
    }
    slot=$(json_str slot "$tmp/install.log")
    timed boot "$keel" boot --state "$dev" --json || { cat "$tmp/boot.log" >&2; die "keel boot failed"; }
    [ "$(json_str booted "$tmp/boot.log")" = "$slot" ] || die "keel boot did not boot the installed slot $slot"
    timed slothash openssl dgst -sha256 -r "$(slot_file "$slot")" || die "openssl dgst of the slot failed"
    [ "$(cut -d ' ' -f 1 "$tmp/slothash.log")" = "$payload_sha" ] || die "slot $slot does not hold the payload"
    "$keel" update confirm --state "$dev" >/dev/null || die "keel update confirm failed"
done
rm -f "$tmp/copy"

# --- (e) peak RSS -----------------------------------------------------------
/usr/bin/time -f %M -o "$tmp/rss.install" "$keel" update install "$tmp/bundle.kb" --state "$dev" >/dev/null ||
    die "keel update install (RSS run) failed"
"$keel" boot --state "$dev" >/dev/null || die "keel boot failed"
"$keel" update confirm --state "$dev" >/dev/null || die "keel update confirm failed"
/usr/bin/time -f %M -o "$tmp/rss.version" "$keel" --version >/dev/null || die "keel --version failed"
/usr/bin/time -f %M -o "$tmp/rss.dgst" openssl dgst -sha256 "$tmp/payload" >/dev/null || die "openssl dgst failed"
rss_install=$(tail -n 1 "$tmp/rss.install")
rss_version=$(tail -n 1 "$tmp/rss.version")
rss_dgst=$(tail -n 1 "$tmp/rss.dgst")

# What the RSS is made of: an install reading from a FIFO that pauses half
# way, sampled in /proc while it waits. "Anonymous" is what keel allocates
# (heap, buffers, stacks); the rest are shared-library file pages.
mkfifo "$tmp/fifo"
half=$(($(size "$tmp/bundle.kb") / 2))
"$keel" update install - --state "$dev" <"$tmp/fifo" >/dev/null 2>&1 &
kpid=$!
{
    head -c "$half" "$tmp/bundle.kb"
    sleep 1
    tail -c +"$((half + 1))" "$tmp/bundle.kb"
} >"$tmp/fifo" &
fpid=$!
sleep 0.6
rss_sample=$(sed -n 's/^Rss: *\([0-9]*\) kB/\1/p' "/proc/$kpid/smaps_rollup" 2>/dev/null) || :
rss_anon=$(sed -n 's/^Anonymous: *\([0-9]*\) kB/\1/p' "/proc/$kpid/smaps_rollup" 2>/dev/null) || :
wait "$fpid" || die "could not feed the sampled install"
wait "$kpid" || die "keel update install (sampled run) failed"
"$keel" boot --state "$dev" >/dev/null || die "keel boot failed"
"$keel" update confirm --state "$dev" >/dev/null || die "keel update confirm failed"
# How much RSS one touched 4 KiB page of libcrypto costs on this kernel: with
# large page-cache folios, a fault maps the whole folio around it.
libcrypto=$(ldd "$keel" | sed -n 's/^[[:space:]]*libcrypto[^ ]* => \([^ ]*\).*/\1/p')
rss_page=$(python3 - "$libcrypto" <<'PY'
import mmap, sys
def rss():
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                return int(line.split()[1])
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    before = rss()
    m[len(m) // 2]
    print(rss() - before)
PY
) || rss_page=''

# --- (d) a tampered payload -------------------------------------------------
# One byte flipped at 200 MiB of the payload (at 78 % of smaller payloads).
# The installer truncates a file slot when it opens it, so the slot's size
# afterwards is how far it wrote.
if [ "$mib" -ge 256 ]; then flip=$((200 * 1048576)); else flip=$((bytes * 78 / 100)); fi
bundle_size=$(size "$tmp/bundle.kb")
at=$((bundle_size - bytes + flip))
cp "$tmp/bundle.kb" "$tmp/tampered.kb"
printf '\377' | dd of="$tmp/tampered.kb" bs=1 seek="$at" conv=notrunc 2>/dev/null
if cmp -s "$tmp/bundle.kb" "$tmp/tampered.kb"; then
    printf '\000' | dd of="$tmp/tampered.kb" bs=1 seek="$at" conv=notrunc 2>/dev/null
fi
"$keel" update status --state "$dev" --json >"$tmp/status.json" || die "keel update status failed"
active=$(json_str active "$tmp/status.json")
case $active in A) target=B ;; B) target=A ;; *) die "no active slot after confirm" ;; esac
if "$keel" update install "$tmp/tampered.kb" --state "$dev" >/dev/null 2>"$tmp/tamper.err"; then
    die "keel update install accepted a tampered payload"
fi
grep -q "^keel: update install: " "$tmp/tamper.err" || die "tampered install failed without a clear message"
target_file=$(slot_file "$target")
written=0
[ ! -f "$target_file" ] || written=$(size "$target_file")
"$keel" boot --state "$dev" --json >"$tmp/boot-after.json" || die "keel boot failed after the tampered install"
[ "$(json_str booted "$tmp/boot-after.json")" = "$active" ] || die "the device no longer boots slot $active"

# --- (f) RAUC and SWUpdate --------------------------------------------------
rauc_why='' swu_why=''
wanted() { case " $compare " in *" $1 "*) return 0 ;; esac; return 1; }

# A private D-Bus daemon stands in for the system bus (GDBus honours
# DBUS_SYSTEM_BUS_ADDRESS); RAUC's noop bootloader and --override-boot-slot
# replace the real boot chain. Sets rauc_why when it cannot run.
run_rauc() {
    for tool in rauc mksquashfs dbus-daemon; do
        command -v "$tool" >/dev/null || { rauc_why="$tool missing (Debian packages rauc, squashfs-tools, dbus)"; return; }
    done
    [ "$(id -u)" -eq 0 ] || { rauc_why="needs root: it loop-mounts its bundle"; return; }
    r=$tmp/rauc
    mkdir -p "$r/content" "$r/data" "$r/mnt"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=keel-bench-rauc" \
        -keyout "$r/key.pem" -out "$r/cert.pem" >/dev/null 2>&1 || { rauc_why="openssl could not make its signer"; return; }
    ln "$tmp/payload" "$r/content/rootfs.img"
    printf '[update]\ncompatible=keel-bench\nversion=1.0.0\n[bundle]\nformat=plain\n[image.rootfs]\nfilename=rootfs.img\n' \
        >"$r/content/manifest.raucm"
    # Random data does not compress: squashfs would store it as it is anyway.
    rauc bundle --cert "$r/cert.pem" --key "$r/key.pem" --mksquashfs-args="-noI -noD -noF -noX" \
        "$r/content" "$r/bundle.raucb" >"$r/bundle.log" 2>&1 || { rauc_why="rauc bundle failed (see rauc bundle --help)"; return; }
    : >"$r/slot-a.img"
    : >"$r/slot-b.img"
    cat >"$r/system.conf" <<EOF
[system]
compatible=keel-bench
bootloader=noop
data-directory=$r/data
[keyring]
path=$r/cert.pem
[slot.rootfs.0]
device=$r/slot-a.img
type=raw
bootname=A
[slot.rootfs.1]
device=$r/slot-b.img
type=raw
bootname=B
EOF
    dbus_private_conf "$r/bus" >"$r/bus.conf"
    bus_pid=$(dbus-daemon --config-file="$r/bus.conf" --fork --print-pid 2>"$r/bus.log") ||
        { rauc_why="dbus-daemon would not start"; bus_pid=''; return; }
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=$r/bus
    export DBUS_SYSTEM_BUS_ADDRESS
    rauc -c "$r/system.conf" --mount="$r/mnt" service --override-boot-slot=A >"$r/service.log" 2>&1 &
    rauc_pid=$!
    i=0
    until timeout 2 rauc status >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -ge 50 ] || ! kill -0 "$rauc_pid" 2>/dev/null; then
            rauc_why="rauc service did not start"
            return
        fi
        sleep 0.1
    done
    for _ in 1 2 3; do
        # With slot A booted, RAUC always writes slot B (rootfs.1).
        timed rauc timeout 600 rauc install "$r/bundle.raucb" || { rauc_why="rauc install failed: $(tail -n 1 "$tmp/rauc.log")"; return; }
        [ "$(digest "$r/slot-b.img")" = "$payload_sha" ] || { rauc_why="rauc wrote something else into its slot"; return; }
    done
}

# SWUpdate in its one-shot mode (-i), CMS-signed sw-description, a raw image
# into a file; hardware-compatibility is given with -H. TMPDIR is its own
# directory: SWUpdate extracts there and empties it afterwards.
run_swupdate() {
    for tool in swupdate cpio; do
        command -v "$tool" >/dev/null || { swu_why="$tool missing (Debian packages swupdate, cpio)"; return; }
    done
    s=$tmp/swu
    mkdir -p "$s/src" "$s/run"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=keel-bench-swu" \
        -keyout "$s/key.pem" -out "$s/cert.pem" >/dev/null 2>&1 || { swu_why="openssl could not make its signer"; return; }
    ln "$tmp/payload" "$s/src/rootfs.img"
    cat >"$s/src/sw-description" <<EOF
software =
{
    version = "1.0.0";
    hardware-compatibility = [ "1.0" ];
    images: (
        {
            filename = "rootfs.img";
            device = "$s/slot.img";
            type = "raw";
            sha256 = "$payload_sha";
        }
    );
}
EOF
    openssl cms -sign -in "$s/src/sw-description" -out "$s/src/sw-description.sig" -signer "$s/cert.pem" \
        -inkey "$s/key.pem" -outform DER -nosmimecap -binary 2>/dev/null || { swu_why="openssl cms -sign failed"; return; }
    (cd "$s/src" && printf '%s\n' sw-description sw-description.sig rootfs.img | cpio -o -H crc 2>/dev/null) \
        >"$s/bundle.swu" || { swu_why="cpio failed"; return; }
    for _ in 1 2 3; do
        : >"$s/slot.img"
        timed swupdate env TMPDIR="$s/run" timeout 600 swupdate -k "$s/cert.pem" -H keel-bench:1.0 -i "$s/bundle.swu" -l 3 ||
            { swu_why="swupdate failed: $(grep -m 1 ERROR "$tmp/swupdate.log" || tail -n 1 "$tmp/swupdate.log")"; return; }
        [ "$(digest "$s/slot.img")" = "$payload_sha" ] || { swu_why="swupdate wrote something else into its slot"; return; }
    done
}

if wanted rauc; then run_rauc; else rauc_why="not in UPDATE_BENCH_COMPARE"; fi
if wanted swupdate; then run_swupdate; else swu_why="not in UPDATE_BENCH_COMPARE"; fi
rauc_version=$(rauc --version 2>/dev/null | sed -n 's/^rauc //p') || :
swu_version=$(swupdate --version 2>/dev/null | sed -n 's/^SWUpdate v*//p' | head -n 1) || :
# Debian's build prints an empty version.
[ -n "$swu_version" ] || swu_version=$(dpkg-query -W -f '${Version}' swupdate 2>/dev/null) || :

# --- report -----------------------------------------------------------------
# awk does the floating point; the shell only prints.
awk -v mib="$mib" -v flip="$flip" -v written="$written" -v chunk="$chunk" \
    -v rss_install="$rss_install" -v rss_version="$rss_version" -v rss_dgst="$rss_dgst" \
    -v rss_sample="${rss_sample:-0}" -v rss_anon="${rss_anon:-0}" -v rss_page="${rss_page:-0}" \
    -v rauc_why="$rauc_why" -v swu_why="$swu_why" -v rauc_version="$rauc_version" -v swu_version="$swu_version" \
    -v jsonfile="$tmp/update.json" '
    function best(name) { return (name in min) ? min[name] : -1 }
    function row(label, name,    t) {
        t = best(name)
        if (t >= 0) printf "%-28s %9.3f %9.0f\n", label, t, mib / t
    }
    function runs(name,    i, s) {
        s = ""
        for (i = 1; i <= count[name]; i++) s = s (i > 1 ? ", " : "") sprintf("%.6f", all[name, i])
        return "[" s "]"
    }
    function jstr(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return "\"" s "\"" }
    function anchor(key, name, why, version,    t) {
        t = best(name)
        if (why != "" || t < 0)
            return sprintf("  \"%s\": {\"run\": false, \"reason\": %s},\n", key, jstr(why))
        return sprintf("  \"%s\": {\"run\": true, \"version\": %s, \"install_seconds\": %.6f, \"runs\": %s, \"keel_speedup\": %.6f},\n",
            key, jstr(version), t, runs(name), t / install)
    }
    {
        count[$1]++
        all[$1, count[$1]] = $2
        if (!($1 in min) || $2 < min[$1]) min[$1] = $2
    }
    END {
        hash = best("hash"); write = best("write"); install = best("install")
        boot = best("boot"); slothash = best("slothash")
        floor = hash > write ? hash : write
        install_ratio = install / floor
        boot_ratio = boot / slothash
        bad_chunk = int(flip / chunk) * chunk
        past = written > flip ? written - flip : 0
        install_ok = install_ratio <= 1.25 ? "PASS" : "MISS"
        boot_ok = boot_ratio <= 1.1 ? "PASS" : "MISS"
        tamper_ok = past <= 1048576 ? "PASS" : "MISS"
        rss_ok = rss_install <= 8192 ? "PASS" : "MISS"

        printf "\n%-28s %9s %9s\n", "", "seconds", "MiB/s"
        row("openssl dgst -sha256", "hash")
        row("dd bs=1M conv=fsync", "write")
        row("keel update install", "install")
        row("keel boot (verify slot)", "boot")
        row("openssl dgst of the slot", "slothash")
        if (rauc_why == "") row("RAUC " rauc_version " install", "rauc")
        short = swu_version; sub(/[+~-].*/, "", short)
        if (swu_why == "") row("SWUpdate " short " -i", "swupdate")
        printf "(best of 3 each; the install and the dd copy end with fsync, openssl does not write)\n\n"

        printf "ratio install / max(hash, write): %5.2fx  (goal <= 1.25x)  %s\n", install_ratio, install_ok
        printf "ratio boot / openssl dgst of slot: %4.2fx  (goal <= 1.10x)  %s\n", boot_ratio, boot_ok
        printf "tampered payload: byte flipped at %.2f MiB, bad chunk at %.2f MiB, slot written to %.2f MiB:\n",
            flip / 1048576, bad_chunk / 1048576, written / 1048576
        printf "  written past the flipped byte: %d bytes  (goal <= 1 MiB)  %s\n", past, tamper_ok
        printf "peak RSS keel update install: %6d KiB  (goal <= 8192 KiB)  %s\n", rss_install, rss_ok
        printf "peak RSS keel --version:      %6d KiB  (the shared libraries alone)\n", rss_version
        printf "peak RSS openssl dgst:        %6d KiB  (install / dgst: %.2fx)\n", rss_dgst, rss_install / rss_dgst
        if (rss_sample > 0)
            printf "mid-install sample: RSS %d KiB = %d KiB anonymous (keel'"'"'s own) + %d KiB library pages\n",
                rss_sample, rss_anon, rss_sample - rss_anon
        if (rss_page > 0)
            printf "one touched 4 KiB page of libcrypto maps %d KiB on this kernel (page-cache folios)\n", rss_page
        if (rauc_why == "" && best("rauc") >= 0) {
            rauc_ok = best("rauc") / install >= 2 ? "PASS" : "MISS"
            printf "speed-up keel vs RAUC:      %6.2fx  (goal >= 2.00x)  %s\n", best("rauc") / install, rauc_ok
        } else
            printf "RAUC: not run (%s)\n", rauc_why
        if (swu_why == "" && best("swupdate") >= 0)
            printf "speed-up keel vs SWUpdate:  %6.2fx  (no goal)\n", best("swupdate") / install
        else
            printf "SWUpdate: not run (%s)\n", swu_why

        printf "{\n  \"payload_mib\": %d,\n", mib > jsonfile
        printf "  \"goals\": {\"install_ratio_max\": 1.25, \"boot_ratio_max\": 1.1, \"tamper_bytes_past_max\": 1048576, \"rss_kib_max\": 8192, \"rauc_speedup_min\": 2},\n" > jsonfile
        printf "  \"seconds\": {\"hash\": %.6f, \"write\": %.6f, \"install\": %.6f, \"boot\": %.6f, \"slot_hash\": %.6f},\n",
            hash, write, install, boot, slothash > jsonfile
        printf "  \"runs\": {\"hash\": %s, \"write\": %s, \"install\": %s, \"boot\": %s, \"slot_hash\": %s},\n",
            runs("hash"), runs("write"), runs("install"), runs("boot"), runs("slothash") > jsonfile
        printf "  \"install_ratio\": %.6f,\n  \"boot_ratio\": %.6f,\n", install_ratio, boot_ratio > jsonfile
        printf "  \"tamper\": {\"flip_offset\": %d, \"chunk_size\": %d, \"bytes_written\": %d, \"bytes_past_flip\": %d},\n",
            flip, chunk, written, past > jsonfile
        printf "  \"rss_kib\": {\"install\": %d, \"keel_version\": %d, \"openssl_dgst\": %d, \"sample\": %d, \"sample_anonymous\": %d, \"one_library_page\": %d},\n",
            rss_install, rss_version, rss_dgst, rss_sample, rss_anon, rss_page > jsonfile
        printf "%s", anchor("rauc", "rauc", rauc_why, rauc_version) > jsonfile
        printf "%s", anchor("swupdate", "swupdate", swu_why, swu_version) > jsonfile
        printf "  \"pass\": {\"install_ratio\": %s, \"boot_ratio\": %s, \"tamper\": %s, \"rss\": %s, \"rauc_speedup\": %s}\n}\n",
            install_ok == "PASS" ? "true" : "false", boot_ok == "PASS" ? "true" : "false",
            tamper_ok == "PASS" ? "true" : "false", rss_ok == "PASS" ? "true" : "false",
            rauc_ok == "" ? "null" : (rauc_ok == "PASS" ? "true" : "false") > jsonfile
    }' "$tmp/times" || die "could not compute the figures"

if [ -n "${UPDATE_BENCH_JSON:-}" ]; then
    cp "$tmp/update.json" "$UPDATE_BENCH_JSON" || die "could not write $UPDATE_BENCH_JSON"
fi
[ -z "${BENCH_JSON:-}" ] || bench_json_merge update "$tmp/update.json"

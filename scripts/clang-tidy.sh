#!/bin/sh
# clang-tidy over Keel's product code, with the checked-in configuration
# (.clang-tidy at the top of the tree: the checks, each left-out one with its
# reason). Every file is read with the flags the build gives it
# (BUILD_DIR/compile_commands.json), a gcc build's as well as a clang one's.
# Tests, benches and the sources the build generates are not product code.
# usage: clang-tidy.sh BUILD_DIR    exit 0 clean, 1 with the findings on stderr
set -eu
[ $# -eq 1 ] || { echo "usage: clang-tidy.sh BUILD_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
[ -f "$1/compile_commands.json" ] ||
    { echo "clang-tidy: $1/compile_commands.json: no compile database (configure the build first)" >&2; exit 1; }
tidy=${CLANG_TIDY:-clang-tidy}
command -v "$tidy" >/dev/null 2>&1 || { echo "clang-tidy: not installed (scripts/deps.sh installs it)" >&2; exit 1; }
build=$(cd "$1" && pwd)
jobs=$(nproc 2>/dev/null || echo 2)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-tidy-XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

# The database clang-tidy reads: one entry per file (a file built into two
# targets is analysed once), and without the gcc options clang does not know,
# which it would report as errors of its own instead of analysing the file.
python3 - "$build" "$src" "$tmp" <<'PY'
import json, os, shlex, sys
build, src, tmp = sys.argv[1:]
GCC_ONLY = ("-fanalyzer", "-Wformat-truncation", "-Wformat-overflow", "-Wformat-signedness", "-Wstringop-",
            "-Wlogical-op", "-Wduplicated-", "-Wjump-misses-init", "-Wtrampolines", "-Wno-stringop-",
            "-Wno-format-truncation", "-fno-allow-store-data-races",
            "-fharden-", "-fzero-call-used-regs", "-fsanitize=bounds-strict", "-fmax-errors")
skip = tuple(os.path.join(src, d) + os.sep for d in ("tests", "bench")) + (build + os.sep,)
seen, out = set(), []
for e in json.load(open(os.path.join(build, "compile_commands.json"))):
    f = os.path.normpath(os.path.join(e["directory"], e["file"]))
    if f in seen or f.startswith(skip):
        continue
    seen.add(f)
    args = e["arguments"] if "arguments" in e else shlex.split(e["command"])
    out.append({"directory": e["directory"], "file": f,
                "arguments": [a for a in args if not a.startswith(GCC_ONLY)]})
json.dump(out, open(os.path.join(tmp, "compile_commands.json"), "w"))
with open(os.path.join(tmp, "files"), "w") as fl:
    fl.writelines(e["file"] + "\n" for e in out)
PY
n=$(wc -l <"$tmp/files")
[ "$n" -gt 0 ] || { echo "clang-tidy: $1: no product sources in the compile database" >&2; exit 1; }

# One clang-tidy per file, nproc at a time; each writes its own log. Without
# _FORTIFY_SOURCE (as the ASan build): glibc's fortified wrappers hide the
# memset, memcpy and snprintf calls the checks know by name. The analyzer
# explores at most 20000 states per function: the default, 225000, took four
# times as long (docs/internals/static-checks.md).
mkdir "$tmp/log"
export tidy tmp src
# shellcheck disable=SC2016 # expanded by the inner sh
xargs -P "$jobs" -I{} sh -c '
    log="$tmp/log/$(printf %s "$1" | tr / _).log"
    if ! "$tidy" -p "$tmp" --config-file="$src/.clang-tidy" --quiet --extra-arg=-Wno-unknown-warning-option --extra-arg=-U_FORTIFY_SOURCE \
        --extra-arg=-Xclang --extra-arg=-analyzer-config --extra-arg=-Xclang --extra-arg=max-nodes=20000 \
        "$1" >"$log" 2>&1; then
        echo "$1" >>"$tmp/failed"
    fi' sh {} <"$tmp/files"

# A finding is one diagnostic line naming its check; a header's finding,
# seen from each file that includes it, counts once.
cat "$tmp"/log/*.log | grep -E '^[^ ].*:[0-9]+:[0-9]+: (warning|error): .*\[[^]]+\]$' |
    sed 's/,-warnings-as-errors\]$/]/' | sort -u >"$tmp/findings" || true
if [ ! -s "$tmp/findings" ] && [ ! -f "$tmp/failed" ]; then
    echo "clang-tidy: $n files clean"
    exit 0
fi
cat "$tmp"/log/*.log | grep -vE '^[0-9]+ (warnings?|errors?)( and [0-9]+ errors?)? (generated|treated as errors)\.$' >&2 || true
if [ -s "$tmp/findings" ]; then
    echo "clang-tidy: $(wc -l <"$tmp/findings") findings, by check:" >&2
    sed -E 's/.*\[([^]]+)\]$/\1/' "$tmp/findings" | sort | uniq -c | sort -rn >&2
else
    echo "clang-tidy: failed on $(wc -l <"$tmp/failed") files without naming a check (see above)" >&2
fi
exit 1

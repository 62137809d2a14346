#!/bin/sh
# cppcheck over Keel's product code (src/, programs/), with the checked-in
# configuration in scripts/cppcheck/: the library macros it cannot see and
# the few findings that are not ours, each with its reason. Every file is
# read with the flags the build uses (BUILD_DIR/compile_commands.json).
# usage: cppcheck.sh BUILD_DIR      exit 0 clean, 1 with the findings on stderr
set -eu
[ $# -eq 1 ] || { echo "usage: cppcheck.sh BUILD_DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
[ -f "$1/compile_commands.json" ] ||
    { echo "cppcheck: $1/compile_commands.json: no compile database (configure the build first)" >&2; exit 1; }
command -v cppcheck >/dev/null 2>&1 || { echo "cppcheck: not installed (scripts/deps.sh installs it)" >&2; exit 1; }
# An absolute database: cppcheck then names every file by its absolute path, which is what the
# skips (-i) and the suppressions are written against. Tests and benches are not product code.
db=$(cd "$1" && pwd)/compile_commands.json
jobs=$(nproc 2>/dev/null || echo 2)
cd "$src"
exec cppcheck --project="$db" -i "$src/tests/" -i "$src/bench/" \
    --enable=warning,portability --inline-suppr --error-exitcode=1 --quiet -j "$jobs" \
    --library="$here/cppcheck/keel.cfg" --suppressions-list="$here/cppcheck/suppressions.txt" \
    --template='cppcheck: {file}:{line}: {severity}: {id}: {message}'

#!/usr/bin/env python3
"""Fails if Keel's C calls a function we do not use (STYLE.md, after curl's
and git's banned lists), each for a reason a safer call does not have.

usage: banned-functions.py [--binaries BUILD_DIR] [DIR]
  DIR          the tree whose .c and .h files are read (default: this repository)
  --binaries   also read the symbols the built programs and libraries import
               (nm): a banned call hidden behind a macro, or _FORTIFY_SOURCE's
               __*_chk form of it, shows there

Comments and string or character literals are skipped; a line that must
call one on purpose carries "banned-functions: allow" (none does today).
Exit 0 clean, 1 with each call on stderr as FILE:LINE: NAME: what to use.
"""
import os
import re
import subprocess
import sys

BANNED = {
    "strcpy": "no bound: memcpy with a checked length, or snprintf",
    "strcat": "no bound: snprintf, or memcpy with a checked length",
    "strncpy": "may leave no NUL and pads: snprintf, or memcpy with a checked length",
    "strncat": "its bound is what is left, easily wrong: snprintf",
    "sprintf": "no bound: snprintf, checking the result",
    "vsprintf": "no bound: vsnprintf, checking the result",
    "gets": "no bound at all: fgets",
    "strtok": "hidden state, not reentrant: strtok_r or a parser of our own",
    "atoi": "no error report: strtol/strtoull with endptr and errno, or keel's parsers",
    "atol": "no error report: strtol with endptr and errno",
    "atoll": "no error report: strtoll with endptr and errno",
    "atof": "no error report: strtod with endptr and errno",
    "tmpnam": "a name another process can take first: mkstemp or mkdtemp",
    "tempnam": "a name another process can take first: mkstemp or mkdtemp",
    "mktemp": "a name another process can take first: mkstemp or mkdtemp",
    "gmtime": "a shared static result: gmtime_r",
    "localtime": "a shared static result: localtime_r",
    "ctime": "a shared static buffer: gmtime_r and strftime",
    "asctime": "a shared static buffer: gmtime_r and strftime",
}
# What glibc's headers turn some of them into (_FORTIFY_SOURCE), seen only in binaries.
FORTIFIED = {"__" + n + "_chk": n for n in ("strcpy", "strcat", "strncpy", "strncat", "sprintf", "vsprintf", "gets")}
ALLOW = "banned-functions: allow"
CALL = re.compile(r"(?<![\w.>])(" + "|".join(sorted(BANNED)) + r")\s*\(")
SOURCE_DIRS = ("src", "programs", "include", "tests", "bench")


def code_only(text):
    """The text with comments and string/char literals blanked (newlines kept, so lines still count)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + " " * max(0, j - i - 2) + (c if j - i >= 2 else ""))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def scan_source(path, shown):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as e:
        print("banned-functions: %s: %s" % (shown, e.strerror), file=sys.stderr)
        return 1
    lines = text.split("\n")
    found = 0
    for m in CALL.finditer(code_only(text)):
        line = text.count("\n", 0, m.start()) + 1
        if ALLOW in lines[line - 1]:
            continue
        name = m.group(1)
        print("banned-functions: %s:%d: %s: %s" % (shown, line, name, BANNED[name]), file=sys.stderr)
        found += 1
    return found


def source_files(root):
    for top in SOURCE_DIRS:
        base = os.path.join(root, top)
        for d, dirs, files in os.walk(base):
            dirs[:] = sorted(x for x in dirs if x not in ("corpus", "node_modules") and not x.startswith("."))
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    yield os.path.join(d, f)


def scan_binaries(build):
    """The product's programs and libraries (not the tests): the symbols they take from outside."""
    found = 0
    targets = []
    for sub, pick in (("programs", lambda p: os.access(p, os.X_OK)), ("src", lambda p: p.endswith((".a", ".so")))):
        for d, dirs, files in os.walk(os.path.join(build, sub)):
            dirs[:] = [x for x in dirs if x != "CMakeFiles"]
            for f in sorted(files):
                p = os.path.join(d, f)
                if os.path.isfile(p) and pick(p) and open(p, "rb").read(4) in (b"\x7fELF", b"!<ar"):
                    targets.append(p)
    if not targets:
        print("banned-functions: %s: no programs or libraries (build first)" % build, file=sys.stderr)
        return 1
    for p in targets:
        r = subprocess.run(["nm", "--undefined-only", p], capture_output=True, text=True)
        if r.returncode != 0:
            print("banned-functions: nm %s: %s" % (p, r.stderr.strip()), file=sys.stderr)
            found += 1
            continue
        for sym in sorted({ln.split()[-1].split("@")[0] for ln in r.stdout.splitlines() if ln.strip()}):
            name = FORTIFIED.get(sym, sym)
            if name in BANNED:
                print("banned-functions: %s: imports %s: %s" % (os.path.relpath(p, build), sym, BANNED[name]),
                      file=sys.stderr)
                found += 1
    return found


def main(argv):
    build = None
    if len(argv) >= 2 and argv[0] == "--binaries":
        build, argv = argv[1], argv[2:]
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    root = argv[0] if argv else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    found = sum(scan_source(p, os.path.relpath(p, root)) for p in source_files(root))
    if build is not None:
        found += scan_binaries(build)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

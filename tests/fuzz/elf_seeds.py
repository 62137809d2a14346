#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_elf: tiny ELF objects (32/64-bit, both byte
orders; a shared object with DT_NEEDED, DT_SONAME, DT_RUNPATH and PT_INTERP, one
with DT_RPATH, a static executable, a relocatable object), a few hundred bytes
each. usage: elf_seeds.py OUT_DIR"""
import os
import struct
import sys

ET_REL, ET_EXEC, ET_DYN = 1, 2, 3
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29
VADDR = 0x10000


def elf(bits, be, etype=ET_DYN, needed=("liba.so.1", "libb.so.2"), soname="libself.so",
        rpath_tag=DT_RUNPATH, rpath="$ORIGIN/../lib", interp="/lib/ld-test.so.1", dynamic=True):
    e = ">" if be else "<"
    w = "Q" if bits == 64 else "I"
    ehsize, phsize = (64, 56) if bits == 64 else (52, 32)
    machine = 62 if bits == 64 else 3
    strs = b"\0"
    offs = {}
    for s in list(needed) + [soname, rpath]:
        if s:
            offs[s] = len(strs)
            strs += s.encode() + b"\0"
    phs = [PT_LOAD] + ([PT_INTERP] if interp else []) + ([PT_DYNAMIC] if dynamic else [])
    if etype == ET_REL:
        phs = []
    body_at = ehsize + len(phs) * phsize
    interp_b = (interp.encode() + b"\0") if interp else b""
    str_at = body_at + len(interp_b)
    dyn_at = (str_at + len(strs) + 7) & ~7
    dyn = [(DT_NEEDED, offs[n]) for n in needed]
    if soname:
        dyn.append((DT_SONAME, offs[soname]))
    if rpath:
        dyn.append((rpath_tag, offs[rpath]))
    dyn += [(DT_STRTAB, VADDR + str_at), (DT_STRSZ, len(strs)), (DT_NULL, 0)]
    dyn_b = b"".join(struct.pack(e + w + w, t, v) for t, v in dyn) if dynamic else b""
    total = dyn_at + len(dyn_b)
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 2 if be else 1, 1]) + b"\0" * 9
    if bits == 64:
        hdr = ident + struct.pack(e + "HHIQQQIHHHHHH", etype, machine, 1, 0, ehsize if phs else 0, 0, 0,
                                  ehsize, phsize, len(phs), 0, 0, 0)
    else:
        hdr = ident + struct.pack(e + "HHIIIIIHHHHHH", etype, machine, 1, 0, ehsize if phs else 0, 0, 0,
                                  ehsize, phsize, len(phs), 0, 0, 0)
    out = bytearray(hdr)
    for t in phs:
        off, size = {PT_LOAD: (0, total), PT_INTERP: (body_at, len(interp_b)),
                     PT_DYNAMIC: (dyn_at, len(dyn_b))}[t]
        if bits == 64:
            out += struct.pack(e + "IIQQQQQQ", t, 4, off, VADDR + off, VADDR + off, size, size, 8)
        else:
            out += struct.pack(e + "IIIIIIII", t, off, VADDR + off, VADDR + off, size, size, 4, 4)
    out += interp_b + strs
    out += b"\0" * (dyn_at - len(out)) + dyn_b
    return bytes(out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    seeds = {}
    for bits in (32, 64):
        for be in (False, True):
            tag = f"{bits}{'be' if be else 'le'}"
            seeds[f"shared-{tag}.so"] = elf(bits, be)
            seeds[f"rpath-{tag}.so"] = elf(bits, be, rpath_tag=DT_RPATH, interp=None)
        seeds[f"static-{bits}"] = elf(bits, False, etype=ET_EXEC, dynamic=False)
        seeds[f"rel-{bits}.o"] = elf(bits, False, etype=ET_REL, dynamic=False, interp=None)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()

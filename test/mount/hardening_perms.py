#!/usr/bin/env python3
"""Copy-up never widens access (issue 7), next to the kernel overlay.

Each case builds the same lower layer twice, runs the same operation on the kernel overlay
(redirect_dir=on,index=off,metacopy=off) and on strata-fs (passthrough on and off), and compares
what the mount shows and what the upper holds on disk: mode (with the set-id bits), owner, and
the access other users get.

  a  copy-up keeps set-id bits, owner and mode exactly: chmod of another bit of a 4755 file,
     utime of a 4755 file, setxattr on a 2755 file, an append by root to a 6750 file (root has
     CAP_FSETID: nothing is cleared), copy-up of a 0600 file and of a file in a 0700 dir (uid
     2000 is refused before and after), a sticky 1777 dir (uid 2000 cannot remove uid 1000's
     file), chown by root of a 4755 file (the kernel clears the bit)
  b  the kernel's rule that a write by a non-owner clears set-id bits holds through strata-fs:
     uid 2000 appends to / opens with O_TRUNC / ftruncates 4777, 6777, 2777 files owned by uid
     1000 (cleared), lower files and upper files alike; root's append keeps the bit (CAP_FSETID);
     2767 (sgid without group-exec) is compared with a note only (see FUSE_SGID_RULE)
  c  security.capability: a v2 capability on a lower file, then copy-up by chmod, by setxattr,
     by an append (root), by chown; getfattr on the mount and on the upper, against the kernel.
     Where the kernel drops the capability, strata-fs must not keep it; other differences are
     reported as notes.
"""

import os
import stat
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "hardening"))
import hardlib as hl  # noqa: E402
from hardlib import ml, ov  # noqa: E402

OWNER, OTHER = 1000, 2000
# VFS_CAP_REVISION_2 with cap_net_raw (13) permitted and the effective flag.
CAP_V2 = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def meta(path):
    st = os.lstat(path)
    return f"{stat.S_IMODE(st.st_mode):04o} {st.st_uid}:{st.st_gid}"


def cap_of(path):
    try:
        return os.getxattr(path, "security.capability", follow_symlinks=False).hex()
    except OSError as e:
        return "-" if e.errno == 61 else hl.errname(e)  # ENODATA


class Twin:
    """One build function, rendered for the kernel and for strata-fs."""

    def __init__(self, name, build, opts):
        self.k = ml.Layout(ml.scratch(f"perms-{name}-k"), n_lowers=1)
        self.s = ml.Layout(ml.scratch(f"perms-{name}-s"), n_lowers=1)
        for L in (self.k, self.s):
            os.chmod(L.root, 0o755)
            build(L)
        self.opts = opts

    def run(self, op):
        """op(L) -> dict of observations, on both; returns (kernel, strata)."""
        self.k.mount_kernel()
        try:
            k = op(self.k)
        finally:
            self.k.umount()
        self.s.mount_strata(self.opts)
        try:
            s = op(self.s)
        finally:
            self.s.umount()
        return k, s


def mkfile(L, rel, mode, uid, gid, data=b"#!/bin/sh\n"):
    p = L.l(0, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    os.chown(p, uid, gid)
    os.chmod(p, mode)
    return p


def compare(s, tag, k, v, what):
    keys = sorted(set(k) | set(v))
    diff = [f"{key}: kernel {k.get(key)!r}, strata-fs {v.get(key)!r}" for key in keys if k.get(key) != v.get(key)]
    s.expect(not diff, f"[{tag}] {what}: same as the kernel overlay", "\n      ".join(diff))


# ------------------------------------------------------------------------------------------------
# a: copy-up keeps everything


def build_a(L):
    mkfile(L, "suid_chmod", 0o4755, OWNER, OWNER)
    mkfile(L, "suid_touch", 0o4755, OWNER, 0)
    mkfile(L, "sgid_xattr", 0o2755, 0, OWNER)
    mkfile(L, "both_append", 0o6750, OWNER, OWNER)
    mkfile(L, "private", 0o600, OWNER, OWNER, b"secret\n")
    mkfile(L, "closed/inner", 0o644, OWNER, OWNER, b"inner\n")
    os.chown(L.l(0, "closed"), OWNER, OWNER)
    os.chmod(L.l(0, "closed"), 0o700)
    mkfile(L, "sticky/theirs", 0o644, OWNER, OWNER)
    os.chmod(L.l(0, "sticky"), 0o1777)
    mkfile(L, "suid_chown", 0o4755, OWNER, OWNER)
    mkfile(L, "sgiddir/x", 0o644, 0, 0)
    os.chown(L.l(0, "sgiddir"), 0, OWNER)
    os.chmod(L.l(0, "sgiddir"), 0o2775)


def op_a(L):
    o = {}
    o["private before: uid 2000 read"] = hl.call(hl.as_user, OTHER, OTHER, hl.read_file, L.m("private"))[0]
    o["closed before: uid 2000 list"] = hl.call(hl.as_user, OTHER, OTHER, os.listdir, L.m("closed"))[0]
    os.chmod(L.m("suid_chmod"), 0o4750)
    os.utime(L.m("suid_touch"), ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    os.setxattr(L.m("sgid_xattr"), "user.t", b"1")
    hl.append_file(L.m("both_append"), b"# root appends\n")
    os.utime(L.m("private"), ns=(1, 1))
    hl.append_file(L.m("closed/inner"), b"more\n")
    os.chown(L.m("suid_chown"), OWNER, OWNER)
    hl.write_file(L.m("sgiddir/new"), b"new\n")
    os.mkdir(L.m("sgiddir/newdir"))
    o["private after: uid 2000 read"] = hl.call(hl.as_user, OTHER, OTHER, hl.read_file, L.m("private"))[0]
    o["closed after: uid 2000 list"] = hl.call(hl.as_user, OTHER, OTHER, os.listdir, L.m("closed"))[0]
    o["closed after: uid 2000 read inner"] = hl.call(hl.as_user, OTHER, OTHER, hl.read_file, L.m("closed/inner"))[0]
    o["sticky: uid 2000 unlinks uid 1000's file"] = hl.call(hl.as_user, OTHER, OTHER, os.unlink, L.m("sticky/theirs"))[0]
    o["sticky: uid 2000 renames uid 1000's file"] = hl.call(hl.as_user, OTHER, OTHER, os.rename,
                                                           L.m("sticky/theirs"), L.m("sticky/mine"))[0]
    for rel in ("suid_chmod", "suid_touch", "sgid_xattr", "both_append", "private", "closed", "closed/inner",
                "sticky", "sticky/theirs", "suid_chown", "sgiddir", "sgiddir/new", "sgiddir/newdir"):
        o[f"{rel} (mount)"] = meta(L.m(rel)) if os.path.lexists(L.m(rel)) else "missing"
    L.umount()
    for rel in ("suid_chmod", "suid_touch", "sgid_xattr", "both_append", "private", "closed", "closed/inner",
                "sticky", "suid_chown", "sgiddir", "sgiddir/new", "sgiddir/newdir"):
        o[f"{rel} (upper)"] = meta(L.u(rel)) if os.path.lexists(L.u(rel)) else "not copied up"
    L.mount = None
    return o


EXPECT_A = {
    "suid_chmod (mount)": "4750 1000:1000", "suid_touch (mount)": "4755 1000:0",
    "sgid_xattr (mount)": "2755 0:1000", "both_append (mount)": "6750 1000:1000",
    "private (mount)": "0600 1000:1000", "closed (mount)": "0700 1000:1000",
    "suid_chown (mount)": "0755 1000:1000",
    "suid_chmod (upper)": "4750 1000:1000", "suid_touch (upper)": "4755 1000:0",
    "sgid_xattr (upper)": "2755 0:1000", "both_append (upper)": "6750 1000:1000",
    "private (upper)": "0600 1000:1000", "closed (upper)": "0700 1000:1000",
    "private after: uid 2000 read": "EACCES", "closed after: uid 2000 list": "EACCES",
    "closed after: uid 2000 read inner": "EACCES", "sticky: uid 2000 unlinks uid 1000's file": "EPERM",
    "sgiddir/new (mount)": "0644 0:1000", "sgiddir/newdir (mount)": "2755 0:1000",
}


def section_a(s, pt):
    tag = "passthrough" if pt else "passthrough=off"
    t = Twin(f"a-{tag}", build_a, [] if pt else ["passthrough=off"])
    k, v = t.run(op_a)
    compare(s, tag, k, v, "modes, owners and access after copy-ups")
    for key, want in EXPECT_A.items():
        s.expect_eq(v.get(key), want, f"[{tag}] strata-fs {key}")
        s.expect_eq(k.get(key), want, f"[{tag}] kernel {key} (checks the test)")


# ------------------------------------------------------------------------------------------------
# b: a write by a non-owner clears set-id bits

B_FILES = {"w4777": 0o4777, "w6777": 0o6777, "w2777": 0o2777, "w2767": 0o2767,
           "t4777": 0o4777, "t6777": 0o6777, "tw4777": 0o4777, "f4777": 0o4777, "r4777": 0o4777}


def build_b(L):
    for name, mode in B_FILES.items():
        mkfile(L, name, mode, OWNER, OWNER, b"0123456789\n")


def other_append(path):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"by uid 2000\n")
    finally:
        os.close(fd)


def other_trunc(path):
    os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))


def other_trunc_write(path):
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"new content by uid 2000\n")
    finally:
        os.close(fd)


def other_ftruncate(path):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, 3)
    finally:
        os.close(fd)


def op_b(L):
    o = {}
    # An upper file too: created by root through the mount, then given away.
    for name in ("u4777", "ut4777"):
        hl.write_file(L.m(name), b"upper\n")
        os.chown(L.m(name), OWNER, OWNER)
        os.chmod(L.m(name), 0o4777)
    for name, fn in (("w4777", other_append), ("w6777", other_append), ("w2777", other_append),
                     ("w2767", other_append), ("t4777", other_trunc), ("t6777", other_trunc),
                     ("tw4777", other_trunc_write), ("f4777", other_ftruncate),
                     ("u4777", other_append), ("ut4777", other_trunc)):
        o[f"{name}: uid 2000 {fn.__name__}"] = hl.call(hl.as_user, OTHER, OTHER, fn, L.m(name))[0]
        o[f"{name} (mount)"] = meta(L.m(name))
    hl.append_file(L.m("r4777"), b"by root\n")
    o["r4777 (mount) after root appends"] = meta(L.m("r4777"))
    L.umount()
    for name in list(B_FILES) + ["u4777", "ut4777"]:
        o[f"{name} (upper)"] = meta(L.u(name)) if os.path.lexists(L.u(name)) else "not copied up"
    L.mount = None
    return o


EXPECT_B = {
    "w4777 (mount)": "0777 1000:1000", "w6777 (mount)": "0777 1000:1000", "w2777 (mount)": "0777 1000:1000",
    "t4777 (mount)": "0777 1000:1000", "f4777 (mount)": "0777 1000:1000",
    "t6777 (mount)": "0777 1000:1000", "tw4777 (mount)": "0777 1000:1000", "ut4777 (mount)": "0777 1000:1000",
    "u4777 (mount)": "0777 1000:1000", "r4777 (mount) after root appends": "4777 1000:1000",
    "w4777 (upper)": "0777 1000:1000", "u4777 (upper)": "0777 1000:1000",
}


# The kernel (6.x) also drops S_ISGID without group-exec when the writer is not in the file's
# group; FUSE's own kill-priv fallback (fuse_setattr without handle_killpriv) only drops it with
# group-exec, as before. Without S_IXGRP the bit gives no privilege on exec, so this one
# difference, which comes from the FUSE kernel module, is a note, not a failure.
FUSE_SGID_RULE = ("w2767 (mount)", "w2767 (upper)")


def section_b(s, pt):
    tag = "passthrough" if pt else "passthrough=off"
    t = Twin(f"b-{tag}", build_b, [] if pt else ["passthrough=off"])
    k, v = t.run(op_b)
    for key in FUSE_SGID_RULE:
        if k.get(key) != v.get(key):
            s.note(f"[{tag}] {key}: kernel {k.get(key)}, strata-fs {v.get(key)} (FUSE's kill-sgid rule needs "
                   f"S_IXGRP; no exec privilege either way)")
            v[key] = k[key]
    compare(s, tag, k, v, "set-id bits after writes by a non-owner")
    for key, want in EXPECT_B.items():
        s.expect_eq(v.get(key), want, f"[{tag}] strata-fs {key}")
        s.expect_eq(k.get(key), want, f"[{tag}] kernel {key} (checks the test)")


# ------------------------------------------------------------------------------------------------
# c: security.capability


C_CASES = ("by_chmod", "by_xattr", "by_append", "by_chown", "by_other_write", "untouched")


def build_c(L):
    for name in C_CASES:
        p = mkfile(L, name, 0o777 if name == "by_other_write" else 0o755, 0, 0, b"\x7fELF fake binary\n")
        os.setxattr(p, "security.capability", CAP_V2)


def op_c(L):
    o = {}
    os.chmod(L.m("by_chmod"), 0o750)
    os.setxattr(L.m("by_xattr"), "user.t", b"1")
    hl.append_file(L.m("by_append"), b"appended by root\n")
    os.chown(L.m("by_chown"), 0, 0)
    o["by_other_write: uid 2000 append"] = hl.call(hl.as_user, OTHER, OTHER, other_append, L.m("by_other_write"))[0]
    for name in C_CASES:
        o[f"{name} (mount)"] = cap_of(L.m(name))
    L.umount()
    for name in C_CASES:
        o[f"{name} (upper)"] = cap_of(L.u(name)) if os.path.lexists(L.u(name)) else "not copied up"
    L.mount = None
    return o


def section_c(s, pt):
    tag = "passthrough" if pt else "passthrough=off"
    t = Twin(f"c-{tag}", build_c, [] if pt else ["passthrough=off"])
    k, v = t.run(op_c)
    s.expect_eq(k.get("untouched (mount)"), CAP_V2.hex(), f"[{tag}] the kernel shows the lower capability (checks the test)")
    widened = [key for key in k if k[key] == "-" and v.get(key) not in ("-", "not copied up")]
    s.expect_eq(widened, [], f"[{tag}] strata-fs keeps no capability the kernel overlay drops",
                "\n      ".join(f"{key}: kernel {k[key]}, strata-fs {v.get(key)}" for key in widened))
    other = [f"{key}: kernel {k.get(key)}, strata-fs {v.get(key)}" for key in sorted(set(k) | set(v))
             if k.get(key) != v.get(key) and key not in widened]
    table = ", ".join(f"{n}: kernel {'cap' if k.get(n + ' (mount)') == CAP_V2.hex() else k.get(n + ' (mount)')}"
                      f"/strata {'cap' if v.get(n + ' (mount)') == CAP_V2.hex() else v.get(n + ' (mount)')}"
                      for n in C_CASES)
    s.note(f"[{tag}] security.capability on the mount after copy-up {table}")
    if other:
        s.note(f"[{tag}] security.capability differs from the kernel (not a widening): " + "; ".join(other))


def main():
    s = ml.start("hardening: copy-up never widens access")
    for pt in (True, False):
        tag = "passthrough" if pt else "passthrough=off"
        s.run(f"a: copy-up keeps set-id bits, owner, mode ({tag})", section_a, s, pt)
        s.run(f"b: a write by a non-owner clears set-id bits ({tag})", section_b, s, pt)
        s.run(f"c: security.capability on copy-up ({tag})", section_c, s, pt)
    s.finish()


if __name__ == "__main__":
    main()

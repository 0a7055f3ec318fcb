#!/usr/bin/env python3
"""The write side of strata-fs (issue 3), feature by feature, next to the kernel overlay.

The oracle test (test/oracle/write_ops.py) compares random mutation scripts by their merged views.
This test checks the specific promises of issue 3 one at a time, where a failure names the feature:
node types and metadata (mode, owner, nsec times, user.*/security.capability/ACL xattrs, set-id
bits) surviving copy-up, sparse copy-up, st_ino stability, hard links, whiteouts and opaque dirs
on disk, renames of lower dirs (redirect), renameat2 flags, locks, fallocate, fsync, utimensat,
name and path limits, statfs, mmap, private trusted.overlay.* xattrs, O_TMPFILE and the virtual
user.strata.layer xattr.

Each section builds the same layers twice (deterministically) and runs the same operation on the
kernel overlay (redirect_dir=on,index=off,metacopy=off) and on strata-fs. Observations are plain
values without paths; where the kernel is the reference they must be equal, and the expectations
of the issue are checked on strata-fs (and on the kernel, as a check of the test itself).
"""

import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import socket
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mountlib as ml  # noqa: E402
from mountlib import ov  # noqa: E402

MiB = 1 << 20
MTIME = 1_600_000_000_987_654_321
ATIME = 1_650_000_000_123_456_789
libc = ctypes.CDLL(None, use_errno=True)


def sha(data):
    return hashlib.sha256(data).hexdigest()[:16]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def err(fn, *a, **kw):
    """'ok' or the errno name of fn(*a, **kw)."""
    try:
        fn(*a, **kw)
        return "ok"
    except OSError as e:
        return ov.errname(e)


def user_xattrs(path):
    out = {}
    for n in sorted(os.listxattr(path, follow_symlinks=False)):
        if n.startswith("user."):
            out[n] = os.getxattr(path, n, follow_symlinks=False)
    return out


def walk(root):
    """Path-independent view of a tree: (rel, type, sha|target|rdev, mode)."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for n in sorted(dirs + files):
            p = os.path.join(d, n)
            st = os.lstat(p)
            t = ov._typechar(st.st_mode)
            extra = sha(read(p)) if t == "f" else os.readlink(p) if t == "l" else ""
            out.append((os.path.relpath(p, root), t, extra, oct(stat.S_IMODE(st.st_mode))))
    return out


class Pair:
    """The same layers built twice: .k for the kernel overlay, .s for strata-fs."""

    def __init__(self, name, build, n_lowers=2):
        root = ml.scratch(f"wf-{name}")
        self.k = ml.Layout(os.path.join(root, "k"), n_lowers)
        self.s = ml.Layout(os.path.join(root, "s"), n_lowers)
        build(self.k)
        build(self.s)

    def mount(self):
        self.k.mount_kernel()
        self.s.mount_strata()
        return self

    def remount(self):
        self.k.remount()
        self.s.remount()

    def umount(self):
        self.k.umount()
        self.s.umount()

    def both(self, fn):
        return fn(self.k), fn(self.s)


def same(s, k, v, what):
    """strata-fs's observation equals the kernel's."""
    return s.expect(k == v, f"{what}: same as the kernel overlay", f"kernel: {k!r}\n      strata: {v!r}")


def expect_both(s, k, v, pred, what, show=None):
    """An expectation of the issue, on strata-fs; on the kernel it only checks the test itself.
    `show` picks the part of an observation worth printing when it fails."""
    show = show or (lambda o: o)
    if not pred(k):
        s.note(f"the kernel overlay does not satisfy '{what}' either: {show(k)!r}")
    return s.expect(pred(v), what, f"strata: {show(v)!r}")


# ------------------------------------------------------------------------------------------------
# node types


def build_types(L):
    low = L.l(1)
    os.mkfifo(os.path.join(low, "fifo"), 0o640)
    os.symlink("some/target", os.path.join(low, "sym"))
    os.mknod(os.path.join(low, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(os.path.join(low, "loop"), stat.S_IFBLK | 0o660, os.makedev(7, 0))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.path.join(low, "sock"))
    finally:
        sock.close()
    os.chmod(os.path.join(low, "sock"), 0o755)


def section_types(s):
    P = Pair("types", build_types).mount()

    def op(L):
        os.chmod(L.m("fifo"), 0o600)
        os.chown(L.m("sym"), 1234, 4321, follow_symlinks=False)
        os.chmod(L.m("null"), 0o600)
        os.chmod(L.m("loop"), 0o600)
        os.chmod(L.m("sock"), 0o700)
        out = {}
        for n in ("fifo", "sym", "null", "loop", "sock"):
            for where, path in (("mount", L.m(n)), ("upper", L.u(n))):
                st = os.lstat(path)
                out[f"{where}:{n}"] = (ov._typechar(st.st_mode), oct(stat.S_IMODE(st.st_mode)),
                                       st.st_uid, st.st_gid,
                                       f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if n in ("null", "loop") else "",
                                       os.readlink(path) if n == "sym" else "")
        return out

    k, v = P.both(op)
    same(s, k, v, "copy-up of a fifo, symlink, char device, block device and socket")
    for n, t in (("fifo", "p"), ("sym", "l"), ("null", "c"), ("loop", "b"), ("sock", "s")):
        expect_both(s, k, v, lambda o, n=n, t=t: o[f"upper:{n}"][0] == t, f"{n} copies up as type '{t}'")
    expect_both(s, k, v, lambda o: o["upper:null"][4] == "1:3", "the char device keeps its rdev 1:3")
    expect_both(s, k, v, lambda o: o["upper:sym"][5] == "some/target" and o["upper:sym"][2:4] == (1234, 4321),
                "the symlink keeps its target and takes the new owner")


# ------------------------------------------------------------------------------------------------
# metadata preserved on copy-up


def build_meta(L):
    low = L.l(1)
    p = L.write(low, "meta", b"metadata test\n")
    os.chown(p, 1234, 5678)
    os.setxattr(p, "user.plain", b"value")
    os.setxattr(p, "user.binary", bytes(range(32)))
    if ml.have("setfacl"):
        r = ml.run_quiet(["setfacl", "-m", "u:4321:rw,g:8765:r", p])
        assert r.returncode == 0, r.stderr
    else:  # the same ACL as the raw xattr: version 2, then (tag, perm, id) entries
        entries = ((0x01, 6, 0xFFFFFFFF), (0x02, 6, 4321), (0x04, 4, 0xFFFFFFFF), (0x08, 4, 8765),
                   (0x10, 4, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF))
        raw = (2).to_bytes(4, "little") + b"".join(
            tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + uid.to_bytes(4, "little")
            for tag, perm, uid in entries)
        os.setxattr(p, "system.posix_acl_access", raw)
    os.chmod(p, 0o640)  # after setfacl: the mode's group bits are the ACL mask
    # security.capability last: chown clears it. setcap if present, else a v2 value by hand.
    if ml.have("setcap"):
        r = ml.run_quiet(["setcap", "cap_net_raw,cap_net_bind_service+ep", p])
        assert r.returncode == 0, r.stderr
    else:
        v2 = (0x02000001).to_bytes(4, "little") + (1 << 13 | 1 << 10).to_bytes(4, "little") + bytes(12)
        os.setxattr(p, "security.capability", v2)
    os.utime(p, ns=(ATIME, MTIME))
    # mdir/sub is copied up as the parent of a new file (its mtime then changes); mdir as a
    # grandparent, untouched otherwise, so its mtime must survive too.
    d = L.mkdir(low, "mdir/sub", 0o750)
    L.write(low, "mdir/sub/child", b"child\n")
    for path, owner, value, mode in ((d, (42, 43), b"d", 0o750), (L.l(1, "mdir"), (44, 45), b"m", 0o710)):
        os.chown(path, *owner)
        os.chmod(path, mode)
        os.setxattr(path, "user.dirattr", value)
        os.utime(path, ns=(ATIME, MTIME + 1))
    L.write(low, "pdir/f", b"f\n")
    os.utime(L.l(1, "pdir"), ns=(ATIME, MTIME + 2))
    for name, mode, owner in (("suid", 0o4755, (1000, 1000)), ("sgid", 0o2755, (0, 1000)),
                              ("suid_x", 0o4755, (1000, 0)), ("both", 0o6750, (1000, 1000))):
        q = L.write(low, name, b"#!/bin/sh\n")
        os.chown(q, *owner)
        os.chmod(q, mode)


def meta_of(path):
    st = os.lstat(path)
    out = {"mode": oct(stat.S_IMODE(st.st_mode)), "owner": (st.st_uid, st.st_gid), "mtime_ns": st.st_mtime_ns,
           "user": user_xattrs(path)}
    for n in ("security.capability", "system.posix_acl_access"):
        out[n] = ml.xattr_or_none(path, n)
    return out


def section_meta(s):
    P = Pair("meta", build_meta).mount()

    def op(L):
        lower = meta_of(L.l(1, "meta"))
        gp_before = os.stat(L.m("mdir")).st_mtime_ns
        os.chmod(L.m("pdir/f"), 0o600)  # copies up pdir, then pdir/f into it
        os.setxattr(L.m("meta"), "user.trigger", b"1")  # a change that touches none of the above
        with open(L.m("mdir/sub/new"), "wb") as f:  # copies up mdir and mdir/sub
            f.write(b"x")
        os.chmod(L.m("suid"), 0o4750)   # another bit of a setuid file
        os.chmod(L.m("sgid"), 0o2775)   # another bit of a setgid file
        os.setxattr(L.m("suid_x"), "user.t", b"1")  # copy-up without any mode change
        os.setxattr(L.m("both"), "user.t", b"1")
        up = meta_of(L.u("meta"))
        up["user"].pop("user.trigger", None)
        acl = ml.run_quiet(["getfacl", "-cn", L.m("meta")]).stdout if ml.have("getfacl") else ""
        return {"lower": lower, "upper": up, "mount_acl": acl,
                "dir": {k: v for k, v in meta_of(L.u("mdir/sub")).items() if k != "mtime_ns"},
                "grandparent": meta_of(L.u("mdir")), "grandparent_lower": meta_of(L.l(1, "mdir")),
                "grandparent_mount_mtime": (gp_before, os.stat(L.m("mdir")).st_mtime_ns),
                "parent_of_chmod_mtime": (os.stat(L.m("pdir")).st_mtime_ns, os.stat(L.u("pdir")).st_mtime_ns),
                "ids": {n: (oct(os.lstat(L.u(n)).st_mode & 0o7777), os.lstat(L.u(n)).st_uid,
                            os.lstat(L.u(n)).st_gid) for n in ("suid", "sgid", "suid_x", "both")}}

    k, v = P.both(op)
    same(s, k["upper"], v["upper"], "metadata of a copied-up file in the upper")
    same(s, k["dir"], v["dir"], "metadata of a copied-up parent directory (mtime aside: it got a new entry)")
    same(s, k["grandparent"], v["grandparent"], "metadata of a copied-up grandparent directory")
    same(s, k["ids"], v["ids"], "set-id bits after copy-up")
    same(s, k["mount_acl"], v["mount_acl"], "getfacl through the mount")
    for key in ("mode", "owner", "mtime_ns", "user", "security.capability", "system.posix_acl_access"):
        expect_both(s, k, v, lambda o, key=key: o["upper"][key] == o["lower"][key],
                    f"copy-up preserves {key}", show=lambda o, key=key: (o["lower"][key], o["upper"][key]))
    expect_both(s, k, v, lambda o: o["lower"]["security.capability"] is not None
                and o["lower"]["system.posix_acl_access"] is not None, "(test setup: caps and ACL set)",
                show=lambda o: o["lower"])
    expect_both(s, k, v, lambda o: o["dir"]["mode"] == "0o750" and o["dir"]["owner"] == (42, 43)
                and o["dir"]["user"] == {"user.dirattr": b"d"}, "parent dir copied up with mode, owner, xattrs",
                show=lambda o: o["dir"])
    expect_both(s, k, v, lambda o: o["grandparent"] == o["grandparent_lower"],
                "grandparent dir copied up with mode, owner, xattrs and mtime (nsec)",
                show=lambda o: (o["grandparent_lower"], o["grandparent"]))
    expect_both(s, k, v, lambda o: o["grandparent_mount_mtime"][0] == o["grandparent_mount_mtime"][1],
                "the mtime of mdir seen through the mount is not changed by copying up mdir/sub below it",
                show=lambda o: o["grandparent_mount_mtime"])
    expect_both(s, k, v, lambda o: o["parent_of_chmod_mtime"] == (MTIME + 2, MTIME + 2),
                "chmod of a lower file pdir/f leaves pdir's mtime as it was (mount and upper)",
                show=lambda o: (MTIME + 2, o["parent_of_chmod_mtime"]))
    expect_both(s, k, v, lambda o: o["ids"] == {"suid": ("0o4750", 1000, 1000), "sgid": ("0o2775", 0, 1000),
                                                "suid_x": ("0o4755", 1000, 0), "both": ("0o6750", 1000, 1000)},
                "setuid/setgid bits survive copy-up", show=lambda o: o["ids"])


# ------------------------------------------------------------------------------------------------
# sparse copy-up, st_ino, hard links


def build_sparse(L):
    p = L.write(L.l(1), "sparse", b"")
    with open(p, "r+b") as f:
        f.truncate(64 * MiB)
        f.write(b"head")
        f.seek(64 * MiB - 4)
        f.write(b"tail")
    L.write(L.l(1), "inof", b"ino\n")
    L.mkdir(L.l(1), "inod")
    L.write(L.l(1), "hl", b"original\n")


def section_sparse_ino_links(s):
    P = Pair("sparse", build_sparse).mount()

    def op(L):
        fd = os.open(L.m("sparse"), os.O_WRONLY)
        try:
            os.pwrite(fd, b"mid!", 32 * MiB)
        finally:
            os.close(fd)
        st = os.stat(L.u("sparse"))
        h = hashlib.sha256()
        with open(L.m("sparse"), "rb") as f:
            while b := f.read(4 * MiB):
                h.update(b)
        return {"size": st.st_size, "upper_bytes_allocated": st.st_blocks * 512, "sha": h.hexdigest()[:16]}

    k, v = P.both(op)
    same(s, {x: k[x] for x in ("size", "sha")}, {x: v[x] for x in ("size", "sha")}, "sparse file content after copy-up")
    s.expect(v["upper_bytes_allocated"] < 1 * MiB, "a 64 MiB sparse lower file copies up sparse (< 1 MiB allocated)",
             f"strata: {v['upper_bytes_allocated']} bytes allocated; kernel: {k['upper_bytes_allocated']}")
    s.note(f"sparse copy-up allocates {v['upper_bytes_allocated']} bytes (kernel overlay: {k['upper_bytes_allocated']})")

    def ino_op(L):
        f0, d0 = os.stat(L.m("inof")).st_ino, os.stat(L.m("inod")).st_ino
        with open(L.m("inof"), "ab") as f:
            f.write(b"more\n")
        with open(L.m("inod/new"), "wb"):
            pass
        f1, d1 = os.stat(L.m("inof")).st_ino, os.stat(L.m("inod")).st_ino
        # hard link of a lower file
        os.link(L.m("hl"), L.m("hl2"))
        a, b = os.stat(L.m("hl")), os.stat(L.m("hl2"))
        with open(L.m("hl2"), "ab") as f:
            f.write(b"via hl2\n")
        via_hl = read(L.m("hl"))
        ua, ub = os.stat(L.u("hl")), os.stat(L.u("hl2"))
        return {"f": (f0, f1), "d": (d0, d1), "hl": (a.st_ino, b.st_ino, a.st_nlink, b.st_nlink),
                "via_hl": via_hl, "upper_same_inode": ua.st_ino == ub.st_ino, "upper_nlink": ua.st_nlink}

    k, v = P.both(ino_op)
    P.remount()
    after = P.both(lambda L: {"f": os.stat(L.m("inof")).st_ino, "d": os.stat(L.m("inod")).st_ino,
                              "hl": os.stat(L.m("hl")).st_ino, "hl2": os.stat(L.m("hl2")).st_ino,
                              "nlink": os.stat(L.m("hl")).st_nlink, "data": read(L.m("hl2"))})
    ka, va = after
    expect_both(s, k, v, lambda o: o["f"][0] == o["f"][1], "st_ino of a file unchanged by its copy-up")
    expect_both(s, k, v, lambda o: o["d"][0] == o["d"][1], "st_ino of a directory unchanged by its copy-up")
    expect_both(s, (k, ka), (v, va), lambda o: o[1]["f"] == o[0]["f"][0] and o[1]["d"] == o[0]["d"][0],
                "st_ino of the copied-up file and dir unchanged after a remount")
    expect_both(s, k, v, lambda o: o["hl"][0] == o["hl"][1] and o["hl"][2:] == (2, 2),
                "hard link of a lower file: both names one inode, st_nlink 2")
    expect_both(s, k, v, lambda o: o["via_hl"] == b"original\nvia hl2\n", "a write via one name is seen via the other")
    expect_both(s, k, v, lambda o: o["upper_same_inode"] and o["upper_nlink"] == 2,
                "the upper holds one inode with two names")
    expect_both(s, ka, va, lambda o: o["hl"] == o["hl2"] and o["nlink"] == 2 and o["data"] == b"original\nvia hl2\n",
                "the hard link pair after a remount")
    same(s, (k["hl"][2:], k["via_hl"], ka["nlink"]), (v["hl"][2:], v["via_hl"], va["nlink"]), "hard link counts and data")


# ------------------------------------------------------------------------------------------------
# whiteouts, opaque dirs, renames


def build_tree(L):
    low, top = L.l(1), L.l(0)
    L.write(low, "delme", b"x\n")
    L.write(low, "ldir/keep", b"keep\n")
    L.write(low, "tree/a/b/c", b"c\n")
    L.write(low, "tree/top", b"t\n")
    L.write(top, "tree/a/above", b"above\n")
    L.write(low, "rd/a/b/file", b"deep file\n")
    L.write(low, "rd/x", b"x\n")
    L.write(top, "rd/y", b"y from lower0\n")
    L.write(low, "ex_a", b"AAAA\n")
    L.write(top, "ex_b", b"BBBB\n")
    L.write(low, "ex_dir/in", b"in\n")
    L.write(low, "nr_a", b"nr a\n")
    L.write(low, "nr_b", b"nr b\n")
    L.opaque(top, "lopq")
    L.write(top, "lopq/f", b"f\n")


def section_whiteout_opaque_rename(s):
    P = Pair("tree", build_tree).mount()

    def op(L):
        out = {}
        os.unlink(L.m("delme"))
        st = os.lstat(L.u("delme"))
        out["whiteout"] = (ov._typechar(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev))
        with open(L.m("fresh"), "wb") as f:
            f.write(b"fresh")
        os.unlink(L.m("fresh"))
        with open(L.m("ldir/fresh"), "wb") as f:
            f.write(b"fresh")
        os.unlink(L.m("ldir/fresh"))
        out["upper_only_unlink"] = (os.path.lexists(L.u("fresh")), os.path.lexists(L.u("ldir/fresh")),
                                    sorted(os.listdir(L.u("ldir"))))
        r = ml.run_quiet(["rm", "-rf", L.m("tree")])
        out["rm_rf"] = r.returncode
        os.mkdir(L.m("tree"))
        out["recreated"] = (os.listdir(L.m("tree")), ml.xattr_or_none(L.u("tree"), "trusted.overlay.opaque"))
        out["rename"] = err(os.rename, L.m("rd"), L.m("rd2"))
        out["renamed_view"] = walk(L.m("rd2"))
        out["old_gone"] = os.path.lexists(L.m("rd"))
        out["redirect_set"] = ml.xattr_or_none(L.u("rd2"), "trusted.overlay.redirect") is not None
        # renameat2
        out["exchange"] = err(ov.renameat2, L.m("ex_a"), L.m("ex_b"), ov.RENAME_EXCHANGE)
        out["exchanged"] = (read(L.m("ex_a")), read(L.m("ex_b")))
        out["exchange_dir"] = err(ov.renameat2, L.m("ex_a"), L.m("ex_dir"), ov.RENAME_EXCHANGE)
        out["exchanged_dir"] = (ml.file_type(L.m("ex_a")), ml.file_type(L.m("ex_dir")),
                                sorted(os.listdir(L.m("ex_a"))) if os.path.isdir(L.m("ex_a")) else None)
        out["noreplace_exists"] = err(ov.renameat2, L.m("nr_a"), L.m("nr_b"), ov.RENAME_NOREPLACE)
        out["noreplace_new"] = err(ov.renameat2, L.m("nr_a"), L.m("nr_c"), ov.RENAME_NOREPLACE)
        out["noreplace_result"] = (os.path.lexists(L.m("nr_a")), read(L.m("nr_b")), read(L.m("nr_c")))
        # trusted.overlay.* is private
        out["set_private"] = err(os.setxattr, L.m("ldir/keep"), "trusted.overlay.opaque", b"y")
        out["set_private_dir"] = err(os.setxattr, L.m("ldir"), "trusted.overlay.redirect", b"/x")
        out["get_private"] = err(os.getxattr, L.m("lopq"), "trusted.overlay.opaque")
        out["listed_private"] = sorted(n for d in ("lopq", "tree", "rd2", "ldir", "")
                                       for n in os.listxattr(L.m(d)) if "overlay" in n or n.startswith("trusted."))
        out["lower_untouched"] = walk(L.l(1)) == LOWER1_VIEW[L.root.endswith("/s")]
        return out

    LOWER1_VIEW[False] = walk(P.k.l(1))
    LOWER1_VIEW[True] = walk(P.s.l(1))
    k, v = P.both(op)
    # The kernel (6.7+) escapes trusted.overlay.* set through an overlay (stored as
    # trusted.overlay.overlay.*): the user's xattr round-trips while the overlay's own markers
    # stay private. strata-fs does the same, so these are compared like everything else.
    for key in k:
        if key != "redirect_set":
            same(s, k[key], v[key], key)
    expect_both(s, k, v, lambda o: o["whiteout"] == ("c", 0, 0), "unlink of a lower file leaves a char 0/0 whiteout", show=lambda o: o["whiteout"])
    expect_both(s, k, v, lambda o: o["upper_only_unlink"] == (False, False, []),
                "unlink of an upper-only file leaves no whiteout", show=lambda o: o["upper_only_unlink"])
    expect_both(s, k, v, lambda o: o["recreated"] == ([], b"y"), "rm -rf + mkdir: an empty, opaque directory", show=lambda o: o["recreated"])
    expect_both(s, k, v, lambda o: o["rename"] == "ok" and not o["old_gone"], "rename of a lower dir (no EXDEV)", show=lambda o: (o["rename"], o["old_gone"]))
    expect_both(s, k, v, lambda o: sorted(r[0] for r in o["renamed_view"]) == ["a", "a/b", "a/b/file", "x", "y"],
                "renamed lower dir has all its content", show=lambda o: o["renamed_view"])
    expect_both(s, k, v, lambda o: o["redirect_set"], "the renamed dir has trusted.overlay.redirect in the upper", show=lambda o: o["redirect_set"])
    expect_both(s, k, v, lambda o: o["exchange"] == "ok" and o["exchanged"] == (b"BBBB\n", b"AAAA\n"),
                "RENAME_EXCHANGE of two lower files", show=lambda o: (o["exchange"], o["exchanged"]))
    expect_both(s, k, v, lambda o: o["noreplace_exists"] == "EEXIST" and o["noreplace_new"] == "ok",
                "RENAME_NOREPLACE: EEXIST over a name, ok to a new one", show=lambda o: (o["noreplace_exists"], o["noreplace_new"]))
    # What listxattr shows is only what the test set through the mount (escaped on disk), never
    # a marker of the layers (opaque, redirect, strata's st_ino record).
    s.expect(set(v["listed_private"]) <= {"trusted.overlay.opaque", "trusted.overlay.redirect"} and
             v["listed_private"] == k["listed_private"],
             "listxattr shows no overlay marker of the layers, only what was set through the mount", repr(v["listed_private"]))
    s.expect(ml.xattr_or_none(L_upper_path := P.s.u("ldir/keep"), "trusted.overlay.overlay.opaque") is not None
             if os.path.lexists(P.s.u("ldir/keep")) else False,
             "a trusted.overlay.* xattr set through the mount is stored escaped in the upper", repr(v["set_private"]))
    expect_both(s, k, v, lambda o: o["lower_untouched"], "lower layers untouched", show=lambda o: o["lower_untouched"])
    # The upper strata-fs left behind mounts under the kernel overlay to the same view.
    P.s.umount()
    P.k.umount()
    kview = {}
    for name, L in (("kernel", P.k), ("strata", P.s)):
        work = os.path.join(L.root, "work2")
        os.mkdir(work)
        L.work = work
        L.mount_kernel()
        kview[name] = walk(L.m())
        L.umount()
    same(s, kview["kernel"], kview["strata"], "the kernel overlay's view of the upper each one wrote")


LOWER1_VIEW = {}


# ------------------------------------------------------------------------------------------------
# locks, fallocate, fsync, utimensat, limits, statfs, mmap


def build_misc(L):
    low = L.l(1)
    L.write(low, "lockme", b"lock\n")
    L.write(low, "falloc", b"prefix")
    L.write(low, "times", b"t\n")
    os.symlink("times", os.path.join(low, "times_link"))
    L.write(low, "mm", b"a" * 16384)
    # A directory chain whose relative path from the mount root is close to PATH_MAX (4096).
    rel = "/".join(c * 250 for c in "abcdefghijklmno")  # 15 x 251 = 3765 bytes
    L.mkdir(low, rel)
    L.write(low, rel + "/" + "z" * 200, b"deep lower\n")


DEEP = "/".join(c * 250 for c in "abcdefghijklmno")

LOCK_CHILD = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
kind = sys.argv[2]
try:
    if kind == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("locked")
except OSError as e:
    import errno
    print(errno.errorcode[e.errno])
"""


def try_lock(path, kind):
    r = subprocess.run([sys.executable, "-c", LOCK_CHILD, path, kind], capture_output=True, text=True, timeout=20)
    return r.stdout.strip() or r.stderr.strip()[-200:]


FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


def section_misc(s):
    P = Pair("misc", build_misc).mount()

    def op(L):
        out = {}
        # locks: the second process cannot take a lock the first one holds
        fd = os.open(L.m("lockme"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            out["flock_held"] = try_lock(L.m("lockme"), "flock")
            fcntl.flock(fd, fcntl.LOCK_UN)
            out["flock_released"] = try_lock(L.m("lockme"), "flock")
            fcntl.lockf(fd, fcntl.LOCK_EX)
            out["posix_held"] = try_lock(L.m("lockme"), "posix")
            fcntl.lockf(fd, fcntl.LOCK_UN)
            out["posix_released"] = try_lock(L.m("lockme"), "posix")
        finally:
            os.close(fd)
        # fallocate on a lower file (copy-up), then punch a hole in it
        fd = os.open(L.m("falloc"), os.O_RDWR)
        try:
            out["posix_fallocate"] = err(os.posix_fallocate, fd, 0, 2 * MiB)
            os.pwrite(fd, b"Z" * 8192, 65536)
            r = libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, ctypes.c_long(65536), ctypes.c_long(4096))
            out["punch_hole"] = "ok" if r == 0 else errno.errorcode[ctypes.get_errno()]
            out["fsync"] = err(os.fsync, fd)
            out["fdatasync"] = err(os.fdatasync, fd)
        finally:
            os.close(fd)
        data = read(L.m("falloc"))
        out["falloc_data"] = (len(data), data[:6], data[65536:65536 + 4096] == bytes(4096),
                              data[65536 + 4096:65536 + 8192] == b"Z" * 4096)
        dfd = os.open(L.m(""), os.O_RDONLY | os.O_DIRECTORY)
        try:
            out["fsync_dir"] = err(os.fsync, dfd)
        finally:
            os.close(dfd)
        # utimensat with nanoseconds, on a file and (no follow) on a symlink
        os.utime(L.m("times"), ns=(ATIME, MTIME))
        os.utime(L.m("times_link"), ns=(ATIME + 2, MTIME + 3), follow_symlinks=False)
        out["times"] = [(os.lstat(p).st_atime_ns, os.lstat(p).st_mtime_ns)
                        for p in (L.m("times"), L.u("times"), L.m("times_link"), L.u("times_link"))]
        # name length
        out["name255"] = err(lambda: os.close(os.open(L.m("n" * 255), os.O_CREAT | os.O_WRONLY, 0o644)))
        out["name256"] = err(lambda: os.close(os.open(L.m("n" * 256), os.O_CREAT | os.O_WRONLY, 0o644)))
        out["mkdir256"] = err(os.mkdir, L.m("d" * 256))
        # near PATH_MAX, relative to the mount root
        root = os.open(L.m(""), os.O_RDONLY | os.O_DIRECTORY)
        try:
            new_rel = DEEP + "/" + "y" * 200
            out["deep_len"] = len(new_rel)
            out["deep_read"] = err(lambda: read_at(root, DEEP + "/" + "z" * 200))
            out["deep_read_data"] = read_at(root, DEEP + "/" + "z" * 200)
            out["deep_create"] = err(lambda: write_at(root, new_rel, b"deep new\n"))
            out["deep_readback"] = read_at(root, new_rel)
            too_long = DEEP + "/" + "q" * 250 + "/" + "w" * 100
            out["over_path_max"] = err(lambda: write_at(root, too_long, b"x"))
        finally:
            os.close(root)
        # mmap MAP_SHARED write to a lower file
        fd = os.open(L.m("mm"), os.O_RDWR)
        try:
            mm = mmap.mmap(fd, 16384, mmap.MAP_SHARED)
            mm[5000:5004] = b"MMAP"
            mm.flush()
            mm.close()
        finally:
            os.close(fd)
        return out

    k, v = P.both(op)
    for key in k:
        same(s, k[key], v[key], key)
    expect_both(s, k, v, lambda o: o["flock_held"] in ("EWOULDBLOCK", "EAGAIN") and o["flock_released"] == "locked",
                "flock: a second process gets EWOULDBLOCK while held, the lock once released",
                show=lambda o: (o["flock_held"], o["flock_released"]))
    expect_both(s, k, v, lambda o: o["posix_held"] in ("EAGAIN", "EACCES") and o["posix_released"] == "locked",
                "fcntl POSIX lock: a second process gets EAGAIN while held",
                show=lambda o: (o["posix_held"], o["posix_released"]))
    expect_both(s, k, v, lambda o: o["posix_fallocate"] == "ok" and o["falloc_data"] == (2 * MiB, b"prefix", True, True),
                "fallocate extends a copied-up file; a punched hole reads as zeros",
                show=lambda o: (o["posix_fallocate"], o["punch_hole"], o["falloc_data"]))
    expect_both(s, k, v, lambda o: (o["fsync"], o["fdatasync"], o["fsync_dir"]) == ("ok", "ok", "ok"), "fsync/fdatasync",
                show=lambda o: (o["fsync"], o["fdatasync"], o["fsync_dir"]))
    expect_both(s, k, v, lambda o: o["times"] == [(ATIME, MTIME)] * 2 + [(ATIME + 2, MTIME + 3)] * 2,
                "utimensat keeps nanoseconds (file and symlink, mount and upper)",
                show=lambda o: o["times"])
    expect_both(s, k, v, lambda o: (o["name255"], o["name256"], o["mkdir256"]) == ("ok", "ENAMETOOLONG", "ENAMETOOLONG"),
                "a 255-byte name works, 256 gives ENAMETOOLONG",
                show=lambda o: (o["name255"], o["name256"], o["mkdir256"]))
    expect_both(s, k, v, lambda o: (o["deep_read"], o["deep_create"], o["deep_readback"]) == ("ok", "ok", b"deep new\n"),
                f"a path of {v['deep_len']} bytes (near PATH_MAX) below lower dirs: read, create, read back",
                show=lambda o: (o["deep_read"], o["deep_create"], o["deep_readback"]))
    expect_both(s, k, v, lambda o: o["over_path_max"] == "ENAMETOOLONG", "a path over PATH_MAX: ENAMETOOLONG",
                show=lambda o: o["over_path_max"])
    # statfs comes from the upper's filesystem
    sm, su = os.statvfs(P.s.m()), os.statvfs(P.s.u())
    s.expect_eq((sm.f_bsize, sm.f_blocks), (su.f_bsize, su.f_blocks), "statfs of the mount = statfs of the upper's fs")
    # mmap write persisted in the upper, lower unchanged, after a remount
    P.remount()
    k2, v2 = P.both(lambda L: (read(L.m("mm"))[4998:5006], read(L.u("mm"))[5000:5004], read(L.l(1, "mm")) == b"a" * 16384))
    same(s, k2, v2, "mmap write after remount")
    expect_both(s, k2, v2, lambda o: o == (b"aaMMAPaa", b"MMAP", True),
                "mmap MAP_SHARED write to a lower file: copied up, data right after a remount, lower unchanged")


def read_at(dirfd, rel):
    fd = os.open(rel, os.O_RDONLY, dir_fd=dirfd)
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


def write_at(dirfd, rel, data):
    fd = os.open(rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=dirfd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------
# O_TMPFILE and user.strata.layer


def build_tmp(L):
    L.write(L.l(1), "dir/lowerfile", b"l\n")
    L.write(L.u(), "in_upper", b"u\n")
    L.write(L.l(0), "in_lower1", b"1\n")
    L.write(L.l(1), "in_lower2", b"2\n")
    L.write(L.l(1), "mixed/a", b"a\n")
    L.write(L.l(0), "mixed/b", b"b\n")


AT_EMPTY_PATH = 0x1000


def link_fd(fd, dst):
    """linkat(fd, "", AT_FDCWD, dst, AT_EMPTY_PATH): give an O_TMPFILE file a name."""
    libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    if libc.linkat(fd, b"", ov.AT_FDCWD, os.fsencode(dst), AT_EMPTY_PATH) == 0:
        return "ok"
    return errno.errorcode[ctypes.get_errno()]


def section_tmpfile_layer(s):
    P = Pair("tmpfile", build_tmp).mount()

    def op(L):
        try:
            fd = os.open(L.m("dir"), os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError as e:
            return {"result": ov.errname(e)}
        try:
            os.write(fd, b"anonymous\n")
            nlink = os.fstat(fd).st_nlink
            listed = sorted(os.listdir(L.m("dir")))
            linked = link_fd(fd, L.m("dir/named"))
        finally:
            os.close(fd)
        return {"result": "ok", "nlink": nlink, "listed_before_link": listed, "link": linked,
                "named": read(L.m("dir/named")) if linked == "ok" else None,
                "upper": sorted(os.listdir(L.u("dir")))}

    k, v = P.both(op)
    s.note(f"O_TMPFILE on the mount: strata-fs {v}; kernel overlay {k}")
    s.expect(v["result"] in ("ok", "EOPNOTSUPP", "ENOTSUP"), "O_TMPFILE: success or EOPNOTSUPP", repr(v))
    if v["result"] == "ok":
        s.expect(v["nlink"] == 0 and v["listed_before_link"] == ["lowerfile"], "O_TMPFILE file is nameless", repr(v))
        s.expect(v["link"] == "ok" and v["named"] == b"anonymous\n" and v["upper"] == ["named"],
                 "linkat of the O_TMPFILE file gives it a name with its data", repr(v))

    L = P.s
    got = {n: ml.layer_of(L.m(n)) for n in ("in_upper", "in_lower1", "in_lower2", "dir/lowerfile", "mixed")}
    want = {"in_upper": L.u(), "in_lower1": L.l(0), "in_lower2": L.l(1), "dir/lowerfile": L.l(1), "mixed": L.l(0)}
    s.expect_eq(got, want, "user.strata.layer names the layer dir of an upper, lower-1, lower-2 file (and a merged dir)")
    with open(L.m("in_lower2"), "ab") as f:
        f.write(b"x")
    s.expect_eq(ml.layer_of(L.m("in_lower2")), L.u(), "user.strata.layer after copy-up is the upper")
    s.expect_eq(err(os.setxattr, L.m("in_upper"), "user.strata.layer", b"/x"), "EPERM",
                "user.strata.layer is read-only")
    s.expect("user.strata.layer" not in os.listxattr(L.m("in_upper")), "user.strata.layer is not listed")
    s.expect(ml.xattr_or_none(L.u("in_upper"), "user.strata.layer") is None, "user.strata.layer is never stored")


def main():
    s = ml.start("write_features")
    s.run("node types copy up as themselves", section_types, s)
    s.run("metadata, xattrs, caps, ACLs, set-id bits preserved on copy-up", section_meta, s)
    s.run("sparse copy-up, st_ino stability, hard links", section_sparse_ino_links, s)
    s.run("whiteouts, opaque dirs, renames, renameat2, private xattrs", section_whiteout_opaque_rename, s)
    s.run("locks, fallocate, fsync, utimensat, name/path limits, statfs, mmap", section_misc, s)
    s.run("O_TMPFILE and user.strata.layer", section_tmpfile_layer, s)
    s.finish()


if __name__ == "__main__":
    main()

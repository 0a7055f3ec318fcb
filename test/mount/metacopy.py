#!/usr/bin/env python3
"""Metadata-only copy-up (-o metacopy=on, issue 6), against the kernel overlay with metacopy=on.

  a  the same operations on both: chmod, chown, utimes, setxattr and removexattr of lower files
     leave metacopy files in the upper (attributes, size, marker, no data) where the kernel does;
     then appends, O_TRUNC, truncate, rename, link and unlink of them. After each phase the merged
     view (content, attributes, xattrs) and the upper on disk (marker, size, data or not) are
     compared. Run with passthrough on and off.
  b  uppers cross over: the kernel (metacopy=on) mounts strata's upper and shows the same tree;
     strata-fs without the option mounts the kernel's upper and reads the data below, and a write
     through it copies the data, after which the kernel reads the result.
  c  the trace says it: the chmod's copy-up is "metadata only", a later lookup names the layer the
     data comes from, the append "data copied up ... into its metacopy".
  d  open files: a read-only file opened between the chmod and the first write follows the data
     to the upper (as the kernel's does) when it goes through the daemon; under passthrough it
     keeps the lower data (the documented difference of issue 9), and new opens see the new data.
  e  opens for writing defer the data copy to the first write (the kernel copies at the open):
     touch leaves a metacopy; a read-write open reads the lower data before its first write and
     its own writes after; dd conv=notrunc, mmap writes, fallocate and lseek(SEEK_DATA) through
     such an open see the whole file. Same merged view as the kernel after each step.
  f  such an open keeps working when its name is removed or replaced before the first write.
"""

import hashlib
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mountlib as ml  # noqa: E402

KERNEL_OPTS = ("redirect_dir=on", "index=off", "metacopy=on")
# Where strata-fs differs on disk, on purpose: a link of a metacopy file copies its data first (the
# kernel keeps the metacopy and records a redirect to the lower data). The merged views are the
# same. (A rename keeps the metacopy and sets a redirect on both.)
DATA_FIRST = ("d/linked", "d/linked-2")
MARKERS = ("trusted.overlay.metacopy", "user.overlay.metacopy")


def build(root):
    L = ml.Layout(root, n_lowers=2)
    big = bytes(range(256)) * 4096  # 1 MiB
    files = {
        "d/empty": b"", "d/small": b"hello\n", "d/mid": random.Random(7).randbytes(5000), "d/big": big,
        "d/suid": b"#!/bin/sh\n", "d/xattr": b"with xattr\n", "d/append": b"line 1\n",
        "d/trunc": b"to be truncated\n" * 100, "d/otrunc": b"opened with O_TRUNC\n",
        "d/renamed": b"renamed data\n", "d/linked": b"linked data\n", "d/gone": b"unlinked\n",
        "top/t": b"in the upper lower\n",
    }
    for rel, data in files.items():
        L.write(L.l(1 if rel.startswith("d/") else 0), rel, data)
    os.chmod(L.l(1, "d/suid"), 0o4755)
    os.setxattr(L.l(1, "d/xattr"), "user.keep", b"1")
    os.setxattr(L.l(1, "d/xattr"), "user.drop", b"2")
    return L


def phase1(mnt):
    p = lambda rel: os.path.join(mnt, rel)  # noqa: E731
    for rel in ("d/empty", "d/small", "d/mid", "d/big", "d/append", "d/trunc", "d/otrunc",
                "d/renamed", "d/linked", "d/gone", "top/t"):
        os.chmod(p(rel), 0o600)
    os.chown(p("d/suid"), 1000, 1000)
    os.chmod(p("d/suid"), 0o4750)
    os.utime(p("d/mid"), (1000000000, 1000000000))
    os.setxattr(p("d/xattr"), "user.new", b"3")
    os.removexattr(p("d/xattr"), "user.drop")


def phase2(mnt):
    p = lambda rel: os.path.join(mnt, rel)  # noqa: E731
    with open(p("d/append"), "ab") as f:
        f.write(b"line 2\n")
    with open(p("d/otrunc"), "wb") as f:
        f.write(b"new\n")
    os.truncate(p("d/trunc"), 10)
    os.rename(p("d/renamed"), p("d/renamed-to"))
    os.rename(p("d/big"), p("top/big-moved"))  # to another directory: an absolute redirect
    os.link(p("d/linked"), p("d/linked-2"))
    os.unlink(p("d/gone"))


def merged_view(mnt):
    out = {}
    for dirpath, dirnames, filenames in os.walk(mnt):
        dirnames.sort()
        for n in sorted(filenames):
            path = os.path.join(dirpath, n)
            st = os.lstat(path)
            with open(path, "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()[:16]
            xattrs = sorted((a, os.getxattr(path, a)) for a in os.listxattr(path) if a.startswith("user."))
            out[os.path.relpath(path, mnt)] = (oct(st.st_mode), st.st_uid, st.st_gid, st.st_size, st.st_nlink,
                                               st.st_mtime_ns if n == "mid" else None, sha, xattrs)
    return out


def upper_view(upper):
    out = {}
    for dirpath, dirnames, filenames in os.walk(upper):
        for n in sorted(filenames):
            path = os.path.join(dirpath, n)
            st = os.lstat(path)
            if not (st.st_mode & 0o170000 == 0o100000):
                out[os.path.relpath(path, upper)] = ("not a regular file", oct(st.st_mode))
                continue
            names = os.listxattr(path)
            marked = any(m in names for m in MARKERS)
            fd = os.open(path, os.O_RDONLY)
            try:
                try:
                    data = os.lseek(fd, 0, os.SEEK_DATA) >= 0
                except OSError:
                    data = False
            finally:
                os.close(fd)
            out[os.path.relpath(path, upper)] = ("metacopy" if marked else "full copy", st.st_size,
                                                 "data" if data else "no data")
    return out


def diff(a, b):
    keys = sorted(set(a) | set(b))
    return [f"{k}: kernel {a.get(k)!r} / strata {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def section_a(s, opts):
    K = build(ml.scratch("mc-a-kernel"))
    S = build(ml.scratch("mc-a-strata"))
    K.mount_kernel(KERNEL_OPTS)
    lowers_before = [merged_view(d) for d in S.lowers]
    S.mount_strata(["metacopy=on"] + opts)
    for phase in (phase1, phase2):
        phase(K.mnt)
        phase(S.mnt)
        s.expect_eq(diff(merged_view(K.mnt), merged_view(S.mnt)), [],
                    f"{phase.__name__}: the merged view is the kernel's")
        ku, su = upper_view(K.upper), upper_view(S.upper)
        for rel in DATA_FIRST if phase is phase2 else ():
            if rel in su:
                s.expect_eq((ku.get(rel, ("?",))[0], su[rel][0]), ("metacopy", "full copy"),
                            f"{rel}: a metacopy on the kernel, data copied first on strata-fs")
                ku.pop(rel, None)
                su.pop(rel)
        s.expect_eq(diff(ku, su), [],
                    f"{phase.__name__}: the upper on disk is the kernel's (metacopy or full copy, size, data)")
    uv = upper_view(S.upper)
    s.expect_eq(uv.get("top/big-moved"), ("metacopy", 1 << 20, "no data"),
                "the chmod-ed 1 MiB file is a metacopy in the upper, also once renamed")
    s.expect_eq(uv.get("d/renamed-to"), ("metacopy", 13, "no data"), "a renamed one too")
    s.expect_eq(uv.get("d/append"), ("full copy", 14, "data"), "the appended one has its data")
    kernel_view = merged_view(K.mnt)
    K.umount()
    S.umount()
    s.expect_eq([merged_view(d) for d in S.lowers], lowers_before, "the lower layers are untouched")
    # From disk alone, crosswise: the redirects and markers, not the daemon's memory, carry it.
    S.mount_kernel(KERNEL_OPTS)
    s.expect_eq(diff(kernel_view, merged_view(S.mnt)), [], "the kernel mounts strata's upper: the same view")
    S.umount()
    S.mount_strata(["metacopy=on"] + opts)
    s.expect_eq(diff(kernel_view, merged_view(S.mnt)), [], "strata-fs mounts its upper again: the same view")
    S.umount()
    K.mount_strata(opts)
    s.expect_eq(diff(kernel_view, merged_view(K.mnt)), [], "strata-fs mounts the kernel's upper: the same view")


def section_b(s):
    S = build(ml.scratch("mc-b-strata"))
    S.mount_strata(["metacopy=on"])
    phase1(S.mnt)
    seen_by_strata = merged_view(S.mnt)
    S.umount()
    S.mount_kernel(KERNEL_OPTS)
    s.expect_eq(diff(merged_view(S.mnt), seen_by_strata), [], "the kernel mounts strata's metacopy upper: same tree")
    S.umount()

    K = build(ml.scratch("mc-b-kernel"))
    K.mount_kernel(KERNEL_OPTS)
    phase1(K.mnt)
    seen_by_kernel = merged_view(K.mnt)
    K.umount()
    s.expect(any(v[0] == "metacopy" for v in upper_view(K.upper).values()), "the kernel wrote metacopy files")
    K.mount_strata()  # without metacopy=on: the files are still read right
    s.expect_eq(diff(seen_by_kernel, merged_view(K.mnt)), [], "strata-fs mounts the kernel's metacopy upper: same tree")
    K.umount()
    K.mount_kernel(KERNEL_OPTS)  # renames by the kernel: relative and absolute redirects on files
    os.rename(K.m("d/renamed"), K.m("d/renamed-by-kernel"))
    os.rename(K.m("d/mid"), K.m("top/mid-by-kernel"))
    seen_by_kernel = merged_view(K.mnt)
    K.umount()
    K.mount_strata()
    s.expect_eq(diff(seen_by_kernel, merged_view(K.mnt)), [],
                "strata-fs follows the kernel's redirects of renamed metacopy files")
    K.umount()
    # A file the kernel renamed within its directory (relative redirect) moves to another one:
    # strata-fs must write an absolute redirect, or the data is lost after a remount.
    K.mount_strata(["metacopy=on"])
    os.rename(K.m("d/renamed-by-kernel"), K.m("top/moved-across"))
    moved = merged_view(K.mnt)
    K.umount()
    for how in ("kernel", "strata"):
        K.mount_kernel(KERNEL_OPTS) if how == "kernel" else K.mount_strata()
        s.expect_eq(diff(moved, merged_view(K.mnt)), [],
                    f"after moving a kernel-renamed metacopy across directories: the same view on {how}")
        K.umount()
    K.mount_strata()
    os.rename(K.m("top/moved-across"), K.m("d/renamed"))  # back, for phase2
    phase2(K.mnt)
    after = merged_view(K.mnt)
    K.umount()
    K.mount_kernel(KERNEL_OPTS)
    s.expect_eq(diff(after, merged_view(K.mnt)), [], "what strata-fs wrote into the kernel's upper reads the same there")


def section_c(s):
    L = build(ml.scratch("mc-c"))
    trace = os.path.join(L.root, "trace.log")
    L.mount_strata(["metacopy=on", "trace=copyup+lookup", f"trace_file={trace}"])
    os.chmod(L.m("d/big"), 0o600)
    L.umount()
    L.mount_strata(["metacopy=on", "trace=copyup+lookup", f"trace_file={trace}"])
    with open(L.m("d/big"), "ab") as f:
        f.write(b"!")
    L.umount()
    text = ml.read_text(trace)
    lines = text.splitlines()
    s.expect(any("/d/big: copied up" in x and "metadata only" in x for x in lines),
             "the chmod's copy-up is traced as metadata only", text[-2000:])
    s.expect(any("/d/big: from layer 0" in x and "metacopy" in x and "data from layer 2" in x for x in lines),
             "the lookup after the remount names the data's layer", text[-2000:])
    s.expect(any("/d/big: data copied up from lower 2" in x and "into its metacopy" in x for x in lines),
             "the append's data copy is traced", text[-2000:])


def section_d(s, opts):
    L = build(ml.scratch("mc-d"))
    L.mount_strata(["metacopy=on"] + opts)
    passthrough = ml.ov.passthrough_on(L.mnt)
    path = L.m("d/small")
    os.chmod(path, 0o600)
    reader = open(path, "rb")
    with open(path, "ab") as f:
        f.write(b"more\n")
    with open(path, "rb") as f:
        s.expect_eq(f.read(), b"hello\nmore\n", "a new open after the write sees the new data")
    old_reader = reader.read()
    reader.close()
    if passthrough:
        s.expect(old_reader in (b"hello\n", b"hello\nmore\n"),
                 "under passthrough an earlier read-only file keeps the old data (or the new)", repr(old_reader))
    else:
        s.expect_eq(old_reader, b"hello\nmore\n", "an earlier read-only file follows the data to the upper (as the kernel)")
    with open(L.u("d/small"), "rb") as f:
        s.expect_eq(f.read(), b"hello\nmore\n", "the upper file holds the data")


def phase3(mnt):
    p = lambda rel: os.path.join(mnt, rel)  # noqa: E731
    seen = {}
    os.utime(p("d/small"))  # as touch: by path, no open
    fd = os.open(p("d/mid"), os.O_WRONLY)  # as touch: an open for writing, no write
    os.utime(fd, (1000000000, 1000000000))
    os.close(fd)
    fd = os.open(p("d/xattr"), os.O_RDWR)
    seen["read before the first write"] = os.read(fd, 4)
    os.pwrite(fd, b"W", 2)
    os.lseek(fd, 0, os.SEEK_SET)
    seen["read after it"] = os.read(fd, 100)
    os.close(fd)
    fd = os.open(p("d/big"), os.O_RDWR)
    seen["SEEK_DATA"] = os.lseek(fd, 4096, os.SEEK_DATA)
    os.posix_fallocate(fd, 0, (1 << 20) + 4096)
    os.close(fd)
    fd = os.open(p("d/suid"), os.O_RDWR)
    import mmap
    with mmap.mmap(fd, 4) as mm:
        mm[0:2] = b"#?"
        mm.flush()
    os.close(fd)
    subprocess.run(["dd", "if=/dev/zero", f"of={p('d/trunc')}", "bs=1", "count=3", "seek=5", "conv=notrunc",
                    "status=none"], check=True)
    return seen


def section_e(s, opts):
    K = build(ml.scratch("mc-e-kernel"))
    S = build(ml.scratch("mc-e-strata"))
    K.mount_kernel(KERNEL_OPTS)
    S.mount_strata(["metacopy=on"] + opts)
    k_seen, s_seen = phase3(K.mnt), phase3(S.mnt)
    s.expect_eq(s_seen, k_seen, "what the open files read and seek is what the kernel's read")
    s.expect_eq(diff(merged_view(K.mnt), merged_view(S.mnt)), [], "the merged view is the kernel's")
    ku, su = upper_view(K.upper), upper_view(S.upper)
    s.expect_eq((ku.get("d/mid"), su.get("d/mid")), (("full copy", 5000, "data"), ("metacopy", 5000, "no data")),
                "an open for writing without a write: the kernel copies the data, strata-fs does not (yet)")
    for rel in ("d/xattr", "d/big", "d/suid", "d/trunc"):
        s.expect_eq(su.get(rel, ("?",))[0], "full copy", f"{rel}: written through an open file: the data is in the upper")
    ku.pop("d/mid", None)
    su.pop("d/mid", None)
    s.expect_eq(diff(ku, su), [], "otherwise the upper on disk is the kernel's")


def section_f(s, opts):
    """An open for writing whose data is still below, then its name is removed or replaced: the
    writes through it must still work (the data comes from the file opened with it)."""
    K = build(ml.scratch("mc-f-kernel"))
    S = build(ml.scratch("mc-f-strata"))
    K.mount_kernel(KERNEL_OPTS)
    S.mount_strata(["metacopy=on"] + opts)
    results = []
    for L in (K, S):
        got = {}
        fd = os.open(L.m("d/gone"), os.O_RDWR)
        os.unlink(L.m("d/gone"))
        got["write after unlink"] = os.pwrite(fd, b"W", 1)
        got["read back"] = os.pread(fd, 100, 0)
        os.close(fd)
        fd = os.open(L.m("d/small"), os.O_WRONLY | os.O_APPEND)
        os.rename(L.m("d/mid"), L.m("d/small"))
        got["append after being replaced"] = os.write(fd, b"!")
        os.close(fd)
        with open(L.m("d/small"), "rb") as f:
            got["the new d/small is d/mid's data"] = hashlib.sha256(f.read()).hexdigest()[:16]
        results.append(got)
    s.expect_eq(results[1], results[0], "the same results as the kernel")
    s.expect_eq(diff(merged_view(K.mnt), merged_view(S.mnt)), [], "the same merged view")


def main():
    s = ml.start("metacopy: metadata-only copy-up against the kernel's metacopy=on")
    for opts in ([], ["passthrough=off"]):
        tag = ",".join(opts) or "passthrough"
        s.run(f"a: same operations, same result [{tag}]", section_a, s, opts)
        s.run(f"d: open files [{tag}]", section_d, s, opts)
        s.run(f"e: data copied at the first write [{tag}]", section_e, s, opts)
        s.run(f"f: the name goes while the file is open [{tag}]", section_f, s, opts)
    s.run("b: uppers cross over", section_b, s)
    s.run("c: trace", section_c, s)
    s.finish()


if __name__ == "__main__":
    main()

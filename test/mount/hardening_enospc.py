#!/usr/bin/env python3
"""Out of space in the middle of a copy-up (issue 7): the errno reaches the caller, nothing partial
is left in the upper or the workdir, the merged view still shows the lower content, and the same
operation works once there is room again.

Upper and workdir live on a small tmpfs; the lower layer is on disk.
  a  append to a 32 MiB lower file with an 8 MiB upper: open() fails with ENOSPC, no trace in the
     upper or workdir/work, the merged file is the lower one byte for byte; after growing the
     tmpfs (remount,size=64m) the same append works (passthrough on and off)
  b  copy-up of a 24 MiB tree file by file (appends, chmods, setxattrs) into 8 MiB: every
     operation either succeeds or fails with ENOSPC, each file is in the upper complete or not
     at all, the merged view matches the outcome of each operation, workdir/work is empty; after
     growing the tmpfs the failed ones succeed
  c  a plain write to an upper file that fills the filesystem: ENOSPC reaches the writer
  d  out of inodes (tmpfs nr_inodes): removing lower files needs whiteouts: rm either works or
     fails with ENOSPC and the file stays visible; mkdir likewise; nothing left in workdir/work
  e  EDQUOT with tmpfs quotas (mount -t tmpfs -o quota): the same checks as (a) with a user quota,
     the daemon started without CAP_SYS_RESOURCE; skipped with a note when the kernel has no
     tmpfs quota support (CONFIG_TMPFS_QUOTA)
"""

import errno
import os
import random
import stat
import subprocess
import sys

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "hardening"))
import hardlib as hl  # noqa: E402
from hardlib import ml, ov  # noqa: E402

MiB = hl.MiB


class SmallUpper:
    """Layers with lower0 on disk and upper+work on a tmpfs of `size`."""

    def __init__(self, name, size="8m", extra=""):
        self.L = ml.Layout(ml.scratch(f"enospc-{name}"), n_lowers=1)
        self.fs = os.path.join(self.L.root, "small")
        hl.mount_tmpfs(self.fs, f"size={size}{',' + extra if extra else ''}")
        self.L.upper = os.path.join(self.fs, "upper")
        self.L.work = os.path.join(self.fs, "work")
        os.makedirs(self.L.upper)
        os.makedirs(self.L.work)

    def grow(self, size="64m"):
        subprocess.run(["mount", "-o", f"remount,size={size}", self.fs], check=True)

    def free(self):
        sv = os.statvfs(self.fs)
        return sv.f_bavail * sv.f_frsize


def write_random(path, size, seed):
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, MiB)
            f.write(rnd.randbytes(n))
            left -= n


def section_big_append(s, pt):
    tag = "passthrough" if pt else "passthrough=off"
    u = SmallUpper(f"a-{tag}")
    L = u.L
    big = L.l(0, "big")
    write_random(big, 32 * MiB, 1)
    os.chown(big, 1000, 1000)
    os.chmod(big, 0o640)
    os.setxattr(big, "user.keep", b"1")
    lower_sha = hl.sha_file(big)
    free_before = u.free()
    L.mount_strata([] if pt else ["passthrough=off"])
    outcome, _ = hl.call(hl.append_file, L.m("big"), b"X")
    s.expect_eq(outcome, "ENOSPC", f"[{tag}] append to a 32 MiB lower file with an 8 MiB upper")
    s.expect(not os.path.lexists(L.u("big")), f"[{tag}] no partial copy in the upper", repr(os.listdir(L.upper)))
    s.expect_eq(hl.work_leftovers(L.work), [], f"[{tag}] nothing left in workdir/work")
    s.expect(u.free() >= free_before - 64 * 1024, f"[{tag}] the space is given back",
             f"free {u.free()} < {free_before} before")
    s.expect_eq(hl.sha_file(L.m("big")), lower_sha, f"[{tag}] the merged file is still the lower one")
    st = os.lstat(L.m("big"))
    s.expect_eq((st.st_size, stat.S_IMODE(st.st_mode), st.st_uid), (32 * MiB, 0o640, 1000), f"[{tag}] its metadata")
    s.expect_eq(ml.layer_of(L.m("big")), L.l(0), f"[{tag}] served from the lower layer")
    # Other operations still work on the same mount.
    s.expect_eq(hl.call(hl.write_file, L.m("small"), b"fits\n")[0], "ok", f"[{tag}] a small new file still fits")
    u.grow()
    outcome, _ = hl.call(hl.append_file, L.m("big"), b"X")
    s.expect_eq(outcome, "ok", f"[{tag}] the same append once the tmpfs has room")
    st = os.lstat(L.m("big"))
    s.expect_eq(st.st_size, 32 * MiB + 1, f"[{tag}] size after the append")
    with open(L.m("big"), "rb") as f:
        f.seek(32 * MiB - 4)
        tail = f.read()
    with open(big, "rb") as f:
        f.seek(32 * MiB - 4)
        s.expect_eq(tail, f.read() + b"X", f"[{tag}] the tail of the appended file")
    s.expect_eq(os.getxattr(L.m("big"), "user.keep"), b"1", f"[{tag}] xattr kept by the copy-up")
    L.umount()
    s.expect_eq(hl.sha_file(big), lower_sha, f"[{tag}] lower untouched")
    s.expect_eq(os.lstat(L.u("big")).st_size, 32 * MiB + 1, f"[{tag}] the upper copy after umount")
    hl.umount_quiet(u.fs)


def section_tree(s):
    u = SmallUpper("b")
    L = u.L
    files = {}
    rnd = random.Random(2)
    for d in range(6):
        for f in range(8):
            rel = f"tree/d{d}/f{f}"
            os.makedirs(os.path.dirname(L.l(0, rel)), exist_ok=True)
            data = rnd.randbytes(512 * 1024)
            with open(L.l(0, rel), "wb") as fh:
                fh.write(data)
            os.chmod(L.l(0, rel), 0o644)
            files[rel] = (data, ("append", "chmod", "xattr")[(d + f) % 3])
    L.mount_strata()
    results = {}
    for rel, (data, kind) in files.items():
        p = L.m(rel)
        if kind == "append":
            results[rel] = hl.call(hl.append_file, p, b"+")[0]
        elif kind == "chmod":
            results[rel] = hl.call(os.chmod, p, 0o600)[0]
        else:
            results[rel] = hl.call(os.setxattr, p, "user.x", b"1")[0]
    counts = {k: list(results.values()).count(k) for k in set(results.values())}
    print(f"  outcomes: {counts}", flush=True)
    s.expect(set(counts) <= {"ok", "ENOSPC"}, "every copy-up either worked or failed with ENOSPC", repr(counts))
    s.expect(counts.get("ok", 0) > 0 and counts.get("ENOSPC", 0) > 0, "space ran out midway (some of each)",
             repr(counts))
    s.expect_eq(hl.work_leftovers(L.work), [], "nothing left in workdir/work")

    def state(path, data, kind):
        content = hl.read_file(path)
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        x = ml.xattr_or_none(path, "user.x")
        if kind == "append":
            new = content == data + b"+"
            return "new" if new and mode == 0o644 else "old" if content == data and mode == 0o644 else "torn"
        if content != data:
            return "torn"
        if kind == "chmod":
            return "new" if mode == 0o600 else "old" if mode == 0o644 else "torn"
        return "new" if x == b"1" else "old" if x is None and mode == 0o644 else "torn"

    problems = []
    for rel, (data, kind) in files.items():
        want = "new" if results[rel] == "ok" else "old"
        got = state(L.m(rel), data, kind)
        if got != want:
            problems.append(f"{rel} ({kind}, {results[rel]}): merged view {got}, expected {want}")
        up = L.u(rel)
        if results[rel] != "ok" and os.path.lexists(up):
            problems.append(f"{rel}: its copy-up failed ({results[rel]}) but the upper holds "
                            f"{os.lstat(up).st_size} bytes of it")
        if results[rel] == "ok":
            if not os.path.lexists(up) or state(up, data, kind) != "new":
                problems.append(f"{rel}: copied up, but the upper copy is not complete")
    s.expect_eq(problems, [], "each file complete in the upper or not there at all")
    s.expect_eq(hl.upper_problems(L.upper), [], "upper on disk")
    u.grow()
    for rel, (data, kind) in files.items():
        if results[rel] != "ok":
            p = L.m(rel)
            r = (hl.call(hl.append_file, p, b"+") if kind == "append" else hl.call(os.chmod, p, 0o600)
                 if kind == "chmod" else hl.call(os.setxattr, p, "user.x", b"1"))[0]
            results[rel] = r
    s.expect_eq(sorted({r for r in results.values()}), ["ok"], "with room again, the failed operations succeed")
    bad = [rel for rel, (data, kind) in files.items() if state(L.m(rel), data, kind) != "new"]
    s.expect_eq(bad, [], "final merged view")
    L.umount()
    hl.umount_quiet(u.fs)


def section_plain_write(s):
    for pt in (True, False):
        tag = "passthrough" if pt else "passthrough=off"
        u = SmallUpper(f"c-{tag}", size="4m")
        L = u.L
        L.mount_strata([] if pt else ["passthrough=off"])
        fd = os.open(L.m("filler"), os.O_WRONLY | os.O_CREAT, 0o644)
        err = None
        written = 0
        try:
            while written < 16 * MiB:
                written += os.write(fd, b"\0" * (256 * 1024))
        except OSError as e:
            err = hl.errname(e)
        try:
            os.fsync(fd)
        except OSError as e:
            err = err or hl.errname(e)
        os.close(fd)
        s.expect_eq(err, "ENOSPC", f"[{tag}] writing past the end of the upper's space fails with ENOSPC "
                    f"(after {written >> 10} KiB)")
        s.expect_eq(hl.call(os.unlink, L.m("filler"))[0], "ok", f"[{tag}] unlink of the filler")
        s.expect_eq(hl.call(hl.write_file, L.m("after"), b"room again\n")[0], "ok", f"[{tag}] writes work again")
        L.umount()
        hl.umount_quiet(u.fs)


def section_inodes(s):
    u = SmallUpper("d", size="64m", extra="nr_inodes=40")
    L = u.L
    for i in range(80):
        with open(L.l(0, f"f{i:02d}"), "wb") as f:
            f.write(f"file {i}\n".encode())
    os.makedirs(L.l(0, "dirs"))
    L.mount_strata()
    rm = {f"f{i:02d}": hl.call(os.unlink, L.m(f"f{i:02d}"))[0] for i in range(80)}
    counts = {k: list(rm.values()).count(k) for k in set(rm.values())}
    print(f"  rm outcomes: {counts}", flush=True)
    s.expect(set(counts) <= {"ok", "ENOSPC"}, "every rm of a lower file either worked or failed with ENOSPC",
             repr(counts))
    s.expect(counts.get("ENOSPC", 0) > 0, "inodes ran out (some rm failed)", repr(counts))
    left = set(os.listdir(L.mnt))
    wrong = [n for n, r in rm.items() if (r == "ok") == (n in left)]
    s.expect_eq(wrong, [], "a removed file is gone, a file whose rm failed is still there")
    for n in left - {"dirs"}:
        if hl.read_file(L.m(n)) != f"file {int(n[1:])}\n".encode():
            s.expect(False, f"{n}: content intact after its rm failed")
    mk = hl.call(os.mkdir, L.m("dirs/new"))[0]
    s.expect(mk in ("ok", "ENOSPC"), "mkdir with no inodes left: ok or ENOSPC", mk)
    s.expect_eq(hl.work_leftovers(L.work), [], "nothing left in workdir/work")
    s.expect_eq(hl.upper_problems(L.upper), [], "upper on disk")
    L.umount()
    # A full upper must still mount: else nobody can free space through the overlay. The kernel
    # overlay is the reference.
    try:
        L.mount_strata()
    except ov.MountError as e:
        strata_err = hl.first_line(str(e).split("\n", 1)[1] if "\n" in str(e) else str(e))
        try:
            with ov.mount_kernel(L.lowers, L.upper, L.work, L.mnt, ml.KERNEL_OPTS):
                kernel = f"the kernel overlay mounts it and shows {len(os.listdir(L.mnt))} entries"
        except ov.MountError as k:
            kernel = f"the kernel overlay refuses it too ({hl.first_line(str(k))})"
        if kernel.startswith("the kernel overlay refuses"):
            s.note(f"an upper without free inodes does not mount again: strata-fs: {strata_err}; {kernel}")
        s.expect(kernel.startswith("the kernel overlay refuses"),
                 "an upper without free inodes can be mounted again (to free space through the mount)",
                 f"strata-fs refuses: {strata_err}; {kernel}")
        hl.umount_quiet(u.fs)
        return
    s.expect_eq(set(os.listdir(L.mnt)), left, "the same view after a remount")
    L.umount()
    hl.umount_quiet(u.fs)


def section_edquot(s):
    probe = os.path.join(ml.scratch("enospc-quota-probe"), "fs")
    try:
        hl.mount_tmpfs(probe, "size=64m,quota,usrquota_block_hardlimit=4m")
    except ov.MountError as e:
        s.note("EDQUOT not tested: this kernel's tmpfs has no quota support (CONFIG_TMPFS_QUOTA; "
               f"`mount -t tmpfs -o quota` fails: {hl.first_line(str(e)).split(': ')[-1]})")
        return
    hl.umount_quiet(probe)
    if not ml.have("setpriv"):
        s.note("EDQUOT not tested: setpriv (to drop CAP_SYS_RESOURCE, which ignores quotas) is missing")
        return
    u = SmallUpper("e", size="64m", extra="quota,usrquota_block_hardlimit=4m")
    L = u.L
    big = L.l(0, "big")
    write_random(big, 8 * MiB, 3)
    os.chown(big, 1000, 1000)
    lower_sha = hl.sha_file(big)
    wrapper = os.path.join(L.root, "strata-fs-nocap")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nexec setpriv --bounding-set -sys_resource {ml.strata_fs()} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    L.mount = ov.mount_fuse(wrapper, L.lowers, L.upper, L.work, L.mnt)
    outcome, _ = hl.call(hl.append_file, L.m("big"), b"X")
    s.expect_eq(outcome, "EDQUOT", "append to an 8 MiB lower file of uid 1000 with a 4 MiB user quota")
    s.expect(not os.path.lexists(L.u("big")), "no partial copy in the upper")
    s.expect_eq(hl.work_leftovers(L.work), [], "nothing left in workdir/work")
    s.expect_eq(hl.sha_file(L.m("big")), lower_sha, "the merged file is still the lower one")
    L.umount()
    hl.umount_quiet(u.fs)


def main():
    s = ml.start("hardening: out of space during copy-up")
    s.run("a: 32 MiB append into an 8 MiB upper (passthrough)", section_big_append, s, True)
    s.run("a: 32 MiB append into an 8 MiB upper (passthrough=off)", section_big_append, s, False)
    s.run("b: tree copy-up running out of space midway", section_tree, s)
    s.run("c: plain writes fill the upper", section_plain_write, s)
    s.run("d: out of inodes: whiteouts and mkdir", section_inodes, s)
    s.run("e: EDQUOT with tmpfs quotas", section_edquot, s)
    s.finish()


if __name__ == "__main__":
    main()

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
  e  EDQUOT: append to an 8 MiB lower file of uid 1000 with upper+work under a 4 MiB quota:
     open() fails with EDQUOT (not EIO), no trace in the upper or workdir/work, the space is given
     back, the merged file is the lower one byte for byte; after raising the quota the same append
     works. The daemon runs as root without CAP_SYS_RESOURCE (setpriv drops it from every set;
     checked in /proc), since that capability ignores quotas. The quota comes from the first of:
       - a tmpfs mounted -o quota (CONFIG_TMPFS_QUOTA) with a user block limit for uid 1000
       - an ext4 image (-O quota) loop-mounted -o usrquota,grpquota, same user limit (needs
         CONFIG_QUOTA and a quota format, CONFIG_QFMT_V2)
       - a btrfs image, loop-mounted, upper+work in a subvolume whose qgroup is limited: not a
         user quota but the kernel's other EDQUOT, for kernels with no quota format at all
     User limits are set with quotactl_fd(2). Before the daemon starts, uid 1000 itself writing
     past the limit must get EDQUOT: a quota that is only counted fails the section. Images live
     in the section's scratch directory and are unmounted, detached and removed on every exit
     path. Skipped with a note naming each reason when none of these works here.
"""

import ctypes
import ctypes.util
import errno
import os
import random
import stat
import subprocess
import sys
import time

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
        # The kernel sends RELEASE (the filler's close) and FORGET (its last reference) without
        # waiting for them: until the daemon has processed both it holds the unlinked file open,
        # and its space is not free yet. Wait for that, boundedly, as a user would see it.
        deadline = time.monotonic() + 5
        while True:
            outcome = hl.call(hl.write_file, L.m("after"), b"room again\n")[0]
            if outcome != "ENOSPC" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        s.expect_eq(outcome, "ok", f"[{tag}] writes work again (once the daemon got the filler's release)")
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


# ------------------------------------------------------------------------------------------------
# e: EDQUOT. The copy of a lower file is charged to the file's owner (QUOTA_UID): a user block quota
# on the filesystem holding upper+work (or a btrfs qgroup limit) must stop it with EDQUOT. Root with
# CAP_SYS_RESOURCE ignores user quotas, so the daemon runs without that capability.

QUOTA_UID = 1000
QUOTA_LIMIT = 4 * MiB
CAP_SYS_RESOURCE = 24

# <linux/quota.h>: quotactl_fd(2) takes the filesystem by an fd, so tmpfs (no block device) and a
# loop-mounted ext4 are set up alike, and no quota-tools package is needed.
SYS_QUOTACTL_FD = {"x86_64": 443, "aarch64": 443}.get(os.uname().machine, 443)
Q_SETQUOTA = 0x800008
USRQUOTA = 0
QIF_BLIMITS = 1


class IfDqblk(ctypes.Structure):
    _fields_ = [("dqb_bhardlimit", ctypes.c_uint64), ("dqb_bsoftlimit", ctypes.c_uint64),
                ("dqb_curspace", ctypes.c_uint64), ("dqb_ihardlimit", ctypes.c_uint64),
                ("dqb_isoftlimit", ctypes.c_uint64), ("dqb_curinodes", ctypes.c_uint64),
                ("dqb_btime", ctypes.c_uint64), ("dqb_itime", ctypes.c_uint64), ("dqb_valid", ctypes.c_uint32)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def set_user_block_limit(fs, uid, nbytes):
    """Hard and soft block limit of `uid` on the filesystem mounted at `fs` (limits in KiB)."""
    q = IfDqblk(dqb_bhardlimit=nbytes // 1024, dqb_bsoftlimit=nbytes // 1024, dqb_valid=QIF_BLIMITS)
    fd = os.open(fs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syscall(SYS_QUOTACTL_FD, fd, (Q_SETQUOTA << 8) | USRQUOTA, uid, ctypes.byref(q)) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"quotactl_fd(Q_SETQUOTA, uid {uid}) on {fs}: {os.strerror(e)}")
    finally:
        os.close(fd)


class QuotaUnavailable(Exception):
    pass


class TmpfsQuota:
    """A tmpfs mounted with -o quota (needs CONFIG_TMPFS_QUOTA)."""

    name = "tmpfs -o quota"

    def __init__(self, root):
        self.fs = os.path.join(root, "quota-tmpfs")
        try:
            hl.mount_tmpfs(self.fs, "size=64m,quota")
        except ov.MountError as e:
            why = _kernel_says("tmpfs: ") or hl.first_line(str(e)).split(": ")[-1]
            raise QuotaUnavailable(f"no tmpfs quota support (CONFIG_TMPFS_QUOTA): {why}")

    def set_limit(self, nbytes):
        set_user_block_limit(self.fs, QUOTA_UID, nbytes)

    def close(self):
        hl.umount_quiet(self.fs)


def _kernel_says(needle):
    """The last kernel log line containing `needle`, if the log is readable."""
    r = ml.run_quiet(["dmesg"])
    lines = [l for l in r.stdout.splitlines() if needle in l] if r.returncode == 0 else []
    return lines[-1].split("] ", 1)[-1] if lines else ""


class Ext4Quota:
    """An ext4 image with the quota feature (hidden quota inodes), loop-mounted with usrquota so
    that limits are enforced, not only counted. Needs CONFIG_QUOTA and CONFIG_QFMT_V2."""

    name = "ext4 image, -O quota, mounted -o usrquota"

    def __init__(self, root):
        for tool in ("mkfs.ext4", "losetup"):
            if not ml.have(tool):
                raise QuotaUnavailable(f"{tool} is missing")
        self.image = os.path.join(root, "quota-ext4.img")
        self.fs = os.path.join(root, "quota-ext4")
        os.makedirs(self.fs)
        with open(self.image, "wb") as f:
            f.truncate(64 * MiB)
        r = ml.run_quiet(["mkfs.ext4", "-q", "-O", "quota", "-E", "quotatype=usrquota:grpquota", self.image])
        if r.returncode != 0:
            raise QuotaUnavailable(f"mkfs.ext4 -O quota failed: {hl.first_line(r.stderr)}")
        r = ml.run_quiet(["mount", "-t", "ext4", "-o", "loop,usrquota,grpquota", self.image, self.fs])
        if r.returncode != 0:
            self.close()
            why = _kernel_says("EXT4-fs") or hl.first_line(r.stderr)
            raise QuotaUnavailable(f"a loop-mounted ext4 with quotas does not mount: {why}")

    def set_limit(self, nbytes):
        set_user_block_limit(self.fs, QUOTA_UID, nbytes)

    def close(self):
        _close_loop(self.fs, self.image)


def _close_loop(mnt, image):
    hl.umount_quiet(mnt)
    # mount -o loop sets autoclear, so the device goes with the umount; make sure of it.
    r = ml.run_quiet(["losetup", "-j", image])
    for line in r.stdout.splitlines():
        ml.run_quiet(["losetup", "-d", line.split(":", 1)[0]])
    try:
        os.unlink(image)
    except FileNotFoundError:
        pass


class BtrfsQgroup:
    """A btrfs image, loop-mounted, with upper+work in a subvolume whose qgroup has a limit: not a
    user quota, but the kernel's other EDQUOT, for kernels with no quota format (CONFIG_QFMT_V2
    off). Needs btrfs-progs."""

    name = "btrfs image, qgroup limit on a subvolume"

    def __init__(self, root):
        for tool in ("mkfs.btrfs", "btrfs", "losetup"):
            if not ml.have(tool):
                raise QuotaUnavailable(f"{tool} is missing")
        self.image = os.path.join(root, "quota-btrfs.img")
        self.mnt = os.path.join(root, "quota-btrfs")
        self.fs = os.path.join(self.mnt, "layers")
        os.makedirs(self.mnt)
        with open(self.image, "wb") as f:
            f.truncate(256 * MiB)  # sparse; mkfs.btrfs wants more than 110 MiB
        r = ml.run_quiet(["mkfs.btrfs", "-q", self.image])
        if r.returncode != 0:
            raise QuotaUnavailable(f"mkfs.btrfs failed: {hl.first_line(r.stderr)}")
        r = ml.run_quiet(["mount", "-t", "btrfs", "-o", "loop", self.image, self.mnt])
        if r.returncode != 0:
            self.close()
            raise QuotaUnavailable(f"a loop-mounted btrfs does not mount: {_kernel_says('BTRFS') or hl.first_line(r.stderr)}")
        for cmd in (["btrfs", "quota", "enable", self.mnt], ["btrfs", "subvolume", "create", self.fs]):
            r = ml.run_quiet(cmd)
            if r.returncode != 0:
                self.close()
                raise QuotaUnavailable(f"{' '.join(cmd[:3])} failed: {hl.first_line(r.stderr)}")

    def set_limit(self, nbytes):
        subprocess.run(["btrfs", "qgroup", "limit", str(nbytes), self.fs], check=True)

    def close(self):
        _close_loop(self.mnt, self.image)


def quota_fs(root):
    """The first way this machine offers to enforce a user block quota, or QuotaUnavailable
    naming why each one failed."""
    reasons = []
    for kind in (TmpfsQuota, Ext4Quota, BtrfsQgroup):
        try:
            return kind(root)
        except QuotaUnavailable as e:
            reasons.append(f"{kind.name}: {e}")
    raise QuotaUnavailable("; ".join(reasons))


def cap_eff(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return None


def section_edquot(s):
    if not ml.have("setpriv"):
        s.note("EDQUOT not tested: setpriv (to drop CAP_SYS_RESOURCE, which ignores quotas) is missing")
        return
    L = ml.Layout(ml.scratch("enospc-e"), n_lowers=1)
    os.chmod(L.root, 0o711)  # the quota's user must reach its probe directory below
    try:
        q = quota_fs(L.root)
    except QuotaUnavailable as e:
        s.note(f"EDQUOT not tested: no filesystem here enforces user quotas: {e}")
        return
    try:
        edquot_checks(s, L, q)
    finally:
        try:
            L.umount()
        finally:
            q.close()


def edquot_checks(s, L, q):
    print(f"  quota on: {q.name}", flush=True)
    L.upper = os.path.join(q.fs, "upper")
    L.work = os.path.join(q.fs, "work")
    os.makedirs(L.upper)
    os.makedirs(L.work)
    q.set_limit(QUOTA_LIMIT)
    # The limit is really enforced: the user itself cannot write past it.
    probe_dir = os.path.join(q.fs, "probe")
    os.makedirs(probe_dir)
    os.chown(probe_dir, QUOTA_UID, QUOTA_UID)
    outcome, _ = hl.call(hl.as_user, QUOTA_UID, QUOTA_UID, hl.write_file, os.path.join(probe_dir, "f"),
                         b"\0" * (2 * QUOTA_LIMIT))
    s.require(outcome == "EDQUOT", f"{q.name} enforces a {QUOTA_LIMIT >> 20} MiB quota "
              f"(uid {QUOTA_UID} writing {2 * QUOTA_LIMIT >> 20} MiB gets EDQUOT)", f"got {outcome}")
    hl.clear_dir(probe_dir)
    os.rmdir(probe_dir)
    os.sync()

    big = L.l(0, "big")
    write_random(big, 2 * QUOTA_LIMIT, 3)
    os.chown(big, QUOTA_UID, QUOTA_UID)
    os.chmod(big, 0o640)
    os.setxattr(big, "user.keep", b"1")
    lower_sha = hl.sha_file(big)
    free_before = os.statvfs(q.fs).f_bavail * os.statvfs(q.fs).f_frsize
    # setpriv execs strata-fs with CAP_SYS_RESOURCE gone from every set (root keeps the rest).
    wrapper = os.path.join(L.root, "strata-fs-nocap")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec setpriv --inh-caps=-sys_resource --bounding-set=-sys_resource "
                f"{ml.strata_fs()} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    L.mount = ov.mount_fuse(wrapper, L.lowers, L.upper, L.work, L.mnt)
    caps = {p: cap_eff(p) for p in L.mount.pids}
    s.require(caps and all(c is not None and not c & (1 << CAP_SYS_RESOURCE) for c in caps.values()),
              "the daemon runs without CAP_SYS_RESOURCE", f"CapEff by pid: {caps}")

    size = 2 * QUOTA_LIMIT
    what = f"append to the {size >> 20} MiB lower file of uid {QUOTA_UID} under a {QUOTA_LIMIT >> 20} MiB quota"
    outcome, _ = hl.call(hl.append_file, L.m("big"), b"X")
    s.expect_eq(outcome, "EDQUOT", what)
    s.expect(not os.path.lexists(L.u("big")), "no partial copy in the upper", repr(os.listdir(L.upper)))
    s.expect_eq(hl.work_leftovers(L.work), [], "nothing left in workdir/work")
    os.sync()
    free_after = os.statvfs(q.fs).f_bavail * os.statvfs(q.fs).f_frsize
    s.expect(free_after >= free_before - 64 * 1024, "the space is given back",
             f"free {free_after} < {free_before} before")
    s.expect_eq(hl.sha_file(L.m("big")), lower_sha, "the merged file is still the lower one")
    st = os.lstat(L.m("big"))
    s.expect_eq((st.st_size, stat.S_IMODE(st.st_mode), st.st_uid), (size, 0o640, QUOTA_UID), "its metadata")
    s.expect_eq(ml.layer_of(L.m("big")), L.l(0), "served from the lower layer")
    s.expect_eq(hl.call(hl.write_file, L.m("small"), b"fits\n")[0], "ok", "a small new file of root still fits")

    q.set_limit(64 * MiB)
    outcome, _ = hl.call(hl.append_file, L.m("big"), b"X")
    s.expect_eq(outcome, "ok", "the same append once the quota is raised")
    s.expect_eq(os.lstat(L.m("big")).st_size, size + 1, "size after the append")
    with open(L.m("big"), "rb") as f:
        f.seek(size - 4)
        tail = f.read()
    with open(big, "rb") as f:
        f.seek(size - 4)
        s.expect_eq(tail, f.read() + b"X", "the tail of the appended file")
    s.expect_eq(os.getxattr(L.m("big"), "user.keep"), b"1", "xattr kept by the copy-up")
    L.umount()
    s.expect_eq(hl.sha_file(big), lower_sha, "lower untouched")
    st = os.lstat(L.u("big"))
    s.expect_eq((st.st_size, st.st_uid), (size + 1, QUOTA_UID), "the upper copy after umount, charged to its owner")


def main():
    s = ml.start("hardening: out of space during copy-up")
    s.run("a: 32 MiB append into an 8 MiB upper (passthrough)", section_big_append, s, True)
    s.run("a: 32 MiB append into an 8 MiB upper (passthrough=off)", section_big_append, s, False)
    s.run("b: tree copy-up running out of space midway", section_tree, s)
    s.run("c: plain writes fill the upper", section_plain_write, s)
    s.run("d: out of inodes: whiteouts and mkdir", section_inodes, s)
    s.run("e: EDQUOT from a quota on upper+work", section_edquot, s)
    s.finish()


if __name__ == "__main__":
    main()

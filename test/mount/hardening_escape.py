#!/usr/bin/env python3
"""No way out of the layers (issue 7): hostile layers must never make strata-fs read, write,
chmod, chown or delete anything outside them.

A "host" directory with sentinel files lives beside the layers (outside them); its exact state
(bytes, mode, owner, nlink, mtime, ctime and atime, xattrs, inode numbers) is recorded first and
must be identical at the end of every section. Atimes are set 10 days back, so that even a read
of a sentinel by the daemon would show (relatime updates an atime older than a day). Sentinel
contents carry a random token that must never show up in the upper layer or the merged view.

The layers hold symlinks to /, to the host dir and to its files (absolute), ../../.. chains,
relative links climbing out of the layer, redirect xattrs "/..", "../x", "/a/../../..",
"/hostlink/dir" (through a symlink), an upper entry that is a symlink where the lower has a
directory, and staging leftovers in workdir/work that are symlinks into the host.

Operations run two ways:
  - from outside, never following a symlink ourselves (lchown, utime, trusted xattrs, renames,
    unlinks of the hostile links, O_NOFOLLOW opens): whatever the kernel asks of the daemon
    must stay inside the layers;
  - chrooted in the mount, as a container would: every symlink then resolves inside the merged
    tree (the host dir's absolute path exists inside the lower as a decoy), and writes, appends,
    chmod, chown, truncate, setxattr, mkdir inside symlinked dirs, renames and rm -rf follow them
    freely. The decoy may change; the host must not.
TOCTOU: between a lookup and a copy-up, a lower directory (and a lower file, an upper directory,
workdir/work) is replaced on disk by a symlink into the host while the mount is live; the copy-up
that follows must not reach the host. Recursion: a mountpoint inside one of its layers, a layer
inside the mountpoint, and a layer that is another strata-fs mount whose mountpoint lies inside
the first one's lower are refused with one line naming the path (a missed refusal is caught by
a timeout, not a hang).

Safety net: the whole test runs on a tmpfs in a private mount namespace whose / is remounted
read-only, so a daemon that does escape cannot damage this machine.
"""

import errno
import os
import random
import shutil
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "hardening"))
import hardlib as hl  # noqa: E402
from hardlib import ml, ov  # noqa: E402

TOKEN = ("HOST-SENTINEL-%08x" % random.getrandbits(32)).encode()
TEN_DAYS = 10 * 86400 * 10**9


def make_host(root):
    """The host dir with sentinels, and a file beside the layers. Returns the host path."""
    host = os.path.join(root, "host")
    os.makedirs(os.path.join(host, "dir/sub"))
    os.makedirs(os.path.join(host, "emptydir"))
    files = {
        "passwd": (0o644, 0, 0), "shadow": (0o600, 0, 42), "dir/secret": (0o640, 1000, 1000),
        "dir/file": (0o644, 0, 0), "dir/sub/deep": (0o600, 0, 0), "xattrfile": (0o644, 0, 0),
        "setuid": (0o4755, 0, 0), "hardlinked": (0o644, 0, 0),
    }
    for rel, (mode, uid, gid) in files.items():
        p = os.path.join(host, rel)
        with open(p, "wb") as f:
            f.write(TOKEN + b" " + rel.encode() + b"\n" if rel != "hardlinked" else b"shared inode\n")
        os.chown(p, uid, gid)
        os.chmod(p, mode)
    os.setxattr(os.path.join(host, "xattrfile"), "user.host", b"keep me")
    os.setxattr(os.path.join(host, "xattrfile"), "trusted.host", b"keep me too")
    os.symlink("passwd", os.path.join(host, "link_in_host"))
    with open(os.path.join(root, "outside"), "wb") as f:
        f.write(TOKEN + b" outside\n")
    age_atimes(root)
    return host


def age_atimes(root):
    old = time.time_ns() - TEN_DAYS
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames + [""]:
            p = os.path.join(dirpath, n) if n else dirpath
            st = os.lstat(p)
            os.utime(p, ns=(old, min(st.st_mtime_ns, old)), follow_symlinks=False)


class Host:
    """The state of everything outside the layers that a daemon could reach."""

    def __init__(self, root, host):
        self.root, self.host = root, host
        self.snap = hl.HostSnapshot(host)
        self.outside = hl.HostSnapshot(os.path.join(root, "outside"))

    def diff(self):
        lines = self.snap.diff() + [f"outside: {d}" for d in self.outside.diff()]
        # The hard-linked sentinel shares its inode with a lower file: reading the layer (a
        # copy-up) may update its atime. Everything else about it must stay.
        return [l for l in lines if not l.startswith("hardlinked: atime")]


def relpath_to(target, start):
    return os.path.relpath(target, start)


def build_hostile(L, host, root):
    """Hostile lowers (and an upper that holds a symlink where a directory is expected)."""
    low0, low1 = L.lowers
    # The host dir's absolute path exists inside the bottom layer as a decoy, so that in a
    # chroot at the mount the absolute links land on the decoy.
    decoy = low1 + host
    os.makedirs(os.path.join(decoy, "dir/sub"))
    for rel in ("passwd", "shadow", "dir/secret", "dir/file", "dir/sub/deep", "xattrfile", "setuid"):
        with open(os.path.join(decoy, rel), "wb") as f:
            f.write(b"decoy " + rel.encode() + b"\n")
    links = {
        "rootlink": "/", "hostlink": host, "passwd": os.path.join(host, "passwd"),
        "shadowlink": os.path.join(host, "shadow"), "dirlink_host": os.path.join(host, "dir"),
        "dotdot": "../../../../../../../../..", "outside_abs": os.path.join(root, "outside"),
        "a/b/c/up": "../../../../outside", "a/b/c/hostrel": relpath_to(host, os.path.join(low1, "a/b/c")),
        "a/b/c/hostrel_dir": relpath_to(os.path.join(host, "dir"), os.path.join(low1, "a/b/c")),
        "chain1": "chain2/../..", "chain2": "dotdot/../..", "selfloop": "selfloop",
        "hostlink_in_host": os.path.join(host, "link_in_host"),
    }
    for rel, target in links.items():
        p = os.path.join(low1, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.symlink(target, p)
    # A symlink in the upper lower over a real dir in the bottom one.
    os.makedirs(os.path.join(low1, "shadowed_dir"))
    with open(os.path.join(low1, "shadowed_dir/file"), "wb") as f:
        f.write(b"in the bottom layer\n")
    os.symlink(os.path.join(host, "dir"), os.path.join(low0, "shadowed_dir"))
    # A hard link to a host file inside the bottom layer (same filesystem).
    os.link(os.path.join(host, "hardlinked"), os.path.join(low1, "hl"))
    # Redirects: hostile values on dirs of the upper lower (they steer the search in low1) and
    # of the upper.
    os.makedirs(os.path.join(low1, "x"))
    with open(os.path.join(low1, "x/in_x"), "wb") as f:
        f.write(b"x\n")
    redirects = {"r1": "/..", "r2": "../x", "r3": "/a/../../..", "r4": "/hostlink", "r5": "/hostlink/dir",
                 "r6": "/dotdot/dotdot", "r7": "/a/b/c/hostrel", "r8": "..", "r9": "/" + host.lstrip("/")}
    for name, value in redirects.items():
        d = os.path.join(low0, name)
        os.makedirs(d)
        with open(os.path.join(d, "own"), "wb") as f:
            f.write(b"own\n")
        os.setxattr(d, "trusted.overlay.redirect", value.encode())
    for name, value in (("ur1", "/.."), ("ur2", "/hostlink"), ("ur3", "/a/../../.."), ("ur4", "/dirlink_host")):
        d = os.path.join(L.upper, name)
        os.makedirs(d)
        os.setxattr(d, "trusted.overlay.redirect", value.encode())
    # Upper: a symlink where the lower has a directory with content.
    os.makedirs(os.path.join(low1, "usym"))
    with open(os.path.join(low1, "usym/lowerfile"), "wb") as f:
        f.write(b"lower\n")
    os.symlink(os.path.join(host, "dir"), os.path.join(L.upper, "usym"))
    # Plain content for the operations.
    os.makedirs(os.path.join(low1, "plain/sub"))
    with open(os.path.join(low1, "plain/file"), "wb") as f:
        f.write(b"plain\n")
    return list(links) + ["shadowed_dir", "usym"], list(redirects) + ["ur1", "ur2", "ur3", "ur4"]


def token_leaks(*roots):
    """Files under the roots (not following symlinks) whose content carries the host token."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in filenames:
                p = os.path.join(dirpath, n)
                try:
                    if stat.S_ISREG(os.lstat(p).st_mode) and TOKEN in hl.read_file(p):
                        found.append(os.path.relpath(p, root))
                except OSError:
                    pass
    return found


BASE = None  # a tmpfs made before / turns read-only; every section works in a subdir of it


def fresh(s, name):
    root = os.path.join(BASE, name)
    os.makedirs(root)
    return root


# ------------------------------------------------------------------------------------------------
# sections


def section_outside_ops(s):
    """Operations from outside the mount that never follow a symlink themselves."""
    root = fresh(s, "outside")
    L = ml.Layout(os.path.join(root, "layers"), n_lowers=2)
    host = make_host(root)
    names, redirects = build_hostile(L, host, root)
    pristine_upper = os.path.join(root, "pristine-upper")
    subprocess.run(["cp", "-a", L.upper, pristine_upper], check=True)
    lowers_before = [hl.tree_state(d) for d in L.lowers]
    age_atimes(host)
    H = Host(root, host)
    results = {}
    for opts in ([], ["passthrough=off"]):
        hl.clear_dir(L.upper)
        hl.clear_dir(L.work)
        subprocess.run(["cp", "-a", pristine_upper + "/.", L.upper], check=True)
        L.mount_strata(opts)
        m = L.mnt
        # Listing the whole merged tree, reading every regular file (no following): nothing
        # may carry the host's token.
        s.expect_eq(token_leaks(m), [], f"[{opts}] no host content in the merged view")
        # r9 redirects to the decoy's path inside the bottom layer: legitimately the decoy.
        for r in redirects:
            listing = hl.call(os.listdir, os.path.join(m, r))
            results[f"listdir {r}"] = listing
            s.expect(r == "r9" or listing[0] != "ok" or
                     not (set(listing[1]) & {"passwd", "shadow", "secret", "dir", "lower0", "lower1", "host", "outside"}),
                     f"redirect dir {r} does not list outside its layer", repr(listing))
        for n in names:
            p = os.path.join(m, n)
            results[f"readlink {n}"] = hl.call(os.readlink, p)
            results[f"open nofollow {n}"] = hl.call(os.open, p, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            if results[f"open nofollow {n}"][0] == "ok":
                os.close(results[f"open nofollow {n}"][1])
            results[f"lchown {n}"] = hl.call(os.chown, p, 4321, 4321, follow_symlinks=False)
            results[f"lutime {n}"] = hl.call(os.utime, p, ns=(1, 2), follow_symlinks=False)
            results[f"lsetxattr {n}"] = hl.call(os.setxattr, p, "trusted.evil", b"1", follow_symlinks=False)
            results[f"llistxattr {n}"] = hl.call(os.listxattr, p, follow_symlinks=False)
            results[f"lgetxattr {n}"] = hl.call(os.getxattr, p, "user.host", follow_symlinks=False)
        # Writes into redirect dirs and the hard link; renames and deletions of everything.
        for r in redirects:
            results[f"create in {r}"] = hl.call(hl.write_file, os.path.join(m, r, "new"), b"new\n")
            results[f"rename {r}"] = hl.call(os.rename, os.path.join(m, r), os.path.join(m, r + ".moved"))
        results["chmod hl"] = hl.call(os.chmod, os.path.join(m, "hl"), 0o777)
        results["append hl"] = hl.call(hl.append_file, os.path.join(m, "hl"), b"appended\n")
        results["truncate hl"] = hl.call(os.truncate, os.path.join(m, "hl"), 1)
        for n in names:
            p = os.path.join(m, n)
            results[f"rename {n}"] = hl.call(os.rename, p, p + ".moved")
            results[f"unlink {n}"] = hl.call(os.unlink, p + ".moved")
        results["rm -rf all"] = hl.call(subprocess.run, ["rm", "-rf", "--one-file-system", m + "/a", m + "/plain",
                                                         m + "/x"], check=True)
        L.umount()
        s.expect_eq(H.diff(), [], f"[{opts}] host sentinels untouched")
        s.expect_eq([hl.tree_state(d) for d in L.lowers] == lowers_before, True, f"[{opts}] lower layers untouched")
    s.expect_eq(H.diff(), [], "host sentinels untouched")
    s.expect_eq(token_leaks(L.upper, L.work), [], "no host content in the upper or the workdir")
    s.expect(not os.path.exists(os.path.join(host, "dir/new")), "nothing created in the host")
    daemon_errs = [k for k, v in results.items() if v[0] in ("EIO", "ENOTCONN", "ESTALE")]
    s.expect_eq(daemon_errs, [], "no EIO/ENOTCONN/ESTALE from hostile entries",
                repr({k: results[k] for k in daemon_errs}))


def chroot_ops(host):
    """Runs chrooted at the mount: every link resolves inside the merged tree."""
    out = {}

    def do(what, fn, *args, **kw):
        try:
            fn(*args, **kw)
            out[what] = "ok"
        except OSError as e:
            out[what] = errno.errorcode.get(e.errno, str(e.errno))

    def append(path, data):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def create(path, data):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def read(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.read(fd, 1 << 20)
        finally:
            os.close(fd)

    do("append /passwd", append, "/passwd", b"evil\n")
    do("append /shadowlink", append, "/shadowlink", b"evil\n")
    do("append /outside_abs", append, "/outside_abs", b"evil\n")
    do("create /a/b/c/up", create, "/a/b/c/up", b"evil\n")
    do("create /a/b/c/hostrel/new", create, "/a/b/c/hostrel/new", b"evil\n")
    do("append /a/b/c/hostrel_dir/secret", append, "/a/b/c/hostrel_dir/secret", b"evil\n")
    do("chmod /hostlink/shadow", os.chmod, "/hostlink/shadow", 0o777)
    do("chown /hostlink/passwd", os.chown, "/hostlink/passwd", 1234, 1234)
    do("truncate /dirlink_host/secret", os.truncate, "/dirlink_host/secret", 0)
    do("truncate /rootlink/" + host + "/dir/file", os.truncate, "/rootlink/" + host.lstrip("/") + "/dir/file", 1)
    do("setxattr /hostlink/xattrfile", os.setxattr, "/hostlink/xattrfile", "user.evil", b"1")
    do("removexattr /hostlink/xattrfile", os.removexattr, "/hostlink/xattrfile", "user.host")
    do("setxattr trusted /hostlink/setuid", os.setxattr, "/hostlink/setuid", "trusted.evil", b"1")
    do("utime /hostlink_in_host", os.utime, "/hostlink_in_host", ns=(5, 5))
    do("mkdir /hostlink/newdir", os.mkdir, "/hostlink/newdir")
    do("mkdir /dirlink_host/new", os.mkdir, "/dirlink_host/new")
    do("mkdir /shadowed_dir/new", os.mkdir, "/shadowed_dir/new")
    do("mkdir /usym/new", os.mkdir, "/usym/new")
    do("create /usym/newfile", create, "/usym/newfile", b"x")
    do("mkdir /dotdot/dotdot_new", os.mkdir, "/dotdot/dotdot_new")
    do("create /chain1/chain_file", create, "/chain1/chain_file", b"x")
    do("rename /hostlink/passwd", os.rename, "/hostlink/passwd", "/stolen")
    do("rename /dirlink_host/sub", os.rename, "/dirlink_host/sub", "/stolen_dir")
    do("link /hostlink/shadow", os.link, "/hostlink/shadow", "/hardlink_to_decoy")
    do("symlink in /hostlink", os.symlink, "/", "/hostlink/rootlink2")
    for r in ("r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "ur1", "ur2", "ur3", "ur4"):
        do(f"create /{r}/f", create, f"/{r}/f", b"x")
        do(f"rename /{r}", os.rename, f"/{r}", f"/{r}.moved")
        do(f"rm -rf /{r}.moved", shutil.rmtree, f"/{r}.moved")
    do("chmod /hl", os.chmod, "/hl", 0o600)
    do("append /hl", append, "/hl", b"appended\n")
    do("read /hostlink/dir/sub/deep", read, "/hostlink/dir/sub/deep")
    do("rm -rf /hostlink/", shutil.rmtree, "/hostlink/")
    do("rm -rf /dirlink_host/", shutil.rmtree, "/dirlink_host/")
    do("rm -rf /a", shutil.rmtree, "/a")
    do("unlink /selfloop", os.unlink, "/selfloop")
    # Last: everything, through the link to / (inside the chroot that is the whole mount).
    def rm_all():
        for n in os.listdir("/rootlink/"):
            p = "/rootlink/" + n
            if os.path.islink(p) or not os.path.isdir(p):
                os.unlink(p)
            else:
                shutil.rmtree(p)
    do("rm -rf /rootlink/*", rm_all)
    return out


def section_chroot_ops(s):
    root = fresh(s, "chroot")
    L = ml.Layout(os.path.join(root, "layers"), n_lowers=2)
    host = make_host(root)
    build_hostile(L, host, root)
    pristine_upper = os.path.join(root, "pristine-upper")
    subprocess.run(["cp", "-a", L.upper, pristine_upper], check=True)
    lowers_before = [hl.tree_state(d) for d in L.lowers]
    age_atimes(host)
    H = Host(root, host)
    for opts in ([], ["passthrough=off"]):
        hl.clear_dir(L.upper)
        hl.clear_dir(L.work)
        subprocess.run(["cp", "-a", pristine_upper + "/.", L.upper], check=True)
        L.mount_strata(opts)
        results = hl.in_chroot(L.mnt, chroot_ops, host)
        s.expect(L.mount.daemon_alive(), f"[{opts}] daemon alive after the chrooted operations")
        left = os.listdir(L.mnt)
        L.umount()
        tag = "passthrough=off" if opts else "passthrough"
        bad = {k: v for k, v in results.items() if v in ("EIO", "ENOTCONN", "ESTALE", "EBADF")}
        s.expect_eq(bad, {}, f"[{tag}] no daemon-side errors in the chrooted operations")
        s.expect_eq(left, [], f"[{tag}] rm -rf through /rootlink emptied the merged view")
        s.expect_eq(H.diff(), [], f"[{tag}] host sentinels untouched by the chrooted operations")
        s.expect_eq(token_leaks(L.upper, L.work), [], f"[{tag}] no host content in the upper")
        s.expect_eq([hl.tree_state(d) for d in L.lowers] == lowers_before, True, f"[{tag}] lower layers untouched")
        print(f"  [{tag}] results: " + ", ".join(f"{k}={v}" for k, v in results.items() if v != "ok"), flush=True)


def section_toctou(s):
    root = fresh(s, "toctou")
    L = ml.Layout(os.path.join(root, "layers"), n_lowers=2)
    host = make_host(root)
    low = L.lowers[1]
    for d in ("t1", "t2", "t3", "t4"):
        os.makedirs(os.path.join(low, d))
        with open(os.path.join(low, d, "file"), "wb") as f:
            f.write(b"lower content " + d.encode() + b"\n")
    os.makedirs(os.path.join(low, "u1"))
    with open(os.path.join(low, "u1/x"), "wb") as f:
        f.write(b"lower x\n")
    os.makedirs(os.path.join(L.upper, "u1"))
    with open(os.path.join(L.upper, "u1/up"), "wb") as f:
        f.write(b"upper\n")
    age_atimes(host)
    H = Host(root, host)
    for opts in ([], ["passthrough=off"]):
        tag = "passthrough=off" if opts else "passthrough"
        L.mount_strata(opts)
        m = L.mnt
        for d in ("t1", "t2", "t3", "t4", "u1"):
            os.stat(os.path.join(m, d))
        os.stat(os.path.join(m, "t1/file"))
        os.stat(os.path.join(m, "t3/file"))
        os.stat(os.path.join(m, "u1/x"))
        # t1: the lower dir becomes a symlink to the host dir (which has a 'file' too).
        os.rename(os.path.join(low, "t1"), os.path.join(low, "t1.old"))
        os.symlink(os.path.join(host, "dir"), os.path.join(low, "t1"))
        r1 = hl.call(hl.append_file, os.path.join(m, "t1/file"), b"appended\n")
        # t2: same, but the file under it was never looked up before the swap.
        os.rename(os.path.join(low, "t2"), os.path.join(low, "t2.old"))
        os.symlink(os.path.join(host, "dir"), os.path.join(low, "t2"))
        r2 = hl.call(hl.append_file, os.path.join(m, "t2/file"), b"appended\n")
        r2b = hl.call(os.mkdir, os.path.join(m, "t2/newdir"))
        # t3: the lower file becomes a symlink to a host file.
        os.unlink(os.path.join(low, "t3/file"))
        os.symlink(os.path.join(host, "passwd"), os.path.join(low, "t3/file"))
        r3 = hl.call(hl.append_file, os.path.join(m, "t3/file"), b"appended\n")
        r3b = hl.call(os.chmod, os.path.join(m, "t3/file"), 0o600)
        # u1: the upper dir of a merged dir becomes a symlink to the host dir.
        os.rename(os.path.join(L.upper, "u1"), os.path.join(L.upper, "u1.old"))
        os.symlink(os.path.join(host, "dir"), os.path.join(L.upper, "u1"))
        r4 = [hl.call(hl.write_file, os.path.join(m, "u1/newfile"), b"new\n"),
              hl.call(os.unlink, os.path.join(m, "u1/x")), hl.call(os.mkdir, os.path.join(m, "u1/nd")),
              hl.call(os.rename, os.path.join(m, "u1/up"), os.path.join(m, "u1/up2"))]
        # workdir/work becomes a symlink to the host dir: copy-ups stage elsewhere or fail.
        os.rename(os.path.join(L.work, "work"), os.path.join(L.work, "work.old"))
        os.symlink(os.path.join(host, "dir"), os.path.join(L.work, "work"))
        r5 = hl.call(hl.append_file, os.path.join(m, "t4/file"), b"appended\n")
        r6 = hl.call(os.unlink, os.path.join(m, "t4/file"))
        L.umount()
        print(f"  [{tag}] t1 {r1[0]}, t2 {r2[0]}/{r2b[0]}, t3 {r3[0]}/{r3b[0]}, u1 {[r[0] for r in r4]}, "
              f"work {r5[0]}/{r6[0]}", flush=True)
        s.expect_eq(H.diff(), [], f"[{tag}] host untouched by copy-ups racing a lower dir -> symlink swap")
        s.expect_eq(token_leaks(L.upper, L.work), [], f"[{tag}] no host content copied into the upper")
        s.expect(not os.path.lexists(os.path.join(host, "dir/newfile")) and
                 not os.path.lexists(os.path.join(host, "dir/nd")), f"[{tag}] nothing created in the host")
        # Undo the swaps for the next round (fresh upper/work).
        for d in ("t1", "t2"):
            os.unlink(os.path.join(low, d))
            os.rename(os.path.join(low, d + ".old"), os.path.join(low, d))
        os.unlink(os.path.join(low, "t3/file"))
        with open(os.path.join(low, "t3/file"), "wb") as f:
            f.write(b"lower content t3\n")
        os.unlink(os.path.join(L.work, "work"))
        hl.clear_dir(L.upper)
        hl.clear_dir(L.work)
        os.makedirs(os.path.join(L.upper, "u1"))
        with open(os.path.join(L.upper, "u1/up"), "wb") as f:
            f.write(b"upper\n")


def section_hostile_workdir(s):
    """workdir/work, or entries in it, are symlinks into the host: the start-up cleanup of the
    workdir must not follow them (it would empty the host dir)."""
    root = fresh(s, "workdir")
    host = make_host(root)
    L = ml.Layout(os.path.join(root, "layers"), n_lowers=1)
    with open(os.path.join(L.lowers[0], "f"), "wb") as f:
        f.write(b"f\n")
    H = Host(root, host)
    # 1: leftovers in workdir/work that point into the host.
    w = os.path.join(L.work, "work")
    os.makedirs(os.path.join(w, "#copyup-1-1"))
    os.symlink(os.path.join(host, "dir"), os.path.join(w, "#copyup-1-1/inner"))
    os.symlink(os.path.join(host, "dir"), os.path.join(w, "#rmdir-1-2"))
    os.symlink(host, os.path.join(w, "leftover"))
    os.makedirs(os.path.join(w, "deep/er"))
    os.symlink(os.path.join(host, "passwd"), os.path.join(w, "deep/er/passwd"))
    L.mount_strata()
    s.expect_eq(hl.work_leftovers(L.work), [], "leftover symlinks in workdir/work removed at mount")
    hl.append_file(L.m("f"), b"x")
    L.umount()
    s.expect_eq(H.diff(), [], "host untouched by the cleanup of symlink leftovers")
    # 2: workdir/work itself is a symlink to the host dir.
    shutil.rmtree(w)
    os.symlink(host, w)
    try:
        m = L.mount_strata()
        mounted = True
    except ov.MountError as e:
        mounted = False
        msg = str(e)
    if mounted:
        hl.call(hl.append_file, L.m("f"), b"y")
        L.umount()
        s.note("workdir/work as a symlink: the mount was accepted (the host stayed intact: see below)")
    else:
        s.note(f"workdir/work as a symlink: refused: {msg.splitlines()[-1] if msg else ''}")
    s.expect_eq(H.diff(), [], "host untouched when workdir/work is a symlink to it")
    shutil.rmtree(os.path.join(root, "layers"))
    hostile_shared_whiteout(s, root, host, H)


def hostile_shared_whiteout(s, root, host, H):
    """The daemon may keep a whiteout inode of its own in the workdir and hard-link it for every
    whiteout (as the kernel shares one). If that entry is something else when the mount starts
    (a hard link to a host file, a symlink into the host, a plain file), linking it would put host
    data into the upper and change the host file: it must be checked or made afresh."""
    L = ml.Layout(os.path.join(root, "learn"), n_lowers=1)
    with open(L.l(0, "f"), "wb") as f:
        f.write(b"f\n")
    L.mount_strata()
    os.unlink(L.m("f"))
    L.umount()
    shared = [n for n in os.listdir(L.work) if n != "work" and hl.is_whiteout(os.path.join(L.work, n))]
    if not shared:
        s.note("no shared whiteout inode in the workdir: the hostile shared-whiteout cases do not apply")
        return
    name = shared[0]
    for i in range(2):
        with open(os.path.join(host, f"wo_target{i}"), "wb") as f:
            f.write(TOKEN + f" wo_target{i}\n".encode())
    age_atimes(host)
    variants = {
        "a hard link to a host file": lambda p: os.link(os.path.join(host, "wo_target0"), p),
        "a symlink to a host file": lambda p: os.symlink(os.path.join(host, "wo_target1"), p),
        "a regular file": lambda p: open(p, "wb").write(b"not a whiteout\n"),
        "a directory": lambda p: os.makedirs(os.path.join(p, "inner")),
    }
    for i, (what, plant) in enumerate(variants.items()):
        L = ml.Layout(os.path.join(root, f"shared{i}"), n_lowers=1)
        for n in ("g", "d/x", "d/y"):
            os.makedirs(os.path.dirname(L.l(0, n)), exist_ok=True)
            with open(L.l(0, n), "wb") as f:
                f.write(b"lower " + n.encode() + b"\n")
        plant(os.path.join(L.work, name))
        H = Host(root, host)  # each variant on its own: an earlier one may have changed the host
        try:
            L.mount_strata()
        except ov.MountError as e:
            s.note(f"workdir/{name} is {what}: mount refused: {hl.first_line(str(e).split(chr(10), 1)[-1])}")
            continue
        rm = [hl.call(os.unlink, L.m("g"))[0], hl.call(shutil.rmtree, L.m("d"))[0]]
        visible = [n for n in ("g", "d") if os.path.lexists(L.m(n))]
        L.umount()
        s.expect_eq(rm, ["ok", "ok"], f"workdir/{name} is {what}: rm and rm -rf of lower entries work")
        s.expect_eq(visible, [], f"workdir/{name} is {what}: the removed entries are gone from the merged view")
        not_whiteouts = [n for n in ("g", "d") if os.path.lexists(L.u(n)) and not hl.is_whiteout(L.u(n))]
        s.expect_eq(not_whiteouts, [], f"workdir/{name} is {what}: the upper holds real whiteouts (0/0 char devices)",
                    "; ".join(f"{n}: {ov._typechar(os.lstat(L.u(n)).st_mode)}" for n in not_whiteouts))
        s.expect_eq(token_leaks(L.upper), [], f"workdir/{name} is {what}: no host content in the upper")
        s.expect_eq(H.diff(), [], f"workdir/{name} is {what}: host untouched")


def refuse(s, what, lowers, upper, work, mnt, needle):
    opts = "lowerdir=" + ":".join(lowers) + (f",upperdir={upper},workdir={work}" if upper else "")
    try:
        r = subprocess.run([ml.strata_fs(), "-o", opts, mnt], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        s.expect(False, f"{what}: strata-fs hangs")
        hl.abort_fuse_mount(mnt)
        return
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if r.returncode == 0:
        s.expect(False, f"{what}: accepted (exit 0)")
        if os.path.realpath(mnt) in ov.mount_points():
            hl.abort_fuse_mount(os.path.realpath(mnt))
        return
    if s.expect(len(lines) == 1 and needle in lines[0], f"{what}: refused with one line naming {needle}",
                f"exit {r.returncode}, stderr: {r.stderr!r}"):
        print(f"  {what}: refused: {lines[0]}", flush=True)
    s.expect(os.path.realpath(mnt) not in ov.mount_points(), f"{what}: nothing mounted")


def section_recursion(s):
    root = fresh(s, "recursion")
    L = ml.Layout(os.path.join(root, "layers"), n_lowers=2)
    os.makedirs(L.l(0, "mp/deeper"))
    os.makedirs(L.m("sub"))
    refuse(s, "mountpoint inside a lower", L.lowers, L.upper, L.work, L.l(0, "mp/deeper"), L.l(0, "mp/deeper"))
    refuse(s, "mountpoint = a lower", L.lowers, L.upper, L.work, L.l(1), L.l(1))
    os.makedirs(L.u("mp"))
    refuse(s, "mountpoint inside the upper", L.lowers, L.upper, L.work, L.u("mp"), L.u("mp"))
    os.makedirs(os.path.join(L.work, "work"))
    refuse(s, "mountpoint inside the workdir", L.lowers, L.upper, L.work, os.path.join(L.work, "work"),
           os.path.join(L.work, "work"))
    refuse(s, "a lower inside the mountpoint", [L.lowers[0], L.m("sub")], L.upper, L.work, L.mnt, L.m("sub"))
    os.symlink(L.l(0, "mp"), os.path.join(root, "sneaky"))
    refuse(s, "mountpoint through a symlink into a lower", L.lowers, L.upper, L.work,
           os.path.join(root, "sneaky"), os.path.join(root, "sneaky"))
    # A layer that is another strata-fs mount whose mountpoint is inside this mount's lower:
    # A = strata(lower0, lower1) on mnt; B = strata(lowerdir=mnt) on lower1/inner. A lookup of
    # mnt/inner goes A -> lower1/inner = B -> mnt = A -> ... A hang here is uninterruptible
    # (kill -9 of both daemons does not free it), so the connections are aborted through fusectl.
    if not hl.ensure_fusectl():
        s.note("fusectl cannot be mounted: the stacked-recursion case is not tried (a hang could not be undone)")
        return
    os.makedirs(L.l(1, "inner"))
    before = hl.fuse_connections()
    a = L.mount_strata()
    conn_a = hl.fuse_connections() - before
    b_mnt = L.l(1, "inner")
    before = hl.fuse_connections()
    r = subprocess.run([ml.strata_fs(), "-o", f"lowerdir={L.mnt}", b_mnt], capture_output=True, text=True, timeout=20)
    conn_b = hl.fuse_connections() - before
    hl.abort_at_exit(conn_a | conn_b)  # should the test die while they hang
    if r.returncode != 0:
        s.note(f"strata-fs over a strata-fs whose lower holds the new mountpoint: refused: {r.stderr.strip()}")
        return
    b_pids = ov._pids_mentioning(b_mnt)
    out = os.path.join(root, "probe.out")
    hang, rc = False, None
    try:
        with open(out, "wb") as f:
            probe = subprocess.Popen(["ls", os.path.join(L.mnt, "inner")], stdout=f, stderr=f,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = probe.wait(10)
        except subprocess.TimeoutExpired:
            hang = True
    finally:
        # On every path (also SIGTERM while waiting): a hang is undone before anything else.
        if hang or rc is None:
            hl.abort_connections(conn_a | conn_b)
            rc = probe.wait(20)
        for p in b_pids:
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        hl.abort_fuse_mount(b_mnt, conn_b)
        if hang:
            hl.forget_mount(a)
            for p in a.pids:
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
            hl.abort_fuse_mount(L.mnt, conn_a)
            hl.wait_pids_gone(a.pids + b_pids)
    s.expect(not hang, "a strata-fs mount whose mountpoint lies in the lower of the strata-fs it stacks on: "
             "refused, or at least no hang",
             f"accepted (exit 0); then `ls {L.mnt}/inner` hung > 10 s (uninterruptible; freed by aborting "
             f"FUSE connections {sorted(conn_a | conn_b)}); ls exit {rc}")
    if not hang:
        s.note(f"stacked recursion accepted; ls of the loop: exit {rc}: {ml.read_text(out)[:200]}")
        try:
            L.umount()
        except ov.MountError as e:
            s.expect(False, "first mount unmounts after the recursion attempt", str(e))


def protect_root():
    """/ read-only in this private mount namespace (a safety net); undone at exit."""
    r = subprocess.run(["mount", "-o", "remount,bind,ro", "/"], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"note: cannot remount / read-only in the private namespace ({r.stderr.strip()}): running without the net")
        return

    def restore():
        subprocess.run(["mount", "-o", "remount,bind,rw", "/"], stderr=subprocess.DEVNULL)

    import atexit
    atexit.register(restore)


def main():
    global BASE
    s = ml.start("hardening: no way out of the layers")
    BASE = ml.scratch("escape")
    hl.mount_tmpfs(BASE, "size=512m,mode=0755")
    protect_root()
    s.run("hostile layers, operations that never follow links themselves", section_outside_ops, s)
    s.run("hostile layers, operations chrooted in the mount", section_chroot_ops, s)
    s.run("TOCTOU: layer entries swapped for symlinks into the host while mounted", section_toctou, s)
    s.run("workdir leftovers and workdir/work as symlinks into the host", section_hostile_workdir, s)
    s.run("recursion: mountpoint and layers inside each other", section_recursion, s)
    s.finish()


if __name__ == "__main__":
    main()

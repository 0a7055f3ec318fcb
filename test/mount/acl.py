#!/usr/bin/env python3
"""POSIX ACLs (issue 6's FUSE_POSIX_ACL lever; correctness first), next to the kernel overlay.

Without FUSE_POSIX_ACL the kernel checks only the mode bits on a FUSE mount: an ACL entry that
denies a user let that user in, and one that grants did not. The kernel overlay checks ACLs
through the real inodes. Each section builds the same layers twice, runs the same operations on
the kernel overlay and on strata-fs, and compares errno values, modes and ACLs (getfacl) in the
merged view and in the upper on disk.

  a  ACLs of lower files are enforced: a named user denied, a named user granted, a named group
     denied (a member falls back neither to the owning group nor to other), write granted to a
     named user, a directory closed to a named user, execute through an ACL.
  b  ACL changes through the mount: setfacl copies up and takes effect at once, chmod narrows the
     mask (and the kernel's cached ACL follows: a write the ACL allowed before is refused), setfacl -b and -x remove; the same after a
     remount, from disk.
  c  inheritance: new files, dirs and fifos under a default ACL take it (the umask does not
     apply), in a copied-up parent and over a whiteout (made aside in the workdir), and a user
     the ACL lets in can create there; without a default ACL the umask applies (022, 077, 027).
  d  -o noacl: ACLs are stored but not checked (fuse-overlayfs' option), and the kernel applies
     the umask itself.
  e  a lower layer on a filesystem without xattrs (ramfs): access by mode as before, no errors
     from the ACL lookups the kernel makes.
  f  uidmapping/gidmapping: the ids in named entries are mapped like the owners (strata only); an
     entry for an id outside the mapping is not shown (never as the overflow id), and one cannot
     be set (EINVAL).
  g  setting an access ACL on a setgid file or dir clears the bit when the owner setting it is
     outside the file's group, also as root of a user namespace of its own (CAP_FSETID there is
     not CAP_FSETID over a file whose group it does not map), and keeps it for a member and root.
  h  rootless: with the daemon in a user namespace (unshare -U -r) ACLs can be set, read and
     inherited (without FUSE_POSIX_ACL the kernel refuses them on such mounts: EOPNOTSUPP).
  i  a workdir made under a default ACL passes nothing on: copy-ups are built there (the kernel
     strips the work dir's ACLs at mount, and so does strata-fs).
"""

import json
import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "hardening"))
import hardlib as hl  # noqa: E402
from hardlib import ml  # noqa: E402

ALICE, BOB, CAROL = 1000, 2000, 2500  # CAROL is in TEAM
TEAM = 3000


def setfacl(*args):
    r = subprocess.run(["setfacl", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"setfacl {' '.join(args)}: {r.stderr.strip()}")


def acl(path):
    """getfacl's entries without the header (numeric ids), one string; '-' if getfacl fails."""
    r = subprocess.run(["getfacl", "-cpn", path], capture_output=True, text=True)
    if r.returncode != 0:
        return "- " + r.stderr.strip().split(": ")[-1]
    return ",".join(line.replace("\t", " ") for line in r.stdout.splitlines() if line)


def mode(path):
    return f"{stat.S_IMODE(os.lstat(path).st_mode):04o}"


def user_op(uid, gids, fn, *args):
    """errno name (or 'ok') of fn(*args) run as uid with the given groups (the first is the gid)."""
    return hl.call(hl.as_user, uid, gids[0], fn, *args, groups=gids)[0]


def write_some(path):
    with open(path, "ab") as f:
        f.write(b"+")


def exec_ok(path):
    if not os.access(path, os.X_OK):
        raise PermissionError(13, "no execute access", path)


class Twin:
    """The same layers, built twice: .k for the kernel overlay, .s for strata-fs."""

    def __init__(self, name, build, n_lowers=1):
        self.k = ml.Layout(ml.scratch(f"acl-{name}-k"), n_lowers=n_lowers)
        self.s = ml.Layout(ml.scratch(f"acl-{name}-s"), n_lowers=n_lowers)
        for L in (self.k, self.s):
            os.chmod(L.root, 0o755)
            build(L)

    def mount(self, opts=()):
        self.k.mount_kernel()
        self.s.mount_strata(opts)
        return self

    def umount(self):
        self.k.umount()
        self.s.umount()

    def both(self, op):
        return op(self.k), op(self.s)


def compare(s, what, k, v):
    keys = sorted(set(k) | set(v))
    diff = [f"{key}: kernel {k.get(key)!r}, strata-fs {v.get(key)!r}" for key in keys if k.get(key) != v.get(key)]
    return s.expect(not diff, f"{what}: same as the kernel overlay", "\n      ".join(diff))


def expect_values(s, what, got, wanted):
    """The issue's expectation, independent of the kernel: so the test fails even if both agree."""
    bad = [f"{key}: {got.get(key)!r}, expected {value!r}" for key, value in wanted.items() if got.get(key) != value]
    return s.expect(not bad, what, "\n      ".join(bad))


def mkfile(L, rel, perm, data=b"data\n", uid=0, gid=0):
    p = L.write(L.l(0), rel, data)
    os.chown(p, uid, gid)
    os.chmod(p, perm)
    return p


# ------------------------------------------------------------------------------------------------
# a: enforcement of lower ACLs


def build_a(L):
    setfacl("-m", f"u:{ALICE}:---", mkfile(L, "deny", 0o644))
    setfacl("-m", f"u:{ALICE}:r", mkfile(L, "grant", 0o640))
    setfacl("-m", f"g:{TEAM}:---", mkfile(L, "gdeny", 0o644))
    setfacl("-m", f"u:{ALICE}:rw", mkfile(L, "wgrant", 0o644))
    setfacl("-m", f"u:{ALICE}:rx", mkfile(L, "exe", 0o744, b"#!/bin/sh\n"))
    mkfile(L, "xdir/inner", 0o644)
    setfacl("-m", f"u:{ALICE}:---", L.l(0, "xdir"))


def observe_a(L):
    o = {}
    for who, gids in ((ALICE, [ALICE]), (BOB, [BOB]), (CAROL, [CAROL, TEAM])):
        for rel in ("deny", "grant", "gdeny", "wgrant", "xdir/inner"):
            o[f"{who} read {rel}"] = user_op(who, gids, hl.read_file, L.m(rel))
        o[f"{who} write wgrant"] = user_op(who, gids, write_some, L.m("wgrant"))
        o[f"{who} exec exe"] = user_op(who, gids, exec_ok, L.m("exe"))
        o[f"{who} list xdir"] = user_op(who, gids, os.listdir, L.m("xdir"))
    for rel in ("deny", "grant", "gdeny", "wgrant", "exe", "xdir"):
        o[f"acl {rel}"] = acl(L.m(rel))
    return o


def section_a(s):
    T = Twin("a", build_a).mount()
    try:
        k, v = T.both(observe_a)
        compare(s, "access through lower ACLs", k, v)
        expect_values(s, "the ACLs decide, not the mode bits", v, {
            f"{ALICE} read deny": "EACCES", f"{BOB} read deny": "ok",
            f"{ALICE} read grant": "ok", f"{BOB} read grant": "EACCES",
            f"{CAROL} read gdeny": "EACCES", f"{BOB} read gdeny": "ok",
            f"{ALICE} write wgrant": "ok", f"{BOB} write wgrant": "EACCES",
            f"{ALICE} exec exe": "ok", f"{BOB} exec exe": "EACCES",
            f"{ALICE} list xdir": "EACCES", f"{ALICE} read xdir/inner": "EACCES", f"{BOB} list xdir": "ok"})
    finally:
        T.umount()


# ------------------------------------------------------------------------------------------------
# b: changes through the mount


def build_b(L):
    mkfile(L, "later", 0o644)
    setfacl("-m", f"u:{ALICE}:rw", mkfile(L, "narrow", 0o664))
    setfacl("-m", f"u:{ALICE}:---", mkfile(L, "cleared", 0o644))
    setfacl("-m", f"u:{ALICE}:---,u:{BOB}:---", mkfile(L, "one_less", 0o644))


def change_b(L):
    setfacl("-m", f"u:{ALICE}:---", L.m("later"))
    # ALICE's write is let in by the ACL (and the kernel caches it); chmod must not leave it stale
    assert user_op(ALICE, [ALICE], write_some, L.m("narrow")) == "ok"
    os.chmod(L.m("narrow"), 0o644)  # the mask becomes r--
    setfacl("-b", L.m("cleared"))
    setfacl("-x", f"u:{BOB}", L.m("one_less"))


def observe_b(L, disk=True):
    o = {}
    for rel in ("later", "narrow", "cleared", "one_less"):
        for who in (ALICE, BOB):
            o[f"{who} read {rel}"] = user_op(who, [who], hl.read_file, L.m(rel))
        o[f"{ALICE} write {rel}"] = user_op(ALICE, [ALICE], write_some, L.m(rel))
        o[f"{rel}: mode"] = mode(L.m(rel))
        o[f"{rel}: acl"] = acl(L.m(rel))
        if disk:
            o[f"{rel}: acl in upper"] = acl(L.u(rel))
            o[f"{rel}: mode in upper"] = mode(L.u(rel))
    return o


def section_b(s):
    T = Twin("b", build_b).mount()
    try:
        T.both(change_b)
        k, v = T.both(observe_b)
        compare(s, "after setfacl/chmod through the mount", k, v)
        expect_values(s, "changes take effect at once", v, {
            f"{ALICE} read later": "EACCES", f"{BOB} read later": "ok",
            f"{ALICE} write narrow": "EACCES", f"{ALICE} read narrow": "ok", f"{ALICE} read cleared": "ok",
            f"{ALICE} read one_less": "EACCES", f"{BOB} read one_less": "ok",
            "narrow: mode": "0644", "cleared: acl": "user::rw-,group::r--,other::r--"})
        T.umount()
        T.mount()
        k, v = T.both(lambda L: observe_b(L, disk=False))
        compare(s, "after a remount", k, v)
        expect_values(s, "after a remount, from disk", v, {f"{ALICE} read later": "EACCES",
                                                          f"{ALICE} write narrow": "EACCES"})
    finally:
        T.umount()


# ------------------------------------------------------------------------------------------------
# c: inheritance of default ACLs, and the umask


def build_c(L):
    d = L.mkdir(L.l(0), "inh", 0o755)
    mkfile(L, "inh/old", 0o644)
    L.mkdir(L.l(0), "inh/olddir", 0o755)
    setfacl("-d", "-m", f"u:{ALICE}:rwx,g:{TEAM}:rx,o::r", d)
    setfacl("-m", f"u:{ALICE}:rwx", d)
    L.mkdir(L.l(0), "plain", 0o777)


def create_c(L):
    def make_all(prefix, umask):
        old = os.umask(umask)
        try:
            os.close(os.open(L.m(f"{prefix}-file"), os.O_CREAT | os.O_WRONLY, 0o666))
            os.mkdir(L.m(f"{prefix}-dir"), 0o777)
            os.mkfifo(L.m(f"{prefix}-fifo"), 0o666)
            os.mknod(L.m(f"{prefix}-node"), stat.S_IFREG | 0o666)
        finally:
            os.umask(old)
    made = []
    for umask in (0o022, 0o077):
        make_all(f"inh/u{umask:03o}", umask)
        make_all(f"plain/u{umask:03o}", umask)
        made += [f"{d}/u{umask:03o}-{kind}" for d in ("inh", "plain") for kind in ("file", "dir", "fifo", "node")]
    make_all("plain/u027", 0o027)
    made += [f"plain/u027-{kind}" for kind in ("file", "dir", "fifo", "node")]
    # over whiteouts: the new object is made aside and renamed in
    os.unlink(L.m("inh/old"))
    os.rmdir(L.m("inh/olddir"))
    old = os.umask(0o022)
    try:
        os.close(os.open(L.m("inh/old"), os.O_CREAT | os.O_WRONLY, 0o666))
        os.mkdir(L.m("inh/olddir"), 0o777)
    finally:
        os.umask(old)
    made += ["inh/old", "inh/olddir"]

    def alice_creates():
        os.umask(0o022)
        os.close(os.open(L.m("inh/by-alice"), os.O_CREAT | os.O_WRONLY, 0o644))
    outcome = user_op(ALICE, [ALICE], alice_creates)
    return made + (["inh/by-alice"] if outcome == "ok" else []), outcome


def observe_c(L, made, outcome):
    o = {"alice creates in inh": outcome}
    for rel in made:
        o[f"{rel}: mode"] = mode(L.m(rel))
        o[f"{rel}: acl"] = acl(L.m(rel))
        o[f"{rel}: acl in upper"] = acl(L.u(rel))
    return o


def section_c(s):
    T = Twin("c", build_c).mount()
    try:
        (km, ko), (vm, vo) = T.both(create_c)
        k, v = observe_c(T.k, km, ko), observe_c(T.s, vm, vo)
        compare(s, "new objects under a default ACL and under a umask", k, v)
        inherited = f"user::rw-,user:{ALICE}:rwx #effective:rw-,group::r-x #effective:r--,group:{TEAM}:r-x #effective:r--,mask::rw-,other::r--"
        expect_values(s, "the default ACL rules where there is one, the umask elsewhere", v, {
            "alice creates in inh": "ok",
            "inh/u077-file: mode": "0664", "inh/u077-file: acl": inherited,
            "inh/old: acl": inherited, "inh/old: acl in upper": inherited,
            "plain/u022-file: mode": "0644", "plain/u077-dir: mode": "0700",
            "plain/u027-fifo: mode": "0640", "plain/u027-dir: mode": "0750"})
    finally:
        T.umount()


# ------------------------------------------------------------------------------------------------
# d: -o noacl


def section_d(s):
    T = Twin("d", build_a)
    T.s.mount_strata(["noacl"])
    try:
        v = {"alice read deny": user_op(ALICE, [ALICE], hl.read_file, T.s.m("deny")),
             "bob read grant": user_op(BOB, [BOB], hl.read_file, T.s.m("grant")),
             "acl deny": acl(T.s.m("deny"))}
        expect_values(s, "noacl: ACLs stored and shown, the mode bits decide", v, {
            "alice read deny": "ok", "bob read grant": "EACCES",
            "acl deny": f"user::rw-,user:{ALICE}:---,group::r--,mask::r--,other::r--"})
    finally:
        T.s.umount()


# ------------------------------------------------------------------------------------------------
# e: a lower layer without xattrs


def build_e(L):
    hl.umount_quiet(L.l(0))
    r = subprocess.run(["mount", "-t", "ramfs", "ramfs", L.l(0)], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(f"mount ramfs: {r.stderr.strip()}")
    mkfile(L, "team", 0o640, gid=TEAM)
    mkfile(L, "open", 0o644)


def observe_e(L):
    o = {}
    for who, gids in ((CAROL, [CAROL, TEAM]), (BOB, [BOB])):
        for rel in ("team", "open"):
            o[f"{who} read {rel}"] = user_op(who, gids, hl.read_file, L.m(rel))
    o["acl team"] = acl(L.m("team"))
    return o


def section_e(s):
    T = Twin("e", build_e)
    try:
        T.mount()
        k, v = T.both(observe_e)
        # getfacl of a lower file on ramfs: the kernel passes on ramfs' EOPNOTSUPP, strata-fs
        # answers "no ACL" (what the kernel itself asks it for every permission check).
        k.pop("acl team"), v.pop("acl team")
        compare(s, "access to files of a lower layer without xattrs", k, v)
        expect_values(s, "the mode bits decide there", v, {f"{CAROL} read team": "ok", f"{BOB} read team": "EACCES",
                                                           f"{BOB} read open": "ok"})
    finally:
        T.umount()
        for L in (T.k, T.s):
            hl.umount_quiet(L.l(0))


# ------------------------------------------------------------------------------------------------
# f: uid/gid mapping


SHIFT = 100000


def build_f(L):
    p = mkfile(L, "mapped", 0o640, uid=SHIFT + ALICE, gid=SHIFT + ALICE)
    setfacl("-m", f"u:{SHIFT + BOB}:r", p)
    # an entry for a disk id outside the mapping: it must not show as the overflow id's
    setfacl("-m", f"u:{SHIFT - 1}:r", mkfile(L, "unmapped", 0o640, uid=SHIFT + ALICE, gid=SHIFT + ALICE))


def section_f(s):
    L = ml.Layout(ml.scratch("acl-f"), n_lowers=1)
    os.chmod(L.root, 0o755)
    build_f(L)
    L.mount_strata([f"uidmapping={SHIFT}:0:65536", f"gidmapping={SHIFT}:0:65536"])
    try:
        st = os.stat(L.m("mapped"))
        o = {"owner": (st.st_uid, st.st_gid), "acl": acl(L.m("mapped")),
             "bob read": user_op(BOB, [BOB], hl.read_file, L.m("mapped")),
             "carol read": user_op(CAROL, [CAROL], hl.read_file, L.m("mapped"))}
        setfacl("-m", f"u:{CAROL}:r", L.m("mapped"))
        o["carol read after setfacl"] = user_op(CAROL, [CAROL], hl.read_file, L.m("mapped"))
        o["acl in upper"] = acl(L.u("mapped"))
        o["acl of unmapped"] = acl(L.m("unmapped"))
        o["nobody reads unmapped"] = user_op(65534, [65534], hl.read_file, L.m("unmapped"))
        r = subprocess.run(["setfacl", "-m", "u:70000:r", L.m("mapped")], capture_output=True, text=True)
        o["setfacl for an unmapped id"] = "ok" if r.returncode == 0 else r.stderr.strip().split(": ")[-1]
        o["acl after"] = acl(L.m("mapped"))
        expect_values(s, "named entries are mapped like owners", o, {
            "acl of unmapped": "user::rw-,group::r--,mask::r--,other::---", "nobody reads unmapped": "EACCES",
            "setfacl for an unmapped id": "Invalid argument",
            "acl after": f"user::rw-,user:{BOB}:r--,user:{CAROL}:r--,group::r--,mask::r--,other::---",
            "owner": (ALICE, ALICE), "acl": f"user::rw-,user:{BOB}:r--,group::r--,mask::r--,other::---",
            "bob read": "ok", "carol read": "EACCES", "carol read after setfacl": "ok",
            "acl in upper": f"user::rw-,user:{SHIFT + BOB}:r--,user:{SHIFT + CAROL}:r--,group::r--,mask::r--,other::---"})
    finally:
        L.umount()


# ------------------------------------------------------------------------------------------------
# g: setgid and access ACLs


G_NAMES = ("outsider", "member", "by_root", "outsider_dir", "userns_root")


def build_g(L):
    for name in G_NAMES:
        if name.endswith("_dir"):
            p = L.mkdir(L.l(0), name, 0o2775)
            os.chown(p, ALICE, TEAM)
            os.chmod(p, 0o2775)
        else:
            mkfile(L, name, 0o2775, uid=ALICE, gid=TEAM)


def change_g(L):
    def set_acl(path):
        setfacl("-m", f"u:{BOB}:r", path)

    def set_acl_as_userns_root(path):
        # root of a user namespace of ALICE's own: CAP_FSETID there, but not over a file whose
        # group that namespace does not map (the kernel's capable_wrt_inode_uidgid)
        # (u:0 inside is ALICE: an id the namespace maps)
        r = subprocess.run(["unshare", "-r", "setfacl", "-m", "u:0:r", path], capture_output=True, text=True)
        if r.returncode != 0:
            raise OSError(f"unshare -r setfacl: {r.stderr.strip()}")
    return {"outsider": user_op(ALICE, [ALICE], set_acl, L.m("outsider")),
            "member": user_op(ALICE, [ALICE, TEAM], set_acl, L.m("member")),
            "by_root": hl.call(set_acl, L.m("by_root"))[0],
            "outsider_dir": user_op(ALICE, [ALICE], set_acl, L.m("outsider_dir")),
            "userns_root": user_op(ALICE, [ALICE], set_acl_as_userns_root, L.m("userns_root"))}


def observe_g(L):
    return {f"{n}: {where}": mode(path) for n in G_NAMES for where, path in (("mount", L.m(n)), ("upper", L.u(n)))}


def section_g(s):
    T = Twin("g", build_g).mount()
    try:
        (kc, vc) = T.both(change_g)
        compare(s, "setfacl as the owner, inside and outside the group, and as root", kc, vc)
        k, v = T.both(observe_g)
        compare(s, "set-id bits after setting an access ACL", k, v)
        expect_values(s, "setgid cleared only for an owner outside the group", v, {
            "outsider: mount": "0775", "outsider: upper": "0775", "member: mount": "2775", "by_root: mount": "2775",
            "outsider_dir: mount": "0775", "userns_root: mount": "0775"})
    finally:
        T.umount()


# ------------------------------------------------------------------------------------------------
# i: a workdir under a default ACL


def build_i(L):
    setfacl("-d", "-m", f"u:{BOB}:rwx", L.work)  # as if the workdir were made under such a dir
    mkfile(L, "private", 0o640, uid=ALICE, gid=ALICE)
    L.mkdir(L.l(0), "open", 0o777)


def observe_i(L):
    os.utime(L.m("private"))  # copy-up through the workdir
    def alice_creates():
        os.umask(0o077)
        os.close(os.open(L.m("open/new"), os.O_CREAT | os.O_WRONLY, 0o666))
    return {"bob reads the copied-up file": user_op(BOB, [BOB], hl.read_file, L.m("private")),
            "acl of the copy": acl(L.u("private")), "alice creates": user_op(ALICE, [ALICE], alice_creates),
            "mode of new": mode(L.m("open/new")), "acl of the copied-up dir": acl(L.u("open")),
            "bob reads new": user_op(BOB, [BOB], hl.read_file, L.m("open/new"))}


def section_i(s):
    T = Twin("i", build_i).mount()
    try:
        k, v = T.both(observe_i)
        compare(s, "copy-ups under a workdir with a default ACL", k, v)
        expect_values(s, "the workdir's ACL reaches nothing", v, {
            "bob reads the copied-up file": "EACCES", "acl of the copy": "user::rw-,group::r--,other::---",
            "mode of new": "0600", "bob reads new": "EACCES"})
    finally:
        T.umount()


# ------------------------------------------------------------------------------------------------
# h: rootless


def rootless_child(root):
    """Runs inside `unshare -U -r -m --propagation private`: mount, set and read ACLs, print JSON."""
    L = ml.Layout(root, n_lowers=1)
    out = {}
    L.mount_strata_fg([], stderr_path=os.path.join(root, "daemon.stderr"))
    try:
        for what, fn in (("setfacl on a lower file", lambda: setfacl("-m", "u:0:r", L.m("f"))),
                         ("default ACL on a lower dir", lambda: setfacl("-d", "-m", "u:0:rwx", L.m("d"))),
                         ("create under it", lambda: os.close(os.open(L.m("d/new"), os.O_CREAT | os.O_WRONLY, 0o666)))):
            try:
                fn()
                out[what] = "ok"
            except OSError as e:
                out[what] = str(e)
        out["acl f"] = acl(L.m("f"))
        out["acl d/new"] = acl(L.m("d/new"))
    finally:
        L.umount()
    print(json.dumps(out))


def section_h(s):
    root = ml.scratch("acl-h")
    os.chmod(root, 0o755)
    L = ml.Layout(root, n_lowers=1)
    L.write(L.l(0), "f", b"f\n", mode=0o644)
    L.mkdir(L.l(0), "d")
    cmd = ["unshare", "-U", "-r", "-m", "--propagation", "private",
           sys.executable, os.path.abspath(__file__), "--rootless-child", root]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    finally:
        for pid in ml.ov._pids_mentioning(root):  # the daemon, should the child die first
            os.kill(pid, 9)
    s.require(r.returncode == 0 and r.stdout.strip(), "the user-namespace child ran",
              f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    expect_values(s, "ACLs work on a mount made in a user namespace", out, {
        "setfacl on a lower file": "ok", "default ACL on a lower dir": "ok", "create under it": "ok",
        "acl f": "user::rw-,user:0:r--,group::r--,mask::r--,other::r--",
        "acl d/new": "user::rw-,user:0:rwx #effective:rw-,group::r-x #effective:r--,mask::rw-,other::r--"})


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--rootless-child":
        return rootless_child(sys.argv[2])
    s = ml.start("acl: POSIX ACLs enforced, changed and inherited as on the kernel overlay")
    if not ml.have("setfacl") or not ml.have("getfacl"):
        ml.ov.skip("setfacl/getfacl not installed (Debian package acl; scripts/setup installs it)")
    s.run("a: lower ACLs are enforced", section_a, s)
    s.run("b: ACL changes through the mount", section_b, s)
    s.run("c: default ACLs and the umask", section_c, s)
    s.run("d: -o noacl", section_d, s)
    s.run("e: a lower layer without xattrs", section_e, s)
    s.run("f: uidmapping", section_f, s)
    s.run("g: setgid and access ACLs", section_g, s)
    s.run("h: rootless", section_h, s)
    s.run("i: a workdir under a default ACL", section_i, s)
    s.finish()


if __name__ == "__main__":
    main()

"""File system operations as data, for differential tests (write_ops, fuzz_ops).

An operation is a tuple ('name', arg, ...) whose arguments are paths relative to the mount root,
numbers and bytes. run_op(root, op) performs it and returns a short text that is comparable across
mounts: 'ok', 'ok <details>' or the errno name. Nothing in a result depends on where the mount is,
on inode numbers or on the time.

Safety: the layer trees contain symlinks, and an operation must never act outside the mount. So no
operation follows a symlink in any path component (parents are checked with lstat first, the final
component is opened with O_NOFOLLOW or handled with follow_symlinks=False).
"""

import errno
import hashlib
import mmap
import os
import stat
import subprocess

import overlay as ov


class SkipOp(Exception):
    pass


def _p(root, rel):
    return os.path.join(root, rel) if rel else root


def _no_symlink_parents(root, rel):
    parts = rel.split("/")[:-1]
    cur = root
    for part in parts:
        cur = os.path.join(cur, part)
        try:
            if stat.S_ISLNK(os.lstat(cur).st_mode):
                raise SkipOp("symlink-in-path")
        except FileNotFoundError:
            return  # the operation itself will report ENOENT
        except NotADirectoryError:
            return


def _open(root, rel, flags, mode=0o644):
    """open(2) that never follows a symlink and never opens a fifo or device node (a fifo would
    block, a device could be a real one)."""
    try:
        st = os.lstat(_p(root, rel))
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            if flags & os.O_CREAT and flags & os.O_EXCL:
                raise FileExistsError(errno.EEXIST, "exists", rel)
            raise SkipOp(f"type {ov._typechar(st.st_mode)}")
    except (FileNotFoundError, NotADirectoryError):
        pass
    return os.open(_p(root, rel), flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)


def _sha(data):
    return hashlib.sha256(data).hexdigest()[:16]


def _describe(st):
    t = ov._typechar(st.st_mode)
    nlink = "" if "nlink" in ov.env_excluded_fields() else f" nlink={st.st_nlink}"
    s = f"{t} {stat.S_IMODE(st.st_mode):04o}{nlink} {st.st_uid}:{st.st_gid}"
    if t == "f":
        s += f" size={st.st_size}"
    if t in "cb":
        s += f" rdev={os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return s


def op_create(root, rel, data=b"", mode=0o644):
    fd = _open(root, rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def op_write(root, rel, off, data):
    fd = _open(root, rel, os.O_WRONLY)
    try:
        os.pwrite(fd, data, off)
        return f"size={os.fstat(fd).st_size}"
    finally:
        os.close(fd)


def op_append(root, rel, data):
    fd = _open(root, rel, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
        return f"size={os.fstat(fd).st_size}"
    finally:
        os.close(fd)


def op_truncate(root, rel, size):
    fd = _open(root, rel, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def op_open_trunc(root, rel):
    os.close(_open(root, rel, os.O_WRONLY | os.O_TRUNC))


def op_read(root, rel):
    fd = _open(root, rel, os.O_RDONLY | os.O_NONBLOCK)
    try:
        chunks = []
        while True:
            c = os.read(fd, 1 << 20)
            if not c:
                break
            chunks.append(c)
        data = b"".join(chunks)
        return f"len={len(data)} sha={_sha(data)}"
    finally:
        os.close(fd)


def op_stat(root, rel):
    return _describe(os.lstat(_p(root, rel)))


def op_readdir(root, rel):
    names = sorted(os.listdir(os.fsencode(_p(root, rel))))
    return "[" + ",".join(ov.esc(n) for n in names) + "]"


def op_unlink(root, rel):
    os.unlink(_p(root, rel))


def op_rmdir(root, rel):
    os.rmdir(_p(root, rel))


def op_mkdir(root, rel, mode=0o755):
    os.mkdir(_p(root, rel), mode)


def op_makedirs(root, rel):
    os.makedirs(_p(root, rel))


def op_rmtree(root, rel, skip=frozenset()):
    """Depth-first removal in sorted order; stops at the first error (like rm -r would report).
    Paths in `skip` (bytes, full) are passed over: only reconcile() uses that, for phantoms.

    When it stops because lstat says ENOENT for a name that readdir returned just before, that
    path is kept in _rmtree_phantom[root] for reconcile(): the removal itself may turn the dir into
    a merged one (copy-up), and then the kernel no longer lists the phantom afterwards."""
    _rmtree_phantom.pop(root, None)

    def remove(path, listed=False):
        if path in skip:
            return
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if listed:
                _rmtree_phantom[root] = path
            raise
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path)):
                remove(os.path.join(path, name), True)
            os.rmdir(path)
        else:
            os.unlink(path)
    remove(os.fsencode(_p(root, rel)))


_rmtree_phantom = {}


def op_rename(root, a, b):
    os.rename(_p(root, a), _p(root, b))


def op_rename2(root, a, b, flags):
    ov.renameat2(_p(root, a), _p(root, b), flags)


def op_rename_ino(root, a, b):
    """rename, and whether st_ino survived it (the kernel keeps it, even for a lower dir)."""
    before = os.lstat(_p(root, a)).st_ino
    os.rename(_p(root, a), _p(root, b))
    return "st_ino kept" if os.lstat(_p(root, b)).st_ino == before else "st_ino changed"


def op_link(root, a, b):
    os.link(_p(root, a), _p(root, b), follow_symlinks=False)
    sa, sb = os.lstat(_p(root, a)), os.lstat(_p(root, b))
    return f"nlink={sa.st_nlink},{sb.st_nlink} same_ino={sa.st_ino == sb.st_ino}"


def op_symlink(root, target, rel):
    os.symlink(target, _p(root, rel))


def op_mkfifo(root, rel, mode=0o644):
    os.mkfifo(_p(root, rel), mode)


def op_mknod(root, rel, kind, major, minor, mode=0o644):
    t = {"chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "sock": stat.S_IFSOCK}[kind]
    os.mknod(_p(root, rel), t | mode, os.makedev(major, minor))


def op_chmod(root, rel, mode):
    if stat.S_ISLNK(os.lstat(_p(root, rel)).st_mode):
        raise SkipOp("symlink")
    os.chmod(_p(root, rel), mode)
    return f"{stat.S_IMODE(os.lstat(_p(root, rel)).st_mode):04o}"


def op_chown(root, rel, uid, gid):
    os.chown(_p(root, rel), uid, gid, follow_symlinks=False)
    st = os.lstat(_p(root, rel))
    return f"{st.st_uid}:{st.st_gid} {stat.S_IMODE(st.st_mode):04o}"


def op_utime(root, rel, atime_ns, mtime_ns):
    os.utime(_p(root, rel), ns=(atime_ns, mtime_ns), follow_symlinks=False)
    st = os.lstat(_p(root, rel))
    return f"atime={st.st_atime_ns} mtime={st.st_mtime_ns}"


def op_setxattr(root, rel, name, value):
    os.setxattr(_p(root, rel), name, value, follow_symlinks=False)


def op_removexattr(root, rel, name):
    os.removexattr(_p(root, rel), name, follow_symlinks=False)


def op_getxattr(root, rel, name):
    return ov._fmt_xattr_value(os.getxattr(_p(root, rel), name, follow_symlinks=False))


def op_listxattr(root, rel):
    return ",".join(sorted(os.listxattr(_p(root, rel), follow_symlinks=False)))


def op_cp_a(root, src, dst):
    r = subprocess.run(["cp", "-a", "--", _p(root, src), _p(root, dst)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"rc={r.returncode}"


COPYUP_TRIGGERS = ("write", "truncate", "chmod", "rename")


def op_open_before_copyup(root, rel, data, how="write"):
    """A read-only fd opened before the copy-up must see the file as it is after it (the kernel
    reopens the real file on the upper layer since 4.19): the same bytes as a new open, and the
    same size. `how` is what copies the file up while the fd is open: "write" (an O_WRONLY open
    and a write of `data` at 0), "truncate" (truncate(2) of the path to len(data)), "chmod" (to
    0640, then the write) or "rename" (to the sibling "moved-under-fd", then the write through
    the new name).

    The one documented exception (issue 9, accepted by the product owner): on a strata-fs that
    serves data by FUSE passthrough, a read-only fd opened while the file was still in a lower
    layer keeps reading that lower file after the copy-up. It is accepted only when the daemon
    says passthrough is on, its copy-up counter shows that this very operation copied the file
    up, and the old fd shows exactly its frozen pre-copy-up content (and size, when a write open
    made the copy-up; after chmod/truncate/rename its size may already be the copy's). The result is then
    reported as the kernel's (new data, the new size) with a note; anything else stays a
    difference."""
    stats0 = ov.daemon_stats(root)
    path = rel
    fd1 = _open(root, rel, os.O_RDONLY | os.O_NONBLOCK)
    try:
        snapshot = _read_fd(fd1) if stats0 and stats0.get("passthrough") else None
        if how == "truncate":
            os.truncate(_p(root, rel), len(data))
        else:
            if how == "chmod":
                os.chmod(_p(root, rel), 0o640)
            elif how == "rename":
                path = os.path.join(os.path.dirname(rel), "moved-under-fd")
                os.rename(_p(root, rel), _p(root, path))
            fd2 = _open(root, path, os.O_WRONLY)
            try:
                os.pwrite(fd2, data, 0)
            finally:
                os.close(fd2)
        fd3 = _open(root, path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            now = _read_fd(fd3)
        finally:
            os.close(fd3)
        seen = _read_fd(fd1)
        size = os.fstat(fd1).st_size
        if seen != now and snapshot is not None and seen == snapshot:
            stats1 = ov.daemon_stats(root) or {}
            copied_up = stats1.get("copyups", 0) > stats0.get("copyups", 0)
            # A copy-up made by chmod/truncate/rename (not by a write open) cannot split the
            # inode the old fd holds: its fstat then already shows the copy's size. Documented
            # with the rest of this deviation (README, "Deliberate differences").
            if copied_up and (size == len(snapshot) or how != "write"):
                copy_size = "" if size == len(snapshot) else ", with fstat already showing the copy's size"
                seen, size = now, os.lstat(_p(root, path)).st_size
                tolerated(f"open_before_copyup('{ov.esc(rel)}', {how}): the read-only fd opened before "
                          f"the copy-up kept the lower file{copy_size} (FUSE passthrough, documented in "
                          f"issue 9 and the README)")
            else:
                # Not the tolerated case: say what is off, the diff alone would not.
                return (f"old fd sees OLD data, fstat size={size} (its pre-copy-up data has size "
                        f"{len(snapshot)}; copy-up counted: {'yes' if copied_up else 'no'}; a frozen "
                        f"fd must show the old size too)")
        return (f"old fd sees {'new' if seen == now else 'OLD'} data, fstat size={size}"
                f"{'' if size == len(now) else f' but the file has {len(now)} bytes'}")
    finally:
        os.close(fd1)


def _read_fd(fd):
    chunks, off = [], 0
    while True:
        c = os.pread(fd, 1 << 20, off)
        if not c:
            return b"".join(chunks)
        chunks.append(c)
        off += len(c)


def op_copyup_ino(root, rel):
    """Trigger a copy-up without changing anything (chown to the same owner): st_ino must stay."""
    st = os.lstat(_p(root, rel))
    os.chown(_p(root, rel), st.st_uid, st.st_gid, follow_symlinks=False)
    st2 = os.lstat(_p(root, rel))
    return f"st_ino {'kept' if st.st_ino == st2.st_ino else 'changed'} nlink={st2.st_nlink}"


def op_mmap_write(root, rel, off, data):
    fd = _open(root, rel, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return "empty"
        off = off % size
        data = data[:size - off]
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[off:off + len(data)] = data
            m.flush()
        os.lseek(fd, 0, os.SEEK_SET)
        return f"sha={_sha(os.pread(fd, size, 0))}"
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------
# tolerated differences: each is narrow, verified where it happens, and announced with a note


_notes_seen = set()


def tolerated(text):
    """Print a one-line note that a tolerated difference was used (each distinct text once)."""
    if text not in _notes_seen:
        _notes_seen.add(text)
        print(f"note: tolerated: {text}", flush=True)


def readdir_phantoms(root, rel):
    """Entries under `rel` (a directory of `root`) that readdir lists but lstat says do not exist,
    in the order op_rmtree would meet them: [(full path as bytes, its errno name)]. The walk
    stops at the first entry lstat fails on with anything but ENOENT; that one is last in the
    list and it is not a phantom."""
    found = []

    def visit(path):
        try:
            names = sorted(os.listdir(path))
        except OSError:
            return True
        for name in names:
            child = os.path.join(path, name)
            try:
                st = os.lstat(child)
            except OSError as e:
                found.append((child, ov.errname(e)))
                if e.errno != errno.ENOENT:
                    return False
                continue
            if stat.S_ISDIR(st.st_mode) and not visit(child):
                return False
        return True

    visit(os.fsencode(_p(root, rel)))
    return found


def reconcile(kernel_root, op, kernel_result, sut_result):
    """The kernel's result to compare with the SUT's, after the one kernel quirk this harness
    tolerates in operation results. Call it only when the two results differ; it may change the
    kernel's tree (and only the kernel's).

    The quirk: the kernel's readdir of a directory that is not merged (it lives in one layer only,
    e.g. a lower dir with nothing below, or an upper dir over a lower non-directory) lists the
    whiteouts in it, which its own lookup then says do not exist. read_view and the listings
    tolerate that as "tolerated kernel readdir quirk"; strata-fs is consistent there. It shows in
    two operations:
    - readdir: tolerated if the kernel's names minus exactly the ones its lstat calls ENOENT are
      the SUT's names;
    - rmtree walks that listing and stops with ENOENT where the SUT removes the directory.
      Tolerated only if the kernel's rmtree stopped exactly at the lstat of a name its readdir
      had just returned, lstat-ing every entry the kernel lists under the directory now finds no
      other error than such phantoms, and the kernel then finishes the removal, passing over
      exactly those phantoms, without any other error (so both trees are the same again for the
      steps that follow). The phantom may be gone from the listing by then: rmtree's own copy-up
      of the directory makes it a merged one, whose readdir hides whiteouts."""
    if op[0] == "readdir" and kernel_result.startswith("ok [") and sut_result.startswith("ok ["):
        return _reconcile_readdir(kernel_root, op[1], kernel_result, sut_result)
    if op[0] != "rmtree" or kernel_result != "ENOENT" or sut_result != "ok":
        return kernel_result
    rel = op[1]
    failed_at = _rmtree_phantom.pop(kernel_root, None)  # listed by readdir, then ENOENT from lstat
    if failed_at is None:
        return kernel_result
    phantoms = readdir_phantoms(kernel_root, rel)
    if any(err != "ENOENT" for _, err in phantoms):
        return kernel_result
    still = any(p == failed_at for p, _ in phantoms)
    base = len(os.fsencode(kernel_root)) + 1
    names = ", ".join(ov.esc(p[base:]) for p in [failed_at] + [p for p, _ in phantoms if p != failed_at][:2])
    try:
        op_rmtree(kernel_root, rel, skip=frozenset([failed_at] + [p for p, _ in phantoms]))
    except OSError as e:
        where = ov.esc(os.fsencode(e.filename)[base:]) if e.filename else "?"
        return (f"{kernel_result} (not the tolerated readdir quirk alone: passing over the phantom "
                f"{names}, the kernel's removal still fails at {where} with {ov.errname(e)})")
    tolerated(f"rmtree('{ov.esc(rel)}'): the kernel's readdir listed {names}, which its lookup says "
              f"does not exist (kernel readdir quirk; "
              f"{'still listed' if still else 'no longer listed after rmtree copied the dir up'}); "
              f"the kernel's rmtree finished over it")
    return "ok"


def _reconcile_readdir(kernel_root, rel, kernel_result, sut_result):
    """The same kernel readdir quirk seen by the readdir op itself: the kernel lists names that its
    lookup says do not exist. Tolerated only if the kernel's listing minus exactly those names is
    the SUT's listing."""
    path = os.fsencode(_p(kernel_root, rel))
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return kernel_result
    phantoms = []
    for n in names:
        try:
            os.lstat(os.path.join(path, n))
        except FileNotFoundError:
            phantoms.append(n)
        except OSError:
            pass
    if not phantoms:
        return kernel_result
    without = "ok [" + ",".join(ov.esc(n) for n in names if n not in phantoms) + "]"
    if "ok " + op_readdir(kernel_root, rel) != kernel_result or without != sut_result:
        return kernel_result
    shown = ", ".join(ov.esc(n) for n in phantoms[:3]) + (" ..." if len(phantoms) > 3 else "")
    tolerated(f"readdir('{ov.esc(rel)}'): the kernel lists {shown}, which its lookup says does not "
              f"exist (kernel readdir quirk); the SUT does not list it")
    return sut_result


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}
TWO_PATH_OPS = {"rename", "rename2", "rename_ino", "link", "cp_a"}


def run_op(root, op):
    name, *args = op
    try:
        paths = args[:2] if name in TWO_PATH_OPS else args[1:2] if name == "symlink" else args[:1]
        for rel in paths:
            _no_symlink_parents(root, rel)
        r = OPS[name](root, *args)
        return "ok" if r is None else f"ok {r}"
    except SkipOp as e:
        return f"skipped ({e})"
    except OSError as e:
        return ov.errname(e)


def fmt_op(op):
    """The op as one line of Python-like text, bytes shortened."""
    name, *args = op
    parts = []
    for a in args:
        if isinstance(a, bytes):
            parts.append(repr(a) if len(a) <= 16 else f"<{len(a)} bytes {_sha(a)}>")
        elif isinstance(a, str):
            parts.append("'" + ov.esc(a) + "'")
        elif isinstance(a, int) and name in ("chmod", "mkdir", "create", "mkfifo") and a > 7:
            parts.append(oct(a))
        else:
            parts.append(repr(a))
    return f"{name}({', '.join(parts)})"


# ------------------------------------------------------------------------------------------------
# a rough model of the tree, only to pick plausible targets while generating a script


def walk_types(root, skip=None):
    """{relpath (str): type char} of the mounted tree (no symlinks followed)."""
    out = {}
    root_b = os.fsencode(root)

    def visit(rel):
        full = root_b + b"/" + rel if rel else root_b
        try:
            st = os.lstat(full)
        except OSError:
            return
        srel = os.fsdecode(rel)
        if rel and skip is not None and skip(srel):
            return
        out[srel] = ov._typechar(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            try:
                names = sorted(os.listdir(full))
            except OSError:
                return
            for n in names:
                visit(rel + b"/" + n if rel else n)

    visit(b"")
    return out


class Model:
    """path -> type char. Updated by the generators as if every operation succeeded."""

    def __init__(self, types):
        self.t = dict(types)

    def of(self, kind):
        return sorted((p for p, t in self.t.items() if p and t == kind), key=os.fsencode)

    def all(self):
        return sorted((p for p in self.t if p), key=os.fsencode)

    def children(self, d):
        prefix = d + "/" if d else ""
        return sorted((p for p in self.t if p.startswith(prefix) and p != d and "/" not in p[len(prefix):]),
                      key=os.fsencode)

    def remove(self, p):
        for q in [q for q in self.t if q == p or q.startswith(p + "/")]:
            del self.t[q]

    def add(self, p, kind):
        self.t[p] = kind

    def move(self, a, b):
        moved = {b + q[len(a):]: t for q, t in self.t.items() if q == a or q.startswith(a + "/")}
        self.remove(a)
        self.remove(b)
        self.t.update(moved)

    def fresh(self, rng, parent, stem="new"):
        for i in range(1000):
            name = f"{stem}{rng.randrange(10**6)}"
            p = f"{parent}/{name}" if parent else name
            if p not in self.t:
                return p
        raise RuntimeError("no fresh name")

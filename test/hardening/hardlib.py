"""Helpers for the hardening tests (test/mount/hardening_*.py): things that try to break strata-fs.

On top of test/mount/mountlib.py and test/lib/overlay.py (owned by others, imported, not edited):

- kill_daemon(): SIGKILL a live strata-fs, wait until it is really gone, detach the dead mount
  with `umount -l` and take it off the shared cleanup list (whose umount() would otherwise report
  the dead daemon as a crash: here it is the point).
- Worker: run a Python function in a forked child that logs each completed step to a file, so a
  test can tell which operations had returned before the daemon was killed.
- as_user(): run a function as another uid/gid in a forked child and get its result back.
- HostSnapshot: the exact state (bytes, mode, owner, times, xattrs) of a tree outside the layers,
  to prove at the end that nothing reached it.
- upper_problems(): an upper layer on disk checked for states a crash must never leave (a name
  both whited out and present, staging names outside the workdir).
- call(): an operation's outcome as "ok" or an errno name, never an exception.

Only the Python standard library is used.
"""

import atexit
import errno
import hashlib
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_SRC = os.environ.get("STRATA_SRC") or os.path.dirname(os.path.dirname(_HERE))
sys.path.insert(0, os.path.join(_SRC, "test", "mount"))
sys.path.insert(0, os.path.join(_SRC, "test", "lib"))
import mountlib as ml  # noqa: E402
import overlay as ov  # noqa: E402

MiB = 1 << 20


def env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        ov.fail(f"{name}={os.environ[name]!r}: not an integer")


def env_float(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        ov.fail(f"{name}={os.environ[name]!r}: not a number")


def errname(e):
    return ov.errname(e)


def call(fn, *args, **kw):
    """("ok", value) or (ERRNAME, None): an operation's outcome without exceptions."""
    try:
        return "ok", fn(*args, **kw)
    except OSError as e:
        return errname(e), None


def sha_file(path, nofollow=True, noatime=False):
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | (os.O_NOFOLLOW if nofollow else 0) | (os.O_NOATIME if noatime else 0))
    try:
        while True:
            b = os.read(fd, MiB)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def read_file(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        chunks = []
        while True:
            b = os.read(fd, MiB)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        for off in range(0, len(data), MiB):
            os.write(fd, view[off:off + MiB])
    finally:
        os.close(fd)


def append_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def clear_dir(path):
    """Remove everything inside `path` (not `path` itself), whatever its modes."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        return
    subprocess.run(["chmod", "-R", "u+rwx", path], stderr=subprocess.DEVNULL)
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            subprocess.run(["rm", "-rf", "--one-file-system", "--", p], check=True)
        else:
            os.unlink(p)


# ------------------------------------------------------------------------------------------------
# killing a daemon


def pid_alive(pid):
    return ov._pid_alive(pid)


def wait_pids_gone(pids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def forget_mount(m):
    """Take a Mounted off the shared cleanup list without unmounting it."""
    m.mounted = False
    if m in ov._active_mounts:
        ov._active_mounts.remove(m)


def kill_daemon(m, detach=True):
    """SIGKILL the daemon of Mounted `m`, wait until it is gone, then (detach) `umount -l` the
    dead mount. Returns a problem text or ''."""
    problems = []
    for p in m.pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not wait_pids_gone(m.pids):
        problems.append(f"daemon {m.pids} still alive 10 s after SIGKILL")
    forget_mount(m)
    if detach:
        r = subprocess.run(["umount", "-l", m.mnt], capture_output=True, text=True)
        if r.returncode != 0 and "not mounted" not in r.stderr:
            problems.append(f"umount -l {m.mnt}: {r.stderr.strip()}")
    return "; ".join(problems)


FUSECTL = "/sys/fs/fuse/connections"


def ensure_fusectl():
    """fusectl mounted in this (private) mount namespace; False if it cannot be."""
    if os.path.ismount(FUSECTL):
        return True
    r = subprocess.run(["mount", "-t", "fusectl", "fusectl", FUSECTL], capture_output=True)
    return r.returncode == 0


def fuse_connections():
    """The FUSE connection ids (device minors of the mounts) fusectl lists."""
    try:
        return set(os.listdir(FUSECTL))
    except OSError:
        return set()


_pending_aborts = set()
_exit_hooks_armed = False


def _arm_exit_hooks():
    """At exit, before the shared cleanup unmounts anything (atexit runs newest first): kill
    our workers, abort FUSE connections registered with abort_at_exit()."""
    global _exit_hooks_armed
    if _exit_hooks_armed:
        return
    _exit_hooks_armed = True
    atexit.register(_exit_hook)


def _exit_hook():
    for w in list(_live_workers):
        w.kill()
    abort_connections(sorted(_pending_aborts))


def abort_at_exit(conns):
    """Abort these FUSE connections if the test exits before it did so itself (a hang)."""
    _arm_exit_hooks()
    _pending_aborts.update(conns)


def abort_connections(conns):
    """Abort the given FUSE connections (ids from fuse_connections): every request waiting on
    them fails with ENOTCONN, even if the daemon is stuck. Only ever pass our own."""
    for c in conns:
        _pending_aborts.discard(c)
        try:
            with open(os.path.join(FUSECTL, str(c), "abort"), "w") as f:
                f.write("1")
        except OSError:
            pass


def abort_fuse_mount(mnt, conns=()):
    """Abort the FUSE connections `conns` (taken when the mount was made: a stat of a hung mount
    would hang too), then detach `mnt`."""
    abort_connections(conns)
    subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)


# ------------------------------------------------------------------------------------------------
# forked workers


_live_workers = set()


class Worker:
    """fn(log) runs in a forked child; log(obj) appends one JSON line to a file after each step
    the child completed. The parent reads the completed steps back with steps()."""

    def __init__(self, fn, log_path):
        self.log_path = log_path
        open(log_path, "w").close()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(s, signal.SIG_DFL)
                fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)

                def log(obj):
                    os.write(fd, (json.dumps(obj) + "\n").encode())

                fn(log)
            except BaseException:
                try:
                    with open(log_path + ".err", "w") as f:
                        f.write(traceback.format_exc())
                except OSError:
                    pass
                code = 3
            os._exit(code)
        self.pid = pid
        self.status = None
        _arm_exit_hooks()
        _live_workers.add(self)

    def wait(self, timeout=30.0):
        """The child's exit code (or -signal); None if it is still running after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done == self.pid:
                self.status = os.waitstatus_to_exitcode(status)
                _live_workers.discard(self)
                return self.status
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)

    def kill(self):
        if self.status is not None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(10)

    def steps(self):
        out = []
        with open(self.log_path) as f:
            for line in f:
                if line.endswith("\n"):
                    out.append(json.loads(line))
        return out

    def error(self):
        try:
            with open(self.log_path + ".err") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def forked(fn, *args, setup=None):
    """Run fn(*args) in a forked child (after setup(), e.g. a chroot or a change of ids) and
    return its result here; an OSError of the child is raised here again."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(s, signal.SIG_DFL)
            if setup is not None:
                setup()
            result = ("ok", fn(*args))
        except OSError as e:
            result = ("oserror", (e.errno, str(e)))
        except BaseException:
            result = ("error", traceback.format_exc())
        try:
            data = pickle.dumps(result)
        except Exception as e:
            data = pickle.dumps(("error", f"unpicklable result: {e!r}"))
        os.write(w, data)
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    kind, value = pickle.loads(b"".join(chunks))
    if kind == "ok":
        return value
    if kind == "oserror":
        raise OSError(value[0], value[1])
    raise RuntimeError(value)


def as_user(uid, gid, fn, *args, groups=()):
    """Run fn(*args) in a forked child with the given ids (real, effective and saved: no
    capabilities left) and return its result, or re-raise its OSError here."""
    def setup():
        os.setgroups(list(groups))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    return forked(fn, *args, setup=setup)


def in_chroot(root, fn, *args):
    """Run fn(*args) chrooted at `root` (a mount: symlinks then resolve inside it, as for a
    container) in a forked child; returns its result."""
    def setup():
        os.chroot(root)
        os.chdir("/")
    return forked(fn, *args, setup=setup)


# ------------------------------------------------------------------------------------------------
# state of trees on disk


class HostSnapshot:
    """Everything observable about the entries under `root` (and root itself): type, mode, owner,
    size, mtime, ctime, (atime unless told not to), content hash, symlink target, xattrs, inode."""

    def __init__(self, root, atime=True):
        self.root = root
        self.atime = atime
        self.entries = self._take()

    def _describe(self, path):
        st = os.lstat(path)
        d = {
            "type": ov._typechar(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
            "uid": st.st_uid, "gid": st.st_gid, "nlink": st.st_nlink, "ino": st.st_ino,
            "mtime": st.st_mtime_ns, "ctime": st.st_ctime_ns,
        }
        if self.atime and not stat.S_ISLNK(st.st_mode):  # our own readlink below touches it
            d["atime"] = st.st_atime_ns
        if stat.S_ISREG(st.st_mode):
            d["size"] = st.st_size
        if stat.S_ISLNK(st.st_mode):
            d["target"] = os.readlink(path)
        try:
            d["xattrs"] = {n: os.getxattr(path, n, follow_symlinks=False).hex()
                           for n in sorted(os.listxattr(path, follow_symlinks=False))}
        except OSError as e:
            d["xattrs"] = errname(e)
        return d

    def _take(self):
        # Nothing here may change what it records: files and directories are opened with
        # O_NOATIME (we are root), so a later snapshot sees the atimes only others changed.
        out = {}
        paths = [self.root]
        i = 0
        while i < len(paths):
            p = paths[i]
            i += 1
            if stat.S_ISDIR(os.lstat(p).st_mode):
                fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOATIME)
                try:
                    names = sorted(e.name for e in os.scandir(fd))
                finally:
                    os.close(fd)
                paths.extend(os.path.join(p, n) for n in names)
        for p in paths:
            out[os.path.relpath(p, self.root)] = self._describe(p)
        for rel, d in out.items():
            if d["type"] == "f":
                d["sha256"] = sha_file(self.root if rel == "." else os.path.join(self.root, rel), noatime=True)
        return out

    def diff(self, later=None):
        """Lines describing what changed between this snapshot and now (or `later`)."""
        now = later.entries if later else HostSnapshot(self.root, self.atime).entries
        lines = []
        for rel in sorted(set(self.entries) | set(now)):
            a, b = self.entries.get(rel), now.get(rel)
            if a is None:
                lines.append(f"{rel}: appeared ({b['type']})")
            elif b is None:
                lines.append(f"{rel}: disappeared")
            else:
                for k in sorted(set(a) | set(b)):
                    if a.get(k) != b.get(k):
                        lines.append(f"{rel}: {k} {a.get(k)!r} -> {b.get(k)!r}")
        return lines


def tree_state(root, contents=True):
    """{relpath: (type, mode, uid, gid, size, sha|target)} of a tree, not following symlinks."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            t = ov._typechar(st.st_mode)
            extra = None
            if t == "f" and contents:
                extra = sha_file(p)
            elif t == "l":
                extra = os.readlink(p)
            out[os.path.relpath(p, root)] = (t, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                             st.st_size if t == "f" else 0, extra)
    return out


STAGING_PREFIXES = ("#copyup-", "#new-", "#whiteout-", "#empty-", "#rmdir-", "#link-", "#strata-probe")


def upper_problems(upper):
    """States an upper layer on disk must never be in, even after a crash: a name that is both
    a whiteout (.wh.NAME) and an entry, and staging names of the workdir inside the upper."""
    problems = []
    for dirpath, dirnames, filenames in os.walk(upper):
        names = set(dirnames) | set(filenames)
        for n in sorted(names):
            if n.startswith(".wh.") and n != ".wh..wh..opq" and n[4:] in names:
                problems.append(f"{os.path.relpath(os.path.join(dirpath, n[4:]), upper)}: "
                                f"both a .wh. whiteout and an entry in the upper")
            if n.startswith(STAGING_PREFIXES):
                problems.append(f"{os.path.relpath(os.path.join(dirpath, n), upper)}: a staging name in the upper")
    return problems


def is_whiteout(path):
    return ml.is_whiteout(path)


def work_leftovers(workdir):
    """What is inside workdir/work (must be nothing once a mount has started)."""
    w = os.path.join(workdir, "work")
    try:
        return sorted(os.listdir(w))
    except FileNotFoundError:
        return ["(workdir/work missing)"]


def mount_tmpfs(path, opts):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise ov.MountError(f"mount -t tmpfs -o {opts} {path}: {r.stderr.strip()}")


def umount_quiet(path):
    subprocess.run(["umount", path], stderr=subprocess.DEVNULL)
    if path in ov.mount_points():
        subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)


def first_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[0] if lines else ""

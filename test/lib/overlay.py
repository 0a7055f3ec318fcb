"""Shared helpers for strata's mounted tests: mount the kernel overlay and the system under test
(SUT) side by side, build the same random layer tree for both, and reduce a mounted tree to
sorted text lines that can be diffed.

Why it is shaped this way:
- The kernel's overlayfs is the oracle. Every test renders ONE abstract layer tree (generate_tree)
  into fresh directories for each mount, so the kernel and the SUT never share an upper/workdir
  (the kernel refuses that) and start from byte-identical layers.
- The same abstract tree can be rendered with char-device whiteouts + trusted xattrs ("chardev"),
  with user.overlay.* xattrs ("userxattr") or with aufs-style .wh. files ("aufs"), so the SUT on
  the aufs rendering can be compared with the kernel on the chardev rendering.
- Everything that mounts runs in a private mount namespace (enter_private_mount_namespace) and
  every mount is registered for unmounting on every exit path; FUSE daemons are waited for after
  umount, because a daemon that outlives its mount is a bug we want to see.
- STRATA_FS_BIN selects the SUT: a FUSE binary with fuse-overlayfs' command line (default
  $STRATA_BUILD/strata-fs), or the word "kernel" to compare the kernel with itself, which proves
  the harness sound.

Only the Python standard library is used.
"""

import atexit
import ctypes
import ctypes.util
import difflib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

SKIP = 77

# Kernel options every oracle mount gets unless a test says otherwise: the features strata does
# not implement (inode index, metacopy) are switched off explicitly so the oracle does not depend
# on the kernel's build-time defaults.
KERNEL_BASE_OPTS = ("index=off", "metacopy=off")
# A strata-fs run with -o metacopy=on (STRATA_SUT_OPTS) is compared with the kernel's metacopy=on.
if "metacopy=on" in os.environ.get("STRATA_SUT_OPTS", "").split(","):
    KERNEL_BASE_OPTS = ("index=off", "metacopy=on")

# ------------------------------------------------------------------------------------------------
# environment


def repo_root():
    return os.environ.get("STRATA_SRC") or os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_dir():
    return os.environ.get("STRATA_BUILD") or os.path.join(repo_root(), "build")


def sut_binary():
    """The SUT: a path to a FUSE daemon, or "kernel" (hidden switch: kernel against itself)."""
    return os.environ.get("STRATA_FS_BIN") or os.path.join(build_dir(), "strata-fs")


def skip(reason):
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def errname(e):
    """'ENOENT' for an OSError or an errno number."""
    n = e.errno if isinstance(e, OSError) else e
    return errno.errorcode.get(n, str(n))


def check_prerequisites(need_fuse=True):
    """Exit 77 (skip) unless this can run at all: root, /dev/fuse, overlay in the kernel."""
    if os.geteuid() != 0:
        skip("needs root (mounts the kernel overlay and FUSE)")
    if need_fuse and not os.path.exists("/dev/fuse"):
        skip("/dev/fuse is missing")
    if not _kernel_has_overlay():
        subprocess.run(["modprobe", "overlay"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not _kernel_has_overlay():
            skip("the kernel has no overlay filesystem")
    if shutil.which("unshare") is None:
        skip("unshare(1) is missing")


def _kernel_has_overlay():
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == "overlay" for line in f if line.strip())
    except OSError:
        return False


def _mntns():
    return os.readlink("/proc/self/ns/mnt")


def enter_private_mount_namespace(need_fuse=True):
    """Re-exec this script under `unshare -m --propagation private` (once), then arm cleanup.

    Mounts made by the test (and by FUSE daemons it starts, which inherit the namespace) are then
    invisible to the rest of the machine and vanish with the namespace.
    """
    check_prerequisites(need_fuse)
    parent_ns = os.environ.get("STRATA_TEST_PARENT_MNTNS")
    if parent_ns is None:
        os.environ["STRATA_TEST_PARENT_MNTNS"] = _mntns()
        script = os.path.abspath(sys.argv[0])
        argv = ["unshare", "-m", "--propagation", "private", sys.executable, script] + sys.argv[1:]
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            os.execvp("unshare", argv)
        except OSError as e:
            skip(f"cannot run unshare: {e}")
    if parent_ns == _mntns():
        fail("still in the parent mount namespace after unshare (refusing to mount there)")
    _arm_cleanup()


# ------------------------------------------------------------------------------------------------
# cleanup: every mount and temp dir is registered here and released on any exit path

_active_mounts = []
_temp_dirs = []
_cleanup_armed = False
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _arm_cleanup():
    global _cleanup_armed
    if _cleanup_armed:
        return
    _cleanup_armed = True
    # Daemons that double-fork are re-parented to us, so we can reap them and see them exit
    # (pid 1 of this machine does not reap promptly; a zombie would look alive forever).
    PR_SET_CHILD_SUBREAPER = 36
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    atexit.register(cleanup_all)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)


def make_temp_dir(prefix="strata-oracle."):
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    _temp_dirs.append(d)
    return d


def cleanup_all():
    """Unmount everything still mounted (newest first), then remove temp dirs that are no longer
    covered by any mount. Never removes a directory that still has a mount below it."""
    for m in reversed(list(_active_mounts)):
        try:
            m.umount()
        except Exception as e:  # keep going: the remaining mounts must still be released
            print(f"cleanup: {e}", file=sys.stderr)
    for d in list(_temp_dirs):
        leftovers = [p for p in mount_points() if p == d or p.startswith(d + "/")]
        for p in sorted(leftovers, reverse=True):
            subprocess.run(["umount", "-l", p], stderr=subprocess.DEVNULL)
        if any(p == d or p.startswith(d + "/") for p in mount_points()):
            print(f"cleanup: leaving {d}: still mounted below it", file=sys.stderr)
            continue
        shutil.rmtree(d, ignore_errors=True)
        _temp_dirs.remove(d)


def mount_points():
    """Mount points of this mount namespace (octal escapes of mountinfo decoded)."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            raw = line.split(b" ")[4]
            out.append(_unescape_mountinfo(raw))
    return out


def _mount_fstype(path):
    with open("/proc/self/mountinfo", "rb") as f:
        found = None
        for line in f:
            fields = line.split(b" ")
            if _unescape_mountinfo(fields[4]) == path:
                sep = fields.index(b"-")
                found = fields[sep + 1].decode()
        return found


def _unescape_mountinfo(raw):
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i:i + 1] == b"\\" and i + 3 < len(raw) and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


# ------------------------------------------------------------------------------------------------
# mounts


class MountError(Exception):
    pass


class Mounted:
    """One mounted overlay. umount() unmounts it and, for FUSE, waits for the daemon to exit."""

    def __init__(self, kind, mnt, pids=(), log=None, desc=""):
        self.kind = kind  # "kernel" or "fuse"
        self.mnt = mnt
        self.pids = list(pids)
        self.log = log
        self.desc = desc
        self.mounted = True
        self.passthrough = None  # for a strata-fs SUT: whether its data path is FUSE passthrough
        _active_mounts.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.umount()

    def daemon_alive(self):
        return any(_pid_alive(p) for p in self.pids)

    def daemon_log(self, tail=40):
        if not self.log or not os.path.exists(self.log):
            return ""
        with open(self.log, "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def umount(self, timeout=10.0):
        if not self.mounted:
            return
        self.mounted = False
        _active_mounts.remove(self)
        died_early = self.kind == "fuse" and self.pids and not self.daemon_alive()
        last = None
        for _ in range(50):
            r = subprocess.run(["umount", self.mnt], capture_output=True, text=True)
            if r.returncode == 0:
                last = None
                break
            last = r.stderr.strip()
            if "not mounted" in last:
                last = None
                break
            time.sleep(0.1)
        if last is not None:
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)
        problems = []
        if last is not None:
            problems.append(f"umount {self.mnt} failed ({last}); detached lazily")
        if died_early:
            problems.append(f"FUSE daemon {self.pids} was already dead before umount (crash?)")
        if self.kind == "fuse":
            deadline = time.monotonic() + timeout
            while self.daemon_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            alive = [p for p in self.pids if _pid_alive(p)]
            if alive:
                problems.append(f"FUSE daemon {alive} still running {timeout:.0f}s after umount")
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    for p in alive:
                        try:
                            os.kill(p, sig)
                        except ProcessLookupError:
                            pass
                    time.sleep(1.0)
                    if not any(_pid_alive(p) for p in alive):
                        break
        if problems:
            log = self.daemon_log()
            raise MountError("; ".join(problems) + (f"\n--- daemon log tail ---\n{log}" if log else ""))


def _pid_alive(pid):
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it if it is (now) our child
        if done == pid:
            return False
    except ChildProcessError:
        pass
    # Every thread, not just the leader: a killed multi-threaded daemon's leader is a zombie as
    # soon as it exits, while a thread still finishing a syscall keeps the process's files (its
    # workdir lock) open until it exits too.
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                data = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        state = data[data.rindex(b")") + 2:data.rindex(b")") + 3]
        if state not in (b"Z", b"X"):
            return True
    return False


def _pids_mentioning(path):
    """Processes (other than us) whose command line contains `path`: the FUSE daemon(s)."""
    needle = os.fsencode(path)
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and os.path.basename(args[0]) in (b"umount", b"mount"):
            continue
        if any(needle in a for a in args) and _pid_alive(int(d)):
            found.append(int(d))
    return found


def _layer_opts(lowers, upper, work):
    opts = ["lowerdir=" + ":".join(lowers)]
    if upper is not None:
        opts += [f"upperdir={upper}", f"workdir={work}"]
    return opts


def mount_kernel(lowers, upper=None, work=None, mnt=None, extra_opts=KERNEL_BASE_OPTS):
    opts = ",".join(_layer_opts(lowers, upper, work) + list(extra_opts))
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()[-5:]
        raise MountError(f"kernel overlay mount failed: {r.stderr.strip()}\n  -o {opts}\n  "
                         + "\n  ".join(dmesg))
    return Mounted("kernel", mnt, desc=f"kernel overlay -o {opts}")


def mount_fuse(binary, lowers, upper=None, work=None, mnt=None, extra_opts=(), log=None):
    """Start `binary -o lowerdir=..,upperdir=..,workdir=.. mnt` (it daemonizes once mounted)."""
    opts = ",".join(_layer_opts(lowers, upper, work) + list(extra_opts))
    cmd = [binary, "-o", opts, mnt]
    if log is None:
        log = mnt.rstrip("/") + ".log"
    # Output goes to a file, not a pipe: a daemon that keeps stderr open would block a pipe reader.
    with open(log, "ab") as out:
        try:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=30)
        except subprocess.TimeoutExpired:
            for p in _pids_mentioning(mnt):
                os.kill(p, signal.SIGKILL)
            raise MountError(f"{' '.join(cmd)} did not return within 30 s (not daemonizing?)")
        except OSError as e:
            raise MountError(f"cannot run {binary}: {e}")
    if r.returncode != 0:
        with open(log, "rb") as f:
            text = f.read().decode(errors="replace")
        raise MountError(f"{' '.join(cmd)} exited {r.returncode}:\n{text}")
    deadline = time.monotonic() + 10
    while not (_mount_fstype(mnt) or "").startswith("fuse"):
        if time.monotonic() > deadline:
            raise MountError(f"{' '.join(cmd)} returned 0 but {mnt} is not a FUSE mount")
        time.sleep(0.02)
    pids = []
    deadline = time.monotonic() + 10
    while not pids and time.monotonic() < deadline:
        pids = _pids_mentioning(mnt)
        if not pids:
            time.sleep(0.05)
    return Mounted("fuse", mnt, pids=pids, log=log, desc=f"{binary} -o {opts}")


def mount_strata(lowers, upper=None, work=None, mnt=None, extra_opts=()):
    return mount_fuse(os.path.join(build_dir(), "strata-fs"), lowers, upper, work, mnt, extra_opts)


class Sut:
    """The system under test, chosen by STRATA_FS_BIN (a FUSE binary, or "kernel")."""

    def __init__(self):
        self.binary = sut_binary()
        self.is_kernel = self.binary == "kernel"
        self.name = "kernel(2nd mount)" if self.is_kernel else os.path.basename(self.binary)
        if not self.is_kernel and sut_extra_opts():
            self.name += " -o " + ",".join(sut_extra_opts())
        self.announced = False

    def require(self):
        if self.is_kernel:
            return
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            fail(f"SUT binary {self.binary} not found: build strata-fs (cmake --build build) or "
                 f"set STRATA_FS_BIN (e.g. /usr/bin/fuse-overlayfs, or 'kernel')")

    def render_form(self, form):
        """The rendering the SUT reads: the kernel knows no aufs whiteouts."""
        return "chardev" if self.is_kernel and form == "aufs" else form

    def mount(self, layers, mnt, kernel_opts=KERNEL_BASE_OPTS, fuse_opts=(), upper=True):
        up = layers.upper if upper else None
        work = layers.work if upper else None
        if self.is_kernel:
            return mount_kernel(layers.lowers, up, work, mnt, kernel_opts)
        extra = [o for o in list(fuse_opts) + sut_extra_opts() if o]
        m = mount_fuse(self.binary, layers.lowers, up, work, mnt, extra)
        # The passthrough=off runs are only worth something if the daemon really took the option.
        stats = daemon_stats(mnt)
        m.passthrough = None if stats is None else bool(stats.get("passthrough"))
        if not self.announced:
            self.announced = True
            state = {None: "unknown (no user.strata.stats)", True: "on", False: "off"}[m.passthrough]
            print(f"SUT {os.path.basename(self.binary)} -o {','.join(extra) or '(defaults)'}: "
                  f"FUSE passthrough {state}", flush=True)
        if "passthrough=off" in extra and m.passthrough:
            m.umount()
            raise MountError(f"{self.binary} mounted with -o passthrough=off but its user.strata.stats "
                             f"says passthrough is on")
        return m


def sut_extra_opts():
    """The extra -o options of a FUSE SUT, from STRATA_SUT_OPTS (comma-separated)."""
    return [o for o in os.environ.get("STRATA_SUT_OPTS", "").split(",") if o]


def daemon_stats(mnt):
    """strata-fs' live counters (the user.strata.stats xattr of the mount's root) as a dict, or
    None when the mount has none (the kernel overlay, another FUSE SUT)."""
    try:
        return json.loads(os.getxattr(mnt, "user.strata.stats"))
    except (OSError, ValueError):
        return None


def passthrough_on(mnt):
    """True only when the mount at `mnt` is a strata-fs that says it serves data by FUSE
    passthrough. That is the one setting under which a documented difference from the kernel is
    tolerated (a read-only fd opened before a copy-up may keep the old data; see issue 9)."""
    stats = daemon_stats(mnt)
    return bool(stats and stats.get("passthrough"))


# ------------------------------------------------------------------------------------------------
# abstract layer trees


@dataclass
class Node:
    """One entry of one layer, independent of how whiteouts/opaque dirs are spelled on disk."""
    kind: str  # dir file symlink hardlink fifo chr blk sock whiteout
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 1_600_000_000 * 10**9
    data: bytes = b""
    size: int = -1  # logical size of a sparse file (then data is empty and extents hold the bytes)
    extents: tuple = ()  # ((offset, bytes), ...)
    target: str = ""  # symlink target, or the hard link's source path in the same layer
    rdev: tuple = (0, 0)
    xattrs: dict = field(default_factory=dict)  # user.* only
    opaque: bool = False


@dataclass
class LayerTree:
    lowers: list  # [ {relpath: Node} ], index 0 is the uppermost lower (lowerdir= order)
    upper: dict = None  # None: no upper layer at all
    seed: int = 0

    def all_layers(self):
        return ([self.upper] if self.upper is not None else []) + list(self.lowers)


@dataclass
class Layers:
    """A rendering of a LayerTree on disk."""
    root: str
    lowers: list
    upper: str
    work: str
    form: str


ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SPECIALS = " -_#%'=@~+$!&;[]{},:()"
MAX_WHITEOUT_NAME = 251  # ".wh." + name must still fit in 255 bytes for the aufs rendering
SAFE_ABS_TARGET = "/nonexistent-strata-oracle"  # absolute symlinks never lead out of the mount
SAFE_CHR = [(1, 3), (1, 5), (1, 7), (240, 3), (60, 7)]
SAFE_BLK = [(7, 250), (60, 1), (61, 2)]
FILE_MODES = [0o644] * 6 + [0o755, 0o600, 0o4755, 0o2755, 0o6755, 0o000, 0o444, 0o1644, 0o777,
                            0o640, 0o2711]
DIR_MODES = [0o755] * 8 + [0o700, 0o555, 0o1777, 0o2775, 0o750, 0o000, 0o711]
OWNERS = [(0, 0)] * 8 + [(1000, 1000), (65534, 65534), (123456, 7), (0, 100), (42, 0)]


def name_bytes(name):
    return len(os.fsencode(name))


def _valid_name(name, max_bytes):
    b = os.fsencode(name)
    return (0 < len(b) <= max_bytes and b"/" not in b and b"\0" not in b
            and name not in (".", "..") and not name.startswith(".wh."))


def gen_name(rng, used, max_bytes=MAX_WHITEOUT_NAME):
    """A random file name: mostly plain, sometimes unicode, odd bytes, long or whiteout-like."""
    for _ in range(100):
        r = rng.random()
        word = "".join(rng.choice(ALNUM) for _ in range(rng.randint(1, 10)))
        if r < 0.55:
            name = word + rng.choice(["", "", ".txt", ".c", ".d", ".tar.gz"])
        elif r < 0.65:
            name = rng.choice(["é", "ü", "日本", "ß", "Ω", "😀", "ñ"]) + word
        elif r < 0.75:
            name = word + "".join(rng.choice(SPECIALS) for _ in range(rng.randint(1, 3))) + word
        elif r < 0.80:
            name = "." + word
        elif r < 0.83:
            name = word + rng.choice(["\n", "\t", "\x01", "\x7f"]) + "x"
        elif r < 0.86:
            name = word + "\udcff\udcfe"  # not valid UTF-8 on disk
        elif r < 0.92:
            name = word + "L" * max(0, rng.randint(150, max_bytes) - len(word))
        else:
            name = rng.choice(["wh.", ".whx", "..wh", ".wh", ".wh_", "wh..wh..opq", ".opq"]) + word
        if _valid_name(name, max_bytes) and name not in used:
            used.add(name)
            return name
    raise RuntimeError("could not generate a fresh name")


class _Ns:
    """A logical name in the shared namespace; every layer picks a type for it (or nothing)."""

    def __init__(self, name):
        self.name = name
        self.children = []


def _gen_namespace(rng, node, depth, max_depth):
    if depth >= max_depth:
        return
    count = rng.randint(7, 11) if depth == 0 else rng.randint(0, max(1, 6 - depth))
    used = set()
    for _ in range(count):
        child = _Ns(gen_name(rng, used))
        node.children.append(child)
        _gen_namespace(rng, child, depth + 1, max_depth)


def _rand_mtime(rng):
    return rng.randrange(1_000_000_000, 1_700_000_000) * 10**9 + rng.randrange(10**9)


def _rand_xattrs(rng):
    if rng.random() > 0.15:
        return {}
    out = {}
    for i in range(rng.randint(1, 3)):
        value = rng.choice([b"", b"v", b"hello world", rng.randbytes(rng.randint(1, 64))])
        out[f"user.k{i}{rng.choice(['', '.x', '_y'])}"] = value
    return out


def _rand_file(rng):
    n = Node("file", mode=rng.choice(FILE_MODES), mtime_ns=_rand_mtime(rng),
             xattrs=_rand_xattrs(rng))
    n.uid, n.gid = rng.choice(OWNERS)
    r = rng.random()
    if r < 0.10:
        n.data = b""
    elif r < 0.40:
        n.data = rng.randbytes(rng.randint(1, 64))
    elif r < 0.70:
        n.data = rng.randbytes(rng.randint(100, 5000))
    elif r < 0.80:
        n.data = rng.randbytes(rng.choice([4095, 4096, 4097, 8192, 65536]))
    elif r < 0.95:
        n.data = rng.randbytes(rng.randint(8192, 300_000))
    else:
        n.size = rng.randint(1, 16) << 20
        exts = []
        for _ in range(rng.randint(1, 3)):
            length = rng.randint(1, 8192)
            exts.append((rng.randrange(0, n.size - length), rng.randbytes(length)))
        exts.append((n.size - 1, b"\x01"))  # last byte written: holes are in the middle
        n.extents = tuple(exts)
    return n


def _rand_symlink(rng, depth, siblings):
    r = rng.random()
    if r < 0.35 and siblings:
        target = rng.choice(siblings)
    elif r < 0.55 and depth > 0:
        target = "../" * rng.randint(1, depth) + rng.choice(siblings or ["x"])
    elif r < 0.70:
        target = "nowhere/" + str(rng.randint(0, 999))
    elif r < 0.85:
        target = SAFE_ABS_TARGET + "/" + str(rng.randint(0, 999))
    elif r < 0.95:
        target = "."
    else:
        target = "/".join(["long"] * rng.randint(100, 500))
    n = Node("symlink", mode=0o777, target=target, mtime_ns=_rand_mtime(rng))
    n.uid, n.gid = rng.choice(OWNERS)
    return n


def _rand_special(rng, kind):
    n = Node(kind, mode=rng.choice([0o644, 0o600, 0o666, 0o000, 0o4644]), mtime_ns=_rand_mtime(rng))
    n.uid, n.gid = rng.choice(OWNERS)
    # Device numbers that are harmless if something does open them: never 0:0 (a whiteout),
    # never a real disk or terminal.
    if kind == "chr":
        n.rdev = rng.choice(SAFE_CHR)
    elif kind == "blk":
        n.rdev = rng.choice(SAFE_BLK)
    return n


def _rand_dir(rng, opaque=False):
    n = Node("dir", mode=rng.choice(DIR_MODES), mtime_ns=_rand_mtime(rng),
             xattrs=_rand_xattrs(rng), opaque=opaque)
    n.uid, n.gid = rng.choice(OWNERS)
    return n


def _fill_layer(rng, layer, ns, path, depth, below, files, is_bottom):
    siblings = [c.name for c in ns.children]
    for child in ns.children:
        p = f"{path}/{child.name}" if path else child.name
        under = below.get(p)
        if rng.random() > (0.6 if is_bottom else 0.42 if under is None else 0.5):
            continue
        r = rng.random()
        if under is not None and r < 0.45:
            kind = under if under not in ("whiteout", "hardlink") else "file"
        elif under is not None and r < 0.65 and name_bytes(child.name) <= MAX_WHITEOUT_NAME:
            kind = "whiteout"
        else:
            choices = (["dir"] * (10 if child.children else 4) + ["file"] * 6 + ["symlink"] * 2
                       + ["hardlink"] * (2 if files else 0) + ["fifo", "chr", "blk"]
                       + (["sock"] if rng.random() < 0.3 else []) + ["whiteout"])
            kind = rng.choice(choices)
        if kind == "dir":
            layer[p] = _rand_dir(rng, opaque=(not is_bottom and under == "dir" and rng.random() < 0.25))
            _fill_layer(rng, layer, child, p, depth + 1, below, files, is_bottom)
        elif kind == "file":
            layer[p] = _rand_file(rng)
            files.append(p)
        elif kind == "hardlink":
            layer[p] = Node("hardlink", target=rng.choice(files))
        elif kind == "symlink":
            layer[p] = _rand_symlink(rng, depth, siblings)
        elif kind in ("fifo", "chr", "blk", "sock"):
            layer[p] = _rand_special(rng, kind)
        else:
            layer[p] = Node("whiteout", mode=0)


def _deep_components(total):
    """Directory names (250 bytes each) whose joined path is close to `total` bytes."""
    comps = []
    length = 0
    while length + 251 + 40 < total:
        comps.append(chr(ord("a") + len(comps) % 26) * 250)
        length += 251
    return comps, total - length - 1


PROBE_DEEP_TOTAL = 3950  # relative path length of the deepest probe file (PATH_MAX is 4096)
NAME255 = "n" * 250 + "-255x"
NAME255_UPPER = "u" * 250 + "-255x"


def _add_probes(tree, rng):
    """A fixed subtree 'probe/' exercising the cases the targeted probes check by name."""
    bottom, top = tree.lowers[-1], tree.lowers[0]
    for layer in (bottom, top):
        layer["probe"] = Node("dir", mode=0o755, mtime_ns=_rand_mtime(rng))  # dirs default to 0644
    bottom[f"probe/{NAME255}"] = Node("file", data=b"255 bytes of name\n", mtime_ns=_rand_mtime(rng))
    bottom["probe/hl_a"] = Node("file", data=b"hard link pair\n", mode=0o640, mtime_ns=_rand_mtime(rng))
    bottom["probe/hl_b"] = Node("hardlink", target="probe/hl_a")
    bottom["probe/suid"] = Node("file", data=b"#!/bin/sh\n", mode=0o4755, mtime_ns=_rand_mtime(rng))
    bottom["probe/sgid"] = Node("file", data=b"x", mode=0o2755, uid=1000, gid=1000, mtime_ns=_rand_mtime(rng))
    bottom["probe/zero"] = Node("file", data=b"mode 0000 but root reads it\n", mode=0o000, mtime_ns=_rand_mtime(rng))
    bottom["probe/sticky"] = Node("dir", mode=0o1777, mtime_ns=_rand_mtime(rng))
    bottom["probe/sparse"] = Node("file", size=8 << 20, extents=((0, b"head"), (4 << 20, b"mid"),
                                                                ((8 << 20) - 4, b"tail")),
                                  mtime_ns=_rand_mtime(rng))
    bottom["probe/abs_link"] = Node("symlink", mode=0o777, target=SAFE_ABS_TARGET + "/x", mtime_ns=_rand_mtime(rng))
    bottom["probe/rel_link"] = Node("symlink", mode=0o777, target="../probe/suid", mtime_ns=_rand_mtime(rng))
    bottom["probe/dangling"] = Node("symlink", mode=0o777, target="does/not/exist", mtime_ns=_rand_mtime(rng))
    bottom["probe/fifo"] = Node("fifo", mode=0o644, mtime_ns=_rand_mtime(rng))
    bottom["probe/null"] = Node("chr", mode=0o666, rdev=(1, 3), mtime_ns=_rand_mtime(rng))
    bottom["probe/loop"] = Node("blk", mode=0o660, rdev=(7, 250), mtime_ns=_rand_mtime(rng))
    bottom["probe/gone"] = Node("file", data=b"whited out above\n")
    top["probe/gone"] = Node("whiteout", mode=0)
    bottom["probe/gone_dir"] = Node("dir", mode=0o755)
    bottom["probe/gone_dir/inside"] = Node("file", data=b"x")
    top["probe/gone_dir"] = Node("whiteout", mode=0)
    bottom["probe/opaque"] = Node("dir", mode=0o755)
    bottom["probe/opaque/hidden"] = Node("file", data=b"hidden by opaque\n")
    top["probe/opaque"] = Node("dir", mode=0o750, opaque=True, mtime_ns=_rand_mtime(rng))
    top["probe/opaque/visible"] = Node("file", data=b"visible\n")
    bottom["probe/merged"] = Node("dir", mode=0o755)
    bottom["probe/merged/low"] = Node("file", data=b"low\n")
    bottom["probe/merged/both"] = Node("file", data=b"low version\n")
    top["probe/merged"] = Node("dir", mode=0o700, mtime_ns=_rand_mtime(rng))
    top["probe/merged/high"] = Node("file", data=b"high\n")
    top["probe/merged/both"] = Node("file", data=b"high version\n")
    bottom["probe/file_over_dir"] = Node("dir", mode=0o755)
    bottom["probe/file_over_dir/child"] = Node("file", data=b"shadowed\n")
    top["probe/file_over_dir"] = Node("file", data=b"a file above a dir\n")
    bottom["probe/dir_over_file"] = Node("file", data=b"shadowed\n")
    top["probe/dir_over_file"] = Node("dir", mode=0o755)
    top["probe/dir_over_file/child"] = Node("file", data=b"child\n")
    # A path close to PATH_MAX whose directory chain is merged from two layers.
    comps, last = _deep_components(PROBE_DEEP_TOTAL - len("probe/deep/"))
    bottom["probe/deep"] = Node("dir", mode=0o755)
    top["probe/deep"] = Node("dir", mode=0o711)
    p = "probe/deep"
    for c in comps:
        p = f"{p}/{c}"
        bottom[p] = Node("dir", mode=0o755)
        top[p] = Node("dir", mode=0o755)
    bottom[f"{p}/{'z' * last}"] = Node("file", data=b"deep in the bottom layer\n")
    top[f"{p}/{'y' * last}"] = Node("file", data=b"deep in the top layer\n")
    if tree.upper is not None:
        tree.upper["probe"] = Node("dir", mode=0o755)
        tree.upper[f"probe/{NAME255_UPPER}"] = Node("file", data=b"255 in upper\n")
        tree.upper["probe/merged"] = Node("dir", mode=0o755)
        tree.upper["probe/merged/upper_only"] = Node("file", data=b"upper\n")
        tree.upper["probe/merged/low"] = Node("whiteout", mode=0)


def probe_deep_path():
    comps, last = _deep_components(PROBE_DEEP_TOTAL - len("probe/deep/"))
    return "probe/deep/" + "/".join(comps) + "/" + "y" * last


def generate_tree(seed, n_lowers=3, with_upper=True, empty_upper=False, big_dir=0, probes=True,
                  max_depth=4):
    """An abstract layer tree, fully determined by `seed`."""
    assert n_lowers >= 2, "the kernel needs two lowers for a mount without upper"
    rng = random.Random(seed)
    ns = _Ns("")
    _gen_namespace(rng, ns, 0, max_depth)
    layers_bottom_up = []
    below = {}
    n_layers = n_lowers + (1 if with_upper else 0)
    for i in range(n_layers):
        layer = {"": Node("dir", mode=rng.choice([0o755, 0o755, 0o700, 0o1777]),
                          mtime_ns=_rand_mtime(rng))}
        if not (with_upper and empty_upper and i == n_layers - 1):
            _fill_layer(rng, layer, ns, "", 0, below, [], is_bottom=(i == 0))
        for p, n in layer.items():
            if p:
                below[p] = n.kind
        layers_bottom_up.append(layer)
    top_down = list(reversed(layers_bottom_up))
    tree = LayerTree(lowers=top_down[1:] if with_upper else top_down,
                     upper=top_down[0] if with_upper else None, seed=seed)
    if probes:
        _add_probes(tree, rng)
    if big_dir:
        add_big_dir(tree, rng, big_dir)
    return tree


def add_big_dir(tree, rng, count, name="big"):
    """'big/' with `count` names spread over all layers (some in several, some whited out)."""
    layers = tree.all_layers()
    for layer in layers:
        layer[name] = Node("dir", mode=0o755)
    for i in range(count):
        entry = f"{name}/entry-{i:05d}"
        home = rng.randrange(len(layers))
        layers[home][entry] = Node("file", mode=0o644)
        if rng.random() < 0.1 and home > 0:
            layers[rng.randrange(home)][entry] = Node("file", mode=0o600, data=b"above")
        elif rng.random() < 0.05 and home > 0:
            layers[rng.randrange(home)][entry] = Node("whiteout", mode=0)


def render_tree(tree, root, form):
    """Write `tree` under `root` as lower0.. (lower0 uppermost), upper/ and an empty work/."""
    assert form in ("chardev", "aufs", "userxattr"), form
    os.makedirs(root)
    lowers = []
    for i, layer in enumerate(tree.lowers):
        d = os.path.join(root, f"lower{i}")
        _render_layer(layer, d, form)
        lowers.append(d)
    upper = work = None
    if tree.upper is not None:
        upper = os.path.join(root, "upper")
        _render_layer(tree.upper, upper, form)
        work = os.path.join(root, "work")
        os.mkdir(work)
    return Layers(root, lowers, upper, work, form)


def gen_layers(seed, root, n_lowers, form, **kw):
    """generate_tree + render_tree in one call: returns (LayerTree, Layers)."""
    tree = generate_tree(seed, n_lowers, **kw)
    return tree, render_tree(tree, root, form)


def _render_layer(layer, d, form):
    os.mkdir(d)
    dirs = []
    for path, n in layer.items():
        full = os.path.join(d, path) if path else d
        k = n.kind
        if k == "dir":
            if path:
                os.mkdir(full, 0o700)
            if n.opaque:
                if form == "aufs":
                    marker = os.path.join(full, ".wh..wh..opq")
                    os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0))
                    os.utime(marker, ns=(n.mtime_ns, n.mtime_ns))
                else:
                    ns = "trusted" if form == "chardev" else "user"
                    os.setxattr(full, f"{ns}.overlay.opaque", b"y")
            dirs.append((full, n))
        elif k == "whiteout":
            if form == "aufs":
                parent, name = os.path.split(full)
                marker = os.path.join(parent, ".wh." + name)
                os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0))
            else:
                marker = full
                os.mknod(full, stat.S_IFCHR | 0, os.makedev(0, 0))
            os.utime(marker, ns=(n.mtime_ns, n.mtime_ns))
            continue
        elif k == "hardlink":
            os.link(os.path.join(d, n.target), full)
            continue
        elif k == "file":
            fd = os.open(full, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            try:
                if n.size >= 0:
                    os.ftruncate(fd, n.size)
                    for off, data in n.extents:
                        os.pwrite(fd, data, off)
                else:
                    os.write(fd, n.data)
            finally:
                os.close(fd)
        elif k == "symlink":
            os.symlink(n.target, full)
        elif k == "fifo":
            os.mkfifo(full, 0o600)
        elif k in ("chr", "blk", "sock"):
            t = {"chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "sock": stat.S_IFSOCK}[k]
            os.mknod(full, t | 0o600, os.makedev(*n.rdev))
        else:
            raise ValueError(k)
        for name, value in n.xattrs.items():
            os.setxattr(full, name, value, follow_symlinks=False)
        os.chown(full, n.uid, n.gid, follow_symlinks=False)
        if k != "symlink":
            os.chmod(full, n.mode)  # after chown, which clears set-id bits
        os.utime(full, ns=(n.mtime_ns, n.mtime_ns), follow_symlinks=False)
    # Directories last and deepest first: creating entries changes a dir's mtime.
    for full, n in reversed(dirs):
        for name, value in n.xattrs.items():
            os.setxattr(full, name, value)
        os.chown(full, n.uid, n.gid)
        os.chmod(full, n.mode)
        os.utime(full, ns=(n.mtime_ns, n.mtime_ns))


def copy_layers(src, dst_root):
    """A fresh, identical copy of a rendering (cp -a keeps xattrs, devices, links and times)."""
    subprocess.run(["cp", "-a", "--", src.root, dst_root], check=True)
    rebase = lambda p: None if p is None else dst_root + p[len(src.root):]
    return Layers(dst_root, [rebase(p) for p in src.lowers], rebase(src.upper),
                  rebase(src.work), src.form)


def all_paths(tree):
    """Every path that exists in any layer, plus the aufs spellings of whiteouts/opaque markers."""
    paths = set()
    for layer in tree.all_layers():
        for p, n in layer.items():
            if not p:
                continue
            paths.add(p)
            parent, _, name = p.rpartition("/")
            if n.kind == "whiteout":
                paths.add(f"{parent}/.wh.{name}" if parent else f".wh.{name}")
            if n.kind == "dir" and n.opaque:
                paths.add(f"{p}/.wh..wh..opq")
    return sorted(paths, key=os.fsencode)


# ------------------------------------------------------------------------------------------------
# canonical listings

ALL_FIELDS = ("type", "mode", "nlink", "uid", "gid", "size", "dsize", "rdev", "target", "sha256",
              "mtime", "xattrs", "ino")


def env_excluded_fields():
    """STRATA_ORACLE_EXCLUDE=nlink,ino,...: fields left out of every listing and stat result, to
    look past a known difference and find the next one."""
    return {f for f in os.environ.get("STRATA_ORACLE_EXCLUDE", "").split(",") if f}


def esc(b):
    """A path as one readable line: undecodable bytes and control characters escaped."""
    if isinstance(b, str):
        b = os.fsencode(b)
    s = b.decode("utf-8", "backslashreplace")
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)
    # Long runs (the 250-byte probe names) are shortened so diffs stay readable.
    return re.sub(r"(.)\1{15,}", lambda m: f"{m.group(1)}{{x{len(m.group(0))}}}", s)


def _typechar(m):
    for test, c in ((stat.S_ISDIR, "d"), (stat.S_ISREG, "f"), (stat.S_ISLNK, "l"),
                    (stat.S_ISFIFO, "p"), (stat.S_ISCHR, "c"), (stat.S_ISBLK, "b"),
                    (stat.S_ISSOCK, "s")):
        if test(m):
            return c
    return "?"


def file_sha256(path):
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()[:24]


def _fmt_xattr_value(v):
    try:
        s = v.decode("ascii")
        if s.isprintable():
            return s
    except UnicodeDecodeError:
        pass
    return "0x" + v.hex()


def _xattrs(path, disk):
    try:
        names = sorted(os.listxattr(path, follow_symlinks=False))
    except OSError as e:
        return "!" + errname(e)
    parts = []
    for name in names:
        if disk and name.startswith("security."):
            continue
        overlay_own = disk and (name.startswith("trusted.overlay.") or name.startswith("user.overlay."))
        if overlay_own and name.split(".", 2)[2] not in ("opaque", "redirect"):
            # origin/impure/uuid/... hold file handles and uuids: only their presence is comparable
            parts.append(name)
            continue
        try:
            v = os.getxattr(path, name, follow_symlinks=False)
            parts.append(f"{name}={_fmt_xattr_value(v)}")
        except OSError as e:
            parts.append(f"{name}=!{errname(e)}")
    return ",".join(parts)


def describe(path, st, fields, disk=False):
    """The canonical fields of one entry (ino classes are added by the caller)."""
    t = _typechar(st.st_mode)
    if disk and t == "c" and st.st_rdev == 0:
        t = "whiteout"
    out = []
    add = lambda name, value: out.append(f"{name}={value}") if name in fields else None
    add("type", t)
    add("mode", f"{stat.S_IMODE(st.st_mode):04o}")
    add("nlink", st.st_nlink)
    add("uid", st.st_uid)
    add("gid", st.st_gid)
    if t == "f":
        add("size", st.st_size)
        if "sha256" in fields:
            try:
                add("sha256", file_sha256(path))
            except OSError as e:
                add("sha256", "!" + errname(e))
    elif t == "d":
        add("dsize", st.st_size)
    elif t == "l":
        add("size", st.st_size)
        try:
            add("target", esc(os.readlink(path)))
        except OSError as e:
            add("target", "!" + errname(e))
    elif t in ("c", "b"):
        add("rdev", f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    add("mtime", st.st_mtime_ns)
    if "xattrs" in fields:
        add("xattrs", _xattrs(path, disk))
    return out


def canonical_listing(root, exclude=(), readdir_check=True, skip=None, disk=False):
    """Sorted lines describing the tree under `root` without following symlinks.

    One line per entry: 'path<TAB>field=value...'. Entries sharing an st_ino (hard links) get
    'ino=@<first path>'. With readdir_check, problems of readdir itself are appended as lines
    starting with '!': a name listed twice, d_ino != st_ino, d_type != the lstat type, a listed
    name that lstat cannot find. `skip(relpath)` prunes a subtree. `disk=True` describes a layer
    directory as stored (whiteouts shown as such, overlay xattrs listed)."""
    fields = set(ALL_FIELDS) - set(exclude) - env_excluded_fields()
    root_b = os.fsencode(root)
    rows = {}
    problems = []
    inos = {}

    def visit(rel, entry):
        full = root_b + b"/" + rel if rel else root_b
        shown = esc(rel) if rel else "."
        try:
            st = os.lstat(full)
        except OSError as e:
            problems.append(f"!lstat {shown}: {errname(e)} (listed by readdir)")
            return
        if entry is not None and readdir_check:
            if entry.inode() != st.st_ino:
                problems.append(f"!d_ino {shown}: readdir d_ino != lstat st_ino")
            kinds = (entry.is_dir(follow_symlinks=False), entry.is_file(follow_symlinks=False),
                     entry.is_symlink())
            if kinds != (stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode), stat.S_ISLNK(st.st_mode)):
                problems.append(f"!d_type {shown}: readdir type != lstat type")
        rows[rel] = describe(full, st, fields, disk)
        if not stat.S_ISDIR(st.st_mode):
            inos.setdefault((st.st_dev, st.st_ino), []).append(rel)
            return
        try:
            entries = list(os.scandir(full))
        except OSError as e:
            problems.append(f"!scandir {shown}: {errname(e)}")
            return
        names = [e.name for e in entries]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"!dup {esc(rel + b'/' + dup if rel else dup)}: listed {names.count(dup)} times")
        seen = set()
        for e in sorted(entries, key=lambda e: e.name):
            if e.name in seen:
                continue
            seen.add(e.name)
            child = rel + b"/" + e.name if rel else e.name
            if skip is not None and skip(os.fsdecode(child)):
                continue
            visit(child, e)

    visit(b"", None)
    if "ino" in fields:
        for paths in inos.values():
            if len(paths) > 1:
                first = esc(min(paths))
                for p in paths:
                    rows[p].append(f"ino=@{first}")
    lines = [("\t".join([esc(rel) if rel else "."] + rows[rel])) for rel in sorted(rows)]
    return lines + sorted(problems)


def without_readdir_checks(listing):
    """A listing made with readdir_check=True as if made without: the lines only those checks add
    dropped; '!lstat', '!scandir' and '!dup' stay, since a listing without the checks has them
    too (e.g. a name readdir shows that lstat cannot reach: a path past PATH_MAX)."""
    return [l for l in listing if not l.startswith(("!d_ino ", "!d_type "))]


def upper_listing(upper, exclude=("dsize", "mtime", "ino")):
    """An upper (or lower) directory as stored on disk: whiteouts, opaque/redirect xattrs."""
    return canonical_listing(upper, exclude=exclude, readdir_check=False, disk=True)


# ------------------------------------------------------------------------------------------------
# comparing and reporting


def diff(expected, actual, name_expected="kernel", name_actual="sut", limit=120):
    """Unified diff of two line lists ('' when equal), cut after `limit` lines."""
    if expected == actual:
        return ""
    lines = list(difflib.unified_diff(expected, actual, name_expected, name_actual, n=0, lineterm=""))
    if len(lines) > limit:
        lines = lines[:limit] + [f"... {len(lines) - limit} more diff lines"]
    return "\n".join(lines)


def _parse_listing(lines):
    entries, problems = {}, []
    for line in lines:
        if line.startswith("!"):
            problems.append(line)
            continue
        path, *fields = line.split("\t")
        entries[path] = dict(f.split("=", 1) for f in fields)
    return entries, problems


def listing_diff(expected, actual, name_expected="kernel", name_actual="sut", examples=6):
    """A compact, grouped difference of two canonical listings ('' when equal): entries missing
    on one side, then per field the entries whose value differs, then readdir problems."""
    if expected == actual:
        return ""
    exp, exp_problems = _parse_listing(expected)
    act, act_problems = _parse_listing(actual)
    groups = {}

    def add(key, text):
        groups.setdefault(key, []).append(text)

    for path in sorted(set(exp) | set(act)):
        if path not in act:
            add(f"only in {name_expected}", f"{path} ({exp[path].get('type', '?')})")
        elif path not in exp:
            add(f"only in {name_actual}", f"{path} ({act[path].get('type', '?')})")
        else:
            for f in sorted(set(exp[path]) | set(act[path])):
                a, b = exp[path].get(f, "-"), act[path].get(f, "-")
                if a != b:
                    add(f"{f} differs", f"{path} (type={exp[path].get('type')}): {name_expected} {a} / {name_actual} {b}")
    for side, mine, other in ((name_expected, exp_problems, act_problems), (name_actual, act_problems, exp_problems)):
        extra = sorted(set(mine) - set(other))
        for line in extra:
            add(f"readdir problem {line.split()[0]} only in {side}", line.split(" ", 1)[1])
    out = []
    for key, items in groups.items():
        out.append(f"  {key}: {len(items)} entr{'y' if len(items) == 1 else 'ies'}")
        out += [f"      {t}" for t in items[:examples]]
        if len(items) > examples:
            out.append(f"      ... {len(items) - examples} more")
    return "\n".join(out)


def drop_kernel_quirks(expected, actual):
    """A readdir inconsistency the kernel itself shows is tolerated: the SUT may be consistent
    there. Seen on hand-made layers the kernel would never write itself: d_ino != st_ino for a
    merged dir whose upper has no origin xattr yet, and whiteouts listed by readdir (but not found
    by lookup) inside an opaque upper dir with nothing below. Returns the expected listing without
    such lines, and the lines dropped."""
    theirs = set(actual)
    kinds = ("!d_ino ", "!lstat ", "!d_type ", "!dup ")
    quirks = [l for l in expected if l.startswith(kinds) and l not in theirs]
    return [l for l in expected if l not in quirks], quirks


def _drop_quirks_both_ways(expected, actual):
    """drop_kernel_quirks, and with STRATA_FS_BIN=kernel also the SUT's: the SUT is then a kernel
    overlay too, whose d_ino quirk depends on what its caches hold, so it may show where the
    first mount does not."""
    expected, quirks = drop_kernel_quirks(expected, actual)
    if sut_binary() == "kernel":
        actual, more = drop_kernel_quirks(actual, expected)
        quirks += more
    return expected, actual, quirks


def compare_listings(expected, actual, name_expected="kernel", name_actual="sut"):
    """listing_diff after tolerating the kernel's own readdir quirks ('' when they agree)."""
    expected, actual, _ = _drop_quirks_both_ways(expected, actual)
    return listing_diff(expected, actual, name_expected, name_actual)


class Report:
    """Collects failures of one test run; finish() prints them and exits."""

    def __init__(self, title):
        self.title = title
        self.failures = []
        self.notes = []
        self.checks = 0

    def compare(self, what, expected, actual, name_expected="kernel", name_actual="sut", listing=None):
        """Record a failure if the line lists differ. Listings (auto-detected by a tab in the
        first line) get the grouped listing_diff, anything else a unified diff."""
        self.checks += 1
        if listing is None:
            listing = bool(expected) and "\t" in expected[0]
        if listing:
            expected, actual, quirks = _drop_quirks_both_ways(expected, actual)
            if quirks:
                self.note(f"{what}: tolerated kernel readdir quirk(s) the SUT does not share: "
                          + "; ".join(quirks[:3]) + (" ..." if len(quirks) > 3 else ""))
        d = (listing_diff if listing else diff)(expected, actual, name_expected, name_actual)
        if d:
            self.failures.append(f"{what}:\n{d}")
            print(f"MISMATCH {what}", flush=True)
        return not d

    def error(self, what):
        self.failures.append(what)
        print(f"ERROR {what.splitlines()[0]}", flush=True)

    def note(self, what):
        self.notes.append(what)

    def finish(self):
        for n in self.notes:
            print(f"note: {n}")
        if self.failures:
            print(f"\n{self.title}: {len(self.failures)} failure(s) in {self.checks} comparisons\n")
            for f in self.failures:
                print("=" * 100)
                print(f)
            sys.exit(1)
        print(f"{self.title}: ok ({self.checks} comparisons)")
        sys.exit(0)


def seeds_from_env(default, var="STRATA_ORACLE_SEEDS"):
    """STRATA_ORACLE_SEEDS=N runs seeds 1..N; 'a,b,c' runs exactly those."""
    v = os.environ.get(var, "").strip()
    if not v:
        return list(range(1, default + 1))
    if "," in v or "-" in v[1:]:
        out = []
        for part in v.split(","):
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
        return out
    return list(range(1, int(v) + 1))


def drop_caches():
    """Make the kernel forget dentries/inodes, so FUSE lookups go to the daemon again."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------
# libc helpers (renameat2, opendir/telldir/seekdir)

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old, new, flags):
    _libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                ctypes.c_uint]
    r = _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)


class _Dirent64(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir64.restype = ctypes.POINTER(_Dirent64)
_libc.readdir64.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.seekdir.restype = None
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.rewinddir.restype = None
_libc.rewinddir.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]


class CDir:
    """libc's DIR stream, for telldir/seekdir tests that os.scandir cannot express."""

    def __init__(self, path):
        self.d = _libc.opendir(os.fsencode(path))
        if not self.d:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)

    def read(self):
        """The next name (bytes) or None at the end; '.' and '..' included."""
        ctypes.set_errno(0)
        p = _libc.readdir64(self.d)
        if not p:
            e = ctypes.get_errno()
            if e:
                raise OSError(e, os.strerror(e))
            return None
        return p.contents.d_name

    def read_n(self, n):
        out = []
        while len(out) < n:
            name = self.read()
            if name is None:
                break
            out.append(name)
        return out

    def read_all(self):
        return self.read_n(1 << 30)

    def tell(self):
        return _libc.telldir(self.d)

    def seek(self, pos):
        _libc.seekdir(self.d, pos)

    def rewind(self):
        _libc.rewinddir(self.d)

    def close(self):
        if self.d:
            _libc.closedir(self.d)
            self.d = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

#!/usr/bin/env python3
"""Helpers for the mounted tests in test/mount/ (passthrough.py, write_features.py, trace.py).

Built on the shared test/lib/overlay.py (private mount namespace, cleanup on every exit path,
kernel overlay and FUSE mount helpers), which belongs to another owner: what these tests need on
top of it lives here instead.

- Suite runs independent sections: a section that fails (or raises) is reported and the next one
  still runs, so one daemon bug does not hide the others. expect() records a failure and goes on.
- Layout is one set of layer directories (lowers, upper, work, mountpoint) under a scratch root,
  mountable by strata-fs (daemonized or in the foreground with stderr captured) or by the kernel.
- stats()/layer_of() read the daemon's virtual xattrs.

Run as a program, it checks itself: both mount styles come up and go down with their daemon,
stats() and layer_of() parse. (ctest skips it: CMakeLists.txt treats *lib.py as a helper.)

Only the Python standard library is used.
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "lib"))
import overlay as ov  # noqa: E402

SKIP = ov.SKIP
STATS_XATTR = "user.strata.stats"
LAYER_XATTR = "user.strata.layer"
KERNEL_OPTS = ("redirect_dir=on",) + ov.KERNEL_BASE_OPTS


def strata_fs():
    return os.path.join(ov.build_dir(), "strata-fs")


def start(title, need_fuse=True):
    """Enter a private mount namespace (re-exec), check the daemon exists, return a Suite."""
    ov.enter_private_mount_namespace(need_fuse)
    binary = strata_fs()
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        ov.fail(f"no daemon at {binary}: build first (cmake --build build)")
    return Suite(title)


# ------------------------------------------------------------------------------------------------
# sections and expectations


class SectionFailed(Exception):
    pass


class Suite:
    def __init__(self, title):
        self.title = title
        self.failures = []  # (section, message)
        self.notes = []
        self.current = None
        self.passed = []
        self.t0 = time.monotonic()

    def expect(self, cond, what, detail=""):
        """Record a failure of the current section when `cond` is false; returns cond."""
        if not cond:
            msg = what + (f"\n      {detail}" if detail else "")
            self.failures.append((self.current, msg))
            print(f"  FAIL {self.current}: {msg}", flush=True)
        return bool(cond)

    def expect_eq(self, actual, expected, what, detail=""):
        return self.expect(actual == expected, what,
                           f"expected {expected!r}, got {actual!r}" + (f"\n      {detail}" if detail else ""))

    def require(self, cond, what, detail=""):
        """Like expect, but ends the section (later checks would only repeat the failure)."""
        if not self.expect(cond, what, detail):
            raise SectionFailed(what)

    def note(self, what):
        self.notes.append(f"{self.current}: {what}")
        print(f"  note {self.current}: {what}", flush=True)

    def run(self, name, fn, *args):
        self.current = name
        before = len(self.failures)
        t = time.monotonic()
        print(f"-- {name}", flush=True)
        try:
            fn(*args)
        except SectionFailed:
            pass
        except Exception:
            self.failures.append((name, "raised:\n" + traceback.format_exc()))
            print(f"  FAIL {name}: raised\n{traceback.format_exc()}", flush=True)
        finally:
            # A section's mounts must not leak into the next one (and umount() checks the daemon).
            for m in reversed(list(ov._active_mounts)):
                try:
                    m.umount()
                except Exception as e:
                    self.failures.append((name, f"cleanup: {e}"))
        took = time.monotonic() - t
        if len(self.failures) == before:
            self.passed.append(name)
            print(f"   ok {name} ({took:.1f} s)", flush=True)

    def finish(self):
        total = time.monotonic() - self.t0
        print()
        for n in self.notes:
            print(f"note: {n}")
        if self.failures:
            failed = sorted({s for s, _ in self.failures}, key=lambda s: [f[0] for f in self.failures].index(s))
            print(f"\n{self.title}: {len(failed)} section(s) failed, {len(self.passed)} passed ({total:.1f} s)")
            for s, msg in self.failures:
                print(f"=== {s}: {msg}")
            sys.exit(1)
        print(f"{self.title}: ok, {len(self.passed)} sections ({total:.1f} s)")
        sys.exit(0)


# ------------------------------------------------------------------------------------------------
# layers and mounts


class Layout:
    """lower0..lowerN-1 (lower0 uppermost, as in lowerdir=), upper, work and mnt under `root`."""

    def __init__(self, root, n_lowers=2, upper=True):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.lowers = [os.path.join(root, f"lower{i}") for i in range(n_lowers)]
        self.upper = os.path.join(root, "upper") if upper else None
        self.work = os.path.join(root, "work") if upper else None
        self.mnt = os.path.join(root, "mnt")
        for d in self.lowers + [self.upper, self.work, self.mnt]:
            if d:
                os.makedirs(d, exist_ok=True)
        self.mount = None

    # paths
    def m(self, rel=""):
        return os.path.join(self.mnt, rel) if rel else self.mnt

    def u(self, rel=""):
        return os.path.join(self.upper, rel) if rel else self.upper

    def l(self, i, rel=""):
        return os.path.join(self.lowers[i], rel) if rel else self.lowers[i]

    # building lower content (before mounting)
    def write(self, layer_dir, rel, data=b"", mode=None):
        p = os.path.join(layer_dir, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        if mode is not None:
            os.chmod(p, mode)
        return p

    def mkdir(self, layer_dir, rel, mode=0o755):
        p = os.path.join(layer_dir, rel)
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
        return p

    def whiteout(self, layer_dir, rel):
        p = os.path.join(layer_dir, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.mknod(p, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        return p

    def opaque(self, layer_dir, rel):
        p = self.mkdir(layer_dir, rel)
        os.setxattr(p, "trusted.overlay.opaque", b"y")
        return p

    # mounting
    def mount_strata(self, opts=(), log=None):
        self.mount = ov.mount_fuse(strata_fs(), self.lowers, self.upper, self.work, self.mnt, list(opts), log=log)
        return self.mount

    def mount_strata_fg(self, opts=(), stderr_path=None):
        self.mount = mount_foreground(self.lowers, self.upper, self.work, self.mnt, opts, stderr_path)
        return self.mount

    def mount_kernel(self, opts=KERNEL_OPTS):
        self.mount = ov.mount_kernel(self.lowers, self.upper, self.work, self.mnt, opts)
        return self.mount

    def umount(self):
        if self.mount is not None:
            m, self.mount = self.mount, None
            m.umount()

    def remount(self, opts=()):
        kind = self.mount.kind if self.mount else "fuse"
        self.umount()
        return self.mount_kernel() if kind == "kernel" else self.mount_strata(opts)

    @property
    def daemon_pid(self):
        return self.mount.pids[0] if self.mount and self.mount.pids else None


def mount_foreground(lowers, upper, work, mnt, opts=(), stderr_path=None, binary=None):
    """strata-fs -f in the background of this process, stdout+stderr to `stderr_path`.

    Returns an overlay.Mounted whose pid is the daemon (our child, so umount() can reap it)."""
    binary = binary or strata_fs()
    option_list = ",".join(ov._layer_opts(lowers, upper, work) + list(opts))
    stderr_path = stderr_path or mnt.rstrip("/") + ".stderr"
    with open(stderr_path, "ab") as out:
        proc = subprocess.Popen([binary, "-f", "-o", option_list, mnt], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while not (ov._mount_fstype(mnt) or "").startswith("fuse"):
        if proc.poll() is not None:
            raise ov.MountError(f"strata-fs -f exited {proc.returncode} before mounting:\n{read_text(stderr_path)}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise ov.MountError(f"strata-fs -f did not mount {mnt} within 10 s:\n{read_text(stderr_path)}")
        time.sleep(0.02)
    return ov.Mounted("fuse", mnt, pids=[proc.pid], log=stderr_path, desc=f"{binary} -f -o {option_list}")


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def stats(mnt):
    """The daemon's counters (user.strata.stats on the mount root) as a dict."""
    return json.loads(os.getxattr(mnt, STATS_XATTR))


def layer_of(path):
    return os.getxattr(path, LAYER_XATTR, follow_symlinks=False).decode()


def signal_and_wait(pid, path, sig=signal.SIGUSR1, needle="", timeout=5.0):
    """Send `sig` to `pid`, then wait until `path` grows (and contains `needle`); returns the new text."""
    before = os.path.getsize(path) if os.path.exists(path) else 0
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = read_text(path)
        if len(text.encode()) > before and needle in text[before:]:
            time.sleep(0.05)  # let a multi-line write finish (it is one write, but be kind)
            return read_text(path).encode()[before:].decode(errors="replace")
        time.sleep(0.02)
    return read_text(path).encode()[before:].decode(errors="replace")


def kernel_offers_passthrough():
    """(offered, why): FUSE passthrough needs Linux >= 6.9 built with CONFIG_FUSE_PASSTHROUGH.
    An unreadable kernel config counts as offered: then a daemon without passthrough fails."""
    release = os.uname().release
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return True, f"kernel {release}: version not parsed, assuming passthrough"
    if (major, minor) < (6, 9):
        return False, f"kernel {release} < 6.9 has no FUSE passthrough"
    config = None
    try:
        import gzip
        with gzip.open("/proc/config.gz", "rt") as f:
            config = f.read()
    except OSError:
        try:
            with open(f"/boot/config-{release}") as f:
                config = f.read()
        except OSError:
            pass
    if config is not None and "CONFIG_FUSE_PASSTHROUGH=y" not in config:
        return False, f"kernel {release} is built without CONFIG_FUSE_PASSTHROUGH"
    return True, f"kernel {release} offers FUSE passthrough"


def scratch(name):
    return ov.make_temp_dir(prefix=f"strata-mount-{name}.")


def file_type(path):
    return ov._typechar(os.lstat(path).st_mode)


def is_whiteout(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def xattr_or_none(path, name):
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def run_quiet(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def have(tool):
    return shutil.which(tool) is not None


# ------------------------------------------------------------------------------------------------
# self-test


def _self_test(s):
    for style in ("daemon", "foreground"):
        L = Layout(scratch(f"selftest-{style}"), n_lowers=2)
        L.write(L.l(1), "f", b"lower\n")
        if style == "daemon":
            L.mount_strata()
        else:
            L.mount_strata_fg()
        pid = L.daemon_pid
        s.expect(pid is not None and ov._pid_alive(pid), f"[{style}] daemon pid found and alive")
        st = stats(L.mnt)
        s.expect(isinstance(st.get("read_requests"), int) and isinstance(st.get("passthrough"), bool),
                 f"[{style}] stats parse", repr(st))
        s.expect_eq(layer_of(L.m("f")), L.l(1), f"[{style}] layer_of")
        L.umount()
        s.expect(not ov._pid_alive(pid), f"[{style}] daemon gone after umount")
        s.expect(L.mnt not in ov.mount_points(), f"[{style}] unmounted")


if __name__ == "__main__":
    suite = start("mountlib self-test")
    suite.run("mount styles, stats, layer_of", _self_test, suite)
    suite.finish()

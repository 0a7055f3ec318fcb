"""Shared helpers of the `strata` tool tests (test/tool/*.py): build layer trees with every marker
the overlay formats know, run build/strata, and compare its output with what the layers hold.

Why it is shaped this way:
- Each test builds its layers fresh in a temp dir and states the expected output as exact lines
  derived from that tree, so a wrong verdict cannot hide behind a loose match.
- Char-device whiteouts need mknod (root) and trusted.overlay.* xattrs need CAP_SYS_ADMIN; the
  temp dir's filesystem must take user.* and trusted.* xattrs. Without them the test exits 77
  (skip, never a silent pass).
- Failures are collected, not fatal, so one run shows everything that is wrong.

Only the Python standard library is used.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77


def repo_root():
    return os.environ.get("STRATA_SRC") or os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def build_dir():
    return os.environ.get("STRATA_BUILD") or os.path.join(repo_root(), "build")


def strata_bin():
    return os.path.join(build_dir(), "strata")


def skip(name, reason):
    print(f"{name}: SKIP: {reason}", flush=True)
    sys.exit(SKIP)


class Suite:
    """ok/FAIL lines as they come, a summary and the exit status at the end."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failures = []

    def check(self, title, problems):
        """`problems`: a list of strings (empty: passed) or a single string."""
        if isinstance(problems, str):
            problems = [problems] if problems else []
        if problems:
            self.failures.append(title)
            print(f"FAIL - {title}")
            for p in problems:
                for line in str(p).splitlines():
                    print(f"    {line}")
        else:
            self.passed += 1
            print(f"ok - {title}")

    def expect_lines(self, title, result, expected, rc=0):
        """stdout must be exactly `expected` (a list of lines), exit status `rc`, stderr empty."""
        problems = []
        if result.returncode != rc:
            problems.append(f"exit status {result.returncode}, want {rc}")
        got = result.stdout.splitlines()
        if got != expected:
            problems.append("stdout differs (- want, + got):")
            import difflib
            problems.extend(difflib.unified_diff(expected, got, lineterm="", n=2))
        if result.stderr:
            problems.append(f"stderr not empty: {result.stderr!r}")
        if problems:
            problems.append(f"command: {' '.join(result.args)}")
        self.check(title, problems)

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {len(self.failures)} failed")
        for f in self.failures:
            print(f"failed: {f}")
        sys.exit(1 if self.failures else 0)


def run(*args, check_bin=True):
    """Run build/strata ARGS; returns the CompletedProcess (text mode, surrogateescape)."""
    return subprocess.run([strata_bin(), *args], capture_output=True, text=True,
                          errors="surrogateescape", timeout=60, stdin=subprocess.DEVNULL)


def parse_json(suite, title, result):
    try:
        return json.loads(result.stdout)
    except ValueError as e:
        suite.check(title, [f"stdout is not JSON: {e}", result.stdout[:2000]])
        return None


# ------------------------------------------------------------------------------------------------
# building layers


class Layers:
    """A temp dir holding layer directories; paths are absolute and canonical."""

    def __init__(self, prefix):
        self.root = os.path.realpath(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TMPDIR", "/tmp")))

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def dir(self, rel, mode=0o755):
        p = self.path(rel)
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
        return p

    def file(self, rel, data="", mode=0o644):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(data)
        os.chmod(p, mode)
        return p

    def whiteout(self, rel):
        """The kernel's form: a character device 0/0."""
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        os.mknod(p, 0o600 | 0o020000, os.makedev(0, 0))
        return p

    def chardev(self, rel, major, minor):
        p = self.path(rel)
        os.mknod(p, 0o600 | 0o020000, os.makedev(major, minor))
        return p

    def aufs_whiteout(self, rel):
        """The OCI/aufs form: an empty file .wh.NAME beside NAME."""
        d, name = os.path.split(rel)
        return self.file(os.path.join(d, ".wh." + name))

    def opaque(self, rel, kind):
        """kind: trusted, user (xattr overlay.opaque=y) or aufs (.wh..wh..opq marker)."""
        p = self.dir(rel)
        if kind == "aufs":
            self.file(os.path.join(rel, ".wh..wh..opq"))
        else:
            os.setxattr(p, f"{kind}.overlay.opaque", b"y")
        return p

    def redirect(self, rel, target, kind="trusted"):
        p = self.dir(rel)
        os.setxattr(p, f"{kind}.overlay.redirect", target.encode())
        return p


def require_markers(name):
    """Skip unless this process can write every marker (root, and xattrs on the temp dir's fs)."""
    if os.geteuid() != 0:
        skip(name, "needs root (char-device whiteouts and trusted.* xattrs)")
    if not os.path.exists(strata_bin()):
        skip(name, f"no executable {strata_bin()} (build first, or set STRATA_BUILD)")
    probe = Layers("strata-tool-probe.")
    try:
        d = probe.dir("d")
        for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
            try:
                os.setxattr(d, attr, b"y")
            except OSError as e:
                skip(name, f"the temp dir's filesystem refuses {attr}: {e} (set TMPDIR)")
        try:
            probe.whiteout("w")
        except OSError as e:
            skip(name, f"cannot mknod a 0/0 whiteout: {e}")
    finally:
        probe.cleanup()


# ------------------------------------------------------------------------------------------------
# the shared fixture: two lowers and an upper with every marker


def build_fixture(t):
    """Lay out l1 (upper lower), l2 (bottom) and u (upper) under Layers `t`; returns (l1, l2, u).

    What each entry is for (the expected outputs in which.py, diff.py and check.py follow it):
      etc/            merged from all three: motd in all (upper wins), hosts whited out (char 0/0)
      gone.txt        in l1, deleted by an aufs whiteout in the upper (.wh.gone.txt)
      opq/ uopq/ aopq/  upper dirs made opaque by trusted.overlay.opaque, user.overlay.opaque and
                      .wh..wh..opq; each hides a file of l2
      moved/          upper dir redirected to /red (a renamed merged dir), red whited out
      renamed/        upper dir with a relative redirect to reldir (of l1), reldir whited out
      newdir/         upper only, with a stray whiteout inside
      data/old        a lower dir whited out in the upper
      neverwas        a stray whiteout at the upper's root
      baddev          a char device 0:5 in the upper: not a whiteout
      shadowed        a file in l1 over a dir in l2
      mix/            a dir in the upper over a file in l1 (not merged)
      lonely.txt      in l2, deleted by an aufs whiteout in l1
      lopq/           opaque (trusted) in l1, hiding l2's lopq/below
      strayl1         a whiteout in l1 that hides nothing
    """
    l1, l2, u = t.dir("l1"), t.dir("l2"), t.dir("u")
    # l2: the bottom layer
    t.file("l2/etc/motd", "base\n")
    t.file("l2/etc/hosts", "127.0.0.1 localhost\n")
    t.file("l2/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    t.file("l2/data/old/f", "old\n")
    t.file("l2/data/keep", "keep\n")
    t.file("l2/opq/hidden", "h\n")
    t.file("l2/uopq/hidden2", "h2\n")
    t.file("l2/aopq/hidden3", "h3\n")
    t.file("l2/red/a/file", "redirected\n")
    t.file("l2/shadowed/x", "x\n")
    t.file("l2/lonely.txt", "alone\n")
    t.file("l2/lopq/below", "below\n")
    # l1
    t.file("l1/etc/motd", "l1 motd\n")
    t.file("l1/etc/l1only", "only in l1\n")
    t.file("l1/shadowed", "a file over a dir\n")
    t.file("l1/gone.txt", "soon gone\n")
    t.file("l1/mix", "a file under a dir\n")
    t.aufs_whiteout("l1/lonely.txt")
    t.opaque("l1/lopq", "trusted")
    t.file("l1/lopq/top", "top\n")
    t.whiteout("l1/strayl1")
    t.file("l1/reldir/sub/g", "g\n")
    # u: the upper
    t.file("u/etc/motd", "upper motd\n")
    t.whiteout("u/etc/hosts")
    t.aufs_whiteout("u/gone.txt")
    t.opaque("u/opq", "trusted")
    t.file("u/opq/new.txt", "new\n")
    t.opaque("u/uopq", "user")
    t.opaque("u/aopq", "aufs")
    t.redirect("u/moved", "/red")
    t.whiteout("u/red")
    t.redirect("u/renamed", "reldir")
    t.whiteout("u/reldir")
    t.file("u/newdir/f", "f\n")
    t.whiteout("u/newdir/stray")
    t.whiteout("u/data/old")
    t.whiteout("u/neverwas")
    t.chardev("u/baddev", 0, 5)
    t.file("u/mix/inside", "inside\n")
    return l1, l2, u

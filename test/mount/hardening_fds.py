#!/usr/bin/env python3
"""File descriptors (issue 7): strata-fs keeps a descriptor per layer for every directory the
kernel holds, so a walk of a big merged tree needs tens of thousands of them. No EMFILE/ENFILE
may reach a user: the daemon raises its soft limit at start and must degrade gracefully when a
walk touches more directories than descriptors allow.

Tree: 3 lowers with the same 100 x 100 directories (30,300 directories on disk, 10,100 merged
directories with 3 layer descriptors each) and a file in every 10th leaf.

  raised   strata-fs started as `prlimit --nofile=2048:2048 strata-fs ...` as root: it may raise
           the limit itself (CAP_SYS_RESOURCE); find, ls -lR and a stat of everything must see
           every entry without an error
  capped   the same, but the daemon cannot raise the hard limit (setpriv --bounding-set
           -sys_resource): 2048 descriptors for 30,000 directory layers. find, ls -lR and stat
           of everything must still see every entry without EMFILE/ENFILE; the daemon must stay up

Environment: HARDENING_FDS_FANOUT (directories per level, default 100), HARDENING_FDS_LIMIT
(default 2048).
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "hardening"))
import hardlib as hl  # noqa: E402
from hardlib import ml, ov  # noqa: E402

FANOUT = hl.env_int("HARDENING_FDS_FANOUT", 100)
LIMIT = hl.env_int("HARDENING_FDS_LIMIT", 2048)


def build(L):
    files = 0
    for i, layer in enumerate(L.lowers):
        for a in range(FANOUT):
            for b in range(FANOUT):
                d = os.path.join(layer, f"t/a{a:03d}/b{b:03d}")
                os.makedirs(d)
                if b % 10 == i:
                    with open(os.path.join(d, f"f{i}"), "wb") as f:
                        f.write(b"x")
                    files += 1
    dirs = 1 + FANOUT + FANOUT * FANOUT
    return dirs, files


def daemon_limits(pid):
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return line.split()[3:5]
    except OSError:
        pass
    return ["?", "?"]


def daemon_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def walk_stat(mnt):
    """(entries seen, {errno: count}, first errors) of a stat of everything."""
    seen, errs, first = 0, {}, []

    def onerror(e):
        errs[hl.errname(e)] = errs.get(hl.errname(e), 0) + 1
        if len(first) < 5:
            first.append(f"{e.filename}: {hl.errname(e)}")

    for dirpath, dirnames, filenames in os.walk(mnt, onerror=onerror):
        for n in dirnames + filenames:
            try:
                os.lstat(os.path.join(dirpath, n))
                seen += 1
            except OSError as e:
                onerror(e)
    return seen, errs, first


def run_walks(s, tag, L, dirs, files):
    expected = dirs + files  # entries below the mount root
    pid = L.daemon_pid
    lim = daemon_limits(pid)
    print(f"  [{tag}] daemon {pid}: Max open files soft {lim[0]} hard {lim[1]}", flush=True)
    t0 = time.monotonic()
    r = subprocess.run(["find", L.mnt], capture_output=True, text=True)
    n = len(r.stdout.splitlines()) - 1
    errors = [l for l in r.stderr.splitlines() if l.strip()]
    print(f"  [{tag}] find: {n} entries, {len(errors)} error lines, {time.monotonic() - t0:.1f} s, "
          f"daemon holds {daemon_fds(pid)} fds", flush=True)
    s.expect(r.returncode == 0 and not errors and n == expected, f"[{tag}] find sees all {expected} entries without errors",
             f"exit {r.returncode}, {n} entries, stderr: {errors[:3]}")
    t0 = time.monotonic()
    r = subprocess.run(["ls", "-lR", L.mnt], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    errors = [l for l in r.stderr.splitlines() if l.strip()]
    print(f"  [{tag}] ls -lR: exit {r.returncode}, {len(errors)} error lines, {time.monotonic() - t0:.1f} s, "
          f"daemon holds {daemon_fds(pid)} fds", flush=True)
    s.expect(r.returncode == 0 and not errors, f"[{tag}] ls -lR without errors", f"exit {r.returncode}: {errors[:3]}")
    t0 = time.monotonic()
    seen, errs, first = walk_stat(L.mnt)
    print(f"  [{tag}] stat of everything: {seen} entries, errors {errs}, {time.monotonic() - t0:.1f} s, "
          f"daemon holds {daemon_fds(pid)} fds", flush=True)
    s.expect(not errs and seen == expected, f"[{tag}] stat of all {expected} entries without errors",
             f"{seen} seen, errors {errs}: {first}")
    s.expect(L.mount.daemon_alive(), f"[{tag}] daemon alive after the walks", L.mount.daemon_log())
    # Writes still work deep in the tree (a copy-up needs descriptors too).
    w = hl.call(hl.write_file, L.m(f"t/a{FANOUT - 1:03d}/b{FANOUT - 1:03d}/new"), b"new\n")[0]
    s.expect_eq(w, "ok", f"[{tag}] creating a file deep in the tree after the walks")


def wrapper(L, cap):
    path = os.path.join(L.root, f"strata-fs-{'capped' if cap else 'prlimit'}")
    drop = "setpriv --bounding-set -sys_resource " if cap else ""
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nexec prlimit --nofile={LIMIT}:{LIMIT} {drop}{ml.strata_fs()} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def have_cap_sys_resource():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def section(s, L, dirs, files, cap):
    tag = "capped" if cap else "raised"
    if not cap and not have_cap_sys_resource():
        s.note("this process has no CAP_SYS_RESOURCE (bounding set): the daemon cannot raise a hard limit "
               "here, so the 'raised' case would only repeat the capped one; not run")
        return
    L.mount = ov.mount_fuse(wrapper(L, cap), L.lowers, L.upper, L.work, L.mnt)
    try:
        run_walks(s, tag, L, dirs, files)
    finally:
        if L.mount.daemon_alive():
            L.umount()
        else:
            hl.kill_daemon(L.mount)
            L.mount = None
        hl.clear_dir(L.upper)
        hl.clear_dir(L.work)


def main():
    s = ml.start("hardening: file descriptors on a big merged tree")
    for tool in ("prlimit", "setpriv", "find"):
        if not ml.have(tool):
            ov.skip(f"{tool} is missing")
    L = ml.Layout(ml.scratch("fds"), n_lowers=3)
    t0 = time.monotonic()
    dirs, files = build(L)
    print(f"built {dirs * 3} directories ({dirs} merged) and {files} files in {time.monotonic() - t0:.1f} s",
          flush=True)
    s.run(f"raised: prlimit --nofile={LIMIT}:{LIMIT}, the daemon may raise it", section, s, L, dirs, files, False)
    s.run(f"capped: {LIMIT} descriptors the daemon cannot raise", section, s, L, dirs, files, True)
    s.finish()


if __name__ == "__main__":
    main()

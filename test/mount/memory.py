#!/usr/bin/env python3
"""The daemon's memory follows what the kernel holds, and stays bounded (issue 6).

A lower tree of 100k files (20k under the sanitizers, whose allocators make RSS meaningless) is
walked with du (a LOOKUP per file: one node each in the daemon).

  a  the node table follows the kernel: after the walk it holds every file; after the kernel
     drops its dentries and inodes (drop_caches) it holds none of them, and a second walk makes
     them again (nothing leaked, nothing kept).
  b  memory is bounded: four rounds of walk and drop end where the first walk did (with an arena
     per thread, glibc scattered the freed nodes and the daemon grew by a third by the fourth
     round), and after a drop the daemon gives most of it back (it kept all of it before).
     Per-node cost is printed. Normal build only.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mountlib as ml  # noqa: E402

SANITIZED = bool(os.environ.get("ASAN_OPTIONS") or os.environ.get("TSAN_OPTIONS"))
FILES = 20_000 if SANITIZED else 100_000
DIRS = 100


def build(L):
    per_layer = FILES // 2 // DIRS
    for i, layer in enumerate(L.lowers):
        for d in range(DIRS):
            p = os.path.join(layer, f"d{d:03d}")
            os.makedirs(p, exist_ok=True)
            for f in range(per_layer):
                with open(os.path.join(p, f"l{i}-f{f:05d}"), "wb"):
                    pass


def nodes(L):
    return ml.stats(L.mnt)["inodes"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def walk(L):
    subprocess.run(["du", "-s", L.mnt], check=True, stdout=subprocess.DEVNULL)


def drop(L, below):
    """drop_caches, then wait for the kernel's FORGETs to reach the daemon (they are asynchronous)."""
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")
    deadline = time.monotonic() + 20
    n = nodes(L)
    while n >= below and time.monotonic() < deadline:
        time.sleep(0.2)
        n = nodes(L)
    return n


def section_a(s, L):
    L.mount_strata()  # (each section mounts afresh: the suite unmounts after every section)
    walk(L)
    held = nodes(L)
    s.expect(held >= FILES, f"after a walk the daemon holds a node per file ({held} for {FILES} files)")
    left = drop(L, below=200)
    s.expect(left < 200, f"after drop_caches it holds almost none ({left})")
    walk(L)
    again = nodes(L)
    s.expect(again >= FILES, f"a second walk makes them again ({again}; {held} the first time)")
    drop(L, below=200)


def section_b(s, L):
    if SANITIZED:
        s.note("skipped: RSS under a sanitizer's allocator says nothing")
        return
    L.mount_strata()
    pids = [p for p in ml.ov._pids_mentioning(L.mnt) if os.path.exists(f"/proc/{p}/status")]
    s.require(len(pids) == 1, f"one daemon process serves the mount ({pids})")
    pid = pids[0]
    base = rss_kib(pid)
    walk(L)
    first = rss_kib(pid)
    dropped = []
    for _ in range(3):
        left = drop(L, below=200)
        s.require(left < 200, f"the kernel dropped the nodes before the measurement ({left} left after 20 s)")
        dropped.append(rss_kib(pid))
        walk(L)
    last = rss_kib(pid)
    per_node = (first - base) * 1024 / nodes(L)
    s.note(f"RSS: {base} KiB mounted, {first} KiB after the first walk ({per_node:.0f} bytes per node), "
           f"{last} KiB after the fourth; after drops: {dropped}")
    s.expect(last <= first * 1.1 + 1024, f"the fourth walk ends within 10% of the first ({last} vs {first} KiB)")
    s.expect(max(dropped) < base + (first - base) / 2,
             f"after a drop most of the walk's memory is given back ({max(dropped)} KiB, walk {first}, mounted {base})")


def main():
    s = ml.start(f"memory: the daemon's nodes and RSS over walks of {FILES} files")
    L = ml.Layout(ml.scratch("memory"), n_lowers=2)
    build(L)
    s.run("a: the node table follows the kernel", section_a, s, L)
    s.run("b: memory bounded and given back", section_b, s, L)
    s.finish()


if __name__ == "__main__":
    main()

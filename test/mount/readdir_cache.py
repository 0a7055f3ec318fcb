#!/usr/bin/env python3
"""Directory listings without directory handles (issue 6): strata-fs has no opendir, so the kernel
sends no OPENDIR/RELEASEDIR and keeps each merged listing in its cache; offsets carry a listing
snapshot so that readers stay consistent (see src/fs/dir_listings.h).

  a  a second walk of a tree costs no READDIR request (the kernel answers from its cache), and
     every listing is the merged one;
  b  the daemon tells the kernel when a listing changes: creates, unlinks, renames and a copy-up
     that changes a d_ino show up in the next listing (compared with lstat of every name);
  c  a reader in the middle of a big directory keeps its own snapshot: another process creating
     and removing names and listing the directory from the start meanwhile does not make the
     first reader skip or repeat any name that existed all along.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mountlib as ml  # noqa: E402

BIG = 3000  # names in the big directory: many READDIR requests per pass


def build(root):
    L = ml.Layout(root, n_lowers=2)
    for d in range(20):
        for f in range(10):
            L.write(L.l(1), f"tree/d{d}/f{f}", b"bottom\n")
        L.write(L.l(0), f"tree/d{d}/top", b"top\n")
    for i in range(BIG):
        L.write(L.l(1 if i % 2 else 0), f"big/name-{i:05d}-with-a-longer-tail", b"")
    L.write(L.l(1), "linked/a", b"one\n")
    os.link(L.l(1, "linked/a"), L.l(1, "linked/b"))  # copy-up of a breaks the link: a new d_ino
    return L


def walk(top):
    names = []
    for dirpath, dirnames, filenames in os.walk(top):
        names += [os.path.relpath(os.path.join(dirpath, n), top) for n in dirnames + filenames]
    return sorted(names)


def section_a(s):
    L = build(ml.scratch("rdc-a"))
    L.mount_strata()
    first = walk(L.m("tree"))
    s.expect_eq(len(first), 20 * 12, "the merged tree lists every name once")
    after_first = ml.stats(L.mnt)["readdir_requests"]
    s.expect(after_first > 0, "the first walk reads the listings", f"readdir_requests={after_first}")
    second = walk(L.m("tree"))
    s.expect_eq(second, first, "the second walk lists the same names")
    s.expect_eq(ml.stats(L.mnt)["readdir_requests"], after_first,
                "the second walk costs no READDIR request (kernel listing cache)")


def listing_matches_lstat(s, d, what):
    names = sorted(os.listdir(d))
    inos = {e.name: e.inode() for e in os.scandir(d)}
    bad = [n for n in names if os.lstat(os.path.join(d, n)).st_ino != inos[n]]
    s.expect_eq(bad, [], f"{what}: every d_ino equals st_ino")
    return names


def section_b(s):
    L = build(ml.scratch("rdc-b"))
    L.mount_strata()
    d = L.m("tree/d3")
    listing_matches_lstat(s, d, "before")
    with open(os.path.join(d, "new"), "w") as f:
        f.write("new\n")
    os.unlink(os.path.join(d, "f1"))
    os.rename(os.path.join(d, "f2"), os.path.join(d, "f2-renamed"))
    names = listing_matches_lstat(s, d, "after create, unlink, rename")
    s.expect_eq(names, sorted([f"f{i}" for i in range(10) if i not in (1, 2)] + ["f2-renamed", "new", "top"]),
                "the listing shows the changes")
    ld = L.m("linked")
    before = {e.name: e.inode() for e in os.scandir(ld)}
    s.expect_eq(before["a"], before["b"], "two names of one lower file share a d_ino")
    with open(os.path.join(ld, "a"), "a") as f:  # copy-up breaks the link, behind the kernel's back
        f.write("more\n")
    after = {e.name: e.inode() for e in os.scandir(ld)}
    s.expect(after["a"] != after["b"], "after the copy-up the listing shows a's new d_ino", repr(after))
    listing_matches_lstat(s, ld, "after the copy-up")


def section_c(s):
    L = build(ml.scratch("rdc-c"))
    L.mount_strata()
    big = L.m("big")
    original = set(os.listdir(big))
    s.require(len(original) == BIG, "the big directory lists every name", f"{len(original)} names")
    for rnd in range(3):
        seen = []
        with os.scandir(big) as it:  # getdents in 32 KiB steps: several READDIR requests
            for i, e in enumerate(it):
                seen.append(e.name)
                if i == BIG // 3:
                    # Another reader changes the directory and lists it from the start: a new
                    # snapshot, and the kernel drops its cached listing.
                    for k in range(50):
                        open(os.path.join(big, f"added-{rnd}-{k}"), "w").close()
                    for k in range(0, 200, 4):
                        os.unlink(os.path.join(big, f"name-{k * 2 + rnd:05d}-with-a-longer-tail"))
                    os.listdir(big)
        removed = {f"name-{k * 2 + rnd:05d}-with-a-longer-tail" for k in range(0, 200, 4)}
        stayed = original - removed
        dups = sorted({n for n in seen if seen.count(n) > 1})
        missing = sorted(stayed - set(seen))
        s.expect_eq(dups, [], f"round {rnd}: the first reader sees no name twice")
        s.expect_eq(missing[:5], [], f"round {rnd}: the first reader misses no name that stayed",
                    f"{len(missing)} missing")
        original = set(os.listdir(big))


def main():
    s = ml.start("readdir cache")
    s.run("a: second walk from the kernel's cache", section_a, s)
    s.run("b: listings follow changes", section_b, s)
    s.run("c: a reader keeps its snapshot", section_c, s)
    s.finish()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""strata du: three uppers over two shared lowers, with hard links inside a layer and across
layers, a sparse file, symlinks and an upper file hard-linked to a lower one.

The expected numbers are computed here by walking the layers with lstat (every inode once,
directories included; disk = st_blocks * 512, apparent = st_size) and, when GNU du is installed,
checked against it too: it counts the same way (`du -sbc` and `du -sB1 -c`, hard links once
across its arguments), so the tool, this script and du must all agree.
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import toolkit  # noqa: E402

NAME = "du"
if not os.path.exists(toolkit.strata_bin()):
    toolkit.skip(NAME, f"no executable {toolkit.strata_bin()} (build first, or set STRATA_BUILD)")
suite = toolkit.Suite(NAME)
t = toolkit.Layers("strata-du.")


def walk_usage(roots, exclude=frozenset()):
    """(disk, apparent, inodes, inode set) of the trees, each inode once, skipping `exclude`."""
    seen = set()
    disk = apparent = 0
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [None] + dirnames + filenames:
                p = dirpath if name is None else os.path.join(dirpath, name)
                st = os.lstat(p)
                key = (st.st_dev, st.st_ino)
                if key in seen or key in exclude:
                    continue
                seen.add(key)
                disk += st.st_blocks * 512
                apparent += st.st_size
    return disk, apparent, len(seen), seen


def human(n):
    if n < 1024:
        return f"{n} B"
    v = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        v /= 1024
        if v < 1024 or unit == "EiB":
            return f"{v:.1f} {unit}"


def gnu_du(args):
    out = subprocess.run(["du", *args], capture_output=True, text=True, check=True).stdout
    return int(out.splitlines()[-1].split()[0])


try:
    L1, L2 = t.dir("l1"), t.dir("l2")
    t.file("l2/usr/lib/big", "x" * 200_000)
    t.file("l2/usr/lib/small", "s" * 100)
    os.link(t.path("l2/usr/lib/big"), t.path("l2/usr/lib/big-link"))    # a hard link in one layer
    t.file("l1/etc/conf", "c" * 5000)
    os.link(t.path("l1/etc/conf"), t.path("l2/usr/conf-from-l1"))       # ... and across two layers
    with open(t.path("l2/usr/sparse"), "wb") as f:                      # 1 MiB apparent, little on disk
        f.truncate(1 << 20)
        f.write(b"1")
    os.symlink("lib/big", t.path("l2/usr/big-symlink"))
    U1, U2, U3 = t.dir("u1"), t.dir("u2"), t.dir("u3")
    t.file("u1/etc/conf", "c" * 5000 + "appended\n")                    # a copy-up
    if os.geteuid() == 0:
        os.mknod(t.path("u1/usr"), 0o600 | 0o020000, os.makedev(0, 0))      # a whiteout: 0 bytes
    else:
        t.file("u1/.wh.usr")
    t.file("u2/new/data", "d" * 70_000)
    os.link(t.path("u2/new/data"), t.path("u2/new/data-link"))          # counted once in u2
    t.dir("u3/usr/lib")
    os.link(t.path("l2/usr/lib/small"), t.path("u3/usr/lib/small"))     # the lowers' inode: not private

    lower_disk, lower_app, lower_inodes, lower_set = walk_usage([L1, L2])
    uppers = []
    for u in (U1, U2, U3):
        d, a, n, _ = walk_usage([u], exclude=lower_set)
        uppers.append((u, d, a, n))
    n = len(uppers)
    priv_disk = sum(u[1] for u in uppers)
    priv_app = sum(u[2] for u in uppers)
    total = (lower_disk + priv_disk, lower_app + priv_app)
    full = (n * lower_disk + priv_disk, n * lower_app + priv_app)
    save = (full[0] - total[0], full[1] - total[1])
    pct = (100.0 * save[0] / full[0], 100.0 * save[1] / full[1])

    # The walk itself is checked against GNU du (same counting rules), where it exists.
    if shutil.which("du"):
        p = []
        if gnu_du(["-sbc", L1, L2]) != lower_app:
            p.append(f"du -sbc lowers {gnu_du(['-sbc', L1, L2])}, walk {lower_app}")
        if gnu_du(["-sB1", "-c", L1, L2]) != lower_disk:
            p.append(f"du -sB1 lowers {gnu_du(['-sB1', '-c', L1, L2])}, walk {lower_disk}")
        for u, d, a, _ in uppers:
            if gnu_du(["-sbc", L1, L2, u]) - lower_app != a:
                p.append(f"du apparent of {u} beyond the lowers differs from the walk")
            if gnu_du(["-sB1", "-c", L1, L2, u]) - lower_disk != d:
                p.append(f"du disk of {u} beyond the lowers differs from the walk")
        suite.check("this test's own counting agrees with GNU du", p)
    if not (save[0] > 0 and lower_app > (1 << 20) and lower_disk < lower_app):
        suite.check("fixture sanity", [f"lowers {lower_disk}/{lower_app}, saving {save}"])

    args = ["du", "-o", f"lowerdir={L1}:{L2}", U1, U2, U3]

    def rows(fmt):
        out = [f"{'on disk':>12}  {'apparent':>12}"]

        def row(d, a, what):
            out.append(f"{fmt(d):>12}  {fmt(a):>12}  {what}")
        row(lower_disk, lower_app, f"lowers, shared, counted once: {L1}:{L2}")
        for u, d, a, _ in uppers:
            row(d, a, f"private to upper {u}")
        row(*total, "total")
        row(*full, f"as {n} full copies ({n} x lowers + private)")
        row(*save, f"saved: {pct[0]:.1f}% on disk, {pct[1]:.1f}% apparent")
        return out

    suite.expect_lines("-b: exact bytes", toolkit.run(*args[:1], "-b", *args[1:]), rows(str))
    suite.expect_lines("human-readable sizes", toolkit.run(*args), rows(human))

    r = toolkit.run("du", "--json", *args[1:])
    j = toolkit.parse_json(suite, "json", r)
    if j is not None:
        p = []
        if r.returncode != 0:
            p.append(f"exit {r.returncode}")
        lw = j.get("lowers", {})
        if (lw.get("dirs"), lw.get("disk_bytes"), lw.get("apparent_bytes"), lw.get("inodes")) != \
                ([L1, L2], lower_disk, lower_app, lower_inodes):
            p.append(f"lowers {lw}")
        got_u = [(x["dir"], x["disk_bytes"], x["apparent_bytes"], x["inodes"]) for x in j.get("uppers", [])]
        if got_u != uppers:
            p.append(f"uppers {got_u}, want {uppers}")
        if (j["total"]["disk_bytes"], j["total"]["apparent_bytes"]) != total:
            p.append(f"total {j['total']}")
        fc = j["full_copies"]
        if (fc["count"], fc["disk_bytes"], fc["apparent_bytes"]) != (n, *full):
            p.append(f"full_copies {fc}")
        s = j["saving"]
        if (s["disk_bytes"], s["apparent_bytes"]) != save or abs(s["disk_percent"] - pct[0]) > 0.006 or \
                abs(s["apparent_percent"] - pct[1]) > 0.006:
            p.append(f"saving {s}, want {save} {pct}")
        suite.check("json: lowers, uppers, total, full copies, saving", p)

    # upperdir= in -o counts as the first UPPER.
    r = toolkit.run("du", "--json", "-o", f"lowerdir={L1}:{L2},upperdir={U1}", U2)
    j = toolkit.parse_json(suite, "json upperdir=", r)
    if j is not None:
        suite.check("upperdir= in -o is the first upper",
                    [] if [x["dir"] for x in j["uppers"]] == [U1, U2] else [f"uppers {j['uppers']}"])

    # ---- bad input ------------------------------------------------------------------------------
    def expect_error(title, args, want):
        r = toolkit.run(*args)
        ok = r.returncode == 2 and r.stderr.startswith("strata: ") and want in r.stderr and \
            len(r.stderr.splitlines()) == 1 and not r.stdout
        suite.check(title, [] if ok else [f"exit {r.returncode}, stderr {r.stderr!r}, want '{want}'"])

    expect_error("du: no UPPER", ["du", "-o", f"lowerdir={L1}"], "UPPER missing")
    expect_error("du: UPPER does not exist", ["du", "-o", f"lowerdir={L1}", t.path("nope")],
                 f"upperdir {t.path('nope')}: No such file or directory")
    expect_error("du: UPPER is a file", ["du", "-o", f"lowerdir={L1}", t.path("l1/etc/conf")],
                 f"upperdir {t.path('l1/etc/conf')}: Not a directory")
    expect_error("du: lowerdir does not exist", ["du", "-o", f"lowerdir={t.path('nol')}", U1],
                 f"lowerdir {t.path('nol')}: No such file or directory")
    expect_error("du: --strict is check's", ["du", "--strict", "-o", f"lowerdir={L1}", U1], "--strict")
finally:
    t.cleanup()
suite.finish()

#!/usr/bin/env python3
"""Write side: the same mutation script on the kernel overlay and on the SUT gives the same
results, the same merged view, and an upper layer the kernel reads back identically.

Per seed: a random layer tree (populated or empty upper) is rendered twice. The kernel overlay
(-o redirect_dir=on,index=off,metacopy=off) runs a script generated from the seed and the initial
merged view: appends, truncates, deletes of files and trees, re-creation after delete, renames of
files and lower dirs (also across dirs, over existing entries, RENAME_EXCHANGE/NOREPLACE), chmod,
chown, utime with nanoseconds, hard links to lower files, symlinks, fifos, devices, rmdir after
emptying, deep makedirs, cp -a of a merged tree then renaming the copy, user.* xattrs, writes
through an fd opened before copy-up, long names. The SUT runs the same script on its copy, op by
op beside the kernel (both mounted at once).

Compared: every operation's result (errno or details), the final merged listing (times and dir
sizes excluded), the lower layers on disk (must be untouched), and the merged view the kernel shows
when it mounts the upper the SUT wrote (fresh workdir) against the kernel's own final view. The
upper layout on disk is diffed as information (STRATA_ORACLE_STRICT_UPPER=1 makes it a failure).

Tolerated, with a note (see fsops): the kernel's readdir phantoms in readdir/rmtree results, and
with FUSE passthrough on, a read-only fd opened before the copy-up showing the frozen old file.

Environment: STRATA_FS_BIN, STRATA_ORACLE_SEEDS (default 4), STRATA_ORACLE_STRICT_UPPER,
STRATA_ORACLE_VERBOSE=1 (print the kernel's results of every operation).
"""

import os
import random
import sys

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "lib"))
import fsops  # noqa: E402
import overlay as ov  # noqa: E402

KERNEL_OPTS = ("redirect_dir=on",) + ov.KERNEL_BASE_OPTS
LISTING_EXCLUDE = ("mtime", "dsize")
SKIP_SUBTREES = ("probe/deep", "big")


def skip_path(rel):
    return any(rel == s or rel.startswith(s + "/") for s in SKIP_SUBTREES)


# ------------------------------------------------------------------------------------------------
# scenarios: each appends operations to the script and updates the model as the kernel would


def sc_append(rng, m, ops):
    for f in rng.sample(m.of("f"), min(2, len(m.of("f")))):
        ops.append(("append", f, rng.randbytes(rng.randint(1, 9000))))
        ops.append(("read", f))


def sc_truncate(rng, m, ops):
    if m.of("f"):
        f = rng.choice(m.of("f"))
        ops.append(("truncate", f, rng.choice([0, 1, 100, 4096, 70000, 5 << 20])))
        ops.append(("read", f))
        ops.append(("open_trunc", rng.choice(m.of("f"))))


def sc_write(rng, m, ops):
    if m.of("f"):
        f = rng.choice(m.of("f"))
        ops.append(("write", f, rng.randrange(0, 20000), rng.randbytes(rng.randint(1, 5000))))
        ops.append(("read", f))


def sc_unlink(rng, m, ops):
    cands = [p for p in m.all() if m.t[p] != "d"]
    if cands:
        p = rng.choice(cands)
        ops.append(("unlink", p))
        ops.append(("stat", p))
        m.remove(p)


def sc_rmtree(rng, m, ops):
    if m.of("d"):
        d = rng.choice(m.of("d"))
        ops.append(("rmtree", d))
        ops.append(("stat", d))
        m.remove(d)


def sc_recreate_file(rng, m, ops):
    cands = m.all()
    if cands:
        p = rng.choice(cands)
        ops.append(("rmtree" if m.t[p] == "d" else "unlink", p))
        ops.append(("create", p, rng.randbytes(rng.randint(0, 300)), 0o640))
        ops.append(("read", p))
        ops.append(("stat", p))
        m.remove(p)
        m.add(p, "f")


def sc_recreate_dir(rng, m, ops):
    if m.of("d"):
        d = rng.choice(m.of("d"))
        ops.append(("rmtree", d))
        ops.append(("mkdir", d, 0o750))
        ops.append(("readdir", d))
        ops.append(("create", f"{d}/fresh", b"fresh\n", 0o644))
        ops.append(("readdir", d))
        m.remove(d)
        m.add(d, "d")
        m.add(f"{d}/fresh", "f")


def sc_rename_file(rng, m, ops):
    cands = [p for p in m.all() if m.t[p] != "d"]
    if not cands:
        return
    a = rng.choice(cands)
    r = rng.random()
    if r < 0.3:
        b = m.fresh(rng, a.rpartition("/")[0], "renamed")
    elif r < 0.6:
        b = m.fresh(rng, rng.choice(m.of("d") + [""]), "moved")
    else:
        b = rng.choice(cands)
    ops.append(("rename", a, b))
    ops.append(("stat", a))
    ops.append(("stat", b))
    if a != b:
        m.move(a, b)


def sc_rename_dir(rng, m, ops):
    dirs = m.of("d")
    if not dirs:
        return
    a = rng.choice(dirs)
    targets = [d for d in dirs + [""] if not (d == a or d.startswith(a + "/"))]
    b = m.fresh(rng, rng.choice(targets) if targets else "", "dir")
    ops.append(("rename_ino", a, b))
    ops.append(("readdir", b))
    ops.append(("stat", a))
    m.move(a, b)
    if rng.random() < 0.5:
        ops.append(("mkdir", a, 0o755))  # a new dir where a renamed (lower) dir was: opaque
        ops.append(("readdir", a))
        m.add(a, "d")
    elif rng.random() < 0.5:
        ops.append(("rename", b, a))  # and back
        ops.append(("readdir", a))
        m.move(b, a)


def sc_rename_edge(rng, m, ops):
    dirs, files = m.of("d"), m.of("f")
    if not dirs or not files:
        return
    d = rng.choice(dirs)
    nonempty = [x for x in dirs if m.children(x)]
    empty = [x for x in dirs if not m.children(x)]
    ops.append(("rename", d, rng.choice(files)))  # dir onto file: ENOTDIR
    ops.append(("rename", rng.choice(files), d))  # file onto dir: EISDIR
    if nonempty:
        ops.append(("rename", d, rng.choice(nonempty)))  # onto non-empty dir: ENOTEMPTY (or EINVAL)
    sub = [x for x in dirs if x.startswith(d + "/")]
    if sub:
        ops.append(("rename", d, rng.choice(sub) + "/inside"))  # into itself: EINVAL
    ops.append(("rename", d, d))  # no-op
    ops.append(("rename", "probe/hl_a", "probe/hl_b"))  # onto its own hard link: no-op
    ops.append(("stat", "probe/hl_a"))
    if empty:
        e = rng.choice(empty)
        if e != d and not e.startswith(d + "/") and not d.startswith(e + "/"):
            ops.append(("rename", d, e))  # over an empty dir: ok
            ops.append(("readdir", e))
            m.move(d, e)


def sc_rename2(rng, m, ops):
    cands = m.all()
    if len(cands) < 2:
        return
    a, b = rng.sample(cands, 2)
    if not (a.startswith(b + "/") or b.startswith(a + "/")):
        ops.append(("rename2", a, b, ov.RENAME_EXCHANGE))
        ops.append(("stat", a))
        ops.append(("stat", b))
        ta, tb = m.t[a], m.t[b]
        sub_a = {q[len(a):]: t for q, t in m.t.items() if q.startswith(a + "/")}
        sub_b = {q[len(b):]: t for q, t in m.t.items() if q.startswith(b + "/")}
        m.remove(a)
        m.remove(b)
        m.add(a, tb)
        m.add(b, ta)
        m.t.update({a + k: t for k, t in sub_b.items()})
        m.t.update({b + k: t for k, t in sub_a.items()})
    c = rng.choice(m.all())
    ops.append(("rename2", c, rng.choice(m.all()), ov.RENAME_NOREPLACE))  # EEXIST (or EINVAL)
    n = m.fresh(rng, c.rpartition("/")[0], "noreplace")
    ops.append(("rename2", c, n, ov.RENAME_NOREPLACE))
    ops.append(("stat", n))
    m.move(c, n)
    ops.append(("rename2", rng.choice(m.all()), m.fresh(rng, "", "x"), ov.RENAME_EXCHANGE))  # ENOENT
    ops.append(("rename2", rng.choice(m.all()), m.fresh(rng, "", "x"), 4))  # RENAME_WHITEOUT: EINVAL


def sc_attrs(rng, m, ops):
    for p in rng.sample(m.all(), min(3, len(m.all()))):
        r = rng.random()
        if r < 0.35 and m.t[p] != "l":
            ops.append(("chmod", p, rng.choice([0o600, 0o755, 0o4755, 0o2750, 0o1777, 0o000, 0o444])))
        elif r < 0.7:
            ops.append(("chown", p, rng.choice([0, 1000, 65534, 4242]), rng.choice([0, 100, 65534])))
        else:
            ops.append(("utime", p, rng.randrange(10**18), rng.randrange(10**18)))
        ops.append(("stat", p))


def sc_link(rng, m, ops):
    files = m.of("f")
    if not files:
        return
    a = rng.choice(files)
    b = m.fresh(rng, rng.choice(m.of("d") + [""]), "link")
    ops.append(("link", a, b))
    ops.append(("stat", a))
    m.add(b, "f")
    if rng.random() < 0.5:
        ops.append(("unlink", a))
        ops.append(("stat", b))
        m.remove(a)
    ops.append(("append", b, b"appended through the link\n"))
    ops.append(("read", b))
    ops.append(("link", rng.choice(m.of("d") or ["probe"]), m.fresh(rng, "", "dirlink")))  # EPERM


def sc_hardlink_pair(rng, m, ops):
    ops.append(("append", "probe/hl_a", b"changed via hl_a\n"))
    ops.append(("stat", "probe/hl_a"))
    ops.append(("stat", "probe/hl_b"))
    ops.append(("read", "probe/hl_b"))
    if rng.random() < 0.5:
        ops.append(("unlink", "probe/hl_b"))
        ops.append(("stat", "probe/hl_a"))
        m.remove("probe/hl_b")


def sc_special(rng, m, ops):
    parent = rng.choice(m.of("d") + [""])
    targets = ["probe/suid", "nowhere", ov.SAFE_ABS_TARGET + "/y", "../" * parent.count("/") + "probe"]
    for kind in ("symlink", "mkfifo", "chr", "blk"):
        p = m.fresh(rng, parent, kind)
        if kind == "symlink":
            ops.append(("symlink", rng.choice(targets), p))
            m.add(p, "l")
        elif kind == "mkfifo":
            ops.append(("mkfifo", p, 0o640))
            m.add(p, "p")
        else:
            ops.append(("mknod", p, kind, *rng.choice(ov.SAFE_CHR if kind == "chr" else ov.SAFE_BLK), 0o600))
            m.add(p, "c" if kind == "chr" else "b")
        ops.append(("stat", p))
    ops.append(("mknod", m.fresh(rng, parent, "wh"), "chr", 0, 0, 0o600))  # a whiteout-like device


def sc_empty_then_rmdir(rng, m, ops):
    dirs = [d for d in m.of("d") if not any(s.startswith(d + "/") for s in SKIP_SUBTREES)]
    if not dirs:
        return
    d = rng.choice(dirs)
    for c in m.children(d):
        ops.append(("rmtree" if m.t[c] == "d" else "unlink", c))
    ops.append(("readdir", d))
    ops.append(("rmdir", d))  # every entry deleted: whiteouts left in the upper must not count
    ops.append(("stat", d))
    m.remove(d)


def sc_rmdir_nonempty(rng, m, ops):
    dirs = [d for d in m.of("d") if m.children(d)]
    if dirs:
        ops.append(("rmdir", rng.choice(dirs)))  # ENOTEMPTY
    files = m.of("f")
    if files:
        ops.append(("rmdir", rng.choice(files)))  # ENOTDIR
    if dirs:
        ops.append(("unlink", rng.choice(dirs)))  # EISDIR


def sc_makedirs(rng, m, ops):
    base = rng.choice(m.of("d") + [""])
    top = m.fresh(rng, base, "deep")
    path = top + "/a/b/c/d/e"
    ops.append(("makedirs", path))
    ops.append(("create", path + "/leaf", b"leaf\n", 0o600))
    ops.append(("readdir", top + "/a/b"))
    if rng.random() < 0.5:
        ops.append(("rmtree", top))
    else:
        cur = top
        m.add(cur, "d")
        for part in "abcde":
            cur += "/" + part
            m.add(cur, "d")
        m.add(path + "/leaf", "f")


def sc_cp_a(rng, m, ops):
    dirs = [d for d in m.of("d") if not skip_path(d)]
    if not dirs:
        return
    src = rng.choice(dirs)
    dst = m.fresh(rng, src.rpartition("/")[0], "copy")
    ops.append(("cp_a", src, dst))
    ops.append(("readdir", dst))
    final = m.fresh(rng, rng.choice([d for d in m.of("d") if not d.startswith(src + "/") and d != src] + [""]), "copied")
    ops.append(("rename", dst, final))
    ops.append(("readdir", final))
    m.t.update({final + q[len(src):]: t for q, t in m.t.items() if q == src or q.startswith(src + "/")})


def sc_xattrs(rng, m, ops):
    cands = [p for p in m.all() if m.t[p] in "fd"]
    if not cands:
        return
    p = rng.choice(cands)
    ops.append(("listxattr", p))
    ops.append(("setxattr", p, "user.oracle", rng.randbytes(rng.randint(0, 40))))
    ops.append(("getxattr", p, "user.oracle"))
    ops.append(("setxattr", p, "user.k0", b"replaced"))
    ops.append(("removexattr", p, "user.k0"))
    ops.append(("removexattr", p, "user.never-set"))  # ENODATA
    ops.append(("setxattr", p, "trusted.overlay.opaque", b"y"))  # the overlay's own: refused
    ops.append(("listxattr", p))
    links = m.of("l")
    if links:
        ops.append(("setxattr", rng.choice(links), "user.on-symlink", b"1"))  # EPERM


def sc_open_before_copyup(rng, m, ops):
    files = m.of("f")
    if files:
        f = rng.choice(files)
        how = rng.choice(fsops.COPYUP_TRIGGERS)
        ops.append(("open_before_copyup", f, rng.randbytes(rng.randint(1, 64)), how))
        if how == "rename":
            moved = os.path.join(os.path.dirname(f), "moved-under-fd")
            m.move(f, moved)
            f = moved
        ops.append(("read", f))


def sc_copyup_ino(rng, m, ops):
    for p in rng.sample(m.all(), min(2, len(m.all()))):
        ops.append(("copyup_ino", p))
    ops.append(("copyup_ino", "probe/hl_a"))


def sc_mmap(rng, m, ops):
    files = m.of("f")
    if files:
        f = rng.choice(files)
        ops.append(("mmap_write", f, rng.randrange(1 << 20), rng.randbytes(rng.randint(1, 3000))))
        ops.append(("read", f))


def sc_names(rng, m, ops):
    d = rng.choice(m.of("d") + [""])
    pre = d + "/" if d else ""
    ops.append(("create", pre + "N" * 255, b"255", 0o644))
    ops.append(("stat", pre + "N" * 255))
    ops.append(("create", pre + "N" * 256, b"256", 0o644))  # ENAMETOOLONG
    ops.append(("mkdir", pre + "D" * 256, 0o755))
    ops.append(("symlink", "x", pre + "S" * 256))
    files = m.of("f")
    if files:
        ops.append(("rename", rng.choice(files), pre + "R" * 256))
    ops.append(("create", "missing-dir/x", b"", 0o644))  # ENOENT
    ops.append(("create", "probe/gone/x", b"", 0o644))  # through a whiteout: ENOENT
    ops.append(("create", "probe/suid/x", b"", 0o644))  # ENOTDIR
    ops.append(("mkdir", "probe", 0o755))  # EEXIST
    ops.append(("create", "probe/suid", b"", 0o644))  # EEXIST
    ops.append(("create", "probe/gone", b"reborn\n", 0o644))  # over a lower whiteout: ok
    ops.append(("read", "probe/gone"))
    ops.append(("mkdir", "probe/gone_dir", 0o755))  # over a whited-out dir: opaque
    ops.append(("readdir", "probe/gone_dir"))
    m.add(pre + "N" * 255, "f")
    m.add("probe/gone", "f")
    m.add("probe/gone_dir", "d")


SCENARIOS = [sc_append, sc_truncate, sc_write, sc_unlink, sc_rmtree, sc_recreate_file,
             sc_recreate_dir, sc_rename_file, sc_rename_dir, sc_rename_edge, sc_rename2, sc_attrs,
             sc_link, sc_hardlink_pair, sc_special, sc_empty_then_rmdir, sc_rmdir_nonempty,
             sc_makedirs, sc_cp_a, sc_xattrs, sc_open_before_copyup, sc_copyup_ino, sc_mmap,
             sc_names]
# Always run once per seed (before the random ones, while the lower tree is still intact).
FIRST = [sc_hardlink_pair, sc_open_before_copyup, sc_copyup_ino, sc_names, sc_rename_dir,
         sc_empty_then_rmdir, sc_rmdir_nonempty]


def make_script(seed, types, n_random=30):
    rng = random.Random(seed * 7919)
    model = fsops.Model(types)
    ops = []
    for sc in FIRST + [rng.choice(SCENARIOS) for _ in range(n_random)]:
        before = len(ops)
        sc(rng, model, ops)
        if len(ops) > before:
            ops.insert(before, ("#", sc.__name__[3:]))  # a marker: which scenario follows
    return ops


def run_script(kroot, sroot, ops):
    """Run the script on both mounts, op by op (so a tolerated kernel quirk can be reconciled on
    the kernel's side before the next op); returns the kernel's and the SUT's result lines."""
    kernel, sut = [], []
    for i, op in enumerate(ops):
        if op[0] == "#":
            kernel.append(f"--- {op[1]}")
            sut.append(f"--- {op[1]}")
            continue
        k, s = fsops.run_op(kroot, op), fsops.run_op(sroot, op)
        if k != s:
            k = fsops.reconcile(kroot, op, k, s)
        kernel.append(f"{i:03d} {fsops.fmt_op(op)} -> {k}")
        sut.append(f"{i:03d} {fsops.fmt_op(op)} -> {s}")
    return kernel, sut


def main():
    ov.enter_private_mount_namespace()
    os.umask(0o022)
    sut = ov.Sut()
    sut.require()
    report = ov.Report(f"write_ops ({sut.name})")
    strict_upper = os.environ.get("STRATA_ORACLE_STRICT_UPPER") == "1"
    base = ov.make_temp_dir()
    seeds = ov.seeds_from_env(4)
    print(f"write_ops: SUT={sut.binary} seeds={seeds}", flush=True)
    try:
        for seed in seeds:
            tree = ov.generate_tree(seed, n_lowers=2 + seed % 2, empty_upper=seed % 2 == 0)
            what = f"seed {seed} ({'empty' if seed % 2 == 0 else 'populated'} upper)"
            print(f"-- {what}", flush=True)

            k = ov.render_tree(tree, f"{base}/s{seed}-kernel", "chardev")
            s = ov.render_tree(tree, f"{base}/s{seed}-sut", "chardev")
            kmnt, smnt = f"{base}/s{seed}-kernel-mnt", f"{base}/s{seed}-sut-mnt"
            os.mkdir(kmnt)
            os.mkdir(smnt)
            with ov.mount_kernel(k.lowers, k.upper, k.work, kmnt, KERNEL_OPTS):
                try:
                    m = sut.mount(s, smnt, kernel_opts=KERNEL_OPTS)
                except ov.MountError as e:
                    report.error(f"{what}: SUT mount failed: {e}")
                    continue
                try:
                    initial = ov.canonical_listing(kmnt, exclude=LISTING_EXCLUDE)
                    sut_initial = ov.canonical_listing(smnt, exclude=LISTING_EXCLUDE)
                    script = make_script(seed, fsops.walk_types(kmnt, skip=skip_path))
                    kernel_results, sut_results = run_script(kmnt, smnt, script)
                    kernel_final = ov.canonical_listing(kmnt, exclude=LISTING_EXCLUDE)
                    sut_final = ov.canonical_listing(smnt, exclude=LISTING_EXCLUDE)
                finally:
                    try:
                        m.umount()
                    except ov.MountError as e:
                        report.error(f"{what}: {e}")
            report.compare(f"{what}: merged view before the script", initial, sut_initial)
            report.compare(f"{what}: operation results", kernel_results, sut_results)
            report.compare(f"{what}: merged view after the script", kernel_final, sut_final)
            for i in range(len(k.lowers)):
                report.compare(f"{what}: lower{i} on disk (must be untouched)",
                               ov.upper_listing(k.lowers[i], exclude=("dsize", "ino")),
                               ov.upper_listing(s.lowers[i], exclude=("dsize", "ino")), "kernel's", "sut's")
            upper_diff = ov.listing_diff(ov.upper_listing(k.upper), ov.upper_listing(s.upper), "kernel", "sut")
            if upper_diff:
                msg = f"{what}: upper layer on disk differs from the kernel's:\n{upper_diff}"
                report.error(msg) if strict_upper else report.note(msg)

            # The kernel must read the SUT's upper exactly as it reads its own.
            os.mkdir(f"{base}/s{seed}-sut/work2")
            rmnt = f"{base}/s{seed}-reread-mnt"
            os.mkdir(rmnt)
            try:
                with ov.mount_kernel(s.lowers, s.upper, f"{base}/s{seed}-sut/work2", rmnt, KERNEL_OPTS):
                    reread = ov.canonical_listing(rmnt, exclude=LISTING_EXCLUDE, readdir_check=False)
                # No readdir checks here: the kernel's d_ino on a foreign upper depends on the
                # origin/impure xattrs it would have written; the SUT's readdir was checked above.
                report.compare(f"{what}: kernel view of the SUT's upper vs kernel's own result",
                               ov.without_readdir_checks(kernel_final), reread,
                               "kernel", "kernel-on-sut-upper")
            except ov.MountError as e:
                report.error(f"{what}: the kernel cannot mount the SUT's upper: {e}")
            print("   script:", sum(1 for o in script if o[0] != "#"), "operations", flush=True)
            if os.environ.get("STRATA_ORACLE_VERBOSE") == "1":
                print("\n".join("   " + r for r in kernel_results))
    finally:
        ov.cleanup_all()
    report.finish()


if __name__ == "__main__":
    main()

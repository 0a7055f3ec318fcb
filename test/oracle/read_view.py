#!/usr/bin/env python3
"""The merged view of the SUT must be identical to the kernel overlay's (read side).

For each seed a random layer tree is generated once and rendered for each side. The kernel always
reads the chardev/trusted rendering; the SUT reads the chardev, the aufs (.wh. files) and the
user.overlay.* rendering in turn. Each is mounted lower-only (read-only) and with a populated
upper. Compared: the canonical listing (types, modes, owners, sizes, content hashes, mtimes,
xattrs, nlink, hard-link identity, readdir d_ino/d_type consistency) and targeted probes: name
length limits, a path near PATH_MAX, hidden whiteouts and overlay xattrs, st_ino stability and
uniqueness, st_dev, mmap reads, statfs, telldir/seekdir on a 5000-entry merged dir, EROFS on the
read-only mount.

Environment: STRATA_FS_BIN (SUT binary or 'kernel'), STRATA_ORACLE_SEEDS (N or a,b,c; default 2),
STRATA_ORACLE_FORMS (default chardev,aufs,userxattr).
"""

import errno
import hashlib
import mmap
import os
import random
import stat
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "lib"))
import overlay as ov  # noqa: E402

FORMS = tuple(f for f in os.environ.get("STRATA_ORACLE_FORMS", "chardev,aufs,userxattr").split(",") if f)
BIG = 5000


def result_of(fn):
    """'ok <value>' or the errno name, so kernel and SUT outcomes compare as text."""
    try:
        v = fn()
        return "ok" if v is None else f"ok {v}"
    except OSError as e:
        return ov.errname(e)


def kind_of(path):
    st = os.lstat(path)
    return ov._typechar(st.st_mode)


def sampled(rel):
    """Only every tenth entry of the 5000-entry 'big' dir is worth a per-entry probe."""
    return not rel.startswith(b"big/") or rel.endswith(b"7")


def walk_stats(root):
    """{relpath: lstat} of every entry (big/ sampled), found through readdir."""
    out = {}
    root_b = os.fsencode(root)

    def visit(rel):
        if not sampled(rel):
            return
        full = root_b + b"/" + rel if rel else root_b
        try:
            st = os.lstat(full)
        except OSError:
            return
        out[rel] = st
        if stat.S_ISDIR(st.st_mode):
            try:
                names = sorted(os.listdir(full))
            except OSError:
                return
            for n in names:
                visit(rel + b"/" + n if rel else n)

    visit(b"")
    return out


def probe_names(mnt):
    out = []
    p = lambda rel: os.path.join(mnt, rel)
    out.append(f"255 lower: {result_of(lambda: kind_of(p('probe/' + ov.NAME255)))}")
    for n in (256, 300, 1024, 1025, 4000):
        out.append(f"{n} in probe/: {result_of(lambda: os.stat(p('probe/' + 'n' * n)))}")
        out.append(f"{n} at root: {result_of(lambda: os.stat(p('x' * n)))}")
    out.append(f"256 under missing dir: {result_of(lambda: os.stat(p('missing/' + 'n' * 256)))}")
    out.append(f"256 as dir component: {result_of(lambda: os.stat(p('n' * 256 + '/x')))}")
    deep = ov.probe_deep_path()
    out.append(f"deep path ({len(deep)} bytes below the mount): {result_of(lambda: ov.file_sha256(p(deep)))}")
    out.append(f"deep listdir: {result_of(lambda: len(os.listdir(os.path.dirname(p(deep)))))}")

    def deep_relative():
        parts = deep.split("/")
        fd = os.open(p("/".join(parts[:6])), os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd2 = os.open("/".join(parts[6:]), os.O_RDONLY, dir_fd=fd)
            data = os.read(fd2, 100)
            os.close(fd2)
            return data
        finally:
            os.close(fd)
    out.append(f"deep openat: {result_of(deep_relative)}")
    return out


def probe_paths(mnt, tree):
    """lstat of every name of every layer (and the aufs spellings): lookup without readdir."""
    return [f"{ov.esc(rel)}: {result_of(lambda: kind_of(os.path.join(mnt, rel)))}"
            for rel in ov.all_paths(tree)
            if not rel.startswith("big/entry-") or rel.endswith("7")]


def probe_resolution(mnt):
    out = []
    for rel in ("probe/suid/x", "probe/file_over_dir/child", "probe/opaque/hidden", "probe/gone/x",
                "probe/gone_dir/inside", "probe/dangling/", "probe/rel_link/", "probe/abs_link",
                "probe/merged/../merged/both", "probe/.wh.gone", "probe/opaque/.wh..wh..opq",
                ".wh..wh..opq", "probe/merged/low"):
        out.append(f"stat {rel}: {result_of(lambda: kind_of(os.path.join(mnt, rel)))}")
    out.append(f"O_DIRECTORY on file: {result_of(lambda: os.close(os.open(os.path.join(mnt, 'probe/suid'), os.O_RDONLY | os.O_DIRECTORY)))}")
    out.append(f"listdir on file: {result_of(lambda: os.listdir(os.path.join(mnt, 'probe/suid')))}")
    out.append(f"readlink on file: {result_of(lambda: os.readlink(os.path.join(mnt, 'probe/suid')))}")
    out.append(f"access zero R_OK: {os.access(os.path.join(mnt, 'probe/zero'), os.R_OK)}")
    out.append(f"read zero: {result_of(lambda: ov.file_sha256(os.path.join(mnt, 'probe/zero')))}")
    out.append(f"access suid X_OK: {os.access(os.path.join(mnt, 'probe/suid'), os.X_OK)}")
    out.append(f"listdir merged: {result_of(lambda: sorted(os.listdir(os.path.join(mnt, 'probe/merged'))))}")
    out.append(f"listdir opaque: {result_of(lambda: sorted(os.listdir(os.path.join(mnt, 'probe/opaque'))))}")
    return out


def probe_hidden(listing):
    """Whiteouts and aufs markers must never show through readdir."""
    bad = []
    for line in listing:
        path, _, rest = line.partition("\t")
        if any(c.startswith(".wh.") for c in path.split("/")):
            bad.append(f"visible aufs name: {path}")
        if "type=c" in rest and "rdev=0:0" in rest:
            bad.append(f"visible whiteout: {path}")
        if "overlay." in rest:
            bad.append(f"visible overlay xattr: {path}")
    return bad or ["none visible"]


def probe_xattrs(mnt, tree):
    out = []
    opaque = sorted({p for layer in tree.all_layers() for p, n in layer.items() if n.kind == "dir" and n.opaque},
                    key=os.fsencode)
    for rel in opaque[:20]:
        full = os.path.join(mnt, rel)
        for name in ("trusted.overlay.opaque", "user.overlay.opaque", "trusted.overlay.origin"):
            out.append(f"getxattr {ov.esc(rel)} {name}: {result_of(lambda: os.getxattr(full, name))}")
        out.append(f"listxattr {ov.esc(rel)}: {result_of(lambda: sorted(os.listxattr(full)))}")
    out.append(f"listxattr root: {result_of(lambda: sorted(os.listxattr(mnt)))}")
    return out


def probe_inodes(mnt):
    first = walk_stats(mnt)
    ov.drop_caches()
    second = walk_stats(mnt)
    out = []
    changed = [p for p in first if p in second and first[p].st_ino != second[p].st_ino]
    out.append(f"st_ino changed after dropping caches: {len(changed)} {[ov.esc(p) for p in changed[:5]]}")
    again = [p for p in first if os.lstat(os.fsencode(mnt) + (b"/" + p if p else b"")).st_ino != first[p].st_ino]
    out.append(f"st_ino changed between two lstat: {len(again)} {[ov.esc(p) for p in again[:5]]}")
    devs = {st.st_dev for st in first.values()}
    out.append(f"distinct st_dev: {len(devs)}")
    out.append(f"root st_dev == mount st_dev: {os.stat(mnt).st_dev == next(iter(devs))}")
    groups = {}
    for p, st in first.items():
        groups.setdefault(st.st_ino, []).append(p)
    for ino, paths in sorted(groups.items(), key=lambda kv: sorted(kv[1])):
        if len(paths) > 1:
            types = {ov._typechar(first[p].st_mode) for p in paths}
            nlinks = {first[p].st_nlink for p in paths}
            if "d" in types or len(types) > 1 or max(nlinks) < len(paths):
                out.append(f"st_ino shared by unrelated entries: {[ov.esc(p) for p in sorted(paths)][:6]}")
    a, b = (os.lstat(os.path.join(mnt, f"probe/hl_{x}")) for x in "ab")
    out.append(f"hard link pair: nlink {a.st_nlink},{b.st_nlink} same st_ino {a.st_ino == b.st_ino}")
    return out


def probe_mmap(mnt, limit=150):
    stats = walk_stats(mnt)
    files = sorted(p for p, st in stats.items() if stat.S_ISREG(st.st_mode) and st.st_size > 0)
    bad = []
    for rel in files[:limit] + [b"probe/sparse"]:
        full = os.fsencode(mnt) + b"/" + rel
        try:
            with open(full, "rb") as f:
                with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                    via_mmap = hashlib.sha256(m[:]).hexdigest()[:24]
            if via_mmap != ov.file_sha256(full):
                bad.append(f"mmap bytes differ from read(): {ov.esc(rel)}")
        except (OSError, ValueError) as e:
            bad.append(f"mmap {ov.esc(rel)}: {e}")
    return bad or [f"mmap == read for {min(len(files), limit) + 1} files"]


def probe_statfs(mnt):
    s = os.statvfs(mnt)
    flags = {n: bool(s.f_flag & getattr(os, n)) for n in ("ST_RDONLY", "ST_NOSUID", "ST_NODEV", "ST_NOEXEC")}
    return [f"namemax={s.f_namemax}", f"bsize={s.f_bsize}", f"frsize={s.f_frsize}",
            f"blocks>0={s.f_blocks > 0}", f"files>0={s.f_files > 0}"] + [f"{k}={v}" for k, v in flags.items()]


def probe_seekdir(path):
    out = []
    names = os.listdir(path)
    out.append(f"listdir: {len(names)} names, {len(names) - len(set(names))} duplicates")
    with ov.CDir(path) as d:
        everything = d.read_all()
        expected = set(os.fsencode(n) for n in names) | {b".", b".."}
        out.append(f"readdir: {len(everything)} entries; missing vs listdir+dots: "
                   f"{sorted(expected - set(everything))[:5]}, extra: {sorted(set(everything) - expected)[:5]}")
        d.rewind()
        again = d.read_all()
        out.append(f"rewinddir re-read identical: {again == everything}")
        d.rewind()
        half = d.read_n(len(everything) // 2)
        pos = d.tell()
        rest = d.read_all()
        d.seek(pos)
        rest2 = d.read_all()
        out.append(f"half+rest == all: {half + rest == everything}")
        out.append(f"seekdir(telldir) re-read identical: {rest == rest2} ({len(rest)}/{len(rest2)})")
        # Remember (position, following name) at many points, then revisit them out of order.
        d.rewind()
        marks = []
        i = 0
        while True:
            pos = d.tell()
            name = d.read()
            if name is None:
                break
            if i % 97 == 0:
                marks.append((pos, name))
            i += 1
        order = list(range(len(marks)))
        random.Random(len(marks)).shuffle(order)
        wrong = 0
        for k in order:
            d.seek(marks[k][0])
            if d.read() != marks[k][1]:
                wrong += 1
        out.append(f"seekdir to {len(marks)} remembered positions: {wrong} wrong")
    with ov.CDir(path) as d2:
        wrong = 0
        for pos, name in marks:
            d2.seek(pos)
            if d2.read() != name:
                wrong += 1
        out.append(f"positions reused on a new DIR stream: {wrong} wrong")
    return out


def probe_readonly(mnt):
    """A lower-only overlay is read-only: every write is EROFS."""
    p = lambda rel: os.path.join(mnt, rel)
    return [
        f"create: {result_of(lambda: os.close(os.open(p('newfile'), os.O_CREAT | os.O_WRONLY, 0o644)))}",
        f"open O_WRONLY existing: {result_of(lambda: os.close(os.open(p('probe/suid'), os.O_WRONLY)))}",
        f"open O_RDWR|O_CREAT existing: {result_of(lambda: os.close(os.open(p('probe/suid'), os.O_RDWR | os.O_CREAT)))}",
        f"mkdir: {result_of(lambda: os.mkdir(p('newdir')))}",
        f"mkdir existing: {result_of(lambda: os.mkdir(p('probe')))}",
        f"unlink: {result_of(lambda: os.unlink(p('probe/suid')))}",
        f"rmdir: {result_of(lambda: os.rmdir(p('probe/sticky')))}",
        f"rename: {result_of(lambda: os.rename(p('probe/suid'), p('probe/suid2')))}",
        f"chmod: {result_of(lambda: os.chmod(p('probe/suid'), 0o700))}",
        f"chown: {result_of(lambda: os.chown(p('probe/suid'), 1, 1))}",
        f"utime: {result_of(lambda: os.utime(p('probe/suid'), ns=(1, 1)))}",
        f"truncate: {result_of(lambda: os.truncate(p('probe/suid'), 0))}",
        f"setxattr: {result_of(lambda: os.setxattr(p('probe/suid'), 'user.x', b'1'))}",
        f"symlink: {result_of(lambda: os.symlink('x', p('newlink')))}",
        f"link: {result_of(lambda: os.link(p('probe/suid'), p('newlink')))}",
        f"mkfifo: {result_of(lambda: os.mkfifo(p('newfifo')))}",
        f"open O_RDONLY: {result_of(lambda: os.close(os.open(p('probe/suid'), os.O_RDONLY)))}",
    ]


def skip_big_entries(rel):
    return rel.startswith("big/")


def without_big_entries(listing):
    """A listing as canonical_listing(skip=skip_big_entries) would have produced it."""
    out = []
    for line in listing:
        path = line.split(" ", 1)[1] if line.startswith("!") else line
        if not path.startswith("big/"):
            out.append(line)
    return out


def strip_field(listing, field):
    return ["\t".join(f for f in line.split("\t") if not f.startswith(field + "=")) for line in listing]


def observe(mnt, tree, readonly, big, full_big=True):
    """Everything we compare about one mounted view, as {name: [lines]}. With full_big=False the
    5000 entries of big/ are left out of the listings (they cost seconds on a FUSE mount)."""
    obs = {}
    timing = os.environ.get("STRATA_ORACLE_TIMING") == "1"
    t0 = time.monotonic()
    obs["listing"] = ov.canonical_listing(mnt, skip=None if full_big else skip_big_entries)
    obs["hidden names"] = probe_hidden(obs["listing"])
    obs["name limits and deep path"] = probe_names(mnt)
    obs["lookup of every layer name"] = probe_paths(mnt, tree)
    obs["path resolution"] = probe_resolution(mnt)
    obs["overlay xattrs"] = probe_xattrs(mnt, tree)
    obs["inode numbers"] = probe_inodes(mnt)
    obs["mmap"] = probe_mmap(mnt)
    obs["statfs"] = probe_statfs(mnt)
    obs["seekdir root"] = probe_seekdir(mnt)
    if big:
        obs["seekdir big"] = probe_seekdir(os.path.join(mnt, "big"))
    if readonly:
        obs["read-only mount"] = probe_readonly(mnt)
    # The listing again at the end: probes must not have changed the view.
    obs["listing after probes"] = ov.canonical_listing(mnt, skip=skip_big_entries)
    if timing:
        print(f"   observed in {time.monotonic() - t0:.1f}s", flush=True)
    return obs


def main():
    ov.enter_private_mount_namespace()
    os.umask(0o022)
    sut = ov.Sut()
    sut.require()
    report = ov.Report(f"read_view ({sut.name})")
    base = ov.make_temp_dir()
    seeds = ov.seeds_from_env(2)
    print(f"read_view: SUT={sut.binary} seeds={seeds} forms={FORMS}", flush=True)
    started = time.monotonic()
    try:
        for seed in seeds:
            big = BIG if seed == seeds[0] else 0
            tree = ov.generate_tree(seed, n_lowers=2 + seed % 3, big_dir=big)
            kernel_layers = ov.render_tree(tree, f"{base}/s{seed}-kernel", "chardev")
            kernel_obs = {}
            for config in ("lower-only", "with-upper"):
                mnt = f"{base}/s{seed}-kernel-{config}"
                os.mkdir(mnt)
                with ov.mount_kernel(kernel_layers.lowers, kernel_layers.upper if config == "with-upper" else None,
                                     kernel_layers.work, mnt):
                    kernel_obs[config] = observe(mnt, tree, config == "lower-only", big)
                    kernel_obs[config]["listing without big/"] = without_big_entries(kernel_obs[config]["listing"])
            for form in FORMS:
                rform = sut.render_form(form)
                layers = ov.render_tree(tree, f"{base}/s{seed}-{form}", rform)
                kopts = list(ov.KERNEL_BASE_OPTS) + (["userxattr"] if form == "userxattr" else [])
                fopts = ["userxattr"] if form == "userxattr" else []
                for config in ("lower-only", "with-upper"):
                    what = f"seed {seed} form {form}{'' if rform == form else '(as ' + rform + ')'} {config}"
                    print(f"-- {what} (at {time.monotonic() - started:.0f}s)", flush=True)
                    mnt = f"{base}/s{seed}-{form}-{config}"
                    os.mkdir(mnt)
                    try:
                        m = sut.mount(layers, mnt, kernel_opts=kopts, fuse_opts=fopts, upper=config == "with-upper")
                    except ov.MountError as e:
                        report.error(f"{what}: mount failed: {e}")
                        continue
                    full_big = form == FORMS[0]
                    try:
                        obs = observe(mnt, tree, config == "lower-only", big, full_big)
                    finally:
                        try:
                            m.umount()
                        except ov.MountError as e:
                            report.error(f"{what}: {e}")
                    expected_obs = dict(kernel_obs[config])
                    expected_obs["listing"] = expected_obs.pop("listing without big/")
                    if full_big:
                        expected_obs["listing"] = kernel_obs[config]["listing"]
                    for name, expected in expected_obs.items():
                        actual = obs.get(name, ["<missing>"])
                        if rform == "aufs" and name.startswith("listing"):
                            # .wh.NAME files make the directory bigger on disk than char devices
                            expected, actual = strip_field(expected, "dsize"), strip_field(actual, "dsize")
                        report.compare(f"{what}: {name}", expected, actual)
                # The SUT must never write to a lower layer.
                pristine = kernel_layers if rform == "chardev" else \
                    ov.render_tree(tree, f"{base}/s{seed}-{form}-pristine", rform)
                for i, lower in enumerate(layers.lowers):
                    report.compare(f"seed {seed} form {form}: lower{i} on disk after the SUT mounts",
                                   ov.upper_listing(pristine.lowers[i], exclude=("dsize", "ino")),
                                   ov.upper_listing(lower, exclude=("dsize", "ino")), "pristine", "after")
    finally:
        ov.cleanup_all()
    report.finish()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""strata diff and strata which against the kernel overlay, on random layer trees.

The kernel is the oracle. For each seed, test/lib/overlay.py generates a random tree (three
lowers and an upper: files, dirs, symlinks, devices, hard links, whiteouts, opaque dirs, odd
names) and renders it in the kernel's form. Two read-only kernel overlays are mounted: the
lowers alone (the image) and the upper over the lowers (the container). Then:

- diff: A = in the container, not in the image; D = in the image, not in the container, under a
  directory the container has; C = in both, another object (st_ino differs: all layers are on
  one filesystem, so the kernel shows the real inode numbers). `strata diff --json` must list
  exactly these, on the kernel rendering and on the aufs (.wh.) and user.overlay.* renderings of
  the same tree (strata reads all three; the kernel only the first).
- which: for a sample of paths of both trees, found exactly when the container has the path, of
  the same type, and its real_path is the very inode the kernel shows.

STRATA_TOOL_SEEDS=N (default 12) sets the number of seeds; the seeds are printed for replay.
Runs as root in a private mount namespace; exit 77 without root, overlay or unshare.
"""
import json
import os
import random
import stat
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "lib"))
sys.path.insert(0, os.path.join(os.path.dirname(here), "lib"))
import toolkit  # noqa: E402

NAME = "kernel_oracle"
if not os.path.exists(toolkit.strata_bin()):
    toolkit.skip(NAME, f"no executable {toolkit.strata_bin()} (build first, or set STRATA_BUILD)")
import overlay  # noqa: E402  (test/lib: the generator and the kernel mount helpers)

overlay.enter_private_mount_namespace(need_fuse=False)
suite = toolkit.Suite(NAME)


def snapshot(root):
    """{relative path (bytes, '/'-rooted): lstat} of a mounted tree, not following symlinks."""
    out = {}
    broot = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(broot):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            try:
                out[b"/" + os.path.relpath(p, broot)] = os.lstat(p)
            except FileNotFoundError:
                # A whiteout in a directory only one layer has: the kernel lists it (readdir of a
                # directory that is not merged passes through) but a lookup finds nothing. It is
                # not an entry of the merged tree.
                pass
    return out


def expected_changes(image, container):
    changes = []
    for p, st in container.items():
        if p not in image:
            changes.append(("A", p))
        elif st.st_ino != image[p].st_ino or stat.S_IFMT(st.st_mode) != stat.S_IFMT(image[p].st_mode):
            changes.append(("C", p))
    for p in image:
        if p in container:
            continue
        parent = os.path.dirname(p)
        if parent == b"/" or (parent in container and stat.S_ISDIR(container[parent].st_mode)):
            changes.append(("D", p))
    return sorted(changes, key=lambda c: c[1])


def run_diff(layers):
    r = toolkit.run("diff", "--json", "-o", f"lowerdir={':'.join(layers.lowers)},upperdir={layers.upper}")
    if r.returncode != 0:
        return None, f"exit {r.returncode}: {r.stderr.strip()}"
    return [(c["kind"], os.fsencode(c["path"])) for c in json.loads(r.stdout)], None


def compare(title, want, got):
    if got == want:
        suite.check(title, [])
        return
    w, g = set(want), set(got)
    p = [f"{len(want)} changes expected, {len(got)} listed"]
    p += [f"missing: {k} {os.fsdecode(x)}" for k, x in sorted(w - g, key=lambda c: c[1])[:12]]
    p += [f"extra:   {k} {os.fsdecode(x)}" for k, x in sorted(g - w, key=lambda c: c[1])[:12]]
    if w == g:
        p.append("same changes, different order")
    suite.check(title, p)


seeds = int(os.environ.get("STRATA_TOOL_SEEDS", "12"))
base_seed = int(os.environ.get("STRATA_TOOL_SEED", random.randrange(1 << 30)))
print(f"{NAME}: seeds {base_seed}..{base_seed + seeds - 1} (STRATA_TOOL_SEED={base_seed} to replay)")
work = overlay.make_temp_dir("strata-tool-oracle.")
for seed in range(base_seed, base_seed + seeds):
    tree = overlay.generate_tree(seed, n_lowers=3)
    root = os.path.join(work, str(seed))
    kernel_layers = overlay.render_tree(tree, os.path.join(root, "chardev"), "chardev")
    img_mnt, ctr_mnt = os.path.join(root, "image"), os.path.join(root, "container")
    os.makedirs(img_mnt)
    os.makedirs(ctr_mnt)
    try:
        img = overlay.mount_kernel(kernel_layers.lowers, mnt=img_mnt)
        ctr = overlay.mount_kernel([kernel_layers.upper] + kernel_layers.lowers, mnt=ctr_mnt)
    except overlay.MountError as e:
        toolkit.skip(NAME, f"cannot mount the kernel overlay: {e}")
    image, container = snapshot(img_mnt), snapshot(ctr_mnt)
    want = expected_changes(image, container)

    for form in ("chardev", "aufs", "userxattr"):
        layers = kernel_layers if form == "chardev" else overlay.render_tree(tree, os.path.join(root, form), form)
        got, err = run_diff(layers)
        if err:
            suite.check(f"seed {seed}: diff on the {form} rendering", [err])
        else:
            compare(f"seed {seed}: diff on the {form} rendering = kernel ({len(want)} changes)", want, got)

    # which: a sample of paths from both trees, plus some that neither has.
    rng = random.Random(seed)
    paths = sorted(set(image) | set(container))
    sample = rng.sample(paths, min(40, len(paths))) + [p + b"/nope" for p in rng.sample(paths, min(5, len(paths)))]
    problems = []
    opts = f"lowerdir={':'.join(kernel_layers.lowers)},upperdir={kernel_layers.upper}"
    for p in sample:
        r = toolkit.run("which", "--json", "-o", opts, os.fsdecode(p))
        if r.returncode not in (0, 1):
            problems.append(f"{os.fsdecode(p)}: exit {r.returncode}: {r.stderr.strip()}")
            continue
        j = json.loads(r.stdout)
        kst = container.get(p)
        if j["found"] != (kst is not None) or (r.returncode == 0) != j["found"]:
            problems.append(f"{os.fsdecode(p)}: found={j['found']} exit {r.returncode}, kernel "
                            f"{'has' if kst else 'has not'} it")
            continue
        if kst is None:
            continue
        real = os.lstat(os.fsencode(j["real_path"]))
        if real.st_ino != kst.st_ino or stat.S_IFMT(real.st_mode) != stat.S_IFMT(kst.st_mode):
            problems.append(f"{os.fsdecode(p)}: real_path {j['real_path']} is ino {real.st_ino} "
                            f"({j['type']}), the kernel shows ino {kst.st_ino}")
    suite.check(f"seed {seed}: which on {len(sample)} paths agrees with the kernel", problems[:15])
    img.umount()
    ctr.umount()
suite.finish()

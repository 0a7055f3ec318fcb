#!/usr/bin/env python3
"""Differential fuzzer: random system calls on random paths, applied step by step to the kernel
overlay and to the SUT mounted side by side (each over its own copy of the same random layers).

After every step the results must agree: the errno (or details) of the call and the lstat of the
paths it touched. Every K steps the full merged listings are compared; at the end of each round
the lowers must be untouched and the kernel must read the SUT's upper like its own. On the first
mismatch the operation log is shrunk (delta debugging, replaying on fresh copies) and printed
with the seed, so it can be replayed. The kernel's readdir phantoms (names its readdir lists and
its lookup denies) are reconciled in readdir and rmtree results, with a note (fsops.reconcile).

Environment: STRATA_FS_BIN, STRATA_FUZZ_SECONDS (default 30), STRATA_FUZZ_SEED (first seed,
default 1; 'random' picks one), STRATA_FUZZ_STEPS (steps per round, default 300),
STRATA_FUZZ_MINIMIZE_SECONDS (default 60).
"""

import math
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "lib"))
import fsops  # noqa: E402
import overlay as ov  # noqa: E402

KERNEL_OPTS = ("redirect_dir=on",) + ov.KERNEL_BASE_OPTS
EXCLUDE = ("mtime", "dsize")
LISTING_EVERY = 10


def skip_path(rel):
    return rel == "probe/deep" or rel.startswith("probe/deep/")


class Generator:
    """Random operations over a growing pool of paths (existing ones and fresh names)."""

    def __init__(self, seed, types):
        self.rng = random.Random(seed)
        self.pool = sorted((p for p in types if p), key=os.fsencode)
        self.dirs = [""] + [p for p, t in types.items() if t == "d" and p]
        self.counter = 0

    def path(self, fresh=0.3):
        r = self.rng
        if not self.pool or r.random() < fresh:
            parent = r.choice(self.dirs)
            self.counter += 1
            name = r.choice(["f", "d", "x", "new", "N" * 250]) + str(self.counter)
            p = f"{parent}/{name}" if parent else name
            self.pool.append(p)
            return p
        return r.choice(self.pool)

    def next(self):
        r = self.rng
        kind = r.choices(
            ["create", "write", "append", "truncate", "unlink", "mkdir", "rmdir", "rename",
             "rename2", "link", "symlink", "chmod", "chown", "utime", "setxattr", "read",
             "readdir", "stat", "rmtree", "mknod"],
            weights=[8, 6, 5, 4, 7, 7, 5, 10, 4, 4, 3, 4, 2, 2, 2, 3, 3, 2, 2, 1])[0]
        if kind == "create":
            return ("create", self.path(0.6), r.randbytes(r.choice([0, 1, 100, 5000])), r.choice([0o644, 0o600, 0o755]))
        if kind == "write":
            return ("write", self.path(0.1), r.randrange(0, 10000), r.randbytes(r.randint(1, 3000)))
        if kind == "append":
            return ("append", self.path(0.1), r.randbytes(r.randint(1, 3000)))
        if kind == "truncate":
            return ("truncate", self.path(0.1), r.choice([0, 1, 4096, 10000, 1 << 20]))
        if kind == "unlink":
            return ("unlink", self.path(0.1))
        if kind == "mkdir":
            p = self.path(0.7)
            self.dirs.append(p)
            return ("mkdir", p, r.choice([0o755, 0o700]))
        if kind == "rmdir":
            return ("rmdir", r.choice(self.dirs[1:] or [self.path()]))
        if kind == "rename":
            a = r.choice(self.dirs[1:]) if r.random() < 0.4 and len(self.dirs) > 1 else self.path(0.05)
            b = self.path(0.5)
            if r.random() < 0.3:
                self.dirs.append(b)
            return ("rename", a, b)
        if kind == "rename2":
            return ("rename2", self.path(0.05), self.path(0.3), r.choice([ov.RENAME_EXCHANGE, ov.RENAME_NOREPLACE]))
        if kind == "link":
            return ("link", self.path(0.05), self.path(0.8))
        if kind == "symlink":
            return ("symlink", r.choice(["x", "../probe", "probe/suid", ov.SAFE_ABS_TARGET]), self.path(0.8))
        if kind == "chmod":
            return ("chmod", self.path(0.05), r.choice([0o600, 0o755, 0o4755, 0o1777, 0o000]))
        if kind == "chown":
            return ("chown", self.path(0.05), r.choice([0, 1000]), r.choice([0, 1000]))
        if kind == "utime":
            return ("utime", self.path(0.05), r.randrange(10**18), r.randrange(10**18))
        if kind == "setxattr":
            return ("setxattr", self.path(0.05), "user.fuzz", r.randbytes(r.randint(0, 20)))
        if kind == "read":
            return ("read", self.path(0.05))
        if kind == "readdir":
            return ("readdir", r.choice(self.dirs))
        if kind == "stat":
            return ("stat", self.path(0.05))
        if kind == "rmtree":
            return ("rmtree", r.choice(self.dirs[1:] or [self.path()]))
        return ("mknod", self.path(0.9), "chr", *r.choice(ov.SAFE_CHR), 0o600)


def touched(op):
    name, *args = op
    if name in fsops.TWO_PATH_OPS:
        return args[:2]
    if name == "symlink":
        return args[1:2]
    return args[:1]


def step_result(root, op, result):
    """The op's result plus the lstat of every path it touched (and their parents)."""
    out = [result]
    for rel in touched(op):
        for p in (rel, rel.rpartition("/")[0]):
            out.append(f"{ov.esc(p) or '.'}: {fsops.run_op(root, ('stat', p))}")
    return " | ".join(out)


def make_tree(seed):
    return ov.generate_tree(seed, n_lowers=2 + seed % 2, empty_upper=seed % 3 == 0, max_depth=3)


class Pair:
    """The kernel and the SUT, each mounted over a fresh rendering of the same tree."""

    def __init__(self, sut, tree, base, tag):
        self.sut, self.base, self.tag = sut, base, tag
        self.k = ov.render_tree(tree, f"{base}/{tag}-k", "chardev")
        self.s = ov.render_tree(tree, f"{base}/{tag}-s", "chardev")
        self.kmnt, self.smnt = f"{base}/{tag}-kmnt", f"{base}/{tag}-smnt"
        os.mkdir(self.kmnt)
        os.mkdir(self.smnt)
        self.km = ov.mount_kernel(self.k.lowers, self.k.upper, self.k.work, self.kmnt, KERNEL_OPTS)
        try:
            self.sm = sut.mount(self.s, self.smnt, kernel_opts=KERNEL_OPTS)
        except Exception:
            self.km.umount()
            raise

    def close(self):
        """Unmount both; returns a list of problems (daemon did not exit, ...)."""
        problems = []
        for m in (self.sm, self.km):
            try:
                m.umount()
            except ov.MountError as e:
                problems.append(str(e))
        return problems


def check_round(pair, make_ops, log):
    """Apply the ops from make_ops(pair) to both sides of a mounted pair, then unmount it and run
    the end-of-round checks. Appends every op to log; returns the first mismatch text or None."""
    failure = None
    try:
        for i, op in enumerate(make_ops(pair)):
            log.append(op)
            ka, sa = fsops.run_op(pair.kmnt, op), fsops.run_op(pair.smnt, op)
            if ka != sa:
                ka = fsops.reconcile(pair.kmnt, op, ka, sa)
            a, b = step_result(pair.kmnt, op, ka), step_result(pair.smnt, op, sa)
            if a != b:
                failure = f"step {i} {fsops.fmt_op(op)}:\n  kernel: {a}\n  sut:    {b}"
                break
            if i % LISTING_EVERY == LISTING_EVERY - 1:
                d = ov.compare_listings(ov.canonical_listing(pair.kmnt, exclude=EXCLUDE),
                                        ov.canonical_listing(pair.smnt, exclude=EXCLUDE))
                if d:
                    failure = f"merged listing after step {i}:\n{d}"
                    break
        if failure is None:
            d = ov.compare_listings(ov.canonical_listing(pair.kmnt, exclude=EXCLUDE),
                                    ov.canonical_listing(pair.smnt, exclude=EXCLUDE))
            if d:
                failure = f"merged listing after the last step:\n{d}"
    finally:
        problems = pair.close()
    if failure is not None or problems:
        return failure or "; ".join(problems)
    # The kernel must read the SUT's upper like its own (remounted) final state.
    rmnt = f"{pair.base}/{pair.tag}-reread"
    os.mkdir(rmnt)
    os.mkdir(f"{pair.s.root}/work2")
    # No readdir checks here: the kernel's d_ino on a foreign upper depends on origin/impure
    # xattrs it would write itself; the SUT's own readdir was checked on its mount.
    with ov.mount_kernel(pair.k.lowers, pair.k.upper, pair.k.work, pair.kmnt, KERNEL_OPTS):
        kfinal = ov.canonical_listing(pair.kmnt, exclude=EXCLUDE, readdir_check=False)
    with ov.mount_kernel(pair.s.lowers, pair.s.upper, f"{pair.s.root}/work2", rmnt, KERNEL_OPTS):
        d = ov.compare_listings(kfinal, ov.canonical_listing(rmnt, exclude=EXCLUDE, readdir_check=False),
                                "kernel", "kernel-on-sut-upper")
    if d:
        return f"the kernel reads the SUT's upper differently:\n{d}"
    for i, lower in enumerate(pair.s.lowers):
        d = ov.listing_diff(ov.upper_listing(pair.k.lowers[i], exclude=("dsize", "ino")),
                            ov.upper_listing(lower, exclude=("dsize", "ino")), "kernel's", "sut's")
        if d:
            return f"lower{i} modified by the SUT:\n{d}"
    return None


def replay(sut, tree, base, ops, tag):
    """Run a fixed op list on a fresh pair; returns the first mismatch text or None."""
    return check_round(Pair(sut, tree, base, tag), lambda pair: ops, [])


def minimize(sut, tree, base, ops, budget):
    """Delta debugging: drop chunks of the log while a mismatch still reproduces."""
    deadline = time.monotonic() + budget
    counter = [0]

    def fails(candidate):
        counter[0] += 1
        return replay(sut, tree, base, candidate, f"min{counter[0]}") is not None

    if not fails(ops):
        return ops, False
    n = 2
    while len(ops) >= 2 and time.monotonic() < deadline:
        chunk = math.ceil(len(ops) / n)
        for i in range(n):
            candidate = ops[:i * chunk] + ops[(i + 1) * chunk:]
            if candidate and time.monotonic() < deadline and fails(candidate):
                ops = candidate
                n = max(n - 1, 2)
                break
        else:
            if n >= len(ops):
                break
            n = min(len(ops), n * 2)
    return ops, True


def main():
    ov.enter_private_mount_namespace()
    os.umask(0o022)
    sut = ov.Sut()
    sut.require()
    seconds = float(os.environ.get("STRATA_FUZZ_SECONDS", "30"))
    steps = int(os.environ.get("STRATA_FUZZ_STEPS", "300"))
    first = os.environ.get("STRATA_FUZZ_SEED", "1")
    seed = random.randrange(1, 10**6) if first == "random" else int(first)
    base = ov.make_temp_dir()
    deadline = time.monotonic() + seconds
    print(f"fuzz_ops: SUT={sut.binary} first seed={seed} for {seconds:.0f}s", flush=True)
    rounds = total = 0
    failure = None
    try:
        while time.monotonic() < deadline and failure is None:
            tree = make_tree(seed)
            log = []

            def random_ops(pair):
                gen = Generator(seed, fsops.walk_types(pair.kmnt, skip=skip_path))
                for _ in range(steps):
                    if time.monotonic() > deadline:
                        return
                    yield gen.next()

            try:
                pair = Pair(sut, tree, base, f"r{seed}")
            except ov.MountError as e:
                print(f"fuzz_ops ({sut.name}): mount failed: {e}")
                return 1
            what = check_round(pair, random_ops, log)
            total += len(log)
            if what is not None:
                failure = (seed, log, what)
            print(f"  round seed={seed}: {len(log)} steps {'MISMATCH' if failure else 'ok'}", flush=True)
            rounds += 1
            seed += 1
        if failure is None:
            print(f"fuzz_ops ({sut.name}): ok, {total} steps in {rounds} rounds")
            return 0
        seed, log, what = failure
        print(f"\nfuzz_ops ({sut.name}): MISMATCH with seed {seed} after {len(log)} steps\n{what}\n", flush=True)
        budget = float(os.environ.get("STRATA_FUZZ_MINIMIZE_SECONDS", "60"))
        tree = make_tree(seed)
        try:
            small, reproduced = minimize(sut, tree, base, log, budget)
        except ov.MountError as e:
            print(f"minimizing stopped: a replay could not mount: {e}")
            small, reproduced = log, False
        if reproduced:
            print(f"minimal operation log ({len(small)} of {len(log)} steps; "
                  f"replay: STRATA_FUZZ_SEED={seed}):")
            for op in small:
                print("   ", fsops.fmt_op(op))
            print("\nmismatch of the minimal log:\n" + (replay(sut, tree, base, small, "final") or "?"))
        else:
            print("the mismatch did not reproduce on fresh copies (timing or state dependent); full log:")
            for op in log:
                print("   ", fsops.fmt_op(op))
        return 1
    finally:
        ov.cleanup_all()


if __name__ == "__main__":
    sys.exit(main())

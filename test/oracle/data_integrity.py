#!/usr/bin/env python3
"""Data integrity of the SUT alone: a long random read/write/truncate/append/mmap workload on files
that start in a lower layer (so the first write copies them up), checked against an in-memory
model of the bytes every file must hold.

Reads go through every kind of descriptor, including read-only ones opened before the copy-up:
the kernel overlay reopens the real file after a copy-up, so those must see the new bytes too.
One documented exception (issue 9, accepted by the product owner): when strata-fs serves data by
FUSE passthrough (its user.strata.stats says so), a read-only fd opened while its file was still in
a lower layer may keep reading the lower file after the copy-up. The model keeps a frozen snapshot
for exactly those fds; such an fd may show the snapshot or the live bytes, but the same one every
time; every other fd, and every fd with passthrough off, must show the live bytes.
Shared writable mmaps are flushed and read back through read(). Caches are dropped now and then so
the data really comes from the daemon. At the end: the lower layers are untouched on disk, and
after unmount + remount every file still matches the model (also the copy in the upper dir).

STRATA_FS_BIN=kernel runs the same workload on the kernel overlay, which proves the model.
Environment: STRATA_FS_BIN, STRATA_INTEGRITY_SECONDS (default 20), STRATA_INTEGRITY_SEED (default 1).
"""

import hashlib
import mmap
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "lib"))
import overlay as ov  # noqa: E402

KERNEL_OPTS = ("redirect_dir=on",) + ov.KERNEL_BASE_OPTS


def make_tree(rng):
    bottom = {"": ov.Node("dir", mode=0o755), "data": ov.Node("dir", mode=0o755)}
    top = {"": ov.Node("dir", mode=0o755), "data": ov.Node("dir", mode=0o755)}
    upper = {"": ov.Node("dir", mode=0o755), "data": ov.Node("dir", mode=0o755)}
    for name, size in (("empty", 0), ("one", 1), ("page-1", 4095), ("page", 4096), ("100k", 100_000),
                       ("1m", 1 << 20), ("odd", 12345)):
        bottom[f"data/{name}"] = ov.Node("file", mode=0o644, data=rng.randbytes(size))
    bottom["data/sparse"] = ov.Node("file", mode=0o600, size=3 << 20,
                                    extents=((1 << 20, rng.randbytes(5000)), ((3 << 20) - 10, b"0123456789")))
    bottom["data/shadowed"] = ov.Node("file", data=b"bottom version")
    top["data/shadowed"] = ov.Node("file", mode=0o640, data=rng.randbytes(70_000))
    top["data/top"] = ov.Node("file", mode=0o644, data=rng.randbytes(9000))
    upper["data/upper"] = ov.Node("file", mode=0o644, data=rng.randbytes(5000))
    return ov.LayerTree(lowers=[top, bottom], upper=upper)


def expected_content(tree, name):
    for layer in tree.all_layers():
        n = layer.get(f"data/{name}")
        if n is not None:
            if n.size >= 0:
                b = bytearray(n.size)
                for off, data in n.extents:
                    b[off:off + len(data)] = data
                return b
            return bytearray(n.data)
    raise KeyError(name)


def read_all(fd):
    chunks, off = [], 0
    while True:
        c = os.pread(fd, 1 << 20, off)
        if not c:
            return b"".join(chunks)
        chunks.append(c)
        off += len(c)


class Mismatch(Exception):
    pass


class Fd:
    """An open descriptor of the workload. `snapshot` is set only where the passthrough tolerance
    applies (a read-only fd opened before its file was copied up): the bytes it may keep showing.
    `shows` becomes "snapshot" or "live" at the first read that tells the two apart."""

    def __init__(self, name, fd, mode, snapshot=None):
        self.name, self.fd, self.mode, self.snapshot = name, fd, mode, snapshot
        self.shows = None


def first_difference(a, b):
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            return f"first difference at byte {i} (expected {a[i]:#04x}, got {b[i]:#04x})"
    return f"lengths differ: expected {len(a)}, got {len(b)}"


def check_equal(what, expected, got):
    if bytes(expected) != bytes(got):
        raise Mismatch(f"{what}: {first_difference(bytes(expected), bytes(got))}")


class Tolerance:
    """Counts the reads that returned a pre-copy-up snapshot (the passthrough tolerance)."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.reads = 0
        self.fds = set()
        self.live_size = 0  # of those reads, how many with fstat already showing the live size


def check_read(what, f, live, got, off, length, tol, copied_by):
    """A read through Fd f at off: the live bytes, or (passthrough tolerance, only for an fd with
    a snapshot) the snapshot's bytes. Such an fd is a frozen file: fstat must show the snapshot's
    size as well, and it must not switch between the two. The one documented exception to the
    size (README, "Deliberate differences"): when truncate(2) of the path made the copy-up
    (`copied_by`), not a write open, fstat of the old fd already shows the live size."""
    want = live[off:off + length]
    if f.snapshot is None:
        return check_equal(what, want, got)
    old = f.snapshot[off:off + length]
    size = os.fstat(f.fd).st_size
    if (bytes(want), len(live)) == (bytes(old), len(f.snapshot)):
        check_equal(what, want, got)
        if size != len(live):
            raise Mismatch(f"{what}: fstat size {size}, expected {len(live)}")
        return
    got = bytes(got)
    documented = copied_by == "truncate" and size == len(live)
    candidates = set()
    if (got, size) == (bytes(want), len(live)):
        candidates.add("live")
    if got == bytes(old) and (size == len(f.snapshot) or documented):
        candidates.add("snapshot")
    if not candidates:
        raise Mismatch(
            f"{what} through a read-only fd opened before the copy-up (copied up by {copied_by}): neither "
            f"the live file (size {len(live)}, {'same bytes' if got == bytes(want) else first_difference(bytes(want), got)}) "
            f"nor its frozen pre-copy-up snapshot (size {len(f.snapshot)}, "
            f"{'same bytes' if got == bytes(old) else first_difference(bytes(old), got)}); fstat size {size}")
    if f.shows is not None and f.shows not in candidates:
        raise Mismatch(f"{what}: this read-only fd opened before the copy-up showed the {f.shows} data "
                       f"before and the {candidates.pop()} data now")
    if len(candidates) == 1:
        f.shows = next(iter(candidates))
    if f.shows == "snapshot":
        tol.reads += 1
        tol.fds.add(id(f))
        if size != len(f.snapshot):
            tol.live_size += 1


def workload(mnt, tree, rng, seconds, log, tol):
    names = sorted(n.split("/", 1)[1] for layer in tree.all_layers() for n in layer if n.startswith("data/"))
    names = sorted(set(names))
    model = {n: expected_content(tree, n) for n in names}
    # Files in the upper from the start; the others are copied up by their first write-ish access:
    # name -> what copied it up ("upper" from the start, "open" for a write open, "truncate" for
    # truncate(2) of the path, which under passthrough leaves old fds on a split-less inode).
    copied = {n.split("/", 1)[1]: "upper" for n in tree.upper if n.startswith("data/")}
    path = lambda n: os.path.join(mnt, "data", n)
    fds = []

    def open_fd(name, mode):
        flags = {"r": os.O_RDONLY, "rw": os.O_RDWR, "append": os.O_WRONLY | os.O_APPEND}[mode]
        snapshot = None
        if mode == "r" and tol.enabled and name not in copied:
            snapshot = bytes(model[name])
        fds.append(Fd(name, os.open(path(name), flags | os.O_CLOEXEC), mode, snapshot))
        if mode != "r":
            copied.setdefault(name, "open")

    # Read-only descriptors opened before anything is copied up.
    for n in names:
        open_fd(n, "r")
    try:
        return model, run_ops(mnt, names, model, fds, open_fd, path, rng, seconds, log, copied, tol)
    finally:
        for f in fds:
            os.close(f.fd)


def run_ops(mnt, names, model, fds, open_fd, path, rng, seconds, log, copied, tol):
    deadline = time.monotonic() + seconds
    last_drop = time.monotonic()
    count = 0
    while time.monotonic() < deadline:
        count += 1
        name = rng.choice(names)
        data = model[name]
        r = rng.random()
        if r < 0.22:
            off = rng.randrange(0, len(data) + 8192)
            buf = rng.randbytes(rng.choice([1, 7, 512, 4096, 4097, rng.randint(1, 65536)]))
            cands = [f for f in fds if f.name == name and f.mode == "rw"]
            if not cands or rng.random() < 0.2:
                open_fd(name, "rw")
                cands = [fds[-1]]
            fd = rng.choice(cands).fd
            log.append(f"pwrite {name} off={off} len={len(buf)}")
            os.pwrite(fd, buf, off)
            if off > len(data):
                data.extend(bytes(off - len(data)))
            data[off:off + len(buf)] = buf
        elif r < 0.45:
            cands = [f for f in fds if f.name == name and f.mode != "append"]
            if not cands:
                continue
            f = rng.choice(cands)
            off = rng.randrange(0, len(data) + 100)
            length = rng.choice([1, 100, 4096, 65536, 1 << 20])
            log.append(f"pread {name} off={off} len={length} (fd {f.mode}"
                       f"{', opened before copy-up' if f.snapshot is not None else ''})")
            check_read(f"pread({name}, off={off}, len={length})", f, data, os.pread(f.fd, length, off),
                       off, length, tol, copied.get(name))
        elif r < 0.55:
            buf = rng.randbytes(rng.randint(1, 10000))
            cands = [f for f in fds if f.name == name and f.mode == "append"]
            if not cands or rng.random() < 0.3:
                open_fd(name, "append")
                cands = [fds[-1]]
            log.append(f"append {name} len={len(buf)}")
            os.write(rng.choice(cands).fd, buf)
            data.extend(buf)
        elif r < 0.63:
            size = rng.choice([0, 1, len(data) // 2, len(data) + 1, len(data) + 5000, 4096, 2 << 20])
            log.append(f"truncate {name} size={size}")
            if rng.random() < 0.5:
                copied.setdefault(name, "truncate")
                os.truncate(path(name), size)
            else:
                copied.setdefault(name, "open")
                fd = os.open(path(name), os.O_WRONLY | os.O_CLOEXEC)
                os.ftruncate(fd, size)
                os.close(fd)
            if size < len(data):
                del data[size:]
            else:
                data.extend(bytes(size - len(data)))
        elif r < 0.73:
            if not data:
                continue
            fd = os.open(path(name), os.O_RDWR | os.O_CLOEXEC)
            copied.setdefault(name, "open")
            try:
                with mmap.mmap(fd, len(data), mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
                    off = rng.randrange(len(data))
                    buf = rng.randbytes(min(len(data) - off, rng.randint(1, 20000)))
                    log.append(f"mmap write {name} off={off} len={len(buf)}")
                    m[off:off + len(buf)] = buf
                    data[off:off + len(buf)] = buf
                    if rng.random() < 0.7:
                        m.flush()
                    check_equal(f"mmap read-back of {name}", data, m[:])
            finally:
                os.close(fd)
        elif r < 0.80:
            log.append(f"full read {name}")
            fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                check_equal(f"full read of {name}", data, read_all(fd))
                st = os.fstat(fd)
                if st.st_size != len(data):
                    raise Mismatch(f"fstat({name}).st_size={st.st_size}, expected {len(data)}")
            finally:
                os.close(fd)
            if os.stat(path(name)).st_size != len(data):
                raise Mismatch(f"stat({name}).st_size={os.stat(path(name)).st_size}, expected {len(data)}")
        elif r < 0.86 and data:
            log.append(f"mmap read {name}")
            fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                with mmap.mmap(fd, len(data), mmap.MAP_SHARED, mmap.PROT_READ) as m:
                    check_equal(f"mmap read of {name}", data, m[:])
            finally:
                os.close(fd)
        elif r < 0.90:
            cands = [f for f in fds if f.name == name and f.mode != "r"]
            if cands:
                log.append(f"fsync {name}")
                os.fsync(rng.choice(cands).fd)
        elif r < 0.97:
            if len(fds) > 40 or rng.random() < 0.4:
                i = rng.randrange(len(fds))
                log.append(f"close fd of {fds[i].name} ({fds[i].mode})")
                os.close(fds.pop(i).fd)
            else:
                mode = rng.choice(["r", "rw", "append"])
                log.append(f"open {name} {mode}")
                open_fd(name, mode)
        elif time.monotonic() - last_drop > 3:
            log.append("drop caches")
            ov.drop_caches()
            last_drop = time.monotonic()
    return count


def verify_files(mnt, model, what):
    for name, data in sorted(model.items()):
        fd = os.open(os.path.join(mnt, "data", name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            check_equal(f"{what}: {name}", data, read_all(fd))
        finally:
            os.close(fd)


def main():
    ov.enter_private_mount_namespace()
    sut = ov.Sut()
    sut.require()
    seconds = float(os.environ.get("STRATA_INTEGRITY_SECONDS", "20"))
    seed = int(os.environ.get("STRATA_INTEGRITY_SEED", "1"))
    base = ov.make_temp_dir()
    report = ov.Report(f"data_integrity ({sut.name})")
    print(f"data_integrity: SUT={sut.binary} seed={seed} for {seconds:.0f}s", flush=True)
    log = []
    try:
        tree = make_tree(random.Random(seed))
        layers = ov.render_tree(tree, f"{base}/layers", "chardev")
        pristine = ov.render_tree(tree, f"{base}/pristine", "chardev")
        mnt = f"{base}/mnt"
        os.mkdir(mnt)
        m = sut.mount(layers, mnt, kernel_opts=KERNEL_OPTS)
        model = None
        try:
            tol = Tolerance(ov.passthrough_on(mnt))
            model, count = workload(mnt, tree, random.Random(seed * 31), seconds, log, tol)
            print(f"  {count} operations", flush=True)
            if tol.reads:
                print(f"note: tolerated: {tol.reads} read(s) through {len(tol.fds)} read-only fd(s) opened "
                      f"before their file's copy-up returned the pre-copy-up data (FUSE passthrough, "
                      f"documented in issue 9); {tol.live_size} of them with fstat showing the copy's size "
                      f"after a truncate(2) copy-up (documented too)", flush=True)
            verify_files(mnt, model, "final read before unmount")
        except Mismatch as e:
            report.error(f"{e}\n  seed {seed}; last operations:\n    " + "\n    ".join(log[-25:]))
        finally:
            try:
                m.umount()
            except ov.MountError as e:
                report.error(str(e))
        for i, lower in enumerate(layers.lowers):
            report.compare(f"lower{i} on disk (must be untouched)",
                           ov.upper_listing(pristine.lowers[i], exclude=("dsize", "ino")),
                           ov.upper_listing(lower, exclude=("dsize", "ino")), "before", "after")
        if model is not None and not report.failures:
            for name, data in sorted(model.items()):
                up = os.path.join(layers.upper, "data", name)
                if os.path.exists(up):
                    with open(up, "rb") as f:
                        if f.read() != bytes(data):
                            report.error(f"upper copy of {name} on disk differs from the model")
            m = sut.mount(layers, mnt, kernel_opts=KERNEL_OPTS)
            try:
                verify_files(mnt, model, "after unmount and remount")
            except Mismatch as e:
                report.error(str(e))
            finally:
                try:
                    m.umount()
                except ov.MountError as e:
                    report.error(str(e))
    finally:
        ov.cleanup_all()
    report.finish()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""kill -9 of strata-fs at random moments must lose nothing (issue 7, crash safety).

For each scenario a forked worker runs a sequence of operations through the mount and logs each
one after it returned. At a random moment (0..1.2x the time the whole sequence takes, measured
once per scenario) the daemon gets SIGKILL. Then: the worker must come back (ENOTCONN, no hang),
the dead mount is detached with `umount -l`, strata-fs is mounted again on the same upper/work,
and
  - workdir/work is empty (the new daemon cleaned what the crash left),
  - every file reads as its old or its new content, with its old metadata where the operation
    does not change it: never torn, never missing, never both,
  - every operation the worker saw return is still done (the upper is the truth, not a cache),
  - the upper on disk has no name that is both a whiteout and an entry and no staging names,
  - the operation can be finished on the remounted tree, which then shows the final state.
Passthrough alternates off/on between iterations. The lower layers must be untouched at the end.

Scenarios: big (append one byte to a 64 MiB lower file: copy-up of the data), metacopy (the same
file chmod-ed first with metacopy=on: its data is copied into the metadata-only copy), small (append,
chmod, setxattr on 300 small lower files with set-id modes, owners, xattrs), renames (lower files
into another dir, some over existing entries; renames-metacopy: the same with metacopy=on), dirs (renames of lower dirs with content, merged
from two layers, same parent and across parents: redirects), rmrf (rm -rf of merged lower trees:
whiteouts), opaque (rm -rf, mkdir again, create inside: opaque dirs), deep (a 120-level lower
directory chain copied up by appends at every level).

Environment: HARDENING_CRASH_ITERATIONS (per scenario, default 8), HARDENING_CRASH_SCENARIOS
(comma list, default all), HARDENING_BIG_MIB (default 64), HARDENING_CRASH_SEED,
HARDENING_VERBOSE=1 (one line per kill).
"""

import errno
import hashlib
import os
import random
import shutil
import stat
import sys
import time

sys.path.insert(0, os.path.join(os.environ.get("STRATA_SRC") or
                                os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "test", "hardening"))
import hardlib as hl  # noqa: E402
from hardlib import ml, ov  # noqa: E402

MiB = hl.MiB
ITERATIONS = hl.env_int("HARDENING_CRASH_ITERATIONS", 8)
BIG_MIB = hl.env_int("HARDENING_BIG_MIB", 64)
VERBOSE = os.environ.get("HARDENING_VERBOSE") == "1"
SEED = hl.env_int("HARDENING_CRASH_SEED", int(time.time()) % 100000)
RNG = random.Random(SEED)


def user_xattrs(path):
    out = {}
    for n in sorted(os.listxattr(path, follow_symlinks=False)):
        if n.startswith("user."):
            out[n] = os.getxattr(path, n, follow_symlinks=False)
    return out


def meta(path):
    st = os.lstat(path)
    return (ov._typechar(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def rmtree_logged(root, rel, log):
    """rm -rf of root/rel, children first, logging each removed path (relative to root)."""
    p = os.path.join(root, rel)
    st = os.lstat(p)
    if stat.S_ISDIR(st.st_mode):
        for n in sorted(os.listdir(p)):
            rmtree_logged(root, f"{rel}/{n}", log)
        os.rmdir(p)
    else:
        os.unlink(p)
    log({"removed": rel})


def merged_entries(mnt, top):
    """{rel: (type, mode, uid, gid, size, sha|target)} of mnt/top, paths relative to mnt."""
    base = os.path.join(mnt, top)
    if not os.path.lexists(base):
        return {}
    out = {}
    for rel, v in hl.tree_state(base).items():
        out[f"{top}/{rel}"] = v
    return out


# ------------------------------------------------------------------------------------------------
# scenarios


class Scenario:
    name = "?"
    top = "?"  # the subtree of the mount the scenario works in

    def build(self, L):
        """Create the lower layers (L.lowers[0] is the upper one)."""

    def learn(self, mnt):
        """Called once on a fresh mount before any operation: record the initial merged view."""

    def op(self, mnt, log):
        """The operation sequence (runs in the worker; must be idempotent-safe to redo)."""

    def check(self, L, steps):
        """Problems of the merged view (L.mnt) after a crash, given the completed steps."""
        return []

    def finish(self, mnt):
        """Complete whatever the crash left undone (on the remounted tree)."""

    def check_final(self, L):
        """Problems of the merged view once finish() ran: everything must be in the new state."""
        return []


class Big(Scenario):
    name, top = "big", "bigdir"

    def build(self, L):
        os.makedirs(L.l(1, "bigdir"))
        rnd = random.Random(SEED)
        block = rnd.randbytes(MiB)
        h = hashlib.sha256()
        with open(L.l(1, "bigdir/big"), "wb") as f:
            for i in range(BIG_MIB):
                chunk = bytes([i & 0xff]) + block[1:]
                f.write(chunk)
                h.update(chunk)
        self.size = BIG_MIB * MiB
        self.old = h.hexdigest()
        h.update(b"X")
        self.new = h.hexdigest()
        os.chmod(L.l(1, "bigdir/big"), 0o640)
        os.chown(L.l(1, "bigdir/big"), 1000, 1000)

    def op(self, mnt, log):
        hl.append_file(os.path.join(mnt, "bigdir/big"), b"X")
        log({"appended": "big"})

    def _state(self, path):
        st = os.lstat(path)
        if st.st_size == self.size and hl.sha_file(path) == self.old:
            return "old"
        if st.st_size == self.size + 1 and hl.sha_file(path) == self.new:
            return "new"
        return f"torn (size {st.st_size}, expected {self.size} or {self.size + 1})"

    # What the completed steps allow (BigMetacopy has a chmod before the append).
    def _appended(self, steps):
        return any("appended" in st for st in steps)

    def _modes(self, steps):
        return (0o640,)

    def _upper_holds_data(self, up):
        return True

    def check(self, L, steps):
        p = []
        path = L.m("bigdir/big")
        if not os.path.lexists(path):
            return ["bigdir/big: missing in the merged view"]
        state = self._state(path)
        if state not in ("old", "new"):
            p.append(f"bigdir/big: {state}")
        if self._appended(steps) and state != "new":
            p.append(f"bigdir/big: the append had returned but the file is {state}")
        m = meta(path)
        if m[0] != "f" or m[1] not in self._modes(steps) or m[2:] != (1000, 1000):
            p.append(f"bigdir/big: metadata {m}, expected a file of 1000:1000 with mode in "
                     f"{[oct(x) for x in self._modes(steps)]}")
        up = L.u("bigdir/big")
        if os.path.lexists(up) and self._upper_holds_data(up):
            ustate = self._state(up)
            # The upper copy may hold the old data (copied up, append not yet written): fine.
            if ustate not in ("old", "new"):
                p.append(f"upper bigdir/big: {ustate} (a partial copy-up left in the upper)")
        return p

    def finish(self, mnt):
        if os.lstat(os.path.join(mnt, "bigdir/big")).st_size == self.size:
            hl.append_file(os.path.join(mnt, "bigdir/big"), b"X")

    def check_final(self, L):
        state = self._state(L.m("bigdir/big"))
        return [] if state == "new" else [f"bigdir/big after finishing: {state}"]


def has_metacopy_marker(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return False
    return "trusted.overlay.metacopy" in names or "user.overlay.metacopy" in names


class BigMetacopy(Big):
    """metacopy=on: chmod of the 64 MiB lower file copies its attributes only (a sparse upper
    file with the metacopy marker), then the append copies the data into that file in place and
    removes the marker last. Killed anywhere, the file must read as the lower data (old) or the
    appended one (new), with the mode of the chmod once that returned; an upper file still marked
    may hold any part of the data (it is not read), one without the marker must be complete."""
    name = "metacopy"
    extra_opts = ["metacopy=on"]

    def op(self, mnt, log):
        os.chmod(os.path.join(mnt, "bigdir/big"), 0o600)
        log({"chmod": "big"})
        hl.append_file(os.path.join(mnt, "bigdir/big"), b"X")
        log({"appended": "big"})

    def _modes(self, steps):
        return (0o600,) if steps else (0o640, 0o600)

    def _upper_holds_data(self, up):
        return not has_metacopy_marker(up)  # a marked file is not read: any part of the data is fine

    def finish(self, mnt):
        os.chmod(os.path.join(mnt, "bigdir/big"), 0o600)
        super().finish(mnt)


SMALL_MODES = [0o644, 0o600, 0o755, 0o4755, 0o2755, 0o6750, 0o444, 0o640]
SMALL_OWNERS = [(0, 0), (1000, 1000), (65534, 65534), (1000, 0)]


class Small(Scenario):
    name, top = "small", "small"
    N = 300

    def build(self, L):
        rnd = random.Random(SEED + 1)
        self.files = {}
        for layer in (0, 1):
            os.makedirs(L.l(layer, "small"))
        for i in range(self.N):
            name = f"f{i:03d}"
            layer = 0 if i % 5 == 0 else 1
            data = rnd.randbytes(rnd.choice([0, 1, 100, 4096, 5000, 20000]))
            mode = SMALL_MODES[i % len(SMALL_MODES)]
            uid, gid = SMALL_OWNERS[i % len(SMALL_OWNERS)]
            p = L.l(layer, f"small/{name}")
            with open(p, "wb") as f:
                f.write(data)
            os.setxattr(p, "user.tag", str(i).encode())
            os.chown(p, uid, gid)
            os.chmod(p, mode)
            if layer == 0 and i % 10 == 0:  # a shadowed copy below
                with open(L.l(1, f"small/{name}"), "wb") as f:
                    f.write(b"shadowed")
            kind = ("append", "chmod", "xattr")[i % 3]
            self.files[name] = dict(data=data, mode=mode, uid=uid, gid=gid, kind=kind,
                                    new_mode=(mode ^ 0o044) if kind == "chmod" else mode)

    def op(self, mnt, log):
        for name, f in self.files.items():
            p = os.path.join(mnt, "small", name)
            if f["kind"] == "append":
                hl.append_file(p, b"+appended\n")
            elif f["kind"] == "chmod":
                os.chmod(p, f["new_mode"])
            else:
                os.setxattr(p, "user.new", b"1")
            log({"done": name})

    def _state(self, path, f):
        """'old', 'new' or a problem text."""
        try:
            data = hl.read_file(path)
            t, mode, uid, gid = meta(path)
            xa = user_xattrs(path)
        except OSError as e:
            return f"unreadable: {hl.errname(e)}"
        tag = xa.get("user.tag")
        if tag is None or int(tag) != int(os.path.basename(path)[1:]):
            return f"user.tag lost or wrong ({tag!r})"
        if (uid, gid) != (f["uid"], f["gid"]):
            return f"owner {uid}:{gid} != {f['uid']}:{f['gid']}"
        kind = f["kind"]
        if kind == "append":
            if mode != f["mode"]:
                return f"mode {mode:o} != {f['mode']:o}"
            if data == f["data"]:
                return "old"
            if data == f["data"] + b"+appended\n":
                return "new"
            return f"torn content ({len(data)} bytes, expected {len(f['data'])} or {len(f['data']) + 10})"
        if data != f["data"]:
            return f"content changed ({len(data)} bytes, expected {len(f['data'])})"
        if kind == "chmod":
            if mode == f["mode"]:
                return "old"
            if mode == f["new_mode"]:
                return "new"
            return f"mode {mode:o} neither {f['mode']:o} nor {f['new_mode']:o}"
        if mode != f["mode"]:
            return f"mode {mode:o} != {f['mode']:o}"
        return "new" if xa.get("user.new") == b"1" else "old"

    def check(self, L, steps):
        done = {s["done"] for s in steps}
        p = []
        for name, f in self.files.items():
            path = L.m(f"small/{name}")
            if not os.path.lexists(path):
                p.append(f"small/{name}: missing")
                continue
            state = self._state(path, f)
            if state not in ("old", "new"):
                p.append(f"small/{name} ({f['kind']}): {state}")
            elif name in done and state != "new":
                p.append(f"small/{name} ({f['kind']}): returned before the kill but reads old")
            up = L.u(f"small/{name}")
            if os.path.lexists(up):
                ustate = self._state(up, f)
                if ustate not in ("old", "new"):
                    p.append(f"upper small/{name}: {ustate}")
        return p

    def finish(self, mnt):
        for name, f in self.files.items():
            if self._state(os.path.join(mnt, "small", name), f) == "old":
                self._one(mnt, name, f)

    def _one(self, mnt, name, f):
        p = os.path.join(mnt, "small", name)
        if f["kind"] == "append":
            hl.append_file(p, b"+appended\n")
        elif f["kind"] == "chmod":
            os.chmod(p, f["new_mode"])
        else:
            os.setxattr(p, "user.new", b"1")

    def check_final(self, L):
        return [f"small/{n}: {s}" for n, f in self.files.items()
                if (s := self._state(L.m(f"small/{n}"), f)) != "new"]


class Renames(Scenario):
    name, top = "renames", "ren"
    N = 200

    def build(self, L):
        rnd = random.Random(SEED + 2)
        self.files = {}
        for layer in (0, 1):
            os.makedirs(L.l(layer, "ren/src"))
            os.makedirs(L.l(layer, "ren/dst"))
        for i in range(self.N):
            name = f"r{i:03d}"
            data = rnd.randbytes(rnd.randint(0, 3000))
            layer = 0 if i % 4 == 0 else 1
            with open(L.l(layer, f"ren/src/{name}"), "wb") as f:
                f.write(data)
            victim = None
            if i % 7 == 0:
                victim = f"victim {i}\n".encode()
                with open(L.l(1 - layer, f"ren/dst/{name}"), "wb") as f:
                    f.write(victim)
            self.files[name] = (data, victim)

    def op(self, mnt, log):
        for name in self.files:
            os.rename(os.path.join(mnt, "ren/src", name), os.path.join(mnt, "ren/dst", name))
            log({"done": name})

    def _content(self, path):
        try:
            return hl.read_file(path)
        except FileNotFoundError:
            return None

    def check(self, L, steps):
        done = {s["done"] for s in steps}
        p = []
        for name, (data, victim) in self.files.items():
            src = self._content(L.m(f"ren/src/{name}"))
            dst = self._content(L.m(f"ren/dst/{name}"))
            if src is not None:
                if src != data:
                    p.append(f"ren/src/{name}: content changed")
                if dst != victim:
                    p.append(f"ren/{name}: still at the source but the destination is "
                             f"{'present' if victim is None else 'not the old entry'} (both names)")
                if name in done:
                    p.append(f"ren/{name}: the rename returned before the kill but the file is back at its source")
            else:
                if dst is None:
                    p.append(f"ren/{name}: at neither name (lost)")
                elif dst != data:
                    p.append(f"ren/dst/{name}: moved but the content is {'the old victim' if dst == victim else 'torn'}")
        return p

    def finish(self, mnt):
        for name in self.files:
            if os.path.lexists(os.path.join(mnt, "ren/src", name)):
                os.rename(os.path.join(mnt, "ren/src", name), os.path.join(mnt, "ren/dst", name))

    def check_final(self, L):
        p = []
        left = os.listdir(L.m("ren/src"))
        if left:
            p.append(f"ren/src not empty after finishing: {sorted(left)[:5]}")
        for name, (data, _) in self.files.items():
            if self._content(L.m(f"ren/dst/{name}")) != data:
                p.append(f"ren/dst/{name}: wrong after finishing")
        return p


class RenamesMetacopy(Renames):
    """The same renames with metacopy=on: each lower file moves as a metacopy whose redirect
    (set at the old name, before the move) leads to its data."""
    name = "renames-metacopy"
    extra_opts = ["metacopy=on"]


class DirRenames(Scenario):
    name, top = "dirs", "dirs"
    N = 24

    def build(self, L):
        rnd = random.Random(SEED + 3)
        for layer in (0, 1):
            os.makedirs(L.l(layer, "dirs/a"))
            os.makedirs(L.l(layer, "dirs/b"))
        for i in range(self.N):
            d = f"dirs/a/d{i:02d}"
            for rel in ("", "sub", "sub/deeper"):
                os.makedirs(L.l(1, f"{d}/{rel}"), exist_ok=True)
            for rel in ("f1", "f2", "sub/g", "sub/deeper/h"):
                with open(L.l(1, f"{d}/{rel}"), "wb") as f:
                    f.write(rnd.randbytes(rnd.randint(1, 2000)))
            if i % 3 == 0:  # merged from both lowers, with a whiteout in the upper one
                os.makedirs(L.l(0, f"{d}/sub"))
                with open(L.l(0, f"{d}/top_only"), "wb") as f:
                    f.write(b"from lower0\n")
                with open(L.l(0, f"{d}/sub/g"), "wb") as f:
                    f.write(b"lower0 wins\n")
                os.mknod(L.l(0, f"{d}/f2"), stat.S_IFCHR | 0, os.makedev(0, 0))
        self.moves = {}
        for i in range(self.N):
            old = f"dirs/a/d{i:02d}"
            new = f"dirs/a/moved{i:02d}" if i % 2 == 0 else f"dirs/b/d{i:02d}"
            self.moves[old] = new

    def learn(self, mnt):
        self.content = {old: hl.tree_state(os.path.join(mnt, old)) for old in self.moves}

    def op(self, mnt, log):
        for old, new in self.moves.items():
            os.rename(os.path.join(mnt, old), os.path.join(mnt, new))
            log({"done": old})

    def check(self, L, steps):
        done = {s["done"] for s in steps}
        p = []
        for old, new in self.moves.items():
            at_old, at_new = os.path.lexists(L.m(old)), os.path.lexists(L.m(new))
            if at_old and at_new:
                p.append(f"{old} -> {new}: both names exist")
            elif not at_old and not at_new:
                p.append(f"{old} -> {new}: neither name exists (lost)")
            else:
                where = new if at_new else old
                got = hl.tree_state(L.m(where))
                if got != self.content[old]:
                    diff = sorted(set(got.items()) ^ set(self.content[old].items()))[:4]
                    p.append(f"{where}: content differs from {old} before the rename: {diff}")
                if old in done and not at_new:
                    p.append(f"{old} -> {new}: returned before the kill but undone")
        return p

    def finish(self, mnt):
        for old, new in self.moves.items():
            if os.path.lexists(os.path.join(mnt, old)):
                os.rename(os.path.join(mnt, old), os.path.join(mnt, new))

    def check_final(self, L):
        p = []
        for old, new in self.moves.items():
            if os.path.lexists(L.m(old)) or hl.tree_state(L.m(new)) != self.content[old]:
                p.append(f"{old} -> {new}: wrong after finishing")
        return p


class RmRf(Scenario):
    name, top = "rmrf", "rm"
    TREES = 8

    def build(self, L):
        rnd = random.Random(SEED + 4)
        for t in range(self.TREES):
            for a in range(3):
                for b in range(3):
                    d = f"rm/t{t}/a{a}/b{b}"
                    os.makedirs(L.l(1, d))
                    for f in range(3):
                        with open(L.l(1, f"{d}/f{f}"), "wb") as fh:
                            fh.write(rnd.randbytes(rnd.randint(0, 500)))
            if t % 2 == 0:  # merged with lower0: extra entries and a whiteout
                os.makedirs(L.l(0, f"rm/t{t}/a1/b1"))
                with open(L.l(0, f"rm/t{t}/a1/extra"), "wb") as fh:
                    fh.write(b"extra\n")
                os.mknod(L.l(0, f"rm/t{t}/a1/b1/f0"), stat.S_IFCHR | 0, os.makedev(0, 0))
        os.makedirs(L.l(0, "rm/keep"))
        with open(L.l(0, "rm/keep/file"), "wb") as fh:
            fh.write(b"keep\n")

    def learn(self, mnt):
        self.initial = merged_entries(mnt, "rm")

    def op(self, mnt, log):
        for t in range(self.TREES):
            rmtree_logged(mnt, f"rm/t{t}", log)

    def check(self, L, steps):
        removed = {s["removed"] for s in steps}
        now = merged_entries(L.mnt, "rm")
        p = []
        for rel, v in now.items():
            if rel not in self.initial:
                p.append(f"{rel}: appeared")
            elif v != self.initial[rel] and v[0] != "d":
                p.append(f"{rel}: changed {self.initial[rel]} -> {v}")
        for rel in sorted(removed):
            if rel in now:
                p.append(f"{rel}: its removal returned before the kill but it is back")
        if "rm/keep/file" not in now:
            p.append("rm/keep/file: lost")
        return p

    def finish(self, mnt):
        for t in range(self.TREES):
            p = os.path.join(mnt, f"rm/t{t}")
            if os.path.lexists(p):
                shutil.rmtree(p)

    def check_final(self, L):
        left = sorted(os.listdir(L.m("rm")))
        return [] if left == ["keep"] else [f"rm/ after finishing: {left} (expected ['keep'])"]


class Opaque(Scenario):
    name, top = "opaque", "op"
    N = 16

    def build(self, L):
        for i in range(self.N):
            d = f"op/o{i:02d}"
            os.makedirs(L.l(1, f"{d}/s"))
            for n in ("a", "b", "c", "s/x"):
                with open(L.l(1, f"{d}/{n}"), "wb") as fh:
                    fh.write(f"original {d}/{n}\n".encode())
            if i % 2 == 0:
                os.makedirs(L.l(0, d))
                with open(L.l(0, f"{d}/upper_lower"), "wb") as fh:
                    fh.write(b"from lower0\n")

    def learn(self, mnt):
        self.initial = merged_entries(mnt, "op")

    def op(self, mnt, log):
        for i in range(self.N):
            d = f"op/o{i:02d}"
            rmtree_logged(mnt, d, log)
            os.mkdir(os.path.join(mnt, d))
            log({"mkdir": d})
            hl.write_file(os.path.join(mnt, d, "new"), f"fresh {d}\n".encode())
            log({"created": d})

    def check(self, L, steps):
        removed = {s["removed"] for s in steps if "removed" in s}
        made = {s["mkdir"] for s in steps if "mkdir" in s}
        created = {s["created"] for s in steps if "created" in s}
        now = merged_entries(L.mnt, "op")
        p = []
        for i in range(self.N):
            d = f"op/o{i:02d}"
            inside = {rel: v for rel, v in now.items() if rel.startswith(d + "/")}
            originals = [rel for rel in inside if rel in self.initial]
            if f"{d}/new" in inside:
                if originals:
                    p.append(f"{d}: the new dir shows lower entries {originals[:3]} (not opaque)")
                want = hl.sha(f"fresh {d}\n".encode())
                if inside[f"{d}/new"][5] not in (want, hl.sha(b"")):
                    p.append(f"{d}/new: torn")
            for rel in originals:
                if inside[rel] != self.initial[rel] and inside[rel][0] != "d":
                    p.append(f"{rel}: changed")
            if d in made and not os.path.isdir(L.m(d)):
                p.append(f"{d}: mkdir returned before the kill but the dir is gone")
            if d in made and originals:
                p.append(f"{d}: mkdir returned but lower entries {originals[:3]} show through")
            if d in created and (f"{d}/new" not in inside or inside[f"{d}/new"][5] != hl.sha(f"fresh {d}\n".encode())):
                p.append(f"{d}/new: written before the kill but {'missing' if f'{d}/new' not in inside else 'wrong'}")
        # A removed name may come back only as the new, empty (opaque) directory of the mkdir
        # that followed (it may have run in the daemon even if its reply never arrived).
        new_dirs = {f"op/o{i:02d}" for i in range(self.N)}
        for rel in removed:
            if rel in now and rel in self.initial and rel not in made:
                if rel in new_dirs and not [r for r in now if r.startswith(rel + "/") and r in self.initial]:
                    continue
                p.append(f"{rel}: removed before the kill but back")
        return p

    def finish(self, mnt):
        for i in range(self.N):
            d = os.path.join(mnt, f"op/o{i:02d}")
            new = os.path.join(d, "new")
            if os.path.isdir(d) and os.listdir(d) == ["new"]:
                hl.write_file(new, f"fresh op/o{i:02d}\n".encode())
                continue
            if os.path.lexists(d):
                shutil.rmtree(d)
            os.mkdir(d)
            hl.write_file(new, f"fresh op/o{i:02d}\n".encode())

    def check_final(self, L):
        p = []
        for i in range(self.N):
            d = f"op/o{i:02d}"
            names = sorted(os.listdir(L.m(d)))
            if names != ["new"] or hl.read_file(L.m(f"{d}/new")) != f"fresh {d}\n".encode():
                p.append(f"{d}: {names} after finishing")
        return p


DEEP_MODES = [0o755, 0o750, 0o711, 0o2775, 0o700, 0o1777]


class Deep(Scenario):
    name, top = "deep", "deep"
    LEVELS = 120

    def build(self, L):
        self.levels = []
        rel = "deep"
        os.makedirs(L.l(1, rel))
        for i in range(self.LEVELS):
            rel = f"{rel}/d{i:03d}"
            os.mkdir(L.l(1, rel))
            with open(L.l(1, f"{rel}/f"), "wb") as fh:
                fh.write(f"level {i}\n".encode())
            self.levels.append(rel)
        for i, rel in reversed(list(enumerate(self.levels))):
            p = L.l(1, rel)
            os.setxattr(p, "user.level", str(i).encode())
            os.chown(p, 1000 + i % 3, 100 + i % 2)
            os.chmod(p, DEEP_MODES[i % len(DEEP_MODES)])

    def op(self, mnt, log):
        for rel in reversed(self.levels):
            hl.append_file(os.path.join(mnt, rel, "f"), b"more\n")
            log({"done": rel})

    def _dir_ok(self, path, i):
        t, mode, uid, gid = meta(path)
        want = ("d", DEEP_MODES[i % len(DEEP_MODES)], 1000 + i % 3, 100 + i % 2)
        if (t, mode, uid, gid) != want:
            return f"metadata {(t, oct(mode), uid, gid)} != {(want[0], oct(want[1]), want[2], want[3])}"
        if user_xattrs(path).get("user.level") != str(i).encode():
            return "user.level xattr lost"
        return ""

    def check(self, L, steps):
        done = {s["done"] for s in steps}
        p = []
        for i, rel in enumerate(self.levels):
            if not os.path.isdir(L.m(rel)):
                p.append(f"{rel}: missing")
                break
            if why := self._dir_ok(L.m(rel), i):
                p.append(f"{rel}: {why}")
            if os.path.lexists(L.u(rel)):
                if why := self._dir_ok(L.u(rel), i):
                    p.append(f"upper {rel}: {why}")
            data = hl.read_file(L.m(f"{rel}/f"))
            old = f"level {i}\n".encode()
            if data not in (old, old + b"more\n"):
                p.append(f"{rel}/f: torn ({data!r})")
            elif rel in done and data == old:
                p.append(f"{rel}/f: append returned before the kill but reads old")
        # Structure of the upper: a copied-up dir's parent is copied up too.
        for i, rel in enumerate(self.levels[1:], 1):
            if os.path.lexists(L.u(rel)) and not os.path.isdir(L.u(self.levels[i - 1])):
                p.append(f"upper {rel}: present but its parent is not")
        return p

    def finish(self, mnt):
        for i, rel in enumerate(self.levels):
            p = os.path.join(mnt, rel, "f")
            if hl.read_file(p) == f"level {i}\n".encode():
                hl.append_file(p, b"more\n")

    def check_final(self, L):
        return [f"{rel}/f wrong after finishing" for i, rel in enumerate(self.levels)
                if hl.read_file(L.m(f"{rel}/f")) != f"level {i}\nmore\n".encode()]


ALL = [Big(), BigMetacopy(), Small(), Renames(), RenamesMetacopy(), DirRenames(), RmRf(), Opaque(), Deep()]


# ------------------------------------------------------------------------------------------------
# the loop


def walk_all(mnt, top):
    """Read everything under mnt/top through the mount; problems for anything unreadable or a
    staging name showing in the merged view."""
    p = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(mnt, top), onerror=lambda e: p.append(f"walk: {e}")):
        for n in dirnames + filenames:
            if n.startswith(hl.STAGING_PREFIXES):
                p.append(f"{os.path.relpath(os.path.join(dirpath, n), mnt)}: staging name in the merged view")
        for n in filenames:
            path = os.path.join(dirpath, n)
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    hl.sha_file(path)
            except OSError as e:
                p.append(f"{os.path.relpath(path, mnt)}: {hl.errname(e)}")
    return p


def opts_for(i, sc):
    return (["passthrough=off"] if i % 2 else []) + getattr(sc, "extra_opts", [])


def run_scenario(s, sc):
    L = ml.Layout(ml.scratch(f"crash-{sc.name}"), n_lowers=2)
    sc.build(L)
    lowers_before = [hl.tree_state(d) for d in L.lowers]

    # Calibration: the whole sequence once without a kill. Also proves the checks accept the
    # final state and the initial state.
    L.mount_strata(getattr(sc, "extra_opts", []))
    sc.learn(L.mnt)
    s.expect_eq(sc.check(L, []), [], f"[{sc.name}] checks accept the untouched tree")
    t0 = time.monotonic()
    w = hl.Worker(lambda log: sc.op(L.mnt, log), os.path.join(L.root, "calibrate.log"))
    rc = w.wait(300)
    took = time.monotonic() - t0
    s.require(rc == 0, f"[{sc.name}] the operation sequence runs without a kill", w.error())
    s.expect_eq(sc.check(L, w.steps()), [], f"[{sc.name}] checks accept the completed sequence")
    s.expect_eq(sc.check_final(L), [], f"[{sc.name}] the completed sequence is the final state")
    L.umount()
    window = max(took * 1.2, 0.005)
    print(f"  [{sc.name}] sequence takes {took * 1000:.0f} ms: kills at 0..{window * 1000:.0f} ms", flush=True)

    interrupted = leftovers = 0
    for i in range(ITERATIONS):
        hl.clear_dir(L.upper)
        hl.clear_dir(L.work)
        opts = opts_for(i, sc)
        tag = f"[{sc.name} #{i} {'passthrough=off' if 'passthrough=off' in opts else 'passthrough'}]"
        m = L.mount_strata(opts)
        w = hl.Worker(lambda log: sc.op(L.mnt, log), os.path.join(L.root, f"worker{i}.log"))
        delay = RNG.uniform(0, window)
        time.sleep(delay)
        problem = hl.kill_daemon(m)
        L.mount = None
        s.require(not problem, f"{tag} kill -9 and umount -l", problem)
        rc = w.wait(20)
        if rc is None:
            w.kill()
            s.expect(False, f"{tag} the worker hangs on the dead mount (> 20 s after kill -9)")
        steps = w.steps()
        if rc != 0:
            interrupted += 1
        crash_left = hl.work_leftovers(L.work)
        leftovers += bool(crash_left)
        if VERBOSE:
            print(f"  {tag} killed at {delay * 1000:.1f} ms: worker rc {rc}, {len(steps)} step(s), "
                  f"workdir/work held {crash_left[:3]}", flush=True)
        # Remount on the same upper/work: the new daemon must clean the workdir.
        L.mount_strata(opts)
        left = hl.work_leftovers(L.work)
        s.expect_eq(left, [], f"{tag} workdir/work empty after the remount (killed after {delay * 1000:.0f} ms)")
        problems = sc.check(L, steps) + walk_all(L.mnt, sc.top) + hl.upper_problems(L.upper)
        s.expect_eq(problems[:12], [], f"{tag} state after kill -9 at {delay * 1000:.0f} ms, "
                    f"{len(steps)} step(s) done, {len(problems)} problem(s)")
        try:
            sc.finish(L.mnt)
        except OSError as e:
            s.expect(False, f"{tag} finishing the sequence on the remounted tree: {e}")
        s.expect_eq(sc.check_final(L)[:12], [], f"{tag} final state after finishing")
        L.umount()
        # And once more from disk alone, with a fresh daemon.
        L.mount_strata(opts)
        s.expect_eq(sc.check_final(L)[:12], [], f"{tag} final state after another remount")
        s.expect_eq(hl.upper_problems(L.upper), [], f"{tag} upper on disk")
        L.umount()
    s.note(f"{sc.name}: {interrupted}/{ITERATIONS} kills landed inside the sequence "
           f"(window {window * 1000:.0f} ms), {leftovers} left staging files in workdir/work")
    s.expect_eq([hl.tree_state(d) for d in L.lowers] == lowers_before, True, f"[{sc.name}] lower layers untouched")
    shutil.rmtree(L.root, ignore_errors=True)


def main():
    s = ml.start("hardening: kill -9 of strata-fs at random moments")
    wanted = [x for x in os.environ.get("HARDENING_CRASH_SCENARIOS", "").split(",") if x]
    print(f"seed {SEED} (HARDENING_CRASH_SEED), {ITERATIONS} kill(s) per scenario", flush=True)
    for sc in ALL:
        if wanted and sc.name not in wanted:
            continue
        s.run(f"crash: {sc.name}", run_scenario, s, sc)
    s.finish()


if __name__ == "__main__":
    main()

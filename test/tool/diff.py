#!/usr/bin/env python3
"""strata diff: the exact A/C/D lines for the shared fixture (every marker form), the JSON form,
type changes in both directions, and bad input.

The expected lines are written out from what the fixture holds (lib/toolkit.py build_fixture):
an entry of the merged tree that the lowers do not have is A (and every entry below an added
directory too), one the upper replaced or whose directory it holds is C, one of the lowers gone
from the merged tree is D (only the top of a deleted tree, as docker diff shows it).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import toolkit  # noqa: E402

NAME = "diff"
toolkit.require_markers(NAME)
suite = toolkit.Suite(NAME)
t = toolkit.Layers("strata-diff.")
try:
    L1, L2, U = toolkit.build_fixture(t)
    OPTS = f"lowerdir={L1}:{L2},upperdir={U}"
    expected = [
        # aopq/ opq/ uopq/: an opaque dir in the upper over a lower dir is C, what it hides is D
        ("C", "/aopq", "dir"),
        ("D", "/aopq/hidden3", "file"),
        ("A", "/baddev", "char"),           # a char device 0:5 is no whiteout: an added device
        ("C", "/data", "dir"),
        ("D", "/data/old", "dir"),          # a whited-out directory: D once, not its contents
        ("C", "/etc", "dir"),
        ("D", "/etc/hosts", "file"),        # char-device whiteout
        ("C", "/etc/motd", "file"),
        ("D", "/gone.txt", "file"),         # .wh. whiteout in the upper
        ("C", "/mix", "dir"),               # a dir over l1's file: replaced
        ("A", "/mix/inside", "file"),       # ... so all of its content is new
        ("A", "/moved", "dir"),             # redirected (renamed) dir: new at this path,
        ("A", "/moved/a", "dir"),           # with the content it brings from /red
        ("A", "/moved/a/file", "file"),
        ("A", "/newdir", "dir"),            # upper-only dir; its stray whiteout is no change
        ("A", "/newdir/f", "file"),
        ("C", "/opq", "dir"),
        ("D", "/opq/hidden", "file"),
        ("A", "/opq/new.txt", "file"),
        ("D", "/red", "dir"),
        ("D", "/reldir", "dir"),
        ("A", "/renamed", "dir"),           # relative redirect to reldir
        ("A", "/renamed/sub", "dir"),
        ("A", "/renamed/sub/g", "file"),
        ("C", "/uopq", "dir"),
        ("D", "/uopq/hidden2", "file"),
    ]
    # Not listed, on purpose: /neverwas (a stray whiteout hides nothing), /lonely.txt and
    # /lopq/below (deleted or hidden inside the lowers already: not a change of the upper).
    r = toolkit.run("diff", "-o", OPTS)
    suite.expect_lines("text: every marker form, sorted, one line each", r, [f"{k} {p}" for k, p, _ in expected])

    r = toolkit.run("diff", "--json", "-o", OPTS)
    j = toolkit.parse_json(suite, "json", r)
    if j is not None:
        got = [(c.get("kind"), c.get("path"), c.get("type")) for c in j] if isinstance(j, list) else j
        suite.check("json: the same changes as objects {path, kind, type}",
                    [] if got == expected and r.returncode == 0 else
                    [f"exit {r.returncode}", f"got  {got}", f"want {expected}"])

    # The lowers alone against themselves: nothing changed. An empty upper: nothing either.
    empty = t.dir("empty-upper")
    suite.expect_lines("an empty upper: no output", toolkit.run("diff", "-o", f"lowerdir={L1}:{L2},upperdir={empty}"), [])

    # Type changes, metadata-only copy-up, a new file in a new dir, deeper trees.
    b = t.dir("b/lower")
    t.file("b/lower/file-becomes-dir", "f\n")
    t.file("b/lower/dir-becomes-file/child", "c\n")
    t.file("b/lower/chmodded/keep", "k\n")
    t.file("b/lower/deep/er/est", "e\n")
    t.file("b/lower/untouched/file", "u\n")
    bu = t.dir("b/upper")
    t.file("b/upper/file-becomes-dir/now", "n\n")
    t.opaque("b/upper/file-becomes-dir", "trusted")
    t.file("b/upper/dir-becomes-file", "now a file\n")
    t.dir("b/upper/chmodded", 0o700)           # copied up for a chmod only
    t.file("b/upper/deep/er/est", "changed\n")
    t.file("b/upper/deep/er/new/a/b", "b\n")
    suite.expect_lines("type changes both ways, metadata copy-up, nested additions",
                       toolkit.run("diff", "-o", f"lowerdir={b},upperdir={bu}"), [
        "C /chmodded",
        "C /deep",
        "C /deep/er",
        "C /deep/er/est",
        "A /deep/er/new",
        "A /deep/er/new/a",
        "A /deep/er/new/a/b",
        "C /dir-becomes-file",      # a dir replaced by a file: C, its old children are not listed
        "C /file-becomes-dir",
        "A /file-becomes-dir/now",
    ])

    # ---- bad input ------------------------------------------------------------------------------
    def expect_error(title, args, needle):
        r = toolkit.run(*args)
        p = []
        if r.returncode != 2:
            p.append(f"exit {r.returncode}, want 2")
        lines = r.stderr.splitlines()
        if len(lines) != 1 or not lines[0].startswith("strata: ") or needle not in lines[0]:
            p.append(f"stderr {r.stderr!r}, want one line 'strata: ...{needle}...'")
        if r.stdout:
            p.append(f"stdout not empty: {r.stdout!r}")
        suite.check(title, p)

    expect_error("diff without upperdir", ["diff", "-o", f"lowerdir={L1}"], "upperdir: missing")
    expect_error("diff: upperdir is a file", ["diff", "-o", f"lowerdir={L1},upperdir={L1}/gone.txt"],
                 f"upperdir {L1}/gone.txt: Not a directory")
    expect_error("diff: a second lowerdir missing", ["diff", "-o", f"lowerdir={L1}:{t.path('gone')},upperdir={U}"],
                 f"lowerdir {t.path('gone')}: No such file or directory")
    expect_error("diff: stray argument", ["diff", "-o", OPTS, "/etc"], "'/etc': unexpected argument")
    expect_error("diff: unknown option in -o", ["diff", "-o", OPTS + ",bogus=1"], "unknown option 'bogus'")
finally:
    t.cleanup()
suite.finish()

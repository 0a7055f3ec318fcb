#!/usr/bin/env python3
"""The strata command line itself: --help and --version on stdout with exit 0; every kind of bad
input (no command, unknown command or flag, no -o, a bad -o, a missing layer) fails with exit 2
and exactly one line on stderr, "strata: ...", naming the culprit, and nothing on stdout.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import toolkit  # noqa: E402

NAME = "cli"
if not os.path.exists(toolkit.strata_bin()):
    toolkit.skip(NAME, f"no executable {toolkit.strata_bin()} (build first, or set STRATA_BUILD)")
suite = toolkit.Suite(NAME)
t = toolkit.Layers("strata-cli.")
try:
    L = t.dir("lower")
    F = t.file("regular-file", "x\n")

    r = toolkit.run("--help")
    suite.check("--help: usage on stdout, every command named, exit 0",
                [] if r.returncode == 0 and not r.stderr and all(
                    f"strata {c}" in r.stdout for c in ("which", "diff", "du", "check")) else
                [f"exit {r.returncode}", r.stdout, r.stderr])
    r = toolkit.run("which", "--help")
    suite.check("COMMAND --help: the same usage", [] if r.returncode == 0 and "strata which" in r.stdout
                else [f"exit {r.returncode}", r.stderr])
    r = toolkit.run("--version")
    ok = r.returncode == 0 and r.stdout.startswith("strata version ") and \
        any(ch.isdigit() for ch in r.stdout) and not r.stderr
    suite.check("--version: 'strata version N.N.N', exit 0", [] if ok else [f"exit {r.returncode}", r.stdout])

    cases = [
        ("no command", [], "strata: command: missing: which, diff, du or check (see strata --help)"),
        ("unknown command", ["frobnicate", "-o", f"lowerdir={L}"],
         "strata: unknown command 'frobnicate': which, diff, du or check (see strata --help)"),
        ("unknown flag", ["which", "--bogus", "-o", f"lowerdir={L}", "/"],
         "strata: unknown flag '--bogus' (see strata --help)"),
        ("no -o", ["which", "/"], "strata: which: -o lowerdir=DIR[:DIR...] missing (see strata --help)"),
        ("-o without a value", ["which", "-o"], "strata: -o: needs an option list (-o lowerdir=DIR[:DIR...])"),
        ("-o without lowerdir", ["which", "-o", "ro", "/"],
         "strata: lowerdir: missing; give at least one layer: -o lowerdir=DIR[:DIR...]"),
        ("empty lowerdir=", ["check", "-o", "lowerdir="], "strata: option 'lowerdir': needs a value (lowerdir=...)"),
        ("unknown option", ["check", "-o", f"lowerdir={L},nosuchopt"], "strata: unknown option 'nosuchopt'"),
        ("lowerdir does not exist", ["check", "-o", f"lowerdir={t.path('missing')}"],
         f"strata: lowerdir {t.path('missing')}: No such file or directory"),
        ("lowerdir is a file", ["check", "-o", f"lowerdir={F}"], f"strata: lowerdir {F}: Not a directory"),
        ("second lowerdir missing", ["check", "-o", f"lowerdir={L}:{t.path('missing2')}"],
         f"strata: lowerdir {t.path('missing2')}: No such file or directory"),
        ("workdir without upperdir", ["check", "-o", f"lowerdir={L},workdir={L}"],
         f"strata: workdir {L}: given without upperdir=DIR"),
        ("-v is which's", ["diff", "-v", "-o", f"lowerdir={L},upperdir={L}"],
         "strata: diff: -v is a flag of strata which only"),
    ]
    for title, args, want in cases:
        r = toolkit.run(*args)
        p = []
        if r.returncode != 2:
            p.append(f"exit {r.returncode}, want 2")
        if r.stderr != want + "\n":
            p.append(f"stderr {r.stderr!r}")
            p.append(f"want   {want + chr(10)!r}")
        if r.stdout:
            p.append(f"stdout not empty: {r.stdout!r}")
        suite.check(f"bad input: {title}", p)

    # The tool never needs a workdir, and never writes into the layers.
    U = t.dir("upper")
    t.file("lower/a", "a\n")
    before = sorted(os.listdir(t.root))
    r = toolkit.run("which", "-o", f"lowerdir={L},upperdir={U}", "/a")
    suite.check("upperdir without workdir is fine, and nothing is created",
                [] if r.returncode == 0 and sorted(os.listdir(t.root)) == before and not os.listdir(U)
                else [f"exit {r.returncode}", r.stderr, str(os.listdir(t.root))])
    # Options strata-fs takes and the tool has no use for are accepted (same -o everywhere).
    r = toolkit.run("which", "-o", f"lowerdir={L},upperdir={U},timeout=1,allow_other,trace=all,fsname=x", "/a")
    suite.check("the rest of strata-fs's options are accepted", [] if r.returncode == 0 else [r.stderr])
    # A colon in a layer path, escaped as for strata-fs.
    t.file("co:lon/c", "c\n")
    r = toolkit.run("which", "-o", "lowerdir=" + t.path("co\\:lon") + ":" + L, "/c")
    suite.check("lowerdir with an escaped colon",
                [] if r.returncode == 0 and f"{t.path('co:lon')}/c" in r.stdout else [r.stdout, r.stderr])
finally:
    t.cleanup()
suite.finish()

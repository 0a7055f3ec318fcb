#!/usr/bin/env python3
"""strata check: the exact findings for the shared fixture (lib/toolkit.py build_fixture), clean
layers, warnings against --strict, each kind of finding on its own small tree, JSON, bad input.

A problem is what the kernel overlay would get wrong (it shows .wh. files and .wh..wh..opq as
files, reads one xattr namespace per mount, treats a char device 0:N as a device); a warning is
harmless to the merged view but odd (a whiteout that hides nothing, a marker in a lower layer that
only strata-fs and fuse-overlayfs read). Exit 1 with problems, 0 without (warnings too, unless
--strict).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import toolkit  # noqa: E402

NAME = "check"
toolkit.require_markers(NAME)
suite = toolkit.Suite(NAME)
t = toolkit.Layers("strata-check.")
try:
    L1, L2, U = toolkit.build_fixture(t)
    OPTS = f"lowerdir={L1}:{L2},upperdir={U}"
    r = toolkit.run("check", "-o", OPTS)
    suite.expect_lines("fixture: every finding, in layer and path order, with its fix", r, [
        f"problem: {U}/.wh.gone.txt: .wh. whiteout file in the upper layer: the kernel overlay shows it as a "
        f"file and does not hide gone.txt; fix: rm -- {U}/.wh.gone.txt && mknod {U}/gone.txt c 0 0",
        f"problem: {U}/aopq/.wh..wh..opq: opaque marker .wh..wh..opq in the upper layer: the kernel overlay "
        f"shows it as a file and merges the directory with the ones below; fix: rm -- {U}/aopq/.wh..wh..opq "
        f"&& setfattr -n trusted.overlay.opaque -v y {U}/aopq",
        f"problem: {U}/baddev: character device 0:5: not a whiteout (only 0:0 is), and no real device either: "
        f"the merged tree shows it as a device and hides nothing; fix: rm -- {U}/baddev && mknod {U}/baddev "
        f"c 0 0  (if it was meant to delete baddev; else just rm)",
        f"warning: {U}/neverwas: stray whiteout: no layer below has neverwas; fix: rm -- {U}/neverwas",
        f"warning: {U}/newdir/stray: stray whiteout: it is in a directory that no layer below has; "
        f"fix: rm -- {U}/newdir/stray",
        f"warning: {L1}/.wh.lonely.txt: .wh. whiteout file: strata-fs and fuse-overlayfs honour it, the kernel "
        f"overlay shows it as a file and does not hide lonely.txt; fix: rm -- {L1}/.wh.lonely.txt && "
        f"mknod {L1}/lonely.txt c 0 0",
        f"warning: {L1}/strayl1: stray whiteout: no layer below has strayl1; fix: rm -- {L1}/strayl1",
        f"problem: {U}/uopq: user.overlay.* markers here and trusted.overlay.* markers elsewhere "
        f"(e.g. {U}/moved): the kernel overlay reads one namespace per mount, the other is ignored; "
        f"fix: write all markers in one namespace: trusted.overlay.* (root), or user.overlay.* and mount "
        f"with -o userxattr",
        "4 problems, 4 warnings in 3 layers",
    ], rc=1)

    r = toolkit.run("check", "--json", "-o", OPTS)
    j = toolkit.parse_json(suite, "json", r)
    if j is not None:
        p = []
        if r.returncode != 1:
            p.append(f"exit {r.returncode}, want 1")
        if (j.get("ok"), j.get("problems"), j.get("warnings")) != (False, 4, 4):
            p.append(f"ok/problems/warnings {j.get('ok')} {j.get('problems')} {j.get('warnings')}")
        got = [(f["severity"], f["layer"], f["role"], f["path"], f["real_path"]) for f in j.get("findings", [])]
        want = [("problem", 0, "upper", "/.wh.gone.txt", f"{U}/.wh.gone.txt"),
                ("problem", 0, "upper", "/aopq/.wh..wh..opq", f"{U}/aopq/.wh..wh..opq"),
                ("problem", 0, "upper", "/baddev", f"{U}/baddev"),
                ("warning", 0, "upper", "/neverwas", f"{U}/neverwas"),
                ("warning", 0, "upper", "/newdir/stray", f"{U}/newdir/stray"),
                ("warning", 1, "lower", "/.wh.lonely.txt", f"{L1}/.wh.lonely.txt"),
                ("warning", 1, "lower", "/strayl1", f"{L1}/strayl1"),
                ("problem", 0, "upper", "/uopq", f"{U}/uopq")]
        if got != want:
            p.append(f"findings {got}")
            p.append(f"want     {want}")
        layers = [(x["layer"], x["role"], x["dir"]) for x in j.get("layers", [])]
        if layers != [(0, "upper", U), (1, "lower", L1), (2, "lower", L2)]:
            p.append(f"layers {layers}")
        if any(not f.get("what") or not f.get("fix") for f in j.get("findings", [])):
            p.append("a finding without what or fix")
        suite.check("json: counts, findings (severity, layer, path), layers", p)

    # ---- clean layers, warnings and --strict -------------------------------------------------
    t.file("c/l/etc/conf", "c\n")
    t.file("c/l/var/log/x", "x\n")
    t.file("c/u/etc/conf", "changed\n")
    t.whiteout("c/u/var/log")
    t.opaque("c/u/etc2", "trusted")
    t.chardev("c/u/null", 1, 3)        # a real device node (as /dev/null in an image): fine
    t.redirect("c/u/renamed", "/var")
    clean_opts = f"lowerdir={t.path('c/l')},upperdir={t.path('c/u')}"
    suite.expect_lines("clean layers: exit 0", toolkit.run("check", "-o", clean_opts),
                       ["clean: no problems in 2 layers"])
    t.whiteout("c/u/etc/never")
    warn = [f"warning: {t.path('c/u/etc/never')}: stray whiteout: no layer below has never; "
            f"fix: rm -- {t.path('c/u/etc/never')}", "0 problems, 1 warning in 2 layers"]
    suite.expect_lines("warnings only: exit 0", toolkit.run("check", "-o", clean_opts), warn)
    suite.expect_lines("warnings only, --strict: exit 1", toolkit.run("check", "--strict", "-o", clean_opts), warn, rc=1)

    # ---- one finding per tree ------------------------------------------------------------------
    def single(title, build, lines, rc):
        base = t.path(f"s-{len(suite.failures) + suite.passed}")
        os.makedirs(base + "/l")
        os.makedirs(base + "/u")
        build(base)
        lines = [line.replace("@", base) for line in lines]
        suite.expect_lines(title, toolkit.run("check", "-o", f"lowerdir={base}/l,upperdir={base}/u"), lines, rc=rc)

    def bad_redirect(b):
        os.makedirs(b + "/l/real")
        os.makedirs(b + "/u/r")
        os.setxattr(b + "/u/r", "trusted.overlay.redirect", b"/missing")

    single("redirect to a directory the lowers do not have: problem", bad_redirect, [
        "problem: @/u/r: trusted.overlay.redirect=/missing: no such directory in the layers below, so nothing "
        "merges into this one; fix: point it at the directory in the lower layers this one was renamed from, "
        "or remove it: setfattr -x trusted.overlay.redirect @/u/r",
        "1 problem, 0 warnings in 2 layers"], 1)

    def redirect_to_file(b):
        open(b + "/l/plain", "w").close()
        os.makedirs(b + "/u/r")
        os.setxattr(b + "/u/r", "trusted.overlay.redirect", b"plain")

    single("relative redirect to a file: problem", redirect_to_file, [
        "problem: @/u/r: trusted.overlay.redirect=plain: no such directory in the layers below, so nothing "
        "merges into this one; fix: point it at the directory in the lower layers this one was renamed from, "
        "or remove it: setfattr -x trusted.overlay.redirect @/u/r",
        "1 problem, 0 warnings in 2 layers"], 1)

    def climbing_redirect(b):
        os.makedirs(b + "/l/x")
        os.makedirs(b + "/u/up")
        os.setxattr(b + "/u/up", "trusted.overlay.redirect", b"/..")
        os.makedirs(b + "/u/rel")
        os.setxattr(b + "/u/rel", "trusted.overlay.redirect", b"x/..")

    fix = ("fix: point it at the directory in the lower layers this one was renamed from, or remove it: "
           "setfattr -x trusted.overlay.redirect")
    single("redirects with .. or a relative path of several names: problems (never walked)", climbing_redirect, [
        "problem: @/u/rel: trusted.overlay.redirect=x/..: malformed: a redirect is an absolute path inside the "
        f"layers or one name beside this directory, without . or .. components; {fix} @/u/rel",
        "problem: @/u/up: trusted.overlay.redirect=/..: malformed: a redirect is an absolute path inside the "
        f"layers or one name beside this directory, without . or .. components; {fix} @/u/up",
        "2 problems, 0 warnings in 2 layers"], 1)

    def bad_opaque_value(b):
        os.makedirs(b + "/u/d")
        os.setxattr(b + "/u/d", "trusted.overlay.opaque", b"z")

    single("opaque xattr that is not y: warning", bad_opaque_value, [
        "warning: @/u/d: trusted.overlay.opaque=z: ignored, only y makes a directory opaque; fix: setfattr -n "
        "trusted.overlay.opaque -v y @/u/d  (or setfattr -x trusted.overlay.opaque @/u/d)",
        "0 problems, 1 warning in 2 layers"], 0)

    def user_only(b):
        os.makedirs(b + "/l/d")
        os.makedirs(b + "/u/d")
        os.setxattr(b + "/u/d", "user.overlay.opaque", b"y")

    single("user.overlay.* markers only: warning (needs -o userxattr)", user_only, [
        "warning: @/u/d: user.overlay.* markers here: the kernel overlay reads them only when mounted with "
        "-o userxattr; fix: mount the kernel overlay with -o userxattr (strata-fs reads both namespaces)",
        "0 problems, 1 warning in 2 layers"], 0)

    def lower_aufs_opaque(b):
        os.makedirs(b + "/l/d")
        open(b + "/l/d/.wh..wh..opq", "w").close()

    single(".wh..wh..opq in the lowest layer: warning", lower_aufs_opaque, [
        "warning: @/l/d/.wh..wh..opq: opaque marker .wh..wh..opq: strata-fs and fuse-overlayfs honour it, the "
        "kernel overlay shows it as a file and merges the directory with the ones below; fix: rm -- "
        "@/l/d/.wh..wh..opq && setfattr -n trusted.overlay.opaque -v y @/l/d",
        "0 problems, 1 warning in 2 layers"], 0)

    def lowest_whiteout(b):
        os.mknod(b + "/l/w", 0o600 | 0o020000, os.makedev(0, 0))

    single("whiteout in the lowest layer: warning", lowest_whiteout, [
        "warning: @/l/w: stray whiteout: nothing is below the lowest layer; fix: rm -- @/l/w",
        "0 problems, 1 warning in 2 layers"], 0)

    def in_opaque(b):
        os.makedirs(b + "/l/d")
        open(b + "/l/d/f", "w").close()
        os.makedirs(b + "/u/d")
        os.setxattr(b + "/u/d", "trusted.overlay.opaque", b"y")
        os.mknod(b + "/u/d/f", 0o600 | 0o020000, os.makedev(0, 0))

    single("whiteout inside an opaque directory: warning", in_opaque, [
        "warning: @/u/d/f: stray whiteout: it is in (or below) an opaque directory, which already hides "
        "everything below; fix: rm -- @/u/d/f",
        "0 problems, 1 warning in 2 layers"], 0)

    def stray_aufs_in_upper(b):
        os.makedirs(b + "/u/d")
        open(b + "/u/d/.wh.x", "w").close()

    single(".wh. file in the upper hiding nothing: problem, fix is rm", stray_aufs_in_upper, [
        "problem: @/u/d/.wh.x: .wh. whiteout file in the upper layer: the kernel overlay shows it as a file and "
        "does not hide x; fix: rm -- @/u/d/.wh.x  (nothing below to hide: it is in a directory that no layer "
        "below has)",
        "1 problem, 0 warnings in 2 layers"], 1)

    def marker_on_file(b):
        open(b + "/u/f", "w").close()
        os.setxattr(b + "/u/f", "trusted.overlay.opaque", b"y")

    single("overlay marker on a regular file: warning", marker_on_file, [
        "warning: @/u/f: trusted.overlay.opaque on a non-directory: ignored; fix: setfattr -x "
        "trusted.overlay.opaque @/u/f",
        "0 problems, 1 warning in 2 layers"], 0)

    def quoted(b):
        open(b + "/u/.wh.it's", "w").close()
        open(b + "/l/it's", "w").close()

    single("fix commands quote paths for the shell", quoted, [
        "problem: @/u/.wh.it's: .wh. whiteout file in the upper layer: the kernel overlay shows it as a file "
        "and does not hide it's; fix: rm -- '@/u/.wh.it'\\''s' && mknod '@/u/it'\\''s' c 0 0",
        "1 problem, 0 warnings in 2 layers"], 1)

    # ---- bad input ------------------------------------------------------------------------------
    r = toolkit.run("check", "-o", f"lowerdir={t.path('nope')}")
    suite.check("check: missing lowerdir: exit 2, one line naming it",
                [] if r.returncode == 2 and r.stderr == f"strata: lowerdir {t.path('nope')}: No such file or "
                "directory\n" and not r.stdout else [f"exit {r.returncode}, stderr {r.stderr!r}"])
    r = toolkit.run("check", "-o", OPTS, "extra")
    suite.check("check: stray argument: exit 2",
                [] if r.returncode == 2 and "'extra': unexpected argument" in r.stderr else
                [f"exit {r.returncode}, stderr {r.stderr!r}"])
finally:
    t.cleanup()
suite.finish()

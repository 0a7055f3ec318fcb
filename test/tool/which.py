#!/usr/bin/env python3
"""strata which on the shared fixture (lib/toolkit.py build_fixture): for each kind of verdict
(found in each layer, merged, whiteout of both forms, opaque of all three kinds, redirect, a file
over a dir, a dir over a file, a marker name), the exact text the tool prints, its exit status,
and the JSON form parsed and checked field by field. Bad input: exit 2, one line on stderr.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import toolkit  # noqa: E402

NAME = "which"
toolkit.require_markers(NAME)
suite = toolkit.Suite(NAME)
t = toolkit.Layers("strata-which.")
try:
    L1, L2, U = toolkit.build_fixture(t)
    OPTS = f"lowerdir={L1}:{L2},upperdir={U}"
    lu, l1, l2 = f"layer 0 (upper {U})", f"layer 1 (lower {L1})", f"layer 2 (lower {L2})"

    def which(path, *flags, opts=OPTS):
        return toolkit.run("which", "-o", opts, *flags, path)

    suite.expect_lines("file in all three layers: the upper's answers, the lowers' are hidden", which("/etc/motd"), [
        f"/etc/motd: regular file from {lu}: {U}/etc/motd",
        f"  {lu}: found: regular file: {U}/etc/motd",
        f"  {l1}: regular file, hidden by the regular file /etc/motd in layer 0: {L1}/etc/motd",
        f"  {l2}: regular file, hidden by the regular file /etc/motd in layer 0: {L2}/etc/motd",
    ])
    suite.expect_lines("file only in the middle layer", which("/etc/l1only"), [
        f"/etc/l1only: regular file from {l1}: {L1}/etc/l1only",
        f"  {lu}: not there",
        f"  {l1}: found: regular file: {L1}/etc/l1only",
        f"  {l2}: not there",
    ])
    suite.expect_lines("directory merged from three layers", which("/etc/"), [
        f"/etc: directory from {lu}: {U}/etc, merged with layers 1, 2",
        f"  {lu}: found: directory: {U}/etc",
        f"  {l1}: found: directory, merged into the one above: {L1}/etc",
        f"  {l2}: found: directory, merged into the one above: {L2}/etc",
    ])
    suite.expect_lines("char-device whiteout in the upper: exit 1, names the whiteout", which("/etc/hosts"), [
        f"/etc/hosts: not found: whited out in {lu}: {U}/etc/hosts is a whiteout (character device 0/0)",
        f"  {lu}: whiteout (character device 0/0): hides the name here and below: {U}/etc/hosts",
        f"  {l1}: not there",
        f"  {l2}: regular file, hidden by the whiteout (character device 0/0) /etc/hosts in layer 0: "
        f"{L2}/etc/hosts",
    ], rc=1)
    suite.expect_lines(".wh. whiteout in the upper", which("/gone.txt"), [
        f"/gone.txt: not found: whited out in {lu}: {U}/.wh.gone.txt is a whiteout (.wh. file)",
        f"  {lu}: whiteout (.wh. file): hides the name here and below: {U}/.wh.gone.txt",
        f"  {l1}: regular file, hidden by the whiteout (.wh. file) /gone.txt in layer 0: {L1}/gone.txt",
        f"  {l2}: not there",
    ], rc=1)
    suite.expect_lines(".wh. whiteout in a lower layer", which("/lonely.txt"), [
        f"/lonely.txt: not found: whited out in {l1}: {L1}/.wh.lonely.txt is a whiteout (.wh. file)",
        f"  {lu}: not there",
        f"  {l1}: whiteout (.wh. file): hides the name here and below: {L1}/.wh.lonely.txt",
        f"  {l2}: regular file, hidden by the whiteout (.wh. file) /lonely.txt in layer 1: {L2}/lonely.txt",
    ], rc=1)
    for d, f, kind in (("opq", "hidden", "xattr trusted.overlay.opaque=y"),
                       ("uopq", "hidden2", "xattr user.overlay.opaque=y"),
                       ("aopq", "hidden3", "marker .wh..wh..opq")):
        suite.expect_lines(f"below an opaque directory ({kind}): names the opaque dir and the hidden file",
                           which(f"/{d}/{f}"), [
            f"/{d}/{f}: not found: hidden by the opaque directory ({kind}) /{d} in {lu}: {U}/{d}; "
            f"{l2} has {L2}/{d}/{f}",
            f"  {lu}: not there",
            f"  {l1}: not there",
            f"  {l2}: regular file, hidden by the opaque directory ({kind}) /{d} in layer 0: {L2}/{d}/{f}",
        ], rc=1)
    suite.expect_lines("the opaque directory itself", which("/opq"), [
        f"/opq: directory from {lu}: {U}/opq; opaque in layer 0 (xattr trusted.overlay.opaque=y)",
        f"  {lu}: found: opaque directory (xattr trusted.overlay.opaque=y): nothing below merges: {U}/opq",
        f"  {l1}: not there",
        f"  {l2}: directory, hidden by the opaque directory (xattr trusted.overlay.opaque=y) /opq in layer 0: "
        f"{L2}/opq",
    ])
    suite.expect_lines("opaque directory in a lower layer", which("/lopq/below"), [
        f"/lopq/below: not found: hidden by the opaque directory (xattr trusted.overlay.opaque=y) /lopq in "
        f"{l1}: {L1}/lopq; {l2} has {L2}/lopq/below",
        f"  {lu}: not there",
        f"  {l1}: not there",
        f"  {l2}: regular file, hidden by the opaque directory (xattr trusted.overlay.opaque=y) /lopq in layer 1: "
        f"{L2}/lopq/below",
    ], rc=1)
    suite.expect_lines("redirect, -v: every component, the lower part found at the redirect target",
                       which("/moved/a/file", "-v"), [
        f"/: directory from {lu}: {U}, merged with layers 1, 2",
        f"  {lu}: found: directory: {U}",
        f"  {l1}: found: directory, merged into the one above: {L1}",
        f"  {l2}: found: directory, merged into the one above: {L2}",
        f"/moved: directory from {lu}: {U}/moved, merged with layer 2; redirected in layer 0 to /red",
        f"  {lu}: found: directory, redirected: the layers below are searched at /red: {U}/moved",
        f"  {l1}: not there",
        f"  {l2}: found: directory, merged into the one above: {L2}/red",
        f"/moved/a: directory from {l2}: {L2}/red/a",
        f"  {lu}: not there",
        f"  {l1}: not there",
        f"  {l2}: found: directory: {L2}/red/a",
        f"/moved/a/file: regular file from {l2}: {L2}/red/a/file",
        f"  {lu}: not there",
        f"  {l1}: not there",
        f"  {l2}: found: regular file: {L2}/red/a/file",
    ])
    suite.expect_lines("relative redirect: the lower part is a sibling of the old name", which("/renamed/sub/g"), [
        f"/renamed/sub/g: regular file from {l1}: {L1}/reldir/sub/g",
        f"  {lu}: not there",
        f"  {l1}: found: regular file: {L1}/reldir/sub/g",
        f"  {l2}: not there",
    ])
    suite.expect_lines("a file over a directory: the directory below is hidden", which("/shadowed"), [
        f"/shadowed: regular file from {l1}: {L1}/shadowed",
        f"  {lu}: not there",
        f"  {l1}: found: regular file: {L1}/shadowed",
        f"  {l2}: directory, hidden by the regular file /shadowed in layer 1: {L2}/shadowed",
    ])
    suite.expect_lines("a path through a file: exit 1, says which component is no directory", which("/shadowed/x"), [
        f"/shadowed: regular file from {l1}: {L1}/shadowed, not a directory",
        f"  {lu}: not there",
        f"  {l1}: found: regular file: {L1}/shadowed",
        f"  {l2}: directory, hidden by the regular file /shadowed in layer 1: {L2}/shadowed",
        f"/shadowed/x: not found: /shadowed is a regular file in {l1}, not a directory",
    ], rc=1)
    suite.expect_lines("a directory over a file: the file below is not merged", which("/mix"), [
        f"/mix: directory from {lu}: {U}/mix",
        f"  {lu}: found: directory: {U}/mix",
        f"  {l1}: regular file: ignored, a non-directory below a directory ends the merge: {L1}/mix",
        f"  {l2}: not there",
    ])
    suite.expect_lines("below a whited-out directory: names the parent's whiteout", which("/data/old/f"), [
        f"/data/old: not found: whited out in {lu}: {U}/data/old is a whiteout (character device 0/0)",
        f"  {lu}: whiteout (character device 0/0): hides the name here and below: {U}/data/old",
        f"  {l1}: not there",
        f"  {l2}: directory, hidden by the whiteout (character device 0/0) /data/old in layer 0: {L2}/data/old",
        f"/data/old/f: not found: /data/old: whited out in {lu}: {U}/data/old is a whiteout "
        f"(character device 0/0)",
    ], rc=1)
    suite.expect_lines("in no layer", which("/nowhere"), [
        "/nowhere: not found: in no layer",
        f"  {lu}: not there",
        f"  {l1}: not there",
        f"  {l2}: not there",
    ], rc=1)
    suite.expect_lines("a .wh. name is a marker, never an entry", which("/.wh.gone.txt"), [
        "/.wh.gone.txt: not found: names starting with .wh. are whiteout markers, never shown in the merged tree",
        f"  {lu}: whiteout marker (.wh.): never visible: {U}/.wh.gone.txt",
        f"  {l1}: not there",
        f"  {l2}: not there",
    ], rc=1)
    suite.expect_lines("'..' and '.' are resolved lexically from the merged root", which("../etc/./x/../passwd"), [
        f"/etc/passwd: regular file from {l2}: {L2}/etc/passwd",
        f"  {lu}: not there",
        f"  {l1}: not there",
        f"  {l2}: found: regular file: {L2}/etc/passwd",
    ])
    suite.expect_lines("without an upper: only the lowers are shown", which("/etc/motd", opts=f"lowerdir={L1}:{L2}"), [
        f"/etc/motd: regular file from {l1}: {L1}/etc/motd",
        f"  {l1}: found: regular file: {L1}/etc/motd",
        f"  {l2}: regular file, hidden by the regular file /etc/motd in layer 1: {L2}/etc/motd",
    ])

    # ---- JSON ------------------------------------------------------------------------------------
    r = which("/moved/a/file", "--json")
    j = toolkit.parse_json(suite, "json: redirect", r)
    if j is not None:
        p = []
        if r.returncode != 0:
            p.append(f"exit {r.returncode}")
        want = {"path": "/moved/a/file", "found": True, "type": "file", "layer": 2, "role": "lower",
                "layer_dir": L2, "real_path": f"{L2}/red/a/file", "reason": None, "hidden_by": None}
        for k, v in want.items():
            if j.get(k) != v:
                p.append(f"{k}: {j.get(k)!r}, want {v!r}")
        comps = [c["path"] for c in j.get("components", [])]
        if comps != ["/", "/moved", "/moved/a", "/moved/a/file"]:
            p.append(f"components {comps}")
        else:
            moved = j["components"][1]["layers"]
            got = [(x["layer"], x["verdict"], x["answer"], x["real_path"], x["detail"]) for x in moved]
            want_l = [(0, "redirect", True, f"{U}/moved", "/red"), (1, "absent", False, None, None),
                      (2, "found", False, f"{L2}/red", None)]
            if got != want_l:
                p.append(f"/moved layers {got}, want {want_l}")
        suite.check("json: redirect: answer, components, per-layer verdicts", p)

    r = which("/uopq/hidden2", "--json")
    j = toolkit.parse_json(suite, "json: opaque", r)
    if j is not None:
        p = []
        if r.returncode != 1:
            p.append(f"exit {r.returncode}, want 1")
        if j.get("found") is not False or j.get("layer") is not None:
            p.append(f"found/layer: {j.get('found')!r} {j.get('layer')!r}")
        want_h = {"layer": 0, "role": "upper", "layer_dir": U, "path": "/uopq", "kind": "opaque",
                  "what": "opaque directory (xattr user.overlay.opaque=y)", "real_path": f"{U}/uopq"}
        if j.get("hidden_by") != want_h:
            p.append(f"hidden_by {j.get('hidden_by')!r}, want {want_h!r}")
        last = j["components"][-1]["layers"][-1] if j.get("components") else {}
        if (last.get("verdict"), last.get("type"), last.get("real_path")) != ("hidden", "file", f"{L2}/uopq/hidden2"):
            p.append(f"layer 2 line {last!r}")
        suite.check("json: opaque: found false, hidden_by names the opaque dir", p)

    r = which("/etc/hosts", "--json")
    j = toolkit.parse_json(suite, "json: whiteout", r)
    if j is not None:
        h = j.get("hidden_by") or {}
        suite.check("json: whiteout: hidden_by is the whiteout in the upper",
                    [] if (h.get("kind"), h.get("layer"), h.get("real_path")) == ("whiteout", 0, f"{U}/etc/hosts")
                    and r.returncode == 1 else [f"exit {r.returncode}, hidden_by {h!r}"])

    # A name that is not UTF-8 survives the JSON round trip (surrogateescape).
    odd = b"caf\xe9"
    with open(os.path.join(os.fsencode(L2), odd), "w") as f:
        f.write("x")
    r = toolkit.run("which", "-o", OPTS, "--json", os.fsdecode(b"/" + odd))
    j = toolkit.parse_json(suite, "json: non-UTF-8 name", r)
    if j is not None:
        got = os.fsencode(j.get("real_path") or "")
        suite.check("json: a non-UTF-8 name comes back as its bytes",
                    [] if got == os.fsencode(L2) + b"/" + odd else [f"real_path {got!r}"])

    # ---- bad input -----------------------------------------------------------------------------
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

    expect_error("which: missing lowerdir", ["which", "-o", f"upperdir={U}", "/x"], "lowerdir")
    expect_error("which: lowerdir does not exist", ["which", "-o", f"lowerdir={t.path('nope')}", "/x"],
                 f"lowerdir {t.path('nope')}: No such file or directory")
    expect_error("which: upperdir does not exist", ["which", "-o", f"lowerdir={L1},upperdir={t.path('nou')}", "/x"],
                 f"upperdir {t.path('nou')}: No such file or directory")
    expect_error("which: no PATH", ["which", "-o", OPTS], "PATH missing")
    expect_error("which: two PATHs", ["which", "-o", OPTS, "/a", "/b"], "'/b': unexpected argument")
    expect_error("which: empty PATH", ["which", "-o", OPTS, ""], "PATH is empty")
    expect_error("which: -b is du's", ["which", "-b", "-o", OPTS, "/a"], "-b")
finally:
    t.cleanup()
suite.finish()

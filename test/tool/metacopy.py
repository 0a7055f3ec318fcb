#!/usr/bin/env python3
"""The strata tool on an upper with metacopy files (attributes only; see strata-fs -o metacopy=on),
built by hand as the kernel or strata-fs writes them: `which` names the layer the data comes
from, `du` does not count their size as private bytes, `check` accepts one with a regular file
below and reports one without (strata-fs and the kernel answer EIO for it).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import toolkit  # noqa: E402

NAME = "metacopy"
toolkit.require_markers(NAME)
suite = toolkit.Suite(NAME)
t = toolkit.Layers("strata-metacopy.")
MiB = 1 << 20


def metacopy(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    os.setxattr(path, "trusted.overlay.metacopy", b"")


try:
    L = t.path("lower")
    U = t.path("upper")
    t.file("lower/d/big", "x" * MiB)
    t.file("upper/d/own", "private bytes\n")
    metacopy(t.path("upper/d/big"), MiB)
    OPTS = f"lowerdir={L},upperdir={U}"

    r = toolkit.run("which", "-o", OPTS, "d/big")
    suite.expect_lines("which: the upper holds the attributes, the lower the data", r, [
        f"/d/big: regular file from layer 0 (upper {U}): {U}/d/big; metadata only (metacopy): its data is the "
        f"file in layer 1: {L}/d/big",
        f"  layer 0 (upper {U}): found: regular file, metadata only (metacopy): its data is in layer 1: {U}/d/big",
        f"  layer 1 (lower {L}): regular file: the data of the metacopy file in layer 0 (read until it is "
        f"written): {L}/d/big",
    ])
    j = toolkit.parse_json(suite, "which --json", toolkit.run("which", "--json", "-o", OPTS, "d/big"))
    if j is not None:
        suite.check("which --json: data_layer 1, and the data verdict on layer 1", [] if (
            j.get("data_layer") == 1 and j["components"][-1]["layers"][1]["verdict"] == "data") else [str(j)])
    j = toolkit.parse_json(suite, "which --json of a plain file", toolkit.run("which", "--json", "-o", OPTS, "d/own"))
    if j is not None:
        suite.check("which --json: a plain upper file has no data_layer", [] if j.get("data_layer") is None else [str(j)])

    j = toolkit.parse_json(suite, "du --json", toolkit.run("du", "--json", "-o", f"lowerdir={L}", U))
    if j is not None:
        up = j["uppers"][0]
        own = os.lstat(t.path("upper/d/own")).st_size
        dirs = os.lstat(U).st_size + os.lstat(t.path("upper/d")).st_size
        suite.check("du: a metacopy file's size is not private (only the plain file and the dirs are)",
                    [] if up["apparent_bytes"] == own + dirs and up["metacopy_files"] == 1 else [str(up)])
    r = toolkit.run("du", "-o", f"lowerdir={L}", U)
    suite.check("du: the text says how many metacopy files", [] if "(1 metacopy file: attributes only" in r.stdout
                else [r.stdout])

    # Renamed: a metacopy elsewhere whose redirect leads to the data (and a whiteout at the old name
    # would hide it in the merged tree: the data is still found).
    metacopy(t.path("upper/moved"), MiB)
    os.setxattr(t.path("upper/moved"), "trusted.overlay.redirect", b"/d/big")
    r = toolkit.run("which", "-o", OPTS, "moved")
    suite.expect_lines("which: a renamed metacopy names where its redirect leads", r, [
        f"/moved: regular file from layer 0 (upper {U}): {U}/moved; metadata only (metacopy): its data is the "
        f"file in layer 1: {L}/d/big",
        f"  layer 0 (upper {U}): found: regular file, metadata only (metacopy): its data is in layer 1 at /d/big "
        f"(redirect): {U}/moved",
        f"  layer 1 (lower {L}): regular file: the data of the metacopy file in layer 0 (read until it is "
        f"written): {L}/d/big",
    ])

    r = toolkit.run("check", "-o", OPTS)
    suite.expect_lines("check: metacopy files with their data below are fine (by name, by redirect)", r,
                       ["clean: no problems in 2 layers"])
    os.setxattr(t.path("upper/moved"), "trusted.overlay.redirect", b"/d/nothing")
    r = toolkit.run("check", "-o", OPTS)
    suite.check("check: a redirect to nothing is a problem", [] if r.returncode == 1 and f"{U}/moved: trusted.overlay.metacopy" in r.stdout else [r.stdout])
    os.removexattr(t.path("upper/moved"), "trusted.overlay.redirect")
    os.unlink(t.path("upper/moved"))
    metacopy(t.path("upper/d/orphan"), 10)
    r = toolkit.run("check", "-o", OPTS)
    suite.expect_lines("check: a metacopy file with nothing below is a problem", r, [
        f"problem: {U}/d/orphan: trusted.overlay.metacopy: a metacopy file (attributes only) with no regular "
        f"file below to hold its data: strata-fs and the kernel answer EIO for it; fix: rm -- {U}/d/orphan  "
        f"(its data is gone)",
        "1 problem, 0 warnings in 2 layers",
    ], rc=1)
    # A layer that was an upper, stacked as a lower: its metacopy files are not followed there.
    os.unlink(t.path("upper/d/orphan"))
    U2 = t.path("upper2")
    os.makedirs(U2)
    r = toolkit.run("check", "-o", f"lowerdir={U}:{L},upperdir={U2}")
    suite.check("check: a metacopy file in a lower layer is a problem", [] if r.returncode == 1 and
                f"problem: {U}/d/big: trusted.overlay.metacopy in a lower layer" in r.stdout else [r.stdout])
finally:
    t.cleanup()
suite.finish()

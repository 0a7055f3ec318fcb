#!/usr/bin/env python3
"""Resolution tracing in strata-fs (issue 4): `-o trace=all,trace_file=F[,trace_format=json]`.

The same script of operations runs on two mounts of identical layers, one tracing as text and one
as JSON lines. The trace must state the facts a user debugging layer resolution needs:
  - a lookup names the path and the layer that answered, by directory and index;
  - a name hidden by a whiteout says "whiteout" and the layer directory holding it;
  - a name below an opaque directory says so (the opaque dir and its layer);
  - a copy-up names the path, the exact byte count, the method (reflink, copy_file_range,
    read/write) and the time it took;
  - whiteout, opaque, rename (with the redirect of a lower dir) and xattr events appear;
  - every JSON line parses and carries the same facts as fields (path, layer_dir, bytes, ...);
  - SIGUSR1 appends a summary with the copy-up and whiteout counts to the trace file.
The exact wording is the daemon's; the checks look for the facts (paths, dirs, numbers).

Layers (lower0 = layer 1 is the uppermost lower, lower1 = layer 2 the bottom one):
  lower1: d2/file2, gone, opq/hidden, app (COPY_SIZE bytes), rmme, deldir/sub/a, rdir/in/c
  lower0: gone (whiteout), opq/ (opaque) with visible
"""

import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mountlib as ml  # noqa: E402
from mountlib import ov  # noqa: E402

COPY_SIZE = 100_003
METHODS = ("reflink", "copy_file_range", "read/write")


def build(root):
    L = ml.Layout(root, n_lowers=2)
    low, top = L.l(1), L.l(0)
    L.write(low, "d2/file2", b"in the bottom layer\n")
    L.write(low, "gone", b"whited out above\n")
    L.whiteout(top, "gone")
    L.write(low, "opq/hidden", b"hidden by the opaque dir above\n")
    L.opaque(top, "opq")
    L.write(top, "opq/visible", b"visible\n")
    L.write(low, "app", os.urandom(COPY_SIZE))
    L.write(low, "rmme", b"to be removed\n")
    L.write(low, "deldir/sub/a", b"a\n")
    L.write(low, "rdir/in/c", b"c\n")
    return L


def exercise(L):
    """The operations; returns what they returned, for a sanity check."""
    m = L.m
    out = {}
    with open(m("d2/file2"), "rb") as f:
        out["file2"] = f.read()
    out["gone"] = os.path.lexists(m("gone"))
    out["hidden"] = os.path.lexists(m("opq/hidden"))
    with open(m("app"), "ab") as f:
        f.write(b"appended\n")
    os.unlink(m("rmme"))
    ml.run_quiet(["rm", "-rf", m("deldir")])
    os.mkdir(m("deldir"))
    os.rename(m("rdir"), m("rdir2"))
    os.setxattr(m("d2/file2"), "user.traced", b"yes")
    return out


def mount_and_run(s, fmt):
    L = build(ml.scratch(f"trace-{fmt}"))
    trace = os.path.join(L.root, f"trace.{fmt}")
    L.mount_strata(["trace=all", f"trace_file={trace}", f"trace_format={fmt}"])
    out = exercise(L)
    s.expect_eq(out, {"file2": b"in the bottom layer\n", "gone": False, "hidden": False},
                f"[{fmt}] the operations saw the merged view")
    summary = ml.signal_and_wait(L.daemon_pid, trace, signal.SIGUSR1, needle="whiteout")
    L.umount()
    return L, ml.read_text(trace), summary


# ------------------------------------------------------------------------------------------------
# text


def text_lines(text, category):
    return [ln for ln in text.splitlines() if ln.startswith(f"[{category}]")]


def find(lines, *needles):
    return [ln for ln in lines if all(n in ln for n in needles)]


def check_text(s, L, text):
    top, low, up = L.l(0), L.l(1), L.u()
    lookups = text_lines(text, "lookup")
    s.expect(find(lookups, "/d2/file2", low, "2"), "lookup of /d2/file2 names the bottom layer dir and index 2",
             "\n".join(lookups[:6]))
    hit = find(lookups, "/d2/file2", low)
    if hit:
        s.expect("layer 2" in hit[0] or "lower 2" in hit[0], "the answering layer's index is 2", hit[0])
    s.expect(find(lookups, "/gone", "whiteout", top), "lookup of /gone: hidden by a whiteout in lower0's dir",
             "\n".join(find(lookups, "/gone")))
    copy = find(text_lines(text, "copyup"), "/app")
    s.require(copy, "a copy-up line for /app", text)
    c = copy[0]
    s.expect(f" {COPY_SIZE} " in c or f"{COPY_SIZE} bytes" in c, f"copy-up line has the exact byte count {COPY_SIZE}", c)
    s.expect(any(mth in c for mth in METHODS), f"copy-up line names the method {METHODS}", c)
    s.expect(" ms" in c or " us" in c or " s" in c, "copy-up line has the time it took", c)
    s.expect(low in c and up in c, "copy-up line names the source layer dir and the upper", c)
    wo = text_lines(text, "whiteout")
    s.expect(find(wo, "/rmme", up), "whiteout line for rm of /rmme naming the upper", "\n".join(wo))
    s.expect(find(wo, "/deldir", up), "whiteout line for rm -rf of /deldir", "\n".join(wo))
    op = text_lines(text, "opaque")
    s.expect(find(op, "/deldir", up), "opaque line for mkdir of /deldir over its whiteout", "\n".join(op))
    rn = text_lines(text, "rename")
    s.expect(find(rn, "redirect", "/rdir", up), "rename line: the redirect set for the lower dir /rdir",
             "\n".join(rn))
    moves = [ln for ln in rn if "/rdir2" in ln]
    s.expect(moves, "rename line /rdir -> /rdir2", "\n".join(rn))
    if moves:
        s.expect("//" not in moves[0], "rename line paths are clean (no '//')", moves[0])
    xa = text_lines(text, "xattr")
    s.expect(find(xa, "/d2/file2", "user.traced"), "xattr line for the setxattr", "\n".join(xa))
    # Every line is one event: a category tag, no torn lines.
    bad = [ln for ln in text.splitlines() if ln and not ln.startswith("[") and not ln.startswith(" ")
           and not ln.startswith("strata-fs summary")]
    s.expect(not bad, "every trace line starts with its [category]", "\n".join(bad[:5]))


def check_opaque_lookup(s, L, text, fmt):
    """The issue asks for 'below opaque dir <path> in <layer dir>' on a name hidden that way."""
    top = L.l(0)
    if fmt == "text":
        lines = find(text_lines(text, "lookup"), "/opq/hidden")
    else:
        lines = [ln for ln in text.splitlines() if '"/opq/hidden"' in ln]
    s.require(lines, f"[{fmt}] a lookup line for /opq/hidden", text[:2000])
    s.expect("opaque" in lines[0] and "/opq" in lines[0].replace("/opq/hidden", "") and top in lines[0],
             f"[{fmt}] lookup of /opq/hidden (present in the bottom layer) says it is below the opaque "
             f"dir /opq in {top}", lines[0])


def check_summary(s, L, summary, fmt):
    s.require(summary.strip(), f"[{fmt}] SIGUSR1 appended a summary to the trace file")
    low = summary.lower()
    s.expect("copy-up" in low or "copyup" in low, f"[{fmt}] summary mentions copy-ups", summary)
    s.expect("whiteout" in low, f"[{fmt}] summary mentions whiteouts", summary)
    # Facts: 2 file copy-ups at least (/app, /d2/file2) with COPY_SIZE+ bytes; 4+ whiteouts.
    if fmt == "json":
        objs = []
        for ln in summary.splitlines():
            try:
                objs.append(json.loads(ln))
            except ValueError:
                pass
        s.expect(objs and any("copyups" in o or "copy_ups" in o for o in objs),
                 "[json] the summary is a JSON line with the counters", summary)
    else:
        import re
        m = re.search(r"copy-ups?:?\s*(\d+)\D+(\d+)\s*bytes", summary)
        s.expect(m and int(m.group(1)) >= 2 and int(m.group(2)) >= COPY_SIZE,
                 f"[text] summary counts >= 2 copy-ups and >= {COPY_SIZE} bytes", summary)
        m = re.search(r"whiteouts?[^:\d]*:?\s*(\d+)", summary)
        s.expect(m and int(m.group(1)) >= 4, "[text] summary counts >= 4 whiteouts written", summary)


# ------------------------------------------------------------------------------------------------
# json


def check_json(s, L, text, summary):
    top, low, up = L.l(0), L.l(1), L.u()
    trace_part = text[:len(text) - len(summary)] if summary and text.endswith(summary) else text
    events, bad = [], []
    for ln in trace_part.splitlines():
        try:
            events.append(json.loads(ln))
        except ValueError:
            bad.append(ln)
    s.expect(not bad, "every trace line (before SIGUSR1) parses with json.loads", "\n".join(bad[:5]))
    s.require(events, "JSON events written")
    cat = lambda e: e.get("event") or e.get("category") or e.get("type")
    by = lambda c: [e for e in events if cat(e) == c]
    s.expect(all(cat(e) for e in events), "every JSON line names its category (event)")
    lk = [e for e in by("lookup") if e.get("path") == "/d2/file2"]
    s.expect(lk, "JSON lookup of /d2/file2 with a path field")
    if lk:
        e = lk[0]
        s.expect_eq(e.get("layer_dir"), low, "JSON lookup layer_dir", json.dumps(e))
        s.expect(str(e.get("layer")) == "2", "JSON lookup layer index 2", json.dumps(e))
        if not isinstance(e.get("layer"), int):
            s.note(f"lookup 'layer' is a {type(e.get('layer')).__name__} ({e.get('layer')!r}), "
                   f"while open lines carry an integer")
    hid = [e for e in by("lookup") if e.get("path") == "/gone"]
    s.expect(hid and "whiteout" in json.dumps(hid[0]) and top in json.dumps(hid[0]),
             "JSON lookup of /gone: whiteout and lower0's dir in its fields", json.dumps(hid[:1]))
    cu = [e for e in by("copyup") if e.get("path") == "/app"]
    s.require(cu, "JSON copy-up of /app", "\n".join(json.dumps(e) for e in by("copyup")))
    e = cu[0]
    s.expect_eq(e.get("bytes"), COPY_SIZE, "JSON copy-up bytes (a number, exact)", json.dumps(e))
    s.expect(e.get("method") in METHODS, f"JSON copy-up method in {METHODS}", json.dumps(e))
    s.expect(any(isinstance(e.get(k), (int, float)) for k in ("ns", "ms", "us", "seconds", "duration_ns")),
             "JSON copy-up has a numeric duration", json.dumps(e))
    s.expect(e.get("from_dir") == low or e.get("layer_dir") == low, "JSON copy-up names the source layer dir",
             json.dumps(e))
    wo = [e for e in by("whiteout") if e.get("path") == "/rmme"]
    s.expect(wo and up in json.dumps(wo[0]), "JSON whiteout of /rmme naming the upper", json.dumps(by("whiteout")))
    op = [e for e in by("opaque") if e.get("path") == "/deldir"]
    s.expect(op, "JSON opaque event for /deldir", json.dumps(by("opaque")))
    rn = by("rename")
    s.expect(any(e.get("redirect") == "/rdir" for e in rn), "JSON rename event with redirect '/rdir'", json.dumps(rn))
    mv = [e for e in rn if e.get("to") == "/rdir2"]
    s.expect(mv and mv[0].get("from") == "/rdir", "JSON rename from '/rdir' to '/rdir2'", json.dumps(rn))
    xa = [e for e in by("xattr") if e.get("path") == "/d2/file2"]
    s.expect(xa and "user.traced" in json.dumps(xa[0]), "JSON xattr event naming user.traced", json.dumps(by("xattr")))
    # Same facts as the text trace: each JSON line has a message or fields, never an empty event.
    s.expect(all(len(e) >= 3 for e in events), "JSON events carry fields")


def main():
    s = ml.start("trace")
    results = {}

    def run_mount(fmt):
        results[fmt] = mount_and_run(s, fmt)

    s.run("text: mount, operate, SIGUSR1", run_mount, "text")
    s.run("json: mount, operate, SIGUSR1", run_mount, "json")
    if "text" in results:
        L, text, summary = results["text"]
        s.run("text: lookup/copy-up/whiteout/opaque/rename/xattr lines", check_text, s, L, text)
        s.run("text: SIGUSR1 summary", check_summary, s, L, summary, "text")
        s.run("text: lookup below an opaque dir says so", check_opaque_lookup, s, L, text, "text")
    if "json" in results:
        L, text, summary = results["json"]
        s.run("json: lines parse and carry the fields", check_json, s, L, text, summary)
        s.run("json: lookup below an opaque dir says so", check_opaque_lookup, s, L, text, "json")
        s.run("json: SIGUSR1 summary keeps the file JSON lines", check_summary, s, L, summary, "json")
    s.finish()


if __name__ == "__main__":
    main()

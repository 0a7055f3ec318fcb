#!/usr/bin/env bash
# The tool against layers a real mount wrote: mount strata-fs over two lowers, make the changes a
# container makes (append to a lower file, delete a lower file, replace a deleted directory with a
# new one, add a file), unmount and wait for the daemon to exit, then check that
#   - `strata diff` reports exactly those changes (text and JSON),
#   - `strata which` names the layer and real file that answer each changed path, and the
#     whiteout or opaque directory that hides each deleted one,
#   - `strata check` finds the upper well formed for the kernel overlay.
# What strata-fs writes (char-device whiteouts, opaque xattrs) is thereby read back by the tool.
#
# Runs in a private mount namespace (re-executes itself under unshare), as root, with /dev/fuse.
# Exit: 0 passed, 1 failed, 77 skipped.
set -u

src=${STRATA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${STRATA_BUILD:-$src/build}
fs=$build/strata-fs
tool=$build/strata

skip() { echo "mounted: SKIP: $*"; exit 77; }

[[ -x $fs ]] || skip "no $fs (build first, or set STRATA_BUILD)"
[[ -x $tool ]] || skip "no $tool (build first, or set STRATA_BUILD)"
((EUID == 0)) || skip "needs root (a private mount namespace and /dev/fuse)"
[[ -c /dev/fuse ]] || skip "/dev/fuse is missing"
command -v python3 >/dev/null || skip "python3 is missing (parses the JSON output)"
command -v unshare >/dev/null || skip "unshare (util-linux) is missing"
if [[ -z ${STRATA_TOOL_PRIVATE_NS:-} ]]; then
    unshare -m --propagation private true 2>/dev/null || skip "cannot create a mount namespace"
    export STRATA_TOOL_PRIVATE_NS=1
    exec unshare -m --propagation private -- bash "${BASH_SOURCE[0]}" "$@"
fi

T=$(realpath "$(mktemp -d "${TMPDIR:-/tmp}/strata-tool-mounted.XXXXXX")")
L1=$T/l1 L2=$T/l2 U=$T/upper W=$T/work M=$T/mnt

# The daemons serving mount point $1: strata-fs with $1 as one of its arguments.
daemon_pids() {
    local p
    for p in /proc/[0-9]*; do
        { tr '\0' '\n' <"$p/cmdline"; } 2>/dev/null | grep -Fxq -- "$1" && echo "${p#/proc/}"
    done
}

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    if findmnt -rn --mountpoint "$M" >/dev/null 2>&1; then
        timeout -k 2 10 umount "$M" 2>/dev/null || umount -l "$M" 2>/dev/null
    fi
    rm -rf --one-file-system -- "$T"
}
trap cleanup EXIT

passed=0
failures=()
ok() { passed=$((passed + 1)); echo "ok - $1"; }
bad() {
    failures+=("$1")
    echo "FAIL - $1"
    shift
    printf '    %s\n' "$@"
}

# --- the image: two lower layers -------------------------------------------------------------
mkdir -p "$L1/bin" "$L2/etc" "$L2/data/olddir/deeper" "$U" "$W" "$M"
echo tool >"$L1/bin/tool"
printf 'setting=1\n' >"$L2/etc/app.conf"
echo old >"$L2/etc/old.conf"
echo inner >"$L2/data/olddir/inner.txt"
echo x >"$L2/data/olddir/deeper/x"
echo keep >"$L2/data/keep.txt"

# --- mount, change, unmount ------------------------------------------------------------------
opts="lowerdir=$L1:$L2,upperdir=$U,workdir=$W"
if ! timeout -k 2 20 "$fs" -o "$opts" "$M"; then
    echo "mounted: FAIL: strata-fs -o $opts $M exited with $?"
    exit 1
fi
findmnt -rn --mountpoint "$M" >/dev/null || { echo "mounted: FAIL: $M is not mounted"; exit 1; }

step() {
    if ! timeout -k 2 20 "$@"; then
        bad "on the mount: $*" "exit status $?"
    fi
}
step sh -c "echo 'setting=2' >>'$M/etc/app.conf'"    # copy-up of a lower file
step rm "$M/etc/old.conf"                            # whiteout of a lower file
step rm -r "$M/data/olddir"                          # whiteout of a lower dir ...
step mkdir "$M/data/olddir"                          # ... and a new (opaque) dir over it
step sh -c "echo fresh >'$M/data/olddir/fresh.txt'"
step sh -c "echo new >'$M/new.txt'"                  # a new file

if ! timeout -k 2 20 umount "$M"; then
    bad "umount $M" "failed; lazy unmount"
    umount -l "$M"
fi
for ((i = 0; i < 200; i++)); do
    [[ -z $(daemon_pids "$M") ]] && break
    sleep 0.05
done
left=$(daemon_pids "$M")
if [[ -n $left ]]; then
    bad "strata-fs exits after umount" "still running 10 s later: pids $left"
    # shellcheck disable=SC2086 # a list of pids: only the daemons of this script's mount point
    kill -9 $left 2>/dev/null
else
    ok "strata-fs exits after umount"
fi

# --- strata diff -------------------------------------------------------------------------------
want_diff="C /data
C /data/olddir
D /data/olddir/deeper
A /data/olddir/fresh.txt
D /data/olddir/inner.txt
C /etc
C /etc/app.conf
D /etc/old.conf
A /new.txt"
got=$("$tool" diff -o "lowerdir=$L1:$L2,upperdir=$U" 2>&1)
rc=$?
if [[ $rc == 0 && $got == "$want_diff" ]]; then
    ok "diff lists exactly the changes made through the mount"
else
    bad "diff lists exactly the changes made through the mount" "exit $rc" "--- got:" "$got" "--- want:" "$want_diff" \
        "--- upper:" "$(cd "$U" && find . -mindepth 1 -printf '%y %p\n' | sort)"
fi

json=$("$tool" diff --json -o "lowerdir=$L1:$L2,upperdir=$U")
if python3 - "$json" "$want_diff" <<'EOF'; then
import json, sys
got = [(c["kind"], c["path"]) for c in json.loads(sys.argv[1])]
want = [tuple(line.split(" ", 1)) for line in sys.argv[2].splitlines()]
sys.exit(0 if got == want else print(got) or 1)
EOF
    ok "diff --json: the same changes"
else
    bad "diff --json: the same changes" "$json"
fi

# --- strata which ------------------------------------------------------------------------------
# which_json PATH WANT_RC PYTHON_CONDITION (on j, the parsed output)
which_json() {
    local path=$1 want_rc=$2 cond=$3 out rc
    out=$("$tool" which --json -o "lowerdir=$L1:$L2,upperdir=$U" "$path")
    rc=$?
    if [[ $rc == "$want_rc" ]] && python3 -c "import json,sys; j=json.loads(sys.argv[1]); sys.exit(0 if ($cond) else 1)" \
        "$out" 2>/dev/null; then
        ok "which $path: $4"
    else
        bad "which $path: $4" "exit $rc (want $want_rc)" "$out"
    fi
}
which_json /etc/app.conf 0 "j['layer'] == 0 and j['real_path'] == '$U/etc/app.conf'" \
    "copied up: answered by the upper"
if [[ $(cat "$U/etc/app.conf" 2>/dev/null) == $'setting=1\nsetting=2' ]]; then
    ok "the copy which names holds the lower content plus the appended line"
else
    bad "the copy which names holds the lower content plus the appended line" "$(cat "$U/etc/app.conf" 2>&1)"
fi
which_json /etc/old.conf 1 \
    "not j['found'] and j['hidden_by']['kind'] == 'whiteout' and j['hidden_by']['layer'] == 0 and j['hidden_by']['real_path'] == '$U/etc/old.conf'" \
    "deleted: the whiteout in the upper hides it"
which_json /data/olddir/inner.txt 1 \
    "not j['found'] and j['hidden_by']['kind'] == 'opaque' and j['hidden_by']['path'] == '/data/olddir' and j['hidden_by']['layer'] == 0 and j['components'][-1]['layers'][2]['real_path'] == '$L2/data/olddir/inner.txt'" \
    "hidden by the new opaque directory, still in layer 2"
which_json /data/olddir 0 "j['layer'] == 0 and j['merged_layers'] == [0] and j['components'][-1]['layers'][0]['verdict'] == 'opaque'" \
    "the new directory is opaque in the upper"
which_json /data/olddir/fresh.txt 0 "j['layer'] == 0 and j['real_path'] == '$U/data/olddir/fresh.txt'" "new file in the upper"
which_json /new.txt 0 "j['layer'] == 0 and j['type'] == 'file'" "new file in the upper"
which_json /data/keep.txt 0 "j['layer'] == 2 and j['real_path'] == '$L2/data/keep.txt'" "untouched: still from layer 2"
which_json /bin/tool 0 "j['layer'] == 1 and j['real_path'] == '$L1/bin/tool'" "untouched: still from layer 1"
which_json /data 0 "j['layer'] == 0 and j['merged_layers'] == [0, 2]" "a changed dir merges the upper and layer 2"

# --- strata check ------------------------------------------------------------------------------
got=$("$tool" check -o "lowerdir=$L1:$L2,upperdir=$U" 2>&1)
rc=$?
if [[ $rc == 0 && $got == "clean: no problems in 3 layers" ]]; then
    ok "check: what strata-fs wrote is clean for the kernel overlay"
else
    bad "check: what strata-fs wrote is clean for the kernel overlay" "exit $rc" "$got"
fi

echo "mounted: $passed passed, ${#failures[@]} failed"
if ((${#failures[@]})); then
    printf 'failed: %s\n' "${failures[@]}"
    exit 1
fi
exit 0

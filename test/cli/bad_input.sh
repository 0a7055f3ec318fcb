#!/usr/bin/env bash
# How strata-fs answers a bad command line, and that the odd-but-valid ones still mount.
#
# A bad command line must fail before anything is mounted, with a non-zero exit and exactly one
# line on stderr, "strata-fs: <option or path>: <reason>", naming what is wrong (man/strata-fs.1,
# DIAGNOSTICS). The positive cases are the command lines real callers produce: podman's empty
# option elements, mount.fuse3's "SOURCE MOUNTPOINT -o ..." form, an escaped colon in lowerdir.
#
# Everything runs in a private mount namespace (the script re-executes itself under unshare), so
# a buggy success cannot leave a mount behind on the host.
#
# Binary: $STRATA_FS_BIN if set (e.g. /usr/bin/fuse-overlayfs, to check this script's own logic),
# else $STRATA_BUILD/strata-fs, STRATA_BUILD defaulting to <repo>/build.
# Exit: 0 all passed, 1 some failed, 77 skipped (no binary, not root, no FUSE, no namespaces).
set -u

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=${STRATA_FS_BIN:-${STRATA_BUILD:-$repo/build}/strata-fs}

skip() {
    echo "bad_input: SKIP: $*" >&2
    exit 77
}

[[ -x $bin ]] || skip "no executable $bin (build first, or set STRATA_BUILD or STRATA_FS_BIN)"
bin=$(realpath "$bin")
prog=$(basename "$bin")

if [[ -z ${STRATA_CLI_PRIVATE_NS:-} ]]; then
    [[ $(id -u) == 0 ]] || skip "needs root (mount namespace, tmpfs and FUSE mounts)"
    [[ -c /dev/fuse ]] || skip "no /dev/fuse"
    for tool in unshare timeout findmnt umount mount; do
        command -v "$tool" >/dev/null || skip "$tool is not installed"
    done
    unshare -m --propagation private true 2>/dev/null || skip "cannot create a mount namespace"
    export STRATA_CLI_PRIVATE_NS=1
    exec unshare -m --propagation private -- bash "${BASH_SOURCE[0]}" "$@"
fi

T=$(realpath "$(mktemp -d "${TMPDIR:-/tmp}/strata-cli.XXXXXX")")
out=$T/stdout
err=$T/stderr

# Mount points under $T, deepest first.
# shellcheck disable=SC2317 # called from the EXIT trap
mounts_under_t() {
    findmnt -rn -o TARGET | grep -F -- "$T/" | sort -r
}

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
    local target
    # Never rm -rf through a live mount: unmount first, and stay on one filesystem anyway.
    while read -r target; do
        [[ -n $target ]] || continue
        timeout -k 2 10 umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null
    done < <(mounts_under_t)
    rm -rf --one-file-system -- "$T"
}
trap cleanup EXIT

passed=0
failed=0
failures=()

# Layers and paths shared by the cases. Every name is unique so that "the message names X" cannot
# be satisfied by accident by another path.
L=$T/lower
L2=$T/lower2
U=$T/upper
W=$T/work
M=$T/mnt
F=$T/regular-file
COLON=$T/co:lon
TMPFS=$T/tmpfs
mkdir -p "$L" "$L2" "$U" "$W" "$M" "$COLON" "$TMPFS"
echo hello >"$L/hello"
echo two >"$L2/two"
echo colon >"$COLON/colon-file"
echo not a dir >"$F"
mkdir -p "$U/inner-work" "$T/outer-work/inner-upper"
# A second filesystem for "workdir on another filesystem than upperdir".
mount -t tmpfs -o size=1m tmpfs "$TMPFS" || { echo "bad_input: cannot mount tmpfs" >&2; exit 1; }
mkdir -p "$TMPFS/upper"

is_mounted() {
    [[ -n $(findmnt -rn --mountpoint "$1" 2>/dev/null) ]]
}

# The daemons serving mount point $1: our binary, with $1 as one of its arguments.
daemon_pids() {
    local mnt=$1 p
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/exe" 2>/dev/null) == "$bin" ]] || continue
        { tr '\0' '\n' <"$p/cmdline"; } 2>/dev/null | grep -Fxq -- "$mnt" && echo "${p#/proc/}"
    done
}

# Unmount $1 and wait up to 10 s for its daemon to exit. Prints problems on stdout.
unmount_and_wait() {
    local mnt=$1 i left
    [[ -n $(daemon_pids "$mnt") ]] || echo "no daemon process found for $mnt"
    if ! timeout -k 2 10 umount "$mnt" 2>/dev/null; then
        echo "umount $mnt failed"
        umount -l "$mnt" 2>/dev/null
    fi
    for ((i = 0; i < 100; i++)); do
        [[ -n $(daemon_pids "$mnt") ]] || break
        sleep 0.1
    done
    mapfile -t left < <(daemon_pids "$mnt")
    if ((${#left[@]})); then
        echo "daemon still running 10 s after umount: pids ${left[*]}"
        # Only the daemons of our own mount point, which this script started.
        kill -9 "${left[@]}" 2>/dev/null
    fi
    is_mounted "$mnt" && echo "$mnt still mounted after umount"
}

record() {
    local name=$1 problems=$2
    if [[ -z $problems ]]; then
        passed=$((passed + 1))
        echo "ok - $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAIL - $name"
        printf '%s\n' "$problems" | sed 's/^/    /'
        echo "    command stderr:"
        sed 's/^/    | /' "$err"
    fi
}

# expect_error NAME EXPECTED -- ARGS...
# The binary must exit non-zero within 10 s, print exactly one stderr line of the form
# "<prog>: ...", containing EXPECTED (a fixed string, or ~REGEX for an extended regex, any case),
# and leave $M (and any other mount point named in ARGS) unmounted.
expect_error() {
    local name=$1 expected=$2 rc problems="" lines arg
    shift 3
    timeout -k 2 10 "$bin" "$@" >"$out" 2>"$err" </dev/null
    rc=$?
    if ((rc == 124 || rc == 137)); then
        problems+="timed out after 10 s"$'\n'
    elif ((rc == 0)); then
        problems+="exit status 0, want non-zero"$'\n'
    fi
    mapfile -t lines <"$err"
    if ((${#lines[@]} != 1)); then
        problems+="stderr has ${#lines[@]} lines, want exactly 1"$'\n'
    fi
    if ((${#lines[@]} >= 1)); then
        if [[ ${lines[0]} != "$prog: "* ]]; then
            problems+="stderr does not start with \"$prog: \""$'\n'
        fi
        if [[ $expected == "~"* ]]; then
            if ! printf '%s\n' "${lines[0]}" | grep -Eiq -- "${expected#\~}"; then
                problems+="stderr does not match /${expected#\~}/i"$'\n'
            fi
        elif [[ ${lines[0]} != *"$expected"* ]]; then
            problems+="stderr does not name \"$expected\""$'\n'
        fi
    fi
    for arg in "$M" "$@"; do
        if [[ $arg == /* ]] && is_mounted "$arg"; then
            problems+="$arg got mounted"$'\n'
            problems+=$(unmount_and_wait "$arg")
        fi
    done
    record "$name" "${problems%$'\n'}"
}

# expect_mount NAME FILE... -- COMMAND ARGS...
# COMMAND (the binary, or mount(8)) must exit 0 within 10 s with nothing on stderr, leave $M mounted with each FILE
# (relative to $M) readable; then umount must make the daemon exit.
# With READ_ONLY=1 creating a file in $M must also fail with EROFS.
expect_mount() {
    local name=$1 rc problems="" files=() f msg
    shift
    while [[ $1 != -- ]]; do files+=("$1"); shift; done
    shift
    timeout -k 2 10 "$@" >"$out" 2>"$err" </dev/null
    rc=$?
    ((rc == 0)) || problems+="exit status $rc, want 0"$'\n'
    [[ -s $err ]] && problems+="stderr is not empty"$'\n'
    if is_mounted "$M"; then
        for f in "${files[@]}"; do
            timeout -k 2 10 cat -- "$M/$f" >/dev/null 2>&1 || problems+="cannot read $M/$f"$'\n'
        done
        if [[ ${READ_ONLY:-0} == 1 ]]; then
            if msg=$(timeout -k 2 10 touch -- "$M/new-file" 2>&1); then
                problems+="creating $M/new-file succeeded on a read-only mount"$'\n'
            elif [[ $msg != *"Read-only file system"* ]]; then
                problems+="creating $M/new-file failed, but not with EROFS: $msg"$'\n'
            fi
        fi
        msg=$(unmount_and_wait "$M")
        [[ -n $msg ]] && problems+=$msg$'\n'
    else
        problems+="$M is not mounted after the command returned"$'\n'
    fi
    record "$name" "${problems%$'\n'}"
}

echo "bad_input: testing $bin in $T"

# --- bad input: must fail, one line, naming the culprit, nothing mounted ---

expect_error "no -o at all" lowerdir -- "$M"
expect_error "-o without lowerdir" lowerdir -- -o "upperdir=$U,workdir=$W" "$M"
expect_error "empty lowerdir=" lowerdir -- -o "lowerdir=" "$M"
expect_error "lowerdir does not exist" "$T/missing-lower" -- -o "lowerdir=$T/missing-lower" "$M"
expect_error "lowerdir is a regular file" "$F" -- -o "lowerdir=$F" "$M"
expect_error "one of several lowerdirs missing" "$T/missing-second-lower" -- \
    -o "lowerdir=$L:$T/missing-second-lower" "$M"
expect_error "upperdir without workdir" workdir -- -o "lowerdir=$L,upperdir=$U" "$M"
expect_error "workdir without upperdir" upperdir -- -o "lowerdir=$L,workdir=$W" "$M"
expect_error "upperdir does not exist" "$T/missing-upper" -- \
    -o "lowerdir=$L,upperdir=$T/missing-upper,workdir=$W" "$M"
expect_error "workdir on another filesystem than upperdir" "$W" -- \
    -o "lowerdir=$L,upperdir=$TMPFS/upper,workdir=$W" "$M"
expect_error "workdir inside upperdir" "$U/inner-work" -- \
    -o "lowerdir=$L,upperdir=$U,workdir=$U/inner-work" "$M"
expect_error "upperdir inside workdir" "$T/outer-work" -- \
    -o "lowerdir=$L,upperdir=$T/outer-work/inner-upper,workdir=$T/outer-work" "$M"
expect_error "workdir same as upperdir" "$U" -- -o "lowerdir=$L,upperdir=$U,workdir=$U" "$M"
expect_error "mountpoint argument missing" "~mount ?point" -- -o "lowerdir=$L"
expect_error "mountpoint does not exist" "$T/missing-mnt" -- -o "lowerdir=$L" "$T/missing-mnt"
expect_error "mountpoint is a regular file" "$F" -- -o "lowerdir=$L" "$F"
expect_error "unknown option" bogus_option -- -o "lowerdir=$L,bogus_option=1" "$M"
expect_error "unknown flag" --bogus -- --bogus -o "lowerdir=$L" "$M"

# --- valid input: must succeed ---

problems=""
timeout -k 2 10 "$bin" --version >"$out" 2>"$err" </dev/null
rc=$?
((rc == 0)) || problems+="exit status $rc, want 0"$'\n'
grep -Eq '[0-9]+\.[0-9]+' "$out" || problems+="stdout shows no version number (N.N)"$'\n'
record "--version prints a version on stdout, exit 0" "${problems%$'\n'}"

problems=""
timeout -k 2 10 "$bin" --help >"$out" 2>"$err" </dev/null
rc=$?
((rc == 0)) || problems+="exit status $rc, want 0"$'\n'
grep -q lowerdir "$out" || problems+="stdout does not mention lowerdir"$'\n'
record "--help mentions lowerdir on stdout, exit 0" "${problems%$'\n'}"

READ_ONLY=1 expect_mount "empty option elements (lowerdir=L,,) mount read-only" hello -- \
    "$bin" -o "lowerdir=$L,," "$M"
expect_mount "mount.fuse3 form: SOURCE MOUNTPOINT -o rw,lowerdir=L,dev,suid" hello -- \
    "$bin" strata-test-source "$M" -o "rw,lowerdir=$L,dev,suid"
# In double quotes bash keeps "\:" as the two characters backslash and colon: the first layer is
# "$T/co:lon", the second $L.
expect_mount "lowerdir with an escaped colon (\\:)" colon-file hello -- \
    "$bin" -o "lowerdir=$T/co\:lon:$L" "$M"
# The way fstab and podman's callers get there: mount(8) runs mount.fuse3, which calls the
# daemon in the SOURCE MOUNTPOINT -o form. mount.fuse3 resets PATH, so name the daemon by its
# absolute path in the `-t fuse PROGRAM#SOURCE` spelling it also accepts.
if command -v mount.fuse3 >/dev/null || [[ -x /sbin/mount.fuse3 ]]; then
    expect_mount "mount -t fuse $prog#SOURCE (through mount.fuse3)" hello two -- \
        mount -t fuse -o "lowerdir=$L:$L2" "$bin#strata-test-source" "$M"
else
    echo "skip - mount -t fuse.$prog: mount.fuse3 is not installed"
fi

echo "$passed passed, $failed failed"
if ((failed)); then
    printf 'failed: %s\n' "${failures[@]}"
    exit 1
fi
exit 0

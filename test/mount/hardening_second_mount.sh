#!/usr/bin/env bash
# Issue 7: one live mount per upper/workdir, and a dead daemon must not hang its callers.
#
#   1 a second strata-fs on the same upper+workdir while the first is live: refused, exit != 0,
#     one line on stderr naming the workdir, nothing mounted
#   2 the same workdir with another upperdir: refused (the workdir is the lock)
#   3 the same upperdir with another workdir: refused too, one line naming the upperdir. Two
#     daemons writing one upper, each with its own inode cache, corrupt it; the kernel overlay
#     refuses an upperdir in use with index=on (EBUSY) and with index=off mounts it with a
#     warning that "accessing files from both mounts will result in undefined behavior".
#     strata-fs has no index to keep consistent, so it should refuse.
#   4 after the first is unmounted (and its daemon gone), the same upper/work mounts again
#   5 kill -9 of the daemon: `timeout 5 stat MNT` fails with ENOTCONN instead of hanging, the lock
#     dies with the daemon (a new mount on the same upper/work works at once), umount -l cleans up
#   6 -o auto_unmount: after kill -9 the mount disappears by itself (fusermount3 watches it)
#
# Runs in a private mount namespace (re-exec under unshare); every mount and daemon is cleaned up
# on every exit path. Exit 77 when not root or without /dev/fuse.
set -uo pipefail

skip() { echo "SKIP: $*"; exit 77; }
((EUID == 0)) || skip "needs root (a private mount namespace and /dev/fuse)"
[[ -c /dev/fuse ]] || skip "/dev/fuse is missing"
command -v unshare >/dev/null || skip "unshare (util-linux) is missing"

if [[ -z ${HARDENING_IN_MNTNS:-} ]]; then
  unshare -m --propagation private true 2>/dev/null || skip "cannot create a mount namespace here"
  HARDENING_IN_MNTNS=1 exec unshare -m --propagation private "$BASH" "$0" "$@"
fi

src=${STRATA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${STRATA_BUILD:-$src/build}
fs=$build/strata-fs
[[ -x $fs ]] || { echo "FAIL: no daemon at $fs (build first)"; exit 1; }

T=$(mktemp -d /tmp/strata-hardening-second.XXXXXX)
failures=0
daemons=()

is_mounted() { # is_mounted DIR: a mount point in this namespace (mountinfo field 5)
  awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

cleanup() {
  local m p
  for m in "$T"/mnt*; do
    if is_mounted "$m"; then umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; fi
  done
  for p in "${daemons[@]}"; do
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  { wait; } 2>/dev/null
  rm -rf --one-file-system -- "$T"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

ok() { echo "   ok $*"; }
bad() { echo "  FAIL $*"; failures=$((failures + 1)); }
check() { # check "what" cmd...: ok if cmd succeeds
  local what=$1; shift
  if "$@"; then ok "$what"; else bad "$what"; fi
}

mkdir -p "$T"/{lower,upper,upper2,work,work2,mnt1,mnt2,mnt3,mnt4}
echo "from the lower layer" >"$T/lower/file"

opts() { echo "lowerdir=$T/lower,upperdir=$1,workdir=$2"; }

# mount_fg MNT UPPER WORK [EXTRA]: strata-fs -f in the background; sets $pid, waits for the mount.
mount_fg() {
  local mnt=$1 upper=$2 work=$3 extra=${4:-}
  "$fs" -f -o "$(opts "$upper" "$work")${extra:+,$extra}" "$mnt" </dev/null >>"$T/daemon.log" 2>&1 &
  pid=$!
  disown "$pid"  # its death by SIGKILL is the point here, not something for bash to announce
  daemons+=("$pid")
  local i
  for ((i = 0; i < 200; i++)); do
    is_mounted "$mnt" && return 0
    kill -0 "$pid" 2>/dev/null || { echo "strata-fs exited before mounting $mnt:"; tail -5 "$T/daemon.log"; return 1; }
    sleep 0.05
  done
  echo "strata-fs did not mount $mnt within 10 s"
  return 1
}

wait_gone() { # wait_gone PID [tenths]: true once PID has exited (bash reaps its children)
  local p=$1 n=${2:-100} i
  for ((i = 0; i < n; i++)); do
    kill -0 "$p" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

# refused WHAT MNT UPPER WORK NEEDLE: a second daemonizing mount must fail quickly with exactly one
# line on stderr that contains NEEDLE, and leave MNT unmounted.
refused() {
  local what=$1 mnt=$2 upper=$3 work=$4 needle=$5 rc
  timeout -s KILL 20 "$fs" -o "$(opts "$upper" "$work")" "$mnt" </dev/null >"$T/out" 2>"$T/err"
  rc=$?
  local lines
  lines=$(grep -c . "$T/err")
  if ((rc == 0)); then
    bad "$what: second mount accepted (exit 0)"
    if is_mounted "$mnt"; then umount "$mnt" || umount -l "$mnt"; fi
    return
  fi
  if ((rc == 137)); then
    bad "$what: strata-fs hung (killed after 20 s)"
    return
  fi
  if is_mounted "$mnt"; then
    bad "$what: exited $rc but $mnt is mounted"
    umount -l "$mnt"
    return
  fi
  if ((lines != 1)); then
    bad "$what: exit $rc with $lines stderr lines (want exactly 1): $(head -c 600 "$T/err")"
  elif ! grep -qF -- "$needle" "$T/err"; then
    bad "$what: the message does not name $needle: $(cat "$T/err")"
  else
    ok "$what: refused (exit $rc): $(cat "$T/err")"
  fi
}

echo "-- 1-3: a second mount while the first is live"
if mount_fg "$T/mnt1" "$T/upper" "$T/work"; then
  first=$pid
  echo "new in the upper" >"$T/mnt1/created" || bad "write through the first mount"
  refused "1 same upper and workdir" "$T/mnt2" "$T/upper" "$T/work" "$T/work"
  refused "2 same workdir, other upperdir" "$T/mnt2" "$T/upper2" "$T/work" "$T/work"
  refused "3 same upperdir, other workdir" "$T/mnt2" "$T/upper" "$T/work2" "$T/upper"
  check "1-3 the first mount still works" grep -q "new in the upper" "$T/mnt1/created"

  echo "-- 4: after the first is unmounted, the same upper/work mounts again"
  umount "$T/mnt1" || bad "umount of the first mount"
  if wait_gone "$first"; then ok "4 the first daemon exited after umount"; else bad "4 first daemon still running 10 s after umount"; fi
  if mount_fg "$T/mnt2" "$T/upper" "$T/work"; then
    second=$pid
    check "4 the remount shows the file written through the first mount" grep -q "new in the upper" "$T/mnt2/created"
    umount "$T/mnt2" || bad "4 umount of the remount"
    wait_gone "$second" || bad "4 second daemon still running 10 s after umount"
  else
    bad "4 mounting again after the first was unmounted"
  fi
else
  bad "1 first mount"
fi

echo "-- 5: kill -9 of the daemon"
if mount_fg "$T/mnt3" "$T/upper" "$T/work"; then
  victim=$pid
  ls "$T/mnt3" >/dev/null
  kill -KILL "$victim"
  wait_gone "$victim" 50 || bad "5 daemon alive 5 s after SIGKILL"
  timeout -s KILL 5 stat "$T/mnt3" >"$T/out" 2>"$T/err"
  rc=$?
  if ((rc == 137 || rc == 124)); then
    bad "5 stat of the dead mountpoint hangs (killed by timeout 5)"
  elif ((rc == 0)); then
    bad "5 stat of the dead mountpoint succeeded (expected ENOTCONN)"
  elif grep -q "Transport endpoint is not connected" "$T/err"; then
    ok "5 stat of the dead mountpoint fails with ENOTCONN: $(cat "$T/err")"
  else
    bad "5 stat of the dead mountpoint failed, but not with ENOTCONN: $(cat "$T/err")"
  fi
  timeout -s KILL 5 cat "$T/mnt3/file" >/dev/null 2>"$T/err"
  rc=$?
  if ((rc == 137)); then bad "5 reading a file under the dead mount hangs"
  elif grep -q "Transport endpoint is not connected" "$T/err"; then ok "5 reading under the dead mount: ENOTCONN"
  else bad "5 reading under the dead mount: exit $rc: $(cat "$T/err")"
  fi
  # The lock is a property of the live daemon: a new mount on the same layers works at once.
  if mount_fg "$T/mnt4" "$T/upper" "$T/work"; then
    ok "5 the same upper/work mounts again while the dead mount is still attached"
    check "5 ...and shows the data" grep -q "new in the upper" "$T/mnt4/created"
    p4=$pid
    umount "$T/mnt4" && wait_gone "$p4" || bad "5 umount of the new mount"
  else
    bad "5 remount after kill -9 refused: $(tail -1 "$T/daemon.log")"
  fi
  if umount -l "$T/mnt3"; then ok "5 umount -l of the dead mount"; else bad "5 umount -l of the dead mount"; fi
else
  bad "5 mount"
fi

echo "-- 6: auto_unmount"
if ! command -v fusermount3 >/dev/null; then
  echo "  note: fusermount3 missing: auto_unmount (done by fusermount3) not tested"
elif mount_fg "$T/mnt3" "$T/upper" "$T/work" auto_unmount; then
  victim=$pid
  check "6 the auto_unmount mount works" grep -q "from the lower layer" "$T/mnt3/file"
  kill -KILL "$victim"
  wait_gone "$victim" 50 || bad "6 daemon alive 5 s after SIGKILL"
  gone=0
  for ((i = 0; i < 100; i++)); do
    if ! is_mounted "$T/mnt3"; then gone=1; break; fi
    sleep 0.1
  done
  if ((gone)); then
    ok "6 the mount disappeared by itself after kill -9 ($((i * 100)) ms)"
    if timeout -s KILL 5 stat "$T/mnt3" >/dev/null 2>&1 && [[ -z $(ls -A "$T/mnt3") ]]; then
      ok "6 the mountpoint is a plain empty directory again"
    else
      bad "6 the mountpoint is not usable after auto_unmount"
    fi
  else
    bad "6 the mount is still there 10 s after the daemon died (auto_unmount did not work)"
    umount -l "$T/mnt3"
  fi
else
  bad "6 mount with auto_unmount: $(tail -3 "$T/daemon.log")"
fi

echo
if ((failures)); then
  echo "hardening_second_mount: $failures check(s) failed"
  echo "--- daemon log tail ---"
  tail -20 "$T/daemon.log"
  exit 1
fi
echo "hardening_second_mount: ok"

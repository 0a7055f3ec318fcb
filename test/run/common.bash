# Shared by the strata-run tests (sourced, not a test itself: ctest takes only *.sh and *.py).
# Provides: the checks' bookkeeping (ok/fail/summary), the busybox rootfs (built once by
# scripts/make-rootfs into $STRATA_BUILD/rootfs/busybox), a private mount namespace, a test user
# for rootless runs, and /dev/fuse opened up for that user while a test runs (restored on exit).
# shellcheck shell=bash disable=SC2015  # ok and fail return 0: `A && ok || fail` is an if/else

set -u
STRATA_SRC=${STRATA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
STRATA_BUILD=${STRATA_BUILD:-$STRATA_SRC/build}
TEST_NAME=${TEST_NAME:-$(basename "$0" .sh)}
TEST_USER=${STRATA_TEST_USER:-strata-test}

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "  ok: $*"; }
fail() { failed=$((failed + 1)); echo "  FAIL: $*"; }
skip() { echo "$TEST_NAME: SKIP: $*"; exit 77; }
# expect NAME WANT GOT
expect() {
  if [[ $2 == "$3" ]]; then ok "$1"; else fail "$1: want '$2', got '$3'"; fi
}
summary() {
  echo "$TEST_NAME: $passed passed, $failed failed"
  ((failed == 0))
}

# Mounts made by a test must not leak into the namespace other processes share: run the whole
# script again inside a private mount namespace.
enter_private_mount_namespace() {
  if [[ -z ${STRATA_RUN_TEST_PRIVATE:-} ]]; then
    command -v unshare >/dev/null || skip "unshare (util-linux) is not installed"
    STRATA_RUN_TEST_PRIVATE=1 exec unshare -m --propagation private "$0" "$@"
  fi
}

require_root() {
  [[ $(id -u) == 0 ]] || skip "needs root (mounts, a test user, /dev/fuse); run as root"
}

require_binaries() {
  for b in strata-run strata-fs; do
    [[ -x $STRATA_BUILD/$b ]] || { echo "$TEST_NAME: FAIL: $STRATA_BUILD/$b is not built"; exit 1; }
  done
  [[ -c /dev/fuse ]] || skip "/dev/fuse is missing (modprobe fuse)"
}

# The busybox rootfs, built once per build directory and reused by every test.
ROOTFS=$STRATA_BUILD/rootfs/busybox
require_rootfs() {
  if ! "$STRATA_SRC/scripts/make-rootfs" --if-missing "$ROOTFS" >"${TMPDIR:-/tmp}/make-rootfs.$$.log" 2>&1; then
    if [[ ! -x $ROOTFS/bin/busybox ]]; then
      cat "${TMPDIR:-/tmp}/make-rootfs.$$.log"
      rm -f "${TMPDIR:-/tmp}/make-rootfs.$$.log"
      skip "no busybox rootfs: scripts/make-rootfs failed (apt-get download busybox-static; see above)"
    fi
  fi
  rm -f "${TMPDIR:-/tmp}/make-rootfs.$$.log"
}

# A listing (names, types, modes, owners, sizes, mtimes, link targets) and the contents of every
# file, hashed: equal hashes mean the tree is byte-for-byte unchanged.
tree_hash() {
  (
    cd "$1" || exit 1
    find . -printf '%p|%y|%m|%U|%G|%s|%T@|%l\n' | LC_ALL=C sort
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
  ) | sha256sum | cut -d' ' -f1
}

# The test user: created if missing, left in place afterwards (creating it again is slower than
# keeping a nologin account without a home).
ensure_test_user() {
  if ! id "$TEST_USER" >/dev/null 2>&1; then
    command -v useradd >/dev/null || skip "useradd is not installed: cannot create the test user $TEST_USER"
    useradd -M -s /usr/sbin/nologin "$TEST_USER" 2>/dev/null || skip "useradd $TEST_USER failed"
  fi
  TEST_UID=$(id -u "$TEST_USER")
  TEST_GID=$(id -g "$TEST_USER")
  command -v setpriv >/dev/null || skip "setpriv (util-linux) is not installed"
}

as_test_user() {
  setpriv --reuid="$TEST_UID" --regid="$TEST_GID" --clear-groups -- "$@"
}

# /dev/fuse must be usable by the test user. Debian images here ship it 0600 (root only); open it
# to 0666 while the test runs and put the original mode back however the test ends. A lock keeps
# two tests from restoring each other's change.
FUSE_LOCK=/run/lock/strata-test-dev-fuse.lock
open_dev_fuse_for_users() {
  mkdir -p "$(dirname "$FUSE_LOCK")"
  exec {fuse_lock_fd}>"$FUSE_LOCK"
  flock "$fuse_lock_fd"
  FUSE_MODE=$(stat -c %a /dev/fuse)
  trap 'chmod "$FUSE_MODE" /dev/fuse; cleanup_test' EXIT
  chmod 0666 /dev/fuse
}

# Each test sets WORK to its scratch directory; strata-run's own temporary directories go to
# $WORK/tmp (TMPDIR) so that "nothing left behind" can be checked there.
cleanup_test() {
  [[ -n ${WORK:-} && -d $WORK ]] && rm -rf "$WORK"
}

# No strata-fs (or helper) with our paths in its command line, no mount under $1, and no scratch
# directory of strata-run left in $2.
check_nothing_left() {
  local dir=$1 tmp=$2 procs mounts scratch
  procs=$(pgrep -af -- "$dir" | grep -v -e pgrep -e "$TEST_NAME" || true)
  [[ -z $procs ]] && ok "no process left with $dir in its command line" || fail "processes left: $procs"
  mounts=$(grep -F -- "$dir" /proc/self/mountinfo /proc/1/mountinfo || true)
  [[ -z $mounts ]] && ok "no mount left under $dir" || fail "mounts left: $mounts"
  scratch=$(ls -A "$tmp" 2>/dev/null)
  [[ -z $scratch ]] && ok "strata-run removed its temporary directories" || fail "left in $tmp: $scratch"
}

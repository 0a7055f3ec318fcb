#!/usr/bin/env bash
# strata-run as an ordinary user (a test user created if missing): the same checks as root.sh,
# on a copy of the busybox rootfs that the user owns. /dev/fuse is made 0666 for the duration
# (it is 0600 on these machines) and restored on exit; first, while it is still closed to the
# user, the launcher's message for that case is checked. With newuidmap and /etc/subuid ranges the
# run uses them; the single-uid mapping (STRATA_RUN_IDMAP=single) is checked as well.
# shellcheck source-path=SCRIPTDIR disable=SC2015  # ok and fail return 0: `A && ok || fail` is an if/else
TEST_NAME=rootless
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
source "$(dirname "${BASH_SOURCE[0]}")/scenario.bash"
require_root
enter_private_mount_namespace "$@"
require_binaries
require_rootfs
ensure_test_user

WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-run-rootless.XXXXXX")
chmod 0755 "$WORK"
open_dev_fuse_for_users  # takes the lock, sets the EXIT trap (restore mode, remove $WORK)

# The user reaches the binaries and the rootfs only through directories it may read: copies.
mkdir -p "$WORK/bin" "$WORK/tmp"
cp "$STRATA_BUILD/strata-run" "$STRATA_BUILD/strata-fs" "$WORK/bin/"
cp -a "$ROOTFS" "$WORK/rootfs"
chown -R "$TEST_UID:$TEST_GID" "$WORK"
STRATA_BUILD=$WORK/bin
BASE=$WORK/rootfs
RUNAS=(setpriv --reuid="$TEST_UID" --regid="$TEST_GID" --clear-groups --)

if ! as_test_user unshare -U true 2>/dev/null; then
  skip "user namespaces are not available to $TEST_USER (unshare -U fails; see /proc/sys/user/max_user_namespaces)"
fi

echo "$TEST_NAME: strata-run as $TEST_USER (uid $TEST_UID), rootfs copy $BASE"
if [[ $FUSE_MODE != 666 ]]; then
  chmod "$FUSE_MODE" /dev/fuse
  msg=$(env TMPDIR="$WORK/tmp" "${RUNAS[@]}" "$STRATA_BUILD/strata-run" --lower "$BASE" true 2>&1)
  rc=$?
  mode_text=$(stat -c %A /dev/fuse)
  expect "/dev/fuse mode $FUSE_MODE: the launcher says what is wrong and what to do" \
    "strata-run: /dev/fuse: mode 0$FUSE_MODE ($mode_text), not accessible to uid $TEST_UID; ask an administrator to run 'chmod 0666 /dev/fuse' (most distributions ship it 0666)" \
    "$msg"
  expect '... and exits 125' 125 "$rc"
  chmod 0666 /dev/fuse
fi

maps=$(env TMPDIR="$WORK/tmp" "${RUNAS[@]}" "$STRATA_BUILD/strata-run" --lower "$BASE" cat /proc/self/uid_map | wc -l)
if ((maps > 1)); then
  echo "  (id maps: the caller and a subordinate range, through newuidmap)"
else
  echo "  (id maps: the caller's uid only; newuidmap or an /etc/subuid range for $TEST_USER is missing)"
fi
container_checks

if ((maps > 1)); then
  out=$(STRATA_RUN_IDMAP=single strata_run --lower "$BASE" -- sh -c 'id -u; wc -l < /proc/self/uid_map')
  expect 'STRATA_RUN_IDMAP=single: root inside with one mapping' "0
1" "$out"
fi
summary

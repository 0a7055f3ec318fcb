#!/usr/bin/env bash
# Rootless podman on strata-fs: the checks of podman_run.sh and podman_build.sh as an ordinary
# user (strata-podman-test, created if missing, with /etc/subuid and /etc/subgid ranges). The user
# runs a copy of strata-fs from the scratch directory; /dev/fuse is made 0666 for the duration
# (these machines ship it 0600) under the lock test/run/rootless.sh uses, and its mode is restored
# however the test ends. The daemon must run as the user, and the opaque marker it writes must be
# the unprivileged one containers/storage reads rootless (user.overlay.opaque=y).
# Skipped (77), saying why, only when the machine cannot run rootless podman at all.
PODMAN_TEST=podman_rootless
TEST_USER=${STRATA_PODMAN_USER:-strata-podman-test}
FUSE_LOCK=/run/lock/strata-test-dev-fuse.lock
# shellcheck source-path=SCRIPTDIR source=../podman/podmanlib.bash
source "$(dirname "${BASH_SOURCE[0]}")/../podman/podmanlib.bash"
require_root_and_fuse
enter_namespace "$@"
ensure_podman
ensure_packages attr || die "apt-get install attr (getfattr) failed"
for tool in newuidmap newgidmap setpriv useradd usermod; do
  command -v "$tool" >/dev/null || skip "$tool is missing after installing uidmap (rootless podman maps ids with it)"
done

# The test user, and subordinate id ranges for it: a free range above every range already given.
if ! id "$TEST_USER" >/dev/null 2>&1; then
  useradd -M -s /usr/sbin/nologin "$TEST_USER" || die "useradd $TEST_USER failed"
fi
TEST_UID=$(id -u "$TEST_USER")
TEST_GID=$(id -g "$TEST_USER")
free_range_start() {
  awk -F: 'NF >= 3 { end = $2 + $3; if (end > max) max = end } END {
    if (max < 100000) max = 100000; print int((max + 65535) / 65536) * 65536 }' /etc/subuid /etc/subgid
}
if ! grep -q "^$TEST_USER:" /etc/subuid 2>/dev/null || ! grep -q "^$TEST_USER:" /etc/subgid 2>/dev/null; then
  start=$(free_range_start)
  grep -q "^$TEST_USER:" /etc/subuid 2>/dev/null || usermod --add-subuids "$start-$((start + 65535))" "$TEST_USER"
  grep -q "^$TEST_USER:" /etc/subgid 2>/dev/null || usermod --add-subgids "$start-$((start + 65535))" "$TEST_USER"
fi
if ! grep -q "^$TEST_USER:" /etc/subuid || ! grep -q "^$TEST_USER:" /etc/subgid; then
  die "no /etc/subuid or /etc/subgid range for $TEST_USER (usermod --add-subuids failed)"
fi
AS_USER=(setpriv --reuid="$TEST_UID" --regid="$TEST_GID" --clear-groups --)
"${AS_USER[@]}" unshare -U true 2>/dev/null ||
  skip "user namespaces are not available to $TEST_USER (unshare -U fails; see /proc/sys/user/max_user_namespaces)"

prepare_namespace
new_scratch

# /dev/fuse open to everyone while the test runs; the lock keeps two tests from restoring each
# other's change. cleanup (the EXIT trap) puts the mode back.
mkdir -p "$(dirname "$FUSE_LOCK")"
exec {fuse_lock_fd}>"$FUSE_LOCK"
flock "$fuse_lock_fd"
export RESTORE_FUSE_MODE  # read by cleanup in podmanlib.bash
RESTORE_FUSE_MODE=$(stat -c %a /dev/fuse)
chmod 0666 /dev/fuse

mkdir -p "$SCRATCH/bin"
install -m 0755 "$STRATA_FS" "$SCRATCH/bin/strata-fs"
use_store sf "$SCRATCH/bin/strata-fs"
echo "$PODMAN_TEST: podman $(pm version --format '{{.Client.Version}}') as $TEST_USER (uid $TEST_UID), mount_program=$MOUNT_PROGRAM"
maps=$(pm unshare cat /proc/self/uid_map 2>&1)
if [[ $(wc -l <<<"$maps") -lt 2 ]]; then
  skip "rootless podman got no subordinate uid range (uid_map: ${maps//$'\n'/; }): newuidmap or /etc/subuid does not work here"
fi
note "rootless uid map: ${maps//$'\n'/; }"
check_info strata-fs
run_scenario
make_test_image busybox-doc 150
doc_scenario localhost/busybox-doc 150
summary

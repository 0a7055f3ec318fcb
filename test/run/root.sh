#!/usr/bin/env bash
# strata-run as root on the busybox rootfs: pid 1, hostname, uid 0 inside, changes in --upper,
# whiteouts, exit status, three containers at once, lower layers unchanged, nothing left behind.
# shellcheck source-path=SCRIPTDIR disable=SC2015  # ok and fail return 0: `A && ok || fail` is an if/else
TEST_NAME=root
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
source "$(dirname "${BASH_SOURCE[0]}")/scenario.bash"
require_root
enter_private_mount_namespace "$@"
require_binaries
require_rootfs

WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-run-root.XXXXXX")
trap cleanup_test EXIT
RUNAS=()
BASE=$ROOTFS
echo "$TEST_NAME: strata-run as root, rootfs $BASE"
container_checks
summary

#!/bin/sh
# write_ops.py with FUSE passthrough off: the seeded mutation script
# through strata-fs' own read/write path, which must match the kernel overlay exactly (nothing is
# tolerated there). write_ops.py itself is the run with the daemon's default, passthrough=auto.
case "${STRATA_FS_BIN:-strata-fs}" in
  *strata-fs) ;;
  *) echo "SKIP: passthrough=off is a strata-fs option; the SUT is $STRATA_FS_BIN"; exit 77 ;;
esac
export STRATA_SUT_OPTS="${STRATA_SUT_OPTS:+$STRATA_SUT_OPTS,}passthrough=off"
exec "$(dirname "$0")/write_ops.py" "$@"

#!/bin/sh
# fuzz_ops.py with FUSE passthrough off: the differential fuzzer
# through strata-fs' own read/write path, which must match the kernel overlay exactly (nothing is
# tolerated there). fuzz_ops.py itself is the run with the daemon's default, passthrough=auto.
case "${STRATA_FS_BIN:-strata-fs}" in
  *strata-fs) ;;
  *) echo "SKIP: passthrough=off is a strata-fs option; the SUT is $STRATA_FS_BIN"; exit 77 ;;
esac
export STRATA_SUT_OPTS="${STRATA_SUT_OPTS:+$STRATA_SUT_OPTS,}passthrough=off"
exec "$(dirname "$0")/fuzz_ops.py" "$@"

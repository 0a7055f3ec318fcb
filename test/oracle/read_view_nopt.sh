#!/bin/sh
# read_view.py with FUSE passthrough off: file contents and mmap read through strata-fs' own read
# path, which must match the kernel overlay exactly (nothing is tolerated there). read_view.py
# itself is the run with the daemon's default, passthrough=auto. Only the chardev rendering unless
# STRATA_ORACLE_FORMS says otherwise: the renderings differ in how whiteouts are spelled, which the
# data path does not see, so the other two would only cost time.
case "${STRATA_FS_BIN:-strata-fs}" in
  *strata-fs) ;;
  *) echo "SKIP: passthrough=off is a strata-fs option; the SUT is $STRATA_FS_BIN"; exit 77 ;;
esac
export STRATA_SUT_OPTS="${STRATA_SUT_OPTS:+$STRATA_SUT_OPTS,}passthrough=off"
export STRATA_ORACLE_FORMS="${STRATA_ORACLE_FORMS:-chardev}"
exec "$(dirname "$0")/read_view.py" "$@"

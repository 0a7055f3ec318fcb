#!/bin/sh
# data_integrity.py with strata-fs -o metacopy=on (metadata-only copy-up), against the kernel overlay
# mounted with metacopy=on too (test/lib/overlay.py switches it when STRATA_SUT_OPTS asks).
case "${STRATA_FS_BIN:-strata-fs}" in
  *strata-fs) ;;
  *) echo "SKIP: metacopy=on is tested on strata-fs; the SUT is $STRATA_FS_BIN"; exit 77 ;;
esac
export STRATA_SUT_OPTS="${STRATA_SUT_OPTS:+$STRATA_SUT_OPTS,}metacopy=on"
exec "$(dirname "$0")/data_integrity.py" "$@"

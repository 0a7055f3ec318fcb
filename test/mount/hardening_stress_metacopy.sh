#!/bin/sh
# hardening_stress.py with strata-fs -o metacopy=on: chmod, setxattr, opens for writing and renames
# of lower files make metacopy files (data copied at the first write, renames with redirects),
# under the same concurrent load; the kernel reading the upper runs with metacopy=on.
export STRATA_SUT_OPTS="${STRATA_SUT_OPTS:+$STRATA_SUT_OPTS,}metacopy=on"
exec "$(dirname "$0")/hardening_stress.py" "$@"

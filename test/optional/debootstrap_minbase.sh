#!/usr/bin/env bash
# Optional, outside the default suite (CMake does not look in test/optional/): strata-run on a real
# distribution instead of the busybox rootfs. A Debian bookworm minbase rootfs is made with
# debootstrap (minutes, and it needs the Debian mirror), then, as root, `dpkg -l`, `apt-get check`
# and `apt-get --version` run inside strata-run over it. `dpkg -l` inside must list exactly what
# dpkg on the host reads from the same database.
#
#   test/optional/debootstrap_minbase.sh        uses build/ (STRATA_BUILD to change)
#
# The rootfs is cached in /var/tmp/strata-debootstrap-bookworm-minbase (STRATA_DEBOOTSTRAP_CACHE);
# remove it to build it again. Exit 77 (skipped): not root, no debootstrap, or no network.
# shellcheck source-path=SCRIPTDIR disable=SC2015  # ok and fail return 0: `A && ok || fail` is an if/else
TEST_NAME=debootstrap_minbase
source "$(dirname "${BASH_SOURCE[0]}")/../run/common.bash"
require_root
enter_private_mount_namespace "$@"
require_binaries
command -v debootstrap >/dev/null || skip "debootstrap is not installed (apt-get install debootstrap)"

CACHE=${STRATA_DEBOOTSTRAP_CACHE:-/var/tmp/strata-debootstrap-bookworm-minbase}
MIRROR=${STRATA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-run-debootstrap.XXXXXX")
trap cleanup_test EXIT
mkdir -p "$WORK/tmp"

# Built beside the cache and renamed into place, so an interrupted run never leaves a half rootfs
# that the next run would take for a whole one.
if [[ ! -e $CACHE/.strata-complete ]]; then
  partial=$CACHE.partial
  rm -rf "$partial"
  echo "$TEST_NAME: debootstrap --variant=minbase bookworm $partial $MIRROR"
  start=$SECONDS
  if ! debootstrap --variant=minbase bookworm "$partial" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 5 "$WORK/debootstrap.log"
    rm -rf "$partial"
    if grep -q -e 'Failed getting release file' -e "Couldn't download" -e 'Temporary failure' \
        -e 'Could not resolve' -e 'Connection refused' -e 'Network is unreachable' "$WORK/debootstrap.log"; then
      skip "debootstrap could not reach $MIRROR (no network?)"
    fi
    fail "debootstrap failed (log above)"
    summary
    exit 1
  fi
  touch "$partial/.strata-complete"
  rm -rf "$CACHE"
  mv "$partial" "$CACHE"
  echo "  (debootstrap took $((SECONDS - start)) s; $(du -sh "$CACHE" | cut -f1) cached in $CACHE)"
else
  echo "$TEST_NAME: reusing $CACHE ($(du -sh "$CACHE" | cut -f1))"
fi

run() { env TMPDIR="$WORK/tmp" "$STRATA_BUILD/strata-run" --lower "$CACHE" "$@"; }
# timed CMD...: runs CMD and notes its wall time on the test's own stderr (fd 3), whatever CMD's
# output is redirected to.
exec 3>&2
timed() {
  local start=$EPOCHREALTIME
  "$@"
  local rc=$?
  echo "  ($(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s: ${*:2:4} ...)" >&3
  return $rc
}

# dpkg pads its columns to COLUMNS when stdout is not a terminal: the same width on both sides.
timed run --env COLUMNS=200 -- dpkg -l >"$WORK/inside" 2>"$WORK/err"
expect 'dpkg -l inside exits 0' 0 "$?"
COLUMNS=200 dpkg-query --admindir="$CACHE/var/lib/dpkg" -l >"$WORK/host"
if cmp -s "$WORK/inside" "$WORK/host"; then
  ok "dpkg -l inside lists what the host's dpkg reads in the rootfs ($(grep -c '^ii' "$WORK/inside") packages installed)"
else
  fail "dpkg -l differs from the host's view: $(diff "$WORK/host" "$WORK/inside" | head -20) $(cat "$WORK/err")"
fi
grep -q '^ii  apt ' "$WORK/inside" && ok "... apt among them" || fail "no apt in dpkg -l"

out=$(timed run apt-get check 2>&1)
expect 'apt-get check: the package database is consistent' 0 "$?"
[[ $out == *"Reading package lists"* ]] || fail "apt-get check said: $out"

out=$(timed run apt-get --version 2>&1)
expect 'apt-get --version exits 0' 0 "$?"
[[ $out =~ ^apt\ [0-9.]+\ \( ]] && ok "apt-get --version: ${out%%$'\n'*}" || fail "apt-get --version: $out"

check_nothing_left "$WORK" "$WORK/tmp"
summary

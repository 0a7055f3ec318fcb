#!/usr/bin/env bash
# Signals and strata-run, as root: a signal sent to strata-run reaches the command (pid 1 of its
# namespace, where the kernel would drop a signal without a handler: strata-run carries out the
# default action itself, and the exit status says 128+N), a handler in the command runs,
# `timeout` works, and a signal that comes while the container is still being set up stops it.
# All of it twice: the command as pid 1, and as pid 2 under strata-run's --init, which passes the
# signals on (the command there is an ordinary process: the kernel's default actions apply).
# shellcheck source-path=SCRIPTDIR disable=SC2015  # ok and fail return 0: `A && ok || fail` is an if/else
TEST_NAME=signals
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
require_root
enter_private_mount_namespace "$@"
require_binaries
require_rootfs

WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-run-signals.XXXXXX")
trap cleanup_test EXIT
mkdir -p "$WORK/tmp"
# `exec`: a background `run ... &` is then strata-run itself, so $! is the pid to signal; and the
# signals bash ignores in background jobs (INT, QUIT) are back at their defaults. The EXIT trap
# goes first: a background subshell that a signal ends before its exec would run it (and remove
# $WORK under the tests that follow).
run() { trap - EXIT; exec env --default-signal TMPDIR="$WORK/tmp" "$STRATA_BUILD/strata-run" --lower "$ROOTFS" "${MODE[@]}" "$@"; }

# Start a container in the background and wait until it says "ready" on stdout.
start() {
  : >"$WORK/out"
  run "$@" >"$WORK/out" 2>&1 &
  pid=$!
  local i
  for ((i = 0; i < 100; i++)); do
    grep -q ready "$WORK/out" && return
    sleep 0.05
  done
  fail "the container did not get ready: $(cat "$WORK/out")"
}

# The same checks with the command as pid 1 (default) and as pid 2 under --init: $MODE says which.
signal_checks() {
  local m=${MODE[*]:-pid 1}
  start -- sh -c 'echo ready; exec sleep 30'
  kill -TERM "$pid"
  wait "$pid"
  expect "$m: "'SIGTERM to strata-run, command without a handler: exit 143 (128+15)' 143 "$?"

  start -- sh -c 'echo ready; exec sleep 30'
  kill -INT "$pid"
  wait "$pid"
  expect "$m: "'SIGINT: exit 130' 130 "$?"

  start -- sh -c 'trap "echo got TERM; exit 3" TERM; echo ready; while :; do sleep 0.05; done'
  kill -TERM "$pid"
  wait "$pid"
  expect "$m: "'a handler in the command runs: its exit status' 3 "$?"
  expect "$m: "'... and its output' "ready
got TERM" "$(cat "$WORK/out")"

  start -- sh -c 'trap "" HUP; echo ready; sleep 0.5; echo still here'
  kill -HUP "$pid"
  wait "$pid"
  expect "$m: "'a signal the command ignores is ignored' 0 "$?"

  timeout -s TERM 1 env --default-signal TMPDIR="$WORK/tmp" "$STRATA_BUILD/strata-run" --lower "$ROOTFS" "${MODE[@]}" sleep 30
  expect "$m: "'timeout 1 strata-run sleep 30: exit 124' 124 "$?"

  # A signal during setup: the container is stopped before the command runs (or right after).
  # Sent once strata-run itself runs (before, it would only end the subshell on its way to exec).
  run sleep 30 &
  pid=$!
  local i
  for ((i = 0; i < 200; i++)); do
    [[ $(readlink "/proc/$pid/exe") == */strata-run ]] && break
    sleep 0.005
  done
  kill -TERM "$pid"
  wait "$pid"
  expect "$m: "'SIGTERM during setup: exit 143' 143 "$?"
}

MODE=()
signal_checks
MODE=(--init)
signal_checks

# SIGTERM at a random point of the first milliseconds (argument parsing, the preflight making the
# scratch directory, namespaces being created): always 143, and never a scratch directory left in
# TMPDIR. Before strata-run blocked its signals first thing, about 1 run in 30 left one.
MODE=()
bad_status=0 leftovers=0
for ((round = 0; round < 40; round++)); do
  run sleep 30 &
  pid=$!
  for ((i = 0; i < 400; i++)); do
    [[ $(readlink "/proc/$pid/exe") == */strata-run ]] && break
  done
  for ((i = 0; i < RANDOM % 8 * 25; i++)); do :; done
  kill -TERM "$pid"
  wait "$pid"
  (($? == 143)) || bad_status=$((bad_status + 1))
  # Ours only: a ThreadSanitizer build killed during its start leaves its tsan.rodata.PID there.
  for ((i = 0; i < 100; i++)); do  # the holder removes the scratch directory after the daemon is gone
    [[ -z $(compgen -G "$WORK/tmp/strata-run.*") ]] && break
    sleep 0.01
  done
  if [[ -n $(compgen -G "$WORK/tmp/strata-run.*") ]]; then
    leftovers=$((leftovers + 1))
    echo "  left: $(cd "$WORK/tmp" && echo strata-run.*)"
  fi
  rm -rf "${WORK:?}/tmp/"*
done
expect 'SIGTERM at random early points, 40 rounds: exit status other than 143' 0 "$bad_status"
expect 'SIGTERM at random early points, 40 rounds: scratch directories left' 0 "$leftovers"

sleep 0.2
check_nothing_left "$WORK" "$WORK/tmp"
summary

# The container checks that root.sh and rootless.sh both run (sourced after common.bash).
# Inputs: RUNAS (array: the command prefix that runs as the caller, empty for root), WORK (a
# scratch directory the caller may write), BASE (the busybox rootfs the caller may read and own).
# shellcheck shell=bash disable=SC2015,SC2012  # ok and fail return 0: `A && ok || fail` is an if/else; ls lists names we made

strata_run() { env TMPDIR="$WORK/tmp" "${RUNAS[@]}" "$STRATA_BUILD/strata-run" "$@"; }
# For `strata_run_bg ARGS &`: the background subshell becomes strata-run, so that $! is its pid
# (to signal it), with the signals that bash ignores in background jobs back at their defaults.
strata_run_bg() { exec env --default-signal TMPDIR="$WORK/tmp" "${RUNAS[@]}" "$STRATA_BUILD/strata-run" "$@"; }

# A process orphaned in the container (a double fork: its parent exits at once) exits 0.2 s
# later; a watcher, a child of the command, follows its pid in /proc and prints "zombie" or
# "reaped" and how many processes of the container are zombies then. The command itself execs
# cat, which never waits for anything, and copies the watcher's lines from a fifo: the container
# ends as soon as the watcher has said its piece.
# shellcheck disable=SC2016  # expanded inside the container
ZOMBIE_PROBE='orphan=$(sh -c "sleep 0.2 >/dev/null 2>&1 & echo \$!")
mkfifo /tmp/probe
(
  i=0
  while [ $i -lt 100 ]; do
    state=$(sed -n "s/^State:[[:space:]]*\(.\).*/\1/p" /proc/$orphan/status 2>/dev/null)
    case $state in
      Z) echo zombie; break ;;
      "") echo reaped; break ;;
    esac
    sleep 0.05; i=$((i + 1))
  done
  [ $i -lt 100 ] || echo "still running"
  echo "zombies: $(grep -l "^State:.*Z" /proc/[0-9]*/status 2>/dev/null | wc -l)"
) >/tmp/probe &
exec cat /tmp/probe'

# Without --init the command is pid 1 and an orphan stays a zombie (the check that --init is
# needed, so that the --init checks below can fail); with it, strata-run's init reaps it.
init_checks() {
  local lowers=$1 out
  out=$(strata_run --lower "$lowers" -- sh -c "$ZOMBIE_PROBE")
  expect 'without --init, an orphan that exits stays a zombie' "zombie
zombies: 1" "$out"
  out=$(strata_run --lower "$lowers" --init -- sh -c "$ZOMBIE_PROBE")
  expect '--init: the orphan is reaped, no zombie in the container' "reaped
zombies: 0" "$out"
  out=$(strata_run --lower "$lowers" --init -- sh -c 'echo $$; cat /proc/1/comm')
  expect '--init: the command is pid 2, under strata-run as pid 1' "2
strata-run" "$out"
  strata_run --lower "$lowers" --init -- sh -c 'exit 7'
  expect "--init: the command's exit status passes through" 7 "$?"
  strata_run --lower "$lowers" --init -- sh -c 'kill -USR1 $$'
  expect '--init: a command killed by signal 10: exit 138' 138 "$?"
  strata_run --lower "$lowers" --init -- no-such-command 2>/dev/null
  expect '--init: a command not in the image: exit 127' 127 "$?"
  local start=$SECONDS
  out=$(strata_run --lower "$lowers" --init -- sh -c 'sleep 60 & echo started')
  ((SECONDS - start < 20)) && ok "--init: a leftover process is killed when the command exits ($out)" \
    || fail "--init: the container lasted $((SECONDS - start)) s, as long as the leftover sleep 60"
  # The init is the host's strata-run: its binary, environment and command line stay hidden.
  out=$(strata_run --lower "$lowers" --init -- sh -c \
    'readlink /proc/1/exe || echo no exe; cat /proc/1/environ >/dev/null 2>&1 || echo no environ; tr -s "\0" " " </proc/1/cmdline')
  expect '--init: /proc/1 shows neither the host binary, nor its environment, nor its arguments' "no exe
no environ
strata-run --init " "$out"
}

# The caller's terminal inside: bound on /dev/console, where ttyname(3) finds it. script(1) gives
# strata-run a pty as stdin; without one, there is no name to find.
tty_checks() {
  local lowers=$1 out cmd
  out=$(strata_run --lower "$lowers" -- sh -c 'tty; test -e /dev/console && echo console' </dev/null)
  expect 'stdin not a terminal: tty says so, and there is no /dev/console' "not a tty" "$out"
  if ! command -v script >/dev/null; then
    fail "script (util-linux, package bsdutils) is missing: cannot test with a terminal (scripts/setup installs it)"
    return
  fi
  printf -v cmd '%q ' env TMPDIR="$WORK/tmp" "${RUNAS[@]}" "$STRATA_BUILD/strata-run" --lower "$lowers" -- \
    sh -c 'tty; test /dev/console -ef /proc/self/fd/0 && echo same device'
  out=$(script -qec "$cmd" /dev/null </dev/null | tr -d '\r')
  expect 'stdin a terminal: tty names it /dev/console, the same device as stdin' "/dev/console
same device" "$out"
}

container_checks() {
  local top=$WORK/top lowers rc out
  mkdir -p "$WORK/tmp" "$top/etc" "$top/data"
  echo "from the top layer" >"$top/etc/motd"
  echo "keep me" >"$top/data/keep"
  [[ ${#RUNAS[@]} -gt 0 ]] && chown -R "$TEST_UID:$TEST_GID" "$WORK"
  lowers=$top:$BASE
  local hash_top hash_base
  hash_top=$(tree_hash "$top")
  hash_base=$(tree_hash "$BASE")

  out=$(strata_run --lower "$lowers" -- sh -c 'echo $$')
  expect 'echo $$ prints 1 (the command is pid 1)' 1 "$out"
  init_checks "$lowers"
  tty_checks "$lowers"
  out=$(strata_run --lower "$lowers" --hostname box-one hostname)
  expect 'hostname prints the --hostname' box-one "$out"
  out=$(strata_run --lower "$lowers" id -u)
  expect 'id -u prints 0 (the caller is root inside)' 0 "$out"
  out=$(strata_run --lower "$lowers" cat /etc/motd /etc/hostname)
  expect 'both layers visible, the top one first' "from the top layer
strata" "$out"

  # Changes land in --upper, its work directory beside it.
  local upper=$WORK/upper
  out=$(strata_run --lower "$lowers" --upper "$upper" -- sh -c 'echo hello > /root/new.txt && rm /etc/hostname /data/keep && echo done')
  expect 'a container writes and deletes' 'done' "$out"
  expect 'the new file is in the upper' hello "$(cat "$upper/root/new.txt" 2>&1)"
  expect 'a deleted lower file leaves a whiteout (char 0/0) in the upper' 'character special file 0:0' \
    "$(stat -c '%F %t:%T' "$upper/etc/hostname" 2>&1)"
  expect 'a whiteout for the file of the second layer too' 'character special file 0:0' \
    "$(stat -c '%F %t:%T' "$upper/data/keep" 2>&1)"
  [[ -d $upper.work && ! -e $upper/work ]] && ok "the work directory is beside the upper ($upper.work)" \
    || fail "work directory: want $upper.work and nothing in the upper; have: $(ls -A "$upper" | tr '\n' ' ')"
  if [[ ${#RUNAS[@]} -gt 0 ]]; then
    expect 'the file written inside belongs to the caller on the host' "$TEST_UID" "$(stat -c %u "$upper/root/new.txt")"
  fi
  out=$(strata_run --lower "$lowers" --upper "$upper" -- sh -c 'cat /root/new.txt; test -e /etc/hostname || echo gone')
  expect 'a second container over the same upper sees the changes' "hello
gone" "$out"

  strata_run --lower "$lowers" -- sh -c 'exit 7'
  expect "the command's exit status passes through" 7 "$?"
  strata_run --lower "$lowers" -- no-such-command 2>"$WORK/err"
  rc=$?
  expect 'a command not in the image: exit 127' 127 "$rc"
  expect '... with a message naming it' "strata-run: no-such-command: not found in the container (PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)" "$(cat "$WORK/err")"

  # Three at once over the same lower layers, each with its own upper: none sees the others.
  local i pids=()
  for i in 1 2 3; do
    strata_run --lower "$lowers" --upper "$WORK/c$i" --hostname "c$i" -- \
      sh -c "echo c$i > /who; sleep 0.5; cat /who; ls / | grep -c '^who\$'; hostname; ls /tmp" >"$WORK/out$i" 2>&1 &
    pids+=($!)
  done
  for i in 1 2 3; do
    wait "${pids[$((i - 1))]}"
    expect "container $i of 3 exited 0" 0 "$?"
    expect "container $i saw only its own file and hostname" "c$i
1
c$i" "$(cat "$WORK/out$i")"
    expect "container $i's upper holds only its own change" who "$(ls -A "$WORK/c$i" | tr '\n' ' ' | sed 's/ $//')"
  done

  # strata-run killed outright: its holder (PR_SET_PDEATHSIG) stops the container and the daemon,
  # unmounts and removes the temporary upper, even the file a container uid other than 0 owns.
  strata_run_bg --lower "$lowers" -- sh -c 'echo x > /tmp/f; chown 1000:1000 /tmp/f 2>/dev/null; echo ready; exec sleep 30' \
    >"$WORK/killed.out" 2>&1 &
  local victim=$! tries
  for ((tries = 0; tries < 100; tries++)); do
    grep -q ready "$WORK/killed.out" && break
    sleep 0.05
  done
  kill -KILL "$victim"
  wait "$victim" 2>/dev/null
  expect 'SIGKILL of strata-run: the shell sees 137' 137 "$?"
  for ((tries = 0; tries < 100; tries++)); do
    [[ -z $(ls -A "$WORK/tmp") ]] && ! pgrep -f -- "$WORK/tmp" >/dev/null && break
    sleep 0.05
  done
  ((tries < 100)) && ok "after SIGKILL of strata-run, the container, strata-fs and the scratch directory went ($((tries * 50)) ms)" \
    || fail "after SIGKILL of strata-run, still there: $(ls -A "$WORK/tmp") $(pgrep -af -- "$WORK/tmp")"

  expect 'the top lower layer is byte-for-byte unchanged' "$hash_top" "$(tree_hash "$top")"
  expect 'the busybox lower layer is byte-for-byte unchanged' "$hash_base" "$(tree_hash "$BASE")"
  check_nothing_left "$WORK" "$WORK/tmp"
}

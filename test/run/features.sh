#!/usr/bin/env bash
# What strata-run sets up inside, as root on the busybox rootfs: /proc of the container's own pid
# namespace, the minimal /dev, /sys read-only, the old root gone, no_new_privs, the environment,
# --cwd, --env, --bind (ro and rw), --net none and host, --work, --trace.
# shellcheck source-path=SCRIPTDIR disable=SC2015  # ok and fail return 0: `A && ok || fail` is an if/else
TEST_NAME=features
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
require_root
enter_private_mount_namespace "$@"
require_binaries
require_rootfs

WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-run-features.XXXXXX")
trap cleanup_test EXIT
mkdir -p "$WORK/tmp"
run() { env TMPDIR="$WORK/tmp" "$STRATA_BUILD/strata-run" --lower "$ROOTFS" "$@"; }

expect '/proc shows the container pid namespace only' "/proc/1" "$(run -- sh -c 'echo /proc/[0-9]*')"
# stdin is for strata-run: not a terminal, so no /dev/console (see tty_checks in scenario.bash)
# shellcheck disable=SC2217
expect '/dev holds the minimal set' "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero" \
  "$(run ls /dev </dev/null | tr '\n' ' ' | sed 's/ $//')"
expect '/dev/null, /dev/zero, /dev/urandom work' "0 16" \
  "$(run -- sh -c 'echo x > /dev/null; head -c 16 /dev/zero | tr -d "\000" | wc -c; head -c 16 /dev/urandom | wc -c' | tr '\n' ' ' | sed 's/ $//')"
expect '/dev/shm is writable' ok "$(run -- sh -c 'echo x > /dev/shm/f && echo ok')"
expect '/dev/pts is a devpts of its own, /dev/ptmx a link to it' "devpts pts/ptmx" \
  "$(run -- sh -c 'grep " /dev/pts " /proc/self/mountinfo | cut -d" " -f9; readlink /dev/ptmx' | tr '\n' ' ' | sed 's/ $//')"
expect '/sys is mounted read-only' "ro" "$(run -- sh -c 'grep " /sys " /proc/self/mountinfo | cut -d" " -f6 | cut -d, -f1')"
out=$(run -- sh -c 'touch /sys/x 2>&1 || echo refused')
[[ $out == *refused* ]] && ok "writing to /sys is refused" || fail "writing to /sys: $out"
mounts=$(run cat /proc/self/mountinfo)
if grep -q -e "$WORK" -e ' /work' -e 'strata-run\.' <<<"$mounts"; then
  fail "the old root or the staging directory is still visible: $mounts"
else
  ok "the host's root is gone from the container's mount table"
fi
expect 'the root is the strata-fs overlay' "fuse.strata-fs" \
  "$(awk '$5 == "/" { for (i = 7; i < NF; i++) if ($i == "-") print $(i + 1) }' <<<"$mounts")"
expect 'no_new_privs is set' 1 "$(run -- sh -c 'grep NoNewPrivs /proc/self/status | cut -f2')"

expect 'the default environment' "HOME=/root HOSTNAME=strata PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb container=strata" \
  "$(TERM=dumb run env | grep -v -e '^PWD=' -e '^SHLVL=' | sort | tr '\n' ' ' | sed 's/ $//')"
# shellcheck disable=SC2016  # $FOO and $PATH are expanded inside the container
expect '--env adds and overrides' "bar /bin" "$(run --env FOO=bar --env PATH=/bin -- sh -c 'echo $FOO $PATH')"
expect '--cwd' "/etc" "$(run --cwd /etc pwd)"
run --cwd /no/such/dir pwd 2>"$WORK/err"
expect '--cwd to a missing directory: exit 125' 125 "$?"
expect '... with a message' "strata-run: --cwd /no/such/dir: No such file or directory in the container" "$(cat "$WORK/err")"

mkdir -p "$WORK/share"
echo "from the host" >"$WORK/share/file"
out=$(run --bind "$WORK/share:/mnt/ro:ro" --bind "$WORK/share:/srv/rw" -- \
  sh -c 'cat /mnt/ro/file; (echo x > /mnt/ro/new) 2>/dev/null || echo refused; echo written > /srv/rw/new; cat /srv/rw/new')
expect '--bind :ro is read-only, a plain --bind writable' "from the host
refused
written" "$out"
expect '... and the write reached the host' written "$(cat "$WORK/share/new" 2>&1)"
expect '--bind of a file' "from the host" "$(run --bind "$WORK/share/file:/etc/extra" cat /etc/extra)"

expect '--net none: only lo, and it is up' "lo UP" \
  "$(run --net none -- sh -c 'ls /sys/class/net 2>/dev/null | grep -c . >/dev/null; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "; ip link show lo | grep -o "[<,]UP[,>]" | tr -d "<>,"' | tr '\n' ' ' | sed 's/ $//')"
expect '--net none: the loopback works' ok "$(run --net none -- sh -c 'ping -c1 -W2 127.0.0.1 >/dev/null && echo ok')"
expect '--net host: the host interfaces' "$(tail -n +3 /proc/net/dev | wc -l)" "$(run --net host -- sh -c 'tail -n +3 /proc/net/dev | wc -l')"

run --upper "$WORK/up" --work "$WORK/elsewhere" -- sh -c 'echo x > /x'
[[ -f $WORK/up/x && -d $WORK/elsewhere && ! -e $WORK/up.work ]] && ok "--work names the work directory" \
  || fail "--work: $(ls -A "$WORK")"

run --trace copyup+whiteout -- sh -c 'echo more >> /etc/passwd; rm /etc/group' 2>"$WORK/err"
trace_file=$(sed -n 's/^strata-run: tracing copyup+whiteout to //p' "$WORK/err")
if [[ -n $trace_file && -f $trace_file ]]; then
  ok "--trace names its file on stderr ($trace_file)"
  grep -q '^\[copyup\] /etc/passwd' "$trace_file" && ok "... which has the copy-up" || fail "no copy-up in: $(cat "$trace_file")"
  grep -q '^\[whiteout\] /etc/group' "$trace_file" && ok "... and the whiteout" || fail "no whiteout in: $(cat "$trace_file")"
  rm -f "$trace_file"
else
  fail "--trace: no trace file named: $(cat "$WORK/err")"
fi

check_nothing_left "$WORK" "$WORK/tmp"
summary

# shellcheck shell=bash
# Shared by the podman tests (test/mount/podman_*.sh): the real podman 4.3 of Debian 12, with
# strata-fs (or fuse-overlayfs, for comparison) as containers/storage's mount_program.
#
# - Nothing global changes. Each test runs in a private mount namespace; podman gets a throwaway
#   configuration (storage.conf, containers.conf, registries.conf, policy.json) and a store under a
#   scratch directory, pointed to by CONTAINERS_* variables and --root/--runroot. The places podman
#   writes to whatever its configuration says (/var/lib/containers for its blob cache,
#   /run/containers and /run/libpod) are covered by a tmpfs inside the namespace; a directory
#   made only to be covered is removed afterwards, and so are the cgroups podman made.
# - podman 4.3 drops the [storage.options.overlay] table of storage.conf when --root is given, so
#   the mount program is also passed as --storage-opt overlay.mount_program=... (`pm` does both).
# - The rootless test runs podman as an ordinary user (AS_USER): the same `pm`, through setpriv,
#   with HOME and XDG_RUNTIME_DIR in the scratch directory.
# - Checks are counted: ok/bad/expect_eq; `summary` prints "N passed, N failed" and exits.
# Besides podman, runc and uidmap, only bash, coreutils, util-linux (unshare, findmnt, setpriv),
# attr (getfattr) and, for the slow test, debootstrap are used; missing packages are installed.

PODMAN_TEST=${PODMAN_TEST:-podman}
PODMAN_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STRATA_SRC=${STRATA_SRC:-$(cd "$PODMAN_LIB_DIR/../.." && pwd)}
STRATA_BUILD=${STRATA_BUILD:-$STRATA_SRC/build}
STRATA_FS=${STRATA_FS:-$STRATA_BUILD/strata-fs}
export STRATA_SRC STRATA_BUILD

PASSED=0
FAILED=0

skip() { echo "SKIP: $PODMAN_TEST: $*"; exit 77; }
die() { echo "FAIL: $PODMAN_TEST: $*" >&2; exit 1; }
ok() { PASSED=$((PASSED + 1)); echo "  ok   $*"; }
bad() { FAILED=$((FAILED + 1)); echo "  FAIL $*"; }
note() { echo "  ...  $*"; }
# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
  if [[ $3 == "$2" ]]; then ok "$1"; else
    bad "$1"
    printf '         expected: %s\n         actual:   %s\n' "${2//$'\n'/\\n}" "${3//$'\n'/\\n}"
  fi
}
# expect_line WHAT LINE TEXT: LINE is one whole line of TEXT
expect_line() {
  if grep -qxF -- "$2" <<<"$3"; then ok "$1"; else
    bad "$1"
    printf '         no line "%s" in:\n' "$2"
    # shellcheck disable=SC2001  # a prefix on every line
    sed 's/^/           | /' <<<"$3"
  fi
}
summary() {
  local secs=$((SECONDS))
  echo "$PODMAN_TEST: $PASSED passed, $FAILED failed (${secs}s)"
  ((FAILED == 0)) || exit 1
  exit 0
}

# ------------------------------------------------------------------------------------------------
# preconditions

require_root_and_fuse() {
  ((EUID == 0)) || skip "needs root (podman as root, a private mount namespace, package installs)"
  [[ -c /dev/fuse ]] || skip "/dev/fuse is missing"
  [[ -x $STRATA_FS ]] || die "no daemon at $STRATA_FS (build first: scripts/build)"
}

# ensure_packages PKG...: install the Debian packages that are missing; apt-get update only when
# the first attempt fails (an empty or stale package list).
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "$PODMAN_TEST: installing ${missing[*]} (apt-get)"
  local log
  log=$(mktemp)
  local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300 install --no-install-recommends)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >"$log" 2>&1; then
    apt-get -q -o DPkg::Lock::Timeout=300 update >>"$log" 2>&1 || true
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}" >>"$log" 2>&1; then
      tail -20 "$log" >&2
      rm -f "$log"
      return 1
    fi
  fi
  rm -f "$log"
}

# podman 4.3 needs an OCI runtime; crun 1.8 refuses to start containers on these machines' cgroup
# setup, so runc is installed and named in containers.conf. uidmap brings newuidmap/newgidmap.
ensure_podman() {
  ensure_packages podman runc uidmap || die "apt-get install podman runc uidmap failed (see above)"
  command -v podman >/dev/null || die "podman is not on PATH after installing it"
}

# ------------------------------------------------------------------------------------------------
# the private mount namespace

PODMAN_COVERED_DIRS=(/var/lib/containers /run/containers /run/libpod)

# enter_namespace "$@" (call it with the script's arguments, before anything else is done):
# re-runs the script in a private mount namespace and, once it is over, removes what podman leaves
# outside it: directories made only as tmpfs mount points, and its cgroups (libpod_parent).
enter_namespace() {
  [[ -n ${STRATA_PODMAN_NS:-} ]] && return 0
  command -v unshare >/dev/null || die "unshare (util-linux) is missing"
  local made=() d cg_before
  for d in "${PODMAN_COVERED_DIRS[@]}"; do
    if [[ ! -e $d ]]; then mkdir -p "$d" && made+=("$d"); fi
  done
  cg_before=$(ls -d /sys/fs/cgroup/*/libpod_parent /sys/fs/cgroup/libpod_parent 2>/dev/null || true)
  local rc=0
  STRATA_PODMAN_NS=1 unshare -m --propagation private -- "$0" "$@" || rc=$?
  for d in "${made[@]}"; do rmdir "$d" 2>/dev/null || echo "$PODMAN_TEST: note: $d is not empty, left in place"; done
  # podman's cgroupfs manager leaves empty libpod_parent[/conmon] cgroups behind; remove the ones
  # this test made (those in use by some other podman stay: rmdir refuses).
  local cg
  for cg in /sys/fs/cgroup/*/libpod_parent /sys/fs/cgroup/libpod_parent; do
    [[ -d $cg ]] || continue
    grep -qxF -- "$cg" <<<"$cg_before" && continue
    find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  exit "$rc"
}

# prepare_namespace: inside the namespace, tmpfs over podman's global directories, and "/" made
# shared again (rootless podman warns otherwise); the peer groups are new, local to this
# namespace and to the ones podman makes from it, so nothing propagates to the host.
prepare_namespace() {
  local d
  [[ -n ${STRATA_PODMAN_NS:-} ]] || die "prepare_namespace outside the private mount namespace"
  for d in "${PODMAN_COVERED_DIRS[@]}"; do
    [[ -d $d ]] && mount -t tmpfs -o mode=0755 "strata-podman-test" "$d"
  done
  mount --make-rshared /
}

# ------------------------------------------------------------------------------------------------
# scratch directory, stores, the podman command

# new_scratch: SCRATCH, world-traversable (the rootless user works below it), on the disk rather
# than on a tmpfs /tmp (overlay layers want a real filesystem with xattrs and d_type). Paths stay
# short: podman 4.3 refuses a runroot longer than 50 characters (hence stores named sf, fo...).
new_scratch() {
  SCRATCH=$(mktemp -d "${STRATA_PODMAN_TMP:-/var/tmp}/strata-pm.XXXXXX")
  chmod 0755 "$SCRATCH"
  mkdir -p "$SCRATCH/tmp"
  trap cleanup EXIT
}

AS_USER=()       # empty: podman runs as root; else the setpriv prefix of the rootless user
STORES=()        # names of the stores made, for cleanup
STORE=""         # the current store
MOUNT_PROGRAM="" # its mount program

# use_store NAME PROGRAM: a podman store $SCRATCH/NAME with PROGRAM as mount_program; it becomes
# the one `pm` uses. The configuration files are written once per store.
use_store() {
  STORE=$SCRATCH/$1
  MOUNT_PROGRAM=$2
  if [[ ! -d $STORE ]]; then
    mkdir -p "$STORE"/{conf,graph,run,home,xdg,tmp,networks}
    chmod 0700 "$STORE/xdg"
    cat >"$STORE/conf/storage.conf" <<EOF
# Throwaway configuration of strata's podman tests.
[storage]
driver = "overlay"
graphroot = "$STORE/graph"
runroot = "$STORE/run"

[storage.options.overlay]
mount_program = "$MOUNT_PROGRAM"
EOF
    cat >"$STORE/conf/containers.conf" <<EOF
# crun 1.8 refuses to start containers on these machines' cgroup setup: runc. podman's default
# rlimits exceed the hard limits here: lower ones.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$STORE/run/events.log"
tmp_dir = "$STORE/run/libpod"

[network]
network_config_dir = "$STORE/networks"
EOF
    : >"$STORE/conf/registries.conf"
    echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$STORE/conf/policy.json"
    STORES+=("$STORE")
    if ((${#AS_USER[@]})); then chown -R "$TEST_UID:$TEST_GID" "$STORE"; fi
  fi
}

# pm ARGS...: podman on the current store (as the rootless user when AS_USER is set).
pm() {
  "${AS_USER[@]}" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$STORE/home" XDG_RUNTIME_DIR="$STORE/xdg" TMPDIR="$STORE/tmp" \
    CONTAINERS_STORAGE_CONF="$STORE/conf/storage.conf" \
    CONTAINERS_CONF="$STORE/conf/containers.conf" \
    CONTAINERS_REGISTRIES_CONF="$STORE/conf/registries.conf" \
    podman --root "$STORE/graph" --runroot "$STORE/run" --storage-driver overlay \
    --storage-opt "overlay.mount_program=$MOUNT_PROGRAM" "$@"
}

# pm_run ARGS...: podman run with no network, and no pull: a missing image is an error at once
# rather than three attempts at a registry named localhost.
pm_run() { pm run --pull=never --network none "$@"; }

# pm_build ARGS...: podman build reads the signature policy only from its own flag.
pm_build() { pm build --pull=never --signature-policy "$STORE/conf/policy.json" --network none "$@"; }

# in_store_ns CMD...: run CMD where the store's mounts are visible: here for root, inside
# `podman unshare` (the rootless user and mount namespace) for the rootless user.
in_store_ns() {
  if ((${#AS_USER[@]})); then pm unshare "$@"; else "$@"; fi
}

# import_rootfs DIR NAME: DIR as a one-layer image, every file owned by root inside the image
# (the copy may belong to the test user on disk).
import_rootfs() {
  if ! tar --numeric-owner --owner=0 --group=0 -C "$1" -c . | pm import - "$2" >"$SCRATCH/import.log" 2>&1; then
    sed 's/^/         /' "$SCRATCH/import.log"
    return 1
  fi
}

# check_info: podman sees the overlay driver with our mount program; it ran PROGRAM --version.
check_info() {
  local info want_name=$1
  info=$(pm info --format '{{.Store.GraphDriverName}}|{{json .Store.GraphOptions}}' 2>&1)
  expect_eq "podman info: graph driver overlay" overlay "${info%%|*}"
  if [[ $info == *"\"Executable\":\"$MOUNT_PROGRAM\""*"\"Version\":\"$want_name"* ]]; then
    ok "podman info: overlay.mount_program is $MOUNT_PROGRAM, version '$want_name...'"
  else
    bad "podman info: overlay.mount_program is $MOUNT_PROGRAM, version '$want_name...'"
    echo "         got: $info"
  fi
}

# daemon_pids_for DIR: pids of processes whose command line mentions DIR and whose executable is
# the current mount program.
daemon_pids_for() {
  local pid exe
  for pid in $(pgrep -f -- "$1"); do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    [[ $exe == "$(readlink -f "$MOUNT_PROGRAM")" ]] && echo "$pid"
  done
}

# wait_gone PID...: up to 10 s for the processes to exit.
wait_gone() {
  local i pid alive
  for ((i = 0; i < 100; i++)); do
    alive=0
    for pid in "$@"; do
      if [[ -d /proc/$pid ]] && [[ $(awk '/^State:/{print $2}' "/proc/$pid/status" 2>/dev/null) != Z ]]; then alive=1; fi
    done
    ((alive)) || return 0
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------------------------------------------
# the busybox rootfs

# busybox_rootfs DEST: a copy of the busybox rootfs at DEST. scripts/make-rootfs builds (and
# caches in $STRATA_BUILD/rootfs/busybox) when it exists; otherwise it is built here the same way:
# Debian's busybox-static, one symlink per applet, a minimal /etc.
busybox_rootfs() {
  local dest=$1 cache=$STRATA_BUILD/rootfs/busybox
  if [[ -x $STRATA_SRC/scripts/make-rootfs ]]; then
    "$STRATA_SRC/scripts/make-rootfs" --if-missing "$cache" >"$SCRATCH/make-rootfs.log" 2>&1 ||
      { cat "$SCRATCH/make-rootfs.log" >&2; die "scripts/make-rootfs $cache failed"; }
    cp -a "$cache" "$dest"
    return
  fi
  local work=$SCRATCH/busybox-deb
  mkdir -p "$work" && chmod 0755 "$work"  # apt-get download drops to _apt
  (cd "$work" && apt-get download -q busybox-static >/dev/null 2>&1) ||
    { apt-get update -q >/dev/null 2>&1; (cd "$work" && apt-get download -q busybox-static >/dev/null 2>&1); } ||
    die "apt-get download busybox-static failed"
  dpkg-deb -x "$work"/busybox-static_*.deb "$work/pkg"
  mkdir -p "$dest"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,run,var/tmp}
  chmod 1777 "$dest/tmp" "$dest/var/tmp"
  install -m 0755 "$work/pkg/bin/busybox" "$dest/bin/busybox"
  local applet
  while read -r applet; do
    [[ -n $applet && $applet != bin/busybox && ! -e $dest/$applet && ! -L $dest/$applet ]] || continue
    mkdir -p "$(dirname "$dest/$applet")"
    ln -s /bin/busybox "$dest/$applet"
  done < <("$dest/bin/busybox" --list-full)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dest/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dest/etc/group"
}

# add_doc_tree ROOTFS N: N package directories in /usr/share/doc, each with a copyright file, a
# changelog and a README subdirectory, with Debian-like names long enough that one getdents(2)
# buffer of 4 KiB does not hold the listing (podman's naive diff reads directories in such chunks).
add_doc_tree() {
  local root=$1 n=$2 i d
  for ((i = 1; i <= n; i++)); do
    d=$root/usr/share/doc/libexample-package-$(printf '%03d' "$i")
    mkdir -p "$d/examples"
    echo "Copyright $i" >"$d/copyright"
    echo "changes $i" >"$d/changelog.Debian"
    echo "example $i" >"$d/examples/README"
  done
}

DOC_CONTAINERFILE='FROM %s
RUN rm -rf /usr/share/doc && mkdir /usr/share/doc && touch /usr/share/doc/only
'

# ------------------------------------------------------------------------------------------------
# scenarios shared by the root and the rootless tests

# make_test_image NAME [DOC_DIRS]: the busybox rootfs plus a few files to change and delete
# (/etc/motd, /srv/gone, /srv/keep, /srv/tree/...), and DOC_DIRS package directories in
# /usr/share/doc, imported into the current store as localhost/NAME.
make_test_image() {
  local name=$1 docs=${2:-0} root=$SCRATCH/rootfs-$1
  if [[ ! -d $root ]]; then
    busybox_rootfs "$root"
    echo "strata podman test" >"$root/etc/motd"
    mkdir -p "$root/srv/tree/a/b"
    echo gone >"$root/srv/gone"
    echo keep >"$root/srv/keep"
    echo deep >"$root/srv/tree/a/b/file"
    ((docs > 0)) && add_doc_tree "$root" "$docs"
  fi
  import_rootfs "$root" "localhost/$name" || { bad "podman import of $name"; return 1; }
}

# run_scenario: podman run on strata-fs: write, delete, exit status, podman diff, commit, and the
# daemon behind a running container's rootfs.
run_scenario() {
  local img=localhost/busybox-test out rc diff merged fstype pids cmdline
  make_test_image busybox-test || return

  out=$(pm_run --rm "$img" sh -c \
    'echo written >/root/new && cat /root/new && rm /srv/gone && [ ! -e /srv/gone ] && echo deleted; exit 7' 2>&1)
  rc=$?
  expect_eq "run --rm: a file written reads back, an image file deleted is gone" $'written\ndeleted' "$out"
  expect_eq "run --rm: the container's exit status comes back (sh -c 'exit 7')" 7 "$rc"
  out=$(pm_run --rm "$img" sh -c 'cat /srv/gone; ls -A /root' 2>&1)
  expect_eq "the image is untouched by the removed container" gone "$out"

  out=$(pm_run --name keep "$img" sh -c \
    'echo added >/added && echo changed >>/etc/motd && rm /srv/gone && rm -r /srv/tree' 2>&1) ||
    bad "run (kept container) failed: $out"
  diff=$(pm diff keep 2>&1)
  expect_line "podman diff: A /added" "A /added" "$diff"
  expect_line "podman diff: C /etc/motd" "C /etc/motd" "$diff"
  expect_line "podman diff: D /srv/gone" "D /srv/gone" "$diff"
  expect_line "podman diff: D /srv/tree" "D /srv/tree" "$diff"
  if grep -q '^[ACD] /srv/keep$' <<<"$diff"; then bad "podman diff lists the untouched /srv/keep"; else ok "podman diff: /srv/keep untouched"; fi

  out=$(pm commit -q keep localhost/committed 2>&1) || bad "podman commit failed: $out"
  out=$(pm_run --rm localhost/committed sh -c 'cat /added; tail -n 1 /etc/motd; ls -A /srv' 2>&1)
  expect_eq "the committed image has the addition, the change and the deletions" $'added\nchanged\nkeep' "$out"

  # A running --rm container: its rootfs is a fuse.strata-fs mount served by a daemon running
  # the mount program, with podman's options (volatile, an empty element); the daemon exits when
  # podman unmounts.
  out=$(pm_run --rm -d --name sleeper "$img" sleep 600 2>&1) || bad "run -d failed: $out"
  merged=$(pm inspect sleeper --format '{{.GraphDriver.Data.MergedDir}}' 2>&1)
  fstype=$(in_store_ns findmnt -n -o FSTYPE --mountpoint "$merged" 2>&1)
  expect_eq "a running container's rootfs is a fuse.strata-fs mount" fuse.strata-fs "$fstype"
  pids=$(daemon_pids_for "$merged")
  if [[ -n $pids ]]; then
    ok "a $MOUNT_PROGRAM daemon serves it (pid ${pids//$'\n'/ })"
    if ((${#AS_USER[@]})); then
      expect_eq "the daemon runs as the rootless user (uid $TEST_UID)" "$TEST_UID" "$(stat -c %u "/proc/${pids%%$'\n'*}")"
    fi
    cmdline=$(tr '\0' ' ' <"/proc/${pids%%$'\n'*}/cmdline")
    note "podman ran: ${cmdline//$STORE/\$STORE}"
    if [[ $cmdline == *,volatile* ]]; then ok "podman passed volatile for a --rm container"; else bad "no volatile in: $cmdline"; fi
  else
    bad "no process running $MOUNT_PROGRAM for $merged"
    pgrep -af -- "$merged" | sed 's/^/         /'
  fi
  pm stop -t 0 sleeper >/dev/null 2>&1
  pm rm -f -t 0 sleeper >/dev/null 2>&1
  # shellcheck disable=SC2086  # one pid per word
  if [[ -n $pids ]]; then
    if wait_gone $pids; then ok "the daemon exited once podman unmounted"; else bad "daemon $pids still runs after the container was removed"; fi
  fi
}

# run_scenario_root_extras: what only root can look at from outside: podman mount of a stopped
# container (read-write) and of an image (read-only, no upperdir).
run_scenario_root_extras() {
  local merged fstype opts pids out
  merged=$(pm mount keep 2>&1) || { bad "podman mount keep: $merged"; return; }
  fstype=$(findmnt -n -o FSTYPE --mountpoint "$merged")
  expect_eq "podman mount: fuse.strata-fs" fuse.strata-fs "$fstype"
  out=$(cat "$merged/added" 2>&1; [[ -e $merged/srv/gone ]] && echo "gone is there")
  expect_eq "podman mount: the container's merged tree" added "$out"
  pids=$(daemon_pids_for "$merged")
  pm umount keep >/dev/null
  # shellcheck disable=SC2086
  if [[ -n $pids ]] && wait_gone $pids; then ok "podman umount: the daemon exited"; else bad "podman umount: daemon '$pids' still there or never seen"; fi

  merged=$(pm image mount localhost/committed 2>&1) || { bad "podman image mount: $merged"; return; }
  fstype=$(findmnt -n -o FSTYPE --mountpoint "$merged")
  opts=$(findmnt -n -o OPTIONS --mountpoint "$merged")
  expect_eq "podman image mount: fuse.strata-fs" fuse.strata-fs "$fstype"
  if [[ ,$opts, == *,ro,* ]]; then ok "podman image mount: read-only (no upperdir)"; else bad "image mount options: $opts"; fi
  out=$(cat "$merged/added" 2>&1; ls -A "$merged/srv")
  expect_eq "podman image mount: the image's merged tree" $'added\nkeep' "$out"
  if touch "$merged/new" 2>/dev/null; then bad "podman image mount: a write succeeded"; else ok "podman image mount: writes fail"; fi
  pm image umount localhost/committed >/dev/null
}

# doc_build BASE_IMAGE TAG: podman build of the /usr/share/doc Containerfile on BASE_IMAGE; prints
# what /usr/share/doc of the result lists (one line), or the error.
doc_build() {
  local base=$1 tag=$2 ctx=$STORE/ctx-${2##*/} out
  mkdir -p "$ctx"
  # shellcheck disable=SC2059  # the format is ours
  printf "$DOC_CONTAINERFILE" "$base" >"$ctx/Containerfile"
  ((${#AS_USER[@]})) && chown -R "$TEST_UID:$TEST_GID" "$ctx"
  out=$(pm_build -q -t "$tag" "$ctx" 2>&1) || { echo "build failed: $out"; return 1; }
  pm_run --rm "$tag" ls -A /usr/share/doc 2>&1 | tr '\n' ' ' | sed 's/ $//'
}

# doc_scenario BASE_IMAGE DOC_DIRS: the opaque-directory case through podman build, and through
# run + diff + commit, checking what strata-fs left in the container's upper directory.
doc_scenario() {
  local base=$1 ndocs=$2 listing diff upper xattr value deleted
  listing=$(doc_build "$base" localhost/doc-only)
  expect_eq "podman build (rm -rf /usr/share/doc, mkdir, touch only): the image lists only 'only'" only "$listing"

  pm_run --name doc "$base" sh -c \
    'rm -rf /usr/share/doc && mkdir /usr/share/doc && touch /usr/share/doc/only' >/dev/null 2>&1 ||
    bad "podman run (doc container) failed"
  diff=$(pm diff doc 2>&1)
  expect_line "podman diff: A /usr/share/doc/only" "A /usr/share/doc/only" "$diff"
  deleted=$(grep -c '^D /usr/share/doc/[^/]*$' <<<"$diff")
  expect_eq "podman diff: every package directory deleted (D)" "$ndocs" "$deleted"
  # containers/storage reads the kernel overlay's opaque marker: trusted.overlay.opaque as root,
  # user.overlay.opaque rootless (GetOverlayXattrName); it must be on the recreated directory.
  upper=$(pm container inspect doc --format '{{.GraphDriver.Data.UpperDir}}')
  if ((${#AS_USER[@]})); then xattr=user.overlay.opaque; else xattr=trusted.overlay.opaque; fi
  value=$(in_store_ns getfattr --absolute-names --only-values -n "$xattr" "$upper/usr/share/doc" 2>&1)
  expect_eq "the upper's /usr/share/doc carries $xattr=y" y "$value"
  pm commit -q doc localhost/doc-committed >/dev/null 2>&1 || bad "podman commit (doc) failed"
  listing=$(pm_run --rm localhost/doc-committed ls -A /usr/share/doc 2>&1 | tr '\n' ' ' | sed 's/ $//')
  expect_eq "podman commit of the same container: lists only 'only'" only "$listing"
  pm rm -f doc >/dev/null 2>&1
}

# ------------------------------------------------------------------------------------------------
# cleanup, on every exit path

cleanup() {
  local rc=$? s pid mnt
  set +e
  for s in "${STORES[@]}"; do
    STORE=$s
    pm rm -a -f -t 0 >/dev/null 2>&1
    if ((${#AS_USER[@]} == 0)); then
      pm umount -a -f >/dev/null 2>&1
      pm image umount -a -f >/dev/null 2>&1
    fi
    # rootless podman keeps a pause process (catatonit) holding its namespaces: it was started by
    # this test, so it is ended, by its pid.
    # (its pid file is in tmp_dir, $s/run/libpod, or under XDG_RUNTIME_DIR)
    while read -r pidfile; do
      pid=$(cat "$pidfile")
      [[ $pid =~ ^[0-9]+$ ]] && kill "$pid" 2>/dev/null
    done < <(find "$s/run" "$s/xdg" -name pause.pid 2>/dev/null)
  done
  # Any mount left under the scratch directory (this namespace only), innermost first; the daemons
  # behind them exit when unmounted. Whatever still runs from our scratch is ended by pid.
  while read -r mnt; do umount -l "$mnt" 2>/dev/null; done < <(
    awk -v d="$SCRATCH/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  for pid in $(pgrep -f -- "$SCRATCH/"); do
    [[ $pid == "$$" ]] || kill "$pid" 2>/dev/null
  done
  [[ -n ${RESTORE_FUSE_MODE:-} ]] && chmod "$RESTORE_FUSE_MODE" /dev/fuse
  [[ -n ${SCRATCH:-} && -d $SCRATCH ]] && rm -rf --one-file-system -- "$SCRATCH"
  exit "$rc"
}

#!/usr/bin/env bash
# The slow variant of podman_build.sh, run only with STRATA_SLOW=1: a Debian minbase image made by
# debootstrap (bookworm, from the mirror apt already uses), the /usr/share/doc Containerfile built
# on it with strata-fs as mount_program (the built image must list only `only`), and the same
# with fuse-overlayfs for comparison (shown, not judged: 1.10 has been seen to bring back the
# alphabetically first package directory here). The debootstrap tree is cached as a tarball in
# $STRATA_BUILD/rootfs/ (about 200 MB); the first run takes a few minutes. Helpers: test/podman/.
PODMAN_TEST=podman_minbase
SUITE=${STRATA_MINBASE_SUITE:-bookworm}
# shellcheck source-path=SCRIPTDIR source=../podman/podmanlib.bash
source "$(dirname "${BASH_SOURCE[0]}")/../podman/podmanlib.bash"
[[ ${STRATA_SLOW:-0} == 1 ]] || skip "slow test: set STRATA_SLOW=1 to run it (debootstrap of a minbase $SUITE image)"
require_root_and_fuse
enter_namespace "$@"
ensure_podman
ensure_packages attr debootstrap || die "apt-get install attr debootstrap failed"
prepare_namespace
new_scratch

# The Debian mirror apt uses for SUITE: a one-line "deb URI SUITE ..." or a deb822 stanza whose
# Suites list SUITE itself (not SUITE-security, nor a third-party repository's own suite names).
debian_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk -v s="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == s) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v s="$SUITE" 'BEGIN { RS = ""; FS = "\n" } {
      uri = ""; ok = 0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^URIs:/) { split($i, u, /[ \t]+/); uri = u[2] }
        if ($i ~ /^Suites:/) { n = split($i, w, /[ \t]+/); for (j = 2; j <= n; j++) if (w[j] == s) ok = 1 }
      }
      if (ok && uri != "") { print uri; exit } }' "$f"
  done
}

cache=$STRATA_BUILD/rootfs/minbase-$SUITE.tar
if [[ ! -s $cache ]]; then
  mirror=$(debian_mirror | head -n 1)
  [[ -n $mirror ]] || die "no Debian mirror for $SUITE in /etc/apt/sources.list{,.d}"
  echo "$PODMAN_TEST: debootstrap --variant=minbase $SUITE from $mirror (cached afterwards in $cache)"
  if ! debootstrap --variant=minbase "$SUITE" "$SCRATCH/minbase" "$mirror" >"$SCRATCH/debootstrap.log" 2>&1; then
    tail -20 "$SCRATCH/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  mkdir -p "$(dirname "$cache")"
  tar --numeric-owner -C "$SCRATCH/minbase" -cf "$cache.part" . && mv "$cache.part" "$cache"
  rm -rf --one-file-system "$SCRATCH/minbase"
fi
ndocs=$(tar -tf "$cache" | grep -c '^\./usr/share/doc/[^/]\+/\{0,1\}$')

use_store sf "$STRATA_FS"
echo "$PODMAN_TEST: podman $(pm version --format '{{.Client.Version}}') with mount_program=$STRATA_FS; minbase $SUITE, $ndocs entries in /usr/share/doc"
check_info strata-fs
if pm import - localhost/minbase <"$cache" >"$SCRATCH/import.log" 2>&1; then
  ok "podman import of the minbase image"
  # shellcheck disable=SC2016  # ${Status} is dpkg-query's, not ours
  out=$(pm_run --rm localhost/minbase sh -c 'dpkg-query -W -f="\${Status}\n" | grep -c "install ok installed"' 2>&1)
  if [[ $out =~ ^[0-9]+$ ]] && ((out > 50)); then ok "dpkg in the container sees $out installed packages"; else bad "dpkg-query in the container: $out"; fi
  doc_scenario localhost/minbase "$ndocs"
else
  bad "podman import of the minbase image: $(tail -n 3 "$SCRATCH/import.log")"
fi

if ensure_packages fuse-overlayfs >/dev/null 2>&1 && [[ -x /usr/bin/fuse-overlayfs ]]; then
  use_store fo /usr/bin/fuse-overlayfs
  version=$(/usr/bin/fuse-overlayfs --version 2>&1 | sed -n 's/^fuse-overlayfs: version /fuse-overlayfs /p')
  if pm import - localhost/minbase <"$cache" >/dev/null 2>&1; then
    note "for comparison, $version as mount_program: /usr/share/doc lists: $(doc_build localhost/minbase localhost/doc-only)"
  fi
fi
summary

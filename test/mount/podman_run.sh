#!/usr/bin/env bash
# podman (Debian 12's 4.3, with runc) runs containers on strata-fs as containers/storage's
# mount_program, as root: the busybox rootfs imported as an image; a --rm run writes, deletes and
# returns its exit status; a kept container's podman diff shows A/C/D; podman commit keeps them;
# a running container's rootfs is a fuse.strata-fs mount served by the daemon, with the options
# podman passes (volatile, an empty element); podman mount and podman image mount (read-only).
# podman, runc and uidmap are installed with apt-get when missing. Helpers: test/podman/.
PODMAN_TEST=podman_run
# shellcheck source-path=SCRIPTDIR source=../podman/podmanlib.bash
source "$(dirname "${BASH_SOURCE[0]}")/../podman/podmanlib.bash"
require_root_and_fuse
enter_namespace "$@"
ensure_podman
prepare_namespace
new_scratch

use_store sf "$STRATA_FS"
echo "$PODMAN_TEST: podman $(pm version --format '{{.Client.Version}}') with mount_program=$STRATA_FS"
check_info strata-fs
run_scenario
run_scenario_root_extras

# podman 4.3 with --uidmap, as root: its containers/storage makes idmapped mounts of the lower
# layers (mapped/N) and also passes uidmapping=/gidmapping= to the mount program, so ids are
# shifted twice and runc fails (EACCES on /run/.containerenv) with fuse-overlayfs as well; later
# containers/storage skips the idmapped mounts when a mount_program is set. Shown, not judged.
out=$(pm_run --rm --uidmap 0:200000:65536 --gidmap 0:200000:65536 \
  localhost/busybox-test sh -c 'touch /f && ls -n /f' 2>&1)
rc=$?
if ((rc == 0)); then
  note "podman run --uidmap 0:200000:65536 works: $out"
elif [[ $out == *.containerenv*"permission denied"* ]]; then
  note "podman run --uidmap 0:200000:65536: runc gets EACCES on /run/.containerenv, as with fuse-overlayfs (podman 4.3 maps the ids twice; not judged)"
else
  note "podman run --uidmap 0:200000:65536 failed (status $rc, not judged): $(tail -n 1 <<<"$out")"
fi
summary

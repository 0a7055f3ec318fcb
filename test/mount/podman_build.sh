#!/usr/bin/env bash
# podman build on strata-fs, as root: an image whose /usr/share/doc holds many package directories;
# a RUN step that does `rm -rf /usr/share/doc && mkdir /usr/share/doc && touch /usr/share/doc/only`;
# the built image must list only `only`. The same through run + podman diff + commit, and the
# recreated directory in the container's upper directory must carry the kernel overlay's opaque
# marker (trusted.overlay.opaque=y), which containers/storage reads. fuse-overlayfs runs the same
# build as mount_program for comparison: its result is shown, not judged (1.10 gets the Debian
# minbase case wrong, see podman_minbase.sh). Helpers: test/podman/.
PODMAN_TEST=podman_build
DOC_DIRS=${STRATA_PODMAN_DOC_DIRS:-150}
# shellcheck source-path=SCRIPTDIR source=../podman/podmanlib.bash
source "$(dirname "${BASH_SOURCE[0]}")/../podman/podmanlib.bash"
require_root_and_fuse
enter_namespace "$@"
ensure_podman
ensure_packages attr || die "apt-get install attr (getfattr) failed"
prepare_namespace
new_scratch

use_store sf "$STRATA_FS"
echo "$PODMAN_TEST: podman $(pm version --format '{{.Client.Version}}') with mount_program=$STRATA_FS, $DOC_DIRS package directories"
check_info strata-fs
make_test_image busybox-doc "$DOC_DIRS"
doc_scenario localhost/busybox-doc "$DOC_DIRS"

# The same build with fuse-overlayfs, the program strata-fs stands in for.
if ensure_packages fuse-overlayfs >/dev/null 2>&1 && [[ -x /usr/bin/fuse-overlayfs ]]; then
  use_store fo /usr/bin/fuse-overlayfs
  version=$(/usr/bin/fuse-overlayfs --version 2>&1 | sed -n 's/^fuse-overlayfs: version /fuse-overlayfs /p')
  if make_test_image busybox-doc "$DOC_DIRS"; then
    note "for comparison, $version as mount_program: /usr/share/doc lists: $(doc_build localhost/busybox-doc localhost/doc-only)"
  fi
else
  note "fuse-overlayfs could not be installed: no comparison"
fi
summary

#!/usr/bin/env bash
# Runs the mounted part of scripts/demo against the built strata-fs and checks on disk what the demo
# tells: the copy-up landed in downtown's upper layer, the whiteout (a 0,0 character device) in
# uptown's, the new file in campus's, nothing else in any upper layer, the lower layers unchanged,
# and no daemon left behind. The demo printing the right story is not enough; the layers must agree.
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

((EUID == 0)) || skip "needs root (a private mount namespace and /dev/fuse)"
[[ -c /dev/fuse ]] || skip "/dev/fuse is missing"
command -v unshare >/dev/null || skip "unshare (util-linux) is missing"
unshare -m --propagation private true 2>/dev/null || skip "cannot create a mount namespace here"

src=${STRATA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${STRATA_BUILD:-$src/build}
fs=${STRATA_FS:-$build/strata-fs}
[[ -x $fs ]] || fail "no daemon at $fs (build first)"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo-smoke.XXXXXX")
trap 'rm -rf --one-file-system -- "$scratch"' EXIT
T=$scratch/demo

STRATA_BUILD=$build STRATA_FS=$fs "$src/scripts/demo" --no-build --dir "$T" ||
  fail "scripts/demo exited with status $?"

# Each upper layer holds exactly the one entry its shop changed: reading never copies up, and a
# copy-up of menu.txt must not drag anything else along.
for shop_entry in downtown:menu.txt uptown:brewing.txt campus:special.txt; do
  shop=${shop_entry%%:*} entry=${shop_entry#*:}
  listing=$(cd "$T/upper-$shop" && find . -mindepth 1 | sort | tr '\n' ' ')
  [[ $listing == "./$entry " ]] || fail "upper-$shop holds '$listing', expected only ./$entry"
done

# Copy-up: a regular file holding the base menu plus the appended line.
menu=$T/upper-downtown/menu.txt
[[ -f $menu && ! -L $menu ]] || fail "$menu is not a regular file"
# shellcheck disable=SC2016  # the literal text the demo appends
expected=$(cat "$src/examples/shops/base/menu.txt"; echo '4. Cold Brew - $5')
[[ $(cat "$menu") == "$expected" ]] || fail "$menu does not hold the base menu plus cold brew: $(cat "$menu")"

# Whiteout: the overlayfs convention, a character device with device number 0, 0.
whiteout=$T/upper-uptown/brewing.txt
[[ -c $whiteout ]] || fail "$whiteout is not a character device: $(stat -c %F "$whiteout")"
[[ $(stat -c '%t,%T' "$whiteout") == 0,0 ]] || fail "$whiteout is device $(stat -c '%t,%T' "$whiteout"), not 0,0"

# New file: only in campus's upper layer.
[[ $(cat "$T/upper-campus/special.txt") == 'Campus Special: Student Discount 20%!' ]] ||
  fail "upper-campus/special.txt has the wrong content"

# The lower layers are byte for byte the examples they were copied from, with no entry added,
# removed or changed in type.
manifest() {
  (cd "$1" && find . -mindepth 1 -printf '%y %p\n' | sort && find . -type f -exec sha256sum {} + | sort -k2)
}
for layer in base seasonal; do
  diff <(manifest "$src/examples/shops/$layer") <(manifest "$T/layers/$layer") ||
    fail "lower layer $layer differs from examples/shops/$layer after the demo"
done

# The demo's namespace is gone, so no daemon may still serve its mounts.
if pgrep -f -- "$T/merged-" >/dev/null; then
  fail "a daemon for $T is still running: $(pgrep -af -- "$T/merged-")"
fi

echo "PASS: copy-up, whiteout and new file landed in the right upper layers; lower layers unchanged"

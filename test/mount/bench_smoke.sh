#!/usr/bin/env bash
# Runs scripts/bench --smoke (tiny dataset, one repetition) on strata-fs, fuse-overlayfs and the
# kernel overlay, and checks only that it completes and that its table has a time for every
# workload on every implementation. No timing is judged here: the benchmark is for people to read.
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

((EUID == 0)) || skip "needs root (mounts, drop_caches, a private mount namespace)"
[[ -c /dev/fuse ]] || skip "/dev/fuse is missing"
command -v unshare >/dev/null || skip "unshare (util-linux) is missing"
unshare -m --propagation private true 2>/dev/null || skip "cannot create a mount namespace here"
fuse_overlayfs=${FUSE_OVERLAYFS:-/usr/bin/fuse-overlayfs}
[[ -x $fuse_overlayfs ]] || skip "fuse-overlayfs is missing ($fuse_overlayfs)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip "no kernel overlay filesystem"

src=${STRATA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
build=${STRATA_BUILD:-$src/build}
fs=${STRATA_FS:-$build/strata-fs}
[[ -x $fs ]] || fail "no daemon at $fs (build first)"

# Overlay upper directories need a filesystem with xattrs and d_type: /var/tmp, not always /tmp.
scratch=$(mktemp -d /var/tmp/strata-bench-smoke.XXXXXX)
trap 'rm -rf --one-file-system -- "$scratch"' EXIT

impls=strata,fuse-overlayfs,kernel
status=0
STRATA_BENCH_DIR=$scratch timeout 300 "$src/scripts/bench" --smoke --impls "$impls" \
  --strata-fs "$fs" --fuse-overlayfs "$fuse_overlayfs" --tsv "$scratch/smoke.tsv" \
  >"$scratch/out" 2>"$scratch/err" || status=$?
cat "$scratch/out"
((status == 0)) || { tail -20 "$scratch/err" >&2; fail "scripts/bench --smoke exited with status $status"; }

# The table: a header naming the implementations, then one row per workload with a number (seconds)
# in every implementation's column.
header=$(grep -E '^workload +strata +fuse-overlayfs +kernel( |$)' "$scratch/out") ||
  fail "no table header 'workload strata fuse-overlayfs kernel' in the output"
[[ -n $header ]]
mapfile -t workloads < <("$src/scripts/bench" --smoke --list | awk '$1 !~ /^rss-/ {print $1}')
((${#workloads[@]} >= 15)) || fail "scripts/bench --list names only ${#workloads[@]} workloads"
for w in "${workloads[@]}"; do
  row=$(awk -v w="$w" '$1 == w {print; exit}' "$scratch/out")
  [[ -n $row ]] || fail "no row for workload $w"
  read -r _ s f k _ <<<"$row"
  for cell in "$s" "$f" "$k"; do
    [[ $cell =~ ^[0-9]+\.?[0-9]*$ ]] || fail "workload $w has '$cell' where a time belongs: $row"
  done
done
for r in rss-walk-hwm rss-peak-hwm; do
  row=$(awk -v r="$r" '$1 == r {print; exit}' "$scratch/out")
  read -r _ s f _ <<<"$row"
  [[ $s =~ ^[0-9.]+$ && $f =~ ^[0-9.]+$ ]] || fail "no daemon memory in row $r: $row"
done

# The TSV: a sample for every workload on every implementation, all of them ok.
for w in "${workloads[@]}"; do
  for i in ${impls//,/ }; do
    awk -F'\t' -v w="$w" -v i="$i" '$2 == "1" && $3 == w && $4 == i && $7 == "ok" {found = 1}
      END {exit !found}' "$scratch/smoke.tsv" || fail "no ok sample of $w on $i in the TSV"
  done
done

# Every mount is gone and no daemon is left serving the scratch directory.
if grep -qF -- "$scratch" /proc/self/mountinfo; then fail "a mount under $scratch is left"; fi
if pgrep -f -- "$scratch/" >/dev/null; then fail "a daemon is still running: $(pgrep -af -- "$scratch/")"; fi

echo "PASS: scripts/bench --smoke timed ${#workloads[@]} workloads on $impls"

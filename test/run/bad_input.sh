#!/usr/bin/env bash
# strata-run's command line: --help, --version, and a one-line error naming the problem, with exit
# status 125, for each kind of bad input. Nothing here mounts (the errors come before).
# shellcheck source-path=SCRIPTDIR disable=SC2015  # ok and fail return 0: `A && ok || fail` is an if/else
TEST_NAME=bad_input
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
[[ -x $STRATA_BUILD/strata-run ]] || { echo "$TEST_NAME: FAIL: $STRATA_BUILD/strata-run is not built"; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-run-bad.XXXXXX")
trap cleanup_test EXIT
mkdir -p "$WORK/layer"
L=$WORK/layer
R=$STRATA_BUILD/strata-run

out=$("$R" --help)
expect '--help exits 0' 0 "$?"
[[ $out == "usage: strata-run --lower DIR"* ]] && ok "--help starts with the usage" || fail "--help: $out"
out=$("$R" --version)
[[ $out =~ ^strata-run\ version\ [0-9] ]] && ok "--version" || fail "--version: $out"

# bad ARGS... WANT-MESSAGE
bad() {
  local want=${*: -1} out rc
  out=$(TMPDIR=$WORK "$R" "${@:1:$#-1}" 2>&1)
  rc=$?
  if [[ $rc == 125 && $out == "$want" ]]; then ok "${*:1:$#-1}"; else fail "${*:1:$#-1}: want 125 '$want', got $rc '$out'"; fi
}
bad "strata-run: --lower: missing (usage: strata-run --lower DIR[:DIR...] COMMAND [ARG...])"
bad --lower "$L" "strata-run: no command given (usage: strata-run --lower DIR COMMAND [ARG...])"
bad --lower "$WORK/missing" sh "strata-run: --lower $WORK/missing: No such file or directory"
bad --lower "$L:$WORK/missing" sh "strata-run: --lower $WORK/missing: No such file or directory"
bad --lower "$L/" --lower= sh "strata-run: --lower: needs at least one directory"
bad --lower "$L::$L" sh "strata-run: --lower $L::$L: empty layer path"
touch "$WORK/file"
bad --lower "$WORK/file" sh "strata-run: --lower $WORK/file: Not a directory"
bad --lower "$L" --bind "$WORK/missing:/x" sh "strata-run: --bind $WORK/missing:/x: $WORK/missing: No such file or directory"
bad --lower "$L" --bind "$L" sh "strata-run: --bind $L: expected SRC:DST or SRC:DST:ro"
bad --lower "$L" --bind "$L:rel" sh "strata-run: --bind $L:rel: the destination must be an absolute path inside the container"
bad --lower "$L" --bind "$L:/x:rx" sh "strata-run: --bind $L:/x:rx: 'rx' is not ro or rw (--bind SRC:DST[:ro])"
bad --lower "$L" --bind "$L:/" sh "strata-run: --bind $L:/: cannot bind over the container's root"
bad --lower "$L" --net bridge sh "strata-run: --net 'bridge': must be host or none"
bad --lower "$L" --env NOVALUE sh "strata-run: --env 'NOVALUE': expected NAME=VALUE"
bad --lower "$L" --cwd rel sh "strata-run: --cwd 'rel': must be an absolute path inside the container"
bad --lower "$L" --hostname 'a b' sh "strata-run: --hostname 'a b': 1 to 64 letters, digits, '-', '.', '_'"
bad --lower "$L" --work "$WORK/w" sh "strata-run: --work: only meaningful with --upper"
bad --lower "$L" --trace-file "$WORK/t" sh "strata-run: --trace-file: needs --trace CATEGORIES"
bad --lower "$L" --frobnicate sh "strata-run: unknown option '--frobnicate' (see strata-run --help)"
bad --lower "$L" --hostname "strata-run: --hostname: needs a value (see strata-run --help)"
bad --lower "$L" --upper "$WORK/file/sub" sh "strata-run: --upper $WORK/file/sub: Not a directory"
[[ -z $(find "$WORK" -name 'strata-run.*') ]] && ok "no temporary directory left by the failures" \
  || fail "left: $(find "$WORK" -name 'strata-run.*')"
summary

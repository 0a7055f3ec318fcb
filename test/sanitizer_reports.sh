#!/usr/bin/env bash
# Fails when a sanitizer wrote a report into the log directory during the test run (see
# CMakeLists.txt). Without a sanitizer build there is no such directory: nothing to check.
set -u
dir=${1:?usage: sanitizer_reports.sh LOGDIR}
if [[ ! -d $dir ]]; then
  echo "no sanitizer log directory ($dir): not a sanitizer run"
  exit 0
fi
shopt -s nullglob
reports=("$dir"/*)
if ((${#reports[@]} == 0)); then
  echo "no sanitizer reports in $dir"
  exit 0
fi
echo "${#reports[@]} sanitizer report(s) in $dir:"
for r in "${reports[@]}"; do
  echo "===== $r"
  head -c 20000 "$r"
done
exit 1

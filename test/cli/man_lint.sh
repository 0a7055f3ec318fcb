#!/usr/bin/env bash
# Lint every man page in man/: `groff -ww -man -z` must exit 0 and print nothing.
# A warning there usually means a page that renders wrong on some terminal, so it fails the test.
# Exit 77 (the ctest skip code) when groff is not installed, so a skip shows up as a skip.
set -u

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if ! command -v groff >/dev/null 2>&1; then
    echo "man_lint: SKIP: groff is not installed" >&2
    exit 77
fi

shopt -s nullglob
pages=("$repo"/man/*.1)
if ((${#pages[@]} == 0)); then
    echo "man_lint: FAIL: no man pages in $repo/man" >&2
    exit 1
fi

failed=0
for page in "${pages[@]}"; do
    name=${page#"$repo"/}
    page_failed=0
    # Both the default device and the one man(1) uses on a terminal: some warnings are per device.
    for device in ps utf8; do
        warnings=$(groff -ww -man -T"$device" -z "$page" 2>&1 >/dev/null)
        rc=$?
        if ((rc != 0)) || [[ -n $warnings ]]; then
            echo "man_lint: FAIL: $name (groff -T$device exit $rc):"
            printf '%s\n' "$warnings" | sed 's/^/    /'
            page_failed=1
        fi
    done
    # Non-ASCII bytes render differently per locale; pages spell them as roff escapes instead.
    if LC_ALL=C grep -n '[^[:print:][:space:]]' "$page" >/dev/null; then
        echo "man_lint: FAIL: $name contains non-ASCII bytes:"
        LC_ALL=C grep -n '[^[:print:][:space:]]' "$page" | sed 's/^/    /'
        page_failed=1
    fi
    if ((page_failed)); then failed=1; else echo "man_lint: ok: $name"; fi
done

exit "$failed"

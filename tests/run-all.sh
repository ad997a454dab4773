#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run every test suite in tests/suites/ (TAP producers) and count results.
# The last line is "N passed, M failed[, K skipped]".
#   SANITIZE=1     run against the ASan/UBSan build
#   SUITES=pattern run only the suites whose name matches (grep -E)
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
export TOP=$top
export QEMU_WORK=${QEMU_WORK:-$top/out/qemu}
if [ "${SANITIZE:-0}" = 1 ]; then
    export QEMU_BUILD=$QEMU_WORK/build-san
else
    export QEMU_BUILD=$QEMU_WORK/build
fi
export QEMU_BINARY=$QEMU_BUILD/qemu-system-x86_64
logs=$top/out/test-logs${SANITIZE:+-san}
mkdir -p "$logs"

passed=0 failed=0 skipped=0
failed_suites=()
for suite in "$top"/tests/suites/*; do
    [ -x "$suite" ] || continue
    name=$(basename "$suite")
    if [ -n "${SUITES:-}" ] && ! echo "$name" | grep -Eq "$SUITES"; then
        continue
    fi
    echo "# --- suite $name"
    start=$(date +%s)
    timeout --kill-after=30 "${SUITE_TIMEOUT:-1800}" "$suite" < /dev/null \
        > "$logs/$name.log" 2>&1
    rc=$?
    # Show the TAP lines and diagnostics, not the noise.
    grep -E '^(ok|not ok|#|Bail out)' "$logs/$name.log" | grep -v '^# Start of\|^# End of'
    p=$(grep -Ec '^ok ' "$logs/$name.log")
    s=$(grep -Eic '^ok .*# *skip' "$logs/$name.log")
    f=$(grep -Ec '^not ok ' "$logs/$name.log")
    p=$((p - s))
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        echo "not ok - suite $name exited with status $rc (log: $logs/$name.log)"
        tail -20 "$logs/$name.log" | sed 's/^/#   /'
        f=1
    fi
    if [ $((p + s + f)) = 0 ]; then
        echo "not ok - suite $name ran no test (log: $logs/$name.log)"
        f=1
    fi
    [ "$f" = 0 ] || failed_suites+=("$name")
    echo "# suite $name: $p passed, $f failed, $s skipped in $(( $(date +%s) - start )) s"
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done
if [ ${#failed_suites[@]} -gt 0 ]; then
    echo "# failed suites: ${failed_suites[*]} (logs in $logs)"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]

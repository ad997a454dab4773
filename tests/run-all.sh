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
san_logs=
if [ "${SANITIZE:-0}" = 1 ]; then
    export QEMU_BUILD=$QEMU_WORK/build-san
    logs=$top/out/test-logs-san
    # Every sanitized process (QEMU, server, client, fuzzers) stops at its
    # first report and writes it to $san_logs/<suite>.<pid>: a suite that
    # leaves one there fails, whatever its TAP says.
    san_logs=$logs/sanitizer
    rm -rf "$san_logs"
    mkdir -p "$san_logs"
    export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:detect_leaks=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
else
    export QEMU_BUILD=$QEMU_WORK/build
    logs=$top/out/test-logs
fi
export QEMU_BINARY=$QEMU_BUILD/qemu-system-x86_64
mkdir -p "$logs"

passed=0 failed=0 skipped=0
failed_suites=()
for suite in "$top"/tests/suites/*; do
    [ -f "$suite" ] && [ -x "$suite" ] || continue
    name=$(basename "$suite")
    if [ -n "${SUITES:-}" ] && ! echo "$name" | grep -Eq "$SUITES"; then
        continue
    fi
    echo "# --- suite $name"
    start=$(date +%s)
    if [ -n "$san_logs" ]; then
        san_opts="log_path=$san_logs/$name"
        ASAN_OPTIONS="$ASAN_OPTIONS:$san_opts" UBSAN_OPTIONS="$UBSAN_OPTIONS:$san_opts" \
            timeout --kill-after=30 "${SUITE_TIMEOUT:-1800}" "$suite" \
            < /dev/null > "$logs/$name.log" 2>&1
    else
        timeout --kill-after=30 "${SUITE_TIMEOUT:-1800}" "$suite" \
            < /dev/null > "$logs/$name.log" 2>&1
    fi
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
    # (files with only warnings, e.g. ASan's about QEMU's coroutines,
    # are not reports)
    reports=()
    if [ -n "$san_logs" ]; then
        mapfile -t reports < <(grep -l -E 'ERROR: [A-Za-z]*Sanitizer|runtime error:' \
                               "$san_logs/$name".* 2> /dev/null)
    fi
    if [ ${#reports[@]} -gt 0 ]; then
        echo "not ok - suite $name: ${#reports[@]} sanitizer report(s): ${reports[*]}"
        grep -h -m3 -E 'ERROR: |runtime error|SUMMARY' "${reports[@]}" |
            head -20 | sed 's/^/#   /'
        f=$((f + 1))
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

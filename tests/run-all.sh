#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run every test suite in tests/suites/ (TAP producers) and count results.
# The last line is "N passed, M failed, K skipped, T todo".
#   SANITIZE=1     run against the ASan/UBSan build
#   SUITES=pattern run only the suites whose name matches (grep -E); a
#                  pattern that matches no suite is an error
#   TEST_LOGS=dir  where the suites' logs go (default out/test-logs, which
#                  out/ shares between worktrees: set it when several run)
#   ALLOWED_SKIPS=file  fail on every skip that no line of the file allows
#                  (CI: .ci/allowed-skips; the format is described there)
# Each suite runs under tests/reap.py: a process it leaves behind fails it.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
export TOP=$top
export QEMU_WORK=${QEMU_WORK:-$top/out/qemu}
san_logs=
if [ "${SANITIZE:-0}" = 1 ]; then
    export QEMU_BUILD=$QEMU_WORK/build-san
    logs=${TEST_LOGS:-$top/out/test-logs-san}
    # Every sanitized process (QEMU, server, client, fuzzers) stops at its
    # first report and writes it to $san_logs/<suite>.<pid>: a suite that
    # leaves one there fails, whatever its TAP says.
    san_logs=$logs/sanitizer
    rm -rf "$san_logs"
    mkdir -p "$san_logs"
    export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:detect_leaks=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:suppressions=$top/tests/ubsan.supp}
else
    export QEMU_BUILD=$QEMU_WORK/build
    logs=${TEST_LOGS:-$top/out/test-logs}
fi
export QEMU_BINARY=$QEMU_BUILD/qemu-system-x86_64
mkdir -p "$logs"

# tap_count LOG: prints "PASSED SKIPPED TODO FAILED [PROBLEM]" for one
# suite's TAP.  "ok ... # SKIP" (or "# Skipped...": any word that starts
# with "skip", as in TAP) is a skip, "not ok ... # TODO" a todo (a known
# failure), "ok ... # TODO" a pass (the todo is fixed: drop the
# directive).  A comment line "# Skip..." is a skip too: something did
# not run without a test line saying so.  The suite needs exactly one
# plan "1..N" before its first test line (declared from its list of
# cases, so that a check that never ran is noticed), exactly N test
# lines and no test number twice; "1..0 # SKIP why" is a skipped suite.
# Otherwise PROBLEM says what is wrong, and the suite fails.
tap_count() {
    awk '
    function directive(line, what) {
        return tolower(line) ~ ("#[ \t]*" what)
    }
    /^Bail out!/ { bail = $0; next }
    /^1\.\.[0-9]+([ \t]*(#.*)?)?$/ {
        plans++
        planned = substr($1, 4) + 0
        if (tests > 0) late = 1
        if (planned == 0 && directive($0, "skip")) whole_skip = 1
        next
    }
    /^(not )?ok([ \t]|$)/ {
        tests++
        num = ($1 == "ok") ? $2 : $3
        if (num ~ /^[0-9]+$/) {
            if (num in seen && dup == "") dup = num
            seen[num] = 1
        }
        if ($1 == "ok") {
            if (directive($0, "skip")) s++
            else p++
        } else if (directive($0, "todo([^a-z]|$)")) t++
        else f++
        next
    }
    /^#[ \t]*[Ss][Kk][Ii][Pp]/ { s++; next }
    END {
        problem = ""
        if (bail != "") problem = "bailed out: " bail
        else if (plans == 0) problem = "no TAP plan (1..N) in " tests " test line(s)"
        else if (plans > 1) problem = plans " TAP plans"
        else if (late)
            problem = "TAP plan after the first test line (declare it first, from the list of cases)"
        else if (tests != planned)
            problem = "TAP plan 1.." planned " but " tests " test line(s)"
        else if (dup != "") problem = "test number " dup " twice"
        if (whole_skip && tests == 0 && problem == "") s++
        print p + 0, s + 0, t + 0, f + 0, problem
    }' "$1"
}

# allowed_skip SUITE LINE: is LINE (a skip of SUITE) in $ALLOWED_SKIPS?
# The file has "SUITE-ERE | LINE-ERE | reason" lines (fields separated by
# " | ", space, bar, space: a bar inside an ERE has no spaces around it);
# "#" starts a comment line.  Prints the reason.
allowed_skip() {
    local suite=$1 line=$2 s_re l_re reason
    while IFS= read -r entry; do
        case $entry in '#'* | '') continue ;; esac
        s_re=${entry%% | *}
        reason=${entry##* | }
        l_re=${entry#"$s_re | "}
        l_re=${l_re%" | $reason"}
        if echo "$suite" | grep -Eq -- "$s_re" &&
           echo "$line" | grep -Eq -- "$l_re"; then
            echo "$reason"
            return 0
        fi
    done < "$ALLOWED_SKIPS"
    return 1
}

if [ -n "${ALLOWED_SKIPS:-}" ] && [ ! -r "$ALLOWED_SKIPS" ]; then
    echo "run-all.sh: ALLOWED_SKIPS=$ALLOWED_SKIPS: no such file (give the allowlist, or unset it)" >&2
    exit 2
fi

passed=0 failed=0 skipped=0 todo=0
failed_suites=()
not_passed=()
selected=()
for suite in "$top"/tests/suites/*; do
    name=$(basename "$suite")
    [ -d "$suite" ] && continue         # e.g. __pycache__: not a suite
    if [ -n "${SUITES:-}" ] && ! echo "$name" | grep -Eq -- "$SUITES"; then
        continue
    fi
    selected+=("$suite")
done
if [ ${#selected[@]} = 0 ]; then
    echo "run-all.sh: SUITES='${SUITES:-}' matches no suite in $top/tests/suites (names: $(ls "$top/tests/suites" | tr '\n' ' '))" >&2
    echo "0 passed, 1 failed, 0 skipped, 0 todo"
    exit 2
fi
skip_names=()
for suite in "${selected[@]}"; do
    name=$(basename "$suite")
    echo "# --- suite $name"
    if [ ! -f "$suite" ] || [ ! -x "$suite" ]; then
        echo "not ok - suite $name is not an executable file (chmod +x tests/suites/$name, or move it out of tests/suites)"
        failed=$((failed + 1))
        failed_suites+=("$name")
        continue
    fi
    leftovers=$logs/$name.leftovers
    rm -f "$leftovers"
    start=$(date +%s)
    # The TAP is the suite's stdout, kept on its own in $tap: a line that
    # QEMU or a server writes to stderr in two parts must not glue itself
    # to a test line.  The log has both streams, as they came, for humans.
    tap=$logs/$name.tap
    : > "$logs/$name.log"
    if [ -n "$san_logs" ]; then
        san_opts="log_path=$san_logs/$name"
        ASAN_OPTIONS="$ASAN_OPTIONS:$san_opts" UBSAN_OPTIONS="$UBSAN_OPTIONS:$san_opts" \
            python3 "$top/tests/reap.py" "$leftovers" \
            timeout --kill-after=30 "${SUITE_TIMEOUT:-1800}" "$suite" \
            < /dev/null 2>> "$logs/$name.log" | tee -a "$logs/$name.log" > "$tap"
        rc=${PIPESTATUS[0]}
    else
        python3 "$top/tests/reap.py" "$leftovers" \
            timeout --kill-after=30 "${SUITE_TIMEOUT:-1800}" "$suite" \
            < /dev/null 2>> "$logs/$name.log" | tee -a "$logs/$name.log" > "$tap"
        rc=${PIPESTATUS[0]}
    fi
    # Show the TAP lines and diagnostics, not the noise.
    grep -E '^(ok|not ok|#|Bail out)' "$tap" | grep -v '^# Start of\|^# End of'
    # Count with the plan: "p s t f problem..." from tap_count.
    read -r p s t f problem < <(tap_count "$tap")
    if [ -n "$problem" ]; then
        echo "not ok - suite $name: $problem (log: $logs/$name.log)"
        f=$((f + 1))
    fi
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        echo "not ok - suite $name exited with status $rc (log: $logs/$name.log)"
        tail -20 "$logs/$name.log" | sed 's/^/#   /'
        f=1
    fi
    if [ -s "$leftovers" ]; then
        echo "not ok - suite $name left $(wc -l < "$leftovers") process(es) running (killed now):"
        sed 's/^/#   /' "$leftovers"
        f=$((f + 1))
    fi
    while IFS= read -r line; do
        case ${line,,} in
        "not ok"*) not_passed+=("todo    $name: $line") ;;
        ok*todo*) not_passed+=("todo fixed, drop the TODO: $name: $line") ;;
        *)
            not_passed+=("skipped $name: $line")
            case $line in
            '#'*) what=${line#\#} ;;
            1..0*) what="whole suite${line#*[Ss][Kk][Ii][Pp]}" ;;
            *) what=$(echo "$line" | sed -E 's/^ok[ \t]*[0-9]*[ \t]*-?[ \t]*//; s/[ \t]*#[ \t]*[Ss][Kk][Ii][Pp].*//') ;;
            esac
            why=
            if [ -n "${ALLOWED_SKIPS:-}" ]; then
                if ! why=$(allowed_skip "$name" "$line"); then
                    echo "not ok - suite $name: a skip that $ALLOWED_SKIPS does not allow: $line"
                    f=$((f + 1))
                    why="NOT ALLOWED"
                fi
            fi
            skip_names+=("$name: ${what# }${why:+ [$why]}")
            ;;
        esac
    done < <(grep -Ei '^((ok|not ok|1\.\.0)([ \t].*)?#[ \t]*(skip|todo([^a-z]|$))|#[ \t]*skip)' "$tap")
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
    if [ $((p + s + t + f)) = 0 ]; then
        echo "not ok - suite $name ran no test (log: $logs/$name.log)"
        f=1
    fi
    [ "$f" = 0 ] || failed_suites+=("$name")
    echo "# suite $name: $p passed, $f failed, $s skipped, $t todo in $(( $(date +%s) - start )) s"
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s)) todo=$((todo + t))
done
# What did not run, or is a known failure, once more where it is seen.
for line in "${not_passed[@]}"; do
    echo "# $line"
done
if [ ${#skip_names[@]} -gt 0 ]; then
    printf -v joined '%s; ' "${skip_names[@]}"
    echo "# skipped${ALLOWED_SKIPS:+ (allowlist $ALLOWED_SKIPS)}: ${joined%; }"
fi
if [ ${#failed_suites[@]} -gt 0 ]; then
    echo "# failed suites: ${failed_suites[*]} (logs in $logs)"
fi
echo "$passed passed, $failed failed, $skipped skipped, $todo todo"
[ "$failed" = 0 ]

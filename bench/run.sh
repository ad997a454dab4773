#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# make bench: measure ours against two references, print the Markdown
# tables, and leave JSON and PNG plots in the output directory.  The
# references: "pristine", QEMU 10.0.2 without the series built with exactly
# our configure flags (PRISTINE=1 tools/build.sh, in out/ref/qemu), so that
# ours/pristine isolates the device from build differences; "stock",
# Debian's qemu-system-x86 10.0.2 binary, the user's reference (Debian ships
# no ivshmem-server: it runs with the pristine one).
#   BENCH_QUICK=1       a short run (one device configuration, 2 runs)
#   BENCH_SCENARIOS=".." subset of: doorbell polling bandwidth flood
#                       deliver join host
#   BENCH_MAX_LOAD=N    refuse to start while the 1-minute load average is
#                       at least N (default: the CPU count) after waiting
#                       BENCH_WAIT_QUIET s (300); BENCH_FORCE=1 runs anyway
#                       and the results say so
#   BENCH_OUT=DIR       output directory (default out/bench/<UTC time>)
#   BENCH_SAVE=1        also copy the results to bench/results/<date>.* and
#                       regenerate README.md's table from that JSON
#   BENCH_BREAKDOWN=1   also trace where a doorbell round trip goes
#   QEMU_BUILD / QEMU_WORK  our build (default out/qemu/build)
#   PRISTINE_QEMU, PRISTINE_SERVER, STOCK_QEMU  override the references
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
"$top/bench/deps.sh"

build=${QEMU_BUILD:-${QEMU_WORK:-$top/out/qemu}/build}
ours_qemu=$build/qemu-system-x86_64
ours_server=$build/contrib/ivshmem-server/ivshmem-server
stock_qemu=${STOCK_QEMU:-/usr/bin/qemu-system-x86_64}
if [ -z "${PRISTINE_QEMU:-}" ] || [ -z "${PRISTINE_SERVER:-}" ]; then
    pbuild=$("$top/bench/ref-server.sh" --build-dir)
fi
pristine_qemu=${PRISTINE_QEMU:-$pbuild/qemu-system-x86_64}
pristine_server=${PRISTINE_SERVER:-$pbuild/contrib/ivshmem-server/ivshmem-server}
for b in "$ours_qemu" "$ours_server" "$pristine_qemu" "$pristine_server" \
         "$stock_qemu"; do
    [ -x "$b" ] || { echo "bench: $b missing (make build?)" >&2; exit 1; }
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${BENCH_OUT:-$top/out/bench/$stamp}
mkdir -p "$out"
bin=$top/out/bench/bin
mkdir -p "$bin"
gcc -O2 -Wall -o "$bin/server-join" "$top/bench/server-join.c"
gcc -O2 -Wall -o "$bin/host-floor" "$top/bench/host-floor.c"
gcc -O2 -Wall -o "$bin/vector-peer" "$top/bench/vector-peer.c"
ulimit -n "$(ulimit -Hn)"       # the same fd budget for both servers

# Our QEMU runs from its build tree, which has no firmware (the build does
# not install blobs): both variants get Debian's through -L, so they boot
# the very same BIOS.
wrap() {        # NAME BINARY
    printf '#!/bin/sh\nexec %s -L /usr/share/seabios -L /usr/lib/ipxe/qemu \\\n    -L /usr/share/qemu "$@"\n' "$2" > "$bin/$1"
    chmod +x "$bin/$1"
}
wrap qemu-ours "$ours_qemu"
wrap qemu-pristine "$pristine_qemu"
wrap qemu-stock "$stock_qemu"

echo "bench: results in $out (load $(cut -d' ' -f1 /proc/loadavg))" >&2
/usr/bin/python3 "$top/bench/bench.py" "$out" "$bin/qemu-ours" "$ours_server" \
    "$bin/qemu-pristine" "$pristine_server" "$bin/qemu-stock" \
    "$pristine_server" "$bin/server-join" "$bin/host-floor" \
    "$bin/vector-peer"
/usr/bin/python3 "$top/bench/report.py" "$out"

# The traced breakdown of a doorbell round trip (bench/BREAKDOWN.md).
if [ "${BENCH_BREAKDOWN:-0}" = 1 ]; then
    /usr/bin/python3 "$top/bench/breakdown.py" "$out/breakdown" \
        "$bin/qemu-ours" "$ours_server" "$bin/qemu-pristine" \
        "$pristine_server" "$bin/qemu-stock" "$pristine_server" \
        "${BENCH_BREAKDOWN_ROUNDS:-400}" "${BENCH_BREAKDOWN_REPS:-3}" \
        > "$out/breakdown.md"
    cat "$out/breakdown.md"
fi

if [ "${BENCH_SAVE:-0}" = 1 ]; then
    res=$top/bench/results
    day=$(date -u +%Y-%m-%d)
    # A second run the same day does not overwrite the first: -2, -3...
    n=1
    while [ -e "$res/$day.json" ]; do
        n=$((n + 1))
        day=$(date -u +%Y-%m-%d)-$n
    done
    mkdir -p "$res"
    # Every run with its raw round trips: the page, the plots and
    # README.md's table are generated from this file alone.
    cp "$out/results.json" "$res/$day.json"
    /usr/bin/python3 "$top/bench/report.py" --json "$res/$day.json" \
        --plots "$res/$day" > "$res/$day.md"
    if [ -f "$out/breakdown/breakdown.json" ]; then
        cp "$out/breakdown/breakdown.json" "$res/$day-breakdown.json"
        /usr/bin/python3 "$top/bench/report.py" --breakdown \
            "$res/$day-breakdown.json" > "$res/$day-breakdown.md"
    fi
    /usr/bin/python3 "$top/bench/report.py" --readme "$top/README.md" \
        --json "$res/$day.json"
    echo "bench: saved $res/$day.{md,json}, plots, README.md's table" >&2
fi

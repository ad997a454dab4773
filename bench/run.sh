#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# make bench: measure ours against the reference (Debian's qemu-system-x86
# 10.0.2 and the ivshmem-server built from the same source), print the
# Markdown table, and leave JSON and PNG plots in the output directory.
#   BENCH_QUICK=1       a short run (one device configuration, 2 runs)
#   BENCH_SCENARIOS=".." subset of: doorbell polling bandwidth join host
#   BENCH_OUT=DIR       output directory (default out/bench/<UTC time>)
#   BENCH_SAVE=1        also copy the results to bench/results/<date>.*
#   BENCH_BREAKDOWN=1   also trace where a doorbell round trip goes
#   QEMU_BUILD / QEMU_WORK  our build (default out/qemu/build)
#   REF_QEMU, REF_SERVER    override the reference binaries
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
"$top/bench/deps.sh"

build=${QEMU_BUILD:-${QEMU_WORK:-$top/out/qemu}/build}
ours_qemu=$build/qemu-system-x86_64
ours_server=$build/contrib/ivshmem-server/ivshmem-server
ref_qemu=${REF_QEMU:-/usr/bin/qemu-system-x86_64}
ref_server=${REF_SERVER:-$("$top/bench/ref-server.sh")}
for b in "$ours_qemu" "$ours_server" "$ref_qemu" "$ref_server"; do
    [ -x "$b" ] || { echo "bench: $b missing (make build?)" >&2; exit 1; }
done

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${BENCH_OUT:-$top/out/bench/$stamp}
mkdir -p "$out"
bin=$top/out/bench/bin
mkdir -p "$bin"
gcc -O2 -Wall -o "$bin/server-join" "$top/bench/server-join.c"
gcc -O2 -Wall -o "$bin/host-floor" "$top/bench/host-floor.c"
ulimit -n "$(ulimit -Hn)"       # the same fd budget for both servers

# Our QEMU runs from its build tree, which has no firmware (the build does
# not install blobs): both variants get Debian's through -L, so they boot
# the very same BIOS.
wrap() {        # NAME BINARY
    printf '#!/bin/sh\nexec %s -L /usr/share/seabios -L /usr/lib/ipxe/qemu \\\n    -L /usr/share/qemu "$@"\n' "$2" > "$bin/$1"
    chmod +x "$bin/$1"
}
wrap qemu-ours "$ours_qemu"
wrap qemu-ref "$ref_qemu"

echo "bench: results in $out (load $(cut -d' ' -f1 /proc/loadavg))" >&2
/usr/bin/python3 "$top/bench/bench.py" "$out" "$bin/qemu-ours" "$ours_server" \
    "$bin/qemu-ref" "$ref_server" "$bin/server-join" "$bin/host-floor"
/usr/bin/python3 "$top/bench/report.py" "$out"

# The traced breakdown of a doorbell round trip (bench/BREAKDOWN.md).
if [ "${BENCH_BREAKDOWN:-0}" = 1 ]; then
    /usr/bin/python3 "$top/bench/breakdown.py" "$out/breakdown" \
        "$bin/qemu-ours" "$ours_server" "$bin/qemu-ref" "$ref_server" \
        "${BENCH_BREAKDOWN_ROUNDS:-400}" "${BENCH_BREAKDOWN_REPS:-3}" \
        > "$out/breakdown.md"
    cat "$out/breakdown.md"
fi

if [ "${BENCH_SAVE:-0}" = 1 ]; then
    res=$top/bench/results
    day=$(date -u +%Y-%m-%d)
    mkdir -p "$res"
    cp "$out/results.md" "$res/$day.md"
    cp "$out/summary.json" "$res/$day.json"
    for p in rtt join; do
        if [ -f "$out/$p.png" ]; then
            cp "$out/$p.png" "$res/$day-$p.png"
        fi
    done
    if [ -f "$out/breakdown.md" ]; then
        cp "$out/breakdown.md" "$res/$day-breakdown.md"
        cp "$out/breakdown/breakdown.json" "$res/$day-breakdown.json"
    fi
    echo "bench: saved $res/$day.{md,json} and plots" >&2
fi

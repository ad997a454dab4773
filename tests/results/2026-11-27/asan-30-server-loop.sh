#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# 30-server under SANITIZE=1, N times in a row; one summary line per run.
#   asan-30-server-loop.sh [N [FIRST]]   runs FIRST..N (FIRST=1): a loop
#   paused for a benchmark goes on with the next run number.
cd "$(dirname "$0")/../../.."
n=${1:-20}; first=${2:-1}; fails=0
mkdir -p "${LOGDIR:-/tmp/asan-work}"
for i in $(seq "$first" "$n"); do
    t0=$(date +%s)
    SANITIZE=1 SUITES='^30-' tests/run-all.sh > ${LOGDIR:-/tmp/asan-work}/run$i.log 2>&1
    rc=$?
    sum=$(grep -E '^[0-9]+ passed' ${LOGDIR:-/tmp/asan-work}/run$i.log | tail -1)
    [ $rc = 0 ] || fails=$((fails+1))
    echo "run $i: rc=$rc $sum in $(( $(date +%s) - t0 )) s, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%H:%M:%S)"
    grep '^not ok' ${LOGDIR:-/tmp/asan-work}/run$i.log | sed 's/^/   /'
done
echo "total: runs $first to $n, $fails failed"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# stress.sh SERVER N: start the daemon, SIGTERM it, N times; report hangs.
server=$1; n=$2; d=$(mktemp -d /tmp/asan-stress.XXXXXX)
hangs=0; fails=0
for i in $(seq 1 $n); do
    sock=$d/s$i; pidf=$d/p$i; shm=asan-stress-$$-$i
    timeout 20 "$server" -S $sock -M $shm -p $pidf > $d/log$i 2>&1
    rc=$?
    pid=$(cat $pidf 2>/dev/null)
    if [ $rc != 0 ] || [ -z "$pid" ]; then
        fails=$((fails+1)); echo "run $i: launcher rc=$rc pid='$pid'"; cat $d/log$i
        # find it by socket path and kill it
        for p in $(pgrep -f -- "-S $sock "); do echo "killing $p"; kill -9 $p; done
        continue
    fi
    kill -TERM $pid
    for t in $(seq 1 200); do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
    if kill -0 $pid 2>/dev/null; then
        hangs=$((hangs+1))
        echo "run $i: daemon $pid hung after SIGTERM; threads: $(ls /proc/$pid/task | tr '\n' ' ')"
        if [ -n "${GDB:-}" ]; then
            timeout 120 gdb -p $pid -batch -nx -ex 'info threads' -ex 'thread apply all bt' > $d/gdb$i.txt 2>&1
            echo "  gdb output: $d/gdb$i.txt"
        fi
        [ -n "${KEEP:-}" ] || kill -9 $pid
    fi
    rm -f /dev/shm/$shm
done
echo "runs=$n launcher_failures=$fails hangs=$hangs load=$(cut -d' ' -f1-3 /proc/loadavg) dir=$d"

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# usage: shm-race.sh QEMU N (two QEMUs start together with one new shm= name, N times)
q=$1; n=$2; fails=0
for i in $(seq $n); do
  name=race-$$-$i
  rm -f /dev/shm/$name
  for j in 1 2; do
    timeout 20 $q -M pc -accel qtest -display none -nodefaults -S \
      -device ivshmem,size=1M,shm=$name -qmp stdio < <(echo '{"execute":"qmp_capabilities"}'; echo '{"execute":"quit"}') > /tmp/race-$j.out 2>&1 &
  done
  wait
  if grep -q 'File exists\|cannot open' /tmp/race-1.out /tmp/race-2.out; then fails=$((fails+1)); grep -h 'qemu-system' /tmp/race-*.out | head -1; fi
  rm -f /dev/shm/$name
done
echo "failures: $fails of $n"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# make demo: two Linux guests share memory and ring each other through
# our QEMU and ivshmem-server (built by tools/build.sh beforehand).
#   QEMU_WORK / QEMU_BUILD   which build to use (default out/qemu/build)
#   DEMO_ROUNDS              doorbell round trips (default 10000)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
export QEMU_WORK=${QEMU_WORK:-$top/out/qemu}
export QEMU_BUILD=${QEMU_BUILD:-$QEMU_WORK/build}
export QEMU_BINARY=${QEMU_BINARY:-$QEMU_BUILD/qemu-system-x86_64}
"$top/guest/deps.sh"
exec timeout -k 10 1200 /usr/bin/python3 "$top/e2e/demo.py"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build the benchmarks' pristine reference: QEMU 10.0.2 from the Debian
# source without the series, configured with exactly our flags (it is
# tools/build.sh with PRISTINE=1, in out/ref/qemu; ccache makes most
# objects hits from our own build).  A baseline only: nothing of it enters
# the series.  Idempotent; prints the pristine ivshmem-server's path, or
# with --build-dir the build directory (qemu-system-x86_64 is there).
#   REF_DIR  where to build (default out/ref: the tree in REF_DIR/qemu)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
ref=${REF_DIR:-$top/out/ref}
build=$(PRISTINE=1 QEMU_WORK="$ref/qemu" SANITIZE=0 "$top/tools/build.sh" \
            qemu-system-x86_64 contrib/ivshmem-server/ivshmem-server >&2 &&
        echo "$ref/qemu/build")
if [ "${1:-}" = --build-dir ]; then
    echo "$build"
else
    echo "$build/contrib/ivshmem-server/ivshmem-server"
fi

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build the reference ivshmem-server from the pristine Debian QEMU 10.0.2
# source (a baseline for the benchmarks only; nothing of it enters the
# series).  Idempotent; prints the server's path.
#   REF_DIR  where to copy and build (default out/ref: src/ and build/)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
ref=${REF_DIR:-$top/out/ref}
server=$ref/build/contrib/ivshmem-server/ivshmem-server
mkdir -p "$ref"
exec 9> "$ref.lock"
flock 9

if [ ! -x "$server" ]; then
    pristine=$("$top/tools/fetch-qemu.sh" | tail -1)   # honours QEMU_SRC
    if [ ! -f "$ref/src/configure" ]; then
        rm -rf "$ref/src"
        cp -a "$pristine" "$ref/src"
    fi
    "$top/tools/edk2-placeholders.sh" "$ref/src"
    if [ ! -f "$ref/build/build.ninja" ]; then
        mkdir -p "$ref/build"
        (cd "$ref/build" && "$ref/src/configure" --python=/usr/bin/python3 \
            --without-default-features --disable-system --disable-user \
            --enable-tools --disable-docs --disable-install-blobs) \
            > "$ref/build/configure.log" 2>&1 ||
            { tail -20 "$ref/build/configure.log" >&2; exit 1; }
    fi
    ninja -C "$ref/build" contrib/ivshmem-server/ivshmem-server >&2
fi
echo "$server"

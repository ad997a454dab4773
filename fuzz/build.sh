#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build the libFuzzer targets (clang, ASan+UBSan+libFuzzer) into $FUZZ_OUT.
#   QEMU_WORK   composed tree (its configured build gives config-host.h)
#   QEMU_BUILD  configured build directory (default $QEMU_WORK/build)
#   FUZZ_OUT    output directory (default $QEMU_WORK/fuzz)
# Prints the output directory on its last line.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
work=${QEMU_WORK:?set QEMU_WORK to a composed, configured tree}
build=${QEMU_BUILD:-$work/build}
out=${FUZZ_OUT:-$work/fuzz}
cc=${FUZZ_CC:-clang-14}

if ! command -v "$cc" > /dev/null ||
   ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
        > /dev/null 2>&1; then
    echo "fuzz: installing clang-14 and its libFuzzer runtime" >&2
    apt-get install -y -q clang-14 libclang-rt-14-dev > /dev/null ||
        { apt-get update -q > /dev/null &&
          apt-get install -y -q clang-14 libclang-rt-14-dev > /dev/null; }
fi
test -f "$build/config-host.h" || {
    echo "fuzz: $build is not configured (run tools/build.sh)" >&2
    exit 1
}
# Generated headers osdep.h needs (present after any full build).
if [ ! -f "$build/config-poison.h" ] ||
   [ ! -f "$build/qapi/qapi-types-error.h" ]; then
    ninja -C "$build" config-poison.h qapi/qapi-types-error.h > /dev/null
fi
mkdir -p "$out"

cflags=(-g -O1 -std=gnu11 -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -D_LARGEFILE_SOURCE
        -fno-strict-aliasing -fno-common -fwrapv
        -Wall -Werror -Wno-unused-function
        -iquote "$top/fuzz/common" -I"$build" -iquote "$work" -iquote "$work/include"
        -iquote "$work/host/include/x86_64" -iquote "$work/host/include/generic"
        -isystem "$work/linux-headers"
        $(pkg-config --cflags glib-2.0))
libs=($(pkg-config --libs glib-2.0))

extra_cflags=()

# Only rebuild when a source or header is newer than the binary.
build_target() {   # NAME SOURCES_AND_HEADERS...
    local name=$1
    shift
    local bin=$out/$name src newer=0
    for src in "$@"; do
        [ "$src" -nt "$bin" ] && newer=1
    done
    [ "$newer" = 1 ] || return 0
    local sources=()
    for src in "$@"; do
        [[ $src == *.c ]] && sources+=("$src")
    done
    "$cc" "${cflags[@]}" "${extra_cflags[@]}" -o "$bin.tmp" "${sources[@]}" "${libs[@]}"
    mv "$bin.tmp" "$bin"
}

build_target fuzz-proto "$top/fuzz/proto/fuzz-proto.c" \
    "$work/util/ivshmem-proto.c" "$top/fuzz/common/error-stub.c" \
    "$top/fuzz/common/fuzz.h"
for t in server guest; do
    [ -f "$top/fuzz/$t/fuzz-$t.c" ] || continue
    build_target "fuzz-$t" "$top/fuzz/$t/fuzz-$t.c" "$top/fuzz/common/fuzz.h"
done
# libivshmem-channel (channel/, MIT): its own sources, its bounded waits
# for a peer's half-done creation shortened so hostile inputs stay fast.
extra_cflags=(-I"$top/channel/include" -iquote "$top/channel/src"
              -I"$top/guest/driver" -DIVC_INIT_WAIT_NS=200000)
build_target fuzz-channel "$top/fuzz/channel/fuzz-channel.c" \
    "$top/channel/src/channel.c" "$top/channel/src/transport.c" \
    "$top/channel/src/internal.h" "$top/channel/include/ivshmem/channel.h"
extra_cflags=()
echo "$out"

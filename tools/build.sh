#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Compose the series over QEMU 10.0.2 and build it (x86_64-softmmu, KVM and
# TCG, tools for contrib/, docs off).  Re-running rebuilds only what changed.
#   QEMU_WORK=DIR   composed tree (default out/qemu); the build is DIR/build
#   SANITIZE=1      ASan+UBSan build in DIR/build-san
#   PRISTINE=1      no series: pristine QEMU 10.0.2 with exactly these
#                   configure flags (default DIR out/ref/qemu), the
#                   benchmarks' same-flags reference
#   extra args      ninja targets (default: see default_targets; --targets prints them)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)

# What the tests, the demo and the benchmarks use (QEMU's "all" would also
# build every other qtest and tool).
default_targets="qemu-system-x86_64 contrib/ivshmem-server/ivshmem-server
contrib/ivshmem-client/ivshmem-client tests/qtest/ivshmem-test
tests/unit/test-ivshmem-proto"
# Debian's seabios, ipxe-qemu and qemu-system-data (tools/deps.sh).
firmware_dirs="/usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu"
if [ "${1:-}" = --targets ]; then
    echo $default_targets
    exit 0
fi
if [ "${PRISTINE:-0}" = 1 ]; then
    work=${QEMU_WORK:-$top/out/ref/qemu}
else
    work=${QEMU_WORK:-$top/out/qemu}
fi
export QEMU_WORK=$work
mkdir -p "$(dirname "$work")"

# One composition/build at a time per tree: ninja must not run twice in
# one build directory.
exec 9> "$work.lock"
flock 9

if [ "${PRISTINE:-0}" = 1 ]; then
    pristine=$("$top/tools/fetch-qemu.sh" | tail -1)
    if [ ! -f "$work/.pristine" ] || [ "$(cat "$work/.pristine")" != "$pristine" ]; then
        rm -rf "$work"
        cp -a "$pristine" "$work"
        rm -f "$work/.unpacked"
        echo "$pristine" > "$work/.pristine"
    fi
else
    "$top/tools/compose.sh" > /dev/null
fi

# ccache (installed by tools/deps.sh) through its compiler links; paths
# relative to the tree's parent so a fresh clone elsewhere hits the cache.
if [ -d /usr/lib/ccache ]; then
    export PATH=/usr/lib/ccache:$PATH
    export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(dirname "$work")}
    export CCACHE_NOHASHDIR=1
fi

builddir=$work/build
extra=()
if [ "${SANITIZE:-0}" = 1 ]; then
    builddir=$work/build-san
    extra=(--enable-asan --enable-ubsan)
fi

# --enable-seccomp: distributions and libvirt run QEMU with -sandbox on,
# and the qtest runs doorbells under it.
configure_args=(
    --python=/usr/bin/python3
    --target-list=x86_64-softmmu
    --without-default-features
    --enable-kvm --enable-tcg --enable-tools --enable-seccomp
    --disable-docs --disable-install-blobs
    --enable-werror
    --firmwarepath="$(echo $firmware_dirs | tr ' ' :)"
    "${extra[@]}"
)
# Configure again when the arguments change (an existing tree keeps its
# objects; ninja rebuilds what the new configuration touches).
stamp=$builddir/configure.args
if [ ! -f "$builddir/build.ninja" ] ||
   [ "$(cat "$stamp" 2>/dev/null)" != "${configure_args[*]}" ]; then
    mkdir -p "$builddir"
    # The +ds tarball has no edk2 blobs, which pc-bios/meson.build unpacks
    # for x86_64: give it empty ones (UEFI is not used here).  Firmware
    # comes from Debian's seabios, ipxe-qemu and qemu-system-data through
    # --firmwarepath.
    "$top/tools/edk2-placeholders.sh" "$work"
    (cd "$builddir" && "$work/configure" "${configure_args[@]}") \
        > "$builddir/configure.log" 2>&1 || {
        tail -30 "$builddir/configure.log" >&2
        echo "build: configure failed; log in $builddir/configure.log" >&2
        rm -f "$builddir/build.ninja" "$stamp"
        exit 1
    }
    echo "${configure_args[*]}" > "$stamp"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=($default_targets)
    if [ "${PRISTINE:-0}" = 1 ]; then
        # The codec's unit test is the series' own: pristine has none.
        kept=()
        for t in "${targets[@]}"; do
            [ "$t" = tests/unit/test-ivshmem-proto ] || kept+=("$t")
        done
        targets=("${kept[@]}")
    fi
fi
ninja -C "$builddir" "${targets[@]}"

# A binary run from the build tree looks for firmware under qemu-bundle/,
# relocating the configured --firmwarepath there: point those at Debian's.
for dir in $firmware_dirs; do
    if [ ! -e "$builddir/qemu-bundle$dir" ]; then
        mkdir -p "$(dirname "$builddir/qemu-bundle$dir")"
        ln -sfn "$dir" "$builddir/qemu-bundle$dir"
    fi
done
echo "$builddir"

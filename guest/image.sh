#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build the ivshmem test guest: Debian's kernel, busybox, the uio modules,
# our driver and ivshmem-guest (and the channel library's examples as
# ivc-pingpong, ivc-stream, ivc-hostguest, ivc-liveness, ivc-seq, and
# ivc-gbench of bench/channel with the virtio-net modules, not loaded at
# boot, for the two-guest benchmark), packed as an initramfs.  Packages are
# fetched with apt-get download and unpacked with dpkg -x into a cache;
# nothing is installed system-wide.  The image is cached under a key of
# all its inputs and rebuilt only when one changes.  Prints the image
# directory on stdout: vmlinuz (bzImage), vmlinux (the same kernel as an
# ELF for PVH boot), initramfs.cpio.gz, ivshmem.ko and ivshmem-guest.
#   GUEST_CACHE  cache directory (default ~/.cache/qemu-ivshmem/guest)
#   GUEST_KABI   kernel ABI, e.g. 6.1.0-56-amd64 (default: the one of the
#                linux-image-amd64 candidate, i.e. Debian 12's kernel);
#                "backports": the newest in bookworm-backports (6.12)
#   GUEST_KERNEL 6.1 (Debian 12's kernel) or 6.12 (bookworm-backports'):
#                a shorthand for GUEST_KABI; each kernel gets its own
#                cached image (the key holds the package versions)
#   GUEST_BUILD_ONLY=1  only fetch the headers and build the driver (W=1,
#                warnings fail); prints "KABI VERSION"; exit 3 when the
#                kernel is not in the apt lists
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cache=${GUEST_CACHE:-$HOME/.cache/qemu-ivshmem/guest}
mkdir -p "$cache"
exec 8> "$cache/.lock"
flock 8

log() { echo "guest-image: $*" >&2; }

candidate() {
    apt-cache policy "$1" 2>/dev/null | sed -n 's/^  Candidate: //p'
}

kabi=${GUEST_KABI:-}
case ${GUEST_KERNEL:-} in
    '') ;;
    6.1) [ -z "$kabi" ] || { log "set GUEST_KERNEL or GUEST_KABI, not both"; exit 1; } ;;
    6.12) [ -z "$kabi" ] || { log "set GUEST_KERNEL or GUEST_KABI, not both"; exit 1; }
          kabi=backports ;;
    *) log "GUEST_KERNEL=$GUEST_KERNEL: use 6.1 or 6.12"; exit 1 ;;
esac
if [ -z "$kabi" ] || [ "$kabi" = backports ]; then
    if [ -z "$kabi" ]; then
        meta_ver=$(candidate linux-image-amd64)
    else
        # The newest kernel of bookworm-backports (6.12 as of 2026).
        meta_ver=$(apt-cache madison linux-image-amd64 2>/dev/null |
                   awk -F'|' '/-backports/ { gsub(/ /, "", $2); print $2; exit }')
        [ -n "$meta_ver" ] ||
            { log "no linux-image-amd64 in bookworm-backports"; exit 3; }
    fi
    kabi=$(apt-cache show "linux-image-amd64=$meta_ver" |
           sed -n 's/^Depends: .*linux-image-\([0-9][^ ,]*-amd64\).*/\1/p' |
           head -1)
fi
[ -n "$kabi" ] || { log "cannot resolve the kernel version (apt-get update?)"; exit 1; }
kver=$(candidate "linux-image-$kabi")
[ -n "$kver" ] && [ "$kver" != "(none)" ] ||
    { log "linux-image-$kabi not available"; exit 1; }
# The common headers and kbuild packages the headers depend on (their
# names differ between 6.1, linux-kbuild-6.1, and 6.12 from
# bookworm-backports, linux-kbuild-6.12.NN+deb12).
hdeps=$(apt-cache show "linux-headers-$kabi=$kver" | sed -n 's/^Depends: //p' |
        head -1 | tr ',' '\n')
kcommon=$(echo "$hdeps" | grep -o 'linux-headers-[^ ]*-common' | head -1)
kbuild=$(echo "$hdeps" | grep -o 'linux-kbuild-[^ ]*' | head -1)
[ -n "$kcommon" ] && [ -n "$kbuild" ] ||
    { log "cannot resolve the headers' dependencies of $kabi"; exit 1; }
pkgs=("linux-headers-$kabi=$kver" "$kcommon=$kver" "$kbuild=$kver")
root=$cache/root-$kabi-$kver
if [ -n "${GUEST_BUILD_ONLY:-}" ]; then
    # Only build the driver: the headers are enough.
    root=$cache/headers-$kabi-$kver
else
    pkgs+=("linux-image-$kabi=$kver"
           "busybox-static=$(candidate busybox-static)")
fi

# 1. Fetch and unpack the packages (once per package version).
debs=$cache/debs
mkdir -p "$debs"
if [ ! -f "$root/.done" ]; then
    tmp=$(mktemp -d "$cache/dl.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    for p in "${pkgs[@]}"; do
        name=${p%%=*}
        ver=${p#*=}
        file=$(ls "$debs/${name}_${ver//:/%3a}_"*.deb 2>/dev/null | head -1 || true)
        if [ -z "$file" ]; then
            log "downloading $p"
            (cd "$tmp" && apt-get download -q "$p" > /dev/null 2>&1) ||
                { log "apt-get download $p failed"; exit 1; }
            mv "$tmp"/*.deb "$debs/"
        fi
    done
    rm -rf "$tmp"
    rm -rf "$root"
    mkdir -p "$root"
    for p in "${pkgs[@]}"; do
        name=${p%%=*}
        ver=${p#*=}
        dpkg -x "$(ls "$debs/${name}_${ver//:/%3a}_"*.deb | head -1)" "$root"
    done
    # The headers' Makefile includes the common tree by absolute path.
    sed -i "s|^include /usr/src/|include $root/usr/src/|" \
        "$root/usr/src/linux-headers-$kabi/Makefile"
    touch "$root/.done"
fi
kdir=$root/usr/src/linux-headers-$kabi

# 2. The cache key: package versions and every source file of the image.
key=$( (printf '%s\n' "${pkgs[@]}"
        cd "$top" && sha256sum guest/image.sh guest/init guest/driver/* \
                                guest/tool/*.c channel/src/* \
                                channel/include/ivshmem/* channel/examples/* \
                                bench/channel/gbench.c) |
      sha256sum | cut -c1-16)
img=$cache/image-$key
if [ -z "${GUEST_BUILD_ONLY:-}" ] && [ -f "$img/.done" ]; then
    echo "$img"
    exit 0
fi

# 3. Build the driver and the tool.
if [ -n "${GUEST_BUILD_ONLY:-}" ]; then
    log "building the driver (kernel $kabi $kver)"
else
    log "building image $key (kernel $kabi $kver)"
fi
# A fixed build path (we hold the lock): paths end up in the module.
build=$cache/build
rm -rf "$build"
mkdir -p "$build"
trap 'rm -rf "$build"' EXIT
cp "$top"/guest/driver/* "$build/"
# W=1, and any warning fails the build.  No BTF for the module: it would
# need pahole (6.12), and nothing here uses it.
if ! make -s -C "$kdir" M="$build" W=1 CONFIG_DEBUG_INFO_BTF_MODULES= modules \
        > "$build/kbuild.log" 2>&1 || grep -q 'warning:' "$build/kbuild.log"; then
    cat "$build/kbuild.log" >&2
    exit 1
fi
# The test-only variant without the zap on removal (e2e driver-zap).
mkdir -p "$build/nozap"
cp "$top"/guest/driver/* "$build/nozap/"
if ! make -s -C "$kdir" M="$build/nozap" W=1 IVSHMEM_TEST_NO_ZAP=y \
        CONFIG_DEBUG_INFO_BTF_MODULES= modules > "$build/nozap.log" 2>&1 ||
        grep -q 'warning:' "$build/nozap.log"; then
    cat "$build/nozap.log" >&2
    exit 1
fi
if [ -n "${GUEST_BUILD_ONLY:-}" ]; then
    log "the driver builds against $kabi $kver without a warning"
    echo "$kabi $kver"
    exit 0
fi
gcc -static -O2 -Wall -o "$build/ivshmem-guest" \
    "$top/guest/tool/ivshmem-guest.c"
# The channel library's examples (channel/), for its end-to-end tests.
for ex in pingpong stream hostguest liveness seq; do
    gcc -static -O2 -Wall -std=gnu11 -D_GNU_SOURCE -I"$top/channel/include" \
        -I"$top/channel/src" -I"$top/guest/driver" -o "$build/ivc-$ex" \
        "$top/channel/examples/$ex.c" "$top/channel/src/channel.c" \
        "$top/channel/src/transport.c" -lpthread
done
# The guest side of the two-guest benchmark (bench/channel/guest.py).
gcc -static -O2 -Wall -std=gnu11 -D_GNU_SOURCE -I"$top/channel/include" \
    -I"$top/channel/src" -I"$top/guest/driver" -o "$build/ivc-gbench" \
    "$top/bench/channel/gbench.c" "$top/channel/src/channel.c" \
    "$top/channel/src/transport.c" -lpthread 2> "$build/gbench.log" ||
    { cat "$build/gbench.log" >&2; exit 1; }

# 4. Assemble the initramfs reproducibly (sorted, fixed owner and time).
rd=$build/initramfs
mods=$rd/lib/modules/$kabi
mkdir -p "$rd"/{bin,dev,proc,sys,tmp} "$mods"
strip --strip-debug "$build/ivshmem.ko"
strip --strip-debug "$build/nozap/ivshmem.ko"
cp "$root/bin/busybox" "$rd/bin/busybox"
cp "$build/ivshmem-guest" "$build"/ivc-* "$rd/bin/"
install -m 0755 "$top/guest/init" "$rd/init"
# Newer Debian kernels ship compressed modules; busybox insmod wants them
# plain.
for m in uio uio_pci_generic; do
    src=$root/lib/modules/$kabi/kernel/drivers/uio/$m.ko
    if [ -f "$src" ]; then
        cp "$src" "$mods/"
    elif [ -f "$src.xz" ]; then
        xz -dc "$src.xz" > "$mods/$m.ko"
    else
        log "no $m module in $kabi"; exit 1
    fi
done
cp "$build/ivshmem.ko" "$mods/"
cp "$build/nozap/ivshmem.ko" "$mods/ivshmem-nozap.ko"
# virtio-net for the two-guest benchmark, in $mods/net with their load
# order in $mods/net/order (the benchmark loads them; init does not).
mkdir -p "$mods/net"
for m in drivers/virtio/virtio_ring drivers/virtio/virtio \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci net/core/failover drivers/net/net_failover \
         drivers/net/virtio_net; do
    src=$root/lib/modules/$kabi/kernel/$m.ko
    if [ -f "$src" ]; then
        cp "$src" "$mods/net/"
    elif [ -f "$src.xz" ]; then
        xz -dc "$src.xz" > "$mods/net/${m##*/}.ko"
    else
        continue                # built in, or absent: the benchmark says so
    fi
    echo "${m##*/}" >> "$mods/net/order"
done
find "$rd" -exec touch -h -d @0 {} +
rm -rf "$img.tmp"
mkdir -p "$img.tmp"
(cd "$rd" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --reproducible -o -H newc -R 0:0 --quiet) |
    gzip -n -9 > "$img.tmp/initramfs.cpio.gz"
cp "$root/boot/vmlinuz-$kabi" "$img.tmp/vmlinuz"
# The uncompressed ELF kernel boots through PVH (QEMU's pvh.bin): under
# TCG this skips seconds of firmware and XZ decompression in the guest.
# Debian's 6.1 compresses it with XZ, 6.12 with zstd.
payload() {
    LC_ALL=C grep -abo "$1" "$img.tmp/vmlinuz" | head -1 | cut -d: -f1 || true
}
off=$(payload $'\xfd7zXZ')
if [ -n "$off" ]; then
    tail -c +$((off + 1)) "$img.tmp/vmlinuz" |
        xz -dc --single-stream > "$img.tmp/vmlinux" 2>/dev/null || true
else
    off=$(payload $'\x28\xb5\x2f\xfd')
    [ -z "$off" ] || tail -c +$((off + 1)) "$img.tmp/vmlinuz" |
        zstd -dcq > "$img.tmp/vmlinux" 2>/dev/null || true
fi
if ! head -c 4 "$img.tmp/vmlinux" | grep -q ELF; then
    log "cannot extract vmlinux; guests will boot the bzImage"
    rm -f "$img.tmp/vmlinux"
fi
cp "$build/ivshmem.ko" "$build/ivshmem-guest" "$img.tmp/"
printf '%s\n' "${pkgs[@]}" > "$img.tmp/packages"
touch "$img.tmp/.done"
rm -rf "$img"
mv "$img.tmp" "$img"
# Keep the six newest images (two kernels, several trees).
ls -dt "$cache"/image-* 2>/dev/null | tail -n +7 | xargs -r rm -rf
log "image ready: $img"
echo "$img"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Obtain the pristine QEMU 10.0.2 tree from Debian's qemu source package.
# Prints the path of the unpacked, read-only tree on stdout.
# QEMU_SRC=/path/to/qemu-10.0.x uses an existing tree instead.
set -euo pipefail

VERSION=10.0.2
DEB_VERSION=1:10.0.2+ds-2+deb13u1~bpo12+1
TARBALL=qemu_10.0.2+ds.orig.tar.xz
SHA256=0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1
CACHE=${QEMU_IVSHMEM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qemu-ivshmem}

if [ -n "${QEMU_SRC:-}" ]; then
    if [ ! -f "$QEMU_SRC/VERSION" ] || ! grep -q '^10\.0\.' "$QEMU_SRC/VERSION"; then
        echo "fetch-qemu: QEMU_SRC=$QEMU_SRC is not a QEMU 10.0.x tree" >&2
        exit 1
    fi
    cd "$QEMU_SRC" && pwd
    exit 0
fi

tree=$CACHE/qemu-$VERSION
if [ -f "$tree/.unpacked" ]; then
    echo "$tree"
    exit 0
fi

mkdir -p "$CACHE"
verify() {
    echo "$SHA256  $CACHE/$TARBALL" | sha256sum -c --status
}
if [ ! -f "$CACHE/$TARBALL" ] || ! verify; then
    rm -f "$CACHE/$TARBALL"
    # tools/deps.sh adds the deb-src entries derived from this machine's
    # apt sources; without them apt-get source finds nothing.
    if ! (cd "$CACHE" && apt-get source --download-only --tar-only \
              "qemu=$DEB_VERSION") >&2; then
        echo "fetch-qemu: apt-get source failed; run tools/deps.sh as root" \
             "first (it adds deb-src entries), or set QEMU_SRC" >&2
        exit 1
    fi
    if ! verify; then
        echo "fetch-qemu: $TARBALL does not match sha256 $SHA256" >&2
        rm -f "$CACHE/$TARBALL"
        exit 1
    fi
fi

tmp=$(mktemp -d "$CACHE/unpack.XXXXXX")
tar -C "$tmp" -xJf "$CACHE/$TARBALL"
top=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -1)
rm -rf "$tree"
mv "$top" "$tree"
rmdir "$tmp"
touch "$tree/.unpacked"
echo "$tree"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install the Debian packages the build, tests, demo and benchmarks need.
# Idempotent: a second run checks dpkg and returns without touching apt.
set -euo pipefail

# meson >= 1.5 and python3-pycotap come from bookworm-backports.
BPO_PKGS="meson python3-pycotap"
# Build: QEMU's needs (DEVELOPERS.md), libseccomp (-sandbox), ccache.
# Firmware for binaries run from the build tree: seabios, ipxe-qemu,
# qemu-system-data.  Tests: bc,
# Sphinx (docs check), clang and its runtime (libFuzzer targets), libelf
# and libssl (the guest driver's kbuild tools, unpacked by guest/image.sh).
PKGS="build-essential pkg-config ninja-build libglib2.0-dev libpixman-1-dev
libfdt-dev zlib1g-dev flex bison python3-venv python3-setuptools
seabios ipxe-qemu qemu-system-data ccache xz-utils dpkg-dev git
busybox-static cpio gzip bc python3-sphinx clang-14 libclang-rt-14-dev
libelf1 libssl3 valgrind libseccomp-dev"

missing() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
            grep -q 'install ok installed' || echo "$p"
    done
}

meson_ok() {
    command -v meson >/dev/null &&
        dpkg --compare-versions "$(meson --version)" ge 1.5
}

# Add bookworm-backports (deb and deb-src) and deb-src for the base suites,
# derived from the mirrors this machine already uses: no host name is
# written into the repository.
add_sources() {
    local out=/etc/apt/sources.list.d/qemu-ivshmem.sources
    [ -f "$out" ] && return 0
    local uri
    uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
          awk '{print $2}' | grep -v security | head -1)
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk '$1 == "deb" && $0 !~ /security/ {
                   for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' \
              /etc/apt/sources.list)
    fi
    if [ -z "$uri" ]; then
        echo "deps: cannot find a Debian mirror in the apt sources" >&2
        exit 1
    fi
    local codename
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    cat > "$out" <<SRC
# Added by qemu-ivshmem tools/deps.sh from this machine's own apt sources.
Types: deb deb-src
URIs: $uri
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $uri
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    echo "deps: wrote $out (mirror $uri)"
    UPDATED=
}

installed_version() {
    dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null |
        sed -n 's/^install ok installed //p'
}

# libvirt 11.3 for the libvirt end-to-end suite (tests/suites/55-libvirt):
# only the libvirt packages come from backports, through an apt pin on
# libvirt* (`-t bookworm-backports` for them would also take systemd and
# more from backports).  libvirt's QEMU driver needs a QEMU package: the
# stock one below, so that apt does not pick bookworm's 7.2.
LIBVIRT_PKGS="libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-log
libvirt-clients"
# Debian's stock qemu-system-x86 10.0.2, the reference the interop suite
# (tests/suites/40-interop), the libvirt suite and the benchmarks run
# against: exactly this package set from backports (its other dependencies
# from bookworm).  Its qemu-system-data and seabios are also the firmware
# our build uses (tools/build.sh); they fit the 10.0.2 base.
STOCK_QEMU_PKGS="qemu-system-x86 qemu-system-common qemu-system-data seabios"
libvirt_ok() {
    local p v
    for p in $LIBVIRT_PKGS; do
        v=$(installed_version "$p")
        [ -n "$v" ] && dpkg --compare-versions "$v" ge 11.3 || return 1
    done
}
stock_qemu_ok() {
    local v
    v=$(installed_version qemu-system-x86)
    [ -n "$v" ] && dpkg --compare-versions "$v" ge 1:10.0.2 &&
        dpkg --compare-versions "$v" lt 1:10.0.3
}
install_stock_qemu() {
    apt-get install -y -qq --no-install-recommends \
        $(printf '%s/'"$codename"'-backports ' $STOCK_QEMU_PKGS)
    stock_qemu_ok || {
        echo "deps: qemu-system-x86 is '$(installed_version qemu-system-x86)'," \
             "not 10.0.2" >&2
        exit 1
    }
}
install_libvirt() {
    local pin=/etc/apt/preferences.d/qemu-ivshmem-libvirt.pref
    cat > "$pin" <<PIN
# Added by qemu-ivshmem tools/deps.sh: libvirt from $codename-backports,
# nothing else.
Package: libvirt*
Pin: release n=$codename-backports
Pin-Priority: 990
PIN
    apt-get install -y -qq --no-install-recommends $LIBVIRT_PKGS
    libvirt_ok || { echo "deps: libvirt >= 11.3 not installed" >&2; exit 1; }
}

need=$(missing $PKGS $BPO_PKGS)
if [ -z "$need" ] && meson_ok && libvirt_ok && stock_qemu_ok; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages ($need); run as root: $0" >&2
    exit 1
fi
UPDATED=no
add_sources
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
need=$(missing $PKGS)
[ -z "$need" ] || apt-get install -y -qq --no-install-recommends $need
apt-get install -y -qq --no-install-recommends -t "$codename-backports" $BPO_PKGS
meson_ok || { echo "deps: meson >= 1.5 not available" >&2; exit 1; }
stock_qemu_ok || install_stock_qemu
libvirt_ok || install_libvirt

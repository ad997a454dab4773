#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install what `make bench` needs beyond tools/deps.sh (which installs the
# reference QEMU, Debian's qemu-system-x86 10.0.2): gnuplot and bzip2.
# Idempotent: returns without touching apt when everything is there.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)

installed_version() {
    dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null |
        sed -n 's/^install ok installed //p'
}

"$top/tools/deps.sh"
need=()
[ -n "$(installed_version gnuplot-nox)" ] ||
    [ -n "$(installed_version gnuplot-qt)" ] || need+=(gnuplot-nox)
[ -n "$(installed_version bzip2)" ] || need+=(bzip2)
[ ${#need[@]} -eq 0 ] && exit 0

export DEBIAN_FRONTEND=noninteractive
apt-get update -q > /dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" > /dev/null

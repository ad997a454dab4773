#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install what `make bench` needs beyond tools/deps.sh: the reference QEMU
# (Debian's qemu-system-x86 10.0.2 from bookworm-backports) and gnuplot.
# Idempotent: returns without touching apt when everything is there.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
ref_version=1:10.0.2

installed_version() {
    dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null |
        sed -n 's/^install ok installed //p'
}

need=()
v=$(installed_version qemu-system-x86)
if [ -z "$v" ] || ! dpkg --compare-versions "$v" ge "$ref_version" ||
   ! dpkg --compare-versions "$v" lt 1:10.0.3; then
    need+=(qemu-system-x86)
fi
[ -n "$(installed_version gnuplot-nox)" ] ||
    [ -n "$(installed_version gnuplot-qt)" ] || need+=(gnuplot-nox)
[ -n "$(installed_version bzip2)" ] || need+=(bzip2)
[ ${#need[@]} -eq 0 ] && exit 0

# tools/deps.sh adds bookworm-backports to the apt sources.
"$top/tools/deps.sh"
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
export DEBIAN_FRONTEND=noninteractive
apt-get update -q > /dev/null
apt-get install -y -q --no-install-recommends -t "$codename-backports" \
    "${need[@]}" > /dev/null
v=$(installed_version qemu-system-x86)
case "$v" in
1:10.0.2*) ;;
*) echo "bench/deps: qemu-system-x86 is $v, not 10.0.2" >&2; exit 1 ;;
esac

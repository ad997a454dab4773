#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Debian's +ds QEMU tarball drops the edk2 firmware blobs that
# pc-bios/meson.build unpacks for x86_64 targets.  Put empty compressed
# placeholders in a composed tree (never in the series) so configure works;
# UEFI firmware is not used by this project.
set -euo pipefail
tree=$1
for fd in $(grep -o "'edk2-[a-z0-9_-]*\.fd'" "$tree/pc-bios/meson.build" | tr -d "'"); do
    f=$tree/pc-bios/$fd.bz2
    [ -f "$f" ] || bzip2 -c < /dev/null > "$f"
done

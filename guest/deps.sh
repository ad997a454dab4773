#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Install what the guest image and the end-to-end tests need on the host
# (Debian 12, as root).  Idempotent; a no-op when all is there.
# The guest's own packages (kernel, headers, busybox) are NOT installed:
# guest/image.sh fetches them with apt-get download (libelf1 and libssl3
# are the run-time needs of the unpacked linux-kbuild tools).
set -euo pipefail

pkgs=(gcc make binutils libc6-dev cpio gzip xz-utils zstd python3 libelf1 libssl3
      qemu-system-data seabios)
have_lists() {
    local policy
    policy=$(apt-cache policy linux-image-amd64 2>/dev/null)
    [[ $policy =~ Candidate:\ [0-9] ]]
}

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
        missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "guest/deps.sh: installing ${missing[*]}" >&2
    have_lists || apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi
# apt-get download needs package lists.
have_lists || apt-get update -q >&2

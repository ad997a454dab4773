#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Record edits made to upstream files in the composed tree as series diffs:
#   edit out/qemu/hw/misc/meson.build, then tools/capture-diff.sh hw/misc/meson.build
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
work=${QEMU_WORK:-$top/out/qemu}
pristine=$("$top/tools/fetch-qemu.sh")
[ $# -gt 0 ] || { echo "usage: $0 QEMU-PATH..." >&2; exit 1; }
for f in "$@"; do
    out=$top/series/patches/$f.diff
    mkdir -p "$(dirname "$out")"
    if diff -u --label "a/$f" --label "b/$f" "$pristine/$f" "$work/$f" > "$out"; then
        rm -f "$out"
        echo "capture-diff: $f is unchanged; no diff kept"
    else
        echo "capture-diff: wrote ${out#"$top"/}"
    fi
done

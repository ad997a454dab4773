#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Lay the series over a copy of the pristine QEMU tree, touching only the
# files whose content changes, so that ninja recompiles only what changed.
#   series/files/<path>        whole new files
#   series/patches/<path>.diff unified diff against the pristine <path>
#   series/removed             upstream paths the series deletes
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
series=${SERIES:-$top/series}
work=${QEMU_WORK:-$top/out/qemu}
pristine=$("$top/tools/fetch-qemu.sh")

if [ ! -f "$work/.pristine" ] || [ "$(cat "$work/.pristine")" != "$pristine" ]; then
    echo "compose: copying pristine tree to $work" >&2
    rm -rf "$work"
    mkdir -p "$(dirname "$work")"
    cp -a "$pristine" "$work"
    rm -f "$work/.unpacked"
    echo "$pristine" > "$work/.pristine"
fi

changed=0
removed_paths=$(grep -v '^[[:space:]]*\(#\|$\)' "$series/removed")
is_removed() {               # PATH: does the series delete it upstream?
    local r
    for r in $removed_paths; do
        case "$1" in "$r" | "$r"/*) return 0 ;; esac
    done
    return 1
}
install_if_different() {     # SRC DST
    if ! cmp -s "$1" "$2"; then
        mkdir -p "$(dirname "$2")"
        cp "$1" "$2"
        echo "compose: updated ${2#"$work"/}" >&2
        changed=$((changed + 1))
    fi
}

manifest=$(mktemp)
tmp=$(mktemp -d)
trap 'rm -rf "$manifest" "$tmp"' EXIT

# Whole new files.
(cd "$series/files" && find . -type f | sed 's|^\./||' | sort) > "$tmp/files"
while read -r f; do
    install_if_different "$series/files/$f" "$work/$f"
    echo "$f" >> "$manifest"
done < "$tmp/files"

# Diffs against pristine upstream files.
(cd "$series/patches" && find . -type f -name '*.diff' | sed 's|^\./||' | sort) \
    > "$tmp/patches"
while read -r p; do
    f=${p%.diff}
    if [ ! -f "$pristine/$f" ]; then
        echo "compose: $p patches $f, which upstream does not have" >&2
        exit 1
    fi
    if grep -q -m1 "^+++ " "$series/patches/$p" &&
       ! grep -q "^+++ b/$f\([[:space:]]\|$\)" "$series/patches/$p"; then
        echo "compose: $p must patch exactly b/$f" >&2
        exit 1
    fi
    mkdir -p "$tmp/p/$(dirname "$f")"
    cp "$pristine/$f" "$tmp/p/$f"
    if ! patch -s -p1 -d "$tmp/p" --no-backup-if-mismatch -r - \
             < "$series/patches/$p" >&2; then
        echo "compose: $p does not apply to QEMU's $f" >&2
        exit 1
    fi
    install_if_different "$tmp/p/$f" "$work/$f"
    echo "$f" >> "$manifest"
done < "$tmp/patches"

# Upstream files the series deletes (unless the series provides its own).
for r in $removed_paths; do
    [ -e "$pristine/$r" ] || { echo "compose: removed path $r is not upstream" >&2; exit 1; }
    for f in $(cd "$pristine" && find "$r" -type f); do
        if [ -e "$work/$f" ] && ! grep -qxF "$f" "$manifest"; then
            rm -f "$work/$f"
            echo "compose: removed $f" >&2
        fi
    done
done

# Files the previous composition laid that the series no longer has.
if [ -f "$work/.series-manifest" ]; then
    sort -u "$manifest" > "$tmp/new"
    sort -u "$work/.series-manifest" | comm -23 - "$tmp/new" | while read -r f; do
        if [ -f "$pristine/$f" ] && ! is_removed "$f"; then
            cp "$pristine/$f" "$work/$f"
            echo "compose: restored upstream $f" >&2
        else
            rm -f "$work/$f"
            echo "compose: dropped $f" >&2
        fi
    done
fi
sort -u "$manifest" > "$work/.series-manifest"
echo "$work"

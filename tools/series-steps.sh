#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Write a series step: the forward diff between two versions of series/.
#
#   tools/series-steps.sh [-x GLOB]... OLD NEW > series/steps/NAME.diff
#
# OLD and NEW are series directories (like series/) or git revisions of
# this repository (their series/ is taken).  The diff covers every file
# that both versions add (files/...) or patch (patches/....diff) and that
# differs, as QEMU paths (a/hw/misc/ivshmem.c), which is what a commit
# listing steps/NAME.diff in series/commits applies on top of OLD.  Files
# only one version has are not steps: their commit adds them whole
# (files/...), and the script names them on stderr.  -x leaves out the
# QEMU paths GLOB matches ('*' also matches '/'), e.g. -x 'docs/*' when
# the docs come later in the series than the step.
#
# How the cut is kept up to date: series/ holds the final version; to
# change what one commit does, take the series as it is before and after
# that commit (git revisions of a branch that strips features one commit
# at a time work well), edit, and write the step again with this script.
# tools/export-series.sh checks that every step reverse-applies, without
# fuzz, to the final files.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "series-steps: $*" >&2; exit 1; }
excludes=()
while [ "${1:-}" = -x ]; do
    [ $# -ge 2 ] || die "-x needs a GLOB"
    excludes+=("$2")
    shift 2
done
[ $# = 2 ] || die "usage: $0 [-x GLOB]... OLD NEW (series directories or git revisions)"
excluded() {            # PATH: does an -x GLOB match it?
    local g
    for g in "${excludes[@]}"; do
        # shellcheck disable=SC2053  # the pattern is meant to glob
        [[ $1 == $g ]] && return 0
    done
    return 1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pristine=$("$top/tools/fetch-qemu.sh")

series_dir() {          # ARG NAME: a series directory for ARG, echoed
    if [ -d "$1/files" ]; then
        (cd "$1" && pwd)
    else
        git -C "$top" rev-parse -q --verify "$1^{commit}" > /dev/null ||
            die "$1 is neither a series directory nor a git revision"
        mkdir -p "$tmp/$2"
        git -C "$top" archive "$1" series | tar -x -C "$tmp/$2"
        echo "$tmp/$2/series"
    fi
}
compose() {             # SERIES OUTDIR: every added or patched file, composed
    local s=$1 out=$2 p f
    mkdir -p "$out"
    (cd "$s/files" && find . -type f | sed 's|^\./||') | while read -r f; do
        mkdir -p "$out/$(dirname "$f")"
        cp "$s/files/$f" "$out/$f"
    done
    [ -d "$s/patches" ] || return 0
    (cd "$s/patches" && find . -type f -name '*.diff' | sed 's|^\./||') | while read -r p; do
        f=${p%.diff}
        mkdir -p "$out/$(dirname "$f")"
        cp "$pristine/$f" "$out/$f"
        patch -s -p1 -d "$out" --no-backup-if-mismatch -r - < "$s/patches/$p" >&2 ||
            die "$s/patches/$p does not apply"
    done
}
old=$(series_dir "$1" old)
new=$(series_dir "$2" new)
compose "$old" "$tmp/a"
compose "$new" "$tmp/b"
(cd "$tmp/a" && find . -type f | sed 's|^\./||' | sort) > "$tmp/a.list"
(cd "$tmp/b" && find . -type f | sed 's|^\./||' | sort) > "$tmp/b.list"
comm -23 "$tmp/a.list" "$tmp/b.list" | sed 's/^/series-steps: only in OLD (not a step): /' >&2
comm -13 "$tmp/a.list" "$tmp/b.list" | sed 's/^/series-steps: only in NEW (not a step): /' >&2
comm -12 "$tmp/a.list" "$tmp/b.list" | while read -r f; do
    cmp -s "$tmp/a/$f" "$tmp/b/$f" && continue
    excluded "$f" && continue
    # Plain unified diff with QEMU paths, no timestamps: stable output.
    diff -u --label "a/$f" --label "b/$f" "$tmp/a/$f" "$tmp/b/$f" || true
done

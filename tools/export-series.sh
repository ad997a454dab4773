#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Export the series as git format-patch files against pristine QEMU 10.0.2.
#
# series/commits cuts series/ into ordered commits (see its header for the
# format).  Every series item (series/files/*, series/patches/*.diff,
# series/steps/*.diff and each line of series/removed) must belong to
# exactly one commit; an unassigned item is an error, so a new file can't
# be silently dropped.
#
# series/ holds the final version of every file.  A file that evolves
# over several commits is added whole by the first one; each later commit
# that changes it lists a step (series/steps/NAME.diff, the forward diff
# of that commit).  Its earlier versions are the final one with the later
# steps reverse-applied, latest first, without fuzz: a step that no
# longer reverse-applies (the final file was edited under it) stops the
# export; tools/series-steps.sh regenerates the steps.
#
# The commits are built in a bare repository, straight into the index
# (nothing is checked out, and upstream files the series deletes are
# removed by git without being read).  Identity and dates are fixed, so
# the same series always gives the same commits and the same patches.
#
#   SERIES_DIR=DIR   the series to export (default series/)
#   SERIES_OUT=DIR   output directory (default out/series-export):
#                    DIR/repo.git holds refs/heads/series, DIR/patches the
#                    format-patch files (0000 is the cover letter)
# The last output line is the patches directory.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
series=${SERIES_DIR:-$top/series}
spec=$series/commits
out=${SERIES_OUT:-$top/out/series-export}
pristine=$("$top/tools/fetch-qemu.sh")
version=$(cat "$pristine/VERSION")
base_repo=$top/out/qemu-$version-base.git

die() { echo "export-series: $*" >&2; exit 1; }
warn() { echo "export-series: warning: $*" >&2; }

[ -f "$spec" ] || die "no $spec"

# --- Parse series/commits -------------------------------------------------
author= date= spread=
ncommits=0
subjects=() bodies=() patterns=()
cover_subject= cover_body=
section=header          # header | body | paths | cover
lineno=0
append_body() {         # LINE: add to the current commit or cover body
    if [ "$section" = cover ]; then
        cover_body+="$1"$'\n'
    else
        bodies[ncommits - 1]+="$1"$'\n'
    fi
}
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    case "$line" in
    '#'*) continue ;;
    '=== cover: '*)
        cover_subject=${line#=== cover: }
        section=cover
        ;;
    '=== '*)
        ncommits=$((ncommits + 1))
        subjects+=("${line#=== }")
        bodies+=("")
        patterns+=("")
        section=body
        ;;
    '--- paths')
        [ "$section" = body ] || die "commits:$lineno: '--- paths' outside a commit"
        section=paths
        ;;
    *)
        case "$section" in
        header)
            case "$line" in
            author:*) author=$(echo "${line#author:}" | sed 's/^ *//') ;;
            date:*) date=$(echo "${line#date:}" | sed 's/^ *//') ;;
            spread:*) spread=$(echo "${line#spread:}" | sed 's/^ *//') ;;
            '') ;;
            *) die "commits:$lineno: unexpected header line: $line" ;;
            esac
            ;;
        cover)
            case "$line" in
            '@bench-summary '*'@')
                # The benchmark summary, generated from its JSON.
                json=${line#@bench-summary }
                json=${json%@}
                [ -f "$top/$json" ] || die "commits:$lineno: no $json"
                summary=$(cd "$top" && python3 bench/report.py --cover "$json" 2>&1 <&-) ||
                    die "commits:$lineno: bench/report.py --cover $json failed: $summary"
                append_body "$summary"
                ;;
            *) append_body "$line" ;;
            esac
            ;;
        body) append_body "$line" ;;
        paths)
            p=$(echo "$line" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
            [ -z "$p" ] && continue
            case "$p" in
            files/* | patches/* | removed/* | steps/*) ;;
            *) die "commits:$lineno: path must start with files/, patches/, steps/ or removed/: $p" ;;
            esac
            patterns[ncommits - 1]+="$p"$'\n'
            ;;
        esac
        ;;
    esac
done < "$spec"

[ -n "$author" ] || die "commits: no 'author:' header"
[ -n "$date" ] || die "commits: no 'date:' header"
[ "$ncommits" -gt 0 ] || die "commits: no commit"
start_epoch=$(date -u -d "$date" +%s) || die "commits: bad date '$date'"
for i in $(seq 0 $((ncommits - 1))); do
    [ -n "${patterns[i]}" ] || die "commit '${subjects[i]}' lists no paths"
done

# --- List the series items and assign each to exactly one commit ----------
for f in "$series"/*; do
    case "${f##*/}" in
    files | patches | removed | steps | commits) ;;
    *) die "unknown series item ${f#"$top"/}: put it under files/, patches/ or steps/" ;;
    esac
done
items=$(
    (cd "$series" && find files patches steps -type f 2>/dev/null | sort)
    grep -v '^[[:space:]]*\(#\|$\)' "$series/removed" | sed 's|/*$||; s|^|removed/|'
)
declare -A owner=()
if [ -n "$spread" ]; then
    case "$spread" in
    patches/*.diff) ;;
    *) die "commits: spread: must name a patches/*.diff" ;;
    esac
    [ -f "$series/$spread" ] || die "commits: spread: no series/$spread"
    owner[$spread]=spread
fi
for item in $items; do
    for i in $(seq 0 $((ncommits - 1))); do
        while IFS= read -r pat; do
            [ -n "$pat" ] || continue
            # shellcheck disable=SC2053  # the pattern is meant to glob
            if [[ $item == $pat ]]; then
                if [ "${owner[$item]:-}" = spread ]; then
                    die "$item is spread over the commits; it can't be in '${subjects[i]}'"
                fi
                if [ -n "${owner[$item]:-}" ] && [ "${owner[$item]}" != "$i" ]; then
                    die "$item is in two commits: '${subjects[owner[$item]]}' and '${subjects[i]}'"
                fi
                owner[$item]=$i
            fi
        done <<< "${patterns[i]}"
    done
done
unassigned=0
for item in $items; do
    if [ -z "${owner[$item]:-}" ]; then
        echo "export-series: series/$item is in no commit of series/commits" >&2
        unassigned=1
    fi
    case "$item" in
    patches/*.diff | steps/*.diff) ;;
    patches/* | steps/*) die "series/$item: diffs must be named *.diff" ;;
    esac
done
[ "$unassigned" = 0 ] || die "assign every series item to a commit in series/commits"
for i in $(seq 0 $((ncommits - 1))); do
    while IFS= read -r pat; do
        [ -n "$pat" ] || continue
        hit=0
        for item in $items; do
            # shellcheck disable=SC2053
            if [[ $item == $pat ]]; then hit=1; break; fi
        done
        [ "$hit" = 1 ] || warn "'$pat' (in '${subjects[i]}') matches no series item"
    done <<< "${patterns[i]}"
done
for item in $items; do
    case "$item" in
    patches/*)
        f=${item#patches/}
        f=${f%.diff}
        [ ! -e "$series/files/$f" ] || die "$f has both a file and a diff in series/"
        [ -f "$pristine/$f" ] || die "series/$item patches $f, which upstream does not have"
        ;;
    removed/*)
        [ -e "$pristine/${item#removed/}" ] || die "removed path ${item#removed/} is not upstream"
        ;;
    esac
done

# --- Steps: the files that evolve over several commits ---------------------
declare -A intro=()      # QEMU path -> the commit that adds or patches it
declare -A stepped=()    # QEMU path -> 1 if a step changes it
for item in $items; do
    case "$item" in
    files/*) intro[${item#files/}]=${owner[$item]} ;;
    patches/*) f=${item#patches/}; intro[${f%.diff}]=${owner[$item]} ;;
    esac
done
step_items=$(printf '%s\n' $items | grep '^steps/' || true)
for item in $step_items; do
    i=${owner[$item]}
    ! grep -q '^\(---\|+++\) /dev/null' "$series/$item" ||
        die "series/$item adds or deletes a whole file: list it under files/ in its commit"
    paths=$(sed -n 's|^+++ b/||p' "$series/$item" | sed 's/\t.*$//')
    [ -n "$paths" ] || die "series/$item changes no file"
    for f in $paths; do
        [ -n "${intro[$f]:-}" ] ||
            die "series/$item changes $f, which no commit adds or patches"
        [ "${intro[$f]}" -lt "$i" ] ||
            die "series/$item changes $f in commit $((i + 1)), which only comes in commit $((intro[$f] + 1))"
        stepped[$f]=1
    done
done

# --- The pristine base repository (cached) --------------------------------
name=${author% <*}
email=${author##*<}
email=${email%>}
export GIT_AUTHOR_NAME=$name GIT_AUTHOR_EMAIL=$email
export GIT_COMMITTER_NAME=$name GIT_COMMITTER_EMAIL=$email
base_date="@$start_epoch +0000"
exec 8> "$base_repo.lock"
flock 8
if [ ! -f "$base_repo/qemu-pristine" ] ||
   [ "$(cat "$base_repo/qemu-pristine")" != "$pristine" ]; then
    echo "export-series: creating base repository $base_repo" >&2
    rm -rf "$base_repo"
    git init -q --bare "$base_repo"
    # -f: take every file of the tarball, whatever QEMU's .gitignore says;
    # .unpacked is fetch-qemu.sh's marker, not QEMU.
    GIT_DIR=$base_repo GIT_WORK_TREE=$pristine GIT_INDEX_FILE=$base_repo/base-index \
        git -c core.bare=false add -A -f -- . ':(exclude).unpacked'
    tree=$(GIT_DIR=$base_repo GIT_INDEX_FILE=$base_repo/base-index git write-tree)
    rm -f "$base_repo/base-index"
    base=$(echo "QEMU $version" |
           GIT_DIR=$base_repo GIT_AUTHOR_DATE=$base_date GIT_COMMITTER_DATE=$base_date \
           git commit-tree "$tree")
    GIT_DIR=$base_repo git update-ref refs/heads/master "$base"
    GIT_DIR=$base_repo git tag "v$version" "$base"
    echo "$pristine" > "$base_repo/qemu-pristine"
fi
base=$(GIT_DIR=$base_repo git rev-parse "refs/tags/v$version^{commit}")
flock -u 8

# --- Build the commits ----------------------------------------------------
repo=$out/repo.git
patches=$out/patches
rm -rf "$repo" "$patches"
mkdir -p "$out"
git clone -q --bare --shared "$base_repo" "$repo"
export GIT_DIR=$repo
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export GIT_INDEX_FILE=$tmp/index
git read-tree "$base"

# Every version of the stepped files: the final one, then going back one
# commit at a time, reverse-applying that commit's steps (last one first).
# $tmp/version/I holds them as they are after commit I.
cur=$tmp/current
for f in "${!stepped[@]}"; do
    mkdir -p "$cur/$(dirname "$f")"
    if [ -e "$series/files/$f" ]; then
        cp "$series/files/$f" "$cur/$f"
    else
        cp "$pristine/$f" "$cur/$f"
        patch -s -p1 -d "$cur" --no-backup-if-mismatch -r - < "$series/patches/$f.diff" >&2 ||
            die "series/patches/$f.diff does not apply to QEMU's $f"
    fi
done
if [ "${#stepped[@]}" -gt 0 ]; then
    for i in $(seq $((ncommits - 1)) -1 0); do
        mkdir -p "$tmp/version/$i"
        (cd "$cur" && cp -a --parents "${!stepped[@]}" "$tmp/version/$i/")
        for item in $(printf '%s\n' $step_items | sort -r); do
            [ "${owner[$item]}" = "$i" ] || continue
            patch -s -R -F0 -p1 -d "$cur" --no-backup-if-mismatch -r - < "$series/$item" >&2 ||
                die "series/$item does not reverse-apply to the later version of its files: regenerate the steps (tools/series-steps.sh)"
        done
    done
fi

# Does the series provide its own version of upstream file $1?
provided() { [ -e "$series/files/$1" ]; }

add_blob() {            # MODE SRC PATH
    local blob
    blob=$(git hash-object -w -- "$2")
    git update-index --add --cacheinfo "$1,$blob,$3"
}
apply_item() {          # ITEM
    local f mode
    case "$1" in
    files/*)
        f=${1#files/}
        mode=100644
        [ -x "$series/$1" ] && mode=100755
        add_blob "$mode" "$series/$1" "$f"
        ;;
    patches/*)
        f=${1#patches/}
        f=${f%.diff}
        mode=$(git ls-tree "$base" -- "$f" | awk '{print $1}')
        mkdir -p "$tmp/p/$(dirname "$f")"
        cp "$pristine/$f" "$tmp/p/$f"
        patch -s -p1 -d "$tmp/p" --no-backup-if-mismatch -r - < "$series/$1" >&2 ||
            die "series/$1 does not apply to QEMU's $f"
        add_blob "$mode" "$tmp/p/$f" "$f"
        ;;
    removed/*)
        f=${1#removed/}
        # Delete the upstream files under the path, except those the series
        # replaces with its own (their commit rewrites them).
        git ls-tree -r --name-only "$base" -- "$f" | while IFS= read -r u; do
            provided "$u" ||
                printf '0 %040d\t%s\n' 0 "$u"
        done | git update-index --index-info
        ;;
    esac
}

# The spread diff (MAINTAINERS) only adds lines.  Each "+F: PATTERN" line
# goes into the first commit that touches a file PATTERN covers, the other
# added lines (section name, M:, S:...) with the first F: line; so each
# commit that adds files also lists them in MAINTAINERS, as checkpatch.pl
# wants.
declare -A f_in=()       # F: pattern -> commit that introduced it
if [ -n "$spread" ]; then
    spread_file=${spread#patches/}
    spread_file=${spread_file%.diff}
    grep -q '^-\([^-]\|$\)' "$series/$spread" &&
        die "series/$spread may only add lines: it is spread over the commits"
    mapfile -t f_patterns < <(sed -n 's/^+F:[[:space:]]*//p' "$series/$spread")
    [ "${#f_patterns[@]}" -gt 0 ] || die "series/$spread adds no F: line"
fi
covers() {              # PATTERN PATH: does a MAINTAINERS F: pattern cover PATH?
    case "$1" in
    */) [[ $2 == "$1"* ]] ;;
    *) [[ $2 == $1 ]] || [[ $2 == "$1"/* ]] ;;
    esac
}
apply_spread() {        # COMMIT-INDEX PARENT: lay the spread lines due so far
    local touched pat f
    touched=$(git diff-index --cached --name-only "$2")
    for pat in "${f_patterns[@]}"; do
        [ -z "${f_in[$pat]:-}" ] || continue
        for f in $touched; do
            if covers "$pat" "$f"; then
                f_in[$pat]=$1
                break
            fi
        done
    done
    [ "${#f_in[@]}" -gt 0 ] || return 0
    # Keep the "+F:" lines introduced so far and every other line; fix the
    # hunk headers' new-side line counts.
    printf '%s\n' "${!f_in[@]}" > "$tmp/f-in"
    awk -v keepfile="$tmp/f-in" '
        BEGIN { while ((getline l < keepfile) > 0) keep[l] = 1 }
        function flush() {
            if (hdr != "") {
                printf "@@ -%s,%d +%s,%d @@\n", o, oc, n, nc
                printf "%s", body
            }
            hdr = ""; body = ""
        }
        /^@@ / {
            flush()
            hdr = $0
            split($2, a, ","); o = substr(a[1], 2)
            split($3, b, ","); n = substr(b[1], 2)
            oc = 0; nc = 0
            next
        }
        hdr == "" { print; next }
        /^\+F:/ {
            p = $0; sub(/^\+F:[ \t]*/, "", p)
            if (!(p in keep)) { next }
        }
        /^\+/ { nc++ }
        /^ / || /^$/ { oc++; nc++ }
        { body = body $0 "\n" }
        END { flush() }
    ' "$series/$spread" > "$tmp/spread.diff"
    local mode
    mode=$(git ls-tree "$base" -- "$spread_file" | awk '{print $1}')
    rm -rf "$tmp/s"
    mkdir -p "$tmp/s/$(dirname "$spread_file")"
    cp "$pristine/$spread_file" "$tmp/s/$spread_file"
    patch -s -p1 -d "$tmp/s" --no-backup-if-mismatch -r - < "$tmp/spread.diff" >&2 ||
        die "series/$spread (lines due in commit $(($1 + 1))) does not apply"
    add_blob "$mode" "$tmp/s/$spread_file" "$spread_file"
}

head=$base
for i in $(seq 0 $((ncommits - 1))); do
    for item in $items; do
        if [ "${owner[$item]}" = "$i" ]; then
            apply_item "$item"
        fi
    done
    # The stepped files as they are after this commit.
    for f in "${!stepped[@]}"; do
        [ "${intro[$f]}" -le "$i" ] || continue
        mode=$(git ls-files -s -- "$f" | awk '{print $1}')
        add_blob "$mode" "$tmp/version/$i/$f" "$f"
    done
    if [ -n "$spread" ]; then
        apply_spread "$i" "$head"
    fi
    tree=$(git write-tree)
    [ "$tree" != "$(git rev-parse "$head^{tree}")" ] ||
        die "commit '${subjects[i]}' changes nothing"
    # Strip leading/trailing blank lines of the body.
    body=$(printf '%s' "${bodies[i]}" | sed -e '/./,$!d' | sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}')
    [ -n "$body" ] || die "commit '${subjects[i]}' has no body"
    printf '%s\n\n%s\n\nSigned-off-by: %s\n' "${subjects[i]}" "$body" "$author" > "$tmp/msg"
    when="@$((start_epoch + 60 * (i + 1))) +0000"
    head=$(GIT_AUTHOR_DATE=$when GIT_COMMITTER_DATE=$when \
           git commit-tree "$tree" -p "$head" -F "$tmp/msg")
done
if [ -n "$spread" ]; then
    for pat in "${f_patterns[@]}"; do
        [ -n "${f_in[$pat]:-}" ] ||
            die "series/$spread: 'F: $pat' covers no file that a commit touches"
    done
fi
git update-ref refs/heads/series "$head"

# --- format-patch ---------------------------------------------------------
cover=()
if [ -n "$cover_subject" ]; then
    desc=$(printf '%s\n\n%s' "$cover_subject" "$cover_body" | sed -e ':a' -e '/^\n*$/{$d;N;ba' -e '}')
    git config branch.series.description "$desc"
    cover=(--cover-letter --cover-from-description=subject)
fi
# -B: a rewritten upstream file is shown as a whole new text, not as a
# meaningless line-by-line diff against the old one.
when="@$((start_epoch + 60 * (ncommits + 1))) +0000"
GIT_AUTHOR_DATE=$when GIT_COMMITTER_DATE=$when \
    git format-patch -q -B --no-renames --no-signature \
        "${cover[@]}" -o "$patches" "$base..series" > /dev/null
echo "export-series: $ncommits commits on $base (QEMU $version) in $repo" >&2
echo "$patches"

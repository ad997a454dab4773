#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run one fuzzing campaign and keep its record: libFuzzer's final stats
# (executions, time, corpus, crashes) with the command, the commit and the
# machine load, as fuzz/findings/stats/<UTC time>-<target>[-TAG].log, and
# every crash input in fuzz/findings/stats/<same name>.crashes/.
#   campaign.sh TARGET SECONDS [TAG [LIBFUZZER ARGS...]]
#   TARGET      proto, server or guest (fuzz/build.sh's fuzz-TARGET)
#   FUZZ_BIN    directory of the built targets (default out/qemu/fuzz)
#   FUZZ_NICE   nice level (default 19: the machine is shared)
#   IVSHMEM_SERVER, QEMU_BINARY  what fuzz-server and fuzz-guest drive
#                (default: out/qemu/build's)
# The corpus grows in out/fuzz-corpus/TARGET, seeded from fuzz/corpus/TARGET.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
target=${1:?usage: campaign.sh TARGET SECONDS [TAG [ARGS...]]}
secs=${2:?usage: campaign.sh TARGET SECONDS [TAG [ARGS...]]}
tag=${3:-}
shift $(( $# < 3 ? $# : 3 ))
bin=${FUZZ_BIN:-$top/out/qemu/fuzz}/fuzz-$target
build=$top/out/qemu/build
export IVSHMEM_SERVER=${IVSHMEM_SERVER:-$build/contrib/ivshmem-server/ivshmem-server}
export QEMU_BINARY=${QEMU_BINARY:-$build/qemu-system-x86_64}
[ -x "$bin" ] || { echo "campaign: $bin missing (fuzz/build.sh)" >&2; exit 1; }

name=$(date -u +%Y-%m-%dT%H%MZ)-$target${tag:+-$tag}
dir=$top/fuzz/findings/stats
mkdir -p "$dir" "$top/out/fuzz-corpus/$target"
log=$dir/$name.log
crashes=$dir/$name.crashes
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/artifacts"

cmd=(nice -n "${FUZZ_NICE:-19}" "$bin" -max_total_time="$secs"
     -print_final_stats=1 -artifact_prefix="$tmp/artifacts/"
     "$@" "$top/out/fuzz-corpus/$target" "$top/fuzz/corpus/$target")
{
    echo "# campaign $name"
    echo "# commit $(git -C "$top" rev-parse HEAD)$(git -C "$top" status \
        --porcelain --untracked-files=no | grep -q . && echo ' (dirty)')"
    echo "# target $bin"
    [ "$target" = proto ] || echo "# IVSHMEM_SERVER $IVSHMEM_SERVER"
    [ "$target" != guest ] || echo "# QEMU_BINARY $QEMU_BINARY"
    echo "# command ${cmd[*]}"
    echo "# start $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$log"
start=$(date +%s)
rc=0
(cd "$tmp" && "${cmd[@]}") > "$tmp/out" 2>&1 || rc=$?
end=$(date +%s)
# The crash inputs first: nothing below may lose them.
if [ -n "$(ls "$tmp/artifacts")" ]; then
    mkdir -p "$crashes"
    cp "$tmp/artifacts/"* "$crashes/"
fi
set +e +o pipefail          # a pattern that matches nothing is no error
{
    echo "# end $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# wall time $((end - start)) s, exit status $rc"
    n=$(ls "$tmp/artifacts" | wc -l)
    echo "# crash inputs $n"
    # libFuzzer's start, its last progress lines and the final stats
    grep -E '^INFO:' "$tmp/out" | head -8
    # the corpus when loaded, when done, and the last progress line
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$tmp/out"
    grep -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse|RELOAD)' "$tmp/out" |
        tail -1
    echo "# ..."
    # what the harness said about a finding (its own lines, not the
    # server's log it dumps after them)
    grep -E '^fuzz-[a-z]+:|check failed' "$tmp/out" | head -20
    echo "# ..."
    grep -vE '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)|^  ' "$tmp/out" | tail -40
} >> "$log"
set -e -o pipefail
sed -n 's/^# \(wall\|crash\)/\1/p' "$log" >&2
grep '^stat::' "$log" >&2 || true
echo "$log"

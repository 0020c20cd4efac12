#!/usr/bin/env bash
# Runs every libFuzzer target for a set time and merges what it finds into the corpus under
# tests/fuzz/corpus/<target>/, files named by their sha256 (ctest replays them on every build).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default 60 seconds, every target
#
# Crashes are left in tests/fuzz/artifacts/ and make the script exit 1.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
shift || true
build="$here/build-fuzz"

CC=clang cmake -S "$here" -B "$build" -DDLOTEL_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(ls "$here/tests/fuzz/corpus")
fi
cmake --build "$build" -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null

mkdir -p "$here/tests/fuzz/artifacts"
status=0
for t in "${targets[@]}"; do
    corpus="$here/tests/fuzz/corpus/$t"
    work=$(mktemp -d)
    log="$work/log"
    echo "fuzz: $t for ${secs}s"
    if ! "$build/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 \
        -artifact_prefix="$here/tests/fuzz/artifacts/$t-" "$work" "$corpus" >"$log" 2>&1; then
        echo "fuzz: $t FAILED, see tests/fuzz/artifacts/ and $log"
        tail -30 "$log"
        status=1
    fi
    grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec' "$log" | sed "s/^/fuzz: $t /"
    # Keep only inputs that add coverage, named by sha256 like the rest of the corpus.
    merged=$(mktemp -d)
    "$build/fuzz_$t" -merge=1 "$merged" "$corpus" "$work" >/dev/null 2>&1 || true
    for f in "$merged"/*; do
        [ -f "$f" ] || continue
        sum=$(sha256sum "$f" | cut -d' ' -f1)
        [ -f "$corpus/$sum" ] || cp "$f" "$corpus/$sum"
    done
    rm -rf "$work" "$merged"
done
exit $status

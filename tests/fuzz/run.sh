#!/bin/sh
# Builds the fuzz harnesses with clang (-fsanitize=fuzzer,address,undefined) and runs each target
# for SECONDS (default 60), one after the other (one core each).
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]      targets: form iostream http chunked client websocket tls
#
# Environment: BUILD_DIR (default build-fuzz), FUZZ_ARGS (extra libFuzzer flags, e.g. -dict=...).
# New inputs go to $BUILD_DIR/fuzz-corpus/<target> (the seeds in tests/fuzz/corpus stay as they
# are); crashes to $BUILD_DIR/fuzz-artifacts/<target>/; tests/fuzz/<target>.dict is passed as
# -dict when present. Exits non-zero if any target failed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-form iostream http chunked client websocket tls}
build=${BUILD_DIR:-$src/build-fuzz}

CC=${CC:-clang} cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DGALE_SANITIZE=ON -DGALE_FUZZ=ON -DGALE_BUILD_TESTS=ON >/dev/null
bins=
for t in $targets; do bins="$bins fuzz_$t"; done
# shellcheck disable=SC2086
for b in $bins; do cmake --build "$build" -j2 --target "$b" >/dev/null; done

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
summary=
for t in $targets; do
    corpus="$build/fuzz-corpus/$t"
    artifacts="$build/fuzz-artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    seeds=
    [ -d "$here/corpus/$t" ] && seeds="$here/corpus/$t"
    [ -d "$here/regress/$t" ] && seeds="$seeds $here/regress/$t"
    dict=
    [ -f "$here/$t.dict" ] && dict="-dict=$here/$t.dict"
    log="$build/fuzz-$t.log"
    echo "== fuzz_$t: ${seconds}s (log: $log)"
    # shellcheck disable=SC2086
    if "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" $dict ${FUZZ_ARGS:-} \
        "$corpus" $seeds >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        status=1
        tail -n 40 "$log"
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
    line="fuzz_$t: $result, ${execs:-?} execs, ${speed:-?} exec/s, ${cov:-no coverage line}"
    echo "$line"
    summary="$summary$line
"
done
printf '\n%s' "$summary"
exit $status

#!/bin/bash
# Coroutine benchmark, in one run: bench/coro_bench.c (await round trip against a plain callback
# hop and against ucontext switching; RSS per suspended coroutine), then the hello server with
# its handler as a plain method against the same handler as a coroutine (bench/coro_hello.c),
# server CPU per request measured as in bench/http_bench.sh.
#
#     bench/coro_bench.sh [DURATION] [ROUNDS]          (defaults: 10s, 5)
#
# Each round starts coro_hello pinned to CPU 0 (callback handler, then coroutine handler; the
# order alternates between rounds), warms it up for 1 s, and loads it with
# `taskset -c 1 wrk -t1 -c64 -dDURATION`; utime+stime from /proc/PID/stat right before and after
# wrk over the requests wrk completed is the server CPU per request. Access log at the default
# level (info), stderr on /dev/null, as the hello benchmark.
#
# Environment: BENCH_BUILD (default build-bench), BENCH_NO_BUILD, BENCH_CPU_SERVER /
# BENCH_CPU_CLIENT (default 0 / 1).
set -u

DURATION=${1:-10s}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
PORT=8882
HZ=$(getconf CLK_TCK)
OUT=$(mktemp -d /tmp/gale-coro-bench.XXXXXX)
SERVER_PID=

cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in wrk taskset cmake curl; do
    command -v $tool >/dev/null || { echo "coro_bench: $tool not found" >&2; exit 1; }
done

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    echo "== building in $BUILD"
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGALE_BUILD_BENCH=ON \
            -DGALE_BUILD_TESTS=OFF >"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
    fi
    cmake --build "$BUILD" -j2 --target coro_bench coro_hello >"$OUT/build.log" 2>&1 ||
        { cat "$OUT/build.log"; exit 1; }
fi

echo "== micro-benchmarks (taskset -c $CPU_CLIENT $BUILD/bin/coro_bench)"
taskset -c "$CPU_CLIENT" "$BUILD/bin/coro_bench" 200000 7 2>/dev/null

cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# run MODE ROUND: one measured wrk run; appends "MODE us_per_request req_per_s" to results.
run() {
    local mode=$1 round=$2 flag= t0 t1 reqs rps
    [ "$mode" = coro ] && flag=--coro
    env -u GALE_LOG_LEVEL taskset -c "$CPU_SERVER" "$BUILD/bin/coro_hello" --port $PORT $flag \
        2>/dev/null &
    SERVER_PID=$!
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break
        sleep 0.1
    done
    taskset -c "$CPU_CLIENT" wrk -t1 -c64 -d1s "http://127.0.0.1:$PORT/" >/dev/null 2>&1
    t0=$(cpu_ticks $SERVER_PID)
    taskset -c "$CPU_CLIENT" wrk -t1 -c64 -d"$DURATION" "http://127.0.0.1:$PORT/" \
        >"$OUT/$mode-$round.txt" 2>&1
    t1=$(cpu_ticks $SERVER_PID)
    kill $SERVER_PID; wait $SERVER_PID 2>/dev/null; SERVER_PID=
    reqs=$(awk '/requests in/ { print $1 }' "$OUT/$mode-$round.txt")
    rps=$(awk '/Requests\/sec/ { print $2 }' "$OUT/$mode-$round.txt")
    awk -v m="$mode" -v d=$((t1 - t0)) -v n="$reqs" -v hz="$HZ" -v r="$rps" \
        'BEGIN { printf "%s %.3f %.0f\n", m, d / hz / n * 1e6, r }' >>"$OUT/results"
    printf "round %d %-8s %8s req/s  %s us CPU/request\n" "$round" "$mode" "$rps" \
        "$(tail -1 "$OUT/results" | awk '{ print $2 }')"
}

echo "== hello: callback method against coroutine method (wrk -t1 -c64 -d$DURATION)"
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then run callback "$r"; run coro "$r"; else run coro "$r"; run callback "$r"; fi
done

median() {
    awk -v m="$1" -v c="$2" '$1 == m { print $c }' "$OUT/results" | sort -g |
        awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
cb=$(median callback 2); co=$(median coro 2)
cbr=$(median callback 3); cor=$(median coro 3)
echo "== medians over $ROUNDS rounds"
printf "callback handler: %s us CPU/request, %s req/s\n" "$cb" "$cbr"
printf "coroutine handler: %s us CPU/request, %s req/s\n" "$co" "$cor"
awk -v a="$co" -v b="$cb" 'BEGIN { printf "coroutine/callback CPU per request: %.3fx\n", a / b }'
echo "(raw wrk output in $OUT)"

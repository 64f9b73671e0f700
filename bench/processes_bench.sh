#!/bin/bash
# hello --processes 2 (a listening socket per worker, SO_REUSEPORT) against --processes 1:
# requests per second, and requests per second of server CPU ("per core").
#
#     bench/processes_bench.sh [SECONDS] [ROUNDS]        (defaults: 3, 3)
#
# Each round runs both, the order alternating:
#   1: the worker pinned to CPU 0, `wrk -t1 -c64` pinned to CPU 1;
#   2: worker 0 pinned to CPU 0 and worker 1 to CPU 1 (taskset -p after start), `wrk -t2 -c64`
#      allowed on both CPUs: with two CPUs in all, the load generator shares the workers' cores,
#      so req/s cannot double; the per-core figure is what scales.
# Server CPU is the workers' utime + stime (/proc/PID/stat) across the wrk run. Prints each run,
# then medians: req/s, server CPU seconds per second, req/s per server core, and the ratios 2/1.
#
# Environment: BENCH_BUILD (default build-bench), BENCH_PORT (default 18896).
set -u
SECS=${1:-3}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
PORT=${BENCH_PORT:-18896}
TCK=$(getconf CLK_TCK)
OUT=$(mktemp /tmp/gale-processes.XXXXXX)
SERVER_PID=
[ -x "$BUILD/bin/hello" ] || { echo "processes_bench: $BUILD/bin/hello not built" >&2; exit 1; }
command -v wrk >/dev/null || { echo "processes_bench: wrk not found" >&2; exit 1; }
trap_server_cleanup

children() { for p in /proc/[0-9]*; do
    awk -v pp="$1" -v me="${p#/proc/}" '{ sub(/^.*\) /, ""); if ($2 == pp) print me }' \
        "$p/stat" 2>/dev/null; done; }
cpu_sum() { local t=0 u s; for p in "$@"; do read -r u s < <(cpu_times "$p"); t=$((t + u + s)); done; echo $t; }

run() { # run NPROCS ROUND
    local n=$1 workers w i
    if [ "$n" -eq 1 ]; then
        env -u GALE_LOG_LEVEL taskset -c 0 "$BUILD/bin/hello" --port "$PORT" 2>/dev/null &
    else
        env -u GALE_LOG_LEVEL taskset -c 0,1 "$BUILD/bin/hello" --port "$PORT" --processes "$n" \
            2>/dev/null &
    fi
    SERVER_PID=$!
    wait_port "$PORT" || exit 1
    if [ "$n" -eq 1 ]; then
        workers=$SERVER_PID
    else
        for _ in $(seq 100); do
            workers=$(children "$SERVER_PID")
            [ "$(echo "$workers" | wc -w)" -eq "$n" ] && break
            sleep 0.05
        done
        i=0
        for w in $workers; do taskset -pc $((i % 2)) "$w" >/dev/null; i=$((i + 1)); done
    fi
    # shellcheck disable=SC2086
    c0=$(cpu_sum $workers)
    if [ "$n" -eq 1 ]; then
        reqs=$(taskset -c 1 wrk -t1 -c64 -d"${SECS}s" "http://127.0.0.1:$PORT/" |
            awk '/requests in/ {print $1}')
    else
        reqs=$(taskset -c 0,1 wrk -t2 -c64 -d"${SECS}s" "http://127.0.0.1:$PORT/" |
            awk '/requests in/ {print $1}')
    fi
    # shellcheck disable=SC2086
    c1=$(cpu_sum $workers)
    stop_server
    sleep 0.5
    awk -v r="$2" -v n="$n" -v q="$reqs" -v c=$((c1 - c0)) -v k="$TCK" -v d="$SECS" 'BEGIN {
        printf "%d %d %.0f %.3f %.0f\n", r, n, q / d, c / k / d, q / (c / k) }' | tee -a "$OUT"
}

echo "round processes req/s server_cores req/s_per_core"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then run 1 "$round"; run 2 "$round"; else run 2 "$round"; run 1 "$round"; fi
done
awk "$AWK_MEDIAN"'
{ k = $2; n[k]++; q[k, n[k]] = $3; c[k, n[k]] = $4; p[k, n[k]] = $5 }
function med(arr, key,    i, a) { for (i = 1; i <= n[key]; i++) a[i] = arr[key, i]; return median(a, n[key]) }
END {
    for (k = 1; k <= 2; k++)
        printf "--processes %d: req/s %.0f, server cores busy %.2f, req/s per server core %.0f\n",
            k, med(q, k), med(c, k), med(p, k)
    printf "ratio 2/1: req/s %.2f, per core %.2f\n", med(q, 2) / med(q, 1), med(p, 2) / med(p, 1)
}' "$OUT"

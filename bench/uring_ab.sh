#!/bin/bash
# Interleaved A/B/C of server CPU per request: apps/hello on epoll, the same binary on io_uring
# (GALE_LOOP_BACKEND=uring), and bench/uv_hello, in short alternated runs.
#
#     bench/uring_ab.sh [SECONDS] [ROUNDS] [pipe|plain]        (defaults: 3, 9, plain)
#
# Each round runs the three servers in a rotating order, each pinned to CPU 0 (BENCH_CPU_SERVER)
# and loaded by wrk pinned to CPU 1 (BENCH_CPU_CLIENT) for SECONDS: `-c64` for plain,
# `-c256 -s bench/pipeline.lua` (16 deep) for pipe. The server's utime and stime are read before
# and after wrk and divided by the requests wrk completed (as bench/http_ab.sh). Prints every run,
# the medians per server, and the medians of the per-round ratios uring/epoll, uring/libuv and
# epoll/libuv (the runs of a round are next to each other, so slow drifts cancel). The uring runs
# check the server's log: a fallback to epoll ends the script.
#
# Environment: BENCH_BUILD (default build-bench, with hello and uv_hello built, e.g. by
# bench/http_bench.sh), BENCH_CPU_SERVER / BENCH_CPU_CLIENT (default 0 / 1).
set -u

SECS=${1:-3}
ROUNDS=${2:-9}
MODE=${3:-plain}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
TCK=$(getconf CLK_TCK)
OUT=$(mktemp /tmp/gale-uring-ab.XXXXXX)
LOG=$(mktemp /tmp/gale-uring-ab-log.XXXXXX)
SERVER_PID=

case $MODE in
pipe) WRK_ARGS=(-c256 -s "$ROOT/bench/pipeline.lua") ;;
plain) WRK_ARGS=(-c64) ;;
*) echo "uring_ab: mode is pipe or plain" >&2; exit 2 ;;
esac
for bin in hello uv_hello; do
    [ -x "$BUILD/bin/$bin" ] || { echo "uring_ab: $BUILD/bin/$bin not built" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "uring_ab: wrk not found" >&2; exit 1; }

trap_server_cleanup

order() {
    case $(($1 % 3)) in
    1) echo "epoll uring uv" ;;
    2) echo "uring uv epoll" ;;
    0) echo "uv epoll uring" ;;
    esac
}

for round in $(seq "$ROUNDS"); do
    for name in $(order "$round"); do
        case $name in
        epoll | uring)
            port=18879
            : >"$LOG"
            GALE_LOOP_BACKEND=$name env -u GALE_LOG_LEVEL taskset -c "$CPU_SERVER" \
                "$BUILD/bin/hello" --port $port 2>"$LOG" &
            ;;
        uv)
            port=18880
            taskset -c "$CPU_SERVER" "$BUILD/bin/uv_hello" $port >/dev/null 2>&1 &
            ;;
        esac
        SERVER_PID=$!
        wait_port $port || exit 1
        read -r u0 s0 < <(cpu_times "$SERVER_PID")
        reqs=$(taskset -c "$CPU_CLIENT" wrk -t1 -d"${SECS}s" "${WRK_ARGS[@]}" \
            "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
        read -r u1 s1 < <(cpu_times "$SERVER_PID")
        stop_server
        if grep -q "io_uring unavailable" "$LOG"; then
            echo "uring_ab: the uring server fell back to epoll: $(cat "$LOG")" >&2
            exit 1
        fi
        if [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then
            echo "uring_ab: $name: wrk completed no request" >&2
            exit 1
        fi
        awk -v n="$name" -v r="$round" -v q="$reqs" -v u=$((u1 - u0)) -v s=$((s1 - s0)) \
            -v k="$TCK" -v d="${SECS%s}" 'BEGIN {
                printf "%d %s %d %.3f %.3f %.3f\n", r, n, q / d, u / k * 1e6 / q,
                    s / k * 1e6 / q, (u + s) / k * 1e6 / q }' | tee -a "$OUT"
    done
done
rm -f "$LOG"

echo
echo "== $MODE, $ROUNDS rounds of ${SECS}s: medians (us per request), paired CPU ratios"
awk "$AWK_MEDIAN"'
{ k = $2; n[k]++; rq[k, n[k]] = $3; us[k, n[k]] = $4; sy[k, n[k]] = $5; to[k, n[k]] = $6
  t[$1, k] = $6 }
function med(k, arr,    i, a) { for (i = 1; i <= n[k]; i++) a[i] = arr[k, i]; return median(a, n[k]) }
END {
    split("epoll uring uv", names, " ")
    for (i = 1; i <= 3; i++) {
        k = names[i]
        printf "%-6s req/s %9.0f  user %.3f  sys %.3f  total %.3f\n", k, med(k, rq), med(k, us),
            med(k, sy), med(k, to)
    }
    for (r = 1; r <= '"$ROUNDS"'; r++) {
        a[r] = t[r, "uring"] / t[r, "epoll"]; b[r] = t[r, "uring"] / t[r, "uv"]
        c[r] = t[r, "epoll"] / t[r, "uv"]
    }
    printf "paired CPU per request: uring/epoll %.3f  uring/libuv %.3f  epoll/libuv %.3f\n",
        median(a, '"$ROUNDS"'), median(b, '"$ROUNDS"'), median(c, '"$ROUNDS"')
}' "$OUT"
echo "(runs: $OUT)"

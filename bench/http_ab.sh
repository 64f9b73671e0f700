#!/bin/bash
# Paired A/B of server CPU per request: apps/hello against bench/uv_hello, many short alternated
# runs, for telling apart differences of a few per cent on a machine whose speed drifts.
#
#     bench/http_ab.sh [SECONDS] [ROUNDS] [pipe|plain]        (defaults: 3, 15, pipe)
#
# Each round starts gale's hello and uv_hello in turn (which goes first alternates from round to
# round), each pinned to CPU 0 (BENCH_CPU_SERVER) and loaded by wrk pinned to CPU 1
# (BENCH_CPU_CLIENT) for SECONDS: `-c256 -s bench/pipeline.lua` (16 deep) for pipe, `-c64` for
# plain. The server's utime and stime (/proc/PID/stat fields 14 and 15) are read right before and
# after wrk and divided by the requests wrk completed. Prints every run,
# then the medians of user, system and total microseconds per request per server, the median of
# the per-round ratios gale/libuv (the two runs of a round are next to each other, so slow drifts
# cancel) and how many rounds had gale below libuv.
#
# Environment: BENCH_BUILD (default build-bench; both binaries must be built there, e.g. by
# bench/http_bench.sh), BENCH_CPU_SERVER / BENCH_CPU_CLIENT (default 0 / 1).
set -u

SECS=${1:-3}
ROUNDS=${2:-15}
MODE=${3:-pipe}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
TCK=$(getconf CLK_TCK)
OUT=$(mktemp /tmp/gale-http-ab.XXXXXX)
SERVER_PID=

case $MODE in
pipe) WRK_ARGS=(-c256 -s "$ROOT/bench/pipeline.lua") ;;
plain) WRK_ARGS=(-c64) ;;
*) echo "http_ab: mode is pipe or plain" >&2; exit 2 ;;
esac
for bin in hello uv_hello; do
    [ -x "$BUILD/bin/$bin" ] || { echo "http_ab: $BUILD/bin/$bin not built" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "http_ab: wrk not found" >&2; exit 1; }

trap_server_cleanup

for round in $(seq "$ROUNDS"); do
    for name in $(pair_order "$round"); do
        if [ "$name" = gale ]; then
            port=18879
            env -u GALE_LOG_LEVEL taskset -c "$CPU_SERVER" "$BUILD/bin/hello" --port $port \
                2>/dev/null &
        else
            port=18880
            taskset -c "$CPU_SERVER" "$BUILD/bin/uv_hello" $port >/dev/null 2>&1 &
        fi
        SERVER_PID=$!
        wait_port $port || exit 1
        read -r u0 s0 < <(cpu_times "$SERVER_PID")
        reqs=$(taskset -c "$CPU_CLIENT" wrk -t1 -d"${SECS}s" "${WRK_ARGS[@]}" \
            "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
        read -r u1 s1 < <(cpu_times "$SERVER_PID")
        stop_server
        if [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then
            echo "http_ab: $name: wrk completed no request" >&2
            exit 1
        fi
        awk -v n="$name" -v r="$round" -v q="$reqs" -v u=$((u1 - u0)) -v s=$((s1 - s0)) \
            -v k="$TCK" -v d="${SECS%s}" 'BEGIN {
                printf "%d %s %d %.3f %.3f %.3f\n", r, n, q / d, u / k * 1e6 / q,
                    s / k * 1e6 / q, (u + s) / k * 1e6 / q }' | tee -a "$OUT"
    done
done

echo
echo "== $MODE, $ROUNDS rounds of ${SECS}s: medians (us per request), ratios gale/libuv"
awk "$AWK_MEDIAN"'
$2 == "gale" { g++; gr[g] = $3; gu[g] = $4; gs[g] = $5; gt[g] = $6; rq[$1] = $3; ct[$1] = $6 }
$2 == "uv" { v++; vr[v] = $3; vu[v] = $4; vs[v] = $5; vt[v] = $6; urq[$1] = $3; uct[$1] = $6 }
END {
    for (r in uct) {
        p++; pc[p] = ct[r] / uct[r]; pr[p] = rq[r] / urq[r]
        if (ct[r] < uct[r]) below++
    }
    printf "gale  req/s %9.0f  user %.3f  sys %.3f  total %.3f\n", median(gr, g), median(gu, g),
        median(gs, g), median(gt, g)
    printf "libuv req/s %9.0f  user %.3f  sys %.3f  total %.3f\n", median(vr, v), median(vu, v),
        median(vs, v), median(vt, v)
    printf "paired: CPU per request ratio %.3f (gale below libuv in %d of %d rounds), " \
        "req/s ratio %.3f\n", median(pc, p), below + 0, p, median(pr, p)
}' "$OUT"
echo "(runs: $OUT)"

#!/bin/bash
# Paired A/B of server CPU per request: apps/hello against bench/uv_hello (libuv + http-parser)
# and bench/limit_hello (the bare epoll floor that parses nothing), many short alternated runs,
# for telling apart differences of a few per cent on a machine whose speed drifts.
#
#     bench/http_ab.sh [SECONDS] [ROUNDS] [pipe|plain]        (defaults: 3, 15, pipe)
#
# Each round starts every server in BENCH_SERVERS in turn (the order rotates from round to round,
# so each server goes first equally often), each pinned to CPU 0 (BENCH_CPU_SERVER) and loaded by
# wrk pinned to CPU 1 (BENCH_CPU_CLIENT) for SECONDS: `-c256 -s bench/pipeline.lua` (16 deep) for
# pipe, `-c64` for plain. The server's utime and stime (/proc/PID/stat fields 14 and 15) are read
# right before and after wrk and divided by the requests wrk completed. Prints every run, then
# the medians of user, system and total microseconds per request per server, and the medians of
# the per-round ratios gale/libuv, gale/limit and libuv/limit (the runs of a round are next to
# each other, so slow drifts cancel) with how many rounds had the first below the second.
#
# Environment: BENCH_BUILD (default build-bench; the binaries must be built there, e.g. by
# bench/http_bench.sh), BENCH_CPU_SERVER / BENCH_CPU_CLIENT (default 0 / 1), BENCH_SERVERS
# (default "gale uv limit"; any of them, e.g. "gale uv" for the two-server runs of before;
# "gale" is hello on the epoll loop, GALE_LOOP_BACKEND=epoll; "uring": the same hello on the
# io_uring loop, GALE_LOOP_BACKEND=uring; and "base": apps/hello of another build,
# BENCH_BASE_BUILD, on the loop GALE_LOOP_BACKEND names or that build's default, to A/B a change
# against its parent).
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
SERVERS=${BENCH_SERVERS:-gale uv limit}
read -r -a SERVER_LIST <<<"$SERVERS"
BASE_BUILD=${BENCH_BASE_BUILD:-}
server_path() {
    case $1 in
    gale | uring) echo "$BUILD/bin/hello" ;;
    uv) echo "$BUILD/bin/uv_hello" ;;
    limit) echo "$BUILD/bin/limit_hello" ;;
    base) [ -n "$BASE_BUILD" ] && echo "$BASE_BUILD/bin/hello" ;;
    esac
}
for name in "${SERVER_LIST[@]}"; do
    bin=$(server_path "$name")
    [ -n "$bin" ] || { echo "http_ab: unknown server $name (gale, uring, uv, limit, base)" >&2; exit 2; }
    [ -x "$bin" ] || { echo "http_ab: $bin not built" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "http_ab: wrk not found" >&2; exit 1; }

trap_server_cleanup

# rotated ROUND: the servers in the order of round ROUND (the list rotated by ROUND - 1).
rotated() {
    local k=${#SERVER_LIST[@]} i
    for ((i = 0; i < k; i++)); do printf '%s ' "${SERVER_LIST[$(((i + $1 - 1) % k))]}"; done
}

for round in $(seq "$ROUNDS"); do
    for name in $(rotated "$round"); do
        case $name in
        gale)
            port=18879
            env -u GALE_LOG_LEVEL GALE_LOOP_BACKEND=epoll taskset -c "$CPU_SERVER" \
                "$BUILD/bin/hello" --port $port \
                2>/dev/null &
            ;;
        uring)
            port=18883
            env -u GALE_LOG_LEVEL GALE_LOOP_BACKEND=uring taskset -c "$CPU_SERVER" \
                "$BUILD/bin/hello" --port $port 2>"$OUT.uring-log" &
            ;;
        uv)
            port=18880
            taskset -c "$CPU_SERVER" "$BUILD/bin/uv_hello" $port >/dev/null 2>&1 &
            ;;
        limit)
            port=18881
            taskset -c "$CPU_SERVER" "$BUILD/bin/limit_hello" $port >/dev/null 2>&1 &
            ;;
        base)
            port=18882
            env -u GALE_LOG_LEVEL taskset -c "$CPU_SERVER" "$BASE_BUILD/bin/hello" --port $port \
                2>/dev/null &
            ;;
        esac
        SERVER_PID=$!
        wait_port $port || exit 1
        if [ "$name" = uring ] && grep -q "io_uring unavailable" "$OUT.uring-log"; then
            echo "http_ab: the uring server fell back to epoll: $(cat "$OUT.uring-log")" >&2
            exit 1
        fi
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
echo "== $MODE, $ROUNDS rounds of ${SECS}s: medians (us per request), paired ratios"
awk "$AWK_MEDIAN"'
{ n[$2]++; rq[$2, n[$2]] = $3; us[$2, n[$2]] = $4; sy[$2, n[$2]] = $5; to[$2, n[$2]] = $6
  ct[$2, $1] = $6; rs[$2, $1] = $3; rounds[$1] = 1 }
function show(s, label,    i, a, b, c, d) {
    if (!n[s]) return
    for (i = 1; i <= n[s]; i++) { a[i] = rq[s, i]; b[i] = us[s, i]; c[i] = sy[s, i]; d[i] = to[s, i] }
    printf "%-6s req/s %9.0f  user %.3f  sys %.3f  total %.3f\n", label, median(a, n[s]),
        median(b, n[s]), median(c, n[s]), median(d, n[s])
}
function pair(x, y, lx, ly,    r, p, below, pc, pr) {
    if (!n[x] || !n[y]) return
    for (r in rounds) {
        if (!((x, r) in ct) || !((y, r) in ct)) continue
        p++; pc[p] = ct[x, r] / ct[y, r]; pr[p] = rs[x, r] / rs[y, r]
        if (ct[x, r] < ct[y, r]) below++
    }
    printf "paired %s/%s: CPU per request ratio %.3f (%s below %s in %d of %d rounds), " \
        "req/s ratio %.3f\n", lx, ly, median(pc, p), lx, ly, below + 0, p, median(pr, p)
}
END {
    show("gale", "gale"); show("uring", "uring"); show("base", "base"); show("uv", "libuv")
    show("limit", "limit")
    pair("gale", "base", "gale", "base")
    pair("gale", "uv", "gale", "libuv"); pair("gale", "limit", "gale", "limit")
    pair("uv", "limit", "libuv", "limit")
    pair("uring", "limit", "uring", "limit"); pair("uring", "gale", "uring", "epoll")
    pair("uring", "uv", "uring", "libuv"); pair("uring", "base", "uring", "base")
}' "$OUT"
echo "(runs: $OUT)"

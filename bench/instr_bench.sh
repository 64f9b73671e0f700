#!/bin/bash
# User-space instructions per HTTP request, counted by valgrind's callgrind: a figure that does
# not move with the load of a shared machine, for comparing two builds of a change (the time
# figures of http_bench.sh need many rounds to tell 5% apart here). Kernel time is not counted.
#
#     bench/instr_bench.sh [SECONDS] [SERVER...]     (defaults: 4, "gale uv")
#
# Each server (apps/hello, bench/uv_hello) runs under callgrind; wrk loads it with 16-deep
# pipelining (bench/pipeline.lua, 32 connections) for SECONDS; the server is stopped with SIGTERM
# and its instruction total is divided by the requests wrk completed (start-up is about 0.2M
# instructions: noise at this scale). The profile stays in $OUT/callgrind.<server>.out for
# `callgrind_annotate` (build with RelWithDebInfo for line numbers).
#
# Environment: BENCH_BUILD (default build-bench), BENCH_CPU (default 0: server and wrk share
# one CPU, which changes nothing for an instruction count), BENCH_PORT (default 18879; uv_hello
# listens on the next port), for two runs side by side on one machine.
set -u
SECS=${1:-4}
[ $# -gt 0 ] && shift
SERVERS=${*:-gale uv}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
CPU=${BENCH_CPU:-0}
PORT=${BENCH_PORT:-18879}
OUT=$(mktemp -d /tmp/gale-instr-bench.XXXXXX)
for tool in valgrind callgrind_annotate wrk taskset; do
    command -v $tool >/dev/null || { echo "instr_bench: $tool not found" >&2; exit 1; }
done

for name in $SERVERS; do
    case $name in
    gale) port=$PORT; cmd=("$BUILD/bin/hello" --port "$port") ;;
    uv) port=$((PORT + 1)); cmd=("$BUILD/bin/uv_hello" "$port") ;;
    *) echo "instr_bench: unknown server $name" >&2; exit 2 ;;
    esac
    [ -x "${cmd[0]}" ] || { echo "instr_bench: ${cmd[0]} not built" >&2; exit 1; }
    prof=$OUT/callgrind.$name.out
    env -u GALE_LOG_LEVEL taskset -c "$CPU" valgrind --tool=callgrind --callgrind-out-file="$prof" \
        "${cmd[@]}" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    reqs=$(taskset -c "$CPU" wrk -t1 -c32 -d"${SECS}s" -s "$ROOT/bench/pipeline.lua" \
        "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null
    ir=$(callgrind_annotate "$prof" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    if [ -z "$reqs" ] || [ "$reqs" -eq 0 ] || [ -z "$ir" ]; then
        echo "instr_bench: $name: no result (see $prof)" >&2
        continue
    fi
    printf '%-5s %9d requests  %13d instructions  %6d per request\n' "$name" "$reqs" "$ir" \
        $((ir / reqs))
done

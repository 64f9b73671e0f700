#!/bin/bash
# Echo benchmark: gale's apps/echo against the libuv baseline (bench/uv_echo.c).
#
#     bench/echo_bench.sh [SECONDS] [ROUNDS]          (defaults: 5, 3)
#
# For ROUNDS interleaved rounds, each server in turn is started pinned to one CPU and loaded by
# bench/echo_client pinned to another: ping-pong (100 connections, 64-byte messages, one in
# flight per connection: messages/s) and bulk (4 connections streaming 256 KiB writes: MB/s
# echoed back). Prints every run, the median per server and the ratio gale/libuv.
#
# Environment: BENCH_BUILD (build dir, default build-echo-bench), BENCH_NO_BUILD (use the
# binaries already there), BENCH_CPU_SERVER / BENCH_CPU_CLIENT (default 0 / 1), BENCH_PORT
# (default 10100; libuv gets BENCH_PORT+1).
set -u

SECS=${1:-5}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build-echo-bench}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
PORT=${BENCH_PORT:-10100}
BIN=$BUILD/bin

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGALE_BUILD_BENCH=ON \
        -DGALE_BUILD_TESTS=OFF >/dev/null || exit 1
    cmake --build "$BUILD" -j2 --target echo uv_echo echo_client >/dev/null || exit 1
fi

wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    return 1
}

start_server() { # name -> sets SPID, SPORT
    case $1 in
    gale)
        SPORT=$PORT
        taskset -c "$CPU_SERVER" "$BIN/echo" --port "$SPORT" --address 127.0.0.1 2>/dev/null &
        ;;
    uv)
        SPORT=$((PORT + 1))
        taskset -c "$CPU_SERVER" "$BIN/uv_echo" "$SPORT" 2>/dev/null &
        ;;
    esac
    SPID=$!
    wait_port "$SPORT"
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

declare -A PP BULK
for round in $(seq "$ROUNDS"); do
    for server in gale uv; do
        start_server "$server" || exit 1
        pp=$(taskset -c "$CPU_CLIENT" "$BIN/echo_client" "$SPORT" pingpong "$SECS" | awk '{print $2}')
        bulk=$(taskset -c "$CPU_CLIENT" "$BIN/echo_client" "$SPORT" bulk "$SECS" | awk '{print $2}')
        kill "$SPID"
        wait "$SPID" 2>/dev/null
        printf 'round %d %-5s ping-pong %10s msgs/s   bulk %8s MB/s\n' "$round" "$server" "$pp" "$bulk"
        PP[$server]="${PP[$server]:-} $pp"
        BULK[$server]="${BULK[$server]:-} $bulk"
    done
done

echo
printf '%-6s %14s %12s\n' server "msgs/s" "MB/s"
for server in gale uv; do
    mp=$(echo "${PP[$server]}" | tr ' ' '\n' | grep . | median)
    mb=$(echo "${BULK[$server]}" | tr ' ' '\n' | grep . | median)
    printf '%-6s %14.0f %12.1f\n' "$server" "$mp" "$mb"
    eval "M_PP_$server=$mp; M_BULK_$server=$mb"
done
awk -v a="$M_PP_gale" -v b="$M_PP_uv" -v c="$M_BULK_gale" -v d="$M_BULK_uv" \
    'BEGIN {printf "ratio gale/libuv: ping-pong %.2f, bulk %.2f\n", a / b, c / d}'

#!/bin/bash
# Echo benchmark: gale's apps/echo against the libuv baseline (bench/uv_echo.c).
#
#     bench/echo_bench.sh [SECONDS] [ROUNDS]          (defaults: 5, 3)
#
# For ROUNDS interleaved rounds, each server in turn is started pinned to one CPU and loaded by
# bench/echo_client pinned to another: ping-pong (100 connections, 64-byte messages, one in
# flight per connection: messages/s) and bulk (4 connections streaming 256 KiB writes: MB/s
# echoed back). Prints every run, the median per server and the ratio gale/libuv. It also
# records the server's CPU time per unit of work (utime+stime from /proc/PID/stat before and
# after each run: microseconds per message, milliseconds per MB echoed), which moves far less than
# throughput when other work shares the machine.
#
# Environment: BENCH_BUILD (build dir, default build-echo-bench), BENCH_NO_BUILD (use the
# binaries already there), BENCH_CPU_SERVER / BENCH_CPU_CLIENT (default 0 / 1), BENCH_PORT
# (default 10100; libuv gets BENCH_PORT+1).
set -u

SECS=${1:-5}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
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

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

median() {
    sort -g | awk '{a[NR] = $1}
        END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}

declare -A PP BULK PPCPU BKCPU PPR BULKR
for round in $(seq "$ROUNDS"); do
    for server in gale uv; do
        start_server "$server" || exit 1
        t0=$(cpu_ticks "$SPID")
        pp=$(taskset -c "$CPU_CLIENT" "$BIN/echo_client" "$SPORT" pingpong "$SECS" |
            awk '{print $2}')
        t1=$(cpu_ticks "$SPID")
        bulk=$(taskset -c "$CPU_CLIENT" "$BIN/echo_client" "$SPORT" bulk "$SECS" | awk '{print $2}')
        t2=$(cpu_ticks "$SPID")
        kill "$SPID"
        wait "$SPID" 2>/dev/null
        ppcpu=$(awk -v t="$((t1 - t0))" -v k="$TCK" -v r="$pp" -v s="$SECS" \
            'BEGIN {printf "%.2f", t / k * 1e6 / (r * s)}')
        bkcpu=$(awk -v t="$((t2 - t1))" -v k="$TCK" -v r="$bulk" -v s="$SECS" \
            'BEGIN {printf "%.3f", t / k * 1e3 / (r * s)}')
        printf 'round %d %-5s ping-pong %8s msgs/s (%s us CPU/msg)' \
            "$round" "$server" "$pp" "$ppcpu"
        printf '   bulk %7s MB/s (%s ms CPU/MB)\n' "$bulk" "$bkcpu"
        PP[$server]="${PP[$server]:-} $pp"
        PPR["$server,$round"]=$pp
        BULKR["$server,$round"]=$bulk
        BULK[$server]="${BULK[$server]:-} $bulk"
        PPCPU[$server]="${PPCPU[$server]:-} $ppcpu"
        BKCPU[$server]="${BKCPU[$server]:-} $bkcpu"
    done
done

echo
printf '%-6s %12s %14s %10s %12s\n' server "msgs/s" "us CPU/msg" "MB/s" "ms CPU/MB"
for server in gale uv; do
    mp=$(echo "${PP[$server]}" | tr ' ' '\n' | grep . | median)
    mb=$(echo "${BULK[$server]}" | tr ' ' '\n' | grep . | median)
    cp=$(echo "${PPCPU[$server]}" | tr ' ' '\n' | grep . | median)
    cb=$(echo "${BKCPU[$server]}" | tr ' ' '\n' | grep . | median)
    printf '%-6s %12.0f %14.2f %10.1f %12.3f\n' "$server" "$mp" "$cp" "$mb" "$cb"
    eval "M_PP_$server=$mp; M_BULK_$server=$mb; M_CP_$server=$cp; M_CB_$server=$cb"
done
awk -v a="$M_PP_gale" -v b="$M_PP_uv" -v c="$M_BULK_gale" -v d="$M_BULK_uv" \
    'BEGIN {printf "ratio gale/libuv (throughput, medians): ping-pong %.2f, bulk %.2f\n",
            a / b, c / d}'
awk -v a="$M_CP_gale" -v b="$M_CP_uv" -v c="$M_CB_gale" -v d="$M_CB_uv" \
    'BEGIN {printf "ratio libuv/gale (server CPU per unit, >1: gale cheaper): " \
            "ping-pong %.2f, bulk %.2f\n", b / a, d / c}'
# Paired: each round's gale/libuv ratio (the two servers run back to back), then the median, which
# a slow drift of a shared machine moves far less than the ratio of the two medians.
pairs_pp= pairs_bulk=
for round in $(seq "$ROUNDS"); do
    pairs_pp="$pairs_pp $(awk -v a="${PPR[gale,$round]:-0}" -v b="${PPR[uv,$round]:-0}" \
        'BEGIN {if (b > 0) printf "%.4f", a / b}')"
    pairs_bulk="$pairs_bulk $(awk -v a="${BULKR[gale,$round]:-0}" -v b="${BULKR[uv,$round]:-0}" \
        'BEGIN {if (b > 0) printf "%.4f", a / b}')"
done
printf 'paired ratio gale/libuv (median of per-round ratios): ping-pong %.2f, bulk %.2f\n' \
    "$(echo "$pairs_pp" | tr ' ' '\n' | grep . | median)" \
    "$(echo "$pairs_bulk" | tr ' ' '\n' | grep . | median)"

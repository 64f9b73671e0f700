#!/bin/bash
# Paired A/B of the echo servers: apps/echo against bench/uv_echo, many short alternated runs, for
# telling apart differences of a few per cent on a machine whose speed drifts.
#
#     bench/echo_ab.sh [SECONDS] [ROUNDS] [bulk|pingpong]        (defaults: 3, 15, bulk)
#
# Each round starts gale's echo and uv_echo in turn (which goes first alternates from round to
# round), each pinned to CPU 0 (BENCH_CPU_SERVER) and loaded by bench/echo_client pinned to CPU 1
# (BENCH_CPU_CLIENT) for SECONDS: bulk (4 connections streaming 256 KiB writes: MB/s) or pingpong
# (100 connections, 64-byte messages: msgs/s). Around each run it reads the server's utime+stime
# (/proc/PID/stat); the client reports how often it slept (each sleep is a wake-up the server's
# CPU later pays for). Prints every run, then the
# medians per server, the median of the per-round ratios gale/libuv of throughput and of CPU per
# unit (the two runs of a round are next to each other, so slow drifts cancel) and how many rounds
# gale won.
#
# Environment: BENCH_BUILD (default build-echo-bench; echo, uv_echo and echo_client must be built
# there, e.g. by bench/echo_bench.sh), BENCH_GALE (another echo binary to measure in place of
# BENCH_BUILD/bin/echo, e.g. a variant build), BENCH_CPU_SERVER / BENCH_CPU_CLIENT (default 0 / 1).
set -u

SECS=${1:-3}
ROUNDS=${2:-15}
MODE=${3:-bulk}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BUILD=${BENCH_BUILD:-$ROOT/build-echo-bench}
GALE=${BENCH_GALE:-$BUILD/bin/echo}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
TCK=$(getconf CLK_TCK)
OUT=$(mktemp /tmp/gale-echo-ab.XXXXXX)
SERVER_PID=

case $MODE in
bulk | pingpong) ;;
*) echo "echo_ab: mode is bulk or pingpong" >&2; exit 2 ;;
esac
for bin in "$GALE" "$BUILD/bin/uv_echo" "$BUILD/bin/echo_client"; do
    [ -x "$bin" ] || { echo "echo_ab: $bin not built" >&2; exit 1; }
done

trap_server_cleanup

for round in $(seq "$ROUNDS"); do
    for name in $(pair_order "$round"); do
        if [ "$name" = gale ]; then
            port=10110
            taskset -c "$CPU_SERVER" "$GALE" --port $port --address 127.0.0.1 2>/dev/null &
        else
            port=10111
            taskset -c "$CPU_SERVER" "$BUILD/bin/uv_echo" $port >/dev/null 2>&1 &
        fi
        SERVER_PID=$!
        wait_port $port || exit 1
        read -r u0 s0 < <(cpu_times "$SERVER_PID")
        line=$(taskset -c "$CPU_CLIENT" "$BUILD/bin/echo_client" $port "$MODE" "$SECS")
        rc=$?
        read -r u1 s1 < <(cpu_times "$SERVER_PID")
        stop_server
        if [ $rc -ne 0 ] || [ -z "$line" ]; then
            echo "echo_ab: $name: the client failed (exit $rc)" >&2
            exit 1
        fi
        # Per run: throughput, CPU per unit (ms per MB, or us per message), client sleeps per
        # second.
        echo "$line" | awk -v n="$name" -v r="$round" -v t=$(((u1 - u0) + (s1 - s0))) \
            -v k="$TCK" -v d="$SECS" -v m="$MODE" '{
                scale = m == "bulk" ? 1e3 : 1e6
                printf "%d %s %.1f %.4f %.0f\n", r, n, $2, t / k * scale / ($2 * d), $4 / d }' |
            tee -a "$OUT"
    done
done

echo
unit=$([ "$MODE" = bulk ] && echo "MB/s, ms CPU per MB" || echo "msgs/s, us CPU per message")
echo "== $MODE, $ROUNDS rounds of ${SECS}s ($unit): medians, ratios gale/libuv"
awk "$AWK_MEDIAN"'
$2 == "gale" { g++; gr[g] = $3; gc[g] = $4; gs[g] = $5; rate[$1] = $3; cpu[$1] = $4 }
$2 == "uv" { v++; vr[v] = $3; vc[v] = $4; vs[v] = $5; urate[$1] = $3; ucpu[$1] = $4 }
END {
    for (r in urate) {
        p++; pr[p] = rate[r] / urate[r]; pc[p] = cpu[r] / ucpu[r]
        if (rate[r] > urate[r]) won++
    }
    printf "gale  %10.1f  CPU %.4f  client sleeps/s %.0f\n", median(gr, g), median(gc, g), median(gs, g)
    printf "libuv %10.1f  CPU %.4f  client sleeps/s %.0f\n", median(vr, v), median(vc, v), median(vs, v)
    printf "paired: throughput ratio %.3f (gale ahead in %d of %d rounds), CPU per unit ratio %.3f\n",
        median(pr, p), won + 0, p, median(pc, p)
}' "$OUT"
echo "(runs: $OUT)"

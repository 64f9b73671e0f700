#!/bin/bash
# HTTP hello-world benchmark: gale's apps/hello against the libuv + http-parser baseline
# (bench/uv_hello.c) and Tornado (bench/tornado_hello.py).
#
#     bench/http_bench.sh [DURATION] [ROUNDS]          (defaults: 10s, 3)
#
# For ROUNDS interleaved rounds, each server in turn is started pinned to CPU 0 and loaded by wrk
# pinned to CPU 1, twice: plain keep-alive (-c64) and pipelined 16 deep (-c256, pipeline.lua).
# Per run it records requests/s, p50 and p99 latency (wrk --latency; plain runs only: wrk's
# percentiles are broken with pipelining, see run_wrk) and the server's CPU time per request:
# utime+stime from /proc/PID/stat sampled right before and after wrk, over the number of requests
# wrk completed. It prints the median over rounds and the ratio to libuv. Then it measures RSS per
# idle keep-alive connection (bench/idle_conns.c, 5,000 connections) for gale and libuv.
#
# Environment: BENCH_BUILD (build dir, default build-bench), BENCH_NO_BUILD (use the binaries
# already in BENCH_BUILD/bin), BENCH_SERVERS (default "gale uv tornado"), BENCH_IDLE_CONNS
# (default 5000, 0 skips the memory test), BENCH_CPU_SERVER / BENCH_CPU_CLIENT (default 0 / 1).
# gale runs with its default log level (GALE_LOG_LEVEL unset: info, so one access-log line per
# request) and stderr on /dev/null.
set -u

DURATION=${1:-10s}
ROUNDS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
SERVERS=${BENCH_SERVERS:-gale uv tornado}
IDLE_CONNS=${BENCH_IDLE_CONNS:-5000}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
PY=/usr/bin/python3
HZ=$(getconf CLK_TCK)
OUT=$(mktemp -d /tmp/gale-http-bench.XXXXXX)
RESULTS=$OUT/results.tsv
SERVER_PID=

# Enough descriptors for the idle-connection test (server and client inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 20000 2>/dev/null

cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in wrk taskset cmake; do
    command -v $tool >/dev/null || { echo "http_bench: $tool not found" >&2; exit 1; }
done

if [ -n "${BENCH_NO_BUILD:-}" ]; then
    echo "== using binaries in $BUILD/bin (BENCH_NO_BUILD set)"
    [ -x "$BUILD/bin/hello" ] || SERVERS=${SERVERS//gale/}
else
echo "== building in $BUILD"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGALE_BUILD_BENCH=ON \
        -DGALE_BUILD_TESTS=OFF >"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
fi
cmake --build "$BUILD" -j2 --target uv_hello idle_conns >"$OUT/build.log" 2>&1 ||
    { cat "$OUT/build.log"; exit 1; }
if ! cmake --build "$BUILD" -j2 --target hello >>"$OUT/build.log" 2>&1; then
    echo "http_bench: apps/hello does not build; gale is skipped" >&2
    SERVERS=${SERVERS//gale/}
fi
fi

port_of() {
    case $1 in gale) echo 8879 ;; uv) echo 8880 ;; tornado) echo 8881 ;; esac
}

# start_server NAME: starts it pinned to CPU_SERVER, sets SERVER_PID, waits until it answers.
start_server() {
    local port
    port=$(port_of "$1")
    case $1 in
    gale)
        env -u GALE_LOG_LEVEL taskset -c "$CPU_SERVER" "$BUILD/bin/hello" --port "$port" \
            2>/dev/null &
        ;;
    uv) taskset -c "$CPU_SERVER" "$BUILD/bin/uv_hello" "$port" 2>/dev/null & ;;
    tornado) taskset -c "$CPU_SERVER" $PY "$ROOT/bench/tornado_hello.py" "$port" 2>/dev/null & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/" && return 0
        sleep 0.1
    done
    echo "http_bench: $1 did not start on port $port" >&2
    return 1
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}

cpu_ticks() {
    # Fields 14 and 15 (utime, stime) counted after the ")" that ends the command name.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# to_us VALUE: wrk's "123.45us" / "1.23ms" / "1.00s" -> microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
        else if (v ~ /m$/) { sub(/m$/, "", v); print v * 60e6 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1e6 }
        else print "nan" }'
}

# run_wrk NAME MODE ROUND: one measured run against the started server; appends to RESULTS.
run_wrk() {
    local name=$1 mode=$2 round=$3 port log t0 t1 args
    port=$(port_of "$name")
    log=$OUT/$name-$mode-$round.txt
    if [ "$mode" = plain ]; then
        args=(-t1 -c64)
    else
        args=(-t1 -c256 -s "$ROOT/bench/pipeline.lua")
    fi
    t0=$(cpu_ticks "$SERVER_PID")
    taskset -c "$CPU_CLIENT" wrk "${args[@]}" -d"$DURATION" --latency \
        "http://127.0.0.1:$port/" >"$log" 2>&1
    t1=$(cpu_ticks "$SERVER_PID")
    local reqs rps p50 p99 errs cpu_us
    reqs=$(awk '/requests in/ { print $1 }' "$log")
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$log")
    if [ "$mode" = plain ]; then
        p50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$log")")
        p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$log")")
    else
        # wrk 4.1 corrects for coordinated omission with an interval derived from the number of
        # responses, not of batches: with pipelining its percentile table comes out as 0.00us.
        p50=-
        p99=-
    fi
    errs=$(awk '/Socket errors|Non-2xx/ { printf "%s; ", $0 }' "$log")
    if [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then
        echo "  $name $mode round $round: wrk failed, see $log" >&2
        return
    fi
    cpu_us=$(awk -v a="$t0" -v b="$t1" -v n="$reqs" -v hz="$HZ" \
        'BEGIN { printf "%.3f", (b - a) / hz * 1e6 / n }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$round" "$rps" "$p50" "$p99" \
        "$cpu_us" >>"$RESULTS"
    printf '  %-8s %-9s round %s: %10.0f req/s  p50 %8s us  p99 %9s us  cpu %6.2f us/req %s\n' \
        "$name" "$mode" "$round" "$rps" "$p50" "$p99" "$cpu_us" "${errs:+ [$errs]}"
}

echo "== $ROUNDS rounds of $DURATION per run; server on CPU $CPU_SERVER, wrk on CPU $CPU_CLIENT;" \
    "CLK_TCK=$HZ; raw output in $OUT"
for round in $(seq "$ROUNDS"); do
    for name in $SERVERS; do
        start_server "$name" || continue
        # A short warm-up so first-connection costs and allocator growth are not measured.
        taskset -c "$CPU_CLIENT" wrk -t1 -c64 -d1s "http://127.0.0.1:$(port_of "$name")/" \
            >/dev/null 2>&1
        run_wrk "$name" plain "$round"
        run_wrk "$name" pipelined "$round"
        stop_server
    done
done

echo
echo "== median over $ROUNDS rounds (ratio to libuv in parentheses)"
awk -F'\t' '
function median(key,    n, i, j, t, a) {
    n = split(vals[key], a, " ")
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
            t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
        }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    for (f = 4; f <= 7; f++) vals[$1 SUBSEP $2 SUBSEP f] = vals[$1 SUBSEP $2 SUBSEP f] " " $f
    seen[$1 SUBSEP $2] = 1
    if (!($1 in order)) { order[$1] = ++nservers; names[nservers] = $1 }
}
END {
    printf "%-8s %-9s %12s %14s %16s %16s\n", "server", "mode", "req/s", "p50 us", "p99 us",
        "cpu us/req"
    split("plain pipelined", modes, " ")
    for (s = 1; s <= nservers; s++)
        for (m = 1; m <= 2; m++) {
            name = names[s]; mode = modes[m]
            if (!((name SUBSEP mode) in seen)) continue
            line = sprintf("%-8s %-9s", name, mode)
            for (f = 4; f <= 7; f++) {
                if (vals[name SUBSEP mode SUBSEP f] ~ /-/) {
                    line = line sprintf(" %9s %-6s", "n/a", "")
                    continue
                }
                v = median(name SUBSEP mode SUBSEP f)
                r = ""
                if (("uv" SUBSEP mode) in seen) {
                    base = median("uv" SUBSEP mode SUBSEP f)
                    if (base > 0) r = sprintf("(%.2f)", v / base)
                }
                line = line sprintf(" %9.*f %-6s", f == 7 ? 2 : (f == 4 ? 0 : 1), v, r)
            }
            print line
        }
}' "$RESULTS"

echo
echo "== paired: median over rounds of each round's ratio to libuv (the runs of a round are next"
echo "   to each other, so slow drifts of a shared machine mostly cancel)"
awk -F'\t' '
function median(s,    n, i, j, t, a) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
            t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
        }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ rps[$1 SUBSEP $2 SUBSEP $3] = $4; cpu[$1 SUBSEP $2 SUBSEP $3] = $7; if ($3 > nr) nr = $3
  srv[$1] = 1 }
END {
    split("plain pipelined", modes, " ")
    for (name in srv) {
        if (name == "uv") continue
        for (m = 1; m <= 2; m++) {
            mode = modes[m]; rr = ""; cr = ""; n = 0
            for (r = 1; r <= nr; r++) {
                a = name SUBSEP mode SUBSEP r; b = "uv" SUBSEP mode SUBSEP r
                if (!(a in rps) || !(b in rps) || rps[b] <= 0 || cpu[b] <= 0) continue
                rr = rr " " rps[a] / rps[b]; cr = cr " " cpu[a] / cpu[b]; n++
            }
            if (n) printf "%-8s %-9s req/s ratio %.2f   cpu us/req ratio %.2f   (%d rounds)\n",
                name, mode, median(rr), median(cr), n
        }
    }
}' "$RESULTS" | sort

if [ "$IDLE_CONNS" -gt 0 ]; then
    echo
    echo "== memory per idle keep-alive connection ($IDLE_CONNS connections, one request each;" \
        "ulimit -n $(ulimit -n))"
    for name in $SERVERS; do
        [ "$name" = tornado ] && continue
        start_server "$name" || continue
        printf '  %-8s ' "$name"
        "$BUILD/bin/idle_conns" "$(port_of "$name")" "$SERVER_PID" "$IDLE_CONNS" 2
        stop_server
    done
fi

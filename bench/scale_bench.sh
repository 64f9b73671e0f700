#!/bin/bash
# gale's hello at the scale of one process's descriptor limit: many idle keep-alive connections,
# some of them active, on one hello process.
#
#     bench/scale_bench.sh [HOLDERS] [PER_HOLDER] [ACTIVE] [SECONDS]   (defaults: 4 4500 1000 5)
#
# 1. Baseline: hello alone, `wrk -t1 -cACTIVE -dSECONDS --latency` (p50, p99, req/s).
# 2. HOLDERS bench/scale_client processes, each opening PER_HOLDER connections from its own
#    source address (127.0.0.2, .3, ...: no one address runs out of ephemeral ports), plus one
#    more holder of ACTIVE connections, all at once: HOLDERS * PER_HOLDER + ACTIVE connections
#    (19,000 by default), each answered once and then idle. Reports the time until every holder
#    had all its connections answered, hello's VmRSS growth per connection (user space), and the
#    kernel's: /proc/net/sockstat "TCP mem" (socket buffer pages) and /proc/meminfo Slab growth
#    (socket, file and epoll structures; loopback, so both ends are counted there) per
#    connection.
# 3. The extra holder closes its ACTIVE connections and wrk runs the same load as in 1 while the
#    HOLDERS * PER_HOLDER others stay idle: p99 against the baseline's (goal: <= 2x).
# 4. The holders close and report how many of their connections the server kept open (all).
# 5. The load of 1 again on hello alone, so that drift of the machine shows (ratio to the mean).
#
# hello runs pinned to CPU 0 (BENCH_CPU_SERVER), wrk and the holders to CPU 1 (BENCH_CPU_CLIENT).
# hello needs `ulimit -n` above the connection count (raised here to the hard limit: 20,000 on
# the build VMs, which caps the default at 19,000 connections plus its own descriptors). The
# environment passes through, so `GALE_LOOP_BACKEND=uring bench/scale_bench.sh` measures another
# loop backend. BENCH_BUILD (default build-bench) must hold hello and scale_client.
set -u
HOLDERS=${1:-4}
PER_HOLDER=${2:-4500}
ACTIVE=${3:-1000}
SECS=${4:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
PORT=${BENCH_PORT:-18895}
TOTAL=$((HOLDERS * PER_HOLDER + ACTIVE))
OUT=$(mktemp -d /tmp/gale-scale.XXXXXX)
SERVER_PID=
HOLDER_PIDS=()

for bin in hello scale_client; do
    [ -x "$BUILD/bin/$bin" ] || { echo "scale_bench: $BUILD/bin/$bin not built" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "scale_bench: wrk not found" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -le $((TOTAL + 32)) ]; then
    echo "scale_bench: ulimit -n $(ulimit -n) cannot hold $TOTAL connections" >&2
    exit 1
fi

cleanup() {
    for p in "${HOLDER_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    stop_server
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
tcp_mem_pages() { awk '$1 == "TCP:" {for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
slab_kib() { awk '$1 == "Slab:" {print $2}' /proc/meminfo; }
# wrk_run FILE: the load of steps 1 and 3, its output in FILE.
wrk_run() {
    taskset -c "$CPU_CLIENT" wrk -t1 -c"$ACTIVE" -d"${SECS}s" --latency \
        "http://127.0.0.1:$PORT/" >"$1" 2>&1
}
# wrk_figures FILE: "req_s=... p50_us=... p99_us=..." from wrk's output.
wrk_figures() {
    awk 'function us(v) {
             if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6
             return v }
         /Requests\/sec/ {r = $2} $1 == "50%" {p50 = us($2)} $1 == "99%" {p99 = us($2)}
         END {printf "req_s=%.0f p50_us=%.0f p99_us=%.0f\n", r, p50, p99}' "$1"
}

echo "scale_bench: backend ${GALE_LOOP_BACKEND:-default}, $HOLDERS x $PER_HOLDER idle + $ACTIVE" \
    "connections ($TOTAL), wrk -c$ACTIVE for ${SECS}s; output in $OUT"
env -u GALE_LOG_LEVEL taskset -c "$CPU_SERVER" "$BUILD/bin/hello" --port "$PORT" \
    2>"$OUT/hello.log" &
SERVER_PID=$!
wait_port "$PORT" || exit 1

# 1. the load alone
wrk_run "$OUT/wrk_alone.txt"
alone=$(wrk_figures "$OUT/wrk_alone.txt")
echo "alone: $alone"
# The closed connections' buffers go back over a few seconds: wait until TCP memory settles.
prev=-1
for _ in $(seq 20); do
    sleep 0.5
    cur=$(tcp_mem_pages)
    [ "$prev" -ge 0 ] && [ $((prev - cur)) -lt 16 ] && [ $((cur - prev)) -lt 16 ] && break
    prev=$cur
done

# 2. TOTAL connections at once
rss0=$(rss_kib "$SERVER_PID")
mem0=$(tcp_mem_pages)
slab0=$(slab_kib)
t0=$(date +%s.%N)
for i in $(seq "$((HOLDERS + 1))"); do
    n=$PER_HOLDER
    [ "$i" -gt "$HOLDERS" ] && n=$ACTIVE
    taskset -c "$CPU_CLIENT" "$BUILD/bin/scale_client" "$PORT" "$n" "127.0.0.$((i + 1))" \
        >"$OUT/holder$i.txt" 2>&1 &
    HOLDER_PIDS+=($!)
done
for _ in $(seq 1200); do
    ready=$(cat "$OUT"/holder*.txt 2>/dev/null | grep -c '^ready')
    [ "$ready" -eq $((HOLDERS + 1)) ] && break
    for p in "${HOLDER_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || { echo "scale_bench: a holder failed:" >&2; cat "$OUT"/holder*.txt >&2; exit 1; }
    done
    sleep 0.05
done
t1=$(date +%s.%N)
[ "$ready" -eq $((HOLDERS + 1)) ] || { echo "scale_bench: holders not ready in 60 s" >&2; exit 1; }
sleep 2
rss1=$(rss_kib "$SERVER_PID")
mem1=$(tcp_mem_pages)
slab1=$(slab_kib)
awk -v t="$TOTAL" -v s0t="$t0" -v s1t="$t1" -v r0="$rss0" -v r1="$rss1" -v m0="$mem0" \
    -v m1="$mem1" -v s0="$slab0" -v s1="$slab1" 'BEGIN {
    s = s1t - s0t
    printf "held: conns=%d accept_all_seconds=%.2f rss_kib=%d->%d user_bytes_per_conn=%.0f\n",
        t, s, r0, r1, (r1 - r0) * 1024 / t
    printf "kernel: tcp_mem_pages=%d->%d tcp_mem_bytes_per_conn=%.0f slab_kib=%d->%d " \
        "slab_bytes_per_conn_both_ends=%.0f\n", m0, m1, (m1 - m0) * 4096 / t, s0, s1,
        (s1 - s0) * 1024 / t }'
grep -h '^ready' "$OUT"/holder*.txt | sed 's/^/  holder /'

# 3. the extra holder's connections close; the same load with the others idle
kill "${HOLDER_PIDS[$HOLDERS]}"
wait "${HOLDER_PIDS[$HOLDERS]}" 2>/dev/null
sleep 1
wrk_run "$OUT/wrk_idle.txt"
with_idle=$(wrk_figures "$OUT/wrk_idle.txt")
echo "with $((HOLDERS * PER_HOLDER)) idle: $with_idle"
awk -v a="$alone" -v b="$with_idle" 'BEGIN {
    split(a, x, /[ =]/); split(b, y, /[ =]/)
    printf "p99 ratio with idle / alone: %.2f (goal <= 2); req/s ratio %.2f\n", y[6] / x[6], y[2] / x[2] }'

# 4. the idle connections were all kept
for i in $(seq "$HOLDERS"); do kill "${HOLDER_PIDS[$((i - 1))]}"; done
for i in $(seq "$HOLDERS"); do wait "${HOLDER_PIDS[$((i - 1))]}" 2>/dev/null; done
HOLDER_PIDS=()
grep -h '^done' "$OUT"/holder*.txt | sed 's/^/  holder /'

# 5. the load alone again, to tell a cost of the idle connections from the machine's drift
sleep 2
wrk_run "$OUT/wrk_after.txt"
after=$(wrk_figures "$OUT/wrk_after.txt")
echo "alone again: $after"
awk -v a="$alone" -v b="$with_idle" -v c="$after" 'BEGIN {
    split(a, x, /[ =]/); split(b, y, /[ =]/); split(c, z, /[ =]/)
    printf "p99 ratio with idle / mean of the two alone: %.2f; req/s ratio %.2f\n",
        y[6] / ((x[6] + z[6]) / 2), y[2] / ((x[2] + z[2]) / 2) }'

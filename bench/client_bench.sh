#!/bin/bash
# HTTP client benchmark with connection reuse: small GETs of apps/hello, 50 in flight, through
#   gale        gale's client, keep-alive (bench/client_bench.c, its default)
#   gale-close  gale's client, a connection per request (client_bench ... close; N/4 requests)
#   tornado     Tornado's AsyncHTTPClient (bench/tornado_client.py; it never reuses connections;
#               N/4 requests)
#   ab-k        ab -k -n N -c 50 (keep-alive)
#   wrk         wrk -t1 -c50 -d D (keep-alive; runs for as long as ab -k took, at least 1 s)
# and for each: req/s and the client's CPU time (user+system, from getrusage of the child) per
# request, in microseconds.
#
#     bench/client_bench.sh [N] [ROUNDS]          (defaults: 20000, 3)
#
# The server runs pinned to BENCH_CPU_SERVER (default 0), every client to BENCH_CPU_CLIENT
# (default 1). Within a round the clients take turns, in an order that rotates from round to
# round (interleaved, so drift on the machine falls on all alike). hello runs with
# GALE_LOG_LEVEL=warning. Prints each run, then per client the median req/s and CPU per request
# over the rounds, and the ratios to ab -k measured in the same run.
# Environment: BENCH_BUILD (build dir, default build-client-bench), BENCH_NO_BUILD.
set -u

N=${1:-20000}
ROUNDS=${2:-3}
NSHORT=$((N / 4)) # the two clients that open a connection per request run a quarter as many
CONC=50
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build-client-bench}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
PY=/usr/bin/python3
OUT=$(mktemp -d /tmp/gale-client-bench.XXXXXX)
SERVER_PID=
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
trap_server_cleanup
trap 'exit 130' INT TERM

for tool in ab wrk taskset cmake; do
    command -v $tool >/dev/null || { echo "client_bench: $tool not found" >&2; exit 1; }
done

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    echo "== building in $BUILD"
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGALE_BUILD_BENCH=ON \
            -DGALE_BUILD_TESTS=OFF >"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
    fi
    nice cmake --build "$BUILD" -j2 --target hello client_bench >"$OUT/build.log" 2>&1 ||
        { cat "$OUT/build.log"; exit 1; }
fi

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT/
GALE_LOG_LEVEL=warning taskset -c "$CPU_SERVER" "$BUILD/bin/hello" --port "$PORT" 2>/dev/null &
SERVER_PID=$!
wait_port "$PORT" || exit 1

# Runs a command pinned to the client CPU; prints its stdout, then a last line "CPU seconds" of
# the command's own user+system time.
timed() {
    taskset -c "$CPU_CLIENT" $PY -c '
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)
sys.stdout.write(p.stdout)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("CPU %.6f" % (r.ru_utime + r.ru_stime))' "$@"
}

WRK_SECS=1
run() { # name: prints "name req/s cpu_us_per_request"
    local name=$1 out reqs rps cpu
    case $name in
    gale) out=$(timed "$BUILD/bin/client_bench" "$URL" "$N" "$CONC") ;;
    gale-close) out=$(timed "$BUILD/bin/client_bench" "$URL" "$NSHORT" "$CONC" close) ;;
    tornado) out=$(timed $PY "$ROOT/bench/tornado_client.py" "$URL" "$NSHORT" "$CONC") ;;
    ab-k) out=$(timed ab -q -k -n "$N" -c "$CONC" "$URL") ;;
    wrk) out=$(timed wrk -t1 -c"$CONC" -d"${WRK_SECS}s" "$URL") ;;
    esac
    echo "$out" >"$OUT/$name.last"
    cpu=$(echo "$out" | awk '/^CPU / {print $2}')
    case $name in
    ab-k)
        rps=$(echo "$out" | awk '/Requests per second/ {print $4}')
        reqs=$(echo "$out" | awk '/Complete requests/ {print $3}')
        WRK_SECS=$(echo "$out" | awk '/Time taken for tests/ {s = int($5 + 0.999); print s < 1 ? 1 : s}')
        ;;
    wrk)
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        reqs=$(echo "$out" | awk '/requests in/ {print $1}')
        ;;
    gale-close | tornado)
        rps=$(echo "$out" | sed -n 's/.*: \([0-9]*\) req\/s.*/\1/p')
        reqs=$NSHORT
        ;;
    *)
        rps=$(echo "$out" | sed -n 's/.*: \([0-9]*\) req\/s.*/\1/p')
        reqs=$N
        ;;
    esac
    awk -v n="$name" -v r="$rps" -v c="$cpu" -v q="$reqs" \
        'BEGIN {printf "%s %.0f %.2f\n", n, r, (q > 0 ? c * 1e6 / q : 0)}'
}

CLIENTS=(ab-k gale wrk gale-close tornado)
echo "== $N GETs of $URL, $CONC in flight, server on CPU $CPU_SERVER, clients on CPU $CPU_CLIENT"
echo "   (columns: client, req/s, client CPU us per request)"
: >"$OUT/results"
for r in $(seq "$ROUNDS"); do
    k=${#CLIENTS[@]}
    for i in $(seq 0 $((k - 1))); do
        run "${CLIENTS[$(((i + r - 1) % k))]}" | tee -a "$OUT/results"
    done
done

median() { # name column
    grep "^$1 " "$OUT/results" | awk -v c="$2" '{print $c}' | sort -g |
        awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
K=$(median ab-k 2)
KC=$(median ab-k 3)
echo "== median over $ROUNDS rounds"
for name in gale ab-k wrk gale-close tornado; do
    awk -v n=$name -v m="$(median $name 2)" -v c="$(median $name 3)" -v k="$K" -v kc="$KC" \
        'BEGIN {printf "%-10s %8d req/s  %.2f of ab -k   %6.2f us CPU/request  %.2f of ab -k\n",
                n, m, m / k, c, c / kc}'
done

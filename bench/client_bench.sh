#!/bin/bash
# HTTP client benchmark: N small GETs (default 10,000) with 50 in flight against apps/hello,
# through gale's client (bench/client_bench.c), Tornado's AsyncHTTPClient
# (bench/tornado_client.py), ab without keep-alive (a new connection per request, like both
# clients) and ab -k (keep-alive: the ceiling).
#
#     bench/client_bench.sh [N] [ROUNDS]          (defaults: 10000, 3)
#
# The server runs pinned to BENCH_CPU_SERVER (default 0), every client to BENCH_CPU_CLIENT
# (default 1); the clients take turns within each round. hello runs with GALE_LOG_LEVEL=warning
# so the access log does not weigh on the server. Prints each run, then the median req/s per
# client over the rounds and its ratio to Tornado and to ab -k.
# Environment: BENCH_BUILD (build dir, default build-client-bench), BENCH_NO_BUILD.
set -u

N=${1:-10000}
ROUNDS=${2:-3}
CONC=50
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BENCH_BUILD:-$ROOT/build-client-bench}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
PY=/usr/bin/python3
OUT=$(mktemp -d /tmp/gale-client-bench.XXXXXX)
SERVER_PID=

cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in ab taskset cmake; do
    command -v $tool >/dev/null || { echo "client_bench: $tool not found" >&2; exit 1; }
done

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    echo "== building in $BUILD"
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGALE_BUILD_BENCH=ON \
            -DGALE_BUILD_TESTS=OFF >"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
    fi
    cmake --build "$BUILD" -j2 --target hello client_bench >"$OUT/build.log" 2>&1 ||
        { cat "$OUT/build.log"; exit 1; }
fi

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT/
GALE_LOG_LEVEL=warning taskset -c "$CPU_SERVER" "$BUILD/bin/hello" --port "$PORT" 2>/dev/null &
SERVER_PID=$!
for _ in $(seq 100); do
    $PY -c "import socket; socket.create_connection(('127.0.0.1', $PORT))" 2>/dev/null && break
    sleep 0.05
done

run() { # name command...: prints "name req/s"
    local name=$1
    shift
    local line
    line=$(taskset -c "$CPU_CLIENT" "$@" 2>"$OUT/$name.err")
    case $name in
    ab*) echo "$name $(echo "$line" | awk '/Requests per second/ {print $4}')" ;;
    *) echo "$name $(echo "$line" | sed -n 's/.*: \([0-9]*\) req\/s.*/\1/p')" ;;
    esac
}

echo "== $N GETs of $URL, $CONC in flight, server on CPU $CPU_SERVER, clients on CPU $CPU_CLIENT"
: >"$OUT/results"
for r in $(seq "$ROUNDS"); do
    run gale "$BUILD/bin/client_bench" "$URL" "$N" "$CONC" | tee -a "$OUT/results"
    run tornado $PY "$ROOT/bench/tornado_client.py" "$URL" "$N" "$CONC" | tee -a "$OUT/results"
    run ab ab -q -n "$N" -c "$CONC" "$URL" | tee -a "$OUT/results"
    run ab-k ab -q -k -n "$N" -c "$CONC" "$URL" | tee -a "$OUT/results"
done

median() { grep "^$1 " "$OUT/results" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
T=$(median tornado)
K=$(median ab-k)
echo "== median req/s over $ROUNDS rounds"
for name in gale tornado ab ab-k; do
    m=$(median $name)
    awk -v n=$name -v m="$m" -v t="$T" -v k="$K" \
        'BEGIN {printf "%-8s %8d req/s   x%.2f Tornado   %.2f of ab -k\n", n, m, m / t, m / k}'
done

#!/bin/bash
# Soak: hello and demo under wrk -t1 -c256 for MINUTES each while misbehaving clients
# (bench/misbehave.py: slowloris, resets with SO_LINGER 0, clients that never read, garbage) run
# alongside, bounded in count and time, all on 127.0.0.1.
#
#     bench/soak.sh [MINUTES]            (default 10; SOAK_APPS="hello demo")
#
# Builds Release in build-soak (SOAK_BUILD), starts each app pinned to CPU 0 (wrk and the
# misbehaving clients on CPU 1), and samples the server's RSS (/proc/PID/status VmRSS) and open
# descriptors (/proc/PID/fd) every 10 s into a CSV. At the end it prints, per app: RSS at 1 min
# and at the end (and the change), the fd count before the load and after the clients stopped,
# wrk's requests/s, socket errors and non-2xx responses for the well-behaved load, the misbehaving
# clients' summary, warnings and errors the server logged, and whether it survived.
set -u

MINUTES=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SOAK_BUILD:-$ROOT/build-soak}
APPS=${SOAK_APPS:-hello demo}
CPU_SERVER=${SOAK_CPU_SERVER:-0}
CPU_CLIENT=${SOAK_CPU_CLIENT:-1}
OUT=${SOAK_OUT:-$(mktemp -d /tmp/gale-soak.XXXXXX)}
SERVER_PID=
MIS_PID=

cleanup() {
    [ -n "$MIS_PID" ] && kill "$MIS_PID" 2>/dev/null
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in wrk taskset cmake python3; do
    command -v $tool >/dev/null || { echo "soak: $tool not found" >&2; exit 1; }
done

echo "== building Release in $BUILD (logs and CSVs in $OUT)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGALE_BUILD_TESTS=OFF \
    >"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
cmake --build "$BUILD" -j2 --target hello demo >"$OUT/build.log" 2>&1 ||
    { cat "$OUT/build.log"; exit 1; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null; }
nfds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

wait_listening() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

soak_one() {
    local app=$1 port csv log wrklog mislog
    port=$(free_port)
    csv=$OUT/$app.csv
    log=$OUT/$app.stderr
    wrklog=$OUT/$app.wrk
    mislog=$OUT/$app.misbehave
    echo "== $app on port $port: wrk -t1 -c256 -d${MINUTES}m + misbehaving clients"
    # Warnings and errors only: the access log at 256 connections would be the soak's main cost.
    GALE_LOG_LEVEL=warning taskset -c "$CPU_SERVER" "$BUILD/bin/$app" --port "$port" \
        2>"$log" >/dev/null &
    SERVER_PID=$!
    wait_listening "$port" || { echo "soak: $app did not start" >&2; cat "$log"; return 1; }
    sleep 1
    local fd0 rss0
    fd0=$(nfds $SERVER_PID)
    rss0=$(rss_kb $SERVER_PID)
    echo "seconds,rss_kb,fds" >"$csv"
    echo "0,$rss0,$fd0" >>"$csv"

    local secs
    secs=$(awk -v m="$MINUTES" 'BEGIN {printf "%d", m * 60}')
    # The misbehaving clients stop 5 s before wrk, so the end of the run is well-behaved load only.
    taskset -c "$CPU_CLIENT" python3 "$ROOT/bench/misbehave.py" "$port" $((secs - 5)) \
        >"$mislog" 2>&1 &
    MIS_PID=$!
    taskset -c "$CPU_CLIENT" wrk -t1 -c256 -d"${secs}s" --timeout 10s \
        "http://127.0.0.1:$port/" >"$wrklog" 2>&1 &
    local wrk_pid=$!

    local t=0 rss60=
    while kill -0 $wrk_pid 2>/dev/null; do
        sleep 10
        t=$((t + 10))
        kill -0 $SERVER_PID 2>/dev/null || break
        local r f
        r=$(rss_kb $SERVER_PID)
        f=$(nfds $SERVER_PID)
        echo "$t,$r,$f" >>"$csv"
        [ $t -eq 60 ] && rss60=$r
    done
    wait $wrk_pid
    wait $MIS_PID 2>/dev/null
    MIS_PID=

    local alive=yes
    kill -0 $SERVER_PID 2>/dev/null || alive=no
    local rss_end fd_end=
    rss_end=$(rss_kb $SERVER_PID)
    # Connections the misbehaving clients left end on the server's timeouts: wait for the fd
    # count to come back to the baseline (up to 90 s).
    local waited=0
    while [ $alive = yes ] && [ $waited -lt 90 ]; do
        fd_end=$(nfds $SERVER_PID)
        [ "$fd_end" -le "$fd0" ] && break
        sleep 1
        waited=$((waited + 1))
    done
    kill -0 $SERVER_PID 2>/dev/null || alive=no
    [ $alive = yes ] && echo "$((t + waited)),$(rss_kb $SERVER_PID),$fd_end" >>"$csv"

    local reqs errs non2xx
    reqs=$(awk '/Requests\/sec/ {print $2}' "$wrklog")
    errs=$(grep -h "Socket errors" "$wrklog" || echo "Socket errors: none")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$wrklog")
    local drift="n/a"
    if [ -n "$rss60" ] && [ -n "$rss_end" ]; then
        drift=$(awk -v a="$rss60" -v b="$rss_end" 'BEGIN {printf "%+.1f%%", (b - a) * 100 / a}')
    fi
    echo "-- $app: survived: $alive"
    echo "   RSS: start ${rss0} kB, 1 min ${rss60:-?} kB, end ${rss_end:-?} kB ($drift)"
    echo "   fds: before load $fd0, after clients stopped ${fd_end:-?} (after ${waited} s)"
    echo "   wrk: ${reqs:-?} requests/s; $errs; non-2xx: ${non2xx:-0}"
    sed 's/^/   /' "$mislog"
    echo "   server log: $(grep -c '\[W' "$log") warnings, $(grep -c '\[E' "$log") errors" \
         "(first lines below)"
    grep -m5 '\[[WE]' "$log" | sed 's/^/     /'

    kill $SERVER_PID 2>/dev/null
    wait $SERVER_PID 2>/dev/null
    SERVER_PID=
}

status=0
for app in $APPS; do
    soak_one "$app" || status=1
done
echo "== CSVs: $OUT/*.csv"
exit $status

#!/bin/bash
# Short benchmark report with charts: every scenario of bench/ in one pass of a few minutes,
# figures into bench/report/data.tsv, PNG charts drawn with gnuplot.
#
#     bench/report.sh [SECONDS] [ROUNDS]        (defaults: 2, 5; about 4 minutes)
#
# - hello: gale's apps/hello, bench/uv_hello (libuv + http-parser), Tornado 6
#   (bench/tornado_hello.py) and nginx (`return 200 "Hello, world!"`, one process, no access
#   log), each pinned to CPU 0 and loaded by wrk on CPU 1, plain keep-alive (-c64) and pipelined
#   16 deep (-c256, bench/pipeline.lua). Figures: requests/s and the server's CPU time per
#   request (utime+stime from /proc/PID/stat around each run, over the requests wrk completed).
#   A round runs every server once, the order rotating from round to round; the ratio to libuv
#   is the median of the per-round ratios, so a slow drift of the machine cancels.
# - echo: bench/echo_ab.sh (apps/echo against bench/uv_echo), ping-pong and bulk, ROUNDS
#   alternated pairs of SECONDS each.
# - memory: bench/idle_conns, RSS per idle keep-alive connection (BENCH_IDLE_CONNS, default
#   5000) for gale, libuv and nginx.
#
# The figures are ratios measured A/B within one run on whatever machine runs this; absolute
# numbers move with the machine and its other load, the ratios much less.
#
# Environment: BENCH_BUILD (default build-bench; built here with -DGALE_BUILD_BENCH=ON when a
# program is missing), BENCH_REPORT (output directory, default bench/report), BENCH_SERVERS
# (default "gale uv tornado nginx"; a server whose program is missing is skipped),
# BENCH_IDLE_CONNS, BENCH_CPU_SERVER / BENCH_CPU_CLIENT (default 0 / 1).
set -u

SECS=${1:-2}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
REPORT=${BENCH_REPORT:-$ROOT/bench/report}
SERVERS=${BENCH_SERVERS:-gale uv tornado nginx}
IDLE_CONNS=${BENCH_IDLE_CONNS:-5000}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
TCK=$(getconf CLK_TCK)
PY=/usr/bin/python3 # the system one, which has Debian's python3-tornado
TMP=$(mktemp -d /tmp/gale-report.XXXXXX)
RUNS=$TMP/http-runs.txt
SERVER_PID=

ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 20000 2>/dev/null
trap_server_cleanup
trap 'exit 130' INT TERM

for tool in wrk taskset gnuplot; do
    command -v $tool >/dev/null || { echo "report: $tool not found" >&2; exit 1; }
done

need="hello uv_hello echo uv_echo echo_client idle_conns"
missing=
for bin in $need; do [ -x "$BUILD/bin/$bin" ] || missing=1; done
if [ -n "$missing" ]; then
    echo "== building in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGALE_BUILD_BENCH=ON \
        -DGALE_BUILD_TESTS=OFF >"$TMP/build.log" 2>&1 &&
        cmake --build "$BUILD" -j2 --target $need >>"$TMP/build.log" 2>&1 ||
        { cat "$TMP/build.log"; exit 1; }
fi
available=
for name in $SERVERS; do
    case $name in
    tornado) $PY -c 'import tornado' 2>/dev/null || { echo "report: no tornado, skipped"; continue; } ;;
    nginx) command -v nginx >/dev/null || { echo "report: no nginx, skipped"; continue; } ;;
    esac
    available="$available $name"
done
SERVERS=$available

port_of() { case $1 in gale) echo 18879 ;; uv) echo 18880 ;; tornado) echo 18881 ;; nginx) echo 18882 ;; esac; }

# nginx as a hello baseline: one process (no master), no access log, a fixed 200 response.
NGINX_DIR=$TMP/nginx
mkdir -p "$NGINX_DIR/logs"
cat >"$NGINX_DIR/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/logs/error.log;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $NGINX_DIR/body;
    proxy_temp_path $NGINX_DIR/proxy;
    fastcgi_temp_path $NGINX_DIR/fastcgi;
    uwsgi_temp_path $NGINX_DIR/uwsgi;
    scgi_temp_path $NGINX_DIR/scgi;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$(port_of nginx) backlog=4096;
        location / { default_type text/plain; return 200 "Hello, world!"; }
    }
}
EOF

# start NAME: starts the server pinned to CPU_SERVER; sets SERVER_PID.
start() {
    local port
    port=$(port_of "$1")
    case $1 in
    gale) env -u GALE_LOG_LEVEL taskset -c "$CPU_SERVER" "$BUILD/bin/hello" --port "$port" 2>/dev/null & ;;
    uv) taskset -c "$CPU_SERVER" "$BUILD/bin/uv_hello" "$port" >/dev/null 2>&1 & ;;
    tornado) taskset -c "$CPU_SERVER" $PY "$ROOT/bench/tornado_hello.py" "$port" 2>/dev/null & ;;
    nginx) taskset -c "$CPU_SERVER" nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" \
        -e "$NGINX_DIR/logs/error.log" 2>/dev/null & ;;
    esac
    SERVER_PID=$!
    wait_port "$port"
}

# measure NAME MODE ROUND: one wrk run against the started server; appends to RUNS.
measure() {
    local name=$1 mode=$2 round=$3 port reqs u0 s0 u1 s1 args
    port=$(port_of "$name")
    case $mode in
    plain) args=(-c64) ;;
    pipe) args=(-c256 -s "$ROOT/bench/pipeline.lua") ;;
    esac
    read -r u0 s0 < <(cpu_times "$SERVER_PID")
    reqs=$(taskset -c "$CPU_CLIENT" wrk -t1 -d"${SECS}s" "${args[@]}" "http://127.0.0.1:$port/" |
        awk '/requests in/ {print $1}')
    read -r u1 s1 < <(cpu_times "$SERVER_PID")
    if [ -z "$reqs" ] || [ "$reqs" -eq 0 ]; then
        echo "report: $name $mode: wrk completed no request" >&2
        return
    fi
    awk -v n="$name" -v m="$mode" -v r="$round" -v q="$reqs" -v t=$(((u1 - u0) + (s1 - s0))) \
        -v k="$TCK" -v d="$SECS" 'BEGIN {
            printf "%d %s %s %.0f %.3f\n", r, n, m, q / d, t / k * 1e6 / q }' | tee -a "$RUNS"
}

start_time=$(date +%s)
echo "== hello: $ROUNDS rounds of ${SECS}s per run; servers:$SERVERS; server on CPU $CPU_SERVER," \
    "wrk on CPU $CPU_CLIENT (round name mode req/s us-CPU/request)"
set -- $SERVERS
nservers=$#
for round in $(seq "$ROUNDS"); do
    # Rotate the order, so no server always runs first (or right after Tornado's slow runs).
    order=()
    for i in $(seq 0 $((nservers - 1))); do
        idx=$(((i + round - 1) % nservers + 1))
        order+=("${!idx}")
    done
    for name in "${order[@]}"; do
        start "$name" || { stop_server; continue; }
        taskset -c "$CPU_CLIENT" wrk -t1 -c16 -d0.5s "http://127.0.0.1:$(port_of "$name")/" \
            >/dev/null 2>&1 # warm-up, not measured
        measure "$name" plain "$round"
        measure "$name" pipe "$round"
        stop_server
    done
done

echo "== echo: bench/echo_ab.sh $SECS $ROUNDS pingpong / bulk"
for mode in pingpong bulk; do
    BENCH_BUILD=$BUILD "$ROOT/bench/echo_ab.sh" "$SECS" "$ROUNDS" $mode | tee "$TMP/echo-$mode.txt"
done

echo "== memory per idle keep-alive connection ($IDLE_CONNS connections)"
: >"$TMP/idle.txt"
if [ "$IDLE_CONNS" -gt 0 ]; then
    for name in $SERVERS; do
        [ "$name" = tornado ] && continue
        start "$name" || { stop_server; continue; }
        line=$("$BUILD/bin/idle_conns" "$(port_of "$name")" "$SERVER_PID" "$IDLE_CONNS" 2)
        stop_server
        echo "  $name $line"
        echo "$name $line" >>"$TMP/idle.txt"
    done
fi

# data.tsv: one line per figure: scenario, server, figure, median over rounds, the median of the
# per-round ratios to libuv (gale's echo against uv_echo), rounds.
mkdir -p "$REPORT"
DATA=$REPORT/data.tsv
{
    printf '# bench/report.sh %s %s, %s; %s CPUs (%s); ratios are medians of per-round A/B ratios to libuv\n' \
        "$SECS" "$ROUNDS" "$(date -u +%Y-%m-%d)" "$(nproc)" \
        "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'scenario\tserver\tfigure\tmedian\tratio_to_libuv\trounds\n'
    awk "$AWK_MEDIAN"'
    { key = $3 SUBSEP $2; n[key]++; rps[key, n[key]] = $4; cpu[key, n[key]] = $5
      r_rps[$3, $2, $1] = $4; r_cpu[$3, $2, $1] = $5; seen[key] = 1; rounds[$1] = 1 }
    END {
        split("plain pipe", modes, " "); split("gale uv tornado nginx", names, " ")
        for (m = 1; m <= 2; m++) for (s = 1; s <= 4; s++) {
            key = modes[m] SUBSEP names[s]
            if (!(key in seen)) continue
            for (f = 1; f <= 2; f++) {
                k = 0; p = 0
                for (i = 1; i <= n[key]; i++) a[++k] = f == 1 ? rps[key, i] : cpu[key, i]
                for (r in rounds) {
                    x = f == 1 ? r_rps[modes[m], names[s], r] : r_cpu[modes[m], names[s], r]
                    y = f == 1 ? r_rps[modes[m], "uv", r] : r_cpu[modes[m], "uv", r]
                    if (x != "" && y > 0) b[++p] = x / y
                }
                printf "hello_%s\t%s\t%s\t%.*f\t%s\t%d\n", modes[m], names[s],
                    f == 1 ? "req_per_s" : "cpu_us_per_req", f == 1 ? 0 : 3, median(a, k),
                    p ? sprintf("%.3f", median(b, p)) : "-", n[key]
            }
        }
    }' "$RUNS"
    for mode in pingpong bulk; do
        runs=$(sed -n 's/^(runs: \(.*\))$/\1/p' "$TMP/echo-$mode.txt")
        [ -f "$runs" ] || continue
        awk -v mode=$mode "$AWK_MEDIAN"'
        { key = $2; n[key]++; rate[key, n[key]] = $3; cpu[key, n[key]] = $4
          r_rate[$2, $1] = $3; r_cpu[$2, $1] = $4; rounds[$1] = 1 }
        END {
            split("gale uv", names, " ")
            unit = mode == "bulk" ? "MB_per_s" : "msgs_per_s"
            cunit = mode == "bulk" ? "cpu_ms_per_MB" : "cpu_us_per_msg"
            for (s = 1; s <= 2; s++) for (f = 1; f <= 2; f++) {
                k = 0; p = 0; nm = names[s]
                for (i = 1; i <= n[nm]; i++) a[++k] = f == 1 ? rate[nm, i] : cpu[nm, i]
                for (r in rounds) {
                    x = f == 1 ? r_rate[nm, r] : r_cpu[nm, r]
                    y = f == 1 ? r_rate["uv", r] : r_cpu["uv", r]
                    if (x != "" && y > 0) b[++p] = x / y
                }
                printf "echo_%s\t%s\t%s\t%.*f\t%.3f\t%d\n", mode, nm, f == 1 ? unit : cunit,
                    f == 1 ? 0 : 4, median(a, k), median(b, p), n[nm]
            }
        }' "$runs"
    done
    awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^bytes_per_conn=/) { split($i, kv, "="); b[$1] = kv[2] } }
    END {
        split("gale uv nginx", names, " ")
        for (s = 1; s <= 3; s++) if (names[s] in b)
            printf "idle_conn\t%s\tbytes_per_conn\t%d\t%s\t1\n", names[s], b[names[s]],
                (b["uv"] > 0 ? sprintf("%.3f", b[names[s]] / b["uv"]) : "-")
    }' "$TMP/idle.txt"
} >"$DATA"
echo "== figures: $DATA"
column -t -s $'\t' "$DATA" | sed 1d

"$ROOT/bench/report_charts.sh" "$DATA" "$REPORT"
echo "== charts in $REPORT; $(($(date +%s) - start_time)) s; raw runs in $TMP"

#!/bin/bash
# Static files, gale (apps/demo --static-path) against nginx (bench/nginx_static.conf: one
# process, sendfile on), paired and interleaved: each round runs both servers in turn (which goes
# first alternates), each pinned to CPU 0 (BENCH_CPU_SERVER) and loaded by wrk pinned to CPU 1
# (BENCH_CPU_CLIENT) for SECONDS, in two scenarios:
#   small  GET of a 4 KiB file, `wrk -t1 -c64` keep-alive: req/s and server CPU us per request
#   large  GET of a 64 MiB file LARGE_GETS times (default 48) by one curl over one keep-alive
#          connection (wrk reads 8 KiB per call and would measure itself): MB/s and server CPU
#          ms per MB
# The server's utime + stime (/proc/PID/stat) are read right before and after the client. Prints every
# run, then per scenario the medians and the median of the per-round ratios gale/nginx.
#
#     bench/static_bench.sh [SECONDS] [ROUNDS]        (defaults: 3, 5)
#
# Environment: BENCH_BUILD (default build-bench, with bin/demo built: see bench/README.md),
# BENCH_CPU_SERVER / BENCH_CPU_CLIENT (default 0 / 1).
set -u

SECS=${1:-3}
ROUNDS=${2:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d /tmp/gale-static-bench.XXXXXX)
OUT=$TMP/runs
SERVER_PID=

[ -x "$BUILD/bin/demo" ] || { echo "static_bench: $BUILD/bin/demo not built" >&2; exit 1; }
command -v wrk >/dev/null || { echo "static_bench: wrk not found" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "static_bench: nginx not found" >&2; exit 1; }

mkdir -p "$TMP/www"
head -c 4096 /dev/urandom >"$TMP/www/small.bin"
head -c $((64 << 20)) /dev/urandom >"$TMP/www/large.bin"
sed -e "s|@PORT@|18882|; s|@ROOT@|$TMP/www|; s|@TMP@|$TMP|g" "$ROOT/bench/nginx_static.conf" \
    >"$TMP/nginx.conf"
trap 'stop_server; rm -rf "$TMP"' EXIT

start() { # start NAME: runs the server, sets SERVER_PID and port
    if [ "$1" = gale ]; then
        port=18881
        env -u GALE_LOG_LEVEL taskset -c "$CPU_SERVER" "$BUILD/bin/demo" --port $port --quiet \
            --static-path "$TMP/www" 2>/dev/null &
    else
        port=18882
        taskset -c "$CPU_SERVER" "$NGINX" -c "$TMP/nginx.conf" -e "$TMP/error.log" 2>/dev/null &
    fi
    SERVER_PID=$!
    wait_port $port
}

# bytes "1.50GB": the number of bytes wrk's unit says.
to_bytes() {
    awk '{ v = $1 + 0; u = $1; sub(/^[0-9.]+/, "", u)
           m = u == "KB" ? 1024 : u == "MB" ? 1048576 : u == "GB" ? 1073741824 : 1
           printf "%.0f\n", v * m }' <<<"$1"
}

LARGE_GETS=${LARGE_GETS:-48}

# large PORT: fetches the large file LARGE_GETS times on one connection; prints the requests,
# the bytes and the seconds it took.
large() {
    local urls=() t0 t1 bytes
    for _ in $(seq "$LARGE_GETS"); do # -o once per URL: curl sends the others to stdout
        urls+=(-o /dev/null "http://127.0.0.1:$1/static/large.bin")
    done
    t0=$(date +%s.%N)
    bytes=$(taskset -c "$CPU_CLIENT" curl -s -w '%{size_download}\n' "${urls[@]}" |
        awk '{ s += $1 } END { printf "%.0f\n", s }')
    t1=$(date +%s.%N)
    echo "$LARGE_GETS $bytes $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
}

for round in $(seq "$ROUNDS"); do
    for scen in small large; do
        for name in $(pair_order "$round" | sed 's/uv/nginx/'); do
            start "$name" || exit 1
            read -r u0 s0 < <(cpu_times "$SERVER_PID")
            if [ "$scen" = small ]; then
                line=$(taskset -c "$CPU_CLIENT" wrk -t1 -c64 -d"${SECS}s" \
                    "http://127.0.0.1:$port/static/small.bin" | awk '/requests in/ {print $1, $5}')
                read -r reqs read_ <<<"$line"
                bytes=$(to_bytes "${read_%,}")
                secs=$SECS
            else
                read -r reqs bytes secs < <(large $port)
            fi
            read -r u1 s1 < <(cpu_times "$SERVER_PID")
            stop_server
            if [ -z "${reqs:-}" ] || [ "$reqs" -eq 0 ] || [ "${bytes:-0}" -eq 0 ]; then
                echo "static_bench: $name $scen: no request completed" >&2
                exit 1
            fi
            awk -v r="$round" -v sc="$scen" -v n="$name" -v q="$reqs" -v b="$bytes" \
                -v c=$((u1 - u0 + s1 - s0)) -v k="$TCK" -v d="$secs" 'BEGIN {
                    mb = b / 1048576
                    printf "%d %s %s %.0f %.1f %.3f %.4f\n", r, sc, n, q / d, mb / d,
                        c / k * 1e6 / q, c / k * 1e3 / mb }' | tee -a "$OUT"
        done
    done
done

echo
echo "== $ROUNDS rounds of ${SECS}s (columns: round scenario server req/s MB/s us/req ms/MB)"
for scen in small large; do
    awk -v sc="$scen" "$AWK_MEDIAN"'
    $2 == sc && $3 == "gale" { g++; gq[g] = $4; gm[g] = $5; gc[g] = $6; gb[g] = $7
        q[$1] = $4; m[$1] = $5; c[$1] = $6; b[$1] = $7 }
    $2 == sc && $3 == "nginx" { v++; vq[v] = $4; vm[v] = $5; vc[v] = $6; vb[v] = $7
        nq[$1] = $4; nm[$1] = $5; nc[$1] = $6; nb[$1] = $7 }
    END {
        for (r in nq) { p++; rq[p] = q[r] / nq[r]; rm[p] = m[r] / nm[r]; rc[p] = c[r] / nc[r]
                        rb[p] = b[r] / nb[r] }
        printf "%s: gale  req/s %8.0f  MB/s %7.1f  CPU us/req %7.2f  CPU ms/MB %.4f\n", sc,
            median(gq, g), median(gm, g), median(gc, g), median(gb, g)
        printf "%s: nginx req/s %8.0f  MB/s %7.1f  CPU us/req %7.2f  CPU ms/MB %.4f\n", sc,
            median(vq, v), median(vm, v), median(vc, v), median(vb, v)
        printf "%s: paired ratios gale/nginx: req/s %.3f  MB/s %.3f  CPU per req %.3f  " \
            "CPU per MB %.3f\n", sc, median(rq, p), median(rm, p), median(rc, p), median(rb, p)
    }' "$OUT"
done

#!/bin/bash
# HTTPS: gale's apps/hello against nginx 1.22, the same certificate, protocol and ciphers, in one
# interleaved, pinned run. Three figures per server and round:
#
#   keep-alive   server CPU per request and req/s: `wrk -t1 -c64` over https (64 connections,
#                handshaken once, then requests only);
#   handshake    server CPU per full handshake: bench/tls_handshake (a new TLS session for
#                every connection, one GET / each, "Connection: close", 16 in flight). The
#                client spends more CPU per handshake than the server, so it cannot saturate
#                the server: compare CPU per handshake, not handshakes per second;
#   memory       RSS per idle keep-alive TLS connection: bench/tls_idle_conns (N connections
#                that each did one request, the server's VmRSS growth / N).
#
#     bench/tls_bench.sh [SECONDS] [ROUNDS] [ALPN]     (defaults: 3, 5, none; ALPN e.g. http/1.1)
#
# The certificate is ECDSA P-256, made here by `openssl req` (an RSA-2048 signature alone costs
# about 250 us here, a P-256 one 20 us: RSA would hide the server's own cost). Both servers speak
# TLS 1.2 and 1.3 and take OpenSSL's default TLS 1.2 cipher list with the server's preference; TLS
# 1.3 is negotiated (the handshake client prints the version, cipher and group). ALPN, when given,
# is offered by both clients to both servers; wrk offers none. Each server runs in the foreground
# pinned to CPU 0 (BENCH_CPU_SERVER), each client pinned to CPU 1 (BENCH_CPU_CLIENT); within a
# round the order alternates. A fresh server serves each measurement; CPU is utime + stime from
# /proc/PID/stat read right before and after the client. nginx runs with `master_process off`, one
# worker, its pid, logs and temp paths under a temporary directory, `return 200 "Hello,
# world!"` with no access log; gale's hello with `--quiet` (no access log).
#
# Prints every run, then per figure the medians and the median of the per-round ratios
# gale/nginx. Environment: BENCH_BUILD (default build-bench: hello, tls_handshake and
# tls_idle_conns must be built there), BENCH_IDLE_CONNS (default 2000), BENCH_HS_CONNS
# (handshakes in flight, default 16), BENCH_SCENARIOS (default "keepalive handshake memory").
set -u

SECS=${1:-3}
ROUNDS=${2:-5}
ALPN=${3:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
BUILD=${BENCH_BUILD:-$ROOT/build-bench}
CPU_SERVER=${BENCH_CPU_SERVER:-0}
CPU_CLIENT=${BENCH_CPU_CLIENT:-1}
IDLE_CONNS=${BENCH_IDLE_CONNS:-2000}
HS_CONNS=${BENCH_HS_CONNS:-16}
SCENARIOS=${BENCH_SCENARIOS:-keepalive handshake memory}
TCK=$(getconf CLK_TCK)
TMP=$(mktemp -d /tmp/gale-tls-bench.XXXXXX)
OUT=$TMP/runs.txt
SERVER_PID=

for bin in hello tls_handshake tls_idle_conns; do
    [ -x "$BUILD/bin/$bin" ] || { echo "tls_bench: $BUILD/bin/$bin not built" >&2; exit 1; }
done
for cmd in wrk nginx openssl; do
    command -v $cmd >/dev/null || { echo "tls_bench: $cmd not found" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null ||
    { echo "tls_bench: openssl req failed" >&2; exit 1; }

port_of() { case $1 in gale) echo 18443 ;; nginx) echo 18444 ;; esac; }

mkdir -p "$TMP/nginx/logs"
sed -e "s|@DIR@|$TMP/nginx|g" -e "s|@PORT@|$(port_of nginx)|g" -e "s|@CERT@|$TMP/cert.pem|g" \
    -e "s|@KEY@|$TMP/key.pem|g" "$ROOT/bench/tls_nginx.conf" >"$TMP/nginx/nginx.conf"

# start NAME: the server pinned to CPU_SERVER, in the foreground; sets SERVER_PID.
start() {
    case $1 in
    gale) taskset -c "$CPU_SERVER" "$BUILD/bin/hello" --port "$(port_of gale)" --quiet \
        --certfile "$TMP/cert.pem" --keyfile "$TMP/key.pem" 2>/dev/null & ;;
    nginx) taskset -c "$CPU_SERVER" nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        -e "$TMP/nginx/logs/error.log" 2>/dev/null & ;;
    esac
    SERVER_PID=$!
    wait_port "$(port_of "$1")"
}

# run NAME SCENARIO ROUND: one measurement on a fresh server; appends "round name scenario
# figures..." to OUT.
run() {
    local name=$1 what=$2 round=$3 port u0 s0 u1 s1 line count
    port=$(port_of "$name")
    start "$name" || exit 1
    if [ "$what" = memory ]; then
        line=$(taskset -c "$CPU_CLIENT" "$BUILD/bin/tls_idle_conns" "$port" "$SERVER_PID" \
            "$IDLE_CONNS" 2 ${ALPN:+"$ALPN"}) || { echo "tls_bench: $name: $line" >&2; exit 1; }
        stop_server
        echo "$line" | awk -v r="$round" -v n="$name" '{
            split($5, b, "="); split($6, v, "="); printf "%d %s memory %d %s\n", r, n, b[2], v[2]
        }' | tee -a "$OUT"
        return
    fi
    read -r u0 s0 < <(cpu_times "$SERVER_PID")
    if [ "$what" = keepalive ]; then
        count=$(taskset -c "$CPU_CLIENT" wrk -t1 -c64 -d"${SECS}s" "https://127.0.0.1:$port/" |
            awk '/requests in/ {print $1} /Non-2xx|Socket errors/ {print "errors: " $0 > "/dev/stderr"}')
    else
        line=$(taskset -c "$CPU_CLIENT" "$BUILD/bin/tls_handshake" "$port" "$SECS" "$HS_CONNS" \
            ${ALPN:+"$ALPN"}) || { echo "tls_bench: $name: $line" >&2; exit 1; }
        count=$(echo "$line" | sed -n 's/^handshakes=\([0-9]*\) .*/\1/p')
        echo "    version=${line#*version=}" >>"$TMP/negotiated.txt"
    fi
    read -r u1 s1 < <(cpu_times "$SERVER_PID")
    stop_server
    if [ -z "$count" ] || [ "$count" -eq 0 ]; then
        echo "tls_bench: $name $what: nothing completed" >&2
        exit 1
    fi
    awk -v r="$round" -v n="$name" -v w="$what" -v q="$count" -v u=$((u1 - u0)) \
        -v s=$((s1 - s0)) -v k="$TCK" -v d="$SECS" 'BEGIN {
            printf "%d %s %s %.3f %.3f %.3f %.0f\n", r, n, w, u / k * 1e6 / q, s / k * 1e6 / q,
                (u + s) / k * 1e6 / q, q / d }' | tee -a "$OUT"
}

# On exit: nginx's own complaints, if any (its log goes with its directory).
trap 'stop_server; grep -hE "\[(emerg|alert|crit|error)\]" "$TMP/nginx/logs/error.log" >&2
    rm -rf "$TMP/nginx"' EXIT
echo "# round server scenario: keepalive/handshake user sys total (us per request or" \
    "handshake) rate; memory bytes/conn version"
for round in $(seq "$ROUNDS"); do
    for what in $SCENARIOS; do
        for name in $(pair_order "$round"); do
            [ "$name" = uv ] && name=nginx
            run "$name" "$what" "$round"
        done
    done
done

echo
echo "== $ROUNDS rounds of ${SECS}s, ALPN ${ALPN:-none}: medians, ratios gale/nginx (paired)"
sort -u "$TMP/negotiated.txt" 2>/dev/null
awk "$AWK_MEDIAN"'
$3 == "memory" { key = $2 " memory"; m[key] = m[key] + 1; mv[key, m[key]] = $4; per[$1, $2, "memory"] = $4; seen[$1] = 1; next }
{ key = $2 " " $3; m[key] = m[key] + 1; mv[key, m[key]] = $6; rate[key, m[key]] = $7
  us[key, m[key]] = $4; sy[key, m[key]] = $5; per[$1, $2, $3] = $6; seen[$1] = 1 }
END {
    split("keepalive handshake memory", ws, " ")
    for (i = 1; i <= 3; i++) {
        w = ws[i]; p = 0; below = 0
        for (r in seen) if ((r, "gale", w) in per && (r, "nginx", w) in per && per[r, "nginx", w] > 0) {
            p++; pr[p] = per[r, "gale", w] / per[r, "nginx", w]
            if (per[r, "gale", w] <= per[r, "nginx", w]) below++
        }
        if (!p) continue
        for (j = 1; j <= 2; j++) {
            n = j == 1 ? "gale" : "nginx"; key = n " " w; c = m[key]
            for (k = 1; k <= c; k++) { a[k] = mv[key, k]; b[k] = rate[key, k]; x[k] = us[key, k]; y[k] = sy[key, k] }
            if (w == "memory")
                printf "%-9s %-6s %7.0f bytes per idle connection\n", w, n, median(a, c)
            else
                printf "%-9s %-6s %8.2f us (user %.2f sys %.2f) per %s, %8.0f per s\n", w, n,
                    median(a, c), median(x, c), median(y, c), w == "keepalive" ? "request" : "handshake",
                    median(b, c)
        }
        printf "%-9s paired ratio gale/nginx %.3f (gale at or below nginx in %d of %d rounds)\n",
            w, median(pr, p), below, p
    }
}' "$OUT"
echo "(runs: $OUT)"

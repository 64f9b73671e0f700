#!/bin/bash
# WebSocket echo: gale's demo /ws against libwebsockets' minimal echo server (bench/lws_echo.c)
# and Tornado's (bench/tornado_ws.py), interleaved and pinned: each server on CPU 0, the client
# (bench/ws_bench.c, epoll, checks every echoed byte) on CPU 1.
#
#   bench/ws_bench.sh [BUILD_DIR] [ROUNDS] [SECONDS]      (defaults: build-bench 2 5)
#
# Per round, the servers run in a rotating order, each through: 100 connections ping-ponging
# 64-byte messages (messages/s and server CPU per message), 4 connections streaming 64 KiB
# messages 4 deep (MB/s); then, once per server, 10,000 idle connections (server memory per
# connection). Prints one line per measurement and the medians, with gale's ratios against
# libwebsockets. Needs GALE_BUILD_BENCH=ON with libwebsockets-dev installed, python3-tornado.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=${1:-$src/build-bench}
rounds=${2:-2}
secs=${3:-5}
bin=$build/bin
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
trap_server_cleanup
ulimit -n 20000 2>/dev/null || true

port_of() { case $1 in gale) echo 18931 ;; lws) echo 18932 ;; tornado) echo 18933 ;; esac; }

start() {
    local port
    port=$(port_of "$1")
    case $1 in
    gale) taskset -c 0 "$bin/demo" --port "$port" --quiet 2>/dev/null & ;;
    lws) taskset -c 0 "$bin/lws_echo" "$port" >/dev/null 2>&1 & ;;
    tornado) taskset -c 0 /usr/bin/python3 "$here/tornado_ws.py" "$port" 2>/dev/null & ;;
    esac
    SERVER_PID=$!
    wait_port "$port"
}

client() { taskset -c 1 "$bin/ws_bench" --port "$(port_of "$1")" --server-pid "$SERVER_PID" "${@:2}"; }

order() { case $(($1 % 3)) in 1) echo "gale lws tornado" ;; 2) echo "lws tornado gale" ;; 0) echo "tornado gale lws" ;; esac; }

results=$(mktemp)
for r in $(seq "$rounds"); do
    for s in $(order "$r"); do
        start "$s"
        line=$(client "$s" --mode pingpong --conns 100 --size 64 --seconds "$secs")
        echo "round=$r server=$s $line" | tee -a "$results"
        line=$(client "$s" --mode stream --conns 4 --size 65536 --depth 4 --seconds "$secs")
        echo "round=$r server=$s $line" | tee -a "$results"
        stop_server || true
    done
done
for s in gale lws tornado; do
    start "$s"
    out=$(mktemp)
    # not through client(): $! must be ws_bench itself (taskset execs it), to stop it below
    taskset -c 1 "$bin/ws_bench" --port "$(port_of "$s")" --server-pid "$SERVER_PID" \
        --mode idle --conns 10000 >"$out" &
    cpid=$!
    for _ in $(seq 600); do grep -q mode=idle "$out" && break; sleep 0.1; done
    echo "server=$s $(cat "$out")" | tee -a "$results"
    kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true
    rm -f "$out"
    stop_server || true
done

echo
echo "medians over $rounds rounds:"
awk "$AWK_MEDIAN"'
function val(line, key,    m) { return match(line, key "=[0-9.]+") ? substr(line, RSTART + length(key) + 1, RLENGTH - length(key) - 1) : "" }
{
    split($0, f, " "); for (i in f) if (f[i] ~ /^server=/) s = substr(f[i], 8)
    if ($0 ~ /mode=pingpong/) { n = ++pp[s]; mps[s, n] = val($0, "msgs_per_s"); cpu[s, n] = val($0, "server_cpu_us_per_msg") }
    if ($0 ~ /mode=stream/) { n = ++st[s]; mb[s, n] = val($0, "mb_per_s") }
    if ($0 ~ /mode=idle/) idle[s] = val($0, "server_rss_kib_per_conn")
}
END {
    for (s in pp) {
        for (i = 1; i <= pp[s]; i++) { a[i] = mps[s, i]; b[i] = cpu[s, i] }
        m_mps[s] = median(a, pp[s]); m_cpu[s] = median(b, pp[s])
        for (i = 1; i <= st[s]; i++) c[i] = mb[s, i]
        m_mb[s] = median(c, st[s])
        printf "%-8s pingpong %8.0f msg/s  %7.2f us CPU/msg   stream %7.1f MB/s   idle %6.2f KiB/conn\n", s, m_mps[s], m_cpu[s], m_mb[s], idle[s]
    }
    if (m_cpu["lws"] > 0)
        printf "gale/lws: CPU per message %.2fx, messages/s %.2fx, stream %.2fx\n", m_cpu["gale"] / m_cpu["lws"], m_mps["gale"] / m_mps["lws"], m_mb["gale"] / m_mb["lws"]
}' "$results"
rm -f "$results"

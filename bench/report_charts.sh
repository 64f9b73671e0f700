#!/bin/bash
# Draws the report's charts from its data file (bench/report.sh calls it; run it alone to redraw):
#
#     bench/report_charts.sh [DATA] [OUTDIR]      (defaults: bench/report/data.tsv, bench/report)
#
# hello.png: CPU per request and requests/s of the hello servers, plain and pipelined;
# echo.png: ping-pong and bulk echo, gale against libuv; memory.png: RSS per idle connection.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${1:-$ROOT/bench/report/data.tsv}
OUT=${2:-$ROOT/bench/report}
TMP=$(mktemp -d /tmp/gale-charts.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
command -v gnuplot >/dev/null || { echo "report_charts: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
mkdir -p "$OUT"

# value SCENARIO SERVER FIGURE: the median from DATA, or NaN (gnuplot leaves the bar out).
value() {
    awk -F'\t' -v s="$1" -v n="$2" -v f="$3" '$1 == s && $2 == n && $3 == f { v = $4 }
        END { print v == "" ? "NaN" : v }' "$DATA"
}
label() { case $1 in gale) echo gale ;; uv) echo libuv ;; tornado) echo "Tornado 6" ;; nginx) echo nginx ;; esac; }
title="$(sed -n '1s/^# //p' "$DATA" | sed 's/; ratios.*//'); servers measured A/B in one run on a shared machine: compare ratios, not absolute figures"

# hello: one row per server, columns plain and pipelined.
for fig in cpu_us_per_req req_per_s; do
    for s in gale uv nginx tornado; do
        p=$(value hello_plain $s $fig)
        q=$(value hello_pipe $s $fig)
        [ "$p" = NaN ] && [ "$q" = NaN ] && continue
        printf '"%s" %s %s\n' "$(label $s)" "$p" "$q"
    done >"$TMP/hello_$fig.dat"
done

gnuplot <<EOF
set terminal pngcairo size 1200,520 font "sans,11"
set output "$OUT/hello.png"
set multiplot layout 1,2 title "Hello world over HTTP/1.1 keep-alive: server pinned to one CPU, wrk on the other\n{/*0.8 $title}"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set grid ytics
set key top left
set xtics nomirror
set title "server CPU time per request (us, log scale; lower is better)"
set yrange [0.1:1000]
plot "$TMP/hello_cpu_us_per_req.dat" using 2:xtic(1) title "plain (-c64)" lc rgb "#4477aa", \
     "" using 3 title "pipelined x16 (-c256)" lc rgb "#ee6677", \
     "" using (\$0 - 0.15):2:(sprintf("%.2f", \$2)) with labels offset 0,0.7 font ",9" notitle, \
     "" using (\$0 + 0.15):3:(sprintf("%.2f", \$3)) with labels offset 0,0.7 font ",9" notitle
set title "requests per second (log scale; higher is better)"
set yrange [1000:1e7]
set format y "%.0s%c"
plot "$TMP/hello_req_per_s.dat" using 2:xtic(1) title "plain (-c64)" lc rgb "#4477aa", \
     "" using 3 title "pipelined x16 (-c256)" lc rgb "#ee6677", \
     "" using (\$0 - 0.15):2:(sprintf("%.0fk", \$2 / 1000)) with labels offset 0,0.7 font ",9" notitle, \
     "" using (\$0 + 0.15):3:(sprintf("%.0fk", \$3 / 1000)) with labels offset 0,0.7 font ",9" notitle
unset multiplot
EOF

# echo: gale and libuv, one panel per figure.
for s in gale uv; do
    printf '"%s" %s %s %s %s\n' "$(label $s)" "$(value echo_pingpong $s msgs_per_s)" \
        "$(value echo_pingpong $s cpu_us_per_msg)" "$(value echo_bulk $s MB_per_s)" \
        "$(value echo_bulk $s cpu_ms_per_MB)"
done >"$TMP/echo.dat"
gnuplot <<EOF
set terminal pngcairo size 1200,520 font "sans,11"
set output "$OUT/echo.png"
set multiplot layout 1,4 title "TCP echo, gale (apps/echo) against the libuv echo in bench/: server pinned to one CPU, client on the other\n{/*0.8 $title}"
set style fill solid 0.85 border -1
set boxwidth 0.6
set grid ytics
set xrange [-0.6:1.6]
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set xtics nomirror
unset key
set title "ping-pong msgs/s\n(100 conns, 64 B; higher is better)"
plot "$TMP/echo.dat" using 0:2:(\$0 + 1):xtic(1) with boxes lc variable, \
     "" using 0:2:(sprintf("%.0fk", \$2 / 1000)) with labels offset 0,0.7 font ",9"
set title "ping-pong server CPU\nus per message (lower is better)"
plot "$TMP/echo.dat" using 0:3:(\$0 + 1):xtic(1) with boxes lc variable, \
     "" using 0:3:(sprintf("%.2f", \$3)) with labels offset 0,0.7 font ",9"
set title "bulk MB/s\n(4 conns, 256 KiB writes; higher is better)"
plot "$TMP/echo.dat" using 0:4:(\$0 + 1):xtic(1) with boxes lc variable, \
     "" using 0:4:(sprintf("%.0f", \$4)) with labels offset 0,0.7 font ",9"
set title "bulk server CPU\nms per MB (lower is better)"
plot "$TMP/echo.dat" using 0:5:(\$0 + 1):xtic(1) with boxes lc variable, \
     "" using 0:5:(sprintf("%.3f", \$5)) with labels offset 0,0.7 font ",9"
unset multiplot
EOF

# memory per idle connection.
for s in gale uv nginx; do
    v=$(value idle_conn $s bytes_per_conn)
    [ "$v" = NaN ] || printf '"%s" %s\n' "$(label $s)" "$v"
done >"$TMP/memory.dat"
if [ -s "$TMP/memory.dat" ]; then
    gnuplot <<EOF
set terminal pngcairo size 900,520 font "sans,11"
set output "$OUT/memory.png"
set title "Server RSS per idle keep-alive HTTP connection\n(5,000 connections, each idle after one request; lower is better)\n{/*0.8 $title}"
set style fill solid 0.85 border -1
set boxwidth 0.6
set grid ytics
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set ylabel "bytes per connection"
unset key
plot "$TMP/memory.dat" using 0:2:(\$0 + 1):xtic(1) with boxes lc variable, \
     "" using 0:2:(sprintf("%d B", \$2)) with labels offset 0,0.7 font ",10"
EOF
fi
echo "report_charts: wrote $(cd "$OUT" && ls ./*.png | tr '\n' ' ')"

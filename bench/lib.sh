# Helpers the bench scripts source (not run on its own).

# wait_port PORT: returns once 127.0.0.1:PORT accepts a connection, or 1 after 10 s.
wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    return 1
}

# cpu_times PID: prints the process's user and system time so far, in clock ticks.
cpu_times() { awk '{print $14, $15}' "/proc/$1/stat"; }

# pair_order ROUND: the order the two servers of a paired A/B run in. Odd rounds run gale first,
# even rounds the baseline first, so whatever the run opening a round gains or loses (a cold
# cache, the previous server's sockets in TIME_WAIT) falls on both alike.
pair_order() { if [ $(($1 % 2)) -eq 1 ]; then echo "gale uv"; else echo "uv gale"; fi; }

# The A/B scripts keep the server under test in SERVER_PID; stop_server kills and reaps it (on
# exit too, once trap_server_cleanup is called).
stop_server() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}
trap_server_cleanup() { trap stop_server EXIT; }

# An awk function median(a, n) of the numbers a[1..n] (sorts a), for the scripts' summaries.
# shellcheck disable=SC2034
AWK_MEDIAN='
function median(a, n,    i, j, t) {
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}'

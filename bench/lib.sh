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

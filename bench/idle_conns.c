/* Memory per idle keep-alive HTTP connection, as the server's resident set sees it.
 *
 *     idle_conns PORT PID [N] [IDLE_SECONDS]      (N = 5000, IDLE_SECONDS = 2)
 *
 * Warms the server up with one request, reads its VmRSS from /proc/PID/status, then opens N
 * connections to 127.0.0.1:PORT, sends one "GET /" on each and reads the whole response, so each
 * is a real keep-alive connection that has served a request. It leaves them idle for
 * IDLE_SECONDS, reads VmRSS again, checks that the server closed none of them, and prints
 *
 *     conns=5000 open=5000 rss_before_kib=... rss_after_kib=... bytes_per_conn=...
 *
 * Raises its own RLIMIT_NOFILE soft limit to fit N; the server needs the same (the benchmark
 * script raises `ulimit -n` before starting it). Kernel socket memory is not in the RSS: this
 * measures what the server process allocates per connection.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "idle_util.h"

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/* Connects, sends one request and reads one complete 200 response. Returns the fd, or -1. */
static int open_served(int port)
{
    int fd = connect_loopback(port);
    if (fd < 0)
        return -1;
    if (send(fd, REQUEST, sizeof REQUEST - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof REQUEST - 1))
        goto fail;
    char buf[4096];
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0)
            goto fail;
        n += (size_t)r;
        buf[n] = '\0';
        int done = response_done(buf, n, sizeof buf);
        if (done > 0)
            return fd;
        if (done < 0)
            goto fail;
    }
fail:
    close(fd);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT PID [N] [IDLE_SECONDS]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int pid = atoi(argv[2]);
    int n = argc > 3 ? atoi(argv[3]) : 5000;
    double idle = argc > 4 ? atof(argv[4]) : 2.0;
    if (port <= 0 || pid <= 0 || n <= 0) {
        fprintf(stderr, "idle_conns: bad arguments\n");
        return 2;
    }
    fit_nofile(n);
    int *fds = calloc((size_t)n, sizeof *fds);
    if (!fds)
        return 1;

    int warm = open_served(port);
    if (warm < 0) {
        fprintf(stderr, "idle_conns: warm-up request to port %d failed\n", port);
        return 1;
    }
    close(warm);
    sleep_s(0.5);
    long before = rss_kib(pid);

    for (int i = 0; i < n; i++) {
        fds[i] = open_served(port);
        if (fds[i] < 0) {
            fprintf(stderr, "idle_conns: connection %d failed: %s\n", i, strerror(errno));
            return 1;
        }
    }
    sleep_s(idle);
    long after = rss_kib(pid);

    /* A connection the server closed reads as readable (EOF) or hung up. */
    int open = 0;
    for (int i = 0; i < n; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (poll(&p, 1, 0) == 0)
            open++;
    }
    printf("conns=%d open=%d rss_before_kib=%ld rss_after_kib=%ld bytes_per_conn=%.0f\n", n, open,
           before, after, (double)(after - before) * 1024.0 / n);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    return open == n ? 0 : 1;
}

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
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

static long rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Connects (retrying while the listen backlog is full), sends one request and reads one complete
 * response (headers, then Content-Length bytes). Returns the fd, or -1. */
static int open_served(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = -1;
    for (int attempt = 0; attempt < 50; attempt++) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0)
            break;
        close(fd);
        fd = -1;
        if (errno != ECONNREFUSED && errno != EAGAIN && errno != ETIMEDOUT)
            return -1;
        sleep_s(0.01);
    }
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
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
        char *end = strstr(buf, "\r\n\r\n");
        if (!end) {
            if (n == sizeof buf - 1)
                goto fail;
            continue;
        }
        const char *cl = strcasestr(buf, "\r\nContent-Length:");
        if (!cl || cl > end)
            goto fail;
        size_t want = (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10);
        if (n >= want)
            break;
    }
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0)
        goto fail;
    return fd;
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
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n + 64 ? rl.rlim_max : (rlim_t)n + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
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

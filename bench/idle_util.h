/* What the idle-connection benchmarks (bench/idle_conns.c, bench/tls_idle_conns.c) share: the
 * server's resident set, a loopback connect that waits out a full listen backlog, the end of one
 * HTTP response, and a descriptor limit that fits N connections. Header-only: each benchmark
 * stays one program. */
#ifndef GALE_BENCH_IDLE_UTIL_H
#define GALE_BENCH_IDLE_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* VmRSS of process `pid` in KiB, or -1. */
static inline long rss_kib(int pid)
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

static inline void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* A blocking connection to 127.0.0.1:port with a 10 s receive timeout, retrying while the listen
 * backlog is full. Returns the fd, or -1. */
static inline int connect_loopback(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int attempt = 0; attempt < 50; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0) {
            struct timeval tv = {.tv_sec = 10};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            return fd;
        }
        close(fd);
        if (errno != ECONNREFUSED && errno != EAGAIN && errno != ETIMEDOUT)
            return -1;
        sleep_s(0.01);
    }
    return -1;
}

/* Whether buf[0..n) (NUL-terminated, room for `cap` bytes) holds one whole response: 1 a 200
 * with its Content-Length body, 0 not yet, -1 another status, no Content-Length or no room. */
static inline int response_done(const char *buf, size_t n, size_t cap)
{
    const char *end = strstr(buf, "\r\n\r\n");
    if (!end)
        return n + 1 >= cap ? -1 : 0;
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (!cl || cl > end)
        return -1;
    size_t want = (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10);
    if (n < want)
        return want >= cap ? -1 : 0;
    return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 1 : -1;
}

/* Raises the soft RLIMIT_NOFILE to fit n connections (up to the hard limit). */
static inline void fit_nofile(int n)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)n + 64 ? rl.rlim_max : (rlim_t)n + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

#endif

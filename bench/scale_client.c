/* One of the idle-connection holders of bench/scale_bench.sh: opens N keep-alive HTTP connections
 * to 127.0.0.1:PORT from the source address SRC (127.0.0.x, so that several holders together
 * can exceed one address's ephemeral ports), sends one "GET /" on each and reads the response,
 * then holds them all idle until SIGTERM or SIGINT.
 *
 *     scale_client PORT N SRC
 *
 * Prints, once every connection has been answered,
 *
 *     ready conns=N seconds=S
 *
 * (S: from the first connect to the last response), and at the end
 *
 *     done conns=N open=K
 *
 * K counting the connections the server had not closed. Connecting is blocking and sequential,
 * with retries while the server's listen backlog is full. Raises its own RLIMIT_NOFILE to fit N
 * (the hard limit must allow it). Exits 0 when all N were answered and still open at the end. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "idle_util.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A blocking connection from `src` (port chosen at connect, per destination) to 127.0.0.1:port,
 * retrying while the backlog is full. Returns the fd, or -1. */
static int connect_from(const struct sockaddr_in *src, int port)
{
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)src, sizeof *src) == 0 &&
            connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0) {
            struct timeval tv = {.tv_sec = 30};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            return fd;
        }
        int err = errno;
        close(fd);
        if (err != ECONNREFUSED && err != EAGAIN && err != ETIMEDOUT && err != EADDRNOTAVAIL) {
            errno = err;
            return -1;
        }
        sleep_s(0.01);
    }
    return -1;
}

/* Sends one request on `fd` and reads the whole 200 response. Returns 0 or -1. */
static int serve_once(int fd)
{
    if (send(fd, REQUEST, sizeof REQUEST - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof REQUEST - 1))
        return -1;
    char buf[4096];
    size_t n = 0;
    for (;;) {
        ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        int done = response_done(buf, n, sizeof buf);
        if (done != 0)
            return done > 0 ? 0 : -1;
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s PORT N SRC\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int n = atoi(argv[2]);
    struct sockaddr_in src = {.sin_family = AF_INET};
    if (port <= 0 || n <= 0 || inet_pton(AF_INET, argv[3], &src.sin_addr) != 1) {
        fprintf(stderr, "scale_client: bad arguments\n");
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* Blocked but while waiting in sigsuspend, so a signal between the check and the wait is not
     * lost. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &old);
    fit_nofile(n);
    int *fds = calloc((size_t)n, sizeof *fds);
    if (!fds)
        return 1;

    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        fds[i] = connect_from(&src, port);
        if (fds[i] < 0 || serve_once(fds[i]) < 0) {
            fprintf(stderr, "scale_client %s: connection %d failed: %s\n", argv[3], i,
                    strerror(errno));
            return 1;
        }
        sigset_t pending;
        if (sigpending(&pending) == 0 &&
            (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT)))
            return 1;
    }
    printf("ready conns=%d seconds=%.3f\n", n, now_s() - t0);
    fflush(stdout);

    while (!stop)
        sigsuspend(&old);

    int open = 0;
    for (int i = 0; i < n; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (poll(&p, 1, 0) == 0)
            open++;
        close(fds[i]);
    }
    printf("done conns=%d open=%d\n", n, open);
    free(fds);
    return open == n ? 0 : 1;
}

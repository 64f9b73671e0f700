/* Load client for echo servers (plain epoll, no gale, so it measures the server only).
 *
 *     echo_client PORT [pingpong|bulk] [SECONDS] [CONNECTIONS] [SIZE]
 *
 * pingpong (default: 100 connections, 64-byte messages): each connection sends one message,
 * waits for all of it to come back, sends the next. Prints messages/s (round trips).
 * bulk (default: 4 connections, 256 KiB writes): each connection keeps sending as fast as the
 * server takes it and reads everything echoed back. Prints MB/s echoed back (10^6 bytes).
 * Echoed bytes are checked against what was sent; a mismatch or a closed connection is an error
 * (exit 1). Output is one line, "msgs/s N" or "MB/s N", for scripts, followed on the same line
 * by "sleeps N": how many times the client blocked (its voluntary context switches), each of
 * which the server's CPU later pays a wake-up for.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    size_t sent, received;   /* totals, for the bulk check */
    size_t msg_off, msg_got; /* pingpong: progress of the current message */
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Period PERIOD, so a write can start anywhere in `out` and the stream stays one pattern. */
#define PERIOD 8191
static unsigned char byte_at(size_t i)
{
    return (unsigned char)((i % PERIOD) * 31 + i % PERIOD / 256);
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [pingpong|bulk] [SECONDS] [CONNECTIONS] [SIZE]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int bulk = argc > 2 && strcmp(argv[2], "bulk") == 0;
    double seconds = argc > 3 ? atof(argv[3]) : 5;
    int nconns = argc > 4 ? atoi(argv[4]) : (bulk ? 4 : 100);
    size_t size = argc > 5 ? (size_t)atol(argv[5]) : (bulk ? 256 * 1024 : 64);
    if (nconns <= 0 || size == 0 || seconds <= 0)
        return 2;

    unsigned char *out = malloc(size + PERIOD), *in = malloc(1 << 20);
    for (size_t i = 0; i < size + PERIOD; i++)
        out[i] = byte_at(i);
    struct conn *c = calloc((size_t)nconns, sizeof *c);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nconns; i++) {
        c[i].fd = connect_to(port);
        struct epoll_event ev = {.events = EPOLLIN | (bulk ? EPOLLOUT : 0),
                                 .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
    }
    unsigned long long msgs = 0, echoed = 0;
    /* Pingpong: prime every connection with its first message. */
    if (!bulk) {
        for (int i = 0; i < nconns; i++)
            if (send(c[i].fd, out, size, MSG_NOSIGNAL) != (ssize_t)size) {
                perror("send");
                return 1;
            }
    }
    double start = now(), end = start + seconds;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            struct conn *x = &c[evs[k].data.u32];
            if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t r = recv(x->fd, in, 1 << 20, 0);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                    fprintf(stderr, "echo_client: connection closed by server\n");
                    return 1;
                }
                if (r > 0) {
                    size_t base = bulk ? x->received : x->msg_got;
                    for (ssize_t j = 0; j < r; j += 997) /* sampled check: keep the client cheap */
                        if (in[j] != (bulk ? byte_at(base + (size_t)j) : out[base + (size_t)j])) {
                            fprintf(stderr, "echo_client: wrong byte echoed\n");
                            return 1;
                        }
                    x->received += (size_t)r;
                    echoed += (unsigned long long)r;
                    if (!bulk) {
                        x->msg_got += (size_t)r;
                        if (x->msg_got == size) {
                            msgs++;
                            x->msg_got = 0;
                            if (send(x->fd, out, size, MSG_NOSIGNAL) != (ssize_t)size) {
                                perror("send");
                                return 1;
                            }
                        }
                    }
                }
            }
            if (bulk && (evs[k].events & EPOLLOUT)) {
                size_t off = x->sent % PERIOD;
                ssize_t w = send(x->fd, out + off, size, MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN) {
                    perror("send");
                    return 1;
                }
                /* Keep the pattern continuous: the next write starts where this one stopped. */
                if (w > 0)
                    x->sent += (size_t)w;
            }
        }
    }
    double elapsed = now() - start;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (bulk)
        printf("MB/s %.1f sleeps %ld\n", echoed / elapsed / 1e6, ru.ru_nvcsw);
    else
        printf("msgs/s %.0f sleeps %ld\n", msgs / elapsed, ru.ru_nvcsw);
    return 0;
}

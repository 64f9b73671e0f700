/* WebSocket echo benchmark client: one thread, epoll, checks every echoed byte.
 *
 *     ws_bench --port P [--path /ws] --mode pingpong|stream|idle [--conns N] [--size BYTES]
 *              [--depth K] [--seconds S] [--server-pid PID]
 *
 * pingpong: N connections, each with one message of --size bytes in flight (sent again as soon
 * as its echo is back): messages/s. stream: N connections with --depth messages in flight each:
 * MB/s of echoed payload. idle: opens N connections (handshake done) and holds them. With
 * --server-pid the server's CPU time over the measured window (from /proc/PID/stat) is divided
 * by the messages echoed, and for idle its resident memory growth by the connections.
 *
 * Messages are binary, masked as a client must, with a payload that depends on the connection,
 * the message and the offset, so a byte echoed out of place is caught; echoes may come in any
 * number of frames (libwebsockets fragments them). Output: one line of key=value figures. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd, id;
    bool open;
    /* receiving */
    uint8_t *in;
    size_t ilen, icap;
    uint64_t rx_msg; /* the message being echoed back */
    size_t rx_off;   /* its bytes checked so far */
    bool in_frame;   /* inside a frame's payload */
    uint64_t frame_left;
    /* sending */
    uint8_t *out;
    size_t olen, ocap, osent;
    uint64_t tx_msg; /* messages sent */
};

static size_t msg_size = 64, depth = 1;
static uint64_t echoed, echoed_bytes;
static const char *path = "/ws";
static int epfd;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t pattern(int conn, uint64_t msg, size_t i)
{
    return (uint8_t)(conn * 31 + msg * 7 + i * 13);
}

static void die(const char *what)
{
    fprintf(stderr, "ws_bench: %s\n", what);
    exit(1);
}

static void out_reserve(struct conn *c, size_t more)
{
    if (c->ocap - c->olen >= more)
        return;
    while (c->ocap - c->olen < more)
        c->ocap = c->ocap ? c->ocap * 2 : 65536;
    if (!(c->out = realloc(c->out, c->ocap)))
        die("out of memory");
}

static void queue_message(struct conn *c)
{
    out_reserve(c, msg_size + 14);
    uint8_t *p = c->out + c->olen;
    size_t n = 2;
    p[0] = 0x82;
    if (msg_size < 126) {
        p[1] = (uint8_t)(0x80 | msg_size);
    } else if (msg_size <= 0xffff) {
        p[1] = 0x80 | 126;
        p[2] = (uint8_t)(msg_size >> 8), p[3] = (uint8_t)msg_size;
        n = 4;
    } else {
        p[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            p[2 + i] = (uint8_t)((uint64_t)msg_size >> (56 - 8 * i));
        n = 10;
    }
    uint8_t mask[4] = {(uint8_t)c->id, 0x5a, (uint8_t)c->tx_msg, 0xa5};
    memcpy(p + n, mask, 4);
    n += 4;
    for (size_t i = 0; i < msg_size; i++)
        p[n + i] = pattern(c->id, c->tx_msg, i) ^ mask[i & 3];
    c->olen += n + msg_size;
    c->tx_msg++;
}

static void flush_out(struct conn *c)
{
    while (c->osent < c->olen) {
        ssize_t w = send(c->fd, c->out + c->osent, c->olen - c->osent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN)
                break;
            die("send failed");
        }
        c->osent += (size_t)w;
    }
    if (c->osent == c->olen)
        c->osent = c->olen = 0;
    struct epoll_event ev = {.events = EPOLLIN | (c->olen ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Checks echoed payload bytes against the pattern; a message done sends the next. */
static void check_payload(struct conn *c, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(c->id, c->rx_msg, c->rx_off + i))
            die("echoed byte differs");
    c->rx_off += n;
    echoed_bytes += n;
    if (c->rx_off == msg_size) {
        c->rx_off = 0;
        c->rx_msg++;
        echoed++;
        queue_message(c);
    }
}

/* Parses what arrived: the 101 head first, then frames. */
static void parse_input(struct conn *c)
{
    size_t i = 0;
    if (!c->open) {
        uint8_t *end = memmem(c->in, c->ilen, "\r\n\r\n", 4);
        if (!end)
            return;
        if (c->ilen < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0)
            die("handshake refused");
        c->open = true;
        i = (size_t)(end - c->in) + 4;
    }
    while (i < c->ilen) {
        if (c->in_frame) {
            size_t n = c->ilen - i < c->frame_left ? c->ilen - i : (size_t)c->frame_left;
            check_payload(c, c->in + i, n);
            i += n;
            c->frame_left -= n;
            c->in_frame = c->frame_left > 0;
            continue;
        }
        if (c->ilen - i < 2)
            break;
        uint8_t b0 = c->in[i], b1 = c->in[i + 1];
        size_t h = 2;
        uint64_t len = b1 & 0x7f;
        if (len == 126)
            h = 4;
        else if (len == 127)
            h = 10;
        if (c->ilen - i < h)
            break;
        if (len == 126)
            len = (uint64_t)c->in[i + 2] << 8 | c->in[i + 3];
        else if (len == 127)
            for (int k = 0; k < 8; k++)
                len = (k ? len << 8 : 0) | c->in[i + 2 + k];
        if ((b0 & 0x0f) >= 8)
            die("unexpected control frame");
        i += h;
        c->frame_left = len;
        c->in_frame = len > 0;
    }
    memmove(c->in, c->in + i, c->ilen - i);
    c->ilen -= i;
}

static void on_readable(struct conn *c)
{
    for (;;) {
        if (c->icap - c->ilen < 65536) {
            c->icap = c->icap ? c->icap * 2 : 131072;
            if (!(c->in = realloc(c->in, c->icap)))
                die("out of memory");
        }
        ssize_t r = recv(c->fd, c->in + c->ilen, c->icap - c->ilen, 0);
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0)
            die("connection closed by the server");
        c->ilen += (size_t)r;
        bool was_open = c->open;
        parse_input(c);
        if (!was_open && c->open && depth) /* start the traffic */
            for (size_t k = 0; k < depth; k++)
                queue_message(c);
        if ((size_t)r < c->icap - c->ilen)
            break;
    }
    flush_out(c);
}

static int connect_one(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS)
        die("connect failed");
    return fd;
}

static void server_usage(int pid, double *cpu, long *rss_kib)
{
    char p[64], buf[1024];
    *cpu = 0;
    *rss_kib = 0;
    if (pid <= 0)
        return;
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (f && fgets(buf, sizeof buf, f)) {
        const char *s = strrchr(buf, ')');
        unsigned long ut = 0, st = 0;
        long rss = 0;
        /* fields 3.. after the name: state ppid pgrp session tty tpgid flags minflt cminflt
         * majflt cmajflt utime stime cutime cstime priority nice threads itreal starttime vsize
         * rss */
        if (s && sscanf(s + 2,
                        "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d "
                        "%*d %*d %*d %*u %*u %ld",
                        &ut, &st, &rss) == 3) {
            *cpu = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
            *rss_kib = rss * (sysconf(_SC_PAGESIZE) / 1024);
        }
    }
    if (f)
        fclose(f);
}

int main(int argc, char **argv)
{
    int port = 0, conns = 100, server_pid = 0;
    double seconds = 5;
    const char *mode = "pingpong";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--port"))
            port = atoi(v);
        else if (!strcmp(k, "--path"))
            path = v;
        else if (!strcmp(k, "--mode"))
            mode = v;
        else if (!strcmp(k, "--conns"))
            conns = atoi(v);
        else if (!strcmp(k, "--size"))
            msg_size = (size_t)atol(v);
        else if (!strcmp(k, "--depth"))
            depth = (size_t)atol(v);
        else if (!strcmp(k, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(k, "--server-pid"))
            server_pid = atoi(v);
        else
            die("unknown option (see the file comment)");
    }
    if (!port || conns <= 0 || !msg_size)
        die("--port, --conns > 0 and --size > 0 needed");
    bool idle = !strcmp(mode, "idle");
    if (idle)
        depth = 0;
    else if (!strcmp(mode, "pingpong"))
        depth = 1;
    else if (strcmp(mode, "stream"))
        die("--mode is pingpong, stream or idle");
    epfd = epoll_create1(0);
    double cpu0, cpu1;
    long rss0, rss1;
    server_usage(server_pid, &cpu0, &rss0);
    struct conn *cs = calloc((size_t)conns, sizeof *cs);
    char req[512];
    int rl = snprintf(req, sizeof req,
                      "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n",
                      path);
    /* At most MAX_OPENING handshakes at a time, so a slow server's listen backlog never
     * overflows (dropped SYNs would stall the opening for seconds). */
    int started = 0;
#define MAX_OPENING 100
#define START_MORE()                                                                               \
    for (; started < conns && started - opened < MAX_OPENING; started++) {                         \
        struct conn *c = &cs[started];                                                             \
        c->id = started;                                                                           \
        c->fd = connect_one(port);                                                                 \
        out_reserve(c, (size_t)rl);                                                                \
        memcpy(c->out, req, (size_t)rl);                                                           \
        c->olen = (size_t)rl;                                                                      \
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};                     \
        epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev);                                                \
    }
    struct epoll_event evs[256];
    int opened = 0;
    START_MORE();
    double t0 = now(), start = 0, end = 0;
    uint64_t m0 = 0, b0 = 0;
    for (;;) {
        int n = epoll_wait(epfd, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            struct conn *c = evs[k].data.ptr;
            bool was = c->open;
            if (evs[k].events & EPOLLOUT)
                flush_out(c);
            if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                on_readable(c);
            opened += !was && c->open;
        }
        START_MORE();
        double t = now();
        if (!start && opened == conns) { /* all up: the measured window starts */
            start = t;
            m0 = echoed, b0 = echoed_bytes;
            server_usage(server_pid, &cpu0, &rss1);
            if (idle)
                break;
        }
        if (start && t - start >= seconds) {
            end = t;
            break;
        }
        if (!start && t - t0 > 120)
            die("connections did not all open within 120 s");
    }
    if (idle) {
        server_usage(server_pid, &cpu1, &rss1);
        printf("mode=idle conns=%d server_rss_kib_per_conn=%.2f\n", conns,
               (double)(rss1 - rss0) / conns);
        fflush(stdout);
        pause(); /* held open until killed */
        return 0;
    }
    server_usage(server_pid, &cpu1, &rss1);
    double secs = end - start, msgs = (double)(echoed - m0);
    printf("mode=%s conns=%d size=%zu depth=%zu seconds=%.2f msgs_per_s=%.0f mb_per_s=%.1f "
           "server_cpu_us_per_msg=%.3f\n",
           mode, conns, msg_size, depth, secs, msgs / secs,
           (double)(echoed_bytes - b0) / secs / 1e6,
           server_pid && msgs ? (cpu1 - cpu0) / msgs * 1e6 : 0.0);
    return 0;
}

/* The floor the HTTP servers are measured against: the least a single-threaded epoll server can
 * do per keep-alive request. It parses nothing: every "\r\n\r\n" it reads is a request, answered
 * with one fixed "Hello, world!" response.
 *
 *     limit_hello [PORT]        (default 8881)
 *
 * - level-triggered epoll, one recv per readiness event into one static buffer, one send of every
 *   response that read produced (pipelined requests leave together, as in gale and uv_hello);
 * - the response carries the same header lines as the others (Server, Date formatted once per
 *   second, Content-Type, Content-Length), so the bytes on the wire match;
 * - per connection it keeps one byte (how much of "\r\n\r\n" the last read ended in) in a table
 *   indexed by fd, plus the unsent rest of a response only while the socket is full;
 * - a read of 0 bytes or an error closes the connection; nothing else does (no keep-alive rules).
 *
 * On SIGINT/SIGTERM it prints the number of requests it answered to stderr and exits. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, accept4 */
#endif
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF_SIZE 65536
#define MAX_EVENTS 256

static const char BODY[] = "Hello, world!";
static const char END[] = "\r\n\r\n";

/* Per fd: bytes of END matched at the end of the last read (0..3), and the unsent output. */
struct conn {
    unsigned char match;
    char *pending;
    size_t plen;
};

static struct conn *conns;
static size_t nconns;
static int ep;
static char read_buf[READ_BUF_SIZE];
static char *out;
static size_t out_cap;
static char response[256];
static size_t response_len;
static time_t response_sec = -1;
static volatile sig_atomic_t stop;
static unsigned long long served;

/* Rebuilds the fixed response when the wall clock's second changes (its Date line). */
static void refresh_response(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec == response_sec)
        return;
    response_sec = ts.tv_sec;
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char date[64];
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    response_len = (size_t)snprintf(response, sizeof response,
                                    "HTTP/1.1 200 OK\r\nServer: limit_hello\r\nDate: %s\r\n"
                                    "Content-Type: text/html; charset=UTF-8\r\n"
                                    "Content-Length: %zu\r\n\r\n%s",
                                    date, sizeof BODY - 1, BODY);
}

static struct conn *conn_of(int fd)
{
    if ((size_t)fd >= nconns) {
        size_t n = nconns ? nconns : 1024;
        while (n <= (size_t)fd)
            n *= 2;
        struct conn *c = realloc(conns, n * sizeof *c);
        if (!c)
            return NULL;
        memset(c + nconns, 0, (n - nconns) * sizeof *c);
        conns = c;
        nconns = n;
    }
    return &conns[fd];
}

static void conn_close(int fd)
{
    struct conn *c = &conns[fd];
    free(c->pending);
    *c = (struct conn){0};
    close(fd); /* also leaves the epoll set */
}

/* Counts the request ends in data[0..len), carrying a match across reads in c->match. */
static size_t count_ends(struct conn *c, const char *data, size_t len)
{
    size_t n = 0, i = 0;
    /* finish a match begun in the previous read */
    while (c->match > 0 && i < len) {
        if (data[i] == END[c->match]) {
            i++;
            if (++c->match == 4) {
                n++;
                c->match = 0;
            }
        } else {
            c->match = data[i] == '\r' ? 1 : 0;
            i++;
        }
    }
    for (;;) {
        const char *p = memmem(data + i, len - i, END, 4);
        if (!p)
            break;
        n++;
        i = (size_t)(p - data) + 4;
    }
    /* the longest tail that begins END */
    for (unsigned k = 3; k > 0; k--) {
        if (len - i >= k && memcmp(data + len - k, END, k) == 0) {
            c->match = (unsigned char)k;
            break;
        }
    }
    return n;
}

/* Sends out[0..len) now; keeps what the socket did not take and waits for it to drain. */
static void send_out(int fd, struct conn *c, const char *data, size_t len)
{
    ssize_t w = send(fd, data, len, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN && errno != EINTR) {
        conn_close(fd);
        return;
    }
    size_t sent = w > 0 ? (size_t)w : 0;
    if (sent == len)
        return;
    char *rest = malloc(len - sent);
    if (!rest) {
        conn_close(fd);
        return;
    }
    memcpy(rest, data + sent, len - sent);
    c->pending = rest;
    c->plen = len - sent;
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

static void on_readable(int fd)
{
    struct conn *c = &conns[fd];
    ssize_t r = recv(fd, read_buf, sizeof read_buf, 0);
    if (r <= 0) {
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            conn_close(fd);
        return;
    }
    size_t n = count_ends(c, read_buf, (size_t)r);
    if (n == 0)
        return;
    served += n;
    refresh_response();
    if (n * response_len > out_cap) {
        size_t cap = out_cap ? out_cap : 16384;
        while (cap < n * response_len)
            cap *= 2;
        char *p = realloc(out, cap);
        if (!p) {
            conn_close(fd);
            return;
        }
        out = p;
        out_cap = cap;
    }
    for (size_t i = 0; i < n; i++)
        memcpy(out + i * response_len, response, response_len);
    send_out(fd, c, out, n * response_len);
}

static void on_writable(int fd)
{
    struct conn *c = &conns[fd];
    char *rest = c->pending;
    size_t len = c->plen;
    c->pending = NULL;
    c->plen = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
    send_out(fd, c, rest, len);
    free(rest);
}

static void on_accept(int lfd)
{
    for (int i = 0; i < 128; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (!conn_of(fd) || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            close(fd);
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8881;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 1024) < 0) {
        fprintf(stderr, "limit_hello: listen on %d: %s\n", port, strerror(errno));
        return 1;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        fprintf(stderr, "limit_hello: epoll: %s\n", strerror(errno));
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    fprintf(stderr, "limit_hello: listening on port %d\n", port);

    struct epoll_event evs[MAX_EVENTS];
    while (!stop) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd)
                on_accept(lfd);
            else if (evs[i].events & EPOLLOUT)
                on_writable(fd);
            else
                on_readable(fd);
        }
    }
    fprintf(stderr, "limit_hello: served %llu requests\n", served);
    return 0;
}

/* The baseline gale's echo server is measured against: the same echo server on libuv, written the
 * way a competent C programmer would.
 *
 *     uv_echo [PORT]        (default 10001)
 *
 * - uv_read_start with an alloc_cb that hands out one reusable 64 KiB buffer per connection
 *   (allocated on the first read, so idle connections cost their struct only);
 * - each read is echoed with uv_try_write; only what the kernel did not take is copied into a
 *   uv_write request (libuv writes are zero-copy until the callback, and the read buffer is
 *   reused at once), so the common case costs one read and one write system call;
 * - back-pressure like gale's echo: while more than 1 MiB waits in the connection's write queue
 *   reading stops (uv_read_stop), and resumes when the queue drains;
 * - TCP_NODELAY on accepted connections (gale's echo sets it too).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BUF_SIZE 65536
#define HIGH_WATER (1u << 20)

struct conn {
    uv_tcp_t tcp;
    char *buf;
    int paused;
};

struct wreq {
    uv_write_t req;
    char data[];
};

static uv_loop_t *loop;

static void on_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    free(c->buf);
    free(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    if (!c->buf)
        c->buf = malloc(BUF_SIZE);
    buf->base = c->buf;
    buf->len = c->buf ? BUF_SIZE : 0;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void write_cb(uv_write_t *req, int status)
{
    uv_stream_t *s = req->handle;
    struct conn *c = s->data;
    free(req);
    if (status < 0)
        return;
    if (c->paused && s->write_queue_size <= HIGH_WATER / 2) {
        c->paused = 0;
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    }
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (n == 0)
        return;
    /* Most echoes go out at once: try that first and queue (with a copy) only the rest. */
    uv_buf_t first = uv_buf_init(buf->base, (unsigned)n);
    int done = uv_try_write(s, &first, 1);
    if (done == n)
        return;
    if (done < 0 && done != UV_EAGAIN) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    size_t off = done > 0 ? (size_t)done : 0;
    n -= (ssize_t)off;
    struct wreq *w = malloc(sizeof *w + (size_t)n);
    if (!w) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    memcpy(w->data, buf->base + off, (size_t)n);
    uv_buf_t out = uv_buf_init(w->data, (unsigned)n);
    if (uv_write(&w->req, s, &out, 1, write_cb) < 0) {
        free(w);
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (s->write_queue_size > HIGH_WATER) {
        c->paused = 1;
        uv_read_stop(s);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

static void on_signal(uv_signal_t *h, int signum) { uv_stop(loop); }

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 10001;
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    int err = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (!err)
        err = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (err) {
        fprintf(stderr, "uv_echo: %s\n", uv_strerror(err));
        return 1;
    }
    uv_signal_t sigint, sigterm;
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    fprintf(stderr, "uv_echo listening on port %d\n", port);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}

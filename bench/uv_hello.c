/* The baseline gale's HTTP server is measured against: "Hello, world!" on libuv + http-parser,
 * written the way a careful C programmer would write it by hand.
 *
 *     uv_hello [PORT]        (default 8880)
 *
 * - keep-alive per http_should_keep_alive() (HTTP/1.1 by default, HTTP/1.0 on request);
 * - every request is parsed with http-parser, not pattern-matched;
 * - the response carries Date (formatted once per second), Server, Content-Type and
 *   Content-Length, like gale's and Tornado's;
 * - pipelined requests: every response produced by one read goes out in a single uv_write;
 * - reads land in one static buffer and responses are built in another (the loop is
 *   single-threaded and a read is fully handled before the next one), so the only allocation
 *   per read is the write request and an idle connection costs its struct conn only.
 *
 * On SIGINT/SIGTERM it prints the number of requests it answered to stderr and exits, which lets
 * the benchmark check the request counts wrk reports.
 */
#include <errno.h>
#include <http_parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define READ_BUF_SIZE 65536

static const char BODY[] = "Hello, world!";

struct conn {
    uv_tcp_t tcp;
    http_parser parser;
    int closing; /* answer what we have, then close */
};

struct write_req {
    uv_write_t req;
    struct conn *conn;
    int close_after;
    char data[];
};

static uv_loop_t *loop;
static http_parser_settings settings;
static char read_buf[READ_BUF_SIZE];
static unsigned long long served;
/* Responses produced by the read being handled; copied into one write request at its end. */
static char *out;
static size_t out_len;
static size_t out_cap;

/* "Date: Tue, 25 Nov 2025 19:18:05 GMT\r\n", rebuilt when the loop's second changes. */
static char date_line[64];
static size_t date_len;
static uint64_t date_sec = UINT64_MAX;

static void refresh_date(void)
{
    uint64_t sec = uv_now(loop) / 1000;
    if (sec == date_sec)
        return;
    date_sec = sec;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    date_len = strftime(date_line, sizeof date_line, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

static int out_append(const char *s, size_t n)
{
    if (out_len + n > out_cap) {
        size_t cap = out_cap ? out_cap : 16384;
        while (cap < out_len + n)
            cap *= 2;
        char *p = realloc(out, cap);
        if (!p)
            return -ENOMEM;
        out = p;
        out_cap = cap;
    }
    memcpy(out + out_len, s, n);
    out_len += n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    int keep_alive = http_should_keep_alive(p);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\n"
                     "Server: uv_hello\r\n"
                     "%.*s"
                     "Content-Type: text/plain; charset=UTF-8\r\n"
                     "Content-Length: %zu\r\n"
                     "%s"
                     "\r\n",
                     (int)date_len, date_line, sizeof BODY - 1,
                     !keep_alive          ? "Connection: close\r\n"
                     : p->http_minor == 0 ? "Connection: keep-alive\r\n"
                                          : "");
    if (out_append(head, (size_t)n) < 0 || out_append(BODY, sizeof BODY - 1) < 0)
        return -1;
    served++;
    if (!keep_alive) {
        c->closing = 1;
        return -1; /* stop parsing: nothing after this request is answered */
    }
    return 0;
}

static void on_close(uv_handle_t *h) { free(h->data); }

static void conn_close(struct conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    if (status < 0 || w->close_after)
        conn_close(w->conn);
    free(w);
}

static void flush_out(struct conn *c)
{
    if (out_len == 0) {
        if (c->closing)
            conn_close(c);
        return;
    }
    struct write_req *w = malloc(sizeof *w + out_len);
    if (!w) {
        out_len = 0;
        conn_close(c);
        return;
    }
    memcpy(w->data, out, out_len);
    w->conn = c;
    w->close_after = c->closing;
    uv_buf_t buf = uv_buf_init(w->data, (unsigned int)out_len);
    out_len = 0;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
        free(w);
        conn_close(c);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->closing)
        return;
    refresh_date();
    size_t done = http_parser_execute(&c->parser, &settings, buf->base, (size_t)nread);
    if (!c->closing && (c->parser.http_errno != HPE_OK || done != (size_t)nread)) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nServer: uv_hello\r\n"
                                  "Content-Length: 0\r\nConnection: close\r\n\r\n";
        out_append(bad, sizeof bad - 1);
        c->closing = 1;
    }
    if (c->closing)
        uv_read_stop(s);
    flush_out(c);
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
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    fprintf(stderr, "uv_hello: served %llu requests\n", served);
    exit(0);
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 8880;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
        return 2;
    }
    loop = uv_default_loop();
    settings.on_message_complete = on_message_complete;

    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_ip4_addr("0.0.0.0", port, &addr);
    uv_tcp_init(loop, &server);
    int r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (r < 0) {
        fprintf(stderr, "uv_hello: listen on %d: %s\n", port, uv_strerror(r));
        return 1;
    }
    uv_signal_t sigint, sigterm;
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_unref((uv_handle_t *)&sigint);
    uv_unref((uv_handle_t *)&sigterm);
    fprintf(stderr, "uv_hello: listening on port %d\n", port);
    return uv_run(loop, UV_RUN_DEFAULT);
}

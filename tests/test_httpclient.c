/* HTTP client against real peers on 127.0.0.1: gale's demo app, and a raw socket peer (threads,
 * blocking sockets) that sends exact bytes: whole, one byte at a time, split at a chosen point,
 * or nothing at all. Framing, redirects, timeouts, bad servers, the queue, and no leaks. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/future.h"
#include "core/loop.h"
#include "http/httpclient.h"
#include "net/resolver.h"
#include "testutil.h"

/* ---- helpers ---- */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static gale_loop *new_loop(void)
{
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    return loop;
}

static gale_http_client *new_client(gale_loop *loop, int max_clients)
{
    gale_http_client *c;
    gale_http_client_opts o = {.max_clients = max_clients};
    ck_assert_int_eq(gale_http_client_new(loop, &o, &c), 0);
    return c;
}

/* One completed fetch, kept for assertions. */
struct result {
    int calls;
    int order; /* completion rank, from 1 */
    gale_http_client_response *resp;
};

static int completion_rank;

static void on_result(gale_http_client_response *resp, void *arg)
{
    struct result *r = arg;
    r->calls++;
    r->order = ++completion_rank;
    r->resp = gale_http_client_response_keep(resp);
}

static bool result_done(void *arg) { return ((struct result *)arg)->calls > 0; }

struct many {
    struct result *r;
    int n;
};

static bool all_done(void *arg)
{
    struct many *m = arg;
    for (int i = 0; i < m->n; i++)
        if (!m->r[i].calls)
            return false;
    return true;
}

static void result_clear(struct result *r)
{
    gale_http_client_response_free(r->resp);
    memset(r, 0, sizeof *r);
}

/* Fetches `url` with `req` (NULL: defaults) and waits for the result. */
static void fetch_wait(gale_loop *loop, gale_http_client *c, gale_http_client_request *req,
                       const char *url, struct result *r)
{
    gale_http_client_request def;
    if (!req) {
        gale_http_client_request_init(&def, url);
        req = &def;
    }
    req->url = url;
    memset(r, 0, sizeof *r);
    ck_assert_int_eq(gale_http_fetch(c, req, on_result, r), 0);
    ck_assert_int_eq(r->calls, 0); /* never inside fetch */
    ck_assert(test_wait_until(loop, result_done, r, 20));
    ck_assert_int_eq(r->calls, 1);
}

/* Frees client and loop after letting closing streams finish. */
static void teardown(gale_loop *loop, gale_http_client *c)
{
    gale_http_client_free(c);
    test_run_for(loop, 0.02);
    gale_resolver_cancel_loop(loop);
    gale_loop_free(loop);
}

/* ---- the raw peer ---- */

enum peer_mode { P_WHOLE, P_BYTEWISE, P_SPLIT, P_SILENT };

struct peer;
typedef size_t (*peer_respond_fn)(struct peer *p, const char *req, char *out, size_t cap);

#define PEER_MAX_CONNS 256
#define PEER_REQ_MAX 8192

struct peer {
    int lfd;
    int port;
    int stop_pipe[2];
    pthread_t acceptor;
    pthread_t workers[PEER_MAX_CONNS];
    int n_workers;
    enum peer_mode mode;
    const char *response; /* fixed response, or respond() */
    size_t response_len;
    peer_respond_fn respond;
    size_t split; /* P_SPLIT: bytes in the first write; incremented per connection */
    int gate;     /* hold responses until this many connections are open together */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int conns, open, max_open;
    bool gate_open;
    char requests[64][256]; /* request heads (truncated), in arrival order */
    char bodies[64][64];
    int n_requests;
    bool stopping;
};

struct worker_arg {
    struct peer *p;
    int fd;
    size_t split;
};

/* Reads a request head and its Content-Length body. Returns the head length, or -1. */
static ssize_t peer_read_request(int fd, char *buf, size_t cap, char *body, size_t bodycap)
{
    size_t n = 0;
    char *end = NULL;
    while (!end && n < cap - 1) {
        ssize_t r = recv(fd, buf + n, cap - 1 - n, 0);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end)
        return -1;
    size_t head = (size_t)(end + 4 - buf);
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t want = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
    size_t have = n - head;
    body[0] = '\0';
    if (have < bodycap)
        memcpy(body, buf + head, have);
    while (have < want) {
        char tmp[4096];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r <= 0)
            return -1;
        if (have + (size_t)r < bodycap)
            memcpy(body + have, tmp, (size_t)r);
        have += (size_t)r;
    }
    body[have < bodycap ? have : bodycap - 1] = '\0';
    return (ssize_t)head;
}

static void *peer_worker(void *arg)
{
    struct worker_arg *w = arg;
    struct peer *p = w->p;
    int fd = w->fd;
    char *req = malloc(PEER_REQ_MAX);
    char body[64];
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    test_set_timeouts(fd, 20);
    ssize_t head = peer_read_request(fd, req, PEER_REQ_MAX, body, sizeof body);
    if (head < 0)
        goto out;

    pthread_mutex_lock(&p->mu);
    if (p->n_requests < 64) {
        snprintf(p->requests[p->n_requests], sizeof p->requests[0], "%.*s", (int)head, req);
        snprintf(p->bodies[p->n_requests], sizeof p->bodies[0], "%s", body);
        p->n_requests++;
    }
    p->open++;
    if (p->open > p->max_open)
        p->max_open = p->open;
    if (p->open >= p->gate)
        p->gate_open = true;
    pthread_cond_broadcast(&p->cv);
    while (!p->gate_open && !p->stopping)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);

    if (p->mode == P_SILENT) {
        /* Hold the connection until the client gives up (or the test ends). */
        struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN},
                                {.fd = p->stop_pipe[0], .events = POLLIN}};
        while (poll(pfd, 2, 20000) > 0 && !pfd[1].revents) {
            char tmp[256];
            if (recv(fd, tmp, sizeof tmp, 0) <= 0)
                break;
        }
    } else {
        /* A request counts as open at the peer until its answer starts: the client cannot see
         * the end of the response (and start the next request) before this point, so the count
         * never includes a connection the client has already finished with. */
        pthread_mutex_lock(&p->mu);
        p->open--;
        pthread_mutex_unlock(&p->mu);
        const char *resp = p->response;
        size_t len = p->response_len;
        char *dyn = NULL;
        if (p->respond) {
            dyn = malloc(PEER_REQ_MAX);
            len = p->respond(p, req, dyn, PEER_REQ_MAX);
            resp = dyn;
        }
        if (p->mode == P_BYTEWISE) {
            for (size_t i = 0; i < len; i++)
                if (test_write_all(fd, resp + i, 1) != 0)
                    break;
        } else if (p->mode == P_SPLIT) {
            size_t k = w->split < len ? w->split : len;
            if (test_write_all(fd, resp, k) == 0)
                test_write_all(fd, resp + k, len - k);
        } else {
            test_write_all(fd, resp, len);
        }
        free(dyn);
        shutdown(fd, SHUT_WR);
        /* Wait for the client's close so the client never sees a reset instead of our bytes. */
        char tmp[256];
        while (recv(fd, tmp, sizeof tmp, 0) > 0)
            ;
        goto out;
    }
    pthread_mutex_lock(&p->mu);
    p->open--;
    pthread_mutex_unlock(&p->mu);
out:
    close(fd);
    free(req);
    free(w);
    return NULL;
}

static void *peer_acceptor(void *arg)
{
    struct peer *p = arg;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = p->lfd, .events = POLLIN},
                                {.fd = p->stop_pipe[0], .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0 || pfd[1].revents)
            break;
        int fd = accept(p->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        struct worker_arg *w = malloc(sizeof *w);
        pthread_mutex_lock(&p->mu);
        *w = (struct worker_arg){.p = p, .fd = fd, .split = p->split++};
        p->conns++;
        bool room = p->n_workers < PEER_MAX_CONNS;
        pthread_mutex_unlock(&p->mu);
        if (!room || pthread_create(&p->workers[p->n_workers], NULL, peer_worker, w) != 0) {
            close(fd);
            free(w);
            continue;
        }
        p->n_workers++;
    }
    return NULL;
}

static void peer_start(struct peer *p, enum peer_mode mode, const char *response)
{
    memset(p, 0, sizeof *p);
    p->lfd = test_listen_tcp(&p->port);
    ck_assert_int_ge(p->lfd, 0);
    ck_assert_int_eq(pipe(p->stop_pipe), 0);
    p->mode = mode;
    p->response = response;
    p->response_len = response ? strlen(response) : 0;
    p->gate = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
}

static void peer_run(struct peer *p)
{
    ck_assert_int_eq(pthread_create(&p->acceptor, NULL, peer_acceptor, p), 0);
}

static void peer_stop(struct peer *p)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    ck_assert_int_eq(write(p->stop_pipe[1], "x", 1), 1);
    pthread_join(p->acceptor, NULL);
    for (int i = 0; i < p->n_workers; i++)
        pthread_join(p->workers[i], NULL);
    close(p->lfd);
    close(p->stop_pipe[0]);
    close(p->stop_pipe[1]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

static char *peer_url(const struct peer *p, const char *path)
{
    static char buf[8][128];
    static int i;
    char *u = buf[i++ % 8];
    snprintf(u, sizeof buf[0], "http://127.0.0.1:%d%s", p->port, path);
    return u;
}

/* Runs one fetch against a fresh peer that sends `response` in `mode`. */
static void fetch_raw(enum peer_mode mode, const char *response, gale_http_client_request *req,
                      struct result *r)
{
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct peer p;
    peer_start(&p, mode, response);
    peer_run(&p);
    fetch_wait(loop, c, req, peer_url(&p, "/"), r);
    teardown(loop, c);
    peer_stop(&p);
}

/* ---- the demo app ---- */

static pid_t demo_pid;
static int demo_port;

static void demo_start(void)
{
    demo_port = test_free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", demo_port);
    char *argv[] = {"demo", "--port", port, NULL};
    setenv("GALE_LOG_LEVEL", "warning", 1); /* no access log lines in the test output */
    demo_pid = test_start_app("demo", argv, demo_port);
    ck_assert_int_gt(demo_pid, 0);
}

static void demo_stop(void) { test_stop_app(demo_pid); }

static char *demo_url(const char *path)
{
    static char buf[4][256];
    static int i;
    char *u = buf[i++ % 4];
    snprintf(u, sizeof buf[0], "http://127.0.0.1:%d%s", demo_port, path);
    return u;
}

/* ---- framing ---- */

START_TEST(test_httpclient_demo_content_length)
{
    demo_start();
    int fds = count_fds();
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct result r;
    fetch_wait(loop, c, NULL, demo_url("/"), &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_int_eq(r.resp->code, 200);
    ck_assert_str_eq(r.resp->reason, "OK");
    ck_assert_uint_eq(r.resp->body_len, 13);
    ck_assert_str_eq(r.resp->body, "Hello, world!");
    size_t len;
    const char *cl = gale_http_headers_get(&r.resp->headers, "content-LENGTH", &len);
    ck_assert_ptr_nonnull(cl);
    ck_assert_int_eq(strncmp(cl, "13", len), 0);
    ck_assert_str_eq(r.resp->effective_url, demo_url("/"));
    ck_assert_ptr_null(r.resp->error_message);
    ck_assert(r.resp->request_time >= 0);
    result_clear(&r);
    teardown(loop, c);
    ck_assert_int_eq(count_fds(), fds);
    demo_stop();
}
END_TEST

START_TEST(test_httpclient_demo_chunked_and_echo)
{
    demo_start();
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct result r;
    fetch_wait(loop, c, NULL, demo_url("/stream?chunks=100"), &r);
    ck_assert_int_eq(r.resp->error, 0);
    char want[2048] = "";
    for (int i = 1; i <= 100; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "chunk %d\n", i);
    ck_assert_str_eq(r.resp->body, want);
    result_clear(&r);

    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    req.method = "PUT";
    req.body = "payload\0with nul";
    req.body_len = 16;
    gale_http_headers_add(&req.headers, "Content-Type", 12, "application/x-test", 18);
    fetch_wait(loop, c, &req, demo_url("/echo"), &r);
    gale_http_headers_free(&req.headers);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_uint_eq(r.resp->body_len, 16);
    ck_assert(memcmp(r.resp->body, "payload\0with nul", 16) == 0);
    size_t ctlen;
    const char *ct = gale_http_headers_get(&r.resp->headers, "Content-Type", &ctlen);
    ck_assert_ptr_nonnull(ct);
    ck_assert_uint_eq(ctlen, 18);
    ck_assert(memcmp(ct, "application/x-test", 18) == 0);
    result_clear(&r);
    teardown(loop, c);
    demo_stop();
}
END_TEST

START_TEST(test_httpclient_head_204_304_have_no_body)
{
    demo_start();
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct result r;
    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    req.method = "HEAD";
    fetch_wait(loop, c, &req, demo_url("/"), &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_int_eq(r.resp->code, 200);
    ck_assert_uint_eq(r.resp->body_len, 0);
    result_clear(&r);
    const char *paths[] = {"/status/204", "/status/304"};
    for (int i = 0; i < 2; i++) {
        gale_http_client_request_init(&req, NULL);
        req.raise_error = false;
        fetch_wait(loop, c, &req, demo_url(paths[i]), &r);
        ck_assert_int_eq(r.resp->error, 0);
        ck_assert_int_eq(r.resp->code, i ? 304 : 204);
        ck_assert_uint_eq(r.resp->body_len, 0);
        result_clear(&r);
    }
    teardown(loop, c);
    demo_stop();
}
END_TEST

START_TEST(test_httpclient_close_delimited_body)
{
    struct result r;
    fetch_raw(P_BYTEWISE, "HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the end", NULL, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_int_eq(r.resp->code, 200);
    ck_assert_str_eq(r.resp->body, "until the end");
    result_clear(&r);
}
END_TEST

static const char CHUNKED[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5;name=value\r\nhello\r\n"
                              "1 ; x\r\n,\r\n"
                              "06\r\n world\r\n"
                              "0\r\nX-Trailer: yes\r\n\r\n";

START_TEST(test_httpclient_chunked_bytewise_with_extensions_and_trailers)
{
    struct result r;
    fetch_raw(P_BYTEWISE, CHUNKED, NULL, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_str_eq(r.resp->body, "hello, world");
    result_clear(&r);
}
END_TEST

START_TEST(test_httpclient_chunked_split_at_every_byte)
{
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct peer p;
    peer_start(&p, P_SPLIT, CHUNKED);
    peer_run(&p);
    size_t n = strlen(CHUNKED);
    for (size_t k = 0; k <= n; k++) {
        struct result r;
        fetch_wait(loop, c, NULL, peer_url(&p, "/"), &r);
        ck_assert_msg(r.resp->error == 0, "split at %zu: %s", k, r.resp->error_message);
        ck_assert_str_eq(r.resp->body, "hello, world");
        result_clear(&r);
    }
    teardown(loop, c);
    peer_stop(&p);
    ck_assert_int_eq(p.conns, (int)n + 1);
}
END_TEST

/* ---- a 20 MiB body, buffered and streamed ---- */

#define BIG (20u * 1024 * 1024)

static size_t big_respond(struct peer *p, const char *req, char *out, size_t cap)
{
    return (size_t)snprintf(out, cap, "HTTP/1.1 200 OK\r\nContent-Length: %u\r\n\r\n", BIG);
}

static void *big_sender(void *arg) { return arg; }

struct stream_stats {
    size_t total;
    size_t pieces;
    size_t largest;
    bool pattern_ok;
    int headers_seen;
    int code_at_headers;
};

static void on_piece(const char *data, size_t len, void *arg)
{
    struct stream_stats *st = arg;
    for (size_t i = 0; i < len; i++)
        if (data[i] != (char)('a' + (st->total + i) % 26))
            st->pattern_ok = false;
    st->total += len;
    st->pieces++;
    if (len > st->largest)
        st->largest = len;
}

static void on_headers(const gale_http_client_response *resp, void *arg)
{
    struct stream_stats *st = arg;
    st->headers_seen++;
    st->code_at_headers = resp->code;
}

/* A peer thread that answers one request with a 20 MiB patterned body. */
struct big_peer {
    int lfd, port;
    pthread_t th;
};

static void *big_peer_main(void *arg)
{
    struct big_peer *b = arg;
    int fd = accept(b->lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    test_set_timeouts(fd, 20);
    char req[4096], body[8];
    if (peer_read_request(fd, req, sizeof req, body, sizeof body) >= 0) {
        char head[128];
        size_t hl = big_respond(NULL, NULL, head, sizeof head);
        test_write_all(fd, head, hl);
        char *buf = malloc(1 << 20);
        for (size_t off = 0; buf && off < BIG; off += 1 << 20) {
            for (size_t i = 0; i < (1 << 20); i++)
                buf[i] = (char)('a' + (off + i) % 26);
            if (test_write_all(fd, buf, 1 << 20) != 0)
                break;
        }
        free(buf);
        shutdown(fd, SHUT_WR);
        while (recv(fd, req, sizeof req, 0) > 0)
            ;
    }
    close(fd);
    return big_sender(NULL);
}

static void big_fetch(bool streaming)
{
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct big_peer b;
    b.lfd = test_listen_tcp(&b.port);
    ck_assert_int_eq(pthread_create(&b.th, NULL, big_peer_main, &b), 0);
    struct stream_stats st = {.pattern_ok = true};
    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    if (streaming) {
        req.streaming_cb = on_piece;
        req.header_cb = on_headers;
        req.cb_arg = &st;
    }
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/big", b.port);
    struct result r;
    fetch_wait(loop, c, &req, url, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_int_eq(r.resp->code, 200);
    if (streaming) {
        /* Nothing was buffered: the body arrived in many pieces, none larger than one receive,
         * and the response holds no body at all. */
        ck_assert_uint_eq(st.total, BIG);
        ck_assert(st.pattern_ok);
        ck_assert_uint_gt(st.pieces, 16);
        ck_assert_uint_le(st.largest, 1u << 20);
        ck_assert_uint_eq(r.resp->body_len, 0);
        ck_assert_str_eq(r.resp->body, "");
        ck_assert_int_eq(st.headers_seen, 1);
        ck_assert_int_eq(st.code_at_headers, 200);
    } else {
        ck_assert_uint_eq(r.resp->body_len, BIG);
        struct stream_stats check = {.pattern_ok = true};
        on_piece(r.resp->body, r.resp->body_len, &check);
        ck_assert(check.pattern_ok);
    }
    result_clear(&r);
    teardown(loop, c);
    pthread_join(b.th, NULL);
    close(b.lfd);
}

START_TEST(test_httpclient_20mib_body_buffered) { big_fetch(false); }
END_TEST

START_TEST(test_httpclient_20mib_body_streamed_without_buffering) { big_fetch(true); }
END_TEST

/* ---- redirects ---- */

START_TEST(test_httpclient_follows_redirect_on_demo)
{
    demo_start();
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct result r;
    fetch_wait(loop, c, NULL, demo_url("/redirect?to=/user/7"), &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_int_eq(r.resp->code, 200);
    ck_assert_str_eq(r.resp->body, "user 7");
    ck_assert_int_eq(r.resp->redirects, 1);
    ck_assert_str_eq(r.resp->effective_url, demo_url("/user/7"));
    result_clear(&r);

    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    req.follow_redirects = false;
    fetch_wait(loop, c, &req, demo_url("/redirect?to=/user/7"), &r);
    ck_assert_int_eq(r.resp->code, 302);
    ck_assert_int_eq(r.resp->error, GALE_EBADSTATUS);
    ck_assert_int_eq(r.resp->redirects, 0);
    result_clear(&r);
    teardown(loop, c);
    demo_stop();
}
END_TEST

START_TEST(test_httpclient_redirect_loop_stops_at_max_redirects)
{
    struct peer p;
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    peer_start(&p, P_WHOLE, "HTTP/1.1 302 Found\r\nLocation: loop\r\nContent-Length: 3\r\n\r\nabc");
    peer_run(&p);
    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    req.max_redirects = 3;
    struct result r;
    fetch_wait(loop, c, &req, peer_url(&p, "/a/start"), &r);
    ck_assert_int_eq(r.resp->error, GALE_EREDIRECTS);
    ck_assert_int_eq(r.resp->code, 302);
    ck_assert_int_eq(r.resp->redirects, 3);
    ck_assert_str_eq(r.resp->body, "abc");
    ck_assert_str_eq(r.resp->effective_url, peer_url(&p, "/a/loop"));
    result_clear(&r);
    teardown(loop, c);
    peer_stop(&p);
    ck_assert_int_eq(p.conns, 4);
}
END_TEST

static size_t see_other_respond(struct peer *p, const char *req, char *out, size_t cap)
{
    if (!strncmp(req, "POST /303 ", 10))
        return (size_t)snprintf(out, cap,
                                "HTTP/1.1 303 See Other\r\nLocation: /target\r\n"
                                "Content-Length: 0\r\n\r\n");
    if (!strncmp(req, "POST /307 ", 10))
        return (size_t)snprintf(out, cap,
                                "HTTP/1.1 307 Temporary Redirect\r\n"
                                "Location: http://127.0.0.1:%d/target\r\n"
                                "Content-Length: 0\r\n\r\n",
                                p->port);
    return (size_t)snprintf(out, cap, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
}

START_TEST(test_httpclient_303_switches_to_get_307_keeps_post)
{
    struct peer p;
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    peer_start(&p, P_WHOLE, NULL);
    p.respond = see_other_respond;
    peer_run(&p);
    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    req.method = "POST";
    req.body = "form=1";
    req.body_len = 6;
    gale_http_headers_add(&req.headers, "Content-Type", 12, "text/plain", 10);
    struct result r;
    fetch_wait(loop, c, &req, peer_url(&p, "/303"), &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_str_eq(r.resp->body, "ok");
    result_clear(&r);
    fetch_wait(loop, c, &req, peer_url(&p, "/307"), &r);
    ck_assert_int_eq(r.resp->error, 0);
    result_clear(&r);
    gale_http_headers_free(&req.headers);
    teardown(loop, c);
    peer_stop(&p);
    ck_assert_int_eq(p.n_requests, 4);
    ck_assert(!strncmp(p.requests[0], "POST /303 HTTP/1.1\r\n", 20));
    ck_assert_str_eq(p.bodies[0], "form=1");
    ck_assert(!strncmp(p.requests[1], "GET /target HTTP/1.1\r\n", 22));
    ck_assert_ptr_null(strcasestr(p.requests[1], "Content-Length"));
    ck_assert_ptr_null(strcasestr(p.requests[1], "Content-Type"));
    ck_assert_str_eq(p.bodies[1], "");
    ck_assert(!strncmp(p.requests[3], "POST /target HTTP/1.1\r\n", 23));
    ck_assert_str_eq(p.bodies[3], "form=1");
    ck_assert_ptr_nonnull(strcasestr(p.requests[3], "\r\nContent-Type: text/plain\r\n"));
}
END_TEST

/* "/30N" answers a redirect with status N to /target; anything else 200. */
static size_t redirect_by_path(struct peer *p, const char *req, char *out, size_t cap)
{
    const char *path = strchr(req, ' ');
    if (path && !strncmp(path, " /30", 4) && path[4] >= '1' && path[4] <= '8' && path[5] == ' ')
        return (size_t)snprintf(out, cap,
                                "HTTP/1.1 30%c Moved\r\nLocation: /target\r\n"
                                "Content-Length: 0\r\n\r\n",
                                path[4]);
    return (size_t)snprintf(out, cap, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
}

/* Which redirects change the method, as in Tornado: 303 turns all but HEAD into GET, 301 and 302
 * turn only POST into GET; a PUT or DELETE keeps its method (and a PUT its body) on 301/302. */
START_TEST(test_httpclient_redirect_keeps_method_except_post_and_303)
{
    static const struct {
        const char *method, *path, *expect; /* expect: the method sent to /target */
        bool body;
    } cases[] = {
        {"PUT", "/301", "PUT", true},        {"PUT", "/302", "PUT", true},
        {"DELETE", "/302", "DELETE", false}, {"POST", "/301", "GET", true},
        {"POST", "/302", "GET", true},       {"DELETE", "/303", "GET", false},
        {"PUT", "/303", "GET", true},        {"HEAD", "/303", "HEAD", false},
    };
    struct peer p;
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    peer_start(&p, P_WHOLE, NULL);
    p.respond = redirect_by_path;
    peer_run(&p);
    size_t n = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n; i++) {
        gale_http_client_request req;
        gale_http_client_request_init(&req, NULL);
        req.method = cases[i].method;
        if (cases[i].body) {
            req.body = "v=1";
            req.body_len = 3;
        }
        struct result r;
        fetch_wait(loop, c, &req, peer_url(&p, cases[i].path), &r);
        ck_assert_int_eq(r.resp->error, 0);
        ck_assert_int_eq(r.resp->code, 200);
        ck_assert_int_eq(r.resp->redirects, 1);
        result_clear(&r);
    }
    teardown(loop, c);
    peer_stop(&p);
    ck_assert_int_eq(p.n_requests, (int)(2 * n));
    for (size_t i = 0; i < n; i++) {
        const char *target = p.requests[2 * i + 1];
        char line[64];
        snprintf(line, sizeof line, "%s /target HTTP/1.1\r\n", cases[i].expect);
        if (strncmp(target, line, strlen(line)) != 0)
            ck_abort_msg("%s %s: sent to the target: %.40s", cases[i].method, cases[i].path,
                         target);
        bool kept = !strcmp(cases[i].expect, cases[i].method);
        ck_assert_str_eq(p.bodies[2 * i + 1], kept && cases[i].body ? "v=1" : "");
    }
}
END_TEST

/* A POST without a Content-Type gets Tornado's form default (a gale server then reads its body
 * arguments); one the caller sets is kept, and other methods get none. */
START_TEST(test_httpclient_post_defaults_to_form_content_type)
{
    struct peer p;
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    peer_start(&p, P_WHOLE, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    peer_run(&p);
    static const char *const methods[] = {"POST", "POST", "PUT"};
    for (int i = 0; i < 3; i++) {
        gale_http_client_request req;
        gale_http_client_request_init(&req, NULL);
        req.method = methods[i];
        req.body = "a=1&b=2";
        req.body_len = 7;
        if (i == 1)
            gale_http_headers_add(&req.headers, "Content-Type", 12, "text/csv", 8);
        struct result r;
        fetch_wait(loop, c, &req, peer_url(&p, "/f"), &r);
        ck_assert_int_eq(r.resp->error, 0);
        result_clear(&r);
        gale_http_headers_free(&req.headers);
    }
    teardown(loop, c);
    peer_stop(&p);
    ck_assert_int_eq(p.n_requests, 3);
    ck_assert_ptr_nonnull(
        strcasestr(p.requests[0], "\r\nContent-Type: application/x-www-form-urlencoded\r\n"));
    ck_assert_ptr_nonnull(strcasestr(p.requests[1], "\r\nContent-Type: text/csv\r\n"));
    ck_assert_ptr_null(strcasestr(p.requests[1], "x-www-form-urlencoded"));
    ck_assert_ptr_null(strcasestr(p.requests[2], "Content-Type"));
    ck_assert_str_eq(p.bodies[0], "a=1&b=2");
}
END_TEST

/* ---- connection failures and timeouts ---- */

START_TEST(test_httpclient_connect_refused)
{
    int fds = count_fds();
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", test_free_port());
    struct result r;
    fetch_wait(loop, c, NULL, url, &r);
    ck_assert_int_eq(r.resp->error, -ECONNREFUSED);
    ck_assert_int_eq(r.resp->code, GALE_HTTP_NO_RESPONSE);
    ck_assert_uint_eq(r.resp->body_len, 0);
    ck_assert_ptr_nonnull(r.resp->error_message);
    result_clear(&r);
    teardown(loop, c);
    ck_assert_int_eq(count_fds(), fds);
}
END_TEST

START_TEST(test_httpclient_unresolvable_host)
{
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct result r;
    fetch_wait(loop, c, NULL, "http://nonexistent.invalid/", &r);
    ck_assert_int_eq(r.resp->error, GALE_ERESOLVE);
    ck_assert_int_eq(r.resp->code, GALE_HTTP_NO_RESPONSE);
    result_clear(&r);
    teardown(loop, c);
}
END_TEST

START_TEST(test_httpclient_connect_timeout_without_fd_leak)
{
    int fds = count_fds();
    gale_loop *loop = new_loop();
    /* listen(fd, 0), never accepted: once its queue is full new SYNs are dropped. */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof sin;
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof sin), 0);
    ck_assert_int_eq(listen(lfd, 0), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
    int fillers[2];
    for (int i = 0; i < 2; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fillers[i], (struct sockaddr *)&sin, sizeof sin);
    }
    test_run_for(loop, 0.05);
    gale_http_client *c = new_client(loop, 0);
    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    req.connect_timeout = 0.2;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(sin.sin_port));
    struct result r;
    fetch_wait(loop, c, &req, url, &r);
    ck_assert_int_eq(r.resp->error, -ETIMEDOUT);
    ck_assert_str_eq(r.resp->error_message, "Timeout while connecting");
    result_clear(&r);
    teardown(loop, c);
    for (int i = 0; i < 2; i++)
        close(fillers[i]);
    close(lfd);
    ck_assert_int_eq(count_fds(), fds);
}
END_TEST

START_TEST(test_httpclient_request_timeout_on_silent_server)
{
    int fds = count_fds();
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct peer p;
    peer_start(&p, P_SILENT, NULL);
    peer_run(&p);
    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    req.request_timeout = 0.2;
    struct result r;
    fetch_wait(loop, c, &req, peer_url(&p, "/"), &r);
    ck_assert_int_eq(r.resp->error, -ETIMEDOUT);
    ck_assert_str_eq(r.resp->error_message, "Timeout during request");
    ck_assert_int_eq(r.resp->code, GALE_HTTP_NO_RESPONSE);
    result_clear(&r);
    teardown(loop, c);
    peer_stop(&p);
    ck_assert_int_eq(p.n_requests, 1);
    ck_assert_int_eq(count_fds(), fds);
}
END_TEST

/* ---- bad servers ---- */

struct bad_case {
    const char *name;
    const char *response;
    int error;
};

static const struct bad_case BAD[] = {
    {"empty", "", GALE_EEOF},
    {"garbage", "garbage\r\n\r\n", GALE_EHTTP},
    {"bad version", "HTP/1.1 200 OK\r\n\r\n", GALE_EHTTP},
    {"http 2", "HTTP/2.0 200 OK\r\n\r\n", GALE_EHTTP},
    {"two-digit status", "HTTP/1.1 20 OK\r\n\r\n", GALE_EHTTP},
    {"status glued to reason", "HTTP/1.1 200OK\r\n\r\n", GALE_EHTTP},
    {"status with letter", "HTTP/1.1 2x0 OK\r\n\r\n", GALE_EHTTP},
    {"header without colon", "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", GALE_EHTTP},
    {"space before colon", "HTTP/1.1 200 OK\r\nName : v\r\n\r\n", GALE_EHTTP},
    {"obs-fold", "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", GALE_EHTTP},
    {"bare CR in value", "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", GALE_EHTTP},
    {"bare LF line", "HTTP/1.1 200 OK\nA: b\r\n\r\n", GALE_EHTTP},
    {"negative length", "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nabc", GALE_EHTTP},
    {"plus length", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nabcde", GALE_EHTTP},
    {"length overflow", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     GALE_EHTTP},
    {"differing lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
     GALE_EHTTP},
    {"gzip coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     GALE_EHTTP},
    {"two TE headers",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     GALE_EHTTP},
    {"negative chunk",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nabcde\r\n0\r\n\r\n", GALE_EHTTP},
    {"chunk overflow",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000000000a\r\nabc",
     GALE_EHTTP},
    {"absurd chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nab",
     -EFBIG},
    {"non-hex chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", GALE_EHTTP},
    {"chunk without CRLF",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", GALE_EHTTP},
    {"close mid-body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..", GALE_EEOF},
    {"close mid-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nabc", GALE_EEOF},
    {"close before last chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
     GALE_EEOF},
    {"close mid-headers", "HTTP/1.1 200 OK\r\nContent-Le", GALE_EEOF},
    {"101", "HTTP/1.1 101 Switching Protocols\r\n\r\n", GALE_EHTTP},
};

START_TEST(test_httpclient_bad_server_fails_only_that_request)
{
    const struct bad_case *bc = &BAD[_i];
    int fds = count_fds();
    struct result r;
    fetch_raw(P_WHOLE, bc->response, NULL, &r);
    ck_assert_msg(r.resp->error == bc->error, "%s: got %s (%s)", bc->name,
                  gale_err_name(r.resp->error), r.resp->error_message);
    ck_assert_int_eq(r.resp->code, GALE_HTTP_NO_RESPONSE);
    ck_assert_uint_eq(r.resp->body_len, 0); /* never a truncated success */
    ck_assert_uint_eq(r.resp->headers.n, 0);
    result_clear(&r);
    ck_assert_int_eq(count_fds(), fds);
}
END_TEST

START_TEST(test_httpclient_interim_100_is_skipped)
{
    struct result r;
    fetch_raw(P_BYTEWISE,
              "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
              NULL, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_int_eq(r.resp->code, 201);
    ck_assert_str_eq(r.resp->reason, "Created");
    ck_assert_str_eq(r.resp->body, "ok");
    result_clear(&r);
}
END_TEST

START_TEST(test_httpclient_oversized_header_block)
{
    size_t n = 100 * 1024;
    char *resp = malloc(n + 64);
    strcpy(resp, "HTTP/1.1 200 OK\r\nX-Big: ");
    size_t l = strlen(resp);
    memset(resp + l, 'a', n);
    strcpy(resp + l + n, "\r\n\r\n");
    struct result r;
    fetch_raw(P_WHOLE, resp, NULL, &r);
    ck_assert_int_eq(r.resp->error, -EMSGSIZE);
    result_clear(&r);
    free(resp);
}
END_TEST

START_TEST(test_httpclient_body_over_max_body_size)
{
    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    req.max_body_size = 10;
    struct result r;
    fetch_raw(P_WHOLE, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a", &req, &r);
    ck_assert_int_eq(r.resp->error, -EFBIG);
    result_clear(&r);
    fetch_raw(P_WHOLE, "HTTP/1.0 200 OK\r\n\r\n0123456789abcdef", &req, &r);
    ck_assert_int_eq(r.resp->error, -EFBIG);
    result_clear(&r);
    fetch_raw(P_WHOLE,
              "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n",
              &req, &r);
    ck_assert_int_eq(r.resp->error, -EFBIG);
    result_clear(&r);
    /* exactly at the limit is fine */
    fetch_raw(P_WHOLE, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789", &req, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_str_eq(r.resp->body, "0123456789");
    result_clear(&r);
}
END_TEST

/* ---- URLs and arguments ---- */

START_TEST(test_httpclient_other_schemes_are_unsupported)
{
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    struct result r;
    fetch_wait(loop, c, NULL, "ftp://127.0.0.1/", &r);
    ck_assert_int_eq(r.resp->error, GALE_ESCHEME);
    ck_assert_int_eq(r.resp->code, GALE_HTTP_NO_RESPONSE);
    ck_assert_ptr_nonnull(strstr(r.resp->error_message, "https://"));
    result_clear(&r);
    const char *bad[] = {"127.0.0.1/",   "http://",         "http:///x",    "http://a b/",
                         "http://h:0/",  "http://h:65536/", "http://h:8x/", "http://[::1/",
                         "http://[zz]/", "http://a:1:2/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fetch_wait(loop, c, NULL, bad[i], &r);
        ck_assert_msg(r.resp->error == -EINVAL, "%s: %s", bad[i], gale_err_name(r.resp->error));
        result_clear(&r);
    }
    ck_assert_int_eq(gale_http_fetch(c, NULL, on_result, &r), -EINVAL);
    gale_http_client_request req;
    gale_http_client_request_init(&req, "http://127.0.0.1/");
    ck_assert_int_eq(gale_http_fetch(c, &req, NULL, NULL), -EINVAL);
    /* header injection */
    gale_http_headers_add(&req.headers, "X-A", 3, "1\r\nX-B: 2", 9);
    fetch_wait(loop, c, &req, "http://127.0.0.1/", &r);
    ck_assert_int_eq(r.resp->error, -EINVAL);
    result_clear(&r);
    gale_http_headers_free(&req.headers);
    req.method = "GE T";
    fetch_wait(loop, c, &req, "http://127.0.0.1/", &r);
    ck_assert_int_eq(r.resp->error, -EINVAL);
    result_clear(&r);
    teardown(loop, c);
}
END_TEST

START_TEST(test_httpclient_request_line_and_headers)
{
    struct peer p;
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    peer_start(&p, P_WHOLE, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    peer_run(&p);
    gale_http_client_request req;
    gale_http_client_request_init(&req, NULL);
    req.user_agent = "tester/1";
    gale_http_headers_add(&req.headers, "X-Custom", 8, "v1", 2);
    struct result r;
    char url[128];
    snprintf(url, sizeof url, "http://user:pw@127.0.0.1:%d/p/a?q=1#frag", p.port);
    fetch_wait(loop, c, &req, url, &r);
    ck_assert_int_eq(r.resp->error, 0);
    result_clear(&r);
    gale_http_headers_free(&req.headers);
    teardown(loop, c);
    peer_stop(&p);
    ck_assert_int_eq(p.n_requests, 1);
    const char *q = p.requests[0];
    ck_assert(!strncmp(q, "GET /p/a?q=1 HTTP/1.1\r\n", 23));
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: 127.0.0.1:%d\r\n", p.port);
    ck_assert_ptr_nonnull(strstr(q, host));
    ck_assert_ptr_nonnull(strstr(q, "\r\nUser-Agent: tester/1\r\n"));
    ck_assert_ptr_null(strstr(q, "\r\nConnection:")); /* HTTP/1.1: persistent by default */
    ck_assert_ptr_nonnull(strstr(q, "\r\nAccept-Encoding: gzip\r\n"));
    ck_assert_ptr_nonnull(strstr(q, "\r\nX-Custom: v1\r\n"));
    ck_assert_ptr_nonnull(strstr(q, "\r\nAuthorization: Basic dXNlcjpwdw==\r\n"));
}
END_TEST

/* An IPv6 literal in brackets: connects to ::1, Host keeps the brackets. */
START_TEST(test_httpclient_ipv6_literal)
{
    int lfd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    socklen_t slen = sizeof sin6;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin6, sizeof sin6) != 0) {
        if (lfd >= 0)
            close(lfd);
        return; /* no IPv6 loopback on this machine */
    }
    ck_assert_int_eq(listen(lfd, 8), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin6, &slen), 0);
    struct peer p;
    peer_start(&p, P_WHOLE, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nv6");
    close(p.lfd);
    p.lfd = lfd;
    p.port = ntohs(sin6.sin6_port);
    peer_run(&p);
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 0);
    char url[64];
    snprintf(url, sizeof url, "http://[::1]:%d/six", p.port);
    struct result r;
    fetch_wait(loop, c, NULL, url, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_str_eq(r.resp->body, "v6");
    result_clear(&r);
    teardown(loop, c);
    peer_stop(&p);
    char host[64];
    snprintf(host, sizeof host, "\r\nHost: [::1]:%d\r\n", p.port);
    ck_assert_ptr_nonnull(strstr(p.requests[0], host));
}
END_TEST

/* ---- the queue ---- */

START_TEST(test_httpclient_max_clients_fifo_order)
{
    struct peer p;
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 1);
    peer_start(&p, P_WHOLE, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    peer_run(&p);
    struct result r[6] = {0};
    completion_rank = 0;
    for (int i = 0; i < 6; i++) {
        char path[16];
        snprintf(path, sizeof path, "/%d", i);
        gale_http_client_request req;
        gale_http_client_request_init(&req, peer_url(&p, path));
        ck_assert_int_eq(gale_http_fetch(c, &req, on_result, &r[i]), 0);
    }
    ck_assert_uint_eq(gale_http_client_active(c), 1);
    ck_assert_uint_eq(gale_http_client_queued(c), 5);
    struct many m = {r, 6};
    ck_assert(test_wait_until(loop, all_done, &m, 20));
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(r[i].resp->error, 0);
        ck_assert_int_eq(r[i].order, i + 1);
        result_clear(&r[i]);
    }
    ck_assert_uint_eq(gale_http_client_active(c), 0);
    ck_assert_uint_eq(gale_http_client_queued(c), 0);
    teardown(loop, c);
    peer_stop(&p);
    ck_assert_int_eq(p.n_requests, 6);
    for (int i = 0; i < 6; i++) {
        char line[32];
        snprintf(line, sizeof line, "GET /%d HTTP/1.1\r\n", i);
        ck_assert_str_eq(strncmp(p.requests[i], line, strlen(line)) ? p.requests[i] : line, line);
    }
    ck_assert_int_eq(p.max_open, 1);
}
END_TEST

START_TEST(test_httpclient_at_most_max_clients_in_flight)
{
    struct peer p;
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 3);
    peer_start(&p, P_WHOLE, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    p.gate = 3; /* answers nothing until three connections are open together */
    peer_run(&p);
    struct result r[12] = {0};
    for (int i = 0; i < 12; i++) {
        gale_http_client_request req;
        gale_http_client_request_init(&req, peer_url(&p, "/"));
        ck_assert_int_eq(gale_http_fetch(c, &req, on_result, &r[i]), 0);
    }
    struct many m = {r, 12};
    ck_assert(test_wait_until(loop, all_done, &m, 20));
    for (int i = 0; i < 12; i++) {
        ck_assert_int_eq(r[i].resp->error, 0);
        result_clear(&r[i]);
    }
    teardown(loop, c);
    peer_stop(&p);
    ck_assert_int_eq(p.conns, 12);
    ck_assert_int_eq(p.max_open, 3);
}
END_TEST

START_TEST(test_httpclient_queue_timeout_never_sends)
{
    struct peer p;
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 1);
    peer_start(&p, P_SILENT, NULL);
    peer_run(&p);
    struct result first = {0}, second = {0};
    gale_http_client_request req;
    gale_http_client_request_init(&req, peer_url(&p, "/first"));
    req.request_timeout = 10;
    ck_assert_int_eq(gale_http_fetch(c, &req, on_result, &first), 0);
    gale_http_client_request_init(&req, peer_url(&p, "/second"));
    req.connect_timeout = 0.1;
    req.request_timeout = 5;
    ck_assert_int_eq(gale_http_fetch(c, &req, on_result, &second), 0);
    ck_assert(test_wait_until(loop, result_done, &second, 10));
    ck_assert_int_eq(second.resp->error, -ETIMEDOUT);
    ck_assert_str_eq(second.resp->error_message, "Timeout in request queue");
    ck_assert_int_eq(first.calls, 0);
    ck_assert_uint_eq(gale_http_client_queued(c), 0);
    /* Freeing the client cancels the one in flight, from the loop. */
    gale_http_client_free(c);
    ck_assert_int_eq(first.calls, 0);
    ck_assert(test_wait_until(loop, result_done, &first, 5));
    ck_assert_int_eq(first.resp->error, -ECANCELED);
    result_clear(&first);
    result_clear(&second);
    test_run_for(loop, 0.02);
    gale_loop_free(loop);
    peer_stop(&p);
    ck_assert_int_eq(p.conns, 1);
    ck_assert(!strncmp(p.requests[0], "GET /first ", 11));
}
END_TEST

START_TEST(test_httpclient_free_cancels_queued_and_connecting)
{
    demo_start();
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 2);
    struct result r[5] = {0};
    for (int i = 0; i < 5; i++) {
        gale_http_client_request req;
        gale_http_client_request_init(&req, demo_url("/delay?ms=50"));
        ck_assert_int_eq(gale_http_fetch(c, &req, on_result, &r[i]), 0);
    }
    gale_http_client_free(c);
    struct many m = {r, 5};
    ck_assert(test_wait_until(loop, all_done, &m, 5));
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(r[i].calls, 1);
        ck_assert_int_eq(r[i].resp->error, -ECANCELED);
        result_clear(&r[i]);
    }
    test_run_for(loop, 0.05);
    gale_loop_free(loop);
    demo_stop();
}
END_TEST

static gale_http_client *freed_in_cb;

static void free_client_then_record(gale_http_client_response *resp, void *arg)
{
    gale_http_client_free(freed_in_cb);
    freed_in_cb = NULL;
    on_result(resp, arg);
}

START_TEST(test_httpclient_free_inside_fetch_callback)
{
    demo_start();
    gale_loop *loop = new_loop();
    freed_in_cb = new_client(loop, 1);
    struct result r[3] = {0};
    for (int i = 0; i < 3; i++) {
        gale_http_client_request req;
        gale_http_client_request_init(&req, demo_url("/"));
        ck_assert_int_eq(
            gale_http_fetch(freed_in_cb, &req, i ? on_result : free_client_then_record, &r[i]), 0);
    }
    struct many m = {r, 3};
    ck_assert(test_wait_until(loop, all_done, &m, 10));
    ck_assert_ptr_null(freed_in_cb);
    ck_assert_int_eq(r[0].resp->error, 0);
    ck_assert_str_eq(r[0].resp->body, "Hello, world!");
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(r[i].calls, 1);
        if (i)
            ck_assert_int_eq(r[i].resp->error, -ECANCELED);
        result_clear(&r[i]);
    }
    test_run_for(loop, 0.05);
    gale_loop_free(loop);
    demo_stop();
}
END_TEST

START_TEST(test_httpclient_200_concurrent_fetches)
{
    demo_start();
    int fds = count_fds();
    gale_loop *loop = new_loop();
    gale_http_client *c = new_client(loop, 200);
    static struct result r[200];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 200; i++) {
        char path[32];
        snprintf(path, sizeof path, "/user/%d", i);
        gale_http_client_request req;
        gale_http_client_request_init(&req, demo_url(path));
        ck_assert_int_eq(gale_http_fetch(c, &req, on_result, &r[i]), 0);
    }
    struct many m = {r, 200};
    ck_assert(test_wait_until(loop, all_done, &m, 30));
    for (int i = 0; i < 200; i++) {
        char want[32];
        snprintf(want, sizeof want, "user %d", i);
        ck_assert_int_eq(r[i].resp->error, 0);
        ck_assert_str_eq(r[i].resp->body, want);
        result_clear(&r[i]);
    }
    teardown(loop, c);
    ck_assert_int_eq(count_fds(), fds);
    demo_stop();
}
END_TEST

static gale_http_client *future_client;
static gale_future *start_future_fetch(gale_loop *loop, void *arg)
{
    gale_http_client_request req;
    gale_http_client_request_init(&req, arg);
    return gale_http_fetch_future(future_client, &req);
}

START_TEST(test_httpclient_future_form)
{
    demo_start();
    gale_loop *loop = new_loop();
    future_client = new_client(loop, 0);
    gale_future *f;
    ck_assert_int_eq(gale_loop_run_sync(loop, start_future_fetch, demo_url("/user/3"), 10, &f), 0);
    gale_http_client_response *resp = gale_future_result(f);
    ck_assert_ptr_nonnull(resp);
    ck_assert_str_eq(resp->body, "user 3");
    gale_future_unref(f);
    ck_assert_int_eq(gale_loop_run_sync(loop, start_future_fetch, demo_url("/status/404"), 10, &f),
                     GALE_EBADSTATUS);
    ck_assert_ptr_null(gale_future_result(f));
    ck_assert_str_eq(gale_future_error_message(f), "HTTP 404: Not Found");
    gale_future_unref(f);
    teardown(loop, future_client);
    demo_stop();
}
END_TEST

Suite *httpclient_suite(void)
{
    Suite *s = suite_create("httpclient");
    TCase *t = tcase_create("framing");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_httpclient_demo_content_length);
    tcase_add_test(t, test_httpclient_demo_chunked_and_echo);
    tcase_add_test(t, test_httpclient_head_204_304_have_no_body);
    tcase_add_test(t, test_httpclient_close_delimited_body);
    tcase_add_test(t, test_httpclient_chunked_bytewise_with_extensions_and_trailers);
    tcase_add_test(t, test_httpclient_chunked_split_at_every_byte);
    tcase_add_test(t, test_httpclient_20mib_body_buffered);
    tcase_add_test(t, test_httpclient_20mib_body_streamed_without_buffering);
    tcase_add_test(t, test_httpclient_interim_100_is_skipped);
    tcase_add_test(t, test_httpclient_request_line_and_headers);
    tcase_add_test(t, test_httpclient_ipv6_literal);
    tcase_add_test(t, test_httpclient_future_form);
    suite_add_tcase(s, t);

    t = tcase_create("redirects");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_httpclient_follows_redirect_on_demo);
    tcase_add_test(t, test_httpclient_redirect_loop_stops_at_max_redirects);
    tcase_add_test(t, test_httpclient_303_switches_to_get_307_keeps_post);
    tcase_add_test(t, test_httpclient_redirect_keeps_method_except_post_and_303);
    tcase_add_test(t, test_httpclient_post_defaults_to_form_content_type);
    suite_add_tcase(s, t);

    t = tcase_create("failures");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_httpclient_connect_refused);
    tcase_add_test(t, test_httpclient_unresolvable_host);
    tcase_add_test(t, test_httpclient_connect_timeout_without_fd_leak);
    tcase_add_test(t, test_httpclient_request_timeout_on_silent_server);
    tcase_add_loop_test(t, test_httpclient_bad_server_fails_only_that_request, 0,
                        (int)(sizeof BAD / sizeof BAD[0]));
    tcase_add_test(t, test_httpclient_oversized_header_block);
    tcase_add_test(t, test_httpclient_body_over_max_body_size);
    tcase_add_test(t, test_httpclient_other_schemes_are_unsupported);
    suite_add_tcase(s, t);

    t = tcase_create("queue");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_httpclient_max_clients_fifo_order);
    tcase_add_test(t, test_httpclient_at_most_max_clients_in_flight);
    tcase_add_test(t, test_httpclient_queue_timeout_never_sends);
    tcase_add_test(t, test_httpclient_free_cancels_queued_and_connecting);
    tcase_add_test(t, test_httpclient_free_inside_fetch_callback);
    tcase_add_test(t, test_httpclient_200_concurrent_fetches);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(httpclient_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

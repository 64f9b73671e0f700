/* web: the application and request handlers, driven with raw HTTP over real sockets from a client
 * thread while the test's loop serves. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/coro.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/web.h"
#include "net/tcpserver.h"
#include "rawhttp.h"
#include "testutil.h"

static gale_loop *loop;
static gale_app *app;
static int port;
static const char *unix_path; /* set: clients connect to this unix socket instead of port */

/* Counters the handlers bump; each test runs in its own process (CK_FORK). */
static int n_prepare, n_method, n_finish, n_close, last_rc;
/* Set by async handlers once they wait: a client that leaves closes only after this, so the
 * disconnect reaches the server while the handler is pending, not together with the request. */
static atomic_bool handler_waiting;

/* ---- client side ---- */

struct client {
    const char *req;
    size_t reqlen;
    bool close_after_send;
    struct test_http_client http;
};

static void client_main(void *arg)
{
    struct client *c = arg;
    int rc = unix_path ? test_http_open_unix(&c->http, unix_path, 10)
                       : test_http_open(&c->http, port, 10);
    if (rc != 0)
        return;
    test_http_send(&c->http, c->req, c->reqlen);
    if (!c->close_after_send) {
        test_http_read_all(&c->http, 1 << 20);
    } else {
        for (int i = 0; i < 5000 && !atomic_load(&handler_waiting); i++)
            nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
    }
}

/* Everything the server sent: its first response's head parsed, the rest raw. */
struct resp {
    int status;
    char *raw;
    size_t len;
    const char *body; /* the bytes after the first head, up to the connection's end */
    size_t body_len;
    struct test_http_response head;
};

static void resp_free(struct resp *r)
{
    free(r->raw);
    test_http_response_free(&r->head);
}

/* Sends `raw` on a new connection and serves until the server closes it. */
static struct resp http_raw(const char *raw, bool close_after_send)
{
    struct client c = {.req = raw, .reqlen = strlen(raw), .close_after_send = close_after_send};
    ck_assert(test_run_thread(loop, client_main, &c, 10));
    struct resp r = {.raw = c.http.buf, .len = c.http.len};
    c.http.buf = NULL;
    test_http_close(&c.http);
    if (r.raw && test_http_parse_head(r.raw, r.len, &r.head) > 0) {
        r.status = r.head.status;
        r.body = r.raw + r.head.head_len;
        r.body_len = r.len - r.head.head_len;
    }
    return r;
}

/* One request with Connection: close. */
static struct resp http(const char *method, const char *target, const char *headers,
                        const char *body)
{
    static char buf[8192];
    snprintf(buf, sizeof buf, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n%s", method,
             target, headers ? headers : "", body ? body : "");
    return http_raw(buf, false);
}

/* True when the first response has the header "name: value" (name case-insensitive). */
static bool has_header(const struct resp *r, const char *name, const char *value)
{
    return test_http_header_is(&r->head, name, value);
}

static bool has_header_name(const struct resp *r, const char *name)
{
    return test_http_header(&r->head, name) != NULL;
}

static void assert_body(const struct resp *r, const char *want)
{
    ck_assert_ptr_nonnull(r->body);
    ck_assert_uint_eq(r->body_len, strlen(want));
    ck_assert_mem_eq(r->body, want, strlen(want));
}

/* ---- handlers ---- */

static void hello_get(gale_handler *h)
{
    n_method++;
    gale_write_str(h, "Hello, world!");
}
static void count_finish(gale_handler *h) { n_finish++; }
static const gale_handler_class hello = {.get = hello_get, .on_finish = count_finish};

static void items_get(gale_handler *h)
{
    size_t len0, len1;
    const char *a = gale_path_arg(h, 0, &len0);
    const char *b = gale_path_arg(h, 1, &len1);
    gale_writef(h, "%zu:%s(%zu)|%s(%zu)|%s", gale_path_arg_count(h), a, len0, b ? b : "null",
                b ? len1 : 0, gale_path_arg(h, 2, NULL) ? "extra" : "none");
}
static const gale_handler_class items = {.get = items_get};

static void post_only(gale_handler *h) { gale_write_str(h, "posted"); }
static const gale_handler_class post_get = {.get = hello_get, .post = post_only};

static void guard_prepare(gale_handler *h)
{
    n_prepare++;
    size_t len;
    const char *tok = gale_get_header(h, "x-token", &len);
    if (!tok || len != 6 || memcmp(tok, "secret", 6) != 0)
        gale_send_error(h, 403);
}
static const gale_handler_class guarded = {
    .prepare = guard_prepare, .get = hello_get, .on_finish = count_finish};

struct st {
    int value;
    char bytes[200];
};
static void state_get(gale_handler *h)
{
    struct st *s = gale_handler_state(h);
    bool zero = s->value == 0;
    for (size_t i = 0; i < sizeof s->bytes; i++)
        zero = zero && s->bytes[i] == 0;
    s->value = 42;
    memset(s->bytes, 0xAB, sizeof s->bytes);
    gale_write_str(h, zero ? "zeroed" : "dirty");
}
static const gale_handler_class stateful = {.state_size = sizeof(struct st), .get = state_get};

struct async_st {
    gale_timeout timer;
};
static void async_fire(gale_loop *l, void *arg)
{
    gale_handler *h = arg;
    struct async_st *s = gale_handler_state(h);
    s->timer = 0;
    gale_write_str(h, "later");
    last_rc = gale_finish(h);
}
static void async_get(gale_handler *h)
{
    n_method++;
    struct async_st *s = gale_handler_state(h);
    gale_write_str(h, "not yet: ");
    gale_loop_call_later(gale_handler_loop(h), 0.01, async_fire, h, &s->timer);
    atomic_store(&handler_waiting, true);
}
static const gale_handler_class async_timer = {.state_size = sizeof(struct async_st),
                                               .async = true,
                                               .get = async_get,
                                               .on_finish = count_finish};

/* Declared async by call instead of flag; never finishes on its own: the close callback does. */
static void wait_get(gale_handler *h)
{
    n_method++;
    gale_handler_async(h);
    atomic_store(&handler_waiting, true);
}
static void wait_closed(gale_handler *h)
{
    n_close++;
    last_rc = gale_finish(h);
}
static const gale_handler_class wait_forever = {
    .get = wait_get, .on_connection_close = wait_closed, .on_finish = count_finish};

/* Async with a timer that outlives the client: the finish comes after the close callback. */
static void late_closed(gale_handler *h) { n_close++; }
static const gale_handler_class late_finish = {.state_size = sizeof(struct async_st),
                                               .async = true,
                                               .get = async_get,
                                               .on_connection_close = late_closed,
                                               .on_finish = count_finish};

static void fail_get(gale_handler *h)
{
    gale_set_header(h, "X-Partial", "yes");
    gale_write_str(h, "partial output that must not show");
    gale_fail(h, -EIO);
}
static const gale_handler_class failing = {.get = fail_get, .on_finish = count_finish};

static void teapot_get(gale_handler *h) { gale_send_error(h, 418); }
static const gale_handler_class teapot = {.get = teapot_get};

static void redirect_get(gale_handler *h)
{
    last_rc = gale_redirect(h, "/x", 99);
    ck_assert_int_eq(last_rc, -EINVAL);
    ck_assert_int_eq(gale_redirect(h, "/bad\r\nX: y", 302), -EINVAL);
    const char *perm = gale_get_argument(h, "perm", NULL);
    last_rc = gale_redirect(h, "/target?a=1", perm ? 301 : 0);
    ck_assert_int_eq(gale_write_str(h, "after"), -EALREADY);
}
static const gale_handler_class redirector = {.get = redirect_get};

static void cookie_get(gale_handler *h)
{
    gale_cookie_opts o = {.domain = "example.com",
                          .has_max_age = true,
                          .max_age = 60,
                          .secure = true,
                          .httponly = true,
                          .samesite = "Lax"};
    ck_assert_int_eq(gale_set_cookie(h, "sid", "abc123", &o), 0);
    ck_assert_int_eq(gale_set_cookie(h, "plain", "v", NULL), 0);
    gale_cookie_opts e = {.path = "/app", .expires = 1700000000};
    ck_assert_int_eq(gale_set_cookie(h, "exp", "1", &e), 0);
    ck_assert_int_eq(gale_set_cookie(h, "bad name", "v", NULL), -EINVAL);
    ck_assert_int_eq(gale_set_cookie(h, "", "v", NULL), -EINVAL);
    ck_assert_int_eq(gale_set_cookie(h, "n", "a;b", NULL), -EINVAL);
    ck_assert_int_eq(gale_set_cookie(h, "n", "a b", NULL), -EINVAL);
    ck_assert_int_eq(gale_set_cookie(h, "n", "a\r\nX: y", NULL), -EINVAL);
    ck_assert_int_eq(gale_set_cookie(h, "n", "\"q\"", NULL), -EINVAL);
    gale_cookie_opts bp = {.path = "/;evil"};
    ck_assert_int_eq(gale_set_cookie(h, "n", "v", &bp), -EINVAL);
    gale_cookie_opts bs = {.samesite = "Sometimes"};
    ck_assert_int_eq(gale_set_cookie(h, "n", "v", &bs), -EINVAL);
    gale_writef(h, "%s|%s|%s", gale_get_cookie(h, "session", "none"),
                gale_get_cookie(h, "theme", "none"), gale_get_cookie(h, "missing", "none"));
}
static const gale_handler_class cookies = {.get = cookie_get};

/* Sets a cookie twice, another once, a header, then answers with an error page. */
static void cookie_error_get(gale_handler *h)
{
    ck_assert_int_eq(gale_set_cookie(h, "sid", "first", NULL), 0);
    ck_assert_int_eq(gale_set_cookie(h, "sid2", "other", NULL), 0);
    ck_assert_int_eq(gale_set_cookie(h, "sid", "second", NULL), 0);
    ck_assert_int_eq(gale_set_header(h, "X-Dropped", "1"), 0);
    if (gale_get_argument(h, "fail", NULL))
        gale_send_error(h, 403);
}
static const gale_handler_class cookie_error = {.get = cookie_error_get};

static void writef_get(gale_handler *h)
{
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    gale_writef(h, "%d-%s-", 7, "seven");
    gale_writef(h, "%s", big);
    gale_writef(h, "%c", '!');
}
static const gale_handler_class formatter = {.get = writef_get};

static void chunks_get(gale_handler *h)
{
    gale_set_header(h, "Content-Type", "text/plain");
    gale_write_str(h, "one");
    ck_assert_int_eq(gale_flush(h), 0);
    ck_assert_int_eq(gale_set_header(h, "X-Late", "1"), -EALREADY);
    gale_write_str(h, "two!");
    gale_flush(h);
    gale_write_str(h, "three");
}
static const gale_handler_class chunker = {.get = chunks_get};

/* A large response streamed piece by piece, each written once the previous one has left. */
#define STREAM_PIECE (256u * 1024)
#define STREAM_TOTAL (16u << 20)

static unsigned char stream_byte(size_t i) { return (unsigned char)(i * 131 + (i >> 12)); }

static struct {
    size_t sent, max_pending;
    int flushed, failed;
} streamed;

static void stream_next(int status, void *arg)
{
    gale_handler *h = arg;
    if (status < 0) {
        streamed.failed++;
        gale_finish(h);
        return;
    }
    streamed.flushed++;
    if (streamed.sent == STREAM_TOTAL) {
        gale_finish(h);
        return;
    }
    static unsigned char piece[STREAM_PIECE];
    for (size_t i = 0; i < STREAM_PIECE; i++)
        piece[i] = stream_byte(streamed.sent + i);
    ck_assert_int_eq(gale_write(h, piece, STREAM_PIECE), 0);
    streamed.sent += STREAM_PIECE;
    int rc = gale_flush_cb(h, stream_next, h);
    size_t pending = gale_http_response_pending(gale_handler_request(h));
    if (pending > streamed.max_pending)
        streamed.max_pending = pending;
    if (rc) {
        streamed.failed++;
        gale_finish(h);
    }
}

static void stream_get(gale_handler *h)
{
    char len[32];
    snprintf(len, sizeof len, "%u", STREAM_TOTAL);
    gale_set_header(h, "Content-Length", len);
    gale_handler_async(h);
    ck_assert_int_eq(gale_flush_cb(h, stream_next, h), 0); /* the head first */
}
static const gale_handler_class streamer = {.get = stream_get};

/* The same as a coroutine awaiting each flush's future. */
static void stream_coro(gale_handler *h)
{
    char len[32];
    snprintf(len, sizeof len, "%u", STREAM_TOTAL);
    gale_set_header(h, "Content-Length", len);
    static unsigned char piece[STREAM_PIECE];
    while (streamed.sent < STREAM_TOTAL) {
        for (size_t i = 0; i < STREAM_PIECE; i++)
            piece[i] = stream_byte(streamed.sent + i);
        gale_write(h, piece, STREAM_PIECE);
        streamed.sent += STREAM_PIECE;
        gale_future *f = gale_flush_future(h);
        size_t pending = gale_http_response_pending(gale_handler_request(h));
        if (pending > streamed.max_pending)
            streamed.max_pending = pending;
        if (gale_await_drop(f) < 0) {
            streamed.failed++;
            return;
        }
        streamed.flushed++;
    }
}
GALE_CORO_METHOD(stream_coro_get, stream_coro)
static const gale_handler_class coro_streamer = {.get = stream_coro_get};

/* A client with a small receive buffer that reads slowly and checks every body byte; it hangs
 * up after `stop_after` body bytes if that is not 0. */
struct slow_reader {
    const char *path;
    size_t stop_after;
    size_t body;
    bool bytes_ok;
    int status;
    atomic_bool done;
};

static void *slow_reader_main(void *arg)
{
    struct slow_reader *sr = arg;
    sr->bytes_ok = true;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rcvbuf = 32768;
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0 ||
        connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        sr->bytes_ok = false;
        atomic_store(&sr->done, true);
        return NULL;
    }
    test_set_timeouts(fd, 10);
    char req[256];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", sr->path);
    test_write_all(fd, req, strlen(req));
    static char buf[65536];
    char head[4096];
    size_t hlen = 0;
    bool in_body = false;
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        size_t off = 0;
        if (!in_body) {
            while (off < (size_t)n && hlen < sizeof head - 1) {
                head[hlen++] = buf[off++];
                if (hlen >= 4 && !memcmp(head + hlen - 4, "\r\n\r\n", 4)) {
                    in_body = true;
                    head[hlen] = '\0';
                    sscanf(head, "HTTP/1.1 %d", &sr->status);
                    break;
                }
            }
        }
        if (in_body) {
            for (; off < (size_t)n; off++, sr->body++)
                if ((unsigned char)buf[off] != stream_byte(sr->body))
                    sr->bytes_ok = false;
        }
        if (sr->stop_after && sr->body >= sr->stop_after)
            break;
        nanosleep(&(struct timespec){0, 200 * 1000}, NULL);
    }
    close(fd);
    atomic_store(&sr->done, true);
    return NULL;
}

static bool slow_reader_done(void *arg) { return atomic_load(&((struct slow_reader *)arg)->done); }

static bool stream_failed(void *arg) { return streamed.failed > 0; }

static void run_slow_reader(struct slow_reader *sr)
{
    memset(&streamed, 0, sizeof streamed);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, slow_reader_main, sr), 0);
    ck_assert(test_wait_until(loop, slow_reader_done, sr, 30));
    pthread_join(t, NULL);
}

/* A flush whose write fails inside the batch (the handler shuts its socket's sending side down
 * first): the callback reports the failure before on_connection_close, while `h` is valid, and
 * may finish the handler there. */
static atomic_int shut_client_port;
static char shut_events[8];
static size_t shut_nevents;
static int shut_status;

static void shut_flushed(int status, void *arg)
{
    gale_handler *h = arg;
    shut_events[shut_nevents++] = 'f';
    shut_status = status;
    if (!gale_finished(h))
        gale_finish(h);
}
static void shut_closed(gale_handler *h)
{
    shut_events[shut_nevents++] = 'c';
    gale_finish(h);
}
static void shut_get(gale_handler *h)
{
    gale_handler_async(h);
    gale_write_str(h, "x");
    /* This request's server-side socket: local port ours, peer port the client's. */
    for (int fd = 3; fd < 1024; fd++) {
        struct sockaddr_in a, b;
        socklen_t la = sizeof a, lb = sizeof b;
        if (getsockname(fd, (struct sockaddr *)&a, &la) == 0 && a.sin_family == AF_INET &&
            ntohs(a.sin_port) == port && getpeername(fd, (struct sockaddr *)&b, &lb) == 0 &&
            ntohs(b.sin_port) == atomic_load(&shut_client_port)) {
            shutdown(fd, SHUT_WR);
            break;
        }
    }
    ck_assert_int_eq(gale_flush_cb(h, shut_flushed, h), 0);
}
static const gale_handler_class shut_writer = {.get = shut_get, .on_connection_close = shut_closed};

static void *shut_client_main(void *arg)
{
    struct slow_reader *sr = arg;
    int fd = test_connect_tcp(port);
    if (fd >= 0) {
        struct sockaddr_in sin;
        socklen_t sl = sizeof sin;
        getsockname(fd, (struct sockaddr *)&sin, &sl);
        atomic_store(&shut_client_port, ntohs(sin.sin_port));
        const char *req = "GET /shut HTTP/1.1\r\nHost: x\r\n\r\n";
        test_write_all(fd, req, strlen(req));
        char buf[4096];
        while (recv(fd, buf, sizeof buf, 0) > 0) {
        }
        close(fd);
    }
    atomic_store(&sr->done, true);
    return NULL;
}

/* An API whose errors are JSON: .write_error renders every error response of the class. */
static void json_error(gale_handler *h, int code)
{
    gale_set_header(h, "Content-Type", "application/json");
    gale_writef(h, "{\"error\": %d, \"arg\": \"%s\"}", code,
                gale_handler_arg(h) ? (const char *)gale_handler_arg(h) : "");
    if (code == 418)
        gale_send_error(h, 500); /* nested: the plain page, no loop */
}
static void api_get(gale_handler *h)
{
    long code = strtol(gale_path_arg(h, 0, NULL), NULL, 10);
    if (code == 500)
        gale_fail(h, -EIO);
    else
        gale_send_error(h, (int)code);
}
static const gale_handler_class api = {.get = api_get, .write_error = json_error};

/* An error sent later, from a timer, by a class whose write_error finishes the response itself. */
static void finishing_error(gale_handler *h, int code)
{
    gale_writef(h, "late %d", code);
    gale_finish(h);
}
static void late_error_fire(gale_loop *l, void *arg)
{
    gale_handler *h = arg;
    last_rc = gale_send_error(h, 503);
}
static void late_json_get(gale_handler *h)
{
    gale_loop_call_later(gale_handler_loop(h), 0.005, late_error_fire, h, NULL);
}
static const gale_handler_class late_json = {
    .get = late_json_get, .async = true, .write_error = finishing_error};

static void not_found_get(gale_handler *h) { gale_send_error(h, 404); }
static const gale_handler_class json_not_found = {.get = not_found_get, .write_error = json_error};

static void args_any(gale_handler *h)
{
    gale_writef(h, "a=%s b=%s q=%s body=%s n=%zu first=%s none=%s", gale_get_argument(h, "a", "-"),
                gale_get_argument(h, "b", "-"), gale_get_query_argument(h, "b", "-"),
                gale_get_body_argument(h, "b", "-"), gale_argument_count(h, GALE_ARGS_ALL, "b"),
                gale_get_argument_at(h, GALE_ARGS_ALL, "b", 0, NULL),
                gale_get_argument(h, "zzz", "dflt"));
    const gale_form_file *f = gale_get_file(h, "up", 0);
    if (f) {
        gale_writef(h, " file=%s:%s:", f->filename, f->content_type);
        gale_write(h, f->body, f->body_len);
    }
}
static const gale_handler_class args = {.get = args_any, .post = args_any};

static void headers_get(gale_handler *h)
{
    size_t len, cursor = 0;
    const char *v = gale_get_header(h, "X-MIXED-case", &len);
    gale_write(h, v, len);
    const gale_http_header *hd;
    while ((hd = gale_header_next(h, "x-rep", &cursor))) {
        gale_write_str(h, ",");
        gale_write(h, hd->value.p, hd->value.len);
    }
    ck_assert_int_eq(gale_set_header(h, "X-Bad", "a\r\nInjected: 1"), -EINVAL);
    ck_assert_int_eq(gale_set_header(h, "Bad Name", "v"), -EINVAL);
    ck_assert_int_eq(gale_set_header(h, "X-One", "1"), 0);
    ck_assert_int_eq(gale_set_header(h, "x-one", "2"), 0);
    ck_assert_int_eq(gale_add_header(h, "X-Two", "a"), 0);
    ck_assert_int_eq(gale_add_header(h, "X-Two", "b"), 0);
    ck_assert_int_eq(gale_add_header(h, "X-Gone", "z"), 0);
    ck_assert_int_eq(gale_clear_header(h, "x-gone"), 0);
    gale_writef(h, "|%s|%s|%s", gale_method(h), gale_path(h), gale_query(h));
}
static const gale_handler_class headers = {.get = headers_get};

static void late_error_get(gale_handler *h)
{
    gale_write_str(h, "started");
    gale_flush(h);
    last_rc = gale_send_error(h, 500);
}
static const gale_handler_class late_error = {.get = late_error_get, .on_finish = count_finish};

static void arg_get(gale_handler *h) { gale_write_str(h, gale_handler_arg(h)); }
static void explicit_head(gale_handler *h)
{
    n_method += 100;
    gale_set_header(h, "X-Head", "1");
}
static void options_m(gale_handler *h)
{
    gale_set_header(h, "Allow", "GET, HEAD, OPTIONS");
    gale_set_status(h, 204);
}
static const gale_handler_class with_arg = {
    .get = arg_get, .head = explicit_head, .options = options_m};

static void nocontent_get(gale_handler *h)
{
    gale_set_status(h, 204);
    gale_write_str(h, "dropped");
}
static const gale_handler_class nocontent = {.get = nocontent_get};

static void setup(void)
{
    gale_log_set_level(GALE_LOG_ERROR);
    n_prepare = n_method = n_finish = n_close = last_rc = 0;
    atomic_store(&handler_waiting, false);
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    gale_loop_make_current(loop);
    app = gale_app_new(NULL);
    ck_assert_ptr_nonnull(app);
    ck_assert_int_eq(gale_app_route(app, "^/$", &hello, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/items/([a-z%0-9]+)(/([0-9]+))?", &items, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/user/([0-9]+)", &hello, NULL), 0);
    /* Written for Python's re, as Tornado users do. */
    ck_assert_int_eq(gale_app_route(app, "/num/(\\d+)", &items, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/nd/(\\D+)", &items, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/word/(\\w+)", &items, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/set/([\\d,]+)", &items, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/slug/([\\w\\-]+)", &items, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/dot/([\\-a\\.]+)", &items, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/lt/a\\>\\-b", &hello, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/post", &post_get, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/guarded", &guarded, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/state", &stateful, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/async", &async_timer, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/wait", &wait_forever, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/late", &late_finish, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/fail", &failing, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/teapot", &teapot, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/redirect", &redirector, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/cookies", &cookies, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/writef", &formatter, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/chunks", &chunker, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/args", &args, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/headers", &headers, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/a|/b", &hello, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/nocontent", &nocontent, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/late-error", &late_error, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/with-arg", &with_arg, "route argument"), 0);
    ck_assert_int_eq(gale_app_route(app, "/cookie-error", &cookie_error, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/api/([0-9]+)", &api, "api"), 0);
    ck_assert_int_eq(gale_app_route(app, "/late-json", &late_json, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/shut", &shut_writer, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/stream", &streamer, NULL), 0);
    ck_assert_int_eq(gale_app_route(app, "/stream-coro", &coro_streamer, NULL), 0);
    ck_assert_int_eq(gale_app_listen(app, 0, "127.0.0.1"), 0);
    port = gale_app_port(app);
    ck_assert_int_gt(port, 0);
}

static void teardown(void)
{
    gale_app_free(app);
    /* Streams close from the loop: let their close callbacks run before the loop goes. */
    test_run_for(loop, 0.02);
    gale_loop_make_current(NULL);
    gale_loop_free(loop);
}

/* ---- sockets ---- */

/* Tornado's add_sockets: a unix socket bound by the caller (behind a proxy) is served next to
 * the TCP listener, with the same routes. */
START_TEST(test_web_add_socket_serves_a_unix_socket)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/gale-web-%d.sock", (int)getpid());
    int fd = gale_bind_unix_socket(path, 0600, 16);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(gale_app_add_socket(app, fd), 0);
    unix_path = path;
    struct resp r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "Hello, world!");
    resp_free(&r);
    r = http("GET", "/nowhere", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    resp_free(&r);
    unix_path = NULL; /* the TCP listener still serves */
    r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    unlink(path);
}
END_TEST

/* Tornado's bind_unix_socket + add_sockets in one call: the socket is served, a second server on
 * the same path is refused while the first lives, and the file goes with the app that made it. */
START_TEST(test_web_listen_unix_serves_and_removes_its_file)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/gale-web-unix-%d.sock", (int)getpid());
    unlink(path);
    ck_assert_int_eq(gale_app_listen_unix(app, NULL, 0600), -EINVAL);
    ck_assert_int_eq(gale_app_listen_unix(app, "", 0600), -EINVAL);
    ck_assert_int_eq(gale_app_listen_unix(app, path, 0600), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_int_eq(st.st_mode & 0777, 0600);
    unix_path = path;
    struct resp r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "Hello, world!");
    resp_free(&r);

    /* A second app on the live path is refused, makes no server, and removes nothing. */
    gale_app *other = gale_app_new(NULL);
    ck_assert_ptr_nonnull(other);
    ck_assert_int_eq(gale_app_listen_unix(other, path, 0600), -EADDRINUSE);
    ck_assert_ptr_null(gale_app_server(other));
    gale_app_free(other);
    struct stat again;
    ck_assert_int_eq(stat(path, &again), 0);
    ck_assert(again.st_ino == st.st_ino);
    r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    unix_path = NULL;

    gale_app_free(app);
    app = NULL;
    ck_assert_int_eq(stat(path, &st), -1);
    ck_assert_int_eq(errno, ENOENT);
}
END_TEST

/* A file another server put at the path after this app bound it is not the app's to remove. */
START_TEST(test_web_listen_unix_leaves_a_replaced_file)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/gale-web-unix2-%d.sock", (int)getpid());
    unlink(path);
    gale_app *other = gale_app_new(NULL);
    ck_assert_ptr_nonnull(other);
    ck_assert_int_eq(gale_app_listen_unix(other, path, 0600), 0);
    ck_assert_int_eq(unlink(path), 0);
    int fd = gale_bind_unix_socket(path, 0600, 16); /* the next server's file */
    ck_assert_int_ge(fd, 0);
    gale_app_free(other);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    close(fd);
    unlink(path);
}
END_TEST

START_TEST(test_web_add_socket_refuses_bad_descriptors)
{
    ck_assert_int_eq(gale_app_add_socket(app, -1), -EINVAL);
    ck_assert_int_eq(gale_app_add_socket(NULL, 0), -EINVAL);
    ck_assert_int_eq(gale_app_add_socket(app, 1000), -EBADF); /* not open */
    /* A fresh app: the server created for the refused socket is freed again. */
    gale_app *other = gale_app_new(NULL);
    ck_assert_ptr_nonnull(other);
    ck_assert_int_eq(gale_app_add_socket(other, 1000), -EBADF);
    ck_assert_ptr_null(gale_app_server(other));
    gale_app_free(other);
    /* The app still serves on its port. */
    struct resp r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
}
END_TEST

/* ---- routing ---- */

START_TEST(test_web_route_literal_path)
{
    struct resp r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "Hello, world!");
    ck_assert(has_header(&r, "Content-Type", "text/html; charset=UTF-8"));
    ck_assert(has_header(&r, "Content-Length", "13"));
    resp_free(&r);
}
END_TEST

START_TEST(test_web_route_captures_are_decoded_path_args)
{
    struct resp r = http("GET", "/items/a%62c/12", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    /* groups: 1 = name, 2 = "/12", 3 = "12" */
    assert_body(&r, "3:abc(3)|/12(3)|extra");
    resp_free(&r);
    r = http("GET", "/items/xyz", NULL, NULL);
    assert_body(&r, "3:xyz(3)|null(0)|none");
    resp_free(&r);
}
END_TEST

START_TEST(test_web_route_anchored_both_ends)
{
    static const char *const paths[] = {"/user/12x", "/x/user/12", "/user/",      "/a/b",
                                        "/ab",       "//",         "/items/UPPER"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        struct resp r = http("GET", paths[i], NULL, NULL);
        ck_assert_msg(r.status == 404, "%s -> %d", paths[i], r.status);
        resp_free(&r);
    }
    struct resp r = http("GET", "/user/12", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    /* an alternation is anchored as a whole */
    r = http("GET", "/b", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
}
END_TEST

/* Python's shorthand classes mean in a route what they mean in Tornado: "\\d" is a digit (POSIX
 * alone would read a plain 'd'), inside brackets too. */
START_TEST(test_web_route_python_classes_match_as_in_python)
{
    static const struct {
        const char *path;
        int status;
    } cases[] = {
        {"/num/42", 200},   {"/num/dd", 404},    {"/num/4d", 404},     {"/nd/abc", 200},
        {"/nd/a1", 404},    {"/word/ab_1", 200}, {"/word/a-b", 404},   {"/set/1,2", 200},
        {"/set/1a", 404},   {"/set/d", 404},     {"/slug/a-b_c", 200}, {"/slug/a.b", 404},
        {"/dot/a.-a", 200}, {"/dot/ab", 404},    {"/lt/a>-b", 200},    {"/lt/a-b", 404},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r = http("GET", cases[i].path, NULL, NULL);
        ck_assert_msg(r.status == cases[i].status, "%s -> %d", cases[i].path, r.status);
        resp_free(&r);
    }
    struct resp r = http("GET", "/num/42", NULL, NULL);
    assert_body(&r, "1:42(2)|null(0)|none");
    resp_free(&r);
}
END_TEST

/* What POSIX cannot spell is refused when the route is added, never compiled into a pattern that
 * matches other paths. */
START_TEST(test_web_route_python_only_syntax_refused)
{
    static const char *const bad[] = {
        "/(?P<id>\\d+)", "/x/(?:a|b)", "/a\\Z",         "/t\\t",      "/b/[\\D]",
        "/c/[a\\-z]",    "/d/[\\]]",   "/e/[[:alpha:]", "/br/(a)\\1", "/r/[\\w-~]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(gale_app_route(app, bad[i], &hello, NULL) == -EINVAL, "%s accepted", bad[i]);
    /* None of them was added: the paths they were meant for find no route. */
    struct resp r = http("GET", "/x/a", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    resp_free(&r);
}
END_TEST

/* A response streamed with gale_flush_cb to a slow reader: every byte arrives in order, and the
 * server never holds more than about one piece (Tornado's `await self.flush()`), where flushing
 * without waiting would queue all 16 MiB. */
static void expect_streamed(const char *path, int flushes, size_t max_pending)
{
    struct slow_reader sr = {.path = path};
    run_slow_reader(&sr);
    ck_assert_int_eq(sr.status, 200);
    ck_assert_uint_eq(sr.body, STREAM_TOTAL);
    ck_assert(sr.bytes_ok);
    ck_assert_int_eq(streamed.failed, 0);
    ck_assert_int_eq(streamed.flushed, flushes);
    ck_assert_uint_le(streamed.max_pending, max_pending);
}

START_TEST(test_web_flush_cb_bounds_a_streamed_response)
{
    /* One flush for the head, then one per piece. */
    expect_streamed("/stream", (int)(STREAM_TOTAL / STREAM_PIECE) + 1, STREAM_PIECE);
}
END_TEST

/* The coroutine form: each gale_flush_future() is awaited before the next piece. */
START_TEST(test_web_flush_future_awaited_in_coroutine)
{
    /* The head goes with the first piece. */
    expect_streamed("/stream-coro", (int)(STREAM_TOTAL / STREAM_PIECE), STREAM_PIECE + 4096);
}
END_TEST

START_TEST(test_web_flush_cb_failing_in_batch_runs_before_close)
{
    struct slow_reader sr = {.path = "/shut"};
    shut_nevents = 0;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, shut_client_main, &sr), 0);
    ck_assert(test_wait_until(loop, slow_reader_done, &sr, 10));
    pthread_join(t, NULL);
    test_run_for(loop, 0.05);
    ck_assert_uint_eq(shut_nevents, 1);
    ck_assert_int_eq(shut_events[0], 'f');
    ck_assert_int_lt(shut_status, 0);
}
END_TEST

/* The client hangs up mid-stream: the waiting flush callback learns it (once), the handler
 * finishes, and the server goes on serving. */
START_TEST(test_web_flush_cb_reports_client_gone)
{
    struct slow_reader sr = {.path = "/stream", .stop_after = 1u << 20};
    run_slow_reader(&sr);
    ck_assert(sr.bytes_ok);
    ck_assert(test_wait_until(loop, stream_failed, NULL, 10));
    test_run_for(loop, 0.05);
    ck_assert_int_eq(streamed.failed, 1);
    ck_assert_uint_lt(streamed.sent, STREAM_TOTAL);
    struct resp r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
}
END_TEST

/* Tornado's write_error: a class renders its own error responses (send_error, fail, 405), with
 * the status set, the headers it sets kept, and Allow kept on a 405. */
START_TEST(test_web_write_error_renders_the_class_errors)
{
    static const struct {
        const char *method, *path;
        int status;
    } cases[] = {{"GET", "/api/403", 403}, {"GET", "/api/500", 500}, {"POST", "/api/1", 405}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct resp r = http(cases[i].method, cases[i].path, NULL, NULL);
        ck_assert_int_eq(r.status, cases[i].status);
        ck_assert(has_header(&r, "Content-Type", "application/json"));
        char want[64];
        snprintf(want, sizeof want, "{\"error\": %d, \"arg\": \"api\"}", cases[i].status);
        assert_body(&r, want);
        ck_assert(has_header(&r, "Allow", "GET, HEAD") == (cases[i].status == 405));
        resp_free(&r);
    }
    /* From a timer, with a write_error that finishes the response itself. */
    struct resp late = http("GET", "/late-json", NULL, NULL);
    ck_assert_int_eq(late.status, 503);
    assert_body(&late, "late 503");
    ck_assert_int_eq(last_rc, 0);
    resp_free(&late);
    /* A send_error inside write_error does not recurse: it answers with the plain page. */
    struct resp r = http("GET", "/api/418", NULL, NULL);
    ck_assert_int_eq(r.status, 500);
    assert_body(&r, "<html><title>500: Internal Server Error</title>"
                    "<body>500: Internal Server Error</body></html>");
    resp_free(&r);
}
END_TEST

/* Tornado's default_handler_class: paths no route matches go to it (with its argument). */
START_TEST(test_web_default_handler_for_unmatched_paths)
{
    gale_app *other = gale_app_new(NULL);
    ck_assert_int_eq(gale_app_route(other, "/", &hello, NULL), 0);
    gale_app_set_default_handler(other, &json_not_found, "default");
    ck_assert_int_eq(gale_app_listen(other, 0, "127.0.0.1"), 0);
    int main_port = port;
    port = gale_app_port(other);
    struct resp r = http("GET", "/nowhere", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    assert_body(&r, "{\"error\": 404, \"arg\": \"default\"}");
    resp_free(&r);
    r = http("DELETE", "/nowhere", NULL, NULL);
    ck_assert_int_eq(r.status, 405);
    ck_assert(has_header(&r, "Allow", "GET, HEAD"));
    resp_free(&r);
    r = http("GET", "/", NULL, NULL);
    assert_body(&r, "Hello, world!");
    resp_free(&r);
    port = main_port;
    gale_app_free(other);
    test_run_for(loop, 0.02);
}
END_TEST

START_TEST(test_web_route_unknown_path_404_page)
{
    struct resp r = http("GET", "/nowhere?x=1", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    assert_body(&r, "<html><title>404: Not Found</title><body>404: Not Found</body></html>");
    ck_assert(has_header(&r, "Content-Type", "text/html; charset=UTF-8"));
    resp_free(&r);
}
END_TEST

START_TEST(test_web_route_wrong_method_405_with_allow)
{
    struct resp r = http("DELETE", "/post", NULL, NULL);
    ck_assert_int_eq(r.status, 405);
    ck_assert(has_header(&r, "Allow", "GET, HEAD, POST"));
    assert_body(&r, "<html><title>405: Method Not Allowed</title>"
                    "<body>405: Method Not Allowed</body></html>");
    resp_free(&r);
    r = http("PATCH", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 405);
    ck_assert(has_header(&r, "Allow", "GET, HEAD"));
    resp_free(&r);
    r = http("POST", "/post", "Content-Length: 0\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "posted");
    resp_free(&r);
}
END_TEST

START_TEST(test_web_route_bad_pattern_is_einval)
{
    ck_assert_int_eq(gale_app_route(app, "/x(", &hello, NULL), -EINVAL);
    ck_assert_int_eq(gale_app_route(app, "/x[", &hello, NULL), -EINVAL);
    ck_assert_int_eq(gale_app_route(app, NULL, &hello, NULL), -EINVAL);
    ck_assert_int_eq(gale_app_route(app, "/x", NULL, NULL), -EINVAL);
    /* the app still serves */
    struct resp r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
}
END_TEST

START_TEST(test_web_head_falls_back_to_get_without_body)
{
    struct resp r = http("HEAD", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_header(&r, "Content-Length", "13"));
    ck_assert_uint_eq(r.body_len, 0);
    ck_assert_int_eq(n_method, 1);
    resp_free(&r);
}
END_TEST

/* ---- lifecycle ---- */

START_TEST(test_web_prepare_finishing_early_skips_method)
{
    struct resp r = http("GET", "/guarded", NULL, NULL);
    ck_assert_int_eq(r.status, 403);
    assert_body(&r, "<html><title>403: Forbidden</title><body>403: Forbidden</body></html>");
    resp_free(&r);
    ck_assert_int_eq(n_prepare, 1);
    ck_assert_int_eq(n_method, 0);
    r = http("GET", "/guarded", "X-Token: secret\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
    ck_assert_int_eq(n_prepare, 2);
    ck_assert_int_eq(n_method, 1);
    ck_assert_int_eq(n_finish, 2);
}
END_TEST

START_TEST(test_web_on_finish_once_per_request)
{
    for (int i = 0; i < 3; i++) {
        struct resp r = http("GET", "/", NULL, NULL);
        ck_assert_int_eq(r.status, 200);
        resp_free(&r);
    }
    /* keep-alive: two pipelined requests on one connection */
    struct resp r = http_raw("GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                             "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                             false);
    ck_assert_ptr_nonnull(strstr(strstr(r.raw, "Hello, world!") + 1, "Hello, world!"));
    resp_free(&r);
    test_run_for(loop, 0.02);
    ck_assert_int_eq(n_method, 5);
    ck_assert_int_eq(n_finish, 5);
}
END_TEST

START_TEST(test_web_state_zeroed_per_request)
{
    for (int i = 0; i < 3; i++) {
        struct resp r = http("GET", "/state", NULL, NULL);
        assert_body(&r, "zeroed");
        resp_free(&r);
    }
    /* pipelined on one connection too (the arena is reused) */
    struct resp r = http_raw("GET /state HTTP/1.1\r\nHost: x\r\n\r\n"
                             "GET /state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                             false);
    ck_assert_ptr_null(strstr(r.raw, "dirty"));
    ck_assert_ptr_nonnull(strstr(strstr(r.raw, "zeroed") + 1, "zeroed"));
    resp_free(&r);
}
END_TEST

START_TEST(test_web_async_handler_finishes_from_timer)
{
    struct resp r = http("GET", "/async", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "not yet: later");
    resp_free(&r);
    ck_assert_int_eq(last_rc, 0);
    ck_assert_int_eq(n_method, 1);
    ck_assert_int_eq(n_finish, 1);
}
END_TEST

static bool finished_once(void *arg) { return n_finish == 1; }

START_TEST(test_web_connection_close_during_async_then_finish_is_safe)
{
    http_raw("GET /wait HTTP/1.1\r\nHost: x\r\n\r\n", true);
    ck_assert(test_wait_until(loop, finished_once, NULL, 5));
    test_run_for(loop, 0.02);
    ck_assert_int_eq(n_method, 1);
    ck_assert_int_eq(n_close, 1);
    ck_assert_int_eq(n_finish, 1);
    ck_assert_int_eq(last_rc, -EPIPE);
    /* the server keeps serving */
    struct resp r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
}
END_TEST

START_TEST(test_web_finish_after_connection_close_from_timer)
{
    last_rc = 1;
    http_raw("GET /late HTTP/1.1\r\nHost: x\r\n\r\n", true);
    ck_assert(test_wait_until(loop, finished_once, NULL, 5));
    ck_assert_int_eq(n_method, 1);
    ck_assert_int_le(n_close, 1);
    /* the timer (10 ms) may fire before the server notices the close: both orders are safe */
    ck_assert(last_rc == 0 || last_rc == -EPIPE);
    test_run_for(loop, 0.02);
    ck_assert_int_eq(n_finish, 1);
}
END_TEST

/* ---- errors ---- */

START_TEST(test_web_fail_is_500_and_server_keeps_serving)
{
    struct resp r = http("GET", "/fail", NULL, NULL);
    ck_assert_int_eq(r.status, 500);
    assert_body(&r, "<html><title>500: Internal Server Error</title>"
                    "<body>500: Internal Server Error</body></html>");
    ck_assert(!has_header_name(&r, "X-Partial"));
    resp_free(&r);
    ck_assert_int_eq(n_finish, 1);
    r = http("GET", "/", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    resp_free(&r);
}
END_TEST

START_TEST(test_web_send_error_page_for_any_code)
{
    struct resp r = http("GET", "/teapot", NULL, NULL);
    ck_assert_int_eq(r.status, 418);
    ck_assert_ptr_nonnull(strstr(r.body, "<html><title>418: "));
    resp_free(&r);
}
END_TEST

/* ---- response API ---- */

START_TEST(test_web_redirect_sets_location_and_status)
{
    struct resp r = http("GET", "/redirect", NULL, NULL);
    ck_assert_int_eq(r.status, 302);
    ck_assert(has_header(&r, "Location", "/target?a=1"));
    ck_assert_uint_eq(r.body_len, 0);
    resp_free(&r);
    ck_assert_int_eq(last_rc, 0);
    r = http("GET", "/redirect?perm=1", NULL, NULL);
    ck_assert_int_eq(r.status, 301);
    resp_free(&r);
}
END_TEST

START_TEST(test_web_set_cookie_output_and_get_cookie)
{
    struct resp r = http("GET", "/cookies", "Cookie: session=s1; theme=\"dark\"\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_header(&r, "Set-Cookie",
                         "sid=abc123; Domain=example.com; Max-Age=60; Path=/; Secure; HttpOnly; "
                         "SameSite=Lax"));
    ck_assert(has_header(&r, "Set-Cookie", "plain=v; Path=/"));
    ck_assert(has_header(&r, "Set-Cookie",
                         "exp=1; expires=Tue, 14 Nov 2023 22:13:20 GMT; "
                         "Path=/app"));
    assert_body(&r, "s1|dark|none");
    resp_free(&r);
}
END_TEST

/* As in Tornado: a cookie set again replaces the earlier value, and an error page keeps the
 * cookies set before it (not the other headers). */
START_TEST(test_web_cookie_replaced_and_kept_by_error_page)
{
    for (int fail = 0; fail < 2; fail++) {
        struct resp r = http("GET", fail ? "/cookie-error?fail=1" : "/cookie-error", NULL, NULL);
        ck_assert_int_eq(r.status, fail ? 403 : 200);
        ck_assert(has_header(&r, "Set-Cookie", "sid=second; Path=/"));
        ck_assert(has_header(&r, "Set-Cookie", "sid2=other; Path=/"));
        ck_assert_ptr_null(strstr(r.raw, "sid=first"));
        ck_assert(has_header_name(&r, "X-Dropped") == !fail);
        resp_free(&r);
    }
}
END_TEST

START_TEST(test_web_writef_formats_and_grows)
{
    struct resp r = http("GET", "/writef", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, 8 + 599 + 1);
    ck_assert_mem_eq(r.body, "7-seven-xxx", 11);
    ck_assert_int_eq(r.body[r.body_len - 1], '!');
    resp_free(&r);
}
END_TEST

START_TEST(test_web_flush_sends_chunked)
{
    struct resp r = http("GET", "/chunks", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_header(&r, "Transfer-Encoding", "chunked"));
    ck_assert(!has_header_name(&r, "Content-Length"));
    ck_assert(!has_header_name(&r, "X-Late"));
    assert_body(&r, "3\r\none\r\n4\r\ntwo!\r\n5\r\nthree\r\n0\r\n\r\n");
    resp_free(&r);
}
END_TEST

START_TEST(test_web_headers_case_insensitive_repeats_and_set_rules)
{
    struct resp r =
        http("GET", "/headers?q=1", "x-mixed-CASE: yes\r\nX-Rep: 1\r\nx-rep: 2\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "yes,1,2|GET|/headers|q=1");
    ck_assert(has_header(&r, "X-One", "2"));
    ck_assert(!has_header(&r, "X-One", "1"));
    ck_assert(has_header(&r, "X-Two", "a"));
    ck_assert(has_header(&r, "X-Two", "b"));
    ck_assert(!has_header_name(&r, "X-Gone"));
    ck_assert(!has_header_name(&r, "Injected"));
    resp_free(&r);
}
END_TEST

START_TEST(test_web_204_has_no_body_and_no_content_type)
{
    struct resp r = http("GET", "/nocontent", NULL, NULL);
    ck_assert_int_eq(r.status, 204);
    ck_assert_uint_eq(r.body_len, 0);
    ck_assert(!has_header_name(&r, "Content-Type"));
    resp_free(&r);
}
END_TEST

/* ---- arguments ---- */

START_TEST(test_web_arguments_query_and_urlencoded_body)
{
    struct resp r = http("POST", "/args?a=%C3%A9+x&b=q1",
                         "Content-Type: application/x-www-form-urlencoded\r\n"
                         "Content-Length: 11\r\n",
                         "b=b1&b=b%32");
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "a=\xc3\xa9 x b=b2 q=q1 body=b2 n=3 first=q1 none=dflt");
    resp_free(&r);
}
END_TEST

/* As Tornado's get_argument: control characters other than TAB..CR become spaces, so a %00 does
 * not cut the value short ("admin%00x" must not read as "admin"); get_argument_at keeps the
 * bytes. */
START_TEST(test_web_arguments_control_characters_become_spaces)
{
    struct resp r = http("GET", "/args?a=admin%00x&b=t%09a%0Db%1Fc%01", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "a=admin x b=t\ta\rb c  q=t\ta\rb c  body=- n=1 first=t\ta\rb\x1f"
                    "c\x01 "
                    "none=dflt");
    resp_free(&r);
}
END_TEST

START_TEST(test_web_arguments_multipart_fields_and_file)
{
    const char *body = "--BB\r\n"
                       "Content-Disposition: form-data; name=\"b\"\r\n\r\n"
                       "field value\r\n"
                       "--BB\r\n"
                       "Content-Disposition: form-data; name=\"up\"; filename=\"f.txt\"\r\n"
                       "Content-Type: text/plain\r\n\r\n"
                       "file\r\nbytes\r\n"
                       "--BB--\r\n";
    char hdr[256];
    snprintf(hdr, sizeof hdr,
             "Content-Type: multipart/form-data; boundary=BB\r\nContent-Length: %zu\r\n",
             strlen(body));
    struct resp r = http("POST", "/args", hdr, body);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "a=- b=field value q=- body=field value n=1 first=field value none=dflt "
                    "file=f.txt:text/plain:file\r\nbytes");
    resp_free(&r);
}
END_TEST

START_TEST(test_web_arguments_malformed_multipart_ignored)
{
    const char *body = "--BB\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\nno end";
    char hdr[256];
    snprintf(hdr, sizeof hdr,
             "Content-Type: multipart/form-data; boundary=BB\r\nContent-Length: %zu\r\n",
             strlen(body));
    struct resp r = http("POST", "/args?b=q", hdr, body);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "a=- b=q q=q body=- n=1 first=q none=dflt");
    resp_free(&r);
}
END_TEST

START_TEST(test_web_send_error_after_flush_only_ends_response)
{
    struct resp r = http("GET", "/late-error", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    assert_body(&r, "7\r\nstarted\r\n0\r\n\r\n");
    resp_free(&r);
    ck_assert_int_eq(last_rc, 0);
    ck_assert_int_eq(n_finish, 1);
}
END_TEST

START_TEST(test_web_route_arg_explicit_head_and_options)
{
    struct resp r = http("GET", "/with-arg", NULL, NULL);
    assert_body(&r, "route argument");
    resp_free(&r);
    r = http("HEAD", "/with-arg", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(has_header(&r, "X-Head", "1"));
    ck_assert_int_eq(n_method, 100);
    resp_free(&r);
    r = http("OPTIONS", "/with-arg", NULL, NULL);
    ck_assert_int_eq(r.status, 204);
    ck_assert(has_header(&r, "Allow", "GET, HEAD, OPTIONS"));
    resp_free(&r);
}
END_TEST

/* ---- application ---- */

static bool method_ran(void *arg) { return n_method == 1; }

START_TEST(test_web_app_free_with_async_request_in_flight)
{
    /* the client keeps its connection open; the app goes away under the pending handler */
    int fd = test_connect_tcp(port);
    ck_assert_int_ge(fd, 0);
    const char *req = "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(test_write_all(fd, req, strlen(req)), 0);
    ck_assert(test_wait_until(loop, method_ran, NULL, 5));
    gale_app_free(app);
    app = NULL;
    test_run_for(loop, 0.02);
    ck_assert_int_eq(n_close, 1);
    ck_assert_int_eq(n_finish, 1);
    ck_assert_int_eq(last_rc, -EPIPE);
    close(fd);
}
END_TEST

static void raise_term(gale_loop *l, void *arg) { raise(SIGTERM); }

START_TEST(test_web_app_run_returns_0_on_sigterm)
{
    ck_assert_int_eq(gale_loop_call_later(loop, 0.01, raise_term, NULL, NULL), 0);
    ck_assert_int_eq(gale_app_run(app), 0);
    /* SIGTERM drained the server: it no longer accepts */
    ck_assert(gale_http_server_shutting_down(gale_app_server(app)));
    ck_assert_int_lt(test_connect_tcp(port), 0);
}
END_TEST

START_TEST(test_web_app_listen_twice_and_bad_args)
{
    ck_assert_int_eq(gale_app_listen(app, 0, "127.0.0.1"), -EALREADY);
    ck_assert_int_eq(gale_app_listen(NULL, 0, NULL), -EINVAL);
    gale_app *other = gale_app_new(NULL);
    ck_assert_ptr_nonnull(other);
    ck_assert_int_eq(gale_app_port(other), -ENOTCONN);
    /* the port is taken by `app` */
    ck_assert_int_lt(gale_app_listen(other, port, "127.0.0.1"), 0);
    ck_assert_ptr_null(gale_app_server(other));
    gale_app_free(other);
    gale_app_free(NULL);
}
END_TEST

/* ---- prefork: bind, then start(2) ---- */

static void pid_get(gale_handler *h) { gale_writef(h, "%ld", (long)getpid()); }
static const gale_handler_class pid_handler = {.get = pid_get};

/* The forked application: binds `port`, tells the test through `ready`, forks two workers and
 * serves until SIGTERM. Never returns. */
static void run_prefork_app(int port, int ready, int log_fd)
{
    gale_log_set_fd(log_fd);
    gale_log_set_level(GALE_LOG_INFO);
    gale_app *a = gale_app_new(NULL);
    int rc = a ? gale_app_route(a, "/pid", &pid_handler, NULL) : -ENOMEM;
    if (rc == 0)
        rc = gale_app_bind(a, port, "127.0.0.1");
    char ok = rc == 0 ? 'y' : 'n';
    if (write(ready, &ok, 1) != 1 || rc != 0)
        _exit(1);
    close(ready);
    if (gale_app_start(a, 2) != 0) /* the supervisor never returns */
        _exit(1);
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the supervisor */
    rc = gale_app_run(a);
    gale_app_free(a);
    gale_log_flush();
    _exit(rc ? 1 : 0);
}

/* GET /pid on a new connection: the serving worker's pid, or -1. */
static long fetch_pid(int port)
{
    int fd = test_connect_tcp(port);
    if (fd < 0)
        return -1;
    test_set_timeouts(fd, 5);
    const char *req = "GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    long pid = -1;
    if (test_write_all(fd, req, strlen(req)) == 0) {
        size_t len = 0;
        char *out = test_read_all(fd, 4096, &len);
        char *body = out ? strstr(out, "\r\n\r\n") : NULL;
        if (body && strncmp(out, "HTTP/1.1 200 ", 13) == 0)
            pid = strtol(body + 4, NULL, 10);
        free(out);
    }
    close(fd);
    return pid;
}

START_TEST(test_web_app_bind_start_2_workers_each_own_loop)
{
    char log_path[] = "/tmp/gale-test-web-XXXXXX";
    int log_fd = mkstemp(log_path);
    ck_assert_int_ge(log_fd, 0);
    unlink(log_path);
    ck_assert_int_eq(fcntl(log_fd, F_SETFL, O_APPEND), 0);
    int app_port = test_free_port();
    ck_assert_int_gt(app_port, 0);
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t app_pid = fork();
    ck_assert_int_ge(app_pid, 0);
    if (app_pid == 0) {
        close(ready[0]);
        run_prefork_app(app_port, ready[1], log_fd);
    }
    close(ready[1]);
    char ok = 0;
    ck_assert_int_eq(read(ready[0], &ok, 1), 1);
    close(ready[0]);
    ck_assert_int_eq(ok, 'y');

    /* The kernel hands each connection to whichever worker accepts first: ask until both
     * answered, within a bound. */
    long seen[2] = {0, 0};
    int answers = 0;
    for (int i = 0; i < 400 && !(seen[0] && seen[1]); i++) {
        long pid = fetch_pid(app_port);
        if (pid <= 0)
            continue;
        answers++;
        if (!seen[0])
            seen[0] = pid;
        else if (pid != seen[0])
            seen[1] = pid;
    }
    int status = test_stop_app(app_pid);

    char log[1 << 16];
    ssize_t n = pread(log_fd, log, sizeof log - 1, 0);
    close(log_fd);
    ck_assert_int_ge(n, 0);
    log[n] = '\0';
    const char *bad = strstr(log, "File exists");
    ck_assert_msg(bad == NULL, "log: ...%.200s", bad && bad - log > 100 ? bad - 100 : log);
    bad = strstr(log, "loop exists before the fork");
    ck_assert_msg(bad == NULL, "log: ...%.200s", bad && bad - log > 100 ? bad - 100 : log);
    ck_assert_int_gt(answers, 0);
    ck_assert_msg(seen[0] && seen[1], "only worker %ld answered %d requests", seen[0], answers);
    ck_assert(seen[0] != app_pid && seen[1] != app_pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

static Suite *web_suite(void)
{
    Suite *s = suite_create("web");
    TCase *t = tcase_create("routing");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_web_add_socket_serves_a_unix_socket);
    tcase_add_test(t, test_web_add_socket_refuses_bad_descriptors);
    tcase_add_test(t, test_web_listen_unix_serves_and_removes_its_file);
    tcase_add_test(t, test_web_listen_unix_leaves_a_replaced_file);
    tcase_add_test(t, test_web_route_literal_path);
    tcase_add_test(t, test_web_route_captures_are_decoded_path_args);
    tcase_add_test(t, test_web_route_anchored_both_ends);
    tcase_add_test(t, test_web_route_python_classes_match_as_in_python);
    tcase_add_test(t, test_web_route_python_only_syntax_refused);
    tcase_add_test(t, test_web_write_error_renders_the_class_errors);
    tcase_add_test(t, test_web_default_handler_for_unmatched_paths);
    tcase_add_test(t, test_web_route_unknown_path_404_page);
    tcase_add_test(t, test_web_route_wrong_method_405_with_allow);
    tcase_add_test(t, test_web_route_bad_pattern_is_einval);
    tcase_add_test(t, test_web_head_falls_back_to_get_without_body);
    tcase_add_test(t, test_web_route_arg_explicit_head_and_options);
    suite_add_tcase(s, t);

    t = tcase_create("lifecycle");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_web_prepare_finishing_early_skips_method);
    tcase_add_test(t, test_web_on_finish_once_per_request);
    tcase_add_test(t, test_web_state_zeroed_per_request);
    tcase_add_test(t, test_web_async_handler_finishes_from_timer);
    tcase_add_test(t, test_web_connection_close_during_async_then_finish_is_safe);
    tcase_add_test(t, test_web_finish_after_connection_close_from_timer);
    tcase_add_test(t, test_web_fail_is_500_and_server_keeps_serving);
    tcase_add_test(t, test_web_send_error_page_for_any_code);
    tcase_add_test(t, test_web_send_error_after_flush_only_ends_response);
    suite_add_tcase(s, t);

    t = tcase_create("response");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_web_redirect_sets_location_and_status);
    tcase_add_test(t, test_web_set_cookie_output_and_get_cookie);
    tcase_add_test(t, test_web_cookie_replaced_and_kept_by_error_page);
    tcase_add_test(t, test_web_writef_formats_and_grows);
    tcase_add_test(t, test_web_flush_sends_chunked);
    tcase_add_test(t, test_web_flush_cb_bounds_a_streamed_response);
    tcase_add_test(t, test_web_flush_future_awaited_in_coroutine);
    tcase_add_test(t, test_web_flush_cb_reports_client_gone);
    tcase_add_test(t, test_web_flush_cb_failing_in_batch_runs_before_close);
    tcase_add_test(t, test_web_headers_case_insensitive_repeats_and_set_rules);
    tcase_add_test(t, test_web_204_has_no_body_and_no_content_type);
    suite_add_tcase(s, t);

    t = tcase_create("arguments");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_web_arguments_query_and_urlencoded_body);
    tcase_add_test(t, test_web_arguments_control_characters_become_spaces);
    tcase_add_test(t, test_web_arguments_multipart_fields_and_file);
    tcase_add_test(t, test_web_arguments_malformed_multipart_ignored);
    suite_add_tcase(s, t);

    t = tcase_create("app");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_web_app_run_returns_0_on_sigterm);
    tcase_add_test(t, test_web_app_listen_twice_and_bad_args);
    tcase_add_test(t, test_web_app_free_with_async_request_in_flight);
    suite_add_tcase(s, t);

    t = tcase_create("prefork"); /* no fixture: the test's process must not own a loop */
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_web_app_bind_start_2_workers_each_own_loop);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(web_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

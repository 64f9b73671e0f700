/* httpserver: an in-process server on 127.0.0.1 (port 0) driven by a blocking client thread with
 * raw bytes, while the test thread runs the loop. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/fault.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/httpserver.h"
#include "http/httpserver_internal.h"
#include "rawhttp.h"
#include "testutil.h"

/* ---- counting the server's writes ----
 * The library's send()/sendmsg() calls resolve to these definitions in this test binary, so a
 * test can count the system calls the loop thread makes to answer (the client thread's own
 * sends are not counted). */

static pthread_t loop_thread;
static atomic_int server_sends;

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    if (pthread_equal(pthread_self(), loop_thread))
        atomic_fetch_add(&server_sends, 1);
    return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (pthread_equal(pthread_self(), loop_thread))
        atomic_fetch_add(&server_sends, 1);
    return syscall(SYS_sendmsg, fd, msg, flags);
}

/* ---- server side ---- */

static gale_loop *loop;
static gale_http_server *srv;
static int port;
static int nrequests;
static int ncloses;
static atomic_int held_ready;
static atomic_int go;
static gale_http_request *held;
static int inject_rc[4];

static void finish_later(gale_loop *l, void *arg)
{
    gale_http_request *req = arg;
    gale_http_response_write(req, "async", 5);
    gale_http_response_finish(req);
}

static void on_held_close(gale_http_request *req, void *arg)
{
    ncloses++;
    ck_assert(gale_http_request_connection_closed(req));
}

static int close_finish_rc = 1;

static void on_close_finish(gale_http_request *req, void *arg)
{
    ncloses++;
    close_finish_rc = gale_http_response_finish(req); /* releases once this callback returns */
}

static void handler(gale_http_request *req, void *arg)
{
    nrequests++;
    const char *path = req->path;
    if (strcmp(path, "/drain") == 0) /* a handler that starts the graceful shutdown */
        ck_assert_int_eq(gale_http_server_shutdown(srv, 5, NULL, NULL), 0);
    if (strcmp(path, "/async") == 0) {
        gale_loop_call_later(gale_http_request_loop(req), 0.05, finish_later, req, NULL);
        return;
    }
    if (strcmp(path, "/hold") == 0) {
        held = req;
        gale_http_request_set_close_cb(req, on_held_close, NULL);
        atomic_store(&held_ready, 1);
        return;
    }
    if (strcmp(path, "/hold_finish_on_close") == 0) {
        held = req;
        gale_http_request_set_close_cb(req, on_close_finish, NULL);
        atomic_store(&held_ready, 1);
        return;
    }
    if (strcmp(path, "/big") == 0 || strcmp(path, "/bigflush") == 0) {
        size_t n = strtoul(req->query, NULL, 10);
        char *chunk = malloc(n);
        for (size_t i = 0; i < n; i++)
            chunk[i] = (char)('a' + i % 26);
        gale_http_response_write(req, chunk, n);
        if (path[4] == 'f') {
            ck_assert_int_eq(gale_http_response_flush(req), 0);
            gale_http_response_write(req, chunk, n);
        }
        free(chunk);
    } else if (strcmp(path, "/alloc") == 0) {
        unsigned char *a = gale_http_request_alloc(req, 10000),
                      *b = gale_http_request_alloc(req, 16);
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        for (int i = 0; i < 10000; i++)
            ck_assert_int_eq(a[i], 0);
        for (int i = 0; i < 16; i++)
            ck_assert_int_eq(b[i], 0);
        memset(a, 1, 10000);
        ck_assert_int_eq(gale_http_response_set_status(req, 99, NULL), -EINVAL);
        ck_assert_int_eq(gale_http_response_set_status(req, 201, "Made\r\nX: y"), -EINVAL);
        ck_assert_int_eq(gale_http_response_set_status(req, 201, "Made It"), 0);
        ck_assert_int_eq(gale_http_response_status(req), 201);
        gale_http_response_write(req, "ok", 2);
    } else if (strcmp(path, "/status") == 0) {
        gale_http_response_set_status(req, atoi(req->query), NULL);
        gale_http_response_write(req, "dropped", 7);
    } else if (strcmp(path, "/flush") == 0) {
        gale_http_response_write(req, "ab", 2);
        ck_assert_int_eq(gale_http_response_flush(req), 0);
        ck_assert(gale_http_response_headers_sent(req));
        ck_assert_int_eq(gale_http_response_set_header(req, "X-Late", "1"), -EALREADY);
        gale_http_response_write(req, "cde", 3);
        gale_http_response_flush(req);
        gale_http_response_write(req, "f", 1);
    } else if (strcmp(path, "/badlength") == 0) {
        /* Content-Length from the query, body "abc" */
        gale_http_response_set_header(req, "Content-Length", req->query);
        gale_http_response_write(req, "abc", 3);
    } else if (strcmp(path, "/inject") == 0) {
        inject_rc[0] = gale_http_response_set_header(req, "X-A", "a\r\nSet-Cookie: evil=1");
        inject_rc[1] = gale_http_response_set_header(req, "X-B\r\nX-C", "b");
        inject_rc[2] = gale_http_response_add_header(req, "X-D", "d\n");
        inject_rc[3] = gale_http_response_set_header(req, "X-Ok", "fine");
        gale_http_response_write(req, "ok", 2);
    } else if (strcmp(path, "/preset") == 0) {
        static const char line[] = "Content-Type: text/x-preset\r\n";
        ck_assert_int_eq(gale__http_response_preset(req, line, sizeof line - 1), 0);
        if (strcmp(req->query, "clear") == 0)
            gale_http_response_clear_header(req, "content-type");
        else if (strcmp(req->query, "set") == 0)
            gale_http_response_set_header(req, "Content-type", "text/plain");
        else if (strcmp(req->query, "other") == 0)
            gale_http_response_clear_header(req, "Content");
        gale_http_response_write(req, "ok", 2);
    } else if (strcmp(path, "/header") == 0) {
        size_t len = 0;
        const char *v = gale_http_headers_get(&req->headers, req->query, &len);
        gale_http_response_write(req, v ? v : "(none)", v ? len : 6);
    } else if (strcmp(path, "/info") == 0) {
        char buf[512];
        int n = snprintf(buf, sizeof buf, "%s %s ? %s v1.%d %s %s [", req->method, req->path,
                         req->query, req->version_minor, req->remote_ip, req->protocol);
        gale_http_response_write(req, buf, (size_t)n);
        gale_http_response_write(req, req->body, req->body_len);
        gale_http_response_write(req, "]", 1);
    } else {
        char *copy = gale_http_request_strdup(req, "hello", 5);
        ck_assert_ptr_nonnull(copy);
        gale_http_response_set_header(req, "Content-Type", "text/plain");
        gale_http_response_write(req, copy, 5);
    }
    gale_http_response_finish(req);
}

static void start_server(const gale_http_server_opts *opts)
{
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    gale_loop_make_current(loop);
    ck_assert_int_eq(gale_http_server_new(loop, opts, handler, NULL, &srv), 0);
    ck_assert_int_eq(gale_http_server_listen(srv, 0, "127.0.0.1"), 0);
    port = gale_http_server_port(srv);
    ck_assert_int_gt(port, 0);
}

static void setup(void)
{
    gale_log_set_level(GALE_LOG_ERROR + 1); /* keep test output readable */
    nrequests = ncloses = 0;
    loop_thread = pthread_self();
    atomic_store(&server_sends, 0);
    held = NULL;
    atomic_store(&held_ready, 0);
    start_server(NULL);
}

static void teardown(void)
{
    gale_http_server_free(srv);
    test_run_for(loop, 0.02); /* let the closes complete */
    gale_loop_make_current(NULL);
    gale_loop_free(loop);
}

/* ---- client side ---- */

struct client {
    const char *req;
    size_t req_len;
    bool byte_by_byte;
    int expect;       /* stop reading after this many final responses (0: until EOF) */
    bool wait_held;   /* close the connection once the server holds a request */
    double trickle;   /* seconds between bytes (slowloris) */
    const char *req2; /* sent once the server has read the first part (NULL: none) */
    bool split_seen;  /* the server read the first part before the second was sent */
    char *buf;
    size_t cap;
    size_t len;
    bool read_after_go; /* wait for `go` before reading anything */
    int reads;          /* recv calls that returned data */
    int rcvbuf;         /* SO_RCVBUF set before connecting (0: the default) */
    size_t read_chunk;  /* read at most this much per recv (0: as much as fits) */
    double read_pause;  /* seconds between reads (a slow reader) */
    bool eof;           /* the server closed */
    int send_err;
    atomic_int done;
};

/* The complete responses at the start of a client's bytes: the final (non-1xx) ones in `r`, the
 * interim ones counted. Declared with PARSED, which frees them when `p` leaves its scope. */
struct parsed {
    struct test_http_response r[16];
    int n;
    int interim;
};

static void parsed_free(struct parsed *out)
{
    for (int i = 0; i < out->n; i++)
        test_http_response_free(&out->r[i]);
    out->n = out->interim = 0;
}

#define PARSED struct parsed __attribute__((cleanup(parsed_free)))

/* Parses buf[0..len) as everything the server sent (a body without framing ends at `len`) into
 * `out`, dropping what it held. `head`: responses carry no body. Returns the count of final
 * responses. */
static int parse_responses(const char *buf, size_t len, bool head, struct parsed *out)
{
    parsed_free(out);
    size_t off = 0;
    while (off < len && out->n < 16) {
        struct test_http_response *r = &out->r[out->n];
        ssize_t n = test_http_parse(buf + off, len - off, true, head, r);
        if (n <= 0)
            break;
        off += (size_t)n;
        if (r->status < 200) {
            out->interim++;
            test_http_response_free(r);
        } else {
            out->n++;
        }
    }
    return out->n;
}

/* A blocking connection to the server whose receive buffer is `rcvbuf` bytes (set before the
 * connect, so the advertised window stays small). */
static int connect_small_rcvbuf(int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) < 0 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    c->cap = 262144;
    c->buf = calloc(1, c->cap);
    int fd = c->rcvbuf ? connect_small_rcvbuf(c->rcvbuf) : test_connect_tcp(port);
    if (fd < 0) {
        c->send_err = -1;
        atomic_store(&c->done, 1);
        return NULL;
    }
    test_set_timeouts(fd, 10);
    if (c->byte_by_byte || c->trickle > 0) {
        for (size_t i = 0; i < c->req_len; i++) {
            if (send(fd, c->req + i, 1, MSG_NOSIGNAL) != 1) {
                c->send_err = -errno;
                break;
            }
            if (c->trickle > 0) {
                struct timespec ts = {0, (long)(c->trickle * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    } else if (c->req_len) {
        c->send_err = test_write_all(fd, c->req, c->req_len);
    }
    if (c->req2 && !c->send_err) {
        c->split_seen = test_wait_peer_read(fd, 10);
        c->send_err = test_write_all(fd, c->req2, strlen(c->req2));
    }
    if (c->read_after_go) {
        while (!atomic_load(&go)) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    if (c->wait_held) {
        for (int i = 0; i < 10000 && !atomic_load(&held_ready); i++) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        close(fd);
        atomic_store(&c->done, 1);
        return NULL;
    }
    for (;;) {
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 262144;
            c->buf = realloc(c->buf, c->cap);
        }
        size_t room = c->cap - 1 - c->len;
        if (c->read_chunk && room > c->read_chunk)
            room = c->read_chunk;
        if (c->read_pause > 0 && c->reads > 0) {
            struct timespec ts = {0, (long)(c->read_pause * 1e9)};
            nanosleep(&ts, NULL);
        }
        ssize_t n = recv(fd, c->buf + c->len, room, 0);
        if (n == 0) {
            c->eof = true;
            break;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            c->eof = errno == ECONNRESET;
            break;
        }
        c->reads++;
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
        PARSED p = {0};
        if (c->expect && parse_responses(c->buf, c->len, false, &p) >= c->expect)
            break;
    }
    close(fd);
    atomic_store(&c->done, 1);
    return NULL;
}

static void client_free(struct client *c)
{
    free(c->buf);
    free(c);
}

static bool client_done(void *arg) { return atomic_load(&((struct client *)arg)->done); }

/* Runs the prepared client `c` until it is done; the loop runs meanwhile. Returns `c`. */
static struct client *run_prepared(struct client *c)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, client_main, c), 0);
    ck_assert(test_wait_until(loop, client_done, c, 15));
    pthread_join(t, NULL);
    return c;
}

/* Runs a client with `req` until it is done. */
static struct client *run_client(const char *req, size_t len, int expect, bool byte_by_byte)
{
    struct client *c = calloc(1, sizeof *c);
    c->req = req;
    c->req_len = len;
    c->expect = expect;
    c->byte_by_byte = byte_by_byte;
    return run_prepared(c);
}

static struct client *run(const char *req, int expect)
{
    return run_client(req, strlen(req), expect, false);
}

/* The body /big?n answers with. */
static bool body_is_pattern(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (char)('a' + i % 26))
            return false;
    return true;
}

/* ---- basics ---- */

START_TEST(test_httpserver_get_hello)
{
    struct client *c = run("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 1);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_str_eq(p.r[0].body, "hello");
    ck_assert_str_eq(test_http_header(&p.r[0], "Content-Length"), "5");
    ck_assert_str_eq(test_http_header(&p.r[0], "Server"), "gale");
    ck_assert_str_eq(test_http_header(&p.r[0], "Content-Type"), "text/plain");
    ck_assert_uint_eq(strlen(test_http_header(&p.r[0], "Date")), 29);
    ck_assert_ptr_null(test_http_header(&p.r[0], "Connection"));
    ck_assert(!c->eof); /* keep-alive: the client left first */
    ck_assert_int_eq(nrequests, 1);
    client_free(c);
}
END_TEST

static const char post_req[] = "POST /info?a=1&b=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
                               "Content-Type: text/plain\r\n\r\nhello world";

static void check_post(struct client *c)
{
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_str_eq(p.r[0].body, "POST /info ? a=1&b=2 v1.1 127.0.0.1 http [hello world]");
    ck_assert_int_eq(nrequests, 1);
}

START_TEST(test_httpserver_post_content_length_in_one_block)
{
    struct client *c = run_client(post_req, sizeof post_req - 1, 1, false);
    check_post(c);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_post_content_length_byte_by_byte)
{
    struct client *c = run_client(post_req, sizeof post_req - 1, 1, true);
    check_post(c);
    client_free(c);
}
END_TEST

/* Each byte in a read of its own: the copied head then holds the uri immediately followed by the
 * first header's name (the request line's tail arrived in reads without any piece). Ending the
 * uri in place would overwrite that name. */
START_TEST(test_httpserver_request_line_tail_in_its_own_reads_keeps_first_header)
{
    struct client *c = calloc(1, sizeof *c);
    c->req = "GET /header?Host HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n";
    c->req_len = strlen(c->req);
    c->trickle = 0.002;
    run_prepared(c);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_uint_eq(p.r[0].body_len, 7);
    ck_assert(memcmp(p.r[0].body, "example", 7) == 0);
    client_free(c);
}
END_TEST

/* A handler starts the drain while answering the last request of the input, sent with a chunked
 * body or with no header at all: the response says "Connection: close" and the connection ends
 * at once (not at the idle timeout). */
static void drain_closes_after(const char *req)
{
    double t0 = gale_loop_time(loop);
    struct client *c = run(req, 0);
    double took = gale_loop_time(loop) - t0;
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_ptr_nonnull(strstr(p.r[0].head, "\r\nConnection: close\r\n"));
    ck_assert(c->eof);
    ck_assert_msg(took < 2, "the drained connection stayed open %.2f s", took);
    client_free(c);
}

START_TEST(test_httpserver_drain_from_handler_closes_after_chunked_request)
{
    drain_closes_after("POST /drain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3\r\nabc\r\n0\r\n\r\n");
}
END_TEST

START_TEST(test_httpserver_drain_from_handler_closes_after_headerless_request)
{
    drain_closes_after("GET /drain HTTP/1.1\r\nHost: x\r\n\r\n");
}
END_TEST

/* The first bytes of the next request came in the same read as the body of the one whose handler
 * starts the drain: that request was sent before the drain and is answered. */
START_TEST(test_httpserver_drain_from_handler_answers_request_begun_in_same_read)
{
    struct client *c = calloc(1, sizeof *c);
    c->req = "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabGET";
    c->req_len = strlen(c->req);
    c->req2 = " /info HTTP/1.1\r\nHost: x\r\n\r\n";
    run_prepared(c);
    ck_assert(c->split_seen);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 2);
    ck_assert_int_eq(p.r[1].status, 200);
    ck_assert_ptr_null(strstr(p.r[0].head, "\r\nConnection: close\r\n"));
    ck_assert_ptr_nonnull(strstr(p.r[1].head, "\r\nConnection: close\r\n"));
    ck_assert(memcmp(p.r[1].body, "GET /info", 9) == 0);
    client_free(c);
}
END_TEST

/* The header-size limit counts a request's own bytes, whether it came alone or behind another
 * answered in the same parser call. */
START_TEST(test_httpserver_header_limit_same_alone_and_pipelined)
{
    gale_http_server_free(srv);
    test_run_for(loop, 0.01);
    gale_loop_make_current(NULL);
    gale_loop_free(loop);
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.max_header_size = 40;
    start_server(&o);
    /* 42 bytes up to the end of the last header value (what the limit counts), 38 from the uri */
    const char *big = "GET /a HTTP/1.1\r\nHost: x\r\nX-P: 12345678901234567890\r\n\r\n";
    struct client *c = run(big, 1);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 431);
    client_free(c);
    char two[256];
    snprintf(two, sizeof two, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n%s", big);
    c = run(two, 2);
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 2);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_int_eq(p.r[1].status, 431);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_long_headers_split_across_reads)
{
    char req[8192];
    char val[3000];
    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = '\0';
    snprintf(req, sizeof req, "GET /header?X-Long HTTP/1.1\r\nHost: x\r\nX-Long: %s\r\n\r\n", val);
    struct client *c = run_client(req, strlen(req), 1, true);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_uint_eq(p.r[0].body_len, strlen(val));
    ck_assert(memcmp(p.r[0].body, val, strlen(val)) == 0);
    client_free(c);
}
END_TEST

static const char chunked_req[] =
    "POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n"
    "5;ext=val\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";

START_TEST(test_httpserver_chunked_body_uppercase_with_extensions)
{
    struct client *c = run_client(chunked_req, sizeof chunked_req - 1, 1, false);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_str_eq(p.r[0].body, "POST /info ?  v1.1 127.0.0.1 http [hello world]");
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_chunked_body_byte_by_byte)
{
    struct client *c = run_client(chunked_req, sizeof chunked_req - 1, 1, true);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_str_eq(p.r[0].body, "POST /info ?  v1.1 127.0.0.1 http [hello world]");
    client_free(c);
}
END_TEST

/* ---- keep-alive ---- */

START_TEST(test_httpserver_http11_keeps_alive_for_two_requests)
{
    struct client *c =
        run("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", 2);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 2);
    ck_assert(!c->eof);
    ck_assert_int_eq(nrequests, 2);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_http10_closes_without_keep_alive)
{
    struct client *c = run("GET /hello HTTP/1.0\r\n\r\n", 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert(c->eof);
    ck_assert_str_eq(test_http_header(&p.r[0], "Connection"), "close");
    ck_assert_str_eq(p.r[0].body, "hello");
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_http10_keep_alive_honoured)
{
    struct client *c = run("GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
                           "GET /info HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                           2);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 2);
    ck_assert_str_eq(test_http_header(&p.r[0], "Connection"), "keep-alive");
    ck_assert_str_eq(p.r[1].body, "GET /info ?  v1.0 127.0.0.1 http []");
    ck_assert(!c->eof);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_connection_close_honoured)
{
    struct client *c = run("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_str_eq(test_http_header(&p.r[0], "Connection"), "close");
    ck_assert(c->eof);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_no_keep_alive_option)
{
    teardown();
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.no_keep_alive = true;
    start_server(&o);
    struct client *c =
        run("GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert(c->eof);
    ck_assert_int_eq(nrequests, 1);
    client_free(c);
}
END_TEST

/* ---- pipelining ---- */

START_TEST(test_httpserver_pipelined_three_in_order_one_read)
{
    struct client *c =
        run("GET /info?1 HTTP/1.1\r\nHost: x\r\n\r\nGET /info?2 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /info?3 HTTP/1.1\r\nHost: x\r\n\r\n",
            3);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 3);
    for (int i = 0; i < 3; i++) {
        char want[64];
        snprintf(want, sizeof want, "GET /info ? %d v1.1 127.0.0.1 http []", i + 1);
        ck_assert_str_eq(p.r[i].body, want);
    }
    int sends = atomic_load(&server_sends);
    if (gale_fault_enabled()) {
        /* An injected short send or EAGAIN legitimately splits the batch's one write (on
         * io_uring into several send operations, none of them a send() call). */
        ck_assert_int_ge(sends, strcmp(gale_loop_backend_name(loop), "uring") == 0 ? 0 : 1);
        ck_assert_int_ge(c->reads, 1);
    } else {
        /* the batch went out in one write: one send() on epoll, one send operation (no system
         * call of its own) on io_uring */
        ck_assert_int_eq(sends, strcmp(gale_loop_backend_name(loop), "uring") == 0 ? 0 : 1);
        ck_assert_int_eq(c->reads, 1);
    }
    ck_assert_int_eq(nrequests, 3);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_pipelined_behind_async_keeps_order)
{
    struct client *c =
        run("GET /async HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /async HTTP/1.1\r\nHost: x\r\n\r\n",
            3);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 3);
    ck_assert_str_eq(p.r[0].body, "async");
    ck_assert_str_eq(p.r[1].body, "hello");
    ck_assert_str_eq(p.r[2].body, "async");
    ck_assert_int_eq(nrequests, 3);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_invalid_second_request_answered_after_first)
{
    struct client *c = run("GET /async HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\x01\r\n\r\n", 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 2);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_str_eq(p.r[0].body, "async");
    ck_assert_int_eq(p.r[1].status, 400);
    ck_assert_str_eq(test_http_header(&p.r[1], "Connection"), "close");
    ck_assert(c->eof);
    ck_assert_int_eq(nrequests, 1);
    client_free(c);
}
END_TEST

/* ---- expect, limits, framing errors ---- */

START_TEST(test_httpserver_expect_100_continue)
{
    struct client *c = run("POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                           "Expect: 100-continue\r\n\r\nbody",
                           1);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert(strncmp(c->buf, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0);
    ck_assert_int_eq(p.interim, 1);
    ck_assert_str_eq(p.r[0].body, "POST /info ?  v1.1 127.0.0.1 http [body]");
    client_free(c);
}
END_TEST

static void expect_error(const char *req, int status)
{
    struct client *c = run(req, 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, status);
    ck_assert(c->eof);
    ck_assert_int_eq(nrequests, 0);
    client_free(c);
}

START_TEST(test_httpserver_header_block_over_limit_431)
{
    teardown();
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.max_header_size = 1024;
    start_server(&o);
    char req[4096], val[2000];
    memset(val, 'a', sizeof val - 1);
    val[sizeof val - 1] = '\0';
    snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", val);
    expect_error(req, 431);
}
END_TEST

START_TEST(test_httpserver_header_block_over_default_limit_431)
{
    size_t n = 70000;
    char *req = malloc(n + 64);
    int off = sprintf(req, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + off, 'a', n);
    strcpy(req + off + n, "\r\n\r\n");
    expect_error(req, 431);
    free(req);
}
END_TEST

START_TEST(test_httpserver_raised_header_limit_accepts_large_block)
{
    /* Above http-parser's compiled-in 80 KiB: the server raises the parser's own cap. */
    teardown();
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.max_header_size = 200000;
    start_server(&o);
    size_t n = 120000;
    char *req = malloc(n + 128);
    int off = sprintf(req, "GET /header?X-Big HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + off, 'b', n);
    strcpy(req + off + n, "\r\nConnection: close\r\n\r\n");
    struct client *c = run(req, 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_uint_eq(p.r[0].body_len, n);
    client_free(c);
    free(req);
}
END_TEST

START_TEST(test_httpserver_content_length_over_limit_413_without_body)
{
    teardown();
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.max_body_size = 100;
    start_server(&o);
    /* Announced but never sent: the 413 must not wait for it, nor for a 100 Continue. */
    expect_error(
        "POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
        413);
}
END_TEST

START_TEST(test_httpserver_chunked_body_over_limit_413)
{
    teardown();
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.max_body_size = 8;
    start_server(&o);
    expect_error("POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n",
                 413);
}
END_TEST

START_TEST(test_httpserver_cl_with_te_400)
{
    expect_error(
        "POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n",
        400);
}
END_TEST

START_TEST(test_httpserver_differing_content_lengths_400)
{
    expect_error(
        "POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400);
}
END_TEST

START_TEST(test_httpserver_te_not_single_final_chunked_400)
{
    expect_error(
        "POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400);
}
END_TEST

START_TEST(test_httpserver_te_twice_400)
{
    expect_error("POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 400);
}
END_TEST

START_TEST(test_httpserver_te_identity_400)
{
    expect_error("POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 400);
}
END_TEST

START_TEST(test_httpserver_content_length_plus_sign_400)
{
    expect_error("POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400);
}
END_TEST

START_TEST(test_httpserver_content_length_trailing_junk_400)
{
    expect_error("POST /info HTTP/1.1\r\nHost: x\r\nContent-Length:  5x\r\n\r\nhello", 400);
}
END_TEST

START_TEST(test_httpserver_garbage_400)
{
    expect_error("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400);
}
END_TEST

START_TEST(test_httpserver_bad_chunk_size_400)
{
    expect_error("POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                 "chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                 400);
}
END_TEST

/* A handler whose Content-Length contradicts its (unflushed) body gets a well-formed 500 instead
 * of a truncated or overlong response, and the connection keeps serving. */
START_TEST(test_httpserver_content_length_mismatch_before_flush_is_500)
{
    struct client *c = run("GET /badlength?8 HTTP/1.1\r\nHost: x\r\n\r\n"
                           "GET /badlength?1 HTTP/1.1\r\nHost: x\r\n\r\n"
                           "GET /badlength?3 HTTP/1.1\r\nHost: x\r\n\r\n",
                           3);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 3);
    ck_assert_int_eq(p.r[0].status, 500);
    ck_assert_int_eq(p.r[1].status, 500);
    ck_assert_int_eq(p.r[2].status, 200);
    ck_assert_str_eq(p.r[2].body, "abc");
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_major_versions_other_than_1_get_505)
{
    static const char *const reqs[] = {"GET /hello HTTP/9.9\r\n\r\n",
                                       "GET /hello HTTP/2.0\r\nHost: x\r\n\r\n",
                                       "POST /info HTTP/3.0\r\nContent-Length: 2\r\n\r\nab"};
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        struct client *c = run(reqs[i], 0);
        PARSED p = {0};
        ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
        ck_assert_int_eq(p.r[0].status, 505);
        const char *line = "HTTP/1.1 505 HTTP Version Not Supported\r\n";
        ck_assert(strncmp(c->buf, line, strlen(line)) == 0);
        ck_assert_str_eq(test_http_header(&p.r[0], "Connection"), "close");
        ck_assert(c->eof);
        client_free(c);
    }
    ck_assert_int_eq(nrequests, 0);
}
END_TEST

START_TEST(test_httpserver_versions_1_0_1_1_and_later_1_x_served)
{
    struct client *c = run("GET /info HTTP/1.0\r\n\r\n", 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_str_eq(p.r[0].body, "GET /info ?  v1.0 127.0.0.1 http []");
    client_free(c);
    c = run("GET /info HTTP/1.1\r\nHost: x\r\n\r\n", 1);
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_str_eq(p.r[0].body, "GET /info ?  v1.1 127.0.0.1 http []");
    client_free(c);
    /* A later 1.x minor is served as 1.1 (RFC 9112 2.3): keep-alive and all. */
    c = run("GET /info HTTP/1.2\r\nHost: x\r\n\r\n", 1);
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_str_eq(p.r[0].body, "GET /info ?  v1.1 127.0.0.1 http []");
    client_free(c);
    ck_assert_int_eq(nrequests, 3);
}
END_TEST

START_TEST(test_httpserver_request_line_without_version_400)
{
    /* http-parser takes HTTP/0.9's "GET /path" (no version) as version 0.9: the server refuses
     * it (and an explicit 0.x) as malformed; versions of more than one digit the parser itself
     * refuses. */
    expect_error("GET /hello\r\n\r\n", 400);
    expect_error("GET /hello\r\nHost: x\r\n\r\n", 400);
    expect_error("GET /hello HTTP/0.9\r\n\r\n", 400);
    expect_error("GET /hello HTTP/10.0\r\n\r\n", 400);
    expect_error("GET /hello HTTP/1.10\r\n\r\n", 400);
}
END_TEST

/* http-parser, built without its strict checks, takes any byte for the "TTP/" of the version and
 * the SOURCE method's "ICE/1.0": the server checks the token itself. */
START_TEST(test_httpserver_malformed_version_token_400)
{
    expect_error("GET /hello HTT,/1.1\r\n\r\n", 400);
    expect_error("GET /hello HXTP/1.1\r\nHost: x\r\n\r\n", 400);
    expect_error("GET /hello HTTP 1.1\r\n\r\n", 400);
    expect_error("GET /hello H,,,/1.1\r\n\r\n", 400);
    expect_error("SOURCE /hello ICE/1.0\r\n\r\n", 400);
    expect_error("GET /hello HTTP/1.1 \r\n\r\n", 400); /* the parser refuses this one itself */
}
END_TEST

/* Sends `good` and then `bad` (same length) in two writes 20 ms apart (two reads for the server),
 * cut after each length from `from` on: `good` must be answered 200 with `body` (when not NULL),
 * `bad` 400. */
static void expect_across_every_split(const char *good, const char *bad, size_t from,
                                      const char *body)
{
    size_t len = strlen(good);
    ck_assert_uint_eq(strlen(bad), len);
    for (size_t cut = from; cut < len; cut++) {
        for (int b = 0; b < 2; b++) {
            struct client *c = calloc(1, sizeof *c);
            c->req = b ? bad : good;
            c->req_len = cut;
            c->req2 = c->req + cut;
            c->expect = b ? 0 : 1;
            run_prepared(c);
            if (!c->split_seen)
                ck_abort_msg("cut after %zu bytes: the server did not read the first part alone",
                             cut);
            PARSED p = {0};
            ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
            if (p.r[0].status != (b ? 400 : 200))
                ck_abort_msg("cut after %zu bytes of the %s request: status %d", cut,
                             b ? "bad" : "good", p.r[0].status);
            if (!b && body)
                ck_assert_str_eq(p.r[0].body, body);
            client_free(c);
        }
    }
}

/* The check follows the request line across reads: cut anywhere, a good line is served and a bad
 * one refused. */
START_TEST(test_httpserver_version_checked_across_every_split)
{
    expect_across_every_split("GET /info HTTP/1.1\r\nHost: x\r\n\r\n",
                              "GET /info HTT,/1.1\r\nHost: x\r\n\r\n", 1,
                              "GET /info ?  v1.1 127.0.0.1 http []");
    ck_assert_int_eq(nrequests, (int)strlen("GET /info HTTP/1.1\r\nHost: x\r\n\r\n") - 1);
}
END_TEST

/* What RFC 9112 lets a server accept stays served: more than one space before the version, and
 * lines that end with a bare LF. */
START_TEST(test_httpserver_version_after_extra_spaces_or_bare_lf_served)
{
    static const char *const reqs[] = {"GET /info  HTTP/1.1\r\nHost: x\r\n\r\n",
                                       "GET /info HTTP/1.1\nHost: x\n\n",
                                       "GET /info HTTP/1.1\nHost: x\n\n"};
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        struct client *c = run(reqs[i], 1);
        PARSED p = {0};
        ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
        ck_assert_int_eq(p.r[0].status, 200);
        ck_assert(memcmp(p.r[0].body, "GET /info ?  v1.1", 17) == 0);
        client_free(c);
    }
    ck_assert_int_eq(nrequests, 3);
}
END_TEST

/* http-parser, built without its strict checks, takes a space into a header name. A space before
 * the colon is a request smuggling shape (a proxy in front may read the header as the real
 * Transfer-Encoding or Content-Length while the server would not): all are refused. */
START_TEST(test_httpserver_space_in_header_name_400)
{
    expect_error("POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
                 400);
    expect_error("POST /info HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello", 400);
    expect_error("GET /info HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n", 400);
    expect_error("GET /info HTTP/1.1\r\nHost: x\r\n Host: x\r\n\r\n", 400);
    /* Spaces inside a value are fine. */
    struct client *c = run("GET /info HTTP/1.1\r\nHost: x\r\nX-Y: a b\r\n\r\n", 1);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    client_free(c);
}
END_TEST

/* http-parser, built without its strict checks, takes any byte for the line ends of a chunked
 * body and lets a bare LF or a control byte through in a chunk extension: each is a place where a
 * proxy in front could frame the body differently. The server refuses them all. */
START_TEST(test_httpserver_chunked_framing_strict_400)
{
    static const char *const bodies[] = {
        "5\r\nhelloXX0\r\n\r\n",            /* no CRLF after the data */
        "5\r\nhello\n0\r\n\r\n",            /* a bare LF after the data (the parser fails too) */
        "5\rXhello\r\n0\r\n\r\n",           /* a size line ended by CR and any byte */
        "5;\nhello\r\n0\r\n\r\n",           /* a bare LF in an extension */
        "5;a\001b\r\nhello\r\n0\r\n\r\n",   /* a control byte in an extension */
        "5\r\nhello\r\n0\r\n X: y\r\n\r\n", /* a folded trailer line */
        "5\r\nhello\r\n0\r\n\rX",           /* a last line ended by CR and any byte */
        "\r\nhello\r\n0\r\n\r\n",           /* no size (the parser fails too) */
    };
    char req[256];
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        snprintf(req, sizeof req,
                 "POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%s",
                 bodies[i]);
        expect_error(req, 400);
    }
    /* An Upgrade request's chunked body is read as a body too, so it is walked the same way. */
    expect_error(
        "POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: upgrade\r\n"
        "Upgrade: x\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        400);
    /* The blank line that ends the head, ended by CR and any byte, before a chunked body. */
    expect_error("POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                 "chunked\r\n\rX5\r\nhello\r\n0\r\n\r\n",
                 400);
}
END_TEST

/* The parser, not strict, lets a TAB or a form feed into the request target. */
START_TEST(test_httpserver_whitespace_in_request_target_400)
{
    expect_error("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    expect_error("GET /info?q=\f HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    expect_error("GET /a-uri-longer-than-sixteen-bytes/x?y=\t HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}
END_TEST

/* What the strict walk allows stays served: extensions with and without a space before them,
 * trailers, a bare LF as the last line, and requests pipelined right before and behind the body
 * in the same read (the one before is answered inside the parser call that then meets the
 * chunked head). */
START_TEST(test_httpserver_chunked_framing_valid_forms_served)
{
    struct client *c0 = run("GET /info?a HTTP/1.1\r\nHost: x\r\n\r\n"
                            "POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "3\r\nabc\r\n0\r\n\r\n",
                            2);
    PARSED p0 = {0};
    ck_assert_int_eq(parse_responses(c0->buf, c0->len, false, &p0), 2);
    ck_assert_str_eq(p0.r[0].body, "GET /info ? a v1.1 127.0.0.1 http []");
    ck_assert_str_eq(p0.r[1].body, "POST /info ?  v1.1 127.0.0.1 http [abc]");
    client_free(c0);

    struct client *c = run("POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5 ;a=\"q v\"\r\nhello\r\n006;b\r\n world\r\n0\r\nX: 1\r\nY: 2\r\n\n"
                           "GET /info HTTP/1.1\r\nHost: x\r\n\r\n",
                           2);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 2);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_str_eq(p.r[0].body, "POST /info ?  v1.1 127.0.0.1 http [hello world]");
    ck_assert_int_eq(p.r[1].status, 200);
    ck_assert_str_eq(p.r[1].body, "GET /info ?  v1.1 127.0.0.1 http []");
    client_free(c);
}
END_TEST

/* The walk carries its place across reads: a good chunked request cut anywhere is served, a bad
 * one refused. */
START_TEST(test_httpserver_chunked_framing_checked_across_every_split)
{
    static const char good[] =
        "POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5;e=v\r\nhello\r\n6\r\n world\r\n0\r\nT: x\r\n\r\n";
    static const char bad[] = "POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "5;e=v\r\nhello\r\n6\r\n worldXX0\r\nT: x\r\n\r\n";
    /* Cut from the head's last line end on. */
    expect_across_every_split(good, bad, (size_t)(strstr(good, "\r\n\r\n") - good),
                              "POST /info ?  v1.1 127.0.0.1 http [hello world]");
}
END_TEST

/* ---- timeouts ---- */

static void start_with_timeouts(double idle, double body)
{
    teardown();
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.idle_connection_timeout = idle;
    o.body_timeout = body;
    start_server(&o);
}

START_TEST(test_httpserver_idle_keep_alive_connection_closed)
{
    start_with_timeouts(0.2, 5);
    struct client *c =
        run("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 0); /* reads until the server closes */
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_str_eq(p.r[0].body, "hello");
    ck_assert(c->eof);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_unused_connection_closed)
{
    start_with_timeouts(0.1, 5);
    struct client *c = run("", 0);
    ck_assert_uint_eq(c->len, 0);
    ck_assert(c->eof);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_slowloris_closed_at_header_deadline)
{
    start_with_timeouts(0.3, 5);
    static char req[256];
    memset(req, 0, sizeof req);
    strcpy(req, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    memset(req + strlen(req), 'a', 100); /* 100 bytes x 20 ms = 2 s of trickle */
    struct client *c = calloc(1, sizeof *c);
    c->req = req;
    c->req_len = strlen(req);
    c->trickle = 0.02;
    run_prepared(c);
    ck_assert_int_ne(c->send_err, 0); /* the server closed while bytes were still coming */
    ck_assert_int_eq(nrequests, 0);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_stalled_body_closed_after_body_timeout)
{
    start_with_timeouts(5, 0.2);
    struct client *c = run("POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 408);
    ck_assert(c->eof);
    ck_assert_int_eq(nrequests, 0);
    client_free(c);
}
END_TEST

/* One sweep per server watches the idle deadlines, in the order connections went idle: a
 * connection that keeps making requests moves to the back and outlives the ones that went idle
 * with it, however early it was accepted. */
START_TEST(test_httpserver_idle_sweep_spares_the_active_connection)
{
    start_with_timeouts(1.0, 5);
    int a = test_connect_tcp(port), b = test_connect_tcp(port), c = test_connect_tcp(port);
    ck_assert(a >= 0 && b >= 0 && c >= 0);
    test_run_for(loop, 0.05);
    static const char req[] = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    double start = gale_loop_time(loop);
    while (gale_loop_time(loop) - start < 2.5) { /* a request on `a` about every 0.1 s */
        ck_assert_int_eq(test_write_all(a, req, sizeof req - 1), 0);
        char buf[512];
        ssize_t n = -1;
        for (int tries = 0; n <= 0 && tries < 100; tries++) { /* its answer, however late */
            test_run_for(loop, 0.01);
            n = recv(a, buf, sizeof buf - 1, MSG_DONTWAIT);
        }
        ck_assert_int_gt(n, 0);
        buf[n] = '\0';
        ck_assert_ptr_nonnull(strstr(buf, "\r\n\r\nhello"));
        test_run_for(loop, 0.1);
    }
    char byte;
    ck_assert_int_eq(recv(b, &byte, 1, MSG_DONTWAIT), 0); /* closed at the idle deadline */
    ck_assert_int_eq(recv(c, &byte, 1, MSG_DONTWAIT), 0);
    ck_assert_int_eq(recv(a, &byte, 1, MSG_DONTWAIT), -1); /* open, nothing to read */
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_uint_eq(gale_http_server_connections(srv), 1);
    close(a);
    close(b);
    close(c);
}
END_TEST

static bool server_had_and_lost_connection(void *arg)
{
    return nrequests > 0 && gale_http_server_connections(srv) == 0;
}

START_TEST(test_httpserver_client_never_reading_closed_after_idle_timeout)
{
    /* 40 pipelined responses of 500 kB to a client that reads nothing: once the kernel takes no
     * more of the queued output for idle_connection_timeout, the server closes the connection
     * instead of holding it (and a megabyte of output) for ever. */
    start_with_timeouts(0.3, 5);
    static char req[40 * 64];
    size_t off = 0;
    for (int i = 0; i < 40; i++)
        off += (size_t)snprintf(req + off, sizeof req - off,
                                "GET /big?500000 HTTP/1.1\r\nHost: x\r\n\r\n");
    struct client *c = calloc(1, sizeof *c);
    c->req = req;
    c->req_len = off;
    c->rcvbuf = 16384;
    c->read_after_go = true;
    atomic_store(&go, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, client_main, c), 0);
    bool closed = test_wait_until(loop, server_had_and_lost_connection, NULL, 15);
    atomic_store(&go, 1); /* the client may read now, and finds the connection closed */
    ck_assert(test_wait_until(loop, client_done, c, 15));
    pthread_join(t, NULL);
    ck_assert(closed);
    ck_assert_int_gt(nrequests, 0);
    ck_assert_int_lt(nrequests, 40); /* closed while the rest waited unparsed */
    ck_assert(c->eof);
    ck_assert_uint_lt(c->len, 40 * 500000);
    client_free(c);
}
END_TEST

/* A 12 MB body read 16 kB at a time through a small window: the kernel takes the first
 * megabytes at once and frees room in steps (a third of its send buffer), so the rest waits in
 * the stream for about two idle timeouts, with progress at every step: the download is never
 * cut, and the connection closes after it (at once, or at the idle deadline). */
static void slow_steady_download(const char *req)
{
    start_with_timeouts(0.3, 5);
    struct client *c = calloc(1, sizeof *c);
    c->req = req;
    c->req_len = strlen(c->req);
    c->rcvbuf = 16384;
    c->read_chunk = 16384;
    c->read_pause = 0.001;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, client_main, c), 0);
    ck_assert(test_wait_until(loop, client_done, c, 25));
    pthread_join(t, NULL);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    ck_assert_uint_eq(p.r[0].body_len, 12000000);
    ck_assert(body_is_pattern(p.r[0].body, 12000000));
    ck_assert(c->eof);
    ck_assert_int_eq(nrequests, 1);
    client_free(c);
}

START_TEST(test_httpserver_slow_steady_reader_gets_whole_body)
{
    slow_steady_download("GET /big?12000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}
END_TEST

START_TEST(test_httpserver_slow_steady_reader_on_keep_alive_gets_whole_body)
{
    /* The connection goes idle with the rest of the body still queued, so its idle deadline, not
     * a timer of its own, starts the looks at write progress: a reader that keeps taking bytes
     * must not be cut there. */
    slow_steady_download("GET /big?12000000 HTTP/1.1\r\nHost: x\r\n\r\n");
}
END_TEST

/* 320 pipelined requests for 16,000-byte bodies, 5 MB of responses, more than the socket buffers
 * hold. Each batch's responses are buffered (below BIG_BODY) and written as one after the last of
 * them left the connection idle, so the idle deadline, not a timer of the connection's own, first
 * looks at how much the kernel took. Returns the requests' text. */
#define MEDIUM_N 320
static const char *pipelined_medium(size_t *len)
{
    static char req[MEDIUM_N * 48];
    size_t off = 0;
    for (int i = 0; i < MEDIUM_N; i++)
        off += (size_t)snprintf(req + off, sizeof req - off,
                                "GET /big?16000 HTTP/1.1\r\nHost: x\r\n\r\n");
    *len = off;
    return req;
}

START_TEST(test_httpserver_idle_with_output_queued_never_read_closed)
{
    /* A client that reads none of them: closed about an idle timeout after the kernel stopped
     * taking bytes, not held with its output for ever. */
    start_with_timeouts(0.3, 5);
    struct client *c = calloc(1, sizeof *c);
    c->req = pipelined_medium(&c->req_len);
    c->rcvbuf = 16384;
    c->read_after_go = true;
    atomic_store(&go, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, client_main, c), 0);
    bool closed = test_wait_until(loop, server_had_and_lost_connection, NULL, 15);
    atomic_store(&go, 1);
    ck_assert(test_wait_until(loop, client_done, c, 15));
    pthread_join(t, NULL);
    ck_assert(closed);
    ck_assert(c->eof);
    ck_assert_uint_lt(c->len, MEDIUM_N * 16000);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_steady_reader_of_deep_pipeline_gets_every_response)
{
    /* A client that reads them steadily through a small window: parsing stops while a megabyte
     * of output is queued, the rest waiting unparsed, and the output takes longer than the idle
     * timeout to leave. The connection makes progress all along, so it is not idle: every
     * response arrives, and the connection closes at the idle deadline after the last. */
    start_with_timeouts(0.3, 5);
    struct client *c = calloc(1, sizeof *c);
    c->req = pipelined_medium(&c->req_len);
    c->rcvbuf = 16384;
    c->read_chunk = 16384;
    c->read_pause = 0.005;
    run_prepared(c);
    ck_assert(c->eof);
    int n = 0;
    size_t off = 0;
    for (;;) {
        struct test_http_response r;
        ssize_t len = test_http_parse(c->buf + off, c->len - off, false, false, &r);
        if (len <= 0)
            break;
        ck_assert_int_eq(r.status, 200);
        ck_assert_uint_eq(r.body_len, 16000);
        ck_assert(body_is_pattern(r.body, 16000));
        test_http_response_free(&r);
        off += (size_t)len;
        n++;
    }
    ck_assert_int_eq(n, MEDIUM_N);
    ck_assert_uint_eq(off, c->len);
    ck_assert_int_eq(nrequests, MEDIUM_N);
    client_free(c);
}
END_TEST

/* ---- responses ---- */

START_TEST(test_httpserver_head_keeps_content_length_without_body)
{
    struct client *c =
        run("HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n"
            "Connection: close\r\n\r\n",
            0);
    const char *second = strstr(c->buf + 1, "HTTP/1.1 200");
    ck_assert_ptr_nonnull(second);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, (size_t)(second - c->buf), true, &p), 1);
    ck_assert_str_eq(test_http_header(&p.r[0], "Content-Length"), "5");
    ck_assert_int_eq(parse_responses(second, strlen(second), false, &p), 1);
    ck_assert_str_eq(p.r[0].body, "hello");
    ck_assert_int_eq(nrequests, 2);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_204_and_304_have_no_body)
{
    struct client *c =
        run("GET /status?204 HTTP/1.1\r\nHost: x\r\n\r\nGET /status?304 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 3);
    ck_assert_int_eq(p.r[0].status, 204);
    ck_assert_ptr_null(test_http_header(&p.r[0], "Content-Length"));
    ck_assert_int_eq(p.r[1].status, 304);
    ck_assert_int_eq(p.r[2].status, 200);
    ck_assert_str_eq(p.r[2].body, "hello"); /* nothing of "dropped" leaked in between */
    ck_assert_ptr_null(strstr(c->buf, "dropped"));
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_flush_sends_chunked_with_terminator)
{
    struct client *c =
        run("GET /flush HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n", 2);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 2);
    ck_assert_str_eq(test_http_header(&p.r[0], "Transfer-Encoding"), "chunked");
    ck_assert_ptr_null(test_http_header(&p.r[0], "Content-Length"));
    ck_assert_str_eq(p.r[0].body, "abcdef");
    ck_assert_ptr_nonnull(strstr(c->buf, "\r\n0\r\n\r\n"));
    ck_assert_str_eq(p.r[1].body, "hello");
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_flush_on_http10_is_close_delimited)
{
    struct client *c = run("GET /flush HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_ptr_null(test_http_header(&p.r[0], "Transfer-Encoding"));
    ck_assert_str_eq(test_http_header(&p.r[0], "Connection"), "close");
    ck_assert_str_eq(p.r[0].body, "abcdef");
    ck_assert(c->eof);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_header_injection_refused)
{
    struct client *c = run("GET /inject HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0);
    ck_assert_int_eq(inject_rc[0], -EINVAL);
    ck_assert_int_eq(inject_rc[1], -EINVAL);
    ck_assert_int_eq(inject_rc[2], -EINVAL);
    ck_assert_int_eq(inject_rc[3], 0);
    ck_assert_ptr_null(strstr(c->buf, "evil"));
    ck_assert_ptr_nonnull(strstr(c->buf, "X-Ok: fine\r\n"));
    client_free(c);
}
END_TEST

/* The web layer's default Content-Type travels as a preset line: written once, and removed or
 * replaced like any header of its name. */
START_TEST(test_httpserver_preset_line_written_cleared_and_replaced)
{
    static const char *const modes[] = {"keep", "clear", "set", "other"};
    static const char *const want[] = {"text/x-preset", NULL, "text/plain", "text/x-preset"};
    for (int i = 0; i < 4; i++) {
        char req[128];
        snprintf(req, sizeof req, "GET /preset?%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 modes[i]);
        struct client *c = run(req, 0);
        PARSED p = {0};
        ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
        ck_assert_int_eq(p.r[0].status, 200);
        ck_assert_str_eq(p.r[0].body, "ok");
        const char *ct = test_http_header(&p.r[0], "Content-Type");
        if (want[i]) {
            ck_assert_ptr_nonnull(ct);
            ck_assert_str_eq(ct, want[i]);
            ck_assert_int_eq(test_http_header_count(&p.r[0], "Content-Type"), 1);
        } else {
            ck_assert_ptr_null(ct);
        }
        client_free(c);
    }
}
END_TEST

static bool closed_once(void *arg) { return ncloses == 1; }
static bool holding(void *arg) { return atomic_load(&held_ready) != 0; }

START_TEST(test_httpserver_client_disconnect_during_async_handler)
{
    struct client *c = calloc(1, sizeof *c);
    c->req = "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n";
    c->req_len = strlen(c->req);
    c->wait_held = true;
    run_prepared(c);
    ck_assert_ptr_nonnull(held);
    ck_assert(test_wait_until(loop, closed_once, NULL, 10));
    ck_assert(gale_http_request_connection_closed(held));
    ck_assert_int_eq(gale_http_response_write(held, "x", 1), -EPIPE);
    ck_assert_int_eq(gale_http_response_finish(held), -EPIPE);
    ck_assert_int_eq(ncloses, 1);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_server_free_with_request_in_flight)
{
    struct client *c = calloc(1, sizeof *c);
    c->req = "GET /hold HTTP/1.1\r\nHost: x\r\n\r\n";
    c->req_len = strlen(c->req);
    c->expect = 1;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, client_main, c), 0);
    ck_assert(test_wait_until(loop, holding, NULL, 10));
    ck_assert_ptr_nonnull(held);
    gale_http_server_free(srv);
    srv = NULL;
    ck_assert(test_wait_until(loop, client_done, c, 15));
    pthread_join(t, NULL);
    ck_assert(c->eof);
    ck_assert(test_wait_until(loop, closed_once, NULL, 10));
    ck_assert_int_eq(gale_http_response_finish(held), -EPIPE);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_xheaders)
{
    teardown();
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.xheaders = true;
    start_server(&o);
    struct client *c =
        run("GET /info HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n"
            "X-Forwarded-Proto: https\r\n\r\n"
            "GET /info HTTP/1.1\r\nHost: x\r\nX-Real-IP: 2001:db8::1\r\n"
            "X-Forwarded-For: 10.0.0.1\r\nX-Scheme: http\r\n\r\n"
            "GET /info HTTP/1.1\r\nHost: x\r\nX-Real-IP: not-an-ip\r\n"
            "X-Scheme: gopher\r\n\r\n",
            3);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 3);
    ck_assert_str_eq(p.r[0].body, "GET /info ?  v1.1 10.0.0.2 https []");
    ck_assert_str_eq(p.r[1].body, "GET /info ?  v1.1 2001:db8::1 http []");
    ck_assert_str_eq(p.r[2].body, "GET /info ?  v1.1 127.0.0.1 http []");
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_xheaders_ignored_by_default)
{
    struct client *c =
        run("GET /info HTTP/1.1\r\nHost: x\r\nX-Real-IP: 10.1.1.1\r\nX-Scheme: https\r\n\r\n", 1);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_str_eq(p.r[0].body, "GET /info ?  v1.1 127.0.0.1 http []");
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_bad_options_and_arguments)
{
    gale_http_server *s2;
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.max_header_size = 0;
    ck_assert_int_eq(gale_http_server_new(loop, &o, handler, NULL, &s2), -EINVAL);
    gale_http_server_opts_init(&o);
    o.body_timeout = -1;
    ck_assert_int_eq(gale_http_server_new(loop, &o, handler, NULL, &s2), -EINVAL);
    ck_assert_int_eq(gale_http_server_new(loop, NULL, NULL, NULL, &s2), -EINVAL);
    ck_assert_int_eq(gale_http_response_finish(NULL), -EINVAL);
    ck_assert_int_eq(gale_http_response_write(NULL, "x", 1), -EINVAL);
}
END_TEST

START_TEST(test_httpserver_large_body_then_pipelined_request)
{
    struct client *c =
        run("GET /big?300000 HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /big?100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 3);
    ck_assert_uint_eq(p.r[0].body_len, 300000);
    ck_assert(body_is_pattern(p.r[0].body, 300000));
    ck_assert_str_eq(p.r[1].body, "hello");
    ck_assert_uint_eq(p.r[2].body_len, 100);
    ck_assert(body_is_pattern(p.r[2].body, 100));
    ck_assert(c->eof);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_large_body_complete_before_close)
{
    struct client *c = run("GET /big?1000000 HTTP/1.0\r\n\r\n", 0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_uint_eq(p.r[0].body_len, 1000000);
    ck_assert(body_is_pattern(p.r[0].body, 1000000));
    ck_assert(c->eof);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_large_chunked_flush)
{
    struct client *c =
        run("GET /bigflush?100000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0);
    ck_assert_ptr_nonnull(strstr(c->buf, "Transfer-Encoding: chunked\r\n"));
    const char *b = strstr(c->buf, "\r\n\r\n") + 4;
    ck_assert(strncmp(b, "186a0\r\n", 7) == 0);
    ck_assert(body_is_pattern(b + 7, 100000));
    b += 7 + 100000;
    ck_assert(strncmp(b, "\r\n186a0\r\n", 9) == 0);
    ck_assert(body_is_pattern(b + 9, 100000));
    ck_assert_str_eq(b + 9 + 100000, "\r\n0\r\n\r\n");
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_client_not_reading_stops_pipeline)
{
    /* 40 responses of 500 kB pipelined by a client that reads nothing yet: the server must stop
     * parsing once its queued output passes the high-water mark instead of buffering 20 MB. */
    static char req[40 * 64];
    size_t off = 0;
    for (int i = 0; i < 40; i++)
        off += (size_t)snprintf(req + off, sizeof req - off,
                                "GET /big?500000 HTTP/1.1\r\nHost: x\r\n%s\r\n",
                                i == 39 ? "Connection: close\r\n" : "");
    struct client *c = calloc(1, sizeof *c);
    c->req = req;
    c->req_len = off;
    c->read_after_go = true;
    atomic_store(&go, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, client_main, c), 0);
    test_run_for(loop, 0.5);
    ck_assert_int_gt(nrequests, 0);
    ck_assert_int_lt(nrequests, 20);
    atomic_store(&go, 1);
    ck_assert(test_wait_until(loop, client_done, c, 30));
    pthread_join(t, NULL);
    ck_assert_int_eq(nrequests, 40);
    ck_assert_uint_eq(c->len > 40 * 500000 ? 1 : 0, 1);
    ck_assert(c->eof);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_finish_inside_close_callback)
{
    struct client *c = calloc(1, sizeof *c);
    c->req = "GET /hold_finish_on_close HTTP/1.1\r\nHost: x\r\n\r\n";
    c->req_len = strlen(c->req);
    c->wait_held = true;
    run_prepared(c);
    ck_assert(test_wait_until(loop, closed_once, NULL, 10));
    ck_assert_int_eq(close_finish_rc, -EPIPE);
    test_run_for(loop, 0.01);
    ck_assert_int_eq(ncloses, 1);
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_request_arena_and_status)
{
    struct client *c = run("GET /alloc HTTP/1.1\r\nHost: x\r\n\r\n", 1);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 201);
    ck_assert(strncmp(c->buf, "HTTP/1.1 201 Made It\r\n", 22) == 0);
    ck_assert_str_eq(p.r[0].body, "ok");
    client_free(c);
}
END_TEST

START_TEST(test_httpserver_body_exactly_at_limit_accepted)
{
    teardown();
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.max_body_size = 11;
    start_server(&o);
    struct client *c = run_client(post_req, sizeof post_req - 1, 1, false);
    check_post(c);
    client_free(c);
}
END_TEST

/* ---- access log ---- */

/* Sends the log to an unlinked temporary file at INFO; returns its fd. */
static int capture_log(void)
{
    char path[] = "/tmp/gale-test-httpserver-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    gale_log_set_fd(fd);
    gale_log_set_level(GALE_LOG_INFO);
    return fd;
}

/* Everything logged so far (malloc'ed, NUL-terminated). */
static char *read_log(int fd)
{
    gale_log_flush();
    size_t cap = 1 << 20;
    char *buf = calloc(1, cap);
    ssize_t n = pread(fd, buf, cap - 1, 0);
    ck_assert_int_ge(n, 0);
    buf[n] = '\0';
    return buf;
}

/* The access lines of finished requests in `log`, in order, cut after the peer's ")" (durations
 * vary); error lines are skipped. Returns the count; each lines[i] is malloc'ed. Checks that each
 * line ends with a duration in ms. */
static int access_lines(const char *log, char *lines[], int max)
{
    int n = 0;
    for (const char *p = log; (p = strstr(p, " access] ")) && n < max;) {
        p += strlen(" access] ");
        const char *eol = strchr(p, '\n');
        ck_assert_ptr_nonnull(eol);
        const char *why = strstr(p, "): ");
        if (why && why < eol) { /* an error line: "400 - - (127.0.0.1): reason" */
            p = eol;
            continue;
        }
        const char *close = eol;
        while (close > p && close[-1] != ')')
            close--;
        ck_assert_msg(close > p, "no peer in an access line");
        ck_assert_msg(eol - close >= 6 && strncmp(eol - 2, "ms", 2) == 0 && close[0] == ' ',
                      "no duration in an access line");
        lines[n++] = strndup(p, (size_t)(close - p));
        p = eol;
    }
    return n;
}

START_TEST(test_httpserver_access_log_one_line_per_request_in_order)
{
    int fd = capture_log();
    /* Two requests answered inside the first batch, one answered later from a timer, one in the
     * batch after it, then a syntax error answered after them. */
    struct client *c =
        run("GET /hello?1 HTTP/1.1\r\nHost: x\r\n\r\nGET /status?404 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /async HTTP/1.1\r\nHost: x\r\n\r\nGET /hello?2 HTTP/1.1\r\nHost: x\r\n\r\n"
            "GARBAGE\x01\r\n\r\n",
            0);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 5);
    ck_assert_int_eq(p.r[4].status, 400);
    client_free(c);
    char *log = read_log(fd);
    char *lines[8];
    int n = access_lines(log, lines, 8);
    ck_assert_int_eq(n, 4);
    ck_assert_str_eq(lines[0], "200 GET /hello?1 (127.0.0.1)");
    ck_assert_str_eq(lines[1], "404 GET /status?404 (127.0.0.1)");
    ck_assert_str_eq(lines[2], "200 GET /async (127.0.0.1)");
    ck_assert_str_eq(lines[3], "200 GET /hello?2 (127.0.0.1)");
    ck_assert_ptr_nonnull(strstr(log, "[W "));                   /* the 404 is a warning */
    ck_assert_ptr_nonnull(strstr(log, "400 - - (127.0.0.1): ")); /* the error line comes last */
    ck_assert(strstr(log, "400 - - (127.0.0.1): ") > strstr(log, "200 GET /hello?2 "));
    for (int i = 0; i < n; i++)
        free(lines[i]);
    free(log);
    close(fd);
}
END_TEST

START_TEST(test_httpserver_access_log_long_uri_cut)
{
    /* The longest peer address there is (through xheaders) after a uri past the line's room. */
    teardown();
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.xheaders = true;
    start_server(&o);
    int fd = capture_log();
    const char *ip = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    size_t ulen = 3000;
    char *req = malloc(ulen + 128);
    memcpy(req, "GET /", 5);
    memset(req + 5, 'u', ulen);
    sprintf(req + 5 + ulen, " HTTP/1.1\r\nHost: x\r\nX-Real-IP: %s\r\n\r\n", ip);
    struct client *c = run(req, 1);
    PARSED p = {0};
    ck_assert_int_eq(parse_responses(c->buf, c->len, false, &p), 1);
    ck_assert_int_eq(p.r[0].status, 200);
    client_free(c);
    free(req);
    char *log = read_log(fd);
    char *lines[2];
    ck_assert_int_eq(access_lines(log, lines, 2), 1);
    ck_assert_int_eq(strncmp(lines[0], "200 GET /uuuu", 13), 0);
    ck_assert_uint_gt(strlen(lines[0]), 900);
    ck_assert_uint_lt(strlen(lines[0]), 1100);
    ck_assert_int_eq(lines[0][strlen(lines[0]) - 1], ')');
    free(lines[0]);
    free(log);
    close(fd);
}
END_TEST

/* Sends `req`, reads until the server closes, and checks that the log holds `line` (and, when
 * `error_level`, that it was logged as an error); returns nothing, frees everything. */
static void expect_logged(const char *req, const char *line, bool error_level)
{
    int fd = capture_log();
    struct client *c = run(req, 0);
    client_free(c);
    char *log = read_log(fd);
    if (!strstr(log, line))
        ck_abort_msg("no \"%s\" in the log:\n%s", line, log);
    if (error_level)
        ck_assert_ptr_nonnull(strstr(log, "[E "));
    free(log);
    close(fd);
}

START_TEST(test_httpserver_malformed_version_logged_with_method_and_uri)
{
    expect_logged("GET /hello HTT,/1.1\r\n\r\n",
                  "400 GET /hello (127.0.0.1): malformed HTTP version in the request line", false);
}
END_TEST

START_TEST(test_httpserver_space_in_header_name_logged)
{
    expect_logged("GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n",
                  "400 GET /hello (127.0.0.1): whitespace in a header name", false);
}
END_TEST

START_TEST(test_httpserver_malformed_chunked_body_logged)
{
    expect_logged("POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                  "chunked\r\n\r\n5;\nhello\r\n0\r\n\r\n",
                  "400 POST /info (127.0.0.1): malformed chunked body", false);
}
END_TEST

START_TEST(test_httpserver_505_logged_with_method_and_uri)
{
    /* A 5xx is logged as an error. */
    expect_logged("GET /hello HTTP/9.9\r\n\r\n",
                  "505 GET /hello (127.0.0.1): HTTP version not supported", true);
}
END_TEST

static Suite *httpserver_suite(void)
{
    Suite *s = suite_create("httpserver");
    struct {
        const char *name;
        const TTest *tests[24];
    } groups[] = {
        {"basics",
         {test_httpserver_get_hello, test_httpserver_post_content_length_in_one_block,
          test_httpserver_post_content_length_byte_by_byte,
          test_httpserver_long_headers_split_across_reads,
          test_httpserver_request_line_tail_in_its_own_reads_keeps_first_header,
          test_httpserver_chunked_body_uppercase_with_extensions,
          test_httpserver_chunked_body_byte_by_byte, test_httpserver_bad_options_and_arguments}},
        {"keepalive",
         {test_httpserver_http11_keeps_alive_for_two_requests,
          test_httpserver_http10_closes_without_keep_alive,
          test_httpserver_http10_keep_alive_honoured, test_httpserver_connection_close_honoured,
          test_httpserver_no_keep_alive_option}},
        {"pipelining",
         {test_httpserver_pipelined_three_in_order_one_read,
          test_httpserver_pipelined_behind_async_keeps_order,
          test_httpserver_invalid_second_request_answered_after_first,
          test_httpserver_drain_from_handler_closes_after_chunked_request,
          test_httpserver_drain_from_handler_closes_after_headerless_request,
          test_httpserver_drain_from_handler_answers_request_begun_in_same_read,
          test_httpserver_header_limit_same_alone_and_pipelined}},
        {"limits",
         {test_httpserver_expect_100_continue, test_httpserver_header_block_over_limit_431,
          test_httpserver_header_block_over_default_limit_431,
          test_httpserver_raised_header_limit_accepts_large_block,
          test_httpserver_content_length_over_limit_413_without_body,
          test_httpserver_chunked_body_over_limit_413, test_httpserver_cl_with_te_400,
          test_httpserver_differing_content_lengths_400,
          test_httpserver_te_not_single_final_chunked_400, test_httpserver_te_twice_400,
          test_httpserver_te_identity_400, test_httpserver_content_length_plus_sign_400,
          test_httpserver_content_length_trailing_junk_400, test_httpserver_garbage_400,
          test_httpserver_bad_chunk_size_400, test_httpserver_major_versions_other_than_1_get_505,
          test_httpserver_content_length_mismatch_before_flush_is_500,
          test_httpserver_versions_1_0_1_1_and_later_1_x_served,
          test_httpserver_request_line_without_version_400}},
        {"strict",
         {test_httpserver_malformed_version_token_400,
          test_httpserver_version_checked_across_every_split,
          test_httpserver_version_after_extra_spaces_or_bare_lf_served,
          test_httpserver_space_in_header_name_400,
          test_httpserver_whitespace_in_request_target_400,
          test_httpserver_chunked_framing_strict_400,
          test_httpserver_chunked_framing_valid_forms_served,
          test_httpserver_chunked_framing_checked_across_every_split}},
        {"timeouts",
         {test_httpserver_idle_keep_alive_connection_closed,
          test_httpserver_idle_sweep_spares_the_active_connection,
          test_httpserver_unused_connection_closed,
          test_httpserver_slowloris_closed_at_header_deadline,
          test_httpserver_stalled_body_closed_after_body_timeout,
          test_httpserver_client_never_reading_closed_after_idle_timeout,
          test_httpserver_slow_steady_reader_gets_whole_body,
          test_httpserver_slow_steady_reader_on_keep_alive_gets_whole_body,
          test_httpserver_idle_with_output_queued_never_read_closed,
          test_httpserver_steady_reader_of_deep_pipeline_gets_every_response}},
        {"responses",
         {test_httpserver_head_keeps_content_length_without_body,
          test_httpserver_204_and_304_have_no_body,
          test_httpserver_flush_sends_chunked_with_terminator,
          test_httpserver_flush_on_http10_is_close_delimited,
          test_httpserver_header_injection_refused,
          test_httpserver_preset_line_written_cleared_and_replaced,
          test_httpserver_client_disconnect_during_async_handler,
          test_httpserver_server_free_with_request_in_flight, test_httpserver_xheaders,
          test_httpserver_xheaders_ignored_by_default}},
        {"bodies",
         {test_httpserver_large_body_then_pipelined_request,
          test_httpserver_large_body_complete_before_close, test_httpserver_large_chunked_flush,
          test_httpserver_client_not_reading_stops_pipeline,
          test_httpserver_finish_inside_close_callback, test_httpserver_request_arena_and_status,
          test_httpserver_body_exactly_at_limit_accepted}},
        {"accesslog",
         {test_httpserver_access_log_one_line_per_request_in_order,
          test_httpserver_access_log_long_uri_cut,
          test_httpserver_malformed_version_logged_with_method_and_uri,
          test_httpserver_space_in_header_name_logged,
          test_httpserver_malformed_chunked_body_logged,
          test_httpserver_505_logged_with_method_and_uri}},
    };
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        TCase *tc = tcase_create(groups[g].name);
        tcase_set_timeout(tc, 30);
        tcase_add_checked_fixture(tc, setup, teardown);
        for (int i = 0; i < 24 && groups[g].tests[i]; i++)
            tcase_add_test(tc, groups[g].tests[i]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(httpserver_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

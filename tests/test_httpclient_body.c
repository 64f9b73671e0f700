/* HTTP client bodies both ways, against the scripted server of tests/kaserver.h: gzip responses
 * decoded (Content-Length and chunked, streamed, several members), bounded by max_body_size after
 * inflation (a gzip bomb), malformed and truncated gzip; streamed uploads from a body producer
 * (Content-Length or chunked), with back-pressure, and Expect: 100-continue both ways. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef GALE_TEST_ZLIB
#include <zlib.h>
#endif

#include "core/coro.h"
#include "core/errors.h"
#include "core/loop.h"
#include "http/httpclient.h"
#include "kaserver.h"
#include "testutil.h"

static gale_http_client *new_client(gale_loop *loop)
{
    gale_http_client *c;
    ck_assert_int_eq(gale_http_client_new(loop, NULL, &c), 0);
    return c;
}

static void fetch_wait(gale_loop *loop, gale_http_client *c, gale_http_client_request *req,
                       struct ka_result *r)
{
    memset(r, 0, sizeof *r);
    ck_assert_int_eq(gale_http_fetch(c, req, ka_on_result, r), 0);
    ck_assert(test_wait_until(loop, ka_result_done, r, 30));
    ck_assert_int_eq(r->calls, 1);
}

#ifdef GALE_TEST_ZLIB
/* ---- gzip ---- */

/* `n` bytes of `src` (NULL: zeros) gzip-compressed into a malloc'ed buffer. */
static unsigned char *gzip(const void *src, size_t n, size_t *outlen)
{
    z_stream z = {0};
    ck_assert_int_eq(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    unsigned char *zeros = src ? NULL : calloc(1, n ? n : 1);
    size_t cap = deflateBound(&z, n) + 64;
    unsigned char *out = malloc(cap);
    z.next_in = src ? (unsigned char *)src : zeros;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    ck_assert_int_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
    *outlen = cap - z.avail_out;
    deflateEnd(&z);
    free(zeros);
    return out;
}

struct gz_script {
    unsigned char *gz; /* the encoded body */
    size_t len;
    bool chunked;
};

static void h_gzip(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    struct gz_script *g = s->arg;
    size_t n;
    if (g->chunked) {
        n = (size_t)snprintf(out->data, sizeof out->data,
                             "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n");
        /* Two chunks, split inside the gzip stream. */
        size_t half = g->len / 2;
        n += (size_t)snprintf(out->data + n, sizeof out->data - n, "%zx\r\n", half);
        memcpy(out->data + n, g->gz, half);
        n += half;
        n += (size_t)snprintf(out->data + n, sizeof out->data - n, "\r\n%zx\r\n", g->len - half);
        memcpy(out->data + n, g->gz + half, g->len - half);
        n += g->len - half;
        n += (size_t)snprintf(out->data + n, sizeof out->data - n, "\r\n0\r\n\r\n");
    } else {
        n = (size_t)snprintf(out->data, sizeof out->data,
                             "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                             "Content-Length: %zu\r\n\r\n",
                             g->len);
        memcpy(out->data + n, g->gz, g->len);
        n += g->len;
    }
    ck_assert_uint_le(n, sizeof out->data);
    out->len = n;
}

static char *text(size_t n)
{
    char *t = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        t[i] = (char)('a' + (i * 7 + i / 13) % 26);
    t[n] = '\0';
    return t;
}

START_TEST(test_body_gzip_decoded_by_default)
{
    bool chunked = _i == 1;
    char *plain = text(100000);
    struct gz_script g = {.chunked = chunked};
    g.gz = gzip(plain, 100000, &g.len);
    struct ka_server s;
    ka_start(&s, h_gzip, &g);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop);
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/"));
    struct ka_result r;
    for (int i = 0; i < 2; i++) { /* the second on the same connection */
        fetch_wait(loop, c, &req, &r);
        ck_assert_int_eq(r.resp->error, 0);
        ck_assert_uint_eq(r.resp->body_len, 100000);
        ck_assert(memcmp(r.resp->body, plain, 100000) == 0);
        ck_assert(r.resp->reused_connection == (i == 1));
        gale_http_client_response_free(r.resp);
    }
    ck_assert_ptr_nonnull(strstr(s.last_head, "\r\nAccept-Encoding: gzip\r\n"));
    ka_teardown(loop, c);
    ka_stop(&s);
    free(plain);
    free(g.gz);
}
END_TEST

START_TEST(test_body_gzip_kept_raw_when_decompression_is_off)
{
    struct gz_script g;
    g.chunked = false;
    g.gz = gzip("hello", 5, &g.len);
    struct ka_server s;
    ka_start(&s, h_gzip, &g);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop);
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/"));
    req.decompress_response = false;
    struct ka_result r;
    fetch_wait(loop, c, &req, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_uint_eq(r.resp->body_len, g.len);
    ck_assert(memcmp(r.resp->body, g.gz, g.len) == 0);
    gale_http_client_response_free(r.resp);
    ck_assert_ptr_null(strstr(s.last_head, "Accept-Encoding"));
    ka_teardown(loop, c);
    ka_stop(&s);
    free(g.gz);
}
END_TEST

struct pieces {
    size_t total;
    int calls;
};

static void count_piece(const char *data, size_t len, void *arg)
{
    struct pieces *p = arg;
    p->total += len;
    p->calls++;
}

/* 32 MiB of zeros compress to about 32 KiB: with max_body_size 1 MiB the fetch fails with
 * -EFBIG once 1 MiB has been decoded, buffered or streamed; a larger limit decodes it all. */
START_TEST(test_body_gzip_bomb_stops_at_max_body_size)
{
    bool streamed = _i == 1;
    struct gz_script g = {.chunked = false};
    g.gz = gzip(NULL, 32u << 20, &g.len);
    ck_assert_uint_lt(g.len, 40000);
    struct ka_server s;
    ka_start(&s, h_gzip, &g);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop);
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/"));
    req.max_body_size = 1u << 20;
    struct pieces p = {0};
    if (streamed) {
        req.streaming_cb = count_piece;
        req.cb_arg = &p;
    }
    struct ka_result r;
    fetch_wait(loop, c, &req, &r);
    ck_assert_int_eq(r.resp->error, -EFBIG);
    ck_assert_int_eq(r.resp->code, GALE_HTTP_NO_RESPONSE);
    ck_assert_uint_le(p.total, 1u << 20);
    gale_http_client_response_free(r.resp);

    req.max_body_size = 33u << 20;
    p = (struct pieces){0};
    fetch_wait(loop, c, &req, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_uint_eq(streamed ? p.total : r.resp->body_len, 32u << 20);
    gale_http_client_response_free(r.resp);
    ka_teardown(loop, c);
    ka_stop(&s);
    free(g.gz);
}
END_TEST

/* A gzip body cut short, or not gzip at all, fails the fetch: never a truncated success. */
START_TEST(test_body_gzip_truncated_or_malformed_fails)
{
    char *plain = text(5000);
    struct gz_script g = {.chunked = false};
    g.gz = gzip(plain, 5000, &g.len);
    if (_i == 0)
        g.len -= 10; /* the trailer and some data missing, framing intact */
    else
        memcpy(g.gz, "not gzip at all", 15);
    struct ka_server s;
    ka_start(&s, h_gzip, &g);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop);
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/"));
    struct ka_result r;
    fetch_wait(loop, c, &req, &r);
    ck_assert_int_eq(r.resp->error, GALE_EHTTP);
    ck_assert_int_eq(r.resp->code, GALE_HTTP_NO_RESPONSE);
    gale_http_client_response_free(r.resp);
    ka_teardown(loop, c);
    ka_stop(&s);
    free(plain);
    free(g.gz);
}
END_TEST

/* Two gzip members back to back decode as their concatenation (RFC 1952 2.2). */
START_TEST(test_body_gzip_two_members)
{
    size_t a, b;
    unsigned char *ga = gzip("first,", 6, &a), *gb = gzip("second", 6, &b);
    struct gz_script g = {.chunked = true, .len = a + b};
    g.gz = malloc(a + b);
    memcpy(g.gz, ga, a);
    memcpy(g.gz + a, gb, b);
    struct ka_server s;
    ka_start(&s, h_gzip, &g);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop);
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/"));
    struct ka_result r;
    fetch_wait(loop, c, &req, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_str_eq(r.resp->body, "first,second");
    gale_http_client_response_free(r.resp);
    ka_teardown(loop, c);
    ka_stop(&s);
    free(ga);
    free(gb);
    free(g.gz);
}
END_TEST
#endif

/* ---- streamed uploads ---- */

static void h_len(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    char body[64];
    snprintf(body, sizeof body, "%zu", rq->body_len);
    ka_reply_text(out, body);
}

/* Writes `total` bytes of a pattern in `piece`-byte writes, each from the previous one's
 * callback, and checks that a second write while one is in flight is refused. */
struct producer {
    size_t total, piece, produced;
    int writes, busy_refusals, errors;
    bool ended;
};

static void produce_next(gale_http_body_writer *w, struct producer *p);

static void on_written(gale_http_body_writer *w, int status, void *arg)
{
    struct producer *p = arg;
    if (status) {
        p->errors++;
        return;
    }
    produce_next(w, p);
}

static void produce_next(gale_http_body_writer *w, struct producer *p)
{
    if (p->produced == p->total) {
        ck_assert_int_eq(gale_http_body_end(w), 0);
        p->ended = true;
        return;
    }
    static char buf[65536];
    size_t n = p->total - p->produced < p->piece ? p->total - p->produced : p->piece;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)('A' + (p->produced + i) % 26);
    ck_assert_int_eq(gale_http_body_write(w, buf, n, on_written, p), 0);
    p->produced += n;
    p->writes++;
    if (gale_http_body_write(w, "x", 1, on_written, p) == -EBUSY)
        p->busy_refusals++;
}

static void producer_start(gale_http_body_writer *w, void *arg) { produce_next(w, arg); }

static void check_pattern(const struct ka_server *s, size_t total)
{
    ck_assert_uint_eq(s->last_body_len, total);
    for (size_t i = 0; i < total; i++)
        if (s->last_body[i] != (char)('A' + i % 26))
            ck_abort_msg("body byte %zu differs", i);
}

START_TEST(test_body_producer_with_length_or_chunked)
{
    bool chunked = _i == 1;
    struct ka_server s;
    ka_start(&s, h_len, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop);
    struct producer p = {.total = 300000, .piece = 7000};
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/up"));
    req.method = "PUT";
    req.body_producer = producer_start;
    req.producer_arg = &p;
    req.body_len = chunked ? 0 : p.total;
    struct ka_result r;
    fetch_wait(loop, c, &req, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_str_eq(r.resp->body, "300000");
    ck_assert(p.ended);
    ck_assert_int_eq(p.busy_refusals, p.writes);
    ck_assert_int_eq(p.errors, 0);
    gale_http_client_response_free(r.resp);
    ck_assert_ptr_nonnull(strstr(s.last_head, chunked ? "\r\nTransfer-Encoding: chunked\r\n"
                                                      : "\r\nContent-Length: 300000\r\n"));
    check_pattern(&s, p.total);
    ka_teardown(loop, c);
    ka_stop(&s);
}
END_TEST

/* The server waits before reading the body: the producer, which writes only from the previous
 * write's callback, is held back by TCP instead of piling the body up in the client. */
static bool producer_ended(void *arg) { return ((struct producer *)arg)->ended; }

START_TEST(test_body_producer_back_pressure)
{
    struct ka_server s;
    ka_start(&s, h_len, NULL);
    s.read_pause = 0.5;
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop);
    struct producer p = {.total = 16u << 20, .piece = 65536};
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/up"));
    req.method = "PUT";
    req.body_producer = producer_start;
    req.producer_arg = &p;
    req.request_timeout = 120; /* sanitizer builds on a busy machine */
    struct ka_result r;
    memset(&r, 0, sizeof r);
    ck_assert_int_eq(gale_http_fetch(c, &req, ka_on_result, &r), 0);
    /* While the server sleeps, what was produced is bounded by the socket buffers. */
    test_run_for(loop, 0.3);
    ck_assert_uint_lt(p.produced, p.total / 2); /* about 4 MiB here: the socket's send buffer */
    ck_assert(!p.ended);
    ck_assert(test_wait_until(loop, ka_result_done, &r, 60));
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert(producer_ended(&p));
    gale_http_client_response_free(r.resp);
    check_pattern(&s, p.total);
    ka_teardown(loop, c);
    ka_stop(&s);
}
END_TEST

/* A coroutine producer (Tornado's `async def body_producer(write)`): awaits each write, then
 * ends the body. */
struct coro_producer {
    gale_http_body_writer *w;
    size_t total, piece;
    int awaited_errors;
};

static int coro_produce(void *arg)
{
    struct coro_producer *cp = arg;
    static char buf[65536];
    for (size_t sent = 0; sent < cp->total;) {
        size_t n = cp->total - sent < cp->piece ? cp->total - sent : cp->piece;
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)('A' + (sent + i) % 26);
        gale_future *f = gale_http_body_write_future(cp->w, buf, n);
        int rc = gale_await(f);
        gale_future_unref(f);
        if (rc) {
            cp->awaited_errors++;
            return rc;
        }
        sent += n;
    }
    return gale_http_body_end(cp->w);
}

static void coro_producer_start(gale_http_body_writer *w, void *arg)
{
    struct coro_producer *cp = arg;
    cp->w = w;
    gale_future *done = gale_coro_spawn(gale_loop_current(), coro_produce, cp, NULL);
    ck_assert_ptr_nonnull(done);
    gale_future_unref(done);
}

START_TEST(test_body_producer_coroutine_awaits_writes)
{
    struct ka_server s;
    ka_start(&s, h_len, NULL);
    gale_loop *loop = ka_new_loop();
    gale_loop_make_current(loop);
    gale_http_client *c = new_client(loop);
    struct coro_producer cp = {.total = 1u << 20, .piece = 30000};
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/up"));
    req.method = "PUT";
    req.body_producer = coro_producer_start;
    req.producer_arg = &cp;
    struct ka_result r;
    fetch_wait(loop, c, &req, &r);
    ck_assert_int_eq(r.resp->error, 0);
    ck_assert_str_eq(r.resp->body, "1048576");
    ck_assert_int_eq(cp.awaited_errors, 0);
    gale_http_client_response_free(r.resp);
    check_pattern(&s, cp.total);
    gale_coro_shutdown(loop); /* the producer has returned: nothing to unwind */
    ka_teardown(loop, c);
    ka_stop(&s);
}
END_TEST

static int started;
static void count_start(gale_http_body_writer *w, void *arg)
{
    started++;
    producer_start(w, arg);
}

static void h_refuse(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    out->len = (size_t)snprintf(out->data, sizeof out->data,
                                "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n");
}

/* With Expect: 100-continue, a server that says 100 gets the body; one that answers at once
 * (413 here) never sees it: the producer is not even started. */
START_TEST(test_body_expect_100_continue)
{
    bool refuse = _i == 1;
    bool producer = _i != 2;
    struct ka_server s;
    ka_start(&s, refuse ? h_refuse : h_len, NULL);
    s.send_continue = !refuse;
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop);
    struct producer p = {.total = 10000, .piece = 4096};
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/up"));
    req.method = "POST";
    req.expect_100_continue = true;
    req.raise_error = false;
    if (producer) {
        req.body_producer = count_start;
        req.producer_arg = &p;
        req.body_len = p.total;
    } else {
        req.body = "buffered body";
        req.body_len = 13;
    }
    started = 0;
    struct ka_result r;
    fetch_wait(loop, c, &req, &r);
    ck_assert_ptr_nonnull(strstr(s.last_head, "\r\nExpect: 100-continue\r\n"));
    if (refuse) {
        ck_assert_int_eq(r.resp->code, 413);
        ck_assert_int_eq(started, 0);
        ck_assert_uint_eq(s.last_body_len, 0);
    } else {
        ck_assert_int_eq(r.resp->error, 0);
        ck_assert_str_eq(r.resp->body, producer ? "10000" : "13");
        ck_assert_int_eq(started, producer ? 1 : 0);
    }
    gale_http_client_response_free(r.resp);
    ka_teardown(loop, c);
    ka_stop(&s);
}
END_TEST

/* Promising body_len and producing more is refused (-EMSGSIZE); producing less fails the fetch
 * (-EPROTO): never a short request. */
static void end_short(gale_http_body_writer *w, int status, void *arg)
{
    int *rc = arg;
    rc[2] = gale_http_body_end(w);
}

static void short_producer(gale_http_body_writer *w, void *arg)
{
    int *rc = arg;
    rc[0] = gale_http_body_write(w, "toolong", 7, NULL, NULL);
    ck_assert_int_eq(gale_http_body_write(w, "abc", 3, end_short, arg), 0);
    rc[1] = gale_http_body_end(w); /* the write is still in flight */
}

START_TEST(test_body_producer_length_is_enforced)
{
    struct ka_server s;
    ka_start(&s, h_len, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop);
    int rc[3] = {1, 1, 1};
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/up"));
    req.method = "PUT";
    req.body_producer = short_producer;
    req.producer_arg = rc;
    req.body_len = 5;
    struct ka_result r;
    fetch_wait(loop, c, &req, &r);
    ck_assert_int_eq(rc[0], -EMSGSIZE);
    ck_assert_int_eq(rc[1], -EBUSY);
    ck_assert_int_eq(rc[2], -EPROTO);
    ck_assert_int_eq(r.resp->error, -EPROTO);
    gale_http_client_response_free(r.resp);
    ka_teardown(loop, c);
    ka_stop(&s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("httpclient_body");
    TCase *t;
#ifdef GALE_TEST_ZLIB
    t = tcase_create("gzip");
    tcase_set_timeout(t, 60);
    tcase_add_loop_test(t, test_body_gzip_decoded_by_default, 0, 2);
    tcase_add_test(t, test_body_gzip_kept_raw_when_decompression_is_off);
    tcase_add_loop_test(t, test_body_gzip_bomb_stops_at_max_body_size, 0, 2);
    tcase_add_loop_test(t, test_body_gzip_truncated_or_malformed_fails, 0, 2);
    tcase_add_test(t, test_body_gzip_two_members);
    suite_add_tcase(su, t);
#endif
    t = tcase_create("upload");
    tcase_set_timeout(t, 60);
    tcase_add_loop_test(t, test_body_producer_with_length_or_chunked, 0, 2);
    tcase_add_test(t, test_body_producer_back_pressure);
    tcase_add_test(t, test_body_producer_coroutine_awaits_writes);
    tcase_add_loop_test(t, test_body_expect_100_continue, 0, 3);
    tcase_add_test(t, test_body_producer_length_is_enforced);
    suite_add_tcase(su, t);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

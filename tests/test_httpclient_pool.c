/* HTTP client connection reuse against a scripted keep-alive server (tests/kaserver.h) that counts
 * what it receives: reuse across sequential and concurrent requests, what is never reused
 * (HTTP/1.0, Connection: close, close-delimited and unread bodies, timed-out requests), a server
 * that closes idle connections at random points (every request answered exactly once, POSTs never
 * sent twice), stale connections detected before reuse, the single retry, the caps. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/loop.h"
#include "http/httpclient.h"
#include "kaserver.h"
#include "testutil.h"

/* ---- client side helpers ---- */

struct many {
    struct ka_result *r;
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

static gale_http_client *new_client(gale_loop *loop, const gale_http_client_opts *o)
{
    gale_http_client *c;
    ck_assert_int_eq(gale_http_client_new(loop, o, &c), 0);
    return c;
}

/* Starts a fetch of `url` with X-Id: id (id < 0: none) and `method` (body "b<id>" for POST). */
static void start_fetch(gale_http_client *c, const char *url, const char *method, int id,
                        double timeout, struct ka_result *r)
{
    gale_http_client_request req;
    gale_http_client_request_init(&req, url);
    req.method = method;
    char idv[16], body[16];
    if (id >= 0) {
        snprintf(idv, sizeof idv, "%d", id);
        gale_http_headers_add(&req.headers, "X-Id", 4, idv, strlen(idv));
    }
    if (!strcmp(method, "POST")) {
        snprintf(body, sizeof body, "b%d", id);
        req.body = body;
        req.body_len = strlen(body);
    }
    if (timeout > 0)
        req.request_timeout = timeout;
    memset(r, 0, sizeof *r);
    ck_assert_int_eq(gale_http_fetch(c, &req, ka_on_result, r), 0);
    gale_http_headers_free(&req.headers);
}

static void fetch_wait(gale_loop *loop, gale_http_client *c, const char *url, const char *method,
                       int id, struct ka_result *r)
{
    start_fetch(c, url, method, id, 0, r);
    ck_assert(test_wait_until(loop, ka_result_done, r, 20));
}

static gale_http_client_stats stats(const gale_http_client *c)
{
    gale_http_client_stats s;
    gale_http_client_get_stats(c, &s);
    return s;
}

/* ---- server handlers ---- */

/* "id=<X-Id> conn=<n> seq=<index on conn>" */
static void h_echo(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    char body[128];
    snprintf(body, sizeof body, "id=%d conn=%d seq=%d", rq->id, rq->conn, rq->on_conn);
    ka_reply_text(out, body);
    if (!strcmp(rq->method, "HEAD")) /* the same head, no body */
        out->len = (size_t)(strstr(out->data, "\r\n\r\n") + 4 - out->data);
    if (!strcmp(rq->path, "/close-after"))
        out->close_after = true;
}

static void expect_id(const struct ka_result *r, int id)
{
    ck_assert_int_eq(r->calls, 1);
    ck_assert_msg(r->resp->error == 0, "id %d: %s", id, r->resp->error_message);
    char want[32];
    int n = snprintf(want, sizeof want, "id=%d ", id);
    ck_assert_msg(!strncmp(r->resp->body, want, (size_t)n), "id %d got body %s", id, r->resp->body);
}

/* ---- reuse ---- */

START_TEST(test_pool_sequential_requests_share_one_connection)
{
    struct ka_server s;
    ka_start(&s, h_echo, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop, NULL);
    for (int i = 0; i < 5; i++) {
        struct ka_result r;
        fetch_wait(loop, c, ka_url(&s, "/"), i % 2 ? "HEAD" : "GET", i, &r);
        ck_assert_int_eq(r.resp->error, 0);
        ck_assert(r.resp->reused_connection == (i > 0));
        if (i % 2 == 0)
            expect_id(&r, i);
        ka_result_clear(&r);
    }
    ck_assert_int_eq(stats(c).opened, 1);
    ck_assert_int_eq(stats(c).reused, 4);
    ck_assert_int_eq(stats(c).idle, 1);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_eq(s.conns, 1);
    ck_assert_int_eq(s.requests, 5);
}
END_TEST

START_TEST(test_pool_concurrent_rounds_reuse_up_to_max_clients)
{
    struct ka_server s;
    ka_start(&s, h_echo, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client_opts o = {.max_clients = 4};
    gale_http_client *c = new_client(loop, &o);
    struct ka_result r[4];
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 4; i++)
            start_fetch(c, ka_url(&s, "/"), "GET", round * 4 + i, 0, &r[i]);
        struct many m = {r, 4};
        ck_assert(test_wait_until(loop, all_done, &m, 20));
        for (int i = 0; i < 4; i++) {
            expect_id(&r[i], round * 4 + i);
            ka_result_clear(&r[i]);
        }
    }
    ck_assert_int_le(stats(c).opened, 4);
    ck_assert_int_eq(stats(c).reused + stats(c).opened, 20);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_le(s.conns, 4);
    ck_assert_int_eq(s.requests, 20);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(s.id_count[i], 1);
}
END_TEST

/* Forty requests queued at once behind max_clients = 4: as each answer comes back its connection
 * carries the next queued request; no request opens a fifth connection. */
START_TEST(test_pool_queued_requests_take_returning_connections)
{
    struct ka_server s;
    ka_start(&s, h_echo, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client_opts o = {.max_clients = 4};
    gale_http_client *c = new_client(loop, &o);
    enum { N = 40 };
    struct ka_result r[N];
    for (int i = 0; i < N; i++)
        start_fetch(c, ka_url(&s, "/"), "GET", i, 0, &r[i]);
    struct many m = {r, N};
    ck_assert(test_wait_until(loop, all_done, &m, 20));
    for (int i = 0; i < N; i++) {
        expect_id(&r[i], i);
        ka_result_clear(&r[i]);
    }
    ck_assert_int_eq(stats(c).opened, 4);
    ck_assert_int_eq(stats(c).reused, N - 4);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_eq(s.conns, 4);
}
END_TEST

/* Responses that forbid or prevent reuse: each next request needs a new connection. */
static const char *const NO_REUSE[] = {
    "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", /* bytes past the framing */
};

static void h_fixed(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    const char *resp = s->arg;
    out->len = strlen(resp);
    memcpy(out->data, resp, out->len);
}

START_TEST(test_pool_http10_close_and_extra_bytes_are_not_reused)
{
    struct ka_server s;
    ka_start(&s, h_fixed, (void *)NO_REUSE[_i]);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop, NULL);
    for (int i = 0; i < 3; i++) {
        struct ka_result r;
        fetch_wait(loop, c, ka_url(&s, "/"), "GET", i, &r);
        ck_assert_int_eq(r.resp->error, 0);
        ck_assert_str_eq(r.resp->body, "ok");
        ck_assert(!r.resp->reused_connection);
        ka_result_clear(&r);
    }
    ck_assert_int_eq(stats(c).reused, 0);
    ck_assert_int_eq(stats(c).opened, 3);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_eq(s.conns, 3);
}
END_TEST

/* A body delimited by the close can never leave the connection usable. */
static void h_close_delimited(struct ka_server *s, const struct ka_request *rq,
                              struct ka_reply *out)
{
    out->len = (size_t)snprintf(out->data, sizeof out->data, "HTTP/1.1 200 OK\r\n\r\nall");
    out->close_after = true;
}

START_TEST(test_pool_close_delimited_body_is_not_reused)
{
    struct ka_server s;
    ka_start(&s, h_close_delimited, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop, NULL);
    for (int i = 0; i < 2; i++) {
        struct ka_result r;
        fetch_wait(loop, c, ka_url(&s, "/"), "GET", i, &r);
        ck_assert_int_eq(r.resp->error, 0);
        ck_assert_str_eq(r.resp->body, "all");
        ka_result_clear(&r);
    }
    ck_assert_int_eq(stats(c).reused, 0);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_eq(s.conns, 2);
}
END_TEST

/* /big answers more than max_body_size: the fetch fails before the body is read, and that
 * connection must not carry the next request (whose answer would be the unread body). */
static void h_big_or_echo(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    if (!strcmp(rq->path, "/big")) {
        out->len = (size_t)snprintf(out->data, sizeof out->data,
                                    "HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n\r\n");
        memset(out->data + out->len, 'x', 4000);
        out->len += 4000;
        return;
    }
    h_echo(s, rq, out);
}

START_TEST(test_pool_unread_body_is_never_reused)
{
    struct ka_server s;
    ka_start(&s, h_big_or_echo, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop, NULL);
    struct ka_result r;
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 1, &r);
    expect_id(&r, 1);
    ka_result_clear(&r);
    gale_http_client_request req;
    gale_http_client_request_init(&req, ka_url(&s, "/big"));
    req.max_body_size = 100;
    memset(&r, 0, sizeof r);
    ck_assert_int_eq(gale_http_fetch(c, &req, ka_on_result, &r), 0);
    ck_assert(test_wait_until(loop, ka_result_done, &r, 20));
    ck_assert_int_eq(r.resp->error, -EFBIG);
    ka_result_clear(&r);
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 2, &r);
    expect_id(&r, 2);
    ck_assert(!r.resp->reused_connection);
    ka_result_clear(&r);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_eq(s.conns, 2);
}
END_TEST

/* /slow answers after 300 ms: the request times out first; its late answer must not become the
 * answer of the next request, so the timed-out connection is closed, not pooled. */
static void h_slow_or_echo(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    h_echo(s, rq, out);
    if (!strcmp(rq->path, "/slow"))
        out->delay = 0.3;
}

START_TEST(test_pool_timed_out_request_never_answers_the_next)
{
    struct ka_server s;
    ka_start(&s, h_slow_or_echo, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop, NULL);
    struct ka_result r;
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 1, &r);
    expect_id(&r, 1);
    ka_result_clear(&r);
    start_fetch(c, ka_url(&s, "/slow"), "GET", 2, 0.1, &r);
    ck_assert(test_wait_until(loop, ka_result_done, &r, 20));
    ck_assert_int_eq(r.resp->error, -ETIMEDOUT);
    ck_assert(r.resp->reused_connection);
    ka_result_clear(&r);
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 3, &r);
    expect_id(&r, 3);
    ck_assert(!r.resp->reused_connection);
    ka_result_clear(&r);
    test_run_for(loop, 0.35); /* the late answer arrives at a closed socket */
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 4, &r);
    expect_id(&r, 4);
    ka_result_clear(&r);
    ka_teardown(loop, c);
    ka_stop(&s);
}
END_TEST

/* ---- servers that close ---- */

static bool server_closed_idle(void *arg)
{
    struct ka_server *s = arg;
    return ka_get(s, &s->closed_idle) > 0;
}

/* The server closes right after answering. The loop is run (the close callback fires) or not
 * (the check before reuse must see the FIN itself); either way the next request goes out on a
 * new connection and succeeds, with no retry needed. */
START_TEST(test_pool_connection_closed_while_idle_is_not_reused)
{
    bool run_loop = _i == 1;
    struct ka_server s;
    ka_start(&s, h_echo, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop, NULL);
    struct ka_result r;
    fetch_wait(loop, c, ka_url(&s, "/close-after"), "GET", 1, &r);
    expect_id(&r, 1);
    ka_result_clear(&r);
    /* Wait for the server's close without running the loop, then let the FIN land. */
    for (int i = 0; i < 2000 && !server_closed_idle(&s); i++)
        usleep(1000);
    usleep(20000);
    if (run_loop) {
        test_run_for(loop, 0.05);
        ck_assert_int_eq(stats(c).idle, 0);
    }
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 2, &r);
    expect_id(&r, 2);
    ck_assert(!r.resp->reused_connection);
    ka_result_clear(&r);
    ck_assert_int_eq(stats(c).reused, 0);
    ck_assert_int_eq(s.requests, 2);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_eq(s.conns, 2);
}
END_TEST

/* The server reads the second request on a connection and closes without answering: a GET is
 * sent again on a new connection (once); a POST never goes on a reused connection, and when its
 * own connection is dropped it fails instead of being sent twice. */
static void h_drop_second(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    h_echo(s, rq, out);
    if (rq->on_conn == 1 || !strcmp(rq->path, "/drop"))
        out->drop = true;
}

START_TEST(test_pool_get_is_retried_once_post_never)
{
    struct ka_server s;
    ka_start(&s, h_drop_second, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop, NULL);
    struct ka_result r;
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 1, &r);
    expect_id(&r, 1);
    ka_result_clear(&r);
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 2, &r); /* reused, dropped, retried */
    expect_id(&r, 2);
    ck_assert(!r.resp->reused_connection);
    ka_result_clear(&r);
    ck_assert_int_eq(ka_get(&s, &s.dropped), 1);
    ck_assert_int_eq(ka_get(&s, &s.id_count[2]), 1);

    /* A pooled connection exists (conn 1, one request so far), but a POST takes a new one. */
    fetch_wait(loop, c, ka_url(&s, "/"), "POST", 3, &r);
    expect_id(&r, 3);
    ck_assert(!r.resp->reused_connection);
    ka_result_clear(&r);
    ck_assert_int_eq(ka_get(&s, &s.conns), 3);

    fetch_wait(loop, c, ka_url(&s, "/drop"), "POST", 4, &r);
    ck_assert_int_eq(r.resp->error, GALE_EEOF);
    ck_assert_int_eq(r.resp->code, GALE_HTTP_NO_RESPONSE);
    ka_result_clear(&r);
    test_run_for(loop, 0.05);
    ck_assert_int_eq(ka_get(&s, &s.posts), 2);
    ka_teardown(loop, c);
    ka_stop(&s);
}
END_TEST

/* Closes after an answer at random (half the answers), so the client's next request races the
 * close: sometimes found stale before use, sometimes sent into the closing socket. */
static void h_random_close(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    h_echo(s, rq, out);
    unsigned *seed = s->arg;
    pthread_mutex_lock(&s->mu);
    int roll = rand_r(seed) % 4;
    pthread_mutex_unlock(&s->mu);
    out->close_after = roll < 2;
    if (roll == 0)
        out->delay = 0.0005;
}

START_TEST(test_pool_random_idle_closes_every_request_answered_once)
{
    unsigned seed = 12345;
    struct ka_server s;
    ka_start(&s, h_random_close, &seed);
    gale_loop *loop = ka_new_loop();
    gale_http_client_opts o = {.max_clients = 4};
    gale_http_client *c = new_client(loop, &o);
    enum { N = 240, BATCH = 6 };
    struct ka_result r[BATCH];
    int posts = 0;
    for (int b = 0; b < N / BATCH; b++) {
        for (int i = 0; i < BATCH; i++) {
            int id = b * BATCH + i;
            bool post = id % 3 == 0;
            posts += post;
            start_fetch(c, ka_url(&s, "/"), post ? "POST" : "GET", id, 0, &r[i]);
        }
        struct many m = {r, BATCH};
        ck_assert(test_wait_until(loop, all_done, &m, 20));
        for (int i = 0; i < BATCH; i++) {
            expect_id(&r[i], b * BATCH + i);
            ka_result_clear(&r[i]);
        }
    }
    gale_http_client_stats st = stats(c);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_gt(st.reused, 0);
    ck_assert_int_eq(s.posts, posts); /* no POST sent twice */
    for (int id = 0; id < N; id++)
        ck_assert_msg(s.id_count[id] == 1, "id %d answered %d times", id, s.id_count[id]);
    ck_assert_int_eq(s.requests - s.dropped, N);
}
END_TEST

/* After answering, the server sends a second, unasked response on the idle connection. It must
 * never become the answer of the next request: the connection is found holding bytes (the loop
 * ran and buffered them, or the peek before reuse sees them) and closed. */
static void h_late_forgery(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out)
{
    h_echo(s, rq, out);
    if (rq->on_conn == 0) {
        out->late = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";
        out->late_delay = 0.01;
    }
}

START_TEST(test_pool_unasked_bytes_on_idle_connection_are_never_an_answer)
{
    bool run_loop = _i == 1;
    struct ka_server s;
    ka_start(&s, h_late_forgery, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop, NULL);
    struct ka_result r;
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 1, &r);
    expect_id(&r, 1);
    ka_result_clear(&r);
    if (run_loop)
        test_run_for(loop, 0.1);
    else
        usleep(100000);
    fetch_wait(loop, c, ka_url(&s, "/"), "GET", 2, &r);
    expect_id(&r, 2);
    ck_assert(!r.resp->reused_connection);
    ka_result_clear(&r);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_eq(s.conns, 2);
}
END_TEST

/* ---- caps and options ---- */

START_TEST(test_pool_per_host_cap_and_idle_timeout)
{
    struct ka_server s;
    ka_start(&s, h_echo, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client_opts o = {.max_clients = 4, .max_idle_per_host = 2, .idle_timeout = 0.1};
    gale_http_client *c = new_client(loop, &o);
    struct ka_result r[4];
    for (int i = 0; i < 4; i++)
        start_fetch(c, ka_url(&s, "/"), "GET", i, 0, &r[i]);
    struct many m = {r, 4};
    ck_assert(test_wait_until(loop, all_done, &m, 20));
    for (int i = 0; i < 4; i++)
        ka_result_clear(&r[i]);
    ck_assert_int_eq(stats(c).idle, 2);
    test_run_for(loop, 0.3);
    ck_assert_int_eq(stats(c).idle, 0);
    ka_teardown(loop, c);
    ka_stop(&s);
}
END_TEST

START_TEST(test_pool_disabled_sends_connection_close)
{
    struct ka_server s;
    ka_start(&s, h_echo, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client_opts o = {.max_idle_per_host = -1};
    gale_http_client *c = new_client(loop, &o);
    struct ka_result r;
    for (int i = 0; i < 2; i++) {
        fetch_wait(loop, c, ka_url(&s, "/"), "GET", i, &r);
        expect_id(&r, i);
        ka_result_clear(&r);
    }
    ck_assert_ptr_nonnull(strstr(s.last_head, "\r\nConnection: close\r\n"));
    ck_assert_int_eq(stats(c).idle, 0);
    ka_teardown(loop, c);
    ka_stop(&s);
    ck_assert_int_eq(s.conns, 2);
}
END_TEST

/* The pool key holds the port: two servers on one host never share a connection. */
START_TEST(test_pool_key_separates_ports)
{
    struct ka_server a, b;
    ka_start(&a, h_echo, NULL);
    ka_start(&b, h_echo, NULL);
    gale_loop *loop = ka_new_loop();
    gale_http_client *c = new_client(loop, NULL);
    struct ka_result r;
    for (int i = 0; i < 4; i++) {
        fetch_wait(loop, c, ka_url(i % 2 ? &b : &a, "/"), "GET", i, &r);
        expect_id(&r, i);
        ka_result_clear(&r);
    }
    ka_teardown(loop, c);
    ka_stop(&a);
    ka_stop(&b);
    ck_assert_int_eq(a.conns, 1);
    ck_assert_int_eq(b.conns, 1);
    ck_assert_int_eq(a.requests, 2);
    ck_assert_int_eq(b.requests, 2);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("httpclient_pool");
    TCase *t = tcase_create("reuse");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_pool_sequential_requests_share_one_connection);
    tcase_add_test(t, test_pool_concurrent_rounds_reuse_up_to_max_clients);
    tcase_add_test(t, test_pool_queued_requests_take_returning_connections);
    tcase_add_loop_test(t, test_pool_http10_close_and_extra_bytes_are_not_reused, 0,
                        (int)(sizeof NO_REUSE / sizeof NO_REUSE[0]));
    tcase_add_test(t, test_pool_close_delimited_body_is_not_reused);
    tcase_add_test(t, test_pool_unread_body_is_never_reused);
    tcase_add_test(t, test_pool_timed_out_request_never_answers_the_next);
    suite_add_tcase(su, t);
    t = tcase_create("closing_servers");
    tcase_set_timeout(t, 60);
    tcase_add_loop_test(t, test_pool_connection_closed_while_idle_is_not_reused, 0, 2);
    tcase_add_test(t, test_pool_get_is_retried_once_post_never);
    tcase_add_loop_test(t, test_pool_unasked_bytes_on_idle_connection_are_never_an_answer, 0, 2);
    tcase_add_test(t, test_pool_random_idle_closes_every_request_answered_once);
    suite_add_tcase(su, t);
    t = tcase_create("caps");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_pool_per_host_cap_and_idle_timeout);
    tcase_add_test(t, test_pool_disabled_sends_connection_close);
    tcase_add_test(t, test_pool_key_separates_ports);
    suite_add_tcase(su, t);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

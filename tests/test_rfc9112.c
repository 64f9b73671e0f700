/* The HTTP/1.1 server against the MUST rules of RFC 9112 and RFC 9110 that concern the request
 * line, Host, field values and framing (the table in http/README.md names the test of each).
 * Raw bytes over real sockets to a server in this process; the client runs on a thread while the
 * test thread runs the loop. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"
#include "http/httpserver.h"
#include "rawhttp.h"
#include "testutil.h"

static gale_loop *loop;
static gale_http_server *srv;
static int port;

static int nhandled; /* requests the handler was given */

/* Answers "<method> <path> q=<query> host=<host> x=[<X-Test>]"; "/204" answers 204 with a
 * Content-Length the server must drop, flushed first with the query "flush". */
static void handler(gale_http_request *req, void *arg)
{
    nhandled++;
    if (strcmp(req->path, "/204") == 0) {
        gale_http_response_set_status(req, 204, NULL);
        gale_http_response_set_header(req, "Content-Length", "0");
        if (strcmp(req->query, "flush") == 0) {
            gale_http_response_write(req, "dropped", 7);
            gale_http_response_flush(req);
        }
        gale_http_response_finish(req);
        return;
    }
    size_t xlen = 0;
    const char *x = gale_http_headers_get(&req->headers, "X-Test", &xlen);
    char body[512];
    int n = snprintf(body, sizeof body, "%s %s q=%s host=%s x=[%.*s]", req->method, req->path,
                     req->query, gale_http_request_host(req), (int)xlen, x ? x : "");
    gale_http_response_write(req, body, (size_t)n);
    gale_http_response_finish(req);
}

static void setup(void)
{
    nhandled = 0;
    gale_log_set_level(GALE_LOG_NONE);
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    ck_assert_int_eq(gale_http_server_new(loop, NULL, handler, NULL, &srv), 0);
    ck_assert_int_eq(gale_http_server_listen(srv, 0, "127.0.0.1"), 0);
    port = gale_http_server_port(srv);
    ck_assert_int_gt(port, 0);
}

static void teardown(void)
{
    gale_http_server_free(srv);
    test_run_for(loop, 0.05);
    gale_loop_free(loop);
}

/* One exchange on its own connection: what was sent, what came back, whether the server closed
 * the connection after it. */
struct exchange {
    const char *raw;
    struct test_http_response r;
    int rc;
    bool closed;
};

static void exchange_main(void *arg)
{
    struct exchange *x = arg;
    struct test_http_client c;
    x->rc = test_http_open(&c, port, 5);
    if (x->rc == 0)
        x->rc = test_http_sends(&c, x->raw);
    if (x->rc == 0)
        x->rc = test_http_read(&c, false, &x->r);
    if (x->rc == 0)
        x->closed = test_http_expect_closed(&c, 0.5) == 0;
    test_http_close(&c);
}

/* Sends `raw`, expects a response with `status` (and `body` when not NULL), kept in `x->r` for
 * the caller to look at and free. */
static void expect_x(struct exchange *x, const char *raw, int status, const char *body)
{
    *x = (struct exchange){.raw = raw};
    ck_assert_msg(test_run_thread(loop, exchange_main, x, 10), "client hung");
    ck_assert_msg(x->rc == 0, "no response to %s: %d", raw, x->rc);
    ck_assert_msg(x->r.status == status, "%s: status %d, want %d", raw, x->r.status, status);
    if (body)
        ck_assert_str_eq(x->r.body, body);
}

/* Sends `raw`, expects a response with `status` (and `body` when not NULL). Returns whether the
 * server closed the connection after it. */
static bool expect(const char *raw, int status, const char *body)
{
    struct exchange x;
    expect_x(&x, raw, status, body);
    test_http_response_free(&x.r);
    return x.closed;
}

/* One exchange of bytes that may hold a NUL. */
struct raw_exchange {
    const char *raw;
    size_t len;
    struct test_http_response r;
    int rc;
};

static void raw_exchange_main(void *arg)
{
    struct raw_exchange *x = arg;
    x->rc = test_http_exchange(port, x->raw, x->len, false, &x->r);
}

/* RFC 9112 3.2: an HTTP/1.1 request without Host, or with two Host lines, is a 400. */
START_TEST(test_rfc9112_http11_without_host_400)
{
    ck_assert(expect("GET /a HTTP/1.1\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nX-Test: 1\r\n\r\n", 400, NULL));
}
END_TEST

START_TEST(test_rfc9112_two_host_fields_400)
{
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400, NULL));
}
END_TEST

START_TEST(test_rfc9112_invalid_host_value_400)
{
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: a b\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, NULL));
    /* past 16 bytes the host is looked at byte by byte */
    ck_assert(
        expect("GET /a HTTP/1.1\r\nHost: a-very-long-host-name.example?x\r\n\r\n", 400, NULL));
}
END_TEST

/* The host forms that are valid are served, and reported as the request's host. */
START_TEST(test_rfc9112_host_forms_served)
{
    expect("GET /a HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", 200,
           "GET /a q= host=example.com:8080 x=[]");
    expect("GET /a HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 200, "GET /a q= host=[::1]:80 x=[]");
    expect("GET /a HTTP/1.1\r\nHost: xn--bcher-kva.example.org\r\n\r\n", 200,
           "GET /a q= host=xn--bcher-kva.example.org x=[]");
    expect("GET /a HTTP/1.1\r\nHost: \r\n\r\n", 200, "GET /a q= host= x=[]");
    /* HTTP/1.0 did not require Host */
    expect("GET /a HTTP/1.0\r\n\r\n", 200, "GET /a q= host= x=[]");
}
END_TEST

/* RFC 9112 3.2.2: the absolute form is accepted; the path routes, the host comes from the
 * target and the Host field is ignored. */
START_TEST(test_rfc9112_absolute_form_routes_on_its_path)
{
    expect("GET http://example.com/user/7?a=1 HTTP/1.1\r\nHost: other\r\n\r\n", 200,
           "GET /user/7 q=a=1 host=example.com x=[]");
    expect("GET HTTPS://example.com:8443/x HTTP/1.1\r\nHost: example.com\r\n\r\n", 200,
           "GET /x q= host=example.com:8443 x=[]");
    expect("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", 200,
           "GET / q= host=example.com x=[]");
    expect("GET http://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n", 200,
           "GET / q=q host=example.com x=[]");
}
END_TEST

/* RFC 9110 4.2.1 and 4.2.4: only http(s), and never userinfo; a host must be there. */
START_TEST(test_rfc9112_absolute_form_other_scheme_or_userinfo_400)
{
    expect("GET ftp://example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, NULL);
    expect("GET http://user:pw@example.com/x HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, NULL);
    expect("GET http://exa%mple.com\"/x HTTP/1.1\r\nHost: example.com\r\n\r\n", 400, NULL);
}
END_TEST

/* RFC 9110 5.5: whitespace around a field value is not part of it. */
START_TEST(test_rfc9112_field_value_trailing_whitespace_trimmed)
{
    expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test: some value \t\r\n\r\n", 200,
           "GET /a q= host=h x=[some value]");
    expect("GET /a HTTP/1.1\r\nHost: h \r\nX-Test:  \t v\t \r\n\r\n", 200,
           "GET /a q= host=h x=[v]");
    expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test: \t \r\n\r\n", 200, "GET /a q= host=h x=[]");
}
END_TEST

/* RFC 9112 6.1: an HTTP/1.0 request with Transfer-Encoding has faulty framing: answered, then
 * the connection closes, even when it asked to be kept. */
START_TEST(test_rfc9112_http10_with_transfer_encoding_closes)
{
    bool closed = expect("POST /a HTTP/1.0\r\nConnection: keep-alive\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
                         200, "POST /a q= host= x=[]");
    ck_assert_msg(closed, "the connection stayed open");
    /* the same request without Transfer-Encoding keeps the connection */
    closed = expect("POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
                    200, "POST /a q= host= x=[]");
    ck_assert_msg(!closed, "a keep-alive HTTP/1.0 request lost its connection");
}
END_TEST

/* RFC 9110 15.6.2: a well-formed method the server does not know is a 501; a method that is not
 * a token is a malformed request (400). Methods are case-sensitive. */
START_TEST(test_rfc9112_unknown_method_501_malformed_400)
{
    ck_assert(expect("BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 501, NULL));
    ck_assert(expect("get / HTTP/1.1\r\nHost: h\r\n\r\n", 501, NULL));
    ck_assert(expect("PROPFINDX / HTTP/1.1\r\nHost: h\r\n\r\n", 501, NULL));
    ck_assert(expect("\r\nFOO-BAR_1 / HTTP/1.1\r\nHost: h\r\n\r\n", 501, NULL));
    ck_assert(expect("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, NULL));
    ck_assert(expect("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, NULL));
    ck_assert(expect("\x16\x03\x01\x02\x00 / HTTP/1.1\r\n\r\n", 400, NULL));
    /* a known method is served */
    expect("PROPFIND / HTTP/1.1\r\nHost: h\r\n\r\n", 200, "PROPFIND / q= host=h x=[]");
}
END_TEST

/* A method cut by a read: the bytes the parser took earlier are checked with the rest. */
struct split_method {
    const char *raw;
    size_t cut;
    int status;
};

static void split_main(void *arg)
{
    struct split_method *s = arg;
    struct test_http_client c;
    struct test_http_response r = {0};
    s->status = -1;
    if (test_http_open(&c, port, 5) == 0 &&
        test_http_send_split(&c, s->raw, strlen(s->raw), s->cut, true) == 0 &&
        test_http_read(&c, false, &r) == 0)
        s->status = r.status;
    test_http_response_free(&r);
    test_http_close(&c);
}

START_TEST(test_rfc9112_unknown_method_501_across_every_split)
{
    const char *raw = "BREW / HTTP/1.1\r\nHost: h\r\n\r\n";
    for (size_t cut = 1; cut < 6; cut++) {
        struct split_method s = {raw, cut, 0};
        ck_assert(test_run_thread(loop, split_main, &s, 15));
        ck_assert_msg(s.status == 501, "cut %zu: status %d", cut, s.status);
    }
}
END_TEST

/* A request the server refuses after one it answered on the same connection: the first
 * response, then the refusal. */
struct pipeline {
    const char *raw;
    struct test_http_response r[2];
    int rc[2];
};

static void pipeline_main(void *arg)
{
    struct pipeline *p = arg;
    struct test_http_client c;
    p->rc[0] = p->rc[1] = -1;
    if (test_http_open(&c, port, 5) == 0 && test_http_sends(&c, p->raw) == 0) {
        p->rc[0] = test_http_read(&c, false, &p->r[0]);
        if (p->rc[0] == 0)
            p->rc[1] = test_http_read(&c, false, &p->r[1]);
    }
    test_http_close(&c);
}

START_TEST(test_rfc9112_refusal_after_a_pipelined_request)
{
    const char *cases[] = {"GET /a HTTP/1.1\r\nHost: h\r\n\r\nBREW / HTTP/1.1\r\nHost: h\r\n\r\n",
                           "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\n"};
    const int want[] = {501, 400};
    for (int i = 0; i < 2; i++) {
        struct pipeline p = {.raw = cases[i]};
        ck_assert(test_run_thread(loop, pipeline_main, &p, 10));
        ck_assert_int_eq(p.rc[0], 0);
        ck_assert_int_eq(p.rc[1], 0);
        ck_assert_int_eq(p.r[0].status, 200);
        ck_assert_int_eq(p.r[1].status, want[i]);
        ck_assert_str_eq(p.r[0].body, "GET /a q= host=h x=[]");
        test_http_response_free(&p.r[0]);
        test_http_response_free(&p.r[1]);
    }
}
END_TEST

/* RFC 9112 2.2: a bare CR is invalid. The parser (not strict) refuses one inside a line, but
 * takes any byte after the CR of the empty line that ends the head for its LF; a proxy that reads
 * that CR as a space does not see the head end there. */
START_TEST(test_rfc9112_bare_cr_ending_the_head_400)
{
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: h\r\n\rX", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test:\r\n\rX", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.0\r\n\rX", 400, NULL));
    ck_assert(expect("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\rXhi", 400, NULL));
    /* every line end RFC 9112 lets a server accept stays served */
    expect("GET /a HTTP/1.1\r\nHost: h\n\r\n", 200, "GET /a q= host=h x=[]");
    expect("GET /a HTTP/1.1\r\nHost: h\r\n\n", 200, "GET /a q= host=h x=[]");
    expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test:\r\n\r\n", 200, "GET /a q= host=h x=[]");
    expect("GET /a HTTP/1.0\n\n", 200, "GET /a q= host= x=[]");
}
END_TEST

/* A head cut by a read anywhere in its last line ends: the bare CR is still found, and a good
 * head is still served. */
START_TEST(test_rfc9112_bare_cr_ending_the_head_across_every_split)
{
    static const struct {
        const char *raw;
        int status;
    } cases[] = {
        {"GET /a HTTP/1.1\r\nHost: h\r\n\rX", 400},
        {"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", 200},
        {"GET /a HTTP/1.1\r\nHost: h\r\nX-Test:\r\n\rX", 400},
        {"GET /a HTTP/1.1\r\nHost: h\r\nX-Test:\r\n\r\n", 200},
        {"GET /a HTTP/1.0\r\n\rX", 400},
        {"GET /a HTTP/1.0\r\n\r\n", 200},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = strlen(cases[i].raw);
        for (size_t cut = len - 6; cut < len; cut++) {
            struct split_method s = {cases[i].raw, cut, 0};
            ck_assert(test_run_thread(loop, split_main, &s, 15));
            ck_assert_msg(s.status == cases[i].status, "case %zu cut %zu: status %d", i, cut,
                          s.status);
        }
    }
}
END_TEST

/* RFC 9112 2.2 and RFC 9110 5.5: a bare CR, NUL or other control byte in a field, and a bare CR
 * in the request target, are refused (by the parser). */
START_TEST(test_rfc9112_bare_cr_nul_and_controls_in_fields_400)
{
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test: a\rb\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test: a\rX-B: c\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: h\r\nX\rY: a\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test: a\x01z\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test: a\x7fz\r\n\r\n", 400, NULL));
    /* a NUL cannot be in a C string: sent by length */
    static const char nul[] = "GET /a HTTP/1.1\r\nHost: h\r\nX-Test: a\0z\r\n\r\n";
    struct raw_exchange x = {nul, sizeof nul - 1, {0}, -1};
    ck_assert(test_run_thread(loop, raw_exchange_main, &x, 10));
    ck_assert_int_eq(x.rc, 0);
    ck_assert_int_eq(x.r.status, 400);
    test_http_response_free(&x.r);
}
END_TEST

/* RFC 9112 5.2: obs-fold is refused (400), and so is a whitespace-preceded line right after the
 * request line (RFC 9112 2.2). */
START_TEST(test_rfc9112_obs_fold_and_whitespace_before_first_field_400)
{
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test: a\r\n b\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\nHost: h\r\nX-Test: a\r\n\tb\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\n X-Test: y\r\nHost: h\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a HTTP/1.1\r\n\tX-Test: y\r\nHost: h\r\n\r\n", 400, NULL));
}
END_TEST

/* RFC 9112 2.3: HTTP-name is case-sensitive. */
START_TEST(test_rfc9112_lowercase_http_name_400)
{
    ck_assert(expect("GET /a http/1.1\r\nHost: h\r\n\r\n", 400, NULL));
    ck_assert(expect("GET /a Http/1.1\r\nHost: h\r\n\r\n", 400, NULL));
}
END_TEST

/* RFC 9112 3: a request target longer than the server parses gets 414; a header block over the
 * limit after a target within it stays 431 (RFC 9110 5.4). */
START_TEST(test_rfc9112_target_over_limit_414)
{
    size_t n = 70000; /* over the 64 KiB default */
    char *raw = malloc(n + 64);
    ck_assert_ptr_nonnull(raw);
    int off = sprintf(raw, "GET /");
    memset(raw + off, 'a', n);
    strcpy(raw + off + n, " HTTP/1.1\r\nHost: h\r\n\r\n");
    ck_assert(expect(raw, 414, NULL));
    off = sprintf(raw, "GET /a HTTP/1.1\r\nHost: h\r\nX-Test: ");
    memset(raw + off, 'a', n);
    strcpy(raw + off + n, "\r\n\r\n");
    ck_assert(expect(raw, 431, NULL));
    free(raw);
}
END_TEST

/* RFC 9110 7.6.1, RFC 9112 9.6: "close" among other connection options closes the connection
 * after the response, and a request pipelined behind it is not processed. */
START_TEST(test_rfc9112_close_option_in_a_list_ends_the_connection)
{
    bool closed = expect("GET /a HTTP/1.1\r\nHost: h\r\nConnection: x-opt, close\r\n\r\n"
                         "GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
                         200, "GET /a q= host=h x=[]");
    ck_assert_msg(closed, "the connection stayed open");
    ck_assert_int_eq(nhandled, 1);
}
END_TEST

/* RFC 9110 6.5.1: trailer fields are not merged into the header section (the server drops
 * them). */
START_TEST(test_rfc9112_trailer_fields_not_merged_into_headers)
{
    expect("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           "2\r\nhi\r\n0\r\nX-Test: from-trailer\r\n\r\n",
           200, "POST /a q= host=h x=[]");
}
END_TEST

/* RFC 9112 6.3: a request with neither Content-Length nor Transfer-Encoding has no body, whatever
 * its method: what follows is the next request. */
START_TEST(test_rfc9112_request_without_framing_has_no_body)
{
    struct pipeline p = {
        .raw = "POST /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"};
    ck_assert(test_run_thread(loop, pipeline_main, &p, 10));
    ck_assert_int_eq(p.rc[0], 0);
    ck_assert_int_eq(p.rc[1], 0);
    ck_assert_str_eq(p.r[0].body, "POST /a q= host=h x=[]");
    ck_assert_str_eq(p.r[1].body, "GET /b q= host=h x=[]");
    test_http_response_free(&p.r[0]);
    test_http_response_free(&p.r[1]);
}
END_TEST

/* RFC 9110 10.1.1 and 15.2: "100-continue" in an HTTP/1.0 request is ignored (no 1xx goes to an
 * HTTP/1.0 client); the first response is the final one. */
START_TEST(test_rfc9112_http10_expect_100_continue_ignored)
{
    expect("POST /a HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", 200,
           "POST /a q= host= x=[]");
}
END_TEST

/* RFC 9110 6.6.1: an origin server with a clock sends Date in its 2xx, 3xx and 4xx responses,
 * the server's own refusals included. */
START_TEST(test_rfc9112_date_on_responses_and_refusals)
{
    static const char *const raws[] = {"GET /a HTTP/1.1\r\nHost: h\r\n\r\n",
                                       "GET /a HTTP/1.1\r\n\r\n"};
    static const int want[] = {200, 400};
    for (int i = 0; i < 2; i++) {
        struct exchange x;
        expect_x(&x, raws[i], want[i], NULL);
        const char *date = test_http_header(&x.r, "Date");
        ck_assert_ptr_nonnull(date);
        ck_assert_uint_eq(strlen(date), 29); /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        ck_assert(strcmp(date + 26, "GMT") == 0);
        test_http_response_free(&x.r);
    }
}
END_TEST

/* RFC 9110 8.6 and RFC 9112 6.1: a 204 carries neither Content-Length (even one the handler set)
 * nor Transfer-Encoding (even when flushed), and no content (RFC 9110 15.3.5). */
START_TEST(test_rfc9112_204_without_content_length_or_transfer_encoding)
{
    static const char *const raws[] = {"GET /204 HTTP/1.1\r\nHost: h\r\n\r\n",
                                       "GET /204?flush HTTP/1.1\r\nHost: h\r\n\r\n"};
    for (int i = 0; i < 2; i++) {
        struct exchange x;
        expect_x(&x, raws[i], 204, "");
        ck_assert_ptr_null(test_http_header(&x.r, "Content-Length"));
        ck_assert_ptr_null(test_http_header(&x.r, "Transfer-Encoding"));
        test_http_response_free(&x.r);
    }
    /* nothing of the dropped body reaches the next response on the connection */
    struct pipeline p = {.raw = "GET /204?flush HTTP/1.1\r\nHost: h\r\n\r\n"
                                "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"};
    ck_assert(test_run_thread(loop, pipeline_main, &p, 10));
    ck_assert_int_eq(p.rc[1], 0);
    ck_assert_int_eq(p.r[1].status, 200);
    ck_assert_str_eq(p.r[1].body, "GET /a q= host=h x=[]");
    test_http_response_free(&p.r[0]);
    test_http_response_free(&p.r[1]);
}
END_TEST

/* RFC 9110 7.8: a server may ignore Upgrade; the request is answered in HTTP/1.1 (no 101). */
START_TEST(test_rfc9112_upgrade_ignored)
{
    struct exchange x;
    expect_x(&x, "GET /a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
             200, "GET /a q= host=h x=[]");
    ck_assert_int_eq(x.r.minor, 1);
    test_http_response_free(&x.r);
}
END_TEST

/* Requests of the common shape (read without the parser) and of others (read by it) pipelined
 * on one connection in one write, in turn: each is served alike, from the request it follows on,
 * up to an obs-fold the server refuses. */
struct mixed {
    struct test_http_response r[7];
    int rc[7];
};

static const char mixed_raw[] =
    "GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Test: v \t\r\n\r\n"
    "GET /a?x=1 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x\r\nX-Test: v\r\n\r\n"
    "HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
    "\r\nGET /c HTTP/1.1\r\nhost:\th\r\nX-Test:\tw\r\n\r\n"
    "GET /e HTTP/1.1\r\nHost: h\r\nX-Test: \xc3\xa9\r\n\r\n"
    "GET /f HTTP/1.1\r\nHost: h\r\nX-Test: \r\n\r\n"
    "GET /g HTTP/1.1\r\nHost: h\r\nX-Test: a\r\n b\r\n\r\n";

static void mixed_main(void *arg)
{
    struct mixed *m = arg;
    struct test_http_client c;
    for (int i = 0; i < 7; i++)
        m->rc[i] = -1;
    if (test_http_open(&c, port, 5) == 0 && test_http_sends(&c, mixed_raw) == 0)
        for (int i = 0; i < 7 && (i == 0 || m->rc[i - 1] == 0); i++)
            m->rc[i] = test_http_read(&c, i == 2, &m->r[i]);
    test_http_close(&c);
}

START_TEST(test_rfc9112_common_and_other_shapes_pipelined_alike)
{
    static const char *bodies[] = {
        "GET /a q=x=1 host=h x=[v]", "GET /a q=x=1 host=h x=[v]",     "",
        "GET /c q= host=h x=[w]",    "GET /e q= host=h x=[\xc3\xa9]", "GET /f q= host=h x=[]"};
    struct mixed m = {0};
    ck_assert(test_run_thread(loop, mixed_main, &m, 10));
    for (int i = 0; i < 6; i++) {
        ck_assert_msg(m.rc[i] == 0, "response %d: %d", i, m.rc[i]);
        ck_assert_int_eq(m.r[i].status, 200);
        ck_assert_str_eq(m.r[i].body, bodies[i]);
    }
    ck_assert_str_eq(test_http_header(&m.r[2], "Content-Length"), "22"); /* "HEAD /b q= ..." */
    ck_assert_int_eq(m.rc[6], 0);
    ck_assert_int_eq(m.r[6].status, 400);
    ck_assert_int_eq(nhandled, 6);
    for (int i = 0; i < 7; i++)
        test_http_response_free(&m.r[i]);
}
END_TEST

/* The common path against the parser, request by request: heads near the common shape, each
 * with a byte or two replaced, inserted or dropped, are sent as they are (read by
 * httpserver_fast.c when still of its shape) and after an empty line (which the parser skips, and
 * which leaves every head to it). Both must get the same status and body. */
#define DIFF_CASES 240

struct diff {
    char raw[DIFF_CASES][96];
    size_t len[DIFF_CASES];
    int rc[2][DIFF_CASES], status[2][DIFF_CASES];
    char body[2][DIFF_CASES][128];
    char conn[2][DIFF_CASES][16]; /* the response's Connection header */
};

static void diff_main(void *arg)
{
    struct diff *d = arg;
    for (int i = 0; i < DIFF_CASES; i++)
        for (int k = 0; k < 2; k++) {
            char buf[128];
            size_t n = 0;
            if (k)
                buf[n++] = '\r', buf[n++] = '\n';
            memcpy(buf + n, d->raw[i], d->len[i]);
            n += d->len[i];
            struct test_http_client c;
            struct test_http_response r = {0};
            int rc = test_http_open(&c, port, 1);
            if (rc == 0)
                rc = test_http_send(&c, buf, n);
            if (rc == 0)
                rc = test_http_read(&c, strncmp(d->raw[i], "HEAD", 4) == 0, &r);
            test_http_close(&c);
            d->rc[k][i] = rc;
            d->status[k][i] = r.status;
            snprintf(d->body[k][i], sizeof d->body[k][i], "%s", r.body ? r.body : "");
            const char *conn = rc == 0 ? test_http_header(&r, "Connection") : NULL;
            snprintf(d->conn[k][i], sizeof d->conn[k][i], "%s", conn ? conn : "");
            test_http_response_free(&r);
        }
}

START_TEST(test_rfc9112_common_path_reads_as_the_parser)
{
    static const char *const tmpl[] = {
        "GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Test: v\r\n\r\n",
        "HEAD /b HTTP/1.1\r\nHost: h:80\r\nX-Test:  a b \t\r\n\r\n",
        "GET /c HTTP/1.1\r\nhost: h\r\nA: 1\r\nX-test:2\r\n\r\n",
        "GET /d HTTP/1.1\r\nConnection: Keep-Alive \r\nHost: h\r\n\r\n",
        "GET /e HTTP/1.1\r\nHost: h\r\nconnection: close\r\n\r\n",
    };
    static const char bytes[] = " \t\r\n:#?/\x7f\x80\x01aH1.,@\"%";
    struct diff *d = calloc(1, sizeof *d);
    ck_assert_ptr_nonnull(d);
    unsigned seed = 12345;
    for (int i = 0; i < DIFF_CASES; i++) {
        const char *t = tmpl[i % 5];
        size_t n = strlen(t);
        memcpy(d->raw[i], t, n);
        for (int m = 0; m < 1 + i % 2; m++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % n;
            char ch = bytes[(seed >> 20) % (sizeof bytes - 1)];
            int op = (int)((seed >> 28) % 4);
            if (op == 0 && n + 1 < 90) { /* insert */
                memmove(d->raw[i] + at + 1, d->raw[i] + at, n - at);
                d->raw[i][at] = ch;
                n++;
            } else if (op == 1 && n > 20) { /* drop */
                memmove(d->raw[i] + at, d->raw[i] + at + 1, n - at - 1);
                n--;
            } else {
                d->raw[i][at] = ch;
            }
        }
        memcpy(d->raw[i] + n, "\r\n\r\n", 4); /* ends a head cut short */
        d->len[i] = n + 4;
    }
    ck_assert(test_run_thread(loop, diff_main, d, 120));
    int served = 0;
    for (int i = 0; i < DIFF_CASES; i++) {
        ck_assert_msg(d->rc[0][i] == d->rc[1][i] && d->status[0][i] == d->status[1][i] &&
                          strcmp(d->body[0][i], d->body[1][i]) == 0 &&
                          strcmp(d->conn[0][i], d->conn[1][i]) == 0,
                      "case %d %.*s: %d %d [%s] %s against the parser's %d %d [%s] %s", i,
                      (int)d->len[i], d->raw[i], d->rc[0][i], d->status[0][i], d->body[0][i],
                      d->conn[0][i], d->rc[1][i], d->status[1][i], d->body[1][i], d->conn[1][i]);
        served += d->status[0][i] == 200;
    }
    ck_assert_int_gt(served, DIFF_CASES / 8); /* many variants stay requests that are served */
    free(d);
}
END_TEST

static Suite *rfc9112_suite(void)
{
    Suite *s = suite_create("rfc9112");
    TCase *t = tcase_create("requests");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_rfc9112_http11_without_host_400);
    tcase_add_test(t, test_rfc9112_two_host_fields_400);
    tcase_add_test(t, test_rfc9112_invalid_host_value_400);
    tcase_add_test(t, test_rfc9112_host_forms_served);
    tcase_add_test(t, test_rfc9112_absolute_form_routes_on_its_path);
    tcase_add_test(t, test_rfc9112_absolute_form_other_scheme_or_userinfo_400);
    tcase_add_test(t, test_rfc9112_field_value_trailing_whitespace_trimmed);
    tcase_add_test(t, test_rfc9112_http10_with_transfer_encoding_closes);
    tcase_add_test(t, test_rfc9112_unknown_method_501_malformed_400);
    tcase_add_test(t, test_rfc9112_unknown_method_501_across_every_split);
    tcase_add_test(t, test_rfc9112_refusal_after_a_pipelined_request);
    tcase_add_test(t, test_rfc9112_bare_cr_ending_the_head_400);
    tcase_add_test(t, test_rfc9112_bare_cr_ending_the_head_across_every_split);
    tcase_add_test(t, test_rfc9112_bare_cr_nul_and_controls_in_fields_400);
    tcase_add_test(t, test_rfc9112_obs_fold_and_whitespace_before_first_field_400);
    tcase_add_test(t, test_rfc9112_lowercase_http_name_400);
    tcase_add_test(t, test_rfc9112_target_over_limit_414);
    tcase_add_test(t, test_rfc9112_close_option_in_a_list_ends_the_connection);
    tcase_add_test(t, test_rfc9112_trailer_fields_not_merged_into_headers);
    tcase_add_test(t, test_rfc9112_request_without_framing_has_no_body);
    tcase_add_test(t, test_rfc9112_http10_expect_100_continue_ignored);
    tcase_add_test(t, test_rfc9112_date_on_responses_and_refusals);
    tcase_add_test(t, test_rfc9112_204_without_content_length_or_transfer_encoding);
    tcase_add_test(t, test_rfc9112_upgrade_ignored);
    tcase_add_test(t, test_rfc9112_common_and_other_shapes_pipelined_alike);
    tcase_add_test(t, test_rfc9112_common_path_reads_as_the_parser);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(rfc9112_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

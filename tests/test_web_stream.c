/* Streamed request bodies (web.h's stream_request_body, on httpserver.h's head callback and
 * gale_http_request_read_body), over real sockets: pieces arrive in order and make the body
 * (Content-Length and chunked, cut anywhere); prepare runs first and can refuse without the body
 * ever being read as a request; a paused handler stops the server reading; the body limit and
 * deadline; a client leaving mid-body; 100-continue; keep-alive and pipelining after a streamed
 * body; and a 1 GiB upload through the demo in bounded memory. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "webtest.h"

/* What the handlers saw, in order: P prepare, d the first piece, M the method, C
 * on_connection_close, F on_finish. The body is kept when `keep`. */
static struct {
    char log[64];
    bool keep;
    char *body;
    size_t len, cap;
    size_t pieces;
    bool pause_first;       /* data_received pauses on the first piece */
    gale_handler *paused_h; /* the handler it paused */
    size_t at_pause;        /* bytes received when it paused */
    size_t finished;
} rec;

static void note(char ch)
{
    size_t n = strlen(rec.log);
    if (n + 1 < sizeof rec.log)
        rec.log[n] = ch;
}

static void rec_reset(void)
{
    free(rec.body);
    memset(&rec, 0, sizeof rec);
    rec.keep = true;
}

static void sink_prepare(gale_handler *h)
{
    note('P');
    if (gale_get_query_argument(h, "reject", NULL)) {
        gale_send_error(h, 403);
        return;
    }
    const char *max = gale_get_query_argument(h, "max", NULL);
    if (max)
        ck_assert_int_eq(gale_set_max_body_size(h, (size_t)atol(max)), 0);
    const char *t = gale_get_query_argument(h, "timeout", NULL);
    if (t)
        ck_assert_int_eq(gale_set_body_timeout(h, atof(t)), 0);
}

static int sink_data(gale_handler *h, const char *data, size_t len)
{
    ck_assert_uint_gt(len, 0);
    if (rec.pieces++ == 0)
        note('d');
    if (rec.keep) {
        if (rec.len + len > rec.cap) {
            rec.cap = (rec.len + len) * 2;
            rec.body = realloc(rec.body, rec.cap);
        }
        memcpy(rec.body + rec.len, data, len);
    }
    rec.len += len;
    if (rec.pause_first && !rec.paused_h) {
        rec.paused_h = h;
        rec.at_pause = rec.len;
        return GALE_BODY_PAUSE;
    }
    return 0;
}

static void sink_method(gale_handler *h)
{
    note('M');
    size_t blen;
    gale_body(h, &blen);
    gale_writef(h, "len=%zu body_len=%zu", rec.len, blen);
}

static void sink_close(gale_handler *h)
{
    (void)h;
    note('C');
}

static void sink_finish(gale_handler *h)
{
    (void)h;
    note('F');
    rec.finished++;
}

static const gale_handler_class sink = {
    .prepare = sink_prepare,
    .post = sink_method,
    .put = sink_method,
    .on_connection_close = sink_close,
    .on_finish = sink_finish,
    .stream_request_body = true,
    .data_received = sink_data,
};

static void plain_get(gale_handler *h) { gale_write_str(h, "plain"); }
static void plain_post(gale_handler *h)
{
    size_t len;
    const char *b = gale_body(h, &len);
    gale_writef(h, "collected %zu %.*s", len, (int)(len > 16 ? 16 : len), b);
}
static const gale_handler_class plain = {.get = plain_get, .post = plain_post};

static void setup(void)
{
    wt_setup();
    rec_reset();
    ck_assert_int_eq(gale_app_route(wt_app, "/sink", &sink, NULL), 0);
    ck_assert_int_eq(gale_app_route(wt_app, "/plain", &plain, NULL), 0);
    wt_listen();
}

static void teardown(void)
{
    wt_teardown();
    rec_reset();
}

/* A body of `n` bytes that shows where a piece went missing or came twice. */
static char *pattern(size_t n)
{
    char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)((i * 131 + (i >> 8)) & 0xff);
    return p;
}

/* ---- a client on a thread of its own, one connection, a script of steps ---- */

struct script {
    const char *head;  /* sent first */
    const char *body;  /* then this, */
    size_t body_len;   /* so many bytes */
    size_t cuts[4];    /* at these offsets of the body, each a read of its own (0: none) */
    bool bytewise;     /* or one byte per send */
    const char *after; /* then this (a further request), after the first response */
    bool pipelined;    /* `after` goes with the body in one send instead */
    int nresp;         /* responses to read (1 or 2) */
    bool until_close;  /* then wait for the server to close the connection */
    struct test_http_response r[2];
    bool closed;    /* the server closed the connection after the responses */
    char rest[256]; /* what came after the responses (the start of it) */
    int rc;
};

static void run_script(void *arg)
{
    struct script *s = arg;
    struct test_http_client c;
    s->rc = test_http_open(&c, wt_port, 10);
    if (s->rc)
        goto out;
    size_t hl = strlen(s->head);
    char *all = malloc(hl + s->body_len + (s->after ? strlen(s->after) : 0) + 1);
    memcpy(all, s->head, hl);
    if (s->body_len)
        memcpy(all + hl, s->body, s->body_len);
    size_t total = hl + s->body_len;
    if (s->after && s->pipelined) {
        memcpy(all + total, s->after, strlen(s->after));
        total += strlen(s->after);
    }
    size_t off = 0;
    if (s->bytewise) {
        s->rc = test_http_send_bytewise(&c, all, total);
        off = total;
    }
    for (int i = 0; i < 4 && !s->rc && s->cuts[i]; i++) {
        size_t cut = hl + s->cuts[i];
        s->rc = test_http_send_split(&c, all + off, cut - off, cut - off, true);
        off = cut;
    }
    if (!s->rc && off < total)
        s->rc = test_http_send(&c, all + off, total - off);
    free(all);
    for (int i = 0; i < s->nresp && !s->rc; i++) {
        if (i == 1 && s->after && !s->pipelined)
            s->rc = test_http_sends(&c, s->after);
        if (!s->rc)
            s->rc = test_http_read(&c, false, &s->r[i]);
    }
    if (!s->rc && s->until_close) {
        s->closed = test_http_expect_closed(&c, 5) == 0;
        snprintf(s->rest, sizeof s->rest, "%.*s", (int)(c.len < 255 ? c.len : 255),
                 c.buf ? c.buf : "");
    }
out:
    test_http_close(&c);
}

static void script_free(struct script *s)
{
    test_http_response_free(&s->r[0]);
    test_http_response_free(&s->r[1]);
}

/* ---- pieces make the body ---- */

START_TEST(test_web_stream_content_length_pieces_in_order)
{
    size_t n = 300000;
    char *body = pattern(n);
    char head[128];
    snprintf(head, sizeof head, "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", n);
    struct script s = {
        .head = head, .body = body, .body_len = n, .cuts = {1, 1000, 150001}, .nresp = 1};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 200);
    char want[64];
    snprintf(want, sizeof want, "len=%zu body_len=0", n); /* the pieces were the body */
    ck_assert_str_eq(s.r[0].body, want);
    ck_assert_uint_eq(rec.len, n);
    ck_assert(memcmp(rec.body, body, n) == 0);
    ck_assert_uint_ge(rec.pieces, 4); /* one per read at least: the cuts */
    ck_assert_str_eq(rec.log, "PdMF");
    script_free(&s);
    free(body);
}
END_TEST

START_TEST(test_web_stream_chunked_cut_anywhere)
{
    /* Chunk sizes of every shape, an extension and a trailer, one byte per send. */
    const char *head = "POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *body = "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
    struct script s = {
        .head = head, .body = body, .body_len = strlen(body), .bytewise = true, .nresp = 1};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 200);
    ck_assert_uint_eq(rec.len, 16);
    ck_assert(memcmp(rec.body, "hello 0123456789", 16) == 0);
    ck_assert_str_eq(rec.log, "PdMF");
    script_free(&s);

    /* 200 chunks of growing sizes, the reads cut inside sizes, data and line ends. */
    rec_reset();
    size_t n = 0, cap = 1 << 20;
    char *wire = malloc(cap), *want = malloc(cap);
    size_t wl = 0;
    for (int i = 1; i <= 200; i++) {
        size_t len = (size_t)i * 37 % 1500 + 1;
        wl += (size_t)sprintf(wire + wl, "%zx\r\n", len);
        for (size_t k = 0; k < len; k++, n++)
            wire[wl++] = want[n] = (char)('a' + (n + (size_t)i) % 26);
        wl += (size_t)sprintf(wire + wl, "\r\n");
    }
    wl += (size_t)sprintf(wire + wl, "0\r\n\r\n");
    struct script s2 = {
        .head = head, .body = wire, .body_len = wl, .cuts = {3, 4097, 60001}, .nresp = 1};
    ck_assert(test_run_thread(wt_loop, run_script, &s2, 20));
    ck_assert_int_eq(s2.rc, 0);
    ck_assert_int_eq(s2.r[0].status, 200);
    ck_assert_uint_eq(rec.len, n);
    ck_assert(memcmp(rec.body, want, n) == 0);
    ck_assert_str_eq(rec.log, "PdMF");
    script_free(&s2);
    free(wire);
    free(want);
}
END_TEST

/* ---- prepare first ---- */

START_TEST(test_web_stream_prepare_refuses_before_the_body)
{
    /* The body is itself a request: served, it would answer "plain". */
    const char *inner = "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n";
    char head[160];
    snprintf(head, sizeof head,
             "POST /sink?reject=1 HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
             strlen(inner));
    struct script s = {
        .head = head, .body = inner, .body_len = strlen(inner), .nresp = 1, .until_close = true};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 403);
    ck_assert(s.closed);
    ck_assert_ptr_null(strstr(s.rest, "HTTP/1.1"));
    ck_assert_str_eq(rec.log, "PF"); /* no piece, no method */
    script_free(&s);
}
END_TEST

START_TEST(test_web_stream_100_continue_only_once_accepted)
{
    struct script s = {.head = "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                               "Expect: 100-continue\r\n\r\n",
                       .nresp = 2,
                       .after = "hello"};
    /* The body goes after the first response (the 100), as a client that waits sends it. */
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 100);
    ck_assert_int_eq(s.r[1].status, 200);
    ck_assert_str_eq(s.r[1].body, "len=5 body_len=0");
    script_free(&s);

    rec_reset();
    struct script s2 = {.head = "POST /sink?reject=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                                "Expect: 100-continue\r\n\r\n",
                        .nresp = 1};
    ck_assert(test_run_thread(wt_loop, run_script, &s2, 20));
    ck_assert_int_eq(s2.rc, 0);
    ck_assert_int_eq(s2.r[0].status, 403); /* no 100 before it */
    ck_assert_str_eq(rec.log, "PF");
    script_free(&s2);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_web_stream_body_limit_413)
{
    /* A Content-Length over the limit prepare set: refused before a byte is read. */
    struct script s = {.head =
                           "POST /sink?max=10 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
                       .body = "hello world",
                       .body_len = 11,
                       .nresp = 1,
                       .until_close = true};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 413);
    ck_assert(s.closed);
    ck_assert_str_eq(rec.log, "PF");
    script_free(&s);

    /* A chunked body crossing it: refused as it arrives, after the pieces within it. */
    rec_reset();
    const char *chunked = "8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n";
    struct script s2 = {.head = "POST /sink?max=10 HTTP/1.1\r\nHost: x\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n",
                        .body = chunked,
                        .body_len = strlen(chunked),
                        .nresp = 1,
                        .until_close = true};
    ck_assert(test_run_thread(wt_loop, run_script, &s2, 20));
    ck_assert_int_eq(s2.rc, 0);
    ck_assert_int_eq(s2.r[0].status, 413);
    ck_assert(s2.closed);
    ck_assert_uint_eq(rec.len, 8);
    ck_assert_str_eq(rec.log, "PdF");
    script_free(&s2);

    /* Without a raised limit a collected body keeps the server's (and a streamed one too). */
    rec_reset();
    gale_http_server_opts *o = gale_app_opts(wt_app);
    ck_assert_uint_eq(o->max_body_size, 100u << 20);
}
END_TEST

START_TEST(test_web_stream_body_deadline_408)
{
    struct script s = {.head = "POST /sink?timeout=0.2 HTTP/1.1\r\nHost: x\r\n"
                               "Content-Length: 100\r\n\r\n",
                       .body = "only part",
                       .body_len = 9,
                       .nresp = 1,
                       .until_close = true};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 408);
    ck_assert(s.closed);
    ck_assert_str_eq(rec.log, "PdF");
    script_free(&s);
}
END_TEST

START_TEST(test_web_stream_broken_chunked_400)
{
    const char *bad = "5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n";
    struct script s = {.head =
                           "POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                       .body = bad,
                       .body_len = strlen(bad),
                       .nresp = 1,
                       .until_close = true};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 400);
    ck_assert(s.closed);
    ck_assert_ptr_null(strstr(rec.log, "M"));
    script_free(&s);
}
END_TEST

static int failing_data(gale_handler *h, const char *data, size_t len)
{
    (void)h, (void)data, (void)len;
    note('d');
    return -EIO;
}
static void failing_get(gale_handler *h) { note('M'), gale_write_str(h, "get"); }
static const gale_handler_class failing = {.get = failing_get,
                                           .put = failing_get,
                                           .on_finish = sink_finish,
                                           .stream_request_body = true,
                                           .data_received = failing_data};
static const gale_handler_class get_only = {
    .get = failing_get, .on_finish = sink_finish, .stream_request_body = true};

START_TEST(test_web_stream_handler_errors_end_the_connection)
{
    ck_assert_int_eq(gale_app_route(wt_app, "/failing", &failing, NULL), 0);
    ck_assert_int_eq(gale_app_route(wt_app, "/getonly", &get_only, NULL), 0);
    /* data_received failing: 500, the method never runs, the rest is not read as a request. */
    struct script s = {.head = "PUT /failing HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n",
                       .body = "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n12345678",
                       .body_len = 40,
                       .nresp = 1,
                       .until_close = true};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 500);
    ck_assert(s.closed);
    ck_assert_ptr_null(strstr(s.rest, "HTTP/1.1"));
    ck_assert_str_eq(rec.log, "dF");
    script_free(&s);

    /* A method the class lacks: 405 before the body; a bodyless GET runs as usual. */
    rec_reset();
    struct script s2 = {.head = "POST /getonly HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n",
                        .body = "abc",
                        .body_len = 3,
                        .nresp = 1,
                        .until_close = true};
    ck_assert(test_run_thread(wt_loop, run_script, &s2, 20));
    ck_assert_int_eq(s2.rc, 0);
    ck_assert_int_eq(s2.r[0].status, 405);
    ck_assert(s2.closed);
    script_free(&s2);
    struct test_http_response r = wt_req("GET", "/getonly", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "get");
    test_http_response_free(&r);
}
END_TEST

/* ---- flow control ---- */

#define PAUSE_TOTAL (48u << 20)

struct pause_run {
    size_t sent_blocked;      /* what the client could send before its send blocked */
    size_t received_resuming; /* what the handler had when the test resumed it */
    int resume_rc;
    struct test_http_response r;
    int rc;
};

static void resume_from_loop(gale_loop *loop, void *arg)
{
    (void)loop;
    struct pause_run *x = arg;
    x->received_resuming = rec.len;
    x->resume_rc = gale_body_resume(rec.paused_h);
}

static void pause_client(void *arg)
{
    struct pause_run *x = arg;
    struct test_http_client c;
    x->rc = test_http_open(&c, wt_port, 10);
    char head[128];
    snprintf(head, sizeof head, "PUT /sink HTTP/1.1\r\nHost: x\r\nContent-Length: %u\r\n\r\n",
             PAUSE_TOTAL);
    if (!x->rc)
        x->rc = test_http_sends(&c, head);
    static char chunk[1 << 16];
    size_t sent = 0;
    /* Sends until the send blocks for half a second: the server stopped taking bytes. */
    test_set_timeouts(c.fd, 0.5);
    while (!x->rc && sent < PAUSE_TOTAL) {
        size_t want = PAUSE_TOTAL - sent < sizeof chunk ? PAUSE_TOTAL - sent : sizeof chunk;
        ssize_t n = send(c.fd, chunk, want, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0)
            x->rc = -errno;
        else
            sent += (size_t)n;
    }
    x->sent_blocked = sent;
    test_set_timeouts(c.fd, 20);
    if (!x->rc && gale_loop_add_callback(wt_loop, resume_from_loop, x) != 0)
        x->rc = -ENOMEM;
    while (!x->rc && sent < PAUSE_TOTAL) {
        size_t want = PAUSE_TOTAL - sent < sizeof chunk ? PAUSE_TOTAL - sent : sizeof chunk;
        x->rc = test_http_send(&c, chunk, want);
        sent += want;
    }
    if (!x->rc)
        x->rc = test_http_read(&c, false, &x->r);
    test_http_close(&c);
}

START_TEST(test_web_stream_pause_stops_reading)
{
    rec.keep = false;
    rec.pause_first = true;
    struct pause_run x = {0};
    ck_assert(test_run_thread(wt_loop, pause_client, &x, 60));
    ck_assert_int_eq(x.rc, 0);
    /* While paused the handler got nothing more, and the client's send blocked: what it got
     * out is what the kernel's socket buffers and the stream's 64 KiB hold, far from all. */
    ck_assert_uint_gt(rec.at_pause, 0);
    ck_assert_uint_eq(x.received_resuming, rec.at_pause);
    ck_assert_uint_lt(x.sent_blocked, PAUSE_TOTAL / 2);
    ck_assert_int_eq(x.resume_rc, 0);
    /* After the resume, every byte. */
    ck_assert_int_eq(x.r.status, 200);
    char want[64];
    snprintf(want, sizeof want, "len=%u body_len=0", PAUSE_TOTAL);
    ck_assert_str_eq(x.r.body, want);
    ck_assert_uint_eq(rec.len, PAUSE_TOTAL);
    ck_assert_str_eq(rec.log, "PdMF");
    test_http_response_free(&x.r);
}
END_TEST

/* ---- a client that leaves ---- */

struct leave_run {
    bool pause;
    int rc;
};

static void leave_client(void *arg)
{
    struct leave_run *x = arg;
    struct test_http_client c;
    x->rc = test_http_open(&c, wt_port, 10);
    static char part[1000];
    if (!x->rc)
        x->rc = test_http_sends(&c, "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
                                    "\r\n");
    if (!x->rc)
        x->rc = test_http_send(&c, part, sizeof part);
    if (!x->rc && !test_wait_peer_read(c.fd, 10))
        x->rc = -ETIMEDOUT;
    test_http_close(&c); /* mid-body */
}

static bool released(void *arg)
{
    (void)arg;
    return rec.finished > 0;
}

static bool closed_seen(void *arg)
{
    (void)arg;
    return strchr(rec.log, 'C') != NULL;
}

START_TEST(test_web_stream_client_leaves_mid_body)
{
    struct leave_run x = {0};
    ck_assert(test_run_thread(wt_loop, leave_client, &x, 20));
    ck_assert_int_eq(x.rc, 0);
    ck_assert(test_wait_until(wt_loop, released, NULL, 10));
    ck_assert_str_eq(rec.log, "PdCF"); /* on_connection_close, then released: no method */
}
END_TEST

START_TEST(test_web_stream_client_leaves_while_paused)
{
    rec.pause_first = true;
    struct leave_run x = {.pause = true};
    ck_assert(test_run_thread(wt_loop, leave_client, &x, 20));
    ck_assert_int_eq(x.rc, 0);
    ck_assert(test_wait_until(wt_loop, closed_seen, NULL, 10));
    test_run_for(wt_loop, 0.05);
    /* Paused: the handler is not released under the work it has in flight. */
    ck_assert_uint_eq(rec.finished, 0);
    ck_assert_int_eq(gale_body_resume(rec.paused_h), -EPIPE); /* ends the request here */
    ck_assert_uint_eq(rec.finished, 1);
    ck_assert_str_eq(rec.log, "PdCF");
}
END_TEST

/* ---- the connection after a streamed body ---- */

START_TEST(test_web_stream_keep_alive_after_streamed_body)
{
    struct script s = {.head = "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
                       .body = "hello",
                       .body_len = 5,
                       .after = "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       .nresp = 2};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 200);
    ck_assert_str_eq(s.r[0].body, "len=5 body_len=0");
    ck_assert_int_eq(s.r[1].status, 200);
    ck_assert_str_eq(s.r[1].body, "plain");
    script_free(&s);

    /* A chunked one, then a collected body on the same connection. */
    rec_reset();
    const char *chunked = "3\r\nabc\r\n0\r\n\r\n";
    struct script s2 = {
        .head = "POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        .body = chunked,
        .body_len = strlen(chunked),
        .after = "POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n"
                 "\r\nbody",
        .nresp = 2};
    ck_assert(test_run_thread(wt_loop, run_script, &s2, 20));
    ck_assert_int_eq(s2.rc, 0);
    ck_assert_str_eq(s2.r[0].body, "len=3 body_len=0");
    ck_assert_str_eq(s2.r[1].body, "collected 4 body");
    script_free(&s2);
}
END_TEST

START_TEST(test_web_stream_pipelined_after_streamed_body)
{
    const char *chunked = "4\r\nabcd\r\n0\r\n\r\n";
    struct script s = {.head =
                           "POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                       .body = chunked,
                       .body_len = strlen(chunked),
                       .after = "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                       .pipelined = true,
                       .nresp = 2,
                       .until_close = true};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(s.r[0].status, 200);
    ck_assert_str_eq(s.r[0].body, "len=4 body_len=0");
    ck_assert_int_eq(s.r[1].status, 200);
    ck_assert_str_eq(s.r[1].body, "plain");
    ck_assert(s.closed);
    script_free(&s);
}
END_TEST

struct mixed_run {
    struct test_http_response r[4];
    int rc;
};

static void mixed_client(void *arg)
{
    struct mixed_run *x = arg;
    struct test_http_client c;
    x->rc = test_http_open(&c, wt_port, 10);
    /* One send: a GET, a streamed Content-Length body, a streamed chunked body, a GET. */
    if (!x->rc)
        x->rc =
            test_http_sends(&c, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
                                "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
                                "hello"
                                "PUT /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                "\r\n3\r\nabc\r\n0\r\n\r\n"
                                "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    for (int i = 0; i < 4 && !x->rc; i++)
        x->rc = test_http_read(&c, false, &x->r[i]);
    test_http_close(&c);
}

START_TEST(test_web_stream_pipelined_around_streamed_bodies)
{
    struct mixed_run x = {0};
    ck_assert(test_run_thread(wt_loop, mixed_client, &x, 20));
    ck_assert_int_eq(x.rc, 0);
    ck_assert_str_eq(x.r[0].body, "plain");
    ck_assert_str_eq(x.r[1].body, "len=5 body_len=0");
    ck_assert_str_eq(x.r[2].body, "len=8 body_len=0"); /* rec counts both bodies */
    ck_assert_str_eq(x.r[3].body, "plain");
    ck_assert_uint_eq(rec.len, 8);
    ck_assert(memcmp(rec.body, "helloabc", 8) == 0);
    for (int i = 0; i < 4; i++)
        test_http_response_free(&x.r[i]);
}
END_TEST

/* ---- the plain server's API ---- */

static struct {
    size_t pieces, bytes;
    int end_status;
} plain_rec;

static bool head_streams(gale_http_request *req, void *arg)
{
    (void)arg;
    return strncmp(req->path, "/s", 2) == 0;
}

static int srv_piece(gale_http_request *req, const char *data, size_t len, void *arg)
{
    (void)data;
    plain_rec.pieces++;
    plain_rec.bytes += len;
    /* A reader whose work completed at once: resumes inside, then asks for the pause. */
    ck_assert_int_eq(gale_http_request_resume_body(req), 0);
    (void)arg;
    return GALE_HTTP_BODY_PAUSE;
}

static void srv_end(gale_http_request *req, int status, void *arg)
{
    (void)arg;
    plain_rec.end_status = status;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "streamed %zu", plain_rec.bytes);
    gale_http_response_write(req, buf, (size_t)n);
    gale_http_response_finish(req);
}

static void srv_request(gale_http_request *req, void *arg)
{
    (void)arg;
    if (gale_http_request_body_streamed(req)) {
        ck_assert_uint_eq(req->body_len, 0);
        ck_assert_int_eq(gale_http_request_read_body(req, srv_piece, srv_end, NULL), 0);
        ck_assert_int_eq(gale_http_request_read_body(req, srv_piece, srv_end, NULL), -EALREADY);
        return;
    }
    ck_assert_int_eq(gale_http_request_set_max_body_size(req, 1), -EALREADY);
    ck_assert_int_eq(gale_http_request_read_body(req, srv_piece, srv_end, NULL), -EINVAL);
    char buf[64];
    int n = snprintf(buf, sizeof buf, "collected %zu", req->body_len);
    gale_http_response_write(req, buf, (size_t)n);
    gale_http_response_finish(req);
}

START_TEST(test_web_stream_plain_server_head_cb)
{
    gale_http_server *srv;
    ck_assert_int_eq(gale_http_server_new(wt_loop, NULL, srv_request, NULL, &srv), 0);
    gale_http_server_set_head_cb(srv, head_streams, NULL);
    ck_assert_int_eq(gale_http_server_listen(srv, 0, "127.0.0.1"), 0);
    int saved = wt_port;
    wt_port = gale_http_server_port(srv);
    memset(&plain_rec, 0, sizeof plain_rec);
    size_t n = 200000;
    char *body = pattern(n);
    char head[128];
    snprintf(head, sizeof head, "POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", n);
    struct script s = {.head = head,
                       .body = body,
                       .body_len = n,
                       .cuts = {10, 100000},
                       .after = "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                "Connection: close\r\n\r\nabc",
                       .nresp = 2};
    ck_assert(test_run_thread(wt_loop, run_script, &s, 20));
    ck_assert_int_eq(s.rc, 0);
    char want[64];
    snprintf(want, sizeof want, "streamed %zu", n);
    ck_assert_str_eq(s.r[0].body, want);
    ck_assert_str_eq(s.r[1].body, "collected 3");
    ck_assert_int_eq(plain_rec.end_status, 0);
    ck_assert_uint_ge(plain_rec.pieces, 3);
    script_free(&s);
    free(body);
    wt_port = saved;
    gale_http_server_free(srv);
}
END_TEST

/* ---- 1 GiB through the demo's /upload, in bounded memory ---- */

#define UPLOAD_CHUNK (1u << 20)
#define UPLOAD_CHUNKS 1024u /* 1 GiB */
/* CRC-32 (zlib's) of UPLOAD_CHUNKS copies of pattern(UPLOAD_CHUNK), and of one */
#define UPLOAD_CRC "74278fc6"
#define ONE_CHUNK_CRC "5dd4aa6f"
/* The demo's peak resident memory after the upload: 4 MiB measured (13 MiB under ASan). */
#define RSS_BOUND_KB (64u << 10)

static long status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    size_t fl = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            v = atol(line + fl + 1);
    if (f)
        fclose(f);
    return v;
}

static void upload(int port, const char *method, unsigned chunks, char *reply, size_t cap)
{
    char *data = pattern(UPLOAD_CHUNK);
    struct test_http_client c;
    ck_assert_int_eq(test_http_open(&c, port, 60), 0);
    char head[160];
    snprintf(head, sizeof head, "%s /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %llu\r\n\r\n",
             method, (unsigned long long)chunks * UPLOAD_CHUNK);
    ck_assert_int_eq(test_http_sends(&c, head), 0);
    for (unsigned i = 0; i < chunks; i++)
        ck_assert_int_eq(test_http_send(&c, data, UPLOAD_CHUNK), 0);
    struct test_http_response r = {0};
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    snprintf(reply, cap, "%s", r.body);
    test_http_response_free(&r);
    test_http_close(&c);
    free(data);
}

START_TEST(test_web_stream_demo_gigabyte_upload_bounded_rss)
{
    int port = test_free_port();
    ck_assert_int_gt(port, 0);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    char *argv[] = {"demo", "--port", ps, "--quiet", NULL};
    pid_t pid = test_start_app("demo", argv, port);
    ck_assert_int_gt(pid, 0);
    char reply[128];
    upload(port, "POST", 1, reply, sizeof reply);
    ck_assert_str_eq(reply, "bytes 1048576 crc32 " ONE_CHUNK_CRC "\n");
    upload(port, "PUT", UPLOAD_CHUNKS, reply, sizeof reply);
    ck_assert_str_eq(reply, "bytes 1073741824 crc32 " UPLOAD_CRC "\n");
    long hwm = status_kb(pid, "VmHWM");
    ck_assert_int_gt(hwm, 0);
    ck_assert_msg(hwm < (long)RSS_BOUND_KB, "demo's peak RSS %ld KiB after a 1 GiB upload", hwm);
    int st = test_stop_app(pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

static Suite *web_stream_suite(void)
{
    Suite *s = suite_create("web_stream");
    TCase *t = tcase_create("stream");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_web_stream_content_length_pieces_in_order);
    tcase_add_test(t, test_web_stream_chunked_cut_anywhere);
    tcase_add_test(t, test_web_stream_prepare_refuses_before_the_body);
    tcase_add_test(t, test_web_stream_100_continue_only_once_accepted);
    tcase_add_test(t, test_web_stream_body_limit_413);
    tcase_add_test(t, test_web_stream_body_deadline_408);
    tcase_add_test(t, test_web_stream_broken_chunked_400);
    tcase_add_test(t, test_web_stream_handler_errors_end_the_connection);
    tcase_add_test(t, test_web_stream_pause_stops_reading);
    tcase_add_test(t, test_web_stream_client_leaves_mid_body);
    tcase_add_test(t, test_web_stream_client_leaves_while_paused);
    tcase_add_test(t, test_web_stream_keep_alive_after_streamed_body);
    tcase_add_test(t, test_web_stream_pipelined_after_streamed_body);
    tcase_add_test(t, test_web_stream_pipelined_around_streamed_bodies);
    tcase_add_test(t, test_web_stream_plain_server_head_cb);
    suite_add_tcase(s, t);
    TCase *d = tcase_create("demo");
    tcase_set_timeout(d, 240);
    tcase_add_test(d, test_web_stream_demo_gigabyte_upload_bounded_rss);
    suite_add_tcase(s, d);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(web_stream_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* IOStream suite: reads of every kind across packet boundaries, limits, writes to slow and
 * vanished peers, the close sequence and connect, on real sockets (socketpair and 127.0.0.1 TCP).
 * Tests that touch readiness run once per loop backend (loop tests: _i 0 = epoll, 1 = poll, 2 = uring, which is epoll where io_uring is unavailable). */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/loop.h"
#include "net/iostream.h"
#include "testutil.h"

#define WAIT 10.0

struct rec {
    int order;
    int reads, read_status, read_order;
    char *data;
    size_t len;
    int closes, close_status, close_order, close_reason;
    int writes, write_status, write_order;
    int connects, connect_status;
    bool returned; /* set right after the call that started the operation returned */
    bool returned_seen;
    size_t max_buffered;
    gale_stream *s;
};

static gale_loop *new_loop(int i)
{
    gale_loop *loop = NULL;
    ck_assert_int_eq(gale_loop_new(i == 2 ? GALE_BACKEND_URING
                                   : i    ? GALE_BACKEND_POLL
                                          : GALE_BACKEND_EPOLL,
                                   &loop),
                     0);
    return loop;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    ck_assert_int_ge(fl, 0);
    ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

/* A stream on one end of a socketpair (tcp false) or an accepted 127.0.0.1 connection; `*peer`
 * is the other end, blocking, with timeouts. */
static gale_stream *make_pair(gale_loop *loop, bool tcp, int *peer)
{
    int a, b;
    if (tcp) {
        int port;
        int lfd = test_listen_tcp(&port);
        ck_assert_int_ge(lfd, 0);
        b = test_connect_tcp(port);
        ck_assert_int_ge(b, 0);
        a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(a, 0);
        close(lfd);
    } else {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        a = sv[0];
        b = sv[1];
    }
    set_nonblock(a);
    test_set_timeouts(b, WAIT);
    gale_stream *s = NULL;
    ck_assert_int_eq(gale_stream_new(loop, a, &s), 0);
    *peer = b;
    return s;
}

static void on_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct rec *r = arg;
    r->reads++;
    r->read_status = status;
    r->read_order = ++r->order;
    r->returned_seen = r->returned;
    free(r->data);
    r->data = malloc(len + 1);
    memcpy(r->data, data ? data : "", len);
    r->data[len] = '\0';
    r->len = len;
}

static void on_close(gale_stream *s, int status, void *arg)
{
    struct rec *r = arg;
    r->closes++;
    r->close_status = status;
    r->close_reason = gale_stream_close_reason(s); /* the stream is valid until this returns */
    r->close_order = ++r->order;
}

static void on_write(gale_stream *s, int status, void *arg)
{
    struct rec *r = arg;
    r->writes++;
    r->write_status = status;
    r->write_order = ++r->order;
    r->returned_seen = r->returned;
}

static bool has_read(void *arg) { return ((struct rec *)arg)->reads > 0; }
static bool has_closed(void *arg) { return ((struct rec *)arg)->closes > 0; }
static bool has_written(void *arg) { return ((struct rec *)arg)->writes > 0; }

/* Closes the stream if needed, drains the loop until the close callback ran, frees everything. */
static void finish(gale_loop *loop, gale_stream *s, struct rec *r, int peer)
{
    if (r->closes == 0) {
        gale_stream_set_close_cb(s, on_close, r);
        gale_stream_close(s, 0);
        ck_assert(test_wait_until(loop, has_closed, r, WAIT));
    }
    ck_assert_int_eq(r->closes, 1);
    test_run_for(loop, 0.01); /* nothing fires after the close callback */
    ck_assert_int_eq(r->closes, 1);
    if (peer >= 0)
        close(peer);
    free(r->data);
    gale_loop_free(loop);
}

struct buffered_pred {
    gale_stream *s;
    size_t n;
    struct rec *r;
};
static bool buffered_at_least(void *arg)
{
    struct buffered_pred *p = arg;
    return p->r->reads > 0 || gale_stream_read_buffered(p->s) >= p->n;
}

/* ---- read_until ---- */

START_TEST(test_iostream_read_until_every_two_way_split)
{
    const char *msg = "hello world\r\nrest";
    size_t mlen = strlen(msg);
    for (size_t split = 1; split < mlen; split++) {
        gale_loop *loop = new_loop(_i);
        int peer;
        gale_stream *s = make_pair(loop, split % 2 == 0, &peer);
        struct rec r = {0};
        gale_stream_set_close_cb(s, on_close, &r);
        ck_assert_int_eq(gale_stream_read_until(s, "\r\n", 2, 0, on_read, &r), 0);
        ck_assert_int_eq(test_write_all(peer, msg, split), 0);
        struct buffered_pred bp = {s, split, &r};
        ck_assert(test_wait_until(loop, buffered_at_least, &bp, WAIT));
        ck_assert_int_eq(r.reads, split >= 13 ? 1 : 0);
        ck_assert_int_eq(test_write_all(peer, msg + split, mlen - split), 0);
        ck_assert(test_wait_until(loop, has_read, &r, WAIT));
        ck_assert_int_eq(r.reads, 1);
        ck_assert_int_eq(r.read_status, 0);
        ck_assert_uint_eq(r.len, 13);
        ck_assert_str_eq(r.data, "hello world\r\n");
        /* The rest stays buffered for the next read. */
        r.reads = 0;
        ck_assert_int_eq(gale_stream_read_bytes(s, 4, false, on_read, &r), 0);
        ck_assert(test_wait_until(loop, has_read, &r, WAIT));
        ck_assert_str_eq(r.data, "rest");
        ck_assert_uint_eq(gale_stream_read_buffered(s), 0);
        finish(loop, s, &r, peer);
    }
}
END_TEST

START_TEST(test_iostream_read_until_one_byte_at_a_time)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    const char *msg = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t mlen = strlen(msg);
    ck_assert_int_eq(gale_stream_read_until(s, "\r\n\r\n", 4, 0, on_read, &r), 0);
    for (size_t i = 0; i < mlen; i++) {
        ck_assert_int_eq(test_write_all(peer, msg + i, 1), 0);
        struct buffered_pred bp = {s, i + 1, &r};
        ck_assert(test_wait_until(loop, buffered_at_least, &bp, WAIT));
        ck_assert_int_eq(r.reads, i + 1 == mlen ? 1 : 0);
    }
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_uint_eq(r.len, mlen);
    ck_assert_str_eq(r.data, msg);
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_read_until_long_delimiter_and_several_lines)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    const char *d = "--boundary-longer-than-sixteen--";
    char msg[256];
    snprintf(msg, sizeof msg, "a%sbb%sccc", d, d);
    ck_assert_int_eq(test_write_all(peer, msg, strlen(msg)), 0);
    ck_assert_int_eq(gale_stream_read_until(s, d, strlen(d), 0, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_uint_eq(r.len, 1 + strlen(d));
    r.reads = 0;
    ck_assert_int_eq(gale_stream_read_until(s, d, strlen(d), 0, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_uint_eq(r.len, 2 + strlen(d));
    ck_assert_int_eq(memcmp(r.data, "bb", 2), 0);
    finish(loop, s, &r, peer);
}
END_TEST

/* ---- read_until_regex ---- */

START_TEST(test_iostream_read_until_regex_with_nul_bytes)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    const char msg[] = "ab\0cd\0\r\nHTTP/1.1 200 OK\r\nxyz";
    ck_assert_int_eq(gale_stream_read_until_regex(s, "\r\n", 0, on_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, msg, 4), 0); /* "ab\0c": no match yet */
    struct buffered_pred bp = {s, 4, &r};
    ck_assert(test_wait_until(loop, buffered_at_least, &bp, WAIT));
    ck_assert_int_eq(r.reads, 0);
    ck_assert_int_eq(test_write_all(peer, msg + 4, sizeof msg - 1 - 4), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_uint_eq(r.len, 8);
    ck_assert_int_eq(memcmp(r.data, "ab\0cd\0\r\n", 8), 0);
    r.reads = 0;
    ck_assert_int_eq(
        gale_stream_read_until_regex(s, "HTTP/1\\.[01] [0-9]{3} [A-Z]+\r\n", 0, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_str_eq(r.data, "HTTP/1.1 200 OK\r\n");
    ck_assert_uint_eq(gale_stream_read_buffered(s), 3);
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_read_until_regex_bad_pattern_is_einval)
{
    gale_loop *loop = new_loop(0);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    ck_assert_int_eq(gale_stream_read_until_regex(s, "(unclosed", 0, on_read, &r), -EINVAL);
    ck_assert(!gale_stream_reading(s));
    ck_assert_int_eq(gale_stream_read_until_regex(s, NULL, 0, on_read, &r), -EINVAL);
    ck_assert_int_eq(gale_stream_read_until_regex(s, "x", 0, NULL, &r), -EINVAL);
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_read_until_regex_max_bytes)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_read_until_regex(s, "def", 5, on_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "123456", 6), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 1);
    ck_assert_int_eq(r.read_status, -EMSGSIZE);
    ck_assert_int_eq(r.close_status, -EMSGSIZE);
    ck_assert_int_lt(r.read_order, r.close_order);
    finish(loop, s, &r, peer);
}
END_TEST

/* ---- read_bytes, read_until_close, read_stream, read_some ---- */

START_TEST(test_iostream_read_bytes_exact_and_partial)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    ck_assert_int_eq(gale_stream_read_bytes(s, 5, false, on_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "abc", 3), 0);
    struct buffered_pred bp = {s, 3, &r};
    ck_assert(test_wait_until(loop, buffered_at_least, &bp, WAIT));
    ck_assert_int_eq(r.reads, 0);
    ck_assert_int_eq(test_write_all(peer, "defgh", 5), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_str_eq(r.data, "abcde");
    ck_assert_uint_eq(gale_stream_read_buffered(s), 3);
    /* partial: whatever is there, up to n. */
    r.reads = 0;
    ck_assert_int_eq(gale_stream_read_bytes(s, 100, true, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_str_eq(r.data, "fgh");
    r.reads = 0;
    ck_assert_int_eq(gale_stream_read_bytes(s, 2, true, on_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "ijkl", 4), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_str_eq(r.data, "ij");
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_read_bytes_large_exact)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    size_t n = 3 * 1024 * 1024 + 17;
    char *src = malloc(n);
    for (size_t i = 0; i < n; i++)
        src[i] = (char)(i * 31 + i / 4096);
    ck_assert_int_eq(gale_stream_read_bytes(s, n, false, on_read, &r), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(gale_stream_fd(s)); /* the child must not keep the stream's end open */
        _exit(test_write_all(peer, src, n) == 0 ? 0 : 1);
    }
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_uint_eq(r.len, n);
    ck_assert_int_eq(memcmp(r.data, src, n), 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    free(src);
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_read_bytes_zero_completes_from_loop)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    ck_assert_int_eq(gale_stream_read_bytes(s, 0, false, on_read, &r), 0);
    ck_assert_int_eq(r.reads, 0);
    r.returned = true;
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert(r.returned_seen);
    ck_assert_int_eq(r.reads, 1);
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_uint_eq(r.len, 0);
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_read_until_close_gets_all_data)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_read_until_close(s, on_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "part one, ", 10), 0);
    ck_assert_int_eq(test_write_all(peer, "part two", 8), 0);
    close(peer);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 1);
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_str_eq(r.data, "part one, part two");
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    ck_assert_int_lt(r.read_order, r.close_order);
    finish(loop, s, &r, -1);
}
END_TEST

static struct rec chained;
static void read_rest_until_close(gale_stream *s, int status, const char *data, size_t len,
                                  void *arg)
{
    on_read(s, status, data, len, arg);
    ck_assert_int_eq(gale_stream_read_until_close(s, on_read, &chained), 0);
}

START_TEST(test_iostream_read_after_partial_read_then_until_close)
{
    /* Tornado's test_read_until_close_after_close: data and FIN arrive together; the second read,
     * started from the first one's callback, still gets the rest. */
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    memset(&chained, 0, sizeof chained);
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_read_bytes(s, 1, false, read_rest_until_close, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "1234", 4), 0);
    close(peer);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_str_eq(r.data, "1");
    ck_assert_int_eq(chained.reads, 1);
    ck_assert_int_eq(chained.read_status, 0);
    ck_assert_str_eq(chained.data, "234");
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    free(chained.data);
    finish(loop, s, &r, -1);
}
END_TEST

struct stream_rec {
    int chunks;
    size_t total;
    int done, done_status;
    char data[64];
};

static void on_chunk(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct stream_rec *sr = arg;
    sr->chunks++;
    if (sr->total + len <= sizeof sr->data)
        memcpy(sr->data + sr->total, data, len);
    sr->total += len;
}

static void on_stream_done(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct stream_rec *sr = arg;
    sr->done++;
    sr->done_status = status;
}

static bool stream_done(void *arg) { return ((struct stream_rec *)arg)->done > 0; }
static bool stream_has(void *arg) { return ((struct stream_rec *)arg)->total >= 3; }

START_TEST(test_iostream_read_stream_delivers_chunks_then_done)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    struct stream_rec sr = {0};
    ck_assert_int_eq(gale_stream_read_stream(s, 10, on_chunk, on_stream_done, &sr), 0);
    ck_assert_int_eq(test_write_all(peer, "abc", 3), 0);
    ck_assert(test_wait_until(loop, stream_has, &sr, WAIT));
    ck_assert_int_eq(sr.done, 0);
    ck_assert_uint_eq(gale_stream_read_buffered(s), 0); /* chunks are not accumulated */
    ck_assert_int_eq(gale_stream_read_bytes(s, 1, false, on_read, &r), -EBUSY);
    ck_assert_int_eq(test_write_all(peer, "defghijKLM", 10), 0);
    ck_assert(test_wait_until(loop, stream_done, &sr, WAIT));
    ck_assert_int_eq(sr.done, 1);
    ck_assert_int_eq(sr.done_status, 0);
    ck_assert_uint_eq(sr.total, 10);
    ck_assert_int_eq(memcmp(sr.data, "abcdefghij", 10), 0);
    ck_assert_int_eq(gale_stream_read_bytes(s, 3, false, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_str_eq(r.data, "KLM");
    /* Until close. */
    struct stream_rec sr2 = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_read_stream(s, SIZE_MAX, on_chunk, on_stream_done, &sr2), 0);
    ck_assert_int_eq(test_write_all(peer, "xyz", 3), 0);
    close(peer);
    ck_assert(test_wait_until(loop, stream_done, &sr2, WAIT));
    ck_assert_int_eq(sr2.done_status, 0);
    ck_assert_uint_eq(sr2.total, 3);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    finish(loop, s, &r, -1);
}
END_TEST

struct some_rec {
    int calls;
    size_t seen[8];
    size_t use;
    char first[64];
};

static size_t on_some(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct some_rec *sr = arg;
    if (sr->calls < 8)
        sr->seen[sr->calls] = len;
    if (sr->calls == 0)
        memcpy(sr->first, data, len < 63 ? len : 63);
    sr->calls++;
    return sr->use < len ? sr->use : len;
}

static bool some_called(void *arg) { return ((struct some_rec *)arg)->calls > 0; }
static bool some_called_twice(void *arg) { return ((struct some_rec *)arg)->calls > 1; }

START_TEST(test_iostream_read_some_leaves_unconsumed_bytes)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    struct some_rec sr = {.use = 4};
    ck_assert_int_eq(gale_stream_read_some(s, on_some, &sr), 0);
    ck_assert_int_eq(test_write_all(peer, "GET /a\r\nGET /b", 14), 0);
    ck_assert(test_wait_until(loop, some_called, &sr, WAIT));
    ck_assert_int_eq(sr.calls, 1);
    ck_assert_uint_eq(sr.seen[0], 14);
    ck_assert_int_eq(memcmp(sr.first, "GET /a\r\nGET /b", 14), 0);
    ck_assert_uint_eq(gale_stream_read_buffered(s), 10);
    /* The next read sees the rest at once. */
    ck_assert_int_eq(gale_stream_read_bytes(s, 10, false, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_str_eq(r.data, "/a\r\nGET /b");
    /* A consuming read that uses nothing is shown the bytes again only with more bytes. */
    struct some_rec sr2 = {.use = 0};
    ck_assert_int_eq(test_write_all(peer, "abc", 3), 0);
    ck_assert_int_eq(gale_stream_read_some(s, on_some, &sr2), 0);
    ck_assert(test_wait_until(loop, some_called, &sr2, WAIT));
    ck_assert_uint_eq(sr2.seen[0], 3);
    ck_assert_int_eq(gale_stream_read_some(s, on_some, &sr2), 0);
    test_run_for(loop, 0.02);
    ck_assert_int_eq(sr2.calls, 1);
    ck_assert_int_eq(test_write_all(peer, "d", 1), 0);
    sr2.use = 4;
    ck_assert(test_wait_until(loop, some_called_twice, &sr2, WAIT));
    ck_assert_int_eq(sr2.calls, 2);
    ck_assert_uint_eq(sr2.seen[1], 4);
    ck_assert_uint_eq(gale_stream_read_buffered(s), 0);
    finish(loop, s, &r, peer);
}
END_TEST

/* ---- call-time rules ---- */

START_TEST(test_iostream_buffered_read_completes_from_loop_not_call)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    ck_assert_int_eq(gale_stream_read_bytes(s, 2, false, on_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "ab\ncd\n", 6), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_uint_eq(gale_stream_read_buffered(s), 4);
    /* Satisfiable from the buffer: still never inside the call. */
    r.reads = 0;
    r.returned = false;
    ck_assert_int_eq(gale_stream_read_until(s, "\n", 1, 0, on_read, &r), 0);
    ck_assert_int_eq(r.reads, 0);
    r.returned = true;
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert(r.returned_seen);
    ck_assert_str_eq(r.data, "\n");
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_second_pending_read_is_ebusy)
{
    gale_loop *loop = new_loop(0);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    ck_assert_int_eq(gale_stream_read_bytes(s, 1, false, on_read, &r), 0);
    ck_assert(gale_stream_reading(s));
    ck_assert_int_eq(gale_stream_read_bytes(s, 1, false, on_read, &r), -EBUSY);
    ck_assert_int_eq(gale_stream_read_until(s, "x", 1, 0, on_read, &r), -EBUSY);
    ck_assert_int_eq(gale_stream_read_until_close(s, on_read, &r), -EBUSY);
    ck_assert_int_eq(gale_stream_read_until_regex(s, "x", 0, on_read, &r), -EBUSY);
    ck_assert_int_eq(test_write_all(peer, "z", 1), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_int_eq(r.reads, 1);
    ck_assert(!gale_stream_reading(s));
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_bad_arguments)
{
    gale_loop *loop = new_loop(0);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    gale_stream *o = NULL;
    ck_assert_int_eq(gale_stream_new(NULL, 3, &o), -EINVAL);
    ck_assert_int_eq(gale_stream_new(loop, -1, &o), -EINVAL);
    ck_assert_int_eq(gale_stream_read_until(s, "", 0, 0, on_read, &r), -EINVAL);
    ck_assert_int_eq(gale_stream_read_until(s, NULL, 1, 0, on_read, &r), -EINVAL);
    ck_assert_int_eq(gale_stream_read_until(NULL, "x", 1, 0, on_read, &r), -EINVAL);
    ck_assert_int_eq(gale_stream_read_bytes(s, 1, false, NULL, &r), -EINVAL);
    ck_assert_int_eq(gale_stream_read_some(s, NULL, &r), -EINVAL);
    ck_assert_int_eq(gale_stream_read_stream(s, 1, on_read, NULL, &r), -EINVAL);
    ck_assert_int_eq(gale_stream_write(s, NULL, 3, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_stream_writev(s, NULL, 2, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_stream_writev(s, NULL, -1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_stream_set_max_buffer_size(s, 0), -EINVAL);
    ck_assert_int_eq(gale_stream_connect(loop, NULL, 0, NULL, NULL, &o), -EINVAL);
    ck_assert(!gale_stream_reading(s));
    ck_assert_int_eq(gale_stream_set_nodelay(s, true), -EOPNOTSUPP); /* unix socket */
    struct sockaddr_storage ss;
    socklen_t sl;
    ck_assert_int_eq(gale_stream_peer_addr(s, &ss, &sl), 0);
    ck_assert_int_eq(ss.ss_family, AF_UNIX);
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_closed_stream_refuses_operations)
{
    gale_loop *loop = new_loop(0);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    gale_stream_close(s, 0);
    gale_stream_close(s, -EIO); /* idempotent: the first reason stays */
    ck_assert(gale_stream_closed(s));
    ck_assert_int_eq(gale_stream_fd(s), -1);
    ck_assert_int_eq(gale_stream_write(s, "x", 1, on_write, &r), -EPIPE);
    ck_assert_int_eq(r.closes, 0); /* not from inside close() */
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.close_status, 0);
    ck_assert_int_eq(r.writes, 0);
    finish(loop, s, &r, peer);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_iostream_max_bytes_inline_closes_emsgsize)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0}, r0 = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_read_bytes(s, 1, false, on_read, &r0), 0);
    ck_assert_int_eq(test_write_all(peer, "0123456789abcdef", 16), 0);
    ck_assert(test_wait_until(loop, has_read, &r0, WAIT));
    ck_assert_uint_eq(gale_stream_read_buffered(s), 15);
    /* A match within max_bytes succeeds even with more buffered (..._ignores_extra). */
    ck_assert_int_eq(gale_stream_read_until(s, "3", 1, 3, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_str_eq(r.data, "123");
    r.reads = 0;
    ck_assert_int_eq(gale_stream_read_until(s, "\n", 1, 5, on_read, &r), 0);
    ck_assert_int_eq(r.reads, 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 1);
    ck_assert_int_eq(r.read_status, -EMSGSIZE);
    ck_assert_int_eq(r.close_status, -EMSGSIZE);
    ck_assert_int_eq(r.close_reason, -EMSGSIZE);
    free(r0.data);
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_max_bytes_arriving_closes_emsgsize)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    /* Exactly enough room. */
    ck_assert_int_eq(gale_stream_read_until(s, "def", 3, 6, on_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "abcdef", 6), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_int_eq(r.read_status, 0);
    r.reads = 0;
    ck_assert_int_eq(gale_stream_read_until(s, "def", 3, 5, on_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "123", 3), 0);
    struct buffered_pred bp = {s, 3, &r};
    ck_assert(test_wait_until(loop, buffered_at_least, &bp, WAIT));
    ck_assert_int_eq(r.closes, 0);
    ck_assert_int_eq(test_write_all(peer, "456", 3), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.read_status, -EMSGSIZE);
    ck_assert_int_eq(r.close_status, -EMSGSIZE);
    finish(loop, s, &r, peer);
}
END_TEST

static bool track_buffered(void *arg)
{
    struct rec *r = arg;
    if (r->closes > 0)
        return true; /* the stream is gone after its close callback */
    size_t b = gale_stream_read_buffered(r->s);
    if (b > r->max_buffered)
        r->max_buffered = b;
    return r->closes > 0;
}

START_TEST(test_iostream_max_buffer_size_cuts_off_enobufs)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {.s = s};
    size_t cap = 1024 * 1024;
    ck_assert_int_eq(gale_stream_set_max_buffer_size(s, cap), 0);
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_read_until_close(s, on_read, &r), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(gale_stream_fd(s)); /* the child must not keep the stream's end open */
        static char chunk[65536];
        memset(chunk, 'x', sizeof chunk);
        for (int i = 0; i < 64; i++) /* 4 MiB: well past the cap */
            if (test_write_all(peer, chunk, sizeof chunk) < 0)
                break;
        _exit(0);
    }
    ck_assert(test_wait_until(loop, track_buffered, &r, WAIT));
    ck_assert_int_eq(r.reads, 1);
    ck_assert_int_eq(r.read_status, -ENOBUFS);
    ck_assert_uint_le(r.len, cap);
    ck_assert_uint_le(r.max_buffered, cap);
    ck_assert_int_eq(r.close_status, -ENOBUFS);
    close(peer);
    waitpid(pid, NULL, 0);
    finish(loop, s, &r, -1);
}
END_TEST

/* ---- writes ---- */

#define BIG (64u * 1024 * 1024)

static unsigned char pattern_byte(size_t i) { return (unsigned char)(i * 7 + (i >> 13)); }

struct big_rec {
    struct rec r;
    size_t max_pending;
    bool pending_ok;
};

static bool big_written(void *arg)
{
    struct big_rec *b = arg;
    if (b->r.closes > 0)
        return true; /* closed (a peer reset): the stream is gone; the asserts say what failed */
    size_t p = gale_stream_write_pending(b->r.s);
    if (p > b->max_pending)
        b->max_pending = p;
    if (p > BIG)
        b->pending_ok = false;
    return b->r.writes > 0;
}

START_TEST(test_iostream_write_64mib_to_slow_reader)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(gale_stream_fd(s)); /* the child must not keep the stream's end open */
        /* Slow reader: small pieces, a pause every 512 KiB; verifies every byte. */
        static unsigned char buf[8192];
        size_t got = 0;
        int bad = 0;
        while (got < BIG) {
            ssize_t n = recv(peer, buf, sizeof buf, 0);
            if (n <= 0)
                _exit(2);
            for (ssize_t k = 0; k < n; k++)
                if (buf[k] != pattern_byte(got + (size_t)k))
                    bad = 1;
            size_t before = got;
            got += (size_t)n;
            if (got / (512 * 1024) != before / (512 * 1024)) {
                struct timespec ts = {0, 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        char ok = bad ? 'B' : 'K';
        test_write_all(peer, &ok, 1);
        _exit(bad);
    }
    unsigned char *src = malloc(BIG);
    ck_assert_ptr_nonnull(src);
    for (size_t i = 0; i < BIG; i++)
        src[i] = pattern_byte(i);
    struct big_rec b = {.r = {.s = s}, .pending_ok = true};
    gale_stream_set_close_cb(s, on_close, &b.r);
    ck_assert_int_eq(gale_stream_write(s, src, BIG, on_write, &b.r), 0);
    free(src); /* write copied what it queued */
    ck_assert_uint_le(gale_stream_write_pending(s), BIG);
    ck_assert_int_eq(b.r.writes, 0);
    ck_assert(test_wait_until(loop, big_written, &b, 60));
    ck_assert(b.pending_ok);
    ck_assert_int_eq(b.r.write_status, 0);
    ck_assert_uint_eq(gale_stream_write_pending(s), 0);
    ck_assert(!gale_stream_writing(s));
    struct rec r = {0};
    ck_assert_int_eq(gale_stream_read_bytes(s, 1, false, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_read, &r, 30));
    ck_assert_str_eq(r.data, "K");
    test_run_for(loop, 0.01);
    ck_assert_int_eq(b.r.writes, 1);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    finish(loop, s, &r, peer);
}
END_TEST

/* A stream that stops reading stops taking bytes (the sender blocks: TCP pushes back), and once
 * reading resumes every byte arrives, in order, across many pauses. On a uring loop each pause
 * cancels the multishot receive and each resumption arms a new one. */
struct paused_rec {
    struct rec r;
    size_t got;
    bool bad;
};

static void on_piece(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct paused_rec *p = arg;
    (void)s;
    p->r.reads++;
    p->r.read_status = status;
    for (size_t k = 0; k < len; k++)
        if ((unsigned char)data[k] != pattern_byte(p->got + k))
            p->bad = true;
    p->got += len;
}

static bool piece_read(void *arg)
{
    struct paused_rec *p = arg;
    return p->r.reads > 0 || p->r.closes > 0;
}

START_TEST(test_iostream_paused_reader_pushes_back_and_loses_nothing)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(gale_stream_fd(s)); /* the child must not keep the stream's end open */
        static unsigned char chunk[65536];
        for (size_t off = 0; off < BIG; off += sizeof chunk) {
            for (size_t k = 0; k < sizeof chunk; k++)
                chunk[k] = pattern_byte(off + k);
            if (test_write_all(peer, chunk, sizeof chunk) < 0)
                _exit(1);
        }
        _exit(0);
    }
    struct paused_rec p = {.r = {.s = s}};
    gale_stream_set_close_cb(s, on_close, &p.r);
    ck_assert_int_eq(gale_stream_read_bytes(s, 1000, false, on_piece, &p), 0);
    ck_assert(test_wait_until(loop, piece_read, &p, WAIT));
    /* No read pending: the stream takes at most its idle limit (on a uring loop, plus what
     * arrived before the cancellation took effect: bounded by the receive window), then nothing
     * more, though the sender has 64 MiB, far more than the kernel's buffers hold. */
    test_run_for(loop, 0.3);
    size_t held = gale_stream_read_buffered(s);
    test_run_for(loop, 0.2);
    ck_assert_uint_eq(gale_stream_read_buffered(s), held);
    ck_assert_uint_le(held, 8u * 1024 * 1024);
    ck_assert_int_eq(p.r.closes, 0);
    for (unsigned k = 1; p.got < BIG && p.r.closes == 0; k++) {
        size_t piece = 1 + (size_t)k * 7919 % 300000;
        if (piece > BIG - p.got)
            piece = BIG - p.got;
        p.r.reads = 0;
        ck_assert_int_eq(gale_stream_read_bytes(s, piece, false, on_piece, &p), 0);
        ck_assert(test_wait_until(loop, piece_read, &p, WAIT));
        ck_assert_int_eq(p.r.read_status, 0);
        if (k % 16 == 0)
            test_run_for(loop, 0.002); /* a pause with no read pending */
    }
    ck_assert_uint_eq(p.got, BIG);
    ck_assert(!p.bad);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    finish(loop, s, &p.r, peer);
}
END_TEST

static bool unacked_gone(void *arg) { return gale_stream_write_unacked(arg) == 0; }

/* What the kernel holds that the peer has not taken: nothing before a write, some while the peer
 * reads none of 4 MiB, nothing again once it read them all; 0 for a closed stream. */
START_TEST(test_iostream_write_unacked_counts_what_the_peer_has_not_taken)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {.s = s};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_uint_eq(gale_stream_write_unacked(s), 0);
    enum { N = 4 * 1024 * 1024 };
    char *out = calloc(1, N), *in = malloc(65536);
    ck_assert_int_eq(gale_stream_write(s, out, N, NULL, NULL), 0);
    test_run_for(loop, 0.1);
    ck_assert_uint_gt(gale_stream_write_unacked(s), 0);
    for (size_t got = 0; got < N;) {
        ssize_t n = recv(peer, in, 65536, MSG_DONTWAIT);
        if (n > 0)
            got += (size_t)n;
        else
            test_run_for(loop, 0.001);
    }
    ck_assert(test_wait_until(loop, unacked_gone, s, WAIT));
    gale_stream_close(s, 0);
    ck_assert_uint_eq(gale_stream_write_unacked(s), 0);
    ck_assert_uint_eq(gale_stream_write_unacked(NULL), 0);
    free(out);
    free(in);
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_write_callbacks_in_order_from_loop)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec w1 = {0}, w2 = {0}, w3 = {0}, r = {0};
    ck_assert_int_eq(gale_stream_write(s, "abc", 3, on_write, &w1), 0);
    struct iovec iov[2] = {{.iov_base = "de", .iov_len = 2}, {.iov_base = "fg", .iov_len = 2}};
    ck_assert_int_eq(gale_stream_writev(s, iov, 2, on_write, &w2), 0);
    ck_assert_int_eq(gale_stream_write(s, NULL, 0, on_write, &w3), 0);
    ck_assert_int_eq(w1.writes + w2.writes + w3.writes, 0);
    w1.returned = true;
    ck_assert(test_wait_until(loop, has_written, &w3, WAIT));
    ck_assert(w1.returned_seen);
    ck_assert_int_eq(w1.writes, 1);
    ck_assert_int_eq(w2.writes, 1);
    ck_assert_int_eq(w3.writes, 1);
    char buf[8] = {0};
    ck_assert_int_eq(recv(peer, buf, 7, MSG_WAITALL), 7);
    ck_assert_str_eq(buf, "abcdefg");
    finish(loop, s, &r, peer);
}
END_TEST

static int released;
static void on_release(void *p) { released += *(int *)p; }

START_TEST(test_iostream_write_ref_releases_once)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec w = {0}, r = {0};
    int one = 1;
    released = 0;
    static const char msg[] = "zero-copy";
    ck_assert_int_eq(gale_stream_write_ref(s, msg, 9, on_release, &one, on_write, &w), 0);
    ck_assert(test_wait_until(loop, has_written, &w, WAIT));
    ck_assert_int_eq(released, 1);
    char buf[16] = {0};
    ck_assert_int_eq(recv(peer, buf, 9, MSG_WAITALL), 9);
    ck_assert_str_eq(buf, msg);
    ck_assert_int_eq(gale_stream_write_ref(s, NULL, 3, on_release, &one, NULL, NULL), -EINVAL);
    ck_assert_int_eq(released, 2);
    test_run_for(loop, 0.01);
    ck_assert_int_eq(released, 2);
    finish(loop, s, &r, peer);
}
END_TEST

static bool write_failed(void *arg)
{
    struct rec *r = arg;
    return r->closes > 0;
}

START_TEST(test_iostream_write_after_peer_vanished_no_sigpipe)
{
    /* SIGPIPE keeps its default action: without MSG_NOSIGNAL this test process dies. */
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(peer);
    static char chunk[4096];
    int last = 0;
    for (int i = 0; i < 1000 && last == 0 && r.closes == 0; i++) {
        last = gale_stream_write(s, chunk, sizeof chunk, NULL, NULL);
        test_run_for(loop, 0.001);
    }
    ck_assert(test_wait_until(loop, write_failed, &r, WAIT));
    ck_assert(r.close_status == -EPIPE || r.close_status == -ECONNRESET);
    ck_assert(last == 0 || last == -EPIPE || last == -ECONNRESET);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_write_to_closed_peer_is_epipe_no_sigpipe)
{
    /* The peer closes normally; our first write provokes its RST, the next sees EPIPE, which
     * raises SIGPIPE (default action: death) unless the stream sends with MSG_NOSIGNAL. */
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    close(peer);
    static char chunk[512];
    int last = 0;
    /* Once the close callback ran the stream is freed: only `r` may be looked at then. */
    for (int i = 0; i < 100000 && last == 0 && r.closes == 0; i++) {
        last = gale_stream_write(s, chunk, sizeof chunk, NULL, NULL);
        /* A send the kernel (or the fault seam) did not take queues: let the loop retry it. */
        if (last == 0 && gale_stream_writing(s))
            test_run_for(loop, 0.001);
    }
    if (r.closes == 0) {
        ck_assert(gale_stream_closed(s));
        ck_assert_int_eq(gale_stream_write(s, "x", 1, NULL, NULL), -EPIPE);
    }
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    /* The error came back from a write call, or (a queued send failed) as the close reason. */
    if (last == 0 || (last == -EPIPE && r.close_status != -EPIPE))
        last = r.close_status;
    ck_assert(last == -EPIPE || last == -ECONNRESET);
    ck_assert_int_eq(r.close_status, last);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_pending_writes_fail_at_close)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec w = {0}, r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    /* Fill the socket so the next write queues. */
    static char chunk[65536];
    while (!gale_stream_writing(s))
        ck_assert_int_eq(gale_stream_write(s, chunk, sizeof chunk, NULL, NULL), 0);
    ck_assert_int_eq(gale_stream_write(s, "tail", 4, on_write, &w), 0);
    ck_assert_uint_gt(gale_stream_write_pending(s), 0);
    gale_stream_close(s, 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(w.writes, 1);
    ck_assert_int_eq(w.write_status, -ECANCELED);
    ck_assert_int_eq(r.close_status, 0);
    free(w.data);
    finish(loop, s, &r, peer);
}
END_TEST

/* ---- close ---- */

START_TEST(test_iostream_pending_read_gets_reason_before_close_cb)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_read_until(s, "\n", 1, 0, on_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "partial", 7), 0);
    struct buffered_pred bp = {s, 7, &r};
    ck_assert(test_wait_until(loop, buffered_at_least, &bp, WAIT));
    gale_stream_close(s, 0);
    ck_assert_int_eq(r.reads, 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 1);
    ck_assert_int_eq(r.read_status, -ECANCELED);
    ck_assert_str_eq(r.data, "partial");
    ck_assert_int_lt(r.read_order, r.close_order);
    ck_assert_int_eq(r.close_status, 0);
    finish(loop, s, &r, peer);
}
END_TEST

START_TEST(test_iostream_peer_close_while_idle_fires_close_cb)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    test_run_for(loop, 0.005);
    close(peer);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_peer_close_after_unread_data_keeps_it)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(test_write_all(peer, "unrequested", 11), 0);
    close(peer);
    struct buffered_pred bp = {.s = s, .n = 11, .r = &r};
    ck_assert(test_wait_until(loop, buffered_at_least, &bp, WAIT));
    test_run_for(loop, 0.02); /* the FIN is seen: the bytes stay for the owner */
    ck_assert_int_eq(r.closes, 0);
    ck_assert(!gale_stream_closed(s));
    ck_assert_int_eq(gale_stream_read_until_close(s, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 1);
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_str_eq(r.data, "unrequested");
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    ck_assert_int_lt(r.read_order, r.close_order);
    finish(loop, s, &r, -1);
}
END_TEST

/* ---- bytes that arrive with the peer's FIN ---- */

/* A read started from a loop callback, after the one that queued it returned. */
struct later_read {
    gale_stream *s;
    struct rec *r;
    int kind; /* 0: read_until "\n", 1: read_bytes(n), 2: read_bytes(n, partial), 3: read_some */
    size_t n;
    int rc;
};

static size_t take_all(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    on_read(s, status, data, len, arg);
    return len;
}

static void start_read_later(gale_loop *loop, void *arg)
{
    struct later_read *l = arg;
    switch (l->kind) {
    case 0: l->rc = gale_stream_read_until(l->s, "\n", 1, 0, on_read, l->r); break;
    case 1:
    case 2: l->rc = gale_stream_read_bytes(l->s, l->n, l->kind == 2, on_read, l->r); break;
    default: l->rc = gale_stream_read_some(l->s, take_all, l->r); break;
    }
}

struct later_wait {
    struct later_read *l;
    int before;
};

static bool later_read_done(void *arg)
{
    struct later_wait *w = arg;
    return w->l->rc < 0 || (w->l->rc == 0 && w->l->r->reads > w->before);
}

/* Queues the read on the loop, runs until its callback ran; returns the read's start code. */
static int read_from_later_callback(gale_loop *loop, gale_stream *s, struct rec *r, int kind,
                                    size_t n)
{
    struct later_read l = {.s = s, .r = r, .kind = kind, .n = n, .rc = 1};
    struct later_wait w = {.l = &l, .before = r->reads};
    ck_assert_int_eq(gale_loop_add_callback(loop, start_read_later, &l), 0);
    ck_assert(test_wait_until(loop, later_read_done, &w, WAIT));
    return l.rc;
}

/* The peer sent its last bytes and closed; no read was pending. */
static gale_stream *eof_after_on(gale_loop *loop, bool tcp, const char *bytes, struct rec *r)
{
    int peer;
    gale_stream *s = make_pair(loop, tcp, &peer);
    gale_stream_set_close_cb(s, on_close, r);
    ck_assert_int_eq(test_write_all(peer, bytes, strlen(bytes)), 0);
    close(peer);
    struct buffered_pred bp = {.s = s, .n = strlen(bytes), .r = r};
    ck_assert(test_wait_until(loop, buffered_at_least, &bp, WAIT));
    test_run_for(loop, 0.02); /* time for the FIN to be seen */
    ck_assert_int_eq(r->closes, 0);
    return s;
}

static gale_stream *eof_after(gale_loop *loop, const char *bytes, struct rec *r)
{
    return eof_after_on(loop, true, bytes, r);
}

START_TEST(test_iostream_eof_read_until_twice_from_later_callbacks)
{
    gale_loop *loop = new_loop(_i);
    struct rec r = {0};
    gale_stream *s = eof_after(loop, "a\nb\n", &r);
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 0, 0), 0);
    ck_assert_int_eq(r.reads, 1);
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_str_eq(r.data, "a\n");
    test_run_for(loop, 0.02); /* a loop turn between the reads: the stream stays open */
    ck_assert_int_eq(r.closes, 0);
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 0, 0), 0);
    ck_assert_int_eq(r.reads, 2);
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_str_eq(r.data, "b\n");
    ck_assert_int_eq(r.closes, 0);
    /* Nothing left: the third read ends with the peer's close, then the close callback. */
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 0, 0), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 3);
    ck_assert_int_eq(r.read_status, GALE_EEOF);
    ck_assert_uint_eq(r.len, 0);
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    ck_assert_int_lt(r.read_order, r.close_order);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_eof_read_bytes_from_later_callbacks)
{
    gale_loop *loop = new_loop(_i);
    struct rec r = {0};
    gale_stream *s = eof_after(loop, "a\nb\ncd", &r);
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 1, 2), 0);
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_str_eq(r.data, "a\n");
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 2, 100), 0); /* partial: what is left */
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_str_eq(r.data, "b\ncd");
    ck_assert_int_eq(r.closes, 0);
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 2, 1), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 3);
    ck_assert_int_eq(r.read_status, GALE_EEOF);
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    ck_assert_int_eq(r.closes, 1);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_eof_unsatisfiable_read_gets_the_bytes_so_far)
{
    gale_loop *loop = new_loop(_i);
    struct rec r = {0};
    gale_stream *s = eof_after(loop, "a\nrest", &r);
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 0, 0), 0);
    ck_assert_str_eq(r.data, "a\n");
    /* Six bytes wanted, four left and no more coming. */
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 1, 6), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 2);
    ck_assert_int_eq(r.read_status, GALE_EEOF);
    ck_assert_str_eq(r.data, "rest");
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_eof_read_some_gets_the_rest_then_eof)
{
    gale_loop *loop = new_loop(_i);
    struct rec r = {0};
    gale_stream *s = eof_after(loop, "last words", &r);
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 3, 0), 0);
    ck_assert_int_eq(r.read_status, 0);
    ck_assert_str_eq(r.data, "last words");
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 3, 0), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 2);
    ck_assert_int_eq(r.read_status, GALE_EEOF);
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_eof_unix_hangup_keeps_bytes_for_later_reads)
{
    /* A unix socket whose peer closed reports a hang-up on every poll: the stream must keep the
     * buffered bytes for the owner and stop watching instead of closing or spinning. */
    gale_loop *loop = new_loop(_i);
    struct rec r = {0};
    gale_stream *s = eof_after_on(loop, false, "one\ntwo\n", &r);
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 0, 0), 0);
    ck_assert_str_eq(r.data, "one\n");
    test_run_for(loop, 0.02);
    ck_assert_int_eq(r.closes, 0);
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 0, 0), 0);
    ck_assert_str_eq(r.data, "two\n");
    ck_assert_int_eq(read_from_later_callback(loop, s, &r, 0, 0), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 3);
    ck_assert_int_eq(r.read_status, GALE_EEOF);
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_eof_with_empty_buffer_closes_at_once)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(test_write_all(peer, "x", 1), 0);
    ck_assert_int_eq(gale_stream_read_bytes(s, 1, false, on_read, &r), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_str_eq(r.data, "x");
    close(peer); /* nothing buffered, no read pending: the close is reported without a read */
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.close_status, GALE_EEOF);
    ck_assert_int_eq(r.reads, 1);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_peer_reset_closes_econnreset)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_read_bytes(s, 10, false, on_read, &r), 0);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(peer);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.close_status, -ECONNRESET);
    ck_assert_int_eq(r.reads, 1);
    ck_assert_int_eq(r.read_status, -ECONNRESET);
    ck_assert_int_lt(r.read_order, r.close_order);
    finish(loop, s, &r, -1);
}
END_TEST

static void close_in_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    on_read(s, status, data, len, arg);
    gale_stream_close(s, -EIO);
    gale_stream_close(s, 0);
    /* Still valid until the close callback: */
    ck_assert(gale_stream_closed(s));
    ck_assert_int_eq(gale_stream_read_bytes(s, 1, false, on_read, arg), -EPIPE);
}

START_TEST(test_iostream_close_inside_read_cb)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_read_until(s, "\n", 1, 0, close_in_read, &r), 0);
    ck_assert_int_eq(test_write_all(peer, "line\nmore\n", 10), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.reads, 1);
    ck_assert_str_eq(r.data, "line\n");
    ck_assert_int_eq(r.close_status, -EIO);
    finish(loop, s, &r, peer);
}
END_TEST

static void close_in_write(gale_stream *s, int status, void *arg)
{
    on_write(s, status, arg);
    gale_stream_close(s, 0);
}

START_TEST(test_iostream_close_inside_write_cb)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_stream_write(s, "x", 1, close_in_write, &r), 0);
    ck_assert_int_eq(gale_stream_write(s, "y", 1, on_write, &r), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.writes, 2); /* the second was handed over too, or failed: once */
    ck_assert_int_eq(r.closes, 1);
    finish(loop, s, &r, peer);
}
END_TEST

static void close_in_close(gale_stream *s, int status, void *arg)
{
    on_close(s, status, arg);
    gale_stream_close(s, 0);
    ck_assert_int_eq(gale_stream_write(s, "x", 1, NULL, NULL), -EPIPE);
}

START_TEST(test_iostream_close_inside_close_cb_is_harmless)
{
    gale_loop *loop = new_loop(0);
    int peer;
    gale_stream *s = make_pair(loop, false, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, close_in_close, &r);
    gale_stream_close(s, 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    finish(loop, s, &r, peer);
}
END_TEST

/* ---- connect ---- */

static void on_connect(gale_stream *s, int status, void *arg)
{
    struct rec *r = arg;
    r->connects++;
    r->connect_status = status;
    r->returned_seen = r->returned;
}

static bool has_connected(void *arg) { return ((struct rec *)arg)->connects > 0; }

START_TEST(test_iostream_connect_refused)
{
    gale_loop *loop = new_loop(_i);
    int port = test_free_port();
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct rec r = {0};
    gale_stream *s = NULL;
    ck_assert_int_eq(
        gale_stream_connect(loop, (struct sockaddr *)&sin, sizeof sin, on_connect, &r, &s), 0);
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.connects, 1);
    ck_assert_int_eq(r.connect_status, -ECONNREFUSED);
    ck_assert_int_eq(r.close_status, -ECONNREFUSED);
    finish(loop, s, &r, -1);
}
END_TEST

START_TEST(test_iostream_connect_then_echo)
{
    gale_loop *loop = new_loop(_i);
    int port;
    int lfd = test_listen_tcp(&port);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct rec r = {0};
    gale_stream *s = NULL;
    ck_assert_int_eq(
        gale_stream_connect(loop, (struct sockaddr *)&sin, sizeof sin, on_connect, &r, &s), 0);
    /* Writes and reads may be issued before the connection is up. */
    ck_assert_int_eq(gale_stream_write(s, "ping", 4, NULL, NULL), 0);
    ck_assert_int_eq(gale_stream_read_bytes(s, 4, false, on_read, &r), 0);
    r.returned = true;
    int peer = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ck_assert_int_ge(peer, 0);
    test_set_timeouts(peer, WAIT);
    ck_assert(test_wait_until(loop, has_connected, &r, WAIT));
    ck_assert_int_eq(r.connect_status, 0);
    ck_assert(r.returned_seen);
    char buf[5] = {0};
    ck_assert_int_eq(recv(peer, buf, 4, MSG_WAITALL), 4);
    ck_assert_str_eq(buf, "ping");
    ck_assert_int_eq(test_write_all(peer, "pong", 4), 0);
    ck_assert(test_wait_until(loop, has_read, &r, WAIT));
    ck_assert_str_eq(r.data, "pong");
    ck_assert_int_eq(gale_stream_set_nodelay(s, true), 0);
    struct sockaddr_storage ss;
    socklen_t sl;
    ck_assert_int_eq(gale_stream_peer_addr(s, &ss, &sl), 0);
    ck_assert_int_eq(ntohs(((struct sockaddr_in *)&ss)->sin_port), port);
    close(lfd);
    finish(loop, s, &r, peer);
}
END_TEST

/* A peer that sends its request and shuts down its write side (SHUT_WR) still reads: a reply
 * larger than the socket buffers must reach it whole, then the stream closes with GALE_EEOF. */
struct halfclose {
    struct rec r;
    int peer;
    size_t got;
    bool bad, eof;
};

static bool halfclose_drained(void *arg)
{
    struct halfclose *h = arg;
    static unsigned char buf[65536];
    for (;;) {
        ssize_t n = recv(h->peer, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            for (ssize_t k = 0; k < n; k++)
                if (buf[k] != pattern_byte(h->got + (size_t)k))
                    h->bad = true;
            h->got += (size_t)n;
            continue;
        }
        if (n == 0)
            h->eof = true;
        break;
    }
    return h->eof && h->r.closes > 0;
}

START_TEST(test_iostream_peer_half_close_still_gets_queued_reply)
{
    gale_loop *loop = new_loop(_i);
    int peer;
    gale_stream *s = make_pair(loop, true, &peer);
    struct halfclose h = {.peer = peer};
    gale_stream_set_close_cb(s, on_close, &h.r);
    const size_t size = 8u * 1024 * 1024;
    unsigned char *src = malloc(size);
    ck_assert_ptr_nonnull(src);
    for (size_t i = 0; i < size; i++)
        src[i] = pattern_byte(i);
    ck_assert_int_eq(gale_stream_write(s, src, size, on_write, &h.r), 0);
    free(src);
    ck_assert_uint_gt(gale_stream_write_pending(s), 0); /* more than the kernel takes at once */
    ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
    test_run_for(loop, 0.05); /* the stream sees the FIN while its queue is full */
    ck_assert(test_wait_until(loop, halfclose_drained, &h, 30));
    ck_assert_uint_eq(h.got, size);
    ck_assert(!h.bad);
    ck_assert_int_eq(h.r.writes, 1);
    ck_assert_int_eq(h.r.write_status, 0);
    ck_assert_int_eq(h.r.closes, 1);
    ck_assert_int_eq(h.r.close_reason, GALE_EEOF);
    ck_assert_int_lt(h.r.write_order, h.r.close_order);
    finish(loop, s, &h.r, peer);
}
END_TEST

static Suite *iostream_suite(void)
{
    Suite *s = suite_create("iostream");
    TCase *reads = tcase_create("reads");
    tcase_set_timeout(reads, 60);
    tcase_add_loop_test(reads, test_iostream_read_until_every_two_way_split, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_until_one_byte_at_a_time, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_until_long_delimiter_and_several_lines, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_until_regex_with_nul_bytes, 0, 3);
    tcase_add_test(reads, test_iostream_read_until_regex_bad_pattern_is_einval);
    tcase_add_loop_test(reads, test_iostream_read_until_regex_max_bytes, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_bytes_exact_and_partial, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_bytes_large_exact, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_bytes_zero_completes_from_loop, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_until_close_gets_all_data, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_after_partial_read_then_until_close, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_stream_delivers_chunks_then_done, 0, 3);
    tcase_add_loop_test(reads, test_iostream_read_some_leaves_unconsumed_bytes, 0, 3);
    tcase_add_loop_test(reads, test_iostream_buffered_read_completes_from_loop_not_call, 0, 3);
    tcase_add_test(reads, test_iostream_second_pending_read_is_ebusy);
    tcase_add_test(reads, test_iostream_bad_arguments);
    tcase_add_test(reads, test_iostream_closed_stream_refuses_operations);
    suite_add_tcase(s, reads);

    TCase *limits = tcase_create("limits");
    tcase_set_timeout(limits, 60);
    tcase_add_loop_test(limits, test_iostream_max_bytes_inline_closes_emsgsize, 0, 3);
    tcase_add_loop_test(limits, test_iostream_max_bytes_arriving_closes_emsgsize, 0, 3);
    tcase_add_loop_test(limits, test_iostream_max_buffer_size_cuts_off_enobufs, 0, 3);
    suite_add_tcase(s, limits);

    TCase *writes = tcase_create("writes");
    tcase_set_timeout(writes, 120);
    tcase_add_loop_test(writes, test_iostream_write_64mib_to_slow_reader, 0, 3);
    tcase_add_loop_test(writes, test_iostream_paused_reader_pushes_back_and_loses_nothing, 0, 3);
    tcase_add_loop_test(writes, test_iostream_write_callbacks_in_order_from_loop, 0, 3);
    tcase_add_loop_test(writes, test_iostream_write_unacked_counts_what_the_peer_has_not_taken, 0,
                        3);
    tcase_add_loop_test(writes, test_iostream_write_ref_releases_once, 0, 3);
    tcase_add_loop_test(writes, test_iostream_write_after_peer_vanished_no_sigpipe, 0, 3);
    tcase_add_loop_test(writes, test_iostream_write_to_closed_peer_is_epipe_no_sigpipe, 0, 3);
    tcase_add_loop_test(writes, test_iostream_pending_writes_fail_at_close, 0, 3);
    suite_add_tcase(s, writes);

    TCase *closing = tcase_create("close");
    tcase_set_timeout(closing, 60);
    tcase_add_loop_test(closing, test_iostream_pending_read_gets_reason_before_close_cb, 0, 3);
    tcase_add_loop_test(closing, test_iostream_peer_close_while_idle_fires_close_cb, 0, 3);
    tcase_add_loop_test(closing, test_iostream_peer_close_after_unread_data_keeps_it, 0, 3);
    tcase_add_loop_test(closing, test_iostream_peer_reset_closes_econnreset, 0, 3);
    tcase_add_loop_test(closing, test_iostream_eof_read_until_twice_from_later_callbacks, 0, 3);
    tcase_add_loop_test(closing, test_iostream_eof_read_bytes_from_later_callbacks, 0, 3);
    tcase_add_loop_test(closing, test_iostream_eof_unsatisfiable_read_gets_the_bytes_so_far, 0, 3);
    tcase_add_loop_test(closing, test_iostream_eof_read_some_gets_the_rest_then_eof, 0, 3);
    tcase_add_loop_test(closing, test_iostream_eof_with_empty_buffer_closes_at_once, 0, 3);
    tcase_add_loop_test(closing, test_iostream_eof_unix_hangup_keeps_bytes_for_later_reads, 0, 3);
    tcase_add_loop_test(closing, test_iostream_peer_half_close_still_gets_queued_reply, 0, 3);
    tcase_add_loop_test(closing, test_iostream_close_inside_read_cb, 0, 3);
    tcase_add_loop_test(closing, test_iostream_close_inside_write_cb, 0, 3);
    tcase_add_test(closing, test_iostream_close_inside_close_cb_is_harmless);
    tcase_add_loop_test(closing, test_iostream_connect_refused, 0, 3);
    tcase_add_loop_test(closing, test_iostream_connect_then_echo, 0, 3);
    suite_add_tcase(s, closing);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(iostream_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

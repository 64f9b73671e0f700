/* Fault-injection suite: the plan's syntax and determinism, then what each fault does to a stream
 * and to the acceptor on real sockets. Transparent faults (short counts, EAGAIN, EINTR, EMFILE on
 * accept) must leave every byte in place; ECONNRESET and ENOMEM end one connection cleanly (the
 * error as close reason, callbacks once, descriptor closed) and leave the others alone.
 *
 * Built normally (no GALE_FAULT_INJECTION) the suite only pins that the seam is absent. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/fault.h"
#include "core/fault_internal.h"
#include "core/loop.h"
#include "net/iostream.h"
#include "net/tcpserver.h"
#include "testutil.h"

#define WAIT 10.0

#ifndef GALE_FAULT_INJECTION

START_TEST(test_fault_seam_absent_in_normal_builds)
{
    ck_assert(!gale_fault_enabled());
    ck_assert_int_eq(gale_fault_configure("recv:eagain=0.5"), -ENOTSUP);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_RECV, 1, GALE_FAULT_EAGAIN), -ENOTSUP);
    ck_assert_int_eq(gale_fault_seed(1), -ENOTSUP);
    ck_assert_uint_eq(gale_fault_calls(GALE_FAULT_RECV), 0);
}
END_TEST

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc = tcase_create("absent");
    tcase_add_test(tc, test_fault_seam_absent_in_normal_builds);
    suite_add_tcase(s, tc);
    return s;
}

#else

/* ---- helpers ---- */

struct rec {
    int reads, read_status;
    size_t read_len;
    int closes, close_reason;
    int writes, write_status;
    char *data;
    size_t len;
};

static void on_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct rec *r = arg;
    r->reads++;
    r->read_status = status;
    r->read_len = len;
}

static void on_close(gale_stream *s, int status, void *arg)
{
    struct rec *r = arg;
    r->closes++;
    r->close_reason = status;
}

static void on_write(gale_stream *s, int status, void *arg)
{
    struct rec *r = arg;
    r->writes++;
    r->write_status = status;
}

static bool has_closed(void *arg) { return ((struct rec *)arg)->closes > 0; }
static bool has_read(void *arg) { return ((struct rec *)arg)->reads > 0; }

/* The loop backend of the tests that run on both (loop tests: _i 1 is io_uring, where the plan
 * reaches the operations; a machine without io_uring runs that pass on epoll). */
static gale_backend test_backend = GALE_BACKEND_EPOLL;

static void use_backend(int i) { test_backend = i ? GALE_BACKEND_URING : GALE_BACKEND_EPOLL; }

static gale_loop *new_loop(void)
{
    gale_loop *loop = NULL;
    ck_assert_int_eq(gale_loop_new(test_backend, &loop), 0);
    test_backend = GALE_BACKEND_EPOLL;
    return loop;
}

/* A stream on one end of a TCP connection on 127.0.0.1; `*peer` is the blocking other end. */
static gale_stream *make_pair(gale_loop *loop, int *peer)
{
    int port;
    int lfd = test_listen_tcp(&port);
    ck_assert_int_ge(lfd, 0);
    int b = test_connect_tcp(port);
    ck_assert_int_ge(b, 0);
    int a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    ck_assert_int_ge(a, 0);
    close(lfd);
    test_set_timeouts(b, WAIT);
    gale_stream *s = NULL;
    ck_assert_int_eq(gale_stream_new(loop, a, &s), 0);
    *peer = b;
    return s;
}

static bool fd_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

static void setup(void)
{
    gale_fault_reset();
    gale_fault_seed(1);
}

/* ---- the plan ---- */

START_TEST(test_fault_spec_syntax_accepts_and_rejects)
{
    ck_assert(gale_fault_enabled());
    ck_assert_int_eq(gale_fault_configure("recv:eagain=0.1,short=0.2;send:eintr=0.05,short=0.3;"
                                          "accept:emfile=0.01"),
                     0);
    ck_assert_int_eq(gale_fault_configure("recv:econnreset@3;alloc:enomem@1"), 0);
    ck_assert_int_eq(gale_fault_configure(""), 0);
    ck_assert_int_eq(gale_fault_configure(NULL), 0);
    const char *bad[] = {
        "recv",             /* no colon */
        "read:eagain=0.1",  /* unknown call */
        "recv:boom=0.1",    /* unknown fault */
        "accept:short=0.1", /* accept has no short count */
        "recv:emfile=0.1",  /* only accept has EMFILE */
        "alloc:eagain=0.1", /* alloc only fails with ENOMEM */
        "recv:eagain=1.5",  /* outside [0, 1] */
        "recv:eagain=-0.1",
        "recv:eagain=0.6,eintr=0.6", /* sums past 1 */
        "recv:eagain=",
        "recv:eagain=0.1x",
        "recv:econnreset@0", /* the 0th call does not exist */
        "recv:econnreset@-1",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(gale_fault_configure(bad[i]) == -EINVAL, "accepted \"%s\"", bad[i]);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_ACCEPT, 1, GALE_FAULT_SHORT), -EINVAL);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_RECV, 0, GALE_FAULT_EAGAIN), -EINVAL);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_NCALLS, 1, GALE_FAULT_EAGAIN), -EINVAL);
}
END_TEST

START_TEST(test_fault_same_seed_same_faults)
{
    bool first[500];
    ck_assert_int_eq(gale_fault_configure("alloc:enomem=0.3"), 0);
    gale_fault_seed(42);
    int n = 0;
    for (int i = 0; i < 500; i++)
        n += (first[i] = gale__fault_alloc());
    ck_assert_int_gt(n, 100); /* about 150 expected */
    ck_assert_int_lt(n, 200);
    ck_assert_uint_eq(gale_fault_injected(GALE_FAULT_ALLOC, GALE_FAULT_ENOMEM), (unsigned)n);
    ck_assert_uint_eq(gale_fault_calls(GALE_FAULT_ALLOC), 500);
    gale_fault_seed(42);
    for (int i = 0; i < 500; i++)
        ck_assert_int_eq(gale__fault_alloc(), first[i]);
    gale_fault_seed(43);
    int same = 0;
    for (int i = 0; i < 500; i++)
        same += gale__fault_alloc() == first[i];
    ck_assert_int_lt(same, 500);
}
END_TEST

START_TEST(test_fault_script_hits_exactly_the_nth_call)
{
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_ALLOC, 3, GALE_FAULT_ENOMEM), 0);
    ck_assert(!gale__fault_alloc());
    ck_assert(!gale__fault_alloc());
    ck_assert(gale__fault_alloc());
    ck_assert(!gale__fault_alloc());
    ck_assert_uint_eq(gale_fault_injected(GALE_FAULT_ALLOC, GALE_FAULT_NONE), 1);
    /* The environment's syntax too, counted from the configure call. */
    ck_assert_int_eq(gale_fault_configure("alloc:enomem@2"), 0);
    ck_assert(!gale__fault_alloc());
    ck_assert(gale__fault_alloc());
    ck_assert(!gale__fault_alloc());
}
END_TEST

/* ---- transparent faults on streams ---- */

#define BIG (1024 * 1024)
#define PIECE 4096

static unsigned char pattern_byte(size_t i) { return (unsigned char)(i * 13 + (i >> 11)); }

struct echo {
    struct rec r;
    gale_stream *s;
    size_t got;
    bool bad;
    bool done;
};

static void echo_chunk(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct echo *e = arg;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)data[i] != pattern_byte(e->got + i))
            e->bad = true;
    e->got += len;
}

static void echo_done(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct echo *e = arg;
    e->r.read_status = status;
    e->done = true;
}

static bool echo_finished(void *arg)
{
    struct echo *e = arg;
    return e->done && e->r.writes == BIG / PIECE;
}

/* One stream writes 1 MiB to itself through a forked peer that echoes it back; the stream reads
 * it with read_stream. Every recv and send may be cut short, say EAGAIN or EINTR (on io_uring:
 * every receive and send operation, before its submission). */
START_TEST(test_fault_transparent_faults_keep_every_byte)
{
    use_backend(_i);
    ck_assert_int_eq(gale_fault_configure("recv:short=0.4,eagain=0.2,eintr=0.2;"
                                          "send:short=0.4,eagain=0.2,eintr=0.2"),
                     0);
    gale_loop *loop = new_loop();
    int peer;
    gale_stream *s = make_pair(loop, &peer);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(gale_stream_fd(s));
        static char buf[65536];
        size_t total = 0;
        while (total < BIG) {
            ssize_t n = recv(peer, buf, sizeof buf, 0);
            if (n <= 0 || test_write_all(peer, buf, (size_t)n) != 0)
                _exit(2);
            total += (size_t)n;
        }
        _exit(0);
    }
    unsigned char *src = malloc(BIG);
    ck_assert_ptr_nonnull(src);
    for (size_t i = 0; i < BIG; i++)
        src[i] = pattern_byte(i);
    struct echo e = {.s = s};
    gale_stream_set_close_cb(s, on_close, &e.r);
    ck_assert_int_eq(gale_stream_read_stream(s, BIG, echo_chunk, echo_done, &e), 0);
    /* Many writes, so that many sends go through the seam. */
    for (size_t off = 0; off < BIG; off += PIECE)
        ck_assert_int_eq(gale_stream_write(s, src + off, PIECE, on_write, &e.r), 0);
    free(src);
    ck_assert(test_wait_until(loop, echo_finished, &e, 30));
    ck_assert_int_eq(e.r.read_status, 0);
    ck_assert_uint_eq(e.got, BIG);
    ck_assert(!e.bad);
    ck_assert_int_eq(e.r.writes, BIG / PIECE);
    ck_assert_int_eq(e.r.write_status, 0);
    ck_assert_int_eq(e.r.closes, 0);
    /* The faults really happened, of every kind asked for. */
    for (int call = GALE_FAULT_RECV; call <= GALE_FAULT_SEND; call++)
        for (int k = GALE_FAULT_SHORT; k <= GALE_FAULT_EINTR; k++)
            ck_assert_msg(gale_fault_injected(call, k) > 0, "call %d fault %d never injected", call,
                          k);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    gale_stream_close(s, 0);
    ck_assert(test_wait_until(loop, has_closed, &e.r, WAIT));
    close(peer);
    gale_loop_free(loop);
}
END_TEST

/* ---- faults that end one connection ---- */

/* `err` on the next recv: the pending read and the close callback get it, once each; the fd is
 * closed; a second connection on the same loop carries on. */
static void recv_error_ends_one_connection(gale_fault_kind kind, int err)
{
    gale_loop *loop = new_loop();
    int pa, pb;
    gale_stream *a = make_pair(loop, &pa);
    gale_stream *b = make_pair(loop, &pb);
    int afd = gale_stream_fd(a);
    struct rec ra = {0}, rb = {0};
    gale_stream_set_close_cb(a, on_close, &ra);
    gale_stream_set_close_cb(b, on_close, &rb);
    ck_assert_int_eq(gale_stream_read_bytes(a, 4, false, on_read, &ra), 0);
    ck_assert_int_eq(gale_stream_read_bytes(b, 4, false, on_read, &rb), 0);
    test_run_for(loop, 0.01); /* nothing readable yet: no recv made */
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_RECV, 1, kind), 0);
    ck_assert_int_eq(test_write_all(pa, "ping", 4), 0); /* only a is readable */
    ck_assert(test_wait_until(loop, has_closed, &ra, WAIT));
    ck_assert_int_eq(ra.reads, 1);
    ck_assert_int_eq(ra.read_status, err);
    ck_assert_int_eq(ra.closes, 1);
    ck_assert_int_eq(ra.close_reason, err);
    ck_assert(!fd_open(afd));
    ck_assert_uint_eq(gale_fault_injected(GALE_FAULT_RECV, kind), 1);
    /* The peer sees the connection end. */
    char c;
    ck_assert_int_le(recv(pa, &c, 1, 0), 0);
    /* b is untouched. */
    ck_assert_int_eq(test_write_all(pb, "pong", 4), 0);
    ck_assert(test_wait_until(loop, has_read, &rb, WAIT));
    ck_assert_int_eq(rb.read_status, 0);
    ck_assert_uint_eq(rb.read_len, 4);
    ck_assert_int_eq(rb.closes, 0);
    test_run_for(loop, 0.01);
    ck_assert_int_eq(ra.closes, 1);
    gale_stream_close(b, 0);
    ck_assert(test_wait_until(loop, has_closed, &rb, WAIT));
    close(pa);
    close(pb);
    gale_loop_free(loop);
}

START_TEST(test_fault_recv_econnreset_closes_that_stream_only)
{
    recv_error_ends_one_connection(GALE_FAULT_ECONNRESET, -ECONNRESET);
}
END_TEST

START_TEST(test_fault_recv_enomem_closes_that_stream_only)
{
    recv_error_ends_one_connection(GALE_FAULT_ENOMEM, -ENOMEM);
}
END_TEST

START_TEST(test_fault_send_econnreset_fails_write_and_closes)
{
    gale_loop *loop = new_loop();
    int peer;
    gale_stream *s = make_pair(loop, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_SEND, 1, GALE_FAULT_ECONNRESET), 0);
    /* The immediate send fails: the error comes back from the call, no callback. */
    ck_assert_int_eq(gale_stream_write(s, "hello", 5, on_write, &r), -ECONNRESET);
    ck_assert(gale_stream_closed(s));
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.writes, 0);
    ck_assert_int_eq(r.closes, 1);
    ck_assert_int_eq(r.close_reason, -ECONNRESET);
    close(peer);
    gale_loop_free(loop);
}
END_TEST

/* A queued write hit by ECONNRESET when the socket becomes writable: its callback gets the error,
 * then the close callback. */
START_TEST(test_fault_send_econnreset_on_queued_write)
{
    gale_loop *loop = new_loop();
    int peer;
    gale_stream *s = make_pair(loop, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_SEND, 1, GALE_FAULT_EAGAIN), 0);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_SEND, 2, GALE_FAULT_ECONNRESET), 0);
    ck_assert_int_eq(gale_stream_write(s, "hello", 5, on_write, &r), 0);
    ck_assert_uint_eq(gale_stream_write_pending(s), 5);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.writes, 1);
    ck_assert_int_eq(r.write_status, -ECONNRESET);
    ck_assert_int_eq(r.closes, 1);
    ck_assert_int_eq(r.close_reason, -ECONNRESET);
    close(peer);
    gale_loop_free(loop);
}
END_TEST

/* Allocation failures: a write that must queue fails with -ENOMEM before sending anything (the
 * stream stays usable); a read buffer that cannot grow ends that stream with -ENOMEM. */
START_TEST(test_fault_alloc_failure_on_write_is_enomem_and_stream_survives)
{
    gale_loop *loop = new_loop();
    int peer;
    gale_stream *s = make_pair(loop, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_ALLOC, 1, GALE_FAULT_ENOMEM), 0);
    ck_assert_int_eq(gale_stream_write(s, "lost", 4, on_write, &r), -ENOMEM);
    ck_assert(!gale_stream_closed(s));
    ck_assert_int_eq(gale_stream_write(s, "kept", 4, on_write, &r), 0);
    char buf[8] = {0};
    ssize_t n = recv(peer, buf, sizeof buf, 0);
    ck_assert_int_eq(n, 4);
    ck_assert_str_eq(buf, "kept");
    test_run_for(loop, 0.01);
    ck_assert_int_eq(r.writes, 1);
    ck_assert_int_eq(r.write_status, 0);
    ck_assert_int_eq(r.closes, 0);
    gale_stream_close(s, 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    close(peer);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_fault_alloc_failure_growing_read_buffer_closes_enomem)
{
    gale_loop *loop = new_loop();
    int peer;
    gale_stream *s = make_pair(loop, &peer);
    struct rec r = {0};
    gale_stream_set_close_cb(s, on_close, &r);
    /* Bytes no read wants yet are kept in the stream's buffer: make that allocation fail. */
    ck_assert_int_eq(gale_fault_configure("alloc:enomem=1"), 0);
    ck_assert_int_eq(test_write_all(peer, "unread bytes", 12), 0);
    ck_assert(test_wait_until(loop, has_closed, &r, WAIT));
    ck_assert_int_eq(r.close_reason, -ENOMEM);
    ck_assert_int_eq(r.closes, 1);
    char c;
    ck_assert_int_le(recv(peer, &c, 1, 0), 0);
    close(peer);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_fault_stream_new_enomem_leaves_fd_open)
{
    gale_loop *loop = new_loop();
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_ALLOC, 1, GALE_FAULT_ENOMEM), 0);
    gale_stream *s = NULL;
    ck_assert_int_eq(gale_stream_new(loop, sv[0], &s), -ENOMEM);
    ck_assert(fd_open(sv[0]));
    close(sv[0]);
    close(sv[1]);
    gale_loop_free(loop);
}
END_TEST

/* ---- the acceptor ---- */

struct srv_rec {
    int accepted;
    gale_stream *streams[8];
};

static void on_accept(gale_server *srv, gale_stream *s, const struct sockaddr *peer, socklen_t len,
                      void *arg)
{
    struct srv_rec *a = arg;
    if (a->accepted < 8)
        a->streams[a->accepted] = s;
    a->accepted++;
    gale_stream_write(s, "hi", 2, NULL, NULL);
}

static bool accepted_one(void *arg) { return ((struct srv_rec *)arg)->accepted >= 1; }

static bool alloc_failed(void *arg)
{
    return gale_fault_injected(GALE_FAULT_ALLOC, GALE_FAULT_ENOMEM) >= 1;
}

/* Accept faults that must not lose the client: it is accepted on a later try and answered. */
static void accept_fault_is_retried(gale_fault_kind kind)
{
    gale_loop *loop = new_loop();
    gale_server *srv;
    struct srv_rec a = {0};
    ck_assert_int_eq(gale_server_new(loop, on_accept, &a, &srv), 0);
    ck_assert_int_eq(gale_server_listen(srv, 0, "127.0.0.1"), 0);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_ACCEPT, 1, kind), 0);
    int c = test_connect_tcp(gale_server_port(srv));
    ck_assert_int_ge(c, 0);
    test_set_timeouts(c, WAIT);
    ck_assert(test_wait_until(loop, accepted_one, &a, WAIT));
    ck_assert_int_eq(a.accepted, 1);
    ck_assert_uint_eq(gale_fault_injected(GALE_FAULT_ACCEPT, kind), 1);
    char buf[2];
    ck_assert_int_eq(recv(c, buf, 2, MSG_WAITALL), 2);
    ck_assert_int_eq(memcmp(buf, "hi", 2), 0);
    ck_assert_uint_eq(gale_server_connections(srv), 1);
    gale_stream_close(a.streams[0], 0);
    test_run_for(loop, 0.01);
    ck_assert_uint_eq(gale_server_connections(srv), 0);
    gale_server_free(srv);
    close(c);
    gale_loop_free(loop);
}

START_TEST(test_fault_accept_emfile_pauses_and_keeps_the_client)
{
    use_backend(_i);
    accept_fault_is_retried(GALE_FAULT_EMFILE);
}
END_TEST

START_TEST(test_fault_accept_enomem_pauses_and_keeps_the_client)
{
    accept_fault_is_retried(GALE_FAULT_ENOMEM);
}
END_TEST

START_TEST(test_fault_accept_eintr_and_eagain_keep_the_client)
{
    use_backend(_i);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_ACCEPT, 2, GALE_FAULT_EAGAIN), 0);
    accept_fault_is_retried(GALE_FAULT_EINTR);
}
END_TEST

/* EMFILE with no memory for the retry timer: the acceptor must not stay paused with nothing to
 * resume it; it watches the socket again and the client is still served. */
START_TEST(test_fault_accept_emfile_without_retry_timer_keeps_accepting)
{
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_ALLOC, 1, GALE_FAULT_ENOMEM), 0);
    accept_fault_is_retried(GALE_FAULT_EMFILE);
    ck_assert_uint_eq(gale_fault_injected(GALE_FAULT_ALLOC, GALE_FAULT_ENOMEM), 1);
}
END_TEST

/* A connection whose stream cannot be allocated is closed (the client sees the end at once) and
 * the next client is served. */
START_TEST(test_fault_accept_stream_enomem_drops_one_serves_next)
{
    gale_loop *loop = new_loop();
    gale_server *srv;
    struct srv_rec a = {0};
    ck_assert_int_eq(gale_server_new(loop, on_accept, &a, &srv), 0);
    ck_assert_int_eq(gale_server_listen(srv, 0, "127.0.0.1"), 0);
    ck_assert_int_eq(gale_fault_script(GALE_FAULT_ALLOC, 1, GALE_FAULT_ENOMEM), 0);
    int c1 = test_connect_tcp(gale_server_port(srv));
    ck_assert_int_ge(c1, 0);
    test_set_timeouts(c1, WAIT);
    ck_assert(test_wait_until(loop, alloc_failed, NULL, WAIT));
    char buf[2];
    ck_assert_int_eq(recv(c1, buf, 2, 0), 0); /* closed without a byte */
    ck_assert_int_eq(a.accepted, 0);
    ck_assert_uint_eq(gale_server_connections(srv), 0);
    int c2 = test_connect_tcp(gale_server_port(srv));
    ck_assert_int_ge(c2, 0);
    test_set_timeouts(c2, WAIT);
    ck_assert(test_wait_until(loop, accepted_one, &a, WAIT));
    ck_assert_int_eq(recv(c2, buf, 2, MSG_WAITALL), 2);
    gale_stream_close(a.streams[0], 0);
    test_run_for(loop, 0.01);
    gale_server_free(srv);
    close(c1);
    close(c2);
    gale_loop_free(loop);
}
END_TEST

static Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *plan = tcase_create("plan");
    tcase_add_checked_fixture(plan, setup, NULL);
    tcase_set_timeout(plan, 10);
    tcase_add_test(plan, test_fault_spec_syntax_accepts_and_rejects);
    tcase_add_test(plan, test_fault_same_seed_same_faults);
    tcase_add_test(plan, test_fault_script_hits_exactly_the_nth_call);
    suite_add_tcase(s, plan);

    TCase *streams = tcase_create("streams");
    tcase_add_checked_fixture(streams, setup, NULL);
    tcase_set_timeout(streams, 60);
    tcase_add_loop_test(streams, test_fault_transparent_faults_keep_every_byte, 0, 2);
    tcase_add_test(streams, test_fault_recv_econnreset_closes_that_stream_only);
    tcase_add_test(streams, test_fault_recv_enomem_closes_that_stream_only);
    tcase_add_test(streams, test_fault_send_econnreset_fails_write_and_closes);
    tcase_add_test(streams, test_fault_send_econnreset_on_queued_write);
    tcase_add_test(streams, test_fault_alloc_failure_on_write_is_enomem_and_stream_survives);
    tcase_add_test(streams, test_fault_alloc_failure_growing_read_buffer_closes_enomem);
    tcase_add_test(streams, test_fault_stream_new_enomem_leaves_fd_open);
    suite_add_tcase(s, streams);

    TCase *acc = tcase_create("accept");
    tcase_add_checked_fixture(acc, setup, NULL);
    tcase_set_timeout(acc, 30);
    tcase_add_loop_test(acc, test_fault_accept_emfile_pauses_and_keeps_the_client, 0, 2);
    tcase_add_test(acc, test_fault_accept_enomem_pauses_and_keeps_the_client);
    tcase_add_loop_test(acc, test_fault_accept_eintr_and_eagain_keep_the_client, 0, 2);
    tcase_add_test(acc, test_fault_accept_emfile_without_retry_timer_keeps_accepting);
    tcase_add_test(acc, test_fault_accept_stream_enomem_drops_one_serves_next);
    suite_add_tcase(s, acc);
    return s;
}

#endif

int main(void)
{
    SRunner *sr = srunner_create(fault_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* TCPClient: connect and talk, refused, timeout against a full accept queue (without leaking the
 * descriptor), unknown hosts, the future form and bad arguments. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/future.h"
#include "core/loop.h"
#include "net/iostream.h"
#include "net/tcpclient.h"
#include "testutil.h"

struct outcome {
    int calls;
    int status;
    gale_stream *s;
    char got[16];
    size_t got_len;
    int read_status;
    bool read_done;
};

static void on_connect(gale_stream *s, int status, void *arg)
{
    struct outcome *o = arg;
    o->calls++;
    o->status = status;
    o->s = s;
}

static bool connected(void *arg) { return ((struct outcome *)arg)->calls > 0; }

static void on_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct outcome *o = arg;
    o->read_status = status;
    o->got_len = len < sizeof o->got ? len : sizeof o->got;
    memcpy(o->got, data, o->got_len);
    o->read_done = true;
}

static bool read_done(void *arg) { return ((struct outcome *)arg)->read_done; }

static gale_loop *new_loop(void)
{
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    return loop;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

START_TEST(test_tcpclient_connects_and_exchanges_bytes)
{
    gale_loop *loop = new_loop();
    int port;
    int lfd = test_listen_tcp(&port);
    ck_assert_int_ge(lfd, 0);
    struct outcome o = {0};
    ck_assert_int_eq(gale_tcp_connect(loop, "127.0.0.1", port, 5, on_connect, &o), 0);
    ck_assert_int_eq(o.calls, 0);
    ck_assert(test_wait_until(loop, connected, &o, 5));
    ck_assert_int_eq(o.status, 0);
    ck_assert_ptr_nonnull(o.s);
    int peer = accept(lfd, NULL, NULL);
    ck_assert_int_ge(peer, 0);
    test_set_timeouts(peer, 5);

    ck_assert_int_eq(gale_stream_write(o.s, "ping", 4, NULL, NULL), 0);
    char buf[4];
    ck_assert_int_eq(recv(peer, buf, 4, MSG_WAITALL), 4);
    ck_assert(memcmp(buf, "ping", 4) == 0);
    ck_assert_int_eq(test_write_all(peer, "pong", 4), 0);
    ck_assert_int_eq(gale_stream_read_bytes(o.s, 4, false, on_read, &o), 0);
    ck_assert(test_wait_until(loop, read_done, &o, 5));
    ck_assert_int_eq(o.read_status, 0);
    ck_assert_uint_eq(o.got_len, 4);
    ck_assert(memcmp(o.got, "pong", 4) == 0);

    gale_stream_close(o.s, 0);
    test_run_for(loop, 0.01);
    ck_assert_int_eq(o.calls, 1);
    close(peer);
    close(lfd);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpclient_connect_by_name)
{
    gale_loop *loop = new_loop();
    int port;
    int lfd = test_listen_tcp(&port);
    struct outcome o = {0};
    ck_assert_int_eq(gale_tcp_connect(loop, "localhost", port, 5, on_connect, &o), 0);
    ck_assert(test_wait_until(loop, connected, &o, 10));
    /* localhost may list ::1 first where nothing listens: the next address must be tried. */
    ck_assert_int_eq(o.status, 0);
    gale_stream_close(o.s, 0);
    test_run_for(loop, 0.01);
    close(lfd);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpclient_connection_refused)
{
    gale_loop *loop = new_loop();
    int port = test_free_port();
    int before = count_fds();
    struct outcome o = {0};
    ck_assert_int_eq(gale_tcp_connect(loop, "127.0.0.1", port, 5, on_connect, &o), 0);
    ck_assert(test_wait_until(loop, connected, &o, 5));
    test_run_for(loop, 0.01);
    ck_assert_int_eq(o.calls, 1);
    ck_assert_int_eq(o.status, -ECONNREFUSED);
    ck_assert_ptr_null(o.s);
    ck_assert_int_eq(count_fds(), before);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpclient_timeout_closes_half_open_stream)
{
    gale_loop *loop = new_loop();
    /* listen(fd, 0) that nobody accepts from: once its queue is full, new SYNs are dropped and a
     * further connect stays in SYN_SENT. */
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
    test_run_for(loop, 0.05); /* let the handshakes that can complete do so */
    int before = count_fds();
    struct outcome o = {0};
    ck_assert_int_eq(gale_tcp_connect(loop, "127.0.0.1", ntohs(sin.sin_port), 0.3, on_connect,
                                      &o), 0);
    ck_assert(test_wait_until(loop, connected, &o, 5));
    test_run_for(loop, 0.05);
    ck_assert_int_eq(o.calls, 1);
    ck_assert_int_eq(o.status, -ETIMEDOUT);
    ck_assert_ptr_null(o.s);
    ck_assert_int_eq(count_fds(), before); /* the half-open socket is closed */
    for (int i = 0; i < 2; i++)
        close(fillers[i]);
    close(lfd);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpclient_unknown_host)
{
    gale_loop *loop = new_loop();
    struct outcome o = {0};
    ck_assert_int_eq(gale_tcp_connect(loop, "nonexistent.invalid", 80, 10, on_connect, &o), 0);
    ck_assert(test_wait_until(loop, connected, &o, 20));
    test_run_for(loop, 0.01);
    ck_assert_int_eq(o.calls, 1);
    ck_assert_int_eq(o.status, GALE_ERESOLVE);
    ck_assert_ptr_null(o.s);
    gale_loop_free(loop);
}
END_TEST

static bool future_done(void *arg) { return gale_future_done(arg); }

START_TEST(test_tcpclient_future_form)
{
    gale_loop *loop = new_loop();
    int port;
    int lfd = test_listen_tcp(&port);
    gale_future *f = gale_tcp_connect_future(loop, "127.0.0.1", port, 5);
    ck_assert_ptr_nonnull(f);
    ck_assert(test_wait_until(loop, future_done, f, 5));
    ck_assert_int_eq(gale_future_error(f), 0);
    gale_stream *s = gale_future_steal_result(f);
    ck_assert_ptr_nonnull(s);
    gale_future_unref(f);
    gale_stream_close(s, 0);

    /* A future dropped with the stream still inside closes it. */
    f = gale_tcp_connect_future(loop, "127.0.0.1", port, 5);
    ck_assert(test_wait_until(loop, future_done, f, 5));
    ck_assert_ptr_nonnull(gale_future_result(f));
    gale_future_unref(f);

    f = gale_tcp_connect_future(loop, "127.0.0.1", test_free_port(), 5);
    ck_assert(test_wait_until(loop, future_done, f, 5));
    ck_assert_int_eq(gale_future_error(f), -ECONNREFUSED);
    gale_future_unref(f);

    f = gale_tcp_connect_future(loop, NULL, port, 5);
    ck_assert(gale_future_done(f));
    ck_assert_int_eq(gale_future_error(f), -EINVAL);
    gale_future_unref(f);
    test_run_for(loop, 0.02);
    close(lfd);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpclient_bad_arguments)
{
    gale_loop *loop = new_loop();
    struct outcome o = {0};
    ck_assert_int_eq(gale_tcp_connect(NULL, "127.0.0.1", 80, 1, on_connect, &o), -EINVAL);
    ck_assert_int_eq(gale_tcp_connect(loop, NULL, 80, 1, on_connect, &o), -EINVAL);
    ck_assert_int_eq(gale_tcp_connect(loop, "", 80, 1, on_connect, &o), -EINVAL);
    ck_assert_int_eq(gale_tcp_connect(loop, "127.0.0.1", -1, 1, on_connect, &o), -EINVAL);
    ck_assert_int_eq(gale_tcp_connect(loop, "127.0.0.1", 70000, 1, on_connect, &o), -EINVAL);
    ck_assert_int_eq(gale_tcp_connect(loop, "127.0.0.1", 80, 1, NULL, &o), -EINVAL);
    ck_assert_int_eq(gale_tcp_connect(loop, "127.0.0.1", 80, 0.0 / 0.0, on_connect, &o),
                     -EINVAL);
    test_run_for(loop, 0.02);
    ck_assert_int_eq(o.calls, 0);
    gale_loop_free(loop);
}
END_TEST

static Suite *tcpclient_suite(void)
{
    Suite *s = suite_create("tcpclient");
    TCase *tc = tcase_create("connect");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_tcpclient_connects_and_exchanges_bytes);
    tcase_add_test(tc, test_tcpclient_connect_by_name);
    tcase_add_test(tc, test_tcpclient_connection_refused);
    tcase_add_test(tc, test_tcpclient_timeout_closes_half_open_stream);
    tcase_add_test(tc, test_tcpclient_unknown_host);
    tcase_add_test(tc, test_tcpclient_future_form);
    tcase_add_test(tc, test_tcpclient_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(tcpclient_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

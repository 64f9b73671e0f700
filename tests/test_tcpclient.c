/* TCPClient: connect and talk, refused, timeout against a full accept queue (without leaking the
 * descriptor), unknown hosts, the future form and bad arguments. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
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
    int writes;
    int write_status;
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

static void on_written(gale_stream *s, int status, void *arg)
{
    struct outcome *o = arg;
    o->writes++;
    o->write_status = status;
}

static bool written(void *arg) { return ((struct outcome *)arg)->writes > 0; }

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

    ck_assert_int_eq(gale_stream_write(o.s, "ping", 4, on_written, &o), 0);
    /* A short send (fault injection) leaves bytes queued until the loop runs: let it run until
     * they were handed to the kernel before blocking in recv. */
    ck_assert(test_wait_until(loop, written, &o, 5));
    ck_assert_int_eq(o.writes, 1);
    ck_assert_int_eq(o.write_status, 0);
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
    ck_assert_int_eq(gale_tcp_connect(loop, "127.0.0.1", ntohs(sin.sin_port), 0.3, on_connect, &o),
                     0);
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

static bool future_emptied(void *arg) { return gale_future_result(arg) == NULL; }

/* The peer closes the connection while the stream still sits in the future nobody took it from:
 * the stream's close empties the future, so reading its result gives NULL and freeing it later
 * touches no freed memory (ASan checks). */
START_TEST(test_tcpclient_future_peer_close_before_steal_empties_future)
{
    gale_loop *loop = new_loop();
    int port;
    int lfd = test_listen_tcp(&port);
    gale_future *f = gale_tcp_connect_future(loop, "127.0.0.1", port, 5);
    ck_assert(test_wait_until(loop, future_done, f, 5));
    ck_assert_int_eq(gale_future_error(f), 0);
    ck_assert_ptr_nonnull(gale_future_result(f));
    int peer = accept(lfd, NULL, NULL);
    ck_assert_int_ge(peer, 0);
    close(peer); /* FIN: the idle stream sees it and closes */
    ck_assert(test_wait_until(loop, future_emptied, f, 5));
    ck_assert_ptr_null(gale_future_steal_result(f));
    test_run_for(loop, 0.02);
    gale_future_unref(f);

    /* The same through the stream's own connect future. */
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    f = gale_stream_connect_future(loop, (struct sockaddr *)&sin, sizeof sin);
    ck_assert(test_wait_until(loop, future_done, f, 5));
    ck_assert_ptr_nonnull(gale_future_result(f));
    peer = accept(lfd, NULL, NULL);
    ck_assert_int_ge(peer, 0);
    close(peer);
    ck_assert(test_wait_until(loop, future_emptied, f, 5));
    gale_future_unref(f);

    /* Stolen first: the stream is the caller's, and the future no longer knows it. */
    f = gale_tcp_connect_future(loop, "127.0.0.1", port, 5);
    ck_assert(test_wait_until(loop, future_done, f, 5));
    gale_stream *s = gale_future_steal_result(f);
    ck_assert_ptr_nonnull(s);
    gale_future_unref(f);
    peer = accept(lfd, NULL, NULL);
    ck_assert_int_ge(peer, 0);
    close(peer);
    test_run_for(loop, 0.05); /* the stream closes and frees itself: no future to touch */
    close(lfd);
    test_run_for(loop, 0.02);
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
    ck_assert_int_eq(gale_tcp_connect(loop, "127.0.0.1", 80, 0.0 / 0.0, on_connect, &o), -EINVAL);
    test_run_for(loop, 0.02);
    ck_assert_int_eq(o.calls, 0);
    gale_loop_free(loop);
}
END_TEST

/* ---- address lists (Happy Eyeballs) ---- */

struct addr {
    struct addrinfo ai;
    struct sockaddr_storage ss;
};

/* Fills `a` with 127.0.0.1 or ::1 on `port`, linked before `next`. */
static struct addrinfo *make_addr(struct addr *a, int family, int port, struct addrinfo *next)
{
    memset(a, 0, sizeof *a);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->ai.ai_addrlen = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        sin6->sin6_addr = in6addr_loopback;
        a->ai.ai_addrlen = sizeof *sin6;
    }
    a->ai.ai_family = family;
    a->ai.ai_socktype = SOCK_STREAM;
    a->ai.ai_addr = (struct sockaddr *)&a->ss;
    a->ai.ai_next = next;
    return &a->ai;
}

/* A listener on `family` loopback whose accept queue is full: connects to it hang in SYN_SENT.
 * Returns the port, or -1 when the family is unavailable; fds go to lfd and fillers[2]. */
static int blackhole(int family, int *lfd, int fillers[2])
{
    struct sockaddr_storage ss;
    struct addr tmp;
    make_addr(&tmp, family, 0, NULL);
    memcpy(&ss, &tmp.ss, sizeof ss);
    socklen_t len = tmp.ai.ai_addrlen;
    *lfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*lfd < 0 || bind(*lfd, (struct sockaddr *)&ss, len) < 0 || listen(*lfd, 0) < 0 ||
        getsockname(*lfd, (struct sockaddr *)&ss, &len) < 0) {
        if (*lfd >= 0)
            close(*lfd);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        fillers[i] = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fillers[i], (struct sockaddr *)&ss, len);
    }
    return family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                             : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

START_TEST(test_tcpclient_falls_back_to_next_address)
{
    gale_loop *loop = new_loop();
    int port;
    int lfd = test_listen_tcp(&port);
    struct addr a[2];
    struct addrinfo *list =
        make_addr(&a[0], AF_INET, test_free_port(), make_addr(&a[1], AF_INET, port, NULL));
    struct outcome o = {0};
    ck_assert_int_eq(gale_tcp_connect_addrinfo(loop, list, 5, on_connect, &o), 0);
    ck_assert_int_eq(o.calls, 0);
    ck_assert(test_wait_until(loop, connected, &o, 5));
    ck_assert_int_eq(o.status, 0);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    ck_assert_int_eq(gale_stream_peer_addr(o.s, &peer, &plen), 0);
    ck_assert_int_eq(ntohs(((struct sockaddr_in *)&peer)->sin_port), port);
    gale_stream_close(o.s, 0);
    test_run_for(loop, 0.01);
    ck_assert_int_eq(o.calls, 1);
    close(lfd);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpclient_happy_eyeballs_second_family_wins)
{
    gale_loop *loop = new_loop();
    int v6fd, fillers[2];
    int v6port = blackhole(AF_INET6, &v6fd, fillers);
    if (v6port < 0) {
        gale_loop_free(loop); /* no IPv6 loopback here: nothing to race */
        return;
    }
    test_run_for(loop, 0.05);
    int port;
    int lfd = test_listen_tcp(&port);
    int before = count_fds();
    struct addr a[2];
    /* ::1 first (it hangs), then 127.0.0.1: only the delayed second family can succeed. */
    struct addrinfo *list =
        make_addr(&a[0], AF_INET6, v6port, make_addr(&a[1], AF_INET, port, NULL));
    struct outcome o = {0};
    ck_assert_int_eq(gale_tcp_connect_addrinfo(loop, list, 5, on_connect, &o), 0);
    ck_assert(test_wait_until(loop, connected, &o, 5));
    ck_assert_int_eq(o.status, 0);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    ck_assert_int_eq(gale_stream_peer_addr(o.s, &peer, &plen), 0);
    ck_assert_int_eq(peer.ss_family, AF_INET);
    gale_stream_close(o.s, 0);
    test_run_for(loop, 0.05);
    ck_assert_int_eq(o.calls, 1);
    ck_assert_int_eq(count_fds(), before); /* the losing IPv6 attempt was closed too */
    close(lfd);
    close(v6fd);
    close(fillers[0]);
    close(fillers[1]);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpclient_all_addresses_refused)
{
    gale_loop *loop = new_loop();
    int before = count_fds();
    struct addr a[3];
    struct addrinfo *list = make_addr(&a[0], AF_INET6, test_free_port(),
                                      make_addr(&a[1], AF_INET, test_free_port(),
                                                make_addr(&a[2], AF_INET, test_free_port(), NULL)));
    struct outcome o = {0};
    ck_assert_int_eq(gale_tcp_connect_addrinfo(loop, list, 5, on_connect, &o), 0);
    ck_assert(test_wait_until(loop, connected, &o, 5));
    test_run_for(loop, 0.05);
    ck_assert_int_eq(o.calls, 1);
    ck_assert(o.status == -ECONNREFUSED || o.status == -EADDRNOTAVAIL || o.status == -ENETUNREACH);
    ck_assert_ptr_null(o.s);
    ck_assert_int_eq(count_fds(), before);
    ck_assert_int_eq(gale_tcp_connect_addrinfo(loop, NULL, 5, on_connect, &o), -EINVAL);
    ck_assert_int_eq(gale_tcp_connect_addrinfo(NULL, list, 5, on_connect, &o), -EINVAL);
    ck_assert_int_eq(gale_tcp_connect_addrinfo(loop, list, 5, NULL, &o), -EINVAL);
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
    tcase_add_test(tc, test_tcpclient_future_peer_close_before_steal_empties_future);
    tcase_add_test(tc, test_tcpclient_timeout_closes_half_open_stream);
    tcase_add_test(tc, test_tcpclient_unknown_host);
    tcase_add_test(tc, test_tcpclient_future_form);
    tcase_add_test(tc, test_tcpclient_bad_arguments);
    tcase_add_test(tc, test_tcpclient_falls_back_to_next_address);
    tcase_add_test(tc, test_tcpclient_happy_eyeballs_second_family_wins);
    tcase_add_test(tc, test_tcpclient_all_addresses_refused);
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

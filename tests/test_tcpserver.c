/* The acceptor on real sockets: batches, peer addresses, port readback, IPv6, unix sockets, stop,
 * free inside the callback, prefork with restarts, and fd exhaustion without spinning. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/loop.h"
#include "net/iostream.h"
#include "net/tcpserver.h"
#include "testutil.h"

#define MAX_CONNS 64

struct accepted {
    gale_stream *streams[MAX_CONNS];
    struct sockaddr_storage peers[MAX_CONNS];
    int n;
    bool free_in_cb;
};

static void on_accept(gale_server *srv, gale_stream *s, const struct sockaddr *peer,
                      socklen_t peerlen, void *arg)
{
    struct accepted *a = arg;
    if (a->n < MAX_CONNS) {
        memcpy(&a->peers[a->n], peer, peerlen);
        a->streams[a->n++] = s;
    } else {
        gale_stream_close(s, 0);
    }
    if (a->free_in_cb)
        gale_server_free(srv);
}

static void close_accepted(gale_loop *loop, struct accepted *a)
{
    for (int i = 0; i < a->n; i++)
        gale_stream_close(a->streams[i], 0);
    test_run_for(loop, 0.01); /* let the close callbacks run and the streams be freed */
}

struct want {
    struct accepted *a;
    int n;
};

static bool have_accepted(void *arg)
{
    struct want *w = arg;
    return w->a->n >= w->n;
}

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

START_TEST(test_tcpserver_accepts_many_with_peer_addresses)
{
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    struct accepted a = {0};
    gale_server *srv;
    ck_assert_int_eq(gale_server_new(loop, on_accept, &a, &srv), 0);
    ck_assert_int_eq(gale_server_listen(srv, 0, "127.0.0.1"), 0);
    int port = gale_server_port(srv);
    ck_assert_int_gt(port, 0);

    enum { N = 50 };
    int clients[N], cports[N];
    for (int i = 0; i < N; i++) {
        clients[i] = test_connect_tcp(port);
        ck_assert_int_ge(clients[i], 0);
        cports[i] = local_port(clients[i]);
    }
    struct want w = {&a, N};
    ck_assert(test_wait_until(loop, have_accepted, &w, 5));
    test_run_for(loop, 0.02);
    ck_assert_int_eq(a.n, N); /* exactly one callback per connection */
    for (int i = 0; i < N; i++) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a.peers[i];
        ck_assert_int_eq(sin->sin_family, AF_INET);
        ck_assert_uint_eq(ntohl(sin->sin_addr.s_addr), INADDR_LOOPBACK);
        bool found = false;
        for (int j = 0; j < N; j++)
            found |= cports[j] == ntohs(sin->sin_port);
        ck_assert_msg(found, "peer port %d is not one of the clients'", ntohs(sin->sin_port));
        ck_assert(gale_stream_fd(a.streams[i]) >= 0);
    }
    for (int i = 0; i < N; i++)
        close(clients[i]);
    close_accepted(loop, &a);
    gale_server_free(srv);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpserver_port_zero_same_port_all_families)
{
    int fds[8];
    size_t n = 0;
    ck_assert_int_eq(gale_bind_sockets(0, NULL, AF_UNSPEC, 0, false, fds, 8, &n), 0);
    ck_assert_uint_ge(n, 1);
    int port = local_port(fds[0]);
    ck_assert_int_gt(port, 0);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(local_port(fds[i]), port);
        int fl = fcntl(fds[i], F_GETFL);
        ck_assert(fl & O_NONBLOCK);
        ck_assert(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
    }
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}
END_TEST

START_TEST(test_tcpserver_ipv6_loopback)
{
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    struct accepted a = {0};
    gale_server *srv;
    ck_assert_int_eq(gale_server_new(loop, on_accept, &a, &srv), 0);
    int err = gale_server_listen(srv, 0, "::1");
    if (err) {
        /* No IPv6 on this machine: the bind must fail cleanly, never crash. */
        ck_assert(err == -EADDRNOTAVAIL || err == -EAFNOSUPPORT || err == GALE_ERESOLVE);
        gale_server_free(srv);
        gale_loop_free(loop);
        return;
    }
    int port = gale_server_port(srv);
    int c = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6,
                                .sin6_port = htons((uint16_t)port),
                                .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    ck_assert_int_eq(connect(c, (struct sockaddr *)&sin6, sizeof sin6), 0);
    struct want w = {&a, 1};
    ck_assert(test_wait_until(loop, have_accepted, &w, 5));
    ck_assert_int_eq(a.peers[0].ss_family, AF_INET6);
    struct sockaddr_in6 *p = (struct sockaddr_in6 *)&a.peers[0];
    ck_assert(IN6_IS_ADDR_LOOPBACK(&p->sin6_addr));
    close(c);
    close_accepted(loop, &a);
    gale_server_free(srv);
    gale_loop_free(loop);
}
END_TEST

static void greet_written(gale_stream *s, int status, void *arg) { gale_stream_close(s, 0); }

static void greet_accept(gale_server *srv, gale_stream *s, const struct sockaddr *peer,
                         socklen_t peerlen, void *arg)
{
    (*(int *)arg)++;
    gale_stream_write(s, "hello\n", 6, greet_written, NULL);
}

START_TEST(test_tcpserver_unix_socket_round_trip)
{
    char path[108];
    snprintf(path, sizeof path, "/tmp/gale-test-%d.sock", (int)getpid());
    /* A regular file in the way is refused, not deleted. */
    int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ck_assert_int_ge(f, 0);
    close(f);
    ck_assert_int_eq(gale_bind_unix_socket(path, 0600, 0), -EEXIST);
    unlink(path);

    int fd = gale_bind_unix_socket(path, 0600, 0);
    ck_assert_int_ge(fd, 0);
    close(fd);
    /* A stale socket file is replaced. */
    fd = gale_bind_unix_socket(path, 0600, 0);
    ck_assert_int_ge(fd, 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600);

    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    int count = 0;
    gale_server *srv;
    ck_assert_int_eq(gale_server_new(loop, greet_accept, &count, &srv), 0);
    ck_assert_int_eq(gale_server_add_socket(srv, fd), 0);
    ck_assert_int_eq(gale_server_port(srv), -EAFNOSUPPORT);

    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, path);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&sun, sizeof sun), 0);
    test_set_timeouts(c, 5);
    test_run_for(loop, 0.05);
    ck_assert_int_eq(count, 1);
    size_t len;
    char *got = test_read_all(c, 64, &len);
    ck_assert_str_eq(got, "hello\n");
    free(got);
    close(c);
    /* A live one is not: a second server on the same path is refused, and the first keeps it. */
    ck_assert_int_eq(gale_bind_unix_socket(path, 0600, 0), -EADDRINUSE);
    ck_assert_int_eq(stat(path, &st), 0);
    c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&sun, sizeof sun), 0);
    close(c);
    gale_server_free(srv);
    gale_loop_free(loop);
    unlink(path);
}
END_TEST

static void assert_refused(int port)
{
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(connect(c, (struct sockaddr *)&sin, sizeof sin), -1);
    ck_assert_int_eq(errno, ECONNREFUSED);
    close(c);
}

START_TEST(test_tcpserver_stop_closes_listener)
{
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    struct accepted a = {0};
    gale_server *srv;
    ck_assert_int_eq(gale_server_new(loop, on_accept, &a, &srv), 0);
    ck_assert_int_eq(gale_server_listen(srv, 0, "127.0.0.1"), 0);
    int port = gale_server_port(srv);
    gale_server_stop(srv);
    gale_server_stop(srv); /* idempotent */
    ck_assert_int_eq(gale_server_port(srv), -ENOTCONN);
    assert_refused(port);
    test_run_for(loop, 0.01);
    ck_assert_int_eq(a.n, 0);
    gale_server_free(srv);
    gale_loop_free(loop);
}
END_TEST

static bool readable(void *arg)
{
    struct pollfd p = {.fd = *(int *)arg, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* Stopped while accepting (on a uring loop: with its accept operation submitted and one
 * connection taken): the listener is closed when stop returns, so the next connect is refused,
 * and the accepted connection is unaffected. */
START_TEST(test_tcpserver_stop_after_accepting_refuses_next_connect)
{
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    struct accepted a = {0};
    gale_server *srv;
    ck_assert_int_eq(gale_server_new(loop, on_accept, &a, &srv), 0);
    ck_assert_int_eq(gale_server_listen(srv, 0, "127.0.0.1"), 0);
    int port = gale_server_port(srv);
    int first = test_connect_tcp(port);
    ck_assert_int_ge(first, 0);
    struct want w = {&a, 1};
    ck_assert(test_wait_until(loop, have_accepted, &w, 5));
    gale_server_stop(srv);
    assert_refused(port);
    ck_assert_int_eq(gale_stream_write(a.streams[0], "x", 1, NULL, NULL), 0);
    ck_assert(test_wait_until(loop, readable, &first, 5));
    test_set_timeouts(first, 5);
    char b;
    ck_assert_int_eq(recv(first, &b, 1, 0), 1);
    ck_assert_int_eq(b, 'x');
    test_run_for(loop, 0.01);
    ck_assert_int_eq(a.n, 1);
    close(first);
    close_accepted(loop, &a);
    gale_server_free(srv);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpserver_free_inside_accept_callback)
{
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    struct accepted a = {.free_in_cb = true};
    gale_server *srv;
    ck_assert_int_eq(gale_server_new(loop, on_accept, &a, &srv), 0);
    ck_assert_int_eq(gale_server_listen(srv, 0, "127.0.0.1"), 0);
    int port = gale_server_port(srv);
    /* Three clients wait in the backlog: the first callback frees the server mid-batch. */
    int c[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_ge(c[i] = test_connect_tcp(port), 0);
    struct want w = {&a, 1};
    ck_assert(test_wait_until(loop, have_accepted, &w, 5));
    test_run_for(loop, 0.02);
    ck_assert_int_eq(a.n, 1);
    for (int i = 0; i < 3; i++)
        close(c[i]);
    close_accepted(loop, &a);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_tcpserver_bad_arguments)
{
    int fds[4];
    size_t n = 99;
    ck_assert_int_eq(gale_bind_sockets(-1, NULL, AF_UNSPEC, 0, false, fds, 4, &n), -EINVAL);
    ck_assert_int_eq(gale_bind_sockets(65536, NULL, AF_UNSPEC, 0, false, fds, 4, &n), -EINVAL);
    ck_assert_int_eq(gale_bind_sockets(0, NULL, AF_UNIX, 0, false, fds, 4, &n), -EINVAL);
    ck_assert_int_eq(gale_bind_sockets(0, NULL, AF_UNSPEC, 0, false, NULL, 4, &n), -EINVAL);
    ck_assert_int_eq(gale_bind_sockets(0, NULL, AF_UNSPEC, 0, false, fds, 0, &n), -EINVAL);
    char longpath[200];
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    ck_assert_int_eq(gale_bind_unix_socket(longpath, 0600, 0), -ENAMETOOLONG);
    ck_assert_int_eq(gale_bind_unix_socket("", 0600, 0), -EINVAL);
    ck_assert_int_eq(gale_bind_unix_socket(NULL, 0600, 0), -EINVAL);

    gale_server *srv = NULL;
    ck_assert_int_eq(gale_server_new(NULL, NULL, NULL, &srv), -EINVAL);
    ck_assert_int_eq(gale_server_new(NULL, on_accept, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_server_new(NULL, on_accept, NULL, &srv), 0);
    ck_assert_int_eq(gale_server_start(srv, 1), -ENOTCONN);
    ck_assert_int_eq(gale_server_port(srv), -ENOTCONN);
    ck_assert_int_eq(gale_server_add_socket(srv, -1), -EINVAL);
    /* The port is taken: a second bind to it fails with the bind error. */
    int port = 0;
    int held = test_listen_tcp(&port);
    ck_assert_int_eq(gale_server_bind(srv, port, "127.0.0.1", AF_INET, 0, false), -EADDRINUSE);
    close(held);
    gale_server_free(srv);
    gale_server_free(NULL);
    gale_server_stop(NULL);
}
END_TEST

/* ---- prefork ---- */

static bool read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t n = 0;
    while (n + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) <= 0)
            return false;
        ssize_t r = read(fd, buf + n, 1);
        if (r <= 0)
            return false;
        if (buf[n] == '\n') {
            buf[n] = '\0';
            return true;
        }
        n++;
    }
    return false;
}

static void pid_written(gale_stream *s, int status, void *arg) { gale_stream_close(s, 0); }

static void pid_accept(gale_server *srv, gale_stream *s, const struct sockaddr *peer,
                       socklen_t peerlen, void *arg)
{
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    gale_stream_write(s, buf, (size_t)len, pid_written, NULL);
}

static void stop_on_signal(gale_loop *loop, int signum, void *arg) { gale_loop_stop(loop); }

static void run_prefork_supervisor(int port_fd, int report_fd)
{
    gale_server *srv;
    if (gale_server_new(NULL, pid_accept, NULL, &srv) != 0 ||
        gale_server_bind(srv, 0, "127.0.0.1", AF_INET, 0, false) != 0)
        _exit(3);
    int port = gale_server_port(srv);
    if (write(port_fd, &port, sizeof port) != sizeof port)
        _exit(3);
    int err = gale_server_start(srv, 2); /* the supervisor never returns from here */
    if (err)
        _exit(4);
    gale_loop *loop = gale_loop_current();
    gale_loop_add_signal(loop, SIGTERM, stop_on_signal, NULL);
    char line[64];
    int len = snprintf(line, sizeof line, "%d %d\n", gale_task_id(), (int)getpid());
    if (write(report_fd, line, (size_t)len) != len)
        _exit(5);
    gale_loop_run(loop);
    gale_server_free(srv);
    gale_log_flush();
    _exit(0);
}

START_TEST(test_tcpserver_prefork_two_workers_and_restart)
{
    int port_pipe[2], report_pipe[2];
    ck_assert_int_eq(pipe2(port_pipe, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(report_pipe, O_CLOEXEC), 0);
    pid_t sup = fork();
    ck_assert_int_ge(sup, 0);
    if (sup == 0) {
        close(port_pipe[0]);
        close(report_pipe[0]);
        run_prefork_supervisor(port_pipe[1], report_pipe[1]);
    }
    close(port_pipe[1]);
    close(report_pipe[1]);
    int port = 0;
    struct pollfd p = {.fd = port_pipe[0], .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 10000), 1);
    ck_assert_int_eq(read(port_pipe[0], &port, sizeof port), (ssize_t)sizeof port);
    ck_assert_int_gt(port, 0);

    int worker[2] = {0, 0};
    char line[64];
    for (int i = 0; i < 2; i++) {
        ck_assert(read_line(report_pipe[0], line, sizeof line, 10000));
        int id, pid;
        ck_assert_int_eq(sscanf(line, "%d %d", &id, &pid), 2);
        ck_assert(id == 0 || id == 1);
        ck_assert_int_eq(worker[id], 0);
        worker[id] = pid;
    }
    ck_assert_int_ne(worker[0], worker[1]);

    /* Connections are served by both workers (the kernel wakes both; bounded attempts). */
    bool seen[2] = {false, false};
    for (int i = 0; i < 2000 && !(seen[0] && seen[1]); i++) {
        int c = test_connect_tcp(port);
        ck_assert_int_ge(c, 0);
        test_set_timeouts(c, 5);
        size_t len;
        char *got = test_read_all(c, 64, &len);
        close(c);
        ck_assert_ptr_nonnull(got);
        int pid = atoi(got);
        free(got);
        ck_assert_msg(pid == worker[0] || pid == worker[1], "answer from unknown pid %d", pid);
        seen[pid == worker[1]] = true;
    }
    ck_assert_msg(seen[0] && seen[1], "one worker never served a connection");

    /* A killed worker comes back with the same task id. */
    ck_assert_int_eq(kill(worker[0], SIGKILL), 0);
    ck_assert(read_line(report_pipe[0], line, sizeof line, 10000));
    int id, pid;
    ck_assert_int_eq(sscanf(line, "%d %d", &id, &pid), 2);
    ck_assert_int_eq(id, 0);
    ck_assert_int_ne(pid, worker[0]);
    int c = test_connect_tcp(port);
    ck_assert_int_ge(c, 0);
    close(c);

    /* SIGTERM to the supervisor reaches the workers, which exit cleanly; so does it. */
    ck_assert_int_eq(kill(sup, SIGTERM), 0);
    int status;
    ck_assert_int_eq(waitpid(sup, &status, 0), sup);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    ck_assert_int_eq(kill(pid, 0), -1); /* the workers are gone too */
    ck_assert_int_eq(kill(worker[1], 0), -1);
    close(port_pipe[0]);
    close(report_pipe[0]);
}
END_TEST

/* Workers of the drain test: on SIGTERM they close their listeners, say so, and exit 0.5 s later
 * (a slow graceful drain). */
struct drain_worker {
    gale_server *srv;
    int report_fd;
};

static void drain_exit(gale_loop *loop, void *arg) { gale_loop_stop(loop); }

static void drain_on_signal(gale_loop *loop, int signum, void *arg)
{
    struct drain_worker *w = arg;
    gale_server_stop(w->srv);
    char line[32];
    int len = snprintf(line, sizeof line, "stopped %d\n", gale_task_id());
    if (write(w->report_fd, line, (size_t)len) != len)
        _exit(5);
    gale_loop_call_later(loop, 0.5, drain_exit, NULL, NULL);
}

static void run_draining_supervisor(int port_fd, int report_fd)
{
    struct drain_worker w = {.report_fd = report_fd};
    if (gale_server_new(NULL, pid_accept, NULL, &w.srv) != 0 ||
        gale_server_bind(w.srv, 0, "127.0.0.1", AF_INET, 0, false) != 0)
        _exit(3);
    int port = gale_server_port(w.srv);
    if (write(port_fd, &port, sizeof port) != sizeof port)
        _exit(3);
    if (gale_server_start(w.srv, 2) != 0) /* the supervisor never returns from here */
        _exit(4);
    gale_loop *loop = gale_loop_current();
    gale_loop_add_signal(loop, SIGTERM, drain_on_signal, &w);
    char line[64];
    int len = snprintf(line, sizeof line, "ready %d\n", gale_task_id());
    if (write(report_fd, line, (size_t)len) != len)
        _exit(5);
    gale_loop_run(loop);
    gale_server_free(w.srv);
    gale_log_flush();
    _exit(0);
}

START_TEST(test_tcpserver_prefork_parent_closes_listeners_on_sigterm)
{
    int port_pipe[2], report_pipe[2];
    ck_assert_int_eq(pipe2(port_pipe, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(report_pipe, O_CLOEXEC), 0);
    pid_t sup = fork();
    ck_assert_int_ge(sup, 0);
    if (sup == 0) {
        close(port_pipe[0]);
        close(report_pipe[0]);
        run_draining_supervisor(port_pipe[1], report_pipe[1]);
    }
    close(port_pipe[1]);
    close(report_pipe[1]);
    int port = 0;
    struct pollfd p = {.fd = port_pipe[0], .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 10000), 1);
    ck_assert_int_eq(read(port_pipe[0], &port, sizeof port), (ssize_t)sizeof port);
    ck_assert_int_gt(port, 0);
    char line[64];
    for (int i = 0; i < 2; i++) {
        ck_assert(read_line(report_pipe[0], line, sizeof line, 10000));
        ck_assert_msg(strncmp(line, "ready ", 6) == 0, "unexpected report \"%s\"", line);
    }
    int c = test_connect_tcp(port);
    ck_assert_int_ge(c, 0); /* served while running */
    close(c);

    /* The parent closes its listeners before forwarding the signal; once both workers have
     * closed theirs (and are still draining), nothing listens: a new client is refused at once
     * instead of completing into a backlog that is reset when the parent exits. */
    ck_assert_int_eq(kill(sup, SIGTERM), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert(read_line(report_pipe[0], line, sizeof line, 10000));
        ck_assert_msg(strncmp(line, "stopped ", 8) == 0, "unexpected report \"%s\"", line);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&sin, sizeof sin);
    int err = rc < 0 ? errno : 0;
    close(fd);
    ck_assert_msg(rc < 0 && err == ECONNREFUSED, "connect after SIGTERM: rc %d, %s", rc,
                  strerror(err));

    int status;
    ck_assert_int_eq(waitpid(sup, &status, 0), sup);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
    close(port_pipe[0]);
    close(report_pipe[0]);
}
END_TEST

START_TEST(test_tcpserver_fork_processes_gives_up_after_max_restarts)
{
    pid_t sup = fork();
    ck_assert_int_ge(sup, 0);
    if (sup == 0) {
        int id = gale_fork_processes(1, 2);
        if (id >= 0)
            _exit(7); /* every child fails: restarted twice, then the supervisor gives up */
        _exit(9);
    }
    int status;
    ck_assert_int_eq(waitpid(sup, &status, 0), sup);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 1);
}
END_TEST

/* ---- fd exhaustion ---- */

static int fillers[1024];
static int nfillers;

static void ok_written(gale_stream *s, int status, void *arg) { gale_stream_close(s, 0); }

static void ok_accept(gale_server *srv, gale_stream *s, const struct sockaddr *peer,
                      socklen_t peerlen, void *arg)
{
    gale_stream_write(s, "ok", 2, ok_written, NULL);
}

static void on_control(gale_loop *loop, int fd, unsigned events, void *arg)
{
    char c;
    if (read(fd, &c, 1) != 1) {
        gale_loop_stop(loop);
        return;
    }
    while (nfillers > 0)
        close(fillers[--nfillers]);
}

static long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* Fields after the ")" of the command name: state is field 3, utime 14, stime 15. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    long utime = 0, stime = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime, &stime) != 2)
        return -1;
    return utime + stime;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

START_TEST(test_tcpserver_emfile_pauses_without_spinning_and_recovers)
{
    int info[2], control[2], logp[2];
    ck_assert_int_eq(pipe2(info, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(control, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(logp, O_CLOEXEC | O_NONBLOCK), 0);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        close(info[0]);
        close(control[1]);
        close(logp[0]);
        gale_log_set_fd(logp[1]);
        struct rlimit rl = {64, 64};
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            _exit(2);
        gale_loop *loop;
        gale_server *srv;
        if (gale_loop_new(GALE_BACKEND_DEFAULT, &loop) ||
            gale_server_new(loop, ok_accept, NULL, &srv) ||
            gale_server_listen(srv, 0, "127.0.0.1") ||
            gale_loop_add_handler(loop, control[0], GALE_READ, on_control, NULL))
            _exit(3);
        int port = gale_server_port(srv);
        for (;;) {
            int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                break;
            fillers[nfillers++] = fd;
        }
        if (errno != EMFILE || write(info[1], &port, sizeof port) != sizeof port)
            _exit(4);
        gale_loop_run(loop);
        _exit(0);
    }
    close(info[1]);
    close(control[0]);
    close(logp[1]);
    int port = 0;
    struct pollfd p = {.fd = info[0], .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 10000), 1);
    ck_assert_int_eq(read(info[0], &port, sizeof port), (ssize_t)sizeof port);

    /* A client arriving while the server has no descriptor left is closed at once (spare fd). */
    long t0 = cpu_ticks(child);
    double w0 = now_s();
    int waiting = test_connect_tcp(port);
    ck_assert_int_ge(waiting, 0);
    test_set_timeouts(waiting, 5);
    char buf[8];
    ssize_t r = recv(waiting, buf, sizeof buf, 0);
    ck_assert_msg(r == 0 || (r < 0 && errno == ECONNRESET), "waiting client not closed (%zd, %s)",
                  r, strerror(errno));
    close(waiting);

    /* Keep clients arriving through ~1 s of exhaustion: the server must sleep between tries. */
    while (now_s() - w0 < 1.0) {
        int c = test_connect_tcp(port);
        if (c >= 0)
            close(c);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    long t1 = cpu_ticks(child);
    double elapsed = now_s() - w0;
    ck_assert_int_ge(t0, 0);
    double cpu = (double)(t1 - t0) / (double)sysconf(_SC_CLK_TCK);
    ck_assert_msg(cpu < 0.3 * elapsed, "server used %.2f s CPU in %.2f s", cpu, elapsed);

    /* Descriptors come back: the next client is served. */
    ck_assert_int_eq(write(control[1], "f", 1), 1);
    bool served = false;
    for (int i = 0; i < 50 && !served; i++) {
        int c = test_connect_tcp(port);
        ck_assert_int_ge(c, 0);
        test_set_timeouts(c, 5);
        size_t len;
        char *got = test_read_all(c, 16, &len);
        served = got && strcmp(got, "ok") == 0;
        free(got);
        close(c);
    }
    ck_assert(served);
    kill(child, SIGKILL);
    int status;
    waitpid(child, &status, 0);
    /* One warning for the whole episode, however many clients hit it, and one recovery line. */
    static char log[65536];
    ssize_t ln = read(logp[0], log, sizeof log - 1);
    log[ln > 0 ? ln : 0] = '\0';
    int warnings = 0, recoveries = 0;
    for (char *q = log; (q = strstr(q, "pausing accepts")); q++)
        warnings++;
    for (char *q = log; (q = strstr(q, "descriptors available again")); q++)
        recoveries++;
    ck_assert_msg(warnings == 1, "%d EMFILE warnings in:\n%s", warnings, log);
    ck_assert_msg(recoveries == 1, "%d recovery lines in:\n%s", recoveries, log);
    close(logp[0]);
    close(info[0]);
    close(control[1]);
}
END_TEST

/* max_connections: clients past the cap wait in the backlog (connected, not accepted, not closed)
 * and are accepted one per close; one warning for the episode; the count follows closes even
 * when the user replaced the stream's close callback; freeing the server with connections open
 * is safe. */
static int user_closes;
static void user_close_cb(gale_stream *s, int status, void *arg) { user_closes++; }

static bool still_waiting(int fd)
{
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

START_TEST(test_tcpserver_max_connections_waits_in_backlog)
{
    int logp[2];
    ck_assert_int_eq(pipe2(logp, O_CLOEXEC | O_NONBLOCK), 0);
    gale_log_set_fd(logp[1]);
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    struct accepted a = {0};
    gale_server *srv;
    ck_assert_int_eq(gale_server_new(loop, on_accept, &a, &srv), 0);
    ck_assert_int_eq(gale_server_set_max_connections(NULL, 2), -EINVAL);
    ck_assert_int_eq(gale_server_set_max_connections(srv, 2), 0);
    ck_assert_int_eq(gale_server_listen(srv, 0, "127.0.0.1"), 0);
    int port = gale_server_port(srv);
    int c[5];
    for (int i = 0; i < 5; i++)
        ck_assert_int_ge(c[i] = test_connect_tcp(port), 0);
    struct want w = {&a, 2};
    ck_assert(test_wait_until(loop, have_accepted, &w, 5));
    test_run_for(loop, 0.05);
    ck_assert_int_eq(a.n, 2);
    ck_assert_uint_eq(gale_server_connections(srv), 2);
    for (int i = 2; i < 5; i++)
        ck_assert(still_waiting(c[i]));
    for (int i = 0; i < a.n; i++)
        gale_stream_set_close_cb(a.streams[i], user_close_cb, NULL);

    /* Each close lets exactly one more in. */
    gale_stream_close(a.streams[0], 0);
    a.streams[0] = NULL; /* freed after its close callback */
    w.n = 3;
    ck_assert(test_wait_until(loop, have_accepted, &w, 5));
    test_run_for(loop, 0.05);
    ck_assert_int_eq(a.n, 3);
    ck_assert_int_eq(user_closes, 1);
    ck_assert_uint_eq(gale_server_connections(srv), 2);
    ck_assert(still_waiting(c[3]) && still_waiting(c[4]));

    /* Raising the cap takes the rest at once. */
    ck_assert_int_eq(gale_server_set_max_connections(srv, 0), 0);
    w.n = 5;
    ck_assert(test_wait_until(loop, have_accepted, &w, 5));
    ck_assert_uint_eq(gale_server_connections(srv), 4);

    /* That episode is over: one warning however often the cap was hit, one closing line. */
    static char log[65536];
    ssize_t ln = read(logp[0], log, sizeof log - 1);
    log[ln > 0 ? ln : 0] = '\0';
    int warnings = 0;
    for (char *q = log; (q = strstr(q, "max_connections (")); q++)
        warnings++;
    ck_assert_msg(warnings == 1, "%d max_connections warnings in:\n%s", warnings, log);
    ck_assert_msg(strstr(log, "backlog drained") != NULL, "no end of episode in:\n%s", log);

    /* Lowering the cap to the current count stops accepting again. */
    ck_assert_int_eq(gale_server_set_max_connections(srv, 4), 0);
    int late = test_connect_tcp(port);
    ck_assert_int_ge(late, 0);
    test_run_for(loop, 0.05);
    ck_assert_int_eq(a.n, 5);
    ck_assert(still_waiting(late));

    /* Freed with connections open: they go on, and closing them later is safe. */
    gale_server_free(srv);
    close_accepted(loop, &a);
    ck_assert_int_eq(user_closes, 2);
    for (int i = 0; i < 5; i++)
        close(c[i]);
    close(late);
    gale_loop_free(loop);
    close(logp[0]);
    close(logp[1]);
}
END_TEST

static Suite *tcpserver_suite(void)
{
    Suite *s = suite_create("tcpserver");
    TCase *tc = tcase_create("accept");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_tcpserver_accepts_many_with_peer_addresses);
    tcase_add_test(tc, test_tcpserver_port_zero_same_port_all_families);
    tcase_add_test(tc, test_tcpserver_ipv6_loopback);
    tcase_add_test(tc, test_tcpserver_unix_socket_round_trip);
    tcase_add_test(tc, test_tcpserver_stop_closes_listener);
    tcase_add_test(tc, test_tcpserver_stop_after_accepting_refuses_next_connect);
    tcase_add_test(tc, test_tcpserver_free_inside_accept_callback);
    tcase_add_test(tc, test_tcpserver_bad_arguments);
    tcase_add_test(tc, test_tcpserver_emfile_pauses_without_spinning_and_recovers);
    tcase_add_test(tc, test_tcpserver_max_connections_waits_in_backlog);
    suite_add_tcase(s, tc);
    TCase *pf = tcase_create("prefork");
    tcase_set_timeout(pf, 30);
    tcase_add_test(pf, test_tcpserver_prefork_two_workers_and_restart);
    tcase_add_test(pf, test_tcpserver_fork_processes_gives_up_after_max_restarts);
    tcase_add_test(pf, test_tcpserver_prefork_parent_closes_listeners_on_sigterm);
    suite_add_tcase(s, pf);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(tcpserver_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

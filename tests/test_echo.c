/* apps/echo as a black box: many clients echoed byte-exact at once, bounded memory against a
 * client that never reads, clean exit on SIGTERM, and bad command lines. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static pid_t start_echo(int *port)
{
    *port = test_free_port();
    char pbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d", *port);
    char *argv[] = {"echo", "--port", pbuf, "--address", "127.0.0.1", NULL};
    pid_t pid = test_start_app("echo", argv, *port);
    ck_assert_int_gt(pid, 0);
    return pid;
}

static void stop_echo(pid_t pid)
{
    int status = test_stop_app(pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "echo exit status %#x", status);
}

static unsigned char pattern(int client, size_t i)
{
    return (unsigned char)(client * 131 + i * 7 + (i >> 11));
}

struct client {
    int fd;
    size_t sent, received, total;
};

START_TEST(test_echo_many_clients_byte_exact)
{
    int port;
    pid_t pid = start_echo(&port);
    enum { N = 50 };
    const size_t total = 10u << 20;
    struct client c[N];
    struct pollfd pfd[N];
    unsigned char buf[65536];
    for (int i = 0; i < N; i++) {
        c[i].fd = test_connect_tcp(port);
        ck_assert_int_ge(c[i].fd, 0);
        fcntl(c[i].fd, F_SETFL, O_NONBLOCK);
        c[i].sent = c[i].received = 0;
        c[i].total = total / N + (i == 0 ? total % N : 0);
    }
    int done = 0;
    while (done < N) {
        for (int i = 0; i < N; i++) {
            pfd[i].fd = c[i].received < c[i].total ? c[i].fd : -1;
            pfd[i].events = POLLIN | (c[i].sent < c[i].total ? POLLOUT : 0);
        }
        int r = poll(pfd, N, 10000);
        ck_assert_msg(r > 0, "echo stalled");
        for (int i = 0; i < N; i++) {
            if (pfd[i].revents & POLLOUT) {
                size_t n = c[i].total - c[i].sent;
                if (n > sizeof buf)
                    n = sizeof buf;
                for (size_t k = 0; k < n; k++)
                    buf[k] = pattern(i, c[i].sent + k);
                ssize_t w = send(c[i].fd, buf, n, MSG_NOSIGNAL);
                ck_assert_msg(w > 0 || errno == EAGAIN, "send: %s", strerror(errno));
                if (w > 0)
                    c[i].sent += (size_t)w;
            }
            if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP)) {
                ssize_t rd = recv(c[i].fd, buf, sizeof buf, 0);
                ck_assert_msg(rd > 0 || (rd < 0 && errno == EAGAIN), "recv %zd: %s", rd,
                              strerror(errno));
                /* One check per chunk: each ck_assert costs a message to the test runner. */
                ssize_t bad = -1;
                for (ssize_t k = 0; k < rd && bad < 0; k++)
                    if (buf[k] != pattern(i, c[i].received + (size_t)k))
                        bad = k;
                ck_assert_msg(bad < 0, "client %d byte %zu differs", i,
                              c[i].received + (size_t)bad);
                if (rd > 0) {
                    c[i].received += (size_t)rd;
                    ck_assert_uint_le(c[i].received, c[i].sent);
                    if (c[i].received == c[i].total)
                        done++;
                }
            }
        }
    }
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(c[i].received, c[i].total);
        close(c[i].fd);
    }
    stop_echo(pid);
}
END_TEST

static long vm_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

START_TEST(test_echo_client_that_never_reads_is_bounded)
{
    int port;
    pid_t pid = start_echo(&port);
    int fd = test_connect_tcp(port);
    ck_assert_int_ge(fd, 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    static char chunk[1 << 16];
    memset(chunk, 'x', sizeof chunk);
    const size_t goal = 256u << 20;
    size_t sent = 0;
    long max_rss = 0;
    /* Send until done or until the server has stopped taking bytes for 1 s (it stopped reading,
     * which is the point); never read a byte back. */
    while (sent < goal) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, 1000) == 0)
            break;
        ssize_t w = send(fd, chunk, sizeof chunk, MSG_NOSIGNAL);
        if (w < 0) {
            ck_assert_int_eq(errno, EAGAIN);
            continue;
        }
        sent += (size_t)w;
        if ((sent & ((8u << 20) - 1)) < (size_t)w) {
            long rss = vm_rss_kib(pid);
            if (rss > max_rss)
                max_rss = rss;
        }
    }
    long rss = vm_rss_kib(pid);
    if (rss > max_rss)
        max_rss = rss;
    ck_assert_int_gt(max_rss, 0);
    ck_assert_msg(max_rss < 64 * 1024, "echo RSS %ld KiB after %zu bytes sent", max_rss, sent);
    ck_assert_msg(sent < goal, "the server never pushed back (%zu bytes taken)", sent);

    /* The stuck client does not stop the server from serving others. */
    int other = test_connect_tcp(port);
    ck_assert_int_ge(other, 0);
    ck_assert_int_eq(test_write_all(other, "hello", 5), 0);
    char buf[5];
    ck_assert_int_eq(recv(other, buf, 5, MSG_WAITALL), 5);
    ck_assert(memcmp(buf, "hello", 5) == 0);
    close(other);
    close(fd);
    stop_echo(pid);
}
END_TEST

START_TEST(test_echo_peer_close_and_sigterm_exit_cleanly)
{
    int port;
    pid_t pid = start_echo(&port);
    /* Half-close: the echo of what was sent still arrives, then EOF. */
    int fd = test_connect_tcp(port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(test_write_all(fd, "bye", 3), 0);
    shutdown(fd, SHUT_WR);
    size_t len;
    char *got = test_read_all(fd, 64, &len);
    ck_assert_str_eq(got, "bye");
    free(got);
    close(fd);
    /* An open idle connection does not keep SIGTERM from ending the process with status 0. */
    int idle = test_connect_tcp(port);
    ck_assert_int_ge(idle, 0);
    stop_echo(pid);
    got = test_read_all(idle, 64, &len);
    ck_assert_uint_eq(len, 0);
    free(got);
    close(idle);
}
END_TEST

static int run_echo_status(char *const args[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        execv(test_app_path("echo"), args);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

START_TEST(test_echo_bad_command_lines)
{
    char *bad_port[] = {"echo", "--port", "abc", NULL};
    ck_assert_int_eq(run_echo_status(bad_port), 2);
    char *big_port[] = {"echo", "--port", "70000", NULL};
    ck_assert_int_eq(run_echo_status(big_port), 2);
    char *missing[] = {"echo", "--port", NULL};
    ck_assert_int_eq(run_echo_status(missing), 2);
    char *unknown[] = {"echo", "--frobnicate", "1", NULL};
    ck_assert_int_eq(run_echo_status(unknown), 2);
    char *procs[] = {"echo", "--processes", "-3", NULL};
    ck_assert_int_eq(run_echo_status(procs), 2);
    /* A port already taken: a clear error, exit 1. */
    int port;
    int held = test_listen_tcp(&port);
    char pbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d", port);
    char *taken[] = {"echo", "--port", pbuf, "--address", "127.0.0.1", NULL};
    ck_assert_int_eq(run_echo_status(taken), 1);
    close(held);
}
END_TEST

START_TEST(test_echo_prefork_serves_and_stops)
{
    int port = test_free_port();
    char pbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d", port);
    char *argv[] = {"echo", "--port", pbuf, "--address", "127.0.0.1", "--processes", "2", NULL};
    pid_t pid = test_start_app("echo", argv, port);
    ck_assert_int_gt(pid, 0);
    for (int i = 0; i < 20; i++) {
        int fd = test_connect_tcp(port);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(test_write_all(fd, "abc", 3), 0);
        char buf[3];
        ck_assert_int_eq(recv(fd, buf, 3, MSG_WAITALL), 3);
        ck_assert(memcmp(buf, "abc", 3) == 0);
        close(fd);
    }
    stop_echo(pid); /* the supervisor forwards SIGTERM and exits 0 once both workers did */
}
END_TEST

static Suite *echo_suite(void)
{
    Suite *s = suite_create("echo");
    TCase *tc = tcase_create("app");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_echo_many_clients_byte_exact);
    tcase_add_test(tc, test_echo_client_that_never_reads_is_bounded);
    tcase_add_test(tc, test_echo_peer_close_and_sigterm_exit_cleanly);
    tcase_add_test(tc, test_echo_bad_command_lines);
    tcase_add_test(tc, test_echo_prefork_serves_and_stops);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(echo_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

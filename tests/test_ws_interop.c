/* ws_interop: gale's WebSockets against the two Python implementations Debian ships, both ways:
 * the `websockets` library's and Tornado's clients against a gale echo endpoint, and gale's
 * client against their echo servers, with and without permessage-deflate. The Python peers are
 * tests/ws_peer.py, run with /usr/bin/python3 (python3-websockets, python3-tornado). */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/coro.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/web.h"
#include "http/websocket.h"
#include "testutil.h"

static gale_loop *loop;

static const char *peer_script(void)
{
    static char path[4096];
    const char *src = getenv("GALE_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/ws_peer.py", src ? src : ".");
    return path;
}

/* Starts ws_peer.py with `role` and two more arguments (may be NULL); its stdout goes to
 * `out_fd` (-1: ours). Returns the pid. */
static pid_t start_peer(const char *role, const char *a1, const char *a2, int out_fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (out_fd >= 0)
            dup2(out_fd, STDOUT_FILENO);
        execl("/usr/bin/python3", "python3", peer_script(), role, a1, a2, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_peer(pid_t pid, double timeout)
{
    int status = -1;
    for (int i = 0; i < (int)(timeout * 100); i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

static void setup(void)
{
    gale_log_set_level(GALE_LOG_ERROR);
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    gale_loop_make_current(loop);
}

static void teardown(void)
{
    test_run_for(loop, 0.02);
    gale_coro_shutdown(loop);
    gale_loop_make_current(NULL);
    gale_loop_free(loop);
}

/* ---- their clients, gale's server ---- */

static void echo(gale_ws *ws, const char *data, size_t len, bool binary)
{
    gale_ws_write(ws, data, len, binary, NULL, NULL);
}
static bool compress(gale_ws *ws, gale_ws_compression *o) { return true; }
static const gale_ws_class echo_class = {
    .on_message = echo, .get_compression_options = compress, .max_message_size = 16u << 20};

struct client_job {
    const char *role, *mode;
    int port;
    int status;
};

static void client_job(void *arg)
{
    struct client_job *j = arg;
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", j->port);
    j->status = wait_peer(start_peer(j->role, url, j->mode, -1), 90);
}

static const char *const roles[] = {"client-websockets", "client-tornado"};
/* Without zlib gale neither offers nor accepts permessage-deflate: only the plain runs. */
#ifdef GALE_HAVE_ZLIB
static const char *const modes[] = {"deflate", "plain"};
#else
static const char *const modes[] = {"plain"};
#endif
#define NMODES ((int)(sizeof modes / sizeof *modes))

START_TEST(test_ws_interop_python_clients_against_gale)
{
    gale_app *app = gale_app_new(NULL);
    gale_app_opts(app)->no_access_log = true;
    ck_assert_int_eq(gale_app_websocket(app, "/ws", &echo_class, NULL), 0);
    ck_assert_int_eq(gale_app_listen(app, 0, "127.0.0.1"), 0);
    struct client_job j = {
        .role = roles[_i / NMODES], .mode = modes[_i % NMODES], .port = gale_app_port(app)};
    ck_assert(test_run_thread(loop, client_job, &j, 120));
    ck_assert_msg(j.status == 0, "%s %s: exit %d (77: python module missing)", j.role, j.mode,
                  j.status);
    gale_app_free(app);
}
END_TEST

/* ---- gale's client, their servers ---- */

struct client_run {
    int port;
    bool deflate;
    int rc;
    const char *failed;
    bool compressed;
    int close_code;
};

static int run_messages(gale_ws *ws, struct client_run *r)
{
    static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 1u << 20};
    char *buf = malloc(1u << 20);
    for (size_t i = 0; i < 1u << 20; i++)
        buf[i] = (char)(i * 7 + 1);
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < 2 * (sizeof sizes / sizeof *sizes); k++) {
        bool binary = k % 2 == 0;
        size_t n = sizes[k / 2];
        if (!binary)
            memset(buf, 'a' + (int)(k % 26), n);
        if ((rc = gale_await_drop(gale_ws_write_message(ws, buf, n, binary))) < 0)
            break;
        gale_future *f = gale_ws_read_message(ws);
        if ((rc = gale_await(f)) == 0) {
            const gale_ws_message *m = gale_future_result(f);
            if (m->binary != binary || m->len != n || memcmp(m->data, buf, n) != 0) {
                r->failed = "an echo differs";
                rc = -EPROTO;
            }
        }
        gale_future_unref(f);
    }
    free(buf);
    return rc;
}

static int client_coro(void *arg)
{
    struct client_run *r = arg;
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", r->port);
    gale_ws_connect_opts o = {.compression = r->deflate, .connect_timeout = 10};
    gale_future *cf = gale_ws_connect_future(loop, url, &o);
    if ((r->rc = gale_await(cf)) < 0) {
        r->failed = "connect";
        gale_future_unref(cf);
        return 0;
    }
    gale_ws *ws = gale_future_steal_result(cf);
    gale_future_unref(cf);
    r->compressed = gale_ws_compressed(ws);
    r->rc = run_messages(ws, r);
    gale_ws_close(ws, 1000, "bye");
    gale_future *f = gale_ws_read_message(ws);
    gale_await(f);
    gale_future_unref(f);
    r->close_code = gale_ws_close_code(ws);
    gale_ws_unref(ws);
    return 0;
}

static const char *const servers[] = {"server-websockets", "server-tornado"};

START_TEST(test_ws_interop_gale_client_against_python_servers)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    const char *server = servers[_i / NMODES], *mode = modes[_i % NMODES];
    pid_t pid = start_peer(server, mode, NULL, fds[1]);
    close(fds[1]);
    FILE *out = fdopen(fds[0], "r");
    char line[128] = "";
    int port = 0;
    if (fgets(line, sizeof line, out))
        sscanf(line, "PORT %d", &port);
    ck_assert_msg(port > 0, "%s did not start: '%s' (python module missing?)", server, line);
    struct client_run r = {.port = port, .deflate = strcmp(mode, "deflate") == 0};
    gale_future *f = gale_coro_spawn(loop, client_coro, &r, NULL);
    ck_assert_int_eq(gale_loop_run_until(loop, f, 60), 0);
    gale_future_unref(f);
    kill(pid, SIGTERM);
    wait_peer(pid, 10);
    fclose(out);
    ck_assert_msg(r.rc == 0, "%s %s: %s: %s", server, mode, r.failed ? r.failed : "",
                  gale_strerror(r.rc));
    ck_assert(r.compressed == r.deflate);
    ck_assert_int_eq(r.close_code, 1000);
}
END_TEST

static Suite *interop_suite(void)
{
    Suite *s = suite_create("ws_interop");
    TCase *t = tcase_create("python");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 150);
    tcase_add_loop_test(t, test_ws_interop_python_clients_against_gale, 0, 2 * NMODES);
    tcase_add_loop_test(t, test_ws_interop_gale_client_against_python_servers, 0, 2 * NMODES);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(interop_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

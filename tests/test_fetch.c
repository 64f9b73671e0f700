/* The fetch app end to end against the demo app: exit codes, bodies on stdout in argument order,
 * -i headers, -X/-H/-d, one summary line per URL on stderr. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static pid_t demo_pid;
static int demo_port;

static void demo_start(void)
{
    demo_port = test_free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", demo_port);
    char *argv[] = {"demo", "--port", port, NULL};
    setenv("GALE_LOG_LEVEL", "warning", 1);
    demo_pid = test_start_app("demo", argv, demo_port);
    ck_assert_int_gt(demo_pid, 0);
}

static char *url(const char *path)
{
    char *u = malloc(256);
    snprintf(u, 256, "http://127.0.0.1:%d%s", demo_port, path);
    return u;
}

struct run {
    int status;
    char *out;
    char *err;
    size_t out_len;
};

static char *slurp(FILE *f, size_t *len)
{
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

/* Runs build/bin/fetch with argv (NULL-terminated, argv[0] ignored) and collects its output. */
static struct run run_fetch(char *const argv[])
{
    FILE *out = tmpfile(), *err = tmpfile();
    ck_assert(out && err);
    pid_t pid = test_spawn_app("fetch", argv, fileno(out), fileno(err));
    ck_assert_int_ge(pid, 0);
    struct run r = {0};
    ck_assert_int_eq(waitpid(pid, &r.status, 0), pid);
    ck_assert(WIFEXITED(r.status));
    r.status = WEXITSTATUS(r.status);
    size_t elen;
    r.out = slurp(out, &r.out_len);
    r.err = slurp(err, &elen);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

START_TEST(test_fetch_prints_bodies_in_argument_order)
{
    demo_start();
    char *a = url("/delay?ms=100"), *b = url("/user/42"), *c = url("/stream?chunks=2");
    char *argv[] = {"fetch", a, b, c, NULL};
    struct run r = run_fetch(argv);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, "waited 100 msuser 42chunk 1\nchunk 2\n");
    ck_assert_int_eq(count_lines(r.err), 3);
    ck_assert_ptr_nonnull(strstr(r.err, "200 OK 7 bytes"));
    run_free(&r);
    free(a), free(b), free(c);
    test_stop_app(demo_pid);
}
END_TEST

/* Several URLs of one host, one at a time: one connection carries them all; -v says so. */
START_TEST(test_fetch_keepalive_reuses_and_verbose_reports_it)
{
    demo_start();
    char *a = url("/user/1"), *b = url("/user/2"), *c = url("/user/3");
    char *argv[] = {"fetch", "-v", "--max-clients", "1", a, b, c, NULL};
    struct run r = run_fetch(argv);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, "user 1user 2user 3");
    ck_assert_ptr_nonnull(strstr(r.err, "/user/1 (new connection)\n"));
    ck_assert_ptr_nonnull(strstr(r.err, "/user/2 (reused connection)\n"));
    ck_assert_ptr_nonnull(strstr(r.err, "/user/3 (reused connection)\n"));
    ck_assert_ptr_nonnull(strstr(r.err, "connections: 1 opened, 2 requests on a reused one\n"));
    run_free(&r);
    char *argv2[] = {"fetch", "-v", "--no-keepalive", "--max-clients", "1", a, b, NULL};
    r = run_fetch(argv2);
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.err, "connections: 2 opened, 0 requests on a reused one\n"));
    run_free(&r);
    free(a), free(b), free(c);
    test_stop_app(demo_pid);
}
END_TEST

START_TEST(test_fetch_include_headers)
{
    demo_start();
    char *a = url("/");
    char *argv[] = {"fetch", "-i", a, NULL};
    struct run r = run_fetch(argv);
    ck_assert_int_eq(r.status, 0);
    ck_assert(!strncmp(r.out, "HTTP/1.1 200 OK\r\n", 17));
    ck_assert_ptr_nonnull(strstr(r.out, "\r\nContent-Length: 13\r\n"));
    size_t n = strlen(r.out);
    ck_assert(n > 17 && !strcmp(r.out + n - 17, "\r\n\r\nHello, world!"));
    run_free(&r);
    free(a);
    test_stop_app(demo_pid);
}
END_TEST

START_TEST(test_fetch_method_header_and_body)
{
    demo_start();
    char *a = url("/echo"), *h = url("/header/X-Probe");
    char *argv[] = {"fetch", "-X",    "PUT", "-H", "Content-Type: text/x-probe",
                    "-d",    "body!", a,     NULL};
    struct run r = run_fetch(argv);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, "body!");
    run_free(&r);
    char *argv2[] = {"fetch", "-H", "X-Probe: yes", h, NULL};
    r = run_fetch(argv2);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, "yes");
    run_free(&r);
    free(a), free(h);
    test_stop_app(demo_pid);
}
END_TEST

START_TEST(test_fetch_exits_nonzero_when_any_fails)
{
    demo_start();
    char *ok = url("/"), *missing = url("/status/404");
    char refused[64];
    snprintf(refused, sizeof refused, "http://127.0.0.1:%d/", test_free_port());
    char *argv[] = {"fetch", ok, missing, refused, "ftp://127.0.0.1/", NULL};
    struct run r = run_fetch(argv);
    ck_assert_int_eq(r.status, 1);
    ck_assert_str_eq(r.out, "Hello, world!status 404");
    ck_assert_int_eq(count_lines(r.err), 4);
    ck_assert_ptr_nonnull(strstr(r.err, "ECONNREFUSED"));
    ck_assert_ptr_nonnull(strstr(r.err, "GALE_ESCHEME"));
    ck_assert_ptr_nonnull(strstr(r.err, "404 failed"));
    run_free(&r);
    char *argv2[] = {"fetch", "--timeout", "-1", ok, NULL};
    r = run_fetch(argv2);
    ck_assert_int_eq(r.status, 2);
    run_free(&r);
    char *argv3[] = {"fetch", NULL};
    r = run_fetch(argv3);
    ck_assert_int_eq(r.status, 2);
    run_free(&r);
    free(ok), free(missing);
    test_stop_app(demo_pid);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fetch");
    TCase *t = tcase_create("app");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_fetch_prints_bodies_in_argument_order);
    tcase_add_test(t, test_fetch_include_headers);
    tcase_add_test(t, test_fetch_keepalive_reuses_and_verbose_reports_it);
    tcase_add_test(t, test_fetch_method_header_and_body);
    tcase_add_test(t, test_fetch_exits_nonzero_when_any_fails);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

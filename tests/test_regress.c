/* Regression suite: one test per defect found by the fuzz harnesses (tests/fuzz) or while
 * building them, each the minimal reproduction of the input that exposed it. The fuzz inputs
 * themselves are replayed by the ctest entries fuzz_<target> (tests/fuzz/CMakeLists.txt). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "net/iostream.h"
#include "testutil.h"

struct regex_read {
    int calls, status;
    size_t len;
    bool tail_ok;
};

static void on_regex(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct regex_read *r = arg;
    r->calls++;
    r->status = status;
    r->len = len;
    r->tail_ok = len >= 3 && memcmp(data + len - 3, "xyz", 3) == 0;
}

static bool regex_done(void *arg) { return ((struct regex_read *)arg)->calls > 0; }

/* read_until_regex over a receive that fills the stream's 64 KiB receive area with no NUL byte:
 * regexec is called with REG_STARTEND on data that is not NUL-terminated. glibc honours the
 * bounds, but the sanitizers' regexec interceptor measures the string with strlen and reports a
 * heap-buffer-overflow past the receive area (net/iostream.c, step(), RK_REGEX), so a
 * GALE_SANITIZE build aborts here. Found while model-checking reads in tests/fuzz/fuzz_iostream.c
 * (its reference regexec hit the same interceptor). */
START_TEST(test_regress_iostream_regex_over_full_receive_area)
{
    gale_loop *loop = NULL;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_EPOLL, &loop), 0);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ck_assert_int_eq(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    test_set_timeouts(sv[1], 10);
    int sz = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    gale_stream *s = NULL;
    ck_assert_int_eq(gale_stream_new(loop, sv[0], &s), 0);
    struct regex_read r = {0};
    ck_assert_int_eq(gale_stream_read_until_regex(s, "xyz", 0, on_regex, &r), 0);

    size_t n = GALE_STREAM_READ_CHUNK + 3;
    char *buf = malloc(n);
    ck_assert_ptr_nonnull(buf);
    memset(buf, 'a', n - 3);
    memcpy(buf + n - 3, "xyz", 3);
    ck_assert_int_eq(test_write_all(sv[1], buf, n), 0);
    free(buf);

    ck_assert(test_wait_until(loop, regex_done, &r, 10));
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.len, n);
    ck_assert(r.tail_ok);
    gale_stream_close(s, 0);
    test_run_for(loop, 0.01);
    close(sv[1]);
    gale_loop_free(loop);
}
END_TEST

static Suite *regress_suite(void)
{
    Suite *s = suite_create("regress");
    TCase *io = tcase_create("iostream");
    tcase_add_test(io, test_regress_iostream_regex_over_full_receive_area);
    tcase_set_timeout(io, 30);
    suite_add_tcase(s, io);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(regress_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

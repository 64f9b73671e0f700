/* Suite "log": line format, level filtering, buffering and flush order. */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/log_internal.h"

static int pipe_fds[2];

static void setup(void)
{
    ck_assert_int_eq(pipe2(pipe_fds, O_NONBLOCK), 0);
    gale_log_set_fd(pipe_fds[1]);
    gale_log_set_level(GALE_LOG_INFO);
}

static void teardown(void)
{
    gale_log_set_fd(2);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
}

static size_t drain(char *buf, size_t cap)
{
    ssize_t n = read(pipe_fds[0], buf, cap - 1);
    if (n < 0)
        n = 0;
    buf[n] = '\0';
    return (size_t)n;
}

START_TEST(test_log_line_format_like_tornado)
{
    char buf[1024];
    gale_log_info(GALE_LOG_ACCESS, "200 GET / (%s) %.2fms", "127.0.0.1", 0.21);
    gale_log_flush();
    drain(buf, sizeof buf);
    /* [I yymmdd hh:mm:ss access] 200 GET / (127.0.0.1) 0.21ms */
    ck_assert_msg(strncmp(buf, "[I ", 3) == 0, "got %s", buf);
    ck_assert_int_eq(buf[9], ' ');
    ck_assert_int_eq(buf[12], ':');
    ck_assert_ptr_nonnull(strstr(buf, " access] 200 GET / (127.0.0.1) 0.21ms\n"));
    ck_assert_int_eq(strchr(buf, '\n') - buf + 1, (long)strlen(buf));
}
END_TEST

START_TEST(test_log_write_preformatted_line_same_format)
{
    char buf[1024];
    const char msg[] = "200 GET /100% (127.0.0.1) 0.02ms\n";
    gale_log_write(GALE_LOG_INFO, GALE_LOG_ACCESS, msg, sizeof msg - 1);
    gale_log_write(GALE_LOG_DEBUG, GALE_LOG_ACCESS, "hidden", 6);
    gale_log_flush();
    drain(buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "[I ", 3) == 0, "got %s", buf);
    /* No format processing of the text ("%" kept), one newline, the debug line filtered. */
    ck_assert_ptr_nonnull(strstr(buf, " access] 200 GET /100% (127.0.0.1) 0.02ms\n"));
    ck_assert_int_eq(strchr(buf, '\n') - buf + 1, (long)strlen(buf));
}
END_TEST

/* The access log's batch path: a line is its prefix, head and tail exactly, whatever their
 * lengths (parts up to 32 bytes are copied in one fixed-size move, longer ones in full). */
START_TEST(test_log_append_parts_byte_exact)
{
    static const char *heads[] = {"200 GET / (::1",
                                  "404 GET /a/rather/long/path/of/some/length?q=1 (127.0.0.1", ""};
    static const char *tails[] = {") 0.21ms", ") 12345.67ms and a tail of more than 32 bytes", ""};
    char expect[1024] = "", buf[1024];
    for (int i = 0; i < 3; i++) {
        const char *p;
        size_t plen = gale__log_prefix(GALE_LOG_INFO, GALE_LOG_ACCESS, &p);
        char pfx[128], head[128] = {0}, tail[128] = {0}; /* readable 32 bytes past each part */
        ck_assert_uint_lt(plen, sizeof pfx);
        memcpy(pfx, p, plen);
        pfx[plen] = '\0';
        strcpy(head, heads[i]);
        strcpy(tail, tails[i]);
        gale__log_append(GALE_LOG_INFO, p, plen, head, strlen(head), tail, strlen(tail));
        snprintf(expect + strlen(expect), sizeof expect - strlen(expect), "%s%s%s\n", pfx, head,
                 tail);
    }
    gale_log_flush();
    drain(buf, sizeof buf);
    ck_assert_str_eq(buf, expect);
    ck_assert_ptr_nonnull(strstr(buf, " access] 200 GET / (::1) 0.21ms\n"));
}
END_TEST

START_TEST(test_log_info_is_buffered_until_flush)
{
    char buf[1024];
    gale_log_info(GALE_LOG_GENERAL, "queued");
    ck_assert_uint_eq(drain(buf, sizeof buf), 0);
    gale_log_flush();
    drain(buf, sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "queued"));
}
END_TEST

START_TEST(test_log_warning_writes_at_once_after_queued_lines)
{
    char buf[1024];
    gale_log_info(GALE_LOG_GENERAL, "first");
    gale_log_warning(GALE_LOG_GENERAL, "second");
    drain(buf, sizeof buf);
    char *a = strstr(buf, "first"), *b = strstr(buf, "second");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert(a < b);
    ck_assert_ptr_nonnull(strstr(buf, "[W "));
}
END_TEST

START_TEST(test_log_level_filters_lower_levels)
{
    char buf[1024];
    gale_log_set_level(GALE_LOG_WARNING);
    ck_assert(!gale_log_enabled(GALE_LOG_INFO));
    ck_assert(gale_log_enabled(GALE_LOG_ERROR));
    gale_log_info(GALE_LOG_GENERAL, "hidden");
    gale_log_error(GALE_LOG_APP, "shown");
    gale_log_flush();
    drain(buf, sizeof buf);
    ck_assert_ptr_null(strstr(buf, "hidden"));
    ck_assert_ptr_nonnull(strstr(buf, "[E "));
    ck_assert_ptr_nonnull(strstr(buf, "application] shown"));
}
END_TEST

/* The level is read from the environment once, on first use: these run without the fixture, in
 * a fresh forked process (CK_FORK) where nothing has logged yet. */
START_TEST(test_log_level_from_environment)
{
    setenv("GALE_LOG_LEVEL", "error", 1);
    ck_assert_int_eq(gale_log_get_level(), GALE_LOG_ERROR);
    ck_assert(!gale_log_enabled(GALE_LOG_WARNING));
}
END_TEST

START_TEST(test_log_level_bad_environment_falls_back_to_info)
{
    setenv("GALE_LOG_LEVEL", "loud", 1);
    ck_assert_int_eq(gale_log_get_level(), GALE_LOG_INFO);
}
END_TEST

START_TEST(test_log_long_line_truncated_not_overflowing)
{
    static char big[20000];
    char buf[16384];
    memset(big, 'x', sizeof big - 1);
    gale_log_warning(GALE_LOG_GENERAL, "%s", big);
    size_t n = drain(buf, sizeof buf);
    ck_assert_uint_gt(n, 8000);
    ck_assert_uint_le(n, 8192);
    ck_assert_int_eq(buf[n - 1], '\n');
}
END_TEST

START_TEST(test_log_buffer_overflow_flushes_in_order)
{
    /* More queued text than the per-thread buffer holds: flushed early, nothing lost. */
    char *all = calloc(1, 1 << 20);
    size_t total = 0;
    for (int i = 0; i < 400; i++) {
        gale_log_info(GALE_LOG_GENERAL, "line %03d %0100d", i, 0);
        char buf[65536];
        total += drain(buf, sizeof buf);
        strcat(all, buf);
    }
    gale_log_flush();
    char buf[65536];
    total += drain(buf, sizeof buf);
    strcat(all, buf);
    /* Every line arrived whole: the bytes read equal the text kept, with 400 newlines. */
    ck_assert_uint_eq(total, strlen(all));
    size_t lines = 0;
    for (const char *q = all; (q = strchr(q, '\n')) != NULL; q++)
        lines++;
    ck_assert_uint_eq(lines, 400);
    const char *p = all;
    for (int i = 0; i < 400; i++) {
        char want[16];
        snprintf(want, sizeof want, "line %03d", i);
        p = strstr(p, want);
        ck_assert_msg(p != NULL, "missing %s", want);
    }
    free(all);
}
END_TEST

static void *thread_logs(void *arg)
{
    gale_log_info(GALE_LOG_GENERAL, "from thread");
    return NULL; /* no explicit flush: thread exit must flush */
}

START_TEST(test_log_thread_exit_flushes_its_buffer)
{
    char buf[1024];
    pthread_t t;
    pthread_create(&t, NULL, thread_logs, NULL);
    pthread_join(t, NULL);
    drain(buf, sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "from thread"));
}
END_TEST

START_TEST(test_errors_names_and_messages)
{
    ck_assert_str_eq(gale_err_name(-ECONNRESET), "ECONNRESET");
    ck_assert_str_eq(gale_err_name(GALE_EEOF), "GALE_EEOF");
    ck_assert_str_eq(gale_strerror(GALE_EEOF), "end of stream");
    ck_assert_str_eq(gale_strerror(-ENOENT), "No such file or directory");
    ck_assert_str_eq(gale_strerror(ENOENT), "No such file or directory");
    ck_assert_str_eq(gale_err_name(-99999), "UNKNOWN");
    ck_assert_str_eq(gale_strerror(-99999), "unknown error");
    ck_assert_str_eq(gale_strerror(0), "success");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_log_line_format_like_tornado);
    tcase_add_test(tc, test_log_info_is_buffered_until_flush);
    tcase_add_test(tc, test_log_write_preformatted_line_same_format);
    tcase_add_test(tc, test_log_append_parts_byte_exact);
    tcase_add_test(tc, test_log_warning_writes_at_once_after_queued_lines);
    tcase_add_test(tc, test_log_level_filters_lower_levels);
    tcase_add_test(tc, test_log_long_line_truncated_not_overflowing);
    tcase_add_test(tc, test_log_buffer_overflow_flushes_in_order);
    tcase_add_test(tc, test_log_thread_exit_flushes_its_buffer);
    suite_add_tcase(s, tc);
    TCase *tenv = tcase_create("environment");
    tcase_add_test(tenv, test_log_level_from_environment);
    tcase_add_test(tenv, test_log_level_bad_environment_falls_back_to_info);
    suite_add_tcase(s, tenv);
    TCase *te = tcase_create("errors");
    tcase_add_test(te, test_errors_names_and_messages);
    suite_add_tcase(s, te);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

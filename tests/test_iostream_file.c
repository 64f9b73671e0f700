/* iostream_file: file ranges in a stream's write queue (gale_stream_sendfile): bytes queued
 * before and after leave in order around the file's bytes, the fd's own position is untouched,
 * a range longer than the file fails the stream with -EIO, and a close fails what is queued. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "net/iostream.h"
#include "testutil.h"

static gale_loop *loop;
static int done_status[8], ndone;

static void on_done(gale_stream *s, int status, void *arg)
{
    done_status[(long)arg] = status;
    ndone++;
}

static bool all_done(void *arg) { return ndone == *(int *)arg; }

static int make_file(size_t len)
{
    char path[] = "/tmp/gale-sf-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    unlink(path);
    char *buf = malloc(len);
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)('a' + i % 26);
    ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
    free(buf);
    return fd;
}

/* A stream on one end of a unix socket pair; `*peer` gets the other end (non-blocking). */
static gale_stream *stream_pair(int *peer)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    gale_stream *s;
    ck_assert_int_eq(gale_stream_new(loop, sv[0], &s), 0);
    *peer = sv[1];
    return s;
}

static void setup(void)
{
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    ndone = 0;
    memset(done_status, 0x7f, sizeof done_status);
}

static void teardown(void)
{
    test_run_for(loop, 0.02);
    gale_loop_free(loop);
}

struct drain {
    int fd;
    size_t want, got;
    char *buf;
};

static void drain_main(void *arg)
{
    struct drain *d = arg;
    while (d->got < d->want) {
        ssize_t n = read(d->fd, d->buf + d->got, d->want - d->got);
        if (n <= 0)
            break;
        d->got += (size_t)n;
    }
}

START_TEST(test_iostream_file_range_between_writes_in_order)
{
    int peer;
    gale_stream *s = stream_pair(&peer);
    fcntl(peer, F_SETFL, 0);
    size_t flen = 3u << 20; /* more than a socket holds: the range waits for the reader */
    int fd = make_file(flen);
    off_t pos = lseek(fd, 0, SEEK_CUR);
    ck_assert_int_eq(gale_stream_write(s, "HEAD", 4, on_done, (void *)0), 0);
    ck_assert_int_eq(gale_stream_sendfile(s, fd, 10, flen - 20, on_done, (void *)1), 0);
    ck_assert_int_eq(gale_stream_write(s, "TAIL", 4, on_done, (void *)2), 0);
    ck_assert_int_eq(gale_stream_sendfile(s, fd, 0, 0, on_done, (void *)3), 0);
    ck_assert_uint_gt(gale_stream_write_pending(s), 0);
    ck_assert_int_eq(ndone, 0); /* never from the call */
    struct drain d = {.fd = peer, .want = 8 + flen - 20, .buf = malloc(8 + flen)};
    ck_assert(test_run_thread(loop, drain_main, &d, 20));
    int want = 4;
    ck_assert(test_wait_until(loop, all_done, &want, 5));
    ck_assert_uint_eq(d.got, d.want);
    ck_assert_mem_eq(d.buf, "HEAD", 4);
    bool same = true;
    for (size_t i = 0; i < flen - 20; i++)
        same = same && d.buf[4 + i] == (char)('a' + (i + 10) % 26);
    ck_assert(same);
    ck_assert_mem_eq(d.buf + 4 + flen - 20, "TAIL", 4);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(done_status[i], 0);
    ck_assert_int_eq(lseek(fd, 0, SEEK_CUR), pos); /* the fd's position is the caller's */
    ck_assert_uint_eq(gale_stream_write_pending(s), 0);
    free(d.buf);
    gale_stream_close(s, 0);
    close(fd);
    close(peer);
}
END_TEST

START_TEST(test_iostream_file_shorter_than_range_fails_with_eio)
{
    int peer;
    gale_stream *s = stream_pair(&peer);
    int fd = make_file(100);
    ck_assert_int_eq(gale_stream_sendfile(s, -1, 0, 1, on_done, (void *)1), -EINVAL);
    ck_assert_int_eq(gale_stream_sendfile(s, fd, -1, 1, on_done, (void *)1), -EINVAL);
    gale_stream_set_close_cb(s, on_done, (void *)2);
    ck_assert_int_eq(gale_stream_sendfile(s, fd, 0, 200, on_done, (void *)0), 0);
    /* The idle socket took the range at once and found the file short: closed already. */
    ck_assert_int_eq(gale_stream_sendfile(s, fd, 0, 1, on_done, (void *)1), -EPIPE);
    int want = 2;
    ck_assert(test_wait_until(loop, all_done, &want, 5));
    ck_assert_int_eq(done_status[0], -EIO);
    ck_assert_int_eq(done_status[2], -EIO); /* the stream closed with that reason */
    close(fd);
    close(peer);
}
END_TEST

START_TEST(test_iostream_file_close_cancels_queued_range)
{
    int peer;
    gale_stream *s = stream_pair(&peer);
    int fd = make_file(4u << 20);
    ck_assert_int_eq(gale_stream_sendfile(s, fd, 0, 4u << 20, on_done, (void *)0), 0);
    gale_stream_close(s, 0);
    int want = 1;
    ck_assert(test_wait_until(loop, all_done, &want, 5));
    ck_assert_int_eq(done_status[0], -ECANCELED);
    close(fd);
    close(peer);
}
END_TEST

static Suite *iostream_file_suite(void)
{
    Suite *s = suite_create("iostream_file");
    TCase *t = tcase_create("sendfile");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_iostream_file_range_between_writes_in_order);
    tcase_add_test(t, test_iostream_file_shorter_than_range_fails_with_eio);
    tcase_add_test(t, test_iostream_file_close_cancels_queued_range);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(iostream_file_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

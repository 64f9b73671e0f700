/* Buffer suite: growth, compaction, release, the cap and the resumable delimiter search, with the
 * invariant checked between steps. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buffer.h"

#define CHECKED(b) ck_assert_int_eq(gale_buffer_check(b), 0)

START_TEST(test_buffer_init_allocates_nothing)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    CHECKED(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(gale_buffer_len(&b), 0);
    size_t pos;
    ck_assert(!gale_buffer_find(&b, "x", 1, &pos));
    gale_buffer_consume(&b, 10);
    CHECKED(&b);
    gale_buffer_free(&b);
}
END_TEST

START_TEST(test_buffer_append_consume_keeps_bytes_in_order)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    /* A FIFO of a counter sequence: every byte that comes out is the next one expected. */
    unsigned char in = 0, out = 0;
    size_t peak = 0;
    for (int round = 0; round < 2000; round++) {
        unsigned char chunk[300];
        size_t n = (size_t)(round * 7 % 300);
        for (size_t i = 0; i < n; i++)
            chunk[i] = in++;
        ck_assert_int_eq(gale_buffer_append(&b, chunk, n), 0);
        CHECKED(&b);
        if (gale_buffer_len(&b) > peak)
            peak = gale_buffer_len(&b);
        size_t take = (size_t)(round * 13 % 311);
        if (take > gale_buffer_len(&b))
            take = gale_buffer_len(&b);
        const unsigned char *d = (const unsigned char *)gale_buffer_data(&b);
        for (size_t i = 0; i < take; i++)
            ck_assert_uint_eq(d[i], out++);
        gale_buffer_consume(&b, take);
        CHECKED(&b);
        /* The allocation stays within a small factor of the most bytes ever held. */
        ck_assert_uint_le(b.cap, 2 * peak + 512);
    }
    gale_buffer_free(&b);
    CHECKED(&b);
}
END_TEST

START_TEST(test_buffer_compacts_when_dead_prefix_is_large)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    char data[1024];
    memset(data, 'a', sizeof data);
    ck_assert_int_eq(gale_buffer_append(&b, data, 1024), 0);
    size_t cap = b.cap;
    char *mem = b.data;
    gale_buffer_consume(&b, 1000); /* 24 live, 1000 dead */
    CHECKED(&b);
    ck_assert_uint_eq(b.end, cap); /* no room left at the end: the next append must move */
    ck_assert_int_eq(gale_buffer_append(&b, "0123456789", 10), 0);
    CHECKED(&b);
    ck_assert_uint_eq(b.cap, cap);
    ck_assert_ptr_eq(b.data, mem);
    ck_assert_uint_eq(b.start, 0);
    ck_assert_uint_eq(gale_buffer_len(&b), 34);
    ck_assert_int_eq(memcmp(gale_buffer_data(&b) + 24, "0123456789", 10), 0);
    gale_buffer_free(&b);
}
END_TEST

START_TEST(test_buffer_grows_by_doubling_when_prefix_is_small)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    char data[4096];
    memset(data, 'z', sizeof data);
    ck_assert_int_eq(gale_buffer_append(&b, data, 1000), 0);
    size_t cap = b.cap;
    gale_buffer_consume(&b, 10);
    ck_assert_int_eq(gale_buffer_append(&b, data, cap), 0);
    CHECKED(&b);
    ck_assert_uint_ge(b.cap, 2 * cap);
    ck_assert_uint_eq(gale_buffer_len(&b), 990 + cap);
    ck_assert_uint_eq(b.start, 0);
    gale_buffer_free(&b);
}
END_TEST

START_TEST(test_buffer_releases_large_memory_when_empty)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    static char big[GALE_BUFFER_KEEP * 4];
    ck_assert_int_eq(gale_buffer_append(&b, big, sizeof big), 0);
    gale_buffer_consume(&b, sizeof big - 1);
    ck_assert_ptr_nonnull(b.data);
    gale_buffer_consume(&b, 1);
    CHECKED(&b);
    ck_assert_ptr_null(b.data);
    ck_assert_uint_eq(b.cap, 0);
    /* A small buffer is kept for reuse. */
    ck_assert_int_eq(gale_buffer_append(&b, "abc", 3), 0);
    gale_buffer_consume(&b, 3);
    CHECKED(&b);
    ck_assert_ptr_nonnull(b.data);
    ck_assert_uint_le(b.cap, GALE_BUFFER_KEEP);
    gale_buffer_free(&b);
}
END_TEST

START_TEST(test_buffer_cap_refuses_and_leaves_buffer_unchanged)
{
    gale_buffer b;
    gale_buffer_init(&b, 1000);
    char data[1001];
    memset(data, 'q', sizeof data);
    ck_assert_int_eq(gale_buffer_append(&b, data, 1001), -ENOBUFS);
    CHECKED(&b);
    ck_assert_uint_eq(gale_buffer_len(&b), 0);
    ck_assert_int_eq(gale_buffer_append(&b, data, 600), 0);
    ck_assert_int_eq(gale_buffer_append(&b, data, 401), -ENOBUFS);
    ck_assert_uint_eq(gale_buffer_len(&b), 600);
    ck_assert_int_eq(gale_buffer_append(&b, data, 400), 0);
    ck_assert_uint_eq(gale_buffer_len(&b), 1000);
    ck_assert_uint_le(b.cap, 1000);
    CHECKED(&b);
    char *p;
    size_t avail;
    ck_assert_int_eq(gale_buffer_reserve(&b, 1, &p, &avail), -ENOBUFS);
    gale_buffer_consume(&b, 100);
    ck_assert_int_eq(gale_buffer_reserve(&b, 1, &p, &avail), 0);
    ck_assert_uint_ge(avail, 1);
    ck_assert_uint_le(avail, 100);
    ck_assert_int_eq(gale_buffer_set_max(&b, 10), -ENOBUFS);
    ck_assert_uint_eq(b.max, 1000);
    ck_assert_int_eq(gale_buffer_set_max(&b, 0), 0);
    ck_assert_uint_eq(b.max, SIZE_MAX);
    CHECKED(&b);
    gale_buffer_free(&b);
}
END_TEST

START_TEST(test_buffer_reserve_commit)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    char *p;
    size_t avail;
    ck_assert_int_eq(gale_buffer_reserve(&b, 100, &p, &avail), 0);
    ck_assert_uint_ge(avail, 100);
    memcpy(p, "hello", 5);
    gale_buffer_commit(&b, 5);
    CHECKED(&b);
    ck_assert_uint_eq(gale_buffer_len(&b), 5);
    ck_assert_int_eq(memcmp(gale_buffer_data(&b), "hello", 5), 0);
    ck_assert_int_eq(gale_buffer_reserve(&b, 0, &p, &avail), 0);
    ck_assert_uint_ge(avail, 1);
    gale_buffer_free(&b);
}
END_TEST

START_TEST(test_buffer_find_across_single_byte_appends)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    const char *msg = "GET / HTTP/1.1\r\nHost: x\r\n\r\ntail";
    const char *delim = "\r\n\r\n";
    size_t expect = (size_t)(strstr(msg, delim) - msg);
    size_t pos = 0;
    bool found = false;
    for (size_t i = 0; msg[i]; i++) {
        ck_assert_int_eq(gale_buffer_append(&b, msg + i, 1), 0);
        found = gale_buffer_find(&b, delim, 4, &pos);
        CHECKED(&b);
        if (found) {
            ck_assert_uint_eq(i, expect + 3);
            break;
        }
        /* The search resumes close to the end: it never rescans old bytes. */
        ck_assert_uint_ge(b.scan + 3, gale_buffer_len(&b) > 3 ? gale_buffer_len(&b) : 3);
    }
    ck_assert(found);
    ck_assert_uint_eq(pos, expect);
    /* Searching again without consuming finds the same match. */
    ck_assert(gale_buffer_find(&b, delim, 4, &pos));
    ck_assert_uint_eq(pos, expect);
    gale_buffer_free(&b);
}
END_TEST

START_TEST(test_buffer_find_delimiter_split_across_appends)
{
    const char *msg = "abcdefXYZghi";
    for (size_t split = 0; split <= strlen(msg); split++) {
        gale_buffer b;
        gale_buffer_init(&b, 0);
        size_t pos;
        ck_assert_int_eq(gale_buffer_append(&b, msg, split), 0);
        bool first = gale_buffer_find(&b, "XYZ", 3, &pos);
        ck_assert(first == (split >= 9));
        ck_assert_int_eq(gale_buffer_append(&b, msg + split, strlen(msg) - split), 0);
        ck_assert(gale_buffer_find(&b, "XYZ", 3, &pos));
        ck_assert_uint_eq(pos, 6);
        CHECKED(&b);
        gale_buffer_free(&b);
    }
}
END_TEST

START_TEST(test_buffer_find_single_byte_delimiter)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    size_t pos;
    ck_assert_int_eq(gale_buffer_append(&b, "abc", 3), 0);
    ck_assert(!gale_buffer_find(&b, "\n", 1, &pos));
    ck_assert_uint_eq(b.scan, 3);
    ck_assert_int_eq(gale_buffer_append(&b, "d\ne", 3), 0);
    ck_assert(gale_buffer_find(&b, "\n", 1, &pos));
    ck_assert_uint_eq(pos, 4);
    gale_buffer_free(&b);
}
END_TEST

START_TEST(test_buffer_find_resets_on_consume_and_other_delimiter)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    size_t pos;
    const char *d1 = "\r\n", *d2 = "ab";
    ck_assert_int_eq(gale_buffer_append(&b, "xxabxx", 6), 0);
    ck_assert(!gale_buffer_find(&b, d1, 2, &pos));
    ck_assert_uint_eq(b.scan, 5);
    /* A different delimiter searches from the front. */
    ck_assert(gale_buffer_find(&b, d2, 2, &pos));
    ck_assert_uint_eq(pos, 2);
    ck_assert(!gale_buffer_find(&b, d1, 2, &pos));
    gale_buffer_consume(&b, 1);
    CHECKED(&b);
    ck_assert_uint_eq(b.scan, 0);
    ck_assert_ptr_null(b.scan_key);
    ck_assert(gale_buffer_find(&b, d2, 2, &pos));
    ck_assert_uint_eq(pos, 1);
    /* Same pointer, new contents: reset_scan makes the next search start at the front. */
    char key[2] = {'x', 'x'};
    ck_assert(gale_buffer_find(&b, key, 2, &pos));
    ck_assert_uint_eq(pos, 3);
    gale_buffer_reset_scan(&b);
    key[0] = 'b';
    key[1] = 'x';
    ck_assert(gale_buffer_find(&b, key, 2, &pos));
    ck_assert_uint_eq(pos, 2);
    ck_assert(!gale_buffer_find(&b, "q", 0, &pos));
    gale_buffer_free(&b);
}
END_TEST

START_TEST(test_buffer_find_is_linear_for_byte_at_a_time_input)
{
    /* 200 KB fed a byte at a time: quadratic rescanning would take minutes, linear is instant. */
    gale_buffer b;
    gale_buffer_init(&b, 0);
    size_t pos;
    for (size_t i = 0; i < 200000; i++) {
        ck_assert_int_eq(gale_buffer_append(&b, "a", 1), 0);
        ck_assert(!gale_buffer_find(&b, "\r\n\r\n", 4, &pos));
    }
    ck_assert_int_eq(gale_buffer_append(&b, "\r\n\r\n", 4), 0);
    ck_assert(gale_buffer_find(&b, "\r\n\r\n", 4, &pos));
    ck_assert_uint_eq(pos, 200000);
    gale_buffer_free(&b);
}
END_TEST

/* A full buffer that loses one byte at the front and gains one at the end, over and over: the
 * live bytes may move only O(log n) times, not once per append (amortised O(1) per byte). */
START_TEST(test_buffer_trickle_through_full_buffer_moves_rarely)
{
    gale_buffer b;
    gale_buffer_init(&b, 0);
    static char fill[8192];
    for (size_t i = 0; i < sizeof fill; i++)
        fill[i] = (char)(i % 251);
    ck_assert_int_eq(gale_buffer_append(&b, fill, 4096), 0);
    ck_assert_uint_eq(b.end, b.cap); /* full: the next append needs room */
    size_t in = 4096, out = 0;
    int moves = 0;
    for (int i = 0; i < 20000; i++) {
        ck_assert_int_eq(gale_buffer_data(&b)[0], (char)(out % 251));
        gale_buffer_consume(&b, 1);
        out++;
        const char *before = b.data;
        char c = (char)(in % 251);
        ck_assert_int_eq(gale_buffer_append(&b, &c, 1), 0);
        in++;
        moves += b.data != before;
        CHECKED(&b);
    }
    ck_assert_uint_eq(gale_buffer_len(&b), 4096);
    ck_assert_int_le(moves, 16);
    gale_buffer_free(&b);
}
END_TEST

static Suite *buffer_suite(void)
{
    Suite *s = suite_create("buffer");
    TCase *tc = tcase_create("buffer");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_buffer_init_allocates_nothing);
    tcase_add_test(tc, test_buffer_append_consume_keeps_bytes_in_order);
    tcase_add_test(tc, test_buffer_compacts_when_dead_prefix_is_large);
    tcase_add_test(tc, test_buffer_grows_by_doubling_when_prefix_is_small);
    tcase_add_test(tc, test_buffer_releases_large_memory_when_empty);
    tcase_add_test(tc, test_buffer_cap_refuses_and_leaves_buffer_unchanged);
    tcase_add_test(tc, test_buffer_reserve_commit);
    tcase_add_test(tc, test_buffer_find_across_single_byte_appends);
    tcase_add_test(tc, test_buffer_find_delimiter_split_across_appends);
    tcase_add_test(tc, test_buffer_find_single_byte_delimiter);
    tcase_add_test(tc, test_buffer_find_resets_on_consume_and_other_delimiter);
    tcase_add_test(tc, test_buffer_find_is_linear_for_byte_at_a_time_input);
    tcase_add_test(tc, test_buffer_trickle_through_full_buffer_moves_rarely);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(buffer_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

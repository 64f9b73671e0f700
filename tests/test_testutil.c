/* testutil: the suites' own raw HTTP response parser (tests/rawhttp.c), fed canned bytes whole
 * and cut at every byte, so a failure elsewhere is the server's and not the client's. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rawhttp.h"

static const char chunked[] = "HTTP/1.1 200 OK\r\n"
                              "Transfer-Encoding: gzip, Chunked\r\n"
                              "X-Two: a\r\n"
                              "x-two:\tb\r\n"
                              "\r\n"
                              "3;name=value\r\nabc\r\n"
                              "A ; x\r\n0123456789\r\n"
                              "0\r\n"
                              "Checksum: 1f\r\n"
                              "X-End: yes\r\n"
                              "\r\n";

static void check_chunked(const struct test_http_response *r)
{
    ck_assert_int_eq(r->minor, 1);
    ck_assert_int_eq(r->status, 200);
    ck_assert_str_eq(r->reason, "OK");
    ck_assert_int_eq(r->nheaders, 3);
    ck_assert_int_eq(test_http_header_count(r, "X-TWO"), 2);
    ck_assert_str_eq(test_http_header(r, "x-two"), "a");
    ck_assert(test_http_header_is(r, "X-Two", "b"));
    ck_assert(!test_http_header_is(r, "X-Two", "c"));
    ck_assert_ptr_null(test_http_header(r, "Content-Length"));
    ck_assert(r->chunked);
    ck_assert_uint_eq(r->body_len, 13);
    ck_assert_str_eq(r->body, "abc0123456789");
    ck_assert_int_eq(r->nchunks, 2);
    ck_assert_uint_eq(r->chunk_lens[0], 3);
    ck_assert_uint_eq(r->chunk_lens[1], 10);
    ck_assert_int_eq(r->ntrailers, 2);
    ck_assert_str_eq(r->trailers[0].name, "Checksum");
    ck_assert_str_eq(r->trailers[0].value, "1f");
    ck_assert_str_eq(r->trailers[1].value, "yes");
    ck_assert_uint_eq(r->wire_len, sizeof chunked - 1);
    ck_assert_uint_eq(r->head_len, strstr(chunked, "\r\n\r\n") + 4 - chunked);
    ck_assert_mem_eq(r->head, chunked, r->head_len);
}

START_TEST(test_testutil_chunked_with_extensions_and_trailers)
{
    struct test_http_response r;
    ck_assert_int_eq(test_http_parse(chunked, sizeof chunked - 1, false, false, &r),
                     (ssize_t)sizeof chunked - 1);
    check_chunked(&r);
    test_http_response_free(&r);
}
END_TEST

/* Every prefix is incomplete (and an error once the connection has ended); nothing leaks. */
START_TEST(test_testutil_chunked_cut_at_every_byte_is_incomplete)
{
    struct test_http_response r;
    for (size_t cut = 0; cut < sizeof chunked - 1; cut++) {
        ck_assert_msg(test_http_parse(chunked, cut, false, false, &r) == 0, "cut %zu", cut);
        ck_assert_ptr_null(r.body);
        ck_assert_msg(test_http_parse(chunked, cut, true, false, &r) == -EPIPE, "cut %zu", cut);
    }
}
END_TEST

START_TEST(test_testutil_two_pipelined_responses)
{
    static const char two[] = "HTTP/1.1 204 No Content\r\nX: 1\r\n\r\n"
                              "HTTP/1.0 404 Not Found\r\nContent-Length: 4\r\n\r\nnopeHTTP/1.1";
    struct test_http_response r;
    ssize_t n = test_http_parse(two, sizeof two - 1, false, false, &r);
    ck_assert_int_eq(n, strstr(two, "HTTP/1.0") - two);
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(r.reason, "No Content");
    ck_assert_uint_eq(r.body_len, 0);
    test_http_response_free(&r);
    ssize_t m = test_http_parse(two + n, sizeof two - 1 - (size_t)n, false, false, &r);
    ck_assert_int_eq(m, strstr(two, "nope") + 4 - (two + n));
    ck_assert_int_eq(r.minor, 0);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(r.body, "nope");
    ck_assert_uint_eq(r.body_off, strstr(two, "nope") - (two + n));
    test_http_response_free(&r);
    ck_assert_int_eq(test_http_parse(two + n + m, 8, false, false, &r), 0);
}
END_TEST

START_TEST(test_testutil_head_and_close_delimited_bodies)
{
    static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    struct test_http_response r;
    ck_assert_int_eq(test_http_parse(resp, sizeof resp - 1, false, true, &r), sizeof resp - 1);
    ck_assert_uint_eq(r.body_len, 0);
    test_http_response_free(&r);
    ck_assert_int_eq(test_http_parse(resp, sizeof resp - 1, false, false, &r), 0);

    static const char until_close[] = "HTTP/1.0 200 OK\r\n\r\nall of it";
    ck_assert_int_eq(test_http_parse(until_close, sizeof until_close - 1, false, false, &r), 0);
    ck_assert_int_eq(test_http_parse(until_close, sizeof until_close - 1, true, false, &r),
                     sizeof until_close - 1);
    ck_assert_str_eq(r.body, "all of it");
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_testutil_truncated_and_malformed_are_errors)
{
    static const char *const bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
    };
    struct test_http_response r;
    static const char nul[] = "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n";
    ck_assert_int_eq(test_http_parse(nul, sizeof nul - 1, false, false, &r), -EPROTO);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ck_assert_msg(test_http_parse(bad[i], strlen(bad[i]), false, false, &r) == -EPROTO,
                      "case %zu", i);
    static const char truncated[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort";
    ck_assert_int_eq(test_http_parse(truncated, sizeof truncated - 1, true, false, &r), -EPIPE);
    ck_assert_ptr_null(r.head);
    test_http_response_free(&r); /* a failed parse leaves nothing to free; freeing is harmless */
}
END_TEST

static Suite *testutil_suite(void)
{
    Suite *s = suite_create("testutil");
    TCase *tc = tcase_create("rawhttp");
    tcase_add_test(tc, test_testutil_chunked_with_extensions_and_trailers);
    tcase_add_test(tc, test_testutil_chunked_cut_at_every_byte_is_incomplete);
    tcase_add_test(tc, test_testutil_two_pipelined_responses);
    tcase_add_test(tc, test_testutil_head_and_close_delimited_bodies);
    tcase_add_test(tc, test_testutil_truncated_and_malformed_are_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(testutil_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

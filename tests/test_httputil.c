/* httputil: header lookups, tokens, reason phrases, dates. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/httputil.h"

static void add(gale_http_headers *h, const char *name, const char *value)
{
    ck_assert_int_eq(gale_http_headers_add(h, name, strlen(name), value, strlen(value)), 0);
}

START_TEST(test_httputil_get_is_case_insensitive)
{
    gale_http_headers h = {0};
    add(&h, "Content-Type", "text/plain");
    add(&h, "X-Thing", "1");
    size_t len = 0;
    const char *v = gale_http_headers_get(&h, "content-type", &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(len, 10);
    ck_assert(memcmp(v, "text/plain", 10) == 0);
    ck_assert_ptr_nonnull(gale_http_headers_get(&h, "X-THING", NULL));
    ck_assert_ptr_null(gale_http_headers_get(&h, "X-Thin", NULL));
    ck_assert_ptr_null(gale_http_headers_get(&h, "X-Things", NULL));
    gale_http_headers_free(&h);
    ck_assert_uint_eq(h.n, 0);
}
END_TEST

START_TEST(test_httputil_repeated_headers_kept_in_order)
{
    gale_http_headers h = {0};
    static const char *vals[] = {"0",  "1",  "2",  "3",  "4",  "5",  "6",  "7",  "8",  "9",
                                 "10", "11", "12", "13", "14", "15", "16", "17", "18", "19"};
    for (int i = 0; i < 20; i++) /* also past the first growth; values are slices, not copies */
        add(&h, i % 2 ? "Set-Cookie" : "X-Other", vals[i]);
    size_t cur = 0;
    const gale_http_header *it;
    int seen = 0;
    while ((it = gale_http_headers_next(&h, "set-cookie", &cur))) {
        char want[16];
        snprintf(want, sizeof want, "%d", seen * 2 + 1);
        ck_assert(gale_str_ieq(it->value.p, it->value.len, want));
        seen++;
    }
    ck_assert_int_eq(seen, 10);
    ck_assert_ptr_null(gale_http_headers_next(&h, "set-cookie", &cur));
    gale_http_headers_free(&h);
}
END_TEST

START_TEST(test_httputil_has_token)
{
    gale_http_headers h = {0};
    add(&h, "Connection", "Keep-Alive, Upgrade");
    add(&h, "connection", " ,close\t");
    add(&h, "Expect", "100-continue");
    ck_assert(gale_http_headers_has_token(&h, "Connection", "keep-alive"));
    ck_assert(gale_http_headers_has_token(&h, "Connection", "upgrade"));
    ck_assert(gale_http_headers_has_token(&h, "CONNECTION", "close"));
    ck_assert(!gale_http_headers_has_token(&h, "Connection", "keep"));
    ck_assert(!gale_http_headers_has_token(&h, "Connection", ""));
    ck_assert(gale_http_headers_has_token(&h, "expect", "100-Continue"));
    ck_assert(!gale_http_headers_has_token(&h, "Upgrade", "upgrade"));
    gale_http_headers_free(&h);
}
END_TEST

START_TEST(test_httputil_empty_value_and_bad_args)
{
    gale_http_headers h = {0};
    ck_assert_int_eq(gale_http_headers_add(&h, "X-Empty", 7, NULL, 0), 0);
    size_t len = 99;
    const char *v = gale_http_headers_get(&h, "x-empty", &len);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(gale_http_headers_add(NULL, "a", 1, "b", 1), -EINVAL);
    ck_assert_ptr_null(gale_http_headers_get(NULL, "a", NULL));
    gale_http_headers_free(&h);
    gale_http_headers_free(NULL);
}
END_TEST

START_TEST(test_httputil_reason_phrases)
{
    ck_assert_str_eq(gale_http_reason(200), "OK");
    ck_assert_str_eq(gale_http_reason(404), "Not Found");
    ck_assert_str_eq(gale_http_reason(413), "Payload Too Large");
    ck_assert_str_eq(gale_http_reason(431), "Request Header Fields Too Large");
    ck_assert_str_eq(gale_http_reason(503), "Service Unavailable");
    ck_assert_str_eq(gale_http_reason(299), "Unknown");
    ck_assert_str_eq(gale_http_reason(-1), "Unknown");
}
END_TEST

START_TEST(test_httputil_format_date)
{
    char buf[32];
    gale_http_format_date(0, buf);
    ck_assert_str_eq(buf, "Thu, 01 Jan 1970 00:00:00 GMT");
    gale_http_format_date(784111777, buf); /* RFC 9110's example */
    ck_assert_str_eq(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    gale_http_format_date(1795634285LL, buf);
    ck_assert_str_eq(buf, "Wed, 25 Nov 2026 19:18:05 GMT");
}
END_TEST

START_TEST(test_httputil_date_is_now_and_cached)
{
    char before[32], after[32];
    gale_http_format_date((long long)time(NULL), before);
    const char *d = gale_http_date();
    gale_http_format_date((long long)time(NULL), after);
    ck_assert_uint_eq(strlen(d), 29);
    ck_assert(strcmp(d, before) == 0 || strcmp(d, after) == 0);
    ck_assert_ptr_eq(gale_http_date(), d); /* one buffer per thread */
}
END_TEST

START_TEST(test_httputil_str_ieq)
{
    ck_assert(gale_str_ieq("Content-Length", 14, "content-length"));
    ck_assert(!gale_str_ieq("Content-Length", 13, "content-length"));
    ck_assert(!gale_str_ieq(NULL, 0, ""));
    ck_assert(gale_str_ieq("", 0, ""));
}
END_TEST

static Suite *httputil_suite(void)
{
    Suite *s = suite_create("httputil");
    TCase *tc = tcase_create("headers");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_httputil_get_is_case_insensitive);
    tcase_add_test(tc, test_httputil_repeated_headers_kept_in_order);
    tcase_add_test(tc, test_httputil_has_token);
    tcase_add_test(tc, test_httputil_empty_value_and_bad_args);
    tcase_add_test(tc, test_httputil_str_ieq);
    suite_add_tcase(s, tc);
    tc = tcase_create("reasons_dates");
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_httputil_reason_phrases);
    tcase_add_test(tc, test_httputil_format_date);
    tcase_add_test(tc, test_httputil_date_is_now_and_cached);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(httputil_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

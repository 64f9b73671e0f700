/* escape: HTML and URL escaping as Tornado's xhtml_escape and url_escape write them, and the
 * demo's use of it. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "http/escape.h"
#include "http/form.h"
#include "webtest.h"

static void expect_xhtml(const char *in, const char *want)
{
    char out[256];
    size_t n = gale_xhtml_escape(out, in, strlen(in));
    ck_assert_uint_le(n, GALE_XHTML_ESCAPE_MAX(strlen(in)));
    out[n] = '\0';
    ck_assert_str_eq(out, want);
}

static void expect_url(const char *in, bool plus, const char *want)
{
    char out[256];
    size_t n = gale_url_escape(out, in, strlen(in), plus);
    out[n] = '\0';
    ck_assert_str_eq(out, want);
    /* and back */
    char back[256];
    size_t m = gale_url_unescape(back, out, n, plus);
    ck_assert_uint_eq(m, strlen(in));
    ck_assert_mem_eq(back, in, m);
}

START_TEST(test_escape_xhtml_the_five_characters)
{
    expect_xhtml("", "");
    expect_xhtml("plain text", "plain text");
    expect_xhtml("<script>alert('x')</script>", "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
    expect_xhtml("a & b \"c\"", "a &amp; b &quot;c&quot;");
    expect_xhtml("&amp;", "&amp;amp;"); /* escaping twice shows the first escape */
    expect_xhtml("J\xc3\xb6rg \xe2\x9c\x93", "J\xc3\xb6rg \xe2\x9c\x93"); /* UTF-8 kept */
    expect_xhtml("'''''", "&#39;&#39;&#39;&#39;&#39;");
    expect_xhtml("\"\"\"", "&quot;&quot;&quot;"); /* the worst case: 6 bytes each */
}
END_TEST

/* Python: urllib.parse.quote_plus / quote, which Tornado's url_escape calls. */
START_TEST(test_escape_url_plus_and_path)
{
    expect_url("a b/c?d=e&f", true, "a+b%2Fc%3Fd%3De%26f");
    expect_url("a b/c?d=e&f", false, "a%20b/c%3Fd%3De%26f");
    expect_url("AZaz09_.-~", true, "AZaz09_.-~");
    expect_url("caf\xc3\xa9", true, "caf%C3%A9");
    expect_url("100%+", true, "100%25%2B");
    char nul[] = {'a', '\0', 'b'};
    char out[16];
    size_t n = gale_url_escape(out, nul, 3, true);
    ck_assert_uint_eq(n, 5);
    ck_assert_mem_eq(out, "a%00b", 5);
}
END_TEST

static void escaped_get(gale_handler *h)
{
    const char *q = gale_get_argument(h, "q", "");
    gale_write_escaped(h, q);
    gale_write_str(h, "|");
    gale_write_str(h, gale_xhtml_escape_dup(h, q));
    gale_write_str(h, "|");
    gale_write_str(h, gale_url_escape_dup(h, q, true));
}
static const gale_handler_class escaped = {.get = escaped_get};

START_TEST(test_escape_handler_helpers)
{
    wt_setup();
    ck_assert_int_eq(gale_app_route(wt_app, "/e", &escaped, NULL), 0);
    wt_listen();
    struct test_http_response r = wt_req("GET", "/e?q=%3Cb%3E+%26", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "&lt;b&gt; &amp;|&lt;b&gt; &amp;|%3Cb%3E+%26");
    test_http_response_free(&r);
    /* A long value takes the heap path of gale_write_escaped. */
    char target[2200] = "/e?q=";
    for (int i = 0; i < 500; i++)
        strcat(target, "%3C");
    r = wt_req("GET", target, NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, 500 * 4 + 1 + 500 * 4 + 1 + 500 * 3);
    ck_assert_mem_eq(r.body, "&lt;&lt;", 8);
    test_http_response_free(&r);
    wt_teardown();
}
END_TEST

static Suite *escape_suite(void)
{
    Suite *s = suite_create("escape");
    TCase *t = tcase_create("escape");
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_escape_xhtml_the_five_characters);
    tcase_add_test(t, test_escape_url_plus_and_path);
    tcase_add_test(t, test_escape_handler_helpers);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(escape_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* form: query strings, urlencoded and multipart bodies, cookies. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "http/form.h"

/* A tiny arena for the parser: every block is freed at teardown, so ASan sees no leaks. */
struct block {
    struct block *next;
    max_align_t data[];
};
static struct block *blocks;
static size_t nallocs, fail_after = (size_t)-1;

static void *arena_alloc(void *ctx, size_t size)
{
    (void)ctx;
    if (nallocs++ >= fail_after)
        return NULL;
    struct block *b = malloc(sizeof *b + size);
    if (!b)
        return NULL;
    b->next = blocks;
    blocks = b;
    return b->data;
}

static gale_form form;

static void setup(void)
{
    gale_log_set_level(GALE_LOG_ERROR); /* the malformed-input tests log warnings on purpose */
    nallocs = 0;
    fail_after = (size_t)-1;
    gale_form_init(&form, arena_alloc, NULL);
}

static void teardown(void)
{
    while (blocks) {
        struct block *n = blocks->next;
        free(blocks);
        blocks = n;
    }
}

static int parse_q(const char *s) { return gale_form_parse_urlencoded(&form, s, strlen(s)); }

/* The i-th value of `name`, or NULL. */
static const char *val(const char *name, size_t i)
{
    const gale_form_arg *a = gale_form_find(&form, name, i);
    return a ? a->value : NULL;
}

START_TEST(test_form_query_percent_and_plus)
{
    ck_assert_int_eq(parse_q("name=J%C3%A9r%C3%B4me+Doe&x=a%2Bb%26c%3D"), 0);
    ck_assert_uint_eq(form.nargs, 2);
    ck_assert_str_eq(val("name", 0), "J\xc3\xa9r\xc3\xb4me Doe");
    ck_assert_str_eq(val("x", 0), "a+b&c=");
}
END_TEST

START_TEST(test_form_query_invalid_escapes_kept_literally)
{
    ck_assert_int_eq(parse_q("a=%zz&b=%4&c=%&d=100%&e=%4g%41"), 0);
    ck_assert_str_eq(val("a", 0), "%zz");
    ck_assert_str_eq(val("b", 0), "%4");
    ck_assert_str_eq(val("c", 0), "%");
    ck_assert_str_eq(val("d", 0), "100%");
    ck_assert_str_eq(val("e", 0), "%4gA");
}
END_TEST

START_TEST(test_form_query_repeated_names_kept_in_order)
{
    ck_assert_int_eq(parse_q("a=1&b=2&a=3&a=4"), 0);
    ck_assert_uint_eq(gale_form_count(&form, "a"), 3);
    ck_assert_str_eq(val("a", 0), "1");
    ck_assert_str_eq(val("a", 1), "3");
    ck_assert_str_eq(val("a", 2), "4");
    ck_assert_ptr_null(val("a", 3));
    ck_assert_uint_eq(gale_form_count(&form, "b"), 1);
    ck_assert_uint_eq(gale_form_count(&form, "zzz"), 0);
}
END_TEST

START_TEST(test_form_query_empty_values_and_missing_equals)
{
    ck_assert_int_eq(parse_q("a=&b&&c=3&=v&"), 0);
    ck_assert_uint_eq(form.nargs, 4);
    ck_assert_str_eq(val("a", 0), "");
    ck_assert_str_eq(val("b", 0), "");
    ck_assert_str_eq(val("c", 0), "3");
    ck_assert_str_eq(val("", 0), "v");
}
END_TEST

START_TEST(test_form_query_value_keeps_equals_and_nul)
{
    ck_assert_int_eq(parse_q("k=a=b&n=x%00y"), 0);
    ck_assert_str_eq(val("k", 0), "a=b");
    const gale_form_arg *a = gale_form_find(&form, "n", 0);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(a->value_len, 3);
    ck_assert_mem_eq(a->value, "x\0y", 3);
}
END_TEST

START_TEST(test_form_query_empty_string_adds_nothing)
{
    ck_assert_int_eq(parse_q(""), 0);
    ck_assert_int_eq(parse_q("&&&"), 0);
    ck_assert_uint_eq(form.nargs, 0);
    ck_assert_int_eq(gale_form_parse_urlencoded(&form, NULL, 3), -EINVAL);
}
END_TEST

START_TEST(test_form_query_many_fields_grow)
{
    char buf[8192] = "";
    for (int i = 0; i < 500; i++)
        strcat(buf, "k=v&");
    ck_assert_int_eq(parse_q(buf), 0);
    ck_assert_uint_eq(gale_form_count(&form, "k"), 500);
}
END_TEST

START_TEST(test_form_query_out_of_memory_is_enomem)
{
    fail_after = 3;
    ck_assert_int_eq(parse_q("a=1&b=2&c=3"), -ENOMEM);
    ck_assert_uint_le(form.nargs, 1);
}
END_TEST

START_TEST(test_form_unescape_in_place_and_plus_flag)
{
    char s[] = "a+b%20c%2";
    size_t n = gale_url_unescape(s, s, strlen(s), false);
    ck_assert_uint_eq(n, 7);
    ck_assert_mem_eq(s, "a+b c%2", 7);
    char t[] = "a+b";
    n = gale_url_unescape(t, t, 3, true);
    ck_assert_mem_eq(t, "a b", 3);
}
END_TEST

START_TEST(test_form_body_urlencoded_by_content_type)
{
    const char *ct = "application/x-www-form-urlencoded; charset=UTF-8";
    const char *body = "user=ann+lee&tags=a&tags=b";
    ck_assert_int_eq(gale_form_parse_body(&form, ct, strlen(ct), body, strlen(body)), 0);
    ck_assert_str_eq(val("user", 0), "ann lee");
    ck_assert_uint_eq(gale_form_count(&form, "tags"), 2);
}
END_TEST

START_TEST(test_form_body_other_types_ignored)
{
    const char *ct = "application/json";
    const char *body = "a=1";
    ck_assert_int_eq(gale_form_parse_body(&form, ct, strlen(ct), body, strlen(body)), 0);
    ck_assert_int_eq(gale_form_parse_body(&form, NULL, 0, body, strlen(body)), 0);
    /* a prefix of the media type is not the media type */
    ct = "application/x-www-form-urlencodedX";
    ck_assert_int_eq(gale_form_parse_body(&form, ct, strlen(ct), body, strlen(body)), 0);
    ck_assert_uint_eq(form.nargs, 0);
}
END_TEST

static const char mp_body[] = "--XyZ\r\n"
                              "Content-Disposition: form-data; name=\"title\"\r\n"
                              "\r\n"
                              "hello world\r\n"
                              "--XyZ\r\n"
                              "Content-Disposition: form-data; name=\"upload\"; "
                              "filename=\"a;b \\\"c\\\".txt\"\r\n"
                              "Content-Type: text/plain\r\n"
                              "\r\n"
                              "line1\r\nline2 --XyZ not a delimiter\r\n--XyZnope\n\r\n"
                              "--XyZ\r\n"
                              "content-disposition: form-data; name=empty\r\n"
                              "\r\n"
                              "\r\n"
                              "--XyZ--\r\n"
                              "epilogue";

START_TEST(test_form_multipart_fields_and_file)
{
    const char *ct = "multipart/form-data; boundary=XyZ";
    ck_assert_int_eq(gale_form_parse_body(&form, ct, strlen(ct), mp_body, sizeof mp_body - 1), 0);
    ck_assert_uint_eq(form.nargs, 2);
    ck_assert_str_eq(val("title", 0), "hello world");
    ck_assert_str_eq(val("empty", 0), "");
    ck_assert_uint_eq(form.nfiles, 1);
    const gale_form_file *fl = gale_form_find_file(&form, "upload", 0);
    ck_assert_ptr_nonnull(fl);
    ck_assert_str_eq(fl->filename, "a;b \"c\".txt");
    ck_assert_str_eq(fl->content_type, "text/plain");
    const char *want = "line1\r\nline2 --XyZ not a delimiter\r\n--XyZnope\n";
    ck_assert_uint_eq(fl->body_len, strlen(want));
    ck_assert_mem_eq(fl->body, want, strlen(want));
    /* zero copy: the file body points into the input */
    ck_assert(fl->body > mp_body && fl->body < mp_body + sizeof mp_body);
    ck_assert_ptr_null(gale_form_find_file(&form, "upload", 1));
    ck_assert_ptr_null(gale_form_find(&form, "upload", 0));
}
END_TEST

START_TEST(test_form_multipart_quoted_boundary_preamble_and_default_type)
{
    const char body[] = "preamble text\r\n"
                        "--a b\r\n"
                        "Content-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\n"
                        "\r\n"
                        "\x00\x01\x02\r\n"
                        "--a b--";
    const char *ct = "multipart/form-data; charset=utf-8; boundary=\"a b\"";
    ck_assert_int_eq(gale_form_parse_body(&form, ct, strlen(ct), body, sizeof body - 1), 0);
    const gale_form_file *fl = gale_form_find_file(&form, "f", 0);
    ck_assert_ptr_nonnull(fl);
    ck_assert_str_eq(fl->content_type, "application/unknown");
    ck_assert_uint_eq(fl->body_len, 3);
    ck_assert_mem_eq(fl->body, "\x00\x01\x02", 3);
}
END_TEST

START_TEST(test_form_multipart_rfc5987_filename)
{
    const char body[] = "--b\r\n"
                        "Content-Disposition: form-data; name=f; filename=\"plain.txt\"; "
                        "filename*=UTF-8''%C3%A9t%C3%A9.txt\r\n"
                        "\r\n"
                        "x\r\n"
                        "--b--\r\n";
    ck_assert_int_eq(gale_form_parse_multipart(&form, "b", 1, body, sizeof body - 1), 0);
    const gale_form_file *fl = gale_form_find_file(&form, "f", 0);
    ck_assert_ptr_nonnull(fl);
    ck_assert_str_eq(fl->filename, "\xc3\xa9t\xc3\xa9.txt");
}
END_TEST

START_TEST(test_form_multipart_empty_filename_is_an_argument)
{
    const char body[] = "--b\r\n"
                        "Content-Disposition: form-data; name=\"f\"; filename=\"\"\r\n"
                        "\r\n"
                        "\r\n"
                        "--b--\r\n";
    ck_assert_int_eq(gale_form_parse_multipart(&form, "b", 1, body, sizeof body - 1), 0);
    ck_assert_uint_eq(form.nfiles, 0);
    ck_assert_str_eq(val("f", 0), "");
}
END_TEST

START_TEST(test_form_multipart_no_final_boundary_adds_nothing)
{
    const char body[] = "--b\r\n"
                        "Content-Disposition: form-data; name=\"a\"\r\n"
                        "\r\n"
                        "1\r\n"
                        "--b\r\n"
                        "Content-Disposition: form-data; name=\"c\"\r\n"
                        "\r\n"
                        "truncated";
    ck_assert_int_eq(gale_form_parse_multipart(&form, "b", 1, body, sizeof body - 1), -EINVAL);
    ck_assert_uint_eq(form.nargs, 0);
}
END_TEST

START_TEST(test_form_multipart_bad_parts_skipped)
{
    const char body[] = "--b\r\n"
                        "Content-Disposition: attachment; name=\"x\"\r\n"
                        "\r\n"
                        "1\r\n"
                        "--b\r\n"
                        "\r\n"
                        "no headers\r\n"
                        "--b\r\n"
                        "Content-Disposition: form-data; filename=\"n.txt\"\r\n"
                        "\r\n"
                        "no name\r\n"
                        "--b\r\n"
                        "Content-Disposition: form-data; name=\"ok\"\r\n"
                        "\r\n"
                        "yes\r\n"
                        "--b\r\n"
                        "no blank line after headers\r\n"
                        "--b--";
    ck_assert_int_eq(gale_form_parse_multipart(&form, "b", 1, body, sizeof body - 1), 0);
    ck_assert_uint_eq(form.nargs, 1);
    ck_assert_uint_eq(form.nfiles, 0);
    ck_assert_str_eq(val("ok", 0), "yes");
}
END_TEST

START_TEST(test_form_multipart_malformed_inputs_do_not_crash)
{
    static const char *const bodies[] = {
        "",
        "--",
        "--b",
        "--b\r",
        "--b\r\n",
        "--bX\r\n",
        "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n",
        "--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nv\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=\"\\\r\n\r\nv\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=\r\n\r\nv\r\n--b--",
        "--b\r\nContent-Disposition: form-data; filename*=x\r\n\r\nv\r\n--b--",
        "--b\r\nContent-Disposition: form-data; name=a; filename*=UTF-8'\r\n\r\nv\r\n--b--",
        "garbage with no delimiter at all",
        "\r\n--b\r\n\r\n--b--",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        /* a copy of exactly the input's length, so ASan catches reads past it */
        size_t n = strlen(bodies[i]);
        char *copy = malloc(n ? n : 1);
        memcpy(copy, bodies[i], n);
        gale_form_parse_multipart(&form, "b", 1, copy, n);
        free(copy);
    }
    /* byte by byte truncations of a valid body */
    for (size_t n = 0; n < sizeof mp_body - 1; n++) {
        char *copy = malloc(n ? n : 1);
        memcpy(copy, mp_body, n);
        int rc = gale_form_parse_multipart(&form, "XyZ", 3, copy, n);
        ck_assert(rc == 0 || rc == -EINVAL);
        free(copy);
    }
    const char *ct = "multipart/form-data";
    ck_assert_int_eq(gale_form_parse_body(&form, ct, strlen(ct), "x", 1), -EINVAL);
    ct = "multipart/form-data; boundary=";
    ck_assert_int_eq(gale_form_parse_body(&form, ct, strlen(ct), "x", 1), -EINVAL);
    ck_assert_int_eq(gale_form_parse_multipart(&form, "", 0, "x", 1), -EINVAL);
}
END_TEST

START_TEST(test_form_cookies_browser_style)
{
    const char *h = " session=abc123; theme = dark ;flag; q=\"a\\\"b\\073c\"; e=; =v; ;";
    ck_assert_int_eq(gale_form_parse_cookies(&form, h, strlen(h)), 0);
    ck_assert_str_eq(val("session", 0), "abc123");
    ck_assert_str_eq(val("theme", 0), "dark");
    ck_assert_str_eq(val("", 0), "flag");
    ck_assert_str_eq(val("q", 0), "a\"b;c");
    ck_assert_str_eq(val("e", 0), "");
    ck_assert_str_eq(val("", 1), "v");
    ck_assert_uint_eq(form.nargs, 6);
}
END_TEST

START_TEST(test_form_cookies_values_not_percent_decoded)
{
    const char *h = "a=x%20y+z";
    ck_assert_int_eq(gale_form_parse_cookies(&form, h, strlen(h)), 0);
    ck_assert_str_eq(val("a", 0), "x%20y+z");
}
END_TEST

static Suite *form_suite(void)
{
    Suite *s = suite_create("form");
    TCase *q = tcase_create("query");
    tcase_add_checked_fixture(q, setup, teardown);
    tcase_set_timeout(q, 10);
    tcase_add_test(q, test_form_query_percent_and_plus);
    tcase_add_test(q, test_form_query_invalid_escapes_kept_literally);
    tcase_add_test(q, test_form_query_repeated_names_kept_in_order);
    tcase_add_test(q, test_form_query_empty_values_and_missing_equals);
    tcase_add_test(q, test_form_query_value_keeps_equals_and_nul);
    tcase_add_test(q, test_form_query_empty_string_adds_nothing);
    tcase_add_test(q, test_form_query_many_fields_grow);
    tcase_add_test(q, test_form_query_out_of_memory_is_enomem);
    tcase_add_test(q, test_form_unescape_in_place_and_plus_flag);
    suite_add_tcase(s, q);

    TCase *b = tcase_create("body");
    tcase_add_checked_fixture(b, setup, teardown);
    tcase_set_timeout(b, 10);
    tcase_add_test(b, test_form_body_urlencoded_by_content_type);
    tcase_add_test(b, test_form_body_other_types_ignored);
    tcase_add_test(b, test_form_multipart_fields_and_file);
    tcase_add_test(b, test_form_multipart_quoted_boundary_preamble_and_default_type);
    tcase_add_test(b, test_form_multipart_rfc5987_filename);
    tcase_add_test(b, test_form_multipart_empty_filename_is_an_argument);
    tcase_add_test(b, test_form_multipart_no_final_boundary_adds_nothing);
    tcase_add_test(b, test_form_multipart_bad_parts_skipped);
    tcase_add_test(b, test_form_multipart_malformed_inputs_do_not_crash);
    suite_add_tcase(s, b);

    TCase *c = tcase_create("cookies");
    tcase_add_checked_fixture(c, setup, teardown);
    tcase_set_timeout(c, 10);
    tcase_add_test(c, test_form_cookies_browser_style);
    tcase_add_test(c, test_form_cookies_values_not_percent_decoded);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(form_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

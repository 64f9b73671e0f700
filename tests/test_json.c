/* json: the writer's output (escaping as Python's json.dumps with Tornado's "</" rule, shape
 * checks, sticky errors), gale_write_json's Content-Type, and request bodies read as JSON. */
#include <check.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "http/json.h"
#include "webtest.h"

static void expect_string(const char *in, size_t len, const char *want)
{
    gale_json_writer w;
    gale_json_init(&w);
    ck_assert_int_eq(gale_json_string(&w, in, len), 0);
    size_t n;
    const char *doc = gale_json_result(&w, &n);
    ck_assert_ptr_nonnull(doc);
    ck_assert_str_eq(doc, want);
    ck_assert_uint_eq(n, strlen(want));
    /* jansson reads back the bytes written */
    json_error_t e;
    json_t *v = json_loadb(doc, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    ck_assert_msg(v != NULL, "%s: %s", doc, e.text);
    ck_assert_uint_eq(json_string_length(v), len);
    ck_assert_mem_eq(json_string_value(v), in, len);
    json_decref(v);
    gale_json_free(&w);
}

START_TEST(test_json_string_escaping)
{
    expect_string("plain", 5, "\"plain\"");
    expect_string("q\"b\\", 4, "\"q\\\"b\\\\\"");
    expect_string("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    expect_string("\x01\x1f", 2, "\"\\u0001\\u001f\"");
    expect_string("a\0b", 3, "\"a\\u0000b\"");
    expect_string("</script>", 9, "\"<\\/script>\"");
    expect_string("a/b", 3, "\"a/b\"");
    expect_string("caf\xc3\xa9", 5, "\"caf\\u00e9\"");
    expect_string("\xe2\x9c\x93", 3, "\"\\u2713\"");
    expect_string("\xf0\x9f\x98\x80", 4, "\"\\ud83d\\ude00\""); /* U+1F600: a surrogate pair */
    expect_string("\x7f", 1, "\"\x7f\"");
}
END_TEST

START_TEST(test_json_invalid_utf8_refused)
{
    const char *bad[] = {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", "a\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gale_json_writer w;
        gale_json_init(&w);
        ck_assert_int_eq(gale_json_string(&w, bad[i], strlen(bad[i])), -EILSEQ);
        ck_assert_ptr_null(gale_json_result(&w, NULL));
        ck_assert_int_eq(gale_json_null(&w), -EILSEQ); /* sticky */
        gale_json_free(&w);
    }
}
END_TEST

START_TEST(test_json_nested_document)
{
    gale_json_writer w;
    gale_json_init(&w);
    gale_json_object_begin(&w);
    gale_json_key(&w, "name");
    gale_json_string(&w, "gale", 4);
    gale_json_key(&w, "n");
    gale_json_int(&w, -9007199254740993LL);
    gale_json_key(&w, "x");
    gale_json_double(&w, 0.1);
    gale_json_key(&w, "two");
    gale_json_double(&w, 2);
    gale_json_key(&w, "list");
    gale_json_array_begin(&w);
    gale_json_bool(&w, true);
    gale_json_bool(&w, false);
    gale_json_null(&w);
    gale_json_array_begin(&w);
    gale_json_array_end(&w);
    gale_json_object_begin(&w);
    gale_json_object_end(&w);
    gale_json_array_end(&w);
    ck_assert_int_eq(gale_json_object_end(&w), 0);
    ck_assert_str_eq(gale_json_result(&w, NULL),
                     "{\"name\":\"gale\",\"n\":-9007199254740993,\"x\":0.10000000000000001,"
                     "\"two\":2.0,\"list\":[true,false,null,[],{}]}");
    gale_json_free(&w);
}
END_TEST

START_TEST(test_json_shape_errors)
{
    gale_json_writer w;
    gale_json_init(&w);
    gale_json_object_begin(&w);
    ck_assert_int_eq(gale_json_int(&w, 1), -EINVAL); /* a value where a key is due */
    gale_json_free(&w);

    gale_json_init(&w);
    ck_assert_int_eq(gale_json_key(&w, "k"), -EINVAL); /* key outside an object */
    gale_json_free(&w);

    gale_json_init(&w);
    gale_json_array_begin(&w);
    ck_assert_int_eq(gale_json_object_end(&w), -EINVAL); /* mismatched end */
    gale_json_free(&w);

    gale_json_init(&w);
    gale_json_array_begin(&w);
    ck_assert_ptr_null(gale_json_result(&w, NULL)); /* incomplete */
    ck_assert_int_eq(gale_json_double(&w, NAN), -EINVAL);
    gale_json_free(&w);

    gale_json_init(&w);
    gale_json_int(&w, 1);
    ck_assert_int_eq(gale_json_int(&w, 2), -EINVAL); /* one top-level value */
    gale_json_free(&w);

    gale_json_init(&w);
    for (int i = 0; i < GALE_JSON_MAX_DEPTH; i++)
        ck_assert_int_eq(gale_json_array_begin(&w), 0);
    ck_assert_int_eq(gale_json_array_begin(&w), -EINVAL);
    gale_json_free(&w);
}
END_TEST

/* POST /sum {"a": 1, "b": 2} -> {"sum": 3}; not JSON -> 400. */
static void sum_post(gale_handler *h)
{
    json_t *v;
    if (gale_json_body(h, &v) < 0) {
        gale_send_error(h, 400);
        return;
    }
    json_int_t a = json_integer_value(json_object_get(v, "a"));
    json_int_t b = json_integer_value(json_object_get(v, "b"));
    json_decref(v);
    gale_json_writer w;
    gale_json_init(&w);
    gale_json_object_begin(&w);
    gale_json_key(&w, "sum");
    gale_json_int(&w, a + b);
    gale_json_object_end(&w);
    if (gale_write_json(h, &w) < 0)
        gale_send_error(h, 500);
    gale_json_free(&w);
}
static const gale_handler_class sum = {.post = sum_post};

START_TEST(test_json_request_and_response_bodies)
{
    wt_setup();
    ck_assert_int_eq(gale_app_route(wt_app, "/sum", &sum, NULL), 0);
    wt_listen();
    struct test_http_response r = wt_req("POST", "/sum", NULL, "{\"a\": 40, \"b\": 2}");
    ck_assert_int_eq(r.status, 200);
    ck_assert(test_http_header_is(&r, "Content-Type", "application/json; charset=UTF-8"));
    ck_assert_str_eq(r.body, "{\"sum\":42}");
    test_http_response_free(&r);
    const char *bad[] = {"{\"a\": 1,", "", "{\"a\": 1} x", "[1, 2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = wt_req("POST", "/sum", NULL, bad[i]);
        ck_assert_int_eq(r.status, 400);
        test_http_response_free(&r);
    }
    wt_teardown();
}
END_TEST

static Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *t = tcase_create("writer");
    tcase_add_test(t, test_json_string_escaping);
    tcase_add_test(t, test_json_invalid_utf8_refused);
    tcase_add_test(t, test_json_nested_document);
    tcase_add_test(t, test_json_shape_errors);
    suite_add_tcase(s, t);
    t = tcase_create("handler");
    tcase_set_timeout(t, 20);
    tcase_add_test(t, test_json_request_and_response_bodies);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(json_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* The HTTP client's redirect targets: RFC 3986 section 5.2 reference resolution, checked against
 * the RFC's own examples (5.4.1 normal, 5.4.2 abnormal) and the cases a Location header brings. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "http/httpclient_internal.h"

struct example {
    const char *ref, *want;
};

#define RFC_BASE "http://a/b/c/d;p?q"

/* RFC 3986 5.4.1 */
static const struct example NORMAL[] = {
    {"g:h", "g:h"},
    {"g", "http://a/b/c/g"},
    {"./g", "http://a/b/c/g"},
    {"g/", "http://a/b/c/g/"},
    {"/g", "http://a/g"},
    {"//g", "http://g"},
    {"?y", "http://a/b/c/d;p?y"},
    {"g?y", "http://a/b/c/g?y"},
    {"#s", "http://a/b/c/d;p?q#s"},
    {"g#s", "http://a/b/c/g#s"},
    {"g?y#s", "http://a/b/c/g?y#s"},
    {";x", "http://a/b/c/;x"},
    {"g;x", "http://a/b/c/g;x"},
    {"g;x?y#s", "http://a/b/c/g;x?y#s"},
    {"", "http://a/b/c/d;p?q"},
    {".", "http://a/b/c/"},
    {"./", "http://a/b/c/"},
    {"..", "http://a/b/"},
    {"../", "http://a/b/"},
    {"../g", "http://a/b/g"},
    {"../..", "http://a/"},
    {"../../", "http://a/"},
    {"../../g", "http://a/g"},
};

/* RFC 3986 5.4.2 (strict parser: "http:g" is "http:g") */
static const struct example ABNORMAL[] = {
    {"../../../g", "http://a/g"},
    {"../../../../g", "http://a/g"},
    {"/./g", "http://a/g"},
    {"/../g", "http://a/g"},
    {"g.", "http://a/b/c/g."},
    {".g", "http://a/b/c/.g"},
    {"g..", "http://a/b/c/g.."},
    {"..g", "http://a/b/c/..g"},
    {"./../g", "http://a/b/g"},
    {"./g/.", "http://a/b/c/g/"},
    {"g/./h", "http://a/b/c/g/h"},
    {"g/../h", "http://a/b/c/h"},
    {"g;x=1/./y", "http://a/b/c/g;x=1/y"},
    {"g;x=1/../y", "http://a/b/c/y"},
    {"g?y/./x", "http://a/b/c/g?y/./x"},
    {"g?y/../x", "http://a/b/c/g?y/../x"},
    {"g#s/./x", "http://a/b/c/g#s/./x"},
    {"g#s/../x", "http://a/b/c/g#s/../x"},
    {"http:g", "http:g"},
};

static void check_resolve(const char *base, const struct example *e)
{
    char *got = gale__url_resolve(base, e->ref);
    ck_assert_msg(got != NULL, "resolve(%s) returned NULL", e->ref);
    ck_assert_msg(strcmp(got, e->want) == 0, "resolve(\"%s\") = \"%s\", want \"%s\"", e->ref, got,
                  e->want);
    free(got);
}

START_TEST(test_url_rfc3986_normal_examples) { check_resolve(RFC_BASE, &NORMAL[_i]); }
END_TEST

START_TEST(test_url_rfc3986_abnormal_examples) { check_resolve(RFC_BASE, &ABNORMAL[_i]); }
END_TEST

/* What servers put in Location, against request URLs with ports, empty paths and queries. */
static const struct {
    const char *base, *ref, *want;
} LOCATION[] = {
    {"http://h/a/b/start", "../c/d?e=1", "http://h/a/c/d?e=1"},
    {"http://h:8080/a/b/start?x=1", "../c/d?e=1", "http://h:8080/a/c/d?e=1"},
    {"http://h:8080", "next", "http://h:8080/next"},
    {"http://h:8080", "?q=1", "http://h:8080?q=1"},
    {"http://h/a//b/c", "..", "http://h/a//"},
    {"http://h/a/b", "../../../../x", "http://h/x"},
    {"http://h/a/b?q", "#frag", "http://h/a/b?q#frag"},
    {"http://u:p@h/a/b", "c", "http://u:p@h/a/c"},
    {"http://h/a/b", "//other:81/p/../q", "http://other:81/q"},
    {"http://h/a/b", "HTTP://Other/x/./y", "HTTP://Other/x/y"},
    {"http://h/a/b", "/x/%2e%2e/y", "http://h/x/%2e%2e/y"},
    {"http://h/a/b", "https://secure/", "https://secure/"},
};

START_TEST(test_url_location_cases)
{
    struct example e = {LOCATION[_i].ref, LOCATION[_i].want};
    check_resolve(LOCATION[_i].base, &e);
}
END_TEST

/* The resolved target reaches the request line with its dot segments gone. */
START_TEST(test_url_resolved_target_on_the_wire)
{
    char *next = gale__url_resolve("http://127.0.0.1:8/a/b/start", "../c/d?e=1#f");
    ck_assert_ptr_nonnull(next);
    struct gale__url u;
    ck_assert_int_eq(gale__url_parse(next, &u), 0);
    ck_assert_str_eq(u.target, "/a/c/d?e=1");
    ck_assert_str_eq(u.hostport, "127.0.0.1:8");
    gale__url_free(&u);
    free(next);
    next = gale__url_resolve("http://h/a", "ftp://h/x");
    ck_assert_int_eq(gale__url_parse(next, &u), GALE_ESCHEME);
    free(next);
    ck_assert_ptr_null(gale__url_resolve("no-scheme/a", "b"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("httpclient_url");
    TCase *t = tcase_create("rfc3986");
    tcase_add_loop_test(t, test_url_rfc3986_normal_examples, 0,
                        (int)(sizeof NORMAL / sizeof NORMAL[0]));
    tcase_add_loop_test(t, test_url_rfc3986_abnormal_examples, 0,
                        (int)(sizeof ABNORMAL / sizeof ABNORMAL[0]));
    tcase_add_loop_test(t, test_url_location_cases, 0, (int)(sizeof LOCATION / sizeof LOCATION[0]));
    tcase_add_test(t, test_url_resolved_target_on_the_wire);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

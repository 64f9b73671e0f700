/* web_secure: signed cookies and XSRF tokens checked against Tornado itself (python3-tornado's
 * create_signed_value / decode_signed_value / _decode_xsrf_token, run with /usr/bin/python3),
 * current_user and @authenticated, set_default_headers on error pages, named routes, and the
 * demo's --cookie-secret and --xsrf routes. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "http/web_secure.h"
#include "webtest.h"

#define SECRET "a secret of the test"

/* Runs python3 code (argv after it) and returns its stdout without the final newline. */
static char *py(const char *code, const char *a1, const char *a2)
{
    char path[] = "/tmp/gale-py-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *src = fdopen(fd, "w");
    ck_assert_ptr_nonnull(src);
    ck_assert_int_eq(fputs(code, src) >= 0, 1);
    ck_assert_int_eq(fclose(src), 0);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s '%s' '%s'", path, a1 ? a1 : "", a2 ? a2 : "");
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    static char out[4096];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    unlink(path);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "python failed: %s", out);
    while (n && out[n - 1] == '\n')
        out[--n] = '\0';
    return out;
}

static const char PY_DECODE[] =
    "import sys, tornado.web\n"
    "v = tornado.web.decode_signed_value('" SECRET "', sys.argv[1], sys.argv[2])\n"
    "print('NONE' if v is None else v.decode())\n";

static const char PY_CREATE[] =
    "import sys, time, tornado.web\n"
    "age = float(sys.argv[2] or 0)\n"
    "print(tornado.web.create_signed_value('" SECRET "', 'user', sys.argv[1], version=2,\n"
    "      clock=lambda: time.time() - age * 86400).decode())\n";

START_TEST(test_web_secure_gale_signed_value_verifies_in_tornado)
{
    char *sv;
    const char *value = "J\xc3\xb6rg|x:1=y";
    ck_assert_int_eq(
        gale_signed_value_create(SECRET, "user", value, strlen(value), time(NULL), &sv), 0);
    ck_assert_str_eq(py(PY_DECODE, "user", sv), value);
    ck_assert_str_eq(py(PY_DECODE, "other", sv), "NONE"); /* the name is signed */
    free(sv);
}
END_TEST

START_TEST(test_web_secure_tornado_signed_value_verifies_here)
{
    const char *sv = py(PY_CREATE, "alice", NULL);
    ck_assert_msg(strncmp(sv, "2|1:0|10:", 9) == 0, "%s", sv);
    char *v;
    size_t len;
    ck_assert_int_eq(gale_signed_value_decode(SECRET, "user", sv, 31, time(NULL), &v, &len), 0);
    ck_assert_uint_eq(len, 5);
    ck_assert_str_eq(v, "alice");
    free(v);
    /* foreign name, foreign secret */
    ck_assert_int_eq(gale_signed_value_decode(SECRET, "users", sv, 31, time(NULL), &v, NULL),
                     -EACCES);
    ck_assert_int_eq(gale_signed_value_decode("other", "user", sv, 31, time(NULL), &v, NULL),
                     -EACCES);
    /* tampered: every position of the value changed in turn is refused */
    char t[512];
    snprintf(t, sizeof t, "%s", sv);
    for (size_t i = 0; t[i]; i++) {
        char was = t[i];
        t[i] = was == 'A' ? 'B' : 'A';
        int rc = gale_signed_value_decode(SECRET, "user", t, 31, time(NULL), &v, NULL);
        ck_assert_msg(rc == -EACCES || rc == -EINVAL, "byte %zu changed: %d", i, rc);
        t[i] = was;
    }
    /* expired: signed 40 days ago reads as absent at 31, present at 60 */
    sv = py(PY_CREATE, "old", "40");
    ck_assert_int_eq(gale_signed_value_decode(SECRET, "user", sv, 31, time(NULL), &v, NULL),
                     -ETIMEDOUT);
    ck_assert_int_eq(gale_signed_value_decode(SECRET, "user", sv, 60, time(NULL), &v, NULL), 0);
    free(v);
    ck_assert_int_eq(gale_signed_value_decode(SECRET, "user", "2|1:0|garbage", 31, 0, &v, NULL),
                     -EINVAL);
    ck_assert_int_eq(gale_signed_value_decode(SECRET, "user", "", 31, 0, &v, NULL), -EINVAL);
}
END_TEST

/* ---- an app with a user, a login page, XSRF and default headers ---- */

static int n_user_calls;
static const char *cookie_user(gale_handler *h)
{
    n_user_calls++;
    return gale_get_signed_cookie(h, "user", 0, NULL);
}
static void defaults(gale_handler *h) { gale_set_header(h, "X-Frame-Options", "DENY"); }

static void login_get(gale_handler *h)
{
    const char *name = gale_get_argument(h, "name", "anon");
    gale_set_signed_cookie(h, "user", name, strlen(name), NULL);
    gale_write_str(h, "logged in");
}
static const gale_handler_class login = {.get = login_get, .set_default_headers = defaults};

static void secret_get(gale_handler *h) { gale_writef(h, "hello %s", gale_current_user(h)); }
static void secret_post(gale_handler *h) { gale_write_str(h, "posted"); }
static void missing_get(gale_handler *h) { gale_send_error(h, 404); }
static const gale_handler_class secret = {.get = secret_get,
                                          .post = secret_post,
                                          .delete = missing_get,
                                          .get_current_user = cookie_user,
                                          .set_default_headers = defaults,
                                          .authenticated = GALE_METHOD_GET | GALE_METHOD_POST};

static void form_get(gale_handler *h) { gale_write_str(h, gale_xsrf_form_html(h)); }
static const gale_handler_class form = {.get = form_get, .post = secret_post};

static void setup(void)
{
    wt_setup();
    ck_assert_int_eq(gale_app_set_cookie_secret(wt_app, SECRET), 0);
    ck_assert_int_eq(gale_app_set_login_url(wt_app, "/login"), 0);
    ck_assert_int_eq(gale_app_route_named(wt_app, "login", "/login", &login, NULL), 0);
    ck_assert_int_eq(gale_app_route_named(wt_app, "secret", "/secret", &secret, NULL), 0);
    ck_assert_int_eq(gale_app_route_named(wt_app, "form", "/form/([a-z]+)/([0-9]+)$", &form, NULL),
                     0);
    wt_listen();
}

static void teardown(void) { wt_teardown(); }

/* The value of cookie `name` in the response's Set-Cookie headers (static), or NULL. */
static const char *set_cookie(const struct test_http_response *r, const char *name)
{
    static char v[1024];
    for (int i = 0; i < r->nheaders; i++) {
        const char *h = r->headers[i].value;
        size_t n = strlen(name);
        if (strcasecmp(r->headers[i].name, "Set-Cookie") == 0 && strncmp(h, name, n) == 0 &&
            h[n] == '=') {
            snprintf(v, sizeof v, "%.*s", (int)strcspn(h + n + 1, ";"), h + n + 1);
            return v;
        }
    }
    return NULL;
}

START_TEST(test_web_secure_authenticated_redirects_get_and_refuses_post)
{
    struct test_http_response r = wt_req("GET", "/secret?a=1", NULL, NULL);
    ck_assert_int_eq(r.status, 302);
    ck_assert_str_eq(test_http_header(&r, "Location"), "/login?next=%2Fsecret%3Fa%3D1");
    test_http_response_free(&r);
    r = wt_req("POST", "/secret", NULL, "");
    ck_assert_int_eq(r.status, 403);
    ck_assert(test_http_header_is(&r, "X-Frame-Options", "DENY")); /* on the error page too */
    test_http_response_free(&r);

    r = wt_req("GET", "/login?name=ada", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    char cookie[1100];
    snprintf(cookie, sizeof cookie, "Cookie: user=%s\r\n", set_cookie(&r, "user"));
    ck_assert(test_http_header_is(&r, "X-Frame-Options", "DENY"));
    test_http_response_free(&r);

    n_user_calls = 0;
    r = wt_req("GET", "/secret", cookie, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "hello ada");
    ck_assert_int_eq(n_user_calls, 1); /* asked once, by @authenticated, then cached */
    test_http_response_free(&r);
    r = wt_req("POST", "/secret", cookie, "");
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
    /* DELETE is not guarded; its 404 page still has the default header */
    r = wt_req("DELETE", "/secret", NULL, NULL);
    ck_assert_int_eq(r.status, 404);
    ck_assert(test_http_header_is(&r, "X-Frame-Options", "DENY"));
    test_http_response_free(&r);
    /* a cookie signed with another secret is nobody */
    r = wt_req("GET", "/secret", "Cookie: user=2|1:0|10:1700000000|4:user|4:YWRh|00\r\n", NULL);
    ck_assert_int_eq(r.status, 302);
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_web_secure_reverse_url)
{
    const char *args[] = {"a b/c", "42"};
    char *u = gale_reverse_url(wt_app, "form", args, 2);
    ck_assert_str_eq(u, "/form/a%20b/c/42");
    free(u);
    u = gale_reverse_url(wt_app, "login", NULL, 0);
    ck_assert_str_eq(u, "/login");
    free(u);
    ck_assert_ptr_null(gale_reverse_url(wt_app, "form", args, 1)); /* wrong count */
    ck_assert_ptr_null(gale_reverse_url(wt_app, "nope", NULL, 0));
    ck_assert_int_eq(gale_app_route_named(wt_app, "login", "/x", &login, NULL), -EEXIST);
}
END_TEST

static const char PY_XSRF_DECODE[] = "import sys, binascii, tornado.web\n"
                                     "v, tok, ts = tornado.web.RequestHandler._decode_xsrf_token("
                                     "None, sys.argv[1])\n"
                                     "print(v, binascii.b2a_hex(tok).decode(), int(ts))\n";

/* A token masked by Tornado's own code for the raw token given in hex. */
static const char PY_XSRF_MASK[] =
    "import sys, os, binascii, time\n"
    "from tornado.util import _websocket_mask\n"
    "tok = binascii.a2b_hex(sys.argv[1]); mask = os.urandom(4)\n"
    "print(b'|'.join([b'2', binascii.b2a_hex(mask), binascii.b2a_hex(_websocket_mask(mask, tok)),"
    " str(int(time.time())).encode()]).decode())\n";

START_TEST(test_web_secure_xsrf_tokens_and_tornado)
{
    gale_app_set_xsrf_cookies(wt_app, true);
    struct test_http_response r = wt_req("GET", "/form/a/1", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    char cookie[256];
    snprintf(cookie, sizeof cookie, "%s", set_cookie(&r, "_xsrf"));
    ck_assert_msg(strncmp(cookie, "2|", 2) == 0, "%s", cookie);
    const char *v = strstr(r.body, "value=\"");
    ck_assert_ptr_nonnull(v);
    char token[256];
    snprintf(token, sizeof token, "%.*s", (int)strcspn(v + 7, "\""), v + 7);
    ck_assert_str_eq(token, cookie); /* the first page's token is the new cookie's */
    test_http_response_free(&r);
    /* With the cookie, the next page masks the same raw token afresh and sets no cookie. */
    char hdr[1024], body[512];
    snprintf(hdr, sizeof hdr, "Cookie: _xsrf=%s\r\n", cookie);
    r = wt_req("GET", "/form/a/1", hdr, NULL);
    ck_assert_ptr_null(set_cookie(&r, "_xsrf"));
    v = strstr(r.body, "value=\"");
    ck_assert_ptr_nonnull(v);
    snprintf(token, sizeof token, "%.*s", (int)strcspn(v + 7, "\""), v + 7);
    ck_assert_str_ne(token, cookie);
    test_http_response_free(&r);

    /* Tornado reads the same raw token from the cookie and from the page's token. */
    char a[128], b[128];
    snprintf(a, sizeof a, "%s", py(PY_XSRF_DECODE, cookie, NULL));
    snprintf(b, sizeof b, "%s", py(PY_XSRF_DECODE, token, NULL));
    ck_assert_msg(strncmp(a, "2 ", 2) == 0 && strlen(a) > 2 + 32, "%s", a);
    ck_assert_str_eq(strchr(a, ' '), strchr(b, ' ') ? strchr(b, ' ') : "");

    snprintf(hdr, sizeof hdr,
             "Cookie: _xsrf=%s\r\nContent-Type: application/x-www-form-urlencoded\r\n", cookie);
    /* the form's token as an argument */
    snprintf(body, sizeof body, "_xsrf=%s", token);
    r = wt_req("POST", "/form/a/1", hdr, body);
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
    /* no token, or one for another cookie: 403 */
    r = wt_req("POST", "/form/a/1", hdr, "x=1");
    ck_assert_int_eq(r.status, 403);
    test_http_response_free(&r);
    char other[2200];
    snprintf(other, sizeof other, "%sX-XSRFToken: %s\r\n", hdr,
             py(PY_XSRF_MASK, "00112233445566778899aabbccddeeff", NULL));
    r = wt_req("POST", "/form/a/1", other, "");
    ck_assert_int_eq(r.status, 403);
    test_http_response_free(&r);
    /* a token Tornado masked for the cookie's raw token, in either header */
    char rawhex[64];
    snprintf(rawhex, sizeof rawhex, "%.32s", strchr(a, ' ') + 1);
    snprintf(other, sizeof other, "%sX-XSRFToken: %s\r\n", hdr, py(PY_XSRF_MASK, rawhex, NULL));
    r = wt_req("POST", "/form/a/1", other, "");
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
    snprintf(other, sizeof other, "%sX-CSRFToken: %s\r\n", hdr, py(PY_XSRF_MASK, rawhex, NULL));
    r = wt_req("POST", "/form/a/1", other, "");
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
    /* without the cookie the token is worth nothing */
    snprintf(other, sizeof other, "X-XSRFToken: %s\r\n", token);
    r = wt_req("POST", "/form/a/1", other, "");
    ck_assert_int_eq(r.status, 403);
    test_http_response_free(&r);
    /* GET is never checked */
    r = wt_req("GET", "/form/a/1", NULL, NULL);
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
}
END_TEST

/* ---- the demo ---- */

static pid_t demo;
static int demo_port;

static struct test_http_response demo_req(const char *method, const char *target,
                                          const char *headers)
{
    char raw[4096];
    snprintf(raw, sizeof raw, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s\r\n", method,
             target, headers ? headers : "",
             strcmp(method, "POST") == 0 ? "Content-Length: 2\r\n" : "");
    if (strcmp(method, "POST") == 0)
        strcat(raw, "hi");
    struct test_http_response r = {0};
    ck_assert_int_eq(test_http_exchange(demo_port, raw, strlen(raw), false, &r), 0);
    return r;
}

START_TEST(test_web_secure_demo_cookie_and_xsrf_routes)
{
    demo_port = test_free_port();
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", demo_port);
    char *argv[] = {"demo", "--port", portarg,   "--cookie-secret",
                    SECRET, "--xsrf", "--quiet", NULL};
    demo = test_start_app("demo", argv, demo_port);
    ck_assert_int_gt(demo, 0);

    struct test_http_response r = demo_req("GET", "/cookie/set?name=user&value=bob", NULL);
    ck_assert_int_eq(r.status, 200);
    char cookie[1024];
    snprintf(cookie, sizeof cookie, "Cookie: user=%s\r\n", set_cookie(&r, "user"));
    ck_assert_str_eq(py(PY_DECODE, "user", set_cookie(&r, "user")), "bob");
    test_http_response_free(&r);

    r = demo_req("GET", "/cookie/get?name=user", cookie);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "bob");
    test_http_response_free(&r);
    /* Tornado-signed, fresh: read; 40 days old: 403; missing: 403; tampered: 403 */
    snprintf(cookie, sizeof cookie, "Cookie: user=%s\r\n", py(PY_CREATE, "carol", NULL));
    r = demo_req("GET", "/cookie/get?name=user", cookie);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "carol");
    test_http_response_free(&r);
    cookie[strlen(cookie) - 3] ^= 1;
    r = demo_req("GET", "/cookie/get?name=user", cookie);
    ck_assert_int_eq(r.status, 403);
    test_http_response_free(&r);
    snprintf(cookie, sizeof cookie, "Cookie: user=%s\r\n", py(PY_CREATE, "carol", "40"));
    r = demo_req("GET", "/cookie/get?name=user", cookie);
    ck_assert_int_eq(r.status, 403);
    test_http_response_free(&r);
    r = demo_req("GET", "/cookie/get?name=user", NULL);
    ck_assert_int_eq(r.status, 403);
    test_http_response_free(&r);

    /* XSRF: POST /echo needs the token of GET /xsrf's cookie */
    r = demo_req("POST", "/echo", NULL);
    ck_assert_int_eq(r.status, 403);
    test_http_response_free(&r);
    r = demo_req("GET", "/xsrf", NULL);
    ck_assert_int_eq(r.status, 200);
    char hdr[1024];
    snprintf(hdr, sizeof hdr, "Cookie: _xsrf=%s\r\nX-XSRFToken: %s\r\n", set_cookie(&r, "_xsrf"),
             set_cookie(&r, "_xsrf"));
    test_http_response_free(&r);
    r = demo_req("POST", "/echo", hdr);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "hi");
    test_http_response_free(&r);
    ck_assert_int_eq(test_stop_app(demo), 0);
}
END_TEST

static Suite *web_secure_suite(void)
{
    Suite *s = suite_create("web_secure");
    TCase *t = tcase_create("signed");
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_web_secure_gale_signed_value_verifies_in_tornado);
    tcase_add_test(t, test_web_secure_tornado_signed_value_verifies_here);
    suite_add_tcase(s, t);
    t = tcase_create("app");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_web_secure_authenticated_redirects_get_and_refuses_post);
    tcase_add_test(t, test_web_secure_reverse_url);
    tcase_add_test(t, test_web_secure_xsrf_tokens_and_tornado);
    suite_add_tcase(s, t);
    t = tcase_create("demo");
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_web_secure_demo_cookie_and_xsrf_routes);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(web_secure_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* Black-box tests of apps/demo: the binary is started on a free port and driven over real sockets
 * with raw HTTP/1.x bytes, with curl and with Python's http.client (tests/demo_client.py). They pin
 * every route of the demo and the HTTP/1.1 server behaviour a client can observe: keep-alive,
 * HTTP/1.0, pipelining, 100-continue, chunked bodies, limits (413, 431), framing errors (400),
 * deadlines, and that a client leaving mid-request harms nothing.
 *
 * Each test starts its own demo (checked fixture, so it runs in the test's forked child; Check
 * kills the child's process group afterwards, so a failed test leaves no server behind) and the
 * teardown asserts that the server still answers GET / and then exits cleanly on SIGTERM.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rawhttp.h"
#include "testutil.h"

static int g_port;
static pid_t g_pid;

/* ---- the shared raw client (rawhttp.h), asserting where a test expects success ---- */

static void client_open(struct test_http_client *c, int port)
{
    ck_assert_msg(test_http_open(c, port, 10) == 0, "connect to 127.0.0.1:%d failed", port);
}

static void client_send(struct test_http_client *c, const void *data, size_t len)
{
    int r = test_http_send(c, data, len);
    ck_assert_msg(r == 0, "send failed: %s", strerror(-r));
}

static void client_sends(struct test_http_client *c, const char *s)
{
    client_send(c, s, strlen(s));
}

/* Sends `raw` on a new connection and reads one response into `r`. */
static void exchange(const char *raw, size_t len, bool head_request, struct test_http_response *r)
{
    int rc = test_http_exchange(g_port, raw, len, head_request, r);
    ck_assert_msg(rc == 0, "no complete response to \"%.60s\" (%s)", raw, strerror(-rc));
}

/* GET or HEAD `target` with optional extra header lines ("Name: v\r\n..."). */
static void fetch(const char *method, const char *target, const char *extra,
                  struct test_http_response *r)
{
    char raw[8192];
    int n = snprintf(raw, sizeof raw, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n", method, target,
                     extra ? extra : "");
    ck_assert_int_lt(n, (int)sizeof raw);
    exchange(raw, (size_t)n, strcmp(method, "HEAD") == 0, r);
}

/* Asserts a GET's status and, when `body` is not NULL, its exact body and Content-Length. */
static void expect_get(const char *target, int status, const char *body)
{
    struct test_http_response r;
    fetch("GET", target, NULL, &r);
    ck_assert_msg(r.status == status, "GET %s: status %d, want %d", target, r.status, status);
    if (body) {
        ck_assert_msg(r.body_len == strlen(body) && memcmp(r.body, body, r.body_len) == 0,
                      "GET %s: body \"%s\", want \"%s\"", target, r.body, body);
        if (!r.chunked) {
            const char *cl = test_http_header(&r, "Content-Length");
            ck_assert_msg(cl && strtoul(cl, NULL, 10) == strlen(body), "GET %s: Content-Length %s",
                          target, cl ? cl : "(none)");
        }
    }
    test_http_response_free(&r);
}

/* The connection ends (EOF or reset) before `seconds` pass, after any bytes already queued. */
static void expect_closed(struct test_http_client *c, double seconds)
{
    int r = test_http_expect_closed(c, seconds);
    ck_assert_msg(r == 0, "connection still open (%s)", r == -EAGAIN ? "timed out" : strerror(-r));
}

/* ---- fixtures ---- */

static void start_demo(const char *const *extra)
{
    g_port = test_free_port();
    ck_assert_int_gt(g_port, 0);
    char port[16];
    snprintf(port, sizeof port, "%d", g_port);
    char *argv[16] = {"demo", "--port", port};
    int i = 3;
    for (; extra && *extra && i < 15; extra++)
        argv[i++] = (char *)*extra;
    argv[i] = NULL;
    g_pid = test_start_app("demo", argv, g_port);
    ck_assert_msg(g_pid > 0, "%s did not start on port %d", test_app_path("demo"), g_port);
}

static void setup_default(void) { start_demo(NULL); }

static void setup_limits(void)
{
    static const char *const args[] = {"--max-body", "1024", "--idle-timeout", "1", NULL};
    start_demo(args);
}

static void setup_processes(void)
{
    static const char *const args[] = {"--processes", "2", NULL};
    start_demo(args);
}

/* Stops the demo with SIGTERM and asserts it exited cleanly (a crash or a sanitizer report makes
 * the exit status say so). */
static void stop_demo(void)
{
    int status = test_stop_app(g_pid);
    g_pid = 0;
    ck_assert_msg((WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                      (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM),
                  "demo ended badly: %s %d", WIFEXITED(status) ? "exit" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* Every test ends with a server that still works and then exits cleanly. */
static void teardown_demo(void)
{
    if (g_pid <= 0)
        return;
    expect_get("/", 200, "Hello, world!");
    stop_demo();
}

/* ---- routes ---- */

START_TEST(test_demo_root_says_hello)
{
    struct test_http_response r;
    fetch("GET", "/", NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(r.minor, 1);
    ck_assert_str_eq(r.reason, "OK");
    ck_assert_str_eq(r.body, "Hello, world!");
    ck_assert_ptr_nonnull(test_http_header(&r, "Content-Length"));
    ck_assert_str_eq(test_http_header(&r, "Content-Length"), "13");
    ck_assert_ptr_nonnull(test_http_header(&r, "Date"));
    ck_assert_int_eq(test_http_header_count(&r, "Date"), 1);
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_demo_user_digits_only)
{
    expect_get("/user/42", 200, "user 42");
    expect_get("/user/0", 200, "user 0");
    expect_get("/user/12345678901234567890", 200, "user 12345678901234567890");
    expect_get("/user/abc", 404, NULL);
    expect_get("/user/12a", 404, NULL);
    expect_get("/user/", 404, NULL);
    expect_get("/user/-1", 404, NULL);
    expect_get("/user/1/2", 404, NULL);
}
END_TEST

START_TEST(test_demo_greet_decodes_name)
{
    expect_get("/greet?name=World", 200, "Hello, World!");
    expect_get("/greet?name=Ada+Lovelace", 200, "Hello, Ada Lovelace!");
    expect_get("/greet?name=J%C3%B6rg%20%26%20co", 200, "Hello, J\xc3\xb6rg &amp; co!");
    expect_get("/greet?x=1&name=caf%C3%A9", 200, "Hello, caf\xc3\xa9!");
}
END_TEST

/* The reply is text/html: a name holding markup must come back as text, not run as a script. */
START_TEST(test_demo_greet_escapes_markup)
{
    expect_get("/greet?name=%3Cscript%3Ealert(%27x%27)%3C/script%3E", 200,
               "Hello, &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;!");
    expect_get("/greet?name=%22%3E%3Cimg%20src=x%3E", 200, "Hello, &quot;&gt;&lt;img src=x&gt;!");
}
END_TEST

START_TEST(test_demo_greet_without_name_is_400)
{
    expect_get("/greet", 400, NULL);
    expect_get("/greet?", 400, NULL);
    expect_get("/greet?nom=x", 400, NULL);
}
END_TEST

/* POST or PUT `body` to /echo with `ctype` (NULL: none) and checks the echo. */
static void check_echo(const char *method, const char *body, size_t len, const char *ctype)
{
    size_t cap = len + 512;
    char *raw = malloc(cap);
    ck_assert_ptr_nonnull(raw);
    char ct[128] = "";
    if (ctype)
        snprintf(ct, sizeof ct, "Content-Type: %s\r\n", ctype);
    int n = snprintf(raw, cap, "%s /echo HTTP/1.1\r\nHost: t\r\n%sContent-Length: %zu\r\n\r\n",
                     method, ct, len);
    memcpy(raw + n, body, len);
    struct test_http_response r;
    exchange(raw, (size_t)n + len, false, &r);
    free(raw);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, len);
    ck_assert_msg(memcmp(r.body, body, len) == 0, "%s /echo: body differs", method);
    ck_assert_ptr_nonnull(test_http_header(&r, "Content-Type"));
    ck_assert_str_eq(test_http_header(&r, "Content-Type"),
                     ctype ? ctype : "application/octet-stream");
    test_http_response_free(&r);
}

START_TEST(test_demo_echo_returns_body_and_type)
{
    static const char bin[] = "a\0b\r\n\r\nc\xff\x80 GET / HTTP/1.1\r\n";
    check_echo("POST", "hello", 5, "text/plain; charset=utf-8");
    check_echo("PUT", "{\"a\": 1}", 8, "application/json");
    check_echo("POST", bin, sizeof bin - 1, NULL);
    check_echo("PUT", bin, sizeof bin - 1, NULL);
    check_echo("POST", "", 0, NULL);
}
END_TEST

START_TEST(test_demo_echo_large_body_byte_for_byte)
{
    size_t len = 300 * 1024;
    char *body = malloc(len);
    ck_assert_ptr_nonnull(body);
    for (size_t i = 0; i < len; i++)
        body[i] = (char)(i * 7 + i / 251);
    check_echo("POST", body, len, "application/x-test");
    free(body);
}
END_TEST

START_TEST(test_demo_delay_answers_after_timer)
{
    expect_get("/delay?ms=0", 200, "waited 0 ms");
    expect_get("/delay?ms=30", 200, "waited 30 ms");
}
END_TEST

START_TEST(test_demo_delay_bad_ms_is_400)
{
    expect_get("/delay", 400, NULL);
    expect_get("/delay?ms=", 400, NULL);
    expect_get("/delay?ms=-1", 400, NULL);
    expect_get("/delay?ms=10001", 400, NULL);
    expect_get("/delay?ms=abc", 400, NULL);
    expect_get("/delay?ms=5x", 400, NULL);
    expect_get("/delay?ms=99999999999999999999", 400, NULL);
}
END_TEST

/* GET /stream?chunks=n: chunked, n wire chunks, chunk i is "chunk i\n". */
static void check_stream(int n)
{
    char target[64];
    snprintf(target, sizeof target, "/stream?chunks=%d", n);
    struct test_http_response r;
    fetch("GET", target, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(r.chunked, "not chunked");
    ck_assert_ptr_null(test_http_header(&r, "Content-Length"));
    ck_assert_int_eq(r.nchunks, n);
    size_t off = 0;
    for (int i = 1; i <= n; i++) {
        char want[32];
        int wl = snprintf(want, sizeof want, "chunk %d\n", i);
        ck_assert_uint_eq(r.chunk_lens[i - 1], (size_t)wl);
        ck_assert_msg(memcmp(r.body + off, want, (size_t)wl) == 0, "chunk %d differs", i);
        off += (size_t)wl;
    }
    ck_assert_uint_eq(off, r.body_len);
    test_http_response_free(&r);
}

START_TEST(test_demo_stream_sends_each_chunk)
{
    check_stream(1);
    check_stream(3);
    check_stream(1000);
}
END_TEST

START_TEST(test_demo_stream_bad_chunks_is_400)
{
    expect_get("/stream", 400, NULL);
    expect_get("/stream?chunks=0", 400, NULL);
    expect_get("/stream?chunks=1001", 400, NULL);
    expect_get("/stream?chunks=-3", 400, NULL);
    expect_get("/stream?chunks=two", 400, NULL);
}
END_TEST

START_TEST(test_demo_status_sets_code_and_reason)
{
    static const struct {
        int code;
        const char *reason;
    } cases[] = {{200, "OK"},
                 {201, "Created"},
                 {202, "Accepted"},
                 {301, "Moved Permanently"},
                 {400, "Bad Request"},
                 {404, "Not Found"},
                 {418, NULL},
                 {500, "Internal Server Error"},
                 {503, "Service Unavailable"},
                 {599, NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char target[32], body[32];
        snprintf(target, sizeof target, "/status/%d", cases[i].code);
        snprintf(body, sizeof body, "status %d", cases[i].code);
        struct test_http_response r;
        fetch("GET", target, NULL, &r);
        ck_assert_int_eq(r.status, cases[i].code);
        if (cases[i].reason)
            ck_assert_str_eq(r.reason, cases[i].reason);
        ck_assert_str_eq(r.body, body);
        test_http_response_free(&r);
    }
}
END_TEST

/* 204 and 304 carry no body: the next response on the same connection starts right after. */
START_TEST(test_demo_status_204_304_have_no_body)
{
    struct test_http_client c;
    client_open(&c, g_port);
    client_sends(&c, "GET /status/204 HTTP/1.1\r\nHost: t\r\n\r\n"
                     "GET /status/304 HTTP/1.1\r\nHost: t\r\n\r\n"
                     "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    struct test_http_response r;
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 204);
    ck_assert_str_eq(r.reason, "No Content");
    ck_assert_ptr_null(test_http_header(&r, "Transfer-Encoding"));
    test_http_response_free(&r);
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 304);
    ck_assert_str_eq(r.reason, "Not Modified");
    ck_assert_ptr_null(test_http_header(&r, "Transfer-Encoding"));
    test_http_response_free(&r);
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "Hello, world!");
    test_http_response_free(&r);
    test_http_close(&c);
}
END_TEST

START_TEST(test_demo_status_out_of_range_is_400)
{
    expect_get("/status/199", 400, NULL);
    expect_get("/status/100", 400, NULL);
    expect_get("/status/600", 400, NULL);
    expect_get("/status/0", 400, NULL);
    expect_get("/status/99999999999999999999", 400, NULL);
    expect_get("/status/abc", 404, NULL);
}
END_TEST

START_TEST(test_demo_redirect_to_local_path)
{
    struct test_http_response r;
    fetch("GET", "/redirect?to=/user/7", NULL, &r);
    ck_assert_int_eq(r.status, 302);
    ck_assert_str_eq(r.reason, "Found");
    ck_assert_ptr_nonnull(test_http_header(&r, "Location"));
    ck_assert_str_eq(test_http_header(&r, "Location"), "/user/7");
    test_http_response_free(&r);
    fetch("GET", "/redirect?to=%2Fgreet%3Fname%3Dx", NULL, &r);
    ck_assert_int_eq(r.status, 302);
    ck_assert_ptr_nonnull(test_http_header(&r, "Location"));
    ck_assert_str_eq(test_http_header(&r, "Location"), "/greet?name=x");
    test_http_response_free(&r);
    fetch("GET", "/redirect?to=/", NULL, &r);
    ck_assert_int_eq(r.status, 302);
    ck_assert_str_eq(test_http_header(&r, "Location"), "/");
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_demo_redirect_rejects_non_local)
{
    expect_get("/redirect", 400, NULL);
    expect_get("/redirect?to=", 400, NULL);
    expect_get("/redirect?to=user", 400, NULL);
    expect_get("/redirect?to=//evil.example/x", 400, NULL);
    expect_get("/redirect?to=%2F%2Fevil.example", 400, NULL);
    expect_get("/redirect?to=http://evil.example/", 400, NULL);
    expect_get("/redirect?to=http%3A%2F%2Fevil.example%2F", 400, NULL);
    /* A CR/LF in the target must never become a header line of its own. */
    struct test_http_response r;
    fetch("GET", "/redirect?to=/x%0D%0ASet-Cookie:%20a=b", NULL, &r);
    ck_assert_ptr_null(test_http_header(&r, "Set-Cookie"));
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_demo_header_echoes_request_header)
{
    struct test_http_response r;
    fetch("GET", "/header/X-Custom", "x-custom: abc def\r\n", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "abc def");
    test_http_response_free(&r);
    fetch("GET", "/header/user-agent", "User-Agent: gale-test/1\r\n", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "gale-test/1");
    test_http_response_free(&r);
    fetch("GET", "/header/X-Multi",
          "X-Multi: one\r\nX-Other: no\r\nx-multi: two\r\n"
          "X-MULTI: three\r\n",
          &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "one, two, three");
    test_http_response_free(&r);
    fetch("GET", "/header/Host", NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "127.0.0.1");
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_demo_header_absent_is_404)
{
    expect_get("/header/X-Absent", 404, NULL);
    expect_get("/header/", 404, NULL);
    expect_get("/header/Bad_Name", 404, NULL);
}
END_TEST

START_TEST(test_demo_error_is_500)
{
    struct test_http_response r;
    fetch("GET", "/error", NULL, &r);
    ck_assert_int_eq(r.status, 500);
    ck_assert_str_eq(r.reason, "Internal Server Error");
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_demo_unknown_path_is_404)
{
    expect_get("/nope", 404, NULL);
    expect_get("/user", 404, NULL);
    expect_get("//", 404, NULL);
    expect_get("/Hello", 404, NULL);
}
END_TEST

START_TEST(test_demo_wrong_method_is_405)
{
    static const char *const cases[] = {
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        "DELETE /user/1 HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n",
        "PUT /greet?name=x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        "PATCH /status/200 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct test_http_response r;
        exchange(cases[i], strlen(cases[i]), false, &r);
        ck_assert_msg(r.status == 405, "%.30s: status %d", cases[i], r.status);
        test_http_response_free(&r);
    }
}
END_TEST

/* HEAD on every GET route: the GET's status and framing headers, no body (the next response on
 * the same connection starts right after the header block). */
START_TEST(test_demo_head_matches_get_without_body)
{
    static const char *const targets[] = {
        "/",
        "/user/7",
        "/user/x",
        "/greet?name=A%20B",
        "/greet",
        "/delay?ms=0",
        "/delay?ms=x",
        "/stream?chunks=2",
        "/stream?chunks=0",
        "/status/201",
        "/status/204",
        "/status/404",
        "/redirect?to=/x",
        "/redirect?to=x",
        "/header/Host",
        "/header/X-No",
        "/error",
        "/nope",
    };
    /* Transfer-Encoding is not compared: a server MAY omit on HEAD what only generating the
     * content determines (RFC 9110 9.3.2); a Content-Length it sends must match the GET's. */
    static const char *const compared[] = {"Content-Length", "Content-Type", "Location"};
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        struct test_http_response get, head, next;
        fetch("GET", targets[i], NULL, &get);
        struct test_http_client c;
        client_open(&c, g_port);
        char raw[512];
        snprintf(raw, sizeof raw,
                 "HEAD %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                 "GET /user/99 HTTP/1.1\r\nHost: t\r\n\r\n",
                 targets[i]);
        client_sends(&c, raw);
        ck_assert_int_eq(test_http_read(&c, true, &head), 0);
        ck_assert_msg(head.status == get.status, "HEAD %s: %d, GET: %d", targets[i], head.status,
                      get.status);
        for (size_t h = 0; h < sizeof compared / sizeof compared[0]; h++) {
            const char *a = test_http_header(&get, compared[h]);
            const char *b = test_http_header(&head, compared[h]);
            ck_assert_msg((!a && !b) || (a && b && strcmp(a, b) == 0),
                          "HEAD %s: %s is \"%s\", GET has \"%s\"", targets[i], compared[h],
                          b ? b : "(none)", a ? a : "(none)");
        }
        ck_assert_int_eq(test_http_read(&c, false, &next), 0);
        ck_assert_msg(next.status == 200 && strcmp(next.body, "user 99") == 0,
                      "after HEAD %s the next response is %d \"%s\"", targets[i], next.status,
                      next.body);
        test_http_close(&c);
        test_http_response_free(&get);
        test_http_response_free(&head);
        test_http_response_free(&next);
    }
}
END_TEST

/* ---- HTTP/1.1 server behaviour ---- */

START_TEST(test_demo_keep_alive_serves_many_requests)
{
    struct test_http_client c;
    client_open(&c, g_port);
    for (int i = 0; i < 20; i++) {
        char raw[128], want[32];
        snprintf(raw, sizeof raw, "GET /user/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        snprintf(want, sizeof want, "user %d", i);
        client_sends(&c, raw);
        struct test_http_response r;
        ck_assert_int_eq(test_http_read(&c, false, &r), 0);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.body, want);
        const char *conn = test_http_header(&r, "Connection");
        ck_assert_msg(!conn || !strcasestr(conn, "close"), "Connection: %s", conn);
        test_http_response_free(&r);
        ck_assert(test_http_idle(&c));
    }
    test_http_close(&c);
}
END_TEST

START_TEST(test_demo_connection_close_is_honoured)
{
    struct test_http_client c;
    client_open(&c, g_port);
    client_sends(&c, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    struct test_http_response r;
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "Hello, world!");
    test_http_response_free(&r);
    expect_closed(&c, 5);
    test_http_close(&c);
}
END_TEST

START_TEST(test_demo_http10_closes_unless_keep_alive)
{
    struct test_http_client c;
    client_open(&c, g_port);
    client_sends(&c, "GET / HTTP/1.0\r\n\r\n");
    struct test_http_response r;
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "Hello, world!");
    test_http_response_free(&r);
    expect_closed(&c, 5);
    test_http_close(&c);

    client_open(&c, g_port);
    for (int i = 0; i < 3; i++) {
        client_sends(&c, "GET /greet?name=old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        ck_assert_int_eq(test_http_read(&c, false, &r), 0);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(r.body, "Hello, old!");
        ck_assert_ptr_nonnull(test_http_header(&r, "Connection"));
        ck_assert_ptr_nonnull(strcasestr(test_http_header(&r, "Connection"), "keep-alive"));
        test_http_response_free(&r);
    }
    test_http_close(&c);
}
END_TEST

/* Ten mixed requests in one write: ten complete responses, in order. */
START_TEST(test_demo_pipelined_requests_answered_in_order)
{
    static const char raw[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /delay?ms=50 HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /user/5 HTTP/1.1\r\nHost: t\r\n\r\n"
                              "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n"
                              "Content-Type: text/plain\r\n\r\nhello world"
                              "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /status/204 HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /stream?chunks=2 HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                              "GET /header/X-P HTTP/1.1\r\nHost: t\r\nX-P: 9\r\n\r\n"
                              "GET /greet?name=last HTTP/1.1\r\nHost: t\r\n\r\n";
    static const struct {
        bool head;
        int status;
        const char *body;
    } want[] = {{false, 200, "Hello, world!"},
                {false, 200, "waited 50 ms"},
                {false, 200, "user 5"},
                {false, 200, "hello world"},
                {true, 200, ""},
                {false, 204, ""},
                {false, 200, "chunk 1\nchunk 2\n"},
                {false, 404, NULL},
                {false, 200, "9"},
                {false, 200, "Hello, last!"}};
    struct test_http_client c;
    client_open(&c, g_port);
    client_send(&c, raw, sizeof raw - 1);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        struct test_http_response r;
        ck_assert_msg(test_http_read(&c, want[i].head, &r) == 0, "response %zu missing", i + 1);
        ck_assert_msg(r.status == want[i].status, "response %zu: status %d, want %d", i + 1,
                      r.status, want[i].status);
        if (want[i].body)
            ck_assert_msg(strcmp(r.body, want[i].body) == 0, "response %zu: body \"%s\"", i + 1,
                          r.body);
        test_http_response_free(&r);
    }
    ck_assert(test_http_idle(&c));
    test_http_close(&c);
}
END_TEST

/* A request after a malformed one in the same pipeline is not answered; those before are. */
START_TEST(test_demo_pipelined_error_after_good_request)
{
    struct test_http_client c;
    client_open(&c, g_port);
    client_sends(&c, "GET /user/1 HTTP/1.1\r\nHost: t\r\n\r\n"
                     "BROKEN\r\n\r\n"
                     "GET /user/2 HTTP/1.1\r\nHost: t\r\n\r\n");
    struct test_http_response r;
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "user 1");
    test_http_response_free(&r);
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 400);
    test_http_response_free(&r);
    expect_closed(&c, 5);
    test_http_close(&c);
}
END_TEST

/* /delay waits on a timer: a GET / on another connection, sent after the delay started, is
 * answered first. */
START_TEST(test_demo_delay_does_not_block_other_requests)
{
    struct test_http_client slow, fast;
    client_open(&slow, g_port);
    client_open(&fast, g_port);
    client_sends(&slow, "GET /delay?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n");
    /* Make sure the delay request reached the server before the fast one is sent. */
    struct test_http_response r;
    fetch("GET", "/user/1", NULL, &r);
    test_http_response_free(&r);
    client_sends(&fast, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    ck_assert_int_eq(test_http_read(&fast, false, &r), 0);
    ck_assert_str_eq(r.body, "Hello, world!");
    test_http_response_free(&r);
    ck_assert_msg(test_http_idle(&slow), "the delayed response completed before GET /");
    ck_assert_int_eq(test_http_read(&slow, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "waited 300 ms");
    test_http_response_free(&r);
    test_http_close(&slow);
    test_http_close(&fast);
}
END_TEST

START_TEST(test_demo_expect_100_continue_before_body)
{
    struct test_http_client c;
    client_open(&c, g_port);
    client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/x-a\r\n"
                     "Content-Length: 9\r\nExpect: 100-continue\r\n\r\n");
    struct test_http_response r;
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 100);
    test_http_response_free(&r);
    client_sends(&c, "continued");
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "continued");
    ck_assert_str_eq(test_http_header(&r, "Content-Type"), "text/x-a");
    test_http_response_free(&r);
    test_http_close(&c);
}
END_TEST

START_TEST(test_demo_chunked_post_is_echoed)
{
    struct test_http_client c;
    client_open(&c, g_port);
    client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                     "Content-Type: text/plain\r\n\r\n"
                     "5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n");
    struct test_http_response r;
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "hello 0123456789");
    test_http_response_free(&r);
    /* The same connection goes on after a chunked body, also one sent in pieces. */
    client_sends(&c, "PUT /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab");
    client_sends(&c, "c\r\n");
    client_sends(&c, "0\r\n\r\n");
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "abc");
    ck_assert_str_eq(test_http_header(&r, "Content-Type"), "application/octet-stream");
    test_http_response_free(&r);
    test_http_close(&c);
}
END_TEST

START_TEST(test_demo_body_over_default_max_is_413)
{
    struct test_http_response r;
    const char *raw = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\n\r\n";
    exchange(raw, strlen(raw), false, &r);
    ck_assert_int_eq(r.status, 413);
    test_http_response_free(&r);
}
END_TEST

/* Just under the 64 KiB header limit is fine; over it is 431. */
START_TEST(test_demo_header_block_limit_is_431)
{
    size_t big = 70 * 1024;
    char *raw = malloc(big + 256);
    ck_assert_ptr_nonnull(raw);
    int n = snprintf(raw, 256, "GET /header/X-Big HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(raw + n, 'a', big);
    memcpy(raw + n + big, "\r\n\r\n", 5);
    struct test_http_response r;
    exchange(raw, strlen(raw), false, &r);
    ck_assert_int_eq(r.status, 431);
    test_http_response_free(&r);

    size_t ok = 60 * 1024;
    n = snprintf(raw, 256, "GET /header/X-Big HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(raw + n, 'b', ok);
    memcpy(raw + n + ok, "\r\n\r\n", 5);
    exchange(raw, strlen(raw), false, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, ok);
    test_http_response_free(&r);
    free(raw);
}
END_TEST

/* Sends `raw` and expects `status`, then the server closing the connection. */
static void expect_status_then_close(const char *raw, int status)
{
    struct test_http_client c;
    client_open(&c, g_port);
    client_sends(&c, raw);
    struct test_http_response r;
    ck_assert_msg(test_http_read(&c, false, &r) == 0, "no response to \"%.40s\"", raw);
    ck_assert_msg(r.status == status, "\"%.40s\": status %d, want %d", raw, r.status, status);
    test_http_response_free(&r);
    expect_closed(&c, 5);
    test_http_close(&c);
}

START_TEST(test_demo_malformed_request_line_is_400_then_close)
{
    expect_status_then_close("GARBAGE\r\n\r\n", 400);
    expect_status_then_close("GET\r\nHost: t\r\n\r\n", 400);
    expect_status_then_close("GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400);
    expect_status_then_close("GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect_status_then_close("GET / FTP/1.1\r\nHost: t\r\n\r\n", 400);
}
END_TEST

START_TEST(test_demo_content_length_with_chunked_is_400)
{
    expect_status_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                             400);
    expect_status_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                             "Content-Length: 5\r\n\r\n0\r\n\r\n",
                             400);
}
END_TEST

START_TEST(test_demo_differing_content_lengths_is_400)
{
    expect_status_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                             "Content-Length: 4\r\n\r\nabcd",
                             400);
    expect_status_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\nabcd",
                             400);
    expect_status_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\nabc",
                             400);
    expect_status_then_close("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
                             400);
}
END_TEST

/* A client that leaves while its /delay is pending: the timer fires on a closed connection and
 * the server goes on serving (the second delay outlives the first one's timer). */
START_TEST(test_demo_client_gone_mid_delay)
{
    struct test_http_client c;
    client_open(&c, g_port);
    client_sends(&c, "GET /delay?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n");
    struct test_http_response r;
    fetch("GET", "/user/3", NULL, &r); /* the delay request has been read by now */
    test_http_response_free(&r);
    test_http_close(&c);
    expect_get("/delay?ms=300", 200, "waited 300 ms");
    expect_get("/", 200, "Hello, world!");

    /* The same with a reset instead of a FIN. */
    client_open(&c, g_port);
    client_sends(&c, "GET /delay?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n");
    fetch("GET", "/user/4", NULL, &r);
    test_http_response_free(&r);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    test_http_close(&c);
    expect_get("/delay?ms=300", 200, "waited 300 ms");
}
END_TEST

/* ---- limits set on the command line: --max-body 1024 --idle-timeout 1 ---- */

START_TEST(test_demo_max_body_option_is_enforced)
{
    char body[1025];
    memset(body, 'x', sizeof body);
    check_echo("POST", body, 1024, NULL); /* exactly the limit */

    struct test_http_client c;
    client_open(&c, g_port);
    client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n");
    struct test_http_response r;
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 413);
    test_http_response_free(&r);
    test_http_close(&c);

    /* A chunked body is counted as it arrives. */
    client_open(&c, g_port);
    client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[600];
    int n = snprintf(chunk, sizeof chunk, "200\r\n");
    memset(chunk + n, 'y', 512);
    memcpy(chunk + n + 512, "\r\n", 2);
    for (int i = 0; i < 3; i++)
        if (test_write_all(c.fd, chunk, (size_t)n + 514) != 0)
            break; /* the server may already have answered and closed */
    test_write_all(c.fd, "0\r\n\r\n", 5);
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 413);
    test_http_response_free(&r);
    test_http_close(&c);
}
END_TEST

START_TEST(test_demo_idle_connection_is_closed)
{
    struct test_http_client c;
    client_open(&c, g_port);
    expect_closed(&c, 10); /* never sent a byte */
    test_http_close(&c);

    /* Idle after serving a request. */
    client_open(&c, g_port);
    client_sends(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    struct test_http_response r;
    ck_assert_int_eq(test_http_read(&c, false, &r), 0);
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
    expect_closed(&c, 10);
    test_http_close(&c);
}
END_TEST

/* A header trickled one byte per 100 ms (40 s for the whole line) is cut off by the header
 * deadline: each byte does not restart it. */
START_TEST(test_demo_slow_header_hits_deadline)
{
    char raw[512];
    int n = snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    memset(raw + n, 's', 400);
    memcpy(raw + n + 400, "\r\n\r\n", 5);
    size_t len = strlen(raw);

    struct test_http_client c;
    client_open(&c, g_port);
    size_t sent = 0;
    bool closed = false;
    while (sent < len && !closed) {
        if (send(c.fd, raw + sent, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        sent++;
        struct pollfd p = {.fd = c.fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0) {
            /* Readable: an error response and/or EOF; the server is done with us. */
            closed = true;
        }
    }
    ck_assert_msg(closed, "whole header sent one byte at a time without being cut off");
    ck_assert_uint_lt(sent, len);
    expect_closed(&c, 5);
    test_http_close(&c);
}
END_TEST

/* ---- --processes 2 ---- */

START_TEST(test_demo_processes_serve_requests)
{
    for (int i = 0; i < 30; i++) {
        char target[32], want[32];
        snprintf(target, sizeof target, "/user/%d", i);
        snprintf(want, sizeof want, "user %d", i);
        expect_get(target, 200, want);
    }
    /* Two slow requests at once are both answered (by one worker's loop or by two). */
    struct test_http_client a, b;
    client_open(&a, g_port);
    client_open(&b, g_port);
    client_sends(&a, "GET /delay?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n");
    client_sends(&b, "GET /delay?ms=100 HTTP/1.1\r\nHost: t\r\n\r\n");
    struct test_http_response r;
    ck_assert_int_eq(test_http_read(&a, false, &r), 0);
    ck_assert_str_eq(r.body, "waited 100 ms");
    test_http_response_free(&r);
    ck_assert_int_eq(test_http_read(&b, false, &r), 0);
    ck_assert_str_eq(r.body, "waited 100 ms");
    test_http_response_free(&r);
    test_http_close(&a);
    test_http_close(&b);

    /* Two workers under a supervisor; SIGTERM to the supervisor ends them all. */
    pid_t workers[8];
    int n = test_children_of(g_pid, workers, 8);
    ck_assert_int_eq(n, 2);
    stop_demo();
    for (int i = 0; i < n; i++) {
        int tries = 0;
        while (kill(workers[i], 0) == 0 && tries++ < 500) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        ck_assert_msg(kill(workers[i], 0) < 0, "worker %d outlived the supervisor", workers[i]);
    }
}
END_TEST

/* ---- interoperability: curl and Python's http.client ---- */

/* Runs `cmd` through the shell; returns its stdout+stderr (malloc'ed) and exit status. */
static char *run_cmd(const char *cmd, int *status)
{
    FILE *f = popen(cmd, "r");
    ck_assert_msg(f != NULL, "popen %s", cmd);
    size_t cap = 65536, n = 0;
    char *out = malloc(cap + 1);
    ck_assert_ptr_nonnull(out);
    size_t r;
    while ((r = fread(out + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            out = realloc(out, cap + 1);
            ck_assert_ptr_nonnull(out);
        }
    }
    out[n] = '\0';
    int st = pclose(f);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return out;
}

static char *curl(const char *args, const char *target)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "curl -sS -i --max-time 10 %s 'http://127.0.0.1:%d%s' 2>&1", args,
             g_port, target);
    int status;
    char *out = run_cmd(cmd, &status);
    ck_assert_msg(status == 0, "%s: exit %d: %s", cmd, status, out);
    return out;
}

START_TEST(test_demo_curl_interop)
{
    char *out = curl("", "/");
    ck_assert_msg(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "\r\n\r\nHello, world!"));
    free(out);

    out = curl("", "/greet?name=curl%20user");
    ck_assert_ptr_nonnull(strstr(out, "\r\n\r\nHello, curl user!"));
    free(out);

    out = curl("--data-binary 'a=1&b=2' -H 'Content-Type: text/x-curl'", "/echo");
    ck_assert_msg(strncmp(out, "HTTP/1.1 200", 12) == 0, "%s", out);
    ck_assert_ptr_nonnull(strcasestr(out, "\r\nContent-Type: text/x-curl\r\n"));
    ck_assert_ptr_nonnull(strstr(out, "\r\n\r\na=1&b=2"));
    free(out);

    /* curl sends Expect: 100-continue itself for bodies over 1 MiB; force it for a small one. */
    out = curl("-X PUT --data-binary 'put body' -H 'Expect: 100-continue'", "/echo");
    ck_assert_ptr_nonnull(strstr(out, "HTTP/1.1 100"));
    ck_assert_ptr_nonnull(strstr(out, "\r\n\r\nput body"));
    free(out);

    out = curl("", "/stream?chunks=3");
    ck_assert_ptr_nonnull(strcasestr(out, "\r\nTransfer-Encoding: chunked\r\n"));
    ck_assert_ptr_nonnull(strstr(out, "\r\n\r\nchunk 1\nchunk 2\nchunk 3\n"));
    free(out);

    out = curl("-I", "/user/12");
    ck_assert_msg(strncmp(out, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", out);
    ck_assert_ptr_nonnull(strcasestr(out, "\r\nContent-Length: 7\r\n"));
    free(out);

    out = curl("", "/redirect?to=/user/1");
    ck_assert_msg(strncmp(out, "HTTP/1.1 302", 12) == 0, "%s", out);
    ck_assert_ptr_nonnull(strcasestr(out, "\r\nLocation: /user/1\r\n"));
    free(out);

    out = curl("-L", "/redirect?to=/user/1");
    ck_assert_ptr_nonnull(strstr(out, "\r\n\r\nuser 1"));
    free(out);

    out = curl("-H 'X-From-Curl: yes'", "/header/x-from-curl");
    ck_assert_ptr_nonnull(strstr(out, "\r\n\r\nyes"));
    free(out);

    out = curl("", "/status/503");
    ck_assert_msg(strncmp(out, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0, "%s", out);
    free(out);
}
END_TEST

START_TEST(test_demo_python_http_client_interop)
{
    const char *src = getenv("GALE_SOURCE_DIR");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/demo_client.py' %d 2>&1", src ? src : ".",
             g_port);
    int status;
    char *out = run_cmd(cmd, &status);
    ck_assert_msg(status == 0, "demo_client.py: exit %d:\n%s", status, out);
    /* Every check the script runs reports itself; none may be missing. */
    ck_assert_ptr_nonnull(strstr(out, "checks passed: 10\n"));
    free(out);
}
END_TEST

static Suite *demo_suite(void)
{
    Suite *s = suite_create("demo");

    TCase *tc = tcase_create("routes");
    tcase_add_checked_fixture(tc, setup_default, teardown_demo);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_demo_root_says_hello);
    tcase_add_test(tc, test_demo_user_digits_only);
    tcase_add_test(tc, test_demo_greet_decodes_name);
    tcase_add_test(tc, test_demo_greet_escapes_markup);
    tcase_add_test(tc, test_demo_greet_without_name_is_400);
    tcase_add_test(tc, test_demo_echo_returns_body_and_type);
    tcase_add_test(tc, test_demo_echo_large_body_byte_for_byte);
    tcase_add_test(tc, test_demo_delay_answers_after_timer);
    tcase_add_test(tc, test_demo_delay_bad_ms_is_400);
    tcase_add_test(tc, test_demo_stream_sends_each_chunk);
    tcase_add_test(tc, test_demo_stream_bad_chunks_is_400);
    tcase_add_test(tc, test_demo_status_sets_code_and_reason);
    tcase_add_test(tc, test_demo_status_204_304_have_no_body);
    tcase_add_test(tc, test_demo_status_out_of_range_is_400);
    tcase_add_test(tc, test_demo_redirect_to_local_path);
    tcase_add_test(tc, test_demo_redirect_rejects_non_local);
    tcase_add_test(tc, test_demo_header_echoes_request_header);
    tcase_add_test(tc, test_demo_header_absent_is_404);
    tcase_add_test(tc, test_demo_error_is_500);
    tcase_add_test(tc, test_demo_unknown_path_is_404);
    tcase_add_test(tc, test_demo_wrong_method_is_405);
    tcase_add_test(tc, test_demo_head_matches_get_without_body);
    suite_add_tcase(s, tc);

    tc = tcase_create("server");
    tcase_add_checked_fixture(tc, setup_default, teardown_demo);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_demo_keep_alive_serves_many_requests);
    tcase_add_test(tc, test_demo_connection_close_is_honoured);
    tcase_add_test(tc, test_demo_http10_closes_unless_keep_alive);
    tcase_add_test(tc, test_demo_pipelined_requests_answered_in_order);
    tcase_add_test(tc, test_demo_pipelined_error_after_good_request);
    tcase_add_test(tc, test_demo_delay_does_not_block_other_requests);
    tcase_add_test(tc, test_demo_expect_100_continue_before_body);
    tcase_add_test(tc, test_demo_chunked_post_is_echoed);
    tcase_add_test(tc, test_demo_body_over_default_max_is_413);
    tcase_add_test(tc, test_demo_header_block_limit_is_431);
    tcase_add_test(tc, test_demo_malformed_request_line_is_400_then_close);
    tcase_add_test(tc, test_demo_content_length_with_chunked_is_400);
    tcase_add_test(tc, test_demo_differing_content_lengths_is_400);
    tcase_add_test(tc, test_demo_client_gone_mid_delay);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_add_checked_fixture(tc, setup_limits, teardown_demo);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_demo_max_body_option_is_enforced);
    tcase_add_test(tc, test_demo_idle_connection_is_closed);
    tcase_add_test(tc, test_demo_slow_header_hits_deadline);
    suite_add_tcase(s, tc);

    tc = tcase_create("processes");
    tcase_add_checked_fixture(tc, setup_processes, teardown_demo);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_demo_processes_serve_requests);
    suite_add_tcase(s, tc);

    tc = tcase_create("interop");
    tcase_add_checked_fixture(tc, setup_default, teardown_demo);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_demo_curl_interop);
    tcase_add_test(tc, test_demo_python_http_client_interop);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* A server closing on us must not kill the test with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(demo_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* web_static: StaticFileHandler over real sockets: validators and conditional requests (RFC 9110
 * section 13), ranges with RFC 9110's examples, HEAD, static_url, the paths that try to leave the
 * directory, a 64 MiB file to a client that does not read while another is served, and
 * pipelined requests answered in order around the file ranges. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http/httputil.h"
#include "http/web_static.h"
#include "webtest.h"

static char dir[64];
static char outside[64];
#define BIG (64u << 20)

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static char digits10k[10001];

static void url_get(gale_handler *h)
{
    gale_write_str(h, gale_static_url(h, gale_get_argument(h, "p", "")));
}
static const gale_handler_class url_handler = {.get = url_get};

/* GET /raw/<rest>: the route's one group, as a prefix route matches it. */
static void raw_get(gale_handler *h)
{
    size_t len = 1;
    const char *p = gale_path_arg(h, 0, &len);
    gale_writef(h, "[%.*s] %zu", (int)len, p ? p : "-", gale_path_arg_count(h));
}
static const gale_handler_class raw_handler = {.get = raw_get};

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/gale-static-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(outside, sizeof outside, "/tmp/gale-outside-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(outside));
    char p[256];
    for (int i = 0; i < 10000; i++)
        digits10k[i] = (char)('0' + i % 10);
    snprintf(p, sizeof p, "%s/ten.txt", dir);
    write_file(p, digits10k, 10000);
    snprintf(p, sizeof p, "%s/page.html", dir);
    write_file(p, "<p>hi</p>", 9);
    snprintf(p, sizeof p, "%s/empty.json", dir);
    write_file(p, "", 0);
    snprintf(p, sizeof p, "%s/sub", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub/app.js", dir);
    write_file(p, "x()", 3);
    snprintf(p, sizeof p, "%s/secret.txt", outside);
    write_file(p, "root:secret", 11);
    char target[256];
    snprintf(p, sizeof p, "%s/out", dir);
    ck_assert_int_eq(symlink(outside, p), 0);
    snprintf(p, sizeof p, "%s/out.txt", dir);
    snprintf(target, sizeof target, "%s/secret.txt", outside);
    ck_assert_int_eq(symlink(target, p), 0);
    snprintf(p, sizeof p, "%s/in.txt", dir);
    ck_assert_int_eq(symlink("sub/app.js", p), 0);
    wt_setup();
    ck_assert_int_eq(gale_app_set_static_path(wt_app, dir, NULL), 0);
    ck_assert_int_eq(gale_app_route(wt_app, "/url", &url_handler, NULL), 0);
    ck_assert_int_eq(gale_app_route(wt_app, "^/raw/(.*)$", &raw_handler, NULL), 0);
    /* regex routes whose literal start is checked before regexec */
    ck_assert_int_eq(gale_app_route(wt_app, "^/colou?r$", &raw_handler, NULL), 0);
    ck_assert_int_eq(gale_app_route(wt_app, "^/ab*c(x)$", &raw_handler, NULL), 0);
    ck_assert_int_eq(gale_app_route(wt_app, "^/alt-one|/alt-(two)$", &raw_handler, NULL), 0);
    wt_listen();
}

static void teardown(void)
{
    wt_teardown();
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", dir, outside);
    ck_assert_int_eq(system(cmd), 0);
}

static struct test_http_response get(const char *target, const char *headers)
{
    return wt_req("GET", target, headers, NULL);
}

START_TEST(test_web_static_serves_with_validators)
{
    struct test_http_response r = get("/static/ten.txt", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_uint_eq(r.body_len, 10000);
    ck_assert_mem_eq(r.body, digits10k, 10000);
    ck_assert(test_http_header_is(&r, "Content-Type", "text/plain"));
    ck_assert(test_http_header_is(&r, "Content-Length", "10000"));
    ck_assert(test_http_header_is(&r, "Accept-Ranges", "bytes"));
    const char *etag = test_http_header(&r, "ETag");
    ck_assert_msg(etag && etag[0] == '"' && etag[strlen(etag) - 1] == '"', "strong: %s", etag);
    struct stat sb;
    char p[128], date[40];
    snprintf(p, sizeof p, "%s/ten.txt", dir);
    stat(p, &sb);
    gale_http_format_date((long long)sb.st_mtime, date);
    ck_assert(test_http_header_is(&r, "Last-Modified", date));
    ck_assert(!test_http_header(&r, "Cache-Control"));
    test_http_response_free(&r);

    struct test_http_response h = wt_req("HEAD", "/static/ten.txt", NULL, NULL);
    ck_assert_int_eq(h.status, 200);
    ck_assert(test_http_header_is(&h, "Content-Length", "10000"));
    ck_assert_uint_eq(h.body_len, 0);
    test_http_response_free(&h);

    /* a method the handler lacks: 405, and nothing of the process's is closed on the way */
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    int saved = dup(0);
    ck_assert_int_eq(dup2(fds[0], 0), 0);
    r = wt_req("POST", "/static/ten.txt", NULL, "");
    ck_assert_int_eq(r.status, 405);
    test_http_response_free(&r);
    ck_assert_int_ne(fcntl(0, F_GETFD), -1);
    dup2(saved, 0);
    close(saved);
    close(fds[0]);
    close(fds[1]);

    const char *types[][2] = {{"/static/page.html", "text/html"},
                              {"/static/sub/app.js", "application/javascript"},
                              {"/static/empty.json", "application/json"}};
    for (int i = 0; i < 3; i++) {
        r = get(types[i][0], NULL);
        ck_assert_int_eq(r.status, 200);
        ck_assert_msg(test_http_header_is(&r, "Content-Type", types[i][1]), "%s", types[i][0]);
        test_http_response_free(&r);
    }
}
END_TEST

/* RFC 9110 13.1.2 and 13.2.2: If-None-Match first (lists, "*", weak comparison); only without
 * it If-Modified-Since. */
START_TEST(test_web_static_conditional_requests)
{
    struct test_http_response r = get("/static/ten.txt", NULL);
    char etag[80], lm[40], hdr[300];
    snprintf(etag, sizeof etag, "%s", test_http_header(&r, "ETag"));
    snprintf(lm, sizeof lm, "%s", test_http_header(&r, "Last-Modified"));
    test_http_response_free(&r);

    const char *hits[] = {"%s", "\"xyzzy\", %s", "\"a\",\"b\" ,W/%s", "*",
                          "\"x\"\r\nIf-None-Match: %s"};
    for (size_t i = 0; i < sizeof hits / sizeof hits[0]; i++) {
        char v[200];
        snprintf(v, sizeof v, hits[i], etag);
        snprintf(hdr, sizeof hdr, "If-None-Match: %s\r\n", v);
        r = get("/static/ten.txt", hdr);
        ck_assert_msg(r.status == 304, "If-None-Match: %s -> %d", v, r.status);
        ck_assert_uint_eq(r.body_len, 0);
        ck_assert(test_http_header_is(&r, "ETag", etag));
        test_http_response_free(&r);
    }
    /* no match: 200, and a matching If-Modified-Since does not count then */
    snprintf(hdr, sizeof hdr, "If-None-Match: \"other\"\r\nIf-Modified-Since: %s\r\n", lm);
    r = get("/static/ten.txt", hdr);
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
    snprintf(hdr, sizeof hdr, "If-Modified-Since: %s\r\n", lm);
    r = get("/static/ten.txt", hdr);
    ck_assert_int_eq(r.status, 304);
    test_http_response_free(&r);
    r = wt_req("HEAD", "/static/ten.txt", hdr, NULL);
    ck_assert_int_eq(r.status, 304);
    test_http_response_free(&r);
    r = get("/static/ten.txt", "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
    r = get("/static/ten.txt", "If-Modified-Since: Friday, 01-Jan-44 00:00:00 GMT\r\n");
    ck_assert_int_eq(r.status, 304); /* rfc850 form, 2044 */
    test_http_response_free(&r);
    r = get("/static/ten.txt", "If-Modified-Since: yesterday\r\n");
    ck_assert_int_eq(r.status, 200); /* not a date: ignored */
    test_http_response_free(&r);
    /* If-Match (strong) and If-Unmodified-Since: 412 when they fail */
    snprintf(hdr, sizeof hdr, "If-Match: \"x\", %s\r\n", etag);
    r = get("/static/ten.txt", hdr);
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
    r = get("/static/ten.txt", "If-Match: *\r\n");
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
    snprintf(hdr, sizeof hdr, "If-Match: W/%s\r\n", etag);
    r = get("/static/ten.txt", hdr);
    ck_assert_int_eq(r.status, 412);
    test_http_response_free(&r);
    r = get("/static/ten.txt", "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
    ck_assert_int_eq(r.status, 412);
    test_http_response_free(&r);
    snprintf(hdr, sizeof hdr, "If-Unmodified-Since: %s\r\n", lm);
    r = get("/static/ten.txt", hdr);
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
}
END_TEST

static void expect_range(const char *range, int status, const char *content_range, size_t from,
                         size_t len)
{
    char hdr[300];
    snprintf(hdr, sizeof hdr, "%s\r\n", range);
    struct test_http_response r = get("/static/ten.txt", hdr);
    ck_assert_msg(r.status == status, "%s -> %d", range, r.status);
    if (content_range)
        ck_assert_msg(test_http_header_is(&r, "Content-Range", content_range), "%s: %s", range,
                      test_http_header(&r, "Content-Range"));
    else
        ck_assert(!test_http_header(&r, "Content-Range"));
    ck_assert_uint_eq(r.body_len, len);
    if (len)
        ck_assert_mem_eq(r.body, digits10k + from, len);
    test_http_response_free(&r);
}

/* RFC 9110 14.1.2's examples on a 10000-byte representation. */
START_TEST(test_web_static_ranges)
{
    expect_range("Range: bytes=0-499", 206, "bytes 0-499/10000", 0, 500);
    expect_range("Range: bytes=500-999", 206, "bytes 500-999/10000", 500, 500);
    expect_range("Range: bytes=-500", 206, "bytes 9500-9999/10000", 9500, 500);
    expect_range("Range: bytes=9500-", 206, "bytes 9500-9999/10000", 9500, 500);
    expect_range("Range: bytes=0-0", 206, "bytes 0-0/10000", 0, 1);
    expect_range("Range: bytes=-1", 206, "bytes 9999-9999/10000", 9999, 1);
    expect_range("Range: bytes=0-999999", 206, "bytes 0-9999/10000", 0, 10000);
    expect_range("Range: bytes=-20000", 206, "bytes 0-9999/10000", 0, 10000);
    /* several ranges or a malformed header: the whole file */
    expect_range("Range: bytes=0-0,-1", 200, NULL, 0, 10000);
    expect_range("Range: bytes=500-400", 200, NULL, 0, 10000);
    expect_range("Range: items=0-5", 200, NULL, 0, 10000);
    expect_range("Range: bytes=x-5", 200, NULL, 0, 10000);
    /* unsatisfiable */
    expect_range("Range: bytes=10000-", 416, "bytes */10000", 0, 0);
    expect_range("Range: bytes=20000-30000", 416, "bytes */10000", 0, 0);
    expect_range("Range: bytes=-0", 416, "bytes */10000", 0, 0);

    struct test_http_response r = get("/static/ten.txt", NULL);
    char etag[80], lm[40], hdr[300];
    snprintf(etag, sizeof etag, "%s", test_http_header(&r, "ETag"));
    snprintf(lm, sizeof lm, "%s", test_http_header(&r, "Last-Modified"));
    test_http_response_free(&r);
    /* If-Range: a current validator keeps the range, a stale one gets the whole file */
    snprintf(hdr, sizeof hdr, "Range: bytes=0-9\r\nIf-Range: %s", etag);
    expect_range(hdr, 206, "bytes 0-9/10000", 0, 10);
    snprintf(hdr, sizeof hdr, "Range: bytes=0-9\r\nIf-Range: %s", lm);
    expect_range(hdr, 206, "bytes 0-9/10000", 0, 10);
    expect_range("Range: bytes=0-9\r\nIf-Range: \"stale\"", 200, NULL, 0, 10000);
    snprintf(hdr, sizeof hdr, "Range: bytes=0-9\r\nIf-Range: W/%s", etag);
    expect_range(hdr, 200, NULL, 0, 10000); /* weak never matches strongly */
    expect_range("Range: bytes=0-9\r\nIf-Range: Sun, 06 Nov 1994 08:49:37 GMT", 200, NULL, 0,
                 10000);
    /* HEAD ignores Range (RFC 9110 14.2) */
    r = wt_req("HEAD", "/static/ten.txt", "Range: bytes=0-9\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(test_http_header_is(&r, "Content-Length", "10000"));
    test_http_response_free(&r);
    /* an empty file has no satisfiable range */
    r = get("/static/empty.json", "Range: bytes=0-\r\n");
    ck_assert_int_eq(r.status, 416);
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_web_static_paths_never_leave_the_directory)
{
    static const struct {
        const char *target;
        int status;
    } cases[] = {
        {"/static/../outside", 403},
        {"/static/%2e%2e/x", 403},
        {"/static/%2E%2E%2Fetc%2Fpasswd", 403},
        {"/static/sub/..%2f..%2fetc/passwd", 403},
        {"/static/sub/%2e%2e/%2e%2e/etc/passwd", 403},
        {"/static/./ten.txt", 403},
        {"/static/%2fetc%2fpasswd", 403},
        {"/static//etc/passwd", 403},
        {"/static/ten.txt%00.html", 404},
        {"/static/out/secret.txt", 403}, /* a symlinked directory outside */
        {"/static/out.txt", 403},        /* a symlinked file outside */
        {"/static/sub", 403},            /* a directory: no listing */
        {"/static/sub/", 403},
        {"/static/", 403},
        {"/static/missing.txt", 404},
        {"/static/ten.txt/x", 404},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct test_http_response r = get(cases[i].target, NULL);
        ck_assert_msg(r.status == cases[i].status, "%s -> %d", cases[i].target, r.status);
        ck_assert_msg(!r.body || !strstr(r.body, "root:"), "%s leaked", cases[i].target);
        test_http_response_free(&r);
    }
    /* a symlink that stays inside is followed */
    struct test_http_response r = get("/static/in.txt", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "x()");
    test_http_response_free(&r);
    /* decoded %2f that stays inside is a path like any */
    r = get("/static/sub%2fapp.js", NULL);
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_web_static_url_versions_and_cache_control)
{
    struct test_http_response r = get("/url?p=ten.txt", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strncmp(r.body, "/static/ten.txt?v=", 18) == 0 && strlen(r.body) == 18 + 16, "%s",
                  r.body);
    char url1[64];
    snprintf(url1, sizeof url1, "%s", r.body);
    test_http_response_free(&r);
    r = get(url1, NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(test_http_header_is(&r, "Cache-Control", "public, max-age=31536000"));
    test_http_response_free(&r);
    /* new content, new version */
    char p[128];
    snprintf(p, sizeof p, "%s/ten.txt", dir);
    write_file(p, "changed", 7);
    r = get("/url?p=ten.txt", NULL);
    ck_assert_str_ne(r.body, url1);
    test_http_response_free(&r);
    r = get("/url?p=missing.txt", NULL);
    ck_assert_str_eq(r.body, "/static/missing.txt");
    test_http_response_free(&r);
}
END_TEST

/* Pipelined: a static response between two others; each response's bytes in order. */
struct reader {
    struct test_http_client c;
    int n;
    char bodies[4][64];
};

static void reader_main(void *arg)
{
    struct reader *rd = arg;
    for (int i = 0; i < 4; i++) {
        struct test_http_response r;
        if (test_http_read(&rd->c, false, &r) != 0)
            return;
        snprintf(rd->bodies[i], 64, "%s", r.body);
        rd->n++;
        test_http_response_free(&r);
    }
}

START_TEST(test_web_static_pipelined_in_order)
{
    const char *raw = "GET /static/page.html HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /static/ten.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-2\r\n\r\n"
                      "GET /url?p=page.html HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /static/page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    struct reader rd = {0};
    ck_assert_int_eq(test_http_open(&rd.c, wt_port, 10), 0);
    ck_assert_int_eq(test_http_sends(&rd.c, raw), 0);
    ck_assert(test_run_thread(wt_loop, reader_main, &rd, 20));
    ck_assert_int_eq(rd.n, 4);
    ck_assert_str_eq(rd.bodies[0], "<p>hi</p>");
    ck_assert_str_eq(rd.bodies[1], "012");
    ck_assert_msg(strncmp(rd.bodies[2], "/static/page.html?v=", 20) == 0, "%s", rd.bodies[2]);
    ck_assert_str_eq(rd.bodies[3], "<p>hi</p>");
    test_http_close(&rd.c);
}
END_TEST

/* ---- a 64 MiB file to a client that stops reading, while another is served ---- */

struct slow {
    int fd;
    atomic_int phase; /* 1: request sent, 2: other client served, may read */
    size_t got;
    bool match;
};

static void slow_main(void *arg)
{
    struct slow *s = arg;
    const char *req = "GET /static/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    test_write_all(s->fd, req, strlen(req));
    atomic_store(&s->phase, 1);
    while (atomic_load(&s->phase) < 2)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    /* now read all: the head, then 64 MiB of the pattern */
    char *buf = malloc(1 << 20);
    size_t total = 0, head = 0;
    s->match = true;
    for (;;) {
        ssize_t n = recv(s->fd, buf, 1 << 20, 0);
        if (n <= 0)
            break;
        size_t off = 0;
        if (!head) {
            char *e = memmem(buf, (size_t)n, "\r\n\r\n", 4);
            if (!e)
                break;
            head = (size_t)(e + 4 - buf);
            off = head;
        }
        for (size_t i = off; i < (size_t)n; i++, total++)
            if ((unsigned char)buf[i] != (unsigned char)(total * 7 + total / 4096))
                s->match = false;
    }
    s->got = total;
    free(buf);
}

static void *slow_thread(void *arg)
{
    slow_main(arg);
    return NULL;
}

struct fast {
    int status;
    struct slow *slow;
};

static void fast_main(void *arg)
{
    struct fast *f = arg;
    while (atomic_load(&f->slow->phase) < 1)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    nanosleep(&(struct timespec){0, 50000000}, NULL); /* the big response fills the socket */
    struct test_http_response r = {0};
    const char *req = "GET /static/page.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (test_http_exchange(wt_port, req, strlen(req), false, &r) == 0)
        f->status = r.status;
    test_http_response_free(&r);
    atomic_store(&f->slow->phase, 2);
}

static void both_main(void *arg)
{
    struct fast *f = arg;
    pthread_t t;
    pthread_create(&t, NULL, slow_thread, f->slow);
    fast_main(f);
    pthread_join(t, NULL);
}

START_TEST(test_web_static_big_file_slow_reader_does_not_block_others)
{
    char p[128];
    snprintf(p, sizeof p, "%s/big.bin", dir);
    unsigned char *data = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        data[i] = (unsigned char)(i * 7 + i / 4096);
    write_file(p, data, BIG);
    free(data);
    struct slow s = {.fd = test_connect_tcp(wt_port)};
    ck_assert_int_ge(s.fd, 0);
    /* The socket's buffers hold a few MiB at most: the server meets a full socket long before
     * the end of the file, and must serve the other client meanwhile. */
    test_set_timeouts(s.fd, 20);
    struct fast f = {.slow = &s};
    ck_assert(test_run_thread(wt_loop, both_main, &f, 60));
    ck_assert_int_eq(f.status, 200); /* served while the big one waited */
    ck_assert_uint_eq(s.got, BIG);
    ck_assert(s.match);
    close(s.fd);
}
END_TEST

/* A "<literal>(.*)" route matches by prefix, without a regex, as the regex would; other regex
 * routes check the literal they must start with first, minding quantifiers and alternations. */
START_TEST(test_web_static_prefix_route_matches_as_the_regex)
{
    static const struct {
        const char *target;
        int status;
        const char *body;
    } cases[] = {
        {"/raw/a/b%20c", 200, "[a/b c] 1"},
        {"/raw/", 200, "[] 1"},
        {"/raw", 404, NULL},
        {"/rawx/a", 404, NULL},
        {"/raw/a?q=1", 200, "[a] 1"},
        {"/color", 200, "[-] 0"},
        {"/colour", 200, "[-] 0"},
        {"/colouur", 404, NULL},
        {"/acx", 200, "[x] 1"},
        {"/abbbcx", 200, "[x] 1"},
        {"/alt-one", 200, "[-] 1"},
        {"/alt-two", 200, "[two] 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct test_http_response r = get(cases[i].target, NULL);
        ck_assert_msg(r.status == cases[i].status, "%s -> %d", cases[i].target, r.status);
        if (cases[i].body)
            ck_assert_str_eq(r.body, cases[i].body);
        test_http_response_free(&r);
    }
}
END_TEST

/* A client that leaves in the middle of a file: sendfile meets a closed socket (SIGPIPE, which
 * sendfile cannot suppress, must not end the process) and the server goes on serving. */
static void leave_mid_file(void *arg)
{
    int fd = test_connect_tcp(wt_port);
    if (fd < 0)
        return;
    const char *req = "GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n";
    test_write_all(fd, req, strlen(req));
    char buf[4096];
    if (recv(fd, buf, sizeof buf, 0) > 0)
        *(int *)arg = 1;
    close(fd); /* unread bytes: a reset */
    nanosleep(&(struct timespec){0, 100000000}, NULL);
}

START_TEST(test_web_static_client_leaving_mid_file)
{
    char p[128];
    snprintf(p, sizeof p, "%s/big.bin", dir);
    size_t n = 32u << 20;
    char *data = calloc(1, n);
    write_file(p, data, n);
    free(data);
    int got = 0;
    ck_assert(test_run_thread(wt_loop, leave_mid_file, &got, 20));
    ck_assert_int_eq(got, 1);
    test_run_for(wt_loop, 0.1);
    struct test_http_response r = get("/static/page.html", NULL);
    ck_assert_int_eq(r.status, 200);
    test_http_response_free(&r);
}
END_TEST

static Suite *web_static_suite(void)
{
    Suite *s = suite_create("web_static");
    TCase *t = tcase_create("static");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 90);
    tcase_add_test(t, test_web_static_serves_with_validators);
    tcase_add_test(t, test_web_static_conditional_requests);
    tcase_add_test(t, test_web_static_ranges);
    tcase_add_test(t, test_web_static_paths_never_leave_the_directory);
    tcase_add_test(t, test_web_static_url_versions_and_cache_control);
    tcase_add_test(t, test_web_static_pipelined_in_order);
    tcase_add_test(t, test_web_static_client_leaving_mid_file);
    tcase_add_test(t, test_web_static_prefix_route_matches_as_the_regex);
    tcase_add_test(t, test_web_static_big_file_slow_reader_does_not_block_others);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(web_static_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

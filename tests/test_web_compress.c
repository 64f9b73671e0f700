/* web_compress: gzip responses (Tornado's compress_response): round trips through zlib, the
 * Accept-Encoding negotiation with q-values, Vary, the minimum size, streamed responses
 * compressed per flush, HEAD matching GET, and the responses never compressed (ranges, already
 * encoded, images). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "http/web_compress.h"
#include "webtest.h"

/* The text the handlers answer: `n` bytes of a repeating sentence. */
static char *text(size_t n)
{
    static const char s[] = "The quick brown fox jumps over the lazy dog. ";
    char *t = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        t[i] = s[i % (sizeof s - 1)];
    t[n] = '\0';
    return t;
}

/* Inflates a gzip body; returns the bytes (malloc'ed) and their count, or NULL if not gzip. */
static char *gunzip(const char *in, size_t len, size_t *out_len)
{
    z_stream z = {0};
    ck_assert_int_eq(inflateInit2(&z, 15 + 16), Z_OK);
    size_t cap = 1 << 22;
    char *out = malloc(cap);
    z.next_in = (unsigned char *)in;
    z.avail_in = (uInt)len;
    z.next_out = (unsigned char *)out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_FINISH);
    *out_len = cap - z.avail_out;
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

/* GET /text?n=N&type=T&encoding=E&status=S&cl=1 */
static void text_get(gale_handler *h)
{
    size_t n = (size_t)atol(gale_get_argument(h, "n", "2000"));
    const char *type = gale_get_argument(h, "type", NULL);
    const char *enc = gale_get_argument(h, "encoding", NULL);
    int status = atoi(gale_get_argument(h, "status", "200"));
    if (type)
        gale_set_header(h, "Content-Type", type);
    if (enc)
        gale_set_header(h, "Content-Encoding", enc);
    gale_set_status(h, status);
    if (status == 206)
        gale_set_header(h, "Content-Range", "bytes 0-9/100");
    char *t = text(n);
    if (gale_get_argument(h, "cl", NULL)) {
        char cl[24];
        snprintf(cl, sizeof cl, "%zu", n);
        gale_set_header(h, "Content-Length", cl);
    }
    gale_write(h, t, n);
    free(t);
}
static const gale_handler_class text_handler = {.get = text_get};

/* GET /stream: three flushed pieces of 100 bytes, then 50 more at the finish. */
static void stream_get(gale_handler *h)
{
    char *t = text(350);
    gale_set_header(h, "Content-Type", "application/json");
    for (int i = 0; i < 3; i++) {
        gale_write(h, t + i * 100, 100);
        gale_flush(h);
    }
    gale_write(h, t + 300, 50);
    free(t);
}
static const gale_handler_class stream_handler = {.get = stream_get};

static void setup(void)
{
    wt_setup();
    ck_assert_int_eq(gale_app_set_compress(wt_app, true), 0);
    ck_assert_int_eq(gale_app_route(wt_app, "/text", &text_handler, NULL), 0);
    ck_assert_int_eq(gale_app_route(wt_app, "/stream", &stream_handler, NULL), 0);
    wt_listen();
}

static void teardown(void) { wt_teardown(); }

static bool gzipped(const struct test_http_response *r)
{
    return test_http_header_is(r, "Content-Encoding", "gzip");
}

static void expect_gzip_of(const struct test_http_response *r, size_t n)
{
    ck_assert(gzipped(r));
    ck_assert(test_http_header_is(r, "Vary", "Accept-Encoding"));
    size_t len;
    char *plain = gunzip(r->body, r->body_len, &len);
    ck_assert_ptr_nonnull(plain);
    char *want = text(n);
    ck_assert_uint_eq(len, n);
    ck_assert_mem_eq(plain, want, n);
    if (n >= 1000)
        ck_assert_uint_lt(r->body_len, n / 4); /* it did compress */
    free(plain);
    free(want);
}

START_TEST(test_web_compress_round_trip_and_content_length)
{
    struct test_http_response r =
        wt_req("GET", "/text?n=100000", "Accept-Encoding: gzip\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    expect_gzip_of(&r, 100000);
    char cl[24];
    snprintf(cl, sizeof cl, "%zu", r.body_len);
    ck_assert(test_http_header_is(&r, "Content-Length", cl));
    test_http_response_free(&r);
    /* a Content-Length the handler set becomes the compressed length */
    r = wt_req("GET", "/text?n=5000&cl=1", "Accept-Encoding: gzip\r\n", NULL);
    expect_gzip_of(&r, 5000);
    snprintf(cl, sizeof cl, "%zu", r.body_len);
    ck_assert(test_http_header_is(&r, "Content-Length", cl));
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_web_compress_accept_encoding_q_values)
{
    static const struct {
        const char *ae;
        bool gzip;
    } cases[] = {
        {"gzip", true},
        {"GZIP", true},
        {"deflate, gzip;q=0.5", true},
        {"gzip;q=0", false},
        {"gzip; q=0.000", false},
        {"gzip;q=0.001", true},
        {"*", true},
        {"*;q=0", false},
        {"gzip;q=0, *", false}, /* named beats the wildcard */
        {"identity", false},
        {"deflate, br", false},
        {"x-gzip", true},
        {"", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char hdr[128];
        snprintf(hdr, sizeof hdr, "Accept-Encoding: %s\r\n", cases[i].ae);
        struct test_http_response r = wt_req("GET", "/text", hdr, NULL);
        ck_assert_msg(gzipped(&r) == cases[i].gzip, "Accept-Encoding: %s", cases[i].ae);
        ck_assert(test_http_header_is(&r, "Vary", "Accept-Encoding"));
        if (!cases[i].gzip)
            ck_assert_uint_eq(r.body_len, 2000);
        test_http_response_free(&r);
    }
    struct test_http_response r = wt_req("GET", "/text", NULL, NULL); /* no header: none */
    ck_assert(!gzipped(&r));
    ck_assert(test_http_header_is(&r, "Vary", "Accept-Encoding"));
    test_http_response_free(&r);
    /* two headers count together */
    r = wt_req("GET", "/text", "Accept-Encoding: br\r\nAccept-Encoding: gzip\r\n", NULL);
    ck_assert(gzipped(&r));
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_web_compress_not_for_small_ranges_encoded_or_images)
{
    const char *ae = "Accept-Encoding: gzip\r\n";
    struct test_http_response r = wt_req("GET", "/text?n=1023", ae, NULL);
    ck_assert(!gzipped(&r));
    ck_assert(test_http_header_is(&r, "Vary", "Accept-Encoding")); /* still varies */
    ck_assert_uint_eq(r.body_len, 1023);
    test_http_response_free(&r);
    r = wt_req("GET", "/text?n=1024", ae, NULL);
    ck_assert(gzipped(&r));
    test_http_response_free(&r);
    r = wt_req("GET", "/text?status=206", ae, NULL);
    ck_assert(!gzipped(&r));
    ck_assert_uint_eq(r.body_len, 2000);
    test_http_response_free(&r);
    r = wt_req("GET", "/text?encoding=br", ae, NULL);
    ck_assert(test_http_header_is(&r, "Content-Encoding", "br"));
    ck_assert_uint_eq(r.body_len, 2000);
    test_http_response_free(&r);
    r = wt_req("GET", "/text?type=image/png", ae, NULL);
    ck_assert(!gzipped(&r));
    ck_assert(!test_http_header(&r, "Vary"));
    test_http_response_free(&r);
    const char *types[] = {"text/css",        "application/javascript", "image/svg%2Bxml",
                           "application/xml", "application/ld%2Bjson",  "text/plain;%20charset=x"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char target[128];
        snprintf(target, sizeof target, "/text?type=%s", types[i]);
        r = wt_req("GET", target, ae, NULL);
        ck_assert_msg(gzipped(&r), "%s", types[i]);
        test_http_response_free(&r);
    }
}
END_TEST

START_TEST(test_web_compress_streamed_per_flush)
{
    struct test_http_response r = wt_req("GET", "/stream", "Accept-Encoding: gzip\r\n", NULL);
    ck_assert_int_eq(r.status, 200);
    ck_assert(r.chunked);
    ck_assert_int_ge(r.nchunks, 4); /* one per flush and the finish */
    ck_assert(!test_http_header(&r, "Content-Length"));
    expect_gzip_of(&r, 350);
    test_http_response_free(&r);
}
END_TEST

START_TEST(test_web_compress_head_matches_get)
{
    struct test_http_response g = wt_req("GET", "/text?n=9000", "Accept-Encoding: gzip\r\n", NULL);
    struct test_http_response h = wt_req("HEAD", "/text?n=9000", "Accept-Encoding: gzip\r\n", NULL);
    ck_assert_int_eq(h.status, 200);
    ck_assert(gzipped(&h));
    ck_assert_str_eq(test_http_header(&h, "Content-Length"),
                     test_http_header(&g, "Content-Length"));
    ck_assert_uint_eq(h.body_len, 0);
    test_http_response_free(&g);
    test_http_response_free(&h);
}
END_TEST

/* demo --compress: its streamed /stream route arrives gzipped, its small / does not. */
START_TEST(test_web_compress_demo_flag)
{
    int port = test_free_port();
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", port);
    char *argv[] = {"demo", "--port", portarg, "--compress", "--quiet", NULL};
    pid_t pid = test_start_app("demo", argv, port);
    ck_assert_int_gt(pid, 0);
    const char *req = "GET /stream?chunks=50 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      "Accept-Encoding: gzip\r\n\r\n";
    struct test_http_response r = {0};
    ck_assert_int_eq(test_http_exchange(port, req, strlen(req), false, &r), 0);
    ck_assert(gzipped(&r));
    size_t len;
    char *plain = gunzip(r.body, r.body_len, &len);
    ck_assert_ptr_nonnull(plain);
    ck_assert_mem_eq(plain, "chunk 1\nchunk 2\n", 16);
    ck_assert_mem_eq(plain + len - 9, "chunk 50\n", 9);
    free(plain);
    test_http_response_free(&r);
    req = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAccept-Encoding: gzip\r\n\r\n";
    ck_assert_int_eq(test_http_exchange(port, req, strlen(req), false, &r), 0);
    ck_assert(!gzipped(&r));
    ck_assert_str_eq(r.body, "Hello, world!");
    test_http_response_free(&r);
    ck_assert_int_eq(test_stop_app(pid), 0);
}
END_TEST

static Suite *web_compress_suite(void)
{
    Suite *s = suite_create("web_compress");
    TCase *t = tcase_create("gzip");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_web_compress_round_trip_and_content_length);
    tcase_add_test(t, test_web_compress_accept_encoding_q_values);
    tcase_add_test(t, test_web_compress_not_for_small_ranges_encoded_or_images);
    tcase_add_test(t, test_web_compress_streamed_per_flush);
    tcase_add_test(t, test_web_compress_head_matches_get);
    suite_add_tcase(s, t);
    t = tcase_create("demo");
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_web_compress_demo_flag);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(web_compress_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

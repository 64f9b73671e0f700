/* websocket: the server side of RFC 6455 and 7692 driven with raw frames over real sockets from a
 * client thread while the test's loop serves: the handshake and its refusals, every length
 * encoding, frames cut at every byte, fragmentation with control frames between, each protocol
 * error and its close code, UTF-8 across fragments, both closing handshakes, compression with
 * and without context takeover, the zip bomb, coroutine handlers, and gale's own client. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef GALE_HAVE_ZLIB
#include <zlib.h>
#endif

#include "core/coro.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/web.h"
#include "http/websocket.h"
#include "http/websocket_internal.h"
#include "testutil.h"

static gale_loop *loop;
static gale_app *app;
static int port;

/* What the server side saw; each test runs in its own process (CK_FORK). */
static int n_open, n_close, n_messages, last_close_code, n_written;
static char last_close_reason[128];

/* ---- server classes ---- */

static void echo_message(gale_ws *ws, const char *data, size_t len, bool binary)
{
    n_messages++;
    gale_ws_write(ws, data, len, binary, NULL, NULL);
}
static void count_open(gale_ws *ws) { n_open++; }
static void record_close(gale_ws *ws, int code, const char *reason, size_t len)
{
    n_close++;
    last_close_code = code;
    snprintf(last_close_reason, sizeof last_close_reason, "%.*s", (int)len, reason);
}
static const gale_ws_class echo = {.open = count_open,
                                   .on_message = echo_message,
                                   .on_close = record_close,
                                   .max_message_size = 256 * 1024};

static bool deflate_opts(gale_ws *ws, gale_ws_compression *o)
{
    memset(o, 0, sizeof *o);
    return true;
}
static bool deflate_no_context(gale_ws *ws, gale_ws_compression *o)
{
    memset(o, 0, sizeof *o);
    o->server_no_context_takeover = true;
    return true;
}
static const gale_ws_class echo_deflate = {.on_message = echo_message,
                                           .on_close = record_close,
                                           .get_compression_options = deflate_opts,
                                           .max_message_size = 1024 * 1024};
static const gale_ws_class echo_deflate_nc = {.on_message = echo_message,
                                              .get_compression_options = deflate_no_context};

static void close_on_open(gale_ws *ws) { gale_ws_close(ws, 1001, "going"); }
static const gale_ws_class closer = {
    .open = close_on_open, .on_close = record_close, .close_timeout = 0.3};

static const char *pick_second(gale_ws *ws, const char *const *offered, size_t n)
{
    return n > 1 ? offered[1] : NULL;
}
static bool any_origin(gale_ws *ws, const char *origin) { return strcmp(origin, "http://ok") == 0; }
static const gale_ws_class proto = {
    .on_message = echo_message, .select_subprotocol = pick_second, .check_origin = any_origin};

static void coro_echo(gale_ws *ws)
{
    for (;;) {
        gale_future *f = gale_ws_read_message(ws);
        if (gale_await(f) < 0) {
            gale_future_unref(f);
            return;
        }
        const gale_ws_message *m = gale_future_result(f);
        char buf[256];
        int n = snprintf(buf, sizeof buf, "coro:%.*s", (int)m->len, m->data);
        gale_await_drop(gale_ws_write_message(ws, buf, (size_t)n, false));
        gale_future_unref(f);
    }
}
static const gale_ws_class coro = {.coroutine = coro_echo, .on_close = record_close};

/* A coroutine that starts reading late: the messages that came meanwhile wait, in order. */
static void late_echo(gale_ws *ws)
{
    gale_await_drop(gale_sleep(gale_ws_loop(ws), 0.2));
    coro_echo(ws);
}
static const gale_ws_class late = {.coroutine = late_echo, .on_close = record_close};

/* ---- raw client (runs on the client thread, blocking with timeouts) ---- */

static const char KEY[] = "dGhlIHNhbXBsZSBub25jZQ==";

/* Sends a handshake for `path` with `extra` header lines; reads the response head into `head`.
 * Returns the fd (status in *status) or -1. */
static int ws_open_ex(const char *path, const char *extra, int *status, char *head, size_t hcap)
{
    int fd = test_connect_tcp(port);
    if (fd < 0)
        return -1;
    test_set_timeouts(fd, 5);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\n%s\r\n",
                     path,
                     extra ? extra
                           : "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Version: 13\r\n");
    test_write_all(fd, req, (size_t)n);
    size_t len = 0;
    while (len + 1 < hcap) { /* byte by byte: frames may follow the head */
        if (read(fd, head + len, 1) != 1)
            break;
        len++;
        if (len >= 4 && memcmp(head + len - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    head[len] = '\0';
    *status = len > 12 ? atoi(head + 9) : 0;
    return fd;
}

static int ws_open(const char *path)
{
    int status;
    char head[1024];
    int fd = ws_open_ex(path, NULL, &status, head, sizeof head);
    if (fd >= 0 && status != 101) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A masked frame into `out`; returns its length. */
static size_t frame(uint8_t *out, int b0, const void *payload, size_t len, bool masked)
{
    size_t n = 2;
    out[0] = (uint8_t)b0;
    uint8_t mbit = masked ? 0x80 : 0;
    if (len < 126) {
        out[1] = (uint8_t)(mbit | len);
    } else if (len <= 0xffff) {
        out[1] = mbit | 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        n = 4;
    } else {
        out[1] = mbit | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        n = 10;
    }
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    if (masked) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    for (size_t i = 0; i < len; i++)
        out[n + i] = ((const uint8_t *)payload)[i] ^ (masked ? mask[i & 3] : 0);
    return n + len;
}

static void send_frame(int fd, int b0, const void *payload, size_t len)
{
    uint8_t *buf = malloc(len + 14);
    size_t n = frame(buf, b0, payload, len, true);
    test_write_all(fd, buf, n);
    free(buf);
}

static bool read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

/* One server frame: b0 (fin, rsv, opcode) in *b0, payload malloc'ed. Returns its length or -1. */
static long read_frame(int fd, int *b0, uint8_t **payload)
{
    uint8_t h[10];
    *payload = NULL;
    if (!read_full(fd, h, 2) || (h[1] & 0x80))
        return -1;
    *b0 = h[0];
    uint64_t len = h[1] & 0x7f;
    if (len == 126) {
        if (!read_full(fd, h + 2, 2))
            return -1;
        len = (uint64_t)h[2] << 8 | h[3];
        if (len < 126)
            return -1; /* the server must encode minimally */
    } else if (len == 127) {
        if (!read_full(fd, h + 2, 8))
            return -1;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
        if (len <= 0xffff)
            return -1;
    }
    *payload = malloc(len + 1);
    if (!read_full(fd, *payload, len)) {
        free(*payload);
        *payload = NULL;
        return -1;
    }
    (*payload)[len] = 0;
    return (long)len;
}

/* Reads one frame and checks its first byte and payload. */
static bool expect_frame(int fd, int b0, const void *want, size_t wlen)
{
    int got_b0;
    uint8_t *p;
    long n = read_frame(fd, &got_b0, &p);
    bool ok = n == (long)wlen && got_b0 == b0 && (wlen == 0 || memcmp(p, want, wlen) == 0);
    if (!ok)
        fprintf(stderr, "frame: b0 %#x len %ld (wanted %#x, %zu)\n", got_b0, n, b0, wlen);
    free(p);
    return ok;
}

/* Reads a Close frame with `code` (0: any), then the TCP close. */
static bool expect_close(int fd, int code)
{
    int b0;
    uint8_t *p;
    long n = read_frame(fd, &b0, &p);
    bool ok = n >= 0 && b0 == 0x88 && (code == 0 || (n >= 2 && (p[0] << 8 | p[1]) == code));
    if (!ok)
        fprintf(stderr, "close: b0 %#x len %ld code %d (wanted %d)\n", b0, n,
                n >= 2 ? p[0] << 8 | p[1] : -1, code);
    free(p);
    char c;
    return ok && read(fd, &c, 1) == 0;
}

/* ---- the client thread ---- */

struct job {
    void (*fn)(struct job *j);
    const char *path;
    bool ok;
    int ints[4];
    const void *data;
    size_t len;
};

static void job_main(void *arg)
{
    struct job *j = arg;
    j->fn(j);
}

static void run_job(struct job *j)
{
    ck_assert(test_run_thread(loop, job_main, j, 60));
    /* let the server side's close callbacks run */
    test_run_for(loop, 0.05);
}

/* ---- setup ---- */

static void setup(void)
{
    gale_log_set_level(getenv("WSDEBUG") ? GALE_LOG_DEBUG : GALE_LOG_ERROR);
    n_open = n_close = n_messages = last_close_code = n_written = 0;
    last_close_reason[0] = '\0';
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    gale_loop_make_current(loop);
    app = gale_app_new(NULL);
    ck_assert_ptr_nonnull(app);
    ck_assert_int_eq(gale_app_websocket(app, "/echo", &echo, NULL), 0);
    ck_assert_int_eq(gale_app_websocket(app, "/deflate", &echo_deflate, NULL), 0);
    ck_assert_int_eq(gale_app_websocket(app, "/deflate-nc", &echo_deflate_nc, NULL), 0);
    ck_assert_int_eq(gale_app_websocket(app, "/closer", &closer, NULL), 0);
    ck_assert_int_eq(gale_app_websocket(app, "/proto", &proto, NULL), 0);
    ck_assert_int_eq(gale_app_websocket(app, "/coro", &coro, NULL), 0);
    ck_assert_int_eq(gale_app_listen(app, 0, "127.0.0.1"), 0);
    port = gale_app_port(app);
}

static void teardown(void)
{
    gale_app_free(app);
    test_run_for(loop, 0.02);
    gale_coro_shutdown(loop);
    gale_loop_make_current(NULL);
    gale_loop_free(loop);
}

/* ---- handshake ---- */

static void handshake_job(struct job *j)
{
    int status;
    char head[1024];
    int fd = ws_open_ex(j->path, j->data, &status, head, sizeof head);
    j->ints[0] = status;
    j->ok = fd >= 0;
    static char saved[1024];
    memcpy(saved, head, sizeof saved);
    j->data = saved;
    if (fd >= 0)
        close(fd);
}

static int handshake(const char *path, const char *headers, const char **head)
{
    struct job j = {.fn = handshake_job, .path = path, .data = headers};
    run_job(&j);
    *head = j.data;
    return j.ints[0];
}

/* The RFC's own example: key "dGhlIHNhbXBsZSBub25jZQ==" -> "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=". */
START_TEST(test_ws_handshake_accepts_with_the_rfc_accept_key)
{
    const char *head;
    ck_assert_int_eq(handshake("/echo", NULL, &head), 101);
    ck_assert_ptr_nonnull(strstr(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    ck_assert_ptr_nonnull(strstr(head, "Upgrade: websocket\r\n"));
    ck_assert_ptr_null(strstr(head, "Sec-WebSocket-Extensions"));
    ck_assert_int_eq(n_open, 1);
    ck_assert_int_eq(n_close, 1);
    ck_assert_int_eq(last_close_code, GALE_WS_ABNORMAL);
}
END_TEST

START_TEST(test_ws_handshake_refusals)
{
    const char *head;
    ck_assert_int_eq(handshake("/echo", "Sec-WebSocket-Version: 13\r\n", &head), 400);
    ck_assert_int_eq(
        handshake("/echo", "Sec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n", &head), 400);
    ck_assert_int_eq(handshake("/echo", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", &head),
                     400);
    ck_assert_int_eq(
        handshake("/echo",
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
                  &head),
        426);
    ck_assert_ptr_nonnull(strstr(head, "Sec-WebSocket-Version: 13\r\n"));
    ck_assert_int_eq(handshake("/echo",
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n",
                               &head),
                     403);
    ck_assert_int_eq(handshake("/echo",
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n",
                               &head),
                     101);
    ck_assert_int_eq(n_open, 1);
}
END_TEST

static void raw_request_job(struct job *j)
{
    int fd = test_connect_tcp(port);
    test_set_timeouts(fd, 5);
    test_write_all(fd, j->data, strlen(j->data));
    char head[64] = "";
    ssize_t n = read(fd, head, sizeof head - 1);
    j->ints[0] = n > 12 ? atoi(head + 9) : 0;
    close(fd);
}

static int raw_status(const char *req)
{
    struct job j = {.fn = raw_request_job, .data = req};
    run_job(&j);
    return j.ints[0];
}

/* The upgrade's own headers: without them (or with another protocol) a WebSocket route answers
 * 400, and only GET upgrades. */
START_TEST(test_ws_handshake_needs_upgrade_and_connection)
{
#define KEYV "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    ck_assert_int_eq(raw_status("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    ck_assert_int_eq(raw_status("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n"
                                "Connection: Upgrade\r\n" KEYV "\r\n"),
                     400);
    ck_assert_int_eq(raw_status("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                "Connection: keep-alive\r\n" KEYV "\r\n"),
                     400);
    ck_assert_int_eq(raw_status("HEAD /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\n" KEYV "\r\n"),
                     400);
    ck_assert_int_eq(raw_status("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
                     405);
    /* tokens in lists, any case */
    ck_assert_int_eq(raw_status("GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n"
                                "Connection: keep-alive, UPGRADE\r\n" KEYV "\r\n"),
                     101);
#undef KEYV
}
END_TEST

START_TEST(test_ws_handshake_subprotocol_and_origin_hooks)
{
    const char *head;
    ck_assert_int_eq(handshake("/proto",
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\nOrigin: http://ok\r\n"
                               "Sec-WebSocket-Protocol: chat, superchat\r\n",
                               &head),
                     101);
    ck_assert_ptr_nonnull(strstr(head, "Sec-WebSocket-Protocol: superchat\r\n"));
    ck_assert_int_eq(handshake("/proto",
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n",
                               &head),
                     403);
}
END_TEST

#ifdef GALE_HAVE_ZLIB
/* A bad permessage-deflate offer is declined (101 without the extension), never refused. */
START_TEST(test_ws_handshake_declines_bad_deflate_offer)
{
    const char *head;
    ck_assert_int_eq(handshake("/deflate",
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\n"
                               "Sec-WebSocket-Extensions: permessage-deflate; bogus=1, "
                               "permessage-deflate; server_max_window_bits=8\r\n",
                               &head),
                     101);
    ck_assert_ptr_null(strstr(head, "Sec-WebSocket-Extensions"));
    ck_assert_int_eq(handshake("/deflate",
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\n"
                               "Sec-WebSocket-Extensions: permessage-deflate; bogus=1, "
                               "permessage-deflate; client_max_window_bits\r\n",
                               &head),
                     101);
    ck_assert_ptr_nonnull(strstr(head, "Sec-WebSocket-Extensions: permessage-deflate\r\n"));
    ck_assert_int_eq(handshake("/deflate",
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Sec-WebSocket-Version: 13\r\n"
                               "Sec-WebSocket-Extensions: permessage-deflate; "
                               "server_no_context_takeover; server_max_window_bits=10; "
                               "client_max_window_bits=12\r\n",
                               &head),
                     101);
    ck_assert_ptr_nonnull(strstr(head, "Sec-WebSocket-Extensions: permessage-deflate; "
                                       "server_no_context_takeover; server_max_window_bits=10; "
                                       "client_max_window_bits=12\r\n"));
}
END_TEST
#endif

/* ---- framing ---- */

static void sizes_job(struct job *j)
{
    int fd = ws_open("/echo");
    static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 200000};
    uint8_t *buf = malloc(200000);
    for (size_t i = 0; i < 200000; i++)
        buf[i] = (uint8_t)(i * 7 + 1);
    j->ok = fd >= 0;
    for (size_t i = 0; j->ok && i < sizeof sizes / sizeof *sizes; i++) {
        send_frame(fd, 0x82, buf, sizes[i]);
        j->ok = expect_frame(fd, 0x82, buf, sizes[i]);
    }
    memset(buf, 'a', 300);
    send_frame(fd, 0x81, buf, 300);
    j->ok = j->ok && expect_frame(fd, 0x81, buf, 300);
    free(buf);
    close(fd);
}

START_TEST(test_ws_every_length_encoding_echoes)
{
    struct job j = {.fn = sizes_job};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(n_messages, 9);
}
END_TEST

static void cut_job(struct job *j)
{
    int fd = ws_open("/echo");
    j->ok = fd >= 0;
    uint8_t msg[200], wire[512];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)('a' + i % 26);
    /* a ping, then a 200-byte text message in two fragments */
    size_t n = frame(wire, 0x89, "p", 1, true);
    n += frame(wire + n, 0x01, msg, 130, true);
    n += frame(wire + n, 0x80, msg + 130, 70, true);
    for (size_t cut = 1; j->ok && cut < n; cut++) {
        test_write_all(fd, wire, cut);
        test_wait_peer_read(fd, 5);
        test_write_all(fd, wire + cut, n - cut);
        j->ok = expect_frame(fd, 0x8a, "p", 1) && expect_frame(fd, 0x81, msg, sizeof msg);
        if (!j->ok)
            fprintf(stderr, "cut at %zu\n", cut);
    }
    close(fd);
}

START_TEST(test_ws_frames_cut_at_every_byte)
{
    struct job j = {.fn = cut_job};
    run_job(&j);
    ck_assert(j.ok);
}
END_TEST

static void fragments_job(struct job *j)
{
    int fd = ws_open("/echo");
    j->ok = fd >= 0;
    send_frame(fd, 0x01, "Hel", 3);
    send_frame(fd, 0x89, "ping1", 5);
    send_frame(fd, 0x00, "lo ", 3);
    send_frame(fd, 0x8a, "unsolicited", 11); /* an unsolicited pong is ignored */
    send_frame(fd, 0x00, "", 0);
    send_frame(fd, 0x89, "", 0);
    send_frame(fd, 0x80, "world", 5);
    j->ok = j->ok && expect_frame(fd, 0x8a, "ping1", 5) && expect_frame(fd, 0x8a, "", 0) &&
            expect_frame(fd, 0x81, "Hello world", 11);
    /* control frames at their 125-byte limit: a ping's payload comes back in the pong, a
     * close with a 123-byte reason is answered with its code */
    uint8_t big[125];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 3);
    send_frame(fd, 0x89, big, sizeof big);
    j->ok = j->ok && expect_frame(fd, 0x8a, big, sizeof big);
    char bye[125] = "\x03\xe8";
    memset(bye + 2, 'r', 123);
    send_frame(fd, 0x88, bye, sizeof bye);
    j->ok = j->ok && expect_close(fd, 1000);
    close(fd);
}

START_TEST(test_ws_fragmentation_with_control_frames_between)
{
    struct job j = {.fn = fragments_job};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(n_messages, 1);
    ck_assert_int_eq(last_close_code, 1000);
}
END_TEST

/* Each protocol error: the raw frames, the close code the server must fail with. A valid text
 * frame follows each one in the same write: it must never be echoed. */
static const struct {
    const char *name;
    const char *wire; /* frames as written (already masked where needed) */
    size_t len;
    int code;
} errors[] = {
    {"unmasked frame", "\x81\x02hi", 4, 1002},
    {"rsv1 without extension", "\xc1\x80\0\0\0\0", 6, 1002},
    {"rsv2", "\xa1\x80\0\0\0\0", 6, 1002},
    {"rsv3", "\x91\x80\0\0\0\0", 6, 1002},
    {"reserved data opcode 3", "\x83\x80\0\0\0\0", 6, 1002},
    {"reserved control opcode 0xB", "\x8b\x80\0\0\0\0", 6, 1002},
    {"fragmented ping", "\x09\x80\0\0\0\0", 6, 1002},
    {"continuation first", "\x80\x80\0\0\0\0", 6, 1002},
    {"text inside a fragmented text", "\x01\x80\0\0\0\0\x81\x80\0\0\0\0", 12, 1002},
    {"non-minimal 16-bit length", "\x82\xfe\x00\x05\0\0\0\0hello", 13, 1002},
    {"non-minimal 64-bit length", "\x82\xff\0\0\0\0\0\0\0\x05\0\0\0\0hello", 19, 1002},
    {"64-bit length with the top bit", "\x82\xff\x80\0\0\0\0\0\0\x05\0\0\0\0", 14, 1002},
    {"invalid UTF-8", "\x81\x82\0\0\0\0\xc0\xaf", 8, 1007},
    {"UTF-8 surrogate", "\x81\x83\0\0\0\0\xed\xa0\x80", 9, 1007},
    {"truncated UTF-8 at the end", "\x81\x82\0\0\0\0\xe2\x82", 8, 1007},
    {"close with one byte", "\x88\x81\0\0\0\0\x03", 7, 1002},
    {"close code 999", "\x88\x82\0\0\0\0\x03\xe7", 8, 1002},
    {"close code 1005", "\x88\x82\0\0\0\0\x03\xed", 8, 1002},
    {"close code 1016", "\x88\x82\0\0\0\0\x03\xf8", 8, 1002},
    {"close code 2000", "\x88\x82\0\0\0\0\x07\xd0", 8, 1002},
    {"close reason invalid UTF-8", "\x88\x84\0\0\0\0\x03\xe8\xff\xfe", 10, 1007},
    {"ping over 125 bytes", "\x89\xfe\x00\x7e\0\0\0\0", 8, 1002},
    {"frame over max_message_size", "\x82\xff\0\0\0\0\0\x10\0\0\0\0\0\0", 14, 1009},
};

static void error_job(struct job *j)
{
    size_t i = (size_t)j->ints[1];
    int fd = ws_open("/echo");
    j->ok = fd >= 0;
    uint8_t wire[128];
    memcpy(wire, errors[i].wire, errors[i].len);
    size_t n = errors[i].len + frame(wire + errors[i].len, 0x81, "after", 5, true);
    test_write_all(fd, wire, n);
    j->ok = j->ok && expect_close(fd, errors[i].code);
    close(fd);
}

START_TEST(test_ws_protocol_errors_fail_with_their_code)
{
    struct job j = {.fn = error_job, .ints = {0, _i}};
    run_job(&j);
    ck_assert_msg(j.ok, "%s", errors[_i].name);
    ck_assert_int_eq(n_messages, 0);
    ck_assert_int_eq(n_close, 1);
}
END_TEST

/* A frame over max_message_size whose payload keeps coming: the server fails the connection with
 * 1009 and drops the rest of the payload until the client closes, so the client can send it all
 * and then read the Close. Closing with that input unread would reset the connection: the
 * client's writes would fail and the Close could be lost. */
static void too_big_job(struct job *j)
{
    int fd = ws_open("/echo");
    j->ok = fd >= 0;
    size_t total = 16u << 20;
    uint8_t head[14] = {0x82, 0xff};
    for (int k = 0; k < 8; k++)
        head[2 + k] = (uint8_t)(total >> (56 - 8 * k)); /* mask key: zeros */
    j->ok = j->ok && test_write_all(fd, head, sizeof head) == 0;
    static uint8_t zeros[65536];
    for (size_t sent = 0; j->ok && sent < total; sent += sizeof zeros)
        j->ok = test_write_all(fd, zeros, sizeof zeros) == 0;
    j->ints[2] = j->ok;
    shutdown(fd, SHUT_WR);
    j->ok = j->ok && expect_close(fd, 1009);
    char c;
    j->ok = j->ok && read(fd, &c, 1) == 0;
    close(fd);
}

START_TEST(test_ws_too_big_frame_still_arriving_gets_its_close)
{
    struct job j = {.fn = too_big_job};
    run_job(&j);
    ck_assert_msg(j.ints[2], "the client could not send its whole frame");
    ck_assert(j.ok);
    ck_assert_int_eq(n_messages, 0);
    ck_assert_int_eq(n_close, 1);
}
END_TEST

/* A 2-byte, a 3-byte and a 4-byte sequence, cut into two fragments at every byte. */
static void utf8_job(struct job *j)
{
    static const char text[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";
    size_t n = sizeof text - 1;
    int fd = ws_open("/echo");
    j->ok = fd >= 0;
    for (size_t cut = 0; j->ok && cut <= n; cut++) {
        send_frame(fd, 0x01, text, cut);
        send_frame(fd, 0x80, text + cut, n - cut);
        j->ok = expect_frame(fd, 0x81, text, n);
    }
    /* an invalid byte in a first fragment fails at once, before the message ends */
    send_frame(fd, 0x01, "ok\xf5", 3);
    j->ok = j->ok && expect_close(fd, 1007);
    close(fd);
}

START_TEST(test_ws_utf8_split_across_fragments)
{
    struct job j = {.fn = utf8_job};
    run_job(&j);
    ck_assert(j.ok);
}
END_TEST

/* ---- closing ---- */

static void client_close_job(struct job *j)
{
    int fd = ws_open("/echo");
    send_frame(fd, 0x88, "\x0f\xa0goodbye", 9); /* 4000 */
    j->ok = fd >= 0 && expect_close(fd, 4000);
    close(fd);
}

START_TEST(test_ws_close_from_the_client)
{
    struct job j = {.fn = client_close_job};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(last_close_code, 4000);
    ck_assert_str_eq(last_close_reason, "goodbye");
}
END_TEST

static void server_close_job(struct job *j)
{
    int fd = ws_open("/closer");
    int b0;
    uint8_t *p;
    long n = read_frame(fd, &b0, &p);
    j->ok = n == 7 && b0 == 0x88 && (p[0] << 8 | p[1]) == 1001 && memcmp(p + 2, "going", 5) == 0;
    free(p);
    if (j->ints[1]) { /* answer: the server closes the TCP connection */
        send_frame(fd, 0x88, "\x03\xe9", 2);
    }
    char c;
    j->ok = j->ok && read(fd, &c, 1) == 0; /* without an answer: the close deadline */
    close(fd);
}

START_TEST(test_ws_close_from_the_server_both_ways)
{
    struct job j = {.fn = server_close_job, .ints = {0, 1}};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(last_close_code, 1001);
    j = (struct job){.fn = server_close_job, .ints = {0, 0}};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(last_close_code, GALE_WS_ABNORMAL);
    ck_assert_int_eq(n_close, 2);
}
END_TEST

#ifdef GALE_HAVE_ZLIB
/* ---- compression ---- */

static size_t zcompress(z_stream *z, const void *in, size_t n, uint8_t *out, size_t cap)
{
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)n;
    z->next_out = out;
    z->avail_out = (uInt)cap;
    deflate(z, Z_SYNC_FLUSH);
    size_t len = cap - z->avail_out;
    return len - 4; /* the 00 00 ff ff trailer */
}

static size_t zinflate(z_stream *z, const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    uint8_t buf[1 << 16];
    memcpy(buf, in, n);
    memcpy(buf + n, "\0\0\xff\xff", 4);
    z->next_in = buf;
    z->avail_in = (uInt)n + 4;
    z->next_out = out;
    z->avail_out = (uInt)cap;
    inflate(z, Z_SYNC_FLUSH);
    return cap - z->avail_out;
}

/* Sends the same message twice, compressed, and reads both echoes: returns the echoes' payload
 * sizes in ints[2], ints[3]. */
static void deflate_job(struct job *j)
{
    int status;
    char head[1024];
    char hdrs[512];
    snprintf(hdrs, sizeof hdrs,
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Extensions: permessage-deflate\r\n",
             KEY);
    int fd = ws_open_ex(j->path, hdrs, &status, head, sizeof head);
    j->ok = fd >= 0 && status == 101 && strstr(head, "permessage-deflate");
    z_stream zo = {0}, zi = {0};
    deflateInit2(&zo, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    inflateInit2(&zi, -15);
    static const char msg[] = "Hello, compressed WebSocket world! Hello, compressed world!";
    for (int round = 0; j->ok && round < 2; round++) {
        uint8_t z[512], out[512];
        size_t zn = zcompress(&zo, msg, sizeof msg - 1, z, sizeof z);
        send_frame(fd, 0xc1, z, zn);
        int b0;
        uint8_t *p;
        long n = read_frame(fd, &b0, &p);
        j->ok = n > 0 && b0 == 0xc1;
        if (j->ok) {
            j->ints[2 + round] = (int)n;
            size_t on = zinflate(&zi, p, (size_t)n, out, sizeof out);
            j->ok = on == sizeof msg - 1 && memcmp(out, msg, on) == 0;
        }
        free(p);
    }
    /* an uncompressed message on the same connection: echoed compressed */
    send_frame(fd, 0x81, "plain", 5);
    int b0;
    uint8_t *p, out[64];
    long n = read_frame(fd, &b0, &p);
    j->ok = j->ok && n > 0 && b0 == 0xc1 && zinflate(&zi, p, (size_t)n, out, sizeof out) == 5 &&
            memcmp(out, "plain", 5) == 0;
    free(p);
    deflateEnd(&zo);
    inflateEnd(&zi);
    close(fd);
}

START_TEST(test_ws_deflate_with_context_takeover)
{
    struct job j = {.fn = deflate_job, .path = "/deflate"};
    run_job(&j);
    ck_assert(j.ok);
    /* the second echo refers back to the first: much shorter */
    ck_assert_int_lt(j.ints[3], j.ints[2] / 2);
    ck_assert_int_eq(n_messages, 3);
}
END_TEST

START_TEST(test_ws_deflate_without_context_takeover)
{
    struct job j = {.fn = deflate_job, .path = "/deflate-nc"};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(j.ints[3], j.ints[2]);
}
END_TEST

/* 20 MiB of zeros compress to ~20 KiB: refused with 1009 after at most max_message_size. */
static void bomb_job(struct job *j)
{
    int status;
    char head[1024], hdrs[512];
    snprintf(hdrs, sizeof hdrs,
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Extensions: permessage-deflate\r\n",
             KEY);
    int fd = ws_open_ex("/deflate", hdrs, &status, head, sizeof head);
    z_stream zo = {0};
    deflateInit2(&zo, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    size_t n = 20u << 20;
    uint8_t *zeros = calloc(1, n), *z = malloc(1 << 20);
    size_t zn = zcompress(&zo, zeros, n, z, 1 << 20);
    send_frame(fd, 0xc2, z, zn);
    j->ok = fd >= 0 && status == 101 && expect_close(fd, 1009);
    j->ints[2] = (int)zn;
    deflateEnd(&zo);
    free(zeros);
    free(z);
    close(fd);
}

START_TEST(test_ws_deflate_zip_bomb_refused)
{
    struct job j = {.fn = bomb_job};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_lt(j.ints[2], 100000);
    ck_assert_int_eq(n_messages, 0);
}
END_TEST
#endif /* GALE_HAVE_ZLIB */

/* ---- coroutine handler ---- */

static void coro_job(struct job *j)
{
    int fd = ws_open("/coro");
    j->ok = fd >= 0;
    for (int i = 0; j->ok && i < 3; i++) {
        char m[16], want[32];
        int n = snprintf(m, sizeof m, "m%d", i);
        snprintf(want, sizeof want, "coro:%s", m);
        send_frame(fd, 0x81, m, (size_t)n);
        j->ok = expect_frame(fd, 0x81, want, strlen(want));
    }
    send_frame(fd, 0x88, "\x03\xe8", 2);
    j->ok = j->ok && expect_close(fd, 1000);
    close(fd);
}

static void late_job(struct job *j)
{
    int fd = ws_open("/late");
    j->ok = fd >= 0;
    send_frame(fd, 0x81, "a", 1);
    send_frame(fd, 0x81, "b", 1);
    send_frame(fd, 0x89, "p", 1); /* a ping behind them waits too: the pong comes after */
    send_frame(fd, 0x81, "c", 1);
    j->ok = j->ok && expect_frame(fd, 0x81, "coro:a", 6) && expect_frame(fd, 0x81, "coro:b", 6) &&
            expect_frame(fd, 0x8a, "p", 1) && expect_frame(fd, 0x81, "coro:c", 6);
    send_frame(fd, 0x88, "\x03\xe8", 2);
    j->ok = j->ok && expect_close(fd, 1000);
    close(fd);
}

START_TEST(test_ws_messages_wait_for_a_late_reader_in_order)
{
    ck_assert_int_eq(gale_app_websocket(app, "/late", &late, NULL), 0);
    struct job j = {.fn = late_job};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(last_close_code, 1000);
}
END_TEST

START_TEST(test_ws_coroutine_handler_reads_in_a_loop)
{
    struct job j = {.fn = coro_job};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(gale_coro_count(), 0);
    ck_assert_int_eq(last_close_code, 1000);
}
END_TEST

/* ---- the hand-over from the HTTP server ---- */

/* A response to a pipelined request before the upgrade goes first; frames sent in the same
 * packet as the handshake are not lost. */
static void handover_job(struct job *j)
{
    int fd = test_connect_tcp(port);
    test_set_timeouts(fd, 5);
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     KEY);
    n += (int)frame((uint8_t *)buf + n, 0x81, "early", 5, true);
    test_write_all(fd, buf, (size_t)n);
    /* the 404 (with its body), then the 101, then the echo */
    char got[2048];
    size_t len = 0;
    const char *echo = NULL;
    while (len < sizeof got && !echo) {
        ssize_t r = read(fd, got + len, sizeof got - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        const char *h = memmem(got, len, "\r\n\r\n\x81\x05", 6);
        if (h && (size_t)(h + 11 - got) <= len)
            echo = h + 6;
    }
    const char *nf = memmem(got, len, "HTTP/1.1 404", 12);
    const char *sw = memmem(got, len, "HTTP/1.1 101", 12);
    j->ok = nf && sw && nf < sw && echo && memcmp(echo, "early", 5) == 0;
    close(fd);
}

START_TEST(test_ws_handover_keeps_pipelined_order_and_early_frames)
{
    struct job j = {.fn = handover_job};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(n_messages, 1);
}
END_TEST

/* ---- keepalive ---- */

static int n_pongs;
static void count_pong(gale_ws *ws, const char *data, size_t len) { n_pongs++; }
static const gale_ws_class pinger = {
    .on_pong = count_pong, .on_close = record_close, .ping_interval = 0.05, .ping_timeout = 0.2};

/* A peer that answers pings stays; one that does not is closed after ping_timeout. */
static void keepalive_job(struct job *j)
{
    int fd = ws_open("/pinger");
    j->ok = fd >= 0;
    for (int i = 0; j->ok && i < 6; i++) {
        int b0;
        uint8_t *p;
        long n = read_frame(fd, &b0, &p);
        j->ok = n == 0 && b0 == 0x89;
        free(p);
        send_frame(fd, 0x8a, "", 0);
    }
    j->ints[2] = n_close; /* still open after six pings answered */
    char c;
    int b0;
    uint8_t *p;
    /* stop answering: the next ping goes unanswered, then the connection ends */
    while (read_frame(fd, &b0, &p) >= 0)
        free(p);
    j->ok = j->ok && read(fd, &c, 1) <= 0;
    close(fd);
}

START_TEST(test_ws_keepalive_pings_close_a_dead_peer)
{
    ck_assert_int_eq(gale_app_websocket(app, "/pinger", &pinger, NULL), 0);
    struct job j = {.fn = keepalive_job};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_eq(j.ints[2], 0);
    ck_assert_int_eq(n_pongs, 6);
    ck_assert_int_eq(n_close, 1);
    ck_assert_int_eq(last_close_code, GALE_WS_ABNORMAL);
}
END_TEST

/* ---- back-pressure ---- */

/* open() sends 64 MiB in 1 MiB messages, each after the previous one left. */
static void flood_next(gale_ws *ws, int status, void *arg);
static void flood_open(gale_ws *ws) { flood_next(ws, 0, NULL); }
static void flood_next(gale_ws *ws, int status, void *arg)
{
    static char buf[1 << 20];
    if (status < 0 || n_written >= 64)
        return;
    n_written++;
    gale_ws_write(ws, buf, sizeof buf, true, flood_next, NULL);
}
static const gale_ws_class flood = {.open = flood_open};

/* A reader that stops: the write callbacks stop too (the bytes are not in the kernel), so a
 * sender waiting for them holds at most one message in memory. */
static void slow_reader_job(struct job *j)
{
    int fd = ws_open("/flood");
    usleep(300 * 1000);
    j->ints[2] = n_written;
    close(fd);
}

START_TEST(test_ws_write_callback_is_back_pressure)
{
    ck_assert_int_eq(gale_app_websocket(app, "/flood", &flood, NULL), 0);
    struct job j = {.fn = slow_reader_job};
    run_job(&j);
    ck_assert_int_gt(j.ints[2], 0);
    ck_assert_int_lt(j.ints[2], 64);
}
END_TEST

/* A client that sends and never reads: the server stops reading once its echoes pile up, so
 * the client's sends block long before 64 MiB went out (the server's memory stays bounded). */
static void never_reads_job(struct job *j)
{
    int fd = ws_open("/echo");
    test_set_timeouts(fd, 1);
    static uint8_t wire[65536 + 14], payload[65536];
    size_t n = frame(wire, 0x82, payload, sizeof payload, true);
    size_t sent = 0;
    for (int i = 0; i < 1024; i++) {
        if (test_write_all(fd, wire, n) != 0)
            break;
        sent += n;
    }
    j->ints[2] = (int)(sent >> 20);
    j->ok = fd >= 0;
    close(fd);
}

START_TEST(test_ws_echo_to_a_client_that_never_reads_stops_reading)
{
    struct job j = {.fn = never_reads_job};
    run_job(&j);
    ck_assert(j.ok);
    ck_assert_int_lt(j.ints[2], 32);
}
END_TEST

/* ---- 10,000 idle connections ---- */

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* The demo app holds 10,000 open WebSocket connections on one loop; each still echoes. */
START_TEST(test_ws_ten_thousand_idle_connections)
{
    enum { N = 10000 };
    int dport = test_free_port();
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", dport);
    char *argv[] = {"demo", "--port", portarg, "--quiet", NULL};
    pid_t pid = test_start_app("demo", argv, dport);
    ck_assert_int_gt(pid, 0);
    port = dport;
    int *fds = malloc(N * sizeof *fds);
    int first = ws_open("/ws");
    ck_assert_int_ge(first, 0);
    long before = rss_kib(pid);
    char req[512];
    int rl = snprintf(req, sizeof req,
                      "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n",
                      KEY);
    int opened = 0, upgraded = 0;
    for (int i = 0; i < N; i++) {
        fds[i] = test_connect_tcp(dport);
        if (fds[i] < 0)
            break;
        opened++;
        test_set_timeouts(fds[i], 10);
        test_write_all(fds[i], req, (size_t)rl);
        char head[512];
        size_t len = 0;
        while (len < sizeof head - 1) {
            ssize_t r = read(fds[i], head + len, sizeof head - 1 - len);
            if (r <= 0)
                break;
            len += (size_t)r;
            head[len] = '\0';
            if (strstr(head, "\r\n\r\n"))
                break;
        }
        upgraded += len > 12 && strncmp(head, "HTTP/1.1 101", 12) == 0;
    }
    long after = rss_kib(pid);
    /* every connection still works: the first, the last, and one in the middle echo */
    int idx[] = {0, N / 2, opened - 1};
    bool echoes = true;
    for (int k = 0; k < 3; k++) {
        send_frame(fds[idx[k]], 0x81, "still here", 10);
        echoes = echoes && expect_frame(fds[idx[k]], 0x81, "still here", 10);
    }
    send_frame(first, 0x81, "first", 5);
    echoes = echoes && expect_frame(first, 0x81, "first", 5);
    for (int i = 0; i < opened; i++)
        close(fds[i]);
    close(first);
    free(fds);
    ck_assert_int_eq(test_stop_app(pid), 0);
    ck_assert_int_eq(opened, N);
    ck_assert_int_eq(upgraded, N);
    ck_assert(echoes);
    fprintf(stderr, "websocket: %d idle connections: %.2f KiB of server RSS each\n", N,
            (double)(after - before) / N);
}
END_TEST

/* ---- the apps: demo's /ws and /chat, wscat ---- */

static pid_t start_demo(void)
{
    int dport = test_free_port();
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", dport);
    char *argv[] = {"demo", "--port", portarg, "--quiet", NULL};
    pid_t pid = test_start_app("demo", argv, dport);
    port = dport;
    return pid;
}

/* printf 'hello\nκόσμε\n' | wscat ws://.../ws prints both lines back and exits 0. */
START_TEST(test_ws_wscat_against_demo_echo)
{
    pid_t demo = start_demo();
    ck_assert_int_gt(demo, 0);
    int in[2], out[2];
    ck_assert_int_eq(pipe(in), 0);
    ck_assert_int_eq(pipe(out), 0);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/ws", port);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl(test_app_path("wscat"), "wscat", url, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    static const char lines[] = "hello\n\xce\xba\xcf\x8c\xcf\x83\xce\xbc\xce\xb5\n";
    ck_assert_int_eq(write(in[1], lines, sizeof lines - 1), (ssize_t)sizeof lines - 1);
    close(in[1]);
    char got[4096];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof got && (r = read(out[0], got + len, sizeof got - len)) > 0)
        len += (size_t)r; /* until wscat exits (the demo's shutdown would end it too) */
    close(out[0]);
    int status;
    waitpid(pid, &status, 0);
    test_stop_app(demo);
    ck_assert_uint_eq(len, sizeof lines - 1);
    ck_assert_mem_eq(got, lines, len);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

static void chat_job(struct job *j)
{
    int a = ws_open("/chat"), b = ws_open("/chat");
    j->ok = a >= 0 && b >= 0;
    send_frame(a, 0x81, "from a", 6);
    j->ok = j->ok && expect_frame(a, 0x81, "from a", 6) && expect_frame(b, 0x81, "from a", 6);
    send_frame(b, 0x82, "\x01\x02", 2);
    j->ok = j->ok && expect_frame(a, 0x82, "\x01\x02", 2) && expect_frame(b, 0x82, "\x01\x02", 2);
    close(a); /* a leaves: b still gets its own messages */
    send_frame(b, 0x81, "alone", 5);
    j->ok = j->ok && expect_frame(b, 0x81, "alone", 5);
    close(b);
}

START_TEST(test_ws_demo_chat_broadcasts_to_every_member)
{
    pid_t demo = start_demo();
    ck_assert_int_gt(demo, 0);
    struct job j = {.fn = chat_job};
    run_job(&j);
    ck_assert_int_eq(test_stop_app(demo), 0);
    ck_assert(j.ok);
}
END_TEST

/* ---- gale's client against gale's server ---- */

struct client_run {
    const char *path;
    bool compression;
    int rc;
    bool compressed;
    char got[3][64];
};

static int client_coro(void *arg)
{
    struct client_run *r = arg;
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d%s", port, r->path);
    gale_ws_connect_opts o = {.compression = r->compression, .connect_timeout = 5};
    gale_future *cf = gale_ws_connect_future(loop, url, &o);
    if ((r->rc = gale_await(cf)) < 0) {
        gale_future_unref(cf);
        return r->rc;
    }
    gale_ws *ws = gale_future_steal_result(cf);
    gale_future_unref(cf);
    r->compressed = gale_ws_compressed(ws);
    static const char *const msgs[] = {"one", "", "three three three three three"};
    for (int i = 0; i < 3; i++) {
        gale_await_drop(gale_ws_write_message(ws, msgs[i], strlen(msgs[i]), i == 1));
        gale_future *f = gale_ws_read_message(ws);
        if ((r->rc = gale_await(f)) == 0) {
            const gale_ws_message *m = gale_future_result(f);
            snprintf(r->got[i], sizeof r->got[i], "%s%s", m->binary ? "b:" : "t:", m->data);
        }
        gale_future_unref(f);
    }
    gale_ws_close(ws, 1000, "done");
    gale_future *f = gale_ws_read_message(ws);
    r->rc = gale_await(f); /* GALE_EEOF once the server closed */
    gale_future_unref(f);
    gale_ws_unref(ws);
    return 0;
}

static void run_client(struct client_run *r)
{
    gale_future *f = gale_coro_spawn(loop, client_coro, r, NULL);
    ck_assert_int_eq(gale_loop_run_until(loop, f, 10), 0);
    gale_future_unref(f);
    test_run_for(loop, 0.05);
}

START_TEST(test_ws_client_against_own_server)
{
    struct client_run r = {.path = "/echo"};
    run_client(&r);
    ck_assert_int_eq(r.rc, GALE_EEOF);
    ck_assert(!r.compressed);
    ck_assert_str_eq(r.got[0], "t:one");
    ck_assert_str_eq(r.got[1], "b:");
    ck_assert_str_eq(r.got[2], "t:three three three three three");
    ck_assert_int_eq(last_close_code, 1000);
    ck_assert_str_eq(last_close_reason, "done");
}
END_TEST

#ifdef GALE_HAVE_ZLIB
START_TEST(test_ws_client_with_compression)
{
    struct client_run r = {.path = "/deflate", .compression = true};
    run_client(&r);
    ck_assert_int_eq(r.rc, GALE_EEOF);
    ck_assert(r.compressed);
    ck_assert_str_eq(r.got[0], "t:one");
    ck_assert_str_eq(r.got[1], "b:");
    ck_assert_str_eq(r.got[2], "t:three three three three three");
}
END_TEST
#endif

static gale_ws *connected;
static void record_connect(gale_ws *ws, int status, void *arg)
{
    *(int *)arg = status;
    connected = ws; /* the caller's reference */
}

/* One frame from the client: it must be masked; the payload unmasked into *payload. */
static long read_client_frame(int fd, int *b0, uint8_t **payload)
{
    uint8_t h[14];
    *payload = NULL;
    if (!read_full(fd, h, 2) || !(h[1] & 0x80))
        return -1;
    *b0 = h[0];
    size_t len = h[1] & 0x7f;
    if (len >= 126)
        return -1; /* only short frames here */
    uint8_t mask[4];
    if (!read_full(fd, mask, 4))
        return -1;
    *payload = malloc(len + 1);
    if (!read_full(fd, *payload, len))
        return -1;
    for (size_t i = 0; i < len; i++)
        (*payload)[i] ^= mask[i & 3];
    return (long)len;
}

static bool expect_client_frame(int fd, int b0, const void *want, size_t n)
{
    int got;
    uint8_t *p;
    long len = read_client_frame(fd, &got, &p);
    bool ok = len == (long)n && got == b0 && (n == 0 || memcmp(p, want, n) == 0);
    free(p);
    return ok;
}

/* A raw server: answers the handshake, pings, sends a fragmented message (echoed by the
 * client's class), then a masked frame, which the client must fail with 1002. */
static void raw_server_job(struct job *j)
{
    int lfd = j->ints[0];
    int fd = accept(lfd, NULL, NULL);
    test_set_timeouts(fd, 5);
    char req[2048];
    size_t len = 0;
    while (len < sizeof req - 1 && read(fd, req + len, 1) == 1)
        if (++len >= 4 && memcmp(req + len - 4, "\r\n\r\n", 4) == 0)
            break;
    req[len] = '\0';
    const char *k = strstr(req, "Sec-WebSocket-Key: ");
    char accept_key[29], resp[256];
    gale__ws_accept_key(k ? k + 19 : "", 24, accept_key);
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept_key);
    uint8_t wire[256];
    size_t w = frame(wire, 0x89, "x", 1, false);
    w += frame(wire + w, 0x01, "hel", 3, false);
    w += frame(wire + w, 0x80, "lo", 2, false);
    memcpy(resp + n, wire, w); /* frames in the same packet as the 101 */
    test_write_all(fd, resp, (size_t)n + w);
    j->ok = k && expect_client_frame(fd, 0x8a, "x", 1) && expect_client_frame(fd, 0x81, "hello", 5);
    send_frame(fd, 0x81, "masked", 6); /* masked: a protocol error from a server */
    int b0;
    uint8_t *p;
    long cl = read_client_frame(fd, &b0, &p);
    j->ok = j->ok && cl >= 2 && b0 == 0x88 && (p[0] << 8 | p[1]) == 1002;
    free(p);
    close(fd);
}

/* A server answering 101 with a wrong accept key: the client refuses it (GALE_EHTTP). */
static void bad_accept_job(struct job *j)
{
    int fd = accept(j->ints[0], NULL, NULL);
    test_set_timeouts(fd, 5);
    char req[2048];
    size_t len = 0;
    while (len < sizeof req - 1 && read(fd, req + len, 1) == 1)
        if (++len >= 4 && memcmp(req + len - 4, "\r\n\r\n", 4) == 0)
            break;
    static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    test_write_all(fd, resp, sizeof resp - 1);
    char c;
    j->ok = read(fd, &c, 1) == 0; /* the client closes */
    close(fd);
}

START_TEST(test_ws_client_refuses_a_wrong_accept_key)
{
    int rport, lfd = test_listen_tcp(&rport);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/", rport);
    int status = 1;
    ck_assert_int_eq(gale_ws_connect(loop, url, NULL, record_connect, &status), 0);
    struct job j = {.fn = bad_accept_job, .ints = {lfd}};
    run_job(&j);
    close(lfd);
    ck_assert(j.ok);
    ck_assert_int_eq(status, GALE_EHTTP);
}
END_TEST

START_TEST(test_ws_client_masks_answers_pings_and_fails_on_masked_frames)
{
    int rport, lfd = test_listen_tcp(&rport);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/raw", rport);
    gale_ws_connect_opts o = {.cls = &echo};
    int status = 1;
    ck_assert_int_eq(gale_ws_connect(loop, url, &o, record_connect, &status), 0);
    struct job j = {.fn = raw_server_job, .ints = {lfd}};
    run_job(&j);
    close(lfd);
    ck_assert_int_eq(status, 0);
    ck_assert(j.ok);
    ck_assert_int_eq(n_messages, 1);
    ck_assert_int_eq(n_close, 1);
    ck_assert_int_eq(gale_ws_close_code(connected), GALE_WS_ABNORMAL);
    gale_ws_unref(connected);
}
END_TEST

START_TEST(test_ws_client_errors)
{
    int status = 1;
    ck_assert_int_eq(gale_ws_connect(loop, "ftp://127.0.0.1/", NULL, record_connect, &status),
                     GALE_ESCHEME);
    ck_assert_int_eq(gale_ws_connect(loop, "http://127.0.0.1/", NULL, record_connect, &status),
                     GALE_ESCHEME);
    char url[128];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/nowhere", port);
    ck_assert_int_eq(gale_ws_connect(loop, url, NULL, record_connect, &status), 0);
    for (int i = 0; i < 2000 && status == 1; i++)
        test_run_for(loop, 0.005);
    ck_assert_int_eq(status, GALE_EBADSTATUS);
    /* a server that accepts and never answers the handshake: the connect timeout */
    int rport, lfd = test_listen_tcp(&rport);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/", rport);
    gale_ws_connect_opts o = {.connect_timeout = 0.2};
    status = 1;
    ck_assert_int_eq(gale_ws_connect(loop, url, &o, record_connect, &status), 0);
    for (int i = 0; i < 2000 && status == 1; i++)
        test_run_for(loop, 0.005);
    close(lfd);
    ck_assert_int_eq(status, -ETIMEDOUT);
}
END_TEST

static Suite *websocket_suite(void)
{
    Suite *s = suite_create("websocket");
    TCase *t = tcase_create("server");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_ws_handshake_accepts_with_the_rfc_accept_key);
    tcase_add_test(t, test_ws_handshake_refusals);
    tcase_add_test(t, test_ws_handshake_subprotocol_and_origin_hooks);
    tcase_add_test(t, test_ws_handshake_needs_upgrade_and_connection);
#ifdef GALE_HAVE_ZLIB
    tcase_add_test(t, test_ws_handshake_declines_bad_deflate_offer);
#endif
    tcase_add_test(t, test_ws_every_length_encoding_echoes);
    tcase_add_test(t, test_ws_frames_cut_at_every_byte);
    tcase_add_test(t, test_ws_fragmentation_with_control_frames_between);
    tcase_add_loop_test(t, test_ws_protocol_errors_fail_with_their_code, 0,
                        (int)(sizeof errors / sizeof *errors));
    tcase_add_test(t, test_ws_too_big_frame_still_arriving_gets_its_close);
    tcase_add_test(t, test_ws_utf8_split_across_fragments);
    tcase_add_test(t, test_ws_close_from_the_client);
    tcase_add_test(t, test_ws_close_from_the_server_both_ways);
#ifdef GALE_HAVE_ZLIB
    tcase_add_test(t, test_ws_deflate_with_context_takeover);
    tcase_add_test(t, test_ws_deflate_without_context_takeover);
    tcase_add_test(t, test_ws_deflate_zip_bomb_refused);
#endif
    tcase_add_test(t, test_ws_coroutine_handler_reads_in_a_loop);
    tcase_add_test(t, test_ws_messages_wait_for_a_late_reader_in_order);
    tcase_add_test(t, test_ws_handover_keeps_pipelined_order_and_early_frames);
    tcase_add_test(t, test_ws_keepalive_pings_close_a_dead_peer);
    tcase_add_test(t, test_ws_write_callback_is_back_pressure);
    tcase_add_test(t, test_ws_echo_to_a_client_that_never_reads_stops_reading);
    suite_add_tcase(s, t);
    t = tcase_create("idle");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, test_ws_ten_thousand_idle_connections);
    suite_add_tcase(s, t);
    t = tcase_create("apps");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, test_ws_wscat_against_demo_echo);
    tcase_add_test(t, test_ws_demo_chat_broadcasts_to_every_member);
    suite_add_tcase(s, t);
    t = tcase_create("client");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 30);
    tcase_add_test(t, test_ws_client_against_own_server);
#ifdef GALE_HAVE_ZLIB
    tcase_add_test(t, test_ws_client_with_compression);
#endif
    tcase_add_test(t, test_ws_client_errors);
    tcase_add_test(t, test_ws_client_masks_answers_pings_and_fails_on_masked_frames);
    tcase_add_test(t, test_ws_client_refuses_a_wrong_accept_key);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(websocket_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

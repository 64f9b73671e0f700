/* Fuzzes the HTTP client's response parsing: gale_http_fetch() of http://127.0.0.1:<port>/ against
 * a peer that answers with the input's bytes at input-chosen splits, then closes. Checks: the
 * fetch completes exactly once, with either a response or an error (never both, never neither);
 * a success only when the bytes began with a status line carrying that code; the body is
 * NUL-terminated at its length (empty when streamed, the streamed pieces then add up to nothing
 * more than was sent); and no descriptor or timer outlives the input.
 *
 * Input: byte 0 = flags (bit 0: streaming callback, bit 1: header callback, bit 2: HEAD request,
 * bit 3: shut down the peer's write side instead of closing, bits 4-7: k piece sizes mod 8
 * follow), then the response bytes. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "http/httpclient.h"

static gale_loop *loop;
static gale_http_client *client;
static int listener = -1;
static int port;
static char url[64];

struct run {
    int peer;
    const uint8_t *data;
    size_t len, sent;
    const uint8_t *sizes;
    size_t nsizes, piece;
    bool shut_only, done_sending, peer_closed;
    int completions;
    int code, error;
    size_t body_len, streamed, headers_seen;
};

static void on_header(const gale_http_client_response *resp, void *arg)
{
    struct run *r = arg;
    r->headers_seen++;
    FUZZ_CHECK(resp->code >= 100 && resp->code <= 999, "header callback with code %d", resp->code);
}

static void on_stream(const char *data, size_t len, void *arg)
{
    struct run *r = arg;
    FUZZ_CHECK(len == 0 || data, "streaming callback with NULL data");
    r->streamed += len;
}

static void on_fetch(gale_http_client_response *resp, void *arg)
{
    struct run *r = arg;
    r->completions++;
    FUZZ_CHECK(r->completions == 1, "fetch completed %d times", r->completions);
    FUZZ_CHECK(resp != NULL, "fetch completed without a response object");
    r->code = resp->code;
    r->error = resp->error;
    r->body_len = resp->body_len;
    FUZZ_CHECK(resp->body && resp->body[resp->body_len] == '\0', "body not NUL-terminated");
    if (resp->error == 0) {
        FUZZ_CHECK(resp->code >= 100 && resp->code <= 999, "success with code %d", resp->code);
        FUZZ_CHECK(resp->error_message == NULL, "success with an error message");
    } else {
        FUZZ_CHECK(resp->error < 0, "positive error %d", resp->error);
        FUZZ_CHECK(resp->error_message != NULL, "error %d without a message", resp->error);
    }
}

static bool step(void *arg)
{
    struct run *r = arg;
    if (r->peer < 0) {
        r->peer = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (r->peer < 0 && errno != EAGAIN && errno != EINTR)
            fuzz_fail("accept: %s", strerror(errno));
    }
    if (r->peer >= 0 && !r->peer_closed) {
        char buf[4096];
        while (recv(r->peer, buf, sizeof buf, MSG_DONTWAIT) > 0)
            ; /* the request: not checked here */
        if (!r->done_sending) {
            size_t n = r->len - r->sent;
            if (r->nsizes && n && r->piece < FUZZ_MAX_PIECES) {
                size_t want = (size_t)r->sizes[r->piece++ % r->nsizes] + 1;
                if (want < n)
                    n = want;
            }
            if (n) {
                ssize_t w = send(r->peer, r->data + r->sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0)
                    r->sent += (size_t)w;
                else if (w < 0 && errno != EAGAIN && errno != EINTR)
                    r->sent = r->len;
            }
            if (r->sent == r->len) {
                r->done_sending = true;
                if (r->shut_only) {
                    shutdown(r->peer, SHUT_WR);
                } else {
                    close(r->peer);
                    r->peer_closed = true;
                }
            }
        }
    }
    if (r->completions && r->peer >= 0 && !r->peer_closed) {
        close(r->peer);
        r->peer_closed = true;
    }
    return r->completions > 0 && (r->peer < 0 || r->peer_closed);
}

struct settle {
    int fd0;
    size_t timers0;
};

static bool settled(void *arg)
{
    struct settle *st = arg;
    return gale_http_client_active(client) == 0 && gale_loop_timer_count(loop) == st->timers0 &&
           fuzz_lowest_free_fd() == st->fd0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    if (gale_loop_new(GALE_BACKEND_EPOLL, &loop) < 0)
        fuzz_fail("loop");
    gale_loop_make_current(loop);
    gale_http_client_opts o = {.max_header_size = 2048, .max_body_size = 4096};
    if (gale_http_client_new(loop, &o, &client) < 0)
        fuzz_fail("client");
    listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(listener, 16) < 0 || getsockname(listener, (struct sockaddr *)&a, &alen) < 0)
        fuzz_fail("listener: %s", strerror(errno));
    port = ntohs(a.sin_port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/fuzz", port);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!client)
        LLVMFuzzerInitialize(NULL, NULL);
    struct fuzz_in in = {data, size};
    unsigned flags = fuzz_u8(&in);
    struct run r = {.peer = -1, .shut_only = flags & 8};
    r.nsizes = (flags >> 4) % 8;
    if (r.nsizes > in.n)
        r.nsizes = in.n;
    r.sizes = in.p;
    in.p += r.nsizes;
    in.n -= r.nsizes;
    r.data = in.p;
    r.len = in.n;

    int fd0 = fuzz_lowest_free_fd();
    size_t timers0 = gale_loop_timer_count(loop);
    gale_http_client_request req;
    gale_http_client_request_init(&req, url);
    req.follow_redirects = false;
    req.raise_error = false;
    req.request_timeout = 60; /* the harness's own limit (10 s) reports a stall first */
    if (flags & 4)
        req.method = "HEAD";
    if (flags & 1)
        req.streaming_cb = on_stream;
    if (flags & 2)
        req.header_cb = on_header;
    req.cb_arg = &r;
    if (gale_http_fetch(client, &req, on_fetch, &r) < 0)
        fuzz_fail("fetch refused");
    FUZZ_CHECK(r.completions == 0, "fetch completed inside gale_http_fetch");
    fuzz_drive(loop, step, &r, 10.0, "client fetch");
    struct settle st = {.fd0 = fd0, .timers0 = timers0};
    fuzz_drive(loop, settled, &st, 10.0, "client teardown (descriptor or timer left)");

    if (r.error == 0) {
        /* The bytes start with a status line, and one (after any 1xx) carries the code. */
        char line[16];
        snprintf(line, sizeof line, " %03d", r.code);
        bool found = false;
        for (size_t i = 0; i + 12 <= r.len && !found; i++)
            found = memcmp(r.data + i, "HTTP/1.", 7) == 0 && memcmp(r.data + i + 8, line, 4) == 0;
        FUZZ_CHECK(r.len >= 12 && memcmp(r.data, "HTTP/1.", 7) == 0 && found,
                   "success (code %d) without a status line carrying it", r.code);
        FUZZ_CHECK(r.body_len + r.streamed <= r.len, "more body than bytes sent");
        if (flags & 1)
            FUZZ_CHECK(r.body_len == 0, "streamed response kept a body of %zu bytes", r.body_len);
        if (flags & 2)
            FUZZ_CHECK(r.headers_seen == 1, "header callback ran %zu times", r.headers_seen);
    } else {
        FUZZ_CHECK(r.code == GALE_HTTP_NO_RESPONSE || r.code >= 100, "error %d with code %d",
                   r.error, r.code);
    }
    if (getenv("GALE_FUZZ_VERBOSE"))
        fprintf(stderr, "code %d error %d body %zu streamed %zu headers_cb %zu\n", r.code, r.error,
                r.body_len, r.streamed, r.headers_seen);
    return 0;
}

/* Fuzzes the server side of a TLS stream (net/iostream_tls.c over net/tls.c): a socketpair, a
 * gale stream made a TLS server with gale_stream_start_tls() on one end, the harness as the
 * client on the other, a read pending on the stream from the start. Three ways to feed it:
 *
 *   raw        the input's bytes are the client's side of the connection from its first byte
 *              (ClientHello parsing, the handshake state machine, alerts, garbage);
 *   after      the harness first completes a real handshake as an OpenSSL client, then sends the
 *              input's bytes raw (records of an established connection: bad MACs, truncated
 *              records, alerts, plaintext where a record should be);
 *   data       after a real handshake the input's bytes go as application data, one record per
 *              piece, then close_notify or a bare FIN; the stream must deliver exactly those
 *              bytes, in order, to its reads (and echo them back through gale_stream_write).
 *
 * The bytes go at input-chosen cuts, then a half-close. The stream must never crash, leak or
 * hang: it closes once (its close callback), completes every read once, and leaves no
 * descriptor or timer behind; a stream still open a while after the input ended is closed by
 * the harness (a TLS stream may wait for more with nothing wrong).
 *
 * Input: byte 0 = flags (bits 0-1: mode, 0 and 3 raw, 1 after, 2 data; bits 2-3: read kind,
 * read_until / read_bytes / partial read_bytes / read_until_close; bit 4: data mode ends with
 * close_notify; bits 5-7: close locally inside read callback N, 0 = never), byte 1 = the read's
 * parameter, byte 2 = k piece sizes (bits 0-2), the ALPN the harness's client offers (bits
 * 3-4: none, "http/1.1", "h2" alone, which the server refuses, or both) and bit 5: start TLS with
 * no callback, as the TCP server does; then k bytes, then the payload.
 *
 * OpenSSL keeps process-wide state (its error queues, providers, the harness's contexts) that is
 * reachable until exit, so LeakSanitizer reports none of it; nothing is suppressed. */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/errors.h"
#include "fuzz_util.h"
#include "net/iostream.h"
#include "net/tls.h"

/* A self-signed ECDSA P-256 certificate for "localhost" and its key (nothing verifies it). */
static const char CERT_PEM[] = "-----BEGIN CERTIFICATE-----\n"
                               "MIIBfjCCASWgAwIBAgIUMh0rwlKdcCGqfHqd4HKrxpul8rMwCgYIKoZIzj0EAwIw\n"
                               "FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNzE5NTk1M1oYDzIxMjYxMTEz\n"
                               "MTk1OTUzWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\n"
                               "PQMBBwNCAAR6UxaA3X1nejhieH6NtO9t9IRWwAdTLyQykJ8s4ELjEhYSREpIQ7cZ\n"
                               "u/zYuYyoy8bSUMBRbNwOJxEhpb0HQeuIo1MwUTAdBgNVHQ4EFgQUM9cDOSV3hL7h\n"
                               "fAG9Z+6m+7skhKMwHwYDVR0jBBgwFoAUM9cDOSV3hL7hfAG9Z+6m+7skhKMwDwYD\n"
                               "VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiA981QRVhqg15XRwkS38YxI\n"
                               "a80zZwOsH8RLMqHtsLo04QIgdjc7Kvyh2Bo9E+GBEwNbdDS9pzAZv2vxGZAk+n11\n"
                               "4Bo=\n"
                               "-----END CERTIFICATE-----\n";
static const char KEY_PEM[] = "-----BEGIN PRIVATE KEY-----\n"
                              "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgrZnAUKyCf7Yfxbg5\n"
                              "BCRQIInwMQ9bvyZewDiu3OX/+CKhRANCAAR6UxaA3X1nejhieH6NtO9t9IRWwAdT\n"
                              "LyQykJ8s4ELjEhYSREpIQ7cZu/zYuYyoy8bSUMBRbNwOJxEhpb0HQeuI\n"
                              "-----END PRIVATE KEY-----\n";

enum mode { MODE_RAW, MODE_AFTER, MODE_DATA };
enum rkind { RK_UNTIL, RK_BYTES, RK_PARTIAL, RK_CLOSE };

static const char *const delims[] = {"\r\n", "\r\n\r\n", "\n", "x"};
/* The client's ALPN offers, in wire form, and what the server must pick from each. */
static const struct {
    const char *wire;
    unsigned len;
    const char *chosen;
} alpn_offers[] = {{"", 0, ""},
                   {"\x08http/1.1", 9, "http/1.1"},
                   {"\x02h2", 3, NULL},
                   {"\x02h2\x08http/1.1", 12, "http/1.1"}};

struct run {
    gale_loop *loop;
    gale_stream *s;
    int peer;
    enum mode mode;
    enum rkind kind;
    unsigned param;
    bool close_notify;
    unsigned alpn;     /* index into alpn_offers */
    unsigned close_at; /* close locally in read callback number close_at; 0: never */
    const uint8_t *data;
    size_t len, sent;
    const uint8_t *sizes;
    size_t nsizes, piece;
    SSL *client;        /* the harness's client, after and data modes */
    bool client_ready;  /* its handshake finished */
    bool client_failed; /* the server refused it (cannot happen with a good server) */
    bool shut, peer_eof, closed, local_close, read_pending;
    unsigned reads, idle;
    int hs_status, close_reason;
    bool hs_called;
    bool no_hs_cb; /* start_tls without a callback (the TCP server's way) */
    uint8_t *got;  /* what the reads delivered, in order */
    size_t got_len;
    size_t writes, write_cbs;
};

static gale_tls_ctx *server_ctx;
static SSL_CTX *client_ctx;

static void start_read(struct run *r);

static void on_write(gale_stream *s, int status, void *arg)
{
    struct run *r = arg;
    r->write_cbs++;
    FUZZ_CHECK(r->write_cbs <= r->writes, "more write callbacks than writes");
}

static void on_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct run *r = arg;
    FUZZ_CHECK(r->read_pending, "read callback with no read pending");
    r->read_pending = false;
    r->reads++;
    FUZZ_CHECK(status <= 0, "read status %d", status);
    FUZZ_CHECK(r->got_len + len <= r->len, "reads delivered more than was sent");
    if (len) {
        memcpy(r->got + r->got_len, data, len);
        r->got_len += len;
    }
    if (len) { /* plaintext comes only out of a finished handshake */
        const char *v = gale_stream_tls_version(s);
        FUZZ_CHECK(!strcmp(v, "TLSv1.3") || !strcmp(v, "TLSv1.2"), "data before a handshake");
    }
    if (status < 0)
        return; /* the stream is closing */
    if (r->kind == RK_UNTIL) {
        const char *d = delims[r->param % 4];
        size_t dl = strlen(d);
        FUZZ_CHECK(len >= dl && memcmp(data + len - dl, d, dl) == 0, "read_until: no delimiter");
    } else if (r->kind == RK_BYTES) {
        FUZZ_CHECK(len == r->param % 64 + 1, "read_bytes(%u): %zu bytes", r->param % 64 + 1, len);
    }
    if (len && gale_stream_write(r->s, data, len, on_write, r) == 0)
        r->writes++;
    if (r->close_at && r->reads == r->close_at) {
        r->local_close = true;
        gale_stream_close(r->s, 0);
        return;
    }
    if (r->kind != RK_CLOSE)
        start_read(r);
}

static void start_read(struct run *r)
{
    int rc;
    switch (r->kind) {
    case RK_UNTIL: {
        const char *d = delims[r->param % 4];
        size_t max = r->param & 0x80 ? 0 : 16 + (r->param & 0x7f) * 4;
        rc = gale_stream_read_until(r->s, d, strlen(d), max, on_read, r);
        break;
    }
    case RK_BYTES:
    case RK_PARTIAL:
        rc = gale_stream_read_bytes(r->s, r->param % 64 + 1, r->kind == RK_PARTIAL, on_read, r);
        break;
    default: rc = gale_stream_read_until_close(r->s, on_read, r); break;
    }
    if (rc == -EPIPE) {
        FUZZ_CHECK(gale_stream_closed(r->s), "-EPIPE on an open stream");
        return;
    }
    FUZZ_CHECK(rc == 0, "read refused: %d", rc);
    r->read_pending = true;
}

static void on_handshake(gale_stream *s, int status, void *arg)
{
    struct run *r = arg;
    FUZZ_CHECK(!r->hs_called, "start_tls callback twice");
    r->hs_called = true;
    r->hs_status = status;
    FUZZ_CHECK(status <= 0, "handshake status %d", status);
    FUZZ_CHECK(gale_stream_is_tls(s), "not a TLS stream");
    if (status == 0) {
        const char *v = gale_stream_tls_version(s), *chosen = alpn_offers[r->alpn].chosen;
        FUZZ_CHECK(!strcmp(v, "TLSv1.3") || !strcmp(v, "TLSv1.2"), "version \"%s\"", v);
        FUZZ_CHECK(!gale_stream_tls_resumed(s), "a session resumed that was never offered");
        FUZZ_CHECK(r->mode != MODE_RAW, "a raw input completed a handshake");
        FUZZ_CHECK(chosen && !strcmp(gale_stream_tls_alpn(s), chosen), "ALPN \"%s\", offered %u",
                   gale_stream_tls_alpn(s), r->alpn);
        FUZZ_CHECK(!*gale_stream_tls_error(s), "an error text after a good handshake");
    } else if (status != -ECANCELED && status != -ETIMEDOUT) {
        FUZZ_CHECK(*gale_stream_tls_error(s), "handshake failed (%d) with no reason", status);
    }
}

static void on_close(gale_stream *s, int status, void *arg)
{
    struct run *r = arg;
    FUZZ_CHECK(!r->closed, "close callback twice");
    FUZZ_CHECK(!r->read_pending, "closed with a read never completed");
    FUZZ_CHECK(r->hs_called || r->no_hs_cb, "closed before the start_tls callback");
    r->closed = true;
    r->close_reason = status;
}

/* The size of the next piece: input-chosen for the first FUZZ_MAX_PIECES, then the rest. */
static size_t next_piece(struct run *r, size_t left)
{
    if (r->nsizes && r->piece < FUZZ_MAX_PIECES) {
        size_t want = (size_t)r->sizes[r->piece++ % r->nsizes] + 1;
        return want < left ? want : left;
    }
    return left;
}

/* The harness's client handshake, one step; after it, tickets and the rest are read raw. */
static void client_step(struct run *r)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(r->client);
    if (rc == 1) {
        r->client_ready = true;
        return;
    }
    int e = SSL_get_error(r->client, rc);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        r->client_failed = true; /* then feed the bytes raw all the same */
        r->client_ready = true;
    }
    ERR_clear_error();
}

static void send_some(struct run *r)
{
    size_t n = next_piece(r, r->len - r->sent);
    if (r->mode == MODE_DATA && !r->client_failed) {
        size_t w = 0;
        ERR_clear_error();
        if (n && SSL_write_ex(r->client, r->data + r->sent, n, &w) == 1) {
            r->sent += w;
        } else if (n) {
            int e = SSL_get_error(r->client, 0);
            if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ)
                r->sent = r->len; /* the server went away */
            else if (r->piece)
                r->piece--; /* the same piece again next time */
        }
        ERR_clear_error();
    } else if (n) {
        ssize_t w = send(r->peer, r->data + r->sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0)
            r->sent += (size_t)w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR)
            r->sent = r->len;
    }
    if (r->sent == r->len) {
        if (r->mode == MODE_DATA && r->close_notify && !r->client_failed)
            (void)SSL_shutdown(r->client);
        ERR_clear_error();
        shutdown(r->peer, SHUT_WR);
        r->shut = true;
    }
}

static void drain_peer(struct run *r)
{
    char buf[16384];
    while (!r->peer_eof) {
        ssize_t n = recv(r->peer, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            r->peer_eof = true;
        break;
    }
}

static bool step(void *arg)
{
    struct run *r = arg;
    if (r->client && !r->client_ready)
        client_step(r); /* the client reads the server's flight itself */
    else if (!r->shut)
        send_some(r);
    if (!r->client || r->client_ready)
        drain_peer(r);
    /* The input is in: a stream may rightly wait for more, so after a quiet while its owner
     * closes it. */
    if (!r->closed && r->shut && ++r->idle > 32 && !r->local_close) {
        r->local_close = true;
        gale_stream_close(r->s, 0);
    }
    return r->closed && r->peer_eof;
}

static char *write_temp(const char *pem)
{
    char *path = strdup("/tmp/gale-fuzz-tls-XXXXXX");
    int fd = path ? mkstemp(path) : -1;
    if (fd < 0 || write(fd, pem, strlen(pem)) != (ssize_t)strlen(pem))
        fuzz_fail("cannot write a temporary PEM file");
    close(fd);
    return path;
}

/* A handshake allocates and frees a lot inside OpenSSL: with ASan's default 256 MB quarantine
 * every input ran on fresh pages (a third of the time in page faults). 16 MB still holds the
 * memory of several inputs for use-after-free checks. ASAN_OPTIONS in the environment wins. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "quarantine_size_mb=16"; }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    signal(SIGPIPE, SIG_IGN); /* the harness's client writes with write(2) to a closed peer */
    char *cert = write_temp(CERT_PEM), *key = write_temp(KEY_PEM);
    gale_tls_opts o;
    gale_tls_opts_init(&o);
    o.certfile = cert;
    o.keyfile = key;
    int rc = gale_tls_server_new(&o, &server_ctx); /* reads the files now */
    unlink(cert);
    unlink(key);
    free(cert);
    free(key);
    if (rc < 0)
        fuzz_fail("server context: %d", rc);
    client_ctx = SSL_CTX_new(TLS_client_method());
    if (!client_ctx)
        fuzz_fail("client context");
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_OFF);
    return 0;
}

static void parse_input(struct run *r, const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    unsigned flags = fuzz_u8(&in);
    r->mode = (flags & 3) == 1 ? MODE_AFTER : (flags & 3) == 2 ? MODE_DATA : MODE_RAW;
    r->kind = (enum rkind)((flags >> 2) & 3);
    r->close_notify = flags & 0x10;
    r->close_at = flags >> 5;
    r->param = fuzz_u8(&in);
    unsigned k = fuzz_u8(&in);
    r->nsizes = k % 8;
    r->alpn = (k >> 3) & 3;
    r->no_hs_cb = k & 0x20;
    if (r->nsizes > in.n)
        r->nsizes = in.n;
    r->sizes = in.p;
    in.p += r->nsizes;
    in.n -= r->nsizes;
    r->data = in.p;
    r->len = in.n;
}

/* What the reads delivered: in data mode with the client's handshake done, a prefix of the
 * payload, all of it when read_until_close saw a clean end. */
static void check_delivered(const struct run *r)
{
    if (r->mode != MODE_DATA || r->client_failed) {
        FUZZ_CHECK(r->mode != MODE_RAW || r->got_len == 0, "raw bytes delivered as plaintext");
        return;
    }
    FUZZ_CHECK(r->got_len <= r->len && memcmp(r->got, r->data, r->got_len) == 0,
               "delivered %zu bytes that are not the payload's first", r->got_len);
    if (r->kind == RK_CLOSE && !r->local_close && r->close_reason == GALE_EEOF)
        FUZZ_CHECK(r->got_len == r->len, "read_until_close: %zu of %zu bytes", r->got_len, r->len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gale_loop *loop;
    if (!loop && gale_loop_new(GALE_BACKEND_EPOLL, &loop) < 0)
        fuzz_fail("loop");
    struct run *r = calloc(1, sizeof *r);
    if (!r)
        return 0;
    parse_input(r, data, size);
    r->got = malloc(r->len + 1);
    r->loop = loop;
    int fd0 = fuzz_lowest_free_fd();
    size_t timers0 = gale_loop_timer_count(loop);
    int sv[2];
    if (!r->got || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        fuzz_fail("socketpair");
    r->peer = sv[1];
    if (gale_stream_new(loop, sv[0], &r->s) < 0)
        fuzz_fail("stream");
    gale_stream_set_close_cb(r->s, on_close, r);
    int rc = gale_stream_start_tls(r->s, server_ctx, NULL, r->no_hs_cb ? NULL : on_handshake, r);
    FUZZ_CHECK(rc == 0, "start_tls: %d", rc);
    start_read(r);
    if (r->mode != MODE_RAW) {
        r->client = SSL_new(client_ctx);
        if (!r->client || SSL_set_fd(r->client, r->peer) != 1)
            fuzz_fail("client SSL");
        SSL_set_connect_state(r->client);
        if (alpn_offers[r->alpn].len &&
            SSL_set_alpn_protos(r->client, (const unsigned char *)alpn_offers[r->alpn].wire,
                                alpn_offers[r->alpn].len) != 0)
            fuzz_fail("client ALPN");
    }
    fuzz_drive(loop, step, r, 10.0, "tls run");
    FUZZ_CHECK(r->write_cbs == r->writes, "%zu writes, %zu callbacks", r->writes, r->write_cbs);
    FUZZ_CHECK(r->hs_called != r->no_hs_cb, "the start_tls callback ran %d times, expected %d",
               r->hs_called, !r->no_hs_cb);
    check_delivered(r);
    if (getenv("GALE_FUZZ_VERBOSE"))
        fprintf(stderr, "mode %d kind %d: handshake %d, %u reads, %zu of %zu bytes, close %d%s\n",
                r->mode, r->kind, r->hs_status, r->reads, r->got_len, r->len, r->close_reason,
                r->local_close ? " (local)" : "");
    SSL_free(r->client);
    ERR_clear_error();
    close(r->peer);
    FUZZ_CHECK(gale_loop_timer_count(loop) == timers0, "timer left");
    FUZZ_CHECK(fuzz_lowest_free_fd() == fd0, "descriptor left (lowest free %d, was %d)",
               fuzz_lowest_free_fd(), fd0);
    free(r->got);
    free(r);
    return 0;
}

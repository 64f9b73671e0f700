/* TLS streams and HTTPS over real sockets, with certificates made at test time by Debian's
 * openssl (tests/tls_certs.sh): the handshake and requests, every read form across records cut at
 * every byte, large transfers both ways with back-pressure, certificate verification (wrong host,
 * self-signed, expired, unknown issuer, IP addresses), ALPN, SNI, session resumption, reloading
 * certificates, client certificates, and the hostile peers a public port meets (plain HTTP,
 * garbage, held half hellos, silence after the handshake, resets, renegotiation). Peers are gale's
 * own TLS streams or OpenSSL used directly, blocking, in a thread. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/loop.h"
#include "http/httpclient.h"
#include "http/httpserver.h"
#include "http/websocket.h"
#include "net/iostream.h"
#include "net/tcpclient.h"
#include "net/tcpserver.h"
#include "net/tls.h"
#include "testutil.h"

#if GALE_HAVE_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>

static char certdir[] = "/tmp/gale-tls-XXXXXX";

/* "<certdir>/<name>" in one of a few rotating buffers. */
static const char *path(const char *name)
{
    static char bufs[8][128];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", certdir, name);
    return b;
}

static const char *pem(const char *base)
{
    char n[64];
    snprintf(n, sizeof n, "%s.pem", base);
    return path(n);
}

static const char *key(const char *base)
{
    char n[64];
    snprintf(n, sizeof n, "%s.key", base);
    return path(n);
}

static gale_tls_ctx *server_ctx(const char *base, double handshake_timeout)
{
    gale_tls_opts o;
    gale_tls_opts_init(&o);
    o.certfile = pem(base);
    o.keyfile = key(base);
    o.handshake_timeout = handshake_timeout;
    gale_tls_ctx *c = NULL;
    ck_assert_int_eq(gale_tls_server_new(&o, &c), 0);
    return c;
}

static gale_tls_ctx *client_ctx(const char *ca, bool validate)
{
    gale_tls_opts o;
    gale_tls_opts_init(&o);
    o.ca_certs = ca ? pem(ca) : NULL;
    o.validate_cert = validate;
    gale_tls_ctx *c = NULL;
    ck_assert_int_eq(gale_tls_client_new(&o, &c), 0);
    return c;
}

/* ---- a TLS echo server on the loop ---- */

enum echo_mode { ECHO_UNTIL, ECHO_BYTES, ECHO_REGEX, ECHO_SOME };

struct echo {
    gale_server *srv;
    int port;
    enum echo_mode mode;
    int accepted;
    int open;
};

static void echo_next(gale_stream *s, struct echo *e);

static void echo_got(gale_stream *s, int status, const char *d, size_t n, void *arg)
{
    if (status < 0)
        return;
    gale_stream_write(s, d, n, NULL, NULL);
    echo_next(s, arg);
}

static void echo_resume(gale_stream *s, int status, void *arg)
{
    if (status == 0 && !gale_stream_reading(s))
        echo_next(s, arg);
}

static size_t echo_some(gale_stream *s, int status, const char *d, size_t n, void *arg)
{
    if (status < 0)
        return n;
    gale_stream_write(s, d, n, NULL, NULL);
    /* Back-pressure: stop reading while much is queued; the write callback resumes. */
    if (gale_stream_write_pending(s) > 256 * 1024)
        gale_stream_write(s, "", 0, echo_resume, arg);
    else
        echo_next(s, arg);
    return n;
}

static void echo_next(gale_stream *s, struct echo *e)
{
    switch (e->mode) {
    case ECHO_UNTIL: gale_stream_read_until(s, "\n", 1, 0, echo_got, e); break;
    case ECHO_BYTES: gale_stream_read_bytes(s, 6, false, echo_got, e); break;
    case ECHO_REGEX: gale_stream_read_until_regex(s, "d\n|o\n", 0, echo_got, e); break;
    case ECHO_SOME: gale_stream_read_some(s, echo_some, e); break;
    }
}

static void echo_closed(gale_stream *s, int reason, void *arg) { ((struct echo *)arg)->open--; }

static void echo_accept(gale_server *srv, gale_stream *s, const struct sockaddr *peer,
                        socklen_t len, void *arg)
{
    struct echo *e = arg;
    e->accepted++;
    e->open++;
    gale_stream_set_close_cb(s, echo_closed, e);
    echo_next(s, e);
}

static void echo_start(gale_loop *loop, struct echo *e, gale_tls_ctx *ctx, enum echo_mode mode)
{
    memset(e, 0, sizeof *e);
    e->mode = mode;
    ck_assert_int_eq(gale_server_new(loop, echo_accept, e, &e->srv), 0);
    ck_assert_int_eq(gale_server_set_tls(e->srv, ctx), 0);
    ck_assert_int_eq(gale_server_listen(e->srv, 0, "127.0.0.1"), 0);
    e->port = gale_server_port(e->srv);
}

static bool echo_idle(void *arg) { return ((struct echo *)arg)->open == 0; }

/* Waits until every connection the clients closed is closed here too, then frees the server. */
static void echo_stop(gale_loop *loop, struct echo *e)
{
    ck_assert(test_wait_until(loop, echo_idle, e, 10));
    gale_server_free(e->srv);
}

/* ---- gale's own TLS client on the loop ---- */

struct gclient {
    gale_tls_ctx *ctx;
    const char *host;
    gale_stream *s;
    bool done;
    bool watch_close; /* set `closed` from the stream's close callback (g must outlive it) */
    bool closed;
    int status;
    char error[160];
    char alpn[32];
};

static void gclient_closed(gale_stream *s, int status, void *arg)
{
    (void)s;
    (void)status;
    ((struct gclient *)arg)->closed = true;
}

static void gclient_handshake(gale_stream *s, int status, void *arg)
{
    struct gclient *g = arg;
    g->done = true;
    g->status = status;
    snprintf(g->error, sizeof g->error, "%s", gale_stream_tls_error(s));
    snprintf(g->alpn, sizeof g->alpn, "%s", gale_stream_tls_alpn(s));
    if (status == 0 && g->watch_close)
        gale_stream_set_close_cb(s, gclient_closed, g);
}

static void gclient_connected(gale_stream *s, int status, void *arg)
{
    struct gclient *g = arg;
    if (status < 0) {
        g->done = true;
        g->status = status;
        return;
    }
    int rc = gale_stream_start_tls(s, g->ctx, g->host, gclient_handshake, g);
    if (rc < 0) {
        g->done = true;
        g->status = rc;
    }
}

static bool gclient_done(void *arg) { return ((struct gclient *)arg)->done; }

/* Connects to 127.0.0.1:port and runs the handshake; returns its status. */
static int gclient_run(gale_loop *loop, struct gclient *g, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g->done = false;
    ck_assert_int_eq(
        gale_stream_connect(loop, (struct sockaddr *)&a, sizeof a, gclient_connected, g, &g->s), 0);
    ck_assert(test_wait_until(loop, gclient_done, g, 10));
    return g->status;
}

/* ---- OpenSSL, blocking, for peers in a thread ---- */

static SSL_CTX *bctx(const char *ca)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(c);
    if (ca) {
        ck_assert_int_eq(SSL_CTX_load_verify_locations(c, pem(ca), NULL), 1);
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    }
    return c;
}

/* A blocking TLS connection to 127.0.0.1:port, or NULL when the handshake fails. */
static SSL *bconnect(SSL_CTX *c, int port, const char *sni, SSL_SESSION *resume)
{
    int fd = test_connect_tcp(port);
    if (fd < 0)
        return NULL;
    test_set_timeouts(fd, 10);
    SSL *ssl = SSL_new(c);
    SSL_set_fd(ssl, fd);
    if (sni)
        SSL_set_tlsext_host_name(ssl, sni);
    if (resume)
        SSL_set_session(ssl, resume);
    if (SSL_connect(ssl) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

static void bclose(SSL *ssl)
{
    int fd = SSL_get_fd(ssl);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
}

/* Sends `req` and reads until the peer closes (or `max` bytes); NUL-terminated, malloc'ed. */
static char *bexchange(SSL *ssl, const char *req, size_t max)
{
    if (req)
        ck_assert_int_eq(SSL_write(ssl, req, (int)strlen(req)), (int)strlen(req));
    char *out = calloc(1, max + 1);
    size_t got = 0;
    while (got < max) {
        int n = SSL_read(ssl, out + got, (int)(max - got));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    ERR_clear_error();
    return out;
}

/* ---- an HTTPS server on the loop ---- */

static void https_handle(gale_http_request *req, void *arg)
{
    gale_http_response_write(req, req->protocol, strlen(req->protocol));
    gale_http_response_finish(req);
}

static gale_http_server *https_start(gale_loop *loop, gale_tls_ctx *ctx, double idle, int *port)
{
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.tls = ctx;
    o.no_access_log = true;
    if (idle > 0)
        o.idle_connection_timeout = idle;
    gale_http_server *srv = NULL;
    ck_assert_int_eq(gale_http_server_new(loop, &o, https_handle, NULL, &srv), 0);
    ck_assert_int_eq(gale_http_server_listen(srv, 0, "127.0.0.1"), 0);
    *port = gale_http_server_port(srv);
    return srv;
}

static bool no_http_connections(void *arg) { return gale_http_server_connections(arg) == 0; }

/* Waits until the server has closed every connection (the client's close reached it), then frees
 * it: a server freed with connections open leaves them to a loop that no longer runs. */
static void https_stop(gale_loop *loop, gale_http_server *srv)
{
    ck_assert(test_wait_until(loop, no_http_connections, srv, 10));
    gale_http_server_free(srv);
}

static const char GET_CLOSE[] = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

static gale_loop *new_loop(void)
{
    gale_loop *loop = NULL;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    return loop;
}

/* ---- the handshake and a request ---- */

struct alpn_case {
    int port;
    const unsigned char *offer;
    unsigned offer_len;
    bool ok;
    char selected[32];
    char *response;
};

static void alpn_client(void *arg)
{
    struct alpn_case *a = arg;
    SSL_CTX *c = bctx("ca");
    if (a->offer)
        SSL_CTX_set_alpn_protos(c, a->offer, a->offer_len);
    SSL *ssl = bconnect(c, a->port, "localhost", NULL);
    a->ok = ssl != NULL;
    if (ssl) {
        const unsigned char *p;
        unsigned len;
        SSL_get0_alpn_selected(ssl, &p, &len);
        snprintf(a->selected, sizeof a->selected, "%.*s", (int)len, p);
        a->response = bexchange(ssl, GET_CLOSE, 4096);
        bclose(ssl);
    }
    SSL_CTX_free(c);
}

START_TEST(test_https_request)
{
    gale_loop *loop = new_loop();
    gale_tls_ctx *ctx = server_ctx("server", 10);
    int port;
    gale_http_server *srv = https_start(loop, ctx, 0, &port);
    gale_tls_unref(ctx); /* the server holds its own reference */
    struct alpn_case a = {
        .port = port, .offer = (const unsigned char *)"\x02h2\x08http/1.1", .offer_len = 12};
    ck_assert(test_run_thread(loop, alpn_client, &a, 20));
    ck_assert(a.ok);
    ck_assert_str_eq(a.selected, "http/1.1");
    ck_assert_ptr_nonnull(strstr(a.response, "HTTP/1.1 200 OK\r\n"));
    ck_assert_ptr_nonnull(strstr(a.response, "\r\n\r\nhttps")); /* request.protocol */
    free(a.response);

    /* A client that speaks only h2 gets no_application_protocol (RFC 7301 3.2)... */
    struct alpn_case h2 = {.port = port, .offer = (const unsigned char *)"\x02h2", .offer_len = 3};
    ck_assert(test_run_thread(loop, alpn_client, &h2, 20));
    ck_assert(!h2.ok);
    /* ...and one that offers nothing is served. */
    struct alpn_case none = {.port = port};
    ck_assert(test_run_thread(loop, alpn_client, &none, 20));
    ck_assert(none.ok);
    ck_assert_str_eq(none.selected, "");
    ck_assert_ptr_nonnull(strstr(none.response, "\r\n\r\nhttps"));
    free(none.response);
    https_stop(loop, srv);
    gale_loop_free(loop);
}
END_TEST

/* ---- records cut at every byte, for every read form ---- */

/* A client whose records go through memory BIOs, so the test decides where the ciphertext is cut
 * between TCP sends. */
struct mclient {
    int fd;
    SSL *ssl;
    BIO *in, *out;
};

static bool mc_flush(struct mclient *m, size_t cut)
{
    char buf[65536];
    int n = BIO_read(m->out, buf, sizeof buf);
    if (n <= 0)
        return true;
    size_t first = cut && cut < (size_t)n ? cut : (size_t)n;
    if (test_write_all(m->fd, buf, first) != 0)
        return false;
    if (first < (size_t)n) {
        /* The server has read the first piece before the rest leaves: a cut for certain. */
        if (!test_wait_peer_read(m->fd, 5))
            return false;
        if (test_write_all(m->fd, buf + first, (size_t)n - first) != 0)
            return false;
    }
    return true;
}

static bool mc_feed(struct mclient *m)
{
    char buf[16384];
    ssize_t n = recv(m->fd, buf, sizeof buf, 0);
    if (n <= 0)
        return false;
    BIO_write(m->in, buf, (int)n);
    return true;
}

static bool mc_open(struct mclient *m, SSL_CTX *c, int port)
{
    m->fd = test_connect_tcp(port);
    if (m->fd < 0)
        return false;
    test_set_timeouts(m->fd, 10);
    int one = 1;
    setsockopt(m->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    m->ssl = SSL_new(c);
    m->in = BIO_new(BIO_s_mem());
    m->out = BIO_new(BIO_s_mem());
    SSL_set_bio(m->ssl, m->in, m->out);
    SSL_set_connect_state(m->ssl);
    for (;;) {
        int rc = SSL_do_handshake(m->ssl);
        if (!mc_flush(m, 0))
            return false;
        if (rc == 1)
            return true;
        if (SSL_get_error(m->ssl, rc) != SSL_ERROR_WANT_READ || !mc_feed(m))
            return false;
    }
}

static size_t mc_read(struct mclient *m, char *out, size_t want)
{
    size_t got = 0;
    while (got < want) {
        int n = SSL_read(m->ssl, out + got, (int)(want - got));
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (SSL_get_error(m->ssl, n) != SSL_ERROR_WANT_READ || !mc_feed(m))
            break;
    }
    return got;
}

static void mc_close(struct mclient *m)
{
    SSL_free(m->ssl);
    close(m->fd);
}

struct cut_case {
    int port;
    int failures;
    int rounds;
};

static const char MESSAGE[] = "hello\nworld\n"; /* two lines of 6: every echo mode's unit */

static void cut_client(void *arg)
{
    struct cut_case *c = arg;
    SSL_CTX *ctx = bctx("ca");
    struct mclient m;
    if (!mc_open(&m, ctx, c->port)) {
        c->failures = -1;
        SSL_CTX_free(ctx);
        return;
    }
    size_t mlen = strlen(MESSAGE);
    for (int per_byte = 0; per_byte < 2; per_byte++) {
        /* The ciphertext of the message once, to learn its length; then cut at every byte. */
        for (size_t cut = 1;; cut++) {
            if (per_byte) {
                for (size_t i = 0; i < mlen; i++)
                    SSL_write(m.ssl, MESSAGE + i, 1); /* one record per byte */
            } else {
                SSL_write(m.ssl, MESSAGE, (int)mlen);
            }
            size_t total = (size_t)BIO_pending(m.out);
            if (!mc_flush(&m, cut)) {
                c->failures++;
                break;
            }
            char echo[32] = {0};
            if (mc_read(&m, echo, mlen) != mlen || memcmp(echo, MESSAGE, mlen) != 0)
                c->failures++;
            c->rounds++;
            if (cut + 1 >= total)
                break;
        }
    }
    mc_close(&m);
    SSL_CTX_free(ctx);
}

START_TEST(test_records_cut_at_every_byte)
{
    gale_loop *loop = new_loop();
    gale_tls_ctx *ctx = server_ctx("server", 10);
    struct echo e;
    echo_start(loop, &e, ctx, (enum echo_mode)_i);
    struct cut_case c = {.port = e.port};
    ck_assert(test_run_thread(loop, cut_client, &c, 120));
    ck_assert_int_eq(c.failures, 0);
    ck_assert_int_gt(c.rounds, 12 * 22); /* each of 12 one-byte records is 22 bytes at least */
    echo_stop(loop, &e);
    gale_tls_unref(ctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- large transfers both ways, gale at both ends ---- */

#define BIG (8u * 1024 * 1024)

struct big {
    struct gclient g;
    char *data;
    bool done;
    int status;
    bool same;
};

static void big_read(gale_stream *s, int status, const char *d, size_t n, void *arg)
{
    struct big *b = arg;
    b->status = status;
    b->same = status == 0 && n == BIG && memcmp(d, b->data, BIG) == 0;
    b->done = true;
}

static bool big_done(void *arg) { return ((struct big *)arg)->done; }

START_TEST(test_large_transfers_back_pressure)
{
    gale_loop *loop = new_loop();
    gale_tls_ctx *sctx = server_ctx("chain", 10);
    struct echo e;
    echo_start(loop, &e, sctx, ECHO_SOME);
    struct big b = {.g = {.ctx = client_ctx("ca", true), .host = "localhost"}};
    b.data = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        b.data[i] = (char)(i * 2654435761u >> 13);
    ck_assert_int_eq(gclient_run(loop, &b.g, e.port), 0);
    /* All at once: the client's queue holds what TCP and the echo's back-pressure hold back. */
    ck_assert_int_eq(gale_stream_read_bytes(b.g.s, BIG, false, big_read, &b), 0);
    ck_assert_int_eq(gale_stream_write(b.g.s, b.data, BIG, NULL, NULL), 0);
    ck_assert(test_wait_until(loop, big_done, &b, 60));
    ck_assert_int_eq(b.status, 0);
    ck_assert(b.same);
    gale_stream_close(b.g.s, 0);
    test_run_for(loop, 0.05);
    ck_assert_int_eq(e.open, 0); /* the server saw the close (close_notify) */
    free(b.data);
    echo_stop(loop, &e);
    gale_tls_unref(b.g.ctx);
    gale_tls_unref(sctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- verification ---- */

struct verify_case {
    const char *server; /* certificate the server shows */
    const char *ca;     /* the client's CA file (NULL: the system store) */
    bool validate;
    const char *host;
    int status;
    const char *reason; /* expected in gale_stream_tls_error (NULL: "") */
};

static const struct verify_case verify_cases[] = {
    {"server", "ca", true, "localhost", 0, NULL},
    {"server", "ca", true, "127.0.0.1", 0, NULL}, /* an IP address against the IP entry */
    {"chain", "ca", true, "LOCALHOST", 0, NULL},  /* names compare without case */
    {"server", "ca", true, "wrong.test", GALE_ECERT, "hostname mismatch"},
    {"server", "ca", true, "127.0.0.2", GALE_ECERT, "IP address mismatch"},
    {"self", "ca", true, "localhost", GALE_ECERT, "self-signed certificate"},
    {"expired", "ca", true, "localhost", GALE_ECERT, "certificate has expired"},
    {"server", "otherca", true, "localhost", GALE_ECERT, "unable to get local issuer"},
    {"server", NULL, true, "localhost", GALE_ECERT, "unable to get local issuer"},
    {"self", NULL, false, "localhost", 0, NULL}, /* validate_cert = false */
    {"expired", NULL, false, "wrong.test", 0, NULL},
};

START_TEST(test_verification)
{
    const struct verify_case *v = &verify_cases[_i];
    gale_loop *loop = new_loop();
    gale_tls_ctx *sctx = server_ctx(v->server, 10);
    struct echo e;
    echo_start(loop, &e, sctx, ECHO_UNTIL);
    struct gclient g = {.ctx = client_ctx(v->ca, v->validate), .host = v->host};
    int st = gclient_run(loop, &g, e.port);
    ck_assert_msg(st == v->status, "%s/%s/%s: status %s (%s)", v->server, v->ca, v->host,
                  gale_err_name(st), g.error);
    if (v->reason)
        ck_assert_msg(strstr(g.error, v->reason) && strstr(g.error, "certificate verify failed"),
                      "error '%s' lacks '%s'", g.error, v->reason);
    else
        ck_assert_str_eq(g.error, "");
    if (st == 0)
        gale_stream_close(g.s, 0); /* after a failure the stream closed (and is freed) */
    test_run_for(loop, 0.05);
    echo_stop(loop, &e);
    gale_tls_unref(g.ctx);
    gale_tls_unref(sctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- SNI ---- */

START_TEST(test_sni_chooses_certificate)
{
    gale_loop *loop = new_loop();
    gale_tls_ctx *sctx = server_ctx("server", 10);
    ck_assert_int_eq(gale_tls_add_sni(sctx, "other.test", pem("other"), key("other")), 0);
    ck_assert_int_eq(gale_tls_add_sni(sctx, "x.test", path("missing.pem"), NULL), GALE_ETLS);
    struct echo e;
    echo_start(loop, &e, sctx, ECHO_UNTIL);
    const char *hosts[] = {"other.test", "OTHER.test", "localhost"};
    for (size_t i = 0; i < 3; i++) {
        struct gclient g = {.ctx = client_ctx("ca", true), .host = hosts[i]};
        ck_assert_msg(gclient_run(loop, &g, e.port) == 0, "%s: %s", hosts[i], g.error);
        gale_stream_close(g.s, 0);
        gale_tls_unref(g.ctx);
    }
    /* A name the server has no certificate for gets the main one (localhost's). */
    struct gclient g = {.ctx = client_ctx("ca", true), .host = "third.test"};
    ck_assert_int_eq(gclient_run(loop, &g, e.port), GALE_ECERT);
    ck_assert_ptr_nonnull(strstr(g.error, "hostname mismatch"));
    gale_tls_unref(g.ctx);
    test_run_for(loop, 0.05);
    echo_stop(loop, &e);
    gale_tls_unref(sctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- close_notify when the socket is full ---- */

#define FLOOD (16 << 20)

struct flood {
    gale_loop *loop;
    gale_server *srv;
    int port;
    char *data;
    int accepted;
};

static void flood_close(gale_loop *loop, void *arg) { gale_stream_close(arg, 0); }

/* Queues more than the socket buffers hold, then closes while OpenSSL still holds part of it. */
static void flood_accept(gale_server *srv, gale_stream *s, const struct sockaddr *peer,
                         socklen_t len, void *arg)
{
    struct flood *f = arg;
    f->accepted++;
    ck_assert_int_eq(gale_stream_write(s, f->data, FLOOD, NULL, NULL), 0);
    ck_assert_int_eq(gale_loop_call_later(f->loop, 0.2, flood_close, s, NULL), 0);
}

struct flood_client {
    int port;
    size_t got;
    int end; /* SSL_get_error() of the read that ended the stream */
};

static void flood_read_late(void *arg)
{
    struct flood_client *c = arg;
    SSL_CTX *ctx = bctx("ca");
    SSL *ssl = bconnect(ctx, c->port, "localhost", NULL);
    ck_assert_ptr_nonnull(ssl);
    usleep(500 * 1000); /* the server closes meanwhile, its socket full */
    char buf[65536];
    int n;
    while ((n = SSL_read(ssl, buf, sizeof buf)) > 0)
        c->got += (size_t)n;
    c->end = SSL_get_error(ssl, n);
    ERR_clear_error();
    bclose(ssl);
    SSL_CTX_free(ctx);
}

static void flood_connect_only(void *arg)
{
    SSL_CTX *ctx = bctx("ca");
    SSL *ssl = bconnect(ctx, *(int *)arg, "localhost", NULL);
    ck_assert_ptr_nonnull(ssl);
    usleep(300 * 1000); /* never reads: the close_notify is still waiting when we leave */
    SSL_free(ssl);      /* the fd stays open until the test ends */
    SSL_CTX_free(ctx);
}

START_TEST(test_close_notify_waits_for_socket)
{
    /* A server that closes while its socket is full still ends the stream with close_notify
     * once the client reads: without it the client sees a cut record, OpenSSL reports an
     * attack ("unexpected eof") and throws the session away. */
    gale_loop *loop = new_loop();
    gale_tls_ctx *ctx = server_ctx("server", 10);
    struct flood f = {.loop = loop, .data = malloc(FLOOD)};
    memset(f.data, 'x', FLOOD);
    ck_assert_int_eq(gale_server_new(loop, flood_accept, &f, &f.srv), 0);
    ck_assert_int_eq(gale_server_set_tls(f.srv, ctx), 0);
    ck_assert_int_eq(gale_server_listen(f.srv, 0, "127.0.0.1"), 0);
    f.port = gale_server_port(f.srv);
    struct flood_client c = {.port = f.port};
    ck_assert(test_run_thread(loop, flood_read_late, &c, 20));
    ck_assert_int_eq(f.accepted, 1);
    ck_assert_uint_gt(c.got, 0);
    ck_assert_uint_lt(c.got, FLOOD);                /* the close cut the queue... */
    ck_assert_int_eq(c.end, SSL_ERROR_ZERO_RETURN); /* ...at a record, then close_notify */

    /* A loop freed while a close_notify still waits releases it (ASan: no leak, no fd left). */
    ck_assert(test_run_thread(loop, flood_connect_only, &f.port, 20));
    ck_assert_int_eq(f.accepted, 2);
    gale_server_free(f.srv);
    gale_tls_unref(ctx);
    gale_loop_free(loop);
    free(f.data);
}
END_TEST

/* ---- session resumption ---- */

struct resume_case {
    int port;
    int max_version; /* 0: TLS 1.3 */
    int resumed[3];
    bool served[3];
};

static void resume_client(void *arg)
{
    struct resume_case *r = arg;
    SSL_CTX *c = bctx("ca");
    if (r->max_version)
        SSL_CTX_set_max_proto_version(c, r->max_version);
    SSL_SESSION *sess = NULL;
    for (int i = 0; i < 3; i++) {
        SSL *ssl = bconnect(c, r->port, "localhost", sess);
        if (!ssl)
            break;
        char *resp = bexchange(ssl, GET_CLOSE, 4096); /* reading takes in the tickets too */
        r->served[i] = strstr(resp, "\r\n\r\nhttps") != NULL;
        free(resp);
        r->resumed[i] = SSL_session_reused(ssl);
        SSL_SESSION_free(sess);
        sess = SSL_get1_session(ssl);
        bclose(ssl);
    }
    SSL_SESSION_free(sess);
    SSL_CTX_free(c);
}

START_TEST(test_session_resumption)
{
    gale_loop *loop = new_loop();
    gale_tls_ctx *ctx = server_ctx("server", 10);
    int port;
    gale_http_server *srv = https_start(loop, ctx, 0, &port);
    struct resume_case r = {.port = port, .max_version = _i ? TLS1_2_VERSION : 0};
    ck_assert(test_run_thread(loop, resume_client, &r, 20)); /* tickets in TLS 1.3 and 1.2 */
    for (int i = 0; i < 3; i++)
        ck_assert(r.served[i]);
    ck_assert_int_eq(r.resumed[0], 0);
    ck_assert_int_eq(r.resumed[1], 1);
    ck_assert_int_eq(r.resumed[2], 1);
    https_stop(loop, srv);
    gale_tls_unref(ctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- reload ---- */

static void copy_file(const char *from, const char *to)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s.tmp' && mv '%s.tmp' '%s'", from, to, to, to);
    ck_assert_int_eq(system(cmd), 0);
}

struct line_echo {
    bool done;
    bool ok;
};

static void line_back(gale_stream *s, int status, const char *d, size_t n, void *arg)
{
    struct line_echo *l = arg;
    l->ok = status == 0 && n == 5 && memcmp(d, "ping\n", 5) == 0;
    l->done = true;
}

static bool line_done(void *arg) { return ((struct line_echo *)arg)->done; }

static bool echo_line(gale_loop *loop, gale_stream *s)
{
    struct line_echo l = {0};
    ck_assert_int_eq(gale_stream_read_until(s, "\n", 1, 0, line_back, &l), 0);
    ck_assert_int_eq(gale_stream_write(s, "ping\n", 5, NULL, NULL), 0);
    return test_wait_until(loop, line_done, &l, 10) && l.ok;
}

static int handshake_as(gale_loop *loop, int port, const char *host, gale_stream **keep)
{
    struct gclient g = {.ctx = client_ctx("ca", true), .host = host};
    int st = gclient_run(loop, &g, port);
    if (st == 0 && keep)
        *keep = g.s;
    else if (st == 0)
        gale_stream_close(g.s, 0);
    gale_tls_unref(g.ctx);
    return st;
}

START_TEST(test_reload_keeps_connections)
{
    gale_loop *loop = new_loop();
    copy_file(pem("server"), path("live.pem"));
    copy_file(key("server"), path("live.key"));
    gale_tls_ctx *sctx = server_ctx("live", 10);
    struct echo e;
    echo_start(loop, &e, sctx, ECHO_UNTIL);
    gale_stream *old = NULL;
    ck_assert_int_eq(handshake_as(loop, e.port, "localhost", &old), 0);
    ck_assert_int_eq(handshake_as(loop, e.port, "other.test", NULL), GALE_ECERT);

    copy_file(pem("other"), path("live.pem"));
    copy_file(key("other"), path("live.key"));
    ck_assert_int_eq(gale_tls_reload(sctx), 0);
    ck_assert_int_eq(handshake_as(loop, e.port, "other.test", NULL), 0);
    ck_assert_int_eq(handshake_as(loop, e.port, "localhost", NULL), GALE_ECERT);
    ck_assert(echo_line(loop, old)); /* the connection made before goes on */

    /* A broken file: the reload fails as a whole and the previous certificate stays. */
    FILE *f = fopen(path("live.key"), "w");
    fputs("not a key\n", f);
    fclose(f);
    ck_assert_int_eq(gale_tls_reload(sctx), GALE_ETLS);
    ck_assert_int_eq(handshake_as(loop, e.port, "other.test", NULL), 0);
    ck_assert(echo_line(loop, old));
    gale_stream_close(old, 0);
    test_run_for(loop, 0.05);
    echo_stop(loop, &e);
    gale_tls_unref(sctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- client certificates ---- */

START_TEST(test_client_certificate)
{
    gale_loop *loop = new_loop();
    gale_tls_opts so;
    gale_tls_opts_init(&so);
    so.certfile = pem("server");
    so.keyfile = key("server");
    so.ca_certs = pem("ca"); /* a client certificate signed by the test CA is required */
    gale_tls_ctx *sctx = NULL;
    ck_assert_int_eq(gale_tls_server_new(&so, &sctx), 0);
    struct echo e;
    echo_start(loop, &e, sctx, ECHO_UNTIL);

    gale_tls_opts co;
    gale_tls_opts_init(&co);
    co.ca_certs = pem("ca");
    co.certfile = pem("client");
    co.keyfile = key("client");
    struct gclient with = {.host = "localhost"};
    ck_assert_int_eq(gale_tls_client_new(&co, &with.ctx), 0);
    ck_assert_int_eq(gclient_run(loop, &with, e.port), 0);
    ck_assert(echo_line(loop, with.s));
    gale_stream_close(with.s, 0);

    /* Without one, TLS 1.3 finishes the client's side of the handshake first: the server's
     * refusal arrives as an alert on the first read. */
    struct gclient without = {
        .ctx = client_ctx("ca", true), .host = "localhost", .watch_close = true};
    int st = gclient_run(loop, &without, e.port);
    if (st == 0) {
        /* The alert may already have closed the stream (even freed it) while gclient_run waited;
         * otherwise it closes the stream under the first read. */
        struct line_echo l = {0};
        int rc =
            without.closed ? -EPIPE : gale_stream_read_until(without.s, "\n", 1, 0, line_back, &l);
        if (rc == 0) {
            ck_assert(test_wait_until(loop, line_done, &l, 10));
            ck_assert(!l.ok);
        } else {
            ck_assert_int_eq(rc, -EPIPE); /* closed, its close callback still to run */
        }
    }
    test_run_for(loop, 0.05);
    ck_assert_int_eq(e.open, 0);
    echo_stop(loop, &e);
    gale_tls_unref(with.ctx);
    gale_tls_unref(without.ctx);
    gale_tls_unref(sctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- hostile peers ---- */

/* The first `n` bytes of a real ClientHello. */
static size_t client_hello(char *buf, size_t n)
{
    SSL_CTX *c = bctx(NULL);
    SSL *ssl = SSL_new(c);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
    SSL_do_handshake(ssl);
    int got = BIO_read(out, buf, (int)n);
    SSL_free(ssl);
    SSL_CTX_free(c);
    ERR_clear_error();
    return got > 0 ? (size_t)got : 0;
}

/* Waits until the server closes `fd` (EOF or reset): true if it did within `secs`. */
static bool closed_by_server(int fd, double secs, char *seen, size_t seen_max)
{
    test_set_timeouts(fd, secs);
    size_t at = 0;
    for (;;) {
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0)
            return false; /* timed out */
        if (seen && at < seen_max) {
            size_t k = (size_t)n < seen_max - at ? (size_t)n : seen_max - at;
            memcpy(seen + at, buf, k);
            at += k;
        }
    }
}

#define HELD 200

struct hostile {
    int port;
    bool plain_closed, plain_answered, garbage_closed;
    int held_closed;
    bool served_while_held, silent_closed, reneg_refused, served_after;
};

static bool https_get_ok(int port)
{
    SSL_CTX *c = bctx("ca");
    SSL *ssl = bconnect(c, port, "localhost", NULL);
    bool ok = false;
    if (ssl) {
        char *resp = bexchange(ssl, GET_CLOSE, 4096);
        ok = strstr(resp, "HTTP/1.1 200 OK") && strstr(resp, "\r\n\r\nhttps");
        free(resp);
        bclose(ssl);
    }
    SSL_CTX_free(c);
    return ok;
}

static void hostile_client(void *arg)
{
    struct hostile *h = arg;
    /* Plain HTTP on the TLS port: closed, never answered as HTTP. */
    int fd = test_connect_tcp(h->port);
    test_write_all(fd, GET_CLOSE, strlen(GET_CLOSE));
    char seen[256] = {0};
    h->plain_closed = closed_by_server(fd, 5, seen, sizeof seen - 1);
    h->plain_answered = strstr(seen, "HTTP/") != NULL;
    close(fd);

    /* Random garbage. */
    fd = test_connect_tcp(h->port);
    char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)(i * 7919 + 13);
    test_write_all(fd, junk, sizeof junk);
    h->garbage_closed = closed_by_server(fd, 5, NULL, 0);
    close(fd);

    /* Hundreds of ClientHellos cut in the middle and held: others are still served, and the
     * handshake deadline closes every held one. */
    char hello[2048];
    size_t hlen = client_hello(hello, sizeof hello);
    int held[HELD];
    for (int i = 0; i < HELD; i++) {
        held[i] = test_connect_tcp(h->port);
        test_write_all(held[i], hello, hlen / 2);
    }
    h->served_while_held = https_get_ok(h->port);
    for (int i = 0; i < HELD; i++) {
        h->held_closed += closed_by_server(held[i], 5, NULL, 0);
        close(held[i]);
    }

    /* A reset in the middle of the handshake. */
    for (int i = 0; i < 20; i++) {
        fd = test_connect_tcp(h->port);
        test_write_all(fd, hello, hlen / 3);
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }

    /* A handshake, then silence: the idle deadline closes it. */
    SSL_CTX *c = bctx("ca");
    SSL *ssl = bconnect(c, h->port, "localhost", NULL);
    if (ssl) {
        h->silent_closed = closed_by_server(SSL_get_fd(ssl), 5, NULL, 0);
        bclose(ssl);
    }
    SSL_CTX_free(c);

    /* Renegotiation (TLS 1.2) is refused. */
    c = bctx("ca");
    SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    ssl = bconnect(c, h->port, "localhost", NULL);
    if (ssl) {
        bool started = SSL_renegotiate(ssl) == 1;
        int rc = SSL_do_handshake(ssl);
        char b[64];
        int n = SSL_read(ssl, b, sizeof b); /* the server's answer to the new hello */
        h->reneg_refused = started && (rc != 1 || n <= 0) && SSL_renegotiate_pending(ssl) != 0;
        ERR_clear_error();
        bclose(ssl);
    }
    SSL_CTX_free(c);

    h->served_after = https_get_ok(h->port);
}

struct srv_count {
    gale_http_server *srv;
};

static bool no_connections(void *arg)
{
    return gale_http_server_connections(((struct srv_count *)arg)->srv) == 0;
}

START_TEST(test_hostile_peers)
{
    gale_loop *loop = new_loop();
    gale_tls_ctx *ctx = server_ctx("server", 1.0);
    int port;
    struct srv_count sc = {https_start(loop, ctx, 1.5, &port)};
    struct hostile h = {.port = port};
    ck_assert(test_run_thread(loop, hostile_client, &h, 90));
    ck_assert(h.plain_closed);
    ck_assert(!h.plain_answered);
    ck_assert(h.garbage_closed);
    ck_assert(h.served_while_held);
    ck_assert_int_eq(h.held_closed, HELD);
    ck_assert(h.silent_closed);
    ck_assert(h.reneg_refused);
    ck_assert(h.served_after);
    ck_assert(test_wait_until(loop, no_connections, &sc, 10)); /* the resets too */
    gale_http_server_free(sc.srv);
    gale_tls_unref(ctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- misuse ---- */

START_TEST(test_bad_arguments)
{
    gale_tls_opts o;
    gale_tls_opts_init(&o);
    ck_assert(o.validate_cert);
    ck_assert(o.handshake_timeout == 10.0);
    gale_tls_ctx *c = NULL;
    ck_assert_int_eq(gale_tls_server_new(&o, &c), -EINVAL); /* no certificate */
    o.certfile = path("nothing-here.pem");
    ck_assert_int_eq(gale_tls_server_new(&o, &c), GALE_ETLS);
    o.certfile = pem("server");
    o.keyfile = key("other"); /* not this certificate's key */
    ck_assert_int_eq(gale_tls_server_new(&o, &c), GALE_ETLS);
    o.keyfile = key("server");
    o.alpn = "http/1.1,,h2";
    ck_assert_int_eq(gale_tls_server_new(&o, &c), -EINVAL);
    o.alpn = NULL;
    ck_assert_int_eq(gale_tls_server_new(&o, &c), 0);
    ck_assert(gale_tls_is_server(c));
    ck_assert_int_eq(gale_tls_add_sni(c, "", pem("other"), NULL), -EINVAL);

    gale_tls_ctx *client = client_ctx("ca", true);
    ck_assert_int_eq(gale_tls_reload(client), -EINVAL);
    ck_assert_int_eq(gale_tls_add_sni(client, "a", pem("other"), NULL), -EINVAL);

    gale_loop *loop = new_loop();
    gale_server *srv = NULL;
    ck_assert_int_eq(gale_server_new(loop, echo_accept, NULL, &srv), 0);
    ck_assert_int_eq(gale_server_set_tls(srv, client), -EINVAL);
    gale_server_free(srv);

    /* start_tls only on a connected stream with nothing under way. */
    struct echo e;
    echo_start(loop, &e, c, ECHO_UNTIL);
    struct gclient g = {.ctx = client, .host = "localhost"};
    ck_assert_int_eq(gclient_run(loop, &g, e.port), 0);
    ck_assert_int_eq(gale_stream_start_tls(g.s, client, "localhost", NULL, NULL), GALE_ESTATE);
    ck_assert_int_eq(gale_stream_start_tls(g.s, NULL, NULL, NULL, NULL), -EINVAL);
    ck_assert(gale_stream_is_tls(g.s));
    ck_assert_str_eq(gale_stream_tls_alpn(g.s), ""); /* the client offered none */
    ck_assert_ptr_nonnull(strstr(gale_stream_tls_version(g.s), "TLSv1."));
    gale_stream_close(g.s, 0);
    test_run_for(loop, 0.05);
    echo_stop(loop, &e);
    gale_tls_unref(client);
    gale_tls_unref(c);
    gale_loop_free(loop);
}
END_TEST

/* ---- gale_tcp_connect_tls ---- */

struct tcp_tls {
    bool done;
    int status;
    gale_stream *s;
};

static void tcp_tls_done(gale_stream *s, int status, void *arg)
{
    struct tcp_tls *t = arg;
    t->done = true;
    t->status = status;
    t->s = s;
}

static bool tcp_tls_finished(void *arg) { return ((struct tcp_tls *)arg)->done; }

static bool future_finished(void *arg) { return gale_future_done(arg); }

START_TEST(test_tcp_connect_tls)
{
    gale_loop *loop = new_loop();
    gale_tls_ctx *sctx = server_ctx("server", 10);
    gale_tls_ctx *cctx = client_ctx("ca", true);
    struct echo e;
    echo_start(loop, &e, sctx, ECHO_UNTIL);
    struct tcp_tls t = {0};
    ck_assert_int_eq(gale_tcp_connect_tls(loop, "localhost", e.port, 10, cctx, tcp_tls_done, &t),
                     0);
    ck_assert(test_wait_until(loop, tcp_tls_finished, &t, 10));
    ck_assert_int_eq(t.status, 0);
    ck_assert(gale_stream_is_tls(t.s));
    ck_assert(echo_line(loop, t.s));
    gale_stream_close(t.s, 0);

    gale_future *f = gale_tcp_connect_tls_future(loop, "127.0.0.1", e.port, 10, cctx);
    ck_assert(test_wait_until(loop, future_finished, f, 10));
    ck_assert_int_eq(gale_future_error(f), 0);
    gale_stream *fs = gale_future_steal_result(f);
    ck_assert(echo_line(loop, fs));
    gale_stream_close(fs, 0);
    gale_future_unref(f);

    /* An issuer the client does not trust: no stream, the verification error. */
    gale_tls_ctx *other = client_ctx("otherca", true);
    struct tcp_tls bad = {0};
    ck_assert_int_eq(gale_tcp_connect_tls(loop, "localhost", e.port, 10, other, tcp_tls_done, &bad),
                     0);
    ck_assert(test_wait_until(loop, tcp_tls_finished, &bad, 10));
    ck_assert_int_eq(bad.status, GALE_ECERT);
    ck_assert_ptr_null(bad.s);
    ck_assert_int_eq(gale_tcp_connect_tls(loop, "localhost", e.port, 10, sctx, tcp_tls_done, &bad),
                     -EINVAL);
    echo_stop(loop, &e);
    gale_tls_unref(other);
    gale_tls_unref(cctx);
    gale_tls_unref(sctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- the HTTP client over https ---- */

struct fetched {
    bool done;
    int error;
    int code;
    bool reused;
    char body[64];
    char message[200];
};

static void fetched_cb(gale_http_client_response *r, void *arg)
{
    struct fetched *f = arg;
    f->done = true;
    f->error = r->error;
    f->code = r->code;
    f->reused = r->reused_connection;
    snprintf(f->body, sizeof f->body, "%s", r->body ? r->body : "");
    snprintf(f->message, sizeof f->message, "%s", r->error_message ? r->error_message : "");
}

static bool fetched_done(void *arg) { return ((struct fetched *)arg)->done; }

static struct fetched fetch_one(gale_loop *loop, gale_http_client *c, const char *url,
                                const char *ca, bool validate)
{
    gale_http_client_request req;
    gale_http_client_request_init(&req, url);
    req.ca_certs = ca ? pem(ca) : NULL;
    req.validate_cert = validate;
    req.raise_error = false;
    struct fetched f = {0};
    ck_assert_int_eq(gale_http_fetch(c, &req, fetched_cb, &f), 0);
    ck_assert(test_wait_until(loop, fetched_done, &f, 20));
    return f;
}

START_TEST(test_http_client_https)
{
    gale_loop *loop = new_loop();
    int port, self_port, other_port;
    gale_tls_ctx *ctx = server_ctx("chain", 10), *self = server_ctx("self", 10),
                 *other = server_ctx("other", 10);
    gale_http_server *srv = https_start(loop, ctx, 0, &port);
    gale_http_server *self_srv = https_start(loop, self, 0, &self_port);
    gale_http_server *other_srv = https_start(loop, other, 0, &other_port);
    gale_http_client *c = NULL;
    ck_assert_int_eq(gale_http_client_new(loop, NULL, &c), 0);
    char url[128];

    snprintf(url, sizeof url, "https://localhost:%d/", port);
    struct fetched f = fetch_one(loop, c, url, "ca", true);
    ck_assert_msg(f.error == 0, "%s", f.message);
    ck_assert_int_eq(f.code, 200);
    ck_assert_str_eq(f.body, "https");
    ck_assert(!f.reused);
    f = fetch_one(loop, c, url, "ca", true); /* the pooled TLS connection serves the next one */
    ck_assert_int_eq(f.error, 0);
    ck_assert(f.reused);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/", port);
    f = fetch_one(loop, c, url, "ca", true); /* the certificate's IP entry */
    ck_assert_msg(f.error == 0, "%s", f.message);
    ck_assert(!f.reused);

    snprintf(url, sizeof url, "https://localhost:%d/", self_port);
    f = fetch_one(loop, c, url, "ca", true);
    ck_assert_int_eq(f.error, GALE_ECERT);
    ck_assert_msg(strstr(f.message, "certificate verify failed: self-signed certificate"), "%s",
                  f.message);
    f = fetch_one(loop, c, url, NULL, false); /* validate_cert = false */
    ck_assert_msg(f.error == 0, "%s", f.message);
    ck_assert_str_eq(f.body, "https");

    snprintf(url, sizeof url, "https://localhost:%d/", other_port);
    f = fetch_one(loop, c, url, "ca", true);
    ck_assert_int_eq(f.error, GALE_ECERT);
    ck_assert_msg(strstr(f.message, "hostname mismatch"), "%s", f.message);

    /* Plain HTTP to a TLS port is not an answer. */
    snprintf(url, sizeof url, "http://localhost:%d/", port);
    f = fetch_one(loop, c, url, NULL, true);
    ck_assert_int_ne(f.error, 0);
    gale_http_client_free(c);
    test_run_for(loop, 0.05);
    https_stop(loop, srv);
    https_stop(loop, self_srv);
    https_stop(loop, other_srv);
    gale_tls_unref(ctx);
    gale_tls_unref(self);
    gale_tls_unref(other);
    gale_loop_free(loop);
}
END_TEST

/* fetch verifies by default, says why it refuses, and takes --cacert and --insecure. */
START_TEST(test_fetch_app_https)
{
    gale_loop *loop = new_loop();
    int port = test_free_port();
    char portstr[16], url[64];
    snprintf(portstr, sizeof portstr, "%d", port);
    snprintf(url, sizeof url, "https://localhost:%d/", port);
    char *hello[] = {"hello",
                     "--port",
                     portstr,
                     "--certfile",
                     (char *)pem("server"),
                     "--keyfile",
                     (char *)key("server"),
                     "--quiet",
                     NULL};
    pid_t pid = test_start_app("hello", hello, port);
    ck_assert_int_gt(pid, 0);
    struct {
        char *argv[6];
        int status;
        const char *out, *err;
    } runs[] = {
        {{"fetch", url, NULL}, 1, "", "certificate verify failed: unable to get local issuer"},
        {{"fetch", "--cacert", (char *)pem("ca"), url, NULL}, 0, "Hello, world!", "200 OK"},
        {{"fetch", "--insecure", url, NULL}, 0, "Hello, world!", "200 OK"},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        int out[2], err[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, out), 0);
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, err), 0);
        pid_t f = test_spawn_app("fetch", runs[i].argv, out[1], err[1]);
        close(out[1]);
        close(err[1]);
        size_t n;
        char *o = test_read_all(out[0], 65536, &n), *e = test_read_all(err[0], 65536, &n);
        int status;
        ck_assert_int_eq(waitpid(f, &status, 0), f);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == runs[i].status, "run %zu: %s", i,
                      e);
        ck_assert_str_eq(o, runs[i].out);
        ck_assert_msg(strstr(e, runs[i].err), "run %zu: %s", i, e);
        free(o);
        free(e);
        close(out[0]);
        close(err[0]);
    }
    test_stop_app(pid);
    gale_loop_free(loop);
}
END_TEST

/* ---- wss:// ---- */

struct wss {
    bool done;
    int status;
    gale_ws *ws;
};

static void wss_connected(gale_ws *ws, int status, void *arg)
{
    struct wss *w = arg;
    w->done = true;
    w->status = status;
    w->ws = ws;
}

static bool wss_done(void *arg) { return ((struct wss *)arg)->done; }

/* The demo's WebSocket echo over HTTPS, with gale's WebSocket client over TLS. */
START_TEST(test_websocket_over_tls)
{
    gale_loop *loop = new_loop();
    int port = test_free_port();
    char portstr[16], url[64];
    snprintf(portstr, sizeof portstr, "%d", port);
    snprintf(url, sizeof url, "wss://localhost:%d/ws", port);
    char *argv[] = {"demo",
                    "--port",
                    portstr,
                    "--certfile",
                    (char *)pem("chain"),
                    "--keyfile",
                    (char *)key("server"),
                    "--quiet",
                    NULL};
    pid_t pid = test_start_app("demo", argv, port);
    ck_assert_int_gt(pid, 0);
    gale_tls_ctx *cctx = client_ctx("ca", true);
    gale_ws_connect_opts o = {.tls = cctx, .compression = true};
    struct wss w = {0};
    ck_assert_int_eq(gale_ws_connect(loop, url, &o, wss_connected, &w), 0);
    ck_assert(test_wait_until(loop, wss_done, &w, 20));
    ck_assert_int_eq(w.status, 0);
    ck_assert_int_eq(gale_ws_write(w.ws, "over tls", 8, false, NULL, NULL), 0);
    gale_future *f = gale_ws_read_message(w.ws);
    ck_assert(test_wait_until(loop, future_finished, f, 20));
    ck_assert_int_eq(gale_future_error(f), 0);
    const gale_ws_message *m = gale_future_result(f);
    ck_assert_str_eq(m->data, "over tls");
    gale_future_unref(f);
    gale_ws_close(w.ws, 1000, NULL);
    test_run_for(loop, 0.1);
    gale_ws_unref(w.ws);

    /* The system's CAs do not know the test CA: refused, with no connection. */
    struct wss bad = {0};
    ck_assert_int_eq(gale_ws_connect(loop, url, NULL, wss_connected, &bad), 0);
    ck_assert(test_wait_until(loop, wss_done, &bad, 20));
    ck_assert_int_eq(bad.status, GALE_ECERT);
    ck_assert_ptr_null(bad.ws);
    test_stop_app(pid);
    gale_tls_unref(cctx);
    gale_loop_free(loop);
}
END_TEST

/* ---- the apps ---- */

struct app_get {
    int port;
    const char *host;
    bool ok;
    char body[64];
};

static void app_get_client(void *arg)
{
    struct app_get *a = arg;
    SSL_CTX *c = bctx("ca");
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    SSL *ssl = NULL;
    int fd = test_connect_tcp(a->port);
    if (fd >= 0) {
        test_set_timeouts(fd, 10);
        ssl = SSL_new(c);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, a->host);
        SSL_set1_host(ssl, a->host);
        if (SSL_connect(ssl) == 1) {
            char *resp = bexchange(ssl, GET_CLOSE, 4096);
            char *body = strstr(resp, "\r\n\r\n");
            a->ok = strstr(resp, "HTTP/1.1 200 OK") != NULL;
            if (body)
                snprintf(a->body, sizeof a->body, "%s", body + 4);
            free(resp);
            SSL_shutdown(ssl);
        }
        SSL_free(ssl);
        close(fd);
    }
    ERR_clear_error();
    SSL_CTX_free(c);
}

static bool app_get(gale_loop *loop, int port, const char *host, char *body)
{
    struct app_get a = {.port = port, .host = host};
    ck_assert(test_run_thread(loop, app_get_client, &a, 20));
    if (body)
        strcpy(body, a.body);
    return a.ok;
}

START_TEST(test_hello_https_and_sighup)
{
    gale_loop *loop = new_loop();
    copy_file(pem("server"), path("app.pem"));
    copy_file(key("server"), path("app.key"));
    int port = test_free_port();
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    char *argv[] = {"hello",
                    "--port",
                    portstr,
                    "--certfile",
                    (char *)path("app.pem"),
                    "--keyfile",
                    (char *)path("app.key"),
                    "--quiet",
                    NULL};
    pid_t pid = test_start_app("hello", argv, port);
    ck_assert_int_gt(pid, 0);
    char body[64];
    ck_assert(app_get(loop, port, "localhost", body));
    ck_assert_str_eq(body, "Hello, world!");
    ck_assert(!app_get(loop, port, "other.test", NULL));

    copy_file(pem("other"), path("app.pem"));
    copy_file(key("other"), path("app.key"));
    ck_assert_int_eq(kill(pid, SIGHUP), 0);
    bool reloaded = false;
    for (int i = 0; i < 100 && !reloaded; i++) {
        reloaded = app_get(loop, port, "other.test", body);
        if (!reloaded)
            usleep(20000);
    }
    ck_assert(reloaded);
    ck_assert_str_eq(body, "Hello, world!");
    int status = test_stop_app(pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* A certificate that cannot be loaded: said on stderr, exit status 1. */
    int errpipe[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, errpipe), 0);
    char *bad[] = {"hello", "--port", portstr, "--certfile", (char *)path("nothing.pem"), NULL};
    pid = test_spawn_app("hello", bad, -1, errpipe[1]);
    close(errpipe[1]);
    size_t len = 0;
    char *err = test_read_all(errpipe[0], 65536, &len);
    close(errpipe[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    ck_assert_msg(strstr(err, "nothing.pem"), "stderr: %s", err);
    free(err);
    gale_loop_free(loop);
}
END_TEST

struct demo_case {
    int port;
    const char *req;
    char *resp;
    size_t max; /* bytes read at most (0: 64 KiB) */
};

static void demo_client(void *arg)
{
    struct demo_case *d = arg;
    SSL_CTX *c = bctx("ca");
    SSL *ssl = bconnect(c, d->port, "localhost", NULL);
    if (ssl) {
        d->resp = bexchange(ssl, d->req, d->max ? d->max : 65536);
        bclose(ssl);
    }
    SSL_CTX_free(c);
}

/* demo serves every route over HTTPS: a path argument, a body, a streamed (chunked) answer. */
START_TEST(test_demo_https)
{
    gale_loop *loop = new_loop();
    int port = test_free_port();
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    char *argv[] = {"demo",
                    "--port",
                    portstr,
                    "--certfile",
                    (char *)pem("chain"),
                    "--keyfile",
                    (char *)key("server"),
                    NULL};
    pid_t pid = test_start_app("demo", argv, port);
    ck_assert_int_gt(pid, 0);
    const struct {
        const char *req, *want;
    } cases[] = {
        {"GET /user/42 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", "42"},
        {"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\nConnection: "
         "close\r\n\r\nhello world",
         "hello world"},
        {"GET /stream?chunks=3 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
         "chunk 3\n"},
        {"GET /status/404 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
         "HTTP/1.1 404"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct demo_case d = {.port = port, .req = cases[i].req};
        ck_assert(test_run_thread(loop, demo_client, &d, 20));
        ck_assert_ptr_nonnull(d.resp);
        ck_assert_msg(strstr(d.resp, cases[i].want), "%s: %s", cases[i].req, d.resp);
        free(d.resp);
    }
    int status = test_stop_app(pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    gale_loop_free(loop);
}
END_TEST

/* Static files over HTTPS: the file range goes through OpenSSL (no sendfile), whole and in part. */
START_TEST(test_static_files_over_tls)
{
    gale_loop *loop = new_loop();
    char dir[160], file[200];
    snprintf(dir, sizeof dir, "%s/static", certdir);
    ck_assert_int_eq(mkdir(dir, 0755) == 0 || errno == EEXIST, 1);
    snprintf(file, sizeof file, "%s/big.bin", dir);
    enum { SIZE = 300000 };
    char *data = malloc(SIZE);
    for (size_t i = 0; i < SIZE; i++)
        data[i] = (char)('a' + i * 7 % 26);
    FILE *f = fopen(file, "wb");
    ck_assert_uint_eq(fwrite(data, 1, SIZE, f), SIZE);
    fclose(f);
    int port = test_free_port();
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    char *argv[] = {"demo",
                    "--port",
                    portstr,
                    "--certfile",
                    (char *)pem("chain"),
                    "--keyfile",
                    (char *)key("server"),
                    "--static-path",
                    dir,
                    "--quiet",
                    NULL};
    pid_t pid = test_start_app("demo", argv, port);
    ck_assert_int_gt(pid, 0);
    struct demo_case whole = {.port = port,
                              .max = 2 * SIZE,
                              .req = "GET /static/big.bin HTTP/1.1\r\nHost: localhost\r\n"
                                     "Connection: close\r\n\r\n"};
    ck_assert(test_run_thread(loop, demo_client, &whole, 30));
    ck_assert_ptr_nonnull(whole.resp);
    char *body = strstr(whole.resp, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    ck_assert_ptr_nonnull(strstr(whole.resp, "HTTP/1.1 200 OK"));
    ck_assert_uint_eq(strlen(body + 4), SIZE); /* the file holds no NUL */
    ck_assert_int_eq(memcmp(body + 4, data, SIZE), 0);
    free(whole.resp);
    struct demo_case part = {.port = port,
                             .req = "GET /static/big.bin HTTP/1.1\r\nHost: localhost\r\n"
                                    "Range: bytes=100000-100009\r\nConnection: close\r\n\r\n"};
    ck_assert(test_run_thread(loop, demo_client, &part, 30));
    ck_assert_ptr_nonnull(strstr(part.resp, "HTTP/1.1 206"));
    body = strstr(part.resp, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    ck_assert_int_eq(memcmp(body + 4, data + 100000, 10), 0);
    free(part.resp);
    test_stop_app(pid);
    free(data);
    gale_loop_free(loop);
}
END_TEST

static Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");
    tcase_set_timeout(tc, 120);
    if (getenv("ONLY")) {
        tcase_add_test(tc, test_client_certificate);
        tcase_add_loop_test(tc, test_session_resumption, 0, 2);
        suite_add_tcase(s, tc);
        return s;
    }
    tcase_add_test(tc, test_https_request);
    tcase_add_loop_test(tc, test_records_cut_at_every_byte, ECHO_UNTIL, ECHO_SOME + 1);
    tcase_add_test(tc, test_large_transfers_back_pressure);
    tcase_add_test(tc, test_close_notify_waits_for_socket);
    tcase_add_loop_test(tc, test_verification, 0,
                        (int)(sizeof verify_cases / sizeof verify_cases[0]));
    tcase_add_test(tc, test_sni_chooses_certificate);
    tcase_add_loop_test(tc, test_session_resumption, 0, 2);
    tcase_add_test(tc, test_reload_keeps_connections);
    tcase_add_test(tc, test_client_certificate);
    tcase_add_test(tc, test_hostile_peers);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_tcp_connect_tls);
    tcase_add_test(tc, test_hello_https_and_sighup);
    tcase_add_test(tc, test_demo_https);
    tcase_add_test(tc, test_http_client_https);
    tcase_add_test(tc, test_fetch_app_https);
    tcase_add_test(tc, test_websocket_over_tls);
    tcase_add_test(tc, test_static_files_over_tls);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* the blocking OpenSSL peers write to sockets the server closes */
    if (!mkdtemp(certdir)) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    const char *src = getenv("GALE_SOURCE_DIR");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "sh '%s/tests/tls_certs.sh' '%s'", src ? src : ".", certdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot make the test certificates (is openssl installed?)\n");
        return EXIT_FAILURE;
    }
    SRunner *sr = srunner_create(tls_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", certdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", certdir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#else /* built without TLS: the calls say so */

START_TEST(test_without_tls)
{
    ck_assert(!gale_tls_available());
    gale_tls_opts o;
    gale_tls_opts_init(&o);
    o.certfile = "server.pem";
    gale_tls_ctx *c = NULL;
    ck_assert_int_eq(gale_tls_server_new(&o, &c), -ENOTSUP);
    ck_assert_int_eq(gale_tls_client_new(&o, &c), -ENOTSUP);
    gale_loop *loop = NULL;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    gale_stream *s = NULL;
    ck_assert_int_eq(gale_stream_new(loop, sv[0], &s), 0);
    ck_assert_int_eq(gale_stream_start_tls(s, (gale_tls_ctx *)&o, NULL, NULL, NULL), -ENOTSUP);
    gale_stream_close(s, 0);
    test_run_for(loop, 0.01);
    close(sv[1]);
    gale_loop_free(loop);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("without");
    tcase_add_test(tc, test_without_tls);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif

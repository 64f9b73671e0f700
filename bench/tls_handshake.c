/* Full TLS handshakes against an HTTPS server, one request each, for the server's CPU per
 * handshake (bench/tls_bench.sh reads the server's CPU time around a run).
 *
 *     tls_handshake PORT [SECONDS] [CONNS] [ALPN]       (SECONDS = 3, CONNS = 16, ALPN = none)
 *
 * Keeps CONNS connections in flight on one epoll loop. Each connects to 127.0.0.1:PORT, runs a
 * fresh TLS handshake (a new SSL object every time, no session or ticket offered: the client's
 * session cache is off, so every handshake is a full one, which SSL_session_reused() == 0
 * confirms), sends "GET / HTTP/1.1" with "Connection: close", checks the response is a 200 whose
 * body is "Hello, world!", waits for the server's close (so the server's TIME_WAIT sockets, not
 * the client's ports, pile up) and starts over. ALPN, when given (e.g. "http/1.1"), is offered
 * on every handshake. After SECONDS it prints
 *
 *     handshakes=N seconds=S rate=R resumed=0 errors=0 version=TLSv1.3
 *     cipher=TLS_AES_256_GCM_SHA384 group=X25519 alpn=http/1.1
 *
 * (one line) and exits 0 when no handshake failed or was resumed. Wants (want_read/want_write)
 * are turned into epoll interest; everything is non-blocking.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
static const char BODY[] = "Hello, world!";

enum phase { CONNECTING, HANDSHAKE, SENDING, READING, CLOSING };

struct conn {
    int fd;
    SSL *ssl;
    enum phase phase;
    size_t sent;
    char buf[2048];
    size_t got;
    bool answered;
};

static struct {
    SSL_CTX *ctx;
    int ep;
    struct sockaddr_in addr;
    long handshakes, resumed, errors;
    char version[32], cipher[64], group[32], alpn[32];
} B;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void fail(struct conn *c, const char *what)
{
    if (B.errors++ < 5) {
        char e[256] = "";
        unsigned long code = ERR_get_error();
        if (code)
            ERR_error_string_n(code, e, sizeof e);
        fprintf(stderr, "tls_handshake: %s%s%s\n", what, *e ? ": " : "", e);
    }
    ERR_clear_error();
    (void)c;
}

static void conn_end(struct conn *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void set_interest(struct conn *c, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(B.ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail(c, "epoll_ctl");
}

/* Starts a new connection in `c`. Returns false when even the socket cannot be had. */
static bool conn_start(struct conn *c)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return false;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->phase = CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&B.addr, sizeof B.addr) < 0 && errno != EINPROGRESS) {
        fail(c, strerror(errno));
        close(c->fd);
        return false;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(B.ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        close(c->fd);
        return false;
    }
    return true;
}

/* Maps SSL's want to epoll interest; returns false on a real failure. */
static bool want(struct conn *c, int rc, const char *what)
{
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        set_interest(c, EPOLLIN);
        return true;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        set_interest(c, EPOLLOUT);
        return true;
    }
    fail(c, what);
    return false;
}

static void note_first(struct conn *c)
{
    if (B.version[0])
        return;
    snprintf(B.version, sizeof B.version, "%s", SSL_get_version(c->ssl));
    snprintf(B.cipher, sizeof B.cipher, "%s", SSL_get_cipher_name(c->ssl));
    int nid = SSL_get_negotiated_group(c->ssl);
    const char *g = nid ? OBJ_nid2sn(nid) : NULL;
    snprintf(B.group, sizeof B.group, "%s", g ? g : "?");
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &len);
    snprintf(B.alpn, sizeof B.alpn, "%.*s", (int)len, len ? (const char *)p : "");
}

/* A complete response: 200, Content-Length, the body. Returns 1 done, 0 more to read, -1 bad. */
static int response_state(struct conn *c)
{
    c->buf[c->got] = '\0';
    const char *end = strstr(c->buf, "\r\n\r\n");
    if (!end)
        return c->got + 1 >= sizeof c->buf ? -1 : 0;
    if (strncmp(c->buf, "HTTP/1.1 200", 12) != 0)
        return -1;
    const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
    if (!cl || cl > end || strtoul(cl + 17, NULL, 10) != sizeof BODY - 1)
        return -1;
    size_t head = (size_t)(end + 4 - c->buf);
    if (c->got < head + sizeof BODY - 1)
        return 0;
    return memcmp(end + 4, BODY, sizeof BODY - 1) == 0 ? 1 : -1;
}

/* Advances `c` as far as it goes; returns false when it finished (well or not). */
static bool conn_step(struct conn *c)
{
    int rc;
    switch (c->phase) {
    case CONNECTING: {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            fail(c, strerror(err));
            return false;
        }
        c->ssl = SSL_new(B.ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
            fail(c, "SSL_new");
            return false;
        }
        SSL_set_connect_state(c->ssl);
        c->phase = HANDSHAKE;
    } /* fall through */
    case HANDSHAKE:
        rc = SSL_do_handshake(c->ssl);
        if (rc != 1)
            return want(c, rc, "handshake");
        B.handshakes++;
        if (SSL_session_reused(c->ssl))
            B.resumed++;
        note_first(c);
        c->phase = SENDING; /* fall through */
    case SENDING:
        while (c->sent < sizeof REQUEST - 1) {
            size_t w = 0;
            rc = SSL_write_ex(c->ssl, REQUEST + c->sent, sizeof REQUEST - 1 - c->sent, &w);
            if (rc != 1)
                return want(c, rc, "write");
            c->sent += w;
        }
        c->phase = READING; /* fall through */
    case READING:
    case CLOSING:
        for (;;) {
            size_t n = 0;
            char sink[512];
            bool reading = c->phase == READING;
            rc = reading ? SSL_read_ex(c->ssl, c->buf + c->got, sizeof c->buf - 1 - c->got, &n)
                         : SSL_read_ex(c->ssl, sink, sizeof sink, &n);
            if (rc != 1) {
                int e = SSL_get_error(c->ssl, rc);
                if (!reading &&
                    (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL)) {
                    ERR_clear_error(); /* the server's close, with or without close_notify */
                    return false;
                }
                return want(c, rc, reading ? "read: no complete response" : "read");
            }
            if (!reading) {
                fail(c, "bytes after the response");
                return false;
            }
            c->got += n;
            int st = response_state(c);
            if (st < 0) {
                fail(c, "not a 200 \"Hello, world!\" response");
                return false;
            }
            if (st == 1)
                c->phase = CLOSING;
        }
    }
    return false;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [SECONDS] [CONNS] [ALPN]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    double secs = argc > 2 ? atof(argv[2]) : 3.0;
    int nconns = argc > 3 ? atoi(argv[3]) : 16;
    const char *alpn = argc > 4 ? argv[4] : NULL;
    if (port <= 0 || port > 65535 || !(secs > 0) || nconns <= 0 || nconns > 4096 ||
        (alpn && (!*alpn || strlen(alpn) > 200))) {
        fprintf(stderr, "tls_handshake: bad arguments\n");
        return 2;
    }
    B.addr = (struct sockaddr_in){.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    B.ctx = SSL_CTX_new(TLS_client_method());
    if (!B.ctx)
        return 1;
    SSL_CTX_set_session_cache_mode(B.ctx, SSL_SESS_CACHE_OFF); /* never offer a session */
    SSL_CTX_set_verify(B.ctx, SSL_VERIFY_NONE, NULL); /* the script's self-signed certificate */
    if (alpn) {
        unsigned char wire[256];
        wire[0] = (unsigned char)strlen(alpn);
        memcpy(wire + 1, alpn, wire[0]);
        SSL_CTX_set_alpn_protos(B.ctx, wire, wire[0] + 1u);
    }
    B.ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *conns = calloc((size_t)nconns, sizeof *conns);
    if (B.ep < 0 || !conns)
        return 1;
    for (int i = 0; i < nconns; i++)
        if (!conn_start(&conns[i]))
            return 1;

    double start = now(), stop = start + secs;
    struct epoll_event evs[64];
    while (now() < stop && B.errors == 0) {
        int n = epoll_wait(B.ep, evs, 64, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (conn_step(c))
                continue;
            conn_end(c);
            if (!conn_start(c)) {
                fail(c, "cannot open a connection");
                break;
            }
        }
    }
    double took = now() - start;
    printf("handshakes=%ld seconds=%.3f rate=%.0f resumed=%ld errors=%ld version=%s cipher=%s "
           "group=%s alpn=%s\n",
           B.handshakes, took, B.handshakes / took, B.resumed, B.errors, B.version, B.cipher,
           B.group, B.alpn[0] ? B.alpn : "none");
    for (int i = 0; i < nconns; i++)
        conn_end(&conns[i]);
    free(conns);
    close(B.ep);
    SSL_CTX_free(B.ctx);
    return B.errors == 0 && B.resumed == 0 && B.handshakes > 0 ? 0 : 1;
}

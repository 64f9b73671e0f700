/* Memory per idle keep-alive HTTPS connection, as the server's resident set sees it: the TLS
 * form of bench/idle_conns.c.
 *
 *     tls_idle_conns PORT PID [N] [IDLE_SECONDS] [ALPN]     (N = 2000, IDLE_SECONDS = 2)
 *
 * Warms the server up with one HTTPS request, reads its VmRSS from /proc/PID/status, then opens
 * N connections to 127.0.0.1:PORT, each with a full TLS handshake (ALPN offered when given),
 * one "GET /" and its whole response read, so each is a real keep-alive TLS connection that
 * has served a request. It leaves them idle for IDLE_SECONDS, reads VmRSS again, checks that
 * the server closed none of them, and prints
 *
 *     conns=2000 open=2000 rss_before_kib=... rss_after_kib=... bytes_per_conn=... version=...
 *
 * Raises its own RLIMIT_NOFILE soft limit to fit N; the server needs the same. Kernel socket
 * memory is not in the RSS: this measures what the server process allocates per connection.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "idle_util.h"

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

struct tls_conn {
    int fd;
    SSL *ssl;
};

static void conn_close(struct tls_conn *c)
{
    SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    c->ssl = NULL;
    c->fd = -1;
}

/* Reads one complete 200 response. Returns 0 or -1. */
static int read_response(SSL *ssl)
{
    char buf[4096];
    size_t n = 0;
    for (;;) {
        size_t r = 0;
        if (SSL_read_ex(ssl, buf + n, sizeof buf - 1 - n, &r) != 1)
            return -1;
        n += r;
        buf[n] = '\0';
        int done = response_done(buf, n, sizeof buf);
        if (done != 0)
            return done > 0 ? 0 : -1;
    }
}

/* Connects, handshakes, sends one request and reads its response. Returns 0 or -1 (c closed). */
static int open_served(SSL_CTX *ctx, int port, struct tls_conn *c)
{
    c->ssl = NULL;
    c->fd = connect_loopback(port);
    if (c->fd < 0)
        return -1;
    c->ssl = SSL_new(ctx);
    size_t w = 0;
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 || SSL_connect(c->ssl) != 1 ||
        SSL_write_ex(c->ssl, REQUEST, sizeof REQUEST - 1, &w) != 1 || read_response(c->ssl) < 0) {
        ERR_print_errors_fp(stderr);
        conn_close(c);
        return -1;
    }
    return 0;
}

static SSL_CTX *client_ctx(const char *alpn)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* the client's own memory, N times */
    if (alpn) {
        unsigned char wire[256];
        wire[0] = (unsigned char)strlen(alpn);
        memcpy(wire + 1, alpn, wire[0]);
        SSL_CTX_set_alpn_protos(ctx, wire, wire[0] + 1u);
    }
    return ctx;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s PORT PID [N] [IDLE_SECONDS] [ALPN]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int pid = atoi(argv[2]);
    int n = argc > 3 ? atoi(argv[3]) : 2000;
    double idle = argc > 4 ? atof(argv[4]) : 2.0;
    const char *alpn = argc > 5 ? argv[5] : NULL;
    if (port <= 0 || pid <= 0 || n <= 0 || (alpn && (!*alpn || strlen(alpn) > 200))) {
        fprintf(stderr, "tls_idle_conns: bad arguments\n");
        return 2;
    }
    fit_nofile(n);
    SSL_CTX *ctx = client_ctx(alpn);
    struct tls_conn *conns = calloc((size_t)n, sizeof *conns);
    if (!ctx || !conns)
        return 1;

    struct tls_conn warm;
    if (open_served(ctx, port, &warm) < 0) {
        fprintf(stderr, "tls_idle_conns: warm-up request to port %d failed\n", port);
        return 1;
    }
    char version[32];
    snprintf(version, sizeof version, "%s/%s", SSL_get_version(warm.ssl),
             SSL_get_cipher_name(warm.ssl));
    conn_close(&warm);
    sleep_s(0.5);
    long before = rss_kib(pid);

    for (int i = 0; i < n; i++) {
        if (open_served(ctx, port, &conns[i]) < 0) {
            fprintf(stderr, "tls_idle_conns: connection %d failed: %s\n", i, strerror(errno));
            return 1;
        }
    }
    sleep_s(idle);
    long after = rss_kib(pid);

    /* A connection the server closed reads as readable (EOF or an alert) or hung up. */
    int open = 0;
    for (int i = 0; i < n; i++) {
        struct pollfd p = {.fd = conns[i].fd, .events = POLLIN};
        if (poll(&p, 1, 0) == 0)
            open++;
    }
    printf("conns=%d open=%d rss_before_kib=%ld rss_after_kib=%ld bytes_per_conn=%.0f "
           "version=%s\n",
           n, open, before, after, (double)(after - before) * 1024.0 / n, version);
    for (int i = 0; i < n; i++)
        conn_close(&conns[i]);
    free(conns);
    SSL_CTX_free(ctx);
    return open == n ? 0 : 1;
}

/* gale TLS on OpenSSL 3: contexts (net/tls.h) and one connection's state (net/tls_internal.h).
 * Everything that names OpenSSL lives here; the stream (net/iostream_tls.c) drives a connection
 * through gale__tls_* and never sees an SSL object.
 *
 * Socket I/O goes through a small BIO of gale's own over the stream's fd rather than OpenSSL's
 * socket BIO: sends carry MSG_NOSIGNAL (a peer that resets never raises SIGPIPE, as for plain
 * streams) and both directions pass through gale__sys_recv/send, so the fault-injection builds
 * cut and delay TLS records exactly as they do plain bytes.
 *
 * Memory: SSL_MODE_RELEASE_BUFFERS gives the 16 KiB record buffers back whenever a connection
 * is idle, so an idle TLS connection holds only OpenSSL's per-connection state. Reads use
 * read-ahead (one recv fetches every record the socket holds); bytes OpenSSL holds that no
 * readiness event will announce are reported by gale__tls_pending(). Writes of several small
 * buffers are gathered into one record (a per-thread 16 KiB staging area), so a response head
 * and its body leave in one record and one send.
 */
#include "net/tls.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "net/tls_internal.h"

#if GALE_HAVE_TLS

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/fault_internal.h"
#include "core/loop.h"
#include "core/loop_internal.h"

#define STAGE_SIZE 16384
#define ERR_TEXT 160

struct sni_entry {
    char *host, *certfile, *keyfile;
    SSL_CTX *ssl;
};

struct gale_tls_ctx {
    atomic_int refs;
    bool server;
    bool validate;
    double handshake_timeout;
    char *certfile, *keyfile, *ca_certs, *ciphers;
    unsigned char *alpn; /* wire format: length-prefixed names */
    size_t alpn_len;
    SSL_CTX *ssl; /* the main context: new connections start on it */
    struct sni_entry *sni;
    size_t nsni;
};

struct gale__tls {
    SSL *ssl;
    gale_tls_ctx *ctx;
    int fd;
    int sock_err; /* errno of the last failed socket call */
    unsigned want;
    size_t wpend; /* plaintext length of a record OpenSSL holds half-sent (0: none) */
    bool eof;     /* the socket said end of stream */
    bool done;    /* handshake finished */
    bool resumed;
    const char *version;
    char alpn[32];
    char err[ERR_TEXT];
};

/* ---- the socket BIO ---- */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *buf, int len)
{
    gale__tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = gale__sys_send(t->fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0)
            return (int)n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_write(b);
        else
            t->sock_err = errno;
        return -1;
    }
}

static int bio_read(BIO *b, char *buf, int len)
{
    gale__tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = gale__sys_recv(t->fd, buf, (size_t)len, MSG_DONTWAIT);
        if (n > 0)
            return (int)n;
        if (n == 0) {
            t->eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_read(b);
        else
            t->sock_err = errno;
        return -1;
    }
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    if (cmd == BIO_CTRL_FLUSH)
        return 1;
    if (cmd == BIO_CTRL_EOF)
        return ((gale__tls *)BIO_get_data(b))->eof;
    return 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gale socket");
    if (m && BIO_meth_set_write(m, bio_write) && BIO_meth_set_read(m, bio_read) &&
        BIO_meth_set_ctrl(m, bio_ctrl) && BIO_meth_set_create(m, bio_create))
        bio_method = m;
}

/* ---- errors ---- */

/* Logs OpenSSL's queued errors under `what` and returns GALE_ETLS. */
static int ssl_fail(const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    gale_log_error(GALE_LOG_GENERAL, "tls: %s%s%s: %s", what, file ? " " : "", file ? file : "",
                   e ? buf : "unknown error");
    ERR_clear_error();
    return GALE_ETLS;
}

static char *dup_opt(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

/* "h2,http/1.1" -> the wire form ALPN uses. Returns 0, -EINVAL (an empty or > 255-byte name). */
static int alpn_wire(const char *list, unsigned char **out, size_t *outlen)
{
    size_t n = strlen(list);
    unsigned char *w = malloc(n + 1);
    if (!w)
        return -ENOMEM;
    size_t at = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == 0 || l > 255) {
            free(w);
            return -EINVAL;
        }
        w[at++] = (unsigned char)l;
        memcpy(w + at, p, l);
        at += l;
        p += l + (e ? 1 : 0);
    }
    *out = w;
    *outlen = at;
    return 0;
}

/* ---- contexts ---- */

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    gale_tls_ctx *c = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, c->alpn, (unsigned)c->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301 3.2: no_application_protocol */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static bool sni_match(const char *pattern, const char *host)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(host, '.');
        return dot && dot != host && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    gale_tls_ctx *c = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!host)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < c->nsni; i++) {
        if (sni_match(c->sni[i].host, host)) {
            SSL_set_SSL_CTX(ssl, c->sni[i].ssl);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Settings every context shares. */
static void common_settings(SSL_CTX *s)
{
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(s, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_read_ahead(s, 1);
}

static int load_cert(SSL_CTX *s, const char *certfile, const char *keyfile)
{
    if (SSL_CTX_use_certificate_chain_file(s, certfile) != 1)
        return ssl_fail("cannot load the certificate chain", certfile);
    const char *key = keyfile ? keyfile : certfile;
    if (SSL_CTX_use_PrivateKey_file(s, key, SSL_FILETYPE_PEM) != 1)
        return ssl_fail("cannot load the private key", key);
    if (SSL_CTX_check_private_key(s) != 1)
        return ssl_fail("the private key does not match the certificate", key);
    return 0;
}

/* A server SSL_CTX for one certificate. */
static int server_ssl(gale_tls_ctx *c, const char *certfile, const char *keyfile, SSL_CTX **out)
{
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    if (!s)
        return ssl_fail("cannot create a context", NULL);
    common_settings(s);
    SSL_CTX_set_options(s, SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Resumption by tickets only (TLS 1.2 and 1.3): the session lives in the client's ticket,
     * so a server under a flood of full handshakes keeps no per-session memory. */
    SSL_CTX_set_session_id_context(s, (const unsigned char *)"gale", 4);
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    int rc = load_cert(s, certfile, keyfile);
    if (rc == 0 && c->ciphers && SSL_CTX_set_cipher_list(s, c->ciphers) != 1)
        rc = ssl_fail("bad cipher list", c->ciphers);
    if (rc == 0 && c->ca_certs) {
        if (SSL_CTX_load_verify_locations(s, c->ca_certs, NULL) != 1)
            rc = ssl_fail("cannot load the CA certificates", c->ca_certs);
        SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    if (rc < 0) {
        SSL_CTX_free(s);
        return rc;
    }
    if (c->alpn)
        SSL_CTX_set_alpn_select_cb(s, alpn_select, c);
    SSL_CTX_set_tlsext_servername_callback(s, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(s, c);
    *out = s;
    return 0;
}

static int client_ssl(gale_tls_ctx *c, SSL_CTX **out)
{
    SSL_CTX *s = SSL_CTX_new(TLS_client_method());
    if (!s)
        return ssl_fail("cannot create a context", NULL);
    common_settings(s);
    int rc = 0;
    if (c->validate) {
        SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
        if (c->ca_certs ? SSL_CTX_load_verify_locations(s, c->ca_certs, NULL) != 1
                        : SSL_CTX_set_default_verify_paths(s) != 1)
            rc = ssl_fail("cannot load the CA certificates", c->ca_certs);
    }
    if (rc == 0 && c->certfile)
        rc = load_cert(s, c->certfile, c->keyfile);
    if (rc == 0 && c->ciphers && SSL_CTX_set_cipher_list(s, c->ciphers) != 1)
        rc = ssl_fail("bad cipher list", c->ciphers);
    if (rc == 0 && c->alpn && SSL_CTX_set_alpn_protos(s, c->alpn, (unsigned)c->alpn_len) != 0)
        rc = ssl_fail("cannot set ALPN", NULL);
    if (rc < 0) {
        SSL_CTX_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void ctx_free(gale_tls_ctx *c)
{
    for (size_t i = 0; i < c->nsni; i++) {
        SSL_CTX_free(c->sni[i].ssl);
        free(c->sni[i].host);
        free(c->sni[i].certfile);
        free(c->sni[i].keyfile);
    }
    free(c->sni);
    SSL_CTX_free(c->ssl);
    free(c->certfile);
    free(c->keyfile);
    free(c->ca_certs);
    free(c->ciphers);
    free(c->alpn);
    free(c);
}

static int ctx_new(const gale_tls_opts *o, bool server, gale_tls_ctx **out)
{
    gale_tls_opts def;
    if (!o) {
        gale_tls_opts_init(&def);
        o = &def;
    }
    if (!out || (server && !o->certfile) || !(o->handshake_timeout >= 0))
        return -EINVAL;
    pthread_once(&bio_once, bio_method_init);
    if (!bio_method)
        return -ENOMEM;
    gale_tls_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    atomic_init(&c->refs, 1);
    c->server = server;
    c->validate = o->validate_cert;
    c->handshake_timeout = o->handshake_timeout;
    bool oom = false;
    c->certfile = dup_opt(o->certfile, &oom);
    c->keyfile = dup_opt(o->keyfile, &oom);
    c->ca_certs = dup_opt(o->ca_certs, &oom);
    c->ciphers = dup_opt(o->ciphers, &oom);
    int rc = oom ? -ENOMEM : 0;
    const char *alpn = o->alpn ? o->alpn : (server ? "http/1.1" : NULL);
    if (rc == 0 && alpn && *alpn)
        rc = alpn_wire(alpn, &c->alpn, &c->alpn_len);
    if (rc == 0)
        rc = server ? server_ssl(c, c->certfile, c->keyfile, &c->ssl) : client_ssl(c, &c->ssl);
    if (rc < 0) {
        ctx_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int gale_tls_server_new(const gale_tls_opts *o, gale_tls_ctx **out)
{
    return ctx_new(o, true, out);
}

int gale_tls_client_new(const gale_tls_opts *o, gale_tls_ctx **out)
{
    return ctx_new(o, false, out);
}

int gale_tls_add_sni(gale_tls_ctx *c, const char *host, const char *certfile, const char *keyfile)
{
    if (!c || !c->server || !host || !*host || !certfile)
        return -EINVAL;
    struct sni_entry *n = realloc(c->sni, (c->nsni + 1) * sizeof *n);
    if (!n)
        return -ENOMEM;
    c->sni = n;
    struct sni_entry *e = &c->sni[c->nsni];
    memset(e, 0, sizeof *e);
    bool oom = false;
    e->host = dup_opt(host, &oom);
    e->certfile = dup_opt(certfile, &oom);
    e->keyfile = dup_opt(keyfile, &oom);
    int rc = oom ? -ENOMEM : server_ssl(c, certfile, keyfile, &e->ssl);
    if (rc < 0) {
        free(e->host);
        free(e->certfile);
        free(e->keyfile);
        return rc;
    }
    c->nsni++;
    return 0;
}

int gale_tls_reload(gale_tls_ctx *c)
{
    if (!c || !c->server)
        return -EINVAL;
    SSL_CTX **fresh = calloc(c->nsni + 1, sizeof *fresh);
    if (!fresh)
        return -ENOMEM;
    int rc = server_ssl(c, c->certfile, c->keyfile, &fresh[0]);
    for (size_t i = 0; rc == 0 && i < c->nsni; i++)
        rc = server_ssl(c, c->sni[i].certfile, c->sni[i].keyfile, &fresh[i + 1]);
    if (rc < 0) {
        for (size_t i = 0; i <= c->nsni; i++)
            SSL_CTX_free(fresh[i]);
        free(fresh);
        gale_log_error(GALE_LOG_GENERAL, "tls: reload failed; the previous certificates stay");
        return rc;
    }
    /* Open connections hold their own reference to the context they started on. */
    SSL_CTX_free(c->ssl);
    c->ssl = fresh[0];
    for (size_t i = 0; i < c->nsni; i++) {
        SSL_CTX_free(c->sni[i].ssl);
        c->sni[i].ssl = fresh[i + 1];
    }
    free(fresh);
    gale_log_info(GALE_LOG_GENERAL, "tls: certificates reloaded from %s", c->certfile);
    return 0;
}

bool gale_tls_available(void) { return true; }
bool gale_tls_is_server(const gale_tls_ctx *c) { return c && c->server; }
double gale_tls_handshake_timeout(const gale_tls_ctx *c) { return c ? c->handshake_timeout : 0; }

void gale_tls_ref(gale_tls_ctx *c)
{
    if (c)
        atomic_fetch_add(&c->refs, 1);
}

void gale_tls_unref(gale_tls_ctx *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        ctx_free(c);
}

static gale_tls_ctx *default_client;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_client_init(void)
{
    if (gale_tls_client_new(NULL, &default_client) < 0)
        default_client = NULL;
}

gale_tls_ctx *gale__tls_default_client(void)
{
    pthread_once(&default_once, default_client_init);
    return default_client;
}

/* ---- one connection ---- */

/* The client checks `host`: a name against the certificate's DNS names (and sends it as SNI), an
 * IP address against its IP entries (no SNI: RFC 6066 3 allows names only). */
static int client_host(gale__tls *t, const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    bool ip = inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
    if (!ip && SSL_set_tlsext_host_name(t->ssl, host) != 1)
        return ssl_fail("cannot set SNI", host);
    if (!t->ctx->validate)
        return 0;
    X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(p, host) : SSL_set1_host(t->ssl, host);
    return ok == 1 ? 0 : ssl_fail("cannot set the host to verify", host);
}

int gale__tls_new(gale_tls_ctx *ctx, int fd, const char *host, gale__tls **out)
{
    if (!ctx || fd < 0 || !out)
        return -EINVAL;
    if (gale__fault_alloc())
        return -ENOMEM;
    gale__tls *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->fd = fd;
    t->ctx = ctx;
    t->ssl = SSL_new(ctx->ssl);
    BIO *b = t->ssl ? BIO_new(bio_method) : NULL;
    if (!b) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return -ENOMEM;
    }
    BIO_set_data(b, t);
    SSL_set_bio(t->ssl, b, b);
    int rc = 0;
    t->want = ctx->server ? GALE_READ : GALE_WRITE; /* who speaks first */
    if (ctx->server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        if (host && *host)
            rc = client_host(t, host);
    }
    if (rc < 0) {
        SSL_free(t->ssl);
        free(t);
        return rc;
    }
    gale_tls_ref(ctx);
    *out = t;
    return 0;
}

/* The reason a handshake or record failed, in words, into t->err; returns its code. */
static int record_error(gale__tls *t)
{
    long v = SSL_get_verify_result(t->ssl);
    unsigned long e = ERR_peek_error();
    if (v != X509_V_OK && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        snprintf(t->err, sizeof t->err, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
        return GALE_ECERT;
    }
    const char *why = e ? ERR_reason_error_string(e) : NULL;
    snprintf(t->err, sizeof t->err, "%s", why ? why : "TLS protocol error");
    ERR_clear_error();
    return GALE_ETLS;
}

/* Maps a failed SSL call (`rc` <= 0) to -EAGAIN, 0 (end of stream) or an error. `partial`:
 * part of a record had arrived, so an end of stream now cuts it. */
static ssize_t io_result(gale__tls *t, int rc, bool partial)
{
    int e = SSL_get_error(t->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ: t->want = GALE_READ; return -EAGAIN;
    case SSL_ERROR_WANT_WRITE: t->want = GALE_WRITE; return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN: return 0;
    default: break;
    }
    if (t->sock_err) {
        ERR_clear_error();
        snprintf(t->err, sizeof t->err, "%s", strerror(t->sock_err));
        return -t->sock_err;
    }
    if (t->eof && t->done && !partial) {
        /* The peer closed at a record boundary without close_notify: most HTTP clients do;
         * the application's framing says whether anything is missing. */
        ERR_clear_error();
        return 0;
    }
    if (t->eof) {
        snprintf(t->err, sizeof t->err, "%s",
                 t->done ? "connection closed in the middle of a TLS record"
                         : "connection closed during the TLS handshake");
        ERR_clear_error();
        return t->done ? GALE_ETLS : -ECONNRESET;
    }
    return record_error(t);
}

static void note_handshake(gale__tls *t)
{
    t->done = true;
    t->resumed = SSL_session_reused(t->ssl) == 1;
    t->version = SSL_get_version(t->ssl);
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &len);
    if (len >= sizeof t->alpn || !p)
        len = 0; /* none chosen: OpenSSL leaves p NULL, which memcpy may not get even for 0 */
    memcpy(t->alpn, p ? (const char *)p : "", len);
    t->alpn[len] = '\0';
}

int gale__tls_handshake(gale__tls *t)
{
    assert(t->ssl);
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        note_handshake(t);
        return 1;
    }
    ssize_t r = io_result(t, rc, false);
    return r == 0 ? -ECONNRESET : (int)r;
}

ssize_t gale__tls_read(gale__tls *t, char *buf, size_t len)
{
    size_t n = 0;
    bool partial = SSL_has_pending(t->ssl) == 1;
    ERR_clear_error();
    int rc = SSL_read_ex(t->ssl, buf, len, &n);
    if (rc == 1)
        return (ssize_t)n;
    return io_result(t, rc, partial);
}

static _Thread_local char stage[STAGE_SIZE];
_Static_assert(STAGE_SIZE >= SSL3_RT_MAX_PLAIN_LENGTH, "a half-sent record is retried from stage");

ssize_t gale__tls_writev(gale__tls *t, const struct iovec *iov, int iovcnt)
{
    size_t total = 0, off = 0;
    int i = 0;
    while (i < iovcnt) {
        if (off == iov[i].iov_len) {
            i++;
            off = 0;
            continue;
        }
        const char *p = (const char *)iov[i].iov_base + off;
        size_t len = iov[i].iov_len - off;
        if (len < STAGE_SIZE && i + 1 < iovcnt) {
            /* Gather small buffers into one record. After -EAGAIN the same bytes come back in
             * the same order, so a retry offers what OpenSSL holds (a moving buffer is fine). */
            size_t got = 0;
            for (int j = i; j < iovcnt && got < STAGE_SIZE; j++) {
                size_t o = j == i ? off : 0;
                size_t l = iov[j].iov_len - o;
                if (l > STAGE_SIZE - got)
                    l = STAGE_SIZE - got;
                memcpy(stage + got, (const char *)iov[j].iov_base + o, l);
                got += l;
            }
            p = stage;
            len = got;
        }
        size_t w = 0;
        ERR_clear_error();
        int rc = SSL_write_ex(t->ssl, p, len, &w);
        /* One record per call (partial writes); a retry finishes it before anything else. */
        t->wpend = rc == 1 ? 0 : len < SSL3_RT_MAX_PLAIN_LENGTH ? len : SSL3_RT_MAX_PLAIN_LENGTH;
        if (rc != 1) {
            ssize_t r = io_result(t, rc, false);
            if (r == 0)
                r = -EPIPE;
            return total ? (ssize_t)total : r;
        }
        total += w;
        while (w > 0 && i < iovcnt) { /* advance over what left */
            size_t l = iov[i].iov_len - off;
            if (w < l) {
                off += w;
                w = 0;
            } else {
                w -= l;
                i++;
                off = 0;
            }
        }
    }
    return (ssize_t)total;
}

unsigned gale__tls_want(const gale__tls *t) { return t->want; }

bool gale__tls_pending(const gale__tls *t) { return t->ssl && SSL_has_pending(t->ssl) == 1; }

void gale__tls_shutdown(gale__tls *t)
{
    if (!t->ssl)
        return;
    if (t->done && !t->sock_err && !t->eof) {
        ERR_clear_error();
        (void)SSL_shutdown(t->ssl); /* sends close_notify if the socket takes it now */
    }
    ERR_clear_error();
    SSL_free(t->ssl);
    t->ssl = NULL;
}

/* ---- a close_notify that waits for the socket ----
 *
 * A close_notify the socket does not take at once (its send buffer is full, or a send came back
 * short) must not be cut: the peer would read a truncated record or a bare end of stream, and
 * OpenSSL peers then treat the connection as attacked and drop its session, so the next
 * connection cannot resume. The loop takes the fd and the OpenSSL state and, when the socket is
 * writable, finishes the record OpenSSL holds half-sent and then the alert, for up to
 * LINGER_SECONDS (nginx waits as long), then closes. Queued bytes OpenSSL has not taken are
 * dropped, as a close drops them on plain TCP. */

#define LINGER_SECONDS 3.0

struct notify_linger {
    gale__loop_owned owned;
    gale_loop *loop;
    gale_timeout timer;
    gale__tls t; /* the BIO's data: the fd and the SSL */
};

static void linger_end(struct notify_linger *l)
{
    if (l->timer)
        gale_loop_remove_timeout(l->loop, l->timer);
    gale_loop_remove_handler(l->loop, l->t.fd);
    close(l->t.fd);
    ERR_clear_error();
    SSL_free(l->t.ssl);
    free(l);
}

/* The loop is being freed with the alert still waiting. */
static void linger_release(gale__loop_owned *o) { linger_end((struct notify_linger *)o); }

static void linger_finish(struct notify_linger *l)
{
    gale__loop_disown(&l->owned);
    linger_end(l);
}

static void linger_expired(gale_loop *loop, void *arg)
{
    (void)loop;
    struct notify_linger *l = arg;
    l->timer = 0;
    gale_log_debug(GALE_LOG_GENERAL, "fd %d: close_notify not taken in %.0f s, closing", l->t.fd,
                   LINGER_SECONDS);
    linger_finish(l);
}

/* One step of the close: the record OpenSSL holds half-sent (a retry with any bytes of its length
 * finishes it: its ciphertext is already made), then close_notify. Returns 1 when done, 0 when
 * the socket must take more first, -1 on an error. */
static int close_step(gale__tls *t)
{
    ERR_clear_error();
    if (t->wpend) {
        size_t w = 0;
        int rc = SSL_write_ex(t->ssl, stage, t->wpend, &w);
        if (rc != 1)
            return SSL_get_error(t->ssl, rc) == SSL_ERROR_WANT_WRITE && !t->sock_err ? 0 : -1;
        t->wpend = 0;
    }
    int rc = SSL_shutdown(t->ssl);
    if (rc >= 0)
        return 1;
    return SSL_get_error(t->ssl, rc) == SSL_ERROR_WANT_WRITE && !t->sock_err ? 0 : -1;
}

static void linger_writable(gale_loop *loop, int fd, unsigned events, void *arg)
{
    (void)loop;
    (void)fd;
    struct notify_linger *l = arg;
    if (!(events & GALE_ERROR) && close_step(&l->t) == 0)
        return; /* more to go */
    linger_finish(l);
}

/* Moves the pending close_notify of `t` (its SSL, and `fd`) to a linger record on `loop`.
 * Returns false when it cannot (out of memory), leaving `t` as it was. */
static bool linger_start(gale__tls *t, gale_loop *loop, int fd)
{
    struct notify_linger *l = gale__fault_alloc() ? NULL : calloc(1, sizeof *l);
    if (!l)
        return false;
    l->loop = loop;
    l->owned.release = linger_release;
    l->t.fd = fd;
    l->t.ssl = t->ssl;
    l->t.wpend = t->wpend;
    l->t.done = true;
    if (gale_loop_add_handler(loop, fd, GALE_WRITE, linger_writable, l) < 0) {
        free(l);
        return false;
    }
    if (gale_loop_call_later(loop, LINGER_SECONDS, linger_expired, l, &l->timer) < 0) {
        gale_loop_remove_handler(loop, fd);
        free(l);
        return false;
    }
    BIO_set_data(SSL_get_wbio(t->ssl), &l->t);
    t->ssl = NULL;
    gale__loop_own(loop, &l->owned);
    return true;
}

bool gale__tls_close(gale__tls *t, gale_loop *loop, int fd)
{
    if (!t->ssl || !t->done || t->sock_err || t->eof || fd < 0) {
        gale__tls_shutdown(t);
        return false;
    }
    if (close_step(t) == 0 && linger_start(t, loop, fd))
        return true;
    ERR_clear_error();
    SSL_free(t->ssl);
    t->ssl = NULL;
    return false;
}

void gale__tls_free(gale__tls *t)
{
    if (!t)
        return;
    gale__tls_shutdown(t);
    gale_tls_unref(t->ctx);
    free(t);
}

const char *gale__tls_error(const gale__tls *t) { return t->err; }
const char *gale__tls_alpn(const gale__tls *t) { return t->alpn; }
const char *gale__tls_version(const gale__tls *t) { return t->version ? t->version : ""; }
bool gale__tls_resumed(const gale__tls *t) { return t->resumed; }
bool gale__tls_handshake_done(const gale__tls *t) { return t->done; }

#else /* built without OpenSSL */

struct gale__tls {
    int unused;
};

bool gale_tls_available(void) { return false; }
int gale_tls_server_new(const gale_tls_opts *o, gale_tls_ctx **out) { return -ENOTSUP; }
int gale_tls_client_new(const gale_tls_opts *o, gale_tls_ctx **out) { return -ENOTSUP; }
int gale_tls_add_sni(gale_tls_ctx *c, const char *h, const char *cf, const char *kf)
{
    return -ENOTSUP;
}
int gale_tls_reload(gale_tls_ctx *c) { return -ENOTSUP; }
bool gale_tls_is_server(const gale_tls_ctx *c) { return false; }
double gale_tls_handshake_timeout(const gale_tls_ctx *c) { return 0; }
void gale_tls_ref(gale_tls_ctx *c) {}
void gale_tls_unref(gale_tls_ctx *c) {}
int gale__tls_new(gale_tls_ctx *ctx, int fd, const char *host, gale__tls **out) { return -ENOTSUP; }
gale_tls_ctx *gale__tls_default_client(void) { return NULL; }
int gale__tls_handshake(gale__tls *t) { return -ENOTSUP; }
ssize_t gale__tls_read(gale__tls *t, char *buf, size_t len) { return -ENOTSUP; }
ssize_t gale__tls_writev(gale__tls *t, const struct iovec *iov, int n) { return -ENOTSUP; }
unsigned gale__tls_want(const gale__tls *t) { return 0; }
bool gale__tls_pending(const gale__tls *t) { return false; }
void gale__tls_shutdown(gale__tls *t) {}
bool gale__tls_close(gale__tls *t, gale_loop *loop, int fd) { return false; }
void gale__tls_free(gale__tls *t) {}
const char *gale__tls_error(const gale__tls *t) { return ""; }
const char *gale__tls_alpn(const gale__tls *t) { return ""; }
const char *gale__tls_version(const gale__tls *t) { return ""; }
bool gale__tls_resumed(const gale__tls *t) { return false; }
bool gale__tls_handshake_done(const gale__tls *t) { return false; }

#endif

void gale_tls_opts_init(gale_tls_opts *o)
{
    memset(o, 0, sizeof *o);
    o->validate_cert = true;
    o->handshake_timeout = 10.0;
}

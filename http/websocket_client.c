/* websocket_connect: the client side of the opening handshake (RFC 6455 4.1). Connects a stream
 * (connect_stream: the one place a wss:// transport will plug in), sends the upgrade request
 * with a random key and the permessage-deflate offer, checks the 101 answer (accept key,
 * Upgrade, Connection, the extension and subprotocol agreed on) and hands the stream to a client
 * connection (websocket.c), whose frames are masked. One deadline covers connect and handshake. */
#include "http/websocket_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "core/errors.h"
#include "core/log.h"
#include "http/httpclient_internal.h"
#include "net/tcpclient.h"
#include "net/tls_internal.h"

#define DEFAULT_CONNECT_TIMEOUT 20.0
#define MAX_HEAD 65536

struct ws_connect {
    gale_loop *loop;
    const gale_ws_class *cls;
    void *cls_arg;
    bool offer_deflate;
    char *request;
    size_t reqlen;
    char accept[29];
    gale_stream *stream;
    gale_timeout timer;
    double deadline;
    gale_ws_connect_cb cb;
    void *arg;
};

static void connect_done(struct ws_connect *c, gale_ws *ws, int status)
{
    if (c->timer)
        gale_loop_remove_timeout(c->loop, c->timer);
    if (status < 0 && c->stream)
        gale_stream_close(c->stream, status);
    c->cb(ws, status, c->arg);
    free(c->request);
    free(c);
}

/* The value of header `name` in the response head (one line; NULL when absent). */
static const char *head_value(const char *head, size_t len, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *p = memchr(head, '\n', len), *end = head + len;
    while (p && p + 1 < end) {
        p++;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        if ((size_t)(eol - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol;
    }
    return NULL;
}

static bool value_has(const char *v, size_t n, const char *token)
{
    size_t t = strlen(token);
    for (size_t i = 0; v && i + t <= n; i++)
        if (strncasecmp(v + i, token, t) == 0)
            return true;
    return false;
}

/* Checks the answer; fills `agreed` (*use_pmd) and `*proto`. Returns 0 or an error. */
static int check_head(struct ws_connect *c, const char *head, size_t len, gale__ws_pmd *agreed,
                      bool *use_pmd, char **proto)
{
    if (len < 12 || strncmp(head, "HTTP/1.", 7) != 0)
        return GALE_EHTTP;
    if (strncmp(head + 9, "101", 3) != 0) {
        gale_log_info(GALE_LOG_GENERAL, "websocket_connect: answered %.3s", head + 9);
        return GALE_EBADSTATUS;
    }
    size_t n;
    const char *v = head_value(head, len, "Upgrade", &n);
    if (!v || !value_has(v, n, "websocket"))
        return GALE_EHTTP;
    v = head_value(head, len, "Connection", &n);
    if (!v || !value_has(v, n, "upgrade"))
        return GALE_EHTTP;
    v = head_value(head, len, "Sec-WebSocket-Accept", &n);
    if (!v || n != 28 || memcmp(v, c->accept, 28) != 0)
        return GALE_EHTTP;
    *use_pmd = false;
    v = head_value(head, len, "Sec-WebSocket-Extensions", &n);
    if (v) {
        if (!c->offer_deflate || gale__ws_pmd_check_answer(v, n, agreed) < 0)
            return GALE_EHTTP;
        *use_pmd = true;
    }
    v = head_value(head, len, "Sec-WebSocket-Protocol", &n);
    *proto = v && n ? strndup(v, n) : NULL;
    return 0;
}

static void on_head(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct ws_connect *c = arg;
    if (status < 0) {
        connect_done(c, NULL, status == GALE_EEOF ? GALE_EHTTP : status);
        return;
    }
    gale__ws_pmd agreed;
    bool use_pmd;
    char *proto = NULL;
    int rc = check_head(c, data, len, &agreed, &use_pmd, &proto);
    if (rc < 0) {
        connect_done(c, NULL, rc);
        return;
    }
    gale_ws *ws = gale__ws_new(NULL, c->cls, c->cls_arg, true, 0);
    if (ws && use_pmd && !(ws->pmd = gale__ws_deflate_new(&agreed))) {
        gale__ws_discard(ws);
        ws = NULL;
    }
    if (!ws) {
        free(proto);
        connect_done(c, NULL, -ENOMEM);
        return;
    }
    ws->parser.allow_rsv1 = use_pmd;
    ws->subprotocol = proto;
    gale__ws_attach(ws, s);
    c->stream = NULL; /* the connection's now */
    gale_ws_ref(ws);  /* the caller's reference */
    gale__ws_start(ws);
    connect_done(c, ws, 0);
}

static void on_timeout(gale_loop *loop, void *arg)
{
    struct ws_connect *c = arg;
    c->timer = 0;
    if (c->stream)
        gale_stream_close(c->stream, -ETIMEDOUT); /* the pending read reports it */
}

static void on_connected(gale_stream *s, int status, void *arg)
{
    struct ws_connect *c = arg;
    if (status < 0) {
        connect_done(c, NULL, status);
        return;
    }
    c->stream = s;
    double left = c->deadline - gale_loop_time(c->loop);
    gale_loop_call_later(c->loop, left > 0 ? left : 0, on_timeout, c, &c->timer);
    int rc = gale_stream_write(s, c->request, c->reqlen, NULL, NULL);
    if (rc == 0)
        rc = gale_stream_read_until(s, "\r\n\r\n", 4, MAX_HEAD, on_head, c);
    if (rc < 0)
        connect_done(c, NULL, rc);
}

/* Connects a stream to the URL's host and port, with TLS for wss:// (the handshake within the
 * same timeout); `on_connected` runs once. */
static int connect_stream(struct ws_connect *c, const struct gale__url *u, gale_tls_ctx *tls,
                          double timeout)
{
    if (tls)
        return gale_tcp_connect_tls(c->loop, u->host, u->port, timeout, tls, on_connected, c);
    return gale_tcp_connect(c->loop, u->host, u->port, timeout, on_connected, c);
}

static char *build_request(const struct gale__url *u, const gale_ws_connect_opts *o,
                           const char *key, bool deflate)
{
    size_t cap = 1024 + strlen(u->target) + strlen(u->hostport);
    if (o->subprotocols)
        cap += strlen(o->subprotocols);
    if (o->origin)
        cap += strlen(o->origin);
    for (const char *const *h = o->headers; h && *h; h++)
        cap += strlen(*h) + 2;
    char *r = malloc(cap);
    if (!r)
        return NULL;
    int n = snprintf(r, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
                     u->target, u->hostport, key);
    if (deflate)
        n += snprintf(r + n, cap - (size_t)n, "Sec-WebSocket-Extensions: %s\r\n",
                      gale__ws_pmd_offer());
    if (o->subprotocols)
        n += snprintf(r + n, cap - (size_t)n, "Sec-WebSocket-Protocol: %s\r\n", o->subprotocols);
    if (o->origin)
        n += snprintf(r + n, cap - (size_t)n, "Origin: %s\r\n", o->origin);
    for (const char *const *h = o->headers; h && *h; h++)
        n += snprintf(r + n, cap - (size_t)n, "%s\r\n", *h);
    snprintf(r + n, cap - (size_t)n, "\r\n");
    return r;
}

/* ws:// and wss:// become http:// and https:// for the URL parser; `*tls` says which it was. */
static int parse_ws_url(const char *url, struct gale__url *u, bool *tls)
{
    const char *rest;
    if (strncasecmp(url, "ws://", 5) == 0)
        rest = url + 5, *tls = false;
    else if (strncasecmp(url, "wss://", 6) == 0)
        rest = url + 6, *tls = true;
    else
        return GALE_ESCHEME;
    char *http = gale__dup_printf("%s://%s", *tls ? "https" : "http", rest);
    if (!http)
        return -ENOMEM;
    int rc = gale__url_parse(http, u);
    free(http);
    return rc;
}

static bool has_crlf(const char *s) { return s && strpbrk(s, "\r\n"); }

int gale_ws_connect(gale_loop *loop, const char *url, const gale_ws_connect_opts *opts,
                    gale_ws_connect_cb cb, void *arg)
{
    static const gale_ws_connect_opts none;
    const gale_ws_connect_opts *o = opts ? opts : &none;
    if (!url || !cb || has_crlf(o->subprotocols) || has_crlf(o->origin))
        return -EINVAL;
    for (const char *const *h = o->headers; h && *h; h++)
        if (has_crlf(*h) || !strchr(*h, ':'))
            return -EINVAL;
    if (!loop && !(loop = gale_loop_current()))
        return -ENOMEM;
    struct gale__url u;
    bool tls;
    int rc = parse_ws_url(url, &u, &tls);
    if (rc < 0)
        return rc;
    gale_tls_ctx *ctx = NULL;
    if (tls && !(ctx = o->tls ? o->tls : gale__tls_default_client())) {
        gale_log_warning(GALE_LOG_GENERAL, "websocket_connect %s: wss:// needs TLS: %s", url,
                         gale_tls_available() ? "no client context (out of memory?)"
                                              : "gale was built without it");
        gale__url_free(&u);
        return gale_tls_available() ? -ENOMEM : -ENOTSUP;
    }
    struct ws_connect *c = calloc(1, sizeof *c);
    uint8_t nonce[16];
    char key[25];
    if (getrandom(nonce, sizeof nonce, 0) != sizeof nonce)
        for (size_t i = 0; i < sizeof nonce; i++)
            nonce[i] = (uint8_t)(gale_time_ns() >> (i % 8));
    gale__ws_base64(nonce, sizeof nonce, key);
    bool deflate = o->compression && gale__ws_pmd_available();
    if (c)
        c->request = build_request(&u, o, key, deflate);
    if (!c || !c->request) {
        free(c);
        gale__url_free(&u);
        return -ENOMEM;
    }
    c->reqlen = strlen(c->request);
    c->loop = loop;
    c->cls = o->cls;
    c->cls_arg = o->arg;
    c->offer_deflate = deflate;
    c->cb = cb;
    c->arg = arg;
    gale__ws_accept_key(key, 24, c->accept);
    double timeout = o->connect_timeout > 0 ? o->connect_timeout : DEFAULT_CONNECT_TIMEOUT;
    c->deadline = gale_loop_time(loop) + timeout;
    rc = connect_stream(c, &u, ctx, timeout);
    gale__url_free(&u);
    if (rc < 0) {
        free(c->request);
        free(c);
    }
    return rc;
}

static void unref_ws(void *ws) { gale_ws_unref(ws); }

static void future_connected(gale_ws *ws, int status, void *arg)
{
    gale_future *f = arg;
    if (status == 0)
        gale_future_set_result(f, ws, unref_ws);
    else
        gale_future_set_error(f, status, NULL);
    gale_future_unref(f);
}

gale_future *gale_ws_connect_future(gale_loop *loop, const char *url,
                                    const gale_ws_connect_opts *opts)
{
    gale_future *f = gale_future_new(loop);
    if (!f)
        return NULL;
    gale_future_ref(f);
    int rc = gale_ws_connect(loop, url, opts, future_connected, f);
    if (rc < 0) {
        gale_future_set_error(f, rc, NULL);
        gale_future_unref(f);
    }
    return f;
}

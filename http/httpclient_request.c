/* The HTTP client's request on the wire: the head (method, target, Host, User-Agent, credentials,
 * framing, Accept-Encoding, Expect, the user's headers), a buffered body sent with it, and a
 * streamed body: the producer's pieces (Content-Length when promised, else chunked), one write in
 * flight at a time, and the wait for 100 Continue. httpclient.c calls in when a connection is
 * ready; the response side is httpclient_response.c's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "http/httpclient_internal.h"

/* How long a body waits for 100 Continue before it is sent anyway (curl's default). */
#define CONTINUE_WAIT 1.0

static bool header_skipped(const struct gale__fetch *f, const gale_http_header *h)
{
    static const char *const always[] = {"Connection", "Content-Length", "Transfer-Encoding",
                                         "Expect"};
    for (size_t i = 0; i < sizeof always / sizeof always[0]; i++)
        if (gale_str_ieq(h->name.p, h->name.len, always[i]))
            return true;
    if (f->drop_host && gale_str_ieq(h->name.p, h->name.len, "Host"))
        return true;
    if (f->drop_body_headers && (gale_str_ieq(h->name.p, h->name.len, "Content-Type") ||
                                 gale_str_ieq(h->name.p, h->name.len, "Content-Encoding")))
        return true;
    return false;
}

static bool has_user_header(const struct gale__fetch *f, const char *name)
{
    for (size_t i = 0; i < f->headers.n; i++)
        if (gale_str_ieq(f->headers.items[i].name.p, f->headers.items[i].name.len, name) &&
            !header_skipped(f, &f->headers.items[i]))
            return true;
    return false;
}

static bool has_body(const struct gale__fetch *f) { return f->body_len || f->producer; }

/* Whether the buffered body goes out in the same write as the head. */
static bool body_with_head(const struct gale__fetch *f)
{
    return f->body_len && !f->producer && !f->expect_continue;
}

/* Appends the NUL-terminated strings `a` and `b` (NULL: none) at buf + n; returns the new n. The
 * head is built with these, not printf: it is built for every request. `cap` was sized by the
 * caller for everything written. */
static size_t put(char *buf, size_t n, const char *a, const char *b)
{
    size_t la = strlen(a);
    memcpy(buf + n, a, la);
    n += la;
    if (b) {
        size_t lb = strlen(b);
        memcpy(buf + n, b, lb);
        n += lb;
    }
    return n;
}

/* The framing and negotiation lines, decided before any byte is written. */
static size_t write_framing(const struct gale__fetch *f, char *buf, size_t cap)
{
    bool body_method =
        !strcmp(f->method, "POST") || !strcmp(f->method, "PUT") || !strcmp(f->method, "PATCH");
    size_t n = 0;
    if (f->client && f->client->pool.max_per_host < 0)
        n = put(buf, n, "Connection: close\r\n", NULL);
    if (f->producer && f->body_len == 0)
        n = put(buf, n, "Transfer-Encoding: chunked\r\n", NULL);
    else if (f->body_len || body_method)
        n += (size_t)snprintf(buf + n, cap - n, "Content-Length: %zu\r\n", f->body_len);
    if (f->expect_continue && has_body(f))
        n = put(buf, n, "Expect: 100-continue\r\n", NULL);
    if (f->decompress && !has_user_header(f, "Accept-Encoding"))
        n = put(buf, n, "Accept-Encoding: gzip\r\n", NULL);
    /* Tornado's default for a POST without one, so that a form body is read as a form. */
    if (!strcmp(f->method, "POST") && !has_user_header(f, "Content-Type"))
        n = put(buf, n, "Content-Type: application/x-www-form-urlencoded\r\n", NULL);
    return n;
}

int gale__request_build(struct gale__fetch *f, char **out, size_t *outlen)
{
    char *auth = NULL;
    if (f->u.userinfo && !has_user_header(f, "Authorization")) {
        auth = gale__url_basic_credentials(f->u.userinfo);
        if (!auth)
            return -ENOMEM;
    }
    size_t body = body_with_head(f) ? f->body_len : 0;
    const char *ua = f->user_agent ? f->user_agent : f->client->user_agent;
    size_t cap = strlen(f->method) + strlen(f->u.target) + strlen(f->u.hostport) + strlen(ua) +
                 (auth ? strlen(auth) : 0) + body + 400;
    for (size_t i = 0; i < f->headers.n; i++)
        cap += f->headers.items[i].name.len + f->headers.items[i].value.len + 4;
    char *buf = malloc(cap);
    if (!buf) {
        free(auth);
        return -ENOMEM;
    }
    size_t n = put(buf, 0, f->method, " ");
    n = put(buf, n, f->u.target, " HTTP/1.1\r\n");
    if (!has_user_header(f, "Host"))
        n = put(buf, put(buf, n, "Host: ", f->u.hostport), "\r\n", NULL);
    if (!has_user_header(f, "User-Agent"))
        n = put(buf, put(buf, n, "User-Agent: ", ua), "\r\n", NULL);
    if (auth)
        n = put(buf, put(buf, n, "Authorization: Basic ", auth), "\r\n", NULL);
    free(auth);
    n += write_framing(f, buf + n, cap - n);
    for (size_t i = 0; i < f->headers.n; i++) {
        const gale_http_header *h = &f->headers.items[i];
        if (header_skipped(f, h))
            continue;
        memcpy(buf + n, h->name.p, h->name.len);
        n += h->name.len;
        buf[n++] = ':';
        buf[n++] = ' ';
        memcpy(buf + n, h->value.p, h->value.len);
        n += h->value.len;
        buf[n++] = '\r';
        buf[n++] = '\n';
    }
    buf[n++] = '\r';
    buf[n++] = '\n';
    if (body)
        memcpy(buf + n, f->body, body);
    n += body;
    *out = buf;
    *outlen = n;
    return 0;
}

static void continue_timeout(gale_loop *loop, void *arg)
{
    struct gale__fetch *f = arg;
    f->continue_timer = 0;
    gale__request_continue(f);
}

int gale__request_send(struct gale__fetch *f)
{
    char *req;
    size_t len;
    int rc = gale__request_build(f, &req, &len);
    if (rc == 0)
        rc = gale_stream_write_ref(f->conn->s, req, len, free, req, NULL, NULL);
    if (rc)
        return rc;
    f->conn->requests++;
    f->sent = 0;
    f->writing = false;
    if (!has_body(f)) {
        f->upload = U_NONE;
    } else if (f->expect_continue) {
        f->upload = U_WAIT_CONTINUE;
        rc = gale_loop_call_later(f->loop, CONTINUE_WAIT, continue_timeout, f, &f->continue_timer);
    } else if (f->producer) {
        f->upload = U_SENDING;
    } else {
        f->upload = U_DONE;
        f->sent = f->body_len;
    }
    return rc;
}

void gale__request_start_body(struct gale__fetch *f)
{
    if (f->upload == U_SENDING && f->producer && f->sent == 0 && !f->writing)
        f->producer((gale_http_body_writer *)f, f->producer_arg);
}

void gale__request_continue(struct gale__fetch *f)
{
    if (f->continue_timer) {
        gale_loop_remove_timeout(f->loop, f->continue_timer);
        f->continue_timer = 0;
    }
    if (f->upload != U_WAIT_CONTINUE || !f->conn || !f->conn->s)
        return;
    if (f->producer) {
        f->upload = U_SENDING;
        gale__request_start_body(f);
        return;
    }
    int rc = gale_stream_write(f->conn->s, f->body, f->body_len, NULL, NULL);
    if (rc) {
        gale__fetch_finish(f, rc, NULL);
        return;
    }
    f->sent = f->body_len;
    f->upload = U_DONE;
}

void gale__request_abort(struct gale__fetch *f, int err)
{
    if (f->continue_timer) {
        gale_loop_remove_timeout(f->loop, f->continue_timer);
        f->continue_timer = 0;
    }
    if (f->upload == U_WAIT_CONTINUE || f->upload == U_SENDING)
        f->upload = U_SKIPPED;
    if (f->writing) {
        f->writing = false;
        gale_http_body_write_cb cb = f->wcb;
        f->wcb = NULL;
        if (cb)
            cb((gale_http_body_writer *)f, err, f->warg);
    }
}

/* The stream took a producer's write (or closed). `arg` is the conn: the fetch may be gone. */
static void on_body_written(gale_stream *s, int status, void *arg)
{
    struct gale__fetch *f = gale__conn_fetch(arg);
    if (!f || !f->writing)
        return;
    f->writing = false;
    gale_http_body_write_cb cb = f->wcb;
    f->wcb = NULL;
    if (cb)
        cb((gale_http_body_writer *)f, status, f->warg);
}

/* The fetch behind a producer's handle when it may write now, else the error to return. */
static int writable(gale_http_body_writer *w, struct gale__fetch **out)
{
    struct gale__fetch *f = (struct gale__fetch *)w;
    if (!f)
        return -EINVAL;
    if (f->state == F_DONE || f->upload != U_SENDING || !f->conn || !f->conn->s)
        return -ECANCELED;
    if (f->writing)
        return -EBUSY;
    *out = f;
    return 0;
}

int gale_http_body_write(gale_http_body_writer *w, const void *data, size_t len,
                         gale_http_body_write_cb cb, void *arg)
{
    struct gale__fetch *f;
    int rc = writable(w, &f);
    if (rc)
        return rc;
    if (len && !data)
        return -EINVAL;
    if (f->body_len && len > f->body_len - f->sent)
        return -EMSGSIZE;
    char size_line[24];
    struct iovec iov[3];
    int n = 0;
    if (f->body_len == 0) {
        if (len == 0) {
            /* A zero-length chunk would end the body: nothing to send, but still acknowledged. */
            iov[n++] = (struct iovec){(void *)"", 0};
        } else {
            int sl = snprintf(size_line, sizeof size_line, "%zx\r\n", len);
            iov[n++] = (struct iovec){size_line, (size_t)sl};
            iov[n++] = (struct iovec){(void *)data, len};
            iov[n++] = (struct iovec){(void *)"\r\n", 2};
        }
    } else {
        iov[n++] = (struct iovec){(void *)data, len};
    }
    f->writing = true;
    f->wcb = cb;
    f->warg = arg;
    rc = gale_stream_writev(f->conn->s, iov, n, on_body_written, f->conn);
    if (rc) {
        f->writing = false;
        f->wcb = NULL;
        return rc;
    }
    f->sent += len;
    return 0;
}

int gale_http_body_end(gale_http_body_writer *w)
{
    struct gale__fetch *f;
    int rc = writable(w, &f);
    if (rc)
        return rc;
    if (f->body_len && f->sent != f->body_len) {
        gale_log_warning(GALE_LOG_GENERAL, "fetch %s: body producer ended after %zu of %zu bytes",
                         f->url, f->sent, f->body_len);
        gale__fetch_finish(f, -EPROTO, "Body producer ended before the promised body_len");
        return -EPROTO;
    }
    if (f->body_len == 0) {
        rc = gale_stream_write(f->conn->s, "0\r\n\r\n", 5, NULL, NULL);
        if (rc)
            return rc;
    }
    f->upload = U_DONE;
    return 0;
}

static void write_future_done(gale_http_body_writer *w, int status, void *arg)
{
    gale_future *f = arg;
    if (status)
        gale_future_set_error(f, status, NULL);
    else
        gale_future_set_result(f, NULL, NULL);
    gale_future_unref(f);
}

gale_future *gale_http_body_write_future(gale_http_body_writer *w, const void *data, size_t len)
{
    struct gale__fetch *fe = (struct gale__fetch *)w;
    gale_future *f = gale_future_new(fe ? fe->loop : NULL);
    if (!f)
        return NULL;
    if (!fe) {
        gale_future_set_error(f, -EINVAL, NULL);
        return f;
    }
    gale_future_ref(f); /* the write callback's */
    int rc = gale_http_body_write(w, data, len, write_future_done, f);
    if (rc) {
        gale_future_unref(f);
        gale_future_set_error(f, rc, NULL);
    }
    return f;
}

/* Asynchronous HTTP/1.1 client: a queue in front of one connection per request.
 *
 * Objects: a `fetch` lives from gale_http_fetch() until its callback has run; a `conn` is the
 * link between a fetch and its socket. Stream callbacks only ever see the conn: when a fetch ends
 * (or follows a redirect) it detaches from its conn and closes the stream, and the callbacks that
 * the close still delivers find `conn->f == NULL` and do nothing; the conn is freed by the
 * stream's close callback (or by the connect callback when the stream never came up). So no
 * stream callback can reach a freed fetch, whatever order the loop runs things in.
 *
 * This file owns the queue, the exchange on the connection and the reading of the response;
 * URLs (splitting, redirect targets, userinfo credentials) are httpclient_url.c's.
 */
#include "http/httpclient.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/list.h"
#include "core/log.h"
#include "core/version.h"
#include "http/httpclient_internal.h"
#include "net/iostream.h"
#include "net/tcpclient.h"

#define DEFAULT_USER_AGENT "gale/" GALE_VERSION_STRING
#define CHUNK_LINE_MAX 8192

struct gale_http_client {
    gale_loop *loop;
    int max_clients;
    size_t max_header_size;
    size_t max_body_size;
    char *user_agent;
    gale_list queue;  /* fetches waiting, FIFO */
    gale_list active; /* fetches in flight */
    size_t n_queued;
    size_t n_active;
    bool freeing;
    bool pumping; /* pump() is on the stack: a nested call leaves the work to its loop */
};

struct resp_impl {
    gale_http_client_response pub; /* first: the public pointer is the impl pointer */
    char *raw;                     /* copy of the header block the slices point into */
    char *body;
    size_t body_cap;
    char *url;
    char *msg;
    bool kept;
};

struct fetch;

struct conn {
    struct fetch *f; /* NULL once detached */
    gale_stream *s;  /* NULL while connecting */
};

enum fetch_state { F_NEW, F_QUEUED, F_ACTIVE, F_DONE };
enum body_mode { B_NONE, B_LENGTH, B_CHUNKED, B_CLOSE };

struct fetch {
    gale_list node;
    gale_http_client *client;
    gale_loop *loop;
    enum fetch_state state;

    /* the request, copied */
    char *url;
    char *method;
    char *body;
    size_t body_len;
    gale_http_headers headers;
    char *header_bytes;
    char *user_agent;
    double connect_timeout; /* <= 0: none */
    double request_timeout;
    bool follow_redirects;
    int redirects_left;
    bool raise_error;
    bool drop_body_headers; /* after a 301/302/303 */
    bool drop_host;         /* after any redirect */
    size_t max_header_size;
    size_t max_body_size;
    gale_http_header_cb header_cb;
    gale_http_streaming_cb streaming_cb;
    void *cb_arg;
    gale_http_fetch_cb cb;
    void *arg;
    gale_future *future;

    double t_start;
    gale_timeout timer;
    struct gale__url u;
    struct conn *conn;

    /* the response being read */
    struct resp_impl *resp;
    int redirects;
    size_t head_bytes;
    size_t body_got;
    size_t trailer_bytes;
    enum body_mode mode;
    bool head_request;
};

static void pump(gale_http_client *c);
static void connect_phase(struct fetch *f);
static void read_head(struct fetch *f);
static void read_chunk_size(struct fetch *f);

/* ---- small helpers ---- */

static char *dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* The smaller of two timeouts where <= 0 means no limit. */
static double timeout_min(double a, double b)
{
    if (a <= 0)
        return b;
    if (b <= 0)
        return a;
    return a < b ? a : b;
}

/* ---- responses ---- */

static struct resp_impl *resp_new(void)
{
    struct resp_impl *r = calloc(1, sizeof *r);
    if (r) {
        r->pub.body = "";
        r->pub.reason = "";
    }
    return r;
}

void gale_http_client_response_free(gale_http_client_response *resp)
{
    if (!resp)
        return;
    struct resp_impl *r = (struct resp_impl *)resp;
    gale_http_headers_free(&r->pub.headers);
    free(r->raw);
    free(r->body);
    free(r->url);
    free(r->msg);
    free(r);
}

gale_http_client_response *gale_http_client_response_keep(gale_http_client_response *resp)
{
    if (resp)
        ((struct resp_impl *)resp)->kept = true;
    return resp;
}

static void resp_free_void(void *p) { gale_http_client_response_free(p); }

static int body_append(struct resp_impl *r, const char *data, size_t len)
{
    size_t need = r->pub.body_len + len + 1;
    if (need > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < need)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b)
            return -ENOMEM;
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->pub.body_len, data, len);
    r->pub.body_len += len;
    r->body[r->pub.body_len] = '\0';
    r->pub.body = r->body;
    return 0;
}

/* ---- completion ---- */

static void fetch_free(struct fetch *f)
{
    free(f->url);
    free(f->method);
    free(f->body);
    gale_http_headers_free(&f->headers);
    free(f->header_bytes);
    free(f->user_agent);
    gale__url_free(&f->u);
    if (f->resp)
        gale_http_client_response_free(&f->resp->pub);
    free(f);
}

static void deliver(gale_loop *loop, void *arg)
{
    struct fetch *f = arg;
    struct resp_impl *r = f->resp;
    f->resp = NULL;
    if (f->future) {
        gale_future *fut = f->future;
        f->future = NULL;
        if (r->pub.error && (f->raise_error || r->pub.code == GALE_HTTP_NO_RESPONSE)) {
            gale_future_set_error(fut, r->pub.error, r->pub.error_message);
            gale_http_client_response_free(&r->pub);
        } else if (gale_future_set_result(fut, r, resp_free_void) != 0) {
            gale_http_client_response_free(&r->pub);
        }
        gale_future_unref(fut);
    } else {
        f->cb(&r->pub, f->arg);
        if (!r->kept)
            gale_http_client_response_free(&r->pub);
    }
    fetch_free(f);
}

/* Detaches the fetch from its connection and closes the socket (the conn frees itself). */
static void detach(struct fetch *f)
{
    struct conn *cn = f->conn;
    if (!cn)
        return;
    f->conn = NULL;
    cn->f = NULL;
    if (cn->s)
        gale_stream_close(cn->s, 0);
}

/* Ends a fetch with `err` (0: success with f->resp) and schedules its callback. */
static void finish(struct fetch *f, int err, const char *msg)
{
    if (f->state == F_DONE)
        return;
    gale_http_client *c = f->client;
    enum fetch_state was = f->state;
    f->state = F_DONE;
    if (f->timer) {
        gale_loop_remove_timeout(f->loop, f->timer);
        f->timer = 0;
    }
    detach(f);
    if (c) {
        gale_list_unlink(&f->node);
        if (was == F_ACTIVE)
            c->n_active--;
        else if (was == F_QUEUED)
            c->n_queued--;
    }
    f->client = NULL;

    struct resp_impl *r = f->resp;
    bool keep_response = r && (err == 0 || err == GALE_EREDIRECTS);
    if (!keep_response) {
        /* A failure never carries a partial response: no truncated success is possible. */
        if (r)
            gale_http_client_response_free(&r->pub);
        r = f->resp = resp_new();
    }
    if (r) {
        if (!keep_response)
            r->pub.code = GALE_HTTP_NO_RESPONSE;
        if (err == 0 && f->raise_error && (r->pub.code < 200 || r->pub.code > 299))
            err = GALE_EBADSTATUS;
        r->pub.error = err;
        r->pub.redirects = f->redirects;
        r->pub.request_time = gale_loop_time(f->loop) - f->t_start;
        r->url = strdup(f->url);
        r->pub.effective_url = r->url ? r->url : "";
        if (err) {
            if (err == GALE_EBADSTATUS)
                r->msg = gale__dup_printf("HTTP %d: %s", r->pub.code, r->pub.reason);
            else
                r->msg = strdup(msg ? msg : gale_strerror(err));
            r->pub.error_message = r->msg ? r->msg : gale_strerror(err);
            if (!keep_response)
                r->pub.reason = r->pub.error_message;
            gale_log_debug(GALE_LOG_GENERAL, "fetch %s failed: %s (%s)", f->url,
                           r->pub.error_message, gale_err_name(err));
        }
    }
    if (!r || gale_loop_add_callback(f->loop, deliver, f) != 0) {
        /* Out of memory: nothing sensible can be reported; drop the fetch quietly but log it. */
        gale_log_error(GALE_LOG_GENERAL, "fetch %s: out of memory delivering the response", f->url);
        if (f->future) {
            gale_future_set_error(f->future, -ENOMEM, NULL);
            gale_future_unref(f->future);
            f->future = NULL;
        }
        fetch_free(f);
    }
    if (c)
        pump(c);
}

/* ---- the queue ---- */

static void queue_timeout(gale_loop *loop, void *arg)
{
    struct fetch *f = arg;
    f->timer = 0;
    finish(f, -ETIMEDOUT, "Timeout in request queue");
}

static void start(struct fetch *f)
{
    gale_http_client *c = f->client;
    if (f->timer) {
        gale_loop_remove_timeout(f->loop, f->timer);
        f->timer = 0;
    }
    if (f->state == F_QUEUED) {
        gale_list_unlink(&f->node);
        c->n_queued--;
    }
    f->state = F_ACTIVE;
    gale_list_push_back(&c->active, &f->node);
    c->n_active++;
    connect_phase(f);
}

/* Starts queued fetches while there is room. A start that fails at once finishes its fetch,
 * which calls pump() again: that nested call returns and this loop carries on, so a long queue
 * of failing requests never recurses deeply. */
static void pump(gale_http_client *c)
{
    if (c->pumping)
        return;
    c->pumping = true;
    while (!c->freeing && c->n_active < (size_t)c->max_clients && !gale_list_empty(&c->queue)) {
        struct fetch *f = gale_list_entry(c->queue.next, struct fetch, node);
        start(f);
    }
    c->pumping = false;
}

/* ---- the exchange ---- */

static void request_timeout(gale_loop *loop, void *arg)
{
    struct fetch *f = arg;
    f->timer = 0;
    finish(f, -ETIMEDOUT, "Timeout during request");
}

static bool header_skipped(const struct fetch *f, const gale_http_header *h)
{
    static const char *const always[] = {"Connection", "Content-Length", "Transfer-Encoding"};
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

static bool has_user_header(const struct fetch *f, const char *name)
{
    for (size_t i = 0; i < f->headers.n; i++)
        if (gale_str_ieq(f->headers.items[i].name.p, f->headers.items[i].name.len, name) &&
            !header_skipped(f, &f->headers.items[i]))
            return true;
    return false;
}

/* Serialises the request into one allocation. Returns 0 or -ENOMEM. */
static int build_request(struct fetch *f, char **out, size_t *outlen)
{
    bool body_method =
        !strcmp(f->method, "POST") || !strcmp(f->method, "PUT") || !strcmp(f->method, "PATCH");
    char *auth = NULL;
    if (f->u.userinfo && !has_user_header(f, "Authorization")) {
        auth = gale__url_basic_credentials(f->u.userinfo);
        if (!auth)
            return -ENOMEM;
    }
    size_t cap = strlen(f->method) + strlen(f->u.target) + strlen(f->u.hostport) +
                 strlen(f->user_agent) + (auth ? strlen(auth) : 0) + f->body_len + 320;
    for (size_t i = 0; i < f->headers.n; i++)
        cap += f->headers.items[i].name.len + f->headers.items[i].value.len + 4;
    char *buf = malloc(cap);
    if (!buf) {
        free(auth);
        return -ENOMEM;
    }
    size_t n = (size_t)snprintf(buf, cap, "%s %s HTTP/1.1\r\n", f->method, f->u.target);
    if (!has_user_header(f, "Host"))
        n += (size_t)snprintf(buf + n, cap - n, "Host: %s\r\n", f->u.hostport);
    if (!has_user_header(f, "User-Agent"))
        n += (size_t)snprintf(buf + n, cap - n, "User-Agent: %s\r\n", f->user_agent);
    if (auth)
        n += (size_t)snprintf(buf + n, cap - n, "Authorization: Basic %s\r\n", auth);
    free(auth);
    n += (size_t)snprintf(buf + n, cap - n, "Connection: close\r\n");
    if (f->body_len || body_method)
        n += (size_t)snprintf(buf + n, cap - n, "Content-Length: %zu\r\n", f->body_len);
    /* Tornado's default for a POST without one, so that a form body is read as a form. */
    if (!strcmp(f->method, "POST") && !has_user_header(f, "Content-Type"))
        n += (size_t)snprintf(buf + n, cap - n,
                              "Content-Type: application/x-www-form-urlencoded\r\n");
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
    if (f->body_len)
        memcpy(buf + n, f->body, f->body_len);
    n += f->body_len;
    *out = buf;
    *outlen = n;
    return 0;
}

static void on_stream_close(gale_stream *s, int reason, void *arg)
{
    struct conn *cn = arg;
    struct fetch *f = cn->f;
    free(cn);
    if (f) {
        /* The pending read normally reports the close first; this is the backstop. */
        f->conn = NULL;
        finish(f, reason ? reason : GALE_EEOF, "Connection closed");
    }
}

static void on_connected(gale_stream *s, int status, void *arg)
{
    struct conn *cn = arg;
    struct fetch *f = cn->f;
    if (!f) {
        free(cn);
        if (s)
            gale_stream_close(s, 0);
        return;
    }
    if (status) {
        f->conn = NULL;
        free(cn);
        finish(f, status, status == -ETIMEDOUT ? "Timeout while connecting" : NULL);
        return;
    }
    cn->s = s;
    gale_stream_set_close_cb(s, on_stream_close, cn);
    gale_stream_set_nodelay(s, true);
    char *req;
    size_t len;
    int rc = build_request(f, &req, &len);
    if (rc == 0)
        rc = gale_stream_write_ref(s, req, len, free, req, NULL, NULL);
    if (rc) {
        finish(f, rc, NULL);
        return;
    }
    read_head(f);
}

static void connect_phase(struct fetch *f)
{
    double now = gale_loop_time(f->loop);
    double ct = timeout_min(f->connect_timeout, f->request_timeout);
    if (f->request_timeout > 0) {
        int rc =
            gale_loop_call_at(f->loop, now + f->request_timeout, request_timeout, f, &f->timer);
        if (rc) {
            finish(f, rc, NULL);
            return;
        }
    }
    struct conn *cn = calloc(1, sizeof *cn);
    if (!cn) {
        finish(f, -ENOMEM, NULL);
        return;
    }
    cn->f = f;
    f->conn = cn;
    f->head_bytes = 0;
    f->body_got = 0;
    f->trailer_bytes = 0;
    int rc = gale_tcp_connect(f->loop, f->u.host, f->u.port, ct, on_connected, cn);
    if (rc) {
        f->conn = NULL;
        free(cn);
        finish(f, rc, NULL);
    }
}

/* Every stream callback starts here: the fetch, or NULL when the conn was detached. */
static struct fetch *conn_fetch(void *arg) { return ((struct conn *)arg)->f; }

static void complete(struct fetch *f)
{
    if (f->redirects_left < 0)
        finish(f, GALE_EREDIRECTS, "Too many redirects");
    else
        finish(f, 0, NULL);
}

static void fail_read(struct fetch *f, int status, const char *what)
{
    if (status == GALE_EEOF || status == -ECANCELED)
        finish(f, GALE_EEOF, what);
    else if (status == -EMSGSIZE)
        finish(f, -EMSGSIZE, "Response header block or chunk line too large");
    else if (status == -ENOBUFS)
        finish(f, -EFBIG, "Response too large");
    else
        finish(f, status, NULL);
}

/* The fetch a read callback belongs to; NULL when it is gone, or when the read failed (the fetch
 * is then failed with `what`, see fail_read). */
static struct fetch *read_ok(void *arg, int status, const char *what)
{
    struct fetch *f = conn_fetch(arg);
    if (f && status) {
        fail_read(f, status, what);
        return NULL;
    }
    return f;
}

/* ---- the body ---- */

static void on_piece(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct fetch *f = conn_fetch(arg);
    if (!f || len == 0)
        return;
    if (len > f->max_body_size - f->body_got) {
        finish(f, -EFBIG, "Response body too large");
        return;
    }
    f->body_got += len;
    if (f->streaming_cb) {
        f->streaming_cb(data, len, f->cb_arg);
    } else if (body_append(f->resp, data, len) != 0) {
        finish(f, -ENOMEM, NULL);
    }
}

static void on_body_done(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct fetch *f =
        read_ok(arg, status, "Connection closed before the response body was complete");
    if (!f)
        return;
    complete(f);
}

static void on_trailer_line(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct fetch *f = read_ok(arg, status, "Connection closed in the chunked trailer");
    if (!f)
        return;
    if (len == 2) {
        complete(f);
        return;
    }
    f->trailer_bytes += len;
    const char *colon = memchr(data, ':', len - 2);
    if (!colon || !gale_http_is_token(data, (size_t)(colon - data)) ||
        !gale_http_is_field_value(colon + 1, (size_t)(data + len - 2 - colon - 1))) {
        finish(f, GALE_EHTTP, "Malformed chunked trailer");
        return;
    }
    if (f->trailer_bytes >= f->max_header_size) {
        finish(f, -EMSGSIZE, "Chunked trailer too large");
        return;
    }
    int rc = gale_stream_read_until(s, "\r\n", 2, f->max_header_size - f->trailer_bytes,
                                    on_trailer_line, arg);
    if (rc)
        finish(f, rc, NULL);
}

static void on_chunk_crlf(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct fetch *f = read_ok(arg, status, "Connection closed inside a chunk");
    if (!f)
        return;
    if (len != 2 || data[0] != '\r' || data[1] != '\n') {
        finish(f, GALE_EHTTP, "Chunk data not followed by CRLF");
        return;
    }
    read_chunk_size(f);
}

static void on_chunk_data_done(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct fetch *f = read_ok(arg, status, "Connection closed inside a chunk");
    if (!f)
        return;
    int rc = gale_stream_read_bytes(s, 2, false, on_chunk_crlf, arg);
    if (rc)
        finish(f, rc, NULL);
}

/* chunk-size [ chunk-ext ] CRLF, with chunk-size = 1*HEXDIG. Returns 0 and the size, or -1. */
static int parse_chunk_size(const char *p, size_t len, size_t *out)
{
    size_t i = 0, v = 0;
    len -= 2; /* CRLF */
    for (; i < len; i++) {
        int d;
        char ch = p[i];
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            d = ch - 'A' + 10;
        else
            break;
        if (v > (SIZE_MAX >> 4))
            return -1; /* overflow */
        v = (v << 4) | (size_t)d;
    }
    if (i == 0)
        return -1;
    while (i < len && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (i < len) {
        /* chunk-ext: ";" name [ "=" value ]...: accepted without interpretation, but no CTL. */
        if (p[i] != ';' || !gale_http_is_field_value(p + i, len - i))
            return -1;
    }
    *out = v;
    return 0;
}

static void on_chunk_size(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct fetch *f = read_ok(arg, status, "Connection closed before the last chunk");
    if (!f)
        return;
    size_t size;
    if (parse_chunk_size(data, len, &size) != 0) {
        finish(f, GALE_EHTTP, "Malformed chunk size");
        return;
    }
    int rc;
    if (size == 0) {
        rc = gale_stream_read_until(s, "\r\n", 2, f->max_header_size, on_trailer_line, arg);
    } else if (size > f->max_body_size - f->body_got) {
        finish(f, -EFBIG, "Response body too large");
        return;
    } else {
        rc = gale_stream_read_stream(s, size, on_piece, on_chunk_data_done, arg);
    }
    if (rc)
        finish(f, rc, NULL);
}

static void read_chunk_size(struct fetch *f)
{
    int rc = gale_stream_read_until(f->conn->s, "\r\n", 2, CHUNK_LINE_MAX, on_chunk_size, f->conn);
    if (rc)
        finish(f, rc, NULL);
}

static void read_body(struct fetch *f, size_t length)
{
    gale_stream *s = f->conn->s;
    int rc = 0;
    switch (f->mode) {
    case B_NONE: complete(f); return;
    case B_LENGTH:
        if (length == 0) {
            complete(f);
            return;
        }
        rc = gale_stream_read_stream(s, length, on_piece, on_body_done, f->conn);
        break;
    case B_CLOSE: rc = gale_stream_read_stream(s, SIZE_MAX, on_piece, on_body_done, f->conn); break;
    case B_CHUNKED: read_chunk_size(f); return;
    }
    if (rc)
        finish(f, rc, NULL);
}

/* ---- the header block ---- */

/* Parses the header block (status line, headers, empty line) into `r`. Returns 0 or -1. */
static int parse_head(struct resp_impl *r, const char *data, size_t len)
{
    r->raw = dup_n(data, len);
    if (!r->raw)
        return -ENOMEM;
    char *p = r->raw, *end = r->raw + len - 2; /* end: the final empty line's CRLF */
    char *eol = strstr(p, "\r\n");
    if (!eol)
        return -1;
    size_t sl = (size_t)(eol - p);
    if (sl < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return -1;
    r->pub.code = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (r->pub.code < 100)
        return -1;
    if (sl > 12) {
        if (p[12] != ' ' || !gale_http_is_field_value(p + 13, sl - 13))
            return -1;
        r->pub.reason = p + 13;
    } else {
        r->pub.reason = "";
    }
    *eol = '\0';
    p = eol + 2;
    while (p < end) {
        eol = strstr(p, "\r\n");
        if (!eol || eol > end)
            return -1;
        size_t ll = (size_t)(eol - p);
        char *colon = memchr(p, ':', ll);
        /* No obs-fold, no whitespace before the colon, a token name. */
        if (!colon || !gale_http_is_token(p, (size_t)(colon - p)))
            return -1;
        char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (!gale_http_is_field_value(v, (size_t)(ve - v)))
            return -1;
        if (gale_http_headers_add(&r->pub.headers, p, (size_t)(colon - p), v, (size_t)(ve - v)))
            return -ENOMEM;
        p = eol + 2;
    }
    return 0;
}

/* Strict Content-Length: digits only, overflow-checked; repeats must agree. Returns 1 when
 * present (value in *out), 0 when absent, -1 when invalid. */
static int content_length(const gale_http_headers *h, size_t *out)
{
    size_t cursor = 0, n = 0;
    const gale_http_header *hd;
    size_t first = 0;
    while ((hd = gale_http_headers_next(h, "Content-Length", &cursor))) {
        if (hd->value.len == 0)
            return -1;
        size_t v = 0;
        for (size_t i = 0; i < hd->value.len; i++) {
            char ch = hd->value.p[i];
            if (ch < '0' || ch > '9' || v > (SIZE_MAX - 9) / 10)
                return -1;
            v = v * 10 + (size_t)(ch - '0');
        }
        if (n++ && v != first)
            return -1;
        first = v;
    }
    *out = first;
    return n > 0;
}

static bool is_redirect(int code)
{
    return code == 301 || code == 302 || code == 303 || code == 307 || code == 308;
}

/* Follows a redirect: same slot, new connection. Returns true if it took over the fetch. */
static bool follow_redirect(struct fetch *f)
{
    size_t loclen;
    const char *loc = gale_http_headers_get(&f->resp->pub.headers, "Location", &loclen);
    char *locs = dup_n(loc, loclen);
    char *next = locs ? gale__url_resolve(f->url, locs) : NULL;
    free(locs);
    if (!next) {
        finish(f, -ENOMEM, NULL);
        return true;
    }
    struct gale__url u;
    int rc = gale__url_parse(next, &u);
    if (rc) {
        free(next);
        finish(f, rc,
               rc == GALE_ESCHEME ? "Redirect to an unsupported scheme"
                                  : "Redirect to a malformed URL");
        return true;
    }
    int code = f->resp->pub.code;
    detach(f);
    if (f->timer) {
        gale_loop_remove_timeout(f->loop, f->timer);
        f->timer = 0;
    }
    gale_http_client_response_free(&f->resp->pub);
    f->resp = NULL;
    free(f->url);
    f->url = next;
    gale__url_free(&f->u);
    f->u = u;
    f->redirects++;
    f->redirects_left--;
    f->drop_host = true;
    /* As Tornado (and libcurl from 7.70) does: a 303 turns any method but HEAD into a GET, and
     * 301/302 turn a POST into one (what browsers do); other methods keep method and body. */
    bool is_head = strcmp(f->method, "HEAD") == 0;
    if ((code == 303 && !is_head) || ((code == 301 || code == 302) && !strcmp(f->method, "POST"))) {
        free(f->method);
        f->method = strdup("GET");
        if (!f->method) {
            finish(f, -ENOMEM, NULL);
            return true;
        }
        free(f->body);
        f->body = NULL;
        f->body_len = 0;
        f->drop_body_headers = true;
    }
    connect_phase(f);
    return true;
}

/* Decides how the body of f->resp is framed (f->mode; the length in *length for B_LENGTH).
 * Returns false when the response cannot be framed: the fetch has then finished with the error. */
static bool choose_framing(struct fetch *f, size_t *length)
{
    const struct resp_impl *r = f->resp;
    int code = r->pub.code;
    size_t cursor = 0, n_te = 0;
    const gale_http_header *te = NULL, *hd;
    while ((hd = gale_http_headers_next(&r->pub.headers, "Transfer-Encoding", &cursor))) {
        te = hd;
        n_te++;
    }
    int cl = content_length(&r->pub.headers, length);
    if (f->head_request || code == 204 || code == 304) {
        f->mode = B_NONE;
    } else if (te) {
        /* Only a single "chunked" is understood; anything else cannot be framed safely. */
        if (n_te != 1 || !gale_str_ieq(te->value.p, te->value.len, "chunked")) {
            finish(f, GALE_EHTTP, "Unsupported Transfer-Encoding");
            return false;
        }
        f->mode = B_CHUNKED;
    } else if (cl < 0) {
        finish(f, GALE_EHTTP, "Malformed Content-Length");
        return false;
    } else if (cl > 0) {
        if (*length > f->max_body_size) {
            finish(f, -EFBIG, "Response body too large");
            return false;
        }
        f->mode = B_LENGTH;
    } else {
        f->mode = B_CLOSE;
    }
    return true;
}

static void on_head(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct fetch *f = conn_fetch(arg);
    if (!f)
        return;
    if (status) {
        fail_read(f, status,
                  f->head_bytes || len ? "Connection closed inside the response headers"
                                       : "Connection closed without a response");
        return;
    }
    f->head_bytes += len;
    struct resp_impl *r = resp_new();
    if (!r) {
        finish(f, -ENOMEM, NULL);
        return;
    }
    if (f->resp)
        gale_http_client_response_free(&f->resp->pub);
    f->resp = r;
    int rc = parse_head(r, data, len);
    if (rc) {
        finish(f, rc == -ENOMEM ? -ENOMEM : GALE_EHTTP, "Malformed response status line or header");
        return;
    }
    int code = r->pub.code;
    if (code >= 100 && code < 200) {
        if (code == 101) {
            finish(f, GALE_EHTTP, "Unexpected 101 Switching Protocols");
            return;
        }
        /* Interim response (100 Continue, 103 Early Hints): the real one follows. */
        gale_http_client_response_free(&r->pub);
        f->resp = NULL;
        read_head(f);
        return;
    }

    size_t length = 0;
    if (!choose_framing(f, &length))
        return;
    if (f->follow_redirects && is_redirect(code) &&
        gale_http_headers_get(&r->pub.headers, "Location", NULL)) {
        if (f->redirects_left > 0) {
            follow_redirect(f);
            return;
        }
        /* Out of redirects: the 3xx itself is the answer, flagged. Its body is read below. */
        f->raise_error = false;
        f->streaming_cb = NULL;
        f->header_cb = NULL;
        f->redirects_left = -1;
    }
    if (f->header_cb) {
        struct conn *cn = f->conn;
        f->header_cb(&r->pub, f->cb_arg);
        if (cn->f != f)
            return; /* the callback ended this fetch (freed the client) */
    }
    read_body(f, length);
}

static void read_head(struct fetch *f)
{
    if (f->head_bytes >= f->max_header_size) {
        finish(f, -EMSGSIZE, "Response header block too large");
        return;
    }
    int rc = gale_stream_read_until(f->conn->s, "\r\n\r\n", 4, f->max_header_size - f->head_bytes,
                                    on_head, f->conn);
    if (rc)
        finish(f, rc, NULL);
}

/* ---- public API ---- */

void gale_http_client_request_init(gale_http_client_request *req, const char *url)
{
    if (!req)
        return;
    memset(req, 0, sizeof *req);
    req->url = url;
    req->method = "GET";
    req->connect_timeout = GALE_HTTP_CLIENT_DEFAULT_TIMEOUT;
    req->request_timeout = GALE_HTTP_CLIENT_DEFAULT_TIMEOUT;
    req->follow_redirects = true;
    req->max_redirects = GALE_HTTP_CLIENT_DEFAULT_MAX_REDIRECTS;
    req->raise_error = true;
}

int gale_http_client_new(gale_loop *loop, const gale_http_client_opts *opts, gale_http_client **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    gale_http_client_opts o = opts ? *opts : (gale_http_client_opts){0};
    if (o.max_clients < 0)
        return -EINVAL;
    if (!loop)
        loop = gale_loop_current();
    if (!loop)
        return -ENOMEM;
    gale_http_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->max_clients = o.max_clients ? o.max_clients : GALE_HTTP_CLIENT_DEFAULT_MAX_CLIENTS;
    c->max_header_size =
        o.max_header_size ? o.max_header_size : GALE_HTTP_CLIENT_DEFAULT_MAX_HEADER;
    c->max_body_size = o.max_body_size ? o.max_body_size : GALE_HTTP_CLIENT_DEFAULT_MAX_BODY;
    c->user_agent = strdup(o.user_agent ? o.user_agent : DEFAULT_USER_AGENT);
    if (!c->user_agent) {
        free(c);
        return -ENOMEM;
    }
    gale_list_init(&c->queue);
    gale_list_init(&c->active);
    *out = c;
    return 0;
}

void gale_http_client_free(gale_http_client *c)
{
    if (!c)
        return;
    c->freeing = true;
    gale_list *lists[2] = {&c->active, &c->queue};
    for (int i = 0; i < 2; i++) {
        while (!gale_list_empty(lists[i])) {
            struct fetch *f = gale_list_entry(lists[i]->next, struct fetch, node);
            finish(f, -ECANCELED, "HTTP client freed");
        }
    }
    free(c->user_agent);
    free(c);
}

size_t gale_http_client_active(const gale_http_client *c) { return c ? c->n_active : 0; }
size_t gale_http_client_queued(const gale_http_client *c) { return c ? c->n_queued : 0; }

/* Copies the request into `f`. Returns 0, -ENOMEM, or -EINVAL for a header or method that would
 * let bytes be injected into the request. */
static int copy_request(struct fetch *f, const gale_http_client *c,
                        const gale_http_client_request *req)
{
    const char *method = req->method ? req->method : "GET";
    f->url = strdup(req->url);
    f->method = strdup(method);
    f->user_agent = strdup(req->user_agent ? req->user_agent : c->user_agent);
    if (!f->url || !f->method || !f->user_agent)
        return -ENOMEM;
    if (req->body_len) {
        if (!req->body)
            return -EINVAL;
        f->body = malloc(req->body_len);
        if (!f->body)
            return -ENOMEM;
        memcpy(f->body, req->body, req->body_len);
        f->body_len = req->body_len;
    }
    size_t total = 0;
    for (size_t i = 0; i < req->headers.n; i++)
        total += req->headers.items[i].name.len + req->headers.items[i].value.len;
    f->header_bytes = malloc(total + 1);
    if (!f->header_bytes)
        return -ENOMEM;
    char *p = f->header_bytes;
    for (size_t i = 0; i < req->headers.n; i++) {
        const gale_http_header *h = &req->headers.items[i];
        if (h->value.len && !h->value.p)
            return -EINVAL;
        if (!h->name.p || !gale_http_is_token(h->name.p, h->name.len) ||
            !gale_http_is_field_value(h->value.p, h->value.len))
            return -EINVAL;
        memcpy(p, h->name.p, h->name.len);
        memcpy(p + h->name.len, h->value.p, h->value.len);
        if (gale_http_headers_add(&f->headers, p, h->name.len, p + h->name.len, h->value.len))
            return -ENOMEM;
        p += h->name.len + h->value.len;
    }
    if (!gale_http_is_token(method, strlen(method)))
        return -EINVAL;
    f->head_request = strcmp(method, "HEAD") == 0;
    f->connect_timeout =
        req->connect_timeout == 0 ? GALE_HTTP_CLIENT_DEFAULT_TIMEOUT : req->connect_timeout;
    f->request_timeout =
        req->request_timeout == 0 ? GALE_HTTP_CLIENT_DEFAULT_TIMEOUT : req->request_timeout;
    if (isnan(f->connect_timeout) || isnan(f->request_timeout))
        return -EINVAL;
    f->follow_redirects = req->follow_redirects;
    f->redirects_left =
        req->max_redirects > 0 ? req->max_redirects : GALE_HTTP_CLIENT_DEFAULT_MAX_REDIRECTS;
    f->raise_error = req->raise_error;
    f->max_header_size = c->max_header_size;
    f->max_body_size = req->max_body_size ? req->max_body_size : c->max_body_size;
    f->header_cb = req->header_cb;
    f->streaming_cb = req->streaming_cb;
    f->cb_arg = req->cb_arg;
    return 0;
}

static int fetch_common(gale_http_client *c, const gale_http_client_request *req,
                        gale_http_fetch_cb cb, void *arg, gale_future *future)
{
    struct fetch *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->client = c;
    f->loop = c->loop;
    f->cb = cb;
    f->arg = arg;
    f->future = future;
    f->t_start = gale_loop_time(c->loop);
    f->state = F_NEW;
    gale_list_init(&f->node);
    int rc = copy_request(f, c, req);
    if (rc == 0)
        rc = gale__url_parse(f->url, &f->u);
    if (rc == -ENOMEM || !f->url) {
        f->future = NULL;
        fetch_free(f);
        return -ENOMEM;
    }
    if (rc) {
        const char *msg = rc == GALE_ESCHEME ? "Unsupported URL scheme (only http:// is supported)"
                          : rc == -EINVAL    ? "Malformed URL, method or header"
                                             : NULL;
        f->client = NULL;
        finish(f, rc, msg);
        return 0;
    }
    if (c->n_active < (size_t)c->max_clients && gale_list_empty(&c->queue)) {
        start(f);
        return 0;
    }
    f->state = F_QUEUED;
    gale_list_push_back(&c->queue, &f->node);
    c->n_queued++;
    double qt = timeout_min(f->connect_timeout, f->request_timeout);
    if (qt > 0) {
        rc = gale_loop_call_later(c->loop, qt, queue_timeout, f, &f->timer);
        if (rc) {
            gale_list_unlink(&f->node);
            c->n_queued--;
            f->future = NULL;
            fetch_free(f);
            return rc;
        }
    }
    return 0;
}

int gale_http_fetch(gale_http_client *c, const gale_http_client_request *req, gale_http_fetch_cb cb,
                    void *arg)
{
    if (!c || !req || !req->url || !cb || c->freeing)
        return -EINVAL;
    return fetch_common(c, req, cb, arg, NULL);
}

gale_future *gale_http_fetch_future(gale_http_client *c, const gale_http_client_request *req)
{
    if (!c)
        return NULL;
    gale_future *fut = gale_future_new(c->loop);
    if (!fut)
        return NULL;
    if (!req || !req->url || c->freeing) {
        gale_future_set_error(fut, -EINVAL, NULL);
        return fut;
    }
    gale_future_ref(fut); /* the fetch's reference */
    int rc = fetch_common(c, req, NULL, NULL, fut);
    if (rc) {
        gale_future_unref(fut);
        gale_future_set_error(fut, rc, NULL);
    }
    return fut;
}

/* The response: status and headers as the handler sets them, the framing chosen once the head
 * goes out (decide_framing), the head written in one pass (write_head), the body in that framing,
 * flush and finish.
 *
 * A response is collected in its request's arena (headers) and body buffer; the head and body go
 * into the connection's output buffer when the handler flushes or finishes, and leave with the
 * batch's one write (httpserver.c). Framing: a finished response whose length is known gets
 * Content-Length; one flushed before its end is chunked on HTTP/1.1 and closes the connection
 * on HTTP/1.0; HEAD and the bodyless statuses (1xx, 204, 304) send no body.
 */
#include "http/httpserver_internal.h"
#include "http/server_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

char *gale__put_uint_long(char *p, unsigned long long v)
{
    int n = 1;
    for (unsigned long long t = v; t >= 10; t /= 10)
        n++;
    char *e = p + n;
    do {
        *--e = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p + n;
}

/* Validates a response header (name a token, no CR or LF in the value) and measures both. */
static int check_header(const char *name, const char *value, size_t *nl, size_t *vl)
{
    if (!name || !*name || !value)
        return -EINVAL;
    const char *s = name;
    for (; *s; s++)
        if (!gale_http_is_tchar((unsigned char)*s))
            return -EINVAL;
    *nl = (size_t)(s - name);
    for (s = value; *s; s++)
        if (*s == '\r' || *s == '\n')
            return -EINVAL;
    *vl = (size_t)(s - value);
    return 0;
}

int gale_http_response_set_status(gale_http_request *req, int code, const char *reason)
{
    struct req *r = req_of(req);
    if (!r || code < 100 || code > 999)
        return -EINVAL;
    if (r->headers_sent || r->finished)
        return -EALREADY;
    if (reason) {
        if (strpbrk(reason, "\r\n"))
            return -EINVAL;
        reason = arena_strndup(r, reason, strlen(reason));
        if (!reason)
            return -ENOMEM;
    }
    r->status = code;
    r->reason = reason;
    return 0;
}

int gale_http_response_clear_header(gale_http_request *req, const char *name)
{
    struct req *r = req_of(req);
    if (!r || !name)
        return -EINVAL;
    if (r->headers_sent || r->finished)
        return -EALREADY;
    size_t j = 0;
    for (size_t i = 0; i < r->rh.n; i++)
        if (!gale_str_ieq(r->rh.items[i].name.p, r->rh.items[i].name.len, name))
            r->rh.items[j++] = r->rh.items[i];
    r->rh.n = j;
    size_t nl = strlen(name);
    if (r->preset_len > nl && r->preset[nl] == ':' && gale_str_ieq(r->preset, nl, name))
        r->preset_len = 0; /* the preset line is this header's */
    if (gale_str_ieq(name, nl, "Content-Length"))
        r->user_cl = -1;
    return 0;
}

/* Appends a header whose name and value were validated; `copy`: into the arena, else the caller
 * keeps the strings alive until the response finishes. */
static int push_header(struct req *r, const char *name, size_t nl, const char *value, size_t vl,
                       bool copy)
{
    if (r->headers_sent || r->finished)
        return -EALREADY;
    long long cl = -1;
    if (nl == 14 && gale_str_ieq(name, nl, "Content-Length")) {
        size_t l = vl;
        const char *v = gale_http_trim_ows(value, &l);
        if (!l || l > 18)
            return -EINVAL;
        cl = 0;
        for (size_t i = 0; i < l; i++) {
            if (v[i] < '0' || v[i] > '9')
                return -EINVAL;
            cl = cl * 10 + (v[i] - '0');
        }
        /* Sent as checked: the digits alone (" 6 " goes out as "6"). */
        value = v;
        vl = l;
    }
    if (r->rh.n == r->rh.cap) {
        size_t ncap = r->rh.cap ? r->rh.cap * 2 : 8;
        gale_http_header *items = arena_raw(r, ncap * sizeof *items);
        if (!items)
            return -ENOMEM;
        if (r->rh.n)
            memcpy(items, r->rh.items, r->rh.n * sizeof *items);
        r->rh.items = items;
        r->rh.cap = ncap;
    }
    if (copy) {
        name = arena_strndup(r, name, nl);
        value = arena_strndup(r, value, vl);
        if (!name || !value)
            return -ENOMEM;
    }
    r->rh.items[r->rh.n++] = (gale_http_header){{name, nl}, {value, vl}};
    if (cl >= 0)
        r->user_cl = cl;
    return 0;
}

static int add_header(struct req *r, const char *name, const char *value)
{
    size_t nl, vl;
    int rc = check_header(name, value, &nl, &vl);
    if (rc < 0)
        return rc;
    return push_header(r, name, nl, value, vl, true);
}

int gale_http_response_set_header(gale_http_request *req, const char *name, const char *value)
{
    struct req *r = req_of(req);
    if (!r)
        return -EINVAL;
    size_t nl, vl;
    int rc = check_header(name, value, &nl, &vl);
    if (rc < 0)
        return rc;
    if (r->headers_sent || r->finished)
        return -EALREADY;
    if (r->rh.n || r->preset_len)
        gale_http_response_clear_header(req, name);
    return add_header(r, name, value);
}

int gale_http_response_add_header(gale_http_request *req, const char *name, const char *value)
{
    struct req *r = req_of(req);
    if (!r)
        return -EINVAL;
    return add_header(r, name, value);
}

int gale_http_response_add_header_trusted(gale_http_request *req, const char *name, size_t name_len,
                                          const char *value, size_t value_len)
{
    struct req *r = req_of(req);
    if (!r || !name || !name_len || !value)
        return -EINVAL;
    return push_header(r, name, name_len, value, value_len, false);
}

int gale__http_response_preset(gale_http_request *req, const char *line, size_t len)
{
    struct req *r = req_of(req);
    if (!r || (!line && len))
        return -EINVAL;
    if (r->headers_sent || r->finished)
        return -EALREADY;
    r->preset = line;
    r->preset_len = len;
    return 0;
}

int gale_http_response_write(gale_http_request *req, const void *data, size_t len)
{
    struct req *r = req_of(req);
    if (!r || (!data && len))
        return -EINVAL;
    if (r->finished)
        return -EALREADY;
    if (r->closed || !conn_open(r->conn))
        return -EPIPE;
    if (!len)
        return 0;
    if (r->wlen + len < r->wlen)
        return -ENOMEM;
    if (grow(r, &r->w, r->wlen, &r->wcap, &r->w_heap, r->wlen + len, 0) < 0)
        return -ENOMEM;
    gale__copy(r->w + r->wlen, data, len);
    r->wlen += len;
    return 0;
}

int gale_http_response_clear_body(gale_http_request *req)
{
    struct req *r = req_of(req);
    if (!r)
        return -EINVAL;
    if (r->finished)
        return -EALREADY;
    r->wlen = 0;
    return 0;
}

const char *gale__http_response_buffered(gale_http_request *req, size_t *len)
{
    struct req *r = req_of(req);
    *len = r->wlen;
    return r->wlen ? r->w : NULL;
}

static bool bodyless_status(int s) { return s < 200 || s == 204 || s == 304; }

/* True when a Connection header's value lists "close". */
static bool value_has_close(const gale_http_header *h)
{
    gale_http_headers one = {(gale_http_header *)h, 1, 1};
    return gale_http_headers_has_token(&one, "Connection", "close");
}

enum { HK_OTHER, HK_SERVER, HK_DATE, HK_CL, HK_TE, HK_CONNECTION };

static int header_kind(const gale_http_header *h)
{
    switch (h->name.len) {
    case 4: return gale_str_ieq(h->name.p, 4, "Date") ? HK_DATE : HK_OTHER;
    case 6: return gale_str_ieq(h->name.p, 6, "Server") ? HK_SERVER : HK_OTHER;
    case 10: return gale_str_ieq(h->name.p, 10, "Connection") ? HK_CONNECTION : HK_OTHER;
    case 14: return gale_str_ieq(h->name.p, 14, "Content-Length") ? HK_CL : HK_OTHER;
    case 17: return gale_str_ieq(h->name.p, 17, "Transfer-Encoding") ? HK_TE : HK_OTHER;
    default: return HK_OTHER;
    }
}

/* "Server: gale\r\nDate: <IMF-fixdate>\r\n", rebuilt once a second. Validity is kept on the
 * loop's monotonic clock, whose reading the caller already has, so a response costs no clock
 * read of its own: the block is valid until the wall clock's next second began, as seen at the
 * last rebuild (a wall clock step shows within a second). */
#define SERVER_LINE "Server: gale\r\n"
#define SERVER_LINE_LEN (sizeof SERVER_LINE - 1)
#define DATE_LINE_LEN (6 + 29 + 2)

/* Most heads begin "HTTP/1.1 200 OK\r\n", the Server and Date block and the same preset line (the
 * web layer's default Content-Type): that beginning is kept with the block, rebuilt with it or
 * when the preset line changes (told by its address and length: preset lines are constants),
 * and copied in one fixed-size move of OK_HEAD_MAX bytes. */
#define OK_LINE "HTTP/1.1 200 OK\r\n"
#define OK_LINE_LEN (sizeof OK_LINE - 1)
#define OK_HEAD_MAX 128
#define OK_PRESET_MAX (OK_HEAD_MAX - OK_LINE_LEN - SERVER_LINE_LEN - DATE_LINE_LEN)

static _Thread_local struct {
    double valid_until; /* loop time */
    unsigned gen;       /* rebuilds of block */
    char block[SERVER_LINE_LEN + DATE_LINE_LEN + 1];
    unsigned ok_gen; /* the block's rebuild `ok` holds (0: none) */
    const char *ok_preset;
    size_t ok_preset_len, ok_len;
    char ok[OK_HEAD_MAX];
} tls_head;

static const char *server_date_block(double now)
{
    if (now >= tls_head.valid_until || tls_head.block[0] == '\0') {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        char *p = tls_head.block;
        memcpy(p, SERVER_LINE "Date: ", SERVER_LINE_LEN + 6);
        gale_http_format_date((long long)ts.tv_sec, p + SERVER_LINE_LEN + 6);
        memcpy(p + SERVER_LINE_LEN + 6 + 29, "\r\n", 3);
        tls_head.valid_until = now + (1e9 - (double)ts.tv_nsec) / 1e9;
        if (++tls_head.gen == 0)
            tls_head.gen = 1;
    }
    return tls_head.block;
}

/* "HTTP/1.1 200 OK\r\n", the block and `preset` (up to OK_PRESET_MAX bytes), `*len` bytes at the
 * pointer returned, which is readable for OK_HEAD_MAX. */
static const char *ok_head(double now, const char *preset, size_t plen, size_t *len)
{
    server_date_block(now);
    if (tls_head.ok_gen != tls_head.gen || tls_head.ok_preset != preset ||
        tls_head.ok_preset_len != plen) {
        assert(plen <= OK_PRESET_MAX);
        char *p = PUT_LIT(tls_head.ok, OK_LINE);
        p = put_str(p, tls_head.block, SERVER_LINE_LEN + DATE_LINE_LEN);
        if (plen)
            p = put_str(p, preset, plen);
        tls_head.ok_len = (size_t)(p - tls_head.ok);
        tls_head.ok_preset = preset;
        tls_head.ok_preset_len = plen;
        tls_head.ok_gen = tls_head.gen;
    }
    *len = tls_head.ok_len;
    return tls_head.ok;
}

/* What a response's head will say, decided before a byte of it is written. */
struct head_plan {
    const char *reason; /* NULL for "200 OK" (one constant-size copy, no lookup) */
    size_t rlen;
    size_t need;               /* bytes the head may take */
    bool has_server, has_date; /* the handler set its own */
    bool strip_cl;             /* a status that must not carry Content-Length (1xx, 204) */
    bool add_cl;               /* the server adds Content-Length: cl */
    unsigned long long cl;
    uint8_t kinds[16]; /* header_kind of the first 16 headers */
};

/* Looks once at the status and the handler's headers: the reason phrase, the Server and Date
 * headers the handler set itself, a "Connection: close" among them, the room the head needs. */
static void plan_head(struct req *r, struct head_plan *h)
{
    h->need = 256 + r->preset_len;
    h->has_server = h->has_date = false;
    h->reason = NULL;
    h->rlen = 0;
    if (r->status != 200 || r->reason) {
        h->reason = r->reason ? r->reason : gale_http_reason(r->status);
        h->rlen = strlen(h->reason);
        h->need += h->rlen;
    }
    for (size_t i = 0; i < r->rh.n; i++) {
        const gale_http_header *hd = &r->rh.items[i];
        int k = header_kind(hd);
        if (i < 16)
            h->kinds[i] = (uint8_t)k;
        if (k == HK_SERVER)
            h->has_server = true;
        else if (k == HK_DATE)
            h->has_date = true;
        else if (k == HK_CONNECTION && value_has_close(hd))
            r->keep_alive = false;
        h->need += hd->name.len + hd->value.len + 4;
    }
}

/* Chooses how the body is delimited (RFC 9112 6.1-6.3) and whether the connection stays open
 * after it. `final`: the whole body is known (finish) rather than being flushed. */
static void decide_framing(struct req *r, bool final, struct head_plan *h)
{
    struct gale_http_conn *c = r->conn;
    h->strip_cl = r->status < 200 || r->status == 204;
    h->add_cl = false;
    h->cl = 0;
    if (r->head || bodyless_status(r->status)) {
        r->framing = FR_NONE;
        if (final && r->user_cl < 0 && !bodyless_status(r->status)) {
            h->add_cl = true; /* HEAD: the length the GET would have had */
            h->cl = r->wlen;
        }
    } else if (r->user_cl >= 0) {
        r->framing = FR_LENGTH;
    } else if (final) {
        r->framing = FR_LENGTH;
        h->add_cl = true;
        h->cl = r->wlen;
        r->user_cl = (long long)h->cl;
    } else if (r->pub.version_major == 1 && r->pub.version_minor >= 1) {
        r->framing = FR_CHUNKED;
    } else {
        r->framing = FR_CLOSE;
        r->keep_alive = false;
    }
    if (!c->srv)
        r->keep_alive = false;
    else if (r->keep_alive && c->srv->draining && !gale__conn_input_waiting(c))
        r->keep_alive = false; /* shutting down: this is the connection's last response */
}

/* Appends the planned status line and headers to the connection's output. `now`: a recent loop
 * time (for the Date header). */
static int write_head(struct req *r, const struct head_plan *h, double now)
{
    struct gale_http_conn *c = r->conn;
    struct obuf *o = gale__conn_out(c);
    char *p;
    if (!o || obuf_reserve(o, h->need, &p) < 0)
        return -ENOMEM;
    char *start = p;
    bool ok_used = false;
    if (!h->reason && !h->has_server && !h->has_date && r->preset_len <= OK_PRESET_MAX) {
        size_t n;
        const char *ok = ok_head(now, r->preset, r->preset_len, &n);
        memcpy(p, ok, OK_HEAD_MAX); /* h->need >= 256: room; the bytes past n are overwritten */
        p += n;
        ok_used = true;
    } else if (!h->reason) {
        p = PUT_LIT(p, "HTTP/1.1 200 OK\r\n");
    } else {
        p = PUT_LIT(p, "HTTP/1.1 ");
        p = put_status(p, r->status);
        *p++ = ' ';
        p = put_str(p, h->reason, h->rlen);
        p = PUT_LIT(p, "\r\n");
    }
    if (!ok_used) {
        if (!h->has_server || !h->has_date) {
            const char *block = server_date_block(now);
            if (!h->has_server && !h->has_date)
                p = put_str(p, block, SERVER_LINE_LEN + DATE_LINE_LEN);
            else if (!h->has_date)
                p = put_str(p, block + SERVER_LINE_LEN, DATE_LINE_LEN);
            else
                p = put_str(p, block, SERVER_LINE_LEN);
        }
        p = put_str(p, r->preset, r->preset_len);
    }
    for (size_t i = 0; i < r->rh.n; i++) {
        const gale_http_header *hd = &r->rh.items[i];
        int k = i < 16 ? h->kinds[i] : header_kind(hd);
        if (k == HK_TE || k == HK_CONNECTION || (k == HK_CL && h->strip_cl))
            continue;
        p = put_str(p, hd->name.p, hd->name.len);
        p = PUT_LIT(p, ": ");
        p = put_str(p, hd->value.p, hd->value.len);
        p = PUT_LIT(p, "\r\n");
    }
    if (h->add_cl) {
        p = PUT_LIT(p, "Content-Length: ");
        p = put_uint(p, h->cl);
        p = PUT_LIT(p, "\r\n");
    }
    if (r->framing == FR_CHUNKED)
        p = PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    if (!r->keep_alive)
        p = PUT_LIT(p, "Connection: close\r\n");
    else if (r->pub.version_minor == 0)
        p = PUT_LIT(p, "Connection: keep-alive\r\n");
    p = PUT_LIT(p, "\r\n");
    o->len += (size_t)(p - start);
    r->headers_sent = true;
    return 0;
}

/* Appends the status line and headers to the connection's output. `final`: the response is
 * complete (Content-Length known) rather than being flushed. `now`: a recent loop time. */
static int emit_head(struct req *r, bool final, double now)
{
    struct head_plan h;
    plan_head(r, &h);
    decide_framing(r, final, &h);
    return write_head(r, &h, now);
}

/* Appends the buffered body to the output in the response's framing. */
static int emit_body(struct req *r)
{
    struct gale_http_conn *c = r->conn;
    size_t len = r->wlen;
    r->wlen = 0;
    if (!len || r->framing == FR_NONE)
        return 0;
    if (r->framing == FR_LENGTH) {
        if (r->sent + len > (unsigned long long)r->user_cl) {
            gale_log(GALE_LOG_ERROR, GALE_LOG_GENERAL,
                     "%s %s: body longer than its Content-Length, truncated", r->pub.method,
                     r->pub.uri);
            len = (size_t)((unsigned long long)r->user_cl - r->sent);
            r->keep_alive = false;
        }
        r->sent += len;
    }
    if (r->framing == FR_CHUNKED) { /* the chunk's size line, in place */
        struct obuf *o = gale__conn_out(c);
        char *at;
        if (!o || obuf_reserve(o, 24, &at) < 0)
            return -ENOMEM;
        o->len += (size_t)snprintf(at, 24, "%zx\r\n", len);
    }
    int rc = 0;
    if (len >= BIG_BODY)
        rc = gale__conn_write_through(c, r->w, len);
    else
        rc = out_append(c, r->w, len);
    if (rc == 0 && r->framing == FR_CHUNKED)
        rc = out_append(c, "\r\n", 2);
    return rc == -EPIPE ? 0 : rc;
}

int gale_http_response_flush(gale_http_request *req)
{
    struct req *r = req_of(req);
    if (!r)
        return -EINVAL;
    if (r->finished)
        return -EALREADY;
    if (r->closed || !conn_open(r->conn))
        return -EPIPE;
    struct gale_http_conn *c = r->conn;
    int rc = 0;
    if (!r->headers_sent)
        rc = emit_head(r, false, c->in_batch ? c->batch->time : gale_loop_time(c->loop));
    if (rc == 0)
        rc = emit_body(r);
    if (!c->in_batch)
        gale__conn_flush(c);
    return rc;
}

int gale_http_response_flush_cb(gale_http_request *req, gale_http_flushed_cb cb, void *arg)
{
    if (!cb)
        return -EINVAL;
    struct flush_wait *w = malloc(sizeof *w);
    if (!w)
        return -ENOMEM;
    int rc = gale_http_response_flush(req);
    if (rc) {
        free(w);
        return rc;
    }
    /* From here the callback runs: with the flush's outcome, or with the connection's end. The
     * wait joins the connection's list; inside a batch its bytes are still in the batch's buffer
     * and it is handed to the stream after them, at the batch's end. */
    *w = (struct flush_wait){.cb = cb, .arg = arg};
    gale__conn_add_flush_wait(req_of(req)->conn, w);
    return 0;
}

int gale__http_response_sendfile(gale_http_request *req, int fd, off_t offset, size_t len,
                                 gale_done_cb cb, void *arg)
{
    struct req *r = req_of(req);
    if (r->finished)
        return -EALREADY;
    if (r->closed || !conn_open(r->conn))
        return -EPIPE;
    if (!r->headers_sent || r->framing != FR_LENGTH || r->wlen ||
        r->sent + len > (unsigned long long)r->user_cl)
        return -EINVAL;
    int rc = gale__conn_send_file(r->conn, fd, offset, len, cb, arg);
    if (rc == 0)
        r->sent += len;
    return rc;
}

size_t gale_http_response_pending(const gale_http_request *req)
{
    const struct req *r = req_of(req);
    if (!r || !conn_open(r->conn))
        return 0;
    const struct gale_http_conn *c = r->conn;
    return (c->out ? c->out->len : 0) + gale_stream_write_pending(c->stream);
}
/* The whole body is known at finish and contradicts the handler's Content-Length: no valid
 * response can say both, so the answer becomes a 500 rather than a truncated or overlong one. */
static void refuse_length_mismatch(struct req *r)
{
    gale_log(GALE_LOG_ERROR, GALE_LOG_GENERAL,
             "%s %s: Content-Length %lld does not match the %zu-byte body; answering 500",
             r->pub.method, r->pub.uri, r->user_cl, r->wlen);
    r->status = 500;
    r->reason = NULL;
    r->user_cl = -1;
    r->rh.n = 0;
    r->preset_len = 0;
    r->wlen = 0;
}

/* Appends the rest of a finishing response to the output: the head if not flushed yet, the
 * body, the last chunk. Settles whether the connection stays open after it. */
static int emit_final(struct req *r, double now)
{
    struct gale_http_conn *c = r->conn;
    int rc = 0;
    if (r->user_cl >= 0 && !r->headers_sent && !r->head && !bodyless_status(r->status) &&
        (unsigned long long)r->user_cl != r->wlen)
        refuse_length_mismatch(r);
    if (!r->headers_sent)
        rc = emit_head(r, true, now);
    else if (r->keep_alive && draining(c) && !gale__conn_input_waiting(c))
        r->keep_alive = false; /* flushed before the shutdown: close after it */
    if (rc == 0)
        rc = emit_body(r);
    if (rc == 0 && r->framing == FR_CHUNKED)
        rc = out_append(c, "0\r\n\r\n", 5);
    if (r->framing == FR_LENGTH && !r->head && r->sent != (unsigned long long)r->user_cl) {
        gale_log(GALE_LOG_ERROR, GALE_LOG_GENERAL,
                 "%s %s: body shorter than its Content-Length (%llu of %lld)", r->pub.method,
                 r->pub.uri, r->sent, r->user_cl);
        r->keep_alive = false;
    }
    if (r->framing == FR_CLOSE)
        r->keep_alive = false;
    return rc;
}

int gale_http_response_finish(gale_http_request *req)
{
    struct req *r = req_of(req);
    if (!r)
        return -EINVAL;
    if (r->finished)
        return -EALREADY;
    struct gale_http_conn *c = r->conn;
    r->finished = true;
    bool alive = !r->closed && conn_open(c) && c->req == r;
    /* One clock read serves the Date header, the access log and the idle deadline; within a
     * batch its arrival time serves (the access line waits for the batch's end). */
    double now = c->in_batch ? c->batch->time : gale_loop_time(c->loop);
    int rc = alive ? emit_final(r, now) : -EPIPE;
    if (c->srv && !c->srv->opts.no_access_log)
        gale__access_log(r, now);
    bool keep = rc == 0 && r->keep_alive;
    if (c->req == r)
        c->req = NULL;
    if (!r->in_close_cb)
        gale__req_free(r); /* else conn_on_close frees it when the close callback returns */
    if (!alive) {
        gale__conn_maybe_free(c);
        return rc;
    }
    if (rc < 0) {
        gale_stream_close(c->stream, rc);
        return rc;
    }
    assert(c->phase == PH_HANDLER || c->phase == PH_STREAM);
    gale__conn_answered(c, keep, now);
    return 0;
}

int gale_http_response_status(const gale_http_request *req)
{
    return req ? req_of(req)->status : -EINVAL;
}

bool gale_http_response_headers_sent(const gale_http_request *req)
{
    return req && req_of(req)->headers_sent;
}

bool gale_http_request_connection_closed(const gale_http_request *req)
{
    if (!req)
        return true;
    const struct req *r = req_of(req);
    return r->closed || !conn_open(r->conn);
}

void gale_http_request_set_close_cb(gale_http_request *req, gale_http_close_cb cb, void *arg)
{
    if (!req)
        return;
    struct req *r = req_of(req);
    r->close_cb = cb;
    r->close_arg = arg;
}

void gale__response_error(struct gale_http_conn *c, int status)
{
    char buf[256], *p = buf;
    const char *reason = gale_http_reason(status);
    p = PUT_LIT(p, "HTTP/1.1 ");
    p = put_uint(p, (unsigned)status);
    *p++ = ' ';
    p = put_str(p, reason, strlen(reason));
    p = PUT_LIT(p, "\r\nServer: gale\r\nDate: ");
    p = put_str(p, gale_http_date(), 29);
    p = PUT_LIT(p, "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    out_append(c, buf, (size_t)(p - buf));
}

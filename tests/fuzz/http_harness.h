/* The HTTP request path under fuzz: one loop and one web application (routes of the kinds the
 * demo has: synchronous, asynchronous through a 0 ms timer, chunked flushes, body echo, form
 * arguments, cookies, path arguments, status and header setting, redirects, errors) serving a
 * unix socket in /tmp (the kernel's share of each input is far smaller than over loopback TCP),
 * created once per process. Each input opens one client connection, sends its
 * bytes in pieces whose sizes come from the input (one piece per loop iteration, so the server
 * sees each split), half-closes (at once, or once the server has gone quiet with no handler
 * pending, so pipelined requests behind asynchronous ones are served), reads until the server
 * closes, and checks:
 *   - every response starts with a valid "HTTP/1.1 NNN reason" line and well-formed headers, and
 *     its framing (Content-Length, chunked, none for HEAD/204/304, close-delimited last) holds;
 *   - no more final responses than requests a reference http-parser saw begin, and any response
 *     past the requests it saw complete is the last one and says "Connection: close";
 *   - a request whose Transfer-Encoding is anything but one header saying "chunked" (two TE
 *     headers, "chunked, chunked", "gzip, chunked"...) is answered 400 (or 431/413 when a limit
 *     was hit first) and the connection closes
 *     (request smuggling, LESSONS 6-7);
 *   - the server closes the connection within a bounded number of iterations after the client
 *     half-closed, every asynchronous handler finished, no timer and no descriptor is left.
 * Used by fuzz_http.c (raw request bytes) and fuzz_chunked.c (a chunked body). */
#ifndef GALE_TESTS_FUZZ_HTTP_HARNESS_H
#define GALE_TESTS_FUZZ_HTTP_HARNESS_H

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "http/web.h"
#include "net/tcpserver.h"

#define H_MAX_HEADER 2048
#define H_MAX_BODY 1024
#define H_MAX_REQS 512

/* ---- the application ---- */

static gale_loop *h_loop;
static gale_app *h_app;
static char h_path[64];
static int h_inflight; /* asynchronous handlers not finished yet */

static long h_digits(const char *s, long max)
{
    if (!s || !*s)
        return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > max)
            return -1;
    }
    return v;
}

static void hello_get(gale_handler *h) { gale_write(h, "Hello, world!", 13); }
static const gale_handler_class hello_class = {.get = hello_get, .post = hello_get};

static void echo_body(gale_handler *h)
{
    size_t len;
    const char *body = gale_body(h, &len);
    gale_set_header(h, "Content-Type", "application/octet-stream");
    gale_write(h, body, len);
}
static const gale_handler_class echo_class = {
    .post = echo_body, .put = echo_body, .patch = echo_body};

/* Asynchronous: finishes from a 0 ms timer; with ?cc=1 finishes inside on_connection_close
 * (removing its timer) when the client leaves first; with ?flush=1 flushes before waiting. */
struct async_state {
    gale_timeout timer;
};

static void async_done(gale_loop *loop, void *arg)
{
    gale_handler *h = arg;
    struct async_state *st = gale_handler_state(h);
    st->timer = 0;
    gale_write(h, "async done", 10);
    h_inflight--;
    gale_finish(h);
}

static void async_get(gale_handler *h)
{
    struct async_state *st = gale_handler_state(h);
    if (gale_get_argument(h, "flush", NULL)) {
        gale_write(h, "first ", 6);
        gale_flush(h);
    }
    if (gale_loop_call_later(gale_handler_loop(h), 0, async_done, h, &st->timer) < 0) {
        gale_fail(h, -ENOMEM);
        return;
    }
    h_inflight++;
    gale_handler_async(h);
}

static void async_closed(gale_handler *h)
{
    struct async_state *st = gale_handler_state(h);
    if (st->timer && gale_get_argument(h, "cc", NULL)) {
        gale_loop_remove_timeout(gale_handler_loop(h), st->timer);
        st->timer = 0;
        h_inflight--;
        gale_finish(h);
    }
}
static const gale_handler_class async_class = {.state_size = sizeof(struct async_state),
                                               .get = async_get,
                                               .post = async_get,
                                               .on_connection_close = async_closed};

static void stream_get(gale_handler *h)
{
    long n = h_digits(gale_get_argument(h, "chunks", "2"), 8);
    if (n < 0) {
        gale_send_error(h, 400);
        return;
    }
    for (long i = 1; i <= n; i++) {
        gale_writef(h, "chunk %ld\n", i);
        if (gale_flush(h) == -EPIPE)
            break;
    }
}
static const gale_handler_class stream_class = {.get = stream_get};

/* Every argument (query and body), cookie "c", and uploaded files. */
static void args_any(gale_handler *h)
{
    for (int src = GALE_ARGS_QUERY; src <= GALE_ARGS_BODY; src++) {
        const gale_form *f = gale_arguments(h, (gale_args_source)src);
        for (size_t i = 0; f && i < f->nargs; i++) {
            gale_write(h, f->args[i].name, f->args[i].name_len);
            gale_write(h, "=", 1);
            gale_write(h, f->args[i].value, f->args[i].value_len);
            gale_write(h, "\n", 1);
        }
    }
    const char *v = gale_get_argument(h, "a", NULL);
    gale_writef(h, "a=%s count=%zu\n", v ? v : "-", gale_argument_count(h, GALE_ARGS_ALL, "a"));
    gale_writef(h, "cookie=%s\n", gale_get_cookie(h, "c", "-"));
    const gale_form_file *file = gale_get_file(h, "f", 0);
    if (file) {
        gale_writef(h, "file %s %s %zu\n", file->filename, file->content_type, file->body_len);
        gale_write(h, file->body, file->body_len);
    }
}
static const gale_handler_class args_class = {.get = args_any, .post = args_any, .put = args_any};

static void user_get(gale_handler *h)
{
    size_t len;
    const char *id = gale_path_arg(h, 0, &len);
    gale_writef(h, "user %s (%zu args)", id ? id : "-", gale_path_arg_count(h));
}
static const gale_handler_class user_class = {.get = user_get};

static void status_get(gale_handler *h)
{
    long code = h_digits(gale_path_arg(h, 0, NULL), 999);
    if (code < 200 || code > 599) {
        gale_send_error(h, 400);
        return;
    }
    gale_set_status(h, (int)code);
    gale_write(h, "status body", 11);
}
static const gale_handler_class status_class = {.get = status_get, .post = status_get};

/* /header/<name>: sets response header <name> to the request's X-Value header (may be refused). */
static void header_get(gale_handler *h)
{
    size_t len, nlen;
    const char *name = gale_path_arg(h, 0, &nlen);
    const char *v = gale_get_header(h, "X-Value", &len);
    char *value = v ? gale_http_request_strdup(gale_handler_request(h), v, len) : NULL;
    int rc = name && value ? gale_set_header(h, name, value) : -EINVAL;
    gale_writef(h, "set: %d", rc);
}
static const gale_handler_class header_class = {.get = header_get};

static void redirect_get(gale_handler *h)
{
    if (gale_redirect(h, gale_get_argument(h, "to", "/"), 0) < 0)
        gale_send_error(h, 400);
}
static const gale_handler_class redirect_class = {.get = redirect_get};

static void error_get(gale_handler *h) { gale_fail(h, -EIO); }
static const gale_handler_class error_class = {.get = error_get, .post = error_get};

static void forbid_prepare(gale_handler *h) { gale_send_error(h, 403); }
static const gale_handler_class forbid_class = {.get = hello_get, .prepare = forbid_prepare};

static void h_unlink(void) { unlink(h_path); }

static void h_setup(void)
{
    if (h_app)
        return;
    fuzz_quiet_logs();
    if (gale_loop_new(GALE_BACKEND_EPOLL, &h_loop) < 0)
        fuzz_fail("loop");
    gale_loop_make_current(h_loop);
    gale_http_server_opts o;
    gale_http_server_opts_init(&o);
    o.max_header_size = H_MAX_HEADER;
    o.max_body_size = H_MAX_BODY;
    o.no_access_log = true;
    h_app = gale_app_new(&o);
    if (!h_app)
        fuzz_fail("app");
    static const struct {
        const char *pattern;
        const gale_handler_class *cls;
    } routes[] = {
        {"/", &hello_class},
        {"/echo", &echo_class},
        {"/async", &async_class},
        {"/stream", &stream_class},
        {"/args", &args_class},
        {"/user/([0-9]+)", &user_class},
        {"/status/([0-9]+)", &status_class},
        {"/header/([A-Za-z0-9-]+)", &header_class},
        {"/redirect", &redirect_class},
        {"/error", &error_class},
        {"/forbid", &forbid_class},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (gale_app_route(h_app, routes[i].pattern, routes[i].cls, NULL) < 0)
            fuzz_fail("route %s", routes[i].pattern);
    snprintf(h_path, sizeof h_path, "/tmp/gale-fuzz-http-%d.sock", (int)getpid());
    int fd = gale_bind_unix_socket(h_path, 0600, 128);
    if (fd < 0 || gale_app_add_socket(h_app, fd) < 0)
        fuzz_fail("listen on %s", h_path);
    atexit(h_unlink);
}

/* ---- the reference request framing ---- */

struct h_ref {
    size_t begun, complete;
    unsigned char method[H_MAX_REQS];
    /* Framing the server must refuse (RFC 9112; LESSONS 6-7): a Transfer-Encoding other than one
     * header whose value is exactly "chunked". Judged only for header blocks without folding. */
    bool must_reject[H_MAX_REQS];
    /* the header being read */
    char field[32];
    size_t flen;
    char value[64];
    size_t vlen;
    bool in_value, folded, field_long, value_long;
    int te_count;
    bool te_bad;
};

static bool ref_is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

static void ref_end_header(struct h_ref *r)
{
    if (!r->in_value)
        return;
    if (!r->field_long && ref_is(r->field, r->flen, "Transfer-Encoding")) {
        const char *v = r->value;
        size_t n = r->vlen;
        while (n && (*v == ' ' || *v == '\t'))
            v++, n--;
        while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        r->te_count++;
        if (r->value_long || !ref_is(v, n, "chunked"))
            r->te_bad = true;
    }
    r->flen = r->vlen = 0;
    r->in_value = r->field_long = r->value_long = false;
}

static int ref_begin(http_parser *p)
{
    struct h_ref *r = p->data;
    if (r->begun < H_MAX_REQS) {
        r->method[r->begun] = 0xff;
        r->must_reject[r->begun] = false;
    }
    r->begun++;
    r->flen = r->vlen = 0;
    r->in_value = r->folded = r->field_long = r->value_long = r->te_bad = false;
    r->te_count = 0;
    return 0;
}

static int ref_field(http_parser *p, const char *at, size_t len)
{
    struct h_ref *r = p->data;
    ref_end_header(r);
    if (r->flen + len > sizeof r->field)
        r->field_long = true;
    else
        memcpy(r->field + r->flen, at, len), r->flen += len;
    return 0;
}

static int ref_value(http_parser *p, const char *at, size_t len)
{
    struct h_ref *r = p->data;
    if (r->in_value)
        r->folded = true; /* a second piece of one value: an obsolete line fold */
    r->in_value = true;
    if (r->vlen + len > sizeof r->value)
        r->value_long = true;
    else
        memcpy(r->value + r->vlen, at, len), r->vlen += len;
    return 0;
}

static int ref_headers(http_parser *p)
{
    struct h_ref *r = p->data;
    ref_end_header(r);
    if (r->begun && r->begun <= H_MAX_REQS) {
        r->method[r->begun - 1] = (unsigned char)p->method;
        r->must_reject[r->begun - 1] = !r->folded && (r->te_count > 1 || r->te_bad);
    }
    return 0;
}

static int ref_complete(http_parser *p)
{
    struct h_ref *r = p->data;
    r->complete++;
    return 0;
}

static void h_reference(const uint8_t *data, size_t len, struct h_ref *r)
{
    static const http_parser_settings s = {.on_message_begin = ref_begin,
                                           .on_header_field = ref_field,
                                           .on_header_value = ref_value,
                                           .on_headers_complete = ref_headers,
                                           .on_message_complete = ref_complete};
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = r;
    http_parser_execute(&p, &s, (const char *)data, len);
}

/* ---- the client side of one exchange ---- */

struct h_conn {
    int fd;
    const uint8_t *data;
    size_t len, sent;
    const uint8_t *sizes; /* piece sizes, cycled; none: everything at once */
    size_t nsizes, piece;
    bool hold;      /* keep the connection open until the server is quiet, then half-close */
    unsigned quiet; /* iterations without response bytes */
    bool shut, eof, reset;
    char *resp;
    size_t rlen, rcap;
};

static bool h_step(void *arg)
{
    struct h_conn *c = arg;
    if (!c->shut && !c->eof) {
        if (c->sent < c->len) {
            size_t n = c->len - c->sent;
            if (c->nsizes && c->piece < FUZZ_MAX_PIECES) {
                size_t want = (size_t)c->sizes[c->piece++ % c->nsizes] + 1;
                if (want < n)
                    n = want;
            }
            ssize_t w = send(c->fd, c->data + c->sent, n, MSG_NOSIGNAL);
            if (w > 0)
                c->sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                c->sent = c->len; /* the server is gone: stop sending */
        }
        /* Holding: asynchronous handlers finish and pipelined requests behind them are parsed
         * before the half-close (which would close the connection on them). */
        if (c->sent == c->len && (!c->hold || (h_inflight == 0 && c->quiet >= 8))) {
            shutdown(c->fd, SHUT_WR);
            c->shut = true;
        }
    }
    c->quiet++;
    while (!c->eof) {
        if (c->rcap - c->rlen < 4096) {
            size_t cap = c->rcap ? c->rcap * 2 : 16384;
            char *p = realloc(c->resp, cap);
            if (!p)
                fuzz_fail("out of memory");
            c->resp = p;
            c->rcap = cap;
        }
        ssize_t r = recv(c->fd, c->resp + c->rlen, c->rcap - c->rlen, 0);
        if (r > 0) {
            c->rlen += (size_t)r;
            c->quiet = 0;
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            c->reset = r < 0;
            c->eof = true;
        }
        break;
    }
    return c->eof && h_inflight == 0;
}

/* ---- checking the responses ---- */

struct h_resp {
    int status;
    const char *body;
    size_t body_len;
    bool close;
};

static bool h_token(char ch)
{
    return isalnum((unsigned char)ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Parses one response at `p` (of `n` bytes). Returns the bytes it used, 0 when the bytes end
 * before the response does (only legal when the server reset the connection). Aborts on anything
 * malformed. `head`: the response answers a HEAD request. */
static size_t h_parse_response(const char *p, size_t n, bool head, struct h_resp *out,
                               size_t *body_buf_len, char *body_buf)
{
    const char *end = p + n, *q = p;
    const char *eol = memmem(q, (size_t)(end - q), "\r\n", 2);
    if (!eol)
        return 0;
    FUZZ_CHECK(eol - q >= 13 && memcmp(q, "HTTP/1.1 ", 9) == 0 && isdigit((unsigned char)q[9]) &&
                   isdigit((unsigned char)q[10]) && isdigit((unsigned char)q[11]) && q[12] == ' ',
               "bad status line: %.*s", (int)(eol - q > 80 ? 80 : eol - q), q);
    out->status = (q[9] - '0') * 100 + (q[10] - '0') * 10 + (q[11] - '0');
    FUZZ_CHECK(out->status >= 100 && out->status <= 599, "status %d", out->status);
    for (const char *s = q + 13; s < eol; s++)
        FUZZ_CHECK(*s != '\r' && *s != '\n' && *s != '\0', "control byte in the reason");
    q = eol + 2;
    long long cl = -1;
    bool chunked = false;
    out->close = false;
    for (;;) {
        eol = memmem(q, (size_t)(end - q), "\r\n", 2);
        if (!eol)
            return 0;
        if (eol == q) {
            q += 2;
            break;
        }
        const char *colon = memchr(q, ':', (size_t)(eol - q));
        FUZZ_CHECK(colon && colon > q, "header line without a name: %.*s", (int)(eol - q), q);
        for (const char *s = q; s < colon; s++)
            FUZZ_CHECK(h_token(*s), "header name with a non-token byte: %.*s", (int)(colon - q), q);
        for (const char *s = colon + 1; s < eol; s++)
            FUZZ_CHECK(*s != '\r' && *s != '\n' && *s != '\0', "control byte in a header value");
        size_t nlen = (size_t)(colon - q);
        const char *v = colon + 1;
        while (v < eol && *v == ' ')
            v++;
        size_t vlen = (size_t)(eol - v);
        if (nlen == 14 && strncasecmp(q, "Content-Length", 14) == 0) {
            FUZZ_CHECK(cl < 0, "two Content-Length headers");
            FUZZ_CHECK(vlen > 0 && vlen < 19, "bad Content-Length");
            cl = 0;
            for (size_t i = 0; i < vlen; i++) {
                FUZZ_CHECK(isdigit((unsigned char)v[i]), "bad Content-Length");
                cl = cl * 10 + (v[i] - '0');
            }
        } else if (nlen == 17 && strncasecmp(q, "Transfer-Encoding", 17) == 0) {
            FUZZ_CHECK(vlen == 7 && strncasecmp(v, "chunked", 7) == 0 && !chunked,
                       "unexpected Transfer-Encoding: %.*s", (int)vlen, v);
            chunked = true;
        } else if (nlen == 10 && strncasecmp(q, "Connection", 10) == 0) {
            out->close = vlen == 5 && strncasecmp(v, "close", 5) == 0;
        }
        q = eol + 2;
    }
    FUZZ_CHECK(!(chunked && cl >= 0), "Content-Length with chunked");
    *body_buf_len = 0;
    out->body = q;
    out->body_len = 0;
    if (out->status < 200) {
        FUZZ_CHECK(out->status == 100 && cl < 0 && !chunked, "unexpected interim %d", out->status);
        return (size_t)(q - p);
    }
    if (head || out->status == 204 || out->status == 304) {
        FUZZ_CHECK(!chunked, "chunked framing on a response without a body");
        return (size_t)(q - p);
    }
    if (cl >= 0) {
        if ((long long)(end - q) < cl)
            return 0;
        out->body_len = (size_t)cl;
        return (size_t)(q - p) + (size_t)cl;
    }
    if (chunked) {
        for (;;) {
            eol = memmem(q, (size_t)(end - q), "\r\n", 2);
            if (!eol)
                return 0;
            unsigned long long size = 0;
            FUZZ_CHECK(eol > q && eol - q <= 16, "bad chunk size line");
            for (const char *s = q; s < eol; s++) {
                FUZZ_CHECK(isxdigit((unsigned char)*s), "bad chunk size line");
                size =
                    size * 16 + (unsigned long long)(isdigit((unsigned char)*s)
                                                         ? *s - '0'
                                                         : (tolower((unsigned char)*s) - 'a' + 10));
            }
            q = eol + 2;
            if ((unsigned long long)(end - q) < size + 2)
                return 0;
            if (size == 0) {
                FUZZ_CHECK(q[0] == '\r' && q[1] == '\n', "trailers after the last chunk");
                return (size_t)(q - p) + 2;
            }
            FUZZ_CHECK(size > 0 && q[size] == '\r' && q[size + 1] == '\n', "chunk not ended");
            if (body_buf && *body_buf_len + size <= H_MAX_BODY * 4)
                memcpy(body_buf + *body_buf_len, q, size);
            *body_buf_len += size;
            q += size + 2;
        }
    }
    /* Close-delimited (a flush on HTTP/1.0): the rest of the connection. */
    out->body_len = (size_t)(end - q);
    out->close = true;
    return n;
}

/* What one input did, for target-specific checks. */
struct h_result {
    size_t nfinal;
    struct h_resp first;
    char first_body[H_MAX_BODY * 4];
    size_t first_body_len;
    bool first_complete;
};

static void h_check_responses(const struct h_conn *c, const struct h_ref *ref, struct h_result *res)
{
    size_t pos = 0, nfinal = 0;
    bool last_seen = false;
    res->nfinal = 0;
    res->first_complete = false;
    while (pos < c->rlen) {
        FUZZ_CHECK(!last_seen, "bytes after a response that ended the connection");
        bool head = nfinal < ref->begun && nfinal < H_MAX_REQS && ref->method[nfinal] == HTTP_HEAD;
        struct h_resp r;
        size_t blen = 0;
        char *bb = nfinal == 0 ? res->first_body : NULL;
        size_t used = h_parse_response(c->resp + pos, c->rlen - pos, head, &r, &blen, bb);
        if (!used) {
            FUZZ_CHECK(c->reset, "response %zu truncated without a reset (%zu bytes left)", nfinal,
                       c->rlen - pos);
            break;
        }
        pos += used;
        if (r.status < 200)
            continue;
        if (nfinal == 0) {
            res->first = r;
            if (r.body_len && !blen) { /* Content-Length or close-delimited */
                blen = r.body_len < sizeof res->first_body ? r.body_len : sizeof res->first_body;
                memcpy(res->first_body, r.body, blen);
            }
            res->first_body_len = blen;
            res->first_complete = true;
        }
        nfinal++;
        FUZZ_CHECK(nfinal <= ref->begun + 1, "%zu responses for %zu requests begun", nfinal,
                   ref->begun);
        if (nfinal <= ref->begun && nfinal <= H_MAX_REQS && ref->must_reject[nfinal - 1])
            FUZZ_CHECK(r.status >= 400 && r.close, /* 400, or 431/413 when a limit hit first */
                       "request %zu with a Transfer-Encoding other than one \"chunked\" answered "
                       "%d%s",
                       nfinal, r.status, r.close ? "" : " without closing");
        if (nfinal > ref->complete) {
            FUZZ_CHECK(r.close,
                       "response %zu (status %d) to an incomplete request keeps the "
                       "connection",
                       nfinal, r.status);
            last_seen = true;
        }
        if (r.close)
            last_seen = true;
    }
    res->nfinal = nfinal;
}

struct h_settle {
    int fd0;
    size_t timers0;
};

static bool h_settled(void *arg)
{
    struct h_settle *st = arg;
    return h_inflight == 0 && gale_loop_timer_count(h_loop) == st->timers0 &&
           fuzz_lowest_free_fd() == st->fd0;
}

/* Runs one exchange: `data` sent at splits taken from `sizes`. */
static void h_exchange(const uint8_t *data, size_t len, const uint8_t *sizes, size_t nsizes,
                       bool hold, struct h_result *res)
{
    h_setup();
    int fd0 = fuzz_lowest_free_fd();
    size_t timers0 = gale_loop_timer_count(h_loop);
    struct h_conn c = {.data = data, .len = len, .sizes = sizes, .nsizes = nsizes, .hold = hold};
    c.fd = fuzz_connect_unix(h_path);
    fuzz_drive(h_loop, h_step, &c, 10.0, "http exchange");
    close(c.fd);
    /* The server finishes its side from the loop: its descriptor and timers must go. */
    struct h_settle st = {.fd0 = fd0, .timers0 = timers0};
    fuzz_drive(h_loop, h_settled, &st, 10.0, "http connection teardown (descriptor or timer left)");
    struct h_ref ref = {0};
    h_reference(data, len, &ref);
    h_check_responses(&c, &ref, res);
    if (getenv("GALE_FUZZ_VERBOSE"))
        fprintf(stderr, "requests begun %zu complete %zu, final responses %zu (first %d)%s\n%.*s\n",
                ref.begun, ref.complete, res->nfinal, res->nfinal ? res->first.status : 0,
                c.reset ? ", reset" : "", (int)c.rlen, c.resp ? c.resp : "");
    free(c.resp);
}

#endif

/* gale HTTP/1.1 server: the connection.
 *
 * A connection is accepted (on_accept), reads (conn_on_read), hands what it read to the parser
 * (httpserver_parse.c), which calls back gale__conn_dispatch for each complete request; the
 * handler answers through the response calls (httpserver_response.c), whose bytes collect in the
 * connection's output and leave with one write (gale__conn_flush); gale__conn_answered then
 * readies it for the next request or closes it. This file keeps that path in that order, then
 * deadlines, closing, the server API and graceful shutdown.
 *
 * Per connection: one http_parser, one timer (a lazily re-armed deadline) while a request, a body
 * or output is under way, the peer address and a few flags; nothing large stays allocated between
 * requests, and an idle connection holds no timer of its own (see "idle deadlines"). Per request: one block holding the
 * request struct and an arena (httpserver_arena.c), released at finish.
 *
 * Reading: every byte the stream has is handed to the parser, which pauses at the end of each
 * message. The request is then dispatched; if the handler finishes synchronously, parsing goes on
 * with the next pipelined request in the same batch, and every response produced in the batch is
 * written with one write at its end. If the handler goes asynchronous, the unparsed bytes stay in
 * the stream (no read pending: TCP pushes back) until the response finishes.
 *
 * Phases (c->phase), changed only by set_phase(), which asserts the change is in this table:
 *
 *   from        to          on
 *   IDLE        BODY        a header block with a body after it (gale__conn_expect_body)
 *   IDLE, BODY  HANDLER     a complete request handed to the application (gale__conn_dispatch)
 *   IDLE        STREAM      a head whose body is streamed, handed to the application
 *                           (httpserver_stream.c); the body is read while it is there
 *   STREAM      HANDLER     that body ended
 *   HANDLER     IDLE        its response finished, the connection kept (gale__conn_answered)
 *   HANDLER     CLOSING     its response finished, the connection not kept
 *   STREAM      CLOSING     its response finished before its body ended (the rest is drained)
 *   IDLE, BODY  CLOSING     a request refused, a body deadline passed (gale__conn_fail), or an
 *                           idle connection closed by a shutdown
 *   CLOSING     LINGER      the last bytes written, input still arriving (start_linger)
 *
 * The connection itself is freed once its stream closed, no request refers to it and no call
 * into user code is running on it (c->busy counts those: the handler, close and flush callbacks
 * may end the connection, and it must outlive them). While a batch of input is being parsed
 * (c->in_batch), responses and access lines wait for the batch's end.
 */
#include "http/httpserver.h"
#include "http/server_internal.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/errors.h"
#include "core/log.h"

#define SCRATCH_KEEP (256 * 1024)
#define LINGER_SECONDS 2.0 /* drain input this long after an error response */
#define LINGER_MAX_BYTES (1024 * 1024)
#define WRITE_HIGH_WATER (1024 * 1024) /* stop parsing while more output than this is queued */
#define WRITE_LOOKS 4 /* looks at write progress per idle_connection_timeout while output waits */

static size_t conn_on_read(gale_stream *s, int status, const char *data, size_t len, void *arg);
static void conn_resume(struct gale_http_conn *c);
static void set_deadline(struct gale_http_conn *c, double secs);
static void set_deadline_at(struct gale_http_conn *c, double now, double secs);
static void flush_waits_queue(struct gale_http_conn *c);
static void flush_waits_fail(struct gale_http_conn *c);
static void out_release(struct gale_http_conn *c);
static void output_given(struct gale_http_conn *c, size_t len);
static void output_watch(struct gale_http_conn *c, double now, double t);
static bool output_look(struct gale_http_conn *c, double now);
static void on_written_close(gale_stream *s, int status, void *arg);
static void start_linger(struct gale_http_conn *c);
static void conn_on_close(gale_stream *s, int reason, void *arg);
static void drain_check(gale_http_server *srv);
static void idle_deadline_slow(struct gale_http_conn *c, double now);

/* Sets the idle deadline, watched by the server's sweep (see "idle deadlines" below). Inline for
 * keep-alive's common case: the connection was the last to go idle and the sweep is armed. */
static inline __attribute__((always_inline)) void set_idle_deadline(struct gale_http_conn *c,
                                                                    double now)
{
    gale_http_server *srv = c->srv;
    if (__builtin_expect(srv && srv->conns_tail == c && srv->idle_timer &&
                             srv->opts.idle_connection_timeout > 0,
                         1)) {
        c->deadline = now + srv->opts.idle_connection_timeout;
        c->idle_listed = true;
        return;
    }
    idle_deadline_slow(c, now);
}

/* The server's connection list (see gale_http_server.conns). */
static void list_append(gale_http_server *srv, struct gale_http_conn *c)
{
    c->next = NULL;
    c->prev = srv->conns_tail;
    if (srv->conns_tail)
        srv->conns_tail->next = c;
    else
        srv->conns = c;
    srv->conns_tail = c;
}

static void list_remove(gale_http_server *srv, struct gale_http_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        srv->conns_tail = c->prev;
    c->prev = c->next = NULL;
}

/* ---- accepting ---- */

/* Writes the peer's address as text into c->ip (see conn_ip). Returns 0 or -ENOMEM. */
static int conn_set_ip(struct gale_http_conn *c, const struct sockaddr *peer)
{
    char text[INET6_ADDRSTRLEN] = "0.0.0.0";
    if (peer && peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, text, sizeof text);
    else if (peer && peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, text, sizeof text);
    size_t len = strlen(text);
    c->ip_len = (uint8_t)len;
    if (len < sizeof c->ip.in) {
        memcpy(c->ip.in, text, len + 1);
        return 0;
    }
    c->ip.heap = strdup(text);
    return c->ip.heap ? 0 : -ENOMEM;
}

static void on_accept(gale_server *tcp, gale_stream *s, const struct sockaddr *peer,
                      socklen_t peerlen, void *arg)
{
    gale_http_server *srv = arg;
    if (srv->draining) { /* the listening sockets are closed: only a batch in progress gets here */
        gale_stream_close(s, 0);
        return;
    }
    struct gale_http_conn *c = calloc(1, sizeof *c);
    if (!c) {
        gale_log(GALE_LOG_ERROR, GALE_LOG_GENERAL, "dropping connection: %s",
                 gale_strerror(-ENOMEM));
        gale_stream_close(s, -ENOMEM);
        return;
    }
    c->srv = srv;
    c->stream = s;
    c->loop = gale_stream_loop(s); /* the accepting loop (srv->loop may be NULL) */
    c->tls = gale_stream_is_tls(s);
    if (conn_set_ip(c, peer) < 0) {
        free(c);
        gale_log(GALE_LOG_ERROR, GALE_LOG_GENERAL, "dropping connection: %s",
                 gale_strerror(-ENOMEM));
        gale_stream_close(s, -ENOMEM);
        return;
    }
    gale__parse_init(c);
    if (peer && peer->sa_family != AF_UNIX)
        gale_stream_set_nodelay(s, true);
    list_append(srv, c);
    srv->nconns++;
    gale_stream_set_close_cb(s, conn_on_close, c);
    assert(c->phase == PH_IDLE); /* calloc: a connection begins idle */
    set_idle_deadline(c, gale_loop_time(c->loop));
    conn_resume(c);
}

/* ---- reading ---- */

static size_t conn_on_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct gale_http_conn *c = arg;
    if (status < 0 || !c->stream)
        return len; /* the close callback follows */
    if (c->phase == PH_LINGER || c->phase == PH_CLOSING) {
        if (len > LINGER_MAX_BYTES - c->drained) {
            gale_stream_close(s, 0);
        } else {
            c->drained += (uint32_t)len;
            gale_stream_read_some(s, conn_on_read, c);
        }
        return len;
    }
    struct conn_batch batch = {.time = gale_loop_time(c->loop)};
    c->batch = &batch;
    c->in_batch = true;
    c->busy++;
    size_t off = 0;
    while (off < len && conn_parsing(c) && conn_open(c) && c->srv) {
        /* A client that pipelines without reading: leave the rest buffered until it reads. */
        if (off > 0 && c->phase == PH_IDLE && gale__conn_over_high_water(c))
            break;
        off += gale__parse(c, data + off, len - off);
    }
    c->in_batch = false;
    c->batch = NULL;
    if (gale__access_pending()) /* the responses leave now: one clock read for all their lines */
        gale__access_flush(gale_loop_time(c->loop));
    if (c->phase == PH_CLOSING) {
        if (off < len)
            c->linger = true; /* unread input: closing now would reset the connection */
        off = len;
    }
    gale__conn_flush(c);
    if (conn_parsing(c))
        conn_resume(c);
    c->busy--;
    if (!c->stream) /* the handler took the stream (gale_http_request_detach) */
        gale__conn_maybe_free(c);
    return off;
}

bool gale__conn_over_high_water(const struct gale_http_conn *c)
{
    size_t queued = c->out ? c->out->len : 0;
    return queued + gale_stream_write_pending(c->stream) > WRITE_HIGH_WATER;
}

static void on_drained(gale_stream *s, int status, void *arg);

/* Reads the next request, unless the client is not reading its responses: then parsing waits
 * until the queued output drained (pipelining must not grow memory without bound). */
static void conn_resume(struct gale_http_conn *c)
{
    if (!conn_open(c) || !c->srv || c->wait_drain || gale_stream_reading(c->stream))
        return;
    if (gale__conn_over_high_water(c)) {
        c->wait_drain = true;
        if (gale_stream_write(c->stream, "", 0, on_drained, c) < 0)
            c->wait_drain = false;
        return;
    }
    int rc = gale_stream_read_some(c->stream, conn_on_read, c);
    if (rc < 0 && rc != -EPIPE)
        gale_stream_close(c->stream, rc);
}

static void on_drained(gale_stream *s, int status, void *arg)
{
    struct gale_http_conn *c = arg;
    c->wait_drain = false;
    if (status == 0 && conn_parsing(c))
        conn_resume(c);
}

void gale__conn_resume(struct gale_http_conn *c)
{
    if (conn_parsing(c))
        conn_resume(c);
}

/* ---- a request's way through the connection ---- */

void gale__conn_dispatch(struct gale_http_conn *c)
{
    struct req *r = c->req;
    gale_http_server *srv = c->srv;
    assert(r && r->rphase == R_DONE && !r->dispatched && srv);
    r->dispatched = true;
    set_phase(c, PH_HANDLER);
    c->deadline = 0;
    if (__builtin_expect(!c->wlook && gale_stream_write_pending(c->stream) > 0, 0)) {
        double t = idle_timeout(c);
        if (t > 0)
            output_watch(c, gale_loop_time(c->loop), t); /* see output_given */
    }
    c->busy++;
    srv->cb(&r->pub, srv->arg);
    c->busy--;
}

void gale__conn_expect_body(struct gale_http_conn *c)
{
    set_phase(c, PH_BODY);
    c->deadline = 0;
    set_deadline_at(c, c->batch->time, c->srv->opts.body_timeout);
}

void gale__conn_answered(struct gale_http_conn *c, bool keep, double now)
{
    assert(!c->req);
    if (__builtin_expect(c->phase == PH_STREAM, 0)) {
        keep = false; /* the rest of a streamed body is drained, never parsed */
        c->linger = true;
        c->deadline = 0;
    }
    if (keep) {
        set_phase(c, PH_IDLE);
        set_idle_deadline(c, now);
    } else {
        set_phase(c, PH_CLOSING);
        c->close_after_write = true;
    }
    if (!c->in_batch) {
        gale__conn_flush(c);
        if (keep)
            conn_resume(c);
    }
}

/* Answers `status` and closes (after draining input briefly, so the client reads the status).
 * Responses already collected in this batch go out first. */
void gale__conn_fail(struct gale_http_conn *c, int status, const char *why)
{
    gale__access_refused(c, status, why);
    if (c->req && !c->req->dispatched) {
        gale__req_free(c->req);
        c->req = NULL;
    }
    if (status > 0)
        gale__response_error(c, status);
    set_phase(c, PH_CLOSING);
    c->close_after_write = true;
    c->linger = true;
    c->deadline = 0;
    set_deadline(c, LINGER_SECONDS * 2); /* covers writing the status and draining */
    if (!c->in_batch)
        gale__conn_flush(c);
}

/* Whether input follows the request being answered: the rest of the batch being parsed, bytes
 * left in the stream, bytes the kernel holds for the socket, or a receive completed on a uring
 * loop (asked only while the server shuts down, where it decides between keep-alive and
 * "Connection: close"). */
bool gale__conn_input_waiting(const struct gale_http_conn *c)
{
    if (c->in_batch ? c->batch->left > 0 : gale_stream_read_buffered(c->stream) > 0)
        return true;
    return gale_stream_input_waiting(c->stream);
}

/* ---- output ---- */

/* One scratch output buffer per thread, lent to one connection at a time for the batch it is
 * processing; the stream copies whatever the kernel does not take at once, so the buffer is free
 * again right after the write. */
static _Thread_local struct obuf tls_scratch;
static _Thread_local struct gale_http_conn *tls_scratch_owner;

int gale__obuf_grow(struct obuf *o, size_t more)
{
    size_t cap = o->cap ? o->cap : 1024;
    while (cap - o->len < more) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    char *p = realloc(o->p, cap);
    if (!p)
        return -ENOMEM;
    o->p = p;
    o->cap = cap;
    return 0;
}

struct obuf *gale__conn_out(struct gale_http_conn *c)
{
    if (c->out)
        return c->out;
    if (!tls_scratch_owner) {
        tls_scratch_owner = c;
        c->out = &tls_scratch;
    } else {
        c->out = calloc(1, sizeof *c->out);
    }
    return c->out;
}

static void out_release(struct gale_http_conn *c)
{
    struct obuf *o = c->out;
    if (!o)
        return;
    c->out = NULL;
    if (o == &tls_scratch) {
        assert(tls_scratch_owner == c); /* lent to one connection at a time */
        tls_scratch_owner = NULL;
        o->len = 0;
        if (o->cap > SCRATCH_KEEP) {
            free(o->p);
            o->p = NULL;
            o->cap = 0;
        }
    } else {
        free(o->p);
        free(o);
    }
}

/* Writes what this batch produced: one write. */
void gale__conn_flush(struct gale_http_conn *c)
{
    if (!conn_open(c)) {
        out_release(c); /* kept waits fail in conn_on_close */
        return;
    }
    struct obuf *o = c->out;
    if (o && o->len) {
        bool closing = c->close_after_write;
        size_t len = o->len;
        int rc = gale_stream_write(c->stream, o->p, len, closing ? on_written_close : NULL,
                                   closing ? c : NULL);
        out_release(c);
        if (rc == 0)
            output_given(c, len);
        else if (rc != -EPIPE)
            gale_stream_close(c->stream, rc);
    } else {
        out_release(c);
        /* An empty write completes after everything queued before it. */
        if (c->close_after_write && gale_stream_write(c->stream, "", 0, on_written_close, c) < 0)
            gale_stream_close(c->stream, 0);
    }
    flush_waits_queue(c);
}

/* Writes the bytes collected so far followed by `data` without copying `data` into the batch
 * buffer (large bodies). The stream copies only what the kernel does not take. */
int gale__conn_write_through(struct gale_http_conn *c, const char *data, size_t len)
{
    struct obuf *o = c->out;
    struct iovec iov[2];
    int n = 0;
    if (o && o->len)
        iov[n++] = (struct iovec){o->p, o->len};
    iov[n++] = (struct iovec){(void *)data, len};
    int rc = gale_stream_writev(c->stream, iov, n, NULL, NULL);
    if (rc == 0)
        output_given(c, (n == 2 ? iov[0].iov_len : 0) + len);
    if (o)
        o->len = 0;
    return rc;
}

int gale__conn_send_file(struct gale_http_conn *c, int fd, off_t offset, size_t len,
                         gale_done_cb cb, void *arg)
{
    struct obuf *o = c->out;
    if (o && o->len) {
        int rc = gale_stream_write(c->stream, o->p, o->len, NULL, NULL);
        if (rc)
            return rc;
        output_given(c, o->len);
        o->len = 0;
    }
    int rc = gale_stream_sendfile(c->stream, fd, offset, len, cb, arg);
    if (rc == 0)
        output_given(c, len);
    return rc;
}

static void flush_waited(gale_stream *s, int status, void *arg)
{
    struct flush_wait *w = arg;
    gale_http_flushed_cb cb = w->cb;
    void *cb_arg = w->arg;
    free(w);
    cb(status, cb_arg);
}

/* Hands the waits kept on the connection to the stream, each behind everything written before
 * it (an empty write completes once all before it has left), in the order of their flushes.
 * Waits the stream cannot take stay on the connection and fail when it closes (conn_on_close),
 * before the requests hear of the close, as the stream fails the waits it holds. */
static void flush_waits_queue(struct gale_http_conn *c)
{
    while (c->flush_waits && conn_open(c)) {
        struct flush_wait *w = c->flush_waits;
        c->flush_waits = w->next;
        if (gale_stream_write(c->stream, "", 0, flush_waited, w) != 0) {
            w->next = c->flush_waits;
            c->flush_waits = w;
            gale_stream_close(c->stream, -ENOMEM); /* no-op if already closing */
        }
    }
}

void gale__conn_add_flush_wait(struct gale_http_conn *c, struct flush_wait *w)
{
    struct flush_wait **tail = &c->flush_waits;
    while (*tail)
        tail = &(*tail)->next;
    *tail = w;
    /* Inside a batch the flushed bytes are still in the batch's buffer: the wait is handed to
     * the stream after them, at the batch's end. */
    if (!c->in_batch)
        flush_waits_queue(c);
}

static void flush_waits_fail(struct gale_http_conn *c)
{
    while (c->flush_waits) {
        struct flush_wait *w = c->flush_waits;
        c->flush_waits = w->next;
        flush_waited(NULL, -EPIPE, w);
    }
}

/* ---- deadlines: one timer per connection, re-armed lazily ---- */

static void conn_on_timer(gale_loop *loop, void *arg);

static void arm_timer(struct gale_http_conn *c, double at)
{
    if (c->timer)
        gale_loop_remove_timeout(c->loop, c->timer);
    c->timer = 0;
    if (gale_loop_call_at(c->loop, at, conn_on_timer, c, &c->timer) == 0)
        c->timer_at = at;
}

/* Sets the end of the current phase `secs` from now (secs <= 0: no deadline). The timer moves
 * only when the deadline comes earlier than it is armed for; a later deadline is noticed when the
 * timer fires, so a keep-alive request costs no heap operation in the common case. */
static inline __attribute__((always_inline)) void set_deadline_at(struct gale_http_conn *c,
                                                                  double now, double secs)
{
    c->idle_listed = false; /* another phase's deadline: the connection's own timer watches it */
    if (!(secs > 0)) {
        c->deadline = 0;
        return;
    }
    c->deadline = now + secs;
    if (!c->timer || c->timer_at > c->deadline)
        arm_timer(c, c->deadline);
}

void gale__conn_deadline_at(struct gale_http_conn *c, double start, double secs)
{
    set_deadline_at(c, start, secs);
}

static void set_deadline(struct gale_http_conn *c, double secs)
{
    if (secs > 0)
        set_deadline_at(c, gale_loop_time(c->loop), secs);
    else
        c->deadline = 0;
}

/* A phase deadline passed. */
static void phase_expired(struct gale_http_conn *c, double now)
{
    if (c->phase == PH_IDLE && !c->req && gale_stream_write_pending(c->stream) > 0) {
        /* Idle time starts once the last response is out (a slow reader of a large body is
         * not idle; one that reads nothing is closed by the look at write progress below,
         * which for output given while idle starts here: see output_given). */
        if (!c->wlook) {
            if (!output_look(c, now))
                return;
            output_watch(c, now, idle_timeout(c));
        }
        set_idle_deadline(c, now);
        return;
    }
    c->idle_listed = false;
    c->deadline = 0;
    switch (c->phase) {
    case PH_BODY: gale__conn_fail(c, 408, "body timeout"); break;
    case PH_STREAM: gale__stream_fail(c, 408, "body timeout"); break;
    case PH_IDLE:
        if (c->req && c->srv)
            gale_log(GALE_LOG_DEBUG, GALE_LOG_GENERAL,
                     "closing connection from %s: header block not complete in time", conn_ip(c));
        gale_stream_close(c->stream, -ETIMEDOUT);
        break;
    case PH_CLOSING:
    case PH_LINGER: gale_stream_close(c->stream, -ETIMEDOUT); break;
    default: break;
    }
}

/* ---- write progress ----
 *
 * A client that stops reading leaves response bytes queued in the stream (the kernel takes
 * none), and the idle deadline does not run while output waits (a slow reader of a large body is
 * not idle). So while output waits, the connection's one timer also looks at how many bytes the
 * kernel took, every idle_connection_timeout / WRITE_LOOKS: never per write, never per byte. Any
 * bytes taken are progress (a slow but steady reader keeps its connection however long its
 * download takes); none taken for idle_connection_timeout closes the connection. A stall is
 * noticed between 1 and 1 + 1/WRITE_LOOKS timeouts after the last progress.
 *
 * The kernel's send buffer grows to megabytes and asks for more only once a third of it is free,
 * so a reader slower than that third per timeout would show no progress to the stream although it
 * reads all along (a deep pipeline behind the output limit: its connection was cut). So a look
 * also asks how much of what the kernel holds the peer has not acknowledged yet: less than at the
 * previous look is progress too. The first look of a wait has no earlier figure to compare with:
 * it takes one, and when the stream saw no progress either it waits one more look before calling
 * it a stall (so a peer that reads nothing is closed within 1 + 1/WRITE_LOOKS timeouts still). */

/* Schedules the next look at write progress (wsent and wprogress are set). */
static void output_watch(struct gale_http_conn *c, double now, double t)
{
    c->wlook = now + t / WRITE_LOOKS;
    if (c->wlook > c->wprogress + t)
        c->wlook = c->wprogress + t;
    if (!c->timer || c->timer_at > c->wlook)
        arm_timer(c, c->wlook);
}

/* `len` response bytes were handed to the stream: watches them if the kernel did not take all.
 *
 * A connection that went idle with this output (keep-alive's common case) takes no timer: its
 * idle deadline is watched anyway (the server's sweep), and phase_expired() starts the looks
 * there if the output still waits, so the stall is still noticed within 1 to 1 + 1/WRITE_LOOKS
 * timeouts. On a uring loop every response waits here until its send completes a turn later:
 * a timer each would cost an idle connection 48 bytes of the loop's timer tables. The handler's
 * phase has no deadline: a request dispatched while such output waits starts the looks then
 * (gale__conn_dispatch). */
static void output_given(struct gale_http_conn *c, size_t len)
{
    c->wgiven += (uint32_t)len;
    if (c->wlook || !conn_open(c))
        return;
    size_t pending = gale_stream_write_pending(c->stream);
    double t = idle_timeout(c);
    if (pending == 0 || !(t > 0))
        return;
    double now = gale_loop_time(c->loop);
    c->wsent = c->wgiven - (uint32_t)pending;
    c->wprogress = now;
    c->wunacked = 0;
    if (c->phase == PH_IDLE && c->deadline)
        return;
    output_watch(c, now, t);
}

/* Looks at write progress. Returns false when it closed the connection for a stall. */
static bool output_look(struct gale_http_conn *c, double now)
{
    size_t pending = gale_stream_write_pending(c->stream);
    double t = idle_timeout(c);
    if (pending == 0 || !(t > 0)) {
        c->wlook = 0;
        return true;
    }
    uint32_t sent = c->wgiven - (uint32_t)pending;
    size_t kib = gale_stream_write_unacked(c->stream) / 1024 + 1;
    uint16_t unacked = kib < UINT16_MAX ? (uint16_t)kib : UINT16_MAX;
    bool first = !c->wunacked;
    bool acked = unacked < c->wunacked;
    c->wunacked = unacked;
    if (sent != c->wsent || acked) {
        c->wsent = sent;
        c->wprogress = now;
    } else if (first) {
        c->wlook = now + t / WRITE_LOOKS; /* no figure to compare with yet: one more look */
        return true;
    } else if (now - c->wprogress >= t) {
        gale_log(GALE_LOG_DEBUG, GALE_LOG_GENERAL,
                 "closing connection from %s: the client read none of %zu queued response "
                 "bytes in %.3g s",
                 conn_ip(c), pending, now - c->wprogress);
        c->wlook = 0;
        gale_stream_close(c->stream, -ETIMEDOUT);
        return false;
    }
    c->wlook = now + t / WRITE_LOOKS;
    if (c->wlook > c->wprogress + t)
        c->wlook = c->wprogress + t;
    return true;
}

static void conn_on_timer(gale_loop *loop, void *arg)
{
    struct gale_http_conn *c = arg;
    c->timer = 0;
    if (!conn_open(c))
        return;
    double now = gale_loop_time(loop);
    if (c->wlook && now >= c->wlook && !output_look(c, now))
        return;
    if (c->deadline && now >= c->deadline && !c->idle_listed)
        phase_expired(c, now);
    /* Re-armed for the earlier of the phase deadline and the next look, unless the expiry
     * closed the connection or armed the timer early enough itself (conn_fail). An idle
     * deadline is the sweep's. */
    double next = c->idle_listed ? 0 : c->deadline;
    if (c->wlook && (!next || c->wlook < next))
        next = c->wlook;
    if (next && conn_open(c) && (!c->timer || c->timer_at > next))
        arm_timer(c, next);
}

/* ---- idle deadlines: one timer per server ----
 *
 * A connection waiting for its next request (after accept, or after a response that kept it)
 * gets the deadline now + idle_connection_timeout, the same delay for every connection. So rather
 * than a loop timer each (a timer slot and a heap entry: 40-56 bytes of the loop's per idle
 * connection), such a connection is moved to the tail of the server's list when that deadline is
 * set and marked idle_listed: the listed connections are then in deadline order, and one timer
 * per server, the sweep, fires at the first one's. A connection leaves the idle state without
 * unlisting (a request arrives: the deadline goes on covering its header block; it is dispatched:
 * the deadline is cleared; another phase arms its own timer and clears the mark), and the sweep
 * passes over what is no longer listed, moving it to the tail, out of the way. Keep-alive costs a
 * move to the tail per request, no heap operation. */

static void idle_sweep(gale_loop *loop, void *arg);

/* Makes sure the sweep runs at `at` or earlier. */
static void idle_arm(gale_http_server *srv, gale_loop *loop, double at)
{
    if (srv->idle_timer) {
        if (srv->idle_timer_at <= at)
            return;
        gale_loop_remove_timeout(srv->idle_loop, srv->idle_timer);
        srv->idle_timer = 0;
    }
    srv->idle_loop = loop;
    if (gale_loop_call_at(loop, at, idle_sweep, srv, &srv->idle_timer) == 0)
        srv->idle_timer_at = at;
    else
        gale_log(GALE_LOG_ERROR, GALE_LOG_GENERAL, "cannot watch idle connections: %s",
                 gale_strerror(-ENOMEM));
}

static void idle_deadline_slow(struct gale_http_conn *c, double now)
{
    double t = idle_timeout(c);
    gale_http_server *srv = c->srv;
    if (!srv || !(t > 0)) { /* no server left to sweep: the connection's own timer */
        set_deadline_at(c, now, t);
        return;
    }
    c->deadline = now + t;
    c->idle_listed = true;
    if (srv->conns_tail != c) {
        list_remove(srv, c);
        list_append(srv, c);
    }
    if (!srv->idle_timer)
        idle_arm(srv, c->loop, c->deadline);
}

static void idle_sweep(gale_loop *loop, void *arg)
{
    gale_http_server *srv = arg;
    srv->idle_timer = 0;
    double now = gale_loop_time(loop);
    /* Each connection at most once: the ones passed over or listed again go to the tail. */
    size_t n = srv->nconns;
    struct gale_http_conn *c = srv->conns;
    while (c && n-- > 0) {
        struct gale_http_conn *next = c->next;
        if (!c->idle_listed || !c->deadline || !conn_open(c)) {
            c->idle_listed = false;
            if (next) {
                list_remove(srv, c);
                list_append(srv, c);
            }
        } else if (c->deadline > now) {
            idle_arm(srv, loop, c->deadline);
            return;
        } else {
            phase_expired(c, now); /* closes it, or lists it again (output still queued) */
        }
        c = next;
    }
}

/* Hands a listed connection's idle deadline to its own timer (it leaves the server's list). */
static void idle_unlist(struct gale_http_conn *c)
{
    if (!c->idle_listed)
        return;
    c->idle_listed = false;
    if (conn_open(c) && c->deadline && (!c->timer || c->timer_at > c->deadline))
        arm_timer(c, c->deadline);
}

/* ---- closing ---- */

void gale__conn_maybe_free(struct gale_http_conn *c)
{
    if (!c->stream && !c->req && !c->busy) {
        if (c->ip_len >= sizeof c->ip.in)
            free(c->ip.heap);
        free(c);
    }
}

static void conn_unlink(struct gale_http_conn *c)
{
    gale_http_server *srv = c->srv;
    if (!srv)
        return;
    list_remove(srv, c);
    srv->nconns--;
    c->srv = NULL;
    idle_unlist(c);
    if (srv->nconns == 0 && srv->idle_timer) { /* nothing left to sweep: no timer left behind */
        gale_loop_remove_timeout(srv->idle_loop, srv->idle_timer);
        srv->idle_timer = 0;
    }
}

static void conn_on_close(gale_stream *s, int reason, void *arg)
{
    struct gale_http_conn *c = arg;
    assert(c->stream == s); /* the stream's close callback runs once */
    c->stream = NULL;
    c->busy++; /* the callbacks may finish requests: the connection must outlive them */
    flush_waits_fail(c);
    c->busy--;
    if (c->timer)
        gale_loop_remove_timeout(c->loop, c->timer);
    c->timer = 0;
    out_release(c);
    gale_http_server *srv = c->srv;
    conn_unlink(c);
    if (srv)
        drain_check(srv);
    struct req *r = c->req;
    if (r && !r->dispatched) {
        c->req = NULL;
        gale__req_free(r);
    } else if (r) {
        r->closed = true;
        if (r->close_cb || r->bs) {
            c->busy++;
            r->in_close_cb = true;
            if (r->close_cb)
                r->close_cb(&r->pub, r->close_arg);
            if (r->bs && !r->finished)
                gale__stream_closed(r); /* its reader hears of it too */
            r->in_close_cb = false;
            c->busy--;
            if (r->finished)
                gale__req_free(r); /* finish was called inside the callback */
        }
    }
    gale__conn_maybe_free(c);
}

int gale_http_request_detach(gale_http_request *req, gale_stream **out)
{
    struct req *r = req_of(req);
    if (!r || !out)
        return -EINVAL;
    struct gale_http_conn *c = r->conn;
    if (r->finished || r->headers_sent || r->closed || c->req != r || !conn_open(c))
        return -EPIPE;
    if (c->wait_drain) /* an empty write holding the connection is queued */
        return -EBUSY;
    gale_stream *s = c->stream;
    gale__conn_flush(c); /* the responses before this one go first */
    if (!conn_open(c))
        return -EPIPE;
    r->status = 101;
    if (c->srv && !c->srv->opts.no_access_log)
        gale__access_log(r, c->in_batch ? c->batch->time : gale_loop_time(c->loop));
    if (c->timer)
        gale_loop_remove_timeout(c->loop, c->timer);
    c->timer = 0;
    c->deadline = 0;
    gale_http_server *srv = c->srv;
    conn_unlink(c);
    if (srv)
        drain_check(srv);
    gale_stream_set_close_cb(s, NULL, NULL);
    c->stream = NULL;
    r->closed = true; /* the handler's writes are dropped; finish releases the request */
    *out = s;
    return 0;
}

static void start_linger(struct gale_http_conn *c)
{
    set_phase(c, PH_LINGER);
    int fd = gale_stream_fd(c->stream);
    if (fd >= 0)
        shutdown(fd, SHUT_WR);
    c->deadline = 0;
    set_deadline(c, LINGER_SECONDS);
    if (!gale_stream_reading(c->stream))
        gale_stream_read_some(c->stream, conn_on_read, c);
}

static void on_written_close(gale_stream *s, int status, void *arg)
{
    struct gale_http_conn *c = arg;
    if (status < 0 || !conn_open(c))
        return;
    if (c->linger || gale_stream_read_buffered(s) > 0)
        start_linger(c);
    else
        gale_stream_close(s, 0);
}

/* ---- server ---- */

void gale_http_server_opts_init(gale_http_server_opts *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->max_header_size = 65536;
    o->max_body_size = 100u * 1024 * 1024;
    o->idle_connection_timeout = 60;
    o->body_timeout = 60;
    o->shutdown_timeout = 30;
}

static _Atomic uint32_t parser_header_limit = HTTP_MAX_HEADER_SIZE;

int gale_http_server_new(gale_loop *loop, const gale_http_server_opts *opts,
                         gale_http_request_cb cb, void *arg, gale_http_server **out)
{
    if (!cb || !out)
        return -EINVAL;
    *out = NULL;
    gale_http_server_opts o;
    if (opts)
        o = *opts;
    else
        gale_http_server_opts_init(&o);
    if (o.max_header_size == 0 || o.max_header_size > UINT32_MAX / 4 ||
        isnan(o.idle_connection_timeout) || o.idle_connection_timeout < 0 ||
        isnan(o.body_timeout) || o.body_timeout < 0 || isnan(o.shutdown_timeout) ||
        o.shutdown_timeout < 0)
        return -EINVAL;
    /* A NULL loop stays unresolved: the TCP server takes the current loop of the process that
     * starts accepting, so start(n > 1) never creates a loop (an epoll instance and its waker)
     * before the fork for all the workers to share. */
    /* http-parser's own header cap is process-wide: only ever raise it, past ours. */
    uint32_t want = (uint32_t)o.max_header_size + 1024;
    uint32_t have = atomic_load(&parser_header_limit);
    while (want > have) {
        if (atomic_compare_exchange_weak(&parser_header_limit, &have, want)) {
            http_parser_set_max_header_size(want);
            break;
        }
    }
    gale_http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->loop = loop;
    srv->opts = o;
    srv->cb = cb;
    srv->arg = arg;
    int rc = gale_server_new(loop, on_accept, srv, &srv->tcp);
    if (rc == 0 && o.max_connections)
        rc = gale_server_set_max_connections(srv->tcp, o.max_connections);
    if (rc == 0 && o.tls)
        rc = gale_server_set_tls(srv->tcp, o.tls);
    if (rc < 0) {
        gale_server_free(srv->tcp);
        free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

int gale_http_server_listen(gale_http_server *srv, int port, const char *address)
{
    if (!srv)
        return -EINVAL;
    return gale_server_listen(srv->tcp, port, address);
}

int gale_http_server_bind(gale_http_server *srv, int port, const char *address)
{
    if (!srv)
        return -EINVAL;
    return gale_server_bind(srv->tcp, port, address, AF_UNSPEC, GALE_DEFAULT_BACKLOG,
                            srv->opts.reuse_port);
}

int gale_http_server_add_socket(gale_http_server *srv, int fd)
{
    if (!srv)
        return -EINVAL;
    return gale_server_add_socket(srv->tcp, fd);
}

int gale_http_server_start(gale_http_server *srv, int nprocs)
{
    if (!srv)
        return -EINVAL;
    return gale_server_start(srv->tcp, nprocs);
}

int gale_http_server_port(const gale_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    return gale_server_port(srv->tcp);
}

void gale_http_server_stop(gale_http_server *srv)
{
    if (srv)
        gale_server_stop(srv->tcp);
}

/* ---- graceful shutdown ---- */

static void drain_finish(gale_loop *loop, void *arg)
{
    gale_http_server *srv = arg;
    srv->done_timer = 0;
    srv->done_called = true;
    gale_loop_remove_timeout(loop, srv->drain_timer);
    srv->drain_timer = 0;
    gale_log_info(GALE_LOG_GENERAL, "shutdown: all connections closed");
    if (srv->done)
        srv->done(loop, srv->done_arg); /* may free the server */
}

/* Once the last connection has gone, `done` is due (from the loop). */
static void drain_check(gale_http_server *srv)
{
    if (srv->draining && srv->nconns == 0 && !srv->done_timer && !srv->done_called &&
        gale_loop_call_later(srv->dloop, 0, drain_finish, srv, &srv->done_timer) < 0)
        gale_log_error(GALE_LOG_GENERAL, "shutdown: cannot schedule the end of the drain: %s",
                       gale_strerror(-ENOMEM));
}

static void drain_expired(gale_loop *loop, void *arg)
{
    gale_http_server *srv = arg;
    srv->drain_timer = 0;
    if (srv->nconns)
        gale_log_warning(GALE_LOG_GENERAL, "shutdown deadline: closing %zu connections",
                         srv->nconns);
    /* Close callbacks run from the loop, so the list stays intact while it is walked. */
    for (struct gale_http_conn *c = srv->conns; c; c = c->next)
        if (c->stream)
            gale_stream_close(c->stream, -ETIMEDOUT);
}

static int arm_drain_deadline(gale_http_server *srv, double at)
{
    if (srv->drain_timer)
        gale_loop_remove_timeout(srv->dloop, srv->drain_timer);
    srv->drain_timer = 0;
    srv->drain_deadline = at;
    return gale_loop_call_at(srv->dloop, at, drain_expired, srv, &srv->drain_timer);
}

/* Idle: waiting for a request with nothing of it received (neither parsed, nor buffered, nor
 * in the socket). A request the client sent before the listening sockets closed is in one of
 * those places, so it is never lost by closing an idle connection. */
static bool conn_idle(const struct gale_http_conn *c)
{
    return conn_open(c) && c->phase == PH_IDLE && !c->req && !c->in_batch && !c->busy &&
           !gale__conn_input_waiting(c);
}

int gale_http_server_shutdown(gale_http_server *srv, double timeout, gale_cb done, void *arg)
{
    if (!srv || isnan(timeout) || timeout < 0)
        return -EINVAL;
    if (srv->draining) {
        double at = gale_loop_time(srv->dloop) + timeout;
        if (!srv->done_called && at < srv->drain_deadline)
            arm_drain_deadline(srv, at);
        return -EALREADY;
    }
    gale_loop *loop = srv->loop ? srv->loop : gale_loop_current();
    if (!loop)
        return -ENOMEM;
    srv->dloop = loop;
    int rc = arm_drain_deadline(srv, gale_loop_time(loop) + timeout);
    if (rc < 0)
        return rc;
    /* Clients already in the backlog sent their requests before the listener closed: take
     * them in (they are answered below like any connection with a request waiting) rather than
     * let the close reset them. */
    gale_server_accept_pending(srv->tcp);
    srv->draining = true;
    srv->done = done;
    srv->done_arg = arg;
    gale_server_stop(srv->tcp); /* new connects are refused from here on */
    size_t idle = 0;
    for (struct gale_http_conn *c = srv->conns; c; c = c->next) {
        if (!conn_idle(c))
            continue;
        /* Closes once what is queued for it was written (an empty write completes after it). */
        idle++;
        set_phase(c, PH_CLOSING);
        c->close_after_write = true;
        c->deadline = 0;
        set_deadline(c, LINGER_SECONDS);
        gale__conn_flush(c);
    }
    gale_log_info(GALE_LOG_GENERAL,
                  "shutting down: stopped accepting, closing %zu idle connections, %zu busy "
                  "(deadline %.3g s)",
                  idle, srv->nconns - idle, timeout);
    drain_check(srv);
    return 0;
}

bool gale_http_server_shutting_down(const gale_http_server *srv) { return srv && srv->draining; }

size_t gale_http_server_connections(const gale_http_server *srv) { return srv ? srv->nconns : 0; }

void gale_http_server_free(gale_http_server *srv)
{
    if (!srv)
        return;
    if (srv->dloop) {
        gale_loop_remove_timeout(srv->dloop, srv->drain_timer);
        gale_loop_remove_timeout(srv->dloop, srv->done_timer);
    }
    if (srv->idle_timer)
        gale_loop_remove_timeout(srv->idle_loop, srv->idle_timer);
    gale_server_free(srv->tcp);
    while (srv->conns) {
        struct gale_http_conn *c = srv->conns;
        conn_unlink(c);
        if (c->stream)
            gale_stream_close(c->stream, 0);
    }
    free(srv);
}

/* gale HTTP/1.1 server connection: http-parser driven by gale_stream_read_some.
 *
 * Per connection: one http_parser, one timer (a lazily re-armed deadline), the peer address and a
 * few flags; nothing large stays allocated between requests. Per request: one block holding the
 * request struct and an arena (header bytes, strings, response headers, small bodies), released
 * at finish.
 *
 * Reading: every byte the stream has is handed to the parser, which pauses at the end of each
 * message. The request is then dispatched; if the handler finishes synchronously, parsing goes on
 * with the next pipelined request in the same batch, and every response produced in the batch is
 * written with one write at its end. If the handler goes asynchronous, the unparsed bytes stay in
 * the stream (no read pending: TCP pushes back) until the response finishes.
 *
 * Header bytes arrive as slices of the stream's data, valid only during the read callback. Each
 * parse call copies the span from its first to its last header slice into the request's header
 * store once; slices are recorded as offsets into that store (so a header split across reads is
 * simply extended) and turned into pointers when the header block is complete.
 */
#include "http/httpserver.h"
#include "http/httpserver_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <math.h>
#include <netinet/in.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "core/copy_internal.h"
#include "core/errors.h"
#include "core/log.h"
#include "core/log_internal.h"
#include "net/iostream.h"
#include "net/tcpserver.h"

#define REQ_BLOCK 4096          /* request struct + first arena part */
#define REQ_CACHE_MAX 32        /* request blocks kept per thread for reuse */
#define BIG_BODY 16384          /* bodies from this size are written without an extra copy */
#define SCRATCH_KEEP (256 * 1024)
#define LINGER_SECONDS 2.0      /* drain input this long after an error response */
#define LINGER_MAX_BYTES (1024 * 1024)
#define WRITE_HIGH_WATER (1024 * 1024) /* stop parsing while more output than this is queued */
#define WRITE_LOOKS 4 /* looks at write progress per idle_connection_timeout while output waits */

/* ---- output buffers ---- */

struct obuf {
    char *p;
    size_t len, cap;
};

/* One scratch output buffer per thread, lent to one connection at a time for the batch it is
 * processing; the stream copies whatever the kernel does not take at once, so the buffer is free
 * again right after the write. */
static _Thread_local struct obuf tls_scratch;
static _Thread_local struct gale_http_conn *tls_scratch_owner;

static int obuf_grow(struct obuf *o, size_t more)
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

/* Room for `more` bytes at the end of `o`, at `*at`. */
static inline __attribute__((always_inline)) int obuf_reserve(struct obuf *o, size_t more,
                                                              char **at)
{
    if (__builtin_expect(o->cap - o->len < more, 0) && obuf_grow(o, more) < 0)
        return -ENOMEM;
    *at = o->p + o->len;
    return 0;
}

/* ---- connection and request ---- */

enum conn_phase {
    PH_IDLE,    /* waiting for, or reading, a header block */
    PH_BODY,    /* reading a body */
    PH_HANDLER, /* a request is with the handler */
    PH_CLOSING, /* final bytes being written, then close (or linger) */
    PH_LINGER,  /* write side shut down, draining input before closing */
};

struct gale_http_conn {
    struct gale_http_conn *prev, *next; /* the server's list */
    gale_http_server *srv;              /* NULL once the server was freed */
    gale_stream *stream;                /* NULL once its close callback ran */
    gale_loop *loop;
    struct req *req;  /* request being parsed or handled */
    struct obuf *out; /* output collected in this batch */
    /* Where the current request's bytes begin in the current parser call: the call's input, or
     * for a request that follows one answered within the same call, the end of that one. The
     * header-size limit counts from here. */
    const char *exec_data;
    const char *exec_end;  /* end of the current parser call's input */
    const char *piece_end; /* end of the request's last URL, header or body piece in this call
                            * (NULL: none yet) */
    http_parser parser;
    gale_timeout timer;
    double timer_at; /* when `timer` fires */
    double batch_time; /* when the current batch of input arrived */
    double deadline; /* end of the current phase (0: none) */
    double wlook;     /* next look at write progress (0: no output waiting) */
    double wprogress; /* when the kernel was last seen taking output (or the wait began) */
    uint64_t wgiven;  /* response bytes handed to the stream */
    uint64_t wsent;   /* of those, taken by the kernel as of the last look */
    size_t drained;
    size_t batch_left; /* bytes of the current batch after the request being dispatched */
    int err_status; /* status chosen by a parser callback that failed */
    const char *err_why; /* and the reason for its log line, if it has a better one */
    int busy;       /* inside a callback that must not see the connection freed */
    struct flush_wait *flush_waits; /* flush callbacks not yet handed to the stream */
    uint8_t phase;
    bool in_batch, close_after_write, linger, wait_drain;
    uint8_t ip_len;
    char ip[INET6_ADDRSTRLEN];
};

struct hslice {
    uint32_t name_off, name_len, value_off, value_len;
};

struct arena_big {
    struct arena_big *next;
    max_align_t pad[];
};

enum { R_HEADERS, R_BODY, R_DONE };
enum { CB_NONE, CB_URL, CB_FIELD, CB_VALUE };
enum { FR_NONE, FR_LENGTH, FR_CHUNKED, FR_CLOSE };

struct req {
    gale_http_request pub;
    struct gale_http_conn *conn;
    gale_loop *loop;
    /* arena */
    char *apos;
    size_t aleft;
    struct arena_big *big;
    /* header block being parsed */
    char *hstore;
    size_t hlen, hcap;
    struct hslice *hs;
    size_t hn, hs_cap;
    uint32_t url_off, url_len;
    const char *run_base, *run_end; /* header span of the current parser call */
    size_t hfed;                    /* header bytes fed in earlier parser calls */
    /* body */
    char *body;
    size_t blen, bcap, blimit;
    /* response */
    gale_http_headers rh;
    const char *preset; /* a header line written before rh (gale__http_response_preset) */
    size_t preset_len;
    char *w;
    size_t wlen, wcap;
    const char *reason;
    unsigned long long sent; /* body bytes sent (FR_LENGTH) */
    long long user_cl;       /* Content-Length set by the handler, or -1 */
    int status;
    uint8_t rphase, last_cb, framing;
    uint8_t vpos; /* the request line's version token, checked as it streams by (version_scan) */
    uint8_t ck;   /* where chunk_scan is in a chunked body (CK_OFF: not walking one) */
    uint64_t ck_left; /* chunk_scan: the chunk size being read, then its data bytes still due */
    bool body_heap, w_heap, hstore_heap;
    bool get; /* the method is GET */
    bool keep_alive, head, headers_sent, closed, finished, dispatched, in_close_cb;
    gale_http_close_cb close_cb;
    void *close_arg;
};

struct gale_http_server {
    gale_loop *loop;
    gale_server *tcp;
    gale_http_server_opts opts;
    gale_http_request_cb cb;
    void *arg;
    struct gale_http_conn *conns;
    size_t nconns;
    /* graceful shutdown */
    bool draining, done_called;
    gale_loop *dloop;             /* the loop the drain's timers run on */
    gale_timeout drain_timer;     /* the deadline */
    gale_timeout done_timer;      /* `done`, due from the loop */
    double drain_deadline;
    gale_cb done;
    void *done_arg;
};

static size_t conn_on_read(gale_stream *s, int status, const char *data, size_t len, void *arg);
static void access_flush(double now);
static bool access_pending(void);
static void conn_flush(struct gale_http_conn *c);
static void flush_waits_fail(struct gale_http_conn *c);
static void conn_fail(struct gale_http_conn *c, int status, const char *why);
static void dispatch(struct gale_http_conn *c);
static bool over_high_water(const struct gale_http_conn *c);

/* ---- request blocks and arena ---- */

#ifndef GALE_SANITIZE /* the sanitizers see every block come and go */
static _Thread_local void *req_cache[REQ_CACHE_MAX];
static _Thread_local int req_cache_n;
#endif

#define ALIGN16(n) (((n) + 15) & ~(size_t)15)
#define REQ_HDR ALIGN16(sizeof(struct req))

static struct req *req_new(struct gale_http_conn *c)
{
    void *blk;
#ifdef GALE_SANITIZE
    blk = malloc(REQ_BLOCK);
#else
    blk = req_cache_n > 0 ? req_cache[--req_cache_n] : malloc(REQ_BLOCK);
#endif
    if (!blk)
        return NULL;
    struct req *r = blk;
    gale__zero(r, sizeof *r);
    r->conn = c;
    r->loop = c->loop;
    r->apos = (char *)blk + REQ_HDR;
    r->aleft = REQ_BLOCK - REQ_HDR;
    r->user_cl = -1;
    r->status = 200;
    r->pub.conn = c;
    r->pub.remote_ip = c->ip;
    r->pub.protocol = "http";
    r->pub.query = "";
    r->pub.body = "";
    return r;
}

static void req_free(struct req *r)
{
    if (r->body_heap)
        free(r->body);
    if (r->w_heap)
        free(r->w);
    if (r->hstore_heap)
        free(r->hstore);
    for (struct arena_big *b = r->big, *n; b; b = n) {
        n = b->next;
        free(b);
    }
#ifdef GALE_SANITIZE
    free(r);
#else
    if (req_cache_n < REQ_CACHE_MAX)
        req_cache[req_cache_n++] = r;
    else
        free(r);
#endif
}

/* Uninitialised arena memory, 16-byte aligned. */
static void *arena_more(struct req *r, size_t size);

/* The common case (room left in the current part) inline: it runs several times per request. */
static inline void *arena_raw(struct req *r, size_t size)
{
    size = ALIGN16(size ? size : 1);
    if (__builtin_expect(size <= r->aleft, 1)) {
        void *p = r->apos;
        r->apos += size;
        r->aleft -= size;
        return p;
    }
    return arena_more(r, size);
}

/* A new arena part (or a block of its own for a big `size`, already rounded). */
static void *arena_more(struct req *r, size_t size)
{
    size_t hdr = ALIGN16(sizeof(struct arena_big));
    bool own = size > REQ_BLOCK / 2;
    size_t bsize = own ? size : REQ_BLOCK;
    if (bsize > SIZE_MAX - hdr)
        return NULL;
    struct arena_big *b = malloc(hdr + bsize);
    if (!b)
        return NULL;
    b->next = r->big;
    r->big = b;
    char *p = (char *)b + hdr;
    if (!own) {
        r->apos = p + size;
        r->aleft = bsize - size;
    }
    return p;
}

static char *arena_strndup(struct req *r, const char *s, size_t len)
{
    char *p = arena_raw(r, len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* Grows a request-owned buffer: small ones come from the arena, larger ones from the heap. */
static int grow_more(struct req *r, char **buf, size_t len, size_t *cap, bool *heap, size_t need,
                     size_t limit);

/* Inline for the common cases: room already there, or a first small buffer from the arena (the
 * header copy and the response body of most requests). */
static inline int grow(struct req *r, char **buf, size_t len, size_t *cap, bool *heap,
                       size_t need, size_t limit)
{
    if (__builtin_expect(need <= *cap, 1))
        return 0;
    if (*cap == 0 && need <= 256 && 256 <= r->aleft && (!limit || limit >= 256)) {
        *buf = arena_raw(r, 256);
        *cap = 256;
        return 0;
    }
    return grow_more(r, buf, len, cap, heap, need, limit);
}

static int grow_more(struct req *r, char **buf, size_t len, size_t *cap, bool *heap, size_t need,
                     size_t limit)
{
    size_t ncap = *cap ? *cap * 2 : 256;
    if (limit && ncap > limit)
        ncap = limit;
    if (ncap < need)
        ncap = need;
    char *p;
    if (*heap) {
        p = realloc(*buf, ncap);
        if (!p)
            return -ENOMEM;
    } else {
        if (ncap <= 1024 && ncap <= r->aleft)
            p = arena_raw(r, ncap);
        else {
            p = malloc(ncap);
            if (p)
                *heap = true;
        }
        if (!p)
            return -ENOMEM;
        if (len)
            memcpy(p, *buf, len);
    }
    *buf = p;
    *cap = ncap;
    return 0;
}

static inline struct req *req_of(const gale_http_request *req) { return (struct req *)req; }

static inline bool conn_open(const struct gale_http_conn *c)
{
    return c->stream && !gale_stream_closed(c->stream);
}

static inline bool draining(const struct gale_http_conn *c) { return c->srv && c->srv->draining; }

/* Whether input follows the request being answered: the rest of the batch being parsed, bytes
 * left in the stream, or bytes the kernel holds for the socket (one ioctl; asked only while
 * the server shuts down, where it decides between keep-alive and "Connection: close"). */
static bool input_waiting(const struct gale_http_conn *c)
{
    if (c->in_batch ? c->batch_left > 0 : gale_stream_read_buffered(c->stream) > 0)
        return true;
    int fd = gale_stream_fd(c->stream), n = 0;
    return fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0;
}

/* ---- output of a connection ---- */

static struct obuf *conn_out(struct gale_http_conn *c)
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

static inline __attribute__((always_inline)) int out_append(struct gale_http_conn *c,
                                                            const void *data, size_t len)
{
    struct obuf *o = conn_out(c);
    char *at;
    if (!o || obuf_reserve(o, len, &at) < 0)
        return -ENOMEM;
    gale__copy(at, data, len);
    o->len += len;
    return 0;
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
static void set_deadline_at(struct gale_http_conn *c, double now, double secs)
{
    if (!(secs > 0)) {
        c->deadline = 0;
        return;
    }
    c->deadline = now + secs;
    if (!c->timer || c->timer_at > c->deadline)
        arm_timer(c, c->deadline);
}

static void set_deadline(struct gale_http_conn *c, double secs)
{
    if (secs > 0)
        set_deadline_at(c, gale_loop_time(c->loop), secs);
    else
        c->deadline = 0;
}

static double idle_timeout(const struct gale_http_conn *c)
{
    return c->srv ? c->srv->opts.idle_connection_timeout : 0;
}

/* A phase deadline passed. */
static void phase_expired(struct gale_http_conn *c, double now)
{
    if (c->phase == PH_IDLE && !c->req && gale_stream_write_pending(c->stream) > 0) {
        /* Idle time starts once the last response is out (a slow reader of a large body is
         * not idle; one that reads nothing is closed by the look at write progress below). */
        c->deadline = now + idle_timeout(c);
        return;
    }
    c->deadline = 0;
    switch (c->phase) {
    case PH_BODY:
        conn_fail(c, 408, "body timeout");
        break;
    case PH_IDLE:
        if (c->req && c->srv)
            gale_log(GALE_LOG_DEBUG, GALE_LOG_GENERAL,
                     "closing connection from %s: header block not complete in time", c->ip);
        gale_stream_close(c->stream, -ETIMEDOUT);
        break;
    case PH_CLOSING:
    case PH_LINGER:
        gale_stream_close(c->stream, -ETIMEDOUT);
        break;
    default:
        break;
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
 * noticed between 1 and 1 + 1/WRITE_LOOKS timeouts after the last progress. */

/* `len` response bytes were handed to the stream: watches them if the kernel did not take all. */
static void output_given(struct gale_http_conn *c, size_t len)
{
    c->wgiven += len;
    if (c->wlook || !conn_open(c))
        return;
    size_t pending = gale_stream_write_pending(c->stream);
    double t = idle_timeout(c);
    if (pending == 0 || !(t > 0))
        return;
    double now = gale_loop_time(c->loop);
    c->wsent = c->wgiven - pending;
    c->wprogress = now;
    c->wlook = now + t / WRITE_LOOKS;
    if (!c->timer || c->timer_at > c->wlook)
        arm_timer(c, c->wlook);
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
    uint64_t sent = c->wgiven - pending;
    if (sent != c->wsent) {
        c->wsent = sent;
        c->wprogress = now;
    } else if (now - c->wprogress >= t) {
        gale_log(GALE_LOG_DEBUG, GALE_LOG_GENERAL,
                 "closing connection from %s: the client read none of %zu queued response "
                 "bytes in %.3g s", c->ip, pending, now - c->wprogress);
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
    if (c->deadline && now >= c->deadline)
        phase_expired(c, now);
    /* Re-armed for the earlier of the phase deadline and the next look, unless the expiry
     * closed the connection or armed the timer early enough itself (conn_fail). */
    double next = c->deadline;
    if (c->wlook && (!next || c->wlook < next))
        next = c->wlook;
    if (next && conn_open(c) && (!c->timer || c->timer_at > next))
        arm_timer(c, next);
}

/* ---- closing ---- */

static void drain_check(gale_http_server *srv);

static void conn_maybe_free(struct gale_http_conn *c)
{
    if (!c->stream && !c->req && !c->busy)
        free(c);
}

static void conn_unlink(struct gale_http_conn *c)
{
    gale_http_server *srv = c->srv;
    if (!srv)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->nconns--;
    c->srv = NULL;
}

static void conn_on_close(gale_stream *s, int reason, void *arg)
{
    struct gale_http_conn *c = arg;
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
        req_free(r);
    } else if (r) {
        r->closed = true;
        if (r->close_cb) {
            c->busy++;
            r->in_close_cb = true;
            r->close_cb(&r->pub, r->close_arg);
            r->in_close_cb = false;
            c->busy--;
            if (r->finished)
                req_free(r); /* finish was called inside the callback */
        }
    }
    conn_maybe_free(c);
}

static void on_drained(gale_stream *s, int status, void *arg);

static bool over_high_water(const struct gale_http_conn *c)
{
    size_t queued = c->out ? c->out->len : 0;
    return queued + gale_stream_write_pending(c->stream) > WRITE_HIGH_WATER;
}

/* Reads the next request, unless the client is not reading its responses: then parsing waits
 * until the queued output drained (pipelining must not grow memory without bound). */
static void conn_resume(struct gale_http_conn *c)
{
    if (!conn_open(c) || !c->srv || c->wait_drain || gale_stream_reading(c->stream))
        return;
    if (over_high_water(c)) {
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
    if (status == 0 && (c->phase == PH_IDLE || c->phase == PH_BODY))
        conn_resume(c);
}

static void start_linger(struct gale_http_conn *c)
{
    c->phase = PH_LINGER;
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

/* A flush callback (gale_http_response_flush_cb) waiting for its bytes to leave. */
struct flush_wait {
    struct flush_wait *next;
    gale_http_flushed_cb cb;
    void *arg;
};

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

static void flush_waits_fail(struct gale_http_conn *c)
{
    while (c->flush_waits) {
        struct flush_wait *w = c->flush_waits;
        c->flush_waits = w->next;
        flush_waited(NULL, -EPIPE, w);
    }
}

/* Writes what this batch produced: one write. */
static void conn_flush(struct gale_http_conn *c)
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
        if (c->close_after_write &&
            gale_stream_write(c->stream, "", 0, on_written_close, c) < 0)
            gale_stream_close(c->stream, 0);
    }
    flush_waits_queue(c);
}

/* Writes the bytes collected so far followed by `data` without copying `data` into the batch
 * buffer (large bodies). The stream copies only what the kernel does not take. */
static int conn_write_through(struct gale_http_conn *c, const char *data, size_t len)
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

/* ---- error responses ---- */

static char *put_uint_long(char *p, unsigned long long v)
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

static inline __attribute__((always_inline)) char *put_uint(char *p, unsigned long long v)
{
    if (v >= 100)
        return put_uint_long(p, v);
    /* most Content-Lengths of small responses, and durations */
    if (v >= 10)
        *p++ = (char)('0' + v / 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* A status code: always three digits (100..999). */
static char *put_status(char *p, int status)
{
    p[0] = (char)('0' + status / 100);
    p[1] = (char)('0' + status / 10 % 10);
    p[2] = (char)('0' + status % 10);
    return p + 3;
}

static inline __attribute__((always_inline)) char *put_str(char *p, const char *s, size_t n)
{
    gale__copy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, s) put_str((p), (s), sizeof(s) - 1)

/* Answers `status` and closes (after draining input briefly, so the client reads the status).
 * Responses already collected in this batch go out first. */
static void conn_fail(struct gale_http_conn *c, int status, const char *why)
{
    if (access_pending()) /* lines of requests answered earlier in this batch come first */
        access_flush(gale_loop_time(c->loop));
    if (c->srv && !c->srv->opts.no_access_log) {
        struct req *r = c->req;
        const char *method = r && r->pub.method ? r->pub.method : "-";
        const char *uri = r && r->pub.uri ? r->pub.uri : "-";
        gale_log(status >= 500 ? GALE_LOG_ERROR : GALE_LOG_WARNING, GALE_LOG_ACCESS,
                 "%d %s %s (%s): %s", status, method, uri, c->ip, why);
    }
    if (c->req && !c->req->dispatched) {
        req_free(c->req);
        c->req = NULL;
    }
    if (status > 0) {
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
    c->phase = PH_CLOSING;
    c->close_after_write = true;
    c->linger = true;
    c->deadline = 0;
    set_deadline(c, LINGER_SECONDS * 2); /* covers writing the status and draining */
    if (!c->in_batch)
        conn_flush(c);
}

/* ---- parser callbacks ---- */

static int on_message_begin(http_parser *p)
{
    struct gale_http_conn *c = p->data;
    if (c->req) {
        c->err_status = 400;
        return -1;
    }
    c->req = req_new(c);
    if (!c->req) {
        c->err_status = 503;
        return -1;
    }
    return 0;
}

/* The request line after its uri: " HTTP/" DIGIT "." DIGIT, then CRLF or a bare LF (RFC 9112
 * 3, 2.2). http-parser is built without its strict checks, so it takes any byte for the "TTP/" of
 * the version ("HTT,/1.1" passes): these bytes are checked here, as the parser's input streams by
 * in pieces of any size. `vpos` counts the pattern matched so far; extra spaces before the
 * version are allowed (RFC 9112 3: recipients may split on whitespace). */
enum { V_NONE, V_SP, V_H, V_T1, V_T2, V_P, V_SLASH, V_MAJOR, V_DOT, V_MINOR, V_EOL, V_LF, V_DONE,
       V_BAD };

static __attribute__((noinline)) void version_scan(struct req *r, const char *p, const char *end)
{
    static const char lit[] = " HTTP/";
    unsigned v = r->vpos;
    if (v == V_NONE)
        return;
    for (; p < end && v < V_DONE; p++) {
        unsigned char ch = (unsigned char)*p;
        bool ok;
        if (v == V_H && ch == ' ')
            continue; /* more spaces before the version */
        if (v <= V_SLASH)
            ok = ch == (unsigned char)lit[v - V_SP];
        else if (v == V_MAJOR || v == V_MINOR)
            ok = ch >= '0' && ch <= '9';
        else if (v == V_DOT)
            ok = ch == '.';
        else if (v == V_EOL && ch == '\n') {
            v = V_DONE; /* a bare LF ends the line too */
            break;
        } else if (v == V_EOL)
            ok = ch == '\r';
        else
            ok = ch == '\n';
        v = ok ? v + 1 : V_BAD;
    }
    r->vpos = (uint8_t)v;
}

/* Inlined into the three callbacks: they run once per URL, field and value. */
static inline __attribute__((always_inline)) int hdr_piece(http_parser *p, int kind,
                                                          const char *at, size_t len)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    if (!r || r->rphase != R_HEADERS)
        return 0; /* trailers of a chunked body: ignored */
    if (!r->run_base)
        r->run_base = at;
    size_t off = r->hlen + (size_t)(at - r->run_base);
    r->run_end = at + len;
    c->piece_end = at + len;
    if (off + len > UINT32_MAX / 2) {
        c->err_status = 431;
        return -1;
    }
    uint32_t o32 = (uint32_t)off, l32 = (uint32_t)len;
    if (kind == CB_URL) {
        if (r->url_len && r->url_off + r->url_len != o32)
            goto bad;
        if (!r->url_len)
            r->url_off = o32;
        r->url_len += l32;
        if (at + len < c->exec_end) { /* the uri ended in this piece: its version follows */
            /* Most requests: " HTTP/1.1\r\n" whole in this piece, compared in two loads. */
            static const char tok[12] = " HTTP/1.1\r\n";
            const char *v = at + len;
            r->vpos = V_SP;
            if (c->exec_end - v >= 11) {
                uint64_t a, ta;
                uint32_t b, tb;
                memcpy(&a, v, 8);
                memcpy(&ta, tok, 8);
                memcpy(&b, v + 7, 4);
                memcpy(&tb, tok + 7, 4);
                if (a == ta && b == tb)
                    r->vpos = V_DONE;
            }
            if (r->vpos != V_DONE)
                version_scan(r, v, c->exec_end);
        }
    } else if (kind == CB_FIELD && r->last_cb == CB_FIELD) {
        struct hslice *h = &r->hs[r->hn - 1];
        if (h->name_off + h->name_len != o32)
            goto bad;
        h->name_len += l32;
    } else if (kind == CB_FIELD) {
        if (r->hn == r->hs_cap) {
            size_t ncap = r->hs_cap ? r->hs_cap * 2 : 16;
            struct hslice *n = arena_raw(r, ncap * sizeof *n);
            if (!n) {
                c->err_status = 503;
                return -1;
            }
            if (r->hn)
                memcpy(n, r->hs, r->hn * sizeof *n);
            r->hs = n;
            r->hs_cap = ncap;
        }
        r->hs[r->hn++] = (struct hslice){o32, l32, o32, 0};
    } else { /* value */
        if (!r->hn)
            goto bad;
        struct hslice *h = &r->hs[r->hn - 1];
        if (r->last_cb == CB_VALUE) {
            if (h->value_off + h->value_len != o32)
                goto bad;
            h->value_len += l32;
        } else {
            h->value_off = o32;
            h->value_len = l32;
        }
    }
    r->last_cb = (uint8_t)kind;
    return 0;
bad:
    c->err_status = 400;
    return -1;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    return hdr_piece(p, CB_URL, at, len);
}
static int on_header_field(http_parser *p, const char *at, size_t len)
{
    return hdr_piece(p, CB_FIELD, at, len);
}
static int on_header_value(http_parser *p, const char *at, size_t len)
{
    return hdr_piece(p, CB_VALUE, at, len);
}

/* Copies the header span seen in this parser call into the store. */
static int run_flush(struct req *r)
{
    if (!r->run_base)
        return 0;
    size_t n = (size_t)(r->run_end - r->run_base);
    if (grow(r, &r->hstore, r->hlen, &r->hcap, &r->hstore_heap, r->hlen + n, 0) < 0)
        return -ENOMEM;
    memcpy(r->hstore + r->hlen, r->run_base, n);
    r->hlen += n;
    r->run_base = NULL;
    return 0;
}

static const char *trim(const char *s, size_t *len)
{
    size_t n = *len;
    while (n && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    *len = n;
    return s;
}

static bool valid_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Tornado's _apply_xheaders: X-Real-Ip, else the last X-Forwarded-For entry; X-Scheme, else
 * X-Forwarded-Proto (last entry), "http" or "https" only. */
static void apply_xheaders(struct req *r)
{
    const gale_http_headers *h = &r->pub.headers;
    const gale_http_header *it, *last = NULL;
    size_t cur = 0, len = 0;
    const char *v = gale_http_headers_get(h, "X-Real-Ip", &len);
    if (!v) {
        while ((it = gale_http_headers_next(h, "X-Forwarded-For", &cur)))
            last = it;
        if (last) {
            v = last->value.p;
            len = last->value.len;
            const char *comma = v ? memrchr(v, ',', len) : NULL;
            if (comma) {
                len -= (size_t)(comma + 1 - v);
                v = comma + 1;
            }
        }
    }
    if (v) {
        v = trim(v, &len);
        if (len && len < INET6_ADDRSTRLEN) {
            char ip[INET6_ADDRSTRLEN];
            memcpy(ip, v, len);
            ip[len] = '\0';
            if (valid_ip(ip)) {
                char *copy = arena_strndup(r, ip, len);
                if (copy)
                    r->pub.remote_ip = copy;
            }
        }
    }
    v = gale_http_headers_get(h, "X-Scheme", &len);
    if (!v) {
        last = NULL;
        cur = 0;
        while ((it = gale_http_headers_next(h, "X-Forwarded-Proto", &cur)))
            last = it;
        if (last) {
            v = last->value.p;
            len = last->value.len;
        }
    }
    if (v) {
        const char *comma = memrchr(v, ',', len);
        if (comma) {
            len -= (size_t)(comma + 1 - v);
            v = comma + 1;
        }
        v = trim(v, &len);
        if (len == 5 && memcmp(v, "https", 5) == 0)
            r->pub.protocol = "https";
        else if (len == 4 && memcmp(v, "http", 4) == 0)
            r->pub.protocol = "http";
    }
}

/* Whether any of the `n` bytes at `p` is a space or a control byte (0x00-0x20); `end` bounds the
 * bytes readable from `p` on. 16 bytes per compare when they are there to load: most header
 * names take one. */
static inline bool has_ws(const char *p, size_t n, const char *end)
{
#ifdef __SSE2__
    const __m128i lim = _mm_set1_epi8(0x20);
    while (n && end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, lim), v));
        if (n < 16)
            return (m & ((1u << n) - 1)) != 0;
        if (m)
            return true;
        p += 16;
        n -= 16;
    }
#endif
    for (; n; n--, p++)
        if ((unsigned char)*p <= 0x20)
            return true;
    return false;
}

/* The '?' that begins the uri's query, or NULL; sets `*ws` when the uri holds a space or a
 * control byte (the parser, not strict, lets TAB and form feed through). Most uris are a few
 * bytes: one pass and no call for them. */
static inline char *find_query(char *uri, size_t len, bool *ws)
{
    if (len > 16) {
        *ws = has_ws(uri, len, uri + len);
        return memchr(uri, '?', len);
    }
    char *q = NULL;
    bool bad = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)uri[i];
        bad |= ch <= 0x20;
        if (ch == '?' && !q)
            q = uri + i;
    }
    *ws = bad;
    return q;
}

/* A chunked body, walked strictly ahead of the parser. http-parser, built without its strict
 * checks, takes any byte for the LF that ends a chunk-size line and for the CRLF after chunk
 * data, and lets a bare LF or a control byte through in a chunk extension ("5;\nhello" is read as
 * one extension up to the next CR). A proxy in front that ends those lines where RFC 9112 7.1 and
 * 2.2 say would disagree with the server on where the body ends: a request smuggling shape. So
 * the server walks the body by the strict grammar before the parser sees each piece, starting at
 * the LF that ends the header block (the parser pauses there for chunked requests), and refuses
 * the request (400) at the first byte the grammar does not allow. Bytes it accepts are read the
 * same way by both. It stops at the end of the body: what follows is the next request. */
enum { CK_OFF, CK_HEAD_LF, CK_SIZE0, CK_SIZE, CK_EXT, CK_SIZE_LF, CK_DATA, CK_DATA_CR,
       CK_DATA_LF, CK_TRAILER0, CK_TRAILER, CK_TRAILER_LF, CK_END_LF, CK_DONE };

static inline bool ctl_byte(unsigned char ch) { return (ch < 0x20 && ch != '\t') || ch == 0x7f; }

/* Walks [p, end) on from r->ck; false at a byte the grammar refuses. */
static bool chunk_scan(struct req *r, const char *p, const char *end)
{
    unsigned st = r->ck;
    while (p < end && st != CK_DONE) {
        unsigned char ch = (unsigned char)*p;
        if (st == CK_DATA) {
            uint64_t n = (uint64_t)(end - p);
            if (n > r->ck_left)
                n = r->ck_left;
            r->ck_left -= n;
            p += n;
            if (!r->ck_left)
                st = CK_DATA_CR;
            continue;
        }
        switch (st) {
        case CK_HEAD_LF:
        case CK_DATA_LF:
            if (ch != '\n')
                return false;
            st = CK_SIZE0;
            break;
        case CK_SIZE0:
        case CK_SIZE: {
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d >= 0) {
                if (r->ck_left >> 59) /* no size past 2^63 (the parser stops near 2^64) */
                    return false;
                r->ck_left = r->ck_left * 16 + (unsigned)d;
                st = CK_SIZE;
            } else if (st == CK_SIZE && ch == '\r') {
                st = CK_SIZE_LF;
            } else if (st == CK_SIZE && (ch == ';' || ch == ' ')) {
                st = CK_EXT;
            } else {
                return false;
            }
            break;
        }
        case CK_EXT:
            if (ch == '\r')
                st = CK_SIZE_LF;
            else if (ctl_byte(ch))
                return false;
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                return false;
            st = r->ck_left ? CK_DATA : CK_TRAILER0;
            break;
        case CK_DATA_CR:
            if (ch != '\r')
                return false;
            st = CK_DATA_LF;
            break;
        case CK_TRAILER0: /* a trailer field line, or the blank line that ends the body */
            if (ch == '\r')
                st = CK_END_LF;
            else if (ch == '\n')
                st = CK_DONE;
            else if (ch == ' ' || ch == '\t' || ctl_byte(ch))
                return false; /* a folded line, or a control byte */
            else
                st = CK_TRAILER;
            break;
        case CK_TRAILER:
            if (ch == '\r')
                st = CK_TRAILER_LF;
            else if (ch == '\n')
                st = CK_TRAILER0;
            else if (ctl_byte(ch))
                return false;
            break;
        case CK_TRAILER_LF:
        case CK_END_LF:
            if (ch != '\n')
                return false;
            st = st == CK_TRAILER_LF ? CK_TRAILER0 : CK_DONE;
            break;
        default:
            return false;
        }
        p++;
    }
    r->ck = (uint8_t)st;
    return true;
}

static int on_headers_complete(http_parser *p)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    gale_http_server *srv = c->srv;
    if (!r || !srv) {
        c->err_status = 400;
        return -1;
    }
    size_t here = r->run_end ? (size_t)(r->run_end - c->exec_data) : 0;
    if (run_flush(r) < 0) {
        c->err_status = 503;
        return -1;
    }
    if (r->hfed + here > srv->opts.max_header_size) {
        c->err_status = 431;
        return -1;
    }
    r->rphase = R_BODY;

    /* http-parser, built without its strict checks, takes a space as part of a header name:
     * "Transfer-Encoding : chunked" arrives named "Transfer-Encoding ", and so does a line that
     * starts with a space. RFC 9112 5.1 and 2.2 make both a 400; served, they are a request
     * smuggling shape behind a proxy that reads the header as the real one. */
    bool spaced = false;
    gale_http_header *items = NULL;
    if (r->hn) {
        items = arena_raw(r, r->hn * sizeof *items);
        if (!items) {
            c->err_status = 503;
            return -1;
        }
        for (size_t i = 0; i < r->hn; i++) {
            const struct hslice *s = &r->hs[i];
            const char *name = r->hstore + s->name_off;
            spaced |= has_ws(name, s->name_len, r->hstore + r->hlen);
            items[i] = (gale_http_header){{name, s->name_len},
                                          {r->hstore + s->value_off, s->value_len}};
        }
    }
    r->pub.headers = (gale_http_headers){items, r->hn, r->hn};
    r->pub.version_major = p->http_major;
    r->pub.version_minor = p->http_minor > 1 ? 1 : p->http_minor;
    r->get = p->method == HTTP_GET;
    r->pub.method = r->get ? "GET" : http_method_str((enum http_method)p->method);
    /* The uri ends in place when the copied head holds the byte that followed it in the input
     * (the space before the version): no copy. The head is copied from each parser call's first
     * piece on, so when a read ended between the uri and the first header name, what follows
     * the uri in the copy is that name: then, and without any header, the uri is copied. */
    char *uri;
    size_t url_end = (size_t)r->url_off + r->url_len;
    if (r->hstore && r->hn && r->hs[0].name_off > url_end) {
        uri = r->hstore + r->url_off;
        uri[r->url_len] = '\0';
    } else {
        uri = arena_strndup(r, r->hstore ? r->hstore + r->url_off : "", r->url_len);
    }
    if (!uri) {
        c->err_status = 503;
        return -1;
    }
    r->pub.uri = uri;
    bool uri_ws;
    char *q = find_query(uri, r->url_len, &uri_ws);
    if (q) {
        r->pub.path = arena_strndup(r, uri, (size_t)(q - uri));
        r->pub.query = q + 1;
        if (!r->pub.path) {
            c->err_status = 503;
            return -1;
        }
    } else {
        r->pub.path = uri;
    }
    /* http-parser takes any one-digit version, and reports a request line without one
     * (HTTP/0.9's "GET /path") as 0.9: that is malformed for HTTP/1.x (400); another major
     * version is one we do not serve (505). A higher 1.x minor is served as 1.1 (RFC 9112 2.3).
     * Checked once method and uri are known, for the log line. */
    if (p->http_major == 0) {
        c->err_status = 400;
        c->err_why = "request line without an HTTP/1.x version";
        return -1;
    }
    if (r->vpos != V_DONE) {
        c->err_status = 400;
        c->err_why = "malformed HTTP version in the request line";
        return -1;
    }
    if (p->http_major != 1) {
        c->err_status = 505;
        return -1;
    }
    if (spaced) {
        c->err_status = 400;
        c->err_why = "whitespace in a header name";
        return -1;
    }
    if (uri_ws) {
        c->err_status = 400;
        c->err_why = "whitespace or a control byte in the request target";
        return -1;
    }

    /* Framing (RFC 9112 6.1, 6.3): a Transfer-Encoding must be exactly one final "chunked" and
     * never comes with a Content-Length; duplicate Content-Lengths must agree. */
    const gale_http_headers *h = &r->pub.headers;
    size_t cur = 0, nte = 0, ncl = 0;
    const gale_http_header *it, *te = NULL, *cl = NULL;
#if (HTTP_PARSER_VERSION_MAJOR * 10000 + HTTP_PARSER_VERSION_MINOR * 100 +                    \
     HTTP_PARSER_VERSION_PATCH) >= 20903
    /* The parser (2.9.3 on) flags both headers: most requests have neither, so skip the scans. */
    bool scan = p->uses_transfer_encoding || (p->flags & F_CONTENTLENGTH);
#else
    bool scan = true;
#endif
    while (scan && (it = gale_http_headers_next(h, "Transfer-Encoding", &cur))) {
        te = it;
        nte++;
    }
    cur = 0;
    while (scan && (it = gale_http_headers_next(h, "Content-Length", &cur))) {
        if (cl) {
            size_t a = cl->value.len, b = it->value.len;
            const char *x = trim(cl->value.p, &a), *y = trim(it->value.p, &b);
            if (a != b || memcmp(x, y, a) != 0) {
                c->err_status = 400;
                return -1;
            }
        }
        cl = it;
        ncl++;
    }
    if (nte) {
        size_t len = te->value.len;
        const char *v = trim(te->value.p, &len);
        if (nte > 1 || ncl || !gale_str_ieq(v, len, "chunked") || !(p->flags & F_CHUNKED)) {
            c->err_status = 400;
            return -1;
        }
    }
    bool chunked = (p->flags & F_CHUNKED) != 0;
    unsigned long long length = (p->flags & F_CONTENTLENGTH) ? p->content_length : 0;
    if (!chunked && length > srv->opts.max_body_size) {
        c->err_status = 413;
        return -1;
    }

    /* http_should_keep_alive() for a request (which never needs EOF framing), without the two
     * library calls: HTTP/1.1 unless "Connection: close", HTTP/1.0 only with "keep-alive". */
    bool keep = p->http_major > 0 && p->http_minor > 0 ? !(p->flags & F_CONNECTION_CLOSE)
                                                        : (p->flags & F_CONNECTION_KEEP_ALIVE);
    r->keep_alive = keep && !srv->opts.no_keep_alive && !p->upgrade;
    r->head = p->method == HTTP_HEAD;
    if (srv->opts.xheaders)
        apply_xheaders(r);

    if (chunked || length > 0) {
        if (p->http_major == 1 && p->http_minor >= 1 &&
            gale_http_headers_has_token(h, "Expect", "100-continue"))
            out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        if (!chunked)
            r->blimit = (size_t)length + 1;
        c->phase = PH_BODY;
        c->deadline = 0;
        set_deadline_at(c, c->batch_time, srv->opts.body_timeout);
    }
    if (chunked && p->method != HTTP_CONNECT) {
        /* Stop the parser on the header block's last byte, where chunk_scan starts. (It reads a
         * chunked body for an Upgrade request too; only CONNECT's bytes after the head are not
         * a body to it.) */
        r->ck = CK_HEAD_LF;
        http_parser_pause(p, 1);
    }
    return 0;
}

static int on_chunk_header(http_parser *p)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    if (r && c->srv && p->content_length > c->srv->opts.max_body_size - r->blen) {
        c->err_status = 413;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    if (!r || !c->srv)
        return -1;
    if (len > c->srv->opts.max_body_size - r->blen) {
        c->err_status = 413;
        return -1;
    }
    /* Grown as bytes arrive (never sized up front from a claimed Content-Length). */
    if (r->blen + len + 1 > r->bcap &&
        grow(r, &r->body, r->blen, &r->bcap, &r->body_heap, r->blen + len + 1, r->blimit) < 0) {
        c->err_status = 413;
        return -1;
    }
    memcpy(r->body + r->blen, at, len);
    r->blen += len;
    c->piece_end = at + len;
    return 0;
}

/* Where the request that just completed ends in the parser call's input, found from its last
 * piece; NULL when that cannot be told (no piece of it in this call, or no blank line seen). A
 * Content-Length body ends the message with its last byte. Otherwise the head (no body) or
 * the chunked body's last chunk and trailers end at the first empty line after the last
 * piece: the bytes in between are the rest of a header or request line ("\r\n" or "\n" line
 * ends), the end of a chunk, the "0" line and trailer lines, never an empty line. */
static const char *message_end(const struct gale_http_conn *c, const http_parser *p,
                               const struct req *r)
{
    const char *q = c->piece_end, *e = c->exec_end;
    if (!q)
        return NULL;
    if (p->flags & F_CHUNKED) {
        if (!r->blen)
            return NULL; /* "0\r\n\r\n" right after the head: its blank line comes first */
    } else if (r->blen) {
        return q;
    }
    for (; q < e; q++) {
        if (*q != '\n')
            continue;
        if (e - q > 1 && q[1] == '\n')
            return q + 2;
        if (e - q > 2 && q[1] == '\r' && q[2] == '\n')
            return q + 3;
    }
    return NULL;
}

static int on_message_complete(http_parser *p)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    if (!r)
        return -1;
    r->rphase = R_DONE;
    if (r->body) {
        r->body[r->blen] = '\0';
        r->pub.body = r->body;
        r->pub.body_len = r->blen;
    }
    r->pub.start_time = c->batch_time;
    /* Answer it now, inside this parser call, and go on with the next pipelined request in the
     * same call when it finished at once (the common case: one parser call per batch instead of
     * one per request). That needs to know where this request ends, for the input left after it
     * (a drain the handler starts decides on it whether to keep the connection) and for where
     * the next one begins. Otherwise, or when the handler runs on, the connection stops or a
     * drain began, pause: conn_parse then has the exact position. */
    const char *end = c->in_batch && !draining(c) ? message_end(c, p, r) : NULL;
    if (end) {
        c->batch_left = (size_t)(c->exec_end - end);
        dispatch(c);
        if (!c->req && c->phase == PH_IDLE && conn_open(c) && c->srv && !draining(c) &&
            !over_high_water(c)) {
            c->exec_data = end;
            c->piece_end = NULL;
            return 0;
        }
    }
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

/* ---- reading ---- */

static void dispatch(struct gale_http_conn *c)
{
    struct req *r = c->req;
    gale_http_server *srv = c->srv;
    r->dispatched = true;
    c->phase = PH_HANDLER;
    c->deadline = 0;
    c->busy++;
    srv->cb(&r->pub, srv->arg);
    c->busy--;
}

/* Feeds `len` bytes to the parser; dispatches a request it completes. Returns bytes consumed. */
static size_t conn_parse(struct gale_http_conn *c, const char *data, size_t len)
{
    c->exec_data = data;
    c->exec_end = data + len;
    c->piece_end = NULL;
    c->err_status = 0;
    c->err_why = NULL;
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
        http_parser_pause(&c->parser, 0); /* a request finished, or a chunked body begins */
    struct req *cur = c->req;
    if (cur) {
        cur->run_base = NULL;
        cur->run_end = NULL;
        /* A version token cut by the previous read continues here. (A uri cut at the end needs
         * nothing: the parser reports its rest, if empty, as a piece at this read's start.) */
        if (cur->rphase == R_HEADERS && cur->vpos != V_NONE && cur->vpos < V_DONE)
            version_scan(cur, data, data + len);
        if (cur->ck != CK_OFF && cur->ck != CK_DONE && cur->rphase == R_BODY &&
            !chunk_scan(cur, data, data + len)) {
            conn_fail(c, 400, "malformed chunked body");
            return len;
        }
    }
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        /* A complete request: dispatch it unless on_message_complete already did. */
        if (c->req && c->req->rphase == R_DONE && !c->req->dispatched) {
            c->batch_left = len - n;
            dispatch(c);
        }
        return n;
    }
    if (e != HPE_OK) {
        int status = c->err_status ? c->err_status : 400;
        if (e == HPE_HEADER_OVERFLOW)
            status = 431;
        const char *why = c->err_status == 413   ? "body too large"
                          : c->err_status == 431 ? "header block too large"
                          : c->err_status == 505 ? "HTTP version not supported"
                          : c->err_status        ? "invalid request"
                                                 : http_errno_description(e);
        if (e == HPE_HEADER_OVERFLOW)
            why = "header block too large";
        else if (c->err_why)
            why = c->err_why;
        conn_fail(c, status, why);
        return len;
    }
    struct req *r = c->req;
    if (r && r->rphase == R_HEADERS) {
        if (run_flush(r) < 0) {
            conn_fail(c, 503, "out of memory");
            return len;
        }
        r->hfed += (size_t)(data + n - c->exec_data);
        if (c->srv && r->hfed > c->srv->opts.max_header_size) {
            conn_fail(c, 431, "header block too large");
            return len;
        }
    }
    if (n < len) { /* cannot happen without a pause or an error: never spin */
        conn_fail(c, 400, "unparsable input");
        return len;
    }
    return n;
}

static size_t conn_on_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct gale_http_conn *c = arg;
    if (status < 0 || !c->stream)
        return len; /* the close callback follows */
    if (c->phase == PH_LINGER || c->phase == PH_CLOSING) {
        c->drained += len;
        if (c->drained > LINGER_MAX_BYTES)
            gale_stream_close(s, 0);
        else
            gale_stream_read_some(s, conn_on_read, c);
        return len;
    }
    c->in_batch = true;
    c->batch_time = gale_loop_time(c->loop);
    c->busy++;
    size_t off = 0;
    while (off < len && (c->phase == PH_IDLE || c->phase == PH_BODY) && conn_open(c) && c->srv) {
        /* A client that pipelines without reading: leave the rest buffered until it reads. */
        if (off > 0 && c->phase == PH_IDLE && over_high_water(c))
            break;
        off += conn_parse(c, data + off, len - off);
    }
    c->in_batch = false;
    if (access_pending()) /* the responses leave now: one clock read for all their lines */
        access_flush(gale_loop_time(c->loop));
    if (c->phase == PH_CLOSING) {
        if (off < len)
            c->linger = true; /* unread input: closing now would reset the connection */
        off = len;
    }
    conn_flush(c);
    if (c->phase == PH_IDLE || c->phase == PH_BODY)
        conn_resume(c);
    c->busy--;
    return off;
}

/* ---- accepting ---- */

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
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (peer && peer->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, c->ip, sizeof c->ip);
    else if (peer && peer->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, c->ip,
                  sizeof c->ip);
    else
        strcpy(c->ip, "0.0.0.0");
    c->ip_len = (uint8_t)strlen(c->ip);
    if (peer && peer->sa_family != AF_UNIX)
        gale_stream_set_nodelay(s, true);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    gale_stream_set_close_cb(s, conn_on_close, c);
    c->phase = PH_IDLE;
    set_deadline(c, srv->opts.idle_connection_timeout);
    conn_resume(c);
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
    return gale_server_bind(srv->tcp, port, address, AF_UNSPEC, GALE_DEFAULT_BACKLOG, false);
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
           !input_waiting(c);
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
        c->phase = PH_CLOSING;
        c->close_after_write = true;
        c->deadline = 0;
        set_deadline(c, LINGER_SECONDS);
        conn_flush(c);
    }
    gale_log_info(GALE_LOG_GENERAL,
                  "shutting down: stopped accepting, closing %zu idle connections, %zu busy "
                  "(deadline %.3g s)", idle, srv->nconns - idle, timeout);
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
    gale_server_free(srv->tcp);
    while (srv->conns) {
        struct gale_http_conn *c = srv->conns;
        conn_unlink(c);
        if (c->stream)
            gale_stream_close(c->stream, 0);
    }
    free(srv);
}

/* ---- response ---- */

/* RFC 9110 tchar: visible ASCII except delimiters. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

static bool token_char(unsigned char ch) { return tchar[ch] != 0; }

/* Validates a response header (name a token, no CR or LF in the value) and measures both. */
static int check_header(const char *name, const char *value, size_t *nl, size_t *vl)
{
    if (!name || !*name || !value)
        return -EINVAL;
    const char *s = name;
    for (; *s; s++)
        if (!token_char((unsigned char)*s))
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
        const char *v = trim(value, &l);
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

int gale_http_response_add_header_trusted(gale_http_request *req, const char *name,
                                          size_t name_len, const char *value, size_t value_len)
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

static _Thread_local struct {
    double valid_until; /* loop time */
    char block[SERVER_LINE_LEN + DATE_LINE_LEN + 1];
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
    }
    return tls_head.block;
}

/* Appends the status line and headers to the connection's output. `final`: the response is
 * complete (Content-Length known) rather than being flushed. `now`: a recent loop time. */
static int emit_head(struct req *r, bool final, double now)
{
    struct gale_http_conn *c = r->conn;
    bool bodyless = r->head || bodyless_status(r->status);
    bool has_server = false, has_date = false;
    size_t need = 256;
    /* Most responses are "200 OK": one constant-size copy below, no reason to look up. */
    bool plain_ok = r->status == 200 && !r->reason;
    const char *reason = NULL;
    size_t rlen = 0;
    if (!plain_ok) {
        reason = r->reason ? r->reason : gale_http_reason(r->status);
        rlen = strlen(reason);
        need += rlen;
    }
    uint8_t kinds[16]; /* header_kind of the first 16 headers, for the second pass */
    for (size_t i = 0; i < r->rh.n; i++) {
        const gale_http_header *h = &r->rh.items[i];
        int k = header_kind(h);
        if (i < 16)
            kinds[i] = (uint8_t)k;
        if (k == HK_SERVER)
            has_server = true;
        else if (k == HK_DATE)
            has_date = true;
        else if (k == HK_CONNECTION && value_has_close(h))
            r->keep_alive = false;
        need += h->name.len + h->value.len + 4;
    }
    need += r->preset_len;
    /* Framing. */
    bool strip_cl = r->status < 200 || r->status == 204;
    bool add_cl = false;
    unsigned long long cl = 0;
    if (bodyless) {
        r->framing = FR_NONE;
        if (final && r->user_cl < 0 && !bodyless_status(r->status)) {
            add_cl = true; /* HEAD: the length the GET would have had */
            cl = r->wlen;
        }
    } else if (r->user_cl >= 0) {
        r->framing = FR_LENGTH;
    } else if (final) {
        r->framing = FR_LENGTH;
        add_cl = true;
        cl = r->wlen;
        r->user_cl = (long long)cl;
    } else if (r->pub.version_major == 1 && r->pub.version_minor >= 1) {
        r->framing = FR_CHUNKED;
    } else {
        r->framing = FR_CLOSE;
        r->keep_alive = false;
    }
    if (!c->srv)
        r->keep_alive = false;
    else if (r->keep_alive && c->srv->draining && !input_waiting(c))
        r->keep_alive = false; /* shutting down: this is the connection's last response */

    struct obuf *o = conn_out(c);
    char *p;
    if (!o || obuf_reserve(o, need, &p) < 0)
        return -ENOMEM;
    char *start = p;
    if (plain_ok) {
        p = PUT_LIT(p, "HTTP/1.1 200 OK\r\n");
    } else {
        p = PUT_LIT(p, "HTTP/1.1 ");
        p = put_status(p, r->status);
        *p++ = ' ';
        p = put_str(p, reason, rlen);
        p = PUT_LIT(p, "\r\n");
    }
    if (!has_server || !has_date) {
        const char *block = server_date_block(now);
        if (!has_server && !has_date)
            p = put_str(p, block, SERVER_LINE_LEN + DATE_LINE_LEN);
        else if (!has_date)
            p = put_str(p, block + SERVER_LINE_LEN, DATE_LINE_LEN);
        else
            p = put_str(p, block, SERVER_LINE_LEN);
    }
    p = put_str(p, r->preset, r->preset_len);
    for (size_t i = 0; i < r->rh.n; i++) {
        const gale_http_header *h = &r->rh.items[i];
        int k = i < 16 ? kinds[i] : header_kind(h);
        if (k == HK_TE || k == HK_CONNECTION || (k == HK_CL && strip_cl))
            continue;
        p = put_str(p, h->name.p, h->name.len);
        p = PUT_LIT(p, ": ");
        p = put_str(p, h->value.p, h->value.len);
        p = PUT_LIT(p, "\r\n");
    }
    if (add_cl) {
        p = PUT_LIT(p, "Content-Length: ");
        p = put_uint(p, cl);
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
        struct obuf *o = conn_out(c);
        char *at;
        if (!o || obuf_reserve(o, 24, &at) < 0)
            return -ENOMEM;
        o->len += (size_t)snprintf(at, 24, "%zx\r\n", len);
    }
    int rc = 0;
    if (len >= BIG_BODY)
        rc = conn_write_through(c, r->w, len);
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
        rc = emit_head(r, false, c->in_batch ? c->batch_time : gale_loop_time(c->loop));
    if (rc == 0)
        rc = emit_body(r);
    if (!c->in_batch)
        conn_flush(c);
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
    struct gale_http_conn *c = req_of(req)->conn;
    *w = (struct flush_wait){.cb = cb, .arg = arg};
    struct flush_wait **tail = &c->flush_waits;
    while (*tail)
        tail = &(*tail)->next;
    *tail = w;
    if (!c->in_batch)
        flush_waits_queue(c);
    return 0;
}

size_t gale_http_response_pending(const gale_http_request *req)
{
    const struct req *r = req_of(req);
    if (!r || !conn_open(r->conn))
        return 0;
    const struct gale_http_conn *c = r->conn;
    return (c->out ? c->out->len : 0) + gale_stream_write_pending(c->stream);
}

/* "200 GET /path (127.0.0.1) 0.21ms", formatted by hand and handed to the logger preformatted
 * (no printf pass): this runs once per request.
 *
 * The duration runs from the arrival of the request's last bytes (start_time) until its response
 * is handed to the stream. A request answered while its batch of input is being processed is
 * written with the batch's one write at the end of the batch, so that is when it is done: its
 * line waits in a per-thread list until then, and one clock read serves every line of the batch
 * (a pipelining client sends 16 and more per batch). Lines are never held across loop
 * iterations, and any other access line is written after the waiting ones. */

#define ACCESS_HEAD_MAX 1000 /* "200 METHOD uri (ip": longer uris are cut */
#define ACCESS_TAIL_MAX 40   /* ") 12345.67ms" */

struct access_entry {
    double start;
    uint32_t len; /* head bytes that follow the entry */
    int level;
};

static _Thread_local struct {
    size_t used;
    alignas(struct access_entry) char buf[16384];
} tls_access;

static bool access_pending(void) { return tls_access.used != 0; }

static gale_log_level access_level(int status)
{
    return status < 400 ? GALE_LOG_INFO : status < 500 ? GALE_LOG_WARNING : GALE_LOG_ERROR;
}

/* Writes "200 GET /path (127.0.0.1" to `out` (ACCESS_HEAD_MAX bytes); returns its length. */
static size_t access_head(const struct req *r, char *out)
{
    char *p = out;
    if (r->status == 200)
        p = PUT_LIT(p, "200 ");
    else
        p = put_status(p, r->status), *p++ = ' ';
    /* Method names are a few letters (copied in place); the uri's length is known, and so is
     * the peer's unless xheaders replaced it. The uri is cut to keep the line bounded. */
    if (r->get) {
        p = PUT_LIT(p, "GET ");
    } else {
        for (const char *m = r->pub.method; *m && p < out + 32; m++)
            *p++ = *m;
        *p++ = ' ';
    }
    size_t n = r->url_len < ACCESS_HEAD_MAX - 120 ? r->url_len : ACCESS_HEAD_MAX - 120;
    p = put_str(p, r->pub.uri, n);
    *p++ = ' ';
    *p++ = '(';
    const char *ip = r->pub.remote_ip;
    n = ip == r->conn->ip ? r->conn->ip_len : strnlen(ip, 64);
    p = put_str(p, ip, n);
    return (size_t)(p - out);
}

/* Appends ") 0.21ms" for `secs` at `p`; returns the end. */
static char *access_tail(char *p, double secs)
{
    double ms = secs * 1000.0;
    unsigned long long hundredths = ms > 0 ? (unsigned long long)(ms * 100.0 + 0.5) : 0;
    p = PUT_LIT(p, ") ");
    p = put_uint(p, hundredths / 100);
    *p++ = '.';
    *p++ = (char)('0' + hundredths / 10 % 10);
    *p++ = (char)('0' + hundredths % 10);
    return PUT_LIT(p, "ms");
}

/* Writes the waiting lines, each ending at `now`. */
static void access_flush(double now)
{
    size_t used = tls_access.used;
    tls_access.used = 0;
    /* The lines of one batch share their start, so their tail is formatted once, and mostly
     * their level, so the line prefix is looked up once per run of one level. */
    double tail_start = -1;
    char tail[ACCESS_TAIL_MAX];
    size_t tail_len = 0;
    int level = -1;
    const char *pfx = NULL;
    size_t plen = 0;
    for (size_t off = 0; off < used;) {
        struct access_entry e;
        memcpy(&e, tls_access.buf + off, sizeof e);
        const char *head = tls_access.buf + off + sizeof e;
        if (e.start != tail_start) {
            tail_start = e.start;
            tail_len = (size_t)(access_tail(tail, now - e.start) - tail);
        }
        if (e.level != level) {
            level = e.level;
            plen = gale__log_prefix((gale_log_level)level, GALE_LOG_ACCESS, &pfx);
        }
        gale__log_append((gale_log_level)level, pfx, plen, head, e.len, tail, tail_len);
        off += sizeof e + ALIGN16(e.len);
    }
}

static void access_log(struct req *r, double now)
{
    gale_log_level lvl = access_level(r->status);
    if (!gale_log_enabled(lvl))
        return;
    struct gale_http_conn *c = r->conn;
    if (c->in_batch) {
        size_t room = sizeof(struct access_entry) + ACCESS_HEAD_MAX;
        if (tls_access.used + room > sizeof tls_access.buf)
            access_flush(gale_loop_time(c->loop));
        char *at = tls_access.buf + tls_access.used;
        struct access_entry e = {r->pub.start_time, 0, (int)lvl};
        e.len = (uint32_t)access_head(r, at + sizeof e);
        memcpy(at, &e, sizeof e);
        tls_access.used += sizeof e + ALIGN16(e.len);
        return;
    }
    if (access_pending())
        access_flush(now);
    char line[ACCESS_HEAD_MAX + ACCESS_TAIL_MAX];
    char *end = access_tail(line + access_head(r, line), now - r->pub.start_time);
    gale_log_write(lvl, GALE_LOG_ACCESS, line, (size_t)(end - line));
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
    int rc = 0;
    bool alive = !r->closed && conn_open(c) && c->req == r;
    /* One clock read serves the Date header, the access log and the idle deadline; within a
     * batch its arrival time serves (the access line waits for the batch's end). */
    bool logging = c->srv && !c->srv->opts.no_access_log;
    double now = c->in_batch ? c->batch_time : gale_loop_time(c->loop);
    if (alive && !r->headers_sent && !r->head && !bodyless_status(r->status) &&
        r->user_cl >= 0 && (unsigned long long)r->user_cl != r->wlen) {
        /* The whole body is known and contradicts the handler's Content-Length: no valid
         * response can say both, so answer 500 rather than send a truncated or overlong one. */
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
    if (alive) {
        if (!r->headers_sent)
            rc = emit_head(r, true, now);
        else if (r->keep_alive && draining(c) && !input_waiting(c))
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
    } else {
        rc = -EPIPE;
    }
    if (logging)
        access_log(r, now);
    bool keep = alive && rc == 0 && r->keep_alive;
    if (c->req == r)
        c->req = NULL;
    if (!r->in_close_cb)
        req_free(r);
    if (!alive) {
        conn_maybe_free(c);
        return rc ? rc : -EPIPE;
    }
    if (rc < 0) {
        gale_stream_close(c->stream, rc);
        return rc;
    }
    if (keep) {
        c->phase = PH_IDLE;
        set_deadline_at(c, now, idle_timeout(c));
    } else {
        c->phase = PH_CLOSING;
        c->close_after_write = true;
    }
    if (!c->in_batch) {
        conn_flush(c);
        if (keep)
            conn_resume(c);
    }
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

void *gale_http_request_alloc(gale_http_request *req, size_t size)
{
    if (!req)
        return NULL;
    void *p = arena_raw(req_of(req), size);
    if (p)
        memset(p, 0, size ? size : 1);
    return p;
}

void *gale__http_request_alloc_raw(gale_http_request *req, size_t size)
{
    return req ? arena_raw(req_of(req), size) : NULL;
}

char *gale_http_request_strdup(gale_http_request *req, const char *s, size_t len)
{
    if (!req || (!s && len))
        return NULL;
    return arena_strndup(req_of(req), s ? s : "", len);
}

gale_loop *gale_http_request_loop(const gale_http_request *req)
{
    return req ? req_of(req)->loop : NULL;
}

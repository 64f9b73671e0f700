/* The HTTP/1.1 server's private shapes, shared by its files (not installed).
 *
 * The server is seven files, each with one job, read in this order to follow a request:
 *   httpserver.c           the connection: accepting, reading, dispatching, writing, deadlines,
 *                          closing, the server API and graceful shutdown
 *   httpserver_parse.c     the request on the wire: http-parser's callbacks and the checks gale
 *                          adds to them (version, header names, framing, Host, chunked bodies),
 *                          with one way to refuse a request (reject)
 *   httpserver_fast.c      the common request head read without http-parser, through the same
 *                          callbacks
 *   httpserver_response.c  the response: status and headers, choosing the framing, writing the
 *                          head and the body, flush and finish
 *   httpserver_access.c    the access log line of each request
 *   httpserver_arena.c     request blocks and the per-request arena
 *   httpserver_stream.c    streamed request bodies: a request handed over at the end of its
 *                          head, its body delivered piece by piece with flow control
 *
 * The connection's phase changes only through set_phase(), which asserts that the change is one
 * the table in httpserver.c's top comment allows.
 */
#ifndef GALE_HTTP_SERVER_INTERNAL_H
#define GALE_HTTP_SERVER_INTERNAL_H

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/copy_internal.h"
#include "core/loop.h"
#include "http/httpserver.h"
#include "net/iostream.h"
#include "net/tcpserver.h"

#define REQ_BLOCK 4096 /* request struct + first arena part */
#define BIG_BODY 16384 /* bodies from this size are written without an extra copy */
#define ALIGN16(n) (((n) + 15) & ~(size_t)15)

/* ---- the connection ---- */

/* An output buffer: the responses a batch of input produced, written with one write. */
struct obuf {
    char *p;
    size_t len, cap;
};

/* The state of one batch of input while it is parsed: it lives on conn_on_read's stack, so an
 * idle connection does not carry it (c->batch is NULL outside a batch). */
struct conn_batch {
    double time; /* when the batch arrived */
    /* Where the current request's bytes begin in the current parser call: the call's input, or
     * for a request that follows one answered within the same call, the end of that one. The
     * header-size limit counts from here. */
    const char *exec_data;
    const char *exec_end;  /* end of the current parser call's input */
    const char *piece_end; /* end of the request's last URL, header or body piece in this call
                            * (NULL: none yet) */
    size_t left;           /* bytes of the batch after the request being dispatched */
    const char *err_why;   /* set by reject(): the reason for a refused request's log line */
    int err_status;        /* and the status it gets */
};

enum conn_phase {
    PH_IDLE,    /* waiting for, or reading, a header block */
    PH_BODY,    /* reading a body */
    PH_HANDLER, /* a request is with the handler */
    PH_STREAM,  /* a request is with the handler while its body is still being read */
    PH_CLOSING, /* final bytes being written, then close (or linger) */
    PH_LINGER,  /* write side shut down, draining input before closing */
};

struct gale_http_conn {
    struct gale_http_conn *prev, *next; /* the server's list */
    gale_http_server *srv;              /* NULL once the server was freed */
    gale_stream *stream;                /* NULL once its close callback ran */
    gale_loop *loop;
    struct req *req;          /* request being parsed or handled */
    struct obuf *out;         /* output collected in this batch */
    struct conn_batch *batch; /* the batch of input being parsed (on conn_on_read's stack) */
    http_parser parser;
    gale_timeout timer;
    double timer_at;  /* when `timer` fires */
    double deadline;  /* end of the current phase (0: none) */
    double wlook;     /* next look at write progress (0: no output waiting) */
    double wprogress; /* when output was last seen leaving (or the wait began) */
    /* Response bytes handed to the stream, and of those the ones the kernel had taken at the last
     * look: counted modulo 2^32, only their difference (below 4 GiB) matters. */
    uint32_t wgiven, wsent;
    uint32_t drained; /* input read and dropped while lingering (up to LINGER_MAX_BYTES) */
    /* Calls into user code (the handler, a close or flush callback) running now that may end the
     * connection: it is freed only once they all returned (conn_maybe_free). */
    uint16_t busy;
    /* The kernel's unacknowledged output at the last look, in KiB plus one, saturated (0: not
     * looked at since the output began waiting): see output_look. */
    uint16_t wunacked;
    struct flush_wait *flush_waits; /* flush callbacks not yet handed to the stream */
    uint8_t phase;                  /* enum conn_phase, changed by set_phase() only */
    /* in_batch: a batch of input is being parsed; responses collect in `out` and leave with one
     * write at its end (conn_on_read), and access lines wait for that write. */
    bool in_batch, close_after_write, linger, wait_drain;
    bool tls; /* the connection speaks TLS: requests say protocol "https" */
    /* The idle deadline (c->deadline) is watched by the server's idle sweep, not c->timer. */
    bool idle_listed;
    uint8_t ip_len;
    /* The peer address as text (conn_ip): inline when it fits, as every IPv4 address does; an
     * IPv6 one has an allocation of its own, so an idle IPv4 connection stays small. */
    union {
        char in[INET_ADDRSTRLEN];
        char *heap;
    } ip;
};

struct gale_http_server {
    gale_loop *loop;
    gale_server *tcp;
    gale_http_server_opts opts;
    gale_http_request_cb cb;
    void *arg;
    gale_http_head_cb head_cb; /* asks whether a body is streamed (NULL: never) */
    void *head_arg;
    /* Every connection; those whose idle deadline the sweep watches (idle_listed) are in
     * deadline order, as each is moved to the tail when that deadline is set. */
    struct gale_http_conn *conns, *conns_tail;
    size_t nconns;
    gale_loop *idle_loop;    /* the loop of the connections, where the sweep runs */
    gale_timeout idle_timer; /* the sweep, due at the first listed deadline */
    double idle_timer_at;
    /* graceful shutdown */
    bool draining, done_called;
    gale_loop *dloop;         /* the loop the drain's timers run on */
    gale_timeout drain_timer; /* the deadline */
    gale_timeout done_timer;  /* `done`, due from the loop */
    double drain_deadline;
    gale_cb done;
    void *done_arg;
};

/* The phase changes the connection may make (bit `to` of legal_next[from]); httpserver.c's top
 * comment has the table with the event behind each. */
static const uint8_t gale__legal_next[] = {
    [PH_IDLE] = 1u << PH_BODY | 1u << PH_HANDLER | 1u << PH_STREAM | 1u << PH_CLOSING,
    [PH_BODY] = 1u << PH_HANDLER | 1u << PH_CLOSING,
    [PH_HANDLER] = 1u << PH_IDLE | 1u << PH_CLOSING,
    [PH_STREAM] = 1u << PH_HANDLER | 1u << PH_CLOSING,
    [PH_CLOSING] = 1u << PH_LINGER,
    [PH_LINGER] = 0,
};

static inline void set_phase(struct gale_http_conn *c, enum conn_phase to)
{
    assert(c->phase < sizeof gale__legal_next && (gale__legal_next[c->phase] & (1u << to)));
    c->phase = (uint8_t)to;
}

static inline const char *conn_ip(const struct gale_http_conn *c)
{
    return c->ip_len < sizeof c->ip.in ? c->ip.in : c->ip.heap;
}

static inline bool conn_open(const struct gale_http_conn *c)
{
    return c->stream && !gale_stream_closed(c->stream);
}

static inline bool draining(const struct gale_http_conn *c) { return c->srv && c->srv->draining; }

static inline double idle_timeout(const struct gale_http_conn *c)
{
    return c->srv ? c->srv->opts.idle_connection_timeout : 0;
}

/* httpserver.c: the connection's services to the parser and the response. */

/* Answers `status` (0: none) and closes, after the responses this batch produced. */
void gale__conn_fail(struct gale_http_conn *c, int status, const char *why);
/* Hands the complete request c->req to the application. */
void gale__conn_dispatch(struct gale_http_conn *c);
/* Writes what the batch produced (one write); closes after it when close_after_write. */
void gale__conn_flush(struct gale_http_conn *c);
/* The response to c->req was finished: the connection waits for the next request (`keep`) or
 * closes once its output is written. `now`: the time the response finished. */
void gale__conn_answered(struct gale_http_conn *c, bool keep, double now);
/* The header block is complete and a body follows: the connection reads it under the body
 * deadline. */
void gale__conn_expect_body(struct gale_http_conn *c);
/* Reads the next bytes unless the connection is not taking input now (conn_parsing). */
void gale__conn_resume(struct gale_http_conn *c);
/* Sets the end of the current phase `secs` after `start` (secs <= 0: none). */
void gale__conn_deadline_at(struct gale_http_conn *c, double start, double secs);
/* Whether input follows the request being answered (asked while shutting down). */
bool gale__conn_input_waiting(const struct gale_http_conn *c);
/* Whether more output than the high-water mark is queued. */
bool gale__conn_over_high_water(const struct gale_http_conn *c);
/* Writes the output collected so far, then `data`, without copying `data`. */
int gale__conn_write_through(struct gale_http_conn *c, const char *data, size_t len);
/* Writes the output collected so far, then queues `len` bytes of file `fd` from `offset`
 * (gale_stream_sendfile; `fd` borrowed until `cb`). */
int gale__conn_send_file(struct gale_http_conn *c, int fd, off_t offset, size_t len,
                         gale_done_cb cb, void *arg);
/* A flush callback (gale_http_response_flush_cb) waiting for its bytes to leave. */
struct flush_wait {
    struct flush_wait *next;
    gale_http_flushed_cb cb;
    void *arg;
};

/* Runs `w` once everything written so far has left, or with an error when the connection ends
 * first; takes ownership of `w` (malloc'ed). */
void gale__conn_add_flush_wait(struct gale_http_conn *c, struct flush_wait *w);
/* Frees the connection once nothing refers to it any more. */
void gale__conn_maybe_free(struct gale_http_conn *c);
/* The batch's output buffer (lent per thread, or the connection's own). NULL: out of memory. */
struct obuf *gale__conn_out(struct gale_http_conn *c);
/* Grows `o` to hold `more` bytes past its end. */
int gale__obuf_grow(struct obuf *o, size_t more);

/* Room for `more` bytes at the end of `o`, at `*at`. */
static inline __attribute__((always_inline)) int obuf_reserve(struct obuf *o, size_t more,
                                                              char **at)
{
    if (__builtin_expect(o->cap - o->len < more, 0) && gale__obuf_grow(o, more) < 0)
        return -ENOMEM;
    *at = o->p + o->len;
    return 0;
}

static inline __attribute__((always_inline)) int out_append(struct gale_http_conn *c,
                                                            const void *data, size_t len)
{
    struct obuf *o = gale__conn_out(c);
    char *at;
    if (!o || obuf_reserve(o, len, &at) < 0)
        return -ENOMEM;
    gale__copy(at, data, len);
    o->len += len;
    return 0;
}

/* ---- the request ---- */

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
    const char *host; /* the request's host (gale_http_request_host): a slice until asked for */
    size_t host_len;
    const char *host_str; /* its NUL-terminated copy, once made */
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
    uint8_t hend; /* where head_end_scan is after the head's last piece, across reads */
    uint64_t ck_left; /* chunk_scan: the chunk size being read, then its data bytes still due */
    struct body_stream *bs; /* a streamed body (httpserver_stream.c), NULL for a collected one */
    bool body_heap, w_heap, hstore_heap;
    bool get; /* the method is GET */
    bool keep_alive, head, headers_sent, closed, finished, dispatched, in_close_cb;
    gale_http_close_cb close_cb;
    void *close_arg;
};

static inline struct req *req_of(const gale_http_request *req) { return (struct req *)req; }

/* httpserver_arena.c */

/* A request block for `c`, zeroed where it matters. NULL: out of memory. */
struct req *gale__req_new(struct gale_http_conn *c);
void gale__req_free(struct req *r);
/* A new arena part (or a block of its own for a big `size`, already rounded). */
void *gale__arena_more(struct req *r, size_t size);
/* Grows a request-owned buffer: small ones from the arena, larger ones from the heap. */
int gale__grow_more(struct req *r, char **buf, size_t len, size_t *cap, bool *heap, size_t need,
                    size_t limit);

/* Uninitialised arena memory, 16-byte aligned. The common case (room left in the current part)
 * inline: it runs several times per request. */
static inline void *arena_raw(struct req *r, size_t size)
{
    size = ALIGN16(size ? size : 1);
    if (__builtin_expect(size <= r->aleft, 1)) {
        void *p = r->apos;
        r->apos += size;
        r->aleft -= size;
        return p;
    }
    return gale__arena_more(r, size);
}

static inline char *arena_strndup(struct req *r, const char *s, size_t len)
{
    char *p = arena_raw(r, len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* Inline for the common cases: room already there, or a first small buffer from the arena (the
 * header copy and the response body of most requests). */
static inline int grow(struct req *r, char **buf, size_t len, size_t *cap, bool *heap, size_t need,
                       size_t limit)
{
    if (__builtin_expect(need <= *cap, 1))
        return 0;
    if (*cap == 0 && need <= 256 && 256 <= r->aleft && (!limit || limit >= 256)) {
        *buf = arena_raw(r, 256);
        *cap = 256;
        return 0;
    }
    return gale__grow_more(r, buf, len, cap, heap, need, limit);
}

/* httpserver_parse.c */

/* Sets up the parser of a new connection. */
void gale__parse_init(struct gale_http_conn *c);
/* Feeds `len` bytes to the parser; dispatches a request it completes, refuses one it cannot
 * accept (gale__conn_fail). Returns the bytes consumed. */
size_t gale__parse(struct gale_http_conn *c, const char *data, size_t len);
/* http-parser's callbacks, the server's reading of a request. */
extern const http_parser_settings gale__parser_settings;

/* httpserver_fast.c */

/* Reads the requests at the start of [data, data + len) that have the common shape, while no
 * request is in progress, through gale__parser_settings' callbacks, as http-parser would; stops
 * at the first it leaves to the parser. Returns the bytes consumed; `*stop`: 0, 1 when a request
 * paused (its handler runs on, or the batch must stop), -1 when one was refused (c->err_status
 * says how; the whole input is then consumed). */
size_t gale__parse_fast(struct gale_http_conn *c, const char *data, size_t len, int *stop);

/* httpserver_stream.c */

/* A request body taken as a stream: its reader and where it stands. In the request's arena. */
struct body_stream {
    gale_http_body_cb on_piece;
    gale_http_body_end_cb on_end;
    void *arg;
    unsigned long long length; /* the Content-Length (chunked: 0) */
    unsigned long long received;
    size_t max;    /* the body limit (gale_http_request_set_max_body_size) */
    size_t ahead;  /* chunked: bytes past the parser's position already walked by chunk_scan */
    int failed;    /* the error that ended the body early (0: none) */
    bool chunked;  /* the body is chunked */
    bool expect;   /* "Expect: 100-continue": answered when the reader starts */
    bool paused;   /* on_piece asked for a pause: no input taken until resume */
    bool in_piece; /* on_piece is running */
    bool resumed;  /* resume was called while on_piece ran */
    bool ended;    /* on_end ran or is due no more */
};

/* Whether the connection takes input now: waiting for or reading a head or a collected body, or
 * reading a streamed body whose reader is ready for more. */
static inline bool conn_parsing(const struct gale_http_conn *c)
{
    if (c->phase == PH_IDLE || c->phase == PH_BODY)
        return true;
    const struct body_stream *bs = c->phase == PH_STREAM && c->req ? c->req->bs : NULL;
    return bs && bs->on_piece && !bs->paused && !bs->ended;
}

/* At the end of a head with a body: asks the server's head callback whether the body is
 * streamed, and if so sets the request up for it (the caller pauses the parser on the head's
 * last byte). Returns 1 (streamed), 0 (collected as usual) or -ENOMEM. */
int gale__stream_wanted(struct gale_http_conn *c, struct req *r, http_parser *p);
/* The parser paused on a streamed request: at the end of its head (it is handed to the
 * application now), after a piece its reader paused on, or at the end of its body (the reader
 * is told). `left`: the call's input after the parser's position. */
void gale__stream_paused(struct gale_http_conn *c, struct req *r, size_t left);
/* A piece of a streamed body (on_body), handed to its reader; pauses the parser after it when
 * the reader paused or finished the response. Returns 0, or 413 when over the body limit. */
int gale__stream_piece(struct gale_http_conn *c, struct req *r, http_parser *p, const char *at,
                       size_t len);
/* The body of a streamed request cannot go on (`status`: 400, 408, 413, 503): its reader is
 * told; the handler answers, and the connection closes after that answer. */
void gale__stream_fail(struct gale_http_conn *c, int status, const char *why);
/* The connection of a request whose streamed body had not ended closed (inside the request's
 * close window: a finish here is released after it). */
void gale__stream_closed(struct req *r);

/* httpserver_response.c */

/* Appends "HTTP/1.1 <status> ... Connection: close" with an empty body to the output. */
void gale__response_error(struct gale_http_conn *c, int status);

/* httpserver_access.c */

/* The access line of a finished request (waits for the batch's write when in a batch). */
void gale__access_log(struct req *r, double now);
/* The line of a request refused before it reached the handler. */
void gale__access_refused(struct gale_http_conn *c, int status, const char *why);
/* Writes the waiting lines of the batch, each ending at `now`. */
void gale__access_flush(double now);
bool gale__access_pending(void);

/* ---- writing numbers and strings into a buffer with room ---- */

char *gale__put_uint_long(char *p, unsigned long long v);

static inline __attribute__((always_inline)) char *put_uint(char *p, unsigned long long v)
{
    if (v >= 100)
        return gale__put_uint_long(p, v);
    /* most Content-Lengths of small responses, and durations */
    if (v >= 10)
        *p++ = (char)('0' + v / 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

/* A status code: always three digits (100..999). */
static inline char *put_status(char *p, int status)
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

#endif

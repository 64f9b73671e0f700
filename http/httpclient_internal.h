/* The HTTP client's private parts shared between its files (not installed): the client, fetch,
 * connection and response records, and the functions one file of the client calls in another.
 *
 * Files: httpclient.c (queue, exchange, redirects, retries, public API), httpclient_url.c (URLs,
 * RFC 3986 resolution), httpclient_request.c (the request head and its body, streamed or not),
 * httpclient_response.c (the response head, framing, body reading and gzip decoding),
 * httpclient_pool.c (idle keep-alive connections). */
#ifndef GALE_HTTP_HTTPCLIENT_INTERNAL_H
#define GALE_HTTP_HTTPCLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/list.h"
#include "core/loop.h"
#include "http/httpclient.h"
#include "net/iostream.h"
#include "net/tls.h"

/* An absolute http URL split into what a request needs. Every string but scheme is malloc'ed. */
struct gale__url {
    const char *scheme; /* static, lower case: "http" or "https" */
    bool tls;           /* https */
    char *host;         /* without brackets */
    int port;
    char *hostport; /* Host header value */
    char *target;   /* path and query */
    char *userinfo; /* NULL when absent */
};

/* Splits an absolute http or https URL into `u` (the fragment is dropped). Returns 0, -EINVAL (malformed),
 * GALE_ESCHEME (another scheme) or -ENOMEM; on failure `u` holds nothing to free. */
int gale__url_parse(const char *url, struct gale__url *u);

/* Frees the strings of `u` and zeroes it. */
void gale__url_free(struct gale__url *u);

/* Resolves a Location value (any URI reference) against the URL it came from, as RFC 3986 5.2.2
 * says: strict (a reference with a scheme is absolute), merge, then remove_dot_segments (5.2.4),
 * fragment from the reference. Returns a malloc'ed URL, to be checked with gale__url_parse, or
 * NULL (out of memory, or a base without a scheme). */
char *gale__url_resolve(const char *base, const char *loc);

/* The URL's userinfo as Basic credentials: base64 of `userinfo`, as sent after
 * "Authorization: Basic ". Returns a malloc'ed string or NULL (out of memory). */
char *gale__url_basic_credentials(const char *userinfo);

/* A slice of bytes. */
struct gale__str {
    const char *p;
    size_t len;
};

/* The `n` slices of `parts` one after the other, NUL-terminated, malloc'ed; or NULL. */
char *gale__concat(size_t n, const struct gale__str *parts);

/* A malloc'ed copy of `n` bytes plus a NUL, or NULL. */
char *gale__dup_n(const char *p, size_t n);

/* asprintf that returns the string, or NULL when out of memory. */
char *gale__dup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- the pool (httpclient_pool.c) ---- */

/* Idle keep-alive connections of one client, most recently used last. */
struct gale__pool {
    gale_loop *loop;
    gale_list idle;
    gale_list parking; /* conns whose response just ended, until their read callback returned */
    size_t n_idle;
    int max_per_host;         /* < 0: no reuse */
    double idle_timeout;      /* seconds */
    gale_timeout sweep_timer; /* set for the oldest idle conn's expiry while any is idle */
    uint64_t opened;          /* connections opened, for tests and fetch -v */
    uint64_t reused;          /* requests sent on a pooled connection */
};

/* A connection's phase. Legal changes (gale__conn_set_state asserts them):
 *   CONNECTING -> BUSY       connected, the fetch writes its request
 *   BUSY       -> PARKING    response complete, fit for reuse so far: the stream's read callback
 *                            is still on the stack, and only once it has returned does the read
 *                            buffer say whether bytes followed the response
 *   PARKING    -> IDLE       nothing followed: into the pool
 *   IDLE       -> BUSY       taken from the pool by a fetch for the same (scheme, host, port)
 *   BUSY, PARKING, IDLE -> CLOSING   closed by the client (fetch over, timeout, stale, full)
 * A conn is freed by its stream's close callback (or by the connect callback when the stream
 * never came up), except while PARKING: then the parking callback frees it. */
enum gale__conn_state {
    GALE__CONN_CONNECTING,
    GALE__CONN_BUSY,
    GALE__CONN_PARKING,
    GALE__CONN_IDLE,
    GALE__CONN_CLOSING
};

struct gale__fetch;

/* The link between a fetch and its socket. Stream callbacks only ever see the conn: a fetch that
 * ends detaches (cn->f = NULL), so a late callback finds no fetch and does nothing. */
struct gale__conn {
    struct gale__fetch *f;   /* NULL when idle or detached */
    gale_stream *s;          /* NULL while connecting */
    struct gale__pool *pool; /* set while IDLE */
    enum gale__conn_state state;
    gale_list node;    /* in pool->idle while IDLE */
    double idle_since; /* gale_loop_time() when pooled */
    char *key;         /* "scheme://host:port" */
    unsigned requests; /* requests written on it */
};

void gale__conn_set_state(struct gale__conn *cn, enum gale__conn_state to);
void gale__pool_init(struct gale__pool *p, gale_loop *loop, int max_per_host, double idle_timeout);
/* An idle connection for `key` that is still usable (not closed by the server, no unsolicited
 * bytes), taken out of the pool (phase BUSY, cn->f unset), or NULL. Stale ones met on the way are
 * closed. */
struct gale__conn *gale__pool_take(struct gale__pool *p, const char *key);
/* Parks a BUSY connection whose exchange ended cleanly (phase PARKING): `cb(loop, cn)` runs on the
 * loop's next iteration, where the owner calls gale__pool_put or closes it. Returns 0 or
 * -ENOMEM (the conn is then left BUSY). */
int gale__pool_park(struct gale__pool *p, struct gale__conn *cn, gale_cb cb);
/* From the parking callback: takes the conn off the parking list. Returns its pool, or NULL
 * when the pool was drained meanwhile (the client is gone). */
struct gale__pool *gale__pool_unpark(struct gale__conn *cn);
/* Puts a PARKING connection into the pool (phase IDLE). Returns false when the pool refuses it
 * (reuse off, out of timers); the caller then closes it. */
bool gale__pool_put(struct gale__pool *p, struct gale__conn *cn);
/* True when a request for `key` should wait rather than open a connection: one for `key` is
 * parking (and will be pooled on the next iteration) while none is idle. */
bool gale__pool_should_wait(const struct gale__pool *p, const char *key);
/* From the stream's close callback of an IDLE conn: takes it out of the pool. */
void gale__pool_forget(struct gale__conn *cn);
/* Closes every idle and parking connection (the client is being freed). */
void gale__pool_drain(struct gale__pool *p);

/* ---- the client and its fetches ---- */

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
    struct gale__pool pool;
    struct gale__tls_entry
        *tls; /* client TLS contexts, one per set of options (httpclient_tls.c) */
    size_t n_tls;
};

struct gale__resp {
    gale_http_client_response pub; /* first: the public pointer is the impl pointer */
    char *raw;                     /* copy of the header block the slices point into */
    char *body;
    size_t body_cap;
    char *url;
    char *msg;
    bool kept;
};

enum gale__fetch_state { F_NEW, F_QUEUED, F_ACTIVE, F_DONE };
enum gale__body_mode { B_NONE, B_LENGTH, B_CHUNKED, B_CLOSE };
/* The request body's progress on the current connection (U_SKIPPED: never sent in full). */
enum gale__upload { U_NONE, U_WAIT_CONTINUE, U_SENDING, U_DONE, U_SKIPPED };

struct gale__fetch {
    gale_list node;
    gale_http_client *client;
    gale_loop *loop;
    enum gale__fetch_state state;

    /* the request, copied */
    char *url;
    char *method;
    char *body;
    size_t body_len; /* with a producer: the promised length, 0: unknown (chunked) */
    gale_http_headers headers;
    char *header_bytes;
    char *user_agent;       /* NULL: the client's (a fetch is active only while its client is) */
    double connect_timeout; /* <= 0: none */
    double request_timeout;
    bool follow_redirects;
    int redirects_left;
    bool raise_error;
    bool drop_body_headers; /* after a 301/302/303 */
    bool drop_host;         /* after any redirect */
    bool decompress;        /* send Accept-Encoding: gzip and inflate a gzip body */
    bool expect_continue;
    size_t max_header_size;
    size_t max_body_size;
    gale_http_header_cb header_cb;
    gale_http_streaming_cb streaming_cb;
    void *cb_arg;
    gale_http_body_producer producer;
    void *producer_arg;
    gale_http_fetch_cb cb;
    void *arg;
    gale_future *future;

    double t_start;
    gale_timeout timer;
    gale_timeout continue_timer;
    struct gale__url u;
    char *key;                                 /* the pool key of u (https: with its TLS context) */
    char *ca_certs, *client_cert, *client_key; /* https options, copied */
    bool validate_cert;
    gale_tls_ctx *tls; /* https: the client's context for these options (not a reference) */
    struct gale__conn *conn;
    bool retryable; /* idempotent and replayable: may use a pooled conn and be retried once */
    bool retried;
    bool reused;     /* the current conn came from the pool */
    bool pump_later; /* its conn is parking: the queue moves once it is pooled */

    /* the request body on the current conn */
    enum gale__upload upload;
    size_t sent;                 /* body bytes handed to the stream */
    bool chunked_body;           /* producer without a length */
    bool writing;                /* a producer's write is in flight */
    gale_http_body_write_cb wcb; /* its callback */
    void *warg;

    /* the response being read */
    struct gale__resp *resp;
    int redirects;
    size_t head_bytes;
    size_t body_got; /* body bytes as sent (before decoding) */
    size_t trailer_bytes;
    size_t decoded; /* body bytes after decoding */
    enum gale__body_mode mode;
    bool head_request;
    bool keep_alive;   /* the response lets the connection be reused */
    void *inflater;    /* z_stream while a gzip body is decoded */
    bool inflate_done; /* the current gzip member ended */
};

/* httpclient.c */
void gale__fetch_finish(struct gale__fetch *f, int err, const char *msg);
/* The response (head and body) has been read in full: pools the connection when it may be reused,
 * then finishes the fetch. */
void gale__fetch_complete(struct gale__fetch *f);
/* Every stream callback starts here: the fetch, or NULL when the conn was detached. */
static inline struct gale__fetch *gale__conn_fetch(void *arg)
{
    return ((struct gale__conn *)arg)->f;
}

/* httpclient_request.c */
/* Serialises the request head (and a buffered body) into one allocation. Returns 0 or -ENOMEM. */
int gale__request_build(struct gale__fetch *f, char **out, size_t *outlen);
/* Writes the request head (and a buffered body unless it waits for 100 Continue) on f->conn.
 * Returns 0 or the stream's error (the caller decides between a retry and a failure). */
int gale__request_send(struct gale__fetch *f);
/* After the head was sent and the response read started: runs the body producer, unless the body
 * waits for 100 Continue. The fetch may have ended when this returns. */
void gale__request_start_body(struct gale__fetch *f);
/* A 100 Continue arrived (or the wait for it ended): start sending the body. */
void gale__request_continue(struct gale__fetch *f);
/* Ends the producer's part: a write in flight gets `err`. */
void gale__request_abort(struct gale__fetch *f, int err);

/* httpclient_response.c */
struct gale__resp *gale__resp_new(void);
void gale__resp_free_void(void *p);
/* Parses the header block into `r`. Returns 0, -1 (malformed) or -ENOMEM. Sets *http11. */
int gale__resp_parse_head(struct gale__resp *r, const char *data, size_t len, bool *http11);
/* Decides the body's framing (f->mode, the length in *length for B_LENGTH) and whether the
 * connection may be reused. Returns false when the response cannot be framed: the fetch has then
 * finished with the error. */
bool gale__resp_choose_framing(struct gale__fetch *f, size_t *length);
/* Reads the body as f->mode says, decoding gzip when asked; completes or fails the fetch. */
void gale__resp_read_body(struct gale__fetch *f, size_t length);
/* A read callback's fetch; NULL when it is gone or the read failed (the fetch then fails). */
struct gale__fetch *gale__read_ok(void *arg, int status, const char *what);
void gale__fail_read(struct gale__fetch *f, int status, const char *what);
/* Frees the gzip decoder, if any. */
void gale__resp_inflate_end(struct gale__fetch *f);

/* ---- https (httpclient_tls.c) ---- */

/* Sets f->tls to the client's context for f's TLS options, making it on first use (the client
 * keeps it until it is freed). Returns 0, GALE_ETLS (a CA or certificate file would not load:
 * logged), -ENOTSUP (built without TLS), -ENOMEM. */
int gale__client_tls(gale_http_client *c, struct gale__fetch *f);
void gale__client_tls_free(gale_http_client *c);

#endif

/* gale HTTP client: Tornado's simple_httpclient (AsyncHTTPClient) in C.
 *
 * gale_http_fetch() queues a request on a client. At most `max_clients` requests are in flight;
 * the rest wait in FIFO order, and one that waits longer than min(connect_timeout,
 * request_timeout) fails with -ETIMEDOUT ("Timeout in request queue") without ever being sent.
 * A request in flight resolves its host off the loop (net/resolver), connects within
 * `connect_timeout`, writes the request, reads the header block, then the body by Content-Length,
 * by chunks (size line, then the data; extensions and trailers tolerated) or until the server
 * closes. `request_timeout` is a deadline on the whole exchange, counted from the moment the
 * request leaves the queue.
 *
 * Connection reuse (HTTP/1.1 keep-alive, on by default): a connection whose response was read in
 * full, that the server did not mark `Connection: close` (nor answered in HTTP/1.0), with no
 * byte left over and the request body sent in full, waits in the client's pool for the next
 * request to the same (scheme, host, port), for at most `idle_timeout`, `max_idle_per_host` of
 * them per host. Idle connections do not count against `max_clients`. Before reuse a pooled
 * connection is checked: one the server closed while idle (or that holds unsolicited bytes) is
 * dropped. Only requests
 * that can be sent twice take a pooled connection: idempotent methods (GET, HEAD, PUT, DELETE,
 * OPTIONS, TRACE) with a buffered body; when one fails on a reused connection before any byte of
 * response arrived (the server closed it as the request left), it is sent again once, on a new
 * connection. Other requests (POST, PATCH, streamed bodies) always open a new connection and are
 * never sent twice. A fetch that ends before its response was read in full (timeout, error,
 * redirect, free) closes its connection, so no response ever reaches another request.
 *
 * Responses with `Content-Encoding: gzip` are decoded (the request says `Accept-Encoding: gzip`)
 * unless decompress_response is off; max_body_size bounds the decoded size too.
 *
 * Parsing is strict: a malformed status line or header, a bad or conflicting Content-Length, a
 * Transfer-Encoding other than `chunked`, a bad chunk size, a header block over `max_header_size`
 * or a body over `max_body_size` fail that request (GALE_EHTTP, -EMSGSIZE, -EFBIG); a server that
 * closes before the response is complete fails it with GALE_EEOF. A response is never reported
 * as a success unless every byte its framing promised arrived. Failures concern one request
 * only: everything it held is freed and the loop carries on.
 *
 * Request bodies are a buffer (`body`) or streamed by a producer (Tornado's body_producer): the
 * producer writes pieces with gale_http_body_write() (or awaits gale_http_body_write_future() in
 * a coroutine), each acknowledged when the stream took it (back-pressure: one write at a time),
 * and ends with gale_http_body_end(); without a known length the body goes chunked. A redirect
 * that would send a streamed body again is not followed: the 3xx is the answer. With
 * expect_100_continue the body waits for the server's 100 Continue (at most 1 s, as curl); a
 * final answer before it means the body is never sent.
 *
 * Every accepted fetch completes exactly once, from the loop, never inside gale_http_fetch().
 * Everything here runs on the client's loop thread.
 */
#ifndef GALE_HTTP_HTTPCLIENT_H
#define GALE_HTTP_HTTPCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/future.h"
#include "core/loop.h"
#include "http/httputil.h"

#define GALE_HTTP_CLIENT_DEFAULT_MAX_CLIENTS 10
#define GALE_HTTP_CLIENT_DEFAULT_TIMEOUT 20.0
#define GALE_HTTP_CLIENT_DEFAULT_MAX_REDIRECTS 5
#define GALE_HTTP_CLIENT_DEFAULT_MAX_HEADER (64u * 1024)
#define GALE_HTTP_CLIENT_DEFAULT_MAX_BODY (100u * 1024 * 1024)
#define GALE_HTTP_CLIENT_DEFAULT_IDLE_TIMEOUT 30.0
/* The status code reported when no HTTP response was received (Tornado's 599). */
#define GALE_HTTP_NO_RESPONSE 599

typedef struct gale_http_client gale_http_client;
typedef struct gale_http_client_response gale_http_client_response;
/* The handle a body producer writes through (the fetch underneath). */
typedef struct gale_http_body_writer gale_http_body_writer;

/* Called once per response that will be returned to the user (not for redirects being followed)
 * when its status line and headers are parsed, before the body: `resp` has code, reason and
 * headers set, no body yet. Valid only during the call. */
typedef void (*gale_http_header_cb)(const gale_http_client_response *resp, void *arg);
/* Called with each piece of the body as it arrives (nothing is buffered: the response's body
 * stays empty). `data` is valid only during the call. */
typedef void (*gale_http_streaming_cb)(const char *data, size_t len, void *arg);

/* Produces a streamed request body: called once, from the loop, when the request head has been
 * sent (after the 100 Continue with expect_100_continue). It writes with gale_http_body_write()
 * and ends with gale_http_body_end(), now or from later callbacks. `w` stays valid until the
 * fetch's completion callback has returned; once the fetch has ended (answered early, timed out,
 * failed) writes return -ECANCELED. */
typedef void (*gale_http_body_producer)(gale_http_body_writer *w, void *arg);
/* A producer's write was handed to the kernel (0) or failed (negative errno); the next write may
 * be started from here. */
typedef void (*gale_http_body_write_cb)(gale_http_body_writer *w, int status, void *arg);

/* A request. Fill it after gale_http_client_request_init(); the fetch copies everything it needs
 * (url, method, header slices and their bytes, body), so the struct and what it points at may be
 * released as soon as gale_http_fetch() returns. */
typedef struct gale_http_client_request {
    const char *url;           /* http[s]://[userinfo@]host[:port][/path][?query]; IPv6 in [] */
    const char *method;        /* NULL: "GET" */
    gale_http_headers headers; /* extra headers; Host, User-Agent given here replace the defaults;
                                * a POST without Content-Type gets
                                * application/x-www-form-urlencoded */
    const void *body;
    size_t body_len; /* with body_producer: the exact length sent (Content-Length), or 0 when
                      * unknown (the body goes chunked) */
    gale_http_body_producer body_producer; /* NULL: `body` is the body; else body must be NULL */
    void *producer_arg;
    bool expect_100_continue; /* send Expect: 100-continue and hold the body until 100 */
    bool decompress_response; /* Accept-Encoding: gzip, and decode; on by request_init */
    double connect_timeout;   /* seconds; 0: 20 (default); < 0: no limit */
    double request_timeout;   /* seconds, whole exchange; 0: 20 (default); < 0: no limit */
    bool follow_redirects;    /* 303 (but HEAD) and POST on 301/302 -> GET without body; all
                             * else keeps method and body */
    int max_redirects;        /* 0: 5 (default); stops with GALE_EREDIRECTS past it */
    bool raise_error;         /* non-2xx responses get error GALE_EBADSTATUS (Tornado's
                             * raise_error; the future form then fails instead) */
    size_t max_body_size;     /* 0: the client's limit */
    const char *user_agent;   /* NULL: the client's */
    const char *ca_certs;     /* https: PEM CA bundle that verifies the server (NULL: the
                               * system's store, /etc/ssl/certs) */
    bool validate_cert;       /* https: verify the certificate and the host name (or IP
                               * address); on by request_init. Off: no check at all */
    const char *client_cert; /* https: PEM certificate chain presented to the server (NULL: none) */
    const char *client_key;  /* its private key (NULL: inside client_cert) */
    gale_http_header_cb header_cb;
    gale_http_streaming_cb streaming_cb;
    void *cb_arg; /* for header_cb and streaming_cb */
} gale_http_client_request;

/* A completed fetch. Read-only for users. */
struct gale_http_client_response {
    int code;                  /* HTTP status, or GALE_HTTP_NO_RESPONSE (599) without a response */
    const char *reason;        /* reason phrase as sent, or the failure's description with 599 */
    gale_http_headers headers; /* case-insensitive lookups via gale_http_headers_get() */
    const char *body;          /* NUL-terminated for convenience (body_len excludes the NUL);
                                * never NULL ("" when empty or streamed) */
    size_t body_len;
    const char *effective_url; /* the URL finally fetched, after redirects */
    double request_time;       /* seconds from gale_http_fetch() to completion */
    int error;                 /* 0, a negative errno (-ECONNREFUSED, -ETIMEDOUT...), GALE_EHTTP,
                                * GALE_EEOF, GALE_ESCHEME, GALE_ERESOLVE, GALE_EREDIRECTS,
                                * GALE_EBADSTATUS (raise_error), -EMSGSIZE (header block too
                                * large), -EFBIG (body too large), -ECANCELED (client freed) */
    const char *error_message; /* NULL when error is 0 */
    int redirects;             /* redirects followed */
    bool reused_connection;    /* the final request went on a pooled keep-alive connection */
};

/* Completion of gale_http_fetch(). Ownership: `resp` is freed after the callback returns unless
 * the callback takes it with gale_http_client_response_keep(). */
typedef void (*gale_http_fetch_cb)(gale_http_client_response *resp, void *arg);

typedef struct gale_http_client_opts {
    int max_clients;        /* 0: 10 */
    size_t max_header_size; /* 0: 64 KiB; status line + headers, also caps the chunk trailers */
    size_t max_body_size;   /* 0: 100 MiB */
    const char *user_agent; /* NULL: "gale/<version>" */
    int max_idle_per_host;  /* idle keep-alive connections kept per (scheme, host, port);
                             * 0: max_clients; < 0: no reuse (every request says
                             * Connection: close) */
    double idle_timeout;    /* seconds an idle connection is kept; 0: 30 */
} gale_http_client_opts;

/* Connection counters of a client. */
typedef struct gale_http_client_stats {
    size_t idle;     /* connections in the pool now */
    uint64_t opened; /* connections opened so far */
    uint64_t reused; /* requests sent on a pooled connection so far */
} gale_http_client_stats;

/* Sets `req` to Tornado's defaults for `url`: GET, no headers or body, 20 s connect and request
 * timeouts, follow_redirects on with at most 5, raise_error on, decompress_response on,
 * validate_cert on. */
void gale_http_client_request_init(gale_http_client_request *req, const char *url);

/* Creates a client on `loop` (NULL: gale_loop_current()) with `opts` (NULL: defaults). Returns
 * 0, -EINVAL (negative max_clients) or -ENOMEM. Ownership: free with gale_http_client_free(). */
int gale_http_client_new(gale_loop *loop, const gale_http_client_opts *opts,
                         gale_http_client **out);

/* Frees the client. Requests still queued or in flight complete with -ECANCELED, from the loop
 * (their callbacks run on later iterations and must not use the client); idle pooled connections
 * are closed. A connection attempt in progress finishes in the background and is then closed:
 * keep running the loop for a moment (or until those complete) before freeing it. NULL is a
 * no-op. Legal inside a fetch callback of this client (requests are detached from the client
 * before their callbacks run). */
void gale_http_client_free(gale_http_client *c);

/* Queues `req`. Returns 0, -EINVAL (NULL client, request, url or cb) or -ENOMEM; then `cb` is
 * never called. A bad URL (-EINVAL), an unsupported scheme (GALE_ESCHEME) or a header containing
 * CR/LF (-EINVAL) is reported through `cb` like any other failure. Callbacks: `cb` runs exactly
 * once, from the loop, never inside this call; header_cb and streaming_cb as described above. */
int gale_http_fetch(gale_http_client *c, const gale_http_client_request *req, gale_http_fetch_cb cb,
                    void *arg);

/* Future form: returns a new future (the caller's reference) whose result is the
 * gale_http_client_response (owned by the future; gale_future_steal_result() then
 * gale_http_client_response_free() to keep it). When the response has an error and raise_error is
 * on (always for transport errors) the future fails instead with that error and message. Returns
 * NULL only when out of memory (or on NULL arguments). */
gale_future *gale_http_fetch_future(gale_http_client *c, const gale_http_client_request *req);

/* Inside a fetch callback: takes ownership of `resp` (the library will not free it). Free it
 * with gale_http_client_response_free(). Returns resp. */
gale_http_client_response *gale_http_client_response_keep(gale_http_client_response *resp);

/* Frees a response taken with gale_http_client_response_keep() or stolen from a future. NULL is a
 * no-op. */
void gale_http_client_response_free(gale_http_client_response *resp);

/* Requests in flight and queued, for tests and back-pressure. */
size_t gale_http_client_active(const gale_http_client *c);
size_t gale_http_client_queued(const gale_http_client *c);
/* Fills `out` with the client's connection counters (zeros for a NULL client). */
void gale_http_client_get_stats(const gale_http_client *c, gale_http_client_stats *out);

/* From a body producer: sends `len` bytes of the body (copied). Returns 0, -EBUSY (a write is
 * still in flight: wait for its callback), -EMSGSIZE (more than the promised body_len),
 * -ECANCELED (the fetch has ended) or -ENOMEM; then `cb` is not called. Callbacks: `cb` (may be
 * NULL) once, from the loop, when the stream took the bytes or the fetch ended (then with
 * -ECANCELED or the connection's error). */
int gale_http_body_write(gale_http_body_writer *w, const void *data, size_t len,
                         gale_http_body_write_cb cb, void *arg);

/* Future form of gale_http_body_write(): a new future (the caller's reference) that completes
 * with a NULL result when the stream took the bytes, or fails with the write's error (an error
 * that stops the write from starting fails it at once). For a producer that is a coroutine:
 *
 *     gale_future *f = gale_http_body_write_future(w, piece, n);
 *     int rc = gale_await(f);
 *     gale_future_unref(f);
 *
 * Returns NULL only when out of memory. */
gale_future *gale_http_body_write_future(gale_http_body_writer *w, const void *data, size_t len);

/* From a body producer: the body is complete (the last chunk goes out when chunked). Returns 0,
 * -EBUSY (a write in flight), -EPROTO (fewer bytes than the promised body_len: the fetch fails)
 * or -ECANCELED (the fetch has ended). */
int gale_http_body_end(gale_http_body_writer *w);

#endif

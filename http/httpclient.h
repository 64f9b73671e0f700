/* gale HTTP client: Tornado's simple_httpclient (AsyncHTTPClient) in C.
 *
 * gale_http_fetch() queues a request on a client. At most `max_clients` requests are in flight;
 * the rest wait in FIFO order, and one that waits longer than min(connect_timeout,
 * request_timeout) fails with -ETIMEDOUT ("Timeout in request queue") without ever being sent.
 * A request in flight resolves its host off the loop (net/resolver), connects within
 * `connect_timeout`, writes the request, reads the header block, then the body by Content-Length,
 * by chunks (size line, then the data; extensions and trailers tolerated) or until the server
 * closes. `request_timeout` is a deadline on the whole exchange, counted from the moment the
 * request leaves the queue. Each request uses its own connection and says `Connection: close`,
 * like Tornado's simple client: no connection is ever reused, so a stale keep-alive socket can
 * never turn into a lost or duplicated request.
 *
 * Parsing is strict: a malformed status line or header, a bad or conflicting Content-Length, a
 * Transfer-Encoding other than `chunked`, a bad chunk size, a header block over `max_header_size`
 * or a body over `max_body_size` fail that request (GALE_EHTTP, -EMSGSIZE, -EFBIG); a server that
 * closes before the response is complete fails it with GALE_EEOF. A response is never reported
 * as a success unless every byte its framing promised arrived. Failures concern one request
 * only: everything it held is freed and the loop carries on.
 *
 * Every accepted fetch completes exactly once, from the loop, never inside gale_http_fetch().
 * Everything here runs on the client's loop thread.
 */
#ifndef GALE_HTTP_HTTPCLIENT_H
#define GALE_HTTP_HTTPCLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/future.h"
#include "core/loop.h"
#include "http/httputil.h"

#define GALE_HTTP_CLIENT_DEFAULT_MAX_CLIENTS 10
#define GALE_HTTP_CLIENT_DEFAULT_TIMEOUT 20.0
#define GALE_HTTP_CLIENT_DEFAULT_MAX_REDIRECTS 5
#define GALE_HTTP_CLIENT_DEFAULT_MAX_HEADER (64u * 1024)
#define GALE_HTTP_CLIENT_DEFAULT_MAX_BODY (100u * 1024 * 1024)
/* The status code reported when no HTTP response was received (Tornado's 599). */
#define GALE_HTTP_NO_RESPONSE 599

typedef struct gale_http_client gale_http_client;
typedef struct gale_http_client_response gale_http_client_response;

/* Called once per response that will be returned to the user (not for redirects being followed)
 * when its status line and headers are parsed, before the body: `resp` has code, reason and
 * headers set, no body yet. Valid only during the call. */
typedef void (*gale_http_header_cb)(const gale_http_client_response *resp, void *arg);
/* Called with each piece of the body as it arrives (nothing is buffered: the response's body
 * stays empty). `data` is valid only during the call. */
typedef void (*gale_http_streaming_cb)(const char *data, size_t len, void *arg);

/* A request. Fill it after gale_http_client_request_init(); the fetch copies everything it needs
 * (url, method, header slices and their bytes, body), so the struct and what it points at may be
 * released as soon as gale_http_fetch() returns. */
typedef struct gale_http_client_request {
    const char *url;           /* http://[userinfo@]host[:port][/path][?query]; IPv6 in [] */
    const char *method;        /* NULL: "GET" */
    gale_http_headers headers; /* extra headers; Host, User-Agent given here replace the defaults;
                                * a POST without Content-Type gets
                                * application/x-www-form-urlencoded */
    const void *body;
    size_t body_len;
    double connect_timeout; /* seconds; 0: 20 (default); < 0: no limit */
    double request_timeout; /* seconds, whole exchange; 0: 20 (default); < 0: no limit */
    bool follow_redirects;  /* 303 (but HEAD) and POST on 301/302 -> GET without body; all
                             * else keeps method and body */
    int max_redirects;      /* 0: 5 (default); stops with GALE_EREDIRECTS past it */
    bool raise_error;       /* non-2xx responses get error GALE_EBADSTATUS (Tornado's
                             * raise_error; the future form then fails instead) */
    size_t max_body_size;   /* 0: the client's limit */
    const char *user_agent; /* NULL: the client's */
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
};

/* Completion of gale_http_fetch(). Ownership: `resp` is freed after the callback returns unless
 * the callback takes it with gale_http_client_response_keep(). */
typedef void (*gale_http_fetch_cb)(gale_http_client_response *resp, void *arg);

typedef struct gale_http_client_opts {
    int max_clients;        /* 0: 10 */
    size_t max_header_size; /* 0: 64 KiB; status line + headers, also caps the chunk trailers */
    size_t max_body_size;   /* 0: 100 MiB */
    const char *user_agent; /* NULL: "gale/<version>" */
} gale_http_client_opts;

/* Sets `req` to Tornado's defaults for `url`: GET, no headers or body, 20 s connect and request
 * timeouts, follow_redirects on with at most 5, raise_error on. */
void gale_http_client_request_init(gale_http_client_request *req, const char *url);

/* Creates a client on `loop` (NULL: gale_loop_current()) with `opts` (NULL: defaults). Returns
 * 0, -EINVAL (negative max_clients) or -ENOMEM. Ownership: free with gale_http_client_free(). */
int gale_http_client_new(gale_loop *loop, const gale_http_client_opts *opts,
                         gale_http_client **out);

/* Frees the client. Requests still queued or in flight complete with -ECANCELED, from the loop
 * (their callbacks run on later iterations and must not use the client). A connection attempt
 * in progress finishes in the background and is then closed: keep running the loop for a moment
 * (or until those complete) before freeing it. NULL is a no-op. Legal inside a fetch callback of
 * this client (requests are detached from the client before their callbacks run). */
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

#endif

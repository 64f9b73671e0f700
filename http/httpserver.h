/* gale HTTP/1.1 server: Tornado's HTTPServer + HTTP1Connection, on http-parser and gale_stream.
 *
 * The server accepts connections (net/tcpserver), parses requests with http-parser and hands each
 * complete request (headers and body) to the request callback. The callback (or any later loop
 * callback: a timer, a client fetch) answers through the gale_http_response_* calls and ends with
 * gale_http_response_finish().
 *
 * Keep-alive: HTTP/1.1 unless "Connection: close"; HTTP/1.0 only with "Connection: keep-alive".
 * Pipelining: requests on a connection are handled strictly one after another; the next request is
 * parsed only after the previous response finished, and responses finished while the connection
 * is processing one batch of received bytes go out together in one write. An error in request N+1
 * is answered after response N.
 *
 * Limits (gale_http_server_opts): header block over max_header_size -> 431; a body over
 * max_body_size -> 413 (checked against Content-Length before reading it, and while reading a
 * chunked body); malformed syntax, Transfer-Encoding other than a single final "chunked",
 * Content-Length together with Transfer-Encoding, differing duplicate Content-Length, a space in
 * a header name, whitespace or a control byte in the request target, a chunked body that breaks
 * RFC 9112 7.1 (checked strictly: line ends, chunk extensions, trailers; http-parser alone is
 * lenient there), a request line without an HTTP/1.x version (HTTP/0.9's "GET /path") or whose
 * version is not exactly "HTTP/" digit "." digit ("HTT,/1.1", which http-parser lets through)
 * -> 400; another major version (2.0, 9.9) -> 505, while a later 1.x minor is served as 1.1
 * (RFC 9112 2.3). After an error response the connection closes (after draining input
 * briefly, so the client reads the status). idle_connection_timeout is a deadline for a whole
 * header block (idle keep-alive or a client sending its request too slowly: not reset by each
 * byte); body_timeout a deadline for the whole body. "Expect: 100-continue" is answered before the
 * body is read (for a streamed body: when its reader starts, see below). A client that pipelines without reading its responses is not parsed further while
 * more than 1 MiB of output is queued. idle_connection_timeout also bounds a stalled reader: while
 * response bytes wait in the connection and the kernel takes none of them for that long, the
 * connection closes (a DEBUG log line; an in-flight request gets its close callback). Any bytes
 * taken reset it, so a slow but steady download is never cut however long it takes. Progress is
 * sampled four times per timeout (not per write), so a stall is noticed 1 to 1.25 timeouts after
 * the last progress.
 *
 * Streamed bodies (Tornado's HTTPMessageDelegate, which its @stream_request_body builds on): with a
 * head callback set (gale_http_server_set_head_cb), a request whose head announces a body can be
 * handed to the request callback as soon as its head is complete, its body then delivered piece
 * by piece (gale_http_request_read_body) as it arrives, Content-Length and chunked alike (chunk
 * framing removed). A reader that asks for a pause stops the server reading that connection until
 * it resumes: the bytes the server holds stay bounded (one read's worth plus the stream's idle
 * buffer, 64 KiB) and TCP pushes back on the client. A response finished before the body ended
 * closes the connection after it (the rest of the body is drained briefly, never parsed as a
 * request).
 *
 * Graceful shutdown (gale_http_server_shutdown): the listening sockets close (new connects are
 * refused), idle keep-alive connections close at once, and every request received before the
 * shutdown began is answered: the response that leaves no further input waiting on its connection
 * carries "Connection: close" and the connection closes once it is written (pipelined requests
 * already received are answered first). When no connection is left, or at the deadline (what is
 * left is closed: handlers get their close callback), `done` runs.
 *
 * Connection limit (max_connections): at the cap the server stops accepting, so new clients wait
 * in the kernel's listen backlog rather than being accepted and dropped; one warning per episode
 * (net/tcpserver.h, gale_server_set_max_connections).
 *
 * Responses: Content-Length when the handler finishes without flushing; chunked when it flushes
 * first on HTTP/1.1 (HTTP/1.0: close-delimited). HEAD, 1xx, 204 and 304 never carry a body. A
 * Date header is added (cached per second), and a Server header unless set. One access log line
 * per request: "200 GET / (127.0.0.1) 0.21ms" (INFO below 400, WARNING 4xx, ERROR 5xx); the
 * duration runs from the arrival of the request's last bytes until its response is handed to the
 * connection (for responses produced while a batch of input is processed: the end of the batch,
 * when they are written together).
 * Framing headers belong to the server: a handler's Transfer-Encoding header is dropped, its
 * Connection header is replaced (a "close" in it ends the connection after the response), and a
 * Content-Length it sets must match the bytes written (a mismatch is logged and the connection
 * closes after the response).
 */
#ifndef GALE_HTTP_HTTPSERVER_H
#define GALE_HTTP_HTTPSERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/loop.h"
#include "http/httputil.h"
#include "net/tcpserver.h"

typedef struct gale_http_server gale_http_server;
typedef struct gale_http_conn gale_http_conn;

/* One request. The fields are read-only for handlers. Strings are NUL-terminated and live as long
 * as the request. */
typedef struct gale_http_request {
    const char *method; /* "GET" */
    const char *uri;    /* request target as sent: "/greet?name=x" */
    const char *path;   /* uri up to '?', not percent-decoded (as Tornado) */
    const char *query;  /* after '?', "" when none */
    int version_major;  /* 1 */
    int version_minor;  /* 0 or 1 */
    gale_http_headers headers;
    const char *body; /* NUL-terminated for convenience; may contain NULs: use body_len */
    size_t body_len;
    const char *remote_ip; /* peer address, or X-Real-IP / X-Forwarded-For with xheaders */
    const char *protocol;  /* "http", or X-Scheme / X-Forwarded-Proto with xheaders */
    double start_time;     /* gale_loop_time() when the request was complete */
    gale_http_conn *conn;
    void *user; /* free for the application (the web layer uses it) */
} gale_http_request;

/* A complete request. Ownership: the request lives until gale_http_response_finish() is called on
 * it — also when the client disconnects first (then writes are dropped). The callback must make
 * sure finish is called eventually, now or from a later loop callback. */
typedef void (*gale_http_request_cb)(gale_http_request *req, void *arg);
/* The client went away (or the connection failed) before the response finished. */
typedef void (*gale_http_close_cb)(gale_http_request *req, void *arg);

typedef struct gale_http_server_opts {
    size_t max_header_size;         /* default 65536 */
    size_t max_body_size;           /* default 100 MiB; 0 refuses every body (413) */
    double idle_connection_timeout; /* seconds, default 60; deadline for a header block, and
                                     * the longest the kernel may take none of the queued
                                     * response bytes (see above); 0: none */
    double body_timeout;     /* seconds, default 60; deadline for a body (then 408); 0: none */
    bool no_keep_alive;      /* close after every response */
    bool xheaders;           /* trust X-Real-IP / X-Forwarded-For / X-Scheme */
    bool no_access_log;      /* skip the access log line */
    size_t max_connections;  /* open connections at most (0, the default: no cap; the
                              * descriptor limit and the EMFILE pause still bound them) */
    double shutdown_timeout; /* seconds, default 30: the drain deadline the web layer uses
                              * on SIGTERM/SIGINT (gale_app_shutdown) */
    bool reuse_port;         /* bind with SO_REUSEPORT: start(n > 1) then gives every worker
                              * listening sockets of its own, the kernel spreading connections
                              * over them (gale_server_start); default false: one shared socket */
    gale_tls_ctx *tls;       /* Tornado's ssl_options: a server context (net/tls.h) makes every
                              * connection HTTPS (requests say protocol "https"); the server
                              * takes its own reference. NULL (default): plain HTTP */
} gale_http_server_opts;

/* Fills `o` with the defaults above. */
void gale_http_server_opts_init(gale_http_server_opts *o);

/* Creates a server on `loop` calling `cb` for each request. A NULL loop is resolved only when the
 * server starts accepting (listen or start), as gale_loop_current() of that process: pass NULL for
 * bind + start(n > 1), so each forked worker gets its own loop. `opts` may be NULL (defaults); it
 * is copied. Returns 0, -EINVAL (NULL cb or out, max_header_size 0, a negative or NaN timeout,
 * a client TLS context), -ENOTSUP (a TLS context in a build without TLS), -ENOMEM. Free with
 * gale_http_server_free. */
int gale_http_server_new(gale_loop *loop, const gale_http_server_opts *opts,
                         gale_http_request_cb cb, void *arg, gale_http_server **out);

/* Binds and starts accepting on (address, port) — NULL address: all interfaces. Port 0 picks a
 * free port (see gale_http_server_port). Returns 0 or a negative errno. */
int gale_http_server_listen(gale_http_server *srv, int port, const char *address);

/* Binds without accepting, then gale_http_server_start(n) forks n workers (n <= 0: one per CPU;
 * 1: no fork) like Tornado's bind()/start(n). Call start before running any loop. */
int gale_http_server_bind(gale_http_server *srv, int port, const char *address);
int gale_http_server_start(gale_http_server *srv, int nprocs);

/* Tornado's add_sockets(): serves a listening socket bound elsewhere (gale_bind_sockets,
 * gale_bind_unix_socket for running behind a proxy, one inherited from a supervisor). The server
 * owns the fd once this returns 0; on error the caller keeps it. May be combined with listen.
 * Requests on a unix socket report remote_ip "0.0.0.0" (use xheaders behind a proxy). */
int gale_http_server_add_socket(gale_http_server *srv, int fd);

/* The bound port, or a negative errno. */
int gale_http_server_port(const gale_http_server *srv);

/* Stops accepting (existing connections go on). */
void gale_http_server_stop(gale_http_server *srv);

/* Graceful shutdown (Tornado's server.stop() + a drain): stops accepting and closes the
 * listening sockets, closes idle keep-alive connections (no request under way, no input waiting),
 * and lets every in-flight request finish; a response after which no further input waits on its
 * connection gets "Connection: close" and the connection closes once it is written. Pipelined
 * requests already received are answered before that. When no connection is left, or `timeout`
 * seconds from now (0: at once) when the remaining connections are closed (their in-flight
 * requests get the close callback and must still finish), `done(loop, arg)` runs once, from the
 * loop (never inside this call). The server stays allocated: free it afterwards (also legal
 * before `done` ran: then `done` never runs).
 * Returns 0; -EINVAL (NULL srv, negative or NaN timeout); -EALREADY when a shutdown is already
 * under way: `done` is not registered again, but a deadline earlier than the current one
 * replaces it (a second call with 0 closes what is left now); -ENOMEM (no loop). `done` may be
 * NULL. */
int gale_http_server_shutdown(gale_http_server *srv, double timeout, gale_cb done, void *arg);

/* True once gale_http_server_shutdown() was called. */
bool gale_http_server_shutting_down(const gale_http_server *srv);

/* Open connections of this server (those whose close callback has not run). */
size_t gale_http_server_connections(const gale_http_server *srv);

/* Stops accepting, closes every connection (in-flight requests get their close callback from the
 * loop's next iteration; their memory is released when the handler calls finish) and frees the
 * server. Legal inside the request callback. */
void gale_http_server_free(gale_http_server *srv);

/* ---- streamed request bodies ---- */

/* Asked when the head of a request with a body (a Content-Length above 0, or chunked) is
 * complete, before any byte of the body is read and before "100 Continue": return true to take
 * that body as a stream. The request is then handed to the request callback at once, with an
 * empty body, and the callback reads the body with gale_http_request_read_body (or finishes
 * without it). False: the body is collected and the request handed over complete, as without
 * the callback. The Content-Length is checked against max_body_size only for collected bodies;
 * a streamed one is checked when its reader starts, against the request's own limit. Runs from
 * the loop; it must not answer or finish the request. */
typedef bool (*gale_http_head_cb)(gale_http_request *req, void *arg);

/* Sets (NULL: removes) the server's head callback. Requests whose heads are already parsed are
 * not affected. */
void gale_http_server_set_head_cb(gale_http_server *srv, gale_http_head_cb cb, void *arg);

/* Returned by a gale_http_body_cb to stop reading until gale_http_request_resume_body(). */
#define GALE_HTTP_BODY_PAUSE 1

/* A piece of a streamed body, in order; `data` (len > 0 bytes) lives until the callback
 * returns. Return 0 for the next piece as it arrives, or GALE_HTTP_BODY_PAUSE: the server then
 * reads nothing more from the connection until gale_http_request_resume_body() (Tornado's
 * data_received returning a future). The callback may finish the response (the connection then
 * closes after it). */
typedef int (*gale_http_body_cb)(gale_http_request *req, const char *data, size_t len, void *arg);

/* The streamed body ended: `status` 0 when it is complete (the request's body_len stays 0: the
 * pieces were the body), else why it cannot be read on, with the status a response should give:
 * -EMSGSIZE (over the body limit: 413), -ETIMEDOUT (body_timeout passed: 408), -EBADMSG
 * (malformed chunked framing: 400), -ENOMEM (503), or -EPIPE (the connection ended: the request's
 * close callback ran just before). The request must still be finished; after an error the
 * connection closes once the response is written. Runs once, from the loop. */
typedef void (*gale_http_body_end_cb)(gale_http_request *req, int status, void *arg);

/* Whether the request's body is streamed (the head callback took it). */
bool gale_http_request_body_streamed(const gale_http_request *req);

/* Starts reading a streamed body: answers "100 Continue" if the client asked for it (and no
 * response byte was sent), then calls `on_piece` for each piece and `on_end` once at the end.
 * Returns 0 (then `on_end` runs exactly once), -EINVAL (NULL argument, or the body is not
 * streamed), -EALREADY (reading already started, or the request finished), -EMSGSIZE (the
 * Content-Length is over the request's body limit: answer 413), -ETIMEDOUT (body_timeout passed
 * before reading started), -EPIPE (the client left); on error no callback runs. Callbacks: from
 * the loop, never inside this call. */
int gale_http_request_read_body(gale_http_request *req, gale_http_body_cb on_piece,
                                gale_http_body_end_cb on_end, void *arg);

/* Reads on after a piece callback returned GALE_HTTP_BODY_PAUSE (legal inside that callback
 * too: then it does not pause). The next piece comes from the loop, never inside this call.
 * Returns 0 (also when not paused), -EINVAL (not streamed), -EPIPE (the client left; `on_end`
 * had its -EPIPE) or -EALREADY (finished). */
int gale_http_request_resume_body(gale_http_request *req);

/* Tornado's connection.set_max_body_size for one request: the most body bytes it may bring (its
 * default: the server's max_body_size). For a streamed body, until its end (a Content-Length is
 * checked when reading starts, a chunked body as it arrives: -EMSGSIZE to on_end). Returns 0,
 * -EINVAL (NULL) or -EALREADY (a collected body: already read). */
int gale_http_request_set_max_body_size(gale_http_request *req, size_t max);

/* Tornado's connection.set_body_timeout for one request: the streamed body must be complete
 * `seconds` after its head arrived (0: no deadline; default the server's body_timeout). Returns
 * 0, -EINVAL (NULL, negative or NaN) or -EALREADY (not a streamed body still being read). */
int gale_http_request_set_body_timeout(gale_http_request *req, double seconds);

/* ---- response ---- */

/* Sets the status (default 200) and optionally the reason (NULL: the standard phrase). Only before
 * headers are sent. Returns 0, -EINVAL (code outside 100..999) or -EALREADY (headers sent). */
int gale_http_response_set_status(gale_http_request *req, int code, const char *reason);

/* Sets a response header, replacing any of the same name (set) or adding another (add). Both
 * strings are copied. CR or LF in either -> -EINVAL (no header injection). -EALREADY once the
 * headers went out. */
int gale_http_response_set_header(gale_http_request *req, const char *name, const char *value);
int gale_http_response_add_header(gale_http_request *req, const char *name, const char *value);
/* The fast path of add_header for strings that are already valid and live long enough: string
 * constants, or copies the caller made and validated (the web layer's). Neither validates nor
 * copies: `name` (name_len bytes) must be a non-empty token and `value` (value_len bytes) free of
 * CR and LF. A Content-Length value is still checked (digits only). Ownership: both must stay
 * valid until the response finishes. Returns 0, -EINVAL (NULL or empty name, NULL value, a
 * non-numeric Content-Length), -EALREADY (headers sent) or -ENOMEM. */
int gale_http_response_add_header_trusted(gale_http_request *req, const char *name, size_t name_len,
                                          const char *value, size_t value_len);
/* clear_header removes every header called `name` and returns 0 (also when there was none). */
int gale_http_response_clear_header(gale_http_request *req, const char *name);

/* Appends body bytes (copied). Returns 0, -EPIPE (client gone), -EALREADY (finished), -ENOMEM. */
int gale_http_response_write(gale_http_request *req, const void *data, size_t len);

/* Drops the body written since the last flush (nothing of it has been sent yet), e.g. to replace
 * it with an error page. Returns 0, -EINVAL or -EALREADY (finished). */
int gale_http_response_clear_body(gale_http_request *req);

/* Sends the headers and what was written so far now (chunked on HTTP/1.1 unless a Content-Length
 * header was set). Returns 0, -EPIPE, -EALREADY. */
int gale_http_response_flush(gale_http_request *req);

/* Called once, with 0 when the bytes of a flush have been handed to the kernel, or a negative
 * errno (-EPIPE...) when the connection ended first. The request may be gone by then (use `arg`
 * only). */
typedef void (*gale_http_flushed_cb)(int status, void *arg);

/* gale_http_response_flush, then `cb` once what was flushed has left (Tornado's flush() future).
 * A handler streaming a large response waits for it before writing more, so a slow client holds
 * the handler back instead of growing the server's memory. Returns 0 (then `cb` runs exactly
 * once, from the loop, never inside this call) or what flush returns (then it does not run). */
int gale_http_response_flush_cb(gale_http_request *req, gale_http_flushed_cb cb, void *arg);

/* Bytes of this connection's output not yet taken by the kernel (written or flushed responses,
 * this one's and any before it): for back-pressure without waiting on every flush. */
size_t gale_http_response_pending(const gale_http_request *req);

/* Ends the response and releases the request (do not touch `req` afterwards). Returns 0, or -EPIPE
 * when the client had gone (the request is still released). Legal inside the request's close
 * callback: then the release waits until that callback returns. */
int gale_http_response_finish(gale_http_request *req);

/* Status set so far; whether headers were sent; whether the client went away. */
int gale_http_response_status(const gale_http_request *req);
bool gale_http_response_headers_sent(const gale_http_request *req);
bool gale_http_request_connection_closed(const gale_http_request *req);

/* Takes the connection's stream away from the server, for a protocol upgrade (WebSocket): the
 * responses to earlier requests on the connection are handed to the stream first, the request's
 * access line is logged with status 101, and from then on the server neither reads, writes, times
 * nor counts the connection (a graceful shutdown does not wait for it). Bytes the client sent
 * after this request's head stay in the stream for its next read. Call it before any response
 * byte was sent; the caller writes its own response on the stream. Ownership: the caller owns
 * `*out` (and must set its close callback); the request stays valid, with its writes dropped,
 * until gale_http_response_finish() releases it as usual. Returns 0, -EINVAL, -EPIPE (the client
 * left, the headers went out or the request finished) or -EBUSY (the connection waits for queued
 * output to drain; try again from a later callback). */
int gale_http_request_detach(gale_http_request *req, gale_stream **out);

/* Registers `cb` to run if the client disconnects before finish (Tornado's
 * on_connection_close). */
void gale_http_request_set_close_cb(gale_http_request *req, gale_http_close_cb cb, void *arg);

/* Memory that lives exactly as long as the request (freed at finish): an arena, so per-request
 * allocations never grow a keep-alive connection. Returns NULL when out of memory. Zeroed. */
void *gale_http_request_alloc(gale_http_request *req, size_t size);
char *gale_http_request_strdup(gale_http_request *req, const char *s, size_t len);

/* The loop the request's connection runs on. */
gale_loop *gale_http_request_loop(const gale_http_request *req);

/* Returns the host the request is for, as Tornado's request.host: the authority of an
 * absolute-form target ("GET http://example.com/x HTTP/1.1", RFC 9112 3.2.2), else the Host
 * header's value ("example.com:8080"); "" for an HTTP/1.0 request without Host. The server has
 * checked it holds only host and port characters. Ownership: a NUL-terminated copy in the
 * request's arena, living as long as the request. NULL for a NULL request or out of memory. */
const char *gale_http_request_host(gale_http_request *req);

#endif

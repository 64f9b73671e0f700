/* gale web layer: Tornado's Application and RequestHandler on top of the HTTP server.
 *
 * An application is an ordered list of routes, each a POSIX extended regex (anchored: '^' and '$'
 * are added when absent) matched against the request path as sent (not decoded), mapped to a
 * handler class: a const struct of callbacks. Capture groups become path arguments
 * (percent-decoded). The first matching route wins; no match -> 404; a match whose class lacks the
 * method -> 405 with an Allow header. HEAD falls back to .get (the server drops the body and keeps
 * Content-Length).
 *
 *     static void main_get(gale_handler *h) { gale_write(h, "Hello, world!", 13); }
 *     static const gale_handler_class main_handler = { .get = main_get };
 *
 *     gale_app *app = gale_app_new(NULL);
 *     gale_app_route(app, "/", &main_handler, NULL);
 *     gale_app_listen(app, 8879, NULL);
 *     return gale_app_run(app);
 *
 * Life of a request (one gale_handler per request, allocated with the class's zeroed state from
 * the request arena, all freed when the response finishes):
 *   1. .prepare (if any): may finish the response early (e.g. gale_send_error(h, 403)); then the
 *      method is not called.
 *   2. the method (.get, .post...). If it returns without finishing, the response finishes
 *      automatically, unless the class has .async set or the method called gale_handler_async():
 *      then it finishes when gale_finish() is called, from any later loop callback.
 *   3. .on_finish runs once, when the response is complete (state still readable).
 * If the client disconnects before the finish, .on_connection_close runs (once). The handler must
 * still call gale_finish() — on_connection_close may call it itself — which then releases the
 * request; writes after the disconnect are dropped. Calling gale_finish() inside a method or
 * inside on_connection_close is safe: the release waits until the callback returns. After
 * gale_finish() returns outside such a callback, `h` and everything from the arena is gone.
 *
 * Responses: status 200 and "Content-Type: text/html; charset=UTF-8" unless changed (as Tornado).
 * The body is buffered until gale_flush() or the finish: a response that is never flushed gets a
 * Content-Length; gale_flush() sends headers and the body so far (chunked on HTTP/1.1). Headers
 * and cookies can be changed until the first flush. 204, 304 and 1xx responses drop the body and
 * the Content-Type. Error pages are Tornado's:
 *     <html><title>404: Not Found</title><body>404: Not Found</body></html>
 * A handler failing (gale_fail) logs at ERROR in the "application" category and answers 500; the
 * server goes on serving.
 *
 * Threads: everything here runs on the loop's thread. From another thread, post a callback with
 * gale_loop_add_callback() and finish from there.
 */
#ifndef GALE_HTTP_WEB_H
#define GALE_HTTP_WEB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/future.h"
#include "core/loop.h"
#include "http/form.h"
#include "http/httpserver.h"
#include "net/tls.h"

typedef struct gale_app gale_app;
typedef struct gale_handler gale_handler;

typedef void (*gale_handler_fn)(gale_handler *h);

/* A handler "class": define one as a static const and route it. Unset methods answer 405. */
typedef struct gale_handler_class {
    gale_handler_fn get;
    gale_handler_fn post;
    gale_handler_fn put;
    gale_handler_fn delete;
    gale_handler_fn head; /* when NULL, HEAD runs .get without a body */
    gale_handler_fn patch;
    gale_handler_fn options;
    gale_handler_fn prepare;             /* before the method; may finish early */
    gale_handler_fn on_finish;           /* once, after the response completed */
    gale_handler_fn on_connection_close; /* once, if the client leaves before finish */
    size_t state_size;                   /* bytes of zeroed per-request state */
    bool async;                          /* methods finish later with gale_finish() */
    /* Tornado's write_error: writes the body of an error response of this class (from
     * gale_send_error, gale_fail, a 405) in place of the HTML page, e.g. JSON for an API. The
     * status is set and the headers are back to the defaults (cookies kept, Allow on a 405); it
     * may set headers. NULL: the HTML page. */
    void (*write_error)(gale_handler *h, int code);
    /* Tornado's set_default_headers: runs when the handler is set up and again after an error
     * clears the headers (gale_send_error), so its headers are on error pages too. As in
     * Tornado it runs before the handler is initialised: gale_handler_state() may be NULL. */
    gale_handler_fn set_default_headers;
    /* Tornado's get_current_user: who sent the request (e.g. from gale_get_signed_cookie), a
     * string living as long as the request, or NULL for nobody. Called at most once per request,
     * by the first gale_current_user() (http/web_secure.h). */
    const char *(*get_current_user)(gale_handler *h);
    /* Tornado's @authenticated, per method: a GALE_METHOD_* mask. Such a method runs only for a
     * current user; otherwise GET and HEAD redirect to the app's login URL with ?next=<uri>
     * (500 when none is set) and other methods answer 403. */
    unsigned authenticated;
    /* Tornado's @stream_request_body: a request with a body is handed to this class as soon as
     * its head is complete. set_default_headers, prepare and the XSRF and authentication checks
     * run first (a prepare may raise the limit with gale_set_max_body_size, or refuse: the body
     * is then never read); then data_received gets each piece of the body as it arrives
     * (Content-Length and chunked alike, chunk framing removed), and the method runs after the
     * last one, with gale_body() empty. A request without a body runs as for any class. */
    bool stream_request_body;
    /* A piece of a streamed body (`data`: len > 0 bytes, valid until it returns). Returns 0 for
     * the next piece as it arrives; GALE_BODY_PAUSE to stop the server reading the connection
     * until gale_body_resume(h) (Tornado's data_received returning a future: a handler writing
     * to a slow disk keeps memory bounded however large the upload); or a negative errno, which
     * fails the request (gale_fail: 500). It may finish the response itself (the connection
     * closes after it: the rest of the body is not read as a request). NULL: pieces dropped. */
    int (*data_received)(gale_handler *h, const char *data, size_t len);
} gale_handler_class;

/* Methods, for gale_handler_class.authenticated. */
enum {
    GALE_METHOD_GET = 1 << 0,
    GALE_METHOD_HEAD = 1 << 1,
    GALE_METHOD_POST = 1 << 2,
    GALE_METHOD_PUT = 1 << 3,
    GALE_METHOD_DELETE = 1 << 4,
    GALE_METHOD_PATCH = 1 << 5,
    GALE_METHOD_OPTIONS = 1 << 6,
    GALE_METHOD_ALL = (1 << 7) - 1,
};

/* ---- application ---- */

/* Creates an application. `opts` (may be NULL: defaults) is copied and passed to the HTTP server
 * when it is created by listen or bind. Returns NULL when out of memory. Free with
 * gale_app_free(). */
gale_app *gale_app_new(const gale_http_server_opts *opts);

/* The server options, changeable until listen/bind (idle timeout, max body size...). */
gale_http_server_opts *gale_app_opts(gale_app *app);

/* Adds a route: `pattern` is a POSIX extended regex, anchored if it is not; it is compiled now.
 * Patterns written for Python's re (as in Tornado) mean the same here or are refused: \d and \D
 * are spelled [0-9] and [^0-9], and \d \w \s and escaped punctuation work inside [...] (glibc
 * already reads \w \W \s \S \b \B outside); (?...) groups and escapes POSIX cannot say (\A,
 * \Z, \n, \D inside [...]...) give -EINVAL.
 * `cls` (not copied: keep it static) handles matching requests; `arg` is handed to each of its
 * handlers through gale_handler_arg() (Tornado's initialize kwargs). Routes match in the order
 * added. Returns 0, -EINVAL (NULL argument or a pattern that does not compile; logged) or
 * -ENOMEM. */
int gale_app_route(gale_app *app, const char *pattern, const gale_handler_class *cls, void *arg);

/* gale_app_route with a name for gale_reverse_url() (Tornado's url(pattern, cls, name=...)).
 * Returns as gale_app_route, or -EEXIST when the name is taken. */
int gale_app_route_named(gale_app *app, const char *name, const char *pattern,
                         const gale_handler_class *cls, void *arg);

/* Tornado's reverse_url: the path of route `name` with its capture groups replaced by `args`
 * (`nargs` strings, each url-escaped as a path segment), in a malloc'ed string the caller frees.
 * NULL when the name is unknown, the count does not match the groups, the pattern cannot be
 * reversed (nested groups, or regex syntax outside the groups), or out of memory. */
char *gale_reverse_url(gale_app *app, const char *name, const char *const *args, size_t nargs);

/* Tornado's default_handler_class: `cls` handles requests that match no route (with `arg`), in
 * place of the plain 404 page; e.g. a class whose .get answers gale_send_error(h, 404) and whose
 * .write_error renders it. NULL restores the plain 404. */
void gale_app_set_default_handler(gale_app *app, const gale_handler_class *cls, void *arg);

/* Tornado's ssl_options for the app: the server it creates serves HTTPS with a server context
 * made from `o` (net/tls.h: certfile and keyfile at least); while gale_app_run() runs, SIGHUP
 * re-reads the certificate files (gale_tls_reload: open connections go on, a failed reload keeps
 * the previous certificates). Call before listen/bind. Returns 0, -EINVAL, -EALREADY (the server
 * exists), GALE_ETLS (a file could not be loaded; logged), -ENOTSUP (built without TLS),
 * -ENOMEM. */
int gale_app_use_tls(gale_app *app, const gale_tls_opts *o);

/* Creates the server on gale_loop_current() and listens on (address, port) (NULL address: all
 * interfaces; port 0: a free port, see gale_app_port()). Logs "listening on port N". Returns 0 or
 * a negative errno (-EALREADY if already listening). */
int gale_app_listen(gale_app *app, int port, const char *address);

/* Tornado's add_sockets(): serves an already bound listening socket too (e.g. from
 * gale_bind_unix_socket()), creating the server on gale_loop_current() if listen has not. The app
 * owns the fd once this returns 0; on error the caller keeps it. Returns 0 or a negative errno. */
int gale_app_add_socket(gale_app *app, int fd);

/* Tornado's bind_unix_socket() + add_sockets(), for running behind a proxy such as nginx: binds
 * a listening unix socket at `path` with permissions `mode` (e.g. 0660; see
 * gale_bind_unix_socket) and serves it, creating the server on gale_loop_current() if listen has
 * not. Logs "listening on unix socket PATH". May be called more than once, and combined with
 * listen or add_socket. Returns 0, -EINVAL (NULL app, NULL or empty path), -EADDRINUSE (a live
 * server listens on `path`; it keeps serving), -EEXIST (`path` is a file other than a socket),
 * -ENAMETOOLONG, -ENOMEM, or another negative errno from bind, chmod or listen; failures are
 * logged and leave nothing open (a socket file bound here is removed when serving it fails).
 * Ownership: the app owns the socket and the socket file it made (a stale socket file left at
 * `path` by a server that is gone is replaced). gale_app_free() closes the socket, then removes
 * the file if it is still the one made here (same device and inode): not when another server has
 * bound the path since, nor in a worker forked by gale_app_start() (only the process that called
 * this removes it). A graceful shutdown stops accepting but leaves the file until the free. */
int gale_app_listen_unix(gale_app *app, const char *path, int mode);

/* Tornado's bind() + start(n): binds now, then gale_app_start() forks `nprocs` workers (<= 0: one
 * per CPU, 1: no fork) that all accept on the socket, or, with gale_app_opts(app)->reuse_port set
 * before the bind, each on a listening socket of its own (SO_REUSEPORT; gale_server_start). Call
 * start before any loop runs. */
int gale_app_bind(gale_app *app, int port, const char *address);
int gale_app_start(gale_app *app, int nprocs);

/* The bound port, or a negative errno (-ENOTCONN before listen/bind). */
int gale_app_port(const gale_app *app);

/* The HTTP server (NULL before listen/bind). */
gale_http_server *gale_app_server(gale_app *app);

/* Runs gale_loop_current() until gale_app_stop() or the end of a graceful shutdown. SIGINT and
 * SIGTERM (handled through gale_loop_add_signal, between callbacks) start one:
 * gale_app_shutdown(app, opts.shutdown_timeout), 30 s by default. A further signal during the
 * drain (at least a second after the first: signals arriving together, as Ctrl-C reaching a
 * prefork parent and its workers, count as one) closes the remaining connections at once. Logs
 * are flushed before it returns. Returns 0, or a negative errno if the loop could not run. */
int gale_app_run(gale_app *app);

/* Graceful shutdown (gale_http_server_shutdown): stops accepting, closes idle keep-alive
 * connections, lets in-flight requests finish (their responses carry "Connection: close"), and
 * when no connection is left, or `timeout` seconds from now (0: at once) when what is left is
 * closed, makes gale_app_run() return 0. A second call may only bring the deadline forward.
 * Without a server it just stops the loop. Returns 0, -EINVAL (NULL app, negative or NaN timeout)
 * or -ENOMEM. */
int gale_app_shutdown(gale_app *app, double timeout);

/* Makes gale_app_run() return after the current loop iteration. */
void gale_app_stop(gale_app *app);

/* Frees the server (in-flight requests get on_connection_close and must still finish) and the
 * routes. NULL is a no-op. */
void gale_app_free(gale_app *app);

/* ---- handler: the request ---- */

/* The underlying server request (read-only fields; gale_http_request_alloc for more memory).
 * Ownership: lives as long as `h`. Do not call gale_http_response_* on it: the handler buffers the
 * response and would lose what it holds. */
gale_http_request *gale_handler_request(gale_handler *h);
/* The application that routed this request. */
gale_app *gale_handler_app(gale_handler *h);
/* The loop serving the request: schedule timers for async handlers on it. */
gale_loop *gale_handler_loop(gale_handler *h);
/* The `arg` given to gale_app_route(). */
void *gale_handler_arg(gale_handler *h);
/* The class's zeroed per-request state (state_size bytes), or NULL when state_size is 0. */
void *gale_handler_state(gale_handler *h);
/* Declares that the response will finish later, through gale_finish(). */
void gale_handler_async(gale_handler *h);
/* Memory freed with the request (zeroed), or NULL. */
void *gale_handler_alloc(gale_handler *h, size_t size);

/* Request line parts, NUL-terminated, living as long as the request. */
const char *gale_method(gale_handler *h);    /* "GET" */
const char *gale_uri(gale_handler *h);       /* "/greet?name=x" as sent */
const char *gale_path(gale_handler *h);      /* "/greet", not decoded */
const char *gale_query(gale_handler *h);     /* "name=x", "" when none */
const char *gale_remote_ip(gale_handler *h); /* "127.0.0.1" */
/* The request body (NUL-terminated for convenience; use `*len`, may be NULL). */
const char *gale_body(gale_handler *h, size_t *len);

/* The `i`-th capture group of the route (0-based), percent-decoded ('+' stays '+'), NUL-terminated
 * with its length in `*len` (may be NULL). NULL when there is no such group or it did not take
 * part in the match. */
const char *gale_path_arg(gale_handler *h, size_t i, size_t *len);
size_t gale_path_arg_count(gale_handler *h);

/* First request header `name` (case-insensitive), or NULL; not NUL-terminated: use `*len`. */
const char *gale_get_header(gale_handler *h, const char *name, size_t *len);
/* Iterates over the headers called `name`: *cursor = 0 first, NULL at the end. */
const gale_http_header *gale_header_next(gale_handler *h, const char *name, size_t *cursor);

/* Where arguments come from: the query string, the body (urlencoded or multipart), or both (query
 * values first, as Tornado's request.arguments). */
typedef enum { GALE_ARGS_ALL, GALE_ARGS_QUERY, GALE_ARGS_BODY } gale_args_source;

/* Tornado's get_argument: the LAST value of argument `name` from the query and body, or `def`
 * when absent (or out of memory). Values are percent-decoded ('+' is a space), NUL-terminated,
 * with the control characters \x00-\x08 and \x0e-\x1f replaced by spaces as Tornado does (so a
 * %00 cannot cut a value short); other bytes are kept as sent (not stripped, UTF-8 not
 * validated). gale_get_argument_at() gives the bytes unchanged. The query and body are parsed on
 * first use (a malformed multipart body is logged and yields no arguments). Lives as long as the
 * request. */
const char *gale_get_argument(gale_handler *h, const char *name, const char *def);
const char *gale_get_query_argument(gale_handler *h, const char *name, const char *def);
const char *gale_get_body_argument(gale_handler *h, const char *name, const char *def);

/* Tornado's get_arguments: the `i`-th value (0-based, in order of arrival) of `name` from `src`,
 * or NULL past the end; `*len` (may be NULL) gets the length (values may contain NULs). */
const char *gale_get_argument_at(gale_handler *h, gale_args_source src, const char *name, size_t i,
                                 size_t *len);
/* How many values `name` has in `src`. */
size_t gale_argument_count(gale_handler *h, gale_args_source src, const char *name);
/* All parsed arguments of the query (GALE_ARGS_QUERY) or body (GALE_ARGS_BODY): the form holds
 * them in order (iterate args[0..nargs)). NULL when parsing ran out of memory. */
const gale_form *gale_arguments(gale_handler *h, gale_args_source src);
/* The `i`-th file uploaded (multipart) under field `name`, or NULL (Tornado's request.files). */
const gale_form_file *gale_get_file(gale_handler *h, const char *name, size_t i);

/* The value of cookie `name` from the Cookie header (the last one when repeated, as Tornado), or
 * `def`. NUL-terminated, lives as long as the request. */
const char *gale_get_cookie(gale_handler *h, const char *name, const char *def);

/* ---- handler: the response ---- */

/* Sets the status (100..599) with its standard reason. Returns 0, -EINVAL or -EALREADY (after the
 * headers went out). */
int gale_set_status(gale_handler *h, int code);
/* The status set so far (200 by default). */
int gale_get_status(gale_handler *h);

/* Sets (replacing) or adds a response header; clears every header called `name`. Strings are
 * copied. Returns 0, -EINVAL (empty or non-token name, CR/LF/NUL in the value), -EALREADY (headers
 * already sent) or -ENOMEM. Clearing Content-Type removes the default one. */
int gale_set_header(gale_handler *h, const char *name, const char *value);
int gale_add_header(gale_handler *h, const char *name, const char *value);
int gale_clear_header(gale_handler *h, const char *name);

/* Appends to the response body (copied). Returns 0, -EALREADY (finished) or -ENOMEM. */
int gale_write(gale_handler *h, const void *data, size_t len);
/* Appends a NUL-terminated string. */
int gale_write_str(gale_handler *h, const char *s);
/* printf-style write. Returns 0, -EALREADY, -ENOMEM or -EINVAL (bad format). */
int gale_writef(gale_handler *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int gale_vwritef(gale_handler *h, const char *fmt, va_list ap);

/* Sends the headers (first time) and the body written so far: chunked on HTTP/1.1 unless a
 * Content-Length header was set. Returns 0, -EALREADY (finished) or -EPIPE (client gone). */
int gale_flush(gale_handler *h);
/* gale_flush, then `cb(status, arg)` once the flushed bytes have left: 0, or a negative errno if
 * the client went away first (`h` is still valid then unless the handler finished meanwhile; it
 * must still call gale_finish()). Returns 0 (`cb` will run once, from the loop) or the flush's
 * error (it will not). A handler that streams a large response writes the next piece from `cb`,
 * so a slow client holds it back instead of growing the server's memory. */
int gale_flush_cb(gale_handler *h, gale_http_flushed_cb cb, void *arg);
/* The same as a future (Tornado's `await self.flush()`): in a coroutine method,
 * `if (gale_await_drop(gale_flush_future(h)) < 0) return;`. The caller owns the reference; the
 * future fails at once if the flush does (NULL: out of memory). */
gale_future *gale_flush_future(gale_handler *h);

/* Ends the response: sends what is left, runs on_finish, releases the request (see the file
 * comment for when `h` becomes invalid). Returns 0, -EALREADY (finished before) or -EPIPE
 * (client gone; the request is still released). */
int gale_finish(gale_handler *h);
/* True once gale_finish() was called (readable until the request is released). */
bool gale_finished(gale_handler *h);

/* Redirects to `url` with `status` (0: 302; must be 3xx) and finishes. Returns 0, -EINVAL (bad
 * status, CR/LF in url), -EALREADY (headers sent or finished). */
int gale_redirect(gale_handler *h, const char *url, int status);

/* Tornado's send_error: discards headers (but not cookies) and body written so far, answers
 * `code` (an invalid code becomes 500) with the short HTML error page and finishes. When the
 * headers already went out it can only end the response (logged). Returns what gale_finish
 * returns. */
int gale_send_error(gale_handler *h, int code);

/* An application error: logs "<METHOD> <uri>: <gale_strerror(err)>" at ERROR ("application")
 * and answers 500 through gale_send_error(). */
int gale_fail(gale_handler *h, int err);

/* Cookie attributes for gale_set_cookie(); zero-initialise and set what you need. */
typedef struct gale_cookie_opts {
    const char *path;   /* NULL: "/" (as Tornado) */
    const char *domain; /* NULL: none */
    int64_t max_age;    /* seconds; used when has_max_age */
    bool has_max_age;
    int64_t expires; /* seconds since the epoch; 0: none (a session cookie) */
    bool secure;
    bool httponly;
    const char *samesite; /* NULL, "Strict", "Lax" or "None" */
} gale_cookie_opts;

/* Adds a Set-Cookie header "name=value; Domain=..; expires=..; Max-Age=..; Path=/; Secure;
 * HttpOnly; SameSite=..", replacing one set earlier for the same name. `opts` may be NULL.
 * Returns 0, -EINVAL (name not an RFC 6265 token; value with a control character, space, '"',
 * ',', ';' or '\\'; path or domain with ';' or a control character; samesite not one of the
 * three), -EALREADY (headers sent) or -ENOMEM. */
int gale_set_cookie(gale_handler *h, const char *name, const char *value,
                    const gale_cookie_opts *opts);
/* Sets an expired, empty cookie to delete `name` (same path/domain rules as set_cookie). */
int gale_clear_cookie(gale_handler *h, const char *name, const gale_cookie_opts *opts);

/* ---- streamed request bodies (stream_request_body classes) ---- */

/* What data_received returns to pause the body. */
#define GALE_BODY_PAUSE GALE_HTTP_BODY_PAUSE

/* Reads on after data_received returned GALE_BODY_PAUSE (inside data_received: it then does not
 * pause); the next piece comes from the loop. Returns 0, also when not paused; -EINVAL (not a
 * streamed request); -EALREADY (finished). When the body ended while paused (the client left,
 * or the body deadline passed), the request ends here instead: -EPIPE after on_connection_close
 * (the response finishes), -ETIMEDOUT (answered 408); then, outside a handler callback, `h` is
 * gone when this returns. While paused the request is never released under the handler: a
 * handler that paused calls this once its work is done (or finishes the response instead, and
 * then does not call it). */
int gale_body_resume(gale_handler *h);

/* Tornado's request.connection.set_max_body_size: the largest body this request may bring
 * (default: the server's max_body_size), from prepare, before the body is read; over it the
 * request is answered 413 (a Content-Length before a byte is read, a chunked body as it
 * arrives). Returns 0, -EALREADY (not a streamed body: it was read already). */
int gale_set_max_body_size(gale_handler *h, size_t max);

/* Tornado's request.connection.set_body_timeout: the streamed body must be complete `seconds`
 * after its head arrived (0: no deadline; default: the server's body_timeout), else 408. Returns
 * 0, -EINVAL (negative or NaN) or -EALREADY (not a streamed body still being read). */
int gale_set_body_timeout(gale_handler *h, double seconds);

/* ---- coroutine methods ---- */

/* Runs `fn(h)` as a coroutine (core/coro.h) for this request: it may gale_await() freely, and the
 * response finishes when `fn` returns (or earlier, if it calls gale_finish()). Call it from a
 * method; GALE_CORO_METHOD declares such a method. `h` stays valid until `fn` returns, also after
 * gale_finish(). If the client goes away while `fn` waits, on_connection_close runs, then the
 * pending await (and every later one) returns -ECANCELED from the loop, so `fn` unwinds and frees
 * what it holds; its writes are dropped. Returns 0; -EINVAL (NULL argument), -EALREADY (a
 * coroutine already runs, or the response finished); or the spawn's error (-ENOMEM...), logged
 * and answered with 500. Stack: GALE_CORO_DEFAULT_STACK. */
int gale_handler_run_coro(gale_handler *h, gale_handler_fn fn);

/* Declares a handler method `name` that runs `fn` as a coroutine:
 *
 *     static void relay(gale_handler *h) { ... gale_await(f) ... }
 *     GALE_CORO_METHOD(relay_get, relay)
 *     static const gale_handler_class relay_handler = {.get = relay_get};
 */
#define GALE_CORO_METHOD(name, fn)                                                                 \
    static void name(gale_handler *h) { gale_handler_run_coro(h, fn); }

#endif

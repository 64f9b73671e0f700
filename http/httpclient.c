/* Asynchronous HTTP/1.1 client: a queue in front of the connections, and the exchange on one.
 *
 * Objects: a `fetch` lives from gale_http_fetch() until its callback has run; a `conn` is the
 * link between a fetch and its socket, and outlives the fetch when it goes back to the pool
 * (httpclient_pool.c). Stream callbacks only ever see the conn: when a fetch ends (or follows a
 * redirect, or retries) it detaches from its conn and either pools it (response read in full and
 * reusable) or closes it, and the callbacks that the close still delivers find `conn->f == NULL`
 * and do nothing; the conn is freed by the stream's close callback (or by the connect callback
 * when the stream never came up). So no stream callback can reach a freed fetch, and no response
 * bytes can reach a fetch other than the one that sent the request, whatever order the loop runs
 * things in.
 *
 * A fetch's path: queued -> active: connect_phase() takes a pooled conn for its (scheme, host,
 * port) or open_conn() opens one (the only place a connection is made) -> send_request() ->
 * on_head() -> the body (httpclient_response.c) -> gale__fetch_complete() -> finish(). A failure
 * on a reused conn before any response byte retries once on a fresh one (maybe_retry()).
 *
 * This file owns the queue, the exchange, redirects and retries; the request's bytes are
 * httpclient_request.c's, the response's httpclient_response.c's, URLs httpclient_url.c's.
 */
#include "http/httpclient.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/list.h"
#include "core/log.h"
#include "core/version.h"
#include "http/httpclient_internal.h"
#include "net/iostream.h"
#include "net/tcpclient.h"

#define DEFAULT_USER_AGENT "gale/" GALE_VERSION_STRING

static void pump(gale_http_client *c);
static void connect_phase(struct gale__fetch *f);
static void read_head(struct gale__fetch *f);

/* The smaller of two timeouts where <= 0 means no limit. */
static double timeout_min(double a, double b)
{
    if (a <= 0)
        return b;
    if (b <= 0)
        return a;
    return a < b ? a : b;
}

static bool is_idempotent(const char *method)
{
    static const char *const m[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (!strcmp(method, m[i]))
            return true;
    return false;
}

/* The pool key of the fetch's URL: (scheme, host, port), as scheme://hostport (whose port is
 * left out only when it is 80, so one host and port always give one key). Returns 0 or
 * -ENOMEM. */
static int set_key(struct gale__fetch *f)
{
    free(f->key);
    f->key = NULL;
    char ctx_id[24] = "";
    if (f->u.tls) {
        int rc = f->tls ? 0 : gale__client_tls(f->client, f);
        if (rc)
            return rc;
        snprintf(ctx_id, sizeof ctx_id, "#%p", (void *)f->tls);
    }
    f->key = gale__concat(4, (struct gale__str[]){{f->u.scheme, strlen(f->u.scheme)},
                                                  {"://", 3},
                                                  {f->u.hostport, strlen(f->u.hostport)},
                                                  {ctx_id, strlen(ctx_id)}});
    return f->key ? 0 : -ENOMEM;
}

/* ---- completion ---- */

static void fetch_free(struct gale__fetch *f)
{
    free(f->url);
    free(f->method);
    free(f->body);
    gale_http_headers_free(&f->headers);
    free(f->header_bytes);
    free(f->user_agent);
    gale__url_free(&f->u);
    free(f->key);
    free(f->ca_certs);
    free(f->client_cert);
    free(f->client_key);
    gale__resp_inflate_end(f);
    if (f->resp)
        gale_http_client_response_free(&f->resp->pub);
    free(f);
}

static void deliver(gale_loop *loop, void *arg)
{
    struct gale__fetch *f = arg;
    struct gale__resp *r = f->resp;
    f->resp = NULL;
    if (f->future) {
        gale_future *fut = f->future;
        f->future = NULL;
        if (r->pub.error && (f->raise_error || r->pub.code == GALE_HTTP_NO_RESPONSE)) {
            gale_future_set_error(fut, r->pub.error, r->pub.error_message);
            gale_http_client_response_free(&r->pub);
        } else if (gale_future_set_result(fut, r, gale__resp_free_void) != 0) {
            gale_http_client_response_free(&r->pub);
        }
        gale_future_unref(fut);
    } else {
        f->cb(&r->pub, f->arg);
        if (!r->kept)
            gale_http_client_response_free(&r->pub);
    }
    fetch_free(f);
}

/* Detaches the fetch from its connection and closes the socket (the conn frees itself). */
static void detach(struct gale__fetch *f)
{
    struct gale__conn *cn = f->conn;
    if (!cn)
        return;
    f->conn = NULL;
    cn->f = NULL;
    if (cn->s) {
        gale__conn_set_state(cn, GALE__CONN_CLOSING);
        gale_stream_close(cn->s, 0);
    }
}

/* Ends a fetch with `err` (0: success with f->resp) and schedules its callback. */
void gale__fetch_finish(struct gale__fetch *f, int err, const char *msg)
{
    if (f->state == F_DONE)
        return;
    gale_http_client *c = f->client;
    enum gale__fetch_state was = f->state;
    f->state = F_DONE;
    if (f->timer) {
        gale_loop_remove_timeout(f->loop, f->timer);
        f->timer = 0;
    }
    gale__request_abort(f, err ? err : -ECANCELED);
    gale__resp_inflate_end(f);
    detach(f);
    if (c) {
        gale_list_unlink(&f->node);
        if (was == F_ACTIVE)
            c->n_active--;
        else if (was == F_QUEUED)
            c->n_queued--;
    }
    f->client = NULL;

    struct gale__resp *r = f->resp;
    bool keep_response = r && (err == 0 || err == GALE_EREDIRECTS);
    if (!keep_response) {
        /* A failure never carries a partial response: no truncated success is possible. */
        if (r)
            gale_http_client_response_free(&r->pub);
        r = f->resp = gale__resp_new();
    }
    if (r) {
        if (!keep_response)
            r->pub.code = GALE_HTTP_NO_RESPONSE;
        if (err == 0 && f->raise_error && (r->pub.code < 200 || r->pub.code > 299))
            err = GALE_EBADSTATUS;
        r->pub.error = err;
        r->pub.redirects = f->redirects;
        r->pub.reused_connection = f->reused;
        r->pub.request_time = gale_loop_time(f->loop) - f->t_start;
        r->url = strdup(f->url);
        r->pub.effective_url = r->url ? r->url : "";
        if (err) {
            if (err == GALE_EBADSTATUS)
                r->msg = gale__dup_printf("HTTP %d: %s", r->pub.code, r->pub.reason);
            else
                r->msg = strdup(msg ? msg : gale_strerror(err));
            r->pub.error_message = r->msg ? r->msg : gale_strerror(err);
            if (!keep_response)
                r->pub.reason = r->pub.error_message;
            gale_log_debug(GALE_LOG_GENERAL, "fetch %s failed: %s (%s)", f->url,
                           r->pub.error_message, gale_err_name(err));
        }
    }
    if (!r || gale_loop_add_callback(f->loop, deliver, f) != 0) {
        /* Out of memory: nothing sensible can be reported; drop the fetch quietly but log it. */
        gale_log_error(GALE_LOG_GENERAL, "fetch %s: out of memory delivering the response", f->url);
        if (f->future) {
            gale_future_set_error(f->future, -ENOMEM, NULL);
            gale_future_unref(f->future);
            f->future = NULL;
        }
        fetch_free(f);
    }
    if (c && !f->pump_later)
        pump(c);
}

/* ---- the queue ---- */

static void queue_timeout(gale_loop *loop, void *arg)
{
    struct gale__fetch *f = arg;
    f->timer = 0;
    gale__fetch_finish(f, -ETIMEDOUT, "Timeout in request queue");
}

static void start(struct gale__fetch *f)
{
    gale_http_client *c = f->client;
    if (f->timer) {
        gale_loop_remove_timeout(f->loop, f->timer);
        f->timer = 0;
    }
    if (f->state == F_QUEUED) {
        gale_list_unlink(&f->node);
        c->n_queued--;
    }
    f->state = F_ACTIVE;
    gale_list_push_back(&c->active, &f->node);
    c->n_active++;
    connect_phase(f);
}

/* Starts queued fetches while there is room. A start that fails at once finishes its fetch,
 * which calls pump() again: that nested call returns and this loop carries on, so a long queue
 * of failing requests never recurses deeply. */
static void pump(gale_http_client *c)
{
    if (c->pumping)
        return;
    c->pumping = true;
    while (!c->freeing && c->n_active < (size_t)c->max_clients && !gale_list_empty(&c->queue)) {
        struct gale__fetch *f = gale_list_entry(c->queue.next, struct gale__fetch, node);
        /* A connection for it is parking and will pump when pooled: starting now would open a
         * new one (a burst of completions would each open one). */
        if (is_idempotent(f->method) && !f->producer && gale__pool_should_wait(&c->pool, f->key))
            break;
        start(f);
    }
    c->pumping = false;
}

/* ---- the exchange ---- */

static void request_timeout(gale_loop *loop, void *arg)
{
    struct gale__fetch *f = arg;
    f->timer = 0;
    gale__fetch_finish(f, -ETIMEDOUT, "Timeout during request");
}

static void conn_free(struct gale__conn *cn)
{
    free(cn->key);
    free(cn);
}

static void open_conn(struct gale__fetch *f);

/* A request that failed on a reused connection before any byte of response arrived most likely
 * met a server closing that idle connection as the request left (RFC 9112 9.3.1): an idempotent
 * request is sent again, once, on a new connection. Returns true when it retried. */
static bool maybe_retry(struct gale__fetch *f, int err)
{
    if (!f->reused || f->retried || !f->retryable || f->head_bytes > 0 || f->state != F_ACTIVE)
        return false;
    if (err != GALE_EEOF && err != -ECONNRESET && err != -EPIPE)
        return false;
    gale_log_debug(GALE_LOG_GENERAL, "fetch %s: reused connection closed (%s), retrying once",
                   f->url, gale_err_name(err));
    f->retried = true;
    gale__request_abort(f, -ECANCELED);
    detach(f);
    open_conn(f);
    return true;
}

static void on_stream_close(gale_stream *s, int reason, void *arg)
{
    struct gale__conn *cn = arg;
    struct gale__fetch *f = cn->f;
    if (cn->state == GALE__CONN_PARKING) {
        cn->s = NULL; /* park_done frees it */
        return;
    }
    if (cn->state == GALE__CONN_IDLE)
        gale__pool_forget(cn);
    conn_free(cn);
    if (f) {
        /* The pending read normally reports the close first; this is the backstop. */
        f->conn = NULL;
        int err = reason ? reason : GALE_EEOF;
        if (!maybe_retry(f, err))
            gale__fetch_finish(f, err, "Connection closed");
    }
}

/* Writes the request on f->conn, then reads the response while the body (if streamed) goes. */
static void send_request(struct gale__fetch *f)
{
    int rc = gale__request_send(f);
    if (rc) {
        if (!maybe_retry(f, rc))
            gale__fetch_finish(f, rc, NULL);
        return;
    }
    read_head(f);
    if (f->conn)
        gale__request_start_body(f);
}

/* The TLS handshake of a new https connection ended: the request goes, or the fetch fails with
 * the reason ("certificate verify failed: self-signed certificate"). */
static void on_secured(gale_stream *s, int status, void *arg)
{
    struct gale__conn *cn = arg;
    struct gale__fetch *f = cn->f;
    if (!f)
        return; /* the fetch ended meanwhile; the stream's close frees the conn */
    if (status == 0) {
        send_request(f);
        return;
    }
    /* The stream closes by itself after a failed handshake; its close callback would report a
     * plain close, so the reason is reported here first. */
    char msg[200];
    const char *why = gale_stream_tls_error(s);
    snprintf(msg, sizeof msg, "TLS handshake with %s failed: %s", f->u.hostport,
             *why ? why : gale_strerror(status));
    cn->f = NULL;
    f->conn = NULL;
    gale__fetch_finish(f, status, msg);
}

static void on_connected(gale_stream *s, int status, void *arg)
{
    struct gale__conn *cn = arg;
    struct gale__fetch *f = cn->f;
    if (!f) {
        conn_free(cn);
        if (s)
            gale_stream_close(s, 0);
        return;
    }
    if (status) {
        f->conn = NULL;
        conn_free(cn);
        gale__fetch_finish(f, status, status == -ETIMEDOUT ? "Timeout while connecting" : NULL);
        return;
    }
    cn->s = s;
    gale__conn_set_state(cn, GALE__CONN_BUSY);
    gale_stream_set_close_cb(s, on_stream_close, cn);
    gale_stream_set_nodelay(s, true);
    if (f->u.tls) {
        int rc = gale_stream_start_tls(s, f->tls, f->u.host, on_secured, cn);
        if (rc) {
            gale_stream_close(s, rc); /* on_stream_close finishes the fetch */
        }
        return;
    }
    send_request(f);
}

/* Opens a new connection for `f`: the one place the client makes a connection (a secure
 * transport would start in on_connected, before the request). */
static void open_conn(struct gale__fetch *f)
{
    double ct = timeout_min(f->connect_timeout, f->request_timeout);
    struct gale__conn *cn = calloc(1, sizeof *cn);
    if (!cn || !(cn->key = strdup(f->key))) {
        free(cn);
        gale__fetch_finish(f, -ENOMEM, NULL);
        return;
    }
    cn->f = f;
    cn->state = GALE__CONN_CONNECTING;
    gale_list_init(&cn->node);
    f->conn = cn;
    f->reused = false;
    f->client->pool.opened++;
    int rc = gale_tcp_connect(f->loop, f->u.host, f->u.port, ct, on_connected, cn);
    if (rc) {
        f->conn = NULL;
        conn_free(cn);
        gale__fetch_finish(f, rc, NULL);
    }
}

static void connect_phase(struct gale__fetch *f)
{
    double now = gale_loop_time(f->loop);
    if (f->request_timeout > 0) {
        int rc =
            gale_loop_call_at(f->loop, now + f->request_timeout, request_timeout, f, &f->timer);
        if (rc) {
            gale__fetch_finish(f, rc, NULL);
            return;
        }
    }
    f->head_bytes = 0;
    f->body_got = 0;
    f->decoded = 0;
    f->trailer_bytes = 0;
    f->keep_alive = false;
    f->retried = false;
    f->upload = U_NONE;
    f->retryable = is_idempotent(f->method) && !f->producer;
    struct gale__conn *cn = f->retryable ? gale__pool_take(&f->client->pool, f->key) : NULL;
    if (!cn) {
        open_conn(f);
        return;
    }
    cn->f = f;
    f->conn = cn;
    f->reused = true;
    f->client->pool.reused++;
    send_request(f);
}

/* Why the connection may not carry another request once this response has been read, or NULL
 * when it may. */
static const char *not_reusable(const struct gale__fetch *f)
{
    const struct gale__conn *cn = f->conn;
    if (!f->keep_alive)
        return "the response ends the connection";
    if (!f->client || f->client->freeing || f->client->pool.max_per_host < 0)
        return "no pool";
    if (!cn->s || gale_stream_closed(cn->s))
        return "closed";
    if (gale_stream_write_pending(cn->s) > 0 || f->writing ||
        (f->upload != U_NONE && f->upload != U_DONE))
        return "request body not sent in full";
    return NULL;
}

/* The loop's next iteration after a response ended: the stream's read callback has returned, so
 * its read buffer is exact. Nothing past the response: the conn goes into the pool; else it is
 * closed. Then the queue moves (finish() left that to here, so the queued fetch finds the conn). */
static void park_done(gale_loop *loop, void *arg)
{
    struct gale__conn *cn = arg;
    struct gale__pool *p = gale__pool_unpark(cn);
    if (!cn->s) { /* the stream closed meanwhile */
        conn_free(cn);
    } else if (cn->state == GALE__CONN_PARKING &&
               !(p && !gale_stream_closed(cn->s) && gale_stream_read_buffered(cn->s) == 0 &&
                 gale__pool_put(p, cn))) {
        gale_log_debug(GALE_LOG_GENERAL, "connection to %s not kept: %s", cn->key,
                       p ? "bytes past the response" : "client freed");
        gale__conn_set_state(cn, GALE__CONN_CLOSING);
        gale_stream_close(cn->s, 0);
    }
    if (p)
        pump(gale_list_entry(p, gale_http_client, pool));
}

void gale__fetch_complete(struct gale__fetch *f)
{
    struct gale__conn *cn = f->conn;
    const char *why = cn ? not_reusable(f) : "no connection";
    if (why)
        gale_log_debug(GALE_LOG_GENERAL, "fetch %s: connection not kept: %s", f->url, why);
    if (cn && !why) {
        cn->f = NULL;
        if (gale__pool_park(&f->client->pool, cn, park_done) == 0) {
            f->conn = NULL;
            f->pump_later = true;
        } else {
            cn->f = f; /* out of memory: finish() closes it */
        }
    }
    if (f->redirects_left < 0)
        gale__fetch_finish(f, GALE_EREDIRECTS, "Too many redirects");
    else
        gale__fetch_finish(f, 0, NULL);
}
static bool is_redirect(int code)
{
    return code == 301 || code == 302 || code == 303 || code == 307 || code == 308;
}

/* Whether following a `code` redirect sends the request as a GET without its body. */
static bool redirect_drops_body(const struct gale__fetch *f, int code)
{
    bool is_head = strcmp(f->method, "HEAD") == 0;
    return (code == 303 && !is_head) ||
           ((code == 301 || code == 302) && !strcmp(f->method, "POST"));
}

/* Follows a redirect: same slot, new connection. Returns true if it took over the fetch. */
static bool follow_redirect(struct gale__fetch *f)
{
    size_t loclen;
    const char *loc = gale_http_headers_get(&f->resp->pub.headers, "Location", &loclen);
    char *locs = gale__dup_n(loc, loclen);
    char *next = locs ? gale__url_resolve(f->url, locs) : NULL;
    free(locs);
    if (!next) {
        gale__fetch_finish(f, -ENOMEM, NULL);
        return true;
    }
    struct gale__url u;
    int rc = gale__url_parse(next, &u);
    if (rc) {
        free(next);
        gale__fetch_finish(f, rc,
                           rc == GALE_ESCHEME ? "Redirect to an unsupported scheme"
                                              : "Redirect to a malformed URL");
        return true;
    }
    int code = f->resp->pub.code;
    gale__request_abort(f, -ECANCELED);
    gale__resp_inflate_end(f);
    detach(f);
    if (f->timer) {
        gale_loop_remove_timeout(f->loop, f->timer);
        f->timer = 0;
    }
    gale_http_client_response_free(&f->resp->pub);
    f->resp = NULL;
    free(f->url);
    f->url = next;
    gale__url_free(&f->u);
    f->u = u;
    if (set_key(f) != 0) {
        gale__fetch_finish(f, -ENOMEM, NULL);
        return true;
    }
    f->redirects++;
    f->redirects_left--;
    f->drop_host = true;
    /* As Tornado (and libcurl from 7.70) does: a 303 turns any method but HEAD into a GET, and
     * 301/302 turn a POST into one (what browsers do); other methods keep method and body. */
    if (redirect_drops_body(f, code)) {
        free(f->method);
        f->method = strdup("GET");
        if (!f->method) {
            gale__fetch_finish(f, -ENOMEM, NULL);
            return true;
        }
        free(f->body);
        f->body = NULL;
        f->body_len = 0;
        f->producer = NULL;
        f->drop_body_headers = true;
    }
    connect_phase(f);
    return true;
}

/* Decides how the body of f->resp is framed (f->mode; the length in *length for B_LENGTH).
 * Returns false when the response cannot be framed: the fetch has then finished with the error. */
static void on_head(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct gale__fetch *f = gale__conn_fetch(arg);
    if (!f)
        return;
    if (status) {
        if (!len && maybe_retry(f, status))
            return;
        gale__fail_read(f, status,
                        f->head_bytes || len ? "Connection closed inside the response headers"
                                             : "Connection closed without a response");
        return;
    }
    f->head_bytes += len;
    struct gale__resp *r = gale__resp_new();
    if (!r) {
        gale__fetch_finish(f, -ENOMEM, NULL);
        return;
    }
    if (f->resp)
        gale_http_client_response_free(&f->resp->pub);
    f->resp = r;
    bool http11 = false;
    int rc = gale__resp_parse_head(r, data, len, &http11);
    if (rc) {
        gale__fetch_finish(f, rc == -ENOMEM ? -ENOMEM : GALE_EHTTP,
                           "Malformed response status line or header");
        return;
    }
    int code = r->pub.code;
    if (code >= 100 && code < 200) {
        if (code == 101) {
            gale__fetch_finish(f, GALE_EHTTP, "Unexpected 101 Switching Protocols");
            return;
        }
        /* Interim response (100 Continue, 103 Early Hints): the real one follows. */
        gale_http_client_response_free(&r->pub);
        f->resp = NULL;
        read_head(f);
        if (code == 100 && f->conn)
            gale__request_continue(f);
        return;
    }
    /* A final answer before 100 Continue: the body is never sent (and the conn not reused). */
    if (f->upload == U_WAIT_CONTINUE)
        gale__request_abort(f, -ECANCELED);
    f->keep_alive = http11;

    size_t length = 0;
    if (!gale__resp_choose_framing(f, &length))
        return;
    /* A streamed body cannot be sent twice: a redirect that keeps the body is the answer. */
    if (f->follow_redirects && is_redirect(code) &&
        gale_http_headers_get(&r->pub.headers, "Location", NULL) &&
        (!f->producer || redirect_drops_body(f, code))) {
        if (f->redirects_left > 0) {
            follow_redirect(f);
            return;
        }
        /* Out of redirects: the 3xx itself is the answer, flagged. Its body is read below. */
        f->raise_error = false;
        f->streaming_cb = NULL;
        f->header_cb = NULL;
        f->redirects_left = -1;
    }
    if (f->header_cb) {
        struct gale__conn *cn = f->conn;
        f->header_cb(&r->pub, f->cb_arg);
        if (cn->f != f)
            return; /* the callback ended this fetch (freed the client) */
    }
    gale__resp_read_body(f, length);
}

static void read_head(struct gale__fetch *f)
{
    if (f->head_bytes >= f->max_header_size) {
        gale__fetch_finish(f, -EMSGSIZE, "Response header block too large");
        return;
    }
    int rc = gale_stream_read_until(f->conn->s, "\r\n\r\n", 4, f->max_header_size - f->head_bytes,
                                    on_head, f->conn);
    if (rc)
        gale__fetch_finish(f, rc, NULL);
}

/* ---- public API ---- */

void gale_http_client_request_init(gale_http_client_request *req, const char *url)
{
    if (!req)
        return;
    memset(req, 0, sizeof *req);
    req->url = url;
    req->method = "GET";
    req->connect_timeout = GALE_HTTP_CLIENT_DEFAULT_TIMEOUT;
    req->request_timeout = GALE_HTTP_CLIENT_DEFAULT_TIMEOUT;
    req->follow_redirects = true;
    req->max_redirects = GALE_HTTP_CLIENT_DEFAULT_MAX_REDIRECTS;
    req->raise_error = true;
    req->decompress_response = true;
    req->validate_cert = true;
}

int gale_http_client_new(gale_loop *loop, const gale_http_client_opts *opts, gale_http_client **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    gale_http_client_opts o = opts ? *opts : (gale_http_client_opts){0};
    if (o.max_clients < 0 || o.idle_timeout < 0 || isnan(o.idle_timeout))
        return -EINVAL;
    if (!loop)
        loop = gale_loop_current();
    if (!loop)
        return -ENOMEM;
    gale_http_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->loop = loop;
    c->max_clients = o.max_clients ? o.max_clients : GALE_HTTP_CLIENT_DEFAULT_MAX_CLIENTS;
    c->max_header_size =
        o.max_header_size ? o.max_header_size : GALE_HTTP_CLIENT_DEFAULT_MAX_HEADER;
    c->max_body_size = o.max_body_size ? o.max_body_size : GALE_HTTP_CLIENT_DEFAULT_MAX_BODY;
    c->user_agent = strdup(o.user_agent ? o.user_agent : DEFAULT_USER_AGENT);
    if (!c->user_agent) {
        free(c);
        return -ENOMEM;
    }
    gale_list_init(&c->queue);
    gale_list_init(&c->active);
    gale__pool_init(&c->pool, loop, o.max_idle_per_host ? o.max_idle_per_host : c->max_clients,
                    o.idle_timeout > 0 ? o.idle_timeout : GALE_HTTP_CLIENT_DEFAULT_IDLE_TIMEOUT);
    *out = c;
    return 0;
}

void gale_http_client_free(gale_http_client *c)
{
    if (!c)
        return;
    c->freeing = true;
    gale_list *lists[2] = {&c->active, &c->queue};
    for (int i = 0; i < 2; i++) {
        while (!gale_list_empty(lists[i])) {
            struct gale__fetch *f = gale_list_entry(lists[i]->next, struct gale__fetch, node);
            gale__fetch_finish(f, -ECANCELED, "HTTP client freed");
        }
    }
    gale__pool_drain(&c->pool);
    gale__client_tls_free(c);
    free(c->user_agent);
    free(c);
}

size_t gale_http_client_active(const gale_http_client *c) { return c ? c->n_active : 0; }
size_t gale_http_client_queued(const gale_http_client *c) { return c ? c->n_queued : 0; }

void gale_http_client_get_stats(const gale_http_client *c, gale_http_client_stats *out)
{
    if (!out)
        return;
    *out = (gale_http_client_stats){0};
    if (c) {
        out->idle = c->pool.n_idle;
        out->opened = c->pool.opened;
        out->reused = c->pool.reused;
    }
}

/* Copies the request into `f`. Returns 0, -ENOMEM, or -EINVAL for a header or method that would
 * let bytes be injected into the request. */
static int copy_request(struct gale__fetch *f, const gale_http_client *c,
                        const gale_http_client_request *req)
{
    const char *method = req->method ? req->method : "GET";
    f->url = strdup(req->url);
    f->method = strdup(method);
    f->user_agent = req->user_agent ? strdup(req->user_agent) : NULL;
    if (!f->url || !f->method || (req->user_agent && !f->user_agent))
        return -ENOMEM;
    if (req->body_producer) {
        if (req->body)
            return -EINVAL;
        f->producer = req->body_producer;
        f->producer_arg = req->producer_arg;
        f->body_len = req->body_len;
    } else if (req->body_len) {
        if (!req->body)
            return -EINVAL;
        f->body = malloc(req->body_len);
        if (!f->body)
            return -ENOMEM;
        memcpy(f->body, req->body, req->body_len);
        f->body_len = req->body_len;
    }
    size_t total = 0;
    for (size_t i = 0; i < req->headers.n; i++)
        total += req->headers.items[i].name.len + req->headers.items[i].value.len;
    f->header_bytes = req->headers.n ? malloc(total + 1) : NULL;
    if (req->headers.n && !f->header_bytes)
        return -ENOMEM;
    char *p = f->header_bytes;
    for (size_t i = 0; i < req->headers.n; i++) {
        const gale_http_header *h = &req->headers.items[i];
        if (h->value.len && !h->value.p)
            return -EINVAL;
        if (!h->name.p || !gale_http_is_token(h->name.p, h->name.len) ||
            !gale_http_is_field_value(h->value.p, h->value.len))
            return -EINVAL;
        memcpy(p, h->name.p, h->name.len);
        memcpy(p + h->name.len, h->value.p, h->value.len);
        if (gale_http_headers_add(&f->headers, p, h->name.len, p + h->name.len, h->value.len))
            return -ENOMEM;
        p += h->name.len + h->value.len;
    }
    if (!gale_http_is_token(method, strlen(method)))
        return -EINVAL;
    f->head_request = strcmp(method, "HEAD") == 0;
    f->connect_timeout =
        req->connect_timeout == 0 ? GALE_HTTP_CLIENT_DEFAULT_TIMEOUT : req->connect_timeout;
    f->request_timeout =
        req->request_timeout == 0 ? GALE_HTTP_CLIENT_DEFAULT_TIMEOUT : req->request_timeout;
    if (isnan(f->connect_timeout) || isnan(f->request_timeout))
        return -EINVAL;
    f->follow_redirects = req->follow_redirects;
    f->redirects_left =
        req->max_redirects > 0 ? req->max_redirects : GALE_HTTP_CLIENT_DEFAULT_MAX_REDIRECTS;
    f->raise_error = req->raise_error;
#ifdef GALE_HAVE_ZLIB
    f->decompress = req->decompress_response;
#endif
    f->expect_continue = req->expect_100_continue;
    bool oom = false;
    f->validate_cert = req->validate_cert;
    f->ca_certs = req->ca_certs ? strdup(req->ca_certs) : NULL;
    f->client_cert = req->client_cert ? strdup(req->client_cert) : NULL;
    f->client_key = req->client_key ? strdup(req->client_key) : NULL;
    oom = (req->ca_certs && !f->ca_certs) || (req->client_cert && !f->client_cert) ||
          (req->client_key && !f->client_key);
    if (oom)
        return -ENOMEM;
    f->max_header_size = c->max_header_size;
    f->max_body_size = req->max_body_size ? req->max_body_size : c->max_body_size;
    f->header_cb = req->header_cb;
    f->streaming_cb = req->streaming_cb;
    f->cb_arg = req->cb_arg;
    return 0;
}

static int fetch_common(gale_http_client *c, const gale_http_client_request *req,
                        gale_http_fetch_cb cb, void *arg, gale_future *future)
{
    /* malloc and memset rather than calloc, which skips malloc's per-thread cache: a fetch and
     * its response are allocated for every request. */
    struct gale__fetch *f = malloc(sizeof *f);
    if (!f)
        return -ENOMEM;
    memset(f, 0, sizeof *f);
    f->client = c;
    f->loop = c->loop;
    f->cb = cb;
    f->arg = arg;
    f->future = future;
    f->t_start = gale_loop_time(c->loop);
    f->state = F_NEW;
    gale_list_init(&f->node);
    int rc = copy_request(f, c, req);
    if (rc == 0)
        rc = gale__url_parse(f->url, &f->u);
    if (rc == 0)
        rc = set_key(f);
    if (rc == -ENOMEM || !f->url) {
        f->future = NULL;
        fetch_free(f);
        return -ENOMEM;
    }
    if (rc) {
        const char *msg = rc == GALE_ESCHEME ? "Unsupported URL scheme (http:// and https:// are)"
                          : rc == -EINVAL    ? "Malformed URL, method or header"
                          : rc == -ENOTSUP   ? "https:// needs TLS: gale was built without it"
                          : rc == GALE_ETLS  ? "Cannot load the CA or client certificate files"
                                             : NULL;
        f->client = NULL;
        gale__fetch_finish(f, rc, msg);
        return 0;
    }
    if (c->n_active < (size_t)c->max_clients && gale_list_empty(&c->queue)) {
        start(f);
        return 0;
    }
    f->state = F_QUEUED;
    gale_list_push_back(&c->queue, &f->node);
    c->n_queued++;
    double qt = timeout_min(f->connect_timeout, f->request_timeout);
    if (qt > 0) {
        rc = gale_loop_call_later(c->loop, qt, queue_timeout, f, &f->timer);
        if (rc) {
            gale_list_unlink(&f->node);
            c->n_queued--;
            f->future = NULL;
            fetch_free(f);
            return rc;
        }
    }
    return 0;
}

int gale_http_fetch(gale_http_client *c, const gale_http_client_request *req, gale_http_fetch_cb cb,
                    void *arg)
{
    if (!c || !req || !req->url || !cb || c->freeing)
        return -EINVAL;
    return fetch_common(c, req, cb, arg, NULL);
}

gale_future *gale_http_fetch_future(gale_http_client *c, const gale_http_client_request *req)
{
    if (!c)
        return NULL;
    gale_future *fut = gale_future_new(c->loop);
    if (!fut)
        return NULL;
    if (!req || !req->url || c->freeing) {
        gale_future_set_error(fut, -EINVAL, NULL);
        return fut;
    }
    gale_future_ref(fut); /* the fetch's reference */
    int rc = fetch_common(c, req, NULL, NULL, fut);
    if (rc) {
        gale_future_unref(fut);
        gale_future_set_error(fut, rc, NULL);
    }
    return fut;
}

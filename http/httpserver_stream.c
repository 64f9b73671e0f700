/* Streamed request bodies (what Tornado's @stream_request_body runs on): a request handed to the
 * application at the end of its head, its body delivered piece by piece as it arrives, with
 * flow control.
 *
 * The way through: at the end of a head with a body, start_body (httpserver_parse.c) asks the
 * server's head callback (gale__stream_wanted). A streamed request gets its body_stream and the
 * parser pauses on the head's last byte; gale__parse sees the pause (gale__stream_paused) and
 * hands the request over, the connection going to PH_STREAM under the body deadline. No byte of
 * the body is parsed before the reader starts (gale_http_request_read_body): until then the
 * connection takes no input (conn_parsing), so the body waits in the stream and TCP pushes back.
 * Each piece the parser reports goes to the reader (gale__stream_piece); a reader that pauses
 * pauses the parser right after that piece, the rest of the read stays in the stream, and no
 * read is pending until it resumes. The message's end (on_message_complete pauses there) moves
 * the connection to PH_HANDLER and tells the reader. A body that cannot go on (413, 400, 408) is
 * the reader's to answer (gale__stream_fail), and a response finished before its body ended
 * closes the connection after it, draining what the client still sends (gale__conn_answered):
 * the rest of a body is never parsed as a request.
 */
#include "http/server_internal.h"

#include <errno.h>
#include <math.h>

#include "core/log.h"

void gale_http_server_set_head_cb(gale_http_server *srv, gale_http_head_cb cb, void *arg)
{
    if (!srv)
        return;
    srv->head_cb = cb;
    srv->head_arg = cb ? arg : NULL;
}

int gale__stream_wanted(struct gale_http_conn *c, struct req *r, http_parser *p)
{
    gale_http_server *srv = c->srv;
    if (!srv->head_cb(&r->pub, srv->head_arg))
        return 0;
    struct body_stream *bs = gale_http_request_alloc(&r->pub, sizeof *bs); /* zeroed */
    if (!bs)
        return -ENOMEM;
    bs->chunked = (p->flags & F_CHUNKED) != 0;
    bs->length = bs->chunked ? 0 : p->content_length;
    bs->max = srv->opts.max_body_size;
    bs->expect = p->http_minor >= 1 &&
                 gale_http_headers_has_token(&r->pub.headers, "Expect", "100-continue");
    r->bs = bs;
    return 1;
}

/* The head is complete: the request goes to the application, its body still to come. */
static void stream_dispatch(struct gale_http_conn *c, struct req *r, size_t left)
{
    gale_http_server *srv = c->srv;
    assert(srv && !r->dispatched && r->rphase == R_BODY);
    c->batch->left = left;
    r->pub.start_time = c->batch->time; /* the head's arrival: the body deadline runs from it */
    r->dispatched = true;
    set_phase(c, PH_STREAM);
    c->deadline = 0;
    gale__conn_deadline_at(c, c->batch->time, srv->opts.body_timeout);
    c->busy++;
    srv->cb(&r->pub, srv->arg);
    c->busy--;
}

/* The body is complete: the reader is told, and the response is the handler's as for any
 * request. */
static void stream_complete(struct gale_http_conn *c, struct req *r, size_t left)
{
    struct body_stream *bs = r->bs;
    assert(bs->on_end && !bs->ended);
    bs->ended = true;
    set_phase(c, PH_HANDLER);
    c->deadline = 0;
    c->batch->left = left;
    r->pub.start_time = c->batch->time; /* as for a collected body: from its last bytes */
    c->busy++;
    bs->on_end(&r->pub, 0, bs->arg);
    c->busy--;
}

void gale__stream_paused(struct gale_http_conn *c, struct req *r, size_t left)
{
    if (!r->dispatched)
        stream_dispatch(c, r, left);
    else if (r->rphase == R_DONE && !r->bs->ended)
        stream_complete(c, r, left);
    /* else a pause after a piece: the input from the parser's position stays in the stream */
}

int gale__stream_piece(struct gale_http_conn *c, struct req *r, http_parser *p, const char *at,
                       size_t len)
{
    struct body_stream *bs = r->bs;
    assert(bs->on_piece && !bs->paused && !bs->ended);
    if (bs->received > bs->max || len > bs->max - bs->received)
        return 413;
    bs->received += len; /* (no piece_end: see on_message_complete) */
    bs->in_piece = true;
    bs->resumed = false;
    c->busy++;
    int rc = bs->on_piece(&r->pub, at, len, bs->arg);
    c->busy--;
    if (c->req != r) { /* the response finished: the request (and `bs`) may be gone */
        http_parser_pause(p, 1);
        return 0;
    }
    bs->in_piece = false;
    if ((rc == GALE_HTTP_BODY_PAUSE && !bs->resumed) || !conn_open(c)) {
        bs->paused = rc == GALE_HTTP_BODY_PAUSE && !bs->resumed;
        http_parser_pause(p, 1);
    }
    return 0;
}

static int status_errno(int status)
{
    switch (status) {
    case 413: return -EMSGSIZE;
    case 408: return -ETIMEDOUT;
    case 503: return -ENOMEM;
    default: return -EBADMSG;
    }
}

void gale__stream_fail(struct gale_http_conn *c, int status, const char *why)
{
    struct req *r = c->req;
    assert(r && r->bs && r->dispatched && c->phase == PH_STREAM);
    struct body_stream *bs = r->bs;
    c->deadline = 0;
    if (bs->ended)
        return;
    gale_log(GALE_LOG_INFO, GALE_LOG_GENERAL, "%s %s (%s): streamed body refused (%d): %s",
             r->pub.method, r->pub.uri, conn_ip(c), status, why ? why : "");
    bs->ended = true;
    bs->failed = status_errno(status);
    if (bs->on_end) {
        c->busy++;
        bs->on_end(&r->pub, bs->failed, bs->arg);
        c->busy--;
    }
}

void gale__stream_closed(struct req *r)
{
    struct body_stream *bs = r->bs;
    if (bs->ended)
        return;
    bs->ended = true;
    bs->failed = -EPIPE;
    if (bs->on_end)
        bs->on_end(&r->pub, -EPIPE, bs->arg);
}

/* ---- the API ---- */

bool gale_http_request_body_streamed(const gale_http_request *req)
{
    return req && req_of(req)->bs;
}

int gale_http_request_read_body(gale_http_request *req, gale_http_body_cb on_piece,
                                gale_http_body_end_cb on_end, void *arg)
{
    struct req *r = req_of(req);
    if (!r || !on_piece || !on_end || !r->bs)
        return -EINVAL;
    struct body_stream *bs = r->bs;
    struct gale_http_conn *c = r->conn;
    if (r->finished || bs->on_piece)
        return -EALREADY;
    if (r->closed || !conn_open(c))
        return -EPIPE;
    if (bs->failed)
        return bs->failed;
    if (!bs->chunked && bs->length > bs->max) {
        gale_log(GALE_LOG_INFO, GALE_LOG_GENERAL,
                 "%s %s (%s): Content-Length %llu over the body limit %zu", r->pub.method,
                 r->pub.uri, conn_ip(c), bs->length, bs->max);
        return -EMSGSIZE;
    }
    bs->on_piece = on_piece;
    bs->on_end = on_end;
    bs->arg = arg;
    /* The client waits for this before sending its body (RFC 9110 10.1.1). */
    if (bs->expect && !r->headers_sent && out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0 &&
        !c->in_batch)
        gale__conn_flush(c);
    /* Inside the connection's batch the bytes after the head are parsed on at once. */
    if (!c->in_batch)
        gale__conn_resume(c);
    return 0;
}

int gale_http_request_resume_body(gale_http_request *req)
{
    struct req *r = req_of(req);
    if (!r || !r->bs)
        return -EINVAL;
    struct body_stream *bs = r->bs;
    struct gale_http_conn *c = r->conn;
    if (r->finished)
        return -EALREADY;
    if (bs->in_piece) {
        bs->resumed = true; /* the piece's pause is taken back before it is made */
        return 0;
    }
    if (r->closed || !conn_open(c))
        return -EPIPE;
    if (!bs->paused)
        return 0;
    bs->paused = false;
    /* Within the batch, conn_on_read resumes reading at its end. */
    if (!c->in_batch)
        gale__conn_resume(c);
    return 0;
}

int gale_http_request_set_max_body_size(gale_http_request *req, size_t max)
{
    struct req *r = req_of(req);
    if (!r)
        return -EINVAL;
    if (!r->bs)
        return -EALREADY;
    r->bs->max = max;
    return 0;
}

int gale_http_request_set_body_timeout(gale_http_request *req, double seconds)
{
    struct req *r = req_of(req);
    if (!r || isnan(seconds) || seconds < 0)
        return -EINVAL;
    struct gale_http_conn *c = r->conn;
    if (!r->bs || r->bs->ended || r->finished || !conn_open(c) || c->phase != PH_STREAM)
        return -EALREADY;
    c->deadline = 0;
    gale__conn_deadline_at(c, r->pub.start_time, seconds);
    return 0;
}

/* Tornado's @stream_request_body for the web layer: a stream_request_body class reads its body in
 * data_received as it arrives, and its method runs after the last piece.
 *
 * The server hands such a request over at the end of its head (web.c's head callback says which
 * bodies are streamed); web.c runs set_default_headers, prepare and the checks as for any request,
 * then gives the request to gale__web_stream_begin in place of the method. From there the
 * handler is async (no finish when on_request returns) until the body ends: each piece goes to
 * data_received, which may pause the body (the server stops reading the connection) until
 * gale_body_resume; at the end the method runs with the class's own async rule
 * (gale__handler_method). A body that cannot be read on is answered here: 413 over the limit,
 * 408 past the deadline, 400 for broken chunked framing; a client that left gets
 * on_connection_close (web.c) and then the response is finished here. While data_received's
 * pause stands, those endings wait for gale_body_resume, so the handler is never released under
 * work it still has in flight.
 */
#include <errno.h>

#include "http/web.h"
#include "http/web_internal.h"

struct gale__web_stream {
    gale_handler *h;
    gale_handler_fn fn; /* the method, run once the body is complete */
    bool paused;        /* data_received paused the body; gale_body_resume not called yet */
    bool in_piece;      /* data_received is running */
    bool resumed;       /* gale_body_resume was called inside it */
    int pending;        /* how the body ended while paused (0: it did not) */
};

/* The status answering a body that ended with `err`. */
static int error_status(int err)
{
    switch (err) {
    case -EMSGSIZE: return 413;
    case -ETIMEDOUT: return 408;
    case -EBADMSG: return 400;
    case -ENOMEM: return 503;
    default: return 500;
    }
}

/* Ends a request whose body ended with `err`: a client that left only gets the finish (its
 * on_connection_close ran), any other error its status. */
static void end_early(gale_handler *h, int err)
{
    gale__handler_hold(h);
    if (!gale_finished(h)) {
        if (err == -EPIPE)
            gale_finish(h);
        else
            gale_send_error(h, error_status(err));
    }
    gale__handler_unhold(h); /* may release h */
}

static int on_piece(gale_http_request *req, const char *data, size_t len, void *arg)
{
    (void)req;
    struct gale__web_stream *ws = arg;
    gale_handler *h = ws->h;
    const gale_handler_class *cls = gale__handler_class(h);
    if (gale_finished(h) || !cls->data_received)
        return 0;
    gale__handler_hold(h);
    ws->in_piece = true;
    ws->resumed = false;
    int rc = cls->data_received(h, data, len);
    ws->in_piece = false;
    int pause = 0;
    if (rc < 0 && !gale_finished(h)) {
        gale_fail(h, rc);
    } else if (rc == GALE_BODY_PAUSE && !ws->resumed && !gale_finished(h)) {
        ws->paused = true;
        pause = GALE_HTTP_BODY_PAUSE;
    }
    gale__handler_unhold(h); /* may release h (and ws): a finish inside data_received */
    return pause;
}

static void on_end(gale_http_request *req, int status, void *arg)
{
    (void)req;
    struct gale__web_stream *ws = arg;
    gale_handler *h = ws->h;
    if (status == 0)
        gale__handler_method(h, ws->fn);
    else if (ws->paused)
        ws->pending = status; /* acted on at gale_body_resume */
    else
        end_early(h, status);
}

bool gale__web_stream_begin(gale_handler *h, gale_handler_fn fn)
{
    gale_http_request *req = gale_handler_request(h);
    if (!gale_http_request_body_streamed(req))
        return false;
    struct gale__web_stream *ws = gale_handler_alloc(h, sizeof *ws);
    if (!ws) {
        gale_fail(h, -ENOMEM);
        return true;
    }
    ws->h = h;
    ws->fn = fn;
    gale__handler_web(h)->stream = ws;
    gale_handler_async(h); /* finished at the body's end, by the method or by end_early */
    int rc = gale_http_request_read_body(req, on_piece, on_end, ws);
    if (rc < 0)
        end_early(h, rc);
    return true;
}

int gale_body_resume(gale_handler *h)
{
    struct gale__web_stream *ws = h ? gale__handler_web(h)->stream : NULL;
    if (!ws)
        return -EINVAL;
    if (ws->in_piece) {
        ws->resumed = true;
        return 0;
    }
    if (!ws->paused)
        return gale_finished(h) ? -EALREADY : 0;
    ws->paused = false;
    if (ws->pending) {
        int err = ws->pending;
        ws->pending = 0;
        end_early(h, err);
        return err;
    }
    int rc = gale_http_request_resume_body(gale_handler_request(h));
    return rc == -EPIPE ? 0 : rc; /* a close is on its way: on_end(-EPIPE) ends the request */
}

int gale_set_max_body_size(gale_handler *h, size_t max)
{
    return gale_http_request_set_max_body_size(gale_handler_request(h), max);
}

int gale_set_body_timeout(gale_handler *h, double seconds)
{
    return gale_http_request_set_body_timeout(gale_handler_request(h), seconds);
}

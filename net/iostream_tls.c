/* TLS streams: gale_stream_start_tls() turns a connected stream into a TLS stream with the same
 * API (Tornado's SSLIOStream and IOStream.start_tls). The record work is OpenSSL's (net/tls.c);
 * this file drives the handshake from the loop and answers what the stream asks of its TLS part.
 *
 * Handshake: while it runs the stream registers the interest OpenSSL asks for (read or write),
 * reads wait and writes queue; when it is done, queued writes leave, bytes OpenSSL already holds
 * (a request sent with the client's Finished) are read, and the start_tls callback runs from the
 * loop with 0. A failure closes the stream with its reason (GALE_ECERT for a certificate that
 * fails verification, GALE_ETLS for a protocol error or alert, -ECONNRESET for a peer gone
 * mid-handshake, -ETIMEDOUT at the deadline) and the callback gets it; gale_stream_tls_error()
 * says why in words. After the handshake, the stream's ordinary read and write paths run on
 * OpenSSL's records (net/iostream.c's receive() and send_iov()).
 *
 * Close: close_notify is sent if the handshake finished; when the socket does not take it at once
 * the loop finishes it (for up to 3 s, net/tls.c) while the stream closes as usual. OpenSSL's state
 * leaves with the fd; the error text and negotiated facts stay readable until the stream itself is
 * freed.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "net/iostream_internal.h"
#include "net/tls.h"
#include "net/tls_internal.h"

static void handshake_expired(gale_loop *loop, void *arg)
{
    gale_stream *s = arg;
    s->ext->handshake_timer = 0;
    if (s->closed || !s->handshaking)
        return;
    gale_log_debug(GALE_LOG_GENERAL, "stream fd %d: TLS handshake not done in time, closing",
                   s->fd);
    gale__stream_close_now(s, -ETIMEDOUT);
}

static void stop_timer(gale_stream *s)
{
    if (s->ext && s->ext->handshake_timer) {
        gale_loop_remove_timeout(s->loop, s->ext->handshake_timer);
        s->ext->handshake_timer = 0;
    }
}

/* The handshake finished: the owner's callback from the loop, then the stream's own I/O. */
static void handshake_done(gale_stream *s)
{
    s->handshaking = false;
    stop_timer(s);
    if (s->ext && s->ext->connect_cb) {
        s->ext->connect_status = 0;
        s->connect_pending = true;
        gale__stream_schedule(s);
        return; /* deferred_run calls back, then reads and writes as usual */
    }
    s->connect_pending = false;
    if (s->wq_head)
        gale__stream_handle_write(s);
    if (!s->closed && gale__tls_pending(s->tls))
        gale__stream_handle_read(s);
}

void gale__stream_tls_step(gale_stream *s)
{
    assert(s->handshaking && s->tls);
    int rc = gale__tls_handshake(s->tls);
    if (rc == 1) {
        handshake_done(s);
    } else if (rc != -EAGAIN) {
        gale_log_debug(GALE_LOG_GENERAL, "stream fd %d: TLS handshake failed: %s", s->fd,
                       gale__tls_error(s->tls));
        gale__stream_close_now(s, rc); /* a waiting start_tls callback gets `rc` */
    }
}

void gale__stream_tls_closing(gale_stream *s)
{
    stop_timer(s);
    s->handshaking = false;
    if (s->fd >= 0)
        gale_loop_remove_handler(s->loop, s->fd);
    if (gale__tls_close(s->tls, s->loop, s->fd))
        s->fd = -1; /* the loop finishes the close_notify, then closes the fd */
}

int gale_stream_start_tls(gale_stream *s, gale_tls_ctx *ctx, const char *server_hostname,
                          gale_done_cb cb, void *arg)
{
    if (!s || !ctx)
        return -EINVAL;
    if (!gale_tls_available())
        return -ENOTSUP;
    if (s->closed)
        return -EPIPE;
    if (s->tls || s->connecting || s->connect_pending || s->wq_head || s->read_kind != RK_NONE ||
        gale_buffer_len(&s->rbuf) > 0)
        return GALE_ESTATE; /* as Tornado: only on a connected stream with nothing under way */
    struct gale__stream_ext *x = gale__stream_ext(s);
    if (!x)
        return -ENOMEM;
    int rc = gale__tls_new(ctx, s->fd, server_hostname, &s->tls);
    if (rc < 0)
        return rc;
    s->handshaking = true;
    x->connect_cb = cb;
    x->connect_arg = arg;
    s->connect_pending = cb != NULL;
    double limit = gale_tls_handshake_timeout(ctx);
    if (limit > 0 &&
        gale_loop_call_later(s->loop, limit, handshake_expired, s, &x->handshake_timer) < 0) {
        gale__tls_free(s->tls);
        s->tls = NULL;
        s->handshaking = false;
        x->connect_cb = NULL;
        s->connect_pending = false;
        return -ENOMEM;
    }
    if (gale_tls_is_server(ctx))
        gale__stream_update_events(s); /* the client speaks first: wait for its hello */
    else
        gale__stream_tls_step(s); /* send the hello now */
    gale__stream_update_events(s);
    return 0;
}

bool gale_stream_is_tls(const gale_stream *s) { return s && s->tls; }

const char *gale_stream_tls_error(const gale_stream *s)
{
    return s && s->tls ? gale__tls_error(s->tls) : "";
}

const char *gale_stream_tls_alpn(const gale_stream *s)
{
    return s && s->tls ? gale__tls_alpn(s->tls) : "";
}

const char *gale_stream_tls_version(const gale_stream *s)
{
    return s && s->tls ? gale__tls_version(s->tls) : "";
}

bool gale_stream_tls_resumed(const gale_stream *s)
{
    return s && s->tls && gale__tls_resumed(s->tls);
}

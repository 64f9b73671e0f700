/* gale_tcp_connect_tls: Tornado's TCPClient.connect(..., ssl_options=..., server_hostname=...):
 * connect as gale_tcp_connect does, then run the TLS handshake on the stream, all within the one
 * timeout. The callback gets the stream once the handshake is done, or NULL and the error; a
 * verification failure is logged (INFO) with its reason, since the stream that knew it is gone. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "net/iostream_internal.h"
#include "net/tcpclient.h"
#include "net/tcpclient_internal.h"
#include "net/tls.h"

struct tls_attempt {
    gale_loop *loop;
    gale_tls_ctx *ctx;
    char *host;
    int port;
    double deadline; /* loop time; 0: none */
    gale_timeout timer;
    gale_stream *s; /* handshaking */
    gale_connect_cb cb;
    void *arg;
};

static void attempt_free(struct tls_attempt *t)
{
    if (t->timer)
        gale_loop_remove_timeout(t->loop, t->timer);
    gale_tls_unref(t->ctx);
    free(t->host);
    free(t);
}

static void handshake_over(gale_stream *s, int status, void *arg)
{
    struct tls_attempt *t = arg;
    t->s = NULL;
    if (status < 0)
        gale_log_info(GALE_LOG_GENERAL, "tls: %s:%d: %s", t->host, t->port,
                      *gale_stream_tls_error(s) ? gale_stream_tls_error(s) : gale_strerror(status));
    gale_connect_cb cb = t->cb;
    void *arg2 = t->arg;
    attempt_free(t);
    cb(status == 0 ? s : NULL, status, arg2); /* on failure the stream closes by itself */
}

static void expired(gale_loop *loop, void *arg)
{
    struct tls_attempt *t = arg;
    t->timer = 0;
    if (t->s)
        gale_stream_close(t->s, -ETIMEDOUT); /* handshake_over reports it */
}

static void tcp_connected(gale_stream *s, int status, void *arg)
{
    struct tls_attempt *t = arg;
    if (status == 0)
        status = gale_stream_start_tls(s, t->ctx, t->host, handshake_over, t);
    if (status == 0) {
        t->s = s;
        if (t->deadline > 0)
            gale_loop_call_at(t->loop, t->deadline, expired, t, &t->timer);
        return;
    }
    if (s)
        gale_stream_close(s, status);
    gale_connect_cb cb = t->cb;
    void *arg2 = t->arg;
    attempt_free(t);
    cb(NULL, status, arg2);
}

int gale_tcp_connect_tls(gale_loop *loop, const char *host, int port, double timeout,
                         gale_tls_ctx *ctx, gale_connect_cb cb, void *arg)
{
    if (!loop || !host || !cb || !ctx || isnan(timeout) || gale_tls_is_server(ctx))
        return gale_tls_available() || !ctx ? -EINVAL : -ENOTSUP;
    if (!gale_tls_available())
        return -ENOTSUP;
    struct tls_attempt *t = calloc(1, sizeof *t);
    if (!t || !(t->host = strdup(host))) {
        free(t);
        return -ENOMEM;
    }
    t->loop = loop;
    t->ctx = ctx;
    gale_tls_ref(ctx);
    t->port = port;
    t->cb = cb;
    t->arg = arg;
    if (timeout > 0)
        t->deadline = gale_loop_time(loop) + timeout;
    int rc = gale_tcp_connect(loop, host, port, timeout, tcp_connected, t);
    if (rc < 0)
        attempt_free(t);
    return rc;
}

gale_future *gale_tcp_connect_tls_future(gale_loop *loop, const char *host, int port,
                                         double timeout, gale_tls_ctx *ctx)
{
    gale_future *f = gale_future_new(loop);
    if (!f)
        return NULL;
    gale_future_ref(f);
    int err = gale_tcp_connect_tls(loop, host, port, timeout, ctx, gale__tcp_future_done, f);
    if (err) {
        gale_future_unref(f);
        gale_future_set_error(f, err, NULL);
    }
    return f;
}

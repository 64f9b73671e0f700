/* TCPClient: resolve, then try each address in turn under one overall deadline.
 *
 * Lifetime: the attempt holds one reference for the user's callback, one while the resolve is in
 * flight, and one per stream it created until that stream's close callback (which the stream
 * guarantees to run once, after any pending connect callback). So a timeout can report at once
 * and the late resolve or connect completion still finds the attempt alive. */
#include "net/tcpclient.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "net/resolver.h"

struct attempt {
    gale_loop *loop;
    gale_connect_cb cb;
    void *arg;
    int refs;
    bool reported;
    gale_timeout timer;
    struct sockaddr_storage *addrs;
    socklen_t *lens;
    size_t naddrs, next;
    gale_stream *current; /* the stream connecting now, NULL between tries */
    int last_error;
};

static void unref(struct attempt *a)
{
    if (--a->refs > 0)
        return;
    free(a->addrs);
    free(a->lens);
    free(a);
}

static void report(struct attempt *a, gale_stream *s, int status)
{
    if (a->reported)
        return;
    a->reported = true;
    if (a->timer) {
        gale_loop_remove_timeout(a->loop, a->timer);
        a->timer = 0;
    }
    a->cb(s, status, a->arg);
    unref(a);
}

static void try_next(struct attempt *a);

static void stream_closed(gale_stream *s, int status, void *arg)
{
    struct attempt *a = arg;
    if (a->current == s)
        a->current = NULL;
    unref(a);
}

static void connected(gale_stream *s, int status, void *arg)
{
    struct attempt *a = arg;
    if (a->reported || a->current != s)
        return; /* timed out meanwhile: the stream is being closed, stream_closed unrefs */
    if (status == 0) {
        /* Hand over: the stream is the user's now, with no close callback of ours. */
        a->current = NULL;
        gale_stream_set_close_cb(s, NULL, NULL);
        unref(a); /* the stream's reference */
        report(a, s, 0);
        return;
    }
    /* The stream closes itself after a failed connect; stream_closed drops its reference. */
    a->current = NULL;
    a->last_error = status;
    gale_log_debug(GALE_LOG_GENERAL, "connect: address %zu of %zu failed: %s", a->next,
                   a->naddrs, gale_strerror(status));
    try_next(a);
}

static void try_next(struct attempt *a)
{
    while (a->next < a->naddrs) {
        size_t i = a->next++;
        gale_stream *s = NULL;
        int err = gale_stream_connect(a->loop, (struct sockaddr *)&a->addrs[i], a->lens[i],
                                      connected, a, &s);
        if (err) {
            a->last_error = err;
            continue;
        }
        a->refs++;
        a->current = s;
        gale_stream_set_close_cb(s, stream_closed, a);
        return;
    }
    report(a, NULL, a->last_error ? a->last_error : GALE_ERESOLVE);
}

static void resolved(int status, const struct addrinfo *res, void *arg)
{
    struct attempt *a = arg;
    if (!a->reported) {
        if (status != 0) {
            report(a, NULL, status);
        } else {
            size_t n = 0;
            for (const struct addrinfo *p = res; p; p = p->ai_next)
                n++;
            a->addrs = calloc(n, sizeof *a->addrs);
            a->lens = calloc(n, sizeof *a->lens);
            if (!a->addrs || !a->lens) {
                report(a, NULL, -ENOMEM);
            } else {
                for (const struct addrinfo *p = res; p; p = p->ai_next) {
                    if (p->ai_addrlen > sizeof *a->addrs)
                        continue;
                    memcpy(&a->addrs[a->naddrs], p->ai_addr, p->ai_addrlen);
                    a->lens[a->naddrs++] = p->ai_addrlen;
                }
                try_next(a);
            }
        }
    }
    unref(a); /* the resolve's reference */
}

static void timed_out(gale_loop *loop, void *arg)
{
    struct attempt *a = arg;
    a->timer = 0;
    gale_stream *s = a->current;
    a->current = NULL;
    if (s)
        gale_stream_close(s, -ETIMEDOUT); /* frees the fd now; stream_closed unrefs later */
    report(a, NULL, -ETIMEDOUT);
}

int gale_tcp_connect(gale_loop *loop, const char *host, int port, double timeout,
                     gale_connect_cb cb, void *arg)
{
    if (!loop || !host || !cb || port < 0 || port > 65535 || isnan(timeout))
        return -EINVAL;
    struct attempt *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->loop = loop;
    a->cb = cb;
    a->arg = arg;
    a->refs = 2; /* the report and the resolve */
    int err = gale_resolve(loop, host, port, AF_UNSPEC, resolved, a);
    if (err) {
        free(a);
        return err;
    }
    if (timeout > 0) {
        err = gale_loop_call_later(loop, timeout, timed_out, a, &a->timer);
        if (err) {
            /* Out of memory for the timer: connect without a deadline rather than not at all. */
            a->timer = 0;
            gale_log_error(GALE_LOG_GENERAL, "connect: cannot arm timeout: %s",
                           gale_strerror(err));
        }
    }
    return 0;
}

static void close_stream_dtor(void *p) { gale_stream_close(p, 0); }

static void future_done(gale_stream *s, int status, void *arg)
{
    gale_future *f = arg;
    if (status == 0) {
        if (gale_future_set_result(f, s, close_stream_dtor) != 0)
            gale_stream_close(s, 0);
    } else {
        gale_future_set_error(f, status, NULL);
    }
    gale_future_unref(f);
}

gale_future *gale_tcp_connect_future(gale_loop *loop, const char *host, int port, double timeout)
{
    gale_future *f = gale_future_new(loop);
    if (!f)
        return NULL;
    gale_future_ref(f);
    int err = gale_tcp_connect(loop, host, port, timeout, future_done, f);
    if (err) {
        gale_future_unref(f);
        gale_future_set_error(f, err, NULL);
    }
    return f;
}

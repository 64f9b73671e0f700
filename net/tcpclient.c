/* TCPClient: resolve, then connect with Happy Eyeballs (RFC 6555, as Tornado's _Connector) under
 * one overall deadline.
 *
 * The addresses split into two chains: the family of the first address (primary) and the rest
 * (secondary). Each chain tries its addresses one after another. The primary starts at once; the
 * secondary starts GALE_CONNECT_FALLBACK_DELAY later, or as soon as the primary runs out. The first
 * connection up wins and the other chain's attempt is closed.
 *
 * Lifetime: the attempt holds one reference for the user's callback, one while the resolve (or
 * the deferred start) is pending, and one per stream it created until that stream's close
 * callback (which the stream runs once, after any pending connect callback). So a timeout can
 * report at once and a late resolve or connect completion still finds the attempt alive. Timers
 * hold no reference: report() removes them. */
#include "net/tcpclient.h"

#include "net/iostream_internal.h"
#include "net/tcpclient_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "net/resolver.h"

struct chain {
    size_t first, count, next; /* a range of attempt.addrs */
    gale_stream *current;      /* connecting now, NULL between tries */
    bool started;
};

struct attempt {
    gale_loop *loop;
    gale_connect_cb cb;
    void *arg;
    int refs;
    bool reported;
    gale_timeout timer;    /* overall deadline */
    gale_timeout fallback; /* starts the secondary chain */
    struct sockaddr_storage *addrs;
    socklen_t *lens;
    size_t naddrs;
    struct chain chains[2];
    int last_error;
};

/* Not inlined: once inlined into a caller that drops two references in a row (resolved() after
 * report()), gcc 12 cannot see that the first leaves one, and warns of a use after free. */
__attribute__((noinline)) static void unref(struct attempt *a)
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
    if (a->timer)
        gale_loop_remove_timeout(a->loop, a->timer);
    if (a->fallback)
        gale_loop_remove_timeout(a->loop, a->fallback);
    a->timer = a->fallback = 0;
    a->cb(s, status, a->arg);
    unref(a);
}

static void try_next(struct attempt *a, int ch);

static void start_chain(struct attempt *a, int ch)
{
    if (a->chains[ch].started)
        return;
    a->chains[ch].started = true;
    try_next(a, ch);
}

static void stream_closed(gale_stream *s, int status, void *arg)
{
    struct attempt *a = arg;
    for (int i = 0; i < 2; i++)
        if (a->chains[i].current == s)
            a->chains[i].current = NULL;
    unref(a);
}

static void connected(gale_stream *s, int status, void *arg)
{
    struct attempt *a = arg;
    int ch = a->chains[0].current == s ? 0 : a->chains[1].current == s ? 1 : -1;
    if (a->reported || ch < 0)
        return; /* lost the race or timed out: the stream is being closed, stream_closed unrefs */
    a->chains[ch].current = NULL;
    if (status == 0) {
        /* The other chain's attempt loses. */
        gale_stream *other = a->chains[!ch].current;
        a->chains[!ch].current = NULL;
        if (other)
            gale_stream_close(other, -ECANCELED);
        /* Hand over: the stream is the user's now, with no close callback of ours. */
        gale_stream_set_close_cb(s, NULL, NULL);
        unref(a); /* the stream's reference */
        report(a, s, 0);
        return;
    }
    /* The stream closes itself after a failed connect; stream_closed drops its reference. */
    a->last_error = status;
    gale_log_debug(GALE_LOG_GENERAL, "connect: address %zu of %zu failed: %s", a->chains[ch].next,
                   a->chains[ch].count, gale_strerror(status));
    try_next(a, ch);
}

static void try_next(struct attempt *a, int ch)
{
    struct chain *c = &a->chains[ch];
    while (c->next < c->count) {
        size_t i = c->first + c->next++;
        gale_stream *s = NULL;
        int err = gale_stream_connect(a->loop, (struct sockaddr *)&a->addrs[i], a->lens[i],
                                      connected, a, &s);
        if (err) {
            a->last_error = err;
            continue;
        }
        a->refs++;
        c->current = s;
        gale_stream_set_close_cb(s, stream_closed, a);
        return;
    }
    /* This chain ran out: the primary hands over to the secondary at once. */
    struct chain *other = &a->chains[!ch];
    if (ch == 0 && !other->started && other->count > 0) {
        start_chain(a, 1);
        return;
    }
    if (!other->current && (other->started || other->count == 0))
        report(a, NULL, a->last_error ? a->last_error : GALE_ERESOLVE);
}

static void fallback_due(gale_loop *loop, void *arg)
{
    struct attempt *a = arg;
    a->fallback = 0;
    start_chain(a, 1);
}

/* Copies the addresses, primary family first, and starts connecting. */
static int take_addresses(struct attempt *a, const struct addrinfo *res)
{
    size_t n = 0;
    for (const struct addrinfo *p = res; p; p = p->ai_next)
        n++;
    if (n == 0)
        return GALE_ERESOLVE;
    a->addrs = calloc(n, sizeof *a->addrs);
    a->lens = calloc(n, sizeof *a->lens);
    if (!a->addrs || !a->lens)
        return -ENOMEM;
    int primary = res->ai_family;
    for (int pass = 0; pass < 2; pass++) {
        a->chains[pass].first = a->naddrs;
        for (const struct addrinfo *p = res; p; p = p->ai_next) {
            if ((p->ai_family == primary) != (pass == 0) || p->ai_addrlen > sizeof *a->addrs ||
                !p->ai_addr)
                continue;
            memcpy(&a->addrs[a->naddrs], p->ai_addr, p->ai_addrlen);
            a->lens[a->naddrs++] = p->ai_addrlen;
        }
        a->chains[pass].count = a->naddrs - a->chains[pass].first;
    }
    return a->naddrs ? 0 : GALE_ERESOLVE;
}

static void begin(struct attempt *a)
{
    if (a->chains[1].count > 0 && gale_loop_call_later(a->loop, GALE_CONNECT_FALLBACK_DELAY,
                                                       fallback_due, a, &a->fallback) != 0)
        a->fallback = 0; /* no timer: the secondary starts when the primary runs out */
    start_chain(a, 0);
}

static void resolved(int status, const struct addrinfo *res, void *arg)
{
    struct attempt *a = arg;
    if (!a->reported) {
        int err = status ? status : take_addresses(a, res);
        if (err)
            report(a, NULL, err);
        else
            begin(a);
    }
    unref(a); /* the resolve's reference */
}

static void timed_out(gale_loop *loop, void *arg)
{
    struct attempt *a = arg;
    a->timer = 0;
    for (int i = 0; i < 2; i++) {
        gale_stream *s = a->chains[i].current;
        a->chains[i].current = NULL;
        if (s)
            gale_stream_close(s, -ETIMEDOUT); /* frees the fd now; stream_closed unrefs later */
    }
    report(a, NULL, -ETIMEDOUT);
}

static struct attempt *attempt_new(gale_loop *loop, gale_connect_cb cb, void *arg)
{
    struct attempt *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->loop = loop;
    a->cb = cb;
    a->arg = arg;
    a->refs = 2; /* the report and the pending start (resolve or deferred begin) */
    return a;
}

static void arm_deadline(struct attempt *a, double timeout)
{
    if (timeout > 0 && gale_loop_call_later(a->loop, timeout, timed_out, a, &a->timer) != 0) {
        /* Out of memory for the timer: connect without a deadline rather than not at all. */
        a->timer = 0;
        gale_log_error(GALE_LOG_GENERAL, "connect: cannot arm the timeout");
    }
}

int gale_tcp_connect(gale_loop *loop, const char *host, int port, double timeout,
                     gale_connect_cb cb, void *arg)
{
    if (!loop || !host || !cb || port < 0 || port > 65535 || isnan(timeout))
        return -EINVAL;
    struct attempt *a = attempt_new(loop, cb, arg);
    if (!a)
        return -ENOMEM;
    int err = gale_resolve(loop, host, port, AF_UNSPEC, resolved, a);
    if (err) {
        free(a);
        return err;
    }
    arm_deadline(a, timeout);
    return 0;
}

static void deferred_begin(gale_loop *loop, void *arg)
{
    struct attempt *a = arg;
    if (!a->reported)
        begin(a);
    unref(a);
}

int gale_tcp_connect_addrinfo(gale_loop *loop, const struct addrinfo *addrs, double timeout,
                              gale_connect_cb cb, void *arg)
{
    if (!loop || !addrs || !cb || isnan(timeout))
        return -EINVAL;
    struct attempt *a = attempt_new(loop, cb, arg);
    if (!a)
        return -ENOMEM;
    int err = take_addresses(a, addrs);
    if (!err)
        err = gale_loop_add_callback(loop, deferred_begin, a);
    if (err) {
        free(a->addrs);
        free(a->lens);
        free(a);
        return err == GALE_ERESOLVE ? -EINVAL : err;
    }
    arm_deadline(a, timeout);
    return 0;
}

void gale__tcp_future_done(gale_stream *s, int status, void *arg)
{
    gale_future *f = arg;
    if (status == 0) {
        if (gale__stream_set_future_result(f, s) != 0)
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
    int err = gale_tcp_connect(loop, host, port, timeout, gale__tcp_future_done, f);
    if (err) {
        gale_future_unref(f);
        gale_future_set_error(f, err, NULL);
    }
    return f;
}

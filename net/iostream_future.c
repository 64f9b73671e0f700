/* Future forms of the stream operations (see iostream.h): each one is the callback form with a
 * callback that completes a future. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/future.h"
#include "net/iostream.h"
#include "net/iostream_internal.h"

static gale_future *failed(gale_loop *loop, int rc)
{
    gale_future *f = gale_future_new(loop);
    if (f)
        gale_future_set_error(f, rc, NULL);
    return f;
}

static void read_done(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    gale_future *f = arg;
    if (status) {
        gale_future_set_error(f, status, NULL);
    } else {
        gale_stream_data *d = malloc(sizeof *d + len + 1);
        if (!d) {
            gale_future_set_error(f, -ENOMEM, NULL);
        } else {
            d->len = len;
            if (len)
                memcpy(d->data, data, len);
            d->data[len] = '\0';
            gale_future_set_result(f, d, free);
        }
    }
    gale_future_unref(f);
}

/* `rc` is what starting the operation returned: on an error its callback never runs, so drop the
 * callback's reference and complete the future now. */
static gale_future *started(gale_future *f, int rc)
{
    if (rc) {
        gale_future_unref(f);
        gale_future_set_error(f, rc, NULL);
    }
    return f;
}

static gale_future *new_pending(gale_stream *s)
{
    gale_future *f = gale_future_new(s ? gale_stream_loop(s) : NULL);
    return f ? gale_future_ref(f) : NULL; /* one for the caller, one for the callback */
}

gale_future *gale_stream_read_until_future(gale_stream *s, const void *delim, size_t dlen,
                                           size_t max_bytes)
{
    if (!s)
        return failed(NULL, -EINVAL);
    gale_future *f = new_pending(s);
    if (!f)
        return NULL;
    return started(f, gale_stream_read_until(s, delim, dlen, max_bytes, read_done, f));
}

gale_future *gale_stream_read_until_regex_future(gale_stream *s, const char *pattern,
                                                 size_t max_bytes)
{
    if (!s)
        return failed(NULL, -EINVAL);
    gale_future *f = new_pending(s);
    if (!f)
        return NULL;
    return started(f, gale_stream_read_until_regex(s, pattern, max_bytes, read_done, f));
}

gale_future *gale_stream_read_bytes_future(gale_stream *s, size_t n, bool partial)
{
    if (!s)
        return failed(NULL, -EINVAL);
    gale_future *f = new_pending(s);
    if (!f)
        return NULL;
    return started(f, gale_stream_read_bytes(s, n, partial, read_done, f));
}

gale_future *gale_stream_read_until_close_future(gale_stream *s)
{
    if (!s)
        return failed(NULL, -EINVAL);
    gale_future *f = new_pending(s);
    if (!f)
        return NULL;
    return started(f, gale_stream_read_until_close(s, read_done, f));
}

static void write_done(gale_stream *s, int status, void *arg)
{
    gale_future *f = arg;
    if (status)
        gale_future_set_error(f, status, NULL);
    else
        gale_future_set_result(f, NULL, NULL);
    gale_future_unref(f);
}

gale_future *gale_stream_write_future(gale_stream *s, const void *data, size_t len)
{
    if (!s)
        return failed(NULL, -EINVAL);
    gale_future *f = new_pending(s);
    if (!f)
        return NULL;
    return started(f, gale_stream_write(s, data, len, write_done, f));
}

static void connect_done(gale_stream *s, int status, void *arg)
{
    gale_future *f = arg;
    if (status)
        gale_future_set_error(f, status, NULL); /* the stream closes itself after a failure */
    else
        gale__stream_set_future_result(f, s);
    gale_future_unref(f);
}

gale_future *gale_stream_connect_future(gale_loop *loop, const struct sockaddr *addr,
                                        socklen_t addrlen)
{
    gale_future *f = gale_future_new(loop);
    if (!f)
        return NULL;
    gale_future_ref(f);
    gale_stream *s = NULL;
    int rc = gale_stream_connect(gale_future_loop(f), addr, addrlen, connect_done, f, &s);
    if (rc) {
        gale_future_unref(f);
        gale_future_set_error(f, rc, NULL);
    }
    return f;
}

/* ---- a stream as a future's result ---- */

static void future_stream_dtor(void *p)
{
    gale_stream *s = p;
    s->ext->owner_future = NULL;
    gale_stream_close(s, 0);
}

static void future_stream_unlink(void *p) { ((gale_stream *)p)->ext->owner_future = NULL; }

/* Linked before completing: a done callback may steal the stream (unlink clears the link) or
 * drop the last reference to the future (its dtor clears it). */
int gale__stream_set_future_result(gale_future *f, gale_stream *s)
{
    struct gale__stream_ext *x = gale__stream_ext(s);
    if (!x)
        return -ENOMEM;
    x->owner_future = f;
    int rc = gale_future_set_result_linked(f, s, future_stream_dtor, future_stream_unlink);
    if (rc)
        x->owner_future = NULL;
    return rc;
}

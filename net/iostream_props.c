/* A stream's properties and socket options: the read-only questions (closed, reading, the fd,
 * the peer's address...) and the settings that change no queued work (buffer cap, TCP_NODELAY,
 * the owner's close hook). The stream itself is iostream.c's. */
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "core/errors.h"
#include "net/iostream_internal.h"

bool gale_stream_closed(const gale_stream *s) { return !s || s->closed; }
bool gale_stream_reading(const gale_stream *s) { return s && s->read_kind != RK_NONE; }

int gale_stream_cancel_read_some(gale_stream *s, gale_consume_cb cb)
{
    if (!s || !cb)
        return -EINVAL;
    if (s->read_kind != RK_SOME || s->rcb.consume != cb || s->delivering)
        return GALE_ESTATE;
    s->read_kind = RK_NONE;
    s->rcb.consume = NULL;
    s->rarg = NULL;
    s->some_wait = 0;
    gale__stream_update_events(s);
    return 0;
}
bool gale_stream_writing(const gale_stream *s) { return s && s->wq_head != NULL; }
int gale_stream_close_reason(const gale_stream *s) { return s ? s->close_reason : -EINVAL; }
int gale_stream_fd(const gale_stream *s) { return s ? s->fd : -1; }
gale_loop *gale_stream_loop(const gale_stream *s) { return s ? s->loop : NULL; }
size_t gale_stream_read_buffered(const gale_stream *s) { return s ? gale_buffer_len(&s->rbuf) : 0; }

bool gale_stream_input_waiting(const gale_stream *s)
{
    if (!s || s->closed)
        return false;
    if (gale__stream_uring_received(s))
        return true;
    int n = 0;
    return s->fd >= 0 && ioctl(s->fd, FIONREAD, &n) == 0 && n > 0;
}

size_t gale_stream_write_unacked(const gale_stream *s)
{
    int n = 0;
    if (!s || s->closed || s->fd < 0 || ioctl(s->fd, SIOCOUTQ, &n) != 0 || n < 0)
        return 0;
    return (size_t)n;
}

int gale_stream_set_max_buffer_size(gale_stream *s, size_t max)
{
    if (!s || max == 0)
        return -EINVAL;
    int rc = gale_buffer_set_max(&s->rbuf, max);
    if (rc == 0)
        gale__stream_update_events(s);
    return rc;
}

void gale_stream_set_owner_hook(gale_stream *s, gale_stream_hook hook, void *arg)
{
    if (!s || s->finished)
        return;
    s->owner_hook = hook;
    s->owner_arg = arg;
}

int gale_stream_set_nodelay(gale_stream *s, bool on)
{
    if (!s)
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    int v = on ? 1 : 0;
    if (setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) < 0)
        return -errno;
    return 0;
}

int gale_stream_peer_addr(const gale_stream *s, struct sockaddr_storage *addr, socklen_t *len)
{
    if (!s || !addr || !len)
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    *len = sizeof *addr;
    if (getpeername(s->fd, (struct sockaddr *)addr, len) < 0)
        return -errno;
    return 0;
}

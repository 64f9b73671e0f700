/* A plain stream's reads as io_uring operations, on a uring loop (core/loop_uring.c).
 *
 * Instead of READ readiness followed by recv(), the stream keeps one receive operation in flight
 * while it wants bytes, with IOSQE_BUFFER_SELECT, so the kernel picks a buffer from the loop's
 * shared provided-buffer ring only when bytes arrive (an idle connection holds none). Each
 * completion is handled like one round of handle_read(): its bytes go straight to the pending
 * read, the rest into the stream's buffer, and the ring buffer goes back at once.
 *
 * The receive is multishot while the buffer has ample room (MSHOT_MARGIN; always, with the default
 * cap): it stays armed across requests, so a keep-alive connection costs no submission and no
 * re-armed poll per request. It is cancelled when the stream stops wanting bytes (no read pending
 * and the idle limit buffered, or the peer's FIN) and TCP pushes back from then on; what arrived
 * before the cancellation took effect is buffered. Otherwise (a small max_buffer_size) it is
 * one-shot, re-armed from update_events() and sized as handle_read() sizes its recv (the room left
 * under the cap, or under the idle limit when no read is pending): back-pressure is then the epoll
 * path's byte for byte. A one-shot receive after one that emptied the socket waits for readiness
 * first (POLL_FIRST) rather than trying a receive that would fail.
 *
 * The fd handler stays registered for everything else (WRITE, errors while not receiving), with
 * READ masked out. The first receive is armed from the stream's deferred callback, on the loop's
 * thread: a stream made before the loop runs, or handed to start_tls in the call that made it,
 * never has an operation that could read a TLS peer's bytes. A stream that is not a socket
 * (ENOTSOCK) goes back to readiness.
 *
 * Close: the operation holds a stream reference until its last completion; close_internal()
 * cancels it and has the cancellation submitted before the fd is closed (the operation holds the
 * file, so the peer would not see the close until then). Completions after the close only return
 * their buffer.
 */
#include "net/iostream_internal.h"

#ifdef GALE_HAVE_URING

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/errors.h"
#include "core/log.h"

enum {
    U_ON = 1,
    U_STARTED = 2,
    U_ARMED = 4,
    U_CANCEL = 8,
    U_SENDING = 16,
    U_DRAINED = 32, /* the last receive emptied the socket */
    U_MSHOT = 64,   /* the receive in flight is multishot */
};

/* A multishot receive is used while the buffer has at least this much room: it completes once per
 * arrival (up to a ring buffer each) until cancelled, and the cancellation takes effect a turn
 * later, so it may deliver more than the idle limit, or a socket's worth of bytes, before it stops.
 * The margin is above the largest receive window Linux grows to by default (tcp_rmem's 6 MiB), so
 * that overshoot is buffered, never the "buffer full" error; a stream with less room (a small
 * max_buffer_size) receives one sized operation at a time, as the epoll path does. */
#define MSHOT_MARGIN ((size_t)8 * 1024 * 1024)

/* Set for good (for the process) when the kernel refuses a multishot receive. */
static atomic_bool mshot_refused;

/* At most this many bytes per send. The kernel completes a stream socket's send only when all
 * its bytes have left (it retries short sends itself), so a slow reader would see no progress
 * (write callbacks, gale_stream_write_pending, the HTTP server's idle deadline) until the whole
 * queue had gone; a cap keeps progress visible, as the epoll path's partial send()s do. */
#define SEND_CAP ((size_t)256 * 1024)

/* A send in flight: the queue's buffers as one SEND (one buffer) or SENDMSG. The queued requests
 * stay where they are until the completion advances the queue, so the kernel reads memory the
 * stream still owns; the stream's close sequence waits for this completion (sending()). One of
 * up to POOLED_IOV buffers comes from the loop's kept records (gale__uring_rec_get), a larger
 * one from malloc. */
struct sendop {
    gale__uop op;
    gale_stream *s;
    int cnt;
    struct msghdr mh;
    struct iovec iov[];
};

#define POOLED_IOV 4
_Static_assert(sizeof(struct sendop) + POOLED_IOV * sizeof(struct iovec) <= GALE__URING_REC_SIZE,
               "a pooled send record fits the loop's records");

static struct sendop *sendop_new(gale_loop *loop, int cnt)
{
    if (cnt <= POOLED_IOV)
        return gale__uring_rec_get(loop);
    return malloc(sizeof(struct sendop) + (size_t)cnt * sizeof(struct iovec));
}

static void sendop_free(gale_loop *loop, struct sendop *o)
{
    if (o->cnt <= POOLED_IOV)
        gale__uring_rec_put(loop, o);
    else
        free(o);
}

static gale_stream *of_op(gale__uop *op)
{
    return (gale_stream *)((char *)op - offsetof(gale_stream, rop));
}

static size_t idle_limit(const gale_stream *s)
{
    return s->rbuf.max < GALE_STREAM_READ_CHUNK ? s->rbuf.max : GALE_STREAM_READ_CHUNK;
}

/* What handle_read() would offer recv() now. 1 when the buffer is full: a byte arriving then ends
 * the stream with -ENOBUFS, as on epoll. */
static unsigned recv_room(const gale_stream *s)
{
    size_t buffered = gale_buffer_len(&s->rbuf);
    size_t space = s->rbuf.max - buffered;
    size_t room = GALE__URING_BUF_SIZE;
    if (space == 0)
        return 1;
    if (room > space)
        room = space;
    if (s->read_kind == RK_NONE && buffered < idle_limit(s) && room > idle_limit(s) - buffered)
        room = idle_limit(s) - buffered;
    return (unsigned)room;
}

static void recv_done(gale__uop *op, int res, unsigned flags);

static bool mshot_fits(const gale_stream *s)
{
    return s->rbuf.max - gale_buffer_len(&s->rbuf) >= MSHOT_MARGIN &&
           !atomic_load_explicit(&mshot_refused, memory_order_relaxed);
}

static void arm(gale_stream *s)
{
    struct io_uring_sqe *sqe = gale__uring_sqe(s->loop, &s->rop);
    if (!sqe) {
        gale__stream_schedule(s); /* no queue entry now: the deferred callback tries again */
        return;
    }
    s->rop.cb = recv_done;
    if (mshot_fits(s)) {
        /* Length 0: each completion fills at most one ring buffer. */
        io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
        s->uring |= U_MSHOT;
    } else {
        io_uring_prep_recv(sqe, s->fd, NULL, recv_room(s), 0);
        s->uring &= (uint8_t)~U_MSHOT;
    }
    /* The last receive emptied the socket (it took less than it could): the next bytes are not
     * there yet (a client waits for this response), so the kernel waits for readiness without
     * first trying a receive that would fail. */
    if (s->uring & U_DRAINED)
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = GALE__URING_BGID;
    s->uring |= U_ARMED;
    s->refs++;
}

static void cancel(gale_stream *s)
{
    if ((s->uring & (U_ARMED | U_CANCEL)) != U_ARMED)
        return;
    if (gale__uring_cancel(s->loop, &s->rop) == 0)
        s->uring |= U_CANCEL;
}

/* One receive's bytes: handle_read()'s round with `data` as the scratch area. */
static void got(gale_stream *s, const char *data, size_t n)
{
    size_t buffered = gale_buffer_len(&s->rbuf);
    if (n > s->rbuf.max - buffered) {
        gale_log_info(GALE_LOG_GENERAL, "stream fd %d: read buffer full, closing", s->fd);
        gale__stream_close_now(s, -ENOBUFS);
        return;
    }
    if (buffered == 0) {
        gale__stream_deliver(s, data, n);
        return;
    }
    int rc = gale_buffer_append(&s->rbuf, data, n);
    if (rc < 0) {
        gale_log_warning(GALE_LOG_GENERAL, "stream fd %d: cannot buffer %zu bytes: %s", s->fd, n,
                         gale_strerror(rc));
        gale__stream_close_now(s, rc);
        return;
    }
    gale__stream_deliver(s, NULL, 0);
}

/* The peer's FIN: as handle_read() takes a recv() of 0. */
static void got_eof(gale_stream *s)
{
    s->peer_eof = true;
    if (gale_buffer_len(&s->rbuf) == 0 && !s->wq_head) {
        gale__stream_close_now(s, GALE_EEOF);
        return;
    }
    gale__stream_deliver(s, NULL, 0);
}

static void recv_done(gale__uop *op, int res, unsigned flags)
{
    gale_stream *s = of_op(op);
    char *data = NULL;
    unsigned bid = 0;
    if (flags & IORING_CQE_F_BUFFER) {
        bid = flags >> IORING_CQE_BUFFER_SHIFT;
        data = gale__uring_buf(s->loop, bid);
    }
    if (res > 0 && (unsigned)res < ((s->uring & U_MSHOT) ? GALE__URING_BUF_SIZE : recv_room(s)))
        s->uring |= U_DRAINED;
    else
        s->uring &= (uint8_t)~U_DRAINED;
    if (res == -EINVAL && (s->uring & U_MSHOT) && !(flags & IORING_CQE_F_MORE)) {
        /* A kernel without multishot receives: sized ones from now on. */
        atomic_store_explicit(&mshot_refused, true, memory_order_relaxed);
        res = -EAGAIN;
    }
    if (!(flags & IORING_CQE_F_MORE))
        s->uring &= (uint8_t) ~(U_ARMED | U_CANCEL | U_MSHOT);
    if (!s->closed) {
        if (res > 0 && !(s->uring & U_ON)) {
            gale_log_warning(GALE_LOG_GENERAL, "stream fd %d: bytes arrived before TLS started",
                             s->fd);
            gale__stream_close_now(s, -EPROTO);
        } else if (res > 0)
            got(s, data, (size_t)res);
        else if (res == 0)
            got_eof(s);
        else if (res == -ENOTSOCK)
            s->uring &= (uint8_t) ~(U_ON | U_STARTED); /* not a socket: readiness from now on */
        else if (res != -ENOBUFS && res != -ECANCELED && res != -EINTR && res != -EAGAIN)
            gale__stream_close_now(s, res);
    }
    if (data)
        gale__uring_buf_return(s->loop, bid);
    if (!s->closed)
        gale__stream_update_events(s);
    if (!(flags & IORING_CQE_F_MORE))
        gale__stream_unref(s);
}

static void send_done(gale__uop *op, int res, unsigned flags)
{
    struct sendop *o = (struct sendop *)op;
    gale_stream *s = o->s;
    (void)flags;
    sendop_free(s->loop, o);
    s->uring &= (uint8_t)~U_SENDING;
    if (!s->closed) {
        if (res > 0)
            gale__stream_advance(s, (size_t)res);
        else if (res < 0 && res != -EAGAIN && res != -EINTR && res != -ENOBUFS)
            gale__stream_close_now(s, res);
    }
    if (s->closed) {
        gale__stream_schedule(s); /* the close sequence waited for this completion */
    } else {
        gale__stream_handle_write(s); /* a half-closed peer: close once the queue has left */
        gale__stream_run_done(s);
        if (!s->closed)
            gale__stream_update_events(s);
    }
    gale__stream_unref(s);
}

/* Submits the queued buffers (up to the first file range) as one operation. */
static void arm_send(gale_stream *s)
{
    struct iovec iov[GALE__STREAM_MAX_IOV];
    int cnt = gale__stream_queue_iov(s, iov, GALE__STREAM_MAX_IOV);
    size_t total = 0;
    for (int i = 0; i < cnt; i++) {
        if (iov[i].iov_len >= SEND_CAP - total) {
            iov[i].iov_len = SEND_CAP - total;
            cnt = i + 1;
            break;
        }
        total += iov[i].iov_len;
    }
    if (cnt == 0) {
        /* Only empty requests (callbacks behind bytes that left): done now, from the loop. */
        gale__stream_advance(s, 0);
        gale__stream_schedule(s);
        return;
    }
    struct sendop *o = sendop_new(s->loop, cnt);
    if (!o) {
        gale__stream_close_now(s, -ENOMEM);
        return;
    }
    o->cnt = cnt;
    struct io_uring_sqe *sqe = gale__uring_sqe(s->loop, &o->op);
    if (!sqe) {
        sendop_free(s->loop, o);
        gale__stream_schedule(s);
        return;
    }
    o->op.cb = send_done;
    o->s = s;
    if (cnt == 1) {
        io_uring_prep_send(sqe, s->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        memcpy(o->iov, iov, (size_t)cnt * sizeof *iov);
        o->mh = (struct msghdr){.msg_iov = o->iov, .msg_iovlen = (size_t)cnt};
        io_uring_prep_sendmsg(sqe, s->fd, &o->mh, MSG_NOSIGNAL);
    }
    s->uring |= U_SENDING;
    s->refs++;
}

void gale__stream_uring_init(gale_stream *s)
{
    if (gale__uring_ready(s->loop, false)) {
        s->uring = U_ON;
        gale__stream_schedule(s);
    }
}

void gale__stream_uring_start(gale_stream *s)
{
    if ((s->uring & (U_ON | U_STARTED)) != U_ON)
        return;
    if (s->tls || !gale__uring_ready(s->loop, true))
        s->uring = 0;
    else
        s->uring |= U_STARTED;
}

unsigned gale__stream_uring_events(gale_stream *s, unsigned want)
{
    if (!(s->uring & U_STARTED))
        return want;
    if (!(want & GALE_READ) || ((s->uring & U_MSHOT) && !mshot_fits(s)))
        cancel(s); /* a multishot receive short of room is re-armed sized once it has ended */
    else if (!(s->uring & U_ARMED))
        arm(s);
    if ((want & GALE_WRITE) && !(s->uring & U_SENDING) && !gale__stream_head_is_file(s))
        arm_send(s);
    /* A file range at the head goes by readiness (sendfile), once no send is in flight. */
    if ((s->uring & U_SENDING) || !gale__stream_head_is_file(s))
        want &= ~(unsigned)GALE_WRITE;
    return want & ~(unsigned)GALE_READ;
}

bool gale__stream_uring_writes(const gale_stream *s)
{
    return (s->uring & U_SENDING) || ((s->uring & U_STARTED) && !gale__stream_head_is_file(s));
}

bool gale__stream_uring_sending(const gale_stream *s) { return s->uring & U_SENDING; }

bool gale__stream_uring_received(const gale_stream *s)
{
    return (s->uring & U_ARMED) && gale__uring_completed(s->loop, &s->rop) >= 0;
}

void gale__stream_uring_closing(gale_stream *s)
{
    if (!(s->uring & (U_ARMED | U_SENDING)))
        return;
    /* Submitted now, with the completions' effects, so the socket really closes when close()
     * returns: the receive is cancelled; a send queued this turn is made first, so a response
     * written just before the close leaves as it would have by send() on epoll, and only bytes
     * the socket cannot take at all are dropped (cancelled), as epoll drops its queue. */
    cancel(s);
    gale__uring_flush(s->loop);
    if (s->uring & U_SENDING) {
        struct io_uring_sqe *sqe = gale__uring_sqe(s->loop, NULL);
        if (sqe)
            io_uring_prep_cancel_fd(sqe, s->fd, IORING_ASYNC_CANCEL_ALL);
        gale__uring_flush(s->loop);
    }
}

bool gale__stream_uring_receiving(const gale_stream *s) { return s->uring & U_ARMED; }

void gale__stream_uring_stop(gale_stream *s)
{
    /* start_tls: OpenSSL reads the socket itself from now on. A receive in flight is cancelled
     * at once; bytes it took before the cancellation (a peer that sent its TLS hello without
     * waiting for the go-ahead) end the stream in recv_done, since they cannot be handed to
     * OpenSSL. */
    if (s->uring & U_ARMED) {
        cancel(s);
        gale__uring_flush(s->loop);
    }
    s->uring &= (uint8_t) ~(U_ON | U_STARTED);
}

#endif

/* The acceptor's accepts as io_uring operations, on a uring loop (core/loop_uring.c).
 *
 * Instead of READ readiness followed by a batch of accept4() calls, each listening socket keeps
 * one IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT in flight while the server accepts: the
 * kernel completes it once per connection (SOCK_NONBLOCK | SOCK_CLOEXEC), and each descriptor
 * goes through the path of an accept4() result (net/tcpserver.c, gale__server_accepted). The
 * multishot form reports no peer address (one buffer would be overwritten by the connections
 * accepted in one turn), so the server asks getpeername() for it.
 *
 * A multishot accept ends on an error (EMFILE, ENFILE, ...: a completion without
 * IORING_CQE_F_MORE): the server runs its EMFILE pause and retry, then arms a new one. It also
 * ends when the kernel says so without an error; it is then re-armed at once. Pauses
 * (max_connections, EMFILE) and stop cancel it: the cancellation is submitted at once
 * (gale__uring_flush), so a listener closed right after refuses the next connect.
 *
 * Fairness: each connection is one completion among the loop turn's others, so no per-turn bound
 * is needed (the readiness path bounds its accept4() loop so one event cannot hold the loop).
 *
 * Lifetime: a record holds a server reference until its operation's last completion; the server
 * forgets the record when it stops it, and the record frees itself.
 */
#include "net/tcpserver_internal.h"

#ifdef GALE_HAVE_URING

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/fault_internal.h"
#include "core/log.h"
#include "core/loop_uring_internal.h"

/* Records whose operation has not ended yet, so that they stay reachable (a program that stops
 * its server and exits without running or freeing the loop again leaves them to the kernel's
 * completion queue, not lost: leak checkers see them). */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static gale__uaccept *live_head;

struct gale__uaccept {
    gale__uop op;
    gale_loop *loop;
    gale_server *srv;
    struct io_uring_sqe *sqe; /* while it may still be unsubmitted (the ring not enabled yet) */
    int fd;
    bool armed;                 /* an operation is in flight, until its last completion */
    bool queued;                /* arm_later() will arm it */
    bool stopped;               /* the server let go of it */
    bool in_done;               /* inside its completion */
    bool in_stop;               /* its completions are dispatched from gale__uaccept_stop */
    gale__uaccept *prev, *next; /* in live_head */
};

static void finish(gale__uaccept *u)
{
    gale_server *srv = u->srv;
    pthread_mutex_lock(&live_lock);
    if (u->prev)
        u->prev->next = u->next;
    else
        live_head = u->next;
    if (u->next)
        u->next->prev = u->prev;
    pthread_mutex_unlock(&live_lock);
    free(u);
    gale__server_release(srv);
}

static void arm(gale__uaccept *u);

static void arm_later(gale_loop *loop, void *arg)
{
    gale__uaccept *u = arg;
    (void)loop;
    u->queued = false;
    if (u->stopped)
        finish(u);
    else
        arm(u);
}

static void done(gale__uop *op, int res, unsigned flags);

/* Submits the operation (from the loop's next submit), or schedules a new try when no queue entry
 * is free now. */
static void arm(gale__uaccept *u)
{
    struct io_uring_sqe *sqe = gale__uring_sqe(u->loop, &u->op);
    if (!sqe) {
        int err = gale_loop_add_callback(u->loop, arm_later, u);
        if (err)
            gale_log_error(GALE_LOG_GENERAL, "cannot accept on fd %d: %s", u->fd,
                           gale_strerror(err));
        else
            u->queued = true;
        return;
    }
    u->op.cb = done;
    io_uring_prep_multishot_accept(sqe, u->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    u->sqe = gale__uring_enabled(u->loop) ? NULL : sqe;
    u->armed = true;
}

/* Cancels the operation and has the cancellation submitted now. */
static void cancel(gale__uaccept *u)
{
    if (gale__uring_cancel(u->loop, &u->op) < 0) {
        gale__uring_flush(u->loop); /* the queue was full: make room */
        (void)gale__uring_cancel(u->loop, &u->op);
    }
    gale__uring_flush(u->loop);
}

/* Under fault injection: the error the plan puts after this completion (0: none). A real
 * multishot accept fails only as its last completion, so a fault on one that goes on cancels it:
 * the connection it carries is still served, then the error is handled as the operation's end,
 * and the operation is re-armed after its real last completion (-ECANCELED, or connections it
 * accepted before the cancellation took effect, served as usual). */
static int injected_error(gale__uaccept *u, int res, bool last)
{
#ifdef GALE_FAULT_INJECTION
    if (res < 0 || u->stopped)
        return 0;
    size_t cut = 0;
    gale_fault_kind kind = gale__fault_decide(GALE_FAULT_ACCEPT, 0, &cut);
    if (kind == GALE_FAULT_NONE || kind == GALE_FAULT_SHORT)
        return 0;
    if (!last)
        cancel(u);
    return gale__fault_errno(GALE_FAULT_ACCEPT, kind);
#else
    (void)u, (void)res, (void)last;
    return 0;
#endif
}

static void done(gale__uop *op, int res, unsigned flags)
{
    gale__uaccept *u = (gale__uaccept *)op;
    bool last = !(flags & IORING_CQE_F_MORE);
    u->sqe = NULL;
    if (last)
        u->armed = false;
    u->in_done = true;
    int fault = injected_error(u, res, last);
    if (res >= 0 && u->in_stop)
        close(res); /* taken while the listener closes: reset, as a backlog is by close() */
    else if (res >= 0)
        gale__server_accepted(u->srv, res);
    if (fault && !u->stopped)
        gale__server_accept_failed(u->srv, u->fd, fault, true);
    else if (res == -EINVAL && !u->stopped) {
        gale_log_info(GALE_LOG_GENERAL, "accept: no multishot accept here; watching readiness");
        gale__server_uring_off(u->srv);
    } else if (res < 0 && res != -ECANCELED && !u->stopped)
        gale__server_accept_failed(u->srv, u->fd, res, false);
    u->in_done = false;
    if (!last)
        return;
    if (u->stopped)
        finish(u);
    else
        arm(u);
}

void gale__uaccept_take(gale__uaccept *u)
{
    if (!u || !u->armed)
        return;
    gale__uring_flush(u->loop); /* the kernel's accepts that wait as deferred work happen now */
    gale__uring_dispatch_now(u->loop, &u->op);
}

bool gale__uaccept_usable(gale_loop *loop) { return gale__uring_ready(loop, false); }

int gale__uaccept_start(gale_loop *loop, gale_server *srv, int fd, gale__uaccept **out)
{
    gale__uaccept *u = calloc(1, sizeof *u);
    if (!u)
        return -ENOMEM;
    u->loop = loop;
    u->srv = srv;
    u->fd = fd;
    pthread_mutex_lock(&live_lock);
    u->next = live_head;
    if (live_head)
        live_head->prev = u;
    live_head = u;
    pthread_mutex_unlock(&live_lock);
    gale__server_hold(srv);
    arm(u);
    *out = u;
    return 0;
}

void gale__uaccept_stop(gale__uaccept *u)
{
    if (!u || u->stopped)
        return;
    u->stopped = true;
    if (u->armed && u->sqe && !gale__uring_enabled(u->loop)) {
        /* Never submitted (the loop has not run): the entry becomes a no-op. */
        io_uring_prep_nop(u->sqe);
        io_uring_sqe_set_data64(u->sqe, 0);
        u->armed = false;
    } else if (u->armed) {
        cancel(u);
        /* Its last completion, when the kernel posted it already, is taken now, so the record
         * and the server it holds go now rather than at the next loop turn. Not from inside its
         * own completion, which finishes it. */
        if (!u->in_done) {
            u->in_stop = true;
            gale__uring_dispatch_now(u->loop, &u->op); /* may free u */
        }
        return;
    }
    if (!u->queued && !u->in_done)
        finish(u);
}

#endif

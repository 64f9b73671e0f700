/* The acceptor's private helpers shared by its files (not installed). */
#ifndef GALE_NET_TCPSERVER_INTERNAL_H
#define GALE_NET_TCPSERVER_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "core/loop.h"
#include "net/tcpserver.h"

/* net/tcpserver_reuseport.c: a listening socket of its own per prefork worker.
 *
 * A socket bound with SO_REUSEPORT (a worker's copy of the supervisor's bound-only socket) is
 * replaced by a new one bound to the same address with the same options (SO_REUSEADDR,
 * SO_REUSEPORT, IPV6_V6ONLY for IPv6, non-blocking, close-on-exec): listening with `backlog`
 * when `listen_too`, else only bound, which keeps the port without taking connections (the
 * kernel hands new connections only to the listening sockets of a reuseport group). The old
 * descriptor is closed in this process once the new one is in place. Returns the new descriptor
 * or a negative errno (then `fd` is left as it was). */
int gale__reuseport_rebind(int fd, bool listen_too, int backlog);

/* ---- net/tcpserver_uring.c: accepts as io_uring operations, on a uring loop ----
 *
 * One IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT per listening socket replaces the readiness
 * handler. A record holds a reference on its server (gale__server_hold) from gale__uaccept_start
 * until its operation's last completion, so the server outlives it. Everything runs on the
 * loop's thread. */
typedef struct gale__uaccept gale__uaccept;

#ifdef GALE_HAVE_URING
/* True when accepts on `loop` go as operations (a uring loop with its operations interface). */
bool gale__uaccept_usable(gale_loop *loop);

/* Starts accepting on listening socket `fd` for `srv`: the operation is queued now and submitted
 * by the loop's next submit (before the loop first runs, by its first wait, on its thread: a
 * server stopped before that turns the entry into a no-op). Returns the record in `*out` and 0,
 * or -ENOMEM. */
int gale__uaccept_start(gale_loop *loop, gale_server *srv, int fd, gale__uaccept **out);

/* The server no longer wants `u` (NULL: nothing): its operation is cancelled and the cancellation
 * submitted now, so the socket may be closed at once and a new connect is refused. The record
 * frees itself at its last completion; the caller forgets it. */
void gale__uaccept_stop(gale__uaccept *u);

/* Hands the connections the operation accepted and whose completions wait in the queue to the
 * server now (gale_server_accept_pending: a server about to stop takes them rather than close
 * them). The record may be freed meanwhile if the server stopped it. */
void gale__uaccept_take(gale__uaccept *u);
#else
static inline bool gale__uaccept_usable(gale_loop *loop)
{
    (void)loop;
    return false;
}
static inline int gale__uaccept_start(gale_loop *loop, gale_server *srv, int fd,
                                      gale__uaccept **out)
{
    (void)loop, (void)srv, (void)fd, (void)out;
    return -ENOTSUP;
}
static inline void gale__uaccept_stop(gale__uaccept *u) { (void)u; }
static inline void gale__uaccept_take(gale__uaccept *u) { (void)u; }
#endif

/* ---- net/tcpserver.c, for net/tcpserver_uring.c ---- */

/* A reference on `srv` that keeps its memory (not its sockets) alive: the server is freed when
 * the user freed it and the last reference goes. */
void gale__server_hold(gale_server *srv);
void gale__server_release(gale_server *srv);

/* Connection `c` accepted (peer address read with getpeername): handled as an accept4() result.
 * A server that stopped accepting meanwhile closes it. */
void gale__server_accepted(gale_server *srv, int c);

/* An accept on listening socket `fd` failed with `err` (a negative errno; `injected`: by the
 * fault seam) and its operation ended: the EMFILE pause (which stops the operations), or nothing
 * (EINTR, ECONNABORTED, EAGAIN) or a log line, after which the caller re-arms it. */
void gale__server_accept_failed(gale_server *srv, int fd, int err, bool injected);

/* Accepts go by readiness from now on (the kernel has no multishot accept, or the server got a
 * connection limit): the operations are stopped. */
void gale__server_uring_off(gale_server *srv);

#endif

/* gale TCP server: the acceptor (Tornado's TCPServer, netutil.bind_sockets and
 * process.fork_processes).
 *
 * A server owns listening sockets registered on a loop. Each readiness event accepts a bounded
 * batch (at most GALE_ACCEPT_BATCH connections) with accept4(SOCK_NONBLOCK | SOCK_CLOEXEC), wraps
 * each in a gale_stream and calls the accept callback (Tornado's handle_stream). Under EMFILE or
 * ENFILE the server stops watching its sockets, logs once per episode, frees its spare descriptor
 * to accept-and-close one waiting client (so clients fail fast instead of waiting in the backlog),
 * and retries on a timer: the loop never spins.
 *
 * Connection limit: with gale_server_set_max_connections(n) the server stops accepting while n of
 * the streams it accepted are open (counted from accept until their close callback has run), so
 * further clients wait in the kernel's listen backlog instead of being accepted and dropped; it
 * accepts again as soon as one closes. One warning per episode (an episode ends when an accept
 * below the limit finds nobody waiting).
 */
#ifndef GALE_NET_TCPSERVER_H
#define GALE_NET_TCPSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/loop.h"
#include "net/iostream.h"
#include "net/tls.h"

#define GALE_ACCEPT_BATCH 128
#define GALE_DEFAULT_BACKLOG 128

typedef struct gale_server gale_server;

/* A new connection. Ownership: the stream is the callback's (close it or keep it). `peer` is
 * valid during the call. */
typedef void (*gale_accept_cb)(gale_server *srv, gale_stream *s, const struct sockaddr *peer,
                               socklen_t peerlen, void *arg);

/* Binds listening sockets for every address getaddrinfo returns for (`address`, `port`) — NULL
 * address: all interfaces — in `family` (AF_UNSPEC, AF_INET, AF_INET6; v6 sockets get
 * IPV6_V6ONLY), with SO_REUSEADDR, optional SO_REUSEPORT, non-blocking and close-on-exec. Port 0
 * picks a free port once and binds every family to that same port. Stores up to `max` fds in
 * `fds` and the count in `*n`. Returns 0 or a negative errno (nothing is left open on failure). */
int gale_bind_sockets(int port, const char *address, int family, int backlog, bool reuse_port,
                      int *fds, size_t max, size_t *n);

/* Binds a listening unix socket at `path` with permissions `mode`. A stale socket file (nobody
 * listening) is replaced; another kind of file gives -EEXIST, and a socket a process still
 * listens on -EADDRINUSE (found by connecting to it: that process sees one connection open and
 * close). Returns the fd or a negative errno; a failure after the bind removes the socket file it
 * made, so nothing is left behind. */
int gale_bind_unix_socket(const char *path, int mode, int backlog);

/* Creates a server on `loop` calling `cb` per connection. `loop` may be NULL: the server then uses
 * gale_loop_current() of the thread where it starts accepting (add_socket, listen or start). Pass
 * NULL for bind + start(n > 1): each forked worker must create its own loop after the fork (an
 * epoll instance created before fork() is shared by all the workers). A spare descriptor is
 * reserved here for the EMFILE case. Returns 0, -EINVAL (NULL cb or out), -ENOMEM. */
int gale_server_new(gale_loop *loop, gale_accept_cb cb, void *arg, gale_server **out);

/* Adds a listening socket (the server takes ownership; it is made non-blocking) and starts
 * accepting on it. Returns 0, -EINVAL, -ENOSPC (16 sockets already), -ENOMEM (no loop), or the
 * loop's error for the fd. */
int gale_server_add_socket(gale_server *srv, int fd);

/* bind_sockets(port, address, AF_UNSPEC, 128, false) + add_socket for each. Returns 0 or a
 * negative errno. */
int gale_server_listen(gale_server *srv, int port, const char *address);

/* Binds sockets without accepting yet, for gale_server_start() (Tornado's bind()). With
 * `reuse_port` (before accepting) the sockets are bound but not listening until start: start(1)
 * makes them listen, start(n > 1) gives each worker listening sockets of its own (see there), so
 * no client is queued on a socket that is about to be replaced. Returns 0, -EINVAL (a bind
 * without `reuse_port` after one with it, before start), or bind_sockets' errors. */
int gale_server_bind(gale_server *srv, int port, const char *address, int family, int backlog,
                     bool reuse_port);

/* Tornado's start(n): with n == 1 starts accepting in this process; otherwise forks n workers
 * (n <= 0: one per CPU) through gale_fork_processes() before any loop work, and each worker
 * accepts on the inherited sockets. Returns 0 in the process that should now run the loop, or a
 * negative errno (-ENOTCONN: nothing bound; -EALREADY: already accepting). Call it before
 * creating threads or running the loop; the supervising parent never returns (see
 * gale_fork_processes). The parent keeps its copies of the listening sockets only to restart
 * workers: on the first SIGTERM/SIGINT it closes them before forwarding the signal, so once the
 * workers have closed theirs (a graceful drain) new clients are refused rather than left in a
 * backlog nobody accepts from. Sockets bound with `reuse_port` (gale_server_bind) are not shared:
 * the parent keeps them bound but never listening (they hold the port and take no connections),
 * and each worker listens on sockets of its own at the same addresses (SO_REUSEPORT), so the
 * kernel spreads new connections over the workers instead of every worker waking for one queue;
 * a worker that cannot make them returns the error here (and exits; the parent restarts it). */
int gale_server_start(gale_server *srv, int nprocs);

/* The local port of the first listening socket (useful after binding port 0), or a negative
 * errno. */
int gale_server_port(const gale_server *srv);

/* Accepts, now, the clients already waiting in the listening sockets' backlogs (bounded: at most
 * 64 batches per socket; the connection limit still applies), so a graceful shutdown can answer
 * them instead of resetting them when it closes the sockets. Each goes to the accept callback as
 * usual. Returns how many were accepted, or -EINVAL. */
int gale_server_accept_pending(gale_server *srv);

/* Stops accepting and closes the listening sockets; existing connections are untouched. */
void gale_server_stop(gale_server *srv);

/* Stops and frees the server. Legal inside the accept callback (the rest of the batch is not
 * accepted; the memory goes when the callback returns). Connections already accepted are
 * untouched; the server's memory goes when the last of them has closed. */
void gale_server_free(gale_server *srv);

/* Caps the connections this server has accepted and that are still open at `n` (0: no cap, the
 * default). At the cap the server stops watching its listening sockets, so new clients wait in
 * the kernel backlog (then the kernel's SYN queue) rather than being accepted and dropped; the
 * first close resumes accepting. Lowering the cap below the current count closes nothing. Logs a
 * warning once per episode. Returns 0 or -EINVAL. */
int gale_server_set_max_connections(gale_server *srv, size_t n);

/* Tornado's ssl_options: every connection accepted from now on speaks TLS with the server
 * context `ctx` (net/tls.h; the server takes a reference; NULL: plain again). The accept callback
 * gets the stream at once, its handshake under way: reads and writes wait for it, and a failed
 * handshake closes the stream (its close callback says why). Returns 0, -EINVAL (a client
 * context), -ENOTSUP (built without TLS). */
int gale_server_set_tls(gale_server *srv, gale_tls_ctx *ctx);

/* Connections accepted by this server whose close callback has not yet run. */
size_t gale_server_connections(const gale_server *srv);

/* Tornado's fork_processes: forks `n` children (n <= 0: one per CPU) and returns each child's
 * task id (0..n-1) in the child. The parent supervises: it restarts a child that dies abnormally
 * (signal or non-zero exit) with the same task id, up to `max_restarts` in total; forwards
 * SIGTERM/SIGINT to the children; and exits when they have all exited (0 if all exited cleanly).
 * A child killed by the forwarded signal counts as clean. The parent never returns: it calls
 * exit(). Returns the task id in each child, or a negative errno in the caller if the first forks
 * fail (-EALREADY if this process is already a forked child). Call before creating any loop or
 * thread. */
int gale_fork_processes(int n, int max_restarts);

/* This process's task id after gale_fork_processes(), or -1 when not forked. */
int gale_task_id(void);

#endif

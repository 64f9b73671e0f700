/* The acceptor: listening sockets, a bounded accept batch per readiness event (on a uring loop,
 * accepts as operations instead: net/tcpserver_uring.c), the EMFILE pause with a spare descriptor,
 * and Tornado's fork_processes supervisor. */
#include "net/tcpserver.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/fault_internal.h"
#include "core/log.h"
#include "net/resolver.h"
#include "net/tcpserver_internal.h"

#define EMFILE_RETRY_DELAY 0.1 /* seconds between accept attempts while out of descriptors */
#define MAX_LISTEN_FDS 16

struct gale_server {
    gale_loop *loop; /* NULL until the first socket starts accepting (prefork: after the fork) */
    gale_accept_cb cb;
    void *arg;
    int fds[MAX_LISTEN_FDS];
    size_t nfds;
    bool accepting; /* handlers registered (or paused on EMFILE) */
    bool watching;  /* handlers currently registered on the loop */
    bool in_emfile; /* inside an EMFILE/ENFILE episode */
    double emfile_since;
    unsigned long emfile_dropped;
    gale_timeout retry;
    int spare_fd;    /* /dev/null, given up to accept-and-close a client when out of descriptors */
    int dispatching; /* depth of accept handlers on the stack */
    bool free_pending; /* freed by the user: the memory goes when dispatching and live reach 0 */
    size_t max_conns;  /* 0: no limit */
    size_t live;       /* accepted streams whose close sequence has not run yet */
    bool at_limit;     /* inside a max_connections episode (clients wait in the backlog) */
    double limit_since;
    gale_tls_ctx *tls; /* every accepted connection speaks TLS (NULL: plain) */
    /* Bound with SO_REUSEPORT before accepting: the sockets are not listening yet, start() makes
     * them listen (n == 1) or gives each worker listening sockets of its own (n > 1). */
    bool listen_deferred;
    int backlog;
    /* On a uring loop: accepts are operations (net/tcpserver_uring.c), one record per watched
     * socket, each holding a reference (refs) until its last completion. */
    bool uring;
    bool own_sockets; /* a prefork worker's sockets are its own (SO_REUSEPORT rebind) */
    gale__uaccept *uacc[MAX_LISTEN_FDS];
    unsigned refs;
};

/* ---- binding ---- */

static int set_sockopt_int(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof value) < 0 ? -errno : 0;
}

static void close_all(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
}

static int sockaddr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return -EAFNOSUPPORT;
}

static void sockaddr_set_port(struct sockaddr *sa, int port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons((uint16_t)port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons((uint16_t)port);
}

/* One pass of bind_sockets (backlog < 0: bound, not listening). Returns 0, a negative errno, or
 * -EADDRINUSE when a port picked for an earlier family is taken in a later one (the caller
 * retries with a new port). */
static int bind_pass(const struct addrinfo *list, int port, int backlog, bool reuse_port, int *fds,
                     size_t max, size_t *n)
{
    int bound_port = -1;
    *n = 0;
    /* IPv4 first (sorted by family like Tornado), so port 0 is picked on v4 and reused on v6. */
    const int order[2] = {AF_INET, AF_INET6};
    for (int pass = 0; pass < 2; pass++) {
        for (const struct addrinfo *ai = list; ai; ai = ai->ai_next) {
            if (ai->ai_family != order[pass])
                continue;
            /* getaddrinfo may list the same address twice (one per protocol): skip repeats. */
            bool dup = false;
            for (const struct addrinfo *p = list; p != ai; p = p->ai_next)
                if (p->ai_family == ai->ai_family && p->ai_addrlen == ai->ai_addrlen &&
                    memcmp(p->ai_addr, ai->ai_addr, ai->ai_addrlen) == 0)
                    dup = true;
            if (dup)
                continue;
            int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                if (errno == EAFNOSUPPORT)
                    continue;
                int err = -errno;
                close_all(fds, *n);
                return err;
            }
            int err = set_sockopt_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
            if (!err && reuse_port)
                err = set_sockopt_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
            if (!err && ai->ai_family == AF_INET6)
                err = set_sockopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
            struct sockaddr_storage ss;
            memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
            if (port == 0 && bound_port > 0)
                sockaddr_set_port((struct sockaddr *)&ss, bound_port);
            if (!err && bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) < 0) {
                err = -errno;
                if (err == -EADDRNOTAVAIL && ai->ai_family == AF_INET6) {
                    /* IPv6 present but not configured (containers): serve on IPv4 only. */
                    close(fd);
                    continue;
                }
            }
            if (!err && backlog >= 0 && listen(fd, backlog) < 0)
                err = -errno;
            if (!err && *n == max)
                err = -ENOSPC;
            if (!err && bound_port < 0) {
                socklen_t len = sizeof ss;
                if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
                    err = -errno;
                else
                    bound_port = sockaddr_port((struct sockaddr *)&ss);
            }
            if (err) {
                close(fd);
                close_all(fds, *n);
                *n = 0;
                return err;
            }
            fds[(*n)++] = fd;
        }
    }
    return *n > 0 ? 0 : -EADDRNOTAVAIL;
}

/* gale_bind_sockets, leaving the sockets bound but not listening when `listen_too` is false. */
static int bind_sockets(int port, const char *address, int family, int backlog, bool reuse_port,
                        bool listen_too, int *fds, size_t max, size_t *n)
{
    if (!fds || !n || max == 0 || port < 0 || port > 65535 ||
        (family != AF_UNSPEC && family != AF_INET && family != AF_INET6))
        return -EINVAL;
    *n = 0;
    if (address && address[0] == '\0')
        address = NULL;
    if (backlog <= 0)
        backlog = GALE_DEFAULT_BACKLOG;
    int pass_backlog = listen_too ? backlog : -1;
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {
        .ai_family = family, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *list = NULL;
    int rc = getaddrinfo(address, service, &hints, &list);
    if (rc != 0) {
        int err = gale_resolver_gai_error(rc);
        gale_log_warning(GALE_LOG_GENERAL, "cannot bind %s:%d: %s", address ? address : "*", port,
                         gai_strerror(rc));
        return err;
    }
    int err = 0;
    /* Port 0 binds the first family to a free port and the others to the same one; if that port
     * is taken in another family, start over (a few times) with a new one. */
    for (int attempt = 0; attempt < 5; attempt++) {
        err = bind_pass(list, port, pass_backlog, reuse_port, fds, max, n);
        if (err != -EADDRINUSE || port != 0)
            break;
    }
    freeaddrinfo(list);
    if (err)
        gale_log_warning(GALE_LOG_GENERAL, "cannot bind %s:%d: %s", address ? address : "*", port,
                         gale_strerror(err));
    return err;
}

int gale_bind_sockets(int port, const char *address, int family, int backlog, bool reuse_port,
                      int *fds, size_t max, size_t *n)
{
    return bind_sockets(port, address, family, backlog, reuse_port, true, fds, max, n);
}

/* Whether something listens at `sun`: a connect that is accepted or queued (EAGAIN: the backlog
 * is full) says so; ECONNREFUSED (nobody listens) or any other failure says stale. */
static bool unix_socket_live(const struct sockaddr_un *sun)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    bool live = connect(fd, (const struct sockaddr *)sun, sizeof *sun) == 0 || errno == EAGAIN;
    close(fd);
    return live;
}

int gale_bind_unix_socket(const char *path, int mode, int backlog)
{
    if (!path || !path[0])
        return -EINVAL;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path)
        return -ENAMETOOLONG;
    strcpy(sun.sun_path, path);
    if (backlog <= 0)
        backlog = GALE_DEFAULT_BACKLOG;
    /* Replace a stale socket file, never any other kind of file, nor a socket a live server
     * listens on (a second instance started by mistake would silently take its traffic). */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return -EEXIST;
        if (unix_socket_live(&sun))
            return -EADDRINUSE;
        if (unlink(path) < 0)
            return -errno;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    if (chmod(path, (mode_t)mode) < 0 || listen(fd, backlog) < 0) {
        int err = -errno;
        unlink(path); /* the file this bind made: a failed call leaves nothing behind */
        close(fd);
        return err;
    }
    return fd;
}

/* ---- accepting ---- */

static void accept_handler(gale_loop *loop, int fd, unsigned events, void *arg);
static void emfile_retry(gale_loop *loop, void *arg);

static bool full(const gale_server *srv) { return srv->max_conns && srv->live >= srv->max_conns; }

/* Starts (readiness handler or accept operation) or stops accepting on socket `i`. */
static int watch_fd(gale_server *srv, size_t i, bool on)
{
    if (!srv->uring && on)
        return gale_loop_add_handler(srv->loop, srv->fds[i], GALE_READ, accept_handler, srv);
    if (!srv->uring)
        return gale_loop_remove_handler(srv->loop, srv->fds[i]);
    if (!on) {
        gale__uaccept_stop(srv->uacc[i]);
        srv->uacc[i] = NULL;
        return 0;
    }
    return srv->uacc[i] ? 0 : gale__uaccept_start(srv->loop, srv, srv->fds[i], &srv->uacc[i]);
}

/* Registers (on) or removes the listening sockets; never registers them while at the connection
 * limit: the kernel's backlog holds the clients until a connection closes. */
static void watch(gale_server *srv, bool on)
{
    if (on && full(srv))
        on = false;
    if (srv->watching == on)
        return;
    for (size_t i = 0; i < srv->nfds; i++) {
        int err = watch_fd(srv, i, on);
        if (err && on)
            gale_log_error(GALE_LOG_GENERAL, "cannot watch listening socket %d: %s", srv->fds[i],
                           gale_strerror(err));
    }
    srv->watching = on;
}

/* Out of descriptors: give up the spare one, accept-and-close the clients waiting on `fd` so they
 * see a close at once instead of a hang, then take the spare back. */
static void drop_waiting_clients(gale_server *srv, int fd)
{
    if (srv->spare_fd < 0)
        return;
    close(srv->spare_fd);
    srv->spare_fd = -1;
    for (int i = 0; i < GALE_ACCEPT_BATCH; i++) {
        int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break;
        }
        close(c);
        srv->emfile_dropped++;
    }
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* `drop`: accept-and-close the waiting clients (not when the error was injected by the fault seam:
 * there the descriptor table is not really full, and the pause and retry are what is tested). */
static void enter_emfile(gale_server *srv, int fd, int err, bool drop)
{
    if (!srv->in_emfile) {
        srv->in_emfile = true;
        srv->emfile_since = gale_loop_time(srv->loop);
        srv->emfile_dropped = 0;
        gale_log_warning(GALE_LOG_GENERAL, "accept: %s; pausing accepts, retrying every %.0f ms",
                         gale_strerror(err), EMFILE_RETRY_DELAY * 1000);
    }
    watch(srv, false);
    if (drop)
        drop_waiting_clients(srv, fd);
    if (!srv->retry) {
        int rc = gale__fault_alloc() ? -ENOMEM
                                     : gale_loop_call_later(srv->loop, EMFILE_RETRY_DELAY,
                                                            emfile_retry, srv, &srv->retry);
        if (rc < 0) {
            /* No timer: never stay paused with nothing to resume us; the next readiness event
             * retries instead (busier, but accepting goes on once descriptors free up). */
            srv->retry = 0;
            gale_log_error(GALE_LOG_GENERAL,
                           "accept: cannot arm the retry timer (%s); watching "
                           "the listening sockets instead",
                           gale_strerror(rc));
            watch(srv, true);
        }
    }
}

static void leave_emfile(gale_server *srv)
{
    if (!srv->in_emfile)
        return;
    srv->in_emfile = false;
    gale_log_info(GALE_LOG_GENERAL,
                  "accept: descriptors available again after %.0f ms, %lu waiting clients closed",
                  (gale_loop_time(srv->loop) - srv->emfile_since) * 1000, srv->emfile_dropped);
    /* Out now, before the client's bytes: on a uring loop a flush of the submission queue in this
     * turn (another stream closing) can send them before the loop's own log flush. */
    gale_log_flush();
}

/* At max_connections: stop watching; the first time in an episode, say so. */
static void enter_limit(gale_server *srv)
{
    watch(srv, false);
    if (srv->at_limit)
        return;
    srv->at_limit = true;
    srv->limit_since = gale_loop_time(srv->loop);
    gale_log_warning(GALE_LOG_GENERAL,
                     "max_connections (%zu) reached: not accepting until a connection closes; new "
                     "clients wait in the listen backlog",
                     srv->max_conns);
}

/* The episode ends when an accept below the limit finds nobody waiting. */
static void leave_limit(gale_server *srv)
{
    if (!srv->at_limit)
        return;
    srv->at_limit = false;
    gale_log_info(GALE_LOG_GENERAL, "max_connections: backlog drained after %.0f ms",
                  (gale_loop_time(srv->loop) - srv->limit_since) * 1000);
}

static void conn_closed(gale_stream *s, void *arg);
static int fork_processes(int n, int max_restarts, const int *listen_fds, size_t nlisten);
static int listen_now(gale_server *srv);

/* Connection `c` accepted from `peer`: a stream for the accept callback. Returns false if the
 * server was stopped or freed meanwhile. */
static bool take(gale_server *srv, int c, const struct sockaddr_storage *peer, socklen_t plen)
{
    leave_emfile(srv);
    gale_stream *s = NULL;
    int err = gale_stream_new(srv->loop, c, &s);
    if (err) {
        gale_log_error(GALE_LOG_GENERAL, "dropping connection: %s", gale_strerror(err));
        close(c);
        return true;
    }
    srv->live++;
    gale_stream_set_owner_hook(s, conn_closed, srv);
    if (srv->tls && (err = gale_stream_start_tls(s, srv->tls, NULL, NULL, NULL)) < 0) {
        gale_log_error(GALE_LOG_GENERAL, "dropping connection: TLS: %s", gale_strerror(err));
        gale_stream_close(s, err);
        return true;
    }
    srv->cb(srv, s, (const struct sockaddr *)peer, plen, srv->arg);
    return !srv->free_pending && srv->accepting;
}

/* Accepts up to a batch on `fd`. Returns false if the server was stopped or freed meanwhile. */
static bool accept_batch(gale_server *srv, int fd)
{
    for (int i = 0; i < GALE_ACCEPT_BATCH; i++) {
        if (full(srv)) {
            enter_limit(srv);
            return true;
        }
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int c =
            gale__sys_accept4(fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            int err = errno;
            if (err == EINTR || err == ECONNABORTED)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK) {
                if (!gale__fault_was_injected()) /* an injected EAGAIN proves nothing */
                    leave_limit(srv);
                return true;
            }
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                enter_emfile(srv, fd, -err, !gale__fault_was_injected());
                return true;
            }
            gale_log_error(GALE_LOG_GENERAL, "accept on fd %d: %s", fd, gale_strerror(-err));
            return true;
        }
        if (!take(srv, c, &peer, plen))
            return false;
    }
    return true;
}

int gale_server_set_tls(gale_server *srv, gale_tls_ctx *ctx)
{
    if (!srv || (ctx && !gale_tls_is_server(ctx)))
        return -EINVAL;
    if (ctx && !gale_tls_available())
        return -ENOTSUP;
    gale_tls_ref(ctx);
    gale_tls_unref(srv->tls);
    srv->tls = ctx;
    return 0;
}

/* Frees the server once the user freed it and nothing refers to it any more. */
static void maybe_free(gale_server *srv)
{
    if (srv->free_pending && srv->dispatching == 0 && srv->live == 0 && srv->refs == 0) {
        gale_tls_unref(srv->tls);
        free(srv);
    }
}

/* An accepted stream's close sequence ran: one connection fewer; below the limit, accept again. */
static void conn_closed(gale_stream *s, void *arg)
{
    gale_server *srv = arg;
    srv->live--;
    if (srv->free_pending) {
        maybe_free(srv);
        return;
    }
    if (srv->accepting && !srv->retry && !srv->watching && !full(srv))
        watch(srv, true);
}

static void accept_handler(gale_loop *loop, int fd, unsigned events, void *arg)
{
    gale_server *srv = arg;
    srv->dispatching++;
    accept_batch(srv, fd);
    srv->dispatching--;
    maybe_free(srv);
}

static void emfile_retry(gale_loop *loop, void *arg)
{
    gale_server *srv = arg;
    srv->retry = 0;
    if (!srv->accepting)
        return;
    if (srv->uring) {
        watch(srv,
              true); /* new operations: an error ends them again, a connection ends the pause */
        return;
    }
    /* Try each socket at once: success ends the episode; EMFILE re-arms this timer; EAGAIN only
     * means nobody is waiting, so watch again and keep the episode open (no second warning). */
    srv->dispatching++;
    for (size_t i = 0; i < srv->nfds && !srv->retry; i++) {
        if (!accept_batch(srv, srv->fds[i]))
            break;
    }
    srv->dispatching--;
    if (srv->free_pending) {
        maybe_free(srv);
        return;
    }
    if (srv->accepting && !srv->retry)
        watch(srv, true);
}

/* Whether accepts go as multishot operations. Not with a connection limit: a multishot accept
 * takes every client waiting in the backlog at once, past the limit. Not in a prefork worker
 * sharing its listening sockets with the others: the operation waits on the socket as an
 * exclusive waiter that stays first in line, so one worker would take every connection (readiness
 * wakes them all and the idlest accepts first). */
static bool uring_fits(const gale_server *srv)
{
    return gale__uaccept_usable(srv->loop) && srv->max_conns == 0 &&
           (gale_task_id() < 0 || srv->own_sockets);
}

static int start_accepting(gale_server *srv)
{
    if (!srv->loop) {
        srv->loop = gale_loop_current();
        if (!srv->loop)
            return -ENOMEM;
    }
    srv->accepting = true;
    srv->uring = uring_fits(srv);
    if (!srv->retry)
        watch(srv, true);
    return 0;
}

/* ---- for net/tcpserver_uring.c (tcpserver_internal.h) ---- */

void gale__server_hold(gale_server *srv) { srv->refs++; }

void gale__server_release(gale_server *srv)
{
    assert(srv->refs > 0);
    srv->refs--;
    maybe_free(srv);
}

void gale__server_accepted(gale_server *srv, int c)
{
    if (!srv->accepting) {
        close(c); /* stopped meanwhile: as if the listener had been closed first */
        return;
    }
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (getpeername(c, (struct sockaddr *)&peer, &plen) < 0) {
        /* Reset before we asked: the stream finds out at its first read. */
        memset(&peer, 0, sizeof peer);
        plen = 0;
    }
    srv->dispatching++;
    if (take(srv, c, &peer, plen) && full(srv))
        enter_limit(srv);
    srv->dispatching--;
    maybe_free(srv);
}

void gale__server_accept_failed(gale_server *srv, int fd, int err, bool injected)
{
    if (err == -EINTR || err == -ECONNABORTED || err == -EAGAIN || err == -EWOULDBLOCK)
        return;
    if (err == -EMFILE || err == -ENFILE || err == -ENOBUFS || err == -ENOMEM) {
        enter_emfile(srv, fd, err, !injected);
        return;
    }
    gale_log_error(GALE_LOG_GENERAL, "accept on fd %d: %s", fd, gale_strerror(err));
}

void gale__server_uring_off(gale_server *srv)
{
    bool was = srv->watching;
    watch(srv, false);
    srv->uring = false;
    if (was)
        watch(srv, true);
}

int gale_server_new(gale_loop *loop, gale_accept_cb cb, void *arg, gale_server **out)
{
    if (!cb || !out)
        return -EINVAL;
    gale_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->loop = loop;
    srv->cb = cb;
    srv->arg = arg;
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    *out = srv;
    return 0;
}

int gale_server_add_socket(gale_server *srv, int fd)
{
    if (!srv || fd < 0)
        return -EINVAL;
    if (srv->nfds == MAX_LISTEN_FDS)
        return -ENOSPC;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    srv->fds[srv->nfds++] = fd;
    if (srv->accepting && srv->watching) {
        int err = watch_fd(srv, srv->nfds - 1, true);
        if (err) {
            srv->nfds--;
            return err;
        }
        return 0;
    }
    if (srv->accepting)
        return 0; /* paused on EMFILE: the retry timer picks it up */
    int err = listen_now(srv);
    if (!err)
        err = start_accepting(srv);
    if (err)
        srv->nfds--;
    return err;
}

int gale_server_bind(gale_server *srv, int port, const char *address, int family, int backlog,
                     bool reuse_port)
{
    if (!srv)
        return -EINVAL;
    if (srv->nfds == MAX_LISTEN_FDS)
        return -ENOSPC;
    if (srv->listen_deferred && !reuse_port)
        return -EINVAL; /* the workers could not bind their own sockets next to this one */
    size_t n = 0;
    bool defer = reuse_port && !srv->accepting && (srv->nfds == 0 || srv->listen_deferred);
    int err = bind_sockets(port, address, family, backlog, reuse_port, !defer, srv->fds + srv->nfds,
                           MAX_LISTEN_FDS - srv->nfds, &n);
    if (err)
        return err;
    size_t first = srv->nfds;
    srv->listen_deferred = defer;
    srv->backlog = backlog > 0 ? backlog : GALE_DEFAULT_BACKLOG;
    if (srv->accepting && srv->watching) {
        /* Already accepting: the new sockets must be watched too, or none is added. */
        for (size_t i = first; i < first + n; i++) {
            err = watch_fd(srv, i, true);
            if (err) {
                gale_log_error(GALE_LOG_GENERAL, "cannot watch listening socket %d: %s",
                               srv->fds[i], gale_strerror(err));
                for (size_t j = first; j < i; j++)
                    watch_fd(srv, j, false);
                for (size_t j = first; j < first + n; j++)
                    close(srv->fds[j]);
                return err;
            }
        }
    }
    srv->nfds += n;
    return 0;
}

int gale_server_listen(gale_server *srv, int port, const char *address)
{
    if (!srv)
        return -EINVAL;
    int err = gale_server_bind(srv, port, address, AF_UNSPEC, GALE_DEFAULT_BACKLOG, false);
    if (err)
        return err;
    return srv->accepting ? 0 : start_accepting(srv);
}

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Makes sockets bound for a deferred listen listen now (one process serves them). */
static int listen_now(gale_server *srv)
{
    if (!srv->listen_deferred)
        return 0;
    for (size_t i = 0; i < srv->nfds; i++)
        if (listen(srv->fds[i], srv->backlog) < 0)
            return -errno;
    srv->listen_deferred = false;
    return 0;
}

/* Bound with SO_REUSEPORT and never listened on: the supervisor keeps those sockets (the port
 * stays this server's, and no connection waits in a queue nobody accepts from), and each worker
 * replaces its copies with listening sockets of its own (net/tcpserver_reuseport.c). */
static int rebind_all(gale_server *srv)
{
    for (size_t i = 0; i < srv->nfds; i++) {
        int fd = gale__reuseport_rebind(srv->fds[i], true, srv->backlog);
        if (fd < 0) {
            gale_log_error(GALE_LOG_GENERAL, "cannot listen on a socket of its own for port %d: %s",
                           gale_server_port(srv), gale_strerror(fd));
            return fd;
        }
        srv->fds[i] = fd;
    }
    return 0;
}

int gale_server_start(gale_server *srv, int nprocs)
{
    if (!srv)
        return -EINVAL;
    if (srv->nfds == 0)
        return -ENOTCONN;
    if (srv->accepting)
        return -EALREADY;
    if (nprocs != 1) {
        if (srv->loop)
            gale_log_warning(GALE_LOG_GENERAL,
                             "server start(%d): the server's loop exists before the fork, so the "
                             "workers share one epoll instance; create the server with a NULL "
                             "loop and the loop after start()",
                             nprocs);
        /* The supervisor gets the listening sockets so it can close its copies when told to
         * stop: after that no worker is restarted, and a listener left open in the parent would
         * take connections into its backlog that nobody accepts (reset at its exit). */
        int id = fork_processes(nprocs, 100, srv->fds, srv->nfds);
        if (id < 0)
            return id;
        if (srv->listen_deferred) {
            int err = rebind_all(srv);
            if (err)
                return err;
            srv->own_sockets = true;
        }
    } else {
        int err = listen_now(srv);
        if (err)
            return err;
    }
    srv->listen_deferred = false;
    return start_accepting(srv);
}

int gale_server_port(const gale_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (srv->nfds == 0)
        return -ENOTCONN;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(srv->fds[0], (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    return sockaddr_port((struct sockaddr *)&ss);
}

int gale_server_accept_pending(gale_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (!srv->accepting || !srv->loop)
        return 0;
    size_t before = srv->live;
    srv->dispatching++;
    for (size_t i = 0; i < srv->nfds && !srv->free_pending && srv->accepting; i++) {
        /* On a uring loop, connections the accept operation took first: their completions would
         * come after the stop that usually follows, and be closed. */
        if (srv->uring)
            gale__uaccept_take(srv->uacc[i]);
        /* Ask the kernel rather than trust EAGAIN (an injected one would end the pass early);
         * bounded, so a flood of new clients cannot hold the loop here. */
        for (int round = 0; round < 64 && !full(srv); round++) {
            struct pollfd p = {.fd = srv->fds[i], .events = POLLIN};
            if (poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN))
                break;
            if (!accept_batch(srv, srv->fds[i]))
                break;
        }
    }
    srv->dispatching--;
    size_t accepted = srv->live > before ? srv->live - before : 0;
    maybe_free(srv);
    return (int)(accepted > INT_MAX ? INT_MAX : accepted);
}

void gale_server_stop(gale_server *srv)
{
    if (!srv)
        return;
    if (srv->loop) {
        watch(srv, false);
        if (srv->retry)
            gale_loop_remove_timeout(srv->loop, srv->retry);
    }
    srv->retry = 0;
    srv->accepting = false;
    srv->watching = false;
    close_all(srv->fds, srv->nfds);
    srv->nfds = 0;
}

void gale_server_free(gale_server *srv)
{
    if (!srv || srv->free_pending)
        return;
    gale_server_stop(srv);
    srv->free_pending = true;
    if (srv->spare_fd >= 0)
        close(srv->spare_fd);
    srv->spare_fd = -1;
    maybe_free(srv);
}

int gale_server_set_max_connections(gale_server *srv, size_t n)
{
    if (!srv)
        return -EINVAL;
    srv->max_conns = n;
    if (!srv->loop || !srv->accepting)
        return 0;
    if (srv->uring && n)
        gale__server_uring_off(srv); /* see uring_fits */
    if (full(srv))
        enter_limit(srv);
    else if (!srv->retry && !srv->watching)
        watch(srv, true);
    return 0;
}

size_t gale_server_connections(const gale_server *srv) { return srv ? srv->live : 0; }

/* ---- prefork ---- */

static int task_id = -1;

int gale_task_id(void) { return task_id; }

int gale_fork_processes(int n, int max_restarts)
{
    return fork_processes(n, max_restarts, NULL, 0);
}

/* gale_fork_processes, plus the listening sockets `listen_fds[0..nlisten)` that the supervising
 * parent closes on the first SIGTERM/SIGINT, before forwarding it: the workers' copies keep the
 * sockets listening until the workers close them (a graceful drain), then new clients are refused
 * (ECONNREFUSED) instead of being queued in a backlog that only the exiting parent still holds. */
static int fork_processes(int n, int max_restarts, const int *listen_fds, size_t nlisten)
{
    if (task_id != -1)
        return -EALREADY;
    if (n <= 0)
        n = cpu_count();
    if (max_restarts < 0)
        max_restarts = 0;
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    bool *clean = calloc((size_t)n, sizeof *clean);
    if (!pids || !clean) {
        free(pids);
        free(clean);
        return -ENOMEM;
    }
    gale_log_info(GALE_LOG_GENERAL, "starting %d processes", n);
    gale_log_flush();

    /* The supervisor takes SIGCHLD, SIGTERM and SIGINT synchronously (sigtimedwait): no handler
     * runs in signal context, and children get the original mask back before they return. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, &old);

    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            free(pids);
            free(clean);
            task_id = i;
            return i;
        }
        if (pid < 0) {
            int err = -errno;
            gale_log_error(GALE_LOG_GENERAL, "fork: %s", gale_strerror(err));
            for (int j = 0; j < i; j++)
                kill(pids[j], SIGTERM);
            for (int j = 0; j < i; j++)
                waitpid(pids[j], NULL, 0);
            sigprocmask(SIG_SETMASK, &old, NULL);
            free(pids);
            free(clean);
            return err;
        }
        pids[i] = pid;
    }

    int alive = n, restarts = 0;
    int stop_signal = 0;
    for (;;) {
        struct timespec ts = {1, 0};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &ts);
        if ((sig == SIGTERM || sig == SIGINT) && !stop_signal) {
            stop_signal = sig;
            gale_log_info(GALE_LOG_GENERAL, "signal %d: stopping %d children", sig, alive);
            gale_log_flush();
            /* No restart from now on: the parent needs its listeners no more. */
            for (size_t i = 0; i < nlisten; i++)
                close(listen_fds[i]);
            nlisten = 0;
        }
        if (sig == SIGTERM || sig == SIGINT) {
            for (int i = 0; i < n; i++)
                if (pids[i] > 0)
                    kill(pids[i], sig);
        }
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0)
                break;
            int id = -1;
            for (int i = 0; i < n; i++)
                if (pids[i] == pid)
                    id = i;
            if (id < 0)
                continue; /* not one of ours */
            pids[id] = 0;
            alive--;
            bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            if (!ok && stop_signal && WIFSIGNALED(status) && WTERMSIG(status) == stop_signal)
                ok = true; /* died of the signal we forwarded: that is what was asked */
            clean[id] = ok;
            if (WIFSIGNALED(status))
                gale_log_warning(GALE_LOG_GENERAL, "child %d (pid %d) killed by signal %d", id,
                                 (int)pid, WTERMSIG(status));
            else if (WEXITSTATUS(status) != 0)
                gale_log_warning(GALE_LOG_GENERAL, "child %d (pid %d) exited with status %d", id,
                                 (int)pid, WEXITSTATUS(status));
            else
                gale_log_info(GALE_LOG_GENERAL, "child %d (pid %d) exited normally", id, (int)pid);
            if (ok || stop_signal)
                continue;
            if (restarts >= max_restarts) {
                gale_log_error(GALE_LOG_GENERAL, "too many child restarts (%d), giving up on %d",
                               restarts, id);
                continue;
            }
            restarts++;
            gale_log_flush();
            pid_t np = fork();
            if (np == 0) {
                sigprocmask(SIG_SETMASK, &old, NULL);
                free(pids);
                free(clean);
                task_id = id;
                return id;
            }
            if (np < 0) {
                gale_log_error(GALE_LOG_GENERAL, "fork: %s", gale_strerror(-errno));
                continue;
            }
            pids[id] = np;
            alive++;
        }
        if (alive == 0)
            break;
    }
    int code = 0;
    for (int i = 0; i < n; i++)
        if (!clean[i])
            code = 1;
    free(pids);
    free(clean);
    gale_log_flush();
    exit(code);
}

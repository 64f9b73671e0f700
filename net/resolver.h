/* gale resolver: getaddrinfo off the loop (Tornado's ThreadedResolver / DefaultLoopResolver).
 *
 * Host names are resolved on a small pool of worker threads (GALE_RESOLVER_THREADS, started on
 * first use); results come back to the requesting loop's thread through gale_loop_add_callback().
 * Numeric hosts ("127.0.0.1", "::1") are recognised on the calling thread (AI_NUMERICHOST) and
 * need no thread hop; their callback still runs from the loop, never inside gale_resolve().
 *
 * Threads: the pool is created lazily, so a process that forks (gale_fork_processes) before its
 * first name lookup forks no threads. A child forked while the pool exists starts with an empty
 * pool of its own. The workers exit at gale_resolver_shutdown() or at process exit.
 *
 * Loop lifetime rule: a resolve belongs to its loop. Before freeing a loop that may still have
 * lookups in flight, call gale_resolver_cancel_loop(loop): their callbacks are then never run and
 * their results are freed by the pool. Lookups that already completed are dropped the same way.
 * Freeing a loop without doing so is safe only if no lookup for it is pending.
 */
#ifndef GALE_NET_RESOLVER_H
#define GALE_NET_RESOLVER_H

#include <netdb.h>
#include <sys/socket.h>

/* <netdb.h> defines struct addrinfo only under POSIX feature macros (_POSIX_C_SOURCE, _GNU_SOURCE);
 * declared here, this header compiles under plain -std=c11 too. A program that reads the list's
 * fields defines one of those macros, as for getaddrinfo itself. */
struct addrinfo;

#include "core/future.h"
#include "core/loop.h"

#define GALE_RESOLVER_THREADS 4

/* Lookup result. `status` is 0 (then `res` is a non-empty getaddrinfo list of SOCK_STREAM
 * addresses), GALE_ERESOLVE (unknown host, no address in that family, or DNS failure; the
 * getaddrinfo message is logged at debug level), -ENOMEM, -EAFNOSUPPORT (bad family), -ECANCELED
 * (gale_resolver_shutdown() while queued) or another negative errno. Ownership: `res` is freed
 * after the callback returns. */
typedef void (*gale_resolve_cb)(int status, const struct addrinfo *res, void *arg);

/* Resolves `host` (name or numeric address) for TCP `port` in `family` (AF_UNSPEC, AF_INET,
 * AF_INET6). Returns 0, or -EINVAL (NULL loop/host/cb, empty host, port outside 0..65535, other
 * family), -ENOMEM, or pthread_create's errno; when this returns an error `cb` is never called.
 * Callbacks: `cb` runs exactly once, from `loop`, never from inside this call (unless the loop's
 * lookups are cancelled, see gale_resolver_cancel_loop). */
int gale_resolve(gale_loop *loop, const char *host, int port, int family, gale_resolve_cb cb,
                 void *arg);

/* Future form: returns a new future (one reference, the caller's) that completes on `loop` with a
 * `struct addrinfo *` result owned by the future (freed with it; gale_future_steal_result() to
 * keep it, then freeaddrinfo()), or with the error code of gale_resolve_cb and the getaddrinfo
 * message. Argument errors complete the future at once. Returns NULL only when out of memory. */
gale_future *gale_resolve_future(gale_loop *loop, const char *host, int port, int family);

/* Forgets every lookup of `loop`: queued ones are dropped, running ones finish in their thread and
 * are then freed, completed ones are discarded. No callback of `loop`'s lookups runs afterwards.
 * Call it from the loop's thread, before gale_loop_free() when lookups may be pending. */
void gale_resolver_cancel_loop(gale_loop *loop);

/* Stops the worker threads after the lookups they are running (which still report to their
 * loops); queued lookups, and name lookups started on other threads while it runs, complete with
 * -ECANCELED. The pool restarts on the next gale_resolve after it returns.
 * Must not be called from a resolve callback's own worker (it is not: callbacks run on loops). */
void gale_resolver_shutdown(void);

/* Maps a getaddrinfo error (EAI_*) to gale's convention: GALE_ERESOLVE for name errors,
 * -ENOMEM, -EAFNOSUPPORT, -EINVAL (bad service or flags), or -errno for EAI_SYSTEM. */
int gale_resolver_gai_error(int eai);

#endif

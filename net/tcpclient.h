/* gale TCP client: Tornado's TCPClient.connect(host, port, timeout).
 *
 * Resolves `host` (net/resolver), then connects to each address in turn (the resolver's order;
 * a failed address falls through to the next) until one succeeds, all fail, or the overall
 * timeout passes. On timeout the half-open stream is closed (its fd released) and the caller gets
 * -ETIMEDOUT. The connection attempt belongs to its loop; it ends (callback run) before the loop
 * may be freed, or call gale_resolver_cancel_loop() first while it is still resolving.
 */
#ifndef GALE_NET_TCPCLIENT_H
#define GALE_NET_TCPCLIENT_H

#include "core/future.h"
#include "core/loop.h"
#include "net/iostream.h"

/* Connection outcome. On success `s` is a connected stream (status 0) and is the callback's to
 * keep or close. On failure `s` is NULL and status is -ECONNREFUSED, -ETIMEDOUT, GALE_ERESOLVE,
 * -ENETUNREACH... (the last address's error when all fail). */
typedef void (*gale_connect_cb)(gale_stream *s, int status, void *arg);

/* Connects to `host`:`port` (family AF_UNSPEC) within `timeout` seconds (<= 0: no limit).
 * Returns 0, -EINVAL (NULL loop/host/cb, bad port, NaN timeout) or -ENOMEM; then `cb` is never
 * called. Callbacks: `cb` runs exactly once, from the loop. */
int gale_tcp_connect(gale_loop *loop, const char *host, int port, double timeout,
                     gale_connect_cb cb, void *arg);

/* Future form: a new future (the caller's reference) whose result is the connected gale_stream.
 * The future owns the stream until gale_future_steal_result() takes it; a future freed with the
 * stream still inside closes it. Errors as above (argument errors complete it at once). Returns
 * NULL only when out of memory. */
gale_future *gale_tcp_connect_future(gale_loop *loop, const char *host, int port, double timeout);

#endif

/* gale TCP client: Tornado's TCPClient.connect(host, port, timeout).
 *
 * Resolves `host` (net/resolver), then connects with Happy Eyeballs (RFC 6555, like Tornado): the
 * addresses of the first address's family are tried one after another (a failed address falls
 * through to the next); the other family's addresses start GALE_CONNECT_FALLBACK_DELAY seconds
 * later, or at once when the first family runs out. The first connection up wins and the other
 * attempt is closed. Everything ends at the overall timeout: the half-open streams are closed
 * (their fds released) and the caller gets -ETIMEDOUT. An attempt belongs to its loop; it ends
 * (callback run) before the loop may be freed, or call gale_resolver_cancel_loop() first while it
 * is still resolving.
 */
#ifndef GALE_NET_TCPCLIENT_H
#define GALE_NET_TCPCLIENT_H

#include <netdb.h>

/* <netdb.h> defines struct addrinfo only under POSIX feature macros (_POSIX_C_SOURCE, _GNU_SOURCE);
 * declared here, this header compiles under plain -std=c11 too. A program that reads the list's
 * fields defines one of those macros, as for getaddrinfo itself. */
struct addrinfo;

#include "core/future.h"
#include "core/loop.h"
#include "net/iostream.h"
#include "net/tls.h"

#define GALE_CONNECT_FALLBACK_DELAY 0.3 /* seconds before the second address family starts */

/* Connection outcome. On success `s` is a connected stream (status 0) and is the callback's to
 * keep or close. On failure `s` is NULL and status is -ECONNREFUSED, -ETIMEDOUT, GALE_ERESOLVE,
 * -ENETUNREACH... (the last address's error when all fail). */
typedef void (*gale_connect_cb)(gale_stream *s, int status, void *arg);

/* Connects to `host`:`port` (family AF_UNSPEC) within `timeout` seconds (<= 0: no limit).
 * Returns 0, -EINVAL (NULL loop/host/cb, bad port, NaN timeout) or -ENOMEM; then `cb` is never
 * called. Callbacks: `cb` runs exactly once, from the loop. */
int gale_tcp_connect(gale_loop *loop, const char *host, int port, double timeout,
                     gale_connect_cb cb, void *arg);

/* Connects to the addresses of `addrs` (a getaddrinfo list, copied: the caller keeps it), as
 * above without the lookup. Returns 0, -EINVAL (NULL loop/addrs/cb, an empty list, NaN timeout)
 * or -ENOMEM; then `cb` is never called. Callbacks: `cb` runs exactly once, from the loop. */
int gale_tcp_connect_addrinfo(gale_loop *loop, const struct addrinfo *addrs, double timeout,
                              gale_connect_cb cb, void *arg);

/* Future form: a new future (the caller's reference) whose result is the connected gale_stream.
 * The future owns the stream until gale_future_steal_result() takes it; a future freed with the
 * stream still inside closes it. Errors as above (argument errors complete it at once). Returns
 * NULL only when out of memory. A stream whose peer closed it before it was taken leaves the
 * future empty (result NULL), as gale_stream_connect_future() describes. */
gale_future *gale_tcp_connect_future(gale_loop *loop, const char *host, int port, double timeout);

/* Tornado's connect(..., ssl_options, server_hostname): connects as gale_tcp_connect, then runs
 * the TLS handshake with the client context `ctx` (net/tls.h), checking the certificate against
 * `host` (unless the context has validate_cert off) and sending it as SNI; `timeout` covers both.
 * `cb` gets the stream once the handshake is done, or NULL and the error: GALE_ECERT (the reason
 * is logged at INFO: "certificate verify failed: self-signed certificate"), GALE_ETLS,
 * -ETIMEDOUT, the connect errors. For the reason in code, connect with gale_tcp_connect and call
 * gale_stream_start_tls yourself: its callback can read gale_stream_tls_error(). Returns 0,
 * -EINVAL (as gale_tcp_connect, or a server context), -ENOTSUP (built without TLS), -ENOMEM;
 * then `cb` is never called. */
int gale_tcp_connect_tls(gale_loop *loop, const char *host, int port, double timeout,
                         gale_tls_ctx *ctx, gale_connect_cb cb, void *arg);

/* Future form of gale_tcp_connect_tls, as gale_tcp_connect_future. */
gale_future *gale_tcp_connect_tls_future(gale_loop *loop, const char *host, int port,
                                         double timeout, gale_tls_ctx *ctx);

#endif

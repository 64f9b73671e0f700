/* One TLS connection's OpenSSL state, as the stream drives it (net/iostream_tls.c). net/tls.c
 * owns everything OpenSSL; the stream sees these calls only.
 *
 * I/O results: a count (> 0), 0 for the peer's end of stream (close_notify, or a TCP close at a
 * record boundary), -EAGAIN when OpenSSL needs the socket (gale__tls_want() says which way), or
 * a negative error: GALE_ETLS (protocol error, alert), GALE_ECERT (verification failed), or the
 * socket's errno. The error's text is kept for gale__tls_error(). */
#ifndef GALE_NET_TLS_INTERNAL_H
#define GALE_NET_TLS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "core/loop.h"
#include "net/tls.h"

typedef struct gale__tls gale__tls;

/* A client context with the defaults (verification against the system's CA store), made once
 * per process on first use and kept for its life; NULL without TLS or memory. Thread-safe. */
gale_tls_ctx *gale__tls_default_client(void);

/* A TLS connection over socket `fd` (not owned), server or client as `ctx` says; `host` (client
 * only, may be NULL) is checked against the certificate and sent as SNI. Returns 0, -ENOMEM,
 * GALE_ETLS, -EINVAL, -ENOTSUP. */
int gale__tls_new(gale_tls_ctx *ctx, int fd, const char *host, gale__tls **out);

/* Advances the handshake: 1 done, -EAGAIN (see want), or an error. */
int gale__tls_handshake(gale__tls *t);

ssize_t gale__tls_read(gale__tls *t, char *buf, size_t len);
/* Encrypts and sends bytes of `iov` in order: returns how many left (> 0), -EAGAIN with none
 * taken, or an error. A call after -EAGAIN must offer at least the same bytes again. */
ssize_t gale__tls_writev(gale__tls *t, const struct iovec *iov, int iovcnt);

/* GALE_READ or GALE_WRITE: what the last -EAGAIN waits for. */
unsigned gale__tls_want(const gale__tls *t);
/* Decrypted or received bytes inside OpenSSL that no readiness event will announce. */
bool gale__tls_pending(const gale__tls *t);

/* Sends close_notify if the handshake finished (best effort, never blocks) and releases the
 * OpenSSL state; the error text and negotiated facts stay readable until gale__tls_free. */
void gale__tls_shutdown(gale__tls *t);

/* The stream's close: as gale__tls_shutdown, except that a close_notify the socket does not take
 * at once is finished by `loop` (for up to 3 s) before `fd` is closed. Returns true when the loop
 * took `fd` (the caller must neither watch nor close it any more), false when the caller closes
 * it now. Either way the OpenSSL state has left `t`. */
bool gale__tls_close(gale__tls *t, gale_loop *loop, int fd);
void gale__tls_free(gale__tls *t);

const char *gale__tls_error(const gale__tls *t); /* "" when none */
const char *gale__tls_alpn(const gale__tls *t);  /* "" when none */
const char *gale__tls_version(const gale__tls *t);
bool gale__tls_resumed(const gale__tls *t);
bool gale__tls_handshake_done(const gale__tls *t);

#endif

/* gale streams: Tornado's IOStream over a non-blocking socket.
 *
 * Reads: one pending read at a time (a second is refused with -EBUSY). Each read completes exactly
 * once through its callback, from the loop, never from inside the call that started it, even when
 * the buffer already holds enough bytes (then no system call is made). A read still pending when
 * the stream closes completes with the close reason (-ECANCELED for a local close without reason,
 * GALE_EEOF for a clean peer close, -ECONNRESET...) before the close callback runs. Read data is
 * valid only until the callback returns.
 *
 * Buffering: bytes are received into a per-loop scratch area and only what the pending read does
 * not consume is copied into the stream's own buffer, which is released when it empties, so an
 * idle connection holds no buffer memory. More than `max_buffer_size` buffered bytes (default
 * 100 MiB) closes the stream with -ENOBUFS; a read_until/read_until_regex that cannot match within
 * `max_bytes` closes it with -EMSGSIZE. The stream only reads from the socket while a read is
 * pending (so TCP flow control pushes back on a peer nobody reads from), but it keeps watching for
 * the peer's close while idle so the close callback fires promptly: with no read pending it still
 * receives into its buffer up to 64 KiB (or max_buffer_size if smaller), which also reveals a FIN
 * or RST that follows unread bytes, and stops watching once that much is buffered.
 *
 * Peer close (FIN), as Tornado: bytes that arrived before it are never lost. With nothing buffered
 * (and no writes queued) the stream closes at once with GALE_EEOF, so a client that leaves is
 * noticed while its connection is idle. With bytes still buffered the stream stops reading and
 * stays open (writes still work: the peer may only have shut down its sending side); every read,
 * pending or started later from any callback, is served from the buffer while it can be satisfied
 * (read_until finds its delimiter, read_bytes has n bytes, or >= 1 with `partial`, read_some and
 * read_stream get what is there). The first read that the buffer cannot satisfy completes with
 * GALE_EEOF and the bytes so far (read_until_close: all of them, status 0) and the stream closes
 * with GALE_EEOF. If the owner never reads again the stream stays open until the owner closes it
 * (its choice, as with a file descriptor; an idle timeout is the usual guard). An RST
 * (-ECONNRESET) still closes at once and drops what is buffered.
 *
 * Writes: write() tries the socket at once and buffers only what the kernel did not take; WRITE
 * interest is registered only while bytes are pending; queued chunks go out with writev. Write
 * callbacks fire in order, once each, from the loop, when their bytes have been handed to the
 * kernel (or with the close reason if the stream closes first). SIGPIPE is never raised:
 * EPIPE/ECONNRESET close the stream with that reason. Close does not flush: bytes still queued
 * are dropped and their callbacks get the reason; to close after the data left, close from the
 * last write's callback.
 *
 * Half-close: a peer close (FIN) that arrives while writes are queued is taken as the peer's
 * SHUT_WR: the stream stops reading, keeps sending, and once the queue has left (or with the send
 * error) closes with GALE_EEOF if nothing is buffered or a read is waiting for bytes the buffer
 * cannot give; a read that cannot be satisfied meanwhile completes then, as for any close.
 *
 * Close: gale_stream_close() is idempotent and legal inside any callback of the stream. It stops
 * I/O, closes the fd, fails pending operations, then runs the close callback once from the loop;
 * after the close callback returns the library frees the stream. The close callback is where users
 * free what they attached to the stream. Until then the stream pointer stays valid.
 *
 * Threads: a stream belongs to its loop's thread. Read data may live in a per-thread receive area,
 * so a callback must not run a nested loop (gale_loop_run inside a stream callback).
 */
#ifndef GALE_NET_IOSTREAM_H
#define GALE_NET_IOSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/future.h"
#include "core/loop.h"

typedef struct gale_stream gale_stream;

/* Read completion. `status` is 0 on success, else a negative error and `data` may hold the bytes
 * buffered so far (read_until_close reports its data with status 0 on a clean peer close). */
typedef void (*gale_read_cb)(gale_stream *s, int status, const char *data, size_t len, void *arg);
/* Write, connect and close completion. */
typedef void (*gale_done_cb)(gale_stream *s, int status, void *arg);
/* Consuming read: returns how many of `len` bytes it used; the rest stay buffered for the next
 * read. Returning less than `len` with no new read started is fine (the bytes wait). */
typedef size_t (*gale_consume_cb)(gale_stream *s, int status, const char *data, size_t len,
                                  void *arg);

#define GALE_STREAM_DEFAULT_MAX_BUFFER (100u * 1024 * 1024)
#define GALE_STREAM_READ_CHUNK 65536

/* Wraps connected, non-blocking socket `fd` (the stream takes ownership and closes it). Returns 0,
 * -EINVAL (fd < 0 or NULL loop), -ENOMEM, or gale_loop_add_handler's error (-EEXIST...); on any
 * error fd is NOT closed. */
int gale_stream_new(gale_loop *loop, int fd, gale_stream **out);

/* Starts a non-blocking connect to `addr`; the stream exists at once (`*out`), `cb(s, status, arg)`
 * runs when the connection is up (0) or failed (-ECONNREFUSED, -ENETUNREACH...); after a failure
 * the stream is closed with that reason. No timeout here: see tcpclient. Returns 0, -EINVAL,
 * -ENOMEM, or socket()'s errno. */
int gale_stream_connect(gale_loop *loop, const struct sockaddr *addr, socklen_t addrlen,
                        gale_done_cb cb, void *arg, gale_stream **out);

/* Reads up to and including `delim` (dlen >= 1). More than `max_bytes` (0: no limit) without a
 * match closes the stream with -EMSGSIZE. Returns 0, -EBUSY (read pending), -EPIPE (closed),
 * -EINVAL. */
int gale_stream_read_until(gale_stream *s, const void *delim, size_t dlen, size_t max_bytes,
                           gale_read_cb cb, void *arg);

/* Reads up to and including the first match of POSIX extended regex `pattern`. The data handed to
 * `cb` ends at the end of the match. Returns as read_until, plus -EINVAL for a bad pattern. */
int gale_stream_read_until_regex(gale_stream *s, const char *pattern, size_t max_bytes,
                                 gale_read_cb cb, void *arg);

/* Reads exactly `n` bytes, or with `partial` as soon as at least one byte is available (up to n).
 * n == 0 completes at once (from the loop) with len 0. Returns as read_until. */
int gale_stream_read_bytes(gale_stream *s, size_t n, bool partial, gale_read_cb cb, void *arg);

/* Reads until the peer closes; `cb` gets all the data with status 0 on a clean close, or the error
 * with the data so far. Bounded by max_buffer_size. */
int gale_stream_read_until_close(gale_stream *s, gale_read_cb cb, void *arg);

/* Streaming form of read_bytes(n) (n == SIZE_MAX: until close): `chunk_cb` receives the bytes as
 * they arrive (status 0, never buffered beyond one receive), then `done_cb` once with len 0 and
 * status 0 when n bytes passed (or the peer closed, for SIZE_MAX), else the error. The read stays
 * pending while chunks flow (another read is -EBUSY); `done_cb` may start the next one. Returns
 * as read_until (-EINVAL for a NULL callback). */
int gale_stream_read_stream(gale_stream *s, size_t n, gale_read_cb chunk_cb, gale_read_cb done_cb,
                            void *arg);

/* Consuming read: `cb` gets every byte currently available (at least one, after waiting if
 * needed) and says how many it used. The building block for protocol parsers that take what they
 * can (an HTTP connection parsing pipelined requests one at a time). Bytes left unused are offered
 * to the next read at once, except that when a consuming read's callback used nothing, the next
 * consuming read waits for more bytes to arrive (the parser needs more, so showing it the same
 * bytes again would spin). On close `cb` runs with the reason and the buffered bytes; its return
 * value is then ignored. Returns as read_until. */
int gale_stream_read_some(gale_stream *s, gale_consume_cb cb, void *arg);

/* Withdraws a pending consuming read whose callback is `cb`, without calling it (a connection
 * watched for stray bytes while idle is taken back into use). Bytes already buffered stay for the
 * next read. Returns 0; -EINVAL (NULL argument); GALE_ESTATE when no such read is pending or its
 * callback is running. */
int gale_stream_cancel_read_some(gale_stream *s, gale_consume_cb cb);

/* Copies `len` bytes and sends them; `cb` (may be NULL) fires once when they are handed to the
 * kernel or the stream closed. len == 0 is legal (cb still fires). Only what the kernel does not
 * take at once is copied. Returns 0, -EINVAL (NULL data with len > 0), -EPIPE (closed), -ENOMEM,
 * or -EPIPE/-ECONNRESET when the immediate send finds the peer gone (the stream then closes with
 * that reason); on any error `cb` is not called. writev: the same for `iovcnt` buffers. */
int gale_stream_write(gale_stream *s, const void *data, size_t len, gale_done_cb cb, void *arg);
int gale_stream_writev(gale_stream *s, const struct iovec *iov, int iovcnt, gale_done_cb cb,
                       void *arg);

/* Zero-copy write: `buf` must stay valid until `release(p)` is called (once, from the loop after
 * the bytes are sent or the stream closed, just before `cb`; or from this call when it returns an
 * error). `release` may be NULL. Returns as gale_stream_write. */
int gale_stream_write_ref(gale_stream *s, const void *buf, size_t len, void (*release)(void *),
                          void *p, gale_done_cb cb, void *arg);

/* Sends `len` bytes of file `fd` from `offset` with sendfile(2): zero copy, non-blocking, queued
 * behind (and leaving after) every write queued before it, and counted in
 * gale_stream_write_pending() until the kernel has taken them, so the usual back-pressure holds.
 * The stream BORROWS `fd`: it neither dups nor closes it, and reads it with offsets of its own
 * (the fd's file position is left alone). The caller keeps `fd` open, and the file at least
 * `offset + len` bytes long, until `cb` runs. `cb` (may be NULL) fires once, from the loop: 0 when
 * all the bytes were handed to the kernel, -ECANCELED or the close reason when the stream closed
 * first, or -EIO (the stream is then closed) when the file ended early or could not be read.
 * len == 0 completes with 0. Returns 0, -EINVAL (fd < 0, negative offset), -EPIPE (closed) or
 * -ENOMEM; on error `cb` is not called. sendfile(2) cannot suppress SIGPIPE as send does: the
 * first range sent sets SIGPIPE to ignored if it is still at its default action (a handler the
 * program installed is kept). On a TLS stream the range is read (pread, one record at a time)
 * and encrypted instead: the same order, back-pressure and callbacks, without zero copy. */
int gale_stream_sendfile(gale_stream *s, int fd, off_t offset, size_t len, gale_done_cb cb,
                         void *arg);

/* Bytes queued and not yet handed to the kernel: the back-pressure signal. */
size_t gale_stream_write_pending(const gale_stream *s);

/* Sets the close callback (replacing any); it runs once, from the loop, with the close reason
 * (0 for a local close without reason). */
void gale_stream_set_close_cb(gale_stream *s, gale_done_cb cb, void *arg);

/* Closes the stream with `reason` (0 or a negative errno; a positive errno is negated).
 * Idempotent: the first reason stays. Legal inside any callback of the stream. Callbacks: the
 * pending read, then pending writes, then the close callback run from the loop, never inside this
 * call; the stream is freed after the close callback returns. */
void gale_stream_close(gale_stream *s, int reason);

bool gale_stream_closed(const gale_stream *s);
bool gale_stream_reading(const gale_stream *s);
bool gale_stream_writing(const gale_stream *s);
int gale_stream_close_reason(const gale_stream *s);
int gale_stream_fd(const gale_stream *s); /* -1 once closed */
gale_loop *gale_stream_loop(const gale_stream *s);
size_t gale_stream_read_buffered(const gale_stream *s);
/* Whether bytes wait beyond what the stream has buffered: in the kernel's socket buffer, or in a
 * receive that completed on a uring loop and has not been delivered yet. One ioctl; meant for
 * rare decisions (the HTTP server's shutdown: keep-alive or close). False once closed. */
bool gale_stream_input_waiting(const gale_stream *s);
/* Bytes the kernel holds for the socket that the peer has not acknowledged yet (sent and unacked,
 * or not sent: SIOCOUTQ), so that a writer can see its peer reading while the kernel's send buffer
 * is still too full to take more from the stream. One ioctl; meant for occasional looks (the HTTP
 * server's write-progress check). 0 once closed or when the kernel does not say. */
size_t gale_stream_write_unacked(const gale_stream *s);

/* Caps the read buffer (default GALE_STREAM_DEFAULT_MAX_BUFFER). Returns 0, -EINVAL (0), or
 * -ENOBUFS (more than `max` already buffered; the cap is unchanged). */
int gale_stream_set_max_buffer_size(gale_stream *s, size_t max);

/* TCP_NODELAY on or off. Returns 0 or the negative errno of setsockopt. */
int gale_stream_set_nodelay(gale_stream *s, bool on);

/* The peer's address. Returns 0 or a negative errno. */
int gale_stream_peer_addr(const gale_stream *s, struct sockaddr_storage *addr, socklen_t *len);

/* A close observer for the code that created the stream, separate from the close callback (which
 * belongs to whoever uses the stream and may be replaced at will): the acceptor counts its live
 * connections with it. `hook(s, arg)` runs once, from the loop, right after the close callback,
 * before the stream is freed; it must not touch the stream beyond reading it. Replaces any earlier
 * hook; NULL removes it. Ignored once the close sequence has run. */
typedef void (*gale_stream_hook)(gale_stream *s, void *arg);
void gale_stream_set_owner_hook(gale_stream *s, gale_stream_hook hook, void *arg);

/* ---- TLS (net/iostream_tls.c; contexts in net/tls.h) ----
 *
 * gale_stream_start_tls() makes `s` a TLS stream in place (Tornado's IOStream.start_tls): every
 * call above then works on the decrypted bytes, with the same guarantees. A server context makes
 * it the server side (the TCP and HTTP servers do this for each connection when given a
 * context); a client context the client side, checking the certificate against
 * `server_hostname` (a name or an IP address; NULL: no host check, no SNI) unless the context
 * has validate_cert off. Only on a connected stream with no read or write under way and nothing
 * buffered: GALE_ESTATE otherwise. `cb` (may be NULL) runs once from the loop when the
 * handshake is done (0) or failed (GALE_ECERT, GALE_ETLS, -ECONNRESET, -ETIMEDOUT at the
 * context's handshake timeout...; the stream is then closed with that reason). Reads and writes
 * may be started at once: they wait for the handshake. Returns 0, -EINVAL, -EPIPE (closed),
 * GALE_ESTATE, -ENOMEM, GALE_ETLS, or -ENOTSUP (built without TLS). The stream takes its own
 * reference to `ctx`. */
typedef struct gale_tls_ctx gale_tls_ctx;
int gale_stream_start_tls(gale_stream *s, gale_tls_ctx *ctx, const char *server_hostname,
                          gale_done_cb cb, void *arg);
bool gale_stream_is_tls(const gale_stream *s);
/* Why the handshake or a record failed ("certificate verify failed: self-signed certificate"),
 * "" when nothing failed; the ALPN protocol chosen ("" when none); the TLS version ("TLSv1.3");
 * whether the session was resumed. Strings live as long as the stream. */
const char *gale_stream_tls_error(const gale_stream *s);
const char *gale_stream_tls_alpn(const gale_stream *s);
const char *gale_stream_tls_version(const gale_stream *s);
bool gale_stream_tls_resumed(const gale_stream *s);

/* ---- awaitable forms (net/iostream_future.c) ----
 *
 * Each returns a new future (the caller's reference) that completes when the callback form would
 * call its callback, from the loop; they are that callback form underneath. A read's result is a
 * gale_stream_data (the bytes copied out of the stream, owned by the future: steal it and free()
 * it to keep it); on failure the future fails with the status (the bytes read so far are
 * dropped). When the operation cannot start (-EBUSY, -EPIPE, -EINVAL...) the future is completed
 * with that error at once. Return NULL only when out of memory. A coroutine starts its next read
 * when it resumes, one loop iteration after the previous read completed; bytes that arrived with
 * the peer's FIN in between stay buffered for it (see "Peer close" above), and only a read the
 * buffer cannot satisfy fails with GALE_EEOF. In a coroutine:
 *
 *     gale_future *f = gale_stream_read_until_future(s, "\r\n\r\n", 4, 65536);
 *     if (gale_await(f) == 0) { const gale_stream_data *d = gale_future_result(f); ... }
 *     gale_future_unref(f);
 */

/* Bytes read by a future form: `len` bytes at `data`, followed by a NUL not counted in len. */
typedef struct gale_stream_data {
    size_t len;
    char data[];
} gale_stream_data;

gale_future *gale_stream_read_until_future(gale_stream *s, const void *delim, size_t dlen,
                                           size_t max_bytes);
gale_future *gale_stream_read_until_regex_future(gale_stream *s, const char *pattern,
                                                 size_t max_bytes);
gale_future *gale_stream_read_bytes_future(gale_stream *s, size_t n, bool partial);
gale_future *gale_stream_read_until_close_future(gale_stream *s);

/* Copies `len` bytes and sends them; the future's result is NULL, once the bytes were handed to
 * the kernel (or it fails with the close reason). */
gale_future *gale_stream_write_future(gale_stream *s, const void *data, size_t len);

/* Connects as gale_stream_connect(); the future's result is the connected stream, owned by the
 * future until gale_future_steal_result() takes it (a future freed with the stream still inside
 * closes it, as gale_tcp_connect_future). On failure the stream is closed by the library and the
 * future fails with the reason. If the peer closes the connection while the stream still sits in
 * the future, the stream's close empties the future: its result (and steal_result) is then NULL,
 * so check it. */
gale_future *gale_stream_connect_future(gale_loop *loop, const struct sockaddr *addr,
                                        socklen_t addrlen);

#endif

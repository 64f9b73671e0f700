/* Internals shared by the stream and the modules that hand streams out through futures. */
#ifndef GALE_NET_IOSTREAM_INTERNAL_H
#define GALE_NET_IOSTREAM_INTERNAL_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buffer.h"
#include "core/future.h"
#include "net/iostream.h"
#include "net/tls_internal.h"

#define DELIM_INLINE 16

enum read_kind { RK_NONE, RK_UNTIL, RK_REGEX, RK_BYTES, RK_CLOSE, RK_STREAM, RK_SOME };

struct wreq;

/* What only some streams use, allocated on first use (gale__stream_ext), so that the stream of
 * an accepted plain connection carries none of it: a client's connect, the future holding the
 * stream as its result, the TLS handshake's deadline. */
struct gale__stream_ext {
    gale_future *owner_future; /* a connect future still holding this stream as its result */
    gale_done_cb connect_cb;
    void *connect_arg;
    gale_timeout handshake_timer;
    int connect_status;
};

/* The stream (net/iostream.c); net/iostream_tls.c reads and sets the TLS part. Laid out for an
 * idle connection's memory: 248 bytes on x86-64 (a 256-byte malloc chunk), the flags as bits,
 * the state of one kind of read sharing room with another's, what few streams use in `ext`. */
struct gale_stream {
    gale_loop *loop;
    struct gale__stream_ext *ext; /* NULL until a connect, future or handshake needs it */
    int fd;
    int refs; /* 1 while open + 1 per dispatch or queued deferred callback */
    int close_reason;
    unsigned events; /* interest registered with the loop */
    uint32_t klen;   /* delimiter length */
    uint8_t read_kind;
    uint8_t tls_rwant; /* GALE_WRITE: the last read waits for the socket to take bytes */
    uint8_t tls_wwant; /* GALE_READ: the last write waits for bytes to arrive */
    bool partial : 1;
    bool closed : 1;          /* close requested: fd closed, completions queued */
    bool finished : 1;        /* close sequence ran */
    bool deferred : 1;        /* deferred_run queued on the loop */
    bool delivering : 1;      /* inside a read callback of deliver(): reads just arm */
    bool connecting : 1;      /* connect() in progress */
    bool connect_pending : 1; /* connect callback not yet called */
    bool peer_eof : 1;        /* the peer's FIN was seen: no more reading; see settle_eof() */
    bool unwatched : 1;       /* hung up after the FIN: the fd is off the loop (see on_events) */
    bool handshaking : 1;     /* the TLS handshake runs: reads wait, writes queue */
    gale_buffer rbuf;
    size_t some_wait; /* read_some waits for more than this many bytes (its cb used none) */

    /* The pending read. */
    union {
        gale_read_cb read;
        gale_consume_cb consume;
    } rcb;
    void *rarg;
    size_t n; /* read_bytes: wanted; read_stream: left; until/regex: max_bytes (0: none) */
    union {
        size_t rscan;         /* regex: buffered length at the last failed scan (SIZE_MAX: none) */
        gale_read_cb done_cb; /* read_stream's end */
    };
    union {
        char inl[DELIM_INLINE];
        char *heap;
        regex_t *re;
    } key;

    struct wreq *wq_head, **wq_tail;     /* bytes not yet handed to the kernel */
    struct wreq *done_head, **done_tail; /* handed over, callback not yet run */
    size_t wpending;

    gale_done_cb close_cb;
    void *close_arg;
    gale_stream_hook owner_hook; /* the creator's close observer (the acceptor's count) */
    void *owner_arg;

    gale__tls *tls; /* TLS (net/iostream_tls.c): NULL for a plain stream */
};

/* The stream's `ext`, allocated (zeroed) on first use. NULL: out of memory. */
struct gale__stream_ext *gale__stream_ext(gale_stream *s);

/* The stream's own steps, for net/iostream_tls.c. */
void gale__stream_close_now(gale_stream *s, int reason);
void gale__stream_update_events(gale_stream *s);
void gale__stream_schedule(gale_stream *s);
void gale__stream_handle_read(gale_stream *s);
void gale__stream_handle_write(gale_stream *s);

/* TLS hooks the stream calls (net/iostream_tls.c). */
void gale__stream_tls_step(gale_stream *s);
void gale__stream_tls_closing(gale_stream *s);

/* Completes `f` with the connected stream `s` as its result, linked both ways: a future freed
 * with the stream inside closes it; a stream freed (its peer closed it) while still inside
 * empties the future first, so neither side touches freed memory. Returns as
 * gale_future_set_result() (on failure the stream is untouched and the caller closes it). */
int gale__stream_set_future_result(gale_future *f, gale_stream *s);

/* iostream_file.c: the file ranges in the write queue (gale_stream_sendfile). */

/* The release hook that marks a queued write as a file range: never called with a buffer. */
void gale__stream_file_range(void *unused);

/* Sends up to `len` bytes of file `fd` from `*offset` on socket `sock` (sendfile(2); the
 * offset advances by what was sent). Returns the bytes sent (> 0), -EAGAIN (the socket is full),
 * -EINTR, -EIO (the file ended before `len` bytes), or another negative errno. */
ssize_t gale__stream_send_file_head(int sock, int fd, off_t *offset, size_t len);

#endif

/* Internals shared by the stream and the modules that hand streams out through futures. */
#ifndef GALE_NET_IOSTREAM_INTERNAL_H
#define GALE_NET_IOSTREAM_INTERNAL_H

#include "core/future.h"
#include "net/iostream.h"

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

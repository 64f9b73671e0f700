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

#endif

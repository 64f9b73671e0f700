/* The part of a stream that only some streams use (struct gale__stream_ext: a client's connect,
 * the future holding the stream, the TLS handshake's deadline), allocated on first use so that
 * an accepted connection's stream stays small. The stream itself is iostream.c's; it frees this
 * with the stream. */
#include <stdlib.h>

#include "core/fault_internal.h"
#include "net/iostream_internal.h"

struct gale__stream_ext *gale__stream_ext(gale_stream *s)
{
    if (!s->ext && !gale__fault_alloc())
        s->ext = calloc(1, sizeof *s->ext);
    return s->ext;
}

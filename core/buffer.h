/* gale byte buffer: the read buffer under every stream.
 *
 * A contiguous array with a consume offset: bytes are appended at the end and consumed from the
 * front. Consuming only moves the offset (O(1)); space is reclaimed by compacting (memmove of the
 * live bytes to the front) only when the dead prefix is at least as large as the live bytes, or
 * growing (doubling) when it is not, so appends and consumes are amortised O(1) per byte. A buffer
 * that becomes empty drops its memory once it is larger than GALE_BUFFER_KEEP, so idle connections
 * hold nothing. The buffer never grows past `max` bytes of live data: appends beyond it fail with
 * -ENOBUFS and change nothing.
 *
 * Delimiter search remembers where it stopped: searching again for the same delimiter after more
 * appends resumes from the last position that could still start a match, so reading a line that
 * arrives one byte at a time costs O(n), not O(n^2). Consuming or searching for a different
 * delimiter resets that memory.
 *
 * The struct is public so it can be embedded; treat the fields as read-only.
 */
#ifndef GALE_CORE_BUFFER_H
#define GALE_CORE_BUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define GALE_BUFFER_KEEP 4096

typedef struct gale_buffer {
    char *data;           /* allocation (NULL when empty and released) */
    size_t start;         /* offset of the first live byte */
    size_t end;           /* offset one past the last live byte */
    size_t cap;           /* allocated size */
    size_t max;           /* cap on live bytes (SIZE_MAX when initialised with 0) */
    size_t scan;          /* delimiter search resumes here (offset relative to start) */
    const void *scan_key; /* delimiter the scan position belongs to */
    size_t scan_key_len;
} gale_buffer;

/* Initialises an empty buffer holding at most `max` live bytes (0: no cap). Allocates nothing. */
void gale_buffer_init(gale_buffer *b, size_t max);
/* Frees the memory; the buffer is empty and reusable afterwards. */
void gale_buffer_free(gale_buffer *b);

static inline size_t gale_buffer_len(const gale_buffer *b) { return b->end - b->start; }
static inline const char *gale_buffer_data(const gale_buffer *b) { return b->data + b->start; }

/* Changes the cap on live bytes (0: no cap). Returns 0, or -ENOBUFS (and changes nothing) if the
 * buffer already holds more than `max`. */
int gale_buffer_set_max(gale_buffer *b, size_t max);

/* Appends `len` bytes. Returns 0, -ENOBUFS (would exceed max) or -ENOMEM. */
int gale_buffer_append(gale_buffer *b, const void *data, size_t len);

/* Makes room for at least `len` more bytes and returns a pointer to it in `*p` (to recv into),
 * and in `*avail` how many bytes fit there (>= len, and never more than the cap allows). Returns 0,
 * -ENOBUFS or -ENOMEM. Follow with gale_buffer_commit(). */
int gale_buffer_reserve(gale_buffer *b, size_t len, char **p, size_t *avail);
/* Marks `len` bytes written at the reserved pointer as live (len <= the reserved avail). */
void gale_buffer_commit(gale_buffer *b, size_t len);

/* Forgets where the last delimiter search stopped (the next search starts at the front). Needed
 * when the memory a previous delimiter lived at is reused for a different delimiter. */
static inline void gale_buffer_reset_scan(gale_buffer *b)
{
    b->scan = 0;
    b->scan_key = NULL;
    b->scan_key_len = 0;
}

/* Drops `len` bytes (at most the live length) from the front. */
void gale_buffer_consume(gale_buffer *b, size_t len);

/* Searches the live bytes for `delim` (dlen >= 1). On a match returns true and sets `*pos` to the
 * offset of the match's first byte (relative to the live data). Resumes where the previous search
 * for the same `delim` pointer and length stopped. */
bool gale_buffer_find(gale_buffer *b, const void *delim, size_t dlen, size_t *pos);

/* Checks the internal invariants (for tests): returns 0 or -EFAULT. */
int gale_buffer_check(const gale_buffer *b);

#endif

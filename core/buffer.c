/* gale byte buffer: see buffer.h for the growth, release and search rules. */
#include "core/buffer.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Smallest allocation: enough for a typical request line and headers without regrowing. */
#define MIN_ALLOC 512

void gale_buffer_init(gale_buffer *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max ? max : SIZE_MAX;
}

void gale_buffer_free(gale_buffer *b)
{
    free(b->data);
    b->data = NULL;
    b->start = b->end = b->cap = 0;
    gale_buffer_reset_scan(b);
}

int gale_buffer_set_max(gale_buffer *b, size_t max)
{
    if (max == 0)
        max = SIZE_MAX;
    if (gale_buffer_len(b) > max)
        return -ENOBUFS;
    b->max = max;
    return 0;
}

/* Makes room for `len` more bytes after `end`. Compacts when the dead prefix is at least as large
 * as the live bytes and compaction alone makes room (the memmove is paid for by the bytes consumed
 * since the last move); otherwise doubles, copying only the live bytes into the new allocation. */
static int make_room(gale_buffer *b, size_t len)
{
    size_t live = b->end - b->start;
    if (len > b->max - live)
        return -ENOBUFS;
    if (b->cap - b->end >= len)
        return 0;
    if (b->start >= live && b->cap - live >= len) {
        memmove(b->data, b->data + b->start, live);
        b->start = 0;
        b->end = live;
        return 0;
    }
    size_t need = live + len;
    size_t ncap = b->cap > MIN_ALLOC / 2 ? b->cap : MIN_ALLOC / 2;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? SIZE_MAX : ncap * 2;
    /* At least twice the live bytes: a move must leave room for as many appends as it copied,
     * else a full buffer that trickles (consume a byte, append a byte) copies itself each time. */
    if (ncap / 2 < live)
        ncap = live > SIZE_MAX / 2 ? SIZE_MAX : live * 2;
    if (ncap > b->max)
        ncap = b->max; /* never allocate past the cap: need <= max holds */
    char *nd;
    if (b->start == 0) {
        nd = realloc(b->data, ncap);
        if (!nd)
            return -ENOMEM;
    } else {
        nd = malloc(ncap);
        if (!nd)
            return -ENOMEM;
        if (live)
            memcpy(nd, b->data + b->start, live);
        free(b->data);
    }
    b->data = nd;
    b->cap = ncap;
    b->start = 0;
    b->end = live;
    return 0;
}

int gale_buffer_append(gale_buffer *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    int rc = make_room(b, len);
    if (rc < 0)
        return rc;
    memcpy(b->data + b->end, data, len);
    b->end += len;
    return 0;
}

int gale_buffer_reserve(gale_buffer *b, size_t len, char **p, size_t *avail)
{
    if (len == 0)
        len = 1;
    int rc = make_room(b, len);
    if (rc < 0)
        return rc;
    size_t room = b->cap - b->end;
    size_t allowed = b->max - (b->end - b->start);
    *p = b->data + b->end;
    *avail = room < allowed ? room : allowed;
    return 0;
}

void gale_buffer_commit(gale_buffer *b, size_t len) { b->end += len; }

void gale_buffer_consume(gale_buffer *b, size_t len)
{
    size_t live = b->end - b->start;
    if (len > live)
        len = live;
    b->start += len;
    gale_buffer_reset_scan(b);
    if (b->start == b->end) {
        if (b->cap > GALE_BUFFER_KEEP) {
            free(b->data);
            b->data = NULL;
            b->cap = 0;
        }
        b->start = b->end = 0;
    }
}

bool gale_buffer_find(gale_buffer *b, const void *delim, size_t dlen, size_t *pos)
{
    size_t live = b->end - b->start;
    if (dlen == 0 || !delim)
        return false;
    size_t from = 0;
    if (b->scan_key == delim && b->scan_key_len == dlen && b->scan <= live)
        from = b->scan;
    b->scan_key = delim;
    b->scan_key_len = dlen;
    if (live < dlen || live - from < dlen) {
        /* Not enough bytes after `from` for a match: resume at the same place next time. */
        b->scan = from;
        return false;
    }
    const char *base = b->data + b->start;
    const char *hit;
    if (dlen == 1)
        hit = memchr(base + from, *(const unsigned char *)delim, live - from);
    else
        hit = memmem(base + from, live - from, delim, dlen);
    if (hit) {
        *pos = (size_t)(hit - base);
        b->scan = *pos; /* searching again without consuming finds the same match at once */
        return true;
    }
    /* The last dlen - 1 bytes may begin a match that more bytes complete. */
    b->scan = live - dlen + 1;
    return false;
}

int gale_buffer_check(const gale_buffer *b)
{
    if (b->start > b->end || b->end > b->cap)
        return -EFAULT;
    if (!b->data && (b->cap != 0 || b->end != 0))
        return -EFAULT;
    if (b->data && b->cap == 0)
        return -EFAULT;
    if (b->max == 0 || b->end - b->start > b->max)
        return -EFAULT;
    if (b->start == b->end && b->cap > GALE_BUFFER_KEEP && b->start != 0)
        return -EFAULT;
    if (b->scan_key && b->scan > b->end - b->start)
        return -EFAULT;
    if (!b->scan_key && b->scan != 0)
        return -EFAULT;
    return 0;
}

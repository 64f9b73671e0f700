/* Copies of a few bytes to a few dozen, inlined (not installed). The response head and the
 * access line are assembled from many short strings whose lengths are known only at run time: a
 * call to memcpy costs more than the copy itself at these sizes. */
#ifndef GALE_CORE_COPY_INTERNAL_H
#define GALE_CORE_COPY_INTERNAL_H

#include <stddef.h>
#include <string.h>

/* memcpy(d, s, n) for non-overlapping buffers. Up to 32 bytes, two fixed-size moves that may
 * overlap each other inside [d, d + n) and read only [s, s + n); longer copies call memcpy. */
static inline __attribute__((always_inline)) void gale__copy(char *d, const char *s, size_t n)
{
    if (n >= 8) {
        if (n > 32) {
            memcpy(d, s, n);
        } else if (n > 16) {
            memcpy(d, s, 16);
            memcpy(d + n - 16, s + n - 16, 16);
        } else {
            memcpy(d, s, 8);
            memcpy(d + n - 8, s + n - 8, 8);
        }
    } else if (n >= 4) {
        memcpy(d, s, 4);
        memcpy(d + n - 4, s + n - 4, 4);
    } else if (n) {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
}

#endif

/* Copies of a few bytes to a few dozen, and zeroing of a few hundred, inlined (not installed).
 * The response head and the access line are assembled from many short strings whose lengths are
 * known only at run time: a call to memcpy costs more than the copy itself at these sizes. */
#ifndef GALE_CORE_COPY_INTERNAL_H
#define GALE_CORE_COPY_INTERNAL_H

#include <stddef.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

/* memset(d, 0, n) for a block of a few hundred bytes of constant size (a request's or a handler's
 * fixed part): 16-byte stores, four to a step. Compilers otherwise pick `rep stos` at these
 * sizes, whose start-up costs tens of cycles on every request. */
static inline __attribute__((always_inline)) void gale__zero(void *d, size_t n)
{
#ifdef __SSE2__
    char *p = d;
    const __m128i z = _mm_setzero_si128();
    size_t i = 0;
#pragma GCC unroll 16
    for (; i + 64 <= n; i += 64) {
        _mm_storeu_si128((__m128i *)(void *)(p + i), z);
        _mm_storeu_si128((__m128i *)(void *)(p + i + 16), z);
        _mm_storeu_si128((__m128i *)(void *)(p + i + 32), z);
        _mm_storeu_si128((__m128i *)(void *)(p + i + 48), z);
    }
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(void *)(p + i), z);
    memset(p + i, 0, n - i);
#else
    memset(d, 0, n);
#endif
}

#endif

/* gale HTTP utilities: header lists, status reasons, the cached Date header.
 *
 * Header names and values are slices (pointer + length) — into the connection's read buffer for
 * request headers, or copies owned by the response for response headers. Lookups are
 * case-insensitive; a name may repeat and the order of arrival is kept.
 */
#ifndef GALE_HTTP_HTTPUTIL_H
#define GALE_HTTP_HTTPUTIL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gale_str {
    const char *p;
    size_t len;
} gale_str;

typedef struct gale_http_header {
    gale_str name;
    gale_str value;
} gale_http_header;

typedef struct gale_http_headers {
    gale_http_header *items;
    size_t n;
    size_t cap;
} gale_http_headers;

/* Returns the value of the first header called `name` (case-insensitive), or NULL; stores its
 * length in `*len` (may be NULL). The pointer is not NUL-terminated: use the length. */
const char *gale_http_headers_get(const gale_http_headers *h, const char *name, size_t *len);

/* Iterates the headers called `name`: pass *cursor = 0 first; returns the next matching header or
 * NULL at the end. */
const gale_http_header *gale_http_headers_next(const gale_http_headers *h, const char *name,
                                               size_t *cursor);

/* Appends a header slice (the bytes are not copied). Returns 0 or -ENOMEM. */
int gale_http_headers_add(gale_http_headers *h, const char *name, size_t name_len,
                          const char *value, size_t value_len);

/* Frees the slice array (not the bytes it points at). */
void gale_http_headers_free(gale_http_headers *h);

/* True when the comma-separated header `name` contains `token` (case-insensitive), e.g.
 * Connection: keep-alive, Upgrade. */
bool gale_http_headers_has_token(const gale_http_headers *h, const char *name, const char *token);

/* Standard reason phrase for `code` ("Not Found"), or "Unknown" for codes without one. */
const char *gale_http_reason(int code);

/* The current IMF-fixdate ("Wed, 25 Nov 2026 19:18:05 GMT", 29 chars, NUL-terminated), cached and
 * recomputed at most once a second on this thread. */
const char *gale_http_date(void);

/* Formats `t` (seconds since the epoch) as an IMF-fixdate into `buf` (at least 30 bytes). */
void gale_http_format_date(long long t, char *buf);

/* Case-insensitive equality of a slice and a NUL-terminated string. */
bool gale_str_ieq(const char *p, size_t len, const char *s);

/* True when `ch` is an RFC 9110 (5.6.2) tchar: a visible ASCII character other than a
 * delimiter. Header names and methods are tokens: one or more tchars. */
bool gale_http_is_tchar(unsigned char ch);

/* True when the `len` bytes at `p` are a token (len > 0, every byte a tchar). */
bool gale_http_is_token(const char *p, size_t len);

/* True when the `len` bytes at `p` may appear in a field value (RFC 9110 5.5): visible
 * characters, SP, HTAB and obs-text; no CR, LF, NUL or other control byte. */
bool gale_http_is_field_value(const char *p, size_t len);

/* Strips the optional whitespace (SP and HTAB, RFC 9110 5.6.3) around a slice: returns its new
 * start and stores its new length in `*len`. */
const char *gale_http_trim_ows(const char *p, size_t *len);

#endif

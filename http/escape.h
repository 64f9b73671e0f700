/* Escaping for the places a handler puts text: HTML (Tornado's xhtml_escape) and URLs
 * (url_escape; url_unescape is gale_url_unescape in http/form.h).
 *
 * The plain functions write into a buffer the caller sized with the *_MAX macros; the gale_write_*
 * and *_dup helpers take a handler and use its response or request arena. None keeps state;
 * all are thread-safe.
 */
#ifndef GALE_HTTP_ESCAPE_H
#define GALE_HTTP_ESCAPE_H

#include <stdbool.h>
#include <stddef.h>

#include "http/web.h"

/* Room gale_xhtml_escape / gale_url_escape need for `len` input bytes (worst case). */
#define GALE_XHTML_ESCAPE_MAX(len) ((len)*6)
#define GALE_URL_ESCAPE_MAX(len) ((len)*3)

/* Tornado's xhtml_escape: writes `src[0..len)` to `dst` with & < > " ' replaced by &amp; &lt;
 * &gt; &quot; &#39;, so the text is safe in element content and in quoted attribute values.
 * Other bytes (UTF-8 included) are copied. `dst` holds GALE_XHTML_ESCAPE_MAX(len) bytes and must
 * not overlap `src`. Returns the length written; does not NUL-terminate. */
size_t gale_xhtml_escape(char *dst, const char *src, size_t len);

/* Tornado's url_escape: percent-encodes every byte but ASCII letters, digits and "_.-~". With
 * `plus` (Tornado's default, for query values) a space becomes '+' and '/' is encoded; without
 * it (a path segment) a space is %20 and '/' stays. `dst` holds GALE_URL_ESCAPE_MAX(len) bytes.
 * Returns the length written; does not NUL-terminate. */
size_t gale_url_escape(char *dst, const char *src, size_t len, bool plus);

/* Appends `s` (NUL-terminated) xhtml-escaped to the response body. Returns as gale_write():
 * 0, -EINVAL (NULL), -EALREADY (finished) or -ENOMEM. */
int gale_write_escaped(gale_handler *h, const char *s);

/* NUL-terminated escaped copies of `s` in the request's arena (freed with the request), or NULL
 * when `s` is NULL or memory ran out. */
const char *gale_xhtml_escape_dup(gale_handler *h, const char *s);
const char *gale_url_escape_dup(gale_handler *h, const char *s, bool plus);

#endif

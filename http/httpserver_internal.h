/* The web layer's fast path into the HTTP server's response (not installed). */
#ifndef GALE_HTTP_HTTPSERVER_INTERNAL_H
#define GALE_HTTP_HTTPSERVER_INTERNAL_H

#include <stddef.h>

#include "http/httpserver.h"

/* One header line, "Name: value\r\n", written as it is right after Server and Date and before
 * the headers added with gale_http_response_add_header and friends: for a default that applies
 * to most responses (the web layer's Content-Type), so that it costs one copy rather than a
 * header entry. `line` (len bytes) must stay valid until the response finishes (a constant) and
 * must not be Server, Date, Content-Length, Transfer-Encoding or Connection: the server does not
 * check it. gale_http_response_clear_header (and so set_header) of its name removes it; a second
 * call replaces it; len 0 removes it. Returns 0, -EINVAL or -EALREADY (headers sent). */
int gale__http_response_preset(gale_http_request *req, const char *line, size_t len);

/* gale_http_request_alloc without the zeroing: for a block the caller initialises itself. */
void *gale__http_request_alloc_raw(gale_http_request *req, size_t size);

/* The body buffered since the last flush: `*len` bytes at the pointer returned (NULL when none),
 * valid until the next write, clear or flush. For an output filter that replaces it (clear the
 * body, then write the new bytes). */
const char *gale__http_response_buffered(gale_http_request *req, size_t *len);

#endif

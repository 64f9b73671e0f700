/* The web layer's fast path into the HTTP server's response (not installed). */
#ifndef GALE_HTTP_HTTPSERVER_INTERNAL_H
#define GALE_HTTP_HTTPSERVER_INTERNAL_H

#include <stddef.h>

#include <sys/types.h>

#include "http/httpserver.h"
#include "net/iostream.h"

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

/* Queues `len` bytes of file `fd` from `offset` as the next part of the body of a response whose
 * headers went out with a Content-Length (gale_http_response_flush after setting it), behind
 * everything written before: sendfile(2), zero copy, under the connection's write back-pressure
 * and stall deadline. `fd` is borrowed and must stay open until `cb` runs (from the loop: 0 once
 * the kernel has every byte, else the connection's end). Returns 0, -EINVAL (headers not sent,
 * not length-framed, bytes still buffered, or more than the Content-Length), -EALREADY
 * (finished), -EPIPE (connection gone) or -ENOMEM; on error `cb` is not called. */
int gale__http_response_sendfile(gale_http_request *req, int fd, off_t offset, size_t len,
                                 gale_done_cb cb, void *arg);

#endif

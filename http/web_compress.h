/* gzip for responses: Tornado's compress_response setting (GZipContentEncoding).
 *
 * With gale_app_set_compress(app, true), a response is gzipped (zlib, level 6) when its
 * Content-Type is compressible (any text type, JSON, JavaScript, XML, SVG), it has no Content-Encoding
 * yet and is not a range (206 or Content-Range), the request's Accept-Encoding allows gzip
 * (q-values honoured: "gzip;q=0" refuses it, "*" covers it unless gzip is listed), and the body
 * is at least 1024 bytes when it is complete at the finish. A response flushed in pieces is
 * compressed piece by piece (each flush ends in a zlib sync flush, so the client can inflate
 * what it has), with chunked framing. A Content-Length the handler set becomes the compressed
 * length (finish) or is dropped (flushed response). Every compressible response gets
 * "Vary: Accept-Encoding", compressed or not, so caches keep both forms apart. HEAD gets the
 * headers GET would have. Static files (gale_static_handler) are sent as they are on disk.
 * Without zlib at build time, setting it on returns -ENOTSUP.
 */
#ifndef GALE_HTTP_WEB_COMPRESS_H
#define GALE_HTTP_WEB_COMPRESS_H

#include <stdbool.h>

#include "http/web.h"

/* Turns compression of the app's responses on or off (off by default). Returns 0, -EINVAL (NULL
 * app) or -ENOTSUP (gale built without zlib). */
int gale_app_set_compress(gale_app *app, bool on);

/* Whether the request's Accept-Encoding allows `coding` (e.g. "gzip"): listed with q > 0, or
 * covered by "*" with q > 0 and not listed. No Accept-Encoding header: false. */
bool gale_accepts_encoding(gale_handler *h, const char *coding);

#endif

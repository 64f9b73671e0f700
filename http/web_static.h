/* Static files: Tornado's StaticFileHandler and static_url.
 *
 *     gale_app_set_static_path(app, "/srv/www/static", NULL);   (serves /static/<path>)
 *
 * GET and HEAD /static/<path> answer the file `<dir>/<path>` with Content-Type from its
 * extension (html css js mjs json png jpg gif svg ico webp txt wasm woff2 and a few more;
 * application/octet-stream otherwise), Content-Length, Last-Modified, a strong ETag (from the
 * file's inode, size and modification time, as nginx's), and Accept-Ranges: bytes.
 *
 * Conditional requests follow RFC 9110 section 13 in its order: If-Match (strong comparison)
 * or, without it, If-Unmodified-Since failing answers 412; If-None-Match (a list, or "*"; weak
 * comparison) answers 304 when it matches; If-Modified-Since counts only without If-None-Match.
 * A single Range ("bytes=a-b", "a-", "-n") answers 206 with Content-Range; one that no byte of
 * the file satisfies answers 416 with a Content-Range of "bytes *" "/<length>"; several ranges, or a malformed header, get the whole
 * file (200), as RFC 9110 allows. If-Range with a validator that no longer matches (an ETag
 * compared strongly, or a date other than the file's Last-Modified) also gets the whole file.
 * A request carrying the "v" argument (from gale_static_url) gets
 * "Cache-Control: public, max-age=31536000" (a year).
 *
 * Paths are confined to the directory: a path with a ".." or "." segment (also when written
 * %2e%2e, since path arguments are decoded), an absolute one, or one with a NUL is refused with
 * 403 (404 for the NUL), and the file is opened with openat2(RESOLVE_BENEATH), so a symlink
 * pointing outside the directory is refused (403) too while one inside it is followed.
 * Directories answer 403 (no listing); anything but a regular file 404.
 *
 * The body is sent with sendfile(2) from the file opened once for the request and kept open
 * until the last byte has left: zero copy, never blocking the loop, and paced by the client (a
 * slow reader holds only its own connection's file range, not memory). Responses are never
 * gzipped (web_compress.h).
 */
#ifndef GALE_HTTP_WEB_STATIC_H
#define GALE_HTTP_WEB_STATIC_H

#include "http/web.h"

/* Serves the files under directory `dir` at `url_prefix` (NULL: "/static/"; it must start and
 * end with '/'), as Tornado's static_path and static_url_prefix settings. Both are copied.
 * Returns 0, -EINVAL (NULL app or dir, a bad prefix, or already set), -ENOENT or -ENOTDIR (dir is
 * not a directory; logged), -ENOMEM, or the route's error. */
int gale_app_set_static_path(gale_app *app, const char *dir, const char *url_prefix);

/* Tornado's static_url: the URL of static file `path` with a version argument from a hash of
 * its content, "/static/css/site.css?v=1f3a9c0e2b7d5a48", so that a page can let browsers cache
 * it for a year and still see a change at once. The hash is cached per file (recomputed when its
 * size or modification time changes); computing it reads the whole file on the loop's thread, as
 * Tornado does, so a page linking a very large file pays that once per change. Without a version (the file cannot be read) the URL has
 * none. Returns a string in the request's arena, or NULL (no static path set, out of memory). */
const char *gale_static_url(gale_handler *h, const char *path);

/* The handler class gale_app_set_static_path routes, for a route of one's own: the first
 * capture group is the path within the directory, and `arg` is ignored (the app's static path
 * serves). */
extern const gale_handler_class gale_static_handler;

#endif

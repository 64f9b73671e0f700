/* The HTTP client's private parts shared between its files (not installed). */
#ifndef GALE_HTTP_HTTPCLIENT_INTERNAL_H
#define GALE_HTTP_HTTPCLIENT_INTERNAL_H

#include <stddef.h>

/* An absolute http URL split into what a request needs. Every string is malloc'ed. */
struct gale__url {
    char *host; /* without brackets */
    int port;
    char *hostport; /* Host header value */
    char *target;   /* path and query */
    char *userinfo; /* NULL when absent */
};

/* Splits an absolute http URL into `u` (the fragment is dropped). Returns 0, -EINVAL (malformed),
 * GALE_ESCHEME (another scheme) or -ENOMEM; on failure `u` holds nothing to free. */
int gale__url_parse(const char *url, struct gale__url *u);

/* Frees the strings of `u` and zeroes it. */
void gale__url_free(struct gale__url *u);

/* Resolves a Location value (any URI reference) against the URL it came from, as RFC 3986 5.2.2
 * says: strict (a reference with a scheme is absolute), merge, then remove_dot_segments (5.2.4),
 * fragment from the reference. Returns a malloc'ed URL, to be checked with gale__url_parse, or
 * NULL (out of memory, or a base without a scheme). */
char *gale__url_resolve(const char *base, const char *loc);

/* The URL's userinfo as Basic credentials: base64 of `userinfo`, as sent after
 * "Authorization: Basic ". Returns a malloc'ed string or NULL (out of memory). */
char *gale__url_basic_credentials(const char *userinfo);

/* asprintf that returns the string, or NULL when out of memory. */
char *gale__dup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif

/* The HTTP client's URLs: splitting an absolute http URL into host, port, Host header and request
 * target, resolving a redirect's Location against the URL it answered, and turning the URL's
 * userinfo into Basic credentials. No I/O here: httpclient.c calls these when a fetch starts and
 * when it follows a redirect. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "http/httpclient_internal.h"
#include "http/httputil.h"

char *gale__dup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

void gale__url_free(struct gale__url *u)
{
    free(u->host);
    free(u->hostport);
    free(u->target);
    free(u->userinfo);
    memset(u, 0, sizeof *u);
}

/* Checks that `url` has no whitespace or control characters and an RFC 3986 scheme, which is
 * "http". Sets *sep to the "://". Returns 0, -EINVAL or GALE_ESCHEME. */
static int check_scheme(const char *url, const char **sep)
{
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return -EINVAL;
    *sep = strstr(url, "://");
    if (!*sep || *sep == url)
        return -EINVAL;
    for (const char *p = url; p < *sep; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (p > url && ((*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.'));
        if (!ok)
            return -EINVAL;
    }
    return gale_str_ieq(url, (size_t)(*sep - url), "http") ? 0 : GALE_ESCHEME;
}

/* The host and port parts of an authority's "host[:port]" or "[v6]:port" (`hp`, `hplen` bytes).
 * The port is absent when *plen is 0. */
struct hostport {
    const char *host, *port;
    size_t hlen, plen;
    bool v6;
};

/* Splits "host[:port]" or "[v6][:port]". Returns 0 or -EINVAL. */
static int split_hostport(const char *hp, size_t hplen, struct hostport *out)
{
    const char *rest = hp + hplen;
    *out = (struct hostport){0};
    if (hplen && hp[0] == '[') {
        const char *close = memchr(hp, ']', hplen);
        if (!close || close == hp + 1)
            return -EINVAL;
        out->host = hp + 1;
        out->hlen = (size_t)(close - out->host);
        for (size_t i = 0; i < out->hlen; i++) {
            char ch = out->host[i];
            if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                  (ch >= 'A' && ch <= 'F') || ch == ':' || ch == '.'))
                return -EINVAL;
        }
        out->v6 = true;
        const char *after = close + 1;
        if (after < rest) {
            if (*after != ':')
                return -EINVAL;
            out->port = after + 1;
            out->plen = (size_t)(rest - out->port);
        }
    } else {
        const char *colon = memchr(hp, ':', hplen);
        out->host = hp;
        out->hlen = colon ? (size_t)(colon - hp) : hplen;
        if (colon) {
            out->port = colon + 1;
            out->plen = (size_t)(rest - out->port);
        }
        for (size_t i = 0; i < out->hlen; i++)
            if (strchr("[]@:", out->host[i]))
                return -EINVAL;
    }
    return out->hlen ? 0 : -EINVAL;
}

/* A port of 1..65535 in decimal (`len` digits; 0: the default, 80). Returns it or -EINVAL. */
static int parse_port(const char *p, size_t len)
{
    if (len == 0)
        return 80;
    if (len > 5)
        return -EINVAL;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        v = v * 10 + (p[i] - '0');
    }
    return v < 1 || v > 65535 ? -EINVAL : (int)v;
}

/* Fills host, target and hostport from the split parts; `rest` is the path, query and fragment
 * after the authority. Returns 0 or -ENOMEM. */
static int fill_url(struct gale__url *u, const struct hostport *hp, const char *rest)
{
    int hlen = (int)hp->hlen;
    u->host = strndup(hp->host, hp->hlen);
    size_t tlen = strcspn(rest, "#");
    if (tlen == 0 || rest[0] == '?')
        u->target = gale__dup_printf("/%.*s", (int)tlen, rest);
    else
        u->target = strndup(rest, tlen);
    if (u->port == 80)
        u->hostport = gale__dup_printf(hp->v6 ? "[%.*s]" : "%.*s", hlen, hp->host);
    else
        u->hostport = gale__dup_printf(hp->v6 ? "[%.*s]:%d" : "%.*s:%d", hlen, hp->host, u->port);
    return u->host && u->target && u->hostport ? 0 : -ENOMEM;
}

int gale__url_parse(const char *url, struct gale__url *u)
{
    memset(u, 0, sizeof *u);
    const char *sep;
    int rc = check_scheme(url, &sep);
    if (rc)
        return rc;
    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "/?#");
    const char *rest = auth + alen;
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++)
        if (auth[i] == '@')
            at = auth + i;
    const char *hp = auth;
    if (at) {
        u->userinfo = strndup(auth, (size_t)(at - auth));
        if (!u->userinfo)
            return -ENOMEM;
        hp = at + 1;
    }
    struct hostport parts;
    rc = split_hostport(hp, (size_t)(rest - hp), &parts);
    int port = rc ? rc : parse_port(parts.port, parts.plen);
    if (port < 0) {
        gale__url_free(u);
        return -EINVAL;
    }
    u->port = port;
    rc = fill_url(u, &parts, rest);
    if (rc)
        gale__url_free(u);
    return rc;
}

char *gale__url_resolve(const char *base, const char *loc)
{
    size_t schemelen = strcspn(loc, ":/?#");
    if (loc[schemelen] == ':' && schemelen > 0)
        return strdup(loc); /* absolute: scheme://... (validated by gale__url_parse) */
    const char *sep = strstr(base, "://");
    if (!sep)
        return NULL;
    const char *auth = sep + 3;
    const char *path = auth + strcspn(auth, "/?#");
    if (loc[0] == '/' && loc[1] == '/')
        return gale__dup_printf("%.*s%s", (int)(sep + 1 - base), base, loc); /* scheme-relative */
    if (loc[0] == '/')
        return gale__dup_printf("%.*s%s", (int)(path - base), base, loc);
    size_t pathlen = strcspn(path, "?#");
    if (loc[0] == '?' || loc[0] == '\0')
        return gale__dup_printf("%.*s%s", (int)(path - base + pathlen), base, loc);
    /* relative path: replace the last segment of the base path */
    size_t dir = 0;
    for (size_t i = 0; i < pathlen; i++)
        if (path[i] == '/')
            dir = i + 1;
    if (dir == 0)
        return gale__dup_printf("%.*s/%s", (int)(path - base), base, loc);
    return gale__dup_printf("%.*s%s", (int)(path - base + dir), base, loc);
}

char *gale__url_basic_credentials(const char *userinfo)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *in = userinfo;
    size_t n = strlen(in);
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned char)in[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)in[i + 2];
        *o++ = tab[(v >> 18) & 63];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? tab[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

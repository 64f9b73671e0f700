/* The HTTP client's URLs: splitting an absolute http URL into host, port, Host header and request
 * target, resolving a redirect's Location against the URL it answered (RFC 3986 5.2: merge, then
 * remove dot segments), and turning the URL's
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

char *gale__concat(size_t n, const struct gale__str *parts)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += parts[i].len;
    char *s = malloc(len + 1), *o = s;
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        memcpy(o, parts[i].p, parts[i].len);
        o += parts[i].len;
    }
    *o = '\0';
    return s;
}

char *gale__dup_n(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
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
 * "http" or "https" (then *tls). Sets *sep to the "://". Returns 0, -EINVAL or GALE_ESCHEME. */
static int check_scheme(const char *url, const char **sep, bool *tls)
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
    *tls = gale_str_ieq(url, (size_t)(*sep - url), "https");
    return *tls || gale_str_ieq(url, (size_t)(*sep - url), "http") ? 0 : GALE_ESCHEME;
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
static int parse_port(const char *p, size_t len, bool tls)
{
    if (len == 0)
        return tls ? 443 : 80;
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
    u->host = gale__dup_n(hp->host, hp->hlen);
    size_t tlen = strcspn(rest, "#");
    if (tlen == 0 || rest[0] == '?')
        u->target = gale__concat(2, (struct gale__str[]){{"/", 1}, {rest, tlen}});
    else
        u->target = gale__dup_n(rest, tlen);
    /* Built by hand, not with a printf: this runs for every request. */
    char port[8];
    size_t plen = 0;
    if (u->port != (u->tls ? 443 : 80)) {
        char digits[6];
        size_t nd = 0;
        for (int v = u->port; v > 0; v /= 10)
            digits[nd++] = (char)('0' + v % 10);
        port[plen++] = ':';
        while (nd)
            port[plen++] = digits[--nd];
    }
    u->hostport = gale__concat(
        4, (struct gale__str[]){{"[", hp->v6}, {hp->host, hp->hlen}, {"]", hp->v6}, {port, plen}});
    return u->host && u->target && u->hostport ? 0 : -ENOMEM;
}

int gale__url_parse(const char *url, struct gale__url *u)
{
    memset(u, 0, sizeof *u);
    const char *sep;
    bool tls = false;
    int rc = check_scheme(url, &sep, &tls);
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
    int port = rc ? rc : parse_port(parts.port, parts.plen, tls);
    if (port < 0) {
        gale__url_free(u);
        return -EINVAL;
    }
    u->port = port;
    u->tls = tls;
    u->scheme = tls ? "https" : "http"; /* the pool key's part */
    rc = fill_url(u, &parts, rest);
    if (rc)
        gale__url_free(u);
    return rc;
}

/* A URI reference split as RFC 3986 appendix B does:
 * ^(([^:/?#]+):)?(//([^/?#]*))?([^?#]*)(\?([^#]*))?(#(.*))? ; each part is a slice of the
 * reference, `p == NULL` when the component is undefined (which differs from empty). */
struct slice {
    const char *p;
    size_t len;
};
struct uri_ref {
    struct slice scheme, authority, path, query, fragment;
};

static void split_ref(const char *s, struct uri_ref *r)
{
    memset(r, 0, sizeof *r);
    size_t n = strcspn(s, ":/?#");
    if (s[n] == ':' && n > 0) {
        r->scheme = (struct slice){s, n};
        s += n + 1;
    }
    if (s[0] == '/' && s[1] == '/') {
        s += 2;
        n = strcspn(s, "/?#");
        r->authority = (struct slice){s, n};
        s += n;
    }
    n = strcspn(s, "?#");
    r->path = (struct slice){s, n}; /* always defined, maybe empty */
    s += n;
    if (*s == '?') {
        n = strcspn(s + 1, "#");
        r->query = (struct slice){s + 1, n};
        s += n + 1;
    }
    if (*s == '#')
        r->fragment = (struct slice){s + 1, strlen(s + 1)};
}

static bool has_prefix(const char *p, size_t len, const char *pre)
{
    size_t n = strlen(pre);
    return len >= n && memcmp(p, pre, n) == 0;
}

static bool equals(const char *p, size_t len, const char *s)
{
    return len == strlen(s) && memcmp(p, s, len) == 0;
}

/* RFC 3986 5.2.4 remove_dot_segments on the NUL-terminated, writable `in`, in place (the output
 * is never longer than what has been consumed of the input). Returns `in`. */
static char *remove_dot_segments(char *in)
{
    char *p = in;            /* the input buffer's start */
    size_t len = strlen(in); /* bytes left in the input buffer */
    size_t out = 0;          /* output buffer: in[0..out) */
    while (len > 0) {
        if (has_prefix(p, len, "../")) { /* A */
            p += 3, len -= 3;
        } else if (has_prefix(p, len, "./")) {
            p += 2, len -= 2;
        } else if (has_prefix(p, len, "/./")) { /* B */
            p += 2, len -= 2;
        } else if (equals(p, len, "/.")) {
            p += 1, len -= 1;
            p[0] = '/';
        } else if (has_prefix(p, len, "/../") || equals(p, len, "/..")) { /* C */
            size_t skip = len == 3 ? 2 : 3;
            p += skip, len -= skip;
            p[0] = '/';
            while (out > 0 && in[out - 1] != '/')
                out--;
            if (out > 0)
                out--;                                            /* the segment's leading "/" */
        } else if (equals(p, len, ".") || equals(p, len, "..")) { /* D */
            len = 0;
        } else { /* E: the first segment, with its leading "/" if any */
            size_t seg = 1 + strcspn(p + 1, "/");
            if (seg > len)
                seg = len;
            memmove(in + out, p, seg);
            out += seg;
            p += seg, len -= seg;
        }
    }
    in[out] = '\0';
    return in;
}

/* 5.2.3 merge: the base path up to its last "/" (or "/" when the base has an authority and an
 * empty path) followed by the reference's path. Returns a malloc'ed string or NULL. */
static char *merge_paths(const struct uri_ref *b, const struct slice *rpath)
{
    if (b->authority.p && b->path.len == 0)
        return gale__dup_printf("/%.*s", (int)rpath->len, rpath->p);
    size_t dir = b->path.len;
    while (dir > 0 && b->path.p[dir - 1] != '/')
        dir--;
    return gale__dup_printf("%.*s%.*s", (int)dir, b->path.p, (int)rpath->len, rpath->p);
}

static char *dup_slice(const struct slice *s) { return strndup(s->p ? s->p : "", s->len); }

/* 5.3 recomposition. `path` is NUL-terminated; the other parts are slices (undefined: skipped). */
static char *compose(const struct slice *scheme, const struct slice *auth, const char *path,
                     const struct slice *query, const struct slice *frag)
{
    return gale__dup_printf("%.*s%s%s%.*s%s%s%.*s%s%.*s", (int)scheme->len,
                            scheme->p ? scheme->p : "", scheme->p ? ":" : "", auth->p ? "//" : "",
                            (int)auth->len, auth->p ? auth->p : "", path, query->p ? "?" : "",
                            (int)query->len, query->p ? query->p : "", frag->p ? "#" : "",
                            (int)frag->len, frag->p ? frag->p : "");
}

char *gale__url_resolve(const char *base, const char *loc)
{
    struct uri_ref b, r;
    split_ref(base, &b);
    split_ref(loc, &r);
    if (!b.scheme.p)
        return NULL; /* the base must be absolute */
    /* 5.2.2, strict form: a reference with a scheme is taken as is (but its dot segments). */
    struct slice scheme = r.scheme.p ? r.scheme : b.scheme;
    struct slice auth = r.scheme.p || r.authority.p ? r.authority : b.authority;
    struct slice query = r.query;
    char *path;
    if (r.scheme.p || r.authority.p) {
        path = dup_slice(&r.path);
    } else if (r.path.len == 0) {
        path = dup_slice(&b.path);
        if (!r.query.p)
            query = b.query;
    } else if (r.path.p[0] == '/') {
        path = dup_slice(&r.path);
    } else {
        path = merge_paths(&b, &r.path);
    }
    if (!path)
        return NULL;
    /* The base path is used unchanged when the reference has none (5.2.2: T.path = Base.path). */
    if (r.scheme.p || r.authority.p || r.path.len)
        remove_dot_segments(path);
    char *out = compose(&scheme, &auth, path, &query, &r.fragment);
    free(path);
    return out;
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

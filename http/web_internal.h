/* The web layer's private parts shared between its files (not installed). */
#ifndef GALE_HTTP_WEB_INTERNAL_H
#define GALE_HTTP_WEB_INTERNAL_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "http/httpserver.h"
#include "http/web.h"

/* One route: a literal path compared byte for byte, or a compiled anchored regex. */
struct gale__route {
    regex_t re;
    bool compiled;
    char *literal; /* the path itself when the pattern has no regex syntax (no regexec) */
    /* The literal every matching path starts with: for a pattern "<literal>(.*)" all there is
     * to match (`compiled` false: no regexec), for another regex a check before regexec. */
    char *prefix;
    size_t prefix_len;
    const gale_handler_class *cls;
    void *arg;
    void (*arg_free)(void *arg); /* frees `arg` with the table (NULL: the caller's) */
    size_t ngroups;              /* user capture groups (the anchoring wrapper's group excluded) */
};

/* An application's routes in the order added. Zero-initialised is empty. */
typedef struct gale__route_table {
    struct gale__route *routes;
    size_t n, cap;
} gale__route_table;

/* Appends a route for `pattern` (gale_app_route's rules: anchored, Python's re spellings
 * translated or refused). `pattern` and `cls` are not NULL. Returns 0, -EINVAL (the pattern does
 * not compile; logged) or -ENOMEM. */
int gale__route_add(gale__route_table *t, const char *pattern, const gale_handler_class *cls,
                    void *arg);

/* The first route matching the request's path, or NULL. `*pm` gets the capture offsets (index 2
 * onward are the user's groups) from `stack` when `nstack` holds them, else from the request
 * arena; it is left alone for a literal route, which has no groups. Inline: it runs for every
 * request (web.c's on_request) and for the head of every request with a body (on_head: whether
 * its class streams the body), and a call out of on_request costs the hot path. */
static inline __attribute__((always_inline)) const struct gale__route *
gale__route_match(const gale__route_table *t, gale_http_request *req, regmatch_t *stack,
                  size_t nstack, regmatch_t **pm)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct gale__route *r = &t->routes[i];
        if (r->literal) {
            /* Inline: literal routes are short and this runs for every request. */
            const char *a = r->literal, *b = req->path;
            while (*a && *a == *b)
                a++, b++;
            if (*a == *b)
                return r;
            continue;
        }
        size_t n = r->ngroups + 2;
        regmatch_t *m = n <= nstack ? stack : gale_http_request_alloc(req, n * sizeof *m);
        if (r->prefix && strncmp(req->path, r->prefix, r->prefix_len) != 0)
            continue;       /* cannot match: no regexec */
        if (!r->compiled) { /* "<literal>(.*)" */
            if (!m)
                continue;
            regoff_t end = (regoff_t)strlen(req->path);
            m[0] = m[1] = (regmatch_t){0, end};
            m[2] = (regmatch_t){(regoff_t)r->prefix_len, end};
            *pm = m;
            return r;
        }
        if (m && regexec(&r->re, req->path, n, m, 0) == 0) {
            *pm = m;
            return r;
        }
    }
    return NULL;
}

/* gale_app_route() for a route whose `arg` the application owns: `arg_free(arg)` runs when the
 * application is freed (also when adding the route fails). Returns as gale_app_route(). */
int gale__app_route_owned(gale_app *app, const char *pattern, const gale_handler_class *cls,
                          void *arg, void (*arg_free)(void *arg));

/* Frees the routes and leaves the table empty. */
void gale__route_table_free(gale__route_table *t);

/* A named route's path template for gale_reverse_url: literal pieces between `ngroups` groups. */
struct gale__named_route {
    struct gale__named_route *next;
    char *name;
    char *tmpl; /* the pattern with each group replaced by a NUL-free marker, see web_reverse.c */
    bool reversible; /* false: groups nest, or regex syntax outside them */
    size_t ngroups;
};

/* The application's settings beyond routing (Tornado's Application settings); zeroed with the
 * app, freed by gale__app_settings_free. */
struct gale__app_settings {
    char *cookie_secret; /* gale_app_set_cookie_secret (NULL: signed cookies refused) */
    size_t cookie_secret_len;
    char *login_url;   /* gale_app_set_login_url */
    bool xsrf_cookies; /* gale_app_set_xsrf_cookies */
    bool compress;     /* gale_app_set_compress */
    struct gale__named_route *named;
    char *static_dir;    /* gale_app_set_static_path */
    char *static_prefix; /* "/static/" */
    int static_fd;       /* the directory, opened once (O_PATH); -1 or 0 when unset */
    bool static_set;
    struct gale__static_version *versions; /* gale_static_url's hash cache */
};

/* One file's content hash for gale_static_url, valid while size and mtime match. */
struct gale__static_version {
    struct gale__static_version *next;
    long long size, mtime_ns;
    char hash[17];
    char path[];
};

/* What the web layer's added parts keep per request (zeroed with the handler). */
struct gale__handler_web {
    const char *current_user; /* cached by gale_current_user */
    bool current_user_done;
    const char *xsrf_token;        /* the masked token this response uses (made once) */
    const unsigned char *xsrf_raw; /* the raw token, from the cookie or new */
    size_t xsrf_raw_len;
    int64_t xsrf_time; /* the token's timestamp */
    bool xsrf_raw_done;
    bool xsrf_from_cookie; /* the request's cookie held a valid token: no new cookie */
    void *compress; /* the response's gzip state (web_compress.c), NULL when not compressing */
    bool compress_decided;
    bool no_compress; /* the body goes out as it is (a static file) */
    bool compress_on; /* the app's setting when the request arrived (the app may be freed before
                       * an async response finishes) */
    struct gale__web_stream *stream; /* a streamed body's reader (web_stream.c), or NULL */
};

struct gale__app_settings *gale__app_settings(gale_app *app);
struct gale__handler_web *gale__handler_web(gale_handler *h);
const gale_handler_class *gale__handler_class(gale_handler *h);
void gale__app_settings_free(struct gale__app_settings *s);

/* A response header the handler set (the last one called `name`), or the default Content-Type;
 * NULL when none. */
const char *gale__handler_out_header(gale_handler *h, const char *name);

/* web_compress.c: the output filter, run by web.c just before the headers and each piece of
 * body go out (`final`: at the finish). Decides once, before the headers, whether the response
 * is gzipped, then compresses the buffered body in place. Returns 0 or -ENOMEM. */
int gale__compress_filter(gale_handler *h, bool final);
/* Frees the filter's state (at the release). */
void gale__compress_free(gale_handler *h);

/* web.c, for the parts that call into the handler from their own callbacks: hold keeps `h` from
 * being released while a handler callback runs (a finish inside it releases at unhold); method
 * runs `fn` as the request's method (finishing after it unless the class or the method went
 * async), holding `h`. */
void gale__handler_hold(gale_handler *h);
void gale__handler_unhold(gale_handler *h);
void gale__handler_method(gale_handler *h, gale_handler_fn fn);

/* web_stream.c: takes over a stream_request_body class's request after prepare and the checks:
 * reads its body into data_received, then runs `fn`. Returns false when the request has no
 * streamed body (then the caller runs `fn` as usual). */
bool gale__web_stream_begin(gale_handler *h, gale_handler_fn fn);

/* web_secure.c: the checks around prepare and the method. Each returns true when the request
 * goes on, false when it answered (403, a redirect to the login page). */
bool gale__web_before_prepare(gale_handler *h);
bool gale__web_before_method(gale_handler *h);

#endif

/* The web layer's private parts shared between its files (not installed). */
#ifndef GALE_HTTP_WEB_INTERNAL_H
#define GALE_HTTP_WEB_INTERNAL_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#include "http/httpserver.h"
#include "http/web.h"

/* One route: a literal path compared byte for byte, or a compiled anchored regex. */
struct gale__route {
    regex_t re;
    bool compiled;
    char *literal; /* the path itself when the pattern has no regex syntax (no regexec) */
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
 * arena; it is left alone for a literal route, which has no groups. */
const struct gale__route *gale__route_match(const gale__route_table *t, gale_http_request *req,
                                            regmatch_t *stack, size_t nstack, regmatch_t **pm);

/* gale_app_route() for a route whose `arg` the application owns: `arg_free(arg)` runs when the
 * application is freed (also when adding the route fails). Returns as gale_app_route(). */
int gale__app_route_owned(gale_app *app, const char *pattern, const gale_handler_class *cls,
                          void *arg, void (*arg_free)(void *arg));

/* Frees the routes and leaves the table empty. */
void gale__route_table_free(gale__route_table *t);

#endif

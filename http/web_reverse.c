/* Named routes and gale_reverse_url (Tornado's URLSpec name and reverse_url): a route's pattern
 * turned into a template of literal pieces and group slots, filled with url-escaped arguments. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http/escape.h"
#include "http/web_internal.h"

/* The slot a group leaves in a template: a byte that cannot appear in a URL path. */
#define SLOT '\x01'

/* Tornado's URLSpec._find_groups: the pattern without its anchors, each top-level group a slot,
 * escaped characters unescaped. Not reversible (false) with nested groups or regex syntax
 * outside the groups. */
static bool make_template(const char *pattern, char *out, size_t *ngroups)
{
    const char *p = pattern, *end = pattern + strlen(pattern);
    if (*p == '^')
        p++;
    if (end > p && end[-1] == '$')
        end--;
    size_t o = 0, n = 0;
    while (p < end) {
        char c = *p;
        if (c == '(') {
            int depth = 1;
            for (p++; p < end && depth; p++) {
                if (*p == '\\' && p + 1 < end)
                    p++;
                else if (*p == '(')
                    return false; /* nested */
                else if (*p == ')')
                    depth--;
            }
            if (depth)
                return false;
            out[o++] = SLOT;
            n++;
            continue;
        }
        if (c == '\\' && p + 1 < end) {
            out[o++] = p[1];
            p += 2;
            continue;
        }
        if (strchr(".[]()*+?{}|^$", c))
            return false;
        out[o++] = c;
        p++;
    }
    out[o] = '\0';
    *ngroups = n;
    return true;
}

int gale_app_route_named(gale_app *app, const char *name, const char *pattern,
                         const gale_handler_class *cls, void *arg)
{
    if (!app || !name || !pattern || !cls)
        return -EINVAL;
    struct gale__app_settings *s = gale__app_settings(app);
    for (struct gale__named_route *n = s->named; n; n = n->next)
        if (strcmp(n->name, name) == 0)
            return -EEXIST;
    struct gale__named_route *n = calloc(1, sizeof *n);
    char *nm = strdup(name);
    char *tmpl = malloc(strlen(pattern) + 1);
    if (!n || !nm || !tmpl) {
        free(n);
        free(nm);
        free(tmpl);
        return -ENOMEM;
    }
    int rc = gale_app_route(app, pattern, cls, arg);
    if (rc) {
        free(n);
        free(nm);
        free(tmpl);
        return rc;
    }
    n->name = nm;
    n->tmpl = tmpl;
    n->reversible = make_template(pattern, tmpl, &n->ngroups);
    n->next = s->named;
    s->named = n;
    return 0;
}

char *gale_reverse_url(gale_app *app, const char *name, const char *const *args, size_t nargs)
{
    if (!app || !name || (nargs && !args))
        return NULL;
    const struct gale__named_route *n = gale__app_settings(app)->named;
    while (n && strcmp(n->name, name) != 0)
        n = n->next;
    if (!n || !n->reversible || n->ngroups != nargs)
        return NULL;
    size_t len = strlen(n->tmpl) + 1;
    for (size_t i = 0; i < nargs; i++) {
        if (!args[i])
            return NULL;
        len += GALE_URL_ESCAPE_MAX(strlen(args[i]));
    }
    char *url = malloc(len);
    if (!url)
        return NULL;
    size_t o = 0, a = 0;
    for (const char *t = n->tmpl; *t; t++) {
        if (*t == SLOT) {
            o += gale_url_escape(url + o, args[a], strlen(args[a]), false);
            a++;
        } else {
            url[o++] = *t;
        }
    }
    url[o] = '\0';
    return url;
}

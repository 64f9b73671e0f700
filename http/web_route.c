/* The web layer's route table: how a route pattern becomes a literal path or an anchored POSIX
 * regex (with Python's re spellings translated or refused), and which route a request path
 * matches. The application (web.c) owns one table and dispatches to what it finds. */
#include <errno.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "http/web_internal.h"

static bool has_regex_syntax(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (strchr(".[]()*+?{}|\\^$", s[i]))
            return true;
    }
    return false;
}

static void put(char *out, size_t *n, const char *s)
{
    size_t l = strlen(s);
    memcpy(out + *n, s, l);
    *n += l;
}

/* Writes the ERE for the escape \e outside [...]. Returns NULL, or why POSIX cannot say it. */
static const char *escape_outside(char *out, size_t *n, unsigned char e)
{
    if (e == 'd') {
        put(out, n, "[0-9]");
    } else if (e == 'D') {
        put(out, n, "[^0-9]");
    } else if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
        if (!strchr("wWsSbB", e))
            return "an escape POSIX regexes lack (such as \\A, \\Z or \\n)";
        out[(*n)++] = '\\';
        out[(*n)++] = (char)e;
    } else if (e >= '0' && e <= '9') {
        /* The pattern is wrapped in a group: the numbers would be off by one. */
        return "a back-reference (\\1...)";
    } else if (strchr(".[]()*+?{}|^$\\", e)) {
        out[(*n)++] = '\\';
        out[(*n)++] = (char)e;
    } else {
        out[(*n)++] = (char)e; /* \/, \-, \<...: the character (glibc reads \< as a word
                                * boundary, Python as '<') */
    }
    return NULL;
}

/* Writes the bracket members for the escape p[i - 1..i] (\e) inside [...], whose members
 * begin at out[br_start]. Returns NULL, or why POSIX cannot say it. */
static const char *escape_inside(const char *p, size_t len, size_t i, char *out, size_t *n,
                                 size_t br_start)
{
    unsigned char e = (unsigned char)p[i];
    if ((e == 'd' || e == 'w' || e == 's') && i + 2 < len && p[i + 1] == '-' && p[i + 2] != ']')
        return "a class as the end of a range inside [...] (such as [\\w-z])";
    if (e == 'd') {
        put(out, n, "0-9");
    } else if (e == 'w') {
        put(out, n, "[:alnum:]_");
    } else if (e == 's') {
        put(out, n, "[:space:]");
    } else if (e == '-' && (*n == br_start || (i + 1 < len && p[i + 1] == ']'))) {
        out[(*n)++] = '-'; /* first or last: a plain '-' in POSIX too */
    } else if ((e >= '0' && e <= '9') || (e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') ||
               e == '-' || e == ']' || e == '^' || e == '[') {
        return "an escape inside [...] POSIX cannot spell (\\D, \\W, \\S, or \\- \\] \\^ "
               "where position matters: put '-' first or last, ']' first)";
    } else {
        out[(*n)++] = (char)e; /* escaped punctuation: itself */
    }
    return NULL;
}

/* Route patterns are often written for Python's re, as in Tornado. POSIX ERE with glibc's
 * extensions (\w \W \s \S \b \B) reads most of them alike, but takes "\d" for a plain 'd' and a
 * backslash inside [...] for itself, so "/user/(\d+)" would compile and match "/user/dd" only.
 * This spells what POSIX can say (\d, \D; \d \w \s and escaped punctuation inside [...]) and
 * refuses the rest, so that a pattern never compiles into one that matches other paths. Returns a
 * malloc'ed ERE, or NULL with *why set (NULL too: out of memory). */
static char *route_ere(const char *p, size_t len, const char **why)
{
    *why = NULL;
    char *out = malloc(len * 5 + 1); /* the longest spelling: "\w" -> "[:alnum:]_" */
    if (!out)
        return NULL;
    size_t n = 0;
    bool in_br = false;
    size_t br_start = 0; /* where a bracket's members begin in `out` */
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        unsigned char e = i + 1 < len ? (unsigned char)p[i + 1] : 0;
        if (!in_br) {
            if (ch == '(' && e == '?') {
                *why = "(?...) groups are Python syntax; use a plain (...)";
                goto fail;
            }
            if (ch == '[') {
                in_br = true;
                out[n++] = ch;
                if (e == '^')
                    out[n++] = p[++i];
                if (i + 1 < len && p[i + 1] == ']')
                    out[n++] = p[++i];
                br_start = n;
                continue;
            }
            if (ch == '\\' && e) {
                i++;
                if ((*why = escape_outside(out, &n, e)))
                    goto fail;
                continue;
            }
            out[n++] = ch;
            continue;
        }
        /* Inside [...]. */
        if (ch == ']') {
            in_br = false;
            out[n++] = ch;
        } else if (ch == '[' && (e == ':' || e == '=' || e == '.')) {
            const char *close = NULL;
            for (size_t j = i + 2; j + 1 < len && !close; j++)
                if (p[j] == (char)e && p[j + 1] == ']')
                    close = p + j;
            if (!close) {
                *why = "an unterminated [: :] class";
                goto fail;
            }
            size_t l = (size_t)(close - (p + i)) + 2;
            memcpy(out + n, p + i, l);
            n += l;
            i += l - 1;
        } else if (ch == '\\' && e) {
            i++;
            if ((*why = escape_inside(p, len, i, out, &n, br_start)))
                goto fail;
        } else {
            out[n++] = ch;
        }
    }
    out[n] = '\0';
    return out;

fail:
    free(out);
    return NULL;
}

/* Anchors as Tornado does: strips one leading '^' and one unescaped trailing '$' (the caller wraps
 * the rest in "^(...)$" so an alternation is anchored as a whole). Sets *len to the body's. */
static const char *strip_anchors(const char *pattern, size_t *len)
{
    *len = strlen(pattern);
    const char *body = pattern;
    if (*len && body[0] == '^') {
        body++;
        (*len)--;
    }
    if (*len && body[*len - 1] == '$' && !(*len >= 2 && body[*len - 2] == '\\'))
        (*len)--;
    return body;
}

/* The literal that starts every path the pattern body matches: up to its first regex syntax,
 * less a last character a quantifier makes optional; none when the body holds an alternation
 * (its other branches need not start so). Returns its length. */
static size_t required_prefix(const char *body, size_t len)
{
    if (memchr(body, '|', len))
        return 0;
    size_t n = 0;
    while (n < len && !strchr(".[]()*+?{}|\\^$", body[n]))
        n++;
    if (n < len && n > 0 && strchr("?*{", body[n]))
        n--;
    return n;
}

/* Compiles the pattern body (`len` bytes) into r->re as "^(ERE)$". */
static int compile_regex(struct gale__route *r, const char *pattern, const char *body, size_t len)
{
    const char *why;
    char *ere = route_ere(body, len, &why);
    if (!ere) {
        if (!why)
            return -ENOMEM;
        gale_log_error(GALE_LOG_GENERAL, "route %s: bad pattern: %s", pattern, why);
        return -EINVAL;
    }
    size_t elen = strlen(ere);
    char *full = malloc(elen + 5);
    if (!full) {
        free(ere);
        return -ENOMEM;
    }
    memcpy(full, "^(", 2);
    memcpy(full + 2, ere, elen);
    memcpy(full + 2 + elen, ")$", 3);
    free(ere);
    int rc = regcomp(&r->re, full, REG_EXTENDED);
    free(full);
    if (rc != 0) {
        char msg[128];
        regerror(rc, &r->re, msg, sizeof msg);
        gale_log_error(GALE_LOG_GENERAL, "route %s: bad pattern: %s", pattern, msg);
        return rc == REG_ESPACE ? -ENOMEM : -EINVAL;
    }
    r->compiled = true;
    r->ngroups = r->re.re_nsub - 1;
    return 0;
}

int gale__route_add(gale__route_table *t, const char *pattern, const gale_handler_class *cls,
                    void *arg)
{
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 8;
        struct gale__route *r = realloc(t->routes, ncap * sizeof *r);
        if (!r)
            return -ENOMEM;
        t->routes = r;
        t->cap = ncap;
    }
    size_t len;
    const char *body = strip_anchors(pattern, &len);
    struct gale__route *r = &t->routes[t->n];
    memset(r, 0, sizeof *r);
    r->cls = cls;
    r->arg = arg;
    if (!has_regex_syntax(body, len)) {
        r->literal = strndup(body, len);
        if (!r->literal)
            return -ENOMEM;
    } else if (len >= 4 && memcmp(body + len - 4, "(.*)", 4) == 0 &&
               !has_regex_syntax(body, len - 4)) {
        /* "/static/(.*)": a prefix and the rest as the one group, as the regex would match it
         * (a path holds no NUL, and '.' takes every other byte). */
        r->prefix = strndup(body, len - 4);
        if (!r->prefix)
            return -ENOMEM;
        r->prefix_len = len - 4;
        r->ngroups = 1;
    } else {
        int rc = compile_regex(r, pattern, body, len);
        if (rc)
            return rc;
        r->prefix_len = required_prefix(body, len);
        if (r->prefix_len && !(r->prefix = strndup(body, r->prefix_len))) {
            regfree(&r->re);
            return -ENOMEM;
        }
    }
    t->n++;
    return 0;
}

void gale__route_table_free(gale__route_table *t)
{
    for (size_t i = 0; i < t->n; i++) {
        if (t->routes[i].compiled)
            regfree(&t->routes[i].re);
        free(t->routes[i].literal);
        if (t->routes[i].arg_free)
            t->routes[i].arg_free(t->routes[i].arg);
        free(t->routes[i].prefix);
    }
    free(t->routes);
    *t = (gale__route_table){0};
}

/* Command-line options: parsing against a table, usage and version text. See options.h. */
#include "core/options.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"
#include "core/version.h"

#define HELP_COLUMN 26 /* where help text starts in the usage */

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Whether `name` (NUL-terminated) equals the first `len` bytes of `s`, '-' and '_' alike. */
static bool name_eq(const char *name, const char *s, size_t len)
{
    if (!name)
        return false;
    size_t i = 0;
    for (; i < len && name[i]; i++) {
        char a = name[i] == '_' ? '-' : name[i], b = s[i] == '_' ? '-' : s[i];
        if (a != b)
            return false;
    }
    return i == len && name[i] == '\0';
}

static const gale_option *find_long(const gale_options *spec, const char *s, size_t len)
{
    for (const gale_option *o = spec->options; o && o->type != GALE_OPTION_END; o++)
        if (name_eq(o->name, s, len) || name_eq(o->alias, s, len))
            return o;
    return NULL;
}

static const gale_option *find_short(const gale_options *spec, char c)
{
    for (const gale_option *o = spec->options; o && o->type != GALE_OPTION_END; o++)
        if (o->short_name && o->short_name == c)
            return o;
    return NULL;
}

static bool has_range(const gale_option *o) { return o->min < o->max; }

static int bad_value(char *err, size_t errlen, const char *shown, const char *v, const char *why)
{
    return fail(err, errlen, -EINVAL, "invalid value '%s' for %s: %s", v, shown, why);
}

/* Converts and stores `v` for `o`; `shown` is the option as the user wrote it ("--port"). */
static int store(const gale_option *o, const char *shown, const char *v, char *err, size_t errlen)
{
    char *end;
    switch (o->type) {
    case GALE_OPTION_INT: {
        errno = 0;
        long long x = *v && !isspace((unsigned char)*v) ? strtoll(v, &end, 10) : 0;
        if (!*v || isspace((unsigned char)*v) || *end)
            return bad_value(err, errlen, shown, v, "not a whole number");
        double lo = has_range(o) ? o->min : INT_MIN, hi = has_range(o) ? o->max : INT_MAX;
        if (errno == ERANGE || x < lo || x > hi)
            return fail(err, errlen, -ERANGE, "value '%s' for %s is out of range (%.0f..%.0f)", v,
                        shown, lo, hi);
        *o->var.i = (int)x;
        return 0;
    }
    case GALE_OPTION_SIZE: {
        if (!isdigit((unsigned char)*v))
            return bad_value(err, errlen, shown, v, "not a whole number of at least 0");
        errno = 0;
        unsigned long long x = strtoull(v, &end, 10);
        if (*end)
            return bad_value(err, errlen, shown, v, "not a whole number of at least 0");
        unsigned long long lo = has_range(o) ? (unsigned long long)o->min : 0;
        unsigned long long hi = has_range(o) ? (unsigned long long)o->max : SIZE_MAX;
        if (errno == ERANGE || x < lo || x > hi)
            return fail(err, errlen, -ERANGE, "value '%s' for %s is out of range (%llu..%llu)", v,
                        shown, lo, hi);
        *o->var.z = (size_t)x;
        return 0;
    }
    case GALE_OPTION_DOUBLE: {
        double x = *v && !isspace((unsigned char)*v) ? strtod(v, &end) : 0;
        if (!*v || isspace((unsigned char)*v) || *end || isnan(x))
            return bad_value(err, errlen, shown, v, "not a number");
        if (!isfinite(x) || (has_range(o) && (x < o->min || x > o->max))) {
            if (has_range(o))
                return fail(err, errlen, -ERANGE, "value '%s' for %s is out of range (%g..%g)", v,
                            shown, o->min, o->max);
            return fail(err, errlen, -ERANGE, "value '%s' for %s is not finite", v, shown);
        }
        *o->var.d = x;
        return 0;
    }
    case GALE_OPTION_STRING: *o->var.s = v; return 0;
    case GALE_OPTION_BOOL: {
        static const char *const yes[] = {"true", "1", "yes", "on"};
        static const char *const no[] = {"false", "0", "no", "off"};
        for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
            if (strcasecmp(v, yes[i]) == 0) {
                *o->var.b = true;
                return 0;
            }
            if (strcasecmp(v, no[i]) == 0) {
                *o->var.b = false;
                return 0;
            }
        }
        return bad_value(err, errlen, shown, v, "not true or false");
    }
    case GALE_OPTION_FUNC: {
        int rc = o->fn ? o->fn(v, o->arg) : -EINVAL;
        if (rc == -EINVAL)
            return fail(err, errlen, rc, "invalid value '%s' for %s%s%s%s", v, shown,
                        o->metavar ? " (want " : "", o->metavar ? o->metavar : "",
                        o->metavar ? ")" : "");
        if (rc < 0)
            return fail(err, errlen, rc, "%s %s: %s", shown, v, gale_strerror(rc));
        return 0;
    }
    case GALE_OPTION_END: break;
    }
    return fail(err, errlen, -EINVAL, "option %s is not usable", shown);
}

int gale_options_parse(const gale_options *spec, int *argc, char **argv, char *err, size_t errlen)
{
    if (err && errlen > 0)
        err[0] = '\0';
    if (!spec || !argc || !argv || *argc < 1)
        return fail(err, errlen, -EINVAL, "no arguments to parse");
    int n = *argc, npos = 0;
    bool options_done = false;
    /* Positional arguments are collected here and copied back once all went well. */
    char **pos = calloc((size_t)n, sizeof *pos);
    if (!pos)
        return fail(err, errlen, -ENOMEM, "out of memory");
    int rc = 0;
    for (int i = 1; i < n && rc == 0; i++) {
        char *a = argv[i];
        if (options_done || a[0] != '-' || a[1] == '\0') {
            if (!spec->positional) {
                rc = fail(err, errlen, -EINVAL, "unexpected argument '%s'", a);
                break;
            }
            pos[npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        const gale_option *o;
        const char *value = NULL;
        char shown[64];
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            snprintf(shown, sizeof shown, "--%.*s", (int)(len < 48 ? len : 48), name);
            o = find_long(spec, name, len);
            if (!o && name_eq("help", name, len)) {
                rc = GALE_OPTIONS_HELP;
                break;
            }
            if (!o && name_eq("version", name, len)) {
                rc = GALE_OPTIONS_VERSION;
                break;
            }
            if (!o) {
                rc = fail(err, errlen, -EINVAL, "unknown option '%s'", shown);
                break;
            }
            if (eq)
                value = eq + 1;
        } else {
            snprintf(shown, sizeof shown, "-%c", a[1]);
            o = find_short(spec, a[1]);
            if (!o && a[1] == 'h' && a[2] == '\0') {
                rc = GALE_OPTIONS_HELP;
                break;
            }
            if (!o || (o->type == GALE_OPTION_BOOL && a[2] != '\0')) {
                rc = fail(err, errlen, -EINVAL, "unknown option '%s'", a);
                break;
            }
            if (a[2] != '\0')
                value = a + 2; /* -XPOST */
        }
        if (!value && o->type == GALE_OPTION_BOOL)
            value = "true";
        if (!value) {
            if (i + 1 >= n) {
                rc = fail(err, errlen, -EINVAL, "option %s needs a value (%s)", shown,
                          o->metavar ? o->metavar : "VALUE");
                break;
            }
            value = argv[++i];
        }
        rc = store(o, shown, value, err, errlen);
    }
    if (rc == 0) {
        for (int i = 0; i < npos; i++)
            argv[1 + i] = pos[i];
        argv[1 + npos] = NULL;
        *argc = 1 + npos;
    }
    free(pos);
    return rc;
}

/* The value's current text for "(default ...)", or NULL when there is none to show. */
static const char *default_text(const gale_option *o, char *buf, size_t len)
{
    if (o->default_text)
        return o->default_text;
    switch (o->type) {
    case GALE_OPTION_INT: snprintf(buf, len, "%d", *o->var.i); return buf;
    case GALE_OPTION_SIZE: snprintf(buf, len, "%zu", *o->var.z); return buf;
    case GALE_OPTION_DOUBLE: snprintf(buf, len, "%g", *o->var.d); return buf;
    case GALE_OPTION_STRING: return *o->var.s;
    case GALE_OPTION_BOOL: return *o->var.b ? "on" : NULL;
    default: return NULL;
    }
}

/* Prints one option's line(s): the left column, then the help text from HELP_COLUMN. */
static void print_entry(FILE *out, const char *left, const char *help, const char *deflt)
{
    int w = fprintf(out, "  %s", left);
    if (w >= HELP_COLUMN - 1) {
        fputc('\n', out);
        w = 0;
    }
    fprintf(out, "%*s", HELP_COLUMN - w, "");
    for (const char *p = help ? help : ""; *p; p++) {
        fputc(*p, out);
        if (*p == '\n' && p[1])
            fprintf(out, "%*s", HELP_COLUMN, "");
    }
    if (deflt)
        fprintf(out, "%s(default %s)", help && *help ? " " : "", deflt);
    fputc('\n', out);
}

/* A blank line, then `text` ending in a newline; nothing for NULL or "". */
static void print_paragraph(FILE *out, const char *text)
{
    if (text && *text)
        fprintf(out, "\n%s%s", text, text[strlen(text) - 1] == '\n' ? "" : "\n");
}

void gale_options_usage(const gale_options *spec, FILE *out)
{
    const char *prog = spec->prog ? spec->prog : "program";
    fprintf(out, "usage: %s [options]%s%s\n", prog, spec->args ? " " : "",
            spec->args ? spec->args : "");
    print_paragraph(out, spec->description);
    fputs("\noptions:\n", out);
    bool short_h = false;
    for (const gale_option *o = spec->options; o && o->type != GALE_OPTION_END; o++) {
        char left[160], buf[64];
        int w = 0;
        if (o->short_name) {
            short_h |= o->short_name == 'h';
            w += snprintf(left + w, sizeof left - (size_t)w, "-%c, ", o->short_name);
        }
        w += snprintf(left + w, sizeof left - (size_t)w, "--%s", o->name);
        if (o->alias)
            w += snprintf(left + w, sizeof left - (size_t)w, ", --%s", o->alias);
        if (o->type != GALE_OPTION_BOOL && (size_t)w < sizeof left)
            snprintf(left + w, sizeof left - (size_t)w, " %s", o->metavar ? o->metavar : "VALUE");
        print_entry(out, left, o->help, default_text(o, buf, sizeof buf));
    }
    print_entry(out, short_h ? "--help" : "-h, --help", "show this help and exit", NULL);
    print_entry(out, "--version", "show the program's and gale's version and exit", NULL);
    print_paragraph(out, spec->epilog);
}

void gale_options_version(const gale_options *spec, FILE *out)
{
    fprintf(out, "%s (gale %s)\n", spec->prog ? spec->prog : "program", gale_version_string());
}

void gale_options_parse_or_exit(const gale_options *spec, int *argc, char **argv)
{
    char err[512];
    int rc = gale_options_parse(spec, argc, argv, err, sizeof err);
    if (rc == 0)
        return;
    const char *prog = spec && spec->prog ? spec->prog : "program";
    if (rc == GALE_OPTIONS_HELP || rc == GALE_OPTIONS_VERSION) {
        if (rc == GALE_OPTIONS_HELP)
            gale_options_usage(spec, stdout);
        else
            gale_options_version(spec, stdout);
        exit(fflush(stdout) == 0 ? 0 : 1);
    }
    fprintf(stderr, "%s: %s\ntry '%s --help' for the options\n", prog, err, prog);
    exit(2);
}

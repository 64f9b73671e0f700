/* Command-line options, as Tornado's tornado.options: a program describes its options once, in a
 * table, and gets parsing, checking, `--help` and `--version` from it.
 *
 *     int port = 8879;
 *     bool quiet = false;
 *     const gale_option opts[] = {
 *         GALE_OPTION_INT("port", &port, 0, 65535, "N", "listen on port N"),
 *         GALE_OPTION_BOOL("quiet", &quiet, "no access log"),
 *         {0},
 *     };
 *     const gale_options spec = {.prog = "hello", .description = "...", .options = opts};
 *     gale_options_parse_or_exit(&spec, &argc, argv);
 *
 * Syntax: `--name value` and `--name=value`; a bool option alone (`--quiet`) sets true, and
 * `--quiet=false` (or 0, no, off) sets false; `-X value` for an option with a one-letter alias
 * (a one-letter bool takes no value: `-i`); `--` ends the options. Dashes and underscores in long
 * names are the same (`--max-body` is `--max_body`, as in Tornado). `--help` (or `-h`) and
 * `--version` are built in. Arguments that are not options are positional: they stay in argv, in
 * order, for the program (and are refused unless the spec allows them).
 *
 * The variables an option table points to hold the defaults: usage shows their values at the time
 * it is printed, and parsing stores into them.
 */
#ifndef GALE_CORE_OPTIONS_H
#define GALE_CORE_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    GALE_OPTION_END = 0, /* the zeroed entry that ends a table */
    GALE_OPTION_INT,     /* int, decimal, within [min, max] */
    GALE_OPTION_SIZE,    /* size_t, unsigned decimal, within [min, max] */
    GALE_OPTION_DOUBLE,  /* double, finite, within [min, max] */
    GALE_OPTION_STRING,  /* const char *, pointing into argv */
    GALE_OPTION_BOOL,    /* bool; takes a value only as --name=value */
    GALE_OPTION_FUNC,    /* calls `fn` with each value (repeatable options such as -H) */
} gale_option_type;

/* One option. Fill it with the GALE_OPTION_* macros below (they check the variable's type). */
typedef struct gale_option {
    gale_option_type type;
    const char *name;         /* long name without the dashes: "port" */
    char short_name;          /* one-letter alias ('X' for -X), or 0 */
    const char *alias;        /* a second long name ("no-access-log"), or NULL */
    const char *metavar;      /* the value's name in usage ("N", "PATH"); NULL: "VALUE" */
    const char *help;         /* one line or several ('\n'); usage indents them */
    const char *default_text; /* shown as "(default ...)" instead of the variable's value */
    double min, max; /* inclusive range for INT, SIZE, DOUBLE when min < max; else the type's */
    union {
        int *i;
        size_t *z;
        double *d;
        const char **s;
        bool *b;
    } var;
    /* GALE_OPTION_FUNC: returns 0, or a negative errno to refuse the value. */
    int (*fn)(const char *value, void *arg);
    void *arg;
} gale_option;

#define GALE_OPTION_INT(name_, ptr, lo, hi, metavar_, help_)                                       \
    {                                                                                              \
        .type = GALE_OPTION_INT, .name = (name_), .var.i = (ptr), .min = (lo), .max = (hi),        \
        .metavar = (metavar_), .help = (help_)                                                     \
    }
#define GALE_OPTION_SIZE(name_, ptr, lo, hi, metavar_, help_)                                      \
    {                                                                                              \
        .type = GALE_OPTION_SIZE, .name = (name_), .var.z = (ptr), .min = (lo), .max = (hi),       \
        .metavar = (metavar_), .help = (help_)                                                     \
    }
#define GALE_OPTION_DOUBLE(name_, ptr, lo, hi, metavar_, help_)                                    \
    {                                                                                              \
        .type = GALE_OPTION_DOUBLE, .name = (name_), .var.d = (ptr), .min = (lo), .max = (hi),     \
        .metavar = (metavar_), .help = (help_)                                                     \
    }
#define GALE_OPTION_STRING(name_, ptr, metavar_, help_)                                            \
    {                                                                                              \
        .type = GALE_OPTION_STRING, .name = (name_), .var.s = (ptr), .metavar = (metavar_),        \
        .help = (help_)                                                                            \
    }
#define GALE_OPTION_BOOL(name_, ptr, help_)                                                        \
    {                                                                                              \
        .type = GALE_OPTION_BOOL, .name = (name_), .var.b = (ptr), .help = (help_)                 \
    }
#define GALE_OPTION_FUNC(name_, fn_, arg_, metavar_, help_)                                        \
    {                                                                                              \
        .type = GALE_OPTION_FUNC, .name = (name_), .fn = (fn_), .arg = (arg_),                     \
        .metavar = (metavar_), .help = (help_)                                                     \
    }

/* What a program accepts. */
typedef struct gale_options {
    const char *prog;        /* name in usage and messages: "hello" */
    const char *args;        /* positional arguments in the usage line ("URL..."), or NULL */
    const char *description; /* a paragraph printed under the usage line, or NULL */
    const char *epilog;      /* printed after the options (e.g. the routes a server has), or NULL */
    bool positional;         /* accept positional arguments (else they are an error) */
    const gale_option *options; /* ends with an entry whose type is GALE_OPTION_END */
} gale_options;

/* What gale_options_parse() found, besides errors. */
enum {
    GALE_OPTIONS_HELP = 1,    /* --help or -h: print gale_options_usage() */
    GALE_OPTIONS_VERSION = 2, /* --version: print gale_options_version() */
};

/* Parses argv[1..*argc-1] against `spec` and stores each value into its variable, in order. Never
 * exits and never prints. Positional arguments are moved to argv[1..], in order, and *argc becomes
 * one more than their count (argv[*argc] is set to NULL).
 * Returns 0; GALE_OPTIONS_HELP or GALE_OPTIONS_VERSION at the first --help or --version (what came
 * before it is stored, the rest is not looked at, argv is untouched); or a negative errno with a
 * one-line message naming the option in `err` (when errlen > 0): -EINVAL for an unknown option, a
 * missing or malformed value, an unexpected positional argument; -ERANGE for a value out of range;
 * a FUNC option's own error. Values before the bad one may have been stored.
 * Ownership: STRING variables and positional arguments point into argv. */
int gale_options_parse(const gale_options *spec, int *argc, char **argv, char *err, size_t errlen);

/* Prints the full usage: the usage line, the description, every option with its value's name,
 * help text and default, the built-in --help and --version, and the epilog. */
void gale_options_usage(const gale_options *spec, FILE *out);

/* Prints "<prog> (gale X.Y.Z)" with gale_version_string(), and a newline. */
void gale_options_version(const gale_options *spec, FILE *out);

/* gale_options_parse(), then: on --help prints the usage to stdout and exits 0; on --version
 * prints the version to stdout and exits 0; on an error prints "<prog>: <message>" and a hint to
 * run --help to stderr and exits 2. Returns only when parsing succeeded. */
void gale_options_parse_or_exit(const gale_options *spec, int *argc, char **argv);

#endif

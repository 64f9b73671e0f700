/* gale form parsing: query strings, urlencoded and multipart bodies, Cookie headers.
 *
 * A standalone module (no server needed) that turns request bytes into (name, value) pairs, the
 * way Tornado's httputil does:
 *   - query strings and application/x-www-form-urlencoded bodies split on '&'; '+' means space;
 *     "%XX" is decoded, an invalid escape ("%zz", a trailing "%4") is kept literally as urllib
 *     does; bytes are kept as they are (UTF-8 passes through); a field without '=' is a name with
 *     an empty value; empty fields ("a=1&&b=2") are skipped; repeated names are all kept, in order;
 *   - multipart/form-data per RFC 7578/2046: parts are delimited by CRLF "--boundary", so the
 *     boundary text inside content that is not at a line start is content; each part needs a
 *     Content-Disposition "form-data" with a name; a part with a filename becomes a file (as in
 *     Tornado's request.files), others become arguments. A malformed body (no delimiter, no
 *     final boundary) logs a warning and adds nothing; a malformed part (no blank line after its
 *     headers, not form-data, no name) is skipped with a warning, as Tornado does. Never a crash;
 *   - Cookie headers split on ';' as browsers (and Tornado's parse_cookie) do; a quoted value is
 *     unquoted with the \" and \ooo escapes of Python's http.cookies.
 *
 * Memory comes from an allocator given at init (the web layer passes the request arena): nothing
 * is freed one by one and there is no gale_form_free. Names and argument values are decoded
 * copies, NUL-terminated (they may also contain NULs from "%00": use the lengths). File bodies are
 * slices of the input, not copies: they live as long as the bytes passed to the parser.
 */
#ifndef GALE_HTTP_FORM_H
#define GALE_HTTP_FORM_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gale_form_arg {
    const char *name; /* decoded, NUL-terminated */
    size_t name_len;
    const char *value; /* decoded, NUL-terminated */
    size_t value_len;
} gale_form_arg;

typedef struct gale_form_file {
    const char *name;         /* the form field name */
    const char *filename;     /* as sent in Content-Disposition */
    const char *content_type; /* the part's Content-Type, "application/unknown" if absent */
    const char *body;         /* slice of the parsed input, not NUL-terminated */
    size_t body_len;
} gale_form_file;

/* Allocator: returns `size` bytes (suitably aligned) that stay valid as long as the form, or NULL.
 */
typedef void *(*gale_alloc_fn)(void *ctx, size_t size);

typedef struct gale_form {
    gale_form_arg *args; /* in order of appearance */
    size_t nargs;
    size_t args_cap;
    gale_form_file *files;
    size_t nfiles;
    size_t files_cap;
    gale_alloc_fn alloc;
    void *ctx;
} gale_form;

/* Initialises an empty form that takes its memory from `alloc(ctx, size)` (must not be NULL).
 * Allocates nothing yet. */
void gale_form_init(gale_form *f, gale_alloc_fn alloc, void *ctx);

/* Parses a query string or urlencoded body of `len` bytes and appends its fields. Returns 0 or
 * -ENOMEM (fields parsed before the failure stay). -EINVAL if `f` is NULL or `s` is NULL with
 * len > 0. */
int gale_form_parse_urlencoded(gale_form *f, const char *s, size_t len);

/* Parses a multipart/form-data body delimited by `boundary` (without the leading "--"; surrounding
 * double quotes are removed) and appends its fields and files. Returns 0 (malformed parts skipped,
 * each logged at WARNING), -EINVAL for a malformed body (logged; the form is left as it was) or
 * -ENOMEM (the form is left as it was). File bodies point into `body`. */
int gale_form_parse_multipart(gale_form *f, const char *boundary, size_t blen, const char *body,
                              size_t len);

/* Parses a request body according to its Content-Type: urlencoded or multipart/form-data (the
 * boundary parameter is read from `content_type`); other types add nothing and return 0.
 * Returns 0, -EINVAL (multipart without a boundary, or malformed; logged) or -ENOMEM. */
int gale_form_parse_body(gale_form *f, const char *content_type, size_t ct_len, const char *body,
                         size_t len);

/* Parses a Cookie header value and appends one argument per cookie (name, unquoted value). Chunks
 * without '=' are a value with an empty name, as browsers treat them; names and values are
 * trimmed of spaces and tabs. Returns 0 or -ENOMEM. */
int gale_form_parse_cookies(gale_form *f, const char *header, size_t len);

/* Returns the `index`-th (0-based) argument called `name` (exact, case-sensitive bytes), or NULL.
 */
const gale_form_arg *gale_form_find(const gale_form *f, const char *name, size_t index);

/* Number of arguments called `name`. */
size_t gale_form_count(const gale_form *f, const char *name);

/* Returns the `index`-th file uploaded under field `name`, or NULL. */
const gale_form_file *gale_form_find_file(const gale_form *f, const char *name, size_t index);

/* Percent-decodes `len` bytes of `src` into `dst` (room for `len` bytes; dst == src decodes in
 * place). `plus` turns '+' into a space (query strings and forms, not paths). Invalid escapes are
 * copied literally. Returns the decoded length (<= len). Does not NUL-terminate. */
size_t gale_url_unescape(char *dst, const char *src, size_t len, bool plus);

#endif

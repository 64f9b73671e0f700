/* JSON for handlers: a small writer (Tornado's json_encode + write(dict)) and the request body
 * read as JSON (Tornado's json_decode(self.request.body)).
 *
 * The writer builds one document into a growing buffer, checking its shape as it goes:
 *
 *     gale_json_writer w;
 *     gale_json_init(&w);
 *     gale_json_object_begin(&w);
 *     gale_json_key(&w, "name");
 *     gale_json_string(&w, name, strlen(name));
 *     gale_json_key(&w, "age");
 *     gale_json_int(&w, 42);
 *     gale_json_object_end(&w);
 *     gale_write_json(h, &w);     (sets Content-Type: application/json; charset=UTF-8)
 *     gale_json_free(&w);
 *
 * Strings are written as Python's json.dumps does by default (ensure_ascii): '"' and '\\'
 * escaped, control characters as \n \t ... or \u00XX, every non-ASCII character as \uXXXX (a
 * surrogate pair past U+FFFF), and "</" as "<\/" as Tornado's json_encode does, so the text is
 * safe inside a <script> element. Invalid UTF-8 is refused (-EILSEQ).
 *
 * Errors are sticky: the first failure (-ENOMEM, -EILSEQ, -EINVAL for a value where a key is
 * due, a key outside an object, an end that does not match its begin, nesting past
 * GALE_JSON_MAX_DEPTH, a non-finite number) is kept and returned by every later call, and the
 * document is not produced. Nothing here is tied to a loop or thread.
 */
#ifndef GALE_HTTP_JSON_H
#define GALE_HTTP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/web.h"

#define GALE_JSON_MAX_DEPTH 64

typedef struct gale_json_writer {
    char *buf; /* the document so far (malloc'ed; gale_json_free releases it) */
    size_t len, cap;
    int err;           /* the first error, sticky */
    unsigned depth;    /* open objects and arrays */
    uint64_t in_obj;   /* bit d: level d is an object */
    uint64_t has_item; /* bit d: level d has an element already */
    bool want_value;   /* a key was written: its value is due */
    bool done;         /* a complete top-level value was written */
} gale_json_writer;

/* Starts an empty document. */
void gale_json_init(gale_json_writer *w);
/* Frees the buffer; the writer may be initialised again. */
void gale_json_free(gale_json_writer *w);

/* Each returns 0 or the writer's (sticky) error. */
int gale_json_object_begin(gale_json_writer *w);
int gale_json_object_end(gale_json_writer *w);
int gale_json_array_begin(gale_json_writer *w);
int gale_json_array_end(gale_json_writer *w);
/* A member name inside an object (NUL-terminated UTF-8). */
int gale_json_key(gale_json_writer *w, const char *key);
/* A string of `len` UTF-8 bytes (NULs allowed: written as \u0000). */
int gale_json_string(gale_json_writer *w, const char *s, size_t len);
int gale_json_int(gale_json_writer *w, int64_t v);
/* A finite double, written with 17 significant digits (round-trips); NaN/inf: -EINVAL. */
int gale_json_double(gale_json_writer *w, double v);
int gale_json_bool(gale_json_writer *w, bool v);
int gale_json_null(gale_json_writer *w);

/* The finished document (NUL-terminated, owned by the writer) and its length in `*len` (may be
 * NULL), or NULL when an error happened or the document is incomplete. */
const char *gale_json_result(const gale_json_writer *w, size_t *len);

/* Writes the finished document as the response body and sets Content-Type to
 * "application/json; charset=UTF-8". Returns 0, the writer's error, -EINVAL (incomplete
 * document), or gale_write()'s error. The writer is left as it was (free it after). */
int gale_write_json(gale_handler *h, const gale_json_writer *w);

/* jansson's value type: the body reader below hands one out (include <jansson.h> to use it). */
struct json_t;

/* Parses the request body as JSON with jansson (Debian libjansson-dev). On success `*out` gets
 * a new reference the caller owns (json_decref). Returns 0, -EINVAL (empty or malformed body,
 * logged with jansson's line and column at WARNING; answer 400), -ENOMEM, or -ENOTSUP when gale
 * was built without jansson. Numbers too large for an integer parse as reals. */
int gale_json_body(gale_handler *h, struct json_t **out);

#endif

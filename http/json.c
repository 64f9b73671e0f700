/* The JSON writer (see json.h). The body reader is in json_read.c. */
#include "http/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gale_json_init(gale_json_writer *w) { *w = (gale_json_writer){0}; }

void gale_json_free(gale_json_writer *w)
{
    free(w->buf);
    *w = (gale_json_writer){0};
}

static int fail(gale_json_writer *w, int err)
{
    if (!w->err)
        w->err = err;
    return w->err;
}

static int reserve(gale_json_writer *w, size_t more)
{
    if (w->cap - w->len > more)
        return 0;
    size_t ncap = w->cap ? w->cap : 256;
    while (ncap - w->len <= more) {
        if (ncap > SIZE_MAX / 2)
            return fail(w, -ENOMEM);
        ncap *= 2;
    }
    char *n = realloc(w->buf, ncap);
    if (!n)
        return fail(w, -ENOMEM);
    w->buf = n;
    w->cap = ncap;
    return 0;
}

static int put(gale_json_writer *w, const char *s, size_t n)
{
    if (reserve(w, n))
        return w->err;
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
    return 0;
}

/* Before any value: a comma after an earlier array element; in an object a key must come first. */
static int value_start(gale_json_writer *w)
{
    if (w->err)
        return w->err;
    if (w->depth == 0) {
        if (w->done)
            return fail(w, -EINVAL); /* one top-level value */
        return 0;
    }
    uint64_t bit = 1ull << (w->depth - 1);
    if (w->in_obj & bit) {
        if (!w->want_value)
            return fail(w, -EINVAL);
        w->want_value = false;
        return 0;
    }
    if (w->has_item & bit)
        return put(w, ",", 1);
    w->has_item |= bit;
    return 0;
}

static void value_end(gale_json_writer *w)
{
    if (w->depth == 0)
        w->done = true;
}

static int open_level(gale_json_writer *w, bool obj)
{
    if (value_start(w))
        return w->err;
    if (w->depth == GALE_JSON_MAX_DEPTH)
        return fail(w, -EINVAL);
    uint64_t bit = 1ull << w->depth;
    w->depth++;
    w->has_item &= ~bit;
    if (obj)
        w->in_obj |= bit;
    else
        w->in_obj &= ~bit;
    return put(w, obj ? "{" : "[", 1);
}

static int close_level(gale_json_writer *w, bool obj)
{
    if (w->err)
        return w->err;
    if (w->depth == 0 || w->want_value || !!(w->in_obj & (1ull << (w->depth - 1))) != obj)
        return fail(w, -EINVAL);
    w->depth--;
    if (put(w, obj ? "}" : "]", 1))
        return w->err;
    value_end(w);
    return 0;
}

int gale_json_object_begin(gale_json_writer *w) { return open_level(w, true); }
int gale_json_object_end(gale_json_writer *w) { return close_level(w, true); }
int gale_json_array_begin(gale_json_writer *w) { return open_level(w, false); }
int gale_json_array_end(gale_json_writer *w) { return close_level(w, false); }

/* Decodes one UTF-8 sequence at s[0..len): the code point, or -1 when invalid (overlong,
 * surrogate, past U+10FFFF, truncated). `*n` gets its length. */
static long utf8_next(const unsigned char *s, size_t len, size_t *n)
{
    unsigned char c = s[0];
    size_t need;
    long cp, min;
    if (c < 0x80) {
        *n = 1;
        return c;
    } else if (c >= 0xc2 && c <= 0xdf) {
        need = 1, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3, cp = c & 0x07, min = 0x10000;
    } else {
        return -1;
    }
    if (len < need + 1)
        return -1;
    for (size_t i = 1; i <= need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return -1;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *n = need + 1;
    return cp;
}

static int put_u(gale_json_writer *w, unsigned v)
{
    char b[8];
    snprintf(b, sizeof b, "\\u%04x", v & 0xffff);
    return put(w, b, 6);
}

/* The quoted, escaped string. */
static int put_string(gale_json_writer *w, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    if (put(w, "\"", 1))
        return w->err;
    size_t i = 0;
    while (i < len) {
        size_t run = i;
        while (run < len && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\' &&
               !(s[run] == '/' && run > 0 && s[run - 1] == '<'))
            run++;
        if (run > i && put(w, str + i, run - i))
            return w->err;
        if ((i = run) == len)
            break;
        unsigned char c = s[i];
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '/': esc = "\\/"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        }
        size_t n = 1;
        int rc;
        if (esc) {
            rc = put(w, esc, 2);
        } else if (c < 0x20) {
            rc = put_u(w, c);
        } else {
            long cp = utf8_next(s + i, len - i, &n);
            if (cp < 0)
                return fail(w, -EILSEQ);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                rc = put_u(w, (unsigned)(0xd800 + (cp >> 10)));
                rc = rc ? rc : put_u(w, (unsigned)(0xdc00 + (cp & 0x3ff)));
            } else {
                rc = put_u(w, (unsigned)cp);
            }
        }
        if (rc)
            return rc;
        i += n;
    }
    return put(w, "\"", 1);
}

int gale_json_key(gale_json_writer *w, const char *key)
{
    if (w->err)
        return w->err;
    if (!key || w->depth == 0 || !(w->in_obj & (1ull << (w->depth - 1))) || w->want_value)
        return fail(w, -EINVAL);
    uint64_t bit = 1ull << (w->depth - 1);
    if ((w->has_item & bit) && put(w, ",", 1))
        return w->err;
    w->has_item |= bit;
    if (put_string(w, key, strlen(key)) || put(w, ":", 1))
        return w->err;
    w->want_value = true;
    return 0;
}

int gale_json_string(gale_json_writer *w, const char *s, size_t len)
{
    if (!s && len)
        return fail(w, -EINVAL);
    if (value_start(w) || put_string(w, s ? s : "", len))
        return w->err;
    value_end(w);
    return 0;
}

static int put_scalar(gale_json_writer *w, const char *text)
{
    if (value_start(w) || put(w, text, strlen(text)))
        return w->err;
    value_end(w);
    return 0;
}

int gale_json_int(gale_json_writer *w, int64_t v)
{
    char b[24];
    snprintf(b, sizeof b, "%" PRId64, v);
    return put_scalar(w, b);
}

int gale_json_double(gale_json_writer *w, double v)
{
    if (!isfinite(v))
        return fail(w, -EINVAL);
    char b[32];
    snprintf(b, sizeof b, "%.17g", v);
    if (!strpbrk(b, ".eE")) /* stays a real when read back */
        strcat(b, ".0");
    return put_scalar(w, b);
}

int gale_json_bool(gale_json_writer *w, bool v) { return put_scalar(w, v ? "true" : "false"); }
int gale_json_null(gale_json_writer *w) { return put_scalar(w, "null"); }

const char *gale_json_result(const gale_json_writer *w, size_t *len)
{
    if (w->err || !w->done)
        return NULL;
    if (len)
        *len = w->len;
    return w->buf;
}

int gale_write_json(gale_handler *h, const gale_json_writer *w)
{
    if (w->err)
        return w->err;
    size_t len;
    const char *doc = gale_json_result(w, &len);
    if (!doc)
        return -EINVAL;
    int rc = gale_set_header(h, "Content-Type", "application/json; charset=UTF-8");
    return rc ? rc : gale_write(h, doc, len);
}

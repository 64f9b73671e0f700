/* Query, urlencoded, multipart and cookie parsing (see form.h). */
#include "http/form.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "http/hex_internal.h"
#include "http/httputil.h"

void gale_form_init(gale_form *f, gale_alloc_fn alloc, void *ctx)
{
    memset(f, 0, sizeof *f);
    f->alloc = alloc;
    f->ctx = ctx;
}

size_t gale_url_unescape(char *dst, const char *src, size_t len, bool plus)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%' && i + 2 < len) {
            int hi = gale__hexval((unsigned char)src[i + 1]);
            int lo = gale__hexval((unsigned char)src[i + 2]);
            if (hi >= 0 && lo >= 0) {
                dst[o++] = (char)(hi << 4 | lo);
                i += 2;
                continue;
            }
        } else if (c == '+' && plus) {
            c = ' ';
        }
        dst[o++] = c;
    }
    return o;
}

/* Copies `len` bytes into a NUL-terminated allocation, percent-decoding when `decode`. */
static char *copy_str(gale_form *f, const char *s, size_t len, bool decode, size_t *outlen)
{
    char *d = f->alloc(f->ctx, len + 1);
    if (!d)
        return NULL;
    size_t n = len;
    if (decode)
        n = gale_url_unescape(d, s, len, true);
    else if (len)
        memcpy(d, s, len);
    d[n] = '\0';
    *outlen = n;
    return d;
}

/* Makes room for one more element in an arena-grown array (old arrays are simply abandoned: the
 * arena frees them with the request; doubling bounds the waste to the final size). */
static void *grow(gale_form *f, void *items, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return items;
    size_t ncap = *cap ? *cap * 2 : 8;
    if (ncap > SIZE_MAX / size)
        return NULL;
    void *p = f->alloc(f->ctx, ncap * size);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, items, n * size);
    *cap = ncap;
    return p;
}

static int add_arg(gale_form *f, const char *name, size_t nlen, const char *value, size_t vlen,
                   bool decode)
{
    gale_form_arg *a = grow(f, f->args, f->nargs, &f->args_cap, sizeof *a);
    if (!a)
        return -ENOMEM;
    f->args = a;
    gale_form_arg *arg = &a[f->nargs];
    arg->name = copy_str(f, name, nlen, decode, &arg->name_len);
    arg->value = copy_str(f, value, vlen, decode, &arg->value_len);
    if (!arg->name || !arg->value)
        return -ENOMEM;
    f->nargs++;
    return 0;
}

int gale_form_parse_urlencoded(gale_form *f, const char *s, size_t len)
{
    if (!f || !f->alloc || (!s && len))
        return -EINVAL;
    size_t i = 0;
    while (i < len) {
        const char *amp = memchr(s + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - s) : len;
        if (end > i) {
            const char *field = s + i;
            size_t flen = end - i;
            const char *eq = memchr(field, '=', flen);
            size_t nlen = eq ? (size_t)(eq - field) : flen;
            const char *val = eq ? eq + 1 : field + flen;
            size_t vlen = eq ? flen - nlen - 1 : 0;
            int rc = add_arg(f, field, nlen, val, vlen, true);
            if (rc)
                return rc;
        }
        i = end + 1;
    }
    return 0;
}

/* ---- multipart ---- */

static const char *memmem_s(const char *hay, size_t hlen, const char *needle, size_t nlen)
{
    if (nlen == 0 || hlen < nlen)
        return NULL;
    return memmem(hay, hlen, needle, nlen);
}

static bool is_ws(char c) { return c == ' ' || c == '\t'; }

/* Finds header `name` in a CRLF-separated block of part headers. */
static bool part_header(const char *h, size_t hlen, const char *name, const char **val,
                        size_t *vlen)
{
    size_t nlen = strlen(name);
    size_t i = 0;
    while (i < hlen) {
        const char *eol = memmem_s(h + i, hlen - i, "\r\n", 2);
        size_t end = eol ? (size_t)(eol - h) : hlen;
        const char *line = h + i;
        size_t llen = end - i;
        const char *colon = memchr(line, ':', llen);
        if (colon && (size_t)(colon - line) == nlen && strncasecmp(line, name, nlen) == 0) {
            *val = colon + 1;
            *vlen = llen - nlen - 1;
            *val = gale_http_trim_ows(*val, vlen);
            return true;
        }
        i = end + 2;
    }
    return false;
}

/* Reads a Content-Disposition parameter value (token or quoted-string) into a NUL-terminated copy.
 * Quoted-string backslash escapes are undone. */
static char *param_value(gale_form *f, const char *v, size_t vlen, size_t *outlen)
{
    if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') {
        char *d = f->alloc(f->ctx, vlen);
        if (!d)
            return NULL;
        size_t o = 0;
        for (size_t i = 1; i + 1 < vlen; i++) {
            if (v[i] == '\\' && i + 2 < vlen)
                i++;
            d[o++] = v[i];
        }
        d[o] = '\0';
        *outlen = o;
        return d;
    }
    return copy_str(f, v, vlen, false, outlen);
}

/* Splits "form-data; name=\"x\"; filename=\"y\"" (quotes may hide ';'). Returns false when the
 * disposition is not form-data. Outputs point at raw parameter slices (not yet unquoted). */
struct disposition {
    const char *name, *filename, *filename_ext;
    size_t name_len, filename_len, filename_ext_len;
};

static bool parse_disposition(const char *v, size_t vlen, struct disposition *d)
{
    memset(d, 0, sizeof *d);
    size_t i = 0;
    bool first = true;
    while (i <= vlen) {
        /* find the end of this ';'-separated item, skipping quoted strings */
        size_t j = i;
        bool quoted = false;
        while (j < vlen && (quoted || v[j] != ';')) {
            if (v[j] == '\\' && quoted && j + 1 < vlen)
                j++;
            else if (v[j] == '"')
                quoted = !quoted;
            j++;
        }
        const char *item = v + i;
        size_t ilen = j - i;
        item = gale_http_trim_ows(item, &ilen);
        if (first) {
            if (!(ilen == 9 && strncasecmp(item, "form-data", 9) == 0))
                return false;
            first = false;
        } else if (ilen) {
            const char *eq = memchr(item, '=', ilen);
            if (eq) {
                const char *k = item;
                size_t klen = (size_t)(eq - item);
                const char *pv = eq + 1;
                size_t pvlen = ilen - klen - 1;
                k = gale_http_trim_ows(k, &klen);
                pv = gale_http_trim_ows(pv, &pvlen);
                if (klen == 4 && strncasecmp(k, "name", 4) == 0) {
                    d->name = pv;
                    d->name_len = pvlen;
                } else if (klen == 8 && strncasecmp(k, "filename", 8) == 0) {
                    d->filename = pv;
                    d->filename_len = pvlen;
                } else if (klen == 9 && strncasecmp(k, "filename*", 9) == 0) {
                    d->filename_ext = pv;
                    d->filename_ext_len = pvlen;
                }
            }
        }
        i = j + 1;
    }
    return !first;
}

/* One part: headers, CRLF CRLF, content. Returns 0 (added or skipped with a warning) or -ENOMEM. */
static int add_part(gale_form *f, const char *p, size_t len)
{
    const char *hdr = p;
    size_t hlen;
    const char *content;
    if (len >= 2 && p[0] == '\r' && p[1] == '\n') {
        hlen = 0; /* no headers at all */
        content = p + 2;
    } else {
        const char *eoh = memmem_s(p, len, "\r\n\r\n", 4);
        if (!eoh) {
            gale_log_warning(GALE_LOG_GENERAL, "multipart/form-data part missing headers");
            return 0;
        }
        hlen = (size_t)(eoh - p);
        content = eoh + 4;
    }
    size_t clen = len - (size_t)(content - p);
    const char *disp;
    size_t dlen;
    struct disposition d;
    if (!part_header(hdr, hlen, "Content-Disposition", &disp, &dlen) ||
        !parse_disposition(disp, dlen, &d)) {
        gale_log_warning(GALE_LOG_GENERAL, "invalid multipart/form-data: part is not form-data");
        return 0;
    }
    size_t nlen = 0;
    char *name = d.name ? param_value(f, d.name, d.name_len, &nlen) : NULL;
    if (d.name && !name)
        return -ENOMEM;
    if (!name || nlen == 0) {
        gale_log_warning(GALE_LOG_GENERAL, "multipart/form-data value missing name");
        return 0;
    }
    size_t fnlen = 0;
    char *filename = NULL;
    if (d.filename_ext) {
        /* RFC 5987 ext-value: charset'lang'pct-encoded; the bytes are kept as sent (UTF-8). */
        const char *q = memchr(d.filename_ext, '\'', d.filename_ext_len);
        const char *q2 =
            q ? memchr(q + 1, '\'', d.filename_ext_len - (size_t)(q + 1 - d.filename_ext)) : NULL;
        if (q2) {
            size_t off = (size_t)(q2 + 1 - d.filename_ext);
            filename = f->alloc(f->ctx, d.filename_ext_len - off + 1);
            if (!filename)
                return -ENOMEM;
            fnlen = gale_url_unescape(filename, q2 + 1, d.filename_ext_len - off, false);
            filename[fnlen] = '\0';
        }
    }
    if (!filename && d.filename) {
        filename = param_value(f, d.filename, d.filename_len, &fnlen);
        if (!filename)
            return -ENOMEM;
    }
    if (filename && fnlen > 0) {
        gale_form_file *fa = grow(f, f->files, f->nfiles, &f->files_cap, sizeof *fa);
        if (!fa)
            return -ENOMEM;
        f->files = fa;
        const char *ct;
        size_t ctlen;
        const char *ctype = "application/unknown";
        if (part_header(hdr, hlen, "Content-Type", &ct, &ctlen)) {
            size_t n;
            ctype = copy_str(f, ct, ctlen, false, &n);
            if (!ctype)
                return -ENOMEM;
        }
        fa[f->nfiles++] = (gale_form_file){.name = name,
                                           .filename = filename,
                                           .content_type = ctype,
                                           .body = content,
                                           .body_len = clen};
        return 0;
    }
    gale_form_arg *a = grow(f, f->args, f->nargs, &f->args_cap, sizeof *a);
    if (!a)
        return -ENOMEM;
    f->args = a;
    gale_form_arg *arg = &a[f->nargs];
    arg->name = name;
    arg->name_len = nlen;
    arg->value = copy_str(f, content, clen, false, &arg->value_len);
    if (!arg->value)
        return -ENOMEM;
    f->nargs++;
    return 0;
}

/* After a delimiter: "--" ends the body; otherwise optional blanks then CRLF start a part.
 * Returns the offset of the part start, 0 for the final delimiter, or -1 when malformed. */
static long after_delim(const char *body, size_t len, size_t i)
{
    if (i + 2 <= len && body[i] == '-' && body[i + 1] == '-')
        return 0;
    while (i < len && is_ws(body[i]))
        i++;
    if (i + 2 <= len && body[i] == '\r' && body[i + 1] == '\n')
        return (long)(i + 2);
    return -1;
}

int gale_form_parse_multipart(gale_form *f, const char *boundary, size_t blen, const char *body,
                              size_t len)
{
    if (!f || !f->alloc || !boundary || (!body && len))
        return -EINVAL;
    if (blen >= 2 && boundary[0] == '"' && boundary[blen - 1] == '"') {
        boundary++;
        blen -= 2;
    }
    if (blen == 0 || blen > 200) {
        gale_log_warning(GALE_LOG_GENERAL, "invalid multipart/form-data: bad boundary");
        return -EINVAL;
    }
    /* The delimiter with its leading CRLF: "\r\n--" boundary. */
    char delim[206];
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, boundary, blen);
    size_t dlen = blen + 4;

    /* First delimiter: at the very start, or after a preamble ending in CRLF. */
    size_t pos;
    if (len >= dlen - 2 && memcmp(body, delim + 2, dlen - 2) == 0) {
        pos = dlen - 2;
    } else {
        const char *d = memmem_s(body, len, delim, dlen);
        if (!d) {
            gale_log_warning(GALE_LOG_GENERAL, "invalid multipart/form-data: no boundary");
            return -EINVAL;
        }
        pos = (size_t)(d - body) + dlen;
    }
    /* Validate the structure first so malformed input adds nothing. */
    size_t save_args = f->nargs, save_files = f->nfiles;
    for (;;) {
        long start = after_delim(body, len, pos);
        if (start < 0) {
            gale_log_warning(GALE_LOG_GENERAL, "invalid multipart/form-data: bad delimiter line");
            goto malformed;
        }
        if (start == 0)
            return 0; /* final delimiter; the epilogue is ignored */
        /* The next delimiter line; "\r\n--boundary" followed by anything but "--" or blanks
         * and CRLF is not a delimiter line, so it stays content. */
        size_t from = (size_t)start;
        const char *d;
        for (;;) {
            d = memmem_s(body + from, len - from, delim, dlen);
            if (!d || after_delim(body, len, (size_t)(d - body) + dlen) >= 0)
                break;
            from = (size_t)(d - body) + 1;
        }
        if (!d) {
            gale_log_warning(GALE_LOG_GENERAL, "invalid multipart/form-data: no final boundary");
            goto malformed;
        }
        int rc = add_part(f, body + start, (size_t)(d - body) - (size_t)start);
        if (rc) {
            f->nargs = save_args;
            f->nfiles = save_files;
            return rc;
        }
        pos = (size_t)(d - body) + dlen;
    }
malformed:
    f->nargs = save_args;
    f->nfiles = save_files;
    return -EINVAL;
}

/* Reads parameter `key` from a header value like "multipart/form-data; boundary=xyz". */
static bool header_param(const char *v, size_t vlen, const char *key, const char **out,
                         size_t *outlen)
{
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < vlen) {
        const char *semi = memchr(v + i, ';', vlen - i);
        size_t end = semi ? (size_t)(semi - v) : vlen;
        const char *item = v + i;
        size_t ilen = end - i;
        item = gale_http_trim_ows(item, &ilen);
        if (ilen > klen && item[klen] == '=' && strncasecmp(item, key, klen) == 0) {
            *out = item + klen + 1;
            *outlen = ilen - klen - 1;
            return *outlen > 0;
        }
        i = end + 1;
    }
    return false;
}

static bool media_type_is(const char *ct, size_t ctlen, const char *type)
{
    size_t tlen = strlen(type);
    if (ctlen < tlen || strncasecmp(ct, type, tlen) != 0)
        return false;
    return ctlen == tlen || ct[tlen] == ';' || is_ws(ct[tlen]);
}

int gale_form_parse_body(gale_form *f, const char *content_type, size_t ct_len, const char *body,
                         size_t len)
{
    if (!f || !f->alloc || (!body && len))
        return -EINVAL;
    if (!content_type)
        return 0;
    content_type = gale_http_trim_ows(content_type, &ct_len);
    if (media_type_is(content_type, ct_len, "application/x-www-form-urlencoded"))
        return gale_form_parse_urlencoded(f, body, len);
    if (media_type_is(content_type, ct_len, "multipart/form-data")) {
        const char *b;
        size_t blen;
        if (!header_param(content_type, ct_len, "boundary", &b, &blen)) {
            gale_log_warning(GALE_LOG_GENERAL, "invalid multipart/form-data: no boundary");
            return -EINVAL;
        }
        return gale_form_parse_multipart(f, b, blen, body, len);
    }
    return 0;
}

/* ---- cookies ---- */

/* Python's http.cookies._unquote: strips surrounding quotes, undoes \ooo and \c escapes. */
static int add_cookie(gale_form *f, const char *k, size_t klen, const char *v, size_t vlen)
{
    if (vlen < 2 || v[0] != '"' || v[vlen - 1] != '"')
        return add_arg(f, k, klen, v, vlen, false);
    char *d = f->alloc(f->ctx, vlen);
    if (!d)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 1; i + 1 < vlen; i++) {
        if (v[i] == '\\' && i + 2 < vlen) {
            if (i + 4 < vlen && v[i + 1] >= '0' && v[i + 1] <= '3' && v[i + 2] >= '0' &&
                v[i + 2] <= '7' && v[i + 3] >= '0' && v[i + 3] <= '7') {
                d[o++] = (char)((v[i + 1] - '0') * 64 + (v[i + 2] - '0') * 8 + (v[i + 3] - '0'));
                i += 3;
                continue;
            }
            i++;
        }
        d[o++] = v[i];
    }
    return add_arg(f, k, klen, d, o, false);
}

int gale_form_parse_cookies(gale_form *f, const char *header, size_t len)
{
    if (!f || !f->alloc || (!header && len))
        return -EINVAL;
    size_t i = 0;
    while (i < len) {
        const char *semi = memchr(header + i, ';', len - i);
        size_t end = semi ? (size_t)(semi - header) : len;
        const char *chunk = header + i;
        size_t clen = end - i;
        const char *eq = memchr(chunk, '=', clen);
        const char *k = chunk, *v = chunk;
        size_t klen = 0, vlen = clen;
        if (eq) {
            klen = (size_t)(eq - chunk);
            v = eq + 1;
            vlen = clen - klen - 1;
        }
        k = gale_http_trim_ows(k, &klen);
        v = gale_http_trim_ows(v, &vlen);
        if (klen || vlen) {
            int rc = add_cookie(f, k, klen, v, vlen);
            if (rc)
                return rc;
        }
        i = end + 1;
    }
    return 0;
}

/* ---- lookups ---- */

static bool name_eq(const gale_form_arg *a, const char *name, size_t nlen)
{
    return a->name_len == nlen && memcmp(a->name, name, nlen) == 0;
}

const gale_form_arg *gale_form_find(const gale_form *f, const char *name, size_t index)
{
    if (!f || !name)
        return NULL;
    size_t nlen = strlen(name);
    for (size_t i = 0; i < f->nargs; i++) {
        if (name_eq(&f->args[i], name, nlen) && index-- == 0)
            return &f->args[i];
    }
    return NULL;
}

size_t gale_form_count(const gale_form *f, const char *name)
{
    if (!f || !name)
        return 0;
    size_t nlen = strlen(name), n = 0;
    for (size_t i = 0; i < f->nargs; i++)
        n += name_eq(&f->args[i], name, nlen);
    return n;
}

const gale_form_file *gale_form_find_file(const gale_form *f, const char *name, size_t index)
{
    if (!f || !name)
        return NULL;
    for (size_t i = 0; i < f->nfiles; i++) {
        if (strcmp(f->files[i].name, name) == 0 && index-- == 0)
            return &f->files[i];
    }
    return NULL;
}

/* The HTTP client's response: the head (status line and headers, strictly), the body's framing
 * (Content-Length, chunked, until close; RFC 9112 6.3), reading the body with its limits, and
 * decoding a gzip body (zlib, bounded by max_body_size after inflation). Whether the connection
 * may be reused is decided here too (HTTP/1.1, no "close", a framing that ends by itself);
 * httpclient.c acts on it. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef GALE_HAVE_ZLIB
#include <zlib.h>
#endif

#include "core/errors.h"
#include "http/httpclient_internal.h"

#define CHUNK_LINE_MAX 8192

static void read_chunk_size(struct gale__fetch *f);

/* ---- responses ---- */

struct gale__resp *gale__resp_new(void)
{
    struct gale__resp *r = malloc(sizeof *r); /* not calloc: see fetch_common */
    if (r) {
        memset(r, 0, sizeof *r);
        r->pub.body = "";
        r->pub.reason = "";
    }
    return r;
}

void gale_http_client_response_free(gale_http_client_response *resp)
{
    if (!resp)
        return;
    struct gale__resp *r = (struct gale__resp *)resp;
    gale_http_headers_free(&r->pub.headers);
    free(r->raw);
    free(r->body);
    free(r->url);
    free(r->msg);
    free(r);
}

gale_http_client_response *gale_http_client_response_keep(gale_http_client_response *resp)
{
    if (resp)
        ((struct gale__resp *)resp)->kept = true;
    return resp;
}

void gale__resp_free_void(void *p) { gale_http_client_response_free(p); }

/* The body buffer's first size when the length is not known: small enough for malloc's
 * per-thread cache (a small answer then costs no trip into the allocator's bins). */
#define BODY_FIRST_CAP 512
/* At most this much is reserved ahead of the bytes for a Content-Length body. */
#define BODY_RESERVE_MAX 65536

static int body_reserve(struct gale__resp *r, size_t need)
{
    if (need <= r->body_cap)
        return 0;
    size_t cap = r->body_cap ? r->body_cap : BODY_FIRST_CAP;
    while (cap < need)
        cap *= 2;
    char *b = realloc(r->body, cap);
    if (!b)
        return -ENOMEM;
    r->body = b;
    r->body_cap = cap;
    return 0;
}

static int body_append(struct gale__resp *r, const char *data, size_t len)
{
    if (body_reserve(r, r->pub.body_len + len + 1) != 0)
        return -ENOMEM;
    memcpy(r->body + r->pub.body_len, data, len);
    r->pub.body_len += len;
    r->body[r->pub.body_len] = '\0';
    r->pub.body = r->body;
    return 0;
}

void gale__fail_read(struct gale__fetch *f, int status, const char *what)
{
    if (status == GALE_EEOF || status == -ECANCELED)
        gale__fetch_finish(f, GALE_EEOF, what);
    else if (status == -EMSGSIZE)
        gale__fetch_finish(f, -EMSGSIZE, "Response header block or chunk line too large");
    else if (status == -ENOBUFS)
        gale__fetch_finish(f, -EFBIG, "Response too large");
    else
        gale__fetch_finish(f, status, NULL);
}

/* The fetch a read callback belongs to; NULL when it is gone, or when the read failed (the fetch
 * is then failed with `what`, see fail_read). */
struct gale__fetch *gale__read_ok(void *arg, int status, const char *what)
{
    struct gale__fetch *f = gale__conn_fetch(arg);
    if (f && status) {
        gale__fail_read(f, status, what);
        return NULL;
    }
    return f;
}

/* ---- the header block ---- */

int gale__resp_parse_head(struct gale__resp *r, const char *data, size_t len, bool *http11)
{
    r->raw = gale__dup_n(data, len);
    if (!r->raw)
        return -ENOMEM;
    char *p = r->raw, *end = r->raw + len - 2; /* end: the final empty line's CRLF */
    char *eol = strstr(p, "\r\n");
    if (!eol)
        return -1;
    size_t sl = (size_t)(eol - p);
    if (sl < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return -1;
    *http11 = p[7] == '1';
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return -1;
    r->pub.code = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (r->pub.code < 100)
        return -1;
    if (sl > 12) {
        if (p[12] != ' ' || !gale_http_is_field_value(p + 13, sl - 13))
            return -1;
        r->pub.reason = p + 13;
    } else {
        r->pub.reason = "";
    }
    *eol = '\0';
    p = eol + 2;
    while (p < end) {
        eol = strstr(p, "\r\n");
        if (!eol || eol > end)
            return -1;
        size_t ll = (size_t)(eol - p);
        char *colon = memchr(p, ':', ll);
        /* No obs-fold, no whitespace before the colon, a token name. */
        if (!colon || !gale_http_is_token(p, (size_t)(colon - p)))
            return -1;
        char *v = colon + 1, *ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (!gale_http_is_field_value(v, (size_t)(ve - v)))
            return -1;
        if (gale_http_headers_add(&r->pub.headers, p, (size_t)(colon - p), v, (size_t)(ve - v)))
            return -ENOMEM;
        p = eol + 2;
    }
    return 0;
}

/* Strict Content-Length: digits only, overflow-checked; repeats must agree. Returns 1 when
 * present (value in *out), 0 when absent, -1 when invalid. */
static int content_length(const gale_http_headers *h, size_t *out)
{
    size_t cursor = 0, n = 0;
    const gale_http_header *hd;
    size_t first = 0;
    while ((hd = gale_http_headers_next(h, "Content-Length", &cursor))) {
        if (hd->value.len == 0)
            return -1;
        size_t v = 0;
        for (size_t i = 0; i < hd->value.len; i++) {
            char ch = hd->value.p[i];
            if (ch < '0' || ch > '9' || v > (SIZE_MAX - 9) / 10)
                return -1;
            v = v * 10 + (size_t)(ch - '0');
        }
        if (n++ && v != first)
            return -1;
        first = v;
    }
    *out = first;
    return n > 0;
}

static int inflate_start(struct gale__fetch *f);

bool gale__resp_choose_framing(struct gale__fetch *f, size_t *length)
{
    const struct gale__resp *r = f->resp;
    int code = r->pub.code;
    size_t cursor = 0, n_te = 0;
    const gale_http_header *te = NULL, *hd;
    while ((hd = gale_http_headers_next(&r->pub.headers, "Transfer-Encoding", &cursor))) {
        te = hd;
        n_te++;
    }
    int cl = content_length(&r->pub.headers, length);
    if (f->head_request || code == 204 || code == 304) {
        f->mode = B_NONE;
    } else if (te) {
        /* Only a single "chunked" is understood; anything else cannot be framed safely. */
        if (n_te != 1 || !gale_str_ieq(te->value.p, te->value.len, "chunked")) {
            gale__fetch_finish(f, GALE_EHTTP, "Unsupported Transfer-Encoding");
            return false;
        }
        f->mode = B_CHUNKED;
    } else if (cl < 0) {
        gale__fetch_finish(f, GALE_EHTTP, "Malformed Content-Length");
        return false;
    } else if (cl > 0) {
        if (*length > f->max_body_size) {
            gale__fetch_finish(f, -EFBIG, "Response body too large");
            return false;
        }
        f->mode = B_LENGTH;
    } else {
        f->mode = B_CLOSE;
    }
    /* RFC 9112 9.3: persistent unless HTTP/1.0 (the caller set keep_alive from the version, and
     * gale never asks a 1.0 server to keep alive) or "close"; a body that ends at the close
     * cannot leave the connection usable either. */
    if (f->mode == B_CLOSE || gale_http_headers_has_token(&r->pub.headers, "Connection", "close"))
        f->keep_alive = false;
    if (f->decompress && f->mode != B_NONE &&
        gale_http_headers_get(&r->pub.headers, "Content-Encoding", NULL) &&
        (gale_http_headers_has_token(&r->pub.headers, "Content-Encoding", "gzip") ||
         gale_http_headers_has_token(&r->pub.headers, "Content-Encoding", "x-gzip"))) {
        int rc = inflate_start(f);
        if (rc) {
            gale__fetch_finish(f, rc, NULL);
            return false;
        }
    }
    return true;
}

/* ---- gzip ---- */

#ifdef GALE_HAVE_ZLIB
static int inflate_start(struct gale__fetch *f)
{
    z_stream *z = calloc(1, sizeof *z);
    if (!z)
        return -ENOMEM;
    if (inflateInit2(z, 16 + MAX_WBITS) != Z_OK) { /* 16: gzip wrapper only */
        free(z);
        return -ENOMEM;
    }
    f->inflater = z;
    f->inflate_done = false;
    return 0;
}

void gale__resp_inflate_end(struct gale__fetch *f)
{
    if (f->inflater) {
        inflateEnd(f->inflater);
        free(f->inflater);
        f->inflater = NULL;
    }
}
#else
static int inflate_start(struct gale__fetch *f)
{
    (void)f;
    return 0; /* built without zlib: Accept-Encoding is never sent, a gzip body is kept as is */
}

void gale__resp_inflate_end(struct gale__fetch *f) { (void)f; }
#endif

/* Hands decoded bytes to the user, within max_body_size. Returns 0 or the error to fail with. */
static int deliver_piece(struct gale__fetch *f, const char *data, size_t len)
{
    if (len > f->max_body_size - f->decoded)
        return -EFBIG;
    f->decoded += len;
    if (f->streaming_cb) {
        f->streaming_cb(data, len, f->cb_arg);
        return 0;
    }
    return body_append(f->resp, data, len);
}

#ifdef GALE_HAVE_ZLIB
/* Inflates `len` bytes of gzip through a bounded window: a bomb stops at max_body_size, never
 * holds more than that. Several gzip members in a row are decoded one after the other. */
static int inflate_piece(struct gale__fetch *f, const char *data, size_t len)
{
    z_stream *z = f->inflater;
    unsigned char out[16384];
    z->next_in = (unsigned char *)data;
    z->avail_in = (uInt)len;
    for (;;) {
        if (f->inflate_done) {
            if (z->avail_in == 0)
                return 0;
            if (inflateReset(z) != Z_OK)
                return GALE_EHTTP;
            f->inflate_done = false;
        }
        z->next_out = out;
        z->avail_out = sizeof out;
        int zr = inflate(z, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
            return GALE_EHTTP;
        size_t n = sizeof out - z->avail_out;
        int rc = n ? deliver_piece(f, (const char *)out, n) : 0;
        if (rc)
            return rc;
        if (zr == Z_STREAM_END)
            f->inflate_done = true;
        else if (z->avail_out != 0)
            return 0; /* all input taken and no output held back */
    }
}
#endif

/* The body ended as its framing said: a gzip stream must have ended with it. */
static void body_complete(struct gale__fetch *f)
{
#ifdef GALE_HAVE_ZLIB
    /* An empty body is accepted as is (some servers label a bodiless answer gzip). */
    if (f->inflater && f->body_got > 0 && !f->inflate_done) {
        gale__fetch_finish(f, GALE_EHTTP, "Truncated gzip response body");
        return;
    }
#endif
    gale__fetch_complete(f);
}

/* ---- the body ---- */

static void on_piece(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct gale__fetch *f = gale__conn_fetch(arg);
    if (!f || len == 0)
        return;
    if (len > f->max_body_size - f->body_got) {
        gale__fetch_finish(f, -EFBIG, "Response body too large");
        return;
    }
    f->body_got += len;
    int rc;
#ifdef GALE_HAVE_ZLIB
    if (f->inflater)
        rc = inflate_piece(f, data, len);
    else
#endif
        rc = deliver_piece(f, data, len);
    if (rc == -EFBIG)
        gale__fetch_finish(f, rc,
                           f->inflater ? "Response body too large once decoded"
                                       : "Response body too large");
    else if (rc == GALE_EHTTP)
        gale__fetch_finish(f, rc, "Malformed gzip response body");
    else if (rc)
        gale__fetch_finish(f, rc, NULL);
}

static void on_body_done(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct gale__fetch *f =
        gale__read_ok(arg, status, "Connection closed before the response body was complete");
    if (!f)
        return;
    body_complete(f);
}

static void on_trailer_line(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct gale__fetch *f = gale__read_ok(arg, status, "Connection closed in the chunked trailer");
    if (!f)
        return;
    if (len == 2) {
        body_complete(f);
        return;
    }
    f->trailer_bytes += len;
    const char *colon = memchr(data, ':', len - 2);
    if (!colon || !gale_http_is_token(data, (size_t)(colon - data)) ||
        !gale_http_is_field_value(colon + 1, (size_t)(data + len - 2 - colon - 1))) {
        gale__fetch_finish(f, GALE_EHTTP, "Malformed chunked trailer");
        return;
    }
    if (f->trailer_bytes >= f->max_header_size) {
        gale__fetch_finish(f, -EMSGSIZE, "Chunked trailer too large");
        return;
    }
    int rc = gale_stream_read_until(s, "\r\n", 2, f->max_header_size - f->trailer_bytes,
                                    on_trailer_line, arg);
    if (rc)
        gale__fetch_finish(f, rc, NULL);
}

static void on_chunk_crlf(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct gale__fetch *f = gale__read_ok(arg, status, "Connection closed inside a chunk");
    if (!f)
        return;
    if (len != 2 || data[0] != '\r' || data[1] != '\n') {
        gale__fetch_finish(f, GALE_EHTTP, "Chunk data not followed by CRLF");
        return;
    }
    read_chunk_size(f);
}

static void on_chunk_data_done(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct gale__fetch *f = gale__read_ok(arg, status, "Connection closed inside a chunk");
    if (!f)
        return;
    int rc = gale_stream_read_bytes(s, 2, false, on_chunk_crlf, arg);
    if (rc)
        gale__fetch_finish(f, rc, NULL);
}

/* chunk-size [ chunk-ext ] CRLF, with chunk-size = 1*HEXDIG. Returns 0 and the size, or -1. */
static int parse_chunk_size(const char *p, size_t len, size_t *out)
{
    size_t i = 0, v = 0;
    len -= 2; /* CRLF */
    for (; i < len; i++) {
        int d;
        char ch = p[i];
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            d = ch - 'A' + 10;
        else
            break;
        if (v > (SIZE_MAX >> 4))
            return -1; /* overflow */
        v = (v << 4) | (size_t)d;
    }
    if (i == 0)
        return -1;
    while (i < len && (p[i] == ' ' || p[i] == '\t'))
        i++;
    if (i < len) {
        /* chunk-ext: ";" name [ "=" value ]...: accepted without interpretation, but no CTL. */
        if (p[i] != ';' || !gale_http_is_field_value(p + i, len - i))
            return -1;
    }
    *out = v;
    return 0;
}

static void on_chunk_size(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct gale__fetch *f = gale__read_ok(arg, status, "Connection closed before the last chunk");
    if (!f)
        return;
    size_t size;
    if (parse_chunk_size(data, len, &size) != 0) {
        gale__fetch_finish(f, GALE_EHTTP, "Malformed chunk size");
        return;
    }
    int rc;
    if (size == 0) {
        rc = gale_stream_read_until(s, "\r\n", 2, f->max_header_size, on_trailer_line, arg);
    } else if (size > f->max_body_size - f->body_got) {
        gale__fetch_finish(f, -EFBIG, "Response body too large");
        return;
    } else {
        rc = gale_stream_read_stream(s, size, on_piece, on_chunk_data_done, arg);
    }
    if (rc)
        gale__fetch_finish(f, rc, NULL);
}

static void read_chunk_size(struct gale__fetch *f)
{
    int rc = gale_stream_read_until(f->conn->s, "\r\n", 2, CHUNK_LINE_MAX, on_chunk_size, f->conn);
    if (rc)
        gale__fetch_finish(f, rc, NULL);
}

void gale__resp_read_body(struct gale__fetch *f, size_t length)
{
    gale_stream *s = f->conn->s;
    int rc = 0;
    switch (f->mode) {
    case B_NONE: body_complete(f); return;
    case B_LENGTH:
        if (length == 0) {
            body_complete(f);
            return;
        }
        /* The whole body in one allocation when it is small (what a server promises is reserved
         * only up to BODY_RESERVE_MAX before the bytes arrive). */
        if (!f->streaming_cb && !f->inflater &&
            body_reserve(f->resp, (length < BODY_RESERVE_MAX ? length : BODY_RESERVE_MAX) + 1)) {
            gale__fetch_finish(f, -ENOMEM, NULL);
            return;
        }
        rc = gale_stream_read_stream(s, length, on_piece, on_body_done, f->conn);
        break;
    case B_CLOSE: rc = gale_stream_read_stream(s, SIZE_MAX, on_piece, on_body_done, f->conn); break;
    case B_CHUNKED: read_chunk_size(f); return;
    }
    if (rc)
        gale__fetch_finish(f, rc, NULL);
}

/* The request on the wire: http-parser's callbacks, and the checks gale adds where the parser
 * (Debian's build, without its strict mode) lets through what RFC 9112 forbids.
 *
 * The connection hands every byte it reads to gale__parse(). The parser calls back with pieces
 * of the request line and header block (recorded as offsets into a copy of the head, so a head
 * split across reads just extends), then on_headers_complete, where the head is checked as a
 * whole (version, header names, Host, framing, target form), then the body, then
 * on_message_complete, which dispatches the request. A request that cannot be accepted is
 * refused in one way: a callback calls reject(c, status, why) and returns its -1; the parser
 * stops, and gale__parse answers the status and closes (gale__conn_fail), logging the why.
 *
 * Header bytes arrive as slices of the stream's data, valid only during the read callback. Each
 * parse call copies the span from its first to its last header slice into the request's header
 * store once; slices are recorded as offsets into that store and turned into pointers when the
 * header block is complete.
 */
#include "http/server_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "http/httputil.h"

/* Refuses the request being parsed: the parser stops at the callback that returns this, and
 * gale__parse answers `status` and closes, logging `why`. */
static int reject(struct gale_http_conn *c, int status, const char *why)
{
    c->batch->err_status = status;
    c->batch->err_why = why;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    struct gale_http_conn *c = p->data;
    if (c->req)
        return reject(c, 400, "a request began inside another");
    c->req = gale__req_new(c);
    if (!c->req)
        return reject(c, 503, "out of memory");
    return 0;
}

/* The request line after its uri: " HTTP/" DIGIT "." DIGIT, then CRLF or a bare LF (RFC 9112
 * 3, 2.2). http-parser is built without its strict checks, so it takes any byte for the "TTP/" of
 * the version ("HTT,/1.1" passes): these bytes are checked here, as the parser's input streams by
 * in pieces of any size. `vpos` counts the pattern matched so far; extra spaces before the
 * version are allowed (RFC 9112 3: recipients may split on whitespace). */
enum {
    V_NONE,
    V_SP,
    V_H,
    V_T1,
    V_T2,
    V_P,
    V_SLASH,
    V_MAJOR,
    V_DOT,
    V_MINOR,
    V_EOL,
    V_LF,
    V_DONE,
    V_BAD
};

static __attribute__((noinline)) void version_scan(struct req *r, const char *p, const char *end)
{
    static const char lit[] = " HTTP/";
    unsigned v = r->vpos;
    if (v == V_NONE)
        return;
    for (; p < end && v < V_DONE; p++) {
        unsigned char ch = (unsigned char)*p;
        bool ok;
        if (v == V_H && ch == ' ')
            continue; /* more spaces before the version */
        if (v <= V_SLASH)
            ok = ch == (unsigned char)lit[v - V_SP];
        else if (v == V_MAJOR || v == V_MINOR)
            ok = ch >= '0' && ch <= '9';
        else if (v == V_DOT)
            ok = ch == '.';
        else if (v == V_EOL && ch == '\n') {
            v = V_DONE; /* a bare LF ends the line too */
            break;
        } else if (v == V_EOL)
            ok = ch == '\r';
        else
            ok = ch == '\n';
        v = ok ? v + 1 : V_BAD;
    }
    r->vpos = (uint8_t)v;
}

/* A head over the size limit: 431, or 414 when the limit ran out inside the request target, so
 * that the target alone is longer than the server parses (RFC 9112 3: a server MUST answer such a
 * target with 414). Inside the target: no version seen after it yet and no header, or a target
 * that is itself over the limit. */
static int reject_head_size(struct gale_http_conn *c, const struct req *r)
{
    size_t max = c->srv ? c->srv->opts.max_header_size : SIZE_MAX;
    if (r && r->rphase == R_HEADERS && ((!r->hn && r->vpos == V_NONE) || r->url_len > max))
        return reject(c, 414, "request target too long");
    return reject(c, 431, "header block too large");
}

/* The line ends after the head's last piece, up to the byte that ends the empty line. The parser
 * (not strict) takes any byte after that line's CR as its LF ("\r\n\rX" ends a head), where RFC
 * 9112 2.2 makes a bare CR invalid: a proxy that reads it as a space would not end the head there.
 * Every other line end of the head the parser checks itself (a CR must be followed by LF). The
 * bytes after the last piece are walked: after a value "[CR] LF", after the uri the rest of the
 * request line (checked by version_scan) up to its LF, then the empty line "[CR] LF". An empty
 * value's piece comes at the start of the next line, so that walk starts at the empty line. */
enum { HE_VALUE, HE_VALUE_CR, HE_REQLINE, HE_LINE, HE_EMPTY_CR, HE_DONE, HE_BAD, HE_CRLF2 };

static unsigned head_end_start(const struct req *r)
{
    if (r->last_cb == CB_URL)
        return HE_REQLINE;
    if (r->last_cb == CB_VALUE && r->hn && r->hs[r->hn - 1].value_len == 0)
        return HE_LINE;
    return HE_VALUE;
}

/* Walks [p, end) on from state `st`; stops at HE_DONE or HE_BAD. */
static __attribute__((noinline)) unsigned head_end_scan(unsigned st, const char *p, const char *end)
{
    for (; p < end && st < HE_DONE; p++) {
        char ch = *p;
        switch (st) {
        case HE_VALUE: st = ch == '\r' ? HE_VALUE_CR : ch == '\n' ? HE_LINE : HE_BAD; break;
        case HE_VALUE_CR: st = ch == '\n' ? HE_LINE : HE_BAD; break;
        case HE_REQLINE: st = ch == '\n' ? HE_LINE : HE_REQLINE; break;
        case HE_LINE: st = ch == '\r' ? HE_EMPTY_CR : ch == '\n' ? HE_DONE : HE_BAD; break;
        default: st = ch == '\n' ? HE_DONE : HE_BAD; break; /* HE_EMPTY_CR */
        }
    }
    return st;
}

/* Whether the head that just ended in this parser call ended in a valid empty line. Most heads
 * end in "\r\n\r\n" right after the last value's piece: one compare, noted (HE_CRLF2) so that
 * message_end knows where a request without a body ends without looking again. */
static inline bool head_end_ok(const struct gale_http_conn *c, struct req *r)
{
    const char *q = c->batch->piece_end;
    if (q && r->last_cb == CB_VALUE && c->batch->exec_end - q >= 4) {
        uint32_t w, crlf2;
        memcpy(&w, q, 4);
        memcpy(&crlf2, "\r\n\r\n", 4);
        if (w == crlf2) {
            r->hend = HE_CRLF2;
            return true;
        }
    }
    /* The last piece is in this call: walk from it; else from where the last call left off
     * (the call's first byte, as a request whose last piece came earlier began earlier). */
    unsigned st = q ? head_end_scan(head_end_start(r), q, c->batch->exec_end)
                    : head_end_scan(r->hend, c->batch->exec_data, c->batch->exec_end);
    return st == HE_DONE;
}

/* Inlined into the three callbacks: they run once per URL, field and value. */
static inline __attribute__((always_inline)) int hdr_piece(http_parser *p, int kind, const char *at,
                                                           size_t len)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    if (!r || r->rphase != R_HEADERS)
        return 0; /* trailers of a chunked body: ignored */
    if (!r->run_base)
        r->run_base = at;
    size_t off = r->hlen + (size_t)(at - r->run_base);
    r->run_end = at + len;
    c->batch->piece_end = at + len;
    if (off + len > UINT32_MAX / 2)
        return reject(c, 431, "header block too large");
    uint32_t o32 = (uint32_t)off, l32 = (uint32_t)len;
    if (kind == CB_URL) {
        if (r->url_len && r->url_off + r->url_len != o32)
            goto bad;
        if (!r->url_len)
            r->url_off = o32;
        r->url_len += l32;
        if (at + len < c->batch->exec_end) { /* the uri ended in this piece: its version follows */
            /* Most requests: " HTTP/1.1\r\n" whole in this piece, compared in two loads. */
            static const char tok[12] = " HTTP/1.1\r\n";
            const char *v = at + len;
            r->vpos = V_SP;
            if (c->batch->exec_end - v >= 11) {
                uint64_t a, ta;
                uint32_t b, tb;
                memcpy(&a, v, 8);
                memcpy(&ta, tok, 8);
                memcpy(&b, v + 7, 4);
                memcpy(&tb, tok + 7, 4);
                if (a == ta && b == tb)
                    r->vpos = V_DONE;
            }
            if (r->vpos != V_DONE)
                version_scan(r, v, c->batch->exec_end);
        }
    } else if (kind == CB_FIELD && r->last_cb == CB_FIELD) {
        struct hslice *h = &r->hs[r->hn - 1];
        if (h->name_off + h->name_len != o32)
            goto bad;
        h->name_len += l32;
    } else if (kind == CB_FIELD) {
        if (r->hn == r->hs_cap) {
            size_t ncap = r->hs_cap ? r->hs_cap * 2 : 16;
            struct hslice *n = arena_raw(r, ncap * sizeof *n);
            if (!n)
                return reject(c, 503, "out of memory");
            if (r->hn)
                memcpy(n, r->hs, r->hn * sizeof *n);
            r->hs = n;
            r->hs_cap = ncap;
        }
        r->hs[r->hn++] = (struct hslice){o32, l32, o32, 0};
    } else { /* value */
        if (!r->hn)
            goto bad;
        struct hslice *h = &r->hs[r->hn - 1];
        if (r->last_cb == CB_VALUE) {
            if (h->value_off + h->value_len != o32)
                goto bad;
            h->value_len += l32;
        } else {
            h->value_off = o32;
            h->value_len = l32;
        }
    }
    r->last_cb = (uint8_t)kind;
    return 0;
bad:
    return reject(c, 400, "header pieces out of order");
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    return hdr_piece(p, CB_URL, at, len);
}
static int on_header_field(http_parser *p, const char *at, size_t len)
{
    return hdr_piece(p, CB_FIELD, at, len);
}
static int on_header_value(http_parser *p, const char *at, size_t len)
{
    return hdr_piece(p, CB_VALUE, at, len);
}

/* Copies the header span seen in this parser call into the store. */
static int run_flush(struct req *r)
{
    if (!r->run_base)
        return 0;
    size_t n = (size_t)(r->run_end - r->run_base);
    if (grow(r, &r->hstore, r->hlen, &r->hcap, &r->hstore_heap, r->hlen + n, 0) < 0)
        return -ENOMEM;
    memcpy(r->hstore + r->hlen, r->run_base, n);
    r->hlen += n;
    r->run_base = NULL;
    return 0;
}

static bool valid_ip(const char *s)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* Tornado's _apply_xheaders: X-Real-Ip, else the last X-Forwarded-For entry; X-Scheme, else
 * X-Forwarded-Proto (last entry), "http" or "https" only. */
static void apply_xheaders(struct req *r)
{
    const gale_http_headers *h = &r->pub.headers;
    const gale_http_header *it, *last = NULL;
    size_t cur = 0, len = 0;
    const char *v = gale_http_headers_get(h, "X-Real-Ip", &len);
    if (!v) {
        while ((it = gale_http_headers_next(h, "X-Forwarded-For", &cur)))
            last = it;
        if (last) {
            v = last->value.p;
            len = last->value.len;
            const char *comma = v ? memrchr(v, ',', len) : NULL;
            if (comma) {
                len -= (size_t)(comma + 1 - v);
                v = comma + 1;
            }
        }
    }
    if (v) {
        v = gale_http_trim_ows(v, &len);
        if (len && len < INET6_ADDRSTRLEN) {
            char ip[INET6_ADDRSTRLEN];
            memcpy(ip, v, len);
            ip[len] = '\0';
            if (valid_ip(ip)) {
                char *copy = arena_strndup(r, ip, len);
                if (copy)
                    r->pub.remote_ip = copy;
            }
        }
    }
    v = gale_http_headers_get(h, "X-Scheme", &len);
    if (!v) {
        last = NULL;
        cur = 0;
        while ((it = gale_http_headers_next(h, "X-Forwarded-Proto", &cur)))
            last = it;
        if (last) {
            v = last->value.p;
            len = last->value.len;
        }
    }
    if (v) {
        const char *comma = memrchr(v, ',', len);
        if (comma) {
            len -= (size_t)(comma + 1 - v);
            v = comma + 1;
        }
        v = gale_http_trim_ows(v, &len);
        if (len == 5 && memcmp(v, "https", 5) == 0)
            r->pub.protocol = "https";
        else if (len == 4 && memcmp(v, "http", 4) == 0)
            r->pub.protocol = "http";
    }
}

/* Whether any of the `n` bytes at `p` is a space or a control byte (0x00-0x20); `end` bounds the
 * bytes readable from `p` on. 16 bytes per compare when they are there to load: most header
 * names take one. */
static inline bool has_ws(const char *p, size_t n, const char *end)
{
#ifdef __SSE2__
    const __m128i lim = _mm_set1_epi8(0x20);
    while (n && end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, lim), v));
        if (n < 16)
            return (m & ((1u << n) - 1)) != 0;
        if (m)
            return true;
        p += 16;
        n -= 16;
    }
#endif
    for (; n; n--, p++)
        if ((unsigned char)*p <= 0x20)
            return true;
    return false;
}

/* The '?' that begins the uri's query, or NULL; sets `*ws` when the uri holds a space or a
 * control byte (the parser, not strict, lets TAB and form feed through). Most uris are a few
 * bytes: one pass and no call for them. */
static inline char *find_query(char *uri, size_t len, bool *ws)
{
    if (len > 16) {
        *ws = has_ws(uri, len, uri + len);
        return memchr(uri, '?', len);
    }
    char *q = NULL;
    bool bad = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)uri[i];
        bad |= ch <= 0x20;
        if (ch == '?' && !q)
            q = uri + i;
    }
    *ws = bad;
    return q;
}

/* A chunked body, walked strictly ahead of the parser. http-parser, built without its strict
 * checks, takes any byte for the LF that ends a chunk-size line and for the CRLF after chunk
 * data, and lets a bare LF or a control byte through in a chunk extension ("5;\nhello" is read as
 * one extension up to the next CR). A proxy in front that ends those lines where RFC 9112 7.1 and
 * 2.2 say would disagree with the server on where the body ends: a request smuggling shape. So
 * the server walks the body by the strict grammar before the parser sees each piece, starting at
 * the LF that ends the header block (the parser pauses there for chunked requests), and refuses
 * the request (400) at the first byte the grammar does not allow. Bytes it accepts are read the
 * same way by both. It stops at the end of the body: what follows is the next request. */
enum {
    CK_OFF,
    CK_HEAD_LF,
    CK_SIZE0,
    CK_SIZE,
    CK_EXT,
    CK_SIZE_LF,
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TRAILER0,
    CK_TRAILER,
    CK_TRAILER_LF,
    CK_END_LF,
    CK_DONE,
    CK_BAD
};

static inline bool ctl_byte(unsigned char ch) { return (ch < 0x20 && ch != '\t') || ch == 0x7f; }

/* The state after byte `ch` in state `st` (not CK_DATA), or CK_BAD where the grammar refuses it. */
static unsigned chunk_step(struct req *r, unsigned st, unsigned char ch)
{
    switch (st) {
    case CK_HEAD_LF:
    case CK_DATA_LF:
        if (ch != '\n')
            return CK_BAD;
        st = CK_SIZE0;
        break;
    case CK_SIZE0:
    case CK_SIZE: {
        int d = ch >= '0' && ch <= '9'   ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                         : -1;
        if (d >= 0) {
            if (r->ck_left >> 59) /* no size past 2^63 (the parser stops near 2^64) */
                return CK_BAD;
            r->ck_left = r->ck_left * 16 + (unsigned)d;
            st = CK_SIZE;
        } else if (st == CK_SIZE && ch == '\r') {
            st = CK_SIZE_LF;
        } else if (st == CK_SIZE && (ch == ';' || ch == ' ')) {
            st = CK_EXT;
        } else {
            return CK_BAD;
        }
        break;
    }
    case CK_EXT:
        if (ch == '\r')
            st = CK_SIZE_LF;
        else if (ctl_byte(ch))
            return CK_BAD;
        break;
    case CK_SIZE_LF:
        if (ch != '\n')
            return CK_BAD;
        st = r->ck_left ? CK_DATA : CK_TRAILER0;
        break;
    case CK_DATA_CR:
        if (ch != '\r')
            return CK_BAD;
        st = CK_DATA_LF;
        break;
    case CK_TRAILER0: /* a trailer field line, or the blank line that ends the body */
        if (ch == '\r')
            st = CK_END_LF;
        else if (ch == '\n')
            st = CK_DONE;
        else if (ch == ' ' || ch == '\t' || ctl_byte(ch))
            return CK_BAD; /* a folded line, or a control byte */
        else
            st = CK_TRAILER;
        break;
    case CK_TRAILER:
        if (ch == '\r')
            st = CK_TRAILER_LF;
        else if (ch == '\n')
            st = CK_TRAILER0;
        else if (ctl_byte(ch))
            return CK_BAD;
        break;
    case CK_TRAILER_LF:
    case CK_END_LF:
        if (ch != '\n')
            return CK_BAD;
        st = st == CK_TRAILER_LF ? CK_TRAILER0 : CK_DONE;
        break;
    default: return CK_BAD;
    }
    return st;
}

/* Walks [p, end) on from r->ck; false at a byte the grammar refuses. */
static bool chunk_scan(struct req *r, const char *p, const char *end)
{
    unsigned st = r->ck;
    while (p < end && st != CK_DONE) {
        if (st == CK_DATA) {
            uint64_t n = (uint64_t)(end - p);
            if (n > r->ck_left)
                n = r->ck_left;
            r->ck_left -= n;
            p += n;
            if (!r->ck_left)
                st = CK_DATA_CR;
            continue;
        }
        st = chunk_step(r, st, (unsigned char)*p++);
        if (st == CK_BAD)
            return false;
    }
    r->ck = (uint8_t)st;
    return true;
}

/* Whether the 4 bytes at `p` are "Host" in any case: OR-ing 0x20 into a byte gives 'h', 'o', 's'
 * or 't' only for that letter in either case. */
static inline bool is_host_name(const char *p)
{
    uint32_t w, host;
    memcpy(&w, p, 4);
    memcpy(&host, "host", 4);
    return (w | 0x20202020u) == host;
}

/* Builds the header table from the recorded slices: values lose their trailing whitespace (RFC
 * 9110 5.5: OWS around a value is not part of it; the parser drops the leading one), Host fields
 * are counted and the first one kept. Returns twice the count of Host fields, plus one when a
 * name holds whitespace, or a rejection. */
static int head_table(struct gale_http_conn *c, struct req *r)
{
    /* http-parser, built without its strict checks, takes a space as part of a header name:
     * "Transfer-Encoding : chunked" arrives named "Transfer-Encoding ", and so does a line that
     * starts with a space. RFC 9112 5.1 and 2.2 make both a 400; served, they are a request
     * smuggling shape behind a proxy that reads the header as the real one. */
    gale_http_header *items = NULL;
    unsigned hosts = 0;
    bool spaced = false;
    if (r->hn) {
        items = arena_raw(r, r->hn * sizeof *items);
        if (!items)
            return reject(c, 503, "out of memory");
        for (size_t i = 0; i < r->hn; i++) {
            const struct hslice *s = &r->hs[i];
            const char *name = r->hstore + s->name_off, *value = r->hstore + s->value_off;
            size_t vlen = s->value_len;
            /* the parser ends a value at CR or LF and lets no other control byte in: what is
             * not above ' ' at its end is SP or HTAB */
            while (vlen && (unsigned char)value[vlen - 1] <= ' ')
                vlen--;
            spaced |= has_ws(name, s->name_len, r->hstore + r->hlen);
            if (s->name_len == 4 && is_host_name(name) && !hosts++) {
                r->host = value;
                r->host_len = vlen;
            }
            items[i] = (gale_http_header){{name, s->name_len}, {value, vlen}};
        }
    }
    r->pub.headers = (gale_http_headers){items, r->hn, r->hn};
    return (int)(hosts << 1) | spaced;
}

/* RFC 3986 host and port characters: unreserved, pct-encoded, sub-delims, ':' and the brackets
 * of an IP literal. */
static bool host_char(unsigned char ch)
{
    /* one bit per byte value: "-._~%!$&'()*+,;=:[]", digits and letters */
    static const uint64_t ok[2] = {0x2fff7ff200000000u, 0x47fffffeaffffffeu};
    return ch < 128 && ((ok[ch >> 6] >> (ch & 63)) & 1);
}

static __attribute__((noinline)) bool host_chars_slow(const char *p, size_t n)
{
    for (; n; n--, p++)
        if (!host_char((unsigned char)*p))
            return false;
    return true;
}

/* Whether the `n` bytes at `p` are all host characters; `end` bounds the bytes readable from `p`
 * on. Most hosts are letters, digits, dots, dashes and a colon, and shorter than 16 bytes: those
 * are recognised in one pass; any other host is looked at byte by byte. */
static inline bool host_chars(const char *p, size_t n, const char *end)
{
#ifdef __SSE2__
    if (n <= 16 && end - p >= 16) {
        /* '-' '.' '/' 0-9 ':' are 0x2d..0x3a: that range but '/', then the letters */
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i d = _mm_sub_epi8(v, _mm_set1_epi8('-'));
        __m128i a = _mm_sub_epi8(_mm_or_si128(v, _mm_set1_epi8(0x20)), _mm_set1_epi8('a'));
        __m128i ok = _mm_andnot_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('/')),
                                      _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(13)), d));
        ok = _mm_or_si128(ok, _mm_cmpeq_epi8(_mm_min_epu8(a, _mm_set1_epi8(25)), a));
        unsigned mask = (unsigned)_mm_movemask_epi8(ok) | (0xffffu << n); /* bytes past n pass */
        if ((mask & 0xffffu) == 0xffffu)
            return true;
    }
#else
    (void)end;
#endif
    return host_chars_slow(p, n);
}

/* RFC 9112 3.2: an HTTP/1.1 request carries exactly one Host field, and its value is a host
 * with an optional port (empty when the target has no authority). */
static int check_host(struct gale_http_conn *c, struct req *r, unsigned hosts)
{
    /* The head's copy is readable up to its capacity (bytes past hlen are masked off). */
    if (__builtin_expect(hosts == 1, 1))
        return host_chars(r->host, r->host_len, r->hstore + r->hcap)
                   ? 0
                   : reject(c, 400, "invalid Host header");
    if (hosts > 1)
        return reject(c, 400, "more than one Host header");
    if (r->pub.version_minor >= 1)
        return reject(c, 400, "HTTP/1.1 request without a Host header");
    return 0;
}

/* An absolute-form target ("http://example.com/user/7?x=1", RFC 9112 3.2.2): the server
 * routes on its path and takes the host from it, whatever Host says. The scheme must be http or
 * https, the authority a host without userinfo (RFC 9110 4.2.1, 4.2.4). `uri` is NUL-terminated;
 * the parser only lets "scheme://" start a target that is not a path. */
static int absolute_target(struct gale_http_conn *c, struct req *r, char *uri)
{
    char *sep = strstr(uri, "://");
    size_t slen = sep ? (size_t)(sep - uri) : 0;
    if (!sep || !(gale_str_ieq(uri, slen, "http") || gale_str_ieq(uri, slen, "https")))
        return reject(c, 400, "request target neither a path nor an http(s) URI");
    const char *auth = sep + 3;
    size_t alen = strcspn(auth, "/?#");
    if (!alen || memchr(auth, '@', alen))
        return reject(c, 400, "absolute request target without a host, or with userinfo");
    if (!host_chars(auth, alen, auth + alen))
        return reject(c, 400, "invalid host in the request target");
    r->host = auth;
    r->host_len = alen;
    const char *path = auth + alen;
    if (*path == '/') {
        size_t plen = strcspn(path, "?#");
        r->pub.path = arena_strndup(r, path, plen);
    } else {
        r->pub.path = "/"; /* "http://host" and "http://host?q" ask for the root */
    }
    if (!r->pub.path)
        return reject(c, 503, "out of memory");
    return 0;
}

/* The request line: method, version, target. http-parser takes any one-digit version and reads
 * a request line without one (HTTP/0.9's "GET /path") as 0.9: that is malformed for HTTP/1.x
 * (400); another major version is one we do not serve (505). A higher 1.x minor is served as 1.1
 * (RFC 9112 2.3). The target is cut into path and query, in place where it can be. */
static int request_line(struct gale_http_conn *c, struct req *r, const http_parser *p)
{
    r->pub.version_major = p->http_major;
    r->pub.version_minor = p->http_minor > 1 ? 1 : p->http_minor;
    r->get = p->method == HTTP_GET;
    r->pub.method = r->get ? "GET" : http_method_str((enum http_method)p->method);
    /* The uri ends in place when the copied head holds the byte that followed it in the input
     * (the space before the version): no copy. The head is copied from each parser call's first
     * piece on, so when a read ended between the uri and the first header name, what follows
     * the uri in the copy is that name: then, and without any header, the uri is copied. */
    char *uri;
    size_t url_end = (size_t)r->url_off + r->url_len;
    if (r->hstore && r->hn && r->hs[0].name_off > url_end) {
        uri = r->hstore + r->url_off;
        uri[r->url_len] = '\0';
    } else {
        uri = arena_strndup(r, r->hstore ? r->hstore + r->url_off : "", r->url_len);
    }
    if (!uri)
        return reject(c, 503, "out of memory");
    r->pub.uri = uri;
    bool uri_ws;
    char *q = find_query(uri, r->url_len, &uri_ws);
    if (q) {
        r->pub.path = arena_strndup(r, uri, (size_t)(q - uri));
        r->pub.query = q + 1;
        if (!r->pub.path)
            return reject(c, 503, "out of memory");
    } else {
        r->pub.path = uri;
    }
    /* Checked once method and uri are known, for the log line. */
    if (p->http_major == 0)
        return reject(c, 400, "request line without an HTTP/1.x version");
    if (r->vpos != V_DONE)
        return reject(c, 400, "malformed HTTP version in the request line");
    if (p->http_major != 1)
        return reject(c, 505, "HTTP version not supported");
    if (uri_ws)
        return reject(c, 400, "whitespace or a control byte in the request target");
    return 0;
}

/* Framing (RFC 9112 6.1, 6.3): a Transfer-Encoding must be exactly one final "chunked" and never
 * comes with a Content-Length; duplicate Content-Lengths must agree. `*te`: the request had a
 * Transfer-Encoding. */
static int check_framing(struct gale_http_conn *c, struct req *r, const http_parser *p, bool *te)
{
    const gale_http_headers *h = &r->pub.headers;
    size_t cur = 0, nte = 0, ncl = 0;
    const gale_http_header *it, *last_te = NULL, *cl = NULL;
#if (HTTP_PARSER_VERSION_MAJOR * 10000 + HTTP_PARSER_VERSION_MINOR * 100 +                         \
     HTTP_PARSER_VERSION_PATCH) >= 20903
    /* The parser (2.9.3 on) flags both headers: most requests have neither, so skip the scans. */
    bool scan = p->uses_transfer_encoding || (p->flags & F_CONTENTLENGTH);
#else
    bool scan = true;
#endif
    while (scan && (it = gale_http_headers_next(h, "Transfer-Encoding", &cur))) {
        last_te = it;
        nte++;
    }
    cur = 0;
    while (scan && (it = gale_http_headers_next(h, "Content-Length", &cur))) {
        if (cl) {
            size_t a = cl->value.len, b = it->value.len;
            const char *x = gale_http_trim_ows(cl->value.p, &a);
            const char *y = gale_http_trim_ows(it->value.p, &b);
            if (a != b || memcmp(x, y, a) != 0)
                return reject(c, 400, "differing Content-Length headers");
        }
        cl = it;
        ncl++;
    }
    *te = nte > 0;
    if (nte) {
        size_t len = last_te->value.len;
        const char *v = gale_http_trim_ows(last_te->value.p, &len);
        if (nte > 1 || ncl || !gale_str_ieq(v, len, "chunked") || !(p->flags & F_CHUNKED))
            return reject(c, 400,
                          "Transfer-Encoding other than one final chunked, or with "
                          "Content-Length");
    }
    return 0;
}

/* Whether the connection stays open after this request: http_should_keep_alive() for a request
 * (which never needs EOF framing), without the two library calls: HTTP/1.1 unless "Connection:
 * close", HTTP/1.0 only with "keep-alive". An HTTP/1.0 request with a Transfer-Encoding has
 * faulty framing: the server closes after answering it (RFC 9112 6.1). */
static bool keep_alive(const struct gale_http_conn *c, const http_parser *p, bool te)
{
    bool keep = p->http_minor > 0 ? !(p->flags & F_CONNECTION_CLOSE)
                                  : (p->flags & F_CONNECTION_KEEP_ALIVE) && !te;
    return keep && !c->srv->opts.no_keep_alive && !p->upgrade;
}

/* A body follows the head: a streamed body is set up for its reader (httpserver_stream.c); a
 * collected one over the limit is refused before a byte of it is read. Otherwise answers "100
 * Continue" when asked (before reading the body), limits a Content-Length body to its length,
 * starts the body deadline, and for a chunked body stops the parser on the head's last byte,
 * where chunk_scan starts. */
static int start_body(struct gale_http_conn *c, struct req *r, http_parser *p)
{
    bool chunked = (p->flags & F_CHUNKED) != 0;
    if (!chunked && !((p->flags & F_CONTENTLENGTH) && p->content_length > 0))
        return 0;
    /* Streamed: handed over at this pause, with "100 Continue" left to its reader. */
    bool streamed = false;
    if (c->srv->head_cb) {
        int rc = gale__stream_wanted(c, r, p);
        if (rc < 0)
            return reject(c, 503, "out of memory");
        streamed = rc > 0;
    }
    if (!streamed) {
        if (!chunked && p->content_length > c->srv->opts.max_body_size)
            return reject(c, 413, "body too large");
        if (p->http_minor >= 1 &&
            gale_http_headers_has_token(&r->pub.headers, "Expect", "100-continue"))
            out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        if (!chunked)
            r->blimit = (size_t)p->content_length + 1;
        gale__conn_expect_body(c);
    }
    /* (The parser reads a chunked body for an Upgrade request too; only CONNECT's bytes after
     * the head are not a body to it.) */
    if (chunked && p->method != HTTP_CONNECT)
        r->ck = CK_HEAD_LF;
    if (r->ck == CK_HEAD_LF || streamed)
        http_parser_pause(p, 1);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    gale_http_server *srv = c->srv;
    if (!r || !srv)
        return reject(c, 400, "header block without a request");
    size_t here = r->run_end ? (size_t)(r->run_end - c->batch->exec_data) : 0;
    if (run_flush(r) < 0)
        return reject(c, 503, "out of memory");
    if (r->hfed + here > srv->opts.max_header_size)
        return reject_head_size(c, r);
    r->rphase = R_BODY;
    int t = head_table(c, r), rc;
    bool te;
    if (t < 0 || (rc = request_line(c, r, p)) < 0)
        return t < 0 ? t : rc;
    if (t & 1)
        return reject(c, 400, "whitespace in a header name");
    if (!head_end_ok(c, r))
        return reject(c, 400, "a bare CR in the empty line that ends the head");
    if ((rc = check_host(c, r, (unsigned)t >> 1)) < 0)
        return rc;
    if (r->pub.uri[0] != '/' && r->pub.uri[0] != '*' && p->method != HTTP_CONNECT &&
        (rc = absolute_target(c, r, (char *)r->pub.uri)) < 0)
        return rc;
    if ((rc = check_framing(c, r, p, &te)) < 0)
        return rc;
    r->keep_alive = keep_alive(c, p, te);
    r->head = p->method == HTTP_HEAD;
    if (srv->opts.xheaders)
        apply_xheaders(r);
    return start_body(c, r, p);
}

static int on_chunk_header(http_parser *p)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    if (r && r->bs && p->content_length > r->bs->max - r->bs->received)
        return reject(c, 413, "body too large");
    if (r && c->srv && p->content_length > c->srv->opts.max_body_size - r->blen)
        return reject(c, 413, "body too large");
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    if (!r || !c->srv)
        return reject(c, 400, "body without a request");
    if (r->bs) {
        int st = gale__stream_piece(c, r, p, at, len);
        return st ? reject(c, st, "body too large") : 0;
    }
    if (len > c->srv->opts.max_body_size - r->blen)
        return reject(c, 413, "body too large");
    /* Grown as bytes arrive (never sized up front from a claimed Content-Length). */
    if (r->blen + len + 1 > r->bcap &&
        grow(r, &r->body, r->blen, &r->bcap, &r->body_heap, r->blen + len + 1, r->blimit) < 0)
        return reject(c, 413, "body too large");
    memcpy(r->body + r->blen, at, len);
    r->blen += len;
    c->batch->piece_end = at + len;
    return 0;
}

/* Where the request that just completed ends in the parser call's input, found from its last
 * piece; NULL when that cannot be told (no piece of it in this call, or no blank line seen). A
 * Content-Length body ends the message with its last byte. Otherwise the head (no body) or
 * the chunked body's last chunk and trailers end at the first empty line after the last
 * piece: the bytes in between are the rest of a header or request line ("\r\n" or "\n" line
 * ends), the end of a chunk, the "0" line and trailer lines, never an empty line. */
static const char *message_end(const struct gale_http_conn *c, const http_parser *p,
                               const struct req *r)
{
    const char *q = c->batch->piece_end, *e = c->batch->exec_end;
    if (!q)
        return NULL;
    if (p->flags & F_CHUNKED) {
        if (!r->blen)
            return NULL; /* "0\r\n\r\n" right after the head: its blank line comes first */
    } else if (r->blen) {
        return q;
    } else if (r->hend == HE_CRLF2) {
        return q + 4; /* head_end_ok saw the head end right after the last piece */
    }
    for (; q < e; q++) {
        if (*q != '\n')
            continue;
        if (e - q > 1 && q[1] == '\n')
            return q + 2;
        if (e - q > 2 && q[1] == '\r' && q[2] == '\n')
            return q + 3;
    }
    return NULL;
}

static int on_message_complete(http_parser *p)
{
    struct gale_http_conn *c = p->data;
    struct req *r = c->req;
    if (!r)
        return reject(c, 400, "message end without a request");
    r->rphase = R_DONE;
    if (r->body) {
        r->body[r->blen] = '\0';
        r->pub.body = r->body;
        r->pub.body_len = r->blen;
    }
    r->pub.start_time = c->batch->time;
    /* Answer it now, inside this parser call, and go on with the next pipelined request in the
     * same call when it finished at once (the common case: one parser call per batch instead of
     * one per request). That needs to know where this request ends, for the input left after it
     * (a drain the handler starts decides on it whether to keep the connection) and for where
     * the next one begins. Otherwise, or when the handler runs on, the connection stops or a
     * drain began, pause: gale__parse then has the exact position. */
    const char *end = c->in_batch && !draining(c) ? message_end(c, p, r) : NULL;
    /* A streamed body is parsed in calls after its head's, with no piece marked (piece_end
     * stays NULL): it always ends in the pause, where gale__parse tells its reader. */
    assert(!end || !r->dispatched);
    if (end) {
        c->batch->left = (size_t)(c->batch->exec_end - end);
        gale__conn_dispatch(c);
        if (!c->req && c->phase == PH_IDLE && conn_open(c) && c->srv && !draining(c) &&
            !gale__conn_over_high_water(c)) {
            c->batch->exec_data = end;
            c->batch->piece_end = NULL;
            return 0;
        }
    }
    http_parser_pause(p, 1);
    return 0;
}

const http_parser_settings gale__parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
};

const char *gale_http_request_host(gale_http_request *req)
{
    if (!req)
        return NULL;
    struct req *r = req_of(req);
    if (!r->host_str)
        r->host_str = r->host ? arena_strndup(r, r->host, r->host_len) : "";
    return r->host_str;
}

void gale__parse_init(struct gale_http_conn *c)
{
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
}

/* The parser knows the methods of RFC 9110 and of the IANA registry it was built with; it stops
 * at the first byte that leaves them. A method it does not know is still a request: 501 when it
 * is a token followed by a space (RFC 9110 15.6.2: a method the server does not recognise), 400
 * when the request line does not begin that way. The request begins at c->batch->exec_data, or began in
 * an earlier call with bytes the parser took as the start of a known method (so, letters). */
static void reject_method(struct gale_http_conn *c)
{
    const char *p = c->batch->exec_data, *e = c->batch->exec_end;
    while (p < e && (*p == '\r' || *p == '\n')) /* empty lines before a request are allowed */
        p++;
    const char *t = p;
    while (t < e && gale_http_is_tchar((unsigned char)*t))
        t++;
    if (t > p && (t == e || *t == ' '))
        reject(c, 501, "method not recognised");
    else
        reject(c, 400, "malformed method in the request line");
}

/* Answers the refusal chosen with reject(), or for an error of the parser's own the status it
 * calls for. Returns `len`: the rest of the input is not parsed. */
static size_t refuse(struct gale_http_conn *c, enum http_errno e, size_t len)
{
    if (c->req && c->req->bs && c->req->dispatched) {
        /* The request is with the handler, which answers (httpserver_stream.c). */
        gale__stream_fail(c, c->batch->err_status ? c->batch->err_status : 400,
                          c->batch->err_why ? c->batch->err_why : http_errno_description(e));
        return len;
    }
    if (!c->batch->err_status) {
        if (e == HPE_HEADER_OVERFLOW)
            reject_head_size(c, c->req);
        else if (e == HPE_INVALID_METHOD)
            reject_method(c);
        else
            reject(c, 400, http_errno_description(e));
    }
    gale__conn_fail(c, c->batch->err_status, c->batch->err_why);
    return len;
}

/* Before the parser sees a call's input: a version token or a chunked body cut by the previous
 * read goes on being checked. Returns false when the input breaks the chunked grammar. */
static bool continue_scans(struct req *cur, const char *data, size_t len)
{
    cur->run_base = NULL;
    cur->run_end = NULL;
    /* (A uri cut at the end needs nothing: the parser reports its rest, if empty, as a piece at
     * this read's start.) */
    if (cur->rphase == R_HEADERS && cur->vpos != V_NONE && cur->vpos < V_DONE)
        version_scan(cur, data, data + len);
    if (cur->ck == CK_OFF || cur->ck == CK_DONE || cur->rphase != R_BODY)
        return true;
    /* A streamed body whose reader paused: the bytes walked before the pause come again. */
    size_t skip = 0;
    if (cur->bs) {
        skip = cur->bs->ahead < len ? cur->bs->ahead : len;
        cur->bs->ahead = 0;
    }
    return chunk_scan(cur, data + skip, data + len);
}

/* After a pause with `left` bytes of the call's input unread: a complete request is dispatched
 * unless on_message_complete already did; a streamed body's reader is told. */
static void dispatch_paused(struct gale_http_conn *c, size_t left)
{
    struct req *r = c->req;
    if (r && r->rphase == R_DONE && !r->dispatched) {
        c->batch->left = left;
        gale__conn_dispatch(c);
    } else if (r && r->bs) {
        /* A pause after a piece: the chunked body's walk took this call's input whole. */
        if (r->dispatched && r->ck != CK_OFF && r->ck != CK_DONE)
            r->bs->ahead = left;
        gale__stream_paused(c, r, left);
    }
}

static size_t parse_slow(struct gale_http_conn *c, const char *data, size_t len);

size_t gale__parse(struct gale_http_conn *c, const char *data, size_t len)
{
    c->batch->exec_data = data;
    c->batch->exec_end = data + len;
    c->batch->piece_end = NULL;
    c->batch->err_status = 0;
    c->batch->err_why = NULL;
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_PAUSED)
        http_parser_pause(&c->parser, 0); /* a request finished, or a chunked body begins */
    if (c->req && !continue_scans(c->req, data, len)) {
        reject(c, 400, "malformed chunked body");
        return refuse(c, HPE_OK, len);
    }
    /* Between requests, the common ones are read without the parser (httpserver_fast.c). */
    size_t done = 0;
    if (!c->req && HTTP_PARSER_ERRNO(&c->parser) == HPE_OK) {
        int stop;
        done = gale__parse_fast(c, data, len, &stop);
        if (stop < 0)
            return refuse(c, HPE_OK, len);
        if (stop > 0)
            dispatch_paused(c, len - done);
        if (stop > 0 || done == len)
            return done;
        c->batch->exec_data = data + done;
        c->batch->piece_end = NULL;
    }
    return done + parse_slow(c, data + done, len - done);
}

/* http-parser reads [data, data + len). */
static size_t parse_slow(struct gale_http_conn *c, const char *data, size_t len)
{
    size_t n = http_parser_execute(&c->parser, &gale__parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        dispatch_paused(c, len - n);
        return n;
    }
    if (e != HPE_OK)
        return refuse(c, e, len);
    struct req *r = c->req;
    if (r && r->rphase == R_HEADERS) { /* a head continued in the next read */
        if (run_flush(r) < 0) {
            reject(c, 503, "out of memory");
            return refuse(c, e, len);
        }
        r->hfed += (size_t)(data + n - c->batch->exec_data);
        /* The head goes on in the next read: where its end's walk stands (head_end_ok). */
        r->hend = (uint8_t)(r->run_end ? head_end_scan(head_end_start(r), r->run_end, data + n)
                                       : head_end_scan(r->hend, data, data + n));
        if (c->srv && r->hfed > c->srv->opts.max_header_size) {
            reject_head_size(c, r);
            return refuse(c, e, len);
        }
    }
    if (n < len) { /* cannot happen without a pause or an error: never spin */
        reject(c, 400, "unparsable input");
        return refuse(c, e, len);
    }
    return n;
}

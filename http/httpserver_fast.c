/* The common request read without http-parser: a GET or HEAD on HTTP/1.1 with a path target,
 * plain header lines and no body, whole in the input. Such a head is tokenised here in one pass
 * and handed to the same callbacks, in the same order and with the same pieces, as http-parser
 * would call them with (httpserver_parse.c's, through gale__parser_settings), so every check and
 * the request that results are the same; the parser itself, waiting between messages, is not
 * touched. Most pipelined and keep-alive requests are this shape, and the parser spends about
 * 29 instructions a byte on them.
 *
 * Anything else goes to http-parser from the request's first byte: another method or version,
 * an absolute or '*' target, a target byte outside 0x21-0x7e or a '#', a line not ended by CRLF,
 * an empty or folded header value, a name that is not a token, the headers the parser gives a
 * meaning to (Proxy-Connection, Content-Length, Transfer-Encoding, Upgrade, and Connection
 * unless it is one "keep-alive" or "close", whose flag is set here as the parser sets it), more
 * than FAST_FIELDS header lines, a head over FAST_HEAD_MAX bytes or cut by the end of the input,
 * and empty lines before a request. What is read here is a subset of what http-parser accepts,
 * read the same way: a value runs from its first byte after the colon's spaces and tabs up to
 * its CR (trailing whitespace included, as the parser reports it; head_table trims it).
 */
#include "http/server_internal.h"

#include <limits.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "http/httputil.h"

#define FAST_HEAD_MAX 8192
#define FAST_FIELDS 32

struct fast_head {
    const char *url;
    size_t url_len;
    unsigned method; /* enum http_method */
    unsigned flags;  /* F_CONNECTION_KEEP_ALIVE, F_CONNECTION_CLOSE */
    unsigned n;
    struct {
        const char *name, *value;
        uint32_t name_len, value_len;
    } f[FAST_FIELDS];
};

/* RFC 9110 tchar: the bytes http-parser's token table accepts in a header name, less the space
 * it lets through when not strict. */
#define T1(c) [c] = 1
static const uint8_t fast_tchars[256] = {
    T1('!'), T1('#'), T1('$'), T1('%'), T1('&'), T1('\''), T1('*'), T1('+'), T1('-'), T1('.'),
    T1('^'), T1('_'), T1('`'), T1('|'), T1('~'), T1('0'),  T1('1'), T1('2'), T1('3'), T1('4'),
    T1('5'), T1('6'), T1('7'), T1('8'), T1('9'), T1('A'),  T1('B'), T1('C'), T1('D'), T1('E'),
    T1('F'), T1('G'), T1('H'), T1('I'), T1('J'), T1('K'),  T1('L'), T1('M'), T1('N'), T1('O'),
    T1('P'), T1('Q'), T1('R'), T1('S'), T1('T'), T1('U'),  T1('V'), T1('W'), T1('X'), T1('Y'),
    T1('Z'), T1('a'), T1('b'), T1('c'), T1('d'), T1('e'),  T1('f'), T1('g'), T1('h'), T1('i'),
    T1('j'), T1('k'), T1('l'), T1('m'), T1('n'), T1('o'),  T1('p'), T1('q'), T1('r'), T1('s'),
    T1('t'), T1('u'), T1('v'), T1('w'), T1('x'), T1('y'),  T1('z'),
};
#undef T1

/* A value byte: HTAB, visible ASCII, SP, obs-text (http-parser's IS_HEADER_CHAR less CR, LF). */
static inline bool fast_vchar(unsigned char ch) { return ch == '\t' || (ch >= 0x20 && ch != 0x7f); }

/* The end of the run of target bytes from `p` (0x21-0x7e but '#'; http-parser's path and query
 * bytes less the fragment and the obs-text it lets through), 16 at a time where that many are
 * readable. */
static inline const char *skip_target(const char *p, const char *end)
{
#ifdef __SSE2__
    for (; end - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i d = _mm_sub_epi8(v, _mm_set1_epi8(0x21));
        __m128i bad =
            _mm_or_si128(_mm_xor_si128(_mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(0x5d)), d),
                                       _mm_set1_epi8(-1)),
                         _mm_cmpeq_epi8(v, _mm_set1_epi8('#')));
        unsigned m = (unsigned)_mm_movemask_epi8(bad);
        if (m)
            return p + __builtin_ctz(m);
    }
#endif
    while (p < end && (unsigned char)(*p - 0x21) < 0x5e && *p != '#')
        p++;
    return p;
}

/* The end of the run of value bytes from `p` (fast_vchar), 16 at a time where readable. */
static inline const char *skip_value(const char *p, const char *end)
{
#ifdef __SSE2__
    for (; end - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v); /* <= 0x1f */
        __m128i bad = _mm_or_si128(_mm_andnot_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\t')), ctl),
                                   _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)));
        unsigned m = (unsigned)_mm_movemask_epi8(bad);
        if (m)
            return p + __builtin_ctz(m);
    }
#endif
    while (p < end && fast_vchar((unsigned char)*p))
        p++;
    return p;
}

enum { FS_NONE, FS_CONNECTION, FS_OTHER };

/* Whether a name is one http-parser reads a meaning from (framing, keep-alive, upgrade). */
static int fast_special(const char *p, size_t n)
{
    switch (n) {
    case 7: return gale_str_ieq(p, n, "Upgrade") ? FS_OTHER : FS_NONE;
    case 10: return gale_str_ieq(p, n, "Connection") ? FS_CONNECTION : FS_NONE;
    case 14: return gale_str_ieq(p, n, "Content-Length") ? FS_OTHER : FS_NONE;
    case 16: return gale_str_ieq(p, n, "Proxy-Connection") ? FS_OTHER : FS_NONE;
    case 17: return gale_str_ieq(p, n, "Transfer-Encoding") ? FS_OTHER : FS_NONE;
    default: return FS_NONE;
    }
}

/* The flag http-parser sets for a Connection value that is one "keep-alive" or "close" in any
 * case, trailing spaces allowed (as it reads them); 0 for any other value, left to it. */
static unsigned fast_connection(const char *v, size_t n)
{
    while (n && v[n - 1] == ' ')
        n--;
    if (n == 10 && gale_str_ieq(v, n, "keep-alive"))
        return F_CONNECTION_KEEP_ALIVE;
    if (n == 5 && gale_str_ieq(v, n, "close"))
        return F_CONNECTION_CLOSE;
    return 0;
}

/* Reads the head at [p, end); returns the byte after its empty line, or NULL when it is not one
 * this file reads (http-parser takes it). */
static const char *fast_scan(const char *p, const char *end, struct fast_head *h)
{
    if (end - p > FAST_HEAD_MAX)
        end = p + FAST_HEAD_MAX;
    if (end - p < 18)
        return NULL;
    if (memcmp(p, "GET /", 5) == 0) {
        h->method = HTTP_GET;
        p += 4;
    } else if (memcmp(p, "HEAD /", 6) == 0) {
        h->method = HTTP_HEAD;
        p += 5;
    } else {
        return NULL;
    }
    h->url = p;
    p = skip_target(p, end);
    h->url_len = (size_t)(p - h->url);
    if (end - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0)
        return NULL;
    p += 11;
    uint16_t crlf;
    memcpy(&crlf, "\r\n", 2);
    h->flags = 0;
    for (h->n = 0;; h->n++) {
        uint16_t w;
        if (end - p < 2)
            return NULL;
        memcpy(&w, p, 2);
        if (w == crlf)
            break;
        if (h->n == FAST_FIELDS)
            return NULL;
        const char *name = p;
        while (p < end && fast_tchars[(unsigned char)*p])
            p++;
        if (p == name || p == end || *p != ':')
            return NULL;
        int special = fast_special(name, (size_t)(p - name));
        if (special == FS_OTHER)
            return NULL;
        h->f[h->n].name = name;
        h->f[h->n].name_len = (uint32_t)(p - name);
        p += 1 + (end - p > 1 && p[1] == ' '); /* most values follow one space */
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *value = p;
        p = skip_value(p, end);
        /* CRLF and then not a fold (a line that begins with SP or HTAB) */
        if (p == value || end - p < 3 || (memcpy(&w, p, 2), w != crlf) || p[2] == ' ' ||
            p[2] == '\t')
            return NULL;
        h->f[h->n].value = value;
        h->f[h->n].value_len = (uint32_t)(p - value);
        if (special == FS_CONNECTION) {
            unsigned flag = fast_connection(value, (size_t)(p - value));
            if (!flag)
                return NULL;
            h->flags |= flag;
        }
        p += 2;
    }
    return p + 2;
}

/* Calls back for the head `h` as http-parser would. Returns 0, 1 when
 * on_message_complete paused (the request goes on outside this call), or -1 when a callback
 * refused the request. */
static int fast_replay(struct gale_http_conn *c, const struct fast_head *h)
{
    const http_parser_settings *s = &gale__parser_settings;
    http_parser fp = {0};
    fp.type = HTTP_REQUEST;
    fp.method = h->method & 0xff;
    fp.flags = h->flags & 0xff;
    fp.http_major = 1;
    fp.http_minor = 1;
    fp.content_length = ULLONG_MAX;
    fp.data = c;
    if (s->on_message_begin(&fp) || s->on_url(&fp, h->url, h->url_len))
        return -1;
    for (unsigned i = 0; i < h->n; i++)
        if (s->on_header_field(&fp, h->f[i].name, h->f[i].name_len) ||
            s->on_header_value(&fp, h->f[i].value, h->f[i].value_len))
            return -1;
    if (s->on_headers_complete(&fp))
        return -1;
    /* no body: none of the callbacks above pauses for a request of this shape */
    assert(HTTP_PARSER_ERRNO(&fp) == HPE_OK);
    if (s->on_message_complete(&fp))
        return -1;
    return HTTP_PARSER_ERRNO(&fp) == HPE_PAUSED;
}

size_t gale__parse_fast(struct gale_http_conn *c, const char *data, size_t len, int *stop)
{
    const char *p = data, *end = data + len;
    *stop = 0;
    while (p < end && !c->req) {
        struct fast_head h;
        const char *next = fast_scan(p, end, &h);
        if (!next)
            break;
        c->batch->exec_data = p;
        c->batch->piece_end = NULL;
        *stop = fast_replay(c, &h);
        if (*stop < 0)
            return len;
        p = next;
        if (*stop)
            break;
    }
    return (size_t)(p - data);
}

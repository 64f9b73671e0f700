/* gale HTTP utilities: header slices, reason phrases, the cached Date header. */
#include "http/httputil.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static bool mem_ieq(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

bool gale_str_ieq(const char *p, size_t len, const char *s)
{
    if (!p || !s)
        return false;
    size_t n = strlen(s);
    return n == len && mem_ieq(p, s, len);
}

const gale_http_header *gale_http_headers_next(const gale_http_headers *h, const char *name,
                                               size_t *cursor)
{
    if (!h || !name || !cursor)
        return NULL;
    size_t n = strlen(name);
    for (size_t i = *cursor; i < h->n; i++) {
        const gale_http_header *it = &h->items[i];
        if (it->name.len == n && mem_ieq(it->name.p, name, n)) {
            *cursor = i + 1;
            return it;
        }
    }
    *cursor = h->n;
    return NULL;
}

const char *gale_http_headers_get(const gale_http_headers *h, const char *name, size_t *len)
{
    size_t cur = 0;
    const gale_http_header *it = gale_http_headers_next(h, name, &cur);
    if (!it)
        return NULL;
    if (len)
        *len = it->value.len;
    return it->value.p ? it->value.p : "";
}

int gale_http_headers_add(gale_http_headers *h, const char *name, size_t name_len,
                          const char *value, size_t value_len)
{
    if (!h || !name)
        return -EINVAL;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        gale_http_header *items = realloc(h->items, cap * sizeof *items);
        if (!items)
            return -ENOMEM;
        h->items = items;
        h->cap = cap;
    }
    h->items[h->n++] = (gale_http_header){{name, name_len}, {value ? value : "", value_len}};
    return 0;
}

void gale_http_headers_free(gale_http_headers *h)
{
    if (!h)
        return;
    free(h->items);
    h->items = NULL;
    h->n = h->cap = 0;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

/* RFC 9110 tchar: visible ASCII except delimiters. */
/* clang-format off */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};
/* clang-format on */

bool gale_http_is_tchar(unsigned char ch) { return tchar[ch] != 0; }

bool gale_http_is_token(const char *p, size_t len)
{
    if (!p || !len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!tchar[(unsigned char)p[i]])
            return false;
    return true;
}

bool gale_http_is_field_value(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)p[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return false;
    }
    return true;
}

const char *gale_http_trim_ows(const char *p, size_t *len)
{
    size_t n = *len;
    while (n && is_ows(*p)) {
        p++;
        n--;
    }
    while (n && is_ows(p[n - 1]))
        n--;
    *len = n;
    return p;
}

bool gale_http_headers_has_token(const gale_http_headers *h, const char *name, const char *token)
{
    if (!h || !name || !token || !*token)
        return false;
    size_t tlen = strlen(token), cur = 0;
    const gale_http_header *it;
    while ((it = gale_http_headers_next(h, name, &cur))) {
        const char *p = it->value.p, *end = p + it->value.len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end;
            const char *s = p;
            while (s < e && is_ows(*s))
                s++;
            const char *t = e;
            while (t > s && is_ows(t[-1]))
                t--;
            if ((size_t)(t - s) == tlen && mem_ieq(s, token, tlen))
                return true;
            p = comma ? comma + 1 : end;
        }
    }
    return false;
}

const char *gale_http_reason(int code)
{
    switch (code) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 208: return "Already Reported";
    case 226: return "IM Used";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a Teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Entity";
    case 423: return "Locked";
    case 424: return "Failed Dependency";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 506: return "Variant Also Negotiates";
    case 507: return "Insufficient Storage";
    case 508: return "Loop Detected";
    case 510: return "Not Extended";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
    }
}

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static char *put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

void gale_http_format_date(long long t, char *buf)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
        tt = 0;
        gmtime_r(&tt, &tm);
    }
    /* "Wed, 25 Nov 2026 19:18:05 GMT" */
    char *p = buf;
    memcpy(p, wdays[tm.tm_wday], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    p = put2(p, tm.tm_mday);
    *p++ = ' ';
    memcpy(p, months[tm.tm_mon], 3);
    p += 3;
    *p++ = ' ';
    int year = tm.tm_year + 1900;
    p = put2(p, year / 100);
    p = put2(p, year % 100);
    *p++ = ' ';
    p = put2(p, tm.tm_hour);
    *p++ = ':';
    p = put2(p, tm.tm_min);
    *p++ = ':';
    p = put2(p, tm.tm_sec);
    memcpy(p, " GMT", 5);
}

const char *gale_http_date(void)
{
    /* time() goes through the vDSO: no system call per response. */
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[32];
    time_t now = time(NULL);
    if (now != cached_sec) {
        gale_http_format_date((long long)now, cached);
        cached_sec = now;
    }
    return cached;
}

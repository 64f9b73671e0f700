/* HTML and URL escaping (see escape.h). */
#include "http/escape.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

size_t gale_xhtml_escape(char *dst, const char *src, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep;
        switch (src[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        default: dst[o++] = src[i]; continue;
        }
        size_t n = strlen(rep);
        memcpy(dst + o, rep, n);
        o += n;
    }
    return o;
}

static bool url_safe(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-' || c == '~';
}

size_t gale_url_escape(char *dst, const char *src, size_t len, bool plus)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)src[i];
        if (url_safe(c) || (!plus && c == '/')) {
            dst[o++] = (char)c;
        } else if (plus && c == ' ') {
            dst[o++] = '+';
        } else {
            dst[o++] = '%';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 15];
        }
    }
    return o;
}

int gale_write_escaped(gale_handler *h, const char *s)
{
    if (!s)
        return -EINVAL;
    size_t len = strlen(s);
    char small[256];
    char *buf =
        GALE_XHTML_ESCAPE_MAX(len) <= sizeof small ? small : malloc(GALE_XHTML_ESCAPE_MAX(len));
    if (!buf)
        return -ENOMEM;
    int rc = gale_write(h, buf, gale_xhtml_escape(buf, s, len));
    if (buf != small)
        free(buf);
    return rc;
}

const char *gale_xhtml_escape_dup(gale_handler *h, const char *s)
{
    if (!s)
        return NULL;
    size_t len = strlen(s);
    char *d = gale_handler_alloc(h, GALE_XHTML_ESCAPE_MAX(len) + 1);
    if (d)
        d[gale_xhtml_escape(d, s, len)] = '\0';
    return d;
}

const char *gale_url_escape_dup(gale_handler *h, const char *s, bool plus)
{
    if (!s)
        return NULL;
    size_t len = strlen(s);
    char *d = gale_handler_alloc(h, GALE_URL_ESCAPE_MAX(len) + 1);
    if (d)
        d[gale_url_escape(d, s, len, plus)] = '\0';
    return d;
}

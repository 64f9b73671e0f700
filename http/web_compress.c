/* gzip responses (see web_compress.h): the decision, made once before the headers go out, and
 * the compression of each piece of body the handler flushes. */
#include "http/web_compress.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/httpserver_internal.h"
#include "http/httputil.h"
#include "http/web_internal.h"

#ifdef GALE_HAVE_ZLIB
#include <zlib.h>
#endif

#define MIN_LENGTH 1024 /* Tornado's GZipContentEncoding.MIN_LENGTH */
#define GZIP_LEVEL 6

int gale_app_set_compress(gale_app *app, bool on)
{
    if (!app)
        return -EINVAL;
#ifndef GALE_HAVE_ZLIB
    if (on)
        return -ENOTSUP;
#endif
    gale__app_settings(app)->compress = on;
    return 0;
}

/* The q-value of one Accept-Encoding element's parameters (";q=0.5"); 1 when absent. */
static double qvalue(const char *p, size_t len)
{
    while (len) {
        size_t semi = 0;
        while (semi < len && p[semi] != ';')
            semi++;
        size_t pl = semi;
        const char *param = gale_http_trim_ows(p, &pl);
        if (pl >= 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
            char num[16];
            size_t n = pl - 2 < sizeof num - 1 ? pl - 2 : sizeof num - 1;
            memcpy(num, param + 2, n);
            num[n] = '\0';
            return strtod(num, NULL);
        }
        if (semi == len)
            break;
        p += semi + 1;
        len -= semi + 1;
    }
    return 1;
}

bool gale_accepts_encoding(gale_handler *h, const char *coding)
{
    double q_named = -1, q_star = -1;
    size_t cursor = 0, clen = strlen(coding);
    const gale_http_header *hd;
    while ((hd = gale_header_next(h, "Accept-Encoding", &cursor))) {
        const char *p = hd->value.p, *end = p + hd->value.len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            size_t elen = (size_t)((comma ? comma : end) - p);
            size_t semi = 0;
            while (semi < elen && p[semi] != ';')
                semi++;
            size_t nl = semi;
            const char *name = gale_http_trim_ows(p, &nl);
            double q = qvalue(p + semi, elen - semi);
            if ((nl == clen && strncasecmp(name, coding, clen) == 0) ||
                (strcasecmp(coding, "gzip") == 0 && nl == 6 && strncasecmp(name, "x-gzip", 6) == 0))
                q_named = q > q_named ? q : q_named;
            else if (nl == 1 && name[0] == '*')
                q_star = q;
            p = comma ? comma + 1 : end;
        }
    }
    return q_named >= 0 ? q_named > 0 : q_star > 0;
}

#ifdef GALE_HAVE_ZLIB
/* Tornado's _compressible_type, widened to every text type and the +json / +xml suffixes. */
static bool compressible(const char *ctype)
{
    if (!ctype)
        return false;
    size_t len = strcspn(ctype, ";");
    while (len && (ctype[len - 1] == ' ' || ctype[len - 1] == '\t'))
        len--;
    static const char *const types[] = {
        "application/json", "application/javascript", "application/x-javascript",
        "application/xml",  "image/svg+xml",          "application/ecmascript"};
    if (len >= 5 && strncasecmp(ctype, "text/", 5) == 0)
        return true;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (len == strlen(types[i]) && strncasecmp(ctype, types[i], len) == 0)
            return true;
    return len > 5 && strncasecmp(ctype, "application/", 12) == 0 &&
           (strncasecmp(ctype + len - 5, "+json", 5) == 0 ||
            strncasecmp(ctype + len - 4, "+xml", 4) == 0);
}

/* Adds Accept-Encoding to the Vary header the handler set, or sets it. */
static int add_vary(gale_handler *h)
{
    const char *vary = gale__handler_out_header(h, "Vary");
    if (!vary)
        return gale_set_header(h, "Vary", "Accept-Encoding");
    if (strcasestr(vary, "Accept-Encoding") || strcmp(vary, "*") == 0)
        return 0;
    size_t n = strlen(vary) + 20;
    char *v = gale_handler_alloc(h, n);
    if (!v)
        return -ENOMEM;
    memcpy(v, vary, n - 20);
    memcpy(v + n - 20, ", Accept-Encoding", 18);
    return gale_set_header(h, "Vary", v);
}

/* Replaces the buffered body with its compression: a sync flush, or the gzip trailer when
 * `final`. */
static int compress_pending(gale_handler *h, z_stream *z, bool final)
{
    gale_http_request *req = gale_handler_request(h);
    size_t len;
    const char *in = gale__http_response_buffered(req, &len);
    if (!in && !final)
        return 0;
    size_t cap = deflateBound(z, len) + 64, used = 0;
    unsigned char *out = malloc(cap);
    if (!out)
        return -ENOMEM;
    z->next_in = (unsigned char *)(in ? in : "");
    z->avail_in = (uInt)len;
    int zr;
    do {
        if (cap - used < 64) {
            unsigned char *n = realloc(out, cap * 2);
            if (!n) {
                free(out);
                return -ENOMEM;
            }
            out = n;
            cap *= 2;
        }
        z->next_out = out + used;
        z->avail_out = (uInt)(cap - used);
        zr = deflate(z, final ? Z_FINISH : Z_SYNC_FLUSH);
        used = cap - z->avail_out;
    } while (zr == Z_OK && (final || z->avail_out == 0));
    if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR) {
        free(out);
        return -ENOMEM;
    }
    gale_http_response_clear_body(req);
    int rc = gale_http_response_write(req, out, used);
    free(out);
    return rc == -EPIPE ? 0 : rc;
}

/* Whether this response is gzipped; sets Vary on every compressible one. */
static bool decide(gale_handler *h, bool final)
{
    struct gale__handler_web *w = gale__handler_web(h);
    if (!w->compress_on || w->no_compress)
        return false;
    int status = gale_get_status(h);
    if (status < 200 || status == 204 || status == 304)
        return false;
    if (!compressible(gale__handler_out_header(h, "Content-Type")))
        return false;
    if (add_vary(h) < 0)
        return false;
    size_t len;
    gale__http_response_buffered(gale_handler_request(h), &len);
    return status != 206 && !gale__handler_out_header(h, "Content-Range") &&
           !gale__handler_out_header(h, "Content-Encoding") && (!final || len >= MIN_LENGTH) &&
           gale_accepts_encoding(h, "gzip");
}

int gale__compress_filter(gale_handler *h, bool final)
{
    struct gale__handler_web *w = gale__handler_web(h);
    if (!w->compress_decided) {
        w->compress_decided = true;
        if (!decide(h, final))
            return 0;
        z_stream *z = calloc(1, sizeof *z);
        if (!z || deflateInit2(z, GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            free(z);
            return 0; /* sent as it is */
        }
        w->compress = z;
        int rc = compress_pending(h, z, final);
        if (rc == 0)
            rc = gale_set_header(h, "Content-Encoding", "gzip");
        if (rc == 0 && gale__handler_out_header(h, "Content-Length")) {
            char cl[24];
            size_t len;
            gale__http_response_buffered(gale_handler_request(h), &len);
            snprintf(cl, sizeof cl, "%zu", len);
            rc = final ? gale_set_header(h, "Content-Length", cl)
                       : gale_clear_header(h, "Content-Length");
        }
        return rc;
    }
    return w->compress ? compress_pending(h, w->compress, final) : 0;
}

void gale__compress_free(gale_handler *h)
{
    struct gale__handler_web *w = gale__handler_web(h);
    if (w->compress) {
        deflateEnd(w->compress);
        free(w->compress);
        w->compress = NULL;
    }
}
#else
int gale__compress_filter(gale_handler *h, bool final)
{
    (void)h, (void) final;
    return 0;
}
void gale__compress_free(gale_handler *h) { (void)h; }
#endif

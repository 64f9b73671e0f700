/* permessage-deflate (RFC 7692) for WebSockets: negotiating its parameters on both sides and
 * compressing and inflating whole messages with zlib (raw deflate, the 00 00 ff ff trailer
 * stripped and added back). Inflated output never grows past the receiver's max_message_size:
 * a zip bomb is refused (1009) after at most that many bytes. Without zlib at build time
 * (GALE_HAVE_ZLIB unset) no offer is ever accepted or made. */
#include "http/websocket_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/errors.h"

#ifdef GALE_HAVE_ZLIB
#include <zlib.h>
#endif

/* ---- negotiation ---- */

struct offer {
    bool snct, cnct; /* server_/client_no_context_takeover */
    int smwb, cmwb;  /* server_/client_max_window_bits: 0 absent, -1 present without value */
    bool bad;
};

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static bool is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && strncasecmp(s, lit, n) == 0;
}

/* Window bits "8".."15", optionally quoted. Returns 0 when invalid. */
static int window_bits(const char *v, size_t n)
{
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"')
        v++, n -= 2;
    if (n == 1 && v[0] >= '8' && v[0] <= '9')
        return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
        return 10 + v[1] - '0';
    return 0;
}

/* Parses one parameter "name[=value]" into `o`. */
static void offer_param(struct offer *o, const char *p, const char *end)
{
    const char *eq = memchr(p, '=', (size_t)(end - p));
    const char *ne = eq ? eq : end;
    while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
        ne--;
    size_t nlen = (size_t)(ne - p);
    const char *v = eq ? skip_ws(eq + 1, end) : NULL;
    size_t vlen = v ? (size_t)(end - v) : 0;
    while (v && vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    if (is(p, nlen, "server_no_context_takeover") && !v && !o->snct)
        o->snct = true;
    else if (is(p, nlen, "client_no_context_takeover") && !v && !o->cnct)
        o->cnct = true;
    else if (is(p, nlen, "server_max_window_bits") && v && !o->smwb)
        o->bad |= (o->smwb = window_bits(v, vlen)) == 0;
    else if (is(p, nlen, "client_max_window_bits") && !o->cmwb)
        o->bad |= (o->cmwb = v ? window_bits(v, vlen) : -1) == 0;
    else
        o->bad = true;
}

/* Parses the extension at [p, end) ("name; param; param=value"). Returns whether it is a
 * permessage-deflate with valid parameters, filling `o`. */
static bool parse_extension(const char *p, const char *end, struct offer *o)
{
    memset(o, 0, sizeof *o);
    p = skip_ws(p, end);
    if (p >= end)
        return false;
    const char *semi = memchr(p, ';', (size_t)(end - p));
    const char *ne = semi ? semi : end;
    while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
        ne--;
    if (!is(p, (size_t)(ne - p), "permessage-deflate"))
        return false;
    while (semi) {
        p = skip_ws(semi + 1, end);
        semi = memchr(p, ';', (size_t)(end - p));
        offer_param(o, p, semi ? semi : end);
    }
    return !o->bad;
}

static int clamp_bits(int b) { return b <= 0 ? 15 : b < 9 ? 9 : b > 15 ? 15 : b; }

bool gale__ws_pmd_accept(const char *offers, size_t olen, const gale_ws_compression *want,
                         gale__ws_pmd *agreed, char *resp, size_t rlen)
{
    if (!offers || !gale__ws_pmd_available())
        return false;
    const char *p = offers, *end = offers + olen;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        struct offer o;
        /* zlib cannot compress with a 256-byte window: an offer that demands one is declined */
        if (parse_extension(p, e, &o) && o.smwb != 8) {
            int wsm = want->server_max_window_bits ? clamp_bits(want->server_max_window_bits) : 15;
            int my_bits = o.smwb > 0 && o.smwb < wsm ? o.smwb : wsm;
            agreed->my_no_context = o.snct || want->server_no_context_takeover;
            agreed->peer_no_context = o.cnct || want->client_no_context_takeover;
            agreed->my_window_bits = my_bits;
            agreed->level = want->level > 0 && want->level <= 9 ? want->level : 6;
            agreed->min_length = want->min_length;
            int n = snprintf(resp, rlen, "permessage-deflate%s%s",
                             agreed->my_no_context ? "; server_no_context_takeover" : "",
                             agreed->peer_no_context ? "; client_no_context_takeover" : "");
            if (o.smwb > 0 || my_bits < 15)
                n += snprintf(resp + n, rlen - (size_t)n, "; server_max_window_bits=%d", my_bits);
            int wcm = want->client_max_window_bits ? clamp_bits(want->client_max_window_bits) : 0;
            if (o.cmwb > 0 || (o.cmwb < 0 && wcm)) {
                int cb = o.cmwb > 0 && (!wcm || o.cmwb < wcm) ? o.cmwb : wcm;
                snprintf(resp + n, rlen - (size_t)n, "; client_max_window_bits=%d", cb);
            }
            return true;
        }
        p = comma ? comma + 1 : end;
    }
    return false;
}

const char *gale__ws_pmd_offer(void) { return "permessage-deflate; client_max_window_bits"; }

int gale__ws_pmd_check_answer(const char *value, size_t vlen, gale__ws_pmd *agreed)
{
    struct offer o;
    if (memchr(value, ',', vlen) || !parse_extension(value, value + vlen, &o) || o.cmwb < 0 ||
        o.cmwb == 8)
        return GALE_EHTTP;
    agreed->my_no_context = o.cnct;
    agreed->peer_no_context = o.snct;
    agreed->my_window_bits = o.cmwb > 0 ? o.cmwb : 15;
    agreed->level = 6;
    agreed->min_length = 0;
    return 0;
}

#ifdef GALE_HAVE_ZLIB

struct gale__ws_deflate {
    gale__ws_pmd p;
    z_stream in, out;
    bool in_init, out_init;
};

bool gale__ws_pmd_available(void) { return true; }

gale__ws_deflate *gale__ws_deflate_new(const gale__ws_pmd *agreed)
{
    gale__ws_deflate *d = calloc(1, sizeof *d);
    if (d)
        d->p = *agreed;
    return d;
}

void gale__ws_deflate_free(gale__ws_deflate *d)
{
    if (!d)
        return;
    if (d->in_init)
        inflateEnd(&d->in);
    if (d->out_init)
        deflateEnd(&d->out);
    free(d);
}

size_t gale__ws_deflate_min_length(const gale__ws_deflate *d) { return d->p.min_length; }

int gale__ws_deflate_message(gale__ws_deflate *d, const void *data, size_t len, uint8_t **out,
                             size_t *olen)
{
    if (!d->out_init) {
        if (deflateInit2(&d->out, d->p.level, Z_DEFLATED, -d->p.my_window_bits, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            return -ENOMEM;
        d->out_init = true;
    }
    size_t cap = deflateBound(&d->out, (uLong)len) + 16, n = 0;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    d->out.next_in = (Bytef *)data;
    d->out.avail_in = (uInt)len;
    for (;;) {
        d->out.next_out = buf + n;
        d->out.avail_out = (uInt)(cap - n);
        int rc = deflate(&d->out, Z_SYNC_FLUSH);
        n = cap - d->out.avail_out;
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            free(buf);
            return -ENOMEM;
        }
        if (d->out.avail_out != 0)
            break;
        uint8_t *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            return -ENOMEM;
        }
        buf = nb;
        cap *= 2;
    }
    if (n >= 4 && memcmp(buf + n - 4, "\0\0\xff\xff", 4) == 0)
        n -= 4;
    /* zlib emits nothing for an empty message right after a flush: the empty stored block's
     * first byte is still due, so that the receiver's 00 00 ff ff completes it (RFC 7692 7.2.3.6) */
    if (n == 0)
        buf[n++] = 0;
    if (d->p.my_no_context)
        deflateReset(&d->out);
    *out = buf;
    *olen = n;
    return 0;
}

/* Inflates what is in d->in into the buffer, up to max. */
static int inflate_run(gale__ws_deflate *d, char **buf, size_t *blen, size_t *bcap, size_t max)
{
    z_stream *z = &d->in;
    for (;;) {
        if (*bcap - *blen < 2) {
            if (*blen > max)
                return GALE_WS_TOO_BIG;
            size_t cap = *bcap < 1024 ? 1024 : *bcap * 2;
            if (cap > max + 2)
                cap = max + 2;
            if (cap <= *bcap)
                return GALE_WS_TOO_BIG;
            char *nb = realloc(*buf, cap);
            if (!nb)
                return -ENOMEM;
            *buf = nb;
            *bcap = cap;
        }
        size_t room = *bcap - *blen - 1;
        z->next_out = (Bytef *)*buf + *blen;
        z->avail_out = (uInt)room;
        int rc = inflate(z, Z_SYNC_FLUSH);
        *blen += room - z->avail_out;
        if (*blen > max)
            return GALE_WS_TOO_BIG;
        if (rc == Z_STREAM_END) { /* the peer ended its deflate stream: begin afresh */
            inflateReset(z);
            if (z->avail_in == 0)
                return 0;
            continue;
        }
        if (rc == Z_BUF_ERROR && z->avail_out != 0)
            return 0; /* needs more input */
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return rc == Z_MEM_ERROR ? -ENOMEM : GALE_WS_INVALID_DATA;
        if (z->avail_in == 0 && z->avail_out != 0)
            return 0;
    }
}

int gale__ws_inflate(gale__ws_deflate *d, const uint8_t *in, size_t n, bool fin, char **buf,
                     size_t *blen, size_t *bcap, size_t max)
{
    if (!d)
        return GALE_WS_PROTOCOL_ERROR;
    if (!d->in_init) {
        if (inflateInit2(&d->in, -15) != Z_OK)
            return -ENOMEM;
        d->in_init = true;
    }
    static const uint8_t trailer[4] = {0, 0, 0xff, 0xff};
    d->in.next_in = (Bytef *)(fin ? trailer : in);
    d->in.avail_in = (uInt)(fin ? 4 : n);
    int rc = inflate_run(d, buf, blen, bcap, max);
    if (fin && rc == 0 && d->p.peer_no_context)
        inflateReset(&d->in);
    return rc;
}

#else /* no zlib */

bool gale__ws_pmd_available(void) { return false; }
gale__ws_deflate *gale__ws_deflate_new(const gale__ws_pmd *agreed)
{
    (void)agreed;
    return NULL;
}
void gale__ws_deflate_free(gale__ws_deflate *d) { (void)d; }
size_t gale__ws_deflate_min_length(const gale__ws_deflate *d)
{
    (void)d;
    return SIZE_MAX;
}
int gale__ws_deflate_message(gale__ws_deflate *d, const void *data, size_t len, uint8_t **out,
                             size_t *olen)
{
    (void)d, (void)data, (void)len, (void)out, (void)olen;
    return -ENOTSUP;
}
int gale__ws_inflate(gale__ws_deflate *d, const uint8_t *in, size_t n, bool fin, char **buf,
                     size_t *blen, size_t *bcap, size_t max)
{
    (void)d, (void)in, (void)n, (void)fin, (void)buf, (void)blen, (void)bcap, (void)max;
    return GALE_WS_PROTOCOL_ERROR;
}

#endif

/* WebSocket frames on the wire (RFC 6455 5): the incremental frame parser, frame headers,
 * masking, UTF-8 validation, close codes, and the handshake's accept key (SHA-1 + base64).
 * No I/O and no allocation: the parser is fed whatever bytes arrived, in any split, and checks
 * every rule of section 5 that a frame header can break before any payload is stored. */
#include "http/websocket_internal.h"

#include <assert.h>
#include <string.h>

enum { PS_HEAD, PS_DATA, PS_CONTROL, PS_FAILED };

void gale__ws_parser_init(gale__ws_parser *p, const gale__ws_parser_cbs *cbs, void *arg,
                          bool expect_mask, uint64_t max_len)
{
    memset(p, 0, sizeof *p);
    p->cbs = cbs;
    p->arg = arg;
    p->expect_mask = expect_mask;
    p->max_len = max_len;
}

static int fail(gale__ws_parser *p, int code, const char *why)
{
    p->state = PS_FAILED;
    p->why = why;
    return code;
}

/* Why the receiver refused a frame, by the close code it asked for. */
static const char *refusal(int code)
{
    switch (code) {
    case GALE_WS_INVALID_DATA: return "invalid data (UTF-8 or compressed)";
    case GALE_WS_TOO_BIG: return "message too big";
    case GALE_WS_INTERNAL_ERROR: return "out of memory";
    default: return "refused by the receiver";
    }
}

/* How many header bytes the frame needs, judging by what is collected so far. */
static size_t head_need(const gale__ws_parser *p)
{
    if (p->hlen < 2)
        return 2;
    size_t n = 2;
    uint8_t l7 = p->hdr[1] & 0x7f;
    if (l7 == 126)
        n += 2;
    else if (l7 == 127)
        n += 8;
    if (p->hdr[1] & 0x80)
        n += 4;
    return n;
}

/* The header is complete: checks it and announces the frame. */
static int head_done(gale__ws_parser *p)
{
    uint8_t b0 = p->hdr[0], b1 = p->hdr[1];
    p->fin = b0 >> 7;
    p->opcode = b0 & 0x0f;
    p->masked = b1 >> 7;
    bool rsv1 = b0 & 0x40;
    if (b0 & 0x30 || (rsv1 && !p->allow_rsv1))
        return fail(p, GALE_WS_PROTOCOL_ERROR, "reserved bit set");
    if (p->masked != p->expect_mask)
        return fail(p, GALE_WS_PROTOCOL_ERROR, p->masked ? "masked frame" : "unmasked frame");
    uint64_t len = b1 & 0x7f;
    size_t at = 2;
    if (len == 126) {
        len = (uint64_t)p->hdr[2] << 8 | p->hdr[3];
        at = 4;
        if (len < 126)
            return fail(p, GALE_WS_PROTOCOL_ERROR, "length not minimally encoded");
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p->hdr[2 + i];
        at = 10;
        if (len >> 63)
            return fail(p, GALE_WS_PROTOCOL_ERROR, "length with the top bit set");
        if (len <= 0xffff)
            return fail(p, GALE_WS_PROTOCOL_ERROR, "length not minimally encoded");
    }
    if (p->masked)
        memcpy(p->mask, p->hdr + at, 4);
    p->left = len;
    p->off = 0;
    p->hlen = 0;
    if (p->opcode >= 0x8) {
        if (p->opcode > WS_OP_PONG)
            return fail(p, GALE_WS_PROTOCOL_ERROR, "reserved opcode");
        if (!p->fin)
            return fail(p, GALE_WS_PROTOCOL_ERROR, "fragmented control frame");
        if (len > 125)
            return fail(p, GALE_WS_PROTOCOL_ERROR, "control frame over 125 bytes");
        if (rsv1)
            return fail(p, GALE_WS_PROTOCOL_ERROR, "compressed control frame");
        p->ctl_len = 0;
        p->state = PS_CONTROL;
        return 0;
    }
    if (p->opcode != WS_OP_CONT && p->opcode != WS_OP_TEXT && p->opcode != WS_OP_BINARY)
        return fail(p, GALE_WS_PROTOCOL_ERROR, "reserved opcode");
    bool first = p->opcode != WS_OP_CONT;
    if (first && p->in_message)
        return fail(p, GALE_WS_PROTOCOL_ERROR, "new message inside a fragmented one");
    if (!first && !p->in_message)
        return fail(p, GALE_WS_PROTOCOL_ERROR, "continuation without a message");
    if (!first && rsv1)
        return fail(p, GALE_WS_PROTOCOL_ERROR, "compression bit on a continuation");
    if (first)
        p->msg_len = 0;
    if (len > p->max_len || p->msg_len + len > p->max_len)
        return fail(p, GALE_WS_TOO_BIG, "message too big");
    p->msg_len += len;
    p->in_message = !p->fin;
    p->state = PS_DATA;
    int rc = p->cbs->frame(p->arg, first ? p->opcode : WS_OP_CONT, first, rsv1, len);
    if (rc > 0)
        return fail(p, rc, refusal(rc));
    return rc;
}

/* The current frame's payload is complete. */
static int frame_done(gale__ws_parser *p)
{
    int op = p->state == PS_CONTROL ? p->opcode : -1;
    bool fin = p->fin;
    p->state = PS_HEAD;
    int rc;
    if (op >= 0)
        rc = p->cbs->control(p->arg, op, p->ctl, p->ctl_len);
    else
        rc = fin ? p->cbs->message_end(p->arg) : 0;
    if (rc > 0)
        return fail(p, rc, refusal(rc));
    return rc;
}

int gale__ws_parse(gale__ws_parser *p, const uint8_t *data, size_t len, size_t *used)
{
    size_t i = 0;
    int rc = 0;
    while (rc == 0) {
        if (p->state == PS_FAILED) {
            *used = i;
            return GALE_WS_PROTOCOL_ERROR;
        }
        if (p->state == PS_HEAD) {
            if (i == len)
                break;
            size_t need = head_need(p);
            while (p->hlen < need && i < len) {
                p->hdr[p->hlen++] = data[i++];
                need = head_need(p);
            }
            if (p->hlen < need)
                break;
            rc = head_done(p);
            if (rc == 0 && p->left == 0)
                rc = frame_done(p);
            continue;
        }
        size_t n = len - i;
        if (n > p->left)
            n = (size_t)p->left;
        if (n == 0 && p->left)
            break;
        if (p->state == PS_CONTROL) {
            gale__ws_unmask(p->ctl + p->ctl_len, data + i, n, p->mask, p->off);
            p->ctl_len = (uint8_t)(p->ctl_len + n);
        } else if (n) {
            rc = p->cbs->data(p->arg, data + i, n, p->mask, p->off);
            if (rc > 0) {
                i += n;
                rc = fail(p, rc, refusal(rc));
                break;
            }
        }
        i += n;
        p->off += n;
        p->left -= n;
        if (p->left == 0 && rc == 0)
            rc = frame_done(p);
    }
    *used = i;
    if (rc > 0 && p->state == PS_FAILED)
        return rc;
    return rc < 0 ? -1 : 0;
}

size_t gale__ws_frame_header(uint8_t *out, int opcode, bool fin, bool rsv1, uint64_t len,
                             const uint8_t *mask)
{
    size_t n = 2;
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (opcode & 0x0f));
    uint8_t mbit = mask ? 0x80 : 0;
    if (len < 126) {
        out[1] = (uint8_t)(mbit | len);
    } else if (len <= 0xffff) {
        out[1] = mbit | 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        n = 4;
    } else {
        out[1] = mbit | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void gale__ws_unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                     uint64_t off)
{
    size_t i = 0;
    /* Align to the mask, then eight bytes at a time. */
    while (i < n && ((off + i) & 3))
        dst[i] = src[i] ^ mask[(off + i) & 3], i++;
    if (n - i >= 8) {
        uint32_t m32;
        memcpy(&m32, mask, 4);
        uint64_t m64 = (uint64_t)m32 << 32 | m32;
        for (; n - i >= 8; i += 8) {
            uint64_t v;
            memcpy(&v, src + i, 8);
            v ^= m64;
            memcpy(dst + i, &v, 8);
        }
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ mask[(off + i) & 3];
}

/* Bjoern Hoehrmann's UTF-8 DFA (MIT licence): rejects overlong forms, surrogates and code
 * points past U+10FFFF byte by byte, so an invalid message fails at its first bad byte. */
static const uint8_t utf8d[] = {
    /* byte classes */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    8, 8, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    10, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 3, 3, 11, 6, 6, 6, 5, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    8,
    /* transitions: state * 12 + class -> state (0 accept, 12 reject) */
    0, 12, 24, 36, 60, 96, 84, 12, 12, 12, 48, 72, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    12, 0, 12, 12, 12, 12, 12, 0, 12, 0, 12, 12, 12, 24, 12, 12, 12, 12, 12, 24, 12, 24, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12, 12, 12, 12, 24, 12, 12, 12,
    12, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12, 12, 36, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12, 12,
    36, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12};

uint32_t gale__ws_utf8(uint32_t state, const uint8_t *p, size_t n)
{
    /* Internally states are multiples of 12 (0 accept, 12 reject); outside 0/1 stand for those
     * two and anything else is an unfinished sequence. */
    uint32_t s = state == GALE_WS_UTF8_REJECT ? 12 : state == 0 ? 0 : state - 100;
    for (size_t i = 0; i < n; i++) {
        if (s == 0) { /* ASCII runs: eight bytes at a time */
            while (n - i >= 8) {
                uint64_t v;
                memcpy(&v, p + i, 8);
                if (v & 0x8080808080808080ull)
                    break;
                i += 8;
            }
            if (i == n)
                break;
        }
        s = utf8d[256 + s + utf8d[p[i]]];
        if (s == 12)
            return GALE_WS_UTF8_REJECT;
    }
    return s == 0 ? GALE_WS_UTF8_ACCEPT : s + 100;
}

bool gale__ws_close_code_valid(int code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* ---- the handshake's accept key ---- */

static uint32_t rol(uint32_t v, int n) { return v << n | v >> (32 - n); }

static void sha1_block(uint32_t h[5], const uint8_t *b)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20)
            f = (bb & c) | (~bb & d), k = 0x5a827999;
        else if (i < 40)
            f = bb ^ c ^ d, k = 0x6ed9eba1;
        else if (i < 60)
            f = (bb & c) | (bb & d) | (c & d), k = 0x8f1bbcdc;
        else
            f = bb ^ c ^ d, k = 0xca62c1d6;
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d, d = c, c = rol(bb, 30), bb = a, a = t;
    }
    h[0] += a, h[1] += bb, h[2] += c, h[3] += d, h[4] += e;
}

/* SHA-1 of a short message (the key and the GUID: under 128 bytes). */
static void sha1(const uint8_t *m, size_t n, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    uint8_t b[64];
    size_t i = 0;
    for (; n - i >= 64; i += 64)
        sha1_block(h, m + i);
    size_t r = n - i;
    memset(b, 0, sizeof b);
    memcpy(b, m + i, r);
    b[r] = 0x80;
    if (r >= 56) {
        sha1_block(h, b);
        memset(b, 0, sizeof b);
    }
    uint64_t bits = (uint64_t)n * 8;
    for (int j = 0; j < 8; j++)
        b[56 + j] = (uint8_t)(bits >> (56 - 8 * j));
    sha1_block(h, b);
    for (int j = 0; j < 20; j++)
        out[j] = (uint8_t)(h[j / 4] >> (24 - 8 * (j % 4)));
}

void gale__ws_base64(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

void gale__ws_accept_key(const char *key, size_t klen, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t buf[128], d[20];
    if (klen > sizeof buf - (sizeof guid - 1))
        klen = sizeof buf - (sizeof guid - 1); /* callers check the key's length first */
    memcpy(buf, key, klen);
    memcpy(buf + klen, guid, sizeof guid - 1);
    sha1(buf, klen + sizeof guid - 1, d);
    gale__ws_base64(d, 20, out);
}

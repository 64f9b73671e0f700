/* Fuzzes the WebSocket frame parser (http/websocket_frame.c) and the permessage-deflate inflater:
 * the input is parsed whole and again in input-chosen pieces, and both runs must report the same
 * events (frame headers, payload bytes unmasked, control frames, message ends) and the same
 * verdict; every frame's payload adds up to its announced length, control payloads stay within
 * 125 bytes, nothing is reported after a failure, and compressed messages inflate to at most the
 * limit.
 *
 * Input: byte 0 = flags (bit 0: server side, frames masked; bit 1: permessage-deflate agreed;
 * bits 2-7: the piece size for the split run, + 1), then the frames. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "http/websocket_internal.h"

#define MAX_LEN 65536

struct run {
    uint64_t hash;      /* of every event, in order */
    uint64_t frame_len; /* announced length of the data frame under way */
    uint64_t seen;      /* its payload bytes so far */
    bool failed;
    bool refused; /* the inflater refused a message: it may stop mid-piece */
    bool deflate, compressed;
    gale__ws_deflate *z;
    char *buf;
    size_t blen, bcap;
};

static void mix(struct run *r, uint64_t v) { r->hash = (r->hash ^ v) * 0x100000001b3ull; }

static int on_frame(void *arg, int opcode, bool first, bool rsv1, uint64_t len)
{
    struct run *r = arg;
    if (r->failed)
        fuzz_fail("frame after a failure");
    if (len > MAX_LEN)
        fuzz_fail("frame of %llu over the limit", (unsigned long long)len);
    mix(r, 1), mix(r, (uint64_t)opcode), mix(r, first), mix(r, rsv1), mix(r, len);
    r->frame_len = len;
    r->seen = 0;
    if (first)
        r->compressed = rsv1;
    return 0;
}

static int on_data(void *arg, const uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off)
{
    struct run *r = arg;
    if (off != r->seen || r->seen + n > r->frame_len)
        fuzz_fail("payload piece at %llu of %zu past the frame", (unsigned long long)off, n);
    r->seen += n;
    uint8_t tmp[MAX_LEN];
    gale__ws_unmask(tmp, p, n, mask, off);
    for (size_t i = 0; i < n; i++)
        mix(r, tmp[i]);
    if (r->compressed && r->z) {
        int rc = gale__ws_inflate(r->z, tmp, n, false, &r->buf, &r->blen, &r->bcap, MAX_LEN);
        if (r->blen > MAX_LEN + 1)
            fuzz_fail("inflated %zu past the limit", r->blen);
        r->refused |= rc != 0;
        if (rc)
            return rc > 0 ? rc : GALE_WS_INTERNAL_ERROR;
    }
    return 0;
}

static int on_end(void *arg)
{
    struct run *r = arg;
    mix(r, 3);
    if (r->compressed && r->z) {
        int rc = gale__ws_inflate(r->z, NULL, 0, true, &r->buf, &r->blen, &r->bcap, MAX_LEN);
        mix(r, r->blen);
        r->blen = 0;
        r->refused |= rc != 0;
        if (rc)
            return rc > 0 ? rc : GALE_WS_INTERNAL_ERROR;
    }
    return 0;
}

static int on_control(void *arg, int opcode, const uint8_t *p, size_t n)
{
    struct run *r = arg;
    if (n > 125)
        fuzz_fail("control payload of %zu", n);
    mix(r, 4), mix(r, (uint64_t)opcode);
    for (size_t i = 0; i < n; i++)
        mix(r, p[i]);
    return opcode == WS_OP_CLOSE ? -1 : 0; /* stop at a Close, as the connection does */
}

static const gale__ws_parser_cbs cbs = {on_frame, on_data, on_end, on_control};

static int run_once(struct run *r, uint8_t flags, const uint8_t *data, size_t len, size_t piece)
{
    gale__ws_parser p;
    memset(r, 0, sizeof *r);
    gale__ws_parser_init(&p, &cbs, r, flags & 1, MAX_LEN);
    p.allow_rsv1 = flags & 2;
    if (flags & 2) {
        gale__ws_pmd agreed = {.my_window_bits = 15, .level = 1};
        r->z = gale__ws_deflate_new(&agreed);
    }
    int verdict = 0;
    size_t off = 0;
    while (off < len) {
        size_t n = len - off < piece ? len - off : piece, used = 0;
        int rc = gale__ws_parse(&p, data + off, n, &used);
        if (used > n)
            fuzz_fail("parser used %zu of %zu", used, n);
        off += used;
        if (rc != 0) {
            verdict = rc;
            break;
        }
    }
    if (verdict > 0)
        r->failed = true;
    gale__ws_deflate_free(r->z);
    free(r->buf);
    return verdict == -1 ? -(int)off - 1 : verdict; /* a stop: where it stopped */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    size_t piece = (size_t)(flags >> 2) + 1;
    struct run whole, split;
    int v1 = run_once(&whole, flags, data + 1, size - 1, size);
    int v2 = run_once(&split, flags, data + 1, size - 1, piece);
    if (v1 != v2)
        fuzz_fail("verdict whole %d, in pieces of %zu: %d", v1, piece, v2);
    /* The inflater refuses a message at the same byte of its stream either way, but the bytes
     * hashed before that depend on the pieces: then only the verdicts compare. */
    if (!whole.refused && !split.refused && whole.hash != split.hash)
        fuzz_fail("events differ between whole and pieces of %zu", piece);
    return 0;
}

/* Fuzzes chunked request bodies through the server: a fixed "POST /echo" head with
 * "Transfer-Encoding: chunked", then the input as the body, sent at input-chosen splits. Besides
 * the request-path invariants (http_harness.h), a strict reference decoder (RFC 9112 chunks,
 * extensions without control bytes allowed, no trailers) model-checks the server: when it
 * accepts the body and the decoded size is within the server's limit, the first response must be
 * a 200 echoing exactly the decoded bytes.
 *
 * Input: byte 0 = flags (bits 0-2: k piece sizes follow, each byte + 1, cycled; bit 3: hold the
 * connection open until the server is quiet), then the body. */
#include "http_harness.h"

static const char head[] = "POST /echo HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n";

static int hexv(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes a chunked body into `out` (room for H_MAX_BODY bytes). Returns the decoded length, or
 * -1 when the body is invalid, incomplete, has trailers or exceeds the limit (no verdict). */
static long ref_dechunk(const uint8_t *p, size_t n, uint8_t *out)
{
    size_t i = 0, o = 0;
    for (;;) {
        size_t size = 0, digits = 0;
        while (i < n && hexv(p[i]) >= 0) {
            size = size * 16 + (size_t)hexv(p[i++]);
            if (++digits > 8 || size > H_MAX_BODY)
                return -1;
        }
        if (!digits)
            return -1;
        if (i < n && p[i] == ';')
            for (; i < n && p[i] != '\r' && p[i] != '\n'; i++)
                if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f)
                    return -1; /* a control byte: invalid in an extension (RFC 9112 7.1.1) */
        if (i + 1 >= n || p[i] != '\r' || p[i + 1] != '\n')
            return -1;
        i += 2;
        if (size == 0)
            return i + 2 <= n && p[i] == '\r' && p[i + 1] == '\n' ? (long)o : -1;
        if (o + size > H_MAX_BODY || n - i < size + 2)
            return -1;
        memcpy(out + o, p + i, size);
        o += size;
        i += size;
        if (p[i] != '\r' || p[i + 1] != '\n')
            return -1;
        i += 2;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    h_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    unsigned flags = fuzz_u8(&in);
    size_t k = flags % 8;
    if (k > in.n)
        k = in.n;
    const uint8_t *sizes = in.p;
    in.p += k;
    in.n -= k;
    size_t hlen = sizeof head - 1;
    uint8_t *req = malloc(hlen + in.n);
    if (!req)
        return 0;
    memcpy(req, head, hlen);
    memcpy(req + hlen, in.p, in.n);
    static struct h_result res;
    h_exchange(req, hlen + in.n, sizes, k, flags & 8, &res);
    static uint8_t want[H_MAX_BODY];
    long wlen = ref_dechunk(in.p, in.n, want);
    if (wlen >= 0) {
        FUZZ_CHECK(res.nfinal >= 1 && res.first_complete, "valid chunked body, no response");
        FUZZ_CHECK(res.first.status == 200, "valid chunked body answered %d", res.first.status);
        FUZZ_CHECK(res.first_body_len == (size_t)wlen && memcmp(res.first_body, want, wlen) == 0,
                   "echoed body (%zu bytes) differs from the reference decoding (%ld bytes)",
                   res.first_body_len, wlen);
    }
    free(req);
    return 0;
}

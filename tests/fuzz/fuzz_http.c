/* Fuzzes the HTTP request path: raw bytes from a client, at input-chosen splits, through the
 * connection state machine and the router (see http_harness.h for the invariants).
 *
 * Input: byte 0 = flags (bits 0-2: k piece sizes follow, each byte + 1, cycled, k = 0: one write;
 * bit 3: hold the connection open until the server is quiet), then the bytes the client sends. */
#include "http_harness.h"

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
    static struct h_result res;
    h_exchange(in.p, in.n, sizes, k, flags & 8, &res);
    return 0;
}

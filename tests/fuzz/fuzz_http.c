/* Fuzzes the HTTP request path: raw bytes from a client, at input-chosen splits, through the
 * connection state machine and the router (see http_harness.h for the invariants).
 *
 * Input: byte 0 mod 8 = k piece sizes that follow (each byte + 1, cycled; k = 0: one write), then
 * the bytes the client sends. */
#include "http_harness.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    h_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    size_t k = fuzz_u8(&in) % 8;
    if (k > in.n)
        k = in.n;
    const uint8_t *sizes = in.p;
    in.p += k;
    in.n -= k;
    static struct h_result res;
    h_exchange(in.p, in.n, sizes, k, &res);
    return 0;
}

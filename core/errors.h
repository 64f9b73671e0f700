/* gale error codes.
 *
 * Every gale function that can fail returns 0 (or a non-negative count) on success and a negative
 * errno on failure: -EINVAL, -ECONNRESET, -ETIMEDOUT... in errno's own sense. Conditions errno has
 * no name for get gale's own codes, all below -4000, listed once in GALE_ERRNO_MAP so that the
 * enum, gale_strerror() and gale_err_name() never drift apart. There is no global error state.
 */
#ifndef GALE_CORE_ERRORS_H
#define GALE_CORE_ERRORS_H

#include <errno.h>

/* X(name, value, message) */
#define GALE_ERRNO_MAP(X)                                                                          \
    X(EOF, -4001, "end of stream")                                                                 \
    X(UNSATISFIABLE, -4002, "read can never be satisfied")                                         \
    X(HTTP, -4003, "HTTP protocol error")                                                          \
    X(BADSTATUS, -4004, "unexpected HTTP status")                                                  \
    X(REDIRECTS, -4005, "too many redirects")                                                      \
    X(SCHEME, -4006, "unsupported URL scheme")                                                     \
    X(RESOLVE, -4007, "host name could not be resolved")                                           \
    X(STATE, -4008, "operation invalid in the object's current state")                             \
    X(TLS, -4009, "TLS error")                                                                     \
    X(CERT, -4010, "certificate verify failed")

enum {
#define GALE_ERRNO_ENUM(name, value, msg) GALE_E##name = (value),
    GALE_ERRNO_MAP(GALE_ERRNO_ENUM)
#undef GALE_ERRNO_ENUM
};

/* Returns a human-readable message for `err`, which may be a negative errno, a positive errno or
 * a GALE_E* code. Ownership: the string is static; never NULL (unknown codes give "unknown
 * error"). Thread-safe. */
const char *gale_strerror(int err);

/* Returns the symbolic name of `err` ("ECONNRESET", "GALE_EEOF"), or "UNKNOWN". Static string. */
const char *gale_err_name(int err);

#endif

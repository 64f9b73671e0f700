/* Hex digits, for the decoders of the http layer (percent escapes, XSRF tokens); not installed. */
#ifndef GALE_HTTP_HEX_INTERNAL_H
#define GALE_HTTP_HEX_INTERNAL_H

/* The value of hex digit `c` (either case), or -1. */
static inline int gale__hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif

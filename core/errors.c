#include "core/errors.h"

#include <string.h>

const char *gale_strerror(int err)
{
    switch (err) {
#define GALE_ERRNO_MSG(name, value, msg)                                                           \
    case value: return msg;
        GALE_ERRNO_MAP(GALE_ERRNO_MSG)
#undef GALE_ERRNO_MSG
    default: break;
    }
    if (err == 0)
        return "success";
    int e = err < 0 ? -err : err;
    /* strerrordesc_np (glibc >= 2.32) is static and thread-safe, unlike strerror. */
    const char *s = e < 4000 ? strerrordesc_np(e) : NULL;
    return s ? s : "unknown error";
}

const char *gale_err_name(int err)
{
    switch (err) {
#define GALE_ERRNO_NAME(name, value, msg)                                                          \
    case value: return "GALE_E" #name;
        GALE_ERRNO_MAP(GALE_ERRNO_NAME)
#undef GALE_ERRNO_NAME
    default: break;
    }
    if (err == 0)
        return "OK";
    int e = err < 0 ? -err : err;
    const char *s = e < 4000 ? strerrorname_np(e) : NULL;
    return s ? s : "UNKNOWN";
}

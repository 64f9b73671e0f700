/* The request body read as JSON through jansson (see json.h); without jansson, -ENOTSUP. */
#include "http/json.h"

#include <errno.h>

#include "core/log.h"

#ifdef GALE_HAVE_JANSSON
#include <jansson.h>

int gale_json_body(gale_handler *h, struct json_t **out)
{
    if (!h || !out)
        return -EINVAL;
    *out = NULL;
    size_t len;
    const char *body = gale_body(h, &len);
    json_error_t e;
    json_t *v = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!v) {
        if (json_error_code(&e) == json_error_out_of_memory)
            return -ENOMEM;
        gale_log_warning(GALE_LOG_GENERAL, "%s %s: body is not JSON (line %d, column %d): %s",
                         gale_method(h), gale_uri(h), e.line, e.column, e.text);
        return -EINVAL;
    }
    *out = v;
    return 0;
}
#else
int gale_json_body(gale_handler *h, struct json_t **out)
{
    if (out)
        *out = NULL;
    return -ENOTSUP;
}
#endif

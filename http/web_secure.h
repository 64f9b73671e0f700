/* Signed cookies, XSRF protection and the current user: Tornado's set_signed_cookie /
 * get_signed_cookie, xsrf_cookies and current_user, interoperable with Tornado.
 *
 * Signed values are Tornado's version 2 format,
 *     2|1:0|10:<timestamp>|<len>:<name>|<len>:<base64 value>|<hex HMAC-SHA256>
 * (key version 0), so a cookie signed here verifies in Tornado with the same secret and the
 * reverse. The signature is compared in constant time; a value whose signature, name or format
 * is wrong, or that is older than its max age, reads as absent. Signing needs OpenSSL's
 * libcrypto at build time (else -ENOTSUP).
 *
 * XSRF: with gale_app_set_xsrf_cookies(app, true), every POST, PUT, PATCH and DELETE must carry
 * the token of its "_xsrf" cookie in the "_xsrf" argument or an X-XSRFToken / X-CSRFToken
 * header, else it is answered 403 before prepare runs (as Tornado). Tokens are Tornado's masked
 * version 2 ("2|<hex mask>|<hex masked token>|<timestamp>"): a fresh mask per response, so the
 * token in a page never repeats (BREACH), while the cookie's raw token stays the same. A page
 * gets the token through gale_xsrf_token() or gale_xsrf_form_html(), which also set the cookie
 * when the request had none.
 *
 * Threads: as web.h, everything runs on the loop's thread. Strings returned live as long as the
 * request unless said otherwise.
 */
#ifndef GALE_HTTP_WEB_SECURE_H
#define GALE_HTTP_WEB_SECURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/web.h"

/* ---- application settings ---- */

/* Tornado's cookie_secret: the key that signs cookies (copied; set it before serving). Returns
 * 0, -EINVAL (NULL app, NULL or empty secret) or -ENOMEM. */
int gale_app_set_cookie_secret(gale_app *app, const char *secret);
/* Tornado's xsrf_cookies setting (off by default). Returns 0 or -EINVAL (NULL app). */
int gale_app_set_xsrf_cookies(gale_app *app, bool on);
/* Tornado's login_url, where @authenticated methods send visitors without a user (copied).
 * Returns 0, -EINVAL or -ENOMEM. */
int gale_app_set_login_url(gale_app *app, const char *url);

/* ---- signed values, without a request ---- */

/* Tornado's create_signed_value(secret, name, value, version=2) at time `timestamp` (seconds
 * since the epoch). `*out` gets a malloc'ed NUL-terminated string the caller frees. Returns 0,
 * -EINVAL (NULL or empty secret or name, a name with '|'), -ENOMEM or -ENOTSUP (no libcrypto). */
int gale_signed_value_create(const char *secret, const char *name, const void *value, size_t len,
                             int64_t timestamp, char **out);

/* Tornado's decode_signed_value for version 2 at time `now`: `*out` gets the value (malloc'ed,
 * NUL-terminated, `*out_len` bytes; may be NULL) the caller frees. Returns 0; -EINVAL (not a
 * version 2 signed value); -EACCES (the signature does not match `secret`, or the value was
 * signed for another name); -ETIMEDOUT (signed more than `max_age_days` before `now`);
 * -ENOMEM; -ENOTSUP (no libcrypto). */
int gale_signed_value_decode(const char *secret, const char *name, const char *signed_value,
                             double max_age_days, int64_t now, char **out, size_t *out_len);

/* ---- handler ---- */

/* Tornado's set_signed_cookie: sets cookie `name` to `value` (`len` bytes, any bytes) signed
 * with the app's secret. `opts` NULL: expires in 30 days, path "/". Returns 0, -EINVAL (no
 * cookie secret set, bad name), -EALREADY (headers sent), -ENOMEM or -ENOTSUP. */
int gale_set_signed_cookie(gale_handler *h, const char *name, const void *value, size_t len,
                           const gale_cookie_opts *opts);

/* Tornado's get_signed_cookie: the verified value of cookie `name` (NUL-terminated, `*len`
 * bytes; len may be NULL), or NULL when the cookie is missing, tampered with, signed for
 * another name or with another secret, older than `max_age_days` (<= 0: 31, Tornado's
 * default), or when no secret is set. A rejected cookie is logged at DEBUG. */
const char *gale_get_signed_cookie(gale_handler *h, const char *name, double max_age_days,
                                   size_t *len);

/* Tornado's current_user: the class's get_current_user() result, asked once per request and
 * cached; NULL when the class has none or it returned NULL. */
const char *gale_current_user(gale_handler *h);

/* Tornado's xsrf_token: a masked token for this response; sets the "_xsrf" cookie when the
 * request had no valid one. NULL when out of memory or no randomness was available. */
const char *gale_xsrf_token(gale_handler *h);

/* Tornado's xsrf_form_html: `<input type="hidden" name="_xsrf" value="..."/>` to put in a
 * form, or NULL as gale_xsrf_token. */
const char *gale_xsrf_form_html(gale_handler *h);

/* Tornado's check_xsrf_cookie, run before prepare when the app has xsrf_cookies on: 0 when the
 * request's token (argument "_xsrf", else header X-XSRFToken, else X-CSRFToken) matches its
 * cookie's, else -EACCES (logged at WARNING with the reason). */
int gale_check_xsrf_cookie(gale_handler *h);

#endif

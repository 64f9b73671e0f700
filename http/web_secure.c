/* Signed cookies, XSRF tokens, the current user and @authenticated (see web_secure.h), and the
 * app settings they read. The checks run from web.c's dispatch through gale__web_before_prepare
 * and gale__web_before_method. */
#include "http/web_secure.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "http/escape.h"
#include "http/hex_internal.h"
#include "http/web_internal.h"

#ifdef GALE_HAVE_CRYPTO
#include <openssl/evp.h>
#include <openssl/hmac.h>
#endif

#define DAY 86400.0
#define XSRF_LEN 16

/* ---- settings ---- */

static int set_str(char **slot, const char *v)
{
    char *c = strdup(v);
    if (!c)
        return -ENOMEM;
    free(*slot);
    *slot = c;
    return 0;
}

int gale_app_set_cookie_secret(gale_app *app, const char *secret)
{
    if (!app || !secret || !*secret)
        return -EINVAL;
    return set_str(&gale__app_settings(app)->cookie_secret, secret);
}

int gale_app_set_xsrf_cookies(gale_app *app, bool on)
{
    if (!app)
        return -EINVAL;
    gale__app_settings(app)->xsrf_cookies = on;
    return 0;
}

int gale_app_set_login_url(gale_app *app, const char *url)
{
    if (!app || !url || !*url)
        return -EINVAL;
    return set_str(&gale__app_settings(app)->login_url, url);
}

void gale__app_settings_free(struct gale__app_settings *s)
{
    free(s->cookie_secret);
    free(s->login_url);
    while (s->named) {
        struct gale__named_route *n = s->named;
        s->named = n->next;
        free(n->name);
        free(n->tmpl);
        free(n);
    }
    while (s->versions) {
        struct gale__static_version *v = s->versions;
        s->versions = v->next;
        free(v);
    }
    if (s->static_set)
        close(s->static_fd);
    free(s->static_dir);
    free(s->static_prefix);
    *s = (struct gale__app_settings){0};
}

/* ---- base64 (RFC 4648, with padding, as Python's b64encode) ---- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(char *dst, const unsigned char *src, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)src[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)src[i + 1] << 8;
        if (i + 2 < len)
            v |= src[i + 2];
        dst[o++] = B64[v >> 18 & 63];
        dst[o++] = B64[v >> 12 & 63];
        dst[o++] = i + 1 < len ? B64[v >> 6 & 63] : '=';
        dst[o++] = i + 2 < len ? B64[v & 63] : '=';
    }
    return o;
}

static int b64_val(char c)
{
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

/* Strict: length a multiple of 4, padding only at the end. Returns the length or -1. */
static long b64_decode(unsigned char *dst, const char *src, size_t len)
{
    if (len % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (src[i + k] == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = b64_val(src[i + k])) < 0) {
                return -1;
            }
        }
        unsigned w = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | v[3];
        dst[o++] = (unsigned char)(w >> 16);
        if (pad < 2)
            dst[o++] = (unsigned char)(w >> 8);
        if (pad < 1)
            dst[o++] = (unsigned char)w;
    }
    return (long)o;
}

/* ---- signing ---- */

static bool same_bytes(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= x[i] ^ y[i];
    return d == 0;
}

/* The lowercase hex HMAC-SHA256 of data under `secret` into hex[65]. */
static int sign(const char *secret, const char *data, size_t len, char hex[65])
{
#ifdef GALE_HAVE_CRYPTO
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)data, len, md,
              &mdlen) ||
        mdlen != 32)
        return -ENOMEM;
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 0;
#else
    (void)secret, (void)data, (void)len, (void)hex;
    return -ENOTSUP;
#endif
}

int gale_signed_value_create(const char *secret, const char *name, const void *value, size_t len,
                             int64_t timestamp, char **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!secret || !*secret || !name || !*name || strchr(name, '|') || (!value && len))
        return -EINVAL;
    if (len > (SIZE_MAX - 256) / 2 - strlen(name))
        return -ENOMEM;
    size_t b64len = (len + 2) / 3 * 4;
    size_t cap = 128 + strlen(name) + b64len;
    char *s = malloc(cap);
    char *b = malloc(b64len + 1);
    if (!s || !b) {
        free(s);
        free(b);
        return -ENOMEM;
    }
    b64_encode(b, value, len);
    char ts[24];
    int tlen = snprintf(ts, sizeof ts, "%" PRId64, timestamp);
    int n = snprintf(s, cap, "2|1:0|%d:%s|%zu:%s|%zu:", tlen, ts, strlen(name), name, b64len);
    memcpy(s + n, b, b64len);
    free(b);
    n += (int)b64len;
    s[n++] = '|';
    int rc = sign(secret, s, (size_t)n, s + n);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* One "<len>:<bytes>|" field of a v2 value at *p (Tornado's _consume_field). */
static bool field(const char **p, const char *end, const char **f, size_t *flen)
{
    const char *s = *p;
    size_t n = 0, digits = 0;
    while (s < end && *s >= '0' && *s <= '9' && digits < 10) {
        n = n * 10 + (size_t)(*s++ - '0');
        digits++;
    }
    if (!digits || s >= end || *s != ':' || (size_t)(end - s - 1) < n + 1 || s[1 + n] != '|')
        return false;
    *f = s + 1;
    *flen = n;
    *p = s + 2 + n;
    return true;
}

int gale_signed_value_decode(const char *secret, const char *name, const char *sv,
                             double max_age_days, int64_t now, char **out, size_t *out_len)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!secret || !*secret || !name || !sv)
        return -EINVAL;
    size_t total = strlen(sv);
    if (total < 2 || memcmp(sv, "2|", 2) != 0)
        return -EINVAL;
    const char *p = sv + 2, *end = sv + total;
    const char *kv, *ts, *nm, *val;
    size_t kvl, tsl, nml, vall;
    if (!field(&p, end, &kv, &kvl) || !field(&p, end, &ts, &tsl) || !field(&p, end, &nm, &nml) ||
        !field(&p, end, &val, &vall))
        return -EINVAL;
    char want[65];
    int rc = sign(secret, sv, (size_t)(p - sv), want);
    if (rc)
        return rc;
    if ((size_t)(end - p) != 64 || !same_bytes(p, want, 64))
        return -EACCES;
    if (nml != strlen(name) || memcmp(nm, name, nml) != 0)
        return -EACCES;
    int64_t t = 0;
    if (tsl == 0 || tsl > 18)
        return -EINVAL;
    for (size_t i = 0; i < tsl; i++) {
        if (ts[i] < '0' || ts[i] > '9')
            return -EINVAL;
        t = t * 10 + (ts[i] - '0');
    }
    if ((double)t < (double)now - max_age_days * DAY)
        return -ETIMEDOUT;
    unsigned char *v = malloc(vall / 4 * 3 + 1);
    if (!v)
        return -ENOMEM;
    long n = b64_decode(v, val, vall);
    if (n < 0) {
        free(v);
        return -EINVAL;
    }
    v[n] = '\0';
    *out = (char *)v;
    if (out_len)
        *out_len = (size_t)n;
    return 0;
}

/* ---- signed cookies ---- */

static const char *secret_of(gale_handler *h)
{
    return gale__app_settings(gale_handler_app(h))->cookie_secret;
}

int gale_set_signed_cookie(gale_handler *h, const char *name, const void *value, size_t len,
                           const gale_cookie_opts *opts)
{
    const char *secret = secret_of(h);
    if (!secret) {
        gale_log_error(GALE_LOG_APP, "set_signed_cookie(%s): no cookie secret set", name);
        return -EINVAL;
    }
    char *sv;
    int rc = gale_signed_value_create(secret, name, value, len, (int64_t)time(NULL), &sv);
    if (rc)
        return rc;
    gale_cookie_opts o = {0};
    if (opts)
        o = *opts;
    else
        o.expires = (int64_t)time(NULL) + 30 * 86400;
    rc = gale_set_cookie(h, name, sv, &o);
    free(sv);
    return rc;
}

const char *gale_get_signed_cookie(gale_handler *h, const char *name, double max_age_days,
                                   size_t *len)
{
    const char *secret = secret_of(h);
    const char *c = gale_get_cookie(h, name, NULL);
    if (!secret || !c)
        return NULL;
    char *v;
    size_t vlen;
    int rc = gale_signed_value_decode(secret, name, c, max_age_days > 0 ? max_age_days : 31,
                                      (int64_t)time(NULL), &v, &vlen);
    if (rc) {
        gale_log_debug(GALE_LOG_GENERAL, "%s %s: signed cookie %s refused: %s", gale_method(h),
                       gale_uri(h), name, gale_strerror(rc));
        return NULL;
    }
    char *copy = gale_http_request_strdup(gale_handler_request(h), v, vlen);
    free(v);
    if (copy && len)
        *len = vlen;
    return copy;
}

/* ---- current user and @authenticated ---- */

const char *gale_current_user(gale_handler *h)
{
    struct gale__handler_web *w = gale__handler_web(h);
    if (!w->current_user_done) {
        w->current_user_done = true;
        const gale_handler_class *cls = gale__handler_class(h);
        w->current_user = cls->get_current_user ? cls->get_current_user(h) : NULL;
    }
    return w->current_user;
}

static unsigned method_bit(const char *m)
{
    static const struct {
        const char *name;
        unsigned bit;
    } t[] = {{"GET", GALE_METHOD_GET},        {"HEAD", GALE_METHOD_HEAD},
             {"POST", GALE_METHOD_POST},      {"PUT", GALE_METHOD_PUT},
             {"DELETE", GALE_METHOD_DELETE},  {"PATCH", GALE_METHOD_PATCH},
             {"OPTIONS", GALE_METHOD_OPTIONS}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(m, t[i].name) == 0)
            return t[i].bit;
    return 0;
}

/* GET and HEAD without a user go to the login page with ?next=<where they were going>. */
static void to_login(gale_handler *h)
{
    const char *login = gale__app_settings(gale_handler_app(h))->login_url;
    if (!login) {
        gale_log_error(GALE_LOG_APP, "%s %s: an authenticated method needs a login URL",
                       gale_method(h), gale_uri(h));
        gale_send_error(h, 500);
        return;
    }
    if (strchr(login, '?')) {
        gale_redirect(h, login, 302);
        return;
    }
    const char *next = gale_uri(h);
    if (strstr(login, "://")) { /* an absolute login URL gets the full URL back */
        const char *host = gale_http_request_host(gale_handler_request(h));
        size_t n = strlen(host ? host : "") + strlen(next) + 8;
        char *full = gale_handler_alloc(h, n);
        if (full)
            snprintf(full, n, "http://%s%s", host ? host : "", next);
        next = full;
    }
    const char *enext = gale_url_escape_dup(h, next, true);
    size_t n = strlen(login) + (enext ? strlen(enext) : 0) + 8;
    char *url = gale_handler_alloc(h, n);
    if (!enext || !url) {
        gale_fail(h, -ENOMEM);
        return;
    }
    snprintf(url, n, "%s?next=%s", login, enext);
    gale_redirect(h, url, 302);
}

bool gale__web_before_method(gale_handler *h)
{
    const gale_handler_class *cls = gale__handler_class(h);
    if (!cls->authenticated)
        return true;
    unsigned bit = method_bit(gale_method(h));
    if (bit == GALE_METHOD_HEAD && !cls->head)
        bit |= GALE_METHOD_GET; /* HEAD runs .get: its guard applies */
    if (!(cls->authenticated & bit) || gale_current_user(h))
        return true;
    if (bit & (GALE_METHOD_GET | GALE_METHOD_HEAD))
        to_login(h);
    else
        gale_send_error(h, 403);
    return false;
}

/* ---- XSRF ---- */

/* Decodes `len` hex digits into dst (len/2 bytes). */
static bool unhex(unsigned char *dst, const char *s, size_t len)
{
    if (len % 2)
        return false;
    for (size_t i = 0; i < len; i += 2) {
        int hi = gale__hexval((unsigned char)s[i]), lo = gale__hexval((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        dst[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

static void tohex(char *dst, const unsigned char *s, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = hx[s[i] >> 4];
        dst[2 * i + 1] = hx[s[i] & 15];
    }
}

/* Tornado's _decode_xsrf_token: "2|mask|masked|time" unmasked; an unversioned token (version 1)
 * is hex, else its bytes. `*tok` is arena memory. Returns false for a malformed one. */
static bool decode_xsrf(gale_handler *h, const char *s, unsigned char **tok, size_t *len,
                        int64_t *ts)
{
    size_t n = strlen(s);
    *ts = (int64_t)time(NULL);
    if (n >= 2 && s[0] == '2' && s[1] == '|') {
        const char *mask = s + 2, *bar1 = strchr(mask, '|');
        const char *masked = bar1 ? bar1 + 1 : NULL, *bar2 = masked ? strchr(masked, '|') : NULL;
        if (!bar2 || strchr(bar2 + 1, '|') || bar1 - mask != 8 || bar2 == masked)
            return false;
        unsigned char m[4];
        size_t ml = (size_t)(bar2 - masked);
        *tok = gale_handler_alloc(h, ml / 2 + 1);
        if (!*tok || !unhex(m, mask, 8) || !unhex(*tok, masked, ml))
            return false;
        for (size_t i = 0; i < ml / 2; i++)
            (*tok)[i] ^= m[i % 4];
        *len = ml / 2;
        char *endp;
        long long t = strtoll(bar2 + 1, &endp, 10);
        if (*endp || endp == bar2 + 1)
            return false;
        *ts = t;
        return true;
    }
    if (n >= 2 && s[0] >= '1' && s[0] <= '9' && strchr(s, '|'))
        return false; /* an unknown version */
    *tok = gale_handler_alloc(h, n + 1);
    if (!*tok)
        return false;
    if (unhex(*tok, s, n)) {
        *len = n / 2;
    } else {
        memcpy(*tok, s, n);
        *len = n;
    }
    return n > 0;
}

/* The request's raw token (from its cookie) or a new random one (Tornado's _get_raw_xsrf_token). */
static bool raw_xsrf(gale_handler *h)
{
    struct gale__handler_web *w = gale__handler_web(h);
    if (w->xsrf_raw_done)
        return w->xsrf_raw != NULL;
    w->xsrf_raw_done = true;
    const char *c = gale_get_cookie(h, "_xsrf", NULL);
    unsigned char *tok;
    if (c && decode_xsrf(h, c, &tok, &w->xsrf_raw_len, &w->xsrf_time)) {
        w->xsrf_raw = tok;
        w->xsrf_from_cookie = true;
        return true;
    }
    tok = gale_handler_alloc(h, XSRF_LEN);
    if (!tok || getrandom(tok, XSRF_LEN, 0) != XSRF_LEN)
        return false;
    w->xsrf_raw = tok;
    w->xsrf_raw_len = XSRF_LEN;
    w->xsrf_time = (int64_t)time(NULL);
    return true;
}

const char *gale_xsrf_token(gale_handler *h)
{
    struct gale__handler_web *w = gale__handler_web(h);
    if (w->xsrf_token)
        return w->xsrf_token;
    unsigned char mask[4];
    if (!raw_xsrf(h) || getrandom(mask, 4, 0) != 4)
        return NULL;
    size_t n = 2 + 8 + 1 + 2 * w->xsrf_raw_len + 1 + 24;
    char *t = gale_handler_alloc(h, n);
    if (!t)
        return NULL;
    memcpy(t, "2|", 2);
    tohex(t + 2, mask, 4);
    t[10] = '|';
    for (size_t i = 0; i < w->xsrf_raw_len; i++) {
        unsigned char b = w->xsrf_raw[i] ^ mask[i % 4];
        tohex(t + 11 + 2 * i, &b, 1);
    }
    snprintf(t + 11 + 2 * w->xsrf_raw_len, 26, "|%" PRId64, w->xsrf_time);
    if (!w->xsrf_from_cookie) {
        gale_cookie_opts o = {0};
        if (gale_current_user(h))
            o.expires = (int64_t)time(NULL) + 30 * 86400;
        if (gale_set_cookie(h, "_xsrf", t, &o) < 0)
            return NULL;
        w->xsrf_from_cookie = true; /* once per response */
    }
    w->xsrf_token = t;
    return t;
}

const char *gale_xsrf_form_html(gale_handler *h)
{
    const char *t = gale_xsrf_token(h);
    const char *e = t ? gale_xhtml_escape_dup(h, t) : NULL;
    if (!e)
        return NULL;
    size_t n = strlen(e) + 64;
    char *html = gale_handler_alloc(h, n);
    if (html)
        snprintf(html, n, "<input type=\"hidden\" name=\"_xsrf\" value=\"%s\"/>", e);
    return html;
}

static int xsrf_refuse(gale_handler *h, const char *why)
{
    gale_log_warning(GALE_LOG_GENERAL, "%s %s (%s): 403: %s", gale_method(h), gale_uri(h),
                     gale_remote_ip(h), why);
    return -EACCES;
}

int gale_check_xsrf_cookie(gale_handler *h)
{
    const char *given = gale_get_argument(h, "_xsrf", NULL);
    size_t hl;
    const char *hv = NULL;
    if (!given && (hv = gale_get_header(h, "X-XSRFToken", &hl)) == NULL)
        hv = gale_get_header(h, "X-CSRFToken", &hl);
    if (!given && hv)
        given = gale_http_request_strdup(gale_handler_request(h), hv, hl);
    if (!given || !*given)
        return xsrf_refuse(h, "'_xsrf' argument missing from the request");
    unsigned char *tok;
    size_t len;
    int64_t ts;
    if (!decode_xsrf(h, given, &tok, &len, &ts))
        return xsrf_refuse(h, "'_xsrf' argument has an invalid format");
    struct gale__handler_web *w = gale__handler_web(h);
    if (!raw_xsrf(h) || !w->xsrf_from_cookie || len != w->xsrf_raw_len ||
        !same_bytes(tok, w->xsrf_raw, len))
        return xsrf_refuse(h, "XSRF cookie does not match the request's token");
    return 0;
}

bool gale__web_before_prepare(gale_handler *h)
{
    if (!gale__app_settings(gale_handler_app(h))->xsrf_cookies)
        return true;
    unsigned bit = method_bit(gale_method(h));
    if (bit & (GALE_METHOD_GET | GALE_METHOD_HEAD | GALE_METHOD_OPTIONS))
        return true;
    if (gale_check_xsrf_cookie(h) == 0)
        return true;
    gale_send_error(h, 403);
    return false;
}

/* The server side of the WebSocket opening handshake (RFC 6455 4.2) and the web layer's route to
 * a WebSocket class: checks the upgrade request (400, 403, 426 answers go out as ordinary HTTP
 * responses through the handler), agrees on a subprotocol and permessage-deflate, then takes the
 * stream from the HTTP server (gale_http_request_detach), writes the 101 and starts the
 * connection (websocket.c). */
#include "http/websocket_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "http/web_internal.h"

struct ws_route {
    const gale_ws_class *cls;
    void *arg;
};

/* Whether the comma-separated header values called `name` hold `token` (case-insensitive). */
static bool header_has_token(gale_handler *h, const char *name, const char *token)
{
    size_t cur = 0, tlen = strlen(token);
    const gale_http_header *hd;
    while ((hd = gale_header_next(h, name, &cur))) {
        const char *p = hd->value.p, *end = hd->value.p + hd->value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',')
                p++;
            const char *e = p;
            while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if ((size_t)(e - s) == tlen && strncasecmp(s, token, tlen) == 0)
                return true;
        }
    }
    return false;
}

/* A Sec-WebSocket-Key: base64 of 16 bytes (24 characters ending in "=="). */
static bool key_valid(const char *k, size_t n)
{
    if (n != 24 || k[22] != '=' || k[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return false;
    }
    /* the last character before the padding carries 2 bits: the other 4 must be zero */
    return strchr("AQgw", k[21]) != NULL;
}

/* Tornado's default check_origin: the Origin's host (scheme stripped) equals the Host header. */
static bool same_origin(gale_handler *h, const char *origin)
{
    const char *host = gale_http_request_host(gale_handler_request(h));
    const char *o = strstr(origin, "://");
    o = o ? o + 3 : origin;
    size_t olen = strcspn(o, "/");
    return host && strlen(host) == olen && strncasecmp(o, host, olen) == 0;
}

static int refuse(gale_handler *h, int status, const char *why)
{
    gale_log_info(GALE_LOG_GENERAL, "websocket: %s %s refused (%d): %s", gale_method(h),
                  gale_uri(h), status, why);
    gale_set_status(h, status);
    gale_set_header(h, "Content-Type", "text/plain; charset=UTF-8");
    if (status == 426) {
        gale_set_header(h, "Sec-WebSocket-Version", "13");
        gale_set_header(h, "Upgrade", "websocket");
    }
    gale_write_str(h, why);
    gale_write_str(h, "\n");
    return gale_finish(h);
}

/* The request's Sec-WebSocket-Protocol offers, split, passed to select_subprotocol. Returns 0 or
 * -ENOMEM; ws->subprotocol is set to the choice (a copy). */
static int choose_subprotocol(gale_ws *ws, gale_handler *h)
{
    const char *items[32];
    size_t n = 0, cur = 0;
    const gale_http_header *hd;
    while ((hd = gale_header_next(h, "Sec-WebSocket-Protocol", &cur))) {
        const char *p = hd->value.p, *end = p + hd->value.len;
        while (p < end && n < 32) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if (p > s && !(items[n++] = gale_handler_alloc(h, (size_t)(p - s) + 1)))
                return -ENOMEM;
            if (p > s)
                memcpy((char *)items[n - 1], s, (size_t)(p - s));
        }
    }
    if (n == 0 || !ws->cls->select_subprotocol)
        return 0;
    const char *pick = ws->cls->select_subprotocol(ws, items, n);
    for (size_t i = 0; pick && i < n; i++) {
        if (strcmp(pick, items[i]) == 0)
            return (ws->subprotocol = strdup(pick)) ? 0 : -ENOMEM;
    }
    return 0;
}

/* Agrees on permessage-deflate when the class wants it and an offer is acceptable; writes the
 * response's extension value into `resp` ("" when declined). */
static int choose_compression(gale_ws *ws, gale_handler *h, char *resp, size_t rlen)
{
    gale_ws_compression want = {0};
    resp[0] = '\0';
    if (!ws->cls->get_compression_options || !ws->cls->get_compression_options(ws, &want))
        return 0;
    size_t cur = 0;
    const gale_http_header *hd;
    gale__ws_pmd agreed;
    while ((hd = gale_header_next(h, "Sec-WebSocket-Extensions", &cur))) {
        if (gale__ws_pmd_accept(hd->value.p, hd->value.len, &want, &agreed, resp, rlen)) {
            ws->pmd = gale__ws_deflate_new(&agreed);
            if (!ws->pmd)
                return -ENOMEM;
            ws->parser.allow_rsv1 = true;
            return 0;
        }
    }
    resp[0] = '\0';
    return 0;
}

/* The handshake's checks; returns the refusal's status (0: acceptable) and `*why`. */
static int check_request(gale_handler *h, const char **why)
{
    size_t vlen, klen;
    if (strcmp(gale_method(h), "GET") != 0)
        return *why = "a WebSocket upgrade must be a GET", 400;
    if (!header_has_token(h, "Upgrade", "websocket"))
        return *why = "Can \"Upgrade\" only to \"WebSocket\".", 400;
    if (!header_has_token(h, "Connection", "upgrade"))
        return *why = "\"Connection\" must be \"Upgrade\".", 400;
    const char *v = gale_get_header(h, "Sec-WebSocket-Version", &vlen);
    if (!v)
        return *why = "Missing Sec-WebSocket-Version", 400;
    if (vlen != 2 || memcmp(v, "13", 2) != 0)
        return *why = "Unsupported Sec-WebSocket-Version", 426;
    size_t cur = 0;
    const gale_http_header *k1 = gale_header_next(h, "Sec-WebSocket-Key", &cur);
    const char *k = gale_get_header(h, "Sec-WebSocket-Key", &klen);
    if (!k || gale_header_next(h, "Sec-WebSocket-Key", &cur) || !key_valid(k, klen))
        return *why = k1 ? "Bad Sec-WebSocket-Key" : "Missing Sec-WebSocket-Key", 400;
    return 0;
}

static void ws_upgrade(gale_handler *h)
{
    const struct ws_route *rt = gale_handler_arg(h);
    const char *why;
    int status = check_request(h, &why);
    if (status) {
        refuse(h, status, why);
        return;
    }
    gale_ws *ws = gale__ws_new(NULL, rt->cls, rt->arg, false, 0);
    if (!ws) {
        gale_fail(h, -ENOMEM);
        return;
    }
    ws->handler = h;
    ws->loop = gale_handler_loop(h);
    size_t olen;
    const char *origin = gale_get_header(h, "Origin", &olen);
    char *ocopy = origin ? gale_handler_alloc(h, olen + 1) : NULL;
    if (ocopy)
        memcpy(ocopy, origin, olen);
    if (origin && ocopy &&
        !(rt->cls->check_origin ? rt->cls->check_origin(ws, ocopy) : same_origin(h, ocopy))) {
        gale__ws_discard(ws);
        refuse(h, 403, "Cross origin websockets not allowed");
        return;
    }
    char ext[200];
    if ((origin && !ocopy) || choose_subprotocol(ws, h) < 0 ||
        choose_compression(ws, h, ext, sizeof ext) < 0) {
        gale__ws_discard(ws);
        gale_fail(h, -ENOMEM);
        return;
    }
    size_t klen;
    const char *key = gale_get_header(h, "Sec-WebSocket-Key", &klen);
    char accept[29], resp[512];
    gale__ws_accept_key(key, klen, accept);
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
                     accept);
    if (ws->subprotocol && strlen(ws->subprotocol) < 200)
        n += snprintf(resp + n, sizeof resp - (size_t)n, "Sec-WebSocket-Protocol: %s\r\n",
                      ws->subprotocol);
    if (ext[0])
        n += snprintf(resp + n, sizeof resp - (size_t)n, "Sec-WebSocket-Extensions: %s\r\n", ext);
    n += snprintf(resp + n, sizeof resp - (size_t)n, "\r\n");
    gale_stream *s;
    int rc = gale_http_request_detach(gale_handler_request(h), &s);
    if (rc < 0) {
        gale__ws_discard(ws);
        if (rc == -EBUSY)
            refuse(h, 503, "busy");
        else
            gale_finish(h);
        return;
    }
    /* The 101 goes out before anything open() writes. */
    if (gale_stream_write(s, resp, (size_t)n, NULL, NULL) < 0) {
        gale__ws_discard(ws);
        gale_stream_close(s, 0);
        gale_finish(h);
        return;
    }
    gale__ws_attach(ws, s);
    gale_ws_ref(ws);
    gale__ws_start(ws);
    ws->handler = NULL;
    gale_ws_unref(ws);
    gale_finish(h);
}

static const gale_handler_class ws_http_class = {.get = ws_upgrade};

int gale_app_websocket(gale_app *app, const char *pattern, const gale_ws_class *cls, void *arg)
{
    if (!app || !pattern || !cls)
        return -EINVAL;
    struct ws_route *rt = malloc(sizeof *rt);
    if (!rt)
        return -ENOMEM;
    rt->cls = cls;
    rt->arg = arg;
    return gale__app_route_owned(app, pattern, &ws_http_class, rt, free);
}

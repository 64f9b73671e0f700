/* The router showcase: one handler class per route, written as a gale user would. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/coro.h"
#include "core/errors.h"
#include "core/loop.h"
#include "core/options.h"
#include "http/escape.h"
#include "http/httpclient.h"
#include "http/web.h"
#include "http/web_compress.h"
#include "http/web_secure.h"
#include "http/web_static.h"
#include "http/websocket.h"

#include "listen.h"

static const char DESCRIPTION[] =
    "The router showcase: one handler class per route, written as a gale user would. Stops\n"
    "gracefully on SIGTERM or SIGINT.";

static const char ROUTES[] =
    "routes (HEAD works wherever GET does; other paths 404, other methods 405):\n"
    "  GET  /                 Hello, world!\n"
    "  GET  /user/<digits>    user <digits>\n"
    "  GET  /greet?name=X     Hello, X!  (X percent-decoded, '+' is a space, then HTML-escaped;\n"
    "                         no name: 400)\n"
    "  POST /echo, PUT /echo  the request body, with the request's Content-Type\n"
    "                         (else application/octet-stream)\n"
    "  POST /upload, PUT /upload  a streamed body of any size, counted as it arrives (never\n"
    "                         held in memory): \"bytes N crc32 XXXXXXXX\" (the CRC-32 of zlib\n"
    "                         and gzip); try: curl -T bigfile http://127.0.0.1:8888/upload\n"
    "  GET  /delay?ms=N       waited N ms, after N ms on a timer (0..10000, else 400)\n"
    "  GET  /stream?chunks=N  chunked: N chunks \"chunk 1\\n\" .. \"chunk N\\n\", each flushed\n"
    "                         on its own (1..1000, else 400)\n"
    "  GET  /status/<code>    that status (200..599, else 400), body \"status <code>\"\n"
    "                         (none for 204 and 304)\n"
    "  GET  /redirect?to=P    302 to the local path P (starting with a single '/'), else 400\n"
    "  GET  /header/<name>    the request header's value (repeats joined by \", \"), else 404\n"
    "  GET  /ip               the client's address (with --xheaders, the one a proxy passes on)\n"
    "  GET  /error            a failing handler: 500\n"
    "  GET  /relay?path=P     a coroutine handler: fetches the local path P (starting with a\n"
    "                         single '/', not under /relay, else 400) from this server with the\n"
    "                         async client and answers \"relayed <status> <body>\" (502 when the\n"
    "                         fetch fails; TCP only)\n"
    "  GET  /ws               WebSocket echo: text as text, binary as binary (permessage-deflate\n"
    "                         when offered; messages up to 16 MiB, else close 1009)\n"
    "  GET  /chat             WebSocket broadcast room: every message goes to every member\n"
    "                         (members of the same process)\n"
    "with --static-path DIR:\n"
    "  GET  /static/<path>    the file DIR/<path> (ETag, 304, ranges; never outside DIR)\n"
    "with --cookie-secret S:\n"
    "  GET  /cookie/set?name=N&value=V  sets cookie N to V signed with S (Tornado's format)\n"
    "  GET  /cookie/get?name=N          the verified value of cookie N; 403 when it is missing,\n"
    "                                   tampered with, signed for another name or secret, or\n"
    "                                   older than 31 days\n"
    "with --xsrf:\n"
    "  GET  /xsrf             sets the _xsrf cookie; answers a form carrying its token\n"
    "                         (POST, PUT, PATCH, DELETE then need the token, else 403)\n"
    "\n"
    "environment: GALE_LOG_LEVEL (debug, info, warning, error, none),\n"
    "GALE_LOOP_BACKEND (epoll, poll)";

/* Parses an unsigned decimal made only of digits (no sign, no spaces), at most `max`. Returns the
 * value, or -1. */
static long parse_digits(const char *s, long max)
{
    if (!s || !*s)
        return -1;
    long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > max)
            return -1;
    }
    return v;
}

/* GET / */
static void root_get(gale_handler *h) { gale_write_str(h, "Hello, world!"); }
static const gale_handler_class root_handler = {.get = root_get};

/* GET /user/<digits> */
static void user_get(gale_handler *h)
{
    size_t len;
    const char *id = gale_path_arg(h, 0, &len);
    gale_write_str(h, "user ");
    gale_write(h, id, len);
}
static const gale_handler_class user_handler = {.get = user_get};

/* GET /greet?name=X */
static void greet_get(gale_handler *h)
{
    size_t n = gale_argument_count(h, GALE_ARGS_ALL, "name"), len;
    if (n == 0) {
        gale_send_error(h, 400);
        return;
    }
    const char *name = gale_get_argument_at(h, GALE_ARGS_ALL, "name", n - 1, &len);
    /* The reply is HTML: the name is escaped, so a name holding markup shows as text. */
    char *safe = gale_handler_alloc(h, GALE_XHTML_ESCAPE_MAX(len) + 1);
    if (!safe) {
        gale_send_error(h, 500);
        return;
    }
    gale_write_str(h, "Hello, ");
    gale_write(h, safe, gale_xhtml_escape(safe, name, len));
    gale_write_str(h, "!");
}
static const gale_handler_class greet_handler = {.get = greet_get};

/* GET /cookie/set?name=N&value=V (with --cookie-secret) */
static void cookie_set_get(gale_handler *h)
{
    const char *name = gale_get_argument(h, "name", NULL);
    const char *value = gale_get_argument(h, "value", NULL);
    if (!name || !value || gale_set_signed_cookie(h, name, value, strlen(value), NULL) != 0) {
        gale_send_error(h, 400);
        return;
    }
    gale_write_str(h, "set");
}
static const gale_handler_class cookie_set_handler = {.get = cookie_set_get};

/* GET /cookie/get?name=N (with --cookie-secret) */
static void cookie_get_get(gale_handler *h)
{
    const char *name = gale_get_argument(h, "name", NULL);
    size_t len;
    const char *v = name ? gale_get_signed_cookie(h, name, 0, &len) : NULL;
    if (!v) {
        gale_send_error(h, name ? 403 : 400);
        return;
    }
    gale_set_header(h, "Content-Type", "text/plain; charset=UTF-8");
    gale_write(h, v, len);
}
static const gale_handler_class cookie_get_handler = {.get = cookie_get_get};

/* GET /xsrf (with --xsrf): a form carrying the token, and the _xsrf cookie. */
static void xsrf_get(gale_handler *h)
{
    const char *input = gale_xsrf_form_html(h);
    if (!input) {
        gale_send_error(h, 500);
        return;
    }
    gale_writef(h, "<form method=\"post\" action=\"/echo\">%s<input type=\"submit\"/></form>",
                input);
}
static const gale_handler_class xsrf_handler = {.get = xsrf_get};

/* POST|PUT /echo */
static void echo_body(gale_handler *h)
{
    size_t len, ctlen;
    const char *body = gale_body(h, &len);
    const char *ct = gale_get_header(h, "Content-Type", &ctlen);
    char *type = ct ? gale_http_request_strdup(gale_handler_request(h), ct, ctlen) : NULL;
    if (!type || gale_set_header(h, "Content-Type", type) != 0)
        gale_set_header(h, "Content-Type", "application/octet-stream");
    gale_write(h, body, len);
}
static const gale_handler_class echo_handler = {.post = echo_body, .put = echo_body};

/* POST|PUT /upload: Tornado's @stream_request_body. The body is counted piece by piece as it
 * arrives (CRC-32, slicing by 8 bytes), never held: any size, in bounded memory. */
struct upload {
    unsigned long long bytes;
    uint32_t crc; /* running, inverted */
};

static uint32_t crc_table[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc_update(uint32_t c, const unsigned char *p, size_t n)
{
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
            crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

static void upload_prepare(gale_handler *h)
{
    /* Only counted, so any size is fine; an hour for the whole body. */
    gale_set_max_body_size(h, SIZE_MAX);
    gale_set_body_timeout(h, 3600);
    struct upload *u = gale_handler_state(h);
    u->crc = 0xffffffffu;
}

static int upload_data(gale_handler *h, const char *data, size_t len)
{
    struct upload *u = gale_handler_state(h);
    u->bytes += len;
    u->crc = crc_update(u->crc, (const unsigned char *)data, len);
    return 0;
}

static void upload_done(gale_handler *h)
{
    const struct upload *u = gale_handler_state(h);
    gale_set_header(h, "Content-Type", "text/plain; charset=UTF-8");
    gale_writef(h, "bytes %llu crc32 %08x\n", u->bytes, (unsigned)(u->crc ^ 0xffffffffu));
}
static const gale_handler_class upload_handler = {
    .prepare = upload_prepare,
    .post = upload_done,
    .put = upload_done,
    .state_size = sizeof(struct upload),
    .stream_request_body = true,
    .data_received = upload_data,
};

/* GET /delay?ms=N: an asynchronous handler finishing from a timer. */
struct delay_state {
    gale_timeout timer;
    long ms;
};

static void delay_done(gale_loop *loop, void *arg)
{
    gale_handler *h = arg;
    struct delay_state *st = gale_handler_state(h);
    st->timer = 0;
    gale_writef(h, "waited %ld ms", st->ms);
    gale_finish(h);
}

static void delay_get(gale_handler *h)
{
    struct delay_state *st = gale_handler_state(h);
    st->ms = parse_digits(gale_get_argument(h, "ms", NULL), 10000);
    if (st->ms < 0) {
        gale_send_error(h, 400);
        return;
    }
    int rc = gale_loop_call_later(gale_handler_loop(h), (double)st->ms / 1000.0, delay_done, h,
                                  &st->timer);
    if (rc) {
        gale_fail(h, rc);
        return;
    }
    gale_handler_async(h);
}

static void delay_closed(gale_handler *h)
{
    struct delay_state *st = gale_handler_state(h);
    if (st->timer) {
        gale_loop_remove_timeout(gale_handler_loop(h), st->timer);
        st->timer = 0;
        gale_finish(h);
    }
}
static const gale_handler_class delay_handler = {.state_size = sizeof(struct delay_state),
                                                 .get = delay_get,
                                                 .on_connection_close = delay_closed};

/* GET /stream?chunks=N: a coroutine that writes the next chunk once the last one has left, as
 * Tornado's `await self.flush()` does, so a slow client holds the handler back rather than
 * filling the server's memory. */
static void stream(gale_handler *h)
{
    long n = parse_digits(gale_get_argument(h, "chunks", NULL), 1000);
    if (n < 1) {
        gale_send_error(h, 400);
        return;
    }
    gale_set_header(h, "Content-Type", "text/plain; charset=UTF-8");
    for (long i = 1; i <= n; i++) {
        gale_writef(h, "chunk %ld\n", i);
        if (gale_await_drop(gale_flush_future(h)) < 0)
            return; /* the client went away */
    }
}
GALE_CORO_METHOD(stream_get, stream)
static const gale_handler_class stream_handler = {.get = stream_get};

/* GET /status/<code> */
static void status_get(gale_handler *h)
{
    long code = parse_digits(gale_path_arg(h, 0, NULL), 999);
    if (code < 200 || code > 599) {
        gale_send_error(h, 400);
        return;
    }
    gale_set_status(h, (int)code);
    if (code != 204 && code != 304)
        gale_writef(h, "status %ld", code);
}
static const gale_handler_class status_handler = {.get = status_get};

/* GET /redirect?to=/local/path */
static void redirect_get(gale_handler *h)
{
    const char *to = gale_get_argument(h, "to", NULL);
    bool ok = to && to[0] == '/' && to[1] != '/' && to[1] != '\\';
    for (const char *p = to; ok && *p; p++)
        ok = (unsigned char)*p >= 0x20 && *p != 0x7f;
    if (!ok || gale_redirect(h, to, 302) != 0)
        gale_send_error(h, 400);
}
static const gale_handler_class redirect_handler = {.get = redirect_get};

/* GET /header/<name> */
static void header_get(gale_handler *h)
{
    const char *name = gale_path_arg(h, 0, NULL);
    size_t cursor = 0, n = 0;
    const gale_http_header *hd;
    while ((hd = gale_header_next(h, name, &cursor))) {
        if (n++)
            gale_write_str(h, ", ");
        gale_write(h, hd->value.p, hd->value.len);
    }
    if (n == 0)
        gale_send_error(h, 404);
}
static const gale_handler_class header_handler = {.get = header_get};

/* GET /ip: the address the server holds for the client; behind a proxy with --xheaders, the one
 * the proxy passes on in X-Real-IP / X-Forwarded-For. */
static void ip_get(gale_handler *h) { gale_write_str(h, gale_remote_ip(h)); }
static const gale_handler_class ip_handler = {.get = ip_get};

/* GET /error */
static void error_get(gale_handler *h) { gale_fail(h, -EIO); }
static const gale_handler_class error_handler = {.get = error_get};

/* GET /relay?path=P: Tornado's coroutine handler. It reads top to bottom; the await suspends it
 * while the loop serves other requests (including the one it fetches, on this same server). */
static gale_http_client *relay_client; /* one per process, made on first use (after prefork) */

static bool relay_path_ok(const char *p)
{
    if (!p || p[0] != '/' || p[1] == '/' || p[1] == '\\')
        return false;
    if (strncmp(p, "/relay", 6) == 0 && strchr("/?#", p[6])) /* "/relay" itself: p[6] == '\0' */
        return false;
    for (; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return false;
    }
    return true;
}

static void relay(gale_handler *h)
{
    const char *path = gale_get_argument(h, "path", NULL);
    if (!relay_path_ok(path)) {
        gale_send_error(h, 400);
        return;
    }
    if (!relay_client && gale_http_client_new(gale_handler_loop(h), NULL, &relay_client) != 0) {
        gale_fail(h, -ENOMEM);
        return;
    }
    size_t cap = strlen(path) + 32;
    char *url = gale_handler_alloc(h, cap); /* the request's arena, not the coroutine's stack */
    if (!url) {
        gale_fail(h, -ENOMEM);
        return;
    }
    snprintf(url, cap, "http://127.0.0.1:%d%s", gale_app_port(gale_handler_app(h)), path);
    gale_http_client_request req;
    gale_http_client_request_init(&req, url);
    req.raise_error = false;      /* relay every status, not only 2xx */
    req.follow_redirects = false; /* relay the redirect itself */
    gale_future *f = gale_http_fetch_future(relay_client, &req);
    int rc = gale_await(f);
    if (rc == 0) {
        const gale_http_client_response *resp = gale_future_result(f);
        gale_writef(h, "relayed %d ", resp->code);
        gale_write(h, resp->body, resp->body_len);
    } else if (rc != -ECANCELED) { /* -ECANCELED: our client left; nothing to answer */
        gale_send_error(h, 502);
    }
    gale_future_unref(f);
}
GALE_CORO_METHOD(relay_get, relay)
static const gale_handler_class relay_handler = {.get = relay_get};

/* GET /ws: the WebSocket echo. */
static void ws_echo(gale_ws *ws, const char *data, size_t len, bool binary)
{
    gale_ws_write(ws, data, len, binary, NULL, NULL);
}
static bool ws_compress(gale_ws *ws, gale_ws_compression *opts) { return true; }
static const gale_ws_class ws_echo_class = {
    .on_message = ws_echo,
    .get_compression_options = ws_compress,
    .max_message_size = 16u << 20,
};

/* GET /chat: a broadcast room; each member's state links it into the room. */
struct member {
    struct member *prev, *next;
    gale_ws *ws;
};
static struct member *room;

static void chat_open(gale_ws *ws)
{
    struct member *m = gale_ws_state(ws);
    m->ws = ws;
    m->next = room;
    if (room)
        room->prev = m;
    room = m;
}
static void chat_message(gale_ws *ws, const char *data, size_t len, bool binary)
{
    for (struct member *m = room; m; m = m->next)
        gale_ws_write(m->ws, data, len, binary, NULL, NULL);
}
static void chat_close(gale_ws *ws, int code, const char *reason, size_t len)
{
    struct member *m = gale_ws_state(ws);
    if (m->prev)
        m->prev->next = m->next;
    else if (room == m)
        room = m->next;
    if (m->next)
        m->next->prev = m->prev;
}
static const gale_ws_class chat_class = {
    .open = chat_open,
    .on_message = chat_message,
    .on_close = chat_close,
    .state_size = sizeof(struct member),
};

int main(int argc, char **argv)
{
    int port = 8888, processes = 1;
    bool quiet = false, xheaders = false;
    const char *unix_socket = NULL, *certfile = NULL, *keyfile = NULL;
    const char *cookie_secret = NULL, *static_path = NULL;
    bool xsrf = false, compress = false;
    gale_http_server_opts opts;
    gale_http_server_opts_init(&opts);
    opts.idle_connection_timeout = 60;
    opts.body_timeout = 60;
    opts.max_body_size = 1024 * 1024;
    const gale_option options[] = {
        GALE_OPTION_INT("port", &port, 0, 65535, "N", "listen on TCP port N (0: a free port)"),
        GALE_OPTION_DOUBLE("idle-timeout", &opts.idle_connection_timeout, 0.001, 86400, "S",
                           "close connections idle for S seconds"),
        GALE_OPTION_SIZE("max-body", &opts.max_body_size, 0, 0, "BYTES",
                         "largest request body accepted, else 413"),
        GALE_OPTION_INT("processes", &processes, 0, 1024, "N",
                        "fork N workers sharing the port (0: one per CPU)"),
        GALE_OPTION_SIZE("max-connections", &opts.max_connections, 0, 1000000, "N",
                         "open connections at most per process; more clients wait in the\n"
                         "listen backlog (0: no cap)"),
        GALE_OPTION_DOUBLE("shutdown-timeout", &opts.shutdown_timeout, 0, 86400, "S",
                           "on SIGTERM/SIGINT stop accepting, close idle connections and let\n"
                           "requests in flight finish for up to S seconds; a second signal\n"
                           "closes what is left at once"),
        GALE_OPTION_STRING(
            "certfile", &certfile, "FILE",
            "serve HTTPS with the PEM certificate chain in FILE (SIGHUP reloads it)"),
        GALE_OPTION_STRING("keyfile", &keyfile, "FILE",
                           "the PEM private key for --certfile (default: inside --certfile)"),
        GALE_OPTION_STRING("unix-socket", &unix_socket, "PATH",
                           "listen on a unix socket at PATH instead of a TCP port, for a proxy\n"
                           "such as nginx in front (one process per socket)"),
        GALE_OPTION_STRING("cookie-secret", &cookie_secret, "S",
                           "sign cookies with S: enables /cookie/set and /cookie/get"),
        GALE_OPTION_BOOL("xsrf", &xsrf,
                         "check XSRF tokens on POST, PUT, PATCH and DELETE (the _xsrf cookie\n"
                         "from GET /xsrf); enables /xsrf"),
        GALE_OPTION_STRING("static-path", &static_path, "DIR",
                           "serve the files under DIR at /static/"),
        GALE_OPTION_BOOL("compress", &compress,
                         "gzip text, JSON, JavaScript, XML and SVG responses of 1 KiB or more\n"
                         "(and every streamed one) for clients that accept it"),
        GALE_OPTION_BOOL("xheaders", &xheaders,
                         "trust X-Real-IP / X-Forwarded-For / X-Scheme: the client address\n"
                         "and scheme a proxy in front passes on"),
        {.type = GALE_OPTION_BOOL,
         .name = "quiet",
         .alias = "no-access-log",
         .var.b = &quiet,
         .help = "write no access log line per request"},
        {0},
    };
    const gale_options spec = {
        .prog = "demo",
        .description = DESCRIPTION,
        .epilog = ROUTES,
        .options = options,
    };
    gale_options_parse_or_exit(&spec, &argc, argv);
    if (unix_socket && processes != 1) {
        fprintf(stderr, "demo: --unix-socket serves from one process; start one process per "
                        "socket instead of --processes\ntry 'demo --help' for the options\n");
        return 2;
    }
    opts.xheaders = xheaders;
    opts.no_access_log = quiet;
    gale_app *app = gale_app_new(&opts);
    if (!app)
        return 1;

    static const struct {
        const char *pattern;
        const gale_handler_class *cls;
    } routes[] = {
        {"/", &root_handler},
        {"/user/([0-9]+)", &user_handler},
        {"/greet", &greet_handler},
        {"/echo", &echo_handler},
        {"/upload", &upload_handler},
        {"/delay", &delay_handler},
        {"/stream", &stream_handler},
        {"/status/([0-9]+)", &status_handler},
        {"/redirect", &redirect_handler},
        {"/header/([A-Za-z0-9-]+)", &header_handler},
        {"/ip", &ip_handler},
        {"/error", &error_handler},
        {"/relay", &relay_handler},
    };
    int rc = 0;
    crc_init();
    for (size_t i = 0; i < sizeof routes / sizeof routes[0] && rc == 0; i++)
        rc = gale_app_route(app, routes[i].pattern, routes[i].cls, NULL);
    if (rc == 0)
        rc = gale_app_websocket(app, "/ws", &ws_echo_class, NULL);
    if (rc == 0)
        rc = gale_app_websocket(app, "/chat", &chat_class, NULL);
    if (rc == 0 && cookie_secret) {
        rc = gale_app_set_cookie_secret(app, cookie_secret);
        rc = rc ? rc : gale_app_route(app, "/cookie/set", &cookie_set_handler, NULL);
        rc = rc ? rc : gale_app_route(app, "/cookie/get", &cookie_get_handler, NULL);
    }
    if (rc == 0 && static_path && (rc = gale_app_set_static_path(app, static_path, NULL)) != 0)
        fprintf(stderr, "demo: --static-path %s: %s\n", static_path, gale_strerror(rc));
    if (rc == 0 && compress && (rc = gale_app_set_compress(app, true)) != 0)
        fprintf(stderr, "demo: --compress: %s\n", gale_strerror(rc));
    if (rc == 0 && xsrf) {
        gale_app_set_xsrf_cookies(app, true);
        rc = gale_app_route(app, "/xsrf", &xsrf_handler, NULL);
    }
    /* A failure (a port in use...) was reported; free everything on the way out all the same. */
    if (rc == 0)
        rc = app_start_listening(app, &(struct app_listen){.prog = "demo",
                                                           .port = port,
                                                           .processes = processes,
                                                           .unix_socket = unix_socket,
                                                           .certfile = certfile,
                                                           .keyfile = keyfile});
    if (rc == 0)
        rc = gale_app_run(app);
    gale_app_free(app);
    gale_http_client_free(relay_client);
    gale_coro_shutdown(NULL); /* relays still waiting unwind, and their requests are released */
    return rc ? 1 : 0;
}

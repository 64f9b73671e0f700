/* wscat URL: a WebSocket client for the terminal and for scripts, like the common wscat tool.
 * Connects to URL (ws://), sends each line of stdin as a text message, prints each message
 * received on its own line, and exits when the server closes the connection. At the end of stdin
 * it starts the closing handshake (after the lines before it were sent). Exits 0 after a normal
 * close (1000, or a Close without a code), 1 when the connection fails or ends otherwise, 2 on bad
 * usage. `wscat --help` lists the options. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/loop.h"
#include "core/options.h"
#include "http/websocket.h"

#define MAX_HEADERS 32

struct wscat {
    gale_loop *loop;
    gale_ws *ws;
    char *line; /* stdin bytes not yet sent (no newline yet) */
    size_t len, cap;
    bool stdin_watched, stdin_done;
    int rc;
};

static void print_message(gale_ws *ws, const char *data, size_t len, bool binary)
{
    fwrite(data, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static void on_close(gale_ws *ws, int code, const char *reason, size_t len)
{
    struct wscat *w = gale_ws_arg(ws);
    if (code != GALE_WS_NORMAL && code != GALE_WS_NO_STATUS) {
        fprintf(stderr, "wscat: connection closed: %d %.*s\n", code, (int)len, reason);
        w->rc = 1;
    }
    gale_loop_stop(w->loop);
}

static const gale_ws_class wscat_class = {.on_message = print_message, .on_close = on_close};

/* Sends every complete line in the buffer (a trailing CR is dropped); at the end of input, the
 * rest too. */
static void send_lines(struct wscat *w, bool eof)
{
    size_t start = 0;
    for (size_t i = 0; i < w->len; i++) {
        if (w->line[i] != '\n')
            continue;
        size_t end = i > start && w->line[i - 1] == '\r' ? i - 1 : i;
        gale_ws_write(w->ws, w->line + start, end - start, false, NULL, NULL);
        start = i + 1;
    }
    if (eof && start < w->len)
        gale_ws_write(w->ws, w->line + start, w->len - start, false, NULL, NULL);
    else if (start)
        memmove(w->line, w->line + start, w->len - start);
    w->len = eof ? 0 : w->len - start;
}

/* Reads what stdin has; returns false at its end (or on an error). */
static bool read_stdin(struct wscat *w)
{
    if (w->cap - w->len < 65536) {
        char *p = realloc(w->line, w->cap + 65536);
        if (!p)
            return false;
        w->line = p;
        w->cap += 65536;
    }
    ssize_t n = read(STDIN_FILENO, w->line + w->len, w->cap - w->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
    if (n <= 0)
        return false;
    w->len += (size_t)n;
    send_lines(w, false);
    return true;
}

static void stdin_ended(struct wscat *w)
{
    send_lines(w, true);
    w->stdin_done = true;
    if (w->stdin_watched)
        gale_loop_remove_handler(w->loop, STDIN_FILENO);
    w->stdin_watched = false;
    gale_ws_close(w->ws, GALE_WS_NORMAL, NULL);
}

static void on_stdin(gale_loop *loop, int fd, unsigned events, void *arg)
{
    struct wscat *w = arg;
    if (!read_stdin(w))
        stdin_ended(w);
}

static void on_connected(gale_ws *ws, int status, void *arg)
{
    struct wscat *w = arg;
    if (status < 0) {
        fprintf(stderr, "wscat: %s\n", gale_strerror(status));
        w->rc = 1;
        gale_loop_stop(w->loop);
        return;
    }
    w->ws = ws;
    int fl = fcntl(STDIN_FILENO, F_GETFL);
    if (fl >= 0)
        fcntl(STDIN_FILENO, F_SETFL, fl | O_NONBLOCK);
    if (gale_loop_add_handler(w->loop, STDIN_FILENO, GALE_READ, on_stdin, w) == 0) {
        w->stdin_watched = true;
        return;
    }
    /* a regular file (epoll refuses those): read it all now */
    while (read_stdin(w))
        ;
    stdin_ended(w);
}

static int add_header(const char *h, void *arg)
{
    const char **list = arg;
    if (!strchr(h, ':') || strpbrk(h, "\r\n"))
        return -EINVAL;
    for (int i = 0; i < MAX_HEADERS; i++) {
        if (!list[i]) {
            list[i] = h;
            return 0;
        }
    }
    return -E2BIG;
}

int main(int argc, char **argv)
{
    double timeout = 20;
    bool no_compression = false;
    const char *subprotocol = NULL, *origin = NULL, *cacert = NULL;
    bool insecure = false;
    const char *headers[MAX_HEADERS + 1] = {0};
    gale_option options[] = {
        GALE_OPTION_FUNC("header", add_header, headers, "'Name: value'",
                         "extra handshake header (repeatable)"),
        GALE_OPTION_STRING("subprotocol", &subprotocol, "PROTOCOLS",
                           "offer these subprotocols (comma-separated)"),
        GALE_OPTION_STRING("origin", &origin, "ORIGIN", "send this Origin header"),
        GALE_OPTION_DOUBLE("timeout", &timeout, 0.001, 86400, "S",
                           "connect and handshake timeout in seconds"),
        GALE_OPTION_BOOL("no-compression", &no_compression, "do not offer permessage-deflate"),
        GALE_OPTION_STRING("cacert", &cacert, "FILE",
                           "wss://: verify the server against the PEM CAs in FILE"),
        GALE_OPTION_BOOL("insecure", &insecure, "wss://: do not verify the server"),
        {0},
    };
    options[0].short_name = 'H';
    options[1].short_name = 's';
    options[2].short_name = 'o';
    const gale_options spec = {
        .prog = "wscat",
        .args = "URL",
        .description =
            "Connects to the WebSocket at URL (ws:// or wss://host[:port]/path), sends each line\n"
            "of stdin"
            " as a text message and prints each message received on its own line; at the end\n"
            "of stdin it closes the connection (1000). Exits when the server closes: 0 after a\n"
            "normal close, 1 when the connection fails or ends abnormally, 2 on bad usage.",
        .positional = true,
        .options = options,
    };
    char err[512];
    int rc = gale_options_parse(&spec, &argc, argv, err, sizeof err);
    if (rc == 0 && argc != 2)
        snprintf(err, sizeof err, argc < 2 ? "no URL given" : "one URL only");
    if (rc == GALE_OPTIONS_HELP || rc == GALE_OPTIONS_VERSION) {
        if (rc == GALE_OPTIONS_HELP)
            gale_options_usage(&spec, stdout);
        else
            gale_options_version(&spec, stdout);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (rc != 0 || argc != 2) {
        fprintf(stderr, "wscat: %s\ntry 'wscat --help' for the options\n", err);
        return 2;
    }
    struct wscat w = {0};
    if (gale_loop_new(GALE_BACKEND_DEFAULT, &w.loop) != 0)
        return 1;
    gale_ws_connect_opts o = {
        .cls = &wscat_class,
        .arg = &w,
        .connect_timeout = timeout,
        .compression = !no_compression,
        .subprotocols = subprotocol,
        .origin = origin,
        .headers = headers,
    };
    gale_tls_ctx *tls = NULL;
    if (cacert || insecure) {
        gale_tls_opts t;
        gale_tls_opts_init(&t);
        t.ca_certs = cacert;
        t.validate_cert = !insecure;
        rc = gale_tls_client_new(&t, &tls);
        if (rc < 0) {
            fprintf(stderr, "wscat: %s: %s\n", cacert ? cacert : "TLS", gale_strerror(rc));
            gale_loop_free(w.loop);
            return 1;
        }
        o.tls = tls;
    }
    rc = gale_ws_connect(w.loop, argv[1], &o, on_connected, &w);
    if (rc < 0) {
        fprintf(stderr, "wscat: %s: %s\n", argv[1], gale_strerror(rc));
        w.rc = rc == -EINVAL ? 2 : 1;
    } else {
        gale_loop_run(w.loop);
    }
    if (w.stdin_watched)
        gale_loop_remove_handler(w.loop, STDIN_FILENO);
    gale_ws_unref(w.ws);
    free(w.line);
    gale_loop_free(w.loop);
    gale_tls_unref(tls);
    return w.rc;
}

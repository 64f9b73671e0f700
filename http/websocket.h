/* gale WebSockets: Tornado's WebSocketHandler and websocket_connect, RFC 6455 with
 * permessage-deflate (RFC 7692).
 *
 * Server: a WebSocket class is routed like a handler class; a GET with a valid upgrade on its path
 * is answered "101 Switching Protocols" and the connection leaves the HTTP server (its stream,
 * with any bytes the client sent after the request head, belongs to the WebSocket from then on):
 *
 *     static void echo_message(gale_ws *ws, const char *data, size_t len, bool binary)
 *     {
 *         gale_ws_write(ws, data, len, binary, NULL, NULL);
 *     }
 *     static const gale_ws_class echo = {.on_message = echo_message};
 *     gale_app_websocket(app, "/ws", &echo, NULL);
 *
 * Handshake (server): a request that is not a GET with "Upgrade: websocket", "Connection:
 * upgrade" and a Sec-WebSocket-Key of 16 bytes in base64 gets 400; another Sec-WebSocket-Version
 * than 13 gets 426 with "Sec-WebSocket-Version: 13"; an Origin that check_origin refuses gets
 * 403 (default: same host, as Tornado). A permessage-deflate offer the server cannot accept is
 * declined (101 without the extension), never refused.
 *
 * Protocol: client frames must be masked (server frames never are), lengths minimally encoded,
 * control frames at most 125 bytes and not fragmented; reserved bits, opcodes and close codes
 * not defined are a protocol error. A protocol error fails the connection: a Close frame with
 * its code (1002 protocol, 1007 invalid UTF-8, 1009 too big) is sent, the TCP connection closes
 * once it is written, and nothing received after the error is delivered. Text messages and close
 * reasons are validated as UTF-8 as their bytes arrive. A frame (or message, or inflated
 * message) longer than max_message_size is refused before any of it is stored (1009).
 *
 * Closing: gale_ws_close() sends a Close frame; the peer's Close ends the closing handshake (a
 * server then closes the TCP connection, a client waits for the server to close it). A peer's
 * Close is answered with the same code. If the handshake does not finish within close_timeout
 * (default 5 s) the connection is closed. on_close runs once, from the loop, when the TCP
 * connection has closed, with the peer's code (1005: none given, 1006: closed without a Close).
 *
 * Flow: the connection reads only while fewer than 1 MiB of its output wait for the peer (so an
 * echo to a peer that sends and never reads cannot grow the server's memory) and, for
 * read_message, while no received message waits to be taken; TCP then holds the peer back.
 *
 * Lifetime: a gale_ws is reference counted. The library holds one reference while the
 * connection is open and drops it after on_close returned; take your own with gale_ws_ref() to
 * keep the pointer past that (calls on a closed connection return -EPIPE). A client connection
 * returned by gale_ws_connect belongs to the caller (one reference).
 *
 * Threads: everything runs on the loop's thread.
 */
#ifndef GALE_HTTP_WEBSOCKET_H
#define GALE_HTTP_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/future.h"
#include "core/loop.h"
#include "http/web.h"
#include "net/tls.h"

typedef struct gale_ws gale_ws;

#define GALE_WS_DEFAULT_MAX_MESSAGE (10u * 1024 * 1024) /* Tornado's websocket_max_message_size */
#define GALE_WS_DEFAULT_CLOSE_TIMEOUT 5.0

/* Close codes (RFC 6455 7.4.1). */
enum {
    GALE_WS_NORMAL = 1000,
    GALE_WS_GOING_AWAY = 1001,
    GALE_WS_PROTOCOL_ERROR = 1002,
    GALE_WS_UNSUPPORTED = 1003,
    GALE_WS_NO_STATUS = 1005, /* received: the Close frame had no code */
    GALE_WS_ABNORMAL = 1006,  /* received: the connection ended without a Close frame */
    GALE_WS_INVALID_DATA = 1007,
    GALE_WS_POLICY = 1008,
    GALE_WS_TOO_BIG = 1009,
    GALE_WS_EXTENSION = 1010,
    GALE_WS_INTERNAL_ERROR = 1011,
};

/* permessage-deflate parameters (Tornado's get_compression_options). Window bits 9..15 (0: 15).
 * The "server" side is the side that accepted the connection. */
typedef struct gale_ws_compression {
    bool server_no_context_takeover; /* a fresh compressor for each message the server sends */
    bool client_no_context_takeover; /* ask the client to do the same */
    int server_max_window_bits;
    int client_max_window_bits; /* applied only if the client's offer allows it */
    int level;                  /* zlib level, 0..9 (0 is taken as 6) */
    size_t min_length; /* messages shorter than this are sent uncompressed (default 0: all) */
} gale_ws_compression;

/* A WebSocket "class": define one as a static const. Every callback is optional and runs from the
 * loop with the connection first. */
typedef struct gale_ws_class {
    /* The connection is up. On the server the upgrade request is readable meanwhile through
     * gale_ws_handler(). */
    void (*open)(gale_ws *ws);
    /* A whole message: text (valid UTF-8, binary false) or binary. `data` lives until the
     * callback returns; it is NUL-terminated (not counted in len). Without on_message, messages
     * wait for gale_ws_read_message(). */
    void (*on_message)(gale_ws *ws, const char *data, size_t len, bool binary);
    /* A Ping (already answered with a Pong) or a Pong arrived; data is the payload. */
    void (*on_ping)(gale_ws *ws, const char *data, size_t len);
    void (*on_pong)(gale_ws *ws, const char *data, size_t len);
    /* Once, when the connection has closed: the peer's code and reason (see the file comment). */
    void (*on_close)(gale_ws *ws, int code, const char *reason, size_t len);
    /* Server: picks one of the `n` subprotocols the client offered (Sec-WebSocket-Protocol), in
     * its order; returns it (one of `offered`) or NULL for none. Called only when some were
     * offered. */
    const char *(*select_subprotocol)(gale_ws *ws, const char *const *offered, size_t n);
    /* Server: whether to accept a request with this Origin header (NULL when absent: then it is
     * accepted without asking). Default: the Origin's host must equal the Host header. */
    bool (*check_origin)(gale_ws *ws, const char *origin);
    /* Server: fills `opts` and returns true to offer permessage-deflate to clients that ask for
     * it. NULL or false: no compression. */
    bool (*get_compression_options)(gale_ws *ws, gale_ws_compression *opts);
    /* Server: a coroutine (core/coro.h) started right after open; it typically loops on
     * gale_await(gale_ws_read_message(ws)). The connection stays referenced until it returns.
     * Its messages come through read_message, so leave on_message NULL. */
    void (*coroutine)(gale_ws *ws);
    size_t state_size;       /* bytes of zeroed per-connection state (gale_ws_state) */
    size_t max_message_size; /* 0: GALE_WS_DEFAULT_MAX_MESSAGE */
    double ping_interval;    /* seconds between keepalive pings (0: none) */
    double ping_timeout;     /* close when no Pong came this long after a ping (0: interval) */
    double close_timeout;    /* closing handshake deadline (0: GALE_WS_DEFAULT_CLOSE_TIMEOUT) */
} gale_ws_class;

/* Routes `pattern` (gale_app_route's rules) to WebSocket class `cls` (not copied: keep it
 * static); gale_ws_arg() returns `arg`. Returns 0, -EINVAL or -ENOMEM. */
int gale_app_websocket(gale_app *app, const char *pattern, const gale_ws_class *cls, void *arg);

/* Sends a message (copied): text (binary false: should be valid UTF-8, which is not checked) or
 * binary. `cb(ws, status, arg)` (may be NULL) runs once from the loop when the frame's bytes are
 * in the kernel (0) or the connection ended first (negative errno): wait for it before sending
 * more to keep memory bounded (back-pressure). Returns 0, -EPIPE (closing or closed: `cb` does not
 * run), -EINVAL, -ENOMEM. */
typedef void (*gale_ws_done_cb)(gale_ws *ws, int status, void *arg);
int gale_ws_write(gale_ws *ws, const void *data, size_t len, bool binary, gale_ws_done_cb cb,
                  void *arg);
/* The same as a future (Tornado's write_message): result NULL once the bytes are in the kernel,
 * or the error. Returns a new reference; NULL only when out of memory. */
gale_future *gale_ws_write_message(gale_ws *ws, const void *data, size_t len, bool binary);

/* Sends a Ping with `len` <= 125 bytes of payload. Returns 0, -EINVAL, -EPIPE, -ENOMEM. */
int gale_ws_ping(gale_ws *ws, const void *data, size_t len);

/* Starts the closing handshake with `code` (0: none; else 1000-1003, 1007-1014 or 3000-4999) and
 * `reason` (may be NULL; at most 123 bytes of UTF-8). Returns 0, -EINVAL or -EALREADY (already
 * closing). */
int gale_ws_close(gale_ws *ws, int code, const char *reason);

/* A received message, as read_message's result: `len` bytes at `data` plus a NUL. */
typedef struct gale_ws_message {
    size_t len;
    bool binary;
    char data[];
} gale_ws_message;

/* Tornado's read_message: a new future completing with the next message (a gale_ws_message
 * owned by the future) or failing with GALE_EEOF once the connection closed (another error
 * when it failed). Only for connections whose class has no on_message. Messages wait in order;
 * reading from the socket pauses while one is waiting and nobody reads (back-pressure). One read
 * at a time: a second pending one fails with -EBUSY. NULL only when out of memory. */
gale_future *gale_ws_read_message(gale_ws *ws);

gale_ws *gale_ws_ref(gale_ws *ws);
void gale_ws_unref(gale_ws *ws); /* NULL is a no-op */

void *gale_ws_arg(gale_ws *ws);   /* the `arg` of gale_app_websocket / the connect options */
void *gale_ws_state(gale_ws *ws); /* the class's zeroed state (NULL when state_size is 0) */
gale_loop *gale_ws_loop(gale_ws *ws);
/* Server: the upgrade request's handler, only inside open, select_subprotocol and check_origin
 * (else NULL). */
gale_handler *gale_ws_handler(gale_ws *ws);
/* The subprotocol agreed on, or NULL. */
const char *gale_ws_subprotocol(gale_ws *ws);
/* Whether permessage-deflate is in use. */
bool gale_ws_compressed(gale_ws *ws);
/* True once the closing handshake started or the connection ended. */
bool gale_ws_closing(gale_ws *ws);
/* The peer's close code and reason (0 and "" while open). */
int gale_ws_close_code(gale_ws *ws);
const char *gale_ws_close_reason(gale_ws *ws);

/* ---- client (websocket_connect) ---- */

typedef struct gale_ws_connect_opts {
    const gale_ws_class *cls; /* callbacks (NULL: none; read with gale_ws_read_message) */
    void *arg;
    double connect_timeout;     /* seconds for TCP connect + handshake (0: 20) */
    bool compression;           /* offer permessage-deflate */
    const char *subprotocols;   /* Sec-WebSocket-Protocol offer, e.g. "chat, superchat" */
    const char *origin;         /* Origin header (NULL: none) */
    const char *const *headers; /* more header lines "Name: value", NULL-terminated list */
    gale_tls_ctx *tls;          /* wss://: the client context (net/tls.h); NULL: a shared one
                                 * that verifies against the system's CA store */
} gale_ws_connect_opts;

/* Connects to `url` (ws://host[:port]/path?query, or wss:// over TLS: the certificate is
 * verified against the host unless opts->tls says otherwise; a refusal is GALE_ECERT, its reason
 * logged at INFO).
 * `cb(ws, status, arg)` runs once from the loop: status 0 with the open connection (the
 * caller's reference: gale_ws_unref it when done), or a negative error with ws NULL
 * (GALE_ESCHEME, GALE_ERESOLVE, -ECONNREFUSED, -ETIMEDOUT, GALE_EBADSTATUS for a non-101 answer,
 * GALE_EHTTP for a bad handshake). The class's open runs before `cb`. Returns 0 or -EINVAL,
 * GALE_ESCHEME, -ENOMEM (then `cb` does not run). */
typedef void (*gale_ws_connect_cb)(gale_ws *ws, int status, void *arg);
int gale_ws_connect(gale_loop *loop, const char *url, const gale_ws_connect_opts *opts,
                    gale_ws_connect_cb cb, void *arg);
/* The same as a future: its result is the gale_ws (freed with gale_ws_unref by the future unless
 * stolen with gale_future_steal_result). NULL only when out of memory. */
gale_future *gale_ws_connect_future(gale_loop *loop, const char *url,
                                    const gale_ws_connect_opts *opts);

#endif

/* A WebSocket connection once the handshake is done, both sides: reading frames into messages
 * (and inflating them), control frames, keepalive pings, the closing handshake, writing
 * messages, read_message and the connection's lifetime. The handshakes are in
 * websocket_server.c and websocket_client.c, the frame parser in websocket_frame.c.
 *
 * Phases (ws->phase), changed only by set_phase(), which asserts the change is in this table:
 *
 *   from         to        on
 *   CONNECTING   OPEN      the client's handshake succeeded (gale__ws_start)
 *   CONNECTING   CLOSED    the stream closed during the handshake
 *   OPEN         CLOSING   we sent a Close: gale_ws_close, a failure, or the answer to the peer's
 *   OPEN         CLOSED    the stream closed without a closing handshake
 *   CLOSING      CLOSED    the stream closed (after the handshake, or at its deadline)
 *
 * Reading: one consuming read at a time on the stream; every byte goes to the parser, whose
 * callbacks assemble the message in ws->msg (unmasked, or inflated). A message for
 * read_message that nobody waits for is queued and reading pauses until it is taken. After a
 * protocol error (ws->failed) or the peer's Close nothing more is parsed.
 *
 * Memory: an idle connection holds the gale_ws (with its parser), its state and the stream; the
 * message buffer is freed after each message.
 */
#include "http/websocket_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "core/errors.h"
#include "core/log.h"

#define FRAME_RESERVE 65536            /* reserved at a frame's header, at most */
#define WRITE_HIGH_WATER (1024 * 1024) /* queued output past which reading waits */
#define SMALL_FRAME 1024               /* frames up to this payload are copied into one buffer */

struct ws_queued {
    struct ws_queued *next;
    gale_ws_message *msg;
};

static const uint8_t legal_next[] = {
    [WS_CONNECTING] = 1u << WS_OPEN | 1u << WS_CLOSED,
    [WS_OPEN] = 1u << WS_CLOSING | 1u << WS_CLOSED,
    [WS_CLOSING] = 1u << WS_CLOSED,
    [WS_CLOSED] = 0,
};

static void set_phase(gale_ws *ws, enum ws_phase to)
{
    (void)legal_next; /* read by the assert only */
    assert(ws->phase < sizeof legal_next && (legal_next[ws->phase] & (1u << to)));
    ws->phase = (uint8_t)to;
}

static void read_more(gale_ws *ws);
static void on_stream_close(gale_stream *s, int reason, void *arg);
static int send_close(gale_ws *ws, int code, const char *reason, size_t rlen, bool then_close);

static void close_after_write(gale_stream *s, int status, void *arg);

static const gale__ws_parser_cbs parser_cbs;

/* ---- lifetime ---- */

gale_ws *gale__ws_new(gale_stream *s, const gale_ws_class *cls, void *arg, bool client,
                      size_t max_message)
{
    static const gale_ws_class none;
    if (!cls)
        cls = &none;
    size_t st = (cls->state_size + 15) & ~(size_t)15;
    gale_ws *ws = calloc(1, sizeof *ws + st);
    if (!ws)
        return NULL;
    ws->cls = cls;
    ws->arg = arg;
    ws->state = st ? (char *)(ws + 1) : NULL;
    ws->client = client;
    ws->max_message = max_message             ? max_message
                      : cls->max_message_size ? cls->max_message_size
                                              : GALE_WS_DEFAULT_MAX_MESSAGE;
    ws->refs = 1; /* the connection's own, dropped after on_close */
    ws->phase = WS_CONNECTING;
    gale__ws_parser_init(&ws->parser, &parser_cbs, ws, !client, ws->max_message);
    if (s)
        gale__ws_attach(ws, s);
    return ws;
}

void gale__ws_attach(gale_ws *ws, gale_stream *s)
{
    assert(!ws->stream);
    ws->stream = s;
    ws->loop = gale_stream_loop(s);
    gale_stream_set_close_cb(s, on_stream_close, ws);
}

static void free_queue(gale_ws *ws)
{
    while (ws->queue_head) {
        struct ws_queued *q = ws->queue_head;
        ws->queue_head = q->next;
        free(q->msg);
        free(q);
    }
    ws->queue_tail = NULL;
}

static void ws_free(gale_ws *ws)
{
    assert(!ws->stream && !ws->reader);
    free_queue(ws);
    free(ws->msg);
    free(ws->close_reason);
    free(ws->subprotocol);
    gale__ws_deflate_free(ws->pmd);
    free(ws);
}

void gale__ws_discard(gale_ws *ws)
{
    if (ws->stream)
        gale_stream_set_close_cb(ws->stream, NULL, NULL);
    ws->stream = NULL;
    ws_free(ws);
}

gale_ws *gale_ws_ref(gale_ws *ws)
{
    if (ws)
        ws->refs++;
    return ws;
}

void gale_ws_unref(gale_ws *ws)
{
    if (!ws)
        return;
    assert(ws->refs > 0);
    if (--ws->refs > 0)
        return;
    assert(!ws->stream); /* an open connection holds its own reference */
    ws_free(ws);
}

/* ---- starting ---- */

static void ping_tick(gale_loop *loop, void *arg);

static void arm_ping(gale_ws *ws, double delay)
{
    if (ws->ping_timer)
        gale_loop_remove_timeout(ws->loop, ws->ping_timer);
    ws->ping_timer = 0;
    gale_loop_call_later(ws->loop, delay, ping_tick, ws, &ws->ping_timer);
}

static double ping_timeout(const gale_ws *ws)
{
    const gale_ws_class *c = ws->cls;
    return c->ping_timeout > 0 ? c->ping_timeout : c->ping_interval;
}

static void ping_tick(gale_loop *loop, void *arg)
{
    gale_ws *ws = arg;
    ws->ping_timer = 0;
    if (ws->phase != WS_OPEN)
        return;
    double now = gale_loop_time(loop);
    if (ws->ping_sent > 0 && now - ws->ping_sent >= ping_timeout(ws)) {
        gale_log_info(GALE_LOG_GENERAL, "websocket: no pong for %.1f s, closing",
                      now - ws->ping_sent);
        gale_stream_close(ws->stream, -ETIMEDOUT);
        return;
    }
    if (ws->ping_sent == 0) {
        gale_ws_ping(ws, "", 0);
        ws->ping_sent = now;
    }
    double next = ws->ping_sent + ping_timeout(ws) - now;
    if (next > ws->cls->ping_interval)
        next = ws->cls->ping_interval;
    arm_ping(ws, next);
}

static void coro_ended(gale_future *f, void *arg)
{
    (void)f;
    gale_ws *ws = arg;
    ws->coro_running = false;
    gale_ws_unref(ws);
}

static int coro_main(void *arg)
{
    gale_ws *ws = arg;
    ws->cls->coroutine(ws);
    return 0;
}

void gale__ws_start(gale_ws *ws)
{
    set_phase(ws, WS_OPEN);
    gale_ws_ref(ws);
    if (ws->cls->open)
        ws->cls->open(ws);
    if (ws->cls->coroutine && ws->phase != WS_CLOSED) {
        ws->coro_running = true;
        gale_ws_ref(ws);
        gale_future *f = gale_coro_spawn(ws->loop, coro_main, ws, NULL);
        if (!f || gale_future_add_done_callback(f, coro_ended, ws) < 0) {
            ws->coro_running = false;
            gale_ws_unref(ws);
            if (ws->stream)
                gale_stream_close(ws->stream, -ENOMEM);
        }
        gale_future_unref(f);
    }
    if (ws->phase == WS_OPEN && ws->cls->ping_interval > 0)
        arm_ping(ws, ws->cls->ping_interval);
    read_more(ws);
    gale_ws_unref(ws);
}

/* ---- reading ---- */

static size_t on_read(gale_stream *s, int status, const char *data, size_t len, void *arg);

static bool paused(const gale_ws *ws) { return ws->queue_head && !ws->reader; }

static void on_drained(gale_stream *s, int status, void *arg)
{
    (void)s;
    gale_ws *ws = arg;
    ws->wait_drain = false;
    if (status == 0)
        read_more(ws);
}

/* Starts the next read, unless something holds reading back: a message nobody took yet, or more
 * than WRITE_HIGH_WATER of output the peer does not read (an echo to a client that only sends
 * must not grow the server's memory): then reading resumes once the output has drained. */
static void read_more(gale_ws *ws)
{
    if (ws->reading || ws->in_read || ws->wait_drain || !ws->stream ||
        gale_stream_closed(ws->stream) || ws->failed || ws->close_received || paused(ws))
        return;
    if (gale_stream_write_pending(ws->stream) > WRITE_HIGH_WATER) {
        ws->wait_drain = gale_stream_write(ws->stream, "", 0, on_drained, ws) == 0;
        return;
    }
    int rc = gale_stream_read_some(ws->stream, on_read, ws);
    if (rc == 0)
        ws->reading = true;
    else if (rc != -EPIPE)
        gale_stream_close(ws->stream, rc);
}

/* Fails the connection (RFC 6455 7.1.7): Close with `code`, then the TCP close once it is
 * written; nothing received afterwards is delivered. */
static void fail(gale_ws *ws, int code, const char *why)
{
    if (ws->failed || !ws->stream)
        return;
    gale_log_info(GALE_LOG_GENERAL, "websocket: failing the connection (%d): %s", code, why);
    ws->failed = true;
    if (ws->phase == WS_OPEN)
        send_close(ws, code, why, strlen(why), true);
    else
        gale_stream_close(ws->stream, 0);
}

static size_t on_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    (void)s;
    gale_ws *ws = arg;
    ws->reading = false;
    if (status < 0 || ws->failed || ws->close_received)
        return len; /* the close callback follows, or the input is ignored */
    gale_ws_ref(ws);
    ws->in_read = true;
    size_t used = 0;
    int rc = gale__ws_parse(&ws->parser, (const uint8_t *)data, len, &used);
    ws->in_read = false;
    if (rc > 0) {
        fail(ws, rc, ws->parser.why ? ws->parser.why : "protocol error");
        used = len;
    } else if (rc == 0) {
        used = len;
    }
    read_more(ws);
    gale_ws_unref(ws);
    return used;
}

static int msg_reserve(gale_ws *ws, size_t more)
{
    size_t need = ws->msg_len + more + 1;
    if (need <= ws->msg_cap)
        return 0;
    size_t cap = ws->msg_cap ? ws->msg_cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > ws->max_message + 1)
        cap = need > ws->max_message + 1 ? need : ws->max_message + 1;
    char *p = realloc(ws->msg, cap);
    if (!p)
        return -ENOMEM;
    ws->msg = p;
    ws->msg_cap = cap;
    return 0;
}

static int on_frame(void *arg, int opcode, bool first, bool rsv1, uint64_t len)
{
    gale_ws *ws = arg;
    if (first) {
        ws->msg_binary = opcode == WS_OP_BINARY;
        ws->msg_compressed = rsv1;
        ws->msg_len = 0;
        ws->utf8 = GALE_WS_UTF8_ACCEPT;
    }
    if (ws->msg_compressed)
        return 0; /* the inflated size is bounded as it grows */
    /* Room for the frame as its bytes arrive: a peer announcing a large frame and sending
     * nothing costs no more than what it sent. */
    if (msg_reserve(ws, len < FRAME_RESERVE ? (size_t)len : FRAME_RESERVE) < 0)
        return GALE_WS_INTERNAL_ERROR;
    return 0;
}

/* Validates the text bytes [from, msg_len) of the message. */
static int check_text(gale_ws *ws, size_t from)
{
    if (ws->msg_binary)
        return 0;
    ws->utf8 = gale__ws_utf8(ws->utf8, (const uint8_t *)ws->msg + from, ws->msg_len - from);
    return ws->utf8 == GALE_WS_UTF8_REJECT ? GALE_WS_INVALID_DATA : 0;
}

static int on_data(void *arg, const uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off)
{
    gale_ws *ws = arg;
    size_t from = ws->msg_len;
    if (!ws->msg_compressed) {
        if (msg_reserve(ws, n) < 0)
            return GALE_WS_INTERNAL_ERROR;
        if (ws->client) /* server frames are not masked */
            memcpy(ws->msg + ws->msg_len, p, n);
        else
            gale__ws_unmask((uint8_t *)ws->msg + ws->msg_len, p, n, mask, off);
        ws->msg_len += n;
        return check_text(ws, from);
    }
    uint8_t tmp[4096];
    while (n) {
        size_t k = n < sizeof tmp ? n : sizeof tmp;
        if (ws->client)
            memcpy(tmp, p, k);
        else
            gale__ws_unmask(tmp, p, k, mask, off);
        int rc = gale__ws_inflate(ws->pmd, tmp, k, false, &ws->msg, &ws->msg_len, &ws->msg_cap,
                                  ws->max_message);
        if (rc != 0)
            return rc < 0 ? GALE_WS_INTERNAL_ERROR : rc;
        p += k, n -= k, off += k;
    }
    return check_text(ws, from);
}

/* Hands a complete message to on_message or to read_message. Returns -1 to pause reading. */
static int deliver(gale_ws *ws)
{
    if (ws->cls->on_message) {
        ws->msg[ws->msg_len] = '\0';
        ws->cls->on_message(ws, ws->msg, ws->msg_len, ws->msg_binary);
        free(ws->msg);
        ws->msg = NULL;
        ws->msg_len = ws->msg_cap = 0;
        return ws->failed || ws->close_received ? -1 : 0;
    }
    gale_ws_message *m = malloc(sizeof *m + ws->msg_len + 1);
    if (!m)
        return GALE_WS_INTERNAL_ERROR;
    m->len = ws->msg_len;
    m->binary = ws->msg_binary;
    if (ws->msg_len)
        memcpy(m->data, ws->msg, ws->msg_len);
    m->data[ws->msg_len] = '\0';
    free(ws->msg);
    ws->msg = NULL;
    ws->msg_len = ws->msg_cap = 0;
    if (ws->reader) {
        gale_future *f = ws->reader;
        ws->reader = NULL;
        gale_future_set_result(f, m, free);
        gale_future_unref(f);
        return 0;
    }
    struct ws_queued *q = malloc(sizeof *q);
    if (!q) {
        free(m);
        return GALE_WS_INTERNAL_ERROR;
    }
    q->next = NULL;
    q->msg = m;
    if (ws->queue_tail)
        ws->queue_tail->next = q;
    else
        ws->queue_head = q;
    ws->queue_tail = q;
    return -1; /* nobody reads: pause until read_message takes it */
}

static int on_message_end(void *arg)
{
    gale_ws *ws = arg;
    if (ws->msg_compressed) {
        size_t from = ws->msg_len;
        int rc = gale__ws_inflate(ws->pmd, NULL, 0, true, &ws->msg, &ws->msg_len, &ws->msg_cap,
                                  ws->max_message);
        if (rc != 0)
            return rc < 0 ? GALE_WS_INTERNAL_ERROR : rc;
        if ((rc = check_text(ws, from)) != 0)
            return rc;
    }
    if (!ws->msg_binary && ws->utf8 != GALE_WS_UTF8_ACCEPT)
        return GALE_WS_INVALID_DATA;
    if (!ws->msg && msg_reserve(ws, 0) < 0)
        return GALE_WS_INTERNAL_ERROR;
    return deliver(ws);
}

/* The peer's Close: answered (unless ours went first), then the TCP close. Stops parsing. */
static int on_peer_close(gale_ws *ws, const uint8_t *p, size_t n)
{
    int code = GALE_WS_NO_STATUS;
    if (n == 1)
        return GALE_WS_PROTOCOL_ERROR;
    if (n >= 2) {
        code = p[0] << 8 | p[1];
        if (!gale__ws_close_code_valid(code))
            return GALE_WS_PROTOCOL_ERROR;
        if (gale__ws_utf8(0, p + 2, n - 2) != GALE_WS_UTF8_ACCEPT)
            return GALE_WS_INVALID_DATA;
    }
    ws->close_received = true;
    ws->close_code = code;
    free(ws->close_reason);
    ws->close_reason = strndup(n > 2 ? (const char *)p + 2 : "", n > 2 ? n - 2 : 0);
    if (ws->phase == WS_OPEN) {
        send_close(ws, code == GALE_WS_NO_STATUS ? 0 : code, NULL, 0, !ws->client);
    } else if (!ws->client) {
        /* Our Close went first: the handshake is complete once what we queued has left. */
        if (gale_stream_write(ws->stream, "", 0, close_after_write, NULL) < 0)
            gale_stream_close(ws->stream, 0);
    }
    /* A client waits for the server to close the TCP connection (the close timer bounds it). */
    return -1;
}

static int on_control(void *arg, int opcode, const uint8_t *p, size_t n)
{
    gale_ws *ws = arg;
    switch (opcode) {
    case WS_OP_PING:
        if (ws->phase == WS_OPEN)
            gale__ws_send(ws, WS_OP_PONG, p, n, NULL, NULL);
        if (ws->cls->on_ping)
            ws->cls->on_ping(ws, (const char *)p, n);
        return 0;
    case WS_OP_PONG:
        ws->ping_sent = 0;
        if (ws->cls->on_pong)
            ws->cls->on_pong(ws, (const char *)p, n);
        return 0;
    case WS_OP_CLOSE: return on_peer_close(ws, p, n);
    default: return GALE_WS_PROTOCOL_ERROR; /* the parser lets no other opcode through */
    }
}

static const gale__ws_parser_cbs parser_cbs = {
    .frame = on_frame,
    .data = on_data,
    .message_end = on_message_end,
    .control = on_control,
};

/* ---- closing ---- */

static void close_expired(gale_loop *loop, void *arg)
{
    (void)loop;
    gale_ws *ws = arg;
    ws->close_timer = 0;
    if (ws->stream) {
        gale_log_info(GALE_LOG_GENERAL, "websocket: closing handshake timed out");
        gale_stream_close(ws->stream, -ETIMEDOUT);
    }
}

/* Drops what the peer still sends while the connection lingers (below). The stream closes itself
 * at the peer's FIN (an error status here); the close deadline bounds the rest. */
static size_t drop_input(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    (void)data;
    if (status == 0 && gale_stream_read_some(s, drop_input, arg) < 0)
        gale_stream_close(s, 0);
    return len;
}

static void close_after_write(gale_stream *s, int status, void *arg)
{
    (void)arg;
    if (status == 0)
        gale_stream_close(s, 0);
}

/* A failure's Close has left. The peer may still be sending (the rest of a frame too big to
 * take, say), and closing with input unread would make the close a reset, which can destroy the
 * Close before the peer reads it: so the write side is shut and the input read and dropped until
 * the peer closes, within the close deadline (the HTTP server lingers the same way). */
static void linger_after_write(gale_stream *s, int status, void *arg)
{
    (void)arg;
    if (status != 0)
        return;
    int fd = gale_stream_fd(s);
    if (fd >= 0)
        shutdown(fd, SHUT_WR);
    (void)gale_stream_cancel_read_some(s, on_read); /* it would stop after one read */
    if (!gale_stream_reading(s) && gale_stream_read_some(s, drop_input, NULL) < 0)
        gale_stream_close(s, 0);
}

/* Sends a Close frame with `code` (0: none; -1: no frame, only the TCP close after what is
 * queued) and enters CLOSING; `then_close` closes the TCP connection once it is written. The
 * close deadline starts. */
static int send_close(gale_ws *ws, int code, const char *reason, size_t rlen, bool then_close)
{
    uint8_t payload[125];
    size_t n = 0;
    if (code > 0) {
        if (rlen > 123)
            rlen = 123;
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        if (rlen)
            memcpy(payload + 2, reason, rlen);
        n = 2 + rlen;
    }
    if (ws->phase == WS_OPEN)
        set_phase(ws, WS_CLOSING);
    int rc = 0;
    if (code >= 0)
        rc = gale__ws_send(ws, WS_OP_CLOSE, payload, n, NULL, NULL);
    if (rc == 0 && then_close)
        rc = gale_stream_write(ws->stream, "", 0,
                               ws->failed ? linger_after_write : close_after_write, NULL);
    if (rc < 0 && ws->stream)
        gale_stream_close(ws->stream, rc);
    if (!ws->close_timer && ws->stream) {
        double t =
            ws->cls->close_timeout > 0 ? ws->cls->close_timeout : GALE_WS_DEFAULT_CLOSE_TIMEOUT;
        gale_loop_call_later(ws->loop, t, close_expired, ws, &ws->close_timer);
    }
    return rc;
}

int gale_ws_close(gale_ws *ws, int code, const char *reason)
{
    if (!ws)
        return -EINVAL;
    size_t rlen = reason ? strlen(reason) : 0;
    if ((code != 0 && !gale__ws_close_code_valid(code)) || rlen > 123 || (rlen && code == 0) ||
        gale__ws_utf8(0, (const uint8_t *)reason, rlen) != GALE_WS_UTF8_ACCEPT)
        return -EINVAL;
    if (ws->phase != WS_OPEN)
        return ws->phase == WS_CONNECTING ? -EINVAL : -EALREADY;
    send_close(ws, code, reason, rlen, false);
    return 0;
}

static void on_stream_close(gale_stream *s, int reason, void *arg)
{
    (void)s;
    gale_ws *ws = arg;
    ws->stream = NULL;
    ws->reading = false;
    set_phase(ws, WS_CLOSED);
    if (ws->ping_timer)
        gale_loop_remove_timeout(ws->loop, ws->ping_timer);
    if (ws->close_timer)
        gale_loop_remove_timeout(ws->loop, ws->close_timer);
    ws->ping_timer = ws->close_timer = 0;
    if (!ws->close_received)
        ws->close_code = GALE_WS_ABNORMAL;
    gale_ws_ref(ws);
    if (ws->cls->on_close) {
        const char *r = ws->close_reason ? ws->close_reason : "";
        ws->cls->on_close(ws, ws->close_code, r, strlen(r));
    }
    if (ws->reader) {
        gale_future *f = ws->reader;
        ws->reader = NULL;
        int err = ws->close_received || reason == 0 || reason == GALE_EEOF ? GALE_EEOF : reason;
        gale_future_set_error(f, err, NULL);
        gale_future_unref(f);
    }
    gale_ws_unref(ws);
    gale_ws_unref(ws); /* the connection's own reference */
}

/* ---- writing ---- */

struct write_wait {
    gale_ws *ws;
    gale_ws_done_cb cb;
    void *arg;
};

static void write_done(gale_stream *s, int status, void *arg)
{
    (void)s;
    struct write_wait *w = arg;
    w->cb(w->ws, status, w->arg);
    gale_ws_unref(w->ws);
    free(w);
}

static uint32_t next_mask(void)
{
    static _Thread_local uint64_t x;
    if (!x) {
        if (getrandom(&x, sizeof x, 0) != sizeof x || !x)
            x = (uint64_t)gale_time_ns() | 1;
    }
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return (uint32_t)(x >> 16);
}

int gale__ws_send(gale_ws *ws, int opcode, const void *data, size_t len, gale_ws_done_cb cb,
                  void *arg)
{
    if (!ws->stream)
        return -EPIPE;
    bool rsv1 = false;
    uint8_t *zbuf = NULL;
    if (ws->pmd && opcode < 0x8) {
        if (len >= gale__ws_deflate_min_length(ws->pmd)) {
            size_t zlen;
            if (gale__ws_deflate_message(ws->pmd, data, len, &zbuf, &zlen) < 0)
                return -ENOMEM;
            data = zbuf;
            len = zlen;
            rsv1 = true;
        }
    }
    struct write_wait *w = NULL;
    if (cb) {
        w = malloc(sizeof *w);
        if (!w) {
            free(zbuf);
            return -ENOMEM;
        }
        *w = (struct write_wait){gale_ws_ref(ws), cb, arg};
    }
    uint8_t hdr[14];
    int rc;
    if (ws->client) {
        uint32_t m32 = next_mask();
        uint8_t mask[4];
        memcpy(mask, &m32, 4);
        size_t h = gale__ws_frame_header(hdr, opcode, true, rsv1, len, mask);
        uint8_t *buf = malloc(h + len);
        if (!buf) {
            rc = -ENOMEM;
        } else {
            memcpy(buf, hdr, h);
            gale__ws_unmask(buf + h, data, len, mask, 0);
            rc = gale_stream_write_ref(ws->stream, buf, h + len, free, buf, w ? write_done : NULL,
                                       w);
        }
    } else {
        size_t h = gale__ws_frame_header(hdr, opcode, true, rsv1, len, NULL);
        if (len <= SMALL_FRAME) { /* one buffer: send() costs less than sendmsg() */
            uint8_t buf[14 + SMALL_FRAME];
            memcpy(buf, hdr, h);
            if (len)
                memcpy(buf + h, data, len);
            rc = gale_stream_write(ws->stream, buf, h + len, w ? write_done : NULL, w);
        } else {
            struct iovec iov[2] = {{hdr, h}, {(void *)data, len}};
            rc = gale_stream_writev(ws->stream, iov, 2, w ? write_done : NULL, w);
        }
    }
    free(zbuf);
    if (rc < 0 && w) {
        gale_ws_unref(ws);
        free(w);
    }
    return rc;
}

int gale_ws_write(gale_ws *ws, const void *data, size_t len, bool binary, gale_ws_done_cb cb,
                  void *arg)
{
    if (!ws || (!data && len))
        return -EINVAL;
    if (ws->phase != WS_OPEN || !ws->stream)
        return -EPIPE;
    return gale__ws_send(ws, binary ? WS_OP_BINARY : WS_OP_TEXT, data, len, cb, arg);
}

static void future_written(gale_ws *ws, int status, void *arg)
{
    (void)ws;
    gale_future *f = arg;
    if (status == 0)
        gale_future_set_result(f, NULL, NULL);
    else
        gale_future_set_error(f, status, NULL);
    gale_future_unref(f);
}

gale_future *gale_ws_write_message(gale_ws *ws, const void *data, size_t len, bool binary)
{
    gale_future *f = gale_future_new(ws ? ws->loop : NULL);
    if (!f)
        return NULL;
    gale_future_ref(f);
    int rc = gale_ws_write(ws, data, len, binary, future_written, f);
    if (rc < 0) {
        gale_future_set_error(f, rc, NULL);
        gale_future_unref(f);
    }
    return f;
}

int gale_ws_ping(gale_ws *ws, const void *data, size_t len)
{
    if (!ws || len > 125 || (!data && len))
        return -EINVAL;
    if (ws->phase != WS_OPEN || !ws->stream)
        return -EPIPE;
    return gale__ws_send(ws, WS_OP_PING, data, len, NULL, NULL);
}

/* ---- read_message ---- */

gale_future *gale_ws_read_message(gale_ws *ws)
{
    gale_future *f = gale_future_new(ws ? ws->loop : NULL);
    if (!f)
        return NULL;
    if (!ws || ws->cls->on_message) {
        gale_future_set_error(f, -EINVAL, "the class has on_message");
        return f;
    }
    if (ws->queue_head) {
        struct ws_queued *q = ws->queue_head;
        ws->queue_head = q->next;
        if (!ws->queue_head)
            ws->queue_tail = NULL;
        gale_future_set_result(f, q->msg, free);
        free(q);
        read_more(ws);
        return f;
    }
    if (ws->reader) {
        gale_future_set_error(f, -EBUSY, NULL);
        return f;
    }
    if (!ws->stream) {
        gale_future_set_error(f, GALE_EEOF, NULL);
        return f;
    }
    ws->reader = gale_future_ref(f);
    read_more(ws);
    return f;
}

/* ---- accessors ---- */

void *gale_ws_arg(gale_ws *ws) { return ws ? ws->arg : NULL; }
void *gale_ws_state(gale_ws *ws) { return ws ? ws->state : NULL; }
gale_loop *gale_ws_loop(gale_ws *ws) { return ws ? ws->loop : NULL; }
gale_handler *gale_ws_handler(gale_ws *ws) { return ws ? ws->handler : NULL; }
const char *gale_ws_subprotocol(gale_ws *ws) { return ws ? ws->subprotocol : NULL; }
bool gale_ws_compressed(gale_ws *ws) { return ws && ws->pmd; }
bool gale_ws_closing(gale_ws *ws) { return !ws || ws->phase >= WS_CLOSING; }
int gale_ws_close_code(gale_ws *ws)
{
    return ws && (ws->phase == WS_CLOSED || ws->close_received) ? ws->close_code : 0;
}
const char *gale_ws_close_reason(gale_ws *ws)
{
    return ws && ws->close_reason ? ws->close_reason : "";
}

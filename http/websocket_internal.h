/* WebSockets' private parts shared between their files (not installed):
 *   websocket_frame.c    the frame parser (fuzzable, no I/O), frame headers, UTF-8, SHA-1 and
 *                        the accept key
 *   websocket.c          the connection: reading, messages, control frames, closing, writing
 *   websocket_server.c   the server handshake and the web layer's route to a class
 *   websocket_client.c   websocket_connect
 *   websocket_deflate.c  permessage-deflate: negotiation and the codec
 */
#ifndef GALE_HTTP_WEBSOCKET_INTERNAL_H
#define GALE_HTTP_WEBSOCKET_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/coro.h"
#include "http/websocket.h"
#include "net/iostream.h"

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* ---- frame parser (websocket_frame.c) ----
 *
 * Fed any split of the input; calls back once per frame header, per payload piece of a data frame
 * (still masked: `mask` and the payload offset of the piece let the receiver unmask while
 * copying), once per complete control frame (unmasked, <= 125 bytes) and once per message end.
 * A callback returns 0 to go on, a close code (> 0) to fail the connection or -1 to stop
 * (the bytes after the current piece stay unparsed). */
typedef struct gale__ws_parser gale__ws_parser;
typedef struct gale__ws_parser_cbs {
    /* A data frame's header: `first` for a message's first frame (`opcode` TEXT or BINARY, `rsv1`
     * its compression bit), `len` its payload length. */
    int (*frame)(void *arg, int opcode, bool first, bool rsv1, uint64_t len);
    int (*data)(void *arg, const uint8_t *p, size_t n, const uint8_t mask[4], uint64_t off);
    int (*message_end)(void *arg);
    int (*control)(void *arg, int opcode, const uint8_t *p, size_t n);
} gale__ws_parser_cbs;

struct gale__ws_parser {
    const gale__ws_parser_cbs *cbs;
    void *arg;
    uint64_t max_len;    /* a data frame (and message) longer than this: 1009 */
    uint64_t msg_len;    /* payload bytes of the message so far */
    uint64_t left;       /* payload bytes of the current frame still due */
    uint64_t off;        /* payload bytes of the current frame seen */
    uint8_t hdr[14];     /* the header being collected */
    uint8_t hlen;        /* its bytes so far */
    uint8_t state;       /* PS_HEAD, PS_DATA, PS_CONTROL, PS_FAILED */
    uint8_t opcode, fin; /* of the current frame */
    uint8_t mask[4];
    bool masked;
    bool expect_mask; /* server: frames must be masked; client: must not be */
    bool allow_rsv1;  /* permessage-deflate negotiated */
    bool in_message;  /* a fragmented message is under way */
    uint8_t ctl_len;  /* control payload collected */
    uint8_t ctl[125]; /* a control frame's payload, unmasked */
    const char *why;  /* what failed, for the log and the Close reason */
};

void gale__ws_parser_init(gale__ws_parser *p, const gale__ws_parser_cbs *cbs, void *arg,
                          bool expect_mask, uint64_t max_len);
/* Parses up to `len` bytes. Returns 0 with `*used` == len, -1 when a callback stopped it (`*used`
 * bytes parsed), or a close code (the connection must fail; p->why says why). After a failure
 * every call fails again with the same code. */
int gale__ws_parse(gale__ws_parser *p, const uint8_t *data, size_t len, size_t *used);

/* Writes a frame header for `len` payload bytes into `out` (room for 14 bytes). `mask` (NULL:
 * unmasked) is copied in after the length. Returns its length. */
size_t gale__ws_frame_header(uint8_t *out, int opcode, bool fin, bool rsv1, uint64_t len,
                             const uint8_t *mask);
/* XORs `n` bytes from `src` into `dst` (may be equal) with `mask`, starting at payload offset
 * `off`. */
void gale__ws_unmask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                     uint64_t off);

/* Incremental UTF-8 validation: state 0 is "accept", 1 "reject"; feed pieces, then a message is
 * valid when the state is 0. */
#define GALE_WS_UTF8_ACCEPT 0
#define GALE_WS_UTF8_REJECT 1
uint32_t gale__ws_utf8(uint32_t state, const uint8_t *p, size_t n);
/* A received close code that may appear in a Close frame. */
bool gale__ws_close_code_valid(int code);

/* The Sec-WebSocket-Accept value (28 chars + NUL) for `key` (klen bytes). */
void gale__ws_accept_key(const char *key, size_t klen, char out[29]);
/* Base64 of `n` bytes into `out` (room for 4 * ((n + 2) / 3) + 1). */
void gale__ws_base64(const uint8_t *in, size_t n, char *out);

/* ---- permessage-deflate (websocket_deflate.c) ---- */

typedef struct gale__ws_deflate gale__ws_deflate;

/* Parameters agreed on, from one side's point of view. */
typedef struct gale__ws_pmd {
    bool my_no_context;   /* reset my compressor after each message */
    bool peer_no_context; /* the peer resets its compressor: reset my decompressor */
    int my_window_bits;   /* 9..15 */
    int level;
    size_t min_length;
} gale__ws_pmd;

/* Server: looks for an acceptable offer in the Sec-WebSocket-Extensions values (`offers`, a
 * comma-separated list, may be NULL) under `want`; fills `*agreed` and the response's extension
 * value (`resp`, room for `rlen`) and returns true, or returns false (decline: no extension). */
bool gale__ws_pmd_accept(const char *offers, size_t olen, const gale_ws_compression *want,
                         gale__ws_pmd *agreed, char *resp, size_t rlen);
/* Client: the offer to send. */
const char *gale__ws_pmd_offer(void);
/* Client: checks the server's answer (`value`, vlen bytes). Returns 0 with `*agreed` set, or
 * GALE_EHTTP for an answer the client must refuse. */
int gale__ws_pmd_check_answer(const char *value, size_t vlen, gale__ws_pmd *agreed);

/* Whether this build has zlib. */
bool gale__ws_pmd_available(void);
/* A codec for `agreed`. NULL: out of memory (or no zlib). */
gale__ws_deflate *gale__ws_deflate_new(const gale__ws_pmd *agreed);
void gale__ws_deflate_free(gale__ws_deflate *d);
/* Compresses a whole message into a malloc'ed buffer (`*out`, `*olen`). Returns 0 or -ENOMEM. */
int gale__ws_deflate_message(gale__ws_deflate *d, const void *data, size_t len, uint8_t **out,
                             size_t *olen);
/* Inflates a piece of a compressed message (`fin`: the message's last piece, after which the
 * trailer is added), appending the output to `*buf` (len `*blen`, capacity `*bcap`, realloc'ed)
 * without ever holding more than `max` bytes. Returns 0, GALE_WS_TOO_BIG (1009) when the output
 * would exceed `max`, GALE_WS_INVALID_DATA... as a close code (1007 for corrupt data), or -ENOMEM. */
int gale__ws_inflate(gale__ws_deflate *d, const uint8_t *in, size_t n, bool fin, char **buf,
                     size_t *blen, size_t *bcap, size_t max);
/* Whether messages shorter than this go out uncompressed. */
size_t gale__ws_deflate_min_length(const gale__ws_deflate *d);

/* ---- the connection (websocket.c) ---- */

enum ws_phase {
    WS_CONNECTING, /* client: handshake under way */
    WS_OPEN,
    WS_CLOSING, /* our Close frame was sent (or is being sent after a failure) */
    WS_CLOSED,  /* the stream closed; on_close ran or is about to */
};

struct gale_ws {
    gale_stream *stream; /* NULL once closed */
    gale_loop *loop;
    const gale_ws_class *cls;
    void *arg;
    void *state;
    gale_handler *handler; /* server: the upgrade request while open() runs */
    gale__ws_deflate *pmd;
    gale__ws_parser parser;
    /* the message being received */
    char *msg;
    size_t msg_len, msg_cap;
    uint32_t utf8;
    bool msg_binary, msg_compressed;
    /* read_message: messages waiting and the reader waiting */
    struct ws_queued *queue_head, *queue_tail;
    gale_future *reader;
    /* timers */
    gale_timeout ping_timer, close_timer;
    double ping_sent; /* when the unanswered ping went out (0: none) */
    size_t max_message;
    int refs;
    int close_code; /* the peer's */
    char *close_reason;
    char *subprotocol;
    uint8_t phase;       /* enum ws_phase, changed by ws_set_phase() only */
    bool client;         /* masks what it sends */
    bool failed;         /* a protocol error: nothing more is delivered */
    bool close_received; /* the peer's Close arrived */
    bool reading;        /* a stream read is pending */
    bool wait_drain;     /* reading waits for the output to drain */
    bool in_read;        /* inside the read callback */
    bool coro_running;   /* the class's coroutine holds a reference */
};

/* A new connection over `s` (NULL: attach it later; not yet reading). `max_message` 0: the
 * class's. Returns NULL when out of memory. */
gale_ws *gale__ws_new(gale_stream *s, const gale_ws_class *cls, void *arg, bool client,
                      size_t max_message);
/* Gives `ws` its stream (whose close callback it takes). */
void gale__ws_attach(gale_ws *ws, gale_stream *s);
/* Starts the connection: runs open (and the coroutine), then reads. Consumes nothing else. */
void gale__ws_start(gale_ws *ws);
/* Sends one whole frame (a data frame compressed when permessage-deflate is on and it is long
 * enough; masked by a client). Returns as gale_ws_write. */
int gale__ws_send(gale_ws *ws, int opcode, const void *data, size_t len, gale_ws_done_cb cb,
                  void *arg);
/* Frees a connection that never started (its stream is closed by the caller). */
void gale__ws_discard(gale_ws *ws);

#endif

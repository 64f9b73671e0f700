/* A raw HTTP/1.x client for the suites: a parser for responses as bytes (status line, headers,
 * a body framed by Content-Length, chunked encoding or the connection's end) and a blocking
 * client over a real socket that sends requests whole, byte by byte or cut in two, and reads one
 * response at a time from a stream that may hold several (pipelining).
 *
 * Errors are returned, never asserted: 0 or a count on success, -errno otherwise (-EAGAIN: the
 * receive timeout passed; -EPIPE: the connection ended before a complete response; -EPROTO:
 * bytes that are not an HTTP/1.x response). Nothing here calls Check, so the client may run on a
 * thread of its own while the test thread runs the loop of an in-process server. */
#ifndef GALE_TESTS_RAWHTTP_H
#define GALE_TESTS_RAWHTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define TEST_HTTP_MAX_HEADERS 128
#define TEST_HTTP_MAX_TRAILERS 16

struct test_http_header {
    const char *name;  /* as received, NUL-terminated */
    const char *value; /* leading spaces and tabs skipped, the rest as received */
};

/* One parsed response. Owns its memory: test_http_response_free() releases it; a response
 * zero-filled or already freed may be freed again. */
struct test_http_response {
    int minor; /* HTTP/1.<minor> */
    int status;
    char reason[128]; /* the status line after the code */
    char *head;       /* status line and header lines up to the empty line, NUL-terminated */
    size_t head_len;  /* bytes of `head`, the final CRLF CRLF included */
    struct test_http_header headers[TEST_HTTP_MAX_HEADERS];
    int nheaders;
    char *body; /* the body, de-chunked and NUL-terminated (not NULL once parsed) */
    size_t body_len;
    size_t body_off; /* where the body's bytes start, from the response's first byte */
    bool chunked;
    size_t *chunk_lens; /* the wire size of each chunk but the last (0) one */
    int nchunks;
    struct test_http_header trailers[TEST_HTTP_MAX_TRAILERS];
    int ntrailers;
    size_t wire_len;     /* bytes the whole response took */
    char *store;         /* private: the header lines, split in place */
    char *trailer_store; /* private: the trailer lines, split in place */
};

/* ---- parsing bytes ---- */

/* Parses the status line and header lines at the start of buf[0..len): fills everything up to
 * `nheaders` (body fields stay 0). Returns the head's length, 0 if the empty line has not
 * arrived yet, or -EPROTO. On anything but success `r` is left zero-filled. */
ssize_t test_http_parse_head(const char *buf, size_t len, struct test_http_response *r);

/* Parses one whole response at the start of buf[0..len). `eof`: the connection ended after
 * these bytes, so a body without Content-Length or chunked framing ends there (otherwise such
 * a body is never complete). `head`: the request was HEAD, so there is no body; 1xx, 204 and
 * 304 never have one. Returns the bytes the response took (r->wire_len), 0 if it is not
 * complete yet (and `eof` is false), -EPIPE if `eof` and it is not complete, or -EPROTO. On
 * anything but success `r` is left zero-filled. */
ssize_t test_http_parse(const char *buf, size_t len, bool eof, bool head,
                        struct test_http_response *r);

/* The value of the first header named `name` (case-insensitive), or NULL. */
const char *test_http_header(const struct test_http_response *r, const char *name);
/* How many header lines are named `name` (case-insensitive). */
int test_http_header_count(const struct test_http_response *r, const char *name);
/* Whether some header line is exactly `name` (case-insensitive) with exactly `value`. */
bool test_http_header_is(const struct test_http_response *r, const char *name, const char *value);
void test_http_response_free(struct test_http_response *r);

/* ---- a blocking client ---- */

struct test_http_client {
    int fd;
    char *buf; /* received and not yet consumed, NUL-terminated */
    size_t len;
    size_t cap;
    bool eof; /* the server closed its side */
};

/* Connects to 127.0.0.1:port or the unix socket at `path`, with a receive and send timeout of
 * `timeout` seconds. Returns 0 or -errno (then c->fd is -1). test_http_close() in any case. */
int test_http_open(struct test_http_client *c, int port, double timeout);
int test_http_open_unix(struct test_http_client *c, const char *path, double timeout);
/* Closes the socket (if open) and frees the buffer; c may be reopened. */
void test_http_close(struct test_http_client *c);

/* Sends all of data. Returns 0 or -errno. */
int test_http_send(struct test_http_client *c, const void *data, size_t len);
int test_http_sends(struct test_http_client *c, const char *s);
/* Sends data one byte per send(). Returns 0 or -errno. */
int test_http_send_bytewise(struct test_http_client *c, const void *data, size_t len);
/* Sends data[0..cut), then data[cut..len). `in_process`: the server is a socket of this
 * process, and the second part goes out only once it has read the first (test_wait_peer_read),
 * so the cut reaches it as two reads for certain; -ETIMEDOUT if that does not happen within
 * 10 s. For an out-of-process server the parts are two send() calls and nothing more. */
int test_http_send_split(struct test_http_client *c, const void *data, size_t len, size_t cut,
                         bool in_process);

/* Receives more bytes into the buffer. Returns the count, 0 at the end of the stream (c->eof),
 * or -errno (-EAGAIN: the timeout passed). */
ssize_t test_http_fill(struct test_http_client *c);
/* Reads exactly one response (see test_http_parse for `head`) and consumes its bytes; what
 * follows stays buffered for the next call. A body delimited by the connection's end is taken
 * as complete also when the connection ends in an error or a timeout. Returns 0 or -errno. */
int test_http_read(struct test_http_client *c, bool head, struct test_http_response *r);
/* Reads until the end of the stream, an error or `max` buffered bytes. Returns 0 at the end of
 * the stream (or a reset), else -errno or -EMSGSIZE. Everything read stays in c->buf. */
int test_http_read_all(struct test_http_client *c, size_t max);
/* Waits up to `seconds` for the server to end the connection (end of stream or reset), reading
 * and discarding anything it still sends. Returns 0, -EAGAIN if it is still open, or -errno. */
int test_http_expect_closed(struct test_http_client *c, double seconds);
/* True when the connection is open and there is nothing to read right now. */
bool test_http_idle(struct test_http_client *c);

/* Sends raw on a new connection to 127.0.0.1:port, reads one response and closes. Returns 0 or
 * -errno as test_http_open/send/read. */
int test_http_exchange(int port, const void *raw, size_t len, bool head,
                       struct test_http_response *r);

#endif

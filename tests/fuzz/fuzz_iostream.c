/* Fuzzes net/iostream.c reads over random splits: a socketpair, the stream on one end, the
 * harness as the peer on the other. The input is a program of reads (read_until, read_bytes,
 * read_bytes partial, read_until_regex, read_some, read_stream, read_until_close) run one after
 * the other (each started from the previous one's callback), the bytes the peer sends at
 * input-chosen splits, then a half-close (the harness closes the stream itself if it is still open
 * a while after the program ended). A reference reader over the whole byte string predicts
 * each read's outcome and data; the stream must match it exactly, complete every read once, echo
 * (through gale_stream_write) exactly the bytes it delivered in order, close once, and leave no
 * descriptor or timer behind.
 *
 * Input: byte 0 = flags (bit 0: try a second read while one is pending, expecting -EBUSY; bits
 * 1-3: close locally inside the callback of op N, 0 = never), byte 1 = number of ops (mod 12,
 * + 1), 2 bytes per op (kind, parameter), byte = k piece sizes (mod 8), k bytes, then the data. */
#include <errno.h>
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/errors.h"
#include "fuzz_util.h"
#include "net/iostream.h"

enum { OP_UNTIL, OP_BYTES, OP_PARTIAL, OP_REGEX, OP_SOME, OP_STREAM, OP_CLOSE, OP_KINDS };

static const char *const delims[] = {"\n", "\r\n", "ab", "\r\n\r\n"};
/* Fixed-length patterns only: their leftmost match in a prefix is the one in the whole string. */
static const char *const patterns[] = {"\r\n", "a[bc]", "x.y", "^[0-9]", "[0-9]{3}"};

struct op {
    int kind;
    unsigned param;
};

struct run {
    gale_loop *loop;
    gale_stream *s;
    int peer;
    struct op ops[16];
    size_t nops, cur;
    bool try_busy;
    size_t close_at; /* close locally in the callback of op close_at - 1; 0: never */
    const uint8_t *data;
    size_t len, pos; /* the reference reader's position */
    size_t sent;
    const uint8_t *sizes;
    size_t nsizes, piece;
    bool shut, peer_eof, closed, local_close;
    unsigned idle; /* iterations since the program ended */
    int close_reason;
    int done_reads;    /* completions seen for the current op */
    size_t stream_got; /* read_stream: bytes received so far */
    uint8_t *echo;     /* what the stream delivered, in order */
    size_t echo_len;
    uint8_t *back; /* what the peer received */
    size_t back_len, back_cap;
    size_t writes, write_cbs;
    bool write_failed;
    regex_t re[sizeof patterns / sizeof patterns[0]];
};

static struct run *R;

static void start_next(struct run *r);

static void on_write(gale_stream *s, int status, void *arg)
{
    struct run *r = arg;
    r->write_cbs++;
    FUZZ_CHECK(r->write_cbs <= r->writes, "more write callbacks than writes");
    if (status != 0)
        r->write_failed = true;
}

static void echo(struct run *r, const char *data, size_t len)
{
    memcpy(r->echo + r->echo_len, data, len);
    r->echo_len += len;
    if (gale_stream_write(r->s, data, len, on_write, r) == 0)
        r->writes++;
    else
        r->write_failed = true;
}

/* The data handed to a read must be the reference's next bytes. */
static void expect_data(struct run *r, const char *data, size_t len, const char *what)
{
    FUZZ_CHECK(len <= r->len - r->pos, "%s: %zu bytes, only %zu left", what, len, r->len - r->pos);
    FUZZ_CHECK(len == 0 || (data && memcmp(data, r->data + r->pos, len) == 0),
               "%s: bytes differ from the stream's next bytes", what);
}

/* The outcome the reference predicts for a delimiter or pattern read: the end of the match, or
 * -EMSGSIZE, or GALE_EEOF. */
static long predict_until(struct run *r, const struct op *op)
{
    const uint8_t *rest = r->data + r->pos;
    size_t left = r->len - r->pos, max = op->param % 4 == 0 ? 0 : 1 + op->param / 4;
    long end = -1;
    if (op->kind == OP_UNTIL) {
        const char *d = delims[op->param % 4];
        const uint8_t *hit = memmem(rest, left, d, strlen(d));
        if (hit)
            end = (long)(hit - rest) + (long)strlen(d);
    } else {
        regmatch_t m[1] = {{.rm_so = 0, .rm_eo = (regoff_t)left}};
        regex_t *re = &r->re[op->param % (sizeof patterns / sizeof patterns[0])];
        /* A NUL-terminated copy: the sanitizers' regexec interceptor reads up to a NUL whatever
         * REG_STARTEND says. */
        char *copy = malloc(left + 1);
        if (!copy)
            fuzz_fail("out of memory");
        memcpy(copy, rest, left);
        copy[left] = '\0';
        if (regexec(re, copy, 1, m, REG_STARTEND | REG_NOTEOL) == 0)
            end = m[0].rm_eo;
        free(copy);
    }
    if (end >= 0)
        return max && (size_t)end > max ? -EMSGSIZE : end;
    return max && left >= max ? -EMSGSIZE : GALE_EEOF;
}

static void after_error(struct run *r, int status, const char *what)
{
    FUZZ_CHECK(status < 0, "%s: positive status %d", what, status);
    r->cur = r->nops; /* the stream is closing: no more reads */
}

static bool closing_here(struct run *r)
{
    if (r->close_at && r->cur + 1 == r->close_at) {
        r->local_close = true;
        gale_stream_close(r->s, 0);
        return true;
    }
    return false;
}

static void on_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct run *r = arg;
    FUZZ_CHECK(r->cur < r->nops, "read callback with no read pending");
    const struct op *op = &r->ops[r->cur];
    FUZZ_CHECK(++r->done_reads == 1, "op %zu completed twice", r->cur);
    if (r->local_close) {
        FUZZ_CHECK(status == -ECANCELED, "op %zu pending at a local close got %d", r->cur, status);
        after_error(r, status, "cancelled read");
        return;
    }
    size_t left = r->len - r->pos;
    switch (op->kind) {
    case OP_UNTIL:
    case OP_REGEX: {
        long want = predict_until(r, op);
        FUZZ_CHECK(status == (want < 0 ? (int)want : 0), "until/regex op %zu: status %d, want %ld",
                   r->cur, status, want);
        if (want >= 0)
            FUZZ_CHECK(len == (size_t)want, "until/regex op %zu: %zu bytes, want %ld", r->cur, len,
                       want);
        break;
    }
    case OP_BYTES: {
        size_t n = op->param % 64;
        int want = n <= left ? 0 : GALE_EEOF;
        FUZZ_CHECK(status == want, "read_bytes(%zu) op %zu: status %d, want %d", n, r->cur, status,
                   want);
        if (!status)
            FUZZ_CHECK(len == n, "read_bytes(%zu): %zu bytes", n, len);
        break;
    }
    case OP_PARTIAL: {
        size_t n = op->param % 64;
        int want = n == 0 || left > 0 ? 0 : GALE_EEOF;
        FUZZ_CHECK(status == want, "partial read_bytes(%zu) op %zu: status %d, want %d", n, r->cur,
                   status, want);
        if (!status)
            FUZZ_CHECK(len <= n && (len > 0 || n == 0), "partial read_bytes(%zu): %zu bytes", n,
                       len);
        break;
    }
    case OP_CLOSE:
        FUZZ_CHECK(status == 0 && len == left, "read_until_close: status %d, %zu of %zu bytes",
                   status, len, left);
        break;
    case OP_STREAM: { /* the done callback */
        size_t n = op->param % 64 == 63 ? SIZE_MAX : op->param % 64;
        bool enough = n == SIZE_MAX || r->stream_got == n;
        FUZZ_CHECK(len == 0, "read_stream done with data");
        FUZZ_CHECK(enough ? status == 0 : status == GALE_EEOF,
                   "read_stream(%zu): done status %d after %zu bytes", n, status, r->stream_got);
        if (status == 0)
            r->cur++;
        else
            after_error(r, status, "read_stream");
        if (status == 0 && !closing_here(r))
            start_next(r);
        return;
    }
    default: break;
    }
    expect_data(r, data, len, "read");
    if (status < 0) {
        after_error(r, status, "read");
        return;
    }
    echo(r, data, len);
    r->pos += len;
    r->cur++;
    if (!closing_here(r))
        start_next(r);
}

static void on_chunk(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct run *r = arg;
    FUZZ_CHECK(status == 0 && len > 0, "read_stream chunk: status %d len %zu", status, len);
    expect_data(r, data, len, "read_stream chunk");
    echo(r, data, len);
    r->pos += len;
    r->stream_got += len;
}

static size_t on_some(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct run *r = arg;
    FUZZ_CHECK(r->cur < r->nops, "read_some callback with no read pending");
    FUZZ_CHECK(++r->done_reads == 1, "read_some op %zu completed twice", r->cur);
    expect_data(r, data, len, "read_some");
    if (r->local_close) {
        FUZZ_CHECK(status == -ECANCELED, "read_some pending at a local close got %d", status);
        after_error(r, status, "cancelled read_some");
        return len;
    }
    if (status < 0) {
        FUZZ_CHECK(status == GALE_EEOF, "read_some: status %d", status);
        after_error(r, status, "read_some");
        return len;
    }
    FUZZ_CHECK(len > 0, "read_some with no bytes");
    size_t k = r->ops[r->cur].param % 16;
    size_t used = k < len ? k : len;
    echo(r, data, used);
    r->pos += used;
    r->cur++;
    if (!closing_here(r))
        start_next(r);
    return used;
}

static void start_next(struct run *r)
{
    if (r->cur >= r->nops)
        return;
    const struct op *op = &r->ops[r->cur];
    r->done_reads = 0;
    r->stream_got = 0;
    int rc;
    switch (op->kind) {
    case OP_UNTIL: {
        const char *d = delims[op->param % 4];
        size_t max = op->param % 4 == 0 ? 0 : 1 + op->param / 4;
        rc = gale_stream_read_until(r->s, d, strlen(d), max, on_read, r);
        break;
    }
    case OP_REGEX: {
        size_t max = op->param % 4 == 0 ? 0 : 1 + op->param / 4;
        rc = gale_stream_read_until_regex(
            r->s, patterns[op->param % (sizeof patterns / sizeof patterns[0])], max, on_read, r);
        break;
    }
    case OP_BYTES:
    case OP_PARTIAL:
        rc = gale_stream_read_bytes(r->s, op->param % 64, op->kind == OP_PARTIAL, on_read, r);
        break;
    case OP_SOME: rc = gale_stream_read_some(r->s, on_some, r); break;
    case OP_STREAM:
        rc = gale_stream_read_stream(r->s, op->param % 64 == 63 ? SIZE_MAX : op->param % 64,
                                     on_chunk, on_read, r);
        break;
    default: rc = gale_stream_read_until_close(r->s, on_read, r); break;
    }
    if (rc == -EPIPE) { /* closed already (the peer's close was seen) */
        FUZZ_CHECK(gale_stream_closed(r->s), "-EPIPE on an open stream");
        r->cur = r->nops;
        return;
    }
    FUZZ_CHECK(rc == 0, "op %zu (kind %d) refused: %d", r->cur, op->kind, rc);
    if (r->try_busy) {
        rc = gale_stream_read_bytes(r->s, 1, false, on_read, r);
        FUZZ_CHECK(rc == -EBUSY, "second read while one is pending: %d", rc);
    }
}

static void on_close(gale_stream *s, int status, void *arg)
{
    struct run *r = arg;
    FUZZ_CHECK(!r->closed, "close callback twice");
    r->closed = true;
    r->close_reason = status;
    FUZZ_CHECK(r->write_cbs == r->writes, "close callback before %zu write callbacks",
               r->writes - r->write_cbs);
}

static bool step(void *arg)
{
    struct run *r = arg;
    if (!r->shut) {
        size_t n = r->len - r->sent;
        if (r->nsizes && n && r->piece < FUZZ_MAX_PIECES) {
            size_t want = (size_t)r->sizes[r->piece++ % r->nsizes] + 1;
            if (want < n)
                n = want;
        }
        if (n) {
            ssize_t w = send(r->peer, r->data + r->sent, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                r->sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                r->sent = r->len;
        }
        if (r->sent == r->len) {
            shutdown(r->peer, SHUT_WR);
            r->shut = true;
        }
    }
    while (!r->peer_eof) {
        if (r->back_cap - r->back_len < 4096) {
            size_t cap = r->back_cap ? r->back_cap * 2 : 16384;
            uint8_t *p = realloc(r->back, cap);
            if (!p)
                fuzz_fail("out of memory");
            r->back = p;
            r->back_cap = cap;
        }
        ssize_t n = recv(r->peer, r->back + r->back_len, r->back_cap - r->back_len, MSG_DONTWAIT);
        if (n > 0) {
            r->back_len += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            r->peer_eof = true;
        break;
    }
    /* The program ended with the peer's bytes all sent: a stream may keep unread bytes after a
     * FIN for a later read, so after a quiet while the owner closes it. */
    if (!r->closed && r->shut && r->cur >= r->nops && ++r->idle > 16 && !r->local_close) {
        r->local_close = true;
        gale_stream_close(r->s, 0);
    }
    return r->closed && r->peer_eof;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static gale_loop *loop;
    if (!loop && gale_loop_new(GALE_BACKEND_EPOLL, &loop) < 0)
        fuzz_fail("loop");
    struct fuzz_in in = {data, size};
    struct run *r = calloc(1, sizeof *r);
    if (!r)
        return 0;
    R = r;
    unsigned flags = fuzz_u8(&in);
    r->try_busy = flags & 1;
    r->close_at = (flags >> 1) & 7;
    r->nops = fuzz_u8(&in) % 12 + 1;
    for (size_t i = 0; i < r->nops; i++) {
        r->ops[i].kind = (int)(fuzz_u8(&in) % OP_KINDS);
        r->ops[i].param = fuzz_u8(&in);
    }
    r->nsizes = fuzz_u8(&in) % 8;
    if (r->nsizes > in.n)
        r->nsizes = in.n;
    r->sizes = in.p;
    in.p += r->nsizes;
    in.n -= r->nsizes;
    r->data = in.p;
    r->len = in.n;
    r->echo = malloc(in.n + 1);
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++)
        if (regcomp(&r->re[i], patterns[i], REG_EXTENDED) != 0)
            fuzz_fail("regcomp %s", patterns[i]);
    r->loop = loop;
    int fd0 = fuzz_lowest_free_fd();
    size_t timers0 = gale_loop_timer_count(loop);
    int sv[2];
    if (!r->echo || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        fuzz_fail("socketpair");
    r->peer = sv[1];
    if (gale_stream_new(loop, sv[0], &r->s) < 0)
        fuzz_fail("stream");
    gale_stream_set_close_cb(r->s, on_close, r);
    start_next(r);
    fuzz_drive(loop, step, r, 10.0, "iostream run");
    /* Every op before the close completed exactly once. */
    FUZZ_CHECK(r->cur == r->nops || r->local_close, "op %zu of %zu never completed", r->cur,
               r->nops);
    FUZZ_CHECK(r->write_cbs == r->writes, "%zu writes, %zu callbacks", r->writes, r->write_cbs);
    /* The peer got a prefix of what was echoed; all of it when no write failed. */
    FUZZ_CHECK(r->back_len <= r->echo_len && memcmp(r->back, r->echo, r->back_len) == 0,
               "peer received bytes the stream did not deliver (%zu/%zu)", r->back_len,
               r->echo_len);
    if (!r->write_failed)
        FUZZ_CHECK(r->back_len == r->echo_len, "echo lost bytes: %zu of %zu", r->back_len,
                   r->echo_len);
    if (!r->local_close && r->cur == r->nops && r->pos == r->len)
        FUZZ_CHECK(r->close_reason == GALE_EEOF || r->close_reason < 0,
                   "close reason %d after a clean end", r->close_reason);
    if (getenv("GALE_FUZZ_VERBOSE"))
        fprintf(stderr, "ops %zu/%zu, consumed %zu of %zu, echoed %zu, close reason %d%s\n", r->cur,
                r->nops, r->pos, r->len, r->echo_len, r->close_reason,
                r->local_close ? " (local)" : "");
    close(r->peer);
    FUZZ_CHECK(gale_loop_timer_count(loop) == timers0, "timer left");
    FUZZ_CHECK(fuzz_lowest_free_fd() == fd0, "descriptor left (lowest free %d, was %d)",
               fuzz_lowest_free_fd(), fd0);
    for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++)
        regfree(&r->re[i]);
    free(r->echo);
    free(r->back);
    free(r);
    return 0;
}

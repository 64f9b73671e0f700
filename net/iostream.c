/* gale streams: Tornado's IOStream over a non-blocking socket. See iostream.h for the contract.
 *
 * Reading. Bytes are received into a per-thread 64 KiB scratch area when the stream's buffer is
 * empty; the pending read takes what it needs straight from there and only the remainder is copied
 * into the stream's gale_buffer (which releases its memory when it empties). When the buffer
 * already holds bytes, recv goes directly into it so the bytes stay in order.
 *
 * Idle policy (no read pending), close to Tornado: the stream keeps READ interest and receives
 * into its buffer up to GALE_STREAM_IDLE_LIMIT bytes (64 KiB, or the buffer cap if smaller), then
 * drops READ interest until a read is started, so TCP pushes back on a peer nobody reads from. This
 * sees a peer's FIN or RST while the application is busy (the close callback fires, which the HTTP
 * server turns into on_connection_close), and costs no extra system call on the hot path. A FIN
 * that follows unread data keeps the stream open for the reads that data can still satisfy
 * (peer_eof, settle_eof). Past the idle limit a close is seen only when a read starts.
 *
 * System calls: after a recv that filled less than the space offered, the stream waits for the
 * next readiness event instead of calling recv again (which would return EAGAIN). Writes are tried
 * with send() at once when nothing is queued; only the rest is copied and queued, WRITE interest is
 * registered only while bytes are queued, and queued chunks leave with one sendmsg (MSG_NOSIGNAL).
 * The loop is told about interest changes only when the mask really changes.
 *
 * Completions run from the loop, never inside the call that started them: a read satisfiable from
 * the buffer, write callbacks for bytes the kernel took at once, connect results and the close
 * sequence go through one deferred loop callback per stream (`deferred`); bytes arriving during a
 * handler dispatch are delivered from that dispatch. Dispatch and the deferred callback each hold
 * a reference, so closing inside any callback is safe: the stream is freed after the close
 * callback, when the last reference goes.
 *
 * read_until_regex cannot resume a search (a match may start anywhere), so each arrival rescans
 * the buffered bytes: O(n * arrivals), bounded by max_bytes and max_buffer_size. A rescan happens
 * only when new bytes arrived.
 */
#include "net/iostream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buffer.h"
#include "core/errors.h"
#include "core/fault_internal.h"
#include "core/log.h"
#include "net/iostream_internal.h"

#define GALE_STREAM_IDLE_LIMIT GALE_STREAM_READ_CHUNK
/* Full receives per readiness event, then other connections get their turn (libuv's count too).
 * Bulk echo measured 16 at 0.91 of 32's throughput (bench/README.md, Echo). */
#define MAX_RECV_PER_EVENT 32
#define MAX_WRITE_ROUNDS 16
#define MAX_IOV 64

/* A queued write. Copied writes carry their bytes in `data`; zero-copy writes point at the
 * caller's buffer and call `release` once done. A file range (gale_stream_sendfile) has
 * `release` == gale__stream_file_range and sends from file_fd at file_off (`p` unused). */
struct wreq {
    struct wreq *next;
    const char *p; /* next byte to send */
    size_t len;    /* bytes left to send */
    int file_fd;
    off_t file_off;
    void (*release)(void *);
    void *rel_arg;
    gale_done_cb cb;
    void *arg;
    char data[];
};

static void close_internal(gale_stream *s, int reason);
static void update_events(gale_stream *s);
static void schedule(gale_stream *s);

/* ---- per-thread scratch area ---- */

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static _Thread_local char *scratch_buf;

static void scratch_key_init(void) { pthread_key_create(&scratch_key, free); }

/* The thread's receive area, or NULL when it cannot be allocated (then recv goes to the buffer).
 * Freed at thread exit by the key destructor. */
static char *scratch(void)
{
    if (!scratch_buf) {
        pthread_once(&scratch_once, scratch_key_init);
        scratch_buf = malloc(GALE_STREAM_READ_CHUNK);
        if (scratch_buf)
            pthread_setspecific(scratch_key, scratch_buf);
    }
    return scratch_buf;
}

/* ---- small helpers ---- */

static const char *buf_data(const gale_stream *s)
{
    return s->rbuf.data ? gale_buffer_data(&s->rbuf) : "";
}

static size_t idle_limit(const gale_stream *s)
{
    return s->rbuf.max < GALE_STREAM_IDLE_LIMIT ? s->rbuf.max : GALE_STREAM_IDLE_LIMIT;
}

static const char *delim(const gale_stream *s)
{
    return s->klen <= DELIM_INLINE ? s->key.inl : s->key.heap;
}

/* Forgets the pending read (before its callback runs, so the callback may start the next). */
static void clear_read(gale_stream *s)
{
    if (s->read_kind == RK_UNTIL && s->klen > DELIM_INLINE)
        free(s->key.heap);
    else if (s->read_kind == RK_REGEX && s->key.re) {
        regfree(s->key.re);
        free(s->key.re);
    }
    s->read_kind = RK_NONE;
    s->klen = 0;
    s->key.heap = NULL;
}

static void free_stream(gale_stream *s)
{
    /* Still the result of a connect future nobody took it from: empty the future first, so
     * neither freeing it later nor reading its result touches this memory. */
    if (s->ext && s->ext->owner_future) /* cleared through the unlink: */
        gale_future_steal_result(s->ext->owner_future);
    clear_read(s);
    gale_buffer_free(&s->rbuf);
    gale__tls_free(s->tls);
    free(s->ext);
    free(s);
}

static void unref(gale_stream *s)
{
    if (--s->refs == 0)
        free_stream(s);
}

static gale_stream *stream_alloc(gale_loop *loop, int fd)
{
    if (gale__fault_alloc())
        return NULL;
    gale_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    s->fd = fd;
    s->refs = 1;
    s->rscan = SIZE_MAX;
    s->wq_tail = &s->wq_head;
    s->done_tail = &s->done_head;
    gale_buffer_init(&s->rbuf, GALE_STREAM_DEFAULT_MAX_BUFFER);
    return s;
}

/* ---- completions ---- */

/* Runs the read callback `cb` with the read already cleared; reads started inside only arm. */
static void call_read(gale_stream *s, gale_read_cb cb, void *arg, int status, const char *data,
                      size_t len)
{
    bool was = s->delivering;
    s->delivering = true;
    cb(s, status, data, len, arg);
    s->delivering = was;
}

static void complete_read(gale_stream *s, const char *data, size_t len)
{
    gale_read_cb cb = s->rcb.read;
    void *arg = s->rarg;
    clear_read(s);
    call_read(s, cb, arg, 0, data, len);
}

/* Write requests whose bytes the kernel has: release, callback, free, in order. */
static void run_done(gale_stream *s)
{
    while (s->done_head) {
        struct wreq *w = s->done_head;
        s->done_head = w->next;
        if (!s->done_head)
            s->done_tail = &s->done_head;
        if (w->release)
            w->release(w->rel_arg);
        if (w->cb)
            w->cb(s, 0, w->arg);
        free(w);
    }
}

static void push_done(gale_stream *s, struct wreq *w)
{
    w->next = NULL;
    *s->done_tail = w;
    s->done_tail = &w->next;
}

static void connect_done(gale_stream *s, int status)
{
    struct gale__stream_ext *x = s->ext; /* there since the connect or start_tls */
    s->connect_pending = false;
    if (!x || !x->connect_cb)
        return;
    gale_done_cb cb = x->connect_cb;
    x->connect_cb = NULL;
    cb(s, status, x->connect_arg);
}

/* The close sequence, from the loop: connect, pending read, writes, close callback; then the
 * stream's own reference goes. */
static void finish_close(gale_stream *s)
{
    if (s->finished)
        return;
    s->finished = true;
    int reason = s->close_reason;
    int failure = reason ? reason : -ECANCELED;

    if (s->connect_pending)
        connect_done(s, failure);

    if (s->read_kind != RK_NONE) {
        enum read_kind kind = s->read_kind;
        const char *data = buf_data(s);
        size_t len = gale_buffer_len(&s->rbuf);
        void *arg = s->rarg;
        if (kind == RK_SOME) {
            gale_consume_cb cb = s->rcb.consume;
            clear_read(s);
            bool was = s->delivering;
            s->delivering = true;
            cb(s, failure, data, len, arg);
            s->delivering = was;
        } else if (kind == RK_STREAM) {
            gale_read_cb cb = s->done_cb;
            bool ok = reason == GALE_EEOF && s->n == SIZE_MAX;
            clear_read(s);
            call_read(s, cb, arg, ok ? 0 : failure, data, len);
        } else {
            gale_read_cb cb = s->rcb.read;
            bool ok = kind == RK_CLOSE && reason == GALE_EEOF;
            clear_read(s);
            call_read(s, cb, arg, ok ? 0 : failure, data, len);
        }
    }

    run_done(s);
    while (s->wq_head) {
        struct wreq *w = s->wq_head;
        s->wq_head = w->next;
        if (w->release)
            w->release(w->rel_arg);
        if (w->cb)
            w->cb(s, failure, w->arg);
        free(w);
    }
    s->wq_tail = &s->wq_head;
    s->wpending = 0;

    gale_done_cb cb = s->close_cb;
    s->close_cb = NULL;
    if (cb)
        cb(s, reason, s->close_arg);
    gale_stream_hook hook = s->owner_hook;
    s->owner_hook = NULL;
    if (hook)
        hook(s, s->owner_arg);
    unref(s);
}

/* ---- reading ---- */

/* regexec over `data[0..len)` (REG_STARTEND: the bytes need no NUL and may hold some). glibc
 * honours the bounds, but a sanitizer runtime in the program (even when only the application, not
 * this library, is instrumented) intercepts regexec, measures `data` with strlen and reports a read
 * past the receive area. So regexec always gets a NUL-terminated copy: one more pass over bytes the
 * search reads anyway, on a path that is never the HTTP hot path. Returns regexec's code, or
 * REG_ESPACE when the copy fails. */
static int match_regex(const regex_t *re, const char *data, size_t len, regmatch_t *m)
{
    char small[512];
    char *copy = len < sizeof small ? small : malloc(len + 1);
    if (!copy)
        return REG_ESPACE;
    memcpy(copy, data, len);
    copy[len] = '\0';
    int rc = regexec(re, copy, 1, m, REG_STARTEND | REG_NOTEOL);
    if (copy != small)
        free(copy);
    return rc;
}

/* Tries the pending read against `data[0..len)` (the buffer when `from_buf`, else fresh bytes in
 * the scratch area). Returns 1 when it made progress (a callback ran; `*used` bytes are spent),
 * 0 when it needs more bytes, -1 when it closed the stream. */
static int step(gale_stream *s, const char *data, size_t len, bool from_buf, size_t *used)
{
    *used = 0;
    switch (s->read_kind) {
    case RK_BYTES:
        if (s->n == 0 || len >= s->n || (s->partial && len > 0)) {
            size_t k = len < s->n ? len : s->n;
            *used = k;
            complete_read(s, data, k);
            return 1;
        }
        return 0;

    case RK_UNTIL: {
        size_t pos = 0;
        bool found;
        if (from_buf) {
            found = gale_buffer_find(&s->rbuf, delim(s), s->klen, &pos);
        } else {
            const char *hit = s->klen == 1 ? memchr(data, (unsigned char)delim(s)[0], len)
                                           : memmem(data, len, delim(s), s->klen);
            found = hit != NULL;
            if (found)
                pos = (size_t)(hit - data);
        }
        if (found) {
            size_t end = pos + s->klen;
            if (s->n && end > s->n)
                goto unsatisfiable;
            *used = end;
            complete_read(s, data, end);
            return 1;
        }
        if (s->n && len >= s->n)
            goto unsatisfiable; /* any later match would end past max_bytes */
        return 0;
    }

    case RK_REGEX: {
        if (s->rscan != SIZE_MAX && len <= s->rscan && from_buf)
            return 0; /* nothing new since the last scan */
        regmatch_t m[1] = {{.rm_so = 0, .rm_eo = (regoff_t)len}};
        int rc = match_regex(s->key.re, data, len, m);
        if (rc == 0) {
            size_t end = (size_t)m[0].rm_eo;
            if (s->n && end > s->n)
                goto unsatisfiable;
            *used = end;
            complete_read(s, data, end);
            return 1;
        }
        if (rc != REG_NOMATCH) {
            gale_log_warning(GALE_LOG_GENERAL, "stream fd %d: regexec failed (%d)", s->fd, rc);
            close_internal(s, -ENOMEM);
            return -1;
        }
        s->rscan = len;
        if (s->n && len >= s->n)
            goto unsatisfiable;
        return 0;
    }

    case RK_STREAM: {
        if (s->n != 0) {
            if (len == 0)
                return 0;
            size_t k = len < s->n ? len : s->n;
            if (s->n != SIZE_MAX)
                s->n -= k;
            *used = k;
            call_read(s, s->rcb.read, s->rarg, 0, data, k);
            if (s->closed || s->read_kind != RK_STREAM || s->n != 0)
                return 1;
        }
        gale_read_cb done = s->done_cb;
        void *arg = s->rarg;
        clear_read(s);
        call_read(s, done, arg, 0, NULL, 0);
        return 1;
    }

    case RK_SOME: {
        if (len == 0 || len <= s->some_wait)
            return 0;
        gale_consume_cb cb = s->rcb.consume;
        void *arg = s->rarg;
        clear_read(s);
        bool was = s->delivering;
        s->delivering = true;
        size_t u = cb(s, 0, data, len, arg);
        s->delivering = was;
        if (u > len)
            u = len;
        /* A callback that used nothing needs more bytes: do not show it the same ones again. */
        s->some_wait = u == 0 ? len : 0;
        *used = u;
        return 1;
    }

    case RK_CLOSE:
    default: return 0;
    }

unsatisfiable:
    gale_log_info(GALE_LOG_GENERAL, "stream fd %d: read exceeds max_bytes %zu, closing", s->fd,
                  s->n);
    close_internal(s, -EMSGSIZE);
    return -1;
}

/* After the peer's FIN (Tornado's _try_inline_read: the buffer first, then the closed check): a
 * read still pending once deliver() tried the buffer can never be satisfied, so the stream closes
 * with GALE_EEOF and the read gets that status with the bytes so far (read_until_close and an
 * unbounded read_stream get status 0). With writes queued the close waits until they have left
 * (the peer may only have shut down its sending side); handle_write() closes then. With no read
 * pending nothing happens: the buffered bytes wait for the owner's next read. */
static void settle_eof(gale_stream *s)
{
    if (s->peer_eof && !s->closed && !s->wq_head && s->read_kind != RK_NONE)
        close_internal(s, GALE_EEOF);
}

/* Runs pending reads while they complete. `ext`/`extlen` are fresh bytes in the scratch area
 * (the buffer is empty then); what the reads leave of them is appended to the buffer. */
static void deliver(gale_stream *s, const char *ext, size_t extlen)
{
    while (!s->closed && s->read_kind != RK_NONE) {
        bool from_buf = extlen == 0;
        const char *data = from_buf ? buf_data(s) : ext;
        size_t len = from_buf ? gale_buffer_len(&s->rbuf) : extlen;
        enum read_kind kind = s->read_kind;
        size_t used;
        if (step(s, data, len, from_buf, &used) <= 0)
            break;
        if (kind != RK_SOME)
            s->some_wait = 0;
        if (from_buf) {
            gale_buffer_consume(&s->rbuf, used);
        } else {
            ext += used;
            extlen -= used;
        }
    }
    if (extlen && !s->closed) {
        int rc = gale__fault_alloc() ? -ENOMEM : gale_buffer_append(&s->rbuf, ext, extlen);
        if (rc < 0) {
            if (rc == -ENOBUFS)
                gale_log_info(GALE_LOG_GENERAL, "stream fd %d: read buffer full, closing", s->fd);
            else
                gale_log_warning(GALE_LOG_GENERAL, "stream fd %d: cannot buffer %zu bytes: %s",
                                 s->fd, extlen, gale_strerror(rc));
            close_internal(s, rc);
        }
    }
    settle_eof(s);
}

/* One receive: a count, 0 at the peer's end of stream, -EAGAIN, or the error. */
static ssize_t receive(gale_stream *s, char *p, size_t room)
{
    if (s->tls) {
        ssize_t n = gale__tls_read(s->tls, p, room);
        s->tls_rwant = n == -EAGAIN ? (uint8_t)gale__tls_want(s->tls) : 0;
        return n;
    }
    for (;;) {
        ssize_t n = gale__sys_recv(s->fd, p, room, MSG_DONTWAIT);
        if (n >= 0 || errno != EINTR)
            return n >= 0 ? n : (errno == EWOULDBLOCK ? -EAGAIN : -errno);
    }
}

/* The socket is readable: receive while a read is pending (or up to the idle limit), delivering
 * as bytes arrive. */
static void handle_read(gale_stream *s)
{
    if (s->peer_eof)
        return;
    for (int round = 0; round < MAX_RECV_PER_EVENT && !s->closed; round++) {
        bool pending = s->read_kind != RK_NONE;
        size_t buffered = gale_buffer_len(&s->rbuf);
        size_t space = s->rbuf.max - buffered;
        if (!pending && buffered >= idle_limit(s))
            return;
        if (space == 0) {
            gale_log_info(GALE_LOG_GENERAL, "stream fd %d: read buffer full, closing", s->fd);
            close_internal(s, -ENOBUFS);
            return;
        }
        char *p = NULL;
        size_t room = 0;
        bool ext = false;
        if (buffered == 0 && (p = scratch()) != NULL) {
            ext = true;
            room = GALE_STREAM_READ_CHUNK;
        } else {
            size_t want = GALE_STREAM_READ_CHUNK;
            if (s->read_kind == RK_BYTES && !s->partial && s->n > buffered + want)
                want = s->n - buffered; /* a large exact read: one allocation, fewer calls */
            if (want > space)
                want = space;
            int rc = gale__fault_alloc() ? -ENOMEM : gale_buffer_reserve(&s->rbuf, want, &p, &room);
            if (rc < 0) {
                gale_log_warning(GALE_LOG_GENERAL, "stream fd %d: cannot grow the read buffer: %s",
                                 s->fd, gale_strerror(rc));
                close_internal(s, rc);
                return;
            }
        }
        if (room > space)
            room = space;
        if (!pending && room > idle_limit(s) - buffered)
            room = idle_limit(s) - buffered;
        ssize_t n = receive(s, p, room);
        if (n < 0) {
            if (n != -EAGAIN)
                close_internal(s, (int)n);
            return;
        }
        if (n == 0) {
            s->peer_eof = true;
            if (gale_buffer_len(&s->rbuf) == 0 && !s->wq_head) {
                /* Nothing left for anyone: the peer is gone, say so at once. */
                close_internal(s, GALE_EEOF);
                return;
            }
            /* Bytes still buffered, or writes queued (the peer's SHUT_WR: it may still read):
             * stay open. Reads are served from the buffer while it can satisfy them; the first
             * one it cannot closes the stream (settle_eof), and a queue that has left with
             * nothing buffered closes it too (handle_write). */
            deliver(s, NULL, 0);
            return;
        }
        if (ext) {
            deliver(s, p, (size_t)n);
        } else {
            gale_buffer_commit(&s->rbuf, (size_t)n);
            deliver(s, NULL, 0);
        }
        if ((size_t)n < room && !(s->tls && gale__tls_pending(s->tls)))
            return; /* drained: the next recv would say EAGAIN; wait for the loop */
    }
}

/* ---- writing ---- */

/* One send of up to MAX_IOV buffers: a count, -EAGAIN, or the error. */
static ssize_t send_iov(gale_stream *s, const struct iovec *iov, int cnt)
{
    if (s->tls) {
        ssize_t n = gale__tls_writev(s->tls, iov, cnt);
        s->tls_wwant = n == -EAGAIN ? (uint8_t)gale__tls_want(s->tls) : 0;
        return n;
    }
    for (;;) {
        ssize_t n;
        if (cnt == 1) {
            n = gale__sys_send(s->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
            n = gale__sys_sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (n >= 0 || errno != EINTR)
            return n >= 0 ? n : (errno == EWOULDBLOCK ? -EAGAIN : -errno);
    }
}

/* The kernel took `n` bytes: finished requests move to the done list. */
static void advance(gale_stream *s, size_t n)
{
    s->wpending -= n;
    while (s->wq_head) {
        struct wreq *w = s->wq_head;
        if (w->len > n) {
            w->p += n;
            w->len -= n;
            return;
        }
        n -= w->len;
        w->len = 0;
        s->wq_head = w->next;
        if (!s->wq_head)
            s->wq_tail = &s->wq_head;
        if (w->cb || w->release)
            push_done(s, w);
        else
            free(w);
    }
}

static bool is_file(const struct wreq *w) { return w->release == gale__stream_file_range; }

/* A file range on a TLS stream: OpenSSL must see the bytes, so up to one record of the file is
 * read into the receive area and written as bytes (after -EAGAIN the same offset is read again:
 * the same bytes are offered, as OpenSSL requires). Returns as gale__stream_send_file_head. */
static ssize_t send_file_tls(gale_stream *s, struct wreq *w)
{
    char *buf = scratch();
    if (!buf)
        return -ENOMEM;
    size_t want = w->len < 16384 ? w->len : 16384;
    ssize_t got = pread(w->file_fd, buf, want, w->file_off);
    if (got <= 0)
        return got == 0 ? -EIO : (errno == EINTR ? -EINTR : -errno);
    struct iovec iov = {.iov_base = buf, .iov_len = (size_t)got};
    ssize_t n = send_iov(s, &iov, 1);
    if (n > 0)
        w->file_off += n;
    return n;
}

/* The queue's head is a file range: sends from it. Returns false when nothing more can be sent
 * now (the socket is full, or the stream closed). */
static bool flush_file_head(gale_stream *s)
{
    struct wreq *w = s->wq_head;
    ssize_t n = s->tls ? send_file_tls(s, w)
                       : gale__stream_send_file_head(s->fd, w->file_fd, &w->file_off, w->len);
    if (n == -EINTR)
        return true;
    if (n < 0) {
        if (n != -EAGAIN)
            close_internal(s, (int)n);
        return false;
    }
    if ((size_t)n < w->len) { /* the range stays at the head, `p` untouched */
        w->len -= (size_t)n;
        s->wpending -= (size_t)n;
        return true;
    }
    advance(s, (size_t)n);
    return true;
}

static void flush_queue(gale_stream *s)
{
    for (int round = 0; round < MAX_WRITE_ROUNDS && s->wq_head && !s->closed; round++) {
        if (is_file(s->wq_head)) {
            if (!flush_file_head(s))
                return;
            continue;
        }
        struct iovec iov[MAX_IOV];
        int cnt = 0;
        size_t offered = 0;
        for (struct wreq *w = s->wq_head; w && cnt < MAX_IOV && !is_file(w); w = w->next) {
            if (w->len == 0)
                continue;
            iov[cnt].iov_base = (void *)w->p;
            iov[cnt].iov_len = w->len;
            offered += w->len;
            cnt++;
        }
        ssize_t n = 0;
        if (cnt > 0) {
            n = send_iov(s, iov, cnt);
            if (n < 0) {
                if (n != -EAGAIN)
                    close_internal(s, (int)n);
                return;
            }
        }
        advance(s, (size_t)n);
        if ((size_t)n < offered)
            return;
    }
}

static void handle_write(gale_stream *s)
{
    flush_queue(s);
    /* The peer half-closed while bytes were queued: once they have left, close if nothing is
     * buffered for the owner. A pending read may still be served by the buffered bytes (a read
     * armed after the FIN waits for its deferred delivery): deliver() tries the buffer first and
     * settle_eof() closes only if it cannot be satisfied. */
    if (s->peer_eof && !s->wq_head && !s->closed) {
        if (s->read_kind != RK_NONE)
            schedule(s);
        else if (gale_buffer_len(&s->rbuf) == 0)
            close_internal(s, GALE_EEOF);
    }
}

static void copy_iov(char *dst, const struct iovec *iov, int iovcnt, size_t skip)
{
    for (int i = 0; i < iovcnt; i++) {
        size_t l = iov[i].iov_len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(dst, (const char *)iov[i].iov_base + skip, l - skip);
        dst += l - skip;
        skip = 0;
    }
}

static int do_write(gale_stream *s, const struct iovec *iov, int iovcnt, bool copy,
                    void (*release)(void *), void *rp, gale_done_cb cb, void *arg)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len && !iov[i].iov_base)
            goto invalid;
        if (iov[i].iov_len > SIZE_MAX - total)
            goto invalid;
        total += iov[i].iov_len;
    }
    if (s->closed) {
        if (release)
            release(rp);
        return -EPIPE;
    }
    /* A record is needed whenever a callback or release must run later; get it before sending
     * so that running out of memory never leaves half-sent bytes behind. */
    struct wreq *w = NULL;
    if (cb || release || !copy) {
        w = gale__fault_alloc() ? NULL : calloc(1, sizeof *w);
        if (!w) {
            if (release)
                release(rp);
            return -ENOMEM;
        }
    }
    size_t sent = 0;
    if (!s->wq_head && !s->connecting && !s->connect_pending && !s->handshaking && total > 0) {
        ssize_t n = send_iov(s, iov, iovcnt < MAX_IOV ? iovcnt : MAX_IOV);
        if (n < 0 && n != -EAGAIN) {
            int err = (int)n;
            free(w);
            if (release)
                release(rp);
            close_internal(s, err);
            return err;
        }
        if (n > 0)
            sent = (size_t)n;
    }
    size_t rem = total - sent;
    if (rem > 0 && copy) {
        struct wreq *c = gale__fault_alloc() ? NULL : malloc(sizeof *c + rem);
        if (!c) {
            free(w);
            if (sent > 0)
                close_internal(s, -ENOMEM); /* the stream's bytes are torn: end it */
            return -ENOMEM;
        }
        copy_iov(c->data, iov, iovcnt, sent);
        free(w);
        w = c;
        w->p = c->data;
    } else if (rem > 0) {
        w->p = (const char *)iov[0].iov_base + sent;
    }
    if (!w)
        return 0; /* copied write, all sent, nobody to tell */
    w->next = NULL;
    w->len = rem;
    w->cb = cb;
    w->arg = arg;
    w->release = release;
    w->rel_arg = rp;
    if (rem == 0 && !s->wq_head) {
        push_done(s, w);
        schedule(s);
        return 0;
    }
    *s->wq_tail = w;
    s->wq_tail = &w->next;
    s->wpending += rem;
    update_events(s);
    return 0;

invalid:
    if (release)
        release(rp);
    return -EINVAL;
}

/* ---- events, deferral, close ---- */

static void update_events(gale_stream *s)
{
    if (s->closed || s->fd < 0)
        return;
    if (s->unwatched) {
        /* Hung up: a write the kernel did not take at once can never leave. */
        if (s->wq_head)
            close_internal(s, -EPIPE);
        return;
    }
    unsigned want = 0;
    if (s->connecting) {
        want = GALE_WRITE;
    } else if (s->handshaking) {
        want = gale__tls_want(s->tls);
    } else if (!s->connect_pending) {
        if (!s->peer_eof && (s->read_kind != RK_NONE || gale_buffer_len(&s->rbuf) < idle_limit(s)))
            want |= GALE_READ;
        if (s->wq_head)
            want |= GALE_WRITE;
        if (s->tls) /* a TLS read may wait for a send, and a send for a read */
            want |= (s->tls_rwant & GALE_WRITE) | (s->tls_wwant & GALE_READ);
    }
    if (want == s->events)
        return;
    int rc = gale_loop_update_handler(s->loop, s->fd, want);
    if (rc < 0) {
        gale_log_error(GALE_LOG_GENERAL, "stream fd %d: cannot update interest: %s", s->fd,
                       gale_strerror(rc));
        close_internal(s, rc);
        return;
    }
    s->events = want;
}

static void handle_connect(gale_stream *s)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    s->connecting = false;
    if (err) {
        connect_done(s, -err);
        close_internal(s, -err);
        return;
    }
    connect_done(s, 0);
    if (!s->closed && s->wq_head)
        handle_write(s);
}

static void on_events(gale_loop *loop, int fd, unsigned events, void *arg)
{
    gale_stream *s = arg;
    s->refs++;
    if (s->connecting) {
        handle_connect(s);
    } else if (s->handshaking) {
        gale__stream_tls_step(s);
    } else if (!s->connect_pending) {
        if ((events & (GALE_WRITE | GALE_ERROR) || ((events & GALE_READ) && s->tls_wwant)) &&
            s->wq_head)
            handle_write(s);
        if ((events & GALE_WRITE) && s->tls_rwant)
            events |= GALE_READ; /* the read that waited for the socket to take bytes */
        run_done(s);
        if (!s->closed) {
            if ((events & GALE_READ) || ((events & GALE_ERROR) && (s->events & GALE_READ))) {
                handle_read(s);
            } else if (events & GALE_ERROR) {
                /* An error or hang-up while not reading: nothing else will report it. */
                int err = 0;
                socklen_t len = sizeof err;
                if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                    err = errno;
                if (!err && s->peer_eof && !s->wq_head) {
                    /* The hang-up that follows a FIN already seen (a unix socket whose peer
                     * closed, or a TCP socket whose sending side is shut down too): nothing
                     * more can arrive or leave. Bytes still buffered wait for the owner's reads;
                     * stop watching the fd so the level-triggered hang-up cannot spin the loop. */
                    gale_loop_remove_handler(s->loop, s->fd);
                    s->events = 0;
                    s->unwatched = true;
                } else {
                    close_internal(s, err ? -err : GALE_EEOF);
                }
            }
        }
    }
    update_events(s);
    unref(s);
}

static void deferred_run(gale_loop *loop, void *arg)
{
    gale_stream *s = arg;
    s->deferred = false;
    if (!s->closed && s->connect_pending && !s->connecting && !s->handshaking) {
        int st = s->ext ? s->ext->connect_status : 0;
        connect_done(s, st);
        if (st < 0)
            close_internal(s, st);
    }
    if (s->closed) {
        finish_close(s);
    } else {
        run_done(s);
        if (!s->closed)
            deliver(s, NULL, 0);
        if (!s->closed && s->tls && s->read_kind != RK_NONE && gale__tls_pending(s->tls))
            handle_read(s); /* bytes inside OpenSSL: no readiness event will announce them */
        update_events(s);
    }
    unref(s);
}

/* Queues deferred_run (once) on the loop. */
static void schedule(gale_stream *s)
{
    if (s->deferred || s->finished)
        return;
    if (gale_loop_add_callback(s->loop, deferred_run, s) == 0) {
        s->deferred = true;
        s->refs++;
        return;
    }
    gale_log_error(GALE_LOG_GENERAL, "stream fd %d: cannot queue a completion (out of memory)",
                   s->fd);
    if (s->closed) {
        /* Better early than never: run the close sequence now. */
        s->refs++;
        finish_close(s);
        unref(s);
    }
}

static void close_internal(gale_stream *s, int reason)
{
    if (s->closed)
        return;
    s->closed = true;
    s->close_reason = reason;
    if (s->tls)
        gale__stream_tls_closing(s); /* close_notify, before the fd goes (or with it) */
    if (s->fd >= 0) {
        gale_loop_remove_handler(s->loop, s->fd);
        close(s->fd);
        s->fd = -1;
    }
    s->events = 0;
    schedule(s);
}

void gale__stream_close_now(gale_stream *s, int reason) { close_internal(s, reason); }
void gale__stream_update_events(gale_stream *s) { update_events(s); }
void gale__stream_schedule(gale_stream *s) { schedule(s); }
void gale__stream_handle_read(gale_stream *s) { handle_read(s); }
void gale__stream_handle_write(gale_stream *s) { handle_write(s); }

/* ---- public API ---- */

int gale_stream_new(gale_loop *loop, int fd, gale_stream **out)
{
    if (!loop || fd < 0 || !out)
        return -EINVAL;
    gale_stream *s = stream_alloc(loop, fd);
    if (!s)
        return -ENOMEM;
    int rc = gale_loop_add_handler(loop, fd, GALE_READ, on_events, s);
    if (rc < 0) {
        free_stream(s);
        return rc;
    }
    s->events = GALE_READ;
    *out = s;
    return 0;
}

int gale_stream_connect(gale_loop *loop, const struct sockaddr *addr, socklen_t addrlen,
                        gale_done_cb cb, void *arg, gale_stream **out)
{
    if (!loop || !addr || addrlen < sizeof(sa_family_t) || !out)
        return -EINVAL;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    gale_stream *s = stream_alloc(loop, fd);
    if (!s) {
        close(fd);
        return -ENOMEM;
    }
    struct gale__stream_ext *x = gale__stream_ext(s);
    if (!x) {
        free_stream(s);
        close(fd);
        return -ENOMEM;
    }
    x->connect_cb = cb;
    x->connect_arg = arg;
    s->connect_pending = true;
    unsigned events = 0;
    if (connect(fd, addr, addrlen) == 0) {
        x->connect_status = 0;
        events = GALE_READ;
    } else if (errno == EINPROGRESS) {
        s->connecting = true;
        events = GALE_WRITE;
    } else {
        x->connect_status = -errno;
    }
    int rc = gale_loop_add_handler(loop, fd, events, on_events, s);
    if (rc < 0) {
        free_stream(s);
        close(fd);
        return rc;
    }
    s->events = events;
    if (!s->connecting) {
        s->connect_pending = true;
        schedule(s);
    }
    *out = s;
    return 0;
}

static int read_check(gale_stream *s, const void *cb)
{
    if (!s || !cb)
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    if (s->read_kind != RK_NONE)
        return -EBUSY;
    return 0;
}

/* A read was set up: deliver from the buffer on the loop's next turn (or, inside a read callback,
 * when it returns), else wait for the socket. */
static void read_armed(gale_stream *s, bool ready)
{
    if (s->delivering)
        return;
    if (ready || gale_buffer_len(&s->rbuf) > 0 || s->peer_eof ||
        (s->tls && gale__tls_pending(s->tls)))
        schedule(s);
    update_events(s);
}

int gale_stream_read_until(gale_stream *s, const void *delim_, size_t dlen, size_t max_bytes,
                           gale_read_cb cb, void *arg)
{
    int rc = read_check(s, (const void *)cb);
    if (rc < 0)
        return rc;
    if (!delim_ || dlen == 0)
        return -EINVAL;
    if (dlen > DELIM_INLINE) {
        char *h = malloc(dlen);
        if (!h)
            return -ENOMEM;
        memcpy(h, delim_, dlen);
        s->key.heap = h;
    } else {
        memcpy(s->key.inl, delim_, dlen);
    }
    s->klen = dlen;
    s->read_kind = RK_UNTIL;
    s->n = max_bytes;
    s->rcb.read = cb;
    s->rarg = arg;
    gale_buffer_reset_scan(&s->rbuf); /* the key storage may hold a new delimiter */
    read_armed(s, false);
    return 0;
}

int gale_stream_read_until_regex(gale_stream *s, const char *pattern, size_t max_bytes,
                                 gale_read_cb cb, void *arg)
{
    int rc = read_check(s, (const void *)cb);
    if (rc < 0)
        return rc;
    if (!pattern)
        return -EINVAL;
    regex_t *re = malloc(sizeof *re);
    if (!re)
        return -ENOMEM;
    rc = regcomp(re, pattern, REG_EXTENDED);
    if (rc != 0) {
        char msg[128];
        regerror(rc, re, msg, sizeof msg);
        gale_log_warning(GALE_LOG_GENERAL, "read_until_regex: bad pattern \"%s\": %s", pattern,
                         msg);
        free(re);
        return rc == REG_ESPACE ? -ENOMEM : -EINVAL;
    }
    s->key.re = re;
    s->read_kind = RK_REGEX;
    s->n = max_bytes;
    s->rscan = SIZE_MAX;
    s->rcb.read = cb;
    s->rarg = arg;
    read_armed(s, false);
    return 0;
}

int gale_stream_read_bytes(gale_stream *s, size_t n, bool partial, gale_read_cb cb, void *arg)
{
    int rc = read_check(s, (const void *)cb);
    if (rc < 0)
        return rc;
    s->read_kind = RK_BYTES;
    s->n = n;
    s->partial = partial;
    s->rcb.read = cb;
    s->rarg = arg;
    read_armed(s, n == 0);
    return 0;
}

int gale_stream_read_until_close(gale_stream *s, gale_read_cb cb, void *arg)
{
    int rc = read_check(s, (const void *)cb);
    if (rc < 0)
        return rc;
    s->read_kind = RK_CLOSE;
    s->rcb.read = cb;
    s->rarg = arg;
    read_armed(s, false);
    return 0;
}

int gale_stream_read_stream(gale_stream *s, size_t n, gale_read_cb chunk_cb, gale_read_cb done_cb,
                            void *arg)
{
    int rc = read_check(s, (const void *)chunk_cb);
    if (rc < 0)
        return rc;
    if (!done_cb)
        return -EINVAL;
    s->read_kind = RK_STREAM;
    s->n = n;
    s->rcb.read = chunk_cb;
    s->done_cb = done_cb;
    s->rarg = arg;
    read_armed(s, n == 0);
    return 0;
}

int gale_stream_read_some(gale_stream *s, gale_consume_cb cb, void *arg)
{
    int rc = read_check(s, (const void *)cb);
    if (rc < 0)
        return rc;
    s->read_kind = RK_SOME;
    s->rcb.consume = cb;
    s->rarg = arg;
    if (s->delivering)
        return 0;
    if (gale_buffer_len(&s->rbuf) > s->some_wait || s->peer_eof)
        schedule(s);
    update_events(s);
    return 0;
}

int gale_stream_write(gale_stream *s, const void *data, size_t len, gale_done_cb cb, void *arg)
{
    if (!s || (len && !data))
        return -EINVAL;
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    return do_write(s, &iov, 1, true, NULL, NULL, cb, arg);
}

int gale_stream_writev(gale_stream *s, const struct iovec *iov, int iovcnt, gale_done_cb cb,
                       void *arg)
{
    if (!s || iovcnt < 0 || (iovcnt > 0 && !iov))
        return -EINVAL;
    return do_write(s, iov, iovcnt, true, NULL, NULL, cb, arg);
}

int gale_stream_write_ref(gale_stream *s, const void *buf, size_t len, void (*release)(void *),
                          void *p, gale_done_cb cb, void *arg)
{
    if (!s || (len && !buf)) {
        if (release)
            release(p);
        return -EINVAL;
    }
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return do_write(s, &iov, 1, false, release, p, cb, arg);
}

size_t gale_stream_write_pending(const gale_stream *s) { return s ? s->wpending : 0; }

int gale_stream_sendfile(gale_stream *s, int fd, off_t offset, size_t len, gale_done_cb cb,
                         void *arg)
{
    if (!s || fd < 0 || offset < 0)
        return -EINVAL;
    if (s->closed)
        return -EPIPE;
    struct wreq *w = gale__fault_alloc() ? NULL : calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    *w = (struct wreq){.len = len,
                       .file_fd = fd,
                       .file_off = offset,
                       .cb = cb,
                       .arg = arg,
                       .release = gale__stream_file_range};
    if (len == 0 && !s->wq_head) {
        push_done(s, w);
        schedule(s);
        return 0;
    }
    *s->wq_tail = w;
    s->wq_tail = &w->next;
    s->wpending += len;
    if (s->wq_head == w && !s->connecting && !s->connect_pending && !s->handshaking) {
        flush_queue(s); /* an idle socket takes what it can now, as a write would */
        if (s->done_head)
            schedule(s);
    }
    update_events(s);
    return 0;
}

void gale_stream_set_close_cb(gale_stream *s, gale_done_cb cb, void *arg)
{
    if (!s || s->finished)
        return;
    s->close_cb = cb;
    s->close_arg = arg;
}

void gale_stream_close(gale_stream *s, int reason)
{
    if (!s)
        return;
    close_internal(s, reason > 0 ? -reason : reason);
}

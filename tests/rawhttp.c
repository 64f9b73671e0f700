#include "rawhttp.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "testutil.h"

/* ---- parsing bytes ---- */

/* Index of the first CRLF in buf[from..len), or -1. */
static ssize_t find_crlf(const char *buf, size_t len, size_t from)
{
    if (len < from + 2)
        return -1;
    const char *p = memmem(buf + from, len - from, "\r\n", 2);
    return p ? p - buf : -1;
}

/* Splits the line "name: value" (NUL-terminated, in writable storage) into `h`. */
static bool split_header(char *line, struct test_http_header *h)
{
    char *colon = strchr(line, ':');
    if (!colon || colon == line)
        return false;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    h->name = line;
    h->value = v;
    return true;
}

/* "HTTP/1.<digit> <3 digits>[ reason]" */
static bool parse_status_line(const char *line, struct test_http_response *r)
{
    if (strncmp(line, "HTTP/1.", 7) != 0 || line[7] < '0' || line[7] > '9' || line[8] != ' ')
        return false;
    const char *s = line + 9;
    for (int i = 0; i < 3; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    if (s[3] != '\0' && s[3] != ' ')
        return false;
    r->minor = line[7] - '0';
    r->status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    s += 3;
    while (*s == ' ' || *s == '\t')
        s++;
    snprintf(r->reason, sizeof r->reason, "%s", s);
    return true;
}

ssize_t test_http_parse_head(const char *buf, size_t len, struct test_http_response *r)
{
    memset(r, 0, sizeof *r);
    const char *end = len >= 4 ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
    if (!end)
        return 0;
    size_t head_len = (size_t)(end - buf) + 4;
    r->head = strndup(buf, head_len);
    r->store = strndup(buf, head_len);
    if (!r->head || !r->store) {
        test_http_response_free(r);
        return -ENOMEM;
    }
    r->head_len = head_len;
    /* A NUL byte in the head ends the copy early: no line end is found, and that is an error. */
    char *line = r->store, *eol = strstr(line, "\r\n");
    if (!eol)
        goto bad;
    *eol = '\0';
    if (!parse_status_line(line, r))
        goto bad;
    for (line = eol + 2; strncmp(line, "\r\n", 2) != 0; line = eol + 2) {
        eol = strstr(line, "\r\n");
        if (!eol)
            goto bad;
        *eol = '\0';
        if (r->nheaders == TEST_HTTP_MAX_HEADERS || !split_header(line, &r->headers[r->nheaders]))
            goto bad;
        r->nheaders++;
    }
    return (ssize_t)head_len;
bad:
    test_http_response_free(r);
    return -EPROTO;
}

/* Whether the last coding named in Transfer-Encoding is chunked. */
static bool is_chunked(const char *te)
{
    const char *last = strrchr(te, ',');
    last = last ? last + 1 : te;
    while (*last == ' ' || *last == '\t')
        last++;
    size_t n = strcspn(last, " \t");
    return n == 7 && strncasecmp(last, "chunked", 7) == 0 && last[n + strspn(last + n, " \t")] == 0;
}

/* The size on a chunk line buf[from..eol): hex digits, then optional whitespace, then nothing or
 * ";extensions". -1 if it is not one. */
static int64_t chunk_size(const char *buf, size_t from, size_t eol)
{
    int64_t size = 0;
    size_t i = from;
    for (; i < eol; i++) {
        int c = buf[i], d = c >= '0' && c <= '9'   ? c - '0'
                            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                   : -1;
        if (d < 0)
            break;
        if (size > (INT64_MAX >> 4))
            return -1;
        size = size * 16 + d;
    }
    if (i == from)
        return -1;
    while (i < eol && (buf[i] == ' ' || buf[i] == '\t'))
        i++;
    return i == eol || buf[i] == ';' ? size : -1;
}

/* Walks the chunked body at buf[p..len) without copying: the end of its last trailer line's
 * CRLF CRLF into *end, the chunk count and data bytes. Returns 1 complete, 0 not yet, -EPROTO. */
static int walk_chunks(const char *buf, size_t len, size_t p, size_t *end, int *nchunks,
                       size_t *total, size_t *trailers_off)
{
    *nchunks = 0;
    *total = 0;
    for (;;) {
        ssize_t eol = find_crlf(buf, len, p);
        if (eol < 0)
            return 0;
        int64_t size = chunk_size(buf, p, (size_t)eol);
        if (size < 0)
            return -EPROTO;
        p = (size_t)eol + 2;
        if (size == 0)
            break;
        if ((uint64_t)size > len || p + (size_t)size + 2 > len)
            return 0;
        if (memcmp(buf + p + size, "\r\n", 2) != 0)
            return -EPROTO;
        p += (size_t)size + 2;
        (*nchunks)++;
        *total += (size_t)size;
    }
    *trailers_off = p;
    for (;;) {
        ssize_t eol = find_crlf(buf, len, p);
        if (eol < 0)
            return 0;
        if ((size_t)eol == p) {
            *end = p + 2;
            return 1;
        }
        if (!memchr(buf + p, ':', (size_t)eol - p))
            return -EPROTO;
        p = (size_t)eol + 2;
    }
}

static int copy_chunks(const char *buf, size_t p, int nchunks, size_t total, size_t trailers_off,
                       size_t end, struct test_http_response *r)
{
    r->body = malloc(total + 1);
    r->chunk_lens = malloc(sizeof *r->chunk_lens * (size_t)(nchunks ? nchunks : 1));
    r->trailer_store = strndup(buf + trailers_off, end - trailers_off);
    if (!r->body || !r->chunk_lens || !r->trailer_store)
        return -ENOMEM;
    for (int i = 0; i < nchunks; i++) {
        size_t eol = (size_t)find_crlf(buf, end, p);
        size_t size = (size_t)chunk_size(buf, p, eol);
        memcpy(r->body + r->body_len, buf + eol + 2, size);
        r->body_len += size;
        r->chunk_lens[r->nchunks++] = size;
        p = eol + 2 + size + 2;
    }
    r->body[r->body_len] = '\0';
    char *line = r->trailer_store, *eol;
    while ((eol = strstr(line, "\r\n")) != NULL && eol != line) {
        *eol = '\0';
        if (r->ntrailers == TEST_HTTP_MAX_TRAILERS ||
            !split_header(line, &r->trailers[r->ntrailers]))
            return -EPROTO;
        r->ntrailers++;
        line = eol + 2;
    }
    return 0;
}

static int copy_body(const char *buf, size_t n, struct test_http_response *r)
{
    r->body = malloc(n + 1);
    if (!r->body)
        return -ENOMEM;
    memcpy(r->body, buf, n);
    r->body[n] = '\0';
    r->body_len = n;
    return 0;
}

/* Content-Length: decimal digits only. -1 if not. */
static int64_t content_length(const char *v)
{
    int64_t n = 0;
    const char *p = v;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (INT64_MAX - 9) / 10)
            return -1;
        n = n * 10 + (*p - '0');
    }
    while (*p == ' ' || *p == '\t')
        p++;
    return p == v || *p ? -1 : n;
}

ssize_t test_http_parse(const char *buf, size_t len, bool eof, bool head,
                        struct test_http_response *r)
{
    ssize_t h = test_http_parse_head(buf, len, r);
    if (h <= 0)
        return h == 0 && eof ? -EPIPE : h;
    size_t p = (size_t)h, end;
    r->body_off = p;
    int rc = 0;
    const char *te = test_http_header(r, "Transfer-Encoding");
    const char *cl = test_http_header(r, "Content-Length");
    if (head || r->status / 100 == 1 || r->status == 204 || r->status == 304) {
        end = p;
        rc = copy_body(buf, 0, r);
    } else if (te && is_chunked(te)) {
        r->chunked = true;
        int nchunks;
        size_t total, trailers_off;
        rc = walk_chunks(buf, len, p, &end, &nchunks, &total, &trailers_off);
        if (rc == 1)
            rc = copy_chunks(buf, p, nchunks, total, trailers_off, end, r);
        else if (rc == 0)
            rc = eof ? -EPIPE : 1;
    } else if (cl) {
        int64_t n = content_length(cl);
        if (n < 0)
            rc = -EPROTO;
        else if ((uint64_t)n > len - p)
            rc = eof ? -EPIPE : 1;
        else {
            end = p + (size_t)n;
            rc = copy_body(buf + p, (size_t)n, r);
        }
    } else if (eof) {
        end = len;
        rc = copy_body(buf + p, len - p, r);
    } else {
        rc = 1; /* delimited by the connection's end, which has not come */
    }
    if (rc != 0) {
        test_http_response_free(r);
        return rc == 1 ? 0 : rc;
    }
    r->wire_len = end;
    return (ssize_t)end;
}

const char *test_http_header(const struct test_http_response *r, const char *name)
{
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

int test_http_header_count(const struct test_http_response *r, const char *name)
{
    int n = 0;
    for (int i = 0; i < r->nheaders; i++)
        n += strcasecmp(r->headers[i].name, name) == 0;
    return n;
}

bool test_http_header_is(const struct test_http_response *r, const char *name, const char *value)
{
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0 && strcmp(r->headers[i].value, value) == 0)
            return true;
    return false;
}

void test_http_response_free(struct test_http_response *r)
{
    free(r->head);
    free(r->store);
    free(r->body);
    free(r->chunk_lens);
    free(r->trailer_store);
    memset(r, 0, sizeof *r);
}

/* ---- a blocking client ---- */

static int opened(struct test_http_client *c, int fd, double timeout)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
    if (fd < 0)
        return -ECONNREFUSED;
    test_set_timeouts(fd, timeout);
    return 0;
}

int test_http_open(struct test_http_client *c, int port, double timeout)
{
    int fd = test_connect_tcp(port);
    int err = errno;
    int rc = opened(c, fd, timeout);
    return fd < 0 && err ? -err : rc;
}

int test_http_open_unix(struct test_http_client *c, const char *path, double timeout)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        err = errno;
        close(fd);
        fd = -1;
    }
    int rc = opened(c, fd, timeout);
    return fd < 0 && err ? -err : rc;
}

void test_http_close(struct test_http_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

int test_http_send(struct test_http_client *c, const void *data, size_t len)
{
    return test_write_all(c->fd, data, len);
}

int test_http_sends(struct test_http_client *c, const char *s)
{
    return test_http_send(c, s, strlen(s));
}

int test_http_send_bytewise(struct test_http_client *c, const void *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int rc = test_write_all(c->fd, (const char *)data + i, 1);
        if (rc)
            return rc;
    }
    return 0;
}

int test_http_send_split(struct test_http_client *c, const void *data, size_t len, size_t cut,
                         bool in_process)
{
    int rc = test_http_send(c, data, cut);
    if (rc)
        return rc;
    if (in_process && !test_wait_peer_read(c->fd, 10))
        return -ETIMEDOUT;
    return test_http_send(c, (const char *)data + cut, len - cut);
}

ssize_t test_http_fill(struct test_http_client *c)
{
    if (c->cap - c->len < 65536) {
        size_t cap = c->cap ? c->cap * 2 : 131072;
        char *nb = realloc(c->buf, cap + 1);
        if (!nb)
            return -ENOMEM;
        c->buf = nb;
        c->cap = cap;
    }
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        c->len += (size_t)r;
        c->buf[c->len] = '\0';
        c->eof = r == 0;
        return r;
    }
}

static void consume(struct test_http_client *c, size_t n)
{
    if (!c->buf)
        return;
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->buf[c->len] = '\0';
}

int test_http_read(struct test_http_client *c, bool head, struct test_http_response *r)
{
    for (;;) {
        ssize_t n = test_http_parse(c->buf, c->len, c->eof, head, r);
        if (n > 0) {
            consume(c, (size_t)n);
            return 0;
        }
        if (n < 0)
            return (int)n;
        ssize_t f = test_http_fill(c);
        if (f < 0) {
            /* An error or timeout ends a body delimited by the connection's end all the same. */
            n = test_http_parse(c->buf, c->len, true, head, r);
            if (n > 0) {
                consume(c, (size_t)n);
                return 0;
            }
            return (int)f;
        }
    }
}

int test_http_read_all(struct test_http_client *c, size_t max)
{
    while (c->len < max) {
        ssize_t f = test_http_fill(c);
        if (f == 0 || f == -ECONNRESET)
            return 0;
        if (f < 0)
            return (int)f;
    }
    return -EMSGSIZE;
}

int test_http_expect_closed(struct test_http_client *c, double seconds)
{
    test_set_timeouts(c->fd, seconds);
    ssize_t f;
    while ((f = test_http_fill(c)) > 0)
        consume(c, c->len);
    consume(c, c->len);
    return f == 0 || f == -ECONNRESET ? 0 : (int)f;
}

bool test_http_idle(struct test_http_client *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return c->len == 0 && poll(&p, 1, 0) == 0;
}

int test_http_exchange(int port, const void *raw, size_t len, bool head,
                       struct test_http_response *r)
{
    struct test_http_client c;
    memset(r, 0, sizeof *r);
    int rc = test_http_open(&c, port, 10);
    if (rc == 0)
        rc = test_http_send(&c, raw, len);
    if (rc == 0)
        rc = test_http_read(&c, head, r);
    test_http_close(&c);
    return rc;
}

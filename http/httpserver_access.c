/* The access log: one line per request, "200 GET /path (127.0.0.1) 0.21ms", formatted by hand
 * and handed to the logger preformatted (no printf pass): this runs once per request. Requests
 * refused before they reached the handler get "400 GET /path (127.0.0.1): why" instead.
 *
 * The duration runs from the arrival of the request's last bytes (start_time) until its response
 * is handed to the stream. A request answered while its batch of input is being processed is
 * written with the batch's one write at the end of the batch, so that is when it is done: its
 * line waits in a per-thread list until then, and one clock read serves every line of the batch
 * (a pipelining client sends 16 and more per batch). Lines are never held across loop
 * iterations, and any other access line is written after the waiting ones.
 */
#include "http/server_internal.h"

#include <stdalign.h>
#include <string.h>

#include "core/log.h"
#include "core/log_internal.h"

#define ACCESS_HEAD_MAX 1000 /* "200 METHOD uri (ip": longer uris are cut */
#define ACCESS_TAIL_MAX 40   /* ") 12345.67ms" */

struct access_entry {
    double start;
    uint32_t len; /* head bytes that follow the entry */
    int level;
};

static _Thread_local struct {
    size_t used;
    alignas(struct access_entry) char buf[16384];
} tls_access;

bool gale__access_pending(void) { return tls_access.used != 0; }

static gale_log_level access_level(int status)
{
    return status < 400 ? GALE_LOG_INFO : status < 500 ? GALE_LOG_WARNING : GALE_LOG_ERROR;
}

/* Writes "200 GET /path (127.0.0.1" to `out` (ACCESS_HEAD_MAX bytes); returns its length. */
static size_t access_head(const struct req *r, char *out)
{
    char *p = out;
    if (r->status == 200)
        p = PUT_LIT(p, "200 ");
    else
        p = put_status(p, r->status), *p++ = ' ';
    /* Method names are a few letters (copied in place); the uri's length is known, and so is
     * the peer's unless xheaders replaced it. The uri is cut to keep the line bounded. */
    if (r->get) {
        p = PUT_LIT(p, "GET ");
    } else {
        for (const char *m = r->pub.method; *m && p < out + 32; m++)
            *p++ = *m;
        *p++ = ' ';
    }
    size_t n = r->url_len < ACCESS_HEAD_MAX - 120 ? r->url_len : ACCESS_HEAD_MAX - 120;
    p = put_str(p, r->pub.uri, n);
    *p++ = ' ';
    *p++ = '(';
    const char *ip = r->pub.remote_ip;
    n = ip == conn_ip(r->conn) ? r->conn->ip_len : strnlen(ip, 64);
    p = put_str(p, ip, n);
    return (size_t)(p - out);
}

/* Appends ") 0.21ms" for `secs` at `p`; returns the end. */
static char *access_tail(char *p, double secs)
{
    double ms = secs * 1000.0;
    unsigned long long hundredths = ms > 0 ? (unsigned long long)(ms * 100.0 + 0.5) : 0;
    p = PUT_LIT(p, ") ");
    p = put_uint(p, hundredths / 100);
    *p++ = '.';
    *p++ = (char)('0' + hundredths / 10 % 10);
    *p++ = (char)('0' + hundredths % 10);
    return PUT_LIT(p, "ms");
}

/* Writes the waiting lines, each ending at `now`. */
void gale__access_flush(double now)
{
    size_t used = tls_access.used;
    tls_access.used = 0;
    /* The lines of one batch share their start, so their tail is formatted once, and mostly
     * their level, so the line prefix is looked up once per run of one level. */
    double tail_start = -1;
    char tail[ACCESS_TAIL_MAX];
    size_t tail_len = 0;
    int level = -1;
    const char *pfx = NULL;
    size_t plen = 0;
    for (size_t off = 0; off < used;) {
        struct access_entry e;
        memcpy(&e, tls_access.buf + off, sizeof e);
        const char *head = tls_access.buf + off + sizeof e;
        if (e.start != tail_start) {
            tail_start = e.start;
            tail_len = (size_t)(access_tail(tail, now - e.start) - tail);
        }
        if (e.level != level) {
            level = e.level;
            plen = gale__log_prefix((gale_log_level)level, GALE_LOG_ACCESS, &pfx);
        }
        /* (readable for 32 bytes and more: an entry was added with ACCESS_HEAD_MAX bytes of
         * room, and `tail` holds ACCESS_TAIL_MAX) */
        gale__log_append((gale_log_level)level, pfx, plen, head, e.len, tail, tail_len);
        off += sizeof e + ALIGN16(e.len);
    }
}

void gale__access_log(struct req *r, double now)
{
    gale_log_level lvl = access_level(r->status);
    if (!gale_log_enabled(lvl))
        return;
    struct gale_http_conn *c = r->conn;
    if (c->in_batch) {
        size_t room = sizeof(struct access_entry) + ACCESS_HEAD_MAX;
        if (tls_access.used + room > sizeof tls_access.buf)
            gale__access_flush(gale_loop_time(c->loop));
        char *at = tls_access.buf + tls_access.used;
        struct access_entry e = {r->pub.start_time, 0, (int)lvl};
        e.len = (uint32_t)access_head(r, at + sizeof e);
        memcpy(at, &e, sizeof e);
        tls_access.used += sizeof e + ALIGN16(e.len);
        return;
    }
    if (gale__access_pending())
        gale__access_flush(now);
    char line[ACCESS_HEAD_MAX + ACCESS_TAIL_MAX];
    char *end = access_tail(line + access_head(r, line), now - r->pub.start_time);
    gale_log_write(lvl, GALE_LOG_ACCESS, line, (size_t)(end - line));
}

void gale__access_refused(struct gale_http_conn *c, int status, const char *why)
{
    if (gale__access_pending()) /* lines of requests answered earlier in this batch come first */
        gale__access_flush(gale_loop_time(c->loop));
    if (!c->srv || c->srv->opts.no_access_log)
        return;
    const struct req *r = c->req;
    const char *method = r && r->pub.method ? r->pub.method : "-";
    const char *uri = r && r->pub.uri ? r->pub.uri : "-";
    gale_log(status >= 500 ? GALE_LOG_ERROR : GALE_LOG_WARNING, GALE_LOG_ACCESS,
             "%d %s %s (%s): %s", status, method, uri, conn_ip(c), why);
}

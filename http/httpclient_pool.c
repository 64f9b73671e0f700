/* The HTTP client's keep-alive pool: idle connections per (scheme, host, port), most recently
 * used last, each for at most idle_timeout (one sweeping timer for the pool), at most
 * max_per_host per key, and the connections parking between the end of their response and the
 * pool (see httpclient_internal.h). A connection in the pool has no fetch, no read pending and
 * nothing buffered; its stream keeps watching for the server's close, and its close callback
 * (httpclient.c's, through gale__pool_forget) takes it out. gale__pool_take checks a connection
 * again right before reuse, since the server's FIN may be in flight while the loop has not yet
 * looked: a closed stream, unsolicited bytes, or a socket that reads EOF (or data) without
 * consuming are all stale and closed here. The peek (a system call) is skipped for a connection
 * pooled under a millisecond ago, the common case of a busy client handing a connection straight
 * to its next request: a close racing that request is as likely either way, and is what the
 * single retry of httpclient.c is for (only requests that may be sent twice take pooled
 * connections). */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"
#include "http/httpclient_internal.h"

/* Idle for less than this, a connection is reused without peeking at its socket. */
#define FRESH_IDLE 0.001

void gale__conn_set_state(struct gale__conn *cn, enum gale__conn_state to)
{
    enum gale__conn_state from = cn->state;
    (void)from;
    assert((from == GALE__CONN_CONNECTING && to == GALE__CONN_BUSY) ||
           (from == GALE__CONN_BUSY && (to == GALE__CONN_PARKING || to == GALE__CONN_CLOSING)) ||
           (from == GALE__CONN_PARKING && (to == GALE__CONN_IDLE || to == GALE__CONN_CLOSING)) ||
           (from == GALE__CONN_IDLE && (to == GALE__CONN_BUSY || to == GALE__CONN_CLOSING)) ||
           (from == GALE__CONN_CLOSING && to == GALE__CONN_CLOSING));
    cn->state = to;
}

void gale__pool_init(struct gale__pool *p, gale_loop *loop, int max_per_host, double idle_timeout)
{
    memset(p, 0, sizeof *p);
    p->loop = loop;
    gale_list_init(&p->idle);
    gale_list_init(&p->parking);
    p->max_per_host = max_per_host;
    p->idle_timeout = idle_timeout;
}

/* Takes an IDLE conn out of the pool; the caller sets its next phase. */
static void unlink_idle(struct gale__conn *cn)
{
    assert(cn->state == GALE__CONN_IDLE && cn->pool);
    gale_list_unlink(&cn->node);
    gale_list_init(&cn->node);
    cn->pool->n_idle--;
    cn->pool = NULL;
}

/* Once no connection is left idle the sweeping timer goes too, so a client whose connections
 * all closed holds no timer. (A take that empties the pool leaves it: the connection usually
 * comes back at once, and a timer that finds nothing simply is not set again.) */
static void disarm_if_empty(struct gale__pool *p)
{
    if (p->sweep_timer && gale_list_empty(&p->idle)) {
        gale_loop_remove_timeout(p->loop, p->sweep_timer);
        p->sweep_timer = 0;
    }
}

static void close_idle(struct gale__conn *cn)
{
    struct gale__pool *p = cn->pool;
    unlink_idle(cn);
    disarm_if_empty(p);
    gale__conn_set_state(cn, GALE__CONN_CLOSING);
    gale_stream_close(cn->s, 0);
}

/* A pooled connection watches for bytes: a server that sends what no request asked for (or
 * more than the response said) before closing would otherwise leave the stream holding them,
 * open after the FIN for a reader that never comes, until the idle timeout. Such a connection
 * is stale and closes at once. (On close this runs with the reason; the stream's close callback
 * takes the connection out.) */
static size_t idle_bytes(gale_stream *s, int status, const char *data, size_t n, void *arg)
{
    (void)s;
    (void)data;
    struct gale__conn *cn = arg;
    if (status == 0 && cn->state == GALE__CONN_IDLE && cn->pool) {
        gale_log_debug(GALE_LOG_GENERAL, "pooled connection to %s got unsolicited bytes, closed",
                       cn->key);
        close_idle(cn);
    }
    return n;
}

/* Idle expiry: one timer per pool, not one per connection (a busy client would otherwise add
 * and remove a timer per request). The idle list is in pooling order, so its head expires
 * first; the timer is set for the head's deadline and, when it fires, closes what expired and
 * sets itself for the next. A head taken meanwhile only makes it fire early. */
static void sweep(gale_loop *loop, void *arg);

static void arm_sweep(struct gale__pool *p)
{
    if (p->sweep_timer || gale_list_empty(&p->idle))
        return;
    const struct gale__conn *head = gale_list_entry(p->idle.next, struct gale__conn, node);
    if (gale_loop_call_at(p->loop, head->idle_since + p->idle_timeout, sweep, p, &p->sweep_timer) !=
        0)
        p->sweep_timer = 0; /* out of memory: the next pooling tries again */
}

static void sweep(gale_loop *loop, void *arg)
{
    struct gale__pool *p = arg;
    p->sweep_timer = 0;
    double now = gale_loop_time(loop);
    while (!gale_list_empty(&p->idle)) {
        struct gale__conn *cn = gale_list_entry(p->idle.next, struct gale__conn, node);
        if (cn->idle_since + p->idle_timeout > now)
            break;
        gale_log_debug(GALE_LOG_GENERAL, "pooled connection to %s idle too long, closed", cn->key);
        close_idle(cn);
    }
    arm_sweep(p);
}

/* True when the socket shows nothing: no EOF, no error, no bytes. A peek neither consumes nor
 * blocks; it sees a FIN the loop has not dispatched yet. It calls recv() itself, not the fault
 * seam's wrapper: an injected EAGAIN would hide the very bytes or EOF it looks for, and it
 * consumes nothing the stream's own reads (which are fault-tested) would miss. */
static bool socket_quiet(const struct gale__conn *cn)
{
    int fd = gale_stream_fd(cn->s);
    if (fd < 0)
        return false;
    char b;
    ssize_t n;
    do
        n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

struct gale__conn *gale__pool_take(struct gale__pool *p, const char *key)
{
    gale_list *it = p->idle.prev;
    while (it != &p->idle) {
        struct gale__conn *cn = gale_list_entry(it, struct gale__conn, node);
        it = it->prev;
        if (strcmp(cn->key, key) != 0)
            continue;
        bool fresh = gale_loop_time(p->loop) - cn->idle_since < FRESH_IDLE;
        if (gale_stream_closed(cn->s) || gale_stream_read_buffered(cn->s) > 0 ||
            (!fresh && !socket_quiet(cn))) {
            gale_log_debug(GALE_LOG_GENERAL, "pooled connection to %s is stale, closed", key);
            close_idle(cn);
            continue;
        }
        unlink_idle(cn);
        (void)gale_stream_cancel_read_some(cn->s, idle_bytes);
        gale__conn_set_state(cn, GALE__CONN_BUSY);
        return cn;
    }
    return NULL;
}

int gale__pool_park(struct gale__pool *p, struct gale__conn *cn, gale_cb cb)
{
    assert(cn->state == GALE__CONN_BUSY && !cn->f && cn->s);
    int rc = gale_loop_add_callback(p->loop, cb, cn);
    if (rc)
        return rc;
    gale__conn_set_state(cn, GALE__CONN_PARKING);
    cn->pool = p;
    gale_list_push_back(&p->parking, &cn->node);
    return 0;
}

struct gale__pool *gale__pool_unpark(struct gale__conn *cn)
{
    assert(cn->state == GALE__CONN_PARKING || cn->state == GALE__CONN_CLOSING);
    struct gale__pool *p = cn->pool;
    if (p) {
        gale_list_unlink(&cn->node);
        gale_list_init(&cn->node);
        cn->pool = NULL;
    }
    return p;
}

bool gale__pool_put(struct gale__pool *p, struct gale__conn *cn)
{
    assert(cn->state == GALE__CONN_PARKING && !cn->f && cn->s && !cn->pool);
    if (p->max_per_host <= 0)
        return false;
    /* At the cap, the oldest idle connection of this key makes room: the newest is the least
     * likely to have been closed by the server. */
    size_t same = 0;
    struct gale__conn *oldest = NULL;
    gale_list *it;
    for (it = p->idle.next; it != &p->idle; it = it->next) {
        struct gale__conn *o = gale_list_entry(it, struct gale__conn, node);
        if (strcmp(o->key, cn->key) == 0 && same++ == 0)
            oldest = o;
    }
    if (same >= (size_t)p->max_per_host && oldest)
        close_idle(oldest);
    gale__conn_set_state(cn, GALE__CONN_IDLE);
    cn->pool = p;
    cn->idle_since = gale_loop_time(p->loop);
    gale_list_push_back(&p->idle, &cn->node);
    p->n_idle++;
    arm_sweep(p);
    (void)gale_stream_read_some(cn->s, idle_bytes, cn); /* only fails on a closed stream */
    return true;
}

bool gale__pool_should_wait(const struct gale__pool *p, const char *key)
{
    if (gale_list_empty(&p->parking))
        return false;
    const gale_list *it;
    for (it = p->idle.next; it != &p->idle; it = it->next)
        if (!strcmp(gale_list_entry(it, struct gale__conn, node)->key, key))
            return false;
    for (it = p->parking.next; it != &p->parking; it = it->next)
        if (!strcmp(gale_list_entry(it, struct gale__conn, node)->key, key))
            return true;
    return false;
}

void gale__pool_forget(struct gale__conn *cn)
{
    struct gale__pool *p = cn->pool;
    if (cn->state == GALE__CONN_IDLE && p) {
        unlink_idle(cn);
        disarm_if_empty(p);
    }
}

void gale__pool_drain(struct gale__pool *p)
{
    if (p->sweep_timer) {
        gale_loop_remove_timeout(p->loop, p->sweep_timer);
        p->sweep_timer = 0;
    }
    while (!gale_list_empty(&p->idle))
        close_idle(gale_list_entry(p->idle.next, struct gale__conn, node));
    /* Parking conns stay PARKING (their callback, still due, frees them) but lose the pool. */
    while (!gale_list_empty(&p->parking)) {
        struct gale__conn *cn = gale_list_entry(p->parking.next, struct gale__conn, node);
        gale__pool_unpark(cn);
        if (cn->s)
            gale_stream_close(cn->s, 0);
    }
}

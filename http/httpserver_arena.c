/* Request blocks and the per-request arena.
 *
 * A request is one block (REQ_BLOCK bytes) holding its struct and the first part of an arena
 * from which its strings, header table, small bodies and the handler's state are taken; more
 * parts are chained when it fills. Nothing is freed piecemeal: the whole block goes when the
 * response finishes, so a keep-alive connection never grows (nginx's pools do). Finished blocks
 * are kept per thread for the next request.
 */
#include "http/httpserver_internal.h"
#include "http/server_internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define REQ_CACHE_MAX 32 /* request blocks kept per thread for reuse */

#ifndef GALE_SANITIZE /* the sanitizers see every block come and go */
static _Thread_local void *req_cache[REQ_CACHE_MAX];
static _Thread_local int req_cache_n;
#endif

#define REQ_HDR ALIGN16(sizeof(struct req))

struct req *gale__req_new(struct gale_http_conn *c)
{
    void *blk;
#ifdef GALE_SANITIZE
    blk = malloc(REQ_BLOCK);
#else
    blk = req_cache_n > 0 ? req_cache[--req_cache_n] : malloc(REQ_BLOCK);
#endif
    if (!blk)
        return NULL;
    struct req *r = blk;
    gale__zero(r, sizeof *r);
    r->conn = c;
    r->loop = c->loop;
    r->apos = (char *)blk + REQ_HDR;
    r->aleft = REQ_BLOCK - REQ_HDR;
    r->user_cl = -1;
    r->status = 200;
    r->pub.conn = c;
    r->pub.remote_ip = conn_ip(c);
    r->pub.protocol = c->tls ? "https" : "http";
    r->pub.query = "";
    r->pub.body = "";
    return r;
}

void gale__req_free(struct req *r)
{
    assert(r && !r->in_close_cb); /* a request in its close callback is freed after it */
    if (r->body_heap)
        free(r->body);
    if (r->w_heap)
        free(r->w);
    if (r->hstore_heap)
        free(r->hstore);
    for (struct arena_big *b = r->big, *n; b; b = n) {
        n = b->next;
        free(b);
    }
#ifdef GALE_SANITIZE
    free(r);
#else
    if (req_cache_n < REQ_CACHE_MAX)
        req_cache[req_cache_n++] = r;
    else
        free(r);
#endif
}

void *gale__arena_more(struct req *r, size_t size)
{
    size_t hdr = ALIGN16(sizeof(struct arena_big));
    bool own = size > REQ_BLOCK / 2;
    size_t bsize = own ? size : REQ_BLOCK;
    if (bsize > SIZE_MAX - hdr)
        return NULL;
    struct arena_big *b = malloc(hdr + bsize);
    if (!b)
        return NULL;
    b->next = r->big;
    r->big = b;
    char *p = (char *)b + hdr;
    if (!own) {
        r->apos = p + size;
        r->aleft = bsize - size;
    }
    return p;
}

int gale__grow_more(struct req *r, char **buf, size_t len, size_t *cap, bool *heap, size_t need,
                    size_t limit)
{
    size_t ncap = *cap ? *cap * 2 : 256;
    if (limit && ncap > limit)
        ncap = limit;
    if (ncap < need)
        ncap = need;
    char *p;
    if (*heap) {
        p = realloc(*buf, ncap);
        if (!p)
            return -ENOMEM;
    } else {
        if (ncap <= 1024 && ncap <= r->aleft)
            p = arena_raw(r, ncap);
        else {
            p = malloc(ncap);
            if (p)
                *heap = true;
        }
        if (!p)
            return -ENOMEM;
        if (len)
            memcpy(p, *buf, len);
    }
    *buf = p;
    *cap = ncap;
    return 0;
}

void *gale_http_request_alloc(gale_http_request *req, size_t size)
{
    if (!req)
        return NULL;
    void *p = arena_raw(req_of(req), size);
    if (p)
        memset(p, 0, size ? size : 1);
    return p;
}

void *gale__http_request_alloc_raw(gale_http_request *req, size_t size)
{
    return req ? arena_raw(req_of(req), size) : NULL;
}

char *gale_http_request_strdup(gale_http_request *req, const char *s, size_t len)
{
    if (!req || (!s && len))
        return NULL;
    return arena_strndup(req_of(req), s ? s : "", len);
}

gale_loop *gale_http_request_loop(const gale_http_request *req)
{
    return req ? req_of(req)->loop : NULL;
}

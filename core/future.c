/* Futures: a reference count, an outcome, and a list of done callbacks run once, in order.
 *
 * Completion takes the callback array out of the future before running it, so callbacks added
 * while it runs (the future is done by then) run at once instead, and a callback that removes
 * another finds nothing to remove: the order and the exactly-once promise never depend on what
 * the callbacks do. A reference is held across the run so a callback may drop the last user
 * reference safely.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/future.h"

struct done_cb {
    gale_future_cb cb;
    void *arg;
};

struct gale_future {
    size_t refs;
    gale_loop *loop;
    bool done;
    int err;
    char *msg;
    void *result;
    void (*dtor)(void *);
    void (*unlink)(void *); /* set_result_linked(): told when steal_result takes the result */
    gale_future *keep;      /* chain(): the source whose result this future shares */
    struct done_cb *cbs;
    size_t ncbs, capcbs;
};

gale_future *gale_future_new(gale_loop *loop)
{
    gale_future *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->refs = 1;
    f->loop = loop ? loop : gale_loop_current();
    return f;
}

gale_future *gale_future_ref(gale_future *f)
{
    if (f)
        f->refs++;
    return f;
}

/* Out of line so the compiler does not see free() at every unref site and warn about uses
 * that the reference count makes safe. */
__attribute__((noinline)) static void destroy(gale_future *f)
{
    if (f->dtor)
        f->dtor(f->result);
    gale_future_unref(f->keep);
    free(f->msg);
    free(f->cbs);
    free(f);
}

void gale_future_unref(gale_future *f)
{
    if (f && --f->refs == 0)
        destroy(f);
}

static void complete(gale_future *f)
{
    f->done = true;
    struct done_cb *cbs = f->cbs;
    size_t n = f->ncbs;
    f->cbs = NULL;
    f->ncbs = f->capcbs = 0;
    gale_future_ref(f);
    for (size_t i = 0; i < n; i++)
        cbs[i].cb(f, cbs[i].arg);
    free(cbs);
    gale_future_unref(f);
}

int gale_future_set_result(gale_future *f, void *result, void (*dtor)(void *))
{
    if (!f || f->done)
        return -EINVAL;
    f->result = result;
    f->dtor = dtor;
    complete(f);
    return 0;
}

int gale_future_set_result_linked(gale_future *f, void *result, void (*dtor)(void *),
                                  void (*unlink)(void *))
{
    if (!f || f->done)
        return -EINVAL;
    f->unlink = unlink;
    return gale_future_set_result(f, result, dtor);
}

int gale_future_set_error(gale_future *f, int code, const char *message)
{
    if (!f || f->done || code >= 0)
        return -EINVAL;
    const char *text = message ? message : gale_strerror(code);
    f->err = code;
    f->msg = strdup(text);
    int ret = f->msg ? 0 : -ENOMEM;
    complete(f);
    return ret;
}

bool gale_future_done(const gale_future *f) { return f && f->done; }

void *gale_future_result(const gale_future *f)
{
    return f && f->done && !f->err ? f->result : NULL;
}

int gale_future_error(const gale_future *f) { return f ? f->err : -EINVAL; }

const char *gale_future_error_message(const gale_future *f) { return f && f->err ? f->msg : NULL; }

void *gale_future_steal_result(gale_future *f)
{
    if (!f || !f->done || f->err)
        return NULL;
    void *r = f->result;
    void (*unlink)(void *) = f->unlink;
    f->result = NULL;
    f->dtor = NULL;
    f->unlink = NULL;
    if (unlink && r)
        unlink(r);
    return r;
}

gale_loop *gale_future_loop(const gale_future *f) { return f ? f->loop : NULL; }

int gale_future_add_done_callback(gale_future *f, gale_future_cb cb, void *arg)
{
    if (!f || !cb)
        return -EINVAL;
    if (f->done) {
        gale_future_ref(f);
        cb(f, arg);
        gale_future_unref(f);
        return 0;
    }
    if (f->ncbs == f->capcbs) {
        size_t cap = f->capcbs ? f->capcbs * 2 : 2;
        struct done_cb *c = realloc(f->cbs, cap * sizeof *c);
        if (!c)
            return -ENOMEM;
        f->cbs = c;
        f->capcbs = cap;
    }
    f->cbs[f->ncbs++] = (struct done_cb){cb, arg};
    return 0;
}

int gale_future_remove_done_callback(gale_future *f, gale_future_cb cb, void *arg)
{
    if (!f)
        return -EINVAL;
    for (size_t i = 0; i < f->ncbs; i++) {
        if (f->cbs[i].cb == cb && f->cbs[i].arg == arg) {
            memmove(&f->cbs[i], &f->cbs[i + 1], (f->ncbs - i - 1) * sizeof *f->cbs);
            f->ncbs--;
            return 0;
        }
    }
    return -ENOENT;
}

/* ---- chain ---- */

static void chain_done(gale_future *src, void *arg)
{
    gale_future *dst = arg;
    if (!dst->done) {
        if (src->err) {
            gale_future_set_error(dst, src->err, src->msg);
        } else {
            /* dst shares src's result and keeps src (and so the result) alive. */
            dst->keep = gale_future_ref(src);
            gale_future_set_result(dst, src->result, NULL);
        }
    }
    gale_future_unref(dst);
}

int gale_future_chain(gale_future *src, gale_future *dst)
{
    if (!src || !dst || src == dst)
        return -EINVAL;
    gale_future_ref(dst);
    int err = gale_future_add_done_callback(src, chain_done, dst);
    if (err)
        gale_future_unref(dst);
    return err;
}

/* ---- all ---- */

struct all_state {
    gale_future *out;
    size_t n, left;
    int setup_err; /* an input could not be watched: the output fails with this */
    gale_future *in[];
};

static void all_finish(struct all_state *s)
{
    int err = s->setup_err;
    const char *msg = err ? "gale_future_all: cannot watch every input" : NULL;
    for (size_t i = 0; i < s->n && !err; i++) {
        if (s->in[i]->err) {
            err = s->in[i]->err;
            msg = s->in[i]->msg;
        }
    }
    if (err)
        gale_future_set_error(s->out, err, msg);
    else
        gale_future_set_result(s->out, NULL, NULL);
    for (size_t i = 0; i < s->n; i++)
        gale_future_unref(s->in[i]);
    gale_future_unref(s->out);
    free(s);
}

static void all_done(gale_future *f, void *arg)
{
    struct all_state *s = arg;
    if (--s->left == 0)
        all_finish(s);
}

gale_future *gale_future_all(gale_loop *loop, gale_future *const *futures, size_t n)
{
    gale_future *out = gale_future_new(loop);
    if (!out)
        return NULL;
    if (n == 0 || !futures) {
        gale_future_set_result(out, NULL, NULL);
        return out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!futures[i]) {
            gale_future_set_error(out, -EINVAL, "gale_future_all: NULL input");
            return out;
        }
    }
    struct all_state *s = malloc(sizeof *s + n * sizeof s->in[0]);
    if (!s) {
        gale_future_unref(out);
        return NULL;
    }
    s->out = gale_future_ref(out);
    s->n = n;
    s->setup_err = 0;
    /* One extra count so inputs already done cannot finish the state while it is being set up. */
    s->left = n + 1;
    for (size_t i = 0; i < n; i++)
        s->in[i] = gale_future_ref(futures[i]);
    for (size_t i = 0; i < n; i++) {
        int err = gale_future_add_done_callback(s->in[i], all_done, s);
        if (err != 0) {
            /* Out of memory: this input would never be counted. Count it now and fail the
             * output once the others are done, rather than report a success it cannot know. */
            s->setup_err = err;
            s->left--;
        }
    }
    all_done(NULL, s);
    return out;
}

/* getaddrinfo on a small lazily started thread pool; results go back through the loop's
 * thread-safe add_callback. All shared state sits under one mutex; a request is on exactly one of
 * three lists (queued, running, done) until its loop delivers or cancels it. */
#include "net/resolver.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/errors.h"
#include "core/log.h"

struct req {
    struct req *prev, *next;
    struct req **list; /* which list it is on (NULL when off all lists) */
    gale_loop *loop;
    gale_resolve_cb cb;
    void *arg;
    gale_future *fut; /* future form: completed instead of calling cb */
    char *host;
    char service[8];
    int family;
    int status;
    int gai; /* getaddrinfo's code, for the message */
    struct addrinfo *res;
    bool cancelled; /* running when its loop was cancelled: the worker frees it */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct req *queued_head, *queued_tail; /* FIFO */
static struct req *running;
static struct req *done;
static pthread_t threads[GALE_RESOLVER_THREADS];
static int nthreads;
static bool stopping;
static bool hooks_installed;

static void list_push(struct req **head, struct req *r)
{
    r->prev = NULL;
    r->next = *head;
    if (*head)
        (*head)->prev = r;
    *head = r;
    r->list = head;
}

static void list_remove(struct req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else if (r->list)
        *r->list = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->list == &queued_head && queued_tail == r)
        queued_tail = r->prev;
    r->prev = r->next = NULL;
    r->list = NULL;
}

static void queue_push(struct req *r)
{
    r->next = NULL;
    r->prev = queued_tail;
    if (queued_tail)
        queued_tail->next = r;
    else
        queued_head = r;
    queued_tail = r;
    r->list = &queued_head;
}

static void req_free(struct req *r)
{
    if (r->res)
        freeaddrinfo(r->res);
    free(r->host);
    free(r);
}

int gale_resolver_gai_error(int eai)
{
    switch (eai) {
    case 0: return 0;
    case EAI_MEMORY: return -ENOMEM;
    case EAI_FAMILY: return -EAFNOSUPPORT;
    case EAI_SERVICE:
    case EAI_SOCKTYPE:
    case EAI_BADFLAGS: return -EINVAL;
    case EAI_OVERFLOW: return -EOVERFLOW;
    case EAI_SYSTEM: return errno > 0 ? -errno : GALE_ERESOLVE;
    default: /* EAI_NONAME, EAI_NODATA, EAI_ADDRFAMILY, EAI_AGAIN, EAI_FAIL */ return GALE_ERESOLVE;
    }
}

static void lookup(struct req *r, int extra_flags)
{
    struct addrinfo hints = {
        .ai_family = r->family, .ai_socktype = SOCK_STREAM, .ai_flags = extra_flags};
    errno = 0;
    r->gai = getaddrinfo(r->host, r->service, &hints, &r->res);
    r->status = gale_resolver_gai_error(r->gai);
    if (r->gai != 0)
        r->res = NULL;
    else if (!r->res)
        r->status = GALE_ERESOLVE;
}

static void freeaddrinfo_dtor(void *p) { freeaddrinfo(p); }

static void complete(gale_loop *loop, struct req *r)
{
    if (r->status != 0 && r->gai != 0)
        gale_log_debug(GALE_LOG_GENERAL, "resolve %s: %s", r->host, gai_strerror(r->gai));
    if (r->fut) {
        if (r->status == 0) {
            if (gale_future_set_result(r->fut, r->res, freeaddrinfo_dtor) == 0)
                r->res = NULL;
        } else {
            gale_future_set_error(r->fut, r->status,
                                  r->gai && r->gai != EAI_SYSTEM ? gai_strerror(r->gai) : NULL);
        }
        gale_future_unref(r->fut);
    } else {
        r->cb(r->status, r->res, r->arg);
    }
    req_free(r);
}

/* Runs on `loop`: completes every finished request of this loop. Extra wake-ups find nothing. */
static void deliver(gale_loop *loop, void *unused)
{
    struct req *mine = NULL;
    pthread_mutex_lock(&mu);
    for (struct req *r = done, *next; r; r = next) {
        next = r->next;
        if (r->loop != loop)
            continue;
        list_remove(r);
        r->next = mine; /* off all lists now: reuse next as a private link */
        mine = r;
    }
    pthread_mutex_unlock(&mu);
    /* Deliver in completion order: `done` is LIFO, `mine` reversed it back. */
    while (mine) {
        struct req *r = mine;
        mine = r->next;
        r->next = NULL;
        complete(loop, r);
    }
}

/* Caller holds mu. Posting under the lock means gale_resolver_cancel_loop() (which takes it) can
 * never see a loop pointer still about to be used. */
static int post_done(struct req *r)
{
    list_push(&done, r);
    int err = gale_loop_add_callback(r->loop, deliver, NULL);
    if (err)
        gale_log_error(GALE_LOG_GENERAL, "resolver: cannot wake loop: %s", gale_strerror(err));
    return err;
}

/* Caller (a worker) holds mu. The wake-up for `loop` could not be queued (out of memory): a
 * finished lookup must not wait for some other completion to be noticed, so retry every 10 ms
 * while any of that loop's results is still undelivered. The lock is dropped while sleeping,
 * and `loop` is only used under it (gale_resolver_cancel_loop takes it too). */
static void retry_wake(gale_loop *loop)
{
    for (;;) {
        bool waiting = false;
        for (struct req *d = done; d && !waiting; d = d->next)
            waiting = d->loop == loop;
        if (!waiting || stopping || gale_loop_add_callback(loop, deliver, NULL) == 0)
            return;
        pthread_mutex_unlock(&mu);
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
        pthread_mutex_lock(&mu);
    }
}

static void *worker(void *unused)
{
    pthread_mutex_lock(&mu);
    for (;;) {
        while (!queued_head && !stopping)
            pthread_cond_wait(&cond, &mu);
        if (stopping)
            break;
        struct req *r = queued_head;
        list_remove(r);
        list_push(&running, r);
        pthread_mutex_unlock(&mu);
        lookup(r, 0);
        pthread_mutex_lock(&mu);
        list_remove(r);
        if (r->cancelled) {
            req_free(r);
        } else {
            gale_loop *loop = r->loop;
            if (post_done(r) != 0)
                retry_wake(loop); /* r may be delivered meanwhile: not used again */
        }
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void stop_threads(bool at_exit)
{
    pthread_mutex_lock(&mu);
    if (nthreads == 0) {
        pthread_mutex_unlock(&mu);
        return;
    }
    stopping = true;
    while (queued_head) {
        struct req *r = queued_head;
        list_remove(r);
        if (at_exit) {
            req_free(r); /* loops may be gone at exit: nobody to report to */
        } else {
            r->status = -ECANCELED;
            r->gai = 0;
            post_done(r);
        }
    }
    pthread_cond_broadcast(&cond);
    int n = nthreads;
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < n; i++) {
        if (at_exit) {
            /* A worker stuck in a slow DNS query must not hold up process exit. */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            if (pthread_timedjoin_np(threads[i], NULL, &ts) != 0)
                pthread_detach(threads[i]);
        } else {
            pthread_join(threads[i], NULL);
        }
    }
    pthread_mutex_lock(&mu);
    nthreads = 0;
    stopping = false;
    pthread_mutex_unlock(&mu);
}

static void at_exit(void) { stop_threads(true); }

/* A forked child has none of the parent's threads and must not report to the parent's loops. */
static void after_fork_child(void)
{
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&cond, NULL);
    queued_head = queued_tail = running = done = NULL;
    nthreads = 0;
    stopping = false;
}

/* Caller holds mu. */
static int ensure_threads(void)
{
    if (!hooks_installed) {
        hooks_installed = true;
        atexit(at_exit);
        pthread_atfork(NULL, NULL, after_fork_child);
    }
    if (nthreads == GALE_RESOLVER_THREADS)
        return 0;
    /* Start one more worker while there is queued work beyond the idle ones (cheap heuristic:
     * grow to the cap as soon as requests queue up). Workers block every signal so that signals
     * meant for a loop (signalfd) are never delivered to them. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&threads[nthreads], NULL, worker, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err)
        return nthreads > 0 ? 0 : -err;
    nthreads++;
    return 0;
}

static int start(gale_loop *loop, const char *host, int port, int family, gale_resolve_cb cb,
                 void *arg, gale_future *fut)
{
    if (!loop || !host || !host[0] || port < 0 || port > 65535 ||
        (family != AF_UNSPEC && family != AF_INET && family != AF_INET6))
        return -EINVAL;
    struct req *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->host = strdup(host);
    if (!r->host) {
        free(r);
        return -ENOMEM;
    }
    r->loop = loop;
    r->cb = cb;
    r->arg = arg;
    r->fut = fut;
    r->family = family;
    snprintf(r->service, sizeof r->service, "%d", port);

    /* Numeric addresses need no thread. */
    lookup(r, AI_NUMERICHOST);
    pthread_mutex_lock(&mu);
    if (r->gai == EAI_NONAME && stopping) {
        /* gale_resolver_shutdown() is running: its workers are leaving and would never take
         * this request; it fails like the requests the shutdown found queued. */
        r->gai = 0;
        r->status = -ECANCELED;
    }
    if (r->gai != EAI_NONAME) {
        int err = post_done(r);
        if (err) { /* on the caller's thread: report it rather than wait for memory */
            list_remove(r);
            r->fut = NULL; /* the caller still holds its reference and fails it */
            pthread_mutex_unlock(&mu);
            req_free(r);
            return err;
        }
        pthread_mutex_unlock(&mu);
        return 0;
    }
    r->gai = 0;
    r->status = 0;
    int err = ensure_threads();
    if (err) {
        pthread_mutex_unlock(&mu);
        req_free(r);
        return err;
    }
    queue_push(r);
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&mu);
    return 0;
}

int gale_resolve(gale_loop *loop, const char *host, int port, int family, gale_resolve_cb cb,
                 void *arg)
{
    if (!cb)
        return -EINVAL;
    return start(loop, host, port, family, cb, arg, NULL);
}

gale_future *gale_resolve_future(gale_loop *loop, const char *host, int port, int family)
{
    gale_future *f = gale_future_new(loop);
    if (!f)
        return NULL;
    gale_future_ref(f); /* the request's reference */
    int err = start(loop, host, port, family, NULL, NULL, f);
    if (err) {
        gale_future_unref(f);
        gale_future_set_error(f, err, NULL);
    }
    return f;
}

void gale_resolver_cancel_loop(gale_loop *loop)
{
    struct req *drop = NULL;
    pthread_mutex_lock(&mu);
    struct req **lists[] = {&queued_head, &done};
    for (size_t i = 0; i < 2; i++) {
        for (struct req *r = *lists[i], *next; r; r = next) {
            next = r->next;
            if (r->loop != loop)
                continue;
            list_remove(r);
            r->next = drop;
            drop = r;
        }
    }
    for (struct req *r = running; r; r = r->next) {
        if (r->loop == loop && !r->cancelled) {
            r->cancelled = true;
            /* Futures are loop-thread objects: release it here, not in the worker. */
            if (r->fut) {
                gale_future_unref(r->fut);
                r->fut = NULL;
            }
        }
    }
    pthread_mutex_unlock(&mu);
    while (drop) {
        struct req *r = drop;
        drop = r->next;
        if (r->fut)
            gale_future_unref(r->fut);
        req_free(r);
    }
}

void gale_resolver_shutdown(void) { stop_threads(false); }

/* The event loop: fd handlers, callbacks, timers, waker, signals, watchdog, periodic callbacks.
 *
 * Structure of one iteration (see loop.h): drain the remote callback queue into the local one,
 * snapshot its length, pop the due timers into `due`, run the snapshot, run the due timers, flush
 * the log, poll, dispatch. The local queue is touched only by the loop's thread and needs no lock;
 * other threads go through `remote` (mutex) and wake the loop through an eventfd, written only when
 * the remote queue turns non-empty.
 *
 * Stale events: `poll_seq` counts waits. A handler records the value current when it was added; at
 * dispatch, a handler whose stamp equals the current wait's was (re)added by an earlier handler of
 * the same batch, so the collected event is not its own and is dropped (nginx's "instance" bit).
 * Events are also masked with the handler's current interest, so an update_handler() that drops
 * WRITE takes effect for the rest of the batch too.
 */
#include <assert.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "core/future.h"
#include "core/heap.h"
#include "core/list.h"
#include "core/log.h"
#include "core/loop_internal.h"
#include "core/loop_uring_internal.h"

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

#define EV_ERRBITS 0x018u
#define EV_VALID (GALE_READ | GALE_WRITE | GALE_ERROR)
#define MAX_WAIT_MS 3600000
#define NS_PER_S 1000000000LL

struct handler {
    gale_handler_cb cb; /* NULL: no handler */
    void *arg;
    unsigned events; /* GALE_READ|GALE_WRITE as registered with the backend */
    uint32_t seq;    /* loop->poll_seq when added, truncated: only equality with the current
                      * wait's matters, and a level-triggered event dropped by a wrapped match
                      * comes again at the next wait */
};

struct cbent {
    gale_cb cb;
    void *arg;
};

/* Pending callbacks. Two of these alternate (Tornado swaps its callback list the same way):
 * `q` collects new callbacks while `run` holds the snapshot being run, so running is a plain
 * array walk that adds during the run can never disturb. */
struct cbqueue {
    struct cbent *buf;
    size_t n, cap;
};

enum { TS_FREE, TS_HEAP, TS_DUE, TS_DUE_CANCELLED };

struct tslot {
    gale_cb cb;
    void *arg;
    uint32_t gen;
    uint32_t idx; /* heap index while TS_HEAP; next free slot while TS_FREE */
    uint8_t state;
};

struct sigent {
    gale_signal_cb cb;
    void *arg;
    bool was_blocked;
};

/* A gale_loop_add_future() waiting for its future; listed so gale_loop_free() can drop it. */
struct future_wait {
    gale_list link;
    gale_loop *loop;
    gale_future *f;
    gale_cb cb;
    void *arg;
};

struct gale_loop {
    const gale__backend *be;
    void *bs;

    struct handler *handlers;
    size_t nhandlers;
    uint64_t poll_seq;

    struct cbqueue q;
    struct cbqueue run;

    pthread_mutex_t rlock;
    struct cbent *rbuf;
    size_t rn, rcap;
    atomic_bool rpending;
    int wakefd;

    atomic_bool stopping;
    atomic_bool running;
    /* &tls_mark of the thread inside gale_loop_run (NULL: none). Only that thread may touch the
     * loop without the remote lock; being current (gale_loop_make_current) is not enough. */
    _Atomic(const char *) run_thread;

    struct tslot *ts;
    uint32_t nts, tscap;
    uint32_t free_head; /* UINT32_MAX: none */
    gale_heap heap;
    uint64_t timer_seq;
    uint32_t *due;
    size_t ndue, duecap;
    size_t ntimers;

    int sigfd;
    sigset_t sigs;
    struct sigent sig[_NSIG];

    int64_t block_ns;
    int64_t run_start_ns;
    int64_t total_ns;
    int64_t idle_ns;

    gale_list waits;
    gale_list owned; /* gale__loop_owned records still working (a TLS close_notify lingering) */
};

static _Thread_local gale_loop *tls_current;
static _Thread_local char tls_mark; /* its address names the thread */

/* True on the thread running `loop`. */
static inline bool on_loop_thread(gale_loop *loop)
{
    return atomic_load_explicit(&loop->run_thread, memory_order_relaxed) == &tls_mark;
}

static void future_wait_done(gale_future *f, void *arg);
/* Each thread's own loop, made by its first gale_loop_current() without a current loop (as
 * Tornado 6, where each thread has its own asyncio loop), and freed when the thread exits. */
static _Thread_local gale_loop *tls_default;
static pthread_key_t default_key;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

int64_t gale_time_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

double gale_loop_time(const gale_loop *loop)
{
    (void)loop;
    return (double)gale_time_ns() / 1e9;
}

/* ---- watchdog ---- */

static void report_blocked(gale_loop *loop, const char *kind, void *fn, int64_t t0)
{
    int64_t dt = gale_time_ns() - t0;
    if (dt <= loop->block_ns)
        return;
    Dl_info info;
    const char *sym = NULL;
    if (dladdr(fn, &info) && info.dli_sname)
        sym = info.dli_sname;
    gale_log_warning(GALE_LOG_GENERAL, "loop blocked for %.1f ms in %s %p (%s)", (double)dt / 1e6,
                     kind, fn, sym ? sym : "?");
}

/* Runs `call` under the watchdog when it is on; one predictable branch when it is off. */
#define TIMED(loop, kind, fn, call)                                                                \
    do {                                                                                           \
        if (UNLIKELY((loop)->block_ns)) {                                                          \
            int64_t t0_ = gale_time_ns();                                                          \
            call;                                                                                  \
            report_blocked((loop), (kind), (void *)(fn), t0_);                                     \
        } else {                                                                                   \
            call;                                                                                  \
        }                                                                                          \
    } while (0)

int gale_loop_set_blocking_log_threshold(gale_loop *loop, double seconds)
{
    if (!loop || isnan(seconds) || seconds < 0)
        return -EINVAL;
    if (seconds > 1e9)
        seconds = 1e9;
    loop->block_ns = (int64_t)(seconds * 1e9);
    if (seconds > 0 && loop->block_ns == 0)
        loop->block_ns = 1;
    return 0;
}

void gale_loop_utilization(const gale_loop *loop, double *busy, double *total)
{
    int64_t t = 0, idle = 0;
    if (loop) {
        t = loop->total_ns;
        if (atomic_load(&loop->running) && loop->run_start_ns)
            t += gale_time_ns() - loop->run_start_ns;
        idle = loop->idle_ns;
    }
    if (busy)
        *busy = (double)(t - idle > 0 ? t - idle : 0) / 1e9;
    if (total)
        *total = (double)t / 1e9;
}

/* ---- fd handlers ---- */

int gale__grow_table(void **table, size_t *n, size_t elem, int fd)
{
    if ((size_t)fd < *n)
        return 0;
    size_t m = *n ? *n : 64;
    while (m <= (size_t)fd)
        m *= 2;
    /* calloc, not realloc + memset: a large table comes as fresh zero pages, and the part no fd
     * reaches yet stays untouched, so it costs no resident memory (with 5,000 connections the
     * memset made the doubled handler table cost 52 bytes per connection instead of 24). */
    void *t = calloc(m, elem);
    if (!t)
        return -ENOMEM;
    if (*n)
        memcpy(t, *table, *n * elem);
    free(*table);
    *table = t;
    *n = m;
    return 0;
}

static int grow_handlers(gale_loop *loop, int fd)
{
    void *t = loop->handlers;
    int err = gale__grow_table(&t, &loop->nhandlers, sizeof *loop->handlers, fd);
    loop->handlers = t;
    return err;
}

int gale_loop_add_handler(gale_loop *loop, int fd, unsigned events, gale_handler_cb cb, void *arg)
{
    if (!loop || fd < 0 || !cb || (events & ~EV_VALID))
        return -EINVAL;
    int err = grow_handlers(loop, fd);
    if (err)
        return err;
    struct handler *h = &loop->handlers[fd];
    if (h->cb)
        return -EEXIST;
    unsigned ev = events & (GALE_READ | GALE_WRITE);
    err = loop->be->ctl(loop->bs, fd, GALE__EV_NONE, ev);
    if (err)
        return err;
    *h = (struct handler){.cb = cb, .arg = arg, .events = ev, .seq = (uint32_t)loop->poll_seq};
    return 0;
}

int gale_loop_update_handler(gale_loop *loop, int fd, unsigned events)
{
    if (!loop || fd < 0 || (events & ~EV_VALID))
        return -EINVAL;
    if ((size_t)fd >= loop->nhandlers || !loop->handlers[fd].cb)
        return -ENOENT;
    struct handler *h = &loop->handlers[fd];
    unsigned ev = events & (GALE_READ | GALE_WRITE);
    if (ev == h->events)
        return 0;
    int err = loop->be->ctl(loop->bs, fd, h->events, ev);
    if (err)
        return err;
    h->events = ev;
    return 0;
}

int gale_loop_remove_handler(gale_loop *loop, int fd)
{
    if (!loop || fd < 0)
        return -EINVAL;
    if ((size_t)fd >= loop->nhandlers || !loop->handlers[fd].cb)
        return -ENOENT;
    struct handler *h = &loop->handlers[fd];
    /* The fd may already be closed (EBADF) or gone from the kernel set: the handler is removed
     * from the table either way, which is what the caller asked for. */
    (void)loop->be->ctl(loop->bs, fd, h->events, GALE__EV_NONE);
    h->cb = NULL;
    h->arg = NULL;
    return 0;
}

static void dispatch(gale_loop *loop, int fd, unsigned events)
{
    if (UNLIKELY((size_t)fd >= loop->nhandlers))
        return;
    struct handler *h = &loop->handlers[fd];
    if (!h->cb || h->seq == (uint32_t)loop->poll_seq)
        return;
    events &= h->events | EV_ERRBITS;
    if (!events)
        return;
    gale_handler_cb cb = h->cb;
    TIMED(loop, "handler", cb, cb(loop, fd, events, h->arg));
}

/* ---- callbacks ---- */

__attribute__((noinline)) static int cbqueue_grow(struct cbqueue *q)
{
    size_t cap = q->cap ? q->cap * 2 : 256;
    struct cbent *buf = realloc(q->buf, cap * sizeof *buf);
    if (!buf)
        return -ENOMEM;
    q->buf = buf;
    q->cap = cap;
    return 0;
}

static inline int cbqueue_push(struct cbqueue *q, gale_cb cb, void *arg)
{
    if (UNLIKELY(q->n == q->cap)) {
        int err = cbqueue_grow(q);
        if (err)
            return err;
    }
    q->buf[q->n++] = (struct cbent){cb, arg};
    return 0;
}

static void wake(gale_loop *loop)
{
    uint64_t one = 1;
    ssize_t r;
    do
        r = write(loop->wakefd, &one, sizeof one);
    while (r < 0 && errno == EINTR);
    /* EAGAIN: the counter is saturated, so the loop is awake anyway. */
}

int gale_loop_add_callback(gale_loop *loop, gale_cb cb, void *arg)
{
    if (UNLIKELY(!loop || !cb))
        return -EINVAL;
    if (LIKELY(on_loop_thread(loop)))
        return cbqueue_push(&loop->q, cb, arg);
    pthread_mutex_lock(&loop->rlock);
    if (loop->rn == loop->rcap) {
        size_t cap = loop->rcap ? loop->rcap * 2 : 64;
        struct cbent *b = realloc(loop->rbuf, cap * sizeof *b);
        if (!b) {
            pthread_mutex_unlock(&loop->rlock);
            return -ENOMEM;
        }
        loop->rbuf = b;
        loop->rcap = cap;
    }
    bool was_empty = loop->rn == 0;
    loop->rbuf[loop->rn++] = (struct cbent){cb, arg};
    if (was_empty)
        atomic_store_explicit(&loop->rpending, true, memory_order_release);
    pthread_mutex_unlock(&loop->rlock);
    if (was_empty)
        wake(loop);
    return 0;
}

static void drain_remote(gale_loop *loop)
{
    pthread_mutex_lock(&loop->rlock);
    size_t i = 0;
    for (; i < loop->rn; i++)
        if (cbqueue_push(&loop->q, loop->rbuf[i].cb, loop->rbuf[i].arg))
            break;
    if (i < loop->rn) {
        /* Out of memory: keep the rest for the next iteration rather than lose it. */
        memmove(loop->rbuf, loop->rbuf + i, (loop->rn - i) * sizeof *loop->rbuf);
        loop->rn -= i;
    } else {
        loop->rn = 0;
        atomic_store_explicit(&loop->rpending, false, memory_order_relaxed);
    }
    pthread_mutex_unlock(&loop->rlock);
}

static void waker_read(gale_loop *loop, int fd, unsigned events, void *arg)
{
    uint64_t v;
    ssize_t r;
    do
        r = read(fd, &v, sizeof v);
    while (r < 0 && errno == EINTR);
}

/* ---- timers ---- */

static void timers_rebase(gale_loop *loop)
{
    gale_heap_set_index_array(&loop->heap, (char *)loop->ts + offsetof(struct tslot, idx),
                              sizeof(struct tslot));
}

static int slot_alloc(gale_loop *loop, uint32_t *out)
{
    if (loop->free_head != UINT32_MAX) {
        uint32_t id = loop->free_head;
        loop->free_head = loop->ts[id].idx;
        *out = id;
        return 0;
    }
    if (loop->nts == loop->tscap) {
        if (loop->tscap >= UINT32_MAX / 2)
            return -ENOMEM;
        uint32_t cap = loop->tscap ? loop->tscap * 2 : 64;
        struct tslot *ts = realloc(loop->ts, (size_t)cap * sizeof *ts);
        if (!ts)
            return -ENOMEM;
        loop->ts = ts;
        loop->tscap = cap;
        timers_rebase(loop);
    }
    uint32_t id = loop->nts++;
    loop->ts[id].gen = 1;
    *out = id;
    return 0;
}

static void slot_release(gale_loop *loop, uint32_t id)
{
    struct tslot *s = &loop->ts[id];
    s->state = TS_FREE;
    s->cb = NULL;
    s->arg = NULL;
    if (++s->gen == 0)
        s->gen = 1;
    s->idx = loop->free_head;
    loop->free_head = id;
}

static int add_timer_ns(gale_loop *loop, int64_t deadline, gale_cb cb, void *arg, gale_timeout *out)
{
    uint32_t id;
    int err = slot_alloc(loop, &id);
    if (err)
        return err;
    struct tslot *s = &loop->ts[id];
    s->cb = cb;
    s->arg = arg;
    s->state = TS_HEAP;
    err = gale_heap_push(&loop->heap, deadline, (uint32_t)loop->timer_seq++, id);
    if (err) {
        slot_release(loop, id);
        return err;
    }
    loop->ntimers++;
    if (out)
        *out = ((uint64_t)s->gen << 32) | id;
    return 0;
}

static int64_t seconds_to_ns(double s)
{
    if (s >= 9e9)
        return (int64_t)9e18;
    if (s <= -9e9)
        return -(int64_t)9e18;
    return (int64_t)(s * 1e9);
}

int gale_loop_call_later(gale_loop *loop, double delay, gale_cb cb, void *arg, gale_timeout *out)
{
    if (!loop || !cb || isnan(delay))
        return -EINVAL;
    if (delay < 0)
        delay = 0;
    return add_timer_ns(loop, gale_time_ns() + seconds_to_ns(delay), cb, arg, out);
}

int gale_loop_call_at(gale_loop *loop, double deadline, gale_cb cb, void *arg, gale_timeout *out)
{
    if (!loop || !cb || isnan(deadline))
        return -EINVAL;
    return add_timer_ns(loop, seconds_to_ns(deadline), cb, arg, out);
}

int gale_loop_remove_timeout(gale_loop *loop, gale_timeout t)
{
    if (!loop)
        return -EINVAL;
    uint32_t id = (uint32_t)t, gen = (uint32_t)(t >> 32);
    if (t == 0 || id >= loop->nts)
        return -ENOENT;
    struct tslot *s = &loop->ts[id];
    if (s->gen != gen)
        return -ENOENT;
    switch (s->state) {
    case TS_HEAP:
        gale_heap_remove(&loop->heap, s->idx);
        slot_release(loop, id);
        loop->ntimers--;
        return 0;
    case TS_DUE:
        /* Already picked for this iteration: the run pass skips it and frees the slot. */
        s->state = TS_DUE_CANCELLED;
        loop->ntimers--;
        return 0;
    default: return -ENOENT;
    }
}

size_t gale_loop_timer_count(const gale_loop *loop) { return loop ? loop->ntimers : 0; }

bool gale__heap_check(const gale_loop *loop)
{
    if (!gale_heap_valid(&loop->heap))
        return false;
    size_t live = 0;
    for (uint32_t i = 0; i < loop->nts; i++) {
        const struct tslot *s = &loop->ts[i];
        if (s->state == TS_HEAP) {
            if (s->idx >= loop->heap.n || loop->heap.v[s->idx].id != i)
                return false;
            live++;
        } else if (s->state == TS_DUE) {
            live++;
        }
    }
    return live == loop->ntimers;
}

static int collect_due(gale_loop *loop, int64_t now)
{
    const gale_heap_node *top;
    while ((top = gale_heap_top(&loop->heap)) && top->key <= now) {
        if (loop->ndue == loop->duecap) {
            size_t cap = loop->duecap ? loop->duecap * 2 : 64;
            uint32_t *d = realloc(loop->due, cap * sizeof *d);
            if (!d)
                return -ENOMEM; /* the rest stay in the heap for the next iteration */
            loop->due = d;
            loop->duecap = cap;
        }
        uint32_t id = top->id;
        gale_heap_remove(&loop->heap, 0);
        loop->ts[id].state = TS_DUE;
        loop->due[loop->ndue++] = id;
    }
    return 0;
}

static void run_due(gale_loop *loop)
{
    for (size_t i = 0; i < loop->ndue; i++) {
        uint32_t id = loop->due[i];
        struct tslot *s = &loop->ts[id];
        if (s->state == TS_DUE_CANCELLED) {
            slot_release(loop, id);
            continue;
        }
        gale_cb cb = s->cb;
        void *arg = s->arg;
        /* Released before the call: removing its own handle inside cb gives -ENOENT. */
        slot_release(loop, id);
        loop->ntimers--;
        TIMED(loop, "timer", cb, cb(loop, arg));
    }
    loop->ndue = 0;
}

/* ---- signals ---- */

static void signal_read(gale_loop *loop, int fd, unsigned events, void *arg)
{
    struct signalfd_siginfo si[16];
    for (;;) {
        ssize_t r = read(fd, si, sizeof si);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        size_t n = (size_t)r / sizeof si[0];
        for (size_t i = 0; i < n; i++) {
            int signo = (int)si[i].ssi_signo;
            if (signo <= 0 || signo >= _NSIG || !loop->sig[signo].cb)
                continue;
            gale_signal_cb cb = loop->sig[signo].cb;
            TIMED(loop, "signal", cb, cb(loop, signo, loop->sig[signo].arg));
        }
        if (n < sizeof si / sizeof si[0])
            return;
    }
}

static bool signal_allowed(int signum)
{
    if (signum <= 0 || signum >= _NSIG || signum == SIGKILL || signum == SIGSTOP)
        return false;
    /* glibc reserves the first real-time signals for its threads. */
    if (signum > SIGSYS && signum < SIGRTMIN)
        return false;
    return true;
}

int gale_loop_add_signal(gale_loop *loop, int signum, gale_signal_cb cb, void *arg)
{
    if (!loop || !cb || !signal_allowed(signum))
        return -EINVAL;
    if (loop->sig[signum].cb)
        return -EEXIST;
    sigset_t one, old;
    sigemptyset(&one);
    sigaddset(&one, signum);
    int err = pthread_sigmask(SIG_BLOCK, &one, &old);
    if (err)
        return -err;
    bool was_blocked = sigismember(&old, signum) == 1;
    sigset_t want = loop->sigs;
    sigaddset(&want, signum);
    if (loop->sigfd < 0) {
        int fd = signalfd(-1, &want, SFD_NONBLOCK | SFD_CLOEXEC);
        if (fd < 0)
            err = -errno;
        else if ((err = gale_loop_add_handler(loop, fd, GALE_READ, signal_read, NULL)))
            close(fd);
        else
            loop->sigfd = fd;
    } else if (signalfd(loop->sigfd, &want, 0) < 0) {
        err = -errno;
    }
    if (err) {
        if (!was_blocked)
            pthread_sigmask(SIG_UNBLOCK, &one, NULL);
        return err;
    }
    loop->sigs = want;
    loop->sig[signum] = (struct sigent){.cb = cb, .arg = arg, .was_blocked = was_blocked};
    return 0;
}

int gale_loop_remove_signal(gale_loop *loop, int signum)
{
    if (!loop)
        return -EINVAL;
    if (signum <= 0 || signum >= _NSIG || !loop->sig[signum].cb)
        return -ENOENT;
    bool was_blocked = loop->sig[signum].was_blocked;
    loop->sig[signum] = (struct sigent){0};
    sigdelset(&loop->sigs, signum);
    if (loop->sigfd >= 0)
        signalfd(loop->sigfd, &loop->sigs, 0);
    if (!was_blocked) {
        /* Consume instances still pending, so unblocking does not run the default action of a
         * signal the loop was supposed to handle. */
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, signum);
        struct timespec zero = {0, 0};
        while (sigtimedwait(&one, NULL, &zero) == signum)
            ;
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    }
    return 0;
}

/* ---- creation ---- */

/* NULL: io_uring, which the caller tries first and falls back from. */
static const gale__backend uring_marker = {.name = "uring"};

static const gale__backend *pick_backend(gale_backend b)
{
    switch (b) {
    case GALE_BACKEND_EPOLL: return &gale__backend_epoll;
    case GALE_BACKEND_POLL: return &gale__backend_poll;
    case GALE_BACKEND_URING: return &uring_marker;
    case GALE_BACKEND_DEFAULT: {
        const char *env = getenv("GALE_LOOP_BACKEND");
        if (!env || !*env)
            return &uring_marker; /* epoll where io_uring is unavailable */
        if (strcmp(env, "epoll") == 0)
            return &gale__backend_epoll;
        if (strcmp(env, "poll") == 0)
            return &gale__backend_poll;
        if (strcmp(env, "uring") == 0)
            return &uring_marker;
        gale_log_error(GALE_LOG_GENERAL, "unknown GALE_LOOP_BACKEND \"%s\" (epoll, poll or uring)",
                       env);
        return NULL;
    }
    }
    return NULL;
}

/* io_uring where it works, else epoll with one log line per process. */
static int init_backend(const gale__backend **be, void **bs)
{
    if (*be != &uring_marker)
        return (*be)->init(bs);
    int err = -ENOTSUP;
#ifdef GALE_HAVE_URING
    *be = &gale__backend_uring;
    err = (*be)->init(bs);
    if (!err)
        return 0;
#endif
    static atomic_bool logged;
    if (!atomic_exchange(&logged, true))
        gale_log_warning(GALE_LOG_GENERAL, "io_uring unavailable (%s): the loop uses epoll",
                         strerror(-err));
    *be = &gale__backend_epoll;
    return (*be)->init(bs);
}

void *gale__loop_backend_state(gale_loop *loop, const gale__backend *be)
{
    return loop && loop->be == be ? loop->bs : NULL;
}

int gale_loop_new(gale_backend backend, gale_loop **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    const gale__backend *be = pick_backend(backend);
    if (!be)
        return -EINVAL;
    gale_loop *loop = calloc(1, sizeof *loop);
    if (!loop)
        return -ENOMEM;
    loop->wakefd = -1;
    loop->sigfd = -1;
    loop->free_head = UINT32_MAX;
    loop->poll_seq = 1;
    sigemptyset(&loop->sigs);
    gale_list_init(&loop->waits);
    gale_list_init(&loop->owned);
    pthread_mutex_init(&loop->rlock, NULL);
    int err = init_backend(&be, &loop->bs);
    loop->be = be;
    if (err) {
        loop->bs = NULL;
        goto fail;
    }
    loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wakefd < 0) {
        err = -errno;
        goto fail;
    }
    err = gale_loop_add_handler(loop, loop->wakefd, GALE_READ, waker_read, NULL);
    if (err)
        goto fail;
    *out = loop;
    return 0;
fail:
    if (loop->wakefd >= 0)
        close(loop->wakefd);
    if (loop->bs)
        be->free(loop->bs);
    free(loop->handlers);
    pthread_mutex_destroy(&loop->rlock);
    free(loop);
    return err;
}

void gale_loop_free(gale_loop *loop)
{
    if (!loop)
        return;
    for (int s = 1; s < _NSIG; s++)
        if (loop->sig[s].cb)
            gale_loop_remove_signal(loop, s);
    if (loop->sigfd >= 0) {
        gale_loop_remove_handler(loop, loop->sigfd);
        close(loop->sigfd);
    }
    while (!gale_list_empty(&loop->waits)) {
        struct future_wait *w = gale_list_entry(loop->waits.next, struct future_wait, link);
        gale_list_unlink(&w->link);
        gale_future_remove_done_callback(w->f, future_wait_done, w);
        gale_future_unref(w->f);
        free(w);
    }
    while (!gale_list_empty(&loop->owned)) {
        gale__loop_owned *o = gale_list_entry(loop->owned.next, gale__loop_owned, link);
        gale_list_unlink(&o->link);
        o->release(o); /* removes its handlers and timers, frees itself */
    }
    gale_loop_remove_handler(loop, loop->wakefd);
    close(loop->wakefd);
    loop->be->free(loop->bs);
    free(loop->handlers);
    free(loop->q.buf);
    free(loop->run.buf);
    free(loop->rbuf);
    pthread_mutex_destroy(&loop->rlock);
    free(loop->ts);
    gale_heap_free(&loop->heap);
    free(loop->due);
    if (tls_current == loop)
        tls_current = NULL;
    if (tls_default == loop) {
        tls_default = NULL;
        pthread_setspecific(default_key, NULL);
    }
    free(loop);
}

/* A thread that made a default loop exits: the loop goes with it (nothing can run it now). */
static void default_loop_exit(void *p)
{
    gale_loop *loop = p;
    if (loop == tls_default)
        gale_loop_free(loop);
}

static void default_key_init(void) { pthread_key_create(&default_key, default_loop_exit); }

gale_loop *gale_loop_current(void)
{
    if (tls_current)
        return tls_current;
    if (tls_default)
        return tls_default;
    gale_loop *d;
    int err = gale_loop_new(GALE_BACKEND_DEFAULT, &d);
    if (err) {
        gale_log_error(GALE_LOG_GENERAL, "cannot create this thread's loop: %s", strerror(-err));
        return NULL;
    }
    pthread_once(&default_once, default_key_init);
    tls_default = d;
    pthread_setspecific(default_key, d);
    return d;
}

void gale_loop_make_current(gale_loop *loop) { tls_current = loop; }

void gale__loop_own(gale_loop *loop, gale__loop_owned *o)
{
    assert(o->release);
    gale_list_push_back(&loop->owned, &o->link);
}

void gale__loop_disown(gale__loop_owned *o) { gale_list_unlink(&o->link); }

const char *gale_loop_backend_name(const gale_loop *loop) { return loop ? loop->be->name : NULL; }

/* ---- running ---- */

static void iterate(gale_loop *loop)
{
    if (atomic_load_explicit(&loop->rpending, memory_order_acquire))
        drain_remote(loop);
    if (loop->heap.n)
        collect_due(loop, gale_time_ns());

    if (loop->q.n) {
        struct cbqueue run = loop->q;
        loop->q = loop->run;
        loop->run = run;
        const struct cbent *e = run.buf, *end = run.buf + run.n;
        if (UNLIKELY(loop->block_ns)) {
            for (; e < end; e++)
                TIMED(loop, "callback", e->cb, e->cb(loop, e->arg));
        } else {
            for (; e < end; e++)
                e->cb(loop, e->arg);
        }
        loop->run.n = 0;
    }
    if (loop->ndue)
        run_due(loop);

    int timeout_ms = MAX_WAIT_MS;
    if (loop->q.n || atomic_load_explicit(&loop->rpending, memory_order_relaxed) ||
        atomic_load_explicit(&loop->stopping, memory_order_relaxed)) {
        timeout_ms = 0;
    } else if (loop->heap.n) {
        int64_t wait = loop->heap.v[0].key - gale_time_ns();
        if (wait <= 0)
            timeout_ms = 0;
        else if (wait < (int64_t)MAX_WAIT_MS * 1000000)
            timeout_ms = (int)((wait + 999999) / 1000000); /* round up: never wake early */
    }
    gale_log_flush();
    loop->poll_seq++;
    int64_t t0 = timeout_ms ? gale_time_ns() : 0;
    int n = loop->be->wait(loop->bs, timeout_ms, loop, dispatch);
    if (timeout_ms)
        loop->idle_ns += gale_time_ns() - t0; /* includes dispatch: cheap, and rare when busy */
    if (UNLIKELY(n < 0 && n != -EINTR))
        gale_log_error(GALE_LOG_GENERAL, "loop %s wait failed: %s", loop->be->name, strerror(-n));
}

int gale_loop_run(gale_loop *loop)
{
    if (!loop)
        return -EINVAL;
    bool expect = false;
    if (!atomic_compare_exchange_strong(&loop->running, &expect, true))
        return -EBUSY;
#ifdef GALE_HAVE_URING
    if (!gale__uring_may_run(loop)) {
        gale_log_error(GALE_LOG_GENERAL, "a uring loop runs only on the thread that first ran it "
                                         "(GALE_BACKEND_EPOLL moves between threads)");
        atomic_store(&loop->running, false);
        return -EXDEV;
    }
#endif
    if (atomic_exchange(&loop->stopping, false)) {
        atomic_store(&loop->running, false);
        return 0;
    }
    gale_loop *prev = tls_current;
    tls_current = loop;
    atomic_store_explicit(&loop->run_thread, &tls_mark, memory_order_relaxed);
    loop->run_start_ns = gale_time_ns();
    while (!atomic_load_explicit(&loop->stopping, memory_order_relaxed))
        iterate(loop);
    atomic_store(&loop->stopping, false);
    loop->total_ns += gale_time_ns() - loop->run_start_ns;
    loop->run_start_ns = 0;
    atomic_store_explicit(&loop->run_thread, NULL, memory_order_relaxed);
    tls_current = prev;
    atomic_store(&loop->running, false);
    return 0;
}

void gale_loop_stop(gale_loop *loop)
{
    if (!loop)
        return;
    atomic_store(&loop->stopping, true);
    if (!on_loop_thread(loop))
        wake(loop);
}

/* ---- futures on the loop ---- */

static void future_wait_run(gale_loop *loop, void *arg)
{
    struct future_wait *w = arg;
    gale_list_unlink(&w->link);
    gale_cb cb = w->cb;
    void *cbarg = w->arg;
    gale_future_unref(w->f);
    free(w);
    cb(loop, cbarg);
}

static void future_wait_done(gale_future *f, void *arg)
{
    struct future_wait *w = arg;
    if (gale_loop_add_callback(w->loop, future_wait_run, w) != 0) {
        /* Cannot queue (out of memory): run now rather than never. */
        future_wait_run(w->loop, w);
    }
}

int gale_loop_add_future(gale_loop *loop, gale_future *f, gale_cb cb, void *arg)
{
    if (!loop || !f || !cb)
        return -EINVAL;
    struct future_wait *w = malloc(sizeof *w);
    if (!w)
        return -ENOMEM;
    *w = (struct future_wait){.loop = loop, .f = gale_future_ref(f), .cb = cb, .arg = arg};
    gale_list_push_back(&loop->waits, &w->link);
    int err = gale_future_add_done_callback(f, future_wait_done, w);
    if (err) {
        gale_list_unlink(&w->link);
        gale_future_unref(f);
        free(w);
    }
    return err;
}

/* ---- run_until / run_sync ---- */

struct until_state {
    gale_loop *loop;
    gale_future *f;
    bool done;
    bool timed_out;
};

static void until_done(gale_future *f, void *arg)
{
    struct until_state *u = arg;
    u->done = true;
    gale_loop_stop(u->loop);
}

static void until_timeout(gale_loop *loop, void *arg)
{
    struct until_state *u = arg;
    u->timed_out = true;
    gale_loop_stop(loop);
}

/* Runs until u->done or the timeout; f may be NULL until a callback sets u->f. */
/* Runs `loop` until `u` is done or its timeout timer `t` (0: none, already armed) fired. */
static int run_until_armed(gale_loop *loop, struct until_state *u, gale_timeout t)
{
    int err;
    while (!u->done && !u->timed_out) {
        err = gale_loop_run(loop);
        if (err) {
            gale_loop_remove_timeout(loop, t);
            return err;
        }
    }
    gale_loop_remove_timeout(loop, t);
    return u->done ? 0 : -ETIMEDOUT;
}

static int run_until_state(gale_loop *loop, struct until_state *u, double timeout)
{
    gale_timeout t = 0;
    int err;
    if (timeout > 0 && (err = gale_loop_call_later(loop, timeout, until_timeout, u, &t)))
        return err;
    return run_until_armed(loop, u, t);
}

int gale_loop_run_until(gale_loop *loop, gale_future *f, double timeout)
{
    if (!loop || !f || isnan(timeout))
        return -EINVAL;
    if (atomic_load(&loop->running))
        return -EBUSY;
    if (gale_future_done(f))
        return 0;
    struct until_state u = {.loop = loop, .f = f};
    int err = gale_future_add_done_callback(f, until_done, &u);
    if (err)
        return err;
    err = run_until_state(loop, &u, timeout);
    if (!u.done)
        gale_future_remove_done_callback(f, until_done, &u);
    return err;
}

struct sync_state {
    struct until_state u;
    gale_future *(*fn)(gale_loop *, void *);
    void *arg;
    bool null_future;
};

static void sync_start(gale_loop *loop, void *arg)
{
    struct sync_state *s = arg;
    gale_future *f = s->fn(loop, s->arg);
    if (!f) {
        s->null_future = true;
        s->u.done = true;
        gale_loop_stop(loop);
        return;
    }
    s->u.f = f;
    if (gale_future_add_done_callback(f, until_done, &s->u) != 0) {
        s->u.done = true;
        gale_loop_stop(loop);
    }
}

int gale_loop_run_sync(gale_loop *loop, gale_future *(*fn)(gale_loop *loop, void *arg), void *arg,
                       double timeout, gale_future **out)
{
    if (out)
        *out = NULL;
    if (!loop || !fn || isnan(timeout))
        return -EINVAL;
    if (atomic_load(&loop->running))
        return -EBUSY;
    struct sync_state s = {.u.loop = loop, .fn = fn, .arg = arg};
    /* The timeout is armed before fn is queued: once sync_start (which points at this frame) is
     * queued, nothing may fail before the loop runs it. */
    gale_timeout t = 0;
    int err;
    if (timeout > 0 && (err = gale_loop_call_later(loop, timeout, until_timeout, &s.u, &t)))
        return err;
    /* fn runs from within the loop, as a callback of its first iteration. */
    err = gale_loop_add_callback(loop, sync_start, &s);
    if (err) {
        gale_loop_remove_timeout(loop, t);
        return err;
    }
    err = run_until_armed(loop, &s.u, t);
    if (s.null_future)
        return -EINVAL;
    gale_future *f = s.u.f;
    if (!f) /* timed out before fn ran: cannot happen with a positive timeout, but be safe */
        return err ? err : -ETIMEDOUT;
    if (err == 0) {
        if (!gale_future_done(f))
            err = -ENOMEM;
        else
            err = gale_future_error(f);
    } else {
        gale_future_remove_done_callback(f, until_done, &s.u);
    }
    if (out)
        *out = f;
    else
        gale_future_unref(f);
    return err;
}

/* ---- periodic callbacks ---- */

struct gale_periodic {
    gale_loop *loop;
    int64_t period_ns;
    double jitter;
    gale_cb cb;
    void *arg;
    bool running;
    bool in_cb;
    bool free_pending;
    int64_t next_ns;
    gale_timeout timer;
    uint64_t rng;
};

static double periodic_rand(gale_periodic *p)
{
    /* xorshift64*: enough for jitter, no global state. */
    p->rng ^= p->rng >> 12;
    p->rng ^= p->rng << 25;
    p->rng ^= p->rng >> 27;
    return (double)((p->rng * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static void periodic_run(gale_loop *loop, void *arg);

/* Tornado's PeriodicCallback._update_next: stay on the grid; when behind, skip whole periods. */
static void periodic_schedule(gale_periodic *p)
{
    int64_t now = gale_time_ns();
    int64_t period = p->period_ns;
    if (p->jitter > 0) {
        /* In double first: a period near the clamp times a factor above 1 is past int64. */
        double j = (double)period * (1 + p->jitter * (periodic_rand(p) - 0.5));
        period = j >= 9e18 ? (int64_t)9e18 : (int64_t)j;
        if (period < 1)
            period = 1;
    }
    if (p->next_ns <= now)
        p->next_ns += ((now - p->next_ns) / period + 1) * period;
    else
        p->next_ns += period; /* the clock did not advance: still move forward */
    if (add_timer_ns(p->loop, p->next_ns, periodic_run, p, &p->timer) != 0) {
        gale_log_error(GALE_LOG_GENERAL, "periodic callback %p stopped: out of memory", (void *)p);
        p->running = false;
        p->timer = 0;
    }
}

static void periodic_run(gale_loop *loop, void *arg)
{
    gale_periodic *p = arg;
    p->timer = 0;
    if (!p->running)
        return;
    p->in_cb = true;
    p->cb(loop, p->arg);
    p->in_cb = false;
    if (p->free_pending) {
        free(p);
        return;
    }
    /* start() inside the callback after stop() already scheduled it. */
    if (p->running && p->timer == 0)
        periodic_schedule(p);
}

int gale_periodic_new(gale_loop *loop, double period, double jitter, gale_cb cb, void *arg,
                      gale_periodic **out)
{
    if (out)
        *out = NULL;
    if (!loop || !cb || !out || isnan(period) || period <= 0 || isnan(jitter) || jitter < 0 ||
        jitter >= 1)
        return -EINVAL;
    int64_t ns = seconds_to_ns(period);
    if (ns < 1)
        ns = 1;
    gale_periodic *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    *p = (gale_periodic){.loop = loop, .period_ns = ns, .jitter = jitter, .cb = cb, .arg = arg};
    p->rng = (uint64_t)gale_time_ns() ^ (uint64_t)(uintptr_t)p ^ 0x9E3779B97F4A7C15ULL;
    if (!p->rng)
        p->rng = 1;
    *out = p;
    return 0;
}

int gale_periodic_start(gale_periodic *p)
{
    if (!p)
        return -EINVAL;
    if (p->running)
        return -EALREADY;
    p->running = true;
    p->next_ns = gale_time_ns();
    if (p->in_cb)
        return 0; /* periodic_run schedules when the callback returns */
    periodic_schedule(p);
    return p->running ? 0 : -ENOMEM;
}

void gale_periodic_stop(gale_periodic *p)
{
    if (!p)
        return;
    p->running = false;
    if (p->timer) {
        gale_loop_remove_timeout(p->loop, p->timer);
        p->timer = 0;
    }
}

bool gale_periodic_is_running(const gale_periodic *p) { return p && p->running; }

void gale_periodic_free(gale_periodic *p)
{
    if (!p)
        return;
    gale_periodic_stop(p);
    if (p->in_cb)
        p->free_pending = true;
    else
        free(p);
}

int64_t gale__periodic_next_ns(const gale_periodic *p) { return p && p->timer ? p->next_ns : 0; }

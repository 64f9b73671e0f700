/* Coroutines (see coro.h): stacks, switching, await, and the tornado.gen helpers.
 *
 * Every thread that spawns coroutines has a scheduler record (thread-local): the coroutine
 * running now, the thread's own context (its original stack), the list of live coroutines and a
 * pool of idle stacks. A coroutine is entered by switch_in() from whoever resumes it (its
 * "caller": the thread's main context for loop callbacks, or the parent coroutine for a nested
 * spawn) and suspends by switching back to that caller. When its function returns it switches
 * back one last time; the caller then recycles the stack and completes the coroutine's future on
 * its own stack, so done callbacks never run on a dying coroutine's stack.
 *
 * Waking: a waiting coroutine registers a done callback on the awaited future; that callback
 * (running inside set_result) only queues a loop callback, and the loop callback resumes the
 * coroutine. At most one wake is queued per coroutine; each queued wake holds a reference to the
 * coroutine record so a wake that lost a race (cancel, shutdown) finds a live record.
 */
#include "core/coro.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/coro_internal.h"
#include "core/errors.h"
#include "core/log.h"

#if !GALE_CORO_ASM
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define CORO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORO_ASAN 1
#endif
#endif
#ifndef CORO_ASAN
#define CORO_ASAN 0
#endif
#if CORO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#define GUARD_SIZE (16u * 1024) /* below each stack: catches frames up to this big */
#define ALTSTACK_SIZE (64u * 1024)

struct ctx {
#if GALE_CORO_ASM
    void *sp;
#else
    ucontext_t uc;
#endif
    const void *stack_lo; /* for the sanitizer: this context's stack */
    size_t stack_size;
    void *fake_stack;
};

enum state { CO_RUNNING, CO_WAITING, CO_DONE };

struct gale_coro {
    struct ctx ctx;
    struct ctx *caller; /* who resumed it last: where it returns when it suspends */
    char *stack;        /* usable stack (the guard is the GUARD_SIZE bytes below) */
    size_t stack_size;
    gale_loop *loop;
    pthread_t thread;
    gale_coro_fn fn;
    void *arg;
    gale_future *future; /* the coroutine's own future (its reference) */
    void *result;
    void (*dtor)(void *);
    gale_future *wait;   /* the future being awaited (a reference) */
    gale_future *failed; /* the last awaited future that failed (a reference), for its message */
    int ret;
    int cancel;  /* sticky cancel reason, 0 when not cancelled */
    size_t refs; /* 1 while alive + 1 per queued wake */
    enum state state;
    bool wake_queued;
    gale_coro *prev, *next; /* the thread's live list */
};

struct pooled_stack {
    char *lo;
    size_t size;
};

struct sched {
    gale_coro *current;
    struct ctx main;
    gale_coro *live;
    size_t nlive;
    struct pooled_stack *pool;
    size_t npool;
    void *altstack;
    bool altstack_checked;
};

static __thread struct sched tls;
static size_t page_size; /* set once, under segv_once */

/* ---- stack overflow detection ---- */

static struct sigaction old_segv;
static pthread_once_t segv_once = PTHREAD_ONCE_INIT;

static void put_str(const char *s) { (void)!write(2, s, strlen(s)); }

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    gale_coro *co = tls.current;
    char *addr = si ? si->si_addr : NULL;
    if (co && addr && addr >= co->stack - GUARD_SIZE && addr < co->stack) {
        char num[24];
        size_t n = sizeof num;
        num[--n] = '\0';
        size_t v = co->stack_size;
        do {
            num[--n] = (char)('0' + v % 10);
            v /= 10;
        } while (v && n);
        put_str("gale: coroutine stack overflow (stack of ");
        put_str(num + n);
        put_str(" bytes; give the coroutine a larger gale_coro_opts.stack_size)\n");
        signal(SIGSEGV, SIG_DFL); /* returning re-runs the access: the default action ends us */
        return;
    }
    if ((old_segv.sa_flags & SA_SIGINFO) && old_segv.sa_sigaction) {
        old_segv.sa_sigaction(sig, si, uctx);
    } else if (old_segv.sa_handler != SIG_DFL && old_segv.sa_handler != SIG_IGN &&
               old_segv.sa_handler) {
        old_segv.sa_handler(sig);
    } else {
        signal(SIGSEGV, SIG_DFL);
    }
}

static void install_segv(void)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &old_segv) != 0)
        gale_log_warning(GALE_LOG_GENERAL, "coroutines: no SIGSEGV handler: %s",
                         gale_strerror(-errno));
}

static pthread_key_t thread_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void pool_trim(size_t keep);

/* Thread exit: release the idle stacks and the alternate signal stack. */
static void thread_exit(void *unused)
{
    pool_trim(0);
    free(tls.pool);
    tls.pool = NULL;
    if (tls.altstack) {
        stack_t ss = {.ss_flags = SS_DISABLE};
        sigaltstack(&ss, NULL);
        munmap(tls.altstack, ALTSTACK_SIZE);
        tls.altstack = NULL;
    }
}

static void make_key(void) { pthread_key_create(&thread_key, thread_exit); }

/* Once per thread: an alternate signal stack (unless the thread has one, e.g. a sanitizer's),
 * since a handler cannot run on the stack that just overflowed. */
static void thread_setup(void)
{
    if (tls.altstack_checked)
        return;
    tls.altstack_checked = true;
    pthread_once(&segv_once, install_segv);
    pthread_once(&key_once, make_key);
    pthread_setspecific(thread_key, &tls);
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return;
    void *mem =
        mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return;
    stack_t ss = {.ss_sp = mem, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(mem, ALTSTACK_SIZE);
        return;
    }
    tls.altstack = mem;
}

/* ---- stacks ---- */

static void stack_unpoison(char *lo, size_t size)
{
#if CORO_ASAN
    /* A coroutine that ended never returned through its frames: clear their redzones. */
    __asan_unpoison_memory_region(lo, size);
#else
    (void)lo;
    (void)size;
#endif
}

static char *stack_get(size_t size)
{
    for (size_t i = tls.npool; i-- > 0;) {
        if (tls.pool[i].size == size) {
            char *lo = tls.pool[i].lo;
            tls.pool[i] = tls.pool[--tls.npool];
            return lo;
        }
    }
    char *map = mmap(NULL, size + GUARD_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    if (mprotect(map, GUARD_SIZE, PROT_NONE) != 0) {
        munmap(map, size + GUARD_SIZE);
        return NULL;
    }
    return map + GUARD_SIZE;
}

static void stack_unmap(char *lo, size_t size) { munmap(lo - GUARD_SIZE, size + GUARD_SIZE); }

static void stack_put(char *lo, size_t size)
{
    stack_unpoison(lo, size);
    if (!tls.pool)
        tls.pool = malloc(GALE_CORO_POOL_MAX * sizeof *tls.pool);
    if (tls.pool && tls.npool < GALE_CORO_POOL_MAX) {
        tls.pool[tls.npool++] = (struct pooled_stack){lo, size};
        return;
    }
    stack_unmap(lo, size);
}

static void pool_trim(size_t keep)
{
    while (tls.npool > keep) {
        tls.npool--;
        stack_unmap(tls.pool[tls.npool].lo, tls.pool[tls.npool].size);
    }
}

/* ---- switching ---- */

static void raw_switch(struct ctx *from, struct ctx *to)
{
#if GALE_CORO_ASM
    gale__coro_switch(&from->sp, &to->sp);
#else
    swapcontext(&from->uc, &to->uc);
#endif
}

static void coro_main(void *arg);

#if !GALE_CORO_ASM
static __thread gale_coro *starting;
static void uc_entry(void) { coro_main(starting); }
#endif

static int ctx_init(gale_coro *co)
{
    char *top = co->stack + co->stack_size;
    co->ctx.stack_lo = co->stack;
    co->ctx.stack_size = co->stack_size;
#if GALE_CORO_ASM && defined(__x86_64__)
    /* The frame gale__coro_switch pops: control words, r15, r14, r13 (arg), r12 (fn), rbx, rbp,
     * then the return address (gale__coro_start). After the return the stack pointer is `top`,
     * 16-byte aligned, as a call instruction expects. */
    uint64_t *sp = (uint64_t *)(void *)top - 8;
    memset(sp, 0, 8 * sizeof *sp);
    sp[0] = 0x1F80u | ((uint64_t)0x037Fu << 32); /* default MXCSR; x87 control word */
    sp[3] = (uint64_t)(uintptr_t)co;
    sp[4] = (uint64_t)(uintptr_t)coro_main;
    sp[7] = (uint64_t)(uintptr_t)gale__coro_start;
    co->ctx.sp = sp;
#elif GALE_CORO_ASM && defined(__aarch64__)
    /* x19 (fn), x20 (arg) ... x29 = 0, x30 = gale__coro_start, d8..d15 = 0. */
    uint64_t *sp = (uint64_t *)(void *)top - 22;
    memset(sp, 0, 22 * sizeof *sp);
    sp[0] = (uint64_t)(uintptr_t)coro_main;
    sp[1] = (uint64_t)(uintptr_t)co;
    sp[11] = (uint64_t)(uintptr_t)gale__coro_start;
    co->ctx.sp = sp;
#else
    (void)top;
    if (getcontext(&co->ctx.uc) != 0)
        return -errno;
    co->ctx.uc.uc_stack.ss_sp = co->stack;
    co->ctx.uc.uc_stack.ss_size = co->stack_size;
    co->ctx.uc.uc_link = NULL;
    makecontext(&co->ctx.uc, uc_entry, 0);
#endif
    return 0;
}

static void co_unref(gale_coro *co)
{
    if (--co->refs == 0)
        free(co);
}

static void finalize(gale_coro *co);

/* Runs `co` (suspended or new) until it suspends or ends; called on the resumer's stack. */
static void switch_in(gale_coro *co)
{
    gale_coro *prev = tls.current;
    struct ctx *from = prev ? &prev->ctx : &tls.main;
    co->caller = from;
    co->state = CO_RUNNING;
    tls.current = co;
#if GALE_CORO_ASM == 0
    starting = co;
#endif
#if CORO_ASAN
    __sanitizer_start_switch_fiber(&from->fake_stack, co->ctx.stack_lo, co->ctx.stack_size);
#endif
    raw_switch(from, &co->ctx);
#if CORO_ASAN
    __sanitizer_finish_switch_fiber(from->fake_stack, NULL, NULL);
#endif
    tls.current = prev;
    if (co->state == CO_DONE)
        finalize(co);
}

/* Inside `co`: back to whoever resumed it; returns when it is resumed. */
static void suspend(gale_coro *co)
{
    struct ctx *to = co->caller;
#if CORO_ASAN
    __sanitizer_start_switch_fiber(&co->ctx.fake_stack, to->stack_lo, to->stack_size);
#endif
    raw_switch(&co->ctx, to);
#if CORO_ASAN
    __sanitizer_finish_switch_fiber(co->ctx.fake_stack, &co->caller->stack_lo,
                                    &co->caller->stack_size);
#endif
}

static void coro_main(void *arg)
{
    gale_coro *co = arg;
#if CORO_ASAN
    __sanitizer_finish_switch_fiber(NULL, &co->caller->stack_lo, &co->caller->stack_size);
#endif
    int ret = co->fn(co->arg);
    co->ret = ret > 0 ? 0 : ret;
    co->state = CO_DONE;
    struct ctx *to = co->caller;
#if CORO_ASAN
    __sanitizer_start_switch_fiber(NULL, to->stack_lo, to->stack_size);
#endif
    raw_switch(&co->ctx, to);
    /* never resumed */
    abort();
}

/* On the resumer's stack once `co` returned: recycle the stack, complete the future. */
static void finalize(gale_coro *co)
{
    stack_put(co->stack, co->stack_size);
    co->stack = NULL;
    if (co->prev)
        co->prev->next = co->next;
    else
        tls.live = co->next;
    if (co->next)
        co->next->prev = co->prev;
    tls.nlive--;
    gale_future *f = co->future;
    co->future = NULL;
    if (co->ret == 0) {
        gale_future_set_result(f, co->result, co->dtor);
    } else {
        const char *msg = NULL;
        if (co->failed && gale_future_error(co->failed) == co->ret)
            msg = gale_future_error_message(co->failed);
        gale_future_set_error(f, co->ret, msg);
        if (co->dtor)
            co->dtor(co->result);
    }
    co->result = NULL;
    co->dtor = NULL;
    gale_future_unref(co->failed);
    co->failed = NULL;
    gale_future_unref(f);
    co_unref(co);
}

/* ---- spawn ---- */

void gale_coro_opts_init(gale_coro_opts *o)
{
    if (o)
        o->stack_size = GALE_CORO_DEFAULT_STACK;
}

gale_future *gale_coro_spawn(gale_loop *loop, gale_coro_fn fn, void *arg,
                             const gale_coro_opts *opts)
{
    if (!loop)
        loop = gale_loop_current();
    gale_future *f = gale_future_new(loop);
    if (!f)
        return NULL;
    size_t size = opts ? opts->stack_size : GALE_CORO_DEFAULT_STACK;
    if (!fn) {
        gale_log_error(GALE_LOG_GENERAL, "gale_coro_spawn: NULL function");
        gale_future_set_error(f, -EINVAL, "gale_coro_spawn: NULL function");
        return f;
    }
    if (size < GALE_CORO_MIN_STACK || size > GALE_CORO_MAX_STACK) {
        gale_log_error(GALE_LOG_GENERAL, "gale_coro_spawn: stack size %zu outside %u..%u bytes",
                       size, GALE_CORO_MIN_STACK, GALE_CORO_MAX_STACK);
        gale_future_set_error(f, -EINVAL, "coroutine stack size out of range");
        return f;
    }
    thread_setup(); /* also sets page_size, once per process */
    size = (size + page_size - 1) & ~(page_size - 1);

    gale_coro *co = calloc(1, sizeof *co);
    if (!co) {
        gale_future_unref(f);
        return NULL;
    }
    co->stack = stack_get(size);
    if (!co->stack) {
        int err = -errno;
        free(co);
        gale_log_error(GALE_LOG_GENERAL, "gale_coro_spawn: cannot map a %zu-byte stack: %s", size,
                       gale_strerror(err));
        gale_future_set_error(f, -ENOMEM, "cannot map a coroutine stack");
        return f;
    }
    co->stack_size = size;
    int rc = ctx_init(co);
    if (rc) {
        stack_put(co->stack, size);
        free(co);
        gale_future_set_error(f, rc, NULL);
        return f;
    }
    co->loop = loop;
    co->thread = pthread_self();
    co->fn = fn;
    co->arg = arg;
    co->future = gale_future_ref(f);
    co->refs = 1;
    co->next = tls.live;
    if (tls.live)
        tls.live->prev = co;
    tls.live = co;
    tls.nlive++;
    switch_in(co);
    return f;
}

/* ---- await ---- */

static void resume_cb(gale_loop *loop, void *arg)
{
    gale_coro *co = arg;
    if (co->wake_queued && co->state == CO_WAITING) {
        if (!pthread_equal(co->thread, pthread_self())) {
            gale_log_error(GALE_LOG_GENERAL,
                           "coroutine %p woken on a thread other than its own: left suspended",
                           (void *)co);
        } else {
            co->wake_queued = false;
            switch_in(co);
        }
    }
    co_unref(co);
}

static void wake(gale_coro *co)
{
    if (co->state != CO_WAITING || co->wake_queued)
        return;
    co->wake_queued = true;
    co->refs++;
    int rc = gale_loop_add_callback(co->loop, resume_cb, co);
    if (rc) {
        co->wake_queued = false;
        co->refs--;
        gale_log_error(GALE_LOG_GENERAL, "coroutine %p cannot be resumed: %s", (void *)co,
                       gale_strerror(rc));
    }
}

static void wait_done(gale_future *f, void *arg) { wake(arg); }

static gale_coro *need_current(const char *what)
{
    gale_coro *co = tls.current;
    if (!co)
        gale_log_error(GALE_LOG_GENERAL, "%s called outside a coroutine", what);
    return co;
}

int gale_await(gale_future *f)
{
    gale_coro *co = need_current("gale_await");
    if (!co)
        return -EPERM;
    if (!f)
        return -EINVAL;
    if (co->cancel)
        return co->cancel;
    if (!gale_future_done(f)) {
        int rc = gale_future_add_done_callback(f, wait_done, co);
        if (rc)
            return rc;
        co->wait = gale_future_ref(f);
        co->state = CO_WAITING;
        suspend(co);
        gale_future *w = co->wait;
        co->wait = NULL;
        if (!gale_future_done(w))
            gale_future_remove_done_callback(w, wait_done, co);
        gale_future_unref(w);
        if (co->cancel)
            return co->cancel;
    }
    int err = gale_future_error(f);
    if (err && co->failed != f) {
        gale_future_unref(co->failed);
        co->failed = gale_future_ref(f);
    }
    return err;
}

int gale_await_drop(gale_future *f)
{
    if (!f) {
        if (!need_current("gale_await_drop"))
            return -EPERM;
        return -ENOMEM;
    }
    int rc = gale_await(f);
    gale_future_unref(f);
    return rc;
}

int gale_await_all(gale_future *const *futures, size_t n)
{
    if (!gale_coro_running()) {
        need_current("gale_await_all");
        return -EPERM;
    }
    if (n && !futures)
        return -EINVAL;
    gale_future *all = gale_future_all(gale_coro_current()->loop, futures, n);
    if (!all)
        return -ENOMEM;
    int rc = gale_await(all);
    gale_future_unref(all);
    return rc;
}

int gale_coro_set_result(void *result, void (*dtor)(void *))
{
    gale_coro *co = need_current("gale_coro_set_result");
    if (!co)
        return -EPERM;
    if (co->dtor && co->result != result)
        co->dtor(co->result);
    co->result = result;
    co->dtor = dtor;
    return 0;
}

gale_coro *gale_coro_current(void) { return tls.current; }
bool gale_coro_running(void) { return tls.current != NULL; }
size_t gale_coro_count(void) { return tls.nlive; }

int gale_coro_cancel(gale_coro *co, int reason)
{
    if (!co)
        return -EINVAL;
    if (co->state == CO_DONE)
        return -EALREADY;
    if (!co->cancel)
        co->cancel = reason < 0 ? reason : -ECANCELED;
    if (co->state == CO_WAITING && co->wait) {
        gale_future_remove_done_callback(co->wait, wait_done, co);
        wake(co);
    }
    return 0;
}

static size_t count_on(gale_loop *loop)
{
    size_t n = 0;
    for (gale_coro *co = tls.live; co; co = co->next)
        n += co->loop == loop;
    return n;
}

int gale_coro_shutdown(gale_loop *loop)
{
    if (tls.current) {
        gale_log_error(GALE_LOG_GENERAL, "gale_coro_shutdown called inside a coroutine");
        return -EPERM;
    }
    if (!loop)
        loop = gale_loop_current();
    size_t alive = count_on(loop);
    if (alive) {
        gale_log_warning(GALE_LOG_GENERAL,
                         "%zu coroutine%s still suspended at shutdown: "
                         "cancelled",
                         alive, alive == 1 ? "" : "s");
        for (gale_coro *co = tls.live; co; co = co->next) {
            if (co->loop == loop)
                gale_coro_cancel(co, -ECANCELED);
        }
        /* The wakes are loop callbacks: let the loop run them, so resumption still comes from
         * the loop. A cancelled coroutine never waits again, so this ends quickly. */
        for (int i = 0; i < 100 && count_on(loop); i++) {
            gale_future *m = gale_moment(loop);
            if (!m)
                break;
            int rc = gale_loop_run_until(loop, m, 1.0);
            gale_future_unref(m);
            if (rc == -EBUSY)
                break; /* inside the running loop: they end on its next iteration */
        }
    }
    if (!tls.live)
        pool_trim(0);
    return (int)alive;
}

/* ---- tornado.gen helpers ---- */

static void sleep_fire(gale_loop *loop, void *arg)
{
    gale_future *f = arg;
    gale_future_set_result(f, NULL, NULL);
    gale_future_unref(f);
}

gale_future *gale_sleep(gale_loop *loop, double seconds)
{
    gale_future *f = gale_future_new(loop);
    if (!f)
        return NULL;
    if (isnan(seconds)) {
        gale_future_set_error(f, -EINVAL, "gale_sleep: NaN delay");
        return f;
    }
    gale_future_ref(f);
    int rc = gale_loop_call_later(gale_future_loop(f), seconds, sleep_fire, f, NULL);
    if (rc) {
        gale_future_unref(f);
        gale_future_set_error(f, rc, NULL);
    }
    return f;
}

gale_future *gale_moment(gale_loop *loop)
{
    gale_future *f = gale_future_new(loop);
    if (!f)
        return NULL;
    gale_future_ref(f);
    int rc = gale_loop_add_callback(gale_future_loop(f), sleep_fire, f);
    if (rc) {
        gale_future_unref(f);
        gale_future_set_error(f, rc, NULL);
    }
    return f;
}

/* with_timeout: `st` lives until either `f` completes or the timer fires, whichever is first; the
 * other is then undone, so a future that never completes keeps nothing alive once timed out. */
struct timeout_state {
    gale_future *out;
    gale_future *f;
    gale_loop *loop;
    gale_timeout timer;
};

static void timeout_free(struct timeout_state *st)
{
    gale_future_unref(st->f);
    gale_future_unref(st->out);
    free(st);
}

static void timeout_src_done(gale_future *f, void *arg)
{
    struct timeout_state *st = arg;
    if (st->timer)
        gale_loop_remove_timeout(st->loop, st->timer);
    st->timer = 0;
    /* `f` is done: the chain completes `out` at once, sharing f's result. */
    if (gale_future_chain(f, st->out) != 0)
        gale_future_set_error(st->out, -ENOMEM, NULL);
    timeout_free(st);
}

static void timeout_fire(gale_loop *loop, void *arg)
{
    struct timeout_state *st = arg;
    st->timer = 0;
    gale_future_remove_done_callback(st->f, timeout_src_done, st);
    gale_future_set_error(st->out, -ETIMEDOUT, "Timeout");
    timeout_free(st);
}

gale_future *gale_with_timeout(gale_future *f, double seconds)
{
    gale_future *out = gale_future_new(f ? gale_future_loop(f) : NULL);
    if (!out)
        return NULL;
    if (!f || isnan(seconds)) {
        gale_future_set_error(out, -EINVAL, "gale_with_timeout: bad argument");
        return out;
    }
    struct timeout_state *st = calloc(1, sizeof *st);
    if (!st) {
        gale_future_unref(out);
        return NULL;
    }
    st->out = gale_future_ref(out);
    st->f = gale_future_ref(f);
    st->loop = gale_future_loop(out);
    int rc = gale_loop_call_later(st->loop, seconds, timeout_fire, st, &st->timer);
    if (rc == 0)
        rc = gale_future_add_done_callback(f, timeout_src_done, st); /* may complete `out` now */
    if (rc) {
        if (st->timer)
            gale_loop_remove_timeout(st->loop, st->timer);
        gale_future_set_error(out, rc, NULL);
        timeout_free(st);
    }
    return out;
}

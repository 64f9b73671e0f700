/* Coroutine micro-benchmarks, interleaved over rounds (median and best per scenario):
 *
 *   callback hop   one hop of a callback program: a future is created, a loop callback resolves
 *                  it, and the continuation runs from the loop (gale_loop_add_future), which
 *                  starts the next hop. No coroutine.
 *   await (gale)   the same hop written as a coroutine: the coroutine creates the future, queues
 *                  the resolving callback and awaits it (suspend, resolve from a callback, resume
 *                  from the loop), with gale's coroutines (hand-written switch).
 *   await (ucontext) the same await round trip with a minimal coroutine on glibc's
 *                  makecontext/swapcontext, same wake path through the loop: what gale would cost
 *                  with a ucontext switch.
 *   switch pair    one switch into a context and back: gale's switch against swapcontext.
 *   spawn          spawn a coroutine that returns at once, and drop its future: what running a
 *                  handler method as a coroutine adds per request (stack from the pool).
 *
 * Then the memory per suspended coroutine: VmRSS before and after spawning 10,000 coroutines
 * that all await one pending future, divided by 10,000 (their stacks, records and futures).
 *
 *     coro_bench [ITERATIONS] [ROUNDS]       (defaults 200000, 7)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "core/coro.h"
#include "core/coro_internal.h"
#include "core/future.h"
#include "core/loop.h"

static gale_loop *loop;
static long iters;
static long count;

static double now(void) { return (double)gale_time_ns(); }

static void resolve_cb(gale_loop *l, void *arg) { gale_future_set_result(arg, NULL, NULL); }

/* ---- callback hop ---- */

static void hop(gale_loop *l, void *arg);

static void start_hop(void)
{
    gale_future *f = gale_future_new(loop);
    gale_loop_add_callback(loop, resolve_cb, f);
    gale_loop_add_future(loop, f, hop, f);
}

static void hop(gale_loop *l, void *arg)
{
    gale_future_unref(arg);
    if (++count == iters) {
        gale_loop_stop(loop);
        return;
    }
    start_hop();
}

static double run_callbacks(void)
{
    count = 0;
    double t0 = now();
    start_hop();
    gale_loop_run(loop);
    return (now() - t0) / (double)iters;
}

/* ---- gale await ---- */

static int await_fn(void *arg)
{
    for (long i = 0; i < iters; i++) {
        gale_future *f = gale_future_new(loop);
        gale_loop_add_callback(loop, resolve_cb, f);
        gale_await(f);
        gale_future_unref(f);
    }
    gale_loop_stop(loop);
    return 0;
}

static double run_await(void)
{
    double t0 = now();
    gale_future *co = gale_coro_spawn(loop, await_fn, NULL, NULL);
    gale_loop_run(loop);
    double t = (now() - t0) / (double)iters;
    gale_future_unref(co);
    return t;
}

/* ---- spawn to completion: what a coroutine handler adds per request ---- */

static int empty_fn(void *arg) { return 0; }

static double run_spawn(void)
{
    double t0 = now();
    for (long i = 0; i < iters; i++)
        gale_future_unref(gale_coro_spawn(loop, empty_fn, NULL, NULL));
    return (now() - t0) / (double)iters;
}

/* ---- ucontext await: the same wake path, switching with swapcontext ---- */

static ucontext_t uc_main, uc_co;
static char *uc_stack;
static gale_future *uc_wait;

static void uc_resume(gale_loop *l, void *arg) { swapcontext(&uc_main, &uc_co); }
static void uc_done(gale_future *f, void *arg) { gale_loop_add_callback(loop, uc_resume, NULL); }

static void uc_body(void)
{
    for (long i = 0; i < iters; i++) {
        gale_future *f = gale_future_new(loop);
        gale_loop_add_callback(loop, resolve_cb, f);
        uc_wait = f;
        gale_future_add_done_callback(f, uc_done, NULL);
        swapcontext(&uc_co, &uc_main); /* suspend */
        gale_future_unref(f);
    }
    gale_loop_stop(loop);
    swapcontext(&uc_co, &uc_main);
}

static double run_ucontext_await(void)
{
    getcontext(&uc_co);
    uc_co.uc_stack.ss_sp = uc_stack;
    uc_co.uc_stack.ss_size = GALE_CORO_DEFAULT_STACK;
    uc_co.uc_link = NULL;
    makecontext(&uc_co, uc_body, 0);
    double t0 = now();
    swapcontext(&uc_main, &uc_co);
    gale_loop_run(loop);
    return (now() - t0) / (double)iters;
}

/* ---- raw switch pair ---- */

static ucontext_t ping_main, ping_co;

static void ping_body(void)
{
    for (;;)
        swapcontext(&ping_co, &ping_main);
}

static double run_uc_switch(void)
{
    getcontext(&ping_co);
    ping_co.uc_stack.ss_sp = uc_stack;
    ping_co.uc_stack.ss_size = GALE_CORO_DEFAULT_STACK;
    makecontext(&ping_co, ping_body, 0);
    double t0 = now();
    for (long i = 0; i < iters; i++)
        swapcontext(&ping_main, &ping_co);
    return (now() - t0) / (double)iters;
}

#if GALE_CORO_ASM
static void *asm_main_sp, *asm_co_sp;

static void asm_body(void *arg)
{
    for (;;)
        gale__coro_switch(&asm_co_sp, &asm_main_sp);
}

static double run_asm_switch(void)
{
    /* An initial frame as core/coro.c builds it: the switch "returns" into gale__coro_start. */
    uint64_t *top = (uint64_t *)(void *)(uc_stack + GALE_CORO_DEFAULT_STACK);
#if defined(__x86_64__)
    uint64_t *sp = top - 8;
    memset(sp, 0, 64);
    sp[0] = 0x1F80u | ((uint64_t)0x037Fu << 32);
    sp[4] = (uint64_t)(uintptr_t)asm_body;
    sp[7] = (uint64_t)(uintptr_t)gale__coro_start;
#else
    uint64_t *sp = top - 22;
    memset(sp, 0, 22 * 8);
    sp[0] = (uint64_t)(uintptr_t)asm_body;
    sp[11] = (uint64_t)(uintptr_t)gale__coro_start;
#endif
    asm_co_sp = sp;
    double t0 = now();
    for (long i = 0; i < iters; i++)
        gale__coro_switch(&asm_main_sp, &asm_co_sp);
    return (now() - t0) / (double)iters;
}
#endif

/* ---- memory per suspended coroutine ---- */

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = strtol(line + 6, NULL, 10);
    }
    if (f)
        fclose(f);
    return v;
}

static int park_fn(void *arg)
{
    gale_await(arg);
    return 0;
}

static void memory(void)
{
    enum { N = 10000 };
    gale_future *pending = gale_future_new(loop);
    gale_future **fs = malloc(N * sizeof *fs);
    /* Warm up (thread setup, pool array) so only per-coroutine memory is counted. */
    gale_future *done = gale_future_new(loop);
    gale_future_set_result(done, NULL, NULL);
    gale_future_unref(gale_coro_spawn(loop, park_fn, done, NULL));
    gale_future_unref(done);
    fflush(stdout);
    long before = rss_kib();
    for (int i = 0; i < N; i++)
        fs[i] = gale_coro_spawn(loop, park_fn, pending, NULL);
    long after = rss_kib();
    printf("memory: %d suspended coroutines: RSS +%ld KiB = %.2f KiB per coroutine "
           "(64 KiB stacks reserved, %.0f MiB virtual)\n",
           N, after - before, (double)(after - before) / N,
           (double)N * (GALE_CORO_DEFAULT_STACK + 16384) / 1048576.0);
    gale_future_set_result(pending, NULL, NULL);
    gale_future *all = gale_future_all(loop, fs, N);
    gale_loop_run_until(loop, all, 10);
    gale_future_unref(all);
    for (int i = 0; i < N; i++)
        gale_future_unref(fs[i]);
    free(fs);
    gale_future_unref(pending);
    gale_coro_shutdown(loop);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    iters = argc > 1 ? atol(argv[1]) : 200000;
    int rounds = argc > 2 ? atoi(argv[2]) : 7;
    if (iters <= 0 || rounds <= 0 || rounds > 100) {
        fprintf(stderr, "usage: coro_bench [ITERATIONS] [ROUNDS]\n");
        return 2;
    }
    if (gale_loop_new(GALE_BACKEND_DEFAULT, &loop) != 0)
        return 1;
    gale_loop_make_current(loop);
    uc_stack = malloc(GALE_CORO_DEFAULT_STACK);

    enum { CB, AWAIT, UCAWAIT, ASMSW, UCSW, SPAWN, NS };
    static const char *names[NS] = {"callback hop",
                                    "await (gale)",
                                    "await (ucontext)",
                                    "switch pair (gale)",
                                    "switch pair (swapcontext)",
                                    "spawn + return + free"};
    double t[NS][100];
    for (int r = 0; r < rounds; r++) {
        /* Alternate which goes first. */
        if (r % 2) {
            t[AWAIT][r] = run_await();
            t[CB][r] = run_callbacks();
        } else {
            t[CB][r] = run_callbacks();
            t[AWAIT][r] = run_await();
        }
        t[UCAWAIT][r] = run_ucontext_await();
#if GALE_CORO_ASM
        t[ASMSW][r] = run_asm_switch();
#else
        t[ASMSW][r] = 0;
#endif
        t[UCSW][r] = run_uc_switch();
        t[SPAWN][r] = run_spawn();
    }
    printf("%ld iterations x %d rounds (ns per operation)\n", iters, rounds);
    printf("%-28s %10s %10s\n", "scenario", "best", "median");
    double med[NS];
    for (int s = 0; s < NS; s++) {
        qsort(t[s], (size_t)rounds, sizeof t[s][0], cmp);
        med[s] = t[s][rounds / 2];
        printf("%-28s %10.1f %10.1f\n", names[s], t[s][0], med[s]);
    }
    printf("await/callback hop: %.2fx (median); ucontext await/gale await: %.2fx; "
           "swapcontext/gale switch: %.1fx\n",
           med[AWAIT] / med[CB], med[UCAWAIT] / med[AWAIT],
           med[ASMSW] > 0 ? med[UCSW] / med[ASMSW] : 0.0);
    memory();
    gale_loop_free(loop);
    free(uc_stack);
    return 0;
}

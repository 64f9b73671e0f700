/* Loop micro-benchmarks, gale against libuv, interleaved in one run:
 *   callbacks  1M callbacks queued and run. gale: gale_loop_add_callback. libuv has no callback
 *              queue, so the baseline is what a libuv program writes for one: a ring buffer of
 *              {cb, arg} drained (snapshot, like gale) by a uv_idle handle that is active only
 *              while the queue is non-empty. uv_async is not comparable: it coalesces wake-ups and
 *              carries no per-call argument.
 *   timers     1M timers started with random delays, then all cancelled (uv_timer_init +
 *              uv_timer_start / uv_timer_stop; gale_loop_call_later / gale_loop_remove_timeout).
 *   fire       100k timers with random delays in [0, 10 ms) started, then all fired; the wait for
 *              the last deadline is spent outside the measurement (timed: starting + firing).
 * Prints ns/op per round and the best of the rounds, with the ratio gale/libuv.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "core/loop.h"

#define NCB 1000000
#define NTIMERS 1000000
#define NFIRE 100000
#define ROUNDS 7

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint32_t *delays_ms; /* shared random sequence so both sides do the same work */

static long counter;

/* ---- callbacks ---- */

static void g_count(gale_loop *loop, void *arg)
{
    if (++counter == NCB)
        gale_loop_stop(loop);
}

static void g_spawn(gale_loop *loop, void *arg)
{
    for (int i = 0; i < NCB; i++)
        gale_loop_add_callback(loop, g_count, NULL);
}

static double gale_callbacks(void)
{
    gale_loop *loop;
    gale_loop_new(GALE_BACKEND_EPOLL, &loop);
    counter = 0;
    double t0 = now_s();
    gale_loop_add_callback(loop, g_spawn, NULL);
    gale_loop_run(loop);
    double t = now_s() - t0;
    if (counter != NCB)
        fprintf(stderr, "gale callbacks: ran %ld\n", counter);
    gale_loop_free(loop);
    return t * 1e9 / NCB;
}

typedef void (*q_cb)(uv_loop_t *loop, void *arg);
struct qent {
    q_cb cb;
    void *arg;
};
static struct {
    struct qent *buf;
    size_t head, n, cap;
    uv_idle_t idle;
} uq;

static void uq_drain(uv_idle_t *h)
{
    size_t n = uq.n;
    for (size_t i = 0; i < n; i++) {
        struct qent e = uq.buf[uq.head];
        uq.head = (uq.head + 1) & (uq.cap - 1);
        uq.n--;
        e.cb(h->loop, e.arg);
    }
    if (uq.n == 0)
        uv_idle_stop(h);
}

/* Kept out of line, like gale_loop_add_callback (which lives in the library). */
__attribute__((noinline)) static int uq_add(q_cb cb, void *arg)
{
    if (uq.n == uq.cap) {
        size_t cap = uq.cap ? uq.cap * 2 : 256;
        struct qent *b = malloc(cap * sizeof *b);
        if (!b)
            return -1;
        for (size_t i = 0; i < uq.n; i++)
            b[i] = uq.buf[(uq.head + i) & (uq.cap - 1)];
        free(uq.buf);
        uq.buf = b;
        uq.cap = cap;
        uq.head = 0;
    }
    if (uq.n == 0)
        uv_idle_start(&uq.idle, uq_drain);
    uq.buf[(uq.head + uq.n) & (uq.cap - 1)] = (struct qent){cb, arg};
    uq.n++;
    return 0;
}

static void u_count(uv_loop_t *loop, void *arg) { ++counter; }

static void u_spawn(uv_loop_t *loop, void *arg)
{
    for (int i = 0; i < NCB; i++)
        uq_add(u_count, NULL);
}

static double uv_callbacks(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_idle_init(&loop, &uq.idle);
    counter = 0;
    double t0 = now_s();
    uq_add(u_spawn, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    double t = now_s() - t0;
    if (counter != NCB)
        fprintf(stderr, "libuv callbacks: ran %ld\n", counter);
    uv_close((uv_handle_t *)&uq.idle, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(uq.buf);
    uq.buf = NULL;
    uq.head = uq.n = uq.cap = 0;
    return t * 1e9 / NCB;
}

/* ---- timers: start then cancel ---- */

static void g_never(gale_loop *loop, void *arg) {}

static double gale_timers(void)
{
    gale_loop *loop;
    gale_loop_new(GALE_BACKEND_EPOLL, &loop);
    gale_timeout *h = malloc(NTIMERS * sizeof *h);
    double t0 = now_s();
    for (int i = 0; i < NTIMERS; i++)
        gale_loop_call_later(loop, 1 + delays_ms[i] * 1e-3, g_never, NULL, &h[i]);
    for (int i = 0; i < NTIMERS; i++)
        gale_loop_remove_timeout(loop, h[i]);
    double t = now_s() - t0;
    if (gale_loop_timer_count(loop) != 0)
        fprintf(stderr, "gale timers left: %zu\n", gale_loop_timer_count(loop));
    free(h);
    gale_loop_free(loop);
    return t * 1e9 / NTIMERS;
}

static void u_never(uv_timer_t *t) {}

static double uv_timers(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t *h = malloc(NTIMERS * sizeof *h);
    double t0 = now_s();
    for (int i = 0; i < NTIMERS; i++) {
        uv_timer_init(&loop, &h[i]);
        uv_timer_start(&h[i], u_never, 1000 + delays_ms[i], 0);
    }
    for (int i = 0; i < NTIMERS; i++)
        uv_timer_stop(&h[i]);
    double t = now_s() - t0;
    for (int i = 0; i < NTIMERS; i++)
        uv_close((uv_handle_t *)&h[i], NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(h);
    return t * 1e9 / NTIMERS;
}

/* ---- timers: fire ---- */

static void g_fire(gale_loop *loop, void *arg)
{
    if (++counter == NFIRE)
        gale_loop_stop(loop);
}

static double gale_fire(void)
{
    gale_loop *loop;
    gale_loop_new(GALE_BACKEND_EPOLL, &loop);
    counter = 0;
    double t0 = now_s();
    for (int i = 0; i < NFIRE; i++)
        gale_loop_call_later(loop, (delays_ms[i] % 10) * 1e-3, g_fire, NULL, NULL);
    double add = now_s() - t0;
    sleep_s(0.02); /* every deadline passes, outside the measurement */
    t0 = now_s();
    gale_loop_run(loop);
    double t = add + now_s() - t0;
    if (counter != NFIRE)
        fprintf(stderr, "gale fired %ld\n", counter);
    gale_loop_free(loop);
    return t * 1e9 / NFIRE;
}

static void u_fire(uv_timer_t *t) { ++counter; }

static double uv_fire(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t *h = malloc(NFIRE * sizeof *h);
    counter = 0;
    double t0 = now_s();
    for (int i = 0; i < NFIRE; i++) {
        uv_timer_init(&loop, &h[i]);
        uv_timer_start(&h[i], u_fire, delays_ms[i] % 10, 0);
    }
    double add = now_s() - t0;
    sleep_s(0.02);
    t0 = now_s();
    uv_run(&loop, UV_RUN_DEFAULT);
    double t = add + now_s() - t0;
    if (counter != NFIRE)
        fprintf(stderr, "libuv fired %ld\n", counter);
    for (int i = 0; i < NFIRE; i++)
        uv_close((uv_handle_t *)&h[i], NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(h);
    return t * 1e9 / NFIRE;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    delays_ms = malloc(NTIMERS * sizeof *delays_ms);
    for (int i = 0; i < NTIMERS; i++)
        delays_ms[i] = (uint32_t)(rng() % 1000000);
    const char *names[3] = {"callbacks (1M add+run)", "timers (1M start+cancel)",
                            "fire (100k timers fired)"};
    double (*gale_fn[3])(void) = {gale_callbacks, gale_timers, gale_fire};
    double (*uv_fn[3])(void) = {uv_callbacks, uv_timers, uv_fire};
    double best_g[3], best_u[3], all_g[3][ROUNDS], all_u[3][ROUNDS];
    for (int k = 0; k < 3; k++)
        best_g[k] = best_u[k] = 1e300;
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < 3; k++) {
            /* Alternate who goes first so neither side always gets the warm caches. */
            double g, u;
            if (r & 1) {
                u = uv_fn[k]();
                g = gale_fn[k]();
            } else {
                g = gale_fn[k]();
                u = uv_fn[k]();
            }
            all_g[k][r] = g;
            all_u[k][r] = u;
            if (g < best_g[k])
                best_g[k] = g;
            if (u < best_u[k])
                best_u[k] = u;
            printf("round %d  %-26s gale %7.1f ns/op  libuv %7.1f ns/op  ratio %.2f\n", r + 1,
                   names[k], g, u, g / u);
        }
    }
    printf("\nbest of %d rounds\n", ROUNDS);
    for (int k = 0; k < 3; k++)
        printf("%-26s gale %7.1f ns/op  libuv %7.1f ns/op  ratio %.2f\n", names[k], best_g[k],
               best_u[k], best_g[k] / best_u[k]);
    printf("\nmedian of %d rounds\n", ROUNDS);
    for (int k = 0; k < 3; k++) {
        qsort(all_g[k], ROUNDS, sizeof(double), cmp_double);
        qsort(all_u[k], ROUNDS, sizeof(double), cmp_double);
        double g = all_g[k][ROUNDS / 2], u = all_u[k][ROUNDS / 2];
        printf("%-26s gale %7.1f ns/op  libuv %7.1f ns/op  ratio %.2f\n", names[k], g, u, g / u);
    }
    free(delays_ms);
    return 0;
}

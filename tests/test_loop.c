/* Loop suite: every tcase runs once on the epoll backend and once on the poll backend. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/future.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/loop_internal.h"
#include "testutil.h"

static gale_backend g_backend = GALE_BACKEND_EPOLL;
static const char *g_backend_name = "epoll"; /* what g_backend runs on here */

static gale_loop *new_loop(void)
{
    gale_loop *loop = NULL;
    ck_assert_int_eq(gale_loop_new(g_backend, &loop), 0);
    ck_assert_ptr_nonnull(loop);
    ck_assert_str_eq(gale_loop_backend_name(loop), g_backend_name);
    return loop;
}

static void busy_wait(double seconds)
{
    int64_t end = gale_time_ns() + (int64_t)(seconds * 1e9);
    while (gale_time_ns() < end)
        ;
}

static void stop_cb(gale_loop *loop, void *arg) { gale_loop_stop(loop); }

static void set_flag(gale_loop *loop, void *arg) { *(bool *)arg = true; }

static bool flag_pred(void *arg) { return *(bool *)arg; }

/* ---- callbacks ---- */

struct order {
    int seq[64];
    int n;
};

struct order_item {
    struct order *o;
    int id;
    struct order_item *child; /* queued when this one runs */
};

static void order_cb(gale_loop *loop, void *arg)
{
    struct order_item *it = arg;
    it->o->seq[it->o->n++] = it->id;
    if (it->child)
        gale_loop_add_callback(loop, order_cb, it->child);
}

START_TEST(test_loop_callbacks_run_fifo_and_added_ones_wait_for_next_iteration)
{
    gale_loop *loop = new_loop();
    struct order o = {0};
    struct order_item b = {&o, 2, NULL};
    struct order_item a = {&o, 1, &b};
    struct order_item c = {&o, 3, NULL};
    ck_assert_int_eq(gale_loop_add_callback(loop, order_cb, &a), 0);
    ck_assert_int_eq(gale_loop_add_callback(loop, order_cb, &c), 0);
    ck_assert_int_eq(gale_loop_add_callback(loop, stop_cb, NULL), 0);
    gale_loop_run(loop);
    /* a and c ran in the first iteration; b, added by a, did not. */
    ck_assert_int_eq(o.n, 2);
    ck_assert_int_eq(o.seq[0], 1);
    ck_assert_int_eq(o.seq[1], 3);
    ck_assert_int_eq(gale_loop_add_callback(loop, stop_cb, NULL), 0);
    gale_loop_run(loop);
    ck_assert_int_eq(o.n, 3);
    ck_assert_int_eq(o.seq[2], 2);
    gale_loop_free(loop);
}
END_TEST

struct starve {
    int spins;
    bool io_seen, timer_seen;
    int fds[2];
};

static void spin_cb(gale_loop *loop, void *arg)
{
    struct starve *s = arg;
    s->spins++;
    if (s->io_seen && s->timer_seen)
        gale_loop_stop(loop);
    else
        gale_loop_add_callback(loop, spin_cb, s);
}

static void starve_io(gale_loop *loop, int fd, unsigned events, void *arg)
{
    struct starve *s = arg;
    char c;
    ck_assert(events & GALE_READ);
    ck_assert_int_eq(read(fd, &c, 1), 1);
    s->io_seen = true;
}

static void starve_timer(gale_loop *loop, void *arg) { ((struct starve *)arg)->timer_seen = true; }

START_TEST(test_loop_self_readding_callback_does_not_starve_io_or_timers)
{
    gale_loop *loop = new_loop();
    struct starve s = {0};
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s.fds), 0);
    ck_assert_int_eq(write(s.fds[1], "x", 1), 1);
    ck_assert_int_eq(gale_loop_add_handler(loop, s.fds[0], GALE_READ, starve_io, &s), 0);
    ck_assert_int_eq(gale_loop_call_later(loop, 0.005, starve_timer, &s, NULL), 0);
    gale_loop_add_callback(loop, spin_cb, &s);
    gale_loop_run(loop);
    ck_assert(s.io_seen && s.timer_seen);
    ck_assert_int_gt(s.spins, 1);
    gale_loop_remove_handler(loop, s.fds[0]);
    close(s.fds[0]);
    close(s.fds[1]);
    gale_loop_free(loop);
}
END_TEST

struct remote {
    gale_loop *loop;
    bool ran;
};

static void remote_cb(gale_loop *loop, void *arg)
{
    struct remote *r = arg;
    r->ran = true;
    gale_loop_stop(loop);
}

static void *remote_thread(void *arg)
{
    struct remote *r = arg;
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL); /* let the loop go to sleep first; the test does not depend on it */
    gale_loop_add_callback(r->loop, remote_cb, r);
    return NULL;
}

START_TEST(test_loop_add_callback_from_other_thread_wakes_sleeping_loop)
{
    gale_loop *loop = new_loop();
    struct remote r = {.loop = loop};
    bool guard = false;
    /* Without a wake-up the loop would sleep until this timer. */
    ck_assert_int_eq(gale_loop_call_later(loop, 10, set_flag, &guard, NULL), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, remote_thread, &r), 0);
    gale_loop_run(loop);
    pthread_join(t, NULL);
    ck_assert(r.ran);
    ck_assert(!guard);
    gale_loop_free(loop);
}
END_TEST

static void *stop_thread(void *arg)
{
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    gale_loop_stop(arg);
    return NULL;
}

START_TEST(test_loop_stop_from_other_thread_wakes_loop)
{
    gale_loop *loop = new_loop();
    bool guard = false;
    ck_assert_int_eq(gale_loop_call_later(loop, 10, set_flag, &guard, NULL), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, stop_thread, loop), 0);
    ck_assert_int_eq(gale_loop_run(loop), 0);
    pthread_join(t, NULL);
    ck_assert(!guard);
    gale_loop_free(loop);
}
END_TEST

/* A loop run on one thread and later on another: epoll and poll loops move; a uring loop's ring is
 * bound to its first thread, so the second run says so (-EXDEV) instead of failing every wait. */
static void *run_once_thread(void *arg)
{
    gale_loop *loop = arg;
    bool ran = false;
    ck_assert_int_eq(gale_loop_add_callback(loop, set_flag, &ran), 0);
    ck_assert_int_eq(gale_loop_add_callback(loop, stop_cb, NULL), 0);
    ck_assert_int_eq(gale_loop_run(loop), 0);
    ck_assert(ran);
    return NULL;
}

START_TEST(test_loop_run_on_a_second_thread)
{
    gale_loop *loop = new_loop();
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, run_once_thread, loop), 0);
    pthread_join(t, NULL);
    bool ran = false;
    ck_assert_int_eq(gale_loop_add_callback(loop, set_flag, &ran), 0);
    ck_assert_int_eq(gale_loop_add_callback(loop, stop_cb, NULL), 0);
    if (strcmp(g_backend_name, "uring") == 0) {
        ck_assert_int_eq(gale_loop_run(loop), -EXDEV);
        ck_assert(!ran);
        ck_assert_int_eq(gale_loop_run(loop), -EXDEV); /* and not stuck "running" */
    } else {
        ck_assert_int_eq(gale_loop_run(loop), 0);
        ck_assert(ran);
    }
    gale_loop_free(loop);
}
END_TEST

static void count_cb(gale_loop *loop, void *arg) { (*(int *)arg)++; }

/* A thread may make a loop current while another thread runs it (a setup mistake, or code that
 * calls gale_loop_make_current() to pick the loop for later calls): its add_callback and stop
 * must still take the thread-safe path, or they race with the running loop. */
#define FOREIGN_CALLBACKS 200000

struct foreign {
    gale_loop *loop;
    int counted; /* touched by the loop's thread only */
    int at_last; /* `counted` when the last callback ran */
    int failed;  /* add_callback errors */
};

static void foreign_count(gale_loop *loop, void *arg) { ((struct foreign *)arg)->counted++; }

static void foreign_last(gale_loop *loop, void *arg)
{
    struct foreign *f = arg;
    f->at_last = f->counted;
    gale_loop_stop(loop);
}

static void *foreign_adder(void *arg)
{
    struct foreign *f = arg;
    gale_loop_make_current(f->loop); /* current here, but running on the test's thread */
    for (int i = 0; i < FOREIGN_CALLBACKS; i++)
        if (gale_loop_add_callback(f->loop, foreign_count, f) != 0)
            f->failed++;
    if (gale_loop_add_callback(f->loop, foreign_last, f) != 0)
        f->failed++;
    gale_loop_make_current(NULL);
    return NULL;
}

START_TEST(test_loop_add_callback_from_thread_where_it_is_current_but_not_running)
{
    gale_loop *loop = new_loop();
    struct foreign f = {.loop = loop};
    bool guard = false;
    ck_assert_int_eq(gale_loop_call_later(loop, 10, set_flag, &guard, NULL), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, foreign_adder, &f), 0);
    gale_loop_run(loop);
    pthread_join(t, NULL);
    ck_assert(!guard);
    ck_assert_int_eq(f.failed, 0);
    /* every callback ran, in the order one thread added them */
    ck_assert_int_eq(f.at_last, FOREIGN_CALLBACKS);
    gale_loop_free(loop);
}
END_TEST

static void *foreign_stopper(void *arg)
{
    gale_loop_make_current(arg);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    gale_loop_stop(arg);
    gale_loop_make_current(NULL);
    return NULL;
}

START_TEST(test_loop_stop_from_thread_where_it_is_current_but_not_running_wakes_it)
{
    gale_loop *loop = new_loop();
    /* Without a wake-up the loop sleeps until this timer is due, then sees the stop (the timer
     * itself does not run): so the check is how long the run took, against a wide margin. */
    bool guard = false;
    ck_assert_int_eq(gale_loop_call_later(loop, 30, set_flag, &guard, NULL), 0);
    pthread_t t;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(pthread_create(&t, NULL, foreign_stopper, loop), 0);
    ck_assert_int_eq(gale_loop_run(loop), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_join(t, NULL);
    ck_assert_int_lt(t1.tv_sec - t0.tv_sec, 15);
    ck_assert(!guard);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_loop_stop_before_run_returns_at_once_once)
{
    gale_loop *loop = new_loop();
    int n = 0;
    gale_loop_add_callback(loop, count_cb, &n);
    gale_loop_stop(loop);
    ck_assert_int_eq(gale_loop_run(loop), 0);
    ck_assert_int_eq(n, 0);
    gale_loop_add_callback(loop, stop_cb, NULL);
    ck_assert_int_eq(gale_loop_run(loop), 0);
    ck_assert_int_eq(n, 1);
    gale_loop_free(loop);
}
END_TEST

static void run_nested(gale_loop *loop, void *arg)
{
    *(int *)arg = gale_loop_run(loop);
    gale_loop_stop(loop);
}

START_TEST(test_loop_run_while_running_is_ebusy)
{
    gale_loop *loop = new_loop();
    int rc = 1;
    gale_loop_add_callback(loop, run_nested, &rc);
    gale_loop_run(loop);
    ck_assert_int_eq(rc, -EBUSY);
    gale_loop_free(loop);
}
END_TEST

static void resolve_later(gale_loop *loop, void *arg)
{
    gale_future_set_result(arg, (void *)0x1234, NULL);
}

START_TEST(test_loop_run_until_future_and_timeout)
{
    gale_loop *loop = new_loop();
    gale_future *f = gale_future_new(loop);
    gale_loop_call_later(loop, 0.01, resolve_later, f, NULL);
    ck_assert_int_eq(gale_loop_run_until(loop, f, 10), 0);
    ck_assert(gale_future_done(f));
    ck_assert_ptr_eq(gale_future_result(f), (void *)0x1234);
    /* Already done: returns at once. */
    ck_assert_int_eq(gale_loop_run_until(loop, f, 10), 0);
    gale_future_unref(f);

    gale_future *never = gale_future_new(loop);
    ck_assert_int_eq(gale_loop_run_until(loop, never, 0.02), -ETIMEDOUT);
    ck_assert(!gale_future_done(never));
    /* The waiter was removed: completing it now touches nothing of the finished run. */
    ck_assert_int_eq(gale_future_set_result(never, NULL, NULL), 0);
    gale_future_unref(never);
    ck_assert_int_eq(gale_loop_run_until(NULL, NULL, 1), -EINVAL);
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    gale_loop_free(loop);
}
END_TEST

static gale_future *sync_ok(gale_loop *loop, void *arg)
{
    gale_future *f = gale_future_new(loop);
    gale_loop_call_later(loop, 0.005, resolve_later, f, NULL);
    return f;
}

static gale_future *sync_err(gale_loop *loop, void *arg)
{
    gale_future *f = gale_future_new(loop);
    gale_future_set_error(f, -ECONNREFUSED, NULL);
    return f;
}

static gale_future *sync_never(gale_loop *loop, void *arg)
{
    *(gale_future **)arg = gale_future_new(loop);
    return gale_future_ref(*(gale_future **)arg);
}

static gale_future *sync_null(gale_loop *loop, void *arg) { return NULL; }

START_TEST(test_loop_run_sync_result_error_timeout)
{
    gale_loop *loop = new_loop();
    gale_future *out = NULL;
    ck_assert_int_eq(gale_loop_run_sync(loop, sync_ok, NULL, 10, &out), 0);
    ck_assert_ptr_eq(gale_future_result(out), (void *)0x1234);
    gale_future_unref(out);
    ck_assert_int_eq(gale_loop_run_sync(loop, sync_err, NULL, 10, NULL), -ECONNREFUSED);
    gale_future *mine = NULL;
    ck_assert_int_eq(gale_loop_run_sync(loop, sync_never, &mine, 0.02, &out), -ETIMEDOUT);
    ck_assert_ptr_eq(out, mine);
    ck_assert(!gale_future_done(out));
    gale_future_unref(out);
    gale_future_unref(mine);
    ck_assert_int_eq(gale_loop_run_sync(loop, sync_null, NULL, 1, &out), -EINVAL);
    ck_assert_ptr_null(out);
    ck_assert_int_eq(gale_loop_run_sync(loop, NULL, NULL, 1, NULL), -EINVAL);
    gale_loop_free(loop);
}
END_TEST

/* ---- timers ---- */

struct fire_log {
    int ids[256];
    int n;
};

struct fire_item {
    struct fire_log *log;
    int id;
};

static void fire_cb(gale_loop *loop, void *arg)
{
    struct fire_item *it = arg;
    it->log->ids[it->log->n++] = it->id;
}

static bool fired_n(void *arg) { return ((struct fire_log *)arg)->n >= 8; }

START_TEST(test_loop_timers_fire_in_deadline_order_fifo_on_ties)
{
    gale_loop *loop = new_loop();
    struct fire_log log = {0};
    struct fire_item it[8];
    double base = gale_loop_time(loop) + 0.01;
    /* ids 0..7: deadlines base+{3,1,1,2,1,0,3,0} ms; equal deadlines keep insertion order. */
    int off[8] = {3, 1, 1, 2, 1, 0, 3, 0};
    for (int i = 0; i < 8; i++) {
        it[i] = (struct fire_item){&log, i};
        ck_assert_int_eq(gale_loop_call_at(loop, base + off[i] * 1e-3, fire_cb, &it[i], NULL), 0);
    }
    ck_assert_int_eq(gale_loop_timer_count(loop), 8);
    ck_assert(test_wait_until(loop, fired_n, &log, 10));
    int want[8] = {5, 7, 1, 2, 4, 3, 0, 6};
    ck_assert_int_eq(log.n, 8);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(log.ids[i], want[i]);
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    gale_loop_free(loop);
}
END_TEST

struct remover {
    gale_timeout self, other;
    int self_rc, other_rc;
    int other_fired;
    int fired;
};

static void remover_cb(gale_loop *loop, void *arg)
{
    struct remover *r = arg;
    r->fired++;
    r->self_rc = gale_loop_remove_timeout(loop, r->self);
    r->other_rc = gale_loop_remove_timeout(loop, r->other);
}

static void other_cb(gale_loop *loop, void *arg) { ((struct remover *)arg)->other_fired++; }

START_TEST(test_loop_timer_removal_inside_timer_callback)
{
    gale_loop *loop = new_loop();
    struct remover r = {0};
    double at = gale_loop_time(loop) + 0.005;
    /* Same deadline: remover first (FIFO), so both are due in the same iteration. */
    ck_assert_int_eq(gale_loop_call_at(loop, at, remover_cb, &r, &r.self), 0);
    ck_assert_int_eq(gale_loop_call_at(loop, at, other_cb, &r, &r.other), 0);
    ck_assert(r.self != 0 && r.other != 0 && r.self != r.other);
    test_run_for(loop, 0.05);
    ck_assert_int_eq(r.fired, 1);
    ck_assert_int_eq(r.self_rc, -ENOENT);
    ck_assert_int_eq(r.other_rc, 0);
    ck_assert_int_eq(r.other_fired, 0);
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    ck_assert(gale__heap_check(loop));
    /* Both handles are stale now, and stay stale when their slots are reused. */
    gale_timeout t;
    ck_assert_int_eq(gale_loop_call_later(loop, 1, other_cb, &r, &t), 0);
    ck_assert_int_eq(gale_loop_remove_timeout(loop, r.self), -ENOENT);
    ck_assert_int_eq(gale_loop_remove_timeout(loop, r.other), -ENOENT);
    ck_assert_int_eq(gale_loop_timer_count(loop), 1);
    ck_assert_int_eq(gale_loop_remove_timeout(loop, t), 0);
    ck_assert_int_eq(gale_loop_remove_timeout(loop, t), -ENOENT);
    ck_assert_int_eq(gale_loop_remove_timeout(loop, 0), -ENOENT);
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_loop_timer_removed_by_callback_before_it_runs_does_not_fire)
{
    gale_loop *loop = new_loop();
    struct remover r = {0};
    /* A due timer is picked at the start of the iteration; a plain callback of that same
     * iteration cancels it before the timer pass runs. */
    ck_assert_int_eq(gale_loop_call_at(loop, 0, other_cb, &r, &r.other), 0);
    gale_loop_add_callback(loop, remover_cb, &r);
    test_run_for(loop, 0.02);
    ck_assert_int_eq(r.other_rc, 0);
    ck_assert_int_eq(r.other_fired, 0);
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    gale_loop_free(loop);
}
END_TEST

#define MANY 100000

struct many {
    int64_t *deadline;
    bool *cancelled;
    bool *fired;
    int nfired;
    int64_t last;
    bool in_order;
};

static struct many g_many;

static void many_cb(gale_loop *loop, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    struct many *m = &g_many;
    if (m->deadline[i] < m->last || m->cancelled[i] || m->fired[i])
        m->in_order = false;
    m->last = m->deadline[i];
    m->fired[i] = true;
    m->nfired++;
}

static bool many_done(void *arg) { return g_many.nfired >= *(int *)arg; }

START_TEST(test_loop_100k_random_timers_half_cancelled_fire_the_rest_in_order)
{
    gale_loop *loop = new_loop();
    struct many *m = &g_many;
    m->deadline = calloc(MANY, sizeof *m->deadline);
    m->cancelled = calloc(MANY, sizeof *m->cancelled);
    m->fired = calloc(MANY, sizeof *m->fired);
    gale_timeout *h = calloc(MANY, sizeof *h);
    m->in_order = true;
    int bad = 0;
    srand(12345);
    double now = gale_loop_time(loop);
    for (size_t i = 0; i < MANY; i++) {
        /* Millisecond resolution so many deadlines tie. */
        int ms = rand() % 100;
        double at = now + 0.02 + ms * 1e-3;
        /* Check records every passing assertion: count failures in the hot loops instead. */
        bad += gale_loop_call_at(loop, at, many_cb, (void *)(uintptr_t)i, &h[i]) != 0;
        m->deadline[i] = (int64_t)(at * 1e9);
        if (i % 10000 == 0)
            bad += !gale__heap_check(loop);
    }
    ck_assert_int_eq(gale_loop_timer_count(loop), MANY);
    /* Cancel a random half. */
    size_t cancelled = 0;
    for (size_t i = 0; i < MANY; i++) {
        if (rand() & 1) {
            bad += gale_loop_remove_timeout(loop, h[i]) != 0;
            m->cancelled[i] = true;
            cancelled++;
        }
        if (i % 10000 == 0)
            bad += !gale__heap_check(loop);
    }
    ck_assert_int_eq(bad, 0);
    ck_assert(gale__heap_check(loop));
    ck_assert_int_eq(gale_loop_timer_count(loop), MANY - cancelled);
    int expect = (int)(MANY - cancelled);
    ck_assert(test_wait_until(loop, many_done, &expect, 20));
    test_run_for(loop, 0.01); /* nothing more fires */
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    ck_assert(gale__heap_check(loop));
    ck_assert(m->in_order);
    ck_assert_int_eq(m->nfired, (int)(MANY - cancelled));
    for (size_t i = 0; i < MANY; i++)
        bad += m->fired[i] == m->cancelled[i];
    ck_assert_int_eq(bad, 0);
    free(m->deadline);
    free(m->cancelled);
    free(m->fired);
    free(h);
    gale_loop_free(loop);
}
END_TEST

/* ---- fd handlers ---- */

struct io {
    int fds[2];
    int reads, writes;
    unsigned last_events;
    char buf[16];
};

static void io_cb(gale_loop *loop, int fd, unsigned events, void *arg)
{
    struct io *io = arg;
    io->last_events = events;
    if (events & GALE_READ) {
        io->reads++;
        ck_assert_int_eq(read(fd, io->buf, sizeof io->buf), 5);
    }
    if (events & GALE_WRITE) {
        io->writes++;
        ck_assert_int_eq(write(fd, "hello", 5), 5);
        gale_loop_update_handler(loop, fd, GALE_READ);
    }
}

static bool io_pred(void *arg)
{
    struct io *io = arg;
    return io->reads >= 1;
}

START_TEST(test_loop_handler_read_write_dispatch_over_socketpair)
{
    gale_loop *loop = new_loop();
    struct io a = {0}, b = {0};
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a.fds), 0);
    /* a.fds[0] writes once when writable; a.fds[1] reads it. */
    ck_assert_int_eq(gale_loop_add_handler(loop, a.fds[0], GALE_WRITE, io_cb, &a), 0);
    ck_assert_int_eq(gale_loop_add_handler(loop, a.fds[1], GALE_READ, io_cb, &b), 0);
    ck_assert_int_eq(gale_loop_add_handler(loop, a.fds[1], GALE_READ, io_cb, &b), -EEXIST);
    ck_assert(test_wait_until(loop, io_pred, &b, 10));
    ck_assert_int_eq(a.writes, 1);
    ck_assert_int_eq(a.reads, 0);
    ck_assert_int_eq(b.reads, 1);
    ck_assert_int_eq(b.writes, 0);
    ck_assert_mem_eq(b.buf, "hello", 5);
    ck_assert_int_eq(gale_loop_remove_handler(loop, a.fds[0]), 0);
    ck_assert_int_eq(gale_loop_remove_handler(loop, a.fds[1]), 0);
    close(a.fds[0]);
    close(a.fds[1]);
    gale_loop_free(loop);
}
END_TEST

static void count_handler(gale_loop *loop, int fd, unsigned events, void *arg) { (*(int *)arg)++; }

START_TEST(test_loop_update_handler_changes_interest)
{
    gale_loop *loop = new_loop();
    int fds[2], n = 0;
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    /* Writable but not readable: READ interest sees nothing. */
    ck_assert_int_eq(gale_loop_add_handler(loop, fds[0], GALE_READ, count_handler, &n), 0);
    test_run_for(loop, 0.02);
    ck_assert_int_eq(n, 0);
    ck_assert_int_eq(gale_loop_update_handler(loop, fds[0], GALE_READ), 0); /* unchanged */
    ck_assert_int_eq(gale_loop_update_handler(loop, fds[0], GALE_WRITE), 0);
    test_run_for(loop, 0.02);
    ck_assert_int_gt(n, 0);
    ck_assert_int_eq(gale_loop_update_handler(loop, fds[0], 0), 0);
    int before = n;
    test_run_for(loop, 0.02);
    ck_assert_int_eq(n, before);
    ck_assert_int_eq(gale_loop_update_handler(loop, fds[1], GALE_READ), -ENOENT);
    ck_assert_int_eq(gale_loop_update_handler(loop, fds[0], 0x100), -EINVAL);
    ck_assert_int_eq(gale_loop_update_handler(loop, -1, GALE_READ), -EINVAL);
    gale_loop_remove_handler(loop, fds[0]);
    close(fds[0]);
    close(fds[1]);
    gale_loop_free(loop);
}
END_TEST

struct pair2 {
    int a[2], b[2];
    int calls;
    int replaced_calls;
    bool readd;
    bool next_iteration;
};

static void replaced_cb(gale_loop *loop, int fd, unsigned events, void *arg)
{
    struct pair2 *p = arg;
    /* Must never see the event collected for the handler it replaced. */
    ck_assert(p->next_iteration);
    p->replaced_calls++;
    char c;
    ck_assert_int_eq(read(fd, &c, 1), 1);
}

static void mark_next(gale_loop *loop, void *arg) { ((struct pair2 *)arg)->next_iteration = true; }

static void first_cb(gale_loop *loop, int fd, unsigned events, void *arg)
{
    struct pair2 *p = arg;
    p->calls++;
    char c;
    ck_assert_int_eq(read(fd, &c, 1), 1);
    int other = fd == p->a[0] ? p->b[0] : p->a[0];
    ck_assert_int_eq(gale_loop_remove_handler(loop, other), 0);
    ck_assert_int_eq(gale_loop_remove_handler(loop, fd), 0);
    if (p->readd) {
        ck_assert_int_eq(gale_loop_add_handler(loop, other, GALE_READ, replaced_cb, p), 0);
        gale_loop_add_callback(loop, mark_next, p);
    }
}

static void run_pair2(bool readd)
{
    gale_loop *loop = new_loop();
    struct pair2 p = {.readd = readd};
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p.a), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p.b), 0);
    ck_assert_int_eq(write(p.a[1], "x", 1), 1);
    ck_assert_int_eq(write(p.b[1], "y", 1), 1);
    ck_assert_int_eq(gale_loop_add_handler(loop, p.a[0], GALE_READ, first_cb, &p), 0);
    ck_assert_int_eq(gale_loop_add_handler(loop, p.b[0], GALE_READ, first_cb, &p), 0);
    test_run_for(loop, 0.03);
    ck_assert_int_eq(p.calls, 1);
    ck_assert_int_eq(p.replaced_calls, readd ? 1 : 0);
    gale_loop_remove_handler(loop, p.a[0]);
    gale_loop_remove_handler(loop, p.b[0]);
    close(p.a[0]);
    close(p.a[1]);
    close(p.b[0]);
    close(p.b[1]);
    gale_loop_free(loop);
}

START_TEST(test_loop_handler_removed_by_earlier_handler_is_not_called) { run_pair2(false); }
END_TEST

START_TEST(test_loop_handler_replaced_by_earlier_handler_skips_stale_event) { run_pair2(true); }
END_TEST

/* ---- signals ---- */

struct sig {
    int signum;
    int count;
};

static void sig_cb(gale_loop *loop, int signum, void *arg)
{
    struct sig *s = arg;
    s->signum = signum;
    s->count++;
}

static bool sig_pred(void *arg) { return ((struct sig *)arg)->count > 0; }

START_TEST(test_loop_signal_arrives_as_callback)
{
    gale_loop *loop = new_loop();
    struct sig s = {0};
    ck_assert_int_eq(gale_loop_add_signal(loop, SIGUSR1, sig_cb, &s), 0);
    ck_assert_int_eq(gale_loop_add_signal(loop, SIGUSR1, sig_cb, &s), -EEXIST);
    ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
    ck_assert(test_wait_until(loop, sig_pred, &s, 10));
    ck_assert_int_eq(s.signum, SIGUSR1);
    ck_assert_int_eq(s.count, 1);
    ck_assert_int_eq(gale_loop_remove_signal(loop, SIGUSR1), 0);
    ck_assert_int_eq(gale_loop_remove_signal(loop, SIGUSR1), -ENOENT);
    /* The mask was restored: SIGUSR1 is no longer blocked. */
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    ck_assert(!sigismember(&cur, SIGUSR1));
    /* A signal registered on free() is unblocked by it too. */
    ck_assert_int_eq(gale_loop_add_signal(loop, SIGUSR2, sig_cb, &s), 0);
    ck_assert_int_eq(raise(SIGUSR2), 0);
    ck_assert(test_wait_until(loop, sig_pred, &s, 10));
    gale_loop_free(loop);
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    ck_assert(!sigismember(&cur, SIGUSR2));
}
END_TEST

/* ---- periodic ---- */

struct per {
    gale_periodic *p;
    int runs;
    int64_t first_next;
    int64_t next_after_overrun;
    int stop_after;
    bool free_inside;
    bool overrun;
};

#define PERIOD 0.02

static void per_cb(gale_loop *loop, void *arg)
{
    struct per *s = arg;
    s->runs++;
    if (s->overrun && s->runs == 1)
        busy_wait(2.5 * PERIOD);
    if (s->runs == s->stop_after) {
        if (s->free_inside) {
            gale_periodic_free(s->p);
            s->p = NULL;
        } else {
            gale_periodic_stop(s->p);
            ck_assert(!gale_periodic_is_running(s->p));
        }
    }
}

static bool per_two(void *arg)
{
    struct per *s = arg;
    if (s->runs == 1 && !s->next_after_overrun)
        s->next_after_overrun = gale__periodic_next_ns(s->p);
    return s->runs >= 2;
}

START_TEST(test_loop_periodic_skips_missed_beats_on_grid)
{
    gale_loop *loop = new_loop();
    struct per s = {.overrun = true, .stop_after = 2};
    ck_assert_int_eq(gale_periodic_new(loop, PERIOD, 0, per_cb, &s, &s.p), 0);
    ck_assert(!gale_periodic_is_running(s.p));
    ck_assert_int_eq(gale_periodic_start(s.p), 0);
    ck_assert_int_eq(gale_periodic_start(s.p), -EALREADY);
    s.first_next = gale__periodic_next_ns(s.p);
    ck_assert_int_gt(s.first_next, 0);
    ck_assert(test_wait_until(loop, per_two, &s, 10));
    ck_assert_int_eq(s.runs, 2);
    int64_t period = (int64_t)(PERIOD * 1e9);
    int64_t d = s.next_after_overrun - s.first_next;
    /* On the grid, and the beats missed during the 2.5-period overrun were skipped. */
    ck_assert_int_eq(d % period, 0);
    ck_assert_int_ge(d / period, 3);
    test_run_for(loop, 3 * PERIOD);
    ck_assert_int_eq(s.runs, 2);
    gale_periodic_free(s.p);
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_loop_periodic_stop_and_free_inside_own_callback)
{
    gale_loop *loop = new_loop();
    struct per s = {.stop_after = 1};
    ck_assert_int_eq(gale_periodic_new(loop, 0.002, 0.5, per_cb, &s, &s.p), 0);
    ck_assert_int_eq(gale_periodic_start(s.p), 0);
    test_run_for(loop, 0.05);
    ck_assert_int_eq(s.runs, 1);
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    /* Restart, then free it from inside its own callback. */
    s.runs = 0;
    s.free_inside = true;
    ck_assert_int_eq(gale_periodic_start(s.p), 0);
    test_run_for(loop, 0.05);
    ck_assert_int_eq(s.runs, 1);
    ck_assert_ptr_null(s.p);
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    gale_loop_free(loop);
}
END_TEST

/* ---- watchdog ---- */

static void slow_cb(gale_loop *loop, void *arg)
{
    busy_wait(0.03);
    gale_loop_stop(loop);
}

START_TEST(test_loop_blocking_threshold_logs_slow_callback)
{
    gale_loop *loop = new_loop();
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK), 0);
    gale_log_set_fd(p[1]);
    ck_assert_int_eq(gale_loop_set_blocking_log_threshold(loop, -1), -EINVAL);
    ck_assert_int_eq(gale_loop_set_blocking_log_threshold(loop, NAN), -EINVAL);
    ck_assert_int_eq(gale_loop_set_blocking_log_threshold(loop, 0.01), 0);
    gale_loop_add_callback(loop, slow_cb, NULL);
    gale_loop_run(loop);
    gale_log_flush();
    gale_log_set_fd(2);
    char buf[4096];
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    ck_assert_int_gt(n, 0);
    buf[n] = '\0';
    ck_assert_msg(strstr(buf, "loop blocked for") != NULL, "log: %s", buf);
    ck_assert_msg(strstr(buf, "callback") != NULL, "log: %s", buf);
    double busy = -1, total = -1;
    gale_loop_utilization(loop, &busy, &total);
    ck_assert(busy > 0 && total >= busy);
    close(p[0]);
    close(p[1]);
    gale_loop_free(loop);
}
END_TEST

/* ---- invalid arguments ---- */

static void dummy_handler(gale_loop *loop, int fd, unsigned events, void *arg) {}
static void dummy_sig(gale_loop *loop, int signum, void *arg) {}

START_TEST(test_loop_invalid_arguments_return_errno)
{
    gale_loop *loop = new_loop();
    int fds[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    ck_assert_int_eq(gale_loop_add_handler(loop, -1, GALE_READ, dummy_handler, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_add_handler(loop, fds[0], GALE_READ, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_add_handler(loop, fds[0], 0x100, dummy_handler, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_add_handler(NULL, fds[0], GALE_READ, dummy_handler, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_remove_handler(loop, -1), -EINVAL);
    ck_assert_int_eq(gale_loop_remove_handler(loop, fds[0]), -ENOENT);
    ck_assert_int_eq(gale_loop_remove_handler(loop, 1 << 20), -ENOENT);
    ck_assert_int_eq(gale_loop_update_handler(loop, 1 << 20, GALE_READ), -ENOENT);
    ck_assert_int_eq(
        gale_loop_add_handler(loop, fds[0], GALE_READ | GALE_ERROR, dummy_handler, NULL), 0);
    ck_assert_int_eq(gale_loop_remove_handler(loop, fds[0]), 0);
    ck_assert_int_eq(gale_loop_remove_handler(loop, fds[0]), -ENOENT);
    ck_assert_int_eq(gale_loop_add_callback(loop, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_add_callback(NULL, stop_cb, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_call_later(loop, NAN, stop_cb, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_call_later(loop, 1, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_call_later(NULL, 1, stop_cb, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_call_at(loop, NAN, stop_cb, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_remove_timeout(loop, 12345), -ENOENT);
    ck_assert_int_eq(gale_loop_remove_timeout(loop, ~(gale_timeout)0), -ENOENT);
    ck_assert_int_eq(gale_loop_remove_timeout(NULL, 1), -EINVAL);
    int fired = 0;
    gale_timeout t;
    ck_assert_int_eq(gale_loop_call_later(loop, -5, count_cb, &fired, &t), 0);
    test_run_for(loop, 0.01);
    ck_assert_int_eq(fired, 1);
    ck_assert_int_eq(gale_loop_remove_timeout(loop, t), -ENOENT);
    ck_assert_int_eq(gale_loop_add_signal(loop, SIGKILL, dummy_sig, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_add_signal(loop, SIGSTOP, dummy_sig, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_add_signal(loop, 0, dummy_sig, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_add_signal(loop, 9999, dummy_sig, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_add_signal(loop, SIGUSR1, NULL, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_remove_signal(loop, SIGUSR1), -ENOENT);
    ck_assert_int_eq(gale_loop_remove_signal(loop, -3), -ENOENT);
    ck_assert_int_eq(gale_loop_run(NULL), -EINVAL);
    gale_loop_stop(NULL);
    gale_periodic *p = (gale_periodic *)1;
    ck_assert_int_eq(gale_periodic_new(loop, 0, 0, stop_cb, NULL, &p), -EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(gale_periodic_new(loop, 1, 1, stop_cb, NULL, &p), -EINVAL);
    ck_assert_int_eq(gale_periodic_new(loop, 1, -0.1, stop_cb, NULL, &p), -EINVAL);
    ck_assert_int_eq(gale_periodic_new(loop, NAN, 0, stop_cb, NULL, &p), -EINVAL);
    ck_assert_int_eq(gale_periodic_new(loop, 1, 0, NULL, NULL, &p), -EINVAL);
    ck_assert_int_eq(gale_periodic_new(NULL, 1, 0, stop_cb, NULL, &p), -EINVAL);
    ck_assert_int_eq(gale_loop_add_future(loop, NULL, stop_cb, NULL), -EINVAL);
    ck_assert_int_eq(gale_loop_timer_count(loop), 0);
    ck_assert(gale__heap_check(loop));
    /* The loop still works after all that. */
    bool ok = false;
    gale_loop_add_callback(loop, set_flag, &ok);
    ck_assert(test_wait_until(loop, flag_pred, &ok, 5));
    close(fds[0]);
    close(fds[1]);
    gale_loop_free(loop);
    gale_loop_free(NULL);
}
END_TEST

START_TEST(test_loop_backend_env_selection)
{
    gale_loop *loop = NULL;
    setenv("GALE_LOOP_BACKEND", "bogus", 1);
    gale_log_set_level(GALE_LOG_NONE);
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), -EINVAL);
    ck_assert_ptr_null(loop);
    setenv("GALE_LOOP_BACKEND", "poll", 1);
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    ck_assert_str_eq(gale_loop_backend_name(loop), "poll");
    gale_loop_free(loop);
    setenv("GALE_LOOP_BACKEND", "epoll", 1);
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    ck_assert_str_eq(gale_loop_backend_name(loop), "epoll");
    gale_loop_free(loop);
    /* uring, or epoll where io_uring is unavailable (then one warning is logged) */
    setenv("GALE_LOOP_BACKEND", "uring", 1);
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    const char *name = gale_loop_backend_name(loop);
    ck_assert(strcmp(name, "uring") == 0 || strcmp(name, "epoll") == 0);
    gale_loop_free(loop);
    /* Unset: as GALE_BACKEND_URING, so the same as "uring" just above. */
    unsetenv("GALE_LOOP_BACKEND");
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    ck_assert_str_eq(gale_loop_backend_name(loop), name);
    gale_loop_free(loop);
    ck_assert_int_eq(gale_loop_new(99, &loop), -EINVAL);
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_POLL, NULL), -EINVAL);
}
END_TEST

START_TEST(test_loop_current_default_and_make_current)
{
    gale_loop *d = gale_loop_current();
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_eq(gale_loop_current(), d);
    gale_loop *loop = new_loop();
    gale_loop_make_current(loop);
    ck_assert_ptr_eq(gale_loop_current(), loop);
    gale_loop_make_current(NULL);
    ck_assert_ptr_eq(gale_loop_current(), d);
    gale_loop_free(loop);
    gale_loop_free(d);
}
END_TEST

/* Tornado 6: each thread has its own current loop; a thread that made none current never gets
 * the main thread's. Its loop is freed when the thread exits (the sanitizer build sees a leak
 * otherwise). */
static void *other_thread_current(void *arg)
{
    gale_loop **out = arg;
    out[0] = gale_loop_current();
    out[1] = gale_loop_current();
    return NULL;
}

START_TEST(test_loop_current_is_per_thread)
{
    gale_loop *mine = gale_loop_current();
    gale_loop *theirs[2] = {NULL, NULL};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, other_thread_current, theirs), 0);
    pthread_join(t, NULL);
    ck_assert_ptr_nonnull(theirs[0]);
    ck_assert_ptr_eq(theirs[0], theirs[1]); /* stable within the thread */
    ck_assert_ptr_ne(theirs[0], mine);
    ck_assert_ptr_eq(gale_loop_current(), mine);
    gale_loop_free(mine);
}
END_TEST

/* ---- teardown ---- */

static void never_called(gale_loop *loop, void *arg) { ck_abort_msg("callback ran after free"); }

START_TEST(test_loop_free_with_pending_work_leaks_nothing)
{
    gale_loop *loop = new_loop();
    for (int i = 0; i < 1000; i++) {
        gale_loop_add_callback(loop, never_called, NULL);
        gale_loop_call_later(loop, 100 + i, never_called, NULL, NULL);
    }
    gale_future *f = gale_future_new(loop);
    ck_assert_int_eq(gale_loop_add_future(loop, f, never_called, NULL), 0);
    gale_future *done = gale_future_new(loop);
    gale_future_set_result(done, NULL, NULL);
    ck_assert_int_eq(gale_loop_add_future(loop, done, never_called, NULL), 0);
    gale_loop_add_signal(loop, SIGUSR2, dummy_sig, NULL);
    gale_periodic *p;
    ck_assert_int_eq(gale_periodic_new(loop, 1, 0, never_called, NULL, &p), 0);
    ck_assert_int_eq(gale_periodic_start(p), 0);
    gale_periodic_free(p);
    gale_loop_free(loop);
    /* The future outlives the loop; completing it must not reach the dropped waiter. */
    gale_future_set_result(f, NULL, NULL);
    gale_future_unref(f);
    gale_future_unref(done);
}
END_TEST

/* ---- periodic with a huge period ---- */

/* A jittered period past the int64 nanosecond range must stay far in the future: converting it
 * unclamped overflowed to a negative interval, clamped to 1 ns, and the callback fired at once. */
START_TEST(test_loop_periodic_huge_jittered_period_stays_in_future)
{
    gale_loop *loop = new_loop();
    enum { N = 32 };
    gale_periodic *p[N];
    int fired = 0;
    int64_t now = gale_time_ns();
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(gale_periodic_new(loop, 1e12, 0.9, count_cb, &fired, &p[i]), 0);
        ck_assert_int_eq(gale_periodic_start(p[i]), 0);
        ck_assert(gale__periodic_next_ns(p[i]) > now + 1000000000LL * 3600);
    }
    test_run_for(loop, 0.02);
    ck_assert_int_eq(fired, 0);
    for (int i = 0; i < N; i++)
        gale_periodic_free(p[i]);
    ck_assert_int_eq((int)gale_loop_timer_count(loop), 0);
    gale_loop_free(loop);
}
END_TEST

static Suite *loop_suite(const char *name)
{
    Suite *s = suite_create(name);
    struct {
        const char *name;
        const TTest *tests[16];
    } cases[] = {
        {"callbacks",
         {test_loop_callbacks_run_fifo_and_added_ones_wait_for_next_iteration,
          test_loop_self_readding_callback_does_not_starve_io_or_timers,
          test_loop_add_callback_from_other_thread_wakes_sleeping_loop,
          test_loop_stop_from_other_thread_wakes_loop, test_loop_run_on_a_second_thread,
          test_loop_stop_before_run_returns_at_once_once, test_loop_run_while_running_is_ebusy,
          test_loop_run_until_future_and_timeout, test_loop_run_sync_result_error_timeout,
          test_loop_add_callback_from_thread_where_it_is_current_but_not_running,
          test_loop_stop_from_thread_where_it_is_current_but_not_running_wakes_it, NULL}},
        {"timers",
         {test_loop_timers_fire_in_deadline_order_fifo_on_ties,
          test_loop_timer_removal_inside_timer_callback,
          test_loop_timer_removed_by_callback_before_it_runs_does_not_fire,
          test_loop_100k_random_timers_half_cancelled_fire_the_rest_in_order, NULL}},
        {"handlers",
         {test_loop_handler_read_write_dispatch_over_socketpair,
          test_loop_update_handler_changes_interest,
          test_loop_handler_removed_by_earlier_handler_is_not_called,
          test_loop_handler_replaced_by_earlier_handler_skips_stale_event, NULL}},
        {"signals", {test_loop_signal_arrives_as_callback, NULL}},
        {"periodic",
         {test_loop_periodic_skips_missed_beats_on_grid,
          test_loop_periodic_stop_and_free_inside_own_callback,
          test_loop_periodic_huge_jittered_period_stays_in_future, NULL}},
        {"watchdog", {test_loop_blocking_threshold_logs_slow_callback, NULL}},
        {"errors",
         {test_loop_invalid_arguments_return_errno, test_loop_backend_env_selection,
          test_loop_current_default_and_make_current, test_loop_current_is_per_thread,
          test_loop_free_with_pending_work_leaks_nothing, NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 60);
        for (const TTest *const *t = cases[i].tests; *t; t++)
            _tcase_add_test(tc, *t, 0, 0, 0, 1);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(int argc, char **argv)
{
    int failed = 0;
    if (argc > 1 && strcmp(argv[1], "--backend") == 0) {
        /* Names the backend GALE_LOOP_BACKEND gets here (tests/run.sh prints it). */
        gale_loop *loop = NULL;
        if (gale_loop_new(GALE_BACKEND_DEFAULT, &loop) != 0)
            return EXIT_FAILURE;
        printf("%s\n", gale_loop_backend_name(loop));
        gale_loop_free(loop);
        gale_log_flush();
        return EXIT_SUCCESS;
    }
    const gale_backend backends[] = {GALE_BACKEND_EPOLL, GALE_BACKEND_POLL, GALE_BACKEND_URING};
    const char *names[] = {"loop-epoll", "loop-poll", "loop-uring"};
    for (int i = 0; i < 3; i++) {
        g_backend = backends[i];
        gale_loop *probe = NULL;
        if (gale_loop_new(g_backend, &probe) != 0)
            return EXIT_FAILURE;
        g_backend_name = gale_loop_backend_name(probe); /* static strings */
        gale_loop_free(probe);
        if (g_backend == GALE_BACKEND_URING && strcmp(g_backend_name, "uring") != 0)
            printf("io_uring unavailable: loop-uring runs on %s\n", g_backend_name);
        SRunner *sr = srunner_create(loop_suite(names[i]));
        srunner_run_all(sr, CK_NORMAL);
        failed += srunner_ntests_failed(sr);
        srunner_free(sr);
    }
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

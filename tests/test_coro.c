/* Coroutine suite: await, the tornado.gen helpers, many coroutines at once, nesting, stack
 * overflow, misuse; awaitable stream operations; coroutine handlers in the web layer and the
 * demo's /relay route over real sockets. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/coro.h"
#include "core/errors.h"
#include "core/future.h"
#include "core/log.h"
#include "core/loop.h"
#include "http/httpclient.h"
#include "http/web.h"
#include "net/iostream.h"
#include "testutil.h"

static gale_loop *g_loop;

static void setup(void)
{
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &g_loop), 0);
    gale_loop_make_current(g_loop);
}

static void teardown(void)
{
    gale_coro_shutdown(g_loop);
    ck_assert_uint_eq(gale_coro_count(), 0);
    gale_loop_free(g_loop);
    g_loop = NULL;
}

static bool future_done(void *arg) { return gale_future_done(arg); }

/* Runs the loop until `f` completes (bounded). */
static void wait_future(gale_future *f)
{
    ck_assert(test_wait_until(g_loop, future_done, f, 10.0));
}

/* ---- await ---- */

static int steps;

static int await_done_fn(void *arg)
{
    gale_future *f = arg;
    steps++;
    int rc = gale_await(f);
    steps++;
    ck_assert_int_eq(rc, 0);
    ck_assert_str_eq(gale_future_result(f), "ready");
    return gale_coro_set_result("value", NULL);
}

START_TEST(test_coro_await_done_future_does_not_suspend)
{
    gale_future *f = gale_future_new(g_loop);
    gale_future_set_result(f, "ready", NULL);
    steps = 0;
    gale_future *co = gale_coro_spawn(g_loop, await_done_fn, f, NULL);
    ck_assert_ptr_nonnull(co);
    /* Ran to its end inside spawn: no loop iteration was needed. */
    ck_assert_int_eq(steps, 2);
    ck_assert(gale_future_done(co));
    ck_assert_int_eq(gale_future_error(co), 0);
    ck_assert_str_eq(gale_future_result(co), "value");
    ck_assert_uint_eq(gale_coro_count(), 0);
    gale_future_unref(co);
    gale_future_unref(f);
}
END_TEST

static void resolve_later(gale_loop *loop, void *arg) { gale_future_set_result(arg, "late", NULL); }

static int await_timer_fn(void *arg)
{
    gale_future *f = arg;
    steps++;
    ck_assert_int_eq(gale_await(f), 0);
    ck_assert_str_eq(gale_future_result(f), "late");
    steps++;
    return 0;
}

START_TEST(test_coro_await_future_completed_later_by_timer)
{
    gale_future *f = gale_future_new(g_loop);
    steps = 0;
    ck_assert_int_eq(gale_loop_call_later(g_loop, 0.005, resolve_later, f, NULL), 0);
    gale_future *co = gale_coro_spawn(g_loop, await_timer_fn, f, NULL);
    ck_assert_int_eq(steps, 1);
    ck_assert(!gale_future_done(co));
    ck_assert_uint_eq(gale_coro_count(), 1);
    wait_future(co);
    ck_assert_int_eq(steps, 2);
    ck_assert_int_eq(gale_future_error(co), 0);
    ck_assert_uint_eq(gale_coro_count(), 0);
    gale_future_unref(co);
    gale_future_unref(f);
}
END_TEST

static int several_fn(void *arg)
{
    gale_loop *loop = arg;
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(gale_await_drop(gale_sleep(loop, 0.001)), 0);
        steps++;
    }
    ck_assert_int_eq(gale_await_drop(gale_moment(loop)), 0);
    steps++;
    return 0;
}

START_TEST(test_coro_several_awaits_in_a_row)
{
    steps = 0;
    gale_future *co = gale_coro_spawn(g_loop, several_fn, g_loop, NULL);
    ck_assert_int_eq(steps, 0);
    wait_future(co);
    ck_assert_int_eq(steps, 6);
    ck_assert_int_eq(gale_future_error(co), 0);
    gale_future_unref(co);
}
END_TEST

static void fail_later(gale_loop *loop, void *arg)
{
    gale_future_set_error(arg, -ECONNRESET, "peer went away");
}

static int error_fn(void *arg)
{
    int rc = gale_await(arg);
    ck_assert_int_eq(rc, -ECONNRESET);
    steps++;
    return rc;
}

START_TEST(test_coro_error_propagates_to_await_then_to_coroutine_future)
{
    gale_future *f = gale_future_new(g_loop);
    steps = 0;
    gale_loop_call_later(g_loop, 0.001, fail_later, f, NULL);
    gale_future *co = gale_coro_spawn(g_loop, error_fn, f, NULL);
    wait_future(co);
    ck_assert_int_eq(steps, 1);
    ck_assert_int_eq(gale_future_error(co), -ECONNRESET);
    ck_assert_str_eq(gale_future_error_message(co), "peer went away");
    gale_future_unref(co);
    gale_future_unref(f);
}
END_TEST

/* ---- tornado.gen helpers ---- */

static int timeout_fn(void *arg)
{
    gale_future *never = gale_future_new(NULL);
    gale_future *t = gale_with_timeout(never, 0.005);
    int rc = gale_await(t);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_str_eq(gale_future_error_message(t), "Timeout");
    gale_future_unref(t);
    ck_assert(!gale_future_done(never)); /* not cancelled */
    gale_future_set_result(never, NULL, NULL);
    gale_future_unref(never);

    gale_future *quick = gale_sleep(NULL, 0.001);
    t = gale_with_timeout(quick, 5.0);
    rc = gale_await(t);
    ck_assert_int_eq(rc, 0);
    gale_future_unref(t);
    gale_future_unref(quick);
    steps++;
    return 0;
}

START_TEST(test_coro_with_timeout_expiring_and_not_expiring)
{
    steps = 0;
    gale_future *co = gale_coro_spawn(g_loop, timeout_fn, NULL, NULL);
    wait_future(co);
    ck_assert_int_eq(gale_future_error(co), 0);
    ck_assert_int_eq(steps, 1);
    /* The 5 s timer was removed when the future completed. */
    ck_assert_uint_eq(gale_loop_timer_count(g_loop), 0);
    gale_future_unref(co);
}
END_TEST

START_TEST(test_coro_with_timeout_from_callbacks_and_bad_arguments)
{
    gale_future *t = gale_with_timeout(NULL, 1.0);
    ck_assert(gale_future_done(t));
    ck_assert_int_eq(gale_future_error(t), -EINVAL);
    gale_future_unref(t);
    gale_future *f = gale_future_new(g_loop);
    t = gale_with_timeout(f, 0.001);
    wait_future(t);
    ck_assert_int_eq(gale_future_error(t), -ETIMEDOUT);
    gale_future_unref(t);
    gale_future_unref(f);
    f = gale_sleep(g_loop, 0.0 / 0.0);
    ck_assert_int_eq(gale_future_error(f), -EINVAL);
    gale_future_unref(f);
}
END_TEST

#define NMULTI 100

static void set_ok(gale_loop *loop, void *arg) { gale_future_set_result(arg, NULL, NULL); }
static void set_eio(gale_loop *loop, void *arg) { gale_future_set_error(arg, -EIO, "disk"); }

static int multi_fn(void *arg)
{
    gale_future **fs = arg;
    int rc = gale_await_all(fs, NMULTI);
    for (int i = 0; i < NMULTI; i++)
        ck_assert(gale_future_done(fs[i]));
    return rc;
}

START_TEST(test_coro_multi_over_100_futures_with_one_failing)
{
    gale_future *fs[NMULTI];
    for (int i = 0; i < NMULTI; i++) {
        fs[i] = gale_future_new(g_loop);
        gale_loop_call_later(g_loop, (rand() % 5) / 1000.0, i == 37 ? set_eio : set_ok, fs[i],
                             NULL);
    }
    gale_future *co = gale_coro_spawn(g_loop, multi_fn, fs, NULL);
    wait_future(co);
    ck_assert_int_eq(gale_future_error(co), -EIO);
    ck_assert_str_eq(gale_future_error_message(co), "disk");
    gale_future_unref(co);
    /* The same from a plain callback program: gale_future_all. */
    for (int i = 0; i < NMULTI; i++) {
        gale_future_unref(fs[i]);
        fs[i] = gale_sleep(g_loop, (rand() % 3) / 1000.0);
    }
    gale_future *all = gale_future_all(g_loop, fs, NMULTI);
    wait_future(all);
    ck_assert_int_eq(gale_future_error(all), 0);
    gale_future_unref(all);
    for (int i = 0; i < NMULTI; i++)
        gale_future_unref(fs[i]);
}
END_TEST

#define NMANY 10000

static int resumed[NMANY];
static int many_done;

static int many_fn(void *arg)
{
    int i = (int)(intptr_t)arg;
    int rc = gale_await_drop(gale_sleep(NULL, (1 + rand() % 5) / 1000.0));
    ck_assert_int_eq(rc, 0);
    resumed[i]++;
    many_done++;
    return 0;
}

static bool all_many(void *arg) { return many_done == NMANY; }

START_TEST(test_coro_10000_suspended_at_once_each_resumes_exactly_once)
{
    memset(resumed, 0, sizeof resumed);
    many_done = 0;
    gale_future **fs = malloc(NMANY * sizeof *fs);
    ck_assert_ptr_nonnull(fs);
    for (int i = 0; i < NMANY; i++) {
        fs[i] = gale_coro_spawn(g_loop, many_fn, (void *)(intptr_t)i, NULL);
        ck_assert_ptr_nonnull(fs[i]);
        ck_assert_int_eq(gale_future_error(fs[i]), 0);
    }
    ck_assert_uint_eq(gale_coro_count(), NMANY);
    ck_assert(test_wait_until(g_loop, all_many, NULL, 30.0));
    test_run_for(g_loop, 0.01);
    ck_assert_int_eq(many_done, NMANY);
    for (int i = 0; i < NMANY; i++) {
        ck_assert_int_eq(resumed[i], 1);
        ck_assert(gale_future_done(fs[i]));
        gale_future_unref(fs[i]);
    }
    ck_assert_uint_eq(gale_coro_count(), 0);
    free(fs);
}
END_TEST

/* ---- nesting and sharing ---- */

static int child_fn(void *arg)
{
    ck_assert_int_eq(gale_await_drop(gale_sleep(NULL, 0.001)), 0);
    steps++;
    int *v = malloc(sizeof *v);
    *v = 42;
    return gale_coro_set_result(v, free);
}

static int parent_fn(void *arg)
{
    gale_future *child = gale_coro_spawn(NULL, child_fn, NULL, NULL);
    /* The child ran until its first wait and handed control back here. */
    ck_assert_int_eq(steps, 0);
    ck_assert(gale_coro_running());
    int rc = gale_await(child);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(steps, 1);
    ck_assert_int_eq(*(int *)gale_future_result(child), 42);
    gale_future_unref(child);
    steps++;
    return 0;
}

START_TEST(test_coro_nested_spawn_awaits_child)
{
    steps = 0;
    gale_future *co = gale_coro_spawn(g_loop, parent_fn, NULL, NULL);
    ck_assert_uint_eq(gale_coro_count(), 2);
    wait_future(co);
    ck_assert_int_eq(steps, 2);
    ck_assert_int_eq(gale_future_error(co), 0);
    gale_future_unref(co);
}
END_TEST

static int shared_resumes;

static int shared_fn(void *arg)
{
    ck_assert_int_eq(gale_await(arg), 0);
    shared_resumes++;
    return 0;
}

START_TEST(test_coro_several_coroutines_awaiting_same_future_all_resume)
{
    gale_future *f = gale_future_new(g_loop);
    gale_future *co[5];
    shared_resumes = 0;
    for (int i = 0; i < 5; i++)
        co[i] = gale_coro_spawn(g_loop, shared_fn, f, NULL);
    gale_loop_call_later(g_loop, 0.001, set_ok, f, NULL);
    for (int i = 0; i < 5; i++) {
        wait_future(co[i]);
        gale_future_unref(co[i]);
    }
    ck_assert_int_eq(shared_resumes, 5);
    gale_future_unref(f);
}
END_TEST

/* ---- resumption comes from the loop ---- */

static int rule_resumed;
static bool rule_inside_cb;

static int rule_fn(void *arg)
{
    ck_assert_int_eq(gale_await(arg), 0);
    ck_assert(!rule_inside_cb); /* not on the stack of the callback that resolved the future */
    rule_resumed++;
    return 0;
}

static void rule_resolve(gale_loop *loop, void *arg)
{
    rule_inside_cb = true;
    gale_future_set_result(arg, NULL, NULL);
    ck_assert_int_eq(rule_resumed, 0);
    rule_inside_cb = false;
}

START_TEST(test_coro_resumption_comes_from_loop_not_set_result)
{
    gale_future *f = gale_future_new(g_loop);
    rule_resumed = 0;
    gale_future *co = gale_coro_spawn(g_loop, rule_fn, f, NULL);
    gale_loop_add_callback(g_loop, rule_resolve, f);
    wait_future(co);
    ck_assert_int_eq(rule_resumed, 1);
    /* Resolved outside any callback too: still not inline. */
    gale_future_unref(co);
    gale_future_unref(f);
    f = gale_future_new(g_loop);
    co = gale_coro_spawn(g_loop, rule_fn, f, NULL);
    gale_future_set_result(f, NULL, NULL);
    ck_assert_int_eq(rule_resumed, 1);
    ck_assert(!gale_future_done(co));
    wait_future(co);
    ck_assert_int_eq(rule_resumed, 2);
    gale_future_unref(co);
    gale_future_unref(f);
}
END_TEST

/* ---- stack overflow ---- */

static int recurse(volatile char *prev, int depth)
{
    volatile char buf[512];
    buf[0] = (char)depth;
    buf[511] = prev ? prev[0] : 0;
    return depth > 1000000 ? buf[0] : recurse(buf, depth + 1) + buf[511];
}

static int overflow_fn(void *arg) { return recurse(NULL, 0) > 0 ? 0 : 0; }

START_TEST(test_coro_stack_overflow_in_child_dies_with_message)
{
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        gale_coro_opts o = {.stack_size = GALE_CORO_MIN_STACK};
        gale_future *f = gale_coro_spawn(g_loop, overflow_fn, NULL, &o);
        (void)f;
        _exit(0);
    }
    close(pipefd[1]);
    char buf[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = read(pipefd[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(pipefd[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(strstr(buf, "coroutine stack overflow"), "stderr was: %s", buf);
    ck_assert(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0));
}
END_TEST

/* ---- misuse ---- */

static void *thread_await(void *arg) { return (void *)(intptr_t)gale_await(arg); }

static int never_fn(void *arg)
{
    gale_future *never = gale_future_new(NULL);
    int rc = gale_await(never);
    ck_assert_int_eq(rc, -ECANCELED);
    /* Cancelled: later awaits return at once. */
    ck_assert_int_eq(gale_await_drop(gale_future_new(NULL)), -ECANCELED);
    gale_future_unref(never);
    steps++;
    return rc;
}

START_TEST(test_coro_misuse_gets_errno_not_crash)
{
    gale_future *f = gale_future_new(g_loop);
    ck_assert_int_eq(gale_await(f), -EPERM);
    ck_assert_int_eq(gale_await_drop(NULL), -EPERM);
    ck_assert_int_eq(gale_coro_set_result(NULL, NULL), -EPERM);
    pthread_t t;
    void *ret;
    ck_assert_int_eq(pthread_create(&t, NULL, thread_await, f), 0);
    pthread_join(t, &ret);
    ck_assert_int_eq((int)(intptr_t)ret, -EPERM);
    gale_future_unref(f);

    gale_coro_opts o = {.stack_size = 0};
    gale_future *co = gale_coro_spawn(g_loop, never_fn, NULL, &o);
    ck_assert_int_eq(gale_future_error(co), -EINVAL);
    gale_future_unref(co);
    o.stack_size = (size_t)1 << 40;
    co = gale_coro_spawn(g_loop, never_fn, NULL, &o);
    ck_assert_int_eq(gale_future_error(co), -EINVAL);
    gale_future_unref(co);
    co = gale_coro_spawn(g_loop, NULL, NULL, NULL);
    ck_assert_int_eq(gale_future_error(co), -EINVAL);
    gale_future_unref(co);
    ck_assert_uint_eq(gale_coro_count(), 0);

    /* A coroutine that never returns when the loop stops: shutdown cancels and unwinds it. */
    steps = 0;
    co = gale_coro_spawn(g_loop, never_fn, NULL, NULL);
    test_run_for(g_loop, 0.005);
    ck_assert(!gale_future_done(co));
    ck_assert_int_eq(gale_coro_shutdown(g_loop), 1);
    ck_assert_int_eq(steps, 1);
    ck_assert(gale_future_done(co));
    ck_assert_int_eq(gale_future_error(co), -ECANCELED);
    ck_assert_uint_eq(gale_coro_count(), 0);
    gale_future_unref(co);
}
END_TEST

static int cancel_fn(void *arg)
{
    int rc = gale_await(arg);
    steps++;
    return rc;
}

static void do_cancel(gale_loop *loop, void *arg)
{
    ck_assert_int_eq(gale_coro_cancel(arg, -ECONNABORTED), 0);
    ck_assert_int_eq(steps, 0); /* resumed from the loop, not from cancel */
}

START_TEST(test_coro_await_keeps_future_alive_when_others_drop_it)
{
    gale_future *f = gale_future_new(g_loop);
    steps = 0;
    gale_future *co = gale_coro_spawn(g_loop, cancel_fn, f, NULL);
    ck_assert_int_eq(gale_coro_cancel(NULL, 0), -EINVAL);
    ck_assert_ptr_null(gale_coro_current());
    /* Every outside reference goes: the await holds its own, so nothing is freed under it. */
    gale_future_unref(co);
    gale_future_unref(f);
    test_run_for(g_loop, 0.001);
    ck_assert_int_eq(steps, 0);
    ck_assert_int_eq(gale_coro_shutdown(g_loop), 1);
    ck_assert_int_eq(steps, 1);
    ck_assert_uint_eq(gale_coro_count(), 0);
}
END_TEST

static gale_coro *self_coro;

static int self_fn(void *arg)
{
    self_coro = gale_coro_current();
    int rc = gale_await(arg);
    steps++;
    return rc;
}

START_TEST(test_coro_cancel_from_callback_returns_reason_from_loop)
{
    gale_future *f = gale_future_new(g_loop);
    steps = 0;
    gale_future *co = gale_coro_spawn(g_loop, self_fn, f, NULL);
    ck_assert_ptr_nonnull(self_coro);
    gale_loop_add_callback(g_loop, do_cancel, self_coro);
    wait_future(co);
    ck_assert_int_eq(steps, 1);
    ck_assert_int_eq(gale_future_error(co), -ECONNABORTED);
    /* The awaited future is left alone and can still complete. */
    ck_assert(!gale_future_done(f));
    gale_future_set_result(f, NULL, NULL);
    test_run_for(g_loop, 0.002);
    ck_assert_int_eq(steps, 1);
    gale_future_unref(co);
    gale_future_unref(f);
}
END_TEST

/* ---- awaitable streams ---- */

struct stream_case {
    gale_stream *s;
    int peer;
    int step;
};

static int stream_fn(void *arg)
{
    struct stream_case *c = arg;
    gale_future *f = gale_stream_read_until_future(c->s, "\n", 1, 1024);
    ck_assert_int_eq(gale_await(f), 0);
    const gale_stream_data *d = gale_future_result(f);
    ck_assert_uint_eq(d->len, 6);
    ck_assert_str_eq(d->data, "hello\n");
    gale_future_unref(f);

    f = gale_stream_read_bytes_future(c->s, 3, false);
    ck_assert_int_eq(gale_await(f), 0);
    ck_assert_str_eq(((const gale_stream_data *)gale_future_result(f))->data, "abc");
    gale_future_unref(f);

    f = gale_stream_read_until_regex_future(c->s, "[0-9]+;", 100);
    ck_assert_int_eq(gale_await(f), 0);
    ck_assert_str_eq(((const gale_stream_data *)gale_future_result(f))->data, "x12;");
    gale_future_unref(f);

    /* A second read while one is pending is refused at once. */
    f = gale_stream_read_bytes_future(c->s, 1, false);
    gale_future *busy = gale_stream_read_bytes_future(c->s, 1, false);
    ck_assert(gale_future_done(busy));
    ck_assert_int_eq(gale_future_error(busy), -EBUSY);
    gale_future_unref(busy);
    ck_assert_int_eq(gale_await(f), 0);
    ck_assert_str_eq(((const gale_stream_data *)gale_future_result(f))->data, "!");
    gale_future_unref(f);

    ck_assert_int_eq(gale_await_drop(gale_stream_write_future(c->s, "pong\n", 5)), 0);
    c->step = 1;
    f = gale_stream_read_until_close_future(c->s);
    ck_assert_int_eq(gale_await(f), 0);
    ck_assert_str_eq(((const gale_stream_data *)gale_future_result(f))->data, "tail");
    gale_future_unref(f);
    c->step = 2;
    return 0;
}

static bool step_is_1(void *arg) { return ((struct stream_case *)arg)->step >= 1; }

START_TEST(test_coro_stream_future_forms_read_write_in_a_coroutine)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct stream_case c = {.peer = sv[1]};
    ck_assert_int_eq(gale_stream_new(g_loop, sv[0], &c.s), 0);
    ck_assert_int_eq(write(sv[1], "hello\nabcx12;!", 14), 14);
    gale_future *co = gale_coro_spawn(g_loop, stream_fn, &c, NULL);
    ck_assert(test_wait_until(g_loop, step_is_1, &c, 5.0));
    char buf[16];
    test_run_for(g_loop, 0.001);
    ck_assert_int_eq(read(sv[1], buf, sizeof buf), 5);
    ck_assert_int_eq(memcmp(buf, "pong\n", 5), 0);
    ck_assert_int_eq(write(sv[1], "tail", 4), 4);
    shutdown(sv[1], SHUT_WR);
    wait_future(co);
    ck_assert_int_eq(gale_future_error(co), 0);
    ck_assert_int_eq(c.step, 2);
    gale_future_unref(co);
    close(sv[1]);
    test_run_for(g_loop, 0.002);
}
END_TEST

/* The peer sent two messages and closed before the coroutine read either: each awaited read
 * resumes a loop iteration after its completion and starts the next one then; the bytes that
 * came with the FIN are still there for it, and only a third read sees the end. */
struct eof_case {
    gale_stream *s;
    int closes;
    int close_status;
};

static int two_reads_after_eof_fn(void *arg)
{
    struct eof_case *c = arg;
    gale_future *f = gale_stream_read_until_future(c->s, "\n", 1, 1024);
    ck_assert_int_eq(gale_await(f), 0);
    ck_assert_str_eq(((const gale_stream_data *)gale_future_result(f))->data, "first\n");
    gale_future_unref(f);
    ck_assert_int_eq(gale_await_drop(gale_sleep(NULL, 0.005)), 0); /* a few more loop turns */
    f = gale_stream_read_until_future(c->s, "\n", 1, 1024);
    ck_assert_int_eq(gale_await(f), 0);
    ck_assert_str_eq(((const gale_stream_data *)gale_future_result(f))->data, "second\n");
    gale_future_unref(f);
    ck_assert_int_eq(c->closes, 0);
    f = gale_stream_read_bytes_future(c->s, 1, true);
    ck_assert_int_eq(gale_await(f), GALE_EEOF);
    gale_future_unref(f);
    return 0;
}

static void eof_case_closed(gale_stream *s, int status, void *arg)
{
    struct eof_case *c = arg;
    c->closes++;
    c->close_status = status;
}

static bool eof_case_buffered(void *arg)
{
    return gale_stream_read_buffered(((struct eof_case *)arg)->s) == 13;
}

START_TEST(test_coro_two_awaited_reads_after_peer_sent_both_and_closed)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct eof_case c = {0};
    ck_assert_int_eq(gale_stream_new(g_loop, sv[0], &c.s), 0);
    gale_stream_set_close_cb(c.s, eof_case_closed, &c);
    ck_assert_int_eq(write(sv[1], "first\nsecond\n", 13), 13);
    close(sv[1]);
    ck_assert(test_wait_until(g_loop, eof_case_buffered, &c, 5.0));
    test_run_for(g_loop, 0.005); /* the stream sees the FIN before any read starts */
    ck_assert_int_eq(c.closes, 0);
    gale_future *co = gale_coro_spawn(g_loop, two_reads_after_eof_fn, &c, NULL);
    wait_future(co);
    ck_assert_int_eq(gale_future_error(co), 0);
    gale_future_unref(co);
    test_run_for(g_loop, 0.002);
    ck_assert_int_eq(c.closes, 1);
    ck_assert_int_eq(c.close_status, GALE_EEOF);
}
END_TEST

static int closed_read_fn(void *arg)
{
    gale_future *f = gale_stream_read_bytes_future(arg, 10, false);
    int rc = gale_await(f);
    gale_future_unref(f);
    return rc;
}

static void close_stream_cb(gale_loop *loop, void *arg) { gale_stream_close(arg, 0); }

START_TEST(test_coro_stream_future_fails_with_close_reason)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    gale_stream *s;
    ck_assert_int_eq(gale_stream_new(g_loop, sv[0], &s), 0);
    gale_future *co = gale_coro_spawn(g_loop, closed_read_fn, s, NULL);
    gale_loop_add_callback(g_loop, close_stream_cb, s);
    wait_future(co);
    ck_assert_int_eq(gale_future_error(co), -ECANCELED);
    gale_future_unref(co);
    close(sv[1]);
    test_run_for(g_loop, 0.002);
}
END_TEST

static int connect_fn(void *arg)
{
    int port = *(int *)arg;
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    gale_future *f = gale_stream_connect_future(NULL, (struct sockaddr *)&sin, sizeof sin);
    int rc = gale_await(f);
    if (rc == 0) {
        gale_stream *s = gale_future_steal_result(f);
        ck_assert_ptr_nonnull(s);
        ck_assert_int_eq(gale_await_drop(gale_stream_write_future(s, "hi", 2)), 0);
        gale_stream_close(s, 0);
    }
    gale_future_unref(f);
    return rc;
}

START_TEST(test_coro_stream_connect_future_then_write)
{
    int port;
    int lfd = test_listen_tcp(&port);
    ck_assert_int_ge(lfd, 0);
    gale_future *co = gale_coro_spawn(g_loop, connect_fn, &port, NULL);
    wait_future(co);
    ck_assert_int_eq(gale_future_error(co), 0);
    gale_future_unref(co);
    int cfd = accept(lfd, NULL, NULL);
    ck_assert_int_ge(cfd, 0);
    test_set_timeouts(cfd, 5);
    size_t len;
    char *got = test_read_all(cfd, 16, &len);
    ck_assert_uint_eq(len, 2);
    ck_assert_int_eq(memcmp(got, "hi", 2), 0);
    free(got);
    close(cfd);
    close(lfd);
    /* Refused: the future fails with the reason. */
    co = gale_coro_spawn(g_loop, connect_fn, &port, NULL);
    wait_future(co);
    ck_assert_int_eq(gale_future_error(co), -ECONNREFUSED);
    gale_future_unref(co);
    test_run_for(g_loop, 0.002);
}
END_TEST

/* ---- coroutine handlers ---- */

static gale_app *g_app;
static gale_http_client *g_client; /* used by the handlers */
static int g_port;
static int handled, handler_cancelled, handler_closed, handler_finished;

static void data_get(gale_handler *h) { gale_write_str(h, "payload"); }
static const gale_handler_class data_handler = {.get = data_get};

static void fetching(gale_handler *h)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/data", g_port);
    gale_http_client_request req;
    gale_http_client_request_init(&req, url);
    gale_future *f = gale_http_fetch_future(g_client, &req);
    int rc = gale_await(f);
    if (rc == 0) {
        const gale_http_client_response *resp = gale_future_result(f);
        gale_writef(h, "got %d %.*s", resp->code, (int)resp->body_len, resp->body);
    } else {
        gale_send_error(h, 502);
    }
    gale_future_unref(f);
    handled++;
}
GALE_CORO_METHOD(fetching_get, fetching)
static void count_finish(gale_handler *h) { handler_finished++; }
static const gale_handler_class fetching_handler = {.get = fetching_get, .on_finish = count_finish};

static int suspended;

static void waiting(gale_handler *h)
{
    char *held = malloc(4096); /* must be freed on every path */
    gale_future *never = gale_future_new(gale_handler_loop(h));
    suspended++;
    int rc = gale_await(never);
    if (rc == -ECANCELED)
        handler_cancelled++;
    /* Cancelled: later awaits return at once, so cleanup code cannot hang. */
    ck_assert_int_eq(gale_await_drop(gale_sleep(gale_handler_loop(h), 0)), -ECANCELED);
    gale_write_str(h, "never sent");
    gale_future_unref(never);
    free(held);
    handled++;
}
GALE_CORO_METHOD(waiting_get, waiting)
static void waiting_closed(gale_handler *h) { handler_closed++; }
static const gale_handler_class waiting_handler = {
    .get = waiting_get, .on_connection_close = waiting_closed, .on_finish = count_finish};

static void web_setup(void)
{
    setup();
    handled = handler_cancelled = handler_closed = handler_finished = suspended = 0;
    g_app = gale_app_new(NULL);
    ck_assert_ptr_nonnull(g_app);
    gale_app_opts(g_app)->no_access_log = true;
    ck_assert_int_eq(gale_app_route(g_app, "/data", &data_handler, NULL), 0);
    ck_assert_int_eq(gale_app_route(g_app, "/co", &fetching_handler, NULL), 0);
    ck_assert_int_eq(gale_app_route(g_app, "/wait", &waiting_handler, NULL), 0);
    ck_assert_int_eq(gale_app_listen(g_app, 0, "127.0.0.1"), 0);
    g_port = gale_app_port(g_app);
    gale_http_client_opts o = {.max_clients = 100};
    ck_assert_int_eq(gale_http_client_new(g_loop, &o, &g_client), 0);
}

static void web_teardown(void)
{
    gale_app_free(g_app);
    gale_http_client_free(g_client);
    test_run_for(g_loop, 0.02);
    teardown();
}

#define NCONC 50

static int fetched_ok;

static void on_outer(gale_http_client_response *resp, void *arg)
{
    if (resp->error == 0 && resp->code == 200 && resp->body_len == 15 &&
        memcmp(resp->body, "got 200 payload", 15) == 0)
        fetched_ok++;
    (*(int *)arg)++;
}

static int outer_done;
static bool all_outer(void *arg) { return outer_done == NCONC; }

START_TEST(test_coro_handler_awaits_fetch_under_50_concurrent_requests)
{
    gale_http_client *load;
    gale_http_client_opts o = {.max_clients = NCONC};
    ck_assert_int_eq(gale_http_client_new(g_loop, &o, &load), 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/co", g_port);
    outer_done = fetched_ok = 0;
    for (int i = 0; i < NCONC; i++) {
        gale_http_client_request req;
        gale_http_client_request_init(&req, url);
        ck_assert_int_eq(gale_http_fetch(load, &req, on_outer, &outer_done), 0);
    }
    ck_assert(test_wait_until(g_loop, all_outer, NULL, 20.0));
    ck_assert_int_eq(fetched_ok, NCONC);
    ck_assert_int_eq(handled, NCONC);
    ck_assert_int_eq(handler_finished, NCONC);
    ck_assert_uint_eq(gale_coro_count(), 0);
    gale_http_client_free(load);
}
END_TEST

static bool is_suspended(void *arg) { return suspended == *(int *)arg; }
static bool handlers_done(void *arg) { return handled == *(int *)arg; }

START_TEST(test_coro_handler_client_disconnects_while_suspended)
{
    int fds[3];
    for (int i = 0; i < 3; i++) {
        fds[i] = test_connect_tcp(g_port);
        ck_assert_int_ge(fds[i], 0);
        const char req[] = "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n";
        ck_assert_int_eq(test_write_all(fds[i], req, sizeof req - 1), 0);
    }
    int want = 3;
    ck_assert(test_wait_until(g_loop, is_suspended, &want, 5.0));
    ck_assert_uint_eq(gale_coro_count(), 3);
    ck_assert_int_eq(handled, 0);
    for (int i = 0; i < 3; i++)
        close(fds[i]);
    ck_assert(test_wait_until(g_loop, handlers_done, &want, 5.0));
    test_run_for(g_loop, 0.005);
    ck_assert_int_eq(handler_closed, 3);
    ck_assert_int_eq(handler_cancelled, 3);
    ck_assert_int_eq(handler_finished, 3);
    ck_assert_uint_eq(gale_coro_count(), 0);
}
END_TEST

START_TEST(test_coro_handler_suspended_when_app_freed_unwinds)
{
    int fd = test_connect_tcp(g_port);
    const char req[] = "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(test_write_all(fd, req, sizeof req - 1), 0);
    int want = 1;
    ck_assert(test_wait_until(g_loop, is_suspended, &want, 5.0));
    gale_app_free(g_app);
    g_app = NULL;
    ck_assert(test_wait_until(g_loop, handlers_done, &want, 5.0));
    ck_assert_int_eq(handler_cancelled, 1);
    ck_assert_int_eq(handler_finished, 1);
    ck_assert_uint_eq(gale_coro_count(), 0);
    close(fd);
}
END_TEST

/* ---- the demo's /relay route ---- */

static char *http_get(int port, const char *target, size_t *len)
{
    int fd = test_connect_tcp(port);
    ck_assert_int_ge(fd, 0);
    test_set_timeouts(fd, 10);
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     target);
    ck_assert_int_eq(test_write_all(fd, req, (size_t)n), 0);
    char *resp = test_read_all(fd, 1 << 20, len);
    close(fd);
    return resp;
}

static void expect_response(int port, const char *target, const char *status, const char *body)
{
    size_t len;
    char *resp = http_get(port, target, &len);
    ck_assert_ptr_nonnull(resp);
    ck_assert_msg(strncmp(resp, status, strlen(status)) == 0, "%s -> %s", target, resp);
    if (body) {
        const char *b = strstr(resp, "\r\n\r\n");
        ck_assert_ptr_nonnull(b);
        ck_assert_str_eq(b + 4, body);
    }
    free(resp);
}

START_TEST(test_coro_demo_relay_route)
{
    int port = test_free_port();
    char pbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d", port);
    char *const argv[] = {"demo", "--port", pbuf, NULL};
    pid_t pid = test_start_app("demo", argv, port);
    ck_assert_int_gt(pid, 0);
    expect_response(port, "/relay?path=/user/7", "HTTP/1.1 200", "relayed 200 user 7");
    expect_response(port, "/relay?path=/greet%3Fname%3Dgale", "HTTP/1.1 200",
                    "relayed 200 Hello, gale!");
    expect_response(port, "/relay?path=/status/404", "HTTP/1.1 200", "relayed 404 status 404");
    expect_response(port, "/relay?path=/delay%3Fms%3D20", "HTTP/1.1 200",
                    "relayed 200 waited 20 ms");
    expect_response(port, "/relay?path=user/7", "HTTP/1.1 400", NULL);
    expect_response(port, "/relay?path=//evil/x", "HTTP/1.1 400", NULL);
    expect_response(port, "/relay?path=/relay", "HTTP/1.1 400", NULL);
    expect_response(port, "/relay?path=/relay%3Fpath%3D/", "HTTP/1.1 400", NULL);
    expect_response(port, "/relay?path=/relay/x", "HTTP/1.1 400", NULL);
    expect_response(port, "/relay", "HTTP/1.1 400", NULL);
    expect_response(port, "/relay?path=", "HTTP/1.1 400", NULL);
    /* A client leaving mid-relay does not disturb the server. */
    int fd = test_connect_tcp(port);
    const char req[] = "GET /relay?path=/delay%3Fms%3D300 HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(test_write_all(fd, req, sizeof req - 1), 0);
    close(fd);
    expect_response(port, "/relay?path=/", "HTTP/1.1 200", "relayed 200 Hello, world!");
    int status = test_stop_app(pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST

static Suite *coro_suite(void)
{
    Suite *s = suite_create("coro");
    TCase *tc = tcase_create("await");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_coro_await_done_future_does_not_suspend);
    tcase_add_test(tc, test_coro_await_future_completed_later_by_timer);
    tcase_add_test(tc, test_coro_several_awaits_in_a_row);
    tcase_add_test(tc, test_coro_error_propagates_to_await_then_to_coroutine_future);
    tcase_add_test(tc, test_coro_with_timeout_expiring_and_not_expiring);
    tcase_add_test(tc, test_coro_with_timeout_from_callbacks_and_bad_arguments);
    tcase_add_test(tc, test_coro_multi_over_100_futures_with_one_failing);
    tcase_add_test(tc, test_coro_10000_suspended_at_once_each_resumes_exactly_once);
    tcase_add_test(tc, test_coro_nested_spawn_awaits_child);
    tcase_add_test(tc, test_coro_several_coroutines_awaiting_same_future_all_resume);
    tcase_add_test(tc, test_coro_resumption_comes_from_loop_not_set_result);
    tcase_add_test(tc, test_coro_stack_overflow_in_child_dies_with_message);
    tcase_add_test(tc, test_coro_misuse_gets_errno_not_crash);
    tcase_add_test(tc, test_coro_await_keeps_future_alive_when_others_drop_it);
    tcase_add_test(tc, test_coro_cancel_from_callback_returns_reason_from_loop);
    suite_add_tcase(s, tc);

    tc = tcase_create("stream");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_coro_stream_future_forms_read_write_in_a_coroutine);
    tcase_add_test(tc, test_coro_stream_future_fails_with_close_reason);
    tcase_add_test(tc, test_coro_two_awaited_reads_after_peer_sent_both_and_closed);
    tcase_add_test(tc, test_coro_stream_connect_future_then_write);
    suite_add_tcase(s, tc);

    tc = tcase_create("web");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, web_setup, web_teardown);
    tcase_add_test(tc, test_coro_handler_awaits_fetch_under_50_concurrent_requests);
    tcase_add_test(tc, test_coro_handler_client_disconnects_while_suspended);
    tcase_add_test(tc, test_coro_handler_suspended_when_app_freed_unwinds);
    tcase_add_test(tc, test_coro_demo_relay_route);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(coro_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

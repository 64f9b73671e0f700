/* Future suite: completion, callbacks, loop integration, chain and all(). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/future.h"
#include "core/loop.h"
#include "testutil.h"

static gale_loop *g_loop;

static void setup(void) { ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &g_loop), 0); }

static void teardown(void)
{
    gale_loop_free(g_loop);
    g_loop = NULL;
}

struct rec {
    int order[16];
    int n;
};

struct rec_item {
    struct rec *r;
    int id;
};

static void rec_cb(gale_future *f, void *arg)
{
    struct rec_item *it = arg;
    ck_assert(gale_future_done(f));
    it->r->order[it->r->n++] = it->id;
}

static int dtor_calls;
static void count_dtor(void *p)
{
    dtor_calls++;
    free(p);
}

START_TEST(test_future_result_runs_callbacks_in_order_and_dtor_on_free)
{
    gale_future *f = gale_future_new(g_loop);
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_eq(gale_future_loop(f), g_loop);
    ck_assert(!gale_future_done(f));
    ck_assert_ptr_null(gale_future_result(f));
    ck_assert_int_eq(gale_future_error(f), 0);
    struct rec r = {0};
    struct rec_item it[4] = {{&r, 0}, {&r, 1}, {&r, 2}, {&r, 3}};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(gale_future_add_done_callback(f, rec_cb, &it[i]), 0);
    ck_assert_int_eq(gale_future_remove_done_callback(f, rec_cb, &it[1]), 0);
    ck_assert_int_eq(gale_future_remove_done_callback(f, rec_cb, &it[1]), -ENOENT);
    dtor_calls = 0;
    char *v = strdup("value");
    ck_assert_int_eq(gale_future_set_result(f, v, count_dtor), 0);
    ck_assert(gale_future_done(f));
    ck_assert_int_eq(r.n, 2);
    ck_assert_int_eq(r.order[0], 0);
    ck_assert_int_eq(r.order[1], 2);
    ck_assert_str_eq(gale_future_result(f), "value");
    ck_assert_ptr_null(gale_future_error_message(f));
    /* Already done: runs inside the call. */
    ck_assert_int_eq(gale_future_add_done_callback(f, rec_cb, &it[3]), 0);
    ck_assert_int_eq(r.n, 3);
    ck_assert_int_eq(r.order[2], 3);
    /* Second completion is refused and does not take ownership. */
    char *w = strdup("other");
    ck_assert_int_eq(gale_future_set_result(f, w, count_dtor), -EINVAL);
    ck_assert_int_eq(gale_future_set_error(f, -EIO, NULL), -EINVAL);
    ck_assert_int_eq(dtor_calls, 0);
    free(w);
    ck_assert_int_eq(r.n, 3);
    gale_future_ref(f);
    gale_future_unref(f);
    ck_assert_int_eq(dtor_calls, 0);
    gale_future_unref(f);
    ck_assert_int_eq(dtor_calls, 1);
    gale_future_unref(NULL);
}
END_TEST

START_TEST(test_future_error_code_and_message)
{
    gale_future *f = gale_future_new(g_loop);
    ck_assert_int_eq(gale_future_set_error(f, 0, "x"), -EINVAL);
    ck_assert_int_eq(gale_future_set_error(f, 5, "x"), -EINVAL);
    ck_assert(!gale_future_done(f));
    ck_assert_int_eq(gale_future_set_error(f, -ECONNRESET, "peer went away"), 0);
    ck_assert(gale_future_done(f));
    ck_assert_int_eq(gale_future_error(f), -ECONNRESET);
    ck_assert_str_eq(gale_future_error_message(f), "peer went away");
    ck_assert_ptr_null(gale_future_result(f));
    ck_assert_ptr_null(gale_future_steal_result(f));
    ck_assert_int_eq(gale_future_set_result(f, NULL, NULL), -EINVAL);
    gale_future_unref(f);

    f = gale_future_new(g_loop);
    ck_assert_int_eq(gale_future_set_error(f, GALE_EEOF, NULL), 0);
    ck_assert_str_eq(gale_future_error_message(f), gale_strerror(GALE_EEOF));
    gale_future_unref(f);
}
END_TEST

START_TEST(test_future_steal_result_transfers_ownership)
{
    gale_future *f = gale_future_new(g_loop);
    dtor_calls = 0;
    char *v = strdup("mine");
    gale_future_set_result(f, v, count_dtor);
    char *got = gale_future_steal_result(f);
    ck_assert_ptr_eq(got, v);
    gale_future_unref(f);
    ck_assert_int_eq(dtor_calls, 0);
    free(got);
}
END_TEST

static void unref_in_cb(gale_future *f, void *arg)
{
    gale_future_unref(f); /* drops the caller's last reference from inside the callback */
    (*(int *)arg)++;
}

static void after_unref(gale_future *f, void *arg)
{
    /* Still valid: completion holds a reference across the callbacks. */
    ck_assert(gale_future_done(f));
    (*(int *)arg)++;
}

START_TEST(test_future_callback_may_drop_last_reference)
{
    gale_future *f = gale_future_new(g_loop);
    int n = 0;
    gale_future_add_done_callback(f, unref_in_cb, &n);
    gale_future_add_done_callback(f, after_unref, &n);
    gale_future_set_result(f, NULL, NULL);
    ck_assert_int_eq(n, 2);
}
END_TEST

START_TEST(test_future_unref_with_pending_callbacks_drops_them)
{
    gale_future *f = gale_future_new(g_loop);
    struct rec r = {0};
    struct rec_item it = {&r, 1};
    gale_future_add_done_callback(f, rec_cb, &it);
    gale_future_unref(f);
    ck_assert_int_eq(r.n, 0);
    ck_assert_int_eq(gale_future_add_done_callback(f = gale_future_new(g_loop), NULL, NULL),
                     -EINVAL);
    gale_future_unref(f);
}
END_TEST

struct on_loop {
    int ran;
    bool inside_set;
};

static void loop_cb(gale_loop *loop, void *arg)
{
    struct on_loop *o = arg;
    ck_assert(!o->inside_set);
    o->ran++;
}

static bool ran_pred(void *arg) { return ((struct on_loop *)arg)->ran >= 2; }

START_TEST(test_future_add_future_runs_on_loop_not_inline)
{
    gale_future *f = gale_future_new(g_loop);
    struct on_loop o = {0};
    ck_assert_int_eq(gale_loop_add_future(g_loop, f, loop_cb, &o), 0);
    o.inside_set = true;
    gale_future_set_result(f, NULL, NULL);
    o.inside_set = false;
    ck_assert_int_eq(o.ran, 0);
    /* Already done: still queued, not run inside the call. */
    ck_assert_int_eq(gale_loop_add_future(g_loop, f, loop_cb, &o), 0);
    ck_assert_int_eq(o.ran, 0);
    gale_future_unref(f); /* the loop keeps its own references */
    ck_assert(test_wait_until(g_loop, ran_pred, &o, 5));
    test_run_for(g_loop, 0.01);
    ck_assert_int_eq(o.ran, 2);
    ck_assert_int_eq(gale_loop_add_future(g_loop, NULL, loop_cb, &o), -EINVAL);
    f = gale_future_new(g_loop);
    ck_assert_int_eq(gale_loop_add_future(g_loop, f, NULL, &o), -EINVAL);
    ck_assert_int_eq(gale_loop_add_future(NULL, f, loop_cb, &o), -EINVAL);
    gale_future_unref(f);
}
END_TEST

START_TEST(test_future_chain_result_and_error)
{
    dtor_calls = 0;
    gale_future *src = gale_future_new(g_loop);
    gale_future *dst = gale_future_new(g_loop);
    ck_assert_int_eq(gale_future_chain(src, dst), 0);
    ck_assert_int_eq(gale_future_chain(src, src), -EINVAL);
    ck_assert_int_eq(gale_future_chain(NULL, dst), -EINVAL);
    char *v = strdup("shared");
    gale_future_set_result(src, v, count_dtor);
    ck_assert(gale_future_done(dst));
    ck_assert_ptr_eq(gale_future_result(dst), v);
    gale_future_unref(src); /* dst keeps the result alive */
    ck_assert_int_eq(dtor_calls, 0);
    ck_assert_str_eq(gale_future_result(dst), "shared");
    gale_future_unref(dst);
    ck_assert_int_eq(dtor_calls, 1);

    src = gale_future_new(g_loop);
    dst = gale_future_new(g_loop);
    gale_future_chain(src, dst);
    gale_future_set_error(src, -ETIMEDOUT, "too slow");
    ck_assert_int_eq(gale_future_error(dst), -ETIMEDOUT);
    ck_assert_str_eq(gale_future_error_message(dst), "too slow");
    gale_future_unref(src);
    gale_future_unref(dst);

    /* dst already done: src's outcome is dropped. */
    src = gale_future_new(g_loop);
    dst = gale_future_new(g_loop);
    gale_future_chain(src, dst);
    gale_future_set_error(dst, -ECANCELED, NULL);
    gale_future_set_result(src, (void *)1, NULL);
    ck_assert_int_eq(gale_future_error(dst), -ECANCELED);
    gale_future_unref(src);
    gale_future_unref(dst);
}
END_TEST

START_TEST(test_future_all_waits_for_every_input_first_error_wins)
{
    gale_future *in[3];
    for (int i = 0; i < 3; i++)
        in[i] = gale_future_new(g_loop);
    gale_future *all = gale_future_all(g_loop, in, 3);
    ck_assert_ptr_nonnull(all);
    gale_future_set_error(in[2], -EIO, "third");
    ck_assert(!gale_future_done(all));
    gale_future_set_result(in[0], NULL, NULL);
    ck_assert(!gale_future_done(all));
    gale_future_set_error(in[1], -EPIPE, "second");
    ck_assert(gale_future_done(all));
    /* First error in index order, not in completion order. */
    ck_assert_int_eq(gale_future_error(all), -EPIPE);
    ck_assert_str_eq(gale_future_error_message(all), "second");
    gale_future_unref(all);
    for (int i = 0; i < 3; i++)
        gale_future_unref(in[i]);

    all = gale_future_all(g_loop, NULL, 0);
    ck_assert(gale_future_done(all));
    ck_assert_int_eq(gale_future_error(all), 0);
    gale_future_unref(all);

    /* Inputs already done, and the caller dropping everything early. */
    in[0] = gale_future_new(g_loop);
    in[1] = gale_future_new(g_loop);
    gale_future_set_result(in[0], NULL, NULL);
    all = gale_future_all(g_loop, in, 2);
    ck_assert(!gale_future_done(all));
    gale_future_unref(in[0]);
    gale_future_unref(all);
    gale_future_set_result(in[1], NULL, NULL);
    gale_future_unref(in[1]);
}
END_TEST

START_TEST(test_future_new_without_loop_uses_current)
{
    gale_loop_make_current(g_loop);
    gale_future *f = gale_future_new(NULL);
    ck_assert_ptr_eq(gale_future_loop(f), g_loop);
    gale_future_unref(f);
    gale_loop_make_current(NULL);
}
END_TEST

static Suite *future_suite(void)
{
    Suite *s = suite_create("future");
    TCase *tc = tcase_create("future");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_future_result_runs_callbacks_in_order_and_dtor_on_free);
    tcase_add_test(tc, test_future_error_code_and_message);
    tcase_add_test(tc, test_future_steal_result_transfers_ownership);
    tcase_add_test(tc, test_future_callback_may_drop_last_reference);
    tcase_add_test(tc, test_future_unref_with_pending_callbacks_drops_them);
    tcase_add_test(tc, test_future_add_future_runs_on_loop_not_inline);
    tcase_add_test(tc, test_future_chain_result_and_error);
    tcase_add_test(tc, test_future_all_waits_for_every_input_first_error_wins);
    tcase_add_test(tc, test_future_new_without_loop_uses_current);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(future_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

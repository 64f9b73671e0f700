/* The threaded resolver: names and numeric hosts, errors, many lookups at once, the future form,
 * cancellation before a loop is freed, and restarting the pool after shutdown. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/future.h"
#include "core/loop.h"
#include "net/resolver.h"
#include "testutil.h"

struct result {
    int calls;
    int status;
    int naddrs;
    bool all_loopback;
    int port;
};

static bool is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) == INADDR_LOOPBACK;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

static void on_resolved(int status, const struct addrinfo *res, void *arg)
{
    struct result *r = arg;
    r->calls++;
    r->status = status;
    r->all_loopback = true;
    for (const struct addrinfo *p = res; p; p = p->ai_next) {
        r->naddrs++;
        r->all_loopback &= is_loopback(p->ai_addr);
        r->port = p->ai_family == AF_INET ? ntohs(((struct sockaddr_in *)p->ai_addr)->sin_port)
                                          : ntohs(((struct sockaddr_in6 *)p->ai_addr)->sin6_port);
        ck_assert_int_eq(p->ai_socktype, SOCK_STREAM);
    }
}

static bool called(void *arg) { return ((struct result *)arg)->calls > 0; }

static gale_loop *new_loop(void)
{
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    return loop;
}

START_TEST(test_resolver_localhost_resolves_to_loopback)
{
    gale_loop *loop = new_loop();
    struct result r = {0};
    ck_assert_int_eq(gale_resolve(loop, "localhost", 8080, AF_UNSPEC, on_resolved, &r), 0);
    ck_assert_int_eq(r.calls, 0); /* never inside the call */
    ck_assert(test_wait_until(loop, called, &r, 10));
    test_run_for(loop, 0.01);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_ge(r.naddrs, 1);
    ck_assert(r.all_loopback);
    ck_assert_int_eq(r.port, 8080);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_resolver_numeric_hosts_without_thread_hop)
{
    gale_loop *loop = new_loop();
    struct result v4 = {0}, v6 = {0};
    ck_assert_int_eq(gale_resolve(loop, "127.0.0.1", 80, AF_UNSPEC, on_resolved, &v4), 0);
    ck_assert_int_eq(gale_resolve(loop, "::1", 80, AF_INET6, on_resolved, &v6), 0);
    ck_assert_int_eq(v4.calls + v6.calls, 0);
    test_run_for(loop, 0.01);
    ck_assert_int_eq(v4.calls, 1);
    ck_assert_int_eq(v4.status, 0);
    ck_assert_int_eq(v4.naddrs, 1);
    ck_assert(v4.all_loopback);
    ck_assert_int_eq(v6.calls, 1);
    ck_assert_int_eq(v6.status, 0);
    ck_assert(v6.all_loopback);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_resolver_unknown_host_reports_error)
{
    gale_loop *loop = new_loop();
    struct result r = {0};
    ck_assert_int_eq(gale_resolve(loop, "nonexistent.invalid", 80, AF_UNSPEC, on_resolved, &r), 0);
    ck_assert(test_wait_until(loop, called, &r, 20));
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, GALE_ERESOLVE);
    ck_assert_int_eq(r.naddrs, 0);
    /* A numeric address in the wrong family is an error too, not a crash. */
    struct result w = {0};
    ck_assert_int_eq(gale_resolve(loop, "::1", 80, AF_INET, on_resolved, &w), 0);
    ck_assert(test_wait_until(loop, called, &w, 20));
    ck_assert_int_eq(w.status, GALE_ERESOLVE);
    gale_loop_free(loop);
}
END_TEST

struct many {
    struct result r[200];
    int n;
};

static bool all_called(void *arg)
{
    struct many *m = arg;
    for (int i = 0; i < m->n; i++)
        if (m->r[i].calls == 0)
            return false;
    return true;
}

START_TEST(test_resolver_many_concurrent_lookups_all_complete)
{
    gale_loop *loop = new_loop();
    static struct many m;
    memset(&m, 0, sizeof m);
    m.n = 200;
    for (int i = 0; i < m.n; i++) {
        /* Names that miss go to DNS, whose timeouts are the machine's: keep them few. */
        const char *host = i % 3 == 0 ? "127.0.0.1" : "localhost";
        if (i == 2)
            host = "nonexistent.invalid";
        ck_assert_int_eq(gale_resolve(loop, host, i, AF_UNSPEC, on_resolved, &m.r[i]), 0);
    }
    ck_assert(test_wait_until(loop, all_called, &m, 30));
    test_run_for(loop, 0.01);
    for (int i = 0; i < m.n; i++) {
        ck_assert_int_eq(m.r[i].calls, 1);
        if (i == 2) {
            ck_assert_int_eq(m.r[i].status, GALE_ERESOLVE);
        } else {
            ck_assert_int_eq(m.r[i].status, 0);
            ck_assert_int_eq(m.r[i].port, i);
        }
    }
    gale_loop_free(loop);
}
END_TEST

static bool future_done(void *arg) { return gale_future_done(arg); }

START_TEST(test_resolver_future_owns_result)
{
    gale_loop *loop = new_loop();
    gale_future *f = gale_resolve_future(loop, "localhost", 443, AF_INET);
    ck_assert_ptr_nonnull(f);
    ck_assert(test_wait_until(loop, future_done, f, 10));
    ck_assert_int_eq(gale_future_error(f), 0);
    struct addrinfo *ai = gale_future_result(f);
    ck_assert_ptr_nonnull(ai);
    ck_assert_int_eq(ai->ai_family, AF_INET);
    ck_assert(is_loopback(ai->ai_addr));
    gale_future_unref(f); /* frees the list */

    f = gale_resolve_future(loop, "nonexistent.invalid", 443, AF_UNSPEC);
    ck_assert(test_wait_until(loop, future_done, f, 20));
    ck_assert_int_eq(gale_future_error(f), GALE_ERESOLVE);
    ck_assert_ptr_null(gale_future_result(f));
    ck_assert_ptr_nonnull(gale_future_error_message(f));
    gale_future_unref(f);

    /* Stealing leaves the list to the caller. */
    f = gale_resolve_future(loop, "127.0.0.1", 1, AF_UNSPEC);
    ck_assert(test_wait_until(loop, future_done, f, 10));
    ai = gale_future_steal_result(f);
    ck_assert_ptr_nonnull(ai);
    gale_future_unref(f);
    freeaddrinfo(ai);

    /* Argument errors complete the future at once. */
    f = gale_resolve_future(loop, "", 1, AF_UNSPEC);
    ck_assert(gale_future_done(f));
    ck_assert_int_eq(gale_future_error(f), -EINVAL);
    gale_future_unref(f);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_resolver_bad_arguments_never_call_back)
{
    gale_loop *loop = new_loop();
    struct result r = {0};
    ck_assert_int_eq(gale_resolve(NULL, "localhost", 80, AF_UNSPEC, on_resolved, &r), -EINVAL);
    ck_assert_int_eq(gale_resolve(loop, NULL, 80, AF_UNSPEC, on_resolved, &r), -EINVAL);
    ck_assert_int_eq(gale_resolve(loop, "", 80, AF_UNSPEC, on_resolved, &r), -EINVAL);
    ck_assert_int_eq(gale_resolve(loop, "localhost", -1, AF_UNSPEC, on_resolved, &r), -EINVAL);
    ck_assert_int_eq(gale_resolve(loop, "localhost", 65536, AF_UNSPEC, on_resolved, &r), -EINVAL);
    ck_assert_int_eq(gale_resolve(loop, "localhost", 80, AF_UNIX, on_resolved, &r), -EINVAL);
    ck_assert_int_eq(gale_resolve(loop, "localhost", 80, AF_UNSPEC, NULL, &r), -EINVAL);
    test_run_for(loop, 0.02);
    ck_assert_int_eq(r.calls, 0);
    ck_assert_int_eq(gale_resolver_gai_error(EAI_NONAME), GALE_ERESOLVE);
    ck_assert_int_eq(gale_resolver_gai_error(EAI_MEMORY), -ENOMEM);
    ck_assert_int_eq(gale_resolver_gai_error(EAI_FAMILY), -EAFNOSUPPORT);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_resolver_cancel_loop_then_free_is_safe)
{
    gale_loop *loop = new_loop();
    struct result r[20];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(gale_resolve(loop, i % 2 ? "localhost" : "127.0.0.1", 80, AF_UNSPEC,
                                      on_resolved, &r[i]),
                         0);
    gale_future *f = gale_resolve_future(loop, "localhost", 80, AF_UNSPEC);
    gale_resolver_cancel_loop(loop);
    gale_loop_free(loop);
    gale_future_unref(f);
    /* A new loop (possibly at the same address) gets nothing from the cancelled lookups. */
    loop = new_loop();
    test_run_for(loop, 0.1);
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(r[i].calls, 0);
    gale_loop_free(loop);
}
END_TEST

START_TEST(test_resolver_shutdown_then_restart)
{
    gale_loop *loop = new_loop();
    struct result a = {0}, b = {0};
    ck_assert_int_eq(gale_resolve(loop, "localhost", 80, AF_UNSPEC, on_resolved, &a), 0);
    ck_assert(test_wait_until(loop, called, &a, 10));
    gale_resolver_shutdown();
    gale_resolver_shutdown(); /* idempotent */
    ck_assert_int_eq(gale_resolve(loop, "localhost", 80, AF_UNSPEC, on_resolved, &b), 0);
    ck_assert(test_wait_until(loop, called, &b, 10));
    ck_assert_int_eq(b.status, 0);
    gale_resolver_shutdown();
    test_run_for(loop, 0.01);
    ck_assert_int_eq(a.calls, 1);
    ck_assert_int_eq(b.calls, 1);
    gale_loop_free(loop);
}
END_TEST

/* Lookups started while another thread shuts the pool down: each one completes, resolved or
 * -ECANCELED, and none is stranded in the queue of a pool whose workers are leaving. */
static atomic_bool stop_shutting;

static void *shutdown_repeatedly(void *unused)
{
    while (!atomic_load(&stop_shutting))
        gale_resolver_shutdown();
    return NULL;
}

START_TEST(test_resolver_lookups_racing_shutdown_all_complete)
{
    gale_loop *loop = new_loop();
    static struct many m;
    memset(&m, 0, sizeof m);
    m.n = 200;
    atomic_store(&stop_shutting, false);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, shutdown_repeatedly, NULL), 0);
    /* One at a time: a lookup stranded in the queue is never picked up by a later one. */
    bool all = true;
    for (int i = 0; i < m.n && all; i++) {
        ck_assert_int_eq(gale_resolve(loop, "localhost", i, AF_UNSPEC, on_resolved, &m.r[i]), 0);
        all = test_wait_until(loop, called, &m.r[i], 5);
    }
    atomic_store(&stop_shutting, true);
    pthread_join(t, NULL);
    ck_assert_msg(all, "a lookup started during a shutdown never completed");
    for (int i = 0; i < m.n; i++) {
        ck_assert_int_eq(m.r[i].calls, 1);
        if (m.r[i].status != -ECANCELED)
            ck_assert_int_eq(m.r[i].status, 0);
    }
    gale_loop_free(loop);
}
END_TEST

static Suite *resolver_suite(void)
{
    Suite *s = suite_create("resolver");
    TCase *tc = tcase_create("resolve");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_resolver_localhost_resolves_to_loopback);
    tcase_add_test(tc, test_resolver_numeric_hosts_without_thread_hop);
    tcase_add_test(tc, test_resolver_unknown_host_reports_error);
    tcase_add_test(tc, test_resolver_many_concurrent_lookups_all_complete);
    tcase_add_test(tc, test_resolver_future_owns_result);
    tcase_add_test(tc, test_resolver_bad_arguments_never_call_back);
    tcase_add_test(tc, test_resolver_cancel_loop_then_free_is_safe);
    tcase_add_test(tc, test_resolver_shutdown_then_restart);
    tcase_add_test(tc, test_resolver_lookups_racing_shutdown_all_complete);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(resolver_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

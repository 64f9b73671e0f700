/* An in-process web application for the suites of the web layer's parts (escaping and JSON,
 * signed cookies and XSRF, compression, static files): a loop and an app listening on port 0,
 * and one raw HTTP exchange at a time from a client thread while the loop serves. Header-only
 * (static inline), included by the suites that need it. */
#ifndef GALE_TESTS_WEBTEST_H
#define GALE_TESTS_WEBTEST_H

#include <check.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/loop.h"
#include "http/web.h"
#include "rawhttp.h"
#include "testutil.h"

static gale_loop *wt_loop;
static gale_app *wt_app;
static int wt_port;

/* A loop made current and an app with default options (routes are added by the caller, then
 * wt_listen()). */
static inline void wt_setup(void)
{
    gale_log_set_level(GALE_LOG_ERROR);
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &wt_loop), 0);
    gale_loop_make_current(wt_loop);
    wt_app = gale_app_new(NULL);
    ck_assert_ptr_nonnull(wt_app);
}

static inline void wt_listen(void)
{
    ck_assert_int_eq(gale_app_listen(wt_app, 0, "127.0.0.1"), 0);
    wt_port = gale_app_port(wt_app);
}

static inline void wt_teardown(void)
{
    gale_app_free(wt_app);
    test_run_for(wt_loop, 0.02); /* the streams' close callbacks */
    gale_loop_make_current(NULL);
    gale_loop_free(wt_loop);
}

struct wt_exchange {
    const char *raw;
    bool head;
    int rc;
    struct test_http_response r;
};

static inline void wt_exchange_main(void *arg)
{
    struct wt_exchange *x = arg;
    x->rc = test_http_exchange(wt_port, x->raw, strlen(x->raw), x->head, &x->r);
}

/* Sends the raw request on a new connection and returns the parsed response (status 0 when
 * none came). The caller frees it with test_http_response_free(). */
static inline struct test_http_response wt_raw(const char *raw, bool head)
{
    struct wt_exchange x = {.raw = raw, .head = head};
    ck_assert(test_run_thread(wt_loop, wt_exchange_main, &x, 20));
    return x.r;
}

/* `method target` with the extra header lines `headers` (each ending in \r\n; may be NULL) and
 * `body` (may be NULL: none; else Content-Length is added). */
static inline struct test_http_response wt_req(const char *method, const char *target,
                                               const char *headers, const char *body)
{
    static char buf[16384];
    char cl[48] = "";
    if (body)
        snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body));
    snprintf(buf, sizeof buf, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s\r\n%s",
             method, target, headers ? headers : "", cl, body ? body : "");
    return wt_raw(buf, strcmp(method, "HEAD") == 0);
}

#endif

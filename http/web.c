/* Application and request handlers (see web.h); the route table is in web_route.c. */
#include "http/web.h"

#include <errno.h>
#include <math.h>
#include <regex.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/copy_internal.h"
#include "core/coro.h"
#include "core/errors.h"
#include "core/future.h"
#include "core/log.h"
#include "http/httpserver_internal.h"
#include "http/web_internal.h"
#include "net/tcpserver.h"

/* ---- application ---- */

/* A socket file gale_app_listen_unix() made. Its device and inode tell it apart from a file a
 * later server put at the same path (after this one stopped, a stale socket is replaced). */
struct unix_file {
    struct unix_file *next;
    dev_t dev;
    ino_t ino;
    pid_t pid; /* the process that bound it: workers forked since leave the file alone */
    char path[];
};

struct gale_app {
    gale__route_table routes;
    gale_http_server_opts opts;
    gale_http_server *srv;
    gale_loop *loop;
    bool draining;      /* gale_app_shutdown() was called */
    double signal_time; /* loop time of the signal that began the drain (0: none) */
    const gale_handler_class *default_cls; /* for paths no route matches (NULL: plain 404) */
    void *default_arg;
    struct unix_file *unix_files;       /* made by gale_app_listen_unix, removed at free */
    struct gale__app_settings settings; /* cookies, XSRF, login, compression, named routes */
    gale_tls_ctx *tls;                  /* made by gale_app_use_tls, reloaded on SIGHUP */
};

/* One response header set by the handler, copied into the request arena. */
struct out_header {
    const char *name;
    const char *value;
    size_t name_len, value_len;
};

struct gale_handler {
    gale_app *app;
    gale_http_request *req;
    const gale_handler_class *cls;
    void *arg;
    void *state;
    const char **pargs;
    size_t *pargs_len;
    size_t npargs;

    bool query_parsed, body_parsed, cookies_parsed;

    int status;
    struct out_header *headers;
    size_t nheaders, headers_cap;
    bool default_ctype; /* Content-Type: text/html; charset=UTF-8 still applies */
    /* The body is buffered by the server's response itself (gale_http_response_write) until
     * a flush or the finish, so it is copied once on its way out. */

    gale_coro *coro; /* the method's coroutine while it runs (gale_handler_run_coro) */
    gale_handler_fn coro_fn;

    int busy; /* > 0 while a handler callback (or the method's coroutine) runs: the release
                 * waits for it */
    bool async;
    bool headers_sent;
    bool finished;
    bool released;
    bool closed;
    bool close_called;
    struct gale__handler_web web; /* the added parts' per-request state */

    /* Last: on_request zeroes only what comes before these; each is set up when first parsed
     * (the *_parsed flags above). */
    gale_form query, body, cookies;
};

static const char DEFAULT_CTYPE_LINE[] = "Content-Type: text/html; charset=UTF-8\r\n";

gale_app *gale_app_new(const gale_http_server_opts *opts)
{
    gale_app *app = calloc(1, sizeof *app);
    if (!app)
        return NULL;
    if (opts)
        app->opts = *opts;
    else
        gale_http_server_opts_init(&app->opts);
    return app;
}

gale_http_server_opts *gale_app_opts(gale_app *app) { return app ? &app->opts : NULL; }

struct gale__app_settings *gale__app_settings(gale_app *app) { return &app->settings; }
struct gale__handler_web *gale__handler_web(gale_handler *h) { return &h->web; }
const gale_handler_class *gale__handler_class(gale_handler *h) { return h->cls; }

const char *gale__handler_out_header(gale_handler *h, const char *name)
{
    for (size_t i = h->nheaders; i-- > 0;)
        if (strcasecmp(h->headers[i].name, name) == 0)
            return h->headers[i].value;
    if (h->default_ctype && strcasecmp(name, "Content-Type") == 0)
        return "text/html; charset=UTF-8";
    return NULL;
}

int gale_app_route(gale_app *app, const char *pattern, const gale_handler_class *cls, void *arg)
{
    if (!app || !pattern || !cls)
        return -EINVAL;
    return gale__route_add(&app->routes, pattern, cls, arg);
}

int gale__app_route_owned(gale_app *app, const char *pattern, const gale_handler_class *cls,
                          void *arg, void (*arg_free)(void *arg))
{
    int rc = gale_app_route(app, pattern, cls, arg);
    if (rc == 0)
        app->routes.routes[app->routes.n - 1].arg_free = arg_free;
    else if (arg_free)
        arg_free(arg);
    return rc;
}

static void on_request(gale_http_request *req, void *arg);
static bool on_head(gale_http_request *req, void *arg);

static int make_server(gale_app *app)
{
    if (app->srv)
        return -EALREADY;
    int rc = gale_http_server_new(NULL, &app->opts, on_request, app, &app->srv);
    if (rc == 0) /* a body for a stream_request_body class is streamed */
        gale_http_server_set_head_cb(app->srv, on_head, app);
    return rc;
}

int gale_app_listen(gale_app *app, int port, const char *address)
{
    if (!app)
        return -EINVAL;
    int rc = make_server(app);
    if (rc)
        return rc;
    rc = gale_http_server_listen(app->srv, port, address);
    if (rc) {
        gale_log_error(GALE_LOG_GENERAL, "cannot listen on port %d: %s", port, gale_strerror(rc));
        gale_http_server_free(app->srv);
        app->srv = NULL;
        return rc;
    }
    gale_log_info(GALE_LOG_GENERAL, "listening on port %d", gale_http_server_port(app->srv));
    return 0;
}

int gale_app_add_socket(gale_app *app, int fd)
{
    if (!app || fd < 0)
        return -EINVAL;
    bool created = !app->srv;
    int rc = created ? make_server(app) : 0;
    if (rc)
        return rc;
    rc = gale_http_server_add_socket(app->srv, fd);
    if (rc) {
        gale_log_error(GALE_LOG_GENERAL, "cannot serve socket %d: %s", fd, gale_strerror(rc));
        if (created) {
            gale_http_server_free(app->srv);
            app->srv = NULL;
        }
    }
    return rc;
}

/* Removes the socket file unless another server has bound the path since, or this process is a
 * worker forked after the bind (the file belongs to the process that made it). */
static void unix_file_remove(const struct unix_file *uf)
{
    struct stat st;
    if (uf->pid == getpid() && lstat(uf->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
        st.st_dev == uf->dev && st.st_ino == uf->ino)
        unlink(uf->path);
}

int gale_app_listen_unix(gale_app *app, const char *path, int mode)
{
    if (!app || !path || !path[0])
        return -EINVAL;
    size_t len = strlen(path);
    struct unix_file *uf = malloc(sizeof *uf + len + 1);
    if (!uf)
        return -ENOMEM;
    memcpy(uf->path, path, len + 1);
    uf->pid = getpid();
    int fd = gale_bind_unix_socket(path, mode, 0);
    if (fd < 0) {
        gale_log_error(GALE_LOG_GENERAL, "cannot listen on unix socket %s: %s", path,
                       gale_strerror(fd));
        free(uf);
        return fd;
    }
    struct stat st;
    if (lstat(path, &st) < 0) { /* removed already: nothing to remove later */
        int err = -errno;
        close(fd);
        free(uf);
        return err;
    }
    uf->dev = st.st_dev;
    uf->ino = st.st_ino;
    int rc = gale_app_add_socket(app, fd); /* logs its failures */
    if (rc) {
        close(fd);
        unix_file_remove(uf);
        free(uf);
        return rc;
    }
    uf->next = app->unix_files;
    app->unix_files = uf;
    gale_log_info(GALE_LOG_GENERAL, "listening on unix socket %s", path);
    return 0;
}

int gale_app_bind(gale_app *app, int port, const char *address)
{
    if (!app)
        return -EINVAL;
    int rc = make_server(app);
    if (rc)
        return rc;
    rc = gale_http_server_bind(app->srv, port, address);
    if (rc) {
        gale_log_error(GALE_LOG_GENERAL, "cannot bind port %d: %s", port, gale_strerror(rc));
        gale_http_server_free(app->srv);
        app->srv = NULL;
        return rc;
    }
    gale_log_info(GALE_LOG_GENERAL, "listening on port %d", gale_http_server_port(app->srv));
    return 0;
}

int gale_app_start(gale_app *app, int nprocs)
{
    if (!app || !app->srv)
        return -EINVAL;
    return gale_http_server_start(app->srv, nprocs);
}

int gale_app_port(const gale_app *app)
{
    if (!app)
        return -EINVAL;
    return app->srv ? gale_http_server_port(app->srv) : -ENOTCONN;
}

gale_http_server *gale_app_server(gale_app *app) { return app ? app->srv : NULL; }

/* Signals closer together than this are one request to stop: Ctrl-C reaches every process of the
 * terminal's group, and a prefork parent forwards it to its workers as well. */
#define SIGNAL_REPEAT_WINDOW 1.0

static void on_signal(gale_loop *loop, int signum, void *arg)
{
    gale_app *app = arg;
    double now = gale_loop_time(loop);
    if (!app->draining) {
        gale_log_info(GALE_LOG_GENERAL,
                      "received %s: draining connections (up to %.3g s; another signal ends the "
                      "drain at once)",
                      strsignal(signum), app->opts.shutdown_timeout);
        app->signal_time = now;
        gale_app_shutdown(app, app->opts.shutdown_timeout);
        return;
    }
    if (app->signal_time > 0 && now - app->signal_time < SIGNAL_REPEAT_WINDOW)
        return;
    gale_log_warning(GALE_LOG_GENERAL, "received %s again: closing the remaining connections",
                     strsignal(signum));
    gale_app_shutdown(app, 0);
}

static void on_drained(gale_loop *loop, void *arg)
{
    gale_app *app = arg;
    gale_loop_stop(app->loop ? app->loop : loop);
}

int gale_app_shutdown(gale_app *app, double timeout)
{
    if (!app || isnan(timeout) || timeout < 0)
        return -EINVAL;
    if (!app->srv) {
        app->draining = true;
        gale_loop_stop(app->loop ? app->loop : gale_loop_current());
        return 0;
    }
    int rc = gale_http_server_shutdown(app->srv, timeout, on_drained, app);
    if (rc == 0 || rc == -EALREADY)
        app->draining = true;
    return rc == -EALREADY ? 0 : rc;
}

int gale_app_use_tls(gale_app *app, const gale_tls_opts *o)
{
    if (!app || !o || !o->certfile)
        return -EINVAL;
    if (app->srv)
        return -EALREADY;
    gale_tls_ctx *ctx = NULL;
    int rc = gale_tls_server_new(o, &ctx);
    if (rc < 0)
        return rc;
    gale_tls_unref(app->tls);
    app->tls = ctx;
    app->opts.tls = ctx;
    return 0;
}

static void on_sighup(gale_loop *loop, int signum, void *arg)
{
    gale_app *app = arg;
    gale_log_info(GALE_LOG_GENERAL, "received %s: reloading the TLS certificates",
                  strsignal(signum));
    gale_tls_reload(app->tls); /* logs the outcome; a failure keeps the previous ones */
}

int gale_app_run(gale_app *app)
{
    if (!app)
        return -EINVAL;
    gale_loop *loop = gale_loop_current();
    if (!loop)
        return -ENOMEM;
    app->loop = loop;
    bool sigint = gale_loop_add_signal(loop, SIGINT, on_signal, app) == 0;
    bool sigterm = gale_loop_add_signal(loop, SIGTERM, on_signal, app) == 0;
    bool sighup = app->tls && gale_loop_add_signal(loop, SIGHUP, on_sighup, app) == 0;
    int rc = gale_loop_run(loop);
    if (sighup)
        gale_loop_remove_signal(loop, SIGHUP);
    if (sigint)
        gale_loop_remove_signal(loop, SIGINT);
    if (sigterm)
        gale_loop_remove_signal(loop, SIGTERM);
    app->loop = NULL;
    gale_log_flush();
    return rc;
}

void gale_app_stop(gale_app *app)
{
    if (app)
        gale_loop_stop(app->loop ? app->loop : gale_loop_current());
}

void gale_app_set_default_handler(gale_app *app, const gale_handler_class *cls, void *arg)
{
    if (!app)
        return;
    app->default_cls = cls;
    app->default_arg = arg;
}

void gale_app_free(gale_app *app)
{
    if (!app)
        return;
    if (app->srv)
        gale_http_server_free(app->srv);
    gale__route_table_free(&app->routes);
    gale_tls_unref(app->tls);
    gale__app_settings_free(&app->settings);
    /* After the server: its listening sockets are closed, so no client reaches a removed path. */
    while (app->unix_files) {
        struct unix_file *uf = app->unix_files;
        app->unix_files = uf->next;
        unix_file_remove(uf);
        free(uf);
    }
    free(app);
}

/* ---- dispatch ---- */

static void *req_alloc(void *ctx, size_t size) { return gale_http_request_alloc(ctx, size); }

static void release(gale_handler *h)
{
    h->released = true;
    gale__compress_free(h);
    if (h->cls->on_finish)
        h->cls->on_finish(h);
    gale_http_response_finish(h->req); /* frees h */
}

/* Leaves a handler callback: the release deferred by a finish inside it happens now. */
static void leave(gale_handler *h)
{
    if (--h->busy == 0 && h->finished && !h->released)
        release(h);
}

void gale__handler_hold(gale_handler *h) { h->busy++; }
void gale__handler_unhold(gale_handler *h) { leave(h); }

void gale__handler_method(gale_handler *h, gale_handler_fn fn)
{
    h->busy++;
    h->async = h->cls->async;
    fn(h);
    if (!h->finished && !h->async)
        gale_finish(h);
    leave(h);
}

static void on_close(gale_http_request *req, void *arg)
{
    gale_handler *h = arg;
    h->closed = true;
    if (h->finished || h->close_called)
        return;
    h->close_called = true;
    gale_coro *co = h->coro; /* a running coroutine holds h (busy), so h outlives leave() */
    if (h->cls->on_connection_close) {
        h->busy++;
        h->cls->on_connection_close(h);
        leave(h);
    }
    if (co)
        gale_coro_cancel(co, -ECANCELED);
}

static gale_handler_fn method_fn(const gale_handler_class *c, const char *m, bool *head)
{
    *head = false;
    switch (m[0]) {
    case 'G': return m[1] == 'E' && m[2] == 'T' && m[3] == '\0' ? c->get : NULL;
    case 'H':
        if (strcmp(m, "HEAD") != 0)
            return NULL;
        *head = true;
        return c->head ? c->head : c->get;
    case 'P':
        if (strcmp(m, "POST") == 0)
            return c->post;
        if (strcmp(m, "PUT") == 0)
            return c->put;
        return strcmp(m, "PATCH") == 0 ? c->patch : NULL;
    case 'D': return strcmp(m, "DELETE") == 0 ? c->delete : NULL;
    case 'O': return strcmp(m, "OPTIONS") == 0 ? c->options : NULL;
    }
    return NULL;
}

static void set_allow(gale_handler *h, const gale_handler_class *c)
{
    char allow[64] = "";
    const struct {
        gale_handler_fn fn;
        const char *name;
    } m[] = {{c->get, "GET"},        {c->get ? c->get : c->head, "HEAD"},
             {c->post, "POST"},      {c->delete, "DELETE"},
             {c->patch, "PATCH"},    {c->put, "PUT"},
             {c->options, "OPTIONS"}};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        if (!m[i].fn)
            continue;
        if (allow[0])
            strcat(allow, ", ");
        strcat(allow, m[i].name);
    }
    gale_set_header(h, "Allow", allow);
}

static const gale_handler_class no_handler;

static int set_path_args(gale_handler *h, const struct gale__route *r, const regmatch_t *pm)
{
    size_t n = r->ngroups;
    if (n == 0)
        return 0;
    h->pargs = gale_http_request_alloc(h->req, n * sizeof *h->pargs);
    h->pargs_len = gale_http_request_alloc(h->req, n * sizeof *h->pargs_len);
    if (!h->pargs || !h->pargs_len)
        return -ENOMEM;
    h->npargs = n;
    const char *path = h->req->path;
    for (size_t i = 0; i < n; i++) {
        const regmatch_t *m = &pm[i + 2];
        if (m->rm_so < 0)
            continue; /* the group took no part in the match */
        size_t len = (size_t)(m->rm_eo - m->rm_so);
        char *s = gale_http_request_alloc(h->req, len + 1);
        if (!s)
            return -ENOMEM;
        len = gale_url_unescape(s, path + m->rm_so, len, false);
        s[len] = '\0';
        h->pargs[i] = s;
        h->pargs_len[i] = len;
    }
    return 0;
}

#define STACK_GROUPS 12

static void write_error_body(gale_handler *h, int code);

/* At the end of a head with a body: streamed when the class it goes to asks for that. */
static bool on_head(gale_http_request *req, void *arg)
{
    gale_app *app = arg;
    regmatch_t stack_pm[STACK_GROUPS], *pm = stack_pm;
    const struct gale__route *r = gale__route_match(&app->routes, req, stack_pm, STACK_GROUPS, &pm);
    const gale_handler_class *cls = r ? r->cls : app->default_cls;
    return cls && cls->stream_request_body;
}

static void on_request(gale_http_request *req, void *arg)
{
    gale_app *app = arg;
    regmatch_t stack_pm[STACK_GROUPS];
    regmatch_t *pm = stack_pm;
    const struct gale__route *r = gale__route_match(&app->routes, req, stack_pm, STACK_GROUPS, &pm);
    const gale_handler_class *cls = r ? r->cls : app->default_cls ? app->default_cls : &no_handler;

    gale_handler *h = gale__http_request_alloc_raw(req, sizeof *h);
    if (!h) {
        gale_log_error(GALE_LOG_GENERAL, "%s %s: out of memory", req->method, req->uri);
        gale_http_response_set_status(req, 500, NULL);
        gale_http_response_finish(req);
        return;
    }
    gale__zero(h, offsetof(gale_handler, query));
    h->app = app;
    h->req = req;
    h->cls = cls;
    h->arg = r ? r->arg : app->default_arg;
    h->status = 200;
    h->default_ctype = true;
    h->async = cls->async;
    h->web.compress_on = app->settings.compress;
    req->user = h;
    gale_http_request_set_close_cb(req, on_close, h);
    h->busy = 1;
    if (cls->set_default_headers)
        cls->set_default_headers(h);

    bool head;
    gale_handler_fn fn = method_fn(cls, req->method, &head);
    if (!r && !app->default_cls) {
        gale_send_error(h, 404);
    } else if (!fn) {
        set_allow(h, cls);
        gale_set_status(h, 405);
        h->async = false;
        /* keep the Allow header: send_error would clear it */
        write_error_body(h, 405);
        gale_finish(h);
    } else if ((cls->state_size && !(h->state = gale_http_request_alloc(req, cls->state_size))) ||
               (r && set_path_args(h, r, pm) < 0)) {
        gale_fail(h, -ENOMEM);
    } else {
        if (gale__web_before_prepare(h) && cls->prepare)
            cls->prepare(h);
        if (!h->finished && gale__web_before_method(h) &&
            !(cls->stream_request_body && gale__web_stream_begin(h, fn)))
            fn(h);
        if (!h->finished && !h->async)
            gale_finish(h);
    }
    leave(h);
}

/* ---- coroutine methods ---- */

static int handler_coro_main(void *arg)
{
    gale_handler *h = arg;
    h->coro = gale_coro_current();
    h->coro_fn(h);
    h->coro = NULL;
    if (!h->finished)
        gale_finish(h);
    leave(h); /* may release h */
    return 0;
}

int gale_handler_run_coro(gale_handler *h, gale_handler_fn fn)
{
    if (!h || !fn)
        return -EINVAL;
    if (h->coro || h->finished)
        return -EALREADY;
    h->coro_fn = fn;
    h->async = true;
    h->busy++;
    gale_future *f = gale_coro_spawn(gale_handler_loop(h), handler_coro_main, h, NULL);
    /* An error here means the coroutine never started (its body always returns 0). */
    int rc = f ? gale_future_error(f) : -ENOMEM;
    gale_future_unref(f);
    if (rc) {
        h->busy--;
        gale_fail(h, rc);
    }
    return rc;
}

/* ---- request accessors ---- */

gale_http_request *gale_handler_request(gale_handler *h) { return h->req; }
gale_app *gale_handler_app(gale_handler *h) { return h->app; }
gale_loop *gale_handler_loop(gale_handler *h) { return gale_http_request_loop(h->req); }
void *gale_handler_arg(gale_handler *h) { return h->arg; }
void *gale_handler_state(gale_handler *h) { return h->state; }
void gale_handler_async(gale_handler *h) { h->async = true; }
void *gale_handler_alloc(gale_handler *h, size_t size)
{
    return gale_http_request_alloc(h->req, size);
}

const char *gale_method(gale_handler *h) { return h->req->method; }
const char *gale_uri(gale_handler *h) { return h->req->uri; }
const char *gale_path(gale_handler *h) { return h->req->path; }
const char *gale_query(gale_handler *h) { return h->req->query; }
const char *gale_remote_ip(gale_handler *h) { return h->req->remote_ip; }

const char *gale_body(gale_handler *h, size_t *len)
{
    if (len)
        *len = h->req->body_len;
    return h->req->body ? h->req->body : "";
}

const char *gale_path_arg(gale_handler *h, size_t i, size_t *len)
{
    if (i >= h->npargs || !h->pargs[i])
        return NULL;
    if (len)
        *len = h->pargs_len[i];
    return h->pargs[i];
}

size_t gale_path_arg_count(gale_handler *h) { return h->npargs; }

const char *gale_get_header(gale_handler *h, const char *name, size_t *len)
{
    return gale_http_headers_get(&h->req->headers, name, len);
}

const gale_http_header *gale_header_next(gale_handler *h, const char *name, size_t *cursor)
{
    return gale_http_headers_next(&h->req->headers, name, cursor);
}

static gale_form *query_form(gale_handler *h)
{
    if (!h->query_parsed) {
        h->query_parsed = true;
        gale_form_init(&h->query, req_alloc, h->req);
        const char *q = h->req->query ? h->req->query : "";
        gale_form_parse_urlencoded(&h->query, q, strlen(q));
    }
    return &h->query;
}

static gale_form *body_form(gale_handler *h)
{
    if (!h->body_parsed) {
        h->body_parsed = true;
        gale_form_init(&h->body, req_alloc, h->req);
        size_t ctlen;
        const char *ct = gale_get_header(h, "Content-Type", &ctlen);
        if (ct && h->req->body_len &&
            gale_form_parse_body(&h->body, ct, ctlen, h->req->body, h->req->body_len) == -EINVAL)
            gale_log_warning(GALE_LOG_GENERAL, "%s %s: body arguments ignored", h->req->method,
                             h->req->uri);
    }
    return &h->body;
}

const gale_form *gale_arguments(gale_handler *h, gale_args_source src)
{
    return src == GALE_ARGS_BODY ? body_form(h) : query_form(h);
}

size_t gale_argument_count(gale_handler *h, gale_args_source src, const char *name)
{
    size_t n = 0;
    if (src != GALE_ARGS_BODY)
        n += gale_form_count(query_form(h), name);
    if (src != GALE_ARGS_QUERY)
        n += gale_form_count(body_form(h), name);
    return n;
}

const char *gale_get_argument_at(gale_handler *h, gale_args_source src, const char *name, size_t i,
                                 size_t *len)
{
    const gale_form_arg *a = NULL;
    if (src != GALE_ARGS_BODY) {
        size_t nq = gale_form_count(query_form(h), name);
        if (i < nq)
            a = gale_form_find(query_form(h), name, i);
        else
            i -= nq;
    }
    if (!a && src != GALE_ARGS_QUERY)
        a = gale_form_find(body_form(h), name, i);
    if (!a)
        return NULL;
    if (len)
        *len = a->value_len;
    return a->value;
}

/* Tornado's get_argument replaces the control characters \x00-\x08 and \x0e-\x1f with spaces.
 * Here that also keeps a NUL from cutting the string short ("admin%00x" reading as "admin"). */
static bool removed_control(unsigned char c) { return c <= 0x08 || (c >= 0x0e && c <= 0x1f); }

static const char *last_arg(gale_handler *h, gale_args_source src, const char *name,
                            const char *def)
{
    size_t n = gale_argument_count(h, src, name);
    if (n == 0)
        return def;
    size_t len;
    const char *v = gale_get_argument_at(h, src, name, n - 1, &len);
    size_t i = 0;
    while (i < len && !removed_control((unsigned char)v[i]))
        i++;
    if (i == len)
        return v;
    char *copy = gale_http_request_strdup(h->req, v, len);
    if (!copy)
        return def;
    for (; i < len; i++)
        if (removed_control((unsigned char)copy[i]))
            copy[i] = ' ';
    return copy;
}

const char *gale_get_argument(gale_handler *h, const char *name, const char *def)
{
    return last_arg(h, GALE_ARGS_ALL, name, def);
}

const char *gale_get_query_argument(gale_handler *h, const char *name, const char *def)
{
    return last_arg(h, GALE_ARGS_QUERY, name, def);
}

const char *gale_get_body_argument(gale_handler *h, const char *name, const char *def)
{
    return last_arg(h, GALE_ARGS_BODY, name, def);
}

const gale_form_file *gale_get_file(gale_handler *h, const char *name, size_t i)
{
    return gale_form_find_file(body_form(h), name, i);
}

const char *gale_get_cookie(gale_handler *h, const char *name, const char *def)
{
    if (!h->cookies_parsed) {
        h->cookies_parsed = true;
        gale_form_init(&h->cookies, req_alloc, h->req);
        size_t cursor = 0;
        const gale_http_header *c;
        while ((c = gale_http_headers_next(&h->req->headers, "Cookie", &cursor)))
            gale_form_parse_cookies(&h->cookies, c->value.p, c->value.len);
    }
    size_t n = gale_form_count(&h->cookies, name);
    if (n == 0)
        return def;
    return gale_form_find(&h->cookies, name, n - 1)->value;
}

/* ---- response ---- */

int gale_set_status(gale_handler *h, int code)
{
    if (code < 100 || code > 599)
        return -EINVAL;
    if (h->headers_sent || h->finished)
        return -EALREADY;
    h->status = code;
    return 0;
}

int gale_get_status(gale_handler *h) { return h->status; }

static bool valid_token(const char *s) { return s && gale_http_is_token(s, strlen(s)); }

/* Field values: visible characters, spaces and tabs; no CR, LF or other controls. */
static bool valid_value(const char *s) { return s && gale_http_is_field_value(s, strlen(s)); }

static int header_check(gale_handler *h, const char *name, const char *value)
{
    if (!valid_token(name) || (value && !valid_value(value)))
        return -EINVAL;
    if (h->headers_sent || h->finished)
        return -EALREADY;
    return 0;
}

static void remove_headers(gale_handler *h, const char *name)
{
    size_t o = 0;
    for (size_t i = 0; i < h->nheaders; i++) {
        if (strcasecmp(h->headers[i].name, name) != 0)
            h->headers[o++] = h->headers[i];
    }
    h->nheaders = o;
    if (strcasecmp(name, "Content-Type") == 0)
        h->default_ctype = false;
}

static int append_header(gale_handler *h, const char *name, const char *value)
{
    if (h->nheaders == h->headers_cap) {
        size_t ncap = h->headers_cap ? h->headers_cap * 2 : 8;
        struct out_header *n = gale_http_request_alloc(h->req, ncap * sizeof *n);
        if (!n)
            return -ENOMEM;
        if (h->nheaders)
            memcpy(n, h->headers, h->nheaders * sizeof *n);
        h->headers = n;
        h->headers_cap = ncap;
    }
    size_t nl = strlen(name), vl = strlen(value);
    char *nc = gale_http_request_strdup(h->req, name, nl);
    char *vc = gale_http_request_strdup(h->req, value, vl);
    if (!nc || !vc)
        return -ENOMEM;
    h->headers[h->nheaders++] = (struct out_header){nc, vc, nl, vl};
    if (strcasecmp(name, "Content-Type") == 0)
        h->default_ctype = false;
    return 0;
}

int gale_set_header(gale_handler *h, const char *name, const char *value)
{
    int rc = header_check(h, name, value ? value : "");
    if (rc)
        return rc;
    remove_headers(h, name);
    return append_header(h, name, value ? value : "");
}

int gale_add_header(gale_handler *h, const char *name, const char *value)
{
    int rc = header_check(h, name, value ? value : "");
    if (rc)
        return rc;
    return append_header(h, name, value ? value : "");
}

int gale_clear_header(gale_handler *h, const char *name)
{
    int rc = header_check(h, name, NULL);
    if (rc)
        return rc;
    remove_headers(h, name);
    return 0;
}

/* Appends to the response's body. A connection that has gone away takes writes silently (its
 * bytes are dropped), as Tornado's write() does: the handler learns it from flush or finish. */
static int body_write(gale_handler *h, const void *data, size_t len)
{
    int rc = gale_http_response_write(h->req, data, len);
    return rc == -EPIPE ? 0 : rc;
}

int gale_write(gale_handler *h, const void *data, size_t len)
{
    if (h->finished)
        return -EALREADY;
    if (len == 0)
        return 0;
    if (!data)
        return -EINVAL;
    return body_write(h, data, len);
}

int gale_write_str(gale_handler *h, const char *s)
{
    return s ? gale_write(h, s, strlen(s)) : -EINVAL;
}

int gale_vwritef(gale_handler *h, const char *fmt, va_list ap)
{
    if (h->finished)
        return -EALREADY;
    if (!fmt)
        return -EINVAL;
    char small[512];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof small)
        return body_write(h, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return -ENOMEM;
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    int rc = body_write(h, big, (size_t)n);
    free(big);
    return rc;
}

int gale_writef(gale_handler *h, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = gale_vwritef(h, fmt, ap);
    va_end(ap);
    return rc;
}

static bool bodyless_status(int code) { return code < 200 || code == 204 || code == 304; }

static int send_headers(gale_handler *h)
{
    gale_http_request *req = h->req;
    h->headers_sent = true;
    int rc = gale_http_response_set_status(req, h->status, NULL);
    /* The default is a constant and the handler's headers were validated and copied into the
     * request arena by gale_set_header: hand them over without a second check and copy. */
    if (h->default_ctype && !bodyless_status(h->status))
        rc =
            rc ? rc
               : gale__http_response_preset(req, DEFAULT_CTYPE_LINE, sizeof DEFAULT_CTYPE_LINE - 1);
    for (size_t i = 0; i < h->nheaders; i++) {
        const struct out_header *o = &h->headers[i];
        if (bodyless_status(h->status) && strcasecmp(o->name, "Content-Type") == 0)
            continue;
        int r = gale_http_response_add_header_trusted(req, o->name, o->name_len, o->value,
                                                      o->value_len);
        rc = rc ? rc : r;
    }
    return rc;
}

int gale_flush(gale_handler *h)
{
    if (h->finished)
        return -EALREADY;
    int rc = gale__compress_filter(h, false);
    rc = rc ? rc : h->headers_sent ? 0 : send_headers(h);
    int r = gale_http_response_flush(h->req);
    if (h->closed || gale_http_request_connection_closed(h->req))
        return -EPIPE;
    return rc ? rc : r;
}

int gale_flush_cb(gale_handler *h, gale_http_flushed_cb cb, void *arg)
{
    if (!cb)
        return -EINVAL;
    if (h->finished)
        return -EALREADY;
    if (h->closed || gale_http_request_connection_closed(h->req))
        return -EPIPE;
    int rc = gale__compress_filter(h, false);
    rc = rc ? rc : h->headers_sent ? 0 : send_headers(h);
    if (rc)
        return rc;
    return gale_http_response_flush_cb(h->req, cb, arg);
}

static void flushed_to_future(int status, void *arg)
{
    gale_future *f = arg;
    if (status == 0)
        gale_future_set_result(f, NULL, NULL);
    else
        gale_future_set_error(f, status, "the client went away before the flush left");
    gale_future_unref(f);
}

gale_future *gale_flush_future(gale_handler *h)
{
    gale_future *f = gale_future_new(gale_http_request_loop(h->req));
    if (!f)
        return NULL;
    gale_future_ref(f); /* the callback's */
    int rc = gale_flush_cb(h, flushed_to_future, f);
    if (rc) {
        gale_future_set_error(f, rc, "flush failed");
        gale_future_unref(f);
    }
    return f;
}

int gale_finish(gale_handler *h)
{
    if (h->finished)
        return -EALREADY;
    /* The output filter may still set headers: before the response counts as finished. */
    if (!bodyless_status(h->status) && gale__compress_filter(h, true) < 0)
        gale_log_error(GALE_LOG_GENERAL, "%s %s: out of memory compressing the response",
                       h->req->method, h->req->uri);
    h->finished = true;
    if (bodyless_status(h->status))
        gale_http_response_clear_body(h->req);
    if (!h->headers_sent)
        send_headers(h);
    int rc = h->closed || gale_http_request_connection_closed(h->req) ? -EPIPE : 0;
    if (h->busy == 0)
        release(h);
    return rc;
}

bool gale_finished(gale_handler *h) { return h->finished; }

int gale_redirect(gale_handler *h, const char *url, int status)
{
    if (status == 0)
        status = 302;
    if (status < 300 || status > 399 || !url || !valid_value(url))
        return -EINVAL;
    if (h->headers_sent || h->finished)
        return -EALREADY;
    gale_set_status(h, status);
    int rc = gale_set_header(h, "Location", url);
    if (rc)
        return rc;
    return gale_finish(h);
}

/* The handler whose class's write_error runs on this thread: a send_error inside it gets the page
 * (kept out of the handler, whose zeroing is on every request's path). */
static _Thread_local gale_handler *writing_error;

/* The body of an error response: the class's write_error, or Tornado's short HTML page. */
static void write_error_body(gale_handler *h, int code)
{
    if (h->cls->write_error && writing_error != h) {
        gale_handler *outer = writing_error;
        writing_error = h;
        h->cls->write_error(h, code);
        writing_error = outer;
        return;
    }
    const char *reason = gale_http_reason(code);
    gale_writef(h, "<html><title>%d: %s</title><body>%d: %s</body></html>", code, reason, code,
                reason);
}

int gale_send_error(gale_handler *h, int code)
{
    if (h->finished)
        return -EALREADY;
    if (h->headers_sent) {
        gale_log_error(GALE_LOG_GENERAL, "%s %s: cannot send error %d after headers were sent",
                       h->req->method, h->req->uri, code);
        return gale_finish(h);
    }
    if (code < 100 || code > 599)
        code = 500;
    /* Tornado's clear(): back to the default headers and an empty body. Cookies set so far are
     * kept, as Tornado keeps them apart from the headers (a login error page may still set or
     * clear the session cookie). */
    size_t kept = 0;
    for (size_t i = 0; i < h->nheaders; i++)
        if (strcasecmp(h->headers[i].name, "Set-Cookie") == 0)
            h->headers[kept++] = h->headers[i];
    h->nheaders = kept;
    h->default_ctype = true;
    gale_http_response_clear_body(h->req);
    h->status = code;
    if (h->cls->set_default_headers)
        h->cls->set_default_headers(h);
    /* write_error may finish the response itself: `h` must outlive it either way. */
    h->busy++;
    write_error_body(h, code);
    int rc = h->finished ? 0 : gale_finish(h);
    leave(h);
    return rc;
}

int gale_fail(gale_handler *h, int err)
{
    gale_log_error(GALE_LOG_APP, "%s %s (%s): %s", h->req->method, h->req->uri,
                   h->req->remote_ip ? h->req->remote_ip : "-", gale_strerror(err));
    return gale_send_error(h, 500);
}

/* ---- cookies ---- */

/* RFC 6265 cookie-octet. */
static bool cookie_octet(unsigned char c)
{
    return c == 0x21 || (c >= 0x23 && c <= 0x2b) || (c >= 0x2d && c <= 0x3a) ||
           (c >= 0x3c && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

static bool valid_attr(const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f || c == ';')
            return false;
    }
    return true;
}

int gale_set_cookie(gale_handler *h, const char *name, const char *value,
                    const gale_cookie_opts *opts)
{
    static const gale_cookie_opts none;
    if (!opts)
        opts = &none;
    if (!valid_token(name) || !value)
        return -EINVAL;
    for (const char *p = value; *p; p++) {
        if (!cookie_octet((unsigned char)*p))
            return -EINVAL;
    }
    const char *path = opts->path ? opts->path : "/";
    if (!valid_attr(path) || !valid_attr(opts->domain))
        return -EINVAL;
    if (opts->samesite && strcasecmp(opts->samesite, "Strict") != 0 &&
        strcasecmp(opts->samesite, "Lax") != 0 && strcasecmp(opts->samesite, "None") != 0)
        return -EINVAL;
    if (h->headers_sent || h->finished)
        return -EALREADY;

    size_t cap = strlen(name) + strlen(value) + strlen(path) +
                 (opts->domain ? strlen(opts->domain) : 0) + 160;
    char *buf = gale_http_request_alloc(h->req, cap);
    if (!buf)
        return -ENOMEM;
    int n = snprintf(buf, cap, "%s=%s", name, value);
    if (opts->domain && *opts->domain)
        n += snprintf(buf + n, cap - (size_t)n, "; Domain=%s", opts->domain);
    if (opts->expires) {
        char date[40];
        gale_http_format_date((long long)opts->expires, date);
        n += snprintf(buf + n, cap - (size_t)n, "; expires=%s", date);
    }
    if (opts->has_max_age)
        n += snprintf(buf + n, cap - (size_t)n, "; Max-Age=%lld", (long long)opts->max_age);
    if (*path)
        n += snprintf(buf + n, cap - (size_t)n, "; Path=%s", path);
    if (opts->secure)
        n += snprintf(buf + n, cap - (size_t)n, "; Secure");
    if (opts->httponly)
        n += snprintf(buf + n, cap - (size_t)n, "; HttpOnly");
    if (opts->samesite)
        snprintf(buf + n, cap - (size_t)n, "; SameSite=%s", opts->samesite);
    int rc = append_header(h, "Set-Cookie", buf);
    if (rc)
        return rc;
    /* A cookie set again replaces the earlier one (Tornado keeps one per name). */
    size_t nlen = strlen(name), o = 0;
    for (size_t i = 0; i + 1 < h->nheaders; i++) {
        const struct out_header *x = &h->headers[i];
        if (!(strcasecmp(x->name, "Set-Cookie") == 0 && x->value_len > nlen &&
              memcmp(x->value, name, nlen) == 0 && x->value[nlen] == '='))
            h->headers[o++] = *x;
    }
    h->headers[o++] = h->headers[h->nheaders - 1];
    h->nheaders = o;
    return 0;
}

int gale_clear_cookie(gale_handler *h, const char *name, const gale_cookie_opts *opts)
{
    gale_cookie_opts o = opts ? *opts : (gale_cookie_opts){0};
    o.has_max_age = true;
    o.max_age = 0;
    o.expires = 1; /* Thu, 01 Jan 1970 00:00:01 GMT */
    return gale_set_cookie(h, name, "", &o);
}

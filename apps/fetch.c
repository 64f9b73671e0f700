/* Tornado's asynchronous download example grown into a tool: fetches every URL concurrently on one
 * loop, each in its own coroutine that awaits the response (Tornado's
 * `response = await http_client.fetch(url)`), then prints the bodies (with -i, the status line and
 * headers first) to stdout in the order the URLs were given, and one summary line per URL to
 * stderr as each completes. Connections are kept alive and reused between the URLs of one host
 * (--no-keepalive: one connection per request); https URLs verify the server against the system's
 * CAs (--cacert FILE: those in FILE; --insecure: no check); -v says on each summary line whether the request
 * went on a reused connection, and sums up the connections at the end. Exits 0 when every fetch
 * succeeded (a 2xx after redirects), 1 when any failed, 2 on bad usage. `fetch --help` lists the
 * options. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/coro.h"
#include "core/errors.h"
#include "core/loop.h"
#include "core/options.h"
#include "http/httpclient.h"

/* -H 'Name: value': adds one request header. */
static int add_header(const char *h, void *arg)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h)
        return -EINVAL;
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    return gale_http_headers_add(arg, h, (size_t)(colon - h), v, strlen(v));
}

struct job {
    const char *url;
    gale_http_client *client;
    gale_loop *loop;
    const gale_http_client_request *tmpl; /* method, headers, body, timeouts shared by every URL */
    gale_http_client_response *resp;      /* kept for printing in argument order */
    bool failed;
    bool verbose;
};

/* The per-URL work, straight-line: fetch, await the response, report it on stderr. */
static int fetch_one(void *arg)
{
    struct job *j = arg;
    gale_http_client_request req = *j->tmpl;
    req.url = j->url;
    req.raise_error = false; /* a non-2xx response still comes back, with its body */
    gale_loop *loop = j->loop;
    double t0 = gale_loop_time(loop);
    gale_future *f = gale_http_fetch_future(j->client, &req);
    if (!f) {
        fprintf(stderr, "fetch: out of memory\n");
        j->failed = true;
        return -ENOMEM;
    }
    int rc = gale_await(f);
    if (rc == 0) {
        gale_http_client_response *resp = j->resp = gale_future_steal_result(f);
        int err = resp->error;
        if (!err && (resp->code < 200 || resp->code > 299))
            err = GALE_EBADSTATUS;
        j->failed = err != 0;
        const char *conn = !j->verbose               ? ""
                           : resp->reused_connection ? " (reused connection)"
                                                     : " (new connection)";
        if (!err)
            fprintf(stderr, "%d %s %zu bytes %.3fs %s%s\n", resp->code, resp->reason,
                    resp->body_len, resp->request_time, resp->effective_url, conn);
        else if (resp->error)
            fprintf(stderr, "%d failed: %s (%s) %zu bytes %.3fs %s\n", resp->code,
                    resp->error_message, gale_err_name(err), resp->body_len, resp->request_time,
                    j->url);
        else
            fprintf(stderr, "%d failed: HTTP %d: %s (%s) %zu bytes %.3fs %s\n", resp->code,
                    resp->code, resp->reason, gale_err_name(err), resp->body_len,
                    resp->request_time, j->url);
    } else {
        /* No response at all (refused, timeout, bad URL...): the future carries the error. */
        j->failed = true;
        fprintf(stderr, "%d error: %s (%s) 0 bytes %.3fs %s\n", GALE_HTTP_NO_RESPONSE,
                gale_future_error_message(f), gale_err_name(rc), gale_loop_time(loop) - t0, j->url);
    }
    gale_future_unref(f);
    return 0;
}

static void stop_loop(gale_loop *loop, void *arg) { gale_loop_stop(loop); }

static void print_response(const gale_http_client_response *r, bool headers)
{
    if (r->code == GALE_HTTP_NO_RESPONSE && r->error)
        return;
    if (headers) {
        printf("HTTP/1.1 %d %s\r\n", r->code, r->reason);
        for (size_t i = 0; i < r->headers.n; i++) {
            const gale_http_header *h = &r->headers.items[i];
            printf("%.*s: %.*s\r\n", (int)h->name.len, h->name.p, (int)h->value.len, h->value.p);
        }
        printf("\r\n");
    }
    fwrite(r->body, 1, r->body_len, stdout);
}

int main(int argc, char **argv)
{
    const char *method = NULL, *body = NULL;
    double timeout = GALE_HTTP_CLIENT_DEFAULT_TIMEOUT;
    bool show_headers = false, no_redirects = false, no_keepalive = false, verbose = false;
    bool insecure = false;
    const char *cacert = NULL, *cert = NULL, *key = NULL;
    int max_clients = 10;
    gale_http_headers headers = {0};
    gale_option options[] = {
        GALE_OPTION_STRING("request", &method, "METHOD", "request method"),
        GALE_OPTION_FUNC("header", add_header, &headers, "'Name: value'",
                         "extra request header (repeatable)"),
        GALE_OPTION_STRING("data", &body, "BODY", "request body"),
        GALE_OPTION_DOUBLE("timeout", &timeout, 0.001, 86400, "S",
                           "connect and request timeout in seconds"),
        GALE_OPTION_BOOL("include", &show_headers,
                         "print the status line and response headers before the body"),
        GALE_OPTION_INT("max-clients", &max_clients, 1, 100000, "N", "requests in flight at once"),
        GALE_OPTION_BOOL("no-redirects", &no_redirects, "do not follow redirects"),
        GALE_OPTION_BOOL("no-keepalive", &no_keepalive,
                         "one connection per request (default: reuse a host's connections)"),
        GALE_OPTION_BOOL("verbose", &verbose,
                         "say which requests reused a connection, and count the connections"),
        GALE_OPTION_STRING("cacert", &cacert, "FILE",
                           "https: verify servers against the PEM CAs in FILE (default: the\n"
                           "system's store)"),
        GALE_OPTION_BOOL("insecure", &insecure,
                         "https: do not verify the server's certificate or name"),
        GALE_OPTION_STRING("cert", &cert, "FILE", "https: present this PEM client certificate"),
        GALE_OPTION_STRING("key", &key, "FILE", "https: the key of --cert (default: inside it)"),
        {0},
    };
    options[0].short_name = 'X';
    options[0].default_text = "GET, or POST with -d";
    options[1].short_name = 'H';
    options[2].short_name = 'd';
    options[4].short_name = 'i';
    options[8].short_name = 'v';
    const gale_options spec = {
        .prog = "fetch",
        .args = "URL...",
        .description =
            "Fetches every URL concurrently, each in its own coroutine, prints the bodies to\n"
            "stdout in the order given and one summary line per URL to stderr as each\n"
            "completes. Exits 0 when every fetch got a 2xx (after redirects), 1 when any\n"
            "failed, 2 on bad usage.",
        .positional = true,
        .options = options,
    };
    char err[512];
    int rc = gale_options_parse(&spec, &argc, argv, err, sizeof err);
    if (rc == 0 && argc < 2)
        snprintf(err, sizeof err, "no URL given");
    if (rc == -ENOMEM) {
        gale_http_headers_free(&headers);
        return 1;
    }
    if (rc != 0 || argc < 2) {
        gale_http_headers_free(&headers);
        if (rc == GALE_OPTIONS_HELP || rc == GALE_OPTIONS_VERSION) {
            if (rc == GALE_OPTIONS_HELP)
                gale_options_usage(&spec, stdout);
            else
                gale_options_version(&spec, stdout);
            return fflush(stdout) == 0 ? 0 : 1;
        }
        fprintf(stderr, "fetch: %s\ntry 'fetch --help' for the options\n", err);
        return 2;
    }
    bool redirects = !no_redirects;
    const char **urls = (const char **)argv + 1;
    int n = argc - 1;

    gale_loop *loop;
    gale_http_client *client;
    if (gale_loop_new(GALE_BACKEND_DEFAULT, &loop) != 0) {
        rc = 1;
        goto out;
    }
    gale_http_client_opts opts = {.max_clients = max_clients,
                                  .max_idle_per_host = no_keepalive ? -1 : 0};
    if (gale_http_client_new(loop, &opts, &client) != 0) {
        gale_loop_free(loop);
        rc = 1;
        goto out;
    }
    struct job *jobs = calloc((size_t)n, sizeof *jobs);
    gale_future **done = calloc((size_t)n, sizeof *done);
    gale_http_client_request tmpl;
    gale_http_client_request_init(&tmpl, "");
    tmpl.method = method ? method : body ? "POST" : "GET";
    tmpl.body = body;
    tmpl.body_len = body ? strlen(body) : 0;
    tmpl.headers = headers;
    tmpl.connect_timeout = tmpl.request_timeout = timeout;
    tmpl.follow_redirects = redirects;
    tmpl.ca_certs = cacert;
    tmpl.validate_cert = !insecure;
    tmpl.client_cert = cert;
    tmpl.client_key = key;
    int spawned = 0;
    rc = jobs && done ? 0 : 1;
    for (int i = 0; !rc && i < n; i++) {
        jobs[i] = (struct job){
            .url = urls[i], .client = client, .loop = loop, .tmpl = &tmpl, .verbose = verbose};
        /* Runs until its first await, then the next URL starts. */
        if (!(done[i] = gale_coro_spawn(loop, fetch_one, &jobs[i], NULL))) {
            fprintf(stderr, "fetch: out of memory\n");
            rc = 1;
            break;
        }
        spawned++;
    }
    gale_future *all = spawned ? gale_future_all(loop, done, (size_t)spawned) : NULL;
    if (all)
        gale_loop_run_until(loop, all, 0);
    else if (spawned)
        rc = 1;
    gale_future_unref(all);
    if (verbose) {
        gale_http_client_stats st;
        gale_http_client_get_stats(client, &st);
        fprintf(stderr, "connections: %llu opened, %llu requests on a reused one\n",
                (unsigned long long)st.opened, (unsigned long long)st.reused);
    }
    for (int i = 0; i < spawned; i++)
        gale_future_unref(done[i]);
    free(done);
    gale_http_client_free(client);
    /* The pooled connections the free closed finish closing on the loop's next turn. */
    gale_loop_add_callback(loop, stop_loop, NULL);
    gale_loop_run(loop);
    gale_coro_shutdown(loop); /* none left unless the loop failed; then they unwind here */
    gale_loop_free(loop);
    for (int i = 0; jobs && i < n; i++) {
        if (jobs[i].failed)
            rc = 1;
        if (!jobs[i].resp)
            continue;
        print_response(jobs[i].resp, show_headers);
        gale_http_client_response_free(jobs[i].resp);
    }
    fflush(stdout);
    free(jobs);
out:
    gale_http_headers_free(&headers);
    return rc;
}

/* Tornado's asynchronous download example grown into a tool: fetches every URL concurrently on one
 * loop, then prints the bodies (with -i, the status line and headers first) to stdout in the
 * order the URLs were given, and one summary line per URL to stderr as each completes. Exits 0
 * when every fetch succeeded (a 2xx after redirects), 1 when any failed, 2 on bad usage. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/loop.h"
#include "http/httpclient.h"

static const char USAGE[] =
    "usage: fetch [-X METHOD] [-H 'Name: value']... [-d BODY] [--timeout S] [-i]\n"
    "             [--max-clients N] [--no-redirects] URL...\n"
    "\n"
    "  -X METHOD          request method (default GET, or POST with -d)\n"
    "  -H 'Name: value'   extra request header (repeatable)\n"
    "  -d BODY            request body\n"
    "  --timeout S        connect and request timeout in seconds (default 20)\n"
    "  -i                 print the status line and response headers before the body\n"
    "  --max-clients N    requests in flight at once (default 10)\n"
    "  --no-redirects     do not follow redirects\n";

struct job {
    const char *url;
    gale_http_response *resp;
    gale_loop *loop;
    int *left;
};

static void on_done(gale_http_response *resp, void *arg)
{
    struct job *j = arg;
    j->resp = gale_http_response_keep(resp);
    if (resp->error)
        fprintf(stderr, "%d %s: %s (%s) %zu bytes %.3fs %s\n", resp->code,
                resp->code == GALE_HTTP_NO_RESPONSE ? "error" : "failed", resp->error_message,
                gale_err_name(resp->error), resp->body_len, resp->request_time, j->url);
    else
        fprintf(stderr, "%d %s %zu bytes %.3fs %s\n", resp->code, resp->reason, resp->body_len,
                resp->request_time, resp->effective_url);
    if (--*j->left == 0)
        gale_loop_stop(j->loop);
}

static void print_response(const gale_http_response *r, bool headers)
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
    bool show_headers = false, redirects = true;
    int max_clients = 0;
    gale_http_headers headers = {0};
    const char **urls = calloc((size_t)argc, sizeof *urls);
    int n = 0, rc = 2;
    if (!urls)
        return 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            rc = 0;
            goto out;
        } else if (!strcmp(a, "-X") && has_value) {
            method = argv[++i];
        } else if (!strcmp(a, "-d") && has_value) {
            body = argv[++i];
        } else if (!strcmp(a, "-H") && has_value) {
            const char *h = argv[++i];
            const char *colon = strchr(h, ':');
            if (!colon || colon == h) {
                fprintf(stderr, "fetch: bad header '%s' (want 'Name: value')\n", h);
                goto out;
            }
            const char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            if (gale_http_headers_add(&headers, h, (size_t)(colon - h), v, strlen(v))) {
                rc = 1;
                goto out;
            }
        } else if (!strcmp(a, "--timeout") && has_value) {
            char *end;
            timeout = strtod(argv[++i], &end);
            if (*end || !(timeout > 0) || isinf(timeout)) {
                fprintf(stderr, "fetch: bad timeout '%s'\n", argv[i]);
                goto out;
            }
        } else if (!strcmp(a, "--max-clients") && has_value) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 100000) {
                fprintf(stderr, "fetch: bad --max-clients '%s'\n", argv[i]);
                goto out;
            }
            max_clients = (int)v;
        } else if (!strcmp(a, "-i")) {
            show_headers = true;
        } else if (!strcmp(a, "--no-redirects")) {
            redirects = false;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "fetch: unknown or incomplete option '%s'\n\n%s", a, USAGE);
            goto out;
        } else {
            urls[n++] = a;
        }
    }
    if (n == 0) {
        fputs(USAGE, stderr);
        goto out;
    }

    gale_loop *loop;
    gale_http_client *client;
    if (gale_loop_new(GALE_BACKEND_DEFAULT, &loop) != 0) {
        rc = 1;
        goto out;
    }
    gale_http_client_opts opts = {.max_clients = max_clients};
    if (gale_http_client_new(loop, &opts, &client) != 0) {
        gale_loop_free(loop);
        rc = 1;
        goto out;
    }
    struct job *jobs = calloc((size_t)n, sizeof *jobs);
    int left = n;
    rc = jobs ? 0 : 1;
    for (int i = 0; jobs && i < n; i++) {
        gale_http_request req;
        gale_http_request_init(&req, urls[i]);
        req.method = method ? method : body ? "POST" : "GET";
        req.body = body;
        req.body_len = body ? strlen(body) : 0;
        req.headers = headers;
        req.connect_timeout = req.request_timeout = timeout;
        req.follow_redirects = redirects;
        jobs[i] = (struct job){.url = urls[i], .loop = loop, .left = &left};
        if (gale_http_fetch(client, &req, on_done, &jobs[i]) != 0) {
            fprintf(stderr, "fetch: out of memory\n");
            left -= n - i;
            rc = 1;
            break;
        }
    }
    if (jobs && left > 0)
        gale_loop_run(loop);
    gale_http_client_free(client);
    gale_loop_free(loop);
    for (int i = 0; jobs && i < n; i++) {
        if (!jobs[i].resp)
            continue;
        if (jobs[i].resp->error)
            rc = 1;
        print_response(jobs[i].resp, show_headers);
        gale_http_response_free(jobs[i].resp);
    }
    fflush(stdout);
    free(jobs);
out:
    gale_http_headers_free(&headers);
    free(urls);
    return rc;
}

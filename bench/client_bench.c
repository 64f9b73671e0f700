/* HTTP client throughput: N small GETs through gale's HTTP client with M in flight, as ab -c M
 * and wrk -c M keep them: M fetches start, and each completion starts the next until N were
 * started; timed from the first fetch to the last completion.
 *
 *     client_bench URL [N=10000] [MAX_CLIENTS=50] [close]
 *
 * Connections are kept alive and reused (the client's default); `close` gives every request its
 * own connection (max_idle_per_host = -1), as the client did before it pooled connections.
 * Prints one line: "gale-client N requests, M in flight: X req/s (T s, F failed)". Exits 1 if
 * any request failed. See bench/client_bench.sh for the comparison with Tornado and ab. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/loop.h"
#include "http/httpclient.h"

struct state {
    gale_loop *loop;
    gale_http_client *client;
    const char *url;
    long to_start;
    long left;
    long failed;
    int first_error;
};

static void on_done(gale_http_client_response *resp, void *arg);

static int start_one(struct state *st)
{
    gale_http_client_request req;
    gale_http_client_request_init(&req, st->url);
    st->to_start--;
    return gale_http_fetch(st->client, &req, on_done, st);
}

static void on_done(gale_http_client_response *resp, void *arg)
{
    struct state *st = arg;
    if (resp->error) {
        if (!st->failed)
            st->first_error = resp->error;
        st->failed++;
    }
    if (st->to_start > 0 && start_one(st) != 0) {
        fprintf(stderr, "client_bench: fetch failed\n");
        st->left -= st->to_start + 1;
        st->to_start = 0;
    }
    if (--st->left <= 0)
        gale_loop_stop(st->loop);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: client_bench URL [N=10000] [MAX_CLIENTS=50] [close]\n");
        return 2;
    }
    const char *url = argv[1];
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 10000;
    int max_clients = argc > 3 ? atoi(argv[3]) : 50;
    if (n < 1 || max_clients < 1) {
        fprintf(stderr, "client_bench: bad N or MAX_CLIENTS\n");
        return 2;
    }
    gale_loop *loop;
    gale_http_client *c;
    if (gale_loop_new(GALE_BACKEND_DEFAULT, &loop) != 0)
        return 1;
    bool close_each = argc > 4 && !strcmp(argv[4], "close");
    gale_http_client_opts opts = {.max_clients = max_clients,
                                  .max_idle_per_host = close_each ? -1 : 0};
    if (gale_http_client_new(loop, &opts, &c) != 0)
        return 1;
    struct state st = {.loop = loop, .client = c, .url = url, .to_start = n, .left = n};
    double t0 = gale_loop_time(loop);
    for (long i = 0; i < n && i < max_clients; i++) {
        if (start_one(&st) != 0) {
            fprintf(stderr, "client_bench: fetch failed\n");
            return 1;
        }
    }
    gale_loop_run(loop);
    double dt = gale_loop_time(loop) - t0;
    gale_http_client_stats cs;
    gale_http_client_get_stats(c, &cs);
    printf("gale-client %ld requests, %d in flight: %.0f req/s (%.3f s, %ld failed, %llu "
           "connections)\n",
           n, max_clients, (double)n / dt, dt, st.failed, (unsigned long long)cs.opened);
    if (st.failed)
        fprintf(stderr, "client_bench: first error %s\n", gale_strerror(st.first_error));
    gale_http_client_free(c);
    gale_loop_free(loop);
    return st.failed ? 1 : 0;
}

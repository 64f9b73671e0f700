/* A scripted keep-alive HTTP/1.1 server for the client suites: a thread per connection on
 * blocking sockets, any number of requests per connection, bodies by Content-Length or chunked,
 * Expect: 100-continue, and counters kept server-side (connections, requests, per-method and
 * per-request-id counts) so a test can prove that nothing was sent twice or lost. What each
 * request gets is the test's handler's choice: bytes, a delay, a close after answering, or a
 * close without answering. */
#ifndef GALE_TESTS_KASERVER_H
#define GALE_TESTS_KASERVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/loop.h"
#include "http/httpclient.h"

#define KA_MAX_CONNS 512
#define KA_MAX_IDS 1024

struct ka_server;

/* One request as the server read it. */
struct ka_request {
    char method[16];
    char path[512];
    char head[4096]; /* the head, truncated */
    char *body;      /* decoded (chunked undone), malloc'ed by the server */
    size_t body_len;
    bool chunked;
    int id;      /* the X-Id header, or -1 */
    int conn;    /* connection number, from 0 */
    int on_conn; /* request number on its connection, from 0 */
};

/* What the server does with a request. */
struct ka_reply {
    char data[65536]; /* the response bytes */
    size_t len;
    double delay;     /* seconds to wait before answering */
    bool close_after; /* close (without saying so) after answering */
    bool drop;        /* close without answering (the request still counts as received) */
    const char *late; /* sent `late_delay` seconds after the answer, unasked */
    double late_delay;
};

typedef void (*ka_handler)(struct ka_server *s, const struct ka_request *rq, struct ka_reply *out);

struct ka_server {
    int lfd, port;
    int stop_pipe[2];
    pthread_t acceptor;
    pthread_t workers[KA_MAX_CONNS];
    int n_workers;
    ka_handler handler;
    void *arg;
    /* 100-continue: answer Expect with 100 (true) or let the handler answer first (false) */
    bool send_continue;
    double read_pause; /* seconds to wait before reading each request body (back-pressure) */
    pthread_mutex_t mu;
    int conns, requests, posts, gets, dropped;
    int id_count[KA_MAX_IDS]; /* answered requests per X-Id */
    int closed_idle;          /* connections closed by close_after */
    bool stopping;
    char last_head[4096];
    char *last_body;
    size_t last_body_len;
};

/* Starts the server on 127.0.0.1 (port 0) with `handler`. */
void ka_start(struct ka_server *s, ka_handler handler, void *arg);
/* Stops it and joins every thread. */
void ka_stop(struct ka_server *s);
/* http://127.0.0.1:port<path>, in one of 8 rotating static buffers. */
const char *ka_url(const struct ka_server *s, const char *path);
/* Reads a counter under the lock. */
int ka_get(struct ka_server *s, const int *field);
/* Fills `out` with a 200 answer carrying `body` (Content-Length framing). */
void ka_reply_text(struct ka_reply *out, const char *body);

/* ---- the client side of the suites that use this server ---- */

/* One completed fetch: how often the callback ran and the response it kept. */
struct ka_result {
    int calls;
    gale_http_client_response *resp;
};

/* A fetch callback for a struct ka_result (keeps the response). */
void ka_on_result(gale_http_client_response *resp, void *arg);
/* test_wait_until predicate: the ka_result's callback ran. */
bool ka_result_done(void *arg);
/* Frees the kept response and zeroes the result. */
void ka_result_clear(struct ka_result *r);
/* A new loop (the test fails if it cannot be made). */
gale_loop *ka_new_loop(void);
/* Frees the client, lets closing streams finish, frees the loop. */
void ka_teardown(gale_loop *loop, gale_http_client *c);

#endif

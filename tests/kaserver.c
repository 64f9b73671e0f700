/* The scripted keep-alive server of tests/kaserver.h. */
#include "kaserver.h"

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/resolver.h"
#include "testutil.h"

struct conn_arg {
    struct ka_server *s;
    int fd;
    int n;
    char buf[65536]; /* bytes read and not yet used */
    size_t have;
};

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Reads more bytes into c->buf. Returns false on EOF, error, timeout or stop. */
static bool fill(struct conn_arg *c)
{
    if (c->have == sizeof c->buf)
        return false;
    struct pollfd pfd[2] = {{.fd = c->fd, .events = POLLIN},
                            {.fd = c->s->stop_pipe[0], .events = POLLIN}};
    if (poll(pfd, 2, 20000) <= 0 || pfd[1].revents)
        return false;
    ssize_t r = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
    if (r <= 0)
        return false;
    c->have += (size_t)r;
    return true;
}

static void consume(struct conn_arg *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->have - n);
    c->have -= n;
}

/* Reads up to and including CRLF (or CRLFCRLF for a head). Returns the length or 0. */
static size_t read_until(struct conn_arg *c, const char *delim)
{
    for (;;) {
        char *end = memmem(c->buf, c->have, delim, strlen(delim));
        if (end)
            return (size_t)(end - c->buf) + strlen(delim);
        if (!fill(c))
            return 0;
    }
}

static bool read_exact(struct conn_arg *c, size_t n, char **body, size_t *len)
{
    while (n > 0) {
        if (c->have == 0 && !fill(c))
            return false;
        size_t k = c->have < n ? c->have : n;
        char *b = realloc(*body, *len + k + 1);
        if (!b)
            return false;
        *body = b;
        memcpy(b + *len, c->buf, k);
        *len += k;
        b[*len] = '\0';
        consume(c, k);
        n -= k;
    }
    return true;
}

static bool read_chunked(struct conn_arg *c, char **body, size_t *len)
{
    for (;;) {
        size_t l = read_until(c, "\r\n");
        if (!l)
            return false;
        size_t size = strtoul(c->buf, NULL, 16);
        consume(c, l);
        if (size == 0) {
            l = read_until(c, "\r\n"); /* no trailers from gale */
            if (l)
                consume(c, l);
            return l != 0;
        }
        if (!read_exact(c, size, body, len))
            return false;
        l = read_until(c, "\r\n");
        if (l != 2)
            return false;
        consume(c, 2);
    }
}

static const char *header(const char *head, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\r\n%s:", name);
    const char *h = strcasestr(head, pat);
    if (!h)
        return NULL;
    h += strlen(pat);
    while (*h == ' ')
        h++;
    return h;
}

static void record(struct ka_server *s, const struct ka_request *rq, bool answered)
{
    pthread_mutex_lock(&s->mu);
    s->requests++;
    if (!strcmp(rq->method, "POST"))
        s->posts++;
    if (!strcmp(rq->method, "GET"))
        s->gets++;
    if (!answered)
        s->dropped++;
    else if (rq->id >= 0 && rq->id < KA_MAX_IDS)
        s->id_count[rq->id]++;
    snprintf(s->last_head, sizeof s->last_head, "%s", rq->head);
    free(s->last_body);
    s->last_body = rq->body;
    s->last_body_len = rq->body_len;
    pthread_mutex_unlock(&s->mu);
}

/* Serves one request. Returns false when the connection is to close. */
static bool serve_one(struct conn_arg *c, int index, struct ka_reply *rep)
{
    struct ka_server *s = c->s;
    size_t hl = read_until(c, "\r\n\r\n");
    if (!hl)
        return false;
    struct ka_request rq = {.id = -1, .conn = c->n, .on_conn = index};
    snprintf(rq.head, sizeof rq.head, "%.*s", (int)hl, c->buf);
    consume(c, hl);
    sscanf(rq.head, "%15s %511s", rq.method, rq.path);
    const char *v = header(rq.head, "X-Id");
    if (v)
        rq.id = atoi(v);
    memset(rep, 0, sizeof *rep);
    bool expect = header(rq.head, "Expect") != NULL;
    if (expect && !s->send_continue) {
        /* Answer before the body: the client must not send it. */
        s->handler(s, &rq, rep);
        record(s, &rq, !rep->drop);
        test_write_all(c->fd, rep->data, rep->len);
        return false;
    }
    if (expect)
        test_write_all(c->fd, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    sleep_s(s->read_pause);
    const char *te = header(rq.head, "Transfer-Encoding");
    const char *cl = header(rq.head, "Content-Length");
    bool ok = true;
    if (te && !strncasecmp(te, "chunked", 7)) {
        rq.chunked = true;
        ok = read_chunked(c, &rq.body, &rq.body_len);
    } else if (cl) {
        ok = read_exact(c, strtoul(cl, NULL, 10), &rq.body, &rq.body_len);
    }
    if (!ok) {
        free(rq.body);
        return false;
    }
    s->handler(s, &rq, rep);
    record(s, &rq, !rep->drop);
    if (rep->drop)
        return false;
    sleep_s(rep->delay);
    if (test_write_all(c->fd, rep->data, rep->len) != 0)
        return false;
    if (rep->late) {
        sleep_s(rep->late_delay);
        test_write_all(c->fd, rep->late, strlen(rep->late));
    }
    if (rep->close_after) {
        pthread_mutex_lock(&s->mu);
        s->closed_idle++;
        pthread_mutex_unlock(&s->mu);
        return false;
    }
    return true;
}

static void *conn_main(void *arg)
{
    struct conn_arg *c = arg;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    test_set_timeouts(c->fd, 20);
    struct ka_reply *rep = malloc(sizeof *rep);
    for (int i = 0; rep && serve_one(c, i, rep); i++)
        ;
    free(rep);
    close(c->fd);
    free(c);
    return NULL;
}

static void *acceptor_main(void *arg)
{
    struct ka_server *s = arg;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = s->lfd, .events = POLLIN},
                                {.fd = s->stop_pipe[0], .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0 || pfd[1].revents)
            break;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        struct conn_arg *c = calloc(1, sizeof *c);
        pthread_mutex_lock(&s->mu);
        c->s = s;
        c->fd = fd;
        c->n = s->conns++;
        pthread_mutex_unlock(&s->mu);
        if (s->n_workers >= KA_MAX_CONNS ||
            pthread_create(&s->workers[s->n_workers], NULL, conn_main, c) != 0) {
            close(fd);
            free(c);
            continue;
        }
        s->n_workers++;
    }
    return NULL;
}

void ka_start(struct ka_server *s, ka_handler handler, void *arg)
{
    memset(s, 0, sizeof *s);
    s->lfd = test_listen_tcp(&s->port);
    if (pipe(s->stop_pipe) != 0)
        abort();
    s->handler = handler;
    s->arg = arg;
    s->send_continue = true;
    pthread_mutex_init(&s->mu, NULL);
    if (pthread_create(&s->acceptor, NULL, acceptor_main, s) != 0)
        abort();
}

void ka_stop(struct ka_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    if (write(s->stop_pipe[1], "x", 1) != 1)
        abort();
    pthread_join(s->acceptor, NULL);
    for (int i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    close(s->lfd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    free(s->last_body);
    pthread_mutex_destroy(&s->mu);
}

const char *ka_url(const struct ka_server *s, const char *path)
{
    static char buf[8][600];
    static int i;
    char *u = buf[i++ % 8];
    snprintf(u, sizeof buf[0], "http://127.0.0.1:%d%s", s->port, path);
    return u;
}

int ka_get(struct ka_server *s, const int *field)
{
    pthread_mutex_lock(&s->mu);
    int v = *field;
    pthread_mutex_unlock(&s->mu);
    return v;
}

void ka_reply_text(struct ka_reply *out, const char *body)
{
    out->len =
        (size_t)snprintf(out->data, sizeof out->data,
                         "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
}

void ka_on_result(gale_http_client_response *resp, void *arg)
{
    struct ka_result *r = arg;
    r->calls++;
    r->resp = gale_http_client_response_keep(resp);
}

bool ka_result_done(void *arg) { return ((struct ka_result *)arg)->calls > 0; }

void ka_result_clear(struct ka_result *r)
{
    gale_http_client_response_free(r->resp);
    memset(r, 0, sizeof *r);
}

gale_loop *ka_new_loop(void)
{
    gale_loop *loop;
    ck_assert_int_eq(gale_loop_new(GALE_BACKEND_DEFAULT, &loop), 0);
    return loop;
}

void ka_teardown(gale_loop *loop, gale_http_client *c)
{
    gale_http_client_free(c);
    test_run_for(loop, 0.02);
    gale_resolver_cancel_loop(loop);
    gale_loop_free(loop);
}

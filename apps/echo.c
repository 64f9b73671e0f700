/* Tornado's classic echo server on gale streams: every byte a client sends comes back to it.
 *
 *     echo [--port 10000] [--address A] [--processes N]     (echo --help: the options)
 *
 * Back-pressure: a connection stops reading while more than HIGH_WATER bytes wait to be sent to
 * its client, and resumes once no more than half of that is left (the gap keeps a fast client
 * from flapping between the two states on every write), so a client that sends but never reads
 * holds the server to a bounded buffer (TCP pushes back on it). SIGINT and SIGTERM
 * stop accepting, close the connections and exit 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/log.h"
#include "core/loop.h"
#include "core/options.h"
#include "net/iostream.h"
#include "net/tcpserver.h"

#define HIGH_WATER (1u << 20)
#define READ_SIZE 65536

struct conn {
    struct conn *prev, *next;
    gale_stream *s;
    bool paused; /* not reading: over HIGH_WATER queued */
};

static struct conn *conns;
static size_t nconns;
static bool shutting_down;
static gale_server *server;

static void on_read(gale_stream *s, int status, const char *data, size_t len, void *arg);

static void read_more(struct conn *c)
{
    int err = gale_stream_read_bytes(c->s, READ_SIZE, true, on_read, c);
    if (err && err != -EPIPE)
        gale_stream_close(c->s, err);
}

/* Fires as writes queued above the low-water mark leave: resumes a paused connection once its
 * queue is back under it. (The last write of a paused connection always has this callback, and
 * its queue is empty when it fires.) A failed write ends the connection: `arg` may be gone. */
static void on_written(gale_stream *s, int status, void *arg)
{
    struct conn *c = arg;
    if (status == 0 && c->paused && gale_stream_write_pending(s) <= HIGH_WATER / 2) {
        c->paused = false;
        read_more(c);
    }
}

static void close_when_sent(gale_stream *s, int status, void *arg) { gale_stream_close(s, 0); }

static void on_read(gale_stream *s, int status, const char *data, size_t len, void *arg)
{
    struct conn *c = arg;
    if (status == GALE_EEOF) {
        /* The client finished sending (maybe a half-close): flush what is queued, then close. */
        if (gale_stream_write(s, data, len, close_when_sent, NULL) != 0)
            gale_stream_close(s, 0);
        return;
    }
    if (status != 0) {
        gale_stream_close(s, status);
        return;
    }
    /* Most echoes leave at once; only those queued behind a deep queue need a callback. */
    size_t queued = gale_stream_write_pending(s) + len;
    int err = gale_stream_write(s, data, len, queued > HIGH_WATER / 2 ? on_written : NULL, c);
    if (err) {
        gale_stream_close(s, err); /* no-op if the failed send already closed it */
        return;
    }
    if (gale_stream_write_pending(s) > HIGH_WATER)
        c->paused = true;
    else
        read_more(c);
}

static void on_close(gale_stream *s, int status, void *arg)
{
    struct conn *c = arg;
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    nconns--;
    if (shutting_down && nconns == 0)
        gale_loop_stop(gale_stream_loop(s));
}

static void on_accept(gale_server *srv, gale_stream *s, const struct sockaddr *peer,
                      socklen_t peerlen, void *arg)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        gale_stream_close(s, -ENOMEM);
        return;
    }
    c->s = s;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    nconns++;
    gale_stream_set_close_cb(s, on_close, c);
    gale_stream_set_nodelay(s, true);
    read_more(c);
}

static void on_signal(gale_loop *loop, int signum, void *arg)
{
    if (shutting_down)
        return;
    shutting_down = true;
    gale_log_info(GALE_LOG_GENERAL, "signal %d: closing %zu connections", signum, nconns);
    gale_server_stop(server);
    if (nconns == 0) {
        gale_loop_stop(loop);
        return;
    }
    for (struct conn *c = conns; c; c = c->next)
        gale_stream_close(c->s, 0);
}

int main(int argc, char **argv)
{
    int port = 10000, procs = 1;
    const char *address = NULL;
    const gale_option options[] = {
        GALE_OPTION_INT("port", &port, 0, 65535, "N", "listen on TCP port N (0: a free port)"),
        GALE_OPTION_STRING("address", &address, "A",
                           "listen on address A only (default: every interface)"),
        GALE_OPTION_INT("processes", &procs, 0, 1024, "N",
                        "fork N workers sharing the port (0: one per CPU)"),
        {0},
    };
    const gale_options spec = {
        .prog = "echo",
        .description = "Tornado's echo server: every byte a client sends comes back to it. A\n"
                       "client that sends without reading is held to a bounded buffer. SIGINT\n"
                       "and SIGTERM stop accepting, close the connections and exit 0.",
        .options = options,
    };
    gale_options_parse_or_exit(&spec, &argc, argv);

    /* Bind first, fork next, and only then create the loop: each worker needs its own. */
    int err = gale_server_new(NULL, on_accept, NULL, &server);
    if (!err)
        err = gale_server_bind(server, port, address, AF_UNSPEC, GALE_DEFAULT_BACKLOG, false);
    if (err) {
        fprintf(stderr, "echo: cannot listen on port %d: %s\n", port, gale_strerror(err));
        gale_server_free(server);
        return 1;
    }
    err = gale_server_start(server, procs);
    if (err) {
        fprintf(stderr, "echo: cannot start %d processes: %s\n", procs, gale_strerror(err));
        gale_server_free(server);
        return 1;
    }
    gale_loop *loop = gale_loop_current();
    if (!loop)
        return 1;
    gale_loop_add_signal(loop, SIGINT, on_signal, NULL);
    gale_loop_add_signal(loop, SIGTERM, on_signal, NULL);
    gale_log_info(GALE_LOG_GENERAL, "echo listening on port %d", gale_server_port(server));
    gale_loop_run(loop);
    gale_server_free(server);
    gale_loop_free(loop);
    gale_log_flush();
    return 0;
}

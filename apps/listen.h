/* The listening step hello and demo share: HTTPS when given a certificate, then a unix socket or
 * a TCP port with `processes` workers, each listening on a socket of its own (SO_REUSEPORT: the
 * kernel spreads connections over the workers) under a supervising parent that forwards
 * SIGTERM/SIGINT, reaps the workers, logs a worker's death and restarts it (up to 100 restarts).
 * Says why on stderr when it cannot (the log may be off). */
#ifndef GALE_APPS_LISTEN_H
#define GALE_APPS_LISTEN_H

#include <errno.h>
#include <stdio.h>

#include "core/errors.h"
#include "http/web.h"

struct app_listen {
    const char *prog;
    int port;
    int processes;
    const char *unix_socket; /* instead of the port */
    const char *certfile;    /* HTTPS with this certificate chain and keyfile */
    const char *keyfile;
};

static int app_use_tls(gale_app *app, const struct app_listen *l)
{
    if (!l->certfile && !l->keyfile)
        return 0;
    if (!l->certfile) {
        fprintf(stderr, "%s: --keyfile needs --certfile\n", l->prog);
        return -EINVAL;
    }
    gale_tls_opts o;
    gale_tls_opts_init(&o);
    o.certfile = l->certfile;
    o.keyfile = l->keyfile;
    int rc = gale_app_use_tls(app, &o);
    if (rc == -ENOTSUP)
        fprintf(stderr, "%s: built without TLS: --certfile is not available\n", l->prog);
    else if (rc)
        fprintf(stderr, "%s: cannot use %s for TLS: %s (see the log line above)\n", l->prog,
                l->certfile, gale_strerror(rc));
    return rc;
}

static int app_start_listening(gale_app *app, const struct app_listen *l)
{
    int rc = app_use_tls(app, l);
    if (rc)
        return rc;
    if (!l->unix_socket) {
        gale_app_opts(app)->reuse_port = l->processes != 1;
        rc = gale_app_bind(app, l->port, NULL);
        if (rc) {
            fprintf(stderr, "%s: cannot listen on port %d: %s\n", l->prog, l->port,
                    gale_strerror(rc));
            return rc;
        }
        rc = gale_app_start(app, l->processes);
        if (rc)
            fprintf(stderr, "%s: cannot start %d processes: %s\n", l->prog, l->processes,
                    gale_strerror(rc));
        return rc;
    }
    rc = gale_app_listen_unix(app, l->unix_socket, 0660);
    if (rc)
        fprintf(stderr, "%s: cannot listen on unix socket %s: %s\n", l->prog, l->unix_socket,
                gale_strerror(rc));
    return rc;
}

#endif

/* Tornado's hello world on gale: GET / -> "Hello, world!". `hello --help` lists the options. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/errors.h"
#include "core/options.h"
#include "http/web.h"

#include "listen.h"

static void main_get(gale_handler *h) { gale_write_str(h, "Hello, world!"); }

static const gale_handler_class main_handler = {.get = main_get};

int main(int argc, char **argv)
{
    int port = 8879, processes = 1;
    bool quiet = false, xheaders = false;
    const char *unix_socket = NULL, *certfile = NULL, *keyfile = NULL;
    const gale_option options[] = {
        GALE_OPTION_INT("port", &port, 0, 65535, "N", "listen on TCP port N (0: a free port)"),
        GALE_OPTION_INT("processes", &processes, 0, 1024, "N",
                        "fork N workers sharing the port, each with a listening socket of its\n"
                        "own (SO_REUSEPORT), under a parent that restarts a worker that dies\n"
                        "(0: one per CPU)"),
        GALE_OPTION_STRING(
            "certfile", &certfile, "FILE",
            "serve HTTPS with the PEM certificate chain in FILE (SIGHUP reloads it)"),
        GALE_OPTION_STRING("keyfile", &keyfile, "FILE",
                           "the PEM private key for --certfile (default: inside --certfile)"),
        GALE_OPTION_STRING("unix-socket", &unix_socket, "PATH",
                           "listen on a unix socket at PATH instead of a TCP port, for a proxy\n"
                           "such as nginx in front (one process per socket)"),
        GALE_OPTION_BOOL("xheaders", &xheaders,
                         "trust X-Real-IP / X-Forwarded-For / X-Scheme: the client address\n"
                         "and scheme a proxy in front passes on"),
        {.type = GALE_OPTION_BOOL,
         .name = "quiet",
         .alias = "no-access-log",
         .var.b = &quiet,
         .help = "write no access log line per request, for load tests\n"
                 "(GALE_LOG_LEVEL=warning silences the other info lines too)"},
        {0},
    };
    const gale_options spec = {
        .prog = "hello",
        .description = "Tornado's hello world: GET / answers \"Hello, world!\". Stops gracefully\n"
                       "on SIGTERM or SIGINT.",
        .epilog = "environment: GALE_LOG_LEVEL (debug, info, warning, error, none),\n"
                  "GALE_LOOP_BACKEND (epoll, poll)",
        .options = options,
    };
    gale_options_parse_or_exit(&spec, &argc, argv);
    if (unix_socket && processes != 1) {
        fprintf(stderr, "hello: --unix-socket serves from one process; start one process per "
                        "socket instead of --processes\ntry 'hello --help' for the options\n");
        return 2;
    }

    gale_app *app = gale_app_new(NULL);
    if (!app)
        return 1;
    gale_app_opts(app)->xheaders = xheaders;
    gale_app_opts(app)->no_access_log = quiet;
    int rc = gale_app_route(app, "^/$", &main_handler, NULL);
    if (rc == 0)
        rc = app_start_listening(app, &(struct app_listen){.prog = "hello",
                                                           .port = port,
                                                           .processes = processes,
                                                           .unix_socket = unix_socket,
                                                           .certfile = certfile,
                                                           .keyfile = keyfile});
    if (rc == 0)
        rc = gale_app_run(app);
    gale_app_free(app);
    return rc ? 1 : 0;
}

/* Tornado's hello world on gale: GET / -> "Hello, world!".
 *
 * Usage: hello [--port 8879] [--processes N]   (N = 0: one process per CPU) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/web.h"

static void main_get(gale_handler *h) { gale_write_str(h, "Hello, world!"); }

static const gale_handler_class main_handler = {.get = main_get};

int main(int argc, char **argv)
{
    int port = 8879, processes = 1;
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = (int)strtol(argv[++i], &end, 10);
        else if (strcmp(argv[i], "--processes") == 0 && i + 1 < argc)
            processes = (int)strtol(argv[++i], &end, 10);
        if (!end || *end || port < 0 || port > 65535) {
            fprintf(stderr, "usage: %s [--port 8879] [--processes N]\n", argv[0]);
            return 2;
        }
    }

    gale_app *app = gale_app_new(NULL);
    if (!app)
        return 1;
    int rc = gale_app_route(app, "^/$", &main_handler, NULL);
    if (rc == 0)
        rc = gale_app_bind(app, port, NULL); /* logs why it failed, e.g. port in use */
    if (rc == 0)
        rc = gale_app_start(app, processes);
    if (rc == 0)
        rc = gale_app_run(app);
    gale_app_free(app);
    return rc ? 1 : 0;
}

/* Tornado's hello world with its handler written either as a plain callback method or as a
 * coroutine method (GALE_CORO_METHOD), for bench/coro_bench.sh to compare server CPU per request.
 *
 *     coro_hello [--port 8882] [--coro]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/web.h"

static void hello(gale_handler *h) { gale_write_str(h, "Hello, world!"); }
GALE_CORO_METHOD(hello_coro, hello)

static const gale_handler_class callback_handler = {.get = hello};
static const gale_handler_class coro_handler = {.get = hello_coro};

int main(int argc, char **argv)
{
    int port = 8882;
    bool coro = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--coro") == 0) {
            coro = true;
        } else {
            fprintf(stderr, "usage: coro_hello [--port 8882] [--coro]\n");
            return 2;
        }
    }
    gale_app *app = gale_app_new(NULL);
    if (!app || gale_app_route(app, "^/$", coro ? &coro_handler : &callback_handler, NULL) ||
        gale_app_listen(app, port, NULL))
        return 1;
    int rc = gale_app_run(app);
    gale_app_free(app);
    return rc ? 1 : 0;
}

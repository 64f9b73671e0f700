/* Helpers shared by the fuzz harnesses: reading choices out of the input, driving a loop until a
 * condition holds (bounded: a stall is reported as a crash), and checking that no descriptor or
 * timer outlives an input. Header-only so each harness stays one translation unit. */
#ifndef GALE_TESTS_FUZZ_UTIL_H
#define GALE_TESTS_FUZZ_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "core/loop.h"

/* Reports a broken invariant and aborts, so libFuzzer records the input as a crash. */
__attribute__((noreturn, format(printf, 1, 2))) static inline void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz invariant broken: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

#define FUZZ_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(__VA_ARGS__);                                                                \
    } while (0)

/* A cursor over the fuzz input: choices come from its front, the payload is what is left. */
struct fuzz_in {
    const uint8_t *p;
    size_t n;
};

static inline unsigned fuzz_u8(struct fuzz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static inline unsigned fuzz_u16(struct fuzz_in *in)
{
    unsigned hi = fuzz_u8(in);
    return hi << 8 | fuzz_u8(in);
}

/* Inputs are sent in at most this many input-chosen pieces, the rest at once: one loop iteration
 * per piece, so byte-by-byte feeding of a long input would cost more than it finds. */
#define FUZZ_MAX_PIECES 64

/* The lowest free descriptor number: a descriptor leaked by an input shows up as a change. */
static inline int fuzz_lowest_free_fd(void)
{
    int fd = dup(0);
    if (fd >= 0)
        close(fd);
    return fd;
}

/* A non-blocking connection to the unix socket at `path` (a listening socket accepts at once
 * into its backlog). Unix sockets cost the kernel a fraction of a loopback TCP exchange, which
 * is most of an input's time. Aborts on failure. */
static inline int fuzz_connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fuzz_fail("socket: %s", strerror(errno));
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    while (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        if (errno != EINTR)
            fuzz_fail("connect %s: %s", path, strerror(errno));
    return fd;
}

/* ---- driving a loop ---- */

struct fuzz_drive {
    bool (*step)(void *arg);
    void *arg;
    double deadline;
    const char *what;
    bool done;
    unsigned long iterations;
};

static void fuzz_drive_tick(gale_loop *loop, void *arg)
{
    struct fuzz_drive *d = arg;
    d->iterations++;
    if (d->step(d->arg)) {
        d->done = true;
        gale_loop_stop(loop);
        return;
    }
    /* The clock is read every 64 iterations only: the limit catches stalls, not slowness. */
    if ((d->iterations & 63) == 0 && gale_loop_time(loop) > d->deadline)
        fuzz_fail("%s: no progress after %lu loop iterations", d->what, d->iterations);
    if (gale_loop_add_callback(loop, fuzz_drive_tick, d) < 0)
        fuzz_fail("%s: cannot queue a callback", d->what);
}

/* Runs `loop` and calls `step(arg)` once per iteration until it returns true. Aborts when that
 * takes longer than `limit` seconds (a stalled connection is a bug the fuzzer must report). The
 * loop never sleeps meanwhile (a callback is always queued), so timers of 0 ms run at once. */
static inline void fuzz_drive(gale_loop *loop, bool (*step)(void *arg), void *arg, double limit,
                              const char *what)
{
    struct fuzz_drive d = {.step = step, .arg = arg, .what = what};
    d.deadline = gale_loop_time(loop) + limit;
    if (gale_loop_add_callback(loop, fuzz_drive_tick, &d) < 0)
        fuzz_fail("%s: cannot queue a callback", what);
    while (!d.done)
        gale_loop_run(loop);
}

/* Silences the library's log lines (access log, warnings about bad input) unless GALE_FUZZ_LOG is
 * set in the environment. */
static inline void fuzz_quiet_logs(void)
{
    if (!getenv("GALE_FUZZ_LOG"))
        gale_log_set_level(GALE_LOG_NONE);
}

#endif

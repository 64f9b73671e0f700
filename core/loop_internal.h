/* Internals shared by the loop and its backends (and by the loop's tests).
 *
 * A backend is a table of four functions (libevent's struct eventop): it knows nothing of
 * handlers, callbacks or timers; it only turns interest masks into kernel registrations and reports
 * readiness. The loop owns the fd table and decides, at dispatch, whether an event is still wanted
 * (the fd may have been removed or re-registered by an earlier handler of the same batch).
 */
#ifndef GALE_CORE_LOOP_INTERNAL_H
#define GALE_CORE_LOOP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/list.h"
#include "core/loop.h"

/* "Not registered", as old_events (add) or new_events (remove) in ctl(). */
#define GALE__EV_NONE 0x80000000u

/* Reports one ready fd with GALE_READ/GALE_WRITE and the error bits (0x08 error, 0x10 hang-up). */
typedef void (*gale__dispatch_fn)(gale_loop *loop, int fd, unsigned events);

typedef struct gale__backend {
    const char *name;
    /* Creates the backend state. Returns 0 or a negative errno. */
    int (*init)(void **state);
    /* Moves `fd` from `old_events` to `new_events` (GALE_READ|GALE_WRITE, or GALE__EV_NONE for
     * "not registered"). Returns 0 or a negative errno; on failure nothing changed. */
    int (*ctl)(void *state, int fd, unsigned old_events, unsigned new_events);
    /* Waits up to `timeout_ms` (0: poll, never -1) and calls `dispatch` for each ready fd. The
     * handlers may call ctl() on any fd meanwhile. Returns the number of events, or -EINTR (the
     * loop simply iterates again) or another negative errno. */
    int (*wait)(void *state, int timeout_ms, gale_loop *loop, gale__dispatch_fn dispatch);
    void (*free)(void *state);
} gale__backend;

extern const gale__backend gale__backend_epoll;
extern const gale__backend gale__backend_poll;
#ifdef GALE_HAVE_URING
extern const gale__backend gale__backend_uring;
#endif

/* The backend state of `loop` if it runs on `be`, else NULL (core/loop_uring.c's seam). */
void *gale__loop_backend_state(gale_loop *loop, const gale__backend *be);

/* A record that outlives its owner's close and is finished by the loop: a TLS connection whose
 * close_notify waits for the socket. gale_loop_free() calls `release` for each record still owned
 * (it must remove its handlers and timers and free itself); a record that finishes first leaves
 * with gale__loop_disown(). */
typedef struct gale__loop_owned {
    gale_list link;
    void (*release)(struct gale__loop_owned *o);
} gale__loop_owned;

void gale__loop_own(gale_loop *loop, gale__loop_owned *o);
void gale__loop_disown(gale__loop_owned *o);

/* Grows the per-fd table `*table` of `*n` entries of `elem` bytes (doubling, from 64) until `fd`
 * fits; new entries are zero, and pages no fd reaches yet stay untouched (not resident). Returns
 * 0 or -ENOMEM (the table is unchanged). The loop's handler table and the uring backend's. */
int gale__grow_table(void **table, size_t *n, size_t elem, int fd);

/* Checks the timer heap: heap order, every slot's stored index, and the timer count. For tests. */
bool gale__heap_check(const gale_loop *loop);

/* The deadline (gale_time_ns clock) of a periodic callback's next run, 0 when not scheduled. */
int64_t gale__periodic_next_ns(const gale_periodic *p);

#endif

/* gale event loop: Tornado's IOLoop in C.
 *
 * One loop per thread. A loop multiplexes fd handlers (epoll, level-triggered, poll, or io_uring), runs
 * callbacks, fires timers from an indexed min-heap, delivers signals as ordinary callbacks and can
 * be woken from other threads. Everything here must be called from the loop's own thread except
 * gale_loop_add_callback() and gale_loop_stop(), which are thread-safe.
 *
 * One iteration, as in Tornado:
 *   1. take the callbacks queued so far (callbacks queued while they run wait for the next
 *      iteration, so a callback that re-adds itself cannot starve I/O or timers);
 *   2. pick the timers already due, before running anything;
 *   3. run the callbacks, then the due timers (in (deadline, sequence) order: equal deadlines
 *      fire in the order they were added; a timer removed by an earlier callback does not fire);
 *   4. flush the log buffer, then poll: timeout 0 if callbacks are pending, else until the next
 *      timer (capped); EINTR is retried, never surfaced;
 *   5. dispatch fd events; a handler removed (or replaced on the same fd) by an earlier handler in
 *      the same iteration is not called for the stale event.
 *
 * Time: gale_loop_time() is CLOCK_MONOTONIC in seconds, as a double, like IOLoop.time().
 */
#ifndef GALE_CORE_LOOP_H
#define GALE_CORE_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gale_loop gale_loop;
typedef struct gale_future gale_future;

/* Event bits, Tornado's values. GALE_ERROR is always reported whether asked for or not. */
enum {
    GALE_READ = 0x001,
    GALE_WRITE = 0x004,
    GALE_ERROR = 0x018,
};

typedef void (*gale_cb)(gale_loop *loop, void *arg);
typedef void (*gale_handler_cb)(gale_loop *loop, int fd, unsigned events, void *arg);
typedef void (*gale_signal_cb)(gale_loop *loop, int signum, void *arg);

/* A timer handle: nonzero while valid. Handles are generation-tagged, so removing one that already
 * fired or was removed is detected (-ENOENT) and never touches another timer. */
typedef uint64_t gale_timeout;

typedef enum {
    /* GALE_LOOP_BACKEND env ("epoll", "poll", "uring"), else io_uring where the kernel and the
     * build allow it (see GALE_BACKEND_URING), else epoll. */
    GALE_BACKEND_DEFAULT = 0,
    GALE_BACKEND_EPOLL,
    GALE_BACKEND_POLL,
    /* io_uring (kernel 6.1+, liburing): fd readiness as poll operations, and plain TCP streams'
     * reads and writes and the acceptor's accepts as operations on the same ring. Where the
     * library was built without liburing or the kernel lacks what it needs, the loop is created on
     * epoll instead and one line is logged (once per process). */
    GALE_BACKEND_URING,
} gale_backend;

/* Creates a loop on `backend`. Returns 0, -EINVAL (unknown backend, or an unknown name in
 * GALE_LOOP_BACKEND), -ENOMEM, or the errno of epoll_create1/eventfd. Ownership: free it with
 * gale_loop_free(). The loop is not made current; see gale_loop_make_current(). A uring loop's
 * ring is bound to the first thread that runs it: run it on that thread only. */
int gale_loop_new(gale_backend backend, gale_loop **out);

/* Frees a loop that is not running: closes its own fds (epoll, waker, signalfd), drops pending
 * callbacks and timers without running them, and restores signal dispositions it changed. fds
 * registered by users are not closed. If it was current on this thread it no longer is. */
void gale_loop_free(gale_loop *loop);

/* Returns the loop current on this thread (made current, or running), else this thread's own
 * default loop, created by the first call on the thread (as Tornado 6: each thread has its own
 * current loop; a thread never gets another thread's loop by default). The default loop is freed
 * when its thread exits (or by gale_loop_free on that thread). Never NULL unless creation failed
 * (then logs the reason). */
gale_loop *gale_loop_current(void);

/* Makes `loop` this thread's current loop (NULL clears it). */
void gale_loop_make_current(gale_loop *loop);

/* Returns "epoll", "poll" or "uring": the backend actually in use (after any fallback). */
const char *gale_loop_backend_name(const gale_loop *loop);

/* Runs the loop until gale_loop_stop(). Makes it current on this thread while running. Returns 0,
 * -EBUSY if it is already running, or -EXDEV (with a log line) for a uring loop that an earlier
 * run bound to another thread. If stop() was called before run(), returns at once (once). */
int gale_loop_run(gale_loop *loop);

/* Asks the loop to return from run() after the current iteration. Thread-safe. */
void gale_loop_stop(gale_loop *loop);

/* Runs `loop` until `f` is done or `timeout` seconds pass (timeout <= 0: no limit). Returns 0 when
 * `f` completed (successfully or not: look at the future), -ETIMEDOUT, -EBUSY if the loop is
 * already running, -EINVAL for NULL. Ownership: the caller keeps its reference to `f`. */
int gale_loop_run_until(gale_loop *loop, gale_future *f, double timeout);

/* Tornado's run_sync: calls `fn(loop, arg)` from within the loop, which returns a new future
 * (ownership passes to run_sync), runs until it is done or `timeout` passes. Returns the future's
 * error code (0 on success), -ETIMEDOUT, or -EINVAL if fn returned NULL. If `out` is not NULL it
 * receives a reference to the future (also on timeout), which the caller must unref. */
int gale_loop_run_sync(gale_loop *loop, gale_future *(*fn)(gale_loop *loop, void *arg), void *arg,
                       double timeout, gale_future **out);

/* Monotonic time in seconds (CLOCK_MONOTONIC, via the vDSO). */
double gale_loop_time(const gale_loop *loop);
/* The same clock in nanoseconds. */
int64_t gale_time_ns(void);

/* ---- fd handlers ---- */

/* Calls `cb(loop, fd, events, arg)` when `fd` is ready for any of `events` (GALE_READ|GALE_WRITE;
 * GALE_ERROR implied). Returns 0, -EINVAL (fd < 0, NULL cb, unknown bits in events), -EEXIST (fd
 * already has a handler), or the backend's errno (e.g. -EPERM for a regular file under epoll).
 * Ownership: the fd stays the caller's; remove the handler before closing it. */
int gale_loop_add_handler(gale_loop *loop, int fd, unsigned events, gale_handler_cb cb, void *arg);

/* Changes the events watched on `fd`. Returns 0, -EINVAL, -ENOENT (no handler). Cheap when the
 * mask does not change (no system call). */
int gale_loop_update_handler(gale_loop *loop, int fd, unsigned events);

/* Stops watching `fd`. Events already collected for it in this iteration are dropped. Returns 0,
 * -EINVAL (fd < 0) or -ENOENT (no handler: removing twice is harmless). */
int gale_loop_remove_handler(gale_loop *loop, int fd);

/* ---- callbacks ---- */

/* Queues `cb(loop, arg)` to run on the loop's next iteration. The only thread-safe way into a
 * loop: from any thread other than the one inside gale_loop_run() (also one where the loop is
 * merely current, or before it runs) the callback goes through a locked queue and wakes the loop
 * (eventfd) if that queue was empty. Returns 0, -EINVAL (NULL cb) or -ENOMEM. Callbacks run in
 * FIFO order per thread of origin. */
int gale_loop_add_callback(gale_loop *loop, gale_cb cb, void *arg);

/* ---- timers ---- */

/* Calls `cb(loop, arg)` once, `delay` seconds from now (negative counts as 0). Returns 0 and sets
 * `*out` (may be NULL) to the handle, or -EINVAL (NULL cb, NaN delay), -ENOMEM. */
int gale_loop_call_later(gale_loop *loop, double delay, gale_cb cb, void *arg, gale_timeout *out);

/* Like call_later with an absolute deadline on gale_loop_time()'s clock (Tornado's call_at /
 * add_timeout). */
int gale_loop_call_at(gale_loop *loop, double deadline, gale_cb cb, void *arg, gale_timeout *out);

/* Cancels a timer. Returns 0, or -ENOENT if it already fired, was removed, or is 0. Safe from
 * inside the timer's own callback (then -ENOENT: it has fired). O(log n). */
int gale_loop_remove_timeout(gale_loop *loop, gale_timeout t);

/* Number of timers scheduled. */
size_t gale_loop_timer_count(const gale_loop *loop);

/* ---- futures ---- */

/* Calls `cb(loop, arg)` on the loop's next iteration after `f` is done (at once queued if it is
 * already done). Holds a reference to `f` until then. Returns 0, -EINVAL or -ENOMEM. */
int gale_loop_add_future(gale_loop *loop, gale_future *f, gale_cb cb, void *arg);

/* ---- signals ---- */

/* Delivers `signum` as a loop callback `cb(loop, signum, arg)` (signalfd: no handler runs in
 * signal context, and a signal arriving just before the loop sleeps still wakes it). The signal is
 * blocked in the calling thread while registered; block it in other threads too (create threads
 * after this call, or use pthread_sigmask) or the kernel may deliver it there. One callback per
 * signal per loop. Returns 0, -EINVAL (bad signum, SIGKILL/SIGSTOP, NULL cb), -EEXIST. */
int gale_loop_add_signal(gale_loop *loop, int signum, gale_signal_cb cb, void *arg);

/* Stops delivering `signum` and restores its previous mask. Returns 0 or -ENOENT. */
int gale_loop_remove_signal(gale_loop *loop, int signum);

/* ---- watchdog ---- */

/* Logs a warning naming any callback, timer or handler that runs longer than `seconds` (0
 * disables): "loop blocked for 250.3 ms in handler 0x... (symbol)". Measured around each dispatch
 * with the monotonic clock, no signals. Returns 0 or -EINVAL (negative, NaN). */
int gale_loop_set_blocking_log_threshold(gale_loop *loop, double seconds);

/* Busy time and total run time since the loop started, for utilisation metrics (seconds). */
void gale_loop_utilization(const gale_loop *loop, double *busy, double *total);

/* ---- periodic callbacks (Tornado's PeriodicCallback) ---- */

typedef struct gale_periodic gale_periodic;

/* Creates a periodic callback running `cb(loop, arg)` every `period` seconds measured start to
 * start on a fixed grid: when a run overruns, missed beats are skipped (no bunching). `jitter` in
 * [0,1) randomises each interval by +/- jitter/2 of the period. Not started. Returns 0, -EINVAL
 * (period <= 0, NULL cb, jitter out of range), -ENOMEM. Free with gale_periodic_free(). */
int gale_periodic_new(gale_loop *loop, double period, double jitter, gale_cb cb, void *arg,
                      gale_periodic **out);
int gale_periodic_start(gale_periodic *p); /* 0, or -EALREADY if running */
void gale_periodic_stop(gale_periodic *p); /* idempotent; legal inside its own callback */
bool gale_periodic_is_running(const gale_periodic *p);
void gale_periodic_free(gale_periodic *p); /* stops it; legal inside its own callback */

#endif

/* gale coroutines: Tornado's gen.coroutine / async def in C.
 *
 * A coroutine is a function that runs on its own stack and may suspend itself with gale_await()
 * until a future completes, so code that waits reads top to bottom while the loop keeps serving
 * everyone else:
 *
 *     static int fetch_one(void *arg)
 *     {
 *         gale_future *f = gale_http_fetch_future(client, &req);
 *         int rc = gale_await(f);              // suspends; the loop runs others meanwhile
 *         if (rc == 0)
 *             print(gale_future_result(f));
 *         gale_future_unref(f);
 *         return rc;                           // resolves the coroutine's own future
 *     }
 *     gale_future *done = gale_coro_spawn(loop, fetch_one, NULL, NULL);
 *
 * Rules, as Tornado's Runner:
 *   - gale_coro_spawn() runs the coroutine at once, on the caller's thread, until its first await
 *     that has to wait (or its end), then returns its future.
 *   - An await of a future already done does not suspend. Otherwise the coroutine suspends, and it
 *     is resumed from the loop (a loop callback queued when the future completes, like
 *     IOLoop.add_future), never from inside the gale_future_set_result() call that completed it.
 *   - The coroutine's future resolves with the result set by gale_coro_set_result() when the
 *     function returns 0, or fails with the negative code it returns (with the message of the
 *     awaited future that failed with that code, if any).
 *   - gale_coro_cancel() (the web layer uses it when a client goes away) makes the pending await
 *     return the reason, from the loop, and every later await of that coroutine return it at once,
 *     so the function unwinds and frees what it holds.
 *
 * Stacks: mmap'ed, sized by gale_coro_opts (default GALE_CORO_DEFAULT_STACK, 64 KiB), with a
 * PROT_NONE guard below them; only touched pages cost memory. Finished coroutines return their
 * stack to a per-thread pool (up to GALE_CORO_POOL_MAX stacks) for the next spawn, so a spawn
 * normally makes no system call. A stack overflow hits the guard and ends the process with
 * "coroutine stack overflow" on stderr (a SIGSEGV handler on an alternate signal stack says so,
 * then the default action runs): never silent corruption. Each stack is two memory mappings (the
 * stack and its guard): with Linux's default vm.max_map_count (65530) keep below ~30,000 live
 * coroutines per process.
 *
 * Switching: a hand-written switch of the callee-saved registers and stack pointer on x86-64 and
 * aarch64 (no system call per switch); ucontext elsewhere or when built with GALE_CORO_UCONTEXT.
 * AddressSanitizer builds annotate every switch with the sanitizer fiber API.
 *
 * Threads: a coroutine belongs to the thread that spawned it, which must be the thread of its
 * loop. Nothing here is thread-safe.
 */
#ifndef GALE_CORE_CORO_H
#define GALE_CORE_CORO_H

#include <stdbool.h>
#include <stddef.h>

#include "core/future.h"
#include "core/loop.h"

#define GALE_CORO_DEFAULT_STACK (64u * 1024)
#define GALE_CORO_MIN_STACK (16u * 1024)
#define GALE_CORO_MAX_STACK (256u * 1024 * 1024)
#define GALE_CORO_POOL_MAX 256

typedef struct gale_coro gale_coro;

/* The body of a coroutine: returns 0 (the future resolves with the result set through
 * gale_coro_set_result(), else NULL) or a negative error code (the future fails with it). A
 * positive return counts as 0. */
typedef int (*gale_coro_fn)(void *arg);

typedef struct gale_coro_opts {
    size_t stack_size; /* bytes, GALE_CORO_MIN_STACK..GALE_CORO_MAX_STACK; rounded up to pages */
} gale_coro_opts;

/* Fills `o` with the defaults (stack_size GALE_CORO_DEFAULT_STACK). */
void gale_coro_opts_init(gale_coro_opts *o);

/* Runs `fn(arg)` as a coroutine on `loop` (NULL: gale_loop_current()) with `opts` (NULL:
 * defaults). It starts at once, inside this call, and runs until it first suspends or returns.
 * Returns a new future (the caller's reference) that completes when `fn` returns; NULL only when
 * out of memory. A stack size of 0 or outside the limits, or a NULL fn, completes the future at
 * once with -EINVAL; a failed stack mapping with -ENOMEM (both logged). May be called from inside
 * another coroutine (nested spawn: the child runs first, the parent continues when the child
 * suspends). Ownership: the coroutine holds its own reference to the future until it ends; `arg`
 * stays the caller's. */
gale_future *gale_coro_spawn(gale_loop *loop, gale_coro_fn fn, void *arg,
                             const gale_coro_opts *opts);

/* Inside a coroutine: suspends it until `f` is done and returns its error code (0 on success; the
 * result is then gale_future_result(f)). Does not suspend when `f` is already done. Returns the
 * cancel reason once the coroutine was cancelled. Ownership: the caller keeps its reference to
 * `f` (the await holds its own while it waits). Errors: -EINVAL (NULL f), -EPERM outside a
 * coroutine (including any thread other than the coroutine's; logged), -ENOMEM. */
int gale_await(gale_future *f);

/* gale_await(f), then drops the caller's reference to `f`: for futures whose result is not needed
 * (gale_await_drop(gale_sleep(loop, 0.1))). A NULL `f` (a constructor out of memory) gives
 * -ENOMEM. */
int gale_await_drop(gale_future *f);

/* Awaits all `n` futures (gen.multi). Returns 0 or the first error among them in index order
 * (or the await's own error: -EPERM, -ENOMEM, a cancel reason). */
int gale_await_all(gale_future *const *futures, size_t n);

/* Inside a coroutine: the result its future will resolve with if the function returns 0;
 * `dtor` (may be NULL) frees it with the future (or at once if the function fails, or when it is
 * replaced). Returns 0 or -EPERM outside a coroutine. */
int gale_coro_set_result(void *result, void (*dtor)(void *));

/* The coroutine running on this thread, or NULL outside any. */
gale_coro *gale_coro_current(void);
/* True inside a coroutine. */
bool gale_coro_running(void);

/* Cancels `co` with `reason` (a negative errno; 0 or positive means -ECANCELED): if it is waiting,
 * its await returns `reason` from the next loop iteration (the awaited future is left alone, as
 * Tornado's with_timeout leaves it); every later await returns `reason` at once. The first reason
 * stays. Returns 0, -EINVAL (NULL) or -EALREADY (already ended). */
int gale_coro_cancel(gale_coro *co, int reason);

/* Ends the coroutines still alive on `loop` for a clean shutdown (call after the loop stopped,
 * before gale_loop_free()): cancels each with -ECANCELED and runs it at once until it returns,
 * from this call. Their futures complete with what they return. Also releases this thread's idle
 * stack pool. Returns how many were still alive (logged as a warning when > 0), or -EPERM inside
 * a coroutine. */
int gale_coro_shutdown(gale_loop *loop);

/* Coroutines alive on this thread (spawned and not yet returned). */
size_t gale_coro_count(void);

/* ---- helpers usable from callbacks and coroutines alike (tornado.gen) ---- */

/* gen.sleep: a new future resolved (result NULL) `seconds` from now on `loop` (NULL: current;
 * negative counts as 0). NaN completes it with -EINVAL. Returns NULL only when out of memory. The
 * timer holds a reference until it fires, so keep the loop running until then. */
gale_future *gale_sleep(gale_loop *loop, double seconds);

/* gen.moment: a new future resolved on the loop's next iteration: awaiting it lets every callback
 * and I/O event already pending run before the coroutine continues. NULL only when out of
 * memory. */
gale_future *gale_moment(gale_loop *loop);

/* gen.with_timeout: a new future that completes like `f`, or fails with -ETIMEDOUT ("Timeout")
 * if `f` is not done within `seconds` (`f` itself is not cancelled and may still complete
 * later). Its result is `f`'s result, kept alive by a reference to `f`. NULL or NaN arguments
 * complete it with -EINVAL. Returns NULL only when out of memory. Ownership: the caller keeps its
 * reference to `f`. */
gale_future *gale_with_timeout(gale_future *f, double seconds);

#endif

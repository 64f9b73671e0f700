/* gale futures: Tornado's (asyncio's) Future in C.
 *
 * A future is a reference-counted slot that completes once, with a result (a pointer plus the
 * destructor that frees it) or an error (a negative errno plus a message). Done callbacks run in
 * the order they were added. Futures belong to one loop's thread; they are not thread-safe (to
 * complete one from another thread, gale_loop_add_callback() a function that does it).
 *
 * Lifetime: gale_future_new() returns one reference. Each gale_future_ref() needs a matching
 * gale_future_unref(); the last unref runs the result destructor and frees the future. Pending
 * done callbacks hold no reference: unref to zero drops them without running them.
 */
#ifndef GALE_CORE_FUTURE_H
#define GALE_CORE_FUTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/loop.h"

typedef void (*gale_future_cb)(gale_future *f, void *arg);

/* Returns a new pending future bound to `loop` (may be NULL: then gale_loop_current()), or NULL
 * when out of memory. Ownership: one reference, for the caller. */
gale_future *gale_future_new(gale_loop *loop);

gale_future *gale_future_ref(gale_future *f); /* returns f */
void gale_future_unref(gale_future *f);       /* NULL is a no-op */

/* Completes `f` with `result`; `dtor` (may be NULL) frees it when the future is freed. Runs the
 * done callbacks now, in order, with a reference held across them. Returns 0, or -EINVAL if `f`
 * is already done (then `dtor(result)` is NOT called: the caller keeps `result`). */
int gale_future_set_result(gale_future *f, void *result, void (*dtor)(void *));

/* Like gale_future_set_result(), for a result that may end on its own while it sits in the future
 * (a connected stream whose peer closes it): `unlink(result)` (may be NULL) runs when
 * gale_future_steal_result() takes the result out, so the result can forget the future. The
 * result's side ends the link by calling gale_future_steal_result() itself before it goes away;
 * the future then holds NULL. Returns as gale_future_set_result(). */
int gale_future_set_result_linked(gale_future *f, void *result, void (*dtor)(void *),
                                  void (*unlink)(void *));

/* Completes `f` with error `code` (a negative errno or GALE_E*; 0 or positive is -EINVAL) and a
 * copy of `message` (may be NULL: then gale_strerror(code)). Returns 0, -EINVAL (already done or
 * bad code) or -ENOMEM (the message copy failed; the future still completes, without it). */
int gale_future_set_error(gale_future *f, int code, const char *message);

bool gale_future_done(const gale_future *f);
/* The result pointer (NULL while pending or on error). Ownership: stays the future's. */
void *gale_future_result(const gale_future *f);
/* 0 on success or while pending, else the error code. */
int gale_future_error(const gale_future *f);
/* The error message, or NULL when there is no error. Lives as long as the future. */
const char *gale_future_error_message(const gale_future *f);
/* Takes the result out: returns it and clears the destructor, so the caller now owns it. */
void *gale_future_steal_result(gale_future *f);
gale_loop *gale_future_loop(const gale_future *f);

/* Calls `cb(f, arg)` when `f` completes, or at once (inside this call) if it is already done.
 * Returns 0, -EINVAL (NULL cb) or -ENOMEM. */
int gale_future_add_done_callback(gale_future *f, gale_future_cb cb, void *arg);

/* Removes the first done callback equal to (cb, arg). Returns 0 or -ENOENT. */
int gale_future_remove_done_callback(gale_future *f, gale_future_cb cb, void *arg);

/* Propagates the outcome of `src` into `dst` when `src` completes (Tornado's chain_future). The
 * result is shared by reference: `dst`'s result is the same pointer, kept alive by a reference to
 * `src` that `dst` holds. Returns 0, -EINVAL or -ENOMEM. */
int gale_future_chain(gale_future *src, gale_future *dst);

/* gen.multi: returns a new future that completes when all `n` futures have completed (n == 0: at
 * once). Its result is NULL; its error is the first error among the inputs in index order (or 0).
 * Holds a reference to each input until then. Returns NULL when out of memory; if memory runs
 * out while watching the inputs, the output fails with -ENOMEM once the watched ones are done. */
gale_future *gale_future_all(gale_loop *loop, gale_future *const *futures, size_t n);

#endif

/* The io_uring backend's seam for the modules that submit operations on the loop's ring (the
 * stream's reads and writes, the acceptor): core/loop_uring.c.
 *
 * An operation is a record that embeds a gale__uop; its completion calls `cb` from the loop's
 * wait with the CQE's res and flags (a multishot operation calls it once per CQE and for the last
 * time without IORING_CQE_F_MORE). The record must stay alive until that last completion: closing
 * cancels (io_uring_prep_cancel) and then waits for it, it never frees early.
 *
 * Everything here is for the loop's own thread. Built without liburing (GALE_HAVE_URING unset)
 * the functions exist only as inline stubs that say "not a uring loop".
 */
#ifndef GALE_CORE_LOOP_URING_INTERNAL_H
#define GALE_CORE_LOOP_URING_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/loop.h"

typedef struct gale__uop gale__uop;
struct gale__uop {
    void (*cb)(gale__uop *op, int res, unsigned flags);
};

/* Per-loop state of the layer above (the stream's provided-buffer ring), freed with the loop. */
typedef struct gale__uring_ext gale__uring_ext;

#ifdef GALE_HAVE_URING
#include <liburing.h>

/* A submission queue entry whose completion calls `op->cb` (op NULL: the completion is ignored),
 * submitted at the loop turn's submit. NULL when `loop` is not a uring loop or the queue is full
 * and cannot be flushed yet (the loop has not run). */
struct io_uring_sqe *gale__uring_sqe(gale_loop *loop, gale__uop *op);

/* The loop's ring, NULL when it is not a uring loop. */
struct io_uring *gale__uring_ring(gale_loop *loop);

/* The layer above's per-loop state: NULL until set; set once, freed by `free_fn` with the loop
 * (before the ring is torn down). */
gale__uring_ext *gale__uring_ext_get(gale_loop *loop);
void gale__uring_ext_set(gale_loop *loop, gale__uring_ext *ext, void (*free_fn)(gale__uring_ext *));
#endif

#endif

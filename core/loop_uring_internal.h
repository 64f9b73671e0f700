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

/* The loop's provided buffers (one ring shared by every stream: an idle connection holds none). */
#define GALE__URING_BUF_SIZE 8192u
#define GALE__URING_BUF_COUNT 256u

#ifdef GALE_HAVE_URING
#include <liburing.h>

/* A submission queue entry whose completion calls `op->cb` (op NULL: the completion is ignored),
 * submitted at the loop turn's submit. NULL when `loop` is not a uring loop or the queue is full
 * and cannot be flushed yet (the loop has not run). */
struct io_uring_sqe *gale__uring_sqe(gale_loop *loop, gale__uop *op);

/* True when `loop` is a uring loop with its provided buffers. With `enable`, the ring is also
 * enabled (bound to the calling thread, which must be the one running the loop) if it was not. */
bool gale__uring_ready(gale_loop *loop, bool enable);

/* Queues the cancellation of `op` (its last completion follows, -ECANCELED unless it completed
 * first). Returns 0 or -EBUSY (no queue entry free). */
int gale__uring_cancel(gale_loop *loop, gale__uop *op);

/* The provided-buffer group id for IOSQE_BUFFER_SELECT. */
#define GALE__URING_BGID 7

/* Buffer `bid` (from a completion's IORING_CQE_F_BUFFER), and its return to the ring. */
char *gale__uring_buf(gale_loop *loop, unsigned bid);
void gale__uring_buf_return(gale_loop *loop, unsigned bid);

/* The result of `op`'s completion waiting in the completion queue (not dispatched yet), or
 * INT32_MIN when there is none. Scans the queue: for rare questions only. */
int gale__uring_completed(gale_loop *loop, const gale__uop *op);

/* False when `loop` is a uring loop whose ring is bound to another thread (the one that ran it
 * first): the calling thread can never wait on it. */
bool gale__uring_may_run(gale_loop *loop);

/* A record of GALE__URING_REC_SIZE bytes for an operation (NULL: out of memory), and its
 * return. The loop keeps a few returned ones for the next operations (freed with the loop), so
 * records made and dropped per operation neither cost a malloc each nor scatter the heap. */
#define GALE__URING_REC_SIZE 144u
void *gale__uring_rec_get(gale_loop *loop);
void gale__uring_rec_put(gale_loop *loop, void *rec);

/* Submits what is queued now and runs the kernel's deferred completions, so a cancellation
 * drops the operations' file references before the caller closes the fd. */
void gale__uring_flush(gale_loop *loop);

/* True once the ring runs (the loop's first wait, on its thread): before that nothing queued has
 * been submitted, and an entry from gale__uring_sqe() may still be rewritten. */
bool gale__uring_enabled(gale_loop *loop);

/* Dispatches now the completions of `op` waiting in the completion queue (the loop's turn then
 * skips them), up to its last one (after which `op` may be gone): a server shutting down takes
 * the connections its accept already took, and a stopped accept's record goes at once. */
void gale__uring_dispatch_now(gale_loop *loop, gale__uop *op);

#ifdef GALE_FAULT_INJECTION
/* core/loop_uring_fault.c: the fault plan applied to operations (for core/loop_uring.c). Under
 * fault injection a receive or send may be submitted shorter than prepared (a SENDMSG's iovecs
 * trimmed in place), or as a NOP whose completion carries an injected error. */
#define GALE__URING_MAX_FAULTS 64
struct gale__uring_faults {
    uint64_t ud[GALE__URING_MAX_FAULTS]; /* operations submitted as NOPs */
    int res[GALE__URING_MAX_FAULTS];     /* the error their completion carries */
    size_t n;
};
/* Applies the plan to the entries prepared and not yet submitted whose user_data's low two bits
 * are `op_tag`. Called just before each submission. */
void gale__uring_fault_sq(struct io_uring *ring, struct gale__uring_faults *f, uint64_t op_tag);
/* The result to dispatch for a completion of `ud` (its injected error, taken off the table). */
int gale__uring_fault_res(struct gale__uring_faults *f, uint64_t ud, int res);
/* The same without taking it off (a completion looked at, not dispatched). */
int gale__uring_fault_peek(const struct gale__uring_faults *f, uint64_t ud, int res);
#endif
#endif

#endif

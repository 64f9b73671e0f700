/* gale fault injection: a test seam on the I/O path.
 *
 * The library's socket calls on the I/O path (recv, send and sendmsg in the stream, accept4 in the
 * acceptor) and the stream's allocations go through the wrappers of core/fault_internal.h. In a
 * normal build those are static inline calls to libc and this seam costs nothing; built with
 * -DGALE_FAULT_INJECTION=ON (CMake option, default OFF, for tests only) each call first consults a
 * fault plan and may return a short count, EAGAIN, EINTR, ECONNRESET, ENOMEM or (accept) EMFILE
 * instead of, or around, the real call.
 *
 * The plan: per call kind a probability for each fault, drawn from a seeded PRNG (seed from
 * GALE_FAULT_SEED, default 1, so a failing run can be replayed), plus scripted faults ("the Nth
 * call of this kind from now returns X"), which win over probabilities. It is read once from the
 * environment at the first call:
 *
 *     GALE_FAULTS="recv:eagain=0.1,short=0.2;send:eintr=0.05,short=0.3;accept:emfile=0.01"
 *     GALE_FAULTS="recv:econnreset@3"        (the 3rd recv returns ECONNRESET)
 *
 * and can be replaced at any time through gale_fault_configure() for targeted tests. Calls:
 * recv, send (send and sendmsg), accept, alloc. Faults: short (recv, send), eagain, eintr (recv,
 * send, accept), econnreset (recv, send; ECONNABORTED for accept), enomem (every call: ENOBUFS for
 * accept, a failed allocation for alloc), emfile (accept). A short count cuts the length offered to
 * the kernel to 1..len-1 bytes and makes the real call.
 *
 * Transparent faults (short, eagain, eintr, and emfile on accept, which pauses accepting and
 * retries on a timer) must never change what a peer sees: whole test suites run under them. The
 * others end one connection with a clean close and the error as the close reason.
 *
 * Threads: the plan and the PRNG are guarded by a lock; the counters are per process.
 */
#ifndef GALE_CORE_FAULT_H
#define GALE_CORE_FAULT_H

#include <stdbool.h>
#include <stdint.h>

typedef enum gale_fault_call {
    GALE_FAULT_RECV,
    GALE_FAULT_SEND,
    GALE_FAULT_ACCEPT,
    GALE_FAULT_ALLOC,
    GALE_FAULT_NCALLS
} gale_fault_call;

typedef enum gale_fault_kind {
    GALE_FAULT_NONE,
    GALE_FAULT_SHORT,
    GALE_FAULT_EAGAIN,
    GALE_FAULT_EINTR,
    GALE_FAULT_ECONNRESET,
    GALE_FAULT_ENOMEM,
    GALE_FAULT_EMFILE,
    GALE_FAULT_NKINDS
} gale_fault_kind;

/* True when the seam is compiled in (GALE_FAULT_INJECTION). */
bool gale_fault_enabled(void);

/* Replaces the whole plan (probabilities and scripts) with `spec`, in GALE_FAULTS syntax; NULL or
 * "" clears it. Counters are kept. Returns 0, -EINVAL (syntax, unknown call or fault, a fault the
 * call cannot have, probabilities outside [0, 1] or summing past 1; the plan is then unchanged),
 * -ENOMEM, or -ENOTSUP when the seam is not compiled in. */
int gale_fault_configure(const char *spec);

/* Re-seeds the PRNG. Returns 0 or -ENOTSUP. */
int gale_fault_seed(uint64_t seed);

/* Scripts one fault: the `nth` call (1 = the next one) of `call` from now returns `kind`. Up to
 * 64 scripted faults wait at once. Returns 0, -EINVAL (nth 0, a fault the call cannot have),
 * -ENOSPC, or -ENOTSUP. */
int gale_fault_script(gale_fault_call call, unsigned long nth, gale_fault_kind kind);

/* Clears the plan, the scripts and the counters; the environment is not read again. */
void gale_fault_reset(void);

/* How many calls of `call` went through the seam, and how many got fault `kind`
 * (GALE_FAULT_NONE: faults of any kind). 0 when the seam is not compiled in. */
unsigned long gale_fault_calls(gale_fault_call call);
unsigned long gale_fault_injected(gale_fault_call call, gale_fault_kind kind);

#endif

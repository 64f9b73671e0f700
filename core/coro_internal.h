/* Internals shared by core/coro.c and the context switch in core/coro_switch.c. */
#ifndef GALE_CORE_CORO_INTERNAL_H
#define GALE_CORE_CORO_INTERNAL_H

/* The hand-written switch is used on x86-64 and aarch64 unless GALE_CORO_UCONTEXT is defined. */
#if !defined(GALE_CORO_UCONTEXT) && (defined(__x86_64__) || defined(__aarch64__))
#define GALE_CORO_ASM 1
#else
#define GALE_CORO_ASM 0
#endif

#if GALE_CORO_ASM
/* Pushes the callee-saved registers on the current stack, stores the stack pointer in *from_sp,
 * loads *to_sp and pops the registers saved there, returning into the other context. */
void gale__coro_switch(void **from_sp, void *const *to_sp);
/* First code a new context runs (reached by the switch's return): calls fn(arg), taken from the
 * registers the initial frame sets (x86-64: r12/r13; aarch64: x19/x20). fn never returns. */
void gale__coro_start(void);
#endif

#endif

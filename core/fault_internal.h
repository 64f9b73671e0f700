/* The fault-injection seam's wrappers (see core/fault.h). Normal builds: static inline libc calls.
 * With GALE_FAULT_INJECTION: defined in core/fault.c, consulting the fault plan. */
#ifndef GALE_CORE_FAULT_INTERNAL_H
#define GALE_CORE_FAULT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/fault.h"

#ifdef GALE_FAULT_INJECTION

ssize_t gale__sys_recv(int fd, void *buf, size_t len, int flags);
ssize_t gale__sys_send(int fd, const void *buf, size_t len, int flags);
ssize_t gale__sys_sendmsg(int fd, const struct msghdr *mh, int flags);
/* sendfile(2) from `in_fd` to socket `out_fd`; faults as send (short counts, EAGAIN, EINTR...). */
ssize_t gale__sys_sendfile(int out_fd, int in_fd, off_t *offset, size_t count);
int gale__sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
/* True when the next allocation on the I/O path must fail (-ENOMEM). */
bool gale__fault_alloc(void);
/* True when the last failure of a wrapper on this thread was injected, not the kernel's. */
bool gale__fault_was_injected(void);

/* For the operations that bypass the wrappers (io_uring: core/loop_uring.c, the acceptor): the
 * fault the plan gives one call of `call` offering `len` bytes, counted as a wrapper's call is.
 * GALE_FAULT_SHORT sets `*cut` to the length to offer instead (1..len-1). */
gale_fault_kind gale__fault_decide(gale_fault_call call, size_t len, size_t *cut);
/* The negative errno a wrapper of `call` fails with for the error fault `kind`. */
int gale__fault_errno(gale_fault_call call, gale_fault_kind kind);

#else

static inline ssize_t gale__sys_recv(int fd, void *buf, size_t len, int flags)
{
    return recv(fd, buf, len, flags);
}

static inline ssize_t gale__sys_send(int fd, const void *buf, size_t len, int flags)
{
    return send(fd, buf, len, flags);
}

static inline ssize_t gale__sys_sendmsg(int fd, const struct msghdr *mh, int flags)
{
    return sendmsg(fd, mh, flags);
}

static inline ssize_t gale__sys_sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    return sendfile(out_fd, in_fd, offset, count);
}

static inline int gale__sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    return accept4(fd, addr, len, flags);
}

static inline bool gale__fault_alloc(void) { return false; }
static inline bool gale__fault_was_injected(void) { return false; }

#endif

#endif

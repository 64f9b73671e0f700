/* Fault injection for io_uring operations (GALE_FAULT_INJECTION builds only; core/fault.h).
 *
 * Operations bypass the gale__sys_* wrappers, so the uring loop perturbs them itself, with the
 * same plan and seeded PRNG, and only in ways a real kernel can: a receive or send is looked at
 * just before its submission (the bytes of a completed receive are in its buffer and cannot be
 * taken back, nor can bytes that left be unsent):
 *
 *  - short (recv, send): the length offered is cut to 1..len-1 (a SENDMSG's iovecs are trimmed
 *    in place: the owner's msghdr is read again by nobody but the kernel), so the completion
 *    reports fewer bytes and the owner re-submits the rest. A multishot receive is made one-shot
 *    first, so that every receive comes through here (the fault runs see no multishot receive);
 *  - an error fault (eagain, eintr, econnreset, enomem): the entry becomes a NOP with the same
 *    user_data, and its completion is dispatched with the wrapper's error instead of the NOP's 0.
 *
 * Accept completions are perturbed by their owner (net/tcpserver_uring.c), since a multishot
 * accept's completions are not submissions.
 */
#include "core/loop_uring_internal.h"

#if defined(GALE_HAVE_URING) && defined(GALE_FAULT_INJECTION)

#include <sys/socket.h>

#include "core/fault_internal.h"

static void cut_msg(struct msghdr *mh, size_t cut)
{
    size_t left = cut, i = 0;
    for (; i < mh->msg_iovlen && left > 0; i++) {
        if (mh->msg_iov[i].iov_len > left)
            mh->msg_iov[i].iov_len = left;
        left -= mh->msg_iov[i].iov_len;
    }
    mh->msg_iovlen = i;
}

static size_t msg_len(const struct msghdr *mh)
{
    size_t n = 0;
    for (size_t i = 0; i < mh->msg_iovlen; i++)
        n += mh->msg_iov[i].iov_len;
    return n;
}

/* One entry about to be submitted. */
static void fault_one(struct gale__uring_faults *f, struct io_uring_sqe *sqe)
{
    gale_fault_call call = sqe->opcode == IORING_OP_RECV ? GALE_FAULT_RECV : GALE_FAULT_SEND;
    struct msghdr *mh = NULL;
    size_t len = sqe->len;
    /* A multishot receive (length 0: a ring buffer each time) stays armed for a whole transfer,
     * so the plan would see one receive: it becomes a one-shot receive of a ring buffer (or of
     * `cut` bytes), whose completion ends it, and each re-arm comes through here. */
    if (sqe->opcode == IORING_OP_RECV && (sqe->ioprio & IORING_RECV_MULTISHOT)) {
        sqe->ioprio &= (__u16)~IORING_RECV_MULTISHOT;
        sqe->len = len = GALE__URING_BUF_SIZE;
    }
    if (sqe->opcode == IORING_OP_SENDMSG) {
        mh = (struct msghdr *)(uintptr_t)sqe->addr;
        len = msg_len(mh);
    }
    size_t cut = len;
    gale_fault_kind kind = gale__fault_decide(call, len, &cut);
    if (kind == GALE_FAULT_NONE)
        return;
    if (kind == GALE_FAULT_SHORT) {
        if (mh)
            cut_msg(mh, cut);
        else
            sqe->len = (unsigned)cut;
        return;
    }
    if (f->n == GALE__URING_MAX_FAULTS)
        return; /* rare: that many faulted operations not completed yet */
    uint64_t ud = sqe->user_data;
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, ud);
    f->ud[f->n] = ud;
    f->res[f->n] = gale__fault_errno(call, kind);
    f->n++;
}

void gale__uring_fault_sq(struct io_uring *ring, struct gale__uring_faults *f, uint64_t op_tag)
{
    struct io_uring_sq *sq = &ring->sq;
    for (unsigned i = sq->sqe_head; i != sq->sqe_tail; i++) {
        struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];
        if ((sqe->user_data & 3) != op_tag)
            continue;
        if (sqe->opcode == IORING_OP_RECV || sqe->opcode == IORING_OP_SEND ||
            sqe->opcode == IORING_OP_SENDMSG)
            fault_one(f, sqe);
    }
}

int gale__uring_fault_res(struct gale__uring_faults *f, uint64_t ud, int res)
{
    for (size_t i = 0; i < f->n; i++) {
        if (f->ud[i] != ud)
            continue;
        res = f->res[i];
        f->n--;
        f->ud[i] = f->ud[f->n];
        f->res[i] = f->res[f->n];
        break;
    }
    return res;
}

int gale__uring_fault_peek(const struct gale__uring_faults *f, uint64_t ud, int res)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->ud[i] == ud)
            return f->res[i];
    return res;
}

#endif

/* io_uring backend: fd readiness as POLL_ADD operations, plus the operations other modules submit
 * (net/ stream reads and writes, the acceptor) on the same ring, with one
 * io_uring_submit_and_wait_timeout per loop turn.
 *
 * The ring is made with COOP_TASKRUN + SINGLE_ISSUER + DEFER_TASKRUN (without them io_uring costs
 * more CPU per request than epoll) and R_DISABLED: a loop may be created on one thread and run on
 * another, and SINGLE_ISSUER binds the ring to the thread that enables it, which is the first one
 * to wait. Until then operations only fill the submission queue.
 *
 * Readiness is level-triggered, like the epoll backend: a poll is one-shot and re-armed before the
 * next wait while its fd is still registered, so an fd that stays readable completes again at once
 * (a multishot poll would only report new wake-ups: edge-triggered). ctl() only records the wanted
 * mask; the polls are (re)armed in one pass before each wait, so a handler that flips its interest
 * several times in a turn costs nothing. A poll's user_data carries the fd and a generation: a
 * completion of a poll that was removed (or re-armed with another mask) is stale and dropped.
 *
 * user_data, by its low two bits: 0 ignore (poll removals, cancellations), 1 poll (gen << 32 | fd
 * << 2), 2 an operation (a gale__uop pointer; see loop_uring_internal.h).
 */
#include "core/loop_uring_internal.h"

#ifdef GALE_HAVE_URING

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/loop_internal.h"

#define SQ_ENTRIES 256
#define CQ_ENTRIES 4096
#define UD_POLL 1u
#define UD_OP 2u

/* One per fd up to the highest registered, so kept to 4 bytes (an idle connection's share of
 * the loop's memory). The generation wraps at 65,536: a stale completion (of a poll removed or
 * re-armed) comes within a turn or two of its removal, long before the fd could be re-armed that
 * many times. */
struct ufd {
    uint16_t gen;     /* of the armed poll */
    uint8_t want : 3; /* POLLIN|POLLOUT wanted while `reg` */
    uint8_t mask : 3; /* of the armed poll */
    bool reg : 1;     /* registered with the loop */
    bool armed : 1;   /* a poll is in flight */
    bool queued;      /* in `dirty` */
};
_Static_assert(sizeof(struct ufd) == 4, "struct ufd grows the per-fd table");
_Static_assert((POLLIN | POLLOUT) < 8, "struct ufd's masks are 3 bits");

struct uring_state {
    struct io_uring ring;
    bool enabled;
    pthread_t owner; /* the thread that enabled the ring: the only one that may submit */
    struct ufd *fds;
    size_t nfds;
    int *dirty;
    size_t ndirty, dirtycap;
    struct io_uring_buf_ring *br; /* NULL: no provided buffers (streams stay on readiness) */
    char *bufs;
    int64_t bufs_used_ns; /* when data last landed in a buffer; 0: its pages are given back */
    struct rec *recs;     /* kept operation records (gale__uring_rec_get) */
    unsigned nrecs;
#ifdef GALE_FAULT_INJECTION
    struct gale__uring_faults faults;
#endif
};

/* Operation records kept for reuse, at most this many: under load the same few cycle, and no
 * record allocated and freed per operation leaves holes between the connections' records. */
#define RECS_KEEP 64u

struct rec {
    struct rec *next;
};

/* Fault injection (core/loop_uring_fault.c): the plan is applied to what is about to be
 * submitted, and injected errors replace their NOPs' results. Nothing in other builds. */
#ifdef GALE_FAULT_INJECTION
#define FAULT_SQ(s) gale__uring_fault_sq(&(s)->ring, &(s)->faults, UD_OP)
#define FAULT_RES(s, ud, res) gale__uring_fault_res(&(s)->faults, (ud), (res))
#define FAULT_PEEK(s, ud, res) gale__uring_fault_peek(&(s)->faults, (ud), (res))
#else
#define FAULT_SQ(s) ((void)0)
#define FAULT_RES(s, ud, res) (res)
#define FAULT_PEEK(s, ud, res) (res)
#endif

/* Buffers idle this long give their pages back (MADV_DONTNEED), so a loop that went quiet holds
 * no receive memory: the ring cycles through all its buffers under load, and would otherwise
 * keep them all resident for good. The next receive faults a page in again. */
#define TRIM_AFTER_NS 1000000000LL

/* The provided-buffer ring: registered before the ring is enabled (a SINGLE_ISSUER ring takes
 * registrations only from its thread afterwards). The memory is touched only as data arrives. */
static void setup_buffers(struct uring_state *s)
{
    size_t rsz = GALE__URING_BUF_COUNT * sizeof(struct io_uring_buf);
    size_t bsz = (size_t)GALE__URING_BUF_COUNT * GALE__URING_BUF_SIZE;
    void *r = mmap(NULL, rsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    void *b = mmap(NULL, bsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (r == MAP_FAILED || b == MAP_FAILED)
        goto fail;
    struct io_uring_buf_reg reg = {
        .ring_addr = (uintptr_t)r, .ring_entries = GALE__URING_BUF_COUNT, .bgid = GALE__URING_BGID};
    if (io_uring_register_buf_ring(&s->ring, &reg, 0) < 0)
        goto fail;
    s->br = r;
    s->bufs = b;
    io_uring_buf_ring_init(s->br);
    for (unsigned i = 0; i < GALE__URING_BUF_COUNT; i++)
        io_uring_buf_ring_add(s->br, s->bufs + (size_t)i * GALE__URING_BUF_SIZE,
                              GALE__URING_BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(GALE__URING_BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(s->br, GALE__URING_BUF_COUNT);
    return;
fail:
    if (r != MAP_FAILED)
        munmap(r, rsz);
    if (b != MAP_FAILED)
        munmap(b, bsz);
}

static bool ring_usable(struct io_uring *ring)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
    if (!probe)
        return false;
    static const int ops[] = {IORING_OP_POLL_ADD, IORING_OP_POLL_REMOVE, IORING_OP_RECV,
                              IORING_OP_SENDMSG,  IORING_OP_ACCEPT,      IORING_OP_ASYNC_CANCEL};
    bool ok = true;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        ok = ok && io_uring_opcode_supported(probe, ops[i]);
    io_uring_free_probe(probe);
    return ok;
}

static int uring_init(void **out)
{
    struct uring_state *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    struct io_uring_params p = {
        .flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
                 IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED | IORING_SETUP_CQSIZE,
        .cq_entries = CQ_ENTRIES,
    };
    int err = io_uring_queue_init_params(SQ_ENTRIES, &s->ring, &p);
    if (err < 0) {
        free(s);
        return err;
    }
    if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP) ||
        !ring_usable(&s->ring)) {
        io_uring_queue_exit(&s->ring);
        free(s);
        return -ENOTSUP;
    }
    setup_buffers(s);
    *out = s;
    return 0;
}

static int grow_fds(struct uring_state *s, int fd)
{
    void *t = s->fds;
    int err = gale__grow_table(&t, &s->nfds, sizeof *s->fds, fd);
    s->fds = t;
    return err;
}

static int mark_dirty(struct uring_state *s, int fd)
{
    struct ufd *f = &s->fds[fd];
    if (f->queued)
        return 0;
    if (s->ndirty == s->dirtycap) {
        size_t cap = s->dirtycap ? s->dirtycap * 2 : 64;
        int *d = realloc(s->dirty, cap * sizeof *d);
        if (!d)
            return -ENOMEM;
        s->dirty = d;
        s->dirtycap = cap;
    }
    s->dirty[s->ndirty++] = fd;
    f->queued = true;
    return 0;
}

static uint8_t to_poll(unsigned events)
{
    uint8_t ev = 0;
    if (events & GALE_READ)
        ev |= POLLIN;
    if (events & GALE_WRITE)
        ev |= POLLOUT;
    return ev;
}

static bool sync_fd(struct uring_state *s, int fd);

/* The poll holds a reference to the file: until its removal is submitted, closing the fd does not
 * close the socket, and the caller may close it and at once tell a peer (a listener closed on
 * SIGTERM must refuse the next connect). So the removal goes in now, with its completion. */
static void remove_now(struct uring_state *s, int fd)
{
    struct ufd *f = &s->fds[fd];
    if (!f->armed || !s->enabled)
        return;
    if (sync_fd(s, fd)) {
        FAULT_SQ(s);
        (void)io_uring_submit_and_get_events(&s->ring);
    }
}

static int uring_ctl(void *state, int fd, unsigned old_events, unsigned new_events)
{
    struct uring_state *s = state;
    (void)old_events;
    int err = grow_fds(s, fd);
    if (err)
        return err;
    struct ufd *f = &s->fds[fd];
    bool was = f->reg;
    uint8_t prev = f->want;
    f->reg = new_events != GALE__EV_NONE;
    f->want = f->reg ? to_poll(new_events) : 0;
    if (was == f->reg && prev == f->want)
        return 0;
    err = mark_dirty(s, fd);
    if (err) {
        f->reg = was;
        f->want = prev;
    } else if (!f->reg) {
        remove_now(s, fd);
    }
    return err;
}

/* A submission queue entry: when the queue is full, what it holds is submitted first (only
 * possible once the ring is enabled, on the loop's thread). NULL when none can be had. */
static struct io_uring_sqe *get_sqe(struct uring_state *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    if (!sqe && s->enabled) {
        FAULT_SQ(s);
        io_uring_submit(&s->ring);
        sqe = io_uring_get_sqe(&s->ring);
    }
    return sqe;
}

static uint64_t poll_ud(int fd, uint16_t gen)
{
    return (uint64_t)gen << 32 | (uint64_t)fd << 2 | UD_POLL;
}

/* Brings one fd's poll in line with what its handler wants. False when no queue entry was free. */
static bool sync_fd(struct uring_state *s, int fd)
{
    struct ufd *f = &s->fds[fd];
    if (f->armed && (!f->reg || f->mask != f->want)) {
        struct io_uring_sqe *sqe = get_sqe(s);
        if (!sqe)
            return false;
        io_uring_prep_poll_remove(sqe, poll_ud(fd, f->gen));
        io_uring_sqe_set_data64(sqe, 0);
        f->armed = false;
    }
    if (f->reg && !f->armed) {
        struct io_uring_sqe *sqe = get_sqe(s);
        if (!sqe)
            return false;
        f->gen++;
        io_uring_prep_poll_add(sqe, fd, f->want);
        io_uring_sqe_set_data64(sqe, poll_ud(fd, f->gen));
        f->mask = f->want;
        f->armed = true;
    }
    return true;
}

static void sync_all(struct uring_state *s)
{
    size_t i = 0;
    for (; i < s->ndirty; i++) {
        int fd = s->dirty[i];
        if (!sync_fd(s, fd))
            break;
        s->fds[fd].queued = false;
    }
    /* What did not fit waits for the next turn. */
    memmove(s->dirty, s->dirty + i, (s->ndirty - i) * sizeof *s->dirty);
    s->ndirty -= i;
}

static unsigned from_poll(int res)
{
    if (res < 0)
        return 0x008;
    unsigned ev = 0;
    if (res & (POLLIN | POLLPRI | POLLRDHUP))
        ev |= GALE_READ;
    if (res & POLLOUT)
        ev |= GALE_WRITE;
    if (res & (POLLERR | POLLNVAL))
        ev |= 0x008;
    if (res & POLLHUP)
        ev |= 0x010;
    return ev;
}

/* One poll completion: dispatched unless stale. Returns whether it was. */
static bool poll_done(struct uring_state *s, uint64_t ud, int res, gale_loop *loop,
                      gale__dispatch_fn dispatch)
{
    int fd = (int)((uint32_t)ud >> 2);
    uint16_t gen = (uint16_t)(ud >> 32);
    if ((size_t)fd >= s->nfds)
        return false;
    struct ufd *f = &s->fds[fd];
    if (!f->armed || f->gen != gen)
        return false;
    f->armed = false;
    if (f->reg)
        (void)mark_dirty(s, fd); /* re-armed before the next wait: level-triggered */
    if (res == -ECANCELED)
        return false;
    dispatch(loop, fd, from_poll(res));
    return true;
}

/* Dispatches the completions. They are taken off the queue one at a time: those not dispatched
 * yet stay in it, where gale__uring_completed() finds them (a server shutting down asks whether a
 * request waits on a connection before closing it as idle). At most one queue's worth per turn;
 * the rest wait for the next, which then does not sleep. */
static int reap(struct uring_state *s, gale_loop *loop, gale__dispatch_fn dispatch)
{
    int n = 0;
    for (unsigned budget = CQ_ENTRIES; budget; budget--) {
        struct io_uring_cqe *cqe;
        if (io_uring_peek_batch_cqe(&s->ring, &cqe, 1) == 0)
            break;
        uint64_t ud = cqe->user_data;
        int res = cqe->res;
        unsigned flags = cqe->flags;
        io_uring_cq_advance(&s->ring, 1);
        if ((ud & 3) == UD_POLL) {
            n += poll_done(s, ud, res, loop, dispatch);
        } else if ((ud & 3) == UD_OP) {
            gale__uop *op = (gale__uop *)(uintptr_t)(ud & ~(uint64_t)3);
            res = FAULT_RES(s, ud, res);
            if (flags & IORING_CQE_F_BUFFER)
                s->bufs_used_ns = 1; /* stamped after the batch (uring_wait) */
            op->cb(op, res, flags);
            n++;
        }
    }
    return n;
}

/* Before a wait: gives the buffers' pages back once they have been idle TRIM_AFTER_NS, and
 * otherwise shortens the wait so that it happens. Returns the timeout to wait with. A buffer is
 * never held across turns (a receive's bytes are taken before its buffer goes back), so none is
 * in use here. */
static int trim_buffers(struct uring_state *s, int timeout_ms)
{
    if (!s->bufs_used_ns || timeout_ms == 0)
        return timeout_ms;
    int64_t now = gale_time_ns();
    if (s->bufs_used_ns == 1)
        s->bufs_used_ns = now;
    int64_t idle = now - s->bufs_used_ns;
    if (idle >= TRIM_AFTER_NS) {
        (void)madvise(s->bufs, (size_t)GALE__URING_BUF_COUNT * GALE__URING_BUF_SIZE, MADV_DONTNEED);
        s->bufs_used_ns = 0;
        return timeout_ms;
    }
    int left_ms = (int)((TRIM_AFTER_NS - idle + 999999) / 1000000);
    return left_ms < timeout_ms ? left_ms : timeout_ms;
}

/* Binds the ring to the calling thread (SINGLE_ISSUER) and lets it run. */
static int enable(struct uring_state *s)
{
    if (s->enabled)
        return pthread_equal(s->owner, pthread_self()) ? 0 : -EXDEV;
    /* liburing 2.3 declares io_uring_enable_rings() but does not export it. */
    if (syscall(__NR_io_uring_register, s->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
        return -errno;
    s->enabled = true;
    s->owner = pthread_self();
    return 0;
}

static int uring_wait(void *state, int timeout_ms, gale_loop *loop, gale__dispatch_fn dispatch)
{
    struct uring_state *s = state;
    int err = enable(s);
    if (err)
        return err;
    sync_all(s);
    timeout_ms = trim_buffers(s, timeout_ms);
    FAULT_SQ(s);
    int r;
    if (timeout_ms == 0) {
        r = io_uring_submit_and_get_events(&s->ring);
    } else {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                       .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
        r = io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1, &ts, NULL);
    }
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY)
        return r;
    return reap(s, loop, dispatch);
}

/* The loop goes: operations still finishing (a stream closed in the last turn, whose cancelled
 * receive holds its last reference) complete now, so their owners are freed, not leaked. Polls
 * are dropped: their handlers are gone. */
static void drain_ops(struct uring_state *s)
{
    if (!s->enabled)
        return;
    for (int round = 0; round < 4; round++) {
        FAULT_SQ(s);
        (void)io_uring_submit_and_get_events(&s->ring);
        struct io_uring_cqe *cqe;
        bool any = false;
        while (io_uring_peek_cqe(&s->ring, &cqe) == 0) {
            uint64_t ud = cqe->user_data;
            int res = cqe->res;
            unsigned flags = cqe->flags;
            io_uring_cqe_seen(&s->ring, cqe);
            if ((ud & 3) == UD_OP) {
                gale__uop *op = (gale__uop *)(uintptr_t)(ud & ~(uint64_t)3);
                op->cb(op, FAULT_RES(s, ud, res), flags);
                any = true;
            }
        }
        if (!any)
            break;
    }
}

static void uring_free(void *state)
{
    struct uring_state *s = state;
    if (!s)
        return;
    drain_ops(s);
    io_uring_queue_exit(&s->ring);
    if (s->br) {
        munmap(s->br, GALE__URING_BUF_COUNT * sizeof(struct io_uring_buf));
        munmap(s->bufs, (size_t)GALE__URING_BUF_COUNT * GALE__URING_BUF_SIZE);
    }
    while (s->recs) {
        struct rec *r = s->recs;
        s->recs = r->next;
        free(r);
    }
    free(s->fds);
    free(s->dirty);
    free(s);
}

const gale__backend gale__backend_uring = {
    .name = "uring",
    .init = uring_init,
    .ctl = uring_ctl,
    .wait = uring_wait,
    .free = uring_free,
};

/* ---- the operations interface (loop_uring_internal.h) ---- */

struct io_uring_sqe *gale__uring_sqe(gale_loop *loop, gale__uop *op)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    if (!s)
        return NULL;
    struct io_uring_sqe *sqe = get_sqe(s);
    if (sqe)
        io_uring_sqe_set_data64(sqe, op ? (uint64_t)(uintptr_t)op | UD_OP : 0);
    return sqe;
}

bool gale__uring_ready(gale_loop *loop, bool enable_it)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    return s && s->br && (!enable_it || enable(s) == 0);
}

int gale__uring_cancel(gale_loop *loop, gale__uop *op)
{
    struct io_uring_sqe *sqe = gale__uring_sqe(loop, NULL);
    if (!sqe)
        return -EBUSY;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op | UD_OP, 0);
    io_uring_sqe_set_data64(sqe, 0);
    return 0;
}

char *gale__uring_buf(gale_loop *loop, unsigned bid)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    assert(s && s->br && bid < GALE__URING_BUF_COUNT);
    return s->bufs + (size_t)bid * GALE__URING_BUF_SIZE;
}

void gale__uring_buf_return(gale_loop *loop, unsigned bid)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    assert(s && s->br && bid < GALE__URING_BUF_COUNT);
    io_uring_buf_ring_add(s->br, s->bufs + (size_t)bid * GALE__URING_BUF_SIZE, GALE__URING_BUF_SIZE,
                          (unsigned short)bid, io_uring_buf_ring_mask(GALE__URING_BUF_COUNT), 0);
    io_uring_buf_ring_advance(s->br, 1);
}

int gale__uring_completed(gale_loop *loop, const gale__uop *op)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    struct io_uring_cqe *cqe;
    unsigned head;
    if (!s)
        return INT32_MIN;
    io_uring_for_each_cqe(&s->ring, head, cqe)
    {
        if (cqe->user_data == ((uint64_t)(uintptr_t)op | UD_OP))
            return FAULT_PEEK(s, cqe->user_data, cqe->res);
    }
    return INT32_MIN;
}

bool gale__uring_may_run(gale_loop *loop)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    return !s || !s->enabled || pthread_equal(s->owner, pthread_self());
}

bool gale__uring_enabled(gale_loop *loop)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    return s && s->enabled;
}

/* Dispatches the completions of `ud` in the queue; true once its last one was. */
static bool dispatch_op(struct uring_state *s, gale__uop *op, uint64_t ud)
{
    struct io_uring_cqe *cqe;
    unsigned head;
    io_uring_for_each_cqe(&s->ring, head, cqe)
    {
        if (cqe->user_data != ud)
            continue;
        int res = FAULT_RES(s, ud, cqe->res);
        unsigned flags = cqe->flags;
        cqe->user_data = 0; /* dispatched: reap() ignores it */
        op->cb(op, res, flags);
        if (!(flags & IORING_CQE_F_MORE))
            return true; /* `op` may be gone */
    }
    return false;
}

void gale__uring_dispatch_now(gale_loop *loop, gale__uop *op)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    if (s && s->enabled)
        (void)dispatch_op(s, op, (uint64_t)(uintptr_t)op | UD_OP);
}

void gale__uring_flush(gale_loop *loop)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    if (s && s->enabled) {
        FAULT_SQ(s);
        (void)io_uring_submit_and_get_events(&s->ring);
    }
}

void *gale__uring_rec_get(gale_loop *loop)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    assert(s);
    struct rec *r = s->recs;
    if (!r)
        return malloc(GALE__URING_REC_SIZE);
    s->recs = r->next;
    s->nrecs--;
    return r;
}

void gale__uring_rec_put(gale_loop *loop, void *rec)
{
    struct uring_state *s = gale__loop_backend_state(loop, &gale__backend_uring);
    assert(s && rec);
    if (s->nrecs == RECS_KEEP) {
        free(rec);
        return;
    }
    struct rec *r = rec;
    r->next = s->recs;
    s->recs = r;
    s->nrecs++;
}

#endif

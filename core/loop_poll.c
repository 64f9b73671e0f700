/* poll(2) backend: the portable fallback. A dense pollfd array plus an fd -> slot map, so add,
 * modify and remove are O(1) (removal moves the last entry into the hole). Ready entries are
 * copied out before dispatch because handlers may add or remove fds, which reshuffles the array. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "core/loop_internal.h"

struct ready {
    int fd;
    unsigned events;
};

struct poll_state {
    struct pollfd *pfds;
    size_t n, cap;
    int *slot; /* slot[fd] = index in pfds + 1, 0 when absent */
    size_t nslot;
    struct ready *ready;
    size_t ready_cap;
};

static int poll_init(void **out)
{
    struct poll_state *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    *out = s;
    return 0;
}

static short to_poll(unsigned events)
{
    short ev = 0;
    if (events & GALE_READ)
        ev |= POLLIN;
    if (events & GALE_WRITE)
        ev |= POLLOUT;
    return ev;
}

static int poll_ctl(void *state, int fd, unsigned old_events, unsigned new_events)
{
    struct poll_state *s = state;
    if (old_events == GALE__EV_NONE) {
        if ((size_t)fd >= s->nslot) {
            size_t n = s->nslot ? s->nslot : 64;
            while (n <= (size_t)fd)
                n *= 2;
            int *slot = realloc(s->slot, n * sizeof *slot);
            if (!slot)
                return -ENOMEM;
            memset(slot + s->nslot, 0, (n - s->nslot) * sizeof *slot);
            s->slot = slot;
            s->nslot = n;
        }
        if (s->n == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 64;
            struct pollfd *p = realloc(s->pfds, cap * sizeof *p);
            if (!p)
                return -ENOMEM;
            s->pfds = p;
            s->cap = cap;
        }
        s->pfds[s->n] = (struct pollfd){.fd = fd, .events = to_poll(new_events)};
        s->slot[fd] = (int)++s->n;
        return 0;
    }
    if ((size_t)fd >= s->nslot || s->slot[fd] == 0)
        return -ENOENT;
    size_t i = (size_t)s->slot[fd] - 1;
    if (new_events != GALE__EV_NONE) {
        s->pfds[i].events = to_poll(new_events);
        return 0;
    }
    s->slot[fd] = 0;
    if (i != --s->n) {
        s->pfds[i] = s->pfds[s->n];
        s->slot[s->pfds[i].fd] = (int)i + 1;
    }
    return 0;
}

static int poll_wait(void *state, int timeout_ms, gale_loop *loop, gale__dispatch_fn dispatch)
{
    struct poll_state *s = state;
    int n = poll(s->pfds, s->n, timeout_ms);
    if (n < 0)
        return -errno;
    if (n == 0)
        return 0;
    if ((size_t)n > s->ready_cap) {
        struct ready *r = realloc(s->ready, (size_t)n * sizeof *r);
        if (!r)
            return -ENOMEM;
        s->ready = r;
        s->ready_cap = (size_t)n;
    }
    size_t k = 0;
    for (size_t i = 0; i < s->n && k < (size_t)n; i++) {
        short re = s->pfds[i].revents;
        if (!re)
            continue;
        unsigned ev = 0;
        if (re & (POLLIN | POLLPRI))
            ev |= GALE_READ;
        if (re & POLLOUT)
            ev |= GALE_WRITE;
        if (re & (POLLERR | POLLNVAL))
            ev |= 0x008;
        if (re & POLLHUP)
            ev |= 0x010;
        s->ready[k++] = (struct ready){.fd = s->pfds[i].fd, .events = ev};
    }
    for (size_t i = 0; i < k; i++)
        dispatch(loop, s->ready[i].fd, s->ready[i].events);
    return (int)k;
}

static void poll_free(void *state)
{
    struct poll_state *s = state;
    if (!s)
        return;
    free(s->pfds);
    free(s->slot);
    free(s->ready);
    free(s);
}

const gale__backend gale__backend_poll = {
    .name = "poll",
    .init = poll_init,
    .ctl = poll_ctl,
    .wait = poll_wait,
    .free = poll_free,
};

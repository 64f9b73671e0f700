/* epoll backend, level-triggered like Tornado's EPollIOLoop: an fd that stays readable is reported
 * again on the next iteration, so a handler may consume only part of what is ready. */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/loop_internal.h"

#define MAX_EVENTS 512

struct epoll_state {
    int epfd;
    struct epoll_event events[MAX_EVENTS];
};

static int epoll_init(void **out)
{
    struct epoll_state *s = malloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0) {
        int err = -errno;
        free(s);
        return err;
    }
    *out = s;
    return 0;
}

static uint32_t to_epoll(unsigned events)
{
    uint32_t ev = 0;
    if (events & GALE_READ)
        ev |= EPOLLIN;
    if (events & GALE_WRITE)
        ev |= EPOLLOUT;
    return ev;
}

static int epoll_ctl_fd(void *state, int fd, unsigned old_events, unsigned new_events)
{
    struct epoll_state *s = state;
    struct epoll_event ev = {.events = 0, .data.fd = fd};
    int op;
    if (old_events == GALE__EV_NONE) {
        op = EPOLL_CTL_ADD;
        ev.events = to_epoll(new_events);
    } else if (new_events == GALE__EV_NONE) {
        op = EPOLL_CTL_DEL;
    } else {
        op = EPOLL_CTL_MOD;
        ev.events = to_epoll(new_events);
    }
    if (epoll_ctl(s->epfd, op, fd, &ev) < 0)
        return -errno;
    return 0;
}

static int epoll_wait_fds(void *state, int timeout_ms, gale_loop *loop, gale__dispatch_fn dispatch)
{
    struct epoll_state *s = state;
    int n = epoll_wait(s->epfd, s->events, MAX_EVENTS, timeout_ms);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        uint32_t e = s->events[i].events;
        unsigned ev = 0;
        if (e & (EPOLLIN | EPOLLPRI | EPOLLRDHUP))
            ev |= GALE_READ;
        if (e & EPOLLOUT)
            ev |= GALE_WRITE;
        if (e & EPOLLERR)
            ev |= 0x008;
        if (e & EPOLLHUP)
            ev |= 0x010;
        dispatch(loop, s->events[i].data.fd, ev);
    }
    return n;
}

static void epoll_free(void *state)
{
    struct epoll_state *s = state;
    if (!s)
        return;
    close(s->epfd);
    free(s);
}

const gale__backend gale__backend_epoll = {
    .name = "epoll",
    .init = epoll_init,
    .ctl = epoll_ctl_fd,
    .wait = epoll_wait_fds,
    .free = epoll_free,
};

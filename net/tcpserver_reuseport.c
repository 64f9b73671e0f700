/* Listening sockets of their own for prefork workers (SO_REUSEPORT): the parent keeps bound-only
 * sockets that hold the port, and each worker binds and listens on a socket of its own at the
 * same address, so the kernel spreads new connections over the workers' accept queues instead of
 * waking every worker for one shared queue. The acceptor (tcpserver.c) decides when; this file
 * makes the sockets. */
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/tcpserver_internal.h"

static int set_int(int fd, int level, int name, int value)
{
    return setsockopt(fd, level, name, &value, sizeof value) < 0 ? -errno : 0;
}

int gale__reuseport_rebind(int fd, bool listen_too, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    int family = ss.ss_family;
    if (family != AF_INET && family != AF_INET6)
        return -EAFNOSUPPORT; /* a unix socket has no reuseport group */
    int nfd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (nfd < 0)
        return -errno;
    int err = set_int(nfd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (!err)
        err = set_int(nfd, SOL_SOCKET, SO_REUSEPORT, 1);
    if (!err && family == AF_INET6)
        err = set_int(nfd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
    if (!err && bind(nfd, (struct sockaddr *)&ss, len) < 0)
        err = -errno;
    if (!err && listen_too && listen(nfd, backlog) < 0)
        err = -errno;
    if (err) {
        close(nfd);
        return err;
    }
    close(fd);
    return nfd;
}

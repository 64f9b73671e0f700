/* The acceptor's private helpers shared by its files (not installed). */
#ifndef GALE_NET_TCPSERVER_INTERNAL_H
#define GALE_NET_TCPSERVER_INTERNAL_H

#include <stdbool.h>

/* net/tcpserver_reuseport.c: a listening socket of its own per prefork worker.
 *
 * A socket bound with SO_REUSEPORT (a worker's copy of the supervisor's bound-only socket) is
 * replaced by a new one bound to the same address with the same options (SO_REUSEADDR,
 * SO_REUSEPORT, IPV6_V6ONLY for IPv6, non-blocking, close-on-exec): listening with `backlog`
 * when `listen_too`, else only bound, which keeps the port without taking connections (the
 * kernel hands new connections only to the listening sockets of a reuseport group). The old
 * descriptor is closed in this process once the new one is in place. Returns the new descriptor
 * or a negative errno (then `fd` is left as it was). */
int gale__reuseport_rebind(int fd, bool listen_too, int backlog);

#endif

/* What the TCP client's files share (not installed). */
#ifndef GALE_NET_TCPCLIENT_INTERNAL_H
#define GALE_NET_TCPCLIENT_INTERNAL_H

#include "net/iostream.h"

/* A gale_connect_cb completing the future `arg` (a reference the connect call took): the stream
 * becomes its result, or the status its error; drops that reference. */
void gale__tcp_future_done(gale_stream *s, int status, void *arg);

#endif

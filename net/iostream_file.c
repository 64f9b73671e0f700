/* File ranges in a stream's write queue (gale_stream_sendfile): the sendfile(2) call that sends
 * from the head of the queue, kept apart from iostream.c's byte writes. The queue itself, its
 * order and back-pressure, stay iostream.c's. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/sendfile.h>

#include "core/fault_internal.h"
#include "net/iostream_internal.h"

/* Linux sends at most this much per call (MAX_RW_COUNT); asking for more is harmless, but a
 * bounded count keeps one call's work, and the loop's latency, bounded too. */
#define SENDFILE_MAX ((size_t)1 << 30)

void gale__stream_file_range(void *unused) { (void)unused; }

/* sendfile(2) takes no MSG_NOSIGNAL: a peer that has gone raises SIGPIPE, whose default action
 * ends the process. The first file range sets it to ignored if it is still at its default (as
 * nginx and Python do; a handler of the program's own is left alone); EPIPE then closes the
 * stream as a send's would. */
static pthread_once_t sigpipe_once = PTHREAD_ONCE_INIT;

static void sigpipe_ignore(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
        !(old.sa_flags & SA_SIGINFO))
        signal(SIGPIPE, SIG_IGN);
}

ssize_t gale__stream_send_file_head(int sock, int fd, off_t *offset, size_t len)
{
    if (len == 0)
        return 0;
    pthread_once(&sigpipe_once, sigpipe_ignore);
    ssize_t n = gale__sys_sendfile(sock, fd, offset, len < SENDFILE_MAX ? len : SENDFILE_MAX);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    if (n == 0)
        return -EIO; /* the file is shorter than the range: truncated under us */
    return n;
}

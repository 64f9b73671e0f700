/* File ranges in a stream's write queue (gale_stream_sendfile): the sendfile(2) call that sends
 * from the head of the queue, kept apart from iostream.c's byte writes. The queue itself, its
 * order and back-pressure, stay iostream.c's. */
#include <errno.h>
#include <sys/sendfile.h>

#include "core/fault_internal.h"
#include "net/iostream_internal.h"

/* Linux sends at most this much per call (MAX_RW_COUNT); asking for more is harmless, but a
 * bounded count keeps one call's work, and the loop's latency, bounded too. */
#define SENDFILE_MAX ((size_t)1 << 30)

void gale__stream_file_range(void *unused) { (void)unused; }

ssize_t gale__stream_send_file_head(int sock, int fd, off_t *offset, size_t len)
{
    if (len == 0)
        return 0;
    ssize_t n = gale__sys_sendfile(sock, fd, offset, len < SENDFILE_MAX ? len : SENDFILE_MAX);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    if (n == 0)
        return -EIO; /* the file is shorter than the range: truncated under us */
    return n;
}

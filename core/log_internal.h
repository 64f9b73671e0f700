/* The logger's batch interface for the library's own access log (not installed): one prefix
 * lookup for a run of lines of one level and category, then each line appended as parts. */
#ifndef GALE_CORE_LOG_INTERNAL_H
#define GALE_CORE_LOG_INTERNAL_H

#include <stddef.h>

#include "core/log.h"

/* The line prefix "[L yymmdd hh:mm:ss category] " for `level` and `category` now; `*pfx` stays
 * valid until the next logging call on this thread. Returns its length. */
size_t gale__log_prefix(gale_log_level level, const char *category, const char **pfx);

/* Queues the line pfx + head + tail + "\n" (which must not contain a newline; head and tail are
 * short: up to a few KiB together) at `level`, already known to be enabled. `pfx` is the one
 * gale__log_prefix gave; `head` and `tail` must be readable for 32 bytes from their start,
 * whatever their length (short parts are copied in one fixed-size move). */
void gale__log_append(gale_log_level level, const char *pfx, size_t plen, const char *head,
                      size_t hlen, const char *tail, size_t tlen);

#endif

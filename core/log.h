/* gale logging: levels, categories and one line format, like Tornado's log module.
 *
 * Lines look like Tornado's default formatter:
 *     [I 261125 19:18:05 access] 200 GET / (127.0.0.1) 0.21ms
 * level letter, yymmdd hh:mm:ss local time, category, message. Categories mirror Tornado's
 * loggers: "access" (one line per HTTP request), "application" (handler code), "general"
 * (the framework). Output goes to stderr.
 *
 * Performance: a line below WARNING is appended to a per-thread buffer and written when the
 * buffer fills, when gale_log_flush() is called, or when the thread's loop is about to sleep
 * (the loop calls gale_log_flush() before each poll), so a busy server does not pay one write()
 * per access-log line. WARNING and above are written at once (after flushing what is queued, so
 * order is kept). The timestamp text is cached per second.
 *
 * The level comes from GALE_LOG_LEVEL (debug, info, warning, error, none; default info), read
 * once on first use, or from gale_log_set_level().
 */
#ifndef GALE_CORE_LOG_H
#define GALE_CORE_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
    GALE_LOG_DEBUG = 10,
    GALE_LOG_INFO = 20,
    GALE_LOG_WARNING = 30,
    GALE_LOG_ERROR = 40,
    GALE_LOG_NONE = 100,
} gale_log_level;

#define GALE_LOG_ACCESS "access"
#define GALE_LOG_APP "application"
#define GALE_LOG_GENERAL "general"

/* Sets the minimum level written. Thread-safe (atomic). */
void gale_log_set_level(gale_log_level level);
gale_log_level gale_log_get_level(void);

/* Returns nonzero if a line at `level` would be written: use it to skip costly formatting. */
int gale_log_enabled(gale_log_level level);

/* Writes one line at `level` in `category` (a static string, e.g. GALE_LOG_ACCESS).
 * A trailing newline in `fmt` is not needed. Lines longer than 8 KiB are truncated. */
void gale_log(gale_log_level level, const char *category, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void gale_logv(gale_log_level level, const char *category, const char *fmt, va_list ap);

/* Writes one line whose text is already formatted (`len` bytes, no format directives): the cheap
 * path for lines written once per request, such as the access log. Same rules as gale_log(). */
void gale_log_write(gale_log_level level, const char *category, const char *msg, size_t len);

/* Writes this thread's buffered lines to stderr now. Also registered with atexit(). */
void gale_log_flush(void);

/* Redirects output to `fd` instead of stderr (2). For tests; takes effect for later writes. */
void gale_log_set_fd(int fd);

#define gale_log_debug(cat, ...) gale_log(GALE_LOG_DEBUG, cat, __VA_ARGS__)
#define gale_log_info(cat, ...) gale_log(GALE_LOG_INFO, cat, __VA_ARGS__)
#define gale_log_warning(cat, ...) gale_log(GALE_LOG_WARNING, cat, __VA_ARGS__)
#define gale_log_error(cat, ...) gale_log(GALE_LOG_ERROR, cat, __VA_ARGS__)

#endif

/* Buffered, per-thread logging. See core/log.h for the format and the flushing rules. */
#include "core/log.h"
#include "core/copy_internal.h"
#include "core/log_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_BUF_SIZE 16384
#define LOG_COPY_SLACK 32
#define LOG_LINE_MAX 8192

struct log_tls {
    size_t used;
    time_t stamp_sec;
    char stamp[24]; /* "261125 19:18:05" */
    /* The last prefix built: consecutive lines of one level and category within a second (an
     * access log under load) copy it instead of formatting it again. */
    char pfx[128];
    size_t pfx_len, pfx_cat_len;
    time_t pfx_sec;
    gale_log_level pfx_level;
    int registered;
    /* LOG_BUF_SIZE bytes of lines, and room for the over-long short copies of log_part */
    char buf[LOG_BUF_SIZE + LOG_COPY_SLACK];
};

static _Thread_local struct log_tls tls;
static atomic_int log_level = -1;
static atomic_int log_fd = 2;
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static pthread_key_t log_key;

static void write_fd(const char *p, size_t len)
{
    int fd = atomic_load_explicit(&log_fd, memory_order_relaxed);
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere to report a failing log sink */
        }
        p += n;
        len -= (size_t)n;
    }
}

void gale_log_flush(void)
{
    if (tls.used == 0)
        return;
    write_fd(tls.buf, tls.used);
    tls.used = 0;
}

static void thread_exit_flush(void *unused) { gale_log_flush(); }

static int parse_level(const char *s)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {{"debug", GALE_LOG_DEBUG},     {"info", GALE_LOG_INFO},
                 {"warning", GALE_LOG_WARNING}, {"warn", GALE_LOG_WARNING},
                 {"error", GALE_LOG_ERROR},     {"none", GALE_LOG_NONE},
                 {"off", GALE_LOG_NONE}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(s, names[i].name) == 0)
            return names[i].level;
    return -1;
}

static void log_init(void)
{
    pthread_key_create(&log_key, thread_exit_flush);
    /* A child must not inherit (and later write twice) lines its parent had buffered. */
    pthread_atfork(gale_log_flush, NULL, NULL);
    atexit(gale_log_flush);
    int level = GALE_LOG_INFO;
    const char *env = getenv("GALE_LOG_LEVEL");
    if (env && *env) {
        int parsed = parse_level(env);
        if (parsed >= 0)
            level = parsed;
        else
            fprintf(stderr,
                    "[W gale] GALE_LOG_LEVEL=%s is not one of debug, info, warning, "
                    "error, none; using info\n",
                    env);
    }
    int expected = -1;
    atomic_compare_exchange_strong(&log_level, &expected, level);
}

static inline int current_level(void)
{
    int level = atomic_load_explicit(&log_level, memory_order_relaxed);
    if (level < 0) {
        pthread_once(&log_once, log_init);
        level = atomic_load(&log_level);
    }
    return level;
}

void gale_log_set_level(gale_log_level level)
{
    pthread_once(&log_once, log_init);
    atomic_store(&log_level, (int)level);
}

gale_log_level gale_log_get_level(void) { return (gale_log_level)current_level(); }

int gale_log_enabled(gale_log_level level) { return (int)level >= current_level(); }

void gale_log_set_fd(int fd)
{
    gale_log_flush();
    atomic_store(&log_fd, fd);
}

static char level_letter(gale_log_level level)
{
    if (level >= GALE_LOG_ERROR)
        return 'E';
    if (level >= GALE_LOG_WARNING)
        return 'W';
    if (level >= GALE_LOG_INFO)
        return 'I';
    return 'D';
}

/* Appends "[L yymmdd hh:mm:ss category] " for `level` to `out` (at least 64 + strlen(category)
 * bytes); returns its length. The timestamp text is rebuilt at most once a second. */
static size_t format_prefix(char *out, gale_log_level level, const char *category)
{
    time_t now = time(NULL);
    if (now != tls.stamp_sec) {
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(tls.stamp, sizeof tls.stamp, "%y%m%d %H:%M:%S", &tm);
        tls.stamp_sec = now;
    }
    size_t n = 0;
    out[n++] = '[';
    out[n++] = level_letter(level);
    out[n++] = ' ';
    size_t sl = strlen(tls.stamp);
    memcpy(out + n, tls.stamp, sl);
    n += sl;
    out[n++] = ' ';
    size_t cl = strnlen(category, 64);
    memcpy(out + n, category, cl);
    n += cl;
    out[n++] = ']';
    out[n++] = ' ';
    return n;
}

static void register_thread(void)
{
    if (!tls.registered) {
        tls.registered = 1;
        pthread_setspecific(log_key, &tls);
    }
}

/* Queues one finished line (which ends in '\n') and flushes at once for warnings and errors. */
static void queue_line(gale_log_level level, const char *line, size_t len)
{
    if (tls.used + len > LOG_BUF_SIZE)
        gale_log_flush();
    if (len > LOG_BUF_SIZE) {
        write_fd(line, len);
        return;
    }
    memcpy(tls.buf + tls.used, line, len);
    tls.used += len;
    if (level >= GALE_LOG_WARNING)
        gale_log_flush();
}

void gale_logv(gale_log_level level, const char *category, const char *fmt, va_list ap)
{
    if ((int)level < current_level())
        return;
    register_thread();
    char line[LOG_LINE_MAX];
    size_t len = format_prefix(line, level, category ? category : GALE_LOG_GENERAL);
    int body = vsnprintf(line + len, sizeof line - len, fmt, ap);
    if (body > 0)
        len += (size_t)body < sizeof line - len ? (size_t)body : sizeof line - len - 1;
    while (len > 0 && line[len - 1] == '\n')
        len--;
    line[len++] = '\n';
    queue_line(level, line, len);
}

/* The prefix for (level, category) now, in tls.pfx; returns its length. */
static size_t cached_prefix(gale_log_level level, const char *category)
{
    time_t now = time(NULL);
    if (now == tls.pfx_sec && level == tls.pfx_level && tls.pfx_len) {
        /* Same text as the cached category (which sits at the end: "... category] ")? Names
         * are a few letters: compare them in place rather than call strncmp. */
        const char *c = tls.pfx + tls.pfx_len - 2 - tls.pfx_cat_len;
        size_t i = 0;
        while (i < tls.pfx_cat_len && category[i] == c[i])
            i++;
        if (i == tls.pfx_cat_len && category[i] == '\0')
            return tls.pfx_len;
    }
    tls.pfx_len = format_prefix(tls.pfx, level, category); /* 64 + 64 bytes at most */
    tls.pfx_cat_len = strnlen(category, 64);
    tls.pfx_sec = tls.stamp_sec;
    tls.pfx_level = level;
    return tls.pfx_len;
}

size_t gale__log_prefix(gale_log_level level, const char *category, const char **pfx)
{
    size_t n = cached_prefix(level, category ? category : GALE_LOG_GENERAL);
    *pfx = tls.pfx;
    return n;
}

/* Copies the `n` bytes at `s` to `d`; a short part as one fixed 32-byte move (`s` readable and
 * `d` writable that far: the bytes past `n` are overwritten by the next part or lie past the
 * buffer's used end). */
static inline __attribute__((always_inline)) void log_part(char *d, const char *s, size_t n)
{
    if (__builtin_expect(n <= LOG_COPY_SLACK, 1))
        memcpy(d, s, LOG_COPY_SLACK);
    else
        gale__copy(d, s, n);
}

void gale__log_append(gale_log_level level, const char *pfx, size_t plen, const char *head,
                      size_t hlen, const char *tail, size_t tlen)
{
    register_thread();
    size_t n = plen + hlen + tlen + 1;
    if (tls.used + n > LOG_BUF_SIZE)
        gale_log_flush();
    if (n > LOG_BUF_SIZE)
        return; /* cannot happen for the short lines this takes */
    char *out = tls.buf + tls.used;
    log_part(out, pfx, plen); /* tls.pfx: 128 bytes */
    log_part(out + plen, head, hlen);
    log_part(out + plen + hlen, tail, tlen);
    out[n - 1] = '\n';
    tls.used += n;
    if (level >= GALE_LOG_WARNING)
        gale_log_flush();
}

void gale_log_write(gale_log_level level, const char *category, const char *msg, size_t len)
{
    if ((int)level < current_level())
        return;
    register_thread();
    if (!category)
        category = GALE_LOG_GENERAL;
    while (len > 0 && msg[len - 1] == '\n')
        len--;
    if (len > LOG_LINE_MAX - 128)
        len = LOG_LINE_MAX - 128;
    /* Build the line in place in the thread's buffer when it fits: one copy of the message. */
    size_t n = cached_prefix(level, category);
    if (tls.used + n + len + 1 > LOG_BUF_SIZE)
        gale_log_flush();
    char *out = tls.buf + tls.used;
    memcpy(out, tls.pfx, n);
    memcpy(out + n, msg, len);
    n += len;
    out[n++] = '\n';
    tls.used += n;
    if (level >= GALE_LOG_WARNING)
        gale_log_flush();
}

void gale_log(gale_log_level level, const char *category, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    gale_logv(level, category, fmt, ap);
    va_end(ap);
}

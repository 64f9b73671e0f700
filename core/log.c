/* Buffered, per-thread logging. See core/log.h for the format and the flushing rules. */
#include "core/log.h"

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
#define LOG_LINE_MAX 8192

struct log_tls {
    size_t used;
    time_t stamp_sec;
    char stamp[24]; /* "261125 19:18:05" */
    int registered;
    char buf[LOG_BUF_SIZE];
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
            fprintf(stderr, "[W gale] GALE_LOG_LEVEL=%s is not one of debug, info, warning, "
                            "error, none; using info\n", env);
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

void gale_logv(gale_log_level level, const char *category, const char *fmt, va_list ap)
{
    if ((int)level < current_level())
        return;
    if (!tls.registered) {
        tls.registered = 1;
        pthread_setspecific(log_key, &tls);
    }
    time_t now = time(NULL);
    if (now != tls.stamp_sec) {
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(tls.stamp, sizeof tls.stamp, "%y%m%d %H:%M:%S", &tm);
        tls.stamp_sec = now;
    }
    char line[LOG_LINE_MAX];
    int head = snprintf(line, sizeof line, "[%c %s %s] ", level_letter(level), tls.stamp,
                        category ? category : GALE_LOG_GENERAL);
    if (head < 0)
        return;
    size_t len = (size_t)head < sizeof line ? (size_t)head : sizeof line - 1;
    int body = vsnprintf(line + len, sizeof line - len, fmt, ap);
    if (body > 0)
        len += (size_t)body < sizeof line - len ? (size_t)body : sizeof line - len - 1;
    while (len > 0 && line[len - 1] == '\n')
        len--;
    line[len++] = '\n';

    if (tls.used + len > sizeof tls.buf)
        gale_log_flush();
    memcpy(tls.buf + tls.used, line, len);
    tls.used += len;
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

/* Static files (see web_static.h): the path checks, the open confined to the directory, the
 * validators and conditional requests, ranges, and the body sent with sendfile. */
#include "http/web_static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/errors.h"
#include "core/log.h"
#include "http/httpserver_internal.h"
#include "http/httputil.h"
#include "http/web_internal.h"

#define YEAR 31536000

struct static_state {
    int fd;    /* the file, while `open` */
    bool open; /* (a 405 finishes without static_get running) */
};

/* ---- settings ---- */

int gale_app_set_static_path(gale_app *app, const char *dir, const char *url_prefix)
{
    if (!url_prefix)
        url_prefix = "/static/";
    size_t pl = url_prefix ? strlen(url_prefix) : 0;
    if (!app || !dir || pl < 1 || url_prefix[0] != '/' || url_prefix[pl - 1] != '/' ||
        strpbrk(url_prefix, ".[]()*+?{}|\\^$"))
        return -EINVAL;
    struct gale__app_settings *s = gale__app_settings(app);
    if (s->static_set)
        return -EINVAL;
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int err = -errno;
        gale_log_error(GALE_LOG_GENERAL, "static path %s: %s", dir, gale_strerror(err));
        return err;
    }
    char *pattern = malloc(pl + 8);
    char *d = strdup(dir), *prefix = strdup(url_prefix);
    int rc = -ENOMEM;
    if (pattern && d && prefix) {
        snprintf(pattern, pl + 8, "^%s(.*)$", url_prefix);
        rc = gale_app_route(app, pattern, &gale_static_handler, NULL);
    }
    free(pattern);
    if (rc) {
        free(d);
        free(prefix);
        close(fd);
        return rc;
    }
    s->static_dir = d;
    s->static_prefix = prefix;
    s->static_fd = fd;
    s->static_set = true;
    return 0;
}

/* ---- the path ---- */

/* 0 when `path` (decoded) stays inside the directory by its spelling, else the status to answer:
 * 404 for a NUL, 403 for an absolute path or a "." or ".." segment. */
static int check_path(const char *path, size_t len)
{
    if (memchr(path, '\0', len))
        return 404;
    if (len && path[0] == '/')
        return 403;
    const char *p = path, *end = path + len;
    while (p <= end) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        size_t seg = (size_t)((slash ? slash : end) - p);
        if ((seg == 1 && p[0] == '.') || (seg == 2 && p[0] == '.' && p[1] == '.'))
            return 403;
        if (!slash)
            break;
        p = slash + 1;
    }
    return 0;
}

/* Opens `path` under the directory `dirfd`, never resolving to anything outside it (symlinks
 * included). Returns the fd or a negative errno (-EXDEV: it would leave the directory). */
static int open_beneath(int dirfd, const char *path)
{
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd >= 0)
        return (int)fd;
    if (errno != ENOSYS)
        return -errno;
    /* A kernel before 5.6: resolve by hand and compare the prefixes. */
    char dir[PATH_MAX], real[PATH_MAX], proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", dirfd);
    ssize_t n = readlink(proc, dir, sizeof dir - 1);
    if (n < 0)
        return -errno;
    dir[n] = '\0';
    int f = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (f < 0)
        return -errno;
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", f);
    ssize_t m = readlink(proc, real, sizeof real - 1);
    if (m < 0 || (size_t)m <= (size_t)n || memcmp(real, dir, (size_t)n) != 0 || real[n] != '/') {
        close(f);
        return m < 0 ? -errno : -EXDEV;
    }
    return f;
}

/* ---- headers ---- */

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html"},
        {"htm", "text/html"},
        {"css", "text/css"},
        {"js", "application/javascript"},
        {"mjs", "application/javascript"},
        {"json", "application/json"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"svg", "image/svg+xml"},
        {"ico", "image/x-icon"},
        {"webp", "image/webp"},
        {"txt", "text/plain"},
        {"wasm", "application/wasm"},
        {"woff2", "font/woff2"},
        {"woff", "font/woff"},
        {"xml", "application/xml"},
        {"pdf", "application/pdf"},
        {"map", "application/json"},
        {"mp4", "video/mp4"},
        {"webm", "video/webm"},
        {"avif", "image/avif"},
        {"csv", "text/csv"},
    };
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    if (dot) {
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    }
    return "application/octet-stream";
}

static long long mtime_ns(const struct stat *st)
{
    return (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
}

/* A strong validator: inode, size and modification time (to the nanosecond). */
static void make_etag(const struct stat *st, char out[64])
{
    snprintf(out, 64, "\"%llx-%llx-%llx\"", (unsigned long long)st->st_ino,
             (unsigned long long)st->st_size, (unsigned long long)mtime_ns(st));
}

/* An HTTP-date in any of the three forms recipients must accept (RFC 9110 5.6.7); -1 if none. */
static long long parse_date(const char *s, size_t len)
{
    char buf[64];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    static const char *const fmts[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                       "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < 3; i++) {
        struct tm tm = {0};
        const char *end = strptime(buf, fmts[i], &tm);
        if (end && *end == '\0')
            return (long long)timegm(&tm);
    }
    return -1;
}

/* If-None-Match or If-Match (`field`; every header, each a list) against `etag`: weak
 * comparison, or strong (`strong`: a W/ tag never matches). */
static bool tag_list_hits(gale_handler *h, const char *field, const char *etag, bool strong,
                          bool *present)
{
    size_t cursor = 0, elen = strlen(etag);
    const gale_http_header *hd;
    *present = false;
    while ((hd = gale_header_next(h, field, &cursor))) {
        *present = true;
        const char *p = hd->value.p, *end = p + hd->value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            if (p < end && *p == '*')
                return true;
            bool weak = end - p >= 2 && p[0] == 'W' && p[1] == '/';
            if (weak)
                p += 2;
            const char *q = p < end && *p == '"' ? memchr(p + 1, '"', (size_t)(end - p - 1)) : NULL;
            if (!q)
                break; /* malformed: no more tags can be read */
            if ((size_t)(q + 1 - p) == elen && memcmp(p, etag, elen) == 0 && !(strong && weak))
                return true;
            p = q + 1;
        }
    }
    return false;
}

/* RFC 9110 13.2.2 steps 1 and 2: If-Match (strong comparison, "*" for any) fails, or without it
 * If-Unmodified-Since is older than the file. */
static bool precondition_failed(gale_handler *h, const char *etag, long long mtime)
{
    bool im;
    if (tag_list_hits(h, "If-Match", etag, true, &im))
        return false;
    if (im)
        return true;
    size_t len;
    const char *ius = gale_get_header(h, "If-Unmodified-Since", &len);
    long long t = ius ? parse_date(ius, len) : -1;
    return t >= 0 && mtime > t;
}

/* Whether If-Range (when present) still holds: an ETag compared strongly, or the exact
 * Last-Modified date. */
static bool if_range_holds(gale_handler *h, const char *etag, long long mtime)
{
    size_t len;
    const char *v = gale_get_header(h, "If-Range", &len);
    if (!v)
        return true;
    v = gale_http_trim_ows(v, &len);
    if (len && (v[0] == '"' || v[0] == 'W'))
        return len == strlen(etag) && memcmp(v, etag, len) == 0;
    return parse_date(v, len) == mtime;
}

/* ---- ranges ---- */

enum { RANGE_NONE, RANGE_OK, RANGE_UNSATISFIABLE };

static bool digits(const char *p, const char *end, unsigned long long *v)
{
    if (p == end || end - p > 18)
        return false;
    *v = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        *v = *v * 10 + (unsigned long long)(*p - '0');
    }
    return true;
}

/* One "bytes=" range of a file of `size` bytes into [*start, *start + *len). Several ranges or
 * a malformed header: RANGE_NONE (the whole file). */
static int parse_range(const char *v, size_t len, unsigned long long size,
                       unsigned long long *start, unsigned long long *n)
{
    v = gale_http_trim_ows(v, &len);
    if (len < 6 || strncasecmp(v, "bytes=", 6) != 0 || memchr(v, ',', len))
        return RANGE_NONE;
    const char *p = v + 6, *end = v + len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    const char *dash = memchr(p, '-', (size_t)(end - p));
    if (!dash)
        return RANGE_NONE;
    unsigned long long a, b;
    if (dash == p) { /* -n: the last n bytes */
        if (!digits(dash + 1, end, &b))
            return RANGE_NONE;
        if (b == 0 || size == 0)
            return RANGE_UNSATISFIABLE;
        *start = b >= size ? 0 : size - b;
        *n = size - *start;
        return RANGE_OK;
    }
    if (!digits(p, dash, &a))
        return RANGE_NONE;
    if (dash + 1 == end) {
        b = size ? size - 1 : 0;
    } else if (!digits(dash + 1, end, &b) || b < a) {
        return RANGE_NONE;
    }
    if (a >= size)
        return RANGE_UNSATISFIABLE;
    if (b >= size)
        b = size - 1;
    *start = a;
    *n = b - a + 1;
    return RANGE_OK;
}

/* ---- the handler ---- */

static void file_sent(gale_stream *s, int status, void *arg)
{
    gale_handler *h = arg;
    struct static_state *st = gale_handler_state(h);
    close(st->fd);
    st->open = false;
    if (status < 0)
        gale_log_debug(GALE_LOG_GENERAL, "%s %s: file not sent: %s", gale_method(h), gale_uri(h),
                       gale_strerror(status));
    gale_finish(h);
}

static void static_done(gale_handler *h)
{
    struct static_state *st = gale_handler_state(h); /* NULL when answered before the method */
    if (st && st->open)
        close(st->fd);
    if (st)
        st->open = false;
}

/* Sends `n` bytes from `start` as the body: the headers now, then the file range. */
static void send_body(gale_handler *h, unsigned long long start, unsigned long long n)
{
    struct static_state *st = gale_handler_state(h);
    char cl[24];
    snprintf(cl, sizeof cl, "%llu", n);
    gale_set_header(h, "Content-Length", cl);
    if (strcmp(gale_method(h), "HEAD") == 0 || n == 0)
        return; /* finishes on return, without a body */
    gale_handler_async(h);
    int rc = gale_flush(h);
    if (rc == 0)
        rc = gale__http_response_sendfile(gale_handler_request(h), st->fd, (off_t)start, n,
                                          file_sent, h);
    if (rc < 0) {
        if (rc != -EPIPE)
            gale_log_error(GALE_LOG_GENERAL, "%s %s: cannot send the file: %s", gale_method(h),
                           gale_uri(h), gale_strerror(rc));
        gale_finish(h); /* shorter than its Content-Length: the connection closes */
    }
}

/* Opens the requested file into st->fd. Returns 0 or the status to answer. */
static int open_file(gale_handler *h, const char **rel, struct stat *sb)
{
    struct gale__app_settings *s = gale__app_settings(gale_handler_app(h));
    struct static_state *st = gale_handler_state(h);
    size_t plen = 0;
    const char *path = gale_path_arg(h, 0, &plen);
    if (!s->static_set)
        return 404;
    if (!path || plen == 0)
        return 403; /* the directory itself */
    int why = check_path(path, plen);
    if (why)
        return why;
    int fd = open_beneath(s->static_fd, path);
    if (fd < 0) {
        if (fd == -ENOENT || fd == -ENOTDIR || fd == -ENAMETOOLONG)
            return 404;
        if (fd == -EXDEV || fd == -ELOOP || fd == -EACCES || fd == -EPERM)
            return 403;
        gale_log_error(GALE_LOG_GENERAL, "%s %s: %s", gale_method(h), gale_uri(h),
                       gale_strerror(fd));
        return fd == -EMFILE || fd == -ENFILE ? 503 : 500;
    }
    st->fd = fd;
    st->open = true;
    if (fstat(fd, sb) < 0)
        return 500;
    if (S_ISDIR(sb->st_mode))
        return 403;
    if (!S_ISREG(sb->st_mode))
        return 404;
    *rel = path;
    return 0;
}

static void static_get(gale_handler *h)
{
    gale__handler_web(h)->no_compress = true;
    const char *path;
    struct stat sb;
    int why = open_file(h, &path, &sb);
    if (why) {
        gale_send_error(h, why);
        return;
    }
    char etag[64], date[40];
    make_etag(&sb, etag);
    gale_http_format_date((long long)sb.st_mtim.tv_sec, date);
    gale_set_header(h, "Content-Type", content_type(path));
    gale_set_header(h, "Last-Modified", date);
    gale_set_header(h, "ETag", etag);
    gale_set_header(h, "Accept-Ranges", "bytes");
    if (gale_get_argument(h, "v", NULL))
        gale_set_header(h, "Cache-Control", "public, max-age=31536000");

    if (precondition_failed(h, etag, (long long)sb.st_mtim.tv_sec)) {
        gale_send_error(h, 412);
        return;
    }
    bool inm;
    size_t len;
    const char *ims = gale_get_header(h, "If-Modified-Since", &len);
    long long since = ims ? parse_date(ims, len) : -1;
    if (tag_list_hits(h, "If-None-Match", etag, false, &inm) ||
        (!inm && since >= 0 && (long long)sb.st_mtim.tv_sec <= since)) {
        gale_set_status(h, 304);
        return;
    }
    unsigned long long size = (unsigned long long)sb.st_size, start = 0, n = size;
    const char *range =
        strcmp(gale_method(h), "GET") == 0 ? gale_get_header(h, "Range", &len) : NULL;
    int kind = range && if_range_holds(h, etag, (long long)sb.st_mtim.tv_sec)
                   ? parse_range(range, len, size, &start, &n)
                   : RANGE_NONE;
    char cr[80];
    if (kind == RANGE_UNSATISFIABLE) {
        snprintf(cr, sizeof cr, "bytes */%llu", size);
        gale_set_status(h, 416);
        gale_set_header(h, "Content-Range", cr);
        gale_clear_header(h, "Content-Type");
        send_body(h, 0, 0);
        return;
    }
    if (kind == RANGE_OK) {
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", start, start + n - 1, size);
        gale_set_status(h, 206);
        gale_set_header(h, "Content-Range", cr);
    }
    send_body(h, start, n);
}

const gale_handler_class gale_static_handler = {
    .get = static_get,
    .on_finish = static_done,
    .state_size = sizeof(struct static_state),
};

/* ---- static_url ---- */

/* FNV-1a over the file's bytes: a version that changes with the content. */
static int content_hash(int fd, char out[17])
{
    unsigned long long hsh = 1469598103934665603ULL;
    char buf[65536];
    off_t off = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            hsh = (hsh ^ (unsigned char)buf[i]) * 1099511628211ULL;
        off += n;
    }
    snprintf(out, 17, "%016llx", hsh);
    return 0;
}

/* The cached hash of `path`, computed again when the file changed. NULL when unreadable. */
static const char *version_of(struct gale__app_settings *s, const char *path)
{
    if (check_path(path, strlen(path)))
        return NULL;
    int fd = open_beneath(s->static_fd, path);
    struct stat sb;
    if (fd < 0)
        return NULL;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return NULL;
    }
    struct gale__static_version *v = s->versions;
    while (v && strcmp(v->path, path) != 0)
        v = v->next;
    if (!v) {
        v = calloc(1, sizeof *v + strlen(path) + 1);
        if (!v) {
            close(fd);
            return NULL;
        }
        strcpy(v->path, path);
        v->size = -1;
        v->next = s->versions;
        s->versions = v;
    }
    if (v->size != (long long)sb.st_size || v->mtime_ns != mtime_ns(&sb)) {
        v->size = -1;
        if (content_hash(fd, v->hash) == 0) {
            v->size = (long long)sb.st_size;
            v->mtime_ns = mtime_ns(&sb);
        }
    }
    close(fd);
    return v->size >= 0 ? v->hash : NULL;
}

const char *gale_static_url(gale_handler *h, const char *path)
{
    struct gale__app_settings *s = gale__app_settings(gale_handler_app(h));
    if (!s->static_set || !path)
        return NULL;
    while (*path == '/')
        path++;
    const char *ver = version_of(s, path);
    size_t n = strlen(s->static_prefix) + strlen(path) + 24;
    char *url = gale_handler_alloc(h, n);
    if (url)
        snprintf(url, n, ver ? "%s%s?v=%s" : "%s%s", s->static_prefix, path, ver);
    return url;
}

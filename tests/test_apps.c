/* Black-box tests of the command lines of apps/hello, demo, echo and fetch (all through
 * core/options): --help and --version on stdout with exit 0, --port=N, an unknown option or a bad
 * value naming itself with exit 2, a taken port reported with a non-zero exit, hello --quiet,
 * --unix-socket, --xheaders and hello --processes (a listening socket per worker, both serving, a
 * dead worker restarted, SIGTERM ending all). Each test runs the real binaries and talks to them
 * over real sockets. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/version.h"
#include "testutil.h"

struct run {
    int status; /* exit status, or 128 + signal */
    char *out, *err;
};

static char *slurp(FILE *f)
{
    fflush(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(buf);
    size_t len = fread(buf, 1, (size_t)n, f);
    buf[len] = '\0';
    fclose(f);
    return buf;
}

/* Starts build/bin/<name> with argv (argv[0] ignored, NULL-terminated), stdout and stderr going
 * to `out` and `err`. Returns the pid. */
static pid_t spawn(const char *name, char *const argv[], FILE *out, FILE *err)
{
    pid_t pid = test_spawn_app(name, argv, fileno(out), fileno(err));
    ck_assert_int_ge(pid, 0);
    return pid;
}

static int wait_status(pid_t pid)
{
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs an app to its end (10 s at most) and collects its output. */
static struct run run_app(const char *name, char *const argv[])
{
    FILE *out = tmpfile(), *err = tmpfile();
    ck_assert(out && err);
    pid_t pid = spawn(name, argv, out, err);
    int st = 0;
    for (int i = 0; i < 1000 && waitpid(pid, &st, WNOHANG) == 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (kill(pid, 0) == 0 && waitpid(pid, &st, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        ck_abort_msg("%s did not exit", name);
    }
    struct run r = {.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st)};
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

static int connect_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Waits until a connection to `port` (TCP) or `path` (unix) succeeds while `pid` lives. */
static bool wait_listening(pid_t pid, int port, const char *path)
{
    for (int i = 0; i < 1000; i++) {
        int fd = path ? connect_unix(path) : test_connect_tcp(port);
        if (fd >= 0) {
            close(fd);
            return true;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return false;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* GET `target` over a fresh HTTP/1.0 connection (to `path` if not NULL, else TCP `port`) with
 * `extra` header lines; returns the whole response (malloc'ed). */
static char *http_get(int port, const char *path, const char *target, const char *extra)
{
    int fd = path ? connect_unix(path) : test_connect_tcp(port);
    ck_assert_int_ge(fd, 0);
    test_set_timeouts(fd, 10);
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: t\r\n%s\r\n", target, extra ? extra : "");
    ck_assert_int_eq(test_write_all(fd, req, strlen(req)), 0);
    size_t len;
    char *resp = test_read_all(fd, 65536, &len);
    close(fd);
    ck_assert_ptr_nonnull(resp);
    return resp;
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    ck_assert_ptr_nonnull(p);
    return p + 4;
}

/* SIGTERM; the app must exit 0. */
static void stop_cleanly(const char *name, pid_t pid)
{
    kill(pid, SIGTERM);
    int st = wait_status(pid);
    ck_assert_msg(st == 0, "%s exited %d after SIGTERM", name, st);
}

static const char *const all_apps[] = {"hello", "demo", "echo", "fetch"};

START_TEST(test_apps_help_prints_full_usage_to_stdout)
{
    const char *name = all_apps[_i];
    char *argv[] = {"x", "--help", NULL};
    struct run r = run_app(name, argv);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.err, "");
    char want[64];
    snprintf(want, sizeof want, "usage: %s [options]", name);
    ck_assert_msg(strncmp(r.out, want, strlen(want)) == 0, "%s", r.out);
    ck_assert_ptr_nonnull(strstr(r.out, "  --version "));
    ck_assert_ptr_nonnull(strstr(r.out, "  -h, --help "));
    if (strcmp(name, "fetch") == 0) {
        ck_assert_ptr_nonnull(strstr(r.out, "usage: fetch [options] URL...\n"));
        ck_assert_ptr_nonnull(strstr(r.out, "  -X, --request METHOD"));
        ck_assert_ptr_nonnull(strstr(r.out, "  -H, --header 'Name: value'"));
        ck_assert_ptr_nonnull(strstr(r.out, "  -d, --data BODY"));
        ck_assert_ptr_nonnull(strstr(r.out, "  -i, --include"));
        ck_assert_ptr_nonnull(strstr(r.out, "in seconds (default 20)"));
        ck_assert_ptr_nonnull(strstr(r.out, "--no-redirects"));
        ck_assert_ptr_nonnull(strstr(r.out, "(default 10)")); /* --max-clients */
    } else {
        ck_assert_ptr_nonnull(strstr(r.out, "  --port N "));
        ck_assert_ptr_nonnull(strstr(r.out, "  --processes N "));
        const char *port = strcmp(name, "hello") == 0  ? "(default 8879)"
                           : strcmp(name, "demo") == 0 ? "(default 8888)"
                                                       : "(default 10000)";
        ck_assert_ptr_nonnull(strstr(r.out, port));
    }
    if (strcmp(name, "hello") == 0 || strcmp(name, "demo") == 0) {
        ck_assert_ptr_nonnull(strstr(r.out, "  --unix-socket PATH "));
        ck_assert_ptr_nonnull(strstr(r.out, "  --xheaders "));
        ck_assert_ptr_nonnull(strstr(r.out, "  --quiet, --no-access-log\n"));
    }
    if (strcmp(name, "demo") == 0) {
        ck_assert_ptr_nonnull(strstr(r.out, "  --idle-timeout S "));
        ck_assert_ptr_nonnull(strstr(r.out, "  --max-body BYTES "));
        ck_assert_ptr_nonnull(strstr(r.out, "(default 1048576)"));
        ck_assert_ptr_nonnull(strstr(r.out, "  --max-connections N"));
        ck_assert_ptr_nonnull(strstr(r.out, "  --shutdown-timeout S"));
        ck_assert_ptr_nonnull(strstr(r.out, "GET  /relay?path=P"));
        ck_assert_ptr_nonnull(strstr(r.out, "GET  /ip "));
    }
    if (strcmp(name, "echo") == 0)
        ck_assert_ptr_nonnull(strstr(r.out, "  --address A "));
    run_free(&r);
    /* -h is the same. */
    char *argv_h[] = {"x", "-h", NULL};
    r = run_app(name, argv_h);
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(strncmp(r.out, want, strlen(want)) == 0, "%s", r.out);
    run_free(&r);
}
END_TEST

START_TEST(test_apps_version_names_gale)
{
    const char *name = all_apps[_i];
    char *argv[] = {"x", "--version", NULL};
    struct run r = run_app(name, argv);
    ck_assert_int_eq(r.status, 0);
    char want[64];
    snprintf(want, sizeof want, "%s (gale %s)\n", name, GALE_VERSION_STRING);
    ck_assert_str_eq(r.out, want);
    ck_assert_str_eq(r.err, "");
    run_free(&r);
}
END_TEST

START_TEST(test_apps_unknown_option_exits_2_naming_it)
{
    const char *name = all_apps[_i];
    char *argv[] = {"x", "--bogus", "http://127.0.0.1:1/", NULL};
    struct run r = run_app(name, argv);
    ck_assert_int_eq(r.status, 2);
    ck_assert_str_eq(r.out, "");
    char want[128];
    snprintf(want, sizeof want, "%s: unknown option '--bogus'\ntry '%s --help'", name, name);
    ck_assert_msg(strstr(r.err, want), "stderr: %s", r.err);
    run_free(&r);
}
END_TEST

START_TEST(test_apps_bad_values_exit_2_naming_the_option)
{
    struct {
        const char *app;
        char *argv[5];
        const char *msg;
    } cases[] = {
        {"hello", {"x", "--port", "http", NULL}, "invalid value 'http' for --port"},
        {"hello", {"x", "--port=70000", NULL}, "value '70000' for --port is out of range"},
        {"hello", {"x", "--port", NULL}, "option --port needs a value (N)"},
        {"hello", {"x", "--quiet=perhaps", NULL}, "invalid value 'perhaps' for --quiet"},
        {"hello", {"x", "stray", NULL}, "unexpected argument 'stray'"},
        {"hello", {"x", "--unix-socket", "/tmp/x", "--processes=2", NULL}, "one process per"},
        {"demo", {"x", "--idle-timeout", "0", NULL}, "value '0' for --idle-timeout is out of"},
        {"demo", {"x", "--max-body=-1", NULL}, "invalid value '-1' for --max-body"},
        {"echo", {"x", "--processes", "-3", NULL}, "value '-3' for --processes is out of range"},
        {"fetch",
         {"x", "--timeout", "-1", "http://127.0.0.1:1/", NULL},
         "value '-1' for --timeout is out of range"},
        {"fetch",
         {"x", "-H", "nocolon", "http://127.0.0.1:1/", NULL},
         "invalid value 'nocolon' for -H (want 'Name: value')"},
        {"fetch", {"x", "-i", NULL}, "fetch: no URL given"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct run r = run_app(cases[i].app, cases[i].argv);
        ck_assert_msg(r.status == 2, "%s case %zu: exit %d", cases[i].app, i, r.status);
        ck_assert_msg(strstr(r.err, cases[i].msg), "%s case %zu: stderr %s", cases[i].app, i,
                      r.err);
        ck_assert_ptr_nonnull(strstr(r.err, "--help"));
        ck_assert_str_eq(r.out, "");
        run_free(&r);
    }
}
END_TEST

START_TEST(test_apps_port_equals_syntax_serves)
{
    const char *name = all_apps[_i]; /* hello, demo, echo */
    int port = test_free_port();
    ck_assert_int_gt(port, 0);
    char opt[32];
    snprintf(opt, sizeof opt, "--port=%d", port);
    char *argv[] = {"x", opt, NULL};
    FILE *out = tmpfile(), *err = tmpfile();
    pid_t pid = spawn(name, argv, out, err);
    ck_assert_msg(wait_listening(pid, port, NULL), "%s not listening on %d", name, port);
    if (strcmp(name, "echo") == 0) {
        int fd = test_connect_tcp(port);
        test_set_timeouts(fd, 10);
        ck_assert_int_eq(test_write_all(fd, "ping", 4), 0);
        char buf[4];
        ck_assert_int_eq(recv(fd, buf, 4, MSG_WAITALL), 4);
        ck_assert(memcmp(buf, "ping", 4) == 0);
        close(fd);
    } else {
        char *resp = http_get(port, NULL, "/", NULL);
        ck_assert_str_eq(body_of(resp), "Hello, world!");
        free(resp);
    }
    stop_cleanly(name, pid);
    free(slurp(out));
    free(slurp(err));
}
END_TEST

START_TEST(test_apps_port_taken_exits_nonzero_with_message)
{
    const char *name = all_apps[_i]; /* hello, demo, echo */
    int port;
    int held = test_listen_tcp(&port);
    char pbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d", port);
    char *argv[] = {"x", "--port", pbuf, NULL};
    struct run r = run_app(name, argv); /* a server that kept running would fail here */
    ck_assert_int_eq(r.status, 1);
    char want[128];
    snprintf(want, sizeof want, "%s: cannot listen on port %d: Address already in use\n", name,
             port);
    ck_assert_msg(strstr(r.err, want), "stderr: %s", r.err);
    run_free(&r);
    /* The message does not depend on the log level. */
    setenv("GALE_LOG_LEVEL", "none", 1);
    r = run_app(name, argv);
    unsetenv("GALE_LOG_LEVEL");
    ck_assert_int_eq(r.status, 1);
    ck_assert_msg(strstr(r.err, want), "stderr: %s", r.err);
    run_free(&r);
    close(held);
}
END_TEST

/* Starts hello with `opt` (NULL: none) on a free port, makes two requests, stops it, returns its
 * stderr. */
static char *hello_log(const char *opt)
{
    int port = test_free_port();
    char pbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d", port);
    char *argv[] = {"x", "--port", pbuf, (char *)opt, NULL};
    FILE *out = tmpfile(), *err = tmpfile();
    pid_t pid = spawn("hello", argv, out, err);
    ck_assert(wait_listening(pid, port, NULL));
    for (int i = 0; i < 2; i++) {
        char *resp = http_get(port, NULL, "/", NULL);
        ck_assert_str_eq(body_of(resp), "Hello, world!");
        free(resp);
    }
    stop_cleanly("hello", pid);
    free(slurp(out));
    return slurp(err);
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

START_TEST(test_apps_hello_quiet_drops_access_log)
{
    char *log = hello_log(NULL);
    ck_assert_msg(count(log, " access] 200 GET / (127.0.0.1)") == 2, "%s", log);
    free(log);
    log = hello_log("--quiet");
    ck_assert_msg(count(log, " access]") == 0, "%s", log);
    ck_assert_ptr_nonnull(strstr(log, "listening on port")); /* only the access log goes */
    free(log);
    log = hello_log("--no-access-log");
    ck_assert_msg(count(log, " access]") == 0, "%s", log);
    free(log);
}
END_TEST

START_TEST(test_apps_unix_socket_serves_and_is_removed)
{
    const char *name = _i == 0 ? "hello" : "demo";
    char dir[] = "/tmp/gale-apps-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/%s.sock", dir, name);
    char *argv[] = {"x", "--unix-socket", path, NULL};
    FILE *out = tmpfile(), *err = tmpfile();
    pid_t pid = spawn(name, argv, out, err);
    ck_assert_msg(wait_listening(pid, 0, path), "%s not listening on %s", name, path);
    char *resp = http_get(0, path, "/", NULL);
    ck_assert_msg(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", resp);
    ck_assert_str_eq(body_of(resp), "Hello, world!");
    free(resp);
    /* A second server on the same path is refused and leaves the first one serving. */
    struct run r = run_app(name, argv);
    ck_assert_int_eq(r.status, 1);
    char want[256];
    snprintf(want, sizeof want, "%s: cannot listen on unix socket %s: Address already in use\n",
             name, path);
    ck_assert_msg(strstr(r.err, want), "stderr: %s", r.err);
    run_free(&r);
    resp = http_get(0, path, "/", NULL);
    ck_assert_str_eq(body_of(resp), "Hello, world!");
    free(resp);
    stop_cleanly(name, pid);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), -1); /* the socket file went with the server */
    ck_assert_int_eq(errno, ENOENT);
    char *log = slurp(err);
    ck_assert_msg(strstr(log, "listening on unix socket"), "%s", log);
    free(log);
    free(slurp(out));
    rmdir(dir);
}
END_TEST

START_TEST(test_apps_demo_xheaders_trusts_proxy_address)
{
    int port = test_free_port();
    char pbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d", port);
    const char *hdr = "X-Real-IP: 10.1.2.3\r\n";
    /* Without --xheaders the header is ignored: /ip is the peer. */
    char *argv[] = {"x", "--port", pbuf, NULL, NULL};
    FILE *out = tmpfile(), *err = tmpfile();
    pid_t pid = spawn("demo", argv, out, err);
    ck_assert(wait_listening(pid, port, NULL));
    char *resp = http_get(port, NULL, "/ip", hdr);
    ck_assert_str_eq(body_of(resp), "127.0.0.1");
    free(resp);
    stop_cleanly("demo", pid);
    argv[3] = "--xheaders";
    pid = spawn("demo", argv, out, err);
    ck_assert(wait_listening(pid, port, NULL));
    resp = http_get(port, NULL, "/ip", hdr);
    ck_assert_str_eq(body_of(resp), "10.1.2.3");
    free(resp);
    resp = http_get(port, NULL, "/ip", "X-Forwarded-For: 10.9.9.9\r\n");
    ck_assert_str_eq(body_of(resp), "10.9.9.9");
    free(resp);
    resp = http_get(port, NULL, "/ip", NULL);
    ck_assert_str_eq(body_of(resp), "127.0.0.1");
    free(resp);
    stop_cleanly("demo", pid);
    char *log = slurp(err);
    ck_assert_msg(strstr(log, "access] 200 GET /ip (10.1.2.3)"), "%s", log);
    free(log);
    free(slurp(out));
}
END_TEST

START_TEST(test_apps_fetch_accepts_timeout_equals)
{
    int port = test_free_port();
    char pbuf[16], url[64];
    snprintf(pbuf, sizeof pbuf, "%d", port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/user/7", port);
    char *dargv[] = {"x", "--port", pbuf, NULL};
    FILE *out = tmpfile(), *err = tmpfile();
    pid_t pid = spawn("demo", dargv, out, err);
    ck_assert(wait_listening(pid, port, NULL));
    char *argv[] = {"x", "--timeout=5", "--request=GET", url, NULL};
    struct run r = run_app("fetch", argv);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, "user 7");
    run_free(&r);
    stop_cleanly("demo", pid);
    free(slurp(out));
    free(slurp(err));
}
END_TEST

/* ---- hello --processes ---- */

/* The inodes of the TCP sockets on local port `port` in `state` (hex, /proc/net/tcp: "01"
 * established, "0A" listening), IPv4 and IPv6. Returns how many (at most `max`). */
static int tcp_inodes(int port, const char *state, unsigned long *out, int max)
{
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int n = 0;
    for (int f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        if (!fp)
            continue;
        char line[512];
        while (fgets(line, sizeof line, fp) && n < max) {
            char local[128], st[8];
            unsigned long inode;
            if (sscanf(line, " %*d: %127s %*s %7s %*s %*s %*s %*s %*s %lu", local, st, &inode) != 3)
                continue;
            const char *colon = strrchr(local, ':');
            if (colon && strtol(colon + 1, NULL, 16) == port && strcmp(st, state) == 0)
                out[n++] = inode;
        }
        fclose(fp);
    }
    return n;
}

/* How many of `pid`'s descriptors are sockets among `inodes`; `*first` gets the first found. */
static int sockets_among(pid_t pid, const unsigned long *inodes, int n, unsigned long *first)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[400], link[64];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ssize_t len = readlink(path, link, sizeof link - 1);
        unsigned long inode;
        if (len <= 0)
            continue;
        link[len] = '\0';
        if (sscanf(link, "socket:[%lu]", &inode) != 1)
            continue;
        for (int i = 0; i < n; i++) {
            if (inodes[i] == inode) {
                if (count++ == 0 && first)
                    *first = inode;
                break;
            }
        }
    }
    closedir(d);
    return count;
}

#define HELLO_CONNS 32

/* Opens HELLO_CONNS keep-alive connections to hello on `port`, each answered once. */
static void open_served(int port, int *fds)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";
    for (int i = 0; i < HELLO_CONNS; i++) {
        fds[i] = test_connect_tcp(port);
        ck_assert_int_ge(fds[i], 0);
        test_set_timeouts(fds[i], 10);
        ck_assert_int_eq(test_write_all(fds[i], req, sizeof req - 1), 0);
        char buf[1024] = "";
        size_t got = 0;
        while (!strstr(buf, "Hello, world!")) {
            ssize_t r = read(fds[i], buf + got, sizeof buf - 1 - got);
            ck_assert_int_gt(r, 0);
            got += (size_t)r;
            buf[got] = '\0';
        }
        ck_assert(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
    }
}

static pid_t start_hello_processes(int port, FILE *err)
{
    char pbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d", port);
    char *argv[] = {"hello", "--port", pbuf, "--processes", "2", NULL};
    pid_t pid = spawn("hello", argv, stdout, err);
    ck_assert(wait_listening(pid, port, NULL));
    return pid;
}

/* Waits until `parent` has `n` children again (a restart takes a moment). */
static int wait_children(pid_t parent, pid_t *out, int n)
{
    int got = 0;
    for (int i = 0; i < 500 && (got = test_children_of(parent, out, 8)) != n; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return got;
}

static void wait_gone(pid_t pid)
{
    for (int i = 0; i < 500 && kill(pid, 0) == 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    ck_assert_msg(kill(pid, 0) < 0, "process %d still runs", (int)pid);
}

START_TEST(test_apps_hello_processes_each_worker_listens_and_serves)
{
    int port = test_free_port();
    FILE *err = tmpfile();
    pid_t pid = start_hello_processes(port, err);
    pid_t w[8];
    ck_assert_int_eq(wait_children(pid, w, 2), 2);

    /* Each worker listens on a socket of its own; the supervisor listens on none. */
    unsigned long listening[16], l0 = 0, l1 = 0;
    int nl = tcp_inodes(port, "0A", listening, 16);
    ck_assert_int_ge(sockets_among(w[0], listening, nl, &l0), 1);
    ck_assert_int_ge(sockets_among(w[1], listening, nl, &l1), 1);
    ck_assert_uint_ne(l0, l1);
    ck_assert_int_eq(sockets_among(pid, listening, nl, NULL), 0);

    /* The kernel spreads connections over the two: 32 land on one alone with odds 2^-31. */
    int fds[HELLO_CONNS];
    open_served(port, fds);
    unsigned long est[256];
    int ne = tcp_inodes(port, "01", est, 256);
    int s0 = sockets_among(w[0], est, ne, NULL), s1 = sockets_among(w[1], est, ne, NULL);
    ck_assert_msg(s0 > 0 && s1 > 0 && s0 + s1 == HELLO_CONNS,
                  "connections per worker: %d and %d of %d", s0, s1, HELLO_CONNS);
    for (int i = 0; i < HELLO_CONNS; i++)
        close(fds[i]);

    /* SIGTERM to the supervisor stops every process, cleanly. */
    stop_cleanly("hello", pid);
    wait_gone(w[0]);
    wait_gone(w[1]);
    free(slurp(err));
}
END_TEST

START_TEST(test_apps_hello_processes_restarts_a_dead_worker)
{
    int port = test_free_port();
    FILE *err = tmpfile();
    pid_t pid = start_hello_processes(port, err);
    pid_t w[8];
    ck_assert_int_eq(wait_children(pid, w, 2), 2);
    ck_assert_int_eq(kill(w[0], SIGKILL), 0);
    wait_gone(w[0]);
    pid_t now[8];
    ck_assert_int_eq(wait_children(pid, now, 2), 2);
    ck_assert(now[0] != w[0] && now[1] != w[0]);
    /* The new worker listens again, and every connection is answered. */
    for (int i = 0; i < 500 && test_children_of(pid, now, 8) == 2; i++) {
        unsigned long listening[16];
        int nl = tcp_inodes(port, "0A", listening, 16);
        if (sockets_among(now[0], listening, nl, NULL) &&
            sockets_among(now[1], listening, nl, NULL))
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    int fds[HELLO_CONNS];
    open_served(port, fds);
    for (int i = 0; i < HELLO_CONNS; i++)
        close(fds[i]);
    stop_cleanly("hello", pid);
    char *log = slurp(err);
    char want[64];
    snprintf(want, sizeof want, "(pid %d) killed by signal %d", (int)w[0], SIGKILL);
    ck_assert_msg(strstr(log, want), "no line saying %s in:\n%s", want, log);
    free(log);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("apps");
    TCase *tc = tcase_create("command_line");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_apps_help_prints_full_usage_to_stdout, 0, 4);
    tcase_add_loop_test(tc, test_apps_version_names_gale, 0, 4);
    tcase_add_loop_test(tc, test_apps_unknown_option_exits_2_naming_it, 0, 4);
    tcase_add_test(tc, test_apps_bad_values_exit_2_naming_the_option);
    suite_add_tcase(s, tc);
    TCase *tl = tcase_create("listening");
    tcase_set_timeout(tl, 60);
    tcase_add_loop_test(tl, test_apps_port_equals_syntax_serves, 0, 3);
    tcase_add_loop_test(tl, test_apps_port_taken_exits_nonzero_with_message, 0, 3);
    tcase_add_test(tl, test_apps_hello_quiet_drops_access_log);
    tcase_add_loop_test(tl, test_apps_unix_socket_serves_and_is_removed, 0, 2);
    tcase_add_test(tl, test_apps_demo_xheaders_trusts_proxy_address);
    tcase_add_test(tl, test_apps_fetch_accepts_timeout_equals);
    suite_add_tcase(s, tl);
    TCase *tp = tcase_create("processes");
    tcase_set_timeout(tp, 60);
    tcase_add_test(tp, test_apps_hello_processes_each_worker_listens_and_serves);
    tcase_add_test(tp, test_apps_hello_processes_restarts_a_dead_worker);
    suite_add_tcase(s, tp);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}

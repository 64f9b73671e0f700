#include "testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct wait_state {
    bool (*pred)(void *);
    void *arg;
    bool done;
    bool timed_out;
    gale_timeout tick;
};

static void wait_tick(gale_loop *loop, void *arg)
{
    struct wait_state *w = arg;
    w->tick = 0;
    if (w->pred(w->arg)) {
        w->done = true;
        gale_loop_stop(loop);
        return;
    }
    gale_loop_call_later(loop, 0.001, wait_tick, w, &w->tick);
}

static void wait_timeout(gale_loop *loop, void *arg)
{
    struct wait_state *w = arg;
    w->timed_out = true;
    gale_loop_stop(loop);
}

bool test_wait_until(gale_loop *loop, bool (*pred)(void *arg), void *arg, double timeout)
{
    if (pred(arg))
        return true;
    struct wait_state w = {.pred = pred, .arg = arg};
    gale_timeout limit = 0;
    gale_loop_call_later(loop, 0, wait_tick, &w, &w.tick);
    gale_loop_call_later(loop, timeout, wait_timeout, &w, &limit);
    /* run() may also return early if some callback under test stops the loop: keep going. */
    while (!w.done && !w.timed_out)
        gale_loop_run(loop);
    /* Neither timer may outlive this stack frame. */
    gale_loop_remove_timeout(loop, limit);
    gale_loop_remove_timeout(loop, w.tick);
    return w.done || pred(arg);
}

struct thread_run {
    void (*fn)(void *);
    void *arg;
    atomic_bool done;
};

static void *thread_main(void *arg)
{
    struct thread_run *t = arg;
    t->fn(t->arg);
    atomic_store(&t->done, true);
    return NULL;
}

static bool thread_done(void *arg) { return atomic_load(&((struct thread_run *)arg)->done); }

bool test_run_thread(gale_loop *loop, void (*fn)(void *arg), void *arg, double timeout)
{
    /* On the heap: on a timeout the thread outlives this frame. */
    struct thread_run *t = calloc(1, sizeof *t);
    pthread_t th;
    if (!t)
        return false;
    t->fn = fn;
    t->arg = arg;
    if (pthread_create(&th, NULL, thread_main, t) != 0) {
        free(t);
        return false;
    }
    if (!test_wait_until(loop, thread_done, t, timeout)) {
        pthread_detach(th);
        return false;
    }
    pthread_join(th, NULL);
    free(t);
    return true;
}

static bool never(void *arg) { return false; }

void test_run_for(gale_loop *loop, double seconds) { test_wait_until(loop, never, NULL, seconds); }

int test_listen_tcp(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, 128) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sin.sin_port);
    return fd;
}

int test_connect_tcp(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        close(fd);
        return -1;
    }
    test_set_timeouts(fd, 30);
    return fd;
}

static bool same_endpoint(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return false;
}

/* Whether `fd` is the socket whose own address is `local` and whose peer is `remote`. */
static bool is_endpoint(int fd, const struct sockaddr_storage *local,
                        const struct sockaddr_storage *remote)
{
    struct sockaddr_storage a, b;
    socklen_t la = sizeof a, lb = sizeof b;
    return getsockname(fd, (struct sockaddr *)&a, &la) == 0 && same_endpoint(&a, local) &&
           getpeername(fd, (struct sockaddr *)&b, &lb) == 0 && same_endpoint(&b, remote);
}

/* The open descriptor other than `skip` that is the socket (local, remote), or -1. Walks
 * /proc/self/fd: the descriptor limit may be large, the open descriptors are few. */
static int find_endpoint(int skip, const struct sockaddr_storage *local,
                         const struct sockaddr_storage *remote)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int found = -1;
    struct dirent *e;
    while (found < 0 && (e = readdir(d)) != NULL) {
        char *end;
        long i = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || i == skip || i == dirfd(d))
            continue;
        if (is_endpoint((int)i, local, remote))
            found = (int)i;
    }
    closedir(d);
    return found;
}

bool test_wait_peer_read(int fd, double timeout)
{
    struct sockaddr_storage mine, theirs;
    socklen_t lm = sizeof mine, lt = sizeof theirs;
    if (getsockname(fd, (struct sockaddr *)&mine, &lm) < 0 ||
        getpeername(fd, (struct sockaddr *)&theirs, &lt) < 0)
        return false;
    int peer = -1;
    int64_t end = gale_time_ns() + (int64_t)(timeout * 1e9);
    do {
        /* The peer is found (again: its owner may close it and the number be reused) by its
         * addresses, which are ours mirrored; it may not be accepted yet. */
        if (peer < 0 || !is_endpoint(peer, &theirs, &mine)) {
            peer = -1;
            peer = find_endpoint(fd, &theirs, &mine);
        }
        /* Our unacknowledged bytes at 0: the peer's TCP has taken them all into its queue (not
         * still in its backlog); its queue at 0: its owner has read them. */
        int unacked = -1, unread = -1;
        if (peer >= 0 && ioctl(fd, SIOCOUTQ, &unacked) == 0 && unacked == 0 &&
            ioctl(peer, SIOCINQ, &unread) == 0 && unread == 0)
            return true;
        /* Or the peer has closed the connection: it is done with what it read. */
        struct pollfd pfd = {.fd = fd, .events = POLLRDHUP};
        if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
            return true;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    } while (gale_time_ns() < end);
    return false;
}

void test_set_timeouts(int fd, double seconds)
{
    struct timeval tv = {.tv_sec = (time_t)seconds,
                         .tv_usec = (suseconds_t)((seconds - (time_t)seconds) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int test_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

char *test_read_all(int fd, size_t max, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf && n < max) {
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        size_t want = cap - n < max - n ? cap - n : max - n;
        ssize_t r = recv(fd, buf + n, want, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    if (buf)
        buf[n] = '\0';
    *len = n;
    return buf;
}

const char *test_app_path(const char *name)
{
    static char path[4096];
    const char *dir = getenv("GALE_BIN_DIR");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "build/bin", name);
    return path;
}

/* Binds `port` on the wildcard address of `family` (SO_REUSEADDR, as the apps do). */
static bool port_bindable(int family, int port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return family == AF_INET6; /* no IPv6 on this machine: nothing to collide with */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        len = sizeof *sin;
    } else {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        len = sizeof *sin6;
    }
    int rc = bind(fd, (struct sockaddr *)&ss, len);
    int err = errno;
    close(fd);
    return rc == 0 || (family == AF_INET6 && err == EADDRNOTAVAIL);
}

/* A port for an app to listen on. Chosen below the kernel's ephemeral range, because the
 * outgoing connections of suites running alongside take their local ports from that range and
 * could grab a port picked from it between this check and the app's bind. */
int test_free_port(void)
{
    int lo = 32768;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d", &lo) != 1)
            lo = 32768;
        fclose(f);
    }
    int base = lo > 12000 ? lo - 10000 : 1024, span = lo > 12000 ? 10000 : lo - 1024;
    if (span <= 0)
        return -1;
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL);
    for (int i = 0; i < 200; i++) {
        int port = base + (int)(rand_r(&seed) % (unsigned)span);
        if (port_bindable(AF_INET, port) && port_bindable(AF_INET6, port))
            return port;
    }
    return -1;
}

pid_t test_spawn_app(const char *name, char *const argv[], int out_fd, int err_fd)
{
    const char *path = test_app_path(name);
    pid_t pid = fork();
    if (pid != 0)
        return pid < 0 ? -1 : pid;
    if (out_fd >= 0)
        dup2(out_fd, 1);
    if (err_fd >= 0)
        dup2(err_fd, 2);
    char *args[64];
    int i = 0;
    args[i++] = (char *)path;
    for (int j = 1; argv && argv[j] && i < 63; j++)
        args[i++] = argv[j];
    args[i] = NULL;
    execv(path, args);
    _exit(127);
}

pid_t test_start_app(const char *name, char *const argv[], int port)
{
    pid_t pid = test_spawn_app(name, argv, -1, -1);
    if (pid < 0)
        return -1;
    for (int i = 0; i < 1000; i++) {
        int fd = test_connect_tcp(port);
        if (fd >= 0) {
            close(fd);
            return pid;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return -1;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

int test_stop_app(pid_t pid)
{
    int status = 0;
    kill(pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return status;
}

/* The pids of `parent`'s children, from /proc/PID/stat (field 4, after the ")" of the name). */
int test_children_of(pid_t parent, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        char path[300], buf[512];
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *rp = strrchr(buf, ')');
        int ppid;
        if (rp && sscanf(rp + 2, "%*c %d", &ppid) == 1 && ppid == parent)
            out[n++] = (pid_t)atoi(e->d_name);
    }
    closedir(d);
    return n;
}

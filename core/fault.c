/* The fault plan behind net/fault_internal.h's wrappers. Compiled in every build; without
 * GALE_FAULT_INJECTION only the API stubs remain (they answer -ENOTSUP). */
#include "core/fault.h"

#include <errno.h>

#ifndef GALE_FAULT_INJECTION

bool gale_fault_enabled(void) { return false; }
int gale_fault_configure(const char *spec) { return -ENOTSUP; }
int gale_fault_seed(uint64_t seed) { return -ENOTSUP; }
int gale_fault_script(gale_fault_call call, unsigned long nth, gale_fault_kind kind)
{
    return -ENOTSUP;
}
void gale_fault_reset(void) {}
unsigned long gale_fault_calls(gale_fault_call call) { return 0; }
unsigned long gale_fault_injected(gale_fault_call call, gale_fault_kind kind) { return 0; }

#else

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/fault_internal.h"
#include "core/log.h"

#define MAX_SCRIPTS 64
#define MAX_SHORT_IOV 64

struct script {
    gale_fault_call call;
    unsigned long at; /* fires when the call counter reaches this */
    gale_fault_kind kind;
};

struct plan {
    double prob[GALE_FAULT_NCALLS][GALE_FAULT_NKINDS];
    struct script scripts[MAX_SCRIPTS];
    size_t nscripts;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool loaded;
static struct plan plan;
static uint64_t rng = 1;
static unsigned long calls[GALE_FAULT_NCALLS];
static unsigned long injected[GALE_FAULT_NCALLS][GALE_FAULT_NKINDS];
static _Thread_local bool last_injected;

static const char *const call_names[GALE_FAULT_NCALLS] = {"recv", "send", "accept", "alloc"};
static const char *const kind_names[GALE_FAULT_NKINDS] = {"none",       "short",  "eagain", "eintr",
                                                          "econnreset", "enomem", "emfile"};

static bool allowed(gale_fault_call call, gale_fault_kind kind)
{
    switch (call) {
    case GALE_FAULT_RECV:
    case GALE_FAULT_SEND: return kind >= GALE_FAULT_SHORT && kind <= GALE_FAULT_ENOMEM;
    case GALE_FAULT_ACCEPT: return kind >= GALE_FAULT_EAGAIN && kind <= GALE_FAULT_EMFILE;
    case GALE_FAULT_ALLOC: return kind == GALE_FAULT_ENOMEM;
    default: return false;
    }
}

/* splitmix64: small, fast, and every seed (0 included) gives a good sequence. */
static uint64_t next_random(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int lookup(const char *s, size_t len, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == len && strncasecmp(s, names[i], len) == 0)
            return i;
    return -1;
}

/* One "kind=prob" or "kind@nth" item for `call`. */
static int parse_item(struct plan *p, gale_fault_call call, const char *s, size_t len)
{
    const char *op = NULL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '=' || s[i] == '@') {
            op = s + i;
            break;
        }
    if (!op)
        return -EINVAL;
    int kind = lookup(s, (size_t)(op - s), kind_names, GALE_FAULT_NKINDS);
    if (kind <= GALE_FAULT_NONE || !allowed(call, (gale_fault_kind)kind))
        return -EINVAL;
    char num[32];
    size_t nlen = len - (size_t)(op - s) - 1;
    if (nlen == 0 || nlen >= sizeof num)
        return -EINVAL;
    memcpy(num, op + 1, nlen);
    num[nlen] = '\0';
    char *end;
    errno = 0;
    if (*op == '=') {
        double v = strtod(num, &end);
        if (*end || errno || !(v >= 0 && v <= 1))
            return -EINVAL;
        p->prob[call][kind] = v;
        return 0;
    }
    if (num[0] < '0' || num[0] > '9')
        return -EINVAL;
    unsigned long nth = strtoul(num, &end, 10);
    if (*end || errno || nth == 0)
        return -EINVAL;
    if (p->nscripts == MAX_SCRIPTS)
        return -ENOSPC;
    p->scripts[p->nscripts++] = (struct script){call, calls[call] + nth, (gale_fault_kind)kind};
    return 0;
}

/* Parses `spec` into `p` (zeroed first). Called with the lock held. */
static int parse(struct plan *p, const char *spec)
{
    memset(p, 0, sizeof *p);
    if (!spec)
        return 0;
    const char *s = spec;
    while (*s) {
        size_t glen = strcspn(s, ";");
        const char *colon = memchr(s, ':', glen);
        if (glen > 0) {
            if (!colon)
                return -EINVAL;
            int call = lookup(s, (size_t)(colon - s), call_names, GALE_FAULT_NCALLS);
            if (call < 0)
                return -EINVAL;
            const char *it = colon + 1, *gend = s + glen;
            while (it < gend) {
                size_t ilen = strcspn(it, ",;");
                if (it + ilen > gend)
                    ilen = (size_t)(gend - it);
                if (ilen > 0) {
                    int rc = parse_item(p, (gale_fault_call)call, it, ilen);
                    if (rc)
                        return rc;
                }
                it += ilen;
                if (it < gend)
                    it++; /* the comma */
            }
            double sum = 0;
            for (int k = 0; k < GALE_FAULT_NKINDS; k++)
                sum += p->prob[call][k];
            if (sum > 1.0 + 1e-9)
                return -EINVAL;
        }
        s += glen;
        if (*s == ';')
            s++;
    }
    return 0;
}

/* Reads the environment once. Called with the lock held. */
static void load(void)
{
    if (loaded)
        return;
    loaded = true;
    const char *seed = getenv("GALE_FAULT_SEED");
    if (seed && *seed)
        rng = strtoull(seed, NULL, 0);
    const char *spec = getenv("GALE_FAULTS");
    if (!spec || !*spec)
        return;
    struct plan p;
    if (parse(&p, spec) != 0) {
        gale_log_error(GALE_LOG_GENERAL, "GALE_FAULTS=\"%s\": bad fault plan, ignored", spec);
        return;
    }
    plan = p;
    gale_log_debug(GALE_LOG_GENERAL, "fault injection: GALE_FAULTS=\"%s\" seed %llu", spec,
                   (unsigned long long)rng);
}

/* Decides the fault for one call of `call` offering `len` bytes; for a short count stores the
 * new length in `*cut`. */
gale_fault_kind gale__fault_decide(gale_fault_call call, size_t len, size_t *cut)
{
    pthread_mutex_lock(&lock);
    load();
    unsigned long n = ++calls[call];
    gale_fault_kind kind = GALE_FAULT_NONE;
    for (size_t i = 0; i < plan.nscripts; i++) {
        if (plan.scripts[i].call == call && plan.scripts[i].at == n) {
            kind = plan.scripts[i].kind;
            plan.scripts[i] = plan.scripts[--plan.nscripts];
            break;
        }
    }
    if (kind == GALE_FAULT_NONE) {
        double r = (double)(next_random() >> 11) * 0x1.0p-53;
        double acc = 0;
        for (int k = GALE_FAULT_SHORT; k < GALE_FAULT_NKINDS; k++) {
            acc += plan.prob[call][k];
            if (plan.prob[call][k] > 0 && r < acc) {
                kind = (gale_fault_kind)k;
                break;
            }
        }
    }
    if (kind == GALE_FAULT_SHORT) {
        if (len <= 1)
            kind = GALE_FAULT_NONE;
        else
            *cut = 1 + (size_t)(next_random() % (len - 1));
    }
    if (kind != GALE_FAULT_NONE)
        injected[call][kind]++;
    pthread_mutex_unlock(&lock);
    return kind;
}

/* Sets errno for an error fault and returns -1. */
static int fail(int err)
{
    last_injected = true;
    errno = err;
    return -1;
}

static int error_of(gale_fault_kind kind)
{
    switch (kind) {
    case GALE_FAULT_EAGAIN: return EAGAIN;
    case GALE_FAULT_EINTR: return EINTR;
    case GALE_FAULT_ECONNRESET: return ECONNRESET;
    case GALE_FAULT_EMFILE: return EMFILE;
    default: return ENOMEM;
    }
}

int gale__fault_errno(gale_fault_call call, gale_fault_kind kind)
{
    if (call == GALE_FAULT_ACCEPT && kind == GALE_FAULT_ECONNRESET)
        return -ECONNABORTED;
    if (call == GALE_FAULT_ACCEPT && kind == GALE_FAULT_ENOMEM)
        return -ENOBUFS;
    return -error_of(kind);
}

ssize_t gale__sys_recv(int fd, void *buf, size_t len, int flags)
{
    size_t cut = len;
    gale_fault_kind kind = gale__fault_decide(GALE_FAULT_RECV, len, &cut);
    if (kind != GALE_FAULT_NONE && kind != GALE_FAULT_SHORT)
        return fail(error_of(kind));
    last_injected = false;
    return recv(fd, buf, cut, flags);
}

ssize_t gale__sys_send(int fd, const void *buf, size_t len, int flags)
{
    size_t cut = len;
    gale_fault_kind kind = gale__fault_decide(GALE_FAULT_SEND, len, &cut);
    if (kind != GALE_FAULT_NONE && kind != GALE_FAULT_SHORT)
        return fail(error_of(kind));
    last_injected = false;
    return send(fd, buf, cut, flags);
}

ssize_t gale__sys_sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    size_t cut = count;
    gale_fault_kind kind = gale__fault_decide(GALE_FAULT_SEND, count, &cut);
    if (kind != GALE_FAULT_NONE && kind != GALE_FAULT_SHORT)
        return fail(error_of(kind));
    last_injected = false;
    return sendfile(out_fd, in_fd, offset, cut);
}

ssize_t gale__sys_sendmsg(int fd, const struct msghdr *mh, int flags)
{
    size_t total = 0;
    for (size_t i = 0; i < mh->msg_iovlen; i++)
        total += mh->msg_iov[i].iov_len;
    size_t cut = total;
    gale_fault_kind kind = gale__fault_decide(GALE_FAULT_SEND, total, &cut);
    if (kind != GALE_FAULT_NONE && kind != GALE_FAULT_SHORT)
        return fail(error_of(kind));
    last_injected = false;
    if (kind != GALE_FAULT_SHORT || mh->msg_iovlen > MAX_SHORT_IOV)
        return sendmsg(fd, mh, flags);
    /* Offer only the first `cut` bytes: a copy of the vector, its last element trimmed. */
    struct iovec iov[MAX_SHORT_IOV];
    struct msghdr m = *mh;
    size_t cnt = 0, left = cut;
    while (left > 0 && cnt < mh->msg_iovlen) {
        iov[cnt] = mh->msg_iov[cnt];
        if (iov[cnt].iov_len > left)
            iov[cnt].iov_len = left;
        left -= iov[cnt].iov_len;
        cnt++;
    }
    m.msg_iov = iov;
    m.msg_iovlen = cnt;
    return sendmsg(fd, &m, flags);
}

int gale__sys_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    size_t cut = 0;
    gale_fault_kind kind = gale__fault_decide(GALE_FAULT_ACCEPT, 0, &cut);
    switch (kind) {
    case GALE_FAULT_NONE:
    case GALE_FAULT_SHORT: break;
    case GALE_FAULT_ECONNRESET: return fail(ECONNABORTED);
    case GALE_FAULT_ENOMEM: return fail(ENOBUFS);
    default: return fail(error_of(kind));
    }
    last_injected = false;
    return accept4(fd, addr, len, flags);
}

bool gale__fault_alloc(void)
{
    size_t cut = 0;
    return gale__fault_decide(GALE_FAULT_ALLOC, 0, &cut) == GALE_FAULT_ENOMEM;
}

bool gale__fault_was_injected(void) { return last_injected; }

bool gale_fault_enabled(void) { return true; }

int gale_fault_configure(const char *spec)
{
    struct plan *p = malloc(sizeof *p);
    if (!p)
        return -ENOMEM;
    pthread_mutex_lock(&lock);
    loaded = true;
    int rc = parse(p, spec);
    if (rc == 0)
        plan = *p;
    pthread_mutex_unlock(&lock);
    free(p);
    return rc;
}

int gale_fault_seed(uint64_t seed)
{
    pthread_mutex_lock(&lock);
    loaded = true;
    rng = seed;
    pthread_mutex_unlock(&lock);
    return 0;
}

int gale_fault_script(gale_fault_call call, unsigned long nth, gale_fault_kind kind)
{
    if ((unsigned)call >= GALE_FAULT_NCALLS || nth == 0 || !allowed(call, kind))
        return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&lock);
    load();
    if (plan.nscripts == MAX_SCRIPTS)
        rc = -ENOSPC;
    else
        plan.scripts[plan.nscripts++] = (struct script){call, calls[call] + nth, kind};
    pthread_mutex_unlock(&lock);
    return rc;
}

void gale_fault_reset(void)
{
    pthread_mutex_lock(&lock);
    loaded = true;
    memset(&plan, 0, sizeof plan);
    memset(calls, 0, sizeof calls);
    memset(injected, 0, sizeof injected);
    pthread_mutex_unlock(&lock);
}

unsigned long gale_fault_calls(gale_fault_call call)
{
    if ((unsigned)call >= GALE_FAULT_NCALLS)
        return 0;
    pthread_mutex_lock(&lock);
    unsigned long n = calls[call];
    pthread_mutex_unlock(&lock);
    return n;
}

unsigned long gale_fault_injected(gale_fault_call call, gale_fault_kind kind)
{
    if ((unsigned)call >= GALE_FAULT_NCALLS || (unsigned)kind >= GALE_FAULT_NKINDS)
        return 0;
    unsigned long n = 0;
    pthread_mutex_lock(&lock);
    if (kind == GALE_FAULT_NONE) {
        for (int k = 0; k < GALE_FAULT_NKINDS; k++)
            n += injected[call][k];
    } else {
        n = injected[call][kind];
    }
    pthread_mutex_unlock(&lock);
    return n;
}

#endif

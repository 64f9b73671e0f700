/* Fuzzes http/form.c: query strings and urlencoded bodies (model-checked against a reference
 * split-and-decode), Cookie headers, multipart bodies, Content-Type dispatch and
 * gale_url_unescape, with allocation failures injected at an input-chosen point.
 *
 * Input: byte 0 picks the parser (low 3 bits) and whether to fail an allocation (high bits: fail
 * the k-th allocation); the rest is parser-specific (see each case). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "http/form.h"

struct pool {
    void **blocks;
    size_t n, cap;
    size_t fail_at; /* 1-based index of the allocation to fail, 0: none */
    size_t count;
    bool failed;
};

static void *pool_alloc(void *ctx, size_t size)
{
    struct pool *p = ctx;
    p->count++;
    if (p->fail_at && p->count == p->fail_at) {
        p->failed = true;
        return NULL;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        void **b = realloc(p->blocks, cap * sizeof *b);
        if (!b)
            return NULL;
        p->blocks = b;
        p->cap = cap;
    }
    /* Exact sizes (no rounding) so that writing past a block is caught. */
    void *m = malloc(size ? size : 1);
    if (m)
        p->blocks[p->n++] = m;
    return m;
}

static void pool_free(struct pool *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->blocks[i]);
    free(p->blocks);
}

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reference percent-decoding, written independently of form.c. */
static size_t ref_unescape(uint8_t *dst, const uint8_t *s, size_t len, bool plus)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            dst[o++] = (uint8_t)(hexval(s[i + 1]) << 4 | hexval(s[i + 2]));
            i += 2;
        } else if (plus && s[i] == '+') {
            dst[o++] = ' ';
        } else {
            dst[o++] = s[i];
        }
    }
    return o;
}

/* Every argument is NUL-terminated at its length and findable by name. */
static void check_args(const gale_form *f, size_t input_len)
{
    FUZZ_CHECK(f->nargs <= f->args_cap || f->nargs == 0, "nargs %zu > cap %zu", f->nargs,
               f->args_cap);
    for (size_t i = 0; i < f->nargs; i++) {
        const gale_form_arg *a = &f->args[i];
        FUZZ_CHECK(a->name && a->value, "arg %zu without name or value", i);
        FUZZ_CHECK(a->name_len <= input_len && a->value_len <= input_len,
                   "arg %zu longer than the input", i);
        FUZZ_CHECK(a->name[a->name_len] == '\0' && a->value[a->value_len] == '\0',
                   "arg %zu not NUL-terminated", i);
        if (strlen(a->name) == a->name_len) {
            FUZZ_CHECK(gale_form_count(f, a->name) >= 1, "arg %zu not counted by name", i);
            FUZZ_CHECK(gale_form_find(f, a->name, 0) != NULL, "arg %zu not found by name", i);
        }
    }
}

static void check_files(const gale_form *f, const char *body, size_t len)
{
    for (size_t i = 0; i < f->nfiles; i++) {
        const gale_form_file *file = &f->files[i];
        FUZZ_CHECK(file->name && file->filename && file->content_type, "file %zu incomplete", i);
        FUZZ_CHECK(file->body_len <= len, "file %zu longer than the body", i);
        if (file->body_len)
            FUZZ_CHECK(file->body >= body && file->body + file->body_len <= body + len,
                       "file %zu body outside the input", i);
        if (strlen(file->name) < 4096)
            FUZZ_CHECK(gale_form_find_file(f, file->name, 0) != NULL, "file %zu not found", i);
    }
}

/* Model check of gale_form_parse_urlencoded: fields split on '&', empty ones skipped, name up to
 * the first '=', both percent-decoded with '+' as a space, in order. */
static void check_urlencoded_model(const gale_form *f, const uint8_t *s, size_t len)
{
    uint8_t *tmp = malloc(len + 1);
    if (!tmp)
        return;
    size_t k = 0, i = 0;
    while (i < len) {
        const uint8_t *amp = memchr(s + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - s) : len;
        if (end > i) {
            const uint8_t *field = s + i;
            size_t flen = end - i;
            const uint8_t *eq = memchr(field, '=', flen);
            size_t nlen = eq ? (size_t)(eq - field) : flen;
            FUZZ_CHECK(k < f->nargs, "urlencoded: fewer args (%zu) than fields", f->nargs);
            const gale_form_arg *a = &f->args[k];
            size_t dn = ref_unescape(tmp, field, nlen, true);
            FUZZ_CHECK(dn == a->name_len && memcmp(tmp, a->name, dn) == 0,
                       "urlencoded: arg %zu name differs from the reference", k);
            size_t dv = eq ? ref_unescape(tmp, eq + 1, flen - nlen - 1, true) : 0;
            FUZZ_CHECK(dv == a->value_len && memcmp(tmp, a->value, dv) == 0,
                       "urlencoded: arg %zu value differs from the reference", k);
            k++;
        }
        i = end + 1;
    }
    FUZZ_CHECK(k == f->nargs, "urlencoded: %zu args, reference %zu", f->nargs, k);
    free(tmp);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet_logs();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    unsigned sel = fuzz_u8(&in);
    struct pool pool = {.fail_at = sel >> 4};
    gale_form f;
    gale_form_init(&f, pool_alloc, &pool);
    /* Exact-size copy of the payload so any read past it is caught. */
    char *s = malloc(in.n ? in.n : 1);
    if (!s)
        return 0;
    memcpy(s, in.p, in.n);
    size_t len = in.n;
    int rc;
    switch (sel & 7) {
    case 0: /* query string / urlencoded */
        rc = gale_form_parse_urlencoded(&f, s, len);
        FUZZ_CHECK(rc == 0 || (rc == -ENOMEM && pool.failed), "urlencoded: rc %d", rc);
        check_args(&f, len);
        if (!pool.failed)
            check_urlencoded_model(&f, (const uint8_t *)s, len);
        break;
    case 1: /* Cookie header */
        rc = gale_form_parse_cookies(&f, s, len);
        FUZZ_CHECK(rc == 0 || (rc == -ENOMEM && pool.failed), "cookies: rc %d", rc);
        check_args(&f, len);
        break;
    case 2: { /* multipart: byte = boundary length, the boundary, then the body */
        size_t blen = len ? (uint8_t)s[0] % 72 : 0;
        if (blen > len - (len ? 1 : 0))
            blen = len ? len - 1 : 0;
        const char *b = s + (len ? 1 : 0);
        const char *body = b + blen;
        size_t bodylen = len - (size_t)(body - s);
        size_t before = f.nargs;
        rc = gale_form_parse_multipart(&f, b, blen, body, bodylen);
        FUZZ_CHECK(rc == 0 || rc == -EINVAL || (rc == -ENOMEM && pool.failed), "multipart: rc %d",
                   rc);
        if (rc < 0)
            FUZZ_CHECK(f.nargs == before && f.nfiles == 0, "multipart: form changed on error");
        check_args(&f, bodylen);
        check_files(&f, body, bodylen);
        break;
    }
    case 3: { /* Content-Type line, '\n', body */
        const char *nl = memchr(s, '\n', len);
        size_t ctlen = nl ? (size_t)(nl - s) : len;
        const char *body = nl ? nl + 1 : s + len;
        size_t bodylen = len - (size_t)(body - s);
        rc = gale_form_parse_body(&f, s, ctlen, body, bodylen);
        FUZZ_CHECK(rc == 0 || rc == -EINVAL || (rc == -ENOMEM && pool.failed), "parse_body: rc %d",
                   rc);
        check_args(&f, bodylen);
        check_files(&f, body, bodylen);
        break;
    }
    case 4: { /* gale_url_unescape, into an exact-size buffer and in place */
        bool plus = sel & 8;
        char *dst = malloc(len ? len : 1);
        uint8_t *ref = malloc(len ? len : 1);
        if (dst && ref) {
            size_t n = gale_url_unescape(dst, s, len, plus);
            size_t rn = ref_unescape(ref, (const uint8_t *)s, len, plus);
            FUZZ_CHECK(n == rn && memcmp(dst, ref, n) == 0, "unescape differs from reference");
            n = gale_url_unescape(s, s, len, plus);
            FUZZ_CHECK(n == rn && memcmp(s, ref, n) == 0, "in-place unescape differs");
        }
        free(dst);
        free(ref);
        break;
    }
    default: /* the same bytes through every parser, one after the other, into one form */
        gale_form_parse_urlencoded(&f, s, len);
        gale_form_parse_cookies(&f, s, len);
        gale_form_parse_body(&f, "multipart/form-data; boundary=xyz", 33, s, len);
        gale_form_parse_body(&f, "application/x-www-form-urlencoded", 33, s, len);
        check_args(&f, len);
        check_files(&f, s, len);
        break;
    }
    free(s);
    pool_free(&pool);
    return 0;
}
